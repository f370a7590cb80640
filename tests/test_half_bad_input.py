"""Bad input to the half-precision steps and the fused extras (issue #10), each case in a
subprocess per backend (the shared harness of tests/_subprocess_cases.py: a crash fails the
test instead of ending the run).

Every case is one call with one thing wrong: a dtype combination outside the table (param and
grad of different dtypes, state of a dtype a param of that dtype does not take, state arrays
of mixed dtypes), a master copy where none is allowed or of the wrong dtype, shape, layout or
memory, ``grad_scale`` / ``found_inf`` / ``max_norm`` of the wrong kind or value, and the same
for ``fastgd.multi.unscale_and_check`` and ``global_norm``.  Each must raise TypeError
(a wrong kind) or ValueError (a wrong value, shape, layout or memory) whose message names the
argument (``grad``, ``exp_avg_sqs[1]``, ``master_params[1]``, ``grad_scale``...), and leave every
array it was given unchanged (every byte).  Every rule of the table, single and multi; in the
multi calls the bad tensor is tensor 1 (tensor 0 is a valid float16/float32-state one).

Before the bad cases, each valid baseline (every dtype combination, master weights, every kind
of extra) runs, so a bad case is bad only because of its one change.  Spec decisions taken
here: ``found_inf`` is only read by the steps, so a read-only one is valid there, but
``unscale_and_check`` writes it (a read-only one is a ValueError); the checks come before the
``found_inf`` skip (a bad call with ``found_inf=[1]`` is still an error).
"""
from _subprocess_cases import HELPERS, run_script

