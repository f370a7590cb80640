"""The NumPy spec of fastgd.tf's kernels (fastgd.reference.tf) against real TensorFlow.

Every kernel, float32 and float64, several steps on seeded random data, compared with
``tf.raw_ops.ResourceApply<Op>`` / ``ResourceSparseApply<Op>`` on ``tf.Variable``s: var AND every
slot after every step.  Sparse ops: int32 and int64 indices, duplicate indices (TF's CPU loop
applies them in order: for these sizes even the two kernels that use ``parallelFor`` over the
rows, SparseApplyAdagrad/AdagradV2, run as one shard), a 2-D var, a 3-D var and a 1-D var (TF's
``inner_dim == 1`` scalar path).

Tolerances: float32 rtol=2e-5, atol=1e-6 (TF's Eigen uses an approximate vectorized rsqrt, and
its own exp/pow); float64 rtol=1e-12, atol=1e-14.

Without TensorFlow the tests skip, unless ``FASTGD_REQUIRE_TF=1``, where they fail.
"""
from __future__ import annotations

import functools
import os
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from fastgd.reference import tf as R

_TRUE, _FALSE = ("1", "true", "yes"), ("", "0", "false", "no")


@functools.lru_cache(maxsize=None)
def _import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as exc:
        return None, exc
    return tf, None


def _tf():
    """``tensorflow``, or skip (fail if ``FASTGD_REQUIRE_TF=1``).  Called in the test body, so a
    required-but-missing TF shows as FAILED, not as an error or a skip."""
    tf, error = _import_tf()
    if tf is not None:
        return tf
    value = os.environ.get("FASTGD_REQUIRE_TF", "").strip().lower()
    if value not in _TRUE + _FALSE:
        pytest.fail("FASTGD_REQUIRE_TF=%r: use 1 (TensorFlow required) or 0" % value, pytrace=False)
    if value in _TRUE:
        pytest.fail("TensorFlow is required here (FASTGD_REQUIRE_TF=1) but does not import: %s" % error,
                    pytrace=False)
    pytest.skip("tensorflow not installed (%s); FASTGD_REQUIRE_TF=1 makes this a failure" % error)


