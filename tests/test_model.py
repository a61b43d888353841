"""The MLP: gradients against finite differences and the float64 reference, inference,
refused steps, workspace growth, zero allocation per training step, description.

Exactness: against the float64 reference within the rounding bounds derived from the sums'
lengths and terms (oracle.forward_bound, loss_and_gradients_bound); labels where the top two
scores are further apart than their bounds (oracle.assert_labels_agree); bit for bit only
for the same computation twice, copies, refused steps and another layout of the same input
(oracle.assert_same_bits says which). Finite differences are compared to their own method's
accuracy (truncation and cancellation of a central difference), not to a rounding bound."""

import tracemalloc

import numpy as np
import pytest

import fusedmlp

import oracle

HIDDEN_ACTIVATIONS = [a for a in oracle.ACTIVATION_NAMES if a not in ("identity", "step")]
TARGET_KINDS = ["labels", "probabilities", "regression", "multilabel", "poisson"]
_OUTPUT_OF = {"labels": "softmax", "probabilities": "softmax", "regression": "identity",
              "multilabel": "sigmoid", "poisson": "exp"}
DEPTHS = [1, 2, 4]
N_FEATURES, N_HIDDEN, N_OUT, BATCH = 4, 5, 3, 6


def _sizes(depth):
    return [N_FEATURES] + [N_HIDDEN] * depth + [N_OUT]


def _model(activation, kind, depth, dtype=np.float64, seed=0):
    model = fusedmlp.MLP(_sizes(depth), activation=activation, output=_OUTPUT_OF[kind], dtype=dtype,
                         seed=seed)
    # non-zero biases, so that every bias term matters in the comparisons
    rng = np.random.default_rng(seed + 100)
    for layer in model.layers:
        layer.b = 0.3 * rng.normal(size=layer.n_out)
    return model


def _data(kind, m=BATCH, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, N_FEATURES))
    if kind == "labels":
        y = rng.integers(0, N_OUT, m)
    elif kind == "probabilities":
        y = rng.dirichlet(np.ones(N_OUT), m)
    elif kind == "multilabel":
        y = (rng.random((m, N_OUT)) < 0.5).astype(float)
        y[0] = [0.25, 0.5, 1.0]                    # soft targets are allowed too
    elif kind == "poisson":
        y = rng.poisson(1.5, size=(m, N_OUT)).astype(float)
    else:
        y = rng.normal(size=(m, N_OUT))
    return X, y


def _numerical_gradients(model, X, y, sample_weight, eps=1e-6):
    """Central differences of the model's own loss, one parameter at a time (float64)."""
    def loss():
        return model.loss_and_gradients(X, y, sample_weight=sample_weight)[0]

    grads = []
    for layer in model.layers:
        pair = []
        for param in (layer.W, layer.b):         # views into the model's parameters
            pair.append(oracle.central_differences(loss, param, eps))
        grads.append(pair)
    return grads


def _relative_error(analytic, numeric):
    a, n = np.concatenate([g.ravel() for g in analytic]), np.concatenate([g.ravel() for g in numeric])
    scale = np.linalg.norm(a) + np.linalg.norm(n)
    return np.linalg.norm(a - n) / scale if scale > 0 else 0.0


def _kinks_nearby(model, X, eps=1e-4):
    """True when a pre-activation lies within eps of a kink (relu-like at 0): central
    differences are not valid there."""
    zs, _ = oracle.forward(oracle.parameters_of(model), oracle.activations_of(model), X)
    return any(np.any(np.abs(z) < eps) for z in zs[:-1])


