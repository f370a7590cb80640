"""The public step kernels: validate, then run the current backend's fused kernel.

Every function updates ``param`` and its state arrays in place and returns ``param``.
Semantics follow ``torch.optim`` of the same name (formula, defaults, eps placement, bias
correction, ``weight_decay``, ``maximize``, first step); ``lion_step`` follows the Lion paper
with decoupled weight decay, as optax does.  Hyperparameters are keyword-only; state arrays
are positional, in the documented order, and start as zeros (``numpy.zeros_like(param)``)
unless stated otherwise.  ``step`` counts from 1.

Arrays must be exactly numpy.ndarray (no None where an array is required, no subclass), of
one shape, C-contiguous, aligned, not overlapping; ``param`` and the state arrays must be
writeable.  dtypes (native byte order):

=================================  ====================================  =======================
``param`` and ``grad``             state arrays (all one dtype)          arithmetic
=================================  ====================================  =======================
float32                            float32                               float32
float64                            float64                               float64
float16 / bfloat16 (ml_dtypes)     float32, or the param's dtype         float32, each stored
                                                                         value rounded once
=================================  ====================================  =======================

A half-precision step is defined by ``fastgd/reference/half.py``: every array converted to
float32, the float32 rule, every written array rounded back to nearest even; the Cython
kernels do that in one pass over memory and equal it bit for bit.

Fused extras, keyword-only in every step (``fastgd/_rules.py: EXTRAS``):

* ``grad_scale``: a real > 0, or a float32 array of one element (a loss scaler's scale): the
  gradient is divided by it as it is loaded (``g / scale`` in the compute dtype); the
  gradient array itself is never rewritten.
* ``found_inf``: a float32 array of one element; when nonzero the step writes nothing at all
  (torch's fused optimizers' contract with ``GradScaler``; compute it with
  :func:`fastgd.multi.unscale_and_check` or your own check).
* ``max_norm``: clip by the gradient's L2 norm as ``torch.nn.utils.clip_grad_norm_`` does:
  the (unscaled) gradient is multiplied by ``min(1, max_norm / (norm + 1e-6))``, folded into
  the step after one read pass for the norm (:func:`fastgd.multi.global_norm`).
* ``master_param``: for a float16/bfloat16 ``param``, a float32 master copy of its shape: the
  step runs on the master and stores its rounding into ``param``.  Bad input raises
``TypeError``/``ValueError`` naming the argument before anything is written.  The checks,
defaults and state arrays of every rule come from one table, ``fastgd/_rules.py``.
Zero-size arrays are a no-op.  NaN and inf propagate exactly as in the NumPy reference.

``backend=`` picks ``"cython"``, ``"numba"`` or ``"numpy"`` for one call (default: the current
backend, see ``fastgd.set_backend``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import _validate as V
from .backends import backend_module
from ._rules import RULES
from .reference.rules import nadam_mu

if TYPE_CHECKING:
    from ._typing import Backend, FloatArray, NDArray, Scale

__all__ = ["sgd_step", "adam_step", "adamw_step", "adamax_step", "nadam_step", "radam_step",
           "adagrad_step", "adadelta_step", "rmsprop_step", "lion_step"]


# ---------------------------------------------------------------------------------------
# Every check comes from the rule table (fastgd/_rules.py): the hyperparameters
# (``Rule.check``), which state arrays a call needs (``Rule.arrays``), the names and the
# positions that may be None.  fastgd.multi and fastgd.optim use the same table.

_SGD, _ADAM, _ADAMW, _ADAMAX, _NADAM, _RADAM, _ADAGRAD, _ADADELTA, _RMSPROP, _LION = (
    RULES[r] for r in ("sgd", "adam", "adamw", "adamax", "nadam", "radam", "adagrad", "adadelta", "rmsprop",
                       "lion"))


def _run(rule, backend, given, kw, grad_scale=None, found_inf=None, max_norm=None, master_param=None, pre=None):
    """Check the arrays (``given``: param, grad, every state array, optional ones included
    when given), then run the backend's kernel (not on empty arrays) on those the call uses.
    Half-precision arrays and the fused extras take :func:`_staged`; the extras' own checks,
    which may run the caller's code (``float()`` of a number type), come first of all."""
    extras = grad_scale is not None or found_inf is not None or max_norm is not None or master_param is not None
    if extras and pre is None:
        pre = _extras_pre(grad_scale, found_inf, max_norm, master_param)
    impl = backend_module(backend)  # first: no code of the caller's runs between the checks and the kernel
    if extras:
        return _staged(rule, impl, given, kw, found_inf, master_param, pre, False)
    if not V.arrays_ok(given, 1, rule.optional) and V.is_half(V.arrays(rule.array_names, given, 1, rule.optional)):
        return _staged(rule, impl, given, kw, None, None, None, True)
    arrs = rule.arrays(kw, given)
    if arrs[0].size == 0:
        return arrs[0]
    return getattr(impl, rule.kernel)(*arrs, **kw)


