"""Settings, data and bookkeeping shared by the fastgd benchmarks (see bench/README.md).

Options and environment:
  --quick / FASTGD_BENCH_QUICK=1   float32 at 1e3 and 1e5 and float64 at 1e3 only
  FASTGD_BENCH_BUDGET=seconds      timed work per benchmark (default 1.0), sets the rounds
  FASTGD_NUM_THREADS / OMP_NUM_THREADS   fastgd's thread count (default: all cores)
"""
import types

import numpy as np
import pytest

import fastgd
from fastgd.bench import SEED, machine_summary, seeded_arrays

from _harness import budget_seconds, env_quick

RESET_MAX = 100_000       # state is reset before every round up to this many elements (see README)
MIN_ROUNDS = 5
MAX_ROUNDS = 10_000


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", default=False,
                     help="fastgd step benchmarks: sizes 1e3 and 1e5 only (also FASTGD_BENCH_QUICK=1)")


def quick_mode(config):
    return bool(config.getoption("--quick", default=False)) or env_quick()


# ---------------------------------------------------------------------------------------
# threads: pin them once for the session, record them in every benchmark

def _pin_threads():
    n = fastgd.get_num_threads()          # fastgd's default (FASTGD_NUM_THREADS, OMP_NUM_THREADS, cores)
    fastgd.set_num_threads(n)
    numba_threads = None
    if "numba" in fastgd.available_backends():
        import numba
        numba_threads = min(n, numba.config.NUMBA_NUM_THREADS)
        numba.set_num_threads(numba_threads)  # numba's parallel variant otherwise uses all its workers
    return n, numba_threads


def pytest_configure(config):
    threads, numba_threads = _pin_threads()
    config.fastgd_bench = types.SimpleNamespace(
        quick=quick_mode(config), budget=budget_seconds(), reset_max=RESET_MAX, min_rounds=MIN_ROUNDS,
        max_rounds=MAX_ROUNDS, seed=SEED, threads=threads, numba_threads=numba_threads)


def pytest_collection_modifyitems(session, config, items):
    """Run each backend's kernel and its copy skeleton back to back, group by group, so the
    ratio between them is measured as close together in time as pytest-benchmark allows."""
    def order(item):
        spec = getattr(item, "callspec", None)
        case = spec.params.get("case") if spec else None
        return getattr(case, "order", None)
    slots = [i for i, item in enumerate(items) if order(item) is not None]
    # within each file (the files' own order tuples differ; each file's items stay in its block)
    ordered = sorted((items[i] for i in slots), key=lambda item: (item.nodeid.split("::")[0], order(item)))
    for i, item in zip(slots, ordered):  # other tests (e.g. tests/ in the same session) keep their places
        items[i] = item


# ---------------------------------------------------------------------------------------
# machine description (fastgd.bench.machine_summary), stored in the JSON for bench/report.py

def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["fastgd"] = machine_summary()
    machine_info["fastgd"]["bench_threads"] = config.fastgd_bench.threads
    machine_info["fastgd"]["bench_numba_threads"] = config.fastgd_bench.numba_threads


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["fastgd_bench"] = dict(vars(config.fastgd_bench))


# ---------------------------------------------------------------------------------------
# data: one seeded gradient and start point per (dtype, size), shared by all benchmarks

_data = {}


@pytest.fixture(scope="session")
def bench_data():
    """``bench_data(dtype, n) -> (grad, param0)``: ``fastgd.bench.seeded_arrays``, made once per session.
    Benchmarks copy ``param0``; nothing writes ``grad``."""
    def get(dtype, n):
        key = (np.dtype(dtype).name, int(n))
        if key not in _data:
            _data[key] = seeded_arrays(dtype, n)
        return _data[key]
    yield get
    _data.clear()
