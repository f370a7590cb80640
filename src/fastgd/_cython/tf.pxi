# TensorFlow's training ops (fastgd.tf) in Cython: the CPU functors of TF's training_ops.cc,
# translated literally (see the kernel contract: C++ evaluation order, parenthesis by
# parenthesis; every scalar-only sub-expression computed once per call in the arrays' dtype T,
# in TF's order; rsqrt(x) as 1 / sqrt(x); sign as numpy.sign; cwiseMax as numpy.maximum).
# Included by one _tf_<variant>.pyx per instruction-set target (see setup.py); fastgd._cython
# serves the tf_* names from the variant it picked.
#
# Layout of every op:
#   cdef inline void _<op>_at(i, ...)       the update of element i (TF's functor, per element)
#   cdef void _<op>(...) noexcept nogil     the dense loop: T's scalar sub-expressions once, then
#                                           a scalar loop up to var's first cache-line boundary
#                                           (_head), then one cache-line-aligned share per
#                                           thread (prange over _span) when nthreads > 1, else a
#                                           plain loop
#   cdef void _sparse_<op>(...)             the sparse loop: row indices[i] of var and the slots
#                                           stepped with row i of grad by the same _<op>_at, in
#                                           the order of indices (a later duplicate sees the
#                                           earlier one's result, as TF's serial loop); with nt
#                                           threads, thread t walks all i in order and steps
#                                           the rows with indices[i] % nt == t (each row has one
#                                           owner: duplicates stay in order, no row is written
#                                           by two threads)
#   def tf_apply_<op>(...) / tf_sparse_apply_<op>(...)
#                                           read the data pointers, release the GIL for big
#                                           arrays, call the float or double loop with the
#                                           scalars converted to T (exact: the front-end
#                                           rounded them to T)
# The arguments were validated by fastgd.tf (dtype float32/float64, one dtype for all arrays,
# shapes, C-contiguity, no overlap, indices int64 in [0, rows)): the wrappers check nothing.
# Dense: 1-D arrays of n elements (n == 0: nothing to do).  Sparse: var and slots (rows, inner),
# grad (N, inner), indices (N,) (N == 0: nothing to do).
# IN: grad (delta), indices.  IN/OUT: var and every slot.  Every wrapper returns var.

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport pow, powf
from libc.stdint cimport int64_t
cimport numpy as cnp

from fastgd._cython._helpers cimport (PyThreadState, _f32, _fabs, _head, _ptr, _release_gil,
                                      _restore_gil, _span, _sqrt)

cnp.import_array()

from fastgd._cython._core cimport threads_for

import numpy as np

from fastgd.reference.tf import power_sign_scales  # PowerSign's three exp values: the spec's

VARIANT = FASTGD_VARIANT_NAME

cdef extern from *:
    """
    #ifndef FASTGD_VARIANT
    #define FASTGD_VARIANT "base"
    #endif
    static const char* FASTGD_VARIANT_NAME = FASTGD_VARIANT;
    """
    const char* FASTGD_VARIANT_NAME


# ---------------------------------------------------------------------------------------
# Element helpers (in T: float arithmetic for float32 arrays)

cdef inline floating _pow(floating x, floating y) noexcept nogil:
    """pow(x, y) in T: powf for float (Eigen's numext::pow, numpy.power)."""
    if floating is float:
        return powf(x, y)
    else:
        return pow(x, y)


cdef inline floating _max_nan(floating a, floating b) noexcept nogil:
    """numpy.maximum(a, b): NaN from either side propagates (Eigen's cwiseMax as the contract
    reads it).  Two selects on one comparison each, which GCC vectorizes."""
    cdef floating r = a if a > b else b  # b if either is NaN
    return a if a != a else r


cdef inline floating _sign(floating x) noexcept nogil:
    """numpy.sign: -1, 0 or 1 (+0.0 for -0.0), NaN for NaN: two compares, a subtraction and a
    select, which GCC vectorizes."""
    cdef floating r = <floating>(x > 0) - <floating>(x < 0)
    return x if x != x else r


cdef inline floating _by_sign(floating s, floating pos, floating neg, floating zero) noexcept nogil:
    """pos, neg or zero for s > 0, < 0 or == 0, s itself (NaN) for NaN: one select per line, which
    GCC vectorizes (a nested conditional expression it left scalar, with unpredictable branches)."""
    cdef floating r = pos if s > 0 else neg  # neg for s <= 0 or NaN
    r = zero if s == 0 else r
    return s if s != s else r


cdef inline Py_ssize_t _dim(object a, int d) noexcept:
    return cnp.PyArray_DIMS(<cnp.ndarray>a)[d]


cdef inline int _as_checked(object var, Py_ssize_t n, object a) except -1:
    """What the pointer accesses rely on, re-checked here, where no other Python code can run:
    fastgd.tf checked every array, but another Python thread could change one in place (its dtype,
    its shape) between that check and this call (the GIL may switch threads between two bytecodes
    of the checking function).  ``a`` must still be float32/float64 like ``var``, C-contiguous, of
    ``n`` elements."""
    cdef int t = cnp.PyArray_TYPE(<cnp.ndarray>a)
    if ((t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64) or t != cnp.PyArray_TYPE(<cnp.ndarray>var)
            or cnp.PyArray_SIZE(<cnp.ndarray>a) != n or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a)):
        raise RuntimeError("an array of this call changed after fastgd.tf checked it (by another thread?); "
                           "nothing was written")
    return 0


cdef inline int _indices_checked(object var, object indices, Py_ssize_t N) except -1:
    """indices (fastgd.tf's private int64 copy) still int64, C-contiguous, of N entries, each a
    row of var as this call sees it (one pass over N integers, next to the N*inner of the step)."""
    cdef Py_ssize_t rows = _dim(var, 0), i
    cdef const int64_t* idx
    if (cnp.PyArray_TYPE(<cnp.ndarray>indices) != cnp.NPY_INT64 or cnp.PyArray_SIZE(<cnp.ndarray>indices) != N
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>indices)):
        raise RuntimeError("indices changed after fastgd.tf checked them; nothing was written")
    idx = <const int64_t*>cnp.PyArray_DATA(<cnp.ndarray>indices)
    for i in range(N):
        if idx[i] < 0 or idx[i] >= rows:
            raise RuntimeError("indices[%d] = %d is not a row of var (%d rows) any more: an array changed after "
                               "fastgd.tf checked it; nothing was written" % (i, idx[i], rows))
    return 0


# ---------------------------------------------------------------------------------------
# GradientDescent  (dense only: TF has no sparse form)
# TF: var -= grad * lr()

cdef inline void _gradient_descent_at(Py_ssize_t i, floating* var, const floating* delta,
                                      floating alpha) noexcept nogil:
    var[i] = var[i] - delta[i] * alpha


cdef void _gradient_descent(floating* var, const floating* delta, Py_ssize_t n, int nt,
                            floating alpha) noexcept nogil:
    cdef Py_ssize_t i, t
    cdef Py_ssize_t h = _head(n, var)
    for i in range(h):  # up to var's first cache-line boundary: the loops below start aligned
        _gradient_descent_at(i, var, delta, alpha)
    if nt > 1:
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(_span(t, nt, n, var), _span(t + 1, nt, n, var)):
                _gradient_descent_at(i, var, delta, alpha)
    else:
        for i in range(h, n):
            _gradient_descent_at(i, var, delta, alpha)


def tf_apply_gradient_descent(var, delta, double alpha):
    """TF's ApplyGradientDescent (CPU).  Returns var."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>var)
    if n == 0:
        return var
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_delta = _ptr(delta)
    _as_checked(var, n, var)
    _as_checked(var, n, delta)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _gradient_descent[float](<float*>_p_var, <const float*>_p_delta, n, nt, <float>alpha)
    else:
        _gradient_descent[double](<double*>_p_var, <const double*>_p_delta, n, nt, <double>alpha)
    _restore_gil(ts)
    return var


# ---------------------------------------------------------------------------------------
# ProximalGradientDescent
# TF: prox_var (var itself) -= grad * lr(); var = l1() > 0 ? prox_var.sign() * (prox_var.abs()
#   - lr() * l1()).cwiseMax(0) / (1 + l2() * lr()) : prox_var / (1 + l2() * lr())
# Sparse: TF's inner_dim == 1 case computes 1.0 + l2 * lr in double: not copied

cdef inline void _proximal_gradient_descent_at(Py_ssize_t i, floating* var, const floating* delta,
                                               floating alpha, floating lr_l1, floating denom,
                                               bint has_l1) noexcept nogil:
    cdef floating prox
    prox = var[i] - delta[i] * alpha
    if has_l1:
        var[i] = _sign(prox) * _max_nan(_fabs(prox) - lr_l1, <floating>0) / denom
    else:
        var[i] = prox / denom


cdef inline void _proximal_gradient_descent_span(Py_ssize_t lo, Py_ssize_t hi, floating* var,
                                                 const floating* delta, floating alpha, floating lr_l1,
                                                 floating denom, bint has_l1) noexcept nogil:
    """Elements [lo, hi): one loop per combination of has_l1, each with
    the flags as literals (a straight-line body GCC vectorizes)."""
    cdef Py_ssize_t i
    if has_l1:
        for i in range(lo, hi):
            _proximal_gradient_descent_at(i, var, delta, alpha, lr_l1, denom, True)
    else:
        for i in range(lo, hi):
            _proximal_gradient_descent_at(i, var, delta, alpha, lr_l1, denom, False)


cdef void _proximal_gradient_descent(floating* var, const floating* delta, Py_ssize_t n, int nt,
                                     floating alpha, floating l1, floating l2) noexcept nogil:
    cdef floating lr_l1 = alpha * l1
    cdef floating denom = <floating>1 + l2 * alpha
    cdef bint has_l1 = l1 > 0
    cdef Py_ssize_t t
    cdef Py_ssize_t h = _head(n, var)
    # up to var's first cache-line boundary: the loops below start aligned
    _proximal_gradient_descent_span(0, h, var, delta, alpha, lr_l1, denom, has_l1)
    if nt > 1:
        for t in prange(nt, schedule="static", num_threads=nt):
            _proximal_gradient_descent_span(_span(t, nt, n, var), _span(t + 1, nt, n, var), var, delta, alpha,
                                            lr_l1, denom, has_l1)
    else:
        _proximal_gradient_descent_span(h, n, var, delta, alpha, lr_l1, denom, has_l1)


def tf_apply_proximal_gradient_descent(var, delta, double alpha, double l1, double l2):
    """TF's ApplyProximalGradientDescent (CPU).  Returns var."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>var)
    if n == 0:
        return var
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_delta = _ptr(delta)
    _as_checked(var, n, var)
    _as_checked(var, n, delta)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _proximal_gradient_descent[float](<float*>_p_var, <const float*>_p_delta, n, nt, <float>alpha,
                                          <float>l1, <float>l2)
    else:
        _proximal_gradient_descent[double](<double*>_p_var, <const double*>_p_delta, n, nt, <double>alpha,
                                           <double>l1, <double>l2)
    _restore_gil(ts)
    return var


cdef void _sparse_proximal_gradient_descent(floating* var, const floating* delta, const int64_t* indices,
                                            Py_ssize_t N, Py_ssize_t inner, int nt, floating alpha,
                                            floating l1, floating l2) noexcept nogil:
    cdef floating lr_l1 = alpha * l1
    cdef floating denom = <floating>1 + l2 * alpha
    cdef bint has_l1 = l1 > 0
    cdef Py_ssize_t i, t, r
    if nt > 1:  # thread t owns the rows r with r % nt == t and steps them in the order of indices
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(N):
                r = indices[i]
                if r % nt == t:
                    _proximal_gradient_descent_span(0, inner, var + r * inner, delta + i * inner, alpha,
                                                    lr_l1, denom, has_l1)
    else:
        for i in range(N):
            r = indices[i]
            _proximal_gradient_descent_span(0, inner, var + r * inner, delta + i * inner, alpha, lr_l1, denom,
                                            has_l1)


