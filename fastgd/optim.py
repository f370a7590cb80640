"""Optimizer objects over lists of parameter arrays, as in ``torch.optim`` (and the book's
``Optimizer(params, lr, ...)`` / ``step(grads)`` / ``parameters()`` design).

    >>> import numpy as np
    >>> from fastgd.optim import Adam, CosineAnnealingLR
    >>> W = np.zeros((3, 2)); b = np.zeros(2)
    >>> opt = Adam([W, b], lr=1e-2, betas=(0.9, 0.999))
    >>> sched = CosineAnnealingLR(opt, T_max=100)
    >>> opt.step([dW, db])      # W and b updated in place through fastgd.adam_step
    >>> sched.step()            # new opt.lr for the next step

Every ``step`` makes one multi-tensor call of :mod:`fastgd.multi` (``adam_step`` on lists
of arrays, ...; the values are those of the single-tensor kernels of :mod:`fastgd.steps`,
bit for bit) for all parameters together, so the current backend (or ``backend=`` given to
the constructor) runs the update, one compiled call per dtype on the cython backend, and
the same argument validation applies.  Semantics, names and defaults
are those of the torch optimizer of the same name (``Lion``: the paper / optax).

Design notes
------------
* One parameter group.  ``opt.hyper`` is the live dict of hyperparameters; changes take
  effect at the next ``step`` (``opt.lr`` is a shortcut, ``opt.param_groups[0]["lr"]``
  works as in torch).  ``opt.defaults`` keeps the constructor's values.  Hyperparameters
  are validated at construction and again at every ``step``, before any array is written.
* State arrays are allocated lazily at the first ``step``, as zeros of each parameter's
  shape and dtype (Adagrad: filled with ``initial_accumulator_value``; NAdam's
  ``mu_product``: ``numpy.ones(1)``), under torch's names (``exp_avg``, ``exp_avg_sq``,
  ``momentum_buffer``, ``sum``, ...).  ``opt.state[i]`` is the dict of parameter ``i``.
* ``step_count`` counts completed steps (every parameter is stepped together, so one
  count serves the bias corrections of all of them).
* ``state_dict()`` / ``load_state_dict()`` copy everything needed to resume bit-exactly;
  :func:`save` / :func:`load` write / read it (and, by default, the parameters) as ``.npz``.
"""
import json
import math
from collections.abc import MutableMapping

import numpy as np

from . import _validate as V
from . import multi as _multi
from .backends import backend_module

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "Adagrad", "Adadelta", "RMSprop",
           "Lion", "OPTIMIZERS", "save", "load", "LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR",
           "LambdaLR"]


# ---------------------------------------------------------------------------------------
# hyperparameter validators: (name, value) -> normalized value, raising TypeError/ValueError

def _nonneg(name, v):
    return V.nonneg(name, v)


def _unit(name, v):
    return V.unit_interval(name, v)


def _unit_closed(name, v):
    return V.unit_interval(name, v, closed_right=True)


def _flag(name, v):
    return V.flag(name, v)


def _betas(closed):
    def check(name, v):
        if not isinstance(v, (tuple, list)) or len(v) != 2:
            raise TypeError("%s must be a tuple of two numbers (beta1, beta2), got %r" % (name, v))
        return (V.unit_interval(name + "[0]", v[0], closed_right=closed),
                V.unit_interval(name + "[1]", v[1], closed_right=closed))
    return check


class _GroupView(MutableMapping):
    """``param_groups[0]``: reads and writes go to ``opt.hyper``; ``"params"`` gives the parameters."""

    def __init__(self, opt):
        self._opt = opt

    def __getitem__(self, key):
        if key == "params":
            return self._opt.parameters()
        return self._opt.hyper[key]

    def __setitem__(self, key, value):
        if key == "params":
            raise ValueError("the parameters of an optimizer cannot be replaced")
        if key not in self._opt.hyper:
            raise KeyError("unknown hyperparameter %r for %s" % (key, type(self._opt).__name__))
        self._opt.hyper[key] = value

    def __delitem__(self, key):
        raise TypeError("hyperparameters cannot be deleted")

    def __iter__(self):
        return iter(["params"] + list(self._opt.hyper))

    def __len__(self):
        return len(self._opt.hyper) + 1

    def __repr__(self):
        return repr(dict(self.items()))


