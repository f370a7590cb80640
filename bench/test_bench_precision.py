"""Half precision: every rule in every dtype combination beside the skeleton of its bytes,
and the fused extras (grad_scale + found_inf, max_norm) in float32.

Benchmark group ``<kernel>/<param and grad dtype>/<state dtype>/<size>`` (e.g.
``adam/bfloat16/float32/1.6e7``) holds the step on each backend and a skeleton that moves the
same bytes, run back to back: the backend's ``copy_skeleton`` for float32, Cython's
``half_skeleton`` for 2-byte params and grads (with 4- or 2-byte state; no other backend has
one).  The combinations are those of ``fastgd.bench.COMBOS``: float32 (the reference),
bfloat16 params and grads with float32 state, all-bfloat16, float16 with float32 state,
all-float16.  ``extra_info`` records kernel, backend, kind, ``dtype`` as ``<param>/<state>``
(so ``bench/report.py`` keeps these rows apart from test_bench_steps.py's), n and
``bytes_moved`` (grad read, param and every state array read and written, each at its own
item size: Adam 28, 22 and 14 bytes per element).

Group ``extras/<kernel>/float32/<size>`` holds, per backend, Adam's plain step, the step with
``grad_scale`` and ``found_inf`` (a float32 array holding 0: the step runs), with ``max_norm``
(the norm pass and the step), both, the unfused way (``fastgd.multi.unscale_and_check`` by 1.0,
then the step) and the norm pass alone (kind ``extra``, ``variant`` in extra_info).  Their
ratios to the plain step are ratios of medians taken seconds apart; ``python -m fastgd.bench
--precision`` measures the same comparisons alternately in rounds (paired ratios).

Sizes: 1e5 on every backend; 1.6e7 on cython and numba; 6.4e7 on cython (numba's and NumPy's
half-precision steps convert whole arrays with NumPy, seconds per call at that size).  Quick
(``--quick`` / ``FASTGD_BENCH_QUICK=1``): 1e3 and 1e5, every backend; extras at 1e5.  How a
benchmark runs (warm-up, rounds from ``FASTGD_BENCH_BUDGET``, state reset each round up to
1e5 elements and drifting above, smoke mode) is test_bench_steps.py's; the arrays are made from
the session's seeded float32 data, cast once per (dtype, size).
"""
import dataclasses

import numpy as np
import pytest

from fastgd import bench as _bench
from fastgd.bench import BACKENDS, size_label

from _harness import ResetArrays, backend_or_skip, measure

SIZES = ((100_000, BACKENDS), (16_000_000, ("cython", "numba")), (64_000_000, ("cython",)))
QUICK_SIZES = tuple((n, BACKENDS) for n in _bench.QUICK_PRECISION_SIZES)
EXTRAS_KERNELS = ("adam",)
EXTRAS_SIZES = (16_000_000,)
QUICK_EXTRAS_SIZES = (100_000,)


@dataclasses.dataclass(frozen=True)
class Case:
    kernel: str        # fastgd.<kernel>_step
    combo: tuple       # (label, param and grad dtype, state dtype), or for extras ("float32", ...)
    n: int
    backend: str
    kind: str          # "step", "skeleton" or "extra"
    variant: str       # extras: fastgd.bench.EXTRAS; else ""
    order: tuple       # run order, see conftest.pytest_collection_modifyitems

    @property
    def dtype(self):
        return "%s/%s" % self.combo[1:]

    @property
    def group(self):
        if self.kind == "extra":
            return "extras/%s/float32/%s" % (self.kernel, size_label(self.n))
        return "%s/%s/%s" % (self.kernel, self.dtype, size_label(self.n))

    @property
    def id(self):
        if self.kind == "extra":
            return "%s-float32-%s-%s-%s" % (self.kernel, size_label(self.n), self.backend, self.variant)
        return "%s-%s-%s-%s" % (self.kernel, self.combo[0], size_label(self.n), self.backend)

    def bytes_moved(self):
        if self.kind == "extra":
            return _bench.extra_bytes(self.kernel, self.variant) * self.n
        return _bench.combo_bytes(self.kernel, *self.combo[1:]) * self.n


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    quick = metafunc.config.fastgd_bench.quick
    name = metafunc.function.__name__
    cases = []
    if name == "test_extra":
        for si, n in enumerate(QUICK_EXTRAS_SIZES if quick else EXTRAS_SIZES):
            for ki, k in enumerate(EXTRAS_KERNELS):
                for bi, b in enumerate(BACKENDS):
                    for vi, v in enumerate(_bench.EXTRAS):
                        cases.append(Case(k, ("float32", "float32", "float32"), n, b, "extra", v,
                                          (1, si, ki, bi, vi, 0)))
    else:
        kind = "skeleton" if name == "test_skeleton" else "step"
        for ki, k in enumerate(_bench.KERNELS):
            for si, (n, backends) in enumerate(QUICK_SIZES if quick else SIZES):
                for ci, combo in enumerate(_bench.COMBOS):
                    for bi, b in enumerate(BACKENDS):
                        # a half-precision skeleton exists in Cython only
                        if b in backends and not (kind == "skeleton" and combo[1] != "float32" and b != "cython"):
                            cases.append(Case(k, combo, n, b, kind, "", (0, ki, si, ci, bi, kind == "skeleton")))
    metafunc.parametrize("case", cases, ids=[c.id for c in cases])


