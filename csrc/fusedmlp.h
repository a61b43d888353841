/* fusedmlp.h -- the C API of fusedmlp: run and train a fusedmlp.MLP from C, C++ or Cython
 * without the GIL.
 *
 * Build: add fusedmlp.get_include() and Python's include directory to the include path.
 * Nothing is linked: the installed fusedmlp publishes a table of function pointers in the
 * PyCapsule "fusedmlp._network._C_API", and the inline functions below call through it.
 *
 *     fusedmlp_model* model = fusedmlp_model_new(mlp);      // GIL held; NULL + exception
 *     if (model == NULL) return NULL;
 *     Py_BEGIN_ALLOW_THREADS
 *     status = fusedmlp_infer_f32(model, X, m, out, FUSEDMLP_PROBABILITIES, NULL);
 *     Py_END_ALLOW_THREADS
 *     fusedmlp_model_free(model);                            // GIL held
 *
 * Arrays are row-major and contiguous: X is m x n_inputs, out is m x n_outputs, labels m
 * int64 class indices, targets m x n_outputs. The functions' element type (f32/f64) must be
 * the model's dtype (fusedmlp_model_dtype).
 *
 * Lifetime. A handle holds a strong reference to its MLP (and a trainer to its optimiser):
 * the weights it reads stay valid until the handle is freed, even if Python drops the model.
 * Creating and freeing handles needs the GIL; every other function runs without it and never
 * touches Python objects.
 *
 * Threads. Every call is split into parts as the same Python call is (MLP.n_threads: an
 * integer n gives n parts, "auto" the rule of docs/threading.md), run by the calling thread
 * and the idle workers of fusedmlp's pool; at the same n_threads the results are Python's
 * (bit for bit: the same routine runs both).
 * Inference only reads the model: any number of threads may call fusedmlp_infer_* on one
 * handle at once (give each call its own out and scratch); when the pool's workers are busy
 * with other calls, a call runs its remaining parts itself. A training step writes the
 * parameters, the optimiser state and the model's training workspace: at most one training
 * step per model at any time (from a trainer, MLP.train_step or fit), and no inference on
 * that model while it runs, nor a change of its n_threads -- serialise them yourself;
 * fusedmlp does not lock across the C API.
 *
 * Errors are return codes; the kernels never raise, allocate (but see scratch) or print.
 * Subnormals are flushed inside each call and the caller's floating-point environment is
 * restored before it returns.
 *
 * Versions. FUSEDMLP_CAPI_VERSION changes only when the table changes incompatibly; new
 * functions are appended and grow the table's size. fusedmlp_capi_import() refuses an
 * installed fusedmlp whose version differs or whose table is smaller than this header's.
 */
#ifndef FUSEDMLP_H
#define FUSEDMLP_H

#include <Python.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FUSEDMLP_CAPI_VERSION 1
#define FUSEDMLP_CAPSULE_NAME "fusedmlp._network._C_API"

/* Element types (fusedmlp_model_dtype). */
enum { FUSEDMLP_FLOAT32 = 0, FUSEDMLP_FLOAT64 = 1 };

/* What fusedmlp_infer_* writes: MLP.forward, predict_proba, predict_log_proba. The last two
 * need a classification model (output="softmax" or "sigmoid"); for output="exp",
 * FUSEDMLP_PROBABILITIES gives the predicted mean exp(z) (MLP.predict). */
enum { FUSEDMLP_SCORES = 0, FUSEDMLP_PROBABILITIES = 1, FUSEDMLP_LOG_PROBABILITIES = 2 };

/* Return codes. Positive codes are refused data (the Python API raises ValueError or
 * FloatingPointError for them); nothing was written to the model. Negative codes are
 * misuse of the API. */
