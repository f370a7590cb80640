"""Train a small MLP on scikit-learn's bundled 8x8 digits (1797 images, 10 classes; no download).

    python examples/train_digits.py                       # Adam, cython backend: >= 96% test accuracy
    python examples/train_digits.py --backend numba       # any backend: cython, numba, numpy
    python examples/train_digits.py --compare             # SGD, momentum, RMSprop, Adagrad, Adam x 5 seeds

The data set is split once (stratified, 25% held out for testing, fixed split seed); pixels are
scaled to [0, 1].  The network is 64-128-64-10 with ReLU and a softmax cross-entropy loss,
trained with minibatches of 32 for 30 epochs.

``--compare`` repeats the optimizer comparison of the teaching texts (plain SGD, SGD with
momentum 0.9, RMSprop, Adagrad, Adam), each from 5 seeds (the seed draws the initial weights
and the minibatch order), and prints the test accuracy and Matthews correlation as mean +-
standard error over the seeds, and the training time per run.
"""
import argparse
import math
import sys
import time
import warnings

import numpy as np

try:
    from sklearn.datasets import load_digits
    from sklearn.metrics import matthews_corrcoef
    from sklearn.model_selection import train_test_split
except ImportError:  # pragma: no cover
    sys.exit("this example needs scikit-learn: pip install 'fastgd[nn]'")

import fastgd
from fastgd.nn import MLP

SIZES = [64, 128, 64, 10]
# (label, fit() optimizer and hyperparameters); learning rates are each rule's usual choice
OPTIMIZERS = [
    ("SGD", dict(optimizer="sgd", lr=0.1)),
    ("momentum 0.9", dict(optimizer="sgd", lr=0.01, momentum=0.9)),
    ("RMSprop", dict(optimizer="rmsprop", lr=1e-3)),
    ("Adagrad", dict(optimizer="adagrad", lr=0.05)),
    ("Adam", dict(optimizer="adam", lr=1e-3)),
]


def load(dtype=np.float32, split_seed=0):
    digits = load_digits()
    x = (digits.data / 16.0).astype(dtype)
    return train_test_split(x, digits.target, test_size=0.25, stratify=digits.target, random_state=split_seed)


def train(data, *, backend, seed, epochs, batch_size, verbose=False, **opt):
    x_train, x_test, y_train, y_test = data
    model = MLP(SIZES, rng=seed, backend=backend, dtype=x_train.dtype)
    t0 = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, seed=seed, verbose=verbose, **opt)
    seconds = time.perf_counter() - t0
    pred = model.predict(x_test).argmax(axis=1)
    return model, history, seconds, float(np.mean(pred == y_test)), float(matthews_corrcoef(y_test, pred))


def mean_se(values):
    v = np.asarray(values, np.float64)
    return v.mean(), (v.std(ddof=1) / math.sqrt(v.size) if v.size > 1 else float("nan"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="cython", choices=["cython", "numba", "numpy"])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare", action="store_true", help="compare five optimizers over several seeds")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per optimizer with --compare")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)

    data = load()
    print("digits: %d training / %d test images, MLP %s, backend %s, fastgd %s"
          % (len(data[0]), len(data[1]), "-".join(map(str, SIZES)), args.backend, fastgd.__version__))
    if args.backend == "numba":  # compile the kernels before timing anything
        train(data, backend="numba", seed=0, epochs=1, batch_size=args.batch_size, optimizer="adam")

    if not args.compare:
        _, hist, seconds, acc, mcc = train(data, backend=args.backend, seed=args.seed, epochs=args.epochs,
                                           batch_size=args.batch_size, verbose=not args.quiet,
                                           optimizer="adam", lr=1e-3)
        print("Adam lr=1e-3, %d epochs: train loss %.4f, test accuracy %.2f%% (MCC %.4f) in %.2f s"
              % (args.epochs, hist["loss"][-1], 100 * acc, mcc, seconds))
        return 0 if acc >= 0.96 else 1

    print("%d seeds per optimizer, %d epochs, batch %d; mean +- standard error over seeds"
          % (args.seeds, args.epochs, args.batch_size))
    print("%-14s %-24s %-18s %-18s %s" % ("optimizer", "hyperparameters", "test accuracy %", "MCC", "time/run s"))
    for label, opt in OPTIMIZERS:
        accs, mccs, times, notes = [], [], [], set()
        for seed in range(args.seeds):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RuntimeWarning)
                _, _, seconds, acc, mcc = train(data, backend=args.backend, seed=seed, epochs=args.epochs,
                                                batch_size=args.batch_size, **opt)
            notes.update("steps on numpy (%s has no %s kernel yet)" % (args.backend, opt["optimizer"])
                         for w in caught if "no %s kernel" % opt["optimizer"] in str(w.message))
            accs.append(100 * acc)
            mccs.append(mcc)
            times.append(seconds)
        hyper = ", ".join("%s=%g" % (k, v) for k, v in opt.items() if k != "optimizer")
        (a, ase), (m, mse), (t, tse) = mean_se(accs), mean_se(mccs), mean_se(times)
        print("%-14s %-24s %6.2f +- %-9.2f %.4f +- %-8.4f %.3f +- %.3f %s"
              % (label, hyper, a, ase, m, mse, t, tse, "; ".join(sorted(notes))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
