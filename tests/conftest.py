"""Shared fixtures: every test runs on every backend (a backend that does not import shows up
as a *skip* with the import error as reason) and on both float dtypes; hypothesis profiles.

Hypothesis profiles (choose with ``HYPOTHESIS_PROFILE=<name>``):
  ci   (default) derandomized, no example database, example counts sized so the whole suite
       runs in a few minutes on 2 cores (numba compiles each kernel once, on first use);
  dev  10x the examples, random seeds: for hunting bugs locally, not for CI.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import fastgd
from fastgd.backends import backend_module

settings.register_profile(
    "ci", deadline=None, max_examples=40, derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "dev", deadline=None, max_examples=400, derandomize=False, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ALL_BACKENDS = ("cython", "numba", "numpy")
COMPILED_BACKENDS = ("cython", "numba")
DTYPES = (np.float32, np.float64)


def _backend_param(name):
    """pytest.param for one backend; skipped, with the import error as reason, if it does
    not import here (so a missing backend is visible in the summary, never silently gone)."""
    try:
        backend_module(name)
    except (RuntimeError, ImportError) as exc:
        # CI sets FASTGD_REQUIRE_BACKENDS=cython,numba,numpy: there a missing backend is a
        # failure (e.g. the source tree shadowing the installed, compiled package), not a skip.
        if name in os.environ.get("FASTGD_REQUIRE_BACKENDS", "").split(","):
            raise RuntimeError("backend %r is required here but does not import: %s" % (name, exc)) from exc
        return pytest.param(name, id=name, marks=pytest.mark.skip(reason=str(exc)))
    return pytest.param(name, id=name)


@pytest.fixture(scope="session", params=[_backend_param(b) for b in ALL_BACKENDS])
def backend(request):
    """Every backend, the numpy reference included."""
    return request.param


@pytest.fixture(scope="session", params=[_backend_param(b) for b in COMPILED_BACKENDS])
def compiled_backend(request):
    """The compiled backends only: the ones compared against the numpy reference (comparing
    the reference with itself could not fail)."""
    return request.param


# ---------------------------------------------------------------------------------------
# torch: optional locally (a skip), required where FASTGD_REQUIRE_TORCH=1 (CI: a failure)

_TRUE, _FALSE = ("1", "true", "yes"), ("", "0", "false", "no")


def torch_required():
    """Does the environment say torch must be importable (``FASTGD_REQUIRE_TORCH=1``)?
    A value other than 1/true/yes or 0/false/no/unset is itself an error (a typo in CI must
    not turn the torch comparisons back into silent skips)."""
    value = os.environ.get("FASTGD_REQUIRE_TORCH", "").strip().lower()
    if value not in _TRUE + _FALSE:
        pytest.fail("FASTGD_REQUIRE_TORCH=%r: use 1 (torch required) or 0" % value, pytrace=False)
    return value in _TRUE


def torch_or_skip():
    """``import torch`` for a test that compares with it.  Without torch the test is skipped
    (the reason says so), unless ``FASTGD_REQUIRE_TORCH=1`` (CI), where it fails: there a
    missing torch must not silently drop every comparison with torch.optim."""
    try:
        import torch
        return torch
    except ImportError as exc:
        error = exc
    # outside the except block: the report shows this message, not the chained ImportError
    if torch_required():
        pytest.fail("torch is required here (FASTGD_REQUIRE_TORCH=1) but does not import: %s" % error,
                    pytrace=False)
    pytest.skip("torch not installed (%s); FASTGD_REQUIRE_TORCH=1 makes this a failure" % error)


@pytest.fixture(name="torch")
def torch_fixture():
    """The torch module (see ``torch_or_skip``): skip without torch, fail if it is required."""
    return torch_or_skip()


@pytest.fixture(scope="session", params=[pytest.param(d, id=np.dtype(d).name) for d in DTYPES])
def dtype(request):
    return request.param


def _saved_globals():
    """The default backend, thread count (None: following OpenMP) and serial cutoff with its
    source (called outside any ``use_backend`` block, so get_backend() is the default)."""
    from fastgd import backends
    return (fastgd.get_backend(), backends._threads["n"], fastgd.serial_cutoff(),
            fastgd.serial_cutoff_source())


def _restore(saved):
    from fastgd import backends
    fastgd.set_backend(saved[0])
    fastgd.set_num_threads(saved[1])
    fastgd.set_serial_cutoff(saved[2])
    backends._cutoff_source[0] = saved[3]


@pytest.fixture(autouse=True, scope="session")
def _pristine_globals():
    """Give the user's global settings back after the session."""
    saved = _saved_globals()
    yield
    _restore(saved)


@pytest.fixture
def restore_globals():
    """For tests that change the default backend, the thread count or the serial cutoff:
    put them back afterwards, whatever the test did."""
    saved = _saved_globals()
    yield
    _restore(saved)
