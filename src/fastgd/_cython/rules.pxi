# The update rules in Cython: the same functions, names and order of operations as
# fastgd/reference/rules.py (the spec).  Included by one _rules_<variant>.pyx per
# instruction-set target (see setup.py); fastgd._cython imports the best one.
#
# Layout of every rule:
#   cdef inline void _<rule>_at(i, ...)     the update of element i (the loop body, once)
#   cdef void _<rule>(...) noexcept nogil   the fused loop, one pass over memory, typed
#                                           pointers: a scalar loop up to param's first
#                                           cache-line boundary (_head), then from there
#                                           one cache-line-aligned share per thread
#                                           (prange over _span) when nthreads > 1, else a
#                                           plain loop (no OpenMP region at all: entering
#                                           even an ``if(0)`` region costs ~0.5-1 us)
#   def <rule>(...)                         computes the scalars in double, casts them to the
#                                           array's dtype once, and calls the loop for
#                                           float or double.
# Arguments were validated by fastgd._validate (dtype, shape, contiguity, no overlap), so
# the wrappers read data pointers directly (acquiring typed memoryviews costs ~170 ns per
# array, which is most of a 1,000-element step).
# IN: grad.  IN/OUT: param and every state array.

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
cimport numpy as cnp

from fastgd._cython._helpers cimport (PyThreadState, _f32, _fabs, _head, _head_of, _ptr, _release_gil,
                                      _restore_gil, _span, _span_of, _sqrt)

cnp.import_array()

from fastgd._cython._core cimport bf16_num, threads_for

VARIANT = FASTGD_VARIANT_NAME

cdef extern from *:
    """
    #ifndef FASTGD_VARIANT
    #define FASTGD_VARIANT "base"
    #endif
    static const char* FASTGD_VARIANT_NAME = FASTGD_VARIANT;
    """
    const char* FASTGD_VARIANT_NAME