def tf_sparse_apply_proximal_gradient_descent(var, grad, indices, double alpha, double l1, double l2):
    """TF's SparseApplyProximalGradientDescent (CPU).  Returns var."""
    cdef Py_ssize_t N = _dim(indices, 0)
    if N == 0:
        return var
    cdef Py_ssize_t inner = _dim(grad, 1)
    cdef Py_ssize_t n = N * inner
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_grad = _ptr(grad)
    cdef const int64_t* _p_indices = <const int64_t*>_ptr(indices)
    _as_checked(var, _dim(var, 0) * inner, var)
    _as_checked(var, n, grad)
    _indices_checked(var, indices, N)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _sparse_proximal_gradient_descent[float](<float*>_p_var, <const float*>_p_grad, _p_indices, N, inner,
                                                 nt, <float>alpha, <float>l1, <float>l2)
    else:
        _sparse_proximal_gradient_descent[double](<double*>_p_var, <const double*>_p_grad, _p_indices, N,
                                                  inner, nt, <double>alpha, <double>l1, <double>l2)
    _restore_gil(ts)
    return var


# ---------------------------------------------------------------------------------------
# Adadelta
# TF: accum = accum * rho() + grad.square() * (1 - rho()); update = (accum_update +
#   epsilon()).sqrt() * (accum + epsilon()).rsqrt() * grad (the new accum, the old accum_update);
#   var -= update * lr(); accum_update = accum_update * rho() + update.square() * (1 - rho())

cdef inline void _adadelta_at(Py_ssize_t i, floating* var, floating* accum, floating* accum_update,
                              const floating* grad, floating lr, floating rho, floating one_m_rho,
                              floating epsilon) noexcept nogil:
    cdef floating g, a, au, update
    g = grad[i]
    a = accum[i] * rho + g * g * one_m_rho
    accum[i] = a
    au = accum_update[i]
    update = _sqrt(au + epsilon) * (<floating>1 / _sqrt(a + epsilon)) * g
    var[i] = var[i] - update * lr
    accum_update[i] = au * rho + update * update * one_m_rho


cdef void _adadelta(floating* var, floating* accum, floating* accum_update, const floating* grad,
                    Py_ssize_t n, int nt, floating lr, floating rho, floating epsilon) noexcept nogil:
    cdef floating one_m_rho = <floating>1 - rho
    cdef Py_ssize_t i, t
    cdef Py_ssize_t h = _head(n, var)
    for i in range(h):  # up to var's first cache-line boundary: the loops below start aligned
        _adadelta_at(i, var, accum, accum_update, grad, lr, rho, one_m_rho, epsilon)
    if nt > 1:
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(_span(t, nt, n, var), _span(t + 1, nt, n, var)):
                _adadelta_at(i, var, accum, accum_update, grad, lr, rho, one_m_rho, epsilon)
    else:
        for i in range(h, n):
            _adadelta_at(i, var, accum, accum_update, grad, lr, rho, one_m_rho, epsilon)


def tf_apply_adadelta(var, accum, accum_update, grad, double lr, double rho, double epsilon):
    """TF's ApplyAdadelta (CPU).  Returns var."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>var)
    if n == 0:
        return var
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_accum = _ptr(accum)
    cdef void* _p_accum_update = _ptr(accum_update)
    cdef void* _p_grad = _ptr(grad)
    _as_checked(var, n, var)
    _as_checked(var, n, accum)
    _as_checked(var, n, accum_update)
    _as_checked(var, n, grad)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _adadelta[float](<float*>_p_var, <float*>_p_accum, <float*>_p_accum_update, <const float*>_p_grad, n,
                         nt, <float>lr, <float>rho, <float>epsilon)
    else:
        _adadelta[double](<double*>_p_var, <double*>_p_accum, <double*>_p_accum_update,
                          <const double*>_p_grad, n, nt, <double>lr, <double>rho, <double>epsilon)
    _restore_gil(ts)
    return var


cdef inline void _adadelta_row(floating* var, floating* accum, floating* accum_update, const floating* grad,
                               Py_ssize_t inner, floating lr, floating rho, floating one_m_rho,
                               floating epsilon) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(inner):
        _adadelta_at(j, var, accum, accum_update, grad, lr, rho, one_m_rho, epsilon)


cdef void _sparse_adadelta(floating* var, floating* accum, floating* accum_update, const floating* grad,
                           const int64_t* indices, Py_ssize_t N, Py_ssize_t inner, int nt, floating lr,
                           floating rho, floating epsilon) noexcept nogil:
    cdef floating one_m_rho = <floating>1 - rho
    cdef Py_ssize_t i, t, r
    if nt > 1:  # thread t owns the rows r with r % nt == t and steps them in the order of indices
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(N):
                r = indices[i]
                if r % nt == t:
                    _adadelta_row(var + r * inner, accum + r * inner, accum_update + r * inner,
                                  grad + i * inner, inner, lr, rho, one_m_rho, epsilon)
    else:
        for i in range(N):
            r = indices[i]
            _adadelta_row(var + r * inner, accum + r * inner, accum_update + r * inner, grad + i * inner,
                          inner, lr, rho, one_m_rho, epsilon)


def tf_sparse_apply_adadelta(var, accum, accum_update, grad, indices, double lr, double rho, double epsilon):
    """TF's SparseApplyAdadelta (CPU).  Returns var."""
    cdef Py_ssize_t N = _dim(indices, 0)
    if N == 0:
        return var
    cdef Py_ssize_t inner = _dim(grad, 1)
    cdef Py_ssize_t n = N * inner
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_accum = _ptr(accum)
    cdef void* _p_accum_update = _ptr(accum_update)
    cdef void* _p_grad = _ptr(grad)
    cdef const int64_t* _p_indices = <const int64_t*>_ptr(indices)
    _as_checked(var, _dim(var, 0) * inner, var)
    _as_checked(var, _dim(var, 0) * inner, accum)
    _as_checked(var, _dim(var, 0) * inner, accum_update)
    _as_checked(var, n, grad)
    _indices_checked(var, indices, N)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _sparse_adadelta[float](<float*>_p_var, <float*>_p_accum, <float*>_p_accum_update,
                                <const float*>_p_grad, _p_indices, N, inner, nt, <float>lr, <float>rho,
                                <float>epsilon)
    else:
        _sparse_adadelta[double](<double*>_p_var, <double*>_p_accum, <double*>_p_accum_update,
                                 <const double*>_p_grad, _p_indices, N, inner, nt, <double>lr, <double>rho,
                                 <double>epsilon)
    _restore_gil(ts)
    return var


# ---------------------------------------------------------------------------------------
# Adagrad
# TF: if update_slots: accum += grad.square(); var -= grad * lr() * accum.rsqrt()
# Sparse: TF's inner_dim == 1 case divides, lr * g / sqrt(a), where the rows multiply by rsqrt:
#   not copied

cdef inline void _adagrad_at(Py_ssize_t i, floating* var, floating* accum, const floating* grad, floating lr,
                             bint update_slots) noexcept nogil:
    cdef floating g, a
    g = grad[i]
    a = accum[i]
    if update_slots:
        a = a + g * g
        accum[i] = a
    var[i] = var[i] - g * lr * (<floating>1 / _sqrt(a))


cdef inline void _adagrad_span(Py_ssize_t lo, Py_ssize_t hi, floating* var, floating* accum,
                               const floating* grad, floating lr, bint update_slots) noexcept nogil:
    """Elements [lo, hi): one loop per combination of update_slots, each with
    the flags as literals (a straight-line body GCC vectorizes)."""
    cdef Py_ssize_t i
    if update_slots:
        for i in range(lo, hi):
            _adagrad_at(i, var, accum, grad, lr, True)
    else:
        for i in range(lo, hi):
            _adagrad_at(i, var, accum, grad, lr, False)


cdef void _adagrad(floating* var, floating* accum, const floating* grad, Py_ssize_t n, int nt, floating lr,
                   bint update_slots) noexcept nogil:
    cdef Py_ssize_t t
    cdef Py_ssize_t h = _head(n, var)
    # up to var's first cache-line boundary: the loops below start aligned
    _adagrad_span(0, h, var, accum, grad, lr, update_slots)
    if nt > 1:
        for t in prange(nt, schedule="static", num_threads=nt):
            _adagrad_span(_span(t, nt, n, var), _span(t + 1, nt, n, var), var, accum, grad, lr, update_slots)
    else:
        _adagrad_span(h, n, var, accum, grad, lr, update_slots)


def tf_apply_adagrad(var, accum, grad, double lr, bint update_slots):
    """TF's ApplyAdagrad (CPU).  Returns var."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>var)
    if n == 0:
        return var
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_accum = _ptr(accum)
    cdef void* _p_grad = _ptr(grad)
    _as_checked(var, n, var)
    _as_checked(var, n, accum)
    _as_checked(var, n, grad)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _adagrad[float](<float*>_p_var, <float*>_p_accum, <const float*>_p_grad, n, nt, <float>lr,
                        update_slots)
    else:
        _adagrad[double](<double*>_p_var, <double*>_p_accum, <const double*>_p_grad, n, nt, <double>lr,
                         update_slots)
    _restore_gil(ts)
    return var


cdef void _sparse_adagrad(floating* var, floating* accum, const floating* grad, const int64_t* indices,
                          Py_ssize_t N, Py_ssize_t inner, int nt, floating lr,
                          bint update_slots) noexcept nogil:
    cdef Py_ssize_t i, t, r
    if nt > 1:  # thread t owns the rows r with r % nt == t and steps them in the order of indices
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(N):
                r = indices[i]
                if r % nt == t:
                    _adagrad_span(0, inner, var + r * inner, accum + r * inner, grad + i * inner, lr,
                                  update_slots)
    else:
        for i in range(N):
            r = indices[i]
            _adagrad_span(0, inner, var + r * inner, accum + r * inner, grad + i * inner, lr, update_slots)


def tf_sparse_apply_adagrad(var, accum, grad, indices, double lr, bint update_slots):
    """TF's SparseApplyAdagrad (CPU).  Returns var."""
    cdef Py_ssize_t N = _dim(indices, 0)
    if N == 0:
        return var
    cdef Py_ssize_t inner = _dim(grad, 1)
    cdef Py_ssize_t n = N * inner
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_accum = _ptr(accum)
    cdef void* _p_grad = _ptr(grad)
    cdef const int64_t* _p_indices = <const int64_t*>_ptr(indices)
    _as_checked(var, _dim(var, 0) * inner, var)
    _as_checked(var, _dim(var, 0) * inner, accum)
    _as_checked(var, n, grad)
    _indices_checked(var, indices, N)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _sparse_adagrad[float](<float*>_p_var, <float*>_p_accum, <const float*>_p_grad, _p_indices, N, inner,
                               nt, <float>lr, update_slots)
    else:
        _sparse_adagrad[double](<double*>_p_var, <double*>_p_accum, <const double*>_p_grad, _p_indices, N,
                                inner, nt, <double>lr, update_slots)
    _restore_gil(ts)
    return var


# ---------------------------------------------------------------------------------------
# AdagradV2
# TF: if update_slots: accum += grad.square(); var -= grad * lr() / (accum.sqrt() + epsilon())

cdef inline void _adagrad_v2_at(Py_ssize_t i, floating* var, floating* accum, const floating* grad,
                                floating lr, floating epsilon, bint update_slots) noexcept nogil:
    cdef floating g, a
    g = grad[i]
    a = accum[i]
    if update_slots:
        a = a + g * g
        accum[i] = a
    var[i] = var[i] - g * lr / (_sqrt(a) + epsilon)


cdef inline void _adagrad_v2_span(Py_ssize_t lo, Py_ssize_t hi, floating* var, floating* accum,
                                  const floating* grad, floating lr, floating epsilon,
                                  bint update_slots) noexcept nogil:
    """Elements [lo, hi): one loop per combination of update_slots, each with
    the flags as literals (a straight-line body GCC vectorizes)."""
    cdef Py_ssize_t i
    if update_slots:
        for i in range(lo, hi):
            _adagrad_v2_at(i, var, accum, grad, lr, epsilon, True)
    else:
        for i in range(lo, hi):
            _adagrad_v2_at(i, var, accum, grad, lr, epsilon, False)


cdef void _adagrad_v2(floating* var, floating* accum, const floating* grad, Py_ssize_t n, int nt, floating lr,
                      floating epsilon, bint update_slots) noexcept nogil:
    cdef Py_ssize_t t
    cdef Py_ssize_t h = _head(n, var)
    # up to var's first cache-line boundary: the loops below start aligned
    _adagrad_v2_span(0, h, var, accum, grad, lr, epsilon, update_slots)
    if nt > 1:
        for t in prange(nt, schedule="static", num_threads=nt):
            _adagrad_v2_span(_span(t, nt, n, var), _span(t + 1, nt, n, var), var, accum, grad, lr, epsilon,
                             update_slots)
    else:
        _adagrad_v2_span(h, n, var, accum, grad, lr, epsilon, update_slots)