# --------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("kind", TARGET_KINDS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_gradients_match_finite_differences(activation, kind, depth, weighted):
    model = _model(activation, kind, depth)
    X, y = _data(kind)
    assert not _kinks_nearby(model, X)
    weights = np.random.default_rng(2).uniform(0.2, 3.0, BATCH) if weighted else None
    params_before = model.get_params_vector()
    loss, grads = model.loss_and_gradients(X, y, sample_weight=weights)
    oracle.assert_same_bits(model.get_params_vector(), params_before, why=oracle.UNTOUCHED)
    numeric = _numerical_gradients(model, X, y, weights)
    assert loss > 0
    for layer_index, ((dW, db), (nW, nb)) in enumerate(zip(grads, numeric)):
        assert dW.shape == model.layers[layer_index].W.shape
        error = _relative_error([dW, db], [nW, nb])
        assert error < 1e-6, f"layer {layer_index}: relative error {error:.2e}"
    # and the loss itself is the documented one
    expected_loss, loss_bound, _, _ = oracle.loss_and_gradients_bound(
        oracle.parameters_of(model), oracle.activations_of(model), model.output, X, y,
        np.float64, weights)
    oracle.assert_within(loss, expected_loss, loss_bound)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_step_activation_blocks_gradients_below_it(kind, depth):
    model = _model("step", kind, depth)
    X, y = _data(kind)
    loss, grads = model.loss_and_gradients(X, y)
    for dW, db in grads[:-1]:
        assert not dW.any() and not db.any()
    numeric = _numerical_gradients(model, X, y, None)
    assert _relative_error(grads[-1], numeric[-1]) < 1e-6
    for nW, nb in numeric[:-1]:          # the loss is locally flat in the layers below
        assert np.abs(nW).max() < 1e-9 and np.abs(nb).max() < 1e-9


def test_per_layer_activations_gradients():
    model = fusedmlp.MLP([4, 6, 5, 3], activation=["tanh", "softplus"], dtype=np.float64, seed=3)
    assert model.activations == ["tanh", "softplus"]
    X, y = _data("labels")
    _, grads = model.loss_and_gradients(X, y)
    numeric = _numerical_gradients(model, X, y, None)
    for analytic, num in zip(grads, numeric):
        assert _relative_error(analytic, num) < 1e-6


def test_gradients_with_one_output_regression_and_1d_targets():
    model = fusedmlp.MLP([4, 5, 1], activation="tanh", output="identity", dtype=np.float64, seed=0)
    X, _ = _data("regression")
    y = np.random.default_rng(5).normal(size=BATCH)
    loss, grads = model.loss_and_gradients(X, y)
    _assert_loss_and_gradients(loss, grads, model, X, y, np.float64)


def test_gradient_check_small_for_a_correct_model():
    for dtype in (np.float32, np.float64):
        model = fusedmlp.MLP([4, 5, 3], activation="tanh", dtype=dtype, seed=0)
        X, y = _data("labels")
        params = model.get_params_vector()
        errors = fusedmlp.gradient_check(model, X, y)
        assert len(errors) == 2 and max(errors) < 1e-6
        oracle.assert_same_bits(model.get_params_vector(), params, why=oracle.UNTOUCHED)
    sampled = fusedmlp.gradient_check(model, X, y, max_checks_per_layer=3)
    assert max(sampled) < 1e-6


def test_gradient_check_detects_a_wrong_gradient(monkeypatch):
    model = fusedmlp.MLP([4, 5, 3], activation="tanh", dtype=np.float64, seed=0)
    X, y = _data("labels")
    correct = fusedmlp.MLP.loss_and_gradients

    def slightly_wrong(self, *args, **kwargs):
        loss, grads = correct(self, *args, **kwargs)
        dW, db = grads[0]
        grads[0] = (dW * 1.01, db)          # 1% off in the first layer's weights only
        return loss, grads

    monkeypatch.setattr(fusedmlp.MLP, "loss_and_gradients", slightly_wrong)
    errors = fusedmlp.gradient_check(model, X, y)
    assert errors[0] > 1e-3
    assert errors[1] < 1e-6


# --------------------------------------------------------------------------- reference
def _assert_loss_and_gradients(loss, grads, model, X, y, dtype, sample_weight=None):
    """The loss and every gradient within their rounding bounds of the float64 reference
    (X and y as the model sees them)."""
    expected_loss, loss_bound, expected, bounds = oracle.loss_and_gradients_bound(
        oracle.parameters_of(model), oracle.activations_of(model), model.output, X, y, dtype,
        sample_weight)
    oracle.assert_within(loss, expected_loss, loss_bound)
    for (dW, db), (eW, eb), (bW, bb) in zip(grads, expected, bounds):
        assert dW.dtype == dtype and db.dtype == dtype
        oracle.assert_within(dW, eW, bW)
        oracle.assert_within(db, eb, bb)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", TARGET_KINDS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS + ["step"])
