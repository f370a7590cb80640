# cython: language_level=3
# Dense layers and losses in Cython: the same functions, names and order of operations as
# fastgd/reference/dense.py (the spec) and fastgd/_numba/dense.py.
#
# Matrix products go to the BLAS that SciPy ships: the sgemm/dgemm function pointers are taken
# at import from scipy.linalg.cython_blas.__pyx_capi__ (so SciPy is needed at run time, not at
# build time) and called without the GIL.  BLAS is column-major and our arrays are row-major:
# a row-major (r x c) array is the column-major (c x r) transpose, so C = op(A) @ op(B) is
# computed as C^T = op(B)^T @ op(A)^T (see _matmul).
#
# The elementwise work is fused around the products:
#   forward:  one pass  z = gemm(x, W);  out = f(z + b)
#   backward: one pass  gz = g * f'(a) and grad_bias = sum(gz, axis 0), then two gemms.
# Per-element math is in `cdef inline ... noexcept nogil` helpers.  Arguments were validated
# by fastgd.nn.  Built for the baseline instruction set only: the time is in BLAS.
#
# Threads: the products use BLAS's threads; the elementwise passes of the dense layer run on
# one thread.  They are O(n*m) beside the O(n*m*k) products, and an OpenMP team woken between
# two BLAS calls fights OpenBLAS's spinning threads for the cores: on 2 cores a forward+backward
# at 64x784x256 went from 0.47 ms to 17-30 ms with threaded passes (OMP_WAIT_POLICY unset).  The
# loss kernels (no BLAS) use threads_for(size) like the step kernels.

from cython cimport floating
from cython.parallel cimport prange
from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer
from libc.math cimport fabs
from libc.string cimport memset
cimport numpy as cnp

from fastgd._cython._helpers cimport _exp, _f32, _log, _log1p, _ptr, _tanh

cnp.import_array()

from fastgd._cython._core cimport threads_for

try:
    from scipy.linalg.cython_blas import __pyx_capi__ as _blas_capi
except ImportError as _exc:  # scipy is a run-time requirement of these kernels only
    raise ImportError("fastgd's Cython dense kernels call BLAS through SciPy, which is not installed "
                      "(pip install 'fastgd[nn]'): %s" % _exc) from _exc

ctypedef void (*sgemm_t)(char* transa, char* transb, int* m, int* n, int* k, float* alpha, float* a,
                         int* lda, float* b, int* ldb, float* beta, float* c, int* ldc) noexcept nogil
ctypedef void (*dgemm_t)(char* transa, char* transb, int* m, int* n, int* k, double* alpha, double* a,
                         int* lda, double* b, int* ldb, double* beta, double* c, int* ldc) noexcept nogil


cdef void* _capsule_pointer(str name) except NULL:
    cap = _blas_capi[name]
    return PyCapsule_GetPointer(cap, PyCapsule_GetName(cap))


cdef sgemm_t _sgemm = <sgemm_t>_capsule_pointer("sgemm")
cdef dgemm_t _dgemm = <dgemm_t>_capsule_pointer("dgemm")

# activation codes (the public functions take the names)
cdef enum:
    IDENTITY = 0
    RELU = 1
    LEAKY_RELU = 2
    SIGMOID = 3
    TANH = 4

ACTIVATIONS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh")
_CODES = {name: i for i, name in enumerate(ACTIVATIONS)}


# ---------------------------------------------------------------------------------------
# helpers

cdef inline Py_ssize_t _dim(object a, int d):
    return cnp.PyArray_DIMS(<cnp.ndarray>a)[d]


cdef inline floating _max0(floating v) noexcept nogil:
    """numpy.maximum(v, 0): NaN propagates."""
    return v if not v <= 0 else <floating>0


cdef inline floating _sigmoid(floating v) noexcept nogil:
    """1/(1+exp(-v)) for v >= 0, exp(v)/(1+exp(v)) for v < 0: exp never overflows."""
    cdef floating e = _exp(-fabs(v))
    return (<floating>1 if v >= 0 else e) / (<floating>1 + e)


