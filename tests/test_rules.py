"""The rule table (fastgd/_rules.py) is the one source of truth: the public signatures, the
backends' kernel lists and the optimizer classes agree with it; the kernels equal the
reference bit for bit; the C fast accepts never accept what the named checks refuse; the
Cython kernels let other Python threads run."""
import inspect
import sys
import threading

import numpy as np
import pytest

import fastgd
import fastgd.multi as M
import fastgd.optim as O
from fastgd import _validate as V
from fastgd._rules import EXTRAS, KERNELS, RULES
from fastgd.backends import backend_module

RULE_NAMES = tuple(RULES)


# ---------------------------------------------------------------------------------------
# signatures and kernel lists

def _keyword_defaults(fn, skip):
    sig = inspect.signature(fn)
    return {n: p.default for n, p in sig.parameters.items()
            if p.kind is p.KEYWORD_ONLY and n not in skip}


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_step_function_defaults_equal_the_table(rule):
    """fastgd.<rule>_step and fastgd.multi.<rule>_step: every hyperparameter keyword with
    the table's default (a required keyword where the table has None), nothing else."""
    r = RULES[rule]
    hyper = {h.name: (inspect.Parameter.empty if h.default is None else h.default) for h in r.hyper}
    single_state = {s.name for s in r.state}
    multi_state = {s.multi for s in r.state}
    for fn, state, k in ((getattr(fastgd, rule + "_step"), single_state, 0), (getattr(M, rule + "_step"), multi_state, 1)):
        # the hyperparameters, then the fused extras of every rule (default None)
        expected = dict(hyper, **{e[k]: None for e in EXTRAS})
        got = _keyword_defaults(fn, state | {"backend", "step"})
        assert got == expected, fn.__qualname__
        assert list(got) == list(expected), "%s: keywords not in the table's order" % fn.__qualname__
        params = inspect.signature(fn).parameters
        if r.step is None:
            assert "step" not in params
        else:
            want = inspect.Parameter.empty if r.step == "required" else None
            assert params["step"].default is want
        # the state arrays: always-needed ones positional, in the table's order
        positional = [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
        names = [s.name if fn.__module__ == "fastgd.steps" else s.multi for s in r.state]
        assert positional[2:] == [n for n in names if n in positional[2:]]
        assert set(names) <= set(params)


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_optimizer_defaults_equal_the_table(rule):
    r = RULES[rule]
    cls = getattr(O, r.optimizer)
    sig = inspect.signature(cls.__init__).parameters
    expected = dict(r.defaults, **r.optim_defaults)
    if r.betas:
        expected["betas"] = (expected.pop(r.betas[0]), expected.pop(r.betas[1]))
    for h in r.optim_hyper:
        expected[h.name] = h.default
    # the constructor options (backend, state dtype, master weights, clipping) are not hyperparameters
    got = {n: p.default for n, p in sig.items() if n not in ("self", "params") + O._OPTIONS}
    assert got == expected


def test_every_backend_has_every_kernel_of_the_table(backend):
    mod = backend_module(backend)
    for k in KERNELS:
        assert callable(getattr(mod, k, None)), "%s has no %s kernel" % (backend, k)
    assert set(KERNELS) == {r.kernel for r in RULES.values()}
    if backend == "cython":
        for k in KERNELS:
            assert callable(getattr(mod, k + "_multi", None)), "cython has no %s_multi" % k


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_kernel_signatures_name_the_table_state(rule):
    """The reference kernel takes param, grad and the table's state arrays in order."""
    r = RULES[rule]
    ref = getattr(backend_module("numpy"), r.kernel)
    params = list(inspect.signature(ref).parameters)
    arrays = [s.name for s in r.state if not s.scalar]
    assert params[:2 + len(arrays)] == ["param", "grad"] + arrays
    kw = r.check(**{h.name: (0.1 if h.default is None else h.default) for h in r.hyper},
                 **({"step": 3} if r.step else {}))
    if any(s.scalar for s in r.state):
        kw["mu_product"] = 1.0
    assert set(kw) == set(params[2 + len(arrays):])


# ---------------------------------------------------------------------------------------
# bit-identical to the reference: every rule, its optional state on, several steps, both
# dtypes, 1 and 2 threads, compared with ==

# hyperparameters that switch every option of a rule on (optional state, weight decay, ...)
_ALL_ON = {
    "sgd": dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "adam": dict(lr=0.01, amsgrad=True, weight_decay=0.1),
    "adamw": dict(lr=0.01, amsgrad=True),
    "adamax": dict(lr=0.01, weight_decay=0.1),
    "nadam": dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    "radam": dict(lr=0.01, beta2=0.9, weight_decay=0.1),  # beta2=0.9: the rectified branch from step 6
    "adagrad": dict(lr=0.1, lr_decay=0.01, weight_decay=0.1),
    "adadelta": dict(lr=0.5, weight_decay=0.1),
    "rmsprop": dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1),
    "lion": dict(lr=0.01, weight_decay=0.1),
}


