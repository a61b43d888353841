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
# and freeing a handle needs the GIL, everything else runs without it. Inference splits into
# the model's parts as infer_into does; the parts share the one block of scratch the caller
# sized with scratch_bytes() (parallel_infer), so no n_threads can make it too small.
# The Cython API (fusedmlp/capi.pxd) declares the same header.

from cpython.object cimport PyObject
from cpython.pystate cimport PyThreadState_GetDict
from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport Py_INCREF, Py_DECREF
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport uint32_t
cimport numpy as cnp
from fusedmlp._codes cimport (OK, BAD_INPUT, BAD_LABEL, BAD_TARGET, BAD_LOSS, BAD_RANGE,
                             BAD_COUNTER, SCORES,
                             PROBABILITIES, LOG_PROBABILITIES, SOFTMAX_CROSS_ENTROPY,
                             BINARY_CROSS_ENTROPY, POISSON_DEVIANCE)

import numpy as _np

cnp.import_array()

INFERENCE_CHUNK = INFERENCE_ROWS           # rows per pass through the layers (MLP reads it too)
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


cdef inline Py_ssize_t scratch_bytes(const Net* net, Py_ssize_t m,
                                     Py_ssize_t itemsize) noexcept nogil:
    """Bytes of scratch an inference of m rows needs: two ping-pong blocks of the widest layer."""
    return 2 * min(max(m, 1), CHUNK) * net.max_width * itemsize


cdef struct Entered:
    fm_fpenv fpenv
    int blas


cdef inline Entered enter(bint counted) noexcept nogil:
    """What every entry point does first (as Network's methods): flush subnormals, make BLAS
    single-threaded, and (counted) count the thread in for most_concurrent_calls; leave()
    undoes it in reverse order. The C API is not counted: its callers run many threads at
    once, and a shared atomic counter would make their cores fight over one cache line."""
    cdef Entered entered
    if counted:
        fusedmlp_enter()
    entered.fpenv = fm_fpenv_enter()
    entered.blas = blas_enter()
    return entered


cdef inline void leave(Entered entered, bint counted) noexcept nogil:
    blas_leave(entered.blas)
    fm_fpenv_leave(entered.fpenv)
    if counted:
        fusedmlp_leave()


cdef inline bint overlap(const char* a, Py_ssize_t a_bytes, const char* b,
                         Py_ssize_t b_bytes) noexcept nogil:
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
    cdef int status, n_parts
    cdef Entered entered
    cdef _Scratch scratch
    if not cnp.PyArray_Check(X) or cnp.PyArray_NDIM(<cnp.ndarray>X) != 2:
        return None
    m = cnp.PyArray_DIM(<cnp.ndarray>X, 0)
    x = native(X, type_num, cnp.NPY_ARRAY_CARRAY_RO, m, n_in)
    if out is None and x != NULL:
        shape[0], shape[1] = m, n_out
        out = cnp.PyArray_EMPTY(2, shape, type_num, 0)
    o = native(out, type_num, cnp.NPY_ARRAY_CARRAY, m, n_out)
    # out must overlap nothing the call reads: X, the parameters (the scratch is this
    # thread's own); the Python layer says which one it overlaps
    if (x == NULL or o == NULL or overlap(x, m * n_in * itemsize, o, m * n_out * itemsize)
            or overlap(<const char*>net.params, net.n_params * itemsize, o,
                       m * n_out * itemsize)):
        return None
    if m == 0:
        return out
    n_parts = inference_parts(net, m)
    scratch = thread_scratch(scratch_bytes(net, m, itemsize))
    with nogil:
        entered = enter(True)
        if network.is_double:
            status = infer(net, <double*>x, m, <double*>o, <double*>scratch.data,
                           min(m, CHUNK), output, n_parts)
        else:
            status = infer(net, <float*>x, m, <float*>o, <float*>scratch.data,
                           min(m, CHUNK), output, n_parts)
        leave(entered, True)
    return status if status else out


