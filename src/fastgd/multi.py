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

Half precision and the fused extras: params and grads may be float16 or bfloat16 (state in
float32 or the param's dtype), and every function takes ``grad_scale`` (a real > 0, or a
float32 array of one element: every gradient is divided by it as it is loaded), ``found_inf``
(a float32 array of one element: when nonzero the call writes nothing), ``max_norm`` (clip by
the global norm of all the call's unscaled gradients, :func:`global_norm`, folding the factor
``min(1, max_norm / (norm + 1e-6))`` into the step) and ``master_params`` (float32 master copies
of float16/bfloat16 params: the step runs on them and stores their rounding into params; None
for the float32/float64 tensors of a mixed call).  See :mod:`fastgd.steps`.

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
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _validate as V
from .backends import backend_module
from . import steps as S
from .reference import half as _half

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._typing import ArrayList, Backend, DTypeLike, FloatArray, NDArray, OptArrayList, Scale

__all__ = ["flat_buffer", "global_norm", "unscale_and_check", "sgd_step", "adam_step",
           "adamw_step", "adamax_step", "nadam_step", "radam_step",
           "adagrad_step", "adadelta_step", "rmsprop_step", "lion_step"]

try:  # the C fast accept of a whole call (Cython backend's module); Python checks otherwise
    from ._cython import multi_arrays_ok as _multi_ok
except ImportError:  # pragma: no cover - compiled part missing
    _multi_ok = None  # type: ignore[assignment]


# ---------------------------------------------------------------------------------------
# one buffer for many tensors

_LINE = 64  # bytes


def flat_buffer(shapes: Iterable[int | tuple[int, ...] | list[int]], dtype: DTypeLike = np.float32
                ) -> tuple[FloatArray, list[FloatArray]]:
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
            if a is None or params[t].size == 0:  # (None: a float32 tensor's master in a mixed call)
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
        arrs = tuple(None if lst is None else lst[t] for lst in lists)
        V.arrays(_Names(names, t), arrs, n_readonly, absent)
        dtypes.add(tuple(a.dtype for a in arrs if a is not None))
    _overlaps(names, lists, n_readonly)
    return lists, len(dtypes) > 1 or (len(dtypes) == 1 and any(V.is_half(d) for d in next(iter(dtypes))))


# ---------------------------------------------------------------------------------------
# running

_kernels: dict[Any, Any] = {}


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


def _groups(lists):
    """Tensor indices grouped by their arrays' dtypes (one kernel call each)."""
    # keyed by type numbers (the arrays are checked: native byte order, and a type number
    # names one dtype in a process); hashing dtype objects cost ~5 us per tensor for bfloat16
    groups = {}
    present = [lst for lst in lists if lst is not None]
    for t in range(len(lists[0])):
        groups.setdefault(tuple([lst[t].dtype.num for lst in present]), []).append(t)
    return groups.values()


def _run(rule, impl, lists, mixed, kw, ext=None):
    """Run kernel ``rule`` of backend ``impl`` on the checked ``lists``: one call per dtype
    combination when ``mixed`` (which also means: some arrays are half precision) or when
    ``ext`` = (grad_scale, clip, masters, fold) asks for the fused extras."""
    params = lists[0]
    if not params:
        return params
    if not mixed and ext is None:
        _kernel(impl, rule)(*lists, **kw)
        return params
    gs, clip, masters, fold = (None, None, None, False) if ext is None else ext
    groups = _groups(lists)
    for idx in groups:
        sub = lists if len(groups) == 1 else [None if lst is None else [lst[t] for t in idx] for lst in lists]
        sub_m = None if masters is None or masters[idx[0]] is None else [masters[t] for t in idx]
        _staged_call(impl, rule, sub, kw, gs, clip, sub_m, fold)
    return params


