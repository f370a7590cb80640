# =======================================================================================
# Staged steps: half-precision arrays (float16, bfloat16), a loss scale, a clip factor,
# float32 master weights.  Included at the end of rules.pxi.
#
# The spec is fastgd/reference/half.py: every array converted exactly to the compute dtype
# (float32; float64 for float64 params), the gradient divided by the scale and multiplied by
# the clip factor, the compute-dtype rule, every written array stored back rounded once to
# nearest even.  Here that is one pass over memory: each chunk of the multi-tensor table
# (see above) is walked in blocks of _SUB elements; a block's half-precision arrays (and the
# gradient, when scaled or clipped) are converted into per-thread buffers that stay in L1,
# the rule's own loop function (the same one as for float32 arrays) runs on the buffers and
# on the compute-dtype arrays directly, and the written buffers are rounded back.  So the
# values are those of the float32 kernel on converted copies, bit for bit.
#
# The conversions are NumPy's (float16) and ml_dtypes' (bfloat16) rules written as integer
# and float operations that GCC vectorizes: float16 -> float32 exact (NaN payload kept);
# float32 -> float16 round to nearest even, overflow to inf, subnormals, NaN keeping its top
# payload bits (0x7c01 if they are all 0), as npy_floatbits_to_halfbits; bfloat16 <->
# float32 by shifting, round to nearest even, NaN to 0x7fc0 with its sign (Eigen's rule).

