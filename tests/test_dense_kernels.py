"""fastgd.nn's functional kernels: every kernel on every compiled backend and dtype against the
NumPy reference (the oracle); the reference (and every backend) against central differences in
float64; the ReLU kink convention; NaN propagation; argument checks that write nothing.

Tolerances (``bound_*``) are worst-case rounding bounds, not guesses: a sum of k products
computed in any order differs from the exact one by at most gamma_k * sum|terms| with
gamma_k ~ k * u (u = eps/2; Higham, *Accuracy and Stability of Numerical Algorithms*, 3.1), so
two such sums (BLAS vs BLAS, or sequential vs pairwise) differ by at most (k + 2) * eps *
sum|terms|.  exp/log/tanh come from different libraries (NumPy's SIMD loops, libm, LLVM), each
within a few ulp: 8 * eps relative covers them.  A wrong index, transpose, sign or derivative
errs by O(|terms|), far outside these bounds.
"""
import numpy as np
import pytest

import fastgd
from fastgd import nn
from fastgd.reference import dense as R
from fastgd.gradcheck import numerical_gradient

REF = "numpy"
ACTS = nn.ACTIVATIONS
SLOPE = 0.1
ULPS = 8  # transcendental functions from different libraries agree within a few ulp


def eps(dtype):
    return float(np.finfo(dtype).eps)


