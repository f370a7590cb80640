"""The backend switch, the thread settings and build_info()."""
import threading

import numpy as np
import pytest

import fastgd
from fastgd import backends
from fastgd._rules import KERNELS, RULES as TABLE

pytestmark = pytest.mark.usefixtures("restore_globals")

KNOWN = ("cython", "numba", "numpy")


def test_available_backends():
    avail = fastgd.available_backends()
    assert "numpy" in avail
    assert set(avail) <= set(KNOWN)
    assert list(avail) == [b for b in KNOWN if b in avail]       # fastest first, as documented
    assert len(set(avail)) == len(avail)


def test_default_backend_is_available():
    assert fastgd.get_backend() in fastgd.available_backends()


def test_set_and_get_backend(backend):
    fastgd.set_backend(backend)
    assert fastgd.get_backend() == backend


@pytest.mark.parametrize("bad,exc", [("bogus", ValueError), ("", ValueError), ("NumPy", ValueError),
                                     (None, TypeError), (3, TypeError)])
def test_set_backend_rejects_unknown(bad, exc):
    before = fastgd.get_backend()
    with pytest.raises(exc, match="backend"):
        fastgd.set_backend(bad)
    assert fastgd.get_backend() == before


def test_use_backend_restores_on_exit(backend):
    fastgd.set_backend("numpy")
    with fastgd.use_backend(backend) as name:
        assert name == backend
        assert fastgd.get_backend() == backend
    assert fastgd.get_backend() == "numpy"


def test_use_backend_restores_after_exception(backend):
    fastgd.set_backend("numpy")
    with pytest.raises(KeyError):
        with fastgd.use_backend(backend):
            assert fastgd.get_backend() == backend
            raise KeyError("boom")
    assert fastgd.get_backend() == "numpy"


def test_use_backend_nests(backend):
    fastgd.set_backend("numpy")
    with fastgd.use_backend(backend):
        with fastgd.use_backend("numpy"):
            assert fastgd.get_backend() == "numpy"
        assert fastgd.get_backend() == backend
    assert fastgd.get_backend() == "numpy"


def test_use_backend_rejects_unknown():
    before = fastgd.get_backend()
    with pytest.raises(ValueError, match="backend"):
        with fastgd.use_backend("bogus"):
            pass
    assert fastgd.get_backend() == before


def test_use_backend_is_per_thread(backend):
    """use_backend changes the current thread only; set_backend is the default for all."""
    fastgd.set_backend("numpy")
    seen = []
    with fastgd.use_backend(backend):
        t = threading.Thread(target=lambda: seen.append(fastgd.get_backend()))
        t.start()
        t.join()
    assert seen == ["numpy"]


# ---------------------------------------------------------------------------------------
# which kernel actually runs: a spy in the backend's namespace records the calls

@pytest.fixture
def spies(monkeypatch):
    """Replace ``adam`` in every available backend's kernel namespace by a wrapper that records
    the backend's name, then calls the real kernel."""
    calls = []
    for name in fastgd.available_backends():
        mod = backends.backend_module(name)
        real = mod.adam

        def spy(*a, _real=real, _name=name, **k):
            calls.append(_name)
            return _real(*a, **k)

        monkeypatch.setattr(mod, "adam", spy)
    return calls


def _adam(**kw):
    p = np.ones(8)
    return fastgd.adam_step(p, np.ones(8), np.zeros(8), np.zeros(8), step=1, **kw)


def test_dispatch_follows_set_backend(backend, spies):
    fastgd.set_backend(backend)
    _adam()
    assert spies == [backend]


def test_dispatch_per_call_backend_wins(backend, spies):
    other = "numpy" if backend != "numpy" else fastgd.available_backends()[0]
    fastgd.set_backend(other)
    with fastgd.use_backend(other):
        _adam(backend=backend)
    assert spies == [backend]


def test_dispatch_follows_use_backend(backend, spies):
    fastgd.set_backend("numpy")
    with fastgd.use_backend(backend):
        _adam()
    _adam()
    assert spies == [backend, "numpy"]


@pytest.mark.parametrize("bad,exc", [("bogus", ValueError), ("NUMPY", ValueError), (3, TypeError),
                                     (b"numpy", TypeError)])
def test_per_call_unknown_backend(bad, exc):
    with pytest.raises(exc, match="backend"):
        _adam(backend=bad)


def test_results_agree_across_backends(backend):
    """A smoke check of the switch (the oracle tests compare every rule in depth)."""
    p = np.linspace(-1, 1, 11)
    fastgd.adam_step(p, np.cos(p), np.zeros(11), np.zeros(11), step=1, lr=0.1, backend=backend)
    q = np.linspace(-1, 1, 11)
    fastgd.adam_step(q, np.cos(q), np.zeros(11), np.zeros(11), step=1, lr=0.1, backend="numpy")
    np.testing.assert_allclose(p, q, rtol=1e-15)