STEP_CASES = r'''
import inspect
import ml_dtypes
import fastgd.multi as M
from fastgd._rules import RULES

MULTI = MODE == "multi"
T, V = TypeError, ValueError
BF, F16, F32, F64 = (np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16), np.dtype(np.float32),
                     np.dtype(np.float64))
N = 6
HYPER = {"sgd": dict(lr=0.1, momentum=0.9), "adam": dict(amsgrad=True), "adamw": dict(amsgrad=True),
         "rmsprop": dict(momentum=0.9, centered=True)}


def state_names(rule):
    return [s.name for s in RULES[rule].state if not s.scalar]


def multi_name(rule, name):
    return next(s.multi for s in RULES[rule].state if s.name == name)


def tensor(rule, pdt, sdt, gdt=None, master=False, n=N):
    p = np.linspace(-1, 1, n).astype(pdt)
    g = np.linspace(0.5, -0.3, n).astype(gdt or pdt)
    st = {k: np.full(n, 0.25, sdt) for k in state_names(rule)}
    return dict(p=p, g=g, st=st, m=np.linspace(-1, 1, n).astype(F32) if master else None)


def arrays_of(tensors, mu):
    out = []
    for t in tensors:
        out += [t["p"], t["g"]] + list(t["st"].values()) + ([] if t["m"] is None else [t["m"]])
    return out + ([mu] if mu is not None else [])


AUTO = object()  # masters: each tensor's own "m"


def step_fn(rule, tensors, masters=AUTO, **extra):
    """The call (not yet made) of the single or multi step on ``tensors`` (one for single;
    tensor 0 valid and tensor 1 the one under test for multi), and the arrays to watch."""
    r = RULES[rule]
    fn = getattr(M if MULTI else fastgd, rule + "_step")
    sig = inspect.signature(fn).parameters
    kw = dict(HYPER.get(rule, {}), backend=BACKEND)
    if r.step is not None:
        kw["step"] = 2
    ts = tensors if MULTI else tensors[-1:]
    args = [[t["p"] for t in ts], [t["g"] for t in ts]] if MULTI else [ts[0]["p"], ts[0]["g"]]
    mu = None
    for s in r.state:
        if s.scalar:
            mu = np.full(1, 0.5)
            value, key = mu, s.multi if MULTI else s.name
        elif MULTI:
            value, key = [t["st"][s.name] for t in ts], s.multi
        else:
            value, key = ts[0]["st"][s.name], s.name
        if sig[key].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            args.append(value)
        else:
            kw[key] = value
    if masters is AUTO:
        if any(t["m"] is not None for t in ts):
            if MULTI:
                kw["master_params"] = [t["m"] for t in ts]
            else:
                kw["master_param"] = ts[0]["m"]
    elif masters is not None:
        kw["master_params" if MULTI else "master_param"] = masters
    kw.update(extra)

    def call():
        with np.errstate(all="ignore"):
            fn(*args, **kw)
    return call, [a for a in arrays_of(ts, mu) if isinstance(a, np.ndarray)]


def name(rule, n):
    """The regex of array ``n`` of the tensor under test: 'exp_avg' or 'exp_avgs[1]'."""
    if MULTI:
        multi = {"param": "params", "grad": "grads", "master_param": "master_params"}.get(n) or multi_name(rule, n)
        return re.escape(multi + "[1]")
    return r"\b%s\b" % n


def both(*parts):
    return "".join("(?=.*%s)" % p for p in parts)


def bad(label, exc, match, rule, tensors, masters=AUTO, watch=(), **extra):
    call, arrays = step_fn(rule, tensors, masters, **extra)
    case("%s %s %s" % (rule, MODE, label), exc, match, call, *arrays, *watch)


def valid(label, rule, tensors, **extra):
    call, arrays = step_fn(rule, tensors, **extra)
    try:
        call()
    except Exception as e:
        print("FAIL valid %s %s: %s(%r)" % (rule, label, type(e).__name__, str(e)))
    else:
        print("ok valid", rule, label)


def good0(rule, master=False):
    return tensor(rule, F16, F32, master=master)


def readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def base_and_views(pdt, n=N):
    """(buffer, param of dtype pdt over bytes 0.., a float32 array of N over bytes 8..): they overlap."""
    buf = np.zeros(64, np.uint8)
    p = buf[:n * np.dtype(pdt).itemsize].view(pdt)
    m = buf[8:8 + 4 * n].view(F32)
    return buf, p, m


for rule in RULES:
    names = state_names(rule)
    first, last = names[0], names[-1]

    # ---- valid baselines
    for pdt, sdt in ((F16, F32), (F16, F16), (BF, F32), (BF, BF), (F32, F32), (F64, F64)):
        valid("%s/%s" % (pdt.name, sdt.name), rule, [good0(rule), tensor(rule, pdt, sdt)])
    for pdt, sdt in ((F16, F32), (BF, BF)):
        valid("master %s/%s" % (pdt.name, sdt.name), rule, [good0(rule, True), tensor(rule, pdt, sdt, master=True)])
    ro = np.zeros(1, F32)
    ro.flags.writeable = False
    for extra in (dict(grad_scale=2.0), dict(grad_scale=np.array([3.0], F32)), dict(grad_scale=7),
                  dict(found_inf=np.zeros(1, F32)), dict(found_inf=ro), dict(found_inf=np.ones(1, F32)),
                  dict(max_norm=0.5), dict(max_norm=1), dict(grad_scale=np.float32(4.0), max_norm=1e30),
                  dict(grad_scale=np.array(2.0, F32)), dict(grad_scale=np.full((1, 1), 2.0, F32)),
                  dict(found_inf=np.zeros((1, 1), F32))):
        valid(repr(sorted(extra)), rule, [good0(rule), tensor(rule, BF, F32)], **extra)

    # ---- dtype combinations outside the table
    for pdt, gdt in ((F16, BF), (BF, F16), (F16, F32), (F32, F16), (BF, F64), (F64, BF), (F32, BF)):
        bad("param %s grad %s" % (pdt.name, gdt.name), T, name(rule, "grad"), rule,
            [good0(rule), tensor(rule, pdt, pdt if pdt in (F32, F64) else F32, gdt=gdt)])
    for pdt, sdt in ((F16, F64), (F16, BF), (BF, F16), (BF, F64), (F32, F16), (F32, BF), (F64, F32), (F32, F64),
                     (F16, np.dtype(np.int16)), (BF, np.dtype(np.uint16))):
        bad("param %s state %s" % (pdt.name, sdt.name), T, name(rule, first), rule,
            [good0(rule), tensor(rule, pdt, sdt)])
    if len(names) > 1:
        for pdt, s0, s1 in ((F16, F32, F16), (F16, F16, F32), (BF, F32, BF), (BF, BF, F32)):
            t = tensor(rule, pdt, s0)
            t["st"][last] = np.full(N, 0.25, s1)
            bad("param %s state %s then %s" % (pdt.name, s0.name, s1.name), T, name(rule, last), rule,
                [good0(rule), t])
    for pdt in (np.dtype(np.int16), np.dtype(np.uint16), np.dtype(np.complex64)):
        t = tensor(rule, F16, F32)
        t["p"] = t["p"].view(pdt) if pdt.itemsize == 2 else np.zeros(N, pdt)
        t["g"] = t["g"].view(pdt) if pdt.itemsize == 2 else np.zeros(N, pdt)
        bad("param %s" % pdt.name, T, name(rule, "param"), rule, [good0(rule), t])
    t = tensor(rule, F16, F32)
    t["p"] = t["p"].astype(">f2")
    bad("param float16 byte-swapped", T, both(name(rule, "param"), "native byte order"), rule, [good0(rule), t])
    t = tensor(rule, F16, F32)
    t["g"] = np.repeat(t["g"], 2)[::2]
    bad("grad float16 strided", V, name(rule, "grad"), rule, [good0(rule), t])
    t = tensor(rule, BF, BF)
    t["st"][first] = readonly(t["st"][first])
    bad("bfloat16 state read-only", V, name(rule, first), rule, [good0(rule), t])
    t = tensor(rule, BF, F32)
    t["st"][first] = np.full(N + 1, 0.25, F32)
    bad("float32 state of a bfloat16 param, wrong shape", V, name(rule, first), rule, [good0(rule), t])
    t = tensor(rule, F16, F16)
    t["st"][first] = t["p"]
    bad("float16 state is param", V, "overlap", rule, [good0(rule), t])

    # ---- master weights
    mp = name(rule, "master_param")
    for pdt, mdt in ((F32, F32), (F64, F32), (F64, F64), (F16, F16), (F16, F64), (BF, BF), (BF, F64), (F16, BF),
                     (BF, np.dtype(np.int32))):
        sdt = pdt if pdt in (F32, F64) else F32
        t = tensor(rule, pdt, sdt)
        t["m"] = np.zeros(N, mdt)
        bad("master %s for param %s" % (mdt.name, pdt.name), T, mp, rule, [good0(rule, True), t])
    t = tensor(rule, F16, F32)
    t["m"] = np.zeros(N + 1, F32)
    bad("master wrong shape", V, mp, rule, [good0(rule, True), t])
    t = tensor(rule, BF, F32)
    t["m"] = np.zeros((2, N // 2), F32)
    bad("master 2-d for a 1-d param", V, mp, rule, [good0(rule, True), t])
    t = tensor(rule, F16, F32, master=True)
    t["m"] = readonly(t["m"])
    bad("master read-only", V, mp, rule, [good0(rule, True), t])
    t = tensor(rule, F16, F32)
    mbuf = np.zeros(2 * N, F32)
    t["m"] = mbuf[::2]
    bad("master strided", V, mp, rule, [good0(rule, True), t], watch=[mbuf])
    t = tensor(rule, BF, F32)
    t["m"] = unaligned(np.zeros(N, F32))
    bad("master unaligned", V, mp, rule, [good0(rule, True), t])
    t = tensor(rule, BF, F32)
    t["m"] = np.zeros(N, ">f4")
    bad("master byte-swapped", T, mp, rule, [good0(rule, True), t])
    t = tensor(rule, F16, F32)
    t["m"] = masked(np.zeros(N, F32))
    bad("master masked", T, mp, rule, [good0(rule, True), t])
    t = tensor(rule, F16, F32)
    t["m"] = [0.0] * N
    bad("master list", T, mp, rule, [good0(rule, True), t])
    buf, p, m = base_and_views(F16)
    t = tensor(rule, F16, F32)
    t["p"][...] = 0.5
    p[...] = t["p"]
    t["p"], t["m"] = p, m
    bad("master overlaps param", V, both(mp, "overlap"), rule, [good0(rule, True), t], watch=[buf])
    buf, g, m = base_and_views(BF)
    t = tensor(rule, BF, F32)
    g[...] = t["g"]
    t["g"], t["m"] = g, m
    bad("master overlaps grad", V, both(mp, "overlap"), rule, [good0(rule, True), t], watch=[buf])
    t = tensor(rule, F16, F32)
    t["m"] = t["st"][last]
    bad("master is a state array", V, both(mp, "overlap"), rule, [good0(rule, True), t])
    t = tensor(rule, F16, F32, n=0)
    t["m"] = np.zeros(0, F16)
    bad("master float16 for a zero-size param", T, mp, rule, [good0(rule, True), t])
    t = tensor(rule, BF, BF, n=0)
    t["m"] = np.zeros(1, F32)
    bad("master of one element for a zero-size param", V, mp, rule, [good0(rule, True), t])
    if MULTI:
        buf, p, m = base_and_views(F16)
        t0, t1 = good0(rule, True), tensor(rule, F16, F32)
        p[...] = t0["p"]
        t0["p"], t1["m"] = p, m
        bad("master_params[1] overlaps params[0]", V, both("master_params", "overlap"), rule, [t0, t1],
            watch=[buf])
        t0, t1 = good0(rule, True), tensor(rule, F16, F32, master=True)
        bad("master_params too short", V, "master_params", rule, [t0, t1], masters=[t0["m"]])
        bad("master_params None inside", T, re.escape("master_params[1]"), rule, [t0, t1], masters=[t0["m"], None])
        bad("master_params twice the same", V, both(re.escape("master_params[1]"), "overlap"), rule, [t0, t1],
            masters=[t0["m"], t0["m"]])
        bad("master_params an array", T, "master_params", rule, [t0, t1], masters=np.zeros((2, N), F32))
        bad("master_params a str", T, "master_params", rule, [t0, t1], masters="m")
        t0 = good0(rule, True)
        t1 = tensor(rule, F32, F32)
        bad("master_params for a float32 tensor", T, re.escape("master_params[1]"), rule, [t0, t1],
            masters=[t0["m"], np.zeros(N, F32)])

    # ---- grad_scale
    for value in ("2", [2.0], np.array([2.0, 2.0], F32), np.array([2.0]), np.array([2], np.int8), True, 2j,
                  np.array([2.0], F16), np.zeros(0, F32), np.asmatrix(np.array([2.0], F32)),
                  np.array([2.0], ">f4"), np.float32):
        bad("grad_scale %r" % (value,), T, "grad_scale", rule, [good0(rule), tensor(rule, BF, F32)], grad_scale=value)
    for value in (0.0, -0.0, -1.0, float("nan"), float("inf"), float("-inf"), 0, -3, 10 ** 400,
                  np.float32(0.0), np.array([0.0], F32), np.array([-2.0], F32), np.array([np.nan], F32),
                  np.array([np.inf], F32)):
        bad("grad_scale %r" % (value,), V, "grad_scale", rule, [good0(rule), tensor(rule, F16, F16)], grad_scale=value)

    # ---- found_inf
    for value in (np.array([0.0]), np.array([1.0]), np.zeros(2, F32), np.ones(2, F32), 0.0, 1.0, [0.0],
                  np.zeros(1, np.int32),
                  np.zeros(1, F16), np.zeros(0, F32), np.asmatrix(np.zeros(1, F32)), np.zeros(1, ">f4"), True, "0"):
        bad("found_inf %r" % (value,), T, "found_inf", rule, [good0(rule), tensor(rule, F16, F32)], found_inf=value)

    # ---- max_norm
    for value in (0.0, -1.0, float("nan"), float("inf"), -0.0, 10 ** 400, 0):
        bad("max_norm %r" % (value,), V, "max_norm", rule, [good0(rule), tensor(rule, BF, BF)], max_norm=value)
    for value in ("1", True, [1.0], np.array([1.0]), 1j):
        bad("max_norm %r" % (value,), T, "max_norm", rule, [good0(rule), tensor(rule, BF, BF)], max_norm=value)

    # ---- the checks come before the found_inf skip
    skip = np.ones(1, F32)
    bad("bad grad dtype with found_inf=[1]", T, name(rule, "grad"), rule,
        [good0(rule), tensor(rule, F16, F32, gdt=BF)], found_inf=skip)
    bad("bad grad_scale with found_inf=[1]", V, "grad_scale", rule, [good0(rule), tensor(rule, F16, F32)],
        found_inf=skip, grad_scale=-1.0)
    bad("bad max_norm with found_inf=[1]", V, "max_norm", rule, [good0(rule), tensor(rule, F16, F32)],
        found_inf=skip, max_norm=0.0)
    t = tensor(rule, F32, F32)
    t["m"] = np.zeros(N, F32)
    bad("master of a float32 param with found_inf=[1]", T, mp, rule, [good0(rule, True), t], found_inf=skip)
print("DONE", n_ok)
'''

