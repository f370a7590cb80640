"""The gradient-descent driver of the texts, its compiled twin, and Newton's method.

    >>> from fastgd import gradient_descent, functions as F
    >>> r = gradient_descent(F.quadratic.grad, -0.9, "sgd", lr=0.03, iterations=15, tol=0)
    >>> r.x                                   # 0.997648 (the published value)
    >>> r = gradient_descent(F.beale.jit_grad, [3.0, 4.0], lr=5e-6, iterations=300_000)
    >>> r.compiled, r.x                       # True, [2.70735828, 0.41689171]

The loop (both versions, precisely)::

    x_0 = copy of x0
    for k = 0, 1, 2, ...:
        g_k = grad_fn(x_k)
        if max(abs(g_k)) < tol:   stop, converged = True     # tested BEFORE the update
        if k == iterations:       stop, converged = False
        x_{k+1} = update(x_k, g_k)                            # one update of the rule

So at most ``iterations`` updates are made (``n_iter`` of them), the gradient is evaluated
``n_iter + 1`` times (the look-ahead Nesterov rule evaluates it once more per update, at
``x + mu*v``), ``result.grad`` is always the gradient at ``result.x`` and ``converged`` is
``max(abs(result.grad)) < tol``.  The iterates are those of the textbook loop
``for i in range(iterations): if max|df(x)| < eps: break; x = x - lr*df(x)``.  ``tol=0``
runs every iteration.  A NaN gradient never passes the test.

Rules (``optimizer=``):

* a name from :data:`fastgd.optim.OPTIMIZERS` (``"sgd"`` -- alias ``"gd"`` --, ``"adam"``,
  ``"adamw"``, ``"adamax"``, ``"nadam"``, ``"radam"``, ``"adagrad"``, ``"adadelta"``,
  ``"rmsprop"``, ``"lion"``): the optimizer object of that name is built over the iterate
  with ``**hyperparameters`` (torch names and defaults: ``lr``, ``momentum``, ``betas``, ...)
  and stepped through the fused kernels (``backend=`` picks the backend);
* ``"momentum"``: the texts' (Keras-form) momentum ``v = mu*v - lr*g; x += v`` (the book
  form ``v = gamma*v + lr*g; x -= v`` gives the same iterates), hyperparameters ``lr``,
  ``mu`` (default 0.9);
* ``"nesterov_lookahead"``: the texts' Nesterov momentum with the gradient at the look-ahead
  point, ``v = mu*v - lr*grad(x + mu*v); x += v`` (the kernels' ``SGD(nesterov=True)`` is
  the equivalent form that needs only ``grad(x)``);
* an optimizer object (:class:`fastgd.optim.Optimizer`) over exactly one array: the descent
  runs on that array in place (``x0``, if given, is copied into it first) and the optimizer
  keeps its state and step count afterwards.

Compiled loop: when ``grad_fn`` is a numba-jitted function (``numba.njit``; e.g.
``fastgd.functions.beale.jit_grad``) and the rule is ``"sgd"`` (all its options),
``"adam"``, ``"adamw"`` (incl. ``amsgrad``), ``"momentum"`` or ``"nesterov_lookahead"``
given by name, the whole loop -- update, stop test, path recording -- runs as one numba
function.  It follows the NumPy reference kernels operation by operation (no fastmath, no
FMA contraction), so its iterates are bit-identical to the Python loop on
``backend="numpy"`` and equal to round-off on the other backends.  ``compiled=False``
forces the Python loop, ``compiled=True`` raises if the compiled loop cannot be used.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from . import _validate as V
from .optim import OPTIMIZERS, Optimizer

if TYPE_CHECKING:
    from ._typing import ArrayLike, Backend, Gradient, Hessian, Method, NDArray

__all__ = ["DescentResult", "gradient_descent", "newton", "METHODS", "COMPILED_METHODS"]

_TEXTBOOK = ("momentum", "nesterov_lookahead")
_ALIASES = {"gd": "sgd"}
METHODS = tuple(OPTIMIZERS) + _TEXTBOOK
COMPILED_METHODS = ("sgd", "adam", "adamw", "momentum", "nesterov_lookahead")


@dataclass
class DescentResult:
    """What a descent returns.

    x : the last iterate (a new array, ``x0``'s shape).
    path : every iterate, shape ``(n_iter + 1, *x0.shape)`` (``path[0]`` is ``x0``), or
        ``None`` with ``record_path=False``.
    n_iter : the number of updates made.
    converged : whether ``max(abs(grad)) < tol`` at ``x``.
    grad : the gradient at ``x``.
    method : the rule's name; compiled : whether the compiled loop ran.
    optimizer : the optimizer object that made the steps (``None`` for the textbook rules
        and the compiled loop).
    """
    x: NDArray[Any]
    path: Optional[NDArray[Any]]
    n_iter: int
    converged: bool
    grad: NDArray[Any]
    method: str = ""
    compiled: bool = False
    optimizer: Optional[Optimizer] = field(default=None, repr=False)


# ---------------------------------------------------------------------------------------
# argument handling

def _iterations(value):
    if type(value) is bool or isinstance(value, (float, np.floating)):
        raise TypeError("iterations must be an integer, got %s" % type(value).__name__)
    try:
        import operator
        v = operator.index(value)
    except TypeError:
        raise TypeError("iterations must be an integer, got %s" % type(value).__name__) from None
    if v < 0:
        raise ValueError("iterations must be >= 0, got %d" % v)
    return v


def _start(x0, name="x0"):
    """A fresh C-contiguous float copy of x0 (float32 kept, everything else -> float64)."""
    if isinstance(x0, np.ndarray) and x0.dtype in V.FLOAT_DTYPES:
        x = np.array(x0, dtype=x0.dtype, order="C", copy=True)
    else:
        try:
            arr = np.asarray(x0)
        except Exception:
            raise TypeError("%s must be a number or an array of numbers" % name) from None
        if arr.dtype.kind not in "biuf" or arr.dtype.kind == "b":
            raise TypeError("%s must be a number or an array of real numbers, got dtype %s" % (name, arr.dtype))
        x = np.array(arr, dtype=np.float64, order="C", copy=True)
    if x.size == 0:
        raise ValueError("%s must have at least one element" % name)
    return x


def _call_grad(grad_fn, arg, x):
    """grad_fn(arg) as a C-contiguous array of x's dtype and shape, not sharing memory with x."""
    g = np.asarray(grad_fn(arg))
    if g.shape != x.shape:
        raise ValueError("grad_fn returned shape %s for a point of shape %s" % (g.shape, x.shape))
    if g.dtype != x.dtype:
        if g.dtype.kind not in "biuf":
            raise TypeError("grad_fn must return real numbers, got dtype %s" % g.dtype)
        g = g.astype(x.dtype)
    elif not g.flags.c_contiguous or np.may_share_memory(g, x):
        g = np.array(g, order="C", copy=True)
    return g


def _small(g, tol):
    return bool(np.max(np.abs(g)) < tol)


def _is_jitted(fn):
    if "numba" not in sys.modules:
        return False
    try:
        from numba.core.registry import CPUDispatcher
    except ImportError:  # pragma: no cover
        return False
    return isinstance(fn, CPUDispatcher)


def _textbook_hyper(name, hyper):
    h = dict(hyper)
    if "momentum" in h:
        if "mu" in h:
            raise TypeError("give mu or momentum, not both")
        h["mu"] = h.pop("momentum")
    out = {"lr": V.nonneg("lr", h.pop("lr", 0.01)), "mu": V.nonneg("mu", h.pop("mu", 0.9))}
    if h:
        raise TypeError("optimizer %r got unexpected hyperparameter(s) %s (it takes lr, mu)"
                        % (name, ", ".join(sorted(h))))
    return out


# ---------------------------------------------------------------------------------------
# the driver

def gradient_descent(grad_fn: Gradient, x0: ArrayLike, optimizer: Method | Optimizer = "sgd", *, iterations: int,
                     tol: float = 1e-8, record_path: bool = True, backend: Backend | None = None,
                     compiled: bool | None = None, **hyperparameters: Any) -> DescentResult:
    """Descend from ``x0`` along ``-grad_fn`` with an update rule; returns a :class:`DescentResult`.

    grad_fn : callable ``grad_fn(x) -> array of x's shape`` (a numba-jitted function runs
        the compiled loop, see the module docstring).  It receives the current iterate as a
        read-only array (Python loop) and must not keep it.
    x0 : number or array; the start (copied; float32 stays float32, the rest is float64).
    optimizer : a rule name (``"sgd"``, ``"momentum"``, ``"nesterov_lookahead"``, ``"adam"``,
        ...) or an optimizer object over one array.
    iterations : the most updates to make.  tol : stop when ``max(abs(grad)) < tol``.
    record_path : keep every iterate in ``result.path`` (an array of ``(iterations + 1) * x0.size``
        elements is allocated up front; use ``False`` for very long runs).
    backend : the kernel backend for rules given by name (default: the current one).
    compiled : ``None`` (auto), ``True`` (require the compiled loop) or ``False``.
    **hyperparameters : for the rule given by name (``lr=``, ``momentum=``, ``betas=``, ``mu=``, ...).
    """
    if not callable(grad_fn):
        raise TypeError("grad_fn must be callable, got %s" % type(grad_fn).__name__)
    iterations = _iterations(iterations)
    tol = V.nonneg("tol", tol)
    record_path = V.flag("record_path", record_path)
    if compiled is not None:
        compiled = V.flag("compiled", compiled)
    jitted = _is_jitted(grad_fn)

    if isinstance(optimizer, Optimizer):
        if hyperparameters:
            raise TypeError("hyperparameters (%s) go to the optimizer's constructor when an optimizer object is given"
                            % ", ".join(sorted(hyperparameters)))
        if backend is not None:
            raise TypeError("backend goes to the optimizer's constructor when an optimizer object is given")
        if compiled:
            raise ValueError("compiled=True needs the rule given by name (%s), not an optimizer object"
                             % ", ".join(COMPILED_METHODS))
        params = optimizer.parameters()
        if len(params) != 1:
            raise ValueError("optimizer must hold exactly one parameter array, it holds %d" % len(params))
        x = params[0]
        if x0 is not None:
            start = _start(x0)
            if start.shape != x.shape:
                raise ValueError("x0 has shape %s but the optimizer's parameter has shape %s" % (start.shape, x.shape))
            x[...] = start
        return _python_loop(grad_fn, x, optimizer, type(optimizer).__name__.lower(), None, iterations, tol,
                            record_path)

    if not isinstance(optimizer, str):
        raise TypeError("optimizer must be a rule name or a fastgd.optim optimizer, got %s" % type(optimizer).__name__)
    name = _ALIASES.get(optimizer.lower(), optimizer.lower())
    if name not in METHODS:
        raise ValueError("optimizer must be one of %s (or an optimizer object), got %r"
                         % (", ".join(METHODS + tuple(_ALIASES)), optimizer))
    if x0 is None:
        raise TypeError("x0 is required")
    x = _start(x0)
    if name in _TEXTBOOK:
        if backend is not None:
            from .backends import backend_module
            backend_module(backend)  # validate the name; the textbook rules are plain NumPy
        hyper = _textbook_hyper(name, hyperparameters)
        opt = None
    else:
        try:
            opt = OPTIMIZERS[name]([x], backend=backend, **hyperparameters)
        except TypeError as exc:
            if "unexpected" in str(exc):
                raise TypeError("optimizer %r: %s" % (name, exc)) from None
            raise
        hyper = opt.hyper
    use_compiled = jitted and name in COMPILED_METHODS if compiled is None else compiled
    if use_compiled:
        if not jitted:
            raise ValueError("compiled=True needs a numba-jitted grad_fn (numba.njit)")
        if name not in COMPILED_METHODS:
            raise ValueError("the compiled loop runs %s, not %r" % (", ".join(COMPILED_METHODS), name))
        return _compiled_loop(grad_fn, x, name, hyper, iterations, tol, record_path)
    return _python_loop(grad_fn, x, opt, name, hyper, iterations, tol, record_path)


def _python_loop(grad_fn, x, opt, name, hyper, iterations, tol, record_path):
    xv = x.view()
    xv.flags.writeable = False
    g = _call_grad(grad_fn, xv, x)
    path = np.empty((iterations + 1,) + x.shape, dtype=x.dtype) if record_path else None
    if record_path:
        path[0] = x
    if name in _TEXTBOOK:
        lr, mu = hyper["lr"], hyper["mu"]
        v = np.zeros_like(x)
    k = 0
    converged = False
    while True:
        if _small(g, tol):
            converged = True
            break
        if k == iterations:
            break
        if opt is not None:
            opt.step([g])
        elif name == "momentum":
            v *= mu
            v -= lr * g
            x += v
        else:  # nesterov_lookahead
            gl = _call_grad(grad_fn, x + mu * v, x)
            v *= mu
            v -= lr * gl
            x += v
        k += 1
        if record_path:
            path[k] = x
        g = _call_grad(grad_fn, xv, x)
    if record_path:
        path = path[:k + 1]
        if 2 * (k + 1) < iterations + 1:
            path = path.copy()
    return DescentResult(x=x.copy(), path=path, n_iter=k, converged=converged, grad=g.copy(), method=name,
                         compiled=False, optimizer=opt)


# ---------------------------------------------------------------------------------------
# the compiled loop (numba; built on first use)

def _small_nb(g, tol):
    for i in range(g.size):
        if not abs(g[i]) < tol:
            return False
    return True


def _grad_nb(grad_fn, x, gbuf):
    """gbuf[:] = grad_fn(x), flattened and cast to x's dtype (as the Python loop does)."""
    r = np.asarray(grad_fn(x))
    if r.size != gbuf.size:
        raise ValueError("grad_fn returned an array of the wrong size")
    i = 0
    for v in r.flat:  # any layout, no temporary (np.ravel would copy)
        gbuf[i] = v
        i += 1
    return gbuf


def _loop_sgd(grad_fn, x, path, iterations, tol, record, sc, momentum_on, nesterov, has_wd):
    # sc (x's dtype): lr, momentum, 1 - dampening, weight_decay, sign
    lr = sc[0]
    mu = sc[1]
    omd = sc[2]
    wd = sc[3]
    sign = sc[4]
    xf = x.reshape(-1)
    buf = np.zeros_like(xf)
    if record:
        path[0, :] = xf
    g = _grad_nb(grad_fn, x, np.empty_like(xf))
    k = 0
    converged = False
    while True:
        if _small_nb(g, tol):
            converged = True
            break
        if k == iterations:
            break
        _sgd_update(xf, g, buf, sign, has_wd, wd, momentum_on, k == 0, nesterov, mu, omd, lr)
        k += 1
        if record:
            path[k, :] = xf
        g = _grad_nb(grad_fn, x, g)
    return k, converged, g


def _loop_momentum(grad_fn, x, path, iterations, tol, record, sc, lookahead):
    # sc: lr, mu
    lr = sc[0]
    mu = sc[1]
    xf = x.reshape(-1)
    n = xf.size
    v = np.zeros_like(xf)
    xl = np.empty_like(x)
    xlf = xl.reshape(-1)
    if record:
        path[0, :] = xf
    g = _grad_nb(grad_fn, x, np.empty_like(xf))
    k = 0
    converged = False
    while True:
        if _small_nb(g, tol):
            converged = True
            break
        if k == iterations:
            break
        if lookahead:
            for i in range(n):
                xlf[i] = xf[i] + mu * v[i]
            g = _grad_nb(grad_fn, xl, g)
        for i in range(n):
            v[i] = mu * v[i] - lr * g[i]
            xf[i] = xf[i] + v[i]
        k += 1
        if record:
            path[k, :] = xf
        g = _grad_nb(grad_fn, x, g)
    return k, converged, g


def _loop_adam(grad_fn, x, path, iterations, tol, record, sc, lr, beta1, beta2, amsgrad, has_wd, decoupled):
    # sc (x's dtype): beta1, 1-beta1, beta2, 1-beta2, eps, weight_decay, sign, 1 - lr*weight_decay;
    # lr, beta1, beta2 also as float64 for the per-step scalars (computed in float64 as in Python)
    b1 = sc[0]
    omb1 = sc[1]
    b2 = sc[2]
    omb2 = sc[3]
    eps = sc[4]
    wd = sc[5]
    sign = sc[6]
    decay = sc[7]
    xf = x.reshape(-1)
    m = np.zeros_like(xf)
    v = np.zeros_like(xf)
    vmax = np.zeros_like(xf) if amsgrad else xf[:0]
    s = np.empty(2, dtype=x.dtype)
    if record:
        path[0, :] = xf
    g = _grad_nb(grad_fn, x, np.empty_like(xf))
    k = 0
    converged = False
    while True:
        if _small_nb(g, tol):
            converged = True
            break
        if k == iterations:
            break
        t = float(k + 1)
        s[0] = lr / (1.0 - beta1 ** t)
        s[1] = 1.0 / math.sqrt(1.0 - beta2 ** t)
        step_size = s[0]
        inv_bc2_sqrt = s[1]
        if amsgrad:  # the kernel takes vmax=None without amsgrad (a literal None: numba prunes the branch)
            _adam_update(xf, g, m, v, vmax, sign, has_wd, decoupled, wd, decay, b1, omb1, b2, omb2, step_size,
                         inv_bc2_sqrt, eps)
        else:
            _adam_update(xf, g, m, v, None, sign, has_wd, decoupled, wd, decay, b1, omb1, b2, omb2, step_size,
                         inv_bc2_sqrt, eps)
        k += 1
        if record:
            path[k, :] = xf
        g = _grad_nb(grad_fn, x, g)
    return k, converged, g


_jit_cache: dict[str, Any] = {}


def _jit_loops():
    """Compile the loops above with numba (once per process; each loop is specialised again
    for every distinct grad_fn).  They are plain Python and call their helpers by module
    names; here they are rebuilt with those names bound to jitted functions.  SGD and Adam
    make their update with the numba kernel's own body (fastgd/_numba/rules.py, the one copy
    of the formula), inlined (a call into a separately compiled function costs ~40 ns a step,
    more than the whole update on a small problem).

    Why one loop per rule and not one shared loop taking the rule's step: a shared loop must
    receive each rule's state as a tuple and unpack it inside the loop, and numba then
    increfs/decrefs every state array at every step (measured: Adam on Beale 63 ms instead of
    ~36 ms for 300,000 steps); the loops below unpack their state once, before the loop."""
    if not _jit_cache:
        import numba
        from ._numba import rules as nr
        inline = numba.njit(inline="always")
        helpers = {"_small_nb": numba.njit(_small_nb), "_grad_nb": numba.njit(_grad_nb),
                   "_sgd_update": inline(nr._sgd_body), "_adam_update": inline(nr._adam_body)}
        for name, fn in (("sgd", _loop_sgd), ("momentum", _loop_momentum), ("adam", _loop_adam)):
            env = dict(fn.__globals__, **helpers)
            body = type(fn)(fn.__code__, env, fn.__name__, fn.__defaults__, fn.__closure__)
            _jit_cache[name] = numba.njit(body)
    return _jit_cache


def _compiled_loop(grad_fn, x, name, hyper, iterations, tol, record_path):
    # validate grad_fn's output once from Python (clear errors; also compiles grad_fn)
    _call_grad(grad_fn, x, x)
    loops = _jit_loops()
    path = np.empty((iterations + 1 if record_path else 1, x.size), dtype=x.dtype)
    if name == "sgd":
        h = hyper
        sc = np.array([h["lr"], h["momentum"], 1.0 - h["dampening"], h["weight_decay"],
                       -1.0 if h["maximize"] else 1.0], dtype=x.dtype)
        k, converged, g = loops["sgd"](grad_fn, x, path, iterations, tol, record_path, sc, h["momentum"] != 0,
                                       h["nesterov"], h["weight_decay"] != 0)
    elif name in _TEXTBOOK:
        sc = np.array([hyper["lr"], hyper["mu"]], dtype=x.dtype)
        k, converged, g = loops["momentum"](grad_fn, x, path, iterations, tol, record_path, sc,
                                            name == "nesterov_lookahead")
    else:  # adam / adamw
        h = hyper
        b1, b2 = h["betas"]
        wd = h["weight_decay"]
        sc = np.array([b1, 1.0 - b1, b2, 1.0 - b2, h["eps"], wd, -1.0 if h["maximize"] else 1.0,
                       1.0 - h["lr"] * wd], dtype=x.dtype)
        k, converged, g = loops["adam"](grad_fn, x, path, iterations, tol, record_path, sc, float(h["lr"]),
                                        float(b1), float(b2), h["amsgrad"], wd != 0, name == "adamw")
    out_path = path[:k + 1].reshape((k + 1,) + x.shape) if record_path else None
    if out_path is not None and 2 * (k + 1) < len(path):
        out_path = out_path.copy()
    return DescentResult(x=x.copy(), path=out_path, n_iter=int(k), converged=bool(converged),
                         grad=np.asarray(g).reshape(x.shape).copy(), method=name, compiled=True, optimizer=None)


# ---------------------------------------------------------------------------------------
# Newton's method

def newton(grad_fn: Gradient, hess_fn: Hessian, x0: ArrayLike, *, iterations: int = 100, tol: float = 1e-8,
           damping: float = 0.0, record_path: bool = True) -> DescentResult:
    """Newton's method: ``x <- x - d`` with ``(H(x) + damping*I) d = g(x)`` solved by
    ``numpy.linalg.solve`` at every step (no inverse is formed).

    The loop and the stop test are those of :func:`gradient_descent` (test before each
    update, ``result.grad`` at ``result.x``).  ``hess_fn(x)`` returns the ``(n, n)`` Hessian
    (``n = x.size``; for a scalar ``x`` a number).  ``damping > 0`` (Levenberg) keeps the
    step defined where ``H`` is singular or indefinite.  Works in float64.
    """
    if not callable(grad_fn):
        raise TypeError("grad_fn must be callable, got %s" % type(grad_fn).__name__)
    if not callable(hess_fn):
        raise TypeError("hess_fn must be callable, got %s" % type(hess_fn).__name__)
    iterations = _iterations(iterations)
    tol = V.nonneg("tol", tol)
    damping = V.nonneg("damping", damping)
    record_path = V.flag("record_path", record_path)
    x = _start(x0).astype(np.float64)
    n = x.size
    xv = x.view()
    xv.flags.writeable = False
    path = np.empty((iterations + 1,) + x.shape) if record_path else None
    if record_path:
        path[0] = x  # type: ignore[index]  # (an array with record_path)
    g = _call_grad(grad_fn, xv, x)
    eye = np.eye(n)
    k = 0
    converged = False
    while True:
        if _small(g, tol):
            converged = True
            break
        if k == iterations:
            break
        H = np.asarray(hess_fn(xv), dtype=np.float64)
        if H.size != n * n:
            raise ValueError("hess_fn returned shape %s for a point of %d element(s); expected (%d, %d)"
                             % (H.shape, n, n, n))
        H = H.reshape(n, n)
        if damping:
            H = H + damping * eye
        try:
            d = np.linalg.solve(H, g.reshape(n))
        except np.linalg.LinAlgError:
            raise np.linalg.LinAlgError("the Hessian is singular at iteration %d (x = %s); use damping > 0"
                                        % (k, x.tolist())) from None
        x -= d.reshape(x.shape)
        k += 1
        if record_path:
            path[k] = x  # type: ignore[index]
        g = _call_grad(grad_fn, xv, x)
    if record_path:
        path = path[:k + 1].copy() if 2 * (k + 1) < iterations + 1 else path[:k + 1]  # type: ignore[index]
    return DescentResult(x=x.copy(), path=path, n_iter=k, converged=converged, grad=g.copy(), method="newton",
                         compiled=False, optimizer=None)