# ---------------------------------------------------------------------------------------
# Storage dtypes.  Every rule's loop reads and writes its arrays through _ld/_st, so the same
# loop steps float32 and float64 arrays (plain loads and stores) and float16/bfloat16 ones
# (converted in registers: loaded exactly into the compute dtype, float32, and stored rounded
# once to nearest even).  ``pst``: param and grad; ``sst``: the state arrays (the param's dtype,
# or float32 for a half-precision param); ``floating``: the compute dtype.  The loops return at
# once for the combinations no caller makes, so only six of each are compiled.
#
# The conversions are NumPy's (float16) and ml_dtypes' (bfloat16) rules, written as integer and
# float operations GCC vectorizes (tests/test_half.py compares them with NumPy's and ml_dtypes'
# casts, and they were compared on all 2**32 float32 values): float16 -> float32 exact (NaN
# payload kept); float32 -> float16 to nearest even, overflow to inf, subnormals, NaN keeping its
# top payload bits (0x7c01 if they are all 0), as npy_floatbits_to_halfbits; bfloat16 <-> float32
# by shifting, to nearest even, NaN to 0x7fc0 with its sign (Eigen's rule).

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    typedef struct { uint16_t v; } fgd_h16;  /* float16 storage */
    typedef struct { uint16_t v; } fgd_b16;  /* bfloat16 storage */
    static inline float fgd_bf16_f32(uint16_t h) {
        uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f;
    }
    static inline uint16_t fgd_f32_bf16(float f) {
        /* NaN told by f != f (one float compare where the vectorized loops had an integer and
           and compare: ~5% of an all-bfloat16 step in L2), then selected */
        uint32_t u, r;
        memcpy(&u, &f, 4);
        r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        return (uint16_t)(f != f ? (((u >> 16) & 0x8000u) | 0x7fc0u) : r);
    }
    static inline float fgd_f16_f32(uint16_t h) {
        /* the magnitude's bits moved to float32's place, times 2**112 (the exponent bias
           difference): exact for normal and subnormal halves; inf/NaN get the all-ones exponent
           (NaN payload kept) */
        uint32_t o = (uint32_t)(h & 0x7fffu) << 13, r;
        float f;
        memcpy(&f, &o, 4);
        f = f * 0x1p112f;
        memcpy(&r, &f, 4);
        r = (h & 0x7c00u) == 0x7c00u ? (o | 0x7f800000u) : r;
        r |= (uint32_t)(h & 0x8000u) << 16;
        memcpy(&f, &r, 4);
        return f;
    }
    static inline uint16_t fgd_f32_f16(float x) {
        /* the three cases computed branch-free and selected (so the loops vectorize) */
        uint32_t u, sign, o, norm_o, sub_o, nan_o, inf_o;
        float f;
        memcpy(&u, &x, 4);
        sign = u & 0x80000000u; u ^= sign;
        norm_o = (u + 0xc8000fffu + ((u >> 13) & 1u)) >> 13;  /* normal: rebias, round to nearest even */
        memcpy(&f, &u, 4); f += 0.5f;                           /* < 2**-14: adding 0.5 rounds to the */
        memcpy(&sub_o, &f, 4); sub_o -= 0x3f000000u;            /* 2**-24 grid, to even */
        nan_o = 0x7c00u + ((u & 0x7fffffu) >> 13);              /* NaN keeps its top payload bits */
        nan_o = nan_o == 0x7c00u ? 0x7c01u : nan_o;
        inf_o = u > 0x7f800000u ? nan_o : 0x7c00u;              /* >= 2**16 (after rounding) is inf */
        o = u >= 0x47800000u ? inf_o : (u < 0x38800000u ? sub_o : norm_o);
        return (uint16_t)(o | (sign >> 16));
    }
    """
    ctypedef struct fgd_h16:
        unsigned short v
    ctypedef struct fgd_b16:
        unsigned short v
    float fgd_f16_f32(unsigned short h) nogil
    unsigned short fgd_f32_f16(float x) nogil
    float fgd_bf16_f32(unsigned short h) nogil
    unsigned short fgd_f32_bf16(float x) nogil


ctypedef fused pst:
    float
    double
    fgd_h16
    fgd_b16

ctypedef fused sst:
    float
    double
    fgd_h16
    fgd_b16

ctypedef fused anyst:
    float
    double
    fgd_h16
    fgd_b16


cdef inline floating _ld(const anyst* a, Py_ssize_t i, floating like) noexcept nogil:
    """a[i] in the compute dtype (that of ``like``)."""
    if anyst is fgd_h16:
        return fgd_f16_f32(a[i].v)
    elif anyst is fgd_b16:
        return fgd_bf16_f32(a[i].v)
    else:
        return <floating>a[i]


cdef inline void _st(anyst* a, Py_ssize_t i, floating x) noexcept nogil:
    """a[i] = x, rounded to nearest even where a is half precision."""
    if anyst is fgd_h16:
        a[i].v = fgd_f32_f16(<float>x)
    elif anyst is fgd_b16:
        a[i].v = fgd_f32_bf16(<float>x)
    else:
        a[i] = <anyst>x


cdef inline Py_ssize_t _hd(Py_ssize_t n, const anyst* base) noexcept nogil:
    """_head for any storage dtype."""
    return _head_of(n, base, sizeof(anyst))


cdef inline Py_ssize_t _spn(Py_ssize_t t, Py_ssize_t nt, Py_ssize_t n, const anyst* base) noexcept nogil:
    """_span for any storage dtype."""
    return _span_of(t, nt, n, base, sizeof(anyst))


# ---------------------------------------------------------------------------------------
# float16 loops: blocks of up to 128 elements.  Converting float16 exactly in portable code
# (NumPy's rounding, subnormals, NaN payloads) costs ~20 vector operations per stored value, which
# made the float16 loops compute-bound; the hardware's vcvtps2ph/vcvtph2ps (F16C, AVX-512) are one,
# but GCC 12 does not vectorize conversions from or to _Float16.  So the float16 specializations
# step a block at a time: the float16 arrays' block is converted into floats by vcvtph2ps, 16 at
# a time, the rule's element function runs on the blocks (float32 arrays stepped in place, a loop
# GCC vectorizes; the flags that decide which arrays it touches are literals in each copy of it),
# and the blocks are stored with vcvtps2ph.  Both conversions are NumPy's for every number and
# quiet NaN; a block holding a NaN is redone by the software rules (the hardware quiets a
# signalling NaN, NumPy keeps its bits).  Every array is prefetched _PF elements ahead, once per
# 64 bytes.
# Measured against blocks of 16 with run-time flags and no prefetch (2-core Zen 4, avx512, all
# float16 at 1.6e7, old and new builds in alternated processes, 3 rounds, fraction of the
# same-bytes skeleton): SGD 0.82 -> 0.96, Adam 0.63 -> 0.89, Adagrad 0.61 -> 0.82, RMSprop
# 0.42 -> 0.76, Lion 0.55 -> 0.84.

cdef extern from *:
    """
    #if defined(__AVX512F__) || defined(__F16C__)
    #include <immintrin.h>
    #endif
    /* 16 float16 values to float32: the hardware's vcvtph2ps (exact), NaN lanes redone by the
       software rule (the hardware quiets a signalling NaN; NumPy keeps its bits) */
    static inline void fgd_loadblk_h16(const uint16_t* s, float* dst, Py_ssize_t bn, Py_ssize_t pf) {
        /* bn (a multiple of 16) float16 values to float32: the hardware's vcvtph2ps (exact),
           32 a step with one prefetch (one cache line of float16); a block holding a NaN is
           redone by the software rule (the hardware quiets a signalling NaN; NumPy keeps its
           bits) */
        Py_ssize_t j = 0;
    #if defined(__AVX512F__)
        __mmask16 bad = 0;
        __m512 x0, x1;
        for (; j + 32 <= bn; j += 32) {
            __builtin_prefetch(s + j + pf, 1, 3);
            x0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(s + j)));
            x1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(s + j + 16)));
            _mm512_storeu_ps(dst + j, x0);
            _mm512_storeu_ps(dst + j + 16, x1);
            bad |= _mm512_cmp_ps_mask(x0, x0, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(x1, x1, _CMP_UNORD_Q);
        }
        if (j < bn) {
            __builtin_prefetch(s + j + pf, 1, 3);
            x0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(s + j)));
            _mm512_storeu_ps(dst + j, x0);
            bad |= _mm512_cmp_ps_mask(x0, x0, _CMP_UNORD_Q);
        }
        if (bad)
            for (j = 0; j < bn; j++) dst[j] = fgd_f16_f32(s[j]);
    #elif defined(__F16C__)
        __m256 bad = _mm256_setzero_ps(), x0, x1;
        for (; j < bn; j += 16) {
            if (!(j & 16)) __builtin_prefetch(s + j + pf, 1, 3);
            x0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(s + j)));
            x1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(s + j + 8)));
            _mm256_storeu_ps(dst + j, x0);
            _mm256_storeu_ps(dst + j + 8, x1);
            bad = _mm256_or_ps(bad, _mm256_or_ps(_mm256_cmp_ps(x0, x0, _CMP_UNORD_Q), _mm256_cmp_ps(x1, x1, _CMP_UNORD_Q)));
        }
        if (_mm256_movemask_ps(bad))
            for (j = 0; j < bn; j++) dst[j] = fgd_f16_f32(s[j]);
    #else
        for (; j < bn; j++) {
            if (!(j & 31)) __builtin_prefetch(s + j + pf, 1, 3);
            dst[j] = fgd_f16_f32(s[j]);
        }
    #endif
    }
    static inline void fgd_storeblk_h16(const float* src, uint16_t* d, Py_ssize_t bn) {
        /* bn (a multiple of 16) float32 values to float16 with vcvtps2ph (NumPy's rounding for
           every number); a block holding a NaN is redone by the software rule */
        Py_ssize_t j = 0;
    #if defined(__AVX512F__)
        __mmask16 bad = 0;
        __m512 x0, x1;
        for (; j + 32 <= bn; j += 32) {
            x0 = _mm512_loadu_ps(src + j);
            x1 = _mm512_loadu_ps(src + j + 16);
            _mm256_storeu_si256((__m256i*)(d + j), _mm512_cvtps_ph(x0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            _mm256_storeu_si256((__m256i*)(d + j + 16), _mm512_cvtps_ph(x1, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            bad |= _mm512_cmp_ps_mask(x0, x0, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(x1, x1, _CMP_UNORD_Q);
        }
        if (j < bn) {
            x0 = _mm512_loadu_ps(src + j);
            _mm256_storeu_si256((__m256i*)(d + j), _mm512_cvtps_ph(x0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            bad |= _mm512_cmp_ps_mask(x0, x0, _CMP_UNORD_Q);
        }
        if (bad)
            for (j = 0; j < bn; j++) d[j] = fgd_f32_f16(src[j]);
    #elif defined(__F16C__)
        __m256 bad = _mm256_setzero_ps(), x0, x1;
        for (; j < bn; j += 16) {
            x0 = _mm256_loadu_ps(src + j);
            x1 = _mm256_loadu_ps(src + j + 8);
            _mm_storeu_si128((__m128i*)(d + j), _mm256_cvtps_ph(x0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            _mm_storeu_si128((__m128i*)(d + j + 8), _mm256_cvtps_ph(x1, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            bad = _mm256_or_ps(bad, _mm256_or_ps(_mm256_cmp_ps(x0, x0, _CMP_UNORD_Q), _mm256_cmp_ps(x1, x1, _CMP_UNORD_Q)));
        }
        if (_mm256_movemask_ps(bad))
            for (j = 0; j < bn; j++) d[j] = fgd_f32_f16(src[j]);
    #else
        for (; j < bn; j++) d[j] = fgd_f32_f16(src[j]);
    #endif
    }
    static inline void fgd_loadblk_b16(const uint16_t* s, float* dst, Py_ssize_t bn, Py_ssize_t pf) {
        /* bn bfloat16 values to float32: the shift (exact, NaN bits kept), which GCC vectorizes */
        Py_ssize_t j;
        for (j = 0; j < bn; j += 32) __builtin_prefetch(s + j + pf, 1, 3);
        for (j = 0; j < bn; j++) dst[j] = fgd_bf16_f32(s[j]);
    }
    #if defined(__AVX512F__) && defined(__GNUC__) && (__GNUC__ >= 11 || defined(__clang__))
    #define FGD_BF16_HW 1
    __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512bf16")))
    static void fgd_storeblk_b16_hw(const float* src, uint16_t* d, Py_ssize_t bn) {
        /* AVX512_BF16's vcvtne2ps2bf16: to nearest even, 32 in one instruction.  It flushes
           subnormal inputs to zero and keeps a NaN's payload, so a block holding a subnormal or
           a NaN (vfpclassps: 0x01 quiet NaN, 0x20 subnormal, 0x80 signalling NaN) is redone by
           the software rule */
        Py_ssize_t j = 0;
        __mmask16 bad = 0;
        __m512 x0, x1;
        for (; j + 32 <= bn; j += 32) {
            x0 = _mm512_loadu_ps(src + j);
            x1 = _mm512_loadu_ps(src + j + 16);
            _mm512_storeu_si512((void*)(d + j), (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
            bad |= _mm512_fpclass_ps_mask(x0, 0xa1) | _mm512_fpclass_ps_mask(x1, 0xa1);
        }
        if (j < bn) {
            x0 = _mm512_loadu_ps(src + j);
            _mm256_storeu_si256((__m256i*)(d + j), (__m256i)_mm512_cvtneps_pbh(x0));
            bad |= _mm512_fpclass_ps_mask(x0, 0xa1);
        }
        if (bad)
            for (j = 0; j < bn; j++) d[j] = fgd_f32_bf16(src[j]);
    }
    #else
    #define FGD_BF16_HW 0
    #endif
    static inline void fgd_storeblk_b16(const float* src, uint16_t* d, Py_ssize_t bn) {
        /* bn float32 values to bfloat16, to nearest even: the hardware's where the CPU has
           AVX512_BF16, else the software rule (vectorized by GCC) */
        Py_ssize_t j;
    #if FGD_BF16_HW
        if (__builtin_cpu_supports("avx512bf16")) {
            fgd_storeblk_b16_hw(src, d, bn);
            return;
        }
    #endif
        for (j = 0; j < bn; j++) d[j] = fgd_f32_bf16(src[j]);
    }
    """
    void fgd_storeblk_h16(const float* src, unsigned short* d, Py_ssize_t bn) nogil
    void fgd_storeblk_b16(const float* src, unsigned short* d, Py_ssize_t bn) nogil
    void fgd_loadblk_b16(const unsigned short* s, float* dst, Py_ssize_t bn, Py_ssize_t pf) nogil
    void fgd_loadblk_h16(const unsigned short* s, float* dst, Py_ssize_t bn, Py_ssize_t pf) nogil


cdef extern from *:
    """
    #define fgd_prefetch(p) __builtin_prefetch((p), 1, 3)
    /* bfloat16 params with float32 state take the block loops where the variant has no
       AVX-512BW (avx2, base): there the in-register loop's conversions cost more than the
       blocks' (on AVX-512 the in-register loop is the faster one) */
    #if defined(__AVX512BW__)
    #define FGD_B16F32_BLOCKS 0
    #else
    #define FGD_B16F32_BLOCKS 1
    #endif
    """
    void fgd_prefetch(const char* p) nogil
    const bint FGD_B16F32_BLOCKS


cdef inline bint _blocks(pst* p, sst* s) noexcept nogil:
    """Whether a step of these dtypes takes the block loops (_bin/_bout): float16 params, all
    bfloat16, and bfloat16 params with float32 state where the variant lacks AVX-512BW.  The
    pointers only select the specialization (a constant the C compiler folds)."""
    return pst is fgd_h16 or (pst is fgd_b16 and (sst is fgd_b16 or FGD_B16F32_BLOCKS))


cdef Py_ssize_t _PF = 1024  # elements ahead that _bin prefetches (a hint: never dereferenced)
cdef Py_ssize_t _blk = 128  # elements per block, the size of the loops' _b_* buffers: 8 conversions of 16 (a block of 16 paid the loop's set-up per 16)


cdef inline Py_ssize_t _block_len(Py_ssize_t i, Py_ssize_t hi) noexcept nogil:
    """The length of the block at i of a float16 loop over [., hi) with i + 16 <= hi: _blk, or
    the whole 16s left (the last < 16 elements are stepped one by one)."""
    return _blk if i + _blk <= hi else (hi - i) - (hi - i) % 16


cdef inline float* _bin(const anyst* a, Py_ssize_t i, Py_ssize_t bn, float* buf) noexcept nogil:
    """The block [i, i + bn) of a as float32 (bn a multiple of 16, at most _blk): the array
    itself (float32), or its float16 values converted into buf; for an unused (NULL) array the
    (untouched) buffer: a NULL among the block loop's pointers made GCC's run-time overlap check
    fail, and the loop ran scalar."""
    cdef Py_ssize_t j
    if a == NULL:
        return buf
    if anyst is fgd_h16:
        fgd_loadblk_h16(<const unsigned short*>(a + i), buf, bn, _PF)
        return buf
    elif anyst is fgd_b16:
        fgd_loadblk_b16(<const unsigned short*>(a + i), buf, bn, _PF)
        return buf
    elif anyst is float:
        j = 0
        while j < bn:
            fgd_prefetch(<const char*>(a + i + j + _PF))
            j = j + 16
        return <float*>(a + i)
    else:
        return NULL  # (no caller: float16 loops mix only float16 and float32)


cdef inline void _bout(anyst* a, Py_ssize_t i, Py_ssize_t bn, float* buf) noexcept nogil:
    """Store a float16 array's block back (float32 arrays were stepped in place)."""
    cdef Py_ssize_t j
    if anyst is fgd_h16:
        if a != NULL:
            fgd_storeblk_h16(buf, <unsigned short*>(a + i), bn)
    elif anyst is fgd_b16:
        if a != NULL:
            fgd_storeblk_b16(buf, <unsigned short*>(a + i), bn)



cdef inline floating _max_nan(floating a, floating b) noexcept nogil:
    """max(a, b) that propagates NaN from either side, like numpy.maximum.  Written as two
    selects on one comparison each: GCC 12 does not vectorize ``a if (a > b or a != a) else b``."""
    cdef floating r = a if a > b else b  # b if either is NaN
    return a if a != a else r


cdef inline floating _sign(floating x) noexcept nogil:
    """numpy.sign: -1, 0 or 1, NaN for NaN (``x + 0`` turns -0.0 into +0.0, as numpy.sign does,
    and keeps NaN)."""
    return <floating>1 if x > 0 else (<floating>-1 if x < 0 else x + <floating>0)


# ---------------------------------------------------------------------------------------
# The scalars of each rule, computed once per call in double exactly as the reference
# computes them (same expressions, same order; ``**`` is C's pow, see setup.py), shared by the
# single-tensor and the multi-tensor wrapper.  Where ``step`` is a Python int it stays one:
# the products with it are the reference's Python arithmetic.

cdef struct _AdamScalars:
    double step_size
    double inv_bc2_sqrt
    double decay


cdef inline _AdamScalars _adam_scalars(double step, double lr, double beta1, double beta2,
                                       double weight_decay) noexcept:
    cdef _AdamScalars sc
    sc.step_size = lr / (1.0 - beta1 ** step)
    sc.inv_bc2_sqrt = 1.0 / sqrt(1.0 - beta2 ** step)
    sc.decay = 1.0 - lr * weight_decay
    return sc


cdef inline double _adamax_step_size(double step, double lr, double beta1) noexcept:
    return lr / (1.0 - beta1 ** step)


cdef struct _NAdamScalars:
    double coef_grad
    double coef_avg
    double inv_bc2


cdef _NAdamScalars _nadam_scalars(step, mu_product, double lr, double beta1, double beta2, double momentum_decay):
    # nadam_mu of the reference is the schedule; mu_product is P_{t-1}
    cdef _NAdamScalars sc
    cdef double mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
    cdef double mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    cdef double prod = <double>mu_product * mu
    sc.coef_grad = lr * (1.0 - mu) / (1.0 - prod)
    sc.coef_avg = lr * mu_next / (1.0 - prod * mu_next)
    sc.inv_bc2 = 1.0 / (1.0 - beta2 ** step)
    return sc


cdef struct _RAdamScalars:
    bint rect
    double step_size


cdef _RAdamScalars _radam_scalars(step, double lr, double beta1, double beta2):
    cdef _RAdamScalars sc
    cdef double bias_correction1 = 1.0 - beta1 ** step
    cdef double bias_correction2 = 1.0 - beta2 ** step
    cdef double rho_inf = 2.0 / (1.0 - beta2) - 1.0
    cdef double rho_t = rho_inf - 2.0 * step * (beta2 ** step) / bias_correction2
    sc.rect = rho_t > 5.0
    if sc.rect:
        sc.step_size = (lr * sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                        * sqrt(bias_correction2) / bias_correction1)
    else:
        sc.step_size = lr / bias_correction1
    return sc


cdef double _adagrad_clr(step, double lr, double lr_decay) except? -1.0:
    return lr / (1.0 + (step - 1) * lr_decay)


# ---------------------------------------------------------------------------------------
# SGD with optional (Nesterov) momentum

cdef inline void _sgd_at(Py_ssize_t i, pst* p, const pst* g, sst* b, floating sign, bint has_wd,
                         floating wd, bint has_mom, bint first, bint nesterov, floating momentum, floating omd,
                         floating lr) noexcept nogil:
    cdef floating gi, bi
    gi = sign * _ld(g, i, sign)
    if has_wd:
        gi = gi + wd * _ld(p, i, sign)
    if has_mom:
        if first:
            bi = gi
        else:
            bi = momentum * _ld(b, i, sign) + omd * gi
        _st(b, i, bi)
        if nesterov:
            gi = gi + momentum * bi
        else:
            gi = bi
    _st(p, i, _ld(p, i, sign) - lr * gi)



cdef void _sgd_h16(Py_ssize_t lo, Py_ssize_t hi, pst* p, const pst* g, sst* b, floating sign, bint has_wd, floating wd, bint has_mom, bint first, bint nesterov, floating momentum, floating omd, floating lr) noexcept nogil:
    """The float16 loop of [lo, hi): blocks (see _bin), the last < 16 elements one by one."""
    cdef float _b_p[128]
    cdef float _b_g[128]
    cdef float _b_b[128]
    cdef float* _q_p
    cdef float* _q_g
    cdef float* _q_b
    cdef Py_ssize_t i = lo, j, k, bn  # a run-time length: GCC unrolls a literal 16 fully and then does not vectorize it
    while i + 16 <= hi:
        bn = _block_len(i, hi)
        _q_p = _bin(p, i, bn, _b_p)
        _q_g = _bin(g, i, bn, _b_g)
        _q_b = _bin(b, i, bn, _b_b)
        if has_mom:  # a literal in each loop (see _sgd)
            for j in range(bn):
                _sgd_at(j, _q_p, _q_g, _q_b, sign, has_wd, wd, True, first, nesterov, momentum, omd, lr)
        else:
            for j in range(bn):
                _sgd_at(j, _q_p, _q_g, _q_b, sign, has_wd, wd, False, first, nesterov, momentum, omd, lr)
        _bout(p, i, bn, _q_p)
        _bout(b, i, bn, _q_b)
        i = i + bn
    for k in range(i, hi):
        _sgd_at(k, p, g, b, sign, has_wd, wd, has_mom, first, nesterov, momentum, omd, lr)

cdef void _sgd(pst* p, const pst* g, sst* b, Py_ssize_t n, int nthreads, floating sign,
               bint has_wd, floating wd, bint has_mom, bint first, bint nesterov, floating momentum,
               floating omd, floating lr) noexcept nogil:
    if floating is double:  # dtype combinations no caller makes are compiled to nothing
        if pst is not double:
            return
        if sst is not double:
            return
    else:
        if pst is double:
            return
        if sst is double:
            return
        if pst is float:
            if sst is not float:
                return
    # has_mom is a literal in every loop: with a run-time condition around the buffer's accesses
    # GCC vectorizes neither the plain loop (1.4 ns/element) nor the all-bfloat16 prange loop
    cdef Py_ssize_t i, t
    if _blocks(<pst*>NULL, <sst*>NULL):  # blocks (_bin): see the float16 loops
        if nthreads > 1:
            for t in prange(nthreads, schedule="static", num_threads=nthreads):
                _sgd_h16(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p), p, g, b, sign, has_wd, wd, has_mom, first, nesterov, momentum, omd, lr)
        else:
            _sgd_h16(0, n, p, g, b, sign, has_wd, wd, has_mom, first, nesterov, momentum, omd, lr)
        return
    cdef Py_ssize_t h = _hd(n, p)
    for i in range(h):  # up to p's first cache-line boundary: the loops below start aligned
        _sgd_at(i, p, g, b, sign, has_wd, wd, has_mom, first, nesterov, momentum, omd, lr)
    if nthreads > 1:
        for t in prange(nthreads, schedule="static", num_threads=nthreads):
            if has_mom:
                for i in range(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p)):
                    _sgd_at(i, p, g, b, sign, has_wd, wd, True, first, nesterov, momentum, omd, lr)
            else:
                for i in range(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p)):
                    _sgd_at(i, p, g, b, sign, has_wd, wd, False, first, nesterov, momentum, omd, lr)
    elif has_mom:
        for i in range(h, n):
            _sgd_at(i, p, g, b, sign, has_wd, wd, True, first, nesterov, momentum, omd, lr)
    else:
        for i in range(h, n):
            _sgd_at(i, p, g, b, sign, has_wd, wd, False, first, nesterov, momentum, omd, lr)


def sgd(param, grad, momentum_buffer, double lr, double momentum, double dampening, bint nesterov,
        double weight_decay, bint maximize, bint first_step):
    _single_checked(param, (grad, momentum_buffer))
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef int nt = threads_for(n)
    cdef double sign = -1.0 if maximize else 1.0
    cdef bint has_wd = weight_decay != 0
    cdef bint has_mom = momentum != 0
    cdef void* _p_param = _ptr(param)
    cdef void* _p_grad = _ptr(grad)
    cdef void* _p_momentum_buffer = _ptr(momentum_buffer)
    cdef bint f32 = _f32(param)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _sgd[float, float, float](<float*>_p_param, <float*>_p_grad, <float*>_p_momentum_buffer, n, nt, sign,
                    has_wd, weight_decay, has_mom, first_step, nesterov, momentum, 1.0 - dampening, lr)
    else:
        _sgd[double, double, double](<double*>_p_param, <double*>_p_grad, <double*>_p_momentum_buffer, n, nt, sign,
                     has_wd, weight_decay, has_mom, first_step, nesterov, momentum, 1.0 - dampening, lr)
    _restore_gil(ts)
    return param


# ---------------------------------------------------------------------------------------
# Adam / AdamW (adamw = decoupled weight decay)

cdef inline void _adam_at(Py_ssize_t i, pst* p, const pst* g, sst* m, sst* v,
                          sst* vmax, floating sign, bint has_wd, bint decoupled, floating wd,
                          floating decay, floating beta1, floating omb1, floating beta2, floating omb2,
                          floating step_size, floating inv_bc2_sqrt, floating eps, bint amsgrad) noexcept nogil:
    # every array read once into the compute dtype and written once (a half-precision array
    # is then rounded once per step, as in the reference's float32 copies)
    cdef floating gi, mi, vi, denom, pi
    gi = sign * _ld(g, i, sign)
    pi = _ld(p, i, sign)
    pi = pi * decay  # 1 unless decoupled weight decay applies (x * 1 == x: see the loop)
    if has_wd:  # coupled only (see the loop)
        gi = gi + wd * pi
    mi = beta1 * _ld(m, i, sign) + omb1 * gi
    vi = beta2 * _ld(v, i, sign) + omb2 * (gi * gi)
    _st(m, i, mi)
    _st(v, i, vi)
    if amsgrad:
        vi = _max_nan(_ld(vmax, i, sign), vi)
        _st(vmax, i, vi)
    denom = _sqrt(vi) * inv_bc2_sqrt + eps
    _st(p, i, pi - step_size * (mi / denom))



cdef void _adam_h16(Py_ssize_t lo, Py_ssize_t hi, pst* p, const pst* g, sst* m, sst* v, sst* vmax, floating sign, bint has_wd, bint decoupled, floating wd, floating decay, floating beta1, floating omb1, floating beta2, floating omb2, floating step_size, floating inv_bc2_sqrt, floating eps, bint amsgrad) noexcept nogil:
    """The float16 loop of [lo, hi): blocks (see _bin), the last < 16 elements one by one."""
    cdef float _b_p[128]
    cdef float _b_g[128]
    cdef float _b_m[128]
    cdef float _b_v[128]
    cdef float _b_vmax[128]
    cdef float* _q_p
    cdef float* _q_g
    cdef float* _q_m
    cdef float* _q_v
    cdef float* _q_vmax
    cdef Py_ssize_t i = lo, j, k, bn  # a run-time length: GCC unrolls a literal 16 fully and then does not vectorize it
    while i + 16 <= hi:
        bn = _block_len(i, hi)
        _q_p = _bin(p, i, bn, _b_p)
        _q_g = _bin(g, i, bn, _b_g)
        _q_m = _bin(m, i, bn, _b_m)
        _q_v = _bin(v, i, bn, _b_v)
        _q_vmax = _bin(vmax, i, bn, _b_vmax)
        if amsgrad:  # a literal in each loop (see _adam)
            for j in range(bn):
                _adam_at(j, _q_p, _q_g, _q_m, _q_v, _q_vmax, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, step_size, inv_bc2_sqrt, eps, True)
        else:
            for j in range(bn):
                _adam_at(j, _q_p, _q_g, _q_m, _q_v, _q_vmax, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, step_size, inv_bc2_sqrt, eps, False)
        _bout(p, i, bn, _q_p)
        _bout(m, i, bn, _q_m)
        _bout(v, i, bn, _q_v)
        _bout(vmax, i, bn, _q_vmax)
        i = i + bn
    for k in range(i, hi):
        _adam_at(k, p, g, m, v, vmax, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, step_size, inv_bc2_sqrt, eps, amsgrad)

cdef void _adam(pst* p, const pst* g, sst* m, sst* v, sst* vmax,
                Py_ssize_t n, int nthreads, floating sign, bint has_wd, bint decoupled,
                floating wd, floating decay, floating beta1, floating omb1, floating beta2,
                floating omb2, floating step_size, floating inv_bc2_sqrt, floating eps,
                bint amsgrad) noexcept nogil:
    if floating is double:  # dtype combinations no caller makes are compiled to nothing
        if pst is not double:
            return
        if sst is not double:
            return
    else:
        if pst is double:
            return
        if sst is double:
            return
        if pst is float:
            if sst is not float:
                return
    # decoupled decay as a factor that is 1 where it does not apply (p * 1 == p, bit for bit),
    # coupled decay under one flag: GCC 12 does not vectorize the nested condition in loops
    # that mix 16-bit and 32-bit arrays
    if not (has_wd and decoupled):
        decay = 1
    has_wd = has_wd and not decoupled
    # amsgrad is a literal in each loop: GCC does not unswitch this loop body on its own, and
    # an if-converted conditional access to vmax does not vectorize.
    cdef Py_ssize_t i, t
    if _blocks(<pst*>NULL, <sst*>NULL):  # blocks (_bin): see the float16 loops
        if nthreads > 1:
            for t in prange(nthreads, schedule="static", num_threads=nthreads):
                _adam_h16(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p), p, g, m, v, vmax, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, step_size, inv_bc2_sqrt, eps, amsgrad)
        else:
            _adam_h16(0, n, p, g, m, v, vmax, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, step_size, inv_bc2_sqrt, eps, amsgrad)
        return
    cdef Py_ssize_t h = _hd(n, p)
    for i in range(h):  # up to p's first cache-line boundary: the loops below start aligned
        _adam_at(i, p, g, m, v, vmax, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, step_size,
                 inv_bc2_sqrt, eps, amsgrad)
    if nthreads > 1:
        if amsgrad:
            for t in prange(nthreads, schedule="static", num_threads=nthreads):
                for i in range(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p)):
                    _adam_at(i, p, g, m, v, vmax, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2,
                             step_size, inv_bc2_sqrt, eps, True)
        else:
            for t in prange(nthreads, schedule="static", num_threads=nthreads):
                for i in range(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p)):
                    _adam_at(i, p, g, m, v, vmax, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2,
                             step_size, inv_bc2_sqrt, eps, False)
    elif amsgrad:
        for i in range(h, n):
            _adam_at(i, p, g, m, v, vmax, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2,
                     step_size, inv_bc2_sqrt, eps, True)
    else:
        for i in range(h, n):
            _adam_at(i, p, g, m, v, vmax, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2,
                     step_size, inv_bc2_sqrt, eps, False)


# ``double step``: where the step only enters as ``beta ** step`` it is taken as a C double,
# the conversion Python's ``float ** int`` makes, so the power is libm's pow as in the
# reference, without a Python object on the way.
def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, double step, double lr, double beta1,
         double beta2, double eps, double weight_decay, bint amsgrad, bint maximize,
         bint decoupled_weight_decay):
    _single_checked(param, (grad, exp_avg, exp_avg_sq, max_exp_avg_sq))
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef int nt = threads_for(n)
    cdef double sign = -1.0 if maximize else 1.0
    cdef _AdamScalars sc = _adam_scalars(step, lr, beta1, beta2, weight_decay)
    cdef double step_size = sc.step_size, inv_bc2_sqrt = sc.inv_bc2_sqrt, decay = sc.decay
    cdef bint has_wd = weight_decay != 0
    cdef void* _p_param = _ptr(param)
    cdef void* _p_grad = _ptr(grad)
    cdef void* _p_exp_avg = _ptr(exp_avg)
    cdef void* _p_exp_avg_sq = _ptr(exp_avg_sq)
    cdef void* _p_max_exp_avg_sq = _ptr(max_exp_avg_sq)
    cdef bint f32 = _f32(param)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _adam[float, float, float](<float*>_p_param, <float*>_p_grad, <float*>_p_exp_avg, <float*>_p_exp_avg_sq,
                     <float*>_p_max_exp_avg_sq, n, nt, sign, has_wd, decoupled_weight_decay, weight_decay,
                     decay, beta1, 1.0 - beta1, beta2, 1.0 - beta2, step_size, inv_bc2_sqrt, eps, amsgrad)
    else:
        _adam[double, double, double](<double*>_p_param, <double*>_p_grad, <double*>_p_exp_avg, <double*>_p_exp_avg_sq,
                      <double*>_p_max_exp_avg_sq, n, nt, sign, has_wd, decoupled_weight_decay, weight_decay,
                      decay, beta1, 1.0 - beta1, beta2, 1.0 - beta2, step_size, inv_bc2_sqrt, eps, amsgrad)
    _restore_gil(ts)
    return param


# ---------------------------------------------------------------------------------------
# AdaMax

cdef inline void _adamax_at(Py_ssize_t i, pst* p, const pst* g, sst* m, sst* u,
                            floating sign, bint has_wd, floating wd, floating beta1, floating omb1,
                            floating beta2, floating eps, floating step_size) noexcept nogil:
    cdef floating gi, mi, ui
    gi = sign * _ld(g, i, sign)
    if has_wd:
        gi = gi + wd * _ld(p, i, sign)
    mi = beta1 * _ld(m, i, sign) + omb1 * gi
    ui = _max_nan(beta2 * _ld(u, i, sign), _fabs(gi) + eps)
    _st(m, i, mi)
    _st(u, i, ui)
    _st(p, i, _ld(p, i, sign) - step_size * (mi / ui))



cdef void _adamax_h16(Py_ssize_t lo, Py_ssize_t hi, pst* p, const pst* g, sst* m, sst* u, floating sign, bint has_wd, floating wd, floating beta1, floating omb1, floating beta2, floating eps, floating step_size) noexcept nogil:
    """The float16 loop of [lo, hi): blocks (see _bin), the last < 16 elements one by one."""
    cdef float _b_p[128]
    cdef float _b_g[128]
    cdef float _b_m[128]
    cdef float _b_u[128]
    cdef float* _q_p
    cdef float* _q_g
    cdef float* _q_m
    cdef float* _q_u
    cdef Py_ssize_t i = lo, j, k, bn  # a run-time length: GCC unrolls a literal 16 fully and then does not vectorize it
    while i + 16 <= hi:
        bn = _block_len(i, hi)
        _q_p = _bin(p, i, bn, _b_p)
        _q_g = _bin(g, i, bn, _b_g)
        _q_m = _bin(m, i, bn, _b_m)
        _q_u = _bin(u, i, bn, _b_u)
        for j in range(bn):
            _adamax_at(j, _q_p, _q_g, _q_m, _q_u, sign, has_wd, wd, beta1, omb1, beta2, eps, step_size)
        _bout(p, i, bn, _q_p)
        _bout(m, i, bn, _q_m)
        _bout(u, i, bn, _q_u)
        i = i + bn
    for k in range(i, hi):
        _adamax_at(k, p, g, m, u, sign, has_wd, wd, beta1, omb1, beta2, eps, step_size)

cdef void _adamax(pst* p, const pst* g, sst* m, sst* u, Py_ssize_t n, int nthreads,
                  floating sign, bint has_wd, floating wd, floating beta1, floating omb1, floating beta2,
                  floating eps, floating step_size) noexcept nogil:
    if floating is double:  # dtype combinations no caller makes are compiled to nothing
        if pst is not double:
            return
        if sst is not double:
            return
    else:
        if pst is double:
            return
        if sst is double:
            return
        if pst is float:
            if sst is not float:
                return
    cdef Py_ssize_t i, t
    if _blocks(<pst*>NULL, <sst*>NULL):  # blocks (_bin): see the float16 loops
        if nthreads > 1:
            for t in prange(nthreads, schedule="static", num_threads=nthreads):
                _adamax_h16(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p), p, g, m, u, sign, has_wd, wd, beta1, omb1, beta2, eps, step_size)
        else:
            _adamax_h16(0, n, p, g, m, u, sign, has_wd, wd, beta1, omb1, beta2, eps, step_size)
        return
    cdef Py_ssize_t h = _hd(n, p)
    for i in range(h):  # up to p's first cache-line boundary: the loops below start aligned
        _adamax_at(i, p, g, m, u, sign, has_wd, wd, beta1, omb1, beta2, eps, step_size)
    if nthreads > 1:
        for t in prange(nthreads, schedule="static", num_threads=nthreads):
            for i in range(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p)):
                _adamax_at(i, p, g, m, u, sign, has_wd, wd, beta1, omb1, beta2, eps, step_size)
    else:
        for i in range(h, n):
            _adamax_at(i, p, g, m, u, sign, has_wd, wd, beta1, omb1, beta2, eps, step_size)


def adamax(param, grad, exp_avg, exp_inf, double step, double lr, double beta1, double beta2, double eps,
           double weight_decay, bint maximize):
    _single_checked(param, (grad, exp_avg, exp_inf))
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef int nt = threads_for(n)
    cdef double sign = -1.0 if maximize else 1.0
    cdef double step_size = _adamax_step_size(step, lr, beta1)
    cdef bint has_wd = weight_decay != 0
    cdef void* _p_param = _ptr(param)
    cdef void* _p_grad = _ptr(grad)
    cdef void* _p_exp_avg = _ptr(exp_avg)
    cdef void* _p_exp_inf = _ptr(exp_inf)
    cdef bint f32 = _f32(param)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _adamax[float, float, float](<float*>_p_param, <float*>_p_grad, <float*>_p_exp_avg, <float*>_p_exp_inf,
                       n, nt, sign, has_wd, weight_decay, beta1, 1.0 - beta1, beta2, eps, step_size)
    else:
        _adamax[double, double, double](<double*>_p_param, <double*>_p_grad, <double*>_p_exp_avg, <double*>_p_exp_inf,
                        n, nt, sign, has_wd, weight_decay, beta1, 1.0 - beta1, beta2, eps, step_size)
    _restore_gil(ts)
    return param


# ---------------------------------------------------------------------------------------
# NAdam (mu_product: the product of mu_1 .. mu_{t-1}, a Python float; see the reference)

cdef inline void _nadam_at(Py_ssize_t i, pst* p, const pst* g, sst* m, sst* v,
                           floating sign, bint has_wd, bint decoupled, floating wd, floating decay,
                           floating beta1, floating omb1, floating beta2, floating omb2, floating inv_bc2,
                           floating eps, floating coef_grad, floating coef_avg) noexcept nogil:
    cdef floating gi, mi, vi, denom, pi
    gi = sign * _ld(g, i, sign)
    pi = _ld(p, i, sign)
    pi = pi * decay  # 1 unless decoupled weight decay applies (x * 1 == x: see the loop)
    if has_wd:  # coupled only (see the loop)
        gi = gi + wd * pi
    mi = beta1 * _ld(m, i, sign) + omb1 * gi
    vi = beta2 * _ld(v, i, sign) + omb2 * (gi * gi)
    _st(m, i, mi)
    _st(v, i, vi)
    denom = _sqrt(vi * inv_bc2) + eps
    pi = pi - coef_grad * (gi / denom)
    _st(p, i, pi - coef_avg * (mi / denom))



cdef void _nadam_h16(Py_ssize_t lo, Py_ssize_t hi, pst* p, const pst* g, sst* m, sst* v, floating sign, bint has_wd, bint decoupled, floating wd, floating decay, floating beta1, floating omb1, floating beta2, floating omb2, floating inv_bc2, floating eps, floating coef_grad, floating coef_avg) noexcept nogil:
    """The float16 loop of [lo, hi): blocks (see _bin), the last < 16 elements one by one."""
    cdef float _b_p[128]
    cdef float _b_g[128]
    cdef float _b_m[128]
    cdef float _b_v[128]
    cdef float* _q_p
    cdef float* _q_g
    cdef float* _q_m
    cdef float* _q_v
    cdef Py_ssize_t i = lo, j, k, bn  # a run-time length: GCC unrolls a literal 16 fully and then does not vectorize it
    while i + 16 <= hi:
        bn = _block_len(i, hi)
        _q_p = _bin(p, i, bn, _b_p)
        _q_g = _bin(g, i, bn, _b_g)
        _q_m = _bin(m, i, bn, _b_m)
        _q_v = _bin(v, i, bn, _b_v)
        for j in range(bn):
            _nadam_at(j, _q_p, _q_g, _q_m, _q_v, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, inv_bc2, eps, coef_grad, coef_avg)
        _bout(p, i, bn, _q_p)
        _bout(m, i, bn, _q_m)
        _bout(v, i, bn, _q_v)
        i = i + bn
    for k in range(i, hi):
        _nadam_at(k, p, g, m, v, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, inv_bc2, eps, coef_grad, coef_avg)

cdef void _nadam(pst* p, const pst* g, sst* m, sst* v, Py_ssize_t n, int nthreads,
                 floating sign, bint has_wd, bint decoupled, floating wd, floating decay, floating beta1,
                 floating omb1, floating beta2, floating omb2, floating inv_bc2, floating eps,
                 floating coef_grad, floating coef_avg) noexcept nogil:
    if floating is double:  # dtype combinations no caller makes are compiled to nothing
        if pst is not double:
            return
        if sst is not double:
            return
    else:
        if pst is double:
            return
        if sst is double:
            return
        if pst is float:
            if sst is not float:
                return
    # decoupled decay as a factor that is 1 where it does not apply (p * 1 == p, bit for bit),
    # coupled decay under one flag: GCC 12 does not vectorize the nested condition in loops
    # that mix 16-bit and 32-bit arrays
    if not (has_wd and decoupled):
        decay = 1
    has_wd = has_wd and not decoupled
    cdef Py_ssize_t i, t
    if _blocks(<pst*>NULL, <sst*>NULL):  # blocks (_bin): see the float16 loops
        if nthreads > 1:
            for t in prange(nthreads, schedule="static", num_threads=nthreads):
                _nadam_h16(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p), p, g, m, v, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, inv_bc2, eps, coef_grad, coef_avg)
        else:
            _nadam_h16(0, n, p, g, m, v, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, inv_bc2, eps, coef_grad, coef_avg)
        return
    cdef Py_ssize_t h = _hd(n, p)
    for i in range(h):  # up to p's first cache-line boundary: the loops below start aligned
        _nadam_at(i, p, g, m, v, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, inv_bc2, eps,
                  coef_grad, coef_avg)
    if nthreads > 1:
        for t in prange(nthreads, schedule="static", num_threads=nthreads):
            for i in range(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p)):
                _nadam_at(i, p, g, m, v, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, inv_bc2, eps,
                          coef_grad, coef_avg)
    else:
        for i in range(h, n):
            _nadam_at(i, p, g, m, v, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, inv_bc2, eps,
                      coef_grad, coef_avg)


def nadam(param, grad, exp_avg, exp_avg_sq, step, mu_product, double lr, double beta1, double beta2,
          double eps, double weight_decay, double momentum_decay, bint maximize, bint decoupled_weight_decay):
    _single_checked(param, (grad, exp_avg, exp_avg_sq))
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef int nt = threads_for(n)
    cdef double sign = -1.0 if maximize else 1.0
    cdef double decay = 1.0 - lr * weight_decay
    cdef bint has_wd = weight_decay != 0
    # the scalars exactly as the reference computes them (nadam_mu is its schedule)
    cdef _NAdamScalars sc = _nadam_scalars(step, mu_product, lr, beta1, beta2, momentum_decay)
    cdef double coef_grad = sc.coef_grad, coef_avg = sc.coef_avg, inv_bc2 = sc.inv_bc2
    cdef void* _p_param = _ptr(param)
    cdef void* _p_grad = _ptr(grad)
    cdef void* _p_exp_avg = _ptr(exp_avg)
    cdef void* _p_exp_avg_sq = _ptr(exp_avg_sq)
    cdef bint f32 = _f32(param)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _nadam[float, float, float](<float*>_p_param, <float*>_p_grad, <float*>_p_exp_avg, <float*>_p_exp_avg_sq,
                      n, nt, sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                      beta2, 1.0 - beta2, inv_bc2, eps, coef_grad, coef_avg)
    else:
        _nadam[double, double, double](<double*>_p_param, <double*>_p_grad, <double*>_p_exp_avg, <double*>_p_exp_avg_sq,
                       n, nt, sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                       beta2, 1.0 - beta2, inv_bc2, eps, coef_grad, coef_avg)
    _restore_gil(ts)
    return param


# ---------------------------------------------------------------------------------------
# RAdam (the rho_t > 5 branch is a scalar decision, made in the wrapper: ``rect``)

cdef inline void _radam_at(Py_ssize_t i, pst* p, const pst* g, sst* m, sst* v,
                           floating sign, bint has_wd, bint decoupled, floating wd, floating decay,
                           floating beta1, floating omb1, floating beta2, floating omb2, bint rect,
                           floating step_size, floating eps) noexcept nogil:
    cdef floating gi, mi, vi, pi
    gi = sign * _ld(g, i, sign)
    pi = _ld(p, i, sign)  # read once, written once (see _adam_at)
    pi = pi * decay  # 1 unless decoupled weight decay applies (x * 1 == x: see the loop)
    if has_wd:  # coupled only (see the loop)
        gi = gi + wd * pi
    mi = beta1 * _ld(m, i, sign) + omb1 * gi
    vi = beta2 * _ld(v, i, sign) + omb2 * (gi * gi)
    _st(m, i, mi)
    _st(v, i, vi)
    if rect:
        _st(p, i, pi - step_size * (mi / (_sqrt(vi) + eps)))
    else:
        _st(p, i, pi - step_size * mi)



cdef void _radam_h16(Py_ssize_t lo, Py_ssize_t hi, pst* p, const pst* g, sst* m, sst* v, floating sign, bint has_wd, bint decoupled, floating wd, floating decay, floating beta1, floating omb1, floating beta2, floating omb2, bint rect, floating step_size, floating eps) noexcept nogil:
    """The float16 loop of [lo, hi): blocks (see _bin), the last < 16 elements one by one."""
    cdef float _b_p[128]
    cdef float _b_g[128]
    cdef float _b_m[128]
    cdef float _b_v[128]
    cdef float* _q_p
    cdef float* _q_g
    cdef float* _q_m
    cdef float* _q_v
    cdef Py_ssize_t i = lo, j, k, bn  # a run-time length: GCC unrolls a literal 16 fully and then does not vectorize it
    while i + 16 <= hi:
        bn = _block_len(i, hi)
        _q_p = _bin(p, i, bn, _b_p)
        _q_g = _bin(g, i, bn, _b_g)
        _q_m = _bin(m, i, bn, _b_m)
        _q_v = _bin(v, i, bn, _b_v)
        for j in range(bn):
            _radam_at(j, _q_p, _q_g, _q_m, _q_v, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, rect, step_size, eps)
        _bout(p, i, bn, _q_p)
        _bout(m, i, bn, _q_m)
        _bout(v, i, bn, _q_v)
        i = i + bn
    for k in range(i, hi):
        _radam_at(k, p, g, m, v, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, rect, step_size, eps)

cdef void _radam(pst* p, const pst* g, sst* m, sst* v, Py_ssize_t n, int nthreads,
                 floating sign, bint has_wd, bint decoupled, floating wd, floating decay, floating beta1,
                 floating omb1, floating beta2, floating omb2, bint rect, floating step_size,
                 floating eps) noexcept nogil:
    if floating is double:  # dtype combinations no caller makes are compiled to nothing
        if pst is not double:
            return
        if sst is not double:
            return
    else:
        if pst is double:
            return
        if sst is double:
            return
        if pst is float:
            if sst is not float:
                return
    # decoupled decay as a factor that is 1 where it does not apply (p * 1 == p, bit for bit),
    # coupled decay under one flag: GCC 12 does not vectorize the nested condition in loops
    # that mix 16-bit and 32-bit arrays
    if not (has_wd and decoupled):
        decay = 1
    has_wd = has_wd and not decoupled
    # rect is a literal in the serial loops (see _sgd: the plain loop did not vectorize, 3.4 ns/element)
    cdef Py_ssize_t i, t
    if _blocks(<pst*>NULL, <sst*>NULL):  # blocks (_bin): see the float16 loops
        if nthreads > 1:
            for t in prange(nthreads, schedule="static", num_threads=nthreads):
                _radam_h16(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p), p, g, m, v, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, rect, step_size, eps)
        else:
            _radam_h16(0, n, p, g, m, v, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, rect, step_size, eps)
        return
    cdef Py_ssize_t h = _hd(n, p)
    for i in range(h):  # up to p's first cache-line boundary: the loops below start aligned
        _radam_at(i, p, g, m, v, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, rect, step_size,
                  eps)
    if nthreads > 1:
        for t in prange(nthreads, schedule="static", num_threads=nthreads):
            for i in range(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p)):
                _radam_at(i, p, g, m, v, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, rect,
                          step_size, eps)
    elif rect:
        for i in range(h, n):
            _radam_at(i, p, g, m, v, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, True,
                      step_size, eps)
    else:
        for i in range(h, n):
            _radam_at(i, p, g, m, v, sign, has_wd, decoupled, wd, decay, beta1, omb1, beta2, omb2, False,
                      step_size, eps)


