"""fastgd.tf against TensorFlow's own CPU kernels, and against the skeleton moving its bytes:
one run, side by side.

    PYTHONPATH=src python bench/tf_report.py [--sizes 1e4,1.6e7] [--budget 2] [--ops apply_adam,...] [--quick]

Dense ops: for each op and size (float32), the time of one ``fastgd.tf.<op>`` call (the Cython
backend, argument checks included, as a user calls it), of ``copy_skeleton`` on the same arrays
(a kernel that reads grad and reads and writes var and every slot, with trivial arithmetic: the
bytes the op must move), and of ``tf.raw_ops.Resource<Op>`` on ``tf.Variable``s of the same
values (the gradient a constant made once).  Columns: bytes per element, times, "of skeleton"
(skeleton time / op time: 1.0 is the memory limit), "TF / fastgd" (> 1: fastgd is faster).

Sparse ops: 8,192 random rows (with the duplicates random indices have) of a 1,000,000 x 64
float32 table (256 MB per array), ``fastgd.tf.sparse_<op>`` against
``tf.raw_ops.ResourceSparse<Op>`` on the same rows.

Timing: ``fastgd.bench.compare`` (the callables alternate round after round; a ratio is the
median over rounds of the ratio of two samples taken next to each other, so the shared
machine's drifts cancel).  State arrays are updated in place by every call (small learning
rates keep values finite).  Machine: printed first (``fastgd.build_info()``, CPU model).
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import fastgd  # noqa: E402
import fastgd.tf as FTF  # noqa: E402
from fastgd._rules import TF_OPS  # noqa: E402
from fastgd.backends import backend_module  # noqa: E402
from fastgd.bench import _paired, compare, machine_summary, table_lines  # noqa: E402

POSITIVE = {"accum", "accum_update", "v", "vhat", "ms", "gradient_squared_accumulator"}
SCALARS = {"alpha": 1e-4, "l1": 1e-4, "l2": 1e-4, "lr": 1e-4, "rho": 0.9, "epsilon": 1e-7, "momentum": 0.9,
           "beta1_power": 0.9 ** 3, "beta2_power": 0.999 ** 3, "beta1": 0.9, "beta2": 0.999, "lr_power": -0.5,
           "l2_shrinkage": 1e-4, "logbase": 0.6931, "sign_decay": 0.99, "beta": 0.9}


def op_inputs(op, rng, n, rows=None, inner=None, n_idx=None):
    d = {}
    shape = (rows, inner) if op.sparse else (n,)
    for a in op.arrays:
        s = (n_idx, inner) if (op.sparse and a == op.grad) else shape
        x = rng.random(s, dtype=np.float32)
        # (mg small beside ms: CenteredRMSProp's ms - mg^2 + eps stays positive, no NaN)
        d[a] = x * 0.9 + 0.1 if a in POSITIVE else (x - 0.5) * (1e-3 if a == op.grad else 0.1 if a == "mg" else 1.0)
    for s in op.scalars:
        d[s] = SCALARS[s]
    if op.has_step:
        d["global_step"] = 10
    if op.sparse:
        d["indices"] = rng.integers(0, rows, n_idx, dtype=np.int64)
    return d


def tf_call(tf, op, d):
    """A closure running tf.raw_ops.Resource<Op> on Variables holding d's arrays."""
    raw = getattr(tf.raw_ops, "Resource" + op.op)
    kw = {}
    keep = []  # the Variables: their resources live as long as they do
    for name in op.inputs:
        x = d[name]
        if name in ("var",) + op.slots:
            keep.append(tf.Variable(x))
            kw[name] = keep[-1].handle
        elif name == op.grad:
            kw[name] = tf.constant(x)
        elif name == "indices":
            kw[name] = tf.constant(x)
        elif name == "global_step":
            kw[name] = np.int64(x)
        else:
            kw[name] = np.float32(x)
    def call():
        raw(**kw)
    call.variables = keep
    return call


