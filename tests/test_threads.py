"""Thread control by the ecosystem's conventions (threadpoolctl, OMP_NUM_THREADS), the serial
cutoff measured on the running machine (fastgd._calibrate), and fork safety.

Everything that depends on process-wide state (OpenMP's thread count, the cache file, fork)
runs in a fresh interpreter, so the suite's own settings never leak in or out."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastgd
from fastgd import _calibrate, backends

pytestmark = pytest.mark.skipif("cython" not in fastgd.available_backends(),
                                reason="the compiled (Cython) backend did not import")

_VARS = ("FASTGD_NUM_THREADS", "FASTGD_SERIAL_CUTOFF", "OMP_NUM_THREADS", "FASTGD_CACHE_DIR", "XDG_CACHE_HOME")


def _run(code, env=None, timeout=120):
    """Run ``code`` in a fresh interpreter that imports this same fastgd; the thread and cache
    variables are unset unless ``env`` sets them.  Returns the CompletedProcess."""
    full = {k: v for k, v in os.environ.items() if k not in _VARS}
    full.update(env or {})
    full["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(fastgd.__file__)))]
                                         + ([full["PYTHONPATH"]] if full.get("PYTHONPATH") else []))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full, capture_output=True, text=True,
                          timeout=timeout)


def _ok(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / "cache")


# ---------------------------------------------------------------------------------------
# threadpoolctl and OMP_NUM_THREADS

def test_threadpool_limits_limit_the_kernels(cache_dir):
    pytest.importorskip("threadpoolctl", reason="threadpoolctl is not installed (pip install threadpoolctl)")
    out = _ok(_run("""
        import fastgd
        from fastgd._cython import _core
        from threadpoolctl import threadpool_limits, threadpool_info
        big = 10 ** 7
        libs = [i for i in threadpool_info() if i["internal_api"] == "openmp"]
        print(len(libs) > 0, fastgd.get_num_threads(), _core.kernel_threads(big))
        with threadpool_limits(1):
            print(fastgd.get_num_threads(), _core.kernel_threads(big))
        with threadpool_limits(limits=1, user_api="openmp"):
            print(fastgd.get_num_threads(), _core.kernel_threads(big))
        print(fastgd.get_num_threads(), _core.kernel_threads(big))
        fastgd.set_num_threads(3)      # an explicit count: threadpoolctl no longer changes it
        with threadpool_limits(1):
            print(fastgd.get_num_threads(), _core.kernel_threads(big))
        fastgd.set_num_threads(None)   # back to following OpenMP
        with threadpool_limits(1):
            print(fastgd.get_num_threads(), _core.kernel_threads(big))
        print(_core.kernel_threads(5))  # below the serial cutoff: one thread
    """, {"FASTGD_CACHE_DIR": cache_dir, "FASTGD_SERIAL_CUTOFF": "1000"})).split("\n")
    cores = min(os.cpu_count() or 1, 1024)
    assert out[0] == "True %d %d" % (cores, cores)
    assert out[1] == out[2] == "1 1"
    assert out[3] == "%d %d" % (cores, cores)
    assert out[4] == "3 3"
    assert out[5] == "1 1"
    assert out[6] == "1"


@pytest.mark.parametrize("value,expected", [("1", 1), ("3", 3), ("2,1", 2), (" 4 ", 4)])
def test_omp_num_threads_sets_the_default(value, expected, cache_dir):
    out = _ok(_run("""
        import fastgd
        from fastgd._cython import _core
        print(fastgd.get_num_threads(), _core.kernel_threads(10 ** 7))
    """, {"OMP_NUM_THREADS": value, "FASTGD_CACHE_DIR": cache_dir}))
    assert out.split() == [str(expected)] * 2


def test_fastgd_num_threads_beats_omp_num_threads_and_threadpoolctl(cache_dir):
    pytest.importorskip("threadpoolctl", reason="threadpoolctl is not installed (pip install threadpoolctl)")
    out = _ok(_run("""
        import fastgd
        from fastgd._cython import _core
        from threadpoolctl import threadpool_limits
        with threadpool_limits(1):
            print(fastgd.get_num_threads(), _core.kernel_threads(10 ** 7))
    """, {"OMP_NUM_THREADS": "1", "FASTGD_NUM_THREADS": "3", "FASTGD_CACHE_DIR": cache_dir}))
    assert out.split() == ["3", "3"]


# ---------------------------------------------------------------------------------------
# fork: a child of a process whose kernels ran a team steps on one thread (GNU libgomp hangs
# in a forked child's first parallel region otherwise)

@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is not available on this platform")
@pytest.mark.parametrize("backend", ["cython", "numba"])
def test_forked_child_steps_on_one_thread(backend, cache_dir):
    if backend not in fastgd.available_backends():
        pytest.skip("backend %r is not available" % backend)
    out = _ok(_run("""
        import os, numpy as np, fastgd
        fastgd.set_serial_cutoff(0)
        def arrays():
            p = np.linspace(-1, 1, 10 ** 6, dtype=np.float32)
            return p, np.cos(p), np.zeros_like(p), np.zeros_like(p)
        a = arrays()
        fastgd.adam_step(*a, step=1, backend=%r)             # the parent runs a thread team
        p, g, m, v = arrays()
        fastgd.adam_step(p, g, m, v, step=1, backend="numpy")  # the expected values
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            b = arrays()
            fastgd.adam_step(*b, step=1, backend=%r)
            ok = np.array_equal(b[0], p) and np.array_equal(b[2], m) and np.array_equal(b[3], v)
            os.write(w, b"%%d %%d" %% (ok, fastgd.get_num_threads()))
            os._exit(0)
        os.close(w)
        _, status = os.waitpid(pid, 0)
        print(os.read(r, 100).decode(), status, fastgd.get_num_threads() > 1 or os.cpu_count() == 1)
    """ % (backend, backend), {"FASTGD_CACHE_DIR": cache_dir}, timeout=60))
    assert out.split() == ["1", "1", "0", "True"], out


# ---------------------------------------------------------------------------------------
# the serial cutoff measured on this machine, cached

_SHOW = """
    import numpy as np, fastgd
    p = np.ones(8, np.float32)
    fastgd.adam_step(p, p.copy(), np.zeros_like(p), np.zeros_like(p), step=1)   # the first kernel
    print(fastgd.serial_cutoff(), fastgd.serial_cutoff_source())