def test_forward_and_gradients_match_reference(activation, kind, dtype):
    model = _model(activation, kind, depth=2, dtype=dtype)
    model = model if kind != "regression" else model
    X, y = _data(kind, m=9)
    params, activations = oracle.parameters_of(model), oracle.activations_of(model)
    # the reference sees exactly the values the model sees
    X_cast = X.astype(dtype)
    y_cast = y.astype(dtype) if kind != "labels" else y
    _, outputs, _, bounds = oracle.forward_bound(params, activations, X_cast, dtype)

    scores = model.forward(X)
    assert scores.dtype == dtype and scores.shape == (9, N_OUT)
    oracle.assert_within(scores, outputs[-1], bounds[-1])

    loss, grads = model.loss_and_gradients(X, y)
    _assert_loss_and_gradients(loss, grads, model, X_cast, y_cast, dtype)
    # the layers hold the same gradients
    for layer, (dW, db) in zip(model.layers, grads):
        oracle.assert_same_bits(layer.dW, dW, why=oracle.COPY)
        oracle.assert_same_bits(layer.db, db, why=oracle.COPY)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sample_weights_match_reference_and_integer_weights_repeat_rows(dtype):
    model = _model("relu", "labels", depth=2, dtype=dtype)
    X, y = _data("labels", m=5)
    counts = np.array([1, 3, 0, 2, 1])
    # two batches of different sizes (other products), both within their bounds of the same
    # exact loss and gradients: the reference's weighted mean and its mean over repeated rows
    X_cast = X.astype(dtype)
    loss, grads = model.loss_and_gradients(X, y, sample_weight=counts)
    _assert_loss_and_gradients(loss, grads, model, X_cast, y, dtype, sample_weight=counts)
    X_rep, y_rep = np.repeat(X, counts, axis=0), np.repeat(y, counts)
    repeated_loss, repeated = model.loss_and_gradients(X_rep, y_rep)
    _assert_loss_and_gradients(repeated_loss, repeated, model, X_rep.astype(dtype), y_rep, dtype)


# --------------------------------------------------------------------------- inference
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predict_proba_log_proba_predict_score(dtype):
    model = fusedmlp.MLP([4, 8, 5], activation="tanh", dtype=dtype, seed=0)
    rng = np.random.default_rng(0)
    # more rows than one inference chunk (256), so the chunking is exercised
    X = rng.normal(size=(600, 4))
    _, outputs, _, bounds = oracle.forward_bound(oracle.parameters_of(model),
                                                 oracle.activations_of(model), X.astype(dtype),
                                                 dtype)
    scores = outputs[-1]
    expected, proba_bound, log_expected, log_bound = oracle.softmax_bound(scores, bounds[-1],
                                                                          dtype)
    proba = model.predict_proba(X)
    assert proba.dtype == dtype and proba.shape == (600, 5)
    oracle.assert_within(proba, expected, proba_bound)
    oracle.assert_within(proba.sum(axis=1, dtype=np.float64), np.ones(600),
                         proba_bound.sum(axis=1) + oracle.rounding_tolerance(dtype, 5))
    log_proba = model.predict_log_proba(X)
    oracle.assert_within(log_proba, log_expected, log_bound)
    predicted = model.predict(X)
    assert predicted.shape == (600,) and predicted.dtype.kind == "i"
    oracle.assert_labels_agree(predicted, np.argmax(scores, axis=1), scores, bounds[-1])
    confident = oracle.determined_rows(scores, bounds[-1])
    y = np.argmax(scores, axis=1)
    y[:150] = (y[:150] + 1) % 5                   # exactly a quarter wrong
    assert model.score(X, y) == pytest.approx(np.mean(predicted == y))
    assert model.score(X[confident], y[confident]) == pytest.approx(
        np.mean(np.argmax(scores, axis=1)[confident] == y[confident]))
    assert model.score(X, np.eye(5)[y]) == model.score(X, y)    # one-hot y is accepted


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_sigmoid_output_inference_loss_and_score(dtype, n_outputs):
    model = fusedmlp.MLP([4, 8, n_outputs], activation="tanh", output="sigmoid", dtype=dtype,
                         seed=0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 4))
    params, activations = oracle.parameters_of(model), oracle.activations_of(model)
    _, outputs, _, bounds = oracle.forward_bound(params, activations, X.astype(dtype), dtype)
    scores, score_bound = outputs[-1], bounds[-1]
    proba = model.predict_proba(X)
    assert proba.dtype == dtype and proba.shape == (600, n_outputs)
    # the logistic's slope is at most 1/4, log-sigmoid's at most 1; plus their own rounding
    expected = oracle.sigmoid(scores)
    own = oracle.rounding_tolerance(dtype, 2 * oracle.ELEMENTWISE + 2)
    oracle.assert_within(proba, expected, score_bound / 4 + own * expected)
    log_expected = -np.logaddexp(0, -scores)
    oracle.assert_within(model.predict_log_proba(X), log_expected,
                         score_bound + own * (np.abs(log_expected) + np.abs(scores) + 1))
    predicted = model.predict(X)
    assert predicted.shape == ((600,) if n_outputs == 1 else (600, n_outputs))
    # predict thresholds the probabilities predict_proba computes (the same call's values)
    np.testing.assert_array_equal(predicted, (proba > 0.5).astype(int).reshape(predicted.shape))
    Y = (rng.random((600, n_outputs)) < 0.5).astype(int)
    assert model.score(X, Y) == pytest.approx(np.mean(np.all((proba > 0.5) == Y, axis=1)))
    expected, loss_bound, _, _ = oracle.loss_and_gradients_bound(
        params, activations, "sigmoid", X.astype(dtype), Y.astype(dtype), dtype)
    oracle.assert_within(model.loss(X, Y), expected, loss_bound)
    # extreme logits: log-probabilities stay finite, the loss is exact (no clipping)
    model.layers[-1].b[...] = 60.0
    log_proba = model.predict_log_proba(X[:4])
    assert np.all(np.isfinite(log_proba))
    params = oracle.parameters_of(model)
    expected, loss_bound, _, _ = oracle.loss_and_gradients_bound(
        params, activations, "sigmoid", X[:4].astype(dtype), np.zeros((4, n_outputs)), dtype)
    assert expected > 50                    # clipping the probabilities would cap it near 16
    oracle.assert_within(model.loss(X[:4], np.zeros((4, n_outputs))), expected, loss_bound)


