"""Crash-proof bad-input suite: every case runs in a separate process, on every backend.

Each case is one call of the public API (``fastgd.<rule>_step``, ``fastgd.multi.<rule>_step``,
``fastgd.nn``'s kernels and ``Dense`` layer, ``fastgd.optim`` optimizers' ``step``) with exactly
one thing wrong: ``None`` in every array position of every rule, matrix / masked / integer /
object / bool / complex / float16 arrays, Python lists, 0-d arrays, wrong shapes and dtypes,
non-contiguous / read-only / byte-swapped / unaligned / overlapping arrays, bad scalars.  A
case passes when the call

  * raises ``TypeError`` or ``ValueError`` (not a subclass that is also an IndexError,
    KeyError, AttributeError or OverflowError; no numba TypingError, no RuntimeError),
  * with a message naming the offending argument (``grad``, ``exp_avgs[2]``, ``bias``, ``step``...),
  * without a signal, a hang or an exit of the process, and
  * leaves every array it was given bit-for-bit unchanged (compared with copies taken just
    before the call), and writes nothing just before or after any array it was given (guard
    zones around every array the suite allocates; reported as "wrote out of bounds of <name>",
    for valid calls too).

Valid baselines (one per rule, backend and configuration, plus a few valid variants such as a
read-only ``grad``, 0-d and empty arrays, tuples of arrays) must return normally, so a bad case
is bad only because of its one change.

How it runs
-----------
Cases are grouped in batches, one per (api, backend).  A batch is one subprocess (a
*supervisor*, started with ``sys.executable`` and the inherited environment) that imports
fastgd once, then forks *workers* that run the cases one after another and report each (one
JSON line per case, and a "begin" line before it).  When a worker dies from a signal, exits or
hangs (``FASTGD_BAD_INPUT_CASE_TIMEOUT`` seconds without progress, default 120), the case it
was running is re-run alone in a fresh worker (so the report says whether it crashes alone or
only after the cases before it, i.e. heap corruption), and the rest of the batch continues in
another fresh worker.  Every case then appears as its own pytest test.  The batches of the
selected tests run lazily, when the first case is requested, ``FASTGD_BAD_INPUT_JOBS`` at a
time (default: the number of CPUs, at most 4); a whole batch is killed after
``FASTGD_BAD_INPUT_TIMEOUT`` seconds (default 300).  numba's cache goes to a temporary
directory shared by the batches unless ``NUMBA_CACHE_DIR`` is set.

A backend that does not import is skipped with the import error as reason, unless it is listed
in ``FASTGD_REQUIRE_BACKENDS`` (as tests/conftest.py does): then its cases fail.
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

BACKENDS = ("cython", "numba", "numpy")
PREFIX = "@@BADINPUT "  # the supervisor's protocol lines on stdout
CASE_TIMEOUT = float(os.environ.get("FASTGD_BAD_INPUT_CASE_TIMEOUT", 120))
BATCH_TIMEOUT = float(os.environ.get("FASTGD_BAD_INPUT_TIMEOUT", 300))

# =======================================================================================
# The case matrix (plain data: each case is a JSON-able dict; built at import, no fastgd
# needed).  Keys: id, api, backend, expect ("error" | "ok"), names (for errors: the message
# must name one of them), plus what the builders below need (rule, cfg, pos, kind, set, ...).

# The rules, their arrays and hyperparameters come from the rule table (fastgd/_rules.py; it
# imports nothing compiled); the test data here are the hyperparameter sets that switch every
# optional state array on (FULL) or off (MIN).
from fastgd._rules import RULES as _TABLE  # noqa: E402

_ALL_STATE = {"sgd": dict(lr=0.1, momentum=0.9, step=2), "adam": dict(step=3, amsgrad=True),
              "adamw": dict(step=3, amsgrad=True), "rmsprop": dict(momentum=0.9, centered=True)}
_NO_STATE = {"sgd": dict(lr=0.1), "adam": dict(step=3), "adamw": dict(step=3), "rmsprop": dict()}


def _arrays(rule, optional):
    """(positional array names, keyword array names) of fastgd.<rule>_step: param, grad and the
    state arrays in the table's order, by keyword where the signature has them keyword-only;
    without ``optional``, the state an option switches on (``when``) and NAdam's optional
    ``mu_product`` are left out."""
    import inspect
    import fastgd.steps
    params = inspect.signature(getattr(fastgd.steps, rule.name + "_step")).parameters
    pos, kw = ["param", "grad"], []
    for st in rule.state:
        if (st.when is not None or st.scalar) and not optional:
            continue
        (pos if params[st.name].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD else kw).append(st.name)
    return pos, kw


def _hyper(rule, full):
    hp = dict((_ALL_STATE if full else _NO_STATE).get(rule.name, {}))
    if rule.step == "required":
        hp.setdefault("step", 3)
    return hp


# rule -> (positional arrays, keyword arrays, hyperparameters using every state array)
STEP_FULL = {name: _arrays(r, True) + (_hyper(r, True),) for name, r in _TABLE.items()}
# the same rules with the optional state off (other compiled specializations / code paths)
STEP_MIN = {name: _arrays(r, False) + (_hyper(r, False),) for name, r in _TABLE.items()
            if any(st.when is not None for st in r.state) or name == "nadam"}
RULES = tuple(STEP_FULL)

# bad array kinds; RELATIONAL ones are bad relative to another array (the message may name either)
KINDS_ALL = ("none", "matrix", "masked", "int64", "object", "bool", "complex", "float16", "pylist", "zero_d",
             "flat", "short", "otherfloat", "strided", "fortran", "readonly", "byteswap", "unaligned", "same",
             "overlap")
KINDS_SOME = ("none", "int64", "short", "readonly", "same")
KINDS_RISKY = ("masked", "byteswap", "unaligned")  # on every rule's param and grad
RELATIONAL = {"zero_d", "flat", "short", "otherfloat", "same", "overlap"}
MU_KINDS = ("float32", "two", "readonly", "int64", "pylist", "matrix", "masked", "object")
# every position of these rules gets every kind; the others get KINDS_SOME (+ KINDS_RISKY on param/grad)
FULL_KIND_RULES = {"adam"}

# bad scalars: token -> value (see _SCALAR), per hyperparameter
SCALAR_BAD = {
    "step": ["None", "0", "-1", "1.5", "True", "10**400", "'1'", "np.float64(3)"],
    "lr": ["None", "-1.0", "nan", "'x'", "10**400", "1+0j"],
    "beta": ["-0.1", "1.0", "nan", "None", "'0.9'"],
    "beta_closed": ["-0.1", "1.5", "nan", "None"],
    "nonneg": ["-0.1", "nan", "None", "'x'"],
    "unit_closed": ["-0.1", "1.5", "nan"],
    "flag": ["'yes'", "None", "1"],
}
# rule -> hyperparameter -> kind of check (from the table's checks)


def _kind(h):
    if h.name == "lr":
        return "lr"
    if h.check == "unit":
        return "beta"
    if h.check == "unit_closed":
        return "beta_closed" if h.name.startswith("beta") else "unit_closed"
    return h.check  # nonneg, flag


HYPER = {name: dict(({"step": "step"} if r.step else {}), **{h.name: _kind(h) for h in r.hyper})
         for name, r in _TABLE.items()}
# values that are valid for one rule although bad in general
SCALAR_VALID = {("sgd", "step", "None")}


def _plural(name):
    return name if name == "mu_product" else name + "s"


def _partner(name):
    return "grad" if name == "param" else "param"


def _case(cases, api, backend, parts, expect, names=(), **spec):
    cid = "-".join([api, backend] + [str(p) for p in parts])
    cases.append(dict(spec, id=cid, api=api, backend=backend, expect=expect, names=list(names)))


def _scalar_cases(cases, api, b, rule, cfg, hypers=None, per=None):
    for name, check in HYPER[rule].items():
        if hypers is not None and name not in hypers:
            continue
        tokens = SCALAR_BAD[check] if per is None else SCALAR_BAD[check][:per]
        for tok in tokens:
            valid = (rule, name, tok) in SCALAR_VALID
            _case(cases, api, b, [rule, "@%s=%s" % (name, tok)], "ok" if valid else "error", [name],
                  rule=rule, cfg=cfg, set={name: tok})


def _step_cases(cases, b):
    api = "step"
    for rule in RULES:
        pos, kw, _ = STEP_FULL[rule]
        _case(cases, api, b, [rule, "valid"], "ok", rule=rule, cfg="full")
        if rule in ("sgd", "adam", "nadam", "rmsprop"):
            _case(cases, api, b, [rule, "valid-float64"], "ok", rule=rule, cfg="full", dtype="float64")
        _case(cases, api, b, [rule, "valid-0d"], "ok", rule=rule, cfg="full", shape=[])
        _case(cases, api, b, [rule, "valid-empty"], "ok", rule=rule, cfg="full", shape=[0])
        if rule in STEP_MIN:
            _case(cases, api, b, [rule, "min", "valid"], "ok", rule=rule, cfg="min")
            for p in STEP_MIN[rule][0] + STEP_MIN[rule][1]:
                if p != "param":
                    _case(cases, api, b, [rule, "min", p, "none"], "error", [p], rule=rule, cfg="min", pos=p,
                          kind="none")
        # a None grad is an error even when the arrays are empty (nothing to step)
        _case(cases, api, b, [rule, "empty", "grad", "none"], "error", ["grad"], rule=rule, cfg="full",
              shape=[0], pos="grad", kind="none")
        for p in pos + kw:
            if p == "mu_product":
                for k in MU_KINDS:
                    _case(cases, api, b, [rule, p, k], "error", [p], rule=rule, cfg="full", pos=p, kind=k)
                continue
            kinds = KINDS_ALL if rule in FULL_KIND_RULES else \
                KINDS_SOME + KINDS_RISKY if p in ("param", "grad") else KINDS_SOME
            for k in kinds:
                valid = p == "grad" and k == "readonly"  # grad is only read
                names = [p, _partner(p)] if k in RELATIONAL else [p]
                _case(cases, api, b, [rule, p, k], "ok" if valid else "error", names, rule=rule, cfg="full",
                      pos=p, kind=k)
        if rule == "adam":
            _scalar_cases(cases, api, b, rule, "full")
        else:
            _scalar_cases(cases, api, b, rule, "full", per=1)
            for tok in ("0", "1.5", "10**400") if "step" in HYPER[rule] else ():
                _case(cases, api, b, [rule, "@step=%s" % tok], "error", ["step"], rule=rule, cfg="full",
                      set={"step": tok})
    _case(cases, api, b, ["sgd", "@nesterov-without-momentum"], "error", ["nesterov"], rule="sgd", cfg="full",
          set={"nesterov": "True", "momentum": "0.0"})
    if b == "numpy":  # a bad backend= is the same error whatever the backend
        for rule in ("sgd", "adam", "lion"):
            for tok in ("'cuda'", "3"):
                _case(cases, api, b, [rule, "@backend=%s" % tok], "error", ["backend"], rule=rule, cfg="full",
                      set={"backend": tok})


MULTI_KINDS_ALL = ("list_none", "elem_none0", "elem_none2", "len_short", "len_long", "ndarray", "same_list",
                   "elem_matrix", "elem_masked", "elem_int64", "elem_object", "elem_pylist", "elem_zero_d",
                   "elem_short", "elem_otherfloat", "elem_strided", "elem_fortran", "elem_readonly",
                   "elem_byteswap", "elem_unaligned", "elem_same", "cross_overlap")
MULTI_KINDS_SOME = ("list_none", "elem_none2", "len_short", "elem_otherfloat", "cross_overlap")
MULTI_ALL_POS = {("adam", "params"), ("adam", "grads"), ("adam", "max_exp_avg_sqs"), ("rmsprop", "grad_avgs")}
TENSORS = (("float32", [4, 6]), ("float64", [5]), ("float32", [2, 3]))  # bad elements go in the last


def _multi_names(lst, kind):
    other = _plural(_partner(lst[:-1]))
    if kind in ("list_none", "ndarray", "len_short", "len_long"):
        return [lst]
    if kind == "same_list":
        return [lst, other]
    if kind == "elem_none0":
        return ["%s[0]" % lst]
    if kind == "cross_overlap":
        return ["%s[2]" % lst, "%s[0]" % other]
    k = kind[5:]
    return ["%s[2]" % lst, "%s[2]" % other] if k in RELATIONAL else ["%s[2]" % lst]


def _multi_cases(cases, b):
    api = "multi"
    for rule in RULES:
        pos, kw, _ = STEP_FULL[rule]
        _case(cases, api, b, [rule, "valid"], "ok", rule=rule, cfg="full")
        _case(cases, api, b, [rule, "valid-tuples"], "ok", rule=rule, cfg="full", tuples=True)
        _case(cases, api, b, [rule, "valid-empty-lists"], "ok", rule=rule, cfg="full", empty_lists=True)
        if rule in STEP_MIN:
            _case(cases, api, b, [rule, "min", "valid"], "ok", rule=rule, cfg="min")
            for p in STEP_MIN[rule][0][1:]:
                _case(cases, api, b, [rule, "min", _plural(p), "elem_none2"], "error", ["%ss[2]" % p], rule=rule,
                      cfg="min", pos=_plural(p), kind="elem_none2")
        for p in pos + kw:
            lst = _plural(p)
            if p == "mu_product":
                for k in MU_KINDS[:4]:
                    _case(cases, api, b, [rule, p, k], "error", [p], rule=rule, cfg="full", pos=p, kind=k)
                continue
            kinds = MULTI_KINDS_ALL if (rule, lst) in MULTI_ALL_POS else MULTI_KINDS_SOME
            for k in kinds:
                valid = lst == "grads" and k == "elem_readonly"
                _case(cases, api, b, [rule, lst, k], "ok" if valid else "error", _multi_names(lst, k), rule=rule,
                      cfg="full", pos=lst, kind=k)
        _scalar_cases(cases, api, b, rule, "full", hypers=("step", "lr", "maximize"), per=1)


NN_ARRAY_KINDS = ("none", "matrix", "masked", "int64", "object", "pylist", "zero_d", "flat", "short", "otherfloat",
                  "strided", "fortran", "byteswap", "unaligned")
NN_OUT_KINDS = ("matrix", "int64", "short", "otherfloat", "strided", "readonly", "byteswap", "unaligned", "overlap")
NN_RELATED = {  # (function, position) -> the arrays its shape / dtype is checked against
    ("dense_forward", "x"): ["weight"], ("dense_forward", "weight"): ["x", "bias", "out"],
    ("dense_forward", "bias"): ["weight"], ("dense_forward", "out"): ["x", "weight"],
    ("dense_backward", "grad_output"): ["x", "weight", "output"],
    ("dense_backward", "x"): ["weight", "grad_output", "output", "grad_x"],
    ("dense_backward", "weight"): ["x", "grad_output", "output", "grad_weight", "grad_x"],
    ("dense_backward", "output"): ["grad_output", "x", "weight"],
    ("dense_backward", "grad_x"): ["x"], ("dense_backward", "grad_weight"): ["weight", "x"],
    ("dense_backward", "grad_bias"): ["weight"],
}
ACTS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh")
LOSS_ARGS = {"softmax_cross_entropy": ("logits", "labels"), "mse_loss": ("pred", "target"),
             "binary_cross_entropy_with_logits": ("logits", "targets")}


def _nn_names(fn, pos, kind):
    if kind in RELATIONAL:
        return [pos] + NN_RELATED.get((fn, pos), [])
    return [pos]


def _nn_cases(cases, b):
    api = "nn"
    fn = "dense_forward"
    for act in ACTS:
        for out in (True, False):
            tag = "out" if out else "noout"
            _case(cases, api, b, [fn, act, tag, "valid"], "ok", fn=fn, act=act, out=out)
            _case(cases, api, b, [fn, act, tag, "bias", "none"], "error", ["bias"], fn=fn, act=act, out=out,
                  pos="bias", kind="none")
    for out in (True, False):
        for p in ("x", "weight"):
            _case(cases, api, b, [fn, "out" if out else "noout", p, "none"], "error", [p], fn=fn, act="relu", out=out,
                  pos=p, kind="none")
    for p in ("x", "weight", "bias"):
        for k in NN_ARRAY_KINDS[1:] + ("long",) * (p == "bias"):
            if p == "bias" and k in ("fortran",):
                continue
            _case(cases, api, b, [fn, p, k], "error", _nn_names(fn, p, "short" if k == "long" else k), fn=fn,
                  act="relu", out=True, pos=p, kind=k)
        _case(cases, api, b, [fn, p, "readonly"], "ok", fn=fn, act="relu", out=True, pos=p, kind="readonly")
    for k in NN_OUT_KINDS:
        _case(cases, api, b, [fn, "out", k], "error", _nn_names(fn, "out", k) + (["weight"] if k == "overlap" else []),
              fn=fn, act="relu", out=True, pos="out", kind=k)
    for name, toks in (("activation", ("'relux'", "None", "3")), ("negative_slope", ("-1.0", "nan", "'x'"))):
        for tok in toks:
            _case(cases, api, b, [fn, "@%s=%s" % (name, tok)], "error", [name], fn=fn, act="leaky_relu", out=True,
                  set={name: tok})

    fn = "dense_backward"
    for act in ACTS:
        _case(cases, api, b, [fn, act, "valid"], "ok", fn=fn, act=act, pre=True)
    _case(cases, api, b, [fn, "nopre", "valid"], "ok", fn=fn, act="relu", pre=False)
    _case(cases, api, b, [fn, "valid-overwrite"], "ok", fn=fn, act="relu", pre=True,
          set={"overwrite_grad_output": "True"})
    for p in ("grad_output", "x", "weight", "output"):
        for pre in (True, False):
            _case(cases, api, b, [fn, "pre" if pre else "nopre", p, "none"], "error", [p], fn=fn, act="relu", pre=pre,
                  pos=p, kind="none")
        for k in ("matrix", "int64", "short", "otherfloat", "strided", "byteswap"):
            _case(cases, api, b, [fn, p, k], "error", _nn_names(fn, p, k), fn=fn, act="relu", pre=True, pos=p, kind=k)
    for p in ("grad_x", "grad_weight", "grad_bias"):
        _case(cases, api, b, [fn, p, "none"], "ok", fn=fn, act="relu", pre=True, pos=p, kind="none")
        for k in ("int64", "short", "otherfloat", "strided", "readonly", "same"):
            _case(cases, api, b, [fn, p, k], "error", _nn_names(fn, p, k), fn=fn, act="relu", pre=True, pos=p, kind=k)
    _case(cases, api, b, [fn, "overwrite-readonly-grad_output"], "error", ["grad_output"], fn=fn, act="relu", pre=True,
          pos="grad_output", kind="readonly", set={"overwrite_grad_output": "True"})
    _case(cases, api, b, [fn, "grad_x-without-compute_grad_x"], "error", ["grad_x", "compute_grad_x"], fn=fn,
          act="relu", pre=True, set={"compute_grad_x": "False"})
    for name, tok in (("compute_grad_x", "'yes'"), ("overwrite_grad_output", "1"), ("activation", "'relux'"),
                      ("negative_slope", "nan")):
        _case(cases, api, b, [fn, "@%s=%s" % (name, tok)], "error", [name], fn=fn, act="relu", pre=True,
              set={name: tok})

    for fn, (a, t) in LOSS_ARGS.items():
        for out in (True, False):
            tag = "out" if out else "noout"
            _case(cases, api, b, [fn, tag, "valid"], "ok", fn=fn, out=out)
            for p in (a, t):
                _case(cases, api, b, [fn, tag, p, "none"], "error", [p], fn=fn, out=out, pos=p, kind="none")
        for k in ("matrix", "masked", "int64", "pylist", "flat", "short", "otherfloat", "strided", "byteswap",
                  "unaligned"):
            if fn == "softmax_cross_entropy" and k in ("otherfloat", "short"):
                continue  # float64 logits with integer labels are valid; short logits are just fewer classes
            _case(cases, api, b, [fn, a, k], "error", [a, t] if k in RELATIONAL else [a], fn=fn, out=True, pos=a,
                  kind=k)
        if fn == "softmax_cross_entropy":
            _case(cases, api, b, [fn, "valid-prob"], "ok", fn=fn, out=True, prob=True)
            _case(cases, api, b, [fn, "valid-uint8-labels"], "ok", fn=fn, out=True, pos=t, kind="uint8")
            for k in ("oob", "negative", "int2d", "intshort", "bool", "object", "matrix", "pylist", "float16"):
                _case(cases, api, b, [fn, t, k], "error", [t], fn=fn, out=True, pos=t, kind=k)
            for k in ("otherfloat", "short", "strided", "byteswap"):
                _case(cases, api, b, [fn, "prob", t, k], "error", [t, a] if k in RELATIONAL else [t], fn=fn,
                      out=True, prob=True, pos=t, kind=k)
        else:
            for k in ("matrix", "int64", "short", "otherfloat", "strided", "byteswap"):
                _case(cases, api, b, [fn, t, k], "error", [t, a] if k in RELATIONAL else [t], fn=fn, out=True,
                      pos=t, kind=k)
        for k in ("int64", "short", "otherfloat", "strided", "readonly", "same"):
            _case(cases, api, b, [fn, "out", k], "error", ["out", a] if k in RELATIONAL else ["out"], fn=fn, out=True,
                  pos="out", kind=k)

    fn = "Dense"
    _case(cases, api, b, [fn, "forward", "valid"], "ok", fn=fn, method="forward")
    _case(cases, api, b, [fn, "backward", "valid"], "ok", fn=fn, method="backward")
    for attr, kinds in (("bias", ("none", "short", "long", "row", "otherfloat", "int64", "pylist", "strided",
                                  "matrix", "reshaped", "readonly_ok")),
                        ("weight", ("none", "short", "otherfloat", "int64", "fortran", "matrix"))):
        for k in kinds:
            ok = k.endswith("_ok")
            _case(cases, api, b, [fn, "forward", attr, k], "ok" if ok else "error", [attr], fn=fn, method="forward",
                  pos=attr, kind=k[:-3] if ok else k)
    for attr, kinds in (("grad_bias", ("none", "short", "otherfloat", "readonly", "int64", "made_readonly")),
                        ("grad_weight", ("none", "short", "otherfloat", "readonly")),
                        ("weight", ("none", "short"))):
        for k in kinds:
            _case(cases, api, b, [fn, "backward", attr, k], "error", [attr], fn=fn, method="backward", pos=attr, kind=k)


OPTIMS = ("SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "Adagrad", "Adadelta", "RMSprop", "Lion")
OPTIM_HYPER = {"SGD": dict(lr=0.1, momentum=0.9), "Adam": dict(amsgrad=True), "AdamW": dict(amsgrad=True),
               "RMSprop": dict(momentum=0.9, centered=True)}
OPTIM_KINDS_ALL = ("list_none", "elem_none0", "elem_none2", "len_short", "len_long", "ndarray", "same_list",
                   "elem_matrix", "elem_masked", "elem_int64", "elem_object", "elem_pylist", "elem_short",
                   "elem_otherfloat", "elem_byteswap", "elem_same", "cross_overlap")
OPTIM_KINDS_SOME = ("list_none", "elem_none2", "len_short", "elem_otherfloat", "elem_matrix")
# grads are only read: non-contiguous / unaligned ones are copied, read-only ones accepted
OPTIM_VALID = ("elem_strided", "elem_fortran", "elem_unaligned", "elem_readonly", "tuple")


def _optim_cases(cases, b):
    api = "optim"
    for name in OPTIMS:
        _case(cases, api, b, [name, "valid"], "ok", opt=name)
        kinds = OPTIM_KINDS_ALL if name in ("SGD", "Adam") else OPTIM_KINDS_SOME
        for k in kinds:
            names = ["grads"] if k in ("list_none", "ndarray", "len_short", "len_long", "same_list") else \
                ["grads[0]"] if k == "elem_none0" else ["grads[2]"]
            _case(cases, api, b, [name, "grads", k], "error", names, opt=name, kind=k)
        if name in ("Adam", "SGD"):
            for k in OPTIM_VALID:
                _case(cases, api, b, [name, "grads", k], "ok", opt=name, kind=k)


def _all_cases():
    cases = []
    for b in BACKENDS:
        _step_cases(cases, b)
        _multi_cases(cases, b)
        _nn_cases(cases, b)
        _optim_cases(cases, b)
    ids = [c["id"] for c in cases]
    dup = {i for i in ids if ids.count(i) > 1} if len(set(ids)) != len(ids) else set()
    assert not dup, "duplicate case ids: %s" % sorted(dup)[:5]
    return cases


CASES = _all_cases()


def _batch_key(case):
    return (case["api"], case["backend"])


# =======================================================================================
# Judging an outcome (parent side)

_BAD_BASES = ("IndexError", "KeyError", "AttributeError", "OverflowError")
_SIGNAMES = {int(s): s.name for s in signal.Signals}


def _names_in(msg, names):
    for n in names:
        if re.search(r"(?<![A-Za-z0-9_])%s(?![A-Za-z0-9_])" % re.escape(n), msg):
            return True
    return False


def _describe_death(res):
    if res["outcome"] == "crash":
        sig = res["signal"]
        s = "crashed with signal %d (%s)" % (sig, _SIGNAMES.get(sig, "?"))
    elif res["outcome"] == "exit":
        s = "the process exited with code %d" % res["code"]
    else:
        s = "timed out (no progress for %g s)" % res["seconds"]
    if not res.get("alone", True):
        s += "; only after the cases before it in its batch (alone: %s): memory corruption by an earlier case?" \
             % res.get("alone_outcome", "?")
    if res.get("trace"):
        s += " at " + res["trace"]
    return s


def _judge(case, res):
    """None when ``res`` is what ``case`` requires, else a one-line description of the problem."""
    o = res["outcome"]
    if o in ("crash", "exit", "timeout"):
        return _describe_death(res)
    if o == "harness":
        return "harness error: " + res["msg"]
    problems = []
    if case["expect"] == "ok":
        if o == "raised":
            problems.append("valid call raised %s: %s" % (res["exc"], res["msg"]))
    elif o == "returned":
        problems.append("no exception raised")
    else:
        mro = res["mro"]
        if not ("TypeError" in mro or "ValueError" in mro) or any(b in mro for b in _BAD_BASES):
            problems.append("raised %s (not TypeError/ValueError): %s" % (res["exc"], res["msg"]))
        elif not _names_in(res["msg"], case["names"]):
            problems.append("%s does not name %s: %s" % (res["exc"], " or ".join(case["names"]), res["msg"]))
    if res.get("oob"):
        problems.append("wrote out of bounds of %s" % ", ".join(res["oob"]))
    if case["expect"] != "ok" and res.get("changed"):
        problems.append("modified %s" % ", ".join(res["changed"]))
    return "; ".join(problems) or None


# =======================================================================================
# Running batches (parent side)

def _backend_error(backend, api):
    """None if ``backend`` (and, for nn, its dense kernels) imports here, else the error."""
    import importlib

    from fastgd.backends import backend_module
    try:
        mod = backend_module(backend)
        if api == "nn":
            importlib.import_module(mod.__name__ + ".dense")
    except (RuntimeError, ImportError) as exc:
        return "%s: %s" % (type(exc).__name__, exc)
    return None


def _required(backend):
    return backend in os.environ.get("FASTGD_REQUIRE_BACKENDS", "").split(",")


# argv[2]: the folder holding the fastgd the tests imported, first on the path before this
# module runs (it reads the rule table at import; with ``-c`` the cwd, e.g. an uncompiled
# checkout, would otherwise come first)
_BOOT = ("import importlib.util, sys; sys.path.insert(0, sys.argv[2]); "
         "s = importlib.util.spec_from_file_location('_fastgd_bad_input_child', sys.argv[1]); "
         "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); m._supervise()")


def _fastgd_root():
    import fastgd
    return os.path.dirname(os.path.dirname(os.path.realpath(fastgd.__file__)))


def _spawn(cases, env, case_timeout=CASE_TIMEOUT, batch_timeout=BATCH_TIMEOUT):
    """Run ``cases`` in one supervisor process; returns (results by index, problem or None)."""
    root = _fastgd_root()
    job = json.dumps({"cases": cases, "root": root, "case_timeout": case_timeout})
    try:
        proc = subprocess.run([sys.executable, "-c", _BOOT, os.path.abspath(__file__), root], input=job.encode(),
                              capture_output=True, env=env, timeout=batch_timeout)
        out, err, rc, problem = proc.stdout, proc.stderr, proc.returncode, None
    except subprocess.TimeoutExpired as exc:
        out, err, rc = exc.stdout or b"", exc.stderr or b"", None
        problem = "the batch was killed after %g s (FASTGD_BAD_INPUT_TIMEOUT)" % batch_timeout
    results, done, ready = {}, False, None
    for line in out.decode(errors="replace").splitlines():
        if not line.startswith(PREFIX):
            continue
        msg = json.loads(line[len(PREFIX):])
        if "ready" in msg:
            ready = msg
        elif "done" in msg:
            done = True
        else:
            results[msg.pop("i")] = msg
    if ready is not None and ready["ready"] != os.path.realpath(sys.modules["fastgd"].__file__):
        problem = "the subprocess imported fastgd from %s, the tests from %s" % (
            ready["ready"], sys.modules["fastgd"].__file__)
        results = {}
    elif problem is None and (not done or rc != 0):
        tail = " | ".join(err.decode(errors="replace").strip().splitlines()[-2:])
        problem = "the supervisor process ended with code %s %s: %s" % (
            rc, "before it imported fastgd" if ready is None else "before reporting every case", tail)
    return results, problem


def _run_batch(cases, env, case_timeout=CASE_TIMEOUT, batch_timeout=BATCH_TIMEOUT):
    """{case id: result} for ``cases`` (run in one supervisor; if that dies, which the forked
    workers should prevent, the unreported cases are re-run one per supervisor, up to 20)."""
    results, problem = _spawn(cases, env, case_timeout, batch_timeout)
    out = {cases[i]["id"]: r for i, r in results.items()}
    missing = [c for i, c in enumerate(cases) if i not in results]
    if missing and problem and "killed after" not in problem and len(missing) <= 20 and len(cases) > 1:
        for c in missing:
            r, p = _spawn([c], env, case_timeout, batch_timeout)
            out[c["id"]] = r.get(0) or {"outcome": "harness", "msg": "%s (alone)" % p}
        missing = []
    for c in missing:
        out[c["id"]] = {"outcome": "harness", "msg": "not run: %s" % problem}
    return out


def _jobs():
    n = os.environ.get("FASTGD_BAD_INPUT_JOBS")
    if n:
        return max(1, int(n))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


class _Results:
    """The outcome of every selected case, computed the first time one is asked for."""

    def __init__(self, session, cache_dir):
        self.session = session
        self.env = dict(os.environ)
        self.env.setdefault("NUMBA_CACHE_DIR", cache_dir)
        self.results = {}
        self.avail = {}

    def backend_problem(self, case):
        key = _batch_key(case)
        if key not in self.avail:
            self.avail[key] = _backend_error(case["backend"], case["api"])
        return self.avail[key]

    def get(self, case):
        if case["id"] not in self.results:
            self._run_selected(case)
        return self.results[case["id"]]

    def _run_selected(self, case):
        want = {}
        for item in getattr(self.session, "items", ()):
            c = getattr(item, "callspec", None) and item.callspec.params.get("case")
            if isinstance(c, dict) and c["id"] not in self.results and not self.backend_problem(c):
                want.setdefault(_batch_key(c), []).append(c)
        if case["id"] not in {c["id"] for cs in want.values() for c in cs}:
            want.setdefault(_batch_key(case), []).append(case)
        batches = sorted(want.values(), key=lambda cs: (cs[0]["backend"] != "numba", -len(cs)))  # slowest first
        with ThreadPoolExecutor(max_workers=_jobs()) as pool:
            for res in pool.map(lambda cs: _run_batch(cs, self.env), batches):
                self.results.update(res)


@pytest.fixture(scope="session")
def bad_input_results(request, tmp_path_factory):
    return _Results(request.session, str(tmp_path_factory.mktemp("numba_cache")))


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    errors = {}
    params = []
    for c in CASES:
        key = _batch_key(c)
        if key not in errors:
            errors[key] = _backend_error(c["backend"], c["api"])
        marks = ()
        if errors[key] and not _required(c["backend"]):
            marks = (pytest.mark.skip(reason=errors[key]),)
        params.append(pytest.param(c, id=c["id"], marks=marks))
    metafunc.parametrize("case", params)


def test_bad_input(case, bad_input_results):
    problem = bad_input_results.backend_problem(case)
    if problem:
        pytest.fail("backend %r is required here (FASTGD_REQUIRE_BACKENDS) but does not import: %s"
                    % (case["backend"], problem), pytrace=False)
    problem = _judge(case, bad_input_results.get(case))
    if problem:
        pytest.fail(problem, pytrace=False)


def test_case_matrix_covers_none_everywhere():
    """None in every array position of every rule, single and multi-tensor, on every backend."""
    have = {(c["api"], c["backend"], c.get("rule"), c.get("pos"), c.get("cfg")) for c in CASES
            if c.get("kind") in ("none", "elem_none2")}
    for b in BACKENDS:
        for rule, (pos, kw, _) in STEP_FULL.items():
            for p in pos + kw:
                if p != "mu_product":
                    assert ("step", b, rule, p, "full") in have, (b, rule, p)
                    assert ("multi", b, rule, _plural(p), "full") in have, (b, rule, p)
    assert len(CASES) < 6000


# =======================================================================================
# The harness can fail: fake functions (not fastgd) run through the same runner

def _selftest_case(kind, expect="error", names=("a",)):
    return dict(id="self-" + kind, api="self", backend="", expect=expect, names=list(names), kind=kind)


def test_harness_reports_crashes_and_modifications(tmp_path):
    if not hasattr(os, "fork"):
        pytest.skip("the runner needs os.fork")
    env = dict(os.environ)
    kinds = ["valid", "segv", "raise_ok", "modify", "oob", "noraise", "attrerr", "unnamed", "abort", "exit3",
             "valid2"]
    cases = [_selftest_case(k, "ok" if k.startswith("valid") else "error") for k in kinds]
    res = _run_batch(cases, env)
    by = {c["kind"]: (c, res[c["id"]]) for c in cases}
    verdict = {k: _judge(*by[k]) for k in kinds}
    assert verdict["valid"] is None and verdict["valid2"] is None, verdict
    assert verdict["raise_ok"] is None, verdict
    assert by["segv"][1]["outcome"] == "crash" and by["segv"][1]["signal"] == signal.SIGSEGV
    assert by["segv"][1]["alone"], by["segv"][1]
    assert "crashed with signal %d (SIGSEGV)" % signal.SIGSEGV in verdict["segv"]
    assert "crashed with signal %d (SIGABRT)" % signal.SIGABRT in verdict["abort"]
    assert "exited with code 3" in verdict["exit3"]
    assert verdict["modify"] == "modified a", verdict["modify"]
    assert "wrote out of bounds of a" in verdict["oob"], verdict["oob"]
    assert verdict["noraise"] == "no exception raised"
    assert verdict["attrerr"].startswith("raised AttributeError (not TypeError/ValueError)")
    assert verdict["unnamed"].startswith("ValueError does not name a:")


def test_harness_reports_hangs():
    if not hasattr(os, "fork"):
        pytest.skip("the runner needs os.fork")
    cases = [_selftest_case("hang"), _selftest_case("valid", "ok")]
    res = _run_batch(cases, dict(os.environ), case_timeout=2)
    assert "timed out" in _judge(cases[0], res[cases[0]["id"]])
    assert _judge(cases[1], res[cases[1]["id"]]) is None


# =======================================================================================
# Child side: the supervisor (one per batch) and its forked workers (one per run of cases)

def _emit(msg):
    sys.stdout.write(PREFIX + json.dumps(msg) + "\n")
    sys.stdout.flush()


def _supervise():
    job = json.loads(sys.stdin.read())
    sys.path.insert(0, job["root"])  # the fastgd the tests imported, whatever the cwd
    import fastgd
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core files from the crashing cases
    except (ImportError, ValueError, OSError):  # pragma: no cover
        pass
    _emit({"ready": os.path.realpath(fastgd.__file__)})
    from fastgd.backends import backend_module
    for b, api in {(c["backend"], c["api"]) for c in job["cases"] if c["backend"]}:
        try:  # imported once here, inherited by every forked worker
            mod = backend_module(b)
            if api == "nn":
                __import__(mod.__name__ + ".dense")
        except Exception:  # the cases will report it
            pass
    cases, timeout = job["cases"], job["case_timeout"]
    pending = list(range(len(cases)))
    while pending:
        results, begun, code, timed_out, err = _work(cases, pending, timeout)
        seen = set()
        for r in results:
            seen.add(r["i"])
            _emit(r)
        if begun is None:
            if code != 0 or len(seen) != len(pending):
                for i in pending:
                    if i not in seen:
                        _emit({"i": i, "outcome": "harness", "msg": "worker ended with code %s outside any case: %s"
                               % (code, _trace(err) or err[-300:])})
            break
        death = _death(code, timed_out, timeout, err)
        if begun != pending[0]:  # other cases ran before it in this worker: does it fail alone?
            again, begun2, code2, timed_out2, err2 = _work(cases, [begun], timeout)
            if begun2 is not None:
                death = _death(code2, timed_out2, timeout, err2)
            else:
                death["alone"] = False
                death["alone_outcome"] = again[0]["outcome"] if again else "no result, code %s" % code2
        death["i"] = begun
        _emit(death)
        pending = pending[pending.index(begun) + 1:]
    _emit({"done": True})


def _death(code, timed_out, timeout, err):
    if timed_out:
        d = {"outcome": "timeout", "seconds": timeout}
    elif code is not None and code < 0:
        d = {"outcome": "crash", "signal": -code}
    else:
        d = {"outcome": "exit", "code": code}
    d["alone"] = True
    d["trace"] = _trace(err)
    return d


def _trace(err):
    """The innermost frames of faulthandler's report, as 'file.py:line func < ...'."""
    frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', err.split("Fatal Python error")[-1])
    return " < ".join("%s:%s %s" % (os.path.basename(f), ln, fn) for f, ln, fn in frames[:3])


