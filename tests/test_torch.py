"""fastgd.torch: the torch.optim drop-ins against torch.optim itself (values, state dicts,
schedulers, closures, parameter groups, GradScaler) and against fastgd's own multi-tensor
numpy backend (half precision, Lion: bit for bit).

Tolerances (torch 2.13, x86-64, measured over these cases): float64 params agree with torch to
<= 5e-15 relative after 6 steps (the two order a few float64 operations differently: torch's
lerp for m, ...), asserted at rtol 1e-13; float32 to <= 2e-6 relative (a few ulp of rounding
differences growing over the steps), asserted at rtol 2e-5 / atol 1e-6.  NAdam's float64 case
runs with torch's default dtype float64 (torch keeps mu_product in the default dtype; with
float32 a float64 model's first step differs by the float32 rounding of mu_1, ~3e-8).

Without torch every test here is skipped, unless FASTGD_REQUIRE_TORCH=1 (CI), where it fails
(tests/conftest.py: torch_or_skip).
"""
import copy
import io
import pickle
import subprocess
import sys

import numpy as np
import pytest

import conftest

torch = conftest.torch_or_skip()
import fastgd.multi as M  # noqa: E402
import fastgd.torch as FT  # noqa: E402

ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes")

# (torch class, keyword arguments): every option torch has, every rule but Lion
CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
    ("Adam", dict(lr=0.01, amsgrad=True, maximize=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("Adamax", dict(lr=0.02, betas=(0.8, 0.99), weight_decay=0.01, maximize=True)),
    ("NAdam", dict(lr=0.01, weight_decay=0.01, momentum_decay=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("RAdam", dict(lr=0.01, weight_decay=0.01)),
    ("RAdam", dict(lr=0.01, betas=(0.9, 0.5), weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.01, eps=1e-8, initial_accumulator_value=0.1)),
    ("Adagrad", dict(lr=0.1, maximize=True)),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.01, maximize=True)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, maximize=True)),
    ("RMSprop", dict(lr=0.01, centered=True)),
]
IDS = ["%s-%d" % (c[0], i) for i, c in enumerate(CASES)]
SHAPES = [(5, 7), (3,), (2, 3, 4)]


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def tdtype(request):
    old = torch.get_default_dtype()
    if request.param == torch.float64:
        torch.set_default_dtype(torch.float64)  # torch's scalar state (step, mu_product) in float64
    yield request.param
    torch.set_default_dtype(old)


def _close(a, b, dtype, msg=""):
    a, b = a.detach(), b.detach()
    if dtype == torch.float64:
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15, msg=msg)
    else:
        torch.testing.assert_close(a, b, rtol=2e-5, atol=1e-6, msg=msg)