def tf_apply_adagrad_v2(var, accum, grad, double lr, double epsilon, bint update_slots):
    """TF's ApplyAdagradV2 (CPU).  Returns var."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>var)
    if n == 0:
        return var
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_accum = _ptr(accum)
    cdef void* _p_grad = _ptr(grad)
    _as_checked(var, n, var)
    _as_checked(var, n, accum)
    _as_checked(var, n, grad)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _adagrad_v2[float](<float*>_p_var, <float*>_p_accum, <const float*>_p_grad, n, nt, <float>lr,
                           <float>epsilon, update_slots)
    else:
        _adagrad_v2[double](<double*>_p_var, <double*>_p_accum, <const double*>_p_grad, n, nt, <double>lr,
                            <double>epsilon, update_slots)
    _restore_gil(ts)
    return var


cdef void _sparse_adagrad_v2(floating* var, floating* accum, const floating* grad, const int64_t* indices,
                             Py_ssize_t N, Py_ssize_t inner, int nt, floating lr, floating epsilon,
                             bint update_slots) noexcept nogil:
    cdef Py_ssize_t i, t, r
    if nt > 1:  # thread t owns the rows r with r % nt == t and steps them in the order of indices
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(N):
                r = indices[i]
                if r % nt == t:
                    _adagrad_v2_span(0, inner, var + r * inner, accum + r * inner, grad + i * inner, lr,
                                     epsilon, update_slots)
    else:
        for i in range(N):
            r = indices[i]
            _adagrad_v2_span(0, inner, var + r * inner, accum + r * inner, grad + i * inner, lr, epsilon,
                             update_slots)


def tf_sparse_apply_adagrad_v2(var, accum, grad, indices, double lr, double epsilon, bint update_slots):
    """TF's SparseApplyAdagradV2 (CPU).  Returns var."""
    cdef Py_ssize_t N = _dim(indices, 0)
    if N == 0:
        return var
    cdef Py_ssize_t inner = _dim(grad, 1)
    cdef Py_ssize_t n = N * inner
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_accum = _ptr(accum)
    cdef void* _p_grad = _ptr(grad)
    cdef const int64_t* _p_indices = <const int64_t*>_ptr(indices)
    _as_checked(var, _dim(var, 0) * inner, var)
    _as_checked(var, _dim(var, 0) * inner, accum)
    _as_checked(var, n, grad)
    _indices_checked(var, indices, N)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _sparse_adagrad_v2[float](<float*>_p_var, <float*>_p_accum, <const float*>_p_grad, _p_indices, N,
                                  inner, nt, <float>lr, <float>epsilon, update_slots)
    else:
        _sparse_adagrad_v2[double](<double*>_p_var, <double*>_p_accum, <const double*>_p_grad, _p_indices, N,
                                   inner, nt, <double>lr, <double>epsilon, update_slots)
    _restore_gil(ts)
    return var


# ---------------------------------------------------------------------------------------
# ProximalAdagrad
# TF: accum += grad.square(); learning_rate = lr() * accum.rsqrt(); prox_var (var itself) -=
#   grad * learning_rate; var = l1() > 0 ? prox_var.sign() * (prox_var.abs() - learning_rate *
#   l1()).cwiseMax(0) / (1 + l2() * learning_rate) : prox_var / (1 + l2() * learning_rate)
# Sparse: TF's inner_dim == 1 case: lr / sqrt(a) and 1.0 + l2 * rate in double: not copied

cdef inline void _proximal_adagrad_at(Py_ssize_t i, floating* var, floating* accum, const floating* grad,
                                      floating lr, floating l1, floating l2, bint has_l1) noexcept nogil:
    cdef floating g, a, rate, prox
    g = grad[i]
    a = accum[i] + g * g
    accum[i] = a
    rate = lr * (<floating>1 / _sqrt(a))
    prox = var[i] - g * rate
    if has_l1:
        var[i] = _sign(prox) * _max_nan(_fabs(prox) - rate * l1, <floating>0) / (<floating>1 + l2 * rate)
    else:
        var[i] = prox / (<floating>1 + l2 * rate)


cdef inline void _proximal_adagrad_span(Py_ssize_t lo, Py_ssize_t hi, floating* var, floating* accum,
                                        const floating* grad, floating lr, floating l1, floating l2,
                                        bint has_l1) noexcept nogil:
    """Elements [lo, hi): one loop per combination of has_l1, each with
    the flags as literals (a straight-line body GCC vectorizes)."""
    cdef Py_ssize_t i
    if has_l1:
        for i in range(lo, hi):
            _proximal_adagrad_at(i, var, accum, grad, lr, l1, l2, True)
    else:
        for i in range(lo, hi):
            _proximal_adagrad_at(i, var, accum, grad, lr, l1, l2, False)


cdef void _proximal_adagrad(floating* var, floating* accum, const floating* grad, Py_ssize_t n, int nt,
                            floating lr, floating l1, floating l2) noexcept nogil:
    cdef bint has_l1 = l1 > 0
    cdef Py_ssize_t t
    cdef Py_ssize_t h = _head(n, var)
    # up to var's first cache-line boundary: the loops below start aligned
    _proximal_adagrad_span(0, h, var, accum, grad, lr, l1, l2, has_l1)
    if nt > 1:
        for t in prange(nt, schedule="static", num_threads=nt):
            _proximal_adagrad_span(_span(t, nt, n, var), _span(t + 1, nt, n, var), var, accum, grad, lr, l1,
                                   l2, has_l1)
    else:
        _proximal_adagrad_span(h, n, var, accum, grad, lr, l1, l2, has_l1)


def tf_apply_proximal_adagrad(var, accum, grad, double lr, double l1, double l2):
    """TF's ApplyProximalAdagrad (CPU).  Returns var."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>var)
    if n == 0:
        return var
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_accum = _ptr(accum)
    cdef void* _p_grad = _ptr(grad)
    _as_checked(var, n, var)
    _as_checked(var, n, accum)
    _as_checked(var, n, grad)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _proximal_adagrad[float](<float*>_p_var, <float*>_p_accum, <const float*>_p_grad, n, nt, <float>lr,
                                 <float>l1, <float>l2)
    else:
        _proximal_adagrad[double](<double*>_p_var, <double*>_p_accum, <const double*>_p_grad, n, nt,
                                  <double>lr, <double>l1, <double>l2)
    _restore_gil(ts)
    return var


cdef void _sparse_proximal_adagrad(floating* var, floating* accum, const floating* grad,
                                   const int64_t* indices, Py_ssize_t N, Py_ssize_t inner, int nt,
                                   floating lr, floating l1, floating l2) noexcept nogil:
    cdef bint has_l1 = l1 > 0
    cdef Py_ssize_t i, t, r
    if nt > 1:  # thread t owns the rows r with r % nt == t and steps them in the order of indices
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(N):
                r = indices[i]
                if r % nt == t:
                    _proximal_adagrad_span(0, inner, var + r * inner, accum + r * inner, grad + i * inner, lr,
                                           l1, l2, has_l1)
    else:
        for i in range(N):
            r = indices[i]
            _proximal_adagrad_span(0, inner, var + r * inner, accum + r * inner, grad + i * inner, lr, l1, l2,
                                   has_l1)


def tf_sparse_apply_proximal_adagrad(var, accum, grad, indices, double lr, double l1, double l2):
    """TF's SparseApplyProximalAdagrad (CPU).  Returns var."""
    cdef Py_ssize_t N = _dim(indices, 0)
    if N == 0:
        return var
    cdef Py_ssize_t inner = _dim(grad, 1)
    cdef Py_ssize_t n = N * inner
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_accum = _ptr(accum)
    cdef void* _p_grad = _ptr(grad)
    cdef const int64_t* _p_indices = <const int64_t*>_ptr(indices)
    _as_checked(var, _dim(var, 0) * inner, var)
    _as_checked(var, _dim(var, 0) * inner, accum)
    _as_checked(var, n, grad)
    _indices_checked(var, indices, N)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _sparse_proximal_adagrad[float](<float*>_p_var, <float*>_p_accum, <const float*>_p_grad, _p_indices,
                                        N, inner, nt, <float>lr, <float>l1, <float>l2)
    else:
        _sparse_proximal_adagrad[double](<double*>_p_var, <double*>_p_accum, <const double*>_p_grad,
                                         _p_indices, N, inner, nt, <double>lr, <double>l1, <double>l2)
    _restore_gil(ts)
    return var


# ---------------------------------------------------------------------------------------
# AdagradDA
# TF: gradient_accum += grad; gradient_squared_accum += grad.square(); gs =
#   static_cast<float>(global_step); var = l1() > 0 ? lr() * -1 * gradient_accum.sign() *
#   (gradient_accum.abs() - gs * l1()).cwiseMax(0) / (l2() * (gs * lr()) +
#   gradient_squared_accum.sqrt()) : lr() * gradient_accum * -1 / (l2() * (gs * lr()) +
#   gradient_squared_accum.sqrt())
# Sparse: TF's sparse op rearranges the formula (ga / gs - l1, l2 + sqrt(gg) / (gs * lr),
#   double scalars for inner_dim == 1): the dense functor's expression is used

cdef inline void _adagrad_da_at(Py_ssize_t i, floating* var, floating* gradient_accumulator,
                                floating* gradient_squared_accumulator, const floating* grad, floating lr,
                                floating neg_lr, floating gs_l1, floating l2_gs_lr,
                                bint has_l1) noexcept nogil:
    cdef floating g, ga, gg
    g = grad[i]
    ga = gradient_accumulator[i] + g
    gradient_accumulator[i] = ga
    gg = gradient_squared_accumulator[i] + g * g
    gradient_squared_accumulator[i] = gg
    if has_l1:
        var[i] = neg_lr * _sign(ga) * _max_nan(_fabs(ga) - gs_l1, <floating>0) / (l2_gs_lr + _sqrt(gg))
    else:
        var[i] = lr * ga * <floating>-1 / (l2_gs_lr + _sqrt(gg))


cdef inline void _adagrad_da_span(Py_ssize_t lo, Py_ssize_t hi, floating* var, floating* gradient_accumulator,
                                  floating* gradient_squared_accumulator, const floating* grad, floating lr,
                                  floating neg_lr, floating gs_l1, floating l2_gs_lr,
                                  bint has_l1) noexcept nogil:
    """Elements [lo, hi): one loop per combination of has_l1, each with
    the flags as literals (a straight-line body GCC vectorizes)."""
    cdef Py_ssize_t i
    if has_l1:
        for i in range(lo, hi):
            _adagrad_da_at(i, var, gradient_accumulator, gradient_squared_accumulator, grad, lr, neg_lr,
                           gs_l1, l2_gs_lr, True)
    else:
        for i in range(lo, hi):
            _adagrad_da_at(i, var, gradient_accumulator, gradient_squared_accumulator, grad, lr, neg_lr,
                           gs_l1, l2_gs_lr, False)


cdef void _adagrad_da(floating* var, floating* gradient_accumulator, floating* gradient_squared_accumulator,
                      const floating* grad, Py_ssize_t n, int nt, floating lr, floating l1, floating l2,
                      long long global_step) noexcept nogil:
    cdef floating gs = <floating>(<float>global_step)
    cdef floating gs_lr = gs * lr
    cdef floating gs_l1 = gs * l1
    cdef floating l2_gs_lr = l2 * gs_lr
    cdef floating neg_lr = lr * <floating>-1
    cdef bint has_l1 = l1 > 0
    cdef Py_ssize_t t
    cdef Py_ssize_t h = _head(n, var)
    # up to var's first cache-line boundary: the loops below start aligned
    _adagrad_da_span(0, h, var, gradient_accumulator, gradient_squared_accumulator, grad, lr, neg_lr, gs_l1,
                     l2_gs_lr, has_l1)
    if nt > 1:
        for t in prange(nt, schedule="static", num_threads=nt):
            _adagrad_da_span(_span(t, nt, n, var), _span(t + 1, nt, n, var), var, gradient_accumulator,
                             gradient_squared_accumulator, grad, lr, neg_lr, gs_l1, l2_gs_lr, has_l1)
    else:
        _adagrad_da_span(h, n, var, gradient_accumulator, gradient_squared_accumulator, grad, lr, neg_lr,
                         gs_l1, l2_gs_lr, has_l1)