def radam(param, grad, exp_avg, exp_avg_sq, step, double lr, double beta1, double beta2, double eps,
          double weight_decay, bint maximize, bint decoupled_weight_decay):
    _single_checked(param, (grad, exp_avg, exp_avg_sq))
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef int nt = threads_for(n)
    cdef double sign = -1.0 if maximize else 1.0
    cdef double decay = 1.0 - lr * weight_decay
    cdef bint has_wd = weight_decay != 0
    cdef _RAdamScalars sc = _radam_scalars(step, lr, beta1, beta2)
    cdef bint rect = sc.rect
    cdef double step_size = sc.step_size
    cdef void* _p_param = _ptr(param)
    cdef void* _p_grad = _ptr(grad)
    cdef void* _p_exp_avg = _ptr(exp_avg)
    cdef void* _p_exp_avg_sq = _ptr(exp_avg_sq)
    cdef bint f32 = _f32(param)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _radam[float, float, float](<float*>_p_param, <float*>_p_grad, <float*>_p_exp_avg, <float*>_p_exp_avg_sq,
                      n, nt, sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                      beta2, 1.0 - beta2, rect, step_size, eps)
    else:
        _radam[double, double, double](<double*>_p_param, <double*>_p_grad, <double*>_p_exp_avg, <double*>_p_exp_avg_sq,
                       n, nt, sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                       beta2, 1.0 - beta2, rect, step_size, eps)
    _restore_gil(ts)
    return param


