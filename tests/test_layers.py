"""One Dense layer, and the two loss layers, against float64 NumPy (tests/oracle.py)."""

import numpy as np
import pytest

import fusedmlp
from fusedmlp.layers import initial_weights

import oracle

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-5, np.float64: 1e-12}
ATOL = {np.float32: 2e-6, np.float64: 1e-13}
ACTIVATION_NAMES = list(oracle.ACTIVATION_NAMES)


def _close(actual, expected, dtype, scale=1.0):
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=ATOL[dtype] * scale)


def _layer_and_data(activation, dtype, m=7, n_in=5, n_out=4, seed=0):
    layer = fusedmlp.Dense(n_in, n_out, activation=activation, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 1)
    layer.b = rng.normal(size=n_out)
    X = rng.normal(size=(m, n_in)).astype(dtype)
    dA = rng.normal(size=(m, n_out)).astype(dtype)
    return layer, X, dA


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_dense_forward_backward_match_numpy(activation, dtype):
    layer, X, dA = _layer_and_data(activation, dtype)
    W, b = layer.W.astype(np.float64), layer.b.astype(np.float64)
    Z = X.astype(np.float64) @ W + b
    f, fprime = oracle.ACTIVATIONS[activation], oracle.DERIVATIVES[activation]

    A = layer.forward(X)
    assert A.dtype == dtype and A.shape == (7, 4)
    _close(A, f(Z), dtype)

    dX = layer.backward(dA)
    dZ = dA.astype(np.float64) * fprime(Z)
    assert dX.dtype == dtype and layer.dW.dtype == dtype and layer.db.dtype == dtype
    _close(layer.dW, X.astype(np.float64).T @ dZ, dtype, scale=10)
    _close(layer.db, dZ.sum(axis=0), dtype, scale=10)
    _close(dX, dZ @ W.T, dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_backward_never_writes_into_dA(dtype):
    layer, X, dA = _layer_and_data("relu", dtype)
    layer.forward(X)
    kept = dA.copy()
    dX_writable = layer.backward(dA)
    np.testing.assert_array_equal(dA, kept)

    read_only = dA.copy()
    read_only.flags.writeable = False
    dX_read_only = layer.backward(read_only)          # accepted, not copied into
    np.testing.assert_array_equal(dX_read_only, dX_writable)
    # a strided (non-contiguous) dA gives the same result too
    strided = np.zeros((dA.shape[0], 2 * dA.shape[1]), dtype)
    strided[:, ::2] = dA
    np.testing.assert_array_equal(layer.backward(strided[:, ::2]), dX_writable)


def test_dense_accepts_read_only_and_strided_X():
    layer, X, _ = _layer_and_data("tanh", np.float64)
    expected = layer.forward(X)
    read_only = X.copy()
    read_only.flags.writeable = False
    np.testing.assert_array_equal(layer.forward(read_only), expected)
    wide = np.zeros((X.shape[0], 2 * X.shape[1]))
    wide[:, 1::2] = X
    np.testing.assert_array_equal(layer.forward(wide[:, 1::2]), expected)
    np.testing.assert_array_equal(layer.forward(X.tolist()), expected)


def test_dense_refuses_wrong_shapes_and_values():
    layer = fusedmlp.Dense(3, 2, seed=0)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones((4, 2)))
    with pytest.raises(ValueError, match="X must have 3 columns"):
        layer.forward(np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match="X must be 2-D"):
        layer.forward(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="X contains NaN"):
        layer.forward(np.array([[1.0, np.nan, 0.0]]))
    with pytest.raises(TypeError, match="X must hold real numbers"):
        layer.forward(np.ones((2, 3), np.complex64))
    layer.forward(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="dA must have 2 columns"):
        layer.backward(np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"dA must have shape \(4, 2\)"):
        layer.backward(np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"W must have shape \(3, 2\)"):
        layer.W = np.ones((2, 3))
    with pytest.raises(ValueError, match="b contains NaN"):
        layer.b = [np.nan, 0.0]
    with pytest.raises(ValueError, match="activation must be one of"):
        fusedmlp.Dense(3, 2, activation="swish")
    with pytest.raises(ValueError, match="n_in must be >= 1"):
        fusedmlp.Dense(0, 2)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        fusedmlp.Dense(3, 2, dtype=np.float16)
    with pytest.raises(ValueError, match="init must be one of"):
        fusedmlp.Dense(3, 2, init="orthogonal")


