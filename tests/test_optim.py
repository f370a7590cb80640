"""fastgd.optim: optimizer objects against the NumPy reference rules (THE SPEC) and
against the textbook formulas; state, resume, validation, learning-rate schedules."""
import math

import numpy as np
import pytest

import fastgd
from fastgd import optim as O
from fastgd.reference import rules as R
from fastgd.steps import nadam_mu_product

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.01, amsgrad=True)),
    ("Adamax", dict(lr=0.01, weight_decay=0.1)),
    ("NAdam", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, momentum_decay=0.01)),
    ("RAdam", dict(lr=0.01, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.5)),
    ("Adadelta", dict(lr=1.0, rho=0.8, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01)),
    ("Lion", dict(lr=0.01, betas=(0.9, 0.99), weight_decay=0.1)),
]
CONFIG_IDS = ["%s-%s" % (name, "-".join("%s=%s" % kv for kv in hyper.items())) for name, hyper in CONFIGS]


def reference_run(name, hyper, params, grads_seq, lr_changes=None):
    """The optimizer written out with the reference rules and hand-kept state."""
    h = dict(getattr(O, name)._defaults, **hyper)
    params = [p.copy() for p in params]
    st = [{} for _ in params]
    for t, grads in enumerate(grads_seq, start=1):
        if lr_changes and t in lr_changes:
            h["lr"] = lr_changes[t]
        for p, g, s in zip(params, grads, st):
            b1, b2 = h.get("betas", (None, None))
            if name == "SGD":
                if h["momentum"] != 0:
                    s.setdefault("buf", np.zeros_like(p))
                R.sgd(p, g, s.get("buf"), lr=h["lr"], momentum=h["momentum"], dampening=h["dampening"],
                      nesterov=h["nesterov"], weight_decay=h["weight_decay"], maximize=h["maximize"], first_step=t == 1)
            elif name in ("Adam", "AdamW"):
                for k in ("m", "v", "vmax"):
                    s.setdefault(k, np.zeros_like(p))
                R.adam(p, g, s["m"], s["v"], s["vmax"], step=t, lr=h["lr"], beta1=b1, beta2=b2, eps=h["eps"],
                       weight_decay=h["weight_decay"], amsgrad=h["amsgrad"], maximize=h["maximize"],
                       decoupled_weight_decay=name == "AdamW")
            elif name == "Adamax":
                for k in ("m", "u"):
                    s.setdefault(k, np.zeros_like(p))
                R.adamax(p, g, s["m"], s["u"], step=t, lr=h["lr"], beta1=b1, beta2=b2, eps=h["eps"],
                         weight_decay=h["weight_decay"], maximize=h["maximize"])
            elif name == "NAdam":
                for k in ("m", "v"):
                    s.setdefault(k, np.zeros_like(p))
                s.setdefault("prod", 1.0)
                R.nadam(p, g, s["m"], s["v"], step=t, mu_product=s["prod"], lr=h["lr"], beta1=b1, beta2=b2,
                        eps=h["eps"], weight_decay=h["weight_decay"], momentum_decay=h["momentum_decay"],
                        maximize=h["maximize"], decoupled_weight_decay=h["decoupled_weight_decay"])
                s["prod"] = s["prod"] * R.nadam_mu(t, b1, h["momentum_decay"])
            elif name == "RAdam":
                for k in ("m", "v"):
                    s.setdefault(k, np.zeros_like(p))
                R.radam(p, g, s["m"], s["v"], step=t, lr=h["lr"], beta1=b1, beta2=b2, eps=h["eps"],
                        weight_decay=h["weight_decay"], maximize=h["maximize"],
                        decoupled_weight_decay=h["decoupled_weight_decay"])
            elif name == "Adagrad":
                s.setdefault("sum", np.full_like(p, h["initial_accumulator_value"]))
                R.adagrad(p, g, s["sum"], step=t, lr=h["lr"], lr_decay=h["lr_decay"], weight_decay=h["weight_decay"],
                          eps=h["eps"], maximize=h["maximize"])
            elif name == "Adadelta":
                for k in ("s", "a"):
                    s.setdefault(k, np.zeros_like(p))
                R.adadelta(p, g, s["s"], s["a"], lr=h["lr"], rho=h["rho"], eps=h["eps"],
                           weight_decay=h["weight_decay"], maximize=h["maximize"])
            elif name == "RMSprop":
                for k in ("s", "b", "ga"):
                    s.setdefault(k, np.zeros_like(p))
                R.rmsprop(p, g, s["s"], s["b"], s["ga"], lr=h["lr"], alpha=h["alpha"], eps=h["eps"],
                          weight_decay=h["weight_decay"], momentum=h["momentum"], centered=h["centered"],
                          maximize=h["maximize"])
            elif name == "Lion":
                s.setdefault("m", np.zeros_like(p))
                R.lion(p, g, s["m"], lr=h["lr"], beta1=b1, beta2=b2, weight_decay=h["weight_decay"],
                       maximize=h["maximize"])
    return params


def _problem(dtype, n_steps=6, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=(3, 4)).astype(dtype), rng.normal(size=(5,)).astype(dtype)]
    grads = [[rng.normal(size=p.shape).astype(dtype) for p in params] for _ in range(n_steps)]
    return params, grads


def _assert_close(a, b, backend, dtype):
    """Every backend is bit-identical to the reference (tests/test_rules.py): compared with ==."""
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name, hyper", CONFIGS, ids=CONFIG_IDS)
def test_matches_the_reference_rules(name, hyper, backend, dtype):
    """Every optimizer on every backend (the ``backend`` fixture: a backend that does not
    import is a visible skip) and both dtypes, against the reference rules."""
    params, grads = _problem(dtype)
    expected = reference_run(name, hyper, params, grads, lr_changes={4: hyper["lr"] * 0.5})
    opt = getattr(O, name)([p.copy() for p in params], backend=backend, **hyper)
    for t, g in enumerate(grads, start=1):
        if t == 4:
            opt.lr = hyper["lr"] * 0.5  # hyperparameters can change between steps
        out = opt.step(g)
        assert opt.step_count == t
    assert out[0] is opt.parameters()[0]
    for p, e in zip(opt.parameters(), expected):
        assert p.dtype == dtype
        _assert_close(p, e, backend, dtype)


def test_sgd_momentum_first_step_is_torchs():
    # torch: buf = g on the first step (no dampening), then buf = mu*buf + (1 - dampening)*g
    lr, mu, d = 0.1, 0.9, 0.5
    g1, g2 = np.array([1.0, -2.0]), np.array([0.5, 4.0])
    p = np.array([1.0, 1.0])
    opt = O.SGD([p], lr=lr, momentum=mu, dampening=d, backend="numpy")
    opt.step([g1])
    np.testing.assert_array_equal(p, 1.0 - lr * g1)
    opt.step([g2])
    buf = mu * g1 + (1 - d) * g2
    np.testing.assert_allclose(p, 1.0 - lr * g1 - lr * buf, rtol=1e-15)
    np.testing.assert_allclose(opt.state[0]["momentum_buffer"], buf, rtol=1e-15)


def test_adam_is_the_textbook_formula():
    # SEEDS.md sec. 1: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; x -= lr mhat / (sqrt(vhat) + eps)
    rng = np.random.default_rng(5)
    x = rng.normal(size=7)
    xs = x.copy()
    m = np.zeros(7)
    v = np.zeros(7)
    opt = O.Adam([x], lr=0.01, backend="numpy")
    for t in range(1, 30):
        g = np.cos(3 * xs) + xs
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        xs = xs - 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        opt.step([np.cos(3 * x) + x])
    np.testing.assert_allclose(x, xs, rtol=1e-12)


