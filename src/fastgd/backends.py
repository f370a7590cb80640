"""The backend registry: ``numpy`` (the reference, always), ``cython`` (compiled, the
default), ``numba`` (when numba imports).

A backend is a module-like object exposing the kernels under the reference's names
(``adam``, ``sgd``, ...) with the reference's signatures.  Compiled backends also take the
thread settings from here: kernels on arrays smaller than ``serial_cutoff()`` elements run
on one thread, larger ones on ``get_num_threads()`` threads (OpenMP static schedule in
Cython, a ``parallel=True`` variant in numba).

Threads: ``set_num_threads(n)`` fixes the count; without it (or after ``set_num_threads(None)``)
the kernels follow OpenMP's count for the calling thread, read at every call, so
``OMP_NUM_THREADS`` and ``threadpoolctl.threadpool_limits`` (the scikit-learn/joblib convention,
which calls ``omp_set_num_threads``) limit them.  The serial cutoff is measured on the running
machine the first time the Cython backend runs a kernel, then cached (:mod:`fastgd._calibrate`,
``fastgd.calibrate_serial_cutoff``).  A process forked after the kernels ran thread teams
steps on one thread (GNU libgomp cannot start a team in such a child: it would hang).

Environment, read once at import: ``FASTGD_NUM_THREADS`` (whole number in [1, 1024]) and
``FASTGD_SERIAL_CUTOFF`` (whole number in [0, 2**62]); blank means unset, anything else makes
``import fastgd`` raise a ValueError naming the variable and its value.  ``OMP_NUM_THREADS``
belongs to OpenMP and BLAS: a value fastgd cannot use is ignored with a RuntimeWarning (OpenMP
then uses all cores).  ``set_num_threads`` and ``set_serial_cutoff`` check their argument
(TypeError, ValueError) before changing anything.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import operator
import os
import re
import sys
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import ModuleType

    from ._typing import Backend

__all__ = ["available_backends", "get_backend", "set_backend", "use_backend", "get_num_threads",
           "set_num_threads", "serial_cutoff", "serial_cutoff_source", "set_serial_cutoff", "backend_module", "MAX_NUM_THREADS",
           "MAX_SERIAL_CUTOFF"]

# name -> module path, in order of preference
_KNOWN: dict[Backend, str] = {"cython": "fastgd._cython", "numba": "fastgd._numba", "numpy": "fastgd.reference"}
_loaded: dict[str, ModuleType] = {}
_errors: dict[str, str] = {}
# the default backend (set_backend) and a per-context override (use_backend: per thread and
# per asyncio task); each holds (name, module)
_default: list[Any] = ["cython", None]
_override: contextvars.ContextVar[tuple[Backend, ModuleType] | None] = contextvars.ContextVar(
    "fastgd_backend", default=None)


def _load(name):
    if type(name) is not str:  # exactly str, before any lookup: a subclass's __hash__/__eq__ is never run
        raise TypeError("backend must be a str, got %s" % type(name).__name__)
    mod = _loaded.get(name)
    if mod is not None:
        return mod
    if name not in _KNOWN:
        raise ValueError("backend must be one of %s, got %r" % (sorted(_KNOWN), name))
    if name in _errors:
        raise RuntimeError("backend %r is not available: %s" % (name, _errors[name]))
    try:
        mod = importlib.import_module(_KNOWN[name])
    except ImportError as exc:
        _errors[name] = "%s (%s)" % (exc, {"numba": "pip install 'fastgd[numba]'",
                                            "cython": "the compiled extensions did not build; reinstall"}.get(name, ""))
        raise RuntimeError("backend %r is not available: %s" % (name, _errors[name])) from exc
    _loaded[name] = mod
    if name == "cython":  # its first kernel of the process: this machine's serial cutoff
        from . import _calibrate
        _calibrate.at_first_use()
    return mod


def lazy_kernels(package: str, prefix: str, submodule: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for the backend package ``package``: names starting with
    ``prefix`` come from its ``submodule``, imported at the first use of one of them (fastgd.tf's
    kernels: not loaded with fastgd)."""
    def __getattr__(name: str) -> Any:
        if name.startswith(prefix):
            try:
                return getattr(importlib.import_module(package + "." + submodule), name)
            except AttributeError:
                pass
        raise AttributeError("module %r has no attribute %r" % (package, name))
    return __getattr__