# ---------------------------------------------------------------------------------------
# Adagrad

cdef inline void _adagrad_at(Py_ssize_t i, pst* p, const pst* g, sst* s, floating sign,
                             bint has_wd, floating wd, floating clr, floating eps) noexcept nogil:
    cdef floating gi, si
    gi = sign * _ld(g, i, sign)
    if has_wd:
        gi = gi + wd * _ld(p, i, sign)
    si = _ld(s, i, sign) + gi * gi
    _st(s, i, si)
    _st(p, i, _ld(p, i, sign) - clr * (gi / (_sqrt(si) + eps)))



cdef void _adagrad_h16(Py_ssize_t lo, Py_ssize_t hi, pst* p, const pst* g, sst* s, floating sign, bint has_wd, floating wd, floating clr, floating eps) noexcept nogil:
    """The float16 loop of [lo, hi): blocks (see _bin), the last < 16 elements one by one."""
    cdef float _b_p[128]
    cdef float _b_g[128]
    cdef float _b_s[128]
    cdef float* _q_p
    cdef float* _q_g
    cdef float* _q_s
    cdef Py_ssize_t i = lo, j, k, bn  # a run-time length: GCC unrolls a literal 16 fully and then does not vectorize it
    while i + 16 <= hi:
        bn = _block_len(i, hi)
        _q_p = _bin(p, i, bn, _b_p)
        _q_g = _bin(g, i, bn, _b_g)
        _q_s = _bin(s, i, bn, _b_s)
        for j in range(bn):
            _adagrad_at(j, _q_p, _q_g, _q_s, sign, has_wd, wd, clr, eps)
        _bout(p, i, bn, _q_p)
        _bout(s, i, bn, _q_s)
        i = i + bn
    for k in range(i, hi):
        _adagrad_at(k, p, g, s, sign, has_wd, wd, clr, eps)

cdef void _adagrad(pst* p, const pst* g, sst* s, Py_ssize_t n, int nthreads, floating sign,
                   bint has_wd, floating wd, floating clr, floating eps) noexcept nogil:
    if floating is double:  # dtype combinations no caller makes are compiled to nothing
        if pst is not double:
            return
        if sst is not double:
            return
    else:
        if pst is double:
            return
        if sst is double:
            return
        if pst is float:
            if sst is not float:
                return
    cdef Py_ssize_t i, t
    if _blocks(<pst*>NULL, <sst*>NULL):  # blocks (_bin): see the float16 loops
        if nthreads > 1:
            for t in prange(nthreads, schedule="static", num_threads=nthreads):
                _adagrad_h16(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p), p, g, s, sign, has_wd, wd, clr, eps)
        else:
            _adagrad_h16(0, n, p, g, s, sign, has_wd, wd, clr, eps)
        return
    cdef Py_ssize_t h = _hd(n, p)
    for i in range(h):  # up to p's first cache-line boundary: the loops below start aligned
        _adagrad_at(i, p, g, s, sign, has_wd, wd, clr, eps)
    if nthreads > 1:
        for t in prange(nthreads, schedule="static", num_threads=nthreads):
            for i in range(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p)):
                _adagrad_at(i, p, g, s, sign, has_wd, wd, clr, eps)
    else:
        for i in range(h, n):
            _adagrad_at(i, p, g, s, sign, has_wd, wd, clr, eps)


def adagrad(param, grad, state_sum, step, double lr, double lr_decay, double weight_decay, double eps,
            bint maximize):
    _single_checked(param, (grad, state_sum))
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef int nt = threads_for(n)
    cdef double sign = -1.0 if maximize else 1.0
    cdef bint has_wd = weight_decay != 0
    cdef double clr = _adagrad_clr(step, lr, lr_decay)
    cdef void* _p_param = _ptr(param)
    cdef void* _p_grad = _ptr(grad)
    cdef void* _p_state_sum = _ptr(state_sum)
    cdef bint f32 = _f32(param)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _adagrad[float, float, float](<float*>_p_param, <float*>_p_grad, <float*>_p_state_sum, n, nt, sign, has_wd,
                        weight_decay, clr, eps)
    else:
        _adagrad[double, double, double](<double*>_p_param, <double*>_p_grad, <double*>_p_state_sum, n, nt, sign, has_wd,
                         weight_decay, clr, eps)
    _restore_gil(ts)
    return param


# ---------------------------------------------------------------------------------------
# Adadelta

cdef inline void _adadelta_at(Py_ssize_t i, pst* p, const pst* g, sst* s, sst* a,
                              floating sign, bint has_wd, floating wd, floating rho, floating omr, floating eps,
                              floating lr) noexcept nogil:
    cdef floating gi, si, delta
    gi = sign * _ld(g, i, sign)
    if has_wd:
        gi = gi + wd * _ld(p, i, sign)
    si = rho * _ld(s, i, sign) + omr * (gi * gi)
    _st(s, i, si)
    delta = _sqrt(_ld(a, i, sign) + eps) / _sqrt(si + eps) * gi
    _st(a, i, rho * _ld(a, i, sign) + omr * (delta * delta))
    _st(p, i, _ld(p, i, sign) - lr * delta)



cdef void _adadelta_h16(Py_ssize_t lo, Py_ssize_t hi, pst* p, const pst* g, sst* s, sst* a, floating sign, bint has_wd, floating wd, floating rho, floating omr, floating eps, floating lr) noexcept nogil:
    """The float16 loop of [lo, hi): blocks (see _bin), the last < 16 elements one by one."""
    cdef float _b_p[128]
    cdef float _b_g[128]
    cdef float _b_s[128]
    cdef float _b_a[128]
    cdef float* _q_p
    cdef float* _q_g
    cdef float* _q_s
    cdef float* _q_a
    cdef Py_ssize_t i = lo, j, k, bn  # a run-time length: GCC unrolls a literal 16 fully and then does not vectorize it
    while i + 16 <= hi:
        bn = _block_len(i, hi)
        _q_p = _bin(p, i, bn, _b_p)
        _q_g = _bin(g, i, bn, _b_g)
        _q_s = _bin(s, i, bn, _b_s)
        _q_a = _bin(a, i, bn, _b_a)
        for j in range(bn):
            _adadelta_at(j, _q_p, _q_g, _q_s, _q_a, sign, has_wd, wd, rho, omr, eps, lr)
        _bout(p, i, bn, _q_p)
        _bout(s, i, bn, _q_s)
        _bout(a, i, bn, _q_a)
        i = i + bn
    for k in range(i, hi):
        _adadelta_at(k, p, g, s, a, sign, has_wd, wd, rho, omr, eps, lr)

cdef void _adadelta(pst* p, const pst* g, sst* s, sst* a, Py_ssize_t n, int nthreads,
                    floating sign, bint has_wd, floating wd, floating rho, floating omr, floating eps,
                    floating lr) noexcept nogil:
    if floating is double:  # dtype combinations no caller makes are compiled to nothing
        if pst is not double:
            return
        if sst is not double:
            return
    else:
        if pst is double:
            return
        if sst is double:
            return
        if pst is float:
            if sst is not float:
                return
    cdef Py_ssize_t i, t
    if _blocks(<pst*>NULL, <sst*>NULL):  # blocks (_bin): see the float16 loops
        if nthreads > 1:
            for t in prange(nthreads, schedule="static", num_threads=nthreads):
                _adadelta_h16(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p), p, g, s, a, sign, has_wd, wd, rho, omr, eps, lr)
        else:
            _adadelta_h16(0, n, p, g, s, a, sign, has_wd, wd, rho, omr, eps, lr)
        return
    cdef Py_ssize_t h = _hd(n, p)
    for i in range(h):  # up to p's first cache-line boundary: the loops below start aligned
        _adadelta_at(i, p, g, s, a, sign, has_wd, wd, rho, omr, eps, lr)
    if nthreads > 1:
        for t in prange(nthreads, schedule="static", num_threads=nthreads):
            for i in range(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p)):
                _adadelta_at(i, p, g, s, a, sign, has_wd, wd, rho, omr, eps, lr)
    else:
        for i in range(h, n):
            _adadelta_at(i, p, g, s, a, sign, has_wd, wd, rho, omr, eps, lr)


def adadelta(param, grad, square_avg, acc_delta, double lr, double rho, double eps, double weight_decay,
             bint maximize):
    _single_checked(param, (grad, square_avg, acc_delta))
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef int nt = threads_for(n)
    cdef double sign = -1.0 if maximize else 1.0
    cdef bint has_wd = weight_decay != 0
    cdef void* _p_param = _ptr(param)
    cdef void* _p_grad = _ptr(grad)
    cdef void* _p_square_avg = _ptr(square_avg)
    cdef void* _p_acc_delta = _ptr(acc_delta)
    cdef bint f32 = _f32(param)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _adadelta[float, float, float](<float*>_p_param, <float*>_p_grad, <float*>_p_square_avg, <float*>_p_acc_delta,
                         n, nt, sign, has_wd, weight_decay, rho, 1.0 - rho, eps, lr)
    else:
        _adadelta[double, double, double](<double*>_p_param, <double*>_p_grad, <double*>_p_square_avg,
                          <double*>_p_acc_delta, n, nt, sign, has_wd, weight_decay, rho, 1.0 - rho, eps, lr)
    _restore_gil(ts)
    return param


# ---------------------------------------------------------------------------------------
# RMSprop (momentum_buffer is None unless momentum > 0, grad_avg None unless centered)

cdef inline void _rmsprop_at(Py_ssize_t i, pst* p, const pst* g, sst* s, sst* b,
                             sst* ga, floating sign, bint has_wd, floating wd, floating alpha,
                             floating oma, floating eps, bint centered, bint has_mom, floating momentum,
                             floating lr) noexcept nogil:
    cdef floating gi, si, gai, avg, bi
    gi = sign * _ld(g, i, sign)
    if has_wd:
        gi = gi + wd * _ld(p, i, sign)
    si = alpha * _ld(s, i, sign) + oma * (gi * gi)
    _st(s, i, si)
    if centered:
        gai = alpha * _ld(ga, i, sign) + oma * gi
        _st(ga, i, gai)
        avg = _sqrt(si - gai * gai) + eps
    else:
        avg = _sqrt(si) + eps
    if has_mom:
        bi = momentum * _ld(b, i, sign) + gi / avg
        _st(b, i, bi)
        _st(p, i, _ld(p, i, sign) - lr * bi)
    else:
        _st(p, i, _ld(p, i, sign) - lr * (gi / avg))



cdef void _rmsprop_h16(Py_ssize_t lo, Py_ssize_t hi, pst* p, const pst* g, sst* s, sst* b, sst* ga, floating sign, bint has_wd, floating wd, floating alpha, floating oma, floating eps, bint centered, bint has_mom, floating momentum, floating lr) noexcept nogil:
    """The float16 loop of [lo, hi): blocks (see _bin), the last < 16 elements one by one."""
    cdef float _b_p[128]
    cdef float _b_g[128]
    cdef float _b_s[128]
    cdef float _b_b[128]
    cdef float _b_ga[128]
    cdef float* _q_p
    cdef float* _q_g
    cdef float* _q_s
    cdef float* _q_b
    cdef float* _q_ga
    cdef Py_ssize_t i = lo, j, k, bn  # a run-time length: GCC unrolls a literal 16 fully and then does not vectorize it
    while i + 16 <= hi:
        bn = _block_len(i, hi)
        _q_p = _bin(p, i, bn, _b_p)
        _q_g = _bin(g, i, bn, _b_g)
        _q_s = _bin(s, i, bn, _b_s)
        _q_b = _bin(b, i, bn, _b_b)
        _q_ga = _bin(ga, i, bn, _b_ga)
        if centered and has_mom:  # literals in each loop (see _rmsprop)
            for j in range(bn):
                _rmsprop_at(j, _q_p, _q_g, _q_s, _q_b, _q_ga, sign, has_wd, wd, alpha, oma, eps, True, True, momentum, lr)
        elif centered:
            for j in range(bn):
                _rmsprop_at(j, _q_p, _q_g, _q_s, _q_b, _q_ga, sign, has_wd, wd, alpha, oma, eps, True, False, momentum, lr)
        elif has_mom:
            for j in range(bn):
                _rmsprop_at(j, _q_p, _q_g, _q_s, _q_b, _q_ga, sign, has_wd, wd, alpha, oma, eps, False, True, momentum, lr)
        else:
            for j in range(bn):
                _rmsprop_at(j, _q_p, _q_g, _q_s, _q_b, _q_ga, sign, has_wd, wd, alpha, oma, eps, False, False, momentum, lr)
        _bout(p, i, bn, _q_p)
        _bout(s, i, bn, _q_s)
        _bout(b, i, bn, _q_b)
        _bout(ga, i, bn, _q_ga)
        i = i + bn
    for k in range(i, hi):
        _rmsprop_at(k, p, g, s, b, ga, sign, has_wd, wd, alpha, oma, eps, centered, has_mom, momentum, lr)

cdef void _rmsprop(pst* p, const pst* g, sst* s, sst* b, sst* ga, Py_ssize_t n,
                   int nthreads, floating sign, bint has_wd, floating wd, floating alpha, floating oma,
                   floating eps, bint centered, bint has_mom, floating momentum, floating lr) noexcept nogil:
    if floating is double:  # dtype combinations no caller makes are compiled to nothing
        if pst is not double:
            return
        if sst is not double:
            return
    else:
        if pst is double:
            return
        if sst is double:
            return
        if pst is float:
            if sst is not float:
                return
    # centered and has_mom are literals in each loop (see _adam: the optional arrays must not
    # be accessed under a run-time condition inside the loop, or it does not vectorize)
    cdef Py_ssize_t i, t
    if _blocks(<pst*>NULL, <sst*>NULL):  # blocks (_bin): see the float16 loops
        if nthreads > 1:
            for t in prange(nthreads, schedule="static", num_threads=nthreads):
                _rmsprop_h16(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p), p, g, s, b, ga, sign, has_wd, wd, alpha, oma, eps, centered, has_mom, momentum, lr)
        else:
            _rmsprop_h16(0, n, p, g, s, b, ga, sign, has_wd, wd, alpha, oma, eps, centered, has_mom, momentum, lr)
        return
    cdef Py_ssize_t h = _hd(n, p)
    for i in range(h):  # up to p's first cache-line boundary: the loops below start aligned
        _rmsprop_at(i, p, g, s, b, ga, sign, has_wd, wd, alpha, oma, eps, centered, has_mom, momentum, lr)
    if nthreads > 1:
        if centered and has_mom:
            for t in prange(nthreads, schedule="static", num_threads=nthreads):
                for i in range(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p)):
                    _rmsprop_at(i, p, g, s, b, ga, sign, has_wd, wd, alpha, oma, eps, True, True, momentum, lr)
        elif centered:
            for t in prange(nthreads, schedule="static", num_threads=nthreads):
                for i in range(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p)):
                    _rmsprop_at(i, p, g, s, b, ga, sign, has_wd, wd, alpha, oma, eps, True, False, momentum, lr)
        elif has_mom:
            for t in prange(nthreads, schedule="static", num_threads=nthreads):
                for i in range(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p)):
                    _rmsprop_at(i, p, g, s, b, ga, sign, has_wd, wd, alpha, oma, eps, False, True, momentum, lr)
        else:
            for t in prange(nthreads, schedule="static", num_threads=nthreads):
                for i in range(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p)):
                    _rmsprop_at(i, p, g, s, b, ga, sign, has_wd, wd, alpha, oma, eps, False, False, momentum, lr)
    elif centered and has_mom:
        for i in range(h, n):
            _rmsprop_at(i, p, g, s, b, ga, sign, has_wd, wd, alpha, oma, eps, True, True, momentum, lr)
    elif centered:
        for i in range(h, n):
            _rmsprop_at(i, p, g, s, b, ga, sign, has_wd, wd, alpha, oma, eps, True, False, momentum, lr)
    elif has_mom:
        for i in range(h, n):
            _rmsprop_at(i, p, g, s, b, ga, sign, has_wd, wd, alpha, oma, eps, False, True, momentum, lr)
    else:
        for i in range(h, n):
            _rmsprop_at(i, p, g, s, b, ga, sign, has_wd, wd, alpha, oma, eps, False, False, momentum, lr)


def rmsprop(param, grad, square_avg, momentum_buffer, grad_avg, double lr, double alpha, double eps,
            double weight_decay, double momentum, bint centered, bint maximize):
    _single_checked(param, (grad, square_avg, momentum_buffer, grad_avg))
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef int nt = threads_for(n)
    cdef double sign = -1.0 if maximize else 1.0
    cdef bint has_wd = weight_decay != 0
    cdef bint has_mom = momentum > 0
    cdef void* _p_param = _ptr(param)
    cdef void* _p_grad = _ptr(grad)
    cdef void* _p_square_avg = _ptr(square_avg)
    cdef void* _p_momentum_buffer = _ptr(momentum_buffer)
    cdef void* _p_grad_avg = _ptr(grad_avg)
    cdef bint f32 = _f32(param)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _rmsprop[float, float, float](<float*>_p_param, <float*>_p_grad, <float*>_p_square_avg,
                        <float*>_p_momentum_buffer, <float*>_p_grad_avg, n, nt, sign, has_wd, weight_decay,
                        alpha, 1.0 - alpha, eps, centered, has_mom, momentum, lr)
    else:
        _rmsprop[double, double, double](<double*>_p_param, <double*>_p_grad, <double*>_p_square_avg,
                         <double*>_p_momentum_buffer, <double*>_p_grad_avg, n, nt, sign, has_wd, weight_decay,
                         alpha, 1.0 - alpha, eps, centered, has_mom, momentum, lr)
    _restore_gil(ts)
    return param


