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
    from ._cython._core import adam_scalars_ok, arrays_ok, first_overlap
except ImportError:  # pragma: no cover - compiled part missing
    def first_overlap(a, lists):
        for k, lst in enumerate(lists):
            for t, b in enumerate(lst or ()):
                if isinstance(b, np.ndarray) and b.size and a.size and np.may_share_memory(a, b):
                    return k, t
        return None

    def arrays_ok(arrs, n_readonly, optional):
        return False

    def adam_scalars_ok(step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize):
        return False

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
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


def array(name, a, dtype=None, shape=None, writeable=False, elementwise=False):
    """Check one array a kernel will read (and, with ``writeable``, write) through a raw
    pointer: exactly ``numpy.ndarray`` (no None, no subclass), native float32/float64 (or
    ``dtype``), ``shape`` if given, C-contiguous, aligned, writeable if written.  Every
    problem is a TypeError/ValueError naming ``name``.  ``elementwise``: the array is stepped
    element by element (the update rules), so a Fortran-order one can be passed transposed."""
    if type(a) is not np.ndarray:
        raise _not_plain(name, a)
    dt = a.dtype
    if dt.kind == "f" and not dt.isnative and (dtype is not None or dt.newbyteorder("=") in FLOAT_DTYPES):
        raise TypeError("%s has dtype %s; fastgd needs native byte order (use .astype(%s))"
                        % (name, dt.str, dt.newbyteorder("=").name))
    if dtype is None:
        if dt not in FLOAT_DTYPES:
            raise TypeError("%s must have dtype float32 or float64, got %s" % (name, dt))
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

    All arrays: exactly numpy.ndarray, native float32/float64 equal to param's, param's shape,
    C-contiguous, aligned; written arrays writeable; no two arrays overlap in memory.
    Returns param's dtype.
    """
    if arrays_ok(arrs, n_readonly, optional):
        return arrs[0].dtype
    dtype = array(names[0], arrs[0], None, None, True, True)
    shape = arrs[0].shape
    present = [0]
    for k in range(1, len(arrs)):
        a = arrs[k]
        if a is None and optional >> k & 1:
            continue
        array(names[k], a, dtype, shape, k > n_readonly, True)
        present.append(k)
    if arrs[0].size:
        for i in range(len(present)):
            for j in range(i + 1, len(present)):
                if np.may_share_memory(arrs[present[i]], arrs[present[j]]):
                    raise ValueError("%s and %s overlap in memory; every array must be a separate buffer"
                                     % (names[present[i]], names[present[j]]))
    return dtype


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
