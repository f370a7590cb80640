"""Every public step kernel x backend x size, beside the copy skeleton that moves the same bytes.

Benchmark group ``<kernel>/<dtype>/<size>`` (e.g. ``adam/float32/1e6``) holds the kernel on
each backend and each backend's ``copy_skeleton``, run back to back.  ``bench/report.py``
turns the JSON into speedups, GB/s and fractions of the skeleton's bandwidth.

How a benchmark runs (``_measure``):
  1. the arrays are allocated and filled outside the timing;
  2. warm-up calls: numba compiles (or loads its cache), the fresh pages are faulted in;
     the median of three more calls chooses the rounds (``FASTGD_BENCH_BUDGET`` seconds in
     all, 5 to 10,000 rounds, one call per round);
  3. ``benchmark.pedantic(..., setup=...)``.  State policy: up to 1e5 elements ``setup``
     restores param and state from a pristine copy before every round (tens of us at most,
     untimed; these sizes run thousands of rounds).  Above, the arrays are allocated once
     and the state drifts (thousands of rounds at 1e6, dozens at 1.6e7): a reset would copy
     190-260 MB per round at 1.6e7, more than the step itself, and would leave other data in
     cache than a training loop does.  Learning rates are small, so values stay finite;
     this is checked afterwards;
  4. with ``--benchmark-disable`` (the smoke run) only the one call of step 3 happens.
"""
import dataclasses

import pytest

from fastgd._rules import RULES
from fastgd.bench import BACKENDS, KERNELS, combo_bytes, size_label, step_args

from _harness import ResetArrays, backend_or_skip, measure

# the kernels: fastgd.bench.KERNELS (every rule of fastgd/_rules.py, with the state arrays and
# hyperparameters of python -m fastgd.bench's report); the backends: fastgd.bench.BACKENDS, the
# reference first (every group reads from it)
SIZES = (("float32", 1_000), ("float32", 100_000), ("float32", 1_000_000), ("float32", 16_000_000),
         ("float64", 1_000_000))
QUICK_SIZES = (("float32", 1_000), ("float32", 100_000), ("float64", 1_000))


@dataclasses.dataclass(frozen=True)
class Case:
    kernel: str        # fastgd.<kernel>_step
    dtype: str
    n: int
    backend: str
    kind: str          # "step" or "skeleton"
    order: tuple       # run order, see conftest.pytest_collection_modifyitems

    @property
    def group(self):
        return "%s/%s/%s" % (self.kernel, self.dtype, size_label(self.n))

    @property
    def id(self):
        return "%s-%s-%s-%s" % (self.kernel, self.dtype, size_label(self.n), self.backend)

    def bytes_moved(self):
        """itemsize * n * (reads + writes): reads grad, param, states; writes param, states."""
        return combo_bytes(self.kernel, self.dtype, self.dtype) * self.n


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    kind = "skeleton" if metafunc.function.__name__ == "test_copy_skeleton" else "step"
    sizes = QUICK_SIZES if metafunc.config.fastgd_bench.quick else SIZES
    cases = [Case(k, dt, n, b, kind, (ki, si, bi, kind == "skeleton"))
             for ki, k in enumerate(KERNELS) for si, (dt, n) in enumerate(sizes)
             for bi, b in enumerate(BACKENDS)]
    metafunc.parametrize("case", cases, ids=[c.id for c in cases])


# ---------------------------------------------------------------------------------------

def _module(case):
    """The backend's kernel namespace; skip (with the reason) what does not exist here yet."""
    mod = backend_or_skip(case.backend)
    attr = RULES[case.kernel].kernel
    if not hasattr(mod, attr):
        pytest.skip("the %s backend has no %s kernel yet" % (case.backend, attr))
    return mod


def _arrays(case, bench_data, settings):
    """param, grad and the zero-initialised states of one benchmark, and their reset."""
    grad, param0 = bench_data(case.dtype, case.n)
    return ResetArrays.zero_state(grad, param0, case.kernel, param0.dtype, settings.reset_max)


def _measure(benchmark, settings, case, arrays, target, args, kwargs, reset_scalars=None):
    measure(benchmark, settings, case, arrays, target, args, kwargs, reset_scalars,
            info=dict(kernel=case.kernel, n_states=len(arrays.states)))


def test_step(benchmark, bench_data, case, request):
    """fastgd.<kernel>_step(..., backend=...): the public call, validation included.  NAdam
    gets the running product of its momentum schedule, as an optimizer passes it (torch keeps
    it in the state), restored before every round."""
    _module(case)
    settings = request.config.fastgd_bench
    arrays = _arrays(case, bench_data, settings)
    target, args, kwargs, reset_scalars = step_args(case.kernel, arrays.param, arrays.grad, arrays.states,
                                                    case.backend)
    _measure(benchmark, settings, case, arrays, target, args, kwargs, reset_scalars)


def test_copy_skeleton(benchmark, bench_data, case, request):
    """backend.copy_skeleton(grad, param, *states): the kernel's bytes, trivial arithmetic."""
    mod = _module(case)     # skipped with the kernel: nothing to compare it with yet
    if not hasattr(mod, "copy_skeleton"):
        pytest.skip("the %s backend has no copy_skeleton" % case.backend)
    settings = request.config.fastgd_bench
    arrays = _arrays(case, bench_data, settings)
    _measure(benchmark, settings, case, arrays, mod.copy_skeleton,
             (arrays.grad, arrays.param, *arrays.states), {})