def _staged_call(impl, kernel, lists, kw, grad_scale=None, clip=None, masters=None, fold=False):
    """The kernel-level call with the extras (arrays of one dtype combination, validated):
    the backend's fused ``<kernel>_multi`` where it takes them (``STAGED`` backends: Cython),
    else :func:`fastgd.reference.half.staged` around the backend's compute-dtype kernel.
    Plain float32/float64 lists without extras go to the ordinary kernel.  ``fold``: no
    nonzero gradient value is below ``grad_scale * 2**-126`` in magnitude (the norm pass
    checked), so a power-of-two scale and a clip may fold into one exact factor."""
    params = lists[0]
    if not params:
        return params
    if grad_scale is None and clip is None and masters is None and not V.is_half(params[0].dtype):
        return _kernel(impl, kernel)(*lists, **kw)
    if getattr(impl, "STAGED", False):
        return getattr(impl, kernel + "_multi")(*lists, grad_scale=grad_scale, clip=clip, masters=masters,
                                                exact_fold=fold, **kw)
    return _half.staged(getattr(impl, kernel), lists, kw, grad_scale, clip, masters)


class _Clip(float):
    """``max_norm=`` given as the final clip factor rather than a threshold: fastgd.optim
    computes one norm over all the calls of a step (every group and dtype) and passes the
    factor to each (it may be 0 or NaN, like the norm it comes from)."""
    __slots__ = ()


def _extras_pre(grad_scale, found_inf, max_norm, masters, master_name="master_params"):
    """The extras' checks that may run the caller's code (``float()`` of a number type, the
    ``__iter__`` of a list type): done *before* the arrays are checked, so that nothing of the
    caller's runs between those checks and the kernel.  Returns (grad_scale as a float or None,
    skip: found_inf is nonzero, max_norm as a float (or the optimizer's _Clip) or None, masters
    as a new list or None)."""
    gs = None if grad_scale is None else V.grad_scale(grad_scale)
    skip = found_inf is not None and V.found_inf(found_inf) != 0.0
    mn = None if max_norm is None else (max_norm if type(max_norm) is _Clip else V.max_norm(max_norm))
    if masters is not None:
        if not isinstance(masters, (list, tuple)):
            raise TypeError("%s must be a list of numpy arrays, got %s" % (master_name, type(masters).__name__))
        masters = list(masters)
    return gs, skip, mn, masters


def _extras(names, lists, pre, found_inf, backend_impl, master_name="master_params"):
    """Check the fused extras of a call whose arrays are checked (``pre``: from
    :func:`_extras_pre`): returns None when ``found_inf`` says skip (nothing may be written),
    else (grad_scale, clip, masters, fold) with ``clip`` the global-norm factor (None without
    ``max_norm``) and ``fold`` whether a power-of-two scale >= 1 and the clip may be folded
    into one exact factor (see _staged_call)."""
    gs, skip, mn, masters = pre
    params = lists[0]
    if masters is not None:
        if len(masters) != len(params):
            raise ValueError("%s has %d arrays but %s has %d" % (master_name, len(masters), names[0], len(params)))
        any_master = any(m is not None for m in masters)
        for t, m in enumerate(masters):
            half = V.is_half(params[t].dtype)
            if m is None and not half:
                continue  # float32/float64 tensors of a mixed call have no master
            if m is None and any_master:
                raise TypeError("%s[%d] is required, got None: %s[%d] has dtype %s, and a call with masters has "
                                "one for every float16/bfloat16 param (None only for float32/float64 ones)"
                                % (master_name, t, names[0], t, params[t].dtype))
            V.master("%s[%d]" % (master_name, t), m, params[t], ())
        if not any_master:
            masters = None
        else:
            _overlaps(tuple(names) + (master_name,), tuple(lists) + (masters,), 1)
    if found_inf is not None:  # only read (before the kernel), but it must not be an array the call writes
        for k, lst in enumerate(tuple(lists) + (masters,)):
            if lst is None:
                continue
            for t, a in enumerate(lst):
                if a is not None and a.size and np.may_share_memory(a, found_inf):
                    raise ValueError("%s[%d] and found_inf overlap in memory; every array must be a separate buffer"
                                     % ((tuple(names) + (master_name,))[k], t))
    if skip:
        return None
    clip = None
    fold = False
    if type(mn) is _Clip:
        clip = float(mn)
    elif mn is not None:
        if gs is not None and gs >= 1.0 and getattr(backend_impl, "STAGED", False):
            # the norm pass also says whether the scale and the clip may fold into one factor:
            # with scale >= 1, g / scale cannot overflow; it is exact unless it underflows
            norm, tiny = backend_impl.global_norm(lists[1], gs, gs * 2.0 ** -126)
            fold = not tiny
        else:
            norm = _global_norm(backend_impl, lists[1], gs)
        clip = V.clip_coef(mn, norm)
    return gs, clip, masters, fold