class Optimizer:
    """Base class: a list of parameter arrays, the hyperparameters, lazily allocated state.

    Subclasses define ``_defaults`` (torch's defaults, in constructor order), ``_spec``
    (a validator per hyperparameter), ``_state_names(hyper)`` and ``_update``.
    """

    _defaults = {}
    _spec = {}

    def __init__(self, params, *, backend=None, **hyper):
        self._params = _check_params(params)
        if backend is not None:
            backend_module(backend)  # unknown / unavailable backend: raise now
        self.backend = backend
        full = dict(self._defaults)
        for k, v in hyper.items():
            if k not in full:
                raise TypeError("%s got an unexpected hyperparameter %r (expected one of %s)"
                                % (type(self).__name__, k, ", ".join(full)))
            full[k] = v
        full = self._check_hyper(full)
        self.defaults = dict(full)
        self.hyper = full
        self.step_count = 0
        self.state = [{} for _ in self._params]

    # ---- access -------------------------------------------------------------------------
    def parameters(self):
        """The parameter arrays (the same objects, updated in place by ``step``)."""
        return list(self._params)

    @property
    def lr(self):
        return self.hyper["lr"]

    @lr.setter
    def lr(self, value):
        self.hyper["lr"] = V.nonneg("lr", value)

    @property
    def param_groups(self):
        """torch-style access: ``opt.param_groups[0]["lr"] = 0.01``."""
        return [_GroupView(self)]

    def __repr__(self):
        return "%s(%d params, step_count=%d, %s)" % (
            type(self).__name__, len(self._params), self.step_count,
            ", ".join("%s=%r" % kv for kv in self.hyper.items()))

    # ---- validation ---------------------------------------------------------------------
    def _check_hyper(self, hyper):
        out = {}
        for k, v in hyper.items():
            check = self._spec.get(k)
            if check is None:
                raise ValueError("unknown hyperparameter %r for %s" % (k, type(self).__name__))
            out[k] = check(k, v)
        for k in self._defaults:
            if k not in out:
                raise ValueError("hyperparameter %r of %s is missing" % (k, type(self).__name__))
        self._check_combination(out)
        return out

    def _check_combination(self, h):
        pass

    def _check_grads(self, grads):
        if isinstance(grads, np.ndarray) and len(self._params) == 1 and grads.shape == self._params[0].shape:
            grads = [grads]
        if not isinstance(grads, (list, tuple)):
            raise TypeError("grads must be a list of arrays (one per parameter), got %s" % type(grads).__name__)
        if len(grads) != len(self._params):
            raise ValueError("grads has %d arrays but the optimizer has %d parameters"
                             % (len(grads), len(self._params)))
        out = []
        for i, (p, g) in enumerate(zip(self._params, grads)):
            if not isinstance(g, np.ndarray):
                raise TypeError("grads[%d] must be a numpy.ndarray, got %s" % (i, type(g).__name__))
            if g.shape != p.shape:
                raise ValueError("grads[%d] has shape %s but parameter %d has shape %s" % (i, g.shape, i, p.shape))
            if g.dtype != p.dtype:
                raise TypeError("grads[%d] has dtype %s but parameter %d has dtype %s" % (i, g.dtype, i, p.dtype))
            if p.size and np.may_share_memory(g, p):
                raise ValueError("grads[%d] overlaps parameter %d in memory; pass a separate array" % (i, i))
            if not g.flags.c_contiguous:
                g = np.ascontiguousarray(g)
            out.append(g)
        return out

    # ---- the step -----------------------------------------------------------------------
    def step(self, grads):
        """Update every parameter in place with its gradient (``grads[i]`` for parameter i).

        Everything is validated (gradient count, shapes, dtypes, hyperparameters) before
        any array is written.  Returns the parameters.
        """
        grads = self._check_grads(grads)
        h = self._check_hyper(self.hyper)
        t = self.step_count + 1
        fresh = [self._ensure_state(p, st, h) for p, st in zip(self._params, self.state)]
        groups = self._groups(h, fresh)
        if len(groups) == 1:
            self._update_many(self._params, grads, self.state, h, t, fresh)
        else:
            # several calls: check every array of all of them first (a step that raises
            # has written nothing)
            names = tuple(n for n in self._state_names(h) if n != "mu_product")
            _multi._check_arrays(("params", "grads") + names,
                                 (self._params, grads) + tuple([st[n] for st in self.state] for n in names))
            for idx in groups:
                self._update_many([self._params[i] for i in idx], [grads[i] for i in idx],
                                  [self.state[i] for i in idx], h, t, [fresh[i] for i in idx])
        self.step_count = t
        return self.parameters()

    def _group_key(self, st, new):
        """Parameters whose keys are equal are stepped by one multi-tensor call."""
        return None

    def _groups(self, h, fresh):
        groups = {}
        for i, (st, new) in enumerate(zip(self.state, fresh)):
            groups.setdefault(self._group_key(st, new), []).append(i)
        return list(groups.values())

    def _update_many(self, ps, gs, sts, h, t, news):
        """Step the parameters ``ps`` with gradients ``gs`` and state dicts ``sts`` (``news``:
        the names of the state arrays allocated at this step) in one multi-tensor call."""
        raise NotImplementedError

    def _state_names(self, h):
        raise NotImplementedError

    def _init_state(self, name, p, h):
        return np.zeros_like(p)

    def _ensure_state(self, p, st, h):
        """Allocate missing state arrays; returns the set of names created now."""
        new = set()
        for name in self._state_names(h):
            if name not in st:
                st[name] = self._init_state(name, p, h)
                new.add(name)
        return new

    def zero_state(self):
        """Forget the state and the step count (the parameters are kept)."""
        self.state = [{} for _ in self._params]
        self.step_count = 0

    # ---- state --------------------------------------------------------------------------
    def state_dict(self):
        """Everything needed to resume: optimizer name, step count, hyperparameters, and a
        copy of every state array (the parameters are not included: see :func:`save`)."""
        return {"optimizer": type(self).__name__, "step_count": self.step_count, "hyper": dict(self.hyper),
                "state": [{k: v.copy() for k, v in st.items()} for st in self.state]}

    def load_state_dict(self, state_dict):
        """Restore a ``state_dict()`` (copies the arrays).  Validates everything first: a
        call that raises has changed nothing."""
        if not isinstance(state_dict, dict):
            raise TypeError("state_dict must be a dict, got %s" % type(state_dict).__name__)
        for key in ("optimizer", "step_count", "hyper", "state"):
            if key not in state_dict:
                raise ValueError("state_dict has no %r entry" % key)
        if state_dict["optimizer"] != type(self).__name__:
            raise ValueError("state_dict is for %s, not %s" % (state_dict["optimizer"], type(self).__name__))
        step_count = state_dict["step_count"]
        if type(step_count) is bool or not isinstance(step_count, (int, np.integer)) or step_count < 0:
            raise ValueError("state_dict['step_count'] must be an integer >= 0, got %r" % (step_count,))
        hyper = self._check_hyper(dict(state_dict["hyper"]))
        states = state_dict["state"]
        if not isinstance(states, (list, tuple)) or len(states) != len(self._params):
            raise ValueError("state_dict['state'] must hold one dict per parameter (%d)" % len(self._params))
        new_state = []
        for i, (p, st) in enumerate(zip(self._params, states)):
            if not isinstance(st, dict):
                raise TypeError("state_dict['state'][%d] must be a dict" % i)
            if st and step_count == 0:
                raise ValueError("state_dict has state arrays but step_count 0")
            out = {}
            for name, arr in st.items():
                ref = self._init_state(name, p, hyper)
                if not isinstance(arr, np.ndarray):
                    raise TypeError("state_dict['state'][%d][%r] must be a numpy.ndarray" % (i, name))
                if arr.shape != ref.shape or arr.dtype != ref.dtype:
                    raise ValueError("state_dict['state'][%d][%r] has shape %s dtype %s, expected shape %s dtype %s"
                                     % (i, name, arr.shape, arr.dtype, ref.shape, ref.dtype))
                out[name] = np.array(arr, copy=True, order="C")
            new_state.append(out)
        self.hyper = hyper
        self.step_count = int(step_count)
        self.state = new_state


