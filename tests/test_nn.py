"""fastgd.nn's layers and models: initialisation, the Sequential chain against central
differences and against a hand-written NumPy network, fit() (seeding, shuffling, optimizers by
name, class or object, history, progress), predict/evaluate, every backend giving the same
training run, and the digits example reaching its accuracy on every backend."""
import math

import numpy as np
import pytest

import fastgd
from fastgd import nn
from fastgd.gradcheck import numerical_gradient

REF = "numpy"


def central_difference(f, arr, h=1e-6):
    """Central differences of the no-argument function ``f`` over every element of ``arr``
    (fastgd.numerical_gradient: perturbs each element in place and restores it)."""
    return numerical_gradient(lambda _: f(), arr, eps=h)


def blobs(n=120, d=6, c=3, seed=0, dtype=np.float64):
    """Separable Gaussian clusters: c classes in d dimensions."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((c, d)) * 3
    y = rng.integers(0, c, n)
    x = centers[y] + rng.standard_normal((n, d))
    return x.astype(dtype), y


# ---------------------------------------------------------------------------------------
# Dense

def test_dense_init_he_and_glorot():
    fan_in, fan_out = 400, 300
    he = nn.Dense(fan_in, fan_out, "relu", dtype=np.float64, rng=0)
    assert he.weight.shape == (fan_in, fan_out) and he.bias.shape == (fan_out,)
    np.testing.assert_array_equal(he.bias, 0)
    # 120,000 draws: the sample std is within 1% of sqrt(2/fan_in) with overwhelming probability
    assert he.weight.std() == pytest.approx(math.sqrt(2 / fan_in), rel=0.01)
    assert abs(he.weight.mean()) < 0.01 * math.sqrt(2 / fan_in) * 3
    leaky = nn.Dense(fan_in, fan_out, "leaky_relu", negative_slope=0.5, dtype=np.float64, rng=0)
    assert leaky.weight.std() == pytest.approx(math.sqrt(2 / (1.25 * fan_in)), rel=0.01)
    for act in ("identity", "sigmoid", "tanh"):
        gl = nn.Dense(fan_in, fan_out, act, dtype=np.float64, rng=0)
        limit = math.sqrt(6 / (fan_in + fan_out))
        assert np.abs(gl.weight).max() <= limit
        assert gl.weight.std() == pytest.approx(limit / math.sqrt(3), rel=0.01)


def test_dense_seeding_and_dtypes():
    a = nn.Dense(5, 4, dtype=np.float64, rng=7)
    b = nn.Dense(5, 4, dtype=np.float64, rng=np.random.default_rng(7))
    c = nn.Dense(5, 4, dtype=np.float32, rng=7)
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(c.weight, a.weight.astype(np.float32))  # one seed, same network
    assert c.weight.dtype == np.float32 and c.grad_weight.dtype == np.float32
    assert not np.array_equal(a.weight, nn.Dense(5, 4, dtype=np.float64, rng=8).weight)
    assert a.parameters()[0] is a.weight and a.parameters()[1] is a.bias
    assert a.gradients()[0] is a.grad_weight and a.gradients()[1] is a.grad_bias


def test_dense_layer_equals_functional_kernels(backend, dtype):
    layer = nn.Dense(6, 5, "tanh", dtype=dtype, rng=1, backend=backend)
    layer.bias[...] = np.linspace(-1, 1, 5)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((7, 6)).astype(dtype)
    g = rng.standard_normal((7, 5)).astype(dtype)
    out = layer.forward(x).copy()
    ref_out = nn.dense_forward(x, layer.weight, layer.bias, activation="tanh", backend=backend)
    np.testing.assert_array_equal(out, ref_out)
    gx = layer.backward(g)
    rgx, rgw, rgb = nn.dense_backward(g, x, layer.weight, ref_out, activation="tanh", backend=backend)
    np.testing.assert_array_equal(gx, rgx)
    np.testing.assert_array_equal(layer.grad_weight, rgw)
    np.testing.assert_array_equal(layer.grad_bias, rgb)
    assert layer.backward(g, compute_grad_x=False) is None


def test_dense_argument_checks():
    with pytest.raises(ValueError, match="in_features must be >= 1"):
        nn.Dense(0, 3)
    with pytest.raises(TypeError, match="out_features must be an int"):
        nn.Dense(3, 2.0)
    with pytest.raises(ValueError, match="activation must be one of"):
        nn.Dense(3, 2, "softmax")
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        nn.Dense(3, 2, dtype=np.int32)
    layer = nn.Dense(3, 2, rng=0)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((1, 2), np.float32))
    with pytest.raises(TypeError, match="x has dtype float64 but the layer has dtype float32"):
        layer.forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="the layer takes 3 features"):
        layer.forward(np.zeros((2, 4), np.float32))
    layer.forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"grad_output has shape \(3, 2\) but the last forward output has shape"):
        layer.backward(np.zeros((3, 2), np.float32))


# ---------------------------------------------------------------------------------------
# Sequential / MLP

def test_mlp_structure():
    model = nn.MLP([4, 8, 6, 3], "tanh", rng=0)
    assert len(model) == 3 and [l.activation for l in model] == ["tanh", "tanh", "identity"]
    assert [(l.in_features, l.out_features) for l in model] == [(4, 8), (8, 6), (6, 3)]
    params, grads = model.parameters(), model.gradients()
    assert len(params) == len(grads) == 6
    for layer, (w, b), (gw, gb) in zip(model, zip(params[::2], params[1::2]), zip(grads[::2], grads[1::2])):
        assert w is layer.weight and b is layer.bias and gw is layer.grad_weight and gb is layer.grad_bias
    assert model.num_parameters() == 4 * 8 + 8 + 8 * 6 + 6 + 6 * 3 + 3
    with pytest.raises(ValueError, match="layer 1 takes 5 features but layer 0 gives 8"):
        nn.Sequential(nn.Dense(4, 8), nn.Dense(5, 3))
    with pytest.raises(TypeError, match="layer 1 has dtype float64"):
        nn.Sequential(nn.Dense(4, 8), nn.Dense(8, 3, dtype=np.float64))
    with pytest.raises(ValueError, match="loss must be one of"):
        nn.Sequential(nn.Dense(4, 8), loss="hinge")
    # same seed, same network
    again = nn.MLP([4, 8, 6, 3], "tanh", rng=0)
    for p, q in zip(model.parameters(), again.parameters()):
        np.testing.assert_array_equal(p, q)


def numpy_mlp_loss_and_grads(params, acts, x, y):
    """A hand-written NumPy network (textbook backpropagation), independent of fastgd.nn."""
    f = {"tanh": np.tanh, "sigmoid": lambda z: 1 / (1 + np.exp(-z)), "identity": lambda z: z}
    df = {"tanh": lambda a: 1 - a * a, "sigmoid": lambda a: a * (1 - a), "identity": lambda a: np.ones_like(a)}
    inputs, a = [], x
    for (w, b), act in zip(zip(params[::2], params[1::2]), acts):
        inputs.append(a)
        a = f[act](a @ w + b)
    n = x.shape[0]
    p = np.exp(a - a.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(p[np.arange(n), y]))
    d = p.copy()
    d[np.arange(n), y] -= 1
    d /= n
    grads = []
    outs = inputs[1:] + [a]
    for i in range(len(acts) - 1, -1, -1):
        w = params[2 * i]
        dz = d * df[acts[i]](outs[i])
        grads = [inputs[i].T @ dz, dz.sum(axis=0)] + grads
        d = dz @ w.T
    return loss, grads


@pytest.mark.parametrize("acts", [("tanh", "sigmoid", "identity"), ("sigmoid", "tanh", "identity")])
def test_mlp_backward_against_numpy_network_and_central_differences(backend, acts):
    model = nn.MLP([5, 7, 6, 3], rng=3, dtype=np.float64, backend=backend)
    for layer, act in zip(model, acts):
        layer.activation = act
        layer.bias[...] = np.random.default_rng(4).standard_normal(layer.out_features) * 0.1
    x, y = blobs(9, 5, 3, seed=5)
    out = model.forward(x)
    loss, g = nn.softmax_cross_entropy(out, y, backend=backend)
    model.backward(g)
    ref_loss, ref_grads = numpy_mlp_loss_and_grads(model.parameters(), acts, x, y)
    assert loss == pytest.approx(ref_loss, rel=1e-13)
    for got, want in zip(model.gradients(), ref_grads):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-14)

    def f():
        return nn.softmax_cross_entropy(model.forward(x), y, backend=backend)[0]
    grads = [gr.copy() for gr in model.gradients()]
    for p, gr in zip(model.parameters(), grads):
        np.testing.assert_allclose(gr, central_difference(f, p), rtol=1e-6, atol=1e-8)


def test_sequential_backward_does_not_modify_grad_output_and_gives_grad_x(backend):
    model = nn.MLP([4, 6, 2], "sigmoid", rng=0, dtype=np.float64, backend=backend)
    x = np.random.default_rng(1).standard_normal((5, 4))
    r = np.random.default_rng(2).standard_normal((5, 2))
    model.forward(x)
    r0 = r.copy()
    gx = model.backward(r, compute_grad_x=True)
    np.testing.assert_array_equal(r, r0)
    num = central_difference(lambda: float(np.sum(r * model.forward(x))), x)
    np.testing.assert_allclose(gx, num, rtol=1e-6, atol=1e-9)
    model.forward(x)
    assert model.backward(r) is None


# ---------------------------------------------------------------------------------------
# inputs that are (or share memory with) the buffers the layers reuse: the result is exactly
# that of the same computation on a fresh copy of the input

def same(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.array_equal(got, want), np.abs(got - want).max()  # ==, bit for bit


def dense_pair(act, dtype, backend, n=4):
    return [nn.Dense(n, n, act, dtype=dtype, rng=1, backend=backend) for _ in range(2)]


def layer_state(layer, g):
    """Backward of the layer's last forward: (grad_x, grad_weight, grad_bias), copied."""
    gx = layer.backward(g).copy()
    return [gx, layer.grad_weight.copy(), layer.grad_bias.copy()]


