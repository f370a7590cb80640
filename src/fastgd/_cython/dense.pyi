"""Stubs of fastgd._cython.dense: the dense-layer kernels (see fastgd/reference/dense.py).

Arguments are validated by fastgd.nn (``arrays_ok`` is its C fast accept); every ``out`` is
written in place."""
from typing import Any, Literal

from numpy.typing import NDArray

_A = NDArray[Any]
_Activation = Literal["identity", "relu", "leaky_relu", "sigmoid", "tanh"]

__test__: dict[str, str]  # Cython's doctest table (empty)

ACTIVATIONS: tuple[str, ...]

def dense_forward(x: _A, weight: _A, bias: _A, out: _A, *, activation: _Activation, negative_slope: float) -> _A: ...
def dense_backward(grad_output: _A, x: _A, weight: _A, output: _A, grad_x: _A | None, grad_weight: _A, grad_bias: _A,
                   grad_z: _A, *, activation: _Activation, negative_slope: float) -> tuple[_A | None, _A, _A]: ...
# the mean loss (NaN for an empty batch); its gradient is written to out
def softmax_cross_entropy(logits: _A, labels: _A, out: _A) -> float: ...
def mse_loss(pred: _A, target: _A, out: _A) -> float: ...
def binary_cross_entropy_with_logits(logits: _A, targets: _A, out: _A) -> float: ...
def dense_skeleton(x: _A, weight: _A, grad_z: _A, out: _A, grad_weight: _A, grad_x: _A) -> _A: ...
def arrays_ok(ins: tuple[Any, ...], outs: tuple[Any, ...]) -> bool: ...
