"""fusedmlp's own float32 inference product (csrc/small_gemm.h): AVX-512F, chosen at run time,
used for inference products of 32 or more columns; BLAS elsewhere (docs/threading.md)."""

import numpy as np
import pytest

import fusedmlp
from fusedmlp import _network

needs_kernel = pytest.mark.skipif(not _network.own_gemm(),
                                  reason="this CPU or build has no AVX-512F inference kernel")


def test_show_config_says_whether_the_kernel_runs():
    assert fusedmlp.show_config(as_dict=True)["blas"]["own_inference_gemm"] == _network.own_gemm()


@needs_kernel
@pytest.mark.parametrize("n_in, n_out", [(1, 32), (17, 37), (100, 64), (100, 65), (33, 130)])
@pytest.mark.parametrize("m", [1, 3, 4, 7, 9])
def test_forward_matches_a_float64_reference_at_every_tail(m, n_in, n_out):
    # row tails (m % 4), column tails (n_out % 16, % 64), any inner size
    model = fusedmlp.MLP([n_in, n_out], output="identity", seed=3, n_threads=1)
    X = np.random.default_rng(m).normal(size=(m, n_in)).astype(np.float32)
    W, b = model.layers[0].W.astype(np.float64), model.layers[0].b.astype(np.float64)
    expected = X.astype(np.float64) @ W + b
    scale = np.abs(X).astype(np.float64) @ np.abs(W) + np.abs(b)
    assert np.all(np.abs(model.forward(X) - expected) <= 1e-6 * scale + 1e-7)


@needs_kernel
@pytest.mark.parametrize("m", [5, 40])
def test_inference_is_bit_identical_across_thread_counts(m):
    # each element is its inner products summed in order: any block of rows or columns
    # computes the same bits as the whole product
    X = np.random.default_rng(1).normal(size=(m, 50)).astype(np.float32)
    model = fusedmlp.MLP([50, 96, 64, 40], seed=0, n_threads=1)
    expected = model.predict_proba(X)
    for n in (2, 3):
        model.n_threads = n
        np.testing.assert_array_equal(model.predict_proba(X), expected)
