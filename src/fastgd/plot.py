"""The texts' plots: contours with optimizer paths, loss per iteration, a 1-D function with
its derivative.  matplotlib is an optional extra (``pip install 'fastgd[plot]'``).

Every function builds a ``matplotlib.figure.Figure`` directly (no pyplot, so no GUI
backend and no global state), returns it, and writes a PNG when ``save=`` is given.
Pass ``ax=`` to draw into an existing axes instead (the figure of that axes is returned).

    >>> from fastgd import functions as F, gradient_descent
    >>> from fastgd.plot import contour_plot, loss_plot
    >>> r1 = gradient_descent(F.two_gaussians.grad, [1.5, 1.5], "momentum", lr=0.02, iterations=90)
    >>> r2 = gradient_descent(F.two_gaussians.grad, [1.5, 1.5], "nesterov_lookahead", lr=0.02, iterations=90)
    >>> contour_plot(F.two_gaussians, [r1, r2], labels=["momentum", "Nesterov"], save="paths.png")
    >>> loss_plot([r1, r2], func=F.two_gaussians, labels=["momentum", "Nesterov"], save="loss.png")
"""
from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ._typing import NDArray
    from .functions import TestFunction

__all__ = ["contour_plot", "loss_plot", "function_plot"]

_COLORS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan", "black")
_STYLES = ("-", "--", ":", "-.")


