"""Dense layers and losses as numba kernels: the same functions, names and order of operations
as fastgd/reference/dense.py (the spec) and fastgd/_cython/dense.pyx.

Matrix products go to BLAS through ``numpy.matmul`` (called from Python, outside the jitted
code); the elementwise work around them is fused into one jitted pass each:
  forward:  out = f(out + bias) after out = x @ weight
  backward: grad_z = grad_output * f'(output) and grad_bias = sum(grad_z, axis 0) together,
            then grad_weight = x.T @ grad_z, grad_x = grad_z @ weight.T
The dense layer's passes run on one thread (BLAS has the threads; see dense.pyx for the
measurement); the loss bodies are compiled serial and ``parallel=True`` like the step kernels.
"""
import math

import numpy as np
from numba import njit, prange

from .rules import FASTMATH, _compile, _variant

__all__ = ["ACTIVATIONS", "dense_forward", "dense_backward", "softmax_cross_entropy", "mse_loss",
           "binary_cross_entropy_with_logits", "dense_skeleton"]

ACTIVATIONS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh")
_CODES = {name: i for i, name in enumerate(ACTIVATIONS)}
IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH = range(5)


@njit(inline="always")
def _max0(v, zero):
    """numpy.maximum(v, 0): NaN propagates.  ``zero`` carries the array's dtype (a literal 0
    would make a float32 expression float64)."""
    return v if not v <= 0 else zero


@njit(inline="always")
def _sigmoid(v, one):
    """1/(1+exp(-v)) for v >= 0, exp(v)/(1+exp(v)) for v < 0: exp never overflows."""
    e = math.exp(-abs(v))
    return (one if v >= 0 else e) / (one + e)


# ---------------------------------------------------------------------------------------
# forward

def _bias_act_body(z, b, act, slope, one, zero):
    n, m = z.shape
    for i in range(n):
        if act == RELU:
            for j in range(m):
                z[i, j] = _max0(z[i, j] + b[j], zero)
        elif act == LEAKY_RELU:
            for j in range(m):
                v = z[i, j] + b[j]
                z[i, j] = v if v > 0 else slope * v
        elif act == SIGMOID:
            for j in range(m):
                z[i, j] = _sigmoid(z[i, j] + b[j], one)
        elif act == TANH:
            for j in range(m):
                z[i, j] = math.tanh(z[i, j] + b[j])
        else:
            for j in range(m):
                z[i, j] = z[i, j] + b[j]


_bias_act_k = njit(_bias_act_body, fastmath=FASTMATH, nogil=True, cache=True, error_model="numpy")


def dense_forward(x, weight, bias, out, *, activation, negative_slope):
    """out = f(x @ weight + bias).  OUT: out (n, out)."""
    np.matmul(x, weight, out=out)
    f = out.dtype.type
    _bias_act_k(out, bias, _CODES[activation], f(negative_slope), f(1.0), f(0.0))
    return out


# ---------------------------------------------------------------------------------------
# backward

def _deriv_bias_body(g, a, gz, gb, act, slope, one, zero, write):
    """gz = g * f'(a) and gb = sum of gz over the rows (row by row, in order, as
    numpy.sum(axis=0) adds them), in one pass."""
    n, w = g.shape
    for j in range(w):
        gb[j] = zero
    for i in range(n):
        # 1-D row views indexed by range(w): the inner loops vectorize (measured 5x
        # faster than indexing the 2-D arrays from a variable start)
        gr = g[i]
        ar = a[i]
        zr = gz[i]
        if act == RELU:
            for j in range(w):
                gj = gr[j]
                v = gj if ar[j] > 0 else zero
                zr[j] = v
                gb[j] = gb[j] + v
        elif act == LEAKY_RELU:
            for j in range(w):
                gj = gr[j]
                v = gj if ar[j] > 0 else slope * gj
                zr[j] = v
                gb[j] = gb[j] + v
        elif act == SIGMOID:
            for j in range(w):
                aj = ar[j]
                v = gr[j] * (aj * (one - aj))
                zr[j] = v
                gb[j] = gb[j] + v
        elif act == TANH:
            for j in range(w):
                aj = ar[j]
                v = gr[j] * ((one - aj) * (one + aj))
                zr[j] = v
                gb[j] = gb[j] + v
        elif write:
            for j in range(w):
                zr[j] = gr[j]
                gb[j] = gb[j] + gr[j]
        else:
            for j in range(w):
                gb[j] = gb[j] + gr[j]


_deriv_bias_k = njit(_deriv_bias_body, fastmath=FASTMATH, nogil=True, cache=True, error_model="numpy")