TOL = {np.float32: dict(rtol=2e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}
STEPS = 5
DENSE_N = 37
SPARSE_SHAPES = {"2d": (11, 5), "3d": (6, 3, 4), "1d": (13,)}
SPARSE_N = 7

# ---------------------------------------------------------------------------------------------
# slot initializers (rng, shape) -> float64 array; sensible values for each slot


def _zeros(rng, shape):
    return np.zeros(shape)


def _const01(rng, shape):  # Adagrad's / FTRL's initial accumulator
    return np.full(shape, 0.1)


def _normal(rng, shape):
    return rng.standard_normal(shape)


def _small(rng, shape):
    return 0.1 * rng.standard_normal(shape)


def _positive(rng, shape):  # second moments, accumulators of squares
    return rng.uniform(0.0, 0.2, shape)


def _accum(rng, shape):  # > 0 where TF divides by sqrt(accum)
    return rng.uniform(0.1, 0.5, shape)


@dataclass(frozen=True)
class Case:
    """One op with one set of flags.  ``slots`` and ``scalars`` are in the reference kernel's
    positional order, each as (TensorFlow's input name, initializer or value); a scalar value may
    be a function of the step t = 1, 2, ... (Adam's beta powers)."""
    id: str
    ref: str  # name in fastgd.reference.tf
    tf_op: str  # name in tf.raw_ops
    slots: tuple = ()
    scalars: tuple = ()
    flags: tuple = ()  # (attr, value), in the kernel's order
    grad: str = "grad"  # TF's name of the gradient input
    global_step: bool = False  # AdagradDA: global_step = t
    float32_atol: float = TOL[np.float32]["atol"]


def _flag_id(name, value):
    short = {"use_nesterov": "nesterov", "update_slots": "update_slots",
             "multiply_linear_by_lr": "mult_lr"}[name]
    return short if value else "no_" + short


def _both(flag):
    return [((flag, False),), ((flag, True),)]


def _spec():
    """Rows (dense op, sparse op or None, slots, scalars, [flag tuples], grad name, global_step,
    id suffix, float32 atol)."""
    rows = []

    def add(*row, float32_atol=TOL[np.float32]["atol"]):
        rows.append(row + (float32_atol,))

    add("GradientDescent", None, (), (("alpha", 0.1),), [()], "delta", False, "")
    for l1 in (0.0, 2.0):
        add("ProximalGradientDescent", "ProximalGradientDescent", (),
            (("alpha", 0.1), ("l1", l1), ("l2", 0.3)), [()], "delta", False, "-l1_%g" % l1)
    add("Adadelta", "Adadelta", (("accum", _positive), ("accum_update", _positive)),
        (("lr", 0.5), ("rho", 0.95), ("epsilon", 1e-6)), [()], "grad", False, "")
    add("Adagrad", "Adagrad", (("accum", _const01),), (("lr", 0.1),), _both("update_slots"), "grad", False, "")
    add("AdagradV2", "AdagradV2", (("accum", _const01),), (("lr", 0.1), ("epsilon", 1e-7)),
        _both("update_slots"), "grad", False, "")
    for l1 in (0.0, 0.5):
        add("ProximalAdagrad", "ProximalAdagrad", (("accum", _accum),),
            (("lr", 0.1), ("l1", l1), ("l2", 0.2)), [()], "grad", False, "-l1_%g" % l1)
    for l1 in (0.0, 0.2):
        add("AdagradDA", "AdagradDA",
            (("gradient_accumulator", _zeros), ("gradient_squared_accumulator", _const01)),
            (("lr", 0.1), ("l1", l1), ("l2", 0.1)), [()], "grad", True, "-l1_%g" % l1)
    for v2 in (False, True):
        for lr_power in (-0.5, -0.3):
            for l1 in (0.0, 0.3):
                scalars = (("lr", 0.2), ("l1", l1), ("l2", 0.1))
                if v2:
                    scalars += (("l2_shrinkage", 0.05),)
                scalars += (("lr_power", lr_power),)
                op = "FtrlV2" if v2 else "Ftrl"
                # float32 with lr_power != -0.5: TF's Eigen pow differs from powf by ~1 ulp of
                # pow(accum, -lr_power) ~ 1; sigma = pow(new_accum) - pow(accum) is then divided by
                # lr = 0.2 and multiplied by var ~ 1, and linear += g - sigma/lr*var cancels to
                # values near 0, so linear carries an ABSOLUTE error of ~5e-7 per step: a few 1e-6
                # after 5 steps (measured: up to 2.6e-6 over 20 seeds).  atol 1e-5 there; the
                # sqrt path (lr_power == -0.5) is bit-exact and float64 needs no loosening.
                add(op, op, (("accum", _const01), ("linear", _small)), scalars,
                    _both("multiply_linear_by_lr"), "grad", False, "-lrp_%g-l1_%g" % (lr_power, l1),
                    float32_atol=1e-5 if lr_power != -0.5 else TOL[np.float32]["atol"])
    for op in ("Momentum", "KerasMomentum"):
        add(op, op, (("accum", _small),), (("lr", 0.1), ("momentum", 0.9)), _both("use_nesterov"),
            "grad", False, "")
    adam = (("beta1_power", lambda t: 0.9 ** t), ("beta2_power", lambda t: 0.999 ** t), ("lr", 0.01),
            ("beta1", 0.9), ("beta2", 0.999), ("epsilon", 1e-7))
    add("Adam", None, (("m", _small), ("v", _positive)), adam, _both("use_nesterov"), "grad", False, "")
    add("AdamWithAmsgrad", None, (("m", _small), ("v", _positive), ("vhat", _positive)), adam, [()], "grad",
        False, "")
    add("AdaMax", None, (("m", _small), ("v", _positive)),
        (("beta1_power", lambda t: 0.9 ** t), ("lr", 0.01), ("beta1", 0.9), ("beta2", 0.999), ("epsilon", 1e-7)),
        [()], "grad", False, "")
    rms = (("lr", 0.01), ("rho", 0.9), ("momentum", 0.5), ("epsilon", 1e-7))
    add("RMSProp", "RMSProp", (("ms", _positive), ("mom", _small)), rms, [()], "grad", False, "")
    # mg starts at 0 so that ms - mg*mg >= 0 stays true (both are running means)
    add("CenteredRMSProp", "CenteredRMSProp", (("mg", _zeros), ("ms", _positive), ("mom", _small)), rms, [()],
        "grad", False, "")
    add("AddSign", None, (("m", _small),), (("lr", 0.1), ("alpha", 1.0), ("sign_decay", 0.9), ("beta", 0.9)),
        [()], "grad", False, "")
    add("PowerSign", None, (("m", _small),),
        (("lr", 0.1), ("logbase", float(np.log(2.0))), ("sign_decay", 0.9), ("beta", 0.9)), [()], "grad", False, "")
    return rows


_SNAKE = {"GradientDescent": "gradient_descent", "ProximalGradientDescent": "proximal_gradient_descent",
          "Adadelta": "adadelta", "Adagrad": "adagrad", "AdagradV2": "adagrad_v2",
          "ProximalAdagrad": "proximal_adagrad", "AdagradDA": "adagrad_da", "Ftrl": "ftrl", "FtrlV2": "ftrl_v2",
          "Momentum": "momentum", "KerasMomentum": "keras_momentum", "Adam": "adam",
          "AdamWithAmsgrad": "adam_with_amsgrad", "AdaMax": "ada_max", "RMSProp": "rms_prop",
          "CenteredRMSProp": "centered_rms_prop", "AddSign": "add_sign", "PowerSign": "power_sign"}


def _cases(sparse):
    out = []
    for dense_op, sparse_op, slots, scalars, flag_sets, grad, global_step, suffix, float32_atol in _spec():
        op = sparse_op if sparse else dense_op
        if op is None:
            continue
        for flags in flag_sets:
            cid = _SNAKE[op] + suffix + "".join("-" + _flag_id(n, v) for n, v in flags)
            if sparse:
                ref, tf_op = "tf_sparse_apply_" + _SNAKE[op], "ResourceSparseApply" + op
                grad = "grad"  # SparseApplyProximalGradientDescent calls it grad, not delta
            else:
                ref, tf_op = "tf_apply_" + _SNAKE[op], "ResourceApply" + op
            out.append(Case(cid, ref, tf_op, slots, scalars, flags, grad, global_step, float32_atol))
    return out


DENSE_CASES = _cases(sparse=False)
SPARSE_CASES = _cases(sparse=True)
DTYPE_PARAMS = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]


