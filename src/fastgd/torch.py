"""Drop-in ``torch.optim`` optimizers for CPU tensors, stepped by fastgd's fused kernels.

    >>> import torch, fastgd.torch
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = fastgd.torch.AdamW(model.parameters(), lr=1e-3)      # as torch.optim.AdamW
    >>> model(torch.randn(8, 4)).square().mean().backward()
    >>> opt.step(); opt.zero_grad()

Every class here (``SGD``, ``Adam``, ``AdamW``, ``Adamax``, ``NAdam``, ``RAdam``, ``Adagrad``,
``Adadelta``, ``RMSprop``, and ``Lion``, which torch lacks) is a subclass of
``torch.optim.Optimizer`` with the constructor of the ``torch.optim`` class of the same name
(argument names, order, defaults; Lion: the paper's defaults, as optax: ``lr=1e-4``,
``betas=(0.9, 0.99)``, ``weight_decay=0.0``, decoupled).  Parameter groups,
``add_param_group``, ``zero_grad``, ``step(closure)``, step hooks and LR schedulers (they set
``param_group['lr']``) work as in torch.  ``step`` skips parameters whose ``.grad`` is None.
The update is the formula of :mod:`fastgd.steps` (each rule's docstring), which is torch's.

State dicts are torch's format: ``state[i]`` holds ``step`` (a 0-dim float tensor, as
torch keeps it; SGD and Lion have none) and the state tensors under torch's names
(``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, ``exp_inf``, ``mu_product``, ``sum``,
``square_avg``, ``acc_delta``, ``momentum_buffer``, ``grad_avg``); every param group has
every key torch writes (``foreach``, ``fused``, ``capturable``, ``differentiable``, ...).  A
state dict saved by ``torch.optim.Adam`` loads into ``fastgd.torch.Adam`` and training goes
on, and the other way round.  Values: on float64, fastgd's kernels and torch's differ only in
the order of a few operations (about 1e-14 relative after many steps); on float32 a few ulp.
NAdam's ``mu_product`` is torch's 0-dim tensor (float32 by default), updated by torch's own
``mu_product * mu``, so its stored values are torch's bit for bit, and the step uses that value.

How a step runs: every tensor is reached through a zero-copy NumPy view (bfloat16 through a
reinterpreting int16 view and ``ml_dtypes.bfloat16``), and the parameters of one group that
have a gradient go to one :mod:`fastgd.multi` call (``fastgd.multi.adam_step``, ...; one per
distinct ``step`` value when the group's parameters were stepped a different number of
times).  The views are cached between steps; each step checks, before any kernel runs, that
every tensor a view reaches (parameters, gradients, state tensors) is at the same address
(``p.data = ...``, ``share_memory_()``, ``zero_grad(set_to_none=True)`` and new state tensors
renew those views), that the stepped parameters keep their shape and strides (``resize_``,
``set_``, ``t_`` keep the address: their version counter says so), and that no state dict entry
and no ``opt.state`` was assigned.  ``state['step']`` is read at every step (a change in place
is seen; it must be a whole number >= 0).  A gradient resized in place at the same address is
not noticed (it is only read, from its own memory): assign a new gradient instead.  As torch's
in-place update, the step bumps the parameters' version counters (autograd refuses a backward
through a graph that saved them before the step).  Parameters of one group share one
``step`` tensor while they step together (one ``add_`` per group and step instead of one per
parameter); ``state_dict()`` gives every parameter its own copy, as torch's does.

What is refused, before anything is written (TypeError/ValueError naming the parameter):
sparse gradients, tensors not on the CPU, complex parameters, dtypes other than float16,
bfloat16, float32 and float64, a gradient of another dtype, shape or memory layout than its
parameter, and tensors that are not dense in memory (a strided slice).  Dense layouts other
than C order (``channels_last``) are stepped in place, through a flat view of their memory,
when the parameter, its gradient and its state share the layout (the rules are elementwise).
Arrays that overlap in memory (two parameters viewing one buffer, a state tensor aliasing a
parameter, in one group or across groups) are refused, naming both; so are tensors with torch's
negative or conjugate bit and, outside ``torch.inference_mode()``, inference tensors (torch
refuses to update them in place).

Half precision: float16 and bfloat16 parameters keep their state in float32 by default
(``state_dtype="float32"``; ``state_dtype="param"`` keeps it in the parameter's dtype, as
torch.optim does); the arithmetic runs in float32 and every stored value is rounded once
(:mod:`fastgd.reference.half`).  A state dict loaded into such an optimizer has its state
converted to float32 (torch would round it to the parameter's dtype).

``torch.amp.GradScaler``: these optimizers set ``_step_supports_amp_scaling = True``, like
torch's fused ones: ``scaler.step(opt)`` sets ``opt.grad_scale`` and ``opt.found_inf`` (float32
tensors) and the step passes views of them to the kernels as ``grad_scale=`` and
``found_inf=``: every gradient is divided by the scale as it is loaded (never rewritten), and
a nonzero ``found_inf`` skips the step whole (no state changes, ``step`` does not advance).
After ``scaler.unscale_(opt)`` (to clip first) the scaler passes ``found_inf`` only.

The torch flags: ``foreach`` and ``fused`` are accepted and stored where torch accepts them
and change nothing (every step is fused and multi-tensor); ``fused=True`` with
``foreach=True`` is refused as in torch.  ``capturable=True`` (CUDA graphs) and
``differentiable=True`` (autograd through the step) are refused with a ValueError: fastgd's
kernels run outside autograd on CPU memory.  A tensor ``lr`` (or beta) is read as its value
at each step.

``torch.distributed.optim.ZeroRedundancyOptimizer(params, optimizer_class=fastgd.torch.AdamW,
...)`` runs these as its local optimizer (ZeRO stage 1: each rank keeps and steps the state
of its shard).
"""
import math
import operator