cdef inline int _imax(int a, int b) noexcept nogil:
    return a if a > b else b


cdef void _matmul(bint trans_a, bint trans_b, int m, int n, int k, floating* a, floating* b,
                  floating* c) noexcept nogil:
    """Row-major C (m x n) = op(A) @ op(B), op(A) (m x k), op(B) (k x n); A is stored (m x k), or
    (k x m) when trans_a; B is stored (k x n), or (n x k) when trans_b.  Column-major BLAS
    computes C^T (n x m) = op(B)^T @ op(A)^T: B comes first, each operand's leading dimension is
    the length of its stored rows."""
    cdef char ta = b"T" if trans_b else b"N"
    cdef char tb = b"T" if trans_a else b"N"
    cdef int lda = _imax(1, k if trans_b else n)
    cdef int ldb = _imax(1, m if trans_a else k)
    cdef int ldc = _imax(1, n)
    cdef floating alpha = 1
    cdef floating beta = 0
    if m == 0 or n == 0:
        return
    if k == 0:  # an empty sum: zeros (some BLAS would leave C alone)
        memset(c, 0, <size_t>m * <size_t>n * sizeof(floating))
        return
    if floating is float:
        _sgemm(&ta, &tb, &n, &m, &k, &alpha, b, &lda, a, &ldb, &beta, c, &ldc)
    else:
        _dgemm(&ta, &tb, &n, &m, &k, &alpha, b, &lda, a, &ldb, &beta, c, &ldc)


# ---------------------------------------------------------------------------------------
# forward: out = f(x @ weight + bias)

cdef void _bias_act_row(floating* z, const floating* b, Py_ssize_t m, int act,
                        floating slope) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating v
    if act == RELU:
        for j in range(m):
            z[j] = _max0(z[j] + b[j])
    elif act == LEAKY_RELU:
        for j in range(m):
            v = z[j] + b[j]
            z[j] = v if v > 0 else slope * v
    elif act == SIGMOID:
        for j in range(m):
            z[j] = _sigmoid(z[j] + b[j])
    elif act == TANH:
        for j in range(m):
            z[j] = _tanh(z[j] + b[j])
    else:
        for j in range(m):
            z[j] = z[j] + b[j]


cdef void _bias_act(floating* z, const floating* b, Py_ssize_t n, Py_ssize_t m, int act,
                    floating slope) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        _bias_act_row(z + i * m, b, m, act, slope)


def dense_forward(x, weight, bias, out, *, str activation, double negative_slope):
    """out = f(x @ weight + bias).  OUT: out (n, out)."""
    cdef int act = _CODES[activation]
    cdef int n = <int>_dim(x, 0), k = <int>_dim(x, 1), m = <int>_dim(weight, 1)
    cdef void* px = _ptr(x)
    cdef void* pw = _ptr(weight)
    cdef void* pb = _ptr(bias)
    cdef void* po = _ptr(out)
    if _f32(x):
        with nogil:
            _matmul[float](False, False, n, m, k, <float*>px, <float*>pw, <float*>po)
            _bias_act[float](<float*>po, <float*>pb, n, m, act, <float>negative_slope)
    else:
        with nogil:
            _matmul[double](False, False, n, m, k, <double*>px, <double*>pw, <double*>po)
            _bias_act[double](<double*>po, <double*>pb, n, m, act, negative_slope)
    return out


# ---------------------------------------------------------------------------------------
# backward

