"""Optimizer objects over lists of parameter arrays, as in ``torch.optim`` (and the book's
``Optimizer(params, lr, ...)`` / ``step(grads)`` / ``parameters()`` design).

    >>> import numpy as np
    >>> from fastgd.optim import Adam, CosineAnnealingLR
    >>> W = np.zeros((3, 2)); b = np.zeros(2)
    >>> opt = Adam([W, b], lr=1e-2, betas=(0.9, 0.999))
    >>> sched = CosineAnnealingLR(opt, T_max=100)
    >>> opt.step([dW, db])      # W and b updated in place through fastgd.multi.adam_step
    >>> sched.step()            # new lr (every group's) for the next step

Parameter groups, as in torch: pass dicts instead of arrays, each with its ``"params"`` and
any hyperparameters that differ from the constructor's::

    >>> opt = Adam([{"params": [W]}, {"params": [b], "weight_decay": 0.0}], lr=1e-2, weight_decay=0.1)
    >>> opt.param_groups[1]["lr"] = 1e-3       # takes effect at the next step
    >>> opt.add_param_group({"params": [extra], "lr": 1e-4})

Every ``step`` makes one multi-tensor call of :mod:`fastgd.multi` (``adam_step`` on lists
of arrays, ...; the values are those of the single-tensor kernels of :mod:`fastgd.steps`,
bit for bit) per parameter group and dtype, so the current backend (or ``backend=`` given to
the constructor) runs the update and the same argument validation applies.  Semantics,
names and defaults are those of the torch optimizer of the same name (``Lion``: the paper /
optax).

Design notes
------------
* ``opt.param_groups`` is a list of real dicts: ``"params"`` (the group's arrays; use
  :meth:`~Optimizer.add_param_group` to add parameters, the list itself cannot be changed)
  and every hyperparameter, defaulting to the constructor's values (``opt.defaults``).
  ``param_groups`` itself cannot be changed either (``param_groups[i] = ...``, ``del``,
  ``append``: TypeError); change a group's dict in place, add groups with ``add_param_group``.
  Hyperparameters may be set between steps and are validated at every ``step`` before any
  array is written; an unknown key in a group (a misspelling) is an error at that step.
  ``opt.lr`` reads the first group's lr and sets every group's; ``opt.hyper`` (kept for
  backwards compatibility) is a live view of the first group's hyperparameters.
  ``step(grads)`` takes one gradient per parameter in the order of ``opt.parameters()``
  (group after group).  A parameter may appear in one group only.
* State arrays are allocated at the first ``step`` of their group, once that step's checks
  have passed, as zeros of each parameter's shape and dtype (Adagrad: filled with
  ``initial_accumulator_value``; NAdam's ``mu_product``: ``numpy.ones(1)``, one array shared
  by the parameters of a group), under torch's names (``exp_avg``, ``exp_avg_sq``,
  ``momentum_buffer``, ``sum``, ...).  ``opt.state[i]`` is the dict of parameter ``i``; its
  arrays may be written in place, replaced arrays are picked up at the next step.  An array
  deleted from it after its group has stepped is not silently restarted: the next step
  raises ValueError naming it (assign a new array, or ``zero_state()``); SGD's
  ``momentum_buffer`` is the exception (as in torch, a missing buffer starts as the next
  gradient).  Every array a step writes (the parameters and state arrays of every group)
  must be a separate buffer and no gradient may overlap one, across groups too.
  NAdam's ``mu_product`` must hold a value in [0, 1] (a product of factors in [0, 1); 0
  once it underflows); other values would make the bias corrections divide by zero.
* ``step_count`` counts completed steps, at most 2**53 (fastgd's step limit: a step past
  it, or a state dict beyond it, is refused).  A group's own count (its bias corrections) starts
  when it is added: a group added by ``add_param_group`` after 10 steps takes its first step
  as step 1, as torch's per-parameter ``step`` does.
* A ``step`` that raises has changed nothing (parameters, state, ``step_count``): what any
  of its multi-tensor calls would refuse is checked for all of them before the first one
  runs (with several calls, one combined check of every array of the step).  A step is
  also atomic with respect to ``KeyboardInterrupt``: Ctrl-C during a step is held back (in
  the main thread, where Python delivers it) until the step is complete, and an interrupt
  raised by a kernel call itself after other calls of the step have run makes the step
  finish the remaining calls before it is re-raised.  So an interrupted step leaves the
  optimizer either as before the step or as after it, never in between.
* Threads: ``step``, ``state_dict``, ``load_state_dict``, ``add_param_group`` and
  ``zero_state`` hold a per-optimizer lock, so steps from several threads run one after
  the other (each counted once).  Which gradient list is applied first is up to the
  threads; for sensible training give each optimizer one thread.
* ``state_dict()`` / ``load_state_dict()`` copy everything needed to resume bit-exactly
  (torch-like: ``param_groups`` with hyperparameters and parameter indices, ``state`` per
  parameter); loading checks everything first.  :func:`save` / :func:`load` write / read it
  (and, by default, the parameters) as ``.npz`` with JSON metadata (no pickle).

Half precision, loss scaling and clipping
-----------------------------------------
Every optimizer takes three more keyword-only constructor options (the same for all of
them; they are not hyperparameters of a group and not part of ``state_dict``)::

    >>> opt = AdamW(params, lr=1e-3, state_dtype="float32", master_weights=True, max_norm=1.0)
    >>> opt.step(grads, grad_scale=scale, found_inf=found_inf)

* Parameters (and their gradients, which must have the parameter's dtype) may be float16 or
  bfloat16 (``ml_dtypes.bfloat16``) as well as float32 / float64; groups may mix dtypes (one
  multi-tensor call per group and dtype).  The arithmetic runs in float32 and every stored
  value is rounded once (see :mod:`fastgd.reference.half`).
* ``state_dtype="float32"`` (the default): the state arrays of a float16/bfloat16 parameter
  are float32 (torch's and DeepSpeed's mixed-precision layout).  ``state_dtype="param"``:
  they have the parameter's dtype (half the state's bytes, at half precision).  float32 and
  float64 parameters always keep state of their own dtype.  NAdam's ``mu_product`` is a
  float64 array of one element either way.  ``load_state_dict`` refuses state arrays of
  another dtype (a float16 ``exp_avg`` for an optimizer that keeps float32 state).
* ``master_weights=True``: the optimizer keeps a float32 copy of every float16/bfloat16
  parameter, ``opt.state[i]["master_param"]`` (made from the parameter at its group's first
  step, saved in ``state_dict`` like any state array); each step updates the copy and stores
  its rounding into the parameter, whose old value is then not read (so write a new value
  into ``opt.state[i]["master_param"]``, not into the parameter, or call ``zero_state()``).
  float32/float64 parameters have no copy.
* ``step(grads, *, grad_scale=None, found_inf=None)``: with ``grad_scale`` (a real > 0, or a
  float32 array of one element: a loss scaler's scale) every gradient is divided by it as it
  is loaded (the gradients are never rewritten).  ``found_inf`` (a float32 array of one
  element) nonzero skips the step whole, as torch's fused optimizers do under a GradScaler:
  nothing is written, no state is created and ``step_count`` does not advance (the
  arguments are checked all the same).  Its value is read once, before anything runs.
* ``max_norm`` (a real > 0, or None): clip by the global norm of all the step's gradients
  (every group and dtype, unscaled: :func:`fastgd.multi.global_norm` over the whole list),
  ``torch.nn.utils.clip_grad_norm_``'s factor ``min(1, max_norm / (norm + 1e-6))`` folded
  into every call of the step (one read pass for the norm, then the step).  ``opt.max_norm``
  may be changed between steps.
"""
from __future__ import annotations

import inspect
import json
import math
import operator
import os
import threading
from collections.abc import Mapping, MutableMapping
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from . import _validate as V
from . import multi as _multi
from ._rules import RULES
from .backends import backend_module

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._rules import Rule
    from ._typing import ArrayList, Backend, FloatArray, Params, Scale, StateDType

try:  # the C check of a whole multi-tensor call's arrays (the Cython backend's; Python checks otherwise)
    from ._cython import multi_arrays_ok as _arrays_ok
except ImportError:  # pragma: no cover - compiled part missing
    _arrays_ok = None  # type: ignore[assignment]

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "Adagrad", "Adadelta", "RMSprop",
           "Lion", "OPTIMIZERS", "save", "load", "LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR",
           "LambdaLR"]

_FORMAT = "fastgd.optim/2"
_FORMAT_BF16 = "fastgd.optim/3"  # /2 with bfloat16 arrays (stored as their uint16 bits): earlier versions refuse it
_READABLE_FORMATS = ("fastgd.optim/1", _FORMAT, _FORMAT_BF16)


# ---------------------------------------------------------------------------------------
# hyperparameter validators: (name, value) -> normalized value, raising TypeError/ValueError

def _betas(closed):
    def check(name, v):
        if not isinstance(v, (tuple, list)) or len(v) != 2:
            raise TypeError("%s must be a tuple of two numbers (beta1, beta2), got %r" % (name, v))
        return (V.unit_interval(name + "[0]", v[0], closed_right=closed),
                V.unit_interval(name + "[1]", v[1], closed_right=closed))
    return check


def _with_prefix(exc, prefix):
    """``exc`` with ``prefix`` before its message (same type), for errors of one group."""
    try:
        new = type(exc)(prefix + str(exc))
    except Exception:  # pragma: no cover - an exception type with another signature
        return exc
    new.__cause__ = exc.__cause__
    return new


# ---------------------------------------------------------------------------------------
# the containers behind param_groups[i]["params"] and opt.state

def _frozen_list(name, doc, refusal):
    """A list class whose instances cannot be changed in place (every mutating method raises
    TypeError(``refusal``)); pickled as a plain list of its items."""
    def refuse(self, *args, **kwargs):
        raise TypeError(refusal)

    def reduce(self):
        return (cls, (list(self),))
    methods = ("__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend", "insert", "pop", "remove",
               "clear", "sort", "reverse")
    cls = type(name, (list,), dict({m: refuse for m in methods}, __doc__=doc, __reduce__=reduce,
                                   __module__=__name__, __qualname__=name))
    return cls


_ParamList = _frozen_list(
    "_ParamList", """A group's ``"params"``: a list that cannot be changed in place (add parameters with
    ``add_param_group``; the optimizer's state is indexed by parameter position).""",
    "the parameters of a group cannot be changed; use add_param_group to add parameters")
_StateList = _frozen_list(
    "_StateList", """``opt.state``: one dict per parameter; the list itself cannot be changed.""",
    "opt.state holds one dict per parameter and cannot be changed; change the arrays in opt.state[i], or use "
    "load_state_dict / zero_state")
