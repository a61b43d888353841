"""The vectorised exp/expm1 behind sigmoid, tanh, elu, softplus and softmax (csrc/elementwise.h)
are accurate to a few units in the last place, against a long-double NumPy reference."""

import numpy as np
import pytest

import fusedmlp

import oracle

LONG = np.longdouble
# The reference must be more precise than the type under test.
HAS_EXTENDED = np.finfo(LONG).eps < np.finfo(np.float64).eps
MAX_ULP = 3.0


def _points(dtype):
    rng = np.random.default_rng(0)
    tiny = np.geomspace(np.finfo(dtype).tiny, 1, 3000)
    values = np.concatenate([
        rng.uniform(-1, 1, 20000), rng.uniform(-20, 20, 20000), rng.uniform(-120, 120, 5000),
        tiny, -tiny, np.linspace(-0.7, 0.7, 2801),     # around 0, where cancellation would hurt
        [0.0, -0.0, 1e-45, 88.0, 89.5, -87.0, -103.0, 709.0, -745.0],
    ])
    return values.astype(dtype)


def _ulp_error(got, reference, dtype):
    rounded = reference.astype(dtype)
    ulp = np.spacing(np.abs(rounded)).astype(LONG)
    ulp = np.where(ulp == 0, np.spacing(dtype(0)), ulp)
    return np.max(np.abs(got.astype(LONG) - reference) / ulp)


REFERENCES = {
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "softplus": lambda x: np.logaddexp(LONG(0), x),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_within_a_few_ulp_of_long_double(name, dtype):
    if dtype == np.float64 and not HAS_EXTENDED:
        pytest.skip("np.longdouble is no wider than float64 on this platform")
    x = _points(dtype)
    with np.errstate(over="ignore"):
        reference = REFERENCES[name](x.astype(LONG))
    got = getattr(fusedmlp, name)(x)
    assert got.dtype == dtype
    assert _ulp_error(got, reference, dtype) <= MAX_ULP


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_exponentials_within_a_few_ulp(dtype):
    # softmax of [z, 0] for z <= 0 is [e^z, 1] / (1 + e^z): its first entry over its second
    # recovers exp(z) as the kernel computed it, to within the two roundings of the division.
    if dtype == np.float64 and not HAS_EXTENDED:
        pytest.skip("np.longdouble is no wider than float64 on this platform")
    z = -np.abs(_points(dtype))
    z = z[z > np.log(np.finfo(dtype).tiny)]                # stay out of the subnormal range
    p = fusedmlp.softmax(np.stack([z, np.zeros_like(z)], axis=1))
    got = p[:, 0].astype(LONG) / p[:, 1].astype(LONG)
    reference = np.exp(z.astype(LONG))
    assert _ulp_error(got.astype(dtype), reference, dtype) <= MAX_ULP + 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["tanh", "elu", "relu", "leaky_relu", "sigmoid"])
def test_signed_zeros_and_infinities_as_numpy(name, dtype):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype)
    got = getattr(fusedmlp, name)(x)
    expected = {
        "tanh": np.tanh(x),
        "elu": np.array([0.0, -0.0, np.inf, -1.0, np.nan], dtype),
        "relu": np.array([0.0, 0.0, np.inf, 0.0, np.nan], dtype),
        "leaky_relu": np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype),
        "sigmoid": np.array([0.5, 0.5, 1.0, 0.0, np.nan], dtype),
    }[name]
    # the special values (signed zeros, infinities, NaN) come out exactly
    oracle.assert_same_bits(got, expected, why=oracle.EXACT)
    if name in ("tanh", "elu"):
        np.testing.assert_array_equal(np.signbit(got[:2]), [False, True])