cdef void _deriv_bias(const floating* g, const floating* a, floating* gz, floating* gb, Py_ssize_t n,
                      Py_ssize_t m, int act, floating slope, bint write) noexcept nogil:
    """One pass over (n, m): gz = g * f'(a) and gb = sum of gz over the rows (row by row, in
    order, as numpy.sum(axis=0) adds them).  gz may be g (then it is overwritten); with the
    identity and gz == g (write false) only the sums are taken."""
    cdef Py_ssize_t j0 = 0, j1 = m
    cdef Py_ssize_t i, j
    cdef const floating* gr
    cdef const floating* ar
    cdef floating* zr
    cdef floating v, gj
    for j in range(j0, j1):
        gb[j] = 0
    for i in range(n):
        gr = g + i * m
        ar = a + i * m
        zr = gz + i * m
        if act == RELU:
            for j in range(j0, j1):
                gj = gr[j]  # loaded unconditionally, so the select vectorizes
                v = gj if ar[j] > 0 else <floating>0
                zr[j] = v
                gb[j] = gb[j] + v
        elif act == LEAKY_RELU:
            for j in range(j0, j1):
                gj = gr[j]
                v = gj if ar[j] > 0 else slope * gj
                zr[j] = v
                gb[j] = gb[j] + v
        elif act == SIGMOID:
            for j in range(j0, j1):
                v = gr[j] * (ar[j] * (<floating>1 - ar[j]))
                zr[j] = v
                gb[j] = gb[j] + v
        elif act == TANH:
            for j in range(j0, j1):
                v = gr[j] * ((<floating>1 - ar[j]) * (<floating>1 + ar[j]))
                zr[j] = v
                gb[j] = gb[j] + v
        elif write:
            for j in range(j0, j1):
                zr[j] = gr[j]
                gb[j] = gb[j] + gr[j]
        else:
            for j in range(j0, j1):
                gb[j] = gb[j] + gr[j]



def dense_backward(grad_output, x, weight, output, grad_x, grad_weight, grad_bias, grad_z, *,
                   str activation, double negative_slope):
    """grad_z = grad_output * f'(output) and grad_bias = sum(grad_z, axis=0) in one pass;
    grad_weight = x.T @ grad_z;  grad_x = grad_z @ weight.T (skipped when grad_x is None).
    IN: grad_output, x, weight, output.  OUT: grad_z (may be grad_output), grad_weight, grad_bias,
    grad_x.  Returns (grad_x, grad_weight, grad_bias)."""
    cdef int act = _CODES[activation]
    cdef int n = <int>_dim(x, 0), k = <int>_dim(x, 1), m = <int>_dim(weight, 1)
    cdef bint write = act != IDENTITY or grad_z is not grad_output
    cdef void* pg = _ptr(grad_output)
    cdef void* px = _ptr(x)
    cdef void* pw = _ptr(weight)
    cdef void* pa = _ptr(output)
    cdef void* pgx = _ptr(grad_x)
    cdef void* pgw = _ptr(grad_weight)
    cdef void* pgb = _ptr(grad_bias)
    cdef void* pgz = _ptr(grad_z)
    if _f32(x):
        with nogil:
            _deriv_bias[float](<float*>pg, <float*>pa, <float*>pgz, <float*>pgb, n, m, act,
                               <float>negative_slope, write)
            _matmul[float](True, False, k, m, n, <float*>px, <float*>pgz, <float*>pgw)
            if pgx != NULL:
                _matmul[float](False, True, n, k, m, <float*>pgz, <float*>pw, <float*>pgx)
    else:
        with nogil:
            _deriv_bias[double](<double*>pg, <double*>pa, <double*>pgz, <double*>pgb, n, m, act,
                                negative_slope, write)
            _matmul[double](True, False, k, m, n, <double*>px, <double*>pgz, <double*>pgw)
            if pgx != NULL:
                _matmul[double](False, True, n, k, m, <double*>pgz, <double*>pw, <double*>pgx)
    return grad_x, grad_weight, grad_bias


# ---------------------------------------------------------------------------------------
# losses: (loss, gradient) in one pass; row or element terms summed in double

