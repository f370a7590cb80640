"""fastgd.functions: analytic gradients and Hessians against central differences, known
minima, vectorisation over meshgrids, numba-compiled gradients."""
import math

import numpy as np
import pytest

from fastgd import functions as F
from fastgd.gradcheck import check_gradient, numerical_gradient

ALL = sorted(F.ALL)
TWO_D = [n for n in ALL if F.ALL[n].dim == 2]


def _points(func, rng, k=5):
    """k random points in the function's plotting window (shape of a point for its dim)."""
    if func.dim == 1:
        return [np.array(rng.uniform(*func.xlim)) for _ in range(k)]
    n = func.dim or 4
    lo = np.array([func.xlim[0], func.ylim[0]] + [func.xlim[0]] * (n - 2))
    hi = np.array([func.xlim[1], func.ylim[1]] + [func.xlim[1]] * (n - 2))
    return [rng.uniform(lo, hi) for _ in range(k)]


def _f_at(func):
    return lambda p: float(np.sum(func(p)))


@pytest.mark.parametrize("name", ALL)
def test_gradient_matches_central_differences(name):
    func = F.get(name)
    rng = np.random.default_rng(1)
    for p in _points(func, rng):
        res = check_gradient(_f_at(func), func.grad, p.copy(), rtol=1e-6, atol=1e-6)
        assert res.passed, (name, p, res.analytic, res.numerical)


@pytest.mark.parametrize("name", ALL)
def test_hessian_matches_differences_of_the_gradient(name):
    func = F.get(name)
    rng = np.random.default_rng(2)
    for p in _points(func, rng, 3):
        H = func.hess(p)
        n = p.size
        assert H.shape == (n, n)
        # column j = d grad / d x_j, by central differences of the analytic gradient
        flat = p.reshape(-1)
        for i in range(n):
            row = numerical_gradient(lambda q, i=i, shape=p.shape: float(func.grad(q.reshape(shape)).reshape(-1)[i]),
                                     flat.copy())
            np.testing.assert_allclose(H[i], row, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(H).max()))
        np.testing.assert_allclose(H, H.T, rtol=0, atol=1e-12 * max(1.0, np.abs(H).max()))


@pytest.mark.parametrize("name", ALL)
def test_minima_are_stationary_with_positive_definite_hessian(name):
    func = F.get(name)
    for m in func.minima:
        p = m.reshape(()) if func.dim == 1 else m
        g = func.grad(p)
        assert np.max(np.abs(g)) < 1e-9, (name, m, g)
        ev = np.linalg.eigvalsh(func.hess(p))
        # positive definite (semi-definite along the ring of minima of sin(x^2 + y^2))
        assert ev.max() > 0 and ev.min() > -1e-12 * ev.max(), (name, m, ev)
        # and no lower value close by
        rng = np.random.default_rng(0)
        near = p + rng.normal(scale=1e-3, size=(50,) + p.shape)
        assert all(func(q) >= func(p) - 1e-15 for q in near), (name, m)
    for s in func.saddles:
        assert np.max(np.abs(func.grad(s))) < 1e-9
        ev = np.linalg.eigvalsh(func.hess(s))
        assert ev.min() < 0 < ev.max(), (name, s, ev)


