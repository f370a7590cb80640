"""Dense layers and losses in plain NumPy: THE SPEC of ``fastgd.nn``'s kernels.

The Cython (``fastgd/_cython/dense.pyx``) and numba (``fastgd/_numba/dense.py``) backends have
the same functions, names and order of operations, line by line.  Arguments arrive already
validated by ``fastgd.nn``: C-contiguous arrays of one float dtype with consistent shapes,
outputs writeable and not overlapping the inputs; ``activation`` is one of ``ACTIVATIONS``.

Layout (row-major, batch along axis 0):
  x (n, in)   weight (in, out)   bias (out,)   output (n, out) = f(x @ weight + bias)

The forward pass keeps only the *post*-activation ``output``: every supported derivative is a
function of it (``negative_slope >= 0`` keeps the sign of z visible in leaky_relu's output),
so the backward pass needs neither z nor an extra pass to rebuild it:

  ===========  ==========================  ==============================
  activation   f(z)                        f'(z) from a = f(z)
  ===========  ==========================  ==============================
  identity     z                           1
  relu         max(z, 0)                   1 if a > 0 else 0   (0 at z <= 0)
  leaky_relu   z if z > 0 else s*z         1 if a > 0 else s   (s at z <= 0)
  sigmoid      1 / (1 + exp(-z))           a * (1 - a)
  tanh         tanh(z)                     (1 - a) * (1 + a)
  ===========  ==========================  ==============================

``(1 - a) * (1 + a)`` rather than ``1 - a*a``: as accurate near |a| = 1, and it offers a C
compiler no multiply-add to contract into an FMA, so every backend rounds it the same way.
NaN propagates through the forward activations as through ``numpy.maximum``/``exp``/``tanh``.

Matrix products go to BLAS (here ``numpy.matmul``; the Cython backend calls sgemm/dgemm).
Scalars enter as weak Python floats, so float32 arrays are computed in float32; losses are
summed in float64 and returned as Python floats.
"""
import numpy as np

__all__ = ["ACTIVATIONS", "dense_forward", "dense_backward", "softmax_cross_entropy", "mse_loss",
           "binary_cross_entropy_with_logits", "dense_skeleton"]

ACTIVATIONS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh")


def _activate(z, activation, negative_slope):
    """z = f(z) in place."""
    if activation == "relu":
        np.maximum(z, 0.0, out=z)
    elif activation == "leaky_relu":
        z[...] = np.where(z > 0, z, negative_slope * z)
    elif activation == "sigmoid":
        # exp of -|z| only: never overflows; 1/(1+e) for z >= 0, e/(1+e) for z < 0
        e = np.exp(-np.abs(z))
        z[...] = np.where(z >= 0, 1.0, e) / (1.0 + e)
    elif activation == "tanh":
        np.tanh(z, out=z)
    # identity: nothing


def dense_forward(x, weight, bias, out, *, activation, negative_slope):
    """out = f(x @ weight + bias).  OUT: out (n, out)."""
    np.matmul(x, weight, out=out)
    out += bias
    _activate(out, activation, negative_slope)
    return out


def _derivative(grad_output, output, grad_z, activation, negative_slope):
    """grad_z = grad_output * f'(z), f' taken from the output a = f(z)."""
    g, a = grad_output, output
    if activation == "identity":
        if grad_z is not g:
            grad_z[...] = g
    elif activation == "relu":
        grad_z[...] = np.where(a > 0, g, 0.0)
    elif activation == "leaky_relu":
        grad_z[...] = np.where(a > 0, g, negative_slope * g)
    elif activation == "sigmoid":
        grad_z[...] = g * (a * (1.0 - a))
    elif activation == "tanh":
        grad_z[...] = g * ((1.0 - a) * (1.0 + a))


