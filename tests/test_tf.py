"""fastgd.tf: every op x dtype x compiled backend against the NumPy reference, over several
steps; the generated signatures against the table; the sparse semantics (duplicates, row
shapes, index dtypes).  Bad input: tests/test_tf_bad_input.py.  The reference against
TensorFlow itself: tests/test_tf_vs_tensorflow.py."""
import inspect
import math

import numpy as np
import pytest

import fastgd
import fastgd.tf as T
from fastgd._rules import TF_OPS
from fastgd.backends import backend_module

import conftest
from _subprocess_cases import run_script

DENSE = [o for o in TF_OPS.values() if not o.sparse]
SPARSE = [o for o in TF_OPS.values() if o.sparse]

# slots whose values are never negative (sums of squares, maxima of them)
POSITIVE = {"accum", "accum_update", "v", "vhat", "ms", "gradient_squared_accumulator"}

SCALARS = {"alpha": 0.1, "l1": 0.013, "l2": 0.021, "lr": 0.05, "rho": 0.9, "epsilon": 1e-7, "momentum": 0.9,
           "beta1_power": 0.9 ** 3, "beta2_power": 0.999 ** 3, "beta1": 0.9, "beta2": 0.999, "lr_power": -0.5,
           "l2_shrinkage": 0.011, "logbase": math.log(2.0), "sign_decay": 0.99, "beta": 0.9}

# the variants each op is run with: its attributes both ways, and the branches of its scalars
def _variants(op):
    out = [{}]
    for name, default in op.attrs:
        out.append({name: not default})
    if "l1" in op.scalars:
        out.append({"l1": 0.0})
    if "lr_power" in op.scalars:
        out.append({"lr_power": -0.3})
        out.append({"lr_power": -0.3, "multiply_linear_by_lr": True})
    return out


CASES = [pytest.param(op, v, id="%s-%s" % (op.name, "-".join("%s=%s" % kv for kv in v.items()) or "default"))
         for op in TF_OPS.values() for v in _variants(op)]


def _inputs(op, rng, dtype, shape, n_idx=None, rows=None):
    """One call's inputs: arrays (fresh), scalars, indices for a sparse op."""
    d = {}
    vshape = shape
    for a in op.arrays:
        if a == op.grad and op.sparse:
            gshape = (n_idx,) + tuple(vshape[1:])
            d[a] = rng.standard_normal(gshape).astype(dtype)
        elif a in POSITIVE:
            d[a] = rng.uniform(0.05, 1.0, vshape).astype(dtype)
        else:
            d[a] = rng.standard_normal(vshape).astype(dtype)
    for s in op.scalars:
        d[s] = SCALARS[s]
    if op.has_step:
        d["global_step"] = 7
    if op.sparse:
        d["indices"] = rng.integers(0, vshape[0], n_idx).astype(np.int64)
    return d


def _copy(d):
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in d.items()}


def _ulps(a, b):
    """Largest distance between a and b in units of the last place (NaN where both are NaN: 0)."""
    a = np.asarray(a)
    b = np.asarray(b)
    both_nan = np.isnan(a) & np.isnan(b)
    spacing = np.spacing(np.maximum(np.abs(a), np.abs(b)).astype(a.dtype))
    d = np.where(both_nan | (a == b), 0, np.abs(a.astype(np.float64) - b.astype(np.float64)) / spacing)
    return float(d.max()) if d.size else 0.0


def _compare(op, got, want, step, label):
    for name in (("var",) + op.slots):
        g, w = got[name], want[name]
        if op.exact:
            np.testing.assert_array_equal(g, w, err_msg="%s: %s differs at step %d (%s)" % (op.name, name, step,
                                                                                          label))
        else:
            # FTRL's pow (lr_power != -0.5): NumPy's SIMD power and the C library's pow/powf
            # that Cython and LLVM call may differ in the last bit, and (n'^-p - accum^-p)
            # amplifies that by cancellation, element by element (up to ~1e7 ulp where |linear|
            # is at the l1 threshold); so: normwise, relative to the array's largest value.  Each
            # step starts from the reference's state (below): the difference cannot grow.
            tol = 4e-6 if g.dtype == np.float32 else 1e-13
            scale = float(np.nanmax(np.abs(w))) if w.size and not np.isnan(w).all() else 0.0
            diff = float(np.nanmax(np.abs(g.astype(np.float64) - w))) if w.size and not np.isnan(w).all() else 0.0
            assert np.array_equal(np.isnan(g), np.isnan(w)), "%s: %s NaNs differ at step %d (%s)" % (
                op.name, name, step, label)
            assert diff <= tol * scale, "%s: %s differs by %.3g (of %.3g) at step %d (%s)" % (
                op.name, name, diff, scale, step, label)


