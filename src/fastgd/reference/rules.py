"""Update rules in plain NumPy: THE SPEC.

Every function updates ``param`` and its state arrays *in place* and returns ``param``.
Arguments arrive already validated (see ``fastgd._validate``): arrays of one float dtype,
one shape, C-contiguous, not overlapping; hyperparameters are Python numbers.

Scalars are computed in Python (float64) and enter the array arithmetic as weak Python
floats, so a float32 update runs in float32 exactly as the compiled kernels do.  The order
of operations here is the order the Cython and numba kernels follow, line by line; the
semantics (formulas, defaults, eps placement, bias correction, weight decay, ``maximize``,
first step) are those of ``torch.optim`` of the same name.

The signatures are the backends' contract: the Cython and numba kernels take the same
parameters in the same order (tests/test_backends.py checks it), so ``fastgd.steps`` may pass
the hyperparameters by position on its hot path.

Shared conventions (as in torch.optim):
  * ``maximize``: the gradient is negated first.
  * ``weight_decay`` (L2, coupled): ``g = g + weight_decay * param`` before anything else;
    with ``decoupled_weight_decay`` instead ``param *= 1 - lr * weight_decay`` (AdamW).
"""
from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["sgd", "adam", "adamax", "nadam", "radam", "adagrad", "adadelta", "rmsprop", "lion",
           "nadam_mu", "copy_skeleton"]


def _ieee(kernel):
    """Run a kernel under IEEE arithmetic whatever the caller's numpy error state: overflow,
    division by zero and invalid operations give inf/NaN as in the compiled kernels, and never
    an exception or a warning (``np.seterr(all="raise")`` or ``-W error`` would otherwise stop
    a step halfway, after some of its arrays were written)."""
    @functools.wraps(kernel)
    def run(*args, **kwargs):
        with np.errstate(all="ignore"):
            return kernel(*args, **kwargs)
    return run


def _prologue(param, grad, lr, weight_decay, maximize, decoupled_weight_decay=False):
    """maximize / weight decay, shared by every rule.  Returns the effective gradient."""
    if maximize:
        grad = grad * -1.0  # as the kernels do (sign * g): -grad would also flip the sign bit of NaN
    if weight_decay != 0:
        if decoupled_weight_decay:
            param *= 1.0 - lr * weight_decay
        else:
            grad = grad + weight_decay * param
    return grad


@_ieee
def sgd(param: NDArray[Any], grad: NDArray[Any], momentum_buffer: Any, lr: float, momentum: float, dampening: float,
        nesterov: bool, weight_decay: float, maximize: bool, first_step: bool) -> NDArray[Any]:
    """g = g + wd*p;  b = g (first step) | mu*b + (1-dampening)*g;  d = g + mu*b (nesterov) | b;
    p = p - lr*d."""
    grad = _prologue(param, grad, lr, weight_decay, maximize)
    if momentum != 0:
        if first_step:
            momentum_buffer[...] = grad
        else:
            momentum_buffer *= momentum
            momentum_buffer += (1.0 - dampening) * grad
        if nesterov:
            grad = grad + momentum * momentum_buffer
        else:
            grad = momentum_buffer
    param -= lr * grad
    return param


@_ieee
def adam(param: NDArray[Any], grad: NDArray[Any], exp_avg: NDArray[Any], exp_avg_sq: NDArray[Any], max_exp_avg_sq: Any,
         step: int, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, amsgrad: bool,
         maximize: bool, decoupled_weight_decay: bool) -> NDArray[Any]:
    """m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;  vmax = max(vmax, v) (amsgrad);
    p = p - lr/(1-b1^t) * m / (sqrt(v or vmax)/sqrt(1-b2^t) + eps)."""
    grad = _prologue(param, grad, lr, weight_decay, maximize, decoupled_weight_decay)
    step_size = lr / (1.0 - beta1 ** step)
    inv_bc2_sqrt = 1.0 / math.sqrt(1.0 - beta2 ** step)
    exp_avg *= beta1
    exp_avg += (1.0 - beta1) * grad
    exp_avg_sq *= beta2
    exp_avg_sq += (1.0 - beta2) * (grad * grad)
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        denom = np.sqrt(max_exp_avg_sq) * inv_bc2_sqrt + eps
    else:
        denom = np.sqrt(exp_avg_sq) * inv_bc2_sqrt + eps
    param -= step_size * (exp_avg / denom)
    return param


