"""Every argument check, shared by all backends.

The public functions call these *before* any backend touches memory, so a call that
raises has changed nothing.  Type problems raise ``TypeError``, bad values ``ValueError``;
every message names the argument.
"""
from __future__ import annotations

import operator
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

# Fast accepts in C (True: the checks below would pass, return the values unchanged; False:
# let them find and name the problem).  Hot paths call ``arrays_ok(a, n) or arrays(names, a, n)``.
try:
    from ._cython._core import adam_scalars_ok, arrays_ok, first_overlap, half_arrays_ok
except ImportError:  # pragma: no cover - compiled part missing
    def first_overlap(a: NDArray[Any], lists: tuple[Any, ...]) -> tuple[int, int] | None:
        for k, lst in enumerate(lists):
            for t, b in enumerate(lst or ()):
                if isinstance(b, np.ndarray) and b.size and a.size and np.may_share_memory(a, b):
                    return k, t
        return None

    def arrays_ok(arrs: tuple[Any, ...], n_readonly: int, optional: int) -> bool:
        return False

    def half_arrays_ok(arrs: tuple[Any, ...], n_readonly: int, optional: int) -> bool:
        return False

    def adam_scalars_ok(step: object, lr: object, beta1: object, beta2: object, eps: object,
                        weight_decay: object, amsgrad: object, maximize: object) -> bool:
        return False

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
F32 = np.dtype(np.float32)


def is_half(dt):
    """float16 (native byte order), or ml_dtypes' bfloat16 (recognised without importing
    ml_dtypes: an array of it can only exist once the caller has imported it)."""
    if dt.itemsize != 2 or not dt.isnative:
        return False
    if dt.char == "e":
        return True
    mod = sys.modules.get("ml_dtypes")  # the very bfloat16 type, not one that calls itself so
    if mod is None or dt.num < 256:  # (bfloat16 is a user-defined dtype: numpy's own never are)
        return False
    try:
        return dt.type is getattr(mod, "bfloat16", None)
    except Exception:  # a module object whose lookup fails: no bfloat16 (as _core.bf16_num)
        return False


def param_dtype_ok(dt):
    """A dtype the update rules take for param and grad: float32, float64, float16, bfloat16."""
    return dt in FLOAT_DTYPES or is_half(dt)


_PARAM_DTYPES = "float32, float64, float16 or bfloat16"
_REAL_TYPES = frozenset((float, int, np.float64, np.float32, np.float16, np.int64, np.int32))


MAX_STEP = 2 ** 53  # the largest count a double (the kernels' beta ** step) holds exactly


def real(name, value):
    """A real Python/NumPy number (not bool, not str, not complex), returned as float."""
    t = type(value)
    if t not in _REAL_TYPES:
        if t is bool or t is np.bool_ or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError("%s must be a real number, got %s" % (name, t.__name__))
    try:
        return float(value)
    except OverflowError:
        raise ValueError("%s is too large for a float: %d" % (name, value)) from None


def nonneg(name, value):
    if type(value) is float and value >= 0.0:  # the common case, without a call
        return value
    v = real(name, value)
    if not v >= 0.0:  # also catches NaN
        raise ValueError("%s must be >= 0, got %r" % (name, value))
    return v


def unit_interval(name, value, closed_right=False):
    """0 <= value < 1 (or <= 1 with closed_right)."""
    if type(value) is float and 0.0 <= value < 1.0:  # the common case, without a call
        return value
    v = real(name, value)
    ok = (0.0 <= v <= 1.0) if closed_right else (0.0 <= v < 1.0)
    if not ok:
        raise ValueError("%s must be in [0, 1%s, got %r" % (name, "]" if closed_right else ")", value))
    return v


def step(value, name="step"):
    """An integer step count, 1 <= step <= 2**53."""
    if type(value) is int and 1 <= value <= MAX_STEP:  # the common case
        return value
    if type(value) is bool or isinstance(value, (float, np.floating)):
        raise TypeError("%s must be an integer, got %s" % (name, type(value).__name__))
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError("%s must be an integer, got %s" % (name, type(value).__name__)) from None
    if v < 1:
        raise ValueError("%s must be >= 1 (the first step is 1), got %d" % (name, v))
    if v > MAX_STEP:
        raise ValueError("%s must be <= 2**53 (the bias corrections take it as a double), got %d" % (name, v))
    return v


def flag(name, value):
    if value is True or value is False:
        return value
    if type(value) is not bool and type(value) is not np.bool_:
        raise TypeError("%s must be a bool, got %s" % (name, type(value).__name__))
    return bool(value)


def plain(name, a):
    """TypeError naming ``name`` unless ``a`` is exactly a numpy.ndarray (no None, no subclass)."""
    if type(a) is not np.ndarray:
        raise _not_plain(name, a)


