"""Inputs that must not silently train wrong (issue 14): sample weights, soft targets, fit's
keywords, non-finite parameters and outputs, labels beyond int64, set_params_vector."""

import warnings

import numpy as np
import pytest

import fusedmlp
from fusedmlp._validation import SOFT_TARGET_TOLERANCE

import oracle


def _data(n=48, n_features=4, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    return X, rng.integers(0, n_classes, n)


def _model(dtype=np.float64, output="softmax", n_out=3, seed=0):
    return fusedmlp.MLP([4, 5, n_out], output=output, dtype=dtype, seed=seed)


# ------------------------------------------------------------------------- sample weights
def _assert_unweighted(model, X, y, loss, grads=()):
    """Equal weights are no weights: ``loss`` (and ``grads``) within the bounds derived for
    the unweighted mean (which count the weights' rounding and their sum too)."""
    expected, loss_bound, exp_grads, bounds = oracle.loss_and_gradients_bound(
        oracle.parameters_of(model), oracle.activations_of(model), model.output,
        X.astype(model.dtype), y, model.dtype)
    oracle.assert_within(loss, expected, loss_bound)
    for (dW, db), (eW, eb), (bW, bb) in zip(grads, exp_grads, bounds):
        oracle.assert_within(dW, eW, bW)
        oracle.assert_within(db, eb, bb)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1e308, 1e300, 1e-300, 2.0**-1070])
def test_huge_and_tiny_sample_weights_weigh_like_equal_weights(dtype, scale):
    X, y = _data()
    model = _model(dtype)
    weighted, weighted_grads = model.loss_and_gradients(X, y,
                                                        sample_weight=np.full(len(X), scale))
    assert weighted > 0
    _assert_unweighted(model, X, y, weighted, weighted_grads)


def test_huge_sample_weights_in_fit_and_regression():
    # plain SGD (an update linear in the gradient): within the chain of the 6 steps' sums
    X, y = _data()
    k = oracle.step_chain([4, 5, 3], 16, 6)
    for output, target in [("softmax", y), ("identity", X[:, :3])]:
        plain, weighted = _model(output=output), _model(output=output)
        h1 = plain.fit(X, target, epochs=2, batch_size=16, optimizer=fusedmlp.SGD(0.1))
        h2 = weighted.fit(X, target, epochs=2, batch_size=16, optimizer=fusedmlp.SGD(0.1),
                          sample_weight=np.full(len(X), 1e308))
        oracle.assert_rounding_close(h2["loss"], h1["loss"], np.float64, k + 4)
        oracle.assert_rounding_close(weighted.get_params_vector(), plain.get_params_vector(),
                                     np.float64, k)


def test_relative_weights_survive_the_normalisation():
    X, y = _data()
    w = np.full(len(X), 1e307)
    w[::2] *= 3                                      # 3e307: the sum overflows float64
    model = _model()
    loss = model.loss_and_gradients(X, y, sample_weight=w)[0]
    expected, loss_bound, _, _ = oracle.loss_and_gradients_bound(
        oracle.parameters_of(model), oracle.activations_of(model), "softmax", X, y,
        np.float64, sample_weight=w / 1e307)
    oracle.assert_within(loss, expected, loss_bound)


def test_float64_weights_too_large_for_float32_are_scaled_before_the_cast():
    X, y = _data()
    model = _model(np.float32)
    loss = model.loss_and_gradients(X, y, sample_weight=np.full(len(X), 1e300))[0]
    _assert_unweighted(model, X, y, loss)


@pytest.mark.parametrize("weights, message", [
    (np.zeros(48), "positive sum|not all zero"),
    (np.r_[np.ones(47), -1.0], "non-negative"),
    (np.r_[np.ones(47), np.nan], "NaN or infinity"),
    (np.r_[np.ones(47), np.inf], "NaN or infinity"),
])
def test_bad_sample_weights_are_refused(weights, message):
    X, y = _data()
    with pytest.raises(ValueError, match=message):
        _model().fit(X, y, epochs=1, sample_weight=weights)
    with pytest.raises(ValueError, match=message):
        _model().loss_and_gradients(X, y, sample_weight=weights)