# ---------------------------------------------------------------------------------------
# threads

def test_set_num_threads():
    for n in (1, 2, 3):
        fastgd.set_num_threads(n)
        assert fastgd.get_num_threads() == n


@pytest.fixture
def listener():
    """The calls the compiled backends' setters would get (a spy registered like them)."""
    calls = []
    backends.on_thread_settings(lambda n, cutoff: calls.append((n, cutoff)))
    spy = backends._listeners[-1]
    calls.clear()
    yield calls
    backends._listeners.remove(spy)


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-1, ValueError), (1.5, TypeError), (2.0, TypeError),
                                     (True, TypeError), ("2", TypeError), ("", TypeError),
                                     (2 ** 31, ValueError), (2 ** 63, ValueError), (1025, ValueError),
                                     (2 ** 15, ValueError),
                                     (np.bool_(True), TypeError), (np.float64(2), TypeError), (-2 ** 64, ValueError)])
def test_set_num_threads_rejects(bad, exc, listener):
    """Checked before anything changes: neither the setting nor the C copies see the value."""
    before = fastgd.get_num_threads()
    with pytest.raises(exc, match="n must be"):
        fastgd.set_num_threads(bad)
    assert fastgd.get_num_threads() == before
    assert listener == []


def test_set_num_threads_limits(listener):
    fastgd.set_num_threads(backends.MAX_NUM_THREADS)
    assert fastgd.get_num_threads() == 1024
    fastgd.set_num_threads(np.int64(3))  # numpy integers are ints
    assert fastgd.get_num_threads() == 3 and type(fastgd.get_num_threads()) is int
    assert listener[-1][0] == 3


def test_serial_cutoff(listener):
    fastgd.set_serial_cutoff(0)
    assert fastgd.serial_cutoff() == 0
    fastgd.set_serial_cutoff(2 ** 62)
    assert fastgd.serial_cutoff() == backends.MAX_SERIAL_CUTOFF == 2 ** 62
    fastgd.set_serial_cutoff(np.uint64(1000))
    assert fastgd.serial_cutoff() == 1000 and type(fastgd.serial_cutoff()) is int
    del listener[:]
    for bad, exc in ((-1, ValueError), (1.5, TypeError), (True, TypeError), ("10", TypeError), (None, TypeError),
                     (2 ** 63, ValueError), (2 ** 62 + 1, ValueError), (2 ** 64, ValueError), (-2 ** 63, ValueError),
                     (np.bool_(False), TypeError)):
        with pytest.raises(exc, match="n must be"):
            fastgd.set_serial_cutoff(bad)
        assert fastgd.serial_cutoff() == 1000
    assert listener == []


def test_refused_setting_is_rolled_back(listener):
    """A compiled backend's setter that refuses a value: every copy gets the old one back."""
    fastgd.set_num_threads(2)

    def refuse(n, cutoff):
        if n == 5:
            raise OverflowError("refused")
    backends._listeners.append(refuse)
    try:
        with pytest.raises(OverflowError):
            fastgd.set_num_threads(5)
    finally:
        backends._listeners.remove(refuse)
    assert fastgd.get_num_threads() == 2
    assert listener[-1][0] == 2


