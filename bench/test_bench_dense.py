"""Dense layers: a fused forward+backward pass on every backend, beside the three bare matrix
products it contains; and one epoch of the digits example per backend.

Group ``dense/float32/<batch>x<in>x<out>`` holds, run back to back:
  * ``fwd_bwd-<backend>``: ``fastgd.nn.dense_forward`` + ``dense_backward`` (ReLU, preallocated
    outputs, ``overwrite_grad_output=True``: what a training loop calls; validation included);
  * ``skeleton-numpy``: the three bare products ``x @ W``, ``x.T @ gz``, ``gz @ W.T`` through
    ``numpy.matmul`` into preallocated outputs (the floor of the numpy and numba backends);
  * ``skeleton-cython``: the same three products through the Cython backend's own BLAS call
    (SciPy's sgemm, ``fastgd._cython.dense.dense_skeleton``): the floor of the cython backend.
Targets (measured, never asserted): cython fwd_bwd <= 1.05x its skeleton; >= 1.1x faster than
the numpy reference at 256x784x512.

Group ``digits-epoch``: one epoch (1347 images, batches of 32, Adam) of
``examples/train_digits.py``'s MLP per backend.

    python -m pytest bench/test_bench_dense.py                       # pytest-benchmark table
    python -m pytest bench/test_bench_dense.py --benchmark-disable   # smoke run: each call once
    python bench/test_bench_dense.py [--rounds 15] [--quick]         # alternating A B C ... runs, ratios

The alternating runner (``__main__``) calls every entry of a shape in turn, round after round
(2 untimed + 3 timed calls each), and reports medians and ratios: on a shared machine only
ratios measured that way mean much.
``FASTGD_BENCH_QUICK=1`` / ``--quick``: the smallest shape only.
"""
import os
import sys

import numpy as np
import pytest

import fastgd
from fastgd import nn
from fastgd.bench import BACKENDS, SEED, call_seconds

from _harness import backend_or_skip, env_quick, rounds_for

SHAPES = ((64, 784, 256), (256, 784, 512), (1024, 1024, 1024))
SKELETONS = ("numpy", "cython")               # numba's products are numpy's


def shape_label(shape):
    return "x".join(map(str, shape))


class Layer:
    """Seeded float32 data and preallocated outputs of one dense layer."""

    def __init__(self, shape, dtype=np.float32):
        n, k, m = shape
        rng = np.random.default_rng([SEED, n, k, m])
        self.x = rng.standard_normal((n, k), dtype=dtype)
        self.w = (rng.standard_normal((k, m)) * np.sqrt(2.0 / k)).astype(dtype)
        self.b = (rng.standard_normal(m) * 0.1).astype(dtype)
        self.g = rng.standard_normal((n, m), dtype=dtype)
        self.out = np.empty((n, m), dtype)
        self.gx = np.empty((n, k), dtype)
        self.gw = np.empty((k, m), dtype)
        self.gb = np.empty(m, dtype)
        self.gz = self.g.copy()

    def fwd_bwd(self, backend):
        def run():
            nn.dense_forward(self.x, self.w, self.b, activation="relu", out=self.out, backend=backend)
            nn.dense_backward(self.g, self.x, self.w, self.out, activation="relu", grad_x=self.gx,
                              grad_weight=self.gw, grad_bias=self.gb, overwrite_grad_output=True, backend=backend)
        return run

    def skeleton(self, backend):
        mod = nn._kernels(backend)

        def run():
            mod.dense_skeleton(self.x, self.w, self.gz, self.out, self.gw, self.gx)
        return run

    def flops(self):
        n, k = self.x.shape
        return 3 * 2 * n * k * self.w.shape[1]


def entries(shape):
    """(name, backend, kind) of one group, in run order."""
    out = []
    for b in BACKENDS:
        out.append(("fwd_bwd-" + b, b, "fwd_bwd"))
        if b in SKELETONS:
            out.append(("skeleton-" + b, b, "skeleton"))
    return out


def _available(backend):
    backend_or_skip(backend)
    try:
        nn._kernels(backend)
    except RuntimeError as exc:
        pytest.skip(str(exc))


def _blas_threads():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return {i["filepath"].rsplit("/", 1)[-1]: i["num_threads"] for i in threadpool_info()
            if i.get("user_api") == "blas"}


def pytest_generate_tests(metafunc):
    if "dense_entry" not in metafunc.fixturenames:
        return
    shapes = SHAPES[:1] if metafunc.config.fastgd_bench.quick else SHAPES
    params = [(shape, name, backend, kind) for shape in shapes for name, backend, kind in entries(shape)]
    metafunc.parametrize("dense_entry", params, ids=["%s-%s" % (shape_label(p[0]), p[1]) for p in params])


_layers = {}


