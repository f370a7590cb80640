"""The NumPy reference (the spec) against math that does not come from fastgd.

tests/test_rules.py shows that the compiled kernels equal the reference bit for bit; nothing
there could notice a wrong reference.  These tests can: every rule and option of the
reference (``fastgd.<rule>_step(backend="numpy")``, float64) against

1. one or two steps written out by hand, per rule, in plain Python floats (``math`` only,
   no NumPy) from the formula in the rule's docstring (fastgd/steps.py) -- no torch needed;
2. ``torch.optim.<X>`` (float64 tensors, ``foreach=False``: the single-tensor path) over 24
   or more steps, for every option torch has (``test_steps.test_reference_matches_torch``
   runs 6 steps of a few settings; these are the options and lengths it does not reach);
3. Lion, which torch lacks (and optax is not a dependency), against the paper's update
   (Chen et al. 2023, Algorithm 2) written in plain Python floats, over 24 steps;
4. ``fastgd.optim.<X>`` with two parameter groups of different lr / weight_decay against
   ``torch.optim.<X>`` with the same groups (Lion: against the plain-Python update), 20 steps.

Tolerances.  Hand steps: rel 1e-14 (the hand forms are algebraically equal to the reference's,
e.g. m_hat/(sqrt(v_hat)+eps) against lr/(1-b1^t) * m/(sqrt(v)/sqrt(1-b2^t)+eps): a few ulp
apart).  torch: the two are not ``==`` because torch orders the float64 operations differently
(``exp_avg.lerp_(g, 1-b1)`` where the reference computes b1*m + (1-b1)*g, division by
sqrt(1-b2^t) where the reference multiplies by its inverse, addcdiv, ...): each step differs by
a few ulp, and the difference is carried through the following steps.  Measured over these
cases (torch 2.13, x86-64): at most 1.6e-14 relative (~70 ulp) after 20-30 steps, most below
1e-14.  RTOL = 1e-12 (~4500 ulp) leaves a 60x margin
for other platforms' libm / SIMD paths, and is still 1e4-1e8 times smaller than the effect of
any of the bugs that tools/mutation_check.py injects.  ATOL: 1e-14 times the largest magnitude
of the array compared, for elements that cancel towards 0.

Tests that need torch take the ``torch`` fixture of tests/conftest.py: skipped without torch,
failed when FASTGD_REQUIRE_TORCH=1 (CI).
"""
import inspect
import math
import sys

import numpy as np
import pytest

import fastgd
import fastgd.optim
from fastgd._rules import RULES

import conftest

REF = "numpy"
RTOL = 1e-12
ATOL_REL = 1e-14
HAND_REL = 1e-14


# ---------------------------------------------------------------------------------------
# calling the reference from a dict of state arrays (the table's names)

def full_hyper(rule, hp):
    """Every hyperparameter of ``rule``: the table's defaults overridden by ``hp``."""
    return dict(RULES[rule].defaults, **hp)


def used_state(rule, hp):
    """The state a call of ``rule`` with ``hp`` uses (table order)."""
    h = full_hyper(rule, hp)
    return [s for s in RULES[rule].state if s.needed(h)]


def new_state(rule, hp, like, initial_accumulator_value=0.0):
    """Fresh state arrays as torch starts them: zeros, Adagrad's sum filled, mu_product = 1."""
    out = {}
    for s in used_state(rule, hp):
        if s.scalar:
            out[s.name] = np.ones(1)
        else:
            init = initial_accumulator_value if s.init == "initial_accumulator_value" else s.init
            out[s.name] = np.full_like(like, init, dtype=np.float64)
    return out


def ref_step(rule, param, grad, state, t, hp):
    """One step of the reference, in place: ``fastgd.<rule>_step(..., backend="numpy")``."""
    fn = getattr(fastgd, rule + "_step")
    sig = inspect.signature(fn).parameters
    args, kw = [param, grad], dict(hp, backend=REF)
    for s in RULES[rule].state:
        if s.name not in state:
            continue
        if sig[s.name].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            args.append(state[s.name])
        else:
            kw[s.name] = state[s.name]
    if RULES[rule].step is not None:
        kw["step"] = t
    out = fn(*args, **kw)
    assert out is param


