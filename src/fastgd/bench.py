"""The bandwidth report: ``python -m fastgd.bench [options]``.

For each kernel, size and backend it prints the time of one step, the bandwidth (the bytes
the step must move: grad read, param and every state array read and written), the fraction
of the bandwidth of the same backend's ``copy_skeleton`` (a kernel that moves exactly those
bytes with trivial arithmetic, measured in the same run), the speedup over the NumPy
reference and, when torch is importable, the ratio to ``torch.optim`` on the same size
(``fused=True`` for Adam, AdamW, SGD and Adagrad, torch's CPU fused optimizers; the default
implementation for the others) with its *ceiling*: torch's time over the skeleton's, the
largest ratio any kernel that moves the rule's bytes could reach against torch here.  A last
table compares a multi-tensor step of 200 arrays of 4,096 elements (separately allocated,
and as views of one buffer per list from ``fastgd.multi.flat_buffer``) with one step of a
single array of 819,200 (Adam).

The half-precision section (``--precision`` alone; part of the full report unless
``--no-precision``; 1.6e7 and 6.4e7 elements, Cython unless ``--precision-backends`` or
``--backends`` says otherwise) times every rule in every dtype combination of ``COMBOS``
(float32; bfloat16 params and grads with float32 or bfloat16 state; the same for float16)
side by side: per row the bytes per element the step moves (grad read, param and every state
read and written, each at its own item size), its time, the skeleton of the same bytes
(Cython's ``half_skeleton`` for 2-byte params, ``copy_skeleton`` for float32) with the
fraction of it, and the time over the float32 step of the same rule, measured in the same
rounds.  Then the fused extras in float32 (``--extras-kernels``, default Adam): the plain step,
with ``grad_scale`` + ``found_inf``, with ``max_norm`` (the norm pass and the step), both, the
unfused way (``fastgd.multi.unscale_and_check``, then the step) and the norm pass alone, as
ratios to the plain step; and a table of the issue's targets judged on what was measured at
their sizes.  It holds every combination's arrays at once (Adam at 6.4e7: about 5.8 GB).

How it measures: everything compared at one size is timed in rounds, A B C, B C A, C A B, ...,
after a warm-up call of each (numba compiles, pages are faulted in, torch allocates its
state); each sample (after an untimed pause and one untimed call) times enough back-to-back calls to
last >= 1 ms; a time is the median over the rounds, and a ratio (fraction of the skeleton,
speedup over NumPy or torch) is the median over the rounds of the ratio of the two samples
taken next to each other in that round, so that the machine's slow drifts cancel.  The state arrays are updated in place by every call and not reset
(a reset would move more bytes than the step); learning rates are small, so the values stay
finite and in the normal range.  ``--threads`` pins fastgd's, numba's and torch's threads.
The machine is shared: compare only ratios from one run.

The kernels are timed through the public functions (``fastgd.adam_step``: argument checks
included, as a user calls them), the skeleton as the backend's bare ``copy_skeleton``; below
~1e5 elements the fraction of the skeleton therefore mostly measures the per-call overhead.
``--isolate`` runs each compiled backend in its own process (thread pools of different
runtimes, e.g. numba's and fastgd's OpenMP, can otherwise slow each other down on few cores).

torch is optional: it is imported here, only when present, and never by fastgd itself.

One harness: the kernel table (``KERNELS``, derived from the rule table ``fastgd._rules.RULES``),
the data, the calls timed, the bytes moved, the timers, the machine description and the tables
below are also those of the pytest-benchmark suites in the checkout's ``bench/``, which import
them from here.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import NamedTuple

import numpy as np

import fastgd
from fastgd import multi as _multi
from fastgd._calibrate import cpu_model
from fastgd._rules import RULES
from fastgd.backends import backend_module

# ---------------------------------------------------------------------------------------
# the kernel table: what is timed, on what data, moving how many bytes.  The pytest-benchmark
# suites of the checkout's bench/ import it (and the helpers below) from here.

SEED = 20261121   # all benchmark data is seeded, so figures from different runs are comparable
STEP = 10  # for the rules with bias correction: past RAdam's warm-up (rho_t > 5), as in training
BACKENDS = ("numpy", "cython", "numba")   # the reference first: the speedups are over it

# what the bench adds to the rule table (fastgd/_rules.py): hyperparameters set beside the
# optimizer's defaults (``Rule.optim_defaults``: SGD's lr), torch.optim running with the same;
# the rules torch has a fused CPU kernel for; the rules torch.optim has no class for
_HYPER = {"sgd": {"momentum": 0.9}}
TORCH_FUSED = ("sgd", "adam", "adamw", "adagrad")
NOT_IN_TORCH = ("lion",)


class Kernel(NamedTuple):
    """One rule as the benchmarks run it (the values of ``KERNELS``)."""
    states: tuple   # the state arrays after (param, grad) that the bench's options use
    hyper: dict     # keyword hyperparameters of the public step (``step`` included where it takes one)
    torch: "tuple | None"  # (torch.optim class, its keywords, fused?), or None: torch has no such optimizer


def _kernels():
    """name: Kernel for every rule of the table, with the state its default options use (the
    positional arrays and those the bench's hyperparameters switch on)."""
    out = {}
    for name, rule in RULES.items():
        hyper = dict(rule.optim_defaults, **_HYPER.get(name, {}))
        step = STEP if rule.step == "required" else None
        kw = rule.check(**dict(rule.defaults, **hyper, **({"step": step} if step else {})))
        state = tuple(s.name for s in rule.state if not s.scalar and s.needed(kw))
        torch = None if name in NOT_IN_TORCH else (rule.optimizer, dict(hyper), name in TORCH_FUSED)
        out[name] = Kernel(state, dict(hyper, step=step) if step is not None else hyper, torch)
    return out


KERNELS = _kernels()

# (label, param and grad dtype, state dtype): float32 first, the reference every other
# combination's time is divided by.  bfloat16 is ml_dtypes' (imported only for this section).
COMBOS = (("float32", "float32", "float32"), ("bf16-f32", "bfloat16", "float32"), ("bf16", "bfloat16", "bfloat16"),
          ("f16-f32", "float16", "float32"), ("f16", "float16", "float16"))
# the fused extras (Adam by default): variant -> what the call adds to the plain step
EXTRAS = ("plain", "scaled", "clipped", "scaled+clipped", "unfused", "norm")
GRAD_SCALE = 1024.0   # a loss scale; the gradient is divided by it as it is loaded
MAX_NORM = 1.0        # below the norm of N(0, 1) data of these sizes: the clip factor is < 1


def has_ml_dtypes():
    import importlib.util
    return importlib.util.find_spec("ml_dtypes") is not None


def np_dtype(name):
    """The NumPy dtype of ``name`` ("bfloat16": ml_dtypes', imported only then)."""
    if name == "bfloat16":
        import ml_dtypes  # the optional dependency fastgd itself imports only when such arrays arrive
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def combo_bytes(kernel, param_dtype, state_dtype):
    """Bytes per element a step of ``kernel`` moves with these dtypes: grad read, param read
    and written, every state array read and written (Adam: 28 in float32, 22 for bfloat16
    params and grads with float32 state, 14 in bfloat16)."""
    k = len(KERNELS[kernel].states)
    p = np_dtype(param_dtype).itemsize
    return p + 2 * p + 2 * k * np_dtype(state_dtype).itemsize


def extra_bytes(kernel, variant):
    """Bytes per element a float32 variant of ``extra_calls`` must move: the step's, plus one
    read of the gradient for a clip (the norm pass), plus its read and write for the unfused
    unscale; the norm pass alone reads the gradient."""
    base = combo_bytes(kernel, "float32", "float32")
    return {"norm": 4, "unfused": base + 8}.get(variant, base + (4 if "clipped" in variant else 0))


def skeleton_name(param_dtype):
    """The backend function that moves a step's bytes with trivial arithmetic: Cython's
    ``half_skeleton`` for 2-byte params and grads (2- or 4-byte state), else ``copy_skeleton``;
    both take ``(grad, param, *states)``."""
    return "half_skeleton" if np_dtype(param_dtype).itemsize == 2 else "copy_skeleton"


# ---------------------------------------------------------------------------------------
# the arrays and the calls timed

def seeded_arrays(dtype, n):
    """(grad, param0) of the pytest-benchmark suites: N(0, 1), seeded by (SEED, n, item size)."""
    rng = np.random.default_rng([SEED, int(n), np.dtype(dtype).itemsize])
    grad = rng.standard_normal(int(n), dtype=dtype)
    param0 = rng.standard_normal(int(n), dtype=dtype)
    return grad, param0


def _data(kernel, n, dtype, rng):
    """(param, grad, states) of this report, drawn from ``rng``; the states start where a
    training run has them (second moments grad**2, ...), not at zero."""
    names = KERNELS[kernel].states
    param = rng.standard_normal(n, dtype=dtype)
    grad = rng.standard_normal(n, dtype=dtype)
    states = []
    for name in names:
        if name in ("exp_avg_sq", "square_avg", "state_sum"):
            states.append(grad * grad)
        elif name == "exp_inf":
            states.append(np.abs(grad))
        elif name == "acc_delta":
            states.append(np.full(n, 1e-4, dtype))
        else:
            states.append(grad * dtype(0.1))
    return param, grad, states


def _copy(arrays):
    param, grad, states = arrays
    return param.copy(), grad.copy(), [s.copy() for s in states]


def _cast(arrays, param_dtype, state_dtype):
    param, grad, states = arrays
    pd, sd = np_dtype(param_dtype), np_dtype(state_dtype)
    return param.astype(pd), grad.astype(pd), [s.astype(sd) for s in states]


def step_args(kernel, param, grad, states, backend, **extra):
    """``(f, args, kwargs, reset)``: the public step ``fastgd.<kernel>_step(*args, **kwargs)`` on
    these arrays with the table's hyperparameters and ``extra`` (grad_scale, ...).  NAdam gets
    the running product of its momentum schedule as an optimizer passes it (``mu_product``,
    updated by every call); ``reset`` puts it back (None for the other rules)."""
    f = getattr(fastgd, kernel + "_step")
    kwargs = dict(KERNELS[kernel].hyper, backend=backend, **extra)
    if kernel != "nadam":
        return f, (param, grad, *states), kwargs, None
    prod = fastgd.nadam_mu_product(STEP - 1)
    mu_product = np.array([prod])
    kwargs["mu_product"] = mu_product

    def reset():
        mu_product[0] = prod
    return f, (param, grad, *states), kwargs, reset


def _step_call(kernel, arrays, backend, **extra):
    """The public step on ``arrays`` as one callable (NAdam's product put back before every call)."""
    param, grad, states = arrays
    f, args, kwargs, reset = step_args(kernel, param, grad, states, backend, **extra)
    if reset is None:
        return lambda: f(*args, **kwargs)
    return lambda: (reset(), f(*args, **kwargs))


def _skeleton_call(arrays, backend):
    param, grad, states = arrays
    skel = backend_module(backend).copy_skeleton
    return lambda: skel(grad, param, *states)


def extra_calls(kernel, param, grad, states, backend):
    """``({variant: (target, reset)}, found_inf)``, every variant of ``EXTRAS`` on the same float32
    arrays (``reset``: ``step_args``'): ``plain`` the step; ``scaled`` with ``grad_scale`` (a
    float32 array holding GRAD_SCALE, as a loss scaler keeps it) and ``found_inf`` (a float32
    array holding 0: the step runs); ``clipped`` with ``max_norm`` (the norm pass, then the step
    with the clip factor); ``scaled+clipped`` both; ``unfused`` ``fastgd.multi.unscale_and_check``
    (a pass that divides the gradient by 1.0 in place and checks it, so the data stays as it
    is) and then the plain step, the two-pass way the fused options replace; ``norm`` the norm
    pass alone (``fastgd.multi.global_norm``)."""
    scale = np.array([GRAD_SCALE], np.float32)
    one = np.array([1.0], np.float32)
    found_inf = np.zeros(1, np.float32)
    adds = {"plain": {}, "scaled": {"grad_scale": scale, "found_inf": found_inf}, "clipped": {"max_norm": MAX_NORM},
            "scaled+clipped": {"grad_scale": scale, "found_inf": found_inf, "max_norm": MAX_NORM}}
    calls = {}
    for variant, extra in adds.items():
        f, args, kwargs, reset = step_args(kernel, param, grad, states, backend, **extra)
        calls[variant] = ((lambda f=f, args=args, kwargs=kwargs: f(*args, **kwargs)), reset)
    plain, reset = calls["plain"]
    calls["unfused"] = (lambda: (_multi.unscale_and_check([grad], one, found_inf, backend=backend), plain()), reset)
    calls["norm"] = (lambda: _multi.global_norm([grad], backend=backend), None)
    return calls, found_inf


def _layout(param_dtype, state_dtype):
    """The skeleton's key: combinations with the same item sizes share one (bfloat16 and
    float16 move the same bytes)."""
    return "skeleton/%d+%d" % (np_dtype(param_dtype).itemsize, np_dtype(state_dtype).itemsize)


def _precision_skeleton(arrays, backend):
    """The skeleton of the arrays' bytes (``skeleton_name``): Cython's when it is available
    (the limit of the bytes on this machine, whichever backend is compared with it), else
    ``backend``'s copy_skeleton (None for half precision: no other backend has a half skeleton)."""
    param, grad, states = arrays
    try:
        mod = backend_module("cython")
    except Exception:  # not built here
        mod = None
    name = skeleton_name(grad.dtype)
    if name == "half_skeleton":
        if mod is None or not hasattr(mod, name):
            return None
        skel = mod.half_skeleton
    else:
        skel = (mod or backend_module(backend)).copy_skeleton
    return lambda: skel(grad, param, *states)


def _torch_call(torch, kernel, arrays):
    spec = KERNELS[kernel].torch
    if spec is None:
        return None, None
    cls_name, kw, fusable = spec
    param, grad, _ = arrays
    p = torch.nn.Parameter(torch.from_numpy(param.copy()))
    p.grad = torch.from_numpy(grad.copy())
    kw = dict(kw)
    if fusable:
        kw["fused"] = True
    try:
        opt = getattr(torch.optim, cls_name)([p], **kw)
        opt.step()
    except (RuntimeError, TypeError, ValueError):  # fused not offered for this dtype/build
        kw.pop("fused", None)
        fusable = False
        opt = getattr(torch.optim, cls_name)([p], **kw)
        opt.step()
    return opt.step, "fused" if fusable else "default"


def _import_torch(enabled):
    if not enabled:
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


# ---------------------------------------------------------------------------------------
# timing

def _timed(f, inner):
    t0 = time.perf_counter()
    for _ in range(inner):
        f()
    return (time.perf_counter() - t0) / inner


def call_seconds(f):
    """Seconds of one call of ``f()``."""
    return _timed(f, 1)


# Untimed pause between two different callables.  After a parallel region an OpenMP runtime
# keeps its threads spinning for a while (libgomp: GOMP_SPINCOUNT); fastgd's libgomp, torch's
# own copy and numba's pool are different runtimes, and on a 2-core machine the spinners of
# one starve the team of the next (a 100 us step then took 8 ms).  The pause lets them sleep.
GAP = 0.003


def _estimate(f, floor=1e-3):
    """Seconds per call, from back-to-back calls lasting >= ``floor`` seconds."""
    k = 1
    while True:
        t = _timed(f, k)
        if t * k >= floor or k >= 1 << 20:
            return max(t, 1e-8)
        k *= 4


def compare(funcs, budget, min_rounds=5, max_rounds=300, gap=GAP, sample=1e-3):
    """Median seconds per call of each callable in ``funcs`` (a dict), timed alternately
    (A B C, B C A, C A B, ...).  Each sample: an untimed pause (``gap``), one untimed call (caches and
    branch predictors warm again), then enough timed calls to last >= ``sample`` seconds."""
    est = {}
    for name, f in funcs.items():
        f()  # warm-up: compilation, page faults, torch's state
        time.sleep(gap)
        est[name] = _estimate(f)
    inner = {name: max(1, int(sample / t)) for name, t in est.items()}
    per_round = sum(inner[n] * est[n] + est[n] + gap for n in funcs)
    rounds = int(min(max_rounds, max(min_rounds, budget / per_round)))
    samples = {name: [] for name in funcs}
    order = list(funcs)
    for r in range(rounds):
        # the order rotates from round to round, so that no callable always runs right after
        # the same other one (e.g. after torch, whose OpenMP threads may still be spinning)
        for name in order[r % len(order):] + order[:r % len(order)]:
            f = funcs[name]
            time.sleep(gap)
            f()
            samples[name].append(_timed(f, inner[name]))
    return {name: statistics.median(s) for name, s in samples.items()}, rounds, samples


def _paired(samples, num, den):
    """Median over rounds of samples[num][i] / samples[den][i].  The two were timed next to
    each other in the same round, so slow drifts of the machine (another tenant's memory
    traffic, frequency changes) cancel in each ratio; the ratio of the two medians does not
    have that property."""
    return statistics.median(a / b for a, b in zip(samples[num], samples[den]))


def _spread(xs):
    """Interquartile range over median: how noisy one figure's samples were."""
    if len(xs) < 4:
        return None
    q = statistics.quantiles(xs, n=4)
    return (q[2] - q[0]) / statistics.median(xs)


def loadavg():
    """The 1-minute load average (None where unknown): on a shared machine, threaded kernels
    lose whole time slices once the load exceeds the free cores."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


# ---------------------------------------------------------------------------------------
# the machine

def machine():
    """This report's machine description (its JSON's ``machine``)."""
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "fastgd": fastgd.build_info()}
    try:
        import torch
        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def machine_summary():
    """The pytest-benchmark suites' machine description (their JSON's ``machine_info.fastgd``)."""
    info = fastgd.build_info()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu_model": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable, "build_info": info}


# ---------------------------------------------------------------------------------------
# tables

def size_label(n):
    """1000 -> '1e3', 16000000 -> '1.6e7'."""
    exp = len(str(int(n))) - 1
    mant = n / 10 ** exp
    return ("%de%d" if mant == int(mant) else "%.1fe%d") % (mant, exp)


def table_lines(header, body, markdown=True, align=None, group_cols=0):
    """The lines of a table of strings: Markdown (``align``: "l" or "r" per column, "r" marked
    ``---:``), or plain text with aligned columns and a blank line whenever the first
    ``group_cols`` cells change."""
    align = align or ["l"] * len(header)
    if markdown:
        return (["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
                + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]

    def line(cells):
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align)).rstrip()
    out = [line(header), "  ".join("-" * w for w in widths)]
    prev = None
    for r in body:
        if group_cols and prev is not None and r[:group_cols] != prev:
            out.append("")
        prev = r[:group_cols]
        out.append(line(r))
    return out


# ---------------------------------------------------------------------------------------
# the report's runs

DEFAULT_SIZES = (10_000, 1_000_000, 16_000_000)
QUICK_SIZES = (1_000, 100_000)
PRECISION_SIZES = (16_000_000, 64_000_000)
QUICK_PRECISION_SIZES = (1_000, 100_000)

def run_kernels(kernels, sizes, dtypes, backends, budget, torch, log=print):
    rows = []
    rng = np.random.default_rng(SEED)
    for dtype in dtypes:
        for n in sizes:
            for kernel in kernels:
                arrays = _data(kernel, n, dtype, rng)
                funcs = {}
                for b in backends:
                    funcs[b] = _step_call(kernel, arrays, b)
                    funcs["skeleton/" + b] = _skeleton_call(_copy(arrays), b)
                torch_impl = None
                if torch is not None:
                    tf, torch_impl = _torch_call(torch, kernel, arrays)
                    if tf is not None:
                        funcs["torch"] = tf
                med, rounds, samples = compare(funcs, budget)
                nbytes = combo_bytes(kernel, dtype, dtype) * n
                for b in backends:
                    t = med[b]
                    row = {"kernel": kernel, "dtype": np.dtype(dtype).name, "size": n, "backend": b,
                           "seconds": t, "gbps": nbytes / t / 1e9, "skeleton_seconds": med["skeleton/" + b],
                           "of_skeleton": _paired(samples, "skeleton/" + b, b), "rounds": rounds,
                           "spread": _spread(samples[b]), "skeleton_spread": _spread(samples["skeleton/" + b]),
                           "vs_numpy": _paired(samples, "numpy", b) if "numpy" in med else None,
                           "vs_torch": _paired(samples, "torch", b) if "torch" in med else None,
                           # torch's time over the skeleton's: the largest ratio over torch that
                           # any kernel moving this rule's bytes could reach on this machine
                           "torch_ceiling": _paired(samples, "torch", "skeleton/" + b) if "torch" in med else None,
                           "torch_seconds": med.get("torch"), "torch_impl": torch_impl if "torch" in med else None}
                    rows.append(row)
                    log(_row_line(row))
                del arrays, funcs
    return rows


def run_multi(backends, budget, torch, n_tensors=200, size=4096, dtype=np.float32, log=print):
    """Adam: one multi-tensor step over ``n_tensors`` arrays of ``size`` vs one array of the total."""
    rng = np.random.default_rng(SEED)
    total = n_tensors * size
    many = [[rng.standard_normal(size).astype(dtype) for _ in range(n_tensors)] for _ in range(2)]
    many += [[0.1 * g for g in many[1]], [g * g for g in many[1]]]
    one = [rng.standard_normal(total).astype(dtype) for _ in range(2)]
    one += [0.1 * one[1], one[1] * one[1]]
    # the same tensors as views of one buffer per list (fastgd.multi.flat_buffer)
    views = []
    for lst in many:
        _, vs = _multi.flat_buffer([a.shape for a in lst], dtype)
        for v, a in zip(vs, lst):
            v[...] = a
        views.append(vs)
    funcs = {}
    for b in backends:
        funcs["multi/" + b] = (lambda b=b: _multi.adam_step(*many, step=STEP, backend=b))
        funcs["views/" + b] = (lambda b=b: _multi.adam_step(*views, step=STEP, backend=b))
        funcs["one/" + b] = (lambda b=b: fastgd.adam_step(*one, step=STEP, backend=b))
        funcs["loop/" + b] = (lambda b=b: [fastgd.adam_step(p, g, m, v, step=STEP, backend=b)
                                           for p, g, m, v in zip(*many)])
    if torch is not None:
        for label, arrs in (("multi/torch", many), ("one/torch", [[a] for a in one])):
            ps = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in arrs[0]]
            for p, g in zip(ps, arrs[1]):
                p.grad = torch.from_numpy(g.copy())
            opt = torch.optim.Adam(ps, fused=True)
            opt.step()
            funcs[label] = opt.step
    med, rounds, samples = compare(funcs, budget)
    rows = []
    for b in list(backends) + (["torch"] if torch is not None else []):
        row = {"backend": b, "n_tensors": n_tensors, "size": size, "dtype": np.dtype(dtype).name,
               "multi_seconds": med["multi/" + b], "one_seconds": med["one/" + b],
               "loop_seconds": med.get("loop/" + b), "ratio": _paired(samples, "multi/" + b, "one/" + b),
               "views_seconds": med.get("views/" + b),
               "views_ratio": _paired(samples, "views/" + b, "one/" + b) if "views/" + b in med else None,
               "rounds": rounds}
        rows.append(row)
        log("multi %-7s %d x %d: %9.1f us   1 x %d: %9.1f us   ratio %.2f%s%s" % (
            b, n_tensors, size, row["multi_seconds"] * 1e6, total, row["one_seconds"] * 1e6, row["ratio"],
            "" if row["views_ratio"] is None else "   views of one buffer: %.1f us, ratio %.2f"
            % (row["views_seconds"] * 1e6, row["views_ratio"]),
            "" if row["loop_seconds"] is None else "   (python loop of single steps: %.1f us)"
            % (row["loop_seconds"] * 1e6)))
    return rows





# ---------------------------------------------------------------------------------------
# half precision: the dtype combinations of every rule, and the fused extras

def run_precision(kernels, sizes, backends, budget, combos=COMBOS, log=print):
    """Every rule in every dtype combination, side by side.

    For one rule and size, the float32 data of the main table is cast to each combination
    (param and grad to its param dtype, the state arrays to its state dtype; the casts are
    exact or rounded once), and everything is timed in one ``compare()``: the step of every
    combination on every backend (the backends share a combination's arrays, as in the main
    table) and one skeleton per byte layout (float32: ``copy_skeleton``; 2-byte params and
    grads with 4- or 2-byte state: ``half_skeleton``; bfloat16 and float16 share theirs), on
    copies of the arrays (a skeleton's writes would make garbage of a step's values).  A row's
    ``of_skeleton`` is the skeleton's time over the step's and ``vs_float32`` the step's time
    over the float32 step's of the same rule and backend, each the median over the rounds of
    the ratio of the two samples of one round.  Memory: every combination's arrays and the
    skeletons' at once (Adam at 6.4e7: about 5.8 GB)."""
    rows = []
    rng = np.random.default_rng(SEED)
    combos = [c for c in COMBOS if c[0] == "float32"] + [c for c in combos if c[0] != "float32"]
    for n in sizes:
        for kernel in kernels:
            base = _data(kernel, n, np.float32, rng)
            funcs, skeletons = {}, {}
            for label, pd, sd in combos:
                arrays = base if label == "float32" else _cast(base, pd, sd)
                for b in backends:
                    funcs["step/%s/%s" % (label, b)] = _step_call(kernel, arrays, b)
                key = _layout(pd, sd)
                if key not in skeletons:
                    skeletons[key] = _precision_skeleton(_copy(arrays), backends[0])
                    if skeletons[key] is not None:
                        funcs[key] = skeletons[key]
            med, rounds, samples = compare(funcs, budget)
            for label, pd, sd in combos:
                key = _layout(pd, sd)
                nbytes = combo_bytes(kernel, pd, sd)
                for b in backends:
                    name = "step/%s/%s" % (label, b)
                    t = med[name]
                    row = {"kernel": kernel, "combo": label, "param_dtype": pd, "state_dtype": sd, "size": n,
                           "backend": b, "bytes_per_element": nbytes, "seconds": t, "gbps": nbytes * n / t / 1e9,
                           "skeleton": skeleton_name(pd) if key in med else None,
                           "skeleton_seconds": med.get(key),
                           "of_skeleton": _paired(samples, key, name) if key in med else None,
                           "vs_float32": _paired(samples, name, "step/float32/" + b),
                           "rounds": rounds, "spread": _spread(samples[name])}
                    rows.append(row)
                    log(_precision_line(row))
            del base, funcs, skeletons
    return rows



