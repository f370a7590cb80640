"""The compiled rule kernels re-check, where no other Python code can run, what their pointer
accesses rely on: fastgd checks every array first, but another Python thread can change one in
place (its dtype, its shape) between those checks and the kernel, because the GIL may switch
threads between two bytecodes of the checking code.  Here the Cython kernels are handed, as
such a thread would leave them, arrays that no longer pass (the same bytes as another dtype,
one element fewer, not contiguous, another float dtype, read-only): a RuntimeError, and nothing
written.  In a subprocess (tests/_subprocess_cases.py): a kernel without its re-check crashes
on these (seen: a build from before the re-checks segfaulted)."""
import pytest

from fastgd.backends import available_backends

import conftest
from _subprocess_cases import run_script

pytestmark = pytest.mark.skipif("cython" not in available_backends(), reason="the Cython backend is not built")

CODE = r'''
import sys
import numpy as np
import fastgd
import fastgd.multi as M
from fastgd import bench as B
from fastgd._rules import KERNELS as RULE_KERNELS
from fastgd.backends import backend_module

MODE = sys.argv[1]
BACKEND = sys.argv[2] if len(sys.argv) > 2 else "cython"
impl = backend_module(BACKEND)
n_ok = 0


def captured(call):
    """(kernel, args, kwargs) of the first kernel of BACKEND that call() reaches."""
    seen = []
    names = [k for k in dir(impl) if k.endswith("_multi") or k in RULE_KERNELS]
    orig = {k: getattr(impl, k) for k in names}

    def spy(name):
        def f(*a, **kw):
            seen.append((orig[name], a, kw))
            return orig[name](*a, **kw)
        return f
    for k in names:
        setattr(impl, k, spy(k))
    M._kernels.clear()  # (fastgd.multi caches the kernels it looked up)
    try:
        call()
    finally:
        for k in names:
            setattr(impl, k, orig[k])
        M._kernels.clear()
    return seen[0]


class Sub(np.ndarray):
    pass


def variants(a, written):
    out = [("another dtype, same bytes", a.view(np.int32) if a.itemsize == 4 else a.view(np.int16)),
           ("one element fewer", a[:-1]), ("not contiguous", np.repeat(a, 2)[::2]),
           ("another float dtype", a.astype(np.float64 if a.dtype == np.float32 else np.float32)),
           ("an ndarray subclass", a.view(Sub))]
    if written:
        ro = a.copy()
        ro.flags.writeable = False
        out.append(("read-only", ro))
    return out


def arrays(kernel, n, dtype):
    rng = np.random.default_rng(3)
    half = dtype in ("float16", "bfloat16")
    return B._cast(B._data(kernel, n, np.float32, rng), dtype, "float32" if half else dtype)


def check(label, kern, args, kw, mine):
    global n_ok
    before = [m.view(np.uint8).copy() for m in mine]
    try:
        kern(*args, **kw)
    except RuntimeError as e:
        if "changed after fastgd checked it" not in str(e):
            print("FAIL %s: %r" % (label, e))
            return
    except Exception as e:
        print("FAIL %s: %s(%r), expected RuntimeError" % (label, type(e).__name__, e))
        return
    else:
        print("FAIL %s: no RuntimeError" % label)
        return
    for m, b in zip(mine, before):
        if not np.array_equal(m.view(np.uint8), b):
            print("FAIL %s: an array was written" % label)
            return
    n_ok += 1


if MODE == "single":
    for kernel in B.KERNELS:
        for dtype in ("float32", "float64"):
            param, grad, states = arrays(kernel, 257, dtype)
            f, args, kw, reset = B.step_args(kernel, param, grad, states, BACKEND)
            kern, kargs, kkw = captured(lambda: f(*args, **kw))
            mine = [param, grad, *states]
            pos = [i for i, a in enumerate(kargs) if any(a is m for m in mine)]
            assert kern.__name__ in RULE_KERNELS and len(pos) == len(mine), (kernel, kern, pos)
            for i in pos:
                for what, bad in variants(kargs[i], kargs[i] is not grad):
                    a2 = list(kargs)
                    a2[i] = bad
                    check("%s %s arg %d: %s" % (kernel, dtype, i, what), kern, a2, kkw, mine)
else:
    dtypes = ["float32", "float64", "float16"]
    try:
        import ml_dtypes  # noqa: F401
        dtypes.append("bfloat16")
    except ImportError:
        pass
    for kernel in B.KERNELS:
        for dtype in dtypes:
            worlds = [arrays(kernel, n, dtype) for n in (257, 64)]
            lists = [[w[0] for w in worlds], [w[1] for w in worlds]]
            lists += [[w[2][k] for w in worlds] for k in range(len(worlds[0][2]))]
            f = getattr(M, kernel + "_step")
            hyper = B.KERNELS[kernel].hyper
            kern, kargs, kkw = captured(lambda: f(*lists, **hyper, backend="cython"))
            mine = [a for lst in lists for a in lst]
            pos = [i for i, a in enumerate(kargs) if isinstance(a, list) and a and any(a[0] is m for m in mine)]
            assert kern.__name__.endswith("_multi") and len(pos) == len(lists), (kernel, kern, pos)
            for i in pos:
                for what, bad in variants(kargs[i][1], i != 1):
                    a2 = list(kargs)
                    a2[i] = [kargs[i][0], bad]
                    check("%s %s list %d: %s" % (kernel, dtype, i, what), kern, a2, kkw, mine)
print("DONE", n_ok)
'''


@pytest.mark.parametrize("mode", ["single", "multi"])
def test_cython_rule_kernels_recheck_what_they_rely_on(mode):
    run_script(CODE, mode, min_ok=200)


@pytest.mark.parametrize("backend", [conftest._backend_param("numba")])
def test_numba_rule_kernels_recheck_what_they_rely_on(backend):
    """The same for the numba kernels (fastgd._numba.rules._views): a numba loop indexes every
    array up to param's size with no bounds check, so the same changed arrays must be a
    RuntimeError before it runs.  (Its multi-tensor steps call these same single-array
    kernels.)"""
    run_script(CODE, "single", min_ok=200, extra_args=[backend])
