# cython: language_level=3
"""What the compiled part of fastgd was built with, and what this CPU can run."""

cdef extern from *:
    """
    #if FASTGD_OPENMP
    #include <omp.h>
    #endif
    static int fgd_openmp(void) { return FASTGD_OPENMP; }
    static int fgd_omp_max_threads(void) {
    #if FASTGD_OPENMP
        return omp_get_max_threads();
    #else
        return 1;
    #endif
    }
    #if defined(__clang__)
    #define FGD_COMPILER "clang " __clang_version__
    #elif defined(__GNUC__)
    #define FGD_COMPILER "gcc " __VERSION__
    #elif defined(_MSC_VER)
    #define FGD_COMPILER "msvc"
    #else
    #define FGD_COMPILER "unknown"
    #endif
    static const char* fgd_compiler(void) { return FGD_COMPILER; }
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    static int fgd_has_avx2(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    static int fgd_has_avx512(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw")
            && fgd_has_avx2();
    }
    #else
    static int fgd_has_avx2(void) { return 0; }
    static int fgd_has_avx512(void) { return 0; }
    #endif
    """
    int fgd_openmp() nogil
    int fgd_omp_max_threads() nogil
    const char* fgd_compiler() nogil
    int fgd_has_avx2() nogil
    int fgd_has_avx512() nogil


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(fgd_openmp())


def omp_max_threads():
    """OpenMP's default team size (honours OMP_NUM_THREADS); 1 without OpenMP."""
    return fgd_omp_max_threads()


def compiler():
    """The C compiler (and version) that built the extensions."""
    return fgd_compiler().decode()


def cpu_features():
    """Instruction-set extensions of the running CPU that fastgd has kernel variants for."""
    return {"avx2": bool(fgd_has_avx2()), "avx512": bool(fgd_has_avx512())}
