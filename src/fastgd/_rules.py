"""The rule table: every fact about an update rule, declared once.

One :class:`Rule` per public step function (``adam_step``, ``adamw_step``, ...).  It holds

* ``kernel``: the backends' kernel name (``fastgd/reference/rules.py``, the Cython and numba
  modules all export it; ``adam_step`` and ``adamw_step`` share ``adam``);
* ``state``: the state arrays in positional order, under torch's names, each with the
  option that makes it needed (``when``), its plural name in :mod:`fastgd.multi`, its name in
  a ``torch.optim`` state dict, its initial value, and whether it can never be negative;
* ``hyper``: every hyperparameter with its default (torch's; Lion: the paper's) and its check;
* ``step``: whether the rule takes the step count (``"required"``), takes it optionally
  (SGD: only to know the first step), or not at all (``None``);
* ``fixed``: kernel keywords the public function fixes (AdamW: decoupled weight decay).

What reads it: the hyperparameter checks of :mod:`fastgd.steps` and :mod:`fastgd.multi`
(:meth:`Rule.check`), which arrays a call needs and may leave out (:meth:`Rule.arrays`),
the defaults, hyperparameter checks and state names of the :mod:`fastgd.optim` classes,
the kernel list each backend must provide, and the tests' parametrization.  The public
functions keep explicit signatures and formula docstrings for editors and ``help()``;
``tests/test_rules.py`` checks that every signature's defaults equal this table.

Adding a rule: the reference function, the Cython and numba kernels, the public functions
(steps, multi, an optim class) and one entry here.
"""
from __future__ import annotations

import keyword
import math
from typing import TYPE_CHECKING, Any, Literal

from . import _validate as V

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    HyperCheck = Literal["nonneg", "unit", "unit_closed", "flag"]

__all__ = ["Rule", "State", "Hyper", "RULES", "KERNELS", "EXTRAS"]


class Hyper:
    """One hyperparameter: ``name``, ``default`` and ``check``, one of
    ``"nonneg"`` (a real >= 0), ``"unit"`` ([0, 1)), ``"unit_closed"`` ([0, 1]), ``"flag"`` (a bool)."""
    __slots__ = ("name", "default", "check")

    CHECKS = ("nonneg", "unit", "unit_closed", "flag")

    def __init__(self, name: str, default: float | bool | None, check: HyperCheck) -> None:
        if check not in self.CHECKS:
            raise ValueError("unknown check %r" % check)
        self.name, self.default, self.check = name, default, check

    def __call__(self, value: object, name: str | None = None) -> Any:
        """The checked value (TypeError/ValueError naming ``name``, default this one's name)."""
        name = name or self.name
        c = self.check
        if c == "nonneg":
            return V.nonneg(name, value)
        if c == "unit":
            return V.unit_interval(name, value)
        if c == "unit_closed":
            return V.unit_interval(name, value, closed_right=True)
        return V.flag(name, value)

    def __repr__(self) -> str:
        return "Hyper(%r, %r, %r)" % (self.name, self.default, self.check)


class State:
    """One state array of a rule.

    ``name``: the single-tensor argument (torch's state name unless ``torch`` says otherwise);
    ``multi``: the :mod:`fastgd.multi` list argument; ``when``: ``None`` (always needed) or
    the condition on the hyperparameters under which it is needed, as a Python expression
    (``"momentum != 0"``, ``"amsgrad"``), which is also how error messages state it;
    ``nonneg``: its values are never negative (a state dict with a negative value is damaged);
    ``init``: the value a new array starts with (a hyperparameter's name, or a number);
    ``scalar``: a float64 array of one element shared by all tensors (NAdam's ``mu_product``)
    rather than an array of the parameter's shape; ``from_grad``: torch creates it from the
    first gradient (SGD's ``momentum_buffer``), so a state dict may lack it.
    """
    __slots__ = ("name", "multi", "torch", "when", "_when", "nonneg", "init", "scalar", "from_grad")

    def __init__(self, name: str, *, multi: str | None = None, torch: str | None = None, when: str | None = None,
                 nonneg: bool = False, init: float | str = 0.0, scalar: bool = False, from_grad: bool = False) -> None:
        self.name = name
        self.multi = multi or name + "s"
        self.torch = torch or name
        self.when = when
        self._when = None if when is None else compile(when, "<when %s>" % name, "eval")
        self.nonneg = nonneg
        self.init = init
        self.scalar = scalar
        self.from_grad = from_grad

    def needed(self, hyper: Mapping[str, Any]) -> bool:
        """Is this array used by a call with these (checked) hyperparameters?"""
        return self._when is None or bool(eval(self._when, {}, hyper))

    @property
    def why(self) -> str:
        """The condition as an error message says it: "momentum != 0", "amsgrad=True"."""
        if self.when is None:
            return ""
        return self.when + "=True" if self.when.isidentifier() else self.when

    def __repr__(self) -> str:
        return "State(%r)" % self.name


