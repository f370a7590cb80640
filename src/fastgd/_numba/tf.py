"""TensorFlow's training ops (fastgd.tf) as numba kernels: the names, signatures and order of
operations of the contract shared with fastgd/reference/tf.py (the spec) and the Cython
kernels; the formulas are TF's CPU functors (training_ops.cc) translated literally.

Layout:
  _<op>(...)              the per-element formula of a rule, written once and inlined into
                          its dense and its sparse loop (the sparse op updates each selected
                          row with the dense op's formula); returns the new values.
  _<op>_body(...)         the dense loop over the flat 1-D arrays, with ``prange``.
  _sparse_<op>_body(...)  the sparse loop: ``for t in prange(nt)``, thread t walks every i in
                          order and updates row indices[i] iff indices[i] % nt == t (each row
                          has one owner, so duplicate indices are applied in order, as TF's
                          serial CPU loop does); the serial variant runs it with nt == 1 (and
                          no modulo).
  tf_[sparse_]apply_<op>  the wrapper: casts every scalar to the arrays' dtype T first, computes
                          the scalar-only sub-expressions once, in T, in TF's order, and calls
                          the serial or the parallel variant.

Every scalar reaching a loop is of type T (a Python float or an int literal would promote a
float32 loop to float64): ``one``/``zero``/``neg_one`` are passed in.  sqrt is correctly
rounded (sqrtf/sqrt), so the kernels without pow/exp match NumPy bit for bit (a NaN's sign
aside); pow (FTRL with lr_power != -0.5) and exp (PowerSign) are libm's pow/powf/exp/expf
(LLVM intrinsics, numba has no SVML here), which differ from NumPy's SIMD implementations on
AVX-512 machines by 1 ulp (2 for float32 exp) on a fraction of the inputs.
"""
import functools
import math

import numpy as np
from numba import njit, prange

from .._rules import TF_KERNELS, TF_OPS
from ..backends import threads_for
from ..reference.tf import power_sign_scales
from .rules import FASTMATH, _compile, _max_nan, _sign, _variant, _views

# the kernel names of the table (fastgd._rules.TF_OPS), in its order
__all__ = list(TF_KERNELS)


def _elem(f):
    """A per-element formula: inlined into the loops, IEEE division (no ZeroDivisionError)."""
    return njit(f, inline="always", fastmath=FASTMATH, error_model="numpy", nogil=True)


_ARRAYS = {op.kernel: (len(op.arrays), op.sparse) for op in TF_OPS.values()}
_I64 = np.dtype(np.int64)
_TF_CHANGED = ("an array of this call changed after fastgd.tf checked it (by another thread?); nothing was "
               "written")  # (the Cython ops' words)


def _tf_views(args, n_arrays, sparse):
    """The re-check of the Cython ops' ``_as_checked``/``_indices_checked``, for numba (see
    fastgd._numba.rules._views): the op's arrays, the first ``n_arrays`` positional arguments
    (var, the slots, grad; then indices for a sparse op), replaced by views of their own and
    checked there.  var's dtype (native float32/float64) for every float array, writeable but
    grad; dense: var's size (the dispatcher passes flat arrays); sparse: var and the slots
    2-D of var's shape, grad (N, var's columns), indices int64 of N entries, each a row of
    var (a numba loop indexes ``var[indices[i], j]`` with no bounds check).  RuntimeError,
    nothing written, otherwise."""
    if len(args) < n_arrays + sparse:
        raise TypeError("fastgd._numba.tf kernels take their arrays positionally")
    views = _views(args[:n_arrays], read_only=n_arrays - 1, same_size=not sparse, msg=_TF_CHANGED)
    if any(v is None for v in views):  # (every array of a TF op is required)
        raise RuntimeError(_TF_CHANGED)
    if sparse:
        idx = args[n_arrays]
        if type(idx) is not np.ndarray:
            raise RuntimeError(_TF_CHANGED)
        idx = idx.view()
        var, grad = views[0], views[-1]
        if (idx.dtype != _I64 or idx.ndim != 1 or not idx.flags.c_contiguous or var.ndim != 2
                or any(v.shape != var.shape for v in views[1:-1])
                or grad.shape != (idx.shape[0], var.shape[1])):
            raise RuntimeError(_TF_CHANGED)
        if idx.shape[0] and (idx.min() < 0 or idx.max() >= var.shape[0]):
            raise RuntimeError("an index is not a row of var any more: an array changed after fastgd.tf "
                               "checked it (by another thread?); nothing was written")
        views.append(idx)
    return tuple(views)