# ---------------------------------------------------------------------------------------
# Lion (decoupled weight decay, as the paper and optax)

cdef inline void _lion_at(Py_ssize_t i, pst* p, const pst* g, sst* m, floating sign,
                          bint has_wd, floating decay, floating beta1, floating omb1, floating beta2,
                          floating omb2, floating lr) noexcept nogil:
    cdef floating gi, mi, pi
    gi = sign * _ld(g, i, sign)
    mi = _ld(m, i, sign)
    pi = _ld(p, i, sign)
    if has_wd:
        pi = pi * decay
    _st(p, i, pi - lr * _sign(beta1 * mi + omb1 * gi))
    _st(m, i, beta2 * mi + omb2 * gi)



cdef void _lion_h16(Py_ssize_t lo, Py_ssize_t hi, pst* p, const pst* g, sst* m, floating sign, bint has_wd, floating decay, floating beta1, floating omb1, floating beta2, floating omb2, floating lr) noexcept nogil:
    """The float16 loop of [lo, hi): blocks (see _bin), the last < 16 elements one by one."""
    cdef float _b_p[128]
    cdef float _b_g[128]
    cdef float _b_m[128]
    cdef float* _q_p
    cdef float* _q_g
    cdef float* _q_m
    cdef Py_ssize_t i = lo, j, k, bn  # a run-time length: GCC unrolls a literal 16 fully and then does not vectorize it
    while i + 16 <= hi:
        bn = _block_len(i, hi)
        _q_p = _bin(p, i, bn, _b_p)
        _q_g = _bin(g, i, bn, _b_g)
        _q_m = _bin(m, i, bn, _b_m)
        for j in range(bn):
            _lion_at(j, _q_p, _q_g, _q_m, sign, has_wd, decay, beta1, omb1, beta2, omb2, lr)
        _bout(p, i, bn, _q_p)
        _bout(m, i, bn, _q_m)
        i = i + bn
    for k in range(i, hi):
        _lion_at(k, p, g, m, sign, has_wd, decay, beta1, omb1, beta2, omb2, lr)

cdef void _lion(pst* p, const pst* g, sst* m, Py_ssize_t n, int nthreads, floating sign,
                bint has_wd, floating decay, floating beta1, floating omb1, floating beta2, floating omb2,
                floating lr) noexcept nogil:
    if floating is double:  # dtype combinations no caller makes are compiled to nothing
        if pst is not double:
            return
        if sst is not double:
            return
    else:
        if pst is double:
            return
        if sst is double:
            return
        if pst is float:
            if sst is not float:
                return
    cdef Py_ssize_t i, t
    if _blocks(<pst*>NULL, <sst*>NULL):  # blocks (_bin): see the float16 loops
        if nthreads > 1:
            for t in prange(nthreads, schedule="static", num_threads=nthreads):
                _lion_h16(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p), p, g, m, sign, has_wd, decay, beta1, omb1, beta2, omb2, lr)
        else:
            _lion_h16(0, n, p, g, m, sign, has_wd, decay, beta1, omb1, beta2, omb2, lr)
        return
    cdef Py_ssize_t h = _hd(n, p)
    for i in range(h):  # up to p's first cache-line boundary: the loops below start aligned
        _lion_at(i, p, g, m, sign, has_wd, decay, beta1, omb1, beta2, omb2, lr)
    if nthreads > 1:
        for t in prange(nthreads, schedule="static", num_threads=nthreads):
            for i in range(_spn(t, nthreads, n, p), _spn(t + 1, nthreads, n, p)):
                _lion_at(i, p, g, m, sign, has_wd, decay, beta1, omb1, beta2, omb2, lr)
    else:
        for i in range(h, n):
            _lion_at(i, p, g, m, sign, has_wd, decay, beta1, omb1, beta2, omb2, lr)


def lion(param, grad, exp_avg, double lr, double beta1, double beta2, double weight_decay, bint maximize):
    _single_checked(param, (grad, exp_avg))
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef int nt = threads_for(n)
    cdef double sign = -1.0 if maximize else 1.0
    cdef bint has_wd = weight_decay != 0
    cdef double decay = 1.0 - lr * weight_decay
    cdef void* _p_param = _ptr(param)
    cdef void* _p_grad = _ptr(grad)
    cdef void* _p_exp_avg = _ptr(exp_avg)
    cdef bint f32 = _f32(param)
    cdef PyThreadState* ts = _release_gil(n)  # other Python threads run while a large step loops
    if f32:
        _lion[float, float, float](<float*>_p_param, <float*>_p_grad, <float*>_p_exp_avg, n, nt, sign, has_wd, decay,
                     beta1, 1.0 - beta1, beta2, 1.0 - beta2, lr)
    else:
        _lion[double, double, double](<double*>_p_param, <double*>_p_grad, <double*>_p_exp_avg, n, nt, sign, has_wd, decay,
                      beta1, 1.0 - beta1, beta2, 1.0 - beta2, lr)
    _restore_gil(ts)
    return param


# ---------------------------------------------------------------------------------------
# the benchmark skeleton: moves a rule's bytes (reads grad and every written array, writes
# them) with trivial arithmetic; the bandwidth a fused kernel is measured against.

cdef inline void _skeleton_at(Py_ssize_t i, floating* a, floating* b, floating* c, floating* d, int n_out,
                              const floating* g) noexcept nogil:
    cdef floating gi = g[i]
    a[i] = a[i] + gi
    if n_out > 1:
        b[i] = b[i] + gi
    if n_out > 2:
        c[i] = c[i] + gi
    if n_out > 3:
        d[i] = d[i] + gi


cdef void _skeleton(floating** outs, int n_out, const floating* g, Py_ssize_t n, int nthreads) noexcept nogil:
    # the same serial / parallel split as the kernels, so that it costs what they cost
    cdef Py_ssize_t i, t
    cdef floating* a = outs[0]
    cdef floating* b = outs[1] if n_out > 1 else NULL
    cdef floating* c = outs[2] if n_out > 2 else NULL
    cdef floating* d = outs[3] if n_out > 3 else NULL
    cdef Py_ssize_t h = _head(n, a)
    for i in range(h):  # up to a's first cache-line boundary: the loops below start aligned
        _skeleton_at(i, a, b, c, d, n_out, g)
    if nthreads > 1:
        for t in prange(nthreads, schedule="static", num_threads=nthreads):
            for i in range(_span(t, nthreads, n, a), _span(t + 1, nthreads, n, a)):
                _skeleton_at(i, a, b, c, d, n_out, g)
    else:
        for i in range(h, n):
            _skeleton_at(i, a, b, c, d, n_out, g)


