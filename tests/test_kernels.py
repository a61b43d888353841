"""The compiled kernels of ``fusedmlp._kernels`` against the float64 oracle in oracle.py.

Every kernel is checked over a dtype grid (float32, float64) with a tolerance per dtype and
over a grid of shapes (1x1, 1xn, mx1, odd sizes, one large block). Kernels write into outputs
passed in; optional arrays are passed as empty arrays.

Dense-layer data are small dyadic rationals, so that ``X @ W + b`` is exact in float32 as in
float64 and is never 0: the comparison is then not at the mercy of which side of a kink (relu,
step) a rounded pre-activation falls, and float32 errors come only from the activations.
"""

import numpy as np
import pytest

from fusedmlp import ACTIVATIONS, _kernels

import oracle

DTYPES = [np.float32, np.float64]

#: Relative tolerance per dtype; absolute tolerance is this times the largest expected value.
TOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-13}

#: Matrix shapes: 1x1, 1xn, mx1, odd sizes, one large block.
MATRIX_SHAPES = [(1, 1), (1, 17), (23, 1), (7, 13), (300, 257)]

#: Dense-layer shapes (batch, n_in, n_out).
DENSE_SHAPES = [(1, 1, 1), (1, 17, 6), (23, 1, 4), (9, 6, 1), (7, 13, 5), (300, 257, 33)]

ACTIVATION_NAMES = list(oracle.ACTIVATION_NAMES)


def test_activation_codes_match_reference_names():
    assert sorted(ACTIVATIONS, key=ACTIVATIONS.get) == ACTIVATION_NAMES


def assert_close(actual, expected, dtype, scale=None):
    """Per-dtype rtol; atol relative to the size of the expected values (sums cancel)."""
    tol = TOL[np.dtype(dtype)]
    expected = np.asarray(expected, dtype=np.float64)
    if scale is None:
        scale = np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0) or 1.0
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=tol, atol=tol * scale)


def dyadic(rng, shape, denominator, dtype, largest=3):
    """Integers in [-largest, largest] divided by a power of two: exact in float32."""
    return (rng.integers(-largest, largest + 1, size=shape) / denominator).astype(dtype)


def dense_data(shape, dtype, seed=0):
    """X, W, b with X @ W + b exact in float32 and an odd multiple of 1/64 (never 0)."""
    m, n_in, n_out = shape
    rng = np.random.default_rng(seed)
    X = dyadic(rng, (m, n_in), 4, dtype)                       # multiples of 1/4
    W = dyadic(rng, (n_in, n_out), 8, dtype)                   # multiples of 1/8
    b = ((2 * rng.integers(-64, 64, size=n_out) + 1) / 64).astype(dtype)
    return X, W, b


def empty_like_kernel(dtype):
    """The 'absent' optional arguments: (labels, targets, weights), None as the kernels take."""
    return None, None, None


# --------------------------------------------------------------------------- reference itself

@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_reference_derivatives_match_central_differences(name):
    # The reference is only useful if it is right: its derivatives against its own
    # activations, away from the kinks at 0.
    z = np.concatenate([np.linspace(-6, -0.05, 40), np.linspace(0.05, 6, 40)])
    h = 1e-6
    numeric = (oracle.ACTIVATIONS[name](z + h) - oracle.ACTIVATIONS[name](z - h)) / (2 * h)
    np.testing.assert_allclose(oracle.DERIVATIVES[name](z), numeric, rtol=1e-8, atol=1e-9)


# --------------------------------------------------------------------------- activation

SPECIAL_VALUES = [0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 20.0, -20.0, 100.0, -100.0,
                  1000.0, -1000.0, np.inf, -np.inf, np.nan]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATION_NAMES)
