"""NumPy-style array functions over the compiled kernels.

Conventions (NumPy's): data positional-only, options keyword-only; float32 stays float32,
float64 stays float64, integers and bools become float64; float16, complex, object and string
arrays are refused; ``out=`` must be a writable C-contiguous array of the result's exact shape
and dtype, and either ``x`` itself (in place) or memory disjoint from ``x``, or the call
raises.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _codes, _kernels
from ._validation import (as_float_array, as_labels, as_positive_int, check_out,
                          check_out_in_place, normalize_axis)

__all__ = [
    "softmax", "log_softmax", "one_hot", "one_hot_encoding",
    "sigmoid", "relu", "tanh", "step", "leaky_relu", "elu", "softplus", "identity",
    "ACTIVATIONS",
]

#: Activation names and the numbers the kernels know them by (``ACT_<NAME>`` in
#: csrc/fusedmlp/_codes.pxd), in the kernels' order.
ACTIVATIONS = {code.name[len("ACT_"):].lower(): int(code)
               for code in sorted(_codes.Activation)}


def _rowwise(x, axis, out, log: bool):
    x = as_float_array(x, "x")
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension, got a scalar")
    axis = normalize_axis(axis, x.ndim)
    if out is not None:
        check_out(out, x.shape, x.dtype)
        check_out_in_place(out, x)
    moved = np.moveaxis(x, axis, -1)
    # The row count is explicit: reshape(-1, 0) is ambiguous when the axis has length 0.
    n_rows, n_columns = math.prod(moved.shape[:-1]), moved.shape[-1]
    rows = np.ascontiguousarray(moved).reshape(n_rows, n_columns)
    if out is not None and axis == x.ndim - 1:
        result = out
    else:
        result = np.empty(moved.shape, dtype=x.dtype)
    _kernels.softmax(rows, result.reshape(n_rows, n_columns), log)
    if result is out:
        return out
    result = np.moveaxis(result, -1, axis)
    if out is not None:
        out[...] = result
        return out
    return result


def softmax(x: ArrayLike, /, *, axis: int = -1, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Softmax along `axis`: exp(x - max) / sum(exp(x - max)).

    Subtracting the maximum makes it overflow-free: logits of magnitude 1e30 give finite
    probabilities, ``-inf`` entries get probability 0, and a NaN makes its whole slice NaN.
    The denominator is summed in float64 for float32 input.

    Parameters
    ----------
    x : array_like
        Real-valued scores, at least 1-D.
    axis : int, optional
        The axis that sums to one (default: the last).
    out : ndarray, optional
        Where to write the result (same shape and dtype as the result).

    Returns
    -------
    ndarray
        Probabilities of x's float dtype (float64 for integer input).

    Examples
    --------
    >>> import fusedmlp
    >>> fusedmlp.softmax([[1.0, 1.0], [0.0, float("-inf")]])
    array([[0.5, 0.5],
           [1. , 0. ]])
    """
    return _rowwise(x, axis, out, log=False)


def log_softmax(x: ArrayLike, /, *, axis: int = -1,
                out: Optional[np.ndarray] = None) -> np.ndarray:
    """Log of the softmax along `axis`: x - max - log(sum(exp(x - max))).

    Computed directly (never as log(softmax)), so it stays finite where the softmax underflows.

    Examples
    --------
    >>> import fusedmlp
    >>> fusedmlp.log_softmax([0.0, -1000.0])
    array([    0., -1000.])
    """
    return _rowwise(x, axis, out, log=True)


def one_hot(labels: ArrayLike, /, num_classes: int, *, dtype: DTypeLike = np.float64) -> np.ndarray:
    """One-hot encoding of integer labels: shape ``labels.shape + (num_classes,)``.

    Labels must be integral and lie in ``[0, num_classes)``; anything else raises ValueError.

    Examples
    --------
    >>> import fusedmlp
    >>> fusedmlp.one_hot([2, 0], 3)
    array([[0., 0., 1.],
           [1., 0., 0.]])
    """
    num_classes = as_positive_int(num_classes, "num_classes")
    try:
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be a NumPy dtype, got {dtype!r}") from exc
    if dtype.kind not in "biuf":
        raise TypeError(f"dtype must be a real numeric dtype, got {dtype}")
    array = as_labels(labels, "labels", num_classes, ndim=None)
    result = np.zeros(array.shape + (num_classes,), dtype=dtype)
    np.put_along_axis(result, array[..., None], 1, axis=-1)
    return result