def _state(rule, p):
    return {s.name: (np.ones(1) if s.scalar else np.zeros_like(p)) for s in RULES[rule].state}


def _call(rule, p, g, st, t, hyper, backend, maximize):
    r = RULES[rule]
    kw = dict(hyper, maximize=maximize, backend=backend)
    if r.step is not None:
        kw["step"] = t
    positional = []
    sig = inspect.signature(getattr(fastgd, rule + "_step")).parameters
    for s in r.state:
        if sig[s.name].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            positional.append(st[s.name])
        else:
            kw[s.name] = st[s.name]
    getattr(fastgd, rule + "_step")(p, g, *positional, **kw)


def _trajectory(rule, backend, dtype, n, maximize, steps=7):
    rng = np.random.default_rng(abs(hash((rule, n))) % 2 ** 32)
    p = rng.standard_normal(n).astype(dtype)
    st = _state(rule, p)
    for t in range(1, steps + 1):
        g = rng.standard_normal(n).astype(dtype)
        if t == 3:
            g[:3] = 0.0  # exact zeros (sign, division by the accumulator)
        _call(rule, p, g, st, t, _ALL_ON[rule], backend, maximize)
    return p, st


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rule", RULE_NAMES)
def test_kernels_equal_the_reference_bit_for_bit(rule, compiled_backend, dtype, threads, restore_globals):
    fastgd.set_num_threads(threads)
    fastgd.set_serial_cutoff(0 if threads > 1 else 1 << 40)
    for n, maximize in ((1, False), (37, True), (5003, False)):
        p_ref, st_ref = _trajectory(rule, "numpy", dtype, n, maximize)
        p, st = _trajectory(rule, compiled_backend, dtype, n, maximize)
        assert np.array_equal(p, p_ref, equal_nan=True), (rule, n, int(np.sum(p != p_ref)))
        for k in st:
            assert np.array_equal(st[k], st_ref[k], equal_nan=True), (rule, n, k)


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_multi_equals_the_reference_bit_for_bit(rule, compiled_backend, restore_globals):
    """The multi-tensor kernels (their own compiled loop on cython) against the reference's
    single-tensor steps, mixed dtypes and sizes in one call."""
    fastgd.set_serial_cutoff(0)
    r = RULES[rule]
    sizes = [(3, np.float32), (4099, np.float64), (1, np.float64), (40000, np.float32)]
    rng = np.random.default_rng(7)
    ps = [rng.standard_normal(n).astype(d) for n, d in sizes]
    ref = [p.copy() for p in ps]
    sts = [_state(rule, p) for p in ps]
    st_ref = [_state(rule, p) for p in ps]
    mu = np.ones(1) if any(s.scalar for s in r.state) else None
    for t in range(1, 6):
        gs = [rng.standard_normal(p.shape).astype(p.dtype) for p in ps]
        kw = dict(_ALL_ON[rule], backend=compiled_backend)
        if r.step is not None:
            kw["step"] = t
        positional = []
        sig = inspect.signature(getattr(M, rule + "_step")).parameters
        for s in r.state:
            if s.scalar:
                positional.append(mu)
                continue
            lst = [st[s.name] for st in sts]
            if sig[s.multi].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
                positional.append(lst)
            else:
                kw[s.multi] = lst
        getattr(M, rule + "_step")(ps, gs, *positional, **kw)
        for p, g, st in zip(ref, gs, st_ref):  # each tensor's own mu_product advances alike
            _call(rule, p, g, st, t, _ALL_ON[rule], "numpy", False)
    for p, q in zip(ps, ref):
        assert np.array_equal(p, q), rule
    for st, sq in zip(sts, st_ref):
        for s in r.state:
            if s.scalar:
                assert np.array_equal(mu, sq[s.name]), (rule, s.name)
            else:
                assert np.array_equal(st[s.name], sq[s.name]), (rule, s.name)


