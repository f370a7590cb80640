"""fastgd.nn's kernel API (as ``torch.nn.functional``): the fused dense-layer and loss kernels
``dense_forward``, ``dense_backward``, ``softmax_cross_entropy``, ``mse_loss`` and
``binary_cross_entropy_with_logits`` on every backend, their argument checks, and the choice of
each backend's dense-kernel module (``_kernels``, with the NumPy-reference fallback when the
Cython kernels cannot import SciPy).  The package docstring, ``help(fastgd.nn)``, states the
formulas, the activations and the rules for arguments; the layers and models that call these
kernels are in ``fastgd.nn.models``.
"""
from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING

import numpy as np

from .. import _validate as V
from ..backends import backend_module, get_backend

if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Literal

    from .._typing import Activation, Backend, FloatArray, NDArray

    #: the losses of ``LOSSES`` (a model's ``loss=``)
    Loss = Literal["softmax_cross_entropy", "mse_loss", "binary_cross_entropy_with_logits"]

__all__ = ["ACTIVATIONS", "LOSSES", "dense_forward", "dense_backward", "softmax_cross_entropy", "mse_loss",
           "binary_cross_entropy_with_logits"]

ACTIVATIONS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh")
LOSSES = ("softmax_cross_entropy", "mse_loss", "binary_cross_entropy_with_logits")
_INT_MAX = 2 ** 31 - 1  # BLAS takes dimensions as C int


# ---------------------------------------------------------------------------------------
# the backends' dense kernels: fastgd/reference/dense.py, fastgd/_cython/dense.pyx,
# fastgd/_numba/dense.py, one module per backend with the same function names

# backend module -> its dense-kernel module, or the ImportError that stopped it
_dense_modules: dict[ModuleType, ModuleType | ImportError] = {}
_fallback_warned = [False]


def _kernels(backend):
    """The dense-kernel module of ``backend`` (None: the current backend).

    The Cython dense kernels import SciPy (for BLAS).  When they do not import, the current
    backend (``backend=None``) falls back to the NumPy reference's dense kernels, with one
    RuntimeWarning; a backend named explicitly raises RuntimeError instead."""
    mod = backend_module(backend)
    k = _dense_modules.get(mod)
    if k is None:
        try:
            k = importlib.import_module(mod.__name__ + ".dense")
        except ImportError as exc:
            k = exc
        _dense_modules[mod] = k
    if isinstance(k, ImportError):
        name = backend if backend is not None else get_backend()
        if backend is None and mod.__name__ != "fastgd.reference":
            if not _fallback_warned[0]:
                _fallback_warned[0] = True
                warnings.warn("fastgd.nn: backend %r has no dense kernels here (%s); the dense layers and losses "
                              "run on the NumPy reference kernels" % (name, k), RuntimeWarning, stacklevel=3)
            from ..reference import dense as ref
            return ref
        raise RuntimeError("backend %r has no dense kernels here: %s" % (name, k)) from k
    return k


# ---------------------------------------------------------------------------------------
# argument checks (run before any kernel touches memory)

def _activation(activation):
    if type(activation) is not str:
        raise TypeError("activation must be a str, got %s" % type(activation).__name__)
    if activation not in ACTIVATIONS:
        raise ValueError("activation must be one of %s, got %r" % (", ".join(ACTIVATIONS), activation))
    return activation