def _ieee(wrapper):
    """The scalar prologue under IEEE arithmetic whatever the caller's numpy error state (a
    hyperparameter product may overflow, 1 - beta1_power may be 0): inf/NaN, never a warning or
    an exception, as in TF's C++ and the reference.  The arrays first: re-checked on views of
    their own (_tf_views)."""
    n_arrays, sparse = _ARRAYS[wrapper.__name__]

    @functools.wraps(wrapper)
    def run(*args, **kwargs):
        views = _tf_views(args, n_arrays, sparse)
        with np.errstate(all="ignore"):
            out = wrapper(*views, *args[n_arrays + sparse:], **kwargs)
        return args[0] if out is views[0] else out  # var itself, not its view
    return run


def _sparse_threads(grad):
    """The thread count of a sparse call: threads_for(N * inner)."""
    return threads_for(grad.shape[0] * grad.shape[1])


def _sparse_call(kernel, nt):
    return kernel[1] if nt > 1 else kernel[0]


# ---------------------------------------------------------------------------------------
# per-element formulas (shared by the dense and the sparse op of a rule)

@_elem
def _proximal_gd(v, g, lr, has_l1, lr_l1, denom, zero, one):
    # prox_var -= grad * lr;  l1 > 0: sign(prox) * max(|prox| - lr*l1, 0) / (1 + l2*lr)
    prox = v - g * lr
    if has_l1:
        return _sign(prox, one) * _max_nan(abs(prox) - lr_l1, zero) / denom
    return prox / denom


@_elem
def _adadelta(v, a, au, g, lr, rho, omr, eps, one):
    a = a * rho + (g * g) * omr
    update = math.sqrt(au + eps) * (one / math.sqrt(a + eps)) * g  # update: new accum, old accum_update
    v = v - update * lr
    au = au * rho + (update * update) * omr
    return v, a, au


@_elem
def _adagrad(v, a, g, lr, update_slots, one):
    if update_slots:
        a = a + g * g
    v = v - g * lr * (one / math.sqrt(a))
    return v, a


@_elem
def _adagrad_v2(v, a, g, lr, eps, update_slots):
    if update_slots:
        a = a + g * g
    v = v - g * lr / (math.sqrt(a) + eps)
    return v, a


@_elem
def _proximal_adagrad(v, a, g, lr, has_l1, l1, l2, zero, one):
    a = a + g * g
    learning_rate = lr * (one / math.sqrt(a))
    prox = v - g * learning_rate
    if has_l1:
        v = _sign(prox, one) * _max_nan(abs(prox) - learning_rate * l1, zero) / (one + l2 * learning_rate)
    else:
        v = prox / (one + l2 * learning_rate)
    return v, a


@_elem
def _adagrad_da(v, ga, gsa, g, lr, has_l1, neg_lr, gs_l1, l2_gs_lr, zero, one, neg_one):
    ga = ga + g
    gsa = gsa + g * g
    denom = l2_gs_lr + math.sqrt(gsa)
    if has_l1:
        # lr * (-1) * sign(ga) * max(|ga| - gs*l1, 0) / (l2 * (gs*lr) + sqrt(gsa))
        v = neg_lr * _sign(ga, one) * _max_nan(abs(ga) - gs_l1, zero) / denom
    else:
        v = lr * ga * neg_one / denom
    return v, ga, gsa


@_elem
def _ftrl(v, a, lin, g, lr, use_sqrt, neg_lr_power, shrink, two_l2_shrinkage, mult, threshold, two_l2,
          zero, one):
    """FTRL / FTRL-V2 (shrink) and their MultiplyLinearByLr functors (mult).  threshold: l1, or
    l1*lr (mult); two_l2: 2*l2, or 2*l2*lr (mult).  new_accum reads the OLD accum, linear the old
    var; accum is updated last."""
    if shrink:
        gs = g + two_l2_shrinkage * v
    else:
        gs = g
    new_accum = a + g * g
    if use_sqrt:
        p_new = math.sqrt(new_accum)
        p_old = math.sqrt(a)
    else:
        p_new = new_accum ** neg_lr_power
        p_old = a ** neg_lr_power
    if mult:
        lin = lin + (gs * lr - (p_new - p_old) * v)
        y = p_new + two_l2
    else:
        lin = lin + (gs - (p_new - p_old) / lr * v)
        y = p_new / lr + two_l2
    x = threshold * _sign(lin, one) - lin
    if abs(lin) > threshold:
        v = x / y
    else:
        v = zero
    a = a + g * g
    return v, a, lin


@_elem
def _momentum(v, a, g, lr, momentum, nesterov):
    a = a * momentum + g
    if nesterov:
        v = v - (g * lr + a * momentum * lr)
    else:
        v = v - a * lr
    return v, a


@_elem
def _keras_momentum(v, a, g, lr, momentum, nesterov):
    a = a * momentum - g * lr
    if nesterov:
        v = v + (a * momentum - g * lr)
    else:
        v = v + a
    return v, a


@_elem
def _rms_prop(v, ms, mom, g, lr, omr, momentum, eps):
    ms = ms + (g * g - ms) * omr
    mom = mom * momentum + (g * lr) / math.sqrt(ms + eps)
    v = v - mom
    return v, ms, mom


