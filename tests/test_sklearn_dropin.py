"""fusedmlp.sklearn as a drop-in for scikit-learn's MLP where users rely on more than the
numbers: which methods exist, the exceptions and messages, divergence, the solvers'
learning-rate state and settable weights. scikit-learn's own MLP tests run in
tests/sklearn_upstream; these pin the same behaviours directly, against scikit-learn's
estimators where they can.
"""

import pickle
import re
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn import neural_network                                    # noqa: E402
from sklearn.datasets import load_iris                                # noqa: E402
from sklearn.exceptions import ConvergenceWarning                     # noqa: E402

from fusedmlp.sklearn import MLPClassifier, MLPRegressor              # noqa: E402

import oracle                                                         # noqa: E402

ESTIMATORS = [MLPClassifier, MLPRegressor]

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, 4))
    return X, (X[:, 0] + X[:, 1] ** 2 > 0.3).astype(int)


# --------------------------------------------------------------------------- partial_fit
@pytest.mark.parametrize("Estimator", ESTIMATORS)
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_partial_fit_exists_for_the_stochastic_solvers(Estimator, solver):
    assert hasattr(Estimator(solver=solver), "partial_fit")


@pytest.mark.parametrize("Estimator", ESTIMATORS)
@pytest.mark.parametrize("solver", ["lbfgs", "newton"])
def test_partial_fit_is_absent_for_other_solvers(Estimator, solver):
    estimator = Estimator(solver=solver)
    assert not hasattr(estimator, "partial_fit")
    with pytest.raises(AttributeError) as raised:
        estimator.partial_fit
    assert f"'{solver}' is not stochastic" in str(raised.value.__cause__)
    # set_params switches it on and off, as scikit-learn's available_if
    assert hasattr(estimator.set_params(solver="sgd"), "partial_fit")


# --------------------------------------------------------------------------- divergence
def _diverging_regression(n=50):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)) * 1e3, rng.normal(size=n) * 1e3


@pytest.mark.parametrize("partial", [False, True])
def test_divergence_raises_scikit_learns_value_error(partial):
    X, y = _diverging_regression()
    reg = MLPRegressor(solver="sgd", learning_rate_init=10.0, momentum=0.0, max_iter=50)
    message = ("Solver produced non-finite parameter weights. The input data may contain "
               "large values and need to be preprocessed.")
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        for _ in range(50 if partial else 1):
            reg.partial_fit(X, y) if partial else reg.fit(X, y)
    # also what fusedmlp.MLP.fit raises, so either except clause catches it
    assert isinstance(raised.value, FloatingPointError)
    assert "iteration" in str(raised.value)
    # the refused update left finite weights behind
    assert all(np.isfinite(W).all() for W in reg.coefs_)


def test_huge_inputs_raise_value_error():
    # scikit-learn's test_nonfinite_params: finite X near float64's maximum
    rng = np.random.RandomState(0)
    X = np.finfo(np.float64).max * rng.uniform(size=(10, 2))
    with pytest.raises(ValueError, match="non-finite parameter weights"):
        MLPRegressor().fit(X, rng.standard_normal(10))


def _diverging_early_stopping(Estimator):
    # scikit-learn's test_mlp_diverging_loss: this run diverges in its fifth epoch
    X, y = load_iris(return_X_y=True)
    reg = Estimator(hidden_layer_sizes=100, activation="identity", solver="sgd",
                    learning_rate_init=1.0, max_iter=20, early_stopping=True, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg.fit(X, y)
    return X, reg, [w for w in caught if issubclass(w.category, ConvergenceWarning)]


def test_divergence_with_early_stopping_keeps_the_best_weights():
    X, ours, warned = _diverging_early_stopping(MLPRegressor)
    _, theirs, _ = _diverging_early_stopping(neural_network.MLPRegressor)
    assert len(warned) == 1 and "non-finite parameter weights" in str(warned[0].message)
    scores = ours.validation_scores_
    assert isinstance(scores[-1], float) and np.isnan(scores[-1])
    assert np.isnan(ours.loss_curve_[-1]) and len(ours.loss_curve_) == ours.n_iter_
    # scikit-learn goes on for the remaining epochs on NaN weights; up to the divergence the
    # runs agree, and both end with the best epoch's weights
    assert ours.n_iter_ < theirs.n_iter_ == 20
    np.testing.assert_allclose(scores, theirs.validation_scores_[:ours.n_iter_], rtol=1e-9)
    assert ours.best_validation_score_ == pytest.approx(theirs.best_validation_score_,
                                                        rel=1e-12)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-9)


