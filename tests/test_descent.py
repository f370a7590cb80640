"""fastgd.descent: the published results of the teaching texts fastgd grew out of (restated in
the project's shared SEEDS.md, sec. 5, which is not part of this repository; the 1-D result is
also derived here in closed form), the stop test,
the rules, the compiled loop against the Python loop, Newton's method."""
import math

import numpy as np
import pytest

import fastgd
from fastgd import functions as F
from fastgd import optim as O
from fastgd.backends import backend_module
from fastgd.descent import DescentResult, gradient_descent, newton

try:
    import numba
except ImportError:  # pragma: no cover
    numba = None
needs_numba = pytest.mark.skipif(numba is None, reason="numba not installed: no compiled loop")


def backends_with(kernel):
    """Every backend (conftest's list, not the ones that happen to import: a missing one is a
    skip with its reason, a failure under FASTGD_REQUIRE_BACKENDS); each has every kernel of
    the rule table (tests/test_rules.py), so ``kernel`` only documents what the test uses."""
    from conftest import ALL_BACKENDS, _backend_param
    return [_backend_param(b) for b in ALL_BACKENDS]


def textbook_gd(df, x, lr, iterations, eps):
    """The texts' loop, written out: test before the update, return the whole path."""
    x = np.array(x, dtype=float)
    path = [x.copy()]
    for _ in range(iterations):
        if np.max(np.abs(df(x))) < eps:
            break
        x = x - lr * df(x)
        path.append(x.copy())
    return np.array(path)


def beale_grad_textbook(p):
    x, y = p
    return np.array([2 * (1.5 - x + x * y) * (y - 1) + 2 * (2.25 - x + x * y ** 2) * (y ** 2 - 1)
                     + 2 * (2.625 - x + x * y ** 3) * (y ** 3 - 1),
                     2 * (1.5 - x + x * y) * x + 2 * (2.25 - x + x * y ** 2) * (2 * x * y)
                     + 2 * (2.625 - x + x * y ** 3) * (3 * x * y ** 2)])


def two_gaussians_grad_textbook(p):
    x, y = p
    e1 = math.exp(-((x + 1) ** 2 + (y - 1) ** 2) / 2)
    e2 = math.exp(-((x - 1) ** 2 + (y + 1) ** 2) / 2)
    return np.array([2 * (x + 1) * e1 + (x - 1) * e2, 2 * (y - 1) * e1 + (y + 1) * e2])


# ---------------------------------------------------------------------------------------
# published results of the teaching texts (the project's SEEDS.md, sec. 5)

@pytest.mark.parametrize("backend", backends_with("sgd"))
def test_published_1d_quadratic(backend):
    r = gradient_descent(lambda x: 12 * x - 12, -0.9, "sgd", lr=0.03, iterations=15, tol=0, backend=backend)
    assert r.n_iter == 15 and r.path.shape == (16,) and r.x.shape == ()
    assert round(float(r.x), 6) == 0.997648
    # closed form: x_k - 1 = -1.9 * 0.64^k
    np.testing.assert_allclose(r.path, 1 - 1.9 * 0.64 ** np.arange(16), rtol=0, atol=1e-14)


@needs_numba
def test_published_beale_300k_compiled():
    r = gradient_descent(F.beale.jit_grad, [3.0, 4.0], "sgd", lr=5e-6, iterations=300_000, tol=1e-8)
    assert r.compiled and r.n_iter == 300_000 and not r.converged
    assert r.path.shape == (300_001, 2)
    np.testing.assert_array_equal(np.round(r.x, 8), [2.70735828, 0.41689171])
    np.testing.assert_array_equal(r.path[0], [3.0, 4.0])
    np.testing.assert_allclose(r.grad, F.beale.grad(r.x), rtol=1e-12)