def test_state_is_lazy_zeros_of_param_shape_and_dtype():
    p32 = np.ones((2, 3), np.float32)
    p64 = np.ones(4)
    opt = O.Adam([p32, p64], backend="numpy", amsgrad=True)
    assert opt.state == [{}, {}] and opt.step_count == 0
    opt.step([np.zeros_like(p32), np.zeros_like(p64)])
    assert set(opt.state[0]) == {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    for st, p in zip(opt.state, (p32, p64)):
        for a in st.values():
            assert a.shape == p.shape and a.dtype == p.dtype and not np.any(a)
    ada = O.Adagrad([np.ones(3)], initial_accumulator_value=1.0, backend="numpy")  # the text that starts G at 1
    ada.step([np.zeros(3)])
    np.testing.assert_array_equal(ada.state[0]["sum"], np.ones(3))
    nad = O.NAdam([np.ones(3)], backend="numpy")
    nad.step([np.ones(3)])
    mp = nad.state[0]["mu_product"]
    assert mp.dtype == np.float64 and mp.shape == (1,) and mp[0] == nadam_mu_product(1)
    sgd = O.SGD([np.ones(2)], backend="numpy")
    sgd.step([np.ones(2)])
    assert sgd.state == [{}]  # plain SGD keeps no state


RESUME = [("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)), ("Adam", dict(lr=0.01, amsgrad=True)),
          ("AdamW", dict(lr=0.01)), ("Adamax", dict(lr=0.01)), ("NAdam", dict(lr=0.01)), ("RAdam", dict(lr=0.01)),
          ("Adagrad", dict(lr=0.1, lr_decay=0.1)), ("Adadelta", dict()), ("RMSprop", dict(momentum=0.5, centered=True)),
          ("Lion", dict(lr=0.01))]


@pytest.mark.parametrize("name, hyper", RESUME, ids=[r[0] for r in RESUME])
def test_save_load_resumes_bit_exactly(name, hyper, tmp_path):
    params, grads = _problem(np.float64, n_steps=10, seed=3)
    cls = getattr(O, name)
    full = cls([p.copy() for p in params], backend="numpy", **hyper)
    for g in grads:
        full.step(g)
    first = cls([p.copy() for p in params], backend="numpy", **hyper)
    for g in grads[:5]:
        first.step(g)
    path = tmp_path / "opt.npz"
    O.save(first, path)
    # a fresh optimizer over unrelated arrays of the same shapes resumes from the file
    resumed = cls([np.zeros_like(p) for p in params], backend="numpy", **dict(hyper, lr=123.0))
    O.load(resumed, path)
    assert resumed.step_count == 5 and resumed.hyper == first.hyper
    for g in grads[5:]:
        resumed.step(g)
    assert resumed.step_count == 10
    for a, b in zip(resumed.parameters(), full.parameters()):
        np.testing.assert_array_equal(a, b)
    for sa, sb in zip(resumed.state, full.state):
        assert sa.keys() == sb.keys()
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k])


