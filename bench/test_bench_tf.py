"""fastgd.tf: every op x backend beside the copy skeleton moving its bytes and TensorFlow's own
kernel (``tf.raw_ops.Resource<Op>``, when TensorFlow is importable: a skip says so otherwise).

Benchmark group ``tf/<op>/<size>`` (float32; sparse ops: ``tf/<op>/<rows>x<inner>/<n rows
stepped>``).  The arrays are made once per benchmark and drift (small learning rates keep them
finite).  ``bench/tf_report.py`` is the side-by-side report (ratios paired per round) quoted
in the README; this suite keeps every op benchmarked and, in CI's smoke run
(``--benchmark-disable``), runs each once.
"""
import os

import numpy as np
import pytest

from fastgd._rules import TF_OPS
import fastgd.tf as FTF

from _harness import backend_or_skip, budget_seconds, env_quick
from tf_report import op_inputs, tf_call

IMPLS = ("numpy", "cython", "numba", "skeleton", "tensorflow")
DENSE_SIZES = (1_000,) if env_quick() else (10_000, 1_000_000)
SPARSE_SHAPE = (1_000, 8, 64) if env_quick() else (100_000, 64, 8192)  # rows, inner, rows stepped


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as exc:
        pytest.skip("TensorFlow not installed (%s)" % exc)
    return tf


def _call(op, impl, d):
    if impl == "tensorflow":
        return tf_call(_tf(), op, d)
    if impl == "skeleton":
        if op.sparse:
            pytest.skip("no skeleton for a sparse op (it moves rows, not arrays)")
        skel = backend_or_skip("cython").copy_skeleton
        return lambda: skel(d[op.grad], *[d[a] for a in ("var",) + op.slots])
    backend_or_skip(impl)
    fn = getattr(FTF, op.name)
    return lambda: fn(**d, backend=impl)


def _run(benchmark, f):
    f()  # warm-up: numba compiles (or loads its cache), pages are faulted in
    import time
    t0 = time.perf_counter()
    f()
    one = max(time.perf_counter() - t0, 1e-7)
    rounds = int(min(10_000, max(5, budget_seconds() / one)))
    benchmark.pedantic(f, rounds=rounds, iterations=1)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", DENSE_SIZES, ids=lambda n: "%.0e" % n)
@pytest.mark.parametrize("op", [o for o in TF_OPS.values() if not o.sparse], ids=lambda o: o.name)
def test_tf_dense(benchmark, op, n, impl):
    benchmark.group = "tf/%s/%.0e" % (op.name, n)
    d = op_inputs(op, np.random.default_rng(0), n)
    _run(benchmark, _call(op, impl, d))
    assert np.isfinite(d["var"]).all()


@pytest.mark.parametrize("impl", [i for i in IMPLS if i != "skeleton"])
@pytest.mark.parametrize("op", [o for o in TF_OPS.values() if o.sparse], ids=lambda o: o.name)
def test_tf_sparse(benchmark, op, impl):
    rows, inner, n_idx = SPARSE_SHAPE
    benchmark.group = "tf/%s/%dx%d/%d" % (op.name, rows, inner, n_idx)
    d = op_inputs(op, np.random.default_rng(0), None, rows, inner, n_idx)
    _run(benchmark, _call(op, impl, d))
    assert np.isfinite(d["var"]).all()
