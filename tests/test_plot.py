"""fastgd.plot (Agg) and the demo: figures have the expected artists and PNGs are written."""
import sys

import numpy as np
import pytest

from fastgd import functions as F
from fastgd.descent import gradient_descent

mpl = pytest.importorskip("matplotlib", reason="matplotlib not installed (optional extra fastgd[plot])")
mpl.use("Agg")
from matplotlib.contour import ContourSet  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.quiver import Quiver  # noqa: E402

from fastgd import plot as P  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _runs():
    kw = dict(lr=0.02, mu=0.9, iterations=90, tol=0)
    return [gradient_descent(F.two_gaussians.grad, (1.5, 1.5), "momentum", **kw),
            gradient_descent(F.two_gaussians.grad, (1.5, 1.5), "nesterov_lookahead", **kw)]


def test_contour_plot_with_paths_as_arrows_and_minima(tmp_path):
    runs = _runs()
    out = tmp_path / "paths.png"
    fig = P.contour_plot(F.two_gaussians, runs, labels=["momentum", "Nesterov"], save=out)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert any(isinstance(c, ContourSet) for c in ax.collections)
    quivers = [c for c in ax.collections if isinstance(c, Quiver)]
    assert len(quivers) == 2
    assert all(q.N == 90 for q in quivers)  # one arrow between each pair of consecutive iterates
    np.testing.assert_allclose(quivers[0].U, np.diff(runs[0].path[:, 0]))
    stars = [ln for ln in ax.lines if ln.get_marker() == "*"]
    assert len(stars) == 1
    np.testing.assert_array_equal(stars[0].get_xdata(), F.two_gaussians.minima[:, 0])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["minimum", "momentum", "Nesterov"]
    assert ax.get_xlim() == F.two_gaussians.xlim
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000


def test_long_paths_are_subsampled_and_lines_without_arrows():
    r = gradient_descent(F.beale.grad, [3.0, 4.0], "sgd", lr=5e-6, iterations=3000, backend="numpy")
    fig = P.contour_plot(F.beale, r, max_arrows=50)
    q = [c for c in fig.axes[0].collections if isinstance(c, Quiver)][0]
    assert q.N == 49
    fig = P.contour_plot(F.beale, [r.path], arrows=False, minima=[])
    ax = fig.axes[0]
    assert not any(isinstance(c, Quiver) for c in ax.collections)
    assert not [ln for ln in ax.lines if ln.get_marker() == "*"]
    assert any(len(ln.get_xdata()) == 200 for ln in ax.lines)


def test_contour_plot_of_a_plain_callable_takes_the_window_from_the_paths():
    path = np.array([[0.0, 0.0], [1.0, 2.0]])
    fig = P.contour_plot(lambda X, Y: X ** 2 + Y ** 2, path, levels=[0.5, 1, 2])
    x0, x1 = fig.axes[0].get_xlim()
    assert x0 < 0 < 1 < x1
    with pytest.raises(ValueError, match="xlim"):
        P.contour_plot(lambda X, Y: X + Y)
    with pytest.raises(ValueError, match="labels has 1 entries for 2 paths"):
        P.contour_plot(F.bowl, [path, path], labels=["a"])
    with pytest.raises(ValueError, match="record_path=False"):
        P.contour_plot(F.bowl, gradient_descent(F.bowl.grad, [1.0, 1.0], "momentum", iterations=2,
                                                record_path=False))


def test_loss_plot(tmp_path):
    runs = _runs()
    fig = P.loss_plot(runs, func=F.two_gaussians, labels=["momentum", "Nesterov"], save=tmp_path / "loss.png")
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and ax.get_yscale() == "log"
    # losses are shifted by the lowest value (negative here) so they can be drawn on a log axis
    lowest = min(F.two_gaussians.losses(r.path).min() for r in runs)
    y = ax.lines[0].get_ydata()
    np.testing.assert_allclose(y[:5], F.two_gaussians.losses(runs[0].path)[:5] - lowest)
    assert "loss -" in ax.get_ylabel()
    assert (tmp_path / "loss.png").read_bytes()[:8] == PNG_MAGIC
    fig = P.loss_plot([np.array([3.0, 2.0, 1.0])], logy=False)
    np.testing.assert_array_equal(fig.axes[0].lines[0].get_ydata(), [3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="func is required"):
        P.loss_plot(runs)
    many = P.loss_plot([np.arange(1.0, 4.0)] * 12)  # 12 curves: colours repeat with another line style
    assert many.axes[0].lines[10].get_linestyle() == "--"


def test_function_plot(tmp_path):
    r = gradient_descent(F.quadratic.grad, -0.9, "sgd", lr=0.03, iterations=15, tol=0, backend="numpy")
    fig = P.function_plot(F.quadratic, r, labels=["GD"], save=tmp_path / "f.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["f(x)", "f'(x)", "GD"]
    np.testing.assert_array_equal(ax.lines[-1].get_xdata(), r.path)
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_draws_into_a_given_axes():
    fig = Figure()
    axes = fig.subplots(1, 2)
    out = P.contour_plot(F.bowl, None, ax=axes[1], resolution=40)
    assert out is fig and axes[1].collections and not axes[0].collections


def test_clear_error_without_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'fastgd\[plot\]'"):
        P.contour_plot(F.bowl)


def test_demo_writes_the_plots(tmp_path, capsys):
    from fastgd import demo
    assert demo.main(["--out", str(tmp_path), "--quick", "--only", "two_gaussians", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "0.997648" in out and "[-0.9496,  0.9809]" in out and "[ 0.8807, -0.9063]" in out
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["beale_gd_300k.png", "quadratic_1d.png", "two_gaussians_loss.png",
                     "two_gaussians_momentum_vs_nesterov.png", "two_gaussians_paths.png"]
    for p in tmp_path.iterdir():
        assert p.read_bytes()[:8] == PNG_MAGIC