def copy_skeleton(grad, *outs):
    """outs[k] += grad for every k (1 to 4 arrays): reads 1 + len(outs) arrays, writes len(outs)."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>grad)
    cdef int nt = threads_for(n)
    cdef float* f[4]
    cdef double* dd[4]
    cdef int k
    if not 1 <= len(outs) <= 4:
        raise ValueError("copy_skeleton takes 1 to 4 output arrays")
    for k in range(len(outs)):
        f[k] = <float*>_ptr(outs[k])
        dd[k] = <double*>_ptr(outs[k])
    if _f32(grad):
        _skeleton[float](f, len(outs), <float*>_ptr(grad), n, nt)
    else:
        _skeleton[double](dd, len(outs), <double*>_ptr(grad), n, nt)
    return outs[0]


# =======================================================================================
# Multi-tensor steps: one call steps a whole list of tensors (fastgd.multi).
#
# The arrays' data pointers are gathered once into a table (``_Batch``); the work is cut
# into chunks of at most ``MULTI_CHUNK`` elements, never crossing a tensor, whose
# boundaries are cache-line aligned in param's memory (multiples of 16 elements from a
# 16-element-aligned address); one ``prange`` over the chunks then calls the rule's own
# loop function above on each chunk with nthreads=1.  The loop bodies are the single-tensor
# ones, so the values are identical.  Arguments were validated by fastgd.multi.
# Every ``<rule>_multi`` takes lists where ``<rule>`` takes arrays (None for an unused
# optional state list) and the same keywords.

from libc.stdlib cimport malloc, free
from libc.stdint cimport uintptr_t

cdef Py_ssize_t _MULTI_CHUNK = 32768
cdef Py_ssize_t _ALIGN = 16  # elements: 64 bytes of float32, 128 of float64


def multi_chunk(n=None):
    """The multi-tensor chunk size in elements (a multiple of 16, >= 64); with ``n``, set it."""
    global _MULTI_CHUNK
    if n is not None:
        if type(n) is not int or n < 64 or n % 16:
            raise ValueError("n must be an int >= 64 and a multiple of 16, got %r" % (n,))
        _MULTI_CHUNK = n
    return _MULTI_CHUNK


_CHANGED = ("an array of this call changed after fastgd checked it (by another thread?); nothing was "
            "written")


cdef inline bint _plain_ok(object a, int tnum, Py_ssize_t n, bint written):
    """a still what the kernels' pointer accesses rely on: exactly an ndarray of type number
    tnum and n elements, C-contiguous, aligned, writeable where written."""
    return (cnp.PyArray_CheckExact(a) and cnp.PyArray_TYPE(<cnp.ndarray>a) == tnum
            and cnp.PyArray_SIZE(<cnp.ndarray>a) == n and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a)
            and cnp.PyArray_ISALIGNED(<cnp.ndarray>a) and (not written or cnp.PyArray_ISWRITEABLE(<cnp.ndarray>a)))


cdef int _single_checked(object param, tuple arrs) except -1:
    """The single-tensor kernels' re-check, where no other Python code runs before the kernel:
    fastgd checked every array, but another Python thread could change one in place (its dtype,
    its shape) between that check and this call (the GIL may switch threads between two
    bytecodes of the checking function).  param float32/float64; every array of ``arrs`` (None
    skipped; arrs[0] the gradient, read only) of its type and size.  RuntimeError otherwise."""
    cdef Py_ssize_t k, n
    cdef int tnum
    if not cnp.PyArray_CheckExact(param):
        raise RuntimeError(_CHANGED)
    tnum = cnp.PyArray_TYPE(<cnp.ndarray>param)
    n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    if (tnum != cnp.NPY_FLOAT32 and tnum != cnp.NPY_FLOAT64) or not _plain_ok(param, tnum, n, True):
        raise RuntimeError(_CHANGED)
    for k in range(len(arrs)):
        if arrs[k] is not None and not _plain_ok(arrs[k], tnum, n, k > 0):
            raise RuntimeError(_CHANGED)
    return 0


cdef int _lists_checked(tuple lists, bint grads_read, bint first_read) except -1:
    """_single_checked for a multi-tensor call (before its pointers are taken): lists[0] the
    params, of one type (float32, float64, float16 or bfloat16), lists[1] (``grads_read``: read
    only) of theirs, the other lists (None skipped) all of one type: the params' for float32 /
    float64, float32 or the params' for half precision; every array of its param's size.  ``first_read``:
    lists[0] is only read too (global_norm's gradients)."""
    cdef Py_ssize_t K = len(lists), T, k, t, n
    cdef int tp, ts = -1, bf16 = bf16_num()
    cdef object lst
    if K == 0 or type(lists[0]) is not list:
        raise RuntimeError(_CHANGED)
    T = len(<list>lists[0])
    for k in range(K):
        lst = lists[k]
        if lst is not None and (type(lst) is not list or len(<list>lst) != T):
            raise RuntimeError(_CHANGED)
    if T == 0:
        return 0
    p = (<list>lists[0])[0]
    if not cnp.PyArray_CheckExact(p):
        raise RuntimeError(_CHANGED)
    tp = cnp.PyArray_TYPE(<cnp.ndarray>p)
    if tp != cnp.NPY_FLOAT32 and tp != cnp.NPY_FLOAT64 and tp != cnp.NPY_FLOAT16 and not (bf16 >= 0 and tp == bf16):
        raise RuntimeError(_CHANGED)
    for k in range(2, K):
        if lists[k] is not None:
            o = (<list>lists[k])[0]
            if not cnp.PyArray_CheckExact(o):
                raise RuntimeError(_CHANGED)
            ts = cnp.PyArray_TYPE(<cnp.ndarray>o)
            if ts != tp and not (ts == cnp.NPY_FLOAT32 and (tp == cnp.NPY_FLOAT16 or tp == bf16)):
                raise RuntimeError(_CHANGED)
            break
    for t in range(T):
        p = (<list>lists[0])[t]
        if not cnp.PyArray_CheckExact(p):
            raise RuntimeError(_CHANGED)
        n = cnp.PyArray_SIZE(<cnp.ndarray>p)
        if not _plain_ok(p, tp, n, not first_read):
            raise RuntimeError(_CHANGED)
        for k in range(1, K):
            if lists[k] is not None and not _plain_ok((<list>lists[k])[t], tp if k == 1 else ts, n,
                                                     not (k == 1 and grads_read)):
                raise RuntimeError(_CHANGED)
    return 0


cdef class _Batch:
    """Data pointers of K lists of T arrays (``ptr[k * T + t]``, NULL for an unused list)
    and the chunk table (tensor, offset, length)."""
    cdef void** ptr
    cdef Py_ssize_t* ct
    cdef Py_ssize_t* co
    cdef Py_ssize_t* cn
    cdef Py_ssize_t T, K, nchunks, total
    cdef bint f32

    def __cinit__(self):
        self.ptr = NULL
        self.ct = NULL
        self.co = NULL
        self.cn = NULL

    def __dealloc__(self):
        free(self.ptr)
        free(self.ct)
        free(self.co)
        free(self.cn)


cdef _Batch _batch(tuple lists, bint grads_read=True, bint first_read=False):
    """The pointers and chunks of a multi-tensor call, after _lists_checked (``grads_read``:
    lists[1] is only read; ``first_read``: lists[0] too)."""
    _lists_checked(lists, grads_read, first_read)
    cdef _Batch b = _Batch()
    cdef list params = lists[0]
    cdef Py_ssize_t T = len(params), K = len(lists), k, t, n, off, end, cap = 0, c = 0
    cdef Py_ssize_t chunk = _MULTI_CHUNK, isz
    cdef uintptr_t base
    cdef cnp.ndarray p
    b.T = T
    b.K = K
    b.total = 0
    b.f32 = T > 0 and _f32(params[0])
    b.ptr = <void**>malloc(sizeof(void*) * (K * T + 1))
    if b.ptr == NULL:
        raise MemoryError()
    for k in range(K):
        lst = lists[k]
        for t in range(T):
            b.ptr[k * T + t] = NULL if lst is None else _ptr(lst[t])
    for t in range(T):
        n = cnp.PyArray_SIZE(<cnp.ndarray>params[t])
        b.total += n
        cap += n // (chunk - _ALIGN) + 2
    b.ct = <Py_ssize_t*>malloc(sizeof(Py_ssize_t) * cap)
    b.co = <Py_ssize_t*>malloc(sizeof(Py_ssize_t) * cap)
    b.cn = <Py_ssize_t*>malloc(sizeof(Py_ssize_t) * cap)
    if b.ct == NULL or b.co == NULL or b.cn == NULL:
        raise MemoryError()
    for t in range(T):
        p = <cnp.ndarray>params[t]
        n = cnp.PyArray_SIZE(p)
        isz = cnp.PyArray_ITEMSIZE(p)
        base = (<uintptr_t>cnp.PyArray_DATA(p)) // isz  # address in elements
        off = 0
        while off < n:
            end = off + chunk
            if end >= n:
                end = n
            else:
                end -= <Py_ssize_t>((base + <uintptr_t>end) % <uintptr_t>_ALIGN)  # to a cache-line boundary
            b.ct[c] = t
            b.co[c] = off
            b.cn[c] = end - off
            c += 1
            off = end
    b.nchunks = c
    return b


cdef inline floating* _at(void** ptr, Py_ssize_t k, Py_ssize_t T, Py_ssize_t t, Py_ssize_t off,
                          floating dummy) noexcept nogil:
    """Chunk start of list k, tensor t (NULL for an unused list)."""
    cdef floating* a = <floating*>ptr[k * T + t]
    return NULL if a == NULL else a + off


cdef inline anyst* _atp(void** ptr, Py_ssize_t k, Py_ssize_t T, Py_ssize_t t, Py_ssize_t off,
                        anyst* like) noexcept nogil:
    """_at for any storage dtype (``like`` only selects it)."""
    cdef anyst* a = <anyst*>ptr[k * T + t]
    return NULL if a == NULL else a + off


cdef int _half_combo(tuple lists) except -1:
    """0: float32/float64 arrays; else the half-precision combination of the call (validated:
    one dtype per list): 1 float16 + float32 state, 2 all float16, 3 bfloat16 + float32 state,
    4 all bfloat16."""
    cdef list params = lists[0]
    cdef int tn, code
    if not params:
        return 0
    tn = cnp.PyArray_TYPE(<cnp.ndarray>params[0])
    if tn == cnp.NPY_FLOAT32 or tn == cnp.NPY_FLOAT64:
        return 0
    code = 1 if tn == cnp.NPY_FLOAT16 else 3
    for k in range(2, len(lists)):
        if lists[k] is not None:
            if cnp.PyArray_ITEMSIZE(<cnp.ndarray>lists[k][0]) == 2:
                code += 1
            break
    return code


cdef inline int _multi_threads(_Batch b):
    return 1 if b.nchunks < 2 else min(threads_for(b.total), b.nchunks)


include "staged.pxi"


def sgd_multi(params, grads, momentum_buffers, *, double lr, double momentum, double dampening, bint nesterov,
              double weight_decay, bint maximize, bint first_step, grad_scale=None, clip=None, masters=None,
              bint exact_fold=False):
    cdef tuple lists = (params, grads, momentum_buffers)
    cdef _Batch b = _batch(lists)
    cdef int nt = _multi_threads(b)
    cdef double sign = -1.0 if maximize else 1.0
    cdef bint has_wd = weight_decay != 0
    cdef bint has_mom = momentum != 0
    cdef Py_ssize_t c, t, o, T = b.T
    cdef double fold = _fold(grad_scale, clip, masters, lists, exact_fold)
    if fold != 0:  # the gradient's factor folded into sign, exactly: no staging (see _fold)
        sign = sign * fold
        grad_scale = clip = None
    cdef _Staging sg = _staging(b, lists, grad_scale, clip, masters, nt)
    cdef _Sb* s
    cdef int tid
    cdef Py_ssize_t u, m
    if sg is not None:  # half precision / extras: see staged.pxi
        s = &sg.s
        if sg.f64:
            for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
                tid = threadid()
                u = 0
                while u < b.cn[c]:
                    m = _stage_in(s, tid, c, u, <double>0)
                    _sgd[double, double, double](_sp(s, tid, 0, <double>0), _sp(s, tid, 1, <double>0),
                                _sp(s, tid, 2, <double>0), m, 1, sign, has_wd, weight_decay, has_mom,
                                first_step, nesterov, momentum, 1.0 - dampening, lr)
                    _stage_out(s, tid, c, u, m, <double>0)
                    u = u + m
        else:
            for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
                tid = threadid()
                u = 0
                while u < b.cn[c]:
                    m = _stage_in(s, tid, c, u, <float>0)
                    _sgd[float, float, float](_sp(s, tid, 0, <float>0), _sp(s, tid, 1, <float>0),
                                _sp(s, tid, 2, <float>0), m, 1, sign, has_wd, weight_decay, has_mom,
                                first_step, nesterov, momentum, 1.0 - dampening, lr)
                    _stage_out(s, tid, c, u, m, <float>0)
                    u = u + m
        return params
    cdef int hk = _half_combo(lists)
    if hk == 1:  # float16 params and grads, float32 state
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _sgd[fgd_h16, float, float](_atp(b.ptr, 0, T, t, o, <fgd_h16*>NULL),
                                        _atp(b.ptr, 1, T, t, o, <fgd_h16*>NULL),
                        _atp(b.ptr, 2, T, t, o, <float*>NULL), b.cn[c], 1, sign, has_wd, weight_decay, has_mom,
                        first_step, nesterov, momentum, 1.0 - dampening, lr)
    elif hk == 2:  # all float16
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _sgd[fgd_h16, fgd_h16, float](_atp(b.ptr, 0, T, t, o, <fgd_h16*>NULL),
                                          _atp(b.ptr, 1, T, t, o, <fgd_h16*>NULL),
                        _atp(b.ptr, 2, T, t, o, <fgd_h16*>NULL), b.cn[c], 1, sign, has_wd, weight_decay, has_mom,
                        first_step, nesterov, momentum, 1.0 - dampening, lr)
    elif hk == 3:  # bfloat16 params and grads, float32 state
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _sgd[fgd_b16, float, float](_atp(b.ptr, 0, T, t, o, <fgd_b16*>NULL),
                                        _atp(b.ptr, 1, T, t, o, <fgd_b16*>NULL),
                        _atp(b.ptr, 2, T, t, o, <float*>NULL), b.cn[c], 1, sign, has_wd, weight_decay, has_mom,
                        first_step, nesterov, momentum, 1.0 - dampening, lr)
    elif hk == 4:  # all bfloat16
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _sgd[fgd_b16, fgd_b16, float](_atp(b.ptr, 0, T, t, o, <fgd_b16*>NULL),
                                          _atp(b.ptr, 1, T, t, o, <fgd_b16*>NULL),
                        _atp(b.ptr, 2, T, t, o, <fgd_b16*>NULL), b.cn[c], 1, sign, has_wd, weight_decay, has_mom,
                        first_step, nesterov, momentum, 1.0 - dampening, lr)
    elif b.f32:
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _sgd[float, float, float](_at(b.ptr, 0, T, t, o, <float>0), _at(b.ptr, 1, T, t, o, <float>0),
                        _at(b.ptr, 2, T, t, o, <float>0), b.cn[c], 1, sign, has_wd, weight_decay, has_mom,
                        first_step, nesterov, momentum, 1.0 - dampening, lr)
    else:
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _sgd[double, double, double](_at(b.ptr, 0, T, t, o, <double>0), _at(b.ptr, 1, T, t, o, <double>0),
                         _at(b.ptr, 2, T, t, o, <double>0), b.cn[c], 1, sign, has_wd, weight_decay, has_mom,
                         first_step, nesterov, momentum, 1.0 - dampening, lr)
    return params


def adam_multi(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, double step, double lr, double beta1,
               double beta2, double eps, double weight_decay, bint amsgrad, bint maximize,
               bint decoupled_weight_decay, grad_scale=None, clip=None, masters=None,
               bint exact_fold=False):
    cdef tuple lists = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs)
    cdef _Batch b = _batch(lists)
    cdef int nt = _multi_threads(b)
    cdef double sign = -1.0 if maximize else 1.0
    cdef _AdamScalars sc = _adam_scalars(step, lr, beta1, beta2, weight_decay)
    cdef double step_size = sc.step_size, inv_bc2_sqrt = sc.inv_bc2_sqrt, decay = sc.decay
    cdef bint has_wd = weight_decay != 0
    cdef Py_ssize_t c, t, o, T = b.T
    cdef double fold = _fold(grad_scale, clip, masters, lists, exact_fold)
    if fold != 0:  # the gradient's factor folded into sign, exactly: no staging (see _fold)
        sign = sign * fold
        grad_scale = clip = None
    cdef _Staging sg = _staging(b, lists, grad_scale, clip, masters, nt)
    cdef _Sb* s
    cdef int tid
    cdef Py_ssize_t u, m
    if sg is not None:  # half precision / extras: see staged.pxi
        s = &sg.s
        if sg.f64:
            for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
                tid = threadid()
                u = 0
                while u < b.cn[c]:
                    m = _stage_in(s, tid, c, u, <double>0)
                    _adam[double, double, double](_sp(s, tid, 0, <double>0), _sp(s, tid, 1, <double>0),
                                 _sp(s, tid, 2, <double>0), _sp(s, tid, 3, <double>0),
                                 _sp(s, tid, 4, <double>0), m, 1, sign, has_wd, decoupled_weight_decay,
                                 weight_decay, decay, beta1, 1.0 - beta1, beta2, 1.0 - beta2, step_size, inv_bc2_sqrt,
                                 eps, amsgrad)
                    _stage_out(s, tid, c, u, m, <double>0)
                    u = u + m
        else:
            for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
                tid = threadid()
                u = 0
                while u < b.cn[c]:
                    m = _stage_in(s, tid, c, u, <float>0)
                    _adam[float, float, float](_sp(s, tid, 0, <float>0), _sp(s, tid, 1, <float>0),
                                 _sp(s, tid, 2, <float>0), _sp(s, tid, 3, <float>0),
                                 _sp(s, tid, 4, <float>0), m, 1, sign, has_wd, decoupled_weight_decay,
                                 weight_decay, decay, beta1, 1.0 - beta1, beta2, 1.0 - beta2, step_size, inv_bc2_sqrt,
                                 eps, amsgrad)
                    _stage_out(s, tid, c, u, m, <float>0)
                    u = u + m
        return params
    cdef int hk = _half_combo(lists)
    if hk == 1:  # float16 params and grads, float32 state
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adam[fgd_h16, float, float](_atp(b.ptr, 0, T, t, o, <fgd_h16*>NULL),
                                         _atp(b.ptr, 1, T, t, o, <fgd_h16*>NULL),
                         _atp(b.ptr, 2, T, t, o, <float*>NULL), _atp(b.ptr, 3, T, t, o, <float*>NULL),
                         _atp(b.ptr, 4, T, t, o, <float*>NULL), b.cn[c], 1, sign, has_wd, decoupled_weight_decay,
                         weight_decay, decay, beta1, 1.0 - beta1, beta2, 1.0 - beta2, step_size, inv_bc2_sqrt,
                         eps, amsgrad)
    elif hk == 2:  # all float16
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adam[fgd_h16, fgd_h16, float](_atp(b.ptr, 0, T, t, o, <fgd_h16*>NULL),
                                           _atp(b.ptr, 1, T, t, o, <fgd_h16*>NULL),
                         _atp(b.ptr, 2, T, t, o, <fgd_h16*>NULL), _atp(b.ptr, 3, T, t, o, <fgd_h16*>NULL),
                         _atp(b.ptr, 4, T, t, o, <fgd_h16*>NULL), b.cn[c], 1, sign, has_wd, decoupled_weight_decay,
                         weight_decay, decay, beta1, 1.0 - beta1, beta2, 1.0 - beta2, step_size, inv_bc2_sqrt,
                         eps, amsgrad)
    elif hk == 3:  # bfloat16 params and grads, float32 state
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adam[fgd_b16, float, float](_atp(b.ptr, 0, T, t, o, <fgd_b16*>NULL),
                                         _atp(b.ptr, 1, T, t, o, <fgd_b16*>NULL),
                         _atp(b.ptr, 2, T, t, o, <float*>NULL), _atp(b.ptr, 3, T, t, o, <float*>NULL),
                         _atp(b.ptr, 4, T, t, o, <float*>NULL), b.cn[c], 1, sign, has_wd, decoupled_weight_decay,
                         weight_decay, decay, beta1, 1.0 - beta1, beta2, 1.0 - beta2, step_size, inv_bc2_sqrt,
                         eps, amsgrad)
    elif hk == 4:  # all bfloat16
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adam[fgd_b16, fgd_b16, float](_atp(b.ptr, 0, T, t, o, <fgd_b16*>NULL),
                                           _atp(b.ptr, 1, T, t, o, <fgd_b16*>NULL),
                         _atp(b.ptr, 2, T, t, o, <fgd_b16*>NULL), _atp(b.ptr, 3, T, t, o, <fgd_b16*>NULL),
                         _atp(b.ptr, 4, T, t, o, <fgd_b16*>NULL), b.cn[c], 1, sign, has_wd, decoupled_weight_decay,
                         weight_decay, decay, beta1, 1.0 - beta1, beta2, 1.0 - beta2, step_size, inv_bc2_sqrt,
                         eps, amsgrad)
    elif b.f32:
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adam[float, float, float](_at(b.ptr, 0, T, t, o, <float>0), _at(b.ptr, 1, T, t, o, <float>0),
                         _at(b.ptr, 2, T, t, o, <float>0), _at(b.ptr, 3, T, t, o, <float>0),
                         _at(b.ptr, 4, T, t, o, <float>0), b.cn[c], 1, sign, has_wd, decoupled_weight_decay,
                         weight_decay, decay, beta1, 1.0 - beta1, beta2, 1.0 - beta2, step_size, inv_bc2_sqrt,
                         eps, amsgrad)
    else:
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adam[double, double, double](_at(b.ptr, 0, T, t, o, <double>0), _at(b.ptr, 1, T, t, o, <double>0),
                          _at(b.ptr, 2, T, t, o, <double>0), _at(b.ptr, 3, T, t, o, <double>0),
                          _at(b.ptr, 4, T, t, o, <double>0), b.cn[c], 1, sign, has_wd, decoupled_weight_decay,
                          weight_decay, decay, beta1, 1.0 - beta1, beta2, 1.0 - beta2, step_size, inv_bc2_sqrt,
                          eps, amsgrad)
    return params


def adamax_multi(params, grads, exp_avgs, exp_infs, *, double step, double lr, double beta1, double beta2, double eps,
                 double weight_decay, bint maximize, grad_scale=None, clip=None, masters=None,
                 bint exact_fold=False):
    cdef tuple lists = (params, grads, exp_avgs, exp_infs)
    cdef _Batch b = _batch(lists)
    cdef int nt = _multi_threads(b)
    cdef double sign = -1.0 if maximize else 1.0
    cdef double step_size = _adamax_step_size(step, lr, beta1)
    cdef bint has_wd = weight_decay != 0
    cdef Py_ssize_t c, t, o, T = b.T
    cdef double fold = _fold(grad_scale, clip, masters, lists, exact_fold)
    if fold != 0:  # the gradient's factor folded into sign, exactly: no staging (see _fold)
        sign = sign * fold
        grad_scale = clip = None
    cdef _Staging sg = _staging(b, lists, grad_scale, clip, masters, nt)
    cdef _Sb* s
    cdef int tid
    cdef Py_ssize_t u, m
    if sg is not None:  # half precision / extras: see staged.pxi
        s = &sg.s
        if sg.f64:
            for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
                tid = threadid()
                u = 0
                while u < b.cn[c]:
                    m = _stage_in(s, tid, c, u, <double>0)
                    _adamax[double, double, double](_sp(s, tid, 0, <double>0), _sp(s, tid, 1, <double>0),
                                   _sp(s, tid, 2, <double>0), _sp(s, tid, 3, <double>0), m, 1,
                                   sign, has_wd, weight_decay, beta1, 1.0 - beta1, beta2, eps, step_size)
                    _stage_out(s, tid, c, u, m, <double>0)
                    u = u + m
        else:
            for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
                tid = threadid()
                u = 0
                while u < b.cn[c]:
                    m = _stage_in(s, tid, c, u, <float>0)
                    _adamax[float, float, float](_sp(s, tid, 0, <float>0), _sp(s, tid, 1, <float>0),
                                   _sp(s, tid, 2, <float>0), _sp(s, tid, 3, <float>0), m, 1,
                                   sign, has_wd, weight_decay, beta1, 1.0 - beta1, beta2, eps, step_size)
                    _stage_out(s, tid, c, u, m, <float>0)
                    u = u + m
        return params
    cdef int hk = _half_combo(lists)
    if hk == 1:  # float16 params and grads, float32 state
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adamax[fgd_h16, float, float](_atp(b.ptr, 0, T, t, o, <fgd_h16*>NULL),
                                           _atp(b.ptr, 1, T, t, o, <fgd_h16*>NULL),
                           _atp(b.ptr, 2, T, t, o, <float*>NULL), _atp(b.ptr, 3, T, t, o, <float*>NULL), b.cn[c], 1,
                           sign, has_wd, weight_decay, beta1, 1.0 - beta1, beta2, eps, step_size)
    elif hk == 2:  # all float16
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adamax[fgd_h16, fgd_h16, float](_atp(b.ptr, 0, T, t, o, <fgd_h16*>NULL),
                                             _atp(b.ptr, 1, T, t, o, <fgd_h16*>NULL),
                           _atp(b.ptr, 2, T, t, o, <fgd_h16*>NULL), _atp(b.ptr, 3, T, t, o, <fgd_h16*>NULL), b.cn[c], 1,
                           sign, has_wd, weight_decay, beta1, 1.0 - beta1, beta2, eps, step_size)
    elif hk == 3:  # bfloat16 params and grads, float32 state
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adamax[fgd_b16, float, float](_atp(b.ptr, 0, T, t, o, <fgd_b16*>NULL),
                                           _atp(b.ptr, 1, T, t, o, <fgd_b16*>NULL),
                           _atp(b.ptr, 2, T, t, o, <float*>NULL), _atp(b.ptr, 3, T, t, o, <float*>NULL), b.cn[c], 1,
                           sign, has_wd, weight_decay, beta1, 1.0 - beta1, beta2, eps, step_size)
    elif hk == 4:  # all bfloat16
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adamax[fgd_b16, fgd_b16, float](_atp(b.ptr, 0, T, t, o, <fgd_b16*>NULL),
                                             _atp(b.ptr, 1, T, t, o, <fgd_b16*>NULL),
                           _atp(b.ptr, 2, T, t, o, <fgd_b16*>NULL), _atp(b.ptr, 3, T, t, o, <fgd_b16*>NULL), b.cn[c], 1,
                           sign, has_wd, weight_decay, beta1, 1.0 - beta1, beta2, eps, step_size)
    elif b.f32:
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adamax[float, float, float](_at(b.ptr, 0, T, t, o, <float>0), _at(b.ptr, 1, T, t, o, <float>0),
                           _at(b.ptr, 2, T, t, o, <float>0), _at(b.ptr, 3, T, t, o, <float>0), b.cn[c], 1,
                           sign, has_wd, weight_decay, beta1, 1.0 - beta1, beta2, eps, step_size)
    else:
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adamax[double, double, double](_at(b.ptr, 0, T, t, o, <double>0), _at(b.ptr, 1, T, t, o, <double>0),
                            _at(b.ptr, 2, T, t, o, <double>0), _at(b.ptr, 3, T, t, o, <double>0), b.cn[c], 1,
                            sign, has_wd, weight_decay, beta1, 1.0 - beta1, beta2, eps, step_size)
    return params