_GroupList = _frozen_list(
    "_GroupList", """``opt.param_groups``: the group dicts (change their hyperparameters in place); the list
    itself cannot be changed (the state is indexed by parameter position).""",
    "param_groups cannot be replaced or removed; change a group's hyperparameters in place "
    "(opt.param_groups[i]['lr'] = ...) and add groups with add_param_group")


class _ParamState(dict):
    """``opt.state[i]``: a dict whose changes (an array replaced, added or removed) tell the
    optimizer to rebuild its cached lists of state arrays at the next step.  It remembers
    the names deleted from it (until set again): a step refuses to restart such an array at
    its initial value once the group has stepped (see ``Optimizer.step``)."""
    __slots__ = ("_version", "_deleted")

    def __init__(self, version, items=(), deleted=None):
        dict.__init__(self, items)
        self._version = version  # a one-element list shared with the optimizer
        self._deleted = set(deleted) if deleted else None  # names deleted and not set since

    def _changed(self):
        self._version[0] += 1

    def _mark(self, keys):
        if self._deleted is None:
            self._deleted = set()
        self._deleted.update(keys)

    def _unmark(self):
        if self._deleted:
            self._deleted.difference_update(dict.keys(self))

    def __setitem__(self, key, value):
        dict.__setitem__(self, key, value)
        if self._deleted:
            self._deleted.discard(key)
        self._changed()

    def __delitem__(self, key):
        dict.__delitem__(self, key)
        self._mark((key,))
        self._changed()

    def __ior__(self, other):  # type: ignore[misc]  # (dict's |= takes any mapping; | does not)
        dict.update(self, other)
        self._unmark()
        self._changed()
        return self

    def pop(self, key, *default):
        present = key in self
        try:
            return dict.pop(self, key, *default)
        finally:
            if present:
                self._mark((key,))
            self._changed()

    def popitem(self):
        try:
            key, value = dict.popitem(self)
            self._mark((key,))
            return key, value
        finally:
            self._changed()

    def clear(self):
        keys = list(dict.keys(self))
        dict.clear(self)
        self._mark(keys)
        self._changed()

    def setdefault(self, key, default=None):
        try:
            return dict.setdefault(self, key, default)
        finally:
            self._unmark()
            self._changed()

    def update(self, *args, **kwargs):
        try:
            dict.update(self, *args, **kwargs)
        finally:
            self._unmark()
            self._changed()

    def __reduce__(self):
        return (_ParamState, (self._version, dict(self), self._deleted))


class _HyperView(MutableMapping):
    """``opt.hyper``: the hyperparameters of ``param_groups[0]`` (live; ``"params"`` hidden)."""

    def __init__(self, opt):
        self._opt = opt

    def _group(self):
        return self._opt.param_groups[0]

    def __getitem__(self, key):
        if key == "params":
            raise KeyError(key)
        return self._group()[key]

    def __setitem__(self, key, value):
        if key == "params":
            raise ValueError("the parameters of an optimizer cannot be replaced")
        self._group()[key] = value

    def __delitem__(self, key):
        if key == "params":
            raise KeyError(key)
        del self._group()[key]

    def __iter__(self):
        return (k for k in self._group() if k != "params")

    def __len__(self):
        return len(self._group()) - ("params" in self._group())

    def __repr__(self):
        return repr(dict(self.items()))


# ---------------------------------------------------------------------------------------
# Ctrl-C held back while the kernels of a step run

_MAIN_THREAD = threading.main_thread()
try:  # the C functions behind signal.signal / getsignal, without their enum conversions (~5 us)
    from _signal import SIGINT as _SIGINT, getsignal as _getsignal, signal as _setsignal  # type: ignore
except ImportError:  # pragma: no cover - not CPython
    from signal import SIGINT as _SIGINT, getsignal as _getsignal, signal as _setsignal


class _HoldInterrupt:
    """In the main thread, hold SIGINT back while the block runs and deliver it afterwards
    (the previous handler is called then: Python's default raises KeyboardInterrupt).
    Elsewhere (other threads never receive SIGINT), or when the handler is not a Python
    callable (ignored, default action, set from C), a no-op."""
    __slots__ = ("old", "hit")

    def __enter__(self):
        self.old = None
        self.hit = False
        if threading.current_thread() is _MAIN_THREAD:
            old = _getsignal(_SIGINT)
            if callable(old):
                try:
                    _setsignal(_SIGINT, self._held)
                except ValueError:  # pragma: no cover - not the main interpreter
                    return self
                self.old = old
        return self

    def _held(self, signum, frame):
        self.hit = True

    def __exit__(self, *exc):
        old = self.old
        if old is not None:
            self.old = None
            _setsignal(_SIGINT, old)
            if self.hit:
                old(_SIGINT, None)  # the default handler raises KeyboardInterrupt here
        return False


# ---------------------------------------------------------------------------------------
# one multi-tensor call of a step

_ALL = slice(None)
_ABSENT = object()
_PY_CHECK = object()  # a plan's combined check: the Python one (master weights; see Optimizer._combined)
_SKIP = np.ones(1, np.float32)  # the found_inf passed to every call of a skipped step (ours: never changes)
_SKIP.flags.writeable = False


class _Call:
    """The tensors of one group and one dtype (SGD: and whether their buffers are new),
    stepped by one multi-tensor call: positions ``sel`` of the flat parameter list.
    ``masters``: the float32 master copies of its (float16/bfloat16) parameters, or None."""
    __slots__ = ("group", "sel", "idx", "params", "arrays", "shared", "copy_shared", "first", "names", "lists",
                 "dtype", "masters")

    def grads(self, grads):
        """This call's gradients out of the step's list (in flat parameter order)."""
        sel = self.sel
        if sel is _ALL:
            return grads
        if type(sel) is slice:
            return grads[sel]
        return [grads[i] for i in sel]

    def where(self):
        """Prefix for an error of this call's own arrays (their indices count within the call)."""
        idx = self.idx
        if idx == list(range(idx[0], idx[-1] + 1)):
            which = "%d..%d" % (idx[0], idx[-1]) if len(idx) > 1 else str(idx[0])
        else:
            which = ", ".join(map(str, idx))
        return "param_groups[%d], the %s call over parameters %s (indices below count within the call): " % (
            self.group, self.dtype, which)


# ---------------------------------------------------------------------------------------
# parameters

def _check_param(name, p):
    """One parameter array: exactly numpy.ndarray, native float32/float64/float16 or
    bfloat16, C-contiguous, aligned, writeable (the kernels update it in place through a raw
    pointer)."""
    if type(p) is not np.ndarray:
        if isinstance(p, np.ndarray):
            raise TypeError("%s must be a numpy.ndarray, not the subclass %s.%s" % (name, type(p).__module__,
                                                                                  type(p).__name__))
        raise TypeError("%s must be a numpy.ndarray, got %s" % (name, type(p).__name__))
    if not (V.param_dtype_ok(p.dtype) and p.dtype.isnative):
        raise TypeError("%s must have dtype float32 or float64, or float16 or bfloat16 (native byte order), got %s"
                        % (name, p.dtype.str if p.dtype.kind == "f" else p.dtype))
    flags = p.flags
    if not flags.c_contiguous:
        raise ValueError("%s must be C-contiguous (use numpy.ascontiguousarray)" % name)
    if not flags.aligned:
        raise ValueError("%s is not aligned to its dtype in memory; the kernels need aligned data" % name)
    if not flags.writeable:
        raise ValueError("%s must be writeable (it is updated in place)" % name)


# ---------------------------------------------------------------------------------------
# half precision: the constructor options

_MASTER = "master_param"  # the state name of a float16/bfloat16 parameter's float32 master copy
_F32 = np.dtype(np.float32)
_STATE_DTYPES = ("float32", "param")
_OPTIONS = ("backend", "state_dtype", "master_weights", "max_norm")  # constructor options, not hyperparameters


def _state_dtype_option(value):
    """The ``state_dtype`` option: ``"float32"`` (also numpy.float32 / its dtype) or ``"param"``."""
    if isinstance(value, str):
        if value in _STATE_DTYPES:
            return value
        raise ValueError("state_dtype must be 'float32' (float32 state for float16/bfloat16 parameters) or 'param' "
                         "(state of the parameter's dtype), got %r" % value)
    if value is np.float32 or (isinstance(value, np.dtype) and value == _F32):
        return "float32"
    raise TypeError("state_dtype must be 'float32' or 'param', got %s" % (value if isinstance(value, np.dtype)
                                                                         else type(value).__name__))


def _max_norm_option(value):
    """The ``max_norm`` option: None (no clipping) or a real > 0 and finite."""
    return None if value is None else V.max_norm(value)


def _check_disjoint(params, names):
    """No array twice, no two arrays sharing memory (byte ranges; O(n log n))."""
    seen = {}
    for k, p in enumerate(params):
        j = seen.setdefault(id(p), k)
        if j != k:
            raise ValueError("%s and %s are the same array: a parameter may appear only once (in one group)"
                             % (names[j], names[k]))
    ranges = []
    for k, p in enumerate(params):
        if p.size:
            lo = p.__array_interface__["data"][0]
            ranges.append((lo, lo + p.nbytes, k))
    ranges.sort()
    far = None  # (end, k) of the earlier range reaching furthest
    for lo, hi, k in ranges:
        if far is not None and lo < far[0]:
            raise ValueError("%s and %s overlap in memory" % (names[far[1]], names[k]))
        if far is None or hi > far[0]:
            far = (hi, k)


def _first_overlap(entries):
    """The names of two arrays of ``entries`` ((array, name, written) each) that overlap in
    memory where one of them is written, or None (O(n log n), byte ranges)."""
    ranges = []
    for a, name, written in entries:
        if a.size:
            lo = a.__array_interface__["data"][0]
            ranges.append((lo, lo + a.nbytes, written, name))
    ranges.sort(key=lambda r: r[0])
    far_any = far_w = None  # (end, name) of the earlier range (written one) reaching furthest
    for lo, hi, written, name in ranges:
        other = far_any if written else far_w
        if other is not None and lo < other[0]:
            return other[1], name
        if far_any is None or hi > far_any[0]:
            far_any = (hi, name)
        if written and (far_w is None or hi > far_w[0]):
            far_w = (hi, name)
    return None


def _as_array_list(value, what):
    """A group's parameters as a list: an array, or a list/tuple/iterable of arrays (not a
    set: its order is not defined)."""
    if isinstance(value, np.ndarray):
        return [value]
    if not isinstance(value, (dict, set, frozenset, str, bytes)):
        try:
            return list(value)
        except TypeError:
            pass
    raise TypeError("%s must be a list of numpy arrays, got %s" % (what, type(value).__name__))


# ---------------------------------------------------------------------------------------
# the base class