def _extras_pre(grad_scale, found_inf, max_norm, master_param):
    """fastgd.multi's checks of the extras that precede the array checks (a single call's
    master as a list of one)."""
    from . import multi as M  # (it imports this module)
    return M._extras_pre(grad_scale, found_inf, max_norm, None if master_param is None else [master_param])


def _staged(rule, impl, given, kw, found_inf, master_param, pre, checked):
    """A call with half-precision arrays or fused extras: the arrays checked (again, in
    Python, if the C accept did not take them), then the extras, then the one-tensor
    kernel-level call of :mod:`fastgd.multi`."""
    from . import multi as M  # (it imports this module)
    if not checked:
        V.arrays_ok(given, 1, rule.optional) or V.arrays(rule.array_names, given, 1, rule.optional)
    arrs = rule.arrays(kw, given)
    if master_param is not None:
        V.master("master_param", master_param, arrs[0], zip(rule.array_names, arrs))
    lists = [None if a is None else [a] for a in arrs]
    ext = M._extras(rule.array_names, lists, pre or (None, False, None, None), found_inf, impl, "master_param")
    if ext is not None and arrs[0].size:
        M._staged_call(impl, rule.kernel, lists, kw, *ext)
    return arrs[0]


def _adam_hyper(step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize):
    """(step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize), checked by the table.

    Callers try ``V.adam_scalars_ok`` first (plain Python floats/ints/bools in range, the
    values these checks would return unchanged, accepted in C) and come here only when it says
    no: Adam is the step most often called on small arrays."""
    kw = _ADAM.check(step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                     maximize=maximize)
    return (kw["step"], kw["lr"], kw["beta1"], kw["beta2"], kw["eps"], kw["weight_decay"], kw["amsgrad"],
            kw["maximize"])


def _mu_product_before(mu_product, kw, names, lists):
    """P_{t-1}: read from the caller's state array (checked: a writeable float64 ndarray of
    one element that overlaps none of the arrays ``lists[k][t]``, named ``names[k]``), or
    recomputed from the step."""
    if mu_product is None:
        return nadam_mu_product(kw["step"] - 1, beta1=kw["beta1"], momentum_decay=kw["momentum_decay"])
    value = V.mu_product_value("mu_product", V.one_element_f64("mu_product", mu_product))
    hit = V.first_overlap(mu_product, lists)
    if hit is not None:
        raise ValueError("mu_product and %s overlap in memory; every array must be a separate buffer"
                         % names(*hit))
    return value


def _mu_product_after(mu_product, kw):
    """Advance the caller's state array to P_t = P_{t-1} * mu_t."""
    if mu_product is not None:
        mu_product.flat[0] = kw["mu_product"] * nadam_mu(kw["step"], kw["beta1"], kw["momentum_decay"])