def _check_params(params):
    if isinstance(params, np.ndarray):
        params = [params]
    elif not isinstance(params, (list, tuple)):
        try:
            params = list(params)
        except TypeError:
            raise TypeError("params must be a list of numpy arrays, got %s" % type(params).__name__) from None
    params = list(params)
    if not params:
        raise ValueError("params is empty")
    for i, p in enumerate(params):
        if not isinstance(p, np.ndarray):
            raise TypeError("params[%d] must be a numpy.ndarray, got %s" % (i, type(p).__name__))
        if p.dtype not in V.FLOAT_DTYPES:
            raise TypeError("params[%d] must have dtype float32 or float64, got %s" % (i, p.dtype))
        if not p.flags.c_contiguous:
            raise ValueError("params[%d] must be C-contiguous (use numpy.ascontiguousarray)" % i)
        if not p.flags.writeable:
            raise ValueError("params[%d] must be writeable (it is updated in place)" % i)
        for j in range(i):
            if p.size and params[j].size and np.may_share_memory(p, params[j]):
                raise ValueError("params[%d] and params[%d] overlap in memory" % (j, i))
    return params


# ---------------------------------------------------------------------------------------
# the optimizers

class SGD(Optimizer):
    """``SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
    maximize=False, backend=None)`` over :func:`fastgd.sgd_step`, as ``torch.optim.SGD``:
    the momentum buffer starts as a copy of the first gradient (``step=1`` is passed to the
    kernel on the step that creates it)."""

    _defaults = {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False,
                 "maximize": False}
    _spec = {"lr": _nonneg, "momentum": _nonneg, "dampening": _unit_closed, "weight_decay": _nonneg,
             "nesterov": _flag, "maximize": _flag}

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False, backend=None):
        super().__init__(params, backend=backend, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)

    def _check_combination(self, h):
        if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
            raise ValueError("nesterov=True requires momentum > 0 and dampening == 0")

    def _state_names(self, h):
        return ("momentum_buffer",) if h["momentum"] != 0 else ()

    def _group_key(self, st, new):
        return "momentum_buffer" in new  # the buffers created now start as the gradient

    def _update_many(self, ps, gs, sts, h, t, news):
        bufs = [st["momentum_buffer"] for st in sts] if h["momentum"] != 0 else None
        _multi.sgd_step(ps, gs, bufs, lr=h["lr"], momentum=h["momentum"], dampening=h["dampening"],
                        nesterov=h["nesterov"], weight_decay=h["weight_decay"], maximize=h["maximize"],
                        step=1 if "momentum_buffer" in news[0] else t, backend=self.backend)