def run_extras(kernels, sizes, backends, budget, log=print):
    """The fused extras in float32: every variant of ``extra_calls`` on every backend and the
    rule's float32 skeleton (Cython's ``copy_skeleton``), timed in one ``compare()`` per rule
    and size; ``vs_plain`` is the variant's time over the plain step's (median of the paired
    ratios of the rounds).  The issue's targets, Adam at 1.6e7: scaled <= 1.03, clipped <= 1.2
    (a clip must read the gradient once more: at best (28 + 4) / 28 = 1.14)."""
    rows = []
    rng = np.random.default_rng(SEED + 1)
    for n in sizes:
        for kernel in kernels:
            arrays = _data(kernel, n, np.float32, rng)
            funcs = {}
            for b in backends:
                for variant, (f, reset) in extra_calls(kernel, *arrays, b)[0].items():
                    funcs["%s/%s" % (variant, b)] = f if reset is None else (lambda f=f, reset=reset: (reset(), f()))
            skel = _precision_skeleton(_copy(arrays), backends[0])
            if skel is not None:
                funcs["skeleton"] = skel
            med, rounds, samples = compare(funcs, budget)
            for b in backends:
                for variant in EXTRAS:
                    name = "%s/%s" % (variant, b)
                    row = {"kernel": kernel, "dtype": "float32", "size": n, "backend": b, "variant": variant,
                           "bytes_per_element": extra_bytes(kernel, variant), "seconds": med[name],
                           "vs_plain": _paired(samples, name, "plain/" + b),
                           "of_skeleton": _paired(samples, "skeleton", name) if variant == "plain" and skel else None,
                           "rounds": rounds, "spread": _spread(samples[name])}
                    rows.append(row)
                    log(_extras_line(row))
            del arrays, funcs
    return rows