@pytest.mark.parametrize("act", ["identity", "tanh"])
def test_dense_input_that_is_its_own_buffer_is_copied(backend, dtype, act):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4)).astype(dtype)
    g = rng.standard_normal((5, 4)).astype(dtype)
    cases = {  # input -> the layer's own array it aliases
        "own output": lambda L: L(x),
        "rows of own output": lambda L: L(np.vstack([x, x]))[3:8],
        "own output through a memoryview": lambda L: np.asarray(memoryview(L(x))),
        "own grad_x buffer": lambda L: (L(x), L.backward(g))[1],
        "own grad_weight": lambda L: (L(x[:4]), L.backward(g[:4]), L.grad_weight)[2],
    }
    for name, make in cases.items():
        L, R = dense_pair(act, dtype, backend)
        a, b = make(L), make(R).copy()
        assert a.base is not None or a is L.grad_weight, name  # the layer's own memory, not a copy
        n = a.shape[0]
        same(L(a), R(b))
        for got, want in zip(layer_state(L, g[:n]), layer_state(R, g[:n])):
            same(got, want)


def test_dense_chain_reusing_a_layer(backend, dtype):
    """l1(l2(l1(x))): right forward and backward of the last call; l2's input (l1's first
    output, rewritten by l1's second forward) is refused by l2.backward unless copied."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 4)).astype(dtype)
    g = rng.standard_normal((6, 4)).astype(dtype)
    l1, r1 = dense_pair("tanh", dtype, backend)
    l2, r2 = dense_pair("sigmoid", dtype, backend)
    same(l1(l2(l1(x))), r1(r2(r1(x).copy()).copy()))
    for got, want in zip(layer_state(l1, g), layer_state(r1, g)):
        same(got, want)
    with pytest.raises(RuntimeError, match="input of the layer's last forward was overwritten"):
        l2.backward(g)
    l2(l1(x).copy())
    l1(x[::-1].copy())
    for got, want in zip(layer_state(l2, g), layer_state(r2, g)):  # r2's input: r1(x), as l2's
        same(got, want)
    # the plain chain is not copied and its backward runs through
    h = l1(x)
    l2(h)
    assert l1._x is x and l2._x.base is h.base
    l1.backward(l2.backward(g))
    # a rewritten grad_x buffer is refused the same way; a reallocated one (larger batch) is not rewritten
    l2(l1.backward(g))
    l1.backward(g)
    with pytest.raises(RuntimeError, match="overwritten"):
        l2.backward(g)
    h = l1(x)
    l2(h)
    l1(np.vstack([x, x]))  # l1's output buffer grows: h's memory is left as it was
    same(l2.backward(g), r2.backward(g))


def mlp_pair(sizes, dtype, backend, **kw):
    return [nn.MLP(sizes, "tanh", dtype=dtype, rng=0, backend=backend, **kw) for _ in range(2)]


def model_state(m, g):
    gx = m.backward(g, compute_grad_x=True).copy()
    return [gx] + [a.copy() for a in m.gradients()]


@pytest.mark.parametrize("sizes", [[4, 4], [4, 4, 4], [4, 3, 5, 4]])
def test_model_input_that_is_its_own_buffer_is_copied(backend, dtype, sizes):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 4)).astype(dtype)
    g = rng.standard_normal((5, 4)).astype(dtype)
    m, r = mlp_pair(sizes, dtype, backend)
    same(m(m(x)), r(r(x).copy()))  # the output buffer of the last layer (of the only layer for [4, 4])
    for got, want in zip(model_state(m, g), model_state(r, g)):
        same(got, want)
    # the first layer's grad_x buffer (model.backward(compute_grad_x=True)), rewritten by backward
    same(m(m.backward(g, compute_grad_x=True)), r(r.backward(g, compute_grad_x=True).copy()))
    for got, want in zip(model_state(m, g), model_state(r, g)):
        same(got, want)
    # a hidden layer's output buffer and a gradient array of the model
    if sizes == [4, 4, 4]:
        for pick in (lambda mm: mm[0](x),  # the first layer's output buffer, run on its own
                     lambda mm: (mm(x[:4]), mm.backward(g[:4]), mm.gradients()[2])[2]):
            a, b = pick(m), pick(r).copy()
            same(m(a), r(b))
            n = a.shape[0]
            for got, want in zip(model_state(m, g[:n]), model_state(r, g[:n])):
                same(got, want)
    # the common input is kept as it is, not copied
    m(x)
    assert m[0]._x is x


class KeepGrads:
    def __init__(self):
        self.seen = []

    def step(self, grads):
        self.seen.append([a.copy() for a in grads])


def test_model_training_on_its_own_buffers(backend, dtype):
    """train_step / fit / evaluate / predict with x or float targets that are the model's
    output buffer give what they give on copies."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 4)).astype(dtype)
    t = rng.standard_normal((6, 4)).astype(dtype)
    m, r = mlp_pair([4, 4, 4], dtype, backend, loss="mse_loss")
    om, orr = KeepGrads(), KeepGrads()
    assert m.train_step(m(x), t, om) == r.train_step(r(x).copy(), t, orr)
    assert m.train_step(x, m(t), om) == r.train_step(x, r(t).copy(), orr)
    for a, b in zip(om.seen, orr.seen):
        for ga, gb in zip(a, b):
            same(ga, gb)
    assert m.evaluate(m(x), t) == r.evaluate(r(x).copy(), t)
    assert m.evaluate(x, m(t)) == r.evaluate(x, r(t).copy())
    same(m.predict(m(x), batch_size=4), r.predict(r(x).copy(), batch_size=4))
    one, one_r = mlp_pair([4, 4], dtype, backend, loss="mse_loss")
    same(one.predict(one(x), batch_size=4), one_r.predict(one_r(x).copy(), batch_size=4))
    kw = dict(epochs=2, batch_size=4, optimizer="sgd", lr=0.1, seed=0, verbose=False)
    hm = m.fit(m(x), t, **dict(kw, validation_data=(t, x)))
    hr = r.fit(r(x).copy(), t, **dict(kw, validation_data=(t, x)))
    assert hm["loss"] == hr["loss"] and hm["val_loss"] == hr["val_loss"]
    hm = m.fit(x, t, **dict(kw, validation_data=(m(t), x)))
    hr = r.fit(x, t, **dict(kw, validation_data=(r(t).copy(), x)))
    assert hm["loss"] == hr["loss"] and hm["val_loss"] == hr["val_loss"]
    hm, hr = m.fit(x, m(t), **kw), r.fit(x, r(t).copy(), **kw)
    assert hm["loss"] == hr["loss"]
    for a, b in zip(m.parameters(), r.parameters()):
        same(a, b)


