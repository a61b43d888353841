"""class_weight in MLP.fit and MLPClassifier: the product with sample_weight, bit for bit;
"balanced" as scikit-learn computes it; refusals."""

import numpy as np
import pytest

import fusedmlp
from fusedmlp.class_weights import balanced


def _data(n=90, n_features=5, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    # unbalanced: class 0 is common
    y = np.minimum(rng.geometric(0.5, size=n) - 1, n_classes - 1)
    return X, y


def _fit(output, dtype, y, X, **kw):
    n_out = 1 if output == "sigmoid" else 3
    model = fusedmlp.MLP([X.shape[1], 8, n_out], output=output, dtype=dtype, seed=3)
    model.fit(X, y, epochs=3, batch_size=16, optimizer=fusedmlp.Adam(0.01), **kw)
    return model.get_params_vector()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["dict", "balanced", "dict-times-sample-weight",
                                  "balanced-times-sample-weight", "one-hot", "sigmoid"])
def test_class_weight_is_the_per_row_sample_weight(case, dtype):
    X, y = _data()
    rng = np.random.default_rng(1)
    output = "sigmoid" if case == "sigmoid" else "softmax"
    if output == "sigmoid":
        y = (y > 0).astype(np.float64)
    labels = y.astype(np.int64)
    sample_weight = rng.uniform(0.5, 2.0, size=len(y)) if "sample-weight" in case else None
    class_weight = "balanced" if "balanced" in case else {0: 0.25, 1: 3.0}
    if "balanced" in case:
        from sklearn.utils.class_weight import compute_class_weight
        vector = compute_class_weight("balanced", classes=np.unique(labels), y=labels,
                                      sample_weight=sample_weight)
    else:
        vector = np.array([0.25, 3.0, 1.0])
    rows = vector[labels] * (1.0 if sample_weight is None else sample_weight)
    target = np.eye(3)[labels] if case == "one-hot" else y
    got = _fit(output, dtype, target, X, class_weight=class_weight, sample_weight=sample_weight)
    expected = _fit(output, dtype, target, X, sample_weight=rows)
    assert got.tobytes() == expected.tobytes()
    assert got.tobytes() != _fit(output, dtype, target, X).tobytes()


def test_balanced_equals_scikit_learns_compute_class_weight():
    from sklearn.utils.class_weight import compute_class_weight

    rng = np.random.default_rng(2)
    y = np.array([0] * 7 + [1] * 2 + [3] * 11)          # class 2 absent
    for sample_weight in (None, rng.uniform(0.1, 3.0, size=len(y))):
        expected = compute_class_weight("balanced", classes=np.unique(y), y=y,
                                        sample_weight=sample_weight)
        got = balanced(y, 4, sample_weight)
        assert got[[0, 1, 3]].tobytes() == expected.tobytes()
        assert got[2] == 0.0


def test_mlp_fit_refuses_bad_class_weights():
    X, y = _data()
    model = fusedmlp.MLP([5, 4, 3], seed=0)
    before = model.get_params_vector()
    bad = [
        ({0: 1.0, 5: 2.0}, ValueError, r"class_weight has labels that are not in y: \[5\]"),
        ({0: -1.0}, ValueError, r"class_weight\[0\] must be a finite number >= 0"),
        ({0: np.nan}, ValueError, r"class_weight\[0\] must be a finite number >= 0"),
        ({"a": 1.0}, ValueError, "class_weight has labels that are not in y"),
        ("balance", ValueError, "class_weight must be None, 'balanced' or a dict"),
        ([1.0, 2.0], TypeError, "class_weight must be None, 'balanced' or a dict"),
    ]
    for class_weight, error, message in bad:
        with pytest.raises(error, match=message):
            model.fit(X, y, epochs=1, class_weight=class_weight)
    y_small = np.where(y == 2, 1, y)                    # label 2 not in y
    with pytest.raises(ValueError, match="not in y"):
        model.fit(X, y_small, epochs=1, class_weight={2: 1.0})
    with pytest.raises(ValueError, match="class probabilities"):
        model.fit(X, np.full((len(y), 3), 1 / 3), epochs=1, class_weight="balanced")
    with pytest.raises(ValueError, match="class_weight gives weight 0 to every class"):
        model.fit(X, y, epochs=1, class_weight={0: 0.0, 1: 0.0, 2: 0.0})
    multilabel = fusedmlp.MLP([5, 4, 2], output="sigmoid", seed=0)
    with pytest.raises(ValueError, match="2 sigmoid outputs"):
        multilabel.fit(X, np.ones((len(y), 2)), epochs=1, class_weight="balanced")
    binary = fusedmlp.MLP([5, 4, 1], output="sigmoid", seed=0)
    with pytest.raises(ValueError, match="needs 0/1 targets"):
        binary.fit(X, np.full(len(y), 0.5), epochs=1, class_weight="balanced")
    regressor = fusedmlp.MLP([5, 4, 1], output="identity", seed=0)
    with pytest.raises(ValueError, match="needs a classification model"):
        regressor.fit(X, y.astype(float), epochs=1, class_weight="balanced")
    assert model.get_params_vector().tobytes() == before.tobytes()


