"""The pure-NumPy reference MLP (fusedmlp.reference) computes what fusedmlp computes.

The benchmarks compare fusedmlp's speed with this reference, so the comparison is only fair
if both do the same work: same losses, same gradients, same optimiser updates. Checked here in
float64 with tight tolerances, plus a finite-difference check of the reference's own
gradients so that agreement with fusedmlp is not agreement on a shared mistake.
"""

import numpy as np
import pytest

import fusedmlp
from fusedmlp.reference import NumpyAdam, NumpyMLP, NumpySGD

RTOL, ATOL = 1e-10, 1e-12
ACTIVATIONS = ["relu", "sigmoid", "tanh", "leaky_relu", "elu", "softplus"]


def make_batch(n_in, n_out, m, output, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, n_in))
    if output == "softmax":
        y = rng.integers(0, n_out, size=m)
    else:
        y = rng.normal(size=(m, n_out))
    return X, y


def assert_grads_close(actual, expected, rtol=RTOL, atol=ATOL):
    assert len(actual) == len(expected)
    for (dW, db), (dW_ref, db_ref) in zip(actual, expected):
        np.testing.assert_allclose(dW, dW_ref, rtol=rtol, atol=atol)
        np.testing.assert_allclose(db, db_ref, rtol=rtol, atol=atol)


def assert_params_close(reference, model, rtol=RTOL, atol=ATOL):
    for (W, b), layer in zip(reference.params, model.layers):
        np.testing.assert_allclose(W, layer.W, rtol=rtol, atol=atol)
        np.testing.assert_allclose(b, layer.b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output", ["softmax", "identity"])
@pytest.mark.parametrize("sizes", [[5, 3], [5, 8, 3], [6, 9, 7, 4]])
def test_loss_and_gradients_match_fusedmlp(activation, output, sizes):
    model = fusedmlp.MLP(sizes, activation=activation, output=output, dtype=np.float64, seed=1)
    reference = NumpyMLP.from_model(model)
    X, y = make_batch(sizes[0], sizes[-1], 11, output)
    loss, grads = model.loss_and_gradients(X, y)
    loss_ref, grads_ref = reference.loss_and_gradients(X, y)
    assert loss_ref == pytest.approx(loss, rel=RTOL)
    assert_grads_close(grads_ref, grads)


def test_per_layer_activations_and_target_probabilities():
    model = fusedmlp.MLP([4, 6, 5, 3], activation=["tanh", "relu"], dtype=np.float64, seed=2)
    reference = NumpyMLP.from_model(model)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(7, 4))
    targets = rng.dirichlet(np.ones(3), size=7)
    loss, grads = model.loss_and_gradients(X, targets)
    loss_ref, grads_ref = reference.loss_and_gradients(X, targets)
    assert loss_ref == pytest.approx(loss, rel=RTOL)
    assert_grads_close(grads_ref, grads)


def test_loss_is_the_batch_mean_from_logits():
    # Independent of fusedmlp: the formulas written out for one small batch.
    reference = NumpyMLP([3, 4], dtype=np.float64, seed=0)
    X = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    y = np.array([3, 0])
    W, b = reference.params[0]
    z = X @ W + b
    expected = np.mean([np.log(np.exp(z[i]).sum()) - z[i, y[i]] for i in range(2)])
    loss, _ = reference.loss_and_gradients(X, y)
    assert loss == pytest.approx(expected, rel=1e-13)

    regressor = NumpyMLP([3, 2], output="identity", dtype=np.float64, seed=0)
    targets = np.array([[1.0, 2.0], [3.0, -4.0]])
    W, b = regressor.params[0]
    loss, _ = regressor.loss_and_gradients(X, targets)
    assert loss == pytest.approx(((X @ W + b - targets) ** 2).mean(), rel=1e-13)


def test_huge_logits_give_a_finite_loss():
    reference = NumpyMLP([2, 3], dtype=np.float64, seed=0)
    reference.params[0][0][...] = [[1e30, 0.0, -1e30], [0.0, 0.0, 0.0]]
    loss, grads = reference.loss_and_gradients([[1.0, 0.0]], [0])
    assert loss == 0.0
    assert all(np.isfinite(g).all() for pair in grads for g in pair)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output", ["softmax", "identity"])
