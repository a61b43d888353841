/* small_gemm.h -- fusedmlp's own float32 product for inference: C[m, n] := A[m, k] @ B[k, n],
 * row-major with leading dimensions (elements), no packing, one kernel family per ISA:
 * AVX-512F and AVX2+FMA on x86-64, NEON on AArch64 (small_gemm.c picks one through cpu.h).
 *
 * Every variant sums each element's k products in order with fused multiply-adds, so every
 * variant, and every block of rows or columns of a product, computes the same bits.
 *
 * fm_small_gemm returns 1 when it computed C, 0 when this CPU or build has no kernel (the
 * caller then calls BLAS). _blas.pxd's inference_gemm (inference) and step_forward_gemm (the
 * training step's forward product, up to fm_small_gemm_step_rows() rows) are the callers,
 * for float32 layers of 32 or more units. docs/performance.md has the measurements (`fusedmlp bench isa`).
 */
#ifndef FUSEDMLP_SMALL_GEMM_H
#define FUSEDMLP_SMALL_GEMM_H

/* 1 when a kernel runs here (a variant other than "blas"). */
int fm_small_gemm_cpu(void);
/* "avx512", "avx2", "neon" (the kernel that runs) or "blas" (none: BLAS computes every
 * product). */
const char *fm_small_gemm_variant(void);
/* The most rows of a training forward product the kernel takes (0: none; the measured
 * cut-over against BLAS, small_gemm.c). */
int fm_small_gemm_step_rows(void);
int fm_small_gemm(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                  float *c, int ldc);

/* The kernels (one per translation unit, each compiled with its ISA's flags). */
void fm_sgemm_nn_avx512(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                        float *c, int ldc);
void fm_sgemm_nn_avx2(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                      float *c, int ldc);
void fm_sgemm_nn_neon(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                      float *c, int ldc);

#endif