def tf_apply_adagrad_da(var, gradient_accumulator, gradient_squared_accumulator, grad, double lr, double l1,
                        double l2, long long global_step):
    """TF's ApplyAdagradDA (CPU).  Returns var."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>var)
    if n == 0:
        return var
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_gradient_accumulator = _ptr(gradient_accumulator)
    cdef void* _p_gradient_squared_accumulator = _ptr(gradient_squared_accumulator)
    cdef void* _p_grad = _ptr(grad)
    _as_checked(var, n, var)
    _as_checked(var, n, gradient_accumulator)
    _as_checked(var, n, gradient_squared_accumulator)
    _as_checked(var, n, grad)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _adagrad_da[float](<float*>_p_var, <float*>_p_gradient_accumulator,
                           <float*>_p_gradient_squared_accumulator, <const float*>_p_grad, n, nt, <float>lr,
                           <float>l1, <float>l2, global_step)
    else:
        _adagrad_da[double](<double*>_p_var, <double*>_p_gradient_accumulator,
                            <double*>_p_gradient_squared_accumulator, <const double*>_p_grad, n, nt,
                            <double>lr, <double>l1, <double>l2, global_step)
    _restore_gil(ts)
    return var


cdef void _sparse_adagrad_da(floating* var, floating* gradient_accumulator,
                             floating* gradient_squared_accumulator, const floating* grad,
                             const int64_t* indices, Py_ssize_t N, Py_ssize_t inner, int nt, floating lr,
                             floating l1, floating l2, long long global_step) noexcept nogil:
    cdef floating gs = <floating>(<float>global_step)
    cdef floating gs_lr = gs * lr
    cdef floating gs_l1 = gs * l1
    cdef floating l2_gs_lr = l2 * gs_lr
    cdef floating neg_lr = lr * <floating>-1
    cdef bint has_l1 = l1 > 0
    cdef Py_ssize_t i, t, r
    if nt > 1:  # thread t owns the rows r with r % nt == t and steps them in the order of indices
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(N):
                r = indices[i]
                if r % nt == t:
                    _adagrad_da_span(0, inner, var + r * inner, gradient_accumulator + r * inner,
                                     gradient_squared_accumulator + r * inner, grad + i * inner, lr, neg_lr,
                                     gs_l1, l2_gs_lr, has_l1)
    else:
        for i in range(N):
            r = indices[i]
            _adagrad_da_span(0, inner, var + r * inner, gradient_accumulator + r * inner,
                             gradient_squared_accumulator + r * inner, grad + i * inner, lr, neg_lr, gs_l1,
                             l2_gs_lr, has_l1)


def tf_sparse_apply_adagrad_da(var, gradient_accumulator, gradient_squared_accumulator, grad, indices,
                               double lr, double l1, double l2, long long global_step):
    """TF's SparseApplyAdagradDA (CPU).  Returns var."""
    cdef Py_ssize_t N = _dim(indices, 0)
    if N == 0:
        return var
    cdef Py_ssize_t inner = _dim(grad, 1)
    cdef Py_ssize_t n = N * inner
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_gradient_accumulator = _ptr(gradient_accumulator)
    cdef void* _p_gradient_squared_accumulator = _ptr(gradient_squared_accumulator)
    cdef void* _p_grad = _ptr(grad)
    cdef const int64_t* _p_indices = <const int64_t*>_ptr(indices)
    _as_checked(var, _dim(var, 0) * inner, var)
    _as_checked(var, _dim(var, 0) * inner, gradient_accumulator)
    _as_checked(var, _dim(var, 0) * inner, gradient_squared_accumulator)
    _as_checked(var, n, grad)
    _indices_checked(var, indices, N)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _sparse_adagrad_da[float](<float*>_p_var, <float*>_p_gradient_accumulator,
                                  <float*>_p_gradient_squared_accumulator, <const float*>_p_grad, _p_indices,
                                  N, inner, nt, <float>lr, <float>l1, <float>l2, global_step)
    else:
        _sparse_adagrad_da[double](<double*>_p_var, <double*>_p_gradient_accumulator,
                                   <double*>_p_gradient_squared_accumulator, <const double*>_p_grad,
                                   _p_indices, N, inner, nt, <double>lr, <double>l1, <double>l2, global_step)
    _restore_gil(ts)
    return var


# ---------------------------------------------------------------------------------------
# Ftrl
# TF: ApplyFtrl / ApplyFtrlMultiplyLinearByLr (new_accum = accum + grad.square() from the old
#   accum; p(x) = x.sqrt() if lr_power() == -0.5 else x.pow(-lr_power())); not multiplied: linear
#   += grad - (p(new_accum) - p(accum)) / lr() * var; x = l1() * linear.sign() - linear; y =
#   p(new_accum) / lr() + 2 * l2(); var = (linear.abs() > l1()).select(x / y, 0); multiplied:
#   linear += grad * lr() - (p(new_accum) - p(accum)) * var; x = l1() * lr() * linear.sign() -
#   linear; y = p(new_accum) + 2 * l2() * lr(); var = (linear.abs() > l1() * lr()).select(x / y,
#   0); then accum += grad.square()
# Sparse: TF's sparse op writes x = clamp(linear, -l1, l1) - linear, var = x / y without the
#   select (the same value except for NaN or a zero/inf y; inner_dim == 1 always uses pow and (l
#   + g) - sigma * v): the dense functor's expression is used

cdef inline void _ftrl_at(Py_ssize_t i, floating* var, floating* accum, floating* linear,
                          const floating* grad, floating lr, floating l1, floating neg_lr_power,
                          floating two_l2, floating two_l2_lr, floating l1_lr, bint sqrt_branch,
                          bint multiply_linear_by_lr) noexcept nogil:
    cdef floating g, a, w, new_accum, p_new, p_old, lin, x, y, thr
    g = grad[i]
    a = accum[i]
    w = var[i]
    new_accum = a + g * g
    if sqrt_branch:
        p_new = _sqrt(new_accum)
        p_old = _sqrt(a)
    else:
        p_new = _pow(new_accum, neg_lr_power)
        p_old = _pow(a, neg_lr_power)
    if multiply_linear_by_lr:
        lin = linear[i] + (g * lr - (p_new - p_old) * w)
        x = l1_lr * _sign(lin) - lin
        y = p_new + two_l2_lr
        thr = l1_lr
    else:
        lin = linear[i] + (g - (p_new - p_old) / lr * w)
        x = l1 * _sign(lin) - lin
        y = p_new / lr + two_l2
        thr = l1
    linear[i] = lin
    var[i] = x / y if _fabs(lin) > thr else <floating>0
    accum[i] = a + g * g


cdef inline void _ftrl_span(Py_ssize_t lo, Py_ssize_t hi, floating* var, floating* accum, floating* linear,
                            const floating* grad, floating lr, floating l1, floating neg_lr_power,
                            floating two_l2, floating two_l2_lr, floating l1_lr, bint sqrt_branch,
                            bint multiply_linear_by_lr) noexcept nogil:
    """Elements [lo, hi): one loop per combination of sqrt_branch and multiply_linear_by_lr, each with
    the flags as literals (a straight-line body GCC vectorizes)."""
    cdef Py_ssize_t i
    if sqrt_branch:
        if multiply_linear_by_lr:
            for i in range(lo, hi):
                _ftrl_at(i, var, accum, linear, grad, lr, l1, neg_lr_power, two_l2, two_l2_lr, l1_lr, True,
                         True)
        else:
            for i in range(lo, hi):
                _ftrl_at(i, var, accum, linear, grad, lr, l1, neg_lr_power, two_l2, two_l2_lr, l1_lr, True,
                         False)
    else:
        if multiply_linear_by_lr:
            for i in range(lo, hi):
                _ftrl_at(i, var, accum, linear, grad, lr, l1, neg_lr_power, two_l2, two_l2_lr, l1_lr, False,
                         True)
        else:
            for i in range(lo, hi):
                _ftrl_at(i, var, accum, linear, grad, lr, l1, neg_lr_power, two_l2, two_l2_lr, l1_lr, False,
                         False)


cdef void _ftrl(floating* var, floating* accum, floating* linear, const floating* grad, Py_ssize_t n, int nt,
                floating lr, floating l1, floating l2, floating lr_power,
                bint multiply_linear_by_lr) noexcept nogil:
    cdef bint sqrt_branch = lr_power == <floating>-0.5
    cdef floating neg_lr_power = -lr_power
    cdef floating two_l2 = <floating>2 * l2
    cdef floating two_l2_lr = <floating>2 * l2 * lr
    cdef floating l1_lr = l1 * lr
    cdef Py_ssize_t t
    cdef Py_ssize_t h = _head(n, var)
    # up to var's first cache-line boundary: the loops below start aligned
    _ftrl_span(0, h, var, accum, linear, grad, lr, l1, neg_lr_power, two_l2, two_l2_lr, l1_lr, sqrt_branch,
               multiply_linear_by_lr)
    if nt > 1:
        for t in prange(nt, schedule="static", num_threads=nt):
            _ftrl_span(_span(t, nt, n, var), _span(t + 1, nt, n, var), var, accum, linear, grad, lr, l1,
                       neg_lr_power, two_l2, two_l2_lr, l1_lr, sqrt_branch, multiply_linear_by_lr)
    else:
        _ftrl_span(h, n, var, accum, linear, grad, lr, l1, neg_lr_power, two_l2, two_l2_lr, l1_lr,
                   sqrt_branch, multiply_linear_by_lr)


def tf_apply_ftrl(var, accum, linear, grad, double lr, double l1, double l2, double lr_power,
                  bint multiply_linear_by_lr):
    """TF's ApplyFtrl (CPU).  Returns var."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>var)
    if n == 0:
        return var
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_accum = _ptr(accum)
    cdef void* _p_linear = _ptr(linear)
    cdef void* _p_grad = _ptr(grad)
    _as_checked(var, n, var)
    _as_checked(var, n, accum)
    _as_checked(var, n, linear)
    _as_checked(var, n, grad)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _ftrl[float](<float*>_p_var, <float*>_p_accum, <float*>_p_linear, <const float*>_p_grad, n, nt,
                     <float>lr, <float>l1, <float>l2, <float>lr_power, multiply_linear_by_lr)
    else:
        _ftrl[double](<double*>_p_var, <double*>_p_accum, <double*>_p_linear, <const double*>_p_grad, n, nt,
                      <double>lr, <double>l1, <double>l2, <double>lr_power, multiply_linear_by_lr)
    _restore_gil(ts)
    return var


cdef void _sparse_ftrl(floating* var, floating* accum, floating* linear, const floating* grad,
                       const int64_t* indices, Py_ssize_t N, Py_ssize_t inner, int nt, floating lr,
                       floating l1, floating l2, floating lr_power,
                       bint multiply_linear_by_lr) noexcept nogil:
    cdef bint sqrt_branch = lr_power == <floating>-0.5
    cdef floating neg_lr_power = -lr_power
    cdef floating two_l2 = <floating>2 * l2
    cdef floating two_l2_lr = <floating>2 * l2 * lr
    cdef floating l1_lr = l1 * lr
    cdef Py_ssize_t i, t, r
    if nt > 1:  # thread t owns the rows r with r % nt == t and steps them in the order of indices
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(N):
                r = indices[i]
                if r % nt == t:
                    _ftrl_span(0, inner, var + r * inner, accum + r * inner, linear + r * inner,
                               grad + i * inner, lr, l1, neg_lr_power, two_l2, two_l2_lr, l1_lr, sqrt_branch,
                               multiply_linear_by_lr)
    else:
        for i in range(N):
            r = indices[i]
            _ftrl_span(0, inner, var + r * inner, accum + r * inner, linear + r * inner, grad + i * inner, lr,
                       l1, neg_lr_power, two_l2, two_l2_lr, l1_lr, sqrt_branch, multiply_linear_by_lr)


def tf_sparse_apply_ftrl(var, accum, linear, grad, indices, double lr, double l1, double l2, double lr_power,
                         bint multiply_linear_by_lr):
    """TF's SparseApplyFtrl (CPU).  Returns var."""
    cdef Py_ssize_t N = _dim(indices, 0)
    if N == 0:
        return var
    cdef Py_ssize_t inner = _dim(grad, 1)
    cdef Py_ssize_t n = N * inner
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_accum = _ptr(accum)
    cdef void* _p_linear = _ptr(linear)
    cdef void* _p_grad = _ptr(grad)
    cdef const int64_t* _p_indices = <const int64_t*>_ptr(indices)
    _as_checked(var, _dim(var, 0) * inner, var)
    _as_checked(var, _dim(var, 0) * inner, accum)
    _as_checked(var, _dim(var, 0) * inner, linear)
    _as_checked(var, n, grad)
    _indices_checked(var, indices, N)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _sparse_ftrl[float](<float*>_p_var, <float*>_p_accum, <float*>_p_linear, <const float*>_p_grad,
                            _p_indices, N, inner, nt, <float>lr, <float>l1, <float>l2, <float>lr_power,
                            multiply_linear_by_lr)
    else:
        _sparse_ftrl[double](<double*>_p_var, <double*>_p_accum, <double*>_p_linear, <const double*>_p_grad,
                             _p_indices, N, inner, nt, <double>lr, <double>l1, <double>l2, <double>lr_power,
                             multiply_linear_by_lr)
    _restore_gil(ts)
    return var