def _input(name, a, ndim, dtype=None, dtype_of="x", shape=None, written=False):
    """An array a kernel reads (``written``: and writes) through a raw pointer: V.array's checks
    (exactly numpy.ndarray, not None, native float32/float64, C-contiguous, aligned, writeable
    when written) and ``ndim`` dimensions, the ``dtype`` of the argument ``dtype_of``, ``shape``."""
    if (not written and type(a) is np.ndarray and not a.flags.c_contiguous
            and a.dtype in V.FLOAT_DTYPES and a.dtype.isnative):
        # V.array's message is about arrays updated in place; an input may simply be copied
        raise ValueError("%s must be C-contiguous: the kernels read it through a raw pointer "
                         "(numpy.ascontiguousarray(%s) is a contiguous copy)" % (name, name))
    dt = V.array(name, a)
    if dtype is not None and dt != dtype:
        raise TypeError("%s has dtype %s but %s has dtype %s" % (name, dt, dtype_of, dtype))
    if ndim is not None and a.ndim != ndim:
        raise ValueError("%s must be %d-dimensional, got shape %s" % (name, ndim, a.shape))
    if shape is not None and a.shape != shape:
        raise ValueError("%s has shape %s, expected %s" % (name, a.shape, shape))
    if written and not a.flags.writeable:
        raise ValueError("%s must be writeable (it is an output)" % name)
    return dt


def _output(name, a, shape, dtype, dtype_of="x"):
    """A preallocated output: like an input, with exactly ``shape``, and writeable."""
    _input(name, a, len(shape), dtype, dtype_of, shape, True)


def _no_overlap(written, others):
    """No written array may share memory with any other argument (or another written one)."""
    for i, (wn, wa) in enumerate(written):
        if wa.size == 0:
            continue
        for on, oa in written[i + 1:] + others:
            if oa is not None and oa.size and np.may_share_memory(wa, oa):
                raise ValueError("%s and %s overlap in memory; outputs must be separate buffers" % (wn, on))


# the compiled fast accept, fastgd._cython.dense.arrays_ok (loaded on first use: it imports
# SciPy).  It checks exact ndarray type, one float32/float64 type number, C-contiguity,
# writeable outputs and overlap, and skips None entries; it does NOT check alignment or byte
# order (a byte-swapped float32 array has the type number of float32), so _fast_accept adds
# those, and the callers rule out None for required arguments before calling it.
_fast_state: list[Any] = [None, False]


def _fast_ok():
    """The compiled fast accept of array arguments, or None when the Cython backend is absent."""
    if not _fast_state[1]:
        _fast_state[1] = True
        try:
            from .._cython.dense import arrays_ok
            _fast_state[0] = arrays_ok
        except ImportError:
            pass
    return _fast_state[0]


def _fast_accept(ins, outs):
    """True when every array check would pass for these arrays (shapes aside, which the caller
    compares): arrays_ok, then alignment and native byte order.  False: run the named checks.
    Entries may be None only where the argument is optional."""
    ok = _fast_state[0] if _fast_state[1] else _fast_ok()
    return ok is not None and bool(ok(ins, outs))  # (aligned, native order: checked in C)


def _blas_dims(**dims):
    for name, d in dims.items():
        if d > _INT_MAX:
            raise ValueError("%s = %d is too large for BLAS (at most %d)" % (name, d, _INT_MAX))


def _check_xw(x, weight):
    dtype = _input("x", x, 2)
    _input("weight", weight, 2, dtype)
    if weight.shape[0] != x.shape[1]:
        raise ValueError("x has shape %s but weight has shape %s: x.shape[1] must equal weight.shape[0] "
                         "(in_features)" % (x.shape, weight.shape))
    _blas_dims(batch=x.shape[0], in_features=x.shape[1], out_features=weight.shape[1])
    return dtype


def _check_dense(x, weight, bias):
    dtype = _check_xw(x, weight)
    _input("bias", bias, 1, dtype)
    if bias.shape[0] != weight.shape[1]:
        raise ValueError("bias has shape %s but weight has shape %s: bias must have shape (%d,) "
                         "(out_features)" % (bias.shape, weight.shape, weight.shape[1]))
    return dtype