def dense_backward(grad_output, x, weight, output, grad_x, grad_weight, grad_bias, grad_z, *, activation,
                   negative_slope):
    """Backpropagation through ``output = f(x @ weight + bias)``:

        grad_z      = grad_output * f'(z)       (f' from output; one pass, fused with the next line)
        grad_bias   = sum(grad_z, axis=0)
        grad_weight = x.T @ grad_z
        grad_x      = grad_z @ weight.T         (skipped when grad_x is None)

    IN: grad_output (n, out), x (n, in), weight (in, out), output (n, out).
    OUT: grad_z (n, out; may be grad_output itself, which is then overwritten), grad_weight,
    grad_bias, grad_x.  Returns (grad_x, grad_weight, grad_bias).
    """
    _derivative(grad_output, output, grad_z, activation, negative_slope)
    np.sum(grad_z, axis=0, out=grad_bias)
    np.matmul(x.T, grad_z, out=grad_weight)
    if grad_x is not None:
        np.matmul(grad_z, weight.T, out=grad_x)
    return grad_x, grad_weight, grad_bias


def softmax_cross_entropy(logits, labels, out):
    """Mean over the batch of -log softmax(logits)[label], and its gradient.

    ``labels``: intp class indices (n,), or float class probabilities / one-hot (n, classes).
    Per row, with m = max(z) (stability: every exp argument is <= 0):
        s = sum(exp(z - m)),  lse = log(s)
        loss_row = lse - (z[label] - m)            or  sum_j y_j * (lse - (z_j - m))
        out_j = (exp(z_j - m) / s - y_j) / n       (y = one-hot of label)
    OUT: out (n, classes).  Returns the loss (float).
    """
    n = logits.shape[0]
    inv_n = 1.0 / n
    m = np.max(logits, axis=1, keepdims=True)
    shifted = logits - m
    np.exp(shifted, out=out)
    s = np.sum(out, axis=1, keepdims=True)
    lse = np.log(s)
    out /= s
    if labels.ndim == 1:
        rows = np.arange(n)
        row_loss = lse[:, 0] - shifted[rows, labels]
        out[rows, labels] -= 1.0
    else:
        row_loss = np.sum(labels * (lse - shifted), axis=1)
        out -= labels
    out *= inv_n
    return float(np.sum(row_loss, dtype=np.float64)) / n


def mse_loss(pred, target, out):
    """Mean over all N elements of (pred - target)^2 (``torch.nn.MSELoss()``), and its gradient
    out = 2 (pred - target) / N.  OUT: out.  Returns the loss (float)."""
    size = pred.size
    d = pred - target
    np.multiply(d, 2.0 / size, out=out)
    return float(np.sum(d * d, dtype=np.float64)) / size


def binary_cross_entropy_with_logits(logits, targets, out):
    """Mean over all N elements of -(y log sigmoid(z) + (1-y) log(1 - sigmoid(z)))
    (``torch.nn.BCEWithLogitsLoss()``), in the stable form
        loss_i = max(z, 0) - z*y + log1p(exp(-|z|)),
    and its gradient out = (sigmoid(z) - y) / N.  OUT: out.  Returns the loss (float)."""
    size = logits.size
    z, y = logits, targets
    e = np.exp(-np.abs(z))
    elem = np.maximum(z, 0.0) - z * y + np.log1p(e)
    sig = np.where(z >= 0, 1.0, e) / (1.0 + e)
    np.multiply(sig - y, 1.0 / size, out=out)
    return float(np.sum(elem, dtype=np.float64)) / size


def dense_skeleton(x, weight, grad_z, out, grad_weight, grad_x):
    """Benchmark skeleton: the three bare matrix products of a dense forward+backward pass
    (out = x @ weight, grad_weight = x.T @ grad_z, grad_x = grad_z @ weight.T) with this
    backend's BLAS and nothing else: the floor a fused forward+backward is measured against."""
    np.matmul(x, weight, out=out)
    np.matmul(x.T, grad_z, out=grad_weight)
    np.matmul(grad_z, weight.T, out=grad_x)
    return out