def assert_close(actual, want, what, rtol=RTOL):
    actual, want = np.asarray(actual, dtype=np.float64), np.asarray(want, dtype=np.float64)
    atol = ATOL_REL * float(np.max(np.abs(want[np.isfinite(want)]), initial=0.0))
    np.testing.assert_allclose(actual, want, rtol=rtol, atol=atol, err_msg=what)


# ---------------------------------------------------------------------------------------
# 1. one step (and a second where state matters) by hand, plain Python floats
#
# Each hand_<rule>(p, g, s, t, **hyper) takes one element's param, gradient and state (a dict
# of floats), the step count and every hyperparameter, and returns (p, s) after the step,
# following the formula of the rule's docstring in fastgd/steps.py.

def _sign(x):
    return float((x > 0) - (x < 0))


def _pre(p, g, lr, weight_decay, maximize, decoupled=False):
    """g <- -g (maximize); g <- g + wd*p (L2) or p <- p*(1 - lr*wd) (decoupled)."""
    if maximize:
        g = -g
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    return p, g


def hand_sgd(p, g, s, t, lr, momentum, dampening, nesterov, weight_decay, maximize):
    p, g = _pre(p, g, lr, weight_decay, maximize)
    if momentum != 0:
        b = g if t == 1 else momentum * s["momentum_buffer"] + (1 - dampening) * g
        s = dict(s, momentum_buffer=b)
        d = g + momentum * b if nesterov else b
    else:
        d = g
    return p - lr * d, s


def _hand_adam(p, g, s, t, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled):
    p, g = _pre(p, g, lr, weight_decay, maximize, decoupled)
    m = beta1 * s["exp_avg"] + (1 - beta1) * g
    v = beta2 * s["exp_avg_sq"] + (1 - beta2) * g * g
    s = dict(s, exp_avg=m, exp_avg_sq=v)
    if amsgrad:
        v = max(s["max_exp_avg_sq"], v)
        s["max_exp_avg_sq"] = v
    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)   # Kingma & Ba, Algorithm 1
    return p - lr * m_hat / (math.sqrt(v_hat) + eps), s


def hand_adam(p, g, s, t, **h):
    return _hand_adam(p, g, s, t, decoupled=False, **h)


def hand_adamw(p, g, s, t, **h):
    return _hand_adam(p, g, s, t, decoupled=True, **h)


def hand_adamax(p, g, s, t, lr, beta1, beta2, eps, weight_decay, maximize):
    p, g = _pre(p, g, lr, weight_decay, maximize)
    m = beta1 * s["exp_avg"] + (1 - beta1) * g
    u = max(beta2 * s["exp_inf"], abs(g) + eps)
    return p - lr / (1 - beta1 ** t) * m / u, dict(s, exp_avg=m, exp_inf=u)


def hand_nadam(p, g, s, t, lr, beta1, beta2, eps, weight_decay, momentum_decay, decoupled_weight_decay, maximize):
    p, g = _pre(p, g, lr, weight_decay, maximize, decoupled_weight_decay)
    mu = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    prod = s["mu_product"] * mu                                        # P_t
    m = beta1 * s["exp_avg"] + (1 - beta1) * g
    v = beta2 * s["exp_avg_sq"] + (1 - beta2) * g * g
    d = math.sqrt(v / (1 - beta2 ** t)) + eps
    p = p - lr * (1 - mu) / (1 - prod) * g / d - lr * mu_next / (1 - prod * mu_next) * m / d
    return p, dict(s, exp_avg=m, exp_avg_sq=v, mu_product=prod)


def hand_radam(p, g, s, t, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, maximize):
    p, g = _pre(p, g, lr, weight_decay, maximize, decoupled_weight_decay)
    m = beta1 * s["exp_avg"] + (1 - beta1) * g
    v = beta2 * s["exp_avg_sq"] + (1 - beta2) * g * g
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2 ** t / (1 - beta2 ** t)
    if rho_t > 5:
        r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        p = p - lr * r / (1 - beta1 ** t) * m * math.sqrt(1 - beta2 ** t) / (math.sqrt(v) + eps)
    else:
        p = p - lr / (1 - beta1 ** t) * m
    return p, dict(s, exp_avg=m, exp_avg_sq=v)


def hand_adagrad(p, g, s, t, lr, lr_decay, weight_decay, eps, maximize):
    p, g = _pre(p, g, lr, weight_decay, maximize)
    acc = s["state_sum"] + g * g
    return p - lr / (1 + (t - 1) * lr_decay) * g / (math.sqrt(acc) + eps), dict(s, state_sum=acc)