def assert_within(actual, expected, bound, what=""):
    """|actual - expected| <= bound elementwise, NaN exactly where the reference has NaN."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, what
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(actual), nan, err_msg="NaN pattern differs: %s" % what)
    diff = np.abs(actual - expected)[~nan]
    b = np.broadcast_to(np.asarray(bound, np.float64), expected.shape)[~nan]
    worst = np.max(diff - b) if diff.size else 0.0
    assert worst <= 0, "%s: max excess over the bound %g (max diff %g)" % (what, worst, diff.max())


def data(dtype, n=13, k=11, m=9, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, k)) * scale).astype(dtype)
    w = (rng.standard_normal((k, m)) / np.sqrt(k)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    g = rng.standard_normal((n, m)).astype(dtype)
    return x, w, b, g


def forward_bound(x, w, b, ref):
    e = eps(x.dtype)
    k = x.shape[1]
    a = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)) + np.abs(b.astype(np.float64))
    return (k + 2) * e * a + ULPS * e * np.abs(ref)


@pytest.fixture
def threads_and_cutoff():
    saved = (fastgd.get_num_threads(), fastgd.serial_cutoff())
    yield
    fastgd.set_num_threads(saved[0])
    fastgd.set_serial_cutoff(saved[1])


# ---------------------------------------------------------------------------------------
# backends against the reference

@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("shape", [(13, 11, 9), (1, 5, 1), (64, 33, 70)], ids=lambda s: "x".join(map(str, s)))
def test_dense_forward_matches_reference(compiled_backend, dtype, activation, shape):
    x, w, b, _ = data(dtype, *shape, scale=2.0)
    ref = nn.dense_forward(x, w, b, activation=activation, negative_slope=SLOPE, backend=REF)
    out = np.full_like(ref, np.nan)
    got = nn.dense_forward(x, w, b, activation=activation, negative_slope=SLOPE, out=out, backend=compiled_backend)
    assert got is out and got.dtype == dtype
    assert_within(got, ref, forward_bound(x, w, b, ref), activation)


def backward_bounds(g, x, w, gz):
    """Bounds for grad_x, grad_weight, grad_bias given the reference grad_z."""
    e = eps(x.dtype)
    n, k = x.shape
    m = w.shape[1]
    az, ax, aw = (np.abs(a.astype(np.float64)) for a in (gz, x, w))
    return ((m + 2) * e * (az @ aw.T),
            (n + 2) * e * (ax.T @ az),
            (n + 2) * e * az.sum(axis=0))


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("shape", [(13, 11, 9), (1, 5, 1), (64, 33, 70)], ids=lambda s: "x".join(map(str, s)))
def test_dense_backward_matches_reference(compiled_backend, dtype, activation, shape):
    x, w, b, g = data(dtype, *shape, scale=2.0)
    out = nn.dense_forward(x, w, b, activation=activation, negative_slope=SLOPE, backend=REF)
    kw = dict(activation=activation, negative_slope=SLOPE)
    rgx, rgw, rgb = nn.dense_backward(g, x, w, out, backend=REF, **kw)
    # the reference's grad_z, for the bounds
    gz = np.empty_like(g)
    R._derivative(g, out, gz, activation, SLOPE)
    bx, bw, bb = backward_bounds(g, x, w, gz)
    g_before = g.copy()
    gx, gw, gb = nn.dense_backward(g, x, w, out, backend=compiled_backend, **kw)
    np.testing.assert_array_equal(g, g_before)  # not overwritten without overwrite_grad_output
    assert_within(gx, rgx, bx, "grad_x")
    assert_within(gw, rgw, bw, "grad_weight")
    assert_within(gb, rgb, bb, "grad_bias")
    # preallocated outputs and grad_output overwritten with grad_z: same values, nothing allocated
    pgx, pgw, pgb = np.full_like(gx, np.nan), np.full_like(gw, np.nan), np.full_like(gb, np.nan)
    g2 = g.copy()
    res = nn.dense_backward(g2, x, w, out, grad_x=pgx, grad_weight=pgw, grad_bias=pgb, overwrite_grad_output=True,
                            backend=compiled_backend, **kw)
    assert res[0] is pgx and res[1] is pgw and res[2] is pgb
    np.testing.assert_array_equal(g2, gz)  # grad_z: the same elementwise arithmetic as the reference
    assert_within(pgx, rgx, bx, "grad_x (preallocated)")
    assert_within(pgw, rgw, bw, "grad_weight (preallocated)")
    assert_within(pgb, rgb, bb, "grad_bias (preallocated)")
    # the first layer: no grad_x
    none_x = nn.dense_backward(g, x, w, out, compute_grad_x=False, backend=compiled_backend, **kw)
    assert none_x[0] is None
    assert_within(none_x[1], rgw, bw, "grad_weight (compute_grad_x=False)")


def loss_cases(dtype, n=17, c=7, seed=1, scale=3.0):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((n, c)) * scale).astype(dtype)
    labels = rng.integers(0, c, n)
    onehot = np.eye(c, dtype=dtype)[labels]
    soft = rng.random((n, c)).astype(dtype)
    soft /= soft.sum(axis=1, keepdims=True)
    target = rng.standard_normal((n, c)).astype(dtype)
    probs = rng.random((n, c)).astype(dtype)
    return z, labels, onehot, soft, target, probs


def softmax_bounds(z, y):
    """|loss diff| and |grad diff| bounds for softmax cross-entropy (float64 math for the bound)."""
    e = eps(z.dtype)
    n, c = z.shape
    z64 = z.astype(np.float64)
    sh = z64 - z64.max(axis=1, keepdims=True)
    p = np.exp(sh) / np.exp(sh).sum(axis=1, keepdims=True)
    lse = np.log(np.exp(sh).sum(axis=1))
    y64 = np.eye(c)[y] if y.ndim == 1 else y.astype(np.float64)
    terms = np.sum(np.abs(y64) * (np.abs(lse)[:, None] + np.abs(sh) + 1), axis=1)
    loss_b = (c + ULPS + 2) * e * terms.mean() + (n + 2) * 2.2e-16 * terms.mean()
    grad_b = (c + ULPS + 2) * e * (p + np.abs(y64)) / n
    return loss_b, grad_b


@pytest.mark.parametrize("kind", ["int", "onehot", "soft"])
@pytest.mark.parametrize("scale", [3.0, 1e3], ids=["moderate", "large-logits"])
def test_softmax_cross_entropy_matches_reference(compiled_backend, dtype, kind, scale):
    z, labels, onehot, soft, _, _ = loss_cases(dtype, scale=scale)
    y = {"int": labels, "onehot": onehot, "soft": soft}[kind]
    rl, rg = nn.softmax_cross_entropy(z, y, backend=REF)
    out = np.full_like(z, np.nan)
    l, g = nn.softmax_cross_entropy(z, y, out=out, backend=compiled_backend)
    assert g is out and isinstance(l, float) and np.isfinite(l)
    lb, gb = softmax_bounds(z, labels if kind == "int" else y)
    assert abs(l - rl) <= lb, (l, rl, lb)
    assert_within(g, rg, gb, "grad")


def test_mse_loss_matches_reference(compiled_backend, dtype):
    z, _, _, _, t, _ = loss_cases(dtype)
    rl, rg = nn.mse_loss(z, t, backend=REF)
    l, g = nn.mse_loss(z, t, backend=compiled_backend)
    d2 = (z.astype(np.float64) - t) ** 2
    assert abs(l - rl) <= (z.size + 2) * eps(dtype) * d2.mean()
    np.testing.assert_array_equal(g, rg)  # (p - t) * (2/N): one rounding per operation everywhere


def test_bce_matches_reference(compiled_backend, dtype):
    z, _, _, _, _, y = loss_cases(dtype, scale=5.0)
    rl, rg = nn.binary_cross_entropy_with_logits(z, y, backend=REF)
    l, g = nn.binary_cross_entropy_with_logits(z, y, backend=compiled_backend)
    z64, y64 = z.astype(np.float64), y.astype(np.float64)
    terms = np.maximum(z64, 0) + np.abs(z64 * y64) + np.log1p(np.exp(-np.abs(z64)))
    assert abs(l - rl) <= (ULPS + 2) * eps(dtype) * terms.mean() + z.size * 2.2e-16 * terms.mean()
    assert_within(g, rg, (ULPS + 2) * eps(dtype) * (1 + np.abs(y64)) / z.size, "grad")


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_parallel_paths_match_reference(compiled_backend, dtype, activation, threads_and_cutoff):
    """With the serial cutoff at 0 the loss kernels take their threaded path (the dense layer's
    elementwise passes always run on one thread, beside BLAS's threads)."""
    fastgd.set_num_threads(2)
    fastgd.set_serial_cutoff(0)
    x, w, b, g = data(dtype, 40, 24, 35, seed=3)
    ref = nn.dense_forward(x, w, b, activation=activation, backend=REF)
    got = nn.dense_forward(x, w, b, activation=activation, backend=compiled_backend)
    assert_within(got, ref, forward_bound(x, w, b, ref), "forward")
    gz = np.empty_like(g)
    R._derivative(g, ref, gz, activation, 0.01)
    bounds = backward_bounds(g, x, w, gz)
    for a, r, bd, name in zip(nn.dense_backward(g, x, w, ref, activation=activation, backend=compiled_backend),
                              nn.dense_backward(g, x, w, ref, activation=activation, backend=REF), bounds,
                              ("grad_x", "grad_weight", "grad_bias")):
        assert_within(a, r, bd, name)
    z, labels, onehot, _, t, probs = loss_cases(dtype, n=40, c=12)
    for y in (labels, onehot):
        (l, gr), (rl, rg) = (nn.softmax_cross_entropy(z, y, backend=be) for be in (compiled_backend, REF))
        lb, gb = softmax_bounds(z, labels)
        assert abs(l - rl) <= lb
        assert_within(gr, rg, gb, "softmax grad")
    (l, gr), (rl, rg) = (nn.mse_loss(z, t, backend=be) for be in (compiled_backend, REF))
    assert abs(l - rl) <= z.size * eps(dtype) * rl
    np.testing.assert_array_equal(gr, rg)
    (l, gr), (rl, rg) = (nn.binary_cross_entropy_with_logits(z, probs, backend=be) for be in (compiled_backend, REF))
    assert abs(l - rl) <= (z.size + ULPS) * eps(dtype) * (rl + 1)
    assert_within(gr, rg, (ULPS + 2) * eps(dtype) / z.size, "bce grad")


def test_nan_propagates_like_reference(compiled_backend, dtype):
    x, w, b, g = data(dtype, 6, 5, 4)
    x[1, 2] = np.nan
    g[3, 1] = np.nan
    for act in ACTS:
        ref = nn.dense_forward(x, w, b, activation=act, backend=REF)
        got = nn.dense_forward(x, w, b, activation=act, backend=compiled_backend)
        assert np.isnan(ref[1]).all() and not np.isnan(np.delete(ref, 1, 0)).any()
        assert_within(got, ref, forward_bound(np.nan_to_num(x), w, b, np.nan_to_num(ref)), act)
        clean = np.nan_to_num(ref)
        for a, r in zip(nn.dense_backward(g, np.nan_to_num(x), w, clean, activation=act, backend=compiled_backend),
                        nn.dense_backward(g, np.nan_to_num(x), w, clean, activation=act, backend=REF)):
            np.testing.assert_array_equal(np.isnan(a), np.isnan(r), err_msg=act)
    z, labels, onehot, _, t, probs = loss_cases(dtype, n=5, c=4)
    z[2, 1] = np.nan
    for fn, y in ((nn.softmax_cross_entropy, labels), (nn.softmax_cross_entropy, onehot), (nn.mse_loss, t),
                  (nn.binary_cross_entropy_with_logits, probs)):
        (l, gr), (rl, rg) = (fn(z, y, backend=be) for be in (compiled_backend, REF))
        assert np.isnan(l) and np.isnan(rl)
        np.testing.assert_array_equal(np.isnan(gr), np.isnan(rg), err_msg=fn.__name__)


def test_empty_batches_and_layers(backend, dtype):
    """Empty sums are zeros on every backend; nothing crashes on zero-size dimensions."""
    for n, k, m in ((0, 3, 4), (3, 0, 4), (3, 4, 0)):
        x, w, b, g = data(dtype, n, k, m)
        out = nn.dense_forward(x, w, b, backend=backend)
        assert out.shape == (n, m)
        if k == 0:
            np.testing.assert_array_equal(out, np.maximum(np.broadcast_to(b, (n, m)), 0))
        gx, gw, gb = nn.dense_backward(g, x, w, out, backend=backend,
                                       grad_weight=np.full((k, m), 7, dtype), grad_bias=np.full(m, 7, dtype))
        assert gx.shape == (n, k) and gw.shape == (k, m) and gb.shape == (m,)
        np.testing.assert_array_equal(gw, 0)
        np.testing.assert_array_equal(gb, np.where(out > 0, g, 0).sum(axis=0))
    assert np.isnan(nn.softmax_cross_entropy(np.zeros((0, 3), dtype), np.zeros(0, int), backend=backend)[0])


def test_default_backend_is_used(dtype):
    x, w, b, _ = data(dtype)
    with fastgd.use_backend("numpy"):
        a = nn.dense_forward(x, w, b)
    np.testing.assert_array_equal(a, R.dense_forward(x, w, b, np.empty_like(a), activation="relu",
                                                     negative_slope=0.01))


# ---------------------------------------------------------------------------------------
# the reference against independent math

def test_reference_against_textbook_formulas():
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 5)), rng.standard_normal(5)
    z = x @ w + b
    expect = {"identity": z, "relu": np.where(z > 0, z, 0), "leaky_relu": np.where(z > 0, z, 0.2 * z),
              "sigmoid": 1 / (1 + np.exp(-z)), "tanh": np.tanh(z)}
    for act, e in expect.items():
        np.testing.assert_allclose(nn.dense_forward(x, w, b, activation=act, negative_slope=0.2, backend=REF), e,
                                   rtol=1e-14, atol=1e-15)
    # sigmoid at extreme inputs: no overflow, exact limits
    with np.errstate(over="raise", invalid="raise"):
        s = nn.dense_forward(np.array([[1.0]]), np.array([[1.0, -1.0]]), np.zeros(2), activation="sigmoid",
                             backend=REF)
        big = nn.dense_forward(np.array([[800.0]]), np.array([[1.0, -1.0]]), np.zeros(2), activation="sigmoid",
                               backend=REF)
    np.testing.assert_allclose(s, [[1 / (1 + np.exp(-1)), 1 / (1 + np.exp(1))]], rtol=1e-15)
    np.testing.assert_array_equal(big, [[1.0, 0.0]])


