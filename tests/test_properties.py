"""Property tests (hypothesis): laws that must hold for every input hypothesis can draw.

- softmax: rows are probabilities summing to 1, and adding a constant to a row changes nothing;
- log_softmax equals log(softmax) wherever the softmax is a normal (not underflowed) number;
- gradients of random architectures, activations, dtypes, outputs and batch sizes (1 included)
  match central finite differences (``fusedmlp.gradient_check``, float64);
- the array functions never crash on any float array: any shape (0-d, empty axes), any values
  (NaN, +-inf, huge, subnormal), strided views -- they return an array of the input's shape and
  float dtype, or refuse with a ValueError/TypeError that names the argument;
- ``fit`` with a batch size that does not divide the number of samples trains on every sample
  once per epoch, the last batch short, exactly as the same train_step calls made by hand.
"""

import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fusedmlp

import oracle

FLOATS = (np.float32, np.float64)
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])
SLOW_SETTINGS = settings(max_examples=60, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

#: Relative tolerance of softmax sums / comparisons per dtype (a few ulps times the width).


def float_arrays(dtype, shape, min_value=None, max_value=None, allow_infinity=False):
    width = np.dtype(dtype).itemsize * 8
    elements = st.floats(min_value=min_value, max_value=max_value, allow_nan=False,
                         allow_infinity=allow_infinity, width=width)
    return hnp.arrays(dtype, shape, elements=elements)


@st.composite
def matrices(draw, min_value=None, max_value=None, allow_infinity=False):
    dtype = draw(st.sampled_from(FLOATS))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6))
    x = draw(float_arrays(dtype, shape, min_value, max_value, allow_infinity))
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    return x, axis


# --------------------------------------------------------------------------- softmax laws

@PROPERTY_SETTINGS
@given(matrices())
def test_softmax_is_a_probability_distribution(case):
    x, axis = case
    p = fusedmlp.softmax(x, axis=axis)
    assert p.shape == x.shape and p.dtype == x.dtype
    # Any finite logits (up to +-3.4e38 in float32): subtracting the row max keeps it finite.
    assert np.all(np.isfinite(p))
    assert np.all((p >= 0) & (p <= 1))
    # each probability within the softmax's own rounding (oracle.softmax_bound: the exponential,
    # the slice's sum of n terms, the division) of its share: the sum within that of 1
    sums = p.sum(axis=axis, dtype=np.float64)
    own = oracle.rounding_tolerance(x.dtype, 2 * oracle.ELEMENTWISE + x.shape[axis])
    oracle.assert_within(sums, np.ones_like(sums), own * sums + own)
    # exp is monotone: the largest logit of a slice gets the largest probability (the same
    # kernel on the larger input never gives a smaller result).
    at_max_logit = np.take_along_axis(p, np.expand_dims(np.argmax(x, axis=axis), axis), axis)
    oracle.assert_same_bits(at_max_logit, p.max(axis=axis, keepdims=True), why=oracle.OWN_KERNEL)


@PROPERTY_SETTINGS
@given(matrices(min_value=-50, max_value=50), st.data())
def test_softmax_is_invariant_to_a_constant_per_row(case, data):
    x, axis = case
    shift_shape = tuple(1 if i == axis % x.ndim else n for i, n in enumerate(x.shape))
    shift = data.draw(float_arrays(x.dtype, shift_shape, -100, 100), label="shift")
    shifted = (x + shift).astype(x.dtype)
    # x + c rounds to within u |x + c| (u: the unit roundoff), an error in the scores that
    # oracle.softmax_bound carries through; both results within their bounds of softmax(x)
    u = float(np.finfo(x.dtype).eps) / 2
    moved = np.moveaxis(x.astype(np.float64), axis, -1)
    rows = moved.reshape(-1, moved.shape[-1])
    error = u * np.abs(np.moveaxis((x.astype(np.float64) + shift), axis, -1)).reshape(rows.shape)
    p, p_bound, log_p, log_bound = oracle.softmax_bound(rows, error, x.dtype)
    p0, p0_bound, log_p0, log0_bound = oracle.softmax_bound(rows, np.zeros_like(rows), x.dtype)

    def back(a):
        return np.moveaxis(a.reshape(moved.shape), -1, axis)

    for got, bound in ((fusedmlp.softmax(shifted, axis=axis), p_bound),
                       (fusedmlp.softmax(x, axis=axis), p0_bound)):
        oracle.assert_within(got, back(p), back(bound))
    for got, bound in ((fusedmlp.log_softmax(shifted, axis=axis), log_bound),
                       (fusedmlp.log_softmax(x, axis=axis), log0_bound)):
        oracle.assert_within(got, back(log_p), back(bound), vacuous=np.inf)