def _work(cases, idx, timeout):
    """Fork a worker running ``cases[i] for i in idx``; returns (results, index of the case it
    died in or None, exit code (negative: signal), timed out?, its stderr)."""
    import select
    r, w = os.pipe()
    err = tempfile.TemporaryFile()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:  # the worker
        code = 0
        try:
            os.close(r)
            os.dup2(err.fileno(), 1)
            os.dup2(err.fileno(), 2)
            _worker(cases, idx, w)
        except BaseException:
            traceback.print_exc()
            code = 70
        finally:
            os._exit(code)
    os.close(w)
    results, begun, buf, timed_out = [], None, b"", False
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
            break
        ready, _, _ = select.select([r], [], [], left)
        if not ready:
            continue
        chunk = os.read(r, 1 << 16)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            msg = json.loads(line)
            if "begin" in msg:
                begun = msg["begin"]
            else:
                results.append(msg)
                begun = None
            deadline = time.monotonic() + timeout
    os.close(r)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status) if not timed_out else None
    err.seek(0)
    text = err.read().decode(errors="replace")
    err.close()
    if begun is None and code != 0 and len(results) < len(idx):
        begun = idx[len(results)]  # died before writing "begin" (should not happen)
    return results, begun, code, timed_out, text


def _worker(cases, idx, w):
    import faulthandler
    import warnings
    warnings.simplefilter("ignore")
    faulthandler.enable(file=sys.stderr, all_threads=False)
    for i in idx:
        os.write(w, (json.dumps({"begin": i}) + "\n").encode())
        res = _run_case(cases[i])
        res["i"] = i
        os.write(w, (json.dumps(res) + "\n").encode())


