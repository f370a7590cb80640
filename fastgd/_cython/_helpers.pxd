# Inline helpers shared by the Cython kernel modules (rules.pxi, dense.pyx): cimported, so
# they compile into each module; there is no _helpers extension.  Callers must have called
# numpy's import_array() (each module does at import).

from cython cimport floating
from libc.math cimport exp, expf, fabs, fabsf, log, log1p, log1pf, logf, sqrt, sqrtf, tanh, tanhf
cimport numpy as cnp


# Arguments arrive validated (fastgd._validate): C-contiguous float32/float64 ndarrays or None.

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
