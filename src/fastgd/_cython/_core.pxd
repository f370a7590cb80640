# The thread settings of the compiled kernels, as C globals: fastgd.backends sets them
# (set_threads), every Cython kernel module cimports threads_for, so a kernel call reads them
# without calling back into Python.

cdef int threads_for(Py_ssize_t n) noexcept nogil
