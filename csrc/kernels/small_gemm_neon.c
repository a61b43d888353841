/* small_gemm_neon.c -- C = A @ B for float32 row-major matrices, AArch64 NEON (small_gemm.h).
 *
 * NEON is AArch64's baseline: no flags, runs everywhere this file is built (elsewhere it is
 * empty). No packing. 32 q registers of 4 floats:
 *   one row of A (a gemv: W streamed once): a tile of 1 x 32 columns, 8 accumulators;
 *   more rows: tiles of up to 4 rows x 16 columns, 16 accumulators, 4 vectors of a row of B
 *     loaded once per step and one broadcast of each row of A.
 * NEON has no masked loads: the last vector of a tile narrower than 4 columns is read from
 * and written to a 4-float copy. Every element of C is its k products summed in order with
 * fused multiply-adds (vfmaq_f32), as the AVX2 and AVX-512 kernels do: the same bits on
 * every ISA, and for every block of a larger product.
 */
#if defined(__aarch64__) || defined(_M_ARM64)
#include <arm_neon.h>
#include <string.h>

#include "small_gemm.h"
#include "fm_compiler.h"       /* FM_FORCE_INLINE, FM_UNROLL_FULL (the tile's loops) */

FM_FORCE_INLINE float32x4_t fm_load(const float *p, int lanes)
{
    float tail[4] = {0, 0, 0, 0};
    if (lanes == 4) return vld1q_f32(p);
    memcpy(tail, p, sizeof(float) * (size_t)lanes);
    return vld1q_f32(tail);
}

FM_FORCE_INLINE void fm_store(float *p, float32x4_t v, int lanes)
{
    float tail[4];
    if (lanes == 4) {
        vst1q_f32(p, v);
        return;
    }
    vst1q_f32(tail, v);
    memcpy(p, tail, sizeof(float) * (size_t)lanes);
}

/* rows x vectors accumulators; `lanes` (1..4) columns in the last vector */
FM_FORCE_INLINE void fm_tile(int rows, int vectors, int lanes, int k, const float *a, int lda,
                            const float *b, int ldb, float *c, int ldc)
{
    float32x4_t acc[4][8];
    int r, q, p;
    FM_UNROLL_FULL
    for (r = 0; r < rows; r++)
        FM_UNROLL_FULL
        for (q = 0; q < vectors; q++) acc[r][q] = vdupq_n_f32(0.0f);
    for (p = 0; p < k; p++) {
        const float *bp = b + (long)p * ldb;
        float32x4_t bv[8];
        FM_UNROLL_FULL
        for (q = 0; q < vectors; q++) bv[q] = fm_load(bp + 4 * q, q == vectors - 1 ? lanes : 4);
        FM_UNROLL_FULL
        for (r = 0; r < rows; r++) {
            float32x4_t av = vdupq_n_f32(a[(long)r * lda + p]);
            FM_UNROLL_FULL
            for (q = 0; q < vectors; q++) acc[r][q] = vfmaq_f32(acc[r][q], av, bv[q]);
        }
    }
    FM_UNROLL_FULL
    for (r = 0; r < rows; r++)
        FM_UNROLL_FULL
        for (q = 0; q < vectors; q++)
            fm_store(c + (long)r * ldc + 4 * q, acc[r][q], q == vectors - 1 ? lanes : 4);
}

#define FM_TILE_CASE(R, V) \
    case (R) * 16 + (V): fm_tile(R, V, lanes, k, a_i, lda, b_j, ldb, c_ij, ldc); break;

void fm_sgemm_nn_neon(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                      float *c, int ldc)
{
    int i, j, panel = m == 1 ? 32 : 16;
    for (j = 0; j < n; j += panel) {
        int width = n - j < panel ? n - j : panel, vectors = (width + 3) / 4;
        int lanes = width - 4 * (vectors - 1);
        const float *b_j = b + j;
        for (i = 0; i < m; i += 4) {
            int rows = m - i < 4 ? m - i : 4;
            const float *a_i = a + (long)i * lda;
            float *c_ij = c + (long)i * ldc + j;
            switch (rows * 16 + vectors) {
                FM_TILE_CASE(1, 8) FM_TILE_CASE(1, 7) FM_TILE_CASE(1, 6) FM_TILE_CASE(1, 5)
                FM_TILE_CASE(1, 4) FM_TILE_CASE(1, 3) FM_TILE_CASE(1, 2) FM_TILE_CASE(1, 1)
                FM_TILE_CASE(4, 4) FM_TILE_CASE(4, 3) FM_TILE_CASE(4, 2) FM_TILE_CASE(4, 1)
                FM_TILE_CASE(3, 4) FM_TILE_CASE(3, 3) FM_TILE_CASE(3, 2) FM_TILE_CASE(3, 1)
                FM_TILE_CASE(2, 4) FM_TILE_CASE(2, 3) FM_TILE_CASE(2, 2) FM_TILE_CASE(2, 1)
            }
        }
    }
}
#else
typedef int fm_small_gemm_neon_unused;      /* ISO C: a translation unit is not empty */
#endif