"""


def _cache(cache_dir):
    with open(os.path.join(cache_dir, "serial_cutoff.json")) as f:
        return json.load(f)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: nothing to calibrate")
def test_cutoff_is_measured_once_then_read_from_the_cache(cache_dir):
    v, source = _ok(_run(_SHOW, {"FASTGD_CACHE_DIR": cache_dir})).split()
    assert source == "measured"
    assert int(v) in _calibrate.SIZES + (_calibrate.NEVER,)
    data = _cache(cache_dir)
    (key, entry), = data.items()
    assert entry["serial_cutoff"] == int(v) and entry["threads"] == min(os.cpu_count(), 1024)
    assert "| %d threads" % entry["threads"] in key and fastgd.__version__ in key
    assert set(entry["team_over_serial"]) == {str(s) for s in _calibrate.SIZES}
    # a value in the cache is used as it is (whatever it is) and nothing is measured again
    entry["serial_cutoff"] = 12345
    with open(os.path.join(cache_dir, "serial_cutoff.json"), "w") as f:
        json.dump(data, f)
    assert _ok(_run(_SHOW, {"FASTGD_CACHE_DIR": cache_dir})).split() == ["12345", "cache"]
    # XDG_CACHE_HOME is the default location's base
    xdg = os.path.join(cache_dir, "xdg")
    assert _ok(_run(_SHOW, {"XDG_CACHE_HOME": xdg})).split()[1] == "measured"
    assert os.path.exists(os.path.join(xdg, "fastgd", "serial_cutoff.json"))


@pytest.mark.parametrize("env,expected", [
    ({"FASTGD_SERIAL_CUTOFF": "100"}, ["100", "FASTGD_SERIAL_CUTOFF"]),
    ({"FASTGD_NUM_THREADS": "1"}, ["24576", "default"]),
    ({"OMP_NUM_THREADS": "1"}, ["24576", "default"])])
def test_cutoff_not_measured_when_set_or_serial(env, expected, cache_dir):
    assert _ok(_run(_SHOW, dict(env, FASTGD_CACHE_DIR=cache_dir))).split() == expected
    assert not os.path.exists(cache_dir)


def test_set_serial_cutoff_before_the_first_kernel_wins(cache_dir):
    out = _ok(_run("import fastgd; fastgd.set_serial_cutoff(777)\n" + textwrap.dedent(_SHOW),
                   {"FASTGD_CACHE_DIR": cache_dir}))
    assert out.split() == ["777", "set_serial_cutoff"]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: nothing to calibrate")
@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"x": 1}', ""])
def test_unreadable_cache_is_measured_again(content, cache_dir):
    os.makedirs(cache_dir)
    with open(os.path.join(cache_dir, "serial_cutoff.json"), "w") as f:
        f.write(content)
    assert _ok(_run(_SHOW, {"FASTGD_CACHE_DIR": cache_dir})).split()[1] == "measured"
    assert len(_cache(cache_dir)) >= 1


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: nothing to calibrate")
def test_unwritable_cache_is_skipped(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = _ok(_run(_SHOW, {"FASTGD_CACHE_DIR": str(blocker / "cache")}))
    assert out.split()[1] == "measured"


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: nothing to calibrate")
def test_calibrate_serial_cutoff(cache_dir):
    out = _ok(_run("""
        import fastgd
        v = fastgd.calibrate_serial_cutoff(save=False)
        print(v, fastgd.serial_cutoff(), fastgd.serial_cutoff_source())
        fastgd.set_num_threads(1)
        try:
            fastgd.calibrate_serial_cutoff()
        except ValueError as e:
            print("ValueError", "one thread" in str(e) or "is 1" in str(e))
        try:
            fastgd.calibrate_serial_cutoff(save=1)
        except TypeError as e:
            print("TypeError", "save" in str(e))
        fastgd.set_num_threads(None)
        w = fastgd.calibrate_serial_cutoff()
        print(w == fastgd.serial_cutoff(), fastgd.get_num_threads())
    """, {"FASTGD_CACHE_DIR": cache_dir, "FASTGD_SERIAL_CUTOFF": "5"})).split("\n")
    v, cutoff, source = out[0].split()
    assert int(v) == int(cutoff) and int(v) in _calibrate.SIZES + (_calibrate.NEVER,) and source == "measured"
    assert out[1] == "ValueError True" and out[2] == "TypeError True"
    assert out[3].split()[0] == "True"
    assert len(_cache(cache_dir)) == 1


def test_crossover():
    c = _calibrate.crossover
    assert c({1: 2.0, 2: 1.5, 4: 0.9, 8: 0.5}) == 4
    assert c({1: 0.9, 2: 0.9, 4: 0.9}) == 1
    assert c({1: 2.0, 2: 0.9, 4: 1.01, 8: 0.5}) == 8   # the team must win at every larger size
    assert c({1: 2.0, 2: 1.5, 4: 1.0}) == _calibrate.NEVER
    assert c({1: 0.5, 2: float("nan")}) == _calibrate.NEVER


def test_measure_restores_the_settings(restore_globals):
    from fastgd._cython import _core, _rules
    fastgd.set_num_threads(2)
    fastgd.set_serial_cutoff(4321)
    cutoff, ratios = _calibrate.measure(_rules, _core, 2)
    assert set(ratios) == set(_calibrate.SIZES) and all(r > 0 for r in ratios.values())
    assert cutoff == _calibrate.crossover(ratios)
    assert fastgd.serial_cutoff() == 4321 and _core.kernel_threads(4320) == 1 and _core.kernel_threads(4321) == 2


def test_build_info_names_the_cutoff_source():
    info = fastgd.build_info()
    assert info["serial_cutoff_source"] in ("set_serial_cutoff", "FASTGD_SERIAL_CUTOFF", "measured", "cache",
                                            "default")
    assert info["serial_cutoff"] == fastgd.serial_cutoff()
    assert backends.serial_cutoff_source() == info["serial_cutoff_source"]
