"""The descent driver on the texts' Beale experiment: the compiled loop against the texts'
pure-Python loop (SEEDS.md sec. 5: "these loops run for hundreds of thousands of iterations in
pure Python; a compiled loop should make them interactive").

Group ``descent/beale`` (per-iteration times are in ``extra_info["per_iter_ns"]``):
  * ``textbook``: the texts' loop, NumPy gradient, ``x = x - lr*df(x)`` with the stop test
    and the path kept, 20,000 iterations (300,000 would take seconds per round);
  * ``driver_python``: ``fastgd.gradient_descent`` with a NumPy gradient (the Python loop:
    one fused kernel call per step), 20,000 iterations;
  * ``compiled``: ``fastgd.gradient_descent`` with ``functions.beale.jit_grad`` (the whole
    loop in numba), the full 300,000 iterations, JIT compilation done in a warm-up call.
``test_speedup_alternating`` measures textbook and compiled alternately (A B A B ...) and
reports the median per-iteration ratio (``extra_info["speedup_per_iter"]``, also printed).
Nothing here asserts a speed.

    python -m pytest bench/test_bench_descent.py --benchmark-only -s
"""
import statistics
import time

import numpy as np
import pytest

from fastgd import functions as F
from fastgd.descent import gradient_descent

LR = 5e-6
START = (3.0, 4.0)
N_PYTHON = 20_000
N_COMPILED = 300_000


def textbook_loop(df, x, lr, iterations, epsilon):
    """The texts' gradient-descent loop (stop test before the update, whole path returned)."""
    x = np.array(x, dtype=float)
    history = [x]
    for _ in range(iterations):
        if np.max(np.abs(df(x))) < epsilon:
            break
        x = x - lr * df(x)
        history.append(x)
    return np.array(history)


def beale_df(p):
    """Beale's gradient as the texts write it."""
    x, y = p
    return np.array([2 * (1.5 - x + x * y) * (y - 1) + 2 * (2.25 - x + x * y ** 2) * (y ** 2 - 1)
                     + 2 * (2.625 - x + x * y ** 3) * (y ** 3 - 1),
                     2 * (1.5 - x + x * y) * x + 2 * (2.25 - x + x * y ** 2) * (2 * x * y)
                     + 2 * (2.625 - x + x * y ** 3) * (3 * x * y ** 2)])


def _iterations(n, request):
    quick = request.config.getoption("--quick", default=False)
    return n // 10 if quick else n


def _compiled(n):
    return gradient_descent(F.beale.jit_grad, START, "sgd", lr=LR, iterations=n, tol=1e-8)


@pytest.fixture(scope="module")
def jit():
    pytest.importorskip("numba", reason="numba not installed: no compiled loop")
    r = _compiled(10)  # compile outside any timing
    assert r.compiled
    return F.beale.jit_grad


@pytest.mark.benchmark(group="descent/beale")
def test_textbook(benchmark, request):
    n = _iterations(N_PYTHON, request)
    path = benchmark.pedantic(textbook_loop, args=(beale_df, START, LR, n, 1e-8), rounds=3, iterations=1,
                              warmup_rounds=0)
    assert len(path) == n + 1
    if benchmark.stats:
        benchmark.extra_info["per_iter_ns"] = benchmark.stats.stats.median / n * 1e9
    benchmark.extra_info["iterations"] = n


@pytest.mark.benchmark(group="descent/beale")
def test_driver_python(benchmark, request):
    n = _iterations(N_PYTHON, request)
    r = benchmark.pedantic(gradient_descent, args=(F.beale.grad, START, "sgd"),
                           kwargs=dict(lr=LR, iterations=n, tol=1e-8), rounds=3, iterations=1, warmup_rounds=1)
    assert r.n_iter == n and not r.compiled
    if benchmark.stats:
        benchmark.extra_info["per_iter_ns"] = benchmark.stats.stats.median / n * 1e9
    benchmark.extra_info["iterations"] = n


@pytest.mark.benchmark(group="descent/beale")
def test_compiled(benchmark, request, jit):
    n = _iterations(N_COMPILED, request)
    r = benchmark.pedantic(_compiled, args=(n,), rounds=5, iterations=1, warmup_rounds=1)
    assert r.compiled and r.n_iter == n
    if n == N_COMPILED:  # the published endpoint, as a sanity check of what was timed
        np.testing.assert_array_equal(np.round(r.x, 8), [2.70735828, 0.41689171])
    if benchmark.stats:
        benchmark.extra_info["per_iter_ns"] = benchmark.stats.stats.median / n * 1e9
    benchmark.extra_info["iterations"] = n


@pytest.mark.benchmark(group="descent/speedup")
def test_speedup_alternating(benchmark, request, jit):
    """Textbook (N_PYTHON iterations) and compiled (N_COMPILED) alternately, 3 times each;
    the median per-iteration times and their ratio go to extra_info and stdout."""
    n_py = _iterations(N_PYTHON, request)
    n_c = _iterations(N_COMPILED, request)
    py, comp = [], []
    for _ in range(3):
        t = time.perf_counter()
        textbook_loop(beale_df, START, LR, n_py, 1e-8)
        py.append((time.perf_counter() - t) / n_py)
        t = time.perf_counter()
        _compiled(n_c)
        comp.append((time.perf_counter() - t) / n_c)
    py_ns, c_ns = statistics.median(py) * 1e9, statistics.median(comp) * 1e9
    ratio = py_ns / c_ns
    benchmark.extra_info.update(textbook_per_iter_ns=py_ns, compiled_per_iter_ns=c_ns, speedup_per_iter=ratio,
                                textbook_300k_s_estimate=py_ns * 300_000 * 1e-9,
                                compiled_300k_s=c_ns * 300_000 * 1e-9)
    print("\nBeale, GD lr 5e-6: textbook loop %.0f ns/iter (300k: ~%.2f s), compiled loop %.1f ns/iter "
          "(300k: %.3f s): %.0fx per iteration" % (py_ns, py_ns * 3e-4, c_ns, c_ns * 3e-4, ratio))
    benchmark.pedantic(_compiled, args=(n_c,), rounds=1, iterations=1)