# ---------------------------------------------------------------------------------------
# the C fast accepts never accept what the named checks refuse

def _bad_inputs(dtype):
    """(description, make(arrays) -> arrays): one change to a valid set of arrays."""
    def at(k, f):
        def make(arrs):
            arrs = list(arrs)
            arrs[k] = f(arrs[k])
            return tuple(arrs)
        return make

    def unaligned(a):
        buf = np.zeros(a.nbytes + 1, np.uint8)
        return np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)

    def readonly(a):
        a = a.copy()
        a.flags.writeable = False
        return a

    out = []
    for k in range(3):
        out += [
            ("None at %d" % k, at(k, lambda a: None)),
            ("matrix at %d" % k, at(k, np.asmatrix)),
            ("masked at %d" % k, at(k, lambda a: np.ma.masked_array(a))),
            ("subclass at %d" % k, at(k, lambda a: a.view(type("Sub", (np.ndarray,), {})))),
            ("unaligned at %d" % k, at(k, unaligned)),
            ("byte-swapped at %d" % k, at(k, lambda a: a.astype(a.dtype.newbyteorder(">")))),
            ("fortran at %d" % k, at(k, np.asfortranarray)),
            ("strided at %d" % k, at(k, lambda a: np.repeat(a, 2, axis=1)[:, ::2])),
            ("int64 at %d" % k, at(k, lambda a: a.astype(np.int64))),
            ("other float at %d" % k, at(k, lambda a: a.astype(np.float64 if a.dtype == np.float32 else np.float32))),
            ("wrong shape at %d" % k, at(k, lambda a: np.zeros(a.shape[::-1], a.dtype))),
            ("list at %d" % k, at(k, lambda a: a.tolist())),
        ]
        if k != 1:
            out.append(("read-only at %d" % k, at(k, readonly)))
    out.append(("overlap 0/2", lambda arrs: (arrs[0], arrs[1], arrs[0])))
    out.append(("overlap 1/2", lambda arrs: (arrs[0], arrs[1], arrs[1])))
    return out


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix, deliberately
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_array_accept_never_accepts_what_the_checks_refuse(dtype):
    from fastgd._cython import _core
    names = ("param", "grad", "exp_avg")
    for what, make in _bad_inputs(dtype):
        arrs = make(tuple(np.full((2, 3), 0.5, dtype) for _ in range(3)))
        with pytest.raises((TypeError, ValueError)):
            V.arrays(names, arrs, 1, 0)
        assert not _core.arrays_ok(arrs, 1, 0), what
    # None only where ``optional`` allows it
    arrs = (np.ones(3), np.ones(3), None)
    assert _core.arrays_ok(arrs, 1, 1 << 2) and V.arrays(names, arrs, 1, 1 << 2)
    assert not _core.arrays_ok(arrs, 1, 1 << 1)
    with pytest.raises(TypeError, match="exp_avg is required, got None"):
        V.arrays(names, arrs, 1, 1 << 1)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_multi_accept_never_accepts_what_the_checks_refuse(dtype):
    from fastgd._cython import multi_arrays_ok
    names = ("params", "grads", "exp_avgs")
    for what, make in _bad_inputs(dtype):
        good = [tuple(np.full((2, 3), 0.5, dtype) for _ in range(3)) for _ in range(2)]
        bad = make(good[1])
        lists = tuple([good[0][k], bad[k]] for k in range(3))
        with pytest.raises((TypeError, ValueError)):
            M._check_arrays(names, lists, 1, 0)
        assert not multi_arrays_ok(lists, 1, 0), what
    lists = ([np.ones(2)], [np.ones(2)], None)
    assert multi_arrays_ok(lists, 1, 1 << 2)
    assert not multi_arrays_ok(lists, 1, 0)
    with pytest.raises(TypeError, match="exp_avgs is required, got None"):
        M._check_arrays(names, lists, 1, 0)


