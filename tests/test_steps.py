"""The step kernels against the NumPy reference (the oracle), and the reference against
independent math (hand-computed steps, published results, torch.optim when installed).

Oracle tests: hypothesis draws a rule's hyperparameters and options, a shape (0-d to 3-D,
sometimes above the serial cutoff), a random state and one gradient per step (sometimes with
NaN/inf); the compiled backend runs the sequence of steps in place, and after every step its
param and *every* state array must equal what the reference computes from the same arrays, to
round-off (see "the comparison and its tolerance" below for the bound and why).
"""
import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

import fastgd
from fastgd._rules import RULES as TABLE

REF = "numpy"
RULES = tuple(TABLE)  # every rule of the table
STEP_TAKING = {r for r, rule in TABLE.items() if rule.step == "required"}   # step= required
DEFAULT_CUTOFF = fastgd.serial_cutoff()


# ---------------------------------------------------------------------------------------
# what a call looks like, per rule

def state_names(rule, hp):
    """(positional state arrays, keyword state arrays) a call of ``rule`` with
    hyperparameters ``hp`` takes, in the documented order."""
    if rule == "sgd":
        return (["momentum_buffer"] if hp.get("momentum", 0.0) != 0 else []), []
    if rule in ("adam", "adamw"):
        return ["exp_avg", "exp_avg_sq"], (["max_exp_avg_sq"] if hp.get("amsgrad", False) else [])
    if rule == "adamax":
        return ["exp_avg", "exp_inf"], []
    if rule in ("nadam", "radam"):
        return ["exp_avg", "exp_avg_sq"], []
    if rule == "adagrad":
        return ["state_sum"], []
    if rule == "adadelta":
        return ["square_avg", "acc_delta"], []
    if rule == "rmsprop":
        return ["square_avg"], ((["momentum_buffer"] if hp.get("momentum", 0.0) > 0 else [])
                                + (["grad_avg"] if hp.get("centered", False) else []))
    if rule == "lion":
        return ["exp_avg"], []
    raise AssertionError(rule)


def call(rule, param, grad, states, step, hp, backend, *, pass_step=True, mu_array=False):
    """One public step call.  ``states`` maps state names to arrays (``mu_product`` too)."""
    pos, kw = state_names(rule, hp)
    args = [param, grad] + [states[n] for n in pos]
    kwargs = dict(hp)
    kwargs.update((n, states[n]) for n in kw)
    if rule == "nadam" and mu_array:
        args.append(states["mu_product"])
    if rule in STEP_TAKING or (rule == "sgd" and pass_step):
        kwargs["step"] = step
    with np.errstate(all="ignore"):   # the reference warns where NaN/inf arise; they are compared
        return getattr(fastgd, rule + "_step")(*args, backend=backend, **kwargs)


# ---------------------------------------------------------------------------------------
# hypothesis strategies: hyperparameters in their valid ranges, every option

def log_uniform(lo, hi):
    return st.floats(lo, hi).map(lambda e: 10.0 ** e)


def unit(hi, special=(0.0, 0.5, 0.9)):
    """A value in [0, hi], with the usual and the edge values drawn often."""
    return st.one_of(st.sampled_from(special), st.floats(0.0, hi))


LR = log_uniform(-4, 0)
WEIGHT_DECAY = st.one_of(st.just(0.0), log_uniform(-4, -0.5))
EPS = st.one_of(st.just(1e-8), log_uniform(-10, -2))
BETA1 = unit(0.99)
BETA2 = unit(0.9999, (0.0, 0.9, 0.99, 0.999))
MOMENTUM = st.one_of(st.just(0.0), st.sampled_from([0.5, 0.9]), st.floats(0.01, 0.99))   # 0: no buffer