def test_chained_models_detect_an_overwritten_input(backend):
    rng = np.random.default_rng(4)
    x, x2 = rng.standard_normal((2, 5, 4))
    g = rng.standard_normal((5, 4))
    m1 = nn.MLP([4, 4, 4], "tanh", dtype=np.float64, rng=0, backend=backend)
    m2, r2 = mlp_pair([4, 6, 4], np.float64, backend)
    m2(m1(x))
    m1(x2)  # rewrites m2's input
    with pytest.raises(RuntimeError, match="overwritten"):
        m2.backward(g)
    m2(m1(x).copy())
    r2(m1(x).copy())
    m1(x2)
    for got, want in zip(model_state(m2, g), model_state(r2, g)):
        same(got, want)
    # one of the model's layers run on its own (same batch) between forward and backward
    m2(x)
    m2[0](x2)
    with pytest.raises(RuntimeError, match="ran forward again since the model's forward"):
        m2.backward(g)


def test_pickled_layers_still_copy_their_own_buffers(backend):
    import pickle
    x = np.random.default_rng(5).standard_normal((5, 4))
    L, R = dense_pair("identity", np.float64, backend)
    L(x)
    L = pickle.loads(pickle.dumps(L))
    same(L(L(x)), R(R(x).copy()))
    m, r = mlp_pair([4, 4], np.float64, backend)
    m(x)
    m = pickle.loads(pickle.dumps(m))
    same(m(m(x)), r(r(x).copy()))


