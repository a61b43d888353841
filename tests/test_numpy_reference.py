"""The pure-NumPy reference MLP (fusedmlp.reference) computes what fusedmlp computes.

The benchmarks compare fusedmlp's speed with this reference, so the comparison is only fair
if both do the same work: same losses, same gradients, same optimiser updates, plus a
finite-difference check of the reference's own gradients so that agreement with fusedmlp is
not agreement on a shared mistake.

Exactness: the reference (NumPy's BLAS) and fusedmlp (its own BLAS instance and kernels) add
in different orders, so they are compared within the rounding bounds derived in
tests/oracle.py (loss_and_gradients_bound, forward_bound, update_bound), never bit for bit;
a training run is compared step by step, each step from the model's parameters (the
reference's optimiser keeps its own state, which update_bound's earlier-step terms cover).
"""

import numpy as np
import pytest

import fusedmlp
from fusedmlp.reference import NumpyAdam, NumpyMLP, NumpySGD

import oracle

ACTIVATIONS = ["relu", "sigmoid", "tanh", "leaky_relu", "elu", "softplus"]


def make_batch(n_in, n_out, m, output, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, n_in))
    if output == "softmax":
        y = rng.integers(0, n_out, size=m)
    else:
        y = rng.normal(size=(m, n_out))
    return X, y


def assert_matches_model(model, reference, X, y, dtype=np.float64):
    """The reference's loss and gradients and fusedmlp's, at the model's parameters, each
    within the bound derived for them (oracle.loss_and_gradients_bound)."""
    _, loss_bound, _, bounds = oracle.loss_and_gradients_bound(
        oracle.parameters_of(model), oracle.activations_of(model), model.output,
        np.asarray(X, dtype), y, dtype)
    loss, grads = model.loss_and_gradients(X, y)
    loss_ref, grads_ref = reference.loss_and_gradients(X, y)
    oracle.assert_within(loss_ref, loss, loss_bound)
    assert len(grads) == len(grads_ref)
    for (dW, db), (dW_ref, db_ref), (bW, bb) in zip(grads, grads_ref, bounds):
        oracle.assert_within(dW_ref, dW, bW)
        oracle.assert_within(db_ref, db, bb)
    return grads


def continue_from(reference, model):
    """Give the reference the model's parameters (in place: its layers hold the arrays)."""
    for (W, b), layer in zip(reference.params, model.layers):
        W[...] = layer.W
        b[...] = layer.b


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output", ["softmax", "identity"])
@pytest.mark.parametrize("sizes", [[5, 3], [5, 8, 3], [6, 9, 7, 4]])
def test_loss_and_gradients_match_fusedmlp(activation, output, sizes):
    model = fusedmlp.MLP(sizes, activation=activation, output=output, dtype=np.float64, seed=1)
    reference = NumpyMLP.from_model(model)
    X, y = make_batch(sizes[0], sizes[-1], 11, output)
    assert_matches_model(model, reference, X, y)


def test_per_layer_activations_and_target_probabilities():
    model = fusedmlp.MLP([4, 6, 5, 3], activation=["tanh", "relu"], dtype=np.float64, seed=2)
    reference = NumpyMLP.from_model(model)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(7, 4))
    targets = rng.dirichlet(np.ones(3), size=7)
    assert_matches_model(model, reference, X, targets)


def test_loss_is_the_batch_mean_from_logits():
    # Independent of fusedmlp: the formulas written out for one small batch (another order
    # of the same float64 sums: within oracle.output_bound of the loss of the same scores).
    reference = NumpyMLP([3, 4], dtype=np.float64, seed=0)
    X = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    y = np.array([3, 0])
    W, b = reference.params[0]
    z = X @ W + b
    expected = np.mean([np.log(np.exp(z[i]).sum()) - z[i, y[i]] for i in range(2)])
    loss, _ = reference.loss_and_gradients(X, y)
    _, _, score_bound, _ = oracle.forward_bound([(W, b)], ["identity"], X, np.float64)
    _, loss_bound, _, _ = oracle.output_bound(z, y, "softmax", np.float64,
                                              score_bound=score_bound[0])
    oracle.assert_within(loss, expected, loss_bound)

    regressor = NumpyMLP([3, 2], output="identity", dtype=np.float64, seed=0)
    targets = np.array([[1.0, 2.0], [3.0, -4.0]])
    W, b = regressor.params[0]
    loss, _ = regressor.loss_and_gradients(X, targets)
    _, _, score_bound, _ = oracle.forward_bound([(W, b)], ["identity"], X, np.float64)
    _, loss_bound, _, _ = oracle.output_bound(X @ W + b, targets, "identity", np.float64,
                                              score_bound=score_bound[0])
    oracle.assert_within(loss, ((X @ W + b - targets) ** 2).mean(), loss_bound)


def test_huge_logits_give_a_finite_loss():
    reference = NumpyMLP([2, 3], dtype=np.float64, seed=0)
    reference.params[0][0][...] = [[1e30, 0.0, -1e30], [0.0, 0.0, 0.0]]
    loss, grads = reference.loss_and_gradients([[1.0, 0.0]], [0])
    assert loss == 0.0               # log(1 + e^-1e30 + e^-2e30) is 0 in float64: exact
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


