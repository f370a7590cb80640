"""What the pytest-benchmark suites (test_bench_steps.py, test_bench_precision.py) share: the
arrays of one benchmark and their reset, timing one call, the load average, and the round loop
of a benchmark (warm-up, rounds from the budget, ``benchmark.pedantic``, the finiteness check;
see test_bench_steps.py's docstring)."""
import os
import time

import numpy as np

import fastgd
from fastgd.backends import threads_for


class ResetArrays:
    """param (and its pristine copy param0), grad and the zero-initialised states of one
    benchmark; subclasses fill them.  ``reset`` restores param and zeroes the states."""

    def written(self):
        return [self.param] + self.states

    def reset(self):
        np.copyto(self.param, self.param0)
        for s in self.states:
            s.fill(0)


def size_label(n):
    """1000 -> '1e3', 16000000 -> '1.6e7'."""
    exp = len(str(int(n))) - 1
    mant = n / 10 ** exp
    return ("%de%d" if mant == int(mant) else "%.1fe%d") % (mant, exp)


def call_seconds(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def loadavg():
    """The 1-minute load average when the benchmark starts (None where unknown): on a shared
    machine, threaded kernels lose whole time slices once the load exceeds the free cores."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


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

    if benchmark.enabled:
        t = call_seconds(one_round)            # warm-up: JIT compilation, first-touch page faults
        if t < settings.budget / settings.min_rounds:
            # the median of three clean calls chooses the rounds (one call that lost a time
            # slice to another process would otherwise cut them to the minimum)
            t = float(np.median([call_seconds(one_round) for _ in range(3)]))
        rounds = int(min(settings.max_rounds, max(settings.min_rounds, settings.budget / t)))
    else:
        rounds = 1
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