# ---------------------------------------------------------------------------------------
# one case in the worker: build the call, snapshot every array, call, compare

_G = 16  # guard elements on each side of every array the builders allocate
_SENTINEL = -7.25


class _Ctx:
    """What a case passes in, to compare before/after the call."""

    def __init__(self, case):
        self.rng = np.random.default_rng(zlib.crc32(case["id"].encode()))
        self.watch = []  # (label, object or getter, kind)

    def values(self, dtype, shape, scale=1.0):
        return (np.abs(self.rng.standard_normal(shape)) + 0.1) * scale

    def arr(self, label, dtype, shape, scale=1.0, values=None):
        """A fresh C-contiguous array with guard zones before and after it."""
        dtype = np.dtype(dtype)
        v = self.values(dtype, shape, scale) if values is None else values
        n = int(np.prod(shape, dtype=np.int64))
        buf = np.full(n + 2 * _G, _SENTINEL, dtype)
        a = buf[_G:_G + n].reshape(shape)
        a[...] = v
        self.watch.append((label, buf, "guard"))
        return a

    def check(self, label, obj):
        self.watch.append((label, obj, "obj"))
        return obj

    def getter(self, label, fn):
        self.watch.append((label, fn, "getter"))

    def snapshot(self):
        return [_snap(obj, kind) for _, obj, kind in self.watch]

    def compare(self, before):
        changed, oob = [], []
        for (label, _, kind), b, a in zip(self.watch, before, self.snapshot()):
            if b != a:
                (oob if kind == "guard" else changed).append(label)
        return sorted(set(changed)), sorted(set(oob))