def _style(i):
    """(color, linestyle) of the i-th curve: colors first, then line styles."""
    return _COLORS[i % len(_COLORS)], _STYLES[(i // len(_COLORS)) % len(_STYLES)]


def _mpl():
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("fastgd.plot needs matplotlib: pip install 'fastgd[plot]' (or pip install matplotlib)") \
            from None
    return matplotlib, Figure


def _figure(ax, figsize):
    _, Figure = _mpl()
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _finish(fig, save, dpi):
    if save is not None:
        fig.savefig(save, dpi=dpi, format="png")
    return fig


def _path_array(p, width=None):
    """An (n_points, width) array from a path or a DescentResult."""
    path = getattr(p, "path", p)
    if path is None:
        raise ValueError("a result without a path (record_path=False) cannot be plotted")
    arr = np.asarray(path, dtype=np.float64)
    arr = arr.reshape(len(arr), -1)
    if width is not None and arr.shape[1] != width:
        raise ValueError("a path of points with %d coordinates, expected %d" % (arr.shape[1], width))
    return arr


def _paths_list(paths):
    if paths is None:
        return []
    if isinstance(paths, np.ndarray) or hasattr(paths, "path"):
        return [paths]
    return list(paths)


def _subsample(arr, max_points):
    """At most max_points rows, evenly spaced, first and last kept."""
    if max_points is None or len(arr) <= max_points:
        return arr
    idx = np.unique(np.linspace(0, len(arr) - 1, max_points).round().astype(np.int64))
    return arr[idx]


def _value_fn(func):
    value = getattr(func, "value", None)
    return value if value is not None else func


def contour_plot(func: TestFunction | Callable[..., Any], paths: Any = None, *, labels: Sequence[str] | None = None,
                 xlim: tuple[float, float] | None = None, ylim: tuple[float, float] | None = None,
                 levels: int | Sequence[float] | NDArray[Any] = 30, log_levels: bool | None = None,
                 minima: Sequence[Sequence[float]] | NDArray[Any] | None = None,
                 arrows: bool = True, max_arrows: int = 200, resolution: int = 300, title: str | None = None,
                 legend: bool = True, ax: Axes | None = None, figsize: tuple[float, float] = (6.4, 5.2),
                 save: str | os.PathLike[str] | IO[bytes] | None = None, dpi: int = 120) -> Figure:
    """Contours of a 2-D function with optimizer paths drawn as arrows between iterates.

    func : a :class:`fastgd.functions.TestFunction` or any ``value(X, Y)`` that broadcasts.
    paths : one path ``(n_points, 2)`` / :class:`fastgd.descent.DescentResult`, or a list of them.
    labels : one legend label per path.
    xlim, ylim : the window (default: the function's, else the paths' extent with a margin).
    levels : number of contour levels or explicit levels.  log_levels : space the levels
        logarithmically above the minimum (default: on for functions with a large range,
        such as Beale).
    minima : points to mark with a star (default: the function's known minima).
    arrows : draw arrows (``quiver``) between consecutive iterates; else a line with markers.
    max_arrows : long paths are subsampled evenly to this many points (first and last kept).
    title : the axes title (default: the function's formula); legend : draw a legend.
    Returns the Figure.
    """
    fig, ax = _figure(ax, figsize)
    plist = [_path_array(p, 2) for p in _paths_list(paths)]
    if labels is not None and len(labels) != len(plist):
        raise ValueError("labels has %d entries for %d paths" % (len(labels), len(plist)))
    if xlim is None:
        xlim = getattr(func, "xlim", None)
    if ylim is None:
        ylim = getattr(func, "ylim", None)
    if xlim is None or ylim is None:
        if not plist:
            raise ValueError("give xlim and ylim (or paths to take the window from)")
        allp = np.concatenate(plist)
        lo, hi = allp.min(axis=0), allp.max(axis=0)
        pad = 0.15 * np.maximum(hi - lo, 1e-3)
        xlim = xlim or (lo[0] - pad[0], hi[0] + pad[0])
        ylim = ylim or (lo[1] - pad[1], hi[1] + pad[1])
    xs = np.linspace(xlim[0], xlim[1], resolution)
    ys = np.linspace(ylim[0], ylim[1], resolution)
    X, Y = np.meshgrid(xs, ys)
    Z = np.asarray(_value_fn(func)(X, Y), dtype=np.float64)
    if np.ndim(levels) == 0:
        zmin, zmax = float(np.nanmin(Z)), float(np.nanmax(Z))
        if log_levels is None:
            log_levels = zmax - zmin > 1e3
        if log_levels:  # (levels is a number here)
            levels = zmin + np.geomspace(1e-3 * max(zmax - zmin, 1e-12) / levels,  # type: ignore[operator]
                                         zmax - zmin, int(levels))  # type: ignore[arg-type]
        else:
            levels = np.linspace(zmin, zmax, int(levels))  # type: ignore[arg-type]  # (a number here)
    ax.contour(X, Y, Z, levels=levels, cmap="viridis", linewidths=0.8)
    if minima is None:
        minima = getattr(func, "minima", None)
    if minima is not None and len(minima):
        m = np.asarray(minima, dtype=np.float64).reshape(-1, 2)
        ax.plot(m[:, 0], m[:, 1], linestyle="none", marker="*", markersize=14, color="gold",
                markeredgecolor="black", label="minimum", zorder=5)
    for i, p in enumerate(plist):
        color = _COLORS[i % len(_COLORS)]
        label = labels[i] if labels is not None else None
        q = _subsample(p, max_arrows)
        if arrows and len(q) > 1:
            d = np.diff(q, axis=0)
            ax.quiver(q[:-1, 0], q[:-1, 1], d[:, 0], d[:, 1], angles="xy", scale_units="xy", scale=1, color=color,
                      width=0.004, headwidth=4, headlength=5, label=label, zorder=4)
        else:
            ax.plot(q[:, 0], q[:, 1], "-o", color=color, markersize=2, linewidth=1, label=label, zorder=4)
        ax.plot(q[:1, 0], q[:1, 1], "o", color=color, markersize=6, zorder=5)
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    if title is None:
        title = getattr(func, "formula", None)
    if title:
        ax.set_title(title, fontsize=10)
    if legend and (labels is not None or (minima is not None and len(minima))):
        ax.legend(loc="best", fontsize=8)
    return _finish(fig, save, dpi)


def loss_plot(curves: Any, *, func: TestFunction | Callable[..., Any] | None = None,
              labels: Sequence[str] | None = None, logy: bool = True, title: str | None = None,
              xlabel: str = "iteration", ylabel: str = "loss", ax: Axes | None = None,
              figsize: tuple[float, float] = (6.4, 4.0), save: str | os.PathLike[str] | IO[bytes] | None = None,
              dpi: int = 120) -> Figure:
    """The loss per iteration of one or more runs.

    curves : a 1-D array of losses, a path, a DescentResult, or a list of them.  Paths and
        results need ``func`` (a TestFunction or a callable on one point) to be turned into
        losses.
    logy : log scale on the y axis; with it, losses are shifted by the minimum value over
        all curves when some are <= 0, and the axis label says so.
    Returns the Figure.
    """
    fig, ax = _figure(ax, figsize)
    items = curves if isinstance(curves, (list, tuple)) else [curves]
    if labels is not None and len(labels) != len(items):
        raise ValueError("labels has %d entries for %d curves" % (len(labels), len(items)))
    ys = []
    for c in items:
        if hasattr(c, "path") or (isinstance(c, np.ndarray) and c.ndim > 1):
            if func is None:
                raise ValueError("func is required to plot the loss along a path")
            path = np.asarray(getattr(c, "path", c), dtype=np.float64)
            if hasattr(func, "losses"):
                y = np.asarray(func.losses(path), dtype=np.float64)
            else:
                y = np.array([float(func(p)) for p in path])
        else:
            y = np.asarray(c, dtype=np.float64).reshape(-1)
        ys.append(y)
    shift = 0.0
    if logy:
        lowest = min(float(np.nanmin(y)) for y in ys if y.size) if any(y.size for y in ys) else 1.0
        if lowest <= 0:
            shift = lowest
            ylabel = "%s - (%.6g)" % (ylabel, lowest)
    for i, y in enumerate(ys):
        label = labels[i] if labels is not None else None
        yy = y - shift
        if logy:
            yy = np.where(yy > 0, yy, np.nan)
        color, ls = _style(i)
        ax.plot(np.arange(len(y)), yy, color=color, linestyle=ls, linewidth=1.2, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    if labels is not None:
        ax.legend(loc="best", fontsize=8)
    ax.grid(True, alpha=0.3)
    return _finish(fig, save, dpi)


def function_plot(func: TestFunction | Callable[..., Any], paths: Any = None, *, labels: Sequence[str] | None = None,
                  xlim: tuple[float, float] | None = None, derivative: bool | Callable[..., Any] = True,
                  resolution: int = 400, title: str | None = None, ax: Axes | None = None,
                  figsize: tuple[float, float] = (6.4, 4.0), save: str | os.PathLike[str] | IO[bytes] | None = None,
                  dpi: int = 120) -> Figure:
    """A 1-D function, its derivative (dashed), and optionally the iterates of runs on it
    as markers on the curve.  ``func``: a 1-D TestFunction (or a callable, then
    ``derivative=False`` or a callable ``derivative``)."""
    fig, ax = _figure(ax, figsize)
    if xlim is None:
        xlim = getattr(func, "xlim", None)
    if xlim is None:
        raise ValueError("give xlim")
    xs = np.linspace(xlim[0], xlim[1], resolution)
    value = _value_fn(func)
    ax.plot(xs, value(xs), color="black", linewidth=1.5, label="f(x)")
    if derivative:
        d = derivative if callable(derivative) else getattr(func, "grad", None)
        if d is None:
            raise ValueError("func has no gradient: pass derivative=callable or derivative=False")
        ax.plot(xs, np.asarray(d(xs)), color="gray", linestyle="--", linewidth=1.2, label="f'(x)")
    ax.axhline(0.0, color="lightgray", linewidth=0.8)
    plist = [_path_array(p, 1)[:, 0] for p in _paths_list(paths)]
    if labels is not None and len(labels) != len(plist):
        raise ValueError("labels has %d entries for %d paths" % (len(labels), len(plist)))
    for i, p in enumerate(plist):
        ax.plot(p, value(p), "o-", color=_COLORS[i % len(_COLORS)], markersize=4, linewidth=0.8,
                label=labels[i] if labels is not None else None)
    ax.set_xlim(xlim)
    ax.set_xlabel("x")
    if title is None:
        title = getattr(func, "formula", None)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(loc="best", fontsize=8)
    return _finish(fig, save, dpi)