# =========================================================================== the C API

cdef extern from "fusedmlp.h":
    int FUSEDMLP_CAPI_VERSION
    const char* FUSEDMLP_CAPSULE_NAME
    enum:
        FUSEDMLP_SCORES
        FUSEDMLP_PROBABILITIES
        FUSEDMLP_LOG_PROBABILITIES
        FUSEDMLP_OK
        FUSEDMLP_BAD_INPUT
        FUSEDMLP_BAD_LABEL
        FUSEDMLP_BAD_TARGET
        FUSEDMLP_BAD_LOSS
        FUSEDMLP_BAD_RANGE
        FUSEDMLP_BAD_COUNTER
        FUSEDMLP_FLOAT32
        FUSEDMLP_FLOAT64
        FUSEDMLP_WRONG_DTYPE
        FUSEDMLP_BAD_ARGUMENT
        FUSEDMLP_TOO_MANY_ROWS
        FUSEDMLP_NO_MEMORY
    ctypedef struct fusedmlp_model
    ctypedef struct fusedmlp_trainer
    ctypedef struct fusedmlp_capi:
        uint32_t version
        uint32_t size
        fusedmlp_model* (*model_new)(PyObject*) except NULL
        void (*model_free)(fusedmlp_model*) noexcept
        fusedmlp_trainer* (*trainer_new)(PyObject*, PyObject*, Py_ssize_t) except NULL
        void (*trainer_free)(fusedmlp_trainer*) noexcept
        int (*model_dtype)(const fusedmlp_model*) noexcept nogil
        Py_ssize_t (*model_n_inputs)(const fusedmlp_model*) noexcept nogil
        Py_ssize_t (*model_n_outputs)(const fusedmlp_model*) noexcept nogil
        size_t (*scratch_bytes)(const fusedmlp_model*, Py_ssize_t) noexcept nogil
        int (*infer_f32)(const fusedmlp_model*, const float*, Py_ssize_t, float*, int,
                         void*) noexcept nogil
        int (*infer_f64)(const fusedmlp_model*, const double*, Py_ssize_t, double*, int,
                         void*) noexcept nogil
        int (*train_step_f32)(fusedmlp_trainer*, const float*, Py_ssize_t, const int64_t*,
                              const float*, double*) noexcept nogil
        int (*train_step_f64)(fusedmlp_trainer*, const double*, Py_ssize_t, const int64_t*,
                              const double*, double*) noexcept nogil


# What a handle is behind the header's { api } prefix. `owner` (the MLP) and `network` are
# strong references: the Net and its parameter buffers outlive the handle.
cdef struct ModelHandle:
    const fusedmlp_capi* api
    PyObject* owner
    PyObject* network
    Net* net
    bint is_double

cdef struct TrainerHandle:
    const fusedmlp_capi* api
    PyObject* owner
    PyObject* network
    Net* net
    bint is_double
    PyObject* keep                 # model.bind(optimizer): the optimiser and its state
    Py_ssize_t max_batch           # the workspace never shrinks below it
    int opt_kind
    double* hyper
    void* state_a
    void* state_b

cdef fusedmlp_capi TABLE


cdef Network network_of(object mlp, str caller):
    network = getattr(mlp, "_net", None)
    if not isinstance(network, Network):
        raise TypeError(f"{caller} needs a fusedmlp.MLP, got {type(mlp).__name__}")
    return <Network>network


cdef fusedmlp_model* capi_model_new(PyObject* mlp) except NULL:
    cdef Network network = network_of(<object>mlp, "fusedmlp_model_new")
    cdef ModelHandle* handle = <ModelHandle*>malloc(sizeof(ModelHandle))
    if handle == NULL:
        raise MemoryError()
    handle.api = &TABLE
    handle.owner = mlp
    handle.network = <PyObject*>network
    handle.net = &network.net
    handle.is_double = network.is_double
    Py_INCREF(<object>mlp)
    Py_INCREF(network)
    return <fusedmlp_model*>handle