def _snap(obj, kind):
    if kind == "getter":
        return repr(obj())
    if kind == "guard":
        return (obj[:_G].tobytes(), obj[-_G:].tobytes())
    if isinstance(obj, np.ndarray):
        a = np.asarray(obj)
        s = (a.dtype.str, a.shape, a.tobytes())
        if isinstance(obj, np.ma.MaskedArray):
            s += (np.ma.getmaskarray(obj).tobytes(),)
        return s
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, tuple(id(x) for x in obj),
                tuple(None if isinstance(x, np.ndarray) else repr(x) for x in obj))
    return repr(obj)


_NAN = float("nan")
_SCALAR = {"None": None, "0": 0, "-1": -1, "1.5": 1.5, "True": True, "False": False, "10**400": 10 ** 400,
           "'1'": "1", "np.float64(3)": np.float64(3), "-1.0": -1.0, "nan": _NAN, "'x'": "x", "1+0j": 1 + 0j,
           "-0.1": -0.1, "1.0": 1.0, "'0.9'": "0.9", "'yes'": "yes", "1": 1, "0.0": 0.0, "'cuda'": "cuda", "3": 3,
           "'relux'": "relux"}


def _bad(ctx, kind, good, label):
    """``good`` (an array of the call) made bad in one way."""
    dt = good.dtype
    if kind == "none":
        return None
    if kind == "matrix":
        return ctx.check(label, np.matrix(good.reshape(1, -1) if good.ndim < 2 else good))
    if kind == "masked":
        mask = (np.arange(good.size) % 3 == 0).reshape(good.shape)
        return ctx.check(label, np.ma.masked_array(good.copy(), mask=mask))
    if kind in ("int64", "bool", "object", "complex", "float16", "float32", "uint8"):
        conv = {"int64": lambda g: (g * 10).astype(np.int64), "bool": lambda g: g > 0.5,
                "object": lambda g: g.astype(object), "complex": lambda g: g.astype(np.complex64),
                "float16": lambda g: g.astype(np.float16), "float32": lambda g: g.astype(np.float32),
                "uint8": lambda g: g.astype(np.uint8)}[kind]
        return ctx.check(label, conv(good))
    if kind == "pylist":
        return ctx.check(label, good.tolist())
    if kind == "zero_d":
        return ctx.check(label, np.array(good.flat[0], dt))
    if kind == "flat":  # same elements, another shape
        shape = [good.size] if good.ndim != 1 else [1, good.size]
        return ctx.arr(label, dt, shape, values=good.reshape(shape))
    if kind == "short":  # one element fewer along the last axis
        return ctx.arr(label, dt, list(good.shape[:-1]) + [good.shape[-1] - 1], values=good[..., :-1])
    if kind == "long":
        return ctx.arr(label, dt, list(good.shape[:-1]) + [good.shape[-1] + 1],
                       values=np.concatenate([good, good[..., :1]], axis=-1))
    if kind == "row":
        return ctx.arr(label, dt, [1] + list(good.shape), values=good[None])
    if kind == "two":
        return ctx.arr(label, dt, [2], values=np.full(2, good.flat[0]))
    if kind == "otherfloat":
        return ctx.arr(label, np.float64 if dt == np.float32 else np.float32, list(good.shape), values=good)
    if kind == "strided":
        base = np.empty(good.shape[:-1] + (2 * good.shape[-1],), dt)
        v = base[..., ::2]
        v[...] = good
        return ctx.check(label, v)
    if kind == "fortran":
        return ctx.check(label, np.asfortranarray(good))
    if kind == "readonly":
        a = ctx.arr(label, dt, list(good.shape), values=good)
        a.flags.writeable = False
        return a
    if kind == "byteswap":
        return ctx.check(label, good.astype(dt.newbyteorder("S")))
    if kind == "unaligned":
        raw = bytearray(good.nbytes + 1)
        a = np.frombuffer(raw, dtype=dt, offset=1, count=good.size).reshape(good.shape)
        a.flags.writeable = True
        a[...] = good
        return ctx.check(label, a)
    raise ValueError("unknown kind %r" % kind)