def _half_dtypes():
    out = [np.dtype(np.float16)]
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - in the [test] extra
        return out
    return out + [np.dtype(ml_dtypes.bfloat16)]


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
@pytest.mark.parametrize("half", _half_dtypes(), ids=str)
@pytest.mark.parametrize("state", ["float32", "half"])
def test_fast_half_accepts_never_accept_what_the_checks_refuse(half, state):
    """The half-precision fast accepts (``_core.half_arrays_ok``, single tensor, and
    ``multi_arrays_ok``) against the named checks: every one-change variant of a valid call
    refused by V.arrays / fastgd.multi's checks is refused by them; the valid calls are
    accepted, multi as "call per dtype combination" (2); ``arrays_ok``, whose True makes the
    callers run a float32/float64 kernel, never accepts a half-precision param."""
    from fastgd._cython import _core, multi_arrays_ok
    sd = np.dtype(np.float32) if state == "float32" else half
    names = ("param", "grad", "exp_avg", "exp_avg_sq")
    mnames = ("params", "grads", "exp_avgs", "exp_avg_sqs")

    def good():
        return (np.full((2, 3), 0.5, half), np.full((2, 3), 0.25, half), np.zeros((2, 3), sd), np.ones((2, 3), sd))

    other_half = [d for d in _half_dtypes() if d != half]
    cases = [(w, m) for w, m in _bad_inputs(half) if not w.startswith(("other float", "overlap"))]

    def at(k, f):
        return lambda arrs: arrs[:k] + (f(arrs[k]),) + arrs[k + 1:]
    cases += [("float32 param", at(0, lambda a: a.astype(np.float32))),
              ("float32 grad", at(1, lambda a: a.astype(np.float32))),
              ("float64 state", at(2, lambda a: a.astype(np.float64))),
              ("float64 state at 3", at(3, lambda a: a.astype(np.float64))),
              ("states of two dtypes", at(3, lambda a: a.astype(np.float32 if sd == half else half))),
              ("int16 state", at(2, lambda a: a.astype(np.int16))),
              ("uint16 param", at(0, lambda a: a.view(np.uint16))),
              ("overlap 0/3", lambda arrs: arrs[:3] + (arrs[0],) if sd == half else arrs[:3] + (arrs[0].view(np.float32).reshape(-1)[:6].reshape(2, 3),)),
              ("overlap 2/3", lambda arrs: arrs[:3] + (arrs[2],))]
    cases += [("other half grad", at(1, lambda a, d=d: a.astype(d))) for d in other_half]
    for what, make in cases:
        try:
            arrs = make(good())
        except (TypeError, ValueError):  # a variant this dtype cannot be made in (byte-swapped bfloat16)
            continue
        with pytest.raises((TypeError, ValueError)):
            V.arrays(names, arrs, 1, 0)
        assert not _core.half_arrays_ok(arrs, 1, 0), what
        assert not _core.arrays_ok(arrs, 1, 0), what
        ok_arrs = good()
        lists = tuple([ok_arrs[k], arrs[k]] for k in range(4))
        with pytest.raises((TypeError, ValueError)):
            M._check_arrays(mnames, lists, 1, 0)
        assert not multi_arrays_ok(lists, 1, 0), what
    arrs = good()
    assert V.arrays(names, arrs, 1, 0) == half
    assert _core.half_arrays_ok(arrs, 1, 0) and not _core.arrays_ok(arrs, 1, 0)
    assert _core.half_arrays_ok(arrs[:3] + (None,), 1, 1 << 3) and not _core.half_arrays_ok(arrs[:3] + (None,), 1, 0)
    assert multi_arrays_ok(tuple([a, b] for a, b in zip(good(), good())), 1, 0) == 2
    # tensors of different combinations in one call: accepted, each combination its own kernel call
    mixed = (np.full(3, 0.5, np.float32), np.full(3, 0.5, np.float32), np.zeros(3, np.float32), np.ones(3, np.float32))
    assert multi_arrays_ok(tuple([a, b] for a, b in zip(good(), mixed)), 1, 0) == 2
    assert not _core.half_arrays_ok(mixed, 1, 0)


