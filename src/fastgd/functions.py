"""The test functions of the gradient-descent texts, with analytic gradients and Hessians.

Every function is a :class:`TestFunction` object::

    >>> from fastgd import functions as F
    >>> F.beale.grad(np.array([3.0, 4.0]))           # analytic gradient at a point
    array([25625.25, 57519.  ])
    >>> F.beale.value(X, Y)                           # vectorised over a meshgrid (for contours)
    >>> F.beale(np.array([3.0, 0.5]))                 # value at a point: 0.0
    >>> F.beale.minima                                # known minima, one row per point
    >>> F.beale.jit_grad                              # the gradient compiled by numba (lazily)

Conventions
-----------
* A point ``p`` is an array whose first axis holds the coordinates: shape ``(2,)`` for the
  2-D functions, ``(n,)`` for the n-D ones (``sphere``, ``product``); the 1-D functions act
  elementwise on an array of any shape (a 0-d array for the textbook's scalar ``x``).
* ``value(*coords)`` takes one array per coordinate and broadcasts (``value(X, Y)`` on a
  meshgrid); ``f(p)`` is ``value(*p)``; ``losses(path)`` evaluates a whole path
  ``(n_points, *shape)`` at once.
* ``grad(p)`` returns an array of ``p``'s shape; ``hess(p)`` returns the ``(n, n)`` matrix
  (``n = p.size``), ready for :func:`fastgd.newton`.
* The gradient (and value/Hessian) bodies are plain NumPy/``math`` code that ``numba.njit``
  accepts (``x*x`` rather than ``x**2`` so the jitted and Python gradients are bit-identical);
  ``jit_grad``/``jit_value``/``jit_hess`` compile them on first use (numba required), and
  passing ``jit_grad`` to :func:`fastgd.gradient_descent` runs the whole loop compiled.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._typing import ArrayLike, NDArray

__all__ = ["TestFunction", "ALL", "get", "cubic", "quadratic", "quadratic2d", "canyon", "bowl", "beale",
           "two_gaussians", "sin_radial", "product", "sphere", "rosenbrock", "himmelblau"]


class TestFunction:
    """A test function: value, analytic gradient and Hessian, known minima, plot window.

    Attributes
    ----------
    name, formula : str
    dim : int or None
        1 (elementwise 1-D), 2, or None (any number of coordinates).
    minima : ndarray (k, dim)
        Known local minima, the global one first (empty for ``product``, which has none).
    global_minimum : ndarray or None
    saddles : ndarray (k, dim)
        Known saddle points (for ``product``: the origin).
    xlim, ylim : tuple
        A plotting window that shows the interesting part.
    start : ndarray
        The starting point the texts use (or a sensible one).
    """

    __test__ = False  # not a pytest class

    def __init__(self, name: str, formula: str, value: Callable[..., Any],
                 grad: Callable[[NDArray[np.float64]], NDArray[np.float64]],
                 hess: Callable[[NDArray[np.float64]], NDArray[np.float64]] | None, minima: ArrayLike, dim: int | None,
                 xlim: tuple[float, float], ylim: tuple[float, float] | None, start: ArrayLike, saddles: ArrayLike = (),
                 note: str = "") -> None:
        self.name = name
        self.formula = formula
        self._value = value
        self._grad = grad
        self._hess = hess
        self.dim = dim
        width = dim if dim else 2
        self.minima = np.array(minima, dtype=np.float64).reshape(-1, width)
        self.saddles = np.array(saddles, dtype=np.float64).reshape(-1, width)
        self.xlim = tuple(xlim)
        self.ylim = tuple(ylim) if ylim is not None else None
        self.start = np.array(start, dtype=np.float64)
        self.note = note
        self._jit: dict[str, Any] = {}

    def __repr__(self) -> str:
        return "<TestFunction %s: %s>" % (self.name, self.formula)

    @property
    def global_minimum(self) -> NDArray[np.float64] | None:
        return self.minima[0].copy() if len(self.minima) else None

    # ---- evaluation ---------------------------------------------------------------------
    def value(self, *coords: ArrayLike) -> Any:
        """The function on one array per coordinate (broadcast; ``value(X, Y)`` on a meshgrid)."""
        if self.dim is not None and len(coords) != self.dim:
            raise TypeError("%s.value takes %d coordinate array(s), got %d" % (self.name, self.dim, len(coords)))
        return self._value(*[np.asarray(c, dtype=np.float64) if not np.isscalar(c) else c for c in coords])

    def __call__(self, p: ArrayLike) -> Any:
        """The value at a point ``p`` (first axis = coordinates; elementwise for 1-D functions)."""
        p = np.asarray(p, dtype=np.float64)
        if self.dim == 1:
            return self._value(p)
        return self.value(*p)

    def grad(self, p: ArrayLike) -> NDArray[np.float64]:
        """The analytic gradient at ``p`` (same shape as ``p``)."""
        return self._grad(np.asarray(p, dtype=np.float64))

    def hess(self, p: ArrayLike) -> NDArray[np.float64]:
        """The analytic Hessian at ``p`` as an ``(n, n)`` matrix, ``n = p.size``."""
        if self._hess is None:
            raise NotImplementedError("%s has no Hessian" % self.name)
        return self._hess(np.asarray(p, dtype=np.float64))

    def losses(self, path: ArrayLike) -> NDArray[np.float64]:
        """The value at every point of a path of shape ``(n_points, *point_shape)``."""
        path = np.asarray(path, dtype=np.float64)
        if self.dim == 1:
            return self._value(path.reshape(len(path)))
        flat = path.reshape(len(path), -1)
        return self.value(*flat.T)

    # ---- numba --------------------------------------------------------------------------
    def _jitted(self, kind, fn):
        f = self._jit.get(kind)
        if f is None:
            if fn is None:
                raise NotImplementedError("%s has no %s" % (self.name, kind))
            try:
                import numba
            except ImportError:
                raise ImportError("jit_%s needs numba: pip install 'fastgd[numba]'" % kind) from None
            f = self._jit[kind] = numba.njit(fn, cache=True)
        return f

    @property
    def jit_grad(self) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
        """``grad`` compiled with ``numba.njit`` (compiled on first call; needs numba).
        Takes a float64 array point, returns the gradient array."""
        return self._jitted("grad", self._grad)

    @property
    def jit_value(self) -> Callable[..., Any]:
        """``value(*coords)`` compiled with ``numba.njit`` (scalars or arrays)."""
        return self._jitted("value", self._value)

    @property
    def jit_hess(self) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
        """``hess`` compiled with ``numba.njit``."""
        return self._jitted("hess", self._hess)


# =========================================================================================
# 1-D (elementwise)

def _cubic_value(x):
    return x * x * x - 3.0 * x * x - 9.0 * x + 2.0


def _cubic_grad(x):
    return 3.0 * x * x - 6.0 * x - 9.0


def _cubic_hess(x):
    return np.diag((6.0 * x - 6.0).ravel())


def _quadratic_value(x):
    return 6.0 * x * x - 12.0 * x + 3.0


def _quadratic_grad(x):
    return 12.0 * x - 12.0


def _quadratic_hess(x):
    return np.diag((12.0 + 0.0 * x).ravel())


# =========================================================================================
# 2-D quadratics

def _quadratic2d_value(x, y):
    return 6.0 * x * x + 9.0 * y * y - 12.0 * x - 14.0 * y + 3.0


def _quadratic2d_grad(p):
    return np.array([12.0 * p[0] - 12.0, 18.0 * p[1] - 14.0])


def _quadratic2d_hess(p):
    return np.array([[12.0, 0.0], [0.0, 18.0]])


def _canyon_value(x, y):
    return 6.0 * x * x + 40.0 * y * y - 12.0 * x - 30.0 * y + 3.0


def _canyon_grad(p):
    return np.array([12.0 * p[0] - 12.0, 80.0 * p[1] - 30.0])


def _canyon_hess(p):
    return np.array([[12.0, 0.0], [0.0, 80.0]])


def _bowl_value(x, y):
    return x * x / 16.0 + 9.0 * y * y


def _bowl_grad(p):
    return np.array([p[0] / 8.0, 18.0 * p[1]])


def _bowl_hess(p):
    return np.array([[0.125, 0.0], [0.0, 18.0]])


# =========================================================================================
# Beale

def _beale_value(x, y):
    a = 1.5 - x + x * y
    b = 2.25 - x + x * y * y
    c = 2.625 - x + x * y * y * y
    return a * a + b * b + c * c


def _beale_grad(p):
    x = p[0]
    y = p[1]
    y2 = y * y
    y3 = y2 * y
    a = 1.5 - x + x * y
    b = 2.25 - x + x * y2
    c = 2.625 - x + x * y3
    gx = 2.0 * a * (y - 1.0) + 2.0 * b * (y2 - 1.0) + 2.0 * c * (y3 - 1.0)
    gy = 2.0 * a * x + 4.0 * b * x * y + 6.0 * c * x * y2
    return np.array([gx, gy])


def _beale_hess(p):
    x = p[0]
    y = p[1]
    y2 = y * y
    y3 = y2 * y
    a = 1.5 - x + x * y
    b = 2.25 - x + x * y2
    c = 2.625 - x + x * y3
    ax, ay = y - 1.0, x
    bx, by = y2 - 1.0, 2.0 * x * y
    cx, cy = y3 - 1.0, 3.0 * x * y2
    hxx = 2.0 * (ax * ax + bx * bx + cx * cx)
    hxy = 2.0 * (ax * ay + a + bx * by + b * 2.0 * y + cx * cy + c * 3.0 * y2)
    hyy = 2.0 * (ay * ay + by * by + b * 2.0 * x + cy * cy + c * 6.0 * x * y)
    return np.array([[hxx, hxy], [hxy, hyy]])


# =========================================================================================
# Two inverted Gaussians

def _two_gaussians_value(x, y):
    e1 = np.exp(-((x + 1.0) * (x + 1.0) + (y - 1.0) * (y - 1.0)) / 2.0)
    e2 = np.exp(-((x - 1.0) * (x - 1.0) + (y + 1.0) * (y + 1.0)) / 2.0)
    return -2.0 * e1 - e2


def _two_gaussians_grad(p):
    x = p[0]
    y = p[1]
    e1 = math.exp(-((x + 1.0) * (x + 1.0) + (y - 1.0) * (y - 1.0)) / 2.0)
    e2 = math.exp(-((x - 1.0) * (x - 1.0) + (y + 1.0) * (y + 1.0)) / 2.0)
    return np.array([2.0 * (x + 1.0) * e1 + (x - 1.0) * e2, 2.0 * (y - 1.0) * e1 + (y + 1.0) * e2])


def _two_gaussians_hess(p):
    x = p[0]
    y = p[1]
    e1 = math.exp(-((x + 1.0) * (x + 1.0) + (y - 1.0) * (y - 1.0)) / 2.0)
    e2 = math.exp(-((x - 1.0) * (x - 1.0) + (y + 1.0) * (y + 1.0)) / 2.0)
    hxx = 2.0 * e1 * (1.0 - (x + 1.0) * (x + 1.0)) + e2 * (1.0 - (x - 1.0) * (x - 1.0))
    hyy = 2.0 * e1 * (1.0 - (y - 1.0) * (y - 1.0)) + e2 * (1.0 - (y + 1.0) * (y + 1.0))
    hxy = -2.0 * (x + 1.0) * (y - 1.0) * e1 - (x - 1.0) * (y + 1.0) * e2
    return np.array([[hxx, hxy], [hxy, hyy]])


# =========================================================================================
# sin(x^2 + y^2)

def _sin_radial_value(x, y):
    return np.sin(x * x + y * y)


def _sin_radial_grad(p):
    x = p[0]
    y = p[1]
    c = math.cos(x * x + y * y)
    return np.array([2.0 * x * c, 2.0 * y * c])


def _sin_radial_hess(p):
    x = p[0]
    y = p[1]
    r2 = x * x + y * y
    c = math.cos(r2)
    s = math.sin(r2)
    return np.array([[2.0 * c - 4.0 * x * x * s, -4.0 * x * y * s], [-4.0 * x * y * s, 2.0 * c - 4.0 * y * y * s]])


# =========================================================================================
# n-D: product of the coordinates, sum of squares

def _product_value(*coords):
    out = coords[0]
    for c in coords[1:]:
        out = out * c
    return out


def _product_grad(p):
    # prefix/suffix products: exact zeros, no division
    n = p.size
    g = np.empty(n)
    acc = 1.0
    for i in range(n):
        g[i] = acc
        acc = acc * p[i]
    acc = 1.0
    for i in range(n - 1, -1, -1):
        g[i] = g[i] * acc
        acc = acc * p[i]
    return g


def _product_hess(p):
    n = p.size
    h = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            acc = 1.0
            for k in range(n):
                if k != i and k != j:
                    acc = acc * p[k]
            h[i, j] = acc
            h[j, i] = acc
    return h


def _sphere_value(*coords):
    out = coords[0] * coords[0]
    for c in coords[1:]:
        out = out + c * c
    return out


def _sphere_grad(p):
    return 2.0 * p


def _sphere_hess(p):
    return 2.0 * np.eye(p.size)


# =========================================================================================
# Rosenbrock, Himmelblau

def _rosenbrock_value(x, y):
    return (1.0 - x) * (1.0 - x) + 100.0 * (y - x * x) * (y - x * x)


def _rosenbrock_grad(p):
    x = p[0]
    y = p[1]
    return np.array([-2.0 * (1.0 - x) - 400.0 * x * (y - x * x), 200.0 * (y - x * x)])


def _rosenbrock_hess(p):
    x = p[0]
    y = p[1]
    return np.array([[2.0 - 400.0 * y + 1200.0 * x * x, -400.0 * x], [-400.0 * x, 200.0]])


def _himmelblau_value(x, y):
    u = x * x + y - 11.0
    w = x + y * y - 7.0
    return u * u + w * w


def _himmelblau_grad(p):
    x = p[0]
    y = p[1]
    u = x * x + y - 11.0
    w = x + y * y - 7.0
    return np.array([4.0 * x * u + 2.0 * w, 2.0 * u + 4.0 * y * w])


def _himmelblau_hess(p):
    x = p[0]
    y = p[1]
    u = x * x + y - 11.0
    w = x + y * y - 7.0
    hxy = 4.0 * x + 4.0 * y
    return np.array([[4.0 * u + 8.0 * x * x + 2.0, hxy], [hxy, 2.0 + 4.0 * w + 8.0 * y * y]])


# =========================================================================================
# the catalogue (minima refined with Newton's method to full float64 precision and
# checked in tests/test_functions.py: gradient ~ 0 and Hessian positive definite)

cubic = TestFunction("cubic", "x^3 - 3x^2 - 9x + 2", _cubic_value, _cubic_grad, _cubic_hess,
                     [[3.0]], 1, (-3.0, 5.0), None, [0.0], note="local minimum at 3 (unbounded below)")
quadratic = TestFunction("quadratic", "6x^2 - 12x + 3", _quadratic_value, _quadratic_grad, _quadratic_hess,
                         [[1.0]], 1, (-1.5, 3.0), None, [-0.9])
quadratic2d = TestFunction("quadratic2d", "6x^2 + 9y^2 - 12x - 14y + 3", _quadratic2d_value, _quadratic2d_grad,
                           _quadratic2d_hess, [[1.0, 7.0 / 9.0]], 2, (-1.0, 3.0), (-1.0, 2.5), [-0.5, 2.0])
canyon = TestFunction("canyon", "6x^2 + 40y^2 - 12x - 30y + 3", _canyon_value, _canyon_grad, _canyon_hess,
                      [[1.0, 0.375]], 2, (-1.0, 3.0), (-0.5, 1.25), [-0.5, 1.0], note="a narrow canyon")
bowl = TestFunction("bowl", "x^2/16 + 9y^2", _bowl_value, _bowl_grad, _bowl_hess, [[0.0, 0.0]], 2,
                    (-12.0, 12.0), (-2.0, 2.0), [-10.0, 1.5])
beale = TestFunction("beale", "(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2", _beale_value,
                     _beale_grad, _beale_hess, [[3.0, 0.5]], 2, (-0.5, 4.5), (-1.5, 4.5), [3.0, 4.0])
two_gaussians = TestFunction(
    "two_gaussians", "-2 exp(-((x+1)^2 + (y-1)^2)/2) - exp(-((x-1)^2 + (y+1)^2)/2)",
    _two_gaussians_value, _two_gaussians_grad, _two_gaussians_hess,
    [[-0.9803836355776621, 0.9803836355776621], [0.8939741041006756, -0.8939741041006756]], 2,
    (-3.0, 3.0), (-3.0, 3.0), [1.5, 1.5], saddles=[[0.36407403855173487, -0.36407403855173487]],
    note="global minimum near (-1, 1), local one near (1, -1)")
sin_radial = TestFunction(
    "sin_radial", "sin(x^2 + y^2)", _sin_radial_value, _sin_radial_grad, _sin_radial_hess,
    [[math.sqrt(1.5 * math.pi), 0.0], [0.0, 0.0]], 2, (-3.0, 3.0), (-3.0, 3.0), [0.5, 1.0],
    note="global minima (value -1) on the circles x^2 + y^2 = 3pi/2 + 2k pi (one point listed); "
         "local minimum (value 0) at the origin")
product = TestFunction("product", "x0 * x1 * ... * xn", _product_value, _product_grad, _product_hess,
                       np.empty((0, 2)), None, (-2.0, 2.0), (-2.0, 2.0), [1.0, 0.5], saddles=[[0.0, 0.0]],
                       note="no minimum; a saddle at the origin")
sphere = TestFunction("sphere", "x0^2 + x1^2 + ...", _sphere_value, _sphere_grad, _sphere_hess, [[0.0, 0.0]],
                      None, (-2.0, 2.0), (-2.0, 2.0), [1.5, -1.0])
rosenbrock = TestFunction("rosenbrock", "(1 - x)^2 + 100 (y - x^2)^2", _rosenbrock_value, _rosenbrock_grad,
                          _rosenbrock_hess, [[1.0, 1.0]], 2, (-2.0, 2.0), (-1.0, 3.0), [-1.2, 1.0])
himmelblau = TestFunction(
    "himmelblau", "(x^2 + y - 11)^2 + (x + y^2 - 7)^2", _himmelblau_value, _himmelblau_grad, _himmelblau_hess,
    [[3.0, 2.0], [-2.805118086952745, 3.131312518250573], [-3.779310253377747, -3.283185991286169],
     [3.5844283403304917, -1.8481265269644034]], 2, (-5.0, 5.0), (-5.0, 5.0), [0.0, 0.0],
    note="four global minima, value 0")

ALL = {f.name: f for f in (cubic, quadratic, quadratic2d, canyon, bowl, beale, two_gaussians, sin_radial, product,
                           sphere, rosenbrock, himmelblau)}


def get(name: str) -> TestFunction:
    """The test function called ``name`` (see ``ALL``)."""
    try:
        return ALL[name]
    except KeyError:
        raise ValueError("name must be one of %s, got %r" % (sorted(ALL), name)) from None
