"""Summarise a fastgd benchmark run: median, speedup over the NumPy reference, GB/s, and the
fraction of the same backend's copy-skeleton bandwidth measured in the same run.

    python bench/report.py --run [--quick] [--all] [--markdown] [-- PYTEST_ARGS...]   run, then report
    python bench/report.py [--json FILE] [--markdown]                               report a saved run

``--run`` runs bench/test_bench_steps.py (``--all``: every suite in bench/) and writes
bench/results/<date-time>.json (or ``--json FILE``); without ``--run`` or ``--json`` the newest
bench/results/*.json is read.  Arguments after ``--`` go to pytest (e.g. ``-- -k adam``).
"""
import argparse
import datetime
import glob
import json
import os
import signal
import subprocess
import sys

from fastgd.bench import BACKENDS, machine_summary, size_label, table_lines

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
RESULTS = os.path.join(BENCH, "results")
REFERENCE = BACKENDS[0]   # numpy: the speedups are over it
CYTHON_1E3_TARGET_US = 3.0   # the target for one cython call on 1e3 float32 elements
STEP_KEYS = {"kernel", "backend", "kind", "dtype", "n", "bytes_moved"}  # test_bench_steps.py's extra_info


def fmt_time(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return "%.2f us" % (s * 1e6)
    if s < 1.0:
        return "%.3f ms" % (s * 1e3)
    return "%.3f s" % s


def fmt(x, spec, suffix=""):
    return "-" if x is None else (spec % x) + suffix


# ---------------------------------------------------------------------------------------
# running and loading

def run_suite(json_path, quick, run_all, pytest_args, precision=False):
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    target = BENCH if run_all else os.path.join(BENCH, "test_bench_precision.py" if precision
                                                else "test_bench_steps.py")
    cmd = [sys.executable, "-m", "pytest", target, "-q", "--benchmark-json=" + json_path]
    if quick:
        cmd.append("--quick")
    cmd += pytest_args
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    sys.stderr.flush()
    # cwd=bench/: `python -m pytest` puts its cwd first on sys.path, and from the checkout's root
    # that would import the uncompiled source tree instead of the installed package.
    rc = subprocess.call(cmd, cwd=BENCH, stdout=sys.stderr)  # stdout stays the report (e.g. > table.md)
    if rc not in (0, 5):
        print("pytest exited with status %d; reporting what was measured" % rc, file=sys.stderr)
    return rc


def newest_result():
    files = sorted(glob.glob(os.path.join(RESULTS, "*.json")), key=os.path.getmtime)
    return files[-1] if files else None


def load(path):
    with open(path) as f:
        return json.load(f)


def collect(data):
    """{(kernel, dtype, n): {backend: {"step": bench, "skeleton": bench}}} from the JSON."""
    table = {}
    for b in data.get("benchmarks", []):
        info = b.get("extra_info") or {}
        if not STEP_KEYS <= info.keys() or info["kind"] not in ("step", "skeleton"):
            continue  # another suite's benchmark (bench/test_bench_dense.py, ...)
        key = (info["kernel"], info["dtype"], int(info["n"]))
        table.setdefault(key, {}).setdefault(info["backend"], {})[info["kind"]] = b
    return table


def kernel_order(data):
    """Kernels in the order the suite ran them."""
    seen = []
    for b in data.get("benchmarks", []):
        k = (b.get("extra_info") or {}).get("kernel")
        if k and k not in seen:
            seen.append(k)
    return seen


def rows(data):
    """One row per (kernel, dtype, n, backend) with the derived figures."""
    table = collect(data)
    korder = {k: i for i, k in enumerate(kernel_order(data))}
    out = []
    for (kernel, dtype, n) in sorted(table, key=lambda k: (korder.get(k[0], 99), k[1] != "float32", k[2])):
        by_backend = table[(kernel, dtype, n)]
        ref = by_backend.get(REFERENCE, {}).get("step")
        ref_median = ref["stats"]["median"] if ref else None
        backends = sorted(by_backend, key=lambda b: BACKENDS.index(b) if b in BACKENDS else 99)
        for backend in backends:
            step = by_backend[backend].get("step")
            if step is None:
                continue
            skel = by_backend[backend].get("skeleton")
            median = step["stats"]["median"]
            nbytes = step["extra_info"]["bytes_moved"]
            gbs = nbytes / median / 1e9
            skel_gbs = nbytes / skel["stats"]["median"] / 1e9 if skel else None
            out.append({
                "kernel": kernel, "dtype": dtype, "n": n, "backend": backend, "median": median,
                "bytes_per_element": nbytes // n,
                "speedup": (ref_median / median) if ref_median else None, "gbs": gbs, "skel_gbs": skel_gbs,
                "of_skel": (gbs / skel_gbs) if skel_gbs else None,
                "iqr": step["stats"].get("iqr", 0.0) / median, "rounds": step["stats"].get("rounds"),
                "threads": step["extra_info"].get("threads_used"),
            })
    return out


# ---------------------------------------------------------------------------------------
# printing

def print_table(header, body, markdown, align=None, group_cols=0):
    """fastgd.bench.table_lines, printed."""
    print("\n".join(table_lines(header, body, markdown, align, group_cols)))


def machine_lines(data, markdown=False):
    """From the JSON (what the run recorded); falls back to this machine."""
    mi = (data.get("machine_info") or {}).get("fastgd")
    source = "recorded by the run"
    if mi is None:
        mi = machine_summary()
        source = "this machine; the JSON has no fastgd machine info"
    bi = mi.get("build_info", {})
    feats = bi.get("cpu_features") or {}
    lines = [
        "machine (%s):" % source,
        "  CPU: %s, %s cores (%s usable)" % (mi.get("cpu_model"), mi.get("cores"), mi.get("usable_cores")),
        "  fastgd %s: compiler %s, OpenMP %s, SIMD variant %s (CPU: %s)" % (
            bi.get("version"), bi.get("compiler"), "on" if bi.get("openmp") else "off", bi.get("simd_variant"),
            ", ".join(k for k, v in feats.items() if v) or "baseline"),
        "  threads: %s (serial below %s elements), numba %s with %s threads; numpy %s, python %s" % (
            mi.get("bench_threads", bi.get("num_threads")), bi.get("serial_cutoff"), bi.get("numba"),
            mi.get("bench_numba_threads"), bi.get("numpy"), bi.get("python")),
    ]
    run = data.get("fastgd_bench") or {}
    if data.get("datetime") or run:
        lines.append("  run: %s, %s, budget %ss per benchmark, state reset per round up to %s elements" % (
            data.get("datetime", "?"), "quick sizes" if run.get("quick") else "all sizes", run.get("budget"),
            run.get("reset_max")))
    loads = [b["extra_info"]["loadavg"] for b in data.get("benchmarks", [])
             if (b.get("extra_info") or {}).get("loadavg") is not None]
    if loads:
        cores = mi.get("usable_cores") or mi.get("cores") or 1
        lines.append("  load average (1 min) at benchmark starts: %.1f to %.1f on %s cores (the run itself adds "
                     "1-2)%s" % (min(loads), max(loads), cores,
                                 "; WARNING: other processes used the cores, threaded timings are unreliable"
                                 if max(loads) > cores + 0.5 else ""))
    if markdown:
        lines = ["**%s**" % lines[0]] + ["- " + line.strip() for line in lines[1:]]
    return lines


def extras(data):
    """test_bench_precision.py's fused extras: one row per (kernel, n, backend, variant), with
    the ratio of its median to the plain step's of the same group (medians taken seconds
    apart: ``python -m fastgd.bench --precision`` measures the same ratios in rounds)."""
    by = {}
    for b in data.get("benchmarks", []):
        info = b.get("extra_info") or {}
        if info.get("kind") == "extra":
            by[(info["kernel"], int(info["n"]), info["backend"], info["variant"])] = b
    out = []
    for (kernel, n, backend, variant), b in by.items():
        plain = by.get((kernel, n, backend, "plain"))
        median = b["stats"]["median"]
        out.append({"kernel": kernel, "n": n, "backend": backend, "variant": variant, "median": median,
                    "bytes_per_element": b["extra_info"].get("bytes_per_element"),
                    "iqr": b["stats"].get("iqr", 0.0) / median,
                    "vs_plain": median / plain["stats"]["median"] if plain else None})
    return out


def report_precision(rs, xs, markdown):
    """The dtype combinations (test_bench_precision.py; ``dtype`` is ``<param>/<state>``): bytes
    per element, median, fraction of the skeleton of the same bytes, time over the float32
    step's of the same kernel, size and backend; then the fused extras."""
    if rs:
        f32 = {(r["kernel"], r["n"], r["backend"]): r["median"] for r in rs if r["dtype"] == "float32/float32"}
        print()
        print("Dtype combinations (params and grads / state): bytes per element, median, fraction of the "
              "skeleton of the same bytes (cython's half_skeleton for 2-byte params), time / float32's:")
        print()
        header = ["kernel", "n", "backend", "params/state", "B/elem", "median", "IQR", "of skeleton", "vs float32"]
        body = []
        korder = {k: i for i, k in enumerate(dict.fromkeys(r["kernel"] for r in rs))}
        border = {b: i for i, b in enumerate(BACKENDS)}
        # (a stable sort: the combinations stay in the suite's order)
        for r in sorted(rs, key=lambda r: (korder[r["kernel"]], r["n"], border.get(r["backend"], 99))):
            ref = f32.get((r["kernel"], r["n"], r["backend"]))
            body.append([r["kernel"], size_label(r["n"]), r["backend"], r["dtype"], fmt(r["bytes_per_element"], "%d"),
                         fmt_time(r["median"]), fmt(100 * r["iqr"], "%.0f", "%"),
                         fmt(None if r["of_skel"] is None else 100 * r["of_skel"], "%.0f", "%"),
                         fmt(None if ref is None else r["median"] / ref, "%.2f")])
        print_table(header, body, markdown, ["l", "r", "l", "l", "r", "r", "r", "r", "r"], group_cols=3)
    if xs:
        print()
        print("Fused extras, float32 (ratios of medians to the plain step of the same backend and size):")
        print()
        header = ["kernel", "n", "backend", "variant", "B/elem", "median", "IQR", "vs plain"]
        body = [[x["kernel"], size_label(x["n"]), x["backend"], x["variant"], fmt(x["bytes_per_element"], "%d"),
                 fmt_time(x["median"]), fmt(100 * x["iqr"], "%.0f", "%"), fmt(x["vs_plain"], "%.2f")] for x in xs]
        print_table(header, body, markdown, ["l", "r", "l", "l", "r", "r", "r", "r"], group_cols=3)


def report(data, markdown):
    for line in machine_lines(data, markdown):
        print(line)
    print()
    allrows = rows(data)
    xs = extras(data)
    rs = [r for r in allrows if "/" not in r["dtype"]]
    prs = [r for r in allrows if "/" in r["dtype"]]
    if not rs and not prs and not xs:
        print("no fastgd benchmarks in this JSON")
        return
    if not rs:
        report_precision(prs, xs, markdown)
        return
    header = ["kernel", "dtype", "n", "backend", "median", "IQR", "vs numpy", "GB/s", "skeleton GB/s",
              "of skeleton"]
    body = [[r["kernel"], r["dtype"], size_label(r["n"]), r["backend"], fmt_time(r["median"]),
             fmt(100 * r["iqr"], "%.0f", "%"),
             fmt(r["speedup"], "%.1f", "x"), fmt(r["gbs"], "%.1f"), fmt(r["skel_gbs"], "%.1f"),
             fmt(None if r["of_skel"] is None else 100 * r["of_skel"], "%.0f", "%")] for r in rs]
    print("Median time per step; GB/s = bytes moved / median (bytes = itemsize * n * (reads + writes));")
    print("'of skeleton' = this backend's GB/s over its copy_skeleton's GB/s at the same size, same run;")
    print("IQR = interquartile range of the rounds over the median (large: the machine was busy).")
    print()
    print_table(header, body, markdown, ["l", "l", "r", "l", "r", "r", "r", "r", "r", "r"], group_cols=3)

    small = [r for r in rs if r["n"] == 1000 and r["dtype"] == "float32"]
    if small:
        print()
        print("Per-call time at 1e3 float32 elements, us (the public call, validation included; "
              "target for cython: <= %g us):" % CYTHON_1E3_TARGET_US)
        print()
        backends = [b for b in BACKENDS if any(r["backend"] == b for r in small)]
        by = {(r["kernel"], r["backend"]): r["median"] for r in small}
        kernels = []
        for r in small:
            if r["kernel"] not in kernels:
                kernels.append(r["kernel"])
        body = []
        for k in kernels:
            cells = [k] + [fmt(None if by.get((k, b)) is None else by[(k, b)] * 1e6, "%.2f") for b in backends]
            if "cython" in backends:
                c = by.get((k, "cython"))
                cells.append("-" if c is None else ("met" if c * 1e6 <= CYTHON_1E3_TARGET_US else "missed"))
            body.append(cells)
        header = ["kernel"] + backends + (["cython <= %g us" % CYTHON_1E3_TARGET_US] if "cython" in backends else [])
        print_table(header, body, markdown, ["l"] + ["r"] * len(backends) + ["l"])
    report_precision(prs, xs, markdown)


def main(argv=None):
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `report.py | head` ends quietly
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args = []
    if "--" in argv:
        i = argv.index("--")
        argv, pytest_args = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="benchmark JSON to read (with --run: to write)")
    ap.add_argument("--run", action="store_true",
                    help="run the suite first (pytest bench/test_bench_steps.py --benchmark-json=...)")
    ap.add_argument("--quick", action="store_true", help="with --run: sizes 1e3 and 1e5 only")
    ap.add_argument("--all", action="store_true",
                    help="with --run: every suite in bench/, not only test_bench_steps.py (this report "
                         "covers the step kernels; the others' results stay in the JSON)")
    ap.add_argument("--precision", action="store_true",
                    help="with --run: bench/test_bench_precision.py instead (the dtype combinations and the fused "
                         "extras)")
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = ap.parse_args(argv)

    if not args.run and (args.quick or args.all or args.precision or pytest_args):
        ap.error("--quick, --all, --precision and pytest arguments only apply with --run")
    path = args.json
    if args.run:
        if path is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            path = os.path.join(RESULTS, "%s%s.json" % (stamp, "-quick" if args.quick else ""))
        run_suite(path, args.quick, args.all, pytest_args, args.precision)
        if not os.path.exists(path):
            print("no JSON was written (%s)" % path, file=sys.stderr)
            return 1
    elif path is None:
        path = newest_result()
        if path is None:
            print("no JSON given and none in %s; use --run or --json FILE" % RESULTS, file=sys.stderr)
            return 1
    print("results: %s" % os.path.relpath(path))
    report(load(path), args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