import numpy as np
import torch

from . import multi as _multi
from ._rules import RULES
from .reference.rules import nadam_mu

__all__ = ["SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "Adagrad", "Adadelta", "RMSprop", "Lion"]

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_HALF = (torch.float16, torch.bfloat16)
_is = operator.is_
_ptr = torch.Tensor.data_ptr
_size = torch.Tensor.size
_stride = torch.Tensor.stride
_ver = operator.attrgetter("_version")
_bf16 = None


def _bfloat16():
    global _bf16
    if _bf16 is None:
        try:
            import ml_dtypes
        except ImportError as exc:  # pragma: no cover - ml_dtypes is a test dependency
            raise TypeError("bfloat16 parameters need the ml_dtypes package (pip install ml_dtypes): %s" % exc)
        _bf16 = np.dtype(ml_dtypes.bfloat16)
    return _bf16


def _scalar_dtype(fused=None):
    """torch's dtype for ``state['step']`` (torch.optim.optimizer._get_scalar_dtype)."""
    if fused:
        return torch.float32
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _dense(t):
    """Is ``t`` non-overlapping and dense (its elements fill ``numel`` consecutive slots)?"""
    if t.is_contiguous():
        return True
    dims = sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1)
    expected = 1
    for st, sz in dims:
        if st != expected:
            return False
        expected *= sz
    return True


def _flat(t):
    """A 1-D NumPy view of the memory of dense tensor ``t`` (no copy)."""
    t = t.detach()
    n = t.numel()
    if t.is_contiguous():
        flat = t.reshape(n)
    else:
        flat = t.as_strided((n,), (1,), t.storage_offset())
    if flat.dtype == torch.bfloat16:
        return flat.view(torch.int16).numpy().view(_bfloat16())
    return flat.numpy()


