"""fastgd.nn's layers and models: ``Dense``, ``Sequential`` and ``MLP`` with ``forward``,
``backward``, ``train_step``, ``fit``, ``predict`` and ``evaluate``, the reusable buffers they
write and the checks that keep an input apart from them, and ``fit``'s progress display.
Every kernel they run is one of ``fastgd.nn.functional``'s backend kernels, reached after the
checks here; the package docstring, ``help(fastgd.nn)``, describes both.
"""
from __future__ import annotations

import itertools
import math
import operator
import sys
import time
import weakref
from typing import TYPE_CHECKING

import numpy as np

from .. import _validate as V
from .functional import (LOSSES, _activation, _blas_dims, _class_indices, _fast_ok, _fast_state, _input,
                         _kernels)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Any, Protocol, overload

    from numpy.typing import ArrayLike

    from .._typing import Activation, Backend, DTypeLike, FloatArray
    from .functional import Loss

    #: ``rng=`` / ``seed=``: what numpy.random.default_rng takes
    Seed = int | np.random.Generator | None

    class SupportsStep(Protocol):
        """What ``train_step`` and ``fit`` step: an object with ``step(grads)``."""

        def step(self, grads: list[FloatArray], /) -> Any: ...


__all__ = ["Dense", "Sequential", "MLP"]


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


# The layers' reusable buffers (outputs, grad_x, grad_z, the model's loss gradient) and the arrays
# that alias them.  A layer keeps a *reference* to its input until backward, so an input that is
# one of these buffers could be rewritten under it: forward copies an input that shares memory
# with a buffer the same layer (or model) writes (_apart, exact: every array involved is
# C-contiguous), and for an input that is another layer's buffer it records the buffer's write
# count, which backward compares (_WRITES).
_WRITES: dict[int, list[int]] = {}  # id(buffer array) -> [times handed out for writing]; entries leave with their array
_REFS: dict[int, weakref.ref[Any]] = {}  # id(buffer array) -> weakref whose callback removes both entries
_layout = [0]  # bumped when a buffer is reallocated or a layer's gradient assigned: cached hazard tuples are stale


def _register(a):
    """A new write counter for the buffer array ``a`` (found again from any view: ``id(view.base)``)."""
    key = id(a)
    count = [0]
    _WRITES[key] = count
    _REFS[key] = weakref.ref(a, lambda _, key=key, w=_WRITES, r=_REFS: (w.pop(key, None), r.pop(key, None)))
    _layout[0] += 1
    return count


def _apart(x, arrays):
    """True when ``x`` shares no byte with any of ``arrays`` (None entries skipped).  Every array
    here is C-contiguous, so comparing address ranges is exact: arrays_ok (compiled) when
    present; when it declines (it also declines when two of ``arrays`` overlap each other, e.g.
    one gradient array assigned to two layers, or for more than 15 arrays) np.may_share_memory,
    exact for contiguous arrays.  The callers inline the common case, ``_fast_state[0]((x,),
    arrays)`` being True, and call this only when it is not."""
    ok = _fast_state[0] if _fast_state[1] else _fast_ok()
    if ok is not None:
        ins = (x,)
        for i in range(0, len(arrays), 15):  # arrays_ok takes at most 16 arrays
            if not ok(ins, arrays[i:i + 15]):
                break
        else:
            return True
    for a in arrays:
        if a is not None and a.size and np.may_share_memory(x, a):
            return False
    return True


_FORWARDS = itertools.count(1)  # numbers every layer forward


class _Buffer:
    """A (rows, cols) scratch array that grows to the largest batch seen; ``get(n)`` is a
    C-contiguous view of its first n rows (no allocation once the largest batch was seen).
    The view is a new object each time and the array itself never leaves: what callers do to
    a view's shape or dtype attributes cannot change the buffer.  Every ``get`` is followed by
    a write into the view and counts one write of the array (``writes[0]``); a reallocated
    array gets a new counter (the old one, still seen by views of the old array, stops)."""

    __slots__ = ("cols", "dtype", "array", "writes")

    def __init__(self, cols, dtype):
        self.cols, self.dtype, self.array, self.writes = cols, dtype, None, None

    def get(self, n):
        a = self.array
        if a is None or a.shape[0] < n:
            a = self.array = np.empty((n, self.cols), self.dtype)
            self.writes = _register(a)
        self.writes[0] += 1
        return a[:n]

    def __getstate__(self):
        return self.cols, self.dtype, self.array

    def __setstate__(self, state):
        self.cols, self.dtype, self.array = state
        self.writes = None if self.array is None else _register(self.array)