def hand_adadelta(p, g, s, t, lr, rho, eps, weight_decay, maximize):
    p, g = _pre(p, g, lr, weight_decay, maximize)
    sq = rho * s["square_avg"] + (1 - rho) * g * g
    delta = math.sqrt(s["acc_delta"] + eps) / math.sqrt(sq + eps) * g
    acc = rho * s["acc_delta"] + (1 - rho) * delta * delta
    return p - lr * delta, dict(s, square_avg=sq, acc_delta=acc)


def hand_rmsprop(p, g, s, t, lr, alpha, eps, momentum, centered, weight_decay, maximize):
    p, g = _pre(p, g, lr, weight_decay, maximize)
    sq = alpha * s["square_avg"] + (1 - alpha) * g * g
    s = dict(s, square_avg=sq)
    if centered:
        ga = alpha * s["grad_avg"] + (1 - alpha) * g
        s["grad_avg"] = ga
        d = math.sqrt(sq - ga * ga) + eps
    else:
        d = math.sqrt(sq) + eps
    if momentum > 0:
        b = momentum * s["momentum_buffer"] + g / d
        s["momentum_buffer"] = b
        return p - lr * b, s
    return p - lr * g / d, s


def hand_lion(p, g, s, t, lr, beta1, beta2, weight_decay, maximize):
    """Chen et al. 2023, Algorithm 2 (decoupled weight decay: p <- p - lr*(sign(c) + wd*p))."""
    if maximize:
        g = -g
    m = s["exp_avg"]
    c = beta1 * m + (1 - beta1) * g
    p = p - lr * (_sign(c) + weight_decay * p)
    return p, dict(s, exp_avg=beta2 * m + (1 - beta2) * g)


HAND = {name: globals()["hand_" + name] for name in RULES}

P0 = [0.5, -1.5, 2.0, 0.0]
G1 = [0.2, -0.3, 0.0, 1.1]
G2 = [-0.4, 0.7, 0.25, 0.0]