cdef floating _sce_row(const floating* z, Py_ssize_t label, const floating* y, floating* g, Py_ssize_t c,
                       floating inv_n) noexcept nogil:
    """One row of softmax cross-entropy; label >= 0 (class index) or y != NULL (probabilities)."""
    cdef Py_ssize_t j
    cdef floating mx = z[0], s = 0, e, lse, loss = 0
    for j in range(1, c):
        if z[j] > mx or z[j] != z[j]:  # max that propagates NaN, like numpy.max
            mx = z[j]
    for j in range(c):
        e = _exp(z[j] - mx)
        g[j] = e
        s = s + e
    lse = _log(s)
    if y == NULL:
        loss = lse - (z[label] - mx)
        for j in range(c):
            g[j] = (g[j] / s - (<floating>1 if j == label else <floating>0)) * inv_n
    else:
        for j in range(c):
            loss = loss + y[j] * (lse - (z[j] - mx))
            g[j] = (g[j] / s - y[j]) * inv_n
    return loss


cdef double _sce(const floating* z, const cnp.npy_intp* labels, const floating* y, floating* g, Py_ssize_t n,
                 Py_ssize_t c, floating inv_n, int nthreads) noexcept nogil:
    cdef Py_ssize_t i
    cdef double total = 0
    for i in prange(n, schedule="static", num_threads=nthreads, use_threads_if=nthreads > 1):
        total += _sce_row(z + i * c, labels[i] if labels != NULL else -1, y + i * c if y != NULL else NULL,
                          g + i * c, c, inv_n)
    return total


def softmax_cross_entropy(logits, labels, out):
    """Mean over the batch of -log softmax(logits)[label] and its gradient (see the reference).
    labels: intp (n,) class indices or float (n, classes) probabilities.  OUT: out."""
    cdef Py_ssize_t n = _dim(logits, 0), c = _dim(logits, 1)
    cdef int nt = threads_for(n * c)
    cdef bint probs = cnp.PyArray_NDIM(<cnp.ndarray>labels) == 2
    cdef const cnp.npy_intp* lab = NULL if probs else <cnp.npy_intp*>_ptr(labels)
    cdef void* py = _ptr(labels) if probs else NULL
    cdef void* pz = _ptr(logits)
    cdef void* po = _ptr(out)
    cdef double total
    if n == 0 or c == 0:
        return float("nan")
    if _f32(logits):
        with nogil:
            total = _sce[float](<float*>pz, lab, <float*>py, <float*>po, n, c, <float>(1.0 / n), nt)
    else:
        with nogil:
            total = _sce[double](<double*>pz, lab, <double*>py, <double*>po, n, c, 1.0 / n, nt)
    return total / n


cdef double _mse(const floating* p, const floating* t, floating* g, Py_ssize_t n, floating scale,
                 int nthreads) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating d
    cdef double total = 0
    for i in prange(n, schedule="static", num_threads=nthreads, use_threads_if=nthreads > 1):
        d = p[i] - t[i]
        g[i] = d * scale
        total += d * d
    return total


def mse_loss(pred, target, out):
    """Mean of (pred - target)^2 over all N elements; out = 2 (pred - target) / N."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>pred)
    cdef int nt = threads_for(n)
    cdef double total
    cdef void* pa = _ptr(pred)
    cdef void* pb = _ptr(target)
    cdef void* po = _ptr(out)
    if n == 0:
        return float("nan")
    if _f32(pred):
        with nogil:
            total = _mse[float](<float*>pa, <float*>pb, <float*>po, n, <float>(2.0 / n), nt)
    else:
        with nogil:
            total = _mse[double](<double*>pa, <double*>pb, <double*>po, n, 2.0 / n, nt)
    return total / n


cdef double _bce(const floating* z, const floating* y, floating* g, Py_ssize_t n, floating inv_n,
                 int nthreads) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating zi, e
    cdef double total = 0
    for i in prange(n, schedule="static", num_threads=nthreads, use_threads_if=nthreads > 1):
        zi = z[i]
        e = _exp(-fabs(zi))
        total += _max0(zi) - zi * y[i] + _log1p(e)
        g[i] = ((<floating>1 if zi >= 0 else e) / (<floating>1 + e) - y[i]) * inv_n
    return total


def binary_cross_entropy_with_logits(logits, targets, out):
    """Mean over all N elements of max(z,0) - z*y + log1p(exp(-|z|)); out = (sigmoid(z) - y) / N."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>logits)
    cdef int nt = threads_for(n)
    cdef double total
    cdef void* pa = _ptr(logits)
    cdef void* pb = _ptr(targets)
    cdef void* po = _ptr(out)
    if n == 0:
        return float("nan")
    if _f32(logits):
        with nogil:
            total = _bce[float](<float*>pa, <float*>pb, <float*>po, n, <float>(1.0 / n), nt)
    else:
        with nogil:
            total = _bce[double](<double*>pa, <double*>pb, <double*>po, n, 1.0 / n, nt)
    return total / n


