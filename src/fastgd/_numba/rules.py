"""The update rules as numba kernels: the same functions, names and order of operations as
fastgd/reference/rules.py (the spec) and fastgd/_cython/rules.pxi.

Layout of every rule:
  _<rule>_body(...)   the fused loop over flat arrays, written once in plain Python with
                      ``prange``; compiled serial and parallel by ``_compile``.
  <rule>(...)         computes the scalars in float64, casts them to the array's dtype
                      (a float64 scalar would turn a float32 loop into a float64 one), and
                      calls the serial or the parallel variant.
"""
import math
import types

import numpy as np
from numba import njit, prange

from ..backends import threads_for

__all__ = ["sgd", "adam", "adamax", "nadam", "radam", "adagrad", "adadelta", "rmsprop", "lion",
           "copy_skeleton"]

# Chosen once, here: no fast-math flags at all.  No nnan/ninf (NaN and inf must behave as in
# NumPy), no reassoc/arcp, and no FMA contraction either: every kernel then rounds exactly like
# the NumPy reference (the memory-bound loops vectorize and run as fast without them).
FASTMATH = False


def _compile(body):
    """(serial, parallel) jitted variants of one kernel body, each with its OWN cache file.

    numba's cache key is (signature, target machine, bytecode hash) and the file name is the
    function's qualname and line: the jit flags are not in it, so two njit's of one function
    would share one cache entry, and the variant compiled first would be loaded for BOTH, in
    this and every later process (seen with numba 0.68: the "parallel" variant then ran on one
    thread, or the "serial" one -- which a forked child must use -- on many).  The parallel
    variant is therefore compiled from a twin of ``body`` (same code and globals) whose
    qualname ends in "__parallel"."""
    opts = dict(fastmath=FASTMATH, nogil=True, cache=True, error_model="numpy")
    serial = njit(body, **opts)
    twin = types.FunctionType(body.__code__, body.__globals__, body.__name__, body.__defaults__, body.__closure__)
    twin.__qualname__ = body.__qualname__ + "__parallel"
    twin.__doc__ = body.__doc__
    parallel = njit(twin, parallel=True, **opts)
    return serial, parallel


def _variant(kernel, n):
    return kernel[1] if threads_for(n) > 1 else kernel[0]


_CHANGED = ("an array of this call changed after fastgd checked it (by another thread?); nothing was "
            "written")
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_ND = np.ndarray


def _views(arrays, read_only=1, same_size=True, msg=_CHANGED):
    """The re-check of the Cython kernels' ``_single_checked``, for numba: fastgd checked every
    array, but another Python thread may change one in place (``a.dtype = ...``, ``a.shape =
    ...``) between that check and this call, and a numba loop indexes every array up to the
    first one's size with no bounds check.  So each array (None: unused) is replaced by a view
    of its own (``a.view()``: no other code holds it, nothing can change it any more), and the
    views are checked: exactly ndarrays, arrays[0]'s dtype (native float32 or float64) and
    (``same_size``) size, C-contiguous, aligned, writeable unless ``read_only`` (the gradient's
    index).  Those views are what the kernel gets.  RuntimeError(msg), nothing written,
    otherwise.  (~0.75 us an array on the 2-core AVX2 build machine.)"""
    out = []
    dt = n = None
    for k, a in enumerate(arrays):
        if a is None:
            out.append(None)
            continue
        if type(a) is not _ND:
            raise RuntimeError(msg)
        v = a.view()
        vd = v.dtype
        if dt is None:
            dt, n = vd, v.size
            if vd != _F32 and vd != _F64:
                raise RuntimeError(msg)
        f = v.flags
        # carray: C-contiguous, aligned and writeable
        if ((vd is not dt and vd != dt) or (same_size and v.size != n)
                or not (f.carray if k != read_only else f.c_contiguous and f.aligned)):
            raise RuntimeError(msg)
        out.append(v)
    return out


@njit(inline="always")
def _max_nan(a, b):
    """max(a, b) that propagates NaN from either side, like numpy.maximum."""
    return a if (a > b or a != a) else b


@njit(inline="always")
def _sign(x, one):
    """numpy.sign in the dtype of ``one`` (an int literal would make a float32 loop float64):
    -1, 0 or 1, NaN for NaN; ``x + 0`` turns -0.0 into +0.0, as numpy.sign does."""
    return one if x > 0 else (-one if x < 0 else x + (one - one))


