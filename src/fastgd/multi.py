"""Multi-tensor steps: one call steps a whole list of parameter arrays.

Every function here is the list form of the function of the same name in :mod:`fastgd.steps`
(same formula, same keywords and defaults, same state order): where ``fastgd.adam_step``
takes ``param, grad, exp_avg, exp_avg_sq`` this takes ``params, grads, exp_avgs,
exp_avg_sqs``, lists of arrays, tensor ``t`` being ``params[t]`` with ``grads[t]``,
``exp_avgs[t]``, ...  Optional state lists are keywords named in the plural
(``max_exp_avg_sqs``, ``momentum_buffers``, ``grad_avgs``).  The result for every tensor is
bit-identical to the single-tensor function's; the hyperparameters and ``step`` are shared.

    >>> import numpy as np, fastgd.multi
    >>> ps = [np.ones(3, np.float32), np.ones((2, 2), np.float32)]
    >>> gs = [p.copy() for p in ps]
    >>> ms = [np.zeros_like(p) for p in ps]; vs = [np.zeros_like(p) for p in ps]
    >>> _ = fastgd.multi.adam_step(ps, gs, ms, vs, step=1, lr=0.1)   # one compiled call
    >>> ps[0]
    array([0.9, 0.9, 0.9], dtype=float32)

Validation: every list must have ``len(params)`` arrays; every tensor's arrays are checked as
the single-tensor function checks them (messages name e.g. ``exp_avgs[3]``), and no array
written by the call may overlap any other array of the call.  Tensors may differ in shape
and dtype (one compiled call per dtype); zero-size tensors are skipped; an empty list is a
no-op.  A call that raises has changed nothing.  Returns ``params``.

Backends:
  * ``cython``: one call per dtype.  The data pointers are gathered once, the work is cut
    into cache-line-aligned chunks (at most 32,768 elements, never crossing a tensor) and
    one OpenMP ``prange`` runs the rule's own loop over every chunk, on
    ``fastgd.get_num_threads()`` threads when the total is at least
    ``fastgd.serial_cutoff()`` elements.  Stepping 200 tensors of 4,096 elements then costs
    about what one tensor of 819,200 does.
  * ``numba`` and ``numpy``: a Python loop over the tensors calling the backend's
    single-tensor kernel (validation is still done once, up front).
"""
import math

import numpy as np

from . import _validate as V
from .backends import backend_module
from . import steps as S

__all__ = ["flat_buffer", "sgd_step", "adam_step", "adamw_step", "adamax_step", "nadam_step", "radam_step",
           "adagrad_step", "adadelta_step", "rmsprop_step", "lion_step"]

try:  # the C fast accept of a whole call (Cython backend's module); Python checks otherwise
    from ._cython import multi_arrays_ok as _multi_ok
except ImportError:  # pragma: no cover - compiled part missing
    _multi_ok = None


# ---------------------------------------------------------------------------------------
# one buffer for many tensors

_LINE = 64  # bytes


