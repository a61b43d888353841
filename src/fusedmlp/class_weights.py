"""``class_weight``: weights per class, folded into the per-row sample weights.

``MLP.fit(..., class_weight=...)`` and ``fusedmlp.sklearn.MLPClassifier(class_weight=...)``
weigh row ``i`` of class ``c`` by ``class_weight[c] * sample_weight[i]`` (``sample_weight``
all ones when not given): training with a class weight is training with that product as the
sample weight, bit for bit. ``"balanced"`` is scikit-learn's heuristic (its
``compute_class_weight``) with the sample weights counted: ``class_weight[c] =
sum(s) / (n_classes_in_y * sum(s of the rows of class c))``, so every class present carries
the same total weight. The compiled step never sees classes: it sees the rows' weights.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._validation import as_sample_weight, describe

__all__ = ["balanced", "class_weight_vector", "check_class_vector", "weigh_rows", "row_weights",
           "row_classes"]


def balanced(row_class: np.ndarray, n_classes: int, sample_weight=None) -> np.ndarray:
    """``"balanced"`` weights of classes ``0 .. n_classes-1`` for rows of the integer classes
    `row_class` (float64 `sample_weight` per row, or None): ``total / (n_present * count_c)``
    with counts and total weighted, as ``sklearn.utils.class_weight.compute_class_weight``
    computes them. A class without rows (or whose rows all weigh 0) gets 0."""
    weights = np.ones(len(row_class)) if sample_weight is None else sample_weight
    counts = np.bincount(row_class, weights=weights, minlength=n_classes)
    n_present = np.count_nonzero(np.bincount(row_class, minlength=n_classes))
    return np.divide(counts.sum(), n_present * counts, out=np.zeros(n_classes),
                     where=counts > 0)


def class_weight_vector(class_weight, row_class: np.ndarray, n_classes: int,
                        sample_weight=None) -> np.ndarray:
    """The weight of each class index ``0 .. n_classes-1`` (float64) from `class_weight`
    (``"balanced"`` or a dict {class index: weight >= 0}; classes not in the dict weigh 1).
    A dict key that is not the class of some row is refused, as scikit-learn refuses a
    class that is not in y."""
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"class_weight must be None, 'balanced' or a dict "
                             f"{{label: weight}}, got {class_weight!r}")
        return balanced(row_class, n_classes, sample_weight)
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight must be None, 'balanced' or a dict {{label: weight}}, "
                        f"got {describe(class_weight)}")
    present = set(np.unique(row_class).tolist())
    vector = np.ones(n_classes)
    unknown = []
    for label, weight in class_weight.items():
        if (isinstance(label, (bool, np.bool_)) or not isinstance(label, numbers.Integral)
                or int(label) not in present):
            unknown.append(label)
            continue
        if isinstance(weight, (bool, np.bool_)) or not isinstance(weight, numbers.Real):
            raise ValueError(f"class_weight[{label!r}] must be a finite number >= 0, "
                             f"got {describe(weight)}")
        vector[int(label)] = float(weight)
    if unknown:
        raise ValueError(f"class_weight has labels that are not in y: {unknown!r} (y holds "
                         f"the labels {sorted(present)})")
    check_class_vector(vector, range(n_classes))
    return vector


def check_class_vector(vector: np.ndarray, labels) -> None:
    """Refuse class weights that are not finite numbers >= 0, naming the class:
    ``vector[c]`` is the weight of the class ``labels[c]`` (what the user wrote as the
    key of ``class_weight``). The one check of class weights, for ``MLP.fit`` and the
    scikit-learn estimators (whose ``compute_class_weight`` passes them on unchecked)."""
    bad = np.flatnonzero(~(np.isfinite(vector) & (vector >= 0)))
    if len(bad):
        label = list(labels)[int(bad[0])]
        label = label.item() if isinstance(label, np.generic) else label
        raise ValueError(f"class_weight[{label!r}] must be a finite number >= 0, "
                         f"got {float(vector[bad[0]])!r}")


def weigh_rows(vector: np.ndarray, row_class: np.ndarray, sample_weight=None) -> np.ndarray:
    """Per-row float64 weights ``vector[row_class] * sample_weight`` (`vector` checked by
    ``check_class_vector``, `sample_weight` float64 or None, already checked), refused with
    a message naming class_weight when the product is no usable weighting: every row
    weighing 0 (the class weights of every class in y are 0, or 0 wherever the sample
    weights are not), or a product beyond float64's range."""
    per_row = vector[row_class]
    if sample_weight is not None:
        with np.errstate(over="ignore"):
            per_row = per_row * sample_weight
    if not np.all(np.isfinite(per_row)):
        raise ValueError("class_weight * sample_weight overflows (is beyond float64's "
                         "range) for some rows: scale the class weights down (only their "
                         "ratios matter)")
    if not (len(per_row) and per_row.max() > 0):
        where = ("every class in y" if sample_weight is None else
                 "every class of the rows whose sample_weight is > 0")
        raise ValueError(f"class_weight gives weight 0 to {where}: every row would weigh 0 "
                         "(give some class present in y a weight > 0)")
    return per_row


def row_weights(class_weight, row_class: np.ndarray, n_classes: int, sample_weight):
    """Per-row float64 weights ``class_weight[row_class] * sample_weight`` (`sample_weight`:
    None or as ``MLP.fit`` takes it, validated here)."""
    n = len(row_class)
    weights = None
    if sample_weight is not None:
        weights = as_sample_weight(sample_weight, n, np.float64)[0]
    vector = class_weight_vector(class_weight, row_class, n_classes, weights)
    return weigh_rows(vector, row_class, weights)


def row_classes(output: str, y: np.ndarray, n_outputs: int):
    """(class index of each row, number of classes) of checked targets of an ``MLP``
    (``check_data``): the labels, the column of the 1 of one-hot rows, the 0/1 target of
    one sigmoid output (two classes). ValueError for targets without one class per row
    (probabilities, multilabel rows, regression)."""
    if output == "softmax":
        if y.ndim == 1:
            return y, n_outputs
        if not (np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1)):
            raise ValueError("class_weight needs one class per row: y holds class "
                             "probabilities (soft targets), not labels or one-hot rows")
        return np.argmax(y, axis=1), n_outputs
    if output == "sigmoid":
        if n_outputs != 1:
            raise ValueError(f"class_weight is defined for one class per row; a model with "
                             f"{n_outputs} sigmoid outputs (multilabel) has none: weigh "
                             "the rows with sample_weight")
        column = y.reshape(-1)
        if not np.all((column == 0) | (column == 1)):
            raise ValueError("class_weight needs 0/1 targets for a sigmoid output, y holds "
                             "probabilities")
        return column.astype(np.int64), 2
    raise ValueError(f"class_weight needs a classification model (output='softmax' or "
                     f"'sigmoid'), this one has output={output!r}")