MULTI_CASES = HELPERS + r'''
import ml_dtypes
import fastgd.multi as M

T, V = TypeError, ValueError
BF, F16, F32, F64 = (np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16), np.dtype(np.float32),
                     np.dtype(np.float64))


def grads_of(*dts):
    return [np.linspace(-2, 3, 5 + k).astype(dt) for k, dt in enumerate(dts)]


def both(*parts):
    return "".join("(?=.*%s)" % p for p in parts)


def readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


ZERO = object()  # found_inf: a fresh np.zeros(1, float32)


def unscale(label, exc, match, grads, scale=2.0, found=ZERO, watch=()):
    found = np.zeros(1, F32) if found is ZERO else found
    arrays = [g for g in (grads if isinstance(grads, list) else []) if isinstance(g, np.ndarray)]
    if isinstance(found, np.ndarray):
        arrays.append(found)
    case("unscale_and_check " + label, exc, match, lambda: M.unscale_and_check(grads, scale, found, backend=BACKEND),
         *arrays, *watch)


def norm(label, exc, match, grads, **kw):
    arrays = [g for g in (grads if isinstance(grads, list) else []) if isinstance(g, np.ndarray)]
    case("global_norm " + label, exc, match, lambda: M.global_norm(grads, backend=BACKEND, **kw), *arrays)


# valid baselines
for dts in ((F16,), (BF,), (F32,), (F64,), (F16, BF, F32, F64)):
    f = np.zeros(1, F32)
    M.unscale_and_check(grads_of(*dts), 2.0, f, backend=BACKEND)
    M.unscale_and_check(grads_of(*dts), np.array([2.0], F32), f, backend=BACKEND)
    M.global_norm(grads_of(*dts), backend=BACKEND)
    M.global_norm(grads_of(*dts), grad_scale=np.array([2.0], F32), backend=BACKEND)
print("ok valid baselines")

# unscale_and_check: the scale
for value in (0.0, -1.0, float("nan"), float("inf"), -0.0, 0, np.array([0.0], F32), np.array([-1.0], F32),
              np.array([np.nan], F32), np.array([np.inf], F32)):
    unscale("scale %r" % (value,), V, "scale", grads_of(F16, BF), scale=value)
for value in ("2", [2.0], np.array([2.0]), np.array([2.0, 2.0], F32), np.array([2], np.int8), True, None,
              np.array([2.0], F16), np.zeros(0, F32)):
    unscale("scale %r" % (value,), T, "scale", grads_of(F16, F32), scale=value)
# found_inf
for value in (np.zeros(1), np.zeros(2, F32), 0.0, [0.0], None, np.zeros(1, np.int32), np.zeros(1, F16),
              np.zeros(0, F32), np.asmatrix(np.zeros(1, F32)), np.zeros(1, ">f4")):
    g = grads_of(F16, BF)
    g[1][2] = np.nan
    unscale("found_inf %r" % (value,), T, "found_inf", g, found=value)
g = grads_of(F16, BF)
g[1][2] = np.nan
unscale("found_inf read-only (NaN in the grads)", V, "found_inf", g, found=readonly(np.zeros(1, F32)))
unscale("found_inf read-only (finite grads)", V, "found_inf", grads_of(F16, BF), found=readonly(np.zeros(1, F32)))
g = grads_of(F32, F32)
unscale("found_inf is a view of grads[0]", V, both("found_inf", "overlap"), g, found=g[0][1:2])
# the grads
unscale("grads an array", T, "grads", np.zeros((2, 3), F16))
unscale("grads a str", T, "grads", "g")
unscale("grads None", T, "grads", None)
for label, make, exc in (("None", lambda g: None, T), ("int32", lambda g: g.astype(np.int32), T),
                         ("list", lambda g: g.tolist(), T), ("read-only", readonly, V),
                         ("strided", lambda g: np.repeat(g, 2)[::2], V), ("masked", masked, T),
                         ("byte-swapped", lambda g: g.astype(g.dtype.newbyteorder(">")), T),
                         ("unaligned", unaligned, V), ("complex", lambda g: g.astype(np.complex64), T)):
    for dts in ((F16, F16), (F32, F32)):
        g = grads_of(*dts)
        g[1] = make(g[1])
        unscale("grads[1] %s (%s)" % (label, dts[0].name), exc, re.escape("grads[1]"), g)
g = grads_of(F16, F16)
unscale("grads[1] is grads[0]", V, both(re.escape("grads[1]"), "overlap"), [g[0], g[0]])
buf = np.zeros(32, np.uint8)
a, b = buf[:16].view(F16), buf[8:24].view(F16)
unscale("grads overlapping", V, "overlap", [a, b], watch=[buf])

# global_norm
norm("grads an array", T, "grads", np.zeros((2, 3), F16))
norm("grads None", T, "grads", None)
norm("grads a str", T, "grads", "g")
for label, make, exc in (("None", lambda g: None, T), ("int32", lambda g: g.astype(np.int32), T),
                         ("list", lambda g: g.tolist(), T), ("masked", masked, T), ("complex",
                         lambda g: g.astype(np.complex64), T), ("byte-swapped", lambda g: g.astype(">f2"), T)):
    g = grads_of(F16, F16)
    g[1] = make(g[1])
    norm("grads[1] %s" % label, exc, re.escape("grads[1]"), g)
for value in (0.0, -1.0, float("nan"), float("inf"), np.array([0.0], F32)):
    norm("grad_scale %r" % (value,), V, "grad_scale", grads_of(F16), grad_scale=value)
for value in ("2", [2.0], np.array([2.0]), np.array([2.0, 2.0], F32)):
    norm("grad_scale %r" % (value,), T, "grad_scale", grads_of(BF), grad_scale=value)
print("DONE", n_ok)
'''


def _steps_script(mode):
    return HELPERS + "MODE = %r\n" % mode + STEP_CASES


def test_step_bad_input_single(backend):
    out = run_script(_steps_script("single"), backend, min_ok=10 * 90)
    assert "ok valid" in out and "FAIL" not in out


def test_step_bad_input_multi(backend):
    out = run_script(_steps_script("multi"), backend, min_ok=10 * 90)
    assert "ok valid" in out and "FAIL" not in out


def test_unscale_and_global_norm_bad_input(backend):
    run_script(MULTI_CASES, backend, min_ok=60)
