# cython: language_level=3
"""Build facts (what the compiled part of fastgd was built with, what this CPU can run) and
the fast path of argument validation."""

import sys

import numpy as np

cimport numpy as cnp

from fastgd._cython._helpers cimport _span

cnp.import_array()

cdef extern from *:
    """
    #if FASTGD_OPENMP
    #include <omp.h>
    #endif
    static int fgd_openmp(void) { return FASTGD_OPENMP; }
    static int fgd_omp_max_threads(void) {
    #if FASTGD_OPENMP
        return omp_get_max_threads();
    #else
        return 1;
    #endif
    }
    static int fgd_omp_num_procs(void) {
    #if FASTGD_OPENMP
        return omp_get_num_procs();
    #else
        return 1;
    #endif
    }
    #if defined(__clang__)
    #define FGD_COMPILER "clang " __clang_version__
    #elif defined(__GNUC__)
    #define FGD_COMPILER "gcc " __VERSION__
    #elif defined(_MSC_VER)
    #define FGD_COMPILER "msvc"
    #else
    #define FGD_COMPILER "unknown"
    #endif
    static const char* fgd_compiler(void) { return FGD_COMPILER; }
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    static int fgd_has_avx2(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    }
    static int fgd_has_avx512(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw")
            && fgd_has_avx2();
    }
    #else
    static int fgd_has_avx2(void) { return 0; }
    static int fgd_has_avx512(void) { return 0; }
    #endif
    """
    int fgd_openmp() nogil
    int fgd_omp_max_threads() nogil
    int fgd_omp_num_procs() nogil
    const char* fgd_compiler() nogil
    int fgd_has_avx2() nogil
    int fgd_has_avx512() nogil


cdef int _num_threads = 0  # 0: follow OpenMP (OMP_NUM_THREADS, threadpoolctl's omp_set_num_threads)
cdef Py_ssize_t _serial_cutoff = 0
cdef enum:
    _MAX_THREADS = 1024  # fastgd.backends.MAX_NUM_THREADS


cdef inline int _openmp_threads() noexcept nogil:
    """OpenMP's team size for the calling thread (``omp_get_max_threads``: what OMP_NUM_THREADS,
    ``omp_set_num_threads`` and so ``threadpoolctl.threadpool_limits`` set), kept in [1, 1024]
    (libgomp takes OMP_NUM_THREADS=2**40 and reports it truncated to an int: all cores then)."""
    cdef int t = fgd_omp_max_threads()
    if t < 1:
        t = fgd_omp_num_procs()
        return t if 1 <= t <= _MAX_THREADS else 1
    return t if t <= _MAX_THREADS else _MAX_THREADS


cdef int _team_used = 0  # a kernel of this process asked for more than one thread
cdef int _serial_only = 0  # forked from a process whose kernels ran OpenMP teams


cdef int threads_for(Py_ssize_t n) noexcept nogil:
    """Threads for a kernel on ``n`` elements: one below the serial cutoff, else the count set
    with fastgd.set_num_threads, or OpenMP's current one when none was set (see fastgd.backends).
    One in a process forked after OpenMP ran a team (GNU libgomp's teams hang there)."""
    global _team_used
    if n < _serial_cutoff or _serial_only:
        return 1
    cdef int t = _num_threads if _num_threads > 0 else _openmp_threads()
    if t > 1:
        _team_used = 1
    return t


def kernel_threads(Py_ssize_t n):
    """The thread count a Cython kernel on ``n`` elements would use now, from this thread."""
    return threads_for(n)


def team_used():
    """True when a kernel of this process has asked OpenMP for more than one thread."""
    return bool(_team_used)


def after_fork_in_child():
    """Registered with os.register_at_fork: a child forked after this process ran an OpenMP team
    runs every kernel on one thread (GNU libgomp cannot start a team there: it hangs)."""
    global _serial_only
    if _team_used:
        _serial_only = 1


def serial_only():
    """True in a process forked after its parent's kernels ran OpenMP teams."""
    return bool(_serial_only)


def set_threads(int num_threads, Py_ssize_t serial_cutoff):
    """Called by fastgd.backends whenever set_num_threads / set_serial_cutoff change
    (``num_threads`` 0: follow OpenMP's thread count)."""
    global _num_threads, _serial_cutoff
    if num_threads < 0 or num_threads > _MAX_THREADS or serial_cutoff < 0:
        raise ValueError("num_threads must be in [0, 1024] and serial_cutoff >= 0")
    _num_threads = num_threads
    _serial_cutoff = serial_cutoff