# --------------------------------------------------------------------------- estimator

sklearn = pytest.importorskip("sklearn")


def _classifier(**kw):
    from fusedmlp.sklearn import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=(8,), max_iter=4, random_state=0,
                         learning_rate_init=0.01, **kw)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("kind", ["multiclass", "binary"])
def test_estimator_class_weight_is_the_per_row_sample_weight(kind, solver):
    from sklearn.utils.class_weight import compute_class_weight

    X, y = _data(n_classes=3 if kind == "multiclass" else 2)
    names = np.array(["cat", "dog", "eel"])[: y.max() + 1]
    labels = names[y]
    sample_weight = np.random.default_rng(4).uniform(0.5, 2.0, size=len(y))
    for class_weight in ("balanced", {"dog": 4.0, "cat": 0.5}):
        vector = compute_class_weight(class_weight, classes=names, y=labels,
                                      sample_weight=sample_weight)
        rows = vector[y] * sample_weight
        got = _classifier(solver=solver, class_weight=class_weight).fit(
            X, labels, sample_weight=sample_weight)
        expected = _classifier(solver=solver).fit(X, labels, sample_weight=rows)
        for a, b in zip(got.coefs_ + got.intercepts_, expected.coefs_ + expected.intercepts_):
            assert a.tobytes() == b.tobytes()
        if solver != "lbfgs":
            assert got.loss_curve_ == expected.loss_curve_


def test_estimator_class_weight_params_clone_and_partial_fit():
    from sklearn.base import clone

    X, y = _data()
    clf = _classifier(class_weight={0: 2.0})
    assert clf.get_params()["class_weight"] == {0: 2.0}
    assert clone(clf).class_weight == {0: 2.0}
    assert clf.set_params(class_weight="balanced").class_weight == "balanced"
    assert _classifier().class_weight is None
    with pytest.raises(ValueError, match="'balanced' is not supported for partial_fit"):
        clf.partial_fit(X, y, classes=[0, 1, 2])
    # a dict in partial_fit: the product with the batch's sample weights, call by call
    weighted = _classifier(class_weight={1: 3.0})
    plain = _classifier()
    for start in (0, 45):
        rows = slice(start, start + 45)
        weighted.partial_fit(X[rows], y[rows], classes=[0, 1, 2])
        plain.partial_fit(X[rows], y[rows], classes=[0, 1, 2],
                          sample_weight=np.where(y[rows] == 1, 3.0, 1.0))
    assert weighted.coefs_[0].tobytes() == plain.coefs_[0].tobytes()


def test_estimator_refuses_class_weights_as_scikit_learn():
    X, y = _data()
    with pytest.raises(ValueError, match=r"The classes, \[1, 2\], are not in class_weight"):
        _classifier(class_weight={0: 1.0, 7: 2.0}).fit(X, y)
    with pytest.raises(ValueError, match="class_weight"):
        _classifier(class_weight="unbalanced").fit(X, y)
    with pytest.raises(ValueError, match="not supported for multilabel y"):
        _classifier(class_weight="balanced").fit(X, np.eye(3, dtype=int)[y])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimator_early_stopping_weighs_the_validation_score_by_the_product():
    X, y = _data(n=120)
    got = _classifier(class_weight="balanced", early_stopping=True).fit(X, y)
    from sklearn.utils.class_weight import compute_class_weight

    rows = compute_class_weight("balanced", classes=np.unique(y), y=y)[y]
    expected = _classifier(early_stopping=True).fit(X, y, sample_weight=rows)
    assert got.validation_scores_ == expected.validation_scores_
    assert got.coefs_[0].tobytes() == expected.coefs_[0].tobytes()