def _scalars(case, T, t):
    """[(TF name, value as T)] for step t."""
    return [(name, T(value(t) if callable(value) else value)) for name, value in case.scalars]


def _compare(names, mine, tf_vars, tol, what):
    for name, a, v in zip(names, mine, tf_vars):
        b = v.numpy()
        assert b.dtype == a.dtype
        np.testing.assert_allclose(a.reshape(b.shape), b, err_msg="%s: %s" % (what, name), **tol)


def _seed(*parts: Any) -> int:
    return zlib.crc32(repr(parts).encode())


def _run(case: Case, dtype, shape, sparse: bool, index_dtype=np.int64, steps: int = STEPS, n_rows: int = SPARSE_N):
    tf = _tf()
    T = np.dtype(dtype).type
    tol = dict(TOL[dtype], **({"atol": case.float32_atol} if dtype is np.float32 else {}))
    rng = np.random.default_rng(_seed(case.id, np.dtype(dtype).name, shape, sparse, np.dtype(index_dtype).name))
    var = rng.standard_normal(shape).astype(dtype)
    slots = [init(rng, shape).astype(dtype) for _, init in case.slots]
    tf_vars = [tf.Variable(a.copy()) for a in [var] + slots]
    names = ["var"] + [name for name, _ in case.slots]
    kernel = getattr(R, case.ref)
    tf_op = getattr(tf.raw_ops, case.tf_op)
    if sparse:
        rows = shape[0]
        arrays = [a.reshape(rows, -1) for a in [var] + slots]  # the kernels' 2-D (rows, inner) views
        assert all(np.shares_memory(a, b) for a, b in zip(arrays, [var] + slots))
    else:
        arrays = [var] + slots
    for t in range(1, steps + 1):
        scalars = _scalars(case, T, t)
        tf_kwargs = dict(scalars)
        tf_kwargs.update(case.flags)
        tf_kwargs["var"] = tf_vars[0].handle
        tf_kwargs.update({name: v.handle for name, v in zip(names[1:], tf_vars[1:])})
        args = [float(value) for _, value in scalars]
        if case.global_step:
            args.append(t)
            tf_kwargs["global_step"] = np.int64(t)
        args += [value for _, value in case.flags]
        if sparse:
            indices = rng.integers(0, rows, n_rows)
            if n_rows >= 7:  # duplicates, applied in order: row indices[0] three times
                indices[3] = indices[0]
                indices[6] = indices[0]
            grad = rng.standard_normal((n_rows,) + shape[1:]).astype(dtype)
            kernel(*arrays, grad.reshape(n_rows, arrays[0].shape[1]), indices.astype(np.int64), *args)
            tf_kwargs.update({case.grad: grad, "indices": indices.astype(index_dtype)})
        else:
            grad = rng.standard_normal(shape).astype(dtype)
            kernel(*arrays, grad, *args)
            tf_kwargs[case.grad] = grad
        tf_op(**tf_kwargs)
        _compare(names, [var] + slots, tf_vars, tol, "%s %s step %d" % (case.tf_op, np.dtype(dtype).name, t))


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("case", DENSE_CASES, ids=lambda c: c.id)
def test_dense_vs_tensorflow(case, dtype):
    _run(case, dtype, (DENSE_N,), sparse=False)


@pytest.mark.parametrize("shape", list(SPARSE_SHAPES.values()), ids=list(SPARSE_SHAPES))
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64], ids=["int32", "int64"])
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("case", SPARSE_CASES, ids=lambda c: c.id)
def test_sparse_vs_tensorflow(case, dtype, index_dtype, shape):
    _run(case, dtype, shape, sparse=True, index_dtype=index_dtype)


@pytest.mark.parametrize("case", DENSE_CASES + SPARSE_CASES, ids=lambda c: c.ref + "-" + c.id)
def test_empty_vs_tensorflow(case):
    """n == 0 (dense) and N == 0 (sparse): nothing changes, in TF and in the spec."""
    sparse = case.ref.startswith("tf_sparse_")
    _run(case, np.float64, (4, 3) if sparse else (0,), sparse=sparse, steps=1, n_rows=0)


def test_every_kernel_is_tested():
    """The comparisons above cover all 30 kernels of the contract, and nothing else is exported."""
    tested = {c.ref for c in DENSE_CASES + SPARSE_CASES}
    assert tested == set(R.__all__)
    assert len(R.__all__) == 30 == len(set(R.__all__))
    assert all(callable(getattr(R, name)) for name in R.__all__)