@_elem
def _centered_rms_prop(v, mg, ms, mom, g, lr, omr, momentum, eps):
    ms = ms + (g * g - ms) * omr
    mg = mg + (g - mg) * omr
    denom = (ms - mg * mg) + eps
    mom = mom * momentum + (g * lr) / math.sqrt(denom)
    v = v - mom
    return v, mg, ms, mom


# ---------------------------------------------------------------------------------------
# dense loops

def _gradient_descent_body(var, delta, alpha):
    for i in prange(var.size):
        var[i] = var[i] - delta[i] * alpha


def _proximal_gd_body(var, delta, lr, has_l1, lr_l1, denom, zero, one):
    for i in prange(var.size):
        var[i] = _proximal_gd(var[i], delta[i], lr, has_l1, lr_l1, denom, zero, one)


def _adadelta_body(var, accum, accum_update, grad, lr, rho, omr, eps, one):
    for i in prange(var.size):
        v, a, au = _adadelta(var[i], accum[i], accum_update[i], grad[i], lr, rho, omr, eps, one)
        var[i] = v
        accum[i] = a
        accum_update[i] = au


def _adagrad_body(var, accum, grad, lr, update_slots, one):
    for i in prange(var.size):
        v, a = _adagrad(var[i], accum[i], grad[i], lr, update_slots, one)
        var[i] = v
        accum[i] = a


def _adagrad_v2_body(var, accum, grad, lr, eps, update_slots):
    for i in prange(var.size):
        v, a = _adagrad_v2(var[i], accum[i], grad[i], lr, eps, update_slots)
        var[i] = v
        accum[i] = a


def _proximal_adagrad_body(var, accum, grad, lr, has_l1, l1, l2, zero, one):
    for i in prange(var.size):
        v, a = _proximal_adagrad(var[i], accum[i], grad[i], lr, has_l1, l1, l2, zero, one)
        var[i] = v
        accum[i] = a


def _adagrad_da_body(var, ga, gsa, grad, lr, has_l1, neg_lr, gs_l1, l2_gs_lr, zero, one, neg_one):
    for i in prange(var.size):
        v, a, s = _adagrad_da(var[i], ga[i], gsa[i], grad[i], lr, has_l1, neg_lr, gs_l1, l2_gs_lr, zero, one,
                              neg_one)
        var[i] = v
        ga[i] = a
        gsa[i] = s


def _ftrl_body(var, accum, linear, grad, lr, use_sqrt, neg_lr_power, shrink, two_l2_shrinkage, mult,
               threshold, two_l2, zero, one):
    for i in prange(var.size):
        v, a, lin = _ftrl(var[i], accum[i], linear[i], grad[i], lr, use_sqrt, neg_lr_power, shrink,
                          two_l2_shrinkage, mult, threshold, two_l2, zero, one)
        var[i] = v
        accum[i] = a
        linear[i] = lin


def _momentum_body(var, accum, grad, lr, momentum, nesterov):
    for i in prange(var.size):
        v, a = _momentum(var[i], accum[i], grad[i], lr, momentum, nesterov)
        var[i] = v
        accum[i] = a


def _keras_momentum_body(var, accum, grad, lr, momentum, nesterov):
    for i in prange(var.size):
        v, a = _keras_momentum(var[i], accum[i], grad[i], lr, momentum, nesterov)
        var[i] = v
        accum[i] = a


def _adam_body(var, m, v, grad, alpha, beta1, omb1, omb2, eps, nesterov):
    # ApplyAdamNonCuda: m += (g - m)*(1-b1); v += (g^2 - v)*(1-b2); var -= ... / (sqrt(v) + eps)
    for i in prange(var.size):
        g = grad[i]
        mi = m[i] + (g - m[i]) * omb1
        vi = v[i] + (g * g - v[i]) * omb2
        m[i] = mi
        v[i] = vi
        if nesterov:
            var[i] = var[i] - (g * omb1 + beta1 * mi) * alpha / (math.sqrt(vi) + eps)
        else:
            var[i] = var[i] - mi * alpha / (math.sqrt(vi) + eps)


def _adam_with_amsgrad_body(var, m, v, vhat, grad, alpha, omb1, omb2, eps):
    for i in prange(var.size):
        g = grad[i]
        mi = m[i] + (g - m[i]) * omb1
        vi = v[i] + (g * g - v[i]) * omb2
        hi = _max_nan(vhat[i], vi)
        m[i] = mi
        v[i] = vi
        vhat[i] = hi
        var[i] = var[i] - mi * alpha / (math.sqrt(hi) + eps)


def _ada_max_body(var, m, v, grad, step, omb1, beta2, eps):
    # var -= lr / (1 - beta1_power) * (m / (v + eps)), the scalar ``step`` computed once
    for i in prange(var.size):
        g = grad[i]
        mi = m[i] + (g - m[i]) * omb1
        vi = _max_nan(beta2 * v[i], abs(g))
        m[i] = mi
        v[i] = vi
        var[i] = var[i] - step * (mi / (vi + eps))


