"""The annotations and stubs are checked: the stubs of the compiled modules match them
(mypy.stubtest), the package is clean under the mypy configuration of pyproject.toml, and a
user's typed code type-checks while a wrong call is reported.  Skipped without mypy
(``pip install 'fastgd[test]'`` brings it)."""
import inspect
import os
import subprocess
import sys
import textwrap
import typing

import pytest

mypy_api = pytest.importorskip("mypy.api", reason="the typing checks need mypy (pip install 'fastgd[test]')")

import fastgd  # noqa: E402
import fastgd.descent  # noqa: E402
import fastgd.multi  # noqa: E402
import fastgd.optim  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
PYPROJECT = os.path.join(ROOT, "pyproject.toml")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One mypy cache for this module's runs (outside the checkout)."""
    return str(tmp_path_factory.mktemp("mypy_cache"))


def _env():
    """The environment of the stubtest run: it imports the fastgd these tests import (the
    installed, compiled package; src/ holds no compiled modules in a fresh clone)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(fastgd.__file__))) + os.pathsep + \
        env.get("PYTHONPATH", "")
    env.pop("MYPYPATH", None)
    return env


def test_stubs_match_the_compiled_modules(tmp_path):
    """``python -m mypy.stubtest fastgd._cython`` checks the package's stubs and its submodules'
    (_core, dense; the _rules_<variant> modules are private and re-exported by the package).
    The submodules are not listed again: stubtest then builds them twice and fails
    ("Duplicate module named ...")."""
    pytest.importorskip("fastgd._cython", reason="the compiled extensions are not built")
    proc = subprocess.run([sys.executable, "-m", "mypy.stubtest", "fastgd._cython"], cwd=str(tmp_path), env=_env(),
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Success" in out, out


def test_mypy_is_clean_on_the_package(cache_dir):
    """``mypy`` with pyproject.toml's [tool.mypy] (files = src/fastgd)."""
    out, err, status = mypy_api.run(["--config-file", PYPROJECT, "--cache-dir", cache_dir, SRC + "/fastgd"])
    assert status == 0, out + err


_USER_CODE = """
    import numpy as np
    import numpy.typing as npt

    import fastgd
    import fastgd.multi
    from fastgd.optim import Adam, CosineAnnealingLR

    p = np.ones(8, np.float32)
    g = np.full(8, 0.5, np.float32)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    out: npt.NDArray[np.floating] = fastgd.adam_step(p, g, m, v, step=1, lr=1e-2, backend="numpy")
    fastgd.sgd_step(p, g, lr=0.1)

    ps = [np.ones(3, np.float32), np.ones((2, 2), np.float32)]
    gs = [x.copy() for x in ps]
    ms = [np.zeros_like(x) for x in ps]
    vs = [np.zeros_like(x) for x in ps]
    fastgd.multi.adam_step(ps, gs, ms, vs, step=1, lr=0.1, max_norm=1.0)
    norm: float = fastgd.multi.global_norm(gs)

    opt = Adam(ps, lr=1e-3, betas=(0.9, 0.999))
    sched = CosineAnnealingLR(opt, T_max=10)
    new: list[npt.NDArray[np.floating]] = opt.step(gs)
    lr: float = sched.step()

    def grad(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return 2.0 * x

    r = fastgd.gradient_descent(grad, [1.0, 2.0], "adam", iterations=10, lr=0.1)
    x: npt.NDArray[np.float64] = r.x
    converged: bool = r.converged
"""


def _check(code, cache_dir, tmp_path):
    path = tmp_path / "user_code.py"
    path.write_text(textwrap.dedent(code))
    # the package's own config is not applied to the user's file; only the search path
    return mypy_api.run(["--python-version", "3.10", "--cache-dir", cache_dir, "--no-error-summary",
                         "--ignore-missing-imports", "--config-file", os.devnull, str(path)])