@pytest.mark.parametrize("rule", ["sgd", "rmsprop", "adam"])
def test_none_inside_an_optional_list_is_refused(rule, backend):
    """An optional state list that is used must hold arrays: None inside it would reach the
    kernel as a NULL pointer."""
    ps, gs = [np.ones(3), np.ones(3)], [np.ones(3), np.ones(3)]
    before = [p.copy() for p in ps]
    if rule == "sgd":
        call = lambda: M.sgd_step(ps, gs, [np.zeros(3), None], lr=0.1, momentum=0.9, backend=backend)
        name = r"momentum_buffers\[1\]"
    elif rule == "rmsprop":
        call = lambda: M.rmsprop_step(ps, gs, [np.zeros(3), np.zeros(3)], momentum=0.9,
                                      momentum_buffers=[None, np.zeros(3)], backend=backend)
        name = r"momentum_buffers\[0\]"
    else:
        call = lambda: M.adam_step(ps, gs, [np.zeros(3), np.zeros(3)], [np.zeros(3), np.zeros(3)], step=1,
                                   amsgrad=True,
                                   max_exp_avg_sqs=[np.zeros(3), None], backend=backend)
        name = r"max_exp_avg_sqs\[1\]"
    with pytest.raises(TypeError, match=name + " is required, got None"):
        call()
    assert all(np.array_equal(p, b) for p, b in zip(ps, before))


def test_mu_product_may_not_overlap_the_arrays(backend):
    p, g, m, v = (np.ones(4) for _ in range(4))
    before = p.copy()
    with pytest.raises(ValueError, match="mu_product and exp_avg overlap"):
        fastgd.nadam_step(p, g, m, v, m[1:2], step=1, backend=backend)
    v2 = np.ones(4)
    with pytest.raises(ValueError, match=r"mu_product and exp_avg_sqs\[1\] overlap"):
        M.nadam_step([p, g.copy()], [g, g.copy()], [m, m.copy()], [v, v2], v2[2:3], step=1, backend=backend)
    assert np.array_equal(p, before)


@pytest.mark.parametrize("step", [10 ** 400, 2 ** 53 + 1], ids=["10**400", "2**53+1"])
def test_huge_step_is_a_named_error_before_any_write(step, backend):
    p = np.ones(3)
    with pytest.raises(ValueError, match="step must be <= 2\\*\\*53"):
        fastgd.adamw_step(p, np.ones(3), np.zeros(3), np.zeros(3), step=step, backend=backend)
    assert np.array_equal(p, np.ones(3))


def test_huge_numbers_are_named(backend):
    p = np.ones(3)
    with pytest.raises(ValueError, match="lr is too large for a float"):
        fastgd.sgd_step(p, np.ones(3), lr=10 ** 400, backend=backend)


def test_inf_learning_rate_runs_as_in_the_reference(backend):
    """lr=inf is a valid (if useless) float: the kernels compute what the reference does
    (it used to raise a complex-conversion error in Cython's power)."""
    out = {}
    for b in (backend, "numpy"):
        p = np.array([1.0, -1.0, 0.0])
        with np.errstate(all="ignore"):
            fastgd.adam_step(p, np.array([1.0, 0.0, -2.0]), np.zeros(3), np.zeros(3), step=1, lr=float("inf"),
                             backend=b)
        out[b] = p
    assert np.array_equal(out[backend], out["numpy"], equal_nan=True)


# ---------------------------------------------------------------------------------------
# the GIL

def test_cython_kernels_let_other_threads_run(restore_globals):
    """With one thread (the serial loop, which used to hold the GIL) another Python thread
    must make progress *during* a large step.  The switch interval is set to 0.5 s, far
    longer than one call (~5 ms), so the other thread can only run inside a call if the kernel
    released the GIL (the old kernels: 0 increments in all calls).  Up to 10 calls, in
    case the machine is busy and the other thread is not scheduled during one; after the
    first that lets it run, that call waits up to 0.5 s for the GIL back."""
    fastgd.set_num_threads(1)
    n = 4_000_000
    p, g, m, v = (np.full(n, 0.5, np.float32) for _ in range(4))
    fastgd.adam_step(p, g, m, v, step=1, backend="cython")  # warm: pages touched
    counter = [0]
    stop = threading.Event()
    started = threading.Event()

    def spin():
        started.set()
        while not stop.is_set():
            counter[0] += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(0.5)  # before the thread starts: its first wait for the GIL uses it too
    th = threading.Thread(target=spin, daemon=True)
    th.start()
    started.wait()  # main gets the GIL back after <= 0.5 s; the spinner then waits 0.5 s
    try:
        advanced = 0
        for t in range(2, 12):
            before = counter[0]
            fastgd.adam_step(p, g, m, v, step=t, backend="cython")
            advanced += counter[0] - before
            if advanced:
                break
    finally:
        sys.setswitchinterval(old)
        stop.set()
        th.join()
    assert advanced > 0