def test_state_dict_copies_and_validates():
    p = np.ones(3)
    opt = O.Adam([p], lr=0.1, backend="numpy")
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"][:] = 99.0
    assert not np.any(opt.state[0]["exp_avg"] == 99.0)
    before = opt.state_dict()
    other = O.SGD([np.ones(3)], backend="numpy").state_dict()
    with pytest.raises(ValueError, match="for SGD, not Adam"):
        opt.load_state_dict(other)
    bad = opt.state_dict()
    bad["state"][0]["exp_avg"] = np.zeros(4)
    bad["step_count"] = 7
    with pytest.raises(ValueError, match="exp_avg"):
        opt.load_state_dict(bad)
    bad = opt.state_dict()
    bad["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        opt.load_state_dict(bad)
    bad = opt.state_dict()
    bad["state"].append({})
    with pytest.raises(ValueError, match="one dict per parameter"):
        opt.load_state_dict(bad)
    after = opt.state_dict()  # nothing changed by the failed loads
    assert after["step_count"] == before["step_count"] == 1 and after["param_groups"] == before["param_groups"]
    np.testing.assert_array_equal(after["state"][0]["exp_avg"], before["state"][0]["exp_avg"])


def test_load_checks_the_file_before_writing(tmp_path):
    a = O.SGD([np.ones(3)], lr=0.1, momentum=0.9, backend="numpy")
    a.step([np.ones(3)])
    O.save(a, tmp_path / "a.npz")
    p = np.full(4, 7.0)
    b = O.SGD([p], lr=0.1, momentum=0.9, backend="numpy")
    with pytest.raises(ValueError, match="shape"):
        O.load(b, tmp_path / "a.npz")
    np.testing.assert_array_equal(p, 7.0)
    assert b.step_count == 0 and b.state == [{}]
    with pytest.raises(TypeError, match="opt must be"):
        O.save(object(), tmp_path / "x.npz")


def test_save_without_params(tmp_path):
    a = O.Adam([np.ones(3)], backend="numpy")
    a.step([np.ones(3)])
    O.save(a, tmp_path / "s.npz", params=False)
    p = np.full(3, 5.0)
    b = O.load(O.Adam([p], backend="numpy"), tmp_path / "s.npz")
    np.testing.assert_array_equal(p, 5.0)
    assert b.step_count == 1


def test_grads_are_validated_before_anything_is_written():
    p, q = np.ones(3), np.ones((2, 2))
    opt = O.SGD([p, q], lr=0.1, momentum=0.9, backend="numpy")
    cases = [
        ([np.ones(3)], ValueError, "grads has 1 arrays but the optimizer has 2"),
        ([np.ones(3), np.ones(4)], ValueError, r"grads\[1\] has shape \(4,\)"),
        ([np.ones(3), np.ones((2, 2), np.float32)], TypeError, r"grads\[1\] has dtype float32"),
        ([np.ones(3), [[1, 2], [3, 4]]], TypeError, r"grads\[1\] must be a numpy.ndarray"),
        ([p, np.ones((2, 2))], ValueError, "overlaps parameter 0"),
        (np.ones(3), TypeError, "grads must be a list"),
    ]
    for grads, exc, match in cases:
        with pytest.raises(exc, match=match):
            opt.step(grads)
    np.testing.assert_array_equal(p, 1.0)
    np.testing.assert_array_equal(q, 1.0)
    assert opt.step_count == 0 and opt.state == [{}, {}]
    # a non-contiguous gradient is accepted (copied)
    g = np.ones((2, 4))[:, ::2]
    opt.step([np.ones(3), g])
    np.testing.assert_allclose(q, 0.9)


def test_single_param_accepts_a_bare_array():
    p = np.ones(3)
    O.SGD(p, lr=0.5, backend="numpy").step(np.ones(3))
    np.testing.assert_array_equal(p, 0.5)


def test_hyperparameters_validated_at_construction_and_at_step():
    p = np.ones(3)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        O.Adam([p], lr=-1.0)
    with pytest.raises(TypeError, match="betas must be a tuple of two"):
        O.Adam([p], betas=(0.9,))
    with pytest.raises(ValueError, match=r"betas\[0\]"):
        O.Adam([p], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="nesterov=True requires momentum > 0"):
        O.SGD([p], nesterov=True)
    with pytest.raises(TypeError, match="amsgrad must be a bool"):
        O.Adam([p], amsgrad=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'momentum'"):
        O.Adam([p], momentum=0.9)
    with pytest.raises(ValueError, match="backend must be one of"):
        O.Adam([p], backend="fortran")
    opt = O.Adam([p], lr=0.1, backend="numpy")
    with pytest.raises(ValueError, match="lr must be >= 0"):
        opt.lr = -0.1
    opt.hyper["eps"] = -1.0
    with pytest.raises(ValueError, match="eps must be >= 0"):
        opt.step([np.ones(3)])
    np.testing.assert_array_equal(p, 1.0)
    assert opt.step_count == 0
    opt.hyper["eps"] = 1e-8
    opt.hyper["foo"] = 1
    with pytest.raises(ValueError, match="unknown hyperparameter 'foo'"):
        opt.step([np.ones(3)])


@pytest.mark.parametrize("params, exc, match", [
    ([np.arange(3)], TypeError, r"params\[0\] must have dtype float32 or float64"),
    ([np.ones((3, 4))[:, ::2]], ValueError, "C-contiguous"),
    ([], ValueError, "empty"),
    ([np.ones(3), "w"], TypeError, r"params\[1\] must be a numpy.ndarray"),
    (3.0, TypeError, "params must be a list"),
])
def test_params_validated(params, exc, match):
    with pytest.raises(exc, match=match):
        O.SGD(params)


def test_params_readonly_and_overlapping():
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        O.SGD([ro])
    base = np.ones(6)
    with pytest.raises(ValueError, match="overlap"):
        O.SGD([base[:4], base[2:]])


def test_param_groups_and_defaults():
    p = np.ones(2)
    opt = O.SGD([p], lr=0.1, momentum=0.5, backend="numpy")
    g = opt.param_groups[0]
    assert g["lr"] == 0.1 and g["params"][0] is p and "momentum" in g and len(g) == len(opt.hyper) + 1
    g["lr"] = 0.2
    assert opt.lr == 0.2 and opt.hyper["lr"] == 0.2 and opt.defaults["lr"] == 0.1
    assert type(g) is dict  # a real dict, as torch's: a misspelled key is an error at the next step
    g["betas"] = (0.9, 0.9)
    with pytest.raises(ValueError, match="unknown hyperparameter 'betas'"):
        opt.step([np.ones(2)])
    del g["betas"]
    np.testing.assert_array_equal(p, 1.0)
    assert O.AdamW([p]).defaults["weight_decay"] == 1e-2
    assert O.Adam([p]).defaults == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                                    "amsgrad": False, "maximize": False}
    assert "SGD(1 params, step_count=0" in repr(opt)
    assert set(O.OPTIMIZERS) == {"sgd", "adam", "adamw", "adamax", "nadam", "radam", "adagrad", "adadelta",
                                 "rmsprop", "lion"}


# ---------------------------------------------------------------------------------------
# schedules

def _lrs(sched, n):
    out = [sched.optimizer.lr]
    for _ in range(n):
        out.append(sched.step())
    return out


def test_step_exponential_cosine_lambda_schedules():
    mk = lambda: O.SGD([np.ones(1)], lr=0.5, backend="numpy")  # noqa: E731
    assert _lrs(O.StepLR(mk(), step_size=3, gamma=0.1), 7) == [0.5 * 0.1 ** (e // 3) for e in range(8)]
    assert _lrs(O.ExponentialLR(mk(), gamma=0.9), 5) == [0.5 * 0.9 ** e for e in range(6)]
    cos = _lrs(O.CosineAnnealingLR(mk(), T_max=4, eta_min=0.1), 4)
    assert cos[0] == 0.5 and cos[4] == pytest.approx(0.1, abs=1e-15) and cos[2] == pytest.approx(0.3, abs=1e-15)
    assert cos[1] == pytest.approx(0.1 + 0.4 * (1 + math.cos(math.pi / 4)) / 2, abs=1e-15)
    warm = O.LambdaLR(mk(), lambda t: min(1.0, (t + 1) / 4))
    assert _lrs(warm, 5) == [0.5 * min(1.0, (t + 1) / 4) for t in range(6)]
    assert warm.get_last_lr() == [0.5] and warm.last_epoch == 5


def test_schedule_drives_the_optimizer():
    # x -= lr_t * 1 with lr_t = 1, 0.5, 0.25 (ExponentialLR, one scheduler step per optimizer step)
    x = np.zeros(1)
    opt = O.SGD([x], lr=1.0, backend="numpy")
    sched = O.ExponentialLR(opt, gamma=0.5)
    for _ in range(3):
        opt.step([np.ones(1)])
        sched.step()
    np.testing.assert_array_equal(x, [-1.75])
    st = sched.state_dict()
    sched2 = O.ExponentialLR(O.SGD([np.zeros(1)], lr=1.0), gamma=0.5)
    sched2.load_state_dict(st)
    assert sched2.optimizer.lr == opt.lr == 0.125


def test_schedule_validation():
    opt = O.SGD([np.ones(1)], lr=0.5)
    with pytest.raises(TypeError, match="step_size must be an integer"):
        O.StepLR(opt, step_size=1.5)
    with pytest.raises(ValueError, match="T_max must be >= 1"):
        O.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        O.ExponentialLR(opt, gamma=-1)
    with pytest.raises(TypeError, match="lr_lambda must be callable"):
        O.LambdaLR(opt, 0.5)
    with pytest.raises(TypeError, match="optimizer must be"):
        O.StepLR(object(), step_size=1)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        O.LambdaLR(opt, lambda t: -1.0)


# ---------------------------------------------------------------------------------------
# parameter groups

def _arrays(dtype, shapes=((3, 4), (5,), (2, 3), (7,)), seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _grads_for(params, n_steps, seed=2):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(p.shape).astype(p.dtype) for p in params] for _ in range(n_steps)]


def test_groups_equal_separate_multi_calls(backend, dtype):
    """Per-group lr / weight_decay: exactly (==) one fastgd.multi.adam_step per group with the
    group's hyperparameters, step after step, also after a group's lr is changed."""
    params = _arrays(dtype)
    grads = _grads_for(params, 5)
    ours = [p.copy() for p in params]
    opt = O.Adam([{"params": ours[:2]}, {"params": ours[2:], "lr": 0.003, "weight_decay": 0.0}],
                 lr=0.01, weight_decay=0.1, backend=backend)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.003]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    theirs = [p.copy() for p in params]
    ms = [np.zeros_like(p) for p in theirs]
    vs = [np.zeros_like(p) for p in theirs]
    hyper = [dict(lr=0.01, weight_decay=0.1), dict(lr=0.003, weight_decay=0.0)]
    for t, g in enumerate(grads, start=1):
        if t == 3:
            opt.param_groups[1]["lr"] = 0.0005  # takes effect at the next step
            hyper[1]["lr"] = 0.0005
        opt.step(g)
        for (a, b), h in zip(((0, 2), (2, 4)), hyper):
            fastgd.multi.adam_step(theirs[a:b], g[a:b], ms[a:b], vs[a:b], step=t, backend=backend, **h)
    for i, (p, q) in enumerate(zip(ours, theirs)):
        assert p.dtype == dtype and np.array_equal(p, q), i
        assert np.array_equal(opt.state[i]["exp_avg"], ms[i]) and np.array_equal(opt.state[i]["exp_avg_sq"], vs[i])


GROUP_CASES = [("SGD", dict(lr=0.05, momentum=0.9), dict(lr=0.01, momentum=0.5, dampening=0.2)),
               ("Adam", dict(lr=0.01), dict(lr=0.002, amsgrad=True, weight_decay=0.1)),
               ("NAdam", dict(lr=0.01), dict(lr=0.003, momentum_decay=0.01)),
               ("Adagrad", dict(lr=0.1), dict(lr=0.05, initial_accumulator_value=0.5)),
               ("RMSprop", dict(lr=0.01), dict(lr=0.002, momentum=0.5, centered=True)),
               ("Lion", dict(lr=0.01), dict(lr=0.001, weight_decay=0.1))]


@pytest.mark.parametrize("name, h0, h1", GROUP_CASES, ids=[c[0] for c in GROUP_CASES])
def test_groups_equal_one_optimizer_per_group(name, h0, h1, backend):
    """Two groups (mixed float32 / float64 inside each) step exactly as two optimizers."""
    cls = getattr(O, name)
    params = _arrays(np.float32) + _arrays(np.float64, seed=4)
    order = [0, 4, 1, 5, 2, 6, 3, 7]  # each group mixes the dtypes
    params = [params[i] for i in order]
    grads = _grads_for(params, 4)
    ours = [p.copy() for p in params]
    opt = cls([{"params": ours[:4], **h0}, {"params": ours[4:], **h1}], backend=backend)
    a = cls([p.copy() for p in params[:4]], backend=backend, **h0)
    b = cls([p.copy() for p in params[4:]], backend=backend, **h1)
    for g in grads:
        opt.step(g)
        a.step(g[:4])
        b.step(g[4:])
    for i, (p, q) in enumerate(zip(ours, a.parameters() + b.parameters())):
        assert np.array_equal(p, q), i
    for st, ref in zip(opt.state, list(a.state) + list(b.state)):
        assert st.keys() == ref.keys()
        for k in st:
            assert np.array_equal(st[k], ref[k]), k
    if name == "NAdam":  # one mu_product per group, in every parameter's dict
        assert opt.state[0]["mu_product"] is opt.state[3]["mu_product"]
        assert opt.state[0]["mu_product"] is not opt.state[4]["mu_product"]


def test_constructor_and_add_param_group():
    W, b, c = np.ones((2, 2)), np.ones(2), np.ones(3)
    opt = O.Adam([{"params": W}, {"params": [b], "lr": 0.5}], lr=0.1, backend="numpy")
    assert opt.parameters()[0] is W and opt.parameters()[1] is b
    assert opt.param_groups[0]["params"] == [W] and opt.param_groups[1]["lr"] == 0.5
    assert opt.param_groups[0]["lr"] == 0.1 and opt.defaults["lr"] == 0.1
    assert list(opt.param_groups[1]) == ["params"] + list(O.Adam._defaults)
    with pytest.raises(TypeError, match="cannot be changed"):
        opt.param_groups[0]["params"].append(c)
    for bad, exc, match in [
        ({"params": [W]}, ValueError, "same array"),
        ({"params": [W[0]]}, ValueError, "overlap"),
        ({"params": []}, ValueError, "empty"),
        ({"lr": 0.1}, ValueError, "no 'params'"),
        ({"params": [c], "momentum": 0.9}, TypeError, "unexpected hyperparameter 'momentum'"),
        ({"params": [c], "lr": -1.0}, ValueError, "lr must be >= 0"),
        ({"params": [c.astype(np.float32)[::2]]}, ValueError, "C-contiguous"),
        ({"params": [np.ma.masked_array(c)]}, TypeError, "subclass"),
        ([c], TypeError, "must be a dict"),
    ]:
        with pytest.raises(exc, match=match):
            opt.add_param_group(bad)
        assert len(opt.param_groups) == 2 and len(opt.parameters()) == 2 and len(opt.state) == 2
    opt.add_param_group({"params": c, "betas": (0.5, 0.9)})
    assert opt.param_groups[2]["betas"] == (0.5, 0.9) and opt.param_groups[2]["lr"] == 0.1
    assert opt.parameters()[2] is c and len(opt.state) == 3
    with pytest.raises(TypeError, match="mixes arrays and dicts"):
        O.SGD([W, {"params": [b]}])
    with pytest.raises(ValueError, match="same array"):
        O.SGD([{"params": [W]}, {"params": [b, W]}])
    with pytest.raises(ValueError, match="same array"):
        O.SGD([W, W])
    with pytest.raises(TypeError, match=r"params\[1\]\['params'\]\[0\] must be a numpy.ndarray"):
        O.SGD([{"params": [W]}, {"params": ["x"]}])
    assert "group 1" in repr(opt)


def test_added_group_starts_at_its_step_one(backend):
    """A group added after k steps takes its own first step (bias corrections from step 1),
    as torch's per-parameter step; the old group goes on."""
    p, q = _arrays(np.float64, shapes=((4,), (3,)))
    grads = _grads_for([p, q], 6)
    opt = O.Adam([p.copy()], lr=0.01, backend=backend)
    for g in grads[:3]:
        opt.step(g[:1])
    opt.add_param_group({"params": [q.copy()], "lr": 0.05})
    late = O.Adam([q.copy()], lr=0.05, backend=backend)
    whole = O.Adam([p.copy()], lr=0.01, backend=backend)
    for g in grads[:3]:
        whole.step(g[:1])
    for g in grads[3:]:
        opt.step(g)
        late.step(g[1:])
        whole.step(g[:1])
    assert opt.step_count == 6
    assert np.array_equal(opt.parameters()[0], whole.parameters()[0])
    assert np.array_equal(opt.parameters()[1], late.parameters()[0])
    sd = opt.state_dict()
    assert [g["step"] for g in sd["param_groups"]] == [6, 3] and sd["param_groups"][1]["params"] == [1]


def test_lr_hyper_and_group_hyperparameters():
    opt = O.SGD([{"params": [np.ones(2)]}, {"params": [np.ones(3)], "lr": 0.5}], lr=0.1, backend="numpy")
    assert opt.lr == 0.1  # the first group's
    opt.lr = 0.25  # every group's
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.25]
    assert dict(opt.hyper) == {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    opt.hyper["momentum"] = 0.9  # the first group's, live
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[1]["momentum"] == 0.0
    opt.param_groups[1]["lr"] = -1.0
    with pytest.raises(ValueError, match=r"param_groups\[1\]: lr must be >= 0"):
        opt.step([np.ones(2), np.ones(3)])
    assert opt.step_count == 0 and opt.state == [{}, {}]
    np.testing.assert_array_equal(opt.parameters()[0], 1.0)
    opt.param_groups[1]["lr"] = 0.5
    opt.param_groups[1]["Lr"] = 0.5
    with pytest.raises(ValueError, match=r"param_groups\[1\]: unknown hyperparameter 'Lr'"):
        opt.step([np.ones(2), np.ones(3)])
    del opt.param_groups[1]["Lr"]
    opt.param_groups[1]["params"] = [np.ones(3)]
    with pytest.raises(ValueError, match="was replaced"):
        opt.step([np.ones(2), np.ones(3)])


class _Sub(np.ndarray):
    pass


def test_bad_gradient_in_a_later_group_is_named_by_its_position():
    opt = O.Adam([{"params": [np.ones(2), np.ones(3, np.float32)]}, {"params": [np.ones(4), np.ones(5)]}],
                 backend="numpy")
    good = [np.ones(2), np.ones(3, np.float32), np.ones(4), np.ones(5)]
    for i, bad, exc, match in [(3, np.ones(6), ValueError, r"grads\[3\] has shape \(6,\)"),
                               (3, None, TypeError, r"grads\[3\] is None"),
                               (2, np.ones(4, np.float32), TypeError, r"grads\[2\] has dtype float32"),
                               (2, np.ma.masked_array(np.ones(4)), TypeError, r"grads\[2\].*subclass"),
                               (3, np.ones(5).view(_Sub), TypeError, r"grads\[3\].*subclass")]:
        grads = list(good)
        grads[i] = bad
        with pytest.raises(exc, match=match):
            opt.step(grads)
        assert opt.step_count == 0 and opt.state == [{}, {}, {}, {}]
    opt.step(tuple(good))
    assert opt.step_count == 1


# ---------------------------------------------------------------------------------------
# schedules over groups

def test_schedulers_set_every_group():
    opt = O.SGD([{"params": [np.ones(1)]}, {"params": [np.ones(1)], "lr": 0.01}], lr=0.1, backend="numpy")
    sched = O.StepLR(opt, step_size=2, gamma=0.5)
    assert sched.base_lrs == [0.1, 0.01] and sched.base_lr == 0.1
    lrs = [sched.get_last_lr()]
    for _ in range(4):
        opt.step([np.ones(1), np.ones(1)])
        sched.step()
        lrs.append(sched.get_last_lr())
    assert lrs == [[0.1 * 0.5 ** (e // 2), 0.01 * 0.5 ** (e // 2)] for e in range(5)]
    st = sched.state_dict()
    opt2 = O.SGD([{"params": [np.ones(1)]}, {"params": [np.ones(1)], "lr": 7.0}], lr=7.0, backend="numpy")
    sched2 = O.StepLR(opt2, step_size=2, gamma=0.5)
    sched2.load_state_dict(st)
    assert sched2.get_last_lr() == lrs[-1] and sched2.last_epoch == 4
    sched2.load_state_dict({"last_epoch": 2, "base_lr": 1.0})  # earlier versions: one base for all
    assert sched2.get_last_lr() == [0.5, 0.5]
    opt.add_param_group({"params": [np.ones(1)], "lr": 2.0})  # starts from its own lr
    sched.step()
    assert sched.get_last_lr() == [0.1 * 0.5 ** 2, 0.01 * 0.5 ** 2, 2.0 * 0.5 ** 2]
    lam = O.LambdaLR(O.Adam([{"params": [np.ones(1)]}, {"params": [np.ones(1)], "lr": 1.0}], lr=0.5),
                     lambda t: 1.0 / (t + 1))
    lam.step()
    assert lam.get_last_lr() == [0.25, 0.5]
    now = [g["lr"] for g in opt.param_groups]
    cos = O.CosineAnnealingLR(opt, T_max=2)
    assert cos.base_lrs == now and cos.get_last_lr() == now
    cos.step()
    assert cos.get_last_lr() == pytest.approx([lr / 2 for lr in now], rel=1e-15)


# ---------------------------------------------------------------------------------------
# state dicts and files

RESUME_GROUPS = [("SGD", dict(lr=0.05, momentum=0.9, nesterov=True), dict(lr=0.01, momentum=0.5)),
                 ("Adam", dict(lr=0.01, amsgrad=True), dict(lr=0.003, weight_decay=0.1)),
                 ("AdamW", dict(lr=0.01), dict(lr=0.02, weight_decay=0.0)),
                 ("Adamax", dict(lr=0.01), dict(lr=0.002)),
                 ("NAdam", dict(lr=0.01), dict(lr=0.02, decoupled_weight_decay=True, weight_decay=0.1)),
                 ("RAdam", dict(lr=0.01), dict(lr=0.05)),
                 ("Adagrad", dict(lr=0.1, lr_decay=0.1), dict(lr=0.05, initial_accumulator_value=1.0)),
                 ("Adadelta", dict(), dict(lr=0.5, rho=0.8)),
                 ("RMSprop", dict(momentum=0.5, centered=True), dict(lr=0.001)),
                 ("Lion", dict(lr=0.01), dict(lr=0.001, betas=(0.95, 0.98)))]


def _build(cls, params, h0, h1, backend):
    return cls([{"params": params[:2], **h0}, {"params": params[2:], **h1}], backend=backend)


def _assert_same_optimizer(a, b):
    assert a.step_count == b.step_count
    for p, q in zip(a.parameters(), b.parameters()):
        assert p.dtype == q.dtype and np.array_equal(p, q)
    for sa, sb in zip(a.state, b.state):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]), k
    assert [{k: v for k, v in g.items() if k != "params"} for g in a.param_groups] == \
        [{k: v for k, v in g.items() if k != "params"} for g in b.param_groups]


@pytest.mark.parametrize("name, h0, h1", RESUME_GROUPS, ids=[c[0] for c in RESUME_GROUPS])
def test_resume_with_groups_is_bit_exact(name, h0, h1, backend, dtype, tmp_path):
    """Train 7 steps, save (state_dict and file), load into fresh optimizers over other
    arrays, continue: == the uninterrupted run, parameters and state."""
    cls = getattr(O, name)
    params = _arrays(dtype)
    grads = _grads_for(params, 12)
    full = _build(cls, [p.copy() for p in params], h0, h1, backend)
    for g in grads:
        full.step(g)
    first = _build(cls, [p.copy() for p in params], h0, h1, backend)
    for g in grads[:7]:
        first.step(g)
    sd = first.state_dict()
    O.save(first, tmp_path / "opt.npz")
    via_dict = _build(cls, [p.copy() for p in first.parameters()], dict(h0, lr=9.0), dict(h1, lr=9.0), backend)
    via_dict.load_state_dict(sd)
    via_file = _build(cls, [np.zeros_like(p) for p in params], h0, h1, backend)
    O.load(via_file, tmp_path / "opt.npz")
    for opt in (via_dict, via_file):
        assert opt.step_count == 7 and opt.param_groups[0]["lr"] == first.param_groups[0]["lr"]
        for g in grads[7:]:
            opt.step(g)
        _assert_same_optimizer(opt, full)


def test_rejected_first_step_leaves_no_state():
    """A first step that raises allocates nothing: the state dict still loads (also into the
    optimizer itself), and the next good step is the first."""
    p = [np.ones(3), np.ones(2, np.float32)]
    for opt in (O.NAdam(p, backend="numpy"), O.Adam(p, amsgrad=True, backend="numpy"),
                O.SGD(p, momentum=0.9, backend="numpy")):
        for grads in ([np.ones(3), np.ones(3, np.float32)], [np.ones(3), None], [np.ones(3), np.ones(2)]):
            with pytest.raises((TypeError, ValueError)):
                opt.step(grads)
            assert opt.step_count == 0 and opt.state == [{}, {}]
            sd = opt.state_dict()
            opt.load_state_dict(sd)
            type(opt)([np.ones(3), np.ones(2, np.float32)], backend="numpy").load_state_dict(sd)
        before = [q.copy() for q in p]
        opt.step([np.ones(3), np.ones(2, np.float32)])
        assert opt.step_count == 1 and all(opt.state)
        assert all(np.all(q < b) for q, b in zip(p, before))


def test_load_state_dict_refusals():
    opt = O.NAdam([np.ones(3), np.ones(2)], backend="numpy")
    opt.step([np.ones(3), np.ones(2)])
    good = opt.state_dict()

    def edited(fn):
        sd = opt.state_dict()
        fn(sd)
        return sd

    cases = [
        (lambda sd: sd["state"][1].pop("exp_avg_sq"), ValueError, r"\[1\] has no 'exp_avg_sq' array"),
        (lambda sd: sd["state"][0].update(exp_avgs=np.zeros(3)), ValueError, "unknown state array 'exp_avgs'"),
        (lambda sd: sd["state"][0].update(momentum_buffer=np.zeros(3)), ValueError, "unknown state array"),
        (lambda sd: sd.update(hyper={}), ValueError, "unknown entry 'hyper'"),
        (lambda sd: sd.update(extra=1), ValueError, "unknown entry 'extra'"),
        (lambda sd: sd.pop("param_groups"), ValueError, "no 'param_groups' entry"),
        (lambda sd: sd["state"][0].update(exp_avg=np.zeros(4)), ValueError, "exp_avg'] has shape"),
        (lambda sd: sd["state"][0].update(exp_avg=np.zeros(3, np.float32)), ValueError, "dtype float32"),
        (lambda sd: sd["state"][0].update(exp_avg=[0.0, 0.0, 0.0]), TypeError, "must be a numpy.ndarray"),
        (lambda sd: sd["state"][0]["exp_avg_sq"].__setitem__(1, -1e-30), ValueError, "negative values"),
        (lambda sd: sd["state"][0].update(mu_product=np.ones(1, np.float32)), ValueError, "mu_product"),
        (lambda sd: sd["state"][0].update(mu_product=np.ones(2)), ValueError, "mu_product"),
        (lambda sd: sd["state"][0].update(mu_product=np.ones(())), ValueError, "mu_product"),
        (lambda sd: sd["state"][0].update(mu_product=np.array([-0.5])), ValueError, "negative"),
        (lambda sd: sd["state"][1].update(mu_product=np.array([0.5])), ValueError, "shares one mu_product"),
        (lambda sd: sd["param_groups"][0].update(step=0), ValueError, "taken no step"),
        (lambda sd: sd["param_groups"][0].update(step=5), ValueError, r"\['step'\] must be an integer"),
        (lambda sd: sd["param_groups"][0].update(params=[1, 0]), ValueError, "same order"),
        (lambda sd: sd["param_groups"].append(dict(sd["param_groups"][0])), ValueError, "list of 1 group "),
        (lambda sd: sd["param_groups"][0].pop("eps"), ValueError, "'eps' of NAdam is missing"),
        (lambda sd: sd["param_groups"][0].update(betas=(1.5, 0.9)), ValueError, r"betas\[0\]"),
        (lambda sd: sd.update(step_count=-1), ValueError, "step_count"),
        (lambda sd: sd.update(optimizer="Adam"), ValueError, "for Adam, not NAdam"),
    ]
    for fn, exc, match in cases:
        with pytest.raises(exc, match=match):
            opt.load_state_dict(edited(fn))
        _assert_state_dict_equal(opt.state_dict(), good)
    # a step count > 0 with no arrays at all: refused too (they would come back as zeros)
    bare = dict(good, state=[{}, {}])
    with pytest.raises(ValueError, match="has no 'exp_avg' array"):
        opt.load_state_dict(bare)
    # torch's form of "state" (a dict by parameter index) is read too
    opt.load_state_dict(dict(good, state=dict(enumerate(good["state"]))))
    _assert_state_dict_equal(opt.state_dict(), good)
    # the one-group form of earlier versions
    old = {"optimizer": "NAdam", "step_count": 1, "hyper": {k: v for k, v in good["param_groups"][0].items()
                                                           if k not in ("params", "step")},
           "state": good["state"]}
    opt.load_state_dict(old)
    _assert_state_dict_equal(opt.state_dict(), good)


def _assert_state_dict_equal(a, b):
    assert a.keys() == b.keys() and a["step_count"] == b["step_count"] and a["param_groups"] == b["param_groups"]
    for sa, sb in zip(a["state"], b["state"]):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert np.array_equal(sa[k], sb[k])


def test_state_dict_includes_state_a_changed_hyperparameter_needs():
    """amsgrad switched on after some steps: the saved state has max_exp_avg_sq as the next
    step would create it, so the optimizer's own state dict loads and resumes exactly."""
    params = _arrays(np.float64, shapes=((3,), (4,)))
    grads = _grads_for(params, 4)
    a = O.Adam([p.copy() for p in params], backend="numpy")
    for g in grads[:2]:
        a.step(g)
    a.param_groups[0]["amsgrad"] = True
    b = O.Adam([p.copy() for p in a.parameters()], backend="numpy")
    b.load_state_dict(a.state_dict())
    for g in grads[2:]:
        a.step(g)
        b.step(g)
    _assert_same_optimizer(a, b)


def test_replaced_state_arrays_are_used(backend):
    """The lists of state arrays are cached between steps; replacing an array in opt.state
    (or writing into one) is seen by the next step."""
    p = np.ones(3)
    opt = O.SGD([p], lr=0.1, momentum=0.5, backend=backend)
    opt.step([np.ones(3)])
    opt.state[0]["momentum_buffer"] = np.full(3, 4.0)
    opt.step([np.ones(3)])
    np.testing.assert_allclose(opt.state[0]["momentum_buffer"], 0.5 * 4.0 + 1.0)
    opt.state[0]["momentum_buffer"][...] = 0.0
    opt.step([np.ones(3)])
    np.testing.assert_allclose(opt.state[0]["momentum_buffer"], 1.0)
    with pytest.raises(TypeError, match="cannot be changed"):
        opt.state[0] = {}
    with pytest.raises(AttributeError):
        opt.state = []


def _saved(tmp_path):
    opt = O.Adam([{"params": [np.ones(3)]}, {"params": [np.ones(2)], "lr": 0.1}], backend="numpy")
    opt.step([np.ones(3), np.full(2, 0.5)])
    path = tmp_path / "opt.npz"
    O.save(opt, path)
    return path


def _rewrite_meta(path, text_edit=None, json_edit=None):
    """Rewrite the file's __meta__ entry: edit its text, or its decoded JSON object."""
    import json
    with np.load(path) as data:
        entries = {k: data[k] for k in data.files}
    meta = str(entries["__meta__"])
    entries["__meta__"] = np.array(text_edit(meta) if text_edit else json.dumps(json_edit(json.loads(meta))))
    np.savez(path, **entries)


def test_damaged_files_raise_one_clear_error_and_change_nothing(tmp_path):
    def truncate(path):
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])

    def garbage(path):
        path.write_bytes(b"not a zip file at all" * 10)

    def npy(path):
        np.save(path.open("wb"), np.ones(3))

    def json_text(path):
        _rewrite_meta(path, text_edit=lambda meta: meta[:-5])

    def json_edit(key, value):
        def run(path):
            _rewrite_meta(path, json_edit=lambda meta: dict(meta, **{key: value}))
        run.__name__ = "json_%s" % key
        return run

    def drop_entry(path):
        with np.load(path) as data:
            entries = {k: data[k] for k in data.files if k != "state/1/exp_avg_sq"}
        np.savez(path, **entries)

    def extra_entry(path):
        with np.load(path) as data:
            entries = {k: data[k] for k in data.files}
        np.savez(path, **entries, **{"state/0/foo": np.ones(3)})

    def negative(path):
        with np.load(path) as data:
            entries = {k: data[k] for k in data.files}
        entries["state/0/exp_avg_sq"] = -entries["state/0/exp_avg_sq"] - 1.0
        np.savez(path, **entries)

    damages = [truncate, garbage, npy, json_text, json_edit("format", "fastgd.optim/9"),
               json_edit("param_groups", "nonsense"), json_edit("n_params", 5), json_edit("step_count", "1"),
               json_edit("state_names", [["exp_avg"], ["exp_avg"]]), drop_entry, extra_entry, negative]
    for damage in damages:
        path = _saved(tmp_path)
        damage(path)
        p, q = np.full(3, 7.0), np.full(2, 7.0)
        opt = O.Adam([{"params": [p]}, {"params": [q], "lr": 0.1}], backend="numpy")
        before = opt.state_dict()
        with pytest.raises(ValueError, match="cannot load %s" % str(path).replace("\\", "\\\\")) as info:
            O.load(opt, path)
        assert info.value.__cause__ is not None, damage.__name__
        _assert_state_dict_equal(opt.state_dict(), before)
        np.testing.assert_array_equal(p, 7.0)
        np.testing.assert_array_equal(q, 7.0)
    with pytest.raises(FileNotFoundError):
        O.load(O.Adam([np.ones(3)]), tmp_path / "missing.npz")