def test_aliasing_checks_without_the_compiled_accept(backend, monkeypatch):
    """Without fastgd._cython.dense.arrays_ok (no SciPy) the overlap test is np.may_share_memory
    (exact here: every array involved is C-contiguous); arrays_ok declining for another reason
    (two layers sharing one gradient array) falls back to it too."""
    x = np.random.default_rng(6).standard_normal((5, 4))
    g = np.random.default_rng(7).standard_normal((5, 4))
    m = nn.MLP([4, 4, 4], "tanh", dtype=np.float64, rng=0, backend=backend)
    m[1].grad_bias = m[0].grad_bias  # allowed: the layers' arrays are checked per layer
    m(x)
    assert m[0]._x is x  # not copied
    no_accept = [None, True]  # as when the Cython dense module does not import: for the kernels and the layers
    monkeypatch.setattr(nn.functional, "_fast_state", no_accept)
    monkeypatch.setattr(nn.models, "_fast_state", no_accept)
    m, r = mlp_pair([4, 4, 4], np.float64, backend)
    same(m(m(x)), r(r(x).copy()))
    for got, want in zip(model_state(m, g), model_state(r, g)):
        same(got, want)
    L, R = dense_pair("identity", np.float64, backend)
    same(L(L(x)), R(R(x).copy()))
    for got, want in zip(layer_state(L, g), layer_state(R, g)):
        same(got, want)
    m(x)
    L(x)
    assert m[0]._x is x and L._x is x


# ---------------------------------------------------------------------------------------
# fit / predict / evaluate

def test_fit_one_full_batch_step_is_plain_gradient_descent(backend):
    """epochs=1, one batch of all rows, sgd: params_after = params_before - lr * gradient of
    the batch-mean loss at params_before (computed here by forward/backward on a copy)."""
    x, y = blobs(40, 4, 3, seed=1)
    model = nn.MLP([4, 5, 3], rng=2, dtype=np.float64, backend=backend)
    twin = nn.MLP([4, 5, 3], rng=2, dtype=np.float64, backend=backend)
    loss0, g = nn.softmax_cross_entropy(twin.forward(x), y, backend=backend)
    twin.backward(g)
    expect = [p - 0.5 * gr for p, gr in zip(twin.parameters(), twin.gradients())]
    hist = model.fit(x, y, epochs=1, batch_size=100, optimizer="sgd", lr=0.5, shuffle=True, seed=0, verbose=False)
    for p, e in zip(model.parameters(), expect):
        np.testing.assert_allclose(p, e, rtol=1e-13, atol=1e-15)  # shuffling only reorders the batch sums
    assert hist["loss"][0] == pytest.approx(loss0, rel=1e-13)


class RecordingSGD:
    """A user's optimizer object: anything with step(grads)."""

    def __init__(self, params, lr):
        self.params, self.lr, self.batches = params, lr, 0

    def step(self, grads):
        self.batches += 1
        for p, g in zip(self.params, grads):
            p -= self.lr * g


def test_fit_minibatches_shuffling_and_seeding():
    x, y = blobs(50, 4, 3, seed=1)
    model = nn.MLP([4, 5, 3], rng=2, dtype=np.float64, backend=REF)
    opt = RecordingSGD(model.parameters(), 0.1)
    hist = model.fit(x, y, epochs=3, batch_size=16, optimizer=opt, seed=0, verbose=False)
    assert opt.batches == 3 * 4  # ceil(50 / 16) steps per epoch
    assert len(hist["loss"]) == len(hist["accuracy"]) == len(hist["time"]) == 3
    assert model.history is hist

    def run(seed, shuffle=True, optimizer="adam"):
        m = nn.MLP([4, 5, 3], rng=2, dtype=np.float64, backend=REF)
        m.fit(x, y, epochs=2, batch_size=16, seed=seed, shuffle=shuffle, optimizer=optimizer, verbose=False)
        return np.concatenate([p.ravel() for p in m.parameters()])
    np.testing.assert_array_equal(run(0), run(0))
    np.testing.assert_array_equal(run(np.random.default_rng(0)), run(0))
    assert not np.array_equal(run(0), run(1))
    np.testing.assert_array_equal(run(0, False), run(1, False))  # no shuffling: the seed does not matter


def test_fit_shuffles_every_epoch():
    """The rows each step sees: a permutation per epoch, different between epochs."""
    x = np.arange(12, dtype=np.float64).reshape(12, 1)
    y = np.zeros(12, int)
    model = nn.MLP([1, 2], rng=0, dtype=np.float64, backend=REF)
    seen = []
    first = model.layers[0]
    orig = first._forward

    def spy(xb, kernels, params=None):
        seen.append(xb[:, 0].astype(int).tolist())
        return orig(xb, kernels, params)
    first._forward = spy
    model.fit(x, y, epochs=3, batch_size=5, optimizer=RecordingSGD(model.parameters(), 0.0), seed=3, verbose=False)
    assert [len(b) for b in seen] == [5, 5, 2] * 3
    epochs = [sum(seen[i:i + 3], []) for i in (0, 3, 6)]
    for e in epochs:
        assert sorted(e) == list(range(12))
    assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != list(range(12))