def _data(dtype, steps, seed=0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    p0 = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    grads = [[torch.randn(s, generator=g, dtype=dtype) for s in shapes] for _ in range(steps)]
    return p0, grads


def _make(mod, name, params, kw):
    kw = dict(kw)
    if mod is torch.optim:
        kw.setdefault("foreach", False)  # the single-tensor path (fused only exists for some)
    return getattr(mod, name)(params, **kw)


def _groups(ps, kw):
    """Two groups: the second with its own lr (and weight decay where the rule has it)."""
    g2 = {"params": ps[1:], "lr": kw.get("lr", 0.01) * 0.5}
    return [{"params": ps[:1]}, g2]


def _run(mod, name, kw, p0, grads, groups=True):
    ps = [torch.nn.Parameter(p.clone()) for p in p0]
    opt = _make(mod, name, _groups(ps, kw) if groups else ps, kw)
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = g.clone()  # a new gradient tensor every step, as after zero_grad(set_to_none=True)
        opt.step()
    return ps, opt


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_matches_torch(name, kw, tdtype):
    """6 steps, two parameter groups, three shapes: params after every step and every state
    tensor at the end agree with torch.optim; state keys and param_group keys are torch's."""
    p0, grads = _data(tdtype, 6)
    tps = [torch.nn.Parameter(p.clone()) for p in p0]
    fps = [torch.nn.Parameter(p.clone()) for p in p0]
    topt = _make(torch.optim, name, _groups(tps, kw), kw)
    fopt = _make(FT, name, _groups(fps, kw), kw)
    for t, gs in enumerate(grads):
        for tp, fp, g in zip(tps, fps, gs):
            tp.grad, fp.grad = g.clone(), g.clone()
        topt.step()
        fopt.step()
        for k, (tp, fp) in enumerate(zip(tps, fps)):
            _close(fp, tp, tdtype, "param %d after step %d" % (k, t + 1))
    tsd, fsd = topt.state_dict(), fopt.state_dict()
    assert list(tsd["state"]) == list(fsd["state"])
    for k in tsd["state"]:
        ts, fs = tsd["state"][k], fsd["state"][k]
        assert list(ts) == list(fs), "state keys of param %d" % k
        for key in ts:
            if key == "step":
                assert fs[key].dtype == ts[key].dtype and fs[key].shape == () and float(fs[key]) == float(ts[key])
            else:
                assert fs[key].dtype == ts[key].dtype and fs[key].shape == ts[key].shape
                _close(fs[key], ts[key], tdtype, "%s of param %d" % (key, k))
    for tg, fg in zip(tsd["param_groups"], fsd["param_groups"]):
        tg, fg = dict(tg), dict(fg)
        tg.pop("foreach"), fg.pop("foreach")  # (torch's run was given foreach=False)
        assert list(tg) == list(fg) and tg == fg


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_state_dict_round_trips_continue_bit_identically(name, kw, tdtype):
    """Switching in the middle of training: (a) fastgd 3 steps -> torch.optim (load, save)
    -> fastgd, 3 more steps == fastgd 6 steps bit for bit; (b) torch.optim 3 steps ->
    fastgd (load, save) -> torch.optim, 3 more == torch.optim 6 steps bit for bit; (c) torch
    3 steps -> fastgd 3 more steps: close to torch's 6 (tolerances of test_matches_torch)."""
    p0, grads = _data(tdtype, 6, seed=1)
    for first, middle in ((FT, torch.optim), (torch.optim, FT)):
        whole, _ = _run(first, name, kw, p0, grads)
        ps, opt = _run(first, name, kw, p0, grads[:3])
        mid = _make(middle, name, _groups(ps, kw), kw)
        mid.load_state_dict(copy.deepcopy(opt.state_dict()))
        buf = io.BytesIO()
        torch.save(mid.state_dict(), buf)  # through torch.save/load (weights_only) too
        buf.seek(0)
        again = _make(first, name, _groups(ps, kw), kw)
        again.load_state_dict(torch.load(buf, weights_only=True))
        for gs in grads[3:]:
            for p, g in zip(ps, gs):
                p.grad = g.clone()
            again.step()
        for k, (a, b) in enumerate(zip(ps, whole)):
            assert torch.equal(a, b), "%s -> %s -> %s: param %d" % (first.__name__, middle.__name__,
                                                                  first.__name__, k)
    # (c)
    whole, _ = _run(torch.optim, name, kw, p0, grads)
    ps, opt = _run(torch.optim, name, kw, p0, grads[:3])
    f = _make(FT, name, _groups(ps, kw), kw)
    f.load_state_dict(opt.state_dict())
    for gs in grads[3:]:
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        f.step()
    for a, b in zip(ps, whole):
        _close(a, b, tdtype)


def _lion_reference(p0, grads, lr, b1, b2, wd, maximize=False):
    ps = [p.numpy().copy() for p in p0]
    ms = [np.zeros_like(p) for p in ps]
    for gs in grads:
        M.lion_step(ps, [g.numpy() for g in gs], ms, lr=lr, beta1=b1, beta2=b2, weight_decay=wd,
                    maximize=maximize, backend="numpy")
    return ps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_lion_equals_fastgd_reference(dtype):
    """Lion (torch has none): defaults as the paper/optax, and the numpy reference's values."""
    import inspect
    sig = inspect.signature(FT.Lion)
    assert sig.parameters["lr"].default == 1e-4 and sig.parameters["betas"].default == (0.9, 0.99)
    assert sig.parameters["weight_decay"].default == 0.0
    p0, grads = _data(dtype, 5)
    ps = [torch.nn.Parameter(p.clone()) for p in p0]
    opt = FT.Lion(ps, lr=0.01, betas=(0.8, 0.95), weight_decay=0.1, maximize=True)
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step()
    want = _lion_reference(p0, grads, 0.01, 0.8, 0.95, 0.1, True)
    for p, w in zip(ps, want):
        np.testing.assert_array_equal(p.detach().numpy(), w)
    assert list(opt.state_dict()["state"][0]) == ["exp_avg"]


def test_scheduler_closure_hooks():
    """LR schedulers drive param_group['lr'] (fastgd reads it at every step); step(closure)
    returns the closure's loss, computed with grad enabled; step hooks run."""
    p0, _ = _data(torch.float64, 0)
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    runs = []
    for mod in (torch.optim, FT):
        w = torch.nn.Parameter(p0[0].clone())
        opt = _make(mod, "Adam", [w], dict(lr=0.1))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=10)
        seen = []
        opt.register_step_post_hook(lambda o, a, k: seen.append(o.param_groups[0]["lr"]))
        losses = []

        def closure():
            opt.zero_grad()
            loss = (x @ w).square().mean()
            loss.backward()
            return loss

        for _ in range(8):
            losses.append(opt.step(closure).item())
            sched.step()
        runs.append((w, losses, seen))
    (tw, tl, ts), (fw, fl, fs) = runs
    assert ts == fs and len(fs) == 8 and len(set(fs)) == 8
    np.testing.assert_allclose(fl, tl, rtol=1e-13)
    _close(fw, tw, torch.float64)