@st.composite
def hyper(draw, rule):
    hp = {"lr": draw(LR), "weight_decay": draw(WEIGHT_DECAY), "maximize": draw(st.booleans())}
    if rule == "sgd":
        hp["momentum"] = draw(MOMENTUM)
        hp["nesterov"] = draw(st.booleans()) if hp["momentum"] > 0 else False
        hp["dampening"] = 0.0 if hp["nesterov"] else draw(unit(1.0, (0.0, 0.1, 1.0)))
    elif rule in ("adam", "adamw", "adamax", "nadam", "radam"):
        hp.update(beta1=draw(BETA1), beta2=draw(BETA2), eps=draw(EPS))
        if rule in ("adam", "adamw"):
            hp["amsgrad"] = draw(st.booleans())
        if rule == "nadam":
            hp["momentum_decay"] = draw(st.one_of(st.just(4e-3), st.floats(0.0, 0.1)))
        if rule in ("nadam", "radam"):
            hp["decoupled_weight_decay"] = draw(st.booleans())
    elif rule == "adagrad":
        hp.update(lr_decay=draw(st.one_of(st.just(0.0), st.floats(0.0, 0.5))),
                  eps=draw(st.one_of(st.just(1e-10), log_uniform(-12, -3))))
    elif rule == "adadelta":
        hp.update(lr=draw(log_uniform(-2, 0.3)), rho=draw(unit(1.0, (0.0, 0.9, 1.0))),
                  eps=draw(st.one_of(st.just(1e-6), log_uniform(-8, -2))))
    elif rule == "rmsprop":
        hp["centered"] = draw(st.booleans())
        # centered: s - ga^2 cancels catastrophically when alpha -> 0 (it is ~alpha*g^2 after a
        # step from zeros), so a last-ulp difference (an FMA, say) can even make it negative: NaN
        # in one backend, a number in the other.  alpha >= 0.5 keeps s - ga^2 >= s/2 from zeros
        # (and from the random states drawn here, which have ga^2 <= 0.81 s).
        hp["alpha"] = draw(unit(1.0, (0.99, 1.0)) if not hp["centered"] else
                           st.one_of(st.just(0.99), st.floats(0.5, 1.0)))
        hp.update(eps=draw(EPS), momentum=draw(MOMENTUM))
    elif rule == "lion":
        hp.update(lr=draw(log_uniform(-5, -1)), beta1=draw(unit(1.0, (0.0, 0.9, 0.99, 1.0))),
                  beta2=draw(unit(1.0, (0.0, 0.9, 0.99, 1.0))))
    return hp