# ---------------------------------------------------------------------------------------
# the benchmark skeleton: the three bare products of a forward+backward pass, through the
# same _matmul as the kernels; the floor the fused forward+backward is measured against.

def dense_skeleton(x, weight, grad_z, out, grad_weight, grad_x):
    """out = x @ weight;  grad_weight = x.T @ grad_z;  grad_x = grad_z @ weight.T (BLAS only)."""
    cdef int n = <int>_dim(x, 0), k = <int>_dim(x, 1), m = <int>_dim(weight, 1)
    cdef void* px = _ptr(x)
    cdef void* pw = _ptr(weight)
    cdef void* pgz = _ptr(grad_z)
    cdef void* po = _ptr(out)
    cdef void* pgw = _ptr(grad_weight)
    cdef void* pgx = _ptr(grad_x)
    if _f32(x):
        with nogil:
            _matmul[float](False, False, n, m, k, <float*>px, <float*>pw, <float*>po)
            _matmul[float](True, False, k, m, n, <float*>px, <float*>pgz, <float*>pgw)
            _matmul[float](False, True, n, k, m, <float*>pgz, <float*>pw, <float*>pgx)
    else:
        with nogil:
            _matmul[double](False, False, n, m, k, <double*>px, <double*>pw, <double*>po)
            _matmul[double](True, False, k, m, n, <double*>px, <double*>pgz, <double*>pgw)
            _matmul[double](False, True, n, k, m, <double*>pgz, <double*>pw, <double*>pgx)
    return out


# ---------------------------------------------------------------------------------------
# fast accept for fastgd.nn's argument checks

def arrays_ok(tuple ins, tuple outs):
    """True when every array (``None`` entries skipped) is an exact numpy.ndarray with the dtype
    of ``ins[0]`` (float32 or float64), C-contiguous, aligned, in native byte order, every one
    of ``outs`` writeable, and no
    output shares a byte with any other array.  False means "let the Python checks find and
    name the problem"; it never raises.  Shapes are checked by the caller."""
    cdef Py_ssize_t i, j, n_in = len(ins), n = 0
    cdef cnp.ndarray a
    cdef int tnum = -1
    cdef char* lo[16]
    cdef char* hi[16]
    cdef bint written[16]
    for i in range(n_in + len(outs)):
        o = ins[i] if i < n_in else outs[i - n_in]
        if o is None:
            continue
        if n == 16 or not cnp.PyArray_CheckExact(o):
            return False
        a = <cnp.ndarray>o
        if tnum == -1:
            tnum = cnp.PyArray_TYPE(a)
            if tnum != cnp.NPY_FLOAT32 and tnum != cnp.NPY_FLOAT64:
                return False
        elif cnp.PyArray_TYPE(a) != tnum:
            return False
        if not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISALIGNED(a) or not cnp.PyArray_ISNOTSWAPPED(a):
            return False
        written[n] = i >= n_in
        if written[n] and not cnp.PyArray_ISWRITEABLE(a):
            return False
        lo[n] = <char*>cnp.PyArray_DATA(a)
        hi[n] = lo[n] + cnp.PyArray_NBYTES(a)
        n += 1
    for i in range(n):
        if not written[i] or lo[i] == hi[i]:
            continue
        for j in range(n):
            if j != i and lo[j] != hi[j] and lo[i] < hi[j] and lo[j] < hi[i]:
                return False
    return True