def test_grad_none_skipped_and_started_later_like_torch():
    """A parameter whose grad is None is skipped (no state, no change); when it gets a gradient
    later its own step count starts at 1 (torch's per-parameter step), while the others go on."""
    p0, grads = _data(torch.float64, 6)
    res = []
    for mod in (torch.optim, FT):
        ps = [torch.nn.Parameter(p.clone()) for p in p0]
        opt = _make(mod, "Adam", ps, dict(lr=0.05))
        for t, gs in enumerate(grads):
            for k, (p, g) in enumerate(zip(ps, gs)):
                p.grad = None if (k == 1 and t < 3) or (k == 2 and t == 4) else g.clone()
            opt.step()
            if t == 0:
                assert torch.equal(ps[1].detach(), p0[1]) and ps[1] not in opt.state
        res.append((ps, opt.state_dict()))
    for a, b in zip(res[0][0], res[1][0]):
        _close(b, a, torch.float64)
    for _, sd in res:
        assert {k: float(s["step"]) for k, s in sd["state"].items()} == {0: 6.0, 1: 3.0, 2: 5.0}


def test_add_param_group_mid_training_like_torch():
    p0, grads = _data(torch.float32, 6)
    res = []
    for mod in (torch.optim, FT):
        ps = [torch.nn.Parameter(p.clone()) for p in p0]
        opt = _make(mod, "AdamW", ps[:2], dict(lr=0.01))
        for t, gs in enumerate(grads):
            if t == 2:
                opt.add_param_group({"params": [ps[2]], "lr": 0.02, "weight_decay": 0.0})
            for p, g in zip(ps, gs):
                p.grad = g.clone()
            opt.step()
        res.append(ps)
    for a, b in zip(*res):
        _close(b, a, torch.float32)