def _rms_prop_body(var, ms, mom, grad, lr, omr, momentum, eps):
    for i in prange(var.size):
        v, s, mo = _rms_prop(var[i], ms[i], mom[i], grad[i], lr, omr, momentum, eps)
        var[i] = v
        ms[i] = s
        mom[i] = mo


def _centered_rms_prop_body(var, mg, ms, mom, grad, lr, omr, momentum, eps):
    for i in prange(var.size):
        v, gbar, s, mo = _centered_rms_prop(var[i], mg[i], ms[i], mom[i], grad[i], lr, omr, momentum, eps)
        var[i] = v
        mg[i] = gbar
        ms[i] = s
        mom[i] = mo


def _add_sign_body(var, m, grad, lr, alpha, sign_decay, beta, omb, one):
    for i in prange(var.size):
        g = grad[i]
        mi = m[i] * beta + g * omb
        m[i] = mi
        sign_gm = _sign(g, one) * _sign(mi, one)
        var[i] = var[i] - lr * (alpha + sign_decay * sign_gm) * g


def _power_sign_body(var, m, grad, lr, ls, beta, omb, zero, one, e_pos, e_neg, e_zero):
    # grad_scale = exp(ls * sign_gm): sign_gm is 1, -1, +-0 or NaN, so it takes three values
    # besides NaN, computed once by fastgd.reference.tf.power_sign_scales (the spec's exps)
    for i in prange(var.size):
        g = grad[i]
        mi = m[i] * beta + g * omb
        m[i] = mi
        sign_gm = _sign(g, one) * _sign(mi, one)
        if sign_gm > zero:
            grad_scale = e_pos
        elif sign_gm < zero:
            grad_scale = e_neg
        elif sign_gm == zero:
            grad_scale = e_zero
        else:  # NaN: exp(ls * NaN) is that NaN (no call in the loop, which then vectorizes)
            grad_scale = ls * sign_gm
        var[i] = var[i] - lr * grad_scale * g


_gradient_descent_k = _compile(_gradient_descent_body)
_proximal_gd_k = _compile(_proximal_gd_body)
_adadelta_k = _compile(_adadelta_body)
_adagrad_k = _compile(_adagrad_body)
_adagrad_v2_k = _compile(_adagrad_v2_body)
_proximal_adagrad_k = _compile(_proximal_adagrad_body)
_adagrad_da_k = _compile(_adagrad_da_body)
_ftrl_k = _compile(_ftrl_body)
_momentum_k = _compile(_momentum_body)
_keras_momentum_k = _compile(_keras_momentum_body)
_adam_k = _compile(_adam_body)
_adam_with_amsgrad_k = _compile(_adam_with_amsgrad_body)
_ada_max_k = _compile(_ada_max_body)
_rms_prop_k = _compile(_rms_prop_body)
_centered_rms_prop_k = _compile(_centered_rms_prop_body)
_add_sign_k = _compile(_add_sign_body)
_power_sign_k = _compile(_power_sign_body)


# ---------------------------------------------------------------------------------------
# sparse loops (var/slots (rows, inner), grad (N, inner), indices int64 (N,))

def _sparse_proximal_gd_body(var, grad, indices, nt, lr, has_l1, lr_l1, denom, zero, one):
    n = indices.shape[0]
    inner = var.shape[1]
    for t in prange(nt):
        owner = np.int64(t)  # prange's index is unsigned: int64 == uint64 would compare as doubles
        for i in range(n):
            r = indices[i]
            if nt == 1 or r % nt == owner:
                for j in range(inner):
                    var[r, j] = _proximal_gd(var[r, j], grad[i, j], lr, has_l1, lr_l1, denom, zero, one)


def _sparse_adadelta_body(var, accum, accum_update, grad, indices, nt, lr, rho, omr, eps, one):
    n = indices.shape[0]
    inner = var.shape[1]
    for t in prange(nt):
        owner = np.int64(t)  # prange's index is unsigned: int64 == uint64 would compare as doubles
        for i in range(n):
            r = indices[i]
            if nt == 1 or r % nt == owner:
                for j in range(inner):
                    v, a, au = _adadelta(var[r, j], accum[r, j], accum_update[r, j], grad[i, j], lr, rho, omr,
                                         eps, one)
                    var[r, j] = v
                    accum[r, j] = a
                    accum_update[r, j] = au


def _sparse_adagrad_body(var, accum, grad, indices, nt, lr, update_slots, one):
    n = indices.shape[0]
    inner = var.shape[1]
    for t in prange(nt):
        owner = np.int64(t)  # prange's index is unsigned: int64 == uint64 would compare as doubles
        for i in range(n):
            r = indices[i]
            if nt == 1 or r % nt == owner:
                for j in range(inner):
                    v, a = _adagrad(var[r, j], accum[r, j], grad[i, j], lr, update_slots, one)
                    var[r, j] = v
                    accum[r, j] = a


