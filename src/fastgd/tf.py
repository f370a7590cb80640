"""TensorFlow's training ops with TensorFlow's semantics, on NumPy arrays.

One function per op of TensorFlow's ``training_ops`` (``ApplyAdam``, ``SparseApplyAdagrad``,
...), named as TF's generated Python wrappers name them: the op name in snake_case without
``Resource``.  The arguments are the op's inputs, with the op's names, in the op's order, then
the op's attributes with TF's defaults (``use_locking`` is accepted and has no effect: a call
is not atomic with respect to other threads stepping the same arrays), then ``name`` (accepted
and ignored, as in TF's eager mode) and the keyword-only ``backend``.  ``var`` and the slots
(``m``, ``v``, ``accum``, ...) are updated in place; ``var`` is returned.

The semantics are those of TF's CPU kernels (``tensorflow/core/kernels/training_ops.cc``):
Adam's epsilon added to the uncorrected ``sqrt(v)``, with the caller keeping ``beta1_power``
and ``beta2_power``; RMSProp's epsilon inside the root and ``lr`` inside the momentum; Adagrad
without epsilon (V1) and ``update_slots``; AdaMax's epsilon added to ``u``; TF's and Keras'
momentum; FTRL (V1/V2, the general ``lr_power`` and its -0.5 fast path,
``multiply_linear_by_lr``), proximal gradient descent and proximal Adagrad, AdagradDA, AddSign,
PowerSign.  Every scalar is converted to the arrays' dtype and all arithmetic is in that dtype,
as TF computes in ``T``.  ``fastgd/reference/tf.py`` is the specification, and
``tests/test_tf_vs_tensorflow.py`` checks it against ``tf.raw_ops.ResourceApply*``.

Sparse ops (``sparse_apply_*``) update the rows ``var[indices[i]]`` with ``grad[i]``, in the
order of ``indices``: a duplicate index is applied again, on the row as the earlier entry left
it (TF's CPU kernels' loop).

Inputs:

* ``var`` and the slots: exactly ``numpy.ndarray``, float32 or float64 (native byte order), one
  dtype and one shape, C-contiguous, aligned, writeable, not overlapping each other or ``grad``.
  A sparse op's ``var`` has at least one dimension.
* ``grad``: the arrays' dtype; dense ops: ``var``'s shape; sparse ops: ``(len(indices),) +
  var.shape[1:]``.
* ``indices``: one-dimensional, int32 or int64 (other integer arrays, lists and tuples are
  converted; ndarray subclasses such as masked arrays are refused), every entry in
  ``[0, var.shape[0])``.  fastgd steps its own checked copy.
* scalars (``lr``, ``beta1``, ...): real numbers (Python or NumPy) or 0-d arrays, finite (in the
  arrays' dtype too: 1e300 is inf in float32);
  TF's own value checks apply (``lr`` of the proximal ops > 0, ``l1``/``l2`` >= 0, FTRL's
  ``lr_power`` <= 0, ...).  ``global_step``: an integer.

The scalars, ``global_step``, the flags and ``indices`` are converted first (their conversion may
run the caller's code: ``__float__``, ``__index__``, ``__array__``), the arrays checked after that,
so that nothing of the caller's runs between an array's check and the kernel.
Bad input raises ``TypeError``/``ValueError`` naming the argument, before anything is written
(TF's sparse kernels may have updated some rows when they find a bad index; fastgd never does).
Each op runs as one fused kernel (Cython with OpenMP, numba, or the NumPy reference: ``backend=``
or ``fastgd.set_backend``), float32 and float64 (half precision: not yet).
"""
from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

from . import _validate as V
from ._rules import TF_OPS, TFOp
from .backends import backend_module

__all__ = sorted(TF_OPS)

_FLOATS = V.FLOAT_DTYPES
_F32 = np.dtype(np.float32)
_arrays_ok = V.arrays_ok


# ---------------------------------------------------------------------------------------
# the checks (the slow paths: the generated functions accept the common case inline)

