"""The texts' experiments, runnable: ``python -m fastgd.demo --out DIR``.

Runs every update rule on Beale's function, the bowl and the two inverted Gaussians,
reproduces the published results of the texts (printed next to the published values),
and writes the path and loss plots as PNG files into DIR (needs matplotlib; ``--no-plots``
skips them).  ``--quick`` shortens the long runs.

Files written: ``<function>_paths.png`` (one panel per rule: contours, the path as
arrows, the minimum marked), ``<function>_loss.png`` (loss per iteration, all rules),
``two_gaussians_momentum_vs_nesterov.png``, ``beale_gd_300k.png``, ``quadratic_1d.png``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from . import functions as F
from .descent import gradient_descent

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._typing import Backend, Method
    from .descent import DescentResult

__all__ = ["EXPERIMENTS", "RULES", "run_experiment", "published_results", "write_plots", "main"]

RULES: tuple[Method, ...] = ("sgd", "momentum", "nesterov_lookahead", "adagrad", "rmsprop", "adadelta", "adam",
                             "adamw", "adamax", "nadam", "radam", "lion")

# start, number of iterations and hyperparameters per rule (chosen so that every rule makes
# visible progress; the adaptive rules are insensitive to Beale's huge gradients, plain GD is not)
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "beale": {"start": (1.0, 1.5), "iterations": 3000, "hyper": {
        "sgd": {"lr": 0.01}, "momentum": {"lr": 0.005, "mu": 0.9}, "nesterov_lookahead": {"lr": 0.005, "mu": 0.9},
        "adagrad": {"lr": 0.5}, "rmsprop": {"lr": 0.01}, "adadelta": {"lr": 1.0}, "adam": {"lr": 0.05},
        "adamw": {"lr": 0.05}, "adamax": {"lr": 0.05}, "nadam": {"lr": 0.05}, "radam": {"lr": 0.01},
        "lion": {"lr": 0.005}}},
    "bowl": {"start": (-10.0, 1.5), "iterations": 500, "hyper": {
        "sgd": {"lr": 0.1}, "momentum": {"lr": 0.02, "mu": 0.9}, "nesterov_lookahead": {"lr": 0.02, "mu": 0.9},
        "adagrad": {"lr": 1.0}, "rmsprop": {"lr": 0.05}, "adadelta": {"lr": 10.0}, "adam": {"lr": 0.1},
        "adamw": {"lr": 0.1}, "adamax": {"lr": 0.1}, "nadam": {"lr": 0.1}, "radam": {"lr": 0.3},
        "lion": {"lr": 0.05}}},
    "two_gaussians": {"start": (1.5, 1.5), "iterations": 300, "hyper": {
        "sgd": {"lr": 0.1}, "momentum": {"lr": 0.02, "mu": 0.9}, "nesterov_lookahead": {"lr": 0.02, "mu": 0.9},
        "adagrad": {"lr": 0.5}, "rmsprop": {"lr": 0.02}, "adadelta": {"lr": 5.0}, "adam": {"lr": 0.05},
        "adamw": {"lr": 0.05}, "adamax": {"lr": 0.05}, "nadam": {"lr": 0.05}, "radam": {"lr": 0.05},
        "lion": {"lr": 0.02}}},
}


def _grad_of(func):
    """The numba-compiled gradient when numba is installed (the loop then runs compiled for
    the rules that support it), else the NumPy one."""
    try:
        return func.jit_grad
    except ImportError:
        return func.grad


def run_experiment(name: str, *, backend: Backend | None = None, tol: float = 1e-8,
                   rules: Sequence[Method] = RULES) -> dict[str, DescentResult]:
    """Run every rule of ``EXPERIMENTS[name]``; returns ``{rule: DescentResult}``."""
    exp = EXPERIMENTS[name]
    func = F.get(name)
    return {rule: gradient_descent(func.grad, exp["start"], rule, iterations=exp["iterations"], tol=tol,
                                   backend=backend, **exp["hyper"][rule])
            for rule in rules}


def published_results(*, backend: Backend | None = None, quick: bool = False) -> list[tuple[str, Any, Any]]:
    """The published results of the texts, recomputed: a list of
    ``(description, computed, published)`` (``published`` is None for qualitative claims)."""
    out: list[tuple[str, Any, Any]] = []
    r = gradient_descent(F.quadratic.grad, -0.9, "sgd", lr=0.03, iterations=15, tol=0, backend=backend)
    out.append(("6x^2 - 12x + 3 from -0.9, lr 0.03, 15 updates", np.round(r.x, 6), 0.997648))
    n = 30_000 if quick else 300_000
    r = gradient_descent(_grad_of(F.beale), (3.0, 4.0), "sgd", lr=5e-6, iterations=n, tol=1e-8, backend=backend)
    published = (2.70735828, 0.41689171) if not quick else None
    out.append(("Beale from (3, 4), GD lr 5e-6, %d iterations%s" % (n, " (compiled loop)" if r.compiled else ""),
                np.round(r.x, 8), published))
    for start, lr, steps, pub in (((1.5, 1.5), 0.02, 90, (-0.9496, 0.9809)), ((0.7, -0.2), 0.1, 25, (0.8807, -0.9063))):
        m = gradient_descent(F.two_gaussians.grad, start, "momentum", lr=lr, mu=0.9, iterations=steps, tol=0)
        v = gradient_descent(F.two_gaussians.grad, start, "nesterov_lookahead", lr=lr, mu=0.9, iterations=steps, tol=0)
        out.append(("two Gaussians from %s, momentum 0.9, lr %g, %d steps" % (start, lr, steps), np.round(m.x, 4), pub))
        target = F.two_gaussians.minima[np.argmin(np.linalg.norm(F.two_gaussians.minima - m.x, axis=1))]
        dm, dv = np.linalg.norm(m.x - target), np.linalg.norm(v.x - target)
        out.append(("  Nesterov (look-ahead) ends closer to the minimum: %.4f < %.4f" % (dv, dm), bool(dv < dm), None))
    return out


def write_plots(out_dir: str | os.PathLike[str], results: Mapping[str, Mapping[str, DescentResult]], *,
                backend: Backend | None = None, quick: bool = False) -> list[str]:
    """Write the PNG files into ``out_dir``; returns their paths."""
    from matplotlib.figure import Figure

    from .plot import contour_plot, function_plot, loss_plot
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, res in results.items():
        func = F.get(name)
        fig = Figure(figsize=(16, 10.5), layout="constrained")
        axes = fig.subplots(3, 4).ravel()
        for ax, (rule, r) in zip(axes, res.items()):
            hyper = ", ".join("%s=%g" % kv for kv in EXPERIMENTS[name]["hyper"][rule].items())
            contour_plot(func, r, ax=ax, title="%s (%s): %d steps" % (rule, hyper, r.n_iter), legend=False,
                         max_arrows=80, resolution=160)
        fig.suptitle("%s: %s from %s" % (name, func.formula, EXPERIMENTS[name]["start"]))
        path = os.path.join(out_dir, "%s_paths.png" % name)
        fig.savefig(path, dpi=80)
        written.append(path)
        path = os.path.join(out_dir, "%s_loss.png" % name)
        loss_plot(list(res.values()), func=func, labels=list(res), title="%s: loss per iteration" % name, save=path,
                  figsize=(8, 5))
        written.append(path)
    g = F.two_gaussians
    runs, labels = [], []
    for start, lr, steps in (((1.5, 1.5), 0.02, 90), ((0.7, -0.2), 0.1, 25)):
        pair: tuple[Method, Method] = ("momentum", "nesterov_lookahead")
        for rule in pair:
            runs.append(gradient_descent(g.grad, start, rule, lr=lr, mu=0.9, iterations=steps, tol=0))
            labels.append("%s from %s" % (rule, start))
    path = os.path.join(out_dir, "two_gaussians_momentum_vs_nesterov.png")
    contour_plot(g, runs, labels=labels, title="two inverted Gaussians: momentum vs look-ahead Nesterov (mu = 0.9)",
                 save=path, figsize=(7.5, 6.5))
    written.append(path)
    n = 30_000 if quick else 300_000
    r = gradient_descent(_grad_of(F.beale), (3.0, 4.0), "sgd", lr=5e-6, iterations=n, backend=backend)
    path = os.path.join(out_dir, "beale_gd_300k.png")
    contour_plot(F.beale, r, labels=["GD, lr 5e-6, %d iterations" % r.n_iter], save=path, max_arrows=60,
                 title="Beale from (3, 4): plain gradient descent")
    written.append(path)
    r = gradient_descent(F.quadratic.grad, -0.9, "sgd", lr=0.03, iterations=15, tol=0, backend=backend)
    path = os.path.join(out_dir, "quadratic_1d.png")
    function_plot(F.quadratic, r, labels=["GD, lr 0.03, 15 steps"], save=path)
    written.append(path)
    return written


def _fmt(v):
    if isinstance(v, np.ndarray):
        return np.array2string(v, separator=", ", floatmode="maxprec")
    return str(v)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fastgd.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="fastgd-demo", help="directory for the PNG files (default: ./fastgd-demo)")
    ap.add_argument("--backend", default=None, help="kernel backend: cython, numba or numpy (default: current)")
    ap.add_argument("--only", nargs="*", choices=sorted(EXPERIMENTS), help="run only these functions")
    ap.add_argument("--quick", action="store_true", help="shorter long runs (Beale 30,000 instead of 300,000)")
    ap.add_argument("--no-plots", action="store_true", help="do not write plots (no matplotlib needed)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    print("Published results of the texts, recomputed:")
    for desc, got, pub in published_results(backend=args.backend, quick=args.quick):
        print("  %-68s %s%s" % (desc, _fmt(got), "" if pub is None else "   (published: %s)" % (pub,)))
    results = {}
    for name in args.only or EXPERIMENTS:
        results[name] = res = run_experiment(name, backend=args.backend)
        func = F.get(name)
        print("\n%s from %s, up to %d iterations (tol 1e-8):" % (name, EXPERIMENTS[name]["start"],
                                                                EXPERIMENTS[name]["iterations"]))
        print("  %-20s %-26s %7s %-10s %12s  %s" % ("rule", "x", "steps", "converged", "f(x)", "distance to minimum"))
        for rule, r in res.items():
            d = float(np.min(np.linalg.norm(func.minima - r.x, axis=1)))
            print("  %-20s %-26s %7d %-10s %12.4g  %.3g" % (rule, _fmt(np.round(r.x, 5)), r.n_iter, r.converged,
                                                            float(func(r.x)), d))
    if not args.no_plots:
        try:
            written = write_plots(args.out, results, backend=args.backend, quick=args.quick)
        except ImportError as exc:
            print("\nno plots: %s" % exc, file=sys.stderr)
            return 1
        print("\nwrote %d plots to %s" % (len(written), os.path.abspath(args.out)))
    print("done in %.1f s" % (time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