def _sparse_adagrad_v2_body(var, accum, grad, indices, nt, lr, eps, update_slots):
    n = indices.shape[0]
    inner = var.shape[1]
    for t in prange(nt):
        owner = np.int64(t)  # prange's index is unsigned: int64 == uint64 would compare as doubles
        for i in range(n):
            r = indices[i]
            if nt == 1 or r % nt == owner:
                for j in range(inner):
                    v, a = _adagrad_v2(var[r, j], accum[r, j], grad[i, j], lr, eps, update_slots)
                    var[r, j] = v
                    accum[r, j] = a


def _sparse_proximal_adagrad_body(var, accum, grad, indices, nt, lr, has_l1, l1, l2, zero, one):
    n = indices.shape[0]
    inner = var.shape[1]
    for t in prange(nt):
        owner = np.int64(t)  # prange's index is unsigned: int64 == uint64 would compare as doubles
        for i in range(n):
            r = indices[i]
            if nt == 1 or r % nt == owner:
                for j in range(inner):
                    v, a = _proximal_adagrad(var[r, j], accum[r, j], grad[i, j], lr, has_l1, l1, l2, zero, one)
                    var[r, j] = v
                    accum[r, j] = a


def _sparse_adagrad_da_body(var, ga, gsa, grad, indices, nt, lr, has_l1, neg_lr, gs_l1, l2_gs_lr, zero, one,
                            neg_one):
    n = indices.shape[0]
    inner = var.shape[1]
    for t in prange(nt):
        owner = np.int64(t)  # prange's index is unsigned: int64 == uint64 would compare as doubles
        for i in range(n):
            r = indices[i]
            if nt == 1 or r % nt == owner:
                for j in range(inner):
                    v, a, s = _adagrad_da(var[r, j], ga[r, j], gsa[r, j], grad[i, j], lr, has_l1, neg_lr, gs_l1,
                                          l2_gs_lr, zero, one, neg_one)
                    var[r, j] = v
                    ga[r, j] = a
                    gsa[r, j] = s


def _sparse_ftrl_body(var, accum, linear, grad, indices, nt, lr, use_sqrt, neg_lr_power, shrink,
                      two_l2_shrinkage, mult, threshold, two_l2, zero, one):
    n = indices.shape[0]
    inner = var.shape[1]
    for t in prange(nt):
        owner = np.int64(t)  # prange's index is unsigned: int64 == uint64 would compare as doubles
        for i in range(n):
            r = indices[i]
            if nt == 1 or r % nt == owner:
                for j in range(inner):
                    v, a, lin = _ftrl(var[r, j], accum[r, j], linear[r, j], grad[i, j], lr, use_sqrt, neg_lr_power,
                                      shrink, two_l2_shrinkage, mult, threshold, two_l2, zero, one)
                    var[r, j] = v
                    accum[r, j] = a
                    linear[r, j] = lin


def _sparse_momentum_body(var, accum, grad, indices, nt, lr, momentum, nesterov):
    n = indices.shape[0]
    inner = var.shape[1]
    for t in prange(nt):
        owner = np.int64(t)  # prange's index is unsigned: int64 == uint64 would compare as doubles
        for i in range(n):
            r = indices[i]
            if nt == 1 or r % nt == owner:
                for j in range(inner):
                    v, a = _momentum(var[r, j], accum[r, j], grad[i, j], lr, momentum, nesterov)
                    var[r, j] = v
                    accum[r, j] = a


def _sparse_keras_momentum_body(var, accum, grad, indices, nt, lr, momentum, nesterov):
    n = indices.shape[0]
    inner = var.shape[1]
    for t in prange(nt):
        owner = np.int64(t)  # prange's index is unsigned: int64 == uint64 would compare as doubles
        for i in range(n):
            r = indices[i]
            if nt == 1 or r % nt == owner:
                for j in range(inner):
                    v, a = _keras_momentum(var[r, j], accum[r, j], grad[i, j], lr, momentum, nesterov)
                    var[r, j] = v
                    accum[r, j] = a


def _sparse_rms_prop_body(var, ms, mom, grad, indices, nt, lr, omr, momentum, eps):
    n = indices.shape[0]
    inner = var.shape[1]
    for t in prange(nt):
        owner = np.int64(t)  # prange's index is unsigned: int64 == uint64 would compare as doubles
        for i in range(n):
            r = indices[i]
            if nt == 1 or r % nt == owner:
                for j in range(inner):
                    v, s, mo = _rms_prop(var[r, j], ms[r, j], mom[r, j], grad[i, j], lr, omr, momentum, eps)
                    var[r, j] = v
                    ms[r, j] = s
                    mom[r, j] = mo