def test_files_of_the_previous_format_load(tmp_path):
    """A file as the previous save wrote it (format fastgd.optim/1: one group, "hyper")."""
    import json
    params = _arrays(np.float64, shapes=((3,), (2,)))
    grads = _grads_for(params, 4)
    a = O.RMSprop([p.copy() for p in params], lr=0.01, momentum=0.5, backend="numpy")
    for g in grads[:2]:
        a.step(g)
    sd = a.state_dict()
    meta = {"format": "fastgd.optim/1", "optimizer": "RMSprop", "step_count": 2,
            "hyper": {k: v for k, v in sd["param_groups"][0].items() if k not in ("params", "step")},
            "n_params": 2, "params": True, "state_names": [sorted(st) for st in sd["state"]]}
    arrays = {"__meta__": np.array(json.dumps(meta))}
    for i, st in enumerate(sd["state"]):
        for k, v in st.items():
            arrays["state/%d/%s" % (i, k)] = v
    for i, p in enumerate(a.parameters()):
        arrays["param/%d" % i] = p
    np.savez(tmp_path / "old.npz", **arrays)
    b = O.load(O.RMSprop([np.zeros_like(p) for p in params], momentum=0.5, backend="numpy"), tmp_path / "old.npz")
    for g in grads[2:]:
        a.step(g)
        b.step(g)
    _assert_same_optimizer(a, b)