def _cython_or_skip():
    try:
        backend_module("cython")
    except RuntimeError as exc:  # pragma: no cover
        pytest.skip(str(exc))


@pytest.fixture(autouse=True)
def _need_cython(request):
    if "fast" in request.node.name or "let_other_threads" in request.node.name:
        _cython_or_skip()
    yield


# (rule, the unused optional array's keyword, hyperparameters that leave it unused)
_UNUSED = [("sgd", "momentum_buffer", dict(lr=0.1)), ("adam", "max_exp_avg_sq", dict(step=1)),
           ("rmsprop", "momentum_buffer", dict()), ("rmsprop", "grad_avg", dict())]


@pytest.mark.parametrize("rule,name,hyper", _UNUSED, ids=["%s-%s" % c[:2] for c in _UNUSED])
def test_unused_optional_arrays_are_checked_when_given_and_left_alone(rule, name, hyper, backend):
    """An optional state array the options do not use is still validated when passed (a
    wrong one is an error, as it would be with the option on) and is never written."""
    r = RULES[rule]
    p, g = np.ones(4), np.ones(4)
    pos = [np.zeros(4) for s in r.state if s.when is None]
    fn = getattr(fastgd, rule + "_step")
    with pytest.raises(ValueError, match="%s has shape" % name):
        fn(p, g, *pos, **{name: np.zeros(5)}, backend=backend, **hyper)
    multi_name = next(s.multi for s in r.state if s.name == name)
    with pytest.raises(TypeError, match=r"%s\[0\] has dtype float32" % multi_name):
        getattr(M, rule + "_step")([p], [g], *[[a] for a in pos], **{multi_name: [np.zeros(4, np.float32)]},
                                   backend=backend, **hyper)
    assert np.array_equal(p, np.ones(4))
    unused = np.full(4, 7.0)
    fn(p, g, *pos, **{name: unused}, backend=backend, **hyper)
    assert np.array_equal(unused, np.full(4, 7.0)) and not np.array_equal(p, np.ones(4))


# ---------------------------------------------------------------------------------------
# found by a hostile tester: each of these crashed, hung, or wrote before raising

_GC_SWAP = r"""
import gc, numpy as np, fastgd
params = [np.zeros(16)]; grads = [np.ones(16)]; good = grads[0]; n = [0]
def cb(phase, info):
    n[0] += 1
    grads[0] = None if n[0] % 4 == 0 else good          # the caller's list changes under the call
gc.callbacks.append(cb); gc.set_threshold(1)
for i in range(3000):
    try:
        fastgd.multi.sgd_step(params, grads, lr=0.1, backend=BACKEND)
    except TypeError as exc:
        assert "grads[0] is required" in str(exc), exc
print("ok")
"""


def test_multi_reads_what_it_checked_even_if_the_callers_lists_change(backend):
    """A gc callback (or another thread) swapping entries of the caller's lists between the
    checks and the kernel: the kernel must see the checked arrays (the lists are copied)."""
    import os
    import subprocess
    # run from the folder holding the fastgd the tests imported: with -c the cwd comes first
    # on the path, and in CI the cwd is a checkout without the compiled extensions
    root = os.path.dirname(os.path.dirname(os.path.realpath(fastgd.__file__)))
    proc = subprocess.run([sys.executable, "-c", _GC_SWAP.replace("BACKEND", repr(backend))], capture_output=True,
                          text=True, env=dict(os.environ), timeout=300, cwd=root)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])