class Optimizer:
    """Base class: parameter groups, their hyperparameters, the state, the step.

    Subclasses define ``_defaults`` (torch's defaults, in constructor order), ``_spec`` (a
    validator per hyperparameter), ``_state_names(hyper)`` (the state arrays a step with
    these hyperparameters uses), ``_init_state(name, param, hyper)`` (a new state array) and
    ``_call`` (one multi-tensor call), and describe their state: ``_all_state_names`` (every
    name the rule can keep), ``_nonneg_state`` (names whose values are never negative),
    ``_shared_state`` (one float64 array of one element per group, NAdam's ``mu_product``),
    ``_lazy_state`` (arrays a step starts from the gradient, SGD's ``momentum_buffer``) and
    ``_multi_names`` (each state name's :mod:`fastgd.multi` list argument).

    Constructor options of every optimizer (keyword-only, after ``backend``; see the module
    docstring): ``state_dtype="float32"`` (float32 state for float16/bfloat16 parameters;
    ``"param"``: state of the parameter's dtype), ``master_weights=False`` (a float32 master
    copy of every float16/bfloat16 parameter, ``opt.state[i]["master_param"]``) and
    ``max_norm=None`` (clip every step by the global norm of all its gradients).
    """

    _rule: Rule | None = None
    _defaults: dict[str, Any] = {}
    _spec: dict[str, Callable[[str, Any], Any]] = {}
    _all_state_names: tuple[str, ...] = ()
    _nonneg_state: frozenset[str] = frozenset()
    _shared_state: tuple[str, ...] = ()
    _lazy_state: tuple[str, ...] = ()
    _multi_names: dict[str, str] = {}

    def __init_subclass__(cls, rule: str | None = None, **kwargs: Any) -> None:
        """``class Adam(Optimizer, rule="adam")``: every class attribute above comes from the
        rule table (fastgd/_rules.py); the class writes only its constructor (torch's
        signature, for editors and help()) and its docstring."""
        super().__init_subclass__(**kwargs)
        if rule is not None:
            _from_table(cls, RULES[rule])

    def __init__(self, params: Params, *, backend: Backend | None = None, state_dtype: StateDType = "float32",
                 master_weights: bool = False, max_norm: float | None = None, **hyper: Any) -> None:
        if backend is not None:
            backend_module(backend)  # unknown / unavailable backend: raise now
        self.backend = backend
        self._state_dtype = _state_dtype_option(state_dtype)
        self._master_weights = V.flag("master_weights", master_weights)
        self._max_norm = _max_norm_option(max_norm)
        full = dict(self._defaults)
        for k, v in hyper.items():
            if k not in full:
                raise TypeError("%s got an unexpected hyperparameter %r (expected one of %s)"
                                % (type(self).__name__, k, ", ".join(full)))
            full[k] = v
        self.defaults = self._check_hyper(full)
        self.step_count = 0
        self.param_groups = _GroupList()
        self._setup()
        groups, from_dicts = _split_params(params)
        prepared, names = [], []
        for gi, group in enumerate(groups):
            where = "params[%d]" % gi if from_dicts else "params"
            ps, h = self._prepare_group(group, where, from_dicts)
            prepared.append((ps, h))
            names += ["%s[%d]" % (where + ("['params']" if from_dicts else ""), j) for j in range(len(ps))]
        _check_disjoint([p for ps, _ in prepared for p in ps], names)
        for ps, h in prepared:
            self._append_group(ps, h)

    def _setup(self):
        """The private containers (also rebuilt by __setstate__)."""
        self._lock = threading.RLock()
        self._version = [0]  # bumped whenever state arrays or groups change: the cached plan is stale
        self._plan = None
        self._params = []
        self._state = _StateList()
        self._bounds = []  # (start, stop) of each group in the flat parameter list
        self._group_params = []  # each group's _ParamList (param_groups[g]["params"] must stay it)
        self._offsets = []  # step_count when each group was added: its own step is step_count - offset

    def __getstate__(self):
        d = dict(self.__dict__)
        del d["_lock"]
        d["_plan"] = None
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._lock = threading.RLock()
        for k, v in (("_state_dtype", "float32"), ("_master_weights", False), ("_max_norm", None)):
            self.__dict__.setdefault(k, v)  # pickled by an earlier version
        if type(self.param_groups) is list:  # pickled by an earlier version
            self.param_groups = _GroupList(self.param_groups)

    def _prepare_group(self, group, where, from_dict=True):
        """Validate one group: (its parameters, its checked hyperparameters)."""
        if not from_dict:
            ps = group
            overrides = {}
        else:
            if not isinstance(group, Mapping):
                raise TypeError("%s must be a dict with 'params' and hyperparameters, got %s"
                                % (where, type(group).__name__))
            if "params" not in group:
                raise ValueError("%s has no 'params' entry" % where)
            ps = _as_array_list(group["params"], "%s['params']" % where)
            overrides = {k: v for k, v in group.items() if k != "params"}
            where += "['params']"
        if not ps:
            raise ValueError("%s is empty" % where)
        for j, p in enumerate(ps):
            _check_param("%s[%d]" % (where, j), p)
        full = dict(self.defaults)
        for k, v in overrides.items():
            if k not in full:
                raise TypeError("%s got an unexpected hyperparameter %r in a parameter group (expected one of %s)"
                                % (type(self).__name__, k, ", ".join(full)))
            full[k] = v
        return ps, self._check_hyper(full)

    def _append_group(self, ps, h):
        start = len(self._params)
        plist = _ParamList(ps)
        group = {"params": plist}
        group.update(h)
        self._params.extend(ps)
        list.extend(self._state, [_ParamState(self._version) for _ in ps])
        self._bounds.append((start, start + len(ps)))
        self._group_params.append(plist)
        self._offsets.append(self.step_count)
        list.append(self.param_groups, group)
        self._version[0] += 1

    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a group: a dict with ``"params"`` (an array or a list of arrays, none already in
        the optimizer) and any hyperparameters that differ from ``opt.defaults``.  Its
        parameters come after the existing ones in ``parameters()`` (and in ``step``'s
        gradient list); its first step is its step 1."""
        with self._lock:
            ps, h = self._prepare_group(param_group, "param_group")
            names = ["param_groups[%d]['params'][%d]" % (g, i - a) for g, (a, b) in enumerate(self._bounds)
                     for i in range(a, b)]
            names += ["param_group['params'][%d]" % j for j in range(len(ps))]
            _check_disjoint(self._params + ps, names)
            self._append_group(ps, h)

    # ---- access -------------------------------------------------------------------------
    def parameters(self) -> list[FloatArray]:
        """The parameter arrays, group after group (the same objects, updated in place by ``step``)."""
        return list(self._params)

    @property
    def state(self) -> list[dict[str, FloatArray]]:
        """One dict of state arrays per parameter (in ``parameters()`` order)."""
        return self._state

    @property
    def lr(self) -> float:
        """The first group's lr; setting it sets every group's."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        value = V.nonneg("lr", value)
        for group in self.param_groups:
            group["lr"] = value

    @property
    def state_dtype(self) -> StateDType:
        """``"float32"`` (float32 state for float16/bfloat16 parameters) or ``"param"`` (state of
        each parameter's dtype); fixed at construction."""
        return self._state_dtype

    @property
    def master_weights(self) -> bool:
        """Whether float16/bfloat16 parameters have a float32 master copy (``opt.state[i]["master_param"]``);
        fixed at construction."""
        return self._master_weights

    @property
    def max_norm(self) -> float | None:
        """The global-norm clip threshold of every step (None: no clipping); may be set between steps."""
        return self._max_norm

    @max_norm.setter
    def max_norm(self, value: float | None) -> None:
        self._max_norm = _max_norm_option(value)

    def _state_dtype_for(self, p):
        """The dtype of parameter ``p``'s state arrays (NAdam's shared mu_product aside)."""
        dt = p.dtype
        if self._state_dtype == "float32" and V.is_half(dt):
            return _F32
        return dt

    def _has_master(self, p):
        """Does parameter ``p`` have a float32 master copy?"""
        return self._master_weights and V.is_half(p.dtype)

    @property
    def hyper(self) -> MutableMapping[str, Any]:
        """The hyperparameters of ``param_groups[0]`` as a live mapping (kept for backwards
        compatibility; use ``param_groups``)."""
        return _HyperView(self)

    @hyper.setter
    def hyper(self, value: Mapping[str, Any]) -> None:
        h = self._check_hyper(dict(value))
        group = self.param_groups[0]
        for k in [k for k in group if k != "params"]:
            del group[k]
        group.update(h)

    def __repr__(self) -> str:
        def hyper(g):
            return ", ".join("%s=%r" % kv for kv in g.items() if kv[0] != "params")
        options = "".join(", %s=%r" % (k, v) for k, v, default in (
            ("state_dtype", self._state_dtype, "float32"), ("master_weights", self._master_weights, False),
            ("max_norm", self._max_norm, None)) if v != default)
        if len(self.param_groups) == 1:
            return "%s(%d params, step_count=%d, %s%s)" % (type(self).__name__, len(self._params), self.step_count,
                                                           hyper(self.param_groups[0]), options)
        return "%s(%d params, step_count=%d, %s%s)" % (
            type(self).__name__, len(self._params), self.step_count,
            ", ".join("group %d: %d params, %s" % (g, len(grp["params"]), hyper(grp))
                      for g, grp in enumerate(self.param_groups)), options)

    # ---- validation ---------------------------------------------------------------------
    def _check_hyper(self, hyper):
        out = {}
        spec = self._spec
        for k, v in hyper.items():
            check = spec.get(k)
            if check is None:
                raise ValueError("unknown hyperparameter %r for %s" % (k, type(self).__name__))
            out[k] = check(k, v)
        if len(out) != len(self._defaults):
            for k in self._defaults:
                if k not in out:
                    raise ValueError("hyperparameter %r of %s is missing" % (k, type(self).__name__))
        self._check_combination(out)
        return out

    def _group_hypers(self):
        """Every group's hyperparameters, checked (messages name the group when there are several)."""
        groups = self.param_groups
        if not isinstance(groups, list) or len(groups) != len(self._bounds):
            raise ValueError("opt.param_groups was changed: param_groups cannot be replaced; add groups with "
                             "add_param_group only")
        out = []
        several = len(groups) > 1
        for g, group in enumerate(groups):
            if not isinstance(group, dict):
                raise TypeError("param_groups[%d] is a %s, not its group's dict: param_groups cannot be replaced; "
                                "change hyperparameters in place and add groups with add_param_group"
                                % (g, type(group).__name__))
            try:
                if group["params"] is not self._group_params[g]:
                    raise ValueError("param_groups[%d]['params'] was replaced; the parameters of a group cannot be "
                                     "changed (add parameters with add_param_group)" % g)
                h = self._check_hyper({k: v for k, v in group.items() if k != "params"})
            except (TypeError, ValueError, KeyError) as exc:
                if isinstance(exc, KeyError):
                    raise ValueError("param_groups[%d] has no 'params' entry" % g) from None
                if several:
                    raise _with_prefix(exc, "param_groups[%d]: " % g) from None
                raise
            out.append(h)
        return out

    def _as_grads(self, grads):
        if isinstance(grads, np.ndarray) and len(self._params) == 1 and grads.shape == self._params[0].shape:
            return [grads]
        if not isinstance(grads, (list, tuple)):
            raise TypeError("grads must be a list of arrays (one per parameter), got %s" % type(grads).__name__)
        return list(grads)

    def _diagnose(self, grads):
        """After a failed step: name the gradient at fault (global index), or return a copy
        of the list with C-contiguous, aligned copies of the gradients that are not (they
        are only read, so a copy is as good), or None (the fault is elsewhere)."""
        copies = None
        for i, (p, g) in enumerate(zip(self._params, grads)):
            name = "grads[%d]" % i
            if type(g) is not np.ndarray:
                if g is None:
                    raise TypeError("%s is None: every parameter needs a gradient array" % name)
                if isinstance(g, np.ndarray):
                    raise TypeError("%s must be a numpy.ndarray, not the subclass %s.%s (pass numpy.asarray(%s))"
                                    % (name, type(g).__module__, type(g).__name__, name))
                raise TypeError("%s must be a numpy.ndarray, got %s" % (name, type(g).__name__))
            if g.shape != p.shape:
                raise ValueError("%s has shape %s but parameter %d has shape %s" % (name, g.shape, i, p.shape))
            if g.dtype != p.dtype:
                raise TypeError("%s has dtype %s but parameter %d has dtype %s"
                                % (name, g.dtype.str if g.dtype.kind == "f" and not g.dtype.isnative else g.dtype,
                                   i, p.dtype))
            if p.size and np.may_share_memory(g, p):
                raise ValueError("%s overlaps parameter %d in memory; pass a separate array" % (name, i))
            if not (g.flags.c_contiguous and g.flags.aligned):
                if copies is None:
                    copies = list(grads)
                copies[i] = np.array(g, order="C")
        return copies

    # ---- the step -----------------------------------------------------------------------
    def step(self, grads: ArrayList | FloatArray, *, grad_scale: Scale | None = None,
             found_inf: FloatArray | None = None) -> list[FloatArray]:
        """Update every parameter in place with its gradient (``grads[i]`` for parameter
        ``i`` of ``parameters()``, of the parameter's dtype).  Returns the parameters.

        ``grad_scale``: a real > 0 and finite, or a float32 array of one element (a loss
        scaler's scale): every gradient is divided by it as it is loaded.  ``found_inf``: a
        float32 array of one element; nonzero, the step is skipped whole (nothing written,
        no state created, ``step_count`` not advanced; everything is checked all the same).
        With ``opt.max_norm`` set, the gradients are clipped by their global norm (every
        group's, unscaled).  See the module docstring.

        Everything (gradient count and arrays, every group's hyperparameters, step and
        state arrays, overlaps across groups) is checked before any array is written; a
        state array deleted after its group has stepped is refused (ValueError; SGD's
        ``momentum_buffer`` excepted).  A step that raises has changed nothing, and new state
        arrays are kept only once the step has run.  Gradients that are not C-contiguous are
        copied.  Interrupted (KeyboardInterrupt), a step leaves the optimizer as before it or
        as after it (see the module docstring); one optimizer is stepped by one thread at a
        time (a lock).
        """
        with self._lock:
            if type(grads) is not list:
                grads = self._as_grads(grads)
            if len(grads) != len(self._params):
                raise ValueError("grads has %d arrays but the optimizer has %d parameters"
                                 % (len(grads), len(self._params)))
            ext = {}
            if grad_scale is not None:
                ext["grad_scale"] = V.grad_scale(grad_scale)  # a float: every call divides by the same value
            skip = found_inf is not None and V.found_inf(found_inf) != 0.0  # read once
            if skip:
                ext["found_inf"] = _SKIP  # every call checks its arguments, then writes nothing
            hs = self._group_hypers()
            plan = self._plan_for(hs)
            try:
                self._run(plan, grads, hs, ext, skip)
            except (TypeError, ValueError):
                fixed = self._diagnose(grads)  # raises naming the gradient, if one is at fault
                if fixed is None:
                    raise
                self._run(plan, fixed, hs, ext, skip)
        return list(self._params)

    def _plan_for(self, hs):
        """The multi-tensor calls of a step with these hyperparameters: cached while no state
        array, group or needed state name changes (O(groups) to check)."""
        names = tuple([self._state_names(h) for h in hs])
        plan = self._plan
        if plan is not None and plan[0] == self._version[0] and plan[1] == names:
            return plan
        plan = self._build_plan(hs, names)
        self._plan = None if plan[3] else plan  # a plan with new arrays is used once
        return plan

    def _lost(self, i, n, steps):
        """Raise if state ``n`` of parameter ``i`` was deleted after its group has stepped (a
        step would silently restart it at its initial value).  SGD's ``momentum_buffer`` is
        exempt: as in torch, a missing buffer starts from the next gradient."""
        deleted = getattr(self._state[i], "_deleted", None)
        if steps and deleted and n in deleted and n not in self._lazy_state:
            raise ValueError("state of parameter %d has no %r after %d step%s (it was deleted from opt.state[%d]); "
                             "a step will not restart it at its initial value: assign an array to "
                             "opt.state[%d][%r], or call zero_state() to restart every state"
                             % (i, n, steps, "s" * (steps != 1), i, i, n))

    def _build_plan(self, hs, names):
        calls, new = [], []
        params, states = self._params, self._state
        shared_names, lazy = self._shared_state, self._lazy_state
        for g, (h, gnames) in enumerate(zip(hs, names)):
            start, stop = self._bounds[g]
            steps = self.step_count - self._offsets[g]
            per = tuple(n for n in gnames if n not in shared_names)
            shared = {}
            for n in gnames:
                if n in shared_names:  # one array for the group, in every parameter's dict
                    arr = states[start].get(n, _ABSENT)
                    if arr is _ABSENT:
                        self._lost(start, n, steps)
                        arr = self._init_state(n, params[start], h)
                    shared[n] = arr
                    new += [(i, n, arr) for i in range(start, stop) if states[i].get(n) is not arr]
            buckets = {}
            for i in range(start, stop):
                p, st = params[i], states[i]
                arrs, first = [], False
                for n in per:
                    a = st.get(n, _ABSENT)
                    if a is _ABSENT:
                        self._lost(i, n, steps)
                        a = self._init_state(n, p, h)
                        new.append((i, n, a))
                        first = first or n in lazy
                    arrs.append(a)
                m = None
                if self._master_weights and V.is_half(p.dtype):
                    m = st.get(_MASTER, _ABSENT)
                    if m is _ABSENT:
                        self._lost(i, _MASTER, steps)
                        m = self._init_state(_MASTER, p, h)
                        new.append((i, _MASTER, m))
                buckets.setdefault((p.dtype, first), []).append((i, arrs, m))
            for k, ((dtype, first), items) in enumerate(buckets.items()):
                c = _Call()
                c.group, c.dtype, c.first = g, dtype.name, first
                c.idx = [i for i, _, _ in items]
                c.params = [params[i] for i in c.idx]
                c.arrays = {n: [arrs[j] for _, arrs, _ in items] for j, n in enumerate(per)}
                c.masters = [m for _, _, m in items] if items[0][2] is not None else None
                c.shared = shared
                c.copy_shared = k > 0 and bool(shared)  # later calls of the group: a copy of the shared state
                c.names = ("params", "grads") + tuple(self._multi_names[n] for n in per)
                c.lists = [c.params, None] + [c.arrays[n] for n in per]
                if c.idx == list(range(c.idx[0], c.idx[-1] + 1)):
                    c.sel = _ALL if (c.idx[0] == 0 and len(c.idx) == len(params)) else slice(c.idx[0], c.idx[-1] + 1)
                else:
                    c.sel = c.idx
                calls.append(c)
        return (self._version[0], names, calls, new, self._combined(calls) if len(calls) > 1 else None)

    def _combined(self, calls):
        """For a step of several calls: the lists of one check (``multi_arrays_ok``, C) that
        every array the step writes (every call's parameters and state arrays, each group's
        shared array) is valid and overlaps no other array of the step, gradients included,
        which fastgd.multi checks only within each call.  Returns ``(head, tail, dummies,
        gather)``: the lists are ``head + (gradients,) + tail`` with the gradient list
        ``grads + dummies`` (or ``gather(...)`` of it).  When every call keeps the same state
        names the lists are the step's own layout (parameters, gradients, one list per
        state name, in parameter order); otherwise every written array is a "tensor" of its
        own, paired with its parameter's gradient.  A shared one-element array is a tensor
        paired with one-element arrays of our own (never written, disjoint from all)."""
        if any(c.masters is not None for c in calls):
            # the C check pairs every array with its parameter's dtype; master copies (float32
            # beside float16/bfloat16 parameters) are checked by the Python one
            return _PY_CHECK
        n = len(self._params)
        mus = [a for c in calls if not c.copy_shared for a in c.shared.values()]  # each group's
        dummies = [np.zeros(1) for _ in mus]
        pers = {tuple(c.arrays) for c in calls}
        if len(pers) == 1:
            per = pers.pop()
            cols = {name: [None] * n for name in per}
            for c in calls:
                for name in per:
                    col = cols[name]
                    for i, a in zip(c.idx, c.arrays[name]):
                        col[i] = a
            head = (list(self._params) + mus,)
            tail = tuple(cols[name] + [np.zeros(1) for _ in mus] for name in per)
            return head, tail, dummies, None
        written, which = list(self._params), list(range(n))
        for c in calls:
            for arrs in c.arrays.values():
                written += arrs
                which += c.idx
        written += mus
        which += range(n, n + len(mus))
        return (written,), (), dummies, operator.itemgetter(*which)

    def _explain(self, calls, grads, gl):
        """The combined check of a step of several calls failed: raise naming the problem
        (the Python checks, slow but exact), or return if they find none."""
        _multi._check_arrays(("params", "grads"), (self._params, grads))  # grads[i] named globally
        for c, g in zip(calls, gl):
            lists = list(c.lists)
            lists[1] = g
            try:
                _multi._check_arrays(c.names, lists)
            except (TypeError, ValueError) as exc:
                raise _with_prefix(exc, c.where()) from None
            if c.masters is not None:
                for i, m in zip(c.idx, c.masters):
                    V.master("opt.state[%d][%r]" % (i, _MASTER), m, self._params[i], ())
        entries = [(p, "parameter %d" % i, True) for i, p in enumerate(self._params)]
        entries += [(g, "grads[%d]" % i, False) for i, g in enumerate(grads)]
        for c in calls:
            for name, arrs in c.arrays.items():
                entries += [(a, "opt.state[%d][%r]" % (i, name), True) for i, a in zip(c.idx, arrs)]
            if c.masters is not None:
                entries += [(m, "opt.state[%d][%r]" % (i, _MASTER), True) for i, m in zip(c.idx, c.masters)]
            if not c.copy_shared:
                start = self._bounds[c.group][0]
                entries += [(a, "opt.state[%d][%r] (param_groups[%d]'s)" % (start, name, c.group), True)
                            for name, a in c.shared.items()]
        hit = _first_overlap(entries)
        if hit is not None:
            raise ValueError("%s and %s overlap in memory: every array a step writes (the parameters and state "
                             "arrays of every group) must be a separate buffer, and no gradient may overlap one"
                             % hit)

    def _check_shared(self, calls):
        """Each group's shared state (NAdam's mu_product): a writeable float64 array of one
        element whose value a valid run can hold (a running product of factors in [0, 1): in
        [0, 1]; 0 once it underflows).  Outside that range the bias corrections divide by
        zero or change sign."""
        for c in calls:
            if c.copy_shared:  # the group's first call has it
                continue
            for name, a in c.shared.items():
                where = "opt.state[%d][%r]" % (self._bounds[c.group][0], name)
                V.mu_product_value(where, V.one_element_f64(where, a))

    def _run(self, plan, grads, hs, ext, skip):
        """Check, run every call, commit: all or nothing (see ``step``).  ``ext``: the fused
        extras' keywords of every call (``grad_scale``, ``found_inf`` when ``skip``); the clip
        factor of ``max_norm`` is added here, from the norm of all of ``grads``."""
        calls, new, combined = plan[2], plan[3], plan[4]
        ts = [self.step_count - off + 1 for off in self._offsets]
        gl = [c.grads(grads) for c in calls]
        # Everything a kernel call would refuse is checked here, for every call, before the
        # first one writes (the hyperparameters: _group_hypers): each group's step, its shared
        # state and, with several calls, every array of every call in one combined check
        # (a single call checks its own arrays, and writes nothing if they fail).
        if self._rule.step is not None and max(ts) > V.MAX_STEP:
            g = max(range(len(ts)), key=ts.__getitem__)
            raise ValueError("param_groups[%d] would take step %d: fastgd's step limit is 2**53 (the bias "
                             "corrections take the step as a double)" % (g, ts[g]))
        if self._shared_state:
            self._check_shared(calls)
        if combined is _PY_CHECK:
            self._explain(calls, grads, gl)
        elif combined is not None:
            head, tail, dummies, gather = combined
            g_all = grads + dummies if dummies else grads
            if gather is not None:
                g_all = list(gather(g_all))
            if _arrays_ok is None or not _arrays_ok(head + (g_all,) + tail, 1, 0):
                self._explain(calls, grads, gl)
        if self._max_norm is not None and not skip:
            # one read pass over every gradient of the step (all groups and dtypes); the factor
            # is handed to every call as it is (the calls' own norms would be per call)
            norm = _multi.global_norm(grads, grad_scale=ext.get("grad_scale"), backend=self.backend)
            ext = dict(ext, max_norm=_multi._Clip(V.clip_coef(self._max_norm, norm)))
        # a group's later calls read P_{t-1} from copies taken before its first call advances it
        sh = [{k: v.copy() for k, v in c.shared.items()} if c.copy_shared else c.shared for c in calls]
        with _HoldInterrupt():
            done = 0
            try:
                for c, g, s in zip(calls, gl, sh):
                    self._call(c, g, s, hs[c.group], ts[c.group], ext)
                    done += 1
            except BaseException as exc:
                # What can still fail here was not pre-checkable: KeyboardInterrupt raised by a
                # kernel, MemoryError, an error of the backend itself (e.g. numba failing to
                # compile), or arrays changed by another thread (outside the lock) since the
                # checks above.
                if done == 0 or skip:  # nothing written: the optimizer is as before the step
                    if len(calls) > 1 and isinstance(exc, (TypeError, ValueError)):
                        raise _with_prefix(exc, calls[done].where()) from None
                    raise
                # some calls have written: finish the step (the call that raised wrote nothing,
                # as every fastgd.multi call that raises), commit it, then re-raise
                for c, g, s in zip(calls[done:], gl[done:], sh[done:]):
                    try:
                        self._call(c, g, s, hs[c.group], ts[c.group], ext)
                    except BaseException as again:
                        stepped = sorted(i for c2 in calls[:done] for i in c2.idx)
                        raise RuntimeError(
                            "a step of %s was interrupted (%r) and could not be completed: parameters %s are "
                            "updated, the others are not, and step_count is unchanged; reload a saved state"
                            % (type(self).__name__, exc, stepped)) from again
                    done += 1
                self._commit(new)
                raise
            if not skip:  # a skipped step keeps no new state and does not count
                self._commit(new)

    def _commit(self, new):
        if new:
            states = self._state
            for i, n, a in new:
                st = states[i]
                dict.__setitem__(st, n, a)
                deleted = getattr(st, "_deleted", None)
                if deleted:
                    deleted.discard(n)
            self._version[0] += 1
        self.step_count += 1

    def _call(self, c, grads, shared, h, t, ext):
        """One multi-tensor call of ``fastgd.multi.<rule>_step`` for call ``c``: ``c.arrays``
        maps each state name to the list of the call's arrays, ``shared`` each shared state
        name to its array, ``t`` is the group's step, ``c.first`` says the call's lazy state
        arrays were created for this step (SGD then passes step=1: the buffer starts as the
        gradient); ``ext`` holds the step's fused extras, ``c.masters`` the master copies."""
        rule = self._rule
        arrays, first = c.arrays, c.first
        kw = {k: h[k] for k in self._kernel_hyper}
        if ext:
            kw.update(ext)
        if c.masters is not None:
            kw["master_params"] = c.masters
        if rule.betas:
            kw[rule.betas[0]], kw[rule.betas[1]] = h["betas"]
        if rule.step == "required":
            kw["step"] = t
        elif rule.step == "optional":
            kw["step"] = 1 if first else t
        for st in rule.state:
            if st.scalar:
                kw[st.multi] = shared[st.torch]
            elif st.torch in arrays:
                kw[st.multi] = arrays[st.torch]
        getattr(_multi, self._multi_fn)(c.params, grads, backend=self.backend, **kw)

    def _state_names(self, h):
        """The state arrays (torch's names) a step with hyperparameters ``h`` uses."""
        return tuple(st.torch for st in self._rule.state if st.needed(h))

    def _init_state(self, name, p, h):
        """A new state array: the table's initial value (a number, or a hyperparameter's), of
        ``p``'s shape and its state dtype; a master copy: ``p`` converted (exactly) to float32."""
        if name == _MASTER:
            return np.array(p, dtype=np.float32, order="C")
        st = self._by_torch_name[name]
        value = h[st.init] if isinstance(st.init, str) else st.init
        if st.scalar:
            return np.full(1, value, dtype=np.float64)
        dt = self._state_dtype_for(p)
        return np.zeros(p.shape, dt) if value == 0 else np.full(p.shape, value, dt)

    def _check_combination(self, h):
        if self._rule is not None and self._rule.combine is not None:
            self._rule.combine(h)

    def _state_like(self, name, p):
        """(shape, dtype) of state array ``name`` of parameter ``p``."""
        if name in self._shared_state:
            return (1,), np.dtype(np.float64)
        if name == _MASTER:
            return p.shape, _F32
        return p.shape, self._state_dtype_for(p)

    def _dtype_hint(self, name, p, got):
        """Why state array ``name`` of parameter ``p`` may not have dtype ``got`` (for a message)."""
        if name == _MASTER:
            return " (the master copy of a %s parameter is float32)" % p.dtype
        if name in self._shared_state or not V.is_half(p.dtype):
            return ""
        if got == p.dtype:
            fix = "construct the optimizer with state_dtype='param' to keep %s state" % got
        elif got == _F32:
            fix = "construct the optimizer with state_dtype='float32' (the default) to keep float32 state"
        else:
            fix = "the state of a %s parameter is float32 or %s" % (p.dtype, p.dtype)
        return " (this optimizer keeps %s state for its %s parameters, state_dtype=%r; %s)" % (
            self._state_dtype_for(p), p.dtype, self._state_dtype, fix)


    def zero_state(self) -> None:
        """Forget the state and the step counts (the parameters and groups are kept; master
        copies are forgotten too: the next step makes them anew from the parameters)."""
        with self._lock:
            self._state = _StateList(_ParamState(self._version) for _ in self._params)
            self.step_count = 0
            self._offsets = [0] * len(self._bounds)
            self._version[0] += 1
            self._plan = None

    # ---- state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: ``{"optimizer", "step_count", "param_groups",
        "state"}``.  ``param_groups``: per group its hyperparameters, ``"params"`` (the
        indices of its parameters in ``parameters()``) and ``"step"`` (the steps it has
        taken); ``state``: per parameter a dict with a copy of each state array.  A state
        array a group's next step would create (its hyperparameters changed since) is
        included as that step would create it.  The master copies of float16/bfloat16
        parameters (``master_weights=True``) are state arrays (``"master_param"``).  The
        parameters are not included: see :func:`save`."""
        with self._lock:
            groups, states = [], []
            for g, group in enumerate(self.param_groups):
                start, stop = self._bounds[g]
                steps = self.step_count - self._offsets[g]
                entry = {k: v for k, v in group.items() if k != "params"}
                entry["params"] = list(range(start, stop))
                entry["step"] = steps
                groups.append(entry)
                try:
                    h = self._check_hyper({k: v for k, v in group.items() if k != "params"})
                    needed = [n for n in self._state_names(h) if n not in self._lazy_state] if steps else []
                except (TypeError, ValueError):
                    h, needed = None, []
                shared: dict[str, Any] = {}
                for i in range(start, stop):
                    st = {k: v.copy() for k, v in self._state[i].items()}
                    deleted = getattr(self._state[i], "_deleted", None) or ()
                    for n in (needed + [_MASTER] if steps and self._has_master(self._params[i]) else needed):
                        if n not in st and n not in deleted:  # deleted: left out (a load refuses it, as a step)
                            if n in self._shared_state:
                                st[n] = shared.setdefault(n, self._init_state(n, self._params[i], h)).copy()
                            else:
                                st[n] = self._init_state(n, self._params[i], h)
                    states.append(st)
            return {"optimizer": type(self).__name__, "step_count": self.step_count, "param_groups": groups,
                    "state": states}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()`` (copies the arrays).  Also accepts the one-group form
        of earlier versions (``"hyper"`` instead of ``"param_groups"``).  Everything is
        checked first: the optimizer's name; ``step_count`` (at most 2**53); per group its
        parameter indices, hyperparameters and steps; NAdam's ``mu_product`` in [0, 1];
        per parameter every state array its group's rule needs
        (when the group has stepped), each with the right shape and dtype, none unknown and
        none negative where the rule's values never are.  The dtype is this optimizer's:
        float32 state for a float16/bfloat16 parameter (``state_dtype="float32"``) or the
        parameter's (``state_dtype="param"``, and always for float32/float64 parameters); with
        ``master_weights=True`` every float16/bfloat16 parameter of a group that has stepped
        needs its float32 ``"master_param"``, without it none may have one.  A call that
        raises has changed nothing."""
        with self._lock:
            self._prepare_load(state_dict)()

    def _prepare_load(self, sd):
        """Check a state dict; return the function that installs it."""
        if not isinstance(sd, Mapping):
            raise TypeError("state_dict must be a dict, got %s" % type(sd).__name__)
        expected = ("optimizer", "step_count", "hyper", "state") if "hyper" in sd and "param_groups" not in sd \
            else ("optimizer", "step_count", "param_groups", "state")
        for key in sd:
            if key not in expected:
                raise ValueError("state_dict has an unknown entry %r (expected %s)" % (key, ", ".join(expected)))
        for key in expected:
            if key not in sd:
                raise ValueError("state_dict has no %r entry" % key)
        name = type(self).__name__
        if sd["optimizer"] != name:
            raise ValueError("state_dict is for %s, not %s" % (sd["optimizer"], name))
        step_count = sd["step_count"]
        if type(step_count) is bool or not isinstance(step_count, (int, np.integer)) or step_count < 0:
            raise ValueError("state_dict['step_count'] must be an integer >= 0, got %r" % (step_count,))
        if step_count > V.MAX_STEP:
            raise ValueError("state_dict['step_count'] is %d, beyond fastgd's step limit 2**53" % step_count)
        step_count = int(step_count)

        # the groups: (hyperparameters, steps) each
        n_groups = len(self.param_groups)
        entries = []
        if "hyper" in expected:
            if n_groups != 1:
                raise ValueError("state_dict holds one group ('hyper') but the optimizer has %d param groups"
                                 % n_groups)
            if not isinstance(sd["hyper"], Mapping):
                raise TypeError("state_dict['hyper'] must be a dict, got %s" % type(sd["hyper"]).__name__)
            entries.append(("state_dict['hyper']", dict(sd["hyper"]), step_count))
        else:
            pg = sd["param_groups"]
            if not isinstance(pg, (list, tuple)) or len(pg) != n_groups:
                raise ValueError("state_dict['param_groups'] must be a list of %d group%s (the optimizer's), got %s"
                                 % (n_groups, "s" * (n_groups != 1), "%d" % len(pg) if isinstance(pg, (list, tuple))
                                    else type(pg).__name__))
            for g, (entry, (start, stop)) in enumerate(zip(pg, self._bounds)):
                where = "state_dict['param_groups'][%d]" % g
                if not isinstance(entry, Mapping):
                    raise TypeError("%s must be a dict, got %s" % (where, type(entry).__name__))
                if "params" not in entry:
                    raise ValueError("%s has no 'params' entry" % where)
                idx = entry["params"]
                if not isinstance(idx, (list, tuple)) or list(idx) != list(range(start, stop)):
                    raise ValueError("%s['params'] is %r but the optimizer's group %d holds parameters %d..%d: "
                                     "the groups must hold as many parameters, in the same order"
                                     % (where, idx, g, start, stop - 1))
                steps = entry.get("step", step_count)
                if type(steps) is bool or not isinstance(steps, (int, np.integer)) or not 0 <= steps <= step_count:
                    raise ValueError("%s['step'] must be an integer in [0, step_count=%d] (at most 2**53, "
                                     "fastgd's step limit), got %r" % (where, step_count, steps))
                entries.append((where, {k: v for k, v in entry.items() if k not in ("params", "step")}, int(steps)))
        hs = []
        for where, hyper, _ in entries:
            try:
                hs.append(self._check_hyper(hyper))
            except (TypeError, ValueError) as exc:
                raise _with_prefix(exc, "%s: " % where) from None

        # the state arrays
        states = sd["state"]
        n = len(self._params)
        if isinstance(states, Mapping):  # torch's form: {parameter index: state}
            for k in states:
                if type(k) is bool or not isinstance(k, (int, np.integer)) or not 0 <= k < n:
                    raise ValueError("state_dict['state'] has an entry for %r, not a parameter index (0..%d)"
                                     % (k, n - 1))
            states = [states.get(i, {}) for i in range(n)]
        if not isinstance(states, (list, tuple)) or len(states) != n:
            raise ValueError("state_dict['state'] must hold one dict per parameter (%d)" % n)
        known = self._all_state_names
        new_states = []
        for g, ((start, stop), h, (_, _, steps)) in enumerate(zip(self._bounds, hs, entries)):
            needed = [k for k in self._state_names(h) if k not in self._lazy_state] if steps else []
            shared = {}
            for i in range(start, stop):
                where = "state_dict['state'][%d]" % i
                st, p = states[i], self._params[i]
                if not isinstance(st, Mapping):
                    raise TypeError("%s must be a dict, got %s" % (where, type(st).__name__))
                if st and not steps:
                    raise ValueError("%s has state arrays but its group has taken no step (step_count 0)" % where)
                out = {}
                master = self._has_master(p)
                for k, arr in st.items():
                    if k == _MASTER and not master:
                        raise ValueError("%s has a %r array, but %s" % (
                            where, k, "this optimizer keeps no master weights (master_weights=False)"
                            if not self._master_weights else "parameter %d has dtype %s and master copies are kept "
                            "for float16/bfloat16 parameters only" % (i, p.dtype)))
                    if k not in known and k != _MASTER:
                        raise ValueError("%s has an unknown state array %r (%s keeps %s)"
                                         % (where, k, name, ", ".join(known + ((_MASTER,) if master else ()))))
                    if type(arr) is not np.ndarray:
                        raise TypeError("%s[%r] must be a numpy.ndarray, got %s" % (where, k, type(arr).__name__))
                    shape, dtype = self._state_like(k, p)
                    if arr.shape != shape:
                        raise ValueError("%s[%r] has shape %s dtype %s, expected shape %s dtype %s"
                                         % (where, k, arr.shape, arr.dtype, shape, dtype))
                    if arr.dtype != dtype:
                        raise ValueError("%s[%r] has shape %s dtype %s, expected shape %s dtype %s%s"
                                         % (where, k, arr.shape, arr.dtype, shape, dtype,
                                            self._dtype_hint(k, p, arr.dtype)))
                    if k in self._nonneg_state and arr.size and np.any(arr < 0):
                        raise ValueError("%s[%r] has negative values, which %s never has: the state is damaged"
                                         % (where, k, k))
                    if k in self._shared_state:
                        V.mu_product_value("%s[%r]" % (where, k), float(arr[0]))
                        first = shared.setdefault(k, (i, arr))
                        if first[1].tobytes() != arr.tobytes():
                            raise ValueError("%s[%r] is %r but parameter %d of the same group has %r: a group shares "
                                             "one %s" % (where, k, arr[0], first[0], first[1][0], k))
                    out[k] = arr
                for k in needed:
                    if k not in out:
                        raise ValueError("%s has no %r array, but its group has taken %d step%s: %s with these "
                                         "hyperparameters keeps %s" % (where, k, steps, "s" * (steps != 1), name,
                                                                       ", ".join(self._state_names(h))))
                if master and steps and _MASTER not in out:
                    raise ValueError("%s has no %r array, but its group has taken %d step%s and this optimizer keeps "
                                     "a float32 master copy of its %s parameter (master_weights=True)"
                                     % (where, _MASTER, steps, "s" * (steps != 1), p.dtype))
                new_states.append(out)
            for k, (i0, _) in shared.items():
                missing = [i for i in range(start, stop) if k not in new_states[i]]
                if missing:
                    raise ValueError("state_dict['state'][%d] has no %r array but parameter %d of its group has one"
                                     % (missing[0], k, i0))

        def install():
            copies = []
            for g, (start, stop) in enumerate(self._bounds):
                shared = {}
                for i in range(start, stop):
                    st = {}
                    for k, arr in new_states[i].items():
                        if k in self._shared_state:
                            st[k] = shared.setdefault(k, np.array(arr, order="C"))
                        else:
                            st[k] = np.array(arr, order="C")  # a copy: aligned, contiguous, our own
                    copies.append(st)
            for group, h in zip(self.param_groups, hs):
                for k in [k for k in group if k != "params"]:
                    del group[k]
                group.update(h)
            self._state = _StateList(_ParamState(self._version, st) for st in copies)
            self.step_count = step_count
            self._offsets = [step_count - steps for _, _, steps in entries]
            self._version[0] += 1
            self._plan = None
        return install


