"""TensorFlow's training ops in plain NumPy: THE SPEC of the ``fastgd.tf`` kernels.

One function per kernel of fastgd.tf's table (``fastgd._rules.TF_OPS``; the kernel names and
positional signatures every backend shares): the dense ``tf_apply_<op>``
(TF's ``ResourceApply<Op>``) and the sparse ``tf_sparse_apply_<op>`` (``ResourceSparseApply<Op>``).
The formulas are the CPU functors of TF's ``tensorflow/core/kernels/training_ops.cc`` read
literally, element by element:

  * every scalar is first converted to the arrays' dtype ``T`` (``T = var.dtype.type``) and all
    scalar arithmetic is done in ``T``, once per call, in TF's order (``T(1) - beta1`` ...);
  * C++ evaluation order and TF's parentheses are kept (``a * b * c`` is ``(a*b)*c``,
    ``x -= e`` is ``x = x - (e)``); ``rsqrt(x)`` is ``1 / sqrt(x)``; ``sign`` is ``np.sign``,
    ``cwiseMax`` is ``np.maximum``, ``select`` is ``np.where``;
  * TF's lazy Eigen expressions (``auto new_accum = accum + grad*grad``) are computed once, from
    the values the arrays hold at that point of the functor, into a temporary.

Each line below is one elementwise operation (or a few, left to right) so that the compiled
kernels, which loop element by element, can follow it operation by operation.

Arguments arrive validated by ``fastgd.tf`` (kernels check nothing): dense kernels get 1-D
C-contiguous arrays of one float dtype and one length; sparse kernels get ``var`` and the slots
as 2-D ``(rows, inner)`` arrays, ``grad`` as ``(N, inner)`` and ``indices`` as a 1-D int64 array
of in-range rows.  A sparse kernel applies the dense op's per-element formula to row
``indices[i]`` with grad row ``i``, for ``i = 0, 1, ..., N-1`` IN ORDER (a later duplicate index
sees the earlier one's result, as TF's serial CPU loop does).  The dense op and its sparse twin
share one private helper that updates 1-D arrays (the whole arrays, or one row of each).

Where TF's sparse CPU kernel spells the formula differently from the dense functor (rounding
only: Momentum nesterov, RMSProp, CenteredRMSProp, AdagradDA, and the ``inner_dim == 1`` scalar
paths of Adagrad, ProximalGradientDescent, ProximalAdagrad, AdagradDA and Ftrl), this spec uses
the DENSE functor's expression for both, as the contract says.

Every function updates ``var`` and its slots in place and returns ``var``.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from .._rules import TF_KERNELS
from .rules import _ieee

# the kernel names of the table (fastgd._rules.TF_OPS), in its order
__all__ = list(TF_KERNELS)

Array = Any  # a numpy array (1-D for the dense kernels and the helpers, 2-D for the sparse rows)


def _rows(indices):
    """(i, row) for i = 0 .. N-1, in order: grad row i updates var row indices[i]."""
    return enumerate(indices.tolist())


# --------------------------------------------------------------------------------------------
# GradientDescent
# --------------------------------------------------------------------------------------------

@_ieee
def tf_apply_gradient_descent(var: Array, delta: Array, alpha: float) -> Array:
    """var = var - delta*alpha."""
    T = var.dtype.type
    alpha = T(alpha)
    var -= delta * alpha
    return var


# --------------------------------------------------------------------------------------------
# ProximalGradientDescent (FOBOS)
# --------------------------------------------------------------------------------------------

def _proximal_gd(var, grad, lr, l1_positive, lr_l1, denom):
    # prox = var - grad*lr  (TF's prox_var is var itself: it is written in place)
    var -= grad * lr
    if l1_positive:
        var[...] = np.sign(var) * np.maximum(np.abs(var) - lr_l1, var.dtype.type(0)) / denom
    else:
        var[...] = var / denom


def _proximal_gd_scalars(var, alpha, l1, l2):
    T = var.dtype.type
    lr, l1, l2 = T(alpha), T(l1), T(l2)
    return lr, bool(l1 > 0), lr * l1, T(1) + l2 * lr


@_ieee
def tf_apply_proximal_gradient_descent(var: Array, delta: Array, alpha: float, l1: float, l2: float) -> Array:
    """prox = var - delta*alpha;  var = sign(prox)*max(|prox| - alpha*l1, 0) / (1 + l2*alpha)
    if l1 > 0, else prox / (1 + l2*alpha)."""
    _proximal_gd(var, delta, *_proximal_gd_scalars(var, alpha, l1, l2))
    return var


@_ieee
def tf_sparse_apply_proximal_gradient_descent(var: Array, grad: Array, indices: Array, alpha: float, l1: float,
                                              l2: float) -> Array:
    """Per row: the dense ProximalGradientDescent formula (one formula for every inner size: TF's
    inner_dim == 1 path computes 1 + l2*alpha in double, this spec does not)."""
    scalars = _proximal_gd_scalars(var, alpha, l1, l2)
    for i, j in _rows(indices):
        _proximal_gd(var[j], grad[i], *scalars)
    return var


# --------------------------------------------------------------------------------------------
# Adadelta
# --------------------------------------------------------------------------------------------

def _adadelta(var, accum, accum_update, grad, lr, rho, epsilon, one_minus_rho):
    one = var.dtype.type(1)
    accum[...] = accum * rho + grad * grad * one_minus_rho
    # update uses the NEW accum and the OLD accum_update
    update = np.sqrt(accum_update + epsilon) * (one / np.sqrt(accum + epsilon)) * grad
    var -= update * lr
    accum_update[...] = accum_update * rho + update * update * one_minus_rho


def _adadelta_scalars(var, lr, rho, epsilon):
    T = var.dtype.type
    lr, rho, epsilon = T(lr), T(rho), T(epsilon)
    return lr, rho, epsilon, T(1) - rho


@_ieee
def tf_apply_adadelta(var: Array, accum: Array, accum_update: Array, grad: Array, lr: float, rho: float,
                      epsilon: float) -> Array:
    """accum = accum*rho + g*g*(1-rho);  u = sqrt(accum_update + eps) * rsqrt(accum + eps) * g;
    var = var - u*lr;  accum_update = accum_update*rho + u*u*(1-rho)."""
    _adadelta(var, accum, accum_update, grad, *_adadelta_scalars(var, lr, rho, epsilon))
    return var


@_ieee
def tf_sparse_apply_adadelta(var: Array, accum: Array, accum_update: Array, grad: Array, indices: Array, lr: float,
                             rho: float, epsilon: float) -> Array:
    """Per row: the dense Adadelta formula."""
    scalars = _adadelta_scalars(var, lr, rho, epsilon)
    for i, j in _rows(indices):
        _adadelta(var[j], accum[j], accum_update[j], grad[i], *scalars)
    return var


# --------------------------------------------------------------------------------------------
# Adagrad, AdagradV2
# --------------------------------------------------------------------------------------------

def _adagrad(var, accum, grad, lr, update_slots):
    if update_slots:
        accum += grad * grad
    var -= grad * lr * (var.dtype.type(1) / np.sqrt(accum))


@_ieee
def tf_apply_adagrad(var: Array, accum: Array, grad: Array, lr: float, update_slots: bool) -> Array:
    """accum = accum + g*g (if update_slots);  var = var - g*lr*rsqrt(accum)."""
    _adagrad(var, accum, grad, var.dtype.type(lr), update_slots)
    return var


@_ieee
def tf_sparse_apply_adagrad(var: Array, accum: Array, grad: Array, indices: Array, lr: float,
                            update_slots: bool) -> Array:
    """Per row: the dense Adagrad formula (TF's inner_dim == 1 path divides by sqrt(accum)
    instead of multiplying by rsqrt: rounding only)."""
    lr = var.dtype.type(lr)
    for i, j in _rows(indices):
        _adagrad(var[j], accum[j], grad[i], lr, update_slots)
    return var


def _adagrad_v2(var, accum, grad, lr, epsilon, update_slots):
    if update_slots:
        accum += grad * grad
    var -= grad * lr / (np.sqrt(accum) + epsilon)


@_ieee
def tf_apply_adagrad_v2(var: Array, accum: Array, grad: Array, lr: float, epsilon: float,
                        update_slots: bool) -> Array:
    """accum = accum + g*g (if update_slots);  var = var - g*lr / (sqrt(accum) + eps)."""
    T = var.dtype.type
    _adagrad_v2(var, accum, grad, T(lr), T(epsilon), update_slots)
    return var


@_ieee
def tf_sparse_apply_adagrad_v2(var: Array, accum: Array, grad: Array, indices: Array, lr: float, epsilon: float,
                               update_slots: bool) -> Array:
    """Per row: the dense AdagradV2 formula."""
    T = var.dtype.type
    lr, epsilon = T(lr), T(epsilon)
    for i, j in _rows(indices):
        _adagrad_v2(var[j], accum[j], grad[i], lr, epsilon, update_slots)
    return var


# --------------------------------------------------------------------------------------------
# ProximalAdagrad
# --------------------------------------------------------------------------------------------

def _proximal_adagrad(var, accum, grad, lr, l1, l2, l1_positive):
    T = var.dtype.type
    accum += grad * grad
    learning_rate = lr * (T(1) / np.sqrt(accum))
    var -= grad * learning_rate  # prox = var - g*learning_rate, written in place
    if l1_positive:
        var[...] = (np.sign(var) * np.maximum(np.abs(var) - learning_rate * l1, T(0))
                    / (T(1) + l2 * learning_rate))
    else:
        var[...] = var / (T(1) + l2 * learning_rate)


def _proximal_adagrad_scalars(var, lr, l1, l2):
    T = var.dtype.type
    lr, l1, l2 = T(lr), T(l1), T(l2)
    return lr, l1, l2, bool(l1 > 0)


@_ieee
def tf_apply_proximal_adagrad(var: Array, accum: Array, grad: Array, lr: float, l1: float, l2: float) -> Array:
    """accum = accum + g*g;  a = lr*rsqrt(accum);  prox = var - g*a;
    var = sign(prox)*max(|prox| - a*l1, 0) / (1 + l2*a) if l1 > 0, else prox / (1 + l2*a)."""
    _proximal_adagrad(var, accum, grad, *_proximal_adagrad_scalars(var, lr, l1, l2))
    return var


@_ieee
def tf_sparse_apply_proximal_adagrad(var: Array, accum: Array, grad: Array, indices: Array, lr: float, l1: float,
                                     l2: float) -> Array:
    """Per row: the dense ProximalAdagrad formula (TF's inner_dim == 1 path computes lr/sqrt(accum)
    and 1 + l2*a in double; this spec does not)."""
    scalars = _proximal_adagrad_scalars(var, lr, l1, l2)
    for i, j in _rows(indices):
        _proximal_adagrad(var[j], accum[j], grad[i], *scalars)
    return var


# --------------------------------------------------------------------------------------------
# AdagradDA
# --------------------------------------------------------------------------------------------

def _adagrad_da(var, gradient_accumulator, gradient_squared_accumulator, grad, lr, l1_positive, gs_l1, l2_gs_lr):
    T = var.dtype.type
    gradient_accumulator += grad
    gradient_squared_accumulator += grad * grad
    denom = l2_gs_lr + np.sqrt(gradient_squared_accumulator)
    if l1_positive:
        var[...] = (lr * T(-1) * np.sign(gradient_accumulator)
                    * np.maximum(np.abs(gradient_accumulator) - gs_l1, T(0)) / denom)
    else:
        var[...] = lr * gradient_accumulator * T(-1) / denom


def _adagrad_da_scalars(var, lr, l1, l2, global_step):
    T = var.dtype.type
    lr, l1, l2 = T(lr), T(l1), T(l2)
    gs = T(np.int64(global_step).astype(np.float32))  # static_cast<float>(int64): rounded once, then T
    return lr, bool(l1 > 0), gs * l1, l2 * (gs * lr)


@_ieee
def tf_apply_adagrad_da(var: Array, gradient_accumulator: Array, gradient_squared_accumulator: Array, grad: Array,
                        lr: float, l1: float, l2: float, global_step: int) -> Array:
    """ga = ga + g;  gga = gga + g*g;  t = float32(global_step);
    var = lr*(-1)*sign(ga)*max(|ga| - t*l1, 0) / (l2*(t*lr) + sqrt(gga)) if l1 > 0,
    else lr*ga*(-1) / (l2*(t*lr) + sqrt(gga))."""
    _adagrad_da(var, gradient_accumulator, gradient_squared_accumulator, grad,
                *_adagrad_da_scalars(var, lr, l1, l2, global_step))
    return var


@_ieee
def tf_sparse_apply_adagrad_da(var: Array, gradient_accumulator: Array, gradient_squared_accumulator: Array,
                               grad: Array, indices: Array, lr: float, l1: float, l2: float,
                               global_step: int) -> Array:
    """Per row: the dense AdagradDA formula.  (TF's sparse kernel writes the same value as
    -sign(ga)*max(|ga|/t - l1, 0) / (l2 + sqrt(gga)/(t*lr)), in double when inner_dim == 1:
    rounding differs, this spec uses the dense functor's expression.)"""
    scalars = _adagrad_da_scalars(var, lr, l1, l2, global_step)
    for i, j in _rows(indices):
        _adagrad_da(var[j], gradient_accumulator[j], gradient_squared_accumulator[j], grad[i], *scalars)
    return var


# --------------------------------------------------------------------------------------------
# Ftrl, FtrlV2
# --------------------------------------------------------------------------------------------

def _ftrl_scalars(var, lr, l1, l2, l2_shrinkage, lr_power, multiply_linear_by_lr):
    T = var.dtype.type
    lr, l1, l2, lr_power = T(lr), T(l1), T(l2), T(lr_power)
    two = T(2)
    two_l2_shrinkage = None if l2_shrinkage is None else two * T(l2_shrinkage)
    sqrt_branch = bool(lr_power == T(-0.5))  # TF's fast path
    if multiply_linear_by_lr:
        l1_t, two_l2_t = l1 * lr, two * l2 * lr
    else:
        l1_t, two_l2_t = l1, two * l2
    return lr, -lr_power, two_l2_shrinkage, sqrt_branch, multiply_linear_by_lr, l1_t, two_l2_t


def _ftrl(var, accum, linear, grad, lr, neg_lr_power, two_l2_shrinkage, sqrt_branch, multiply_linear_by_lr,
          l1_t, two_l2_t):
    # lazy expressions of the functor, computed from the OLD var and accum
    if two_l2_shrinkage is None:
        g = grad
    else:
        g = grad + two_l2_shrinkage * var  # grad_with_shrinkage (FtrlV2)
    new_accum = accum + grad * grad
    if sqrt_branch:
        new_accum_p = np.sqrt(new_accum)
        sigma = new_accum_p - np.sqrt(accum)
    else:
        new_accum_p = np.power(new_accum, neg_lr_power)
        sigma = new_accum_p - np.power(accum, neg_lr_power)
    if multiply_linear_by_lr:
        linear += g * lr - sigma * var
        y = new_accum_p + two_l2_t
    else:
        linear += g - sigma / lr * var
        y = new_accum_p / lr + two_l2_t
    x = l1_t * np.sign(linear) - linear
    var[...] = np.where(np.abs(linear) > l1_t, x / y, var.dtype.type(0))
    accum[...] = new_accum  # accum += grad*grad: the same value


@_ieee
def tf_apply_ftrl(var: Array, accum: Array, linear: Array, grad: Array, lr: float, l1: float, l2: float,
                  lr_power: float, multiply_linear_by_lr: bool) -> Array:
    """n = accum + g*g;  p(x) = sqrt(x) if lr_power == -0.5 else x**(-lr_power);
    linear += g - (p(n) - p(accum))/lr*var   [multiply_linear_by_lr: g*lr - (p(n) - p(accum))*var];
    var = (l1'*sign(linear) - linear) / (p(n)/lr + 2*l2) if |linear| > l1' else 0, with l1' = l1
    [multiply_linear_by_lr: l1' = l1*lr and denominator p(n) + 2*l2*lr];  accum = n."""
    _ftrl(var, accum, linear, grad, *_ftrl_scalars(var, lr, l1, l2, None, lr_power, multiply_linear_by_lr))
    return var


@_ieee
def tf_apply_ftrl_v2(var: Array, accum: Array, linear: Array, grad: Array, lr: float, l1: float, l2: float,
                     l2_shrinkage: float, lr_power: float, multiply_linear_by_lr: bool) -> Array:
    """Ftrl with g_s = g + 2*l2_shrinkage*var (old var) in the linear update (accum still uses g*g):
    linear += g_s - (p(n) - p(accum))/lr*var  [multiply_linear_by_lr: g_s*lr - (p(n) - p(accum))*var]."""
    _ftrl(var, accum, linear, grad,
          *_ftrl_scalars(var, lr, l1, l2, l2_shrinkage, lr_power, multiply_linear_by_lr))
    return var


@_ieee
def tf_sparse_apply_ftrl(var: Array, accum: Array, linear: Array, grad: Array, indices: Array, lr: float, l1: float,
                         l2: float, lr_power: float, multiply_linear_by_lr: bool) -> Array:
    """Per row: the dense Ftrl formula.  (TF's sparse kernel computes var as
    (clip(linear, -l1', l1') - linear) / y, the same value as the dense select; its inner_dim == 1
    path uses pow for lr_power == -0.5 too and (linear + g) - sigma*var: rounding only.)"""
    scalars = _ftrl_scalars(var, lr, l1, l2, None, lr_power, multiply_linear_by_lr)
    for i, j in _rows(indices):
        _ftrl(var[j], accum[j], linear[j], grad[i], *scalars)
    return var


@_ieee
def tf_sparse_apply_ftrl_v2(var: Array, accum: Array, linear: Array, grad: Array, indices: Array, lr: float,
                            l1: float, l2: float, l2_shrinkage: float, lr_power: float,
                            multiply_linear_by_lr: bool) -> Array:
    """Per row: the dense FtrlV2 formula (see tf_sparse_apply_ftrl)."""
    scalars = _ftrl_scalars(var, lr, l1, l2, l2_shrinkage, lr_power, multiply_linear_by_lr)
    for i, j in _rows(indices):
        _ftrl(var[j], accum[j], linear[j], grad[i], *scalars)
    return var


# --------------------------------------------------------------------------------------------
# Momentum, KerasMomentum
# --------------------------------------------------------------------------------------------

def _momentum(var, accum, grad, lr, momentum, use_nesterov):
    accum[...] = accum * momentum + grad
    if use_nesterov:
        var -= grad * lr + accum * momentum * lr
    else:
        var -= accum * lr


@_ieee
def tf_apply_momentum(var: Array, accum: Array, grad: Array, lr: float, momentum: float,
                      use_nesterov: bool) -> Array:
    """accum = accum*momentum + g;  var = var - (g*lr + accum*momentum*lr) (nesterov),
    else var - accum*lr."""
    T = var.dtype.type
    _momentum(var, accum, grad, T(lr), T(momentum), use_nesterov)
    return var


@_ieee
def tf_sparse_apply_momentum(var: Array, accum: Array, grad: Array, indices: Array, lr: float, momentum: float,
                             use_nesterov: bool) -> Array:
    """Per row: the dense Momentum formula (TF's sparse nesterov writes lr*g + lr*momentum*accum,
    (lr*momentum)*accum instead of (accum*momentum)*lr: rounding only)."""
    T = var.dtype.type
    lr, momentum = T(lr), T(momentum)
    for i, j in _rows(indices):
        _momentum(var[j], accum[j], grad[i], lr, momentum, use_nesterov)
    return var


def _keras_momentum(var, accum, grad, lr, momentum, use_nesterov):
    accum[...] = accum * momentum - grad * lr
    if use_nesterov:
        var += accum * momentum - grad * lr
    else:
        var += accum


@_ieee
def tf_apply_keras_momentum(var: Array, accum: Array, grad: Array, lr: float, momentum: float,
                            use_nesterov: bool) -> Array:
    """accum = accum*momentum - g*lr;  var = var + (accum*momentum - g*lr) (nesterov), else var + accum."""
    T = var.dtype.type
    _keras_momentum(var, accum, grad, T(lr), T(momentum), use_nesterov)
    return var


@_ieee
def tf_sparse_apply_keras_momentum(var: Array, accum: Array, grad: Array, indices: Array, lr: float,
                                   momentum: float, use_nesterov: bool) -> Array:
    """Per row: the dense KerasMomentum formula."""
    T = var.dtype.type
    lr, momentum = T(lr), T(momentum)
    for i, j in _rows(indices):
        _keras_momentum(var[j], accum[j], grad[i], lr, momentum, use_nesterov)
    return var


# --------------------------------------------------------------------------------------------
# Adam, AdamWithAmsgrad, AdaMax (dense only)
# --------------------------------------------------------------------------------------------

def _adam_scalars(var, beta1_power, beta2_power, lr, beta1, beta2, epsilon):
    T = var.dtype.type
    beta1_power, beta2_power, lr = T(beta1_power), T(beta2_power), T(lr)
    beta1, beta2, epsilon = T(beta1), T(beta2), T(epsilon)
    alpha = lr * np.sqrt(T(1) - beta2_power) / (T(1) - beta1_power)
    return alpha, beta1, T(1) - beta1, T(1) - beta2, epsilon


@_ieee
def tf_apply_adam(var: Array, m: Array, v: Array, grad: Array, beta1_power: float, beta2_power: float, lr: float,
                  beta1: float, beta2: float, epsilon: float, use_nesterov: bool) -> Array:
    """alpha = lr*sqrt(1 - beta2_power)/(1 - beta1_power);  m = m + (g - m)*(1-beta1);
    v = v + (g*g - v)*(1-beta2);  var = var - (m*alpha)/(sqrt(v) + eps),
    nesterov: var - ((g*(1-beta1) + beta1*m)*alpha)/(sqrt(v) + eps)."""
    alpha, beta1, one_minus_beta1, one_minus_beta2, epsilon = _adam_scalars(
        var, beta1_power, beta2_power, lr, beta1, beta2, epsilon)
    m += (grad - m) * one_minus_beta1
    v += (grad * grad - v) * one_minus_beta2
    if use_nesterov:
        var -= ((grad * one_minus_beta1 + beta1 * m) * alpha) / (np.sqrt(v) + epsilon)
    else:
        var -= (m * alpha) / (np.sqrt(v) + epsilon)
    return var


@_ieee
def tf_apply_adam_with_amsgrad(var: Array, m: Array, v: Array, vhat: Array, grad: Array, beta1_power: float,
                               beta2_power: float, lr: float, beta1: float, beta2: float, epsilon: float) -> Array:
    """Adam's alpha, m and v;  vhat = max(vhat, v);  var = var - (m*alpha)/(sqrt(vhat) + eps)."""
    alpha, _, one_minus_beta1, one_minus_beta2, epsilon = _adam_scalars(
        var, beta1_power, beta2_power, lr, beta1, beta2, epsilon)
    m += (grad - m) * one_minus_beta1
    v += (grad * grad - v) * one_minus_beta2
    vhat[...] = np.maximum(vhat, v)
    var -= (m * alpha) / (np.sqrt(vhat) + epsilon)
    return var


@_ieee
def tf_apply_ada_max(var: Array, m: Array, v: Array, grad: Array, beta1_power: float, lr: float, beta1: float,
                     beta2: float, epsilon: float) -> Array:
    """m = m + (g - m)*(1-beta1);  v = max(beta2*v, |g|);  var = var - lr/(1 - beta1_power) * (m/(v + eps))."""
    T = var.dtype.type
    beta1_power, lr, beta1, beta2, epsilon = T(beta1_power), T(lr), T(beta1), T(beta2), T(epsilon)
    step = lr / (T(1) - beta1_power)
    m += (grad - m) * (T(1) - beta1)
    v[...] = np.maximum(beta2 * v, np.abs(grad))
    var -= step * (m / (v + epsilon))
    return var


# --------------------------------------------------------------------------------------------
# RMSProp, CenteredRMSProp
# --------------------------------------------------------------------------------------------

def _rms_prop(var, ms, mom, grad, lr, one_minus_rho, momentum, epsilon):
    ms += (grad * grad - ms) * one_minus_rho
    mom[...] = mom * momentum + (grad * lr) / np.sqrt(ms + epsilon)
    var -= mom


def _rms_prop_scalars(var, lr, rho, momentum, epsilon):
    T = var.dtype.type
    lr, rho, momentum, epsilon = T(lr), T(rho), T(momentum), T(epsilon)
    return lr, T(1) - rho, momentum, epsilon


@_ieee
def tf_apply_rms_prop(var: Array, ms: Array, mom: Array, grad: Array, lr: float, rho: float, momentum: float,
                      epsilon: float) -> Array:
    """ms = ms + (g*g - ms)*(1-rho);  mom = mom*momentum + (g*lr)/sqrt(ms + eps);  var = var - mom."""
    _rms_prop(var, ms, mom, grad, *_rms_prop_scalars(var, lr, rho, momentum, epsilon))
    return var


@_ieee
def tf_sparse_apply_rms_prop(var: Array, ms: Array, mom: Array, grad: Array, indices: Array, lr: float, rho: float,
                             momentum: float, epsilon: float) -> Array:
    """Per row: the dense RMSProp formula (TF's sparse kernel writes ms*rho + g*g*(1-rho) and
    rsqrt(ms + eps)*lr*g: rounding only)."""
    scalars = _rms_prop_scalars(var, lr, rho, momentum, epsilon)
    for i, j in _rows(indices):
        _rms_prop(var[j], ms[j], mom[j], grad[i], *scalars)
    return var


def _centered_rms_prop(var, mg, ms, mom, grad, lr, one_minus_rho, momentum, epsilon):
    ms += (grad * grad - ms) * one_minus_rho
    mg += (grad - mg) * one_minus_rho
    denom = (ms - mg * mg) + epsilon
    mom[...] = mom * momentum + (grad * lr) / np.sqrt(denom)
    var -= mom


@_ieee
def tf_apply_centered_rms_prop(var: Array, mg: Array, ms: Array, mom: Array, grad: Array, lr: float, rho: float,
                               momentum: float, epsilon: float) -> Array:
    """ms = ms + (g*g - ms)*(1-rho);  mg = mg + (g - mg)*(1-rho);
    mom = mom*momentum + (g*lr)/sqrt((ms - mg*mg) + eps);  var = var - mom."""
    _centered_rms_prop(var, mg, ms, mom, grad, *_rms_prop_scalars(var, lr, rho, momentum, epsilon))
    return var


@_ieee
def tf_sparse_apply_centered_rms_prop(var: Array, mg: Array, ms: Array, mom: Array, grad: Array, indices: Array,
                                      lr: float, rho: float, momentum: float, epsilon: float) -> Array:
    """Per row: the dense CenteredRMSProp formula (TF's sparse kernel writes ms*rho + g*g*(1-rho),
    mg*rho + g*(1-rho), (ms + eps) - mg*mg and rsqrt(denom)*lr*g: rounding only)."""
    scalars = _rms_prop_scalars(var, lr, rho, momentum, epsilon)
    for i, j in _rows(indices):
        _centered_rms_prop(var[j], mg[j], ms[j], mom[j], grad[i], *scalars)
    return var


# --------------------------------------------------------------------------------------------
# AddSign, PowerSign (dense only)
# --------------------------------------------------------------------------------------------

@_ieee
def tf_apply_add_sign(var: Array, m: Array, grad: Array, lr: float, alpha: float, sign_decay: float,
                      beta: float) -> Array:
    """m = m*beta + g*(1-beta);  var = var - lr*(alpha + sign_decay*sign(g)*sign(m))*g."""
    T = var.dtype.type
    lr, alpha, sign_decay, beta = T(lr), T(alpha), T(sign_decay), T(beta)
    m[...] = m * beta + grad * (T(1) - beta)
    sign_gm = np.sign(grad) * np.sign(m)
    var -= lr * (alpha + sign_decay * sign_gm) * grad
    return var


@functools.lru_cache(maxsize=16)  # a training loop calls it with the same few (T, logbase, sign_decay)
def power_sign_scales(T, logbase, sign_decay):
    """PowerSign's ``exp(logbase*sign_decay * sign(g)*sign(m))`` takes three values (sign_gm is 1,
    -1 or 0; NaN gives NaN): ``(ls, e_pos, e_neg, e_zero)`` with ``ls = logbase*sign_decay`` in
    T and each exp computed once, in double by the C library's ``exp`` (``math.exp``; inf on
    overflow) and rounded once to T.  Every backend takes these values from here, so the op is
    bit for bit the same everywhere (an exp per element would differ in the last bit between
    NumPy's SIMD exp and libm's, and cost an exp per element)."""
    with np.errstate(all="ignore"):  # an overflow in T (the product, an exp's rounding) is inf, as in C
        ls = T(logbase) * T(sign_decay)

        def exp(x):
            if x != x:
                return T(np.nan)
            try:
                return T(math.exp(x))
            except OverflowError:
                return T(np.inf)
        x = float(ls)
        return ls, exp(x), exp(-x), exp(x * 0.0)


@_ieee
def tf_apply_power_sign(var: Array, m: Array, grad: Array, lr: float, logbase: float, sign_decay: float,
                        beta: float) -> Array:
    """m = m*beta + g*(1-beta);  var = var - lr*exp((logbase*sign_decay)*sign(g)*sign(m))*g
    (the exp's three values from :func:`power_sign_scales`)."""
    T = var.dtype.type
    lr, beta = T(lr), T(beta)
    ls, e_pos, e_neg, e_zero = power_sign_scales(T, logbase, sign_decay)
    m[...] = m * beta + grad * (T(1) - beta)
    sign_gm = np.sign(grad) * np.sign(m)
    grad_scale = np.where(sign_gm > 0, e_pos, np.where(sign_gm < 0, e_neg, np.where(sign_gm == 0, e_zero,
                                                                                      ls * sign_gm)))
    var -= lr * grad_scale * grad
    return var