def _overlapping(ctx, good, labels):
    """Two C-contiguous arrays of ``good``'s shape and dtype sharing all but one row of memory."""
    step = good.shape[-1] if good.ndim else 1
    n = good.size
    base = np.empty(n + step, good.dtype)
    a = base[:n].reshape(good.shape)
    b = base[step:step + n].reshape(good.shape)
    a[...] = good
    return ctx.check(labels[0], a), ctx.check(labels[1], b)


def _state_values(ctx, name, dtype, shape):
    if name == "mu_product":
        return ctx.arr(name, np.float64, [1], values=np.array([0.7]))
    if name == "grad_avg":  # a valid centered state: grad_avg**2 <= square_avg
        return ctx.arr(name, dtype, shape, scale=0.01)
    return ctx.arr(name, dtype, shape)


def _scalars(case, kw):
    for k, tok in case.get("set", {}).items():
        kw[k] = _SCALAR[tok]


# ---- fastgd.<rule>_step

def _build_step(ctx, case):
    import fastgd
    rule = case["rule"]
    pos, kwn, hyper = (STEP_FULL if case["cfg"] == "full" else STEP_MIN)[rule]
    dtype = np.dtype(case.get("dtype", "float32"))
    shape = case.get("shape", [4, 6])
    arrays = {n: _state_values(ctx, n, dtype, shape) for n in pos + kwn}
    p, kind = case.get("pos"), case.get("kind")
    if p is not None:
        if kind == "same":
            arrays[p] = arrays[_partner(p)]
        elif kind == "overlap":
            arrays[_partner(p)], arrays[p] = _overlapping(ctx, arrays[p], [_partner(p), p])
        else:
            arrays[p] = _bad(ctx, kind, arrays[p], p)
    kw = dict(hyper, backend=case["backend"])
    _scalars(case, kw)
    kw.update({n: arrays[n] for n in kwn})
    args = [arrays[n] for n in pos]
    for n in pos + kwn:
        ctx.check(n, arrays[n])
    fn = getattr(fastgd, rule + "_step")
    return lambda: fn(*args, **kw)