def _run_steps(op, variant, backend, dtype, shape, n_idx=None, steps=5, seed=0):
    rng = np.random.default_rng(seed)
    fn = getattr(T, op.name)
    base = _inputs(op, rng, dtype, shape, n_idx)
    base.update(variant)
    ref = _copy(base)
    got = _copy(base)
    for step in range(1, steps + 1):
        g = rng.standard_normal(base[op.grad].shape).astype(dtype)
        ref[op.grad] = g
        got[op.grad] = g.copy()
        if op.sparse:
            ref["indices"] = got["indices"] = rng.integers(0, shape[0], n_idx)
        out = fn(**got, backend=backend)
        assert out is got["var"]
        fn(**ref, backend="numpy")
        _compare(op, got, ref, step, "%s %s %s" % (backend, np.dtype(dtype).name, shape))
        if not op.exact:
            for name in ("var",) + op.slots:
                got[name][...] = ref[name]


@pytest.mark.parametrize("size", [1, 17, 1000, 100003])
@pytest.mark.parametrize("op,variant", [c for c in CASES if not c.values[0].sparse])
def test_dense_matches_reference(op, variant, compiled_backend, dtype, size):
    _run_steps(op, variant, compiled_backend, dtype, (size,))


@pytest.mark.parametrize("op,variant", [c for c in CASES if not c.values[0].sparse and not c.values[1]])
def test_dense_any_shape(op, variant, compiled_backend, dtype):
    """A 3-d var (the kernels see flat views) and a 0-d one (a scalar variable)."""
    _run_steps(op, variant, compiled_backend, dtype, (3, 4, 5), steps=3)
    _run_steps(op, variant, compiled_backend, dtype, (), steps=3)


@pytest.mark.parametrize("rows,inner,n_idx", [(11, 1, 7), (40, 3, 64), (300, 64, 500), (5, 2, 40)])
@pytest.mark.parametrize("op,variant", [c for c in CASES if c.values[0].sparse])
def test_sparse_matches_reference(op, variant, compiled_backend, dtype, rows, inner, n_idx):
    """Random indices with duplicates (n_idx > rows in some cases: many), several row widths;
    the last size is split over threads when the kernel runs in parallel."""
    shape = (rows,) if inner == 1 else (rows, inner)
    _run_steps(op, variant, compiled_backend, dtype, shape, n_idx)


@pytest.mark.parametrize("op", SPARSE, ids=lambda o: o.name)
def test_sparse_threads(op, compiled_backend, restore_globals):
    """A call large enough to run on 2 threads (row ownership: each row stepped by one thread,
    duplicates in order) equals the reference."""
    fastgd.set_num_threads(2)
    fastgd.set_serial_cutoff(0)
    _run_steps(op, {}, compiled_backend, np.float32, (257, 33), 3000, steps=2)
    fastgd.set_num_threads(1)
    _run_steps(op, {}, compiled_backend, np.float32, (257, 33), 3000, steps=2)


@pytest.mark.parametrize("op", DENSE, ids=lambda o: o.name)
def test_dense_threads(op, compiled_backend, restore_globals):
    fastgd.set_num_threads(2)
    fastgd.set_serial_cutoff(0)
    _run_steps(op, {}, compiled_backend, np.float64, (4099,), steps=2)


@pytest.mark.parametrize("op", SPARSE, ids=lambda o: o.name)
def test_sparse_is_the_dense_op_on_the_rows(op, backend):
    """Distinct indices: the sparse op equals the dense op applied to var[indices] (gathered,
    stepped, scattered back): the same formula per row."""
    rng = np.random.default_rng(3)
    d = _inputs(op, rng, np.float64, (30, 4), 9)
    d["indices"] = rng.permutation(30)[:9]
    dense = {k: v for k, v in _copy(d).items() if k != "indices"}
    for a in ("var",) + op.slots:
        dense[a] = d[a][d["indices"]].copy()
    dense[op.dense.grad] = dense.pop("grad")
    getattr(T, op.dense.name)(**dense, backend=backend)
    getattr(T, op.name)(**d, backend=backend)
    for a in ("var",) + op.slots:
        np.testing.assert_array_equal(d[a][d["indices"]], dense[a])