def openmp_threads():
    """The thread count a kernel uses when fastgd.set_num_threads was not called: OpenMP's
    ``omp_get_max_threads()`` for the calling thread, kept in [1, 1024]."""
    return _openmp_threads()


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(fgd_openmp())


def omp_max_threads():
    """OpenMP's default team size (honours OMP_NUM_THREADS); 1 without OpenMP."""
    return fgd_omp_max_threads()


def compiler():
    """The C compiler (and version) that built the extensions."""
    return fgd_compiler().decode()


def cpu_features():
    """Instruction-set extensions of the running CPU that fastgd has kernel variants for."""
    return {"avx2": bool(fgd_has_avx2()), "avx512": bool(fgd_has_avx512())}


def adam_scalars_ok(step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize):
    """Fast accept for Adam's hyperparameters: True when they are plain Python values the
    checks in fastgd.steps would return unchanged (``step`` an int in [1, 2**53]; ``lr``, ``eps``,
    ``weight_decay`` floats >= 0; ``beta1``, ``beta2`` floats in [0, 1); ``amsgrad``,
    ``maximize`` bools).  False means "let the Python checks decide and name the problem"."""
    if type(step) is not int or type(amsgrad) is not bool or type(maximize) is not bool:
        return False
    if (type(lr) is not float or type(beta1) is not float or type(beta2) is not float
            or type(eps) is not float or type(weight_decay) is not float):
        return False
    if step < 1 or step > 9007199254740992:  # 2**53, as fastgd._validate.step
        return False
    cdef double b1 = beta1, b2 = beta2
    return (<double>lr >= 0.0 and <double>eps >= 0.0 and <double>weight_decay >= 0.0
            and 0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0)


cdef object _bf16_type = None  # the ml_dtypes.bfloat16 that _bf16_num is the type number of
cdef int _bf16_num = -1


cdef int bf16_num():
    """NumPy's type number of ``sys.modules["ml_dtypes"].bfloat16`` as it is now, or -1 (no
    ml_dtypes imported: no bfloat16 array can exist, and fastgd never imports it).  The same
    test as ``fastgd._validate.is_half``: the very type the module holds now, a 2-byte
    user-defined dtype whose scalar type it is (cached per type object: a module replaced in
    sys.modules is seen at once).  Any exception of the lookup means -1.  The checks that use it
    call it before they look at any array (a module's ``__getattr__`` is Python code)."""
    global _bf16_type, _bf16_num
    cdef int num = -1
    mod = sys.modules.get("ml_dtypes")
    if mod is None:
        return -1
    try:
        t = getattr(mod, "bfloat16", None)
        if t is _bf16_type and t is not None:
            return _bf16_num
        if isinstance(t, type):
            d = np.dtype(t)
            if d.type is t and d.itemsize == 2 and cnp.PyTypeNum_ISUSERDEF(d.num):
                num = d.num
    except Exception:
        return -1
    _bf16_type = t
    _bf16_num = num
    return num


cdef inline bint _param_tnum_ok(int tnum, bint half, int bf16) noexcept:
    if half:
        return tnum == cnp.NPY_FLOAT16 or (bf16 >= 0 and tnum == bf16)
    return tnum == cnp.NPY_FLOAT32 or tnum == cnp.NPY_FLOAT64