def _one_f32(t, name):
    """A float32 NumPy view of one-element CPU tensor ``t`` (GradScaler's scale / found_inf)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError("optimizer.%s must be a tensor (set by torch.amp.GradScaler), got %s"
                        % (name, type(t).__name__))
    if t.device.type != "cpu" or t.dtype != torch.float32 or t.numel() != 1:
        raise TypeError("optimizer.%s must be a float32 CPU tensor of one element, got %s %s of %d elements"
                        % (name, t.device, t.dtype, t.numel()))
    return t.detach().reshape(1).numpy()


def _step_value(t, name):
    """The step count in ``t`` (torch's 0-dim ``state['step']``) as an int, checked."""
    v = float(t)
    if not (math.isfinite(v) and v >= 0 and v == math.floor(v)):
        raise ValueError("state of %s: 'step' must be a whole number >= 0 (the steps taken), got %r" % (name, v))
    return int(v)


def _scalar_state(v, sname, name, dtype):
    """``state['step']`` / ``state['mu_product']`` checked: a one-element real CPU tensor (a number
    becomes torch's 0-dim tensor of ``dtype``); the step a whole number >= 0, mu_product finite
    and > 0.  Returns the tensor to keep."""
    if isinstance(v, torch.Tensor):
        if v.numel() != 1 or v.dtype in (torch.bool,) or v.is_complex() or v.device.type != "cpu" \
                or v.layout != torch.strided:
            raise TypeError("state of %s: %r must be a real CPU tensor of one element (torch's 0-dim tensor), "
                            "got %s %s of shape %s" % (name, sname, v.device, v.dtype, tuple(v.shape)))
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        v = torch.tensor(float(v), dtype=dtype)
    else:
        raise TypeError("state of %s: %r must be a tensor or a number, got %s" % (name, sname, type(v).__name__))
    if sname == "step":
        _step_value(v, name)
    else:
        x = float(v)
        if not (math.isfinite(x) and x > 0):
            raise ValueError("state of %s: 'mu_product' must be finite and > 0, got %r" % (name, x))
    return v


class _Version:
    """A counter bumped by every assignment into ``opt.state`` (plans built before are stale)."""
    __slots__ = ("n",)

    def __init__(self):
        self.n = 0


class _ParamState(dict):
    """A parameter's state dict that tells the optimizer when an entry is assigned or removed
    (the cached views of its tensors are then rebuilt at the next step)."""
    __slots__ = ("_version",)

    def __init__(self, version, *args):
        super().__init__(*args)
        self._version = version

    def _bump(self):
        self._version.n += 1

    def __setitem__(self, k, v):
        self._bump(); super().__setitem__(k, v)

    def __delitem__(self, k):
        self._bump(); super().__delitem__(k)

    def pop(self, *a):
        self._bump(); return super().pop(*a)

    def popitem(self):
        self._bump(); return super().popitem()

    def clear(self):
        self._bump(); super().clear()

    def update(self, *a, **kw):
        self._bump(); super().update(*a, **kw)

    def setdefault(self, k, d=None):
        self._bump(); return super().setdefault(k, d)

    def __ior__(self, other):
        self._bump(); return super().__ior__(other)

    def __reduce__(self):  # pickles (and deep-copies) as a plain dict
        return (dict, (dict(self),))


class _State(dict):
    """``opt.state``: torch's ``defaultdict(dict)`` whose values are :class:`_ParamState`."""
    __slots__ = ("_version",)

    def __init__(self, version, items=()):
        super().__init__()
        self._version = version
        for k, v in dict(items).items():
            dict.__setitem__(self, k, v if isinstance(v, _ParamState) else _ParamState(version, v))

    def __missing__(self, k):
        v = _ParamState(self._version)
        dict.__setitem__(self, k, v)
        return v

    def __setitem__(self, k, v):
        self._version.n += 1
        dict.__setitem__(self, k, v if isinstance(v, _ParamState) else _ParamState(self._version, v))

    def __delitem__(self, k):
        self._version.n += 1
        dict.__delitem__(self, k)

    def pop(self, *a):
        self._version.n += 1
        return dict.pop(self, *a)

    def clear(self):
        self._version.n += 1
        dict.clear(self)

    def update(self, *a, **kw):
        for k, v in dict(*a, **kw).items():
            self[k] = v

    def __reduce__(self):  # a plain defaultdict(dict) of plain dicts, as torch's
        from collections import defaultdict
        return (defaultdict, (dict, {k: dict(v) for k, v in self.items()}))


class _Cohort:
    """Parameters of one group that step together (one fastgd.multi call): the same step
    count (and NAdam's mu_product), one shared ``step`` tensor."""
    __slots__ = ("idx", "params", "grads", "states", "step", "step_t", "mu_t", "first")


class _Plan:
    """A group's cached views (see the module docstring): valid while the group's params and
    grads are the same tensors at the same addresses and ``opt.state`` was not assigned."""
    __slots__ = ("group", "version", "params", "grads", "tensors", "ptrs", "cohorts", "needed", "rule",
                 "stepped", "sizes", "strides", "vers")


class _Entry:
    """A parameter's cached view and its state tensors' views (rebuilt when it moves)."""
    __slots__ = ("key", "view", "state")


class _Optimizer(torch.optim.Optimizer):
    """Base of the fastgd.torch optimizers (see the module docstring).  Subclasses set
    ``_rule`` (fastgd rule name), ``_has_step`` (torch keeps ``state['step']``)."""

    _rule = None
    _has_step = True
    _step_supports_amp_scaling = True

    def __init__(self, params, defaults, state_dtype="float32"):
        if state_dtype not in ("float32", "param"):
            raise ValueError("state_dtype must be 'float32' or 'param', got %r" % (state_dtype,))
        if defaults.get("capturable"):
            raise ValueError("capturable=True is not supported: fastgd.torch steps CPU tensors with fused "
                             "kernels outside any CUDA graph (capturable changes nothing on CPU)")
        if defaults.get("differentiable"):
            raise ValueError("differentiable=True is not supported: fastgd's kernels update the tensors in "
                             "place outside autograd")
        if defaults.get("fused") and defaults.get("foreach"):
            raise ValueError("`fused` and `foreach` cannot be `True` together.")
        self._state_dtype = state_dtype
        self._init_cache()
        self._check_group(defaults, "defaults")
        super().__init__(params, defaults)
        self.state = _State(self._version, self.state)

    # ---- caches ------------------------------------------------------------------------

    def _init_cache(self):
        self._version = _Version()
        self._plans = {}
        self._entries = {}

    def __getstate__(self):
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups,
                "_state_dtype": self._state_dtype}

    def __setstate__(self, state):
        state = dict(state)
        if "_state_dtype" not in state and "_state_dtype" not in self.__dict__:
            state["_state_dtype"] = "float32"
        super().__setstate__(state)
        self._init_cache()
        self.state = _State(self._version, self.state)
        self._upgrade_groups()

    def _upgrade_groups(self):
        """torch's ``__setstate__`` defaults for groups saved by older versions, and tensor steps."""
        for group in self.param_groups:
            for k, v in self._group_defaults.items():
                group.setdefault(k, v)
            if self._forced is not None:
                group.update(self._forced)
            for p in group["params"]:
                st = dict.get(self.state, p)
                # (numbers only: anything else is refused, clearly, by the next step)
                if st and isinstance(st.get("step"), (int, float)) and not isinstance(st["step"], bool):
                    dict.__setitem__(st, "step", torch.tensor(float(st["step"]), dtype=_scalar_dtype(group.get("fused"))))
                if st and isinstance(st.get("mu_product"), (int, float)) and not isinstance(st["mu_product"], bool):
                    dict.__setitem__(st, "mu_product", torch.tensor(float(st["mu_product"]), dtype=_scalar_dtype()))

    _group_defaults = {}
    _forced = None

    # ---- groups ------------------------------------------------------------------------

    def _check_group(self, group, where):
        """Check the hyperparameters of ``group`` (fastgd's checks, by the rule table)."""
        for flag in ("capturable", "differentiable"):
            if group.get(flag):
                raise ValueError("%s: %s=True is not supported by fastgd.torch (see its documentation)"
                                 % (where, flag))
        self._kernel_kwargs(group)

    def add_param_group(self, param_group):
        n = len(self.param_groups)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            if len(self.param_groups) != n + 1:  # pragma: no cover - torch appended nothing
                raise RuntimeError("add_param_group did not add a group")
            self._check_group(group, "param_groups[%d]" % n)
            for k, p in enumerate(group["params"]):
                self._check_param(p, "param_groups[%d]['params'][%d]" % (n, k))
        except Exception:
            self.param_groups.pop()
            raise

    @staticmethod
    def _check_param(p, name):
        if p.layout != torch.strided:
            raise TypeError("%s: fastgd.torch steps dense (strided) tensors, got layout %s" % (name, p.layout))
        if p.device.type != "cpu":
            raise ValueError("%s is on %s: fastgd.torch steps CPU tensors only" % (name, p.device))
        if p.dtype not in _DTYPES:
            raise TypeError("%s has dtype %s: fastgd.torch steps float32, float64, float16 and bfloat16 "
                            "parameters (complex ones are not supported)" % (name, p.dtype))
        if p.is_neg() or p.is_conj():
            raise TypeError("%s has torch's negative (or conjugate) bit set: its memory does not hold its values "
                            "(resolve_neg() / resolve_conj() it first)" % name)
        if p.is_inference() and not torch.is_inference_mode_enabled():
            raise ValueError("%s is an inference tensor (made under torch.inference_mode()): torch does not update "
                             "it in place outside inference mode, and neither does fastgd.torch" % name)
        if not _dense(p):
            raise ValueError("%s is not dense in memory (strides %s for shape %s): fastgd.torch steps "
                             "parameters whose elements fill one block of memory (C order, channels_last, ...)"
                             % (name, p.stride(), tuple(p.shape)))

    # ---- state dicts -------------------------------------------------------------------

    def state_dict(self):
        """torch's ``Optimizer.state_dict``, with every parameter's own ``step`` (and NAdam's
        ``mu_product``) tensor (they are shared inside the optimizer while parameters step
        together) and plain dicts."""
        sd = super().state_dict()
        out = {}
        for k, st in sd["state"].items():
            st = dict(st)
            for name in ("step", "mu_product"):
                if isinstance(st.get(name), torch.Tensor):
                    st[name] = st[name].clone()
            out[k] = st
        sd["state"] = out
        return sd

    def load_state_dict(self, state_dict):
        """torch's ``Optimizer.load_state_dict``; then the state of float16/bfloat16 params is
        converted to this optimizer's state dtype (float32 by default) from the saved tensors
        (torch's load would have rounded float32 state to the parameter's dtype)."""
        saved = state_dict["state"]
        super().load_state_dict(state_dict)
        if self._state_dtype == "float32":
            ids = [i for g in state_dict["param_groups"] for i in g["params"]]
            params = [p for g in self.param_groups for p in g["params"]]
            for i, p in zip(ids, params):
                if p.dtype in _HALF and i in saved:
                    st = self.state[p]
                    for name, v in saved[i].items():
                        if name != "step" and isinstance(v, torch.Tensor) and v.is_floating_point():
                            dict.__setitem__(st, name, v.to(device=p.device, dtype=torch.float32))
        self._version.n += 1

    # ---- the step ----------------------------------------------------------------------

    def _state_dtype_of(self, p):
        return torch.float32 if p.dtype in _HALF and self._state_dtype == "float32" else p.dtype

    def _kernel_kwargs(self, group):
        """(rule, the kernel's hyperparameters checked) for ``group``."""
        rule = self._group_rule(group)
        hyper = {}
        for h in rule.hyper:
            if rule.betas is not None and h.name in rule.betas:
                v = group["betas"][rule.betas.index(h.name)]
            else:
                v = group[h.name]
            if isinstance(v, torch.Tensor):
                v = v.item()
            hyper[h.name] = v
        if rule.step == "required":
            kw = rule.check(1, **hyper)
        elif rule.step == "optional":
            kw = rule.check(None, **hyper)
        else:
            kw = rule.check(**hyper)
        return rule, {h.name: kw[h.name] for h in rule.hyper}, kw

    def _group_rule(self, group):
        return RULES[self._rule]

    def _plan_ok(self, plan, group, params):
        if plan is None or plan.group is not group or plan.version != self._version.n:
            return None
        if len(params) != len(plan.params) or not all(map(_is, params, plan.params)):
            return None
        grads = [p.grad for p in params]
        if not all(map(_is, grads, plan.grads)):
            return grads
        # every tensor a cached view reads or writes (params, grads, state) still at its address:
        # a storage whose memory torch moved (share_memory_(), ...) leaves the old view dangling
        if list(map(_ptr, plan.tensors)) != plan.ptrs:
            return grads
        # and the stepped params still of the shape and strides of their views: resize_, set_,
        # as_strided_, t_ keep the address but bump the version counter (as every in-place op)
        vers = list(map(_ver, plan.stepped))
        if vers != plan.vers:
            if list(map(_size, plan.stepped)) != plan.sizes or list(map(_stride, plan.stepped)) != plan.strides:
                return grads
            plan.vers = vers
        return True

    @torch.no_grad()
    def step(self, closure=None):
        """One step of every group (parameters whose ``.grad`` is None are skipped); returns
        ``closure()``'s loss when a closure is given (called with grad enabled first)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if type(self.state) is not _State or self.state._version is not self._version:
            # opt.state assigned (opt.state = defaultdict(dict), ...): the cached views are stale
            self._version.n += 1
            self.state = _State(self._version, self.state)
        gs = getattr(self, "grad_scale", None)
        fi = getattr(self, "found_inf", None)
        gs = None if gs is None else _one_f32(gs, "grad_scale")
        fi = None if fi is None else _one_f32(fi, "found_inf")
        work = []
        rebuilt = False
        for gi, group in enumerate(self.param_groups):
            rule, hyper, kw = self._kernel_kwargs(group)
            if group.get("capturable") or group.get("differentiable"):
                self._check_group(group, "param_groups[%d]" % gi)
            needed = tuple(st.needed(kw) for st in rule.state)
            params = group["params"]
            plan = self._plans.get(gi)
            ok = self._plan_ok(plan, group, params)
            if ok is not True or plan.needed != needed or plan.rule is not rule:
                plan = self._build(gi, group, rule, kw, needed, params, None if ok is None or ok is True else ok)
                rebuilt = True
            work.append((plan, rule, hyper, kw))
        if rebuilt:
            self._check_overlaps(work)
        for gi, (plan, rule, hyper, kw) in enumerate(work):
            for c in plan.cohorts:  # a step tensor changed in place (st['step'].fill_(0), ...)
                if c.step_t is not None and c.step_t.item() != c.step:
                    c.step = _step_value(c.step_t, "param_groups[%d]['params'][%d]" % (gi, c.idx[0]))
        skip = fi is not None and float(fi[0]) != 0.0
        for plan, rule, hyper, kw in work:
            self._run(plan, rule, hyper, kw, gs, fi, skip)
            if not skip and plan.stepped:
                # as torch's in-place update: autograd sees the parameters changed
                torch.autograd.graph.increment_version(plan.stepped)
                plan.vers = list(map(_ver, plan.stepped))
        return loss

    def _run(self, plan, rule, hyper, kw, gs, fi, skip):
        fn = getattr(_multi, rule.name + "_step")
        for c in plan.cohorts:
            args = dict(hyper)
            args.update(c.states)
            if rule.step == "required":
                args["step"] = c.step + 1
            elif rule.step == "optional":
                args["step"] = 1 if c.first else None
            new_mu = None
            if c.mu_t is not None:
                # torch's product P_t = P_{t-1} * mu_t, computed by torch's own op in the stored
                # tensor's dtype; the kernel gets P_t / mu_t as P_{t-1}, so that the P_t it forms
                # (in float64) is torch's to within an ulp of float64
                mu_t = nadam_mu(c.step + 1, hyper["beta1"], hyper["momentum_decay"])
                new_mu = c.mu_t * mu_t
                args["mu_product"] = np.array([min(float(new_mu) / mu_t, 1.0) if mu_t else float(c.mu_t)], np.float64)
            if gs is not None:
                args["grad_scale"] = gs
            if fi is not None:
                args["found_inf"] = fi
            fn(c.params, c.grads, **args)
            if skip:
                continue
            if c.first:
                c.first = False
            if c.step_t is not None:
                c.step_t.add_(1)
                c.step += 1
                if new_mu is not None:
                    c.mu_t.copy_(new_mu)

    def _check_overlaps(self, work):
        """No array the step writes (a parameter, a state tensor) may overlap any other array of
        the step (its gradients included), across cohorts and groups: every group's calls are
        checked together before any kernel runs."""
        ranges = []
        for gi, (plan, rule, hyper, kw) in enumerate(work):
            for c in plan.cohorts:
                lists = [("", c.params, True), (" (its gradient)", c.grads, False)]
                lists += [(" (its state %r)" % k, v, True) for k, v in c.states.items()]
                for what, lst, written in lists:
                    for k, a in zip(c.idx, lst):
                        if a.size:
                            lo = a.__array_interface__["data"][0]
                            ranges.append((lo, lo + a.nbytes, written, gi, k, what))
        ranges.sort(key=lambda r: r[0])
        hi_any = hi_w = None  # the earlier range reaching furthest (any, written)
        for r in ranges:
            lo, hi, written = r[:3]
            other = hi_any if written else hi_w
            if other is not None and lo < other[1]:
                raise ValueError("param_groups[%d]['params'][%d]%s and param_groups[%d]['params'][%d]%s overlap in "
                                 "memory: fastgd.torch steps parameters, gradients and state in separate memory"
                                 % (other[3], other[4], other[5], r[3], r[4], r[5]))
            if hi_any is None or hi > hi_any[1]:
                hi_any = r
            if written and (hi_w is None or hi > hi_w[1]):
                hi_w = r

    # ---- building a group's plan -------------------------------------------------------

    def _build(self, gi, group, rule, kw, needed, params, grads):
        """Check every parameter of the group that has a gradient (nothing is created before
        all have passed), create missing state, and cache the views."""
        if grads is None:
            grads = [p.grad for p in params]
        where = "param_groups[%d]['params'][%d]"
        stepping = []
        for k, (p, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            name = where % (gi, k)
            if not isinstance(p, torch.Tensor):
                raise TypeError("%s must be a tensor, got %s" % (name, type(p).__name__))
            self._check_param(p, name)
            if g.layout != torch.strided:
                raise TypeError("%s has a sparse gradient (layout %s): fastgd.torch steps dense gradients only"
                                % (name, g.layout))
            if g.is_neg() or g.is_conj():
                raise TypeError("%s: its gradient has torch's negative (or conjugate) bit set (its memory does not "
                                "hold its values): resolve_neg() it first" % name)
            if g.device.type != "cpu":
                raise ValueError("%s has its gradient on %s: fastgd.torch steps CPU tensors only" % (name, g.device))
            if g.dtype != p.dtype:
                raise TypeError("%s has dtype %s but its gradient %s (they must be the same)"
                                % (name, p.dtype, g.dtype))
            if g.shape != p.shape:
                raise ValueError("%s has shape %s but its gradient %s" % (name, tuple(p.shape), tuple(g.shape)))
            if not _dense(g) or (g.stride() != p.stride() and p.numel() > 1 and not (
                    g.is_contiguous() and p.is_contiguous())):
                raise ValueError("%s: its gradient has strides %s and the parameter %s: fastgd.torch steps a "
                                 "gradient laid out in memory as its parameter (dense, same strides)"
                                 % (name, g.stride(), p.stride()))
            stepping.append((k, p, g))
        states = [st for st, need in zip(rule.state, needed) if need]
        arrays = [st for st in states if not st.scalar]
        # state: checked (dtype, shape, layout) before anything is created or converted
        sd = {}
        scalars = {}
        for k, p, g in stepping:
            st = dict.get(self.state, p) or {}
            want = self._state_dtype_of(p)
            for sname in ("step", "mu_product"):  # (a number assigned by hand becomes torch's 0-dim tensor)
                if sname in st and (sname == "step" and self._has_step or any(s.torch == sname for s in states)):
                    scalars[(k, sname)] = _scalar_state(st[sname], sname, where % (gi, k),
                                                        _scalar_dtype(group.get("fused") if sname == "step" else None))
            for s in arrays:
                t = st.get(s.torch)
                if t is None:
                    continue
                name = "state of %s: %r" % (where % (gi, k), s.torch)
                if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.device.type != "cpu":
                    raise TypeError("%s must be a dense CPU tensor, got %r" % (name, type(t).__name__ if not
                                    isinstance(t, torch.Tensor) else "%s %s" % (t.layout, t.device)))
                if t.shape != p.shape:
                    raise ValueError("%s has shape %s, the parameter %s" % (name, tuple(t.shape), tuple(p.shape)))
                if t.is_neg() or t.is_conj():
                    raise TypeError("%s has torch's negative (or conjugate) bit set (its memory does not hold its "
                                    "values): resolve_neg() it first" % name)
                if t.dtype != want:
                    raise TypeError("%s has dtype %s; this optimizer keeps it in %s (state_dtype=%r)"
                                    % (name, t.dtype, want, self._state_dtype))
            sd[k] = want
        # create what is missing (as torch: zeros in the parameter's layout; Adagrad's sum filled)
        first = set()
        for (k, sname), v in scalars.items():
            st = self.state[params[k]]
            if st[sname] is not v:
                dict.__setitem__(st, sname, v)
        for k, p, g in stepping:
            if not states and not self._has_step:
                continue  # (SGD without momentum keeps no state, as torch)
            st = self.state[p]
            if self._has_step and "step" not in st:
                dict.__setitem__(st, "step", torch.tensor(0.0, dtype=_scalar_dtype(group.get("fused"))))
            for s in states:  # torch's key order: step, the scalar state, the tensors
                if s.scalar and s.torch not in st:
                    dict.__setitem__(st, s.torch, torch.tensor(float(s.init), dtype=_scalar_dtype()))
            for s in states:
                if s.scalar:
                    continue
                t = st.get(s.torch)
                if t is None:
                    init = self._init_value(group, s.init) if isinstance(s.init, str) else float(s.init)
                    t = torch.full_like(p, init, dtype=sd[k], memory_format=torch.preserve_format) if init \
                        else torch.zeros_like(p, dtype=sd[k], memory_format=torch.preserve_format)
                    if s.from_grad:  # SGD's buffer: torch starts it as the first gradient (step=1 below)
                        first.add(k)
                    dict.__setitem__(st, s.torch, t)
                elif t.stride() != p.stride() and p.numel() > 1 and not (t.is_contiguous() and p.is_contiguous()):
                    # a state tensor in another layout (loaded): the parameter's layout, same values
                    t = torch.empty_like(p, dtype=t.dtype, memory_format=torch.preserve_format).copy_(t)
                    dict.__setitem__(st, s.torch, t)
        # cohorts: by step count (and mu_product), each with one shared step tensor
        cohorts = {}
        for k, p, g in stepping:
            st = dict.get(self.state, p) or {}
            key = (float(st["step"]) if self._has_step else None,
                   float(st["mu_product"]) if "mu_product" in st else None, k in first,
                   st["step"].dtype if self._has_step else None)
            cohorts.setdefault(key, []).append((k, p, g))
        # params of the group without a gradient keep a private step tensor
        for p, g in zip(params, grads):
            st = dict.get(self.state, p)
            if g is None and st:
                for name in ("step", "mu_product"):
                    if isinstance(st.get(name), torch.Tensor):
                        dict.__setitem__(st, name, st[name].clone())
        plan = _Plan()
        plan.group, plan.version, plan.needed, plan.rule = group, None, needed, rule
        plan.params, plan.grads = list(params), list(grads)
        plan.cohorts = []
        tensors, stepped = [], []
        for (step, mu, first, sdt), members in cohorts.items():
            c = _Cohort()
            c.idx = [k for k, _, _ in members]
            c.first = first
            c.step = None if step is None else int(step)
            c.step_t = None if step is None else torch.tensor(step, dtype=sdt)
            c.mu_t = None if mu is None else torch.tensor(mu, dtype=self.state[members[0][1]]["mu_product"].dtype)
            c.params, c.grads = [], []
            c.states = {s.multi: [] for s in arrays}
            for k, p, g in members:
                st = dict.get(self.state, p) or {}
                if c.step_t is not None:
                    dict.__setitem__(st, "step", c.step_t)
                if c.mu_t is not None:
                    dict.__setitem__(st, "mu_product", c.mu_t)
                e = self._entry(p, st, arrays)
                c.params.append(e.view)
                c.grads.append(_flat(g))
                for s in arrays:
                    c.states[s.multi].append(e.state[s.torch])
                    tensors.append(st[s.torch])
                tensors.append(p)
                tensors.append(g)
                stepped.append(p)
            plan.cohorts.append(c)
        plan.tensors = tensors
        plan.ptrs = list(map(_ptr, tensors))
        plan.stepped = stepped
        plan.sizes = list(map(_size, stepped))
        plan.strides = list(map(_stride, stepped))
        plan.vers = list(map(_ver, stepped))
        plan.version = self._version.n
        self._plans[gi] = plan
        # forget the views of parameters no group holds any more (they would keep their memory)
        live = {id(q) for g_ in self.param_groups for q in g_["params"]}
        for q in [q for q in self._entries if id(q) not in live]:
            del self._entries[q]
        return plan

    def _init_value(self, group, name):
        return float(self.defaults.get(name, group.get(name, 0.0)))

    def _entry(self, p, st, arrays):
        """The cached views of parameter ``p`` and its state tensors ``arrays``."""
        e = self._entries.get(p)
        # every tensor's address, shape, strides and dtype: a view is reused only for the same
        # memory (a state tensor moved by share_memory_() or given new .data has a new address)
        key = tuple((t.data_ptr(), t.shape, t.stride(), t.dtype) for t in [p] + [st[s.torch] for s in arrays])
        key += (tuple(id(st[s.torch]) for s in arrays),)
        if e is None or e.key != key:
            e = _Entry()
            e.key = key
            e.view = _flat(p)
            e.state = {s.torch: _flat(st[s.torch]) for s in arrays}
            self._entries[p] = e
        return e


# ---------------------------------------------------------------------------------------
# the optimizers: torch.optim's constructors (argument order, names, defaults)

def _adam_group_defaults():
    return {"amsgrad": False, "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
            "decoupled_weight_decay": False, "fused": None}


class Adam(_Optimizer):
    """``torch.optim.Adam`` (with ``decoupled_weight_decay``) over :func:`fastgd.multi.adam_step`
    (:func:`fastgd.multi.adamw_step` when ``decoupled_weight_decay=True``); see :mod:`fastgd.torch`.
    ``foreach``/``fused``: accepted, no effect (always fused); ``capturable``/``differentiable``:
    True is refused."""
    _rule = "adam"
    _group_defaults = _adam_group_defaults()

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False, state_dtype="float32"):
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "amsgrad": amsgrad,
                    "maximize": maximize, "foreach": foreach, "capturable": capturable,
                    "differentiable": differentiable, "fused": fused, "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults, state_dtype)

    def _group_rule(self, group):
        return RULES["adamw" if group.get("decoupled_weight_decay") else "adam"]


class AdamW(Adam):
    """``torch.optim.AdamW`` over :func:`fastgd.multi.adamw_step`; see :class:`Adam`."""
    _forced = {"decoupled_weight_decay": True}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None,
                 state_dtype="float32"):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, state_dtype=state_dtype)


class SGD(_Optimizer):
    """``torch.optim.SGD`` over :func:`fastgd.multi.sgd_step` (the momentum buffer starts as a
    copy of the first effective gradient, as torch's)."""
    _rule = "sgd"
    _has_step = False
    _group_defaults = {"nesterov": False, "maximize": False, "foreach": None, "differentiable": False,
                       "fused": False}

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None, state_dtype="float32"):
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                    "nesterov": nesterov, "maximize": maximize, "foreach": foreach,
                    "differentiable": differentiable, "fused": fused}
        super().__init__(params, defaults, state_dtype)


