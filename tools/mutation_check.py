#!/usr/bin/env python
"""Mutation check: do the tests notice a wrong reference?

fastgd/reference/rules.py is the spec that every compiled backend is compared with.  This
script injects one small bug at a time into a *copy* of it (a temporary copy of fastgd/ --
the compiled .so files and numba caches included -- tests/ and pyproject.toml; the checkout
itself is never written; where pip installed the package, as in CI, the installed fastgd/ is
copied), runs tests against the copy and records whether some test failed ("killed") and
which one failed first.

Two stages per mutation:

1. ``tests/test_independent.py`` (the reference against hand-written formulas, torch.optim
   and the Lion paper).  This is the stage that must kill every mutation: it is the only
   independent oracle.
2. Only if stage 1 did not kill it: ``tests/test_rules.py -k bit_for_bit`` and
   ``tests/test_steps.py``.  Those compare the compiled kernels with the reference, so they
   fail on any change to the reference alone -- but a bug written into the spec *and* the
   kernels would pass them, so a mutation killed only here is reported as surviving.

The half-precision spec (fastgd/reference/half.py, mutations of rule ``half``) is checked the
same way by ``tests/test_half.py`` on the numpy and numba backends (its oracle is written in
the test: float32 copies, the float32 reference rule, casts back).

Torch is required in the runs (FASTGD_REQUIRE_TORCH=1): a torch comparison that skips
cannot kill anything.  Prints a markdown table (rule | mutation | killed? | first failing
test | how many tests of each kind in test_independent.py failed: the hand-written steps, the
torch comparisons, the Lion-paper comparisons) and exits 1 if any mutation survives stage 1
(2 if the unmutated copy fails its tests).

    python tools/mutation_check.py [--jobs 2] [--only adam,radam] [--python /work/venv/bin/python]
"""
import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.join("fastgd", "reference", "rules.py")
# the half-precision spec (mutations under rule "half"): killed by tests/test_half.py, whose
# oracle is written in the test (float32 copies, the float32 rule, casts back), on the two
# backends that run through the spec's staging
HALF_TARGET = os.path.join("fastgd", "reference", "half.py")
HALF_STAGE1 = [["-x", "tests/test_half.py", "-k", "numpy or numba"]]


# TensorFlow's training ops (fastgd/reference/tf.py, mutations of rule "tf"): killed by
# tests/test_tf_vs_tensorflow.py, whose oracle is TensorFlow itself (FASTGD_REQUIRE_TF=1: a
# skip there kills nothing, so it is a failure)
TF_TARGET = os.path.join("fastgd", "reference", "tf.py")
TF_STAGE1 = [["-x", "tests/test_tf_vs_tensorflow.py"]]


def target_of(rule):
    return {"half": HALF_TARGET, "tf": TF_TARGET}.get(rule, TARGET)


def stage1_of(rule):
    return {"half": HALF_STAGE1, "tf": TF_STAGE1}.get(rule, STAGE1)

STAGE1 = [["tests/test_independent.py"]]          # run whole (~5 s): how many of its tests fail
STAGE2 = [["-x", "tests/test_rules.py", "-k", "bit_for_bit"], ["-x", "tests/test_steps.py"]]
PYTEST_FLAGS = ["-q", "-p", "no:cacheprovider", "-rfE", "--tb=no"]
TIMEOUT = 300  # seconds per pytest run (a run normally takes < 10 s)