def test_exp_output_predicts_the_mean_and_refuses_negative_targets():
    model = fusedmlp.MLP([4, 6, 2], output="exp", activation="relu", dtype=np.float64, seed=0)
    X = np.random.default_rng(0).normal(size=(30, 4))
    # the same scores (the same call twice), then fusedmlp's exp: within its few ulps
    oracle.assert_rounding_close(model.predict(X), np.exp(model.forward(X)), np.float64,
                                 oracle.ELEMENTWISE + 1, scale=0)
    with pytest.raises(AttributeError, match="regressor"):
        model.predict_proba(X)
    with pytest.raises(ValueError, match="negative targets"):
        model.train_step(X, -np.ones((30, 2)), fusedmlp.SGD(0.1))
    with pytest.raises(ValueError, match="negative targets"):
        model.fit(X, -np.ones((30, 2)), epochs=1)
    sigmoid = fusedmlp.MLP([4, 2], output="sigmoid", dtype=np.float64)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        sigmoid.train_step(X, np.full((30, 2), 1.5), fusedmlp.SGD(0.1))
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        sigmoid.loss(X, np.full((30, 2), -0.5))
    with pytest.raises(ValueError, match="y must have"):        # one column for two outputs
        sigmoid.train_step(X, np.ones((30, 1)), fusedmlp.SGD(0.1))


@pytest.mark.parametrize("output", ["sigmoid", "exp"])
def test_fit_reports_the_loss_and_accuracy_of_logistic_and_exp_outputs(output):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    if output == "sigmoid":
        Y = np.column_stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0]).astype(float)
    else:
        Y = rng.poisson(np.exp(0.5 * X[:, :2])).astype(float)
    model = fusedmlp.MLP([4, 16, 2], activation="tanh", output=output, dtype=np.float64, seed=0)
    history = model.fit(X[:200], Y[:200], epochs=30, batch_size=20, optimizer=fusedmlp.Adam(0.01),
                        validation_data=(X[200:], Y[200:]))
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_loss"][-1] == pytest.approx(model.loss(X[200:], Y[200:]), rel=1e-10)
    if output == "sigmoid":
        assert history["val_accuracy"][-1] == pytest.approx(model.score(X[200:], Y[200:]))
        assert history["accuracy"][-1] > 0.9
    else:
        assert "accuracy" not in history


def test_sigmoid_and_exp_models_save_and_load(tmp_path):
    for output in ("sigmoid", "exp"):
        model = fusedmlp.MLP([4, 5, 2], output=output, dtype=np.float64, seed=0)
        model.save(tmp_path / f"{output}.npz")
        loaded = fusedmlp.load(tmp_path / f"{output}.npz")
        X = np.random.default_rng(0).normal(size=(7, 4))
        assert loaded.output == output
        oracle.assert_same_bits(loaded.predict(X), model.predict(X), why=oracle.COPY)


