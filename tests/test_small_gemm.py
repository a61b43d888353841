"""fusedmlp's own float32 inference product (csrc/small_gemm.h): AVX-512F, AVX2+FMA or NEON,
chosen at run time (cpu.h), used for inference products of 32 or more columns; BLAS elsewhere
(docs/performance.md). Every x86 variant this CPU runs is tested, each forced with
FUSEDMLP_ISA in a fresh interpreter; NEON runs under qemu (tests/test_c_kernels.py)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _ctools import results_per_variant

import fusedmlp
from fusedmlp import _kernels, _network

needs_kernel = pytest.mark.skipif(not _network.own_gemm(),
                                  reason="this CPU or build has no inference kernel")
#: the variants that have a small_gemm kernel, among those this CPU runs
KERNEL_VARIANTS = [v for v in _kernels.isa_supported() if v != "baseline"]


def gamma(k, dtype=np.float32):
    """gamma_k = k u / (1 - k u): the bound, relative to sum |terms|, of k terms summed in
    order with one rounding each (u the unit roundoff)."""
    u = np.finfo(dtype).eps / 2
    return k * u / (1 - k * u)


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
    # n_in products summed in order with fused multiply-adds, then the bias: n_in + 1 roundings
    assert np.all(np.abs(model.forward(X) - expected) <= gamma(n_in + 1) * scale)


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


@pytest.mark.parametrize("variant", KERNEL_VARIANTS)
def test_every_variant_passes_these_tests_forced(variant):
    if os.environ.get("FUSEDMLP_ISA"):
        pytest.skip("FUSEDMLP_ISA is set for this run (this is that variant's run)")
    here = Path(__file__).resolve()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", str(here),
         "-k", "not forced"], env=dict(os.environ, FUSEDMLP_ISA=variant), capture_output=True,
        text=True, cwd=here.parents[1])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout.split("\n")[-2], \
        result.stdout[-2000:]


_PREDICT = """
import sys, numpy as np, fusedmlp
from fusedmlp import _network
rng = np.random.default_rng(5)
model = fusedmlp.MLP([77, 129, 45, 33], seed=1, n_threads=1)
X = rng.normal(size=(37, 77)).astype(np.float32)
np.save(sys.argv[1], np.concatenate([model.predict_proba(X[:1]).ravel(),
                                     model.predict_proba(X).ravel()]))
print(fusedmlp.show_config(as_dict=True)["kernels"]["small_gemm"])
"""


def test_every_kernel_variant_gives_the_same_bits(tmp_path):
    """Each element is its products summed in order with fused multiply-adds, in every
    variant: AVX2 and AVX-512 (and NEON) predict the same bits."""
    if len(KERNEL_VARIANTS) < 2:
        pytest.skip(f"this CPU runs one kernel variant only ({KERNEL_VARIANTS})")
    results = results_per_variant(_PREDICT, tmp_path, KERNEL_VARIANTS)
    first = results[KERNEL_VARIANTS[0]]
    for variant in KERNEL_VARIANTS[1:]:
        np.testing.assert_array_equal(results[variant], first, err_msg=variant)


#: the most rows of a training forward product each variant's kernel takes (small_gemm.c's
#: step_rows, the measured cut-over against BLAS); NEON: none yet
STEP_ROWS = {"avx512": 1 << 30, "avx2": 32}


@needs_kernel
@pytest.mark.parametrize("m", [1, 5, 32, 64])
def test_the_steps_forward_product_is_the_kernels_up_to_its_cutover(m):
    # The step's first hidden layer, as the training workspace holds it after train_step
    # (ReLU(X W + b), the first m * width floats of the activations), against the same layer
    # computed by inference (the own kernel at every row count): bit for bit where the step
    # takes the kernel, BLAS's rounding (not asserted bit for bit) beyond.
    variant = fusedmlp.show_config(as_dict=True)["kernels"]["small_gemm"]
    X = np.random.default_rng(m).normal(size=(m, 50)).astype(np.float32)
    y = np.arange(m) % 10
    model = fusedmlp.MLP([50, 96, 10], seed=0, n_threads=1)
    hidden = fusedmlp.MLP([50, 96], output="identity", seed=0, n_threads=1)
    hidden.layers[0].W[...] = model.layers[0].W
    hidden.layers[0].b[...] = model.layers[0].b
    expected = np.maximum(hidden.forward(X), 0)
    scale = (np.abs(X).astype(np.float64) @ np.abs(model.layers[0].W.astype(np.float64))
             + np.abs(model.layers[0].b))
    model.train_step(X, y, fusedmlp.SGD(1e-3))
    got = model._workspace[0][:m * 96].reshape(m, 96)
    assert np.all(np.abs(got - expected) <= 2 * gamma(51) * scale)
    if m <= STEP_ROWS.get(variant, 0):
        np.testing.assert_array_equal(got, expected)
