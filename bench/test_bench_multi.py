"""The multi-tensor target: Adam over 200 arrays of 4,096 float32 elements in one call of
``fastgd.multi.adam_step``, beside one ``fastgd.adam_step`` over a single array of 819,200
(the same bytes), and a Python loop of 200 single-tensor steps.  Target: multi <= 1.5x one
(cython).  Benchmark group ``multi/adam/float32/<backend>``; the ratio is read from the JSON
(``stats.median`` of ``multi`` over ``one``), or run ``python -m fastgd.bench --multi-only``
for the same comparison timed alternately.

The state is allocated once per benchmark and drifts (lr 1e-3, finite values); warm-up calls
run before the timing (numba compiles, pages are faulted in).  In quick mode the tensors have
1,024 elements.
"""
import numpy as np
import pytest

import fastgd
import fastgd.multi
from fastgd.bench import BACKENDS, STEP, combo_bytes

N_TENSORS = 200


def _backend(name):
    if name not in fastgd.available_backends():
        return pytest.param(name, marks=pytest.mark.skip(reason="backend %r not available" % name))
    return name


@pytest.fixture(params=[_backend(b) for b in BACKENDS[1:] + BACKENDS[:1]])  # the reference last
def backend(request):
    return request.param


def _lists(bench_data, n_tensors, size):
    """params, grads, exp_avgs, exp_avg_sqs: n_tensors arrays of size each (seeded data)."""
    grad, param0 = bench_data(np.float32, n_tensors * size)
    g = [grad[i * size:(i + 1) * size].copy() for i in range(n_tensors)]
    p = [param0[i * size:(i + 1) * size].copy() for i in range(n_tensors)]
    return p, g, [0.1 * x for x in g], [x * x for x in g]


def _run(benchmark, request, target, kind, backend, size):
    cfg = request.config.fastgd_bench
    for _ in range(3):
        target()  # warm-up
    benchmark.group = "multi/adam/float32/%s" % backend
    benchmark.extra_info.update(kind=kind, backend=backend, n_tensors=N_TENSORS, size=size, threads=cfg.threads,
                                bytes_moved=N_TENSORS * size * combo_bytes("adam", "float32", "float32"))
    rounds = max(cfg.min_rounds, min(cfg.max_rounds, 200))
    benchmark.pedantic(target, rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("kind", ["multi", "one", "loop"])
def test_multi_tensor_adam(benchmark, bench_data, request, backend, kind):
    size = 1024 if request.config.fastgd_bench.quick else 4096
    if kind == "one":
        p, g, m, v = _lists(bench_data, 1, N_TENSORS * size)
        p, g, m, v = p[0], g[0], m[0], v[0]

        def target():
            fastgd.adam_step(p, g, m, v, step=STEP, backend=backend)
    elif kind == "multi":
        p, g, m, v = _lists(bench_data, N_TENSORS, size)

        def target():
            fastgd.multi.adam_step(p, g, m, v, step=STEP, backend=backend)
    else:
        p, g, m, v = _lists(bench_data, N_TENSORS, size)

        def target():
            for args in zip(p, g, m, v):
                fastgd.adam_step(*args, step=STEP, backend=backend)
    _run(benchmark, request, target, kind, backend, size)
    for a in (p if isinstance(p, list) else [p]):
        assert np.isfinite(a).all()
