"""fastgd.optim with float16/bfloat16 parameters, float32 or half-precision state, float32
master weights, grad_scale, found_inf and max_norm (issue #10).

Two comparisons for every rule: against direct calls of the fastgd.multi functions (the
optimizer must make exactly those calls), and against an oracle written here from the
float32 reference rules alone (every array converted to float32, ``g = (g / scale) * clip``,
``fastgd.reference.rules.<kernel>``, every written array converted back), bit for bit."""
import copy
import inspect
import json
import math
import pickle

import ml_dtypes
import numpy as np
import pytest

import fastgd.multi as M
from fastgd import optim as O
from fastgd.reference import rules as R
from test_optim import CONFIG_IDS, CONFIGS  # every rule with its options switched on (shared)

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
HALF = (BF16, F16)
HALF_IDS = ("bfloat16", "float16")

SHAPES = [(3, 5), (7,), (2, 2, 3)]


def bits(a):
    """An array's bytes (NaN payloads and signs included), for exact comparisons."""
    return np.ascontiguousarray(a).view(np.uint8).tobytes()


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and bits(a) == bits(b)


def make_params(rng, dtypes, shapes=SHAPES):
    return [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]


def make_grads(rng, params, scale=1.0):
    return [(rng.standard_normal(p.shape) * scale).astype(p.dtype) for p in params]


def exact_grads(rng, params, scale=1.0):
    """Gradients whose squares sum exactly in float64 in any order (multiples of 1/8 up to 2,
    times a power-of-two ``scale``), so that every way of computing the global norm agrees."""
    return [(rng.integers(-16, 17, p.shape) / 8.0 * scale).astype(p.dtype) for p in params]


def exact_norm(grads, scale=None):
    total = math.fsum(float(x) ** 2 for g in grads for x in g.astype(np.float64).ravel())
    norm = math.sqrt(total)
    return norm if scale is None else norm / scale


def clip_of(max_norm, norm):
    c = max_norm / (norm + 1e-6)
    return 1.0 if c > 1.0 else c


def kernel_hyper(cls, hyper):
    """The fastgd.multi keywords of an optimizer's hyperparameters (betas split, optimizer-only ones dropped)."""
    h = dict(cls._defaults, **hyper)
    r = cls._rule
    if r.betas:
        h[r.betas[0]], h[r.betas[1]] = h.pop("betas")
    for x in r.optim_hyper:
        h.pop(x.name)
    return h


def state_dtype_of(p, state_dtype):
    return F32 if (state_dtype == "float32" and p.dtype in HALF) else p.dtype


