"""``python -m fastgd.bench --precision`` runs (tiny sizes, structure not speed), and the bytes
per element it prints are the issue's."""
import json
import os
import subprocess
import sys

import pytest

from fastgd import bench


def test_bytes_per_element():
    # issue #10: Adam moves 28 bytes per element in float32, 22 with bfloat16 params and grads and
    # float32 moments, 14 in bfloat16; a clip reads the gradient once more (32)
    assert [bench.combo_bytes("adam", pd, sd) for _, pd, sd in bench.COMBOS] == [28, 22, 14, 22, 14]
    assert bench.combo_bytes("sgd", "bfloat16", "float32") == 2 + 4 + 8
    assert bench.extra_bytes("adam", "clipped") == 32 and bench.extra_bytes("adam", "scaled") == 28


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