def test_dense(benchmark, dense_entry, request):
    shape, name, backend, kind = dense_entry
    _available(backend)
    if shape not in _layers:
        _layers.clear()   # one shape's arrays at a time (the largest is 16 MB)
        _layers[shape] = Layer(shape)
    layer = _layers[shape]
    fn = layer.fwd_bwd(backend) if kind == "fwd_bwd" else layer.skeleton(backend)
    rounds = rounds_for(benchmark, request.config.fastgd_bench, fn)
    benchmark.group = "dense/float32/" + shape_label(shape)
    benchmark.extra_info.update(kind=kind, backend=backend, shape=list(shape), flops=layer.flops(),
                                num_threads=fastgd.get_num_threads(), blas_threads=_blas_threads(), rounds=rounds)
    benchmark.pedantic(fn, rounds=rounds, iterations=1)
    assert np.isfinite(layer.out).all() and np.isfinite(layer.gw).all()


# ---------------------------------------------------------------------------------------
# one epoch of the digits example

def _digits():
    pytest.importorskip("sklearn", reason="the digits benchmark needs scikit-learn")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    return train_test_split(x, d.target, test_size=0.25, stratify=d.target, random_state=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_digits_epoch(benchmark, backend, request):
    _available(backend)
    x_train, _, y_train, _ = _digits()
    model = nn.MLP([64, 128, 64, 10], rng=0, backend=backend)

    def epoch():
        model.fit(x_train, y_train, epochs=1, batch_size=32, optimizer="adam", lr=1e-3, seed=0, verbose=False)
    rounds = rounds_for(benchmark, request.config.fastgd_bench, epoch)
    benchmark.group = "digits-epoch"
    benchmark.extra_info.update(backend=backend, images=len(x_train), batch_size=32, rounds=rounds)
    benchmark.pedantic(epoch, rounds=rounds, iterations=1)


# ---------------------------------------------------------------------------------------
# the alternating runner

def _alternate(fns, rounds, warm=2, block=3):
    """Round after round, each fn in turn: ``warm`` untimed calls, then ``block`` timed calls.
    The untimed calls matter: the cython backend's BLAS (SciPy's OpenBLAS) and numpy's are two
    libraries with two thread pools, and the first call after the other library ran waits for
    that library's spinning threads to give the cores back.  Returns per-fn lists of seconds."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            for _ in range(warm):
                f()
            for _ in range(block):
                times[k].append(call_seconds(f))
    return times


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description="dense fwd+bwd vs bare products, alternating")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--shape", action="append", help="batch x in x out, e.g. 256x784x512 (repeatable)")
    ap.add_argument("--digits", action="store_true", help="also one digits epoch per backend")
    args = ap.parse_args(argv)
    backends = [b for b in BACKENDS if b in fastgd.available_backends()]
    for b in backends:
        nn._kernels(b)                    # loads SciPy's BLAS for the cython backend
    print("fastgd threads %d, BLAS threads %s" % (fastgd.get_num_threads(), _blas_threads()))
    shapes = SHAPES[:1] if (args.quick or env_quick()) else SHAPES
    if args.shape:
        shapes = [tuple(int(v) for v in sh.split("x")) for sh in args.shape]
    for shape in shapes:
        layer = Layer(shape)
        fns = {}
        for name, b, kind in entries(shape):
            if b in backends:
                fns[name] = layer.fwd_bwd(b) if kind == "fwd_bwd" else layer.skeleton(b)
        med = {k: float(np.median(v)) for k, v in _alternate(fns, args.rounds).items()}
        print("\n%s float32 (batch x in x out), median of %d alternating rounds x 3 calls"
              % (shape_label(shape), args.rounds))
        for k, v in med.items():
            print("  %-18s %9.3f ms  %6.1f GFLOP/s" % (k, v * 1e3, layer.flops() / v / 1e9))
        ratios = (("cython fwd_bwd / its 3 bare products (scipy BLAS)", "fwd_bwd-cython", "skeleton-cython"),
                  ("cython fwd_bwd / 3 bare numpy matmuls", "fwd_bwd-cython", "skeleton-numpy"),
                  ("reference fwd_bwd / cython fwd_bwd (speedup)", "fwd_bwd-numpy", "fwd_bwd-cython"),
                  ("numba fwd_bwd / 3 bare numpy matmuls", "fwd_bwd-numba", "skeleton-numpy"),
                  ("reference fwd_bwd / numba fwd_bwd (speedup)", "fwd_bwd-numpy", "fwd_bwd-numba"),
                  ("reference fwd_bwd / 3 bare numpy matmuls", "fwd_bwd-numpy", "skeleton-numpy"))
        for label, num, den in ratios:
            if num in med and den in med:
                print("  %-46s %.3f" % (label + ":", med[num] / med[den]))
    if args.digits:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
        import train_digits
        data = train_digits.load()
        fns = {}
        for b in backends:
            model = nn.MLP([64, 128, 64, 10], rng=0, backend=b)
            fns[b] = (lambda m: lambda: m.fit(data[0], data[2], epochs=1, batch_size=32, lr=1e-3, seed=0,
                                              verbose=False))(model)
        med = {k: float(np.median(v)) for k, v in _alternate(fns, args.rounds).items()}
        print("\ndigits: one epoch (1347 images, batch 32, Adam), median of %d alternating rounds x 3 epochs"
              % args.rounds)
        for k, v in med.items():
            print("  %-8s %8.2f ms  (%.2fx the numpy reference)" % (k, v * 1e3, med["numpy"] / v))


if __name__ == "__main__":
    main()