class Rule:
    """One update rule: see the module docstring.  ``check(**values)`` returns the kernel's
    keywords (the reference's names), checked, with ``fixed`` added."""

    def __init__(self, name: str, kernel: str, state: Iterable[State], hyper: Iterable[Hyper], *,
                 step: Literal["required", "optional"] | None = "required", fixed: Mapping[str, Any] | None = None,
                 combine: Callable[[dict[str, Any]], None] | None = None, optimizer: str | None = None,
                 optim_hyper: Iterable[Hyper] = (), betas: tuple[str, str] | None = None,
                 optim_defaults: Mapping[str, Any] | None = None) -> None:
        self.name = name            # "adamw": the public functions are <name>_step
        self.kernel = kernel        # "adam": the backends' kernel
        self.state = tuple(state)
        self.hyper = tuple(hyper)
        self.step = step            # "required", "optional" or None
        self.fixed = dict(fixed or {})
        self.combine = combine      # a check of the combination, (checked dict) -> None or raise
        self.optimizer = optimizer  # the fastgd.optim class name
        self.optim_hyper = tuple(optim_hyper)  # optimizer-only hyperparameters (e.g. Adagrad's initial value)
        self.betas = betas          # ("beta1", "beta2"): fastgd.optim takes them as betas=(b1, b2)
        self.optim_defaults = dict(optim_defaults or {})  # where the optimizer's default differs (SGD's lr)
        self._by_name = {h.name: h for h in self.hyper}
        self.array_names = ("param", "grad") + tuple(s.name for s in self.state if not s.scalar)
        self.multi_names = ("params", "grads") + tuple(s.multi for s in self.state if not s.scalar)
        # positions (in array_names) that may be None: optional state not used by a call
        self.optional = sum(1 << (2 + k) for k, s in enumerate(s for s in self.state if not s.scalar)
                            if s.when is not None)
        self.check = _compile_check(self)
        # arrays(kw, given, names=None): the kernel's arrays from a call's (validated) arrays
        # ``given`` (param, grad, every state array; None where the caller passed none).
        # State that ``kw`` uses but that is None is a ValueError naming it; state it does not
        # use becomes None (it was checked all the same when given).
        self.arrays = _compile_arrays(self)

    @property
    def defaults(self) -> dict[str, Any]:
        """{hyperparameter: default}, in signature order (``step`` not included)."""
        return {h.name: h.default for h in self.hyper}

    def __repr__(self) -> str:
        return "Rule(%r)" % self.name


# The check of a rule's hyperparameters is generated from its entry (as namedtuple and
# dataclasses generate their methods): one function per rule, its keywords named as the
# hyperparameters, each value accepted inline when it is a plain Python value in range (the
# value the named check would return unchanged) and passed to the named check otherwise.
# ``Rule.check(step, **hyper)`` returns the kernel keywords; it is on every call's path, so
# it must cost about what hand-written checks did (a loop over the table cost 2-3x that).
_INLINE = {
    "nonneg": "type({v}) is float and {v} >= 0.0",
    "unit": "type({v}) is float and 0.0 <= {v} < 1.0",
    "unit_closed": "type({v}) is float and 0.0 <= {v} <= 1.0",
    "flag": "{v} is True or {v} is False",
}
_NAMED = {
    "nonneg": "V.nonneg({n!r}, {v})",
    "unit": "V.unit_interval({n!r}, {v})",
    "unit_closed": "V.unit_interval({n!r}, {v}, closed_right=True)",
    "flag": "V.flag({n!r}, {v})",
}


# names the generated functions use themselves: a hyperparameter may not be called so
_RESERVED = frozenset(("V", "combine", "out", "kw", "given", "names", "NAMES", "step"))


