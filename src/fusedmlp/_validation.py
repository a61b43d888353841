"""Input checks shared by every public entry point.

The compiled kernels run with bounds checks off and never raise on data: every shape, dtype,
size and finiteness check happens here, before any kernel runs. Messages name the argument,
what was expected and what came.
"""

from __future__ import annotations

import math

import numpy as np

from . import _kernels
from ._codes import SOFT_TARGET_TOLERANCE

#: BLAS takes 32-bit integers for every dimension.
BLAS_INT_MAX = 2**31 - 1

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def describe(x) -> str:
    """A short description of what came, for error messages."""
    if isinstance(x, np.ndarray):
        return f"an array of dtype {x.dtype} and shape {x.shape}"
    return f"{type(x).__name__} {x!r}"[:120]


def as_model_dtype(dtype, name: str = "dtype") -> np.dtype:
    """np.dtype(dtype), which must be float32 or float64."""
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from exc
    if resolved not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {resolved}")
    return resolved


def as_float_array(x, name: str, dtype=None, check_shape=None) -> np.ndarray:
    """x as a real floating array.

    With dtype=None, float32 and float64 keep their dtype and integers/bools become float64;
    otherwise the result has `dtype`. float16, complex, object and string data are refused.
    `check_shape(array)` runs before any conversion, so a refused shape never costs a copy.
    """
    if isinstance(x, np.ndarray):
        array = x
    else:
        try:
            array = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} must be a real-valued array-like, got {describe(x)}: {exc}") from exc
    kind = array.dtype.kind
    # Byte order is storage, not type: a big-endian float64 is a float64 (made native below).
    native = array.dtype.newbyteorder("=") if kind == "f" else array.dtype
    if kind not in "fiub" or kind == "f" and native not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must hold real numbers (float32, float64, integers or bools), "
            f"got dtype {array.dtype}"
        )
    if check_shape is not None:
        check_shape(array)
    target = dtype if dtype is not None else (native if kind == "f" else np.float64)
    if array.dtype != target:
        array = array.astype(target)
    return array


def as_matrix(x, name: str, dtype=None, n_columns: int | None = None) -> np.ndarray:
    """x as a C-contiguous 2-D float array (of `dtype` if given), copied only when needed."""

    def check_shape(array):
        if array.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {array.shape}")
        if n_columns is not None and array.shape[1] != n_columns:
            raise ValueError(f"{name} must have {n_columns} columns, got shape {array.shape}")
        check_blas_size(array.shape, name)

    return np.ascontiguousarray(as_float_array(x, name, dtype, check_shape))


def check_blas_size(shape, name: str) -> None:
    for extent in shape:
        if extent > BLAS_INT_MAX:
            raise ValueError(
                f"{name} has a dimension of {extent}, beyond BLAS's 32-bit limit of {BLAS_INT_MAX}"
            )


def check_finite(array: np.ndarray, name: str) -> None:
    """Refuse NaN and inf (array must be C-contiguous)."""
    if not _kernels.all_finite(array.reshape(-1)):
        raise ValueError(f"{name} contains NaN or infinity")


def check_out(out, shape, dtype, name: str = "out") -> np.ndarray:
    """An `out=` array must be a writable, C-contiguous ndarray of exactly this shape and dtype."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {describe(out)}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return out


def _overlap(out: np.ndarray, array: np.ndarray) -> bool:
    """Whether `array` shares memory with the C-contiguous `out`.

    Bounds first (np.may_share_memory: two address comparisons). When the bounds overlap and
    `array` is contiguous too, both cover their whole address ranges, so the bounds are the
    answer. A strided `array` whose bounds overlap gets NumPy's exact test (one strided
    array against a contiguous one is a small problem for it); should NumPy give up, the
    overlap is assumed (refused, never trusted)."""
    if not np.may_share_memory(out, array):
        return False
    if array.flags.c_contiguous or array.flags.f_contiguous:
        return True
    try:
        return bool(np.shares_memory(out, array))
    except np.exceptions.TooHardError:
        return True


def check_out_disjoint(out: np.ndarray, operands, name: str = "out") -> None:
    """Refuse an `out=` that overlaps any array the call reads while it writes `out`.

    operands: (description, array) pairs, e.g. ``("X", X)``, ``("X.data", X.data)``,
    ``("the model's parameters", parameters)``. An overlapping `out` would be written while
    those are still being read, and the call would return wrong values."""
    for what, array in operands:
        if array is not None and _overlap(out, array):
            raise ValueError(f"{name} must not overlap {what} (it is read while {name} is "
                             "written)")


def check_out_in_place(out: np.ndarray, x: np.ndarray, name: str = "out") -> None:
    """For the elementwise and row-wise array functions: `out` may be `x` itself (the same
    memory, shape and strides: in place, like ``np.exp(x, out=x)``), or memory disjoint from
    it; any other overlap would be written while still being read."""
    same = (out.shape == x.shape and out.strides == x.strides and out.dtype == x.dtype
            and out.__array_interface__["data"][0] == x.__array_interface__["data"][0])
    if not same:
        check_out_disjoint(out, (("x", x),), name)


def normalize_axis(axis, ndim: int, name: str = "axis") -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {describe(axis)}")
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(int(axis), ndim)
    return int(axis) % ndim


def as_positive_int(value, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer (bools and floats refused) in [minimum, maximum], as an int: the one
    validator of integer settings."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {describe(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def as_real(value, name: str, *, low=-math.inf, high=math.inf, low_open=False,
            high_open=False) -> float:
    """A finite real number (bools and strings refused) in the interval from low to high
    (closed unless low_open/high_open), as a float: the one validator of real-valued
    settings (optimisers, schedules, fit keywords and the scikit-learn estimators' params)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {describe(value)}")
    number = float(value)
    ok = ((number > low if low_open else number >= low)
          and (number < high if high_open else number <= high))
    if not ok or not math.isfinite(number):
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name} must lie in {lo}{low}, {high}{hi}, got {value}")
    return number