PAIRS = {
    "sgd": lambda: (fusedmlp.SGD(0.1), NumpySGD(0.1),
                    lambda: oracle.ReferenceOptimizer("sgd", 0.1)),
    "momentum": lambda: (fusedmlp.SGD(0.05, momentum=0.9), NumpySGD(0.05, momentum=0.9),
                         lambda: oracle.ReferenceOptimizer("sgd", 0.05, momentum=0.9)),
    "momentum-decay": lambda: (
        fusedmlp.SGD(0.05, momentum=0.5, weight_decay=0.01),
        NumpySGD(0.05, momentum=0.5, weight_decay=0.01),
        lambda: oracle.ReferenceOptimizer("sgd", 0.05, momentum=0.5, weight_decay=0.01)),
    "adam": lambda: (fusedmlp.Adam(0.01), NumpyAdam(0.01),
                     lambda: oracle.ReferenceOptimizer("adam", 0.01)),
    "adam-options": lambda: (
        fusedmlp.Adam(0.02, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.03),
        NumpyAdam(0.02, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.03),
        lambda: oracle.ReferenceOptimizer("adam", 0.02, beta1=0.8, beta2=0.99, eps=1e-6,
                                          weight_decay=0.03)),
}


def steps_match(model, reference, make_pair, batches):
    """Train both on ``batches``, one step at a time: each step's loss and gradients within
    their bounds at the model's parameters, then the reference optimiser's update of those
    parameters with the model's gradients within oracle.update_bound of fusedmlp's step."""
    optimizer, optimizer_ref, make_bound = make_pair()
    grads_so_far = []
    for X, y in batches:
        continue_from(reference, model)
        params = oracle.parameters_of(model)
        grads = [(dW.astype(np.float64), db.astype(np.float64))
                 for dW, db in assert_matches_model(model, reference, X, y)]
        grads_so_far.append(grads)
        model.train_step(X, y, optimizer)
        optimizer_ref.update(reference.params, grads)
        bounds = oracle.update_bound(make_bound, params, grads_so_far, np.float64)
        for (W, b), layer, (bW, bb) in zip(reference.params, model.layers, bounds):
            oracle.assert_within(layer.W, W, bW)
            oracle.assert_within(layer.b, b, bb)


@pytest.mark.parametrize("pair", sorted(PAIRS))
@pytest.mark.parametrize("output", ["softmax", "identity"])
def test_train_steps_match_fusedmlp(pair, output):
    model = fusedmlp.MLP([6, 10, 8, 3], activation="tanh", output=output, dtype=np.float64,
                         seed=6)
    reference = NumpyMLP.from_model(model)
    steps_match(model, reference, PAIRS[pair],
                [make_batch(6, 3, 9, output, seed=10 + step) for step in range(5)])


def test_reference_train_step_is_its_loss_and_gradients_then_the_update():
    reference = NumpyMLP([6, 10, 3], activation="tanh", dtype=np.float64, seed=6)
    twin = NumpyMLP([6, 10, 3], activation="tanh", dtype=np.float64, seed=6)
    optimizer, optimizer_twin = NumpyAdam(0.01), NumpyAdam(0.01)
    for step in range(3):
        X, y = make_batch(6, 3, 9, "softmax", seed=step)
        loss = reference.train_step(X, y, optimizer)
        loss_twin, grads = twin.loss_and_gradients(X, y)
        optimizer_twin.update(twin.params, grads)
        oracle.assert_same_bits(loss, loss_twin, why=oracle.SAME_CALL)
        for (W, b), (W_twin, b_twin) in zip(reference.params, twin.params):
            oracle.assert_same_bits(W, W_twin, why=oracle.SAME_CALL)
            oracle.assert_same_bits(b, b_twin, why=oracle.SAME_CALL)


def test_steps_then_inference_match_fusedmlp():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(40, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    model = fusedmlp.MLP([5, 8, 2], dtype=np.float64, seed=8)
    reference = NumpyMLP.from_model(model)
    order = np.random.default_rng(9).permutation(40)
    steps_match(model, reference, PAIRS["momentum"],
                [(X[order[start:start + 8]], y[order[start:start + 8]])
                 for start in range(0, 40, 8)])
    continue_from(reference, model)
    params, activations = oracle.parameters_of(model), oracle.activations_of(model)
    _, outputs, _, bounds = oracle.forward_bound(params, activations, X, np.float64)
    scores = model.forward(X)
    oracle.assert_within(reference.forward(X), scores, bounds[-1])
    proba, proba_bound, _, _ = oracle.softmax_bound(scores, bounds[-1], np.float64)
    oracle.assert_within(reference.predict_proba(X), model.predict_proba(X), proba_bound)
    oracle.assert_labels_agree(reference.predict(X), model.predict(X), scores, bounds[-1])


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
    _, grads = reference.loss_and_gradients(X, y)
    assert all(g.dtype == np.float32 for pair in grads for g in pair)
    assert_matches_model(model, reference, X, y, np.float32)
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
