"""Half precision and the fused extras (issue #10): every rule of the table, every backend,
single (fastgd.<rule>_step) and multi (fastgd.multi.<rule>_step), against an oracle written
here, compared bit for bit.

The oracle is the definition of the spec (docs: fastgd/reference/half.py), written out
independently of ``fastgd.reference.half.staged``: every array is converted with ``astype`` to
the compute dtype (float64 for float64 params, float32 otherwise; the float32 master copy stands
in for param when given), the gradient becomes ``(g / scale) * clip`` in the compute dtype, the
compute-dtype reference rule (``fastgd.reference.rules.<kernel>``) runs on the copies, and every
written array is stored back with ``astype`` (one rounding to nearest even; param receives the
master's rounding).

dtype combinations (param and grad, state): float16/float32, float16/float16,
bfloat16/float32, bfloat16/bfloat16, and float32/float32, float64/float64 with the extras.

Comparisons are of the bits (``view(uint16)`` etc.: signed zeros count), NaN-aware (NaN at the
same places, any payload).  The one tolerance is the public ``max_norm`` step against a norm
the test sums itself in float64 (the summation order differs, so the clip factor may differ in
its last bit): the result must lie within the oracle's results for the clip factor's
neighbours, +- 2 ulps of the stored dtype; with the norm fastgd.multi.global_norm returns, the
same step is compared bit for bit.  Every backend is also compared with backend="numpy".

The kernel-level test calls ``backend_module(b).<kernel>_multi(*lists, **kw, grad_scale=,
clip=, masters=)`` on every backend, as the design (half_spec.md) states the contract.
"""
import importlib.util
import inspect
import math
import os
import subprocess
import sys
import zlib

import ml_dtypes
import numpy as np
import pytest

import fastgd
import fastgd.multi as M
from fastgd._rules import RULES
from fastgd.backends import backend_module
from fastgd.reference import rules as REF

RULE_NAMES = tuple(RULES)
F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
BF16 = np.dtype(ml_dtypes.bfloat16)
HALF = (F16, BF16)

# (param and grad dtype, state dtype)
COMBOS = {
    "f16-f32": (F16, F32),
    "f16-f16": (F16, F16),
    "bf16-f32": (BF16, F32),
    "bf16-bf16": (BF16, BF16),
    "f32": (F32, F32),
    "f64": (F64, F64),
}
HALF_COMBOS = ("f16-f32", "f16-f16", "bf16-f32", "bf16-bf16")
# the extras with fewer combinations where the test is costly: both half formats, both state
# kinds, and the float32/float64 paths
EXTRA_COMBOS = ("f16-f16", "bf16-f32", "f32", "f64")
MODES = ("single", "multi")
STEPS = 6  # RAdam's rectified branch (beta2=0.9) starts at step 6

# hyperparameters that switch every option of a rule on (every optional state array used)
HYPER = {
    "sgd": dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "adam": dict(lr=0.01, amsgrad=True, weight_decay=0.1),
    "adamw": dict(lr=0.01, amsgrad=True),
    "adamax": dict(lr=0.01, weight_decay=0.1),
    "nadam": dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    "radam": dict(lr=0.01, beta2=0.9, weight_decay=0.1),
    "adagrad": dict(lr=0.1, lr_decay=0.01, weight_decay=0.1),
    "adadelta": dict(lr=0.5, weight_decay=0.1),
    "rmsprop": dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1),
    "lion": dict(lr=0.01, weight_decay=0.1),
}

SINGLE_SHAPES = [(3, 343)]                 # 1029 elements: vector bodies and a remainder
MULTI_SHAPES = [(37,), (0,), (3, 343), (1,), (2, 5, 3), (201,)]  # 201: a float16 block of 128, one of 64, 9 alone


def _seed(*key):
    """A seed from the test's parameters (deterministic: str hashes are salted per process)."""
    return zlib.crc32(repr(key).encode())


def _hyper(rule, t):
    """The rule's all-on hyperparameters, maximize on every third step."""
    return dict(HYPER[rule], maximize=(t % 3 == 0))


def _state_names(rule):
    return [s.name for s in RULES[rule].state if not s.scalar]


def _has_mu(rule):
    return any(s.scalar for s in RULES[rule].state)


# ---------------------------------------------------------------------------------------
# a "world": the arrays of one call (one or more tensors) and NAdam's mu_product

class World:
    def __init__(self, params, states, masters=None, mu=None):
        self.params, self.states, self.masters, self.mu = params, states, masters, mu

    def copy(self):
        return World([p.copy() for p in self.params], [{k: v.copy() for k, v in st.items()} for st in self.states],
                     None if self.masters is None else [m.copy() for m in self.masters],
                     None if self.mu is None else self.mu.copy())

    def arrays(self):
        """(name, array) of every array the call may write."""
        out = []
        for t, p in enumerate(self.params):
            out.append(("params[%d]" % t, p))
            for k, v in self.states[t].items():
                out.append(("%s[%d]" % (k, t), v))
            if self.masters is not None:
                out.append(("masters[%d]" % t, self.masters[t]))
        if self.mu is not None:
            out.append(("mu_product", self.mu))
        return out


def _c(a):
    """A C-contiguous copy (0-d stays 0-d, unlike numpy.ascontiguousarray)."""
    return np.array(a, order="C", copy=True)


def _random(rng, shape):
    return np.asarray(rng.standard_normal(shape))


def make_world(rule, combos, shapes, seed, master=False):
    """Random param and state (values that round non-trivially), one tensor per shape;
    ``combos``: one (param dtype, state dtype) per tensor.  With ``master`` the float32 master
    holds the values and param holds something else (its old value must not be read)."""
    rng = np.random.default_rng(seed)
    params, states, masters = [], [], []
    for shape, (pdt, sdt) in zip(shapes, combos):
        p64 = _random(rng, shape)
        st = {}
        for s in RULES[rule].state:
            if s.scalar:
                continue
            x = _random(rng, shape) * 0.3
            st[s.name] = (x * x if s.nonneg else x)
        if "grad_avg" in st:  # a valid centered state: grad_avg^2 < square_avg
            st["grad_avg"] = rng.uniform(-0.9, 0.9, shape) * np.sqrt(st["square_avg"])
        states.append({k: _c(v.astype(sdt)) for k, v in st.items()})
        if master:
            masters.append(_c(p64.astype(F32)))
            params.append(_c((_random(rng, shape) * 5).astype(pdt)))
        else:
            params.append(_c(p64.astype(pdt)))
    mu = np.ones(1) if _has_mu(rule) else None
    return World(params, states, masters if master else None, mu)


def make_grads(rng, world, t, specials=False):
    """One gradient per tensor, of its param's dtype: magnitudes spread over 1e-3..10, a few
    exact zeros at step 3, and with ``specials`` NaN/+inf/-inf (and, for float16, values whose
    squares overflow the float16 state) at a few places."""
    out = []
    for p in world.params:
        g = _random(rng, p.shape) * 10.0 ** rng.uniform(-3, 1, p.shape)
        if t == 3 and g.size:
            g.reshape(-1)[:3] = 0.0
        if specials and g.size:
            where = np.asarray(rng.random(p.shape) < 0.08)
            g[where] = rng.choice([np.nan, np.inf, -np.inf, 6e4, -6e4], size=int(where.sum()))
        with np.errstate(over="ignore"):
            out.append(_c(g.astype(p.dtype)))
    return out