def _sparse_centered_rms_prop_body(var, mg, ms, mom, grad, indices, nt, lr, omr, momentum, eps):
    n = indices.shape[0]
    inner = var.shape[1]
    for t in prange(nt):
        owner = np.int64(t)  # prange's index is unsigned: int64 == uint64 would compare as doubles
        for i in range(n):
            r = indices[i]
            if nt == 1 or r % nt == owner:
                for j in range(inner):
                    v, gbar, s, mo = _centered_rms_prop(var[r, j], mg[r, j], ms[r, j], mom[r, j], grad[i, j], lr,
                                                        omr, momentum, eps)
                    var[r, j] = v
                    mg[r, j] = gbar
                    ms[r, j] = s
                    mom[r, j] = mo


_sparse_proximal_gd_k = _compile(_sparse_proximal_gd_body)
_sparse_adadelta_k = _compile(_sparse_adadelta_body)
_sparse_adagrad_k = _compile(_sparse_adagrad_body)
_sparse_adagrad_v2_k = _compile(_sparse_adagrad_v2_body)
_sparse_proximal_adagrad_k = _compile(_sparse_proximal_adagrad_body)
_sparse_adagrad_da_k = _compile(_sparse_adagrad_da_body)
_sparse_ftrl_k = _compile(_sparse_ftrl_body)
_sparse_momentum_k = _compile(_sparse_momentum_body)
_sparse_keras_momentum_k = _compile(_sparse_keras_momentum_body)
_sparse_rms_prop_k = _compile(_sparse_rms_prop_body)
_sparse_centered_rms_prop_k = _compile(_sparse_centered_rms_prop_body)


# ---------------------------------------------------------------------------------------
# scalar prologues (in T, TF's order), shared by the dense and the sparse wrappers

def _proximal_gd_scalars(T, alpha, l1, l2):
    lr, l1, l2 = T(alpha), T(l1), T(l2)
    # var.constant(1.0) + var.constant(l2 * lr); lr * l1
    return lr, bool(l1 > 0), lr * l1, T(1.0) + l2 * lr, T(0), T(1)


def _adagrad_da_scalars(T, lr, l1, l2, global_step):
    lr, l1, l2 = T(lr), T(l1), T(l2)
    # static_cast<float>(global_step): int64 -> float32 directly (a C cast, no double rounding)
    gs_f = np.int64(global_step).astype(np.float32)
    gs = T(gs_f)                      # var.constant(static_cast<float>(global_step)), in T
    gs_lr = T(gs_f * lr)              # static_cast<float>(global_step) * lr(): float * T, promoted
    return (lr, bool(l1 > 0), lr * T(-1.0), gs * l1, l2 * gs_lr, T(0), T(1), T(-1.0))


def _ftrl_scalars(T, lr, l1, l2, l2_shrinkage, lr_power, shrink, mult):
    lr, l1, l2, lr_power = T(lr), T(l1), T(l2), T(lr_power)
    two = T(2)
    use_sqrt = bool(lr_power == T(-0.5))
    two_l2_shrinkage = two * T(l2_shrinkage) if shrink else T(0)
    if mult:
        threshold = l1 * lr           # l1() * lr()
        two_l2 = two * l2 * lr        # static_cast<T>(2) * l2() * lr()
    else:
        threshold = l1
        two_l2 = two * l2
    return (lr, use_sqrt, -lr_power, bool(shrink), two_l2_shrinkage, bool(mult), threshold, two_l2, T(0), T(1))


# ---------------------------------------------------------------------------------------
# dense wrappers

@_ieee
def tf_apply_gradient_descent(var, delta, alpha):
    T = var.dtype.type
    _variant(_gradient_descent_k, var.size)(var, delta, T(alpha))
    return var


@_ieee
def tf_apply_proximal_gradient_descent(var, delta, alpha, l1, l2):
    T = var.dtype.type
    _variant(_proximal_gd_k, var.size)(var, delta, *_proximal_gd_scalars(T, alpha, l1, l2))
    return var


@_ieee
def tf_apply_adadelta(var, accum, accum_update, grad, lr, rho, epsilon):
    T = var.dtype.type
    rho = T(rho)
    _variant(_adadelta_k, var.size)(var, accum, accum_update, grad, T(lr), rho, T(1) - rho, T(epsilon), T(1))
    return var


@_ieee
def tf_apply_adagrad(var, accum, grad, lr, update_slots):
    T = var.dtype.type
    _variant(_adagrad_k, var.size)(var, accum, grad, T(lr), bool(update_slots), T(1))
    return var


@_ieee
def tf_apply_adagrad_v2(var, accum, grad, lr, epsilon, update_slots):
    T = var.dtype.type
    _variant(_adagrad_v2_k, var.size)(var, accum, grad, T(lr), T(epsilon), bool(update_slots))
    return var