# the targets (measured in one run; not timed tests)
OF_SKELETON_TARGET = 0.95        # bf16-f32, bf16 and f16, every rule, at 1.6e7 and 6.4e7
OF_SKELETON_COMBOS = ("bf16-f32", "bf16", "f16")
OF_SKELETON_SIZES = (16_000_000, 64_000_000)
VS_FLOAT32_TARGETS = {"bf16-f32": 0.85, "bf16": 0.6}   # Adam at 1.6e7 (limits 22/28 and 0.5)
EXTRAS_TARGETS = {"scaled": 1.03, "clipped": 1.2}       # Adam float32 at 1.6e7 (clipped: limit 32/28)


def targets(precision_rows, extra_rows):
    """The issue's targets against this run's rows: a list of dicts (target, backend, value,
    bound, met, where).  Only what was measured at the target sizes is judged."""
    out = []
    backends = list(dict.fromkeys(r["backend"] for r in precision_rows + extra_rows))
    for b in backends:
        judged = [r for r in precision_rows if r["backend"] == b and r["combo"] in OF_SKELETON_COMBOS
                  and r["size"] in OF_SKELETON_SIZES and r["of_skeleton"] is not None]
        if judged:
            worst = min(judged, key=lambda r: r["of_skeleton"])
            met = sum(r["of_skeleton"] >= OF_SKELETON_TARGET for r in judged)
            out.append({"target": "every rule, %s, of skeleton >= %.2f" % (", ".join(OF_SKELETON_COMBOS),
                                                                         OF_SKELETON_TARGET),
                        "backend": b, "value": worst["of_skeleton"], "bound": OF_SKELETON_TARGET,
                        "met": met == len(judged),
                        "where": "%d of %d met; lowest: %s %s %s" % (met, len(judged), worst["kernel"], worst["combo"],
                                                                     size_label(worst["size"]))})
        for combo, bound in VS_FLOAT32_TARGETS.items():
            for r in precision_rows:
                if (r["backend"], r["kernel"], r["combo"], r["size"]) == (b, "adam", combo, 16_000_000):
                    out.append({"target": "adam %s time / float32 time <= %.2f" % (combo, bound), "backend": b,
                                "value": r["vs_float32"], "bound": bound, "met": r["vs_float32"] <= bound,
                                "where": "1.6e7"})
        for variant, bound in EXTRAS_TARGETS.items():
            for r in extra_rows:
                if (r["backend"], r["kernel"], r["variant"], r["size"]) == (b, "adam", variant, 16_000_000):
                    out.append({"target": "adam float32 %s / plain <= %.2f" % (variant, bound), "backend": b,
                                "value": r["vs_plain"], "bound": bound, "met": r["vs_plain"] <= bound,
                                "where": "1.6e7"})
    return out


