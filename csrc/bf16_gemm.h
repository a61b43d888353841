/* bf16_gemm.h -- the bfloat16 matrix product of compute_dtype="bfloat16" models.
 *
 *     C[m, n] := bf16(op(A))[m, k] @ bf16(op(B))[k, n]      row-major, float32 in and out
 *
 * op(X) is X or X^T (trans_a, trans_b). Both operands are read as float32 and rounded to
 * bfloat16 (round to nearest, ties to even) while they are packed; the products are summed in
 * float32. No bfloat16 copy of an operand is needed, and C is overwritten (beta = 0).
 *
 * Kernel: AVX512-BF16 (vcvtne2ps2bf16 rounds, vdpbf16ps multiplies pairs of bf16 along k and
 * adds both products into float32 lanes), compiled with its own flags in bf16_gemm_avx512.c
 * and called only when fm_bf16_cpu() says the CPU and the operating system run it (CPUID and
 * XGETBV, checked at run time). Subnormal operands and results are flushed to zero by these
 * instructions whatever MXCSR says.
 *
 * Results do not depend on how a caller splits C into blocks of rows or columns: every
 * element of C is summed over k in the same order (blocks of FM_BF16_KC along k, pairs in
 * order inside a block).
 */
#ifndef FUSEDMLP_BF16_GEMM_H
#define FUSEDMLP_BF16_GEMM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when this build has the kernel and this CPU and OS run it (AVX-512F/BW/VL/BF16 and the
 * ZMM state enabled in XCR0); 0 otherwise. */
int fm_bf16_cpu(void);

/* Why fm_bf16_cpu() is 0 ("" when it is 1): a sentence for show_config and error messages. */
const char *fm_bf16_why_not(void);

/* C := bf16(op(A)) @ bf16(op(B)); op(A) is m x k, op(B) is k x n, all row-major with leading
 * dimensions lda, ldb, ldc. Call only when fm_bf16_cpu() is 1. */
void fm_bf16_gemm(int trans_a, int trans_b, int m, int n, int k, const float *a, int lda,
                  const float *b, int ldb, float *c, int ldc);

/* Pre-packed B (an operand used by many products, e.g. a weight matrix between updates), in
 * panels of 32 columns: the 32-bit word (bf16 op(B)[2p, j] low, bf16 op(B)[2p + 1, j] high;
 * zero past k) sits at dst[(j / 32) * ps + p * 32 + j % 32], so a panel's pairs are
 * contiguous (ps >= 32 * pairs words apart; columns past n in the last panel must be zero).
 * fm_bf16_pack writes pairs [p0, p1) and columns [j0, j1), j0 a multiple of 16, of op(B), the
 * k x n matrix b or, with trans, b^T (b is then n x k). Disjoint ranges may be packed by
 * different threads. */
void fm_bf16_pack(int trans, int k, const float *b, int ldb, int p0, int p1, int j0, int j1,
                  uint32_t *dst, ptrdiff_t ps);

/* C := bf16(op(A)) @ B for B packed as above (bp: the word of its pair 0, column 0, which
 * must start a panel), bitwise what fm_bf16_gemm gives on the float32 B. */
void fm_bf16_gemm_packed(int trans_a, int m, int n, int k, const float *a, int lda,
                         const uint32_t *bp, ptrdiff_t ps, float *c, int ldc);

/* Why AMX-BF16 is not usable ("" when CPUID has AMX-BF16 and AMX-TILE and XCR0 enables the
 * tile state): MKL's bf16 product is chosen by default only where it is "". */
const char *fm_bf16_amx_why_not(void);

/* Route fm_bf16_gemm (and fm_bf16_gemm_b16) to MKL's cblas_gemm_bf16bf16f32 (gemm; its
 * MKL_Set_Num_Threads_Local, set to 1 around each call), or back to the kernel (NULL, NULL).
 * MKL's products convert the float32 operands to bf16 (the same rounding) into per-thread
 * space; their sums are MKL's, in its order. fm_bf16_mkl() says which is in use. */
void fm_bf16_use_mkl(void *gemm, void *set_threads_local);
int fm_bf16_mkl(void);

/* dst[i] := the bf16 bits of src[i] (round to nearest even, subnormals to zero), i < n. */
void fm_bf16_convert(ptrdiff_t n, const float *src, uint16_t *dst);

/* C := bf16(op(A)) @ op(B16) for B16 already in bf16 (bits, row-major, leading dimension
 * ldb): MKL's product of a weight matrix converted once per step. */
void fm_bf16_gemm_b16(int trans_a, int trans_b, int m, int n, int k, const float *a, int lda,
                      const uint16_t *b16, int ldb, float *c, int ldc);

#ifdef __cplusplus
}
#endif
#endif