# ---------------------------------------------------------------------------------------
# FtrlV2
# TF: ApplyFtrlV2 / ApplyFtrlV2MultiplyLinearByLr: ApplyFtrl's update with grad_with_shrinkage
#   = grad + 2 * l2_shrinkage() * var (the old var) in linear's update (new_accum and accum's
#   update keep the raw grad)
# Sparse: as ftrl

cdef inline void _ftrl_v2_at(Py_ssize_t i, floating* var, floating* accum, floating* linear,
                             const floating* grad, floating lr, floating l1, floating neg_lr_power,
                             floating two_l2, floating two_l2_lr, floating l1_lr, floating two_l2_shrinkage,
                             bint sqrt_branch, bint multiply_linear_by_lr) noexcept nogil:
    cdef floating g, a, w, gws, new_accum, p_new, p_old, lin, x, y, thr
    g = grad[i]
    a = accum[i]
    w = var[i]
    gws = g + two_l2_shrinkage * w
    new_accum = a + g * g
    if sqrt_branch:
        p_new = _sqrt(new_accum)
        p_old = _sqrt(a)
    else:
        p_new = _pow(new_accum, neg_lr_power)
        p_old = _pow(a, neg_lr_power)
    if multiply_linear_by_lr:
        lin = linear[i] + (gws * lr - (p_new - p_old) * w)
        x = l1_lr * _sign(lin) - lin
        y = p_new + two_l2_lr
        thr = l1_lr
    else:
        lin = linear[i] + (gws - (p_new - p_old) / lr * w)
        x = l1 * _sign(lin) - lin
        y = p_new / lr + two_l2
        thr = l1
    linear[i] = lin
    var[i] = x / y if _fabs(lin) > thr else <floating>0
    accum[i] = a + g * g


cdef inline void _ftrl_v2_span(Py_ssize_t lo, Py_ssize_t hi, floating* var, floating* accum, floating* linear,
                               const floating* grad, floating lr, floating l1, floating neg_lr_power,
                               floating two_l2, floating two_l2_lr, floating l1_lr, floating two_l2_shrinkage,
                               bint sqrt_branch, bint multiply_linear_by_lr) noexcept nogil:
    """Elements [lo, hi): one loop per combination of sqrt_branch and multiply_linear_by_lr, each with
    the flags as literals (a straight-line body GCC vectorizes)."""
    cdef Py_ssize_t i
    if sqrt_branch:
        if multiply_linear_by_lr:
            for i in range(lo, hi):
                _ftrl_v2_at(i, var, accum, linear, grad, lr, l1, neg_lr_power, two_l2, two_l2_lr, l1_lr,
                            two_l2_shrinkage, True, True)
        else:
            for i in range(lo, hi):
                _ftrl_v2_at(i, var, accum, linear, grad, lr, l1, neg_lr_power, two_l2, two_l2_lr, l1_lr,
                            two_l2_shrinkage, True, False)
    else:
        if multiply_linear_by_lr:
            for i in range(lo, hi):
                _ftrl_v2_at(i, var, accum, linear, grad, lr, l1, neg_lr_power, two_l2, two_l2_lr, l1_lr,
                            two_l2_shrinkage, False, True)
        else:
            for i in range(lo, hi):
                _ftrl_v2_at(i, var, accum, linear, grad, lr, l1, neg_lr_power, two_l2, two_l2_lr, l1_lr,
                            two_l2_shrinkage, False, False)


cdef void _ftrl_v2(floating* var, floating* accum, floating* linear, const floating* grad, Py_ssize_t n,
                   int nt, floating lr, floating l1, floating l2, floating l2_shrinkage, floating lr_power,
                   bint multiply_linear_by_lr) noexcept nogil:
    cdef bint sqrt_branch = lr_power == <floating>-0.5
    cdef floating neg_lr_power = -lr_power
    cdef floating two_l2 = <floating>2 * l2
    cdef floating two_l2_lr = <floating>2 * l2 * lr
    cdef floating l1_lr = l1 * lr
    cdef floating two_l2_shrinkage = <floating>2 * l2_shrinkage
    cdef Py_ssize_t t
    cdef Py_ssize_t h = _head(n, var)
    # up to var's first cache-line boundary: the loops below start aligned
    _ftrl_v2_span(0, h, var, accum, linear, grad, lr, l1, neg_lr_power, two_l2, two_l2_lr, l1_lr,
                  two_l2_shrinkage, sqrt_branch, multiply_linear_by_lr)
    if nt > 1:
        for t in prange(nt, schedule="static", num_threads=nt):
            _ftrl_v2_span(_span(t, nt, n, var), _span(t + 1, nt, n, var), var, accum, linear, grad, lr, l1,
                          neg_lr_power, two_l2, two_l2_lr, l1_lr, two_l2_shrinkage, sqrt_branch,
                          multiply_linear_by_lr)
    else:
        _ftrl_v2_span(h, n, var, accum, linear, grad, lr, l1, neg_lr_power, two_l2, two_l2_lr, l1_lr,
                      two_l2_shrinkage, sqrt_branch, multiply_linear_by_lr)


def tf_apply_ftrl_v2(var, accum, linear, grad, double lr, double l1, double l2, double l2_shrinkage,
                     double lr_power, bint multiply_linear_by_lr):
    """TF's ApplyFtrlV2 (CPU).  Returns var."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>var)
    if n == 0:
        return var
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_accum = _ptr(accum)
    cdef void* _p_linear = _ptr(linear)
    cdef void* _p_grad = _ptr(grad)
    _as_checked(var, n, var)
    _as_checked(var, n, accum)
    _as_checked(var, n, linear)
    _as_checked(var, n, grad)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _ftrl_v2[float](<float*>_p_var, <float*>_p_accum, <float*>_p_linear, <const float*>_p_grad, n, nt,
                        <float>lr, <float>l1, <float>l2, <float>l2_shrinkage, <float>lr_power,
                        multiply_linear_by_lr)
    else:
        _ftrl_v2[double](<double*>_p_var, <double*>_p_accum, <double*>_p_linear, <const double*>_p_grad, n,
                         nt, <double>lr, <double>l1, <double>l2, <double>l2_shrinkage, <double>lr_power,
                         multiply_linear_by_lr)
    _restore_gil(ts)
    return var


cdef void _sparse_ftrl_v2(floating* var, floating* accum, floating* linear, const floating* grad,
                          const int64_t* indices, Py_ssize_t N, Py_ssize_t inner, int nt, floating lr,
                          floating l1, floating l2, floating l2_shrinkage, floating lr_power,
                          bint multiply_linear_by_lr) noexcept nogil:
    cdef bint sqrt_branch = lr_power == <floating>-0.5
    cdef floating neg_lr_power = -lr_power
    cdef floating two_l2 = <floating>2 * l2
    cdef floating two_l2_lr = <floating>2 * l2 * lr
    cdef floating l1_lr = l1 * lr
    cdef floating two_l2_shrinkage = <floating>2 * l2_shrinkage
    cdef Py_ssize_t i, t, r
    if nt > 1:  # thread t owns the rows r with r % nt == t and steps them in the order of indices
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(N):
                r = indices[i]
                if r % nt == t:
                    _ftrl_v2_span(0, inner, var + r * inner, accum + r * inner, linear + r * inner,
                                  grad + i * inner, lr, l1, neg_lr_power, two_l2, two_l2_lr, l1_lr,
                                  two_l2_shrinkage, sqrt_branch, multiply_linear_by_lr)
    else:
        for i in range(N):
            r = indices[i]
            _ftrl_v2_span(0, inner, var + r * inner, accum + r * inner, linear + r * inner, grad + i * inner,
                          lr, l1, neg_lr_power, two_l2, two_l2_lr, l1_lr, two_l2_shrinkage, sqrt_branch,
                          multiply_linear_by_lr)


def tf_sparse_apply_ftrl_v2(var, accum, linear, grad, indices, double lr, double l1, double l2,
                            double l2_shrinkage, double lr_power, bint multiply_linear_by_lr):
    """TF's SparseApplyFtrlV2 (CPU).  Returns var."""
    cdef Py_ssize_t N = _dim(indices, 0)
    if N == 0:
        return var
    cdef Py_ssize_t inner = _dim(grad, 1)
    cdef Py_ssize_t n = N * inner
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_accum = _ptr(accum)
    cdef void* _p_linear = _ptr(linear)
    cdef void* _p_grad = _ptr(grad)
    cdef const int64_t* _p_indices = <const int64_t*>_ptr(indices)
    _as_checked(var, _dim(var, 0) * inner, var)
    _as_checked(var, _dim(var, 0) * inner, accum)
    _as_checked(var, _dim(var, 0) * inner, linear)
    _as_checked(var, n, grad)
    _indices_checked(var, indices, N)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _sparse_ftrl_v2[float](<float*>_p_var, <float*>_p_accum, <float*>_p_linear, <const float*>_p_grad,
                               _p_indices, N, inner, nt, <float>lr, <float>l1, <float>l2, <float>l2_shrinkage,
                               <float>lr_power, multiply_linear_by_lr)
    else:
        _sparse_ftrl_v2[double](<double*>_p_var, <double*>_p_accum, <double*>_p_linear,
                                <const double*>_p_grad, _p_indices, N, inner, nt, <double>lr, <double>l1,
                                <double>l2, <double>l2_shrinkage, <double>lr_power, multiply_linear_by_lr)
    _restore_gil(ts)
    return var


# ---------------------------------------------------------------------------------------
# Momentum
# TF: accum = accum * momentum() + grad; var -= use_nesterov ? grad * lr() + accum * momentum()
#   * lr() : accum * lr()
# Sparse: TF's sparse op computes lr * g + lr * momentum * a (a * momentum * lr in the dense
#   functor): the dense functor's expression is used

cdef inline void _momentum_at(Py_ssize_t i, floating* var, floating* accum, const floating* grad, floating lr,
                              floating momentum, bint use_nesterov) noexcept nogil:
    cdef floating g, a
    g = grad[i]
    a = accum[i] * momentum + g
    accum[i] = a
    if use_nesterov:
        var[i] = var[i] - (g * lr + a * momentum * lr)
    else:
        var[i] = var[i] - a * lr


cdef inline void _momentum_span(Py_ssize_t lo, Py_ssize_t hi, floating* var, floating* accum,
                                const floating* grad, floating lr, floating momentum,
                                bint use_nesterov) noexcept nogil:
    """Elements [lo, hi): one loop per combination of use_nesterov, each with
    the flags as literals (a straight-line body GCC vectorizes)."""
    cdef Py_ssize_t i
    if use_nesterov:
        for i in range(lo, hi):
            _momentum_at(i, var, accum, grad, lr, momentum, True)
    else:
        for i in range(lo, hi):
            _momentum_at(i, var, accum, grad, lr, momentum, False)