@_ieee
def tf_apply_proximal_adagrad(var, accum, grad, lr, l1, l2):
    T = var.dtype.type
    l1 = T(l1)
    _variant(_proximal_adagrad_k, var.size)(var, accum, grad, T(lr), bool(l1 > 0), l1, T(l2), T(0), T(1))
    return var


@_ieee
def tf_apply_adagrad_da(var, gradient_accumulator, gradient_squared_accumulator, grad, lr, l1, l2, global_step):
    T = var.dtype.type
    _variant(_adagrad_da_k, var.size)(var, gradient_accumulator, gradient_squared_accumulator, grad,
                                      *_adagrad_da_scalars(T, lr, l1, l2, global_step))
    return var


@_ieee
def tf_apply_ftrl(var, accum, linear, grad, lr, l1, l2, lr_power, multiply_linear_by_lr):
    T = var.dtype.type
    _variant(_ftrl_k, var.size)(var, accum, linear, grad,
                                *_ftrl_scalars(T, lr, l1, l2, 0.0, lr_power, False, multiply_linear_by_lr))
    return var


@_ieee
def tf_apply_ftrl_v2(var, accum, linear, grad, lr, l1, l2, l2_shrinkage, lr_power, multiply_linear_by_lr):
    T = var.dtype.type
    _variant(_ftrl_k, var.size)(var, accum, linear, grad,
                                *_ftrl_scalars(T, lr, l1, l2, l2_shrinkage, lr_power, True, multiply_linear_by_lr))
    return var


@_ieee
def tf_apply_momentum(var, accum, grad, lr, momentum, use_nesterov):
    T = var.dtype.type
    _variant(_momentum_k, var.size)(var, accum, grad, T(lr), T(momentum), bool(use_nesterov))
    return var


@_ieee
def tf_apply_keras_momentum(var, accum, grad, lr, momentum, use_nesterov):
    T = var.dtype.type
    _variant(_keras_momentum_k, var.size)(var, accum, grad, T(lr), T(momentum), bool(use_nesterov))
    return var


@_ieee
def tf_apply_adam(var, m, v, grad, beta1_power, beta2_power, lr, beta1, beta2, epsilon, use_nesterov):
    T = var.dtype.type
    one = T(1)
    beta1 = T(beta1)
    alpha = T(lr) * np.sqrt(one - T(beta2_power)) / (one - T(beta1_power))
    _variant(_adam_k, var.size)(var, m, v, grad, alpha, beta1, one - beta1, one - T(beta2), T(epsilon),
                                bool(use_nesterov))
    return var


@_ieee
def tf_apply_adam_with_amsgrad(var, m, v, vhat, grad, beta1_power, beta2_power, lr, beta1, beta2, epsilon):
    T = var.dtype.type
    one = T(1)
    alpha = T(lr) * np.sqrt(one - T(beta2_power)) / (one - T(beta1_power))
    _variant(_adam_with_amsgrad_k, var.size)(var, m, v, vhat, grad, alpha, one - T(beta1), one - T(beta2),
                                             T(epsilon))
    return var


@_ieee
def tf_apply_ada_max(var, m, v, grad, beta1_power, lr, beta1, beta2, epsilon):
    T = var.dtype.type
    one = T(1)
    _variant(_ada_max_k, var.size)(var, m, v, grad, T(lr) / (one - T(beta1_power)), one - T(beta1), T(beta2),
                                   T(epsilon))
    return var


@_ieee
def tf_apply_rms_prop(var, ms, mom, grad, lr, rho, momentum, epsilon):
    T = var.dtype.type
    _variant(_rms_prop_k, var.size)(var, ms, mom, grad, T(lr), T(1) - T(rho), T(momentum), T(epsilon))
    return var


@_ieee
def tf_apply_centered_rms_prop(var, mg, ms, mom, grad, lr, rho, momentum, epsilon):
    T = var.dtype.type
    _variant(_centered_rms_prop_k, var.size)(var, mg, ms, mom, grad, T(lr), T(1) - T(rho), T(momentum), T(epsilon))
    return var


@_ieee
def tf_apply_add_sign(var, m, grad, lr, alpha, sign_decay, beta):
    T = var.dtype.type
    beta = T(beta)
    _variant(_add_sign_k, var.size)(var, m, grad, T(lr), T(alpha), T(sign_decay), beta, T(1) - beta, T(1))
    return var


@_ieee
def tf_apply_power_sign(var, m, grad, lr, logbase, sign_decay, beta):
    T = var.dtype.type
    beta = T(beta)
    ls, e_pos, e_neg, e_zero = power_sign_scales(T, logbase, sign_decay)
    _variant(_power_sign_k, var.size)(var, m, grad, T(lr), ls, beta, T(1) - beta, T(0), T(1), e_pos, e_neg, e_zero)
    return var


# ---------------------------------------------------------------------------------------
# sparse wrappers

