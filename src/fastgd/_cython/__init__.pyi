"""Stubs of the Cython backend (kernels re-exported from the _rules_<variant> module chosen at import).

Arguments are validated by fastgd.steps / fastgd.multi before these are called.  The
single-tensor kernels take every argument positionally, in the reference's order
(fastgd/reference/rules.py); the <rule>_multi kernels take lists (None for an unused optional
state list) and keyword-only hyperparameters.  Checked against the compiled modules by
``python -m mypy.stubtest fastgd._cython`` (tests/test_typing.py)."""
from typing import Any

from numpy.typing import NDArray

from . import _core as _core
from . import dense as dense

_A = NDArray[Any]
_L = list[NDArray[Any]]
_OL = list[NDArray[Any] | None] | None

SIMD_VARIANT: str
STAGED: bool
KERNELS: tuple[str, ...]

def sgd(param: _A, grad: _A, momentum_buffer: _A | None, lr: float, momentum: float, dampening: float,
        nesterov: bool, weight_decay: float, maximize: bool, first_step: bool) -> _A: ...
def adam(param: _A, grad: _A, exp_avg: _A, exp_avg_sq: _A, max_exp_avg_sq: _A | None, step: float, lr: float,
         beta1: float, beta2: float, eps: float, weight_decay: float, amsgrad: bool, maximize: bool,
         decoupled_weight_decay: bool) -> _A: ...
def adamax(param: _A, grad: _A, exp_avg: _A, exp_inf: _A, step: float, lr: float, beta1: float, beta2: float,
           eps: float, weight_decay: float, maximize: bool) -> _A: ...
def nadam(param: _A, grad: _A, exp_avg: _A, exp_avg_sq: _A, step: int, mu_product: float, lr: float, beta1: float,
          beta2: float, eps: float, weight_decay: float, momentum_decay: float, maximize: bool,
          decoupled_weight_decay: bool) -> _A: ...
def radam(param: _A, grad: _A, exp_avg: _A, exp_avg_sq: _A, step: int, lr: float, beta1: float, beta2: float,
          eps: float, weight_decay: float, maximize: bool, decoupled_weight_decay: bool) -> _A: ...
def adagrad(param: _A, grad: _A, state_sum: _A, step: int, lr: float, lr_decay: float, weight_decay: float,
            eps: float, maximize: bool) -> _A: ...
def adadelta(param: _A, grad: _A, square_avg: _A, acc_delta: _A, lr: float, rho: float, eps: float,
             weight_decay: float, maximize: bool) -> _A: ...
def rmsprop(param: _A, grad: _A, square_avg: _A, momentum_buffer: _A | None, grad_avg: _A | None, lr: float,
            alpha: float, eps: float, weight_decay: float, momentum: float, centered: bool, maximize: bool) -> _A: ...
def lion(param: _A, grad: _A, exp_avg: _A, lr: float, beta1: float, beta2: float, weight_decay: float,
         maximize: bool) -> _A: ...
def copy_skeleton(grad: _A, *outs: _A) -> _A: ...
def multi_chunk(n: int | None = None) -> int: ...

# the multi-tensor kernels: grad_scale (a real > 0), clip (the clip factor), masters (float32
# master copies, None for tensors without one) and exact_fold are the fused extras (staged.pxi)
def sgd_multi(params: _L, grads: _L, momentum_buffers: _OL, *, lr: float, momentum: float, dampening: float,
              nesterov: bool, weight_decay: float, maximize: bool, first_step: bool, grad_scale: float | None = None,
              clip: float | None = None, masters: _OL = None, exact_fold: bool = False) -> _L: ...
def adam_multi(params: _L, grads: _L, exp_avgs: _L, exp_avg_sqs: _L, max_exp_avg_sqs: _OL, *, step: float, lr: float,
               beta1: float, beta2: float, eps: float, weight_decay: float, amsgrad: bool, maximize: bool,
               decoupled_weight_decay: bool, grad_scale: float | None = None, clip: float | None = None,
               masters: _OL = None, exact_fold: bool = False) -> _L: ...
def adamax_multi(params: _L, grads: _L, exp_avgs: _L, exp_infs: _L, *, step: float, lr: float, beta1: float,
                 beta2: float, eps: float, weight_decay: float, maximize: bool, grad_scale: float | None = None,
                 clip: float | None = None, masters: _OL = None, exact_fold: bool = False) -> _L: ...
def nadam_multi(params: _L, grads: _L, exp_avgs: _L, exp_avg_sqs: _L, *, step: int, mu_product: float, lr: float,
                beta1: float, beta2: float, eps: float, weight_decay: float, momentum_decay: float, maximize: bool,
                decoupled_weight_decay: bool, grad_scale: float | None = None, clip: float | None = None,
                masters: _OL = None, exact_fold: bool = False) -> _L: ...
def radam_multi(params: _L, grads: _L, exp_avgs: _L, exp_avg_sqs: _L, *, step: int, lr: float, beta1: float,
                beta2: float, eps: float, weight_decay: float, maximize: bool, decoupled_weight_decay: bool,
                grad_scale: float | None = None, clip: float | None = None, masters: _OL = None,
                exact_fold: bool = False) -> _L: ...
def adagrad_multi(params: _L, grads: _L, state_sums: _L, *, step: int, lr: float, lr_decay: float,
                  weight_decay: float, eps: float, maximize: bool, grad_scale: float | None = None,
                  clip: float | None = None, masters: _OL = None, exact_fold: bool = False) -> _L: ...
def adadelta_multi(params: _L, grads: _L, square_avgs: _L, acc_deltas: _L, *, lr: float, rho: float, eps: float,
                   weight_decay: float, maximize: bool, grad_scale: float | None = None, clip: float | None = None,
                   masters: _OL = None, exact_fold: bool = False) -> _L: ...
def rmsprop_multi(params: _L, grads: _L, square_avgs: _L, momentum_buffers: _OL, grad_avgs: _OL, *, lr: float,
                  alpha: float, eps: float, weight_decay: float, momentum: float, centered: bool, maximize: bool,
                  grad_scale: float | None = None, clip: float | None = None, masters: _OL = None,
                  exact_fold: bool = False) -> _L: ...
def lion_multi(params: _L, grads: _L, exp_avgs: _L, *, lr: float, beta1: float, beta2: float, weight_decay: float,
               maximize: bool, grad_scale: float | None = None, clip: float | None = None, masters: _OL = None,
               exact_fold: bool = False) -> _L: ...

# 0 (let the Python checks name the problem), 1 (one dtype) or 2 (float32 and float64 mixed); never raises
def multi_arrays_ok(lists: tuple[Any, ...], n_readonly: int, optional: int) -> int: ...
# the norm; with tiny_below > 0, (norm, whether a nonzero gradient value is smaller than it)
def global_norm(grads: _L, grad_scale: float | None = None, tiny_below: float = 0.0) -> float | tuple[float, bool]: ...
def unscale_and_check(grads: _L, scale: float, found_inf: _A) -> _A: ...
def half_cast(src: _A, dst: _A) -> _A: ...
def half_skeleton(grad: _A, *outs: _A) -> _A: ...
