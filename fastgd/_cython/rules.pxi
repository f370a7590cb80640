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
from libc.math cimport sqrt, sqrtf, fabs, fabsf
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
    """max(a, b) that propagates NaN from either side, like numpy.maximum.  Written as two
    selects on one comparison each: GCC 12 does not vectorize ``a if (a > b or a != a) else b``."""
    cdef floating r = a if a > b else b  # b if either is NaN
    return a if a != a else r


cdef inline floating _sqrt(floating x) noexcept nogil:
    """sqrt in the dtype of x: libc's sqrt returns double, which would turn the rest of a
    float32 expression into double arithmetic (different results, slower loop)."""
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating _fabs(floating x) noexcept nogil:
    if floating is float:
        return fabsf(x)
    else:
        return fabs(x)


cdef inline floating _sign(floating x) noexcept nogil:
    """numpy.sign: -1, 0 or 1, NaN for NaN (``x + 0`` turns -0.0 into +0.0, as numpy.sign does,
    and keeps NaN)."""
    return <floating>1 if x > 0 else (<floating>-1 if x < 0 else x + <floating>0)


cdef inline bint _f32(cnp.ndarray a):
    return cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32


cdef inline void* _ptr(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


# ---------------------------------------------------------------------------------------
# SGD with optional (Nesterov) momentum

cdef void _sgd(floating* p, const floating* g, floating* b, Py_ssize_t n, int nthreads, floating sign,
               bint has_wd, floating wd, bint has_mom, bint first, bint nesterov, floating momentum,
               floating omd, floating lr) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, bi
    for i in prange(n, schedule="static", num_threads=nthreads, use_threads_if=nthreads > 1):
        gi = sign * g[i]
        if has_wd:
            gi = gi + wd * p[i]
        if has_mom:
            if first:
                bi = gi
            else:
                bi = momentum * b[i] + omd * gi
            b[i] = bi
            if nesterov:
                gi = gi + momentum * bi
            else:
                gi = bi
        p[i] = p[i] - lr * gi


def sgd(param, grad, momentum_buffer, *, double lr, double momentum, double dampening, bint nesterov,
        double weight_decay, bint maximize, bint first_step):
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef int nt = threads_for(n)
    cdef double sign = -1.0 if maximize else 1.0
    cdef bint has_wd = weight_decay != 0
    cdef bint has_mom = momentum != 0
    if _f32(param):
        _sgd[float](<float*>_ptr(param), <float*>_ptr(grad), <float*>_ptr(momentum_buffer), n, nt, sign,
                    has_wd, weight_decay, has_mom, first_step, nesterov, momentum, 1.0 - dampening, lr)
    else:
        _sgd[double](<double*>_ptr(param), <double*>_ptr(grad), <double*>_ptr(momentum_buffer), n, nt, sign,
                     has_wd, weight_decay, has_mom, first_step, nesterov, momentum, 1.0 - dampening, lr)
    return param


# ---------------------------------------------------------------------------------------
# Adam / AdamW (adamw = decoupled weight decay)

cdef inline void _adam_at(Py_ssize_t i, floating* p, const floating* g, floating* m, floating* v,
                          floating* vmax, floating sign, bint has_wd, bint decoupled, floating wd,
                          floating decay, floating beta1, floating omb1, floating beta2, floating omb2,
                          floating step_size, floating inv_bc2_sqrt, floating eps, bint amsgrad) noexcept nogil:
    cdef floating gi, mi, vi, denom
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
    denom = _sqrt(vi) * inv_bc2_sqrt + eps
    p[i] = p[i] - step_size * (mi / denom)


cdef void _adam(floating* p, const floating* g, floating* m, floating* v, floating* vmax,
                Py_ssize_t n, int nthreads, floating sign, bint has_wd, bint decoupled,
                floating wd, floating decay, floating beta1, floating omb1, floating beta2,
                floating omb2, floating step_size, floating inv_bc2_sqrt, floating eps,
                bint amsgrad) noexcept nogil:
    # amsgrad is a literal in each loop: GCC does not unswitch this loop body on its own, and
    # an if-converted conditional access to vmax does not vectorize.
    cdef Py_ssize_t i
    if amsgrad:
        for i in prange(n, schedule="static", num_threads=nthreads, use_threads_if=nthreads > 1):
            _adam_at(i, p, g, m, v, vmax, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2,
                     step_size, inv_bc2_sqrt, eps, True)
    else:
        for i in prange(n, schedule="static", num_threads=nthreads, use_threads_if=nthreads > 1):
            _adam_at(i, p, g, m, v, vmax, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2,
                     step_size, inv_bc2_sqrt, eps, False)


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
# AdaMax

cdef void _adamax(floating* p, const floating* g, floating* m, floating* u, Py_ssize_t n, int nthreads,
                  floating sign, bint has_wd, floating wd, floating beta1, floating omb1, floating beta2,
                  floating eps, floating step_size) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, mi, ui
    for i in prange(n, schedule="static", num_threads=nthreads, use_threads_if=nthreads > 1):
        gi = sign * g[i]
        if has_wd:
            gi = gi + wd * p[i]
        mi = beta1 * m[i] + omb1 * gi
        ui = _max_nan(beta2 * u[i], _fabs(gi) + eps)
        m[i] = mi
        u[i] = ui
        p[i] = p[i] - step_size * (mi / ui)


def adamax(param, grad, exp_avg, exp_inf, *, step, double lr, double beta1, double beta2, double eps,
           double weight_decay, bint maximize):
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef int nt = threads_for(n)
    cdef double sign = -1.0 if maximize else 1.0
    cdef double step_size = lr / (1.0 - beta1 ** step)
    cdef bint has_wd = weight_decay != 0
    if _f32(param):
        _adamax[float](<float*>_ptr(param), <float*>_ptr(grad), <float*>_ptr(exp_avg), <float*>_ptr(exp_inf),
                       n, nt, sign, has_wd, weight_decay, beta1, 1.0 - beta1, beta2, eps, step_size)
    else:
        _adamax[double](<double*>_ptr(param), <double*>_ptr(grad), <double*>_ptr(exp_avg), <double*>_ptr(exp_inf),
                        n, nt, sign, has_wd, weight_decay, beta1, 1.0 - beta1, beta2, eps, step_size)
    return param


# ---------------------------------------------------------------------------------------
# NAdam (mu_product: the product of mu_1 .. mu_{t-1}, a Python float; see the reference)

cdef void _nadam(floating* p, const floating* g, floating* m, floating* v, Py_ssize_t n, int nthreads,
                 floating sign, bint has_wd, bint decoupled, floating wd, floating decay, floating beta1,
                 floating omb1, floating beta2, floating omb2, floating inv_bc2, floating eps,
                 floating coef_grad, floating coef_avg) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, mi, vi, denom, pi
    for i in prange(n, schedule="static", num_threads=nthreads, use_threads_if=nthreads > 1):
        gi = sign * g[i]
        pi = p[i]
        if has_wd:
            if decoupled:
                pi = pi * decay
            else:
                gi = gi + wd * pi
        mi = beta1 * m[i] + omb1 * gi
        vi = beta2 * v[i] + omb2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        denom = _sqrt(vi * inv_bc2) + eps
        pi = pi - coef_grad * (gi / denom)
        p[i] = pi - coef_avg * (mi / denom)


def nadam(param, grad, exp_avg, exp_avg_sq, *, step, mu_product, double lr, double beta1, double beta2,
          double eps, double weight_decay, double momentum_decay, bint maximize, bint decoupled_weight_decay):
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef int nt = threads_for(n)
    cdef double sign = -1.0 if maximize else 1.0
    cdef double decay = 1.0 - lr * weight_decay
    cdef bint has_wd = weight_decay != 0
    # the scalars exactly as the reference computes them (nadam_mu is its schedule)
    cdef double mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
    cdef double mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    cdef double prod = <double>mu_product * mu
    cdef double coef_grad = lr * (1.0 - mu) / (1.0 - prod)
    cdef double coef_avg = lr * mu_next / (1.0 - prod * mu_next)
    cdef double inv_bc2 = 1.0 / (1.0 - beta2 ** step)
    if _f32(param):
        _nadam[float](<float*>_ptr(param), <float*>_ptr(grad), <float*>_ptr(exp_avg), <float*>_ptr(exp_avg_sq),
                      n, nt, sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                      beta2, 1.0 - beta2, inv_bc2, eps, coef_grad, coef_avg)
    else:
        _nadam[double](<double*>_ptr(param), <double*>_ptr(grad), <double*>_ptr(exp_avg), <double*>_ptr(exp_avg_sq),
                       n, nt, sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                       beta2, 1.0 - beta2, inv_bc2, eps, coef_grad, coef_avg)
    return param


# ---------------------------------------------------------------------------------------
# RAdam (the rho_t > 5 branch is a scalar decision, made in the wrapper: ``rect``)

cdef void _radam(floating* p, const floating* g, floating* m, floating* v, Py_ssize_t n, int nthreads,
                 floating sign, bint has_wd, bint decoupled, floating wd, floating decay, floating beta1,
                 floating omb1, floating beta2, floating omb2, bint rect, floating step_size,
                 floating eps) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, mi, vi
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
        if rect:
            p[i] = p[i] - step_size * (mi / (_sqrt(vi) + eps))
        else:
            p[i] = p[i] - step_size * mi


def radam(param, grad, exp_avg, exp_avg_sq, *, step, double lr, double beta1, double beta2, double eps,
          double weight_decay, bint maximize, bint decoupled_weight_decay):
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef int nt = threads_for(n)
    cdef double sign = -1.0 if maximize else 1.0
    cdef double decay = 1.0 - lr * weight_decay
    cdef bint has_wd = weight_decay != 0
    cdef double bias_correction1 = 1.0 - beta1 ** step
    cdef double bias_correction2 = 1.0 - beta2 ** step
    cdef double rho_inf = 2.0 / (1.0 - beta2) - 1.0
    cdef double rho_t = rho_inf - 2.0 * step * (beta2 ** step) / bias_correction2
    cdef bint rect = rho_t > 5.0
    cdef double step_size
    if rect:
        step_size = (lr * sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                     * sqrt(bias_correction2) / bias_correction1)
    else:
        step_size = lr / bias_correction1
    if _f32(param):
        _radam[float](<float*>_ptr(param), <float*>_ptr(grad), <float*>_ptr(exp_avg), <float*>_ptr(exp_avg_sq),
                      n, nt, sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                      beta2, 1.0 - beta2, rect, step_size, eps)
    else:
        _radam[double](<double*>_ptr(param), <double*>_ptr(grad), <double*>_ptr(exp_avg), <double*>_ptr(exp_avg_sq),
                       n, nt, sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                       beta2, 1.0 - beta2, rect, step_size, eps)
    return param


# ---------------------------------------------------------------------------------------
# Adagrad

cdef void _adagrad(floating* p, const floating* g, floating* s, Py_ssize_t n, int nthreads, floating sign,
                   bint has_wd, floating wd, floating clr, floating eps) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, si
    for i in prange(n, schedule="static", num_threads=nthreads, use_threads_if=nthreads > 1):
        gi = sign * g[i]
        if has_wd:
            gi = gi + wd * p[i]
        si = s[i] + gi * gi
        s[i] = si
        p[i] = p[i] - clr * (gi / (_sqrt(si) + eps))


def adagrad(param, grad, state_sum, *, step, double lr, double lr_decay, double weight_decay, double eps,
            bint maximize):
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef int nt = threads_for(n)
    cdef double sign = -1.0 if maximize else 1.0
    cdef bint has_wd = weight_decay != 0
    cdef double clr = lr / (1.0 + (step - 1) * lr_decay)
    if _f32(param):
        _adagrad[float](<float*>_ptr(param), <float*>_ptr(grad), <float*>_ptr(state_sum), n, nt, sign, has_wd,
                        weight_decay, clr, eps)
    else:
        _adagrad[double](<double*>_ptr(param), <double*>_ptr(grad), <double*>_ptr(state_sum), n, nt, sign, has_wd,
                         weight_decay, clr, eps)
    return param


# ---------------------------------------------------------------------------------------
# Adadelta

cdef void _adadelta(floating* p, const floating* g, floating* s, floating* a, Py_ssize_t n, int nthreads,
                    floating sign, bint has_wd, floating wd, floating rho, floating omr, floating eps,
                    floating lr) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, si, delta
    for i in prange(n, schedule="static", num_threads=nthreads, use_threads_if=nthreads > 1):
        gi = sign * g[i]
        if has_wd:
            gi = gi + wd * p[i]
        si = rho * s[i] + omr * (gi * gi)
        s[i] = si
        delta = _sqrt(a[i] + eps) / _sqrt(si + eps) * gi
        a[i] = rho * a[i] + omr * (delta * delta)
        p[i] = p[i] - lr * delta


def adadelta(param, grad, square_avg, acc_delta, *, double lr, double rho, double eps, double weight_decay,
             bint maximize):
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef int nt = threads_for(n)
    cdef double sign = -1.0 if maximize else 1.0
    cdef bint has_wd = weight_decay != 0
    if _f32(param):
        _adadelta[float](<float*>_ptr(param), <float*>_ptr(grad), <float*>_ptr(square_avg), <float*>_ptr(acc_delta),
                         n, nt, sign, has_wd, weight_decay, rho, 1.0 - rho, eps, lr)
    else:
        _adadelta[double](<double*>_ptr(param), <double*>_ptr(grad), <double*>_ptr(square_avg),
                          <double*>_ptr(acc_delta), n, nt, sign, has_wd, weight_decay, rho, 1.0 - rho, eps, lr)
    return param


# ---------------------------------------------------------------------------------------
# RMSprop (momentum_buffer is None unless momentum > 0, grad_avg None unless centered)

cdef inline void _rmsprop_at(Py_ssize_t i, floating* p, const floating* g, floating* s, floating* b,
                             floating* ga, floating sign, bint has_wd, floating wd, floating alpha,
                             floating oma, floating eps, bint centered, bint has_mom, floating momentum,
                             floating lr) noexcept nogil:
    cdef floating gi, si, gai, avg, bi
    gi = sign * g[i]
    if has_wd:
        gi = gi + wd * p[i]
    si = alpha * s[i] + oma * (gi * gi)
    s[i] = si
    if centered:
        gai = alpha * ga[i] + oma * gi
        ga[i] = gai
        avg = _sqrt(si - gai * gai) + eps
    else:
        avg = _sqrt(si) + eps
    if has_mom:
        bi = momentum * b[i] + gi / avg
        b[i] = bi
        p[i] = p[i] - lr * bi
    else:
        p[i] = p[i] - lr * (gi / avg)


cdef void _rmsprop(floating* p, const floating* g, floating* s, floating* b, floating* ga, Py_ssize_t n,
                   int nthreads, floating sign, bint has_wd, floating wd, floating alpha, floating oma,
                   floating eps, bint centered, bint has_mom, floating momentum, floating lr) noexcept nogil:
    # centered and has_mom are literals in each loop (see _adam: the optional arrays must not
    # be accessed under a run-time condition inside the loop, or it does not vectorize)
    cdef Py_ssize_t i
    if centered and has_mom:
        for i in prange(n, schedule="static", num_threads=nthreads, use_threads_if=nthreads > 1):
            _rmsprop_at(i, p, g, s, b, ga, sign, has_wd, wd, alpha, oma, eps, True, True, momentum, lr)
    elif centered:
        for i in prange(n, schedule="static", num_threads=nthreads, use_threads_if=nthreads > 1):
            _rmsprop_at(i, p, g, s, b, ga, sign, has_wd, wd, alpha, oma, eps, True, False, momentum, lr)
    elif has_mom:
        for i in prange(n, schedule="static", num_threads=nthreads, use_threads_if=nthreads > 1):
            _rmsprop_at(i, p, g, s, b, ga, sign, has_wd, wd, alpha, oma, eps, False, True, momentum, lr)
    else:
        for i in prange(n, schedule="static", num_threads=nthreads, use_threads_if=nthreads > 1):
            _rmsprop_at(i, p, g, s, b, ga, sign, has_wd, wd, alpha, oma, eps, False, False, momentum, lr)


def rmsprop(param, grad, square_avg, momentum_buffer, grad_avg, *, double lr, double alpha, double eps,
            double weight_decay, double momentum, bint centered, bint maximize):
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef int nt = threads_for(n)
    cdef double sign = -1.0 if maximize else 1.0
    cdef bint has_wd = weight_decay != 0
    cdef bint has_mom = momentum > 0
    if _f32(param):
        _rmsprop[float](<float*>_ptr(param), <float*>_ptr(grad), <float*>_ptr(square_avg),
                        <float*>_ptr(momentum_buffer), <float*>_ptr(grad_avg), n, nt, sign, has_wd, weight_decay,
                        alpha, 1.0 - alpha, eps, centered, has_mom, momentum, lr)
    else:
        _rmsprop[double](<double*>_ptr(param), <double*>_ptr(grad), <double*>_ptr(square_avg),
                         <double*>_ptr(momentum_buffer), <double*>_ptr(grad_avg), n, nt, sign, has_wd, weight_decay,
                         alpha, 1.0 - alpha, eps, centered, has_mom, momentum, lr)
    return param


# ---------------------------------------------------------------------------------------
# Lion (decoupled weight decay, as the paper and optax)

cdef void _lion(floating* p, const floating* g, floating* m, Py_ssize_t n, int nthreads, floating sign,
                bint has_wd, floating decay, floating beta1, floating omb1, floating beta2, floating omb2,
                floating lr) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, mi, pi
    for i in prange(n, schedule="static", num_threads=nthreads, use_threads_if=nthreads > 1):
        gi = sign * g[i]
        mi = m[i]
        pi = p[i]
        if has_wd:
            pi = pi * decay
        p[i] = pi - lr * _sign(beta1 * mi + omb1 * gi)
        m[i] = beta2 * mi + omb2 * gi


def lion(param, grad, exp_avg, *, double lr, double beta1, double beta2, double weight_decay, bint maximize):
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef int nt = threads_for(n)
    cdef double sign = -1.0 if maximize else 1.0
    cdef bint has_wd = weight_decay != 0
    cdef double decay = 1.0 - lr * weight_decay
    if _f32(param):
        _lion[float](<float*>_ptr(param), <float*>_ptr(grad), <float*>_ptr(exp_avg), n, nt, sign, has_wd, decay,
                     beta1, 1.0 - beta1, beta2, 1.0 - beta2, lr)
    else:
        _lion[double](<double*>_ptr(param), <double*>_ptr(grad), <double*>_ptr(exp_avg), n, nt, sign, has_wd, decay,
                      beta1, 1.0 - beta1, beta2, 1.0 - beta2, lr)
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