def _split_params(params):
    """The constructor's ``params``: (groups, from_dicts) with groups a list of dicts (the
    caller's) or a one-element list holding the list of arrays."""
    if isinstance(params, np.ndarray):
        return [[params]], False
    if isinstance(params, Mapping):
        return [params], True
    if isinstance(params, (set, frozenset, str, bytes)):
        raise TypeError("params must be a list of numpy arrays or of dicts (parameter groups), got %s"
                        % type(params).__name__)
    if not isinstance(params, (list, tuple)):
        try:
            params = list(params)
        except TypeError:
            raise TypeError("params must be a list of numpy arrays or of dicts (parameter groups), got %s"
                            % type(params).__name__) from None
    params = list(params)
    if not params:
        raise ValueError("params is empty")
    dicts = [isinstance(p, Mapping) for p in params]
    if all(dicts):
        return params, True
    if any(dicts):
        raise TypeError("params mixes arrays and dicts: pass a list of arrays or a list of parameter groups (dicts)")
    return [params], False


# ---------------------------------------------------------------------------------------
# the optimizers

def _from_table(cls, rule):
    """Set an optimizer class's rule facts from its table entry: the defaults (torch's, in
    the constructor's order; ``betas=(beta1, beta2)``), a check per hyperparameter, the state
    names (torch's), which are never negative, shared, or made from the first gradient, each
    one's fastgd.multi argument, and the multi-tensor function."""
    hypers = {h.name: h for h in rule.hyper + rule.optim_hyper}
    defaults, spec = {}, {}
    for name, h in hypers.items():
        if rule.betas and name in rule.betas:
            if name == rule.betas[0]:
                b1, b2 = (hypers[b] for b in rule.betas)
                defaults["betas"] = (b1.default, b2.default)
                spec["betas"] = _betas(b1.check == "unit_closed")
            continue
        defaults[name] = rule.optim_defaults.get(name, h.default)
        spec[name] = lambda n, v, h=h: h(v, n)
    order = [n for n in inspect.signature(cls.__init__).parameters if n in defaults]
    cls._rule = rule
    cls._defaults = {n: defaults[n] for n in order + [n for n in defaults if n not in order]}
    cls._spec = spec
    cls._kernel_hyper = tuple(h.name for h in rule.hyper if not (rule.betas and h.name in rule.betas))
    cls._all_state_names = tuple(st.torch for st in rule.state)
    cls._by_torch_name = {st.torch: st for st in rule.state}
    cls._nonneg_state = frozenset(st.torch for st in rule.state if st.nonneg)
    cls._shared_state = tuple(st.torch for st in rule.state if st.scalar)
    cls._lazy_state = tuple(st.torch for st in rule.state if st.from_grad)
    cls._multi_names = {st.torch: st.multi for st in rule.state if not st.scalar}
    cls._multi_fn = rule.name + "_step"  # looked up in fastgd.multi at each call