# ---------------------------------------------------------------------------------------
# output

def _row_line(r):
    return "%-8s %-7s %7s %-7s %11.1f us %7.1f GB/s  skeleton %5.2f%s%s" % (
        r["kernel"], r["dtype"], size_label(r["size"]), r["backend"], r["seconds"] * 1e6, r["gbps"], r["of_skeleton"],
        "" if r["vs_numpy"] is None else "  vs numpy %6.1fx" % r["vs_numpy"],
        "" if r["vs_torch"] is None else "  vs torch(%s) %5.2fx (ceiling %.2fx)" % (
            r["torch_impl"], r["vs_torch"], r["torch_ceiling"]))


def _precision_line(r):
    return "%-8s %-8s %7s %-7s %3d B/el %11.1f us %7.1f GB/s  %s %s  vs float32 %5.2f" % (
        r["kernel"], r["combo"], size_label(r["size"]), r["backend"], r["bytes_per_element"], r["seconds"] * 1e6,
        r["gbps"], r["skeleton"] or "no skeleton", "" if r["of_skeleton"] is None else "%5.2f" % r["of_skeleton"],
        r["vs_float32"])


def _extras_line(r):
    return "%-8s %-7s %7s %-7s %-14s %3d B/el %11.1f us  vs plain %5.2f%s" % (
        r["kernel"], r["dtype"], size_label(r["size"]), r["backend"], r["variant"], r["bytes_per_element"],
        r["seconds"] * 1e6, r["vs_plain"], "" if r["of_skeleton"] is None else "  skeleton %5.2f" % r["of_skeleton"])