def dense_rows(tf, ops, sizes, budget, rng, log):
    rows = []
    skel = backend_module("cython").copy_skeleton
    for n in sizes:
        for op in ops:
            d = op_inputs(op, rng, n)
            fn = getattr(FTF, op.name)
            sk = {a: d[a].copy() for a in op.arrays}
            funcs = {"fastgd": lambda: fn(**d),
                     "skeleton": lambda: skel(sk[op.grad], *[sk[a] for a in ("var",) + op.slots])}
            if tf is not None:
                funcs["tf"] = tf_call(tf, op, d)
            med, rounds, samples = compare(funcs, budget)
            nbytes = 4 * (1 + 2 * (1 + len(op.slots)))
            row = [op.name, "%.3g" % n, "%d" % nbytes, "%.1f" % (med["fastgd"] * 1e6),
                   "%.1f" % (med["skeleton"] * 1e6), "%.2f" % _paired(samples, "skeleton", "fastgd")]
            if tf is not None:
                row += ["%.1f" % (med["tf"] * 1e6), "%.2fx" % _paired(samples, "tf", "fastgd")]
            row.append("%d" % rounds)
            rows.append(row)
            log("  " + " | ".join(row))
    return rows


def sparse_rows(tf, ops, budget, rng, log, rows_=1_000_000, inner=64, n_idx=8192):
    out = []
    for op in ops:
        d = op_inputs(op, rng, None, rows_, inner, n_idx)
        fn = getattr(FTF, op.name)
        funcs = {"fastgd": lambda: fn(**d)}
        if tf is not None:
            funcs["tf"] = tf_call(tf, op, d)
        med, rounds, samples = compare(funcs, budget)
        moved = n_idx * inner * 4 * (1 + 2 * (1 + len(op.slots)))
        row = [op.name, "%.1f" % (med["fastgd"] * 1e6), "%.1f" % (moved / med["fastgd"] / 1e9)]
        if tf is not None:
            row += ["%.1f" % (med["tf"] * 1e6), "%.1f" % (moved / med["tf"] / 1e9),
                    "%.2fx" % _paired(samples, "tf", "fastgd")]
        row.append("%d" % rounds)
        out.append(row)
        log("  " + " | ".join(row))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1e4,1.6e7", help="dense sizes (float32 elements), comma-separated")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of timing per comparison")
    ap.add_argument("--ops", default="", help="comma-separated fastgd.tf names (default: all)")
    ap.add_argument("--no-tf", action="store_true", help="skip TensorFlow (skeleton comparison only)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes, tiny budget")
    args = ap.parse_args(argv)
    tf = None
    if not args.no_tf:
        try:
            import tensorflow as tf
        except ImportError as exc:
            print("TensorFlow not importable (%s): skeleton comparison only" % exc, file=sys.stderr)
    names = [s for s in args.ops.split(",") if s] or list(TF_OPS)
    ops = [TF_OPS[n] for n in names]
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    if args.quick:
        sizes, args.budget = [1000], 0.05
    print(machine_summary())
    print("fastgd", fastgd.build_info()["simd_variant"], "threads", fastgd.get_num_threads(),
          "; TensorFlow", tf.__version__ if tf is not None else "-")
    rng = np.random.default_rng(0)
    dense = [o for o in ops if not o.sparse]
    sparse = [o for o in ops if o.sparse]
    if dense:
        head = ["op", "elements", "bytes/elem", "fastgd us", "skeleton us", "of skeleton"]
        if tf is not None:
            head += ["TF us", "TF / fastgd"]
        head.append("rounds")
        body = dense_rows(tf, dense, sizes, args.budget, rng, print)
        print("\n".join(table_lines(head, body)))
    if sparse:
        kw = dict(rows_=1000, inner=8, n_idx=64) if args.quick else {}
        head = ["sparse op (8192 rows of 1e6 x 64 float32)", "fastgd us", "fastgd GB/s"]
        if tf is not None:
            head += ["TF us", "TF GB/s", "TF / fastgd"]
        head.append("rounds")
        body = sparse_rows(tf, sparse, args.budget, rng, print, **kw)
        print("\n".join(table_lines(head, body)))


if __name__ == "__main__":
    main()