def _empty(a):
    """The placeholder for an unused optional state array: same type as ``a``, no elements."""
    return a[:0]


# _OPTIONAL: an unused optional array is passed as an empty slice (``_empty``: one compiled
# type) when the loop vectorizes anyway (SGD), but as ``None`` where a run-time flag around
# its accesses stops LLVM from vectorizing: Adam's max_exp_avg_sq and RMSprop's
# momentum_buffer/grad_avg (measured 6x and 6x slower than the memory bound on 4e6 float32).
# numba compiles one specialization per None pattern and prunes ``if x is not None`` at
# compile time, so each loop is branch-free.


# ---------------------------------------------------------------------------------------
# SGD with optional (Nesterov) momentum

def _sgd_body(p, g, b, sign, has_wd, wd, has_mom, first, nesterov, momentum, omd, lr):
    for i in prange(p.size):
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


_sgd_k = _compile(_sgd_body)


def sgd(param, grad, momentum_buffer, lr, momentum, dampening, nesterov, weight_decay, maximize, first_step):
    out = param
    param, grad, momentum_buffer = _views((param, grad, momentum_buffer))
    f = param.dtype.type
    p = param.reshape(-1)
    has_mom = momentum != 0
    b = momentum_buffer.reshape(-1) if has_mom else _empty(p)
    _variant(_sgd_k, p.size)(
        p, grad.reshape(-1), b, f(-1.0 if maximize else 1.0), weight_decay != 0, f(weight_decay), has_mom,
        bool(first_step), bool(nesterov), f(momentum), f(1.0 - dampening), f(lr))
    return out


# ---------------------------------------------------------------------------------------
# Adam / AdamW

def _adam_body(p, g, m, v, vmax, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2,
               step_size, inv_bc2_sqrt, eps):
    for i in prange(p.size):
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
        if vmax is not None:  # amsgrad; decided at compile time (see _OPTIONAL)
            vi = _max_nan(vmax[i], vi)
            vmax[i] = vi
        denom = math.sqrt(vi) * inv_bc2_sqrt + eps
        p[i] = p[i] - step_size * (mi / denom)


_adam_k = _compile(_adam_body)


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
         amsgrad, maximize, decoupled_weight_decay):
    out = param
    param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq = _views((param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq))
    f = param.dtype.type
    p = param.reshape(-1)
    vmax = max_exp_avg_sq.reshape(-1) if amsgrad else None
    _variant(_adam_k, p.size)(
        p, grad.reshape(-1), exp_avg.reshape(-1), exp_avg_sq.reshape(-1), vmax,
        f(-1.0 if maximize else 1.0), weight_decay != 0, decoupled_weight_decay, f(weight_decay),
        f(1.0 - lr * weight_decay), f(beta1), f(1.0 - beta1), f(beta2), f(1.0 - beta2),
        f(lr / (1.0 - beta1 ** step)), f(1.0 / math.sqrt(1.0 - beta2 ** step)), f(eps))
    return out


# ---------------------------------------------------------------------------------------
# AdaMax

def _adamax_body(p, g, m, u, sign, has_wd, wd, beta1, omb1, beta2, eps, step_size):
    for i in prange(p.size):
        gi = sign * g[i]
        if has_wd:
            gi = gi + wd * p[i]
        mi = beta1 * m[i] + omb1 * gi
        ui = _max_nan(beta2 * u[i], abs(gi) + eps)
        m[i] = mi
        u[i] = ui
        p[i] = p[i] - step_size * (mi / ui)


_adamax_k = _compile(_adamax_body)


def adamax(param, grad, exp_avg, exp_inf, step, lr, beta1, beta2, eps, weight_decay, maximize):
    out = param
    param, grad, exp_avg, exp_inf = _views((param, grad, exp_avg, exp_inf))
    f = param.dtype.type
    p = param.reshape(-1)
    _variant(_adamax_k, p.size)(
        p, grad.reshape(-1), exp_avg.reshape(-1), exp_inf.reshape(-1), f(-1.0 if maximize else 1.0),
        weight_decay != 0, f(weight_decay), f(beta1), f(1.0 - beta1), f(beta2), f(eps),
        f(lr / (1.0 - beta1 ** step)))
    return out


# ---------------------------------------------------------------------------------------
# NAdam (mu_product: the product of mu_1 .. mu_{t-1}, a Python float; see the reference)