def test_known_values_and_minima():
    # independent arithmetic: the published gradient of Beale at (3, 4) and textbook minima
    np.testing.assert_array_equal(F.beale.grad(np.array([3.0, 4.0])), [25625.25, 57519.0])
    assert F.beale(np.array([3.0, 0.5])) == 0.0
    assert F.rosenbrock(np.array([1.0, 1.0])) == 0.0
    assert F.himmelblau(np.array([3.0, 2.0])) == 0.0
    for m in F.himmelblau.minima:
        assert abs(F.himmelblau(m)) < 1e-20
    assert F.quadratic(np.array(1.0)) == -3.0              # 6 - 12 + 3
    assert F.cubic(np.array(3.0)) == 27 - 27 - 27 + 2
    assert F.cubic.minima[0, 0] == 3.0 and F.quadratic.minima[0, 0] == 1.0
    np.testing.assert_allclose(F.quadratic2d.minima[0], [1.0, 7.0 / 9.0])
    np.testing.assert_allclose(F.canyon.minima[0], [1.0, 3.0 / 8.0])
    # the two Gaussians: global minimum near (-1, 1) deeper than the local one near (1, -1)
    glob, loc = F.two_gaussians.minima
    assert np.linalg.norm(glob - [-1, 1]) < 0.05 and np.linalg.norm(loc - [1, -1]) < 0.2
    assert F.two_gaussians(glob) < F.two_gaussians(loc) < 0
    # sin(x^2 + y^2): -1 on the ring r^2 = 3 pi / 2
    assert F.sin_radial(F.sin_radial.minima[0]) == pytest.approx(-1.0, abs=1e-15)
    assert F.product(np.array([2.0, 3.0, 4.0])) == 24.0
    np.testing.assert_array_equal(F.product.grad(np.array([2.0, 3.0, 4.0])), [12.0, 8.0, 6.0])
    np.testing.assert_array_equal(F.product.grad(np.array([0.0, 3.0, 4.0])), [12.0, 0.0, 0.0])
    assert F.sphere(np.array([3.0, 4.0])) == 25.0
    np.testing.assert_array_equal(F.bowl.global_minimum, [0.0, 0.0])
    assert F.product.global_minimum is None and len(F.product.minima) == 0


@pytest.mark.parametrize("name", TWO_D + ["sphere", "product"])
def test_value_is_vectorised_over_a_meshgrid(name):
    func = F.get(name)
    X, Y = np.meshgrid(np.linspace(*func.xlim, 7), np.linspace(*func.ylim, 5))
    Z = func.value(X, Y)
    assert Z.shape == X.shape
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            assert Z[i, j] == func(np.array([X[i, j], Y[i, j]]))


def test_one_d_functions_are_elementwise_and_losses_follow_a_path():
    x = np.linspace(-2, 4, 9)
    np.testing.assert_array_equal(F.quadratic.value(x), 6 * x * x - 12 * x + 3)
    np.testing.assert_array_equal(F.cubic.grad(x), 3 * x * x - 6 * x - 9)
    path = np.stack([x, x[::-1]], axis=1)
    np.testing.assert_array_equal(F.beale.losses(path), [F.beale(p) for p in path])
    np.testing.assert_array_equal(F.quadratic.losses(x.reshape(-1, 1)), F.quadratic.value(x))


def test_get_and_catalogue():
    for name in ("cubic", "quadratic", "quadratic2d", "canyon", "bowl", "beale", "two_gaussians", "sin_radial",
                 "product", "sphere", "rosenbrock", "himmelblau"):
        assert F.get(name) is F.ALL[name]
    with pytest.raises(ValueError, match="name must be one of"):
        F.get("nope")
    with pytest.raises(TypeError, match="coordinate"):
        F.beale.value(np.zeros(3))


@pytest.mark.parametrize("name", ALL)
def test_jitted_gradient_is_bit_identical(name):
    pytest.importorskip("numba", reason="numba not installed: jit_grad unavailable")
    func = F.get(name)
    rng = np.random.default_rng(3)
    for p in _points(func, rng, 3):
        np.testing.assert_array_equal(np.asarray(func.jit_grad(p)), func.grad(p))
    if name in ("beale", "rosenbrock", "two_gaussians"):
        p = _points(func, rng, 1)[0]
        np.testing.assert_array_equal(func.jit_hess(p), func.hess(p))
        assert func.jit_value(p[0], p[1]) == func(p)


def test_jit_needs_numba(monkeypatch):
    import sys
    fresh = F.TestFunction("t", "x", F._quadratic_value, F._quadratic_grad, None, [[1.0]], 1, (0, 1), None, [0.0])
    monkeypatch.setitem(sys.modules, "numba", None)
    with pytest.raises(ImportError, match="numba"):
        _ = fresh.jit_grad
    with pytest.raises(NotImplementedError):
        fresh.hess(np.array(1.0))


def test_newton_style_hessian_of_one_d_functions():
    H = F.cubic.hess(np.array(2.0))
    assert H.shape == (1, 1) and H[0, 0] == 6.0
    assert math.isclose(F.quadratic.hess(np.array([0.3]))[0, 0], 12.0)
