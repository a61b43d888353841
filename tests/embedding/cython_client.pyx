# cython: language_level=3, boundscheck=False, wraparound=False
# A small Cython extension that cimports fusedmlp's Cython API (fusedmlp/capi.pxd): built by
# tests/test_embedding.py.

from cython.parallel cimport prange
from libc.stdint cimport int64_t

from fusedmlp.capi cimport *


def predict_proba_rows(mlp, const float[:, ::1] X, float[:, ::1] out, int n_threads):
    """predict_proba one row per call, the rows spread over a prange loop without the GIL;
    returns how many calls failed."""
    cdef fusedmlp_model* model = fusedmlp_model_new(mlp)
    cdef Py_ssize_t i, n = X.shape[0]
    cdef int failed = 0
    try:
        with nogil:
            for i in prange(n, num_threads=n_threads, schedule="static", chunksize=1):
                failed += fusedmlp_infer_f32(model, &X[i, 0], 1, &out[i, 0],
                                             FUSEDMLP_PROBABILITIES, NULL) != FUSEDMLP_OK
    finally:
        fusedmlp_model_free(model)
    return failed


def forward_all(mlp, const double[:, ::1] X, double[:, ::1] out):
    """forward of all rows in one call with the GIL released; returns the status."""
    cdef fusedmlp_model* model = fusedmlp_model_new(mlp)
    cdef int status
    with nogil:
        status = fusedmlp_infer_f64(model, &X[0, 0], X.shape[0], &out[0, 0], FUSEDMLP_SCORES,
                                    NULL)
    fusedmlp_model_free(model)
    return status


def train_step(mlp, optimizer, const float[:, ::1] X, const int64_t[::1] labels):
    """One training step without the GIL; returns (status, loss)."""
    cdef fusedmlp_trainer* trainer = fusedmlp_trainer_new(mlp, optimizer, X.shape[0])
    cdef double loss = 0
    cdef int status
    with nogil:
        status = fusedmlp_train_step_f32(trainer, &X[0, 0], X.shape[0], &labels[0], NULL,
                                         &loss)
    fusedmlp_trainer_free(trainer)
    return status, loss