def test_gradients_match_finite_differences(activation, output):
    reference = NumpyMLP([4, 5, 3], activation=activation, output=output, dtype=np.float64,
                         seed=4)
    X, y = make_batch(4, 3, 6, output, seed=5)
    if activation == "relu" or activation == "leaky_relu":
        X = X + 0.1          # keep pre-activations away from the kink
    _, grads = reference.loss_and_gradients(X, y)
    grads = [(dW.copy(), db.copy()) for dW, db in grads]
    h = 1e-6
    for (W, b), (dW, db) in zip(reference.params, grads):
        for param, grad in ((W, dW), (b, db)):
            numeric = np.zeros_like(param)
            for index in np.ndindex(param.shape):
                saved = param[index]
                param[index] = saved + h
                up, _ = reference.loss_and_gradients(X, y)
                param[index] = saved - h
                down, _ = reference.loss_and_gradients(X, y)
                param[index] = saved
                numeric[index] = (up - down) / (2 * h)
            np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("make_pair", [
    lambda: (fusedmlp.SGD(0.1), NumpySGD(0.1)),
    lambda: (fusedmlp.SGD(0.05, momentum=0.9), NumpySGD(0.05, momentum=0.9)),
    lambda: (fusedmlp.SGD(0.05, momentum=0.5, weight_decay=0.01),
             NumpySGD(0.05, momentum=0.5, weight_decay=0.01)),
    lambda: (fusedmlp.Adam(0.01), NumpyAdam(0.01)),
    lambda: (fusedmlp.Adam(0.02, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.03),
             NumpyAdam(0.02, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.03)),
], ids=["sgd", "momentum", "momentum-decay", "adam", "adam-options"])
@pytest.mark.parametrize("output", ["softmax", "identity"])
def test_train_steps_match_fusedmlp(make_pair, output):
    optimizer, optimizer_ref = make_pair()
    model = fusedmlp.MLP([6, 10, 8, 3], activation="tanh", output=output, dtype=np.float64,
                         seed=6)
    reference = NumpyMLP.from_model(model)
    for step in range(5):
        X, y = make_batch(6, 3, 9, output, seed=10 + step)
        loss = model.train_step(X, y, optimizer)
        loss_ref = reference.train_step(X, y, optimizer_ref)
        assert loss_ref == pytest.approx(loss, rel=RTOL)
    assert_params_close(reference, model)


def test_steps_then_inference_match_fusedmlp():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(40, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    model = fusedmlp.MLP([5, 8, 2], dtype=np.float64, seed=8)
    reference = NumpyMLP.from_model(model)
    optimizer, optimizer_ref = fusedmlp.SGD(0.1, momentum=0.9), NumpySGD(0.1, momentum=0.9)
    order = np.random.default_rng(9).permutation(40)
    for start in range(0, 40, 8):
        batch = order[start:start + 8]
        model.train_step(X[batch], y[batch], optimizer)
    for start in range(0, 40, 8):
        batch = order[start:start + 8]
        reference.train_step(X[batch], y[batch], optimizer_ref)
    assert_params_close(reference, model)
    np.testing.assert_allclose(reference.forward(X), model.forward(X), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(reference.predict_proba(X), model.predict_proba(X),
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(reference.predict(X), model.predict(X))


def test_fit_learns_and_reports_epoch_losses():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    reference = NumpyMLP([4, 16, 2], seed=0)
    losses = reference.fit(X, y, epochs=15, batch_size=20, optimizer=NumpyAdam(0.01), seed=0)
    assert len(losses) == 15 and losses[-1] < 0.5 * losses[0]
    assert (reference.predict(X) == y).mean() > 0.9


@pytest.mark.parametrize("optimizer", [NumpySGD(0.1, momentum=0.9), NumpyAdam(0.01)],
                         ids=["sgd", "adam"])
def test_float32_stays_float32(optimizer):
    model = fusedmlp.MLP([5, 7, 3], activation="sigmoid", dtype=np.float32, seed=1)
    reference = NumpyMLP.from_model(model)
    X, y = make_batch(5, 3, 8, "softmax")
    loss, grads = reference.loss_and_gradients(X, y)
    loss_32, grads_32 = model.loss_and_gradients(X, y)
    assert all(g.dtype == np.float32 for pair in grads for g in pair)
    assert_grads_close(grads, grads_32, rtol=1e-4, atol=1e-6)
    for _ in range(3):
        reference.train_step(X, y, optimizer)
    assert all(p.dtype == np.float32 for pair in reference.params for p in pair)
    assert reference.forward(X).dtype == np.float32
    assert reference.predict_proba(X).dtype == np.float32


def test_from_model_copies_the_weights():
    model = fusedmlp.MLP([3, 4, 2], activation="elu", output="identity", dtype=np.float64,
                         seed=0)
    reference = NumpyMLP.from_model(model)
    assert reference.layer_sizes == (3, 4, 2)
    assert reference.activations == ["elu"] and reference.output == "identity"
    assert reference.dtype == np.float64
    reference.params[0][0][...] = 0.0
    assert np.any(model.layers[0].W != 0)


def test_refuses_bad_configuration():
    with pytest.raises(ValueError, match="activation"):
        NumpyMLP([3, 4, 2], activation="swish")
    with pytest.raises(ValueError, match="output"):
        NumpyMLP([3, 2], output="sigmoid")
    with pytest.raises(ValueError, match="dtype"):
        NumpyMLP([3, 2], dtype=np.float16)
    with pytest.raises(ValueError, match="X must have shape"):
        NumpyMLP([3, 2]).forward(np.ones((2, 4)))