class Adamax(_Optimizer):
    """``torch.optim.Adamax`` over :func:`fastgd.multi.adamax_step`."""
    _rule = "adamax"
    _group_defaults = {"foreach": None, "maximize": False, "differentiable": False, "capturable": False}

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, foreach=None, *,
                 maximize=False, differentiable=False, capturable=False, state_dtype="float32"):
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "foreach": foreach,
                    "maximize": maximize, "differentiable": differentiable, "capturable": capturable}
        super().__init__(params, defaults, state_dtype)


class NAdam(_Optimizer):
    """``torch.optim.NAdam`` over :func:`fastgd.multi.nadam_step` (``state['mu_product']`` is
    torch's 0-dim tensor, updated by torch's own ``mu_product * mu``; the kernel gets it as
    ``mu_product = [P_t / mu_t]``, a float64 array, and so forms torch's ``P_t``)."""
    _rule = "nadam"
    _group_defaults = {"maximize": False, "foreach": None, "capturable": False, "differentiable": False,
                       "decoupled_weight_decay": False}

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, state_dtype="float32"):
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "momentum_decay": momentum_decay, "decoupled_weight_decay": decoupled_weight_decay,
                    "maximize": maximize, "foreach": foreach, "capturable": capturable,
                    "differentiable": differentiable}
        super().__init__(params, defaults, state_dtype)