@_ieee
def tf_sparse_apply_proximal_gradient_descent(var, grad, indices, alpha, l1, l2):
    T = var.dtype.type
    nt = _sparse_threads(grad)
    _sparse_call(_sparse_proximal_gd_k, nt)(var, grad, indices, nt, *_proximal_gd_scalars(T, alpha, l1, l2))
    return var


@_ieee
def tf_sparse_apply_adadelta(var, accum, accum_update, grad, indices, lr, rho, epsilon):
    T = var.dtype.type
    rho = T(rho)
    nt = _sparse_threads(grad)
    _sparse_call(_sparse_adadelta_k, nt)(var, accum, accum_update, grad, indices, nt, T(lr), rho, T(1) - rho,
                                         T(epsilon), T(1))
    return var


@_ieee
def tf_sparse_apply_adagrad(var, accum, grad, indices, lr, update_slots):
    T = var.dtype.type
    nt = _sparse_threads(grad)
    _sparse_call(_sparse_adagrad_k, nt)(var, accum, grad, indices, nt, T(lr), bool(update_slots), T(1))
    return var


@_ieee
def tf_sparse_apply_adagrad_v2(var, accum, grad, indices, lr, epsilon, update_slots):
    T = var.dtype.type
    nt = _sparse_threads(grad)
    _sparse_call(_sparse_adagrad_v2_k, nt)(var, accum, grad, indices, nt, T(lr), T(epsilon), bool(update_slots))
    return var


@_ieee
def tf_sparse_apply_proximal_adagrad(var, accum, grad, indices, lr, l1, l2):
    T = var.dtype.type
    l1 = T(l1)
    nt = _sparse_threads(grad)
    _sparse_call(_sparse_proximal_adagrad_k, nt)(var, accum, grad, indices, nt, T(lr), bool(l1 > 0), l1, T(l2),
                                                 T(0), T(1))
    return var


@_ieee
def tf_sparse_apply_adagrad_da(var, gradient_accumulator, gradient_squared_accumulator, grad, indices, lr, l1, l2,
                               global_step):
    T = var.dtype.type
    nt = _sparse_threads(grad)
    _sparse_call(_sparse_adagrad_da_k, nt)(var, gradient_accumulator, gradient_squared_accumulator, grad, indices,
                                           nt, *_adagrad_da_scalars(T, lr, l1, l2, global_step))
    return var


@_ieee
def tf_sparse_apply_ftrl(var, accum, linear, grad, indices, lr, l1, l2, lr_power, multiply_linear_by_lr):
    T = var.dtype.type
    nt = _sparse_threads(grad)
    _sparse_call(_sparse_ftrl_k, nt)(var, accum, linear, grad, indices, nt,
                                     *_ftrl_scalars(T, lr, l1, l2, 0.0, lr_power, False, multiply_linear_by_lr))
    return var


@_ieee
def tf_sparse_apply_ftrl_v2(var, accum, linear, grad, indices, lr, l1, l2, l2_shrinkage, lr_power,
                            multiply_linear_by_lr):
    T = var.dtype.type
    nt = _sparse_threads(grad)
    _sparse_call(_sparse_ftrl_k, nt)(var, accum, linear, grad, indices, nt,
                                     *_ftrl_scalars(T, lr, l1, l2, l2_shrinkage, lr_power, True,
                                                    multiply_linear_by_lr))
    return var


@_ieee
def tf_sparse_apply_momentum(var, accum, grad, indices, lr, momentum, use_nesterov):
    T = var.dtype.type
    nt = _sparse_threads(grad)
    _sparse_call(_sparse_momentum_k, nt)(var, accum, grad, indices, nt, T(lr), T(momentum), bool(use_nesterov))
    return var


@_ieee
def tf_sparse_apply_keras_momentum(var, accum, grad, indices, lr, momentum, use_nesterov):
    T = var.dtype.type
    nt = _sparse_threads(grad)
    _sparse_call(_sparse_keras_momentum_k, nt)(var, accum, grad, indices, nt, T(lr), T(momentum),
                                               bool(use_nesterov))
    return var


@_ieee
def tf_sparse_apply_rms_prop(var, ms, mom, grad, indices, lr, rho, momentum, epsilon):
    T = var.dtype.type
    nt = _sparse_threads(grad)
    _sparse_call(_sparse_rms_prop_k, nt)(var, ms, mom, grad, indices, nt, T(lr), T(1) - T(rho), T(momentum),
                                         T(epsilon))
    return var


@_ieee
def tf_sparse_apply_centered_rms_prop(var, mg, ms, mom, grad, indices, lr, rho, momentum, epsilon):
    T = var.dtype.type
    nt = _sparse_threads(grad)
    _sparse_call(_sparse_centered_rms_prop_k, nt)(var, mg, ms, mom, grad, indices, nt, T(lr), T(1) - T(rho),
                                                  T(momentum), T(epsilon))
    return var
