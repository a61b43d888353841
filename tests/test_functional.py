"""The public array functions of fusedmlp (src/fusedmlp/functional.py).

Checked against the float64 oracle in oracle.py and against SciPy, for NumPy's
conventions (axis, out=, dtype preservation, 0-d input), extreme and hostile values, read-only,
strided and Fortran-ordered inputs, and every refusal of docs/architecture.md (Inputs refused)
that applies to array functions, with messages that name the argument.
"""

import re
import warnings

import numpy as np
import pytest
import scipy.special

import fusedmlp

import oracle

DTYPES = [np.float32, np.float64]

ACTIVATION_NAMES = ["identity", "relu", "sigmoid", "tanh", "step", "leaky_relu", "elu", "softplus"]
PUBLIC_ACTIVATIONS = [name for name in ACTIVATION_NAMES if name != "identity"]
ROWWISE = {"softmax": (fusedmlp.softmax, oracle.softmax, scipy.special.softmax),
           "log_softmax": (fusedmlp.log_softmax, oracle.log_softmax, scipy.special.log_softmax)}

#: (shape, axis) pairs: every axis of 1-D, 2-D and 3-D inputs, positive and negative.
AXIS_CASES = [(shape, axis) for shape in [(6,), (4, 7), (3, 4, 5)]
              for axis in range(-len(shape), len(shape))]


def assert_close(actual, expected, dtype):
    """fusedmlp's own kernels against the float64 oracle (or SciPy) on the same input values:
    within the rounding of their few operations, relative to the largest expected value (a
    sum's error is relative to its terms). An elementwise function rounds within
    oracle.ELEMENTWISE terms (3 ulp, tests/test_vecmath.py); a softmax or log-softmax row adds
    an exponential, the row's sum of n terms (n at most the array's longest axis) and a
    division or a log."""
    expected = np.asarray(expected, np.float64)
    n = max(np.shape(expected), default=1)
    oracle.assert_rounding_close(np.asarray(actual, np.float64), expected, dtype,
                                 2 * oracle.ELEMENTWISE + n + 1)


def reference_along(function, x, axis):
    """Apply a row-wise reference function along `axis` of an n-D array."""
    moved = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    rows = function(moved.reshape(-1, moved.shape[-1]))
    return np.moveaxis(rows.reshape(moved.shape), -1, axis)


def sample(shape, dtype, seed=0, scale=3.0):
    return (np.random.default_rng(seed).normal(0, scale, shape)).astype(dtype)


def activation(name):
    return getattr(fusedmlp.functional, name)


# --------------------------------------------------------------------------- conventions

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", AXIS_CASES)
@pytest.mark.parametrize("which", list(ROWWISE))
def test_rowwise_along_every_axis(which, shape, axis, dtype):
    function, ref, scipy_function = ROWWISE[which]
    x = sample(shape, dtype)
    result = function(x, axis=axis)
    assert result.dtype == dtype and result.shape == shape
    assert_close(result, reference_along(ref, x, axis), dtype)
    assert_close(result, scipy_function(x.astype(np.float64), axis=axis), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("which", list(ROWWISE))
def test_rowwise_out_is_honoured_and_returned(which, axis, dtype):
    function, ref, _ = ROWWISE[which]
    x = sample((3, 4, 5), dtype)
    out = np.full(x.shape, np.nan, dtype)
    result = function(x, axis=axis, out=out)
    assert result is out
    assert_close(out, reference_along(ref, x, axis), dtype)


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("which", list(ROWWISE))
def test_rowwise_in_place(which, axis):
    function, ref, _ = ROWWISE[which]
    x = sample((4, 6), np.float64)
    expected = reference_along(ref, x, axis)
    assert function(x, axis=axis, out=x) is x
    assert_close(x, expected, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (1,), (7,), (3, 4), (2, 3, 4)])