@PROPERTY_SETTINGS
@given(matrices(allow_infinity=True))
def test_log_softmax_equals_log_of_softmax_where_finite(case):
    x, axis = case
    # +inf logits make a slice NaN (inf - inf); keep -inf, which must give probability 0.
    x = np.where(np.isposinf(x), x.dtype.type(0), x)
    log_p = fusedmlp.log_softmax(x, axis=axis)
    p = fusedmlp.softmax(x, axis=axis)
    assert log_p.dtype == p.dtype == x.dtype
    # Slices of only -inf have no distribution (NaN, as in NumPy/SciPy): left out.
    all_minus_inf = np.broadcast_to(np.all(np.isneginf(x), axis=axis, keepdims=True), x.shape)
    normal = (p > np.finfo(x.dtype).tiny * 1e3) & ~all_minus_inf
    reference = np.log(p.astype(np.float64), where=normal, out=np.full(p.shape, np.nan))
    # log_softmax within its own rounding of the exact log-probability (|log p|, the shifted
    # scores' magnitude and 1, times the rounding of the exponential, the sum and the log);
    # log(p) within p's relative rounding of it
    own = oracle.rounding_tolerance(x.dtype, 2 * oracle.ELEMENTWISE + x.shape[axis])
    with np.errstate(invalid="ignore"):          # (-inf - -inf in slices left out above)
        shifted = np.abs(x.astype(np.float64) - np.max(x, axis=axis, keepdims=True))
    bound = own * (np.abs(reference) + np.where(np.isfinite(shifted), shifted, 0) + 2)
    oracle.assert_within(log_p[normal], reference[normal], bound[normal], vacuous=np.inf)
    # Where the softmax underflowed, log_softmax stays finite or is -inf for -inf logits.
    underflowed = ~normal & ~all_minus_inf
    assert np.all(log_p[underflowed] <= np.log(np.finfo(x.dtype).tiny * 1e3) + 1)
    assert np.all(np.isneginf(log_p[np.isneginf(x) & ~all_minus_inf]))
    assert np.all(log_p[~all_minus_inf] <= own)       # log of a probability, to its rounding


# --------------------------------------------------------------------------- gradients

SMOOTH = ("identity", "sigmoid", "tanh", "softplus")
KINKED = ("relu", "leaky_relu", "elu", "step")    # derivative (or its derivative) jumps at 0

#: Central differences with eps=1e-6 cannot be trusted within this distance of a kink.
KINK_MARGIN = 1e-4


def pre_activations(model, X):
    """Every layer's X @ W + b in float64, by plain NumPy (for spotting inputs near kinks)."""
    act = {"identity": lambda z: z, "relu": lambda z: np.maximum(z, 0),
           "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
           "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
           "step": lambda z: (z > 0).astype(np.float64), "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
           "tanh": np.tanh, "softplus": lambda z: np.logaddexp(z, 0)}
    a, out = np.asarray(X, np.float64), []
    for layer in model.layers:
        z = a @ layer.W.astype(np.float64) + layer.b.astype(np.float64)
        out.append((layer.activation, z))
        a = act[layer.activation](z)
    return out


@st.composite
def networks(draw):
    n_hidden = draw(st.integers(1, 3))
    sizes = draw(st.lists(st.integers(1, 8), min_size=n_hidden + 2, max_size=n_hidden + 2))
    activations = draw(st.lists(st.sampled_from(SMOOTH + KINKED), min_size=n_hidden,
                                max_size=n_hidden))
    output = draw(st.sampled_from(["softmax", "identity"]))
    dtype = draw(st.sampled_from(FLOATS))
    batch = draw(st.sampled_from([1, 2, 3, 5, 8]))
    seed = draw(st.integers(0, 2**16))
    return sizes, activations, output, dtype, batch, seed