# (id, rule, hyperparameters, initial state {name: 4 floats} (omitted: as torch starts it),
#  the steps taken (from step t0 on, one gradient each))
HAND_CASES = [
    ("sgd-plain", "sgd", dict(lr=0.1), {}, (1, 2)),
    ("sgd-momentum-dampening", "sgd", dict(lr=0.1, momentum=0.9, dampening=0.25, weight_decay=0.05, maximize=True),
     {"momentum_buffer": [9.0, 9.0, 9.0, 9.0]}, (1, 2)),   # step 1: the buffer is g, whatever it held
    ("sgd-nesterov-history", "sgd", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1),
     {"momentum_buffer": [0.1, -0.2, 0.3, 0.0]}, (7, 8)),
    ("adam-l2-maximize", "adam", dict(lr=0.01, beta1=0.8, beta2=0.9, eps=1e-3, weight_decay=0.1, maximize=True),
     {}, (1, 2)),
    ("adam-amsgrad-history", "adam", dict(lr=0.02, eps=1e-4, amsgrad=True),
     {"exp_avg": [0.1, 0.0, -0.05, 0.2], "exp_avg_sq": [0.01, 0.02, 0.0004, 0.5],
      "max_exp_avg_sq": [0.5, 0.0, 0.01, 0.4]}, (3, 4)),
    ("adamw", "adamw", dict(lr=0.05, beta1=0.7, beta2=0.95, eps=1e-3, weight_decay=0.2), {}, (1, 2)),
    ("adamw-amsgrad-maximize", "adamw", dict(lr=0.05, eps=1e-3, amsgrad=True, maximize=True),
     {"exp_avg": [0.1, 0.0, -0.05, 0.2], "exp_avg_sq": [0.01, 0.02, 0.0004, 0.5],
      "max_exp_avg_sq": [0.5, 0.0, 0.01, 0.4]}, (2, 3)),
    ("adamax", "adamax", dict(lr=0.02, beta1=0.8, beta2=0.9, eps=1e-2, weight_decay=0.1, maximize=True),
     {"exp_avg": [0.1, 0.0, -0.05, 0.2], "exp_inf": [0.5, 0.0, 0.05, 3.0]}, (1, 2)),
    ("nadam", "nadam", dict(lr=0.01, beta1=0.8, beta2=0.9, eps=1e-3, weight_decay=0.1, momentum_decay=0.3),
     {}, (1, 2)),
    ("nadam-decoupled-maximize", "nadam",
     dict(lr=0.01, eps=1e-3, weight_decay=0.1, decoupled_weight_decay=True, maximize=True), {}, (1, 2)),
    ("radam-unrectified", "radam", dict(lr=0.01, beta1=0.8, beta2=0.9, weight_decay=0.1, maximize=True),
     {}, (1, 2)),
    ("radam-both-branches", "radam", dict(lr=0.01, beta2=0.9, eps=1e-3, weight_decay=0.1,
                                          decoupled_weight_decay=True),
     {"exp_avg": [0.1, 0.0, -0.05, 0.2], "exp_avg_sq": [0.01, 0.02, 0.0004, 0.5]}, (5, 6)),  # rho_5 4.58, rho_6 5.39
    ("adagrad", "adagrad", dict(lr=0.1, lr_decay=0.5, weight_decay=0.1, eps=1e-3, maximize=True),
     {"state_sum": [0.3, 0.3, 0.3, 0.3]}, (1, 2)),
    ("adagrad-later", "adagrad", dict(lr=0.1, lr_decay=0.05), {"state_sum": [0.1, 0.0, 2.0, 0.5]}, (5, 6)),
    ("adadelta", "adadelta", dict(lr=0.5, rho=0.7, eps=1e-3, weight_decay=0.1, maximize=True),
     {"square_avg": [0.1, 0.0, 2.0, 0.5], "acc_delta": [0.01, 0.0, 0.2, 0.05]}, (1, 2)),
    ("rmsprop", "rmsprop", dict(lr=0.01, alpha=0.8, eps=1e-3, weight_decay=0.1), {}, (1, 2)),
    ("rmsprop-centered-momentum", "rmsprop",
     dict(lr=0.01, alpha=0.8, eps=1e-3, momentum=0.6, centered=True, maximize=True),
     {"square_avg": [0.1, 0.01, 2.0, 0.5], "grad_avg": [0.1, -0.05, 0.3, -0.2],
      "momentum_buffer": [0.5, -1.0, 0.0, 0.2]}, (1, 2)),
    ("lion", "lion", dict(lr=0.01, beta1=0.8, beta2=0.95, weight_decay=0.5),
     {"exp_avg": [-1.0, 1.0, 0.1, 0.0]}, (1, 2)),
    ("lion-maximize", "lion", dict(lr=0.01, weight_decay=0.2, maximize=True),
     {"exp_avg": [-1.0, 1.0, 0.1, 0.0]}, (1, 2)),
]


def test_every_rule_has_a_hand_case():
    assert {c[1] for c in HAND_CASES} == set(RULES)


@pytest.mark.parametrize("rule,hp,init,steps", [c[1:] for c in HAND_CASES], ids=[c[0] for c in HAND_CASES])
def test_steps_by_hand(rule, hp, init, steps):
    """Two steps of the reference against the docstring formula in plain Python floats, after
    each step param and every state it uses (NAdam's mu_product too), elementwise."""
    h = full_hyper(rule, hp)
    state = new_state(rule, hp, np.array(P0))
    for k, v in init.items():
        state[k][...] = v
    want_p = list(P0)
    want_s = [{k: float(v.flat[0] if v.size == 1 else v[i]) for k, v in state.items()} for i in range(4)]
    param = np.array(P0)
    for t, g in zip(steps, (G1, G2)):
        ref_step(rule, param, np.array(g), state, t, hp)
        for i in range(4):
            want_p[i], want_s[i] = HAND[rule](want_p[i], g[i], want_s[i], t, **h)
        for i in range(4):
            assert math.isclose(param[i], want_p[i], rel_tol=HAND_REL, abs_tol=1e-16), \
                "param[%d] after step %d: %r, by hand %r" % (i, t, param[i], want_p[i])
            for k, arr in state.items():
                got = float(arr.flat[0] if k == "mu_product" else arr[i])
                assert math.isclose(got, want_s[i][k], rel_tol=HAND_REL, abs_tol=1e-16), \
                    "%s[%d] after step %d: %r, by hand %r" % (k, i, t, got, want_s[i][k])


def test_radam_hand_cases_reach_both_branches():
    """The hand case (5, 6) at beta2=0.9 straddles the threshold: rho_5 <= 5 < rho_6."""
    rho = lambda t, b2: 2 / (1 - b2) - 1 - 2 * t * b2 ** t / (1 - b2 ** t)  # noqa: E731
    assert rho(5, 0.9) <= 5 < rho(6, 0.9)
    assert max(rho(t, 0.999) for t in range(1, 6)) <= 5 < min(rho(t, 0.999) for t in range(6, 31))


