"""The backend registry: ``numpy`` (the reference, always), ``cython`` (compiled, the
default), ``numba`` (when numba imports).

A backend is a module-like object exposing the kernels under the reference's names
(``adam``, ``sgd``, ...) with the reference's signatures.  Compiled backends also take the
thread settings from here: kernels on arrays smaller than ``serial_cutoff()`` elements run
on one thread, larger ones on ``get_num_threads()`` threads (OpenMP static schedule in
Cython, a ``parallel=True`` variant in numba).

Environment, read once at import: ``FASTGD_NUM_THREADS`` (whole number in [1, 1024]) and
``FASTGD_SERIAL_CUTOFF`` (whole number in [0, 2**62]); blank means unset, anything else makes
``import fastgd`` raise a ValueError naming the variable and its value.  ``OMP_NUM_THREADS``
(the default thread count when FASTGD_NUM_THREADS is unset) belongs to OpenMP and BLAS too: a
value fastgd cannot use is ignored with a RuntimeWarning.  ``set_num_threads`` and
``set_serial_cutoff`` check their argument (TypeError, ValueError) before changing anything.
"""
import contextlib
import contextvars
import importlib
import operator
import os
import re
import sys
import warnings

import numpy as np

__all__ = ["available_backends", "get_backend", "set_backend", "use_backend", "get_num_threads",
           "set_num_threads", "serial_cutoff", "set_serial_cutoff", "backend_module", "MAX_NUM_THREADS",
           "MAX_SERIAL_CUTOFF"]

# name -> module path, in order of preference
_KNOWN = {"cython": "fastgd._cython", "numba": "fastgd._numba", "numpy": "fastgd.reference"}
_loaded = {}
_errors = {}
# the default backend (set_backend) and a per-context override (use_backend: per thread and
# per asyncio task); each holds (name, module)
_default = ["cython", None]
_override = contextvars.ContextVar("fastgd_backend", default=None)


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
    return mod


def available_backends():
    """Names of the backends that import on this machine, fastest first."""
    out = []
    for name in _KNOWN:
        try:
            _load(name)
        except RuntimeError:
            continue
        out.append(name)
    return out


def get_backend():
    """The name of the current backend (``use_backend`` overrides ``set_backend``'s default)."""
    o = _override.get()
    return o[0] if o is not None else _default[0]


def set_backend(name):
    """Make ``name`` (``"cython"``, ``"numba"`` or ``"numpy"``) the default backend."""
    _default[1] = _load(name)
    _default[0] = name


@contextlib.contextmanager
def use_backend(name):
    """``with fastgd.use_backend("numba"): ...`` runs the block on that backend (in this thread
    or asyncio task; other threads keep the default)."""
    token = _override.set((name, _load(name)))
    try:
        yield name
    finally:
        _override.reset(token)


def backend_module(name=None):
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
    """FASTGD_NUM_THREADS (strict: a bad value is a ValueError at import), else the first entry
    of OMP_NUM_THREADS (shared with OpenMP and BLAS, whose syntax is a comma-separated list per
    nesting level: a value fastgd cannot use is ignored with a RuntimeWarning), else all cores."""
    n = _env_int("FASTGD_NUM_THREADS", 1, MAX_NUM_THREADS)
    if n is not None:
        return n
    raw = os.environ.get("OMP_NUM_THREADS")
    if raw is not None and raw.strip():
        v = raw.split(",")[0].strip()
        if len(v) <= 20 and _DIGITS.fullmatch(v) and 1 <= int(v) <= MAX_NUM_THREADS:
            return int(v)
        warnings.warn("fastgd ignores environment variable OMP_NUM_THREADS=%r (its first entry is not a whole "
                      "number in [1, %d]); using all %d cores (set FASTGD_NUM_THREADS or call "
                      "fastgd.set_num_threads)" % (_short(raw), MAX_NUM_THREADS, os.cpu_count() or 1),
                      RuntimeWarning, stacklevel=2)
    return min(os.cpu_count() or 1, MAX_NUM_THREADS)


def _env_cutoff():
    v = _env_int("FASTGD_SERIAL_CUTOFF", 0, MAX_SERIAL_CUTOFF)
    return _DEFAULT_SERIAL_CUTOFF if v is None else v


_threads = {"n": _env_threads(),
            # below this many elements the compiled kernels run on one thread.  Measured on the
            # 2-core Zen 4 build machine (Adam, float32, alternated): two threads were 1.24-1.28x
            # slower than one at 16,384 elements and 0.94-0.96x at 24,576.
            "cutoff": _env_cutoff()}


def get_num_threads():
    """Threads the compiled kernels use on large arrays.

    Default, read once at import: ``FASTGD_NUM_THREADS`` (a whole number in [1, 1024]; any
    other value makes ``import fastgd`` raise a ValueError naming the variable), else the first
    entry of ``OMP_NUM_THREADS`` (a value outside [1, 1024] or not a number is ignored with a
    RuntimeWarning), else all cores."""
    return _threads["n"]


def set_num_threads(n):
    """Set the thread count of the compiled kernels: an int in [1, MAX_NUM_THREADS] (1024).
    TypeError for a non-int (bool included), ValueError out of range; either way nothing
    changes."""
    _set("n", _count("n", n, 1, MAX_NUM_THREADS))


def serial_cutoff():
    """Arrays with fewer elements than this are stepped on one thread.  Default 24576, or
    ``FASTGD_SERIAL_CUTOFF`` read once at import (a whole number in [0, 2**62]; any other value
    makes ``import fastgd`` raise a ValueError naming the variable)."""
    return _threads["cutoff"]


def set_serial_cutoff(n):
    """Arrays with fewer than ``n`` elements are stepped on one thread: an int in [0,
    MAX_SERIAL_CUTOFF] (2**62).  TypeError for a non-int (bool included), ValueError out of
    range; either way nothing changes."""
    _set("cutoff", _count("n", n, 0, MAX_SERIAL_CUTOFF))


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
_listeners = []


def on_thread_settings(setter):
    """Call ``setter(num_threads, serial_cutoff)`` now and whenever the settings change."""
    _listeners.append(setter)
    setter(_threads["n"], _threads["cutoff"])


def _notify():
    for setter in _listeners:
        setter(_threads["n"], _threads["cutoff"])


def threads_for(size):
    """How many threads a compiled kernel uses for an array of ``size`` elements."""
    return 1 if size < _threads["cutoff"] else _threads["n"]
