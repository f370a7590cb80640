"""fastgd.optim: optimizer objects against the NumPy reference rules (THE SPEC) and
against the textbook formulas; state, resume, validation, learning-rate schedules."""
import math

import numpy as np
import pytest

import fastgd
from fastgd import optim as O
from fastgd.backends import backend_module
from fastgd.reference import rules as R
from fastgd.steps import nadam_mu_product

KERNEL = {"SGD": "sgd", "Adam": "adam", "AdamW": "adam", "Adamax": "adamax", "NAdam": "nadam", "RAdam": "radam",
          "Adagrad": "adagrad", "Adadelta": "adadelta", "RMSprop": "rmsprop", "Lion": "lion"}


def backends_with(kernel):
    out = []
    for b in fastgd.available_backends():
        has = hasattr(backend_module(b), kernel)
        out.append(pytest.param(b, id=b, marks=pytest.mark.skipif(
            not has, reason="the %s kernel is not (yet) in the %s backend" % (kernel, b))))
    return out


def all_cases():
    """(class name, hyperparameters, backend) for every optimizer on every backend."""
    configs = [
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
    out = []
    for name, hyper in configs:
        for b in backends_with(KERNEL[name]):
            out.append(pytest.param(name, hyper, b.values[0], marks=b.marks,
                                    id="%s-%s-%s" % (name, "-".join("%s=%s" % kv for kv in hyper.items()), b.id)))
    return out


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
    if backend == "numpy":
        np.testing.assert_array_equal(a, b)
    else:  # compiled kernels may contract to FMA: equal to round-off
        np.testing.assert_allclose(a, b, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6 if dtype == np.float32
                                   else 1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name, hyper, backend", all_cases())
def test_matches_the_reference_rules(name, hyper, backend, dtype):
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
    bad["hyper"]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        opt.load_state_dict(bad)
    bad = opt.state_dict()
    bad["state"].append({})
    with pytest.raises(ValueError, match="one dict per parameter"):
        opt.load_state_dict(bad)
    after = opt.state_dict()  # nothing changed by the failed loads
    assert after["step_count"] == before["step_count"] == 1 and after["hyper"] == before["hyper"]
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
    with pytest.raises(KeyError):
        g["betas"] = (0.9, 0.9)
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