# ---------------------------------------------------------------------------------------
# atomicity and threads

def _interrupting(monkeypatch, name, on_call, action="raise"):
    """Patch fastgd.multi.<name> to raise KeyboardInterrupt instead of running on call
    number ``on_call`` (``action="signal"``: to deliver a real SIGINT while running)."""
    real = getattr(fastgd.multi, name)
    calls = [0]

    def patched(*args, **kwargs):
        calls[0] += 1
        if calls[0] == on_call:
            if action == "raise":
                raise KeyboardInterrupt
            import signal
            signal.raise_signal(signal.SIGINT)  # Ctrl-C arrives while the kernel runs
        return real(*args, **kwargs)
    monkeypatch.setattr(fastgd.multi, name, patched)
    return calls


@pytest.mark.parametrize("on_call", [1, 2, 3], ids=["first-call", "second-call", "third-call"])
def test_keyboard_interrupt_leaves_before_or_after(monkeypatch, backend, on_call):
    """Mixed float32/float64 parameters in two groups: four multi-tensor calls per step.  An
    interrupt on the first call leaves the optimizer as before the step; on a later call the
    step is finished first: as after it."""
    params = _arrays(np.float32, shapes=((3,), (4,))) + _arrays(np.float64, shapes=((5,), (2,)))
    params = [params[0], params[2], params[1], params[3]]
    grads = _grads_for(params, 2)

    def make():
        return O.Adam([{"params": [p.copy() for p in params[:2]]}, {"params": [p.copy() for p in params[2:]],
                                                                      "lr": 0.1}], backend=backend)
    ref_before, ref_after = make(), make()
    opt = make()
    for o in (ref_before, ref_after, opt):
        o.step(grads[0])
    ref_after.step(grads[1])
    calls = _interrupting(monkeypatch, "adam_step", on_call)
    with pytest.raises(KeyboardInterrupt):
        opt.step(grads[1])
    monkeypatch.undo()
    assert calls[0] == (1 if on_call == 1 else 5)  # the interrupted call is run again
    _assert_same_optimizer(opt, ref_before if on_call == 1 else ref_after)
    opt.step(grads[1])  # and it goes on
    assert opt.step_count == (2 if on_call == 1 else 3)


