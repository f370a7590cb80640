# The thread settings of the compiled kernels, as C globals: fastgd.backends sets them
# (set_threads), every Cython kernel module cimports threads_for, so a kernel call reads them
# without calling back into Python.

cdef int threads_for(Py_ssize_t n) noexcept nogil

# NumPy's type number of ml_dtypes.bfloat16 (-1 while ml_dtypes is not imported): the fast
# accepts of half-precision arrays
cdef int bf16_num()
