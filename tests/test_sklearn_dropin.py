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
@pytest.mark.parametrize("Estimator", [MLPRegressor, neural_network.MLPRegressor])
def test_validation_set_too_small(Estimator):
    X, y = np.arange(10.0).reshape(2, 5), np.array([0.0, 1.0])
    with pytest.raises(ValueError, match=r"^The validation set is too small\. Increase "
                                         r"'validation_fraction' or the size of your dataset"):
        Estimator(early_stopping=True, random_state=0).fit(X, y)


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
    assert ours._optimizer.learning_rate == pytest.approx(theirs._optimizer.learning_rate,
                                                          rel=1e-12)


def test_learning_rate_survives_pickling_and_partial_fit():
    X, y = _data()
    clf = MLPClassifier(solver="sgd", learning_rate="invscaling", max_iter=3).fit(X, y)
    rate = clf._optimizer.learning_rate
    assert rate == clf.learning_rate_init / (clf.t_ + 1) ** clf.power_t
    copy = pickle.loads(pickle.dumps(clf))
    assert copy._optimizer.learning_rate == rate
    copy.partial_fit(X, y)
    assert copy._optimizer.learning_rate == clf.learning_rate_init / (copy.t_ + 1) ** 0.5