def test_shared_step_tensors_are_distinct_in_state_dict():
    ps = [torch.nn.Parameter(torch.ones(3)) for _ in range(3)]
    opt = FT.Adam(ps)
    for p in ps:
        p.grad = torch.ones(3)
    opt.step()
    sd = opt.state_dict()
    steps = [s["step"] for s in sd["state"].values()]
    assert len({id(s) for s in steps}) == 3 and all(float(s) == 1.0 for s in steps)
    assert all(type(s) is dict for s in sd["state"].values())
    steps[0] += 5  # the saved copy, not the optimizer's
    assert float(opt.state[ps[0]]["step"]) == 1.0
    # torch.optim loading it steps each parameter once per step
    t = torch.optim.Adam(ps)
    t.load_state_dict(sd)
    t.step()
    assert [float(t.state[p]["step"]) for p in ps] == [7.0, 2.0, 2.0]


def test_state_assigned_by_hand_is_picked_up():
    """Assigning a state tensor (as ZeroRedundancyOptimizer.load_state_dict does) is seen at
    the next step: the cached views are rebuilt."""
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = FT.Adam([p], lr=0.1)
    p.grad = torch.ones(4, dtype=torch.float64)
    opt.step()
    ref = torch.optim.Adam([torch.nn.Parameter(p.detach().clone())], lr=0.1)
    ref.load_state_dict(copy.deepcopy(opt.state_dict()))
    new = torch.full((4,), 0.5, dtype=torch.float64)
    opt.state[p]["exp_avg"] = new
    rp = ref.param_groups[0]["params"][0]
    ref.state[rp]["exp_avg"] = new.clone()
    rp.grad = p.grad.clone()
    opt.step()
    ref.step()
    _close(p, rp, torch.float64)
    assert opt.state[p]["exp_avg"] is new


def test_param_data_replaced_is_picked_up():
    p = torch.nn.Parameter(torch.zeros(4))
    opt = FT.SGD([p], lr=1.0)
    p.grad = torch.ones(4)
    opt.step()
    p.data = torch.full((4,), 10.0)  # a new storage for the same Parameter
    opt.step()
    assert p.detach().tolist() == [9.0] * 4


def test_channels_last_stepped_in_place():
    """A channels_last conv weight (dense, not C order) with its gradient and state in the same
    layout is stepped through a flat view of its memory, as torch steps it."""
    p0, grads = _data(torch.float32, 4, shapes=[(4, 3, 2, 5)])
    res = []
    for mod in (torch.optim, FT):
        w = torch.nn.Parameter(p0[0].clone().to(memory_format=torch.channels_last))
        opt = _make(mod, "Adam", [w], dict(lr=0.01, weight_decay=0.1))
        for gs in grads:
            w.grad = gs[0].clone().to(memory_format=torch.channels_last)
            opt.step()
        assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
        assert opt.state[w]["exp_avg"].stride() == w.stride()
        res.append(w)
    _close(res[1], res[0], torch.float32)


def _snapshot(opt, ps):
    return ([p.detach().clone() for p in ps],
            {id(p): {k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[p].items()}
             for p in ps if p in opt.state})


def _unchanged(opt, ps, snap):
    now = _snapshot(opt, ps)
    assert all(torch.equal(a, b) for a, b in zip(now[0], snap[0]))
    assert now[1].keys() == snap[1].keys()
    for k in snap[1]:
        assert now[1][k].keys() == snap[1][k].keys()
        assert all(torch.equal(now[1][k][n], snap[1][k][n]) for n in snap[1][k])


def _f64_grad(p):
    if hasattr(p, "grad_dtype"):
        p.grad_dtype = None  # torch >= 2.10 refuses another dtype unless told to allow it
    return torch.ones(p.shape, dtype=torch.float64)


BAD_GRADS = [
    ("strided slice", lambda p: torch.ones(p.shape[0], p.shape[1] * 2)[:, ::2], ValueError, "strides"),
    ("transposed", lambda p: torch.ones(p.shape[1], p.shape[0]).t(), ValueError, "strides"),
    ("float64", _f64_grad, TypeError, "dtype"),
]


