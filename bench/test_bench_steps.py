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

import numpy as np
import pytest

import fastgd
from fastgd import bench as _bench
from fastgd._rules import RULES as _RULES
from fastgd.backends import backend_module

from _harness import ResetArrays, measure, size_label

BACKENDS = ("numpy", "cython", "numba")      # the reference first: every group reads from it
STEP = 10  # for rules with bias correction: past RAdam's warm-up (rho_t > 5), as in training


@dataclasses.dataclass(frozen=True)
class Kernel:
    name: str          # fastgd.<name>_step
    attr: str          # the backend function it calls
    states: tuple      # positional state arrays after (param, grad), all starting at zero
    hyper: dict        # keyword hyperparameters (torch defaults except where set here)


# every rule of the table (fastgd/_rules.py), with the state arrays and hyperparameters of
# fastgd.bench's report (one place for both harnesses; NAdam's mu_product is added below)
KERNELS = tuple(Kernel(name, _RULES[name].kernel, states, hyper)
                for name, (states, hyper, _torch) in _bench.KERNELS.items())
SIZES = (("float32", 1_000), ("float32", 100_000), ("float32", 1_000_000), ("float32", 16_000_000),
         ("float64", 1_000_000))
QUICK_SIZES = (("float32", 1_000), ("float32", 100_000), ("float64", 1_000))


@dataclasses.dataclass(frozen=True)
class Case:
    kernel: Kernel
    dtype: str
    n: int
    backend: str
    kind: str          # "step" or "skeleton"
    order: tuple       # run order, see conftest.pytest_collection_modifyitems

    @property
    def group(self):
        return "%s/%s/%s" % (self.kernel.name, self.dtype, size_label(self.n))

    @property
    def id(self):
        return "%s-%s-%s-%s" % (self.kernel.name, self.dtype, size_label(self.n), self.backend)

    def bytes_moved(self):
        """itemsize * n * (reads + writes): reads grad, param, states; writes param, states."""
        k = len(self.kernel.states)
        return np.dtype(self.dtype).itemsize * self.n * ((2 + k) + (1 + k))


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
    if case.backend not in fastgd.available_backends():
        pytest.skip("backend %r is not available on this machine" % case.backend)
    mod = backend_module(case.backend)
    if not hasattr(mod, case.kernel.attr):
        pytest.skip("the %s backend has no %s kernel yet" % (case.backend, case.kernel.attr))
    return mod


class Arrays(ResetArrays):
    """param, grad and the zero-initialised states of one benchmark, and their reset."""

    def __init__(self, case, bench_data, reset_max):
        grad, param0 = bench_data(case.dtype, case.n)
        self.grad = grad
        self.param0 = param0
        self.param = param0.copy()
        self.states = [np.zeros_like(param0) for _ in case.kernel.states]
        self.reset_each_round = case.n <= reset_max


def _measure(benchmark, settings, case, arrays, target, args, kwargs, reset_scalars=None):
    measure(benchmark, settings, case, arrays, target, args, kwargs, reset_scalars,
            info=dict(kernel=case.kernel.name, n_states=len(case.kernel.states)))


def test_step(benchmark, bench_data, case, request):
    """fastgd.<kernel>_step(..., backend=...): the public call, validation included."""
    _module(case)
    settings = request.config.fastgd_bench
    arrays = Arrays(case, bench_data, settings.reset_max)
    kwargs = dict(case.kernel.hyper, backend=case.backend)
    reset_scalars = None
    if case.kernel.name == "nadam":
        # torch keeps the running product of NAdam's momentum schedule in the state; an
        # optimizer passes it, so that is the call measured (restored before every round)
        prod = fastgd.nadam_mu_product(STEP - 1)
        mu_product = np.array([prod])
        kwargs["mu_product"] = mu_product

        def reset_scalars():
            mu_product[0] = prod
    target = getattr(fastgd, case.kernel.name + "_step")
    _measure(benchmark, settings, case, arrays, target, (arrays.param, arrays.grad, *arrays.states), kwargs,
             reset_scalars)


def test_copy_skeleton(benchmark, bench_data, case, request):
    """backend.copy_skeleton(grad, param, *states): the kernel's bytes, trivial arithmetic."""
    mod = _module(case)     # skipped with the kernel: nothing to compare it with yet
    if not hasattr(mod, "copy_skeleton"):
        pytest.skip("the %s backend has no copy_skeleton" % case.backend)
    settings = request.config.fastgd_bench
    arrays = Arrays(case, bench_data, settings.reset_max)
    _measure(benchmark, settings, case, arrays, mod.copy_skeleton,
             (arrays.grad, arrays.param, *arrays.states), {})