cdef void _momentum(floating* var, floating* accum, const floating* grad, Py_ssize_t n, int nt, floating lr,
                    floating momentum, bint use_nesterov) noexcept nogil:
    cdef Py_ssize_t t
    cdef Py_ssize_t h = _head(n, var)
    # up to var's first cache-line boundary: the loops below start aligned
    _momentum_span(0, h, var, accum, grad, lr, momentum, use_nesterov)
    if nt > 1:
        for t in prange(nt, schedule="static", num_threads=nt):
            _momentum_span(_span(t, nt, n, var), _span(t + 1, nt, n, var), var, accum, grad, lr, momentum,
                           use_nesterov)
    else:
        _momentum_span(h, n, var, accum, grad, lr, momentum, use_nesterov)


def tf_apply_momentum(var, accum, grad, double lr, double momentum, bint use_nesterov):
    """TF's ApplyMomentum (CPU).  Returns var."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>var)
    if n == 0:
        return var
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_accum = _ptr(accum)
    cdef void* _p_grad = _ptr(grad)
    _as_checked(var, n, var)
    _as_checked(var, n, accum)
    _as_checked(var, n, grad)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _momentum[float](<float*>_p_var, <float*>_p_accum, <const float*>_p_grad, n, nt, <float>lr,
                         <float>momentum, use_nesterov)
    else:
        _momentum[double](<double*>_p_var, <double*>_p_accum, <const double*>_p_grad, n, nt, <double>lr,
                          <double>momentum, use_nesterov)
    _restore_gil(ts)
    return var


cdef void _sparse_momentum(floating* var, floating* accum, const floating* grad, const int64_t* indices,
                           Py_ssize_t N, Py_ssize_t inner, int nt, floating lr, floating momentum,
                           bint use_nesterov) noexcept nogil:
    cdef Py_ssize_t i, t, r
    if nt > 1:  # thread t owns the rows r with r % nt == t and steps them in the order of indices
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(N):
                r = indices[i]
                if r % nt == t:
                    _momentum_span(0, inner, var + r * inner, accum + r * inner, grad + i * inner, lr,
                                   momentum, use_nesterov)
    else:
        for i in range(N):
            r = indices[i]
            _momentum_span(0, inner, var + r * inner, accum + r * inner, grad + i * inner, lr, momentum,
                           use_nesterov)


def tf_sparse_apply_momentum(var, accum, grad, indices, double lr, double momentum, bint use_nesterov):
    """TF's SparseApplyMomentum (CPU).  Returns var."""
    cdef Py_ssize_t N = _dim(indices, 0)
    if N == 0:
        return var
    cdef Py_ssize_t inner = _dim(grad, 1)
    cdef Py_ssize_t n = N * inner
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_accum = _ptr(accum)
    cdef void* _p_grad = _ptr(grad)
    cdef const int64_t* _p_indices = <const int64_t*>_ptr(indices)
    _as_checked(var, _dim(var, 0) * inner, var)
    _as_checked(var, _dim(var, 0) * inner, accum)
    _as_checked(var, n, grad)
    _indices_checked(var, indices, N)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _sparse_momentum[float](<float*>_p_var, <float*>_p_accum, <const float*>_p_grad, _p_indices, N, inner,
                                nt, <float>lr, <float>momentum, use_nesterov)
    else:
        _sparse_momentum[double](<double*>_p_var, <double*>_p_accum, <const double*>_p_grad, _p_indices, N,
                                 inner, nt, <double>lr, <double>momentum, use_nesterov)
    _restore_gil(ts)
    return var


# ---------------------------------------------------------------------------------------
# KerasMomentum
# TF: accum = accum * momentum() - grad * lr(); var += use_nesterov ? accum * momentum() - grad
#   * lr() : accum

cdef inline void _keras_momentum_at(Py_ssize_t i, floating* var, floating* accum, const floating* grad,
                                    floating lr, floating momentum, bint use_nesterov) noexcept nogil:
    cdef floating g, a
    g = grad[i]
    a = accum[i] * momentum - g * lr
    accum[i] = a
    if use_nesterov:
        var[i] = var[i] + (a * momentum - g * lr)
    else:
        var[i] = var[i] + a


cdef inline void _keras_momentum_span(Py_ssize_t lo, Py_ssize_t hi, floating* var, floating* accum,
                                      const floating* grad, floating lr, floating momentum,
                                      bint use_nesterov) noexcept nogil:
    """Elements [lo, hi): one loop per combination of use_nesterov, each with
    the flags as literals (a straight-line body GCC vectorizes)."""
    cdef Py_ssize_t i
    if use_nesterov:
        for i in range(lo, hi):
            _keras_momentum_at(i, var, accum, grad, lr, momentum, True)
    else:
        for i in range(lo, hi):
            _keras_momentum_at(i, var, accum, grad, lr, momentum, False)


cdef void _keras_momentum(floating* var, floating* accum, const floating* grad, Py_ssize_t n, int nt,
                          floating lr, floating momentum, bint use_nesterov) noexcept nogil:
    cdef Py_ssize_t t
    cdef Py_ssize_t h = _head(n, var)
    # up to var's first cache-line boundary: the loops below start aligned
    _keras_momentum_span(0, h, var, accum, grad, lr, momentum, use_nesterov)
    if nt > 1:
        for t in prange(nt, schedule="static", num_threads=nt):
            _keras_momentum_span(_span(t, nt, n, var), _span(t + 1, nt, n, var), var, accum, grad, lr,
                                 momentum, use_nesterov)
    else:
        _keras_momentum_span(h, n, var, accum, grad, lr, momentum, use_nesterov)


def tf_apply_keras_momentum(var, accum, grad, double lr, double momentum, bint use_nesterov):
    """TF's ApplyKerasMomentum (CPU).  Returns var."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>var)
    if n == 0:
        return var
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_accum = _ptr(accum)
    cdef void* _p_grad = _ptr(grad)
    _as_checked(var, n, var)
    _as_checked(var, n, accum)
    _as_checked(var, n, grad)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _keras_momentum[float](<float*>_p_var, <float*>_p_accum, <const float*>_p_grad, n, nt, <float>lr,
                               <float>momentum, use_nesterov)
    else:
        _keras_momentum[double](<double*>_p_var, <double*>_p_accum, <const double*>_p_grad, n, nt, <double>lr,
                                <double>momentum, use_nesterov)
    _restore_gil(ts)
    return var


cdef void _sparse_keras_momentum(floating* var, floating* accum, const floating* grad, const int64_t* indices,
                                 Py_ssize_t N, Py_ssize_t inner, int nt, floating lr, floating momentum,
                                 bint use_nesterov) noexcept nogil:
    cdef Py_ssize_t i, t, r
    if nt > 1:  # thread t owns the rows r with r % nt == t and steps them in the order of indices
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(N):
                r = indices[i]
                if r % nt == t:
                    _keras_momentum_span(0, inner, var + r * inner, accum + r * inner, grad + i * inner, lr,
                                         momentum, use_nesterov)
    else:
        for i in range(N):
            r = indices[i]
            _keras_momentum_span(0, inner, var + r * inner, accum + r * inner, grad + i * inner, lr, momentum,
                                 use_nesterov)


def tf_sparse_apply_keras_momentum(var, accum, grad, indices, double lr, double momentum, bint use_nesterov):
    """TF's SparseApplyKerasMomentum (CPU).  Returns var."""
    cdef Py_ssize_t N = _dim(indices, 0)
    if N == 0:
        return var
    cdef Py_ssize_t inner = _dim(grad, 1)
    cdef Py_ssize_t n = N * inner
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_accum = _ptr(accum)
    cdef void* _p_grad = _ptr(grad)
    cdef const int64_t* _p_indices = <const int64_t*>_ptr(indices)
    _as_checked(var, _dim(var, 0) * inner, var)
    _as_checked(var, _dim(var, 0) * inner, accum)
    _as_checked(var, n, grad)
    _indices_checked(var, indices, N)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _sparse_keras_momentum[float](<float*>_p_var, <float*>_p_accum, <const float*>_p_grad, _p_indices, N,
                                      inner, nt, <float>lr, <float>momentum, use_nesterov)
    else:
        _sparse_keras_momentum[double](<double*>_p_var, <double*>_p_accum, <const double*>_p_grad, _p_indices,
                                       N, inner, nt, <double>lr, <double>momentum, use_nesterov)
    _restore_gil(ts)
    return var


# ---------------------------------------------------------------------------------------
# Adam  (dense only: TF has no sparse form)
# TF: ApplyAdamNonCuda: alpha = lr() * sqrt(1 - beta2_power()) / (1 - beta1_power()); m +=
#   (grad - m) * (1 - beta1()); v += (grad.square() - v) * (1 - beta2()); var -= use_nesterov ?
#   ((grad * (1 - beta1()) + beta1() * m) * alpha) / (v.sqrt() + epsilon()) : (m * alpha) /
#   (v.sqrt() + epsilon())

cdef inline void _adam_at(Py_ssize_t i, floating* var, floating* m, floating* v, const floating* grad,
                          floating alpha, floating beta1, floating one_m_beta1, floating one_m_beta2,
                          floating epsilon, bint use_nesterov) noexcept nogil:
    cdef floating g, mi, vi
    g = grad[i]
    mi = m[i] + (g - m[i]) * one_m_beta1
    m[i] = mi
    vi = v[i] + (g * g - v[i]) * one_m_beta2
    v[i] = vi
    if use_nesterov:
        var[i] = var[i] - (g * one_m_beta1 + beta1 * mi) * alpha / (_sqrt(vi) + epsilon)
    else:
        var[i] = var[i] - mi * alpha / (_sqrt(vi) + epsilon)


cdef inline void _adam_span(Py_ssize_t lo, Py_ssize_t hi, floating* var, floating* m, floating* v,
                            const floating* grad, floating alpha, floating beta1, floating one_m_beta1,
                            floating one_m_beta2, floating epsilon, bint use_nesterov) noexcept nogil:
    """Elements [lo, hi): one loop per combination of use_nesterov, each with
    the flags as literals (a straight-line body GCC vectorizes)."""
    cdef Py_ssize_t i
    if use_nesterov:
        for i in range(lo, hi):
            _adam_at(i, var, m, v, grad, alpha, beta1, one_m_beta1, one_m_beta2, epsilon, True)
    else:
        for i in range(lo, hi):
            _adam_at(i, var, m, v, grad, alpha, beta1, one_m_beta1, one_m_beta2, epsilon, False)


cdef void _adam(floating* var, floating* m, floating* v, const floating* grad, Py_ssize_t n, int nt,
                floating beta1_power, floating beta2_power, floating lr, floating beta1, floating beta2,
                floating epsilon, bint use_nesterov) noexcept nogil:
    cdef floating alpha = lr * _sqrt(<floating>1 - beta2_power) / (<floating>1 - beta1_power)
    cdef floating one_m_beta1 = <floating>1 - beta1
    cdef floating one_m_beta2 = <floating>1 - beta2
    cdef Py_ssize_t t
    cdef Py_ssize_t h = _head(n, var)
    # up to var's first cache-line boundary: the loops below start aligned
    _adam_span(0, h, var, m, v, grad, alpha, beta1, one_m_beta1, one_m_beta2, epsilon, use_nesterov)
    if nt > 1:
        for t in prange(nt, schedule="static", num_threads=nt):
            _adam_span(_span(t, nt, n, var), _span(t + 1, nt, n, var), var, m, v, grad, alpha, beta1,
                       one_m_beta1, one_m_beta2, epsilon, use_nesterov)
    else:
        _adam_span(h, n, var, m, v, grad, alpha, beta1, one_m_beta1, one_m_beta2, epsilon, use_nesterov)