class RAdam(_Optimizer):
    """``torch.optim.RAdam`` over :func:`fastgd.multi.radam_step`."""
    _rule = "radam"
    _group_defaults = {"foreach": None, "maximize": False, "differentiable": False,
                       "decoupled_weight_decay": False, "capturable": False}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decoupled_weight_decay=False,
                 *, foreach=None, maximize=False, capturable=False, differentiable=False, state_dtype="float32"):
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "maximize": maximize,
                    "foreach": foreach, "capturable": capturable, "decoupled_weight_decay": decoupled_weight_decay,
                    "differentiable": differentiable}
        super().__init__(params, defaults, state_dtype)


class Adagrad(_Optimizer):
    """``torch.optim.Adagrad`` over :func:`fastgd.multi.adagrad_step`.  As torch, the state
    (``step`` and ``sum`` = ``initial_accumulator_value``) is created in the constructor;
    parameters added later start from the constructor's ``initial_accumulator_value``."""
    _rule = "adagrad"
    _group_defaults = {"foreach": None, "maximize": False, "differentiable": False, "fused": None}

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None, state_dtype="float32"):
        defaults = {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                    "initial_accumulator_value": initial_accumulator_value, "foreach": foreach,
                    "maximize": maximize, "differentiable": differentiable, "fused": fused}
        RULES["adagrad"].optim_hyper[0](initial_accumulator_value)
        super().__init__(params, defaults, state_dtype)
        init = float(initial_accumulator_value)
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state[p]
                dict.__setitem__(st, "step", torch.tensor(0.0, dtype=_scalar_dtype(group["fused"])))
                dict.__setitem__(st, "sum", torch.full_like(p, init, dtype=self._state_dtype_of(p),
                                                            memory_format=torch.preserve_format))


