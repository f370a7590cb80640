"""The serial cutoff, measured on the running machine once and cached.

Below some array size, starting a team of OpenMP threads costs more than it saves; where that
crossover lies depends on the CPU, its caches, the thread count and the OpenMP runtime (24,576
float32 elements on the 2-core Zen 4 build machine; on a Zen 3 an Adam step of 20,000 elements
already ran faster on two threads).  So, like scikit-learn's OpenMP helpers, fastgd measures it
on the machine it runs on instead of trusting a constant from another one:

* the first time the Cython backend runs a kernel in a process (with more than one thread,
  and with neither ``FASTGD_SERIAL_CUTOFF`` nor :func:`fastgd.set_serial_cutoff` deciding), it
  looks the cutoff up in ``serial_cutoff.json`` in fastgd's cache directory
  (``FASTGD_CACHE_DIR``, else ``$XDG_CACHE_HOME/fastgd``, else ``~/.cache/fastgd``), keyed by
  fastgd's version, the SIMD variant, the CPU model, the core count and the thread count;
* when it is not there, it measures it (about 0.1 s: an Adam float32 step on one thread and on
  the team, alternated, at sizes from 2,048 to 262,144 elements; the cutoff is the smallest
  size from which the team is faster at every larger size measured) and writes it there (a
  cache that cannot be written is skipped silently: the value then holds for this process);
* :func:`fastgd.calibrate_serial_cutoff` measures again on demand and replaces the cached value.

:func:`fastgd.serial_cutoff_source` says where the value in use came from.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time

import numpy as np

from . import backends

__all__ = ["calibrate_serial_cutoff", "cache_file", "cpu_model"]

# array sizes tried (float32 elements), and the cutoff when the team never wins among them
SIZES = (2048, 4096, 6144, 8192, 12288, 16384, 24576, 32768, 49152, 65536, 98304, 131072, 196608, 262144)
NEVER = 2 * SIZES[-1]
_PAIRS = 7  # alternated (serial, team) samples per size; the minimum of each is compared
_WORK = 1 << 18  # elements stepped per sample (several calls at small sizes)
_FILE = "serial_cutoff.json"


def cache_file() -> str:
    """The path of the cache file (it may not exist)."""
    d = os.environ.get("FASTGD_CACHE_DIR", "").strip()
    if not d:
        base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "fastgd")
    return os.path.join(d, _FILE)


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what platform says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _key(simd_variant, threads):
    from . import __version__
    return "fastgd %s | %s | %s | %d cores | %d threads" % (__version__, simd_variant, cpu_model(),
                                                             os.cpu_count() or 1, threads)


def _read():
    try:
        with open(cache_file()) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _cached(key):
    entry = _read().get(key)
    if isinstance(entry, dict):
        v = entry.get("serial_cutoff")
        if type(v) is int and 0 <= v <= backends.MAX_SERIAL_CUTOFF:
            return v
    return None


def _save(key, value, threads, ratios):
    """Add ``key``'s entry (the cutoff, when, the thread count, the ratios it came from) to the
    cache file, atomically (a temporary file renamed over it).  Returns False when the
    directory cannot be written."""
    path = cache_file()
    data = _read()
    data[key] = {"serial_cutoff": value, "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "threads": threads,
                 "team_over_serial": {str(k): round(r, 3) for k, r in ratios.items()}}
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".serial_cutoff.")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        return False
    return True


def measure(kernels, core, threads):
    """(cutoff, {size: team time / serial time}) for Adam float32 on this machine: ``kernels``
    is the Cython rules module, ``core`` fastgd._cython._core (its thread settings are put back
    afterwards)."""
    n = SIZES[-1]
    p = np.zeros(n, np.float32)
    g = np.full(n, 1e-3, np.float32)
    m = np.zeros(n, np.float32)
    v = np.zeros(n, np.float32)
    clock = time.perf_counter
    ratios = {}
    try:
        for size in SIZES:
            ps, gs, ms, vs = p[:size], g[:size], m[:size], v[:size]
            calls = max(1, _WORK // size)
            best = [float("inf"), float("inf")]
            for k in range(2 * _PAIRS + 2):  # two warm-up samples, then alternated pairs
                team = k % 2
                core.set_threads(threads if team else 1, 0)
                t0 = clock()
                for _ in range(calls):
                    kernels.adam(ps, gs, ms, vs, None, 1.0, 1e-3, 0.9, 0.999, 1e-8, 0.0, False, False, False)
                t = clock() - t0
                if k >= 2:
                    best[team] = min(best[team], t)
            ratios[size] = best[1] / best[0]
    finally:
        backends._notify()  # the settings of fastgd.backends, as they were
    return crossover(ratios), ratios


def crossover(ratios: dict[int, float]) -> int:
    """The smallest size from which the team (time ratio team / serial below 1) wins at every
    larger size measured; NEVER when it does not win at the largest."""
    cutoff = NEVER
    for size in sorted(ratios, reverse=True):
        if not ratios[size] < 1.0:
            break
        cutoff = size
    return cutoff


def _kernels():
    from . import _cython
    return _cython._rules, _cython._core, _cython.SIMD_VARIANT


def at_first_use() -> None:
    """Called by fastgd.backends when the Cython backend runs its first kernel of the process:
    the cached cutoff of this machine, else a measurement (cached), unless the cutoff was set
    (FASTGD_SERIAL_CUTOFF, set_serial_cutoff) or only one thread is in use."""
    if backends.serial_cutoff_source() != "default":
        return
    threads = backends.get_num_threads()
    if threads <= 1:
        return
    kernels, core, simd = _kernels()
    key = _key(simd, threads)
    v = _cached(key)
    if v is not None:
        backends._machine_cutoff(v, "cache")
        return
    v, ratios = measure(kernels, core, threads)
    backends._machine_cutoff(v, "measured")
    _save(key, v, threads, ratios)


def calibrate_serial_cutoff(*, save: bool = True) -> int:
    """Measure the serial cutoff on this machine now, with the current thread count, make it the
    one in use (replacing any set before) and, with ``save=True``, store it in the cache file
    (:func:`cache_file`) for later processes.  Returns the cutoff (an int; 524288 when the
    team was not faster at any size measured).  ValueError when only one thread is in use
    (``fastgd.get_num_threads() == 1``): there is nothing to compare.

    The measurement (about 0.1 s) times a float32 Adam step on one thread and on the team,
    alternated, at sizes from 2,048 to 262,144 elements: keep the machine otherwise idle."""
    if type(save) is not bool:
        raise TypeError("save must be a bool, got %s" % type(save).__name__)
    threads = backends.get_num_threads()
    if threads <= 1:
        raise ValueError("calibrate_serial_cutoff needs more than one thread, and fastgd.get_num_threads() is 1")
    kernels, core, simd = _kernels()
    v, ratios = measure(kernels, core, threads)
    backends.set_serial_cutoff(v)
    backends._cutoff_source[0] = "measured"
    if save:
        _save(_key(simd, threads), v, threads, ratios)
    return v