def available_backends() -> list[Backend]:
    """Names of the backends that import on this machine, fastest first."""
    out: list[Backend] = []
    for name in _KNOWN:
        try:
            _load(name)
        except RuntimeError:
            continue
        out.append(name)
    return out


def get_backend() -> Backend:
    """The name of the current backend (``use_backend`` overrides ``set_backend``'s default)."""
    o = _override.get()
    return o[0] if o is not None else _default[0]


def set_backend(name: Backend) -> None:
    """Make ``name`` (``"cython"``, ``"numba"`` or ``"numpy"``) the default backend."""
    _default[1] = _load(name)
    _default[0] = name


@contextlib.contextmanager
def use_backend(name: Backend) -> Iterator[Backend]:
    """``with fastgd.use_backend("numba"): ...`` runs the block on that backend (in this thread
    or asyncio task; other threads keep the default)."""
    token = _override.set((name, _load(name)))
    try:
        yield name
    finally:
        _override.reset(token)


def backend_module(name: Backend | None = None) -> ModuleType:
    """The kernel namespace of ``name`` (default: the current backend)."""
    if name is None:
        o = _override.get()
        if o is not None:
            return o[1]
        mod = _default[1]
        if mod is None:
            mod = _default[1] = _load(_default[0])
        return mod
    return _load(name)


# ---------------------------------------------------------------------------------------
# threads
#
# Limits: num_threads in [1, MAX_NUM_THREADS], serial_cutoff in [0, MAX_SERIAL_CUTOFF].  1024
# threads is above any current machine's core count (oversubscribing more makes no sense), and
# a limit is needed: OpenMP cannot always start the team asked for, and libgomp then ends the
# process ("Thread creation failed") instead of raising (seen with 2**15 on a 2-core machine
# with 24 GiB); 2**62 elements (or sys.maxsize on a 32-bit build) fits
# their Py_ssize_t with room, and is larger than any array, i.e. "always serial".

MAX_NUM_THREADS = 1024
MAX_SERIAL_CUTOFF = min(2 ** 62, sys.maxsize)
_DEFAULT_SERIAL_CUTOFF = 24576


def _count(name, value, lo, hi):
    """An int (or numpy integer; not bool) in [lo, hi], as a Python int."""
    if type(value) is bool or type(value) is np.bool_ or not isinstance(value, (int, np.integer)):
        raise TypeError("%s must be an int, got %s" % (name, type(value).__name__))
    value = operator.index(value)
    if not lo <= value <= hi:
        raise ValueError("%s must be in [%d, %d], got %d" % (name, lo, hi, value))
    return value


_DIGITS = re.compile(r"[0-9]+")


def _short(raw):
    return raw if len(raw) <= 40 else raw[:40] + "..."


def _env_int(var, lo, hi):
    """The value of environment variable ``var`` as an int in [lo, hi], or None when it is
    unset or blank.  Anything else (``abc``, ``-1``, ``1.5``, out of range) is a ValueError that
    names the variable and its value: it is raised by ``import fastgd``."""
    raw = os.environ.get(var)
    if raw is None or not raw.strip():
        return None
    v = raw.strip()
    if not (len(v) <= 20 and _DIGITS.fullmatch(v) and lo <= int(v) <= hi):
        raise ValueError("environment variable %s=%r: expected a whole number in [%d, %d] (or leave it unset)"
                         % (var, _short(raw), lo, hi))
    return int(v)


