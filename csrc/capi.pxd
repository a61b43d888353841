# fusedmlp's Cython API: `from fusedmlp.capi cimport ...` (installed as fusedmlp/capi.pxd).
#
# The declarations of the C API in fusedmlp.h, whose comments are the reference (lifetime,
# threads, return codes). Build the cimporting extension with
# include_dirs=[fusedmlp.get_include()]; nothing to link.
#
#     from fusedmlp.capi cimport *
#     cdef fusedmlp_model* model = fusedmlp_model_new(mlp)    # GIL held; raises on error
#     with nogil:
#         for i in prange(n):
#             fusedmlp_infer_f32(model, &X[i, 0], 1, &out[i, 0], FUSEDMLP_PROBABILITIES, NULL)
#     fusedmlp_model_free(model)

from cpython.object cimport PyObject
from libc.stdint cimport int64_t

cdef extern from "fusedmlp.h":
    int FUSEDMLP_CAPI_VERSION

    enum:
        FUSEDMLP_FLOAT32
        FUSEDMLP_FLOAT64

    enum:
        FUSEDMLP_SCORES
        FUSEDMLP_PROBABILITIES
        FUSEDMLP_LOG_PROBABILITIES

    enum:
        FUSEDMLP_OK
        FUSEDMLP_BAD_INPUT
        FUSEDMLP_BAD_LABEL
        FUSEDMLP_BAD_TARGET
        FUSEDMLP_BAD_LOSS
        FUSEDMLP_BAD_OUTPUT
        FUSEDMLP_WRONG_DTYPE
        FUSEDMLP_BAD_ARGUMENT
        FUSEDMLP_TOO_MANY_ROWS
        FUSEDMLP_NO_MEMORY

    ctypedef struct fusedmlp_model
    ctypedef struct fusedmlp_trainer

    # GIL held: a new handle (it keeps `mlp` -- and a trainer `optimizer` -- alive), or an
    # exception; free it with the GIL held too.
    fusedmlp_model* fusedmlp_model_new(object mlp) except NULL
    void fusedmlp_model_free(fusedmlp_model* model)
    fusedmlp_trainer* fusedmlp_trainer_new(object mlp, object optimizer,
                                           Py_ssize_t max_batch) except NULL
    void fusedmlp_trainer_free(fusedmlp_trainer* trainer)

    # No GIL needed: callable inside `with nogil:` and prange loops.
    int fusedmlp_model_dtype(const fusedmlp_model* model) nogil
    Py_ssize_t fusedmlp_model_n_inputs(const fusedmlp_model* model) nogil
    Py_ssize_t fusedmlp_model_n_outputs(const fusedmlp_model* model) nogil
    size_t fusedmlp_scratch_bytes(const fusedmlp_model* model, Py_ssize_t m) nogil
    int fusedmlp_infer_f32(const fusedmlp_model* model, const float* X, Py_ssize_t m,
                           float* out, int output, void* scratch) nogil
    int fusedmlp_infer_f64(const fusedmlp_model* model, const double* X, Py_ssize_t m,
                           double* out, int output, void* scratch) nogil
    int fusedmlp_train_step_f32(fusedmlp_trainer* trainer, const float* X, Py_ssize_t m,
                                const int64_t* labels, const float* targets,
                                double* loss) nogil
    int fusedmlp_train_step_f64(fusedmlp_trainer* trainer, const double* X, Py_ssize_t m,
                                const int64_t* labels, const double* targets,
                                double* loss) nogil