def dense_forward(x: FloatArray, weight: FloatArray, bias: FloatArray, *, activation: Activation = "relu",
                  negative_slope: float = 0.01, out: FloatArray | None = None,
                  backend: Backend | None = None) -> FloatArray:
    """``out = f(x @ weight + bias)`` for a batch ``x`` of shape (n, in_features), ``weight``
    (in_features, out_features), ``bias`` (out_features,); returns ``out`` (n, out_features).

    One BLAS product, then a single pass that adds the bias and applies the activation in place.
    ``out`` is the post-activation output, which is all :func:`dense_backward` needs.
    ``negative_slope`` (>= 0) is leaky_relu's slope for z <= 0.  ``bias`` is required on every
    backend (``None`` is a TypeError): for a layer without bias pass zeros.
    """
    activation = _activation(activation)
    slope = V.nonneg("negative_slope", negative_slope)
    if (out is not None and x is not None and weight is not None and bias is not None
            and _fast_accept((x, weight, bias), (out,)) and x.ndim == 2 and weight.ndim == 2
            and bias.ndim == 1 and x.shape[1] == weight.shape[0] and bias.shape[0] == weight.shape[1]
            and out.shape == (x.shape[0], weight.shape[1]) and x.shape[0] <= _INT_MAX and x.shape[1] <= _INT_MAX
            and weight.shape[1] <= _INT_MAX):
        # fast accept: everything below would pass
        if out.size == 0:
            return out
        return _kernels(backend).dense_forward(x, weight, bias, out, activation=activation, negative_slope=slope)
    dtype = _check_dense(x, weight, bias)
    shape = (x.shape[0], weight.shape[1])
    if out is None:
        out = np.empty(shape, dtype)
    else:
        _output("out", out, shape, dtype)
        _no_overlap([("out", out)], [("x", x), ("weight", weight), ("bias", bias)])
    if out.size == 0:
        return out
    return _kernels(backend).dense_forward(x, weight, bias, out, activation=activation, negative_slope=slope)


def dense_backward(grad_output: FloatArray, x: FloatArray, weight: FloatArray, output: FloatArray, *,
                   activation: Activation = "relu", negative_slope: float = 0.01, grad_x: FloatArray | None = None,
                   grad_weight: FloatArray | None = None, grad_bias: FloatArray | None = None,
                   compute_grad_x: bool = True, overwrite_grad_output: bool = False,
                   backend: Backend | None = None) -> tuple[FloatArray | None, FloatArray, FloatArray]:
    """Backpropagation through ``output = f(x @ weight + bias)``; returns ``(grad_x, grad_weight,
    grad_bias)``::

        grad_z      = grad_output * f'(z)      # f' from output; one pass with the next line
        grad_bias   = grad_z.sum(axis=0)
        grad_weight = x.T @ grad_z
        grad_x      = grad_z @ weight.T        # None when compute_grad_x=False (first layer)

    ``output`` is what :func:`dense_forward` returned for ``x``.  ``grad_output``, ``x``,
    ``weight`` and ``output`` are required; ``grad_x``, ``grad_weight``, ``grad_bias`` are
    optional preallocated outputs (None: allocated).  With ``overwrite_grad_output=True``,
    ``grad_z`` is written over ``grad_output`` (which must be writeable) instead of a new array:
    with preallocated outputs the call then allocates nothing.
    """
    activation = _activation(activation)
    slope = V.nonneg("negative_slope", negative_slope)
    compute_grad_x = V.flag("compute_grad_x", compute_grad_x)
    overwrite = V.flag("overwrite_grad_output", overwrite_grad_output)
    if (grad_output is not None and x is not None and weight is not None and output is not None
            and (compute_grad_x or grad_x is None)
            and (_fast_accept((x, weight, output), (grad_output, grad_x, grad_weight, grad_bias)) if overwrite
                 else _fast_accept((x, weight, output, grad_output), (grad_x, grad_weight, grad_bias)))
            and x.ndim == 2 and weight.ndim == 2 and grad_output.ndim == 2 and output.ndim == 2):
        # fast accept: everything below would pass
        n, k = x.shape
        m = weight.shape[1]
        if (weight.shape[0] == k and grad_output.shape == (n, m) and output.shape == (n, m)
                and (grad_x is None or grad_x.shape == (n, k)) and (grad_weight is None or grad_weight.shape == (k, m))
                and (grad_bias is None or grad_bias.shape == (m,)) and n <= _INT_MAX and k <= _INT_MAX
                and m <= _INT_MAX):
            return _backward(grad_output, x, weight, output, activation, slope, grad_x, grad_weight, grad_bias,
                             compute_grad_x, overwrite, backend)
    _input("grad_output", grad_output, 2)  # a None or a list here is named before x is looked at
    dtype = _check_xw(x, weight)
    n, k = x.shape
    m = weight.shape[1]
    a: FloatArray | None  # (the required arrays, then the optional outputs)
    for name, a in (("grad_output", grad_output), ("output", output)):
        _input(name, a, 2, dtype)
        if a.shape != (n, m):
            raise ValueError("%s has shape %s but x has shape %s and weight %s: expected %s"
                             % (name, a.shape, x.shape, weight.shape, (n, m)))
    if overwrite and not grad_output.flags.writeable:
        raise ValueError("grad_output must be writeable with overwrite_grad_output=True")
    if not compute_grad_x and grad_x is not None:
        raise ValueError("grad_x was given but compute_grad_x=False")
    written = [("grad_output", grad_output)] if overwrite else []
    for name, a, shape in (("grad_x", grad_x, (n, k)), ("grad_weight", grad_weight, (k, m)),
                           ("grad_bias", grad_bias, (m,))):
        if a is not None:
            _output(name, a, shape, dtype)
            written.append((name, a))
    if written:
        ins = [("x", x), ("weight", weight), ("output", output)]
        if not overwrite:
            ins.append(("grad_output", grad_output))
        _no_overlap(written, ins)
    return _backward(grad_output, x, weight, output, activation, slope, grad_x, grad_weight, grad_bias,
                     compute_grad_x, overwrite, backend)