class Manual:
    """An optimizer written out by hand: per group, one fastgd.multi.<rule>_step call per
    parameter dtype, hand-kept state (the optimizer's layout), step counts, masters."""

    def __init__(self, name, hyper, groups, *, state_dtype="float32", master_weights=False, backend=None,
                 oracle=False):
        self.cls = getattr(O, name)
        self.rule = self.cls._rule
        self.h_opt = dict(self.cls._defaults, **hyper)
        self.kh = kernel_hyper(self.cls, hyper)
        self.groups = [[p.copy() for p in g] for g in groups]
        self.state = [[{} for _ in g] for g in groups]
        self.mu = [np.ones(1) for _ in groups]
        self.state_dtype, self.master_weights, self.backend, self.oracle = state_dtype, master_weights, backend, oracle
        self.t = 0

    def params(self):
        return [p for g in self.groups for p in g]

    def _init(self, p, st):
        for s in self.rule.state:
            if s.scalar or not s.needed(self.kh):
                continue
            value = self.h_opt[s.init] if isinstance(s.init, str) else s.init
            st.setdefault(s.torch, np.full(p.shape, value, state_dtype_of(p, self.state_dtype)))
        if self.master_weights and p.dtype in HALF:
            st.setdefault("master_param", p.astype(np.float32))

    def step(self, grads, *, grad_scale=None, clip=None, max_norm=None):
        """``clip``: the oracle's factor; ``max_norm``: passed to multi (single-dtype steps only)."""
        self.t += 1
        t = self.t
        k = 0
        for gi, (ps, sts) in enumerate(zip(self.groups, self.state)):
            gs = grads[k:k + len(ps)]
            k += len(ps)
            for p, st in zip(ps, sts):
                self._init(p, st)
            if self.oracle:
                self._oracle_group(gi, ps, gs, sts, t, grad_scale, clip)
                continue
            by_dtype = {}
            for j, p in enumerate(ps):
                by_dtype.setdefault(p.dtype, []).append(j)
            mu_before = self.mu[gi].copy()
            for n, idx in enumerate(by_dtype.values()):
                mu = self.mu[gi] if n == 0 else mu_before.copy()
                self._multi_call([ps[j] for j in idx], [gs[j] for j in idx], [sts[j] for j in idx], t, mu,
                                 grad_scale, max_norm)

    def _multi_call(self, ps, gs, sts, t, mu, grad_scale, max_norm):
        r = self.rule
        kw = dict(self.kh, backend=self.backend)
        if r.step is not None:
            kw["step"] = t
        if grad_scale is not None:
            kw["grad_scale"] = grad_scale
        if max_norm is not None:
            kw["max_norm"] = max_norm
        if "master_param" in sts[0]:
            kw["master_params"] = [st["master_param"] for st in sts]
        sig = inspect.signature(getattr(M, r.name + "_step")).parameters
        positional = []
        for s in r.state:
            if s.scalar:
                positional.append(mu)
                continue
            if not s.needed(self.kh):
                continue
            lst = [st[s.torch] for st in sts]
            if sig[s.multi].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
                positional.append(lst)
            else:
                kw[s.multi] = lst
        getattr(M, r.name + "_step")(ps, gs, *positional, **kw)

    def _oracle_group(self, gi, ps, gs, sts, t, grad_scale, clip):
        """Float32 (float64 for float64 params) reference arithmetic on converted copies."""
        r = self.rule
        kw = r.check(t, **self.kh) if r.step is not None else r.check(**self.kh)
        if any(s.scalar for s in r.state):
            kw["mu_product"] = float(self.mu[gi][0])
        for p, g, st in zip(ps, gs, sts):
            cdt = F64 if p.dtype == F64 else F32
            master = st.get("master_param")
            P = master.copy() if master is not None else p.astype(cdt)
            G = g.astype(cdt)
            with np.errstate(all="ignore"):
                if grad_scale is not None:
                    G = G / cdt.type(float(np.asarray(grad_scale).reshape(-1)[0]))
                if clip is not None:
                    G = G * cdt.type(clip)
            names = [s.torch for s in r.state if not s.scalar]
            S = [st[n].astype(cdt) if n in st else None for n in names]
            arrs = r.arrays(kw, (P, G, *S))
            getattr(R, r.kernel)(*arrs, **kw)
            p[...] = P.astype(p.dtype)
            if master is not None:
                master[...] = P
            for n, a in zip(names, S):
                if a is not None:
                    st[n][...] = a.astype(st[n].dtype)
        if any(s.scalar for s in r.state):
            self.mu[gi][0] = kw["mu_product"] * R.nadam_mu(t, kw["beta1"], kw["momentum_decay"])


def assert_same_as(opt, man):
    for i, (p, q) in enumerate(zip(opt.parameters(), man.params())):
        assert same(p, q), "parameter %d (%s) differs" % (i, p.dtype)
    flat = [st for g in man.state for st in g]
    for i, (st, sq) in enumerate(zip(opt.state, flat)):
        for k, a in sq.items():
            assert same(st[k], a), "state %d %r differs" % (i, k)
        assert set(k for k in st if k != "mu_product") == set(sq), i
    if "mu_product" in opt.state[0]:
        for g, (a, b) in enumerate(opt._bounds):
            assert same(opt.state[a]["mu_product"], man.mu[g]), g


def snapshot(opt):
    return ([p.copy() for p in opt.parameters()], opt.step_count,
            [{k: v.copy() for k, v in st.items()} for st in opt.state])


def assert_unchanged(opt, snap):
    params, count, states = snap
    assert opt.step_count == count
    for p, q in zip(opt.parameters(), params):
        assert same(p, q)
    assert len(opt.state) == len(states)
    for st, sq in zip(opt.state, states):
        assert set(st) == set(sq)
        for k in sq:
            assert same(st[k], sq[k])


# ---------------------------------------------------------------------------------------
# the optimizer against fastgd.multi and against the float32 oracle