class Adam(Optimizer):
    """``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
    maximize=False, backend=None)`` over :func:`fastgd.adam_step`, as ``torch.optim.Adam``."""

    _kernel = staticmethod(_multi.adam_step)
    _defaults = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False,
                 "maximize": False}
    _spec = {"lr": _nonneg, "betas": _betas(False), "eps": _nonneg, "weight_decay": _nonneg, "amsgrad": _flag,
             "maximize": _flag}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 maximize=False, backend=None):
        super().__init__(params, backend=backend, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)

    def _state_names(self, h):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if h["amsgrad"] else ("exp_avg", "exp_avg_sq")

    def _update_many(self, ps, gs, sts, h, t, news):
        self._kernel(ps, gs, [st["exp_avg"] for st in sts], [st["exp_avg_sq"] for st in sts], step=t, lr=h["lr"],
                     beta1=h["betas"][0], beta2=h["betas"][1], eps=h["eps"], weight_decay=h["weight_decay"],
                     amsgrad=h["amsgrad"],
                     max_exp_avg_sqs=[st["max_exp_avg_sq"] for st in sts] if h["amsgrad"] else None,
                     maximize=h["maximize"], backend=self.backend)


class AdamW(Adam):
    """``AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
    maximize=False, backend=None)`` over :func:`fastgd.adamw_step`, as ``torch.optim.AdamW``."""

    _kernel = staticmethod(_multi.adamw_step)
    _defaults = dict(Adam._defaults, weight_decay=1e-2)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, backend=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, backend=backend)