def _backward(grad_output, x, weight, output, activation, slope, grad_x, grad_weight, grad_bias, compute_grad_x,
              overwrite, backend):
    """dense_backward after the checks: allocate what was not given, run the kernel."""
    n, k = x.shape
    m = weight.shape[1]
    dtype = x.dtype
    if compute_grad_x and grad_x is None:
        grad_x = np.empty((n, k), dtype)
    if grad_weight is None:
        grad_weight = np.empty((k, m), dtype)
    if grad_bias is None:
        grad_bias = np.empty(m, dtype)
    if activation == "identity" or overwrite:
        grad_z = grad_output
    else:
        grad_z = np.empty((n, m), dtype)
    # empty batches and layers need no special case: every backend writes empty sums as zeros
    return _kernels(backend).dense_backward(grad_output, x, weight, output, grad_x, grad_weight, grad_bias, grad_z,
                                            activation=activation, negative_slope=slope)


def _loss_out(out, like_name, like, other_name, other):
    """The gradient output: ``out`` checked (shape and dtype of ``like``), or a new array."""
    if out is None:
        return np.empty(like.shape, like.dtype)
    _output("out", out, like.shape, like.dtype, like_name)
    _no_overlap([("out", out)], [(like_name, like), (other_name, other)])
    return out


def _class_indices(name, labels, n, classes, what):
    """Integer labels (n,) as a new intp array, checked to lie in [0, classes).  The range is
    checked on the copy the kernel will read, so nothing (another thread, a wrapping cast) can
    change a label between the check and the kernel that indexes with it."""
    if labels.shape != (n,):
        raise ValueError("%s has shape %s but %s: integer labels must have shape (%d,)"
                         % (name, labels.shape, what, n))
    lab = np.array(labels, dtype=np.intp, order="C")  # a copy, whatever the dtype and layout
    if n:
        lo, hi = int(lab.min()), int(lab.max())
        if lo < 0 or hi >= classes or lo != int(labels.min()) or hi != int(labels.max()):
            raise ValueError("%s must be class indices in [0, %d) for %s; got values in [%d, %d]"
                             % (name, classes, what, int(labels.min()), int(labels.max())))
    return lab


