"""Dense networks on fastgd's kernels: fused dense-layer and loss kernels, layers, models, training.

    >>> import numpy as np
    >>> from fastgd.nn import MLP
    >>> model = MLP([64, 128, 10], rng=0)             # ReLU hidden layer, logits out
    >>> history = model.fit(x, labels, epochs=20, batch_size=32, optimizer="adam", lr=1e-3, seed=0)
    >>> model.evaluate(x_test, labels_test)            # {'loss': ..., 'accuracy': ...}

The kernels are in ``fastgd.nn.functional`` (as ``torch.nn.functional``), the layers, models and
training in ``fastgd.nn.models``; every public name of both is importable from ``fastgd.nn``.

Functional kernels (every backend, float32 and float64; batch along axis 0)
--------------------------------------------------------------------------
``dense_forward(x, weight, bias)``
    ``f(x @ weight + bias)``: one BLAS product, then one fused pass adding the bias and applying
    the activation.  Only the output is kept: the backward pass takes every derivative from it.
    ``bias`` is required (there is no bias-free form: pass ``numpy.zeros(out_features)``).
``dense_backward(grad_output, x, weight, output)``
    ``(grad_x, grad_weight, grad_bias)``: one fused pass computes ``grad_z = grad_output *
    f'(z)`` and ``grad_bias = grad_z.sum(0)``, then two BLAS products.
``softmax_cross_entropy``, ``mse_loss``, ``binary_cross_entropy_with_logits``
    ``(loss, grad_wrt_input)`` in one pass; the loss is a mean (``torch.nn``'s default
    ``reduction="mean"``).

Activations: ``identity``, ``relu`` (derivative 0 at z <= 0), ``leaky_relu`` (``negative_slope``
>= 0, derivative ``negative_slope`` at z <= 0), ``sigmoid``, ``tanh``.  The formulas are in
``fastgd/reference/dense.py``, the spec the compiled backends are tested against.

BLAS: the Cython backend calls SciPy's sgemm/dgemm without the GIL (``pip install
'fastgd[nn]'``); numba and the reference call ``numpy.matmul``.  Without SciPy, the *current*
backend (``backend=None``, e.g. the default ``"cython"``) runs the layers on the NumPy
reference's dense kernels instead (one ``RuntimeWarning``; the same formulas in the same order,
so the results differ from the Cython kernels' by BLAS rounding only); naming
``backend="cython"`` explicitly raises a ``RuntimeError`` that says SciPy is missing.

Arguments are checked before anything is written, as for the step kernels (a call that raises
has written nothing): every array argument is exactly a ``numpy.ndarray`` (``None`` where an
array is required, ``numpy.matrix``, masked arrays and other subclasses are a ``TypeError``
naming the argument), native float32 or float64 (one dtype per call), C-contiguous, aligned,
with consistent shapes (the message names the arrays); outputs are writeable and do not overlap
any other argument.  Integer labels are copied and must lie in ``[0, classes)``.  ``out=`` /
``grad_*=`` take preallocated outputs, so a training loop need not allocate per step.

Layers and models
-----------------
``Dense(in_features, out_features, activation="relu", dtype=..., rng=...)`` holds ``weight``
(in, out), ``bias`` (out,) and their gradients; ``Sequential(*layers, loss=...)`` and ``MLP(sizes,
...)`` chain them with ``forward``, ``backward``, ``parameters()``, ``gradients()`` (same order:
W1, b1, W2, b2, ...), ``fit``, ``predict`` and ``evaluate``.  ``parameters()`` and
``gradients()`` are the arrays themselves, so fastgd's step kernels and ``fastgd.optim``
optimizers update the model in place.  A layer's shapes and dtype are fixed at construction:
assigning ``layer.weight = w`` checks ``w`` like a kernel argument, and the layer's arrays are
checked again (shape, dtype, contiguity) on every call that reaches a kernel.  Layers and
models reuse their output and gradient buffers from call to call and keep their input by
reference until ``backward``; an input that shares memory with one of the buffers they write
(``layer(layer(x))``, ``model(model(x))``) is copied first, and an input that is another layer's
buffer, rewritten before ``backward``, makes ``backward`` raise (the ``Dense`` and
``Sequential`` docstrings list which arrays are kept and which buffers are reused).
"""
from __future__ import annotations

from .functional import (ACTIVATIONS, LOSSES, binary_cross_entropy_with_logits, dense_backward, dense_forward,
                         mse_loss, softmax_cross_entropy)
from .functional import _kernels  # noqa: F401  (bench/ and tests call it to load a backend's dense kernels)
from .models import MLP, Dense, Sequential
from .models import _Buffer  # noqa: F401  (models pickled when this was one module name fastgd.nn._Buffer)

__all__ = ["ACTIVATIONS", "LOSSES", "dense_forward", "dense_backward", "softmax_cross_entropy", "mse_loss",
           "binary_cross_entropy_with_logits", "Dense", "Sequential", "MLP"]