def test_loss_method_matches_reference():
    model = _model("elu", "labels", depth=2)
    X, y = _data("labels", m=11)
    # the inference path and the training path (other products) each within the bound
    expected, loss_bound, _, _ = oracle.loss_and_gradients_bound(
        oracle.parameters_of(model), oracle.activations_of(model), "softmax", X, y, np.float64)
    oracle.assert_within(model.loss(X, y), expected, loss_bound)
    oracle.assert_within(model.loss_and_gradients(X, y)[0], expected, loss_bound)


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_regression_predict_and_score(n_outputs):
    model = fusedmlp.MLP([4, 6, n_outputs], output="identity", activation="relu",
                         dtype=np.float64, seed=0)
    X = np.random.default_rng(0).normal(size=(20, 4))
    _, outputs, _, bounds = oracle.forward_bound(oracle.parameters_of(model),
                                                 oracle.activations_of(model), X, np.float64)
    predicted = model.predict(X)
    expected_shape = (20,) if n_outputs == 1 else (20, n_outputs)
    assert predicted.shape == expected_shape
    oracle.assert_within(predicted, outputs[-1].reshape(expected_shape),
                         bounds[-1].reshape(expected_shape))
    y = outputs[-1] + np.random.default_rng(1).normal(size=outputs[-1].shape)
    y = y.reshape(expected_shape)
    residual = ((y - predicted) ** 2).sum()
    total = ((y - y.mean(axis=0)) ** 2).sum()
    # R^2 of the same predictions: the two sums of squares over y.size terms, then 1 - ratio
    oracle.assert_rounding_close(model.score(X, y), 1 - residual / total, np.float64,
                                 2 * y.size + 4, scale=1 + residual / total)
    for method in ("predict_proba", "predict_log_proba"):
        with pytest.raises(AttributeError, match="output='softmax'"):
            getattr(model, method)(X)


def test_inputs_any_real_array_like_cast_once():
    model = fusedmlp.MLP([3, 4, 2], dtype="float32", seed=0)
    X64 = np.random.default_rng(0).normal(size=(5, 3))
    expected = model.forward(X64.astype(np.float32))
    # every input is cast (once) into the same C-contiguous float32 block before any product
    same = oracle.SAME_INPUT
    oracle.assert_same_bits(model.forward(X64), expected, why=same)
    oracle.assert_same_bits(model.forward(X64.astype(np.float32).tolist()), expected, why=same)
    read_only = X64.astype(np.float32)
    read_only.flags.writeable = False
    oracle.assert_same_bits(model.forward(read_only), expected, why=same)
    fortran = np.asfortranarray(X64.astype(np.float32))
    oracle.assert_same_bits(model.forward(fortran), expected, why=same)
    strided = np.zeros((10, 3), np.float32)
    strided[::2] = X64
    oracle.assert_same_bits(model.forward(strided[::2]), expected, why=same)
    integers = np.arange(15).reshape(5, 3)
    oracle.assert_same_bits(model.forward(integers), model.forward(integers.astype(np.float32)),
                            why=same)
    assert model.forward(np.empty((0, 3))).shape == (0, 2)


def test_inference_refusals():
    model = fusedmlp.MLP([3, 4, 2], seed=0)
    with pytest.raises(ValueError, match="X must have 3 columns"):
        model.predict(np.ones((2, 4)))
    with pytest.raises(ValueError, match="X must be 2-D"):
        model.predict(np.ones(3))
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.predict([[1.0, np.inf, 0.0]])
    with pytest.raises(TypeError):
        model.predict(np.ones((2, 3), np.float16))
    with pytest.raises(TypeError):
        model.predict([["a", "b", "c"]])


def test_constructor_refusals():
    with pytest.raises(ValueError, match="at least an input and an output"):
        fusedmlp.MLP([3])
    with pytest.raises(TypeError, match="layer_sizes"):
        fusedmlp.MLP([3, 2.5, 2])
    with pytest.raises(ValueError, match="layer_sizes entry must be >= 1"):
        fusedmlp.MLP([3, 0, 2])
    with pytest.raises(ValueError, match="one per hidden layer"):
        fusedmlp.MLP([3, 4, 4, 2], activation=["relu"])
    with pytest.raises(ValueError, match="activation must be one of"):
        fusedmlp.MLP([3, 4, 2], activation="gelu")
    with pytest.raises(ValueError, match="output must be"):
        fusedmlp.MLP([3, 4, 2], output="logistic")
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        fusedmlp.MLP([3, 4, 2], dtype=np.float16)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        fusedmlp.MLP([3, 4, 2], dtype=np.int64)


