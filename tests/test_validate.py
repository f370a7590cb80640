"""Bad input: every rule raises TypeError/ValueError naming the argument, and a call that
raises has written nothing (every array is compared byte for byte with a copy taken before
the call)."""
import inspect
import re

import numpy as np
import pytest

import fastgd
from fastgd._rules import RULES as TABLE

SHAPE = (4, 6)

# rule -> (positional state arrays, keyword state arrays, hyperparameters using every state):
# the arrays from the rule table (fastgd/_rules.py) and the public signatures, the
# hyperparameters that switch every optional array on written here
_ALL_STATE = {"sgd": dict(lr=0.1, momentum=0.9), "adam": dict(step=3, amsgrad=True),
              "adamw": dict(step=3, amsgrad=True), "rmsprop": dict(momentum=0.9, centered=True)}


def _table_entry(name, rule):
    params = inspect.signature(getattr(fastgd, name + "_step")).parameters
    pos = [s.name for s in rule.state if params[s.name].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    kw = [s.name for s in rule.state if s.name not in pos]
    hp = dict(_ALL_STATE.get(name, {}))
    if rule.step == "required":
        hp.setdefault("step", 3)
    return pos, kw, hp


RULES = {name: _table_entry(name, rule) for name, rule in TABLE.items()}
# hyperparameters each rule takes (besides arrays), to know where a bad value applies
HYPER = {name: {h.name for h in rule.hyper} | ({"step"} if rule.step else set()) for name, rule in TABLE.items()}
# Lion allows beta = 1; the Adam family needs beta < 1
CLOSED_BETAS = {name for name, rule in TABLE.items() if any(h.name == "beta1" and h.check == "unit_closed"
                                                            for h in rule.hyper)}


class Call:
    """One valid call with every state array in use; tests break one thing and try it."""

    def __init__(self, rule, dtype=np.float64, backend=None):
        self.rule = rule
        pos, kw, hp = RULES[rule]
        rng = np.random.default_rng(sum(map(ord, rule)))
        arr = lambda: np.abs(rng.standard_normal(SHAPE)).astype(dtype) + dtype(0.1)  # noqa: E731
        self.arrays = {"param": arr(), "grad": arr()}
        for name in pos + kw:
            self.arrays[name] = np.array([0.7]) if name == "mu_product" else arr()
        if "grad_avg" in self.arrays:
            self.arrays["grad_avg"] *= dtype(0.01)   # a valid centered state: grad_avg^2 <= square_avg
        self.pos, self.kw = ["param", "grad"] + list(pos), list(kw)
        self.hp = dict(hp, backend=backend)

    def __call__(self):
        fn = getattr(fastgd, self.rule + "_step")
        return fn(*[self.arrays[n] for n in self.pos], **{n: self.arrays[n] for n in self.kw}, **self.hp)

    def snapshot(self):
        """Bytes of every array the call can reach (bases of views included)."""
        seen = []
        for a in self.arrays.values():
            while isinstance(a, np.ndarray):
                seen.append((a, a.tobytes()))
                a = a.base
        return seen


def assert_raises_untouched(call, exc, name):
    before = call.snapshot()
    with pytest.raises(exc, match=r"\b%s\b" % re.escape(name)):
        call()
    for a, b in before:
        assert a.tobytes() == b, "a failed call wrote to an array"


def array_names(rule):
    return ["param", "grad"] + [n for n in RULES[rule][0] + RULES[rule][1] if n != "mu_product"]


def cases_for_arrays():
    for rule in RULES:
        for name in array_names(rule):
            yield rule, name


def array_cases(but=()):
    """(rule, array name) pairs as pytest params, leaving out the names in ``but``."""
    return [pytest.param(r, n, id="%s-%s" % (r, n)) for r, n in cases_for_arrays() if n not in but]


# ---------------------------------------------------------------------------------------
# the arrays

@pytest.mark.parametrize("rule,name", array_cases())
def test_not_an_array(rule, name, backend):
    c = Call(rule, backend=backend)
    c.arrays[name] = c.arrays[name].tolist()
    assert_raises_untouched(c, TypeError, name)


@pytest.mark.parametrize("bad", [np.int64, np.int32, np.float16, np.complex128])
@pytest.mark.parametrize("rule,name", array_cases())
def test_non_float_dtype(rule, name, bad, backend):
    c = Call(rule, backend=backend)
    c.arrays[name] = c.arrays[name].astype(bad)
    assert_raises_untouched(c, TypeError, name)


@pytest.mark.parametrize("rule,name", array_cases(but=("param",)))
@pytest.mark.parametrize("param_dtype", [np.float32, np.float64])
def test_dtype_differs_from_param(rule, name, param_dtype, backend):
    c = Call(rule, dtype=param_dtype, backend=backend)
    other = np.float64 if param_dtype == np.float32 else np.float32
    c.arrays[name] = c.arrays[name].astype(other)
    assert_raises_untouched(c, TypeError, name)


@pytest.mark.parametrize("new_shape", [(4, 7), (24,), (6, 4), (1, 4, 6)])
@pytest.mark.parametrize("rule,name", array_cases(but=("param",)))
def test_shape_differs_from_param(rule, name, new_shape, backend):
    c = Call(rule, backend=backend)
    c.arrays[name] = np.resize(c.arrays[name], new_shape)
    assert_raises_untouched(c, ValueError, name)


@pytest.mark.parametrize("how", ["step2", "transposed"])
@pytest.mark.parametrize("rule,name", array_cases())
def test_non_contiguous(rule, name, how, backend):
    c = Call(rule, backend=backend)
    a = c.arrays[name]
    if how == "step2":
        big = np.repeat(a, 2, axis=1)       # (4, 12): every other column is a copy of a
        view = big[:, ::2]
    else:
        view = np.ascontiguousarray(a.T).T  # Fortran order, the same values
    assert view.shape == a.shape and not view.flags.c_contiguous and np.array_equal(view, a)
    c.arrays[name] = view
    assert_raises_untouched(c, ValueError, name)


@pytest.mark.parametrize("rule,name", array_cases(but=("grad",)))
def test_read_only_param_or_state(rule, name, backend):
    c = Call(rule, backend=backend)
    c.arrays[name].flags.writeable = False
    assert_raises_untouched(c, ValueError, name)


@pytest.mark.parametrize("rule", RULES)
def test_read_only_grad_is_allowed(rule, backend):
    """grad is only read: a read-only gradient works and gives the reference's result."""
    c = Call(rule, backend=backend)
    ref = Call(rule, backend="numpy")
    c.arrays["grad"].flags.writeable = False
    g = c.arrays["grad"].copy()
    assert c() is c.arrays["param"]
    ref()
    np.testing.assert_array_equal(c.arrays["grad"], g)
    for name in c.arrays:
        np.testing.assert_allclose(c.arrays[name], ref.arrays[name], rtol=1e-13, atol=1e-15, err_msg=name)


def overlap_cases():
    for rule in RULES:
        names = array_names(rule)
        yield rule, "grad", "param", "same"          # param is grad
        for name in names[2:]:
            yield rule, name, "param", "view"         # a state is a view of param
            yield rule, name, "grad", "same"          # a state is the gradient
            yield rule, name, "param", "shifted"      # partial overlap: one element apart in one buffer
        if len(names) > 3:
            yield rule, names[3], names[2], "same"    # two states are one array


@pytest.mark.parametrize("rule,name,other,how", list(overlap_cases()),
                         ids=["%s-%s-%s-%s" % c for c in overlap_cases()])
def test_overlapping_arrays(rule, name, other, how, backend):
    c = Call(rule, backend=backend)
    if how == "same":
        c.arrays[name] = c.arrays[other]
    elif how == "view":
        c.arrays[name] = c.arrays[other].view()
    else:
        buf = np.zeros(int(np.prod(SHAPE)) + 1)
        buf[1:] = c.arrays[other].ravel()
        c.arrays[other] = buf[1:].reshape(SHAPE)
        c.arrays[name] = buf[:-1].reshape(SHAPE)
    # the message names both arrays ("<a> and <b> overlap in memory")
    assert_raises_untouched(c, ValueError, name)
    with pytest.raises(ValueError, match=r"\b%s\b.*\boverlap" % other):
        c()


@pytest.mark.parametrize("rule,missing,why", [
    ("adam", "max_exp_avg_sq", dict(amsgrad=True)),
    ("adamw", "max_exp_avg_sq", dict(amsgrad=True)),
    ("sgd", "momentum_buffer", dict(momentum=0.9)),
    ("sgd", "momentum_buffer", dict(momentum=0.9, nesterov=True)),
    ("rmsprop", "momentum_buffer", dict(momentum=0.5)),
    ("rmsprop", "grad_avg", dict(centered=True)),
])
def test_missing_required_state(rule, missing, why, backend):
    c = Call(rule, backend=backend)
    c.hp.update(why)
    if missing in c.kw:
        c.kw.remove(missing)
    else:
        c.pos.remove(missing)
    assert_raises_untouched(c, ValueError, missing)


# ---------------------------------------------------------------------------------------
# the hyperparameters

def hyper_cases():
    for rule, names in HYPER.items():
        for name in sorted(names - {"step", "maximize", "amsgrad", "nesterov", "centered", "decoupled_weight_decay"}):
            # nonnegative everywhere
            yield rule, name, -0.5, ValueError
            yield rule, name, float("nan"), ValueError
            yield rule, name, "0.1", TypeError
            yield rule, name, True, TypeError
            yield rule, name, None, TypeError
            if name in ("beta1", "beta2"):
                yield rule, name, 1.5, ValueError
                if rule not in CLOSED_BETAS:
                    yield rule, name, 1.0, ValueError      # [0, 1): beta = 1 never forgets
            if name in ("rho", "alpha", "dampening"):
                yield rule, name, 1.01, ValueError
            if name in ("lr", "eps", "weight_decay"):
                yield rule, name, -1e-30, ValueError
                yield rule, name, float("-inf"), ValueError
        for name in sorted(names & {"maximize", "amsgrad", "nesterov", "centered", "decoupled_weight_decay"}):
            yield rule, name, 1, TypeError
            yield rule, name, "yes", TypeError
            yield rule, name, None, TypeError
        if "step" in names:
            yield rule, "step", 0, ValueError
            yield rule, "step", -3, ValueError
            yield rule, "step", 1.0, TypeError
            yield rule, "step", 2.5, TypeError
            yield rule, "step", "2", TypeError
            yield rule, "step", True, TypeError
            yield rule, "step", np.float64(2.0), TypeError
        yield rule, "backend", "bogus", ValueError
        yield rule, "backend", "Cython", ValueError
        yield rule, "backend", 3, TypeError


@pytest.mark.parametrize("rule,name,value,exc", list(hyper_cases()),
                         ids=["%s-%s-%r-%s" % (r, n, v, e.__name__) for r, n, v, e in hyper_cases()])
def test_bad_hyperparameter(rule, name, value, exc):
    c = Call(rule)
    c.hp[name] = value
    assert_raises_untouched(c, exc, name)


@pytest.mark.parametrize("rule", ["adam", "adamw", "adamax", "nadam", "radam", "adagrad"])
def test_step_is_required(rule):
    c = Call(rule)
    del c.hp["step"]
    with pytest.raises(TypeError, match="step"):
        c()


@pytest.mark.parametrize("step", [1, 2, np.int64(5), np.int32(7)])
def test_integer_steps_are_accepted(step, backend):
    c = Call("adam", backend=backend)
    c.hp["step"] = step
    assert c() is c.arrays["param"]


@pytest.mark.parametrize("bad", [dict(nesterov=True, momentum=0.0), dict(nesterov=True, dampening=0.1)])
def test_sgd_nesterov_needs_momentum_without_dampening(bad, backend):
    c = Call("sgd", backend=backend)
    c.hp.update(bad)
    assert_raises_untouched(c, ValueError, "nesterov")


@pytest.mark.parametrize("bad,exc", [
    (np.array([0.7], dtype=np.float32), TypeError),
    (np.array([0.7, 0.7]), TypeError),
    (np.array([], dtype=np.float64), TypeError),
    ([0.7], TypeError),
    (0.7, TypeError),
    ("readonly", ValueError),
])
def test_nadam_bad_mu_product(bad, exc, backend):
    c = Call("nadam", backend=backend)
    if isinstance(bad, str):
        c.arrays["mu_product"].flags.writeable = False
    else:
        c.arrays["mu_product"] = bad
    assert_raises_untouched(c, exc, "mu_product")


@pytest.mark.parametrize("rule", RULES)
def test_bad_backend_with_empty_arrays(rule):
    """A bad backend name is bad input whatever the arrays' size (an empty parameter must
    not hide a typo in backend=)."""
    c = Call(rule)
    for name in array_names(rule):
        c.arrays[name] = np.zeros((0, 3))
    c.hp["backend"] = "bogus"
    with pytest.raises(ValueError, match="backend"):
        c()


@pytest.mark.parametrize("rule", RULES)
def test_valid_call_passes(rule, backend):
    """The base call every test here breaks is itself valid (so each failure is due to the one
    thing broken)."""
    c = Call(rule, backend=backend)
    assert c() is c.arrays["param"]


@pytest.mark.parametrize("which", ["param", "grad", "state"])
def test_byte_swapped_arrays_are_refused(which):
    """A non-native byte order would be read as garbage by the compiled kernels: refuse it."""
    arrs = {"param": np.ones(8, np.float32), "grad": np.full(8, 0.5, np.float32),
            "state": np.zeros(8, np.float32)}
    arrs[which] = arrs[which].astype(arrs[which].dtype.newbyteorder())
    before = {k: a.copy() for k, a in arrs.items()}
    v = np.zeros(8, arrs["param"].dtype)
    with pytest.raises(TypeError, match="param|grad|exp_avg"):
        fastgd.adam_step(arrs["param"], arrs["grad"], arrs["state"], v, step=1)
    for k in arrs:
        np.testing.assert_array_equal(arrs[k], before[k])


_ADAM_VALUES = {
    "step": [1, 2, 10**6, 0, -1, True, 1.0, np.int64(3)],
    "lr": [0.0, 1e-3, 5.0, -1e-3, float("nan"), float("inf"), 1, np.float64(0.1), True],
    "beta1": [0.0, 0.9, 0.999999, 1.0, -0.1, float("nan"), np.float32(0.9), 0],
    "beta2": [0.0, 0.999, 1.0, 1.5, float("nan"), np.float64(0.99)],
    "eps": [0.0, 1e-8, -1e-8, float("nan"), float("inf"), 1],
    "weight_decay": [0.0, 0.01, -0.5, float("nan"), np.float64(0.1)],
    "amsgrad": [False, True, 0, np.bool_(True)],
    "maximize": [False, True, 1, None],
}


def _adam_named_checks(step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize):
    """The Python checks Adam's hyperparameters go through when the C fast accept says no."""
    from fastgd import _validate as V
    return (V.step(step), V.nonneg("lr", lr), V.unit_interval("beta1", beta1), V.unit_interval("beta2", beta2),
            V.nonneg("eps", eps), V.nonneg("weight_decay", weight_decay), V.flag("amsgrad", amsgrad),
            V.flag("maximize", maximize))


def test_adam_fast_accept_agrees_with_the_named_checks():
    """Whenever the C fast accept says yes, the named checks accept the same values and return
    them unchanged (same type and value): the fast path can never let through what the checks
    refuse.  Each hyperparameter is varied with the others at valid defaults."""
    from fastgd import _validate as V
    base = dict(step=3, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False,
                maximize=False)
    assert V.adam_scalars_ok(**base) or "cython" not in fastgd.available_backends()
    accepted = 0
    for name, values in _ADAM_VALUES.items():
        for value in values:
            args = dict(base, **{name: value})
            if not V.adam_scalars_ok(**args):
                continue
            accepted += 1
            checked = _adam_named_checks(**args)
            order = ("step", "lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad", "maximize")
            for key, got in zip(order, checked):
                assert type(got) is type(args[key]) and got == args[key], (key, args[key], got)
    if "cython" in fastgd.available_backends():
        assert accepted >= 15


@pytest.mark.parametrize("name, value, exc", [
    ("step", 0, ValueError), ("step", True, TypeError), ("step", 1.0, TypeError),
    ("lr", -1e-3, ValueError), ("lr", float("nan"), ValueError), ("lr", True, TypeError),
    ("beta1", 1.0, ValueError), ("beta2", float("nan"), ValueError), ("eps", -1e-8, ValueError),
    ("weight_decay", -0.5, ValueError), ("amsgrad", 0, TypeError), ("maximize", None, TypeError)])
def test_adam_refuses_what_the_fast_accept_lets_through_to_the_checks(name, value, exc, backend):
    rng = np.random.default_rng(0)
    p, g, m, v = (rng.standard_normal(8) for _ in range(4))
    before = [a.copy() for a in (p, g, m, v)]
    kw = dict(step=3, lr=1e-3)
    kw[name] = value
    with pytest.raises(exc, match=name):
        fastgd.adam_step(p, g, m, v, backend=backend, **kw)
    for a, b in zip((p, g, m, v), before):
        np.testing.assert_array_equal(a, b)