def test_divergence_in_the_first_epoch_with_early_stopping_raises():
    X, y = load_iris(return_X_y=True)
    reg = MLPRegressor(activation="identity", solver="sgd", learning_rate_init=1e3,
                       batch_size=10, early_stopping=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match="non-finite parameter weights"):
            reg.fit(X, y)        # no epoch finished: there are no best weights to keep


def test_non_finite_validation_predictions_score_nan():
    X, y = _data()
    reg = MLPRegressor(max_iter=1, random_state=0).fit(X, y.astype(float))
    reg.coefs_[-1][...] = np.finfo(np.float64).max
    assert np.isnan(reg._validation_score(X, y.astype(float), None))


# --------------------------------------------------------------------------- messages
def test_validation_set_too_small():
    # scikit-learn >= 1.7's message, then the numbers
    X, y = np.arange(10.0).reshape(2, 5), np.array([0.0, 1.0])
    with pytest.raises(ValueError, match=r"^The validation set is too small\. Increase "
                                         r"'validation_fraction' or the size of your dataset "
                                         r"\(validation_fraction=0.1 of 2 samples leaves 1"):
        MLPRegressor(early_stopping=True, random_state=0).fit(X, y)


def test_least_populated_class_message_names_the_labels():
    X = np.arange(8.0).reshape(4, 2)
    y = np.array(["cat", "cat", "cat", "dog"])
    with pytest.raises(ValueError) as theirs:
        neural_network.MLPClassifier(early_stopping=True).fit(X, y)
    with pytest.raises(ValueError) as ours:
        MLPClassifier(early_stopping=True).fit(X, y)
    # scikit-learn's message (its stratification is on "is it classes_[1]"), then the labels
    assert str(ours.value).startswith(str(theirs.value))
    assert "'True' is class 'dog'" in str(ours.value)
    assert "'False' is class 'cat'" in str(ours.value)


def test_warm_start_with_other_classes_message():
    X, y = _data()
    clf = MLPClassifier(warm_start=True, max_iter=2).fit(X, y)
    message = ("warm_start can only be used where `y` has the same classes as in the "
               "previous call to fit. Previously got [0 1], `y` has [0 1 2]")
    with pytest.raises(ValueError, match=re.escape(message)):
        clf.fit(X, np.arange(len(y)) % 3)


# --------------------------------------------------------------------------- learning rate
@pytest.mark.parametrize("Estimator", ESTIMATORS)
@pytest.mark.parametrize("schedule", [
    dict(solver="sgd", learning_rate="constant"),
    dict(solver="sgd", learning_rate="invscaling", power_t=0.3),
    dict(solver="sgd", learning_rate="adaptive", tol=0.5, n_iter_no_change=2, max_iter=60),
    dict(solver="adam"),
])
def test_learning_rate_state_is_scikit_learns(Estimator, schedule):
    X, y = _data()
    kwargs = dict(hidden_layer_sizes=(8,), max_iter=20, random_state=0, learning_rate_init=0.01)
    kwargs.update(schedule)
    ours = Estimator(**kwargs).fit(X, y)
    theirs = getattr(neural_network, Estimator.__name__)(**kwargs).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    # the same few float64 operations on the same counts (a power, a product, a quotient)
    rate = theirs._optimizer.learning_rate
    oracle.assert_within(ours._optimizer.learning_rate, rate,
                         oracle.rounding_tolerance(np.float64, 8) * abs(rate))


def test_learning_rate_survives_pickling_and_partial_fit():
    X, y = _data()
    clf = MLPClassifier(solver="sgd", learning_rate="invscaling", max_iter=3).fit(X, y)
    rate = clf._optimizer.learning_rate
    assert rate == clf.learning_rate_init / (clf.t_ + 1) ** clf.power_t
    copy = pickle.loads(pickle.dumps(clf))
    assert copy._optimizer.learning_rate == rate
    copy.partial_fit(X, y)
    assert copy._optimizer.learning_rate == clf.learning_rate_init / (copy.t_ + 1) ** 0.5


# --------------------------------------------------------------------------- assigned weights
def _known_weights(sizes, seed=1):
    rng = np.random.default_rng(seed)
    coefs = [rng.uniform(-0.5, 0.5, size=(n_in, n_out)) for n_in, n_out in zip(sizes, sizes[1:])]
    return coefs, [rng.uniform(-0.5, 0.5, size=n_out) for n_out in sizes[1:]]