def _not_plain(name, a):
    """The TypeError for anything that is not exactly a numpy.ndarray."""
    if a is None:
        return TypeError("%s is required, got None" % name)
    if isinstance(a, np.ndarray):
        # np.matrix, masked arrays, memmaps, user subclasses: their operators differ from
        # ndarray's (matrix products, masks) and the backends would disagree about them
        return TypeError("%s must be a numpy.ndarray, not the subclass %s.%s (numpy.asarray(%s) is an ndarray "
                         "view of the same memory, which the step would update in place)"
                         % (name, type(a).__module__, type(a).__name__, name))
    return TypeError("%s must be a numpy.ndarray, got %s" % (name, type(a).__name__))


def array(name, a, dtype=None, shape=None, writeable=False, elementwise=False, half=False):
    """Check one array a kernel will read (and, with ``writeable``, write) through a raw
    pointer: exactly ``numpy.ndarray`` (no None, no subclass), native float32/float64 (or
    ``dtype``), ``shape`` if given, C-contiguous, aligned, writeable if written.  Every
    problem is a TypeError/ValueError naming ``name``.  ``elementwise``: the array is stepped
    element by element (the update rules), so a Fortran-order one can be passed transposed.
    ``half``: with ``dtype=None``, float16 and bfloat16 are accepted too (the update rules)."""
    if type(a) is not np.ndarray:
        raise _not_plain(name, a)
    dt = a.dtype
    if dt.kind == "f" and not dt.isnative and (dtype is not None or param_dtype_ok(dt.newbyteorder("="))):
        raise TypeError("%s has dtype %s; fastgd needs native byte order (use .astype(%s))"
                        % (name, dt.str, dt.newbyteorder("=").name))
    if dtype is None:
        if dt not in FLOAT_DTYPES and not (half and is_half(dt)):
            raise TypeError("%s must have dtype %s, got %s" % (name, _PARAM_DTYPES if half else "float32 or float64",
                                                              dt))
    elif dt != dtype:
        raise TypeError("%s has dtype %s but param has dtype %s" % (name, dt, dtype))
    if shape is not None and a.shape != shape:
        raise ValueError("%s has shape %s but param has shape %s" % (name, a.shape, shape))
    flags = a.flags
    if not flags.c_contiguous:
        if elementwise and flags.f_contiguous:
            # accepting F order would mean agreeing on a layout across every array of a call and
            # every backend; its transpose is the same memory in C order, which the rules (all
            # elementwise) step exactly alike
            raise ValueError("%s is in Fortran order, and fastgd steps C-contiguous arrays: pass its transpose "
                             "(%s.T is a C-contiguous view of the same memory) and the transposes of the call's "
                             "other arrays" % (name, name))
        raise ValueError("%s must be C-contiguous: the step updates its arrays in place, so a contiguous copy "
                         "would not be your array; step the whole array it is a view of, or allocate it "
                         "C-contiguous" % name)
    if not flags.aligned:
        raise ValueError("%s is not aligned to its dtype in memory (made from a buffer at an odd offset?); "
                         "the kernels need aligned data" % name)
    if writeable and not flags.writeable:
        raise ValueError("%s must be writeable (it is updated in place)" % name)
    return dt


def arrays(names, arrs, n_readonly=0, optional=0):
    """Check the arrays of one call: ``arrs[0]`` is param; the ``n_readonly`` arrays after it
    are only read (the gradient); all others are updated in place.  ``None`` is allowed
    only at the positions whose bit is set in ``optional`` (``1 << k``: optional state that
    this call does not use); anywhere else it is a TypeError naming the argument.

    All arrays: exactly numpy.ndarray, of param's shape, C-contiguous, aligned; written arrays
    writeable; no two arrays overlap in memory.  dtypes: param float32, float64, float16 or
    bfloat16; the gradient(s) param's dtype; the state arrays one dtype, param's or (for a
    float16/bfloat16 param) float32.  Returns param's dtype.
    """
    if arrays_ok(arrs, n_readonly, optional) or half_arrays_ok(arrs, n_readonly, optional):
        return arrs[0].dtype
    dtype = array(names[0], arrs[0], None, None, True, True, True)
    shape = arrs[0].shape
    present = [0]
    state_dtype = state_name = None
    for k in range(1, len(arrs)):
        a = arrs[k]
        if a is None and optional >> k & 1:
            continue
        if k <= n_readonly or not is_half(dtype):
            array(names[k], a, dtype, shape, k > n_readonly, True)
        else:
            # a half-precision param's state: float32 or the param's dtype, one for the call
            if type(a) is np.ndarray and a.dtype not in (dtype, F32) and a.dtype.isnative:
                raise TypeError("%s has dtype %s; the state of a %s param is float32 or %s"
                                % (names[k], a.dtype, dtype, dtype))
            array(names[k], a, a.dtype if type(a) is np.ndarray and a.dtype in (dtype, F32) else dtype, shape,
                  True, True)
            if state_dtype is None:
                state_dtype, state_name = a.dtype, names[k]
            elif a.dtype != state_dtype:
                raise TypeError("%s has dtype %s but %s has dtype %s: the state arrays of one call share one dtype"
                                % (names[k], a.dtype, state_name, state_dtype))
        present.append(k)
    if arrs[0].size:
        for i in range(len(present)):
            for j in range(i + 1, len(present)):
                if np.may_share_memory(arrs[present[i]], arrs[present[j]]):
                    raise ValueError("%s and %s overlap in memory; every array must be a separate buffer"
                                     % (names[present[i]], names[present[j]]))
    return dtype