cdef void capi_model_free(fusedmlp_model* model) noexcept:
    cdef ModelHandle* handle = <ModelHandle*>model
    Py_DECREF(<object>handle.network)
    Py_DECREF(<object>handle.owner)
    free(handle)


cdef fusedmlp_trainer* capi_trainer_new(PyObject* mlp, PyObject* optimizer,
                                        Py_ssize_t max_batch) except NULL:
    cdef object model = <object>mlp, opt = <object>optimizer
    cdef Network network = network_of(model, "fusedmlp_trainer_new")
    cdef TrainerHandle* handle
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    bound = model.bind(opt)               # checks the optimiser, binds its state to model
    model.reserve(max_batch)
    cdef double* hyper = <double*>address(bound.hyper, b'd', True, H_SIZE)
    cdef void* state_a = address(bound.state_a, network.kind, True, network.net.n_params)
    cdef void* state_b = address(bound.state_b, network.kind, True, network.net.n_params)
    handle = <TrainerHandle*>malloc(sizeof(TrainerHandle))
    if handle == NULL:
        raise MemoryError()
    handle.api = &TABLE
    handle.owner = mlp
    handle.network = <PyObject*>network
    handle.net = &network.net
    handle.is_double = network.is_double
    handle.max_batch = max_batch
    handle.opt_kind = bound.kind
    handle.hyper, handle.state_a, handle.state_b = hyper, state_a, state_b
    handle.keep = <PyObject*>bound
    Py_INCREF(bound)
    Py_INCREF(model)
    Py_INCREF(network)
    return <fusedmlp_trainer*>handle


cdef void capi_trainer_free(fusedmlp_trainer* trainer) noexcept:
    cdef TrainerHandle* handle = <TrainerHandle*>trainer
    Py_DECREF(<object>handle.keep)
    Py_DECREF(<object>handle.network)
    Py_DECREF(<object>handle.owner)
    free(handle)


cdef int capi_model_dtype(const fusedmlp_model* model) noexcept nogil:
    return FUSEDMLP_FLOAT64 if (<const ModelHandle*>model).is_double else FUSEDMLP_FLOAT32


cdef Py_ssize_t capi_model_n_inputs(const fusedmlp_model* model) noexcept nogil:
    return (<const ModelHandle*>model).net.sizes[0]


cdef Py_ssize_t capi_model_n_outputs(const fusedmlp_model* model) noexcept nogil:
    cdef const Net* net = (<const ModelHandle*>model).net
    return net.sizes[net.n_layers]


cdef size_t capi_scratch_bytes(const fusedmlp_model* model, Py_ssize_t m) noexcept nogil:
    cdef const ModelHandle* handle = <const ModelHandle*>model
    return scratch_bytes(handle.net, m, 8 if handle.is_double else 4)


cdef inline bint output_allowed(int loss, int output) noexcept nogil:
    """What MLP's inference methods give for each output kind: scores always; probabilities
    and log-probabilities for softmax and sigmoid outputs (predict_proba/predict_log_proba);
    PROBABILITIES of an exponential output is its mean exp(z) (MLP.predict)."""
    if output == SCORES:
        return True
    if output == PROBABILITIES or output == LOG_PROBABILITIES:
        return (loss == SOFTMAX_CROSS_ENTROPY or loss == BINARY_CROSS_ENTROPY
                or (loss == POISSON_DEVIANCE and output == PROBABILITIES))
    return False