def _shapes():
    small = st.integers(1, 9)
    out = [st.just(()), st.tuples(st.integers(1, 300)), st.tuples(small, small), st.tuples(small, small, small)]
    if DEFAULT_CUTOFF <= 200_000:   # occasionally above the serial cutoff: the threaded path
        big = st.integers(DEFAULT_CUTOFF + 1, DEFAULT_CUTOFF + 4000)
        out.append(st.one_of(big.map(lambda n: (n,)), big.map(lambda n: (2, n // 2 + 1))))
    return st.one_of(*out)


@dataclass
class Case:
    rule: str
    hp: dict
    shape: tuple
    seed: int
    pscale: float
    gscale: float
    nsteps: int
    start_step: int
    zero_state: bool
    pass_step: bool = True          # sgd: step= given (step=1 first) or None
    mu_array: bool = False          # nadam: mu_product passed as an array or omitted
    cutoff: int = None              # None: the default serial cutoff; 0: threads for every size
    specials: bool = False          # NaN, +inf, -inf at random places of some gradients


@st.composite
def cases(draw, rule):
    hp = draw(hyper(rule))
    return Case(rule=rule, hp=hp, shape=draw(_shapes()), seed=draw(st.integers(0, 2 ** 32 - 1)),
                pscale=10.0 ** draw(st.floats(-2, 2)), gscale=10.0 ** draw(st.floats(-3, 3)),
                nsteps=draw(st.integers(4, 7)), start_step=draw(st.one_of(st.just(1), st.integers(2, 300))),
                zero_state=draw(st.booleans()), pass_step=draw(st.booleans()), mu_array=draw(st.booleans()),
                cutoff=draw(st.sampled_from([None, 0])), specials=draw(st.sampled_from([False, False, False, True])))


# ---------------------------------------------------------------------------------------
# random state and gradients (float64 draws, cast to the dtype under test)

def make_inputs(case, dtype):
    """param, {state name: array}, [one gradient per step]."""
    rng = np.random.default_rng(case.seed)
    shape, gs = case.shape, case.gscale
    n = lambda: np.asarray(rng.standard_normal(shape))  # noqa: E731  (0-d: an array, not a scalar)
    param = n() * case.pscale
    pos, kw = state_names(case.rule, case.hp)
    states = {}
    for name in pos + kw:
        if case.zero_state:
            states[name] = np.zeros(shape)
        elif name in ("exp_avg", "grad_avg"):
            states[name] = n() * gs
        elif name == "momentum_buffer":       # sgd: a gradient sum; rmsprop: sum of g/sqrt(s) ~ O(1)
            states[name] = n() * (gs if case.rule == "sgd" else 1.0)
        elif name in ("exp_avg_sq", "max_exp_avg_sq", "square_avg", "state_sum"):
            states[name] = (n() * gs) ** 2
        elif name == "exp_inf":
            states[name] = np.abs(n()) * gs
        elif name == "acc_delta":
            states[name] = (n() * 0.01 * case.pscale) ** 2
        else:
            raise AssertionError(name)
    if "grad_avg" in states and not case.zero_state:
        # a valid centered state has grad_avg^2 <= square_avg
        states["grad_avg"] = rng.uniform(-0.9, 0.9, shape) * np.sqrt(states["square_avg"])
    grads = [np.array(n() * gs) for _ in range(case.nsteps)]
    if case.specials and param.size:
        for g in grads[:1] + grads[2:3]:   # first and third step: NaN/inf enter fresh and old state
            where = np.asarray(rng.random(shape) < 0.1)
            g[where] = rng.choice([np.nan, np.inf, -np.inf], size=int(where.sum()))
    cast = lambda a: np.ascontiguousarray(a, dtype=dtype)  # noqa: E731
    states = {k: cast(v) for k, v in states.items()}
    if case.rule == "nadam" and case.mu_array:
        states["mu_product"] = np.array([fastgd.nadam_mu_product(
            case.start_step - 1, beta1=case.hp["beta1"], momentum_decay=case.hp["momentum_decay"])])
    return cast(param), states, [cast(g) for g in grads]


class cutoff:
    """Context manager: set the serial cutoff (None: leave it) and restore it."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.saved = fastgd.serial_cutoff()
        if self.n is not None:
            fastgd.set_serial_cutoff(self.n)

    def __exit__(self, *exc):
        fastgd.set_serial_cutoff(self.saved)


# ---------------------------------------------------------------------------------------
# the comparison and its tolerance
#
# The backend runs the whole sequence of steps in place on its own arrays.  Before every step
# its param and state are copied and the reference takes the same step from the copies; the
# two results must then agree to the round-off of *one* step.  (Comparing only at the end of
# free-running sequences would compound the round-off through the dynamics: with lr = 1 and
# beta2 = 0, say, Adam is chaotic and last-ulp differences grow by orders of magnitude per
# step, so the tolerance would have to be loose where it matters or the test flaky.)
#
# The compiled kernels compute the same formulas in the same order as the reference, in the
# array's dtype.  Built as today (no FMA contraction) they round exactly like NumPy, but a
# compiler that contracts a*b + c into one FMA (GCC's default -ffp-contract=fast with -mfma,
# clang on ARM, MSVC's /fp:fast, numba's fastmath "contract") rounds each of the ~10-20
# operations of a step differently by up to half an ulp of *its* result, and is still correct.  Such a difference is a few ulp of the magnitudes
# that were rounded, not of the final value, which may be a cancellation (m = b1*m + (1-b1)*g,
# g + weight_decay*p, p - lr*d with opposite signs).  Per element:
#
#     |backend - reference| <= ULPS * eps(dtype) * (|reference| + condition)
#
# where ``condition`` = sum over the step's inputs x (param, every state, grad) of
# |d out / d x| * |x|: the componentwise condition number of the step, i.e. how much the output
# moves when every input moves by one relative unit.  It is measured, not derived per rule: the
# float64 reference takes the step again with one input scaled by 1 +- 2**-20 at a time
# (rules are elementwise, so this is a per-element derivative).  Where a result jumps (Lion's
# sign(b1*m + (1-b1)*g) within ~1e-6 of 0, a max() at its kink) the jump makes the condition
# large, which is right: there a last-ulp difference legitimately changes the result.
# ULPS = 0: the kernels are bit-identical to the reference (no FMA contraction anywhere, the
# bias corrections with C's pow as Python's float ** int, the same order of operations), so
# every finite element must be exactly equal (and NaN/inf at the same places); the condition
# only says, when a bug makes a difference, how large it is relative to the sensitivity.
# (A bound of 16 ulp, used before, let a 0.1% error of the update through at most elements.)

ULPS = 0
_H = 2.0 ** -20


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _ref_step(case, inputs, grad, step):
    """The reference's step from copies of ``inputs`` (param included); returns the results."""
    out = {k: v.copy() for k, v in inputs.items()}
    p = out.pop("param")
    call(case.rule, p, grad, out, step, case.hp, REF, pass_step=case.pass_step, mu_array=case.mu_array)
    out["param"] = p
    return out


def condition(case, before, grad, step):
    """Per element and output array: sum over inputs x of |d out/d x| * |x| (see above), by
    finite differences of the float64 reference (both directions, the larger taken)."""
    base = {k: _f64(v).copy() for k, v in before.items()}
    g64 = _f64(grad).copy()
    out0 = _ref_step(case, base, g64, step)
    cond = {k: np.zeros(v.shape) for k, v in out0.items()}
    # mu_product is a float64 scalar in every backend alike: no rounding difference to explain
    for name in [k for k in base if k != "mu_product"] + ["grad"]:
        worst = {k: np.zeros(v.shape) for k, v in out0.items()}
        for h in (_H, -_H):
            inp, g = dict(base), g64
            if name == "grad":
                g = g64 * (1.0 + h)
            else:
                inp[name] = base[name] * (1.0 + h)
            with np.errstate(all="ignore"):
                out = _ref_step(case, inp, g, step)
                for k in out:
                    d = np.abs(out[k] - out0[k]) / _H
                    worst[k] = np.maximum(worst[k], np.where(np.isnan(d), np.inf, d))
        for k in cond:
            cond[k] += worst[k]
    return cond


def assert_close(actual, desired, scale, name, ulps=ULPS):
    """|actual - desired| <= ulps*eps*(|desired| + scale) per element; NaN exactly where the
    reference has NaN, the same infinities.  (numpy.testing.assert_allclose takes only a scalar
    atol, so the per-element bound is checked here and the worst element reported.)
    Returns the ulps the worst element used (for measuring the margin)."""
    assert actual.dtype == desired.dtype and actual.shape == desired.shape, name
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(desired), err_msg="NaN positions of " + name)
    np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(desired), err_msg="+inf positions of " + name)
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(desired), err_msg="-inf positions of " + name)
    a, d = _f64(actual), _f64(desired)
    fin = np.isfinite(d)
    unit = np.finfo(actual.dtype).eps * (np.abs(d) + scale)
    with np.errstate(invalid="ignore"):
        used = np.where(fin, np.abs(a - d) / np.maximum(unit, 1e-300), 0.0)
    bad = used > ulps
    if bad.any():
        i = np.unravel_index(np.argmax(used), used.shape)
        raise AssertionError(
            "%s differs from the reference at %d of %d elements; worst at %s: got %r, reference %r, "
            "|diff| = %.3g = %.1f ulp of the scale (tolerance %d ulp; scale %.3g)"
            % (name, bad.sum(), bad.size, i, a[i], d[i], abs(a[i] - d[i]), used[i], ulps, unit[i] / np.finfo(actual.dtype).eps))
    return float(np.max(used, initial=0.0))


def check_against_reference(case, backend, dtype):
    """Run the steps of ``case`` on ``backend`` in place; after every step compare param and
    every state array with the reference's step from the same arrays.  Returns the ulps used."""
    param, states, grads = make_inputs(case, dtype)
    used = {}
    for i, g in enumerate(grads):
        before = {k: v.copy() for k, v in states.items()}
        before["param"] = param.copy()
        g_bytes = g.tobytes()
        with cutoff(case.cutoff):
            out = call(case.rule, param, g, states, case.start_step + i, case.hp, backend,
                       pass_step=case.pass_step, mu_array=case.mu_array)
        assert out is param, "the step must return param itself"
        assert g.tobytes() == g_bytes, "the step wrote to grad"
        ref = _ref_step(case, before, g, case.start_step + i)
        cond = condition(case, before, g, case.start_step + i)
        mine = dict(states, param=param)
        for name in ref:
            u = assert_close(mine[name], ref[name], cond[name], "%s after step %d" % (name, i + 1))
            used[name] = max(used.get(name, 0.0), u)
    return used


# ---------------------------------------------------------------------------------------
# oracle tests

@pytest.mark.parametrize("rule", RULES)
def test_matches_reference(rule, compiled_backend, dtype):
    """Every rule, every option, random shapes (0-d to 3-D, sometimes above the serial cutoff),
    random state and gradients (sometimes with NaN/inf), threaded or not: param and every
    state array equal the reference's after every step."""
    @given(case=cases(rule))
    def inner(case):
        note(repr(case))
        check_against_reference(case, compiled_backend, dtype)

    inner()


# ---------------------------------------------------------------------------------------
# fixed properties, every backend (the numpy reference included)

TYPICAL = {   # every optional state in use
    "sgd": dict(lr=0.1, momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.01, maximize=False),
    "adam": dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, amsgrad=True, maximize=False),
    "adamw": dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, amsgrad=True, maximize=False),
    "adamax": dict(lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, maximize=False),
    "nadam": dict(lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, momentum_decay=4e-3,
                  decoupled_weight_decay=False, maximize=False),
    "radam": dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, decoupled_weight_decay=False,
                  maximize=False),
    "adagrad": dict(lr=1e-2, lr_decay=0.01, weight_decay=0.01, eps=1e-10, maximize=False),
    "adadelta": dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.01, maximize=False),
    "rmsprop": dict(lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.9, centered=True, weight_decay=0.01, maximize=False),
    "lion": dict(lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.01, maximize=False),
}