def _labels(labels, logits):
    """Integer class indices (n,) -> a checked intp copy, or probabilities (n, classes) of
    logits' dtype (checked like any kernel input)."""
    n, c = logits.shape
    V.plain("labels", labels)
    if labels.dtype.kind in "iu":
        return _class_indices("labels", labels, n, c, "logits has shape %s" % (logits.shape,))
    if labels.dtype.kind == "f":
        _input("labels", labels, 2, logits.dtype, "logits")
        if labels.shape != logits.shape:
            raise ValueError("labels has shape %s but logits has shape %s: class probabilities (one-hot) must "
                             "have the shape of logits" % (labels.shape, logits.shape))
        return labels
    raise TypeError("labels must be integer class indices or float class probabilities, got dtype %s"
                    % labels.dtype)


def softmax_cross_entropy(logits: FloatArray, labels: NDArray[Any], *, out: FloatArray | None = None,
                          backend: Backend | None = None) -> tuple[float, FloatArray]:
    """Softmax cross-entropy, mean over the batch, and its gradient: returns ``(loss, grad)``.

    ``logits`` (n, classes); ``labels``: integer class indices (n,) in ``[0, classes)`` (any
    integer dtype; copied to intp before the kernel reads them) or class probabilities /
    one-hot rows (n, classes) of logits' dtype.  Per row, with ``p = softmax(z)`` computed from
    ``z - max(z)`` (stable for any finite logits)::

        loss = mean_rows( -sum_j y_j log p_j ),   grad = (p - y) / n

    as ``torch.nn.functional.cross_entropy``.  ``out``: preallocated gradient (n, classes).
    """
    _input("logits", logits, 2)
    labels = _labels(labels, logits)
    out = _loss_out(out, "logits", logits, "labels", labels)
    if logits.size == 0:
        return float("nan"), out
    return _kernels(backend).softmax_cross_entropy(logits, labels, out), out


def _pair(a_name, a, b_name, b):
    _input(a_name, a, None)
    _input(b_name, b, None, a.dtype, a_name)
    if b.shape != a.shape:
        raise ValueError("%s has shape %s but %s has shape %s: they must match" % (b_name, b.shape, a_name, a.shape))


def mse_loss(pred: FloatArray, target: FloatArray, *, out: FloatArray | None = None,
             backend: Backend | None = None) -> tuple[float, FloatArray]:
    """Mean squared error over all N elements and its gradient: returns ``(loss, grad)`` with
    ``loss = mean((pred - target)**2)``, ``grad = 2 (pred - target) / N`` (as
    ``torch.nn.MSELoss()``; the book's ``0.5 * sum / batch`` differs by a constant factor)."""
    _pair("pred", pred, "target", target)
    out = _loss_out(out, "pred", pred, "target", target)
    if pred.size == 0:
        return float("nan"), out
    return _kernels(backend).mse_loss(pred, target, out), out


def binary_cross_entropy_with_logits(logits: FloatArray, targets: FloatArray, *, out: FloatArray | None = None,
                                     backend: Backend | None = None) -> tuple[float, FloatArray]:
    """Sigmoid + binary cross-entropy, mean over all N elements, and its gradient: returns
    ``(loss, grad)`` with ``loss = mean(max(z, 0) - z*y + log1p(exp(-|z|)))`` (stable for any
    logits), ``grad = (sigmoid(z) - y) / N``, as ``torch.nn.BCEWithLogitsLoss()``.
    ``targets`` in [0, 1], shape and dtype of ``logits``."""
    _pair("logits", logits, "targets", targets)
    out = _loss_out(out, "logits", logits, "targets", targets)
    if logits.size == 0:
        return float("nan"), out
    return _kernels(backend).binary_cross_entropy_with_logits(logits, targets, out), out