def _import_with(env):
    """``import fastgd`` in a fresh interpreter with these thread variables (the others unset)."""
    import os
    import subprocess
    import sys
    full = {k: v for k, v in os.environ.items() if k not in ("FASTGD_NUM_THREADS", "FASTGD_SERIAL_CUTOFF",
                                                               "OMP_NUM_THREADS")}
    full.update(env)
    home = os.path.dirname(os.path.dirname(os.path.abspath(fastgd.__file__)))  # -c finds this same fastgd
    return subprocess.run([sys.executable, "-c", "import fastgd; print(fastgd.get_num_threads(), "
                           "fastgd.serial_cutoff())"], env=full, cwd=home, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("var,value", [
    ("FASTGD_SERIAL_CUTOFF", "abc"), ("FASTGD_SERIAL_CUTOFF", "-1"), ("FASTGD_SERIAL_CUTOFF", "1.5"),
    ("FASTGD_SERIAL_CUTOFF", "1e4"), ("FASTGD_SERIAL_CUTOFF", str(2 ** 63)), ("FASTGD_SERIAL_CUTOFF", "1" * 5000),
    ("FASTGD_SERIAL_CUTOFF", "\u00b2"), ("FASTGD_NUM_THREADS", "abc"), ("FASTGD_NUM_THREADS", "0"),
    ("FASTGD_NUM_THREADS", "-2"), ("FASTGD_NUM_THREADS", "2,2"), ("FASTGD_NUM_THREADS", str(2 ** 31))])
def test_bad_environment_variable_is_a_clear_import_error(var, value):
    proc = _import_with({var: value})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: environment variable %s=%s" % (var, repr(value[:40])[:-1])), last
    assert "expected a whole number in [" in last and len(last) < 300, last


@pytest.mark.parametrize("env,threads,cutoff", [
    ({"FASTGD_SERIAL_CUTOFF": " 100 "}, None, 100), ({"FASTGD_SERIAL_CUTOFF": ""}, None, 24576),
    ({"FASTGD_SERIAL_CUTOFF": "0"}, None, 0), ({"FASTGD_NUM_THREADS": "3", "OMP_NUM_THREADS": "2"}, 3, 24576),
    ({"OMP_NUM_THREADS": "2"}, 2, 24576), ({"OMP_NUM_THREADS": "2,1"}, 2, 24576),
    ({"FASTGD_NUM_THREADS": " "}, None, 24576)])
def test_environment_variables(env, threads, cutoff):
    import os
    proc = _import_with(env)
    assert proc.returncode == 0, proc.stderr
    n, c = map(int, proc.stdout.split())
    assert n == (threads if threads is not None else min(os.cpu_count() or 1, 1024)) and c == cutoff
    assert "Warning" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5", str(2 ** 40)])
def test_unusable_omp_num_threads_is_ignored_with_a_warning(value):
    """OMP_NUM_THREADS belongs to OpenMP and BLAS as well: fastgd warns and uses all cores."""
    import os
    proc = _import_with({"OMP_NUM_THREADS": value})
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[0]) == min(os.cpu_count() or 1, 1024)
    assert "RuntimeWarning: fastgd ignores environment variable OMP_NUM_THREADS=%r" % value in proc.stderr, proc.stderr


def _step_all(rule, backend, n_threads, n):
    """One step of ``rule`` (every optional state in use) on n elements with n_threads threads."""
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(n) for _ in range(5)]
    p, g, a, b, c = arrays
    b, c = np.abs(b), np.abs(c)
    fastgd.set_num_threads(n_threads)
    kw = dict(backend=backend)
    if rule == "sgd":
        fastgd.sgd_step(p, g, a, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, **kw)
    elif rule in ("adam", "adamw"):
        getattr(fastgd, rule + "_step")(p, g, a, b, step=2, amsgrad=True, max_exp_avg_sq=c, weight_decay=0.01, **kw)
    elif rule == "adamax":
        fastgd.adamax_step(p, g, a, b, step=2, **kw)
    elif rule == "nadam":
        fastgd.nadam_step(p, g, a, b, step=2, **kw)
    elif rule == "radam":
        fastgd.radam_step(p, g, a, b, step=7, **kw)
    elif rule == "adagrad":
        fastgd.adagrad_step(p, g, b, step=2, lr_decay=0.1, **kw)
    elif rule == "adadelta":
        fastgd.adadelta_step(p, g, b, c, **kw)
    elif rule == "rmsprop":
        fastgd.rmsprop_step(p, g, b, momentum_buffer=a, grad_avg=c * 0.01, momentum=0.9, centered=True, **kw)
    elif rule == "lion":
        fastgd.lion_step(p, g, a, weight_decay=0.1, **kw)
    return p, a, b, c


RULES = tuple(TABLE)  # every rule of the table


@pytest.mark.parametrize("rule", RULES)
def test_one_and_two_threads_agree(rule, compiled_backend):
    """Above the serial cutoff the kernels run threaded; every element is computed by the same
    code either way, so 1 and 2 threads agree to the last bit but for the FMA contraction a
    vectorized body and its scalar remainder may apply differently at chunk edges: rtol is
    4 ulp."""
    n = max(fastgd.serial_cutoff(), 1000) * 2 + 17
    one = _step_all(rule, compiled_backend, 1, n)
    two = _step_all(rule, compiled_backend, 2, n)
    for x, y in zip(one, two):
        np.testing.assert_allclose(x, y, rtol=4 * np.finfo(np.float64).eps, atol=0)


# ---------------------------------------------------------------------------------------
# build_info

def test_build_info():
    info = fastgd.build_info()
    for key in ("version", "compiler", "openmp", "num_threads", "backends"):
        assert key in info, key
    assert info["version"] == fastgd.__version__
    assert info["num_threads"] == fastgd.get_num_threads()
    assert info["backends"] == fastgd.available_backends()
    assert isinstance(info["openmp"], bool)
    if "cython" in info["backends"]:
        assert isinstance(info["compiler"], str) and info["compiler"]
    else:
        assert info["compiler"] is None and info["openmp"] is False


