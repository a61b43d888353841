"""One Dense layer, and the two loss layers, against float64 NumPy (tests/oracle.py).

Exactness: against the oracle, within the rounding bound derived from each sum's length and
terms (oracle.forward_bound, dense_backward_bound, output_bound); bit for bit only where the
same values reach the same kernel (another layout of the same input, a read-only copy) or the
arithmetic is exact."""

import numpy as np
import pytest

import fusedmlp
from fusedmlp.layers import initial_weights

import oracle

DTYPES = [np.float32, np.float64]
ACTIVATION_NAMES = list(oracle.ACTIVATION_NAMES)


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
    W, b = layer.W, layer.b
    _, outputs, _, bounds = oracle.forward_bound([(W, b)], [activation], X, dtype)

    A = layer.forward(X)
    assert A.dtype == dtype and A.shape == (7, 4)
    oracle.assert_within(A, outputs[0], bounds[0])

    dX = layer.backward(dA)
    expected, expected_bounds = oracle.dense_backward_bound(X, W, b, dA, activation, dtype)
    assert dX.dtype == dtype and layer.dW.dtype == dtype and layer.db.dtype == dtype
    if activation == "step":            # its derivative is 0: every gradient is exactly 0
        for got in (layer.dW, layer.db, dX):
            oracle.assert_same_bits(got, np.zeros_like(got), why=oracle.EXACT)
        return
    for got, exact, bound in zip((layer.dW, layer.db, dX), expected, expected_bounds):
        oracle.assert_within(got, exact, bound)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_backward_never_writes_into_dA(dtype):
    layer, X, dA = _layer_and_data("relu", dtype)
    layer.forward(X)
    kept = dA.copy()
    dX_writable = layer.backward(dA)
    oracle.assert_same_bits(dA, kept, why=oracle.UNTOUCHED)

    read_only = dA.copy()
    read_only.flags.writeable = False
    dX_read_only = layer.backward(read_only)          # accepted, not copied into
    oracle.assert_same_bits(dX_read_only, dX_writable, why=oracle.SAME_INPUT)
    # a strided (non-contiguous) dA gives the same result too: it is gathered into the same
    # contiguous block first
    strided = np.zeros((dA.shape[0], 2 * dA.shape[1]), dtype)
    strided[:, ::2] = dA
    oracle.assert_same_bits(layer.backward(strided[:, ::2]), dX_writable, why=oracle.SAME_INPUT)


def test_dense_accepts_read_only_and_strided_X():
    layer, X, _ = _layer_and_data("tanh", np.float64)
    expected = layer.forward(X)
    read_only = X.copy()
    read_only.flags.writeable = False
    oracle.assert_same_bits(layer.forward(read_only), expected, why=oracle.SAME_INPUT)
    wide = np.zeros((X.shape[0], 2 * X.shape[1]))
    wide[:, 1::2] = X
    oracle.assert_same_bits(layer.forward(wide[:, 1::2]), expected, why=oracle.SAME_INPUT)
    oracle.assert_same_bits(layer.forward(X.tolist()), expected, why=oracle.SAME_INPUT)


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
    oracle.assert_same_bits(layer.forward([[1.0, 1.0]]), [[4.5, 5.5]], why=oracle.EXACT)
    assert repr(layer) == "Dense(2, 2, activation='identity', dtype=float32)"


def test_dense_seed_reproducible_and_no_global_state():
    np.random.seed(0)
    first = fusedmlp.Dense(20, 10, seed=3).W.copy()
    np.random.seed(1)
    oracle.assert_same_bits(fusedmlp.Dense(20, 10, seed=3).W, first, why=oracle.SAME_CALL)
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
    _, loss_bound, _, grad_bound = oracle.output_bound(scores, y, "softmax", dtype, weights)
    layer = fusedmlp.SoftmaxCrossEntropy()
    loss = layer.forward(scores, y, sample_weight=weights)
    oracle.assert_within(loss, expected_loss, loss_bound)
    grad = layer.backward()
    assert grad.dtype == dtype
    oracle.assert_within(grad, expected_grad, grad_bound)
    kept = grad.copy()
    grad[...] = 0                                      # a copy: the layer keeps its own
    oracle.assert_same_bits(layer.backward(), kept, why=oracle.COPY)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_mean_squared_error_layer(dtype, weighted):
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(5, 3)).astype(dtype)
    target = rng.normal(size=(5, 3)).astype(dtype)
    weights = rng.uniform(0.1, 2.0, 5) if weighted else None
    expected_loss, expected_grad = oracle.loss_and_output_gradient(
        pred.astype(np.float64), target, "identity", weights)
    _, loss_bound, _, grad_bound = oracle.output_bound(pred, target, "identity", dtype, weights)
    layer = fusedmlp.MeanSquaredError()
    oracle.assert_within(layer.forward(pred, target, sample_weight=weights), expected_loss,
                         loss_bound)
    oracle.assert_within(layer.backward(), expected_grad, grad_bound)
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