def _env_threads():
    """FASTGD_NUM_THREADS (strict: a bad value is a ValueError at import), else None: follow
    OpenMP.  OMP_NUM_THREADS is OpenMP's (and BLAS's) own variable, read by OpenMP itself; a
    value it cannot use (its syntax is a comma-separated list per nesting level) gets a
    RuntimeWarning here, and OpenMP then uses all cores."""
    n = _env_int("FASTGD_NUM_THREADS", 1, MAX_NUM_THREADS)
    if n is not None:
        return n
    raw = os.environ.get("OMP_NUM_THREADS")
    if raw is not None and raw.strip():
        v = raw.split(",")[0].strip()
        if len(v) <= 20 and _DIGITS.fullmatch(v) and 1 <= int(v) <= MAX_NUM_THREADS:
            _omp_env[0] = int(v)
        else:
            warnings.warn("fastgd ignores environment variable OMP_NUM_THREADS=%r (its first entry is not a whole "
                          "number in [1, %d]); using all %d cores (set FASTGD_NUM_THREADS or call "
                          "fastgd.set_num_threads)" % (_short(raw), MAX_NUM_THREADS, os.cpu_count() or 1),
                          RuntimeWarning, stacklevel=2)
    return None


def _env_cutoff():
    return _env_int("FASTGD_SERIAL_CUTOFF", 0, MAX_SERIAL_CUTOFF)


def _cores():
    return min(os.cpu_count() or 1, MAX_NUM_THREADS)


def _omp_env_threads():
    """OMP_NUM_THREADS's first entry as OpenMP reads it, for when no compiled backend (so no
    OpenMP runtime) is there to ask: else all cores."""
    return _omp_env[0] or _cores()


_omp_env: list[int | None] = [None]  # OMP_NUM_THREADS's usable first entry (read by _env_threads)
# the OpenMP runtime's current thread count (the Cython backend registers
# fastgd._cython._core.openmp_threads at import); without it, OMP_NUM_THREADS or all cores
_openmp_threads: list[Callable[[], int]] = [_omp_env_threads]
_serial_only: list[Callable[[], bool]] = [bool]  # the Cython backend's "forked after a team ran" flag (bool() is False)

_threads: dict[str, Any] = {"n": _env_threads(),  # None: follow OpenMP (set_num_threads(None) comes back to it)
            "cutoff": _env_cutoff()}  # None until the compiled backend sets the machine's value
# where the serial cutoff came from: "FASTGD_SERIAL_CUTOFF", "set_serial_cutoff", "measured"
# (on this machine, now), "cache" (measured on this machine before: fastgd._calibrate),
# or "default" (the constant below: one thread, or nothing measured)
_cutoff_source = ["FASTGD_SERIAL_CUTOFF" if _threads["cutoff"] is not None else "default"]
if _threads["cutoff"] is None:
    # Measured on the 2-core Zen 4 build machine (Adam, float32, alternated): two threads were
    # 1.24-1.28x slower than one at 16,384 elements and 0.94-0.96x at 24,576.  Used until (and
    # unless) fastgd._calibrate measures the running machine.
    _threads["cutoff"] = _DEFAULT_SERIAL_CUTOFF


def get_num_threads() -> int:
    """Threads the compiled kernels use on large arrays (at least ``serial_cutoff()`` elements).

    The value given to :func:`set_num_threads`, or ``FASTGD_NUM_THREADS`` (read once at import:
    a whole number in [1, 1024]; any other value makes ``import fastgd`` raise a ValueError
    naming the variable).  Otherwise fastgd follows OpenMP's thread count for the calling
    thread, read at every call: ``OMP_NUM_THREADS`` (a value OpenMP cannot use is ignored with
    a RuntimeWarning), ``threadpoolctl.threadpool_limits`` (which calls OpenMP's
    ``omp_set_num_threads``), else all cores."""
    if _fork[1] or _serial_only[0]():
        return 1
    n = _threads["n"]
    return n if n is not None else _openmp_threads[0]()


def set_num_threads(n: int | None) -> None:
    """Set the thread count of the compiled kernels: an int in [1, MAX_NUM_THREADS] (1024),
    or None to follow OpenMP's thread count again (OMP_NUM_THREADS, threadpoolctl; the default
    unless FASTGD_NUM_THREADS is set).  TypeError for a non-int (bool included), ValueError out
    of range; either way nothing changes.  While a count is set, ``threadpool_limits`` and
    ``omp_set_num_threads`` do not change fastgd's kernels."""
    _set("n", None if n is None else _count("n", n, 1, MAX_NUM_THREADS))


