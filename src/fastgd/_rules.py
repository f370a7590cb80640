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

__all__ = ["Rule", "State", "Hyper", "RULES", "KERNELS", "EXTRAS", "TFOp", "TF_OPS", "TF_KERNELS"]


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


# ---------------------------------------------------------------------------------------
# TensorFlow's training ops (fastgd.tf): one TFOp per op, declared once, here.
#
# fastgd.tf generates its functions from these entries (TF's input names, in the op's order,
# then the op's attributes with TF's defaults); the front-end's checks, the kernel's argument
# order, the tests' parametrization and the README's table all read them.  The semantics are
# those of TF's CPU kernels (core/kernels/training_ops.cc); fastgd/reference/tf.py is the spec.

class TFOp:
    """One TensorFlow training op.

    ``name``: the fastgd.tf function (TF's op name in snake_case without ``Resource``);
    ``op``: TF's op name (``"ApplyAdam"``; the tests run ``tf.raw_ops.Resource<op>``);
    ``inputs``: the op's inputs in order; ``slots``: those of them updated in place besides
    ``var``; ``grad``: the gradient's input name (``"delta"`` for the dense gradient-descent ops);
    ``attrs``: the op's attributes after ``use_locking``, with TF's defaults; ``checks``:
    {scalar: "positive" | "nonneg" | "nonpos" | "ftrl_lr"}, the value checks TF's CPU kernel makes
    (TF 2.21; ``"ftrl_lr"``: > 0, or >= 0 with ``multiply_linear_by_lr``);
    ``formula``: one line for the docstring; ``rule``: the fastgd rule (torch's form) it is
    closest to, and ``differs``: how TF's op differs from it (the README's table);
    ``exact``: the compiled kernels equal the reference bit for bit (False where the op calls
    pow/exp, whose last bit may differ between libm, NumPy and LLVM).

    Derived: ``sparse`` (a ``sparse_*`` op: ``indices`` follows ``grad``), ``scalars`` (the
    inputs that are neither arrays nor ``global_step``), ``arrays`` (var, slots, grad: the
    kernel's leading arguments), ``kernel`` (the backends' function: ``tf_<name>``, taking
    ``arrays``, then ``indices`` if sparse, then ``scalars``, then ``global_step`` if any, then
    ``attrs`` by position).
    """
    __slots__ = ("name", "op", "inputs", "slots", "grad", "attrs", "checks", "formula", "rule", "differs",
                 "exact", "sparse", "scalars", "arrays", "kernel", "has_step", "dense")

    def __init__(self, name: str, op: str, inputs: str, slots: str = "", attrs: tuple[tuple[str, bool], ...] = (),
                 checks: Mapping[str, str] | None = None, formula: str = "", rule: str = "", differs: str = "",
                 exact: bool = True, dense: TFOp | None = None) -> None:
        self.name = name
        self.op = op
        self.inputs = tuple(inputs.replace(",", " ").split())
        self.slots = tuple(slots.split())
        self.sparse = "indices" in self.inputs
        self.grad = "delta" if "delta" in self.inputs else "grad"
        self.attrs = tuple(attrs)
        self.checks = dict(checks or {})
        self.formula, self.rule, self.differs, self.exact = formula, rule, differs, exact
        self.dense = dense
        self.has_step = "global_step" in self.inputs
        array_like = {"var", self.grad, "indices", "global_step", *self.slots}
        self.scalars = tuple(n for n in self.inputs if n not in array_like)
        self.arrays = ("var",) + self.slots + (self.grad,)
        self.kernel = "tf_" + name
        assert self.inputs[0] == "var" and all(s in self.inputs for s in self.slots)
        assert all(c in ("positive", "nonneg", "nonpos", "ftrl_lr") and s in self.scalars
                   for s, c in self.checks.items())

    def __repr__(self) -> str:
        return "TFOp(%r)" % self.name


def _tf_sparse(d: TFOp, checks: Mapping[str, str] | None = None) -> TFOp:
    """The SparseApply twin of dense op ``d``: its inputs with ``grad`` (dense ProximalGradientDescent
    calls it ``delta``) followed by ``indices``; the same per-row formula."""
    inputs = ["grad" if n == "delta" else n for n in d.inputs]
    inputs.insert(inputs.index("grad") + 1, "indices")
    return TFOp("sparse_" + d.name, "Sparse" + d.op, " ".join(inputs), " ".join(d.slots), d.attrs,
                d.checks if checks is None else checks, d.formula, d.rule, d.differs, d.exact, dense=d)