@pytest.mark.parametrize("start, lr, steps, published", [
    ((1.5, 1.5), 0.02, 90, (-0.9496, 0.9809)),
    ((0.7, -0.2), 0.1, 25, (0.8807, -0.9063)),
])
def test_published_two_gaussians_momentum_and_nesterov_closer(start, lr, steps, published):
    m = gradient_descent(two_gaussians_grad_textbook, start, "momentum", lr=lr, mu=0.9, iterations=steps, tol=0)
    assert m.n_iter == steps
    np.testing.assert_array_equal(np.round(m.x, 4), published)
    nv = gradient_descent(two_gaussians_grad_textbook, start, "nesterov_lookahead", lr=lr, mu=0.9,
                          iterations=steps, tol=0)
    minima = F.two_gaussians.minima
    target = minima[np.argmin(np.linalg.norm(minima - m.x, axis=1))]
    assert np.linalg.norm(nv.x - target) < np.linalg.norm(m.x - target)


def test_published_beale_start_of_python_loop_matches_the_textbook_loop():
    # the first 2,000 of the 300,000 iterations, Python loop vs the texts' loop (y**3 vs y*y*y
    # in the gradients: equal to round-off)
    r = gradient_descent(F.beale.grad, [3.0, 4.0], "sgd", lr=5e-6, iterations=2000, backend="numpy")
    ref = textbook_gd(beale_grad_textbook, [3.0, 4.0], 5e-6, 2000, 1e-8)
    np.testing.assert_allclose(r.path, ref, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# the loop and the stop test

def test_stop_test_happens_before_the_update():
    # 6x^2 - 12x + 3 from -0.9, lr 0.03: |grad(x_k)| = 12 * 1.9 * 0.64^k; the loop stops at the
    # first k with |grad(x_k)| < tol, after k updates
    tol = 1e-3
    k = next(k for k in range(1000) if 12 * 1.9 * 0.64 ** k < tol)
    r = gradient_descent(F.quadratic.grad, -0.9, "sgd", lr=0.03, iterations=1000, tol=tol, backend="numpy")
    assert r.converged and r.n_iter == k and len(r.path) == k + 1
    assert abs(r.grad) < tol and abs(12 * r.path[-2] - 12) >= tol
    np.testing.assert_array_equal(r.path, textbook_gd(F.quadratic.grad, -0.9, 0.03, 1000, tol))
    # not converged: exactly `iterations` updates, grad at the final x
    r = gradient_descent(F.quadratic.grad, -0.9, "sgd", lr=0.03, iterations=5, tol=tol, backend="numpy")
    assert not r.converged and r.n_iter == 5 and r.grad == 12 * r.x - 12
    # already converged at x0: no update
    r = gradient_descent(F.quadratic.grad, 1.0, "sgd", lr=0.03, iterations=5, backend="numpy")
    assert r.converged and r.n_iter == 0 and r.path.shape == (1,)
    # iterations=0
    r = gradient_descent(F.quadratic.grad, 2.0, "sgd", lr=0.03, iterations=0, backend="numpy")
    assert r.n_iter == 0 and not r.converged and r.x == 2.0


def test_result_object_and_record_path():
    r = gradient_descent(F.bowl.grad, [1.0, 1.0], "adam", lr=0.1, iterations=10, tol=0, backend="numpy")
    assert isinstance(r, DescentResult) and r.method == "adam" and not r.compiled
    assert r.path.shape == (11, 2) and r.x.shape == (2,) and r.grad.shape == (2,)
    np.testing.assert_array_equal(r.path[-1], r.x)
    assert isinstance(r.optimizer, O.Adam) and r.optimizer.step_count == 10
    r2 = gradient_descent(F.bowl.grad, [1.0, 1.0], "adam", lr=0.1, iterations=10, tol=0, record_path=False,
                          backend="numpy")
    assert r2.path is None
    np.testing.assert_array_equal(r2.x, r.x)


def test_x0_is_not_modified_and_dtype_kept():
    x0 = np.array([1.0, 2.0], np.float32)
    r = gradient_descent(lambda x: 2 * x, x0, "sgd", lr=0.1, iterations=3, tol=0, backend="numpy")
    np.testing.assert_array_equal(x0, [1.0, 2.0])
    assert r.x.dtype == np.float32 and r.path.dtype == np.float32
    np.testing.assert_allclose(r.x, x0 * np.float32(0.8) ** 3, rtol=1e-6)
    r = gradient_descent(lambda x: 2 * x, [1, 2], "sgd", lr=0.1, iterations=1, tol=0, backend="numpy")
    assert r.x.dtype == np.float64


def test_grad_fn_gets_a_read_only_iterate_and_may_return_aliases():
    seen = []

    def g(x):
        seen.append(x.flags.writeable)
        return x  # the gradient of |x|^2 / 2 IS x: an alias of the iterate
    r = gradient_descent(g, [1.0, -2.0], "sgd", lr=0.5, iterations=3, tol=0, backend="numpy")
    np.testing.assert_allclose(r.x, np.array([1.0, -2.0]) * 0.5 ** 3)
    assert not any(seen)


def test_matrix_shaped_parameters():
    A = np.array([[2.0, 0.0], [0.0, 4.0]])
    r = gradient_descent(lambda X: A @ X, np.ones((2, 3)), "sgd", lr=0.1, iterations=20, tol=0, backend="numpy")
    assert r.path.shape == (21, 2, 3)
    np.testing.assert_allclose(r.x, np.array([[0.8 ** 20] * 3, [0.6 ** 20] * 3]), rtol=1e-12)


# ---------------------------------------------------------------------------------------
# the rules

@pytest.mark.parametrize("backend", backends_with("sgd"))
def test_keras_momentum_equals_the_book_form_and_torch_momentum(backend):
    lr, mu, n = 0.02, 0.9, 60
    r = gradient_descent(two_gaussians_grad_textbook, (1.5, 1.5), "momentum", lr=lr, mu=mu, iterations=n, tol=0)
    # book form: v = gamma v + lr g; x -= v  (same iterates exactly: v only changes sign)
    x, v = np.array([1.5, 1.5]), np.zeros(2)
    book = [x.copy()]
    for _ in range(n):
        v = mu * v + lr * two_gaussians_grad_textbook(x)
        x = x - v
        book.append(x.copy())
    np.testing.assert_array_equal(r.path, np.array(book))
    # torch's SGD(momentum): b = mu b + g; x -= lr b -- the same path up to round-off
    t = gradient_descent(two_gaussians_grad_textbook, (1.5, 1.5), "sgd", lr=lr, momentum=mu, iterations=n, tol=0,
                         backend=backend)
    np.testing.assert_allclose(t.path, r.path, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", backends_with("sgd"))
def test_lookahead_nesterov_is_torch_nesterov_at_the_lookahead_points(backend):
    # textbook: v' = mu v - lr g(x + mu v), x' = x + v'; torch's form iterates the look-ahead
    # points y = x + mu v = x_k + mu (x_k - x_{k-1})
    lr, mu, n = 0.02, 0.9, 60
    la = gradient_descent(two_gaussians_grad_textbook, (1.5, 1.5), "nesterov_lookahead", lr=lr, mu=mu,
                          iterations=n, tol=0)
    tn = gradient_descent(two_gaussians_grad_textbook, (1.5, 1.5), "sgd", lr=lr, momentum=mu, nesterov=True,
                          iterations=n, tol=0, backend=backend)
    y = la.path.copy()
    y[1:] += mu * np.diff(la.path, axis=0)
    np.testing.assert_allclose(tn.path, y, rtol=1e-11, atol=1e-12)
    # and its own definition, written out
    x, v = np.array([1.5, 1.5]), np.zeros(2)
    for _ in range(n):
        v = mu * v - lr * two_gaussians_grad_textbook(x + mu * v)
        x = x + v
    np.testing.assert_array_equal(la.x, x)


@pytest.mark.parametrize("name", sorted(O.OPTIMIZERS))
def test_every_named_rule_runs_its_optimizer(name):
    hyper = {"lr": 0.05}
    r = gradient_descent(F.bowl.grad, [1.0, 1.0], name, iterations=7, tol=0, backend="numpy", **hyper)
    opt = O.OPTIMIZERS[name]([np.array([1.0, 1.0])], backend="numpy", **hyper)
    for _ in range(7):
        opt.step([F.bowl.grad(opt.parameters()[0])])
    np.testing.assert_array_equal(r.x, opt.parameters()[0])
    assert r.optimizer.step_count == 7


def test_optimizer_object_descends_in_place_and_keeps_its_state():
    x = np.array([1.0, 1.0])
    opt = O.Adam([x], lr=0.05, backend="numpy")
    r1 = gradient_descent(F.bowl.grad, None, opt, iterations=5, tol=0)
    assert opt.step_count == 5 and r1.optimizer is opt and r1.method == "adam"
    np.testing.assert_array_equal(x, r1.x)
    r2 = gradient_descent(F.bowl.grad, None, opt, iterations=5, tol=0)
    whole = gradient_descent(F.bowl.grad, [1.0, 1.0], "adam", lr=0.05, iterations=10, tol=0, backend="numpy")
    np.testing.assert_array_equal(r2.x, whole.x)  # continued: steps 6-10 with the bias correction of 6-10
    gradient_descent(F.bowl.grad, [3.0, 3.0], opt, iterations=0)
    np.testing.assert_array_equal(x, [3.0, 3.0])  # x0 copied into the parameter


def test_driver_validation():
    g = F.bowl.grad
    with pytest.raises(TypeError, match="grad_fn must be callable"):
        gradient_descent(3, [1.0, 1.0], iterations=1)
    with pytest.raises(ValueError, match="iterations must be >= 0"):
        gradient_descent(g, [1.0, 1.0], iterations=-1)
    with pytest.raises(TypeError, match="iterations must be an integer"):
        gradient_descent(g, [1.0, 1.0], iterations=10.0)
    with pytest.raises(ValueError, match="tol must be >= 0"):
        gradient_descent(g, [1.0, 1.0], iterations=1, tol=-1)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        gradient_descent(g, [1.0, 1.0], "newton", iterations=1)
    with pytest.raises(TypeError, match="optimizer 'adam'.*momentum"):
        gradient_descent(g, [1.0, 1.0], "adam", iterations=1, momentum=0.9)
    with pytest.raises(TypeError, match="unexpected hyperparameter"):
        gradient_descent(g, [1.0, 1.0], "momentum", iterations=1, betas=(0.9, 0.9))
    with pytest.raises(ValueError, match="lr must be >= 0"):
        gradient_descent(g, [1.0, 1.0], "momentum", iterations=1, lr=-1)
    with pytest.raises(ValueError, match="x0 must have at least one element"):
        gradient_descent(g, [], iterations=1)
    with pytest.raises(TypeError, match="x0 must be"):
        gradient_descent(g, ["a"], iterations=1)
    with pytest.raises(ValueError, match=r"grad_fn returned shape \(3,\)"):
        gradient_descent(lambda x: np.zeros(3), [1.0, 1.0], iterations=1, backend="numpy")
    opt = O.SGD([np.ones(2)])
    with pytest.raises(TypeError, match="go to the optimizer's constructor"):
        gradient_descent(g, None, opt, iterations=1, lr=0.1)
    with pytest.raises(ValueError, match="x0 has shape"):
        gradient_descent(g, [1.0, 2.0, 3.0], opt, iterations=1)
    with pytest.raises(ValueError, match="exactly one parameter"):
        gradient_descent(g, None, O.SGD([np.ones(2), np.ones(2)]), iterations=1)
    with pytest.raises(ValueError, match="numba-jitted"):
        gradient_descent(g, [1.0, 1.0], iterations=1, compiled=True)


# ---------------------------------------------------------------------------------------
# the compiled loop

@needs_numba
def test_compiled_loop_matches_python_loop_on_beale():
    kw = dict(lr=5e-6, iterations=20_000, tol=1e-8, backend="numpy")
    c = gradient_descent(F.beale.jit_grad, [3.0, 4.0], "sgd", **kw)
    p = gradient_descent(F.beale.jit_grad, [3.0, 4.0], "sgd", compiled=False, **kw)
    assert c.compiled and not p.compiled
    np.testing.assert_array_equal(c.path, p.path)  # bit-identical iterates
    np.testing.assert_array_equal(c.grad, p.grad)
    # and the texts' own loop with their own gradient code, to round-off
    ref = textbook_gd(beale_grad_textbook, [3.0, 4.0], 5e-6, 20_000, 1e-8)
    np.testing.assert_allclose(c.path, ref, rtol=1e-12)


@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("rule, hyper", [
    ("sgd", dict(lr=1e-3, momentum=0.9, dampening=0.2, weight_decay=0.01)),
    ("sgd", dict(lr=1e-3, momentum=0.9, nesterov=True, maximize=False)),
    ("adam", dict(lr=0.02, weight_decay=0.01)),
    ("adamw", dict(lr=0.02, amsgrad=True, betas=(0.8, 0.99))),
    ("momentum", dict(lr=1e-3, mu=0.9)),
    ("nesterov_lookahead", dict(lr=1e-3, mu=0.9)),
])
def test_compiled_loop_is_bit_identical_to_the_numpy_backend(rule, hyper, dtype):
    x0 = np.array([1.0, 1.5], dtype)
    c = gradient_descent(F.beale.jit_grad, x0, rule, iterations=400, tol=1e-6, backend="numpy", **hyper)
    p = gradient_descent(F.beale.jit_grad, x0, rule, iterations=400, tol=1e-6, backend="numpy", compiled=False,
                         **hyper)
    assert c.compiled and c.x.dtype == dtype and c.n_iter == p.n_iter and c.converged == p.converged
    np.testing.assert_array_equal(c.path, p.path)


@needs_numba
def test_compiled_loop_stops_like_the_python_loop_and_other_backends_agree():
    quad = numba.njit(lambda x: 12.0 * x - 12.0)
    c = gradient_descent(quad, -0.9, "sgd", lr=0.03, iterations=1000, tol=1e-3)
    p = gradient_descent(F.quadratic.grad, -0.9, "sgd", lr=0.03, iterations=1000, tol=1e-3, backend="numpy")
    assert c.compiled and c.converged and c.n_iter == p.n_iter and c.path.shape == p.path.shape == (p.n_iter + 1,)
    np.testing.assert_array_equal(c.path, p.path)
    for b in fastgd.available_backends():  # compiled kernels: equal to round-off
        if hasattr(backend_module(b), "adam"):
            q = gradient_descent(F.beale.jit_grad, [1.0, 1.5], "adam", lr=0.02, iterations=300, tol=0, backend=b,
                                 compiled=False)
            c = gradient_descent(F.beale.jit_grad, [1.0, 1.5], "adam", lr=0.02, iterations=300, tol=0)
            np.testing.assert_allclose(q.path, c.path, rtol=1e-10, atol=1e-12)


@needs_numba
def test_compiled_loop_choice():
    # a jitted grad with a rule the compiled loop lacks: the Python loop runs (auto) ...
    r = gradient_descent(F.bowl.jit_grad, [1.0, 1.0], "rmsprop", lr=0.01, iterations=5, tol=0, backend="numpy")
    assert not r.compiled and r.n_iter == 5
    # ... or it is an error when compiled=True is asked for
    with pytest.raises(ValueError, match="the compiled loop runs"):
        gradient_descent(F.bowl.jit_grad, [1.0, 1.0], "rmsprop", iterations=5, compiled=True)
    with pytest.raises(ValueError, match="not an optimizer object"):
        gradient_descent(F.bowl.jit_grad, None, O.SGD([np.ones(2)]), iterations=5, compiled=True)
    r = gradient_descent(F.bowl.jit_grad, [1.0, 1.0], "sgd", lr=0.01, iterations=5, tol=0, record_path=False)
    assert r.compiled and r.path is None and r.n_iter == 5


# ---------------------------------------------------------------------------------------
# Newton

def test_newton_solves_a_quadratic_in_one_step():
    r = newton(F.quadratic2d.grad, F.quadratic2d.hess, [-3.0, 5.0], iterations=10, tol=1e-10)
    assert r.converged and r.n_iter == 1 and r.method == "newton"
    np.testing.assert_allclose(r.x, [1.0, 7.0 / 9.0], rtol=0, atol=1e-15)
    r = newton(F.quadratic.grad, F.quadratic.hess, -0.9, iterations=10)
    assert r.n_iter == 1 and r.x == 1.0 and r.x.shape == ()
    A = np.diag([1.0, 2.0, 3.0, 4.0, 5.0])  # n-D: x^T A x / 2 - b.x, minimum A^-1 b
    b = np.arange(1.0, 6.0)
    r = newton(lambda x: A @ x - b, lambda x: A, np.zeros(5), iterations=5)
    assert r.n_iter == 1
    np.testing.assert_allclose(r.x, b / np.diag(A), rtol=1e-15)


def test_newton_converges_on_rosenbrock_and_himmelblau():
    r = newton(F.rosenbrock.grad, F.rosenbrock.hess, [-1.2, 1.0], iterations=50, tol=1e-10)
    assert r.converged and r.n_iter < 10
    np.testing.assert_allclose(r.x, [1.0, 1.0], atol=1e-12)
    r = newton(F.himmelblau.grad, F.himmelblau.hess, [3.5, 2.5], iterations=50, tol=1e-10)
    assert r.converged
    np.testing.assert_allclose(r.x, [3.0, 2.0], atol=1e-12)


def test_newton_damping_and_singular_hessian():
    # one damped step: (H + d I) s = g, written out with the explicit 2x2 solution
    x0 = np.array([-1.2, 1.0])
    H = F.rosenbrock.hess(x0) + 10.0 * np.eye(2)
    g = F.rosenbrock.grad(x0)
    det = H[0, 0] * H[1, 1] - H[0, 1] * H[1, 0]
    s = np.array([H[1, 1] * g[0] - H[0, 1] * g[1], H[0, 0] * g[1] - H[1, 0] * g[0]]) / det
    r = newton(F.rosenbrock.grad, F.rosenbrock.hess, x0, iterations=1, tol=0, damping=10.0)
    np.testing.assert_allclose(r.path[1], x0 - s, rtol=1e-13)
    with pytest.raises(np.linalg.LinAlgError, match="damping"):
        newton(lambda x: np.ones(2), lambda x: np.zeros((2, 2)), [0.0, 0.0], iterations=3)
    r = newton(lambda x: np.ones(2), lambda x: np.zeros((2, 2)), [0.0, 0.0], iterations=3, tol=0, damping=2.0)
    np.testing.assert_allclose(r.x, [-1.5, -1.5])  # each step x -= g / damping
    with pytest.raises(ValueError, match="hess_fn returned shape"):
        newton(F.bowl.grad, lambda x: np.eye(3), [1.0, 1.0], iterations=3)
    with pytest.raises(TypeError, match="hess_fn must be callable"):
        newton(F.bowl.grad, None, [1.0, 1.0])
    with pytest.raises(ValueError, match="damping must be >= 0"):
        newton(F.bowl.grad, F.bowl.hess, [1.0, 1.0], damping=-1.0)


def test_top_level_names():
    assert fastgd.gradient_descent is gradient_descent and fastgd.newton is newton
    assert fastgd.optim is O and fastgd.functions is F
