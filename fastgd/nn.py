"""Dense networks on fastgd's kernels: fused dense-layer and loss kernels, layers, models, training.

    >>> import numpy as np
    >>> from fastgd.nn import MLP
    >>> model = MLP([64, 128, 10], rng=0)             # ReLU hidden layer, logits out
    >>> history = model.fit(x, labels, epochs=20, batch_size=32, optimizer="adam", lr=1e-3, seed=0)
    >>> model.evaluate(x_test, labels_test)            # {'loss': ..., 'accuracy': ...}

Functional kernels (every backend, float32 and float64; batch along axis 0)
--------------------------------------------------------------------------
``dense_forward(x, weight, bias)``
    ``f(x @ weight + bias)``: one BLAS product, then one fused pass adding the bias and applying
    the activation.  Only the output is kept: the backward pass takes every derivative from it.
``dense_backward(grad_output, x, weight, output)``
    ``(grad_x, grad_weight, grad_bias)``: one fused pass computes ``grad_z = grad_output *
    f'(z)`` and ``grad_bias = grad_z.sum(0)``, then two BLAS products.
``softmax_cross_entropy``, ``mse_loss``, ``binary_cross_entropy_with_logits``
    ``(loss, grad_wrt_input)`` in one pass; the loss is a mean (``torch.nn``'s default
    ``reduction="mean"``).

Activations: ``identity``, ``relu`` (derivative 0 at z <= 0), ``leaky_relu`` (``negative_slope``
>= 0, derivative ``negative_slope`` at z <= 0), ``sigmoid``, ``tanh``.  The formulas are in
``fastgd/reference/dense.py``, the spec the compiled backends are tested against.

BLAS: the Cython backend calls SciPy's sgemm/dgemm without the GIL (SciPy is then required:
``pip install 'fastgd[nn]'``); numba and the reference call ``numpy.matmul``.

Arguments are checked before anything is written, as for the step kernels: numpy arrays of one
float dtype (float32 or float64), C-contiguous, consistent shapes (the message names the
arrays), outputs writeable and not overlapping any other argument.  ``out=`` / ``grad_*=``
take preallocated outputs, so a training loop need not allocate per step.

Layers and models
-----------------
``Dense(in_features, out_features, activation="relu", dtype=..., rng=...)`` holds ``weight``
(in, out), ``bias`` (out,) and their gradients; ``Sequential(*layers, loss=...)`` and ``MLP(sizes,
...)`` chain them with ``forward``, ``backward``, ``parameters()``, ``gradients()`` (same order:
W1, b1, W2, b2, ...), ``fit``, ``predict`` and ``evaluate``.  ``parameters()`` and
``gradients()`` are the arrays themselves, so fastgd's step kernels and ``fastgd.optim``
optimizers update the model in place.
"""
import importlib
import math
import operator
import sys
import time

import numpy as np

from . import _validate as V
from .backends import backend_module, get_backend

__all__ = ["ACTIVATIONS", "LOSSES", "dense_forward", "dense_backward", "softmax_cross_entropy", "mse_loss",
           "binary_cross_entropy_with_logits", "Dense", "Sequential", "MLP"]

ACTIVATIONS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh")
LOSSES = ("softmax_cross_entropy", "mse_loss", "binary_cross_entropy_with_logits")
_INT_MAX = 2 ** 31 - 1  # BLAS takes dimensions as C int


# ---------------------------------------------------------------------------------------
# the backends' dense kernels: fastgd/reference/dense.py, fastgd/_cython/dense.pyx,
# fastgd/_numba/dense.py, one module per backend with the same function names

_dense_modules = {}


def _kernels(backend):
    """The dense-kernel module of ``backend`` (None: the current backend)."""
    mod = backend_module(backend)
    k = _dense_modules.get(mod)
    if k is None:
        try:
            k = importlib.import_module(mod.__name__ + ".dense")
        except ImportError as exc:
            raise RuntimeError("backend %r has no dense kernels here: %s"
                               % (backend if backend is not None else get_backend(), exc)) from exc
        _dense_modules[mod] = k
    return k


# ---------------------------------------------------------------------------------------
# argument checks (run before any kernel touches memory)

def _activation(activation):
    if type(activation) is not str:
        raise TypeError("activation must be a str, got %s" % type(activation).__name__)
    if activation not in ACTIVATIONS:
        raise ValueError("activation must be one of %s, got %r" % (", ".join(ACTIVATIONS), activation))
    return activation