# ---- fastgd.multi.<rule>_step

def _build_multi(ctx, case):
    import fastgd.multi
    rule = case["rule"]
    pos, kwn, hyper = (STEP_FULL if case["cfg"] == "full" else STEP_MIN)[rule]
    lists = {}
    mu = None
    for n in pos + kwn:
        if n == "mu_product":
            mu = _state_values(ctx, n, None, None)
            continue
        lists[_plural(n)] = [_state_values(ctx, "%s[%d]" % (_plural(n), t), np.dtype(d), s)
                             for t, (d, s) in enumerate(TENSORS)]
    if case.get("empty_lists"):
        lists = {k: [] for k in lists}
    p, kind = case.get("pos"), case.get("kind")
    if p == "mu_product":
        mu = _bad(ctx, kind, mu, p)
    elif p is not None:
        other = _plural(_partner(p[:-1]))
        lst = lists[p]
        if kind == "list_none":
            lists[p] = None
        elif kind == "elem_none0":
            lst[0] = None
        elif kind == "elem_none2":
            lst[2] = None
        elif kind == "len_short":
            lists[p] = lst[:2]
        elif kind == "len_long":
            lists[p] = lst + [ctx.arr("%s[3]" % p, np.float32, [3])]
        elif kind == "ndarray":
            lists[p] = lst[0]
        elif kind == "same_list":
            lists[p] = lists[other]
        elif kind == "cross_overlap":
            lst[2] = lists[other][0].reshape(-1)[:lst[2].size].reshape(lst[2].shape)
        elif kind == "elem_same":
            lst[2] = lists[other][2]
        else:
            lst[2] = _bad(ctx, kind[5:], lst[2], "%s[2]" % p)
    for k, v in lists.items():
        if isinstance(v, list):
            ctx.check(k, v)
            for t, a in enumerate(v):
                ctx.check("%s[%d]" % (k, t), a)
        elif v is not None:
            ctx.check(k, v)
    if mu is not None:
        ctx.check("mu_product", mu)
    if case.get("tuples"):
        lists = {k: tuple(v) for k, v in lists.items()}
    kw = dict(hyper, backend=case["backend"])
    _scalars(case, kw)
    kw.update({_plural(n): lists[_plural(n)] for n in kwn})
    args = [mu if n == "mu_product" else lists[_plural(n)] for n in pos]
    fn = getattr(fastgd.multi, rule + "_step")
    return lambda: fn(*args, **kw)


