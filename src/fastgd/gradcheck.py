"""Gradient checking by central differences, as the texts do it.

    >>> from fastgd import numerical_gradient, check_gradient
    >>> W = rng.normal(size=(3, 2)); b = np.zeros(2)
    >>> loss = lambda params: float(((X @ params[0] + params[1] - Y) ** 2).mean())
    >>> res = check_gradient(loss, analytic_grads, [W, b])
    >>> res.passed, res.max_rel_error            # True, [3e-10, 1e-10]

``f`` is always called with the ``params`` object you passed (the array, or the list of
arrays), while one element of one array is perturbed in place; a closure that ignores its
argument and reads the arrays directly (the book's ``lambda W: net.loss(x, t)``) works too.
Use float64 parameters: in float32 the central difference is dominated by round-off.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List

import numpy as np

from . import _validate as V

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._typing import NDArray, Objective

__all__ = ["numerical_gradient", "check_gradient", "GradCheckResult"]


def _as_list(params):
    """(list of arrays, was_single)"""
    if isinstance(params, np.ndarray):
        arrays, single = [params], True
    elif isinstance(params, (list, tuple)):
        arrays, single = list(params), False
        if not arrays:
            raise ValueError("params is empty")
    else:
        raise TypeError("params must be a numpy array or a list of numpy arrays, got %s" % type(params).__name__)
    for i, a in enumerate(arrays):
        label = "params" if single else "params[%d]" % i
        if not isinstance(a, np.ndarray):
            raise TypeError("%s must be a numpy.ndarray, got %s" % (label, type(a).__name__))
        if a.dtype.kind != "f":
            raise TypeError("%s must have a floating dtype, got %s" % (label, a.dtype))
        if not a.flags.writeable:
            raise ValueError("%s must be writeable (its elements are perturbed in place and restored)" % label)
    return arrays, single


def _scalar(value):
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "biuf":
        raise TypeError("f must return a real scalar, got %r" % (value,))
    return float(arr.reshape(()))


def numerical_gradient(f: Objective, params: NDArray[np.floating[Any]] | Sequence[NDArray[np.floating[Any]]],
                       eps: float = 1e-6) -> NDArray[np.float64] | list[NDArray[np.float64]]:
    """Central differences ``(f(x + h) - f(x - h)) / (x_+ - x_-)`` for every element of every
    array in ``params`` (``x_+``, ``x_-`` are the perturbed values actually stored, so the
    rounding of ``x +- eps`` does not bias the quotient); each element is restored exactly
    afterwards, also if ``f`` raises.  Returns an array (or a list of arrays) shaped like
    ``params``, float64.  ``f(params)`` is evaluated ``2 * total size`` times.
    """
    if not callable(f):
        raise TypeError("f must be callable, got %s" % type(f).__name__)
    eps = V.real("eps", eps)
    if not eps > 0:
        raise ValueError("eps must be > 0, got %r" % eps)
    arrays, single = _as_list(params)
    grads = []
    for a in arrays:
        g = np.zeros(a.shape, dtype=np.float64)
        for idx in np.ndindex(a.shape):
            orig = a[idx].copy()
            try:
                a[idx] = orig + eps
                xp = float(a[idx])
                fp = _scalar(f(params))
                a[idx] = orig - eps
                xm = float(a[idx])
                fm = _scalar(f(params))
            finally:
                a[idx] = orig
            g[idx] = (fp - fm) / (xp - xm)
        grads.append(g)
    return grads[0] if single else grads


@dataclass
class GradCheckResult:
    """``max_rel_error[i]``: the largest ``|a - n| / max(|a|, |n|)`` over array i (0 where
    both are 0); ``max_abs_error[i]``: the largest ``|a - n|``; ``passed``: every element
    satisfies ``|a - n| <= atol + rtol * max(|a|, |n|)``; ``numerical``, ``analytic``: the
    two gradients (lists of float64 arrays)."""
    passed: bool
    max_rel_error: List[float]
    max_abs_error: List[float]
    numerical: List[NDArray[np.float64]]
    analytic: List[NDArray[np.float64]]

    def __bool__(self) -> bool:
        return self.passed


def check_gradient(f: Objective, grad_fn: Callable[[Any], Any],
                   params: NDArray[np.floating[Any]] | Sequence[NDArray[np.floating[Any]]], *, eps: float = 1e-6,
                   rtol: float = 1e-5, atol: float = 1e-7) -> GradCheckResult:
    """Compare ``grad_fn(params)`` with :func:`numerical_gradient` of ``f``.

    ``grad_fn`` is called once, before the numerical gradient, with ``params`` and returns
    an array (or a list of arrays) shaped like ``params``.  Returns a
    :class:`GradCheckResult` (truthy when it passed).  A large relative error means the
    analytic gradient is wrong (or ``f`` is not smooth at the point).
    """
    if not callable(grad_fn):
        raise TypeError("grad_fn must be callable, got %s" % type(grad_fn).__name__)
    rtol = V.nonneg("rtol", rtol)
    atol = V.nonneg("atol", atol)
    arrays, single = _as_list(params)
    analytic = grad_fn(params)
    analytic = [analytic] if single else analytic
    if not isinstance(analytic, (list, tuple)) or len(analytic) != len(arrays):
        raise ValueError("grad_fn must return %s" % ("an array" if single else "a list of %d arrays" % len(arrays)))
    analytic = [np.array(a, dtype=np.float64) for a in analytic]
    for i, (a, p) in enumerate(zip(analytic, arrays)):
        if a.shape != p.shape:
            raise ValueError("grad_fn returned shape %s for params%s of shape %s"
                             % (a.shape, "" if single else "[%d]" % i, p.shape))
    numerical = numerical_gradient(f, params, eps=eps)
    numerical = [numerical] if single else numerical  # type: ignore[list-item]  # (an array when single)
    rel, absd, ok = [], [], True
    for a, n in zip(analytic, numerical):
        diff = np.abs(a - n)
        scale = np.maximum(np.abs(a), np.abs(n))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), np.where(diff > 0, np.inf, 0.0))
        rel.append(float(r.max()) if r.size else 0.0)
        absd.append(float(diff.max()) if diff.size else 0.0)
        ok = ok and bool(np.all(diff <= atol + rtol * scale))
    return GradCheckResult(passed=ok, max_rel_error=rel, max_abs_error=absd,
                           numerical=numerical, analytic=analytic)  # type: ignore[arg-type]