def _input(name, a, ndim, dtype=None, dtype_of="x"):
    """A C-contiguous float32/float64 ndarray with ``ndim`` dimensions (and ``dtype``)."""
    if not isinstance(a, np.ndarray):
        raise TypeError("%s must be a numpy.ndarray, got %s" % (name, type(a).__name__))
    if dtype is None:
        if a.dtype not in V.FLOAT_DTYPES:
            raise TypeError("%s must have dtype float32 or float64, got %s" % (name, a.dtype))
    elif a.dtype != dtype:
        raise TypeError("%s has dtype %s but %s has dtype %s" % (name, a.dtype, dtype_of, dtype))
    if ndim is not None and a.ndim != ndim:
        raise ValueError("%s must be %d-dimensional, got shape %s" % (name, ndim, a.shape))
    if not a.flags.c_contiguous:
        raise ValueError("%s must be C-contiguous (use numpy.ascontiguousarray)" % name)
    return a.dtype


def _output(name, a, shape, dtype, dtype_of="x"):
    """A preallocated output: like an input, with exactly ``shape``, and writeable."""
    _input(name, a, len(shape), dtype, dtype_of)
    if a.shape != shape:
        raise ValueError("%s has shape %s, expected %s" % (name, a.shape, shape))
    if not a.flags.writeable:
        raise ValueError("%s must be writeable (it is an output)" % name)


def _no_overlap(written, others):
    """No written array may share memory with any other argument (or another written one)."""
    for i, (wn, wa) in enumerate(written):
        if wa.size == 0:
            continue
        for on, oa in written[i + 1:] + others:
            if oa is not None and oa.size and np.may_share_memory(wa, oa):
                raise ValueError("%s and %s overlap in memory; outputs must be separate buffers" % (wn, on))


_fast = [None, False]  # fastgd._cython.dense.arrays_ok, loaded on first use (it imports SciPy)


def _fast_ok():
    """The compiled fast accept of array arguments, or None when the Cython backend is absent."""
    if not _fast[1]:
        _fast[1] = True
        try:
            from ._cython.dense import arrays_ok
            _fast[0] = arrays_ok
        except ImportError:
            pass
    return _fast[0]


def _blas_dims(**dims):
    for name, d in dims.items():
        if d > _INT_MAX:
            raise ValueError("%s = %d is too large for BLAS (at most %d)" % (name, d, _INT_MAX))


def _check_dense(x, weight, bias_or_none):
    dtype = _input("x", x, 2)
    _input("weight", weight, 2, dtype)
    if weight.shape[0] != x.shape[1]:
        raise ValueError("x has shape %s but weight has shape %s: x.shape[1] must equal weight.shape[0] "
                         "(in_features)" % (x.shape, weight.shape))
    if bias_or_none is not None:
        _input("bias", bias_or_none, 1, dtype)
        if bias_or_none.shape[0] != weight.shape[1]:
            raise ValueError("bias has shape %s but weight has shape %s: bias must have shape (%d,) "
                             "(out_features)" % (bias_or_none.shape, weight.shape, weight.shape[1]))
    _blas_dims(batch=x.shape[0], in_features=x.shape[1], out_features=weight.shape[1])
    return dtype