def _blank(spec, x):
    """``spec % x``, or "" for None."""
    return "" if x is None else spec % x


def markdown_precision(rows):
    """The dtype combinations: bytes per element, time, the skeleton of the same bytes and the
    time over the float32 step's (the README's table)."""
    return "\n".join(table_lines(
        ["kernel", "params, grads", "state", "elements", "backend", "bytes/element", "time (us)", "skeleton (us)",
         "of skeleton", "vs float32"],
        [[r["kernel"], r["param_dtype"], r["state_dtype"], size_label(r["size"]), r["backend"],
          "%d" % r["bytes_per_element"], "%.1f" % (r["seconds"] * 1e6),
          _blank("%.1f", None if r["skeleton_seconds"] is None else r["skeleton_seconds"] * 1e6),
          _blank("%.2f", r["of_skeleton"]), "%.2f" % r["vs_float32"]] for r in rows]))


def markdown_extras(rows):
    return "\n".join(table_lines(
        ["kernel", "dtype", "elements", "backend", "variant", "bytes/element", "time (us)", "vs plain"],
        [[r["kernel"], r["dtype"], size_label(r["size"]), r["backend"], r["variant"], "%d" % r["bytes_per_element"],
          "%.1f" % (r["seconds"] * 1e6), "%.2f" % r["vs_plain"] + _blank(" (skeleton: %.2f)", r["of_skeleton"])]
         for r in rows]))