def nadam_multi(params, grads, exp_avgs, exp_avg_sqs, *, step, mu_product, double lr, double beta1, double beta2,
                double eps, double weight_decay, double momentum_decay, bint maximize, bint decoupled_weight_decay, grad_scale=None, clip=None, masters=None,
                bint exact_fold=False):
    cdef tuple lists = (params, grads, exp_avgs, exp_avg_sqs)
    cdef _Batch b = _batch(lists)
    cdef int nt = _multi_threads(b)
    cdef double sign = -1.0 if maximize else 1.0
    cdef double decay = 1.0 - lr * weight_decay
    cdef bint has_wd = weight_decay != 0
    cdef _NAdamScalars sc = _nadam_scalars(step, mu_product, lr, beta1, beta2, momentum_decay)
    cdef double coef_grad = sc.coef_grad, coef_avg = sc.coef_avg, inv_bc2 = sc.inv_bc2
    cdef Py_ssize_t c, t, o, T = b.T
    cdef double fold = _fold(grad_scale, clip, masters, lists, exact_fold)
    if fold != 0:  # the gradient's factor folded into sign, exactly: no staging (see _fold)
        sign = sign * fold
        grad_scale = clip = None
    cdef _Staging sg = _staging(b, lists, grad_scale, clip, masters, nt)
    cdef _Sb* s
    cdef int tid
    cdef Py_ssize_t u, m
    if sg is not None:  # half precision / extras: see staged.pxi
        s = &sg.s
        if sg.f64:
            for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
                tid = threadid()
                u = 0
                while u < b.cn[c]:
                    m = _stage_in(s, tid, c, u, <double>0)
                    _nadam[double, double, double](_sp(s, tid, 0, <double>0), _sp(s, tid, 1, <double>0),
                                  _sp(s, tid, 2, <double>0), _sp(s, tid, 3, <double>0), m, 1,
                                  sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                                  beta2, 1.0 - beta2, inv_bc2, eps, coef_grad, coef_avg)
                    _stage_out(s, tid, c, u, m, <double>0)
                    u = u + m
        else:
            for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
                tid = threadid()
                u = 0
                while u < b.cn[c]:
                    m = _stage_in(s, tid, c, u, <float>0)
                    _nadam[float, float, float](_sp(s, tid, 0, <float>0), _sp(s, tid, 1, <float>0),
                                  _sp(s, tid, 2, <float>0), _sp(s, tid, 3, <float>0), m, 1,
                                  sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                                  beta2, 1.0 - beta2, inv_bc2, eps, coef_grad, coef_avg)
                    _stage_out(s, tid, c, u, m, <float>0)
                    u = u + m
        return params
    cdef int hk = _half_combo(lists)
    if hk == 1:  # float16 params and grads, float32 state
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _nadam[fgd_h16, float, float](_atp(b.ptr, 0, T, t, o, <fgd_h16*>NULL),
                                          _atp(b.ptr, 1, T, t, o, <fgd_h16*>NULL),
                          _atp(b.ptr, 2, T, t, o, <float*>NULL), _atp(b.ptr, 3, T, t, o, <float*>NULL), b.cn[c], 1,
                          sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                          beta2, 1.0 - beta2, inv_bc2, eps, coef_grad, coef_avg)
    elif hk == 2:  # all float16
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _nadam[fgd_h16, fgd_h16, float](_atp(b.ptr, 0, T, t, o, <fgd_h16*>NULL),
                                            _atp(b.ptr, 1, T, t, o, <fgd_h16*>NULL),
                          _atp(b.ptr, 2, T, t, o, <fgd_h16*>NULL), _atp(b.ptr, 3, T, t, o, <fgd_h16*>NULL), b.cn[c], 1,
                          sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                          beta2, 1.0 - beta2, inv_bc2, eps, coef_grad, coef_avg)
    elif hk == 3:  # bfloat16 params and grads, float32 state
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _nadam[fgd_b16, float, float](_atp(b.ptr, 0, T, t, o, <fgd_b16*>NULL),
                                          _atp(b.ptr, 1, T, t, o, <fgd_b16*>NULL),
                          _atp(b.ptr, 2, T, t, o, <float*>NULL), _atp(b.ptr, 3, T, t, o, <float*>NULL), b.cn[c], 1,
                          sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                          beta2, 1.0 - beta2, inv_bc2, eps, coef_grad, coef_avg)
    elif hk == 4:  # all bfloat16
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _nadam[fgd_b16, fgd_b16, float](_atp(b.ptr, 0, T, t, o, <fgd_b16*>NULL),
                                            _atp(b.ptr, 1, T, t, o, <fgd_b16*>NULL),
                          _atp(b.ptr, 2, T, t, o, <fgd_b16*>NULL), _atp(b.ptr, 3, T, t, o, <fgd_b16*>NULL), b.cn[c], 1,
                          sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                          beta2, 1.0 - beta2, inv_bc2, eps, coef_grad, coef_avg)
    elif b.f32:
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _nadam[float, float, float](_at(b.ptr, 0, T, t, o, <float>0), _at(b.ptr, 1, T, t, o, <float>0),
                          _at(b.ptr, 2, T, t, o, <float>0), _at(b.ptr, 3, T, t, o, <float>0), b.cn[c], 1,
                          sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                          beta2, 1.0 - beta2, inv_bc2, eps, coef_grad, coef_avg)
    else:
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _nadam[double, double, double](_at(b.ptr, 0, T, t, o, <double>0), _at(b.ptr, 1, T, t, o, <double>0),
                           _at(b.ptr, 2, T, t, o, <double>0), _at(b.ptr, 3, T, t, o, <double>0), b.cn[c], 1,
                           sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                           beta2, 1.0 - beta2, inv_bc2, eps, coef_grad, coef_avg)
    return params


def radam_multi(params, grads, exp_avgs, exp_avg_sqs, *, step, double lr, double beta1, double beta2, double eps,
                double weight_decay, bint maximize, bint decoupled_weight_decay, grad_scale=None, clip=None, masters=None,
                bint exact_fold=False):
    cdef tuple lists = (params, grads, exp_avgs, exp_avg_sqs)
    cdef _Batch b = _batch(lists)
    cdef int nt = _multi_threads(b)
    cdef double sign = -1.0 if maximize else 1.0
    cdef double decay = 1.0 - lr * weight_decay
    cdef bint has_wd = weight_decay != 0
    cdef _RAdamScalars sc = _radam_scalars(step, lr, beta1, beta2)
    cdef bint rect = sc.rect
    cdef double step_size = sc.step_size
    cdef Py_ssize_t c, t, o, T = b.T
    cdef double fold = _fold(grad_scale, clip, masters, lists, exact_fold)
    if fold != 0:  # the gradient's factor folded into sign, exactly: no staging (see _fold)
        sign = sign * fold
        grad_scale = clip = None
    cdef _Staging sg = _staging(b, lists, grad_scale, clip, masters, nt)
    cdef _Sb* s
    cdef int tid
    cdef Py_ssize_t u, m
    if sg is not None:  # half precision / extras: see staged.pxi
        s = &sg.s
        if sg.f64:
            for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
                tid = threadid()
                u = 0
                while u < b.cn[c]:
                    m = _stage_in(s, tid, c, u, <double>0)
                    _radam[double, double, double](_sp(s, tid, 0, <double>0), _sp(s, tid, 1, <double>0),
                                  _sp(s, tid, 2, <double>0), _sp(s, tid, 3, <double>0), m, 1,
                                  sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                                  beta2, 1.0 - beta2, rect, step_size, eps)
                    _stage_out(s, tid, c, u, m, <double>0)
                    u = u + m
        else:
            for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
                tid = threadid()
                u = 0
                while u < b.cn[c]:
                    m = _stage_in(s, tid, c, u, <float>0)
                    _radam[float, float, float](_sp(s, tid, 0, <float>0), _sp(s, tid, 1, <float>0),
                                  _sp(s, tid, 2, <float>0), _sp(s, tid, 3, <float>0), m, 1,
                                  sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                                  beta2, 1.0 - beta2, rect, step_size, eps)
                    _stage_out(s, tid, c, u, m, <float>0)
                    u = u + m
        return params
    cdef int hk = _half_combo(lists)
    if hk == 1:  # float16 params and grads, float32 state
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _radam[fgd_h16, float, float](_atp(b.ptr, 0, T, t, o, <fgd_h16*>NULL),
                                          _atp(b.ptr, 1, T, t, o, <fgd_h16*>NULL),
                          _atp(b.ptr, 2, T, t, o, <float*>NULL), _atp(b.ptr, 3, T, t, o, <float*>NULL), b.cn[c], 1,
                          sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                          beta2, 1.0 - beta2, rect, step_size, eps)
    elif hk == 2:  # all float16
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _radam[fgd_h16, fgd_h16, float](_atp(b.ptr, 0, T, t, o, <fgd_h16*>NULL),
                                            _atp(b.ptr, 1, T, t, o, <fgd_h16*>NULL),
                          _atp(b.ptr, 2, T, t, o, <fgd_h16*>NULL), _atp(b.ptr, 3, T, t, o, <fgd_h16*>NULL), b.cn[c], 1,
                          sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                          beta2, 1.0 - beta2, rect, step_size, eps)
    elif hk == 3:  # bfloat16 params and grads, float32 state
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _radam[fgd_b16, float, float](_atp(b.ptr, 0, T, t, o, <fgd_b16*>NULL),
                                          _atp(b.ptr, 1, T, t, o, <fgd_b16*>NULL),
                          _atp(b.ptr, 2, T, t, o, <float*>NULL), _atp(b.ptr, 3, T, t, o, <float*>NULL), b.cn[c], 1,
                          sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                          beta2, 1.0 - beta2, rect, step_size, eps)
    elif hk == 4:  # all bfloat16
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _radam[fgd_b16, fgd_b16, float](_atp(b.ptr, 0, T, t, o, <fgd_b16*>NULL),
                                            _atp(b.ptr, 1, T, t, o, <fgd_b16*>NULL),
                          _atp(b.ptr, 2, T, t, o, <fgd_b16*>NULL), _atp(b.ptr, 3, T, t, o, <fgd_b16*>NULL), b.cn[c], 1,
                          sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                          beta2, 1.0 - beta2, rect, step_size, eps)
    elif b.f32:
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _radam[float, float, float](_at(b.ptr, 0, T, t, o, <float>0), _at(b.ptr, 1, T, t, o, <float>0),
                          _at(b.ptr, 2, T, t, o, <float>0), _at(b.ptr, 3, T, t, o, <float>0), b.cn[c], 1,
                          sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                          beta2, 1.0 - beta2, rect, step_size, eps)
    else:
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _radam[double, double, double](_at(b.ptr, 0, T, t, o, <double>0), _at(b.ptr, 1, T, t, o, <double>0),
                           _at(b.ptr, 2, T, t, o, <double>0), _at(b.ptr, 3, T, t, o, <double>0), b.cn[c], 1,
                           sign, has_wd, decoupled_weight_decay, weight_decay, decay, beta1, 1.0 - beta1,
                           beta2, 1.0 - beta2, rect, step_size, eps)
    return params


def adagrad_multi(params, grads, state_sums, *, step, double lr, double lr_decay, double weight_decay, double eps,
                  bint maximize, grad_scale=None, clip=None, masters=None,
                  bint exact_fold=False):
    cdef tuple lists = (params, grads, state_sums)
    cdef _Batch b = _batch(lists)
    cdef int nt = _multi_threads(b)
    cdef double sign = -1.0 if maximize else 1.0
    cdef bint has_wd = weight_decay != 0
    cdef double clr = _adagrad_clr(step, lr, lr_decay)
    cdef Py_ssize_t c, t, o, T = b.T
    cdef double fold = _fold(grad_scale, clip, masters, lists, exact_fold)
    if fold != 0:  # the gradient's factor folded into sign, exactly: no staging (see _fold)
        sign = sign * fold
        grad_scale = clip = None
    cdef _Staging sg = _staging(b, lists, grad_scale, clip, masters, nt)
    cdef _Sb* s
    cdef int tid
    cdef Py_ssize_t u, m
    if sg is not None:  # half precision / extras: see staged.pxi
        s = &sg.s
        if sg.f64:
            for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
                tid = threadid()
                u = 0
                while u < b.cn[c]:
                    m = _stage_in(s, tid, c, u, <double>0)
                    _adagrad[double, double, double](_sp(s, tid, 0, <double>0), _sp(s, tid, 1, <double>0),
                                    _sp(s, tid, 2, <double>0), m, 1, sign, has_wd, weight_decay, clr, eps)
                    _stage_out(s, tid, c, u, m, <double>0)
                    u = u + m
        else:
            for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
                tid = threadid()
                u = 0
                while u < b.cn[c]:
                    m = _stage_in(s, tid, c, u, <float>0)
                    _adagrad[float, float, float](_sp(s, tid, 0, <float>0), _sp(s, tid, 1, <float>0),
                                    _sp(s, tid, 2, <float>0), m, 1, sign, has_wd, weight_decay, clr, eps)
                    _stage_out(s, tid, c, u, m, <float>0)
                    u = u + m
        return params
    cdef int hk = _half_combo(lists)
    if hk == 1:  # float16 params and grads, float32 state
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adagrad[fgd_h16, float, float](_atp(b.ptr, 0, T, t, o, <fgd_h16*>NULL),
                                            _atp(b.ptr, 1, T, t, o, <fgd_h16*>NULL),
                            _atp(b.ptr, 2, T, t, o, <float*>NULL), b.cn[c], 1, sign, has_wd, weight_decay, clr, eps)
    elif hk == 2:  # all float16
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adagrad[fgd_h16, fgd_h16, float](_atp(b.ptr, 0, T, t, o, <fgd_h16*>NULL),
                                              _atp(b.ptr, 1, T, t, o, <fgd_h16*>NULL),
                            _atp(b.ptr, 2, T, t, o, <fgd_h16*>NULL), b.cn[c], 1, sign, has_wd, weight_decay, clr, eps)
    elif hk == 3:  # bfloat16 params and grads, float32 state
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adagrad[fgd_b16, float, float](_atp(b.ptr, 0, T, t, o, <fgd_b16*>NULL),
                                            _atp(b.ptr, 1, T, t, o, <fgd_b16*>NULL),
                            _atp(b.ptr, 2, T, t, o, <float*>NULL), b.cn[c], 1, sign, has_wd, weight_decay, clr, eps)
    elif hk == 4:  # all bfloat16
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adagrad[fgd_b16, fgd_b16, float](_atp(b.ptr, 0, T, t, o, <fgd_b16*>NULL),
                                              _atp(b.ptr, 1, T, t, o, <fgd_b16*>NULL),
                            _atp(b.ptr, 2, T, t, o, <fgd_b16*>NULL), b.cn[c], 1, sign, has_wd, weight_decay, clr, eps)
    elif b.f32:
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adagrad[float, float, float](_at(b.ptr, 0, T, t, o, <float>0), _at(b.ptr, 1, T, t, o, <float>0),
                            _at(b.ptr, 2, T, t, o, <float>0), b.cn[c], 1, sign, has_wd, weight_decay, clr, eps)
    else:
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adagrad[double, double, double](_at(b.ptr, 0, T, t, o, <double>0), _at(b.ptr, 1, T, t, o, <double>0),
                             _at(b.ptr, 2, T, t, o, <double>0), b.cn[c], 1, sign, has_wd, weight_decay, clr, eps)
    return params


def adadelta_multi(params, grads, square_avgs, acc_deltas, *, double lr, double rho, double eps,
                   double weight_decay, bint maximize, grad_scale=None, clip=None, masters=None,
                   bint exact_fold=False):
    cdef tuple lists = (params, grads, square_avgs, acc_deltas)
    cdef _Batch b = _batch(lists)
    cdef int nt = _multi_threads(b)
    cdef double sign = -1.0 if maximize else 1.0
    cdef bint has_wd = weight_decay != 0
    cdef Py_ssize_t c, t, o, T = b.T
    cdef double fold = _fold(grad_scale, clip, masters, lists, exact_fold)
    if fold != 0:  # the gradient's factor folded into sign, exactly: no staging (see _fold)
        sign = sign * fold
        grad_scale = clip = None
    cdef _Staging sg = _staging(b, lists, grad_scale, clip, masters, nt)
    cdef _Sb* s
    cdef int tid
    cdef Py_ssize_t u, m
    if sg is not None:  # half precision / extras: see staged.pxi
        s = &sg.s
        if sg.f64:
            for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
                tid = threadid()
                u = 0
                while u < b.cn[c]:
                    m = _stage_in(s, tid, c, u, <double>0)
                    _adadelta[double, double, double](_sp(s, tid, 0, <double>0), _sp(s, tid, 1, <double>0),
                                     _sp(s, tid, 2, <double>0), _sp(s, tid, 3, <double>0), m, 1,
                                     sign, has_wd, weight_decay, rho, 1.0 - rho, eps, lr)
                    _stage_out(s, tid, c, u, m, <double>0)
                    u = u + m
        else:
            for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
                tid = threadid()
                u = 0
                while u < b.cn[c]:
                    m = _stage_in(s, tid, c, u, <float>0)
                    _adadelta[float, float, float](_sp(s, tid, 0, <float>0), _sp(s, tid, 1, <float>0),
                                     _sp(s, tid, 2, <float>0), _sp(s, tid, 3, <float>0), m, 1,
                                     sign, has_wd, weight_decay, rho, 1.0 - rho, eps, lr)
                    _stage_out(s, tid, c, u, m, <float>0)
                    u = u + m
        return params
    cdef int hk = _half_combo(lists)
    if hk == 1:  # float16 params and grads, float32 state
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adadelta[fgd_h16, float, float](_atp(b.ptr, 0, T, t, o, <fgd_h16*>NULL),
                                             _atp(b.ptr, 1, T, t, o, <fgd_h16*>NULL),
                             _atp(b.ptr, 2, T, t, o, <float*>NULL), _atp(b.ptr, 3, T, t, o, <float*>NULL), b.cn[c], 1,
                             sign, has_wd, weight_decay, rho, 1.0 - rho, eps, lr)
    elif hk == 2:  # all float16
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adadelta[fgd_h16, fgd_h16, float](_atp(b.ptr, 0, T, t, o, <fgd_h16*>NULL),
                                               _atp(b.ptr, 1, T, t, o, <fgd_h16*>NULL),
                             _atp(b.ptr, 2, T, t, o, <fgd_h16*>NULL), _atp(b.ptr, 3, T, t, o, <fgd_h16*>NULL), b.cn[c], 1,
                             sign, has_wd, weight_decay, rho, 1.0 - rho, eps, lr)
    elif hk == 3:  # bfloat16 params and grads, float32 state
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adadelta[fgd_b16, float, float](_atp(b.ptr, 0, T, t, o, <fgd_b16*>NULL),
                                             _atp(b.ptr, 1, T, t, o, <fgd_b16*>NULL),
                             _atp(b.ptr, 2, T, t, o, <float*>NULL), _atp(b.ptr, 3, T, t, o, <float*>NULL), b.cn[c], 1,
                             sign, has_wd, weight_decay, rho, 1.0 - rho, eps, lr)
    elif hk == 4:  # all bfloat16
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adadelta[fgd_b16, fgd_b16, float](_atp(b.ptr, 0, T, t, o, <fgd_b16*>NULL),
                                               _atp(b.ptr, 1, T, t, o, <fgd_b16*>NULL),
                             _atp(b.ptr, 2, T, t, o, <fgd_b16*>NULL), _atp(b.ptr, 3, T, t, o, <fgd_b16*>NULL), b.cn[c], 1,
                             sign, has_wd, weight_decay, rho, 1.0 - rho, eps, lr)
    elif b.f32:
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adadelta[float, float, float](_at(b.ptr, 0, T, t, o, <float>0), _at(b.ptr, 1, T, t, o, <float>0),
                             _at(b.ptr, 2, T, t, o, <float>0), _at(b.ptr, 3, T, t, o, <float>0), b.cn[c], 1,
                             sign, has_wd, weight_decay, rho, 1.0 - rho, eps, lr)
    else:
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _adadelta[double, double, double](_at(b.ptr, 0, T, t, o, <double>0), _at(b.ptr, 1, T, t, o, <double>0),
                              _at(b.ptr, 2, T, t, o, <double>0), _at(b.ptr, 3, T, t, o, <double>0), b.cn[c], 1,
                              sign, has_wd, weight_decay, rho, 1.0 - rho, eps, lr)
    return params


