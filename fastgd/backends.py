"""The backend registry: ``numpy`` (the reference, always), ``cython`` (compiled, the
default), ``numba`` (when numba imports).

A backend is a module-like object exposing the kernels under the reference's names
(``adam``, ``sgd``, ...) with the reference's signatures.  Compiled backends also take the
thread settings from here: kernels on arrays smaller than ``serial_cutoff()`` elements run
on one thread, larger ones on ``get_num_threads()`` threads (OpenMP static schedule in
Cython, a ``parallel=True`` variant in numba).
"""
import contextlib
import contextvars
import importlib
import os

__all__ = ["available_backends", "get_backend", "set_backend", "use_backend", "get_num_threads",
           "set_num_threads", "backend_module"]

# name -> module path, in order of preference
_KNOWN = {"cython": "fastgd._cython", "numba": "fastgd._numba", "numpy": "fastgd.reference"}
_loaded = {}
_errors = {}
# the default backend (set_backend) and a per-context override (use_backend: per thread and
# per asyncio task); each holds (name, module)
_default = ["cython", None]
_override = contextvars.ContextVar("fastgd_backend", default=None)


def _load(name):
    mod = _loaded.get(name)
    if mod is not None:
        return mod
    if type(name) is not str:
        raise TypeError("backend must be a str, got %s" % type(name).__name__)
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

def _env_threads():
    for var in ("FASTGD_NUM_THREADS", "OMP_NUM_THREADS"):
        v = os.environ.get(var, "").split(",")[0].strip()
        if v.isdigit() and int(v) > 0:
            return int(v)
    return os.cpu_count() or 1


_threads = {"n": _env_threads(),
            # below this many elements the compiled kernels run on one thread.  Measured on the
            # 2-core Zen 4 build machine (Adam, float32, alternated): two threads were 1.24-1.28x
            # slower than one at 16,384 elements and 0.94-0.96x at 24,576.
            "cutoff": int(os.environ.get("FASTGD_SERIAL_CUTOFF", 24576))}


def get_num_threads():
    """Threads the compiled kernels use on large arrays (default: OMP_NUM_THREADS, else all cores)."""
    return _threads["n"]


def set_num_threads(n):
    """Set the thread count of the compiled kernels (``n >= 1``)."""
    if type(n) is bool or not isinstance(n, int):
        raise TypeError("n must be an int, got %s" % type(n).__name__)
    if n < 1:
        raise ValueError("n must be >= 1, got %d" % n)
    _threads["n"] = n
    _notify()


def serial_cutoff():
    return _threads["cutoff"]


def set_serial_cutoff(n):
    """Arrays with fewer than ``n`` elements are stepped on one thread."""
    if type(n) is bool or not isinstance(n, int):
        raise TypeError("n must be an int, got %s" % type(n).__name__)
    if n < 0:
        raise ValueError("n must be >= 0, got %d" % n)
    _threads["cutoff"] = n
    _notify()


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