_NESTEROV = (("use_nesterov", False),)
_SLOTS = (("update_slots", True),)
_LINEAR = (("multiply_linear_by_lr", False),)
_PROX = {"lr": "positive", "l1": "nonneg", "l2": "nonneg"}
# the sparse FTRL ops' checks (TF 2.21's SparseApplyFtrlOp: lr > 0, or >= 0 with
# multiply_linear_by_lr); TF's dense FTRL ops check no values at all, and neither does fastgd
_FTRL = {"lr": "ftrl_lr", "l1": "nonneg", "l2": "nonneg", "lr_power": "nonpos"}
_FTRL2 = dict(_FTRL, l2_shrinkage="nonneg")

_tf_dense = (
    TFOp("apply_gradient_descent", "ApplyGradientDescent", "var alpha delta",
         formula="var -= alpha * delta",
         rule="sgd", differs="the learning rate is an input (alpha), no momentum or weight decay"),
    TFOp("apply_proximal_gradient_descent", "ApplyProximalGradientDescent", "var alpha l1 l2 delta",
         formula="prox = var - alpha*delta;  var = sign(prox) * max(|prox| - alpha*l1, 0) / (1 + alpha*l2)",
         rule="sgd", differs="FOBOS: a gradient step, then L1 shrinkage and L2 scaling (no torch form)"),
    TFOp("apply_adadelta", "ApplyAdadelta", "var accum accum_update lr rho epsilon grad", "accum accum_update",
         formula="accum = rho*accum + (1-rho)*g^2;  u = sqrt(accum_update + eps) / sqrt(accum + eps) * g;  "
                 "var -= lr*u;  accum_update = rho*accum_update + (1-rho)*u^2",
         rule="adadelta", differs="the same rule; no weight decay or maximize"),
    TFOp("apply_adagrad", "ApplyAdagrad", "var accum lr grad", "accum", _SLOTS,
         formula="accum += g^2 (if update_slots);  var -= lr * g / sqrt(accum)",
         rule="adagrad", differs="no epsilon (V1), no lr decay; update_slots=False leaves accum as it is"),
    TFOp("apply_adagrad_v2", "ApplyAdagradV2", "var accum lr epsilon grad", "accum", _SLOTS,
         formula="accum += g^2 (if update_slots);  var -= lr * g / (sqrt(accum) + epsilon)",
         rule="adagrad", differs="the same formula, without lr decay; update_slots"),
    TFOp("apply_proximal_adagrad", "ApplyProximalAdagrad", "var accum lr l1 l2 grad", "accum", checks=_PROX,
         formula="accum += g^2;  a = lr/sqrt(accum);  prox = var - a*g;  "
                 "var = sign(prox) * max(|prox| - a*l1, 0) / (1 + a*l2)",
         rule="adagrad", differs="Adagrad's step, then FOBOS L1/L2 shrinkage (no torch form)"),
    TFOp("apply_adagrad_da", "ApplyAdagradDA",
         "var gradient_accumulator gradient_squared_accumulator grad lr l1 l2 global_step",
         "gradient_accumulator gradient_squared_accumulator",
         formula="ga += g;  gg += g^2;  var = -sign(ga) * lr * max(|ga| - l1*t, 0) / (l2*t*lr + sqrt(gg))",
         rule="adagrad", differs="dual averaging: var is recomputed from the accumulators (no torch form)"),
    TFOp("apply_ftrl", "ApplyFtrl", "var accum linear grad lr l1 l2 lr_power", "accum linear", _LINEAR,
         formula="n' = accum + g^2;  linear += g - (n'^-p - accum^-p)/lr * var;  "
                 "var = (sign(linear)*l1 - linear) / (n'^-p/lr + 2*l2) if |linear| > l1 else 0;  accum = n'",
         rule="", differs="FTRL-Proximal (McMahan et al.); no torch form", exact=False),
    TFOp("apply_ftrl_v2", "ApplyFtrlV2", "var accum linear grad lr l1 l2 l2_shrinkage lr_power", "accum linear",
         _LINEAR,
         formula="as apply_ftrl, with g + 2*l2_shrinkage*var in the linear term",
         rule="", differs="FTRL-Proximal with L2 shrinkage; no torch form", exact=False),
    TFOp("apply_momentum", "ApplyMomentum", "var accum lr grad momentum", "accum", _NESTEROV,
         formula="accum = momentum*accum + g;  var -= lr*accum  (Nesterov: var -= lr*g + lr*momentum*accum)",
         rule="sgd", differs="torch's SGD with dampening=0, lr outside the buffer; the first step does not "
                            "copy g into the buffer (the buffer starts at zeros: the same result)"),
    TFOp("apply_keras_momentum", "ApplyKerasMomentum", "var accum lr grad momentum", "accum", _NESTEROV,
         formula="accum = momentum*accum - lr*g;  var += accum  (Nesterov: var += momentum*accum - lr*g)",
         rule="sgd", differs="lr inside the buffer (Keras' form): differs from torch's SGD when lr changes"),
    TFOp("apply_adam", "ApplyAdam", "var m v beta1_power beta2_power lr beta1 beta2 epsilon grad", "m v",
         _NESTEROV,
         formula="m += (g - m)*(1-beta1);  v += (g^2 - v)*(1-beta2);  "
                 "var -= lr*sqrt(1-beta2_power)/(1-beta1_power) * m / (sqrt(v) + epsilon)",
         rule="adam", differs="epsilon is added to the uncorrected sqrt(v); the caller keeps beta1_power and "
                             "beta2_power (beta**t); use_nesterov"),
    TFOp("apply_adam_with_amsgrad", "ApplyAdamWithAmsgrad",
         "var m v vhat beta1_power beta2_power lr beta1 beta2 epsilon grad", "m v vhat",
         formula="as apply_adam, with vhat = max(vhat, v) in the denominator",
         rule="adam", differs="as apply_adam; vhat holds the max of v (torch: max_exp_avg_sq)"),
    TFOp("apply_ada_max", "ApplyAdaMax", "var m v beta1_power lr beta1 beta2 epsilon grad", "m v",
         formula="m += (g - m)*(1-beta1);  v = max(beta2*v, |g|);  var -= lr/(1-beta1_power) * m/(v + epsilon)",
         rule="adamax", differs="epsilon is added to u after the max (torch: inside the max)"),
    TFOp("apply_rms_prop", "ApplyRMSProp", "var ms mom lr rho momentum epsilon grad", "ms mom",
         formula="ms += (g^2 - ms)*(1-rho);  mom = momentum*mom + lr*g/sqrt(ms + epsilon);  var -= mom",
         rule="rmsprop", differs="epsilon inside the root; lr inside the momentum buffer; always keeps mom"),
    TFOp("apply_centered_rms_prop", "ApplyCenteredRMSProp", "var mg ms mom lr rho momentum epsilon grad",
         "mg ms mom",
         formula="ms += (g^2 - ms)*(1-rho);  mg += (g - mg)*(1-rho);  "
                 "mom = momentum*mom + lr*g/sqrt(ms - mg^2 + epsilon);  var -= mom",
         rule="rmsprop", differs="centered=True, with epsilon inside the root and lr inside mom"),
    TFOp("apply_add_sign", "ApplyAddSign", "var m lr alpha sign_decay beta grad", "m",
         formula="m = beta*m + (1-beta)*g;  var -= lr * (alpha + sign_decay*sign(g)*sign(m)) * g",
         rule="lion", differs="AddSign (Bello et al. 2017): scales g by the sign agreement; no torch form"),
    TFOp("apply_power_sign", "ApplyPowerSign", "var m lr logbase sign_decay beta grad", "m",
         formula="m = beta*m + (1-beta)*g;  var -= lr * exp(logbase*sign_decay*sign(g)*sign(m)) * g",
         rule="lion", differs="PowerSign (Bello et al. 2017); no torch form"),
)
_tf_by_name = {d.name: d for d in _tf_dense}
# TF has a SparseApply op for 12 of the 18 (none for GradientDescent: it is ResourceScatterSub;
# none for Adam, AdamWithAmsgrad, AdaMax, AddSign, PowerSign)
_tf_sparse_checks = {"apply_ftrl": _FTRL, "apply_ftrl_v2": _FTRL2}
_tf_sparse_ops = tuple(_tf_sparse(_tf_by_name[n], _tf_sparse_checks.get(n)) for n in (
    "apply_proximal_gradient_descent", "apply_adadelta", "apply_adagrad", "apply_adagrad_v2",
    "apply_proximal_adagrad", "apply_adagrad_da", "apply_ftrl", "apply_ftrl_v2", "apply_momentum",
    "apply_keras_momentum", "apply_rms_prop", "apply_centered_rms_prop"))

TF_OPS = {o.name: o for o in _tf_dense + _tf_sparse_ops}
TF_KERNELS = tuple(o.kernel for o in TF_OPS.values())