def typical_case(rule, shape=(5, 7), **kw):
    fields = dict(rule=rule, hp=dict(TYPICAL[rule]), shape=shape, seed=20261121, pscale=1.0, gscale=1.0,
                  nsteps=4, start_step=1, zero_state=False, pass_step=True, mu_array=True)
    fields.update(kw)
    return Case(**fields)


@pytest.mark.parametrize("rule", RULES)
def test_returns_param_itself(rule, backend, dtype):
    param, states, grads = make_inputs(typical_case(rule), dtype)
    assert call(rule, param, grads[0], states, 1, TYPICAL[rule], backend, mu_array=True) is param


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 2, 5)])
@pytest.mark.parametrize("rule", RULES)
def test_zero_size_is_a_no_op(rule, shape, backend, dtype):
    param, states, grads = make_inputs(typical_case(rule, shape=shape), dtype)
    with cutoff(0):   # would ask for threads on any non-empty array
        out = call(rule, param, grads[0], states, 1, TYPICAL[rule], backend, mu_array=False)
    assert out is param and param.shape == shape and param.dtype == dtype


@pytest.mark.parametrize("rule", RULES)
def test_nan_and_inf_propagate_like_the_reference(rule, compiled_backend, dtype):
    """NaN, +inf and -inf in the gradient (and, from the second step on, in the state) end up
    at exactly the same positions as in the reference, with and without threads; the finite
    elements agree as in the oracle test."""
    for hp in (TYPICAL[rule], dict(TYPICAL[rule], maximize=True, weight_decay=0.0)):
        for cut in (None, 0):
            case = typical_case(rule, shape=(40, 25), nsteps=4, specials=True, cutoff=cut, hp=dict(hp))
            param, states, grads = make_inputs(case, dtype)
            assert np.isnan(grads[0]).any() and np.isinf(grads[0]).any()   # the test is not vacuous
            check_against_reference(case, compiled_backend, dtype)