def _array_checks(op: TFOp, given: tuple[Any, ...], grad_shape: tuple[int, ...] | None = None) -> np.dtype:
    """Check var, the slots and grad (``given``, in ``op.arrays`` order; a sparse op's first
    check passes var and the slots only, before indices give grad's shape); raise naming the
    first bad one.  ``grad_shape``: the shape grad must have (sparse ops), default var's."""
    names = op.arrays
    has_grad = len(given) == len(names)
    var = given[0]
    for k, a in enumerate(given):
        if type(a) is not np.ndarray:
            raise V._not_plain(names[k], a)
    dt = var.dtype
    if dt not in _FLOATS:
        if dt.kind == "f" and not dt.isnative and dt.newbyteorder("=") in _FLOATS:
            raise TypeError("var has dtype %s; fastgd needs native byte order (use .astype(%s))"
                            % (dt.str, dt.newbyteorder("=").name))
        raise TypeError("var must have dtype float32 or float64, got %s%s"
                        % (dt, " (fastgd.tf steps float32 and float64; half precision is not supported yet)"
                           if V.is_half(dt) else ""))
    if op.sparse and var.ndim == 0:
        raise ValueError("var must be at least 1-dimensional (the sparse ops update rows of var), got a 0-d array")
    for k, a in enumerate(given):
        name = names[k]
        if a.dtype != dt:
            raise TypeError("%s has dtype %s but var has dtype %s" % (name, a.dtype, dt))
        is_grad = has_grad and k == len(given) - 1
        want = grad_shape if (is_grad and grad_shape is not None) else var.shape
        if a.shape != want:
            if is_grad and grad_shape is not None:
                raise ValueError("grad has shape %s but must have shape %s: one row per entry of indices (%d), "
                                 "each of var's row shape %s" % (a.shape, want, want[0], var.shape[1:]))
            raise ValueError("%s has shape %s but var has shape %s" % (name, a.shape, var.shape))
        flags = a.flags
        if not flags.c_contiguous:
            raise ValueError("%s must be C-contiguous: the op updates its arrays in place, so a contiguous copy "
                             "would not be your array" % name)
        if not flags.aligned:
            raise ValueError("%s is not aligned to its dtype in memory; the kernels need aligned data" % name)
        if not is_grad and not flags.writeable:
            raise ValueError("%s must be writeable (it is updated in place)" % name)
    for i in range(len(given)):
        for j in range(i + 1, len(given)):
            if given[i].size and given[j].size and np.may_share_memory(given[i], given[j]):
                raise ValueError("%s and %s overlap in memory; every array must be a separate buffer"
                                 % (names[i], names[j]))
    return dt


_REAL_SCALAR_KINDS = "fiu"


def _scalar(name: str, x: object) -> float:
    """A finite real scalar input: a Python/NumPy real number or a 0-d real array, as float."""
    t = type(x)
    if t is bool or t is np.bool_:
        raise TypeError("%s must be a real number, got %s" % (name, t.__name__))
    if isinstance(x, np.ndarray):
        if x.ndim != 0:
            raise ValueError("%s must be a scalar (a real number or a 0-d array), got an array of shape %s"
                             % (name, x.shape))
        if x.dtype.kind not in _REAL_SCALAR_KINDS:
            raise TypeError("%s must be a real number, got a 0-d array of dtype %s" % (name, x.dtype))
        v = float(x)
    elif isinstance(x, (int, float, np.integer, np.floating)):
        try:
            v = float(x)
        except OverflowError:
            raise ValueError("%s is too large for a float: %r" % (name, x)) from None
    else:
        raise TypeError("%s must be a real number or a 0-d array, got %s" % (name, t.__name__))
    if not math.isfinite(v):
        raise ValueError("%s must be finite, got %r" % (name, v))
    return v


_CHECK_TEXT = {"positive": ("> 0", "is not a positive scalar"), "nonneg": (">= 0", "is not a non-negative scalar"),
               "nonpos": ("<= 0", "is not a non-positive scalar")}