def _compile_check(rule):
    names = [h.name for h in rule.hyper]
    bad = [n for n in names if n in _RESERVED or not n.isidentifier() or keyword.iskeyword(n)]
    if bad:
        raise ValueError("rule %r: hyperparameter names %s clash with the generated checks" % (rule.name, bad))
    args = (["step=None"] if rule.step is not None else []) + ["*"] + names
    body = []
    for h in rule.hyper:
        body.append("    if not (%s):\n        %s = %s" % (_INLINE[h.check].format(v=h.name), h.name,
                                                           _NAMED[h.check].format(n=h.name, v=h.name)))
    out = ", ".join("%r: %s" % (n, n) for n in names)
    out += "".join(", %r: %r" % kv for kv in rule.fixed.items())
    body.append("    out = {%s}" % out)
    if rule.combine is not None:
        body.append("    combine(out)")
    if rule.step == "required":
        body.append("    out['step'] = step if type(step) is int and 1 <= step <= V.MAX_STEP else V.step(step)")
    elif rule.step == "optional":
        body.append("    out['first_step'] = False if step is None else V.step(step) == 1")
    body.append("    return out")
    src = "def check(%s):\n%s\n" % (", ".join(args), "\n".join(body))
    namespace = {"V": V, "combine": rule.combine}  # V is read at call time (it imports this module)
    exec(compile(src, "<fastgd._rules: %s check>" % rule.name, "exec"), namespace)
    check = namespace["check"]
    check.__doc__ = "Check the hyperparameters of %s_step (and step); return the kernel's keywords." % rule.name
    check.source = src
    return check


def _compile_arrays(rule):
    """Rule.arrays, generated like Rule.check: the ``when`` conditions inlined."""
    cond = [(2 + k, s) for k, s in enumerate(s for s in rule.state if not s.scalar) if s.when is not None]
    if not cond:
        def arrays(kw, given, names=None):
            return given
        return arrays
    used = sorted({n for _, s in cond for n in s._when.co_names})
    body = ["    %s = kw[%r]" % (n, n) for n in used]
    body.append("    out = list(given)")
    for k, s in cond:
        body.append("    if %s:" % s.when)
        body.append("        if out[%d] is None:" % k)
        body.append("            V.required((names or NAMES)[%d], None, %r)" % (k, s.why))
        body.append("    else:")
        body.append("        out[%d] = None" % k)
    body.append("    return tuple(out)")
    src = "def arrays(kw, given, names=None):\n%s\n" % "\n".join(body)
    namespace = {"V": V, "NAMES": rule.array_names}
    exec(compile(src, "<fastgd._rules: %s arrays>" % rule.name, "exec"), namespace)
    arrays = namespace["arrays"]
    arrays.source = src
    return arrays


def _sgd_combine(h):
    if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
        raise ValueError("nesterov=True requires momentum > 0 and dampening == 0")


def _common(lr, *, eps=None, weight_decay=0.0):
    """lr, (eps,) weight_decay: the hyperparameters most rules share."""
    out = [Hyper("lr", lr, "nonneg")]
    if eps is not None:
        out.append(Hyper("eps", eps, "nonneg"))
    out.append(Hyper("weight_decay", weight_decay, "nonneg"))
    return out


def _betas(b1, b2, closed=False):
    kind = "unit_closed" if closed else "unit"
    return [Hyper("beta1", b1, kind), Hyper("beta2", b2, kind)]


_MAXIMIZE = Hyper("maximize", False, "flag")
_DECOUPLED = Hyper("decoupled_weight_decay", False, "flag")

_adam_state = (State("exp_avg"), State("exp_avg_sq", nonneg=True),
               State("max_exp_avg_sq", when="amsgrad", nonneg=True))