@pytest.mark.parametrize("name", PUBLIC_ACTIVATIONS)
def test_activation_matches_reference(name, shape, dtype):
    x = sample(shape, dtype, scale=4.0)
    result = activation(name)(x)
    assert result.dtype == dtype and np.shape(result) == shape
    assert_close(result, oracle.ACTIVATIONS[name](x), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", PUBLIC_ACTIVATIONS)
def test_activation_out_is_honoured_and_returned(name, dtype):
    x = sample((3, 5), dtype)
    out = np.full(x.shape, np.nan, dtype)
    assert activation(name)(x, out=out) is out
    assert_close(out, oracle.ACTIVATIONS[name](x), dtype)
    expected = oracle.ACTIVATIONS[name](x)
    assert activation(name)(x, out=x) is x                   # in place, like np.exp(x, out=x)
    assert_close(x, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", PUBLIC_ACTIVATIONS)
def test_activation_of_0d_input_is_a_scalar(name, dtype):
    # Like a ufunc: a 0-d array or a scalar in, a NumPy scalar of the same dtype out...
    for x in (np.array(0.75, dtype), dtype(0.75)):
        result = activation(name)(x)
        assert not isinstance(result, np.ndarray) and type(result) is dtype
        assert_close(result, oracle.ACTIVATIONS[name](0.75), dtype)
    # ...unless out= is given, which is returned.
    out = np.empty((), dtype)
    assert activation(name)(np.array(0.75, dtype), out=out) is out
    assert_close(out, oracle.ACTIVATIONS[name](0.75), dtype)


@pytest.mark.parametrize("name", PUBLIC_ACTIVATIONS)
def test_activation_of_python_scalar(name):
    result = activation(name)(-0.5)
    assert type(result) is np.float64
    assert_close(result, oracle.ACTIVATIONS[name](-0.5), np.float64)


FUNCTIONS_OF_FLOATS = {
    "softmax": fusedmlp.softmax, "log_softmax": fusedmlp.log_softmax,
    "one_hot_encoding": fusedmlp.one_hot_encoding,
    **{name: activation(name) for name in PUBLIC_ACTIVATIONS},
}


@pytest.mark.parametrize("input_dtype, result_dtype", [
    (np.float32, np.float32), (np.float64, np.float64), (">f8", np.float64), (">f4", np.float32),
    (np.int8, np.float64), (np.int32, np.float64), (np.int64, np.float64),
    (np.uint8, np.float64), (np.bool_, np.float64),
])
@pytest.mark.parametrize("name", list(FUNCTIONS_OF_FLOATS))
def test_dtype_preservation(name, input_dtype, result_dtype):
    x = np.array([[1, 0, 1], [0, 0, 1]], dtype=input_dtype)
    result = FUNCTIONS_OF_FLOATS[name](x)
    assert result.dtype == result_dtype
    if name in ROWWISE:
        assert_close(result, ROWWISE[name][1](x), result_dtype)
    elif name != "one_hot_encoding":
        assert_close(result, oracle.ACTIVATIONS[name](x), result_dtype)


@pytest.mark.parametrize("name", list(FUNCTIONS_OF_FLOATS))
def test_lists_become_float64(name):
    assert FUNCTIONS_OF_FLOATS[name]([[1, 2], [3, 5]]).dtype == np.float64
    assert FUNCTIONS_OF_FLOATS[name]([[1.5, 2.0]]).dtype == np.float64


@pytest.mark.parametrize("name", list(FUNCTIONS_OF_FLOATS))
def test_data_positional_only_options_keyword_only(name):
    function = FUNCTIONS_OF_FLOATS[name]
    with pytest.raises(TypeError):
        function(x=np.ones(3))
    if name in ROWWISE or name == "one_hot_encoding":
        with pytest.raises(TypeError):
            function(np.ones(3), -1)                          # axis is keyword-only
    else:
        with pytest.raises(TypeError):
            function(np.ones(3), np.empty(3))                 # out is keyword-only


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_matches_scipy_expit(dtype):
    x = np.concatenate([np.linspace(-40, 40, 161), [-700, 700, 0.0, -0.0]]).astype(dtype)
    assert_close(fusedmlp.sigmoid(x), scipy.special.expit(x.astype(np.float64)), dtype)
    # elementwise too: the logistic rounds within oracle.ELEMENTWISE terms of each value
    # (plus the smallest normal: fusedmlp flushes subnormal results to 0)
    expected = scipy.special.expit(x.astype(np.float64))
    oracle.assert_within(fusedmlp.sigmoid(x), expected,
                         oracle.rounding_tolerance(dtype, oracle.ELEMENTWISE) * expected
                         + np.finfo(dtype).tiny)


# --------------------------------------------------------------------------- softmax numerics

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("which", list(ROWWISE))
def test_rowwise_at_huge_logits(which, dtype):
    x = np.array([[1e30, -1e30, 0.0],
                  [-1e30, 1e30, 1e30],
                  [1e4, -1e4, 1e4 - 1],
                  [-1e4, -1e4, -1e4]], dtype)
    with np.errstate(all="raise"):
        result = ROWWISE[which][0](x)
    assert np.isfinite(result).all()
    if which == "softmax":
        e = np.exp(-1.0)
        expected = [[1, 0, 0], [0, 0.5, 0.5], [1 / (1 + e), 0, e / (1 + e)], [1 / 3] * 3]
    else:
        log_sum = np.log1p(np.exp(-1.0))
        expected = [[0, -2e30, -1e30], [-2e30 - np.log(2), -np.log(2), -np.log(2)],
                    [-log_sum, -2e4 - log_sum, -1 - log_sum], [-np.log(3)] * 3]
    assert_close(result, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_minus_infinity_entries_get_probability_zero(dtype):
    x = np.array([[-np.inf, 1.0, 2.0, -np.inf], [0.0, -np.inf, 0.0, 0.0]], dtype)
    p = fusedmlp.softmax(x)
    assert p[0, 0] == 0 and p[0, 3] == 0 and p[1, 1] == 0
    assert_close(p[0, 1:3], scipy.special.softmax([1.0, 2.0]), dtype)
    assert_close(p[1], [1 / 3, 0, 1 / 3, 1 / 3], dtype)
    log_p = fusedmlp.log_softmax(x)
    assert log_p[0, 0] == -np.inf and log_p[1, 1] == -np.inf
    assert_close(log_p[1, [0, 2, 3]], [-np.log(3)] * 3, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("which", list(ROWWISE))
def test_row_of_all_minus_infinity_is_nan_like_scipy(which, dtype):
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.0, 1.0, 2.0]], dtype)
    result = ROWWISE[which][0](x)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ROWWISE[which][2](x.astype(np.float64), axis=-1)
    assert np.isnan(expected[0]).all()
    assert np.isnan(result[0]).all()
    assert_close(result[1], expected[1], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("which", list(ROWWISE))
def test_nan_propagates_to_its_whole_slice(which, axis, dtype):
    x = sample((4, 5), dtype)
    x[2, 3] = np.nan
    result = ROWWISE[which][0](x, axis=axis)
    nan_slice = (2, slice(None)) if axis == -1 else (slice(None), 3)
    assert np.isnan(result[nan_slice]).all()
    assert np.isnan(result).sum() == (5 if axis == -1 else 4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_of_length_one(dtype):
    x = np.array([[3.0], [-1e30], [0.0]], dtype)
    oracle.assert_same_bits(fusedmlp.softmax(x), np.ones((3, 1)), why=oracle.EXACT)
    oracle.assert_same_bits(fusedmlp.log_softmax(x), np.zeros((3, 1)), why=oracle.EXACT)
    oracle.assert_same_bits(fusedmlp.softmax(np.array([7.0], dtype)), [1.0], why=oracle.EXACT)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", [((0, 5), -1), ((0, 5), 0), ((5, 0), -1), ((2, 0, 3), 1),
                                         ((0,), 0)])
@pytest.mark.parametrize("which", list(ROWWISE))
def test_empty_input(which, shape, axis, dtype):
    result = ROWWISE[which][0](np.empty(shape, dtype), axis=axis)
    assert result.shape == shape and result.dtype == dtype
    out = np.empty(shape, dtype)
    assert ROWWISE[which][0](np.empty(shape, dtype), axis=axis, out=out) is out


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_softmax_finite_where_softmax_underflows(dtype):
    gap = 1000.0 if dtype == np.float64 else 200.0          # exp(-gap) underflows to 0
    x = np.array([[0.0, -gap, -gap / 2]], dtype)
    assert fusedmlp.softmax(x)[0, 1] == 0
    log_p = fusedmlp.log_softmax(x)
    assert np.isfinite(log_p).all()
    assert_close(log_p, [[0.0, -gap, -gap / 2]], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_at_plus_minus_1000_is_exact_and_quiet(dtype):
    x = np.array([-1000.0, 1000.0, -np.inf, np.inf], dtype)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        result = fusedmlp.sigmoid(x)
    oracle.assert_same_bits(result, [0.0, 1.0, 0.0, 1.0], why=oracle.EXACT)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(FUNCTIONS_OF_FLOATS))
def test_extreme_inputs_raise_no_warning(name, dtype):
    x = np.array([[-1e30, -1000.0, -100.0, 0.0, 100.0, 1000.0, 1e30]], dtype)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        result = FUNCTIONS_OF_FLOATS[name](x)
    assert np.isfinite(result).all()
    if name in ROWWISE:
        assert_close(result, ROWWISE[name][1](x), dtype)
    elif name != "one_hot_encoding":
        assert_close(result, oracle.ACTIVATIONS[name](x), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", PUBLIC_ACTIVATIONS)
def test_activations_propagate_nan(name, dtype):
    result = activation(name)(np.array([np.nan, 2.0], dtype))
    assert np.isnan(result[0]) and not np.isnan(result[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_derivative_at_zero_is_zero(dtype):
    # Pre-activations exactly 0 (W = 0, b = 0): the gradient must not flow.
    layer = fusedmlp.Dense(3, 2, activation="relu", dtype=dtype, seed=0)
    layer.W = np.zeros((3, 2))
    A = layer.forward(np.ones((4, 3)))
    oracle.assert_same_bits(A, np.zeros_like(A), why=oracle.EXACT)
    layer.backward(np.ones((4, 2)))
    oracle.assert_same_bits(layer.db, np.zeros_like(layer.db), why=oracle.EXACT)
    oracle.assert_same_bits(layer.dW, np.zeros_like(layer.dW), why=oracle.EXACT)


# --------------------------------------------------------------------------- layouts

LAYOUTS = {
    "read_only": lambda x: _read_only(x),
    "every_second_row": lambda x: np.repeat(x, 2, axis=0)[::2],
    "every_third_column": lambda x: np.repeat(x, 3, axis=1)[:, ::3],
    "fortran": lambda x: np.asfortranarray(x),
    "reversed": lambda x: x[::-1, ::-1].copy()[::-1, ::-1],
    "read_only_fortran_strided":
        lambda x: _read_only(np.asfortranarray(np.repeat(x, 2, axis=1))[:, ::2]),
}


def _read_only(x):
    x = np.array(x)
    x.flags.writeable = False
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", list(FUNCTIONS_OF_FLOATS))
def test_read_only_strided_and_fortran_inputs(name, layout, dtype):
    original = sample((6, 9), dtype)
    x = LAYOUTS[layout](original.copy())
    oracle.assert_same_bits(x, original, why=oracle.COPY)
    before = x.copy()
    function = FUNCTIONS_OF_FLOATS[name]
    for kwargs in ([{"axis": -1}, {"axis": 0}] if name in ROWWISE or name == "one_hot_encoding"
                   else [{}]):
        result = function(x, **kwargs)
        assert result.dtype == dtype and result.shape == original.shape
        if name in ROWWISE:
            expected = reference_along(ROWWISE[name][1], original, kwargs["axis"])
        elif name == "one_hot_encoding":
            expected = _one_hot_of_argmax(original, kwargs["axis"])
        else:
            expected = oracle.ACTIVATIONS[name](original)
        assert_close(result, expected, dtype)
    oracle.assert_same_bits(x, before, why=oracle.UNTOUCHED)     # the input is never written


def test_strided_1d_input():
    base = sample((20,), np.float64)
    x = base[::2]
    assert_close(fusedmlp.softmax(x), scipy.special.softmax(x), np.float64)
    assert_close(fusedmlp.sigmoid(x), scipy.special.expit(x), np.float64)
    assert_close(fusedmlp.log_softmax(x[::-1]), scipy.special.log_softmax(x[::-1]), np.float64)


# --------------------------------------------------------------------------- one_hot

def _one_hot_of_argmax(scores, axis):
    """Independent expression: compare each entry with the index of the first maximum."""
    winners = np.expand_dims(np.argmax(scores, axis=axis), axis)
    positions = np.arange(scores.shape[axis]).reshape(
        [-1 if a == axis % scores.ndim else 1 for a in range(scores.ndim)])
    return (positions == winners).astype(np.float64)


@pytest.mark.parametrize("labels, num_classes", [
    ([2, 0, 1, 2], 3), (np.array([0, 4], np.int32), 5), (np.array([1, 0], np.uint8), 2),
    ([0.0, 2.0], 3), (np.array(1), 4), ([[0, 1], [1, 2]], 3), ([], 4), ([0], 1),
    (np.array([3, 1]), np.int64(4)),
])
def test_one_hot(labels, num_classes):
    result = fusedmlp.one_hot(labels, num_classes)
    labels = np.asarray(labels).astype(np.int64)
    expected = np.zeros(labels.shape + (int(num_classes),))
    if labels.size:
        expected = np.eye(int(num_classes))[labels]
    assert result.dtype == np.float64 and result.shape == labels.shape + (int(num_classes),)
    oracle.assert_same_bits(result, expected, why=oracle.EXACT)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8, np.bool_, "float32"])
def test_one_hot_dtype_argument(dtype):
    result = fusedmlp.one_hot([1, 0], 2, dtype=dtype)
    assert result.dtype == np.dtype(dtype)
    oracle.assert_same_bits(result, [[0, 1], [1, 0]], why=oracle.EXACT)


@pytest.mark.parametrize("labels", [[-1, 0], [0, 3], [5], [[0, 1], [2, -7]]])
def test_one_hot_refuses_labels_out_of_range(labels):
    with pytest.raises(ValueError, match=r"labels.*\[0, 3\)"):
        fusedmlp.one_hot(labels, 3)


@pytest.mark.parametrize("labels", [[0.5, 1.0], [np.nan], [np.inf], [1.0, -np.inf]])
def test_one_hot_refuses_non_integral_labels(labels):
    with pytest.raises(ValueError, match=r"labels.*integral"):
        fusedmlp.one_hot(labels, 3)


@pytest.mark.parametrize("labels", [["a", "b"], np.array([1, 2], dtype=object),
                                    np.array([1 + 0j]), [b"1"]])
def test_one_hot_refuses_non_numeric_labels(labels):
    with pytest.raises(TypeError, match=r"\blabels\b"):
        fusedmlp.one_hot(labels, 3)


@pytest.mark.parametrize("num_classes, error", [
    (0, ValueError), (-2, ValueError), (True, TypeError), (False, TypeError), (3.0, TypeError),
    ("3", TypeError), (None, TypeError),
])
def test_one_hot_refuses_bad_num_classes(num_classes, error):
    with pytest.raises(error, match=r"\bnum_classes\b"):
        fusedmlp.one_hot([0, 1], num_classes)


@pytest.mark.parametrize("dtype", [np.complex128, object, "not a dtype", str])
def test_one_hot_refuses_bad_dtype(dtype):
    with pytest.raises(TypeError, match=r"\bdtype\b"):
        fusedmlp.one_hot([0, 1], 2, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", AXIS_CASES)
def test_one_hot_encoding_along_every_axis(shape, axis, dtype):
    # Small integers make ties common.
    scores = np.random.default_rng(1).integers(0, 3, shape).astype(dtype)
    result = fusedmlp.one_hot_encoding(scores, axis=axis)
    assert result.dtype == dtype
    oracle.assert_same_bits(result, _one_hot_of_argmax(scores, axis), why=oracle.EXACT)
    oracle.assert_same_bits(result.sum(axis=axis), np.ones_like(result.sum(axis=axis)),
                            why=oracle.EXACT)


def test_one_hot_encoding_ties_go_to_the_first_maximum():
    scores = [[3.0, 3.0, 1.0], [0.0, 5.0, 5.0], [2.0, 2.0, 2.0], [-np.inf, -np.inf, -1.0]]
    oracle.assert_same_bits(fusedmlp.one_hot_encoding(scores),
                            [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]], why=oracle.EXACT)
    oracle.assert_same_bits(fusedmlp.one_hot_encoding([[1, 1], [1, 0]], axis=0), [[1, 1], [0, 0]],
                            why=oracle.EXACT)


def test_one_hot_encoding_nan_counts_as_the_maximum_like_argmax():
    oracle.assert_same_bits(fusedmlp.one_hot_encoding([[1.0, np.nan, 5.0]]), [[0, 1, 0]],
                            why=oracle.EXACT)


def test_one_hot_encoding_empty_batch_and_empty_axis():
    assert fusedmlp.one_hot_encoding(np.empty((0, 5))).shape == (0, 5)
    with pytest.raises(ValueError, match=r"\bscores\b"):
        fusedmlp.one_hot_encoding(np.empty((5, 0)))


# --------------------------------------------------------------------------- refusals

ARGUMENT_NAME = {name: ("scores" if name == "one_hot_encoding" else "x")
                 for name in FUNCTIONS_OF_FLOATS}


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "one_hot_encoding"])
@pytest.mark.parametrize("scalar", [1.0, np.float32(2.0), np.array(3.0)])
def test_rowwise_refuse_scalars(name, scalar):
    with pytest.raises(ValueError, match=rf"\b{ARGUMENT_NAME[name]}\b.*scalar"):
        FUNCTIONS_OF_FLOATS[name](scalar)