def dense_backward(grad_output, x, weight, output, grad_x, grad_weight, grad_bias, grad_z, *, activation,
                   negative_slope):
    """grad_z = grad_output * f'(output) and grad_bias = sum(grad_z, axis=0) in one pass;
    grad_weight = x.T @ grad_z;  grad_x = grad_z @ weight.T (skipped when grad_x is None).
    IN: grad_output, x, weight, output.  OUT: grad_z (may be grad_output), grad_weight, grad_bias,
    grad_x.  Returns (grad_x, grad_weight, grad_bias)."""
    f = grad_output.dtype.type
    act = _CODES[activation]
    _deriv_bias_k(grad_output, output, grad_z, grad_bias, act, f(negative_slope), f(1.0), f(0.0),
                  act != IDENTITY or grad_z is not grad_output)
    np.matmul(x.T, grad_z, out=grad_weight)
    if grad_x is not None:
        np.matmul(grad_z, weight.T, out=grad_x)
    return grad_x, grad_weight, grad_bias


# ---------------------------------------------------------------------------------------
# losses: (loss, gradient) in one pass; row or element terms summed in float64

@njit(inline="always")
def _row_exp(z, g, i, c, zero):
    """Row i of a stable softmax, unnormalised: g[i] = exp(z[i] - max(z[i])); returns
    (max, sum).  Shared by both label forms of softmax_cross_entropy."""
    mx = z[i, 0]
    for j in range(1, c):
        if z[i, j] > mx or z[i, j] != z[i, j]:  # max that propagates NaN, like numpy.max
            mx = z[i, j]
    s = zero
    for j in range(c):
        e = math.exp(z[i, j] - mx)
        g[i, j] = e
        s = s + e
    return mx, s


def _sce_labels_body(z, labels, g, inv_n, one, zero):
    n, c = z.shape
    total = 0.0
    for i in prange(n):
        mx, s = _row_exp(z, g, i, c, zero)
        lse = math.log(s)
        lab = labels[i]
        total += lse - (z[i, lab] - mx)
        for j in range(c):
            g[i, j] = (g[i, j] / s - (one if j == lab else zero)) * inv_n
    return total


def _sce_probs_body(z, y, g, inv_n, one, zero):
    n, c = z.shape
    total = 0.0
    for i in prange(n):
        mx, s = _row_exp(z, g, i, c, zero)
        lse = math.log(s)
        loss = zero
        for j in range(c):
            loss = loss + y[i, j] * (lse - (z[i, j] - mx))
            g[i, j] = (g[i, j] / s - y[i, j]) * inv_n
        total += loss
    return total


_sce_labels_k = _compile(_sce_labels_body)
_sce_probs_k = _compile(_sce_probs_body)


def softmax_cross_entropy(logits, labels, out):
    """Mean over the batch of -log softmax(logits)[label] and its gradient (see the reference).
    labels: intp (n,) class indices or float (n, classes) probabilities.  OUT: out."""
    n = logits.shape[0]
    if logits.size == 0:
        return float("nan")
    f = logits.dtype.type
    kernel = _sce_labels_k if labels.ndim == 1 else _sce_probs_k
    return float(_variant(kernel, logits.size)(logits, labels, out, f(1.0 / n), f(1.0), f(0.0))) / n


def _mse_body(p, t, g, scale):
    total = 0.0
    for i in prange(p.size):
        d = p[i] - t[i]
        g[i] = d * scale
        total += d * d
    return total


_mse_k = _compile(_mse_body)


def mse_loss(pred, target, out):
    """Mean of (pred - target)^2 over all N elements; out = 2 (pred - target) / N."""
    size = pred.size
    if size == 0:
        return float("nan")
    f = pred.dtype.type
    total = _variant(_mse_k, size)(pred.reshape(-1), target.reshape(-1), out.reshape(-1), f(2.0 / size))
    return float(total) / size


def _bce_body(z, y, g, inv_n, one, zero):
    total = 0.0
    for i in prange(z.size):
        zi = z[i]
        e = math.exp(-abs(zi))
        total += _max0(zi, zero) - zi * y[i] + math.log1p(e)
        g[i] = ((one if zi >= 0 else e) / (one + e) - y[i]) * inv_n
    return total


_bce_k = _compile(_bce_body)


def binary_cross_entropy_with_logits(logits, targets, out):
    """Mean over all N elements of max(z,0) - z*y + log1p(exp(-|z|)); out = (sigmoid(z) - y) / N."""
    size = logits.size
    if size == 0:
        return float("nan")
    f = logits.dtype.type
    total = _variant(_bce_k, size)(logits.reshape(-1), targets.reshape(-1), out.reshape(-1), f(1.0 / size),
                                   f(1.0), f(0.0))
    return float(total) / size


def dense_skeleton(x, weight, grad_z, out, grad_weight, grad_x):
    """Benchmark skeleton: the three bare products of a forward+backward pass with this backend's
    BLAS (numpy.matmul) and nothing else."""
    np.matmul(x, weight, out=out)
    np.matmul(x.T, grad_z, out=grad_weight)
    np.matmul(grad_z, weight.T, out=grad_x)
    return out
