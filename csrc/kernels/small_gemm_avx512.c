/* small_gemm_avx512.c -- C = A @ B for float32 row-major matrices, AVX-512F (small_gemm.h).
 *
 * Built with -mavx512f; runs only when small_gemm.c found AVX-512F on the CPU. No packing:
 * a tile of up to 4 rows x 64 columns of C lives in 16 zmm accumulators while k runs; each
 * step loads up to 4 vectors of a row of B (contiguous) and broadcasts one element of each row
 * of A. Every element of C is its k products summed in order with fused multiply-adds, so a
 * block of C computed alone is bit-identical to the same block of a larger product.
 */
#include <immintrin.h>

#include "small_gemm.h"
#include "fm_compiler.h"

FM_FORCE_INLINE void
fm_tile(int rows, int vectors, __mmask16 last, int k, const float *a, int lda, const float *b,
        int ldb, float *c, int ldc)
{
    __m512 acc[4][4];
    int r, q, p;
    FM_UNROLL(4)
    for (r = 0; r < 4; r++)
        FM_UNROLL(4)
        for (q = 0; q < 4; q++) acc[r][q] = _mm512_setzero_ps();
    for (p = 0; p < k; p++) {
        const float *bp = b + (long)p * ldb;
        __m512 bv[4];
        FM_UNROLL(4)
        for (q = 0; q < vectors; q++)
            bv[q] = q == vectors - 1 ? _mm512_maskz_loadu_ps(last, bp + 16 * q)
                                     : _mm512_loadu_ps(bp + 16 * q);
        FM_UNROLL(4)
        for (r = 0; r < rows; r++) {
            __m512 av = _mm512_set1_ps(a[(long)r * lda + p]);
            FM_UNROLL(4)
            for (q = 0; q < vectors; q++) acc[r][q] = _mm512_fmadd_ps(av, bv[q], acc[r][q]);
        }
    }
    FM_UNROLL(4)
    for (r = 0; r < rows; r++)
        FM_UNROLL(4)
        for (q = 0; q < vectors; q++) {
            if (q == vectors - 1)
                _mm512_mask_storeu_ps(c + (long)r * ldc + 16 * q, last, acc[r][q]);
            else
                _mm512_storeu_ps(c + (long)r * ldc + 16 * q, acc[r][q]);
        }
}

#define FM_TILE_CASE(R, V) \
    case (R) * 8 + (V): fm_tile(R, V, last, k, a_i, lda, b_j, ldb, c_ij, ldc); break;

void fm_sgemm_nn_avx512(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                        float *c, int ldc)
{
    int i, j;
    for (j = 0; j < n; j += 64) {
        int width = n - j < 64 ? n - j : 64, vectors = (width + 15) / 16;
        __mmask16 last = (__mmask16)(width % 16 ? (1u << (width % 16)) - 1 : 0xffff);
        const float *b_j = b + j;
        for (i = 0; i < m; i += 4) {
            int rows = m - i < 4 ? m - i : 4;
            const float *a_i = a + (long)i * lda;
            float *c_ij = c + (long)i * ldc + j;
            switch (rows * 8 + vectors) {
                FM_TILE_CASE(4, 4) FM_TILE_CASE(4, 3) FM_TILE_CASE(4, 2) FM_TILE_CASE(4, 1)
                FM_TILE_CASE(3, 4) FM_TILE_CASE(3, 3) FM_TILE_CASE(3, 2) FM_TILE_CASE(3, 1)
                FM_TILE_CASE(2, 4) FM_TILE_CASE(2, 3) FM_TILE_CASE(2, 2) FM_TILE_CASE(2, 1)
                FM_TILE_CASE(1, 4) FM_TILE_CASE(1, 3) FM_TILE_CASE(1, 2) FM_TILE_CASE(1, 1)
            }
        }
    }
}