@pytest.mark.parametrize("what,make,exc,match", BAD_GRADS, ids=[b[0] for b in BAD_GRADS])
def test_bad_grad_refused_nothing_changed(what, make, exc, match):
    """A bad gradient anywhere (here: the last group) raises a named error before anything
    is written: no parameter, state or step changes, in any group."""
    a = torch.nn.Parameter(torch.randn(3, 4))
    b = torch.nn.Parameter(torch.randn(3, 4))
    opt = FT.Adam([{"params": [a]}, {"params": [b]}], lr=0.1)
    a.grad, b.grad = torch.ones(3, 4), torch.ones(3, 4)
    opt.step()
    snap = _snapshot(opt, [a, b])
    try:
        b.grad = make(b)
    except RuntimeError:  # pragma: no cover - torch refuses the assignment itself
        pytest.skip("torch refuses this gradient itself")
    with pytest.raises(exc, match=match) as info:
        opt.step()
    assert "param_groups[1]['params'][0]" in str(info.value)
    _unchanged(opt, [a, b], snap)


def test_sparse_grad_refused():
    emb = torch.nn.Embedding(5, 3, sparse=True)
    dense = torch.nn.Parameter(torch.ones(2))
    opt = FT.Adam([dense, emb.weight], lr=0.1)
    dense.grad = torch.ones(2)
    emb(torch.tensor([1, 2])).sum().backward()
    assert emb.weight.grad.is_sparse
    snap = _snapshot(opt, [dense, emb.weight])
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[1\] has a sparse gradient"):
        opt.step()
    _unchanged(opt, [dense, emb.weight], snap)
    assert not opt.state


def test_bad_params_refused():
    with pytest.raises(TypeError, match="complex"):
        FT.Adam([torch.nn.Parameter(torch.ones(3, dtype=torch.complex64))])
    with pytest.raises(TypeError, match="dtype"):
        FT.SGD([torch.ones(3, dtype=torch.float64).to(torch.int32)], lr=0.1)
    with pytest.raises(ValueError, match="not dense"):
        FT.Adam([torch.nn.Parameter(torch.ones(4, 6)[:, ::2])])
    with pytest.raises(ValueError, match="meta"):
        FT.Adam([torch.nn.Parameter(torch.ones(3, device="meta"))])
    opt = FT.Adam([torch.nn.Parameter(torch.ones(3))])
    with pytest.raises(ValueError, match="not dense"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(4, 6)[:, ::2])]})
    assert len(opt.param_groups) == 1  # nothing added
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "lr": -1.0})
    assert len(opt.param_groups) == 1


def test_bad_hyperparameters_and_flags():
    p = [torch.nn.Parameter(torch.ones(3))]
    with pytest.raises(ValueError, match="lr"):
        FT.Adam(p, lr=-0.1)
    with pytest.raises(ValueError, match="beta1"):
        FT.Adam(p, betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="nesterov"):
        FT.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="capturable"):
        FT.Adam(p, capturable=True)
    with pytest.raises(ValueError, match="differentiable"):
        FT.RMSprop(p, differentiable=True)
    with pytest.raises(ValueError, match="fused"):
        FT.Adam(p, fused=True, foreach=True)
    with pytest.raises(ValueError, match="state_dtype"):
        FT.Adam(p, state_dtype="float16")
    # accepted, no effect: the same values as the default
    outs = []
    for flags in ({}, {"fused": True}, {"foreach": True}, {"fused": False, "foreach": False}):
        q = torch.nn.Parameter(torch.ones(3))
        opt = FT.Adam([q], lr=0.1, **flags)
        q.grad = torch.full((3,), 0.3)
        opt.step()
        outs.append(q.detach().clone())
        assert all(opt.param_groups[0][k] == v for k, v in flags.items())
    assert all(torch.equal(o, outs[0]) for o in outs)
    # a group changed to a bad value between steps: refused at the step, nothing changed
    q = torch.nn.Parameter(torch.ones(3))
    opt = FT.Adam([q], lr=0.1)
    q.grad = torch.ones(3)
    opt.step()
    snap = _snapshot(opt, [q])
    opt.param_groups[0]["eps"] = -1.0
    with pytest.raises(ValueError, match="eps"):
        opt.step()
    _unchanged(opt, [q], snap)