def test_softmax_cross_entropy_is_stable_and_correct(backend):
    z = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
    loss, g = nn.softmax_cross_entropy(z, np.array([1, 2]), backend=backend)
    # row 0: -log softmax = 1000 - 0 = 1000 (up to e^-1000); row 1: log 3
    assert loss == pytest.approx((1000.0 + np.log(3)) / 2, rel=1e-15)
    np.testing.assert_allclose(g, [[0.5, -0.5, 0.0], [1 / 6, 1 / 6, 1 / 6 - 0.5]], rtol=1e-15, atol=1e-300)
    l32, _ = nn.softmax_cross_entropy(z.astype(np.float32), np.array([1, 2]), backend=backend)
    assert np.isfinite(l32) and l32 == pytest.approx((1000.0 + np.log(3)) / 2, rel=1e-6)


def test_bce_and_mse_against_formulas(backend):
    z = np.array([[-30.0, -1.0, 0.0, 2.0, 40.0]])
    y = np.array([[0.0, 1.0, 0.5, 1.0, 0.0]])
    sig = 1 / (1 + np.exp(-z))
    with np.errstate(divide="ignore"):
        naive = -(y * np.log(sig) + (1 - y) * np.log1p(-sig))
    naive[0, 4] = 40.0 + np.log1p(np.exp(-40.0))  # naive form loses it: log(1 - 1)
    loss, g = nn.binary_cross_entropy_with_logits(z, y, backend=backend)
    assert loss == pytest.approx(naive.mean(), rel=1e-12)
    np.testing.assert_allclose(g, (sig - y) / z.size, rtol=1e-12, atol=1e-18)
    t = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    loss, g = nn.mse_loss(z, t, backend=backend)
    assert loss == pytest.approx(np.mean((z - t) ** 2), rel=1e-15)
    np.testing.assert_allclose(g, 2 * (z - t) / z.size, rtol=1e-15)