def test_interrupted_first_step_allocates_nothing(monkeypatch):
    opt = O.NAdam([np.ones(3, np.float32), np.ones(2)], backend="numpy")
    _interrupting(monkeypatch, "nadam_step", 1)
    with pytest.raises(KeyboardInterrupt):
        opt.step([np.ones(3, np.float32), np.ones(2)])
    assert opt.step_count == 0 and opt.state == [{}, {}]
    np.testing.assert_array_equal(opt.parameters()[1], 1.0)


def test_ctrl_c_during_a_step_is_delivered_after_it(monkeypatch):
    """A real SIGINT while a kernel runs: the step completes, then KeyboardInterrupt."""
    import signal
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not Python's default handler here")
    params = [np.ones(3, np.float32), np.ones(2)]
    ref = O.Adam([p.copy() for p in params], backend="numpy")
    ref.step([np.ones(3, np.float32), np.ones(2)])
    opt = O.Adam(params, backend="numpy")
    _interrupting(monkeypatch, "adam_step", 1, action="signal")
    with pytest.raises(KeyboardInterrupt):
        opt.step([np.ones(3, np.float32), np.ones(2)])
    _assert_same_optimizer(opt, ref)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_steps_from_several_threads_are_serialized(backend):
    """4 threads x 25 steps: step_count 100 and the parameters of 100 sequential steps (the
    same gradients every step, so the order does not matter)."""
    import threading
    params = _arrays(np.float32, shapes=((64,), (3, 5), (1000,)))
    grads = [np.full(p.shape, 0.01, p.dtype) for p in params]
    opt = O.Adam([p.copy() for p in params], backend=backend)
    ref = O.Adam([p.copy() for p in params], backend=backend)
    for _ in range(100):
        ref.step(grads)
    errors = []

    def work():
        try:
            for _ in range(25):
                opt.step(grads)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and opt.step_count == 100
    _assert_same_optimizer(opt, ref)


def test_deepcopy_and_pickle():
    import copy
    import pickle
    opt = O.NAdam([{"params": [np.ones(3)]}, {"params": [np.ones(2)], "lr": 0.1}], backend="numpy")
    opt.step([np.ones(3), np.ones(2)])
    for other in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert other.parameters()[0] is not opt.parameters()[0]
        other.step([np.ones(3), np.ones(2)])
        opt_copy = copy.deepcopy(opt)
        opt_copy.step([np.ones(3), np.ones(2)])
        _assert_same_optimizer(other, opt_copy)
        fresh = np.zeros(3)
        other.state[0]["exp_avg"] = fresh  # the copy's state dicts still tell their optimizer
        other.step([np.ones(3), np.ones(2)])
        assert other.state[0]["exp_avg"] is fresh and np.all(fresh > 0)


# ---------------------------------------------------------------------------------------
# a step is checked as a whole: across groups and dtype calls, before the first kernel call