@pytest.mark.parametrize("rule,hyper", [
    ("sgd", dict(lr=0.1, momentum=0.9)), ("adam", dict(lr=1e-2)), ("adamw", dict(lr=1e-2)),
    ("adamax", dict()), ("nadam", dict()), ("radam", dict()), ("adagrad", dict(lr=0.1)),
    ("adadelta", dict()), ("rmsprop", dict(lr=1e-2, momentum=0.5, centered=True)), ("lion", dict(lr=1e-3))])
def test_fit_by_rule_name_matches_step_functions(rule, hyper):
    """fit(optimizer=name) calls fastgd.<name>_step with fresh zero state and step = 1, 2, ...:
    replaying the same steps by hand gives the same parameters."""
    x, y = blobs(30, 3, 2, seed=4)
    model = nn.MLP([3, 4, 2], rng=0, dtype=np.float64, backend=REF)
    model.fit(x, y, epochs=1, batch_size=30, optimizer=rule, shuffle=False, verbose=False, **hyper)
    hand = nn.MLP([3, 4, 2], rng=0, dtype=np.float64, backend=REF)
    _, g = nn.softmax_cross_entropy(hand.forward(x), y, backend=REF)
    hand.backward(g)
    step = getattr(fastgd, rule + "_step")
    for p, gr in zip(hand.parameters(), hand.gradients()):
        pos = {"sgd": 1, "adam": 2, "adamw": 2, "adamax": 2, "nadam": 2, "radam": 2, "adagrad": 1,
               "adadelta": 2, "rmsprop": 1, "lion": 1}[rule]
        kw = dict(hyper)
        if rule in ("sgd", "adam", "adamw", "adamax", "nadam", "radam", "adagrad"):
            kw["step"] = 1
        if rule == "rmsprop":
            kw.update(momentum_buffer=np.zeros_like(p), grad_avg=np.zeros_like(p))
        step(p, gr, *[np.zeros_like(p) for _ in range(pos)], backend=REF, **kw)
    for p, q in zip(model.parameters(), hand.parameters()):
        np.testing.assert_array_equal(p, q)


def test_fit_optimizer_errors():
    x, y = blobs(10, 3, 2)
    model = nn.MLP([3, 2], rng=0, dtype=np.float64)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        model.fit(x, y, optimizer="bfgs", verbose=False)
    with pytest.raises(ValueError, match="needs a learning rate"):
        model.fit(x, y, optimizer="sgd", verbose=False)
    with pytest.raises(TypeError, match="step\\(grads\\) method"):
        model.fit(x, y, optimizer=42, verbose=False)
    with pytest.raises(TypeError, match="go to the optimizer's constructor"):
        model.fit(x, y, optimizer=RecordingSGD(model.parameters(), 0.1), lr=0.1, verbose=False)
    with pytest.raises(ValueError, match="class indices in"):
        model.fit(x, y + 5, verbose=False)
    with pytest.raises(ValueError, match=r"x has shape \(10, 2\), expected \(n, 3\)"):
        model.fit(x[:, :2], y, verbose=False)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        model.fit(x, y, batch_size=0, verbose=False)


def test_fit_with_fastgd_optim_classes_and_objects():
    optim = pytest.importorskip("fastgd.optim", reason="fastgd.optim (optimizer objects) is not in this build")
    if not hasattr(optim, "Adam"):
        pytest.skip("fastgd.optim has no Adam")
    x, y = blobs(40, 4, 3, seed=1)

    def run(**kw):
        m = nn.MLP([4, 6, 3], rng=2, dtype=np.float64, backend=REF)
        if "object" in kw:
            kw["optimizer"] = optim.Adam(m.parameters(), lr=1e-2, backend=REF)
            del kw["object"]
        m.fit(x, y, epochs=2, batch_size=8, seed=0, verbose=False, **kw)
        return m.parameters()
    by_name = run(optimizer="adam", lr=1e-2)
    for other in (run(optimizer=optim.Adam, lr=1e-2), run(object=True)):
        for p, q in zip(by_name, other):
            np.testing.assert_array_equal(p, q)


def test_training_is_the_same_on_every_backend(compiled_backend):
    """float64, 3 epochs of Adam: every backend's run stays within round-off of the reference's."""
    x, y = blobs(64, 6, 3, seed=9)
    runs = {}
    for b in (REF, compiled_backend):
        m = nn.MLP([6, 16, 3], rng=1, dtype=np.float64, backend=b)
        h = m.fit(x, y, epochs=3, batch_size=16, optimizer="adam", lr=1e-2, seed=0, verbose=False)
        runs[b] = (h, m.parameters())
    np.testing.assert_allclose(runs[compiled_backend][0]["loss"], runs[REF][0]["loss"], rtol=1e-10)
    for p, q in zip(runs[compiled_backend][1], runs[REF][1]):
        np.testing.assert_allclose(p, q, rtol=1e-8, atol=1e-10)


def test_predict_and_evaluate(backend):
    x, y = blobs(200, 4, 3, seed=0, dtype=np.float32)
    model = nn.MLP([4, 16, 3], rng=0, backend=backend)
    hist = model.fit(x[:150], y[:150], epochs=15, batch_size=16, lr=1e-2, seed=0, verbose=False,
                     validation_data=(x[150:], y[150:]))
    assert hist["loss"][-1] < hist["loss"][0]
    logits = model.predict(x[150:], batch_size=7)
    assert logits.shape == (50, 3) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, model.predict(x[150:]), rtol=1e-6, atol=1e-6)
    ev = model.evaluate(x[150:], y[150:], batch_size=13)
    assert ev["accuracy"] == pytest.approx(np.mean(logits.argmax(axis=1) == y[150:]))
    assert ev["loss"] == pytest.approx(nn.softmax_cross_entropy(logits, y[150:], backend=REF)[0], rel=1e-5)
    assert hist["val_loss"][-1] == pytest.approx(ev["loss"], rel=1e-6)
    assert hist["val_accuracy"][-1] == ev["accuracy"] > 0.9
    onehot = np.eye(3, dtype=np.float32)[y[150:]]
    assert model.evaluate(x[150:], onehot)["loss"] == pytest.approx(ev["loss"], rel=1e-5)
    # predict converts: lists and float64 input are accepted
    np.testing.assert_allclose(model.predict(x[150:152].astype(np.float64).tolist()), logits[:2], rtol=1e-6)


