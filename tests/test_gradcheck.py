"""fastgd.gradcheck: central differences against gradients known in closed form."""
import numpy as np
import pytest

import fastgd
from fastgd.gradcheck import GradCheckResult, check_gradient, numerical_gradient


def test_numerical_gradient_of_a_quadratic_form():
    # f(x) = x^T A x + b.x has gradient (A + A^T) x + b; central differences are exact for
    # a quadratic up to round-off
    rng = np.random.default_rng(0)
    A = rng.normal(size=(4, 4))
    b = rng.normal(size=4)
    x = rng.normal(size=4)
    g = numerical_gradient(lambda v: float(v @ A @ v + b @ v), x)
    np.testing.assert_allclose(g, (A + A.T) @ x + b, rtol=1e-8, atol=1e-8)
    assert g.dtype == np.float64 and g.shape == x.shape


def test_every_element_of_every_array_and_restored_exactly():
    rng = np.random.default_rng(1)
    W = rng.normal(size=(3, 2))
    c = rng.normal(size=(2,))
    X = rng.normal(size=(5, 3))
    Wc, cc = W.copy(), c.copy()
    calls = []

    def loss(params):
        calls.append(1)
        W_, c_ = params
        return float(np.sum(np.tanh(X @ W_ + c_)))

    gW, gc = numerical_gradient(loss, [W, c])
    # analytic: d/dZ sum tanh(Z) = 1 - tanh^2
    dZ = 1 - np.tanh(X @ Wc + cc) ** 2
    np.testing.assert_allclose(gW, X.T @ dZ, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(gc, dZ.sum(axis=0), rtol=1e-7, atol=1e-9)
    assert W.tobytes() == Wc.tobytes() and c.tobytes() == cc.tobytes()  # bit-exact restore
    assert len(calls) == 2 * (W.size + c.size)


def test_closure_that_ignores_its_argument_and_non_contiguous_params():
    base = np.arange(12.0).reshape(3, 4)
    view = base[:, ::2]  # non-contiguous view: perturbed in place through the view
    g = numerical_gradient(lambda _: float(np.sum(base ** 2)), view)
    np.testing.assert_allclose(g, 2 * view, rtol=1e-7, atol=1e-7)
    np.testing.assert_array_equal(base, np.arange(12.0).reshape(3, 4))


def test_zero_dim_param():
    x = np.array(2.0)
    g = numerical_gradient(lambda v: float(v ** 3), x)
    assert g.shape == () and abs(g - 12.0) < 1e-6


def test_element_restored_when_f_raises():
    x = np.array([1.0, 2.0, 3.0])
    n = []

    def f(v):
        n.append(1)
        if len(n) == 3:
            raise RuntimeError("boom")
        return float(v.sum())

    with pytest.raises(RuntimeError, match="boom"):
        numerical_gradient(f, x)
    np.testing.assert_array_equal(x, [1.0, 2.0, 3.0])


def test_check_gradient_passes_and_fails():
    rng = np.random.default_rng(2)
    W = rng.normal(size=(3, 3))
    b = rng.normal(size=3)

    def f(params):
        return float(np.sum(params[0] ** 2) + np.sum(np.sin(params[1])))

    def good(params):
        return [2 * params[0], np.cos(params[1])]

    def bad(params):
        g = good(params)
        g[0] = g[0].copy()
        g[0][1, 2] *= -1.0  # one wrong element
        return g

    res = check_gradient(f, good, [W, b])
    assert isinstance(res, GradCheckResult) and res.passed and bool(res)
    assert len(res.max_rel_error) == 2 and max(res.max_rel_error) < 1e-7
    res = check_gradient(f, bad, [W, b])
    assert not res.passed
    assert res.max_rel_error[0] > 1.0 - 1e-9 and res.max_rel_error[1] < 1e-7
    assert res.max_abs_error[0] == pytest.approx(4 * abs(W[1, 2]), rel=1e-6)


def test_check_gradient_single_array_and_zero_gradient():
    x = np.zeros(3)
    res = check_gradient(lambda v: float(np.sum(v ** 2)), lambda v: 2 * v, x)
    assert res.passed and res.max_rel_error == [0.0]


@pytest.mark.parametrize("params, exc, match", [
    (np.arange(3), TypeError, "floating"),
    ([np.zeros(2), "x"], TypeError, r"params\[1\]"),
    ("abc", TypeError, "params must be"),
    ([], ValueError, "empty"),
])
def test_bad_params(params, exc, match):
    with pytest.raises(exc, match=match):
        numerical_gradient(lambda p: 0.0, params)


def test_bad_arguments():
    x = np.zeros(2)
    ro = np.zeros(2)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        numerical_gradient(lambda p: 0.0, ro)
    with pytest.raises(TypeError, match="f must be callable"):
        numerical_gradient(3, x)
    with pytest.raises(ValueError, match="eps"):
        numerical_gradient(lambda p: 0.0, x, eps=0.0)
    with pytest.raises(TypeError, match="real scalar"):
        numerical_gradient(lambda p: np.ones(2), x)
    with pytest.raises(ValueError, match="shape"):
        check_gradient(lambda p: 0.0, lambda p: np.zeros(3), x)
    with pytest.raises(ValueError, match="list of 2"):
        check_gradient(lambda p: 0.0, lambda p: [np.zeros(2)], [x, x.copy()])
    with pytest.raises(ValueError, match="rtol"):
        check_gradient(lambda p: 0.0, lambda p: p, x, rtol=-1)


def test_top_level_names():
    assert fastgd.numerical_gradient is numerical_gradient and fastgd.check_gradient is check_gradient