# ---------------------------------------------------------------------------------------
# the public call and the oracle

def public_step(rule, world, grads, t, backend, multi, **extra):
    """fastgd.<rule>_step (one tensor) or fastgd.multi.<rule>_step on ``world``'s arrays."""
    r = RULES[rule]
    fn = getattr(M if multi else fastgd, rule + "_step")
    sig = inspect.signature(fn).parameters
    if multi:
        args = [world.params, grads]
    else:
        assert len(world.params) == 1
        args = [world.params[0], grads[0]]
    kw = dict(_hyper(rule, t), backend=backend)
    if r.step is not None:
        kw["step"] = t
    for s in r.state:
        if s.scalar:
            value, key = world.mu, s.multi if multi else s.name
        elif multi:
            value, key = [st[s.name] for st in world.states], s.multi
        else:
            value, key = world.states[0][s.name], s.name
        if sig[key].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            args.append(value)
        else:
            kw[key] = value
    if world.masters is not None:
        if multi:
            kw["master_params"] = world.masters
        else:
            kw["master_param"] = world.masters[0]
    kw.update(extra)
    with np.errstate(all="ignore"):
        out = fn(*args, **kw)
    assert out is args[0], "the step must return param(s) itself"
    return out


def _kernel_kw(rule, t, mu_value=None):
    r = RULES[rule]
    hyper = dict(r.defaults, **_hyper(rule, t))
    kw = r.check(t, **hyper) if r.step is not None else r.check(**hyper)
    if _has_mu(rule):
        kw["mu_product"] = mu_value
    return kw


def _compute_dtype(dt):
    return F64 if dt == F64 else F32


def oracle_step(rule, world, grads, t, scale=None, clip=None, advance_mu=True):
    """The spec's definition, on ``world`` in place (see the module docstring)."""
    r = RULES[rule]
    kw = _kernel_kw(rule, t, None if world.mu is None else float(world.mu[0]))
    kernel = getattr(REF, r.kernel)
    names = _state_names(rule)
    with np.errstate(all="ignore"):
        for i, p in enumerate(world.params):
            if p.size == 0:
                continue
            cd = _compute_dtype(p.dtype)
            src = p if world.masters is None else world.masters[i]
            wp = src.astype(cd)  # a copy
            g = grads[i].astype(cd)
            if scale is not None:
                g = g / cd.type(scale)
            if clip is not None:
                g = g * cd.type(clip)
            ws = [world.states[i][n].astype(cd) for n in names]
            kernel(wp, g, *ws, **kw)
            for n, w in zip(names, ws):
                world.states[i][n][...] = w.astype(world.states[i][n].dtype)
            if world.masters is not None:
                world.masters[i][...] = wp
            p[...] = wp.astype(p.dtype)
    if world.mu is not None and advance_mu:
        world.mu[0] = kw["mu_product"] * REF.nadam_mu(t, kw["beta1"], kw["momentum_decay"])


# ---------------------------------------------------------------------------------------
# comparisons

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def bits(a):
    a = np.asarray(a)
    return a.view(_UINT[a.dtype.itemsize])


def assert_bits_equal(actual, desired, what):
    """The same dtype, shape and bits, NaN-aware (NaN at the same places, any payload)."""
    assert actual.dtype == desired.dtype, "%s: dtype %s, expected %s" % (what, actual.dtype, desired.dtype)
    assert actual.shape == desired.shape, what
    with np.errstate(all="ignore"):
        na, nd = np.isnan(actual.astype(F64)), np.isnan(desired.astype(F64))
    if not np.array_equal(na, nd):
        k = np.flatnonzero((na != nd).reshape(-1))
        raise AssertionError("%s: NaN at %d places where the reference has none or vice versa (first at %d: %r vs "
                             "%r)" % (what, k.size, k[0], actual.reshape(-1)[k[0]], desired.reshape(-1)[k[0]]))
    same = (bits(actual) == bits(desired)) | na
    if not same.all():
        k = np.flatnonzero(~same.reshape(-1))
        a, d = actual.reshape(-1)[k[0]], desired.reshape(-1)[k[0]]
        zeros = bool(np.all(actual.reshape(-1)[k].astype(F64) == desired.reshape(-1)[k].astype(F64)))
        raise AssertionError("%s: %d of %d elements differ%s, first at %d: %r (bits %#x) vs reference %r (bits %#x)"
                             % (what, k.size, actual.size, " (only in the sign of zero)" if zeros else "", k[0],
                                a, int(bits(actual).reshape(-1)[k[0]]), d, int(bits(desired).reshape(-1)[k[0]])))


def assert_worlds_equal(actual, desired, what):
    for (name, a), (_, d) in zip(actual.arrays(), desired.arrays()):
        assert_bits_equal(a, d, "%s: %s" % (what, name))


def snapshot(world, grads=()):
    return [bits(a).copy() for _, a in world.arrays()] + [bits(g).copy() for g in grads]


def assert_unchanged(world, grads, before, what):
    names = [n for n, _ in world.arrays()] + ["grads[%d]" % k for k in range(len(grads))]
    now = snapshot(world, grads)
    for n, a, b in zip(names, now, before):
        assert np.array_equal(a, b), "%s: %s was written" % (what, n)


def _shapes(mode):
    return SINGLE_SHAPES if mode == "single" else MULTI_SHAPES


def _world(rule, combo, mode, seed, master=False):
    shapes = _shapes(mode)
    return make_world(rule, [COMBOS[combo]] * len(shapes), shapes, seed, master)


def _threads(t):
    """Odd steps: two threads for every size (the parallel loops); even: one, serial."""
    if t % 2:
        fastgd.set_num_threads(2)
        fastgd.set_serial_cutoff(0)
    else:
        fastgd.set_num_threads(1)
        fastgd.set_serial_cutoff(1 << 40)


def _run_against_oracle(rule, backend, mode, world, rng, steps=STEPS, specials=False, extra_of_step=None,
                        check=None):
    """Run ``steps`` steps on ``backend`` and on numpy (public API) and the oracle, each on
    its own copy of ``world``; after every step all three must agree bit for bit.
    ``extra_of_step(t, grads) -> (public keywords, oracle keywords)``."""
    multi = mode == "multi"
    mine, ref, orc = world, world.copy(), world.copy()
    for t in range(1, steps + 1):
        grads = make_grads(rng, mine, t, specials=specials)
        g_before = snapshot(World([], []), grads)
        extra, okw = extra_of_step(t, grads) if extra_of_step else ({}, {})
        _threads(t)
        public_step(rule, mine, grads, t, backend, multi, **extra)
        assert_unchanged(World([], []), grads, g_before, "step %d: the gradient" % t)
        oracle_step(rule, orc, grads, t, **okw)
        assert_worlds_equal(mine, orc, "%s step %d (%s)" % (backend, t, rule))
        if backend != "numpy":
            public_step(rule, ref, grads, t, "numpy", multi, **extra)
            assert_worlds_equal(mine, ref, "%s vs numpy, step %d" % (backend, t))
        if check:
            check(mine, t)
    return mine