def test_mse_and_bce_models(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3))
    a = np.array([[1.0], [-2.0], [0.5]])
    reg = nn.MLP([3, 1], loss="mse_loss", rng=0, dtype=np.float64, backend=backend)
    hist = reg.fit(x, (x @ a)[:, 0] + 0.3, epochs=60, batch_size=20, lr=0.05, seed=0, verbose=False)
    assert "accuracy" not in hist and hist["loss"][-1] < 1e-3
    np.testing.assert_allclose(reg[0].weight, a, atol=0.02)
    np.testing.assert_allclose(reg[0].bias, [0.3], atol=0.02)
    clf = nn.MLP([3, 8, 1], "tanh", loss="binary_cross_entropy_with_logits", rng=0, dtype=np.float64,
                 backend=backend)
    labels = (x @ a > 0).astype(np.float64)
    hist = clf.fit(x, labels, epochs=30, batch_size=20, lr=1e-2, seed=0, verbose=False)
    assert hist["accuracy"][-1] > 0.95
    assert clf.evaluate(x, labels[:, 0])["accuracy"] == pytest.approx(np.mean((clf.predict(x) > 0) == labels))


def test_progress_output(capsys):
    x, y = blobs(20, 3, 2)
    model = nn.MLP([3, 2], rng=0, dtype=np.float64)
    model.fit(x, y, epochs=2, verbose=False)
    assert capsys.readouterr().err == ""
    model.fit(x, y, epochs=2, progress=False)
    assert capsys.readouterr().err == ""
    model.fit(x, y, epochs=2)
    err = capsys.readouterr().err
    assert "loss=" in err and "accuracy=" in err  # tqdm's bar, or one line per epoch without tqdm


# ---------------------------------------------------------------------------------------
# bad arrays through the layers and models: in a subprocess per backend, so a crash fails the
# test instead of killing pytest; every case must raise the named error and write nothing

from _subprocess_cases import HELPERS, run_script  # noqa: E402