class Adadelta(_Optimizer):
    """``torch.optim.Adadelta`` over :func:`fastgd.multi.adadelta_step`."""
    _rule = "adadelta"
    _group_defaults = {"foreach": None, "maximize": False, "differentiable": False, "capturable": False}

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *, capturable=False,
                 maximize=False, differentiable=False, state_dtype="float32"):
        defaults = {"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay, "maximize": maximize,
                    "capturable": capturable, "foreach": foreach, "differentiable": differentiable}
        super().__init__(params, defaults, state_dtype)


class RMSprop(_Optimizer):
    """``torch.optim.RMSprop`` over :func:`fastgd.multi.rmsprop_step`."""
    _rule = "rmsprop"
    _group_defaults = {"momentum": 0, "centered": False, "foreach": None, "maximize": False,
                       "differentiable": False, "capturable": False}

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False, *, state_dtype="float32"):
        defaults = {"lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps, "centered": centered,
                    "weight_decay": weight_decay, "capturable": capturable, "foreach": foreach,
                    "maximize": maximize, "differentiable": differentiable}
        super().__init__(params, defaults, state_dtype)


class Lion(_Optimizer):
    """Lion (Chen et al. 2023) over :func:`fastgd.multi.lion_step`, torch has none: the
    paper's defaults as optax (``lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0``, decoupled).
    State: ``exp_avg`` only (no ``step``: the rule does not use one)."""
    _rule = "lion"
    _has_step = False
    _group_defaults = {"maximize": False, "foreach": None, "differentiable": False, "fused": None}

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *, maximize=False, foreach=None,
                 differentiable=False, fused=None, state_dtype="float32"):
        defaults = {"lr": lr, "betas": betas, "weight_decay": weight_decay, "maximize": maximize,
                    "foreach": foreach, "differentiable": differentiable, "fused": fused}
        super().__init__(params, defaults, state_dtype)