# ---------------------------------------------------------------------------------------
# the fused extras: grad_scale, found_inf, max_norm, master weights

def _finite_positive(name, v, what):
    if not (v > 0.0 and v != float("inf")):
        raise ValueError("%s must be > 0 and finite, got %r%s" % (name, v, what))
    return v


def grad_scale(value, name="grad_scale"):
    """The loss scale a gradient is divided by: a real > 0 and finite, or a float32 ndarray of
    one element holding one (a loss scaler's scale tensor).  Returns it as a float."""
    if type(value) is float and 0.0 < value < float("inf"):
        return value
    if isinstance(value, np.ndarray):
        plain(name, value)
        if value.dtype != F32 or value.size != 1:
            raise TypeError("%s must be a real number or a float32 numpy array of one element, got an array of "
                            "dtype %s and size %d" % (name, value.dtype, value.size))
        return _finite_positive(name, float(value.reshape(-1)[0]), " (the value of the array)")
    return _finite_positive(name, real(name, value), "")


def found_inf(value, name="found_inf"):
    """A float32 ndarray of one element (a loss scaler's found_inf); returns its value."""
    if type(value) is not np.ndarray:
        if value is None or not isinstance(value, np.ndarray):
            raise TypeError("%s must be a float32 numpy array of one element, got %s" % (name, type(value).__name__))
        plain(name, value)
    if value.dtype != F32 or value.size != 1:
        raise TypeError("%s must be a float32 numpy array of one element, got dtype %s and size %d"
                        % (name, value.dtype, value.size))
    return float(value.reshape(-1)[0])


def max_norm(value, name="max_norm"):
    """The clip threshold of the global gradient norm: a real > 0 and finite."""
    return _finite_positive(name, real(name, value), "")


def clip_coef(max_norm, norm):
    """torch.nn.utils.clip_grad_norm_'s factor: min(1, max_norm / (norm + 1e-6)), NaN for a NaN norm."""
    coef = max_norm / (norm + 1e-6)
    return 1.0 if coef > 1.0 else coef


def master(name, m, param, others):
    """A float32 master copy of a float16/bfloat16 ``param`` (the step updates it and stores its
    rounding into param): checked like a state array; it may overlap nothing in ``others``
    (pairs (name, array)).  TypeError when param is not half precision."""
    if not is_half(param.dtype):
        if m is None or not isinstance(m, np.ndarray):
            plain(name, m)
        raise TypeError("%s is for float16/bfloat16 params (the step runs on the float32 master and stores its "
                        "rounding into param); param has dtype %s" % (name, param.dtype))
    if type(m) is np.ndarray and m.dtype != F32:
        raise TypeError("%s must have dtype float32 (a master copy of a %s param), got %s" % (name, param.dtype,
                                                                                             m.dtype))
    array(name, m, F32, param.shape, True, True)
    if m.size:
        for other_name, a in others:
            if a is not None and np.may_share_memory(m, a):
                raise ValueError("%s and %s overlap in memory; every array must be a separate buffer"
                                 % (name, other_name))


def required(name, value, why):
    if value is None:
        raise ValueError("%s is required when %s" % (name, why))


def mu_product_value(name, v):
    """NAdam's running product P of the momentum schedule (factors in [0, 1)), named ``name``:
    a value in [0, 1] (0 once it underflows).  Above 1, 1 - P mu can be 0 and the bias
    corrections divide by zero; NaN is refused too."""
    if not 0.0 <= v <= 1.0:
        raise ValueError("%s is %r, but a mu_product must be in [0, 1]: it is the running product of the momentum "
                         "schedule (factors in [0, 1)), numpy.ones(1) before the first step; another value makes the "
                         "bias corrections divide by zero" % (name, v))
    return v


def one_element_f64(name, a):
    """A writeable float64 ndarray of one element (NAdam's ``mu_product``); returns its value."""
    if type(a) is not np.ndarray:
        raise _not_plain(name, a)
    if a.dtype != np.float64 or not a.dtype.isnative or a.size != 1:
        raise TypeError("%s must be a float64 numpy array with one element (numpy.ones(1) at step 1), "
                        "got dtype %s, size %d" % (name, a.dtype, a.size))
    if not a.flags.writeable:
        raise ValueError("%s must be writeable (it is updated in place)" % name)
    return float(a.flat[0])