def _snapshot(opt):
    return (opt.step_count, [p.copy() for p in opt.parameters()],
            [{k: np.array(v, copy=True) for k, v in st.items()} for st in opt.state])


def _assert_unchanged(opt, snap):
    step_count, params, states = snap
    assert opt.step_count == step_count
    for p, q in zip(opt.parameters(), params):
        assert np.array_equal(p, q)
    for st, st0 in zip(opt.state, states):
        assert st.keys() == st0.keys()
        for k in st:
            assert np.array_equal(st[k], st0[k]), k


def _no_c_check(monkeypatch):
    monkeypatch.setattr(O, "_arrays_ok", None, raising=False)  # the Python checks (no compiled part) must find the same


@pytest.mark.parametrize("c_check", [True, False], ids=["C-check", "python-check"])
def test_arrays_shared_across_groups_or_calls_are_refused(monkeypatch, backend, c_check):
    """Every array a step writes (parameters and state of all groups and dtype calls) must be
    disjoint from every other array of the step, gradients included; a refused step has
    changed nothing.  fastgd.multi checks this within one call only."""
    if not c_check:
        _no_c_check(monkeypatch)
    ones = [np.ones(3), np.ones(3)]

    def two_groups(cls=O.Adam, **h1):
        opt = cls([{"params": [np.ones(3)]}, {"params": [np.ones(3)], **h1}], lr=0.1, backend=backend)
        opt.step(ones)
        return opt

    cases = []
    opt = two_groups()  # group 0's state is group 1's parameter
    opt.state[0]["exp_avg"] = opt.parameters()[1]
    cases.append((opt, ones, r"parameter 1 and opt.state\[0\]\['exp_avg'\] overlap"))
    opt = two_groups()  # one exp_avg_sq for two groups
    opt.state[1]["exp_avg_sq"] = opt.state[0]["exp_avg_sq"]
    cases.append((opt, ones, r"opt.state\[0\]\['exp_avg_sq'\] and opt.state\[1\]\['exp_avg_sq'\] overlap"))
    opt = two_groups()  # a view into another group's state
    opt.state[1]["exp_avg"] = opt.state[0]["exp_avg_sq"][:]
    cases.append((opt, ones, "overlap in memory"))
    opt = two_groups()  # a gradient that is another group's state
    cases.append((opt, [np.ones(3), opt.state[0]["exp_avg"]], r"grads\[1\] and opt.state\[0\]\['exp_avg'\]|"
                                                               r"opt.state\[0\]\['exp_avg'\] and grads\[1\]"))
    opt = two_groups(amsgrad=True)  # groups keeping different state (the other layout of the check)
    opt.state[1]["max_exp_avg_sq"] = opt.state[0]["exp_avg"]
    cases.append((opt, ones, "overlap in memory"))
    opt = two_groups(amsgrad=True)
    cases.append((opt, [opt.state[1]["max_exp_avg_sq"], np.ones(3)], "overlap in memory"))
    opt = two_groups(O.NAdam)  # one mu_product for two groups
    opt.state[1]["mu_product"] = opt.state[0]["mu_product"]
    cases.append((opt, ones, r"mu_product.*overlap in memory"))
    nad = O.NAdam([{"params": [np.ones(3)]}, {"params": [np.ones(1)]}], backend=backend)
    nad.step([np.ones(3), np.ones(1)])  # a gradient that is another group's mu_product
    cases.append((nad, [np.ones(3), nad.state[0]["mu_product"]], r"mu_product.*overlap in memory"))
    # one group, two dtype calls: a float32 gradient viewing the float64 parameter's state
    mixed = O.Adam([np.ones(4, np.float32), np.ones(2)], backend=backend)
    mixed.step([np.ones(4, np.float32), np.ones(2)])
    cases.append((mixed, [mixed.state[1]["exp_avg"].view(np.float32), np.ones(2)], "overlap in memory"))
    mixed2 = O.Adam([np.ones(4, np.float32), np.ones(2)], backend=backend)
    mixed2.step([np.ones(4, np.float32), np.ones(2)])
    mixed2.state[0]["exp_avg"] = mixed2.parameters()[1].view(np.float32)
    cases.append((mixed2, [np.ones(4, np.float32), np.ones(2)], "overlap in memory"))
    for opt, grads, match in cases:
        snap = _snapshot(opt)
        with pytest.raises(ValueError, match=match):
            opt.step(grads)
        _assert_unchanged(opt, snap)
    # separate arrays again: the step runs
    opt = cases[0][0]
    opt.state[0]["exp_avg"] = np.zeros(3)
    opt.step(ones)
    assert opt.step_count == 2


def _nadam_two_groups(backend="numpy"):
    opt = O.NAdam([{"params": [np.ones(3)]}, {"params": [np.ones(2)], "lr": 0.1}], backend=backend)
    opt.step([np.ones(3), np.ones(2)])
    return opt


@pytest.mark.parametrize("c_check", [True, False], ids=["C-check", "python-check"])
def test_a_later_call_that_would_fail_leaves_every_group_unstepped(monkeypatch, backend, c_check):
    """Everything a kernel call would refuse is checked for all calls before the first one
    runs: a bad input in the last group raises its own TypeError/ValueError (not the
    RuntimeError of a half-done step) and the first group is not stepped."""
    if not c_check:
        _no_c_check(monkeypatch)
    grads = [np.ones(3), np.ones(2)]
    cases = []
    opt = _nadam_two_groups(backend)
    opt.state[1]["mu_product"] = np.ones(1, np.float32)
    cases.append((opt, grads, TypeError, r"opt.state\[1\]\['mu_product'\] must be a float64"))
    opt = _nadam_two_groups(backend)
    opt.state[1]["mu_product"][0] = 5.0
    cases.append((opt, grads, ValueError, r"opt.state\[1\]\['mu_product'\] is 5.0"))
    opt = _nadam_two_groups(backend)
    opt.state[1]["exp_avg"] = np.ones(4)
    cases.append((opt, grads, ValueError, r"param_groups\[1\].*exp_avgs\[0\] has shape \(4,\)"))
    opt = _nadam_two_groups(backend)
    ro = np.ones(2)
    ro.flags.writeable = False
    opt.state[1]["exp_avg_sq"] = ro
    cases.append((opt, grads, ValueError, "writeable"))
    opt = _nadam_two_groups(backend)
    cases.append((opt, [np.ones(3), None], TypeError, r"grads\[1\] is None"))
    opt = _nadam_two_groups(backend)
    opt.state[1]["exp_avg"] = [0.0, 0.0]
    cases.append((opt, grads, TypeError, "exp_avgs"))
    # a group at fastgd's step limit (2**53): its next step is refused before group 0 steps
    opt = O.Adam([{"params": [np.ones(3)]}, {"params": [np.ones(2)]}], backend=backend)
    opt.step(grads)
    sd = opt.state_dict()
    sd["step_count"] = sd["param_groups"][1]["step"] = 2 ** 53
    opt.load_state_dict(sd)
    assert [g["step"] for g in opt.state_dict()["param_groups"]] == [1, 2 ** 53]
    cases.append((opt, grads, ValueError, r"param_groups\[1\] would take step 9007199254740993.*2\*\*53"))
    for opt, g, exc, match in cases:
        snap = _snapshot(opt)
        with pytest.raises(exc, match=match):
            opt.step(g)
        _assert_unchanged(opt, snap)


def test_mu_product_outside_0_1_is_refused_at_load_and_at_step(backend):
    mu1 = R.nadam_mu(1, 0.9, 4e-3)
    for bad in (1.0 / mu1, 1.5, np.nan, np.inf):  # 1 / mu_1: 1 - P * mu_1 == 0, the next step divides by 0
        opt = O.NAdam([np.ones(3)], backend=backend)
        opt.step([np.ones(3)])
        sd = opt.state_dict()
        sd["state"][0]["mu_product"] = np.array([bad])
        snap = _snapshot(opt)
        with pytest.raises(ValueError, match=r"state_dict\['state'\]\[0\]\['mu_product'\] is .*in \[0, 1\]"):
            opt.load_state_dict(sd)
        _assert_unchanged(opt, snap)
        opt.state[0]["mu_product"][0] = bad  # written in place: refused by the step
        with pytest.raises(ValueError, match=r"opt.state\[0\]\['mu_product'\] is .*in \[0, 1\]"):
            opt.step([np.ones(3)])
        assert opt.step_count == 1
    # 0 is the value of a valid run once the product underflows (or with beta1 = 0): accepted
    opt = O.NAdam([np.ones(3)], betas=(0.0, 0.999), backend=backend)
    opt.step([np.ones(3)])
    assert opt.state[0]["mu_product"][0] == 0.0
    opt.load_state_dict(opt.state_dict())
    opt.step([np.ones(3)])
    assert np.all(np.isfinite(opt.parameters()[0]))