@pytest.mark.parametrize("size", [0, 1, 91, 77100])
def test_activation_matches_reference(name, dtype, size):
    rng = np.random.default_rng(size)
    x = np.concatenate([SPECIAL_VALUES, rng.normal(0, 5, size)])[:size].astype(dtype)
    out = np.full_like(x, 7.0)
    _kernels.activation(x, out, ACTIVATIONS[name])
    assert out.dtype == dtype
    expected = oracle.ACTIVATIONS[name](x)
    # Elementwise relative tolerance; values below float's smallest normal are subnormal in
    # one dtype and not the other, so they are compared absolutely.
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(out.astype(np.float64), expected, rtol=TOL[np.dtype(dtype)],
                                   atol=np.finfo(dtype).tiny)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_in_place(name, dtype):
    x = np.linspace(-4, 4, 33).astype(dtype)
    expected = oracle.ACTIVATIONS[name](x)
    _kernels.activation(x, x, ACTIVATIONS[name])
    assert_close(x, expected, dtype)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_propagates_nan(name):
    x = np.array([np.nan, 1.0, np.nan])
    out = np.empty_like(x)
    _kernels.activation(x, out, ACTIVATIONS[name])
    assert np.isnan(out[0]) and np.isnan(out[2]) and not np.isnan(out[1])