def _nadam_body(p, g, m, v, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, inv_bc2, eps,
                coef_grad, coef_avg):
    for i in prange(p.size):
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
        denom = math.sqrt(vi * inv_bc2) + eps
        pi = pi - coef_grad * (gi / denom)
        p[i] = pi - coef_avg * (mi / denom)


_nadam_k = _compile(_nadam_body)


def nadam(param, grad, exp_avg, exp_avg_sq, step, mu_product, lr, beta1, beta2, eps, weight_decay,
          momentum_decay, maximize, decoupled_weight_decay):
    out = param
    param, grad, exp_avg, exp_avg_sq = _views((param, grad, exp_avg, exp_avg_sq))
    f = param.dtype.type
    p = param.reshape(-1)
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    mu_product = mu_product * mu
    coef_grad = lr * (1.0 - mu) / (1.0 - mu_product)
    coef_avg = lr * mu_next / (1.0 - mu_product * mu_next)
    _variant(_nadam_k, p.size)(
        p, grad.reshape(-1), exp_avg.reshape(-1), exp_avg_sq.reshape(-1), f(-1.0 if maximize else 1.0),
        weight_decay != 0, bool(decoupled_weight_decay), f(weight_decay), f(1.0 - lr * weight_decay), f(beta1),
        f(1.0 - beta1), f(beta2), f(1.0 - beta2), f(1.0 / (1.0 - beta2 ** step)), f(eps), f(coef_grad),
        f(coef_avg))
    return out


# ---------------------------------------------------------------------------------------
# RAdam (the rho_t > 5 branch is a scalar decision, made in the wrapper: ``rect``)

def _radam_body(p, g, m, v, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, rect, step_size, eps):
    for i in prange(p.size):
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
            p[i] = p[i] - step_size * (mi / (math.sqrt(vi) + eps))
        else:
            p[i] = p[i] - step_size * mi


_radam_k = _compile(_radam_body)


def radam(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, maximize,
          decoupled_weight_decay):
    out = param
    param, grad, exp_avg, exp_avg_sq = _views((param, grad, exp_avg, exp_avg_sq))
    f = param.dtype.type
    p = param.reshape(-1)
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * (beta2 ** step) / bias_correction2
    rect = rho_t > 5.0
    if rect:
        r = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
        step_size = lr * r * math.sqrt(bias_correction2) / bias_correction1
    else:
        step_size = lr / bias_correction1
    _variant(_radam_k, p.size)(
        p, grad.reshape(-1), exp_avg.reshape(-1), exp_avg_sq.reshape(-1), f(-1.0 if maximize else 1.0),
        weight_decay != 0, bool(decoupled_weight_decay), f(weight_decay), f(1.0 - lr * weight_decay), f(beta1),
        f(1.0 - beta1), f(beta2), f(1.0 - beta2), rect, f(step_size), f(eps))
    return out


# ---------------------------------------------------------------------------------------
# Adagrad

def _adagrad_body(p, g, s, sign, has_wd, wd, clr, eps):
    for i in prange(p.size):
        gi = sign * g[i]
        if has_wd:
            gi = gi + wd * p[i]
        si = s[i] + gi * gi
        s[i] = si
        p[i] = p[i] - clr * (gi / (math.sqrt(si) + eps))


_adagrad_k = _compile(_adagrad_body)


def adagrad(param, grad, state_sum, step, lr, lr_decay, weight_decay, eps, maximize):
    out = param
    param, grad, state_sum = _views((param, grad, state_sum))
    f = param.dtype.type
    p = param.reshape(-1)
    _variant(_adagrad_k, p.size)(
        p, grad.reshape(-1), state_sum.reshape(-1), f(-1.0 if maximize else 1.0), weight_decay != 0,
        f(weight_decay), f(lr / (1.0 + (step - 1) * lr_decay)), f(eps))
    return out


# ---------------------------------------------------------------------------------------
# Adadelta

def _adadelta_body(p, g, s, a, sign, has_wd, wd, rho, omr, eps, lr):
    for i in prange(p.size):
        gi = sign * g[i]
        if has_wd:
            gi = gi + wd * p[i]
        si = rho * s[i] + omr * (gi * gi)
        s[i] = si
        delta = math.sqrt(a[i] + eps) / math.sqrt(si + eps) * gi
        a[i] = rho * a[i] + omr * (delta * delta)
        p[i] = p[i] - lr * delta


_adadelta_k = _compile(_adadelta_body)


