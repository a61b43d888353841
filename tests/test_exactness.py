"""The comparisons the other tests rely on (tests/oracle.py): the derived rounding bounds hold
for fusedmlp's results and are tight enough to catch a small error, and a bit-identity claim
must say why it holds (docs/platforms.md, "Exactness claims and forced variants")."""

import copy

import numpy as np
import pytest

import fusedmlp

import oracle

DTYPES = [np.float32, np.float64]
#: Relative changes of the first layer's weights that the bounds must catch, at the sizes
#: below: the forward's bound is about 1e-4 (float32) and 1e-12 (float64) of the largest
#: output, the gradients' (which add the backward's chain and the batch) about 5e-3 and 1e-10.
NUDGE = {np.float32: 1e-3, np.float64: 1e-11}
GRADIENT_NUDGE = {np.float32: 3e-2, np.float64: 1e-8}


def _model(dtype, activation="tanh", output="softmax", sizes=(12, 16, 12, 4)):
    model = fusedmlp.MLP(list(sizes), activation=activation, output=output, dtype=dtype, seed=0)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        layer.b = 0.3 * rng.normal(size=layer.b.shape)
    X = rng.normal(size=(20, sizes[0])).astype(dtype)
    return model, X


def _nudged(model, by):
    """A copy of the model whose first layer's weights are scaled by 1 + by."""
    twin = copy.deepcopy(model)
    twin.layers[0].W = twin.layers[0].W * (1 + by)
    return twin


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "elu", "step"])
def test_forward_bound_holds_and_catches_a_nudged_weight(dtype, activation):
    model, X = _model(dtype, activation)
    params, acts = oracle.parameters_of(model), oracle.activations_of(model)
    _, outputs, _, bounds = oracle.forward_bound(params, acts, X, dtype)
    oracle.assert_within(model.forward(X), outputs[-1], bounds[-1])
    if activation != "step":            # step's outputs do not move with a weight
        with pytest.raises(AssertionError, match="outside the rounding bound"):
            oracle.assert_within(_nudged(model, NUDGE[dtype]).forward(X), outputs[-1], bounds[-1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output", ["softmax", "identity", "sigmoid", "exp"])
def test_gradient_bound_holds_and_catches_a_nudged_weight(dtype, output):
    model, X = _model(dtype, "tanh", output)
    rng = np.random.default_rng(2)
    m, n = len(X), model.layers[-1].W.shape[1]
    y = {"softmax": rng.integers(0, n, m), "identity": rng.normal(size=(m, n)),
         "sigmoid": (rng.random((m, n)) < 0.5) * 1.0,
         "exp": rng.poisson(1.0, (m, n)) * 1.0}[output]
    y = y if output == "softmax" else y.astype(dtype)
    params, acts = oracle.parameters_of(model), oracle.activations_of(model)
    loss, loss_bound, grads, bounds = oracle.loss_and_gradients_bound(params, acts, output, X,
                                                                      y, dtype)
    for candidate, holds in ((model, True), (_nudged(model, GRADIENT_NUDGE[dtype]), False)):
        got_loss, got = candidate.loss_and_gradients(X, y)
        try:
            oracle.assert_within(got_loss, loss, loss_bound)
            for (dW, db), (eW, eb), (bW, bb) in zip(got, grads, bounds):
                oracle.assert_within(dW, eW, bW)
                oracle.assert_within(db, eb, bb)
        except AssertionError:
            assert not holds, "the bound does not hold for the model itself"
        else:
            assert holds, "a nudged weight stays within the bound"


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_bound_and_labels(dtype):
    model, X = _model(dtype)
    params, acts = oracle.parameters_of(model), oracle.activations_of(model)
    _, outputs, _, bounds = oracle.forward_bound(params, acts, X, dtype)
    proba, proba_bound, log_proba, log_bound = oracle.softmax_bound(outputs[-1], bounds[-1],
                                                                    dtype)
    oracle.assert_within(model.predict_proba(X), proba, proba_bound)
    oracle.assert_within(model.predict_log_proba(X), log_proba, log_bound)
    labels = model.predict(X)
    oracle.assert_labels_agree(labels, np.argmax(proba, axis=1), outputs[-1], bounds[-1])
    wrong = labels.copy()
    wrong[np.argmax(np.ptp(outputs[-1], axis=1))] += 1      # the most decided row
    with pytest.raises(AssertionError):
        oracle.assert_labels_agree(wrong, labels, outputs[-1], bounds[-1])


def test_a_vacuous_bound_is_refused():
    with pytest.raises(AssertionError, match="too loose"):
        oracle.assert_within([1.0, 2.0], [1.0, 2.0], 0.5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_same_bits_catches_one_ulp_and_needs_a_reason(dtype):
    a = np.linspace(-1, 1, 9).astype(dtype)
    oracle.assert_same_bits(a, a.copy(), why=oracle.COPY)
    b = a.copy()
    b[3] = np.nextafter(b[3], dtype(2))
    with pytest.raises(AssertionError, match="not the same bits, though a copy"):
        oracle.assert_same_bits(b, a, why=oracle.COPY)
    with pytest.raises(ValueError, match="why must be one of"):
        oracle.assert_same_bits(a, a, why="it passed here")


def test_rounding_tolerance_is_the_summation_bound():
    u = np.finfo(np.float32).eps / 2
    assert oracle.rounding_tolerance(np.float32, 10) == pytest.approx(2 * 10 * u / (1 - 10 * u))
    with pytest.raises(ValueError, match="too long a chain"):
        oracle.rounding_tolerance(np.float32, 2 ** 23)