@SLOW_SETTINGS
@given(networks())
def test_gradients_match_finite_differences(net):
    sizes, activations, output, dtype, batch, seed = net
    rng = np.random.default_rng(seed)
    model = fusedmlp.MLP(sizes, activation=activations, output=output, dtype=dtype, seed=seed)
    # Biases start at zero; random ones exercise the bias gradients' real work.
    for layer in model.layers:
        layer.b = rng.normal(scale=0.5, size=layer.n_out)
    X = rng.normal(size=(batch, sizes[0]))
    if output == "softmax":
        y = rng.integers(0, sizes[-1], size=batch)
    else:
        y = rng.normal(size=(batch, sizes[-1]))
    for name, z in pre_activations(model.astype(np.float64), X):
        if name in KINKED:
            assume(np.min(np.abs(z)) > KINK_MARGIN)
    errors = fusedmlp.gradient_check(model, X, y)
    _, grads = model.astype(np.float64).loss_and_gradients(X, y)
    note(f"relative errors per layer: {errors}")
    for error, (dW, db) in zip(errors, grads):
        size = math.hypot(np.linalg.norm(dW), np.linalg.norm(db))
        # Differences of a loss ~1 carry ~1e-10 of rounding per entry: a relative error is
        # meaningful only for gradients well above that (below a step layer they are 0).
        if size > 1e-4:
            assert error < 1e-5
        else:
            assert size < 1e-4


# --------------------------------------------------------------------------- no crash, ever

ARRAY_FUNCTIONS = {
    "softmax": (fusedmlp.softmax, "x", True),
    "log_softmax": (fusedmlp.log_softmax, "x", True),
    "one_hot_encoding": (fusedmlp.one_hot_encoding, "scores", True),
    **{name: (getattr(fusedmlp, name), "x", False)
       for name in ("sigmoid", "relu", "tanh", "step", "leaky_relu", "elu", "softplus")},
}


@st.composite
def any_float_arrays(draw):
    dtype = draw(st.sampled_from(FLOATS))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    x = draw(hnp.arrays(dtype, shape, elements=st.floats(width=np.dtype(dtype).itemsize * 8)))
    if x.ndim >= 2 and draw(st.booleans()):
        x = x.T                                    # a non-contiguous view
    if draw(st.booleans()):
        x.flags.writeable = False
    return x


@pytest.mark.parametrize("name", sorted(ARRAY_FUNCTIONS))
@settings(max_examples=60, deadline=None)
@given(x=any_float_arrays(), data=st.data())
def test_array_functions_never_crash(name, x, data):
    function, argument, has_axis = ARRAY_FUNCTIONS[name]
    kwargs = {}
    if has_axis and x.ndim:
        kwargs["axis"] = data.draw(st.integers(-x.ndim, x.ndim - 1), label="axis")
    before = x.copy()
    try:
        result = function(x, **kwargs)
    except (ValueError, TypeError) as exc:
        # A refusal is fine only when it is deliberate: it names the argument.
        assert re.search(rf"\b{argument}\b", str(exc)), f"{type(exc).__name__}: {exc}"
        return
    result = np.asarray(result)
    assert result.shape == x.shape and result.dtype == x.dtype
    oracle.assert_same_bits(x, before, why=oracle.UNTOUCHED)   # the input is never written
    if name in ("softmax", "log_softmax", "one_hot_encoding"):
        return
    # Elementwise functions keep NaN where it came in and make none from non-NaN inputs.
    np.testing.assert_array_equal(np.isnan(result), np.isnan(x))
    if name == "sigmoid":
        assert np.all((result[~np.isnan(result)] >= 0) & (result[~np.isnan(result)] <= 1))


# --------------------------------------------------------------------------- fit, ragged batches

@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), data=st.data())
def test_fit_with_a_batch_size_that_does_not_divide_n(n, data):
    batch_size = data.draw(st.integers(1, n + 3), label="batch_size")
    epochs = data.draw(st.integers(1, 3), label="epochs")
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, 5))
    y = rng.integers(0, 3, size=n)

    def new_model():
        return fusedmlp.MLP([5, 7, 3], activation="tanh", dtype=dtype, seed=1)

    model, optimizer = new_model(), fusedmlp.SGD(0.05, momentum=0.5)
    history = model.fit(X, y, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                        shuffle=False)
    assert len(history["loss"]) == epochs
    assert optimizer.steps == epochs * math.ceil(n / batch_size)

    # The same steps by hand, the last batch of each epoch short.
    manual, manual_opt = new_model(), fusedmlp.SGD(0.05, momentum=0.5)
    for _ in range(epochs):
        for start in range(0, n, batch_size):
            manual.train_step(X[start:start + batch_size], y[start:start + batch_size],
                              manual_opt)
    assert manual.get_params_vector().tobytes() == model.get_params_vector().tobytes()

    shuffled, shuffled_opt = new_model(), fusedmlp.Adam(0.01)
    history = shuffled.fit(X, y, epochs=epochs, batch_size=batch_size, optimizer=shuffled_opt)
    assert shuffled_opt.steps == epochs * math.ceil(n / batch_size)
    assert np.all(np.isfinite(history["loss"]))
    assert np.all(np.isfinite(shuffled.get_params_vector()))