@pytest.mark.parametrize("name, hyper", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("half", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("state_dtype, master", [("float32", False), ("param", False), ("float32", True)],
                         ids=["f32state", "halfstate", "f32state-master"])
def test_half_params_equal_the_multi_calls_and_the_oracle(name, hyper, half, state_dtype, master, backend):
    rng = np.random.default_rng(1)
    params = make_params(rng, [half, half, half])
    opt = getattr(O, name)([p.copy() for p in params], state_dtype=state_dtype, master_weights=master,
                           backend=backend, **hyper)
    multi = Manual(name, hyper, [params], state_dtype=state_dtype, master_weights=master, backend=backend)
    oracle = Manual(name, hyper, [params], state_dtype=state_dtype, master_weights=master, oracle=True)
    for t in range(4):
        grads = make_grads(rng, params)
        scale = (None, 2.0, np.array([0.75], np.float32), 1024.0)[t]
        opt.step(grads, grad_scale=scale)
        multi.step(grads, grad_scale=scale)
        oracle.step(grads, grad_scale=scale)
        assert_same_as(opt, multi)
        assert_same_as(opt, oracle)
    assert opt.step_count == 4
    for i, p in enumerate(opt.parameters()):
        for k, a in opt.state[i].items():
            want = np.float64 if k == "mu_product" else (F32 if k == "master_param" else
                                                         state_dtype_of(p, state_dtype))
            assert a.dtype == want, (k, a.dtype)
        if master:
            assert same(p, opt.state[i]["master_param"].astype(p.dtype))  # param = master's rounding


@pytest.mark.parametrize("name, hyper", CONFIGS, ids=CONFIG_IDS)
def test_mixed_dtypes_and_groups_equal_the_oracle(name, hyper, backend):
    """bfloat16, float16, float32 and float64 params in two groups: one call per group and
    dtype; master copies for the half ones only; max_norm clips by the norm of every
    gradient of the step (all groups and dtypes)."""
    rng = np.random.default_rng(2)
    g0 = make_params(rng, [BF16, F32, F16], [(3, 5), (4,), (2, 3)])
    g1 = make_params(rng, [F64, BF16], [(5,), (2, 2)])
    opt = getattr(O, name)([{"params": [p.copy() for p in g0]}, {"params": [p.copy() for p in g1], "lr": 0.005}],
                           master_weights=True, max_norm=2.0, backend=backend, **hyper)
    oracle = Manual(name, hyper, [g0, g1], master_weights=True, oracle=True)
    oracle1 = Manual(name, dict(hyper, lr=0.005), [g0, g1], master_weights=True, oracle=True)
    for t in range(3):
        grads = exact_grads(rng, g0 + g1, scale=4.0)
        clip = clip_of(2.0, exact_norm(grads, 4.0))
        assert clip < 1.0  # the clip is active
        opt.step(grads, grad_scale=4.0)
        oracle.step(grads, grad_scale=4.0, clip=clip)
        oracle1.step(grads, grad_scale=4.0, clip=clip)
        ps = opt.parameters()
        for i in range(3):
            assert same(ps[i], oracle.params()[i]), (t, i)
        for i in range(3, 5):
            assert same(ps[i], oracle1.params()[i]), (t, i)
    assert set(opt.state[1]) == set(opt.state[3]) == {k for k in opt.state[0] if k != "master_param"}
    assert "master_param" in opt.state[0] and "master_param" in opt.state[4]
    assert opt.state[1].get("exp_avg", np.zeros(1, F32)).dtype == F32
    assert opt.state[3].get("exp_avg", np.zeros(1, F64)).dtype == F64


@pytest.mark.parametrize("name, hyper", CONFIGS[::2], ids=CONFIG_IDS[::2])
def test_max_norm_equals_multi_in_one_call_and_clips_globally(name, hyper, backend):
    rng = np.random.default_rng(3)
    params = make_params(rng, [BF16, BF16, BF16])
    opt = getattr(O, name)([p.copy() for p in params], max_norm=0.5, backend=backend, **hyper)
    multi = Manual(name, hyper, [params], backend=backend)
    for _ in range(3):
        grads = make_grads(rng, params)
        opt.step(grads, grad_scale=2.0)
        multi.step(grads, grad_scale=2.0, max_norm=0.5)  # one call: its norm is the step's
        assert_same_as(opt, multi)
    # a threshold above every norm clips nothing: the unclipped step
    opt2 = getattr(O, name)([p.copy() for p in params], max_norm=1e30, backend=backend, **hyper)
    opt3 = getattr(O, name)([p.copy() for p in params], backend=backend, **hyper)
    grads = make_grads(rng, params)
    opt2.step(grads)
    opt3.step(grads)
    for p, q in zip(opt2.parameters(), opt3.parameters()):
        assert same(p, q)


def test_max_norm_is_global_across_groups(backend):
    """Two groups, the gradients of the second much larger: each group's update is clipped by
    the norm of both (not by its own)."""
    rng = np.random.default_rng(4)
    a = make_params(rng, [BF16], [(6,)])
    b = make_params(rng, [F32], [(5,)])
    opt = O.SGD([{"params": [a[0].copy()]}, {"params": [b[0].copy()]}], lr=1.0, max_norm=1.0, backend=backend)
    ga = exact_grads(rng, a)
    gb = exact_grads(rng, b, scale=64.0)
    clip = clip_of(1.0, exact_norm(ga + gb))
    oracle = Manual("SGD", dict(lr=1.0), [a, b], oracle=True)
    opt.step(ga + gb)
    oracle.step(ga + gb, clip=clip)
    for p, q in zip(opt.parameters(), oracle.params()):
        assert same(p, q)
    own = clip_of(1.0, exact_norm(ga))  # what clipping group 0 by its own norm would have given
    assert own != clip


def test_max_norm_attribute():
    p = np.zeros(3, BF16)
    opt = O.Adam([p], max_norm=1)
    assert opt.max_norm == 1.0 and type(opt.max_norm) is float
    opt.max_norm = 0.25
    assert opt.max_norm == 0.25
    opt.max_norm = None
    assert opt.max_norm is None
    for bad, exc in ((0.0, ValueError), (-1.0, ValueError), (math.nan, ValueError), (math.inf, ValueError),
                     ("1", TypeError), (True, TypeError)):
        with pytest.raises(exc, match="max_norm"):
            opt.max_norm = bad
        with pytest.raises(exc, match="max_norm"):
            O.Adam([p], max_norm=bad)
    assert opt.max_norm is None


def test_nan_norm_propagates(backend):
    """A NaN gradient makes the norm NaN and the clip factor NaN (torch's clip_grad_norm_):
    every parameter becomes NaN unless found_inf skips the step."""
    p = [np.ones(3, BF16), np.ones(2, F32)]
    opt = O.SGD([q.copy() for q in p], lr=0.1, max_norm=1.0, backend=backend)
    g = [np.array([1.0, np.nan, 0.0], BF16), np.ones(2, F32)]
    snap = snapshot(opt)
    opt.step(g, found_inf=np.ones(1, np.float32))
    assert_unchanged(opt, snap)
    opt.step(g)
    assert all(np.isnan(q.astype(np.float32)).all() for q in opt.parameters())


# ---------------------------------------------------------------------------------------
# found_inf and grad_scale

@pytest.mark.parametrize("name, hyper", CONFIGS, ids=CONFIG_IDS)
def test_found_inf_skips_the_step_whole(name, hyper, backend):
    rng = np.random.default_rng(5)
    params = make_params(rng, [BF16, F16, F32])
    opt = getattr(O, name)([p.copy() for p in params], master_weights=True, max_norm=1.0, backend=backend, **hyper)
    ref = getattr(O, name)([p.copy() for p in params], master_weights=True, max_norm=1.0, backend=backend, **hyper)
    found = np.zeros(1, np.float32)
    found[0] = 1.0
    bad = make_grads(rng, params)
    bad[0][0, 0] = np.inf
    snap = snapshot(opt)
    assert opt.step(bad, grad_scale=8.0, found_inf=found) == opt.parameters()
    assert_unchanged(opt, snap)  # nothing written, no state created, step_count 0
    assert all(len(st) == 0 for st in opt.state)
    assert found[0] == 1.0  # only read
    for t in range(3):
        grads = make_grads(rng, params)
        opt.step(grads, grad_scale=8.0, found_inf=np.zeros(1, np.float32))
        ref.step(grads, grad_scale=8.0)
        snap = snapshot(opt)
        opt.step(bad, grad_scale=8.0, found_inf=np.full(1, np.nan, np.float32))  # NaN is nonzero: skip
        assert_unchanged(opt, snap)
    assert opt.step_count == ref.step_count == 3
    for p, q in zip(opt.parameters(), ref.parameters()):
        assert same(p, q)  # the skipped steps changed nothing, not even the bias corrections' step
    for st, sq in zip(opt.state, ref.state):
        assert set(st) == set(sq) and all(same(st[k], sq[k]) for k in st)
    assert all(g["step"] == 3 for g in opt.state_dict()["param_groups"])


def test_found_inf_is_read_once_before_anything_runs(backend):
    p = [np.ones(4, BF16), np.ones(3, F32)]
    opt = O.Adam([{"params": [p[0]]}, {"params": [p[1]]}], backend=backend)
    found = np.ones(1, np.float32)
    opt.step([np.ones(4, BF16), np.ones(3, F32)], found_inf=found)
    assert opt.step_count == 0 and found[0] == 1.0
    found[0] = 0.0
    opt.step([np.ones(4, BF16), np.ones(3, F32)], found_inf=found)
    assert opt.step_count == 1


@pytest.mark.parametrize("name, hyper", CONFIGS[::3], ids=CONFIG_IDS[::3])
def test_grad_scale_divides_the_gradients(name, hyper, backend):
    """A power-of-two scale divides exactly: scaled gradients with grad_scale step as the
    unscaled ones without; a float and a float32 array of one element are the same scale."""
    rng = np.random.default_rng(6)
    params = make_params(rng, [BF16, F16, F32])
    a = getattr(O, name)([p.copy() for p in params], backend=backend, **hyper)
    b = getattr(O, name)([p.copy() for p in params], backend=backend, **hyper)
    c = getattr(O, name)([p.copy() for p in params], backend=backend, **hyper)
    for _ in range(3):
        grads = make_grads(rng, params)
        a.step(grads)
        b.step([g * g.dtype.type(1024) for g in grads], grad_scale=1024.0)
        c.step([g * g.dtype.type(1024) for g in grads], grad_scale=np.array([1024.0], np.float32))
    for p, q, r in zip(a.parameters(), b.parameters(), c.parameters()):
        assert same(p, q) and same(p, r)


def test_grads_are_not_rewritten(backend):
    rng = np.random.default_rng(7)
    params = make_params(rng, [BF16, F16])
    opt = O.AdamW(params, master_weights=True, max_norm=0.1, backend=backend)
    grads = make_grads(rng, params)
    kept = [g.copy() for g in grads]
    opt.step(grads, grad_scale=3.0)
    assert all(same(g, k) for g, k in zip(grads, kept))


# ---------------------------------------------------------------------------------------
# state dtype and master weights

def test_state_dtypes_and_masters_are_allocated_as_documented(backend):
    ps = [np.ones(3, BF16), np.ones(3, F16), np.ones(3, F32), np.ones(3, F64)]
    opt = O.Adagrad([p.copy() for p in ps], initial_accumulator_value=0.1, backend=backend)
    opt.step([np.ones(3, p.dtype) for p in ps])
    assert [opt.state[i]["sum"].dtype for i in range(4)] == [F32, F32, F32, F64]
    assert all("master_param" not in st for st in opt.state)
    opt = O.Adagrad([p.copy() for p in ps], initial_accumulator_value=0.1, state_dtype="param", backend=backend)
    opt.step([np.zeros(3, p.dtype) for p in ps])
    assert [opt.state[i]["sum"].dtype for i in range(4)] == [BF16, F16, F32, F64]
    assert same(opt.state[0]["sum"], np.full(3, 0.1, BF16))  # the initial value rounded once
    opt = O.NAdam([p.copy() for p in ps], master_weights=True, state_dtype=np.float32, backend=backend)
    assert opt.state_dtype == "float32" and opt.master_weights is True
    opt.step([np.ones(3, p.dtype) for p in ps])
    assert [("master_param" in st) for st in opt.state] == [True, True, False, False]
    assert opt.state[0]["master_param"].dtype == F32
    assert opt.state[0]["mu_product"].dtype == F64
    assert opt.state[0]["mu_product"] is opt.state[3]["mu_product"]  # one per group, across dtypes


def test_master_weights_carry_the_precision_the_param_cannot(backend):
    """Steps smaller than half a bfloat16 ulp: without a master the parameter never moves,
    with one the master accumulates them and the parameter follows its rounding."""
    p = np.ones(4, BF16)
    g = np.ones(4, BF16)
    plain = O.SGD([p.copy()], lr=1e-3, backend=backend)
    mast = O.SGD([p.copy()], lr=1e-3, master_weights=True, backend=backend)
    for _ in range(10):
        plain.step([g])
        mast.step([g])
    assert same(plain.parameters()[0], p)
    m = mast.state[0]["master_param"]
    assert abs(float(m[0]) - (1 - 10 * np.float32(1e-3))) < 1e-6
    assert same(mast.parameters()[0], m.astype(BF16))
    assert not same(mast.parameters()[0], p)


def test_master_is_what_the_step_reads(backend):
    """With master weights, the parameter's old value is not read: a value written into the
    parameter is overwritten by the master's rounding; written into the master it is used."""
    opt = O.SGD([np.ones(3, F16)], lr=0.5, master_weights=True, backend=backend)
    g = [np.ones(3, F16)]
    opt.step(g)
    opt.parameters()[0][...] = 100
    opt.step(g)
    assert same(opt.parameters()[0], np.zeros(3, F16))  # 1 - 0.5 - 0.5 from the master
    opt.state[0]["master_param"][...] = 10
    opt.step(g)
    assert same(opt.parameters()[0], np.full(3, 9.5, F16))
    opt.zero_state()  # the next step makes a new master from the parameter
    opt.parameters()[0][...] = 4
    opt.step(g)
    assert same(opt.state[0]["master_param"], np.full(3, 3.5, F32))


def test_master_weights_ignored_for_float32_params(backend):
    p = np.ones(3, F32)
    a = O.Adam([p.copy()], master_weights=True, backend=backend)
    b = O.Adam([p.copy()], backend=backend)
    a.step([np.ones(3, F32)])
    b.step([np.ones(3, F32)])
    assert "master_param" not in a.state[0] and same(a.parameters()[0], b.parameters()[0])


def test_deleted_master_is_refused_at_the_next_step(backend):
    opt = O.Adam([np.ones(3, BF16)], master_weights=True, backend=backend)
    opt.step([np.ones(3, BF16)])
    del opt.state[0]["master_param"]
    snap = snapshot(opt)
    with pytest.raises(ValueError, match="master_param"):
        opt.step([np.ones(3, BF16)])
    assert_unchanged(opt, snap)
    opt.state[0]["master_param"] = np.ones(3, np.float32)
    opt.step([np.ones(3, BF16)])
    assert opt.step_count == 2


# ---------------------------------------------------------------------------------------
# state_dict, save / load

@pytest.mark.parametrize("name, hyper", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("state_dtype, master", [("float32", True), ("param", False)], ids=["f32-master", "half"])
def test_state_dict_and_files_resume_bit_exactly(name, hyper, state_dtype, master, backend, tmp_path):
    rng = np.random.default_rng(8)
    params = make_params(rng, [BF16, F16, F32])
    kw = dict(state_dtype=state_dtype, master_weights=master, max_norm=3.0, backend=backend, **hyper)
    a = getattr(O, name)([p.copy() for p in params], **kw)
    seq = [make_grads(rng, params) for _ in range(5)]
    for g in seq[:2]:
        a.step(g, grad_scale=2.0)
    sd = a.state_dict()
    O.save(a, tmp_path / "opt.npz")
    b = getattr(O, name)([p.copy() for p in a.parameters()], **kw)
    b.load_state_dict(sd)
    c = getattr(O, name)([np.zeros_like(p) for p in params], **kw)
    O.load(c, tmp_path / "opt.npz")
    assert all(same(p, q) for p, q in zip(c.parameters(), a.parameters()))
    for st, sq in zip(c.state, a.state):
        assert set(st) == set(sq) and all(same(st[k], sq[k]) for k in st)
    for g in seq[2:]:
        for o in (a, b, c):
            o.step(g, grad_scale=2.0)
    for o in (b, c):
        assert o.step_count == a.step_count == 5
        for p, q in zip(o.parameters(), a.parameters()):
            assert same(p, q)
        for st, sq in zip(o.state, a.state):
            assert all(same(st[k], sq[k]) for k in sq)


def test_files_with_bfloat16_say_so(tmp_path):
    opt = O.Adam([np.ones(3, BF16), np.ones(2, F16)], state_dtype="param")
    opt.step([np.ones(3, BF16), np.ones(2, F16)])
    O.save(opt, tmp_path / "bf.npz")
    with np.load(tmp_path / "bf.npz") as data:
        meta = json.loads(data["__meta__"].item())
        assert meta["format"] == "fastgd.optim/3"
        assert sorted(meta["bfloat16"]) == ["param/0", "state/0/exp_avg", "state/0/exp_avg_sq"]
        assert data["param/0"].dtype == np.uint16 and data["param/1"].dtype == F16
    f32 = O.Adam([np.ones(3, F32)])
    f32.step([np.ones(3, F32)])
    O.save(f32, tmp_path / "f32.npz")
    with np.load(tmp_path / "f32.npz") as data:
        assert json.loads(data["__meta__"].item())["format"] == "fastgd.optim/2"  # unchanged without bfloat16


def _stepped(cls=O.Adam, state_dtype="float32", master=False, **kw):
    opt = cls([np.ones(3, BF16), np.ones(2, F32)], state_dtype=state_dtype, master_weights=master, **kw)
    opt.step([np.full(3, 0.5, BF16), np.full(2, 0.5, F32)])
    return opt


@pytest.mark.parametrize("source, target, match", [
    (dict(state_dtype="param"), dict(), r"state_dict\['state'\]\[0\]\['exp_avg'\] has .*dtype bfloat16, "
                                        r"expected .*dtype float32.*state_dtype='param'"),
    (dict(), dict(state_dtype="param"), r"\['exp_avg'\] has .*dtype float32, expected .*dtype bfloat16.*"
                                        r"state_dtype='float32'"),
    (dict(), dict(master=True), r"state_dict\['state'\]\[0\] has no 'master_param'.*master_weights=True"),
    (dict(master=True), dict(), r"'master_param'.*master_weights=False"),
])
def test_load_refuses_state_of_another_layout(source, target, match):
    sd = _stepped(**source).state_dict()
    opt = _stepped(**target)
    snap = snapshot(opt)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(sd)
    assert_unchanged(opt, snap)


def test_load_refuses_bad_masters():
    opt = _stepped(master=True)
    snap = snapshot(opt)
    sd = opt.state_dict()
    sd["state"][0]["master_param"] = np.ones(3, F16)
    with pytest.raises(ValueError, match=r"\['master_param'\] has .*dtype float16, expected .*float32"):
        opt.load_state_dict(sd)
    sd["state"][0]["master_param"] = np.ones(4, F32)
    with pytest.raises(ValueError, match=r"\['master_param'\] has shape \(4,\)"):
        opt.load_state_dict(sd)
    sd = opt.state_dict()
    sd["state"][1]["master_param"] = np.ones(2, F32)  # the float32 parameter has none
    with pytest.raises(ValueError, match=r"\[1\] has a 'master_param'.*float16/bfloat16 parameters only"):
        opt.load_state_dict(sd)
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"] = np.ones(3, F16)  # neither float32 nor the param's dtype
    with pytest.raises(ValueError, match=r"float16.*the state of a bfloat16 parameter is float32 or bfloat16"):
        opt.load_state_dict(sd)
    assert_unchanged(opt, snap)


def test_load_file_refuses_a_bad_bfloat16_list(tmp_path):
    opt = _stepped(state_dtype="param")
    O.save(opt, tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz") as data:
        entries = {k: data[k] for k in data.files}
    meta = json.loads(entries["__meta__"].item())
    meta["bfloat16"].append("state/9/exp_avg")
    entries["__meta__"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "b.npz", **entries)
    snap = snapshot(opt)
    with pytest.raises(ValueError, match="bad bfloat16 list"):
        O.load(opt, tmp_path / "b.npz")
    assert_unchanged(opt, snap)


def test_pickle_and_deepcopy_keep_the_options():
    opt = _stepped(state_dtype="param", master=True, max_norm=2.0)
    for other in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert (other.state_dtype, other.master_weights, other.max_norm) == ("param", True, 2.0)
        g = [np.full(3, 0.25, BF16), np.full(2, 0.25, F32)]
        other.step(g)
    g = [np.full(3, 0.25, BF16), np.full(2, 0.25, F32)]
    opt.step(g)
    assert all(same(p, q) for p, q in zip(opt.parameters(), other.parameters()))


# ---------------------------------------------------------------------------------------
# bad input: named errors, nothing changed

@pytest.mark.parametrize("kw, exc, match", [
    (dict(state_dtype="float16"), ValueError, "state_dtype must be 'float32'.*or 'param'"),
    (dict(state_dtype=np.float16), TypeError, "state_dtype must be 'float32' or 'param'"),
    (dict(state_dtype=None), TypeError, "state_dtype"),
    (dict(master_weights="yes"), TypeError, "master_weights must be a bool"),
    (dict(max_norm=0.0), ValueError, "max_norm must be > 0"),
    (dict(max_norm="1"), TypeError, "max_norm must be a real number"),
])
def test_bad_options(kw, exc, match):
    with pytest.raises(exc, match=match):
        O.Adam([np.ones(3, BF16)], **kw)


@pytest.mark.parametrize("p, match", [
    (np.ones(3, ">f2"), r"params\[0\] must have dtype float32 or float64, or float16 or bfloat16 \(native byte "
                        r"order\), got >f2"),
    (np.ones(3, np.int16), r"params\[0\] must have dtype .*float16 or bfloat16.*got int16"),
    (np.ones(3, np.complex64), r"params\[0\] must have dtype"),
])
def test_bad_param_dtypes(p, match):
    with pytest.raises(TypeError, match=match):
        O.Adam([p])


def _two_group_opt(backend, master=True):
    ps = [np.ones(3, BF16), np.ones(2, F16), np.ones(4, F32)]
    opt = O.Adam([{"params": ps[:2]}, {"params": ps[2:]}], master_weights=master, max_norm=1.0, backend=backend)
    grads = [np.full(3, 0.5, BF16), np.full(2, 0.5, F16), np.full(4, 0.5, F32)]
    opt.step(grads)
    return opt, grads


@pytest.mark.parametrize("bad, exc, match", [
    (dict(grad_scale=0.0), ValueError, "grad_scale must be > 0 and finite"),
    (dict(grad_scale=-2.0), ValueError, "grad_scale must be > 0"),
    (dict(grad_scale=math.nan), ValueError, "grad_scale must be > 0"),
    (dict(grad_scale=math.inf), ValueError, "grad_scale must be > 0"),
    (dict(grad_scale=np.zeros(1, np.float32)), ValueError, "grad_scale must be > 0"),
    (dict(grad_scale="2"), TypeError, "grad_scale must be a real number"),
    (dict(grad_scale=np.ones(1)), TypeError, "grad_scale must be a real number or a float32 numpy array"),
    (dict(grad_scale=np.ones(2, np.float32)), TypeError, "grad_scale .*size 2"),
    (dict(found_inf=0.0), TypeError, "found_inf must be a float32 numpy array of one element"),
    (dict(found_inf=np.zeros(1)), TypeError, "found_inf must be a float32 numpy array of one element"),
    (dict(found_inf=np.zeros(2, np.float32)), TypeError, "found_inf .*size 2"),
])
def test_bad_grad_scale_and_found_inf_change_nothing(bad, exc, match, backend):
    opt, grads = _two_group_opt(backend)
    snap = snapshot(opt)
    with pytest.raises(exc, match=match):
        opt.step(grads, **bad)
    assert_unchanged(opt, snap)


@pytest.mark.parametrize("skip", [False, True], ids=["run", "found_inf"])
def test_bad_arrays_change_nothing_even_when_skipping(skip, backend):
    """Bad input is refused before anything runs, whether or not found_inf would skip."""
    opt, grads = _two_group_opt(backend)
    extra = dict(found_inf=np.ones(1, np.float32)) if skip else {}
    cases = [
        ([grads[0], grads[1], np.ones(4, F16)], TypeError, r"grads\[2\] has dtype float16 but parameter 2"),
        ([np.ones(3, F32), grads[1], grads[2]], TypeError, r"grads\[0\] has dtype float32 but parameter 0"),
        ([grads[0], np.ones(3, F16), grads[2]], ValueError, r"grads\[1\] has shape"),
        ([grads[0], grads[1]], ValueError, "grads has 2 arrays"),
    ]
    for g, exc, match in cases:
        snap = snapshot(opt)
        with pytest.raises(exc, match=match):
            opt.step(g, **extra)
        assert_unchanged(opt, snap)
    # a state array of a dtype the rule does not take, in the second call: the first is not run
    for i, name, arr, exc, match in [
            (2, "exp_avg", np.zeros(4, F16), TypeError, "exp_avg"),
            (1, "exp_avg", np.zeros(2, np.float64), TypeError, "exp_avg"),
            (1, "master_param", np.zeros(2, F16), TypeError, "master_param"),
            (0, "master_param", np.zeros(2, F32), ValueError, "master_param"),
            (1, "master_param", opt.state[0]["master_param"][:2], ValueError, "overlap")]:
        keep = opt.state[i][name]
        opt.state[i][name] = arr
        snap = snapshot(opt)
        with pytest.raises(exc, match=match):
            opt.step(grads, **extra)
        assert_unchanged(opt, snap)
        opt.state[i][name] = keep
    opt.step(grads, **extra)
    assert opt.step_count == 1 + (not skip)


def test_first_step_refused_or_skipped_allocates_nothing(backend):
    ps = [np.ones(3, BF16), np.ones(2, F32)]
    opt = O.NAdam([{"params": [ps[0]]}, {"params": [ps[1]]}], master_weights=True, backend=backend)
    with pytest.raises(TypeError):
        opt.step([np.ones(3, F32), np.ones(2, F32)])
    opt.step([np.ones(3, BF16), np.ones(2, F32)], found_inf=np.ones(1, np.float32))
    assert opt.step_count == 0 and all(len(st) == 0 for st in opt.state)
    assert opt.state_dict()["state"] == [{}, {}]


@pytest.mark.parametrize("cls", sorted(set(O.OPTIMIZERS.values()), key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_every_optimizer_takes_the_options(cls):
    """The options are keyword-only in every constructor, with one set of defaults
    (``fastgd.optim._OPTIONS`` names them: the rule-table test leaves them out)."""
    sig = inspect.signature(cls.__init__).parameters
    for name, default in (("backend", None), ("state_dtype", "float32"), ("master_weights", False),
                          ("max_norm", None)):
        assert name in O._OPTIONS
        assert sig[name].kind is inspect.Parameter.KEYWORD_ONLY and sig[name].default == default, name
        assert name in cls.__doc__, name
    opt = cls([np.ones(2, BF16)], state_dtype="param", master_weights=True, max_norm=1.5)
    assert (opt.state_dtype, opt.master_weights, opt.max_norm) == ("param", True, 1.5)
    assert "state_dtype='param', master_weights=True, max_norm=1.5" in repr(opt)
    with pytest.raises(AttributeError):
        opt.state_dtype = "float32"  # fixed at construction: the state's layout
