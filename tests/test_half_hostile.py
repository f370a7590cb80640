"""Regressions of a hostile review of the half-precision work, each in a fresh interpreter
(a crash fails the test instead of ending the run): the caller's code that the extras' checks
run (``float()`` of a number type, a list type's ``__iter__``) cannot change an array between
the array checks and the kernel; found_inf and mu_product may not overlap what the call
writes; a dtype that only calls itself bfloat16 is refused; a grad_scale below 1 with
max_norm keeps the spec's overflow."""
import pytest

from _subprocess_cases import HELPERS, run_script

SCRIPT = HELPERS + r'''
import ml_dtypes
import fastgd.multi as M
BF = ml_dtypes.bfloat16
n = 1 << 20

def arrays(state=BF):
    return np.ones(n, BF), np.ones(n, BF), np.zeros(n, state), np.zeros(n, state)

# 1. a number whose __float__ shrinks an array (same bytes, half the elements as float32)
p, g, m, v = arrays()
class Evil(float):
    def __float__(self):
        m.dtype = np.float32
        return 3.0
case("grad_scale __float__ changes a dtype", ValueError, "shape", lambda: fastgd.adam_step(
    p, g, m, v, step=1, grad_scale=Evil(3.0), backend=BACKEND), p, g, v)
p, g, m, v = arrays()
class Evil2(float):
    def __float__(self):
        m.dtype = np.float32
        return 1.0
case("max_norm __float__ changes a dtype", ValueError, "shape", lambda: M.adam_step(
    [p], [g], [m], [v], step=1, max_norm=Evil2(1.0), backend=BACKEND), p, g, v)

# 2. a master list whose __iter__ changes an array
p, g, m, v = arrays()
master = np.ones(n, np.float32)
class EvilList(list):
    def __iter__(self):
        m.dtype = np.float32
        return list.__iter__(self)
case("master_params __iter__ changes a dtype", ValueError, "shape", lambda: M.adam_step(
    [p], [g], [m], [v], step=1, master_params=EvilList([master]), backend=BACKEND), p, g, v, master)

# 3. unscale_and_check / global_norm with a scale whose __float__ changes a gradient's dtype
gg = np.ones(n, BF)
fi = np.zeros(1, np.float32)
class Evil3(float):
    def __float__(self):
        gg.dtype = np.int8
        return 2.0
case("unscale_and_check scale __float__", TypeError, "grads\[0\]", lambda: M.unscale_and_check(
    [gg], Evil3(2.0), fi, backend=BACKEND), fi)
gg = np.ones(n, BF)
case("global_norm grad_scale __float__", TypeError, "grads\[0\]", lambda: M.global_norm(
    [gg], grad_scale=Evil3(2.0), backend=BACKEND))

# 4. found_inf inside an array the call writes; mu_product inside the master
p, g, m, v = arrays(np.float32)
case("found_inf overlaps exp_avg", ValueError, "found_inf", lambda: fastgd.nadam_step(
    p, g, m, v, np.ones(1), step=1, found_inf=m[:1], backend=BACKEND), p, g, m, v)
case("found_inf overlaps exp_avgs[0] (multi)", ValueError, "found_inf", lambda: M.adam_step(
    [p], [g], [m], [v], step=1, found_inf=m[:1], backend=BACKEND), p, g, m, v)
p, g, m, v = arrays(np.float32)
master = np.ones(n, np.float32)
mu = master[2:4].view(np.float64)
mu[0] = 0.5
case("mu_product overlaps master_param", ValueError, "mu_product and master_param", lambda: fastgd.nadam_step(
    p, g, m, v, mu, step=2, master_param=master, backend=BACKEND), p, g, m, v, master)
case("mu_product overlaps master_params[0]", ValueError, "mu_product and master_params", lambda: M.nadam_step(
    [p], [g], [m], [v], mu, step=2, master_params=[master], backend=BACKEND), p, g, m, v, master)

# 5. a void dtype that calls itself bfloat16 (numpy names it from the class: "bfloat" + 16 bits)
class bfloat(np.void):
    pass
bfloat.__module__ = "ml_dtypes"
fake = np.dtype((bfloat, "V2"))
assert fake.name == "bfloat16", fake.name
fp = np.ones(8, BF).view(fake)
fg = np.ones(8, BF).view(fake)
fm, fv = np.zeros(8, np.float32), np.zeros(8, np.float32)
case("a fake bfloat16 dtype", TypeError, "param", lambda: fastgd.adam_step(
    fp, fg, fm, fv, step=1, backend=BACKEND), fp.view(np.uint16), fg.view(np.uint16), fm, fv)

print("DONE", n_ok)
'''