def _problem(Estimator):
    X, y = _data(40)
    if Estimator is MLPClassifier:
        return X, (y + (X[:, 2] > 0)) % 3, 3          # three classes: softmax in both libraries
    return X, np.column_stack([X[:, 0] * X[:, 1], np.sin(X[:, 2])]), 2


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_assigned_weights_warm_start_as_scikit_learn(Estimator):
    X, y, n_outputs = _problem(Estimator)
    kwargs = dict(hidden_layer_sizes=(5,), solver="sgd", momentum=0.0, learning_rate_init=0.1,
                  alpha=0.01, max_iter=1, shuffle=False, random_state=0)
    theirs = getattr(neural_network, Estimator.__name__)(**kwargs).fit(X, y)
    ours = Estimator(**kwargs).fit(X, y)
    coefs, intercepts = _known_weights([4, 5, n_outputs])
    for estimator in (theirs, ours):
        estimator.coefs_ = [W.copy() for W in coefs]
        estimator.intercepts_ = [b.copy() for b in intercepts]
    assert ours.coefs_[0] is not coefs[0]
    oracle.assert_same_bits(ours.coefs_[0], coefs[0], why=oracle.COPY)
    for _ in range(3):
        theirs.partial_fit(X, y)
        ours.partial_fit(X, y)
    # three full-batch SGD steps (an update linear in the gradient, plus the L2 term) from
    # the same weights, NumPy's products against fusedmlp's: the chain of their sums; the
    # losses one forward and the penalty's sum over the weights more
    sizes = [4, 5, n_outputs]
    k = oracle.step_chain(sizes, len(X), 3)
    for mine, reference in zip(ours.coefs_ + ours.intercepts_,
                               theirs.coefs_ + theirs.intercepts_):
        oracle.assert_rounding_close(mine, reference, np.float64, k)
    oracle.assert_rounding_close(ours.loss_curve_[-3:], theirs.loss_curve_[-3:], np.float64,
                                 k + sum(sizes) + ours.model_.n_parameters)


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_assigned_weights_build_a_network_on_a_new_estimator(Estimator):
    X, y, n_outputs = _problem(Estimator)
    kwargs = dict(hidden_layer_sizes=(5,), solver="sgd", momentum=0.0, learning_rate_init=0.1,
                  max_iter=1, shuffle=False, random_state=0)
    classes = {"classes": [0, 1, 2]} if Estimator is MLPClassifier else {}
    coefs, intercepts = _known_weights([4, 5, n_outputs])
    fresh = Estimator(**kwargs)
    fresh.coefs_, fresh.intercepts_ = list(coefs), list(intercepts)
    assert fresh.coefs_[1] is coefs[1]                  # the assigned list, until it is used
    fresh.partial_fit(X, y, **classes)
    fitted = Estimator(**kwargs).fit(X, y)
    fitted.coefs_, fitted.intercepts_ = list(coefs), list(intercepts)
    fitted.partial_fit(X, y)
    # the same weights, data and step: the same calls
    for a, b in zip(fresh.coefs_ + fresh.intercepts_, fitted.coefs_ + fitted.intercepts_):
        oracle.assert_same_bits(a, b, why=oracle.SAME_CALL)
    assert fresh.n_features_in_ == 4 and fresh.n_outputs_ == n_outputs and fresh.t_ == len(X)
    # after use the attributes are views of the network again
    fresh.coefs_[0][...] = 0.0
    assert np.all(fresh.model_.layers[0].W == 0)


def test_assigned_weights_predict_without_fitting():
    X, _ = _data(10)
    coefs, intercepts = _known_weights([4, 3, 1])
    reg = MLPRegressor(hidden_layer_sizes=(3,), activation="tanh")
    reg.coefs_, reg.intercepts_ = coefs, intercepts
    predicted = reg.predict(X)
    oracle.Outputs(list(zip(coefs, intercepts)), ["tanh", "identity"], "identity", X,
                   np.float64).check("predict", predicted)


def test_a_classifier_needs_data_before_using_assigned_weights():
    clf = MLPClassifier(hidden_layer_sizes=(3,))
    clf.coefs_, clf.intercepts_ = _known_weights([4, 3, 3])
    with pytest.raises(ValueError, match=r"learns its classes from data: call partial_fit"):
        clf.predict(np.zeros((1, 4)))