# ---- fastgd.nn

_N, _K, _M = 3, 4, 5  # batch, in_features, out_features


def _nn_bad(ctx, arrays, case, partner_of_overlap):
    p, kind = case.get("pos"), case.get("kind")
    if p is None:
        return
    if kind == "same":
        arrays[p] = arrays[partner_of_overlap]
    elif kind == "overlap":  # out inside weight's buffer
        w = arrays[partner_of_overlap]
        arrays[p] = w.reshape(-1)[:arrays[p].size].reshape(arrays[p].shape)
    else:
        arrays[p] = _bad(ctx, kind, arrays[p], p)


def _build_nn(ctx, case):
    import fastgd.nn as nn
    fn, b = case["fn"], case["backend"]
    f32 = np.float32
    if fn == "Dense":
        return _build_dense_layer(ctx, case, nn)
    if fn == "dense_forward":
        a = {"x": ctx.arr("x", f32, [_N, _K]), "weight": ctx.arr("weight", f32, [_K, _M], 0.3),
             "bias": ctx.arr("bias", f32, [_M]), "out": ctx.arr("out", f32, [_N, _M]) if case["out"] else None}
        _nn_bad(ctx, a, case, "weight")
        kw = dict(activation=case["act"], out=a["out"], backend=b)
        _scalars(case, kw)
        for k, v in a.items():
            ctx.check(k, v)
        return lambda: nn.dense_forward(a["x"], a["weight"], a["bias"], **kw)
    if fn == "dense_backward":
        x, w = ctx.values(f32, [_N, _K]).astype(f32), (ctx.values(f32, [_K, _M]) - 0.7).astype(f32)
        bias = (ctx.values(f32, [_M]) - 0.7).astype(f32)
        y = nn.dense_forward(x, w, bias, activation=case["act"], backend="numpy")
        a = {"grad_output": ctx.arr("grad_output", f32, [_N, _M]), "x": ctx.arr("x", f32, [_N, _K], values=x),
             "weight": ctx.arr("weight", f32, [_K, _M], values=w),
             "output": ctx.arr("output", f32, [_N, _M], values=y)}
        for k, s in (("grad_x", [_N, _K]), ("grad_weight", [_K, _M]), ("grad_bias", [_M])):
            a[k] = ctx.arr(k, f32, s) if case["pre"] else None
        partner = {"grad_x": "x", "grad_weight": "weight", "grad_bias": "weight"}.get(case.get("pos"))
        if case.get("kind") == "same" and case.get("pos") == "grad_bias":
            a["grad_bias"] = a["weight"].reshape(-1)[:_M]  # overlapping, right shape
        else:
            _nn_bad(ctx, a, case, partner)
        kw = dict(activation=case["act"], backend=b, grad_x=a["grad_x"], grad_weight=a["grad_weight"],
                  grad_bias=a["grad_bias"])
        _scalars(case, kw)
        for k, v in a.items():
            ctx.check(k, v)
        return lambda: nn.dense_backward(a["grad_output"], a["x"], a["weight"], a["output"], **kw)
    # losses
    first, second = LOSS_ARGS[fn]
    logits = ctx.arr(first, f32, [_N, _M])
    if fn == "softmax_cross_entropy" and not case.get("prob"):
        target = ctx.check(second, np.array([0, 4, 2], np.int64))
    elif fn == "softmax_cross_entropy":
        t = ctx.values(f32, [_N, _M])
        target = ctx.arr(second, f32, [_N, _M], values=t / t.sum(1, keepdims=True))
    else:
        target = ctx.arr(second, f32, [_N, _M], values=ctx.values(f32, [_N, _M]) * 0.5)
    a = {first: logits, second: target, "out": ctx.arr("out", f32, [_N, _M]) if case["out"] else None}
    p, kind = case.get("pos"), case.get("kind")
    labels_kinds = {"oob": np.array([0, 5, 1]), "negative": np.array([0, -1, 1]), "int2d": np.array([[0], [4], [2]]),
                    "intshort": np.array([0, 4]), "bool": np.array([True, False, True])}
    if p == second and kind in labels_kinds:
        a[p] = ctx.check(p, labels_kinds[kind])
    else:
        _nn_bad(ctx, a, case, first)
    for k, v in a.items():
        ctx.check(k, v)
    f = getattr(nn, fn)
    return lambda: f(a[first], a[second], out=a["out"], backend=case["backend"])