def test_dense_parameter_assignment_casts_and_keeps_dtype():
    layer = fusedmlp.Dense(2, 2, dtype=np.float32, seed=0)
    layer.W = [[1, 2], [3, 4]]
    layer.b = np.array([0.5, -0.5])
    assert layer.W.dtype == np.float32 and layer.b.dtype == np.float32
    np.testing.assert_array_equal(layer.forward([[1.0, 1.0]]), [[4.5, 5.5]])
    assert repr(layer) == "Dense(2, 2, activation='identity', dtype=float32)"


def test_dense_seed_reproducible_and_no_global_state():
    np.random.seed(0)
    first = fusedmlp.Dense(20, 10, seed=3).W.copy()
    np.random.seed(1)
    np.testing.assert_array_equal(fusedmlp.Dense(20, 10, seed=3).W, first)
    assert not np.array_equal(fusedmlp.Dense(20, 10, seed=4).W, first)


@pytest.mark.parametrize("init, activation, variance", [
    ("auto", "relu", 2.0 / 400),                     # He normal
    ("auto", "tanh", 2.0 / (400 + 300)),             # Glorot uniform
    ("he_uniform", "tanh", 2.0 / 400),
    ("lecun", "relu", 1.0 / 400),
    ("xavier_normal", "relu", 2.0 / (400 + 300)),
])
def test_initialisation_variance(init, activation, variance):
    W = initial_weights(400, 300, activation, init, np.random.default_rng(0))
    # 120000 draws: the sample variance is within ~1% of the true one
    assert W.var() == pytest.approx(variance, rel=0.03)
    assert abs(W.mean()) < 0.05 * np.sqrt(variance)
    if init in ("auto",) and activation == "tanh" or init.endswith("uniform"):
        assert np.abs(W).max() <= np.sqrt(3 * variance)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("targets", ["labels", "probabilities"])
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_cross_entropy_layer(dtype, targets, weighted):
    rng = np.random.default_rng(0)
    scores = (3 * rng.normal(size=(6, 4))).astype(dtype)
    y = rng.integers(0, 4, 6) if targets == "labels" else rng.dirichlet(np.ones(4), 6).astype(dtype)
    weights = rng.uniform(0.1, 2.0, 6) if weighted else None
    expected_loss, expected_grad = oracle.loss_and_output_gradient(
        scores.astype(np.float64), y, "softmax", weights)
    layer = fusedmlp.SoftmaxCrossEntropy()
    loss = layer.forward(scores, y, sample_weight=weights)
    assert loss == pytest.approx(expected_loss, rel=RTOL[dtype])
    grad = layer.backward()
    assert grad.dtype == dtype
    _close(grad, expected_grad, dtype)
    grad[...] = 0                                      # a copy: the layer keeps its own
    _close(layer.backward(), expected_grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_mean_squared_error_layer(dtype, weighted):
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(5, 3)).astype(dtype)
    target = rng.normal(size=(5, 3)).astype(dtype)
    weights = rng.uniform(0.1, 2.0, 5) if weighted else None
    expected_loss, expected_grad = oracle.loss_and_output_gradient(
        pred.astype(np.float64), target, "identity", weights)
    layer = fusedmlp.MeanSquaredError()
    assert layer.forward(pred, target, sample_weight=weights) == pytest.approx(
        expected_loss, rel=RTOL[dtype])
    _close(layer.backward(), expected_grad, dtype)
    # unweighted: exactly PyTorch's MSELoss, the mean over all elements
    if not weighted:
        assert expected_loss == pytest.approx(np.mean((pred.astype(np.float64) - target) ** 2))


def test_loss_layers_refuse_bad_targets():
    with pytest.raises(ValueError, match=r"y must lie in \[0, 3\)"):
        fusedmlp.SoftmaxCrossEntropy().forward(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match="y must have 2 rows"):
        fusedmlp.SoftmaxCrossEntropy().forward(np.zeros((2, 3)), [0, 1, 2])
    with pytest.raises(ValueError, match="sample_weight must be non-negative"):
        fusedmlp.SoftmaxCrossEntropy().forward(np.zeros((2, 3)), [0, 1], sample_weight=[1, -1])
    with pytest.raises(ValueError, match=r"target must have shape \(2, 3\)"):
        fusedmlp.MeanSquaredError().forward(np.zeros((2, 3)), np.zeros((3, 3)))