# ---------------------------------------------------------------------------------------
# gradient checks: analytic gradients against central differences, float64

def central_difference(f, arr, h=1e-6):
    """Central differences of the no-argument function ``f`` over every element of ``arr``
    (fastgd.numerical_gradient: perturbs each element in place and restores it)."""
    return numerical_gradient(lambda _: f(), arr, eps=h)


def assert_grad_close(analytic, numeric, what):
    # truncation O(h^2 f''') ~ 1e-12 and cancellation ~ eps |f| / h ~ 1e-9 for |f| ~ 10
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7, err_msg=what)


@pytest.mark.parametrize("activation", ACTS)
def test_dense_gradients_against_central_differences(backend, activation):
    x, w, b, r = data(np.float64, 6, 5, 4, seed=11)

    def loss():
        return float(np.sum(r * nn.dense_forward(x, w, b, activation=activation, negative_slope=SLOPE,
                                                 backend=backend)))

    out = nn.dense_forward(x, w, b, activation=activation, negative_slope=SLOPE, backend=backend)
    z = x @ w + b
    assert np.abs(z).min() > 1e-3  # no kink within reach of the differences (tested separately)
    gx, gw, gb = nn.dense_backward(r, x, w, out, activation=activation, negative_slope=SLOPE, backend=backend)
    assert_grad_close(gx, central_difference(loss, x), "x")
    assert_grad_close(gw, central_difference(loss, w), "weight")
    assert_grad_close(gb, central_difference(loss, b), "bias")


