"""How long the numba backend's first call takes in a new process (numba's cache warm).

    python tools/numba_first_call.py [--runs 7]

Each run is a fresh interpreter that imports fastgd, then times (1) ``import numba``, (2)
``numba.np.arraymath``, the registry numba loads before it can load any cached function (it
imports SciPy's BLAS when SciPy is installed: numba's ``_check_blas``), and (3) the first
``fastgd.adam_step(..., backend="numba")`` call after that (fastgd's part: finding and loading
the cached kernel).  The first run also fills numba's cache if it is empty; it is reported
apart.  Prints the median of the other runs.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

_CHILD = r"""
import json, sys, time
import numpy as np, fastgd
t0 = time.perf_counter()
import numba
t1 = time.perf_counter()
import numba.np.arraymath
t2 = time.perf_counter()
p = np.ones(1000, np.float32)
fastgd.adam_step(p, p.copy(), np.zeros_like(p), np.zeros_like(p), step=1, backend="numba")
t3 = time.perf_counter()
print(json.dumps({"import numba": t1 - t0, "numba registries": t2 - t1, "fastgd kernel": t3 - t2,
                  "total": t3 - t0, "scipy": "scipy" in sys.modules}))
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args(argv)
    env = dict(os.environ)
    rows = []
    for _ in range(args.runs + 1):
        out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout))
    first, rest = rows[0], rows[1:]
    print("first run (fills numba's cache if empty): total %.3f s" % first["total"])
    print("median of %d runs, numba cache warm (SciPy imported by numba: %s):" % (len(rest), rest[0]["scipy"]))
    for key in ("import numba", "numba registries", "fastgd kernel", "total"):
        print("  %-18s %.3f s" % (key, statistics.median(r[key] for r in rest)))


if __name__ == "__main__":
    main()
