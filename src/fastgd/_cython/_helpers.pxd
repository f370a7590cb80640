# Inline helpers shared by the Cython kernel modules (rules.pxi, dense.pyx): cimported, so
# they compile into each module; there is no _helpers extension.  Callers must have called
# numpy's import_array() (each module does at import).

from cython cimport floating
from libc.math cimport exp, expf, fabs, fabsf, log, log1p, log1pf, logf, sqrt, sqrtf, tanh, tanhf
cimport numpy as cnp


# Arguments arrive validated (fastgd._validate): C-contiguous float32/float64 ndarrays or None.

# The GIL around a kernel's loop: released for loops of at least _NOGIL_MIN elements (a few
# microseconds of work or more), kept for smaller ones, where releasing and taking it back
# would cost ~10% of the call.  Between the two calls only C runs (no Python object is
# touched, no exception can be raised: the loops are noexcept nogil functions).
cdef extern from "Python.h":
    ctypedef struct PyThreadState:
        pass
    PyThreadState* PyEval_SaveThread() nogil
    void PyEval_RestoreThread(PyThreadState*) nogil

cdef enum:
    _NOGIL_MIN = 8192


cdef inline PyThreadState* _release_gil(Py_ssize_t n) noexcept:
    return PyEval_SaveThread() if n >= _NOGIL_MIN else NULL


cdef inline void _restore_gil(PyThreadState* ts) noexcept:
    if ts != NULL:
        PyEval_RestoreThread(ts)


cdef inline bint _f32(object a):
    return cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_FLOAT32


cdef inline void* _ptr(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


# Math in the dtype of the argument: libc's sqrt/exp/... take and return double, which would
# turn the rest of a float32 expression into double arithmetic (other results, slower loops).

cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating _fabs(floating x) noexcept nogil:
    if floating is float:
        return fabsf(x)
    else:
        return fabs(x)


cdef inline floating _exp(floating v) noexcept nogil:
    if floating is float:
        return expf(v)
    else:
        return exp(v)


cdef inline floating _log(floating v) noexcept nogil:
    if floating is float:
        return logf(v)
    else:
        return log(v)


cdef inline floating _log1p(floating v) noexcept nogil:
    if floating is float:
        return log1pf(v)
    else:
        return log1p(v)


cdef inline floating _tanh(floating v) noexcept nogil:
    if floating is float:
        return tanhf(v)
    else:
        return tanh(v)


# Loop bounds.  Every loop starts with the elements before param's first 64-byte boundary
# (``_head``, at most 15 of them, a scalar loop), so that the vector loops after it run on
# cache-line-aligned data (numpy gives every array of a call the same offset within a line;
# unaligned 64-byte vectors straddle two lines: measured 20-25% slower on L1/L2-resident
# data).  The rest, [head, n), is split over the threads: thread t of nt steps
# [_span(t), _span(t + 1)), shares cut at 64-byte boundaries of ``base``'s memory, so no cache
# line is written by two threads; they differ by at most one line.

cdef inline Py_ssize_t _head_of(Py_ssize_t n, const void* base, Py_ssize_t itemsize) noexcept nogil:
    """_head for elements of ``itemsize`` bytes (any storage dtype; a constant once inlined)."""
    cdef Py_ssize_t head = ((64 - <Py_ssize_t>(<size_t>base & 63)) & 63) // itemsize
    return head if head < n else n


cdef inline Py_ssize_t _span_of(Py_ssize_t t, Py_ssize_t nt, Py_ssize_t n, const void* base,
                                Py_ssize_t itemsize) noexcept nogil:
    """_span for elements of ``itemsize`` bytes."""
    cdef Py_ssize_t per_line = 64 // itemsize
    cdef Py_ssize_t head = _head_of(n, base, itemsize)
    if t <= 0:
        return head
    if t >= nt:
        return n
    return head + ((n - head) // per_line) * t // nt * per_line


cdef inline Py_ssize_t _head(Py_ssize_t n, const floating* base) noexcept nogil:
    return _head_of(n, base, sizeof(floating))


cdef inline Py_ssize_t _span(Py_ssize_t t, Py_ssize_t nt, Py_ssize_t n, const floating* base) noexcept nogil:
    return _span_of(t, nt, n, base, sizeof(floating))