@pytest.mark.parametrize("activation,slope_at_kink", [("relu", 0.0), ("leaky_relu", SLOPE)])
def test_relu_kink_convention(backend, dtype, activation, slope_at_kink):
    """At z = 0 exactly the derivative is the left one: 0 for relu, negative_slope for leaky_relu;
    for z < 0 likewise, for z > 0 it is 1."""
    x, w, b, r = data(dtype, 6, 5, 4, seed=2)
    w[:, 1] = 0
    b[1] = 0          # column 1: z == 0 exactly
    b[2] = -100       # column 2: z < 0
    b[3] = 100        # column 3: z > 0
    out = nn.dense_forward(x, w, b, activation=activation, negative_slope=SLOPE, backend=backend)
    np.testing.assert_array_equal(out[:, 1], 0)
    gx, gw, gb = nn.dense_backward(r, x, w, out, activation=activation, negative_slope=SLOPE, backend=backend)
    s = dtype(slope_at_kink)
    for j, d in ((1, s), (2, s), (3, dtype(1))):
        gz = r[:, j] * d
        np.testing.assert_allclose(gb[j], gz.sum(), rtol=8 * eps(dtype), atol=8 * eps(dtype) * np.abs(gz).sum())
    if activation == "relu":
        np.testing.assert_array_equal(gw[:, 1], 0)
        np.testing.assert_array_equal(gw[:, 2], 0)
    # in float64, the analytic bias derivative at the kink equals the backward difference
    if dtype == np.float64:
        h = 1e-7

        def loss(bias):
            return float(np.sum(r * nn.dense_forward(x, w, bias, activation=activation, negative_slope=SLOPE,
                                                     backend=backend)))
        bm = b.copy()
        bm[1] -= h
        assert gb[1] == pytest.approx((loss(b) - loss(bm)) / h, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("kind", ["int", "onehot", "soft"])
def test_softmax_cross_entropy_gradient(backend, kind):
    z, labels, onehot, soft, _, _ = loss_cases(np.float64, n=5, c=4)
    y = {"int": labels, "onehot": onehot, "soft": soft}[kind]
    _, g = nn.softmax_cross_entropy(z, y, backend=backend)
    assert_grad_close(g, central_difference(lambda: nn.softmax_cross_entropy(z, y, backend=backend)[0], z), kind)


def test_mse_and_bce_gradients(backend):
    z, _, _, _, t, probs = loss_cases(np.float64, n=5, c=4)
    _, g = nn.mse_loss(z, t, backend=backend)
    assert_grad_close(g, central_difference(lambda: nn.mse_loss(z, t, backend=backend)[0], z), "mse")
    _, g = nn.binary_cross_entropy_with_logits(z, probs, backend=backend)
    assert_grad_close(g, central_difference(
        lambda: nn.binary_cross_entropy_with_logits(z, probs, backend=backend)[0], z), "bce")


# ---------------------------------------------------------------------------------------
# argument checks: TypeError/ValueError naming the argument, nothing written

def _raises(exc, match, fn, *watched):
    before = [a.copy() for a in watched]
    with pytest.raises(exc, match=match):
        fn()
    for a, bef in zip(watched, before):
        np.testing.assert_array_equal(a, bef)


def test_forward_argument_checks(backend):
    x, w, b, _ = data(np.float32, 4, 3, 2)
    out = np.full((4, 2), 7, np.float32)
    f = nn.dense_forward
    _raises(TypeError, "x must be a numpy.ndarray", lambda: f(x.tolist(), w, b, out=out, backend=backend), out)
    _raises(TypeError, "weight has dtype float64 but x has dtype float32",
            lambda: f(x, w.astype(np.float64), b, out=out, backend=backend), out)
    _raises(TypeError, "x must have dtype float32 or float64", lambda: f(x.astype(int), w, b, backend=backend))
    _raises(ValueError, r"x has shape \(4, 3\) but weight has shape \(2, 2\)",
            lambda: f(x, w[:2], b, out=out, backend=backend), out)
    _raises(ValueError, r"bias has shape \(3,\)", lambda: f(x, w, np.zeros(3, np.float32), out=out, backend=backend),
            out)
    _raises(ValueError, "x must be 2-dimensional", lambda: f(x[0], w, b, backend=backend))
    _raises(ValueError, "weight must be C-contiguous",
            lambda: f(x, np.asfortranarray(np.ones((3, 2), np.float32)), b, out=out, backend=backend), out)
    _raises(ValueError, r"out has shape \(2, 4\), expected \(4, 2\)",
            lambda: f(x, w, b, out=np.zeros((2, 4), np.float32), backend=backend))
    _raises(TypeError, "out has dtype float64", lambda: f(x, w, b, out=out.astype(np.float64), backend=backend))
    ro = out.copy()
    ro.flags.writeable = False
    _raises(ValueError, "out must be writeable", lambda: f(x, w, b, out=ro, backend=backend))
    x2 = np.zeros((4, 3), np.float32)
    _raises(ValueError, "out and x overlap", lambda: f(x2, np.ones((3, 3), np.float32), np.ones(3, np.float32),
                                                     out=x2[:, :3].reshape(4, 3), backend=backend), x2)
    _raises(ValueError, "activation must be one of", lambda: f(x, w, b, activation="softmax", out=out,
                                                                backend=backend), out)
    _raises(TypeError, "activation must be a str", lambda: f(x, w, b, activation=None, backend=backend))
    _raises(ValueError, "negative_slope must be >= 0", lambda: f(x, w, b, activation="leaky_relu",
                                                                  negative_slope=-0.1, out=out, backend=backend), out)
    _raises(ValueError, "backend must be one of", lambda: f(x, w, b, out=out, backend="fortran"), out)


def test_backward_argument_checks(backend):
    x, w, b, g = data(np.float64, 4, 3, 2)
    out = nn.dense_forward(x, w, b, backend=backend)
    gw = np.full((3, 2), 7.0)
    gb = np.full(2, 7.0)
    f = nn.dense_backward
    _raises(ValueError, r"grad_output has shape \(4, 3\)",
            lambda: f(np.ones((4, 3)), x, w, out, grad_weight=gw, backend=backend), gw)
    _raises(ValueError, r"output has shape \(3, 2\)", lambda: f(g, x, w, out[:3], grad_weight=gw, backend=backend), gw)
    _raises(ValueError, r"grad_x has shape \(3, 4\), expected \(4, 3\)",
            lambda: f(g, x, w, out, grad_x=np.zeros((3, 4)), grad_weight=gw, grad_bias=gb, backend=backend), gw, gb)
    _raises(ValueError, r"grad_bias has shape \(3,\)",
            lambda: f(g, x, w, out, grad_weight=gw, grad_bias=np.zeros(3), backend=backend), gw, g)
    _raises(ValueError, "grad_weight and weight overlap",
            lambda: f(g, x, w, out, grad_weight=w, grad_bias=gb, backend=backend), gb, w)
    _raises(ValueError, "grad_output and grad_bias overlap",
            lambda: f(g, x, w, out, grad_bias=g[0], grad_weight=gw, overwrite_grad_output=True, backend=backend), gw, g)
    _raises(ValueError, "grad_x was given but compute_grad_x=False",
            lambda: f(g, x, w, out, grad_x=np.zeros((4, 3)), compute_grad_x=False, grad_weight=gw, backend=backend), gw)
    ro = g.copy()
    ro.flags.writeable = False
    _raises(ValueError, "grad_output must be writeable",
            lambda: f(ro, x, w, out, grad_weight=gw, overwrite_grad_output=True, backend=backend), gw)
    _raises(TypeError, "overwrite_grad_output must be a bool",
            lambda: f(g, x, w, out, grad_weight=gw, overwrite_grad_output=1, backend=backend), gw)
    _raises(TypeError, "output has dtype float32", lambda: f(g, x, w, out.astype(np.float32), grad_weight=gw,
                                                             backend=backend), gw)
    _raises(TypeError, "grad_output must be a numpy.ndarray", lambda: f(g.tolist(), x, w, out, grad_weight=gw,
                                                                        backend=backend), gw)
    _raises(TypeError, "x must be a numpy.ndarray", lambda: f(g, x.tolist(), w, out, grad_weight=gw, backend=backend),
            gw)
    _raises(ValueError, "grad_weight must be C-contiguous",
            lambda: f(g, x, w, out, grad_weight=np.asfortranarray(gw), backend=backend), gw)


def test_loss_argument_checks(backend):
    z, labels, onehot, _, t, _ = loss_cases(np.float32, n=4, c=3)
    out = np.full_like(z, 7)
    sce = nn.softmax_cross_entropy
    _raises(ValueError, r"labels must be class indices in \[0, 3\)",
            lambda: sce(z, np.array([0, 1, 3, 0]), out=out, backend=backend), out)
    _raises(ValueError, r"labels must be class indices", lambda: sce(z, np.array([0, -1, 2, 0]), out=out,
                                                                     backend=backend), out)
    _raises(ValueError, r"labels has shape \(3,\) but logits has shape \(4, 3\)",
            lambda: sce(z, labels[:3], out=out, backend=backend), out)
    _raises(TypeError, "labels has dtype float64 but logits has dtype float32",
            lambda: sce(z, onehot.astype(np.float64), out=out, backend=backend), out)
    _raises(ValueError, r"labels has shape \(4, 2\)", lambda: sce(z, onehot[:, :2].copy(), out=out, backend=backend),
            out)
    _raises(TypeError, "labels must be integer class indices or float", lambda: sce(z, labels.astype(bool),
                                                                                   backend=backend))
    _raises(ValueError, "out and logits overlap", lambda: sce(z, labels, out=z, backend=backend), z)
    _raises(ValueError, r"target has shape \(4, 2\) but pred has shape \(4, 3\)",
            lambda: nn.mse_loss(z, t[:, :2].copy(), out=out, backend=backend), out)
    _raises(TypeError, "targets has dtype float64 but logits has dtype float32",
            lambda: nn.binary_cross_entropy_with_logits(z, t.astype(np.float64), out=out, backend=backend), out)


def test_dense_skeleton_computes_the_three_products(backend, dtype):
    """The benchmark floor (bench/test_bench_dense.py) does the same three products as the
    forward+backward pass, so comparing the two is fair."""
    x, w, _, g = data(dtype, 9, 7, 5)
    mod = nn._kernels(backend)
    out, gw, gx = np.empty((9, 5), dtype), np.empty((7, 5), dtype), np.empty((9, 7), dtype)
    mod.dense_skeleton(x, w, g, out, gw, gx)
    e = eps(dtype)
    ax, aw, ag = (np.abs(a.astype(np.float64)) for a in (x, w, g))
    assert_within(out, x.astype(np.float64) @ w, 9 * e * (ax @ aw), "x @ weight")
    assert_within(gw, x.T.astype(np.float64) @ g, 11 * e * (ax.T @ ag), "x.T @ grad_z")
    assert_within(gx, g.astype(np.float64) @ w.T, 7 * e * (ag @ aw.T), "grad_z @ weight.T")


# ---------------------------------------------------------------------------------------
# bad arrays that a kernel must never see (None, subclasses, unaligned or byte-swapped data,
# out-of-range labels): each backend in a subprocess, so a crash fails the test instead of
# killing pytest.  Every case must raise the named error and leave every output untouched.

from _subprocess_cases import HELPERS, run_script  # noqa: E402


FUNCTIONAL_BAD_INPUTS = HELPERS + r'''
T, V = TypeError, ValueError
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 3)).astype(np.float32)
w = rng.standard_normal((3, 2)).astype(np.float32)
b = rng.standard_normal(2).astype(np.float32)
out = np.full((4, 2), 7, np.float32)
f = lambda *a, **k: nn.dense_forward(*a, backend=BACKEND, **k)
ref = f(x, w, b)
for lab, xx, ww, bb in (("x", None, w, b), ("weight", x, None, b), ("bias", x, w, None)):
    case("forward %s None" % lab, T, "%s is required, got None" % lab, lambda: f(xx, ww, bb, out=out), out)
    case("forward %s None, no out" % lab, T, "%s is required, got None" % lab, lambda: f(xx, ww, bb))
case("forward x matrix", T, "x must be a numpy.ndarray, not the subclass", lambda: f(np.asmatrix(x), w, b, out=out),
     out)
case("forward weight masked", T, "weight must be a numpy.ndarray, not the subclass",
     lambda: f(x, masked(w), b, out=out), out)
case("forward bias masked", T, "bias must be a numpy.ndarray, not the subclass", lambda: f(x, w, masked(b), out=out),
     out)
case("forward out matrix", T, "out must be a numpy.ndarray, not the subclass", lambda: f(x, w, b, out=np.asmatrix(out)),
     out)
case("forward out masked", T, "out must be a numpy.ndarray, not the subclass", lambda: f(x, w, b, out=masked(out)),
     out)
case("forward x list", T, "x must be a numpy.ndarray, got list", lambda: f(x.tolist(), w, b, out=out), out)
for lab, args in (("x", (unaligned(x), w, b)), ("weight", (x, unaligned(w), b)), ("bias", (x, w, unaligned(b)))):
    case("forward %s unaligned" % lab, V, "%s is not aligned" % lab, lambda: f(*args, out=out), out)
    case("forward %s unaligned, no out" % lab, V, "%s is not aligned" % lab, lambda: f(*args))
uo = unaligned(out)
case("forward out unaligned", V, "out is not aligned", lambda: f(x, w, b, out=uo), uo)
for lab, args in (("x", (swapped(x), w, b)), ("weight", (x, swapped(w), b)), ("bias", (x, w, swapped(b)))):
    case("forward %s byte-swapped" % lab, T, "%s has dtype .f4; fastgd needs native byte order" % lab,
         lambda: f(*args, out=out), out)
so = swapped(out)
case("forward out byte-swapped", T, "out has dtype .f4; fastgd needs native byte order", lambda: f(x, w, b, out=so), so)
ro = out.copy()
ro.flags.writeable = False
case("forward out read-only", V, "out must be writeable", lambda: f(x, w, b, out=ro))
assert np.array_equal(f(x, w, b, out=out), ref)  # the good call still works

# backward
x, w, b = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
y = nn.dense_forward(x, w, b, backend=BACKEND)
g = rng.standard_normal((4, 2))
gx, gw, gb = np.full((4, 3), 7.0), np.full((3, 2), 7.0), np.full(2, 7.0)
bw = lambda *a, **k: nn.dense_backward(*a, backend=BACKEND, **k)
outs = dict(grad_x=gx, grad_weight=gw, grad_bias=gb)
for lab, args in (("grad_output", (None, x, w, y)), ("x", (g, None, w, y)), ("weight", (g, x, None, y)),
                  ("output", (g, x, w, None))):
    case("backward %s None" % lab, T, "%s is required, got None" % lab, lambda: bw(*args, **outs), gx, gw, gb)
    case("backward %s None, no outputs" % lab, T, "%s is required, got None" % lab, lambda: bw(*args))
for lab, args in (("grad_output", (np.asmatrix(g), x, w, y)), ("x", (g, masked(x), w, y)),
                  ("weight", (g, x, np.asmatrix(w), y)), ("output", (g, x, w, masked(y)))):
    case("backward %s subclass" % lab, T, "%s must be a numpy.ndarray, not the subclass" % lab,
         lambda: bw(*args, **outs), gx, gw, gb)
for lab in ("grad_x", "grad_weight", "grad_bias"):
    bad = dict(outs)
    bad[lab] = masked(outs[lab]) if lab == "grad_bias" else np.asmatrix(outs[lab])
    case("backward %s subclass" % lab, T, "%s must be a numpy.ndarray, not the subclass" % lab,
         lambda: bw(g, x, w, y, **bad), gx, gw, gb)
    bad[lab] = unaligned(outs[lab])
    case("backward %s unaligned" % lab, V, "%s is not aligned" % lab, lambda: bw(g, x, w, y, **bad), gx, gw, gb,
         bad[lab])
    bad[lab] = swapped(outs[lab])
    case("backward %s byte-swapped" % lab, T, "%s has dtype .f8; fastgd needs native byte order" % lab,
         lambda: bw(g, x, w, y, **bad), gx, gw, gb, bad[lab])
for lab, args in (("grad_output", (unaligned(g), x, w, y)), ("x", (g, unaligned(x), w, y)),
                  ("weight", (g, x, unaligned(w), y)), ("output", (g, x, w, unaligned(y)))):
    case("backward %s unaligned" % lab, V, "%s is not aligned" % lab, lambda: bw(*args, **outs), gx, gw, gb)
    case("backward %s unaligned, overwrite" % lab, V, "%s is not aligned" % lab,
         lambda: bw(*args, overwrite_grad_output=True, **outs), gx, gw, gb, args[0])
for lab, args in (("grad_output", (swapped(g), x, w, y)), ("x", (g, swapped(x), w, y)),
                  ("weight", (g, x, swapped(w), y)), ("output", (g, x, w, swapped(y)))):
    case("backward %s byte-swapped" % lab, T, "%s has dtype .f8; fastgd needs native byte order" % lab,
         lambda: bw(*args, **outs), gx, gw, gb)

# softmax cross-entropy: labels are indices a compiled kernel reads memory with
z = rng.standard_normal((4, 3)).astype(np.float32)
labels = np.array([0, 2, 1, 2])
gout = np.full((4, 3), 7, np.float32)
sce = lambda *a, **k: nn.softmax_cross_entropy(*a, backend=BACKEND, **k)
loss_ref, g_ref = sce(z, labels)
case("sce labels None", T, "labels is required, got None", lambda: sce(z, None, out=gout), gout)
case("sce logits None", T, "logits is required, got None", lambda: sce(None, labels, out=gout), gout)
case("sce labels masked", T, "labels must be a numpy.ndarray, not the subclass",
     lambda: sce(z, masked(labels), out=gout), gout)
case("sce labels list", T, "labels must be a numpy.ndarray, got list", lambda: sce(z, [0, 1, 2, 0], out=gout), gout)
for bad in (np.array([0, 1, 10 ** 9, 0]), np.array([0, 1, 3, 0]), np.array([0, -1, 2, 0]),
            np.array([0, 1, 2, -2 ** 62]), np.array([0, 1, 2, 2 ** 63], np.uint64), np.array([0, 255, 1, 1], np.uint8),
            np.array([0, -1, 1, 1], np.int8), np.array([0, 1, 2, 2 ** 31], np.int64),
            np.array([0, 1, 2, -2 ** 63], np.int64)):
    case("sce labels %s %s" % (bad.dtype, bad.tolist()), V, r"labels must be class indices in \[0, 3\)",
         lambda: sce(z, bad, out=gout), gout)
case("sce labels too long", V, r"labels has shape \(5,\) but logits has shape \(4, 3\)",
     lambda: sce(z, np.array([0, 1, 2, 0, 1]), out=gout), gout)
case("sce labels too short", V, r"labels has shape \(3,\)", lambda: sce(z, labels[:3], out=gout), gout)
case("sce labels 2-D int", V, r"labels has shape \(4, 1\)", lambda: sce(z, labels.reshape(4, 1), out=gout), gout)
case("sce labels bool", T, "labels must be integer class indices or float", lambda: sce(z, labels > 0, out=gout), gout)
onehot = np.eye(3, dtype=np.float32)[labels]
for lab, args in (("logits", (np.asmatrix(z), labels)), ("logits", (masked(z), labels)),
                  ("labels", (z, np.asmatrix(onehot)))):
    case("sce %s subclass" % lab, T, "%s must be a numpy.ndarray, not the subclass" % lab, lambda: sce(*args, out=gout),
         gout)
for lab, args in (("logits", (unaligned(z), labels)), ("labels", (z, unaligned(onehot)))):
    case("sce %s unaligned" % lab, V, "%s is not aligned" % lab, lambda: sce(*args, out=gout), gout)
for lab, args in (("logits", (swapped(z), labels)), ("labels", (z, swapped(onehot)))):
    case("sce %s byte-swapped" % lab, T, "%s has dtype .f4; fastgd needs native byte order" % lab,
         lambda: sce(*args, out=gout), gout)
ug = unaligned(gout)
case("sce out unaligned", V, "out is not aligned", lambda: sce(z, labels, out=ug), ug)
case("sce out matrix", T, "out must be a numpy.ndarray, not the subclass",
     lambda: sce(z, labels, out=np.asmatrix(gout)), gout)
# labels of any integer dtype, byte order or layout are read through a checked copy
for good in (labels.astype(np.uint8), labels.astype(">i8"), np.repeat(labels, 2)[::2], unaligned(labels)):
    loss, gg = sce(z, good)
    assert loss == loss_ref and np.array_equal(gg, g_ref), good.dtype

# mse / bce
p = rng.standard_normal((4, 3)).astype(np.float32)
t = rng.random((4, 3)).astype(np.float32)
for name, fn, an, bn in (("mse", nn.mse_loss, "pred", "target"), ("bce", nn.binary_cross_entropy_with_logits,
                                                                   "logits", "targets")):
    l = lambda *a, **k: fn(*a, backend=BACKEND, **k)
    for lab, args in ((an, (None, t)), (bn, (p, None))):
        case("%s %s None" % (name, lab), T, "%s is required, got None" % lab, lambda: l(*args, out=gout), gout)
    for lab, args in ((an, (np.asmatrix(p), t)), (bn, (p, masked(t)))):
        case("%s %s subclass" % (name, lab), T, "%s must be a numpy.ndarray, not the subclass" % lab,
             lambda: l(*args, out=gout), gout)
    for lab, args in ((an, (unaligned(p), t)), (bn, (p, unaligned(t)))):
        case("%s %s unaligned" % (name, lab), V, "%s is not aligned" % lab, lambda: l(*args, out=gout), gout)
    for lab, args in ((an, (swapped(p), t)), (bn, (p, swapped(t)))):
        case("%s %s byte-swapped" % (name, lab), T, "%s has dtype .f4; fastgd needs native byte order" % lab,
             lambda: l(*args, out=gout), gout)
    case("%s out unaligned" % name, V, "out is not aligned", lambda: l(p, t, out=ug), ug)
    case("%s out masked" % name, T, "out must be a numpy.ndarray, not the subclass", lambda: l(p, t, out=masked(gout)),
         gout)
print("DONE", n_ok)
'''


def test_bad_arrays_never_reach_a_kernel(backend):
    out = run_script(FUNCTIONAL_BAD_INPUTS, backend)
    assert int(out.split("DONE")[1]) >= 100