class SGD(Optimizer, rule="sgd"):
    """``SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
    maximize=False, backend=None, state_dtype="float32", master_weights=False,
    max_norm=None)`` over :func:`fastgd.sgd_step`, as ``torch.optim.SGD``:
    the momentum buffer starts as a copy of the first gradient (``step=1`` is passed to the
    kernel on the step that creates it; a state dict without a buffer means the same)."""

    def __init__(self, params: Params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
                 backend: Backend | None = None, state_dtype: StateDType = "float32", master_weights: bool = False,
                 max_norm: float | None = None) -> None:
        super().__init__(params, backend=backend, state_dtype=state_dtype, master_weights=master_weights,
                         max_norm=max_norm, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)


class Adam(Optimizer, rule="adam"):
    """``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
    maximize=False, backend=None, state_dtype="float32", master_weights=False,
    max_norm=None)`` over :func:`fastgd.adam_step`, as ``torch.optim.Adam``."""

    def __init__(self, params: Params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 backend: Backend | None = None, state_dtype: StateDType = "float32", master_weights: bool = False,
                 max_norm: float | None = None) -> None:
        super().__init__(params, backend=backend, state_dtype=state_dtype, master_weights=master_weights,
                         max_norm=max_norm, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)


class AdamW(Adam, rule="adamw"):
    """``AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
    maximize=False, backend=None, state_dtype="float32", master_weights=False,
    max_norm=None)`` over :func:`fastgd.adamw_step`, as ``torch.optim.AdamW``."""

    def __init__(self, params: Params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 backend: Backend | None = None, state_dtype: StateDType = "float32", master_weights: bool = False,
                 max_norm: float | None = None) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, backend=backend, state_dtype=state_dtype,
                         master_weights=master_weights, max_norm=max_norm)