def test_build_info_follows_thread_setting():
    fastgd.set_num_threads(1)
    assert fastgd.build_info()["num_threads"] == 1


# ---------------------------------------------------------------------------------------
# the thread split of the single-tensor Cython kernels: cache-line-aligned static shares

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0, 1, 5, 15])
@pytest.mark.parametrize("n", [1, 17, 1000, 24576 + 7, 100_003])
@pytest.mark.parametrize("nthreads", [1, 2, 3, 8])
def test_thread_spans_are_cache_line_aligned(dtype, offset, n, nthreads):
    pytest.importorskip("fastgd._cython")
    from fastgd._cython import _core
    base = np.zeros(n + 64, dtype=dtype)
    a = base[offset:offset + n]
    spans = _core.thread_spans(a, nthreads)
    item = a.itemsize
    per_line = 64 // item
    head = (-a.ctypes.data % 64) // item  # elements before the first cache-line boundary
    # the head is stepped first, on its own; the threads share [head, n)
    assert len(spans) == nthreads + 1 and spans[0] == min(head, n) and spans[-1] == n
    assert all(x <= y for x, y in zip(spans, spans[1:]))
    for s in spans[:-1]:
        if s < n:  # every share starts on a cache line
            assert (a.ctypes.data + s * item) % 64 == 0, (s, spans)
    if n > head + per_line * nthreads:  # every thread gets work, shares within a line (+head) of each other
        sizes = [y - x for x, y in zip(spans, spans[1:])]
        assert max(sizes) - min(sizes) <= per_line + head + per_line, sizes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0, 3, 13])
@pytest.mark.parametrize("rule", ["adam", "sgd", "rmsprop"])
def test_threaded_split_matches_reference(rule, dtype, offset, compiled_backend, restore_globals):
    """Two threads with the split at any alignment (arrays starting mid cache line) give the
    reference's values, element for element."""
    fastgd.set_serial_cutoff(0)
    fastgd.set_num_threads(2)
    n = 4099
    rng = np.random.default_rng(11)

    def arrays():
        out = []
        for _ in range(4):
            buf = np.empty(n + 16, dtype=dtype)
            a = buf[offset:offset + n]
            a[...] = np.abs(rng.standard_normal(n)) if len(out) == 3 else rng.standard_normal(n)
            out.append(a)
        return out

    ours = arrays()
    ref = [a.copy() for a in ours]
    for step in (1, 2, 3):
        for arrs, backend in ((ours, compiled_backend), (ref, "numpy")):
            p, g, m, v = arrs
            if rule == "adam":
                fastgd.adam_step(p, g, m, v, step=step, lr=0.01, weight_decay=0.1, backend=backend)
            elif rule == "sgd":
                fastgd.sgd_step(p, g, m, lr=0.1, momentum=0.9, nesterov=True, step=step, backend=backend)
            else:
                fastgd.rmsprop_step(p, g, v, momentum_buffer=m, momentum=0.5, lr=0.01, backend=backend)
    for x, y in zip(ours, ref):
        np.testing.assert_array_equal(x, y)


KERNEL_NAMES = KERNELS  # the rule table's kernels


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_kernel_signatures_match_reference(name, compiled_backend):
    """The reference's signature is the backends' contract: same parameters, same order (the
    public functions may pass hyperparameters by position)."""
    import inspect
    from fastgd.backends import backend_module
    ref = inspect.signature(getattr(backend_module("numpy"), name))
    ours = inspect.signature(getattr(backend_module(compiled_backend), name))
    assert [(p.name, p.kind) for p in ours.parameters.values()] == \
        [(p.name, p.kind) for p in ref.parameters.values()]


def test_numba_variants_have_their_own_cache_files():
    """numba's cache key ignores the jit flags: were the serial and the parallel=True variant
    of a kernel one function, they would share one cache entry, and whichever compiled first
    would be loaded for both in every later process.  Each pair of every numba module
    (_numba.rules, .dense, .tf) must therefore index a cache file of its own."""
    pytest.importorskip("numba")
    import importlib
    pairs = 0
    for mod_name in ("fastgd._numba.rules", "fastgd._numba.dense", "fastgd._numba.tf"):
        mod = importlib.import_module(mod_name)
        for name, value in vars(mod).items():
            if name.endswith("_k") and isinstance(value, tuple) and len(value) == 2:
                serial, parallel = value
                a = serial._cache._cache_file._index_path
                b = parallel._cache._cache_file._index_path
                assert a != b, (mod_name, name, a)
                pairs += 1
    assert pairs >= 30