# ---------------------------------------------------------------------------------------
# 1. dtype combinations

@pytest.mark.parametrize("combo", list(COMBOS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rule", RULE_NAMES)
def test_dtypes_equal_the_oracle(rule, mode, combo, backend, restore_globals):
    world = _world(rule, combo, mode, _seed(rule, mode, combo))
    _run_against_oracle(rule, backend, mode, world, np.random.default_rng(_seed("g", rule, mode, combo)))


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_multi_mixes_combinations_in_one_call(rule, backend, restore_globals):
    """One multi call holding every combination, tensor by tensor; with grad_scale and
    max_norm on some steps (the scale and the clip factor cast to each tensor's compute dtype)."""
    names = list(COMBOS)
    shapes = [(37 + k,) for k in range(len(names))] + [(0,)]
    combos = [COMBOS[c] for c in names] + [COMBOS["bf16-f32"]]
    world = make_world(rule, combos, shapes, _seed("mix", rule))

    def extra(t, grads):
        if t % 3 == 1:
            return {}, {}
        if t % 3 == 2:
            s = np.array([3.7], np.float32)  # float64 tensors: divided by float(float32(3.7))
            return dict(grad_scale=s), dict(scale=_scale_value(s))
        norm = M.global_norm(grads, grad_scale=1000.0, backend=backend)
        return dict(grad_scale=1000.0, max_norm=0.3 * norm), dict(scale=1000.0, clip=_clip(0.3 * norm, norm))

    _run_against_oracle(rule, backend, "multi", world, np.random.default_rng(_seed("mixg", rule)),
                        extra_of_step=extra)


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_half_zero_size_and_0d(rule, backend):
    """Zero-size half arrays are a no-op; 0-d half arrays step like one element."""
    for shape in [(0,), (3, 0)]:
        w = make_world(rule, [COMBOS["bf16-f32"]], [shape], 1)
        o = w.copy()
        g = [np.zeros(shape, BF16)]
        public_step(rule, w, g, 1, backend, False)
        oracle_step(rule, o, g, 1)  # nothing but NAdam's mu_product changes
        assert_worlds_equal(w, o, "zero-size")
    for combo in ("f16-f32", "bf16-bf16"):
        w = make_world(rule, [COMBOS[combo]], [()], 2)
        o = w.copy()
        g = [np.asarray(np.array(0.37, COMBOS[combo][0]))]
        public_step(rule, w, g, 1, backend, False)
        oracle_step(rule, o, g, 1)
        assert_worlds_equal(w, o, "0-d %s" % combo)


def _offset_view(a, offset):
    """A copy of ``a`` whose data starts ``offset`` bytes past a 64-byte boundary (still
    aligned to its dtype): the SIMD loops' unaligned heads."""
    raw = np.zeros(a.nbytes + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


@pytest.mark.parametrize("combo", ["f16-f16", "bf16-f32"])
@pytest.mark.parametrize("rule", RULE_NAMES)
def test_large_and_unaligned_tensors(rule, combo, backend, restore_globals):
    """70,001 elements (more than one conversion block, threads), every array starting at a
    different offset from a cache line; then a step on 7 threads with every extra."""
    world = make_world(rule, [COMBOS[combo]], [(70001,)], _seed("big", rule, combo))
    for k, (name, a) in enumerate(world.arrays()):
        if name.startswith("params"):
            world.params[0] = _offset_view(a, 2)
        elif name != "mu_product":
            key = name[:name.index("[")]
            world.states[0][key] = _offset_view(a, a.dtype.itemsize * (k + 1))
    rng = np.random.default_rng(_seed("bigg", rule, combo))
    world = _run_against_oracle(rule, backend, "single", world, rng, steps=3)
    # more threads than cores (per-thread conversion buffers), with every extra
    fastgd.set_num_threads(7)
    fastgd.set_serial_cutoff(0)
    orc = world.copy()
    grads = make_grads(rng, world, 4)
    norm = M.global_norm(grads, grad_scale=8.0, backend=backend)
    public_step(rule, world, grads, 4, backend, False, grad_scale=8.0, max_norm=norm / 3,
                found_inf=np.zeros(1, np.float32))
    oracle_step(rule, orc, grads, 4, scale=8.0, clip=_clip(norm / 3, norm))
    assert_worlds_equal(world, orc, "7 threads")


def _rounding_cases(dt):
    """(param, grad) pairs, both values of ``dt``, whose SGD step p - g (lr=1, in float32) is
    an exact tie between two values of ``dt`` (to even: down and up), just off a tie, the
    overflow tie (to inf), a subnormal (no flush to zero), or a signed zero; with grad_scale=2
    (g / 2) more ties, among subnormals too."""
    if dt == F16:
        u, s, top = 2.0 ** -10, 2.0 ** -24, 65504.0
        above = 2.0 ** -11 + 2.0 ** -20
    else:
        u, s, top = 2.0 ** -7, 2.0 ** -133, float(ml_dtypes.finfo(BF16).max)
        above = 2.0 ** -8 + 2.0 ** -15
    half_ulp_top = {F16: 16.0, BF16: 2.0 ** 119}[dt]
    return [(1.0, -u / 2), (1.0 + u, -u / 2), (1.0, -above), (-1.0, u / 2), (-1.0 - u, u / 2),
            (top, -half_ulp_top), (top, -half_ulp_top / 2), (-top, half_ulp_top),
            (3 * s, s), (s, s), (5 * s, -s), (2.0 ** (-14 if dt == F16 else -126), s),
            (0.0, 0.0), (-0.0, 0.0), (0.0, -0.0), (-0.0, -0.0), (1.0, 1.0), (0.75, 0.375)]


@pytest.mark.parametrize("dt", [pytest.param(F16, id="float16"), pytest.param(BF16, id="bfloat16")])
@pytest.mark.parametrize("mode", MODES)
def test_rounding_edge_cases(dt, mode, backend):
    """Round to nearest even on store (ties both ways, the overflow tie to inf, subnormals:
    no flush to zero, signed zeros): SGD with lr=1 stores p - g computed in float32; also
    through maximize (sign * g) and grad_scale=2 (g / 2: ties among the subnormals)."""
    pairs = _rounding_cases(dt)
    p32 = np.array([a for a, _ in pairs], F32)
    g32 = np.array([b for _, b in pairs], F32)
    p0, g = p32.astype(dt), g32.astype(dt)
    assert np.array_equal(bits(p0.astype(F32)), bits(p32)) and np.array_equal(bits(g.astype(F32)), bits(g32)), \
        "test bug: the pairs must be values of %s" % dt
    for maximize, scale in ((False, None), (True, None), (False, 2.0), (True, 2.0)):
        p = p0.copy()
        extra = {} if scale is None else dict(grad_scale=scale)
        with np.errstate(all="ignore"):
            if mode == "multi":
                M.sgd_step([p], [g], lr=1.0, maximize=maximize, backend=backend, **extra)
            else:
                fastgd.sgd_step(p, g, lr=1.0, maximize=maximize, backend=backend, **extra)
            gg = g32 if scale is None else g32 / np.float32(scale)
            if maximize:
                gg = gg * np.float32(-1.0)
            want = (p32 - np.float32(1.0) * gg).astype(dt)
        assert_bits_equal(p, want, "%s sgd maximize=%s grad_scale=%r" % (dt.name, maximize, scale))


# ---------------------------------------------------------------------------------------
# 2. master weights

@pytest.mark.parametrize("combo", HALF_COMBOS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rule", RULE_NAMES)
def test_master_params(rule, mode, combo, backend, restore_globals):
    world = _world(rule, combo, mode, _seed("m", rule, mode, combo), master=True)

    def param_is_the_masters_rounding(w, t):
        for i, (p, m) in enumerate(zip(w.params, w.masters)):
            with np.errstate(over="ignore"):
                assert_bits_equal(p, m.astype(p.dtype), "step %d: params[%d] vs masters[%d].astype" % (t, i, i))

    _run_against_oracle(rule, backend, mode, world, np.random.default_rng(_seed("mg", rule, mode, combo)),
                        check=param_is_the_masters_rounding)


# ---------------------------------------------------------------------------------------
# 3. grad_scale and found_inf

# scales: powers of two (exact) and not (the division rounds); as floats and float32 arrays
_SCALES = [1024.0, np.array([3.7], np.float32), 65536.0, np.array([0.125], np.float32), 1e-3,
           np.array([1000.0], np.float32)]


def _scale_value(s):
    return float(s.reshape(-1)[0]) if isinstance(s, np.ndarray) else s


@pytest.mark.parametrize("combo", list(COMBOS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rule", RULE_NAMES)
def test_grad_scale(rule, mode, combo, backend, restore_globals):
    world = _world(rule, combo, mode, _seed("s", rule, mode, combo))

    def extra(t, grads):
        s = _SCALES[(t - 1) % len(_SCALES)]
        return dict(grad_scale=s), dict(scale=_scale_value(s))

    _run_against_oracle(rule, backend, mode, world, np.random.default_rng(_seed("sg", rule, mode, combo)),
                        extra_of_step=extra)


@pytest.mark.parametrize("combo", list(COMBOS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rule", RULE_NAMES)
def test_found_inf(rule, mode, combo, backend, restore_globals):
    """found_inf nonzero (1, inf, -1): not one byte of any array written, NAdam's mu_product
    included (a NaN gradient and a grad_scale present, as after an overflow); zero: the
    normal step (with grad_scale, as a loss scaler calls it)."""
    multi = mode == "multi"
    half_f32 = COMBOS[combo][0] in HALF and COMBOS[combo][1] == F32
    world = _world(rule, combo, mode, _seed("f", rule, mode, combo), master=half_f32)
    orc = world.copy()
    rng = np.random.default_rng(_seed("fg", rule, mode, combo))
    t = 1
    for k, value in enumerate([0.0, 1.0, 0.0, np.inf, -1.0, 0.0, 65536.0, 0.0]):
        grads = make_grads(rng, world, t, specials=value != 0)
        found = np.array([value], np.float32)
        if value:
            before = snapshot(world, grads)
            public_step(rule, world, grads, t, backend, multi, found_inf=found, grad_scale=np.array([8.0], np.float32))
            assert_unchanged(world, grads, before, "found_inf=%r" % value)
            assert found[0] == np.float32(value), "found_inf was written"
        else:
            public_step(rule, world, grads, t, backend, multi, found_inf=found, grad_scale=np.array([8.0], np.float32))
            oracle_step(rule, orc, grads, t, scale=8.0)
            assert_worlds_equal(world, orc, "found_inf=0, step %d" % t)
            assert found[0] == 0.0
            t += 1  # a skipped step is not a step: the caller repeats its count


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_found_inf_nan_skips(rule, backend):
    """found_inf holding NaN is nonzero (as ``if found_inf:`` in torch): the step is skipped."""
    world = _world(rule, "bf16-f32", "multi", _seed("fn", rule))
    grads = make_grads(np.random.default_rng(3), world, 1)
    before = snapshot(world, grads)
    public_step(rule, world, grads, 1, backend, True, found_inf=np.array([np.nan], np.float32))
    assert_unchanged(world, grads, before, "found_inf=NaN")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rule", RULE_NAMES)
def test_found_inf_zero_and_none_are_the_plain_step(rule, mode, backend):
    """found_inf=[0] (read-only even: it is only read) and the defaults (None) equal the step
    without the keywords, bit for bit."""
    multi = mode == "multi"
    w0 = _world(rule, "f16-f32", mode, _seed("fz", rule, mode))
    w1, w2 = w0.copy(), w0.copy()
    rng = np.random.default_rng(5)
    ro = np.zeros(1, np.float32)
    ro.flags.writeable = False
    for t in range(1, 4):
        grads = make_grads(rng, w0, t)
        public_step(rule, w0, grads, t, backend, multi)
        public_step(rule, w1, grads, t, backend, multi, found_inf=ro)
        public_step(rule, w2, grads, t, backend, multi, found_inf=None, grad_scale=None, max_norm=None)
        assert_worlds_equal(w1, w0, "found_inf=[0] step %d" % t)
        assert_worlds_equal(w2, w0, "None extras step %d" % t)


# ---------------------------------------------------------------------------------------
# 4. max_norm: the kernels with a given clip factor, then the public option

def _kernel_lists(rule, world, grads):
    lists = [world.params, grads] + [[st[n] for st in world.states] for n in _state_names(rule)]
    return lists


_KERNEL_CASES = [(c, False) for c in COMBOS] + [("f16-f32", True), ("bf16-bf16", True)]


@pytest.mark.parametrize("combo,master", _KERNEL_CASES,
                         ids=["%s%s" % (c, "-master" if m else "") for c, m in _KERNEL_CASES])
@pytest.mark.parametrize("rule", RULE_NAMES)
def test_kernel_multi_with_scale_and_clip(rule, combo, master, backend, restore_globals):
    """The kernel-level contract: fastgd.multi._staged_call(backend module, kernel, lists, kw,
    grad_scale, clip, masters) (Cython: its fused <kernel>_multi; numba/numpy: their
    compute-dtype kernels inside reference.half.staged) equals the oracle bit for bit (clip
    is the final factor)."""
    r = RULES[rule]
    impl = backend_module(backend)
    if backend == "cython":
        assert impl.STAGED  # the fused path, not the reference's staging around the Cython kernels

    def f(*lists, grad_scale, clip, masters, **kw):
        return M._staged_call(impl, r.kernel, list(lists), kw, grad_scale, clip, masters)
    world = _world(rule, combo, "multi", _seed("k", rule, combo, master), master=master)
    orc = world.copy()
    rng = np.random.default_rng(_seed("kg", rule, combo, master))
    for t, (scale, clip) in enumerate([(None, 0.3721), (3.7, None), (1024.0, 0.8123457), (None, None),
                                       (0.5, 1.0), (7.0, 1e-3)], 1):
        grads = make_grads(rng, world, t)
        _threads(t)
        kw = _kernel_kw(rule, t, 0.8 if _has_mu(rule) else None)
        if orc.mu is not None:
            orc.mu[0] = 0.8  # the kernels take P_{t-1} as a float; the public function advances it
        with np.errstate(all="ignore"):
            f(*_kernel_lists(rule, world, grads), **kw, grad_scale=scale, clip=clip,
              masters=world.masters)
        oracle_step(rule, orc, grads, t, scale=scale, clip=clip, advance_mu=False)
        if orc.mu is not None:
            orc.mu[0] = world.mu[0]
        assert_worlds_equal(world, orc, "%s kernel step %d (scale %r, clip %r)" % (backend, t, scale, clip))


def _norm64(grads, scale=None):
    total = 0.0
    for g in grads:
        x = g.astype(F64).reshape(-1)
        total += float(np.sum(x * x))
    n = math.sqrt(total)
    return n if scale is None else n / scale


def _clip(max_norm, norm):
    c = max_norm / (norm + 1e-6)
    return 1.0 if c > 1.0 else c  # NaN stays NaN (torch's clamp)


def _eps(dt):
    return float(ml_dtypes.finfo(dt).eps) if dt == BF16 else float(np.finfo(dt).eps)


def _tiny(dt):
    return float(ml_dtypes.finfo(dt).smallest_subnormal) if dt == BF16 else float(np.finfo(dt).smallest_subnormal)


def _clip_neighbours(clip, cd):
    """The clip factors a norm summed in another order can give: the compute-dtype value and
    its neighbours (float32), or +-1e-13 relative (float64: the norm's round-off itself)."""
    if cd == F64:
        return [clip * (1 - 1e-13), clip, clip * (1 + 1e-13)]
    c = np.float32(clip)
    return [float(np.nextafter(c, np.float32(-np.inf))), float(c), float(np.nextafter(c, np.float32(np.inf)))]


def assert_within(actual, outs, what, ulps=2):
    """``actual`` within [min, max] of the oracle results ``outs`` (the clip factor's
    neighbours), widened by ``ulps`` of the stored dtype; NaN and infinities as the middle one."""
    dt = actual.dtype
    with np.errstate(all="ignore"):
        a = actual.astype(F64)
        o = np.stack([x.astype(F64) for x in outs])
    mid = o[len(outs) // 2]
    np.testing.assert_array_equal(np.isnan(a), np.isnan(mid), err_msg="NaN positions of " + what)
    fin = np.isfinite(o).all(axis=0)
    np.testing.assert_array_equal(a[~fin & ~np.isnan(mid)], mid[~fin & ~np.isnan(mid)],
                                  err_msg="infinities of " + what)
    lo, hi = o.min(axis=0), o.max(axis=0)
    tol = ulps * _eps(dt) * np.maximum(np.abs(lo), np.abs(hi)) + 2 * _tiny(dt)
    bad = fin & ~((a >= lo - tol) & (a <= hi + tol))
    assert not bad.any(), "%s: %d elements outside the oracle's range, first %r not in [%r, %r]" % (
        what, int(bad.sum()), a[bad][0], lo[bad][0], hi[bad][0])


@pytest.mark.parametrize("combo", EXTRA_COMBOS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rule", RULE_NAMES)
def test_max_norm_clips_like_clip_grad_norm(rule, mode, combo, backend, restore_globals):
    """Each step from the same arrays as the oracle (so round-off does not compound): the
    clipped step equals the oracle run on g * clip, clip = min(1, max_norm / (norm + 1e-6))
    with the norm of the unscaled gradients summed in float64 by the test; since the norm's
    summation order differs, the result must lie within the oracle's results for the clip
    factor's neighbours, +- 2 ulps.  With grad_scale on even steps."""
    multi = mode == "multi"
    world = _world(rule, combo, mode, _seed("c", rule, mode, combo))
    rng = np.random.default_rng(_seed("cg", rule, mode, combo))
    cd = _compute_dtype(COMBOS[combo][0])
    for t in range(1, 5):
        grads = make_grads(rng, world, t)
        scale = None if t % 2 else 4.0
        norm = _norm64(grads, scale)
        max_norm = norm * [0.5, 0.9, 0.05, 0.3][t - 1]
        before = world.copy()
        extra = dict(max_norm=max_norm) if scale is None else dict(max_norm=max_norm, grad_scale=scale)
        _threads(t)
        public_step(rule, world, grads, t, backend, multi, **extra)
        outs = []
        for c in _clip_neighbours(_clip(max_norm, norm), cd):
            o = before.copy()
            oracle_step(rule, o, grads, t, scale=scale, clip=c)
            outs.append(o)
        for k, (name, a) in enumerate(world.arrays()):
            if name == "mu_product":
                assert_bits_equal(a, outs[1].arrays()[k][1], name)
                continue
            assert_within(a, [o.arrays()[k][1] for o in outs], "step %d %s" % (t, name))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rule", RULE_NAMES)
def test_max_norm_with_global_norm_is_bit_for_bit(rule, mode, backend, restore_globals):
    """With the clip factor from fastgd.multi.global_norm (the norm the spec says the step
    uses) the clipped step equals the oracle bit for bit."""
    world = _world(rule, "bf16-f32", mode, _seed("cx", rule, mode))

    def extra(t, grads):
        scale = None if t % 2 else 16.0
        norm = M.global_norm(grads, grad_scale=scale, backend=backend)
        max_norm = norm * 0.37
        kw = dict(max_norm=max_norm) if scale is None else dict(max_norm=max_norm, grad_scale=scale)
        return kw, dict(scale=scale, clip=_clip(max_norm, norm))

    _run_against_oracle(rule, backend, mode, world, np.random.default_rng(_seed("cxg", rule, mode)), steps=4,
                        extra_of_step=extra)


@pytest.mark.parametrize("combo", EXTRA_COMBOS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rule", RULE_NAMES)
def test_large_max_norm_is_the_unclipped_step(rule, mode, combo, backend, restore_globals):
    """max_norm above the norm: clip = 1, the step is exactly the unclipped one."""
    world = _world(rule, combo, mode, _seed("cl", rule, mode, combo))

    def extra(t, grads):
        return dict(max_norm=[1e30, 1e6, _norm64(grads) * 2 + 1.0][t % 3]), {}

    _run_against_oracle(rule, backend, mode, world, np.random.default_rng(_seed("clg", rule, mode, combo)), steps=4,
                        extra_of_step=extra)


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_max_norm_with_non_finite_gradients(rule, backend):
    """A NaN in the gradients makes the norm NaN, and the clip factor NaN (torch's
    clip_grad_norm_: NaN propagates, everything becomes NaN); an inf makes it 0."""
    for bad, what in ((np.nan, "nan"), (np.inf, "inf")):
        world = _world(rule, "f16-f32", "multi", _seed("cn", rule))
        orc = world.copy()
        grads = make_grads(np.random.default_rng(1), world, 1)
        grads[0][5] = bad
        norm = _norm64(grads)
        public_step(rule, world, grads, 1, backend, True, max_norm=1.0)
        oracle_step(rule, orc, grads, 1, clip=_clip(1.0, norm))
        assert_worlds_equal(world, orc, "max_norm with %s" % what)


# ---------------------------------------------------------------------------------------
# 5. global_norm and unscale_and_check

NORM_DTYPES = [pytest.param(d, id=d.name) for d in (F16, BF16, F32, F64)]


def _grads_of(dt, seed, shapes=((0,), (37,), (3, 100), (), (70000,))):
    rng = np.random.default_rng(seed)
    out = []
    for s in shapes:
        x = _random(rng, s) * 10.0 ** rng.uniform(-3, 2, s)
        out.append(_c(x.astype(dt)))
    return out


@pytest.mark.parametrize("dt", NORM_DTYPES)
def test_global_norm(dt, backend):
    grads = _grads_of(dt, 11)
    before = snapshot(World([], []), grads)
    got = M.global_norm(grads, backend=backend)
    assert type(got) is float
    np.testing.assert_allclose(got, _norm64(grads), rtol=1e-12)
    for s in (4.0, np.array([3.7], np.float32), 1e-3):
        got = M.global_norm(grads, grad_scale=s, backend=backend)
        np.testing.assert_allclose(got, _norm64(grads) / _scale_value(s), rtol=1e-12)
    assert_unchanged(World([], []), grads, before, "global_norm")
    # float64 accumulation: squares far outside the range of the dtype
    big = np.full(1000, 6e4 if dt == F16 else 1e30, dt)
    small = np.full(1000, 1e-7 if dt == F16 else 1e-30, dt)
    for g in (big, small):
        np.testing.assert_allclose(M.global_norm([g], backend=backend), _norm64([g]), rtol=1e-12)


def test_global_norm_edge_cases(backend):
    assert M.global_norm([], backend=backend) == 0.0
    assert M.global_norm([np.zeros(0, F16), np.zeros((3, 0), BF16)], backend=backend) == 0.0
    mixed = _grads_of(F16, 1, [(10,)]) + _grads_of(BF16, 2, [(20,)]) + _grads_of(F32, 3, [(5,)]) + \
        _grads_of(F64, 4, [(7,)])
    np.testing.assert_allclose(M.global_norm(mixed, backend=backend), _norm64(mixed), rtol=1e-12)
    assert M.global_norm(tuple(mixed), backend=backend) == pytest.approx(_norm64(mixed), rel=1e-12)
    for bad, expect in ((np.nan, math.isnan), (np.inf, math.isinf), (-np.inf, math.isinf)):
        g = np.ones(40, BF16)
        g[17] = bad
        assert expect(M.global_norm([np.ones(3, F16), g], backend=backend))
    np.testing.assert_allclose(M.global_norm([np.array(3.0, F16), np.array([4.0], BF16)], backend=backend), 5.0,
                               rtol=1e-15)


@pytest.mark.parametrize("dt", NORM_DTYPES)
def test_global_norm_backends_agree(dt, backend):
    grads = _grads_of(dt, 12)
    np.testing.assert_allclose(M.global_norm(grads, backend=backend), M.global_norm(grads, backend="numpy"),
                               rtol=1e-12)


def _unscaled(g, scale):
    cd = _compute_dtype(g.dtype)
    with np.errstate(all="ignore"):
        return (g.astype(cd) / cd.type(scale)).astype(g.dtype)


@pytest.mark.parametrize("dt", NORM_DTYPES)
def test_unscale_and_check(dt, backend):
    for scale in (3.7, np.array([65536.0], np.float32), 1024.0, np.array([0.3], np.float32)):
        s = _scale_value(scale)
        grads = _grads_of(dt, 21)
        want = [_unscaled(g, s) for g in grads]
        found = np.zeros(1, np.float32)
        out = M.unscale_and_check(grads, scale, found, backend=backend)
        assert out is found
        assert found[0] == 0.0, "finite gradients set found_inf"
        for k, (g, w) in enumerate(zip(grads, want)):
            assert_bits_equal(g, w, "grads[%d] / %r" % (k, s))
        # found_inf is never cleared
        found = np.ones(1, np.float32)
        M.unscale_and_check(grads, scale, found, backend=backend)
        assert found[0] == 1.0, "finite gradients cleared found_inf"


@pytest.mark.parametrize("dt", NORM_DTYPES)
def test_unscale_and_check_non_finite(dt, backend):
    for bad in (np.nan, np.inf, -np.inf):
        grads = _grads_of(dt, 22)
        grads[2].reshape(-1)[7] = bad  # one value in one tensor, the others still divided
        want = [_unscaled(g, 3.7) for g in grads]
        found = np.zeros(1, np.float32)
        M.unscale_and_check(grads, 3.7, found, backend=backend)
        assert found[0] == 1.0, "a %r gradient did not set found_inf" % bad
        for k, (g, w) in enumerate(zip(grads, want)):
            assert_bits_equal(g, w, "grads[%d] (with %r)" % (k, bad))
    # in the last tensor, after a block boundary
    grads = _grads_of(dt, 23)
    grads[-1][-1] = np.inf
    found = np.zeros(1, np.float32)
    M.unscale_and_check(grads, 2.0, found, backend=backend)
    assert found[0] == 1.0


@pytest.mark.parametrize("dt", NORM_DTYPES)
def test_unscale_and_check_checks_the_original_values(dt, backend):
    """found_inf is about the values before the division: a finite value that overflows when
    divided by a scale < 1 does not set it (it becomes inf, rounded as the spec says)."""
    top = {F16: 6e4, BF16: 3e38, F32: 3e38, F64: 1.7e308}[dt]
    g = np.array([top, -top, 1.0], dt)
    want = _unscaled(g, 0.25)
    found = np.zeros(1, np.float32)
    M.unscale_and_check([g], 0.25, found, backend=backend)
    assert found[0] == 0.0
    assert_bits_equal(g, want, "overflowing division")
    assert np.isinf(g.astype(F64)[:2]).all()


def test_unscale_and_check_edge_cases(backend):
    found = np.zeros(1, np.float32)
    assert M.unscale_and_check([], 2.0, found, backend=backend) is found and found[0] == 0.0
    z = [np.zeros(0, F16), np.zeros((2, 0), BF16)]
    M.unscale_and_check(z, 2.0, found, backend=backend)
    assert found[0] == 0.0
    mixed = _grads_of(F16, 1, [(10,)]) + _grads_of(BF16, 2, [(20,)]) + _grads_of(F32, 3, [(5,)]) + \
        _grads_of(F64, 4, [(7,)])
    scale = np.array([3.7], np.float32)
    want = [_unscaled(g, _scale_value(scale)) for g in mixed]  # float64 grads: by float(float32(3.7))
    M.unscale_and_check(tuple(mixed), scale, found, backend=backend)
    assert found[0] == 0.0
    for g, w in zip(mixed, want):
        assert_bits_equal(g, w, "mixed " + g.dtype.name)
    # 0-d
    g = np.array(5.0, BF16)
    M.unscale_and_check([g], 2.0, found, backend=backend)
    assert float(g) == 2.5


@pytest.mark.parametrize("dt", NORM_DTYPES)
def test_unscale_and_check_backends_agree(dt, backend, restore_globals):
    fastgd.set_serial_cutoff(0)
    fastgd.set_num_threads(2)
    a, b = _grads_of(dt, 31), _grads_of(dt, 31)
    a[4][12345] = np.nan
    b[4][12345] = np.nan
    fa, fb = np.zeros(1, np.float32), np.zeros(1, np.float32)
    M.unscale_and_check(a, 3.7, fa, backend=backend)
    M.unscale_and_check(b, 3.7, fb, backend="numpy")
    assert fa[0] == fb[0] == 1.0
    for k, (x, y) in enumerate(zip(a, b)):
        assert_bits_equal(x, y, "grads[%d] vs numpy" % k)


# ---------------------------------------------------------------------------------------
# 6. NaN/inf in half gradients propagate as in the reference

@pytest.mark.parametrize("combo", HALF_COMBOS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rule", RULE_NAMES)
def test_non_finite_half_gradients_propagate(rule, mode, combo, backend, restore_globals):
    """NaN, +-inf and (float16) values whose squares overflow float16 state, in every step's
    gradients: every array equals the oracle bit for bit, NaN where it has NaN (float16 with
    float32 state: with master weights)."""
    world = _world(rule, combo, mode, _seed("n", rule, mode, combo), master=combo == "f16-f32")
    _run_against_oracle(rule, backend, mode, world, np.random.default_rng(_seed("ng", rule, mode, combo)),
                        specials=True)


# ---------------------------------------------------------------------------------------
# the whole loss-scaler sequence, as a training loop runs it

@pytest.mark.parametrize("rule", RULE_NAMES)
def test_amp_loop(rule, backend, restore_globals):
    """bfloat16 params with float32 masters and state: unscale_and_check, then the step with
    found_inf (skipped after an overflow) and max_norm, equals the oracle on the unscaled
    gradients (the clip from global_norm of the unscaled gradients)."""
    world = _world(rule, "bf16-f32", "multi", _seed("amp", rule), master=True)
    orc = world.copy()
    rng = np.random.default_rng(_seed("ampg", rule))
    t = 1
    for k in range(6):
        grads = make_grads(rng, world, t, specials=(k == 2))
        scaled = [_c((g.astype(F32) * 1024.0).astype(g.dtype)) for g in grads]
        found = np.zeros(1, np.float32)
        M.unscale_and_check(scaled, np.array([1024.0], np.float32), found, backend=backend)
        if k == 2:
            assert found[0] == 1.0
        norm = M.global_norm(scaled, backend=backend)
        before = snapshot(world)
        max_norm = 0.5 * norm if math.isfinite(norm) else 1.0
        public_step(rule, world, scaled, t, backend, True, found_inf=found, max_norm=max_norm)
        if found[0]:
            assert_unchanged(world, (), before, "skipped step")
            continue
        oracle_step(rule, orc, scaled, t, clip=_clip(max_norm, norm))
        assert_worlds_equal(world, orc, "amp step %d" % t)
        t += 1


# ---------------------------------------------------------------------------------------
# the Cython kernels' conversions themselves (fastgd._cython.half_cast uses the very load and
# store functions of the kernels) against NumPy's float16 and ml_dtypes' bfloat16 casts; the
# exhaustive run over all 2**32 float32 bit patterns (0 mismatches) is too slow for CI, this
# takes every 16-bit value, every 1021st 32-bit pattern and the rounding neighbourhoods

def _cython_or_skip():
    from fastgd.backends import available_backends
    if "cython" not in available_backends():
        pytest.skip("the Cython backend is not available")
    from fastgd import _cython
    return _cython


@pytest.mark.parametrize("half", [np.float16, ml_dtypes.bfloat16], ids=["float16", "bfloat16"])
def test_kernel_conversions_equal_numpy_and_ml_dtypes(half):
    C = _cython_or_skip()
    bits16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    src = bits16.view(half)
    out = np.empty(src.size, np.float32)
    C.half_cast(src, out)
    with np.errstate(all="ignore"):
        want = src.astype(np.float32)
    assert np.array_equal(out.view(np.uint32), want.view(np.uint32))
    # float32 -> half: a stride through all patterns, and every pattern within 3 of each
    # half-way point and representable value of the target (ties to even, both directions)
    if half is np.float16:  # the float32 values of every float16, and the half-way points above them
        points = want.view(np.uint32).astype(np.int64)
        tie = 1 << 12
    else:  # bfloat16 is float32's top 16 bits
        points = bits16.astype(np.int64) << 16
        tie = 1 << 15
    spaced = np.arange(0, 1 << 32, 1021, dtype=np.int64)
    near = np.concatenate([points + d for d in range(-3, 4)] + [points + tie + d for d in range(-3, 4)])
    x = (np.concatenate([spaced, near]) % (1 << 32)).astype(np.uint32).view(np.float32)
    got = np.empty(x.size, half)
    C.half_cast(x, got)
    with np.errstate(all="ignore"):
        ref = x.astype(half)
    bad = np.flatnonzero(got.view(np.uint16) != ref.view(np.uint16))
    assert bad.size == 0, ["%08x -> %04x, want %04x" % (x.view(np.uint32)[i], got.view(np.uint16)[i],
                                                          ref.view(np.uint16)[i]) for i in bad[:5]]


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_scale_and_clip_with_gradients_that_underflow_when_unscaled(momentum, backend):
    """grad_scale (a power of two) and max_norm together: where g / scale underflows (float32
    subnormals) the spec rounds twice, (g / s) * c, and the kernels may not fold the two into
    one factor.  SGD from zero state with lr=1 writes the unscaled, clipped gradient itself
    (into param, and the momentum buffer).  The norm is exact (3, 4 and values far too small
    to count), so every backend gets the same clip factor and must equal the numpy backend
    bit for bit."""
    # float32 subnormals k * 2**-149 whose unscaling rounds: with this clip (1e-3 / (5 / 1024 +
    # 1e-6)), (g / 1024) * c and g * (c / 1024) differ for k = 0x9c5... (found by search)
    tiny = np.arange(0x9c0, 0xa00, dtype=np.uint32).view(np.float32)
    g = np.concatenate([np.array([3.0, 4.0], np.float32), tiny, -tiny])
    results = []
    for b in (backend, "numpy"):
        p = np.zeros_like(g)
        buf = np.zeros_like(g)
        fastgd.sgd_step(p, g, buf, lr=1.0, momentum=momentum, step=1, grad_scale=1024.0, max_norm=1e-3, backend=b)
        results.append((p, buf))
    c = np.float32(1e-3 / (5 / 1024 + 1e-6))  # the clip factor (the norm, 5 / 1024, is exact)
    with np.errstate(all="ignore"):  # the two orders do differ on these gradients
        assert not np.array_equal((g / np.float32(1024)) * c, g * (c * np.float32(2.0 ** -10)))
    for a, want in zip(*results):
        assert np.array_equal(a.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("state", ["float16", "float32"])
def test_float16_nan_payloads_pass_through_like_numpy(state, backend):
    """AMSGrad's max passes a stored NaN through without arithmetic, so the float16 loops'
    conversions (the hardware's, with the software rule for blocks holding a NaN) must keep a
    signalling NaN's and a quiet NaN's payload bits exactly as NumPy's casts do; every 16-block
    alignment is covered (NaNs at several offsets of an odd-sized array)."""
    n = 77
    rng = np.random.default_rng(7)
    base = rng.standard_normal(n).astype(np.float16)
    nan_bits = np.array([0x7c01, 0x7e05, 0xfc11, 0x7dff, 0xfe00], np.uint16)
    out = []
    for b in (backend, "numpy"):
        p = base.copy()
        g = (base * np.float16(0.5)).copy()
        m = np.zeros(n, state)
        v = np.full(n, 0.25, state)
        vmax = np.full(n, 0.5, np.float16 if state == "float16" else np.float32)
        if state == "float16":
            bits = vmax.view(np.uint16)
            bits[[0, 15, 16, 33, 76]] = nan_bits
        else:
            vmax[[0, 15, 16, 33, 76]] = np.array([0x7fa00000, 0x7fc00005, 0xff800011, 0x7fffffff, 0xffc00000],
                                                 np.uint32).view(np.float32)
        pv = p.view(np.uint16)
        pv[[3, 20, 40]] = np.array([0x7c03, 0xfe01, 0x7e10], np.uint16)  # NaN params too
        with np.errstate(all="ignore"):
            fastgd.adam_step(p, g, m, v, step=2, lr=1e-2, amsgrad=True, max_exp_avg_sq=vmax, backend=b)
        out.append((p.view(np.uint16).copy(), vmax.view(np.uint16 if state == "float16" else np.uint32).copy(),
                    m.view(np.uint16 if state == "float16" else np.uint32).copy()))
    for got, want in zip(*out):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("n", [77, 40_003])
def test_bfloat16_block_stores_keep_subnormals_and_canonical_nans(n, backend):
    """The all-bfloat16 loops store a block at a time (with AVX512_BF16's vcvtne2ps2bf16 where
    the CPU has it, which flushes subnormals to zero and keeps NaN payloads), so blocks holding a
    subnormal or a NaN must come out as the software rule's: subnormals kept, every NaN 0x7fc0
    with its sign (Eigen's and ml_dtypes' rule).  SGD with lr=1, momentum
    and step=1 (all-bfloat16: the buffer is bfloat16 too; without momentum the step has no
    bfloat16 state and takes the in-register loop) stores b = g and p - g exactly where both are
    bfloat16 subnormals or NaN; the other values are random normal
    numbers, the expected bits are computed here from float32 (independently of fastgd), at
    scattered offsets of a one-thread and a two-thread size."""
    rng = np.random.default_rng(11)
    p32 = rng.standard_normal(n).astype(F32)
    g32 = (rng.standard_normal(n) * 0.01).astype(F32)
    at = rng.choice(n, size=min(n // 3, 4000), replace=False)
    sub = np.arange(1, 0x80, dtype=np.uint32) << 16  # bfloat16 subnormals as float32 bits
    tiny = sub[rng.integers(0, sub.size, at.size)].view(F32) * rng.choice(np.array([-1, 1], F32), at.size)
    p32[at] = tiny
    g32[at] = np.where(rng.random(at.size) < 0.5, np.float32(0.0), tiny[::-1])
    nan_at = rng.choice(np.setdiff1d(np.arange(n), at), size=7, replace=False)
    p = p32.astype(BF16)
    g = g32.astype(BF16)
    pb = p.view(np.uint16)
    pb[nan_at] = np.array([0x7fa0, 0xffc1, 0x7f81, 0xff80 | 0x0033, 0x7fff, 0xffff, 0x7fc0], np.uint16)
    p_in = p.astype(F32)
    with np.errstate(all="ignore"):
        want = p_in - g.astype(F32)
    want_bits = want.view(np.uint32)
    # round to nearest even by hand; NaN to 0x7fc0 with its sign
    rounded = ((want_bits + 0x7FFF + ((want_bits >> 16) & 1)) >> 16).astype(np.uint16)
    rounded = np.where(np.isnan(want), ((want_bits >> 16) & 0x8000).astype(np.uint16) | np.uint16(0x7FC0), rounded)
    assert np.count_nonzero((rounded[at] & 0x7F80) == 0) > at.size // 4, "test bug: too few subnormal results"
    b = np.zeros(n, BF16)
    with np.errstate(all="ignore"):
        fastgd.sgd_step(p, g, b, lr=1.0, momentum=0.5, step=1, backend=backend)
    for name, got, want_ in (("buffer", b.view(np.uint16), g.view(np.uint16)),
                             ("param", p.view(np.uint16), rounded)):
        bad = np.flatnonzero(got != want_)
        assert bad.size == 0, "%s: %d stores differ, first at %d: %#06x, expected %#06x" % (
            name, bad.size, bad[0], got[bad[0]], want_[bad[0]])


@pytest.mark.parametrize("variant", ["base", "avx2", "avx512"])
def test_every_simd_variant_equals_the_oracle(variant):
    """The Cython kernels are compiled per instruction set and their half-precision loops differ
    between variants (bfloat16 params with float32 state take the block loops without AVX-512BW,
    the in-register loop with it; AVX512_BF16 stores only where the CPU has them), but a machine
    imports only its best variant: this file's and test_half_hostile.py's Cython tests rerun in a
    subprocess with each other variant the CPU can run forced by FASTGD_SIMD."""
    from fastgd._cython import SIMD_VARIANT

    if variant == SIMD_VARIANT:
        pytest.skip("the %s variant is the one this run imported: the tests above ran on it" % variant)
    if variant != "base" and not fastgd.build_info()["cpu_features"].get(variant):
        pytest.skip("this CPU cannot run the %s variant" % variant)
    if importlib.util.find_spec("fastgd._cython._rules_" + variant) is None:
        pytest.skip("the %s variant is not built here (non-x86 or FASTGD_NO_SIMD_VARIANTS)" % variant)
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, FASTGD_SIMD=variant)
    env["FASTGD_REQUIRE_BACKENDS"] = "cython,numpy"  # (numba's tests are deselected below)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k", "cython",
                        os.path.join(here, "test_half.py"), os.path.join(here, "test_half_hostile.py"),
                        "--deselect", os.path.join(here, "test_half.py") + "::test_every_simd_variant_equals_the_oracle"],
                       env=env, capture_output=True, text=True, timeout=900)
    tail = (r.stdout + r.stderr)[-3000:]
    assert r.returncode == 0, "FASTGD_SIMD=%s: pytest exited %d\n%s" % (variant, r.returncode, tail)
    assert " passed" in tail and "deselected" in tail, tail