# ---------------------------------------------------------------------------------------
# 2. the reference against torch.optim, 24+ steps, every option torch has

@pytest.fixture
def torch64(torch):
    """torch with float64 as the default dtype (torch keeps scalar state such as NAdam's
    mu_product and the step count in it), restored afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(old)


def torch_kwargs(rule, hp):
    """torch.optim's keywords for fastgd's hyperparameters (betas as a pair)."""
    r = RULES[rule]
    kw = dict(hp)
    if r.betas and any(b in kw for b in r.betas):
        d = r.defaults
        kw["betas"] = (kw.pop(r.betas[0], d[r.betas[0]]), kw.pop(r.betas[1], d[r.betas[1]]))
    return kw


def gradients(n_steps, shape, seed):
    """One gradient per step, N(0, 1), with a few exact zeros (division by the accumulator,
    sign of 0)."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n_steps):
        g = rng.standard_normal(shape)
        if t in (2, 9):
            g.flat[:2] = 0.0
        out.append(g)
    return out


# (id, rule, fastgd hyperparameters (torch's equal them), steps, optimizer-only keywords)
TORCH_CASES = [
    ("sgd-maximize-wd", "sgd", dict(lr=0.05, weight_decay=0.1, maximize=True), 24, {}),
    ("sgd-maximize-no-wd", "sgd", dict(lr=0.05, maximize=True), 24, {}),
    ("sgd-momentum-dampening", "sgd", dict(lr=0.05, momentum=0.9, dampening=0.5, weight_decay=0.01), 24, {}),
    ("sgd-dampening-1", "sgd", dict(lr=0.05, momentum=0.5, dampening=1.0), 24, {}),
    ("sgd-nesterov-maximize-wd", "sgd", dict(lr=0.05, momentum=0.7, nesterov=True, weight_decay=0.1,
                                             maximize=True), 24, {}),
    ("adam-defaults", "adam", dict(lr=0.01), 30, {}),
    ("adam-maximize-wd", "adam", dict(lr=0.01, beta1=0.8, beta2=0.9, eps=1e-3, weight_decay=0.1, maximize=True),
     24, {}),
    ("adam-maximize-no-wd", "adam", dict(lr=0.01, maximize=True), 24, {}),
    ("adam-amsgrad-wd", "adam", dict(lr=0.01, beta1=0.8, beta2=0.9, eps=1e-3, weight_decay=0.05, amsgrad=True),
     24, {}),
    ("adamw-defaults", "adamw", dict(lr=0.01), 24, {}),
    ("adamw-amsgrad-maximize", "adamw", dict(lr=0.02, beta1=0.5, beta2=0.8, eps=1e-3, weight_decay=0.2,
                                             amsgrad=True, maximize=True), 24, {}),
    ("adamax-defaults", "adamax", dict(), 24, {}),
    ("adamax-eps-wd-maximize", "adamax", dict(lr=0.02, beta1=0.8, beta2=0.95, eps=1e-2, weight_decay=0.1,
                                              maximize=True), 24, {}),
    ("nadam-defaults", "nadam", dict(), 24, {}),
    ("nadam-momentum-decay-maximize-wd", "nadam", dict(lr=0.01, beta1=0.8, beta2=0.9, eps=1e-3, weight_decay=0.1,
                                                       momentum_decay=0.3, maximize=True), 24, {}),
    ("nadam-decoupled-maximize", "nadam", dict(lr=0.01, weight_decay=0.2, decoupled_weight_decay=True,
                                               maximize=True, momentum_decay=0.05), 24, {}),
    # RAdam: steps 1-5 take the unrectified branch (rho_t <= 5), steps 6-30 the rectified one,
    # both for beta2=0.999 (rho_5 = 4.996, rho_6 = 5.994) and beta2=0.9 (4.58, 5.39)
    ("radam-defaults-30", "radam", dict(lr=0.01), 30, {}),
    ("radam-beta2-0.9-wd-maximize", "radam", dict(lr=0.01, beta1=0.8, beta2=0.9, eps=1e-3, weight_decay=0.1,
                                                  maximize=True), 24, {}),
    ("radam-decoupled", "radam", dict(lr=0.01, beta2=0.9, weight_decay=0.2, decoupled_weight_decay=True), 24, {}),
    ("adagrad-defaults", "adagrad", dict(), 24, {}),
    ("adagrad-lr-decay-init-wd-maximize", "adagrad", dict(lr=0.1, lr_decay=0.2, weight_decay=0.05, eps=1e-3,
                                                          maximize=True), 24, {"initial_accumulator_value": 0.5}),
    ("adagrad-init", "adagrad", dict(lr=0.5, lr_decay=0.01), 24, {"initial_accumulator_value": 0.1}),
    ("adadelta-defaults", "adadelta", dict(), 24, {}),
    ("adadelta-rho-lr-eps", "adadelta", dict(lr=0.3, rho=0.5, eps=1e-3), 24, {}),
    ("adadelta-wd-maximize", "adadelta", dict(lr=2.0, rho=0.95, weight_decay=0.1, maximize=True), 24, {}),
    ("rmsprop-defaults", "rmsprop", dict(), 24, {}),
    ("rmsprop-centered-momentum-wd-maximize", "rmsprop", dict(lr=0.01, alpha=0.9, eps=1e-3, momentum=0.5,
                                                              centered=True, weight_decay=0.05, maximize=True),
     24, {}),
    ("rmsprop-centered", "rmsprop", dict(lr=0.01, alpha=0.8, eps=1e-3, centered=True), 24, {}),
    ("rmsprop-momentum", "rmsprop", dict(lr=0.01, alpha=0.5, momentum=0.9, weight_decay=0.01), 24, {}),
]


def test_torch_cases_cover_every_rule_but_lion():
    assert {c[1] for c in TORCH_CASES} == set(RULES) - {"lion"}


def _torch_state(torch_state, s):
    """fastgd's state array ``s`` as found in a torch.optim state dict (numpy, float64)."""
    return torch_state[s.torch].detach().numpy().astype(np.float64)


@pytest.mark.parametrize("rule,hp,n_steps,extra", [c[1:] for c in TORCH_CASES], ids=[c[0] for c in TORCH_CASES])
def test_reference_matches_torch_over_many_steps(torch64, rule, hp, n_steps, extra):
    """``n_steps`` steps of the reference and of torch.optim from the same start; after every
    step param and every state array agree to RTOL (see the module docstring)."""
    torch = torch64
    shape = (3, 5)
    rng = np.random.default_rng(11)
    p0 = rng.standard_normal(shape)
    tp = torch.nn.Parameter(torch.tensor(p0))
    opt = getattr(torch.optim, RULES[rule].optimizer)([tp], foreach=False, **torch_kwargs(rule, hp), **extra)
    param = p0.copy()
    state = new_state(rule, hp, p0, **extra)
    for t, g in enumerate(gradients(n_steps, shape, seed=len(rule) + n_steps), start=1):
        tp.grad = torch.tensor(g)
        opt.step()
        ref_step(rule, param, g, state, t, hp)
        assert_close(param, tp.detach().numpy(), "param after step %d" % t)
        tstate = opt.state[tp]
        for s in used_state(rule, hp):
            assert_close(state[s.name], _torch_state(tstate, s).reshape(state[s.name].shape),
                         "%s after step %d" % (s.name, t))


def test_sgd_first_step_buffer_is_the_gradient(torch64):
    """torch.optim.SGD: the buffer starts as a copy of the first (effective) gradient, ignoring
    dampening; fastgd.sgd_step does the same with step=1 (and only then: with step=None
    the zero buffer is scaled by (1 - dampening))."""
    torch = torch64
    p0, g = np.array([1.0, -2.0, 0.5]), np.array([0.3, 0.0, -1.0])
    hp = dict(lr=0.1, momentum=0.9, dampening=0.75, weight_decay=0.1, maximize=True)
    tp = torch.nn.Parameter(torch.tensor(p0))
    opt = torch.optim.SGD([tp], foreach=False, **hp)
    tp.grad = torch.tensor(g)
    opt.step()
    p, b = p0.copy(), np.zeros(3)
    fastgd.sgd_step(p, g, b, step=1, backend=REF, **hp)
    np.testing.assert_array_equal(b, opt.state[tp]["momentum_buffer"].numpy())
    assert_close(p, tp.detach().numpy(), "param")  # torch's add_(alpha=-lr) may round differently (1 ulp)
    np.testing.assert_array_equal(b, -g + 0.1 * p0)
    p, b = p0.copy(), np.zeros(3)
    fastgd.sgd_step(p, g, b, step=None, backend=REF, **hp)
    np.testing.assert_allclose(b, 0.25 * (-g + 0.1 * p0), rtol=1e-15)


