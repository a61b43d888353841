/* A small C extension that uses fusedmlp's C API (fusedmlp.h): built by tests/test_embedding.py.
 *
 * model_new(mlp) / trainer_new(mlp, optimizer, max_batch) -> capsule owning a handle
 * infer(model, X, out, output, block, use_scratch, dtype) -> status
 *     X into out, `block` rows per call, with the GIL released; dtype picks the _f32 or _f64
 *     function (a mismatch tests FUSEDMLP_WRONG_DTYPE)
 * infer_guarded(model, X, out, output, scratch_size, dtype) -> (status, guard intact)
 *     one call over all of X with scratch_size bytes of scratch followed by guard bytes
 *     that the call must leave as they were
 * infer_into_scratch(model, X, out, output, scratch, dtype) -> status
 *     one call over all of X with the caller's writable buffer `scratch` as the scratch (it
 *     may overlap X or out: the call must refuse that)
 * scratch_bytes(model, m) -> fusedmlp_scratch_bytes
 * train_step(trainer, X, labels or None, targets or None) -> (status, loss)
 * constants() -> {name: value}; table() -> (version, size, header's size)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>
#include "fusedmlp.h"

static void free_model(PyObject* capsule) {
    fusedmlp_model_free((fusedmlp_model*)PyCapsule_GetPointer(capsule, "fusedmlp_model"));
}

static void free_trainer(PyObject* capsule) {
    fusedmlp_trainer_free((fusedmlp_trainer*)PyCapsule_GetPointer(capsule, "fusedmlp_trainer"));
}

static PyObject* model_new(PyObject* self, PyObject* mlp) {
    fusedmlp_model* model = fusedmlp_model_new(mlp);
    PyObject* capsule;
    if (model == NULL)
        return NULL;
    capsule = PyCapsule_New(model, "fusedmlp_model", free_model);
    if (capsule == NULL)
        fusedmlp_model_free(model);
    return capsule;
}

static PyObject* trainer_new(PyObject* self, PyObject* args) {
    PyObject *mlp, *optimizer, *capsule;
    Py_ssize_t max_batch;
    fusedmlp_trainer* trainer;
    if (!PyArg_ParseTuple(args, "OOn", &mlp, &optimizer, &max_batch))
        return NULL;
    trainer = fusedmlp_trainer_new(mlp, optimizer, max_batch);
    if (trainer == NULL)
        return NULL;
    capsule = PyCapsule_New(trainer, "fusedmlp_trainer", free_trainer);
    if (capsule == NULL)
        fusedmlp_trainer_free(trainer);
    return capsule;
}

static PyObject* infer(PyObject* self, PyObject* args) {
    PyObject *capsule, *X, *out;
    int output, use_scratch, dtype, status = FUSEDMLP_OK;
    Py_ssize_t block, n_in, n_out, m, start, itemsize;
    Py_buffer x_view, out_view;
    fusedmlp_model* model;
    void* scratch = NULL;
    if (!PyArg_ParseTuple(args, "OOOinpi", &capsule, &X, &out, &output, &block, &use_scratch,
                          &dtype))
        return NULL;
    model = (fusedmlp_model*)PyCapsule_GetPointer(capsule, "fusedmlp_model");
    if (model == NULL || block < 1)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "block < 1");
    if (PyObject_GetBuffer(X, &x_view, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (PyObject_GetBuffer(out, &out_view, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&x_view);
        return NULL;
    }
    n_in = fusedmlp_model_n_inputs(model);
    n_out = fusedmlp_model_n_outputs(model);
    itemsize = fusedmlp_model_dtype(model) == FUSEDMLP_FLOAT32 ? 4 : 8;
    m = x_view.len / (itemsize * n_in);
    if (x_view.len != m * n_in * itemsize || out_view.len != m * n_out * itemsize) {
        PyBuffer_Release(&x_view);
        PyBuffer_Release(&out_view);
        return PyErr_Format(PyExc_ValueError, "X and out do not fit the model");
    }
    Py_BEGIN_ALLOW_THREADS
    if (use_scratch)
        scratch = malloc(fusedmlp_scratch_bytes(model, block));
    for (start = 0; start < m && status == FUSEDMLP_OK; start += block) {
        Py_ssize_t rows = m - start < block ? m - start : block;
        if (dtype == FUSEDMLP_FLOAT32)
            status = fusedmlp_infer_f32(model, (const float*)x_view.buf + start * n_in, rows,
                                        (float*)out_view.buf + start * n_out, output, scratch);
        else
            status = fusedmlp_infer_f64(model, (const double*)x_view.buf + start * n_in, rows,
                                        (double*)out_view.buf + start * n_out, output, scratch);
    }
    free(scratch);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x_view);
    PyBuffer_Release(&out_view);
    return PyLong_FromLong(status);
}

static PyObject* infer_into_scratch(PyObject* self, PyObject* args) {
    PyObject *capsule, *X, *out, *scratch;
    int output, dtype, status;
    Py_buffer views[3];
    fusedmlp_model* model;
    if (!PyArg_ParseTuple(args, "OOOiOi", &capsule, &X, &out, &output, &scratch, &dtype))
        return NULL;
    model = (fusedmlp_model*)PyCapsule_GetPointer(capsule, "fusedmlp_model");
    if (model == NULL)
        return NULL;
    if (PyObject_GetBuffer(X, &views[0], PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (PyObject_GetBuffer(out, &views[1], PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&views[0]);
        return NULL;
    }
    if (PyObject_GetBuffer(scratch, &views[2], PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&views[0]);
        PyBuffer_Release(&views[1]);
        return NULL;
    }
    {
        Py_ssize_t m = views[0].len / ((dtype == FUSEDMLP_FLOAT32 ? 4 : 8)
                                       * fusedmlp_model_n_inputs(model));
        if (dtype == FUSEDMLP_FLOAT32)
            status = fusedmlp_infer_f32(model, (const float*)views[0].buf, m,
                                        (float*)views[1].buf, output, views[2].buf);
        else
            status = fusedmlp_infer_f64(model, (const double*)views[0].buf, m,
                                        (double*)views[1].buf, output, views[2].buf);
    }
    PyBuffer_Release(&views[0]);
    PyBuffer_Release(&views[1]);
    PyBuffer_Release(&views[2]);
    return PyLong_FromLong(status);
}

#define GUARD_BYTES 4096
#define GUARD_BYTE 0xA5

static PyObject* infer_guarded(PyObject* self, PyObject* args) {
    PyObject *capsule, *X, *out;
    int output, dtype, status, intact = 1;
    Py_ssize_t scratch_size, m, i;
    Py_buffer x_view, out_view;
    fusedmlp_model* model;
    unsigned char* scratch;
    if (!PyArg_ParseTuple(args, "OOOini", &capsule, &X, &out, &output, &scratch_size, &dtype))
        return NULL;
    model = (fusedmlp_model*)PyCapsule_GetPointer(capsule, "fusedmlp_model");
    if (model == NULL)
        return NULL;
    if (PyObject_GetBuffer(X, &x_view, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (PyObject_GetBuffer(out, &out_view, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&x_view);
        return NULL;
    }
    m = x_view.len / ((dtype == FUSEDMLP_FLOAT32 ? 4 : 8) * fusedmlp_model_n_inputs(model));
    scratch = (unsigned char*)malloc(scratch_size + GUARD_BYTES);
    if (scratch == NULL) {
        PyBuffer_Release(&x_view);
        PyBuffer_Release(&out_view);
        return PyErr_NoMemory();
    }
    memset(scratch, GUARD_BYTE, scratch_size + GUARD_BYTES);
    Py_BEGIN_ALLOW_THREADS
    if (dtype == FUSEDMLP_FLOAT32)
        status = fusedmlp_infer_f32(model, (const float*)x_view.buf, m, (float*)out_view.buf,
                                    output, scratch);
    else
        status = fusedmlp_infer_f64(model, (const double*)x_view.buf, m, (double*)out_view.buf,
                                    output, scratch);
    Py_END_ALLOW_THREADS
    for (i = scratch_size; i < scratch_size + GUARD_BYTES; i++)
        intact &= scratch[i] == GUARD_BYTE;
    free(scratch);
    PyBuffer_Release(&x_view);
    PyBuffer_Release(&out_view);
    return Py_BuildValue("iO", status, intact ? Py_True : Py_False);
}

static PyObject* scratch_bytes(PyObject* self, PyObject* args) {
    PyObject* capsule;
    Py_ssize_t m;
    fusedmlp_model* model;
    if (!PyArg_ParseTuple(args, "On", &capsule, &m))
        return NULL;
    model = (fusedmlp_model*)PyCapsule_GetPointer(capsule, "fusedmlp_model");
    if (model == NULL)
        return NULL;
    return PyLong_FromSize_t(fusedmlp_scratch_bytes(model, m));
}

static PyObject* train_step(PyObject* self, PyObject* args) {
    PyObject *capsule, *X, *labels, *targets;
    Py_buffer x_view, y_view;
    int has_labels, status;
    double loss = 0;
    Py_ssize_t m;
    fusedmlp_trainer* trainer;
    if (!PyArg_ParseTuple(args, "OOOO", &capsule, &X, &labels, &targets))
        return NULL;
    trainer = (fusedmlp_trainer*)PyCapsule_GetPointer(capsule, "fusedmlp_trainer");
    if (trainer == NULL)
        return NULL;
    has_labels = labels != Py_None;
    if (PyObject_GetBuffer(X, &x_view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND) < 0)
        return NULL;
    if (PyObject_GetBuffer(has_labels ? labels : targets, &y_view, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&x_view);
        return NULL;
    }
    m = x_view.shape[0];
    Py_BEGIN_ALLOW_THREADS
    if (x_view.format[0] == 'f')
        status = fusedmlp_train_step_f32(trainer, (const float*)x_view.buf, m,
                                         has_labels ? (const int64_t*)y_view.buf : NULL,
                                         has_labels ? NULL : (const float*)y_view.buf, &loss);
    else
        status = fusedmlp_train_step_f64(trainer, (const double*)x_view.buf, m,
                                         has_labels ? (const int64_t*)y_view.buf : NULL,
                                         has_labels ? NULL : (const double*)y_view.buf, &loss);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x_view);
    PyBuffer_Release(&y_view);
    return Py_BuildValue("id", status, loss);
}

static PyObject* constants(PyObject* self, PyObject* unused) {
    return Py_BuildValue(
        "{si,si,si,si,si,si,si,si,si,si,si,si,si,si,si,si,si,si}",
        "FLOAT32", FUSEDMLP_FLOAT32, "FLOAT64", FUSEDMLP_FLOAT64,
        "SCORES", FUSEDMLP_SCORES, "PROBABILITIES", FUSEDMLP_PROBABILITIES,
        "LOG_PROBABILITIES", FUSEDMLP_LOG_PROBABILITIES,
        "OK", FUSEDMLP_OK, "BAD_INPUT", FUSEDMLP_BAD_INPUT, "BAD_LABEL", FUSEDMLP_BAD_LABEL,
        "BAD_TARGET", FUSEDMLP_BAD_TARGET, "BAD_LOSS", FUSEDMLP_BAD_LOSS,
        "BAD_OUTPUT", FUSEDMLP_BAD_OUTPUT, "BAD_RANGE", FUSEDMLP_BAD_RANGE,
        "BAD_COUNTER", FUSEDMLP_BAD_COUNTER,
        "WRONG_DTYPE", FUSEDMLP_WRONG_DTYPE, "BAD_ARGUMENT", FUSEDMLP_BAD_ARGUMENT,
        "TOO_MANY_ROWS", FUSEDMLP_TOO_MANY_ROWS, "NO_MEMORY", FUSEDMLP_NO_MEMORY,
        "CAPI_VERSION", FUSEDMLP_CAPI_VERSION);
}

static PyObject* table(PyObject* self, PyObject* unused) {
    const fusedmlp_capi* api = fusedmlp_capi_import();
    if (api == NULL)
        return NULL;
    return Py_BuildValue("IIn", (unsigned)api->version, (unsigned)api->size,
                         (Py_ssize_t)sizeof(fusedmlp_capi));
}

static PyMethodDef methods[] = {
    {"model_new", model_new, METH_O, NULL},
    {"trainer_new", trainer_new, METH_VARARGS, NULL},
    {"infer", infer, METH_VARARGS, NULL},
    {"infer_guarded", infer_guarded, METH_VARARGS, NULL},
    {"infer_into_scratch", infer_into_scratch, METH_VARARGS, NULL},
    {"scratch_bytes", scratch_bytes, METH_VARARGS, NULL},
    {"train_step", train_step, METH_VARARGS, NULL},
    {"constants", constants, METH_NOARGS, NULL},
    {"table", table, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "c_client", NULL, -1, methods};

PyMODINIT_FUNC PyInit_c_client(void) { return PyModule_Create(&module); }