def _value_check(name: str, value: float, kind: str, dtype: np.dtype, linear: bool = False) -> None:
    """TF's value check ``kind`` of scalar ``name``, on its value in the arrays' dtype (as TF sees
    it: 1e-50 is 0 in float32)."""
    if dtype == _F32 and 0.0 < abs(value) < 1e-44:
        # only a magnitude this small can round to 0 in float32 (and -1e-50 then passes ">= 0",
        # as TF sees -0.0); larger ones keep their sign and zero-ness (finite: _f32_finite ran)
        with np.errstate(all="ignore"):
            v = float(np.float32(value))
    else:
        v = value
    if kind == "ftrl_lr":
        ok, text = (v >= 0.0, ">= 0 (multiply_linear_by_lr=True)") if linear else (v > 0.0, "> 0")
        if not ok:
            raise ValueError("lr must be %s, got %r%s" % (text, value, " (%r in float32)" % v if v != value else ""))
        return
    ok = v > 0.0 if kind == "positive" else (v >= 0.0 if kind == "nonneg" else v <= 0.0)
    if not ok:
        op, tf_text = _CHECK_TEXT[kind]
        raise ValueError("%s must be %s (TensorFlow: %s %s), got %r%s"
                         % (name, op, name, tf_text, value, " (%r in float32)" % v if v != value else ""))


def _global_step(x: Any) -> int:
    """AdagradDA's global_step: an integer (Python, NumPy or a 0-d integer array), int64's range."""
    if type(x) is bool or type(x) is np.bool_ or isinstance(x, (float, np.floating)):
        raise TypeError("global_step must be an integer, got %s" % type(x).__name__)
    if isinstance(x, np.ndarray):
        if x.ndim != 0 or x.dtype.kind not in "iu":
            raise TypeError("global_step must be an integer (or a 0-d integer array), got an array of dtype %s "
                            "and shape %s" % (x.dtype, x.shape))
        x = x[()]
    try:
        v = operator.index(x)
    except TypeError:
        raise TypeError("global_step must be an integer, got %s" % type(x).__name__) from None
    if not -2 ** 63 <= v < 2 ** 63:
        raise ValueError("global_step must fit in int64 (TF's type), got %d" % v)
    return v


def _flag(name: str, x: object) -> bool:
    return V.flag(name, x)


def _indices(indices: object) -> np.ndarray:
    """A private int64 copy of ``indices`` (the kernels index var's rows with it, so they step a
    copy nobody else can change between the check and the loop): a 1-D integer ndarray (not a
    subclass: a masked array's mask, a subclass's own dtype would mean something else), list or
    tuple.  Its range is checked against var by :func:`_indices_in_range`."""
    if indices is None:
        raise TypeError("indices is required, got None")
    if isinstance(indices, np.ndarray):
        if type(indices) is not np.ndarray:
            raise TypeError("indices must be a numpy.ndarray, list or tuple, not the ndarray subclass %s.%s"
                            % (type(indices).__module__, type(indices).__name__))
        a = indices
    else:
        try:
            a = np.asarray(indices)
        except Exception as exc:
            raise TypeError("indices must be an integer array, got %s (%s)" % (type(indices).__name__, exc)) from None
        if type(a) is not np.ndarray:
            raise TypeError("indices must be an integer array, got %s" % type(indices).__name__)
    if a.dtype.kind not in "iu":
        if a.size == 0 and a.dtype.kind == "f" and not isinstance(indices, np.ndarray):
            a = a.astype(np.int64)  # [] is float64 to numpy
        else:
            raise TypeError("indices must be integers (TF's Tindices are int32 or int64; other integer arrays are "
                            "converted), got dtype %s" % a.dtype)
    if a.ndim != 1:
        raise ValueError("indices must be one-dimensional, got shape %s" % (a.shape,))
    if a.dtype.kind == "u" and a.dtype.itemsize == 8 and a.size and int(a.max()) >= 2 ** 63:
        k = int(np.argmax(a >= 2 ** 63))
        raise ValueError("indices[%d] = %d is out of range" % (k, int(a[k])))
    return np.array(a, dtype=np.int64, copy=True)


def _indices_in_range(idx: np.ndarray, rows: int) -> None:
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= rows:
            k = int(np.argmax((idx < 0) | (idx >= rows)))
            raise ValueError("indices[%d] = %d is out of range: var has %d rows" % (k, int(idx[k]), rows))


# float32's largest finite value and the smallest magnitude that rounds to inf (2**128 - 2**103)
_F32_INF_AT = 3.4028235677973366e38


