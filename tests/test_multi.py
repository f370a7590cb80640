"""fastgd.multi: the multi-tensor steps give, tensor by tensor, exactly what the single-tensor
functions give (on every backend and dtype; the single-tensor kernels are themselves tested
against the NumPy reference in test_steps.py, and on the numpy backend the single-tensor
function *is* the reference), validate everything before writing anything, and the
optimizer objects built on them stay bit-identical to stepping each parameter alone.
Also: ``python -m fastgd.bench --quick`` runs (smoke test, tiny sizes)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastgd
import fastgd.multi as M
from fastgd import optim

# rule -> (positional state lists, {hyperparameter sets}); each set exercises other options
RULES = {
    "sgd": (["momentum_buffer"], [dict(lr=0.1, momentum=0.9, step=3), dict(lr=0.1, momentum=0.9, step=1),
                                  dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1, maximize=True),
                                  dict(lr=0.1)]),
    "adam": (["exp_avg", "exp_avg_sq"], [dict(step=3, lr=0.01), dict(step=7, lr=0.01, amsgrad=True, weight_decay=0.1),
                                        dict(step=1, lr=0.02, maximize=True)]),
    "adamw": (["exp_avg", "exp_avg_sq"], [dict(step=3, lr=0.01), dict(step=2, lr=0.01, amsgrad=True)]),
    "adamax": (["exp_avg", "exp_inf"], [dict(step=3, lr=0.01, weight_decay=0.1), dict(step=1, maximize=True)]),
    "nadam": (["exp_avg", "exp_avg_sq"], [dict(step=3, lr=0.01), dict(step=5, weight_decay=0.1,
                                                                     decoupled_weight_decay=True)]),
    "radam": (["exp_avg", "exp_avg_sq"], [dict(step=3), dict(step=9, weight_decay=0.1, decoupled_weight_decay=True)]),
    "adagrad": (["state_sum"], [dict(step=3, lr_decay=0.1), dict(step=1, weight_decay=0.1, maximize=True)]),
    "adadelta": (["square_avg", "acc_delta"], [dict(), dict(weight_decay=0.1, rho=0.5)]),
    "rmsprop": (["square_avg"], [dict(), dict(momentum=0.9, centered=True, weight_decay=0.1),
                                 dict(momentum=0.5), dict(centered=True, maximize=True)]),
    "lion": (["exp_avg"], [dict(lr=0.01), dict(lr=0.01, weight_decay=0.1, maximize=True)]),
}
CASES = [(rule, i) for rule, (_, hps) in RULES.items() for i in range(len(hps))]
# mixed sizes: zero-size, tiny, odd, more than one 32,768-element chunk, N-d
SHAPES = [(5,), (0,), (3, 7), (1,), (70_001,), (0, 4), (2, 3, 4), (40_000,)]


def kw_states(rule, hp):
    """Keyword state arrays the single-tensor call takes with ``hp`` (name -> multi keyword)."""
    if rule in ("adam", "adamw") and hp.get("amsgrad"):
        return {"max_exp_avg_sq": "max_exp_avg_sqs"}
    if rule == "rmsprop":
        out = {}
        if hp.get("momentum", 0) > 0:
            out["momentum_buffer"] = "momentum_buffers"
        if hp.get("centered"):
            out["grad_avg"] = "grad_avgs"
        return out
    return {}


def make(rule, hp, shapes, dtypes, seed=0):
    """params, grads and {state name: list} for ``shapes`` (dtypes cycled), valid states."""
    rng = np.random.default_rng(seed)
    pos, _ = RULES[rule]
    names = list(pos) + list(kw_states(rule, hp))
    if rule == "sgd" and hp.get("momentum", 0) == 0:
        names = []
    params, grads, states = [], [], {n: [] for n in names}
    for t, shape in enumerate(shapes):
        dt = dtypes[t % len(dtypes)]
        params.append(rng.standard_normal(shape).astype(dt))
        g = rng.standard_normal(shape)
        grads.append(g.astype(dt))
        for n in names:
            if n in ("exp_avg_sq", "max_exp_avg_sq", "square_avg", "state_sum", "exp_inf"):
                a = g * g + rng.random(shape)
            elif n == "acc_delta":
                a = 0.01 * rng.random(shape)
            else:
                a = 0.1 * rng.standard_normal(shape)
            states[n].append(a.astype(dt))
    if "grad_avg" in states:  # a valid centered state: grad_avg^2 <= square_avg
        states["grad_avg"] = [(0.5 * np.sqrt(s)).astype(s.dtype) for s in states["square_avg"]]
    return params, grads, states


def copy(params, grads, states):
    return [p.copy() for p in params], [g.copy() for g in grads], {k: [a.copy() for a in v] for k, v in states.items()}


def single_call(rule, t, params, grads, states, hp, backend, mu=None):
    pos, _ = RULES[rule]
    kws = kw_states(rule, hp)
    args = [params[t], grads[t]] + [states[n][t] for n in pos if n in states]
    kwargs = dict(hp)
    kwargs.update((n, states[n][t]) for n in kws)
    if rule == "nadam":
        args.append(mu)
    getattr(fastgd, rule + "_step")(*args, backend=backend, **kwargs)


def multi_call(rule, params, grads, states, hp, backend, mu=None):
    pos, _ = RULES[rule]
    kws = kw_states(rule, hp)
    args = [params, grads] + [states[n] for n in pos if n in states]
    kwargs = dict(hp)
    kwargs.update((m, states[n]) for n, m in kws.items())
    if rule == "nadam":
        args.append(mu)
    return getattr(M, rule + "_step")(*args, backend=backend, **kwargs)


def assert_same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b, strict=True)


def assert_all_same(x, y):
    (pa, ga, sa), (pb, gb, sb) = x, y
    for a, b in zip(pa + ga, pb + gb):
        assert_same(a, b)
    for k in sa:
        for a, b in zip(sa[k], sb[k]):
            assert_same(a, b)


@pytest.fixture
def small_chunks():
    """Chunks of 64 elements and no serial cutoff: many chunks, every tensor on all threads."""
    from fastgd._cython import _rules
    old = _rules.multi_chunk()
    old_cut = fastgd.serial_cutoff()
    _rules.multi_chunk(64)
    fastgd.set_serial_cutoff(0)
    yield
    _rules.multi_chunk(old)
    fastgd.set_serial_cutoff(old_cut)


# ---------------------------------------------------------------------------------------
# values

@pytest.mark.parametrize("rule,case", CASES, ids=["%s-%d" % c for c in CASES])
def test_equals_the_single_tensor_steps(rule, case, backend, dtype):
    hp = RULES[rule][1][case]
    data = make(rule, hp, SHAPES, [dtype], seed=case)
    ref = copy(*data)
    mu_a, mu_b = np.array([0.7]), np.array([0.7])
    for _ in range(2):  # two steps: state written by the first is read by the second
        out = multi_call(rule, *data, hp, backend, mu=mu_a)
        for t in range(len(SHAPES)):
            single_call(rule, t, *ref, hp, backend, mu=mu_b.copy() if t < len(SHAPES) - 1 else mu_b)
    assert out is data[0]
    assert_all_same(data, ref)
    assert mu_a[0] == mu_b[0]


@pytest.mark.parametrize("rule", list(RULES))
def test_mixed_dtypes_and_many_chunks(rule, small_chunks):
    """float32 and float64 tensors in one call (one compiled call per dtype), tensors split
    into many 64-element chunks across threads, chunk ends aligned to cache lines."""
    hp = RULES[rule][1][-1]
    shapes = [(1000,), (0,), (17,), (129,), (64,), (3, 33), (2000,)]
    data = make(rule, hp, shapes, [np.float32, np.float64], seed=3)
    ref = copy(*data)
    multi_call(rule, *data, hp, "cython", mu=np.array([1.0]))
    for t in range(len(shapes)):
        single_call(rule, t, *ref, hp, "cython", mu=np.array([1.0]))
    assert_all_same(data, ref)


def test_numpy_backend_is_the_reference_loop():
    """On the numpy backend the result is the reference, tensor by tensor (independent of
    fastgd.steps: the reference module itself)."""
    from fastgd.reference import rules as R
    p, g, s = make("adam", {}, [(4,), (3, 2)], [np.float64])
    q = copy(p, g, s)
    M.adam_step(p, g, s["exp_avg"], s["exp_avg_sq"], step=2, lr=0.1, backend="numpy")
    for t in range(2):
        R.adam(q[0][t], q[1][t], q[2]["exp_avg"][t], q[2]["exp_avg_sq"][t], None, step=2, lr=0.1, beta1=0.9,
               beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False, decoupled_weight_decay=False)
    assert_all_same((p, g, s), q)


def test_hand_computed_adam_first_step(backend):
    """First Adam step with a zero state moves every element by lr * sign(g) (bias-corrected
    m/sqrt(v) = g/|g|), whatever the tensor."""
    ps = [np.ones(3), np.full((2, 2), 5.0)]
    gs = [np.array([1.0, -2.0, 4.0]), np.array([[0.5, -0.5], [3.0, -3.0]])]
    ms = [np.zeros_like(p) for p in ps]
    vs = [np.zeros_like(p) for p in ps]
    M.adam_step(ps, gs, ms, vs, step=1, lr=0.1, eps=0.0, backend=backend)
    np.testing.assert_allclose(ps[0], [0.9, 1.1, 0.9], rtol=1e-12)
    np.testing.assert_allclose(ps[1], [[4.9, 5.1], [4.9, 5.1]], rtol=1e-12)


def test_empty_list_and_tuples(backend):
    assert M.adam_step([], [], [], [], step=1, backend=backend) == []
    assert M.sgd_step((), (), lr=0.1, backend=backend) == ()  # the caller's own params object
    ps = [np.ones(2)]
    assert M.adam_step(ps, [np.ones(2)], [np.zeros(2)], [np.zeros(2)], step=1, backend=backend) is ps
    with pytest.raises(ValueError, match="lr"):
        M.adam_step([], [], [], [], step=1, lr=-1.0, backend=backend)
    p = (np.ones(2),)
    out = M.sgd_step(p, (np.ones(2),), lr=0.5, backend=backend)
    assert out[0] is p[0] and np.array_equal(p[0], [0.5, 0.5])


def test_shared_readonly_gradient_is_allowed(backend):
    """Two tensors may read the same gradient array (it is only read)."""
    g = np.ones(4)
    g.flags.writeable = False
    ps = [np.zeros(4), np.zeros(4)]
    M.sgd_step(ps, [g, g], lr=0.5, backend=backend)
    assert np.array_equal(ps[0], -0.5 * g) and np.array_equal(ps[1], -0.5 * g)


def test_nadam_mu_product_updated_once():
    p, g, s = make("nadam", {}, [(3,), (4,)], [np.float64])
    mu = np.ones(1)
    M.nadam_step(p, g, s["exp_avg"], s["exp_avg_sq"], mu, step=1)
    assert mu[0] == fastgd.nadam_mu_product(1)
    M.nadam_step(p, g, s["exp_avg"], s["exp_avg_sq"], mu, step=2)
    assert mu[0] == fastgd.nadam_mu_product(2)


# ---------------------------------------------------------------------------------------
# validation: the argument is named and nothing is written

def _bad_calls():
    """(description, mutate(params, grads, ms, vs) -> call kwargs/lists, exception, message)."""
    def base():
        p, g, s = make("adam", {}, [(3,), (4,), (2, 2)], [np.float32])
        return p, g, s["exp_avg"], s["exp_avg_sq"]

    def case_len(p, g, m, v):
        return (p, g[:2], m, v), {}

    def case_type(p, g, m, v):
        return (p, g, "nope", v), {}

    def case_elem_type(p, g, m, v):
        m[1] = [0.0] * 4
        return (p, g, m, v), {}

    def case_dtype(p, g, m, v):
        g[2] = g[2].astype(np.float64)
        return (p, g, m, v), {}

    def case_shape(p, g, m, v):
        v[1] = np.zeros(5, np.float32)
        return (p, g, m, v), {}

    def case_contig(p, g, m, v):
        m[2] = np.zeros((2, 4), np.float32)[:, ::2]
        return (p, g, m, v), {}

    def case_readonly(p, g, m, v):
        p[2].flags.writeable = False
        return (p, g, m, v), {}

    def case_cross_overlap(p, g, m, v):
        m[1] = v[2].reshape(-1)  # exp_avgs[1] would be exp_avg_sqs[2]: 4 elements each
        return (p, g, m, v), {}

    def case_param_twice(p, g, m, v):
        p[1] = p[0]
        g[1], m[1], v[1] = g[0].copy(), m[0].copy(), v[0].copy()
        return (p, g, m, v), {}

    def case_grad_is_other_param(p, g, m, v):
        g[0] = p[1][:3]
        return (p, g, m, v), {}

    def case_hyper(p, g, m, v):
        return (p, g, m, v), {"beta1": 1.5}

    def case_amsgrad(p, g, m, v):
        return (p, g, m, v), {"amsgrad": True}

    def case_byteswapped(p, g, m, v):
        m[0] = m[0].astype(">f4")
        return (p, g, m, v), {}

    return base, [
        ("length", case_len, ValueError, "grads has 2 arrays"),
        ("list type", case_type, TypeError, "exp_avgs must be a list"),
        ("element type", case_elem_type, TypeError, r"exp_avgs\[1\]"),
        ("dtype", case_dtype, TypeError, r"grads\[2\]"),
        ("shape", case_shape, ValueError, r"exp_avg_sqs\[1\]"),
        ("contiguity", case_contig, ValueError, r"exp_avgs\[2\]"),
        ("read-only", case_readonly, ValueError, r"params\[2\]"),
        ("overlap across tensors", case_cross_overlap, ValueError, (r"exp_avgs\[1\].*exp_avg_sqs\[2\]|"
                                                                    r"exp_avg_sqs\[2\].*exp_avgs\[1\]")),
        ("same param twice", case_param_twice, ValueError, r"params\[0\].*params\[1\]|params\[1\].*params\[0\]"),
        ("grad is another param", case_grad_is_other_param, ValueError, r"overlap"),
        ("hyperparameter", case_hyper, ValueError, "beta1"),
        ("missing state list", case_amsgrad, ValueError, "max_exp_avg_sqs"),
        ("byte order", case_byteswapped, TypeError, r"exp_avgs\[0\]"),
    ]


_BASE, _BAD = _bad_calls()


@pytest.mark.parametrize("what,mutate,exc,msg", _BAD, ids=[b[0] for b in _BAD])
def test_bad_input_raises_and_writes_nothing(what, mutate, exc, msg, backend):
    lists, kw = mutate(*_BASE())
    arrays = {id(a): a for lst in lists if isinstance(lst, list) for a in lst if isinstance(a, np.ndarray)}
    before = {k: a.copy() for k, a in arrays.items()}
    with pytest.raises(exc, match=msg):
        M.adam_step(*lists, step=2, lr=0.1, backend=backend, **kw)
    for k, a in arrays.items():
        assert_same(a, before[k])


@pytest.mark.parametrize("where", ["params", "grads"])
def test_ndarray_subclasses_are_refused(where, backend):
    """Exactly numpy.ndarray, as in the single-tensor functions: a subclass (here a trivial
    one, np.matrix and masked arrays in test_validate / test_bad_input) is a TypeError naming
    it, and nothing is written."""
    class Sub(np.ndarray):
        pass
    ps = [np.ones(2), np.ones(3)]
    gs = [np.ones(2), np.ones(3)]
    (ps if where == "params" else gs)[1] = np.ones(3).view(Sub)
    with pytest.raises(TypeError, match=r"%s\[1\] must be a numpy.ndarray, not the subclass" % where):
        M.sgd_step(ps, gs, lr=0.5, backend=backend)
    assert np.array_equal(ps[0], [1.0] * 2) and np.array_equal(np.asarray(ps[1]), [1.0] * 3)


# ---------------------------------------------------------------------------------------
# the optimizers use it and stay bit-identical to per-parameter steps

OPT_CASES = [("sgd", dict(lr=0.1, momentum=0.9)), ("adam", dict(lr=0.01, amsgrad=True)), ("adamw", dict(lr=0.01)),
             ("adamax", dict(lr=0.01)), ("nadam", dict(lr=0.01)), ("radam", dict(lr=0.01)),
             ("adagrad", dict(lr=0.1)), ("adadelta", dict()), ("rmsprop", dict(momentum=0.9, centered=True)),
             ("lion", dict(lr=0.01))]


@pytest.mark.parametrize("name,hyper", OPT_CASES, ids=[c[0] for c in OPT_CASES])
def test_optimizer_equals_one_optimizer_per_parameter(name, hyper, backend):
    """One optimizer over mixed shapes and dtypes (one multi-tensor call per dtype) gives
    what one optimizer per parameter gives, bit for bit, over several steps."""
    rng = np.random.default_rng(5)
    shapes, dts = [(3, 4), (0,), (50_000,), (7,)], [np.float32, np.float64, np.float32, np.float64]
    params = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dts)]
    alone = [p.copy() for p in params]
    cls = optim.OPTIMIZERS[name]
    opt = cls(params, backend=backend, **hyper)
    singles = [cls([p], backend=backend, **hyper) for p in alone]
    for _ in range(3):
        grads = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dts)]
        opt.step(grads)
        for o, g in zip(singles, grads):
            o.step([g.copy()])
    for i, (p, q) in enumerate(zip(params, alone)):
        assert_same(p, q)
        for k, a in opt.state[i].items():
            assert_same(a, singles[i].state[0][k])


def test_optimizer_partial_state_groups_and_validates_first():
    """SGD after loading a state with a buffer for one parameter only: the parameter without
    one starts its buffer from the gradient (a second multi-tensor call); a bad gradient
    raises before either call writes."""
    ps = [np.ones(3), np.ones(2)]
    opt = optim.SGD(ps, lr=0.1, momentum=0.9)
    opt.load_state_dict({"optimizer": "SGD", "step_count": 1, "hyper": dict(opt.hyper),
                         "state": [{"momentum_buffer": np.full(3, 2.0)}, {}]})
    opt.step([np.ones(3), np.ones(2)])
    np.testing.assert_allclose(ps[0], 1 - 0.1 * (0.9 * 2.0 + 1.0))
    np.testing.assert_allclose(ps[1], 1 - 0.1 * 1.0)
    opt.load_state_dict({"optimizer": "SGD", "step_count": 1, "hyper": dict(opt.hyper),
                         "state": [{"momentum_buffer": np.full(3, 2.0)}, {}]})
    before = [p.copy() for p in ps]
    with pytest.raises(ValueError, match="overlap"):
        opt.step([np.ones(3), ps[0][:2]])  # grads[1] inside params[0]
    for p, b in zip(ps, before):
        assert_same(p, b)


# ---------------------------------------------------------------------------------------
# the benchmark report runs

def test_bench_quick_smoke(tmp_path):
    """``python -m fastgd.bench --quick`` with tiny sizes and budget; checks the report's
    structure, not speed."""
    out = tmp_path / "b.json"
    env = dict(os.environ, FASTGD_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "fastgd.bench", "--quick", "--sizes", "100,2000", "--kernels",
                        "adam,lion", "--budget", "0.01", "--json", str(out), "--no-torch", "--threads", "1"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "| adam | float32 | 1e2 |" in r.stdout and "ratio" in r.stdout
    import json
    data = json.loads(out.read_text())
    assert {row["kernel"] for row in data["rows"]} == {"adam", "lion"}
    assert all(row["seconds"] > 0 and row["of_skeleton"] > 0 for row in data["rows"])
    assert data["multi"] and data["machine"]["cpu"]


def test_bench_rejects_bad_options():
    r = subprocess.run([sys.executable, "-m", "fastgd.bench", "--kernels", "nope"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "unknown nope" in r.stderr


def test_fast_overlap_check_agrees_with_brute_force():
    """The C fast accept (radix-sorted byte ranges) against an O(n^2) pairwise check, on
    random views of one buffer: many overlap, many do not; read-only lists may overlap
    each other."""
    from fastgd._cython import _rules
    rng = np.random.default_rng(11)
    buf = np.zeros(4000)
    seen = set()
    for trial in range(300):
        T = int(rng.integers(1, 6))
        lists = []
        for k in range(3):
            lst = []
            for t in range(T):
                lo = int(rng.integers(0, 3990 if trial % 2 else 400))
                lst.append(buf[lo:lo + 8])
            lists.append(lst)
        ranges = [(a.__array_interface__["data"][0], a.nbytes, k != 1) for k, lst in enumerate(lists) for a in lst]
        ok = all(not (w1 or w2) or a + n <= b or b + m <= a
                 for i, (a, n, w1) in enumerate(ranges) for (b, m, w2) in ranges[i + 1:])
        seen.add(ok)
        assert bool(_rules.multi_arrays_ok(tuple(lists), 1, 0)) == ok
    assert seen == {True, False}


# ---------------------------------------------------------------------------------------
# flat_buffer: many tensors as views of one buffer

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flat_buffer_views(dtype):
    shapes = [(3, 5), (7,), (), (0,), (4, 4, 4), 33]
    buf, views = fastgd.multi.flat_buffer(shapes, dtype)
    assert buf.dtype == dtype and buf.ndim == 1 and not buf.any()
    assert [v.shape for v in views] == [(3, 5), (7,), (), (0,), (4, 4, 4), (33,)]
    for v in views:
        assert v.dtype == dtype and v.flags.c_contiguous and v.flags.writeable
        assert np.shares_memory(v, buf) or v.size == 0
        if v.size:
            assert v.ctypes.data % 64 == 0
    for i, a in enumerate(views):  # disjoint
        for b in views[i + 1:]:
            assert not np.shares_memory(a, b)
    for k, v in enumerate(views):  # writing a view writes the buffer, and nothing else
        v[...] = k + 1
    assert buf.sum() == sum((k + 1) * v.size for k, v in enumerate(views))


@pytest.mark.parametrize("bad, exc", [([(2, -1)], ValueError), ([("a",)], TypeError), ([None], TypeError),
                                      ("33", TypeError), (5, TypeError)])
def test_flat_buffer_rejects(bad, exc):
    with pytest.raises(exc):
        fastgd.multi.flat_buffer(bad)
    with pytest.raises(TypeError, match="dtype"):
        fastgd.multi.flat_buffer([(2,)], np.int32)


def test_steps_on_flat_buffer_views_match_separate_arrays(backend):
    """The multi step over views of flat buffers, and one single-tensor step over the whole
    buffers, give exactly the values of the multi step over separate arrays; the gaps between
    the views stay zero."""
    rng = np.random.default_rng(5)
    shapes = [(17,), (4, 9), (100,), (3,)]
    sep = [[rng.standard_normal(s) for s in shapes] for _ in range(2)]
    sep += [[0.1 * g for g in sep[1]], [g * g for g in sep[1]]]
    flat, flat_views, whole, whole_views = [], [], [], []
    for lst in sep:
        b1, v1 = fastgd.multi.flat_buffer(shapes, np.float64)
        b2, v2 = fastgd.multi.flat_buffer(shapes, np.float64)
        for a, x, y in zip(lst, v1, v2):
            x[...] = a
            y[...] = a
        flat.append(b1), flat_views.append(v1), whole.append(b2), whole_views.append(v2)
    for step in (1, 2, 3):
        fastgd.multi.adam_step(*sep, step=step, lr=0.01, weight_decay=0.1, backend=backend)
        fastgd.multi.adam_step(*flat_views, step=step, lr=0.01, weight_decay=0.1, backend=backend)
        fastgd.adam_step(*whole, step=step, lr=0.01, weight_decay=0.1, backend=backend)
    for lst, v1, v2 in zip(sep, flat_views, whole_views):
        for a, x, y in zip(lst, v1, v2):
            np.testing.assert_array_equal(x, a)
            np.testing.assert_array_equal(y, a)
    for b1, b2 in zip(flat, whole):
        mask = np.ones(b1.size, bool)
        off = 0
        for s in shapes:
            n = int(np.prod(s))
            mask[off:off + n] = False
            off += -(-n // 8) * 8
        assert not b1[mask].any() and not b2[mask].any()


_WHOLE_BUFFER_CALLS = {
    "sgd": (1, lambda p, g, s, b: fastgd.sgd_step(p, g, s[0], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1,
                                                  backend=b)),
    "adam": (2, lambda p, g, s, b: fastgd.adam_step(p, g, *s, step=3, weight_decay=0.1, backend=b)),
    "adamw": (2, lambda p, g, s, b: fastgd.adamw_step(p, g, *s, step=3, backend=b)),
    "adamax": (2, lambda p, g, s, b: fastgd.adamax_step(p, g, *s, step=3, weight_decay=0.1, backend=b)),
    "nadam": (2, lambda p, g, s, b: fastgd.nadam_step(p, g, *s, step=3, weight_decay=0.1, backend=b)),
    "radam": (2, lambda p, g, s, b: fastgd.radam_step(p, g, *s, step=7, weight_decay=0.1, backend=b)),
    "adagrad": (1, lambda p, g, s, b: fastgd.adagrad_step(p, g, s[0], step=3, weight_decay=0.1, backend=b)),
    "adadelta": (2, lambda p, g, s, b: fastgd.adadelta_step(p, g, *s, weight_decay=0.1, backend=b)),
    "rmsprop": (3, lambda p, g, s, b: fastgd.rmsprop_step(p, g, s[0], momentum_buffer=s[1], grad_avg=s[2],
                                                          momentum=0.9, centered=True, weight_decay=0.1, backend=b)),
    "lion": (1, lambda p, g, s, b: fastgd.lion_step(p, g, s[0], weight_decay=0.1, backend=b)),
}


@pytest.mark.parametrize("rule", sorted(_WHOLE_BUFFER_CALLS))
def test_whole_flat_buffer_step_keeps_param_gaps_zero(rule, backend):
    """Stepping whole flat buffers with a single-tensor call: the views get the values of
    stepping them one by one, and the parameter buffer's gaps stay zero, for every rule."""
    n_state, call = _WHOLE_BUFFER_CALLS[rule]
    rng = np.random.default_rng(9)
    shapes = [(5,), (3, 3), (20,)]
    bufs, views = zip(*[fastgd.multi.flat_buffer(shapes, np.float32) for _ in range(2 + n_state)])
    for k, vs in enumerate(views):
        for v in vs:
            v[...] = np.abs(rng.standard_normal(v.shape)) * 0.1 if k >= 2 else rng.standard_normal(v.shape)
    if rule == "rmsprop":  # grad_avg starts at zero (centered: square_avg - grad_avg**2 must stay >= 0)
        bufs[4][...] = 0
    singles = [[v.copy() for v in vs] for vs in views]
    for _ in range(2):
        call(bufs[0], bufs[1], list(bufs[2:]), backend)
        for t in range(len(shapes)):
            call(singles[0][t], singles[1][t], [s[t] for s in singles[2:]], backend)
    for vs, ss in zip(views, singles):
        for v, s in zip(vs, ss):
            np.testing.assert_array_equal(v, s)
    in_view = np.zeros(bufs[0].size, bool)
    for v in views[0]:
        off = (v.ctypes.data - bufs[0].ctypes.data) // v.itemsize
        in_view[off:off + v.size] = True
    assert not bufs[0][~in_view].any()


@pytest.mark.parametrize("shapes,exc,msg", [
    ([(2.7, 3)], TypeError, r"shapes\[0\] must be a tuple of ints"), (["12"], TypeError, "tuple of ints"),
    ([(3,), (True, 3)], TypeError, r"shapes\[1\] must be a tuple of ints"), ([(-1,)], ValueError, "negative"),
    ([(10 ** 20,)], ValueError, "more than an array can hold"),
    ([(2 ** 32, 2 ** 32)], ValueError, "more than an array can hold")])  # int64 product wraps to 0
def test_flat_buffer_refuses_bad_shapes(shapes, exc, msg):
    with pytest.raises(exc, match=msg):
        M.flat_buffer(shapes)
