"""Every argument check, shared by all backends.

The public functions call these *before* any backend touches memory, so a call that
raises has changed nothing.  Type problems raise ``TypeError``, bad values ``ValueError``;
every message names the argument.
"""
import operator

import numpy as np

# Fast accepts in C (True: the checks below would pass, return the values unchanged; False:
# let them find and name the problem).  Hot paths call ``arrays_ok(a, n) or arrays(names, a, n)``.
try:
    from ._cython._core import adam_scalars_ok, arrays_ok
except ImportError:  # pragma: no cover - compiled part missing
    def arrays_ok(arrs, n_readonly):
        return False

    def adam_scalars_ok(step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize):
        return False

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_REAL_TYPES = frozenset((float, int, np.float64, np.float32, np.float16, np.int64, np.int32))


def real(name, value):
    """A real Python/NumPy number (not bool, not str), returned as float."""
    t = type(value)
    if t not in _REAL_TYPES:
        if t is bool or t is np.bool_ or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError("%s must be a real number, got %s" % (name, t.__name__))
    return float(value)


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
    """An integer step count >= 1."""
    if type(value) is int and value >= 1:  # the common case
        return value
    if type(value) is bool or isinstance(value, (float, np.floating)):
        raise TypeError("%s must be an integer, got %s" % (name, type(value).__name__))
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError("%s must be an integer, got %s" % (name, type(value).__name__)) from None
    if v < 1:
        raise ValueError("%s must be >= 1 (the first step is 1), got %d" % (name, v))
    return v


def flag(name, value):
    if value is True or value is False:
        return value
    if type(value) is not bool and type(value) is not np.bool_:
        raise TypeError("%s must be a bool, got %s" % (name, type(value).__name__))
    return bool(value)


def _check_one(name, a, dtype, shape, writeable):
    if type(a) is not np.ndarray:
        if not isinstance(a, np.ndarray):
            raise TypeError("%s must be a numpy.ndarray, got %s" % (name, type(a).__name__))
    if a.dtype is not dtype and a.dtype != dtype:
        if dtype is None:
            raise TypeError("%s must have dtype float32 or float64, got %s" % (name, a.dtype))
        raise TypeError("%s has dtype %s but param has dtype %s" % (name, a.dtype, dtype))
    if shape is not None and a.shape != shape:
        raise ValueError("%s has shape %s but param has shape %s" % (name, a.shape, shape))
    flags = a.flags
    if not flags.c_contiguous:
        raise ValueError("%s must be C-contiguous (use numpy.ascontiguousarray)" % name)
    if writeable and not flags.writeable:
        raise ValueError("%s must be writeable (it is updated in place)" % name)


def arrays(names, arrs, n_readonly=0):
    """Check the arrays of one call: ``arrs[0]`` is param; the ``n_readonly`` arrays after it
    are only read (the gradient); all others are updated in place.  ``None`` entries (unused
    optional state) are skipped.

    All arrays: numpy.ndarray, dtype float32/float64 equal to param's, param's shape,
    C-contiguous; written arrays writeable; no two arrays overlap in memory.
    Returns param's dtype.
    """
    if arrays_ok(arrs, n_readonly):
        return arrs[0].dtype
    param = arrs[0]
    if type(param) is not np.ndarray and not isinstance(param, np.ndarray):
        raise TypeError("%s must be a numpy.ndarray, got %s" % (names[0], type(param).__name__))
    dtype = param.dtype
    if dtype not in FLOAT_DTYPES:
        raise TypeError("%s must have dtype float32 or float64, got %s" % (names[0], dtype))
    shape = param.shape
    _check_one(names[0], param, dtype, None, True)
    present = [0]
    for k in range(1, len(arrs)):
        a = arrs[k]
        if a is None:
            continue
        _check_one(names[k], a, dtype, shape, k > n_readonly)
        present.append(k)
    if param.size:
        for i in range(len(present)):
            for j in range(i + 1, len(present)):
                if np.may_share_memory(arrs[present[i]], arrs[present[j]]):
                    raise ValueError("%s and %s overlap in memory; every array must be a separate buffer"
                                     % (names[present[i]], names[present[j]]))
    return dtype


def required(name, value, why):
    if value is None:
        raise ValueError("%s is required when %s" % (name, why))