# ---------------------------------------------------------------------------------------

_cast = {}


@pytest.fixture(scope="module")
def half_data(bench_data):
    """``half_data(dtype, n) -> (grad, param0)``: the session's seeded float32 arrays cast to
    ``dtype`` (made once per module; nothing writes them)."""
    def get(dtype, n):
        key = (dtype, int(n))
        if key not in _cast:
            grad, param0 = bench_data(np.float32, n)
            dt = _bench.np_dtype(dtype)
            _cast[key] = (grad, param0) if dt == np.float32 else (grad.astype(dt), param0.astype(dt))
        return _cast[key]
    yield get
    _cast.clear()


def _backend(case):
    mod = backend_or_skip(case.backend)
    if "bfloat16" in case.combo and not _bench.has_ml_dtypes():
        pytest.skip("ml_dtypes is not installed (bfloat16)")
    return mod


def _arrays(case, half_data, settings):
    """param, grad and the zero-initialised states of one benchmark (the case's dtypes), and
    their reset."""
    _, pd, sd = case.combo
    grad, param0 = half_data(pd, case.n)
    return ResetArrays.zero_state(grad, param0, case.kernel, _bench.np_dtype(sd), settings.reset_max)


def _finite(a):
    return np.isfinite(a.astype(np.float32)).all()  # (bfloat16 via float32: exact)


def _measure(benchmark, settings, case, arrays, target, args=(), kwargs=None, reset_scalars=None,
             check_finite=True):
    """The shared round loop (bench/_harness.py)."""
    measure(benchmark, settings, case, arrays, target, args, kwargs, reset_scalars,
            info=dict(kernel=case.kernel, param_dtype=case.combo[1], state_dtype=case.combo[2],
                      variant=case.variant or None, n_states=len(arrays.states),
                      bytes_per_element=case.bytes_moved() // case.n),
            finite=_finite if check_finite else None)


def test_step(benchmark, half_data, case, request):
    """fastgd.<kernel>_step(..., backend=...) with the combination's dtypes: the public call
    (NAdam: with its running product, restored before every round)."""
    _backend(case)
    settings = request.config.fastgd_bench
    arrays = _arrays(case, half_data, settings)
    target, args, kwargs, reset_scalars = _bench.step_args(case.kernel, arrays.param, arrays.grad, arrays.states,
                                                           case.backend)
    _measure(benchmark, settings, case, arrays, target, args, kwargs, reset_scalars)


def test_skeleton(benchmark, half_data, case, request):
    """The skeleton of the combination's bytes (fastgd.bench.skeleton_name): copy_skeleton
    (float32, every backend) or Cython's half_skeleton (2-byte params and grads)."""
    mod = _backend(case)
    name = _bench.skeleton_name(case.combo[1])
    half = name == "half_skeleton"
    if half and case.backend != "cython":
        pytest.skip("only the cython backend has a half-precision skeleton")
    skel = getattr(mod, name, None)
    if skel is None:
        pytest.skip("the %s backend has no %s" % (case.backend, name))
    settings = request.config.fastgd_bench
    arrays = _arrays(case, half_data, settings)
    # half_skeleton adds the 16-bit patterns as integers: its outputs are no numbers to check
    _measure(benchmark, settings, case, arrays, skel, (arrays.grad, arrays.param, *arrays.states),
             check_finite=not half)


def test_extra(benchmark, half_data, case, request):
    """The fused extras in float32 (fastgd.bench.extra_calls; see the module's docstring)."""
    _backend(case)
    settings = request.config.fastgd_bench
    arrays = _arrays(case, half_data, settings)
    if case.variant == "unfused":
        arrays.grad = arrays.grad.copy()  # it divides the gradient in place (by 1.0); the session's stays untouched
    calls, found_inf = _bench.extra_calls(case.kernel, arrays.param, arrays.grad, arrays.states, case.backend)
    target, reset_scalars = calls[case.variant]
    _measure(benchmark, settings, case, arrays, target, reset_scalars=reset_scalars)
    assert found_inf[0] == 0
