"""The pytest-benchmark side of the one harness.  The kernel table, the data, the calls timed,
the bytes moved, the timers, the load average, the machine description and the size labels
are ``fastgd.bench``'s (also ``python -m fastgd.bench``'s); here is what only the suites need:
their settings (quick mode, budget), the arrays of one benchmark and their reset, skipping a
backend that is not here, and the round loop of a benchmark (warm-up, rounds from the budget,
``benchmark.pedantic``, the finiteness check; see test_bench_steps.py's docstring)."""
import os

import numpy as np
import pytest

import fastgd
from fastgd.backends import backend_module, threads_for
from fastgd.bench import KERNELS, call_seconds, loadavg
from fastgd.bench import size_label  # noqa: F401 - (and call_seconds, loadavg) as this module had them


def env_quick():
    """``FASTGD_BENCH_QUICK`` set (and not 0): the suites' quick sizes."""
    return os.environ.get("FASTGD_BENCH_QUICK", "") not in ("", "0")


def budget_seconds():
    """Timed work per benchmark; the rounds are chosen from warm calls to fill it."""
    return float(os.environ.get("FASTGD_BENCH_BUDGET", "1.0"))


def backend_or_skip(name):
    """The backend's kernel namespace; skips the benchmark where the backend is not here."""
    if name not in fastgd.available_backends():
        pytest.skip("backend %r is not available on this machine" % name)
    return backend_module(name)


class ResetArrays:
    """param (and its pristine copy param0), grad and the zero-initialised states of one
    benchmark (``zero_state`` fills them).  ``reset`` restores param and zeroes the states."""

    @classmethod
    def zero_state(cls, grad, param0, kernel, state_dtype, reset_max):
        """param a copy of ``param0``, one zero array of ``state_dtype`` per state array of
        ``kernel`` (fastgd.bench.KERNELS); reset before every round up to ``reset_max`` elements."""
        self = cls()
        self.grad, self.param0 = grad, param0
        self.param = param0.copy()
        self.states = [np.zeros(param0.size, state_dtype) for _ in KERNELS[kernel].states]
        self.reset_each_round = param0.size <= reset_max
        return self

    def written(self):
        return [self.param] + self.states

    def reset(self):
        np.copyto(self.param, self.param0)
        for s in self.states:
            s.fill(0)


def rounds_for(benchmark, settings, one_round):
    """Rounds filling ``settings.budget`` seconds (``min_rounds`` to ``max_rounds``), chosen from
    warm calls of ``one_round``; 1 under ``--benchmark-disable`` (the smoke run)."""
    if not benchmark.enabled:
        return 1
    t = call_seconds(one_round)            # warm-up: JIT compilation, first-touch page faults
    if t < settings.budget / settings.min_rounds:
        # the median of three clean calls chooses the rounds (one call that lost a time
        # slice to another process would otherwise cut them to the minimum)
        t = float(np.median([call_seconds(one_round) for _ in range(3)]))
    return int(min(settings.max_rounds, max(settings.min_rounds, settings.budget / t)))


def measure(benchmark, settings, case, arrays, target, args=(), kwargs=None, reset_scalars=None, info=None,
            finite=lambda a: np.isfinite(a).all()):
    """Run ``target(*args, **kwargs)`` as one benchmark of ``case`` (its group, backend, kind,
    dtype, n, bytes_moved); ``info``: more extra_info; ``finite``: the check of every written
    array afterwards (None: no check)."""
    kwargs = kwargs or {}

    def setup():
        if arrays.reset_each_round:
            arrays.reset()
        if reset_scalars is not None:
            reset_scalars()

    def one_round():
        setup()
        target(*args, **kwargs)

    rounds = rounds_for(benchmark, settings, one_round)
    benchmark.group = case.group
    compiled = case.backend != "numpy"
    benchmark.extra_info.update(
        backend=case.backend, kind=case.kind, dtype=case.dtype, n=case.n, bytes_moved=case.bytes_moved(),
        num_threads=fastgd.get_num_threads(),
        threads_used=(threads_for(case.n) if compiled else 1),
        numba_threads=(settings.numba_threads if case.backend == "numba" else None),
        simd_variant=(fastgd.build_info().get("simd_variant") if case.backend == "cython" else None),
        state="reset each round" if arrays.reset_each_round else "allocated once, drifts",
        rounds=rounds, loadavg=loadavg(), **(info or {}))
    benchmark.pedantic(target, args=args, kwargs=kwargs, setup=setup, rounds=rounds, iterations=1)
    if finite is not None:
        # not a speed check: drifting state must not reach inf/NaN, whose arithmetic times differently
        for a in arrays.written():
            assert finite(a), "state blew up during %s; lower the learning rate" % case.id
