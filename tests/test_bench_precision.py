"""``python -m fastgd.bench --precision`` runs (tiny sizes, structure not speed), the bytes
per element it prints are the issue's, and the kernel table both benchmark harnesses share
(``python -m fastgd.bench`` and the pytest-benchmark suites of bench/) is the rule table's."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastgd
from fastgd import bench
from fastgd._rules import RULES


def test_bytes_per_element():
    # issue #10: Adam moves 28 bytes per element in float32, 22 with bfloat16 params and grads and
    # float32 moments, 14 in bfloat16; a clip reads the gradient once more (32)
    assert [bench.combo_bytes("adam", pd, sd) for _, pd, sd in bench.COMBOS] == [28, 22, 14, 22, 14]
    assert bench.combo_bytes("sgd", "bfloat16", "float32") == 2 + 4 + 8
    assert bench.extra_bytes("adam", "clipped") == 32 and bench.extra_bytes("adam", "scaled") == 28


def test_kernel_table_is_the_rule_table():
    assert list(bench.KERNELS) == list(RULES)
    # the state arrays the bench's options use: SGD's momentum buffer (momentum 0.9), not Adam's
    # AMSGrad maximum, not NAdam's scalar product, not RMSprop's centered average
    assert bench.KERNELS["sgd"].states == ("momentum_buffer",)
    assert bench.KERNELS["adam"].states == ("exp_avg", "exp_avg_sq")
    assert bench.KERNELS["nadam"].states == ("exp_avg", "exp_avg_sq")
    assert bench.KERNELS["rmsprop"].states == ("square_avg",)
    assert bench.KERNELS["sgd"].hyper == {"lr": 1e-3, "momentum": 0.9}   # (no step: SGD's is optional)
    assert bench.KERNELS["adam"].hyper == {"step": bench.STEP} and bench.KERNELS["lion"].hyper == {}
    assert bench.KERNELS["sgd"].torch == ("SGD", {"lr": 1e-3, "momentum": 0.9}, True)
    assert bench.KERNELS["nadam"].torch == ("NAdam", {}, False) and bench.KERNELS["lion"].torch is None
    # the bytes of the pytest suites and of the report: Adam float32 28, float64 56, SGD float32 20
    assert bench.combo_bytes("adam", np.float64, np.float64) == 56
    assert bench.combo_bytes("sgd", "float32", "float32") == 20


def test_step_args_run_the_public_step():
    """One step through ``step_args`` equals the public call; NAdam's product is put back."""
    grad, param0 = bench.seeded_arrays(np.float32, 50)
    assert np.array_equal(grad, bench.seeded_arrays("float32", 50)[0])   # seeded: the same data again
    for name in ("sgd", "nadam"):
        states = [np.zeros_like(param0) for _ in bench.KERNELS[name].states]
        param = param0.copy()
        f, args, kwargs, reset = bench.step_args(name, param, grad, states, "numpy")
        f(*args, **kwargs)
        want, want_states = param0.copy(), [np.zeros_like(param0) for _ in states]
        extra = {}
        if name == "nadam":
            extra["mu_product"] = np.array([fastgd.nadam_mu_product(bench.STEP - 1)])
            assert kwargs["mu_product"][0] != extra["mu_product"][0]   # updated by the call ...
            reset()
            assert kwargs["mu_product"][0] == extra["mu_product"][0]   # ... and put back
        getattr(fastgd, name + "_step")(want, grad, *want_states, backend="numpy", **bench.KERNELS[name].hyper,
                                        **extra)
        np.testing.assert_array_equal(param, want)
        for got, exp in zip(states, want_states):
            np.testing.assert_array_equal(got, exp)


def test_tables_and_size_labels():
    assert [bench.size_label(n) for n in (1000, 100, 16_000_000, 64_000_000, 10_000)] == [
        "1e3", "1e2", "1.6e7", "6.4e7", "1e4"]
    assert bench.table_lines(["a", "bb"], [["1", ""]], align=["l", "r"]) == ["| a | bb |", "|---|---:|", "| 1 |  |"]
    assert bench.table_lines(["k", "n"], [["x", "1"], ["y", "22"]], markdown=False, group_cols=1) == [
        "k  n", "-  --", "x  1", "", "y  22"]


def test_targets_are_judged_only_at_their_sizes():
    row = {"kernel": "adam", "combo": "bf16", "size": 16_000_000, "backend": "cython", "of_skeleton": 0.97,
           "vs_float32": 0.55}
    judged = bench.targets([row, dict(row, size=1000, of_skeleton=0.1)], [])
    assert [t["met"] for t in judged] == [True, True]
    assert "1 of 1" in judged[0]["where"]
    assert bench.targets([dict(row, size=1000)], []) == []


def test_bench_precision_smoke(tmp_path):
    pytest.importorskip("ml_dtypes")
    out = tmp_path / "p.json"
    env = dict(os.environ, FASTGD_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "fastgd.bench", "--precision", "--sizes", "100,2000", "--kernels",
                        "adam,nadam", "--budget", "0.01", "--json", str(out), "--threads", "1"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "| adam | bfloat16 | float32 | 1e2 | cython | 22 |" in r.stdout
    assert "| adam | float32 | 2e3 | cython | clipped | 32 |" in r.stdout
    data = json.loads(out.read_text())
    assert not data["rows"] and not data["multi"]
    assert {(p["kernel"], p["combo"]) for p in data["precision"]} == {
        (k, c[0]) for k in ("adam", "nadam") for c in bench.COMBOS}
    assert all(p["seconds"] > 0 and p["of_skeleton"] > 0 for p in data["precision"])
    assert all(p["vs_float32"] == 1.0 for p in data["precision"] if p["combo"] == "float32")
    assert {e["variant"] for e in data["extras"]} == set(bench.EXTRAS)