def test_assigned_float32_weights_make_a_float32_network():
    coefs, intercepts = _known_weights([4, 3, 2])
    reg = MLPRegressor(hidden_layer_sizes=3)
    reg.coefs_ = [W.astype(np.float32) for W in coefs]
    reg.intercepts_ = [b.astype(np.float32) for b in intercepts]
    assert reg.predict(np.zeros((1, 4), np.float32)).dtype == np.float32
    assert reg.coefs_[0].dtype == np.float32


def test_fit_without_warm_start_ignores_assigned_weights():
    # scikit-learn's rule: fit starts a new network unless warm_start
    X, y = _data()
    reference = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0).fit(X, y)
    clf = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0)
    clf.coefs_, clf.intercepts_ = _known_weights([4, 3, 2])
    clf.fit(X, y)
    for a, b in zip(clf.coefs_, reference.coefs_):
        oracle.assert_same_bits(a, b, why=oracle.SAME_CALL)


def test_assigning_only_intercepts_keeps_the_fitted_weights():
    X, y = _data()
    clf = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0).fit(X, y)
    weights = [W.copy() for W in clf.coefs_]
    clf.intercepts_ = [np.zeros_like(b) for b in clf.intercepts_]
    clf.predict(X)
    for W, V in zip(clf.coefs_, weights):
        oracle.assert_same_bits(W, V, why=oracle.UNTOUCHED)
    assert all(np.all(b == 0) for b in clf.intercepts_)


def test_assigned_weights_survive_pickling():
    X, y, _ = _problem(MLPRegressor)
    reg = MLPRegressor(hidden_layer_sizes=(5,), solver="sgd", random_state=0)
    reg.coefs_, reg.intercepts_ = _known_weights([4, 5, 2])
    copy = pickle.loads(pickle.dumps(reg))
    oracle.assert_same_bits(copy.predict(X), reg.predict(X), why=oracle.SAME_CALL)


@pytest.mark.parametrize("coefs, intercepts, error, match", [
    ("weights", [np.zeros(3)], TypeError, r"coefs_ must be a non-empty list of arrays"),
    ([np.zeros((4, 3))], [np.zeros(3), np.zeros(2)], ValueError,
     r"coefs_ has 1 arrays but intercepts_ has 2"),
    ([np.zeros((4, 3)), np.zeros((2, 2))], [np.zeros(3), np.zeros(2)], ValueError,
     r"coefs_\[1\] must have 3 rows"),
    ([np.zeros((4, 3)), np.zeros((3, 2))], [np.zeros(3), np.zeros(3)], ValueError,
     r"intercepts_\[1\] must have shape \(2,\)"),
    ([np.zeros((4, 3)), np.full((3, 2), np.nan)], [np.zeros(3), np.zeros(2)], ValueError,
     r"coefs_\[1\] contains NaN"),
    ([np.zeros((4, 7)), np.zeros((7, 2))], [np.zeros(7), np.zeros(2)], ValueError,
     r"have shapes \[\(\(4, 7\), \(7,\)\), \(\(7, 2\), \(2,\)\)\], but the network for "
     r"n_features_in_=4, hidden_layer_sizes=3 and 2 outputs has \[\(\(4, 3\), \(3,\)\), "),
    ([np.zeros((5, 3)), np.zeros((3, 2))], [np.zeros(3), np.zeros(2)], ValueError,
     r"have shapes \[\(\(5, 3\)"),
])
def test_assigned_weights_are_validated(coefs, intercepts, error, match):
    X, y, _ = _problem(MLPRegressor)
    reg = MLPRegressor(hidden_layer_sizes=3, solver="sgd")
    reg.coefs_, reg.intercepts_ = coefs, intercepts
    with pytest.raises(error, match=match):
        reg.partial_fit(X, y)


def test_assigned_weights_of_another_shape_than_the_fitted_network():
    X, y = _data()
    reg = MLPRegressor(hidden_layer_sizes=3, solver="sgd", max_iter=1).fit(X, y)
    reg.coefs_, reg.intercepts_ = _known_weights([4, 5, 1])
    with pytest.raises(ValueError, match=r"but the network for n_features_in_=4, "
                                         r"hidden_layer_sizes=3 and 1 outputs has"):
        reg.partial_fit(X, y)


def test_a_new_estimator_needs_both_coefs_and_intercepts():
    X, y = _data()
    reg = MLPRegressor(hidden_layer_sizes=3, solver="sgd")
    reg.coefs_ = _known_weights([4, 3, 1])[0]
    with pytest.raises(ValueError, match="needs both coefs_ and intercepts_"):
        reg.partial_fit(X, y)