def _global_norm(impl, grads, gs):
    f = getattr(impl, "global_norm", None)
    if f is None:
        return _half.global_norm(grads, gs)
    return f(grads, gs)


def _grad_list(name, grads):
    if not isinstance(grads, (list, tuple)):
        raise TypeError("%s must be a list of numpy arrays, got %s" % (name, type(grads).__name__))
    grads = list(grads)
    for t, g in enumerate(grads):
        V.array("%s[%d]" % (name, t), g, None, None, False, False, True)
    return grads


def global_norm(grads: ArrayList, *, grad_scale: Scale | None = None, backend: Backend | None = None) -> float:
    r"""The L2 norm of all the gradients together, :math:`\sqrt{\sum_t \sum_i g_{t,i}^2}`,
    accumulated in float64 (then divided by ``grad_scale``: the norm of the unscaled
    gradients), as ``torch.nn.utils.clip_grad_norm_`` computes it.  One read pass.  Backends
    agree to about 1e-12 relative (their summation orders differ).  ``grads``: a list of
    float32/float64/float16/bfloat16 arrays of any shapes; an empty list has norm 0.0.

        >>> import numpy as np, fastgd.multi
        >>> fastgd.multi.global_norm([np.full(4, 1.5, np.float32), np.zeros(3)])
        3.0
    """
    gs = None if grad_scale is None else V.grad_scale(grad_scale)  # first: it may run the caller's __float__
    impl = backend_module(backend)
    grads = _grad_list("grads", grads)
    return _global_norm(impl, grads, gs)


def unscale_and_check(grads: ArrayList, scale: Scale, found_inf: FloatArray, *,
                      backend: Backend | None = None) -> FloatArray:
    """Unscale gradients in place and look for NaN/inf in the same pass, like torch's
    ``_amp_foreach_non_finite_check_and_unscale_`` (the loss scaler's step before the
    optimizer's): every ``grads[t]`` is divided by ``scale`` (in float32, float64 for float64
    gradients; stored rounded once) and ``found_inf[0]`` is set to 1.0 if any value was NaN or
    inf.  It is never reset to 0: zero it before the first call of a step.  ``scale``: a real
    > 0 or a float32 array of one element; ``found_inf``: a writeable float32 array of one
    element.  Returns ``found_inf``.

    The fused alternative: pass ``grad_scale=`` and ``found_inf=`` to the step itself (the
    gradient is then divided as it is loaded, and never rewritten).
    """
    s = V.grad_scale(scale, "scale")  # first: it may run the caller's __float__
    V.found_inf(found_inf)
    impl = backend_module(backend)
    grads = _grad_list("grads", grads)
    for t, g in enumerate(grads):
        if not g.flags.writeable:
            raise ValueError("grads[%d] must be writeable (it is unscaled in place)" % t)
    if not found_inf.flags.writeable:
        raise ValueError("found_inf must be writeable (it is set to 1.0 when a value is not finite)")
    _overlaps(("grads",), (grads,), 0)
    for t, g in enumerate(grads):
        if g.size and np.may_share_memory(g, found_inf):
            raise ValueError("grads[%d] and found_inf overlap in memory; every array must be a separate buffer" % t)
    f = getattr(impl, "unscale_and_check", None)
    if f is None:
        f = _half.unscale_and_check
    f(grads, s, found_inf)
    return found_inf


# ---------------------------------------------------------------------------------------
# the rules: hyperparameters checked by fastgd.steps' per-rule checks, then the arrays, then
# the kernel



def _go(rule, backend, lists, kw, grad_scale=None, found_inf=None, max_norm=None, master_params=None, pre=None):
    """Check the lists (params, grads, every state list, optional ones included when given),
    then run on those the call uses (``Rule.arrays``).  The backend is resolved first, so that
    no code of the caller's runs between the checks and the kernel (the extras' own checks,
    which may, come before both: ``pre``).  Returns ``params`` (untouched when ``found_inf``
    said skip)."""
    extras = grad_scale is not None or found_inf is not None or max_norm is not None or master_params is not None
    if extras and pre is None:
        pre = _extras_pre(grad_scale, found_inf, max_norm, master_params)
    impl = backend_module(backend)
    checked, mixed = _check_arrays(rule.multi_names, lists, 1, rule.optional)
    checked = rule.arrays(kw, checked, rule.multi_names)
    ext = None
    if extras:
        ext = _extras(rule.multi_names, checked, pre, found_inf, impl)
        if ext is None:
            return lists[0]
        if ext[:3] == (None, None, None):
            ext = None
    _run(rule.kernel, impl, checked, mixed, kw, ext)
    return lists[0]