def test_typed_user_code_checks(cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MYPYPATH", SRC)
    out, err, status = _check(_USER_CODE, cache_dir, tmp_path)
    assert status == 0, out + err


@pytest.mark.parametrize("bad, why", [
    ('fastgd.adam_step(p, g, m, v, step=1, lr="0.1")', 'incompatible type "str"'),
    ('fastgd.multi.adam_step("params", gs, ms, vs, step=1)', 'incompatible type "str"'),
    ("fastgd.adam_step(p, g, m, v, 1)", "Too many positional arguments"),
    ('fastgd.lion_step(p, g, m, backend="cuda")', 'incompatible type "Literal'),
    ("Adam(ps, betas=0.9)", 'incompatible type "float"'),
    ("opt.step(gs, grad_scale='2')", 'incompatible type "str"'),
    ('fastgd.gradient_descent(grad, [1.0], "adamm", iterations=3)', 'incompatible type "Literal'),
    ("fastgd.gradient_descent(grad, [1.0])", 'Missing named argument "iterations"'),
])
def test_wrong_calls_are_reported(bad, why, cache_dir, tmp_path, monkeypatch):
    """The same code with one wrong call: mypy reports it (so the annotations can fail a check)."""
    monkeypatch.setenv("MYPYPATH", SRC)
    out, err, status = _check(_USER_CODE + "\n    " + bad + "\n", cache_dir, tmp_path)
    assert status == 1, out + err
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 1 and why in errors[0], out


# ---------------------------------------------------------------------------------------
# every public function is annotated (also where mypy's disallow_incomplete_defs cannot
# see it: a def with no annotation at all)

_PUBLIC_MODULES = ("fastgd.steps", "fastgd.multi", "fastgd.optim", "fastgd.descent", "fastgd.functions",
                   "fastgd.gradcheck", "fastgd.plot", "fastgd.demo")


def _public_callables():
    import importlib
    for name in _PUBLIC_MODULES:
        mod = importlib.import_module(name)
        for attr in getattr(mod, "__all__", ()):
            obj = getattr(mod, attr)
            if inspect.isfunction(obj) and obj.__module__ == name:
                yield "%s.%s" % (name, attr), obj
            elif inspect.isclass(obj) and obj.__module__ == name:
                for k, v in vars(obj).items():
                    if k.startswith("_") and k not in ("__init__", "__call__"):
                        continue
                    if isinstance(v, property):
                        for f in (v.fget, v.fset):
                            if f is not None:
                                yield "%s.%s.%s" % (name, attr, k), f
                    elif inspect.isfunction(v) and not getattr(v, "__dataclass_fields__", None):
                        yield "%s.%s.%s" % (name, attr, k), v


@pytest.mark.parametrize("qualname, fn", list(_public_callables()), ids=lambda v: v if isinstance(v, str) else "")
def test_public_function_is_annotated(qualname, fn):
    sig = inspect.signature(fn)
    missing = [n for n, p in sig.parameters.items() if p.annotation is p.empty and n not in ("self", "cls")]
    assert not missing, "%s: parameters without annotations: %s" % (qualname, missing)
    assert sig.return_annotation is not sig.empty, "%s has no return annotation" % qualname


def test_annotations_are_not_evaluated_at_import():
    """``from __future__ import annotations``: the annotations are strings, and the aliases
    module (fastgd/_typing.py, imported under TYPE_CHECKING) is not imported by fastgd."""
    ann = fastgd.adam_step.__annotations__
    assert ann["param"] == "FloatArray" and ann["return"] == "FloatArray"
    code = "import sys, fastgd, fastgd.optim, fastgd.descent; print('fastgd._typing' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_method_literal_is_the_descent_methods():
    """fastgd._typing.Method lists exactly what gradient_descent accepts by name."""
    from fastgd import _typing
    from fastgd.descent import _ALIASES, METHODS
    assert set(typing.get_args(_typing.Method)) == set(METHODS) | set(_ALIASES)
    assert set(typing.get_args(_typing.Backend)) == {"cython", "numba", "numpy"}


def test_tf_stub_is_generated_from_the_table():
    """fastgd/tf.pyi (the signatures of fastgd.tf's generated functions, for type checkers and
    editors) is what fastgd.tf.stub_source() makes of the table now."""
    import pathlib
    import fastgd.tf as T
    stub = pathlib.Path(T.__file__).with_suffix(".pyi")
    assert stub.read_text() == T.stub_source(), "regenerate src/fastgd/tf.pyi from fastgd.tf.stub_source()"
