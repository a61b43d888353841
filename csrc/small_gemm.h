/* small_gemm.h -- fusedmlp's own float32 product for inference: C[m, n] := A[m, k] @ B[k, n],
 * row-major with leading dimensions (elements), on x86-64 CPUs with AVX-512F.
 *
 * fm_small_gemm returns 1 when it computed C, 0 when this CPU or build has no kernel (the
 * caller then calls BLAS). _blas.pxd's inference_gemm is the one caller. Measured on the
 * development machine (AMD EPYC, Zen 4): 32 x 784 @ 784 x 128 in 54 us where OpenBLAS 0.3.34
 * takes 70 (docs/threading.md has the table).
 */
#ifndef FUSEDMLP_SMALL_GEMM_H
#define FUSEDMLP_SMALL_GEMM_H

int fm_small_gemm_cpu(void);
/* "avx512" (the kernel that runs) or "blas" (none: BLAS computes every product). */
const char *fm_small_gemm_variant(void);
int fm_small_gemm(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                  float *c, int ldc);
void fm_sgemm_nn_avx512(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                        float *c, int ldc);

#endif