# ---------------------------------------------------------------------------------------
# 3. Lion: the paper's update in plain Python floats, 24 steps

LION_CASES = [
    dict(),
    dict(lr=0.01, weight_decay=0.5),
    dict(lr=0.003, beta1=0.95, beta2=0.98, weight_decay=0.1, maximize=True),
    dict(lr=0.01, beta1=0.0, beta2=1.0),       # edge values: sign(g); the momentum never moves
    dict(lr=0.01, beta1=1.0, beta2=0.0),       # sign of the previous gradient
]


@pytest.mark.parametrize("hp", LION_CASES, ids=[",".join("%s=%s" % kv for kv in c.items()) or "defaults"
                                                 for c in LION_CASES])
def test_lion_matches_the_paper_over_many_steps(hp):
    h = full_hyper("lion", hp)
    shape = (12,)
    p0 = np.random.default_rng(3).standard_normal(shape)
    param, state = p0.copy(), new_state("lion", hp, p0)
    want_p = [float(x) for x in p0]
    want_s = [{"exp_avg": 0.0} for _ in want_p]
    for t, g in enumerate(gradients(24, shape, seed=5), start=1):
        ref_step("lion", param, g, state, t, hp)
        for i in range(len(want_p)):
            want_p[i], want_s[i] = hand_lion(want_p[i], float(g[i]), want_s[i], t, **h)
        assert_close(param, want_p, "param after step %d" % t)
        assert_close(state["exp_avg"], [s["exp_avg"] for s in want_s], "exp_avg after step %d" % t)


# ---------------------------------------------------------------------------------------
# 4. the optimizer objects, two parameter groups, against torch.optim (Lion: by hand)

# (optimizer keywords shared by both libraries, group 0 overrides, group 1 overrides)
OPTIM_CASES = {
    "sgd": (dict(lr=0.05, momentum=0.9, dampening=0.3), dict(lr=0.1, weight_decay=0.1), dict(weight_decay=0.0)),
    "adam": (dict(lr=0.01, amsgrad=True, maximize=True), dict(lr=0.02, weight_decay=0.1), dict(weight_decay=0.0)),
    "adamw": (dict(lr=0.01, betas=(0.8, 0.9)), dict(lr=0.03, weight_decay=0.2), dict()),
    "adamax": (dict(lr=0.01), dict(lr=0.03, weight_decay=0.1), dict(weight_decay=0.0)),
    "nadam": (dict(lr=0.01, momentum_decay=0.1), dict(lr=0.02, weight_decay=0.1), dict(weight_decay=0.0)),
    "radam": (dict(lr=0.01, betas=(0.9, 0.9), decoupled_weight_decay=True), dict(lr=0.02, weight_decay=0.1),
              dict(weight_decay=0.0)),
    "adagrad": (dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.2), dict(lr=0.3, weight_decay=0.1),
                dict(weight_decay=0.0)),
    "adadelta": (dict(lr=0.5, rho=0.8), dict(lr=1.0, weight_decay=0.1), dict(weight_decay=0.0)),
    "rmsprop": (dict(lr=0.01, momentum=0.5, centered=True), dict(lr=0.02, weight_decay=0.1), dict(weight_decay=0.0)),
    "lion": (dict(lr=0.01, betas=(0.9, 0.95)), dict(lr=0.003, weight_decay=0.5), dict(weight_decay=0.0)),
}
SHAPES = [(4, 3), (5,), (2, 2)]  # parameters 0 and 1 in group 0, parameter 2 in group 1


def _groups(arrays, g0, g1):
    return [dict(g0, params=arrays[:2]), dict(g1, params=arrays[2:])]


def _run_fastgd_optim(rule, backend, n_steps=20):
    shared, g0, g1 = OPTIM_CASES[rule]
    rng = np.random.default_rng(21)
    params = [rng.standard_normal(s) for s in SHAPES]
    start = [p.copy() for p in params]
    opt = fastgd.optim.OPTIMIZERS[rule](_groups(params, g0, g1), backend=backend, **shared)
    grads = [gradients(n_steps, s, seed=31 + k) for k, s in enumerate(SHAPES)]
    history = []
    for t in range(n_steps):
        opt.step([grads[k][t] for k in range(len(SHAPES))])
        history.append(([p.copy() for p in params], [{k: np.array(v) for k, v in opt.state[i].items()}
                                                     for i in range(len(SHAPES))]))
    return start, grads, history