def sgd_step(param: FloatArray, grad: FloatArray, momentum_buffer: FloatArray | None = None, *, lr: float,
             momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
             maximize: bool = False, step: int | None = None,
             grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
             master_param: FloatArray | None = None, backend: Backend | None = None) -> FloatArray:
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``.

    .. math::
        g &\\leftarrow \\pm g + \\lambda p \\\\
        b &\\leftarrow g \\text{ (first step)}, \\quad \\mu b + (1-\\tau) g \\text{ (later)} \\\\
        d &\\leftarrow g + \\mu b \\text{ (nesterov)}, \\quad b \\text{ (otherwise)} \\\\
        p &\\leftarrow p - \\eta d

    State: ``momentum_buffer`` (needed when ``momentum != 0``).  torch creates the buffer as a
    copy of the first gradient; here the caller owns it, so pass ``step=1`` on the first
    step to get that behaviour (with a zero buffer and ``dampening=0`` both agree anyway).
    ``step=None`` means the buffer already holds history.
    """
    kw = _SGD.check(step, lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                    weight_decay=weight_decay, maximize=maximize)
    return _run(_SGD, backend, (param, grad, momentum_buffer), kw, grad_scale, found_inf, max_norm, master_param)


_ADAM_OPTIONAL = _ADAM.optional


def _adam(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, amsgrad,
          max_exp_avg_sq, maximize, decoupled, backend, grad_scale=None, found_inf=None, max_norm=None,
          master_param=None):
    # Adam's small-array path is the hot one (~1 us of kernel at 1e3 elements), so this is
    # _run written out: C fast accepts first, the named checks only when they say no, and the
    # kernel called with positional arguments (the reference's order; no keyword parsing).
    if not V.adam_scalars_ok(step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize):
        step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize = _adam_hyper(
            step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize)
    arrs = (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)  # checked when given, used with amsgrad
    if grad_scale is not None or found_inf is not None or max_norm is not None or master_param is not None:
        kw = dict(step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                  maximize=maximize, decoupled_weight_decay=decoupled)
        return _run(_ADAM, backend, arrs, kw, grad_scale, found_inf, max_norm, master_param)
    impl = backend_module(backend)  # first: no code of the caller's runs between the checks and the kernel
    if not V.arrays_ok(arrs, 1, _ADAM_OPTIONAL) and V.is_half(V.arrays(_ADAM.array_names, arrs, 1, _ADAM_OPTIONAL)):
        kw = dict(step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                  maximize=maximize, decoupled_weight_decay=decoupled)
        return _staged(_ADAM, impl, arrs, kw, None, None, None, True)
    if amsgrad:
        V.required("max_exp_avg_sq", max_exp_avg_sq, "amsgrad=True")
    else:
        max_exp_avg_sq = None
    if param.size == 0:
        return param
    return impl.adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
                     amsgrad, maximize, decoupled)


def adam_step(param: FloatArray, grad: FloatArray, exp_avg: FloatArray, exp_avg_sq: FloatArray, *, step: int,
              lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
              weight_decay: float = 0.0, amsgrad: bool = False, max_exp_avg_sq: FloatArray | None = None,
              maximize: bool = False,
              grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
              master_param: FloatArray | None = None, backend: Backend | None = None) -> FloatArray:
    """Adam (Kingma & Ba 2015), optionally AMSGrad, as ``torch.optim.Adam``.

    .. math::
        g &\\leftarrow \\pm g + \\lambda p \\\\
        m &\\leftarrow \\beta_1 m + (1-\\beta_1) g \\\\
        v &\\leftarrow \\beta_2 v + (1-\\beta_2) g^2 \\\\
        \\hat v &\\leftarrow \\max(\\hat v, v) \\text{ (amsgrad; else } \\hat v = v) \\\\
        p &\\leftarrow p - \\frac{\\eta}{1-\\beta_1^t} \\frac{m}{\\sqrt{\\hat v}/\\sqrt{1-\\beta_2^t} + \\epsilon}

    State: ``exp_avg`` (m), ``exp_avg_sq`` (v), and ``max_exp_avg_sq`` when ``amsgrad=True``.
    """
    return _adam(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, amsgrad,
                 max_exp_avg_sq, maximize, False, backend, grad_scale, found_inf, max_norm, master_param)


def adamw_step(param: FloatArray, grad: FloatArray, exp_avg: FloatArray, exp_avg_sq: FloatArray, *, step: int,
               lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 1e-2, amsgrad: bool = False, max_exp_avg_sq: FloatArray | None = None,
               maximize: bool = False,
               grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
               master_param: FloatArray | None = None, backend: Backend | None = None) -> FloatArray:
    """AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    .. math::
        p &\\leftarrow p (1 - \\eta\\lambda) \\\\
        m &\\leftarrow \\beta_1 m + (1-\\beta_1) g, \\quad v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2 \\\\
        p &\\leftarrow p - \\frac{\\eta}{1-\\beta_1^t} \\frac{m}{\\sqrt{\\hat v}/\\sqrt{1-\\beta_2^t} + \\epsilon}

    State: ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq`` with ``amsgrad=True``).
    """
    return _adam(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, amsgrad,
                 max_exp_avg_sq, maximize, True, backend, grad_scale, found_inf, max_norm, master_param)


def adamax_step(param: FloatArray, grad: FloatArray, exp_avg: FloatArray, exp_inf: FloatArray, *, step: int,
                lr: float = 2e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                weight_decay: float = 0.0, maximize: bool = False,
                grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
                master_param: FloatArray | None = None, backend: Backend | None = None) -> FloatArray:
    """AdaMax (Kingma & Ba 2015, sec. 7), as ``torch.optim.Adamax``.

    .. math::
        g &\\leftarrow \\pm g + \\lambda p \\\\
        m &\\leftarrow \\beta_1 m + (1-\\beta_1) g \\\\
        u &\\leftarrow \\max(\\beta_2 u, |g| + \\epsilon) \\\\
        p &\\leftarrow p - \\frac{\\eta}{1-\\beta_1^t} \\frac{m}{u}

    State: ``exp_avg`` (m), ``exp_inf`` (u).
    """
    kw = _ADAMAX.check(step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, maximize=maximize)
    return _run(_ADAMAX, backend, (param, grad, exp_avg, exp_inf), kw, grad_scale, found_inf, max_norm, master_param)


def nadam_step(param: FloatArray, grad: FloatArray, exp_avg: FloatArray, exp_avg_sq: FloatArray,
               mu_product: NDArray[np.float64] | None = None, *, step: int, lr: float = 2e-3, beta1: float = 0.9,
               beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0, momentum_decay: float = 4e-3,
               decoupled_weight_decay: bool = False, maximize: bool = False,
               grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
               master_param: FloatArray | None = None, backend: Backend | None = None) -> FloatArray:
    """NAdam (Dozat 2016), as ``torch.optim.NAdam``.

    .. math::
        \\mu_t &= \\beta_1 (1 - \\tfrac12 \\, 0.96^{t\\psi}), \\quad P_t = \\textstyle\\prod_{i \\le t} \\mu_i \\\\
        m &\\leftarrow \\beta_1 m + (1-\\beta_1) g, \\quad v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2 \\\\
        d &= \\sqrt{v / (1-\\beta_2^t)} + \\epsilon \\\\
        p &\\leftarrow p - \\eta \\frac{1-\\mu_t}{1-P_t} \\frac{g}{d} - \\eta \\frac{\\mu_{t+1}}{1-P_t\\mu_{t+1}} \\frac{m}{d}

    (psi = ``momentum_decay``.)  State: ``exp_avg``, ``exp_avg_sq``, and the running product
    ``mu_product``: a float64 array of one element, ``numpy.ones(1)`` before the first step,
    holding :math:`P_{t-1}` on entry and updated in place to :math:`P_t` (this is torch's
    ``state['mu_product']``).  If ``mu_product`` is omitted, :math:`P_{t-1}` is recomputed from
    ``step`` (exact for constant ``beta1`` and ``momentum_decay``, O(step) scalar work).
    """
    kw = _NADAM.check(step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                      momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
    pre = None
    if grad_scale is not None or found_inf is not None or max_norm is not None or master_param is not None:
        pre = _extras_pre(grad_scale, found_inf, max_norm, master_param)
    kw["mu_product"] = _mu_product_before(mu_product, kw, lambda k, t: (_NADAM.array_names + ("master_param",))[k],
                                          ((param,), (grad,), (exp_avg,), (exp_avg_sq,), (master_param,)))
    _run(_NADAM, backend, (param, grad, exp_avg, exp_avg_sq), kw, grad_scale, found_inf, max_norm, master_param,
         pre)
    if pre is None or not pre[1]:  # a skipped step (found_inf, read once before the checks) keeps the product
        _mu_product_after(mu_product, kw)
    return param


def nadam_mu_product(step: int, *, beta1: float = 0.9, momentum_decay: float = 4e-3) -> float:
    """:math:`P_t = \\prod_{i=1}^{t} \\beta_1 (1 - \\tfrac12 0.96^{i\\psi})` (1.0 for ``step=0``),
    multiplied in the same order as torch so that the result is bit-identical to its running product.
    At most 10**7 steps (pass the running product to nadam_step beyond that)."""
    step = 0 if type(step) is int and step == 0 else V.step(step)
    beta1 = V.unit_interval("beta1", beta1)
    momentum_decay = V.nonneg("momentum_decay", momentum_decay)
    prod = 1.0
    for i in range(1, min(step, _MU_PRODUCT_MAX_STEPS) + 1):
        new = prod * nadam_mu(i, beta1, momentum_decay)
        if new == prod:
            # underflowed to 0 or to where a factor < 1 no longer changes it: mu_i only grows
            # with i (towards beta1), so no later factor can change it either
            return prod
        prod = new
    if step > _MU_PRODUCT_MAX_STEPS:
        raise ValueError("recomputing mu_product takes one multiplication per step; beyond %d steps pass the "
                         "running product (nadam_step's mu_product array) instead, got step %d"
                         % (_MU_PRODUCT_MAX_STEPS, step))
    return prod


_MU_PRODUCT_MAX_STEPS = 10_000_000  # a few seconds of Python


def radam_step(param: FloatArray, grad: FloatArray, exp_avg: FloatArray, exp_avg_sq: FloatArray, *, step: int,
               lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 0.0, decoupled_weight_decay: bool = False, maximize: bool = False,
               grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
               master_param: FloatArray | None = None, backend: Backend | None = None) -> FloatArray:
    """RAdam (Liu et al. 2020), as ``torch.optim.RAdam``.

    .. math::
        m &\\leftarrow \\beta_1 m + (1-\\beta_1) g, \\quad v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2 \\\\
        \\rho_\\infty &= \\frac{2}{1-\\beta_2} - 1, \\quad \\rho_t = \\rho_\\infty - \\frac{2t\\beta_2^t}{1-\\beta_2^t} \\\\
        p &\\leftarrow p - \\frac{\\eta r_t}{1-\\beta_1^t} \\, m \\frac{\\sqrt{1-\\beta_2^t}}{\\sqrt v + \\epsilon}
            \\text{ if } \\rho_t > 5, \\quad r_t = \\sqrt{\\frac{(\\rho_t-4)(\\rho_t-2)\\rho_\\infty}{(\\rho_\\infty-4)(\\rho_\\infty-2)\\rho_t}} \\\\
        p &\\leftarrow p - \\frac{\\eta}{1-\\beta_1^t} m \\text{ otherwise}

    State: ``exp_avg``, ``exp_avg_sq``.
    """
    kw = _RADAM.check(step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                      decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
    return _run(_RADAM, backend, (param, grad, exp_avg, exp_avg_sq), kw, grad_scale, found_inf, max_norm, master_param)


def adagrad_step(param: FloatArray, grad: FloatArray, state_sum: FloatArray, *, step: int, lr: float = 1e-2,
                 lr_decay: float = 0.0, weight_decay: float = 0.0, eps: float = 1e-10, maximize: bool = False,
                 grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
                 master_param: FloatArray | None = None, backend: Backend | None = None) -> FloatArray:
    """Adagrad (Duchi et al. 2011), as ``torch.optim.Adagrad``.

    .. math::
        g &\\leftarrow \\pm g + \\lambda p \\\\
        s &\\leftarrow s + g^2 \\\\
        p &\\leftarrow p - \\frac{\\eta}{1 + (t-1)\\,\\text{lr\\_decay}} \\frac{g}{\\sqrt{s} + \\epsilon}

    State: ``state_sum`` (torch's ``initial_accumulator_value``, 0 by default: fill it to start elsewhere).
    """
    kw = _ADAGRAD.check(step, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps, maximize=maximize)
    return _run(_ADAGRAD, backend, (param, grad, state_sum), kw, grad_scale, found_inf, max_norm, master_param)


def adadelta_step(param: FloatArray, grad: FloatArray, square_avg: FloatArray, acc_delta: FloatArray, *,
                  lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
                  maximize: bool = False,
                  grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
                  master_param: FloatArray | None = None, backend: Backend | None = None) -> FloatArray:
    """Adadelta (Zeiler 2012), as ``torch.optim.Adadelta``.

    .. math::
        g &\\leftarrow \\pm g + \\lambda p \\\\
        s &\\leftarrow \\rho s + (1-\\rho) g^2 \\\\
        \\Delta &= \\frac{\\sqrt{a + \\epsilon}}{\\sqrt{s + \\epsilon}} g \\\\
        a &\\leftarrow \\rho a + (1-\\rho) \\Delta^2 \\\\
        p &\\leftarrow p - \\eta \\Delta

    State: ``square_avg`` (s), ``acc_delta`` (a).
    """
    kw = _ADADELTA.check(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
    return _run(_ADADELTA, backend, (param, grad, square_avg, acc_delta), kw,
                grad_scale, found_inf, max_norm, master_param)


def rmsprop_step(param: FloatArray, grad: FloatArray, square_avg: FloatArray, *,
                 momentum_buffer: FloatArray | None = None, grad_avg: FloatArray | None = None, lr: float = 1e-2,
                 alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0, centered: bool = False,
                 weight_decay: float = 0.0, maximize: bool = False,
                 grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
                 master_param: FloatArray | None = None, backend: Backend | None = None) -> FloatArray:
    """RMSprop (Hinton 2012), optionally centered and with momentum, as ``torch.optim.RMSprop``.

    .. math::
        g &\\leftarrow \\pm g + \\lambda p \\\\
        s &\\leftarrow \\alpha s + (1-\\alpha) g^2 \\\\
        \\bar g &\\leftarrow \\alpha \\bar g + (1-\\alpha) g, \\quad
            d = \\sqrt{s - \\bar g^2} + \\epsilon \\text{ (centered; else } d = \\sqrt{s} + \\epsilon) \\\\
        b &\\leftarrow \\mu b + g / d, \\quad p \\leftarrow p - \\eta b \\text{ (momentum > 0; else } p \\leftarrow p - \\eta g/d)

    State: ``square_avg`` (s); ``momentum_buffer`` (b) when ``momentum > 0``; ``grad_avg``
    when ``centered=True``.
    """
    kw = _RMSPROP.check(lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=centered, weight_decay=weight_decay,
                        maximize=maximize)
    return _run(_RMSPROP, backend, (param, grad, square_avg, momentum_buffer, grad_avg), kw,
                grad_scale, found_inf, max_norm, master_param)


def lion_step(param: FloatArray, grad: FloatArray, exp_avg: FloatArray, *, lr: float = 1e-4, beta1: float = 0.9,
              beta2: float = 0.99, weight_decay: float = 0.0, maximize: bool = False,
              grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
              master_param: FloatArray | None = None, backend: Backend | None = None) -> FloatArray:
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), decoupled
    weight decay as in the paper and optax.

    .. math::
        c &= \\beta_1 m + (1-\\beta_1) g \\\\
        p &\\leftarrow p (1 - \\eta\\lambda) - \\eta \\, \\mathrm{sign}(c) \\\\
        m &\\leftarrow \\beta_2 m + (1-\\beta_2) g

    State: ``exp_avg`` (m).  Use a learning rate 3-10x smaller than AdamW's.
    """
    kw = _LION.check(lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay, maximize=maximize)
    return _run(_LION, backend, (param, grad, exp_avg), kw, grad_scale, found_inf, max_norm, master_param)