BAD_ARRAYS = {
    "float16": np.ones((2, 3), np.float16),
    "longdouble": np.ones((2, 3), np.longdouble),
    "complex64": np.ones((2, 3), np.complex64),
    "complex128": np.ones((2, 3), np.complex128),
    "object": np.ones((2, 3), object),
    "str": np.array([["1", "2", "3"]]),
    "bytes": np.array([[b"1", b"2"]]),
    "datetime": np.array(["2020-01-01"], dtype="datetime64[D]"),
    "str_list": [["a", "b"]],
    "complex_list": [[1 + 2j, 3.0]],
}


@pytest.mark.parametrize("bad", list(BAD_ARRAYS))
@pytest.mark.parametrize("name", list(FUNCTIONS_OF_FLOATS))
def test_refuse_non_real_dtypes(name, bad):
    x = BAD_ARRAYS[bad]
    came = re.escape(str(np.asarray(x).dtype))
    with pytest.raises(TypeError, match=rf"\b{ARGUMENT_NAME[name]}\b.*got dtype {came}"):
        FUNCTIONS_OF_FLOATS[name](x)


@pytest.mark.parametrize("name", list(FUNCTIONS_OF_FLOATS))
def test_refuse_ragged_lists(name):
    with pytest.raises((TypeError, ValueError), match=rf"\b{ARGUMENT_NAME[name]}\b"):
        FUNCTIONS_OF_FLOATS[name]([[1.0, 2.0], [3.0]])