def test_optim_cases_cover_every_rule():
    assert set(OPTIM_CASES) == set(RULES) == set(fastgd.optim.OPTIMIZERS)


@pytest.mark.parametrize("rule", sorted(set(OPTIM_CASES) - {"lion"}))
def test_optimizer_with_two_groups_matches_torch(torch64, rule, backend):
    """fastgd.optim.<X> with two groups of different lr / weight_decay, 20 steps, against
    torch.optim.<X> with the same groups: every parameter and its state after every step."""
    torch = torch64
    start, grads, history = _run_fastgd_optim(rule, backend)
    shared, g0, g1 = OPTIM_CASES[rule]
    tps = [torch.nn.Parameter(torch.tensor(p)) for p in start]
    opt = getattr(torch.optim, RULES[rule].optimizer)(_groups(tps, g0, g1), foreach=False, **shared)
    for t, (params, states) in enumerate(history):
        for k, tp in enumerate(tps):
            tp.grad = torch.tensor(grads[k][t])
        opt.step()
        for k, tp in enumerate(tps):
            assert_close(params[k], tp.detach().numpy(), "parameter %d after step %d" % (k, t + 1))
            for name, arr in states[k].items():
                if name == "step":
                    continue
                want = opt.state[tp][name].detach().numpy()
                assert_close(arr, want.reshape(arr.shape), "state %r of parameter %d after step %d"
                             % (name, k, t + 1))


def test_lion_optimizer_with_two_groups_matches_the_paper(backend):
    start, grads, history = _run_fastgd_optim("lion", backend)
    shared, g0, g1 = OPTIM_CASES["lion"]
    beta1, beta2 = shared["betas"]
    hyper = [dict(lr=g0["lr"], weight_decay=g0["weight_decay"]), dict(lr=shared["lr"], weight_decay=0.0)]
    want = [[float(x) for x in p.ravel()] for p in start]
    mom = [[{"exp_avg": 0.0} for _ in p] for p in want]
    for t, (params, states) in enumerate(history):
        for k in range(len(SHAPES)):
            h = dict(hyper[0 if k < 2 else 1], beta1=beta1, beta2=beta2, maximize=False)
            g = grads[k][t].ravel()
            for i in range(len(want[k])):
                want[k][i], mom[k][i] = hand_lion(want[k][i], float(g[i]), mom[k][i], t + 1, **h)
            assert_close(params[k].ravel(), want[k], "parameter %d after step %d" % (k, t + 1))
            assert_close(states[k]["exp_avg"].ravel(), [m["exp_avg"] for m in mom[k]],
                         "exp_avg of parameter %d after step %d" % (k, t + 1))


# ---------------------------------------------------------------------------------------
# 5. the torch-required helper of tests/conftest.py

@pytest.mark.parametrize("env,outcome", [(None, "skip"), ("0", "skip"), ("1", "fail"), ("yes", "fail"),
                                         ("maybe", "fail")])
def test_torch_helper_skips_or_fails_as_the_environment_says(monkeypatch, env, outcome):
    """With torch not importable: a skip, unless FASTGD_REQUIRE_TORCH=1 (then a failure
    naming the variable); an unrecognized value is a failure too."""
    monkeypatch.setitem(sys.modules, "torch", None)   # makes ``import torch`` raise ImportError
    if env is None:
        monkeypatch.delenv("FASTGD_REQUIRE_TORCH", raising=False)
    else:
        monkeypatch.setenv("FASTGD_REQUIRE_TORCH", env)
    expected = pytest.skip.Exception if outcome == "skip" else pytest.fail.Exception
    with pytest.raises(expected) as info:
        conftest.torch_or_skip()
    assert "FASTGD_REQUIRE_TORCH" in str(info.value)


def test_torch_helper_returns_torch_when_it_imports(monkeypatch):
    fake = type(sys)("torch")
    monkeypatch.setitem(sys.modules, "torch", fake)
    monkeypatch.setenv("FASTGD_REQUIRE_TORCH", "1")
    assert conftest.torch_or_skip() is fake