def sgd_step(params: ArrayList, grads: ArrayList, momentum_buffers: ArrayList | None = None, *, lr: float,
             momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
             maximize: bool = False, step: int | None = None,
             grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
             master_params: OptArrayList | None = None, backend: Backend | None = None) -> ArrayList:
    """:func:`fastgd.sgd_step` on lists of arrays (``momentum_buffers`` needed when
    ``momentum != 0``; ``step=1`` makes every buffer a copy of its first gradient)."""
    kw = S._SGD.check(step, lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                      weight_decay=weight_decay, maximize=maximize)
    return _go(S._SGD, backend, (params, grads, momentum_buffers), kw,
               grad_scale, found_inf, max_norm, master_params)


def _adam(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay, amsgrad,
          max_exp_avg_sqs, maximize, decoupled, backend, grad_scale, found_inf, max_norm, master_params):
    if not V.adam_scalars_ok(step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize):
        step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize = S._adam_hyper(
            step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize)
    return _go(S._ADAM, backend, (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs),
               dict(step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                    amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=decoupled),
               grad_scale, found_inf, max_norm, master_params)


def adam_step(params: ArrayList, grads: ArrayList, exp_avgs: ArrayList, exp_avg_sqs: ArrayList, *, step: int,
              lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
              weight_decay: float = 0.0, amsgrad: bool = False, max_exp_avg_sqs: ArrayList | None = None,
              maximize: bool = False,
              grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
              master_params: OptArrayList | None = None, backend: Backend | None = None) -> ArrayList:
    """:func:`fastgd.adam_step` on lists of arrays (``max_exp_avg_sqs`` with ``amsgrad=True``)."""
    return _adam(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay, amsgrad,
                 max_exp_avg_sqs, maximize, False, backend, grad_scale, found_inf, max_norm, master_params)


def adamw_step(params: ArrayList, grads: ArrayList, exp_avgs: ArrayList, exp_avg_sqs: ArrayList, *, step: int,
               lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 1e-2, amsgrad: bool = False, max_exp_avg_sqs: ArrayList | None = None,
               maximize: bool = False,
               grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
               master_params: OptArrayList | None = None, backend: Backend | None = None) -> ArrayList:
    """:func:`fastgd.adamw_step` on lists of arrays."""
    return _adam(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay, amsgrad,
                 max_exp_avg_sqs, maximize, True, backend, grad_scale, found_inf, max_norm, master_params)


def adamax_step(params: ArrayList, grads: ArrayList, exp_avgs: ArrayList, exp_infs: ArrayList, *, step: int,
                lr: float = 2e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                weight_decay: float = 0.0, maximize: bool = False,
                grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
                master_params: OptArrayList | None = None, backend: Backend | None = None) -> ArrayList:
    """:func:`fastgd.adamax_step` on lists of arrays."""
    kw = S._ADAMAX.check(step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                         maximize=maximize)
    return _go(S._ADAMAX, backend, (params, grads, exp_avgs, exp_infs), kw,
               grad_scale, found_inf, max_norm, master_params)