def _non_contiguous(shape, dtype):
    return np.empty(shape[:-1] + (2 * shape[-1],), dtype)[..., ::2]


def _other_float(dtype):
    return np.float32 if dtype == np.float64 else np.float64


def _read_only_out(shape, dtype):
    out = np.empty(shape, dtype)
    out.flags.writeable = False
    return out


BAD_OUTS = {
    # name: (make out for the result shape and dtype, error type, what the message says)
    "read_only": (_read_only_out, ValueError, "read-only"),
    "non_contiguous": (_non_contiguous, ValueError, "contiguous"),
    "fortran": (lambda shape, dtype: np.empty(shape, dtype, order="F"), ValueError, "contiguous"),
    "wrong_dtype": (lambda shape, dtype: np.empty(shape, _other_float(dtype)), TypeError, "dtype"),
    "wrong_shape": (lambda shape, dtype: np.empty(shape[:-1] + (shape[-1] + 1,), dtype),
                    ValueError, "shape"),
    "transposed_shape": (lambda shape, dtype: np.empty(shape[::-1], dtype), ValueError, "shape"),
    "big_endian": (lambda shape, dtype: np.empty(shape, np.dtype(dtype).newbyteorder(">")),
                   TypeError, "dtype"),
    "list": (lambda shape, dtype: np.empty(shape, dtype).tolist(), TypeError, "ndarray"),
}

