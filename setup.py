"""Build fastgd's Cython extensions.

Two things happen here and nothing else:

* an OpenMP probe that compiles, links and *runs* a tiny program; without a working
  OpenMP the kernels are built serial (with a warning), never a failed install;
* every kernel module is compiled once per instruction-set target (``base`` = the
  compiler's default, i.e. any x86-64; ``avx2`` and ``avx512`` on x86-64 with GCC or
  Clang).  ``fastgd._cython`` picks the best variant the running CPU supports at
  import time, so the wheel never needs ``-march=native``.

Environment switches:
  FASTGD_DEBUG=1          bounds/wraparound checks on, -O0 -g (for debugging kernels)
  FASTGD_NO_OPENMP=1      skip the probe, build serial
  FASTGD_NO_SIMD_VARIANTS=1  build only the ``base`` variant
"""
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext

DEBUG = os.environ.get("FASTGD_DEBUG", "0") == "1"
MODULES = ["rules", "tf"]  # src/fastgd/_cython/<name>.pxi, included by _<name>_<variant>.pyx


def _compiler_name():
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return cc.split()[0]


def _is_msvc():
    return sys.platform == "win32" and "gcc" not in _compiler_name()


def probe_openmp():
    """Return (compile_args, link_args) for OpenMP, or None; never raises."""
    if os.environ.get("FASTGD_NO_OPENMP", "0") == "1":
        return None
    if _is_msvc():
        return (["/openmp"], [])
    flags = (["-Xpreprocessor", "-fopenmp"], ["-lomp"]) if sys.platform == "darwin" else (["-fopenmp"], ["-fopenmp"])
    code = textwrap.dedent(
        """
        #include <omp.h>
        #include <stdio.h>
        int main(void) {
            int n = 0;
            #pragma omp parallel reduction(+:n)
            n += 1;
            printf("%d\\n", n > 0 && omp_get_max_threads() > 0);
            return 0;
        }
        """
    )
    cc = _compiler_name()
    tmp = tempfile.mkdtemp(prefix="fastgd-omp-")
    try:
        src = os.path.join(tmp, "probe.c")
        exe = os.path.join(tmp, "probe")
        with open(src, "w") as f:
            f.write(code)
        # the user's (or cibuildwheel's) flags too: e.g. Homebrew libomp's -I/-L on macOS
        env_c = shlex.split(os.environ.get("CPPFLAGS", "")) + shlex.split(os.environ.get("CFLAGS", ""))
        env_l = shlex.split(os.environ.get("LDFLAGS", ""))
        cmd = [cc, *env_c, *flags[0], src, "-o", exe, *env_l, *flags[1]]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        out = subprocess.run([exe], check=True, capture_output=True, timeout=60)
        if out.stdout.strip() != b"1":
            raise RuntimeError("probe printed %r" % out.stdout)
        return flags
    except Exception as exc:  # noqa: BLE001 - the probe must never fail the build
        print("WARNING: OpenMP probe failed (%s); fastgd will be built serial." % exc, file=sys.stderr)
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def simd_variants():
    """Instruction-set variants: name -> extra compile flags."""
    variants = {"base": []}
    if os.environ.get("FASTGD_NO_SIMD_VARIANTS", "0") == "1" or _is_msvc():
        return variants
    if platform.machine().lower() in ("x86_64", "amd64"):
        variants["avx2"] = ["-mavx2", "-mfma", "-mf16c"]  # F16C: the float16 loops convert in hardware
        variants["avx512"] = ["-mavx512f", "-mavx512vl", "-mavx512dq", "-mavx512bw", "-mavx2", "-mfma",
                              "-mprefer-vector-width=512"]
    return variants


OPENMP = probe_openmp()


def base_compile_args():
    if _is_msvc():
        return ["/O2", "/fp:precise"]  # not /fp:fast: NaN/inf propagate and no contraction, as with GCC
    if DEBUG:
        return ["-O0", "-g"]
    # -fno-math-errno lets sqrt vectorize (see PERFORMANCE-NOTES); it does not change
    # any result: the kernels never read errno.  No -ffast-math: NaN/inf must propagate.
    # -ffp-contract=off: no fused multiply-add, so every variant rounds exactly like the
    # NumPy reference (FMA changed results by up to ~30 ulp where terms cancel, and the
    # memory-bound kernels gain nothing from it).
    # -funroll-loops: more loads in flight per loop iteration; measured (alternated, one
    # process, avx512 variant vs the same with the flag): float32 Adamax 0.90x the time at
    # 1e4 elements, NAdam 0.95-0.97x at 1e6, the others within noise.  Unrolling does not
    # reassociate: the results stay bit-identical to the reference.
    # -g0: no debug info in the shipped modules (Python's own CFLAGS carry -g: ~4x the size)
    return ["-O3", "-funroll-loops", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off",
            "-Wno-unused-function", "-g0"]


def extensions():
    exts = []
    omp_c, omp_l = OPENMP if OPENMP else ([], [])
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"), ("FASTGD_OPENMP", "1" if OPENMP else "0")]
    for mod in MODULES:
        for variant, vflags in simd_variants().items():
            name = "_%s_%s" % (mod, variant)
            exts.append(
                Extension(
                    "fastgd._cython." + name,
                    ["src/fastgd/_cython/%s.pyx" % name],
                    include_dirs=[np.get_include(), "src/fastgd/_cython"],
                    define_macros=macros + [("FASTGD_VARIANT", '"%s"' % variant)],
                    extra_compile_args=base_compile_args() + vflags + omp_c,
                    extra_link_args=omp_l,
                )
            )
    # dense layers: BLAS does the products (scipy's, reached at import), so one baseline build
    exts.append(Extension("fastgd._cython.dense", ["src/fastgd/_cython/dense.pyx"],
                          include_dirs=[np.get_include()], define_macros=macros,
                          extra_compile_args=base_compile_args() + omp_c, extra_link_args=omp_l))
    exts.append(
        Extension(
            "fastgd._cython._core",
            ["src/fastgd/_cython/_core.pyx"],
            include_dirs=[np.get_include()],
            define_macros=macros,
            extra_compile_args=base_compile_args() + omp_c,
            extra_link_args=omp_l,
        )
    )
    return exts


def write_variant_sources():
    """Each variant module is a one-line .pyx that includes the shared kernel source."""
    for mod in MODULES:
        for variant in simd_variants():
            path = os.path.join("src", "fastgd", "_cython", "_%s_%s.pyx" % (mod, variant))
            text = "# Generated by setup.py: the %s kernels built for the %r target.\ninclude \"%s.pxi\"\n" % (
                mod, variant, mod)
            if not os.path.exists(path) or open(path).read() != text:
                with open(path, "w") as f:
                    f.write(text)


write_variant_sources()

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    # ``a ** b`` on doubles is C's pow (as Python's float ** int), not Cython 3's default
    # complex-capable power: the bias corrections round exactly like the reference, and a
    # negative base can never make a kernel raise a complex-conversion error
    "cpow": True,
    "embedsignature": True,
}

class build_ext(_build_ext):
    """Compile the extensions in parallel (one job per CPU unless ``-j`` says otherwise): the
    SIMD variants of the rules are independent and each takes about a minute."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1


setup(
    ext_modules=cythonize(extensions(), compiler_directives=directives, include_path=["src"],
                          nthreads=os.cpu_count() or 1),
    cmdclass={"build_ext": build_ext},
)