cdef int capi_infer(const fusedmlp_model* model, const floating* X, Py_ssize_t m,
                    floating* out, int output, void* scratch) noexcept nogil:
    cdef const ModelHandle* handle = <const ModelHandle*>model
    cdef const Net* net = handle.net
    cdef Py_ssize_t n_in = net.sizes[0], n_out = net.sizes[net.n_layers]
    cdef double stack[1024]              # small calls need no scratch of the caller's
    cdef void* owned = NULL
    cdef Entered entered
    cdef int status
    if handle.is_double != (sizeof(floating) == sizeof(double)):
        return FUSEDMLP_WRONG_DTYPE
    if m < 0 or not output_allowed(net.loss, output):
        return FUSEDMLP_BAD_ARGUMENT
    if m == 0:
        return OK
    if (X == NULL or out == NULL
            or overlap(<const char*>X, m * n_in * sizeof(floating),
                       <const char*>out, m * n_out * sizeof(floating))
            or overlap(<const char*>net.params, net.n_params * sizeof(floating),
                       <const char*>out, m * n_out * sizeof(floating))):
        return FUSEDMLP_BAD_ARGUMENT
    # the caller's scratch is written while X is read and before out is complete
    if scratch != NULL and (
            overlap(<const char*>scratch, scratch_bytes(net, m, sizeof(floating)),
                    <const char*>out, m * n_out * sizeof(floating))
            or overlap(<const char*>scratch, scratch_bytes(net, m, sizeof(floating)),
                       <const char*>X, m * n_in * sizeof(floating))):
        return FUSEDMLP_BAD_ARGUMENT
    if scratch == NULL:
        if scratch_bytes(net, m, sizeof(floating)) <= sizeof(stack):
            scratch = stack
        else:
            owned = scratch = malloc(scratch_bytes(net, m, sizeof(floating)))
            if scratch == NULL:
                return FUSEDMLP_NO_MEMORY
    entered = enter(False)
    status = infer(net, X, m, out, <floating*>scratch, min(m, CHUNK), output,
                   inference_parts(net, m))
    leave(entered, False)
    free(owned)
    return status


cdef int capi_infer_f32(const fusedmlp_model* model, const float* X, Py_ssize_t m, float* out,
                        int output, void* scratch) noexcept nogil:
    return capi_infer(model, X, m, out, output, scratch)


cdef int capi_infer_f64(const fusedmlp_model* model, const double* X, Py_ssize_t m,
                        double* out, int output, void* scratch) noexcept nogil:
    return capi_infer(model, X, m, out, output, scratch)


cdef int capi_train_step(fusedmlp_trainer* trainer, const floating* X, Py_ssize_t m,
                         const int64_t* labels, const floating* targets,
                         double* loss_out) noexcept nogil:
    cdef TrainerHandle* handle = <TrainerHandle*>trainer
    cdef Entered entered
    cdef double loss = 0, penalty
    cdef int status
    if handle.is_double != (sizeof(floating) == sizeof(double)):
        return FUSEDMLP_WRONG_DTYPE
    if (m < 1 or X == NULL or (labels == NULL) == (targets == NULL)
            or (labels != NULL and handle.net.loss != SOFTMAX_CROSS_ENTROPY)):
        return FUSEDMLP_BAD_ARGUMENT
    if m > handle.max_batch:
        return FUSEDMLP_TOO_MANY_ROWS
    entered = enter(False)
    # reported as MLP.train_step reports it: with the L1 term of the weights before the update
    penalty = l1_penalty(handle.opt_kind, handle.hyper, <floating*>handle.net.params,
                         handle.net.n_weights)
    status = step(handle.net, X, m, labels, targets, NULL, m, handle.opt_kind, handle.hyper,
                  <floating*>handle.state_a, <floating*>handle.state_b, &loss)
    leave(entered, False)
    if loss_out != NULL:
        loss_out[0] = loss + penalty
    return status


cdef int capi_train_step_f32(fusedmlp_trainer* trainer, const float* X, Py_ssize_t m,
                             const int64_t* labels, const float* targets,
                             double* loss) noexcept nogil:
    return capi_train_step(trainer, X, m, labels, targets, loss)


cdef int capi_train_step_f64(fusedmlp_trainer* trainer, const double* X, Py_ssize_t m,
                             const int64_t* labels, const double* targets,
                             double* loss) noexcept nogil:
    return capi_train_step(trainer, X, m, labels, targets, loss)