def as_bool(value, name: str) -> bool:
    """True or False (Python's or NumPy's bools only: "no" and None are refused)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {describe(value)}")
    return bool(value)


def as_labels(y, name: str, n_classes: int | None = None, ndim: int | None = 1) -> np.ndarray:
    """Integer class labels as a C-contiguous int64 array of `ndim` dimensions (any with
    None), checked against [0, n_classes). Integral floats are accepted.

    The range is checked in the labels' own dtype, before any cast, so that a message shows
    the offending values as given (a uint64 2**63 + 1 or a float 1e20, not what a wrapping
    cast to int64 makes of them).
    """
    if (isinstance(y, np.ndarray) and y.dtype == np.int64 and y.flags.c_contiguous
            and (ndim is None or y.ndim == ndim)):
        if n_classes is not None and y.size:
            _check_label_range(y, name, n_classes)
        return y
    array = np.asarray(y)
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D class labels, got shape {array.shape}")
    kind = array.dtype.kind
    if kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(f"{name} must hold integral class labels, got non-integral values")
    elif kind not in "iu":
        raise TypeError(f"{name} must hold integer class labels, got dtype {array.dtype}")
    if array.size:
        _check_label_range(array, name, n_classes)
    return np.ascontiguousarray(array, dtype=np.int64)


def _check_label_range(array, name, n_classes):
    low, high = array.min(), array.max()
    if n_classes is not None:
        if low < 0 or high >= n_classes:
            raise ValueError(f"{name} must lie in [0, {n_classes}), got labels from {low} to {high}")
    elif low < -2**63 or high >= 2**63:
        raise ValueError(f"{name} must hold class labels within int64's range, got values "
                         f"from {low} to {high}")


def as_sample_weight(sample_weight, n: int, dtype):
    """(weights, their sum) for ``sample_weight`` of shape (n,): finite, non-negative, not all
    zero, C-contiguous in `dtype`, scaled so that the largest is in [0.5, 1);
    ``(None, float(n))`` for ``sample_weight=None``.

    The scale is a power of two, so it is exact (only weights some 2**1000 times smaller than
    the largest can round, to zero, as they would in any sum with it) and changes no weighted
    mean; it keeps the sum and every weight * loss product from overflowing (weights of 1e308
    would otherwise sum to inf and make every gradient zero), and lets float64 weights beyond
    float32's range weigh a float32 model.
    """
    if sample_weight is None:
        return None, float(n)
    weights = np.ascontiguousarray(as_float_array(sample_weight, "sample_weight"))
    if weights.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {weights.shape}")
    check_finite(weights, "sample_weight")
    if n and weights.min() < 0:
        raise ValueError(f"sample_weight must be non-negative, got {weights.min()}")
    if not (n and weights.max() > 0):
        raise ValueError("sample_weight must have a positive sum (not all zero)")
    weights = np.ldexp(weights, -weight_exponent(weights)).astype(dtype, copy=False)
    return weights, float(weights.sum(dtype=np.float64))


def weight_exponent(weights) -> int:
    """e such that ``np.ldexp(weights, -e)`` brings the largest of `weights` (finite, >= 0,
    not all zero) into [0.5, 1): exact, barring weights underflowing to zero."""
    return math.frexp(float(weights.max()))[1]


def check_distribution(targets: np.ndarray, name: str) -> None:
    """Refuse soft targets that are not class probabilities: each entry finite and >= 0,
    each row summing to 1 within SOFT_TARGET_TOLERANCE (targets: C-contiguous, 2-D)."""
    check_finite(targets, name)
    if targets.size == 0:
        return
    low = targets.min()
    if low < 0:
        raise ValueError(f"{name} holds soft targets (class probabilities), which must be "
                         f"non-negative, got a value of {low}")
    sums = targets.sum(axis=1, dtype=np.float64)
    off = np.abs(sums - 1.0)
    worst = int(np.argmax(off))
    if off[worst] > SOFT_TARGET_TOLERANCE:
        raise ValueError(f"{name} holds soft targets (class probabilities), whose rows must "
                         f"sum to 1 (within {SOFT_TARGET_TOLERANCE:g}), got row {worst} "
                         f"summing to {sums[worst]!r}")