class Adamax(Optimizer):
    """``Adamax(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, *, maximize=False,
    backend=None)`` over :func:`fastgd.adamax_step`, as ``torch.optim.Adamax``."""

    _defaults = {"lr": 2e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "maximize": False}
    _spec = {"lr": _nonneg, "betas": _betas(False), "eps": _nonneg, "weight_decay": _nonneg, "maximize": _flag}

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *, maximize=False,
                 backend=None):
        super().__init__(params, backend=backend, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         maximize=maximize)

    def _state_names(self, h):
        return ("exp_avg", "exp_inf")

    def _update_many(self, ps, gs, sts, h, t, news):
        _multi.adamax_step(ps, gs, [st["exp_avg"] for st in sts], [st["exp_inf"] for st in sts], step=t,
                           lr=h["lr"], beta1=h["betas"][0], beta2=h["betas"][1], eps=h["eps"],
                           weight_decay=h["weight_decay"], maximize=h["maximize"], backend=self.backend)


class NAdam(Optimizer):
    """``NAdam(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
    decoupled_weight_decay=False, *, maximize=False, backend=None)`` over
    :func:`fastgd.nadam_step`, as ``torch.optim.NAdam`` (state ``mu_product``: the running
    product of the momentum schedule, a float64 array of one element)."""

    _defaults = {"lr": 2e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "momentum_decay": 4e-3,
                 "decoupled_weight_decay": False, "maximize": False}
    _spec = {"lr": _nonneg, "betas": _betas(False), "eps": _nonneg, "weight_decay": _nonneg,
             "momentum_decay": _nonneg, "decoupled_weight_decay": _flag, "maximize": _flag}

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, *, maximize=False, backend=None):
        super().__init__(params, backend=backend, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                         maximize=maximize)

    def _state_names(self, h):
        return ("exp_avg", "exp_avg_sq", "mu_product")

    def _init_state(self, name, p, h):
        if name == "mu_product":
            return np.ones(1, dtype=np.float64)
        return np.zeros_like(p)

    def _group_key(self, st, new):
        return float(st["mu_product"][0])  # equal for all parameters unless a state_dict said otherwise

    def _update_many(self, ps, gs, sts, h, t, news):
        mu = sts[0]["mu_product"]
        _multi.nadam_step(ps, gs, [st["exp_avg"] for st in sts], [st["exp_avg_sq"] for st in sts], mu, step=t,
                          lr=h["lr"], beta1=h["betas"][0], beta2=h["betas"][1], eps=h["eps"],
                          weight_decay=h["weight_decay"], momentum_decay=h["momentum_decay"],
                          decoupled_weight_decay=h["decoupled_weight_decay"], maximize=h["maximize"],
                          backend=self.backend)
        for st in sts[1:]:
            st["mu_product"][...] = mu