def _build_dense_layer(ctx, case, nn):
    f32 = np.float32
    layer = nn.Dense(_K, _M, rng=0, backend=case["backend"])
    layer.bias[...] = ctx.values(f32, [_M]) - 0.5
    x = ctx.arr("x", f32, [_N, _K])
    if case["method"] == "backward":
        layer.forward(x)  # the state backward needs
    p, kind = case.get("pos"), case.get("kind")
    bad = None
    if kind == "reshaped":  # changed in place after it was assigned (and checked)
        getattr(layer, p).shape = (1, -1)
    elif kind == "made_readonly":
        getattr(layer, p).flags.writeable = False
    elif p is not None:
        bad = _bad(ctx, kind, getattr(layer, p), "layer." + p)
    for name in ("weight", "bias", "grad_weight", "grad_bias"):
        ctx.check("layer." + name, getattr(layer, name))
        ctx.getter("which array layer.%s is" % name, lambda name=name: id(getattr(layer, name)))
    g = ctx.arr("grad_output", f32, [_N, _M])

    def call():
        if bad is not None or kind == "none":
            setattr(layer, p, bad)  # the assignment is part of the call under test
        return layer.forward(x) if case["method"] == "forward" else layer.backward(g)
    return call


# ---- fastgd.optim

def _build_optim(ctx, case):
    import fastgd.optim as optim
    cls = getattr(optim, case["opt"])
    params = [ctx.arr("params[%d]" % t, np.dtype(d), s) for t, (d, s) in enumerate(TENSORS)]
    opt = cls(params, backend=case["backend"], **OPTIM_HYPER.get(case["opt"], {}))
    opt.step([ctx.values(p.dtype, p.shape).astype(p.dtype) for p in params])  # state exists from here on
    grads = [ctx.arr("grads[%d]" % t, p.dtype, list(p.shape)) for t, p in enumerate(params)]
    kind = case.get("kind")
    if kind == "list_none":
        grads = None
    elif kind == "elem_none0":
        grads[0] = None
    elif kind == "elem_none2":
        grads[2] = None
    elif kind == "len_short":
        grads = grads[:2]
    elif kind == "len_long":
        grads = grads + [ctx.arr("grads[3]", np.float32, [3])]
    elif kind == "ndarray":
        grads = grads[0]
    elif kind == "same_list":
        grads = opt.parameters()
    elif kind == "elem_same":
        grads[2] = params[2]
    elif kind == "cross_overlap":
        grads[2] = params[0].reshape(-1)[:grads[2].size].reshape(grads[2].shape)
    elif kind == "tuple":
        grads = tuple(grads)
    elif kind is not None:
        grads[2] = _bad(ctx, kind[5:], grads[2], "grads[2]")
    for t, p in enumerate(params):
        ctx.check("params[%d]" % t, p)
        for k, v in opt.state[t].items():
            ctx.check("state[%d][%r]" % (t, k), v)
    if isinstance(grads, (list, tuple)):
        for t, g in enumerate(grads):
            ctx.check("grads[%d]" % t, g)
    ctx.getter("step_count", lambda: opt.step_count)
    ctx.getter("state keys", lambda: [sorted(st) for st in opt.state])
    return lambda: opt.step(grads)


# ---- fake functions for the harness self-tests (no fastgd)

def _build_self(ctx, case):
    kind = case["kind"]
    a = ctx.arr("a", np.float32, [8])
    ctx.check("a", a)

    def call():
        if kind in ("valid", "valid2"):
            a[0] = 1.0  # a valid call may write its arrays
            return a
        if kind == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        if kind == "abort":
            os.abort()
        if kind == "exit3":
            os._exit(3)
        if kind == "hang":
            time.sleep(60)
        if kind == "raise_ok":
            raise ValueError("a must be positive")
        if kind == "modify":
            a[3] = -1.0
            raise ValueError("a must be positive")
        if kind == "oob":
            a.base[_G + a.size] = 0.0  # the element just past the end
            raise ValueError("a must be positive")
        if kind == "attrerr":
            raise AttributeError("'NoneType' object has no attribute 'a'")
        if kind == "unnamed":
            raise ValueError("something is wrong")
        return None  # noraise
    return call


_BUILDERS = {"step": _build_step, "multi": _build_multi, "nn": _build_nn, "optim": _build_optim,
             "self": _build_self}


def _run_case(case):
    t0 = time.perf_counter()
    try:
        ctx = _Ctx(case)
        call = _BUILDERS[case["api"]](ctx, case)
        before = ctx.snapshot()
    except Exception as exc:
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        return {"outcome": "harness", "msg": "building the case failed: %s: %s (%s:%d)"
                % (type(exc).__name__, exc, os.path.basename(tb.filename), tb.lineno)}
    res = {}
    try:
        call()
        res["outcome"] = "returned"
    except BaseException as exc:  # noqa: B902 - everything is reported, the judge decides
        res.update(outcome="raised", exc=type(exc).__name__, mro=[k.__name__ for k in type(exc).__mro__],
                   msg=str(exc)[:400])
    res["changed"], res["oob"] = ctx.compare(before)
    res["seconds"] = round(time.perf_counter() - t0, 4)
    return res
