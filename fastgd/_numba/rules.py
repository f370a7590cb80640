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

import numpy as np
from numba import njit, prange

from ..backends import threads_for

__all__ = ["adam", "copy_skeleton"]

# Chosen once, here: FMA contraction only.  No nnan/ninf (NaN and inf must behave as in
# NumPy), no reassoc/arcp (results must match the reference to round-off).
FASTMATH = {"contract"}


def _compile(body):
    """(serial, parallel) jitted variants of one kernel body."""
    serial = njit(body, fastmath=FASTMATH, nogil=True, cache=True, error_model="numpy")
    parallel = njit(body, fastmath=FASTMATH, nogil=True, cache=True, error_model="numpy", parallel=True)
    return serial, parallel


def _variant(kernel, n):
    return kernel[1] if threads_for(n) > 1 else kernel[0]


@njit(inline="always")
def _max_nan(a, b):
    """max(a, b) that propagates NaN from either side, like numpy.maximum."""
    return a if (a > b or a != a) else b


# ---------------------------------------------------------------------------------------
# Adam / AdamW

def _adam_body(p, g, m, v, vmax, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2,
               step_size, inv_bc2_sqrt, eps, amsgrad):
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
        if amsgrad:
            vi = _max_nan(vmax[i], vi)
            vmax[i] = vi
        denom = math.sqrt(vi) * inv_bc2_sqrt + eps
        p[i] = p[i] - step_size * (mi / denom)


_adam_k = _compile(_adam_body)


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay,
         amsgrad, maximize, decoupled_weight_decay):
    f = param.dtype.type
    p = param.reshape(-1)
    vmax = max_exp_avg_sq.reshape(-1) if amsgrad else p[:0]
    _variant(_adam_k, p.size)(
        p, grad.reshape(-1), exp_avg.reshape(-1), exp_avg_sq.reshape(-1), vmax,
        f(-1.0 if maximize else 1.0), weight_decay != 0, decoupled_weight_decay, f(weight_decay),
        f(1.0 - lr * weight_decay), f(beta1), f(1.0 - beta1), f(beta2), f(1.0 - beta2),
        f(lr / (1.0 - beta1 ** step)), f(1.0 / math.sqrt(1.0 - beta2 ** step)), f(eps), amsgrad)
    return param


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
    flat = [o.reshape(-1) for o in outs]
    flat += [flat[0][:0]] * (4 - len(flat))
    _variant(_skeleton_k, grad.size)(grad.reshape(-1), *flat, len(outs))
    return outs[0]
