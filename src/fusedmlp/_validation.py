"""Input checks shared by every public entry point.

The compiled kernels run with bounds checks off and never raise on data: every shape, dtype,
size and finiteness check happens here, before any kernel runs. Messages name the argument,
what was expected and what came.
"""

from __future__ import annotations

import numpy as np

from . import _kernels

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


def normalize_axis(axis, ndim: int, name: str = "axis") -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {describe(axis)}")
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(int(axis), ndim)
    return int(axis) % ndim


def as_positive_int(value, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {describe(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def as_labels(y, name: str, n_classes: int | None = None, ndim: int | None = 1) -> np.ndarray:
    """Integer class labels as a C-contiguous int64 array of `ndim` dimensions (any with
    None), checked against [0, n_classes). Integral floats are accepted."""
    if (isinstance(y, np.ndarray) and y.dtype == np.int64 and y.flags.c_contiguous
            and (ndim is None or y.ndim == ndim)):
        labels = y
    else:
        array = np.asarray(y)
        if ndim is not None and array.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D class labels, got shape {array.shape}")
        if array.dtype.kind in "iu":
            labels = np.ascontiguousarray(array, dtype=np.int64)
        elif array.dtype.kind == "f":
            if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
                raise ValueError(f"{name} must hold integral class labels, got non-integral values")
            labels = array.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integer class labels, got dtype {array.dtype}")
    if n_classes is not None and labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"{name} must lie in [0, {n_classes}), got labels from {labels.min()} to {labels.max()}"
        )
    return labels


def as_sample_weight(sample_weight, n: int, dtype):
    """(weights, their sum): non-negative finite weights of shape (n,) with a positive sum,
    C-contiguous in `dtype`; ``(None, float(n))`` for ``sample_weight=None``."""
    if sample_weight is None:
        return None, float(n)
    weights = np.ascontiguousarray(as_float_array(sample_weight, "sample_weight", dtype))
    if weights.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {weights.shape}")
    check_finite(weights, "sample_weight")
    if np.any(weights < 0):
        raise ValueError("sample_weight must be non-negative")
    total = float(weights.sum(dtype=np.float64))
    if not total > 0:
        raise ValueError("sample_weight must have a positive sum")
    return weights, total