class Dense:
    """A fully connected layer ``output = f(x @ weight + bias)``.

    ``weight`` (in_features, out_features) is drawn from ``rng`` (None, a seed or a
    ``numpy.random.Generator``): He normal, std ``sqrt(2 / ((1 + s^2) in_features))``, for relu
    (s = 0) and leaky_relu (s = negative_slope); Glorot uniform, limit ``sqrt(6 / (in_features +
    out_features))``, otherwise.  ``bias`` starts at zero.  Weights are drawn in float64 and
    rounded to ``dtype``, so one seed gives the same network in float32 and float64.

    ``forward(x)`` returns the layer's output buffer and keeps ``x`` for ``backward(grad_output)``,
    which fills ``grad_weight``/``grad_bias`` and returns the gradient with respect to ``x`` (the
    layer's grad_x buffer; None with ``compute_grad_x=False``).

    Reused buffers and kept references:

    * The output buffer is rewritten by this layer's next ``forward`` and the grad_x buffer by
      its next ``backward`` (both are views of arrays that grow to the largest batch seen):
      copy them to keep them.  ``backward`` reads the output buffer, so do not modify it in
      between.
    * ``forward`` keeps a *reference* to ``x``, not a copy, until the next ``forward``:
      ``backward`` reads it, so do not modify ``x`` in place before ``backward``.
    * Except when ``x`` shares memory with an array this layer writes (its output or grad_x
      buffer, ``grad_weight``, ``grad_bias``): then ``forward`` copies ``x`` first, so
      ``layer(layer(x))`` and its ``backward`` give exactly what ``layer(layer(x).copy())``
      gives.  Detecting this costs a few address comparisons; the common input (an array of
      the caller's) is never copied.
    * When ``x`` is another fastgd layer's output or grad_x buffer (a chain ``l2(l1(x))``), it
      is kept by reference and the buffer's write count is recorded: ``backward`` raises
      RuntimeError if that layer has rewritten it since (``l2(l1(x)); l1(x2); l2.backward(g)``
      would otherwise use ``l1``'s new output); pass ``l1(x).copy()`` to keep the input.  An
      array of the caller's modified in place is not detected: that is the rule above.

    ``in_features``, ``out_features`` and ``dtype`` are read-only.  ``weight``, ``bias``,
    ``grad_weight`` and ``grad_bias`` may be assigned (e.g. to load weights or tie them): the
    new array must be a numpy.ndarray of the layer's dtype and shape, C-contiguous and aligned
    (the gradients also writeable and apart from the other three); it is used as it is, not
    copied.  ``activation`` and ``negative_slope`` may be assigned valid values.
    """

    backend: Backend | None
    _x: FloatArray | None  # the input of the last forward, kept for backward
    _y: FloatArray | None  # its output
    _xw: list[int] | None

    def __init__(self, in_features: int, out_features: int, activation: Activation = "relu", *,
                 negative_slope: float = 0.01, dtype: DTypeLike = np.float32, rng: Seed = None,
                 backend: Backend | None = None) -> None:
        self._in = _size("in_features", in_features)
        self._outf = _size("out_features", out_features)
        self._activation = _activation(activation)
        self._slope = V.nonneg("negative_slope", negative_slope)
        self._dtype = _dtype(dtype)
        self.backend = backend
        self._wshape, self._bshape = (self._in, self._outf), (self._outf,)
        self._weight = np.empty(self._wshape, self._dtype)
        self._bias = np.zeros(self._bshape, self._dtype)
        self._grad_weight = np.zeros(self._wshape, self._dtype)
        self._grad_bias = np.zeros(self._bshape, self._dtype)
        self._out = _Buffer(self._outf, self._dtype)
        self._gx = _Buffer(self._in, self._dtype)
        self._gz = _Buffer(self._outf, self._dtype)
        self._x = self._y = None
        self._xw, self._xn = None, 0  # the write counter of the buffer x is a view of, and its value at forward
        self._hz, self._hz_key = (), -1  # _hazards() cache
        self.reset_parameters(rng)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_hz"], state["_hz_key"] = (), -1  # rebuilt from the unpickled buffers
        return state

    # -- attributes -----------------------------------------------------------------------
    in_features = property(lambda self: self._in, doc="Input features (read-only).")
    out_features = property(lambda self: self._outf, doc="Output features (read-only).")
    dtype = property(lambda self: self._dtype, doc="float32 or float64 (read-only).")

    @property
    def activation(self) -> Activation:
        return self._activation

    @activation.setter
    def activation(self, value: Activation) -> None:
        self._activation = _activation(value)

    @property
    def negative_slope(self) -> float:
        return self._slope

    @negative_slope.setter
    def negative_slope(self, value: float) -> None:
        self._slope = V.nonneg("negative_slope", value)

    def _set(self, name, value):
        """Check an array assigned to one of the layer's four arrays, then store it."""
        shape = self._wshape if name.endswith("weight") else self._bshape
        written = name.startswith("grad_")
        _input(name, value, len(shape), self._dtype, "the layer", shape, written)
        arrays = {"weight": self._weight, "bias": self._bias, "grad_weight": self._grad_weight,
                  "grad_bias": self._grad_bias}
        for other, a in arrays.items():
            if other != name and (written or other.startswith("grad_")) and value.size and a.size \
                    and np.may_share_memory(value, a):
                raise ValueError("%s and the layer's %s overlap in memory; gradients must be separate buffers"
                                 % (name, other))
        setattr(self, "_" + name, value)
        if written:
            _layout[0] += 1  # the hazard tuples hold the gradient arrays

    weight = property(lambda self: self._weight, lambda self, v: self._set("weight", v),
                      doc="(in_features, out_features); optimizers update it in place.")
    bias = property(lambda self: self._bias, lambda self, v: self._set("bias", v), doc="(out_features,).")
    grad_weight = property(lambda self: self._grad_weight, lambda self, v: self._set("grad_weight", v),
                           doc="d loss / d weight, written by backward.")
    grad_bias = property(lambda self: self._grad_bias, lambda self, v: self._set("grad_bias", v),
                         doc="d loss / d bias, written by backward.")

    def _params(self):
        """The four arrays, after a cheap re-check of what can change in place after they were
        checked on assignment (shape, dtype, strides, the gradients' writeable flag): a kernel
        takes its sizes from them.  On a mismatch the full checks name the array."""
        w, b, gw, gb = self._weight, self._bias, self._grad_weight, self._grad_bias
        dt, ws, bs = self._dtype, self._wshape, self._bshape
        if (w.shape == ws and gw.shape == ws and b.shape == bs and gb.shape == bs and w.dtype == dt
                and b.dtype == dt and gw.dtype == dt and gb.dtype == dt):
            fw, fb, fgw, fgb = w.flags, b.flags, gw.flags, gb.flags
            if (fw.c_contiguous and fb.c_contiguous and fgw.c_contiguous and fgb.c_contiguous and fgw.writeable
                    and fgb.writeable):
                return w, b, gw, gb
        for name, a, shape in (("weight", w, ws), ("bias", b, bs), ("grad_weight", gw, ws), ("grad_bias", gb, bs)):
            _input(name, a, len(shape), dt, "the layer", shape, name.startswith("grad_"))
        raise AssertionError("unreachable")  # pragma: no cover

    def reset_parameters(self, rng: Seed = None) -> None:
        """Draw new weights (He or Glorot, see the class) and zero the bias."""
        rng = np.random.default_rng(rng)
        fan_in, fan_out = self.in_features, self.out_features
        if self.activation in ("relu", "leaky_relu"):
            s = self.negative_slope if self.activation == "leaky_relu" else 0.0
            w = rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / ((1.0 + s * s) * fan_in))
        else:
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-limit, limit, (fan_in, fan_out))
        w_, b_, _, _ = self._params()
        w_[...] = w
        b_.fill(0)

    def parameters(self) -> list[FloatArray]:
        return [self.weight, self.bias]

    def gradients(self) -> list[FloatArray]:
        return [self.grad_weight, self.grad_bias]

    def __repr__(self) -> str:
        extra = ", negative_slope=%g" % self.negative_slope if self.activation == "leaky_relu" else ""
        return "Dense(%d, %d, activation=%r%s, dtype=%s)" % (self.in_features, self.out_features, self.activation,
                                                             extra, self.dtype.name)

    def _hazards(self):
        """The arrays this layer writes in forward or backward (output, grad_x and grad_z
        buffers, grad_weight, grad_bias): an input sharing memory with one is copied first."""
        if self._hz_key != _layout[0]:
            self._hz = (self._out.array, self._gx.array, self._gz.array, self._grad_weight, self._grad_bias)
            self._hz_key = _layout[0]
        return self._hz

    # the paths to the kernels: x checked by the caller (or a buffer of the layer before), the
    # layer's arrays re-checked (_params), the batch of backward compared with forward's
    # (_backward_ready).  Sequential runs every layer's checks before the first kernel, so a
    # model call that raises has written nothing; it passes their results as ``params``.
    def _forward(self, x, kernels, params=None):
        w, b, _, _ = self._params() if params is None else params
        if x.ndim != 2 or x.shape[1] != self._in or x.dtype != self._dtype:
            raise ValueError("x has shape %s and dtype %s but the layer takes (n, %d) %s"
                             % (x.shape, x.dtype, self._in, self._dtype))
        out = self._out.get(x.shape[0])
        kernels.dense_forward(x, w, b, out, activation=self._activation, negative_slope=self._slope)
        self._x = x
        self._y = out
        self._fwd = next(_FORWARDS)  # which forward this was (a model checks its layers' at backward)
        self._xw = xw = _WRITES.get(id(x.base))  # x is a view of a layer's buffer: its write count now
        if xw is not None:
            self._xn = xw[0]
        return out

    def _backward_ready(self, n):
        """The layer's arrays (checked) when a backward pass of an n-row batch may run now."""
        params = self._params()
        x, y = self._x, self._y
        # x may be the caller's array (the first layer's input): changed in place since forward,
        # it must not reach the kernel with other sizes
        if y is None or y.shape != (n, self._outf) or x.shape != (n, self._in) or x.dtype != self._dtype \
                or not x.flags.c_contiguous:
            raise RuntimeError("the layer's last forward was on another batch (or its input was changed in place "
                               "since): backward of %d rows, the forward input has shape %s and the output %s"
                               % (n, None if x is None else x.shape, None if y is None else y.shape))
        xw = self._xw
        if xw is not None and xw[0] != self._xn:
            raise RuntimeError("the input of the layer's last forward was overwritten since: it is another layer's "
                               "output (or grad_x) buffer, which that layer has written again; the layer keeps its "
                               "input by reference until backward (pass a copy, layer(h.copy()), to keep it)")
        return params

    def _backward(self, grad_output, kernels, compute_grad_x, overwrite, params=None):
        n = grad_output.shape[0]
        w, _, gw, gb = self._backward_ready(n) if params is None else params
        x, y = self._x, self._y
        gx = self._gx.get(n) if compute_grad_x else None
        if self._activation == "identity" or overwrite:
            gz = grad_output
        else:
            gz = self._gz.get(n)
        kernels.dense_backward(grad_output, x, w, y, gx, gw, gb, gz, activation=self._activation,
                               negative_slope=self._slope)
        return gx

    def _check_x(self, x, name="x"):
        _input(name, x, 2, self.dtype, "the layer")
        if x.shape[1] != self.in_features:
            raise ValueError("%s has shape %s but the layer takes %d features" % (name, x.shape, self.in_features))

    def forward(self, x: FloatArray) -> FloatArray:
        """``f(x @ weight + bias)`` for x (n, in_features); returns the layer's output buffer,
        rewritten by the next ``forward``.  ``x`` is kept by reference until ``backward`` (copied
        first when it shares memory with an array the layer writes; see the class)."""
        self._check_x(x)
        if x.shape[0] == 0:
            self._x, self._y, self._xw = x, np.empty((0, self.out_features), self.dtype), None
            return self._y
        _blas_dims(batch=x.shape[0])
        hz = self._hz if self._hz_key == _layout[0] else self._hazards()
        ok = _fast_state[0]  # _apart's common case inlined: x overlaps none of hz
        if (ok is None or not ok((x,), hz)) and not _apart(x, hz):
            x = x.copy()  # e.g. layer(layer(x)): the kernel would write the output while reading x
        return self._forward(x, _kernels(self.backend))

    __call__ = forward

    def backward(self, grad_output: FloatArray, *, compute_grad_x: bool = True,
                 overwrite_grad_output: bool = False) -> FloatArray | None:
        """Fill ``grad_weight``/``grad_bias`` for the last ``forward``; return the gradient with
        respect to its input (the layer's grad_x buffer, rewritten by the next ``backward``), or
        None with ``compute_grad_x=False``.  RuntimeError if the forward input was another
        layer's buffer and that layer has rewritten it since (see the class)."""
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
        self._check_x(self._x, "the input of the last forward")  # it may have been changed in place
        w, b, gw, gb = self._params()
        if grad_output.shape[0] == 0:
            gw.fill(0)
            gb.fill(0)
            return np.empty((0, self.in_features), self.dtype) if compute_grad_x else None
        # grad_output is read while grad_weight/grad_bias (and the internal grad_x, grad_z) are
        # written, and itself written with overwrite: it must be apart from all of them
        others = [("the layer's grad_weight", gw), ("the layer's grad_bias", gb), ("the layer's input x", self._x),
                  ("the layer's output", self._y), ("the layer's weight", w), ("the layer's bias", b),
                  ("the layer's grad_x buffer", self._gx.array), ("the layer's grad_z buffer", self._gz.array)]
        for name, a in others:
            if a is not None and a.size and np.may_share_memory(grad_output, a):
                raise ValueError("grad_output and %s overlap in memory" % name)
        return self._backward(grad_output, _kernels(self.backend), compute_grad_x, overwrite)