@pytest.mark.parametrize("kernel_call", [
    lambda x, out: _kernels.activation(x, out, 1),
    lambda x, out: _kernels.softmax(x.reshape(1, -1), out.reshape(1, -1), False),
], ids=["activation", "softmax"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_refuse_an_output_of_another_dtype(kernel_call, dtype):
    # Fused dispatch: a kernel never writes into, or silently converts to, another dtype.
    other = np.float64 if dtype == np.float32 else np.float32
    with pytest.raises(ValueError, match="dtype mismatch"):
        kernel_call(np.ones(4, dtype), np.empty(4, other))


# --------------------------------------------------------------------------- softmax

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", MATRIX_SHAPES)
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_matches_reference(shape, dtype, log):
    rng = np.random.default_rng(1)
    x = (rng.normal(0, 3, shape)).astype(dtype)
    out = np.empty_like(x)
    _kernels.softmax(x, out, log)
    assert out.dtype == dtype
    expected = (oracle.log_softmax if log else oracle.softmax)(x)
    assert_close(out, expected, dtype)
    if not log:
        np.testing.assert_allclose(out.sum(axis=1, dtype=np.float64), 1.0,
                                   rtol=10 * TOL[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_in_place(dtype, log):
    x = np.random.default_rng(2).normal(0, 3, (5, 9)).astype(dtype)
    expected = (oracle.log_softmax if log else oracle.softmax)(x)
    _kernels.softmax(x, x, log)
    assert_close(x, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_extreme_rows(dtype):
    x = np.array([
        [1e30, -1e30, 0.0],                 # huge logits: still finite
        [1e4, 1e4 - 1, -1e4],
        [-np.inf, 0.0, 1.0],                # -inf gets exactly 0
        [np.nan, 0.0, 1.0],                 # NaN turns the whole row NaN
        [-np.inf, -np.inf, -np.inf],        # all -inf: NaN, like scipy.special.softmax
        [5.0, 5.0, 5.0],
    ], dtype=dtype)
    p = np.empty_like(x)
    log_p = np.empty_like(x)
    _kernels.softmax(x, p, False)
    _kernels.softmax(x, log_p, True)
    assert_close(p[0], [1, 0, 0], dtype)
    assert_close(p[1], [1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1)), 0], dtype)
    assert p[2, 0] == 0 and np.isfinite(p[2]).all()
    assert np.isnan(p[3]).all() and np.isnan(log_p[3]).all()
    assert np.isnan(p[4]).all()
    assert_close(p[5], [1 / 3] * 3, dtype)
    assert_close(log_p[0], [0, -2e30, -1e30], dtype)
    assert log_p[2, 0] == -np.inf
    assert_close(log_p[1], oracle.log_softmax(x[1:2])[0], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_softmax_keeps_the_log_sum_apart_from_a_large_max(dtype):
    # log_softmax = (z - max) - log(sum): forming max + log(sum) first loses log(sum) next to
    # a large max (1e30 + log 2 == 1e30), and costs ulp(max) of accuracy at any max.
    x = np.array([[1e30, 1e30, -1e30],
                  [1e4, 1e4, 1e4],
                  [1e4, 1e4 - 1, 1e4 - 2]], dtype)
    log_p = np.empty_like(x)
    _kernels.softmax(x, log_p, True)
    expected = [[-np.log(2), -np.log(2), -2e30],
                [-np.log(3)] * 3,
                oracle.log_softmax(np.array([[0.0, -1.0, -2.0]]))[0]]
    np.testing.assert_allclose(log_p, expected, rtol=TOL[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (0, 0)])
def test_softmax_empty(dtype, shape):
    x = np.empty(shape, dtype)
    _kernels.softmax(x, np.empty_like(x), False)
    _kernels.softmax(x, np.empty_like(x), True)


def test_softmax_denominator_summed_in_float64():
    # 10^6 float32 terms of size ~0.6: a float32 running sum would be off by ~1e-5 relative;
    # in float64 each probability is within a few float32 ulps.
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 0, (1, 10**6)).astype(np.float32)
    x[0, 0] = 0.0
    p = np.empty_like(x)
    _kernels.softmax(x, p, False)
    np.testing.assert_allclose(p, oracle.softmax(x), rtol=4 * np.finfo(np.float32).eps)


# --------------------------------------------------------------------------- all_finite

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("position", [0, 500, 1022])
def test_all_finite_finds_each_bad_value(dtype, bad, position):
    x = np.random.default_rng(4).normal(size=1023).astype(dtype)
    assert _kernels.all_finite(x)
    x[position] = bad
    assert not _kernels.all_finite(x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_finite_on_extreme_finite_values_and_empty(dtype):
    info = np.finfo(dtype)
    x = np.array([info.max, -info.max, info.tiny, info.smallest_subnormal, 0.0, -0.0], dtype)
    assert _kernels.all_finite(x)
    assert _kernels.all_finite(np.empty(0, dtype))


# --------------------------------------------------------------------------- dense layer

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", DENSE_SHAPES)
@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_dense_forward_matches_reference(name, shape, dtype):
    X, W, b = dense_data(shape, dtype)
    out = np.full((shape[0], shape[2]), np.nan, dtype)
    _kernels.dense_forward(X, W, b, ACTIVATIONS[name], out)
    assert out.dtype == dtype
    expected, _ = oracle.dense_forward(X, W, b, name)
    assert_close(out, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", DENSE_SHAPES)
@pytest.mark.parametrize("name", ACTIVATION_NAMES)
@pytest.mark.parametrize("variant", ["separate", "dZ_is_dA", "no_dX"])
def test_dense_backward_matches_reference(name, shape, dtype, variant):
    m, n_in, n_out = shape
    X, W, b = dense_data(shape, dtype)
    A = np.empty((m, n_out), dtype)
    _kernels.dense_forward(X, W, b, ACTIVATIONS[name], A)
    dA = np.random.default_rng(5).normal(size=(m, n_out)).astype(dtype)
    dZ_ref, dW_ref, db_ref, dX_ref = oracle.dense_backward(X, W, b, dA, name)

    dZ = dA.copy() if variant == "dZ_is_dA" else np.full((m, n_out), np.nan, dtype)
    dA_in = dZ if variant == "dZ_is_dA" else dA
    dW = np.full((n_in, n_out), np.nan, dtype)
    db = np.full(n_out, np.nan, dtype)
    dX = None if variant == "no_dX" else np.full((m, n_in), np.nan, dtype)
    scratch = np.full(n_out, np.nan)
    _kernels.dense_backward(X, W, A, dA_in, ACTIVATIONS[name], dZ, dW, db, dX, scratch)

    for array in (dZ, dW, db, dX):
        assert array is None or array.dtype == dtype
    assert_close(dZ, dZ_ref, dtype)
    assert_close(dW, dW_ref, dtype)
    assert_close(db, db_ref, dtype)
    if variant == "no_dX":
        assert dX is None               # (None: the first layer's backward computes no dX)
    else:
        assert_close(dX, dX_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_empty_batch(dtype):
    X = np.empty((0, 3), dtype)
    W = np.ones((3, 2), dtype)
    b = np.ones(2, dtype)
    out = np.empty((0, 2), dtype)
    _kernels.dense_forward(X, W, b, ACTIVATIONS["relu"], out)
    dW = np.full((3, 2), np.nan, dtype)
    db = np.full(2, np.nan, dtype)
    _kernels.dense_backward(X, W, out, np.empty((0, 2), dtype), ACTIVATIONS["relu"],
                            np.empty((0, 2), dtype), dW, db, np.empty((0, 3), dtype), np.empty(2))
    assert (dW == 0).all() and (db == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["relu", "leaky_relu", "step"])
def test_derivative_at_exactly_zero(name, dtype):
    # Z = 0 exactly: relu'(0) = 0, step'(0) = 0, leaky_relu'(0) = its slope (the z <= 0 side).
    X = np.zeros((4, 3), dtype)
    W = np.ones((3, 2), dtype)
    b = np.zeros(2, dtype)
    A = np.empty((4, 2), dtype)
    _kernels.dense_forward(X, W, b, ACTIVATIONS[name], A)
    dA = np.ones((4, 2), dtype)
    dZ, dW, db, dX = (np.empty((4, 2), dtype), np.empty((3, 2), dtype), np.empty(2, dtype),
                      np.empty((4, 3), dtype))
    _kernels.dense_backward(X, W, A, dA, ACTIVATIONS[name], dZ, dW, db, dX, np.empty(2))
    slope = oracle.DERIVATIVES[name](0.0)
    assert slope == {"relu": 0.0, "leaky_relu": oracle.LEAKY_SLOPE, "step": 0.0}[name]
    np.testing.assert_array_equal(dZ, dtype(slope))
    assert_close(db, [4 * slope] * 2, dtype)
    np.testing.assert_array_equal(dW, 0.0)                      # X = 0


def _loss_through_layer(X, W, b, G, kind):
    """sum(G * f(X @ W + b)), forward by the kernel in float64."""
    A = np.empty((X.shape[0], W.shape[1]))
    _kernels.dense_forward(X, W, b, kind, A)
    return float(np.sum(G * A))


def relative_error(analytic, numeric):
    denominator = np.linalg.norm(analytic) + np.linalg.norm(numeric)
    return 0.0 if denominator == 0 else np.linalg.norm(analytic - numeric) / denominator


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_dense_backward_against_finite_differences(name):
    # Pre-activations are odd multiples of 1/64, far from every kink relative to h.
    kind = ACTIVATIONS[name]
    X, W, b = dense_data((5, 4, 3), np.float64, seed=6)
    G = np.random.default_rng(7).normal(size=(5, 3))
    A = np.empty((5, 3))
    _kernels.dense_forward(X, W, b, kind, A)
    dZ, dW, db, dX = np.empty((5, 3)), np.empty((4, 3)), np.empty(3), np.empty((5, 4))
    _kernels.dense_backward(X, W, A, G, kind, dZ, dW, db, dX, np.empty(3))

    def loss():
        return _loss_through_layer(X, W, b, G, kind)

    h = 1e-6
    for analytic, parameter in ((dW, W), (db, b), (dX, X)):
        numeric = oracle.central_differences(loss, parameter, h)
        if name == "step":
            assert (analytic == 0).all() and (numeric == 0).all()
        else:
            assert relative_error(analytic, numeric) < 1e-6


def test_bias_gradient_accumulated_in_float64():
    # 100000 rows of the same float32 value: the float64 sum is exact, rounded once to float32.
    # A float32 running sum drifts far from it (checked below, so the test can tell).
    m = 100_000
    values = np.array([0.1, 1 / 3, 0.7], np.float32)
    X = np.ones((m, 1), np.float32)
    W = np.ones((1, 3), np.float32)
    A = np.ones((m, 3), np.float32)
    dA = np.tile(values, (m, 1))
    db = np.empty(3, np.float32)
    _kernels.dense_backward(X, W, A, dA, ACTIVATIONS["identity"], np.empty_like(dA),
                            np.empty((1, 3), np.float32), db, None,
                            np.empty(3))
    exact = (m * values.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(db, exact)
    float32_running_sum = np.cumsum(dA, axis=0, dtype=np.float32)[-1]
    assert np.all(np.abs(float32_running_sum - exact) > 100 * np.spacing(exact))


# --------------------------------------------------------------------------- cross-entropy

def _targets(kind, rng, m, n, dtype):
    labels = rng.integers(0, n, size=m)
    if kind == "labels":
        return labels, None
    if kind == "one_hot":
        t = np.zeros((m, n))
        t[np.arange(m), labels] = 1
    elif kind == "probabilities":
        t = rng.uniform(0, 1, (m, n))
        t[rng.uniform(size=(m, n)) < 0.3] = 0         # exact zeros exercise the 0 * log p rule
        t[np.arange(m), labels] += 0.1
        t /= t.sum(axis=1, keepdims=True)
    else:                                             # "unnormalised": sum(t) != 1
        t = rng.uniform(0, 2, (m, n))
    return None, t.astype(dtype)


def _call_cross_entropy(logits, labels, targets, weights):
    dtype = logits.dtype
    no_labels, no_targets, no_weights = empty_like_kernel(dtype)
    total = float(logits.shape[0] if weights is None else np.sum(weights, dtype=np.float64))
    dlogits = np.full_like(logits, np.nan)
    loss = _kernels.cross_entropy(
        logits, no_labels if labels is None else np.ascontiguousarray(labels, np.int64),
        no_targets if targets is None else targets,
        no_weights if weights is None else weights, total, dlogits, np.empty(len(logits)))
    return loss, dlogits


TARGET_KINDS = ["labels", "one_hot", "probabilities", "unnormalised"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", MATRIX_SHAPES)
@pytest.mark.parametrize("target_kind", TARGET_KINDS)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_cross_entropy_matches_reference(shape, dtype, target_kind, weighted):
    rng = np.random.default_rng(8)
    m, n = shape
    logits = rng.normal(0, 3, shape).astype(dtype)
    labels, targets = _targets(target_kind, rng, m, n, dtype)
    weights = None
    if weighted:
        weights = rng.uniform(0, 2, m).astype(dtype)
        weights[0] = 0.0 if m > 1 else weights[0]       # a zero weight counts for nothing
    loss, dlogits = _call_cross_entropy(logits, labels, targets, weights)
    assert type(loss) is float
    assert dlogits.dtype == dtype
    expected_loss, expected_grad = oracle.cross_entropy(logits, labels, targets, weights)
    assert_close(loss, expected_loss, dtype, scale=max(abs(expected_loss), 1e-3))
    assert_close(dlogits, expected_grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_extreme_logits(dtype):
    logits = np.array([[1e30, -1e30, 0.0],
                       [-1e30, 1e30, 0.0],
                       [-np.inf, 2.0, 1.0]], dtype)
    labels = np.array([0, 0, 1])
    loss, dlogits = _call_cross_entropy(logits, labels, None, None)
    # Row losses: 0, 2e30, log(1 + e^-1); no epsilon, no clipping.
    assert_close(loss, (0 + 2e30 + np.log1p(np.exp(-1.0))) / 3, dtype)
    assert np.isfinite(dlogits).all()
    assert_close(dlogits[1], [-1 / 3, 1 / 3, 0], dtype)
    # Probability targets: a zero target on a -inf logit adds 0, not NaN.
    targets = np.array([[1, 0, 0], [0, 1, 0], [0, 0.5, 0.5]], dtype)
    loss_t, dlogits_t = _call_cross_entropy(logits, None, targets, None)
    expected, expected_grad = oracle.cross_entropy(logits, targets=targets)
    assert np.isfinite(loss_t) and np.isfinite(dlogits_t).all()
    assert_close(loss_t, expected, dtype)
    assert_close(dlogits_t, expected_grad, dtype)


@pytest.mark.parametrize("target_kind", TARGET_KINDS)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_cross_entropy_gradient_against_finite_differences(target_kind, weighted):
    rng = np.random.default_rng(9)
    logits = rng.normal(0, 2, (4, 5))
    labels, targets = _targets(target_kind, rng, 4, 5, np.float64)
    weights = rng.uniform(0.5, 2, 4) if weighted else None
    _, analytic = _call_cross_entropy(logits, labels, targets, weights)
    numeric = oracle.central_differences(
        lambda: _call_cross_entropy(logits, labels, targets, weights)[0], logits, 1e-6)
    assert relative_error(analytic, numeric) < 1e-6


def test_cross_entropy_loss_accumulated_in_float64():
    # 100000 identical float32 rows: the mean must be the row loss to float64-ish accuracy.
    row = np.array([[0.3, -1.2, 2.5, 0.1]], np.float32)
    logits = np.repeat(row, 100_000, axis=0)
    labels = np.full(100_000, 2)
    loss, _ = _call_cross_entropy(logits, labels, None, None)
    expected, _ = oracle.cross_entropy(row, labels[:1])
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


# --------------------------------------------------------------------------- squared error

def _call_squared_error(pred, target, weights):
    no_weights = None
    total = float(pred.shape[0] if weights is None else np.sum(weights, dtype=np.float64))
    dpred = np.full_like(pred, np.nan)
    loss = _kernels.squared_error(pred, target, no_weights if weights is None else weights,
                                  total, dpred)
    return loss, dpred


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", MATRIX_SHAPES)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_squared_error_matches_reference(shape, dtype, weighted):
    rng = np.random.default_rng(10)
    pred = rng.normal(size=shape).astype(dtype)
    target = rng.normal(size=shape).astype(dtype)
    weights = rng.uniform(0, 2, shape[0]).astype(dtype) if weighted else None
    loss, dpred = _call_squared_error(pred, target, weights)
    assert type(loss) is float
    assert dpred.dtype == dtype
    expected_loss, expected_grad = oracle.squared_error(pred, target, weights)
    assert_close(loss, expected_loss, dtype)
    assert_close(dpred, expected_grad, dtype)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_squared_error_gradient_against_finite_differences(weighted):
    rng = np.random.default_rng(11)
    pred = rng.normal(size=(4, 3))
    target = rng.normal(size=(4, 3))
    weights = rng.uniform(0.5, 2, 4) if weighted else None
    _, analytic = _call_squared_error(pred, target, weights)
    numeric = oracle.central_differences(
        lambda: _call_squared_error(pred, target, weights)[0], pred, 1e-6)
    assert relative_error(analytic, numeric) < 1e-6


def test_squared_error_is_mean_over_all_elements():
    # PyTorch MSELoss convention: divide by m * n, not by m.
    loss, dpred = _call_squared_error(np.full((2, 5), 3.0), np.ones((2, 5)), None)
    assert loss == 4.0
    np.testing.assert_array_equal(dpred, 2 * 2 / 10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_of_an_empty_batch_are_zero(dtype):
    no_labels, no_targets, no_weights = empty_like_kernel(dtype)
    empty = np.empty((0, 3), dtype)
    loss = _kernels.cross_entropy(empty, no_labels, no_targets, no_weights, 0.0, empty.copy(),
                                  np.empty(0))
    assert loss == 0.0
    assert _kernels.squared_error(empty, empty, no_weights, 0.0, empty.copy()) == 0.0