def test_tensor_lr():
    res = []
    for lr in (0.1, torch.tensor(0.1)):
        q = torch.nn.Parameter(torch.ones(3))
        opt = FT.Adam([q], lr=lr)
        q.grad = torch.full((3,), 0.3)
        opt.step()
        res.append(q.detach().clone())
    assert torch.equal(*res)


@pytest.mark.parametrize("hdtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("name,kw", [("Adam", dict(lr=0.01, weight_decay=0.01)), ("AdamW", dict(lr=0.01)),
                                     ("SGD", dict(lr=0.1, momentum=0.9)), ("NAdam", dict(lr=0.01)),
                                     ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
                                     ("Lion", dict(lr=0.01, weight_decay=0.1))],
                         ids=["Adam", "AdamW", "SGD", "NAdam", "RMSprop", "Lion"])
def test_half_precision_equals_fastgd_reference(hdtype, name, kw):
    """float16/bfloat16 params, float32 state (the default): bit for bit fastgd.multi's numpy
    backend (the reference: float32 arithmetic, each stored value rounded once) on the same
    arrays; state_dtype='param' keeps the state in the param's dtype."""
    p0, grads = _data(torch.float32, 4)
    p0 = [p.to(hdtype) for p in p0]
    grads = [[g.to(hdtype) for g in gs] for gs in grads]
    ps = [torch.nn.Parameter(p.clone()) for p in p0]
    opt = getattr(FT, name)(ps, **kw)
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step()
    # the same steps through fastgd.multi (numpy backend) on numpy copies
    npd = ml_dtypes.bfloat16 if hdtype == torch.bfloat16 else np.float16

    def arr(t):
        t = t.detach()
        return t.view(torch.int16).numpy().view(npd).copy() if hdtype == torch.bfloat16 else t.numpy().copy()
    rps = [arr(p) for p in p0]
    rule, hyper, _ = opt._kernel_kwargs(opt.param_groups[0])
    states = {s.multi: [np.zeros(p.shape, np.float32) for p in rps] for s in rule.state
              if not s.scalar and s.needed(dict(hyper, step=1, first_step=True))}
    mu = np.ones(1)
    for t, gs in enumerate(grads, start=1):
        extra = dict(states)
        if rule.step == "required":
            extra["step"] = t
        elif rule.step == "optional":
            extra["step"] = t
        if rule.name == "nadam":
            mu32 = torch.tensor(float(mu[0]), dtype=torch.float32) * FT.nadam_mu(t, 0.9, 4e-3)
            mu = np.array([min(float(mu32) / FT.nadam_mu(t, 0.9, 4e-3), 1.0)])
            extra["mu_product"] = mu
            mu = np.array([float(mu32)])
        getattr(M, rule.name + "_step")(rps, [arr(g) for g in gs], backend="numpy", **hyper, **extra)
    for p, r in zip(ps, rps):
        np.testing.assert_array_equal(arr(p).view(np.int16), r.view(np.int16))
    for p in ps:
        for k, v in opt.state[p].items():
            if k not in ("step", "mu_product"):
                assert v.dtype == torch.float32
    q = torch.nn.Parameter(p0[0].clone())
    o2 = getattr(FT, name)([q], state_dtype="param", **kw)
    q.grad = grads[0][0].clone()
    o2.step()
    assert all(v.dtype == hdtype for k, v in o2.state[q].items() if k not in ("step", "mu_product"))