class Adamax(Optimizer, rule="adamax"):
    """``Adamax(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, *, maximize=False,
    backend=None, state_dtype="float32", master_weights=False,
    max_norm=None)`` over :func:`fastgd.adamax_step`, as ``torch.optim.Adamax``."""

    def __init__(self, params: Params, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, maximize: bool = False, backend: Backend | None = None,
                 state_dtype: StateDType = "float32", master_weights: bool = False,
                 max_norm: float | None = None) -> None:
        super().__init__(params, backend=backend, state_dtype=state_dtype, master_weights=master_weights,
                         max_norm=max_norm, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         maximize=maximize)


class NAdam(Optimizer, rule="nadam"):
    """``NAdam(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
    decoupled_weight_decay=False, *, maximize=False, backend=None, state_dtype="float32",
    master_weights=False, max_norm=None)`` over :func:`fastgd.nadam_step`, as ``torch.optim.NAdam``
    (state ``mu_product``: the running product of the momentum schedule, a float64 array of
    one element, one per group)."""

    def __init__(self, params: Params, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False, *,
                 maximize: bool = False, backend: Backend | None = None, state_dtype: StateDType = "float32",
                 master_weights: bool = False, max_norm: float | None = None) -> None:
        super().__init__(params, backend=backend, state_dtype=state_dtype, master_weights=master_weights,
                         max_norm=max_norm, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                         maximize=maximize)


