"""fastgd.tf with bad input, in a fresh interpreter per backend (a crash fails the test instead
of ending the run): every case raises the named TypeError/ValueError, naming the argument, and
writes nothing (var, the slots and the caller's indices are compared before and after)."""
import pytest

from _subprocess_cases import HELPERS, run_script

CASES = r'''
import math
import fastgd.tf as T
from fastgd._rules import TF_OPS

POS = {"accum", "accum_update", "v", "vhat", "ms", "gradient_squared_accumulator"}
SC = {"alpha": 0.1, "l1": 0.01, "l2": 0.02, "lr": 0.05, "rho": 0.9, "epsilon": 1e-7, "momentum": 0.9,
      "beta1_power": 0.729, "beta2_power": 0.997, "beta1": 0.9, "beta2": 0.999, "lr_power": -0.5,
      "l2_shrinkage": 0.01, "logbase": 0.69, "sign_decay": 0.99, "beta": 0.9}


def inputs(op, dtype=np.float32, shape=(6, 3), n=4):
    rng = np.random.default_rng(0)
    d = {}
    for a in op.arrays:
        s = ((n,) + shape[1:]) if (a == op.grad and op.sparse) else shape
        d[a] = (rng.uniform(0.1, 1, s) if a in POS else rng.standard_normal(s)).astype(dtype)
    for s in op.scalars:
        d[s] = SC[s]
    if op.has_step:
        d["global_step"] = 3
    if op.sparse:
        d["indices"] = np.array([0, 5, 5, 2][:n], np.int64)
    return d


def run(op, d):
    return getattr(T, op.name)(**d, backend=BACKEND)


def bad(label, exc, match, op, **changes):
    d = inputs(op)
    d.update(changes)
    watched = [d[a] for a in ("var",) + op.slots if isinstance(d[a], np.ndarray)]
    if isinstance(d.get("indices"), np.ndarray):
        watched.append(d["indices"])
    case("%s: %s" % (op.name, label), exc, match, lambda: run(op, d), *watched)


for op in TF_OPS.values():
    base = inputs(op)
    # each array: None, a list, a subclass, the wrong dtype, shape, layout, alignment, byte order
    for a in op.arrays:
        arr = base[a]
        bad(a + "=None", TypeError, a + " is required", op, **{a: None})
        bad(a + "=list", TypeError, a + " must be a numpy.ndarray", op, **{a: arr.tolist()})
        bad(a + " matrix", TypeError, a + " must be a numpy.ndarray, not the subclass", op,
            **{a: np.asmatrix(arr.reshape(arr.shape[0], -1)) if arr.ndim <= 2 else arr})
        bad(a + " masked", TypeError, a + " must be a numpy.ndarray, not the subclass", op, **{a: masked(arr)})
        other = arr.astype(np.float64)
        if a == "var":
            # var float64, the rest float32: the others are named as not matching var
            bad("var float64", TypeError, "has dtype float32 but var has dtype float64", op, var=other)
            bad("var float16", TypeError, "var must have dtype float32 or float64, got float16", op,
                var=arr.astype(np.float16))
            bad("var int", TypeError, "var must have dtype float32 or float64", op, var=arr.astype(np.int32))
            bad("var swapped", TypeError, "var has dtype >f4; fastgd needs native byte order", op, var=swapped(arr))
        else:
            bad(a + " float64", TypeError, a + " has dtype float64 but var has dtype float32", op, **{a: other})
            bad(a + " swapped", TypeError, a + " has dtype >f4 but var has dtype float32", op, **{a: swapped(arr)})
        if arr.ndim >= 1 and arr.shape[0] > 1:
            bad(a + " short", ValueError, "shape|out of range", op, **{a: arr[:-1].copy()})
        if arr.ndim == 2:
            bad(a + " F-order", ValueError, a + " must be C-contiguous", op, **{a: np.asfortranarray(arr)})
            bad(a + " strided", ValueError, a + " must be C-contiguous", op,
                **{a: np.repeat(arr, 2, axis=1)[:, ::2]})
        bad(a + " unaligned", ValueError, a + " is not aligned", op, **{a: unaligned(arr)})
        if a != op.grad:
            ro = arr.copy()
            ro.flags.writeable = False
            bad(a + " read-only", ValueError, a + " must be writeable", op, **{a: ro})
    # overlaps: a slot (or grad) that is var itself, or a view into it
    for a in op.arrays[1:]:
        if base[a].shape == base["var"].shape:
            d = inputs(op)
            d[a] = d["var"]
            case("%s: %s is var" % (op.name, a), ValueError, "overlap in memory", lambda: run(op, d), d["var"],
                 *[d[s] for s in op.slots])
            d = inputs(op)
            d[a] = d["var"][::-1, ::-1] if d["var"].ndim == 2 else d["var"][::-1]
            case("%s: %s reversed view of var" % (op.name, a), ValueError, "C-contiguous|overlap",
                 lambda: run(op, d), d["var"], *[d[s] for s in op.slots])
    if op.sparse:
        # grad a view of var's rows: the same memory read and written
        d = inputs(op)
        d["grad"] = d["var"][:4]
        case("%s: grad is var's rows" % op.name, ValueError, "overlap in memory", lambda: run(op, d), d["var"],
             *[d[s] for s in op.slots])
    # scalars: not a number, not a scalar, not finite
    for s in op.scalars:
        bad(s + "=None", TypeError, s + " must be a real number", op, **{s: None})
        bad(s + "=str", TypeError, s + " must be a real number", op, **{s: "0.1"})
        bad(s + "=True", TypeError, s + " must be a real number, got bool", op, **{s: True})
        bad(s + "=complex", TypeError, s + " must be a real number", op, **{s: 1j})
        bad(s + "=[0.1]", ValueError, s + " must be a scalar", op, **{s: np.array([0.1])})
        bad(s + "=nan", ValueError, s + " must be finite", op, **{s: float("nan")})
        bad(s + "=-inf", ValueError, s + " must be finite", op, **{s: -math.inf})
        bad(s + "=10**400", ValueError, s + " is too large", op, **{s: 10 ** 400})
    # TF's value checks
    for s, kind in op.checks.items():
        value = {"positive": 0.0, "nonneg": -0.5, "nonpos": 0.5, "ftrl_lr": 0.0}[kind]
        bad(s + " out of range", ValueError, s + " must be", op, **{s: value})
        if kind == "positive":
            bad(s + " 1e-50 (0 in float32)", ValueError, s + " must be > 0", op, **{s: 1e-50})
    if op.has_step:
        bad("global_step=1.5", TypeError, "global_step must be an integer", op, global_step=1.5)
        bad("global_step=True", TypeError, "global_step must be an integer", op, global_step=True)
        bad("global_step=2**70", ValueError, "global_step must fit in int64", op, global_step=2 ** 70)
        bad("global_step=[3]", TypeError, "global_step must be an integer", op, global_step=np.array([3]))
    for at in ("use_locking",) + tuple(n for n, _ in op.attrs):
        bad(at + "='yes'", TypeError, at + " must be a bool", op, **{at: "yes"})
        bad(at + "=None", TypeError, at + " must be a bool", op, **{at: None})
    if op.sparse:
        bad("indices=None", TypeError, "indices is required", op, indices=None)
        bad("indices float", TypeError, "indices must be integers", op,
            indices=np.array([0.0, 1.0, 2.0, 3.0]))
        bad("indices bool", TypeError, "indices must be integers", op,
            indices=np.array([True, False, True, True]))
        bad("indices 2-d", ValueError, "indices must be one-dimensional", op, indices=np.zeros((2, 2), np.int64))
        bad("indices 0-d", ValueError, "indices must be one-dimensional", op, indices=np.array(1))
        bad("index 6 of 6 rows", ValueError, r"indices\[1\] = 6 is out of range: var has 6 rows", op,
            indices=np.array([0, 6, 1, 2]))
        bad("index -1", ValueError, r"indices\[3\] = -1 is out of range", op, indices=np.array([0, 1, 2, -1]))
        bad("index 2**40 int64", ValueError, "is out of range", op, indices=np.array([0, 2 ** 40, 1, 2]))
        bad("index 2**63 uint64", ValueError, "is out of range", op,
            indices=np.array([0, 2 ** 63, 1, 2], np.uint64))
        bad("index int32 min", ValueError, "is out of range", op,
            indices=np.array([0, -2 ** 31, 1, 2], np.int32))
        bad("indices str", TypeError, "indices must", op, indices="0123")
        bad("indices masked", TypeError, "indices must be a numpy.ndarray, list or tuple, not the ndarray subclass",
            op, indices=masked(np.array([0, 1, 2, 3])))
        bad("grad rows != len(indices)", ValueError, "grad has shape", op, indices=np.array([0, 1, 2]))
        bad("grad row shape", ValueError, "grad has shape", op, grad=np.zeros((4, 2), np.float32))
        bad("var 0-d", ValueError, "var must be at least 1-dimensional", op,
            **{a: np.zeros((), np.float32) for a in ("var",) + op.slots})
# scalars inf in float32 (finite as doubles): refused by name
op = TF_OPS["apply_gradient_descent"]
bad("alpha=1e300 in float32", ValueError, "alpha must be finite in the arrays' dtype float32", op, alpha=1e300)

# The caller's code (a scalar's __float__, global_step's __index__, indices' __array__) runs
# before any array is checked: an array it changes (its dtype in place, its flags) is checked
# as it is then, never stepped as it was checked before (found by a hostile review: the kernels
# stepped an int32 var as float64, writing past its end).
class Sneaky(float):
    def __float__(self):
        TARGET[0].dtype = np.int32
        return 0.1


class SneakyRO(float):
    def __float__(self):
        TARGET[0].flags.writeable = False
        return 0.1


class SneakyIndex:
    def __index__(self):
        TARGET[0].dtype = np.int32
        return 3


class SneakyIndices:
    def __array__(self, dtype=None, copy=None):
        for a in TARGET:
            a.dtype = np.int32
        return np.array([7, 7])


TARGET = [None]
for name, make, exc, match in (
        ("apply_gradient_descent", lambda d: d.update(alpha=Sneaky(0.1)), TypeError, "var must have dtype"),
        ("apply_adam", lambda d: d.update(lr=Sneaky(0.1)), TypeError, "var must have dtype"),
        ("sparse_apply_adagrad", lambda d: d.update(lr=Sneaky(0.1)), TypeError, "var must have dtype"),
        ("apply_adagrad_da", lambda d: d.update(global_step=SneakyIndex()), TypeError, "var must have dtype"),
        ("apply_adam", lambda d: d.update(lr=SneakyRO(0.1)), ValueError, "var must be writeable"),
        ("sparse_apply_adagrad", lambda d: d.update(indices=SneakyIndices()), TypeError, "var must have dtype")):
    op = TF_OPS[name]
    d = inputs(op)
    TARGET[0] = d["var"]
    if isinstance(d.get("indices"), np.ndarray):
        d["grad"] = d["grad"][:2].copy()
        TARGET[:] = [d["var"]] + [d[s] for s in op.slots] + [d["grad"]]
    make(d)
    case("%s: the caller's code changes var before the checks" % name, exc, match, lambda: run(op, d))

# the backend name is checked (after the arrays: a bad backend also writes nothing)
op = TF_OPS["apply_adam"]
d = inputs(op)
case("apply_adam: backend='tf'", ValueError, "backend must be one of", lambda: T.apply_adam(**d, backend="tf"),
     d["var"], d["m"], d["v"])
print("DONE", n_ok)
'''


@pytest.mark.parametrize("backend", ["cython", "numba", "numpy"])
def test_bad_input_raises_and_writes_nothing(backend):
    run_script(HELPERS + CASES, backend, min_ok=1500)