enum {
    FUSEDMLP_OK = 0,
    FUSEDMLP_BAD_INPUT = 1,        /* X holds NaN or inf */
    FUSEDMLP_BAD_LABEL = 2,        /* a label outside [0, n_outputs) */
    FUSEDMLP_BAD_TARGET = 3,       /* targets hold NaN or inf */
    FUSEDMLP_BAD_LOSS = 4,         /* the loss is NaN or inf: no update was applied */
    FUSEDMLP_BAD_OUTPUT = 5,       /* inference outputs NaN or inf (the parameters hold
                                      NaN/inf or overflow on X): not predictions */
    FUSEDMLP_BAD_RANGE = 6,        /* a target outside [0, 1] (sigmoid), negative (exp), or
                                      soft targets (softmax) that are not class
                                      probabilities: an entry < 0 or a row not summing to 1
                                      within 1e-4 */
    FUSEDMLP_BAD_COUNTER = 7,      /* the step would take a counter past its range: the
                                      optimiser's step count past 2**53 or the model's
                                      dropout_step past 2**63 - 1; nothing was updated */
    FUSEDMLP_WRONG_DTYPE = -1,     /* an f32 function on a float64 model, or the reverse */
    FUSEDMLP_BAD_ARGUMENT = -2,    /* NULL array, m < 0, unknown output, out overlapping X
                                      or the model's parameters, scratch overlapping X or
                                      out, labels with targets, probabilities of an identity
                                      (regression) output, log-probabilities of an
                                      exp output */
    FUSEDMLP_TOO_MANY_ROWS = -3,   /* a training batch larger than the trainer's max_batch */
    FUSEDMLP_NO_MEMORY = -4        /* scratch == NULL and the scratch could not be allocated */
};

typedef struct fusedmlp_capi fusedmlp_capi;

/* Handles. The table they came from is their first member; the rest is private. */
typedef struct fusedmlp_model { const fusedmlp_capi* api; } fusedmlp_model;
typedef struct fusedmlp_trainer { const fusedmlp_capi* api; } fusedmlp_trainer;

struct fusedmlp_capi {
    uint32_t version;        /* FUSEDMLP_CAPI_VERSION of the installed fusedmlp */
    uint32_t size;           /* sizeof(fusedmlp_capi) there */

    /* GIL held. A new handle, or NULL with a Python exception set. */
    fusedmlp_model* (*model_new)(PyObject* mlp);
    void (*model_free)(fusedmlp_model* model);
    /* A trainer applies `optimizer` (a fusedmlp.Optimizer, bound to the model as by
     * MLP.train_step) to batches of up to max_batch rows; it sizes the model's workspace. */
    fusedmlp_trainer* (*trainer_new)(PyObject* mlp, PyObject* optimizer, Py_ssize_t max_batch);
    void (*trainer_free)(fusedmlp_trainer* trainer);

    /* No GIL needed. */
    int (*model_dtype)(const fusedmlp_model* model);
    Py_ssize_t (*model_n_inputs)(const fusedmlp_model* model);
    Py_ssize_t (*model_n_outputs)(const fusedmlp_model* model);
    /* Bytes of scratch an inference of m rows uses (any m: beyond 256 rows it stays the
     * same, rows are processed 256 at a time). It does not depend on n_threads: the parts of
     * a split call share it, so scratch sized once stays enough whatever n_threads becomes. */
    size_t (*scratch_bytes)(const fusedmlp_model* model, Py_ssize_t m);
    /* Inference of m rows of X into out, in the model's n_threads parts. scratch: NULL, or
     * scratch_bytes(model, m) bytes aligned for double, used by this call alone. With NULL
     * a small call uses the stack and a large one allocates. */
    int (*infer_f32)(const fusedmlp_model* model, const float* X, Py_ssize_t m, float* out,
                     int output, void* scratch);
    int (*infer_f64)(const fusedmlp_model* model, const double* X, Py_ssize_t m, double* out,
                     int output, void* scratch);
    /* One training step on m rows (1 <= m <= max_batch): forward, loss, backward, update,
     * as MLP.train_step. Give labels (classification) or targets, the other NULL. The
     * batch's loss before the update goes to *loss (may be NULL). */
    int (*train_step_f32)(fusedmlp_trainer* trainer, const float* X, Py_ssize_t m,
                          const int64_t* labels, const float* targets, double* loss);
    int (*train_step_f64)(fusedmlp_trainer* trainer, const double* X, Py_ssize_t m,
                          const int64_t* labels, const double* targets, double* loss);
};