@pytest.mark.parametrize("op", SPARSE, ids=lambda o: o.name)
def test_sparse_duplicates_apply_in_order(op, backend):
    """indices [2, 2]: the row is stepped twice, the second time from the first step's result
    (TF's CPU loop), which is the same as two calls with one index each."""
    rng = np.random.default_rng(5)
    d = _inputs(op, rng, np.float64, (4, 3), 2)
    d["indices"] = np.array([2, 2])
    twice = _copy(d)
    getattr(T, op.name)(**d, backend=backend)
    for i in range(2):
        one = dict(twice, indices=np.array([2]), grad=twice["grad"][i:i + 1].copy())
        getattr(T, op.name)(**one, backend=backend)
        for a in ("var",) + op.slots:
            twice[a] = one[a]
    for a in ("var",) + op.slots:
        np.testing.assert_array_equal(d[a], twice[a])
    # and other rows are untouched
    rest = [0, 1, 3]
    fresh = _inputs(op, np.random.default_rng(5), np.float64, (4, 3), 2)
    np.testing.assert_array_equal(d["var"][rest], fresh["var"][rest])


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64, np.uint8, "list"])
def test_sparse_index_types(index_dtype, backend):
    """int32 and int64 (TF's Tindices), other integer dtypes and lists converted; the caller's
    indices array is never written."""
    rng = np.random.default_rng(1)
    d = _inputs(TF_OPS["sparse_apply_adagrad"], rng, np.float32, (10, 3), 4)
    base = _copy(d)
    idx = [1, 7, 7, 0]
    d["indices"] = idx if index_dtype == "list" else np.array(idx, index_dtype)
    keep = np.array(d["indices"], copy=True)
    T.sparse_apply_adagrad(**d, backend=backend)
    base["indices"] = np.array(idx, np.int64)
    T.sparse_apply_adagrad(**base, backend="numpy")
    np.testing.assert_array_equal(d["var"], base["var"])
    np.testing.assert_array_equal(np.asarray(d["indices"]), keep)


def test_scalar_forms(backend):
    """Scalars as Python floats and ints, NumPy scalars of either dtype, 0-d arrays: the same
    step (each is rounded to the arrays' dtype, as TF's scalar inputs are of type T)."""
    outs = []
    for form in (float, np.float32, np.float64, lambda x: np.array(x), lambda x: np.array(x, np.float32)):
        rng = np.random.default_rng(2)
        d = _inputs(TF_OPS["apply_adam"], rng, np.float32, (50,))
        for s in TF_OPS["apply_adam"].scalars:
            d[s] = form(d[s])
        T.apply_adam(**d, backend=backend)
        outs.append(d["var"])
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    # an int lr is a number like any other
    v = np.ones(3, np.float64)
    T.apply_gradient_descent(v, 1, np.ones(3), backend=backend)
    np.testing.assert_array_equal(v, np.zeros(3))


def test_positional_and_keyword_calls(backend):
    """TF's order by position, or every input by keyword, give the same step."""
    rng = np.random.default_rng(4)
    d = _inputs(TF_OPS["apply_adam"], rng, np.float64, (8,))
    k = _copy(d)
    op = TF_OPS["apply_adam"]
    T.apply_adam(*[d[n] for n in op.inputs], False, True, backend=backend)
    T.apply_adam(**k, use_nesterov=True, backend=backend)
    np.testing.assert_array_equal(d["var"], k["var"])


def test_signatures_follow_the_table():
    """Every function: TF's inputs in order, use_locking, the attributes with TF's defaults,
    name, and the keyword-only backend; a docstring with the formula."""
    assert sorted(T.__all__) == sorted(TF_OPS)
    for op in TF_OPS.values():
        sig = inspect.signature(getattr(T, op.name))
        names = list(sig.parameters)
        assert names == list(op.inputs) + ["use_locking"] + [a for a, _ in op.attrs] + ["name", "backend"], op.name
        assert sig.parameters["use_locking"].default is False
        for a, default in op.attrs:
            assert sig.parameters[a].default is default
        assert sig.parameters["backend"].kind is inspect.Parameter.KEYWORD_ONLY
        assert op.formula and op.formula in getattr(T, op.name).__doc__
    assert len([o for o in TF_OPS.values() if not o.sparse]) == 18
    assert len([o for o in TF_OPS.values() if o.sparse]) == 12


