"""bfloat16 compute (compute_dtype="bfloat16", docs/bf16.md).

The product C = bf16(op(A)) @ bf16(op(B)) summed in float32 (csrc/bf16_gemm.h) is checked
against a float64 product of the same bf16-rounded operands; the tests that run it skip, with
the reason, on CPUs without AVX512-BF16.
"""

import numpy as np
import pytest

from fusedmlp import _kernels

WHY_NOT = _kernels.bf16_why_not()
needs_bf16 = pytest.mark.skipif(bool(WHY_NOT), reason=f"no bf16 product here: {WHY_NOT}")


def bf16_round(x):
    """float32 -> nearest bfloat16 (ties to even), as float32; the reference's rounding."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def test_bf16_round_reference():
    # 1 + 2^-8 is halfway between two bf16 neighbours: ties go to the even one (1.0);
    # 1 + 3 * 2^-8 goes up to 1 + 2^-6 (even), 1 + 2^-8 + 2^-20 goes up
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -2.5, 0.0], np.float32)
    np.testing.assert_array_equal(bf16_round(x), [1.0, 1 + 2**-6, 1 + 2**-7, -2.5, 0.0])


# Shapes around the kernel's blocks: micro-tiles of 8 x 32, 128 pairs (256) along k, 96 rows
# and 1024 columns per block, odd k (a half pair), single rows and columns, k = 0.
SHAPES = [(1, 1, 1), (3, 5, 7), (8, 32, 2), (9, 33, 3), (32, 10, 128), (97, 1025, 257),
          (100, 10, 513), (17, 70, 256), (193, 31, 1), (4, 3, 0)]


@needs_bf16
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m, n, k", SHAPES)
def test_product_matches_float64_of_rounded_operands(m, n, k, trans_a, trans_b):
    rng = np.random.default_rng(m * 1000 + n + k)
    A = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    B = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    C = np.full((m, n), np.nan, np.float32)
    _kernels.matmul_bf16(A, B, C, trans_a, trans_b)
    op_a = bf16_round(A).astype(np.float64)
    op_b = bf16_round(B).astype(np.float64)
    op_a = op_a.T if trans_a else op_a
    op_b = op_b.T if trans_b else op_b
    # the operands are exact in float64; only the float32 sums differ: k roundings of at most
    # 2^-24 of the running sum of |terms|
    bound = np.abs(op_a) @ np.abs(op_b) * (k + 1) * 2.0**-24
    assert np.all(np.abs(C - op_a @ op_b) <= bound)


@needs_bf16
def test_product_is_not_float32():
    # the operands really are rounded: 1 + 2^-9 is 1 in bf16
    A = np.full((4, 6), 1 + 2**-9, np.float32)
    B = np.ones((6, 40), np.float32)
    C = np.empty((4, 40), np.float32)
    _kernels.matmul_bf16(A, B, C, False, False)
    np.testing.assert_array_equal(C, 6.0)


@needs_bf16
def test_product_rows_and_columns_blocks_agree_bitwise():
    # the threads split C into blocks of rows or columns: each element must come out the same
    rng = np.random.default_rng(7)
    A = rng.standard_normal((70, 600)).astype(np.float32)
    B = rng.standard_normal((600, 90)).astype(np.float32)
    whole = np.empty((70, 90), np.float32)
    _kernels.matmul_bf16(A, B, whole, False, False)
    rows = np.empty((33, 90), np.float32)
    _kernels.matmul_bf16(np.ascontiguousarray(A[37:]), B, rows, False, False)
    cols = np.empty((70, 41), np.float32)
    _kernels.matmul_bf16(A, np.ascontiguousarray(B[:, 49:]), cols, False, False)
    np.testing.assert_array_equal(rows, whole[37:])
    np.testing.assert_array_equal(cols, whole[:, 49:])


def test_why_not_is_a_reason_or_empty():
    assert isinstance(WHY_NOT, str)
    if WHY_NOT:
        assert "bf16" in WHY_NOT.lower() or "avx" in WHY_NOT.lower() or "xsave" in WHY_NOT.lower()