# (rule, description, old text (or a compiled regex: then new is its replacement template),
#  new text, occurrences of old expected).  The patterns are the reference's code, so they
# must follow it when it changes: every pattern is checked against it before anything runs.
MUTATIONS = [
    # shared prologue (every rule but Lion)
    ("prologue", "drop the maximize negation", re.compile(r"(def _prologue\(.*?\n    if )maximize:", re.S),
     r"\1False:", 1),
    ("prologue", "L2 decay sign: g - wd*p", "grad = grad + weight_decay * param", "grad = grad - weight_decay * param", 1),
    ("prologue", "decoupled decay without lr: p *= 1 - wd",
     "        param *= 1.0 - lr * weight_decay\n        else:", "        param *= 1.0 - weight_decay\n        else:", 1),
    ("prologue", "coupled <-> decoupled swapped", "        if decoupled_weight_decay:",
     "        if not decoupled_weight_decay:", 1),
    # sgd
    ("sgd", "first step: no copy of g into the buffer", "        if first_step:", "        if False:", 1),
    ("sgd", "dampening dropped", "momentum_buffer += (1.0 - dampening) * grad", "momentum_buffer += grad", 1),
    ("sgd", "nesterov: g + b instead of g + mu*b", "grad = grad + momentum * momentum_buffer",
     "grad = grad + momentum_buffer", 1),
    ("sgd", "nesterov branch never taken", "        if nesterov:", "        if False:", 1),
    # adam / adamw
    ("adam", "1 - beta2 -> 1 - beta2*1.0001",
     "exp_avg_sq += (1.0 - beta2) * (grad * grad)\n    if amsgrad:",
     "exp_avg_sq += (1.0 - beta2 * 1.0001) * (grad * grad)\n    if amsgrad:", 1),
    ("adam", "bias correction 1 off by one (step + 1)",
     "step_size = lr / (1.0 - beta1 ** step)\n    inv_bc2_sqrt", "step_size = lr / (1.0 - beta1 ** (step + 1))\n    inv_bc2_sqrt", 1),
    ("adam", "beta1 for beta2 in bias correction 2", "inv_bc2_sqrt = 1.0 / math.sqrt(1.0 - beta2 ** step)",
     "inv_bc2_sqrt = 1.0 / math.sqrt(1.0 - beta1 ** step)", 1),
    ("adam", "eps inside the sqrt", "denom = np.sqrt(exp_avg_sq) * inv_bc2_sqrt + eps",
     "denom = np.sqrt(exp_avg_sq + eps) * inv_bc2_sqrt", 1),
    ("adam", "amsgrad: denominator from v, not max", "denom = np.sqrt(max_exp_avg_sq) * inv_bc2_sqrt + eps",
     "denom = np.sqrt(exp_avg_sq) * inv_bc2_sqrt + eps", 1),
    ("adam", "amsgrad: min instead of max", "np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)",
     "np.minimum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)", 1),
    # adamax
    ("adamax", "eps on beta2*u instead of |g|", "np.maximum(beta2 * exp_inf, np.abs(grad) + eps, out=exp_inf)",
     "np.maximum(beta2 * exp_inf + eps, np.abs(grad), out=exp_inf)", 1),
    ("adamax", "|g| -> g", "np.maximum(beta2 * exp_inf, np.abs(grad) + eps", "np.maximum(beta2 * exp_inf, grad + eps", 1),
    ("adamax", "beta1 for beta2 in the max", "np.maximum(beta2 * exp_inf,", "np.maximum(beta1 * exp_inf,", 1),
    ("adamax", "no bias correction", "step_size = lr / (1.0 - beta1 ** step)\n    exp_avg *= beta1",
     "step_size = lr\n    exp_avg *= beta1", 1),
    # nadam
    ("nadam", "mu schedule 0.96 -> 0.97", "0.5 * 0.96 ** (step * momentum_decay)", "0.5 * 0.97 ** (step * momentum_decay)", 1),
    ("nadam", "mu_next off by one (mu_t)", "mu_next = nadam_mu(step + 1, beta1, momentum_decay)",
     "mu_next = nadam_mu(step, beta1, momentum_decay)", 1),
    ("nadam", "1 - P_t*mu_next -> 1 - P_t", "(1.0 - mu_product * mu_next)", "(1.0 - mu_product)", 1),
    ("nadam", "eps inside the sqrt", "denom = np.sqrt(exp_avg_sq * inv_bc2) + eps",
     "denom = np.sqrt(exp_avg_sq * inv_bc2 + eps)", 1),
    # radam
    ("radam", "threshold rho_t > 4 (step 5 rectified)", "    if rho_t > 5.0:", "    if rho_t > 4.0:", 1),
    ("radam", "threshold rho_t > 6 (step 6 unrectified)", "    if rho_t > 5.0:", "    if rho_t > 6.0:", 1),
    ("radam", "rect: (rho_t - 2) -> (rho_t - 1)", "(rho_t - 4.0) * (rho_t - 2.0)", "(rho_t - 4.0) * (rho_t - 1.0)", 1),
    ("radam", "rho_t with step + 1", "rho_t = rho_inf - 2.0 * step * (beta2 ** step)",
     "rho_t = rho_inf - 2.0 * (step + 1) * (beta2 ** step)", 1),
    ("radam", "sqrt(1 - beta2^t) dropped", "step_size = lr * rect * math.sqrt(bias_correction2) / bias_correction1",
     "step_size = lr * rect / bias_correction1", 1),
    ("radam", "unrectified step without bias correction", "param -= (lr / bias_correction1) * exp_avg",
     "param -= lr * exp_avg", 1),
    # adagrad
    ("adagrad", "lr_decay: (t - 1) -> t", "clr = lr / (1.0 + (step - 1) * lr_decay)", "clr = lr / (1.0 + step * lr_decay)", 1),
    ("adagrad", "lr_decay: divide -> multiply", "clr = lr / (1.0 + (step - 1) * lr_decay)",
     "clr = lr * (1.0 - (step - 1) * lr_decay)", 1),
    ("adagrad", "eps inside the sqrt", "(grad / (np.sqrt(state_sum) + eps))", "(grad / np.sqrt(state_sum + eps))", 1),
    ("adagrad", "sum of |g| instead of g^2", "state_sum += grad * grad", "state_sum += np.abs(grad)", 1),
    # adadelta
    ("adadelta", "rho -> 1 - rho in the square average",
     "square_avg *= rho\n    square_avg += (1.0 - rho) * (grad * grad)",
     "square_avg *= 1.0 - rho\n    square_avg += rho * (grad * grad)", 1),
    ("adadelta", "eps outside the sqrt of s", "/ np.sqrt(square_avg + eps) * grad", "/ (np.sqrt(square_avg) + eps) * grad", 1),
    ("adadelta", "acc_delta += delta (not delta^2)", "acc_delta += (1.0 - rho) * (delta * delta)",
     "acc_delta += (1.0 - rho) * delta", 1),
    ("adadelta", "lr ignored", "param -= lr * delta", "param -= delta", 1),
    # rmsprop
    ("rmsprop", "centered: s + ga^2", "np.sqrt(square_avg - grad_avg * grad_avg)", "np.sqrt(square_avg + grad_avg * grad_avg)", 1),
    ("rmsprop", "centered: ga += g (no 1 - alpha)", "grad_avg += (1.0 - alpha) * grad", "grad_avg += grad", 1),
    ("rmsprop", "eps inside the sqrt", "avg = np.sqrt(square_avg) + eps", "avg = np.sqrt(square_avg + eps)", 1),
    ("rmsprop", "momentum: b += (1 - mu) g/avg", "momentum_buffer += grad / avg",
     "momentum_buffer += (1.0 - momentum) * grad / avg", 1),
    ("rmsprop", "alpha -> 1 - alpha", "square_avg *= alpha\n    square_avg += (1.0 - alpha) * (grad * grad)",
     "square_avg *= 1.0 - alpha\n    square_avg += alpha * (grad * grad)", 1),
    # lion
    ("lion", "sign -> identity", "param -= lr * np.sign(update)", "param -= lr * update", 1),
    ("lion", "beta2 for beta1 in the interpolation", "update = beta1 * exp_avg + (1.0 - beta1) * grad",
     "update = beta2 * exp_avg + (1.0 - beta2) * grad", 1),
    ("lion", "momentum with beta1", "    exp_avg *= beta2\n    exp_avg += (1.0 - beta2) * grad\n    return param",
     "    exp_avg *= beta1\n    exp_avg += (1.0 - beta1) * grad\n    return param", 1),
    ("lion", "decay without lr", "        param *= 1.0 - lr * weight_decay\n    update",
     "        param *= 1.0 - weight_decay\n    update", 1),
    ("lion", "maximize dropped", re.compile(r"(def lion\(.*?\n    if )maximize:", re.S), r"\1False:", 1),
    # half precision and the extras (fastgd/reference/half.py)
    ("half", "written arrays not rounded back", "                        a[lo:hi] = work[k].astype(a.dtype)",
     "                        pass", 1),
    ("half", "grad_scale multiplies", "                            g /= s", "                            g *= s", 1),
    ("half", "clip factor ignored", "                            g *= c", "                            g = g", 1),
    ("half", "master weights ignored", "                    elif k == 0 and mflat is not None:",
     "                    elif False:", 1),
    ("half", "global norm without the square root", "    norm = math.sqrt(total)", "    norm = total", 1),
    ("half", "unscale_and_check never sets found_inf", "        found_inf.reshape(-1)[0] = 1.0",
     "        found_inf.reshape(-1)[0] = 0.0", 1),
    # TensorFlow's training ops (fastgd/reference/tf.py): the differences from torch's forms
    # that fastgd.tf exists for, and the sparse ops' row order
    ("tf", "Adam: epsilon inside the root", "    else:\n        var -= (m * alpha) / (np.sqrt(v) + epsilon)",
     "    else:\n        var -= (m * alpha) / np.sqrt(v + epsilon)", 1),
    ("tf", "Adam: no bias correction", "alpha = lr * np.sqrt(T(1) - beta2_power) / (T(1) - beta1_power)",
     "alpha = lr", 1),
    ("tf", "Adam nesterov: the gradient term dropped", "((grad * one_minus_beta1 + beta1 * m) * alpha)",
     "((beta1 * m) * alpha)", 1),
    ("tf", "Adagrad: update_slots ignored",
     "def _adagrad(var, accum, grad, lr, update_slots):\n    if update_slots:",
     "def _adagrad(var, accum, grad, lr, update_slots):\n    if True:", 1),
    ("tf", "sparse rows applied in reverse order", "    return enumerate(indices.tolist())",
     "    return reversed(list(enumerate(indices.tolist())))", 1),
    ("tf", "RMSProp: epsilon outside the root", "(grad * lr) / np.sqrt(ms + epsilon)",
     "(grad * lr) / (np.sqrt(ms) + epsilon)", 1),
    ("tf", "KerasMomentum: the gradient added", "accum[...] = accum * momentum - grad * lr",
     "accum[...] = accum * momentum + grad * lr", 1),
    ("tf", "FTRL fast path: sqrt(accum) dropped", "sigma = new_accum_p - np.sqrt(accum)",
     "sigma = new_accum_p - accum", 1),
    ("tf", "FTRL: no L1 shrinkage", "x = l1_t * np.sign(linear) - linear", "x = -linear", 1),
    ("tf", "AdagradDA: global_step ignored", "return lr, bool(l1 > 0), gs * l1, l2 * (gs * lr)",
     "return lr, bool(l1 > 0), l1, l2 * lr", 1),
    ("tf", "ProximalGD: no L1 shrinkage", "np.maximum(np.abs(var) - lr_l1, var.dtype.type(0))", "np.abs(var)", 1),
    ("tf", "AdaMax: no epsilon", "var -= step * (m / (v + epsilon))", "var -= step * (m / v)", 1),
    ("tf", "PowerSign: agreement and disagreement swapped",
     "np.where(sign_gm > 0, e_pos, np.where(sign_gm < 0, e_neg,", "np.where(sign_gm > 0, e_neg, np.where(sign_gm < 0, e_pos,",
     1),
    ("tf", "Adadelta: accum_update from the update, not its square",
     "accum_update[...] = accum_update * rho + update * update * one_minus_rho",
     "accum_update[...] = accum_update * rho + update * one_minus_rho", 1),
    ("tf", "CenteredRMSProp: not centered", "denom = (ms - mg * mg) + epsilon", "denom = ms + epsilon", 1),
    ("tf", "AddSign: the sign term subtracted", "var -= lr * (alpha + sign_decay * sign_gm) * grad",
     "var -= lr * (alpha - sign_decay * sign_gm) * grad", 1),
]