def test_huge_sample_weights_through_the_classifier():
    pytest.importorskip("sklearn")
    from fusedmlp.sklearn import MLPClassifier
    X, y = _data(n=60)
    kwargs = dict(hidden_layer_sizes=(5,), alpha=0.0, max_iter=3, random_state=0,
                  batch_size=20, solver="sgd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # (not converged after 3 epochs)
        plain = MLPClassifier(**kwargs).fit(X, y)
        huge = MLPClassifier(**kwargs).fit(X, y, sample_weight=np.full(len(X), 1e308))
    # SGD with momentum 0.9 (each gradient in ten steps' updates): the chain of 9 steps' sums
    k = 10 * oracle.step_chain([4, 5, 3], 20, 9)
    oracle.assert_rounding_close(huge.loss_curve_, plain.loss_curve_, np.float64, k + 4)
    assert min(huge.loss_curve_) > 0
    for a, b in zip(huge.coefs_, plain.coefs_):
        oracle.assert_rounding_close(a, b, np.float64, k)


# ------------------------------------------------------------------------- soft targets
@pytest.mark.parametrize("targets, message", [
    (lambda t: t * -1, "non-negative"),
    (lambda t: np.where(t > 0, 1.5, -0.5), "non-negative"),
    (lambda t: t * 2, "sum to 1"),
    (lambda t: t * 0, "sum to 1"),
    (lambda t: np.where(t > 0, np.nan, 0), "NaN or infinity"),
])
def test_soft_targets_must_be_distributions(targets, message):
    X, y = _data()
    bad = targets(np.eye(3)[y])
    for call in (lambda m: m.fit(X, bad, epochs=1),
                 lambda m: m.train_step(X, bad, fusedmlp.SGD(0.1)),
                 lambda m: m.loss_and_gradients(X, bad),
                 lambda m: m.loss(X, bad)):
        model = _model()
        before = model.get_params_vector()
        with pytest.raises(ValueError, match=message):
            call(model)
        oracle.assert_same_bits(model.get_params_vector(), before, why=oracle.UNTOUCHED)
    with pytest.raises(ValueError, match=message):
        fusedmlp.SoftmaxCrossEntropy().forward(np.zeros((len(X), 3)), bad)


def test_soft_targets_within_the_tolerance_train():
    X, y = _data()
    smooth = (np.eye(3)[y] * 0.9 + 0.1 / 3).astype(np.float32)      # rounding: sums 1 +- 1e-7
    model = _model(np.float32)
    model.fit(X, smooth, epochs=1)
    slightly_off = np.eye(3)[y] * (1 + 0.5 * SOFT_TARGET_TOLERANCE)
    model.loss_and_gradients(X, slightly_off)
    with pytest.raises(ValueError, match="sum to 1"):
        model.loss_and_gradients(X, np.eye(3)[y] * (1 + 2 * SOFT_TARGET_TOLERANCE))


# ------------------------------------------------------------------------- fit keywords
@pytest.mark.parametrize("kwargs, error, message", [
    (dict(min_delta=np.nan, patience=1), ValueError, "min_delta"),
    (dict(min_delta=np.inf, patience=1), ValueError, "min_delta"),
    (dict(min_delta=-1.0, patience=1), ValueError, "min_delta"),
    (dict(min_delta="0.1", patience=1), TypeError, "min_delta"),
    (dict(verbose="yes"), TypeError, "verbose"),
    (dict(verbose=-1), ValueError, "verbose"),
    (dict(verbose=1.5), TypeError, "verbose"),
    (dict(shuffle="no"), TypeError, "shuffle"),
    (dict(shuffle=None), TypeError, "shuffle"),
    (dict(restore_best_weights="yes", patience=1), TypeError, "restore_best_weights"),
    (dict(patience=0), ValueError, "patience"),
    (dict(patience=1.5), TypeError, "patience"),
    (dict(validation_fraction="0.2"), TypeError, "validation_fraction"),
    (dict(validation_fraction=np.nan), ValueError, "validation_fraction"),
    (dict(validation_fraction=1.0), ValueError, "validation_fraction"),
    (dict(callbacks=print), TypeError, "callbacks"),
    (dict(callbacks=[1]), TypeError, "callbacks"),
    (dict(weight_decay=-1.0), ValueError, "weight_decay"),
    (dict(clip_norm=np.nan), ValueError, "clip_norm"),
    (dict(epochs=0), ValueError, "epochs"),
    (dict(batch_size=2.0), TypeError, "batch_size"),
    (dict(lr_schedule="linear"), ValueError, "lr_schedule"),
    (dict(optimizer=3), ValueError, "optimizer"),
])
def test_every_fit_keyword_is_validated(kwargs, error, message):
    X, y = _data()
    model = _model()
    opt = kwargs.pop("optimizer", fusedmlp.Adam(0.01))
    before = model.get_params_vector()
    with pytest.raises(error, match=message):
        model.fit(X, y, epochs=kwargs.pop("epochs", 2), optimizer=opt, **kwargs)
    oracle.assert_same_bits(model.get_params_vector(), before, why=oracle.UNTOUCHED)
    if isinstance(opt, fusedmlp.Adam):
        assert opt.weight_decay == 0.0 and opt.clip_norm == 0.0   # nothing half-applied


def test_valid_fit_keywords_of_numpy_types_are_accepted():
    X, y = _data()
    _model().fit(X, y, epochs=np.int64(2), batch_size=np.int32(16), verbose=np.int64(0),
                 shuffle=np.bool_(True), min_delta=np.float32(0.0), patience=np.int64(2),
                 restore_best_weights=np.bool_(False), validation_fraction=np.float64(0.25),
                 callbacks=(lambda model, epoch, logs: None,))


# ------------------------------------------------------------------ non-finite parameters
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_inference_with_non_finite_parameters_raises(bad):
    X, y = _data()
    model = _model()
    model.layers[0].W[0, 0] = bad
    for call in (model.predict, model.predict_proba, model.predict_log_proba, model.forward,
                 lambda X: model.score(X, y)):
        with pytest.raises(FloatingPointError, match="not finite"):
            call(X)


def test_inference_outputs_that_overflow_raise():
    X, _ = _data()
    model = _model(np.float32)
    model.layers[-1].W[...] = 3e38
    model.layers[0].W[...] = 1.0
    with pytest.raises(FloatingPointError, match="not finite"):
        model.predict(np.abs(X) + 10)


def test_regression_inference_with_nan_parameters_raises():
    X, _ = _data()
    model = _model(output="identity", n_out=2)
    model.layers[1].b[0] = np.nan
    with pytest.raises(FloatingPointError, match="not finite"):
        model.predict(X)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_fit_refuses_to_start_from_non_finite_parameters(bad):
    X, y = _data()
    model = _model()
    model.layers[1].b[0] = bad
    before = model.get_params_vector()
    with pytest.raises(ValueError, match="parameters .*NaN or infinity"):
        model.fit(X, y, epochs=2)
    oracle.assert_same_bits(model.get_params_vector(), before, why=oracle.UNTOUCHED)


# ------------------------------------------------------------------------- labels
@pytest.mark.parametrize("labels, shown", [
    (np.array([0, 1, 2**63 + 1], dtype=np.uint64), "9223372036854775809"),
    (np.array([0, 1, 1e20]), "1e+20"),
    (np.array([0.0, 1.0, -1e20]), "-1e+20"),
    (np.array([0, 1, 2**64 - 1], dtype=np.uint64), "18446744073709551615"),
    (np.array([0, 1, 7], dtype=np.uint8), "7"),
])
def test_label_errors_show_the_value_as_given(labels, shown):
    X, _ = _data(n=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")               # no RuntimeWarning from a wrapping cast
        with pytest.raises(ValueError, match="y must lie in") as caught:
            _model().fit(X, labels, epochs=1)
        assert shown in str(caught.value), caught.value
        with pytest.raises(ValueError, match="must lie in") as caught:
            fusedmlp.one_hot(labels, 3)
        assert shown in str(caught.value), caught.value


# ------------------------------------------------------------------------- set_params_vector
@pytest.mark.parametrize("vector, error", [
    (lambda n: np.ones(n, complex), TypeError),
    (lambda n: np.ones(n, complex) * 1j, TypeError),
    (lambda n: np.array(["1.0"] * n), TypeError),
    (lambda n: ["1.0"] * n, TypeError),
    (lambda n: np.ones(n, object), TypeError),
    (lambda n: np.ones(n, np.float16), TypeError),
])
def test_set_params_vector_refuses_non_real_vectors(vector, error):
    model = _model()
    before = model.get_params_vector()
    with pytest.raises(error, match="vector"):
        model.set_params_vector(vector(before.size))
    oracle.assert_same_bits(model.get_params_vector(), before, why=oracle.UNTOUCHED)


def test_set_params_vector_accepts_real_vectors():
    model = _model(np.float32)
    n = model.n_parameters
    model.set_params_vector(np.arange(n))            # integers become the model's dtype
    model.set_params_vector(list(np.linspace(0, 1, n)))
    oracle.assert_same_bits(model.get_params_vector(), np.linspace(0, 1, n, dtype=np.float32),
                            why=oracle.COPY)