def nadam_step(params: ArrayList, grads: ArrayList, exp_avgs: ArrayList, exp_avg_sqs: ArrayList,
               mu_product: NDArray[np.float64] | None = None, *, step: int, lr: float = 2e-3, beta1: float = 0.9,
               beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0, momentum_decay: float = 4e-3,
               decoupled_weight_decay: bool = False, maximize: bool = False,
               grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
               master_params: OptArrayList | None = None, backend: Backend | None = None) -> ArrayList:
    """:func:`fastgd.nadam_step` on lists of arrays.  ``mu_product`` (a float64 array of one
    element, or None to recompute it from ``step``) is shared by the whole list: it holds
    :math:`P_{t-1}` on entry and is updated once, in place, to :math:`P_t`."""
    kw = S._NADAM.check(step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                        maximize=maximize)
    pre = _extras_pre(grad_scale, found_inf, max_norm, master_params)
    lists = _as_lists(S._NADAM.multi_names, (params, grads, exp_avgs, exp_avg_sqs))
    names = S._NADAM.multi_names + ("master_params",)
    kw["mu_product"] = S._mu_product_before(mu_product, kw, lambda k, t: "%s[%d]" % (names[k], t),
                                            lists + (pre[3] if master_params is not None else None,))
    _go(S._NADAM, backend, lists, kw, grad_scale, found_inf, max_norm, master_params, pre)
    if not pre[1]:  # a skipped step (found_inf, read once before the checks) does not advance the product
        S._mu_product_after(mu_product, kw)
    return params


def radam_step(params: ArrayList, grads: ArrayList, exp_avgs: ArrayList, exp_avg_sqs: ArrayList, *, step: int,
               lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 0.0, decoupled_weight_decay: bool = False, maximize: bool = False,
               grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
               master_params: OptArrayList | None = None, backend: Backend | None = None) -> ArrayList:
    """:func:`fastgd.radam_step` on lists of arrays."""
    kw = S._RADAM.check(step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
    return _go(S._RADAM, backend, (params, grads, exp_avgs, exp_avg_sqs), kw,
               grad_scale, found_inf, max_norm, master_params)


def adagrad_step(params: ArrayList, grads: ArrayList, state_sums: ArrayList, *, step: int, lr: float = 1e-2,
                 lr_decay: float = 0.0, weight_decay: float = 0.0, eps: float = 1e-10, maximize: bool = False,
                 grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
                 master_params: OptArrayList | None = None, backend: Backend | None = None) -> ArrayList:
    """:func:`fastgd.adagrad_step` on lists of arrays."""
    kw = S._ADAGRAD.check(step, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps, maximize=maximize)
    return _go(S._ADAGRAD, backend, (params, grads, state_sums), kw,
               grad_scale, found_inf, max_norm, master_params)


def adadelta_step(params: ArrayList, grads: ArrayList, square_avgs: ArrayList, acc_deltas: ArrayList, *,
                  lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
                  maximize: bool = False,
                  grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
                  master_params: OptArrayList | None = None, backend: Backend | None = None) -> ArrayList:
    """:func:`fastgd.adadelta_step` on lists of arrays."""
    kw = S._ADADELTA.check(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
    return _go(S._ADADELTA, backend, (params, grads, square_avgs, acc_deltas), kw,
               grad_scale, found_inf, max_norm, master_params)


def rmsprop_step(params: ArrayList, grads: ArrayList, square_avgs: ArrayList, *,
                 momentum_buffers: ArrayList | None = None, grad_avgs: ArrayList | None = None, lr: float = 1e-2,
                 alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0, centered: bool = False,
                 weight_decay: float = 0.0, maximize: bool = False,
                 grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
                 master_params: OptArrayList | None = None, backend: Backend | None = None) -> ArrayList:
    """:func:`fastgd.rmsprop_step` on lists of arrays (``momentum_buffers`` when
    ``momentum > 0``, ``grad_avgs`` when ``centered=True``)."""
    kw = S._RMSPROP.check(lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=centered,
                          weight_decay=weight_decay, maximize=maximize)
    return _go(S._RMSPROP, backend, (params, grads, square_avgs, momentum_buffers, grad_avgs), kw,
               grad_scale, found_inf, max_norm, master_params)


def lion_step(params: ArrayList, grads: ArrayList, exp_avgs: ArrayList, *, lr: float = 1e-4, beta1: float = 0.9,
              beta2: float = 0.99, weight_decay: float = 0.0, maximize: bool = False,
              grad_scale: Scale | None = None, found_inf: FloatArray | None = None, max_norm: float | None = None,
              master_params: OptArrayList | None = None, backend: Backend | None = None) -> ArrayList:
    """:func:`fastgd.lion_step` on lists of arrays."""
    kw = S._LION.check(lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay, maximize=maximize)
    return _go(S._LION, backend, (params, grads, exp_avgs), kw,
               grad_scale, found_inf, max_norm, master_params)