/* The installed table (GIL held), imported on first use; NULL with ImportError when fusedmlp
 * is missing or its C API is incompatible with this header. */
static inline const fusedmlp_capi* fusedmlp_capi_import(void) {
    static const fusedmlp_capi* table = NULL;
    const fusedmlp_capi* found;
    if (table != NULL)
        return table;
    found = (const fusedmlp_capi*)PyCapsule_Import(FUSEDMLP_CAPSULE_NAME, 0);
    if (found == NULL)
        return NULL;
    if (found->version != FUSEDMLP_CAPI_VERSION || found->size < sizeof(fusedmlp_capi)) {
        PyErr_Format(PyExc_ImportError,
                     "the installed fusedmlp has C API version %u (a %u-byte table); this "
                     "extension was compiled against version %d (%u bytes): rebuild it",
                     (unsigned)found->version, (unsigned)found->size, FUSEDMLP_CAPI_VERSION,
                     (unsigned)sizeof(fusedmlp_capi));
        return NULL;
    }
    table = found;
    return table;
}

static inline fusedmlp_model* fusedmlp_model_new(PyObject* mlp) {
    const fusedmlp_capi* api = fusedmlp_capi_import();
    return api == NULL ? NULL : api->model_new(mlp);
}

static inline void fusedmlp_model_free(fusedmlp_model* model) {
    if (model != NULL)
        model->api->model_free(model);
}

static inline fusedmlp_trainer* fusedmlp_trainer_new(PyObject* mlp, PyObject* optimizer,
                                                     Py_ssize_t max_batch) {
    const fusedmlp_capi* api = fusedmlp_capi_import();
    return api == NULL ? NULL : api->trainer_new(mlp, optimizer, max_batch);
}

static inline void fusedmlp_trainer_free(fusedmlp_trainer* trainer) {
    if (trainer != NULL)
        trainer->api->trainer_free(trainer);
}

static inline int fusedmlp_model_dtype(const fusedmlp_model* model) {
    return model->api->model_dtype(model);
}

static inline Py_ssize_t fusedmlp_model_n_inputs(const fusedmlp_model* model) {
    return model->api->model_n_inputs(model);
}

static inline Py_ssize_t fusedmlp_model_n_outputs(const fusedmlp_model* model) {
    return model->api->model_n_outputs(model);
}

static inline size_t fusedmlp_scratch_bytes(const fusedmlp_model* model, Py_ssize_t m) {
    return model->api->scratch_bytes(model, m);
}

static inline int fusedmlp_infer_f32(const fusedmlp_model* model, const float* X, Py_ssize_t m,
                                     float* out, int output, void* scratch) {
    return model->api->infer_f32(model, X, m, out, output, scratch);
}

static inline int fusedmlp_infer_f64(const fusedmlp_model* model, const double* X,
                                     Py_ssize_t m, double* out, int output, void* scratch) {
    return model->api->infer_f64(model, X, m, out, output, scratch);
}

static inline int fusedmlp_train_step_f32(fusedmlp_trainer* trainer, const float* X,
                                          Py_ssize_t m, const int64_t* labels,
                                          const float* targets, double* loss) {
    return trainer->api->train_step_f32(trainer, X, m, labels, targets, loss);
}

static inline int fusedmlp_train_step_f64(fusedmlp_trainer* trainer, const double* X,
                                          Py_ssize_t m, const int64_t* labels,
                                          const double* targets, double* loss) {
    return trainer->api->train_step_f64(trainer, X, m, labels, targets, loss);
}

#ifdef __cplusplus
}
#endif

#endif /* FUSEDMLP_H */