def _f32_finite(names: tuple[str, ...], values: tuple[float, ...]) -> None:
    """The scalars of a float32 call are finite in float32 too (1e300 is inf there)."""
    for name, v in zip(names, values):
        if not -_F32_INF_AT < v < _F32_INF_AT:
            raise ValueError("%s must be finite in the arrays' dtype float32, got %r (inf in float32)" % (name, v))


# ---------------------------------------------------------------------------------------
# the functions, generated from the table (fastgd._rules.TF_OPS): one signature per op,
# TF's input names in TF's order, then its attributes; the common case accepted inline.

def _source(op: TFOp) -> str:
    params = list(op.inputs) + ["use_locking=False"] + ["%s=%r" % a for a in op.attrs] + ["name=None", "*",
                                                                                              "backend=None"]
    body = []
    arrs = ", ".join(op.arrays)
    # 1. everything that may run the caller's code (a scalar's __float__, global_step's
    #    __index__, indices' __array__), before any array is checked: from the array checks to
    #    the kernel, no code of the caller's runs, so no array can change (its dtype, its
    #    flags) between its check and the kernel's pointer accesses
    for s in op.scalars:
        body.append("    if not (type({s}) is float and {s} - {s} == 0.0):\n        {s} = _scalar({s!r}, {s})"
                    .format(s=s))
    if op.has_step:
        body.append("    if type(global_step) is not int or not -2**63 <= global_step < 2**63:\n"
                    "        global_step = _global_step(global_step)")
    for a in ("use_locking",) + tuple(n for n, _ in op.attrs):
        body.append("    if {a} is not True and {a} is not False:\n        {a} = _flag({a!r}, {a})".format(a=a))
    if op.sparse:
        body.append("    idx = _indices(indices)")
    # 2. the arrays
    if op.sparse:
        # var and the slots first (arrays_ok: one shape, one dtype, ...), then indices' range
        # (var's rows), then grad, whose shape the indices give
        written = ", ".join(("var",) + op.slots)
        body.append("    if not (_arrays_ok((%s,), 0, 0) and var.dtype in _FLOATS and var.ndim >= 1):" % written)
        body.append("        _array_checks(OP, (%s,))" % written)
        body.append("    rows = var.shape[0]")
        body.append("    _indices_in_range(idx, rows)")
        body.append("    gshape = (idx.shape[0],) + var.shape[1:]")
        body.append("    if not (type(grad) is np.ndarray and grad.shape == gshape and grad.dtype == var.dtype and "
                    "grad.flags.c_contiguous and grad.flags.aligned and not "
                    "any(np.may_share_memory(grad, a) for a in (%s,))):" % written)
        body.append("        _array_checks(OP, (%s), gshape)" % arrs)
    else:
        # arrays_ok's order: the written array first, then the one read-only array (grad), then the rest
        order = ", ".join(("var", op.grad) + op.slots)
        body.append("    if not (_arrays_ok((%s,), 1, 0) and var.dtype in _FLOATS):" % order)
        body.append("        _array_checks(OP, (%s))" % arrs)
    # 3. the scalars as the arrays' dtype holds them: finite there too, and TF's value checks
    body.append("    if var.itemsize == 4:\n        _f32_finite((%s,), (%s,))" % (
        ", ".join(repr(x) for x in op.scalars), ", ".join(op.scalars)))
    for s, kind in op.checks.items():
        extra = ", multiply_linear_by_lr" if kind == "ftrl_lr" else ""
        body.append("    _value_check(%r, %s, %r, var.dtype%s)" % (s, s, kind, extra))
    # every check done; the kernel of the current backend
    body.append("    impl = backend_module(backend)")
    args = []
    if op.sparse:
        body.append("    if idx.shape[0] == 0 or var.size == 0:\n        return var")
        body.append("    inner = var.size // rows")
        for a in op.arrays[:-1]:
            args.append("%s.reshape(rows, inner)" % a)
        args.append("grad.reshape(idx.shape[0], inner)")
        args.append("idx")
    else:
        body.append("    if var.size == 0:\n        return var")
        body.append("    out = var")
        body.append("    if var.ndim != 1:  # the kernels take flat arrays: views of the same memory")
        body.append("        %s = %s" % (arrs, ", ".join("%s.reshape(-1)" % a for a in op.arrays)))
        args = list(op.arrays)
    args += list(op.scalars) + (["global_step"] if op.has_step else []) + [n for n, _ in op.attrs]
    body.append("    impl.%s(%s)" % (op.kernel, ", ".join(args)))
    body.append("    return %s" % ("var" if op.sparse else "out"))
    return "def %s(%s):\n%s\n" % (op.name, ", ".join(params), "\n".join(body))