def test_every_backend_has_every_kernel(backend):
    impl = backend_module(backend)
    for op in TF_OPS.values():
        assert callable(getattr(impl, op.kernel)), (backend, op.kernel)


def test_reference_kernel_signatures():
    """The reference's (and numba's) kernels take the contract's positional arguments: the
    arrays, indices, scalars, global_step, attributes."""
    import fastgd.reference.tf as R
    for op in TF_OPS.values():
        want = list(op.arrays) + (["indices"] if op.sparse else []) + list(op.scalars) + \
            (["global_step"] if op.has_step else []) + [a for a, _ in op.attrs]
        assert list(inspect.signature(getattr(R, op.kernel)).parameters) == want, op.kernel


def test_empty_is_a_no_op(backend):
    v = np.zeros(0, np.float32)
    assert T.apply_adagrad(v, v.copy(), 0.1, np.zeros(0, np.float32), backend=backend) is v
    var = np.ones((5, 2), np.float32)
    before = var.copy()
    T.sparse_apply_adagrad(var, np.ones((5, 2), np.float32), 0.1, np.zeros((0, 2), np.float32),
                           np.zeros(0, np.int64), backend=backend)
    np.testing.assert_array_equal(var, before)


def test_import_fastgd_does_not_import_tensorflow():
    import subprocess
    import sys
    code = "import sys, fastgd, fastgd.tf; assert 'tensorflow' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=__import__("os").path.dirname(__import__("os").path.dirname(fastgd.__file__)))
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_value_checks_are_tfs(backend):
    """TF 2.21's CPU value checks, no more: sparse FTRL's lr may be 0 with
    multiply_linear_by_lr=True (and must be > 0 without); the dense FTRL ops check nothing
    (a negative lr_power steps); ProximalAdagrad's lr must be > 0 as TF sees it in float32."""
    rng = np.random.default_rng(6)
    d = _inputs(TF_OPS["sparse_apply_ftrl"], rng, np.float32, (6, 2), 3)
    T.sparse_apply_ftrl(**dict(d, lr=0.0), multiply_linear_by_lr=True, backend=backend)
    with pytest.raises(ValueError, match="lr must be > 0"):
        T.sparse_apply_ftrl(**dict(d, lr=0.0), backend=backend)
    d = _inputs(TF_OPS["apply_ftrl"], rng, np.float64, (6,))
    T.apply_ftrl(**dict(d, lr_power=0.5, l1=-1.0), backend=backend)
    d = _inputs(TF_OPS["apply_proximal_adagrad"], rng, np.float32, (6,))
    with pytest.raises(ValueError, match=r"lr must be > 0 .*in float32"):
        T.apply_proximal_adagrad(**dict(d, lr=1e-50), backend=backend)
    d64 = _inputs(TF_OPS["apply_proximal_adagrad"], rng, np.float64, (6,))
    T.apply_proximal_adagrad(**dict(d64, lr=1e-50), backend=backend)  # a positive float64


@pytest.mark.parametrize("name", ["apply_adagrad_da", "sparse_apply_adagrad_da"])
def test_global_step_rounds_once_to_float32(name, compiled_backend, dtype):
    """TF's static_cast<float>(global_step) rounds the int64 once: 2**60 + 2**36 + 1 is
    2**60 + 2**37 in float32 (through a double it would be 2**60).  Every backend alike."""
    op = TF_OPS[name]
    rng = np.random.default_rng(8)
    d = _inputs(op, rng, dtype, (5, 3), 4)
    d.update(global_step=2 ** 60 + 2 ** 36 + 1, l1=0.0)
    ref = _copy(d)
    getattr(T, name)(**d, backend=compiled_backend)
    getattr(T, name)(**ref, backend="numpy")
    np.testing.assert_array_equal(d["var"], ref["var"])
    gs = float(np.int64(2 ** 60 + 2 ** 36 + 1).astype(np.float32))
    assert gs == 2.0 ** 60 + 2.0 ** 37