cdef bint _arrays_ok(tuple arrs, Py_ssize_t n_readonly, unsigned long long optional, bint half):
    cdef Py_ssize_t k, j, nd, d, n = len(arrs)
    cdef cnp.ndarray a, p
    cdef int tnum, want, state = -1, bf16 = bf16_num() if half else -1
    cdef char* lo[8]
    cdef char* hi[8]
    cdef Py_ssize_t m = 0
    if n > 8 or n < 1:
        return False
    first = arrs[0]
    if not cnp.PyArray_CheckExact(first):
        return False
    p = <cnp.ndarray>first
    tnum = cnp.PyArray_TYPE(p)
    if not _param_tnum_ok(tnum, half, bf16):
        return False
    nd = cnp.PyArray_NDIM(p)
    for k in range(n):
        o = arrs[k]
        if o is None:
            if (optional >> k) & 1:
                continue
            return False
        if not cnp.PyArray_CheckExact(o):
            return False
        a = <cnp.ndarray>o
        want = tnum
        if half and k > n_readonly:  # a half param's state: float32 or param's dtype, one for all
            if state < 0:
                state = cnp.PyArray_TYPE(a)
                if state != tnum and state != cnp.NPY_FLOAT32:
                    return False
            want = state
        if cnp.PyArray_TYPE(a) != want or cnp.PyArray_NDIM(a) != nd or not cnp.PyArray_ISNOTSWAPPED(a):
            return False
        if not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISALIGNED(a):
            return False
        if (k == 0 or k > n_readonly) and not cnp.PyArray_ISWRITEABLE(a):
            return False
        for d in range(nd):
            if cnp.PyArray_DIMS(a)[d] != cnp.PyArray_DIMS(p)[d]:
                return False
        lo[m] = <char*>cnp.PyArray_DATA(a)
        hi[m] = lo[m] + cnp.PyArray_NBYTES(a)
        m += 1
    if cnp.PyArray_SIZE(p) == 0:
        return True
    for k in range(m):
        for j in range(k + 1, m):
            if lo[k] < hi[j] and lo[j] < hi[k]:
                return False
    return True


def arrays_ok(tuple arrs, Py_ssize_t n_readonly, unsigned long long optional):
    """Fast accept for ``fastgd._validate.arrays``: True when every array is exactly a
    C-contiguous, aligned, native float32/float64 ndarray with param's dtype and shape, None
    appears only at positions whose bit is set in ``optional``, the written ones are
    writeable and no two overlap (byte ranges, as ``numpy.may_share_memory`` checks them).
    False means "let the Python checks find and name the problem"; it never raises.  It may
    only accept what those checks accept (tests/test_validate.py feeds both the same input).
    Half-precision arrays are never accepted here (callers dispatch float32/float64 kernels
    on a True): see ``half_arrays_ok``."""
    return _arrays_ok(arrs, n_readonly, optional, False)


def half_arrays_ok(tuple arrs, Py_ssize_t n_readonly, unsigned long long optional):
    """``arrays_ok`` for a float16/bfloat16 param: True when param is exactly a C-contiguous,
    aligned, native float16 or ``ml_dtypes.bfloat16`` ndarray, the gradient(s) have its dtype,
    the state arrays one dtype, param's or float32, and everything else holds as for
    ``arrays_ok``.  False for every float32/float64 param."""
    return _arrays_ok(arrs, n_readonly, optional, True)


def thread_spans(cnp.ndarray a, Py_ssize_t nthreads):
    """The element boundaries at which the single-tensor kernels split ``a`` (a C-contiguous
    float32/float64 array) over ``nthreads`` threads: ``nthreads + 1`` ints from the head (the
    elements before a's first 64-byte boundary, stepped first on their own) to a.size."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a), t
    if nthreads < 1:
        raise ValueError("nthreads must be >= 1")
    if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32:
        return [_span(t, nthreads, n, <const float*>cnp.PyArray_DATA(a)) for t in range(nthreads + 1)]
    if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT64:
        return [_span(t, nthreads, n, <const double*>cnp.PyArray_DATA(a)) for t in range(nthreads + 1)]
    raise TypeError("a must be float32 or float64")


def first_overlap(cnp.ndarray a, tuple lists):
    """The ``(k, t)`` of the first ndarray ``lists[k][t]`` whose bytes overlap ``a``'s (lists
    that are None, and entries that are not ndarrays, skipped), or None.  One pass in C:
    NAdam's ``mu_product`` is checked against every array of a multi-tensor call this way."""
    cdef char* lo = <char*>cnp.PyArray_DATA(a)
    cdef char* hi = lo + cnp.PyArray_NBYTES(a)
    cdef char* blo
    cdef Py_ssize_t k, t
    cdef cnp.ndarray b
    if lo == hi:
        return None
    for k in range(len(lists)):
        lst = lists[k]
        if lst is None:
            continue
        for t in range(len(lst)):
            o = lst[t]
            if not cnp.PyArray_Check(o):
                continue
            b = <cnp.ndarray>o
            blo = <char*>cnp.PyArray_DATA(b)
            if blo < hi and lo < blo + cnp.PyArray_NBYTES(b) and cnp.PyArray_NBYTES(b) > 0:
                return (k, t)
    return None