def test_half_state_dict_keeps_float32_state():
    """Loading into a bfloat16 model: torch.optim rounds the state to bfloat16; fastgd.torch
    keeps (converts to) float32, from the saved tensors."""
    p = torch.nn.Parameter(torch.randn(5).to(torch.bfloat16))
    opt = FT.Adam([p], lr=0.01)
    p.grad = torch.randn(5).to(torch.bfloat16)
    opt.step()
    sd = opt.state_dict()
    assert sd["state"][0]["exp_avg_sq"].dtype == torch.float32
    o2 = FT.Adam([p], lr=0.01)
    o2.load_state_dict(sd)
    assert torch.equal(o2.state[p]["exp_avg_sq"], sd["state"][0]["exp_avg_sq"])
    t = torch.optim.Adam([p], lr=0.01)
    t.load_state_dict(sd)
    assert t.state[p]["exp_avg_sq"].dtype == torch.bfloat16
    o3 = FT.Adam([p], lr=0.01)
    o3.load_state_dict(t.state_dict())
    assert o3.state[p]["exp_avg_sq"].dtype == torch.float32


def _scaler_run(mod, inf_at, fused):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    kw = dict(lr=0.01)
    if fused:
        kw["fused"] = True
    opt = mod.Adam(model.parameters(), **kw)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2)
    g = torch.Generator().manual_seed(5)
    log = []
    for t in range(6):
        x = torch.randn(16, 6, generator=g)
        opt.zero_grad()
        loss = model(x).square().mean()
        scaler.scale(loss).backward()
        if t == inf_at:
            next(model.parameters()).grad[0, 0] = float("inf")
        before = [p.detach().clone() for p in model.parameters()]
        scaler.step(opt)
        scaler.update()
        skipped = all(torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
        log.append((scaler.get_scale(), skipped, float(opt.state[next(model.parameters())]["step"])))
    return model, log


def test_grad_scaler_like_torch_fused():
    """torch.amp.GradScaler drives fastgd.torch.Adam as it drives torch's fused Adam
    (_step_supports_amp_scaling): the scale is divided out inside the step, the step with an
    inf gradient is skipped (params, state and step unchanged), the scale is halved then grows."""
    assert FT.Adam._step_supports_amp_scaling
    fm, flog = _scaler_run(FT, 3, False)
    tm, tlog = _scaler_run(torch.optim, 3, True)
    assert flog == tlog
    assert flog[3][1] and not flog[2][1] and flog[3][0] == flog[2][0] / 2 and flog[3][2] == flog[2][2]
    for a, b in zip(fm.parameters(), tm.parameters()):
        _close(a, b, torch.float32)


def test_grad_scaler_after_unscale():
    """scaler.unscale_(opt) first (to clip): the scaler then passes found_inf only."""
    res = []
    for mod in (FT, torch.optim):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        opt = mod.Adam(model.parameters(), lr=0.01, **({} if mod is FT else {"fused": True}))
        scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
        for _ in range(3):
            opt.zero_grad()
            scaler.scale(model(x).square().mean()).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            scaler.step(opt)
            scaler.update()
        res.append(list(model.parameters()))
    for a, b in zip(*res):
        _close(a, b, torch.float32)


def test_pickle_and_deepcopy():
    p = torch.nn.Parameter(torch.ones(3))
    opt = FT.NAdam([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    for o2 in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert type(o2) is FT.NAdam and len(o2.state) == 1
        q = o2.param_groups[0]["params"][0]
        q.grad = torch.ones(3)
        o2.step()
        assert float(o2.state[q]["step"]) == 2.0


def test_zero_size_and_scalar_params():
    ps = [torch.nn.Parameter(torch.ones(0, 3)), torch.nn.Parameter(torch.tensor(2.0))]
    res = []
    for mod in (torch.optim, FT):
        qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
        opt = _make(mod, "Adam", qs, dict(lr=0.1))
        for q in qs:
            q.grad = torch.ones_like(q)
        opt.step()
        res.append(qs)
    for a, b in zip(*res):
        _close(b, a, torch.float32)


def test_import_fastgd_does_not_import_torch():
    code = "import sys, fastgd, fastgd.multi, fastgd.optim; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