@pytest.mark.parametrize("op", list(TF_OPS.values()), ids=lambda o: o.name)
def test_cython_kernels_recheck_what_they_rely_on(op):
    """The Cython kernels re-check, where no other Python code can run, what their pointer
    accesses rely on (another thread could change an array in place between fastgd.tf's checks
    and the kernel): an array of another dtype (the same bytes seen as int32) or size is a
    RuntimeError, and nothing is written."""
    impl = backend_module("cython")
    rng = np.random.default_rng(9)
    d = _inputs(op, rng, np.float32, (6, 3), 4)
    d["indices"] = np.array([0, 5, 5, 2]) if op.sparse else None
    if op.sparse:
        arrays = [d[a] for a in op.arrays]
        extra = [d["indices"]]
    else:
        arrays = [d[a].reshape(-1) for a in op.arrays]
        extra = []
    rest = [d[s] for s in op.scalars] + ([7] if op.has_step else []) + [dv for _, dv in op.attrs]
    for k in range(len(arrays)):
        for bad in (arrays[k].view(np.int32), arrays[k][:-1]):
            args = list(arrays)
            args[k] = bad
            before = [a.copy() for a in arrays]
            with pytest.raises(RuntimeError, match="changed after fastgd.tf checked it"):
                getattr(impl, op.kernel)(*args, *extra, *rest)
            for a, b in zip(arrays, before):
                np.testing.assert_array_equal(a, b)


_RECHECK_CODE = r'''
import sys
import numpy as np
from fastgd._rules import TF_OPS
from fastgd.backends import backend_module

impl = backend_module(sys.argv[1])
rng = np.random.default_rng(9)


class Sub(np.ndarray):
    pass


n_ok = 0
for op in TF_OPS.values():
    shape, n_idx = (6, 3), 4
    arrays = []
    for a in op.arrays:
        s = (n_idx, 3) if (a == op.grad and op.sparse) else shape
        arrays.append(rng.uniform(0.05, 1.0, s).astype(np.float32))
    if not op.sparse:
        arrays = [a.reshape(-1) for a in arrays]
    extra = [np.array([0, 5, 5, 2], np.int64)] if op.sparse else []
    rest = [0.5] * len(op.scalars) + ([7] if op.has_step else []) + [dv for _, dv in op.attrs]
    cases = []
    for k in range(len(arrays)):
        ro = arrays[k].copy()
        ro.flags.writeable = False
        bads = [("int32 view", arrays[k].view(np.int32)), ("one row fewer", arrays[k][:-1]),
                ("float64", arrays[k].astype(np.float64)), ("not contiguous", np.repeat(arrays[k], 2, axis=-1)[..., ::2])]
        bads += [("ndarray subclass", arrays[k].view(Sub)), ("None", None)]
        if k < len(arrays) - 1:
            bads.append(("read-only", ro))
        cases += [(k, w, b) for w, b in bads]
    if op.sparse:
        cases += [(len(arrays), "index out of range", np.array([0, 6, 5, 2], np.int64)),
                  (len(arrays), "negative index", np.array([0, -1, 5, 2], np.int64)),
                  (len(arrays), "int32 indices", np.array([0, 5, 5, 2], np.int32)),
                  (len(arrays), "one index fewer", np.array([0, 5, 5], np.int64))]
    for k, what, bad in cases:
        args = list(arrays) + list(extra)
        args[k] = bad
        before = [a.copy() for a in arrays]
        try:
            getattr(impl, op.kernel)(*args, *rest)
        except RuntimeError as e:
            if "fastgd.tf checked it" not in str(e):
                print("FAIL %s %s: %r" % (op.kernel, what, e))
                continue
        except Exception as e:
            print("FAIL %s arg %d %s: %s(%r), expected RuntimeError" % (op.kernel, k, what, type(e).__name__, e))
            continue
        else:
            print("FAIL %s arg %d %s: no RuntimeError" % (op.kernel, k, what))
            continue
        if not all(np.array_equal(a, b) for a, b in zip(arrays, before)):
            print("FAIL %s arg %d %s: an array was written" % (op.kernel, k, what))
            continue
        n_ok += 1
print("DONE", n_ok)
'''


@pytest.mark.parametrize("backend", [conftest._backend_param("numba")])
def test_numba_kernels_recheck_what_they_rely_on(backend):
    """The numba ops re-check what their loops rely on (fastgd._numba.tf._tf_views): a numba
    loop indexes var[indices[i], j] and every slot with no bounds check, so an array another
    thread changed in place after fastgd.tf's checks (another dtype, a row fewer, read-only,
    not contiguous) or an index that is not a row of var is a RuntimeError before it runs,
    nothing written.  In a subprocess: without the re-check these read and write out of
    bounds."""
    run_script(_RECHECK_CODE, backend, min_ok=150)