def _specials_case_check(rule, backend, dtype):
    """The NaN masks themselves, spelled out: after one step from a finite state with
    NaN/inf gradients."""
    case = typical_case(rule, shape=(64,), specials=True)
    param, states, grads = make_inputs(case, dtype)
    p_ref, s_ref = param.copy(), {k: v.copy() for k, v in states.items()}
    call(rule, param, grads[0], states, 1, case.hp, backend, mu_array=True)
    call(rule, p_ref, grads[0], s_ref, 1, case.hp, REF, mu_array=True)
    np.testing.assert_array_equal(np.isnan(param), np.isnan(p_ref))
    for k in states:
        np.testing.assert_array_equal(np.isnan(states[k]), np.isnan(s_ref[k]), err_msg=k)
    return np.isnan(p_ref).any()


@pytest.mark.parametrize("rule", RULES)
def test_nan_gradient_gives_nan_param(rule, compiled_backend, dtype):
    assert _specials_case_check(rule, compiled_backend, dtype), "a NaN gradient must make param NaN somewhere"


# ---------------------------------------------------------------------------------------
# SGD's first step, NAdam's running product

@pytest.mark.parametrize("maximize", [False, True])
def test_sgd_first_step_copies_grad_into_buffer(backend, dtype, maximize):
    """torch.optim.SGD starts the buffer as a copy of the (effective) gradient: with step=1 the
    old buffer and dampening do not matter; with step=None or step > 1 they do."""
    rng = np.random.default_rng(1)
    g = rng.standard_normal(50).astype(dtype)
    p0 = rng.standard_normal(50).astype(dtype)
    b0 = rng.standard_normal(50).astype(dtype)
    hp = dict(lr=0.1, momentum=0.9, dampening=0.5, maximize=maximize)
    geff = -g if maximize else g
    p, b = p0.copy(), b0.copy()
    fastgd.sgd_step(p, g, b, step=1, backend=backend, **hp)
    np.testing.assert_array_equal(b, geff)                      # an exact copy
    np.testing.assert_array_equal(p, p0 - dtype(0.1) * geff)    # and p -= lr * b
    for step in (None, 2, 7):
        p, b = p0.copy(), b0.copy()
        fastgd.sgd_step(p, g, b, step=step, backend=backend, **hp)
        want = dtype(0.9) * b0 + dtype(0.5) * geff
        np.testing.assert_allclose(b, want, rtol=4 * np.finfo(dtype).eps, atol=4 * np.finfo(dtype).eps)