def markdown_targets(judged):
    out = ["| target | backend | measured | met | |", "|---|---|---|---|---|"]
    for t in judged:
        out.append("| %s | %s | %.2f | %s | %s |" % (t["target"], t["backend"], t["value"],
                                                     "yes" if t["met"] else "NO", t["where"]))
    return "\n".join(out)


def markdown(rows, multi_rows, precision_rows=(), extra_rows=()):
    out = []
    if rows or not (multi_rows or precision_rows or extra_rows):
        out = table_lines(
            ["kernel", "dtype", "elements", "backend", "time (us)", "GB/s", "of skeleton", "vs NumPy", "vs torch"],
            [[r["kernel"], r["dtype"], size_label(r["size"]), r["backend"], "%.1f" % (r["seconds"] * 1e6),
              "%.1f" % r["gbps"], "%.2f" % r["of_skeleton"], _blank("%.1fx", r["vs_numpy"]),
              "" if r["vs_torch"] is None else "%.2fx (%s; ceiling %.2fx)" % (r["vs_torch"], r["torch_impl"],
                                                                            r["torch_ceiling"])] for r in rows])
    if multi_rows:
        first = multi_rows[0]
        out += [""] + table_lines(
            ["Adam, backend", "%d x %d (us)" % (first["n_tensors"], first["size"]),
             "1 x %d (us)" % (first["n_tensors"] * first["size"]), "ratio", "views of one buffer (us)", "ratio"],
            [[r["backend"], "%.1f" % (r["multi_seconds"] * 1e6), "%.1f" % (r["one_seconds"] * 1e6), "%.2f" % r["ratio"],
              _blank("%.1f", None if r["views_seconds"] is None else r["views_seconds"] * 1e6),
              _blank("%.2f", r["views_ratio"])] for r in multi_rows])
    if precision_rows:
        out += ["", markdown_precision(precision_rows)]
    if extra_rows:
        out += ["", markdown_extras(extra_rows)]
    judged = targets(list(precision_rows), list(extra_rows))
    if judged:
        out += ["", markdown_targets(judged)]
    return "\n".join(out).lstrip("\n")