LAYER_BAD_INPUTS = HELPERS + r"""
T, V, R = TypeError, ValueError, RuntimeError


rng = np.random.default_rng(0)
layer = nn.Dense(3, 2, "tanh", dtype=np.float64, rng=0, backend=BACKEND)
params = layer.parameters() + layer.gradients()
x = rng.standard_normal((4, 3))
g = rng.standard_normal((4, 2))
case("Dense.forward None", T, "x is required, got None", lambda: layer.forward(None), *params)
case("Dense.forward matrix", T, "x must be a numpy.ndarray, not the subclass", lambda: layer.forward(np.asmatrix(x)),
     *params)
case("Dense.forward masked", T, "x must be a numpy.ndarray, not the subclass", lambda: layer.forward(masked(x)),
     *params)
case("Dense.forward unaligned", V, "x is not aligned", lambda: layer.forward(unaligned(x)), *params)
case("Dense.forward byte-swapped", T, "native byte order", lambda: layer.forward(x.astype(">f8")), *params)
y = layer.forward(x).copy()
case("Dense.backward None", T, "grad_output is required, got None", lambda: layer.backward(None), *params)
case("Dense.backward matrix", T, "grad_output must be a numpy.ndarray, not the subclass",
     lambda: layer.backward(np.asmatrix(g)), *params)
case("Dense.backward unaligned", V, "grad_output is not aligned", lambda: layer.backward(unaligned(g)), *params)
wide = nn.Dense(8, 2, dtype=np.float64, rng=0, backend=BACKEND)
wide.forward(rng.standard_normal((4, 8)))
case("Dense.backward grad_output is grad_weight's memory", V, "grad_output and the layer's grad_weight overlap",
     lambda: wide.backward(wide.grad_weight.reshape(-1)[:8].reshape(4, 2), overwrite_grad_output=True),
     *(wide.parameters() + wide.gradients()))

# assigning the layer's arrays: checked like kernel arguments; a refused value changes nothing
w0 = layer.weight
for value, exc, match in ((None, T, "weight is required, got None"), (np.asmatrix(w0), T, "not the subclass"),
                          (masked(w0), T, "not the subclass"), (np.zeros((2, 3)), V, r"weight has shape \(2, 3\)"),
                          (np.zeros((3, 2), np.float32), T, "weight has dtype float32 but the layer has dtype float64"),
                          (unaligned(w0), V, "weight is not aligned"), (np.asfortranarray(np.ones((3, 2))), V,
                                                                          "weight must be C-contiguous"),
                          (w0.tolist(), T, "weight must be a numpy.ndarray, got list")):
    def assign(value=value):
        layer.weight = value
    case("assign weight %s" % type(value).__name__, exc, match, assign, *params)
    assert layer.weight is w0
ro = np.zeros(2)
ro.flags.writeable = False
def assign_ro():
    layer.grad_bias = ro
case("assign read-only grad_bias", V, "grad_bias must be writeable", assign_ro, *params)
def assign_overlap():
    layer.grad_bias = layer.bias
case("assign grad_bias = bias", V, "grad_bias and the layer's bias overlap", assign_overlap, *params)
def assign_bias_none():
    layer.bias = None
case("assign bias None", T, "bias is required, got None", assign_bias_none, *params)
for attr in ("in_features", "out_features", "dtype"):
    def assign_ro_attr(attr=attr):
        setattr(layer, attr, 5)
    case("assign %s" % attr, AttributeError, "", assign_ro_attr, *params)
def bad_activation():
    layer.activation = "softmax"
case("assign activation", V, "activation must be one of", bad_activation, *params)
assert layer.activation == "tanh"
good = np.array(w0, copy=True)
layer.weight = good  # a valid array is taken as it is
assert layer.weight is good and np.array_equal(layer.forward(x), y)

# the layer's arrays changed in place (shape, dtype) since they were checked
layer.weight.shape = (2, 3)
case("weight reshaped in place", V, r"weight has shape \(2, 3\), expected \(3, 2\)", lambda: layer.forward(x),
     *params)
layer.weight.shape = (3, 2)
gw = layer.grad_weight
gw.dtype = np.float32  # (3, 2) float64 -> (3, 4) float32: a kernel would write past it
for method in (lambda: layer.forward(x), lambda: layer.backward(g)):
    case("grad_weight retyped in place", T, "grad_weight has dtype float32 but the layer has dtype float64", method,
         *params)
gw.dtype = np.float64
layer.grad_bias.flags.writeable = False
case("grad_bias made read-only", V, "grad_bias must be writeable", lambda: layer.backward(g), *params)
layer.grad_bias.flags.writeable = True
assert np.array_equal(layer.forward(x), y)
# the input kept by forward changed in place before backward
xs = rng.standard_normal((4, 3))
layer.forward(xs)
xs.shape = (2, 6)
case("forward input reshaped before backward", V, "the input of the last forward has shape", lambda: layer.backward(g),
     *params)

# models
model = nn.MLP([3, 5, 2], rng=0, dtype=np.float64, backend=BACKEND)
mparams = model.parameters() + model.gradients()
labels = np.array([0, 1, 1, 0])
square = nn.Dense(4, 4)
case("Sequential with a layer twice", V, "layer 1 is layer 0", lambda: nn.Sequential(square, square))
def replace_layer():
    model.layers[0] = nn.Dense(3, 5)
case("replace a layer", T, "", replace_layer)
def set_loss():
    model.loss = "mse_loss"
case("set loss", AttributeError, "", set_loss)
case("model.forward None", T, "x is required, got None", lambda: model.forward(None), *mparams)
case("model.forward matrix", T, "not the subclass", lambda: model.forward(np.asmatrix(x)), *mparams)
case("model.forward unaligned", V, "x is not aligned", lambda: model.forward(unaligned(x)), *mparams)
out = model.forward(x).copy()
case("model.backward None", T, "grad_output is required, got None", lambda: model.backward(None), *mparams)
case("model.backward masked", T, "not the subclass", lambda: model.backward(masked(g)), *mparams)
# a layer of the model run on another batch between the model's forward and backward
model.forward(x)
model[0].forward(rng.standard_normal((9, 3)))
case("layer reused between forward and backward", R, "ran forward again since the model's forward",
     lambda: model.backward(g), *mparams)
model.forward(x)
model[1].weight.shape = (2, 5)  # the last layer's: the first layer's kernel must not run either
case("last layer's weight reshaped: model.backward", V, "weight has shape", lambda: model.backward(g), *mparams)
before_x = model[0]._x
case("last layer's weight reshaped: model.forward", V, "weight has shape", lambda: model.forward(x.copy()),
     *mparams)
assert model[0]._x is before_x  # the first layer did not run
model[1].weight.shape = (5, 2)


class Opt:
    def step(self, grads):
        raise AssertionError("step reached")


for bad in (np.array([0, 1, 2, 0]), np.array([0, -1, 1, 0]), np.array([0, 1, 2 ** 63, 0], np.uint64),
            np.array([0, 1, 2 ** 32, 0], np.int64)):
    case("fit labels %s" % bad.tolist(), V, r"y must be class indices in \[0, 2\)",
         lambda: model.fit(x, bad, epochs=1, verbose=False), *mparams)
    case("train_step labels %s" % bad.tolist(), V, r"y must be class indices in \[0, 2\)",
         lambda: model.train_step(x, bad, Opt()), *mparams)
    case("evaluate labels %s" % bad.tolist(), V, r"y must be class indices in \[0, 2\)",
         lambda: model.evaluate(x, bad), *mparams)
    case("validation labels %s" % bad.tolist(), V, r"validation_data\[1\] must be class indices",
         lambda: model.fit(x, labels, epochs=1, verbose=False, validation_data=(x, bad)), *mparams)
case("fit y None", T, "y is required, got None", lambda: model.fit(x, None, epochs=1, verbose=False), *mparams)
case("fit validation y None", T, r"validation_data\[1\] is required", lambda: model.fit(
    x, labels, epochs=1, verbose=False, validation_data=(x, None)), *mparams)
case("fit x None", T, "x is required, got None", lambda: model.fit(None, labels, epochs=1, verbose=False), *mparams)
case("fit x masked", T, "must not be a numpy.ma", lambda: model.fit(masked(x), labels, epochs=1, verbose=False),
     *mparams)
case("fit y masked", T, "must not be a numpy.ma", lambda: model.fit(x, masked(labels), epochs=1, verbose=False),
     *mparams)
case("fit x matrix", T, "must not be a numpy.matrix", lambda: model.fit(np.asmatrix(x), labels, epochs=1,
                                                                        verbose=False), *mparams)
case("predict x masked", T, "must not be a numpy.ma", lambda: model.predict(masked(x)), *mparams)
case("train_step x matrix", T, "not the subclass", lambda: model.train_step(np.asmatrix(x), labels, Opt()), *mparams)
case("train_step x unaligned", V, "x is not aligned", lambda: model.train_step(unaligned(x), labels, Opt()), *mparams)
case("train_step labels too short", V, r"y has shape \(3,\)", lambda: model.train_step(x, labels[:3], Opt()),
     *mparams)
# data arguments are converted: unaligned, byte-swapped or strided data give the same predictions
p = model.predict(x)
for xx in (unaligned(x), x.astype(">f8"), np.repeat(x, 2, axis=0)[::2], x.astype(np.float32)):
    assert np.allclose(model.predict(xx), p, rtol=1e-6), xx.dtype
print("DONE", n_ok)
"""