from cython.parallel cimport threadid
from libc.math cimport frexp

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* kind: 0 the compute dtype itself, 1 float16, 2 bfloat16 */
    static void fgd_load_f(int kind, const void* src, float* dst, Py_ssize_t n) {
        const uint16_t* s = (const uint16_t*)src; Py_ssize_t i;
        if (kind == 1) { for (i = 0; i < n; i++) dst[i] = fgd_f16_f32(s[i]); }
        else if (kind == 2) { for (i = 0; i < n; i++) dst[i] = fgd_bf16_f32(s[i]); }
        else memcpy(dst, src, (size_t)n * sizeof(float));
    }
    static void fgd_store_f(int kind, const float* src, void* dst, Py_ssize_t n) {
        uint16_t* d = (uint16_t*)dst; Py_ssize_t i;
        if (kind == 1) { for (i = 0; i < n; i++) d[i] = fgd_f32_f16(src[i]); }
        else if (kind == 2) { for (i = 0; i < n; i++) d[i] = fgd_f32_bf16(src[i]); }
        else memcpy(dst, src, (size_t)n * sizeof(float));
    }
    static void fgd_load_d(int kind, const void* src, double* dst, Py_ssize_t n) {
        memcpy(dst, src, (size_t)n * sizeof(double));
    }
    static void fgd_store_d(int kind, const double* src, void* dst, Py_ssize_t n) {
        memcpy(dst, src, (size_t)n * sizeof(double));
    }
    static void fgd_scale_f(float* x, Py_ssize_t n, int has_div, float div, int has_mul, float mul) {
        Py_ssize_t i;
        if (has_div) for (i = 0; i < n; i++) x[i] = x[i] / div;
        if (has_mul) for (i = 0; i < n; i++) x[i] = x[i] * mul;
    }
    static void fgd_scale_d(double* x, Py_ssize_t n, int has_div, double div, int has_mul, double mul) {
        Py_ssize_t i;
        if (has_div) for (i = 0; i < n; i++) x[i] = x[i] / div;
        if (has_mul) for (i = 0; i < n; i++) x[i] = x[i] * mul;
    }
    """
    void fgd_load_f(int kind, const void* src, float* dst, Py_ssize_t n) nogil
    void fgd_store_f(int kind, const float* src, void* dst, Py_ssize_t n) nogil
    void fgd_load_d(int kind, const void* src, double* dst, Py_ssize_t n) nogil
    void fgd_store_d(int kind, const double* src, void* dst, Py_ssize_t n) nogil
    void fgd_scale_f(float* x, Py_ssize_t n, int has_div, float div, int has_mul, float mul) nogil
    void fgd_scale_d(double* x, Py_ssize_t n, int has_div, double div, int has_mul, double mul) nogil


cdef enum:
    _SUB = 1024      # elements per staged block: a few arrays of it stay in L1
    _MAXK = 8        # arrays per tensor (param, grad, up to 6 state arrays)


cdef struct _Sb:
    void** ptr       # the batch's pointer table (ptr[k * T + t])
    void** mptr      # master pointers per tensor, or NULL
    Py_ssize_t* ct
    Py_ssize_t* co
    Py_ssize_t* cn
    Py_ssize_t T
    int K
    int kind[_MAXK]
    int itemsize[_MAXK]
    int has_div
    int has_mul
    double div
    double mul
    char* buf        # per thread: K blocks of _SUB elements (8 bytes each), 64-byte aligned
    void** P         # per thread: the K pointers the rule's loop gets


cdef class _Staging:
    cdef _Sb s
    cdef bint f64
    cdef char* raw

    def __cinit__(self):
        self.raw = NULL
        self.s.P = NULL
        self.s.mptr = NULL

    def __dealloc__(self):
        free(self.raw)
        free(self.s.P)
        free(self.s.mptr)


cdef int _kind(object a) except -1:
    cdef int tn = cnp.PyArray_TYPE(<cnp.ndarray>a)
    if tn == cnp.NPY_FLOAT32 or tn == cnp.NPY_FLOAT64:
        return 0
    if tn == cnp.NPY_FLOAT16:
        return 1
    return 2  # bfloat16 (validated: the only other dtype that gets here)


cdef _Staging _staging(_Batch b, tuple lists, grad_scale, clip, masters, int nt):
    """The staging of one call, or None when it needs none (float32/float64 arrays, no extras)."""
    cdef _Staging st
    cdef int k
    cdef Py_ssize_t t
    if b.T == 0 or (grad_scale is None and clip is None and masters is None):
        return None  # plain arrays, or half-precision ones converted in registers (rules.pxi)
    if b.K > _MAXK:
        raise ValueError("too many arrays per tensor")
    st = _Staging()
    st.f64 = cnp.PyArray_TYPE(<cnp.ndarray>lists[0][0]) == cnp.NPY_FLOAT64
    st.s.ptr = b.ptr
    st.s.ct = b.ct
    st.s.co = b.co
    st.s.cn = b.cn
    st.s.T = b.T
    st.s.K = <int>b.K
    for k in range(b.K):
        st.s.kind[k] = 0 if lists[k] is None else _kind(lists[k][0])
        st.s.itemsize[k] = 0 if lists[k] is None else cnp.PyArray_ITEMSIZE(<cnp.ndarray>lists[k][0])
    st.s.has_div = grad_scale is not None
    st.s.div = 1.0 if grad_scale is None else grad_scale
    st.s.has_mul = clip is not None
    st.s.mul = 1.0 if clip is None else clip
    if masters is not None:
        st.s.mptr = <void**>malloc(sizeof(void*) * b.T)
        if st.s.mptr == NULL:
            raise MemoryError()
        if type(masters) is not list or len(<list>masters) != b.T:
            raise RuntimeError(_CHANGED)
        for t in range(b.T):
            m = (<list>masters)[t]
            if m is not None and not _plain_ok(m, cnp.NPY_FLOAT32, cnp.PyArray_SIZE(<cnp.ndarray>lists[0][t]), True):
                raise RuntimeError(_CHANGED)  # (see _lists_checked)
            st.s.mptr[t] = _ptr(m)
    st.raw = <char*>malloc(<size_t>nt * b.K * _SUB * 8 + 64)
    st.s.P = <void**>malloc(sizeof(void*) * nt * _MAXK)
    if st.raw == NULL or st.s.P == NULL:
        raise MemoryError()
    st.s.buf = st.raw + (64 - <uintptr_t>st.raw % 64) % 64
    return st


cdef double _fold(grad_scale, clip, masters, tuple lists, bint fold) except? -1.0:
    """The factor f with (g / grad_scale) * clip == f * g for every g, bit for bit, or 0 where
    there is none (then the call is staged).  Every rule multiplies the loaded gradient by
    ``sign`` (+-1) first, so f folds into it: ``sign * ((g / s) * c) == (sign * f) * g``.
    * clip alone: f = clip (rounded to the compute dtype, as the spec rounds it);
    * a power-of-two scale alone: f = 1 / scale, exact, and g * 2**-k is g / 2**k exactly (one
      correctly rounded operation on the same real number, subnormal results included);
    * both, with ``fold`` (no nonzero |g| < scale * 2**-126, checked by the norm pass): f =
      clip * 2**-k, exact, and (g / 2**k) * clip == g * f since g / 2**k is then exact; without
      ``fold`` it is staged (g / 2**k may round where it underflows, then the product again);
    * masters: staged."""
    cdef double s, m
    cdef int e
    cdef double c
    if masters is not None or (grad_scale is None and clip is None):
        return 0.0
    if grad_scale is not None and clip is not None:
        # both: exact only where no g / 2**k underflows, which the norm pass has checked
        # (``fold``: no nonzero |g| below scale * 2**-126; see fastgd.multi._extras)
        if not fold:
            return 0.0
        c = _fold(None, clip, None, lists, False)  # the clip in the compute dtype
        s = _fold(grad_scale, None, None, lists, False)  # 1 / scale, or 0
        if c == 0 or s == 0 or c * s < 1.1754943508222875e-38:  # the product must be a normal float32
            return 0.0
        return c * s
    if clip is not None:
        m = clip
        if m != m:
            return 0.0  # NaN: staged (which NaN a product keeps depends on operand order)
        if cnp.PyArray_TYPE(<cnp.ndarray>lists[0][0]) == cnp.NPY_FLOAT64:
            return m
        return <float>m  # the spec rounds clip to the compute dtype; 0 means staged
    s = grad_scale
    m = frexp(s, &e)
    if m != 0.5 or e < -120 or e > 120:  # a power of two whose inverse is a normal float32
        return 0.0
    return 1.0 / s


cdef inline Py_ssize_t _stage_in(_Sb* s, int tid, Py_ssize_t c, Py_ssize_t u, floating dummy) noexcept nogil:
    """Prepare block [u, u + m) of chunk c for thread tid: s.P[tid * _MAXK + k] points at list k's
    data in the compute dtype (the array itself, or a converted copy in the thread's buffer).
    Returns m."""
    cdef Py_ssize_t t = s.ct[c], off = s.co[c] + u, m = s.cn[c] - u
    cdef void** P = s.P + tid * _MAXK
    cdef char* buf = s.buf + <Py_ssize_t>tid * s.K * _SUB * 8
    cdef int k
    cdef void* src
    cdef floating* dst
    if m > _SUB:
        m = _SUB
    for k in range(s.K):
        src = s.ptr[k * s.T + t]
        if src == NULL:
            P[k] = NULL
            continue
        src = <char*>src + off * s.itemsize[k]
        if k == 0 and s.mptr != NULL:
            P[0] = <float*>s.mptr[t] + off  # the master copy stands in for param
        elif s.kind[k] == 0 and k != 1:
            P[k] = src  # state in the compute dtype: stepped in place
        elif k != 1 or s.kind[1] != 0 or s.has_div or s.has_mul:
            dst = <floating*>(buf + k * _SUB * 8)
            if floating is float:
                fgd_load_f(s.kind[k], src, dst, m)
                if k == 1:
                    fgd_scale_f(dst, m, s.has_div, <float>s.div, s.has_mul, <float>s.mul)
            else:
                fgd_load_d(s.kind[k], src, dst, m)
                if k == 1:
                    fgd_scale_d(dst, m, s.has_div, s.div, s.has_mul, s.mul)
            P[k] = dst
        else:
            P[k] = src
    return m


cdef inline void _stage_out(_Sb* s, int tid, Py_ssize_t c, Py_ssize_t u, Py_ssize_t m, floating dummy) noexcept nogil:
    """Round the written blocks back (the gradient is only read)."""
    cdef Py_ssize_t t = s.ct[c], off = s.co[c] + u
    cdef void** P = s.P + tid * _MAXK
    cdef int k
    cdef void* dst
    for k in range(s.K):
        if k == 1:
            continue
        dst = s.ptr[k * s.T + t]
        if dst == NULL:
            continue
        dst = <char*>dst + off * s.itemsize[k]
        if k == 0 and s.mptr != NULL:
            fgd_store_f(s.kind[0], <float*>P[0], dst, m)  # param = master's rounding
        elif s.kind[k] != 0:
            if floating is float:
                fgd_store_f(s.kind[k], <float*>P[k], dst, m)
            else:
                fgd_store_d(s.kind[k], <double*>P[k], dst, m)


cdef inline floating* _sp(_Sb* s, int tid, int k, floating dummy) noexcept nogil:
    return <floating*>s.P[tid * _MAXK + k]


# ---------------------------------------------------------------------------------------
# global_norm and unscale_and_check (fastgd.multi): one pass each, chunks of the same table

cdef extern from *:
    """
    /* sum of squares in double, 32 independent partial sums: vectorizes without reassociation,
       four vector accumulators deep, so the adds' latency does not bound the loop; fused
       multiply-adds where the target has them (the norm is not bit-specified across backends,
       only float64-accumulated).  With thr > 0 the same loop also flags a nonzero |g| < thr,
       compared in the array's own precision (float32 for the 2- and 4-byte dtypes). */
    #ifdef __FMA__
    #define FGD_ACC(a, v) a = __builtin_fma(v, v, a)
    #else
    #define FGD_ACC(a, v) a += (v) * (v)
    #endif
    #define FGD_SUMSQ_LOOP(T, LOAD, CHECK)                                          \
        for (i = 0; i + 32 <= n; i += 32)                                         \
            for (j = 0; j < 32; j++) { T x = LOAD(i + j); double v = (double)x; FGD_ACC(acc[j], v); \
                                       if (CHECK) tn |= (x != 0) & (x < tt) & (x > -tt); } \
        for (; i < n; i++) { T x = LOAD(i); double v = (double)x; FGD_ACC(acc[0], v);       \
                             if (CHECK) tn |= (x != 0) & (x < tt) & (x > -tt); }
    #define FGD_LD_D(k) (((const double*)src)[k])
    #define FGD_LD_F(k) (((const float*)src)[k])
    #define FGD_LD_H(k) (fgd_f16_f32(((const uint16_t*)src)[k]))
    #define FGD_LD_B(k) (fgd_bf16_f32(((const uint16_t*)src)[k]))
    /* ... and *tiny = 1 if some nonzero |g| < thr */
    static double fgd_sumsq(int kind, int isz, const void* src, Py_ssize_t n, double thr, int* tiny) {
        double acc[32] = {0};
        double t = 0;
        int tn = 0;
        Py_ssize_t i, j;
        if (isz == 8) {
            double tt = thr;
            if (thr > 0) { FGD_SUMSQ_LOOP(double, FGD_LD_D, 1) } else { FGD_SUMSQ_LOOP(double, FGD_LD_D, 0) }
        } else {
            float tt = (float)thr;  /* thr: scale * 2**-126 for a power-of-two scale, exact in float32 */
            if (thr > 0 && tt == 0) tt = 1.1754943508222875e-38f;
            if (kind == 0) {
                if (thr > 0) { FGD_SUMSQ_LOOP(float, FGD_LD_F, 1) } else { FGD_SUMSQ_LOOP(float, FGD_LD_F, 0) }
            } else if (kind == 1) {
                if (thr > 0) { FGD_SUMSQ_LOOP(float, FGD_LD_H, 1) } else { FGD_SUMSQ_LOOP(float, FGD_LD_H, 0) }
            } else {
                if (thr > 0) { FGD_SUMSQ_LOOP(float, FGD_LD_B, 1) } else { FGD_SUMSQ_LOOP(float, FGD_LD_B, 0) }
            }
        }
        for (j = 0; j < 32; j++) t += acc[j];
        *tiny = tn;
        return t;
    }
    /* divide in place by scale (in the compute dtype), 1 if any value was NaN or inf before */
    static int fgd_unscale(int kind, int isz, void* p, Py_ssize_t n, double scale) {
        int bad = 0;
        Py_ssize_t i;
        if (isz == 8) {
            double* x = (double*)p;
            for (i = 0; i < n; i++) { double v = x[i]; bad |= !(v - v == 0.0); x[i] = v / scale; }
        } else {
            float s = (float)scale;
            if (kind == 0) {
                float* x = (float*)p;
                for (i = 0; i < n; i++) { float v = x[i]; bad |= !(v - v == 0.0f); x[i] = v / s; }
            } else {
                uint16_t* x = (uint16_t*)p;
                if (kind == 1) {
                    for (i = 0; i < n; i++) { float v = fgd_f16_f32(x[i]); bad |= !(v - v == 0.0f); x[i] = fgd_f32_f16(v / s); }
                } else {
                    for (i = 0; i < n; i++) { float v = fgd_bf16_f32(x[i]); bad |= !(v - v == 0.0f); x[i] = fgd_f32_bf16(v / s); }
                }
            }
        }
        return bad;
    }
    """
    double fgd_sumsq(int kind, int isz, const void* src, Py_ssize_t n, double thr, int* tiny) nogil
    int fgd_unscale(int kind, int isz, void* p, Py_ssize_t n, double scale) nogil


def _by_dtype(list arrays):
    groups = {}
    for a in arrays:  # (type numbers: hashing a bfloat16 dtype costs microseconds)
        groups.setdefault(a.dtype.num, []).append(a)
    return list(groups.values())


def global_norm(list grads, grad_scale=None, double tiny_below=0.0):
    """fastgd.multi.global_norm's kernel (grads validated): the float64-accumulated L2 norm,
    divided by grad_scale.  Per chunk one partial sum, added in chunk order: the result does
    not depend on the thread count.  With ``tiny_below`` > 0: (norm, whether some nonzero
    gradient value is smaller than it in magnitude), for the exact fold of a scale and a clip
    (see _fold)."""
    cdef _Batch b
    cdef double total = 0.0
    cdef double* part
    cdef int* tiny
    cdef Py_ssize_t c
    cdef int nt, kind, isz, any_tiny = 0
    for group in _by_dtype(grads):
        b = _batch((group,), True, True)
        if b.nchunks == 0:
            continue
        nt = _multi_threads(b)
        kind = _kind(group[0])
        isz = cnp.PyArray_ITEMSIZE(<cnp.ndarray>group[0])
        part = <double*>malloc(sizeof(double) * b.nchunks)
        tiny = <int*>malloc(sizeof(int) * b.nchunks)
        if part == NULL or tiny == NULL:
            free(part)
            free(tiny)
            raise MemoryError()
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            part[c] = fgd_sumsq(kind, isz, <char*>b.ptr[b.ct[c]] + b.co[c] * isz, b.cn[c], tiny_below, &tiny[c])
        for c in range(b.nchunks):
            total = total + part[c]
            any_tiny = any_tiny | tiny[c]
        free(part)
        free(tiny)
    norm = sqrt(total)
    if grad_scale is not None:
        norm = norm / grad_scale
    return (norm, bool(any_tiny)) if tiny_below > 0 else norm


def unscale_and_check(list grads, double scale, found_inf):
    """fastgd.multi.unscale_and_check's kernel (arguments validated)."""
    cdef _Batch b
    cdef Py_ssize_t c
    cdef int nt, kind, isz, bad = 0
    for group in _by_dtype(grads):
        b = _batch((group,))
        nt = _multi_threads(b)
        kind = _kind(group[0])
        isz = cnp.PyArray_ITEMSIZE(<cnp.ndarray>group[0])
        for c in prange(b.nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1, nogil=True):
            bad += fgd_unscale(kind, isz, <char*>b.ptr[b.ct[c]] + b.co[c] * isz, b.cn[c], scale)
    if bad:
        found_inf.reshape(-1)[0] = 1.0
    return found_inf


def half_cast(src, dst):
    """dst[...] = src with the kernels' conversions (float32 <-> float16/bfloat16, same size,
    C-contiguous; for the tests).  Returns dst."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>src)
    if cnp.PyArray_SIZE(<cnp.ndarray>dst) != n or not (<cnp.ndarray>src).flags.c_contiguous \
            or not (<cnp.ndarray>dst).flags.c_contiguous or not (<cnp.ndarray>dst).flags.writeable:
        raise ValueError("src and dst must be C-contiguous arrays of one size, dst writeable")
    if cnp.PyArray_TYPE(<cnp.ndarray>src) == cnp.NPY_FLOAT32 and _kind(dst) != 0 and dst.itemsize == 2:
        fgd_store_f(_kind(dst), <float*>_ptr(src), _ptr(dst), n)
    elif cnp.PyArray_TYPE(<cnp.ndarray>dst) == cnp.NPY_FLOAT32 and _kind(src) != 0 and src.itemsize == 2:
        fgd_load_f(_kind(src), _ptr(src), <float*>_ptr(dst), n)
    else:
        raise TypeError("half_cast converts float32 <-> float16/bfloat16")
    return dst


# ---------------------------------------------------------------------------------------
# the benchmark skeleton of the half-precision combinations: moves the bytes of a staged step
# (reads grad, reads and writes every out; 2-byte arrays as 16-bit integers, 4-byte ones as
# float32) with trivial arithmetic, split over threads as the kernels are

cdef void _half_skeleton(const unsigned short* g, void** outs, int* wide, int n_out, Py_ssize_t n,
                         int nthreads) noexcept nogil:
    # block by block (_SUB elements), each array's block in its own simple loop: the loops
    # vectorize, and every array's block is touched within a few microseconds, as in the staged
    # kernels, so the memory traffic is that of one pass
    cdef Py_ssize_t i, t, lo, hi, b, e
    cdef int k
    cdef unsigned short* o16
    cdef float* o32
    for t in prange(nthreads, schedule="static", num_threads=nthreads, use_threads_if=nthreads > 1):
        lo = n * t // nthreads
        hi = n * (t + 1) // nthreads
        b = lo
        while b < hi:
            e = b + _SUB
            if e > hi:
                e = hi
            for k in range(n_out):
                if wide[k]:
                    o32 = <float*>outs[k]
                    for i in range(b, e):
                        o32[i] = o32[i] + <float>g[i]
                else:
                    o16 = <unsigned short*>outs[k]
                    for i in range(b, e):
                        o16[i] = <unsigned short>(o16[i] + g[i])
            b = e


def half_skeleton(grad, *outs):
    """The skeleton of a half-precision step: ``grad`` 2 bytes per element, ``outs`` (1 to 6
    arrays of its size) 2 or 4 bytes per element; each out is read and written once, in one
    loop with grad.  Returns outs[0]."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>grad)
    cdef int nt = threads_for(n)
    cdef void* o[6]
    cdef int wide[6]
    cdef int k, n_out = len(outs)
    cdef unsigned short* gp = <unsigned short*>_ptr(grad)
    if not 1 <= len(outs) <= 6 or grad.itemsize != 2:
        raise ValueError("half_skeleton takes a 2-byte grad and 1 to 6 output arrays")
    for k in range(len(outs)):
        if outs[k].size != n or outs[k].itemsize not in (2, 4) or not outs[k].flags.c_contiguous:
            raise ValueError("outs must be C-contiguous 2- or 4-byte arrays of grad's size")
        o[k] = _ptr(outs[k])
        wide[k] = outs[k].itemsize == 4
    with nogil:
        _half_skeleton(gp, o, wide, n_out, n, nt)
    return outs[0]