@_ieee
def adamax(param: NDArray[Any], grad: NDArray[Any], exp_avg: NDArray[Any], exp_inf: NDArray[Any], step: int, lr: float,
           beta1: float, beta2: float, eps: float, weight_decay: float, maximize: bool) -> NDArray[Any]:
    """m = b1*m + (1-b1)*g;  u = max(b2*u, |g| + eps);  p = p - lr/(1-b1^t) * m / u."""
    grad = _prologue(param, grad, lr, weight_decay, maximize)
    step_size = lr / (1.0 - beta1 ** step)
    exp_avg *= beta1
    exp_avg += (1.0 - beta1) * grad
    np.maximum(beta2 * exp_inf, np.abs(grad) + eps, out=exp_inf)
    param -= step_size * (exp_avg / exp_inf)
    return param


def nadam_mu(step: int, beta1: float, momentum_decay: float) -> float:
    """NAdam's momentum schedule: mu_t = b1 * (1 - 0.5 * 0.96^(t * momentum_decay))."""
    return beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))


@_ieee
def nadam(param: NDArray[Any], grad: NDArray[Any], exp_avg: NDArray[Any], exp_avg_sq: NDArray[Any], step: int,
          mu_product: float, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
          momentum_decay: float, maximize: bool, decoupled_weight_decay: bool) -> NDArray[Any]:
    """mu_t = b1*(1 - 0.5*0.96^(t*psi)), P_t = mu_product*mu_t (the running product);
    m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;  d = sqrt(v/(1-b2^t)) + eps;
    p = p - lr*(1-mu_t)/(1-P_t) * g/d - lr*mu_{t+1}/(1-P_t*mu_{t+1}) * m/d.

    ``mu_product`` is the product of mu_1 .. mu_{t-1} (1.0 at the first step); the caller
    keeps ``mu_product * nadam_mu(step, ...)`` for the next step.
    """
    grad = _prologue(param, grad, lr, weight_decay, maximize, decoupled_weight_decay)
    mu = nadam_mu(step, beta1, momentum_decay)
    mu_next = nadam_mu(step + 1, beta1, momentum_decay)
    mu_product = mu_product * mu
    coef_grad = lr * (1.0 - mu) / (1.0 - mu_product)
    coef_avg = lr * mu_next / (1.0 - mu_product * mu_next)
    inv_bc2 = 1.0 / (1.0 - beta2 ** step)
    exp_avg *= beta1
    exp_avg += (1.0 - beta1) * grad
    exp_avg_sq *= beta2
    exp_avg_sq += (1.0 - beta2) * (grad * grad)
    denom = np.sqrt(exp_avg_sq * inv_bc2) + eps
    param -= coef_grad * (grad / denom)
    param -= coef_avg * (exp_avg / denom)
    return param


@_ieee
def radam(param: NDArray[Any], grad: NDArray[Any], exp_avg: NDArray[Any], exp_avg_sq: NDArray[Any], step: int,
          lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, maximize: bool,
          decoupled_weight_decay: bool) -> NDArray[Any]:
    """m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;  rho_inf = 2/(1-b2) - 1;
    rho_t = rho_inf - 2 t b2^t/(1-b2^t);  if rho_t > 5:
    p = p - lr*r_t/(1-b1^t) * m * sqrt(1-b2^t)/(sqrt(v) + eps) with
    r_t = sqrt((rho_t-4)(rho_t-2)rho_inf / ((rho_inf-4)(rho_inf-2)rho_t)), else p = p - lr/(1-b1^t) * m."""
    grad = _prologue(param, grad, lr, weight_decay, maximize, decoupled_weight_decay)
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * (beta2 ** step) / bias_correction2
    exp_avg *= beta1
    exp_avg += (1.0 - beta1) * grad
    exp_avg_sq *= beta2
    exp_avg_sq += (1.0 - beta2) * (grad * grad)
    if rho_t > 5.0:
        rect = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
        step_size = lr * rect * math.sqrt(bias_correction2) / bias_correction1
        param -= step_size * (exp_avg / (np.sqrt(exp_avg_sq) + eps))
    else:
        param -= (lr / bias_correction1) * exp_avg
    return param


