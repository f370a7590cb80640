"""Half precision and the fused extras, in plain NumPy: THE SPEC.

A step on float16/bfloat16 arrays, with a loss scale, a clip factor or float32 master weights,
is defined here in terms of the float32/float64 rules of :mod:`fastgd.reference.rules`:

1. every array is converted, exactly, to the compute dtype (float64 for float64 params,
   float32 otherwise); with float32 ``masters`` the master copy stands in for param;
2. the gradient is divided by ``grad_scale`` and multiplied by ``clip`` in the compute dtype
   (``g = (g / scale) * clip``), before the rule's own prologue (maximize, weight decay);
3. the compute-dtype rule runs on those copies;
4. every array the rule writes is stored back rounded once, to nearest even (NumPy's float16
   cast, ml_dtypes' bfloat16 cast); with masters, param receives the master's rounding.

State arrays already in the compute dtype (float32 state of a half-precision param) are
updated in place.  The Cython kernels do this in one pass over memory (the conversions in
registers or L1-sized blocks) and equal it bit for bit; the numba backend runs its own
compute-dtype kernels through this very function.

Also here: :func:`global_norm` and :func:`unscale_and_check`, the reference of
``fastgd.multi.global_norm`` / ``unscale_and_check``.
"""
import math

import numpy as np

__all__ = ["staged", "global_norm", "unscale_and_check", "compute_dtype", "BLOCK"]

BLOCK = 1 << 16  # elements converted at a time (bounds the temporaries; the result does not depend on it)


def compute_dtype(dtype):
    """float64 for float64 params, float32 for float32, float16 and bfloat16."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def staged(kernel, lists, kw, grad_scale=None, clip=None, masters=None, block=BLOCK):
    """Run the compute-dtype single-tensor ``kernel`` (a rule of a backend, e.g.
    ``fastgd.reference.rules.adam``) on ``lists`` = (params, grads, state lists...; None for an
    unused state list) with keywords ``kw``, as the module docstring says.  Arguments arrive
    validated.  Returns params."""
    params = lists[0]
    with np.errstate(all="ignore"):  # IEEE arithmetic and casts (overflow to inf is the rounding)
        for t, p in enumerate(params):
            n = p.size
            if n == 0:
                continue
            cdt = compute_dtype(p.dtype)
            flat = [None if lst is None else lst[t].reshape(-1) for lst in lists]
            mflat = None if masters is None else masters[t].reshape(-1)
            s = None if grad_scale is None else cdt.type(grad_scale)
            c = None if clip is None else cdt.type(clip)
            for lo in range(0, n, block):
                hi = min(n, lo + block)
                work = []
                for k, a in enumerate(flat):
                    if a is None:
                        work.append(None)
                    elif k == 0 and mflat is not None:
                        work.append(mflat[lo:hi])
                    elif k == 1:
                        g = a[lo:hi].astype(cdt)  # a copy, always: the gradient is only read
                        if s is not None:
                            g /= s
                        if c is not None:
                            g *= c
                        work.append(g)
                    elif a.dtype == cdt:
                        work.append(a[lo:hi])  # updated in place
                    else:
                        work.append(a[lo:hi].astype(cdt))
                kernel(*work, **kw)
                for k, a in enumerate(flat):
                    if a is None or k == 1:
                        continue
                    if a.dtype != cdt or (k == 0 and mflat is not None):
                        a[lo:hi] = work[k].astype(a.dtype)
    return params


def global_norm(grads, grad_scale=None):
    """sqrt(sum of g*g over every element of every gradient), accumulated in float64, then
    divided by ``grad_scale``: the L2 norm of the unscaled gradients (clip_grad_norm_'s)."""
    total = 0.0
    for g in grads:
        flat = g.reshape(-1)
        for lo in range(0, flat.size, BLOCK):
            x = flat[lo:lo + BLOCK].astype(np.float64)
            total += float(np.dot(x, x))
    norm = math.sqrt(total)
    return norm if grad_scale is None else norm / grad_scale


def unscale_and_check(grads, scale, found_inf):
    """Divide every gradient in place by ``scale`` (in the compute dtype, stored rounded once)
    and set ``found_inf[0] = 1`` if any of their values was NaN or inf before (it is never
    cleared).  torch's ``_amp_foreach_non_finite_check_and_unscale_``, with the scale itself
    rather than its inverse.  Returns found_inf."""
    found = False
    with np.errstate(all="ignore"):
        for g in grads:
            flat = g.reshape(-1)
            cdt = compute_dtype(g.dtype)
            s = cdt.type(scale)
            for lo in range(0, flat.size, BLOCK):
                x = flat[lo:lo + BLOCK].astype(cdt)
                if not found and not np.isfinite(x).all():
                    found = True
                x /= s
                flat[lo:lo + BLOCK] = x.astype(g.dtype)
    if found:
        found_inf.reshape(-1)[0] = 1.0
    return found_inf