def _doc(op: TFOp) -> str:
    kind = "Sparse" if op.sparse else "Dense"
    lines = ["TensorFlow's ``%s`` (``tf.raw_ops.Resource%s``) on NumPy arrays." % (op.op, op.op), "",
             "    %s" % op.formula, ""]
    if op.sparse:
        lines.append("%s: the rows ``var[indices[i]]`` (and the slots' same rows) are updated with ``grad[i]``, "
                     "in the order of ``indices``; ``g`` above is that row of grad." % kind)
    lines.append("Updated in place: %s; returns var.  Scalars: %s%s." % (
        ", ".join(("var",) + op.slots), ", ".join(op.scalars),
        ("; global_step an integer" if op.has_step else "")))
    if op.checks:
        lines.append("Value checks (TF's): %s." % ", ".join(
            "%s %s" % (s, {"positive": "> 0", "nonneg": ">= 0", "nonpos": "<= 0",
                           "ftrl_lr": "> 0 (>= 0 with multiply_linear_by_lr)"}[k]) for s, k in op.checks.items()))
    if op.attrs:
        lines.append("Attributes: %s." % ", ".join("%s=%r" % a for a in op.attrs))
    if op.rule:
        lines.append("Compared with ``fastgd.%s_step`` (torch's form): %s." % (op.rule, op.differs))
    elif op.differs:
        lines.append(op.differs[0].upper() + op.differs[1:] + ".")
    lines.append("``use_locking`` and ``name`` are accepted and have no effect; ``backend``: see fastgd.set_backend.")
    lines.append("See the module docstring for the input rules.")
    return "\n".join(lines)


def _make(op: TFOp) -> Any:
    src = _source(op)
    namespace: dict[str, Any] = {
        "np": np, "OP": op, "_array_checks": _array_checks, "_arrays_ok": _arrays_ok, "_FLOATS": _FLOATS,
        "_scalar": _scalar, "_value_check": _value_check, "_global_step": _global_step, "_flag": _flag,
        "_indices": _indices, "_indices_in_range": _indices_in_range, "_f32_finite": _f32_finite, "_F32": _F32,
        "backend_module": backend_module}
    exec(compile(src, "<fastgd.tf: %s>" % op.name, "exec"), namespace)
    fn = namespace[op.name]
    fn.__doc__ = _doc(op)
    fn.__module__ = __name__
    fn.__qualname__ = op.name
    fn.source = src
    fn.op = op
    return fn


def stub_source() -> str:
    """The text of ``fastgd/tf.pyi``: the generated functions' signatures for type checkers and
    editors (tests/test_typing.py checks that the committed stub equals this)."""
    out = ['"""Type stubs of fastgd.tf (generated from fastgd._rules.TF_OPS by fastgd.tf.stub_source())."""',
           "from typing import Any", "", "import numpy as np", "from numpy.typing import NDArray", "",
           "from ._typing import Backend", "", "Scalar = float | int | np.floating[Any] | np.integer[Any] | NDArray[Any]",
           "", "__all__: list[str]", ""]
    for op in TF_OPS.values():
        params = []
        for n in op.inputs:
            if n in op.arrays:
                params.append("%s: NDArray[Any]" % n)
            elif n == "indices":
                params.append("indices: Any")
            elif n == "global_step":
                params.append("global_step: int | np.integer[Any] | NDArray[Any]")
            else:
                params.append("%s: Scalar" % n)
        params.append("use_locking: bool = ...")
        params += ["%s: bool = ..." % a for a, _ in op.attrs]
        params += ["name: str | None = ...", "*", "backend: Backend | None = ..."]
        out.append("def %s(%s) -> NDArray[Any]: ..." % (op.name, ", ".join(params)))
    return "\n".join(out) + "\n"


for _op in TF_OPS.values():
    globals()[_op.name] = _make(_op)
del _op