class RAdam(Optimizer):
    """``RAdam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
    decoupled_weight_decay=False, *, maximize=False, backend=None)`` over
    :func:`fastgd.radam_step`, as ``torch.optim.RAdam``."""

    _defaults = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                 "decoupled_weight_decay": False, "maximize": False}
    _spec = {"lr": _nonneg, "betas": _betas(False), "eps": _nonneg, "weight_decay": _nonneg,
             "decoupled_weight_decay": _flag, "maximize": _flag}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False, *, maximize=False, backend=None):
        super().__init__(params, backend=backend, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)

    def _state_names(self, h):
        return ("exp_avg", "exp_avg_sq")

    def _update_many(self, ps, gs, sts, h, t, news):
        _multi.radam_step(ps, gs, [st["exp_avg"] for st in sts], [st["exp_avg_sq"] for st in sts], step=t,
                          lr=h["lr"], beta1=h["betas"][0], beta2=h["betas"][1], eps=h["eps"],
                          weight_decay=h["weight_decay"], decoupled_weight_decay=h["decoupled_weight_decay"],
                          maximize=h["maximize"], backend=self.backend)


class Adagrad(Optimizer):
    """``Adagrad(params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
    eps=1e-10, *, maximize=False, backend=None)`` over :func:`fastgd.adagrad_step`, as
    ``torch.optim.Adagrad`` (one of the texts starts the accumulator at 1:
    ``initial_accumulator_value=1``)."""

    _defaults = {"lr": 1e-2, "lr_decay": 0.0, "weight_decay": 0.0, "initial_accumulator_value": 0.0,
                 "eps": 1e-10, "maximize": False}
    _spec = {"lr": _nonneg, "lr_decay": _nonneg, "weight_decay": _nonneg, "initial_accumulator_value": _nonneg,
             "eps": _nonneg, "maximize": _flag}

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, *, maximize=False, backend=None):
        super().__init__(params, backend=backend, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize)

    def _state_names(self, h):
        return ("sum",)

    def _init_state(self, name, p, h):
        return np.full_like(p, h["initial_accumulator_value"])

    def _update_many(self, ps, gs, sts, h, t, news):
        _multi.adagrad_step(ps, gs, [st["sum"] for st in sts], step=t, lr=h["lr"], lr_decay=h["lr_decay"],
                            weight_decay=h["weight_decay"], eps=h["eps"], maximize=h["maximize"],
                            backend=self.backend)


class Adadelta(Optimizer):
    """``Adadelta(params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, *, maximize=False,
    backend=None)`` over :func:`fastgd.adadelta_step`, as ``torch.optim.Adadelta``."""

    _defaults = {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0, "maximize": False}
    _spec = {"lr": _nonneg, "rho": _unit_closed, "eps": _nonneg, "weight_decay": _nonneg, "maximize": _flag}

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, *, maximize=False, backend=None):
        super().__init__(params, backend=backend, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                         maximize=maximize)

    def _state_names(self, h):
        return ("square_avg", "acc_delta")

    def _update_many(self, ps, gs, sts, h, t, news):
        _multi.adadelta_step(ps, gs, [st["square_avg"] for st in sts], [st["acc_delta"] for st in sts],
                             lr=h["lr"], rho=h["rho"], eps=h["eps"], weight_decay=h["weight_decay"],
                             maximize=h["maximize"], backend=self.backend)


class RMSprop(Optimizer):
    """``RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
    centered=False, *, maximize=False, backend=None)`` over :func:`fastgd.rmsprop_step`, as
    ``torch.optim.RMSprop``."""

    _defaults = {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0,
                 "centered": False, "maximize": False}
    _spec = {"lr": _nonneg, "alpha": _unit_closed, "eps": _nonneg, "weight_decay": _nonneg, "momentum": _nonneg,
             "centered": _flag, "maximize": _flag}

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, *,
                 maximize=False, backend=None):
        super().__init__(params, backend=backend, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum, centered=centered, maximize=maximize)

    def _state_names(self, h):
        names = ("square_avg",)
        if h["momentum"] > 0:
            names += ("momentum_buffer",)
        if h["centered"]:
            names += ("grad_avg",)
        return names

    def _update_many(self, ps, gs, sts, h, t, news):
        _multi.rmsprop_step(ps, gs, [st["square_avg"] for st in sts],
                            momentum_buffers=[st["momentum_buffer"] for st in sts] if h["momentum"] > 0 else None,
                            grad_avgs=[st["grad_avg"] for st in sts] if h["centered"] else None, lr=h["lr"],
                            alpha=h["alpha"], eps=h["eps"], momentum=h["momentum"], centered=h["centered"],
                            weight_decay=h["weight_decay"], maximize=h["maximize"], backend=self.backend)