def test_backend_name_must_be_exactly_a_str():
    class Name(str):
        def __hash__(self):  # would run between the checks and the kernel
            raise AssertionError("user code ran")
    p = np.ones(3)
    with pytest.raises(TypeError, match="backend must be a str, got Name"):
        fastgd.sgd_step(p, np.ones(3), lr=0.1, backend=Name("numpy"))
    assert np.array_equal(p, np.ones(3))


@pytest.mark.parametrize("value", [1.0 / fastgd.reference.rules.nadam_mu(1, 0.9, 4e-3), 1.5, -0.1, float("nan")])
def test_mu_product_outside_its_range_is_refused(value, backend):
    """P_{t-1} is a product of mu_i in [0, beta1): a value above 1 can make 1 - P mu zero (the
    backends then disagreed: inf, ZeroDivisionError, or a write before the error)."""
    p, g, m, v = (np.full(3, 0.5) for _ in range(4))
    before = [a.copy() for a in (p, m, v)]
    with pytest.raises(ValueError, match=r"mu_product must be in \[0, 1\]"):
        fastgd.nadam_step(p, g, m, v, np.array([value]), step=1, weight_decay=0.5, decoupled_weight_decay=True,
                          backend=backend)
    assert all(np.array_equal(a, b) for a, b in zip((p, m, v), before))
    fastgd.nadam_step(p, g, m, v, np.zeros(1), step=1, backend=backend)  # 0 is a valid product (beta1=0)


def test_reference_runs_ieee_whatever_the_numpy_error_state():
    """np.seterr(all="raise") or warnings-as-errors must not stop the reference halfway (it
    wrote exp_avg, then raised): it computes inf/NaN as the compiled kernels do."""
    import warnings
    out = {}
    for b in ("cython", "numpy"):
        p = np.ones(4, np.float32)
        g = np.array([1e30, -1e30, 0.0, 3e38], np.float32)
        m, v = np.zeros(4, np.float32), np.zeros(4, np.float32)
        with np.errstate(all="raise"), warnings.catch_warnings():
            warnings.simplefilter("error")
            fastgd.adam_step(p, g, m, v, step=1, eps=0.0, backend=b)
        out[b] = (p, m, v)
    for x, y in zip(out["cython"], out["numpy"]):
        assert np.array_equal(x, y, equal_nan=True)


def test_nan_sign_is_the_same_on_every_backend(backend):
    """maximize negates by multiplying with -1 (sign * g), as the kernels do: NaN keeps its sign."""
    g = np.array([np.nan, -np.nan, 1.0])
    p = np.zeros(3)
    fastgd.sgd_step(p, g, lr=1.0, maximize=True, backend=backend)
    q = np.zeros(3)
    fastgd.sgd_step(q, g, lr=1.0, maximize=True, backend="numpy")
    assert np.array_equal(np.signbit(p), np.signbit(q)) and list(np.signbit(p[:2])) == [False, True]


def test_recomputed_mu_product_is_bounded(monkeypatch):
    """Without mu_product NAdam recomputes P_{t-1} in a loop of step - 1 multiplications:
    it stops once the product no longer changes (underflowed), and refuses more than 10**7 steps
    that it would really have to loop over (it used to hang at step=2**53)."""
    assert fastgd.nadam_mu_product(10 ** 6) == fastgd.nadam_mu_product(20_000) <= 5e-324  # underflowed by then
    p = np.zeros(0)
    fastgd.nadam_step(p, p.copy(), p.copy(), p.copy(), step=2 ** 53)  # returns soon: the product underflowed
    from fastgd import steps
    monkeypatch.setattr(steps, "_MU_PRODUCT_MAX_STEPS", 1000)  # 10**7 takes seconds to reach
    with pytest.raises(ValueError, match="beyond 1000 steps pass the running product"):
        fastgd.nadam_mu_product(2 ** 53, beta1=1 - 1e-12, momentum_decay=float("inf"))  # mu_i = beta1: no underflow
    assert fastgd.nadam_mu_product(1000, beta1=0.5, momentum_decay=float("inf")) == 0.5 ** 1000


def test_hyperparameter_names_cannot_clash_with_the_generated_checks():
    from fastgd._rules import Hyper, Rule, State
    for bad in ("out", "kw", "V", "class"):
        with pytest.raises(ValueError, match="clash with the generated checks"):
            Rule("x", "sgd", [State("a")], [Hyper(bad, 0.0, "nonneg")])