def plot(rows, path):
    """Log-log time versus size, one panel per kernel, one line per backend (and torch)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return False
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))
    cols = min(3, len(kernels))
    nrows = (len(kernels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    colors = {}  # one color per series across all panels (a panel without torch shifts no colors)

    def color(label):
        key = label.split(" (")[0] if label.startswith("torch") else label
        return colors.setdefault(key, "C%d" % (len(colors) % 10))

    for ax, k in zip(axes.flat, kernels):
        series = {}
        for r in rows:
            if r["kernel"] != k:
                continue
            label = "%s %s" % (r["backend"], r["dtype"])
            series.setdefault(label, []).append((r["size"], r["seconds"]))
            if r["backend"] == "cython" or (r["backend"] == rows[0]["backend"] and "cython" not in label):
                series.setdefault("skeleton (%s) %s" % (r["backend"], r["dtype"]), []).append(
                    (r["size"], r["skeleton_seconds"]))
            if r["torch_seconds"] is not None:
                series.setdefault("torch %s (%s)" % (r["dtype"], r["torch_impl"]), []).append(
                    (r["size"], r["torch_seconds"]))
        for label, pts in series.items():
            pts = sorted(set(pts))
            ax.loglog([p[0] for p in pts], [p[1] for p in pts], "--" if "skeleton" in label else "-o",
                      label=label, markersize=3, color=color(label))
        ax.set_title(k)
        ax.set_xlabel("elements")
        ax.set_ylabel("seconds per step")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(kernels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)  # the first panel has every series (its kernel is in torch)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------
# command line

def _sizes(text):
    try:
        return tuple(int(float(s)) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("sizes must be numbers separated by commas, e.g. 1e4,1e6") from None


def _names(choices):
    def parse(text):
        names = tuple(s.strip() for s in text.split(",") if s.strip())
        bad = [s for s in names if s not in choices]
        if bad:
            raise argparse.ArgumentTypeError("unknown %s (choose from %s)" % (", ".join(bad), ", ".join(choices)))
        return names
    return parse


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m fastgd.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=_sizes, help="elements, comma-separated (default 1e4,1e6,1.6e7)")
    ap.add_argument("--kernels", type=_names(tuple(KERNELS)), help="default: all")
    ap.add_argument("--backends", type=_names(tuple(sorted(BACKENDS))), help="default: all available")
    ap.add_argument("--dtype", choices=("float32", "float64", "both"), default="float32")
    ap.add_argument("--threads", type=int, help="threads for fastgd, numba and torch (default: fastgd's)")
    ap.add_argument("--budget", type=float, help="seconds of timed work per size and kernel (default 1, quick 0.05)")
    ap.add_argument("--json", metavar="FILE", help="write machine info and every figure as JSON")
    ap.add_argument("--plot", metavar="FILE", help="log-log time vs size per backend (needs matplotlib)")
    ap.add_argument("--quick", action="store_true", help="small sizes, adam and sgd, short budget")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch comparison")
    ap.add_argument("--no-multi", action="store_true", help="skip the multi-tensor comparison")
    ap.add_argument("--multi-only", action="store_true", help="only the multi-tensor comparison")
    ap.add_argument("--isolate", action="store_true",
                    help="one process per compiled backend (each with numpy and torch beside it): thread pools "
                         "of different runtimes then cannot fight")
    ap.add_argument("--precision", action="store_true",
                    help="only the half-precision section: every rule in every dtype combination beside the "
                         "skeleton of its bytes, and the fused extras (grad_scale, found_inf, max_norm); "
                         "--sizes then sets its sizes")
    ap.add_argument("--no-precision", action="store_true", help="skip the half-precision section")
    ap.add_argument("--precision-sizes", type=_sizes,
                    help="elements of the half-precision section (default 1.6e7,6.4e7; quick 1e3,1e5)")
    ap.add_argument("--precision-backends", type=_names(tuple(sorted(BACKENDS))),
                    help="backends of the half-precision section (default: --backends if given, else cython)")
    ap.add_argument("--combos", type=_names(tuple(c[0] for c in COMBOS)),
                    help="dtype combinations (default all: %s; float32 is always measured, the reference)"
                         % ", ".join("%s = %s params and grads, %s state" % c for c in COMBOS))
    ap.add_argument("--extras-kernels", type=_names(tuple(KERNELS) + ("none",)),
                    help="rules whose fused extras are timed in float32 (default adam; none: skip)")
    args = ap.parse_args(argv)
    if args.precision and args.no_precision:
        ap.error("--precision and --no-precision exclude each other")
    if args.isolate:
        return _isolated(argv if argv is not None else sys.argv[1:], args)

    if args.threads is not None:
        if args.threads < 1:
            ap.error("--threads must be >= 1")
        fastgd.set_num_threads(args.threads)
    threads = fastgd.get_num_threads()
    available = fastgd.available_backends()
    backends = args.backends or tuple(available)
    missing = [b for b in backends if b not in available]
    if missing:
        ap.error("backend(s) not available here: %s" % ", ".join(missing))
    if "numba" in backends:
        import numba
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch = _import_torch(not args.no_torch)
    if torch is not None:
        torch.set_num_threads(threads)
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    kernels = args.kernels or (("adam", "sgd") if args.quick else tuple(KERNELS))
    dtypes = {"float32": (np.float32,), "float64": (np.float64,), "both": (np.float32, np.float64)}[args.dtype]
    budget = args.budget if args.budget is not None else (0.05 if args.quick else 1.0)

    info = machine()
    print("# fastgd %s on %s (%d cores), %s, SIMD %s, threads %d, serial cutoff %d, torch %s" % (
        fastgd.__version__, info["cpu"], info["cores"], info["fastgd"].get("compiler"),
        info["fastgd"].get("simd_variant"), threads, fastgd.serial_cutoff(), info["torch"] or "absent"))
    only = args.multi_only or args.precision
    rows = [] if only else run_kernels(kernels, sizes, dtypes, backends, budget, torch)
    multi_rows = []
    if not args.no_multi and not args.precision:
        multi_rows = run_multi(backends, budget, torch, size=4096 if not args.quick else 1024)
    precision_rows, extra_rows = [], []
    if not args.no_precision and not args.multi_only:
        pbackends = args.precision_backends or args.backends or (("cython",) if "cython" in available
                                                                 else (available[0],))
        missing = [b for b in pbackends if b not in available]
        if missing:
            ap.error("backend(s) not available here: %s" % ", ".join(missing))
        if "numba" in pbackends and "numba" not in backends:
            import numba
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        psizes = args.precision_sizes or (args.precision and args.sizes) or (
            QUICK_PRECISION_SIZES if args.quick else PRECISION_SIZES)
        combos = [c for c in COMBOS if args.combos is None or c[0] in args.combos]
        if not has_ml_dtypes() and any(c[1] == "bfloat16" for c in combos):
            print("# ml_dtypes is not installed: no bfloat16 combinations")
            combos = [c for c in combos if c[1] != "bfloat16"]
        print("\n# half precision: %s; bytes per element, step, the skeleton of the same bytes, time / float32's"
              % ", ".join("%s = %s/%s" % c for c in combos))
        precision_rows = run_precision(kernels, psizes, pbackends, budget, combos)
        ekernels = args.extras_kernels or ("adam",)
        if "none" not in ekernels:
            print("\n# fused extras, float32: time / the plain step's (grad_scale %g as a float32 array, found_inf 0, "
                  "max_norm %g)" % (GRAD_SCALE, MAX_NORM))
            extra_rows = run_extras(ekernels, psizes, pbackends, budget)
    print()
    print(markdown(rows, multi_rows, precision_rows, extra_rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "threads": threads, "budget": budget, "rows": rows, "multi": multi_rows,
                       "precision": precision_rows, "extras": extra_rows,
                       "targets": targets(precision_rows, extra_rows)}, f, indent=1, default=str)
    if args.plot and rows:
        plot(rows, args.plot)
    return 0


def _isolated(argv, args):
    """Run ``python -m fastgd.bench`` once per compiled backend and merge the results.  The
    half-precision section of a backend runs in that backend's process (NumPy's in the first)."""
    import subprocess
    import tempfile
    available = fastgd.available_backends()
    backends = args.backends or tuple(available)
    compiled = [b for b in backends if b != "numpy"] or ["numpy"]
    pbackends = () if args.no_precision else (
        args.precision_backends or args.backends or (("cython",) if "cython" in available else (available[0],)))
    rest, skip = [], False
    for a in argv:  # drop the options the children get their own values for
        if skip:
            skip = False
            continue
        if a in ("--isolate", "--plot", "--json", "--backends", "--precision-backends"):
            skip = a != "--isolate"
            continue
        if a.startswith(("--plot=", "--json=", "--backends=", "--precision-backends=")):
            continue
        rest.append(a)
    rows, multi_rows, precision_rows, extra_rows, info = [], [], [], [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i, b in enumerate(compiled):
            mine = [b] + (["numpy"] if "numpy" in backends and b != "numpy" else [])
            pmine = [x for x in pbackends if x == b] + (["numpy"] if "numpy" in pbackends and i == 0 and b != "numpy"
                                                        else [])
            if args.precision and not pmine:
                continue  # nothing of this backend's to measure
            popt = ["--precision-backends", ",".join(pmine)] if pmine else (
                [] if args.no_precision else ["--no-precision"])
            out = os.path.join(tmp, "%s.json" % b)
            r = subprocess.run([sys.executable, "-m", "fastgd.bench", *rest, "--backends", ",".join(mine), *popt,
                                "--json", out])
            if r.returncode:
                return r.returncode
            with open(out) as f:
                data = json.load(f)
            info = info or data["machine"]
            keep = lambda row, first=(i == 0): row["backend"] != "numpy" or first  # noqa: E731 - numpy once
            rows += [row for row in data["rows"] if keep(row)]
            multi_rows += [row for row in data["multi"] if keep(row) and (row["backend"] != "torch" or i == 0)]
            precision_rows += data.get("precision", [])
            extra_rows += data.get("extras", [])
    order = {k: j for j, k in enumerate(KERNELS)}
    rows.sort(key=lambda r: (r["dtype"], r["size"], order[r["kernel"]], r["backend"]))
    corder = {c[0]: j for j, c in enumerate(COMBOS)}
    precision_rows.sort(key=lambda r: (r["size"], order[r["kernel"]], corder[r["combo"]], r["backend"]))
    extra_rows.sort(key=lambda r: (r["size"], order[r["kernel"]], r["backend"], EXTRAS.index(r["variant"])))
    print("\n# merged (one process per backend)\n")
    print(markdown(rows, multi_rows, precision_rows, extra_rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "isolated": True, "rows": rows, "multi": multi_rows,
                       "precision": precision_rows, "extras": extra_rows,
                       "targets": targets(precision_rows, extra_rows)}, f, indent=1, default=str)
    if args.plot and rows:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