def test_sgd_without_momentum_ignores_buffer(backend, dtype):
    p = np.array([1.0, 2.0], dtype)
    b = np.array([5.0, 5.0], dtype)
    fastgd.sgd_step(p, np.array([1.0, -1.0], dtype), b, lr=0.5, backend=backend)
    np.testing.assert_array_equal(p, np.array([0.5, 2.5], dtype))
    np.testing.assert_array_equal(b, [5.0, 5.0])


@pytest.mark.parametrize("beta1,momentum_decay", [(0.9, 4e-3), (0.8, 0.05)])
def test_nadam_mu_product_array_advances_like_nadam_mu_product(backend, dtype, beta1, momentum_decay):
    """mu_product = numpy.ones(1) before step 1 holds P_t after step t, bit for bit the value of
    fastgd.nadam_mu_product(t); and passing it or omitting it (P recomputed from step) steps
    param and state identically."""
    case = typical_case("nadam", shape=(33,), mu_array=True)
    hp = dict(TYPICAL["nadam"], beta1=beta1, momentum_decay=momentum_decay)
    param, states, grads = make_inputs(case, dtype)
    states["mu_product"] = np.ones(1)
    p2, s2 = param.copy(), {k: v.copy() for k, v in states.items() if k != "mu_product"}
    for t in range(1, 7):
        g = grads[(t - 1) % len(grads)]
        call("nadam", param, g, states, t, hp, backend, mu_array=True)
        call("nadam", p2, g, s2, t, hp, backend, mu_array=False)
        assert states["mu_product"][0] == fastgd.nadam_mu_product(t, beta1=beta1, momentum_decay=momentum_decay)
        np.testing.assert_array_equal(param, p2)
        for k in s2:
            np.testing.assert_array_equal(states[k], s2[k], err_msg=k)
    # and P_t is what the definition says: prod_{i<=t} beta1 * (1 - 0.5 * 0.96**(i*psi))
    want = math.prod(beta1 * (1 - 0.5 * 0.96 ** (i * momentum_decay)) for i in range(1, 7))
    assert states["mu_product"][0] == pytest.approx(want, rel=1e-15)
    assert fastgd.nadam_mu_product(0, beta1=beta1, momentum_decay=momentum_decay) == 1.0


# ---------------------------------------------------------------------------------------
# the reference itself, against independent math

def test_adam_one_step_by_hand(backend):
    """One Adam step at t=3 from a non-zero state, the formula of Kingma & Ba written out in
    scalar Python (bias-corrected moments, eps outside the square root), L2 weight decay."""
    lr, b1, b2, eps, wd, t = 0.01, 0.9, 0.999, 1e-8, 0.1, 3
    p0, g0 = [0.5, -1.5, 2.0], [0.2, -0.3, 0.0]
    m0, v0 = [0.1, 0.0, -0.05], [0.01, 0.02, 0.0004]
    want_p, want_m, want_v = [], [], []
    for p, g, m, v in zip(p0, g0, m0, v0):
        g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        want_p.append(p - lr * mhat / (math.sqrt(vhat) + eps))
        want_m.append(m)
        want_v.append(v)
    p, m, v = np.array(p0), np.array(m0), np.array(v0)
    fastgd.adam_step(p, np.array(g0), m, v, step=t, lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd,
                     backend=backend)
    np.testing.assert_allclose(m, want_m, rtol=1e-15)
    np.testing.assert_allclose(v, want_v, rtol=1e-15)
    np.testing.assert_allclose(p, want_p, rtol=1e-14)   # algebraically equal forms: ~1e-16 apart