def flat_buffer(shapes, dtype=np.float32):
    """One zeroed, contiguous buffer and a view into it for each shape: ``(buffer, views)``.

    Each view is a C-contiguous array of its shape starting on a 64-byte (cache-line)
    boundary; the gaps between views (fewer than 64 bytes each) stay zero.  Keep parameters,
    gradients and every state list of a model in such buffers (one per list) and a step
    touches a few large blocks of memory instead of many small allocations: the multi-tensor
    functions here step the views as any list of arrays, and the single-tensor functions can
    step whole buffers at once (the parameter buffer's zero gaps stay zero under every rule;
    a state buffer's gaps may not, e.g. AdaMax's ``exp_inf`` becomes ``eps`` there).

        >>> import fastgd.multi
        >>> buf, (w, b) = fastgd.multi.flat_buffer([(3, 2), (2,)])
        >>> w.shape, b.shape, buf.size
        ((3, 2), (2,), 32)
    """
    dtype = np.dtype(dtype)
    if dtype not in V.FLOAT_DTYPES:
        raise TypeError("dtype must be float32 or float64, got %s" % dtype)
    if isinstance(shapes, (str, bytes)) or not hasattr(shapes, "__iter__"):
        raise TypeError("shapes must be a list of shapes, got %s" % type(shapes).__name__)
    norm = []
    for k, shape in enumerate(shapes):
        if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
            shape = (shape,)
        if isinstance(shape, (str, bytes)) or not isinstance(shape, (tuple, list)):
            raise TypeError("shapes[%d] must be a tuple of ints, got %r" % (k, shape))
        dims = []
        for d in shape:
            if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
                raise TypeError("shapes[%d] must be a tuple of ints, got %r" % (k, shape))
            dims.append(int(d))
        if any(d < 0 for d in dims):
            raise ValueError("shapes[%d] has a negative dimension: %r" % (k, shape))
        norm.append(tuple(dims))
    per_line = _LINE // dtype.itemsize
    sizes = [math.prod(shape) for shape in norm]  # Python ints: no wrap-around
    total_bytes = sum(-(-size // per_line) * _LINE for size in sizes) + _LINE
    if total_bytes > np.iinfo(np.intp).max:
        raise ValueError("shapes need %d bytes, more than an array can hold" % total_bytes)
    offsets, total = [], 0
    for size in sizes:
        offsets.append(total)
        total += -(-size // per_line) * per_line  # round up to whole cache lines
    raw = np.zeros(total + per_line, dtype)  # room to move the start to a line boundary
    start = (-raw.ctypes.data % _LINE) // dtype.itemsize
    buffer = raw[start:start + total]
    views = [buffer[o:o + size].reshape(shape) for o, size, shape in zip(offsets, sizes, norm)]
    return buffer, views


# ---------------------------------------------------------------------------------------
# validation

class _Names:
    """``names[k]`` of tensor ``t`` -> ``"exp_avgs[t]"``; formatted only when a check fails."""
    __slots__ = ("names", "t")

    def __init__(self, names, t):
        self.names, self.t = names, t

    def __getitem__(self, k):
        return "%s[%d]" % (self.names[k], self.t)


def _as_lists(names, lists, optional=0):
    """New lists (of the same arrays), all of len(params); None stays None where
    ``optional`` allows it (bit k for ``lists[k]``).  Always copies: what is checked and what
    the kernel reads are then the same objects, whatever the caller's code (another thread, a
    gc callback) does to its own lists in between."""
    out = []
    n = None
    for k, (name, lst) in enumerate(zip(names, lists)):
        if lst is None:
            if not optional >> k & 1:
                raise TypeError("%s is required, got None" % name)
            out.append(None)
            continue
        if type(lst) is not list and not isinstance(lst, (list, tuple)):
            raise TypeError("%s must be a list of numpy arrays, got %s" % (name, type(lst).__name__))
        lst = list(lst)
        if n is None:
            n = len(lst)
        elif len(lst) != n:
            raise ValueError("%s has %d arrays but %s has %d" % (name, len(lst), names[0], n))
        out.append(lst)
    return tuple(out)


def _overlaps(names, lists, n_readonly):
    """Raise ValueError naming two arrays of different tensors that overlap in memory where
    at least one of them is written (within one tensor, ``V.arrays`` has checked already)."""
    ranges = []
    params = lists[0]
    for k, lst in enumerate(lists):
        if lst is None:
            continue
        written = k == 0 or k > n_readonly
        for t, a in enumerate(lst):
            if params[t].size == 0:
                continue
            lo = a.__array_interface__["data"][0]
            ranges.append((lo, lo + a.nbytes, written, k, t))
    ranges.sort(key=lambda r: r[0])
    hi_any = hi_w = None  # (end, k, t) of the earlier range reaching furthest
    for lo, hi, written, k, t in ranges:
        other = hi_any if written else hi_w
        if other is not None and lo < other[0]:
            raise ValueError("%s[%d] and %s[%d] overlap in memory; every array must be a separate buffer"
                             % (names[other[1]], other[2], names[k], t))
        if hi_any is None or hi > hi_any[0]:
            hi_any = (hi, k, t)
        if written and (hi_w is None or hi > hi_w[0]):
            hi_w = (hi, k, t)


def _check_arrays(names, lists, n_readonly=1, optional=0):
    """Validate a call's lists (``lists[0]``: params; the ``n_readonly`` lists after it are
    only read; ``lists[k]`` may be None where bit k of ``optional`` is set, and no list may
    hold None).  Returns ``(lists, mixed)``: the lists as Python lists and whether the params
    mix float32 and float64."""
    lists = _as_lists(names, lists, optional)
    if _multi_ok is not None:
        ok = _multi_ok(lists, n_readonly, optional)
        if ok:
            return lists, ok == 2
    params = lists[0]
    dtypes = set()
    # a list that is None is optional state this call does not use (None for every tensor);
    # None inside a list is an error wherever it is
    absent = sum(1 << k for k, lst in enumerate(lists) if lst is None)
    for t in range(len(params)):
        dtypes.add(V.arrays(_Names(names, t), tuple(None if lst is None else lst[t] for lst in lists), n_readonly,
                            absent))
    _overlaps(names, lists, n_readonly)
    return lists, len(dtypes) > 1


# ---------------------------------------------------------------------------------------
# running

_kernels = {}


def _kernel(mod, rule):
    """The backend's multi-tensor kernel ``<rule>_multi``, or a loop over its single-tensor one."""
    key = (id(mod), rule)
    f = _kernels.get(key)
    if f is None:
        f = getattr(mod, rule + "_multi", None)
        if f is None:
            f = _loop(getattr(mod, rule))
        _kernels[key] = f
    return f


def _loop(single):
    def run(*lists, **kw):
        params = lists[0]
        for t in range(len(params)):
            if params[t].size:
                single(*[None if lst is None else lst[t] for lst in lists], **kw)
        return params
    return run


def _run(rule, impl, lists, mixed, kw):
    f = _kernel(impl, rule)
    params = lists[0]
    if not params:
        return params
    if not mixed:
        f(*lists, **kw)
        return params
    groups = {}
    for t, p in enumerate(params):
        groups.setdefault(p.dtype.char, []).append(t)
    for idx in groups.values():
        f(*[None if lst is None else [lst[t] for t in idx] for lst in lists], **kw)
    return params


# ---------------------------------------------------------------------------------------
# the rules: hyperparameters checked by fastgd.steps' per-rule checks, then the arrays, then
# the kernel

def _go(rule, backend, lists, kw):
    """Check the lists (params, grads, every state list, optional ones included when given),
    then run on those the call uses (``Rule.arrays``).  The backend is resolved first, so that
    no code of the caller's runs between the checks and the kernel.  Returns ``params``."""
    impl = backend_module(backend)
    checked, mixed = _check_arrays(rule.multi_names, lists, 1, rule.optional)
    checked = rule.arrays(kw, checked, rule.multi_names)
    _run(rule.kernel, impl, checked, mixed, kw)
    return lists[0]


def sgd_step(params, grads, momentum_buffers=None, *, lr, momentum=0.0, dampening=0.0, nesterov=False,
             weight_decay=0.0, maximize=False, step=None, backend=None):
    """:func:`fastgd.sgd_step` on lists of arrays (``momentum_buffers`` needed when
    ``momentum != 0``; ``step=1`` makes every buffer a copy of its first gradient)."""
    kw = S._SGD.check(step, lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                      weight_decay=weight_decay, maximize=maximize)
    return _go(S._SGD, backend, (params, grads, momentum_buffers), kw)


def _adam(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay, amsgrad,
          max_exp_avg_sqs, maximize, decoupled, backend):
    if not V.adam_scalars_ok(step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize):
        step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize = S._adam_hyper(
            step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize)
    return _go(S._ADAM, backend, (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs),
               dict(step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                    amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=decoupled))


def adam_step(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0, amsgrad=False, max_exp_avg_sqs=None, maximize=False, backend=None):
    """:func:`fastgd.adam_step` on lists of arrays (``max_exp_avg_sqs`` with ``amsgrad=True``)."""
    return _adam(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay, amsgrad,
                 max_exp_avg_sqs, maximize, False, backend)


def adamw_step(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
               weight_decay=1e-2, amsgrad=False, max_exp_avg_sqs=None, maximize=False, backend=None):
    """:func:`fastgd.adamw_step` on lists of arrays."""
    return _adam(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay, amsgrad,
                 max_exp_avg_sqs, maximize, True, backend)


def adamax_step(params, grads, exp_avgs, exp_infs, *, step, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                weight_decay=0.0, maximize=False, backend=None):
    """:func:`fastgd.adamax_step` on lists of arrays."""
    kw = S._ADAMAX.check(step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                         maximize=maximize)
    return _go(S._ADAMAX, backend, (params, grads, exp_avgs, exp_infs), kw)


def nadam_step(params, grads, exp_avgs, exp_avg_sqs, mu_product=None, *, step, lr=2e-3, beta1=0.9, beta2=0.999,
               eps=1e-8, weight_decay=0.0, momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False,
               backend=None):
    """:func:`fastgd.nadam_step` on lists of arrays.  ``mu_product`` (a float64 array of one
    element, or None to recompute it from ``step``) is shared by the whole list: it holds
    :math:`P_{t-1}` on entry and is updated once, in place, to :math:`P_t`."""
    kw = S._NADAM.check(step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                        maximize=maximize)
    lists = _as_lists(S._NADAM.multi_names, (params, grads, exp_avgs, exp_avg_sqs))
    kw["mu_product"] = S._mu_product_before(mu_product, kw, lambda k, t: "%s[%d]" % (S._NADAM.multi_names[k], t),
                                            lists)
    _go(S._NADAM, backend, lists, kw)
    S._mu_product_after(mu_product, kw)
    return params


def radam_step(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
               weight_decay=0.0, decoupled_weight_decay=False, maximize=False, backend=None):
    """:func:`fastgd.radam_step` on lists of arrays."""
    kw = S._RADAM.check(step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
    return _go(S._RADAM, backend, (params, grads, exp_avgs, exp_avg_sqs), kw)


def adagrad_step(params, grads, state_sums, *, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
                 maximize=False, backend=None):
    """:func:`fastgd.adagrad_step` on lists of arrays."""
    kw = S._ADAGRAD.check(step, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps, maximize=maximize)
    return _go(S._ADAGRAD, backend, (params, grads, state_sums), kw)


def adadelta_step(params, grads, square_avgs, acc_deltas, *, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0,
                  maximize=False, backend=None):
    """:func:`fastgd.adadelta_step` on lists of arrays."""
    kw = S._ADADELTA.check(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
    return _go(S._ADADELTA, backend, (params, grads, square_avgs, acc_deltas), kw)


def rmsprop_step(params, grads, square_avgs, *, momentum_buffers=None, grad_avgs=None, lr=1e-2, alpha=0.99,
                 eps=1e-8, momentum=0.0, centered=False, weight_decay=0.0, maximize=False, backend=None):
    """:func:`fastgd.rmsprop_step` on lists of arrays (``momentum_buffers`` when
    ``momentum > 0``, ``grad_avgs`` when ``centered=True``)."""
    kw = S._RMSPROP.check(lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=centered,
                          weight_decay=weight_decay, maximize=maximize)
    return _go(S._RMSPROP, backend, (params, grads, square_avgs, momentum_buffers, grad_avgs), kw)


def lion_step(params, grads, exp_avgs, *, lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0, maximize=False,
              backend=None):
    """:func:`fastgd.lion_step` on lists of arrays."""
    kw = S._LION.check(lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay, maximize=maximize)
    return _go(S._LION, backend, (params, grads, exp_avgs), kw)