PACKAGE = [os.path.join(ROOT, "src", "fastgd")]  # the fastgd package copied (see package_dir)


def package_dir(python):
    """The fastgd package to copy: the checkout's when it holds the compiled extensions (an
    in-place build), else the one ``python`` imports outside the checkout (CI installs it
    with pip, so the checkout has no compiled modules).  Either way built from this source."""
    local = os.path.join(ROOT, "src", "fastgd")
    if any(f.endswith((".so", ".pyd")) for f in os.listdir(os.path.join(local, "_cython"))):
        return local
    out = subprocess.run([python, "-c", "import fastgd, os; print(os.path.dirname(fastgd.__file__))"],
                         cwd=tempfile.gettempdir(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    path = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if out.returncode != 0 or not os.path.isdir(path):
        raise RuntimeError("no compiled fastgd to copy: build in place or install it (%s)" % out.stdout[-500:])
    return path


def make_copy(dest):
    """fastgd/ (with the compiled .so and the numba caches; mtimes kept so the caches stay
    valid), tests/ and pyproject.toml under ``dest``."""
    ignore = shutil.ignore_patterns(".pytest_cache", ".hypothesis")
    shutil.copytree(PACKAGE[0], os.path.join(dest, "fastgd"), ignore=ignore)
    shutil.copytree(os.path.join(ROOT, "tests"), os.path.join(dest, "tests"), ignore=ignore)
    shutil.copy2(os.path.join(ROOT, "pyproject.toml"), dest)


def mutate(source, old, new, count):
    if isinstance(old, re.Pattern):
        out, found = old.subn(new, source)
    else:
        found = source.count(old)
        out = source.replace(old, new)
    if found != count:
        raise AssertionError("pattern occurs %d times, expected %d: %r" % (found, count, old))
    if out == source:
        raise AssertionError("mutation changes nothing: %r" % (old,))
    compile(out, "<mutated>", "exec")  # a mutation must be valid Python (a SyntaxError kills nothing real)
    return out


def env_for(copy):
    env = dict(os.environ)
    env.update(PYTHONPATH=copy, PYTHONDONTWRITEBYTECODE="1", FASTGD_REQUIRE_TORCH="1", FASTGD_REQUIRE_TF="1",
               FASTGD_REQUIRE_BACKENDS="cython,numba,numpy", HYPOTHESIS_PROFILE="ci")
    return env


def run_pytest(python, copy, args):
    """(failing tests (ids, in order; empty if all passed), seconds)."""
    # a stale bytecode file of the mutated module must never be used
    shutil.rmtree(os.path.join(copy, "fastgd", "reference", "__pycache__"), ignore_errors=True)
    t0 = time.time()
    try:
        proc = subprocess.run([python, "-m", "pytest", *PYTEST_FLAGS, *args], cwd=copy, env=env_for(copy),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return ["(timeout after %d s)" % TIMEOUT], time.time() - t0
    dt = time.time() - t0
    if proc.returncode == 0:
        return [], dt
    if proc.returncode == 5:   # no tests collected: nothing ran, so nothing was killed
        raise RuntimeError("no tests collected by %s in %s:\n%s" % (args, copy, proc.stdout[-2000:]))
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.M)
    return failed or ["(pytest exit %d)\n%s" % (proc.returncode, proc.stdout[-1500:])], dt


def check_copy_is_used(python, copy):
    out = subprocess.run([python, "-c", "import fastgd.reference.rules as r; print(r.__file__)"], cwd=copy,
                         env=env_for(copy), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    path = out.stdout.strip()
    if not path.startswith(copy):
        raise RuntimeError("the copy's fastgd is not the one imported: %r" % path)


def run_stages(python, copy, stages):
    """The failing tests of the first stage run that fails (empty: none failed), seconds."""
    total = 0.0
    for args in stages:
        failed, dt = run_pytest(python, copy, args)
        total += dt
        if failed:
            return failed, total
    return [], total


def worker(python, jobs):
    """Run ``jobs`` (indices into MUTATIONS) one after the other in one private copy; returns
    [(index, stage-1 failures, stage-2 failures, seconds)]."""
    tmp = tempfile.mkdtemp(prefix="fastgd-mutation-")
    try:
        make_copy(tmp)
        check_copy_is_used(python, tmp)
        originals = {}
        for path in (TARGET, HALF_TARGET, TF_TARGET):
            with open(os.path.join(tmp, path)) as f:
                originals[path] = f.read()
        results = []
        for k in jobs:
            rule, what, old, new, count = MUTATIONS[k]
            path = target_of(rule)
            target = os.path.join(tmp, path)
            with open(target, "w") as f:
                f.write(mutate(originals[path], old, new, count))
            fail1, t1 = run_stages(python, tmp, stage1_of(rule))
            fail2, t2 = ([], 0.0)
            if not fail1 and rule not in ("half", "tf"):
                fail2, t2 = run_stages(python, tmp, STAGE2)
            with open(target, "w") as f:
                f.write(originals[path])
            results.append((k, fail1, fail2, t1 + t2))
            print("  [%2d] %-9s %-45s %s (%.1f s)" % (k, rule, what, "killed" if fail1 else "SURVIVED", t1 + t2),
                  file=sys.stderr, flush=True)
        return results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def baseline(python):
    tmp = tempfile.mkdtemp(prefix="fastgd-mutation-base-")
    try:
        make_copy(tmp)
        check_copy_is_used(python, tmp)
        for args in STAGE1 + STAGE2 + HALF_STAGE1 + TF_STAGE1:
            failed, dt = run_pytest(python, tmp, args)
            print("baseline %s: %s (%.1f s)" % (" ".join(args), "FAILED " + " ".join(failed) if failed else "passed",
                                                dt), file=sys.stderr, flush=True)
            if failed:
                return False
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable, help="interpreter with pytest, numpy, torch (default: this one)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel workers, each with its own copy (default 2)")
    ap.add_argument("--only", default="", help="comma-separated rules (prologue, sgd, adam, ...) to mutate")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run of the unmutated copy")
    args = ap.parse_args(argv)

    PACKAGE[0] = package_dir(args.python)
    sources = {}
    for path in (TARGET, HALF_TARGET, TF_TARGET):  # every pattern must match its file
        with open(os.path.join(os.path.dirname(PACKAGE[0]), path)) as f:
            sources[path] = f.read()
    for rule, what, old, new, count in MUTATIONS:
        mutate(sources[target_of(rule)], old, new, count)

    chosen = [k for k, m in enumerate(MUTATIONS) if not args.only or m[0] in args.only.split(",")]
    t0 = time.time()
    if not args.no_baseline and not baseline(args.python):
        print("the unmutated copy fails its tests: fix that first", file=sys.stderr)
        return 2
    jobs = max(1, min(args.jobs, len(chosen)))
    shares = [chosen[i::jobs] for i in range(jobs)]
    results = []
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for part in pool.map(lambda share: worker(args.python, share), shares):
            results.extend(part)
    results.sort()

    print("| rule | mutation | killed? | first failing test | failing tests: by hand / torch / Lion paper |")
    print("|---|---|---|---|---|")
    survivors = 0
    for k, fail1, fail2, dt in results:
        rule, what = MUTATIONS[k][:2]
        if fail1:
            killed, first = "yes", fail1[0]
        else:
            survivors += 1
            killed = "**NO**" if not fail2 else "**NO** (only by the compiled-vs-reference tests)"
            first = fail2[0] if fail2 else "-"
        kinds = "%d / %d / %d" % (sum("by_hand" in f for f in fail1), sum("torch" in f for f in fail1),
                                  sum("paper" in f for f in fail1))
        first = first.replace("tests/test_independent.py::", "")
        print("| %s | %s | %s | `%s` | %s |" % (rule, what.replace("|", "\\|"), killed, first.replace("|", "\\|"),
                                                kinds))
    print("\n%d mutations, %d killed by their independent oracle (test_independent.py; test_half.py for half; test_tf_vs_tensorflow.py for tf), %d surviving; %.0f s"
          % (len(results), len(results) - survivors, survivors, time.time() - t0))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