def dense_forward(x, weight, bias, *, activation="relu", negative_slope=0.01, out=None, backend=None):
    """``out = f(x @ weight + bias)`` for a batch ``x`` of shape (n, in_features), ``weight``
    (in_features, out_features), ``bias`` (out_features,); returns ``out`` (n, out_features).

    One BLAS product, then a single pass that adds the bias and applies the activation in place.
    ``out`` is the post-activation output, which is all :func:`dense_backward` needs.
    ``negative_slope`` (>= 0) is leaky_relu's slope for z <= 0.
    """
    activation = _activation(activation)
    slope = V.nonneg("negative_slope", negative_slope)
    ok = _fast[0] if _fast[1] else _fast_ok()
    if (ok is not None and out is not None and ok((x, weight, bias), (out,)) and x.ndim == 2 and weight.ndim == 2
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


def dense_backward(grad_output, x, weight, output, *, activation="relu", negative_slope=0.01, grad_x=None,
                   grad_weight=None, grad_bias=None, compute_grad_x=True, overwrite_grad_output=False,
                   backend=None):
    """Backpropagation through ``output = f(x @ weight + bias)``; returns ``(grad_x, grad_weight,
    grad_bias)``::

        grad_z      = grad_output * f'(z)      # f' from output; one pass with the next line
        grad_bias   = grad_z.sum(axis=0)
        grad_weight = x.T @ grad_z
        grad_x      = grad_z @ weight.T        # None when compute_grad_x=False (first layer)

    ``output`` is what :func:`dense_forward` returned for ``x``.  ``grad_x``, ``grad_weight``,
    ``grad_bias`` are optional preallocated outputs.  With ``overwrite_grad_output=True``,
    ``grad_z`` is written over ``grad_output`` (which must be writeable) instead of a new array:
    with preallocated outputs the call then allocates nothing.
    """
    activation = _activation(activation)
    slope = V.nonneg("negative_slope", negative_slope)
    compute_grad_x = V.flag("compute_grad_x", compute_grad_x)
    overwrite = V.flag("overwrite_grad_output", overwrite_grad_output)
    ok = _fast[0] if _fast[1] else _fast_ok()
    if (ok is not None and (compute_grad_x or grad_x is None)
            and (ok((x, weight, output), (grad_output, grad_x, grad_weight, grad_bias)) if overwrite
                 else ok((x, weight, output, grad_output), (grad_x, grad_weight, grad_bias)))
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
    dtype = _check_dense(x, weight, None)
    n, k = x.shape
    m = weight.shape[1]
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


def _labels(labels, logits):
    """Integer class indices (n,) -> intp, or probabilities (n, classes) of logits' dtype."""
    n, c = logits.shape
    if not isinstance(labels, np.ndarray):
        raise TypeError("labels must be a numpy.ndarray, got %s" % type(labels).__name__)
    if labels.dtype.kind in "iu":
        if labels.shape != (n,):
            raise ValueError("labels has shape %s but logits has shape %s: integer labels must have shape (%d,)"
                             % (labels.shape, logits.shape, n))
        if n and (labels.min() < 0 or labels.max() >= c):
            raise ValueError("labels must be class indices in [0, %d) for logits of shape %s; got values in [%d, %d]"
                             % (c, logits.shape, labels.min(), labels.max()))
        return np.ascontiguousarray(labels, dtype=np.intp)
    if labels.dtype.kind == "f":
        _input("labels", labels, 2, logits.dtype, "logits")
        if labels.shape != logits.shape:
            raise ValueError("labels has shape %s but logits has shape %s: class probabilities (one-hot) must "
                             "have the shape of logits" % (labels.shape, logits.shape))
        return labels
    raise TypeError("labels must be integer class indices or float class probabilities, got dtype %s"
                    % labels.dtype)


def softmax_cross_entropy(logits, labels, *, out=None, backend=None):
    """Softmax cross-entropy, mean over the batch, and its gradient: returns ``(loss, grad)``.

    ``logits`` (n, classes); ``labels``: integer class indices (n,) or class probabilities /
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


def mse_loss(pred, target, *, out=None, backend=None):
    """Mean squared error over all N elements and its gradient: returns ``(loss, grad)`` with
    ``loss = mean((pred - target)**2)``, ``grad = 2 (pred - target) / N`` (as
    ``torch.nn.MSELoss()``; the book's ``0.5 * sum / batch`` differs by a constant factor)."""
    _pair("pred", pred, "target", target)
    out = _loss_out(out, "pred", pred, "target", target)
    if pred.size == 0:
        return float("nan"), out
    return _kernels(backend).mse_loss(pred, target, out), out


def binary_cross_entropy_with_logits(logits, targets, *, out=None, backend=None):
    """Sigmoid + binary cross-entropy, mean over all N elements, and its gradient: returns
    ``(loss, grad)`` with ``loss = mean(max(z, 0) - z*y + log1p(exp(-|z|)))`` (stable for any
    logits), ``grad = (sigmoid(z) - y) / N``, as ``torch.nn.BCEWithLogitsLoss()``.
    ``targets`` in [0, 1], shape and dtype of ``logits``."""
    _pair("logits", logits, "targets", targets)
    out = _loss_out(out, "logits", logits, "targets", targets)
    if logits.size == 0:
        return float("nan"), out
    return _kernels(backend).binary_cross_entropy_with_logits(logits, targets, out), out


# ---------------------------------------------------------------------------------------
# layers

def _size(name, v, minimum=1):
    if type(v) is bool or isinstance(v, (float, np.floating)):
        raise TypeError("%s must be an int, got %s" % (name, type(v).__name__))
    try:
        v = operator.index(v)
    except TypeError:
        raise TypeError("%s must be an int, got %s" % (name, type(v).__name__)) from None
    if v < minimum:
        raise ValueError("%s must be >= %d, got %d" % (name, minimum, v))
    return v


def _dtype(dtype):
    d = np.dtype(dtype)
    if d not in V.FLOAT_DTYPES:
        raise TypeError("dtype must be float32 or float64, got %s" % d)
    return d


class _Buffer:
    """A (rows, cols) scratch array that grows to the largest batch seen; ``get(n)`` is a
    C-contiguous view of its first n rows (no allocation once the largest batch was seen)."""

    __slots__ = ("cols", "dtype", "array")

    def __init__(self, cols, dtype):
        self.cols, self.dtype, self.array = cols, dtype, None

    def get(self, n):
        a = self.array
        if a is None or a.shape[0] < n:
            a = self.array = np.empty((n, self.cols), self.dtype)
        return a if a.shape[0] == n else a[:n]


class Dense:
    """A fully connected layer ``output = f(x @ weight + bias)``.

    ``weight`` (in_features, out_features) is drawn from ``rng`` (None, a seed or a
    ``numpy.random.Generator``): He normal, std ``sqrt(2 / ((1 + s^2) in_features))``, for relu
    (s = 0) and leaky_relu (s = negative_slope); Glorot uniform, limit ``sqrt(6 / (in_features +
    out_features))``, otherwise.  ``bias`` starts at zero.  Weights are drawn in float64 and
    rounded to ``dtype``, so one seed gives the same network in float32 and float64.

    ``forward(x)`` returns an internal buffer (valid until the next ``forward``) and keeps ``x``
    for ``backward(grad_output)``, which fills ``grad_weight``/``grad_bias`` and returns the
    gradient with respect to ``x`` (None with ``compute_grad_x=False``).
    """

    def __init__(self, in_features, out_features, activation="relu", *, negative_slope=0.01, dtype=np.float32,
                 rng=None, backend=None):
        self.in_features = _size("in_features", in_features)
        self.out_features = _size("out_features", out_features)
        self.activation = _activation(activation)
        self.negative_slope = V.nonneg("negative_slope", negative_slope)
        self.dtype = _dtype(dtype)
        self.backend = backend
        self.weight = np.empty((self.in_features, self.out_features), self.dtype)
        self.bias = np.zeros(self.out_features, self.dtype)
        self.grad_weight = np.zeros_like(self.weight)
        self.grad_bias = np.zeros_like(self.bias)
        self._out = _Buffer(self.out_features, self.dtype)
        self._gx = _Buffer(self.in_features, self.dtype)
        self._gz = _Buffer(self.out_features, self.dtype)
        self._x = self._y = None
        self.reset_parameters(rng)

    def reset_parameters(self, rng=None):
        """Draw new weights (He or Glorot, see the class) and zero the bias."""
        rng = np.random.default_rng(rng)
        fan_in, fan_out = self.in_features, self.out_features
        if self.activation in ("relu", "leaky_relu"):
            s = self.negative_slope if self.activation == "leaky_relu" else 0.0
            w = rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / ((1.0 + s * s) * fan_in))
        else:
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-limit, limit, (fan_in, fan_out))
        self.weight[...] = w
        self.bias.fill(0)

    def parameters(self):
        return [self.weight, self.bias]

    def gradients(self):
        return [self.grad_weight, self.grad_bias]

    def __repr__(self):
        extra = ", negative_slope=%g" % self.negative_slope if self.activation == "leaky_relu" else ""
        return "Dense(%d, %d, activation=%r%s, dtype=%s)" % (self.in_features, self.out_features, self.activation,
                                                             extra, self.dtype.name)

    # fast paths: arguments known good (buffers owned here, x checked by the caller)
    def _forward(self, x, kernels):
        out = self._out.get(x.shape[0])
        kernels.dense_forward(x, self.weight, self.bias, out, activation=self.activation,
                              negative_slope=self.negative_slope)
        self._x, self._y = x, out
        return out

    def _backward(self, grad_output, kernels, compute_grad_x, overwrite):
        n = grad_output.shape[0]
        gx = self._gx.get(n) if compute_grad_x else None
        if self.activation == "identity" or overwrite:
            gz = grad_output
        else:
            gz = self._gz.get(n)
        kernels.dense_backward(grad_output, self._x, self.weight, self._y, gx, self.grad_weight, self.grad_bias, gz,
                               activation=self.activation, negative_slope=self.negative_slope)
        return gx

    def _check_x(self, x, name="x"):
        _input(name, x, 2, self.dtype, "the layer")
        if x.shape[1] != self.in_features:
            raise ValueError("%s has shape %s but the layer takes %d features" % (name, x.shape, self.in_features))

    def forward(self, x):
        """``f(x @ weight + bias)`` for x (n, in_features); returns an internal buffer."""
        self._check_x(x)
        if x.shape[0] == 0:
            self._x, self._y = x, np.empty((0, self.out_features), self.dtype)
            return self._y
        return self._forward(x, _kernels(self.backend))

    __call__ = forward

    def backward(self, grad_output, *, compute_grad_x=True, overwrite_grad_output=False):
        """Fill ``grad_weight``/``grad_bias`` for the last ``forward``; return the gradient with
        respect to its input (an internal buffer), or None with ``compute_grad_x=False``."""
        if self._y is None:
            raise RuntimeError("backward() called before forward()")
        compute_grad_x = V.flag("compute_grad_x", compute_grad_x)
        overwrite = V.flag("overwrite_grad_output", overwrite_grad_output)
        _input("grad_output", grad_output, 2, self.dtype, "the layer")
        if grad_output.shape != self._y.shape:
            raise ValueError("grad_output has shape %s but the last forward output has shape %s"
                             % (grad_output.shape, self._y.shape))
        if overwrite and not grad_output.flags.writeable:
            raise ValueError("grad_output must be writeable with overwrite_grad_output=True")
        if grad_output.shape[0] == 0:
            self.grad_weight.fill(0)
            self.grad_bias.fill(0)
            return np.empty((0, self.in_features), self.dtype) if compute_grad_x else None
        for name, a in (("x", self._x), ("output", self._y)):
            if np.may_share_memory(grad_output, a):
                raise ValueError("grad_output and the layer's %s overlap in memory" % name)
        return self._backward(grad_output, _kernels(self.backend), compute_grad_x, overwrite)


# ---------------------------------------------------------------------------------------
# models

def _make_optimizer(optimizer, params, backend, hyper):
    if isinstance(optimizer, str):
        # a rule name: fastgd.optim's object for it (torch's hyperparameter names, e.g. betas=),
        # which steps every parameter in one multi-tensor call
        from .optim import OPTIMIZERS
        if optimizer not in OPTIMIZERS:
            raise ValueError("optimizer must be one of %s or an object with a step(grads) method, got %r"
                             % (", ".join(sorted(OPTIMIZERS)), optimizer))
        if optimizer == "sgd" and "lr" not in hyper:
            raise ValueError("optimizer='sgd' needs a learning rate: fit(..., optimizer='sgd', lr=0.1)")
        return OPTIMIZERS[optimizer](params, backend=backend, **hyper)
    if isinstance(optimizer, type):  # an optimizer class, e.g. fastgd.optim.Adam
        if backend is not None and "backend" not in hyper:
            hyper = dict(hyper, backend=backend)  # the model's backend runs the steps too
        return optimizer(params, **hyper)
    if not callable(getattr(optimizer, "step", None)):
        raise TypeError("optimizer must be a rule name (e.g. 'adam'), an optimizer class or an object with a "
                        "step(grads) method, got %s" % type(optimizer).__name__)
    if hyper:
        raise TypeError("hyperparameters %s go to the optimizer's constructor, not to fit()" % sorted(hyper))
    return optimizer


class Sequential:
    """Layers applied in order, with a loss on top (one of ``LOSSES``):

    * ``softmax_cross_entropy`` (default): the last layer gives logits (use ``identity``); targets
      are integer classes (n,) or one-hot rows; accuracy = argmax agreement.
    * ``binary_cross_entropy_with_logits``: logits again; targets in [0, 1] of the output's
      shape ((n,) is accepted for one output); accuracy = (logit > 0) == (target > 0.5).
    * ``mse_loss``: any output; no accuracy.

    ``backend`` (None: the current backend at each call) runs every kernel of the model.
    """

    def __init__(self, *layers, loss="softmax_cross_entropy", backend=None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Dense):
                raise TypeError("layer %d must be a fastgd.nn.Dense, got %s" % (i, type(layer).__name__))
            if i and layer.in_features != layers[i - 1].out_features:
                raise ValueError("layer %d takes %d features but layer %d gives %d"
                                 % (i, layer.in_features, i - 1, layers[i - 1].out_features))
            if layer.dtype != layers[0].dtype:
                raise TypeError("layer %d has dtype %s but layer 0 has dtype %s" % (i, layer.dtype, layers[0].dtype))
        if loss not in LOSSES:
            raise ValueError("loss must be one of %s, got %r" % (", ".join(LOSSES), loss))
        self.layers = list(layers)
        self.loss = loss
        self.backend = backend
        self.dtype = layers[0].dtype
        self.in_features = layers[0].in_features
        self.out_features = layers[-1].out_features
        self._grad = _Buffer(self.out_features, self.dtype)
        self.history = None

    def __repr__(self):
        return "%s(\n  %s,\n  loss=%r)" % (type(self).__name__, ",\n  ".join(map(repr, self.layers)), self.loss)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)

    def parameters(self):
        """[W1, b1, W2, b2, ...]: the arrays themselves (updated in place by optimizers)."""
        return [p for layer in self.layers for p in layer.parameters()]

    def gradients(self):
        """[dW1, db1, dW2, db2, ...], in the order of ``parameters()``, filled by ``backward``."""
        return [g for layer in self.layers for g in layer.gradients()]

    def num_parameters(self):
        return sum(p.size for p in self.parameters())

    # -- forward / backward ------------------------------------------------------------
    def _forward(self, x, kernels):
        for layer in self.layers:
            x = layer._forward(x, kernels)
        return x

    def _backward(self, grad, kernels, compute_grad_x=False):
        """``grad`` is owned by the model (it is overwritten)."""
        last = len(self.layers) - 1
        for i in range(last, -1, -1):
            grad = self.layers[i]._backward(grad, kernels, i > 0 or compute_grad_x, True)
        return grad

    def _check_x(self, x):
        _input("x", x, 2, self.dtype, "the model")
        if x.shape[1] != self.in_features:
            raise ValueError("x has shape %s but the model takes %d features" % (x.shape, self.in_features))
        if x.shape[0] == 0:
            raise ValueError("x is an empty batch")

    def forward(self, x):
        """The output of the last layer for x (n, in_features) of the model's dtype, C-contiguous.
        Returns an internal buffer, overwritten by the next ``forward``: copy it to keep it."""
        self._check_x(x)
        return self._forward(x, _kernels(self.backend))

    __call__ = forward

    def backward(self, grad_output, *, compute_grad_x=False):
        """Backpropagate ``grad_output`` (d loss / d output of the last ``forward``): fills
        ``gradients()``; returns d loss / d x with ``compute_grad_x=True`` (else None).
        ``grad_output`` is not modified."""
        compute_grad_x = V.flag("compute_grad_x", compute_grad_x)
        last = self.layers[-1]._y
        if last is None:
            raise RuntimeError("backward() called before forward()")
        _input("grad_output", grad_output, 2, self.dtype, "the model")
        if grad_output.shape != last.shape:
            raise ValueError("grad_output has shape %s but the last forward output has shape %s"
                             % (grad_output.shape, last.shape))
        g = self._grad.get(grad_output.shape[0])
        if np.may_share_memory(g, grad_output):
            g = g.copy()
        g[...] = grad_output
        return self._backward(g, _kernels(self.backend), compute_grad_x)

    # -- loss and targets ----------------------------------------------------------------
    def _targets(self, y, n, name="y"):
        """y converted once for the loss: intp classes or an array of the model's dtype."""
        if not isinstance(y, np.ndarray):
            y = np.asarray(y)
        if y.shape[:1] != (n,):
            raise ValueError("%s has shape %s but x has %d rows" % (name, y.shape, n))
        if self.loss == "softmax_cross_entropy":
            if y.dtype.kind in "iu" and y.ndim == 1:
                if n and (y.min() < 0 or y.max() >= self.out_features):
                    raise ValueError("%s must hold class indices in [0, %d)" % (name, self.out_features))
                return np.ascontiguousarray(y, dtype=np.intp)
            if y.dtype.kind == "f" and y.shape == (n, self.out_features):
                return np.ascontiguousarray(y, dtype=self.dtype)
            raise ValueError("%s must be integer class indices (n,) or one-hot rows (n, %d); got dtype %s, "
                             "shape %s" % (name, self.out_features, y.dtype, y.shape))
        if y.ndim == 1 and self.out_features == 1:
            y = y.reshape(n, 1)
        if y.shape != (n, self.out_features):
            raise ValueError("%s has shape %s, expected (%d, %d)" % (name, y.shape, n, self.out_features))
        if y.dtype.kind not in "iuf":
            raise TypeError("%s must be numeric, got dtype %s" % (name, y.dtype))
        return np.ascontiguousarray(y, dtype=self.dtype)

    def _loss(self, out, y, kernels):
        """(loss, grad buffer) for an output and prepared targets."""
        g = self._grad.get(out.shape[0])
        return getattr(kernels, self.loss)(out, y, g), g

    def _correct(self, out, y):
        """Number of correct predictions in a batch (None for mse_loss)."""
        if self.loss == "softmax_cross_entropy":
            pred = out.argmax(axis=1)
            return int(np.count_nonzero(pred == (y if y.ndim == 1 else y.argmax(axis=1))))
        if self.loss == "binary_cross_entropy_with_logits":
            return int(np.count_nonzero((out > 0) == (y > 0.5)))
        return None

    def _n_predictions(self, n):
        return n if self.loss == "softmax_cross_entropy" else n * self.out_features

    def _data(self, x, y, name="x"):
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError("%s has shape %s, expected (n, %d)" % (name, x.shape, self.in_features))
        if x.dtype.kind not in "iuf":
            raise TypeError("%s must be numeric, got dtype %s" % (name, x.dtype))
        x = np.ascontiguousarray(x, dtype=self.dtype)
        return x, (None if y is None else self._targets(y, x.shape[0], "y" if name == "x" else name + "[1]"))

    # -- training ------------------------------------------------------------------------
    def train_step(self, x, y, optimizer):
        """One step on a batch: forward, loss, backward, ``optimizer.step(gradients())``.
        ``x`` and ``y`` as prepared by ``fit`` (model dtype, C-contiguous); returns the loss."""
        kernels = _kernels(self.backend)
        out = self._forward(x, kernels)
        loss, g = self._loss(out, y, kernels)
        self._backward(g, kernels)
        optimizer.step(self.gradients())
        return loss

    def fit(self, x, y, *, epochs=10, batch_size=32, optimizer="adam", shuffle=True, seed=None,
            validation_data=None, verbose=True, progress=None, **hyperparameters):
        """Minibatch training: each epoch shuffles the rows (``seed``: an int, a Generator or
        None), splits them into batches of ``batch_size`` (the last may be smaller) and takes one
        optimizer step per batch on the batch-mean gradient.

        ``optimizer``: a rule name of fastgd's step kernels (``"sgd"``, ``"adam"``, ``"adamw"``,
        ``"adamax"``, ``"nadam"``, ``"radam"``, ``"adagrad"``, ``"adadelta"``, ``"rmsprop"``,
        ``"lion"``) with the hyperparameters of its ``fastgd.optim`` object as keywords
        (torch's names: ``fit(..., optimizer="sgd", lr=0.1, momentum=0.9)``,
        ``fit(..., optimizer="adam", betas=(0.9, 0.99))``); an optimizer class such as ``fastgd.optim.Adam`` (built with
        ``parameters()`` and the keywords); or any object with a ``step(grads)`` method.

        Returns the history, a dict of per-epoch lists: ``loss`` (mean training loss over the
        epoch's batches), ``accuracy`` (training predictions during the epoch; not for
        mse_loss), ``val_loss``/``val_accuracy`` with ``validation_data=(x_val, y_val)``, and
        ``time`` (seconds per epoch, training only).  Also kept as ``self.history``.
        A progress bar (tqdm, if installed; else one line per epoch) is shown unless
        ``verbose=False`` or ``progress=False``.
        """
        epochs = _size("epochs", epochs, 0)
        batch_size = _size("batch_size", batch_size)
        shuffle = V.flag("shuffle", shuffle)
        verbose = V.flag("verbose", verbose)
        progress = verbose if progress is None else V.flag("progress", progress)
        x, y = self._data(x, y)
        n = x.shape[0]
        if n == 0:
            raise ValueError("x is empty")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError("validation_data must be a tuple (x_val, y_val)")
            xv, yv = self._data(validation_data[0], validation_data[1], "validation_data[0]")
        rng = np.random.default_rng(seed)
        opt = _make_optimizer(optimizer, self.parameters(), self.backend, hyperparameters)
        kernels = _kernels(self.backend)
        classify = self.loss != "mse_loss"
        hist = {"loss": []}
        if classify:
            hist["accuracy"] = []
        if validation_data is not None:
            hist["val_loss"] = []
            if classify:
                hist["val_accuracy"] = []
        hist["time"] = []
        bs = min(batch_size, n)
        xb = np.empty((bs,) + x.shape[1:], self.dtype)
        yb = np.empty((bs,) + y.shape[1:], y.dtype)
        order = np.arange(n)
        bar = _Progress(epochs, progress)
        self.history = hist
        try:
            for epoch in range(epochs):
                t0 = time.perf_counter()
                if shuffle:
                    order = rng.permutation(n)
                total, correct = 0.0, 0
                for start in range(0, n, bs):
                    idx = order[start:start + bs]
                    b = idx.shape[0]
                    xi = np.take(x, idx, axis=0, out=xb[:b])
                    yi = np.take(y, idx, axis=0, out=yb[:b])
                    out = self._forward(xi, kernels)
                    loss, g = self._loss(out, yi, kernels)
                    if classify:
                        correct += self._correct(out, yi)
                    self._backward(g, kernels)
                    opt.step(self.gradients())
                    total += loss * b
                hist["time"].append(time.perf_counter() - t0)
                hist["loss"].append(total / n)
                if classify:
                    hist["accuracy"].append(correct / self._n_predictions(n))
                if validation_data is not None:
                    ev = self._evaluate(xv, yv, kernels, 1024)
                    hist["val_loss"].append(ev["loss"])
                    if classify:
                        hist["val_accuracy"].append(ev["accuracy"])
                if progress:
                    bar.update(epoch, epochs, {k: v[-1] for k, v in hist.items() if k != "time"})
        finally:
            bar.close()
        return hist

    # -- inference -------------------------------------------------------------------------
    def predict(self, x, *, batch_size=1024):
        """The model's output for x (n, in_features), as a new array (for softmax_cross_entropy
        and binary_cross_entropy_with_logits: logits; ``argmax(axis=1)`` gives classes)."""
        batch_size = _size("batch_size", batch_size)
        x, _ = self._data(x, None)
        kernels = _kernels(self.backend)
        result = np.empty((x.shape[0], self.out_features), self.dtype)
        for start in range(0, x.shape[0], batch_size):
            result[start:start + batch_size] = self._forward(x[start:start + batch_size], kernels)
        return result

    def _evaluate(self, x, y, kernels, batch_size):
        total, correct = 0.0, 0
        n = x.shape[0]
        for start in range(0, n, batch_size):
            xi, yi = x[start:start + batch_size], y[start:start + batch_size]
            out = self._forward(xi, kernels)
            loss, _ = self._loss(out, yi, kernels)
            total += loss * xi.shape[0]
            if self.loss != "mse_loss":
                correct += self._correct(out, yi)
        res = {"loss": total / n}
        if self.loss != "mse_loss":
            res["accuracy"] = correct / self._n_predictions(n)
        return res

    def evaluate(self, x, y, *, batch_size=1024):
        """``{"loss": mean loss, "accuracy": fraction correct}`` on (x, y) (no accuracy for
        mse_loss); the parameters and gradients are left as they are."""
        batch_size = _size("batch_size", batch_size)
        x, y = self._data(x, y)
        if x.shape[0] == 0:
            raise ValueError("x is empty")
        return self._evaluate(x, y, _kernels(self.backend), batch_size)