def adadelta(param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay, maximize):
    out = param
    param, grad, square_avg, acc_delta = _views((param, grad, square_avg, acc_delta))
    f = param.dtype.type
    p = param.reshape(-1)
    _variant(_adadelta_k, p.size)(
        p, grad.reshape(-1), square_avg.reshape(-1), acc_delta.reshape(-1), f(-1.0 if maximize else 1.0),
        weight_decay != 0, f(weight_decay), f(rho), f(1.0 - rho), f(eps), f(lr))
    return out


# ---------------------------------------------------------------------------------------
# RMSprop (momentum_buffer is None unless momentum > 0, grad_avg None unless centered)

def _rmsprop_body(p, g, s, b, ga, sign, has_wd, wd, alpha, oma, eps, momentum, lr):
    for i in prange(p.size):
        gi = sign * g[i]
        if has_wd:
            gi = gi + wd * p[i]
        si = alpha * s[i] + oma * (gi * gi)
        s[i] = si
        if ga is not None:  # centered (compile time, see _OPTIONAL)
            gai = alpha * ga[i] + oma * gi
            ga[i] = gai
            avg = math.sqrt(si - gai * gai) + eps
        else:
            avg = math.sqrt(si) + eps
        if b is not None:  # momentum > 0 (compile time)
            bi = momentum * b[i] + gi / avg
            b[i] = bi
            p[i] = p[i] - lr * bi
        else:
            p[i] = p[i] - lr * (gi / avg)


_rmsprop_k = _compile(_rmsprop_body)


def rmsprop(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps, weight_decay, momentum,
            centered, maximize):
    out = param
    param, grad, square_avg, momentum_buffer, grad_avg = _views((param, grad, square_avg, momentum_buffer, grad_avg))
    f = param.dtype.type
    p = param.reshape(-1)
    b = momentum_buffer.reshape(-1) if momentum > 0 else None
    ga = grad_avg.reshape(-1) if centered else None
    _variant(_rmsprop_k, p.size)(
        p, grad.reshape(-1), square_avg.reshape(-1), b, ga, f(-1.0 if maximize else 1.0), weight_decay != 0,
        f(weight_decay), f(alpha), f(1.0 - alpha), f(eps), f(momentum), f(lr))
    return out


# ---------------------------------------------------------------------------------------
# Lion (decoupled weight decay, as the paper and optax)

def _lion_body(p, g, m, sign, has_wd, decay, beta1, omb1, beta2, omb2, lr, one):
    for i in prange(p.size):
        gi = sign * g[i]
        mi = m[i]
        pi = p[i]
        if has_wd:
            pi = pi * decay
        p[i] = pi - lr * _sign(beta1 * mi + omb1 * gi, one)
        m[i] = beta2 * mi + omb2 * gi


_lion_k = _compile(_lion_body)


def lion(param, grad, exp_avg, lr, beta1, beta2, weight_decay, maximize):
    out = param
    param, grad, exp_avg = _views((param, grad, exp_avg))
    f = param.dtype.type
    p = param.reshape(-1)
    _variant(_lion_k, p.size)(
        p, grad.reshape(-1), exp_avg.reshape(-1), f(-1.0 if maximize else 1.0), weight_decay != 0,
        f(1.0 - lr * weight_decay), f(beta1), f(1.0 - beta1), f(beta2), f(1.0 - beta2), f(lr), f(1.0))
    return out


# ---------------------------------------------------------------------------------------
# benchmark skeleton

def _skeleton_body(g, a, b, c, d, n_out):
    for i in prange(g.size):
        gi = g[i]
        a[i] = a[i] + gi
        if n_out > 1:
            b[i] = b[i] + gi
        if n_out > 2:
            c[i] = c[i] + gi
        if n_out > 3:
            d[i] = d[i] + gi


_skeleton_k = _compile(_skeleton_body)


def copy_skeleton(grad, *outs):
    """outs[k] += grad for every k (1 to 4 arrays)."""
    if not 1 <= len(outs) <= 4:
        raise ValueError("copy_skeleton takes 1 to 4 output arrays")
    out = outs[0]
    grad, *outs = _views((grad,) + outs, read_only=0)
    flat = [o.reshape(-1) for o in outs]
    flat += [flat[0][:0]] * (4 - len(flat))
    _variant(_skeleton_k, grad.size)(grad.reshape(-1), *flat, len(outs))
    return out