def test_bad_arrays_never_reach_a_kernel_through_layers(backend):
    run_script(LAYER_BAD_INPUTS, backend, min_ok=60)


NO_DENSE_KERNELS = r"""
import sys, warnings
BACKEND = sys.argv[1]
if BACKEND == "cython":
    sys.modules["scipy"] = None  # a plain install without SciPy: the Cython dense kernels do not import
else:
    sys.modules["fastgd._numba.dense"] = None
import numpy as np
import fastgd
from fastgd import nn

fastgd.set_backend(BACKEND)
rng = np.random.default_rng(9)
x = rng.standard_normal((64, 6))
y = rng.integers(0, 3, 64)
runs = []
for backend in (None, "numpy"):  # the default backend (falls back), then the reference itself
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        m = nn.MLP([6, 16, 3], rng=1, dtype=np.float64, backend=backend)
        h = m.fit(x, y, epochs=3, batch_size=16, optimizer="adam", lr=1e-2, seed=0, verbose=False)
    runs.append((h, m.parameters(), [str(w.message) for w in rec]))
(h, p, warned), (h_ref, p_ref, _) = runs
assert len(warned) == 1 and "no dense kernels here" in warned[0] and "NumPy reference" in warned[0], warned
if BACKEND == "cython":
    assert "SciPy" in warned[0], warned
np.testing.assert_allclose(h["loss"], h_ref["loss"], rtol=1e-10)
for a, b in zip(p, p_ref):
    np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
try:  # naming the backend explicitly: a clear error, no fallback
    nn.dense_forward(x, p[0], p[1], backend=BACKEND)
except RuntimeError as exc:
    assert "backend %r has no dense kernels here" % BACKEND in str(exc), exc
    assert BACKEND != "cython" or "SciPy" in str(exc), exc
else:
    raise AssertionError("no RuntimeError")
print("DONE")
"""


def test_layers_fall_back_to_the_reference_without_dense_kernels(compiled_backend):
    """Without SciPy (Cython) or the numba dense module, fit() on the current backend still works,
    on the reference's dense kernels, with the reference's results; naming the backend raises."""
    import os
    import subprocess
    import sys
    home = os.path.dirname(os.path.dirname(os.path.abspath(fastgd.__file__)))
    proc = subprocess.run([sys.executable, "-c", NO_DENSE_KERNELS, compiled_backend], env=os.environ, cwd=home,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("DONE"), proc.stdout[-2000:] + proc.stderr[-3000:]


# ---------------------------------------------------------------------------------------
# the real-data example

@pytest.mark.parametrize("backend_name", ["cython", "numba", "numpy"])
def test_digits_example_reaches_96_percent(backend_name):
    pytest.importorskip("sklearn", reason="the digits example needs scikit-learn")
    if backend_name not in fastgd.available_backends():
        pytest.skip("backend %r not available" % backend_name)
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_digits.py"
    spec = importlib.util.spec_from_file_location("train_digits", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    data = example.load()
    _, hist, seconds, acc, _ = example.train(data, backend=backend_name, seed=0, epochs=30, batch_size=32,
                                            optimizer="adam", lr=1e-3)
    assert acc >= 0.96, "test accuracy %.4f" % acc


def test_fit_on_data_that_is_a_parameter_equals_fit_on_a_copy(backend):
    """fit(W, ...) with W one of the model's own parameters: the optimizer updates W every
    batch, so the data is copied first (it used to change under the training)."""
    def make():
        return nn.Sequential(nn.Dense(4, 4, rng=0, backend=backend), nn.Dense(4, 4, "identity", rng=1, backend=backend),
                             loss="mse_loss", backend=backend)
    m1, m2 = make(), make()
    y = np.ones((4, 4), np.float32)
    kw = dict(epochs=3, batch_size=2, shuffle=False, verbose=False, optimizer="sgd", lr=0.1)
    m1.fit(m1.layers[0].weight, m1.layers[1].weight, **kw)
    m2.fit(m2.layers[0].weight.copy(), m2.layers[1].weight.copy(), **kw)
    assert all(np.array_equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))


def test_backward_after_a_layer_ran_in_another_model_is_refused(backend):
    """A layer shared by two models, the second model's forward run in between: the shared
    layer keeps the second model's input and output, so the first model's backward would give
    wrong gradients without a word."""
    a, b, s = (nn.Dense(4, 4, rng=k, backend=backend) for k in (2, 3, 4))
    ma = nn.Sequential(a, s, loss="mse_loss", backend=backend)
    mb = nn.Sequential(b, s, loss="mse_loss", backend=backend)
    ma(np.ones((4, 4), np.float32))
    mb(np.full((4, 4), 2.0, np.float32))
    grads = [g.copy() for g in ma.gradients()]
    with pytest.raises(RuntimeError, match="ran forward again since the model's forward"):
        ma.backward(np.ones((4, 4), np.float32))
    assert all(np.array_equal(g, h) for g, h in zip(ma.gradients(), grads))
    ma(np.ones((4, 4), np.float32))
    ma.backward(np.ones((4, 4), np.float32))  # fine after the model's own forward
    s(np.ones((4, 4), np.float32))  # the layer on its own
    with pytest.raises(RuntimeError, match="ran forward again"):
        ma.backward(np.ones((4, 4), np.float32))