# ---------------------------------------------------------------------------------------
# models

def _make_optimizer(optimizer, params, backend, hyper):
    if isinstance(optimizer, str):
        # a rule name: fastgd.optim's object for it (torch's hyperparameter names, e.g. betas=),
        # which steps every parameter in one multi-tensor call
        from ..optim import OPTIMIZERS
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


def _as_data(name, a):
    """A data argument of fit/predict/evaluate (read, converted, never written): an ndarray or
    anything numpy.asarray takes, not a masked array (its mask would be dropped silently) or a
    numpy.matrix (it is always 2-D: a vector of targets is not one).  Other ndarray subclasses
    (numpy.memmap) are read through numpy.asarray."""
    if type(a) is np.ndarray:
        return a
    if a is None:
        raise TypeError("%s is required, got None" % name)
    if isinstance(a, (np.ma.MaskedArray, np.matrix)):
        raise TypeError("%s must not be a %s.%s (numpy.asarray(%s) drops what makes it one; fill or remove masked "
                        "entries first)" % (name, type(a).__module__, type(a).__name__, name))
    return np.asarray(a)


class Sequential:
    """Layers applied in order, with a loss on top (one of ``LOSSES``):

    * ``softmax_cross_entropy`` (default): the last layer gives logits (use ``identity``); targets
      are integer classes (n,) or one-hot rows; accuracy = argmax agreement.
    * ``binary_cross_entropy_with_logits``: logits again; targets in [0, 1] of the output's
      shape ((n,) is accepted for one output); accuracy = (logit > 0) == (target > 0.5).
    * ``mse_loss``: any output; no accuracy.

    ``backend`` (None: the current backend at each call) runs every kernel of the model.
    ``layers`` (a tuple), ``loss``, ``dtype``, ``in_features`` and ``out_features`` are
    read-only; a layer may appear only once (it keeps the input of its last forward).

    Reused buffers and kept references: ``forward`` returns the last layer's output buffer,
    rewritten by the next ``forward`` (also by ``train_step``, ``fit``, ``predict`` and
    ``evaluate``); ``backward(compute_grad_x=True)`` returns the first layer's grad_x buffer,
    rewritten by the next ``backward``.  Every layer keeps its input by reference until
    ``backward``: the first layer keeps ``x`` itself, so do not modify ``x`` in place between
    ``forward`` and ``backward`` (the others keep the previous layer's output buffer, which only
    this model writes).  An ``x`` (or float targets ``y``) sharing memory with an array the
    model writes (any layer's output or grad_x buffer or gradients) is copied first, so
    ``model(model(x))`` and its ``backward``, ``model.train_step(model(x), ...)`` or
    ``model.fit(x, model(x))`` give exactly what they give on a copy; the check is a few address
    comparisons and the common input (an array of the caller's) is not copied.  An ``x`` that is
    another model's or layer's buffer is kept by reference with that buffer's write count:
    ``backward`` raises RuntimeError if it was rewritten since (``m2(m1(x)); m1(x2);
    m2.backward(g)``; pass ``m1(x).copy()`` to keep it).  Running one of the model's layers on its
    own between the model's ``forward`` and ``backward`` replaces that layer's kept input and
    output (a layer keeps its last forward only); ``backward`` then raises RuntimeError if the
    batch differs or if that call rewrote the input the next layer kept.
    """

    backend: Backend | None
    history: dict[str, list[float]] | None
    _grad: _Buffer

    if TYPE_CHECKING:  # the layers one by one, or one list or tuple of them
        @overload
        def __init__(self, *layers: Dense, loss: Loss = "softmax_cross_entropy",
                     backend: Backend | None = None) -> None: ...

        @overload
        def __init__(self, layers: Sequence[Dense], /, *, loss: Loss = "softmax_cross_entropy",
                     backend: Backend | None = None) -> None: ...

    def __init__(self, *layers: Any, loss: Loss = "softmax_cross_entropy", backend: Backend | None = None) -> None:
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
            for j in range(i):
                if layers[j] is layer:
                    raise ValueError("layer %d is layer %d: a Dense layer keeps the input of its last forward, so "
                                     "it can appear only once (make another Dense)" % (i, j))
        if type(loss) is not str or loss not in LOSSES:
            raise ValueError("loss must be one of %s, got %r" % (", ".join(LOSSES), loss))
        self._layers = tuple(layers)
        self._loss_name = loss
        self.backend = backend
        self._dtype = layers[0].dtype
        self._in = layers[0].in_features
        self._outf = layers[-1].out_features
        self._grad = _Buffer(self._outf, self._dtype)
        self._hz, self._hz_key = (), -1  # _hazards() cache
        self.history = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_hz"], state["_hz_key"] = (), -1  # rebuilt from the unpickled buffers
        return state

    def _hazards(self):
        """The arrays the model writes in forward, backward or a training step (every layer's
        output and grad_x buffers and gradients, the loss-gradient buffer); cached until a
        buffer is reallocated or a gradient assigned."""
        if self._hz_key != _layout[0]:
            hz = [self._grad.array]
            for layer in self._layers:
                hz += (layer._out.array, layer._gx.array, layer._grad_weight, layer._grad_bias)
            self._hz, self._hz_key = tuple(hz), _layout[0]
        return self._hz

    def _own(self, a):
        """``a`` (checked: C-contiguous, of the model's dtype), or a copy when it shares memory
        with an array the model writes (``model(model(x))``)."""
        hz = self._hz if self._hz_key == _layout[0] else self._hazards()
        ok = _fast_state[0]  # _apart's common case inlined
        return a if (ok is not None and ok((a,), hz)) or _apart(a, hz) else a.copy()

    layers = property(lambda self: self._layers, doc="The layers, a tuple (read-only).")
    loss = property(lambda self: self._loss_name, doc="The loss, one of LOSSES (read-only).")
    dtype = property(lambda self: self._dtype, doc="float32 or float64 (read-only).")
    in_features = property(lambda self: self._in, doc="Input features (read-only).")
    out_features = property(lambda self: self._outf, doc="Output features (read-only).")

    def __repr__(self) -> str:
        return "%s(\n  %s,\n  loss=%r)" % (type(self).__name__, ",\n  ".join(map(repr, self.layers)), self.loss)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Dense:
        return self.layers[i]

    def __iter__(self) -> Iterator[Dense]:
        return iter(self.layers)

    def parameters(self) -> list[FloatArray]:
        """[W1, b1, W2, b2, ...]: the arrays themselves (updated in place by optimizers)."""
        return [p for layer in self.layers for p in layer.parameters()]

    def gradients(self) -> list[FloatArray]:
        """[dW1, db1, dW2, db2, ...], in the order of ``parameters()``, filled by ``backward``."""
        return [g for layer in self.layers for g in layer.gradients()]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    # -- forward / backward ------------------------------------------------------------
    def _forward(self, x, kernels):
        layers = self._layers
        params = [layer._params() for layer in layers]  # all checked before the first kernel runs
        for layer, p in zip(layers, params):
            x = layer._forward(x, kernels, p)
        self._fwds = tuple(layer._fwd for layer in layers)
        return x

    def _backward(self, grad, kernels, compute_grad_x=False):
        """``grad`` is owned by the model (it is overwritten)."""
        layers = self._layers
        n = grad.shape[0]
        if getattr(self, "_fwds", None) != tuple(getattr(layer, "_fwd", None) for layer in layers):
            # a layer ran forward again since the model's (in another model, or on its own): its
            # kept input and output are that call's, and the gradients would be silently wrong
            raise RuntimeError("a layer of the model ran forward again since the model's forward (in another model "
                               "or on its own): run the model's forward again before its backward")
        params = [layer._backward_ready(n) for layer in layers]  # all checked before the first kernel runs
        for i in range(len(layers) - 1, -1, -1):
            grad = layers[i]._backward(grad, kernels, i > 0 or compute_grad_x, True, params[i])
        return grad

    def _check_x(self, x):
        _input("x", x, 2, self.dtype, "the model")
        if x.shape[1] != self.in_features:
            raise ValueError("x has shape %s but the model takes %d features" % (x.shape, self.in_features))
        if x.shape[0] == 0:
            raise ValueError("x is an empty batch")
        _blas_dims(batch=x.shape[0])

    def forward(self, x: FloatArray) -> FloatArray:
        """The output of the last layer for x (n, in_features) of the model's dtype, C-contiguous.
        Returns an internal buffer, overwritten by the next ``forward``: copy it to keep it.
        ``x`` is kept by reference until ``backward`` (copied first when it shares memory with
        an array the model writes; see the class)."""
        self._check_x(x)
        return self._forward(self._own(x), _kernels(self.backend))

    __call__ = forward

    def backward(self, grad_output: FloatArray, *, compute_grad_x: bool = False) -> FloatArray | None:
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
        """y converted once for the loss: a checked intp copy of class indices, or an aligned
        C-contiguous array of the model's dtype."""
        y = _as_data(name, y)
        if y.shape[:1] != (n,):
            raise ValueError("%s has shape %s but x has %d rows" % (name, y.shape, n))
        if self.loss == "softmax_cross_entropy":
            if y.dtype.kind in "iu" and y.ndim == 1:
                return _class_indices(name, y, n, self.out_features, "the model has %d outputs" % self.out_features)
            if y.dtype.kind == "f" and y.shape == (n, self.out_features):
                return self._own(np.require(y, self.dtype, ["C", "A"]))
            raise ValueError("%s must be integer class indices (n,) or one-hot rows (n, %d); got dtype %s, "
                             "shape %s" % (name, self.out_features, y.dtype, y.shape))
        if y.ndim == 1 and self.out_features == 1:
            y = y.reshape(n, 1)
        if y.shape != (n, self.out_features):
            raise ValueError("%s has shape %s, expected (%d, %d)" % (name, y.shape, n, self.out_features))
        if y.dtype.kind not in "iuf":
            raise TypeError("%s must be numeric, got dtype %s" % (name, y.dtype))
        return self._own(np.require(y, self.dtype, ["C", "A"]))  # read while forward writes the outputs

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

    def _data(self, x: Any, y: Any, name: str = "x",
              y_name: str = "y") -> tuple[FloatArray, Any]:
        x = _as_data(name, x)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError("%s has shape %s, expected (n, %d)" % (name, x.shape, self.in_features))
        if x.dtype.kind not in "iuf":
            raise TypeError("%s must be numeric, got dtype %s" % (name, x.dtype))
        x = self._own(np.require(x, self.dtype, ["C", "A"]))  # the model's dtype, native, C-contiguous, aligned
        return x, (None if y is None else self._targets(y, x.shape[0], y_name))

    # -- training ------------------------------------------------------------------------
    def train_step(self, x: FloatArray, y: ArrayLike, optimizer: SupportsStep) -> float:
        """One step on a batch: forward, loss, backward, ``optimizer.step(gradients())``;
        returns the loss.  ``x``: a numpy.ndarray (n, in_features) of the model's dtype,
        C-contiguous (as ``fit`` prepares it); ``y``: targets as ``fit`` takes them (checked and,
        where needed, converted on every call).  ``optimizer``: an object with ``step(grads)``."""
        self._check_x(x)
        x = self._own(x)
        y = self._targets(y, x.shape[0])
        if not callable(getattr(optimizer, "step", None)):
            raise TypeError("optimizer must have a step(grads) method, got %s" % type(optimizer).__name__)
        kernels = _kernels(self.backend)
        out = self._forward(x, kernels)
        loss, g = self._loss(out, y, kernels)
        self._backward(g, kernels)
        optimizer.step(self.gradients())
        return loss

    def fit(self, x: ArrayLike, y: ArrayLike, *, epochs: int = 10, batch_size: int = 32,
            optimizer: str | type[Any] | SupportsStep = "adam", shuffle: bool = True, seed: Seed = None,
            validation_data: tuple[ArrayLike, ArrayLike] | None = None, verbose: bool = True,
            progress: bool | None = None, **hyperparameters: Any) -> dict[str, list[float]]:
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
        if y is None:
            raise TypeError("y is required, got None")
        x, y = self._data(x, y)
        n = x.shape[0]
        if n == 0:
            raise ValueError("x is empty")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError("validation_data must be a tuple (x_val, y_val)")
            if validation_data[1] is None:
                raise TypeError("validation_data[1] is required, got None")
            xv, yv = self._data(validation_data[0], validation_data[1], "validation_data[0]", "validation_data[1]")
        # the data must not change while the optimizer updates the parameters (fit(W, ...) with
        # W a parameter of the model): data sharing memory with a parameter is copied once here
        params = tuple(self.parameters())
        x, y = (a if not isinstance(a, np.ndarray) or _apart(a, params) else a.copy() for a in (x, y))
        if validation_data is not None:
            xv, yv = (a if not isinstance(a, np.ndarray) or _apart(a, params) else a.copy() for a in (xv, yv))
        rng = np.random.default_rng(seed)
        opt = _make_optimizer(optimizer, self.parameters(), self.backend, hyperparameters)
        kernels = _kernels(self.backend)
        classify = self.loss != "mse_loss"
        hist: dict[str, list[float]] = {"loss": []}
        if classify:
            hist["accuracy"] = []
        if validation_data is not None:
            hist["val_loss"] = []
            if classify:
                hist["val_accuracy"] = []
        hist["time"] = []
        bs = min(batch_size, n)
        # (x and y are arrays here, from _data; a checker keeps the parameters' ArrayLike)
        xb = np.empty((bs,) + x.shape[1:], self.dtype)  # type: ignore[union-attr]
        yb = np.empty((bs,) + y.shape[1:], y.dtype)  # type: ignore[union-attr]
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
    def predict(self, x: ArrayLike, *, batch_size: int = 1024) -> FloatArray:
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

    def evaluate(self, x: ArrayLike, y: ArrayLike, *, batch_size: int = 1024) -> dict[str, float]:
        """``{"loss": mean loss, "accuracy": fraction correct}`` on (x, y) (no accuracy for
        mse_loss); the parameters and gradients are left as they are."""
        batch_size = _size("batch_size", batch_size)
        if y is None:
            raise TypeError("y is required, got None")
        x, y = self._data(x, y)
        if x.shape[0] == 0:
            raise ValueError("x is empty")
        return self._evaluate(x, y, _kernels(self.backend), batch_size)


class MLP(Sequential):
    """A multilayer perceptron: ``sizes = [in, hidden..., out]`` gives ``len(sizes) - 1`` Dense
    layers, ``activation`` on the hidden ones and ``output_activation`` (default ``identity``:
    logits for the cross-entropy losses) on the last.  One ``rng`` (seed or Generator) draws all
    initial weights, layer by layer."""

    def __init__(self, sizes: Sequence[int], activation: Activation = "relu", *,
                 output_activation: Activation = "identity", loss: Loss = "softmax_cross_entropy",
                 negative_slope: float = 0.01, dtype: DTypeLike = np.float32, rng: Seed = None,
                 backend: Backend | None = None) -> None:
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