def test_step_counts_beyond_2_53_are_refused_at_load():
    opt = O.Adam([{"params": [np.ones(3)]}, {"params": [np.ones(2)]}], backend="numpy")
    opt.step([np.ones(3), np.ones(2)])
    for edit, match in [(lambda sd: sd.update(step_count=2 ** 62), r"step_count'\] is 4611686018427387904.*2\*\*53"),
                        (lambda sd: sd.update(step_count=2 ** 53 + 1), r"2\*\*53"),
                        (lambda sd: sd["param_groups"][1].update(step=2 ** 62), r"\[1\]\['step'\].*2\*\*53")]:
        sd = opt.state_dict()
        edit(sd)
        snap = _snapshot(opt)
        with pytest.raises(ValueError, match=match):
            opt.load_state_dict(sd)
        _assert_unchanged(opt, snap)
    sd = opt.state_dict()
    sd["step_count"] = sd["param_groups"][0]["step"] = 2 ** 53
    sd["param_groups"][1]["step"] = 5
    opt.load_state_dict(sd)  # the limit itself loads; the next step of group 0 would pass it
    with pytest.raises(ValueError, match=r"param_groups\[0\] would take step 9007199254740993"):
        opt.step([np.ones(3), np.ones(2)])
    assert opt.step_count == 2 ** 53


@pytest.mark.parametrize("delete", ["del", "pop", "popitem", "clear"])
def test_deleted_state_is_refused_at_the_next_step(delete):
    opt = O.Adam([np.ones(3), np.ones(2)], backend="numpy")
    for _ in range(2):
        opt.step([np.ones(3), np.ones(2)])
    st = opt.state[1]
    if delete == "del":
        del st["exp_avg"]
    elif delete == "pop":
        st.pop("exp_avg")
    elif delete == "popitem":
        while "exp_avg" in st:
            st.popitem()
    else:
        st.clear()
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match=r"state of parameter 1 has no 'exp_avg' after 2 steps"):
        opt.step([np.ones(3), np.ones(2)])
    _assert_unchanged(opt, snap)
    with pytest.raises(ValueError, match=r"\[1\] has no 'exp_avg' array"):  # a state_dict leaves it out too
        O.Adam([np.ones(3), np.ones(2)], backend="numpy").load_state_dict(opt.state_dict())
    for name in ("exp_avg", "exp_avg_sq"):  # set again: the step runs
        st.setdefault(name, np.zeros(2))
    opt.step([np.ones(3), np.ones(2)])
    assert opt.step_count == 3


def test_deleting_state_before_a_step_or_sgd_momentum_buffer_is_fine():
    opt = O.Adam([np.ones(3)], backend="numpy")
    opt.state[0]["exp_avg"] = np.zeros(3)
    del opt.state[0]["exp_avg"]  # no step taken yet: the step creates it
    opt.step([np.ones(3)])
    nad = O.NAdam([np.ones(3), np.ones(2)], backend="numpy")
    nad.step([np.ones(3), np.ones(2)])
    del nad.state[0]["mu_product"]  # the group's shared product
    with pytest.raises(ValueError, match=r"state of parameter 0 has no 'mu_product' after 1 step"):
        nad.step([np.ones(3), np.ones(2)])
    # a state a changed hyperparameter needs (never deleted) still starts at zeros
    opt.param_groups[0]["amsgrad"] = True
    opt.step([np.ones(3)])
    assert "max_exp_avg_sq" in opt.state[0]
    # SGD's momentum buffer: as torch, a missing buffer starts from the next gradient
    sgd = O.SGD([np.zeros(2)], lr=0.1, momentum=0.9, backend="numpy")
    sgd.step([np.ones(2)])
    del sgd.state[0]["momentum_buffer"]
    sgd.step([np.array([3.0, 5.0])])
    np.testing.assert_array_equal(sgd.state[0]["momentum_buffer"], [3.0, 5.0])


def test_param_groups_cannot_be_replaced():
    opt = O.Adam([{"params": [np.ones(3)]}, {"params": [np.ones(2)]}], backend="numpy")
    for change in (lambda pg: pg.__setitem__(0, [1]), lambda pg: pg.__delitem__(0), lambda pg: pg.append({}),
                   lambda pg: pg.pop(), lambda pg: pg.clear(), lambda pg: pg.insert(0, {}), lambda pg: pg.reverse()):
        with pytest.raises(TypeError, match="param_groups cannot be replaced.*add_param_group"):
            change(opt.param_groups)
    assert len(opt.param_groups) == 2
    opt.param_groups[1]["lr"] = 0.5  # the dicts themselves are changed in place
    opt.step([np.ones(3), np.ones(2)])
    list.__setitem__(opt.param_groups, 0, [1])  # going around it: named at the step
    with pytest.raises(TypeError, match=r"param_groups\[0\] is a list, not its group's dict"):
        opt.step([np.ones(3), np.ones(2)])
    opt.param_groups = opt.param_groups[:1]
    with pytest.raises(ValueError, match="param_groups cannot be replaced"):
        opt.step([np.ones(3), np.ones(2)])


def test_schedules_never_overflow_and_check_last_epoch():
    opt = O.SGD([np.ones(2)], lr=0.1, backend="numpy")
    sched = O.ExponentialLR(opt, gamma=1e300)
    lrs = [sched.step() for _ in range(3)]
    assert lrs[0] == pytest.approx(1e299) and lrs[1:] == [math.inf, math.inf] and opt.lr == math.inf
    opt.step([np.ones(2)])  # inf passes the lr check
    zero = O.SGD([np.ones(2)], lr=0.0, backend="numpy")
    assert [O.ExponentialLR(zero, gamma=1e300, last_epoch=5).get_last_lr()] == [[0.0]]  # not 0 * inf = nan
    for make in (lambda o: O.StepLR(o, 1, gamma=1e300, last_epoch=2 ** 53),
                 lambda o: O.ExponentialLR(o, gamma=1e300, last_epoch=2 ** 53)):
        o = O.SGD([np.ones(2)], lr=0.1, backend="numpy")
        s = make(o)
        assert o.lr == math.inf and s.step() == math.inf
    o = O.SGD([np.ones(2)], lr=0.1, backend="numpy")
    assert O.StepLR(o, 3, gamma=0.5, last_epoch=2 ** 53).step() == 0.0
    o = O.SGD([np.ones(2)], lr=0.1, backend="numpy")
    cos = O.CosineAnnealingLR(o, T_max=10, eta_min=0.01, last_epoch=2 ** 53)
    for _ in range(3):
        lr = cos.step()  # beyond 2**53: reduced by the period first
        assert 0.01 <= lr <= 0.1
    o = O.SGD([np.ones(2)], lr=math.inf, backend="numpy")
    assert O.CosineAnnealingLR(o, T_max=10, eta_min=0.0).step() == math.inf  # no inf - inf
    for bad in (10 ** 400, 2 ** 53 + 1, -2, "3", 1.0, True):
        for make in (lambda o: O.StepLR(o, 2, last_epoch=bad), lambda o: O.CosineAnnealingLR(o, 2, last_epoch=bad),
                     lambda o: O.ExponentialLR(o, 0.5, last_epoch=bad)):
            o = O.SGD([np.ones(2)], lr=0.1, backend="numpy")
            with pytest.raises(ValueError, match=r"last_epoch must be an integer in \[-1, 2\*\*53\]"):
                make(o)
            assert o.lr == 0.1
        s = O.StepLR(O.SGD([np.ones(2)], lr=0.1, backend="numpy"), 2)
        with pytest.raises(ValueError, match="last_epoch must be an integer"):
            s.load_state_dict({"last_epoch": bad, "base_lrs": [0.1]})
        assert s.last_epoch == 0


@pytest.mark.parametrize("bad,exc,msg", [([1, 2], TypeError, "state_dict must be a dict"),
                                         ({}, ValueError, "no 'last_epoch'"),
                                         ({"last_epoch": 3}, ValueError, "no 'base_lrs'"),
                                         ({"last_epoch": 3, "base_lrs": [0.1, 1.0, 2.0]}, ValueError, "3 entries"),
                                         ({"last_epoch": 3, "base_lrs": [0.1]}, ValueError, "1 entries")])
def test_scheduler_load_state_dict_refuses_damaged_dicts(bad, exc, msg):
    opt = O.SGD([{"params": [np.zeros(2)]}, {"params": [np.zeros(3)], "lr": 0.5}], lr=0.1)
    sched = O.StepLR(opt, step_size=2)
    before = sched.state_dict()
    with pytest.raises(exc, match=msg):
        sched.load_state_dict(bad)
    assert sched.state_dict() == before
