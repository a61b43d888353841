# Embedding: allocation-free inference from Python, and the C API of fusedmlp.h.
#
# Included at the end of _network.pyx (it needs Net, infer() and step()), so nothing here is
# a separate module.
#
# Python fast path. infer_into() runs a forward pass when X and out are already in native
# form (C-contiguous buffers of the model's dtype and shape, out not overlapping X); for
# anything else it returns None and the Python layer (MLP._infer) checks, converts and
# explains. The scratch of the ping-pong hidden activations comes from a per-thread cache
# (one malloc'ed block per thread, kept in the thread state's dict, grown on demand, freed
# with the thread), so a warm call with out= allocates nothing and any number of threads may
# run inference at once.
#
# C API. A versioned table of function pointers (fusedmlp_capi, fusedmlp.h) in a PyCapsule,
# module attribute _C_API. Handles (fusedmlp_model, fusedmlp_trainer) own a strong reference
# to their MLP (and optimiser), so the model's buffers live as long as the handle; creating
# and freeing a handle needs the GIL, everything else runs without it. The Cython API
# (fusedmlp/capi.pxd) declares the same header.

from cpython.object cimport PyObject
from cpython.pystate cimport PyThreadState_GetDict
from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport Py_INCREF, Py_DECREF
from cpython.pycapsule cimport PyCapsule_New
cimport numpy as cnp

import numpy as _np

cnp.import_array()

INFERENCE_CHUNK = 256                    # rows per pass through the layers (MLP reads it too)
cdef Py_ssize_t CHUNK = INFERENCE_CHUNK


cdef class _Scratch:
    """One thread's inference scratch: a malloc'ed block freed with its owner."""
    cdef void* data
    cdef Py_ssize_t size

    def __dealloc__(self):
        free(self.data)


cdef str _SCRATCH_KEY = "fusedmlp._network.scratch"


cdef _Scratch thread_scratch(Py_ssize_t size):
    """At least `size` bytes of this thread's scratch (grown geometrically when short).

    The caller keeps the returned object for the duration of its use: a nested call on the
    same thread (from a finaliser, say) may replace the cache entry, never free it under us.
    """
    cdef object cache = <object>PyThreadState_GetDict()
    cdef PyObject* found = PyDict_GetItem(cache, _SCRATCH_KEY)
    cdef _Scratch scratch
    cdef Py_ssize_t grown = size
    if found != NULL:
        scratch = <_Scratch>found
        if scratch.size >= size:
            return scratch
        grown = max(size, 2 * scratch.size)
    scratch = _Scratch.__new__(_Scratch)
    scratch.data = malloc(grown)
    if scratch.data == NULL:
        raise MemoryError()
    scratch.size = grown
    cache[_SCRATCH_KEY] = scratch
    return scratch


cdef inline Py_ssize_t scratch_bytes(const Net* net, Py_ssize_t m, Py_ssize_t itemsize) noexcept nogil:
    """Bytes of scratch an inference of m rows needs: two ping-pong blocks of the widest layer."""
    return 2 * min(max(m, 1), CHUNK) * net.max_width * itemsize


cdef inline bint overlap(const char* a, Py_ssize_t a_bytes, const char* b, Py_ssize_t b_bytes) noexcept nogil:
    return a < b + b_bytes and b < a + a_bytes


cdef char* native(object array, int type_num, int flags, Py_ssize_t rows,
                  Py_ssize_t cols) noexcept:
    """Data of an ndarray of exactly this type and shape (rows, cols) with these flags (and
    native byte order); NULL for anything else. No buffer export: nothing is allocated."""
    cdef cnp.ndarray a
    if not cnp.PyArray_Check(array):
        return NULL
    a = <cnp.ndarray>array
    if (cnp.PyArray_TYPE(a) != type_num or cnp.PyArray_NDIM(a) != 2
            or not cnp.PyArray_CHKFLAGS(a, flags) or cnp.PyArray_ISBYTESWAPPED(a)
            or cnp.PyArray_DIM(a, 0) != rows or cnp.PyArray_DIM(a, 1) != cols):
        return NULL
    return cnp.PyArray_BYTES(a)


def infer_into(Network network, X, out, int output):
    """Inference of X (m x n_0) into out (m x n_L, or a new array when None).

    Returns out, a status code (int > 0: X holds NaN or inf), or None when X or out is not a
    native ndarray (aligned, C-contiguous, the model's dtype and shape; out writable and not
    overlapping X): the caller then validates and converts, with precise messages.
    """
    cdef Net* net = &network.net
    cdef Py_ssize_t m, n_in = net.sizes[0], n_out = net.sizes[net.n_layers]
    cdef int type_num = cnp.NPY_FLOAT64 if network.is_double else cnp.NPY_FLOAT32
    cdef Py_ssize_t itemsize = 8 if network.is_double else 4
    cdef cnp.npy_intp shape[2]
    cdef char* x
    cdef char* o
    cdef int status
    cdef fm_fpenv saved
    cdef _Scratch scratch
    if not cnp.PyArray_Check(X) or cnp.PyArray_NDIM(<cnp.ndarray>X) != 2:
        return None
    m = cnp.PyArray_DIM(<cnp.ndarray>X, 0)
    x = native(X, type_num, cnp.NPY_ARRAY_CARRAY_RO, m, n_in)
    if out is None and x != NULL:
        shape[0], shape[1] = m, n_out
        out = cnp.PyArray_EMPTY(2, shape, type_num, 0)
    o = native(out, type_num, cnp.NPY_ARRAY_CARRAY, m, n_out)
    if x == NULL or o == NULL or overlap(x, m * n_in * itemsize, o, m * n_out * itemsize):
        return None
    if m == 0:
        return out
    scratch = thread_scratch(scratch_bytes(net, m, itemsize))
    with nogil:
        fusedmlp_enter()
        saved = fm_fpenv_enter()
        if network.is_double:
            status = infer(net, <double*>x, m, <double*>o, <double*>scratch.data,
                           min(m, CHUNK), output)
        else:
            status = infer(net, <float*>x, m, <float*>o, <float*>scratch.data,
                           min(m, CHUNK), output)
        fm_fpenv_leave(saved)
        fusedmlp_leave()
    return status if status else out