def tf_apply_adam(var, m, v, grad, double beta1_power, double beta2_power, double lr, double beta1,
                  double beta2, double epsilon, bint use_nesterov):
    """TF's ApplyAdam (CPU).  Returns var."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>var)
    if n == 0:
        return var
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_m = _ptr(m)
    cdef void* _p_v = _ptr(v)
    cdef void* _p_grad = _ptr(grad)
    _as_checked(var, n, var)
    _as_checked(var, n, m)
    _as_checked(var, n, v)
    _as_checked(var, n, grad)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _adam[float](<float*>_p_var, <float*>_p_m, <float*>_p_v, <const float*>_p_grad, n, nt,
                     <float>beta1_power, <float>beta2_power, <float>lr, <float>beta1, <float>beta2,
                     <float>epsilon, use_nesterov)
    else:
        _adam[double](<double*>_p_var, <double*>_p_m, <double*>_p_v, <const double*>_p_grad, n, nt,
                      <double>beta1_power, <double>beta2_power, <double>lr, <double>beta1, <double>beta2,
                      <double>epsilon, use_nesterov)
    _restore_gil(ts)
    return var


# ---------------------------------------------------------------------------------------
# AdamWithAmsgrad  (dense only: TF has no sparse form)
# TF: Adam's alpha, m and v; vhat = vhat.cwiseMax(v); var -= (m * alpha) / (vhat.sqrt() +
#   epsilon())

cdef inline void _adam_with_amsgrad_at(Py_ssize_t i, floating* var, floating* m, floating* v, floating* vhat,
                                       const floating* grad, floating alpha, floating one_m_beta1,
                                       floating one_m_beta2, floating epsilon) noexcept nogil:
    cdef floating g, mi, vi, vh
    g = grad[i]
    mi = m[i] + (g - m[i]) * one_m_beta1
    m[i] = mi
    vi = v[i] + (g * g - v[i]) * one_m_beta2
    v[i] = vi
    vh = _max_nan(vhat[i], vi)
    vhat[i] = vh
    var[i] = var[i] - mi * alpha / (_sqrt(vh) + epsilon)


cdef void _adam_with_amsgrad(floating* var, floating* m, floating* v, floating* vhat, const floating* grad,
                             Py_ssize_t n, int nt, floating beta1_power, floating beta2_power, floating lr,
                             floating beta1, floating beta2, floating epsilon) noexcept nogil:
    cdef floating alpha = lr * _sqrt(<floating>1 - beta2_power) / (<floating>1 - beta1_power)
    cdef floating one_m_beta1 = <floating>1 - beta1
    cdef floating one_m_beta2 = <floating>1 - beta2
    cdef Py_ssize_t i, t
    cdef Py_ssize_t h = _head(n, var)
    for i in range(h):  # up to var's first cache-line boundary: the loops below start aligned
        _adam_with_amsgrad_at(i, var, m, v, vhat, grad, alpha, one_m_beta1, one_m_beta2, epsilon)
    if nt > 1:
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(_span(t, nt, n, var), _span(t + 1, nt, n, var)):
                _adam_with_amsgrad_at(i, var, m, v, vhat, grad, alpha, one_m_beta1, one_m_beta2, epsilon)
    else:
        for i in range(h, n):
            _adam_with_amsgrad_at(i, var, m, v, vhat, grad, alpha, one_m_beta1, one_m_beta2, epsilon)


def tf_apply_adam_with_amsgrad(var, m, v, vhat, grad, double beta1_power, double beta2_power, double lr,
                               double beta1, double beta2, double epsilon):
    """TF's ApplyAdamWithAmsgrad (CPU).  Returns var."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>var)
    if n == 0:
        return var
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_m = _ptr(m)
    cdef void* _p_v = _ptr(v)
    cdef void* _p_vhat = _ptr(vhat)
    cdef void* _p_grad = _ptr(grad)
    _as_checked(var, n, var)
    _as_checked(var, n, m)
    _as_checked(var, n, v)
    _as_checked(var, n, vhat)
    _as_checked(var, n, grad)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _adam_with_amsgrad[float](<float*>_p_var, <float*>_p_m, <float*>_p_v, <float*>_p_vhat,
                                  <const float*>_p_grad, n, nt, <float>beta1_power, <float>beta2_power,
                                  <float>lr, <float>beta1, <float>beta2, <float>epsilon)
    else:
        _adam_with_amsgrad[double](<double*>_p_var, <double*>_p_m, <double*>_p_v, <double*>_p_vhat,
                                   <const double*>_p_grad, n, nt, <double>beta1_power, <double>beta2_power,
                                   <double>lr, <double>beta1, <double>beta2, <double>epsilon)
    _restore_gil(ts)
    return var


# ---------------------------------------------------------------------------------------
# AdaMax  (dense only: TF has no sparse form)
# TF: m += (grad - m) * (1 - beta1()); v = (beta2() * v).cwiseMax(grad.abs()); var -= lr() / (1
#   - beta1_power()) * (m / (v + epsilon()))

cdef inline void _ada_max_at(Py_ssize_t i, floating* var, floating* m, floating* v, const floating* grad,
                             floating lr_t, floating one_m_beta1, floating beta2,
                             floating epsilon) noexcept nogil:
    cdef floating g, mi, vi
    g = grad[i]
    mi = m[i] + (g - m[i]) * one_m_beta1
    m[i] = mi
    vi = _max_nan(beta2 * v[i], _fabs(g))
    v[i] = vi
    var[i] = var[i] - lr_t * (mi / (vi + epsilon))


cdef void _ada_max(floating* var, floating* m, floating* v, const floating* grad, Py_ssize_t n, int nt,
                   floating beta1_power, floating lr, floating beta1, floating beta2,
                   floating epsilon) noexcept nogil:
    cdef floating one_m_beta1 = <floating>1 - beta1
    cdef floating lr_t = lr / (<floating>1 - beta1_power)
    cdef Py_ssize_t i, t
    cdef Py_ssize_t h = _head(n, var)
    for i in range(h):  # up to var's first cache-line boundary: the loops below start aligned
        _ada_max_at(i, var, m, v, grad, lr_t, one_m_beta1, beta2, epsilon)
    if nt > 1:
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(_span(t, nt, n, var), _span(t + 1, nt, n, var)):
                _ada_max_at(i, var, m, v, grad, lr_t, one_m_beta1, beta2, epsilon)
    else:
        for i in range(h, n):
            _ada_max_at(i, var, m, v, grad, lr_t, one_m_beta1, beta2, epsilon)


def tf_apply_ada_max(var, m, v, grad, double beta1_power, double lr, double beta1, double beta2,
                     double epsilon):
    """TF's ApplyAdaMax (CPU).  Returns var."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>var)
    if n == 0:
        return var
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_m = _ptr(m)
    cdef void* _p_v = _ptr(v)
    cdef void* _p_grad = _ptr(grad)
    _as_checked(var, n, var)
    _as_checked(var, n, m)
    _as_checked(var, n, v)
    _as_checked(var, n, grad)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _ada_max[float](<float*>_p_var, <float*>_p_m, <float*>_p_v, <const float*>_p_grad, n, nt,
                        <float>beta1_power, <float>lr, <float>beta1, <float>beta2, <float>epsilon)
    else:
        _ada_max[double](<double*>_p_var, <double*>_p_m, <double*>_p_v, <const double*>_p_grad, n, nt,
                         <double>beta1_power, <double>lr, <double>beta1, <double>beta2, <double>epsilon)
    _restore_gil(ts)
    return var


# ---------------------------------------------------------------------------------------
# RMSProp
# TF: ms += (grad.square() - ms) * (1 - rho()); mom = mom * momentum() + (grad * lr()) / (ms +
#   epsilon()).sqrt(); var -= mom
# Sparse: TF's sparse op computes ms * rho + g^2 * (1 - rho) and rsqrt(ms + eps) * lr * g: the
#   dense functor's expression is used

cdef inline void _rms_prop_at(Py_ssize_t i, floating* var, floating* ms, floating* mom, const floating* grad,
                              floating lr, floating one_m_rho, floating momentum,
                              floating epsilon) noexcept nogil:
    cdef floating g, msi, mo
    g = grad[i]
    msi = ms[i] + (g * g - ms[i]) * one_m_rho
    ms[i] = msi
    mo = mom[i] * momentum + g * lr / _sqrt(msi + epsilon)
    mom[i] = mo
    var[i] = var[i] - mo


cdef void _rms_prop(floating* var, floating* ms, floating* mom, const floating* grad, Py_ssize_t n, int nt,
                    floating lr, floating rho, floating momentum, floating epsilon) noexcept nogil:
    cdef floating one_m_rho = <floating>1 - rho
    cdef Py_ssize_t i, t
    cdef Py_ssize_t h = _head(n, var)
    for i in range(h):  # up to var's first cache-line boundary: the loops below start aligned
        _rms_prop_at(i, var, ms, mom, grad, lr, one_m_rho, momentum, epsilon)
    if nt > 1:
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(_span(t, nt, n, var), _span(t + 1, nt, n, var)):
                _rms_prop_at(i, var, ms, mom, grad, lr, one_m_rho, momentum, epsilon)
    else:
        for i in range(h, n):
            _rms_prop_at(i, var, ms, mom, grad, lr, one_m_rho, momentum, epsilon)


def tf_apply_rms_prop(var, ms, mom, grad, double lr, double rho, double momentum, double epsilon):
    """TF's ApplyRMSProp (CPU).  Returns var."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>var)
    if n == 0:
        return var
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_ms = _ptr(ms)
    cdef void* _p_mom = _ptr(mom)
    cdef void* _p_grad = _ptr(grad)
    _as_checked(var, n, var)
    _as_checked(var, n, ms)
    _as_checked(var, n, mom)
    _as_checked(var, n, grad)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _rms_prop[float](<float*>_p_var, <float*>_p_ms, <float*>_p_mom, <const float*>_p_grad, n, nt,
                         <float>lr, <float>rho, <float>momentum, <float>epsilon)
    else:
        _rms_prop[double](<double*>_p_var, <double*>_p_ms, <double*>_p_mom, <const double*>_p_grad, n, nt,
                          <double>lr, <double>rho, <double>momentum, <double>epsilon)
    _restore_gil(ts)
    return var


cdef inline void _rms_prop_row(floating* var, floating* ms, floating* mom, const floating* grad,
                               Py_ssize_t inner, floating lr, floating one_m_rho, floating momentum,
                               floating epsilon) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(inner):
        _rms_prop_at(j, var, ms, mom, grad, lr, one_m_rho, momentum, epsilon)


cdef void _sparse_rms_prop(floating* var, floating* ms, floating* mom, const floating* grad,
                           const int64_t* indices, Py_ssize_t N, Py_ssize_t inner, int nt, floating lr,
                           floating rho, floating momentum, floating epsilon) noexcept nogil:
    cdef floating one_m_rho = <floating>1 - rho
    cdef Py_ssize_t i, t, r
    if nt > 1:  # thread t owns the rows r with r % nt == t and steps them in the order of indices
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(N):
                r = indices[i]
                if r % nt == t:
                    _rms_prop_row(var + r * inner, ms + r * inner, mom + r * inner, grad + i * inner, inner,
                                  lr, one_m_rho, momentum, epsilon)
    else:
        for i in range(N):
            r = indices[i]
            _rms_prop_row(var + r * inner, ms + r * inner, mom + r * inner, grad + i * inner, inner, lr,
                          one_m_rho, momentum, epsilon)


def tf_sparse_apply_rms_prop(var, ms, mom, grad, indices, double lr, double rho, double momentum,
                             double epsilon):
    """TF's SparseApplyRMSProp (CPU).  Returns var."""
    cdef Py_ssize_t N = _dim(indices, 0)
    if N == 0:
        return var
    cdef Py_ssize_t inner = _dim(grad, 1)
    cdef Py_ssize_t n = N * inner
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_ms = _ptr(ms)
    cdef void* _p_mom = _ptr(mom)
    cdef void* _p_grad = _ptr(grad)
    cdef const int64_t* _p_indices = <const int64_t*>_ptr(indices)
    _as_checked(var, _dim(var, 0) * inner, var)
    _as_checked(var, _dim(var, 0) * inner, ms)
    _as_checked(var, _dim(var, 0) * inner, mom)
    _as_checked(var, n, grad)
    _indices_checked(var, indices, N)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _sparse_rms_prop[float](<float*>_p_var, <float*>_p_ms, <float*>_p_mom, <const float*>_p_grad,
                                _p_indices, N, inner, nt, <float>lr, <float>rho, <float>momentum,
                                <float>epsilon)
    else:
        _sparse_rms_prop[double](<double*>_p_var, <double*>_p_ms, <double*>_p_mom, <const double*>_p_grad,
                                 _p_indices, N, inner, nt, <double>lr, <double>rho, <double>momentum,
                                 <double>epsilon)
    _restore_gil(ts)
    return var