class RAdam(Optimizer, rule="radam"):
    """``RAdam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
    decoupled_weight_decay=False, *, maximize=False, backend=None, state_dtype="float32",
    master_weights=False, max_norm=None)`` over :func:`fastgd.radam_step`, as ``torch.optim.RAdam``."""

    def __init__(self, params: Params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *, maximize: bool = False,
                 backend: Backend | None = None, state_dtype: StateDType = "float32", master_weights: bool = False,
                 max_norm: float | None = None) -> None:
        super().__init__(params, backend=backend, state_dtype=state_dtype, master_weights=master_weights,
                         max_norm=max_norm, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)


class Adagrad(Optimizer, rule="adagrad"):
    """``Adagrad(params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
    eps=1e-10, *, maximize=False, backend=None, state_dtype="float32", master_weights=False,
    max_norm=None)`` over :func:`fastgd.adagrad_step`, as
    ``torch.optim.Adagrad`` (one of the texts starts the accumulator at 1:
    ``initial_accumulator_value=1``)."""

    def __init__(self, params: Params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, *, maximize: bool = False,
                 backend: Backend | None = None, state_dtype: StateDType = "float32", master_weights: bool = False,
                 max_norm: float | None = None) -> None:
        super().__init__(params, backend=backend, state_dtype=state_dtype, master_weights=master_weights,
                         max_norm=max_norm, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize)


class Adadelta(Optimizer, rule="adadelta"):
    """``Adadelta(params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, *, maximize=False,
    backend=None, state_dtype="float32", master_weights=False,
    max_norm=None)`` over :func:`fastgd.adadelta_step`, as ``torch.optim.Adadelta``."""

    def __init__(self, params: Params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
                 *, maximize: bool = False, backend: Backend | None = None, state_dtype: StateDType = "float32",
                 master_weights: bool = False, max_norm: float | None = None) -> None:
        super().__init__(params, backend=backend, state_dtype=state_dtype, master_weights=master_weights,
                         max_norm=max_norm, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                         maximize=maximize)


class RMSprop(Optimizer, rule="rmsprop"):
    """``RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
    centered=False, *, maximize=False, backend=None, state_dtype="float32", master_weights=False,
    max_norm=None)`` over :func:`fastgd.rmsprop_step`, as ``torch.optim.RMSprop``."""

    def __init__(self, params: Params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False, *, maximize: bool = False,
                 backend: Backend | None = None, state_dtype: StateDType = "float32", master_weights: bool = False,
                 max_norm: float | None = None) -> None:
        super().__init__(params, backend=backend, state_dtype=state_dtype, master_weights=master_weights,
                         max_norm=max_norm, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum, centered=centered, maximize=maximize)


class Lion(Optimizer, rule="lion"):
    """``Lion(params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0, *, maximize=False,
    backend=None, state_dtype="float32", master_weights=False,
    max_norm=None)`` over :func:`fastgd.lion_step` (Chen et al. 2023, decoupled weight decay)."""

    def __init__(self, params: Params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, *, maximize: bool = False, backend: Backend | None = None,
                 state_dtype: StateDType = "float32", master_weights: bool = False,
                 max_norm: float | None = None) -> None:
        super().__init__(params, backend=backend, state_dtype=state_dtype, master_weights=master_weights,
                         max_norm=max_norm, lr=lr, betas=betas, weight_decay=weight_decay,
                         maximize=maximize)


OPTIMIZERS: dict[str, type[Optimizer]] = {name: globals()[rule.optimizer]  # type: ignore[index]
                                          for name, rule in RULES.items()}  # the table's rules, by name


# ---------------------------------------------------------------------------------------
# save / load

def _json_default(v):
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    raise TypeError("%r (%s) cannot be saved as JSON" % (v, type(v).__name__))


def _is_bfloat16(dt):
    return V.is_half(dt) and dt.char != "e"


def save(opt: Optimizer, path: str | os.PathLike[str] | IO[bytes], *, params: bool = True) -> None:
    """Write ``opt.state_dict()`` (and, with ``params=True``, the parameters) to an ``.npz``
    file.  Arrays are stored bit-exactly; groups and hyperparameters as JSON (no pickle).

    Layout: ``__meta__`` (JSON: ``format`` ``"fastgd.optim/2"``, ``optimizer``,
    ``step_count``, ``param_groups``, ``n_params``, ``params``, ``state_names``),
    ``state/<i>/<name>`` per state array, ``param/<i>`` per parameter.  ``.npy`` has no
    bfloat16: such arrays are stored as their bits (``uint16``), their entries listed in
    ``__meta__["bfloat16"]``, and the format is then ``"fastgd.optim/3"`` (which earlier
    versions refuse by name).  float16 arrays are stored as they are."""
    if not isinstance(opt, Optimizer):
        raise TypeError("opt must be a fastgd.optim optimizer, got %s" % type(opt).__name__)
    with opt._lock:
        sd = opt.state_dict()
        values = opt.parameters() if params else []
        arrays, bf16 = {}, []
        for i, st in enumerate(sd["state"]):
            for name, arr in st.items():
                arrays["state/%d/%s" % (i, name)] = arr
        for i, p in enumerate(values):
            arrays["param/%d" % i] = p
        for key, arr in arrays.items():
            if _is_bfloat16(arr.dtype):
                arrays[key] = arr.view(np.uint16)
                bf16.append(key)
        meta = {"format": _FORMAT_BF16 if bf16 else _FORMAT, "optimizer": sd["optimizer"],
                "step_count": sd["step_count"], "param_groups": sd["param_groups"], "n_params": len(sd["state"]),
                "params": bool(params), "state_names": [sorted(st) for st in sd["state"]]}
        if bf16:
            meta["bfloat16"] = bf16
        arrays["__meta__"] = np.array(json.dumps(meta, default=_json_default))
        np.savez(path, **arrays)