class Lion(Optimizer):
    """``Lion(params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0, *, maximize=False,
    backend=None)`` over :func:`fastgd.lion_step` (Chen et al. 2023, decoupled weight decay)."""

    _defaults = {"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0, "maximize": False}
    _spec = {"lr": _nonneg, "betas": _betas(True), "weight_decay": _nonneg, "maximize": _flag}

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *, maximize=False, backend=None):
        super().__init__(params, backend=backend, lr=lr, betas=betas, weight_decay=weight_decay,
                         maximize=maximize)

    def _state_names(self, h):
        return ("exp_avg",)

    def _update_many(self, ps, gs, sts, h, t, news):
        _multi.lion_step(ps, gs, [st["exp_avg"] for st in sts], lr=h["lr"], beta1=h["betas"][0],
                         beta2=h["betas"][1], weight_decay=h["weight_decay"], maximize=h["maximize"],
                         backend=self.backend)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "adamax": Adamax, "nadam": NAdam, "radam": RAdam,
              "adagrad": Adagrad, "adadelta": Adadelta, "rmsprop": RMSprop, "lion": Lion}


# ---------------------------------------------------------------------------------------
# save / load

def save(opt, path, *, params=True):
    """Write ``opt.state_dict()`` (and, with ``params=True``, the parameters) to an ``.npz``
    file.  Arrays are stored bit-exactly; hyperparameters as JSON (no pickle)."""
    if not isinstance(opt, Optimizer):
        raise TypeError("opt must be a fastgd.optim optimizer, got %s" % type(opt).__name__)
    sd = opt.state_dict()
    meta = {"format": "fastgd.optim/1", "optimizer": sd["optimizer"], "step_count": sd["step_count"],
            "hyper": sd["hyper"], "n_params": len(opt.parameters()), "params": bool(params),
            "state_names": [sorted(st) for st in sd["state"]]}
    arrays = {"__meta__": np.array(json.dumps(meta))}
    for i, st in enumerate(sd["state"]):
        for name, arr in st.items():
            arrays["state/%d/%s" % (i, name)] = arr
    if params:
        for i, p in enumerate(opt.parameters()):
            arrays["param/%d" % i] = p
    np.savez(path, **arrays)


def load(opt, path, *, params=True):
    """Restore into ``opt`` what :func:`save` wrote: the state (``load_state_dict``) and,
    with ``params=True`` (and if the file has them), the parameter values, copied in place.
    Everything is checked before anything is written.  Returns ``opt``."""
    if not isinstance(opt, Optimizer):
        raise TypeError("opt must be a fastgd.optim optimizer, got %s" % type(opt).__name__)
    with np.load(path, allow_pickle=False) as data:
        if "__meta__" not in data.files:
            raise ValueError("%s was not written by fastgd.optim.save" % (path,))
        meta = json.loads(str(data["__meta__"]))
        hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["hyper"].items()}
        state = [{name: data["state/%d/%s" % (i, name)] for name in names}
                 for i, names in enumerate(meta["state_names"])]
        values = None
        if params and meta.get("params"):
            values = [data["param/%d" % i] for i in range(meta["n_params"])]
    sd = {"optimizer": meta["optimizer"], "step_count": meta["step_count"], "hyper": hyper, "state": state}
    if values is not None:
        ps = opt.parameters()
        if len(values) != len(ps):
            raise ValueError("the file holds %d parameters, the optimizer has %d" % (len(values), len(ps)))
        for i, (p, v) in enumerate(zip(ps, values)):
            if p.shape != v.shape or p.dtype != v.dtype:
                raise ValueError("saved parameter %d has shape %s dtype %s, the optimizer's has shape %s dtype %s"
                                 % (i, v.shape, v.dtype, p.shape, p.dtype))
    backup = opt.state_dict()
    opt.load_state_dict(sd)  # validates before writing
    if values is not None:
        try:
            for p, v in zip(opt.parameters(), values):
                p[...] = v
        except Exception:  # pragma: no cover - defensive: keep opt consistent
            opt.load_state_dict(backup)
            raise
    return opt