# The header spells out the numbers of fusedmlp._codes for C callers: they must agree.
if ((FUSEDMLP_SCORES, FUSEDMLP_PROBABILITIES, FUSEDMLP_LOG_PROBABILITIES, FUSEDMLP_OK,
     FUSEDMLP_BAD_INPUT, FUSEDMLP_BAD_LABEL, FUSEDMLP_BAD_TARGET, FUSEDMLP_BAD_LOSS,
     FUSEDMLP_BAD_RANGE, FUSEDMLP_BAD_COUNTER)
        != (SCORES, PROBABILITIES, LOG_PROBABILITIES, OK, BAD_INPUT, BAD_LABEL, BAD_TARGET,
            BAD_LOSS, BAD_RANGE, BAD_COUNTER)):
    raise ImportError("fusedmlp.h's output and status codes differ from fusedmlp._codes")

TABLE.version = FUSEDMLP_CAPI_VERSION
TABLE.size = sizeof(fusedmlp_capi)
TABLE.model_new = capi_model_new
TABLE.model_free = capi_model_free
TABLE.trainer_new = capi_trainer_new
TABLE.trainer_free = capi_trainer_free
TABLE.model_dtype = capi_model_dtype
TABLE.model_n_inputs = capi_model_n_inputs
TABLE.model_n_outputs = capi_model_n_outputs
TABLE.scratch_bytes = capi_scratch_bytes
TABLE.infer_f32 = capi_infer_f32
TABLE.infer_f64 = capi_infer_f64
TABLE.train_step_f32 = capi_train_step_f32
TABLE.train_step_f64 = capi_train_step_f64

_C_API = PyCapsule_New(&TABLE, FUSEDMLP_CAPSULE_NAME, NULL)


def c_loop(mlp, X, out, Py_ssize_t repeats, bint gemm_only=False):
    """Call the C API's inference (probabilities) `repeats` times from a C loop, the way a C
    caller would (through the capsule's table, GIL released); with gemm_only, only the
    forward pass's matrix products instead (the benchmarks' GEMM floor). X and out are
    native arrays of the model's dtype, out (m x n_L); time it from outside."""
    cdef Network network = network_of(mlp, "c_loop")
    cdef Py_ssize_t r, m = len(X), itemsize = 8 if network.is_double else 4
    cdef int type_num = cnp.NPY_FLOAT64 if network.is_double else cnp.NPY_FLOAT32
    cdef char* x = native(X, type_num, cnp.NPY_ARRAY_CARRAY_RO, m, network.net.sizes[0])
    cdef char* o = native(out, type_num, cnp.NPY_ARRAY_CARRAY, m,
                          network.net.sizes[network.net.n_layers])
    cdef fusedmlp_model* model
    cdef _Scratch scratch = thread_scratch(scratch_bytes(&network.net, m, itemsize))
    cdef int status = OK
    if x == NULL or o == NULL or m < 1 or m > CHUNK:
        raise ValueError(f"X and out must be native arrays of 1 to {CHUNK} rows for this model")
    cdef Entered entered
    model = capi_model_new(<PyObject*>mlp)
    with nogil:
        if gemm_only:
            entered = enter(False)
        for r in range(repeats):
            if gemm_only and network.is_double:
                forward(&network.net, <double*>x, m, <double*>scratch.data,
                        m * network.net.max_width, <double*>o, True)
            elif gemm_only:
                forward(&network.net, <float*>x, m, <float*>scratch.data,
                        m * network.net.max_width, <float*>o, True)
            elif network.is_double:
                status |= TABLE.infer_f64(model, <double*>x, m, <double*>o, PROBABILITIES,
                                          scratch.data)
            else:
                status |= TABLE.infer_f32(model, <float*>x, m, <float*>o, PROBABILITIES,
                                          scratch.data)
        if gemm_only:
            leave(entered, False)
    capi_model_free(model)
    return status