def _read(path, params):
    """(state dict, parameter values or None) from a file written by :func:`save`."""
    if isinstance(path, (str, os.PathLike)):
        with open(path, "rb") as f:
            head = f.read(4)
        if head != b"PK\x03\x04":
            raise ValueError("it is not an .npz archive (no zip header): not written by fastgd.optim.save")
    data = np.load(path, allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError("it is a single .npy array, not an .npz archive written by fastgd.optim.save")
    with data:
        files = set(data.files)
        if "__meta__" not in files:
            raise ValueError("it has no __meta__ entry: not written by fastgd.optim.save")
        meta = json.loads(data["__meta__"].item())
        if not isinstance(meta, dict):
            raise ValueError("its __meta__ is not a JSON object")
        fmt = meta.get("format")
        if fmt not in _READABLE_FORMATS:
            raise ValueError("its format is %r (this version reads %s)" % (fmt, ", ".join(_READABLE_FORMATS)))
        n = meta["n_params"]
        names = meta["state_names"]
        if type(n) is not int or n < 0 or not isinstance(names, list) or len(names) != n or \
                not all(isinstance(ns, list) and all(isinstance(s, str) for s in ns) for ns in names):
            raise ValueError("its __meta__ has a bad n_params / state_names")
        stored = bool(meta["params"])
        wanted = {"__meta__"} | {"state/%d/%s" % (i, s) for i, ns in enumerate(names) for s in ns}
        if stored:
            wanted |= {"param/%d" % i for i in range(n)}
        for entry in sorted(files - wanted):
            raise ValueError("it has an entry %r that its __meta__ does not describe" % entry)
        for entry in sorted(wanted - files):
            raise ValueError("its entry %r is missing" % entry)
        bf16 = meta.get("bfloat16", []) if fmt == _FORMAT_BF16 else []
        if not isinstance(bf16, list) or not all(isinstance(e, str) and e in wanted and e != "__meta__"
                                                 for e in bf16):
            raise ValueError("its __meta__ has a bad bfloat16 list")
        bf16 = frozenset(bf16)

        def entry(key):
            arr = data[key]
            if key in bf16:
                if arr.dtype != np.uint16:
                    raise ValueError("its entry %r is listed as bfloat16 but holds %s, not the uint16 bits of "
                                     "bfloat16 values" % (key, arr.dtype))
                try:
                    import ml_dtypes
                except ImportError:
                    raise ValueError("it holds bfloat16 arrays, which need the ml_dtypes package") from None
                arr = arr.view(ml_dtypes.bfloat16)
            return arr
        state = [{s: entry("state/%d/%s" % (i, s)) for s in ns} for i, ns in enumerate(names)]
        values = [entry("param/%d" % i) for i in range(n)] if params and stored else None
    sd = {"optimizer": meta["optimizer"], "step_count": meta["step_count"], "state": state}
    if fmt == "fastgd.optim/1":
        sd["hyper"] = meta["hyper"]
    else:
        sd["param_groups"] = meta["param_groups"]
    return sd, values


def load(opt: Optimizer, path: str | os.PathLike[str] | IO[bytes], *, params: bool = True) -> Optimizer:
    """Restore into ``opt`` what :func:`save` wrote: the state (``load_state_dict``) and,
    with ``params=True`` (and if the file has them), the parameter values, copied in place.
    Reads files of this version and of the previous one (format ``fastgd.optim/1``, one
    group).  Everything is read and checked before anything is written: a file that is
    damaged (truncated, not an ``.npz``, bad JSON, missing entries) or does not fit ``opt``
    raises one ValueError naming the file (the cause chained) and changes nothing, neither
    the optimizer nor the parameters.  Returns ``opt``."""
    if not isinstance(opt, Optimizer):
        raise TypeError("opt must be a fastgd.optim optimizer, got %s" % type(opt).__name__)
    try:
        sd, values = _read(path, params)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:
        raise ValueError("cannot load %s: %s: %s" % (path, type(exc).__name__, exc)) from exc
    with opt._lock:
        try:
            install = opt._prepare_load(sd)
            if values is not None:
                ps = opt.parameters()
                if len(values) != len(ps):
                    raise ValueError("the file holds %d parameters, the optimizer has %d" % (len(values), len(ps)))
                for i, (p, v) in enumerate(zip(ps, values)):
                    if type(v) is not np.ndarray or p.shape != v.shape or p.dtype != v.dtype:
                        raise ValueError("saved parameter %d has shape %s dtype %s, the optimizer's has shape %s "
                                         "dtype %s" % (i, getattr(v, "shape", "?"), getattr(v, "dtype", "?"),
                                                       p.shape, p.dtype))
                    if not p.flags.writeable:
                        raise ValueError("parameter %d is not writeable" % i)
        except (TypeError, ValueError) as exc:
            raise ValueError("cannot load %s: %s" % (path, exc)) from exc
        with _HoldInterrupt():
            install()
            if values is not None:
                for p, v in zip(opt.parameters(), values):
                    p[...] = v
    return opt


# ---------------------------------------------------------------------------------------
# learning-rate schedules

class LRScheduler:
    """Base of the schedules, as ``torch.optim.lr_scheduler``: built over an optimizer, it
    remembers each group's current ``lr`` as its base (``base_lrs``; ``base_lr`` is the first
    group's); ``step()`` advances ``last_epoch`` (call it once per epoch, or once per step:
    the unit is yours) and sets every group's lr to ``lr_at(last_epoch, base)`` (groups
    added later start from their lr when first seen).  Construction performs the first
    ``step()``, so ``last_epoch`` is 0 and the lr is ``lr_at(0)`` (= the base for the
    built-in schedules).  The lr is always computed in closed form from the base and
    ``last_epoch`` (no accumulated round-off, and any epoch can be jumped to).  Subclasses
    define ``lr_at(epoch, base_lr=None)`` (None: ``base_lr``).

    ``last_epoch`` given to the constructor or ``load_state_dict`` must be an integer in
    ``[-1, 2**53]``.  The built-in schedules never raise computing an lr: a factor that
    overflows is ``inf`` (``gamma > 1`` for many epochs; an lr of ``inf`` passes the lr check,
    ``lr >= 0``), one that underflows is 0, and ``0 * inf`` is 0 (a zero base lr or a zero
    factor gives lr 0)."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError("optimizer must be a fastgd.optim optimizer, got %s" % type(optimizer).__name__)
        last_epoch = _epoch("last_epoch", last_epoch)
        self.optimizer = optimizer
        self.base_lrs: list[float] = []
        self.last_epoch = last_epoch
        self.step()

    @property
    def base_lr(self) -> float:
        return self.base_lrs[0]

    def lr_at(self, epoch: int, base_lr: float | None = None) -> float:
        raise NotImplementedError

    def _go(self, epoch, bases):
        """Compute every group's lr at ``epoch`` (groups without a base yet: their current lr),
        then set them, ``base_lrs`` and ``last_epoch`` (nothing changes if one raises)."""
        groups = self.optimizer.param_groups
        bases = list(bases) + [V.nonneg("param_groups[%d]['lr']" % g, groups[g]["lr"])
                               for g in range(len(bases), len(groups))]
        lrs = [self.lr_at(epoch, base) for base in bases[:len(groups)]]
        self.base_lrs, self.last_epoch = bases, epoch
        for group, lr in zip(groups, lrs):
            group["lr"] = lr
        return lrs[0]

    def step(self) -> float:
        """Advance one epoch; set (and return the first group's) lr."""
        return self._go(self.last_epoch + 1, self.base_lrs)

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore ``state_dict()`` (``last_epoch`` and one base lr per parameter group; the
        single ``base_lr`` of earlier versions is taken for every group).  Checked first."""
        if not isinstance(state_dict, Mapping):
            raise TypeError("state_dict must be a dict, got %s" % type(state_dict).__name__)
        if "last_epoch" not in state_dict:
            raise ValueError("state_dict has no 'last_epoch' entry")
        n = len(self.optimizer.param_groups)
        if "base_lrs" in state_dict:
            bases = state_dict["base_lrs"]
            if not isinstance(bases, (list, tuple)):
                raise TypeError("base_lrs must be a list, got %s" % type(bases).__name__)
            if len(bases) != n:
                raise ValueError("state_dict['base_lrs'] has %d entries but the optimizer has %d parameter groups"
                                 % (len(bases), n))
            bases = [V.nonneg("base_lrs[%d]" % g, b) for g, b in enumerate(bases)]
        elif "base_lr" in state_dict:  # earlier versions: one base for every group
            bases = [V.nonneg("base_lr", state_dict["base_lr"])] * n
        else:
            raise ValueError("state_dict has no 'base_lrs' entry")
        self._go(_epoch("last_epoch", state_dict["last_epoch"]), bases)


def _epoch(name, v):
    """An epoch number given by the caller: an integer in [-1, 2**53] (ValueError otherwise)."""
    if type(v) is bool or not isinstance(v, (int, np.integer)):
        raise ValueError("%s must be an integer in [-1, 2**53], got %r" % (name, v))
    if not -1 <= v <= V.MAX_STEP:
        raise ValueError("%s must be an integer in [-1, 2**53], got %s" % (name, v if abs(v) < 10 ** 30 else
                                                                           "an integer of %d digits" % len(str(v))))
    return int(v)


def _power(x, n):
    """``x ** n`` for a float ``x >= 0`` and an integer ``n`` of any size, never raising: inf
    when it overflows (and for ``0 ** -k``), 0 when it underflows."""
    try:
        return x ** n
    except ZeroDivisionError:  # 0 ** -k
        return math.inf
    except OverflowError:  # the result, or n as a float
        if x == 1.0:
            return 1.0
        return math.inf if (x > 1.0) == (n > 0) else 0.0


def _scaled(base, factor):
    """``base * factor`` with ``0 * inf == 0`` (a zero base lr or a zero factor gives 0)."""
    if base == 0.0 or factor == 0.0:
        return 0.0
    return base * factor


def _positive_int(name, v):
    if type(v) is bool or not isinstance(v, (int, np.integer)):
        raise TypeError("%s must be an integer, got %s" % (name, type(v).__name__))
    if v < 1:
        raise ValueError("%s must be >= 1, got %d" % (name, v))
    return int(v)


class StepLR(LRScheduler):
    """``lr = base_lr * gamma ** (epoch // step_size)``."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1) -> None:
        self.step_size = _positive_int("step_size", step_size)
        self.gamma = V.nonneg("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int, base_lr: float | None = None) -> float:
        base = self.base_lr if base_lr is None else base_lr
        return _scaled(base, _power(self.gamma, epoch // self.step_size))


class ExponentialLR(LRScheduler):
    """``lr = base_lr * gamma ** epoch``."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = V.nonneg("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int, base_lr: float | None = None) -> float:
        base = self.base_lr if base_lr is None else base_lr
        return _scaled(base, _power(self.gamma, epoch))


class CosineAnnealingLR(LRScheduler):
    """``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2`` (torch's
    closed form; periodic beyond ``T_max``)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        self.T_max = _positive_int("T_max", T_max)
        self.eta_min = V.nonneg("eta_min", eta_min)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int, base_lr: float | None = None) -> float:
        base = self.base_lr if base_lr is None else base_lr
        if epoch > V.MAX_STEP:  # epoch / T_max may not fit a float: reduce by the period 2 T_max first
            epoch %= 2 * self.T_max
        c = 1.0 + math.cos(math.pi * epoch / self.T_max)
        if math.isinf(base) or math.isinf(self.eta_min):  # as a weighted sum, no inf - inf
            return _scaled(self.eta_min, 1.0 - c / 2.0) + _scaled(base, c / 2.0)
        return self.eta_min + (base - self.eta_min) * c / 2.0


class LambdaLR(LRScheduler):
    """``lr = base_lr * lr_lambda(epoch)`` for any callable of the epoch (step) number, as
    ``torch.optim.lr_scheduler.LambdaLR`` (warm-up, inverse-time decay, ...)."""

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float], last_epoch: int = -1) -> None:
        if not callable(lr_lambda):
            raise TypeError("lr_lambda must be callable, got %s" % type(lr_lambda).__name__)
        self.lr_lambda = lr_lambda
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int, base_lr: float | None = None) -> float:
        base = self.base_lr if base_lr is None else base_lr
        factor = V.real("lr_lambda(%d)" % epoch, self.lr_lambda(epoch))
        return V.nonneg("lr", _scaled(base, factor))