def test_adamw_and_amsgrad_one_step_by_hand(backend):
    """AdamW (decay p *= 1 - lr*wd first, gradient untouched) with AMSGrad (the running max
    of v in the denominator), maximize (gradient negated)."""
    lr, b1, b2, eps, wd, t = 0.05, 0.8, 0.99, 1e-6, 0.2, 2
    p0, g0 = [1.0, -2.0], [0.3, 0.4]
    m0, v0, vmax0 = [0.05, -0.1], [0.02, 0.01], [0.5, 0.0]
    want_p, want_vmax = [], []
    for p, g, m, v, vm in zip(p0, g0, m0, v0, vmax0):
        g = -g
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vm = max(vm, v)
        want_p.append(p - lr / (1 - b1 ** t) * m / (math.sqrt(vm / (1 - b2 ** t)) + eps))
        want_vmax.append(vm)
    p, m, v, vm = (np.array(x) for x in (p0, m0, v0, vmax0))
    fastgd.adamw_step(p, np.array(g0), m, v, step=t, lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd,
                      amsgrad=True, max_exp_avg_sq=vm, maximize=True, backend=backend)
    np.testing.assert_allclose(vm, want_vmax, rtol=1e-15)
    np.testing.assert_allclose(p, want_p, rtol=1e-14)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_one_step_by_hand(backend, nesterov):
    lr, mu, damp, wd = 0.1, 0.9, (0.0 if nesterov else 0.25), 0.05
    p0, g0, b0 = [1.0, -2.0, 0.5], [0.5, 0.25, -1.0], [0.1, -0.2, 0.0]
    want_p, want_b = [], []
    for p, g, b in zip(p0, g0, b0):
        g = g + wd * p
        b = mu * b + (1 - damp) * g
        d = g + mu * b if nesterov else b
        want_p.append(p - lr * d)
        want_b.append(b)
    p, b = np.array(p0), np.array(b0)
    fastgd.sgd_step(p, np.array(g0), b, lr=lr, momentum=mu, dampening=damp, nesterov=nesterov, weight_decay=wd,
                    backend=backend)
    np.testing.assert_allclose(b, want_b, rtol=1e-15)
    np.testing.assert_allclose(p, want_p, rtol=1e-15)


def test_lion_one_step_by_hand(backend):
    """Chen et al. 2023, Algorithm 2: the sign of the interpolation, then the momentum update."""
    lr, b1, b2, wd = 0.01, 0.9, 0.99, 0.5
    p0, g0, m0 = [1.0, -1.0, 0.3, 2.0], [0.5, 0.5, -2.0, 0.0], [-1.0, 1.0, 0.1, 0.0]
    want_p, want_m = [], []
    for p, g, m in zip(p0, g0, m0):
        c = b1 * m + (1 - b1) * g
        want_p.append(p * (1 - lr * wd) - lr * ((c > 0) - (c < 0)))
        want_m.append(b2 * m + (1 - b2) * g)
    p, m = np.array(p0), np.array(m0)
    fastgd.lion_step(p, np.array(g0), m, lr=lr, beta1=b1, beta2=b2, weight_decay=wd, backend=backend)
    np.testing.assert_allclose(p, want_p, rtol=1e-15)
    np.testing.assert_allclose(m, want_m, rtol=1e-15)


def test_published_1d_descent(backend, dtype):
    """f(x) = 6x^2 - 12x + 3 from x = -0.9 with lr = 0.03: after 15 updates x = 0.997648
    (SEEDS.md, section 5; in closed form x_15 = 1 - 1.9 * 0.64**15)."""
    x = np.array(-0.9, dtype=dtype)
    for _ in range(15):
        fastgd.sgd_step(x, np.asarray(12 * x - 12, dtype=dtype), lr=0.03, backend=backend)
    assert abs(float(x) - 0.997648) < 5e-7
    assert float(x) == pytest.approx(1 - 1.9 * 0.64 ** 15, rel=(1e-6 if dtype == np.float32 else 1e-14))


@pytest.mark.parametrize("start,lr,steps,end", [((1.5, 1.5), 0.02, 90, (-0.9496, 0.9809)),
                                                  ((0.7, -0.2), 0.1, 25, (0.8807, -0.9063))])
def test_published_momentum_on_two_gaussians(backend, start, lr, steps, end):
    """Keras-form momentum (v = mu*v - lr*g; x += v, mu = 0.9) on two inverted Gaussians ends
    at the published points (SEEDS.md, section 5); torch-form SGD momentum (b = mu*b + g;
    x -= lr*b) walks the same path with v = -lr*b."""
    def grad(x, y):
        e1 = np.exp(-((x + 1) ** 2 + (y - 1) ** 2) / 2)
        e2 = np.exp(-((x - 1) ** 2 + (y + 1) ** 2) / 2)
        return np.array([2 * e1 * (x + 1) + e2 * (x - 1), 2 * e1 * (y - 1) + e2 * (y + 1)])

    xy, buf = np.array(start), np.zeros(2)
    for _ in range(steps):
        fastgd.sgd_step(xy, grad(*xy), buf, lr=lr, momentum=0.9, backend=backend)
    np.testing.assert_allclose(xy, end, atol=1e-4)


# ---------------------------------------------------------------------------------------
# the reference against torch.optim (float64, foreach=False), when torch is installed

def _torch():
    """torch, or a skip (a failure under FASTGD_REQUIRE_TORCH=1, as in CI): tests/conftest.py."""
    import conftest
    return conftest.torch_or_skip()