def test_repr_and_summary():
    model = fusedmlp.MLP([64, 32, 16, 10], activation="relu", dtype=np.float64, seed=0)
    assert repr(model) == "MLP([64, 32, 16, 10], activation='relu', output='softmax', dtype=float64)"
    mixed = fusedmlp.MLP([3, 4, 5, 2], activation=["relu", "tanh"], output="identity")
    assert repr(mixed) == ("MLP([3, 4, 5, 2], activation=['relu', 'tanh'], output='identity', "
                           "dtype=float32)")
    n_params = 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    assert model.n_parameters == n_params
    text = model.summary()
    assert "(64, 32)" in text and "(32, 16)" in text and "(16, 10)" in text
    assert f"{n_params:,}" in text and "float64" in text and "softmax" in text
    assert len(text.splitlines()) == 1 + 3 + 1          # header, 3 layers, total


def test_layers_are_views_into_the_model():
    model = fusedmlp.MLP([3, 4, 2], dtype=np.float64, seed=0)
    X = np.random.default_rng(0).normal(size=(4, 3))
    model.layers[1].W[...] = 0.0
    model.layers[1].b[...] = [1.0, -1.0]
    # zero weights: the output is the bias, exactly
    oracle.assert_same_bits(model.forward(X), np.tile([1.0, -1.0], (4, 1)), why=oracle.EXACT)
    model.layers[1].b = [2.0, 3.0]                      # assignment copies into the model
    oracle.assert_same_bits(model.forward(X), np.tile([2.0, 3.0], (4, 1)), why=oracle.EXACT)
    vector = model.get_params_vector()
    assert vector.size == model.n_parameters
    with pytest.raises(ValueError, match="vector must have shape"):
        model.set_params_vector(vector[:-1])


# --------------------------------------------------------------------------- refusals
def _labels_model(dtype=np.float32):
    return fusedmlp.MLP([5, 7, 3], activation="relu", dtype=dtype, seed=0)


def _batch(m=8, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(m, 5)).astype(dtype), rng.integers(0, 3, m).astype(np.int64)


def _bad_batches():
    X, y = _batch()
    X_nan = X.copy()
    X_nan[3, 2] = np.nan
    X_inf = X.copy()
    X_inf[0, 0] = -np.inf
    huge = np.full_like(X, 3e38)                       # finite, but float32 logits overflow
    return [
        ("NaN in X", X_nan, y, ValueError),
        ("inf in X", X_inf, y, ValueError),
        ("label too large", X, np.where(np.arange(8) == 5, 3, y), ValueError),
        ("negative label", X, np.where(np.arange(8) == 0, -1, y), ValueError),
        ("non-integral labels", X, y + 0.5, ValueError),
        ("X wrong width", np.ones((8, 4), np.float32), y, ValueError),
        ("X 1-D", np.ones(5, np.float32), y[:1], ValueError),
        ("y too short", X, y[:7], ValueError),
        ("y 2-D wrong width", X, np.ones((8, 2)), ValueError),
        ("NaN in probability targets", X, np.full((8, 3), np.nan), ValueError),
        ("empty X", X[:0], y[:0], ValueError),
        ("string labels", X, np.array(["a"] * 8), TypeError),
        ("loss overflows", huge, y, FloatingPointError),
    ]


@pytest.mark.parametrize("case", _bad_batches(), ids=lambda case: case[0])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_refused_train_step_leaves_model_and_optimizer_unchanged(case, optimizer):
    _, X_bad, y_bad, error = case
    model = _labels_model()
    for layer in model.layers:       # large weights, so that the huge input overflows
        layer.W[...] *= 10
    opt = fusedmlp.SGD(0.1, momentum=0.9) if optimizer == "sgd" else fusedmlp.Adam(0.01)
    X, y = _batch()
    model.train_step(X, y, opt)                  # a good step first: state is non-trivial
    params, state = model.get_params_vector(), opt.state_dict()
    with pytest.raises(error):
        model.train_step(X_bad, y_bad, opt)
    oracle.assert_same_bits(model.get_params_vector(), params, why=oracle.UNTOUCHED)
    after = opt.state_dict()
    assert opt.steps == 1
    for key in state:
        if key != "class":
            oracle.assert_same_bits(after[key], state[key], why=oracle.UNTOUCHED)
    # and the model still trains normally afterwards
    model.train_step(X, y, opt)
    assert opt.steps == 2 and np.all(np.isfinite(model.get_params_vector()))


def test_regression_train_step_refuses_bad_targets():
    model = fusedmlp.MLP([5, 4, 2], output="identity", seed=0)
    X, _ = _batch()
    params = model.get_params_vector()
    bad_targets = np.zeros((8, 2))
    bad_targets[1, 1] = np.inf
    for y, error in [(bad_targets, ValueError), (np.zeros((8, 3)), ValueError),
                     (np.zeros(8), ValueError), (np.zeros((7, 2)), ValueError)]:
        with pytest.raises(error):
            model.train_step(X, y, fusedmlp.SGD(0.1))
        oracle.assert_same_bits(model.get_params_vector(), params, why=oracle.UNTOUCHED)


# --------------------------------------------------------------------------- workspace
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_workspace_growth_gives_the_same_steps_as_a_fresh_model(dtype):
    batches = [_batch(m, seed=m, dtype=dtype) for m in (4, 16, 5, 70, 33, 200, 1)]
    grown = _labels_model(dtype)          # grows its workspace step by step
    fresh = _labels_model(dtype)          # sized for the largest batch from the start
    fresh.loss_and_gradients(*batches[5])
    opt_grown, opt_fresh = fusedmlp.Adam(0.01), fusedmlp.Adam(0.01)
    for X, y in batches:
        loss_grown = grown.train_step(X, y, opt_grown)
        loss_fresh = fresh.train_step(X, y, opt_fresh)
        # the workspace's size is no argument of any product: the same calls, shapes, data
        oracle.assert_same_bits(loss_grown, loss_fresh, why=oracle.SAME_CALL)
        oracle.assert_same_bits(grown.get_params_vector(), fresh.get_params_vector(),
                                why=oracle.SAME_CALL)
    # a bigger batch after small ones computes the right gradients
    model = _labels_model(np.float64)
    for m in (3, 9):
        model.loss_and_gradients(*_batch(m, dtype=np.float64))
    X, y = _batch(150, seed=7, dtype=np.float64)
    loss, grads = model.loss_and_gradients(X, y)
    _assert_loss_and_gradients(loss, grads, model, X, y, np.float64)


# --------------------------------------------------------------------------- allocation
def _numpy_traced():
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.DomainFilter(inclusive=True, domain=np.lib.tracemalloc_domain)])
    stats = snapshot.statistics("filename")
    return sum(s.size for s in stats), sum(s.count for s in stats)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_train_step_allocates_no_numpy_memory_after_warm_up(optimizer):
    # 128 x 40 float32 inputs: any per-step copy or temporary of a batch-sized block would be
    # at least 64 * 3 * 4 = 768 bytes (the smallest block: the output layer's scores)
    model = fusedmlp.MLP([40, 32, 3], activation="relu", dtype=np.float32, seed=0)
    opt = fusedmlp.SGD(0.01, momentum=0.9) if optimizer == "sgd" else fusedmlp.Adam(1e-3)
    rng = np.random.default_rng(0)
    X = np.ascontiguousarray(rng.normal(size=(64, 40)).astype(np.float32))
    y = rng.integers(0, 3, 64).astype(np.int64)
    for _ in range(5):
        model.train_step(X, y, opt)                  # warm-up: workspace and state exist
    tracemalloc.start()
    try:
        model.train_step(X, y, opt)
        size_before, count_before = _numpy_traced()
        transient = 0
        for _ in range(100):
            tracemalloc.reset_peak()
            current = tracemalloc.get_traced_memory()[0]
            model.train_step(X, y, opt)
            transient = max(transient, tracemalloc.get_traced_memory()[1] - current)
        size_after, count_after = _numpy_traced()
    finally:
        tracemalloc.stop()
    assert size_after <= size_before and count_after <= count_before
    # Allocations freed within the call do not reach a snapshot, but they do raise the peak
    # (of all domains together): a step's own Python objects (the returned float, ...) take
    # under 200 bytes; a batch-sized NumPy temporary would take 768 bytes or more.
    assert transient < 512, f"a train_step allocated {transient} bytes transiently"
