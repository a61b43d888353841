/* small_gemm_avx2.c -- C = A @ B for float32 row-major matrices, AVX2 + FMA (small_gemm.h).
 *
 * Built with -mavx2 -mfma (x86-64 only; elsewhere this file is empty); runs only when
 * small_gemm.c finds AVX2 and FMA allowed (cpu.h). No packing. AVX2 has 16 ymm registers:
 *   one row of A (a gemv: W streamed once): a tile of 1 x 64 columns, 8 accumulators, each
 *     step broadcasting a[p] and multiplying it into 8 vectors of row p of B read in place;
 *   more rows: tiles of up to 4 rows x 24 columns, 12 accumulators, 3 vectors of a row of B
 *     loaded once per step and one broadcast of each row of A.
 * The last vector of a tile is a masked load/store. Every element of C is its k products
 * summed in order with fused multiply-adds, as the AVX-512 and NEON kernels do: every
 * variant, and every block of a larger product, gives the same bits.
 */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include "small_gemm.h"
#include "fm_compiler.h"       /* FM_FORCE_INLINE, FM_UNROLL_FULL (the tile's loops) */

/* lanes [8 - r, 16 - r) of this table: the first r lanes set (r = 1..8) */
static const int fm_lanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

FM_FORCE_INLINE __m256 fm_load(const float *p, int masked, __m256i last)
{
    return masked ? _mm256_maskload_ps(p, last) : _mm256_loadu_ps(p);
}

/* rows x vectors accumulators; masked: the last vector holds fewer than 8 columns (`last`) */
FM_FORCE_INLINE void fm_tile(int rows, int vectors, int masked, __m256i last, int k, const float *a, int lda,
                            const float *b, int ldb, float *c, int ldc)
{
    __m256 acc[4][8];
    int r, q, p;
    FM_UNROLL_FULL
    for (r = 0; r < rows; r++)
        FM_UNROLL_FULL
        for (q = 0; q < vectors; q++) acc[r][q] = _mm256_setzero_ps();
    for (p = 0; p < k; p++) {
        const float *bp = b + (long)p * ldb;
        if (rows == 1) {
            __m256 av = _mm256_broadcast_ss(a + p);
            FM_UNROLL_FULL
            for (q = 0; q < vectors; q++)
                acc[0][q] = _mm256_fmadd_ps(av, fm_load(bp + 8 * q, masked && q == vectors - 1, last),
                                            acc[0][q]);
        } else {
            __m256 bv[3];
            FM_UNROLL_FULL
            for (q = 0; q < vectors; q++)
                bv[q] = fm_load(bp + 8 * q, masked && q == vectors - 1, last);
            FM_UNROLL_FULL
            for (r = 0; r < rows; r++) {
                __m256 av = _mm256_broadcast_ss(a + (long)r * lda + p);
                FM_UNROLL_FULL
                for (q = 0; q < vectors; q++) acc[r][q] = _mm256_fmadd_ps(av, bv[q], acc[r][q]);
            }
        }
    }
    FM_UNROLL_FULL
    for (r = 0; r < rows; r++)
        FM_UNROLL_FULL
        for (q = 0; q < vectors; q++) {
            if (masked && q == vectors - 1)
                _mm256_maskstore_ps(c + (long)r * ldc + 8 * q, last, acc[r][q]);
            else
                _mm256_storeu_ps(c + (long)r * ldc + 8 * q, acc[r][q]);
        }
}

#define FM_TILE_CASE(R, V) \
    case (R) * 16 + (V): fm_tile(R, V, masked, last, k, a_i, lda, b_j, ldb, c_ij, ldc); break;

void fm_sgemm_nn_avx2(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                      float *c, int ldc)
{
    int i, j, panel = m == 1 ? 64 : 24;
    for (j = 0; j < n; j += panel) {
        int width = n - j < panel ? n - j : panel, vectors = (width + 7) / 8, masked = width % 8 != 0;
        __m256i last = _mm256_loadu_si256((const __m256i *)(fm_lanes + 8 - (width - 8 * (vectors - 1))));
        const float *b_j = b + j;
        for (i = 0; i < m; i += 4) {
            int rows = m - i < 4 ? m - i : 4;
            const float *a_i = a + (long)i * lda;
            float *c_ij = c + (long)i * ldc + j;
            switch (rows * 16 + vectors) {
                FM_TILE_CASE(1, 8) FM_TILE_CASE(1, 7) FM_TILE_CASE(1, 6) FM_TILE_CASE(1, 5)
                FM_TILE_CASE(1, 4) FM_TILE_CASE(1, 3) FM_TILE_CASE(1, 2) FM_TILE_CASE(1, 1)
                FM_TILE_CASE(4, 3) FM_TILE_CASE(4, 2) FM_TILE_CASE(4, 1)
                FM_TILE_CASE(3, 3) FM_TILE_CASE(3, 2) FM_TILE_CASE(3, 1)
                FM_TILE_CASE(2, 3) FM_TILE_CASE(2, 2) FM_TILE_CASE(2, 1)
            }
        }
    }
}
#else
typedef int fm_small_gemm_avx2_unused;      /* ISO C: a translation unit is not empty */
#endif