TORCH_CASES = [
    # (torch class, torch kwargs, fastgd rule, fastgd kwargs, {fastgd state: torch state})
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01), "sgd",
     dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01), {"momentum_buffer": "momentum_buffer"}),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True), "sgd",
     dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True), {"momentum_buffer": "momentum_buffer"}),
    ("SGD", dict(lr=0.1), "sgd", dict(lr=0.1), {}),
    ("Adam", dict(lr=0.01, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.05), "adam",
     dict(lr=0.01, beta1=0.9, beta2=0.99, eps=1e-6, weight_decay=0.05), {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}),
    ("Adam", dict(lr=0.01, amsgrad=True, maximize=True), "adam", dict(lr=0.01, amsgrad=True, maximize=True),
     {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq", "max_exp_avg_sq": "max_exp_avg_sq"}),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True), "adamw", dict(lr=0.01, weight_decay=0.1, amsgrad=True),
     {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq", "max_exp_avg_sq": "max_exp_avg_sq"}),
    ("Adamax", dict(lr=0.02, betas=(0.8, 0.99), weight_decay=0.01, maximize=True), "adamax",
     dict(lr=0.02, beta1=0.8, beta2=0.99, weight_decay=0.01, maximize=True), {"exp_avg": "exp_avg", "exp_inf": "exp_inf"}),
    ("NAdam", dict(lr=0.01, weight_decay=0.01, momentum_decay=0.01), "nadam",
     dict(lr=0.01, weight_decay=0.01, momentum_decay=0.01),
     {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq", "mu_product": "mu_product"}),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True), "nadam",
     dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
     {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq", "mu_product": "mu_product"}),
    ("RAdam", dict(lr=0.01, weight_decay=0.01), "radam", dict(lr=0.01, weight_decay=0.01),
     {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}),
    ("RAdam", dict(lr=0.01, betas=(0.9, 0.5), weight_decay=0.1, decoupled_weight_decay=True, maximize=True), "radam",
     dict(lr=0.01, beta2=0.5, weight_decay=0.1, decoupled_weight_decay=True, maximize=True),
     {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.01, eps=1e-8), "adagrad",
     dict(lr=0.1, lr_decay=0.05, weight_decay=0.01, eps=1e-8), {"state_sum": "sum"}),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.01, maximize=True), "adadelta",
     dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.01, maximize=True), {"square_avg": "square_avg", "acc_delta": "acc_delta"}),
    ("RMSprop", dict(lr=0.01, alpha=0.9, weight_decay=0.01), "rmsprop", dict(lr=0.01, alpha=0.9, weight_decay=0.01),
     {"square_avg": "square_avg"}),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, maximize=True), "rmsprop",
     dict(lr=0.01, momentum=0.9, centered=True, maximize=True),
     {"square_avg": "square_avg", "momentum_buffer": "momentum_buffer", "grad_avg": "grad_avg"}),
]


@pytest.mark.parametrize("cls,tkw,rule,fkw,names", TORCH_CASES,
                         ids=["%s-%d" % (c[0], i) for i, c in enumerate(TORCH_CASES)])
def test_reference_matches_torch(cls, tkw, rule, fkw, names):
    """Six steps of the numpy reference and of torch.optim (single-tensor path) from the same
    start, float64: param after every step and every state at the end agree to rtol 2e-14
    (~100 ulp), atol 1e-15 (~5 ulp of these O(1) values, for elements that cancel): the two
    differ only in the order of a few float64 operations (torch's lerp for m, division by
    sqrt(1-beta2^t) where the reference multiplies, ...); measured: <= 1.4e-14 relative."""
    torch = _torch()
    rng = np.random.default_rng(7)
    p0 = rng.standard_normal((4, 6))
    grads = [rng.standard_normal((4, 6)) for _ in range(6)]
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)   # torch keeps scalar state (mu_product, step) in it
    try:
        tp = torch.nn.Parameter(torch.tensor(p0))
        opt = getattr(torch.optim, cls)([tp], foreach=False, **tkw)
        param = p0.copy()
        states = {k: (np.ones(1) if k == "mu_product" else np.zeros_like(p0)) for k in names}
        for t, g in enumerate(grads, start=1):
            tp.grad = torch.tensor(g)
            opt.step()
            call(rule, param, g, states, t, fkw, REF, mu_array=True)
            np.testing.assert_allclose(param, tp.detach().numpy(), rtol=2e-14, atol=1e-15,
                                       err_msg="param after step %d" % t)
        tstate = opt.state[tp]
        for ours, theirs in names.items():
            want = tstate[theirs].detach().numpy().reshape(states[ours].shape)
            np.testing.assert_allclose(states[ours], want, rtol=2e-14, atol=1e-15, err_msg=ours)
    finally:
        torch.set_default_dtype(old)