def serial_cutoff() -> int:
    """Arrays with fewer elements than this are stepped on one thread.

    The value given to :func:`set_serial_cutoff`, or ``FASTGD_SERIAL_CUTOFF`` (read once at
    import: a whole number in [0, 2**62]; any other value makes ``import fastgd`` raise a
    ValueError naming the variable), or the crossover measured on this machine the first time
    the compiled backend was imported with more than one thread (kept in fastgd's cache
    directory: see :func:`fastgd.calibrate_serial_cutoff`), else 24576.
    :func:`serial_cutoff_source` says which."""
    return _threads["cutoff"]


def serial_cutoff_source() -> str:
    """Where :func:`serial_cutoff` comes from: ``"set_serial_cutoff"``, ``"FASTGD_SERIAL_CUTOFF"``,
    ``"measured"`` (measured on this machine by this process), ``"cache"`` (measured on this
    machine before, read from fastgd's cache) or ``"default"`` (24576: nothing measured, e.g.
    one thread, or no compiled backend)."""
    return _cutoff_source[0]


def set_serial_cutoff(n: int) -> None:
    """Arrays with fewer than ``n`` elements are stepped on one thread: an int in [0,
    MAX_SERIAL_CUTOFF] (2**62).  TypeError for a non-int (bool included), ValueError out of
    range; either way nothing changes."""
    _set("cutoff", _count("n", n, 0, MAX_SERIAL_CUTOFF))
    _cutoff_source[0] = "set_serial_cutoff"


def _machine_cutoff(value, source):
    """The compiled backend's measured (or cached) cutoff; an explicit setting wins."""
    if _cutoff_source[0] in ("default", "cache", "measured"):
        _set("cutoff", value)
        _cutoff_source[0] = source


def _set(key, value):
    """Change one setting and tell the compiled backends; if one of them refuses, put the old
    value back everywhere and re-raise (the checks above make that unreachable in practice)."""
    old = _threads[key]
    _threads[key] = value
    try:
        _notify()
    except BaseException:
        _threads[key] = old
        _notify()
        raise


# compiled backends keep a C copy of the settings (fastgd._cython._core.set_threads), so a
# kernel call does not call back into Python for them; each registers its setter here
_listeners: list[Callable[[int, int], Any]] = []


def on_thread_settings(setter: Callable[[int, int], Any], openmp_threads: Callable[[], int] | None = None,
                       serial_only: Callable[[], bool] | None = None) -> None:
    """Call ``setter(num_threads, serial_cutoff)`` now and whenever the settings change
    (``num_threads`` 0: none set, follow OpenMP).  ``openmp_threads``: the backend's OpenMP
    runtime's current thread count, which get_num_threads() then reports when none is set;
    ``serial_only``: True in a process forked after the backend ran a team (one thread there)."""
    if openmp_threads is not None:
        _openmp_threads[0] = openmp_threads
    if serial_only is not None:
        _serial_only[0] = serial_only
    _listeners.append(setter)
    setter(_threads["n"] or 0, _threads["cutoff"])


def _notify():
    for setter in _listeners:
        setter(_threads["n"] or 0, _threads["cutoff"])


def threads_for(size: int) -> int:
    """How many threads a compiled kernel uses for an array of ``size`` elements (the numba
    backend's choice between its serial and parallel variants)."""
    if size < _threads["cutoff"] or _fork[1]:
        return 1
    n = get_num_threads()
    if n > 1:
        _fork[0] = True
    return n


# fork: a child forked after the parent's kernels ran thread teams cannot run one (GNU libgomp
# hangs in its first parallel region; numba's OpenMP layer aborts the process), so it steps on
# one thread: _fork = [a numba kernel of this process chose its parallel variant, serial only]
_fork = [False, False]


def _after_fork_in_child():
    if _fork[0]:
        _fork[1] = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