RULES = {r.name: r for r in (
    Rule("sgd", "sgd",
         [State("momentum_buffer", when="momentum != 0", from_grad=True)],
         [Hyper("lr", None, "nonneg"), Hyper("momentum", 0.0, "nonneg"), Hyper("dampening", 0.0, "unit_closed"),
          Hyper("nesterov", False, "flag"), Hyper("weight_decay", 0.0, "nonneg"), _MAXIMIZE],
         step="optional", combine=_sgd_combine, optimizer="SGD", optim_defaults={"lr": 1e-3}),
    Rule("adam", "adam", _adam_state,
         [Hyper("lr", 1e-3, "nonneg"), *_betas(0.9, 0.999), Hyper("eps", 1e-8, "nonneg"),
          Hyper("weight_decay", 0.0, "nonneg"), Hyper("amsgrad", False, "flag"), _MAXIMIZE],
         fixed={"decoupled_weight_decay": False}, optimizer="Adam", betas=("beta1", "beta2")),
    Rule("adamw", "adam", _adam_state,
         [Hyper("lr", 1e-3, "nonneg"), *_betas(0.9, 0.999), Hyper("eps", 1e-8, "nonneg"),
          Hyper("weight_decay", 1e-2, "nonneg"), Hyper("amsgrad", False, "flag"), _MAXIMIZE],
         fixed={"decoupled_weight_decay": True}, optimizer="AdamW", betas=("beta1", "beta2")),
    Rule("adamax", "adamax", [State("exp_avg"), State("exp_inf", nonneg=True)],
         [Hyper("lr", 2e-3, "nonneg"), *_betas(0.9, 0.999), Hyper("eps", 1e-8, "nonneg"),
          Hyper("weight_decay", 0.0, "nonneg"), _MAXIMIZE],
         optimizer="Adamax", betas=("beta1", "beta2")),
    Rule("nadam", "nadam",
         [State("exp_avg"), State("exp_avg_sq", nonneg=True),
          State("mu_product", multi="mu_product", init=1.0, scalar=True, nonneg=True)],
         [Hyper("lr", 2e-3, "nonneg"), *_betas(0.9, 0.999), Hyper("eps", 1e-8, "nonneg"),
          Hyper("weight_decay", 0.0, "nonneg"), Hyper("momentum_decay", 4e-3, "nonneg"), _DECOUPLED, _MAXIMIZE],
         optimizer="NAdam", betas=("beta1", "beta2")),
    Rule("radam", "radam", [State("exp_avg"), State("exp_avg_sq", nonneg=True)],
         [Hyper("lr", 1e-3, "nonneg"), *_betas(0.9, 0.999), Hyper("eps", 1e-8, "nonneg"),
          Hyper("weight_decay", 0.0, "nonneg"), _DECOUPLED, _MAXIMIZE],
         optimizer="RAdam", betas=("beta1", "beta2")),
    Rule("adagrad", "adagrad", [State("state_sum", torch="sum", nonneg=True, init="initial_accumulator_value")],
         [Hyper("lr", 1e-2, "nonneg"), Hyper("lr_decay", 0.0, "nonneg"), Hyper("weight_decay", 0.0, "nonneg"),
          Hyper("eps", 1e-10, "nonneg"), _MAXIMIZE],
         optimizer="Adagrad", optim_hyper=[Hyper("initial_accumulator_value", 0.0, "nonneg")]),
    Rule("adadelta", "adadelta", [State("square_avg", nonneg=True), State("acc_delta", nonneg=True)],
         [Hyper("lr", 1.0, "nonneg"), Hyper("rho", 0.9, "unit_closed"), Hyper("eps", 1e-6, "nonneg"),
          Hyper("weight_decay", 0.0, "nonneg"), _MAXIMIZE],
         step=None, optimizer="Adadelta"),
    Rule("rmsprop", "rmsprop",
         [State("square_avg", nonneg=True),
          State("momentum_buffer", when="momentum > 0"),
          State("grad_avg", when="centered")],
         [Hyper("lr", 1e-2, "nonneg"), Hyper("alpha", 0.99, "unit_closed"), Hyper("eps", 1e-8, "nonneg"),
          Hyper("momentum", 0.0, "nonneg"), Hyper("centered", False, "flag"), Hyper("weight_decay", 0.0, "nonneg"),
          _MAXIMIZE],
         step=None, optimizer="RMSprop"),
    Rule("lion", "lion", [State("exp_avg")],
         [Hyper("lr", 1e-4, "nonneg"), *_betas(0.9, 0.99, closed=True), Hyper("weight_decay", 0.0, "nonneg"),
          _MAXIMIZE],
         step=None, optimizer="Lion", betas=("beta1", "beta2")),
)}

# The fused extras every rule takes (keyword-only, default None, after its hyperparameters;
# single-tensor name, fastgd.multi name), checked by fastgd._validate (grad_scale, found_inf,
# max_norm, master) and defined by fastgd/reference/half.py.
EXTRAS = (("grad_scale", "grad_scale"), ("found_inf", "found_inf"), ("max_norm", "max_norm"),
          ("master_param", "master_params"))

# the kernels every backend provides (reference names), in table order
KERNELS = tuple(dict.fromkeys(r.kernel for r in RULES.values()))

assert all(math.isfinite(h.default) for r in RULES.values() for h in r.hyper
           if h.check != "flag" and h.default is not None)
