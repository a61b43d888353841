"""The third hostile battery (issue 26): one test, or a small group, per class of
misbehaviour, each named in its docstring. Every test here failed on the main of the day
the issue was filed."""

import warnings

import numpy as np
import pytest

import fusedmlp
from fusedmlp.sklearn import MLPClassifier


def _blobs(n=60, n_features=4, n_classes=3, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features)).astype(dtype)
    y = np.arange(n) % n_classes
    return X, y


# ---------------------------------------------------------------- class 5: messages
_BAD_CLASS_WEIGHTS = [
    ({0: 0, 1: 0, 2: 0}, r"class_weight gives weight 0 to every class"),
    ({0: -1.0}, r"class_weight\[0\] must be a finite number >= 0, got -1\.0"),
    ({1: np.nan}, r"class_weight\[1\] must be a finite number >= 0, got nan"),
    ({2: np.inf}, r"class_weight\[2\] must be a finite number >= 0, got inf"),
]


@pytest.mark.parametrize("with_sample_weight", [False, True])
@pytest.mark.parametrize("class_weight, message", _BAD_CLASS_WEIGHTS)
def test_class_weight_refusals_name_class_weight(class_weight, message, with_sample_weight):
    """Class 5 (messages naming the wrong argument): every class weight that is refused --
    all zero, negative, NaN, infinite -- is refused naming class_weight, never
    sample_weight, in MLP.fit and in MLPClassifier.fit (whose compute_class_weight passes
    such weights on unchecked)."""
    X, y = _blobs()
    sample_weight = np.full(len(y), 2.0) if with_sample_weight else None
    model = fusedmlp.MLP([4, 5, 3], seed=0)
    before = model.get_params_vector()
    with pytest.raises(ValueError, match=message):
        model.fit(X, y, epochs=1, class_weight=class_weight, sample_weight=sample_weight)
    assert np.array_equal(model.get_params_vector(), before)
    estimator = MLPClassifier(hidden_layer_sizes=(5,), max_iter=1, class_weight=class_weight)
    with pytest.raises(ValueError, match=message):
        estimator.fit(X, y, sample_weight=sample_weight)


def test_class_weight_messages_name_the_label_and_the_product():
    """Class 5: the estimator's message names the user's label (a string label here), and
    class weights whose product with the sample weights overflows are refused naming
    both; weights beyond float32's range but within float64's weigh a float32 model, as
    they do in MLP.fit (only their ratios matter)."""
    X, y = _blobs()
    labels = np.array(["a", "b", "c"])[y]
    estimator = MLPClassifier(hidden_layer_sizes=(5,), max_iter=1, class_weight={"b": -2})
    with pytest.raises(ValueError, match=r"class_weight\['b'\] must be a finite number >= 0"):
        estimator.fit(X, labels)
    huge = {0: 1e308, 1: 1e308, 2: 1e308}
    estimator = MLPClassifier(hidden_layer_sizes=(5,), max_iter=1, class_weight=huge)
    with pytest.raises(ValueError, match=r"class_weight \* sample_weight overflows"):
        estimator.fit(X, y, sample_weight=np.full(len(y), 10.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # (one epoch does not converge)
        estimator.fit(X, y)
    fusedmlp.MLP([4, 5, 3], seed=0).fit(X, y, epochs=1, class_weight=huge)
