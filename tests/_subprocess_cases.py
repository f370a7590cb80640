"""Shared by the subprocess bad-input tests of test_dense_kernels.py and test_nn.py: the
harness code a fresh interpreter runs (``HELPERS``, prepended to each script) and
``run_script``, which runs one and turns a crash or a FAIL line into a failed test."""
import os
import subprocess
import sys

import fastgd

HELPERS = r'''
import re, sys
import numpy as np
import fastgd
from fastgd import nn

BACKEND = sys.argv[1]
n_ok = 0


def case(label, exc, match, fn, *watched):
    global n_ok
    before = [np.array(a, copy=True) for a in watched]
    try:
        fn()
    except exc as e:
        if not re.search(match, str(e)):
            print("FAIL %s: %s(%r) does not match %r" % (label, type(e).__name__, str(e), match))
            return
    except Exception as e:
        print("FAIL %s: %s(%r), expected %s" % (label, type(e).__name__, str(e), exc.__name__))
        return
    else:
        print("FAIL %s: no exception, expected %s" % (label, exc.__name__))
        return
    for i, (a, b) in enumerate(zip(watched, before)):
        if not np.array_equal(np.asarray(a), b, equal_nan=True):
            print("FAIL %s: watched array %d was written" % (label, i))
            return
    n_ok += 1
    print("ok", label, flush=True)


def unaligned(a):
    """A copy of ``a`` whose data starts one byte past an aligned address."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    u = buf[1:].view(a.dtype).reshape(a.shape)
    u[...] = a
    assert not u.flags.aligned and u.flags.c_contiguous
    return u


def swapped(a):
    """The same values with the other byte order."""
    return a.astype(a.dtype.newbyteorder())


def masked(a):
    return np.ma.masked_array(a, mask=np.zeros(a.shape, bool))
'''


def run_script(code, backend, min_ok=0, extra_args=()):
    """Run ``code`` with argv[1] = backend (argv[2:] = extra_args) in a fresh interpreter; a
    crash is a failed test.
    It runs in the directory that holds the fastgd package this process imported, so ``-c``'s
    sys.path[0] (the working directory) finds that same package.  The script prints "ok ..."
    or "FAIL ..." per case and "DONE <n ok>" at the end."""
    home = os.path.dirname(os.path.dirname(os.path.abspath(fastgd.__file__)))
    proc = subprocess.run([sys.executable, "-c", code, backend, *extra_args], env=os.environ, cwd=home,
                          capture_output=True, text=True, timeout=600)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, "exit status %d (a crash?) after:\n%s\n%s" % (proc.returncode,
                                                                               "\n".join(lines[-5:]),
                                                                               proc.stderr[-3000:])
    fails = [line for line in lines if line.startswith("FAIL")]
    assert not fails, "\n".join(fails)
    assert lines and lines[-1].startswith("DONE") and int(lines[-1].split()[1]) >= min_ok, \
        proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout
