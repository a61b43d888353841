"""Dropout in the compiled training step (csrc/_dropout.pxd, csrc/dropout.h).

The masks are a function of (dropout_seed, dropout_step, layer, row, column): the tests fix
a mask by fixing dropout_step (a gradient-only step does not advance it) and check the
gradients by finite differences of that very loss, the scaling by the mean output, the
independence from the thread count and the dtype, and that a saved or pickled model goes on
with the same masks.
"""

import io
import pickle

import numpy as np
import pytest

import fusedmlp
from fusedmlp import MLP, SGD, Adam

import oracle
from oracle import ACTIVATIONS as ORACLE_ACTIVATIONS
from oracle import assert_rounding_close, rounding_tolerance, step_chain

RATES = [0.3, 0.6]
TRAINABLE = [a for a in ORACLE_ACTIVATIONS if a != "step"]


def data(m=40, n=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(m, n)), rng.integers(0, classes, m)


@pytest.mark.parametrize("activation", TRAINABLE)
def test_gradients_of_the_fixed_mask_match_finite_differences(activation):
    X, y = data()
    model = MLP([6, 9, 7, 3], activation=activation, dtype=np.float64, seed=1, dropout=RATES)
    model.dropout_step = 5
    assert max(fusedmlp.gradient_check(model, X, y)) < 1e-6
    assert model.dropout_step == 5                   # gradient-only steps keep the mask


@pytest.mark.parametrize("output", ["identity", "sigmoid"])
def test_gradients_with_one_rate_and_other_losses(output):
    X, _ = data()
    y = (np.random.default_rng(2).random((40, 2)) > 0.5).astype(float)
    model = MLP([6, 8, 8, 2], activation="tanh", output=output, dtype=np.float64, seed=3,
                dropout=0.5)
    assert max(fusedmlp.gradient_check(model, X, y)) < 1e-6


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_float32_uses_the_float64_mask(activation):
    X, y = data()
    model = MLP([6, 16, 12, 3], activation=activation, dtype=np.float32, seed=4, dropout=RATES)
    reference = model.astype(np.float64)             # same seed and step
    loss32, grads32 = model.loss_and_gradients(X, y)
    loss64, grads64 = reference.loss_and_gradients(X, y)
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    for (dW32, db32), (dW64, db64) in zip(grads32, grads64):
        np.testing.assert_allclose(dW32, dW64, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(db32, db64, rtol=1e-3, atol=1e-5)


def test_the_mask_is_fixed_between_updates_and_fresh_after_each():
    X, y = data()
    model = MLP([6, 32, 3], dtype=np.float64, seed=0, dropout=0.5)
    first = model.loss_and_gradients(X, y)[0]
    assert model.loss_and_gradients(X, y)[0] == first
    assert model.loss(X, y) != first                  # inference: no dropout
    assert model.train_step(X, y, SGD(1e-300)) == first   # the update used that mask
    assert model.dropout_step == 1                    # (the parameters moved by ~1e-300)
    assert model.loss_and_gradients(X, y)[0] != first
    model.dropout_step = 0
    assert model.loss_and_gradients(X, y)[0] == first


def test_keep_fraction_and_scaling():
    # One hidden unit of constant activation 1 and an identity output of weight 1: the output
    # of each row is mask / (1 - p), so the batch's mean gives the fraction kept.
    m = 20000
    for p in (0.1, 0.5, 0.9):
        model = MLP([1, 1, 1], activation="identity", output="identity", dtype=np.float64,
                    seed=7, dropout=p)
        model.parameters[:] = [0.0, 1.0, 1.0, 0.0]    # W0, W1, b0, b1
        loss, grads = model.loss_and_gradients(np.zeros((m, 1)), np.zeros((m, 1)))
        mean_output = grads[1][1][0] / 2               # d mean(out^2) / d b1 = 2 mean(out)
        kept = mean_output * (1 - p)
        assert abs(kept - (1 - p)) < 5 * np.sqrt(p * (1 - p) / m)
        # out^2 = mask/(1-p)^2: the mean of m squares against the same mean from the
        # gradient, each a handful of roundings per row and a sum of m
        assert_rounding_close(loss, kept / (1 - p) ** 2, np.float64, m + 6)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_expected_training_output_is_the_inference_output(activation):
    # one hidden layer and a linear output: E[training output] = inference output exactly
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 5))
    m = 4000
    model = MLP([5, 64, 1], activation=activation, output="identity", dtype=np.float64,
                seed=5, dropout=0.4)
    expected = model.forward(x)[0, 0]
    loss, grads = model.loss_and_gradients(np.repeat(x, m, 0), np.zeros((m, 1)))
    mean = grads[1][1][0] / 2
    std = np.sqrt(max(loss - mean**2, 0.0))
    assert abs(mean - expected) < 5 * std / np.sqrt(m)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masks_do_not_depend_on_the_thread_count(dtype):
    # The split changes the products' shapes, so the BLAS may round them differently: the
    # runs agree to the rounding bound of their chain of sums (SGD: linear in the gradient,
    # tests/oracle.py), while another mask moves the losses by far more than that bound.
    X, y = data(m=100, n=20)
    sizes = [20, 40, 33, 3]
    results = []
    for n_threads, seed in ((1, 1), (2, 1), (3, 1), (1, 2)):
        model = MLP(sizes, activation="tanh", dtype=dtype, seed=1, dropout=RATES,
                    n_threads=n_threads)
        model.dropout_seed = seed
        assert model.network.step_parts(len(X)) == n_threads
        optimizer = SGD(0.1)
        losses = [model.train_step(X, y, optimizer) for _ in range(4)]
        results.append((losses, model.get_params_vector()))
    k = step_chain(sizes, len(X), steps=4)
    for losses, params in results[1:3]:
        assert_rounding_close(losses, results[0][0], dtype, k)
        assert_rounding_close(params, results[0][1], dtype, k)
    other_mask = np.abs(np.subtract(results[3][0], results[0][0]))
    assert other_mask.min() > 100 * rounding_tolerance(dtype, k) * max(results[0][0])


def test_same_seed_same_training_and_fit_equals_train_step():
    X, y = data(m=64)
    a = MLP([6, 16, 16, 3], seed=11, dropout=RATES)
    b = MLP([6, 16, 16, 3], seed=11, dropout=RATES)
    assert a.dropout_seed == b.dropout_seed
    history = a.fit(X, y, epochs=2, batch_size=16, optimizer=SGD(0.1), shuffle=False)
    optimizer = SGD(0.1)
    losses = [b.train_step(X[i:i + 16], y[i:i + 16], optimizer)
              for _ in range(2) for i in range(0, 64, 16)]
    # the same masks, steps and batches: the same calls
    oracle.assert_same_bits(a.get_params_vector(), b.get_params_vector(), why=oracle.SAME_CALL)
    assert a.dropout_step == b.dropout_step == 8
    # the epoch's loss is the mean of its four batches' (float32) losses
    assert_rounding_close(history["loss"][1], np.mean(losses[4:]), np.float32, 5)
    c = MLP([6, 16, 16, 3], seed=12, dropout=RATES)
    assert c.dropout_seed != a.dropout_seed


def test_validation_and_scores_run_without_dropout():
    X, y = data(m=64)
    model = MLP([6, 16, 3], dtype=np.float64, seed=2, dropout=0.5)
    history = model.fit(X, y, epochs=1, batch_size=16, validation_data=(X, y))
    # without dropout: both within the bound of the loss of the weights
    expected = oracle.Outputs.of(model, X)
    expected.check("loss", history["val_loss"][-1], y)
    expected.check("loss", model.loss(X, y), y)
    plain = MLP([6, 16, 3], dtype=np.float64, seed=2)
    plain.set_params_vector(model.get_params_vector())
    # inference has no dropout: the same weights, the same calls
    oracle.assert_same_bits(plain.predict_proba(X), model.predict_proba(X), why=oracle.SAME_CALL)


def continue_training(model, X, y, steps=3):
    optimizer = SGD(0.05)
    for _ in range(steps):
        model.train_step(X, y, optimizer)
    return model.get_params_vector()


@pytest.mark.parametrize("how", ["save", "pickle"])
def test_a_reloaded_model_continues_the_same_masks(how, tmp_path):
    X, y = data()
    model = MLP([6, 12, 12, 3], seed=3, dropout=(0.2, 0.7))
    continue_training(model, X, y)
    if how == "save":
        model.save(tmp_path / "m.npz")
        copy = fusedmlp.load(tmp_path / "m.npz")
    else:
        copy = pickle.loads(pickle.dumps(model))
    assert (copy.dropout, copy.dropout_seed, copy.dropout_step) == (
        (0.2, 0.7), model.dropout_seed, 3)
    # the copied state (the masks' seed and step too), then the same steps
    oracle.assert_same_bits(continue_training(copy, X, y), continue_training(model, X, y),
                            why=oracle.SAME_CALL)


def test_models_without_dropout_write_no_dropout_record(tmp_path):
    model = MLP([3, 4, 2], seed=0)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as archive:
        assert b"dropout" not in archive["header"].tobytes()


@pytest.mark.parametrize("record, why", [
    ({"rates": 1.0, "seed": 1, "step": 0}, "rates"),
    ({"rates": [0.1, 0.2], "seed": 1, "step": 0}, "rates"),
    ({"rates": 0.5, "seed": -1, "step": 0}, "seed"),
    ({"rates": 0.5, "seed": 1, "step": 1.5}, "step"),
    ({"rates": 0.5, "seed": 1}, "expected"),
])
def test_bad_dropout_records_are_refused(record, why, tmp_path):
    import json
    model = MLP([3, 4, 2], seed=0, dropout=0.5)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as archive:
        arrays = dict(archive)
    header = json.loads(arrays["header"].tobytes())
    header["dropout"] = record
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with pytest.raises(ValueError, match=f"dropout record.*{why}"):
        fusedmlp.load(buffer)


@pytest.mark.parametrize("dropout, error, match", [
    (1.0, ValueError, r"dropout must lie in \[0.0, 1.0\), got 1.0"),
    (-0.1, ValueError, "dropout must lie in"),
    (float("nan"), ValueError, "dropout must lie in"),
    ("0.5", TypeError, "dropout must be a rate in"),
    (True, TypeError, "dropout must be a rate in"),
    ([0.1], ValueError, "dropout must be one rate or 2 rates"),
    ([0.1, 1.5], ValueError, r"dropout\[1\] must lie in"),
])
def test_bad_rates_are_refused(dropout, error, match):
    with pytest.raises(error, match=match):
        MLP([3, 4, 4, 2], dropout=dropout)
    model = MLP([3, 4, 4, 2])
    with pytest.raises(error, match=match):
        model.dropout = dropout
    assert model.dropout == 0.0


def test_setting_dropout_later_and_turning_it_off():
    X, y = data()
    model = MLP([6, 8, 3], dtype=np.float64, seed=0)
    assert "dropout" not in repr(model)
    plain = model.loss_and_gradients(X, y)[0]
    model.dropout = 0.5
    assert repr(model).endswith(", dropout=0.5)")
    assert model.loss_and_gradients(X, y)[0] != plain
    model.dropout = 0.0
    assert model.loss_and_gradients(X, y)[0] == plain
    with pytest.raises(ValueError, match="dropout_step must lie in"):
        model.dropout_step = -1
    with pytest.raises(TypeError, match="dropout_seed must be an integer"):
        model.dropout_seed = 1.0


# ---------------------------------------------------------------------- estimators
sklearn = pytest.importorskip("fusedmlp.sklearn")


@pytest.mark.parametrize("Estimator", [sklearn.MLPClassifier, sklearn.MLPRegressor])
def test_estimators_take_dropout(Estimator):
    from sklearn.base import clone

    X, y = data(m=60)
    estimator = Estimator(hidden_layer_sizes=(16, 8), dropout=(0.2, 0.4), max_iter=3,
                          random_state=0)
    assert clone(estimator).get_params()["dropout"] == (0.2, 0.4)
    assert Estimator().get_params()["dropout"] == 0.0
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = estimator.fit(X, y).loss_curve_
        assert estimator.model_.dropout == (0.2, 0.4)
        assert clone(estimator).fit(X, y).loss_curve_ == first          # random_state
        other = clone(estimator).set_params(random_state=1).fit(X, y)
        assert other.model_.dropout_seed != estimator.model_.dropout_seed
        plain = clone(estimator).set_params(dropout=0.0).fit(X, y)
        assert plain.loss_curve_ != first
        # warm start with another rate: the fitted network takes it
        estimator.set_params(warm_start=True, dropout=0.5).fit(X, y)
        assert estimator.model_.dropout == 0.5
    with pytest.raises(ValueError, match="dropout must lie in"):
        Estimator(dropout=1.0).fit(X, y)
    with pytest.raises(ValueError, match="needs a stochastic solver"):
        Estimator(dropout=0.1, solver="lbfgs").fit(X, y)