@_ieee
def adagrad(param: NDArray[Any], grad: NDArray[Any], state_sum: NDArray[Any], step: int, lr: float, lr_decay: float,
            weight_decay: float, eps: float, maximize: bool) -> NDArray[Any]:
    """s = s + g*g;  p = p - lr/(1 + (t-1)*lr_decay) * g / (sqrt(s) + eps)."""
    grad = _prologue(param, grad, lr, weight_decay, maximize)
    clr = lr / (1.0 + (step - 1) * lr_decay)
    state_sum += grad * grad
    param -= clr * (grad / (np.sqrt(state_sum) + eps))
    return param


@_ieee
def adadelta(param: NDArray[Any], grad: NDArray[Any], square_avg: NDArray[Any], acc_delta: NDArray[Any], lr: float,
             rho: float, eps: float, weight_decay: float, maximize: bool) -> NDArray[Any]:
    """s = rho*s + (1-rho)*g*g;  d = sqrt(a + eps)/sqrt(s + eps) * g;
    a = rho*a + (1-rho)*d*d;  p = p - lr*d."""
    grad = _prologue(param, grad, lr, weight_decay, maximize)
    square_avg *= rho
    square_avg += (1.0 - rho) * (grad * grad)
    delta = np.sqrt(acc_delta + eps) / np.sqrt(square_avg + eps) * grad
    acc_delta *= rho
    acc_delta += (1.0 - rho) * (delta * delta)
    param -= lr * delta
    return param


@_ieee
def rmsprop(param: NDArray[Any], grad: NDArray[Any], square_avg: NDArray[Any], momentum_buffer: Any, grad_avg: Any,
            lr: float, alpha: float, eps: float, weight_decay: float, momentum: float, centered: bool,
            maximize: bool) -> NDArray[Any]:
    """s = a*s + (1-a)*g*g;  (centered) ga = a*ga + (1-a)*g, avg = sqrt(s - ga*ga) + eps,
    else avg = sqrt(s) + eps;  momentum > 0: b = mu*b + g/avg, p = p - lr*b;  else p = p - lr*g/avg."""
    grad = _prologue(param, grad, lr, weight_decay, maximize)
    square_avg *= alpha
    square_avg += (1.0 - alpha) * (grad * grad)
    if centered:
        grad_avg *= alpha
        grad_avg += (1.0 - alpha) * grad
        avg = np.sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        avg = np.sqrt(square_avg) + eps
    if momentum > 0:
        momentum_buffer *= momentum
        momentum_buffer += grad / avg
        param -= lr * momentum_buffer
    else:
        param -= lr * (grad / avg)
    return param


@_ieee
def lion(param: NDArray[Any], grad: NDArray[Any], exp_avg: NDArray[Any], lr: float, beta1: float, beta2: float,
         weight_decay: float, maximize: bool) -> NDArray[Any]:
    """c = b1*m + (1-b1)*g;  p = p*(1 - lr*wd) - lr*sign(c);  m = b2*m + (1-b2)*g.
    (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", decoupled decay as in optax.)"""
    if maximize:
        grad = -grad
    if weight_decay != 0:
        param *= 1.0 - lr * weight_decay
    update = beta1 * exp_avg + (1.0 - beta1) * grad
    param -= lr * np.sign(update)
    exp_avg *= beta2
    exp_avg += (1.0 - beta2) * grad
    return param


def copy_skeleton(grad: NDArray[Any], *outs: NDArray[Any]) -> NDArray[Any]:
    """Benchmark skeleton: ``out += grad`` for every out; moves the bytes of a rule that reads
    ``grad`` and reads and writes ``outs`` (param and its state arrays)."""
    for out in outs:
        out += grad
    return outs[0]
