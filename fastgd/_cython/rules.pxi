# The update rules in Cython: the same functions, names and order of operations as
# fastgd/reference/rules.py (the spec).  Included by one _rules_<variant>.pyx per
# instruction-set target (see setup.py); fastgd._cython imports the best one.
#
# Layout of every rule:
#   cdef void _<rule>(...) noexcept nogil   the fused loop, one pass over memory, typed
#                                           pointers, prange(static) when nthreads > 1
#   def <rule>(...)                         computes the scalars in double, casts them to the
#                                           array's dtype once, and calls the loop for
#                                           float or double.
# Arguments were validated by fastgd._validate (dtype, shape, contiguity, no overlap), so
# the wrappers read data pointers directly (acquiring typed memoryviews costs ~170 ns per
# array, which is most of a 1,000-element step).
# IN: grad.  IN/OUT: param and every state array.

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt, fabs, pow
cimport numpy as cnp

cnp.import_array()

from fastgd.backends import threads_for

VARIANT = FASTGD_VARIANT_NAME

cdef extern from *:
    """
    #ifndef FASTGD_VARIANT
    #define FASTGD_VARIANT "base"
    #endif
    static const char* FASTGD_VARIANT_NAME = FASTGD_VARIANT;
    """
    const char* FASTGD_VARIANT_NAME


cdef inline floating _max_nan(floating a, floating b) noexcept nogil:
    """max(a, b) that propagates NaN from either side, like numpy.maximum."""
    return a if (a > b or a != a) else b


cdef inline floating _sign(floating x) noexcept nogil:
    """numpy.sign: -1, 0 or 1, NaN for NaN."""
    return <floating>1 if x > 0 else (<floating>-1 if x < 0 else x)


cdef inline bint _f32(cnp.ndarray a):
    return cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32


cdef inline void* _ptr(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


# ---------------------------------------------------------------------------------------
# Adam / AdamW (adamw = decoupled weight decay)

cdef void _adam(floating* p, const floating* g, floating* m, floating* v, floating* vmax,
                Py_ssize_t n, int nthreads, floating sign, bint has_wd, bint decoupled,
                floating wd, floating decay, floating beta1, floating omb1, floating beta2,
                floating omb2, floating step_size, floating inv_bc2_sqrt, floating eps,
                bint amsgrad) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, mi, vi, denom
    for i in prange(n, schedule="static", num_threads=nthreads, use_threads_if=nthreads > 1):
        gi = sign * g[i]
        if has_wd:
            if decoupled:
                p[i] = p[i] * decay
            else:
                gi = gi + wd * p[i]
        mi = beta1 * m[i] + omb1 * gi
        vi = beta2 * v[i] + omb2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        if amsgrad:
            vi = _max_nan(vmax[i], vi)
            vmax[i] = vi
        denom = sqrt(vi) * inv_bc2_sqrt + eps
        p[i] = p[i] - step_size * (mi / denom)


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, double lr, double beta1,
         double beta2, double eps, double weight_decay, bint amsgrad, bint maximize,
         bint decoupled_weight_decay):
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef int nt = threads_for(n)
    cdef double sign = -1.0 if maximize else 1.0
    cdef double step_size = lr / (1.0 - beta1 ** step)
    cdef double inv_bc2_sqrt = 1.0 / sqrt(1.0 - beta2 ** step)
    cdef double decay = 1.0 - lr * weight_decay
    cdef bint has_wd = weight_decay != 0
    if _f32(param):
        _adam[float](<float*>_ptr(param), <float*>_ptr(grad), <float*>_ptr(exp_avg), <float*>_ptr(exp_avg_sq),
                     <float*>_ptr(max_exp_avg_sq), n, nt, sign, has_wd, decoupled_weight_decay, weight_decay,
                     decay, beta1, 1.0 - beta1, beta2, 1.0 - beta2, step_size, inv_bc2_sqrt, eps, amsgrad)
    else:
        _adam[double](<double*>_ptr(param), <double*>_ptr(grad), <double*>_ptr(exp_avg), <double*>_ptr(exp_avg_sq),
                      <double*>_ptr(max_exp_avg_sq), n, nt, sign, has_wd, decoupled_weight_decay, weight_decay,
                      decay, beta1, 1.0 - beta1, beta2, 1.0 - beta2, step_size, inv_bc2_sqrt, eps, amsgrad)
    return param


# ---------------------------------------------------------------------------------------
# the benchmark skeleton: moves a rule's bytes (reads grad and every written array, writes
# them) with trivial arithmetic; the bandwidth a fused kernel is measured against.

cdef void _skeleton(floating** outs, int n_out, const floating* g, Py_ssize_t n, int nthreads) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi
    cdef floating* a = outs[0]
    cdef floating* b = outs[1] if n_out > 1 else NULL
    cdef floating* c = outs[2] if n_out > 2 else NULL
    cdef floating* d = outs[3] if n_out > 3 else NULL
    for i in prange(n, schedule="static", num_threads=nthreads, use_threads_if=nthreads > 1):
        gi = g[i]
        a[i] = a[i] + gi
        if n_out > 1:
            b[i] = b[i] + gi
        if n_out > 2:
            c[i] = c[i] + gi
        if n_out > 3:
            d[i] = d[i] + gi


def copy_skeleton(grad, *outs):
    """outs[k] += grad for every k (1 to 4 arrays): reads 1 + len(outs) arrays, writes len(outs)."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>grad)
    cdef int nt = threads_for(n)
    cdef float* f[4]
    cdef double* dd[4]
    cdef int k
    if not 1 <= len(outs) <= 4:
        raise ValueError("copy_skeleton takes 1 to 4 output arrays")
    for k in range(len(outs)):
        f[k] = <float*>_ptr(outs[k])
        dd[k] = <double*>_ptr(outs[k])
    if _f32(grad):
        _skeleton[float](f, len(outs), <float*>_ptr(grad), n, nt)
    else:
        _skeleton[double](dd, len(outs), <double*>_ptr(grad), n, nt)
    return outs[0]