class MLP(Sequential):
    """A multilayer perceptron: ``sizes = [in, hidden..., out]`` gives ``len(sizes) - 1`` Dense
    layers, ``activation`` on the hidden ones and ``output_activation`` (default ``identity``:
    logits for the cross-entropy losses) on the last.  One ``rng`` (seed or Generator) draws all
    initial weights, layer by layer."""

    def __init__(self, sizes, activation="relu", *, output_activation="identity", loss="softmax_cross_entropy",
                 negative_slope=0.01, dtype=np.float32, rng=None, backend=None):
        sizes = [_size("sizes[%d]" % i, s) for i, s in enumerate(sizes)]
        if len(sizes) < 2:
            raise ValueError("sizes must list at least the input and output sizes, got %r" % (sizes,))
        rng = np.random.default_rng(rng)
        layers = [Dense(sizes[i], sizes[i + 1], activation if i < len(sizes) - 2 else output_activation,
                        negative_slope=negative_slope, dtype=dtype, rng=rng, backend=backend)
                  for i in range(len(sizes) - 1)]
        super().__init__(*layers, loss=loss, backend=backend)


# ---------------------------------------------------------------------------------------
# progress display

class _Progress:
    """tqdm over epochs when installed (else one printed line per epoch); inert when off."""

    def __init__(self, epochs, on):
        self.on, self.bar = on, None
        if on:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=epochs, unit="epoch", leave=True)

    def update(self, epoch, epochs, metrics):
        text = {k: "%.4g" % v for k, v in metrics.items()}
        if self.bar is not None:
            self.bar.set_postfix(text, refresh=False)
            self.bar.update(1)
        elif self.on:
            print("epoch %d/%d  %s" % (epoch + 1, epochs, "  ".join("%s=%s" % kv for kv in text.items())),
                  file=sys.stderr)

    def close(self):
        if self.bar is not None:
            self.bar.close()