FUNCTIONS_WITH_OUT = ["softmax", "log_softmax"] + PUBLIC_ACTIVATIONS


@pytest.mark.parametrize("input_dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("bad", list(BAD_OUTS))
@pytest.mark.parametrize("name", FUNCTIONS_WITH_OUT)
def test_refuse_bad_out(name, bad, input_dtype):
    x = np.ones((3, 4), input_dtype)
    result_dtype = np.float32 if input_dtype == np.float32 else np.float64
    make_out, error, message = BAD_OUTS[bad]
    out = make_out((3, 4), result_dtype)
    with pytest.raises(error, match=rf"\bout\b.*{message}"):
        FUNCTIONS_OF_FLOATS[name](x, out=out)


def test_out_of_integer_input_must_be_float64():
    with pytest.raises(TypeError, match=r"\bout\b.*float64"):
        fusedmlp.softmax(np.ones((2, 3), np.int64), out=np.empty((2, 3), np.float32))


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "one_hot_encoding"])
@pytest.mark.parametrize("shape, axis", [((4,), 1), ((4,), -2), ((3, 4), 2), ((3, 4), -3),
                                         ((2, 3, 4), 3)])
def test_bad_axis_raises_axis_error(name, shape, axis):
    with pytest.raises(np.exceptions.AxisError):
        FUNCTIONS_OF_FLOATS[name](np.ones(shape), axis=axis)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "one_hot_encoding"])
@pytest.mark.parametrize("axis", [1.0, True, "0", None, (0, 1)])
def test_non_integer_axis_is_refused(name, axis):
    with pytest.raises(TypeError, match=r"\baxis\b"):
        FUNCTIONS_OF_FLOATS[name](np.ones((3, 4)), axis=axis)


def test_numpy_integer_axis_is_accepted():
    x = sample((3, 4), np.float64)
    expected = scipy.special.softmax(x, axis=0)
    assert_close(fusedmlp.softmax(x, axis=np.int64(0)), expected, np.float64)