# ---------------------------------------------------------------------------------------
# CenteredRMSProp
# TF: ms += (grad.square() - ms) * (1 - rho()); mg += (grad - mg) * (1 - rho()); denom = (ms -
#   mg.square()) + epsilon(); mom = mom * momentum() + (grad * lr()) / denom.sqrt(); var -= mom
# Sparse: TF's sparse op computes ms * rho + ..., mg * rho + ..., (ms + eps) - mg^2 and
#   rsqrt(denom) * lr * g: the dense functor's expression is used

cdef inline void _centered_rms_prop_at(Py_ssize_t i, floating* var, floating* mg, floating* ms, floating* mom,
                                       const floating* grad, floating lr, floating one_m_rho,
                                       floating momentum, floating epsilon) noexcept nogil:
    cdef floating g, msi, mgi, mo
    g = grad[i]
    msi = ms[i] + (g * g - ms[i]) * one_m_rho
    ms[i] = msi
    mgi = mg[i] + (g - mg[i]) * one_m_rho
    mg[i] = mgi
    mo = mom[i] * momentum + g * lr / _sqrt(msi - mgi * mgi + epsilon)
    mom[i] = mo
    var[i] = var[i] - mo


cdef void _centered_rms_prop(floating* var, floating* mg, floating* ms, floating* mom, const floating* grad,
                             Py_ssize_t n, int nt, floating lr, floating rho, floating momentum,
                             floating epsilon) noexcept nogil:
    cdef floating one_m_rho = <floating>1 - rho
    cdef Py_ssize_t i, t
    cdef Py_ssize_t h = _head(n, var)
    for i in range(h):  # up to var's first cache-line boundary: the loops below start aligned
        _centered_rms_prop_at(i, var, mg, ms, mom, grad, lr, one_m_rho, momentum, epsilon)
    if nt > 1:
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(_span(t, nt, n, var), _span(t + 1, nt, n, var)):
                _centered_rms_prop_at(i, var, mg, ms, mom, grad, lr, one_m_rho, momentum, epsilon)
    else:
        for i in range(h, n):
            _centered_rms_prop_at(i, var, mg, ms, mom, grad, lr, one_m_rho, momentum, epsilon)


def tf_apply_centered_rms_prop(var, mg, ms, mom, grad, double lr, double rho, double momentum,
                               double epsilon):
    """TF's ApplyCenteredRMSProp (CPU).  Returns var."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>var)
    if n == 0:
        return var
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_mg = _ptr(mg)
    cdef void* _p_ms = _ptr(ms)
    cdef void* _p_mom = _ptr(mom)
    cdef void* _p_grad = _ptr(grad)
    _as_checked(var, n, var)
    _as_checked(var, n, mg)
    _as_checked(var, n, ms)
    _as_checked(var, n, mom)
    _as_checked(var, n, grad)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _centered_rms_prop[float](<float*>_p_var, <float*>_p_mg, <float*>_p_ms, <float*>_p_mom,
                                  <const float*>_p_grad, n, nt, <float>lr, <float>rho, <float>momentum,
                                  <float>epsilon)
    else:
        _centered_rms_prop[double](<double*>_p_var, <double*>_p_mg, <double*>_p_ms, <double*>_p_mom,
                                   <const double*>_p_grad, n, nt, <double>lr, <double>rho, <double>momentum,
                                   <double>epsilon)
    _restore_gil(ts)
    return var


cdef inline void _centered_rms_prop_row(floating* var, floating* mg, floating* ms, floating* mom,
                                        const floating* grad, Py_ssize_t inner, floating lr,
                                        floating one_m_rho, floating momentum,
                                        floating epsilon) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(inner):
        _centered_rms_prop_at(j, var, mg, ms, mom, grad, lr, one_m_rho, momentum, epsilon)


cdef void _sparse_centered_rms_prop(floating* var, floating* mg, floating* ms, floating* mom,
                                    const floating* grad, const int64_t* indices, Py_ssize_t N,
                                    Py_ssize_t inner, int nt, floating lr, floating rho, floating momentum,
                                    floating epsilon) noexcept nogil:
    cdef floating one_m_rho = <floating>1 - rho
    cdef Py_ssize_t i, t, r
    if nt > 1:  # thread t owns the rows r with r % nt == t and steps them in the order of indices
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(N):
                r = indices[i]
                if r % nt == t:
                    _centered_rms_prop_row(var + r * inner, mg + r * inner, ms + r * inner, mom + r * inner,
                                           grad + i * inner, inner, lr, one_m_rho, momentum, epsilon)
    else:
        for i in range(N):
            r = indices[i]
            _centered_rms_prop_row(var + r * inner, mg + r * inner, ms + r * inner, mom + r * inner,
                                   grad + i * inner, inner, lr, one_m_rho, momentum, epsilon)


def tf_sparse_apply_centered_rms_prop(var, mg, ms, mom, grad, indices, double lr, double rho, double momentum,
                                      double epsilon):
    """TF's SparseApplyCenteredRMSProp (CPU).  Returns var."""
    cdef Py_ssize_t N = _dim(indices, 0)
    if N == 0:
        return var
    cdef Py_ssize_t inner = _dim(grad, 1)
    cdef Py_ssize_t n = N * inner
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_mg = _ptr(mg)
    cdef void* _p_ms = _ptr(ms)
    cdef void* _p_mom = _ptr(mom)
    cdef void* _p_grad = _ptr(grad)
    cdef const int64_t* _p_indices = <const int64_t*>_ptr(indices)
    _as_checked(var, _dim(var, 0) * inner, var)
    _as_checked(var, _dim(var, 0) * inner, mg)
    _as_checked(var, _dim(var, 0) * inner, ms)
    _as_checked(var, _dim(var, 0) * inner, mom)
    _as_checked(var, n, grad)
    _indices_checked(var, indices, N)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _sparse_centered_rms_prop[float](<float*>_p_var, <float*>_p_mg, <float*>_p_ms, <float*>_p_mom,
                                         <const float*>_p_grad, _p_indices, N, inner, nt, <float>lr,
                                         <float>rho, <float>momentum, <float>epsilon)
    else:
        _sparse_centered_rms_prop[double](<double*>_p_var, <double*>_p_mg, <double*>_p_ms, <double*>_p_mom,
                                          <const double*>_p_grad, _p_indices, N, inner, nt, <double>lr,
                                          <double>rho, <double>momentum, <double>epsilon)
    _restore_gil(ts)
    return var


# ---------------------------------------------------------------------------------------
# AddSign  (dense only: TF has no sparse form)
# TF: m = m * beta() + grad * (1 - beta()); sign_gm = grad.sign() * m.sign(); var -= lr() *
#   (alpha() + sign_decay() * sign_gm) * grad

cdef inline void _add_sign_at(Py_ssize_t i, floating* var, floating* m, const floating* grad, floating lr,
                              floating alpha, floating sign_decay, floating beta,
                              floating one_m_beta) noexcept nogil:
    cdef floating g, mi, sign_gm
    g = grad[i]
    mi = m[i] * beta + g * one_m_beta
    m[i] = mi
    sign_gm = _sign(g) * _sign(mi)
    var[i] = var[i] - lr * (alpha + sign_decay * sign_gm) * g


cdef void _add_sign(floating* var, floating* m, const floating* grad, Py_ssize_t n, int nt, floating lr,
                    floating alpha, floating sign_decay, floating beta) noexcept nogil:
    cdef floating one_m_beta = <floating>1 - beta
    cdef Py_ssize_t i, t
    cdef Py_ssize_t h = _head(n, var)
    for i in range(h):  # up to var's first cache-line boundary: the loops below start aligned
        _add_sign_at(i, var, m, grad, lr, alpha, sign_decay, beta, one_m_beta)
    if nt > 1:
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(_span(t, nt, n, var), _span(t + 1, nt, n, var)):
                _add_sign_at(i, var, m, grad, lr, alpha, sign_decay, beta, one_m_beta)
    else:
        for i in range(h, n):
            _add_sign_at(i, var, m, grad, lr, alpha, sign_decay, beta, one_m_beta)


def tf_apply_add_sign(var, m, grad, double lr, double alpha, double sign_decay, double beta):
    """TF's ApplyAddSign (CPU).  Returns var."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>var)
    if n == 0:
        return var
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_m = _ptr(m)
    cdef void* _p_grad = _ptr(grad)
    _as_checked(var, n, var)
    _as_checked(var, n, m)
    _as_checked(var, n, grad)
    cdef bint f32 = _f32(var)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _add_sign[float](<float*>_p_var, <float*>_p_m, <const float*>_p_grad, n, nt, <float>lr, <float>alpha,
                         <float>sign_decay, <float>beta)
    else:
        _add_sign[double](<double*>_p_var, <double*>_p_m, <const double*>_p_grad, n, nt, <double>lr,
                          <double>alpha, <double>sign_decay, <double>beta)
    _restore_gil(ts)
    return var


# ---------------------------------------------------------------------------------------
# PowerSign  (dense only: TF has no sparse form)
# TF: m = m * beta() + grad * (1 - beta()); sign_gm = grad.sign() * m.sign(); grad_scale =
#   (logbase() * sign_decay() * sign_gm).exp(); var -= lr() * grad_scale * grad

cdef inline void _power_sign_at(Py_ssize_t i, floating* var, floating* m, const floating* grad, floating lr,
                                floating exp_pos, floating exp_neg, floating exp_zero, floating beta,
                                floating one_m_beta) noexcept nogil:
    cdef floating g, mi, sign_gm, grad_scale
    g = grad[i]
    mi = m[i] * beta + g * one_m_beta
    m[i] = mi
    sign_gm = _sign(g) * _sign(mi)
    # exp(logbase_sign_decay * sign_gm): sign_gm is -1, 0, 1 or NaN, so the exp is one of three
    # values computed once per call (the same expf/exp of the same arguments: bit-identical)
    grad_scale = _by_sign(sign_gm, exp_pos, exp_neg, exp_zero)
    var[i] = var[i] - lr * grad_scale * g


cdef void _power_sign(floating* var, floating* m, const floating* grad, Py_ssize_t n, int nt, floating lr,
                      floating exp_pos, floating exp_neg, floating exp_zero, floating beta) noexcept nogil:
    cdef floating one_m_beta = <floating>1 - beta
    cdef Py_ssize_t i, t
    cdef Py_ssize_t h = _head(n, var)
    for i in range(h):  # up to var's first cache-line boundary: the loops below start aligned
        _power_sign_at(i, var, m, grad, lr, exp_pos, exp_neg, exp_zero, beta, one_m_beta)
    if nt > 1:
        for t in prange(nt, schedule="static", num_threads=nt):
            for i in range(_span(t, nt, n, var), _span(t + 1, nt, n, var)):
                _power_sign_at(i, var, m, grad, lr, exp_pos, exp_neg, exp_zero, beta, one_m_beta)
    else:
        for i in range(h, n):
            _power_sign_at(i, var, m, grad, lr, exp_pos, exp_neg, exp_zero, beta, one_m_beta)


def tf_apply_power_sign(var, m, grad, double lr, double logbase, double sign_decay, double beta):
    """TF's ApplyPowerSign (CPU).  Returns var.  The exp's three values (sign_gm is -1, 0 or 1)
    come from the spec, fastgd.reference.tf.power_sign_scales (libm's exp in double, rounded
    once), as in every backend."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>var)
    if n == 0:
        return var
    cdef bint f32 = _f32(var)
    _ls, e_pos, e_neg, e_zero = power_sign_scales(np.float32 if f32 else np.float64, logbase, sign_decay)
    cdef double ep = e_pos, en = e_neg, ez = e_zero
    # (after the Python call above: from here to the loop no other Python code runs)
    _as_checked(var, n, var)
    _as_checked(var, n, m)
    _as_checked(var, n, grad)
    if _f32(var) != f32:
        raise RuntimeError("var changed after fastgd.tf checked it (by another thread?); nothing was written")
    cdef int nt = threads_for(n)
    cdef void* _p_var = _ptr(var)
    cdef void* _p_m = _ptr(m)
    cdef void* _p_grad = _ptr(grad)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _power_sign[float](<float*>_p_var, <float*>_p_m, <const float*>_p_grad, n, nt, <float>lr,
                           <float>ep, <float>en, <float>ez, <float>beta)
    else:
        _power_sign[double](<double*>_p_var, <double*>_p_m, <const double*>_p_grad, n, nt, <double>lr,
                            ep, en, ez, <double>beta)
    _restore_gil(ts)
    return var