def rmsprop_multi(params, grads, square_avgs, momentum_buffers, grad_avgs, *, double lr, double alpha,
                  double eps, double weight_decay, double momentum, bint centered, bint maximize, grad_scale=None, clip=None, masters=None,
                  bint exact_fold=False):
    cdef tuple lists = (params, grads, square_avgs, momentum_buffers, grad_avgs)
    cdef _Batch b = _batch(lists)
    cdef int nt = _multi_threads(b)
    cdef double sign = -1.0 if maximize else 1.0
    cdef bint has_wd = weight_decay != 0
    cdef bint has_mom = momentum > 0
    cdef Py_ssize_t c, t, o, T = b.T
    cdef double fold = _fold(grad_scale, clip, masters, lists, exact_fold)
    if fold != 0:  # the gradient's factor folded into sign, exactly: no staging (see _fold)
        sign = sign * fold
        grad_scale = clip = None
    cdef _Staging sg = _staging(b, lists, grad_scale, clip, masters, nt)
    cdef _Sb* s
    cdef int tid
    cdef Py_ssize_t u, m
    if sg is not None:  # half precision / extras: see staged.pxi
        s = &sg.s
        if sg.f64:
            for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
                tid = threadid()
                u = 0
                while u < b.cn[c]:
                    m = _stage_in(s, tid, c, u, <double>0)
                    _rmsprop[double, double, double](_sp(s, tid, 0, <double>0), _sp(s, tid, 1, <double>0),
                                    _sp(s, tid, 2, <double>0), _sp(s, tid, 3, <double>0),
                                    _sp(s, tid, 4, <double>0), m, 1, sign, has_wd, weight_decay,
                                    alpha, 1.0 - alpha, eps, centered, has_mom, momentum, lr)
                    _stage_out(s, tid, c, u, m, <double>0)
                    u = u + m
        else:
            for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
                tid = threadid()
                u = 0
                while u < b.cn[c]:
                    m = _stage_in(s, tid, c, u, <float>0)
                    _rmsprop[float, float, float](_sp(s, tid, 0, <float>0), _sp(s, tid, 1, <float>0),
                                    _sp(s, tid, 2, <float>0), _sp(s, tid, 3, <float>0),
                                    _sp(s, tid, 4, <float>0), m, 1, sign, has_wd, weight_decay,
                                    alpha, 1.0 - alpha, eps, centered, has_mom, momentum, lr)
                    _stage_out(s, tid, c, u, m, <float>0)
                    u = u + m
        return params
    cdef int hk = _half_combo(lists)
    if hk == 1:  # float16 params and grads, float32 state
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _rmsprop[fgd_h16, float, float](_atp(b.ptr, 0, T, t, o, <fgd_h16*>NULL),
                                            _atp(b.ptr, 1, T, t, o, <fgd_h16*>NULL),
                            _atp(b.ptr, 2, T, t, o, <float*>NULL), _atp(b.ptr, 3, T, t, o, <float*>NULL),
                            _atp(b.ptr, 4, T, t, o, <float*>NULL), b.cn[c], 1, sign, has_wd, weight_decay,
                            alpha, 1.0 - alpha, eps, centered, has_mom, momentum, lr)
    elif hk == 2:  # all float16
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _rmsprop[fgd_h16, fgd_h16, float](_atp(b.ptr, 0, T, t, o, <fgd_h16*>NULL),
                                              _atp(b.ptr, 1, T, t, o, <fgd_h16*>NULL),
                            _atp(b.ptr, 2, T, t, o, <fgd_h16*>NULL), _atp(b.ptr, 3, T, t, o, <fgd_h16*>NULL),
                            _atp(b.ptr, 4, T, t, o, <fgd_h16*>NULL), b.cn[c], 1, sign, has_wd, weight_decay,
                            alpha, 1.0 - alpha, eps, centered, has_mom, momentum, lr)
    elif hk == 3:  # bfloat16 params and grads, float32 state
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _rmsprop[fgd_b16, float, float](_atp(b.ptr, 0, T, t, o, <fgd_b16*>NULL),
                                            _atp(b.ptr, 1, T, t, o, <fgd_b16*>NULL),
                            _atp(b.ptr, 2, T, t, o, <float*>NULL), _atp(b.ptr, 3, T, t, o, <float*>NULL),
                            _atp(b.ptr, 4, T, t, o, <float*>NULL), b.cn[c], 1, sign, has_wd, weight_decay,
                            alpha, 1.0 - alpha, eps, centered, has_mom, momentum, lr)
    elif hk == 4:  # all bfloat16
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _rmsprop[fgd_b16, fgd_b16, float](_atp(b.ptr, 0, T, t, o, <fgd_b16*>NULL),
                                              _atp(b.ptr, 1, T, t, o, <fgd_b16*>NULL),
                            _atp(b.ptr, 2, T, t, o, <fgd_b16*>NULL), _atp(b.ptr, 3, T, t, o, <fgd_b16*>NULL),
                            _atp(b.ptr, 4, T, t, o, <fgd_b16*>NULL), b.cn[c], 1, sign, has_wd, weight_decay,
                            alpha, 1.0 - alpha, eps, centered, has_mom, momentum, lr)
    elif b.f32:
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _rmsprop[float, float, float](_at(b.ptr, 0, T, t, o, <float>0), _at(b.ptr, 1, T, t, o, <float>0),
                            _at(b.ptr, 2, T, t, o, <float>0), _at(b.ptr, 3, T, t, o, <float>0),
                            _at(b.ptr, 4, T, t, o, <float>0), b.cn[c], 1, sign, has_wd, weight_decay,
                            alpha, 1.0 - alpha, eps, centered, has_mom, momentum, lr)
    else:
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _rmsprop[double, double, double](_at(b.ptr, 0, T, t, o, <double>0), _at(b.ptr, 1, T, t, o, <double>0),
                             _at(b.ptr, 2, T, t, o, <double>0), _at(b.ptr, 3, T, t, o, <double>0),
                             _at(b.ptr, 4, T, t, o, <double>0), b.cn[c], 1, sign, has_wd, weight_decay,
                             alpha, 1.0 - alpha, eps, centered, has_mom, momentum, lr)
    return params


def lion_multi(params, grads, exp_avgs, *, double lr, double beta1, double beta2, double weight_decay,
               bint maximize, grad_scale=None, clip=None, masters=None,
               bint exact_fold=False):
    cdef tuple lists = (params, grads, exp_avgs)
    cdef _Batch b = _batch(lists)
    cdef int nt = _multi_threads(b)
    cdef double sign = -1.0 if maximize else 1.0
    cdef bint has_wd = weight_decay != 0
    cdef double decay = 1.0 - lr * weight_decay
    cdef Py_ssize_t c, t, o, T = b.T
    cdef double fold = _fold(grad_scale, clip, masters, lists, exact_fold)
    if fold != 0:  # the gradient's factor folded into sign, exactly: no staging (see _fold)
        sign = sign * fold
        grad_scale = clip = None
    cdef _Staging sg = _staging(b, lists, grad_scale, clip, masters, nt)
    cdef _Sb* s
    cdef int tid
    cdef Py_ssize_t u, m
    if sg is not None:  # half precision / extras: see staged.pxi
        s = &sg.s
        if sg.f64:
            for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
                tid = threadid()
                u = 0
                while u < b.cn[c]:
                    m = _stage_in(s, tid, c, u, <double>0)
                    _lion[double, double, double](_sp(s, tid, 0, <double>0), _sp(s, tid, 1, <double>0),
                                 _sp(s, tid, 2, <double>0), m, 1, sign, has_wd, decay,
                                 beta1, 1.0 - beta1, beta2, 1.0 - beta2, lr)
                    _stage_out(s, tid, c, u, m, <double>0)
                    u = u + m
        else:
            for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
                tid = threadid()
                u = 0
                while u < b.cn[c]:
                    m = _stage_in(s, tid, c, u, <float>0)
                    _lion[float, float, float](_sp(s, tid, 0, <float>0), _sp(s, tid, 1, <float>0),
                                 _sp(s, tid, 2, <float>0), m, 1, sign, has_wd, decay,
                                 beta1, 1.0 - beta1, beta2, 1.0 - beta2, lr)
                    _stage_out(s, tid, c, u, m, <float>0)
                    u = u + m
        return params
    cdef int hk = _half_combo(lists)
    if hk == 1:  # float16 params and grads, float32 state
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _lion[fgd_h16, float, float](_atp(b.ptr, 0, T, t, o, <fgd_h16*>NULL),
                                         _atp(b.ptr, 1, T, t, o, <fgd_h16*>NULL),
                         _atp(b.ptr, 2, T, t, o, <float*>NULL), b.cn[c], 1, sign, has_wd, decay,
                         beta1, 1.0 - beta1, beta2, 1.0 - beta2, lr)
    elif hk == 2:  # all float16
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _lion[fgd_h16, fgd_h16, float](_atp(b.ptr, 0, T, t, o, <fgd_h16*>NULL),
                                           _atp(b.ptr, 1, T, t, o, <fgd_h16*>NULL),
                         _atp(b.ptr, 2, T, t, o, <fgd_h16*>NULL), b.cn[c], 1, sign, has_wd, decay,
                         beta1, 1.0 - beta1, beta2, 1.0 - beta2, lr)
    elif hk == 3:  # bfloat16 params and grads, float32 state
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _lion[fgd_b16, float, float](_atp(b.ptr, 0, T, t, o, <fgd_b16*>NULL),
                                         _atp(b.ptr, 1, T, t, o, <fgd_b16*>NULL),
                         _atp(b.ptr, 2, T, t, o, <float*>NULL), b.cn[c], 1, sign, has_wd, decay,
                         beta1, 1.0 - beta1, beta2, 1.0 - beta2, lr)
    elif hk == 4:  # all bfloat16
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _lion[fgd_b16, fgd_b16, float](_atp(b.ptr, 0, T, t, o, <fgd_b16*>NULL),
                                           _atp(b.ptr, 1, T, t, o, <fgd_b16*>NULL),
                         _atp(b.ptr, 2, T, t, o, <fgd_b16*>NULL), b.cn[c], 1, sign, has_wd, decay,
                         beta1, 1.0 - beta1, beta2, 1.0 - beta2, lr)
    elif b.f32:
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _lion[float, float, float](_at(b.ptr, 0, T, t, o, <float>0), _at(b.ptr, 1, T, t, o, <float>0),
                         _at(b.ptr, 2, T, t, o, <float>0), b.cn[c], 1, sign, has_wd, decay,
                         beta1, 1.0 - beta1, beta2, 1.0 - beta2, lr)
    else:
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            t = b.ct[c]
            o = b.co[c]
            _lion[double, double, double](_at(b.ptr, 0, T, t, o, <double>0), _at(b.ptr, 1, T, t, o, <double>0),
                          _at(b.ptr, 2, T, t, o, <double>0), b.cn[c], 1, sign, has_wd, decay,
                          beta1, 1.0 - beta1, beta2, 1.0 - beta2, lr)
    return params


# ---------------------------------------------------------------------------------------
# fast accept for fastgd.multi's validation: the checks of fastgd._validate.arrays on every
# tensor, plus no overlap between arrays of different tensors where one of them is written.

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    typedef struct { char* lo; char* hi; int written; } fgd_range;
    /* 1 when no written range overlaps another range.  Sorts r[0..m) by lo (LSD radix sort,
       8-bit digits, digits equal in every range skipped: ~3 passes over user-space
       addresses; qsort with a comparison callback cost 4x more), then one sweep. */
    static int fgd_disjoint(fgd_range* r, fgd_range* tmp, Py_ssize_t m) {
        size_t count[256];
        fgd_range *src = r, *dst = tmp, *sw;
        Py_ssize_t i;
        int shift, d;
        char *hi_any = NULL, *hi_w = NULL;
        if (m < 2) return 1;
        for (shift = 0; shift < 64; shift += 8) {
            size_t pos = 0, c;
            memset(count, 0, sizeof count);
            for (i = 0; i < m; i++) count[((uintptr_t)src[i].lo >> shift) & 255]++;
            if (count[((uintptr_t)src[0].lo >> shift) & 255] == (size_t)m) continue;
            for (d = 0; d < 256; d++) { c = count[d]; count[d] = pos; pos += c; }
            for (i = 0; i < m; i++) dst[count[((uintptr_t)src[i].lo >> shift) & 255]++] = src[i];
            sw = src; src = dst; dst = sw;
        }
        for (i = 0; i < m; i++) {
            /* an overlap with an earlier-starting range: any one if this is written, else a written one */
            if (src[i].lo < (src[i].written ? hi_any : hi_w)) return 0;
            if (src[i].hi > hi_any) hi_any = src[i].hi;
            if (src[i].written && src[i].hi > hi_w) hi_w = src[i].hi;
        }
        return 1;
    }
    """
    ctypedef struct fgd_range:
        char* lo
        char* hi
        int written
    int fgd_disjoint(fgd_range* r, fgd_range* tmp, Py_ssize_t m) nogil


def multi_arrays_ok(tuple lists, Py_ssize_t n_readonly, unsigned long long optional):
    """1 (all params of one dtype, float32 or float64) or 2 (the kernels must be called per dtype
    combination: float32 and float64 mixed, or half precision) when, for every t, the arrays
    ``lists[k][t]`` (lists that are None skipped) are C-contiguous, aligned, native-byte-order
    ndarrays (exact type) of param's (``lists[0][t]``) shape; param float32, float64, float16
    or ``ml_dtypes.bfloat16``; the gradients (k <= n_readonly) of param's dtype, the state
    arrays too, or for a half-precision param all of one dtype, param's or float32; the
    written ones (k == 0 or k > n_readonly) writeable; and no written array overlaps any
    other array of the call.  0 means "let the Python checks find and name the problem"; it
    never raises (bad list types or lengths included)."""
    cdef Py_ssize_t K = len(lists), T, k, t, d, nd, m = 0, i
    cdef cnp.ndarray a, p
    cdef int tnum, tnum0 = -1, mixed = 0, want, state, bf16
    cdef bint half
    cdef fgd_range* r
    if K == 0 or K > 60 or type(lists[0]) is not list:
        return 0
    T = len(<list>lists[0])
    for k in range(K):
        if lists[k] is None:
            if not (optional >> k) & 1:
                return 0
        elif type(lists[k]) is not list or len(<list>lists[k]) != T:
            return 0
    bf16 = bf16_num()  # (before any array is looked at: it reads sys.modules)
    r = <fgd_range*>malloc(sizeof(fgd_range) * (2 * K * T + 1))  # ranges, then the sort's buffer
    if r == NULL:
        return 0
    try:
        for t in range(T):
            o = (<list>lists[0])[t]
            if not cnp.PyArray_CheckExact(o):
                return 0
            p = <cnp.ndarray>o
            tnum = cnp.PyArray_TYPE(p)
            half = tnum == cnp.NPY_FLOAT16 or (bf16 >= 0 and tnum == bf16)
            if tnum != cnp.NPY_FLOAT32 and tnum != cnp.NPY_FLOAT64 and not half:
                return 0
            if tnum0 < 0:
                tnum0 = tnum
            elif tnum != tnum0:
                mixed = 1
            if half:
                mixed = 1
            nd = cnp.PyArray_NDIM(p)
            state = -1
            for k in range(K):
                if lists[k] is None:
                    continue
                o = (<list>lists[k])[t]
                if not cnp.PyArray_CheckExact(o):
                    return 0
                a = <cnp.ndarray>o
                want = tnum
                if half and k > n_readonly:  # a half param's state: float32 or param's dtype, one for all
                    if state < 0:
                        state = cnp.PyArray_TYPE(a)
                        if state != tnum and state != cnp.NPY_FLOAT32:
                            return 0
                    want = state
                if cnp.PyArray_TYPE(a) != want or cnp.PyArray_NDIM(a) != nd or not cnp.PyArray_IS_C_CONTIGUOUS(a) \
                        or not cnp.PyArray_ISNOTSWAPPED(a) or not cnp.PyArray_ISALIGNED(a):
                    return 0
                if (k == 0 or k > n_readonly) and not cnp.PyArray_ISWRITEABLE(a):
                    return 0
                for d in range(nd):
                    if cnp.PyArray_DIMS(a)[d] != cnp.PyArray_DIMS(p)[d]:
                        return 0
                if cnp.PyArray_SIZE(p) == 0:
                    continue
                r[m].lo = <char*>cnp.PyArray_DATA(a)
                r[m].hi = r[m].lo + cnp.PyArray_NBYTES(a)
                r[m].written = k == 0 or k > n_readonly
                m += 1
        if not fgd_disjoint(r, r + K * T, m):
            return 0
        return 1 + mixed
    finally:
        free(r)