# ---------------------------------------------------------------------------------------
# learning-rate schedules

class LRScheduler:
    """Base of the schedules, as ``torch.optim.lr_scheduler``: built over an optimizer, it
    remembers the optimizer's current ``lr`` as ``base_lr``; ``step()`` advances
    ``last_epoch`` (call it once per epoch, or once per step: the unit is yours) and sets
    ``optimizer.lr`` to ``lr_at(last_epoch)``.  Construction performs the first ``step()``,
    so ``last_epoch`` is 0 and the lr is ``lr_at(0)`` (= ``base_lr`` for the built-in
    schedules).  The lr is always computed in closed form from ``base_lr`` and
    ``last_epoch`` (no accumulated round-off, and any epoch can be jumped to)."""

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError("optimizer must be a fastgd.optim optimizer, got %s" % type(optimizer).__name__)
        if type(last_epoch) is bool or not isinstance(last_epoch, (int, np.integer)) or last_epoch < -1:
            raise ValueError("last_epoch must be an integer >= -1, got %r" % (last_epoch,))
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = int(last_epoch)
        self.step()

    def lr_at(self, epoch):
        raise NotImplementedError

    def step(self):
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)
        return self.optimizer.lr

    def get_last_lr(self):
        return [self.optimizer.lr]

    def state_dict(self):
        return {"last_epoch": self.last_epoch, "base_lr": self.base_lr}

    def load_state_dict(self, state_dict):
        self.base_lr = V.nonneg("base_lr", state_dict["base_lr"])
        self.last_epoch = int(state_dict["last_epoch"])
        self.optimizer.lr = self.lr_at(self.last_epoch)


def _positive_int(name, v):
    if type(v) is bool or not isinstance(v, (int, np.integer)):
        raise TypeError("%s must be an integer, got %s" % (name, type(v).__name__))
    if v < 1:
        raise ValueError("%s must be >= 1, got %d" % (name, v))
    return int(v)


class StepLR(LRScheduler):
    """``lr = base_lr * gamma ** (epoch // step_size)``."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = _positive_int("step_size", step_size)
        self.gamma = V.nonneg("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """``lr = base_lr * gamma ** epoch``."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = V.nonneg("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** epoch


class CosineAnnealingLR(LRScheduler):
    """``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2`` (torch's
    closed form; periodic beyond ``T_max``)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = _positive_int("T_max", T_max)
        self.eta_min = V.nonneg("eta_min", eta_min)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        return self.eta_min + (self.base_lr - self.eta_min) * (1.0 + math.cos(math.pi * epoch / self.T_max)) / 2.0


class LambdaLR(LRScheduler):
    """``lr = base_lr * lr_lambda(epoch)`` for any callable of the epoch (step) number, as
    ``torch.optim.lr_scheduler.LambdaLR`` (warm-up, inverse-time decay, ...)."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        if not callable(lr_lambda):
            raise TypeError("lr_lambda must be callable, got %s" % type(lr_lambda).__name__)
        self.lr_lambda = lr_lambda
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        factor = V.real("lr_lambda(%d)" % epoch, self.lr_lambda(epoch))
        return V.nonneg("lr", self.base_lr * factor)
