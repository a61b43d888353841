"""Kernel benchmarks: each fusedmlp kernel next to the NumPy code a careful user would write.

The fusedmlp side calls the compiled kernels (``fusedmlp._kernels``) on preallocated outputs,
which is how the training step uses them; the NumPy side is the reference MLP's own layers
(``reference_numpy``), which allocate their results as NumPy code does. float32, one BLAS
thread (conftest.py).
"""

import numpy as np
import pytest

import fusedmlp
from fusedmlp import _kernels
from fusedmlp.functional import ACTIVATIONS
from reference_numpy import ACTIVATION_LAYERS, Affine, NumpyAdam, NumpySGD, SoftmaxWithLoss

DTYPE = np.float32
RELU = ACTIVATIONS["relu"]


@pytest.fixture(scope="module")
def logits():
    return np.random.default_rng(0).normal(scale=3.0, size=(4096, 1000)).astype(DTYPE)


@pytest.fixture(scope="module")
def labels():
    return np.random.default_rng(1).integers(0, 1000, size=4096).astype(np.int64)


@pytest.fixture(scope="module")
def dense():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(4096, 512)).astype(DTYPE)
    W = (rng.normal(size=(512, 512)) / np.sqrt(512)).astype(DTYPE)
    b = rng.normal(size=512).astype(DTYPE)
    dA = rng.normal(size=(4096, 512)).astype(DTYPE)
    return X, W, b, dA


def numpy_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


# ------------------------------------------------------------------ softmax 4096 x 1000
@pytest.mark.benchmark(group="softmax 4096x1000")
def test_softmax_fusedmlp(benchmark, logits):
    out = np.empty_like(logits)
    benchmark(fusedmlp.softmax, logits, out=out)
    np.testing.assert_allclose(out, numpy_softmax(logits), rtol=1e-5, atol=1e-7)


@pytest.mark.benchmark(group="softmax 4096x1000")
def test_softmax_numpy(benchmark, logits):
    benchmark(numpy_softmax, logits)


# ------------------------------------------------------------------ dense forward, bias + relu
@pytest.mark.benchmark(group="dense forward relu 4096x512x512")
def test_dense_forward_fusedmlp(benchmark, dense):
    X, W, b, _ = dense
    out = np.empty((X.shape[0], W.shape[1]), DTYPE)
    benchmark(_kernels.dense_forward, X, W, b, RELU, out)


@pytest.mark.benchmark(group="dense forward relu 4096x512x512")
def test_dense_forward_numpy(benchmark, dense):
    X, W, b, _ = dense
    affine, relu = Affine(W, b), ACTIVATION_LAYERS["relu"]()
    benchmark(lambda: relu.forward(affine.forward(X)))


# ------------------------------------------------------------------ dense backward, relu
@pytest.mark.benchmark(group="dense backward relu 4096x512x512")
def test_dense_backward_fusedmlp(benchmark, dense):
    X, W, b, dA = dense
    A = np.empty((X.shape[0], W.shape[1]), DTYPE)
    _kernels.dense_forward(X, W, b, RELU, A)
    dZ, dX = np.empty_like(A), np.empty_like(X)
    dW, db = np.empty_like(W), np.empty_like(b)
    scratch = np.empty(W.shape[1], np.float64)
    benchmark(_kernels.dense_backward, X, W, A, dA, RELU, dZ, dW, db, dX, scratch)


@pytest.mark.benchmark(group="dense backward relu 4096x512x512")
def test_dense_backward_numpy(benchmark, dense):
    X, W, b, dA = dense
    affine, relu = Affine(W, b), ACTIVATION_LAYERS["relu"]()
    relu.forward(affine.forward(X))
    benchmark(lambda: affine.backward(relu.backward(dA)))


# ------------------------------------------------------------------ cross-entropy + gradient
@pytest.mark.benchmark(group="cross-entropy 4096x1000")
def test_cross_entropy_fusedmlp(benchmark, logits, labels):
    dlogits = np.empty_like(logits)
    no_targets = no_weights = None
    loss = benchmark(_kernels.cross_entropy, logits, labels, no_targets, no_weights,
                     float(len(labels)), dlogits, np.empty(len(labels)))
    assert loss == pytest.approx(SoftmaxWithLoss().forward(logits, labels), rel=1e-4)


@pytest.mark.benchmark(group="cross-entropy 4096x1000")
def test_cross_entropy_numpy(benchmark, logits, labels):
    layer = SoftmaxWithLoss()
    benchmark(lambda: (layer.forward(logits, labels), layer.backward()))


# ------------------------------------------------------------------ optimiser update, 784-128-10
# One update over the ~100k parameters of a 784-128-10 network: at small batches this, not
# the GEMMs, is most of a training step.
@pytest.fixture(scope="module")
def parameters_784_128_10():
    model = fusedmlp.MLP([784, 128, 10], dtype=DTYPE, seed=0)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(32, 784)).astype(DTYPE)
    y = rng.integers(0, 10, size=32)
    loss, grads = model.loss_and_gradients(X, y)
    return model, grads


@pytest.mark.benchmark(group="adam update 784-128-10 (101,770 parameters)")
def test_adam_update_fusedmlp(benchmark, parameters_784_128_10):
    model, _ = parameters_784_128_10
    benchmark(fusedmlp.Adam(1e-3).step, model)


@pytest.mark.benchmark(group="adam update 784-128-10 (101,770 parameters)")
def test_adam_update_numpy(benchmark, parameters_784_128_10):
    model, grads = parameters_784_128_10
    params = [(layer.W.copy(), layer.b.copy()) for layer in model.layers]
    benchmark(NumpyAdam(1e-3).update, params, grads)


@pytest.mark.benchmark(group="sgd momentum update 784-128-10 (101,770 parameters)")
def test_momentum_update_fusedmlp(benchmark, parameters_784_128_10):
    model, _ = parameters_784_128_10
    benchmark(fusedmlp.SGD(1e-3, momentum=0.9).step, model)


@pytest.mark.benchmark(group="sgd momentum update 784-128-10 (101,770 parameters)")
def test_momentum_update_numpy(benchmark, parameters_784_128_10):
    model, grads = parameters_784_128_10
    params = [(layer.W.copy(), layer.b.copy()) for layer in model.layers]
    benchmark(NumpySGD(1e-3, momentum=0.9).update, params, grads)