MODULES = HELPERS + r'''
import types
import ml_dtypes
import fastgd.multi as M
BF = ml_dtypes.bfloat16
real = sys.modules["ml_dtypes"]

def bf_arrays():
    return np.ones(64, BF), np.ones(64, BF), np.zeros(64, np.float32), np.zeros(64, np.float32)

def watched(arrs):
    return [a.view(np.uint16) if a.itemsize == 2 else a for a in arrs]

a = bf_arrays()
fastgd.adam_step(*a, step=1, backend=BACKEND)  # bfloat16 known (the C accepts' type number cached)
# 1. ml_dtypes replaced in sys.modules: bfloat16 is no longer "the" bfloat16, in C as in Python
sys.modules["ml_dtypes"] = types.ModuleType("ml_dtypes")
a = bf_arrays()
case("ml_dtypes replaced", TypeError, "param must have dtype", lambda: fastgd.adam_step(
    *a, step=1, backend=BACKEND), *watched(a))
case("ml_dtypes replaced (multi)", TypeError, "must have dtype", lambda: M.adam_step(
    *[[x] for x in a], step=1, backend=BACKEND), *watched(a))
del sys.modules["ml_dtypes"]
case("ml_dtypes removed", TypeError, "param must have dtype", lambda: fastgd.adam_step(
    *a, step=1, backend=BACKEND), *watched(a))
sys.modules["ml_dtypes"] = real
fastgd.adam_step(*a, step=1, backend=BACKEND)
if not np.any(a[2]):
    print("FAIL: ml_dtypes back: bfloat16 not stepped")

# 2. a module whose attribute lookup raises (a lazy proxy whose import failed): no bfloat16,
# and calls without bfloat16 arrays go on as usual
class Broken(types.ModuleType):
    def __getattr__(self, name):
        raise ImportError("broken lazy module")
sys.modules["ml_dtypes"] = Broken("ml_dtypes")
ps = [np.ones(100, np.float32)]
try:
    M.sgd_step(ps, [np.ones(100, np.float32)], lr=0.5, backend=BACKEND)
    M.global_norm(ps, backend=BACKEND)
    fastgd.sgd_step(np.ones(8, np.float16), np.ones(8, np.float16), lr=0.5, backend=BACKEND)
    n_ok += 1
except Exception as e:
    print("FAIL broken ml_dtypes: %s(%s)" % (type(e).__name__, e))
a = bf_arrays()
case("bfloat16 with a broken ml_dtypes", TypeError, "param must have dtype", lambda: fastgd.adam_step(
    *a, step=1, backend=BACKEND), *watched(a))

# 3. a module whose bfloat16 is a dtype of numpy's own
fake = types.ModuleType("ml_dtypes")
fake.bfloat16 = np.int16
sys.modules["ml_dtypes"] = fake
q = (np.arange(8, dtype=np.int16), np.ones(8, np.int16), np.zeros(8, np.float32), np.zeros(8, np.float32))
case("int16 named bfloat16", TypeError, "param must have dtype", lambda: fastgd.adam_step(
    *q, step=1, backend=BACKEND), *q)
case("int16 named bfloat16 (multi)", TypeError, "must have dtype", lambda: M.adam_step(
    *[[x] for x in q], step=1, backend=BACKEND), *q)
sys.modules["ml_dtypes"] = real
print("DONE", n_ok)
'''


@pytest.mark.parametrize("backend", ["cython", "numba", "numpy"])
def test_ml_dtypes_module_swapped_or_broken(backend):
    """bfloat16 is the type ``sys.modules["ml_dtypes"].bfloat16`` holds at the call, for the C
    fast accepts (whose cached type number follows the module) as for the Python checks: a
    replaced or removed module makes bfloat16 arrays refused, a module whose lookups raise means
    "no bfloat16" (and no error for other calls), a dtype of numpy's own named so is refused."""
    from fastgd.backends import available_backends
    if backend not in available_backends():
        pytest.skip("backend %s not available" % backend)
    run_script(MODULES, backend, min_ok=7)


@pytest.mark.parametrize("backend", ["cython", "numba", "numpy"])
def test_hostile_inputs(backend):
    from fastgd.backends import available_backends
    if backend not in available_backends():
        pytest.skip("backend %s not available" % backend)
    run_script(SCRIPT, backend, min_ok=10)


def test_power_of_two_scale_below_one_with_max_norm_overflows_like_the_spec():
    """(g / 0.5) * c overflows to inf for g = 3e38; folding the scale and the clip into one
    factor would not: below 1 the scale is never folded."""
    import numpy as np
    import fastgd.multi as M
    out = []
    for b in ("cython", "numpy"):
        p = np.zeros(2, np.float32)
        g = np.array([3e38, 1.0], np.float32)
        with np.errstate(all="ignore"):
            M.sgd_step([p], [g], lr=1.0, grad_scale=0.5, max_norm=1e38, backend=b)
        out.append(p)
    assert np.isinf(out[1][0])
    assert np.array_equal(out[0].view(np.uint32), out[1].view(np.uint32))