def one_hot_encoding(scores: ArrayLike, /, *, axis: int = -1) -> np.ndarray:
    """One-hot of the argmax of `scores` along `axis` (ties go to the first maximum).

    The result has the scores' shape and float dtype: 1 at each slice's first maximum, 0
    elsewhere. (As ``np.argmax``, a NaN counts as the maximum.)

    Examples
    --------
    >>> import fusedmlp
    >>> fusedmlp.one_hot_encoding([[0.1, 0.7, 0.2], [3.0, 3.0, 1.0]])
    array([[0., 1., 0.],
           [1., 0., 0.]])
    """
    scores = as_float_array(scores, "scores")
    if scores.ndim == 0:
        raise ValueError("scores must have at least one dimension, got a scalar")
    axis = normalize_axis(axis, scores.ndim)
    if scores.shape[axis] == 0:
        raise ValueError("scores must not be empty along axis")
    result = np.zeros(scores.shape, dtype=scores.dtype)
    winners = np.expand_dims(np.argmax(scores, axis=axis), axis)
    np.put_along_axis(result, winners, 1, axis=axis)
    return result


def _activation(name: str) -> Callable[..., np.ndarray]:
    kind = ACTIVATIONS[name]

    def apply(x: ArrayLike, /, *, out: Optional[np.ndarray] = None) -> np.ndarray:
        x = as_float_array(x, "x")
        if out is None:
            if x.flags.c_contiguous:
                out_array = np.empty(x.shape, dtype=x.dtype)
                source = x
            else:
                out_array = source = np.array(x, order="C")   # a private copy: work in place
        else:
            out_array = check_out(out, x.shape, x.dtype)
            check_out_in_place(out_array, x)
            source = np.ascontiguousarray(x)
        _kernels.activation(source.reshape(-1), out_array.reshape(-1), kind)
        if out is None and out_array.ndim == 0:
            return out_array[()]
        return out_array

    apply.__name__ = apply.__qualname__ = name
    return apply


sigmoid = _activation("sigmoid")
sigmoid.__doc__ = """Logistic sigmoid 1 / (1 + exp(-x)), elementwise.

Evaluated from ``exp(-abs(x))``, so it never overflows: sigmoid(-1000) is exactly 0 with no warning,
and nothing is clipped.

Examples
--------
>>> import fusedmlp
>>> fusedmlp.sigmoid([-1000.0, 0.0, 1000.0])
array([0. , 0.5, 1. ])
"""

relu = _activation("relu")
relu.__doc__ = """Rectified linear unit max(x, 0), elementwise (NaN stays NaN).

Its derivative at 0 is taken as 0, everywhere in fusedmlp.

Examples
--------
>>> import fusedmlp
>>> fusedmlp.relu([-2.0, 0.0, 3.0])
array([0., 0., 3.])
"""

tanh = _activation("tanh")
tanh.__doc__ = """Hyperbolic tangent, elementwise.

Examples
--------
>>> import fusedmlp
>>> fusedmlp.tanh([0.0])
array([0.])
"""

step = _activation("step")
step.__doc__ = """Heaviside step: 1 where x > 0, else 0 (NaN stays NaN).

Its derivative is 0 everywhere, so layers below a step activation cannot learn by gradient.

Examples
--------
>>> import fusedmlp
>>> fusedmlp.step([-1.0, 0.0, 2.0])
array([0., 0., 1.])
"""

leaky_relu = _activation("leaky_relu")
leaky_relu.__doc__ = """Leaky ReLU: x where x > 0, else 0.01 * x.

Examples
--------
>>> import fusedmlp
>>> fusedmlp.leaky_relu([-100.0, 2.0])
array([-1.,  2.])
"""

elu = _activation("elu")
elu.__doc__ = """Exponential linear unit: x where x > 0, else exp(x) - 1 (computed with expm1).

Examples
--------
>>> import fusedmlp
>>> fusedmlp.elu([1.0, 0.0])
array([1., 0.])
"""

softplus = _activation("softplus")
softplus.__doc__ = """Softplus log(1 + exp(x)), evaluated as ``max(x, 0) + log1p(exp(-abs(x)))``
(no overflow).

Examples
--------
>>> import fusedmlp
>>> fusedmlp.softplus([0.0, 2.0])
array([0.69314718, 2.12692801])
>>> float(fusedmlp.softplus(1000.0))        # no overflow
1000.0
"""

identity = _activation("identity")
identity.__doc__ = """The identity activation (a copy of x as a float array)."""
