/* bf16_gemm_avx512.c -- the AVX512-BF16 kernel behind fm_bf16_gemm (bf16_gemm.h).
 *
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512bf16 (CMakeLists.txt), and only ever
 * called after bf16_gemm.c has checked at run time that the CPU runs these instructions.
 *
 * vdpbf16ps acc, a, b: for each of the 16 float32 lanes i, acc[i] += a[2i] b[2i] + a[2i+1]
 * b[2i+1], where a and b hold 32 bf16 each. So both operands are packed as *pairs along k*:
 * one 32-bit word holds (bf16 x[.., 2p], bf16 x[.., 2p+1]), low half first.
 *
 *   B (k x n) is packed per block of FM_BF16_KC pairs x NC columns into panels of NR = 32
 *     columns: panel q, pair p holds words [j = 0..31] -- two ZMM loads per pair.
 *   A (m x k) is packed per block of MC rows x FM_BF16_KC pairs: word (r, p) at r*rs + p*ps,
 *     row-major (rs = pairs, ps = 1) when A is not transposed, pair-major (rs = 1, ps = rows)
 *     when it is -- whichever its memory order gives with contiguous loads. The micro-kernel
 *     broadcasts one word per row.
 *   micro-kernel: MR x 32 of C in 2 MR ZMM accumulators, kp vdpbf16ps steps, then C is
 *     stored (first block along k) or added to (later blocks), masked at the edges; tiles of
 *     fewer rows (small batches, the last rows) use a variant of 1, 2 or 4 rows.
 * Edges: pairs beyond k, columns beyond n and rows beyond m are packed as zeros.
 * Products of up to 4 rows (no transposes) skip packing: B is converted as it is read.
 * A B packed once by fm_bf16_pack (whole, in the same panels, bf16_gemm.h) is used in place of
 *   the per-block packing space: the same words in the same order, so the same sums.
 *
 * Rounding: vcvtne2ps2bf16 (round to nearest even; subnormal inputs read as zero). Packing
 * space: one block of A and one of B per thread (a thread-local key, freed when the thread ends).
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16_gemm.h"
#include "fm_platform.h"

#define MR 8                   /* rows of a micro-tile */
#define NR 32                  /* columns of a micro-tile: two ZMM of float32 */
#define KCP 128                /* pairs of k per block: a B panel is 16 KiB, L1-resident */
#define MC 96                  /* rows of A per block (48 KiB, L2) */
#define NC 1024                /* columns of B per block (512 KiB, L2) */

typedef struct {
    uint32_t a[MC * KCP];
    uint32_t b[NC * KCP];
} fm_bf16_space;

static inline __mmask16 fm_mask(int count)
{
    return count >= 16 ? (__mmask16)0xFFFF : count <= 0 ? (__mmask16)0 : (__mmask16)((1u << count) - 1);
}

static inline __m512i fm_as_words(__m512bh v)
{
    return (__m512i)v;
}

/* 16 words: the pairs of x[0 .. count) (count <= 32 floats), zeros past count. */
static inline __m512i fm_pairs(const float *x, int count)
{
    __m512 lo = _mm512_maskz_loadu_ps(fm_mask(count), x);
    __m512 hi = _mm512_maskz_loadu_ps(fm_mask(count - 16), x + 16);
    return fm_as_words(_mm512_cvtne2ps_pbh(hi, lo));
}

/* 16 words: (bf16 r0[j], bf16 r1[j]) for j < count (<= 16); r1 NULL reads as zeros. */
static inline __m512i fm_interleave(const float *r0, const float *r1, int count)
{
    const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9,
                                           24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
                                           16, 0);
    __mmask16 mask = fm_mask(count);
    __m512 lo = _mm512_maskz_loadu_ps(mask, r0);
    __m512 hi = r1 ? _mm512_maskz_loadu_ps(mask, r1) : _mm512_setzero_ps();
    return _mm512_permutexvar_epi16(order, fm_as_words(_mm512_cvtne2ps_pbh(hi, lo)));
}

/* 16 words of the pairs (bf16 r0[j], bf16 r1[j]) for j < count (<= 16; zeros past it; r1 NULL
 * reads as zeros), scrambled: word w holds column (0 1 4 5 8 9 12 13 2 3 6 7 10 11 14 15)[w]. Two
 * in-lane unpacks instead of fm_interleave's word permutation (the few-rows product's inner
 * loop); fm_unscramble puts 16 sums of such lanes back into column order. */
static inline __m512i fm_interleave_scrambled(const float *r0, const float *r1, int count)
{
    __mmask16 mask = fm_mask(count);
    __m512 x0 = _mm512_maskz_loadu_ps(mask, r0);
    __m512 x1 = r1 ? _mm512_maskz_loadu_ps(mask, r1) : _mm512_setzero_ps();
    return fm_as_words(_mm512_cvtne2ps_pbh(_mm512_unpackhi_ps(x0, x1), _mm512_unpacklo_ps(x0, x1)));
}

static inline __m512 fm_unscramble(__m512 sums)
{   /* word w of fm_interleave_scrambled is column 0 1 4 5 8 9 12 13 2 3 6 7 10 11 14 15 */
    const __m512i column_to_word = _mm512_set_epi32(15, 14, 7, 6, 13, 12, 5, 4, 11, 10, 3, 2,
                                                    9, 8, 1, 0);
    return _mm512_permutexvar_ps(column_to_word, sums);
}

/* r[i] := column i of the 16 x 16 matrix of 32-bit words whose rows are r[0..15]. */
static inline void fm_transpose16(__m512i r[16])
{
    __m512i t[16];
    int i;
    for (i = 0; i < 16; i += 2) {                   /* interleave words of row pairs */
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (i = 0; i < 16; i += 4) {                   /* then pairs of words of row quads */
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (i = 0; i < 4; i++) {                       /* then 128-bit lanes, twice */
        t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
    }
}

/* Pack pairs [p0, p0 + kp) x columns [j0, j0 + nc) of op(B) into NR-column panels. */
static void fm_pack_b(int trans, const float *b, ptrdiff_t ldb, int k, int p0, int kp, int j0,
                      int nc, uint32_t *dst)
{
    int q, p, j;
    int floats = k - 2 * p0 < 2 * kp ? k - 2 * p0 : 2 * kp;     /* valid k in this block */
    if (!trans) {                           /* op(B)[kk, j] = b[kk ldb + j]: rows of B, each */
        for (p = 0; p < kp; p++) {          /* pair of rows read once, left to right */
            ptrdiff_t kk = 2 * (ptrdiff_t)(p0 + p);
            const float *r0 = b + kk * ldb + j0;
            const float *r1 = kk + 1 < k ? r0 + ldb : NULL;
            for (q = 0; q * NR < nc; q++) {
                int cols = nc - q * NR < NR ? nc - q * NR : NR;
                uint32_t *out = dst + (ptrdiff_t)q * kp * NR + p * NR;
                _mm512_storeu_si512(out, fm_interleave(r0 + q * NR, r1 ? r1 + q * NR : NULL, cols));
                _mm512_storeu_si512(out + 16, fm_interleave(r0 + q * NR + 16,
                                                            r1 ? r1 + q * NR + 16 : NULL, cols - 16));
            }
        }
        return;
    }
    for (q = 0; q * NR < nc; q++) {
        int cols = nc - q * NR < NR ? nc - q * NR : NR;
        uint32_t *panel = dst + (ptrdiff_t)q * kp * NR;
        {                                   /* op(B)[kk, j] = b[j ldb + kk]: k is contiguous */
            int half, pb;
            for (half = 0; half < NR; half += 16)           /* 16 columns x 16 pairs at a time */
                for (pb = 0; pb < kp; pb += 16) {
                    __m512i r[16];
                    for (j = 0; j < 16; j++)
                        r[j] = half + j < cols
                            ? fm_pairs(b + (ptrdiff_t)(j0 + q * NR + half + j) * ldb
                                           + 2 * (ptrdiff_t)(p0 + pb),
                                       floats - 2 * pb)
                            : _mm512_setzero_si512();
                    fm_transpose16(r);
                    for (p = 0; p < 16 && pb + p < kp; p++)
                        _mm512_storeu_si512(panel + (pb + p) * NR + half, r[p]);
                }
        }
    }
}

/* Pack rows [i0, i0 + mc) x pairs [p0, p0 + kp) of op(A), rows padded to a multiple of MR
 * with zeros: row-major (word (r, p) at r kp + p) or, transposed, pair-major (p rows + r). */
static void fm_pack_a(int trans, const float *a, ptrdiff_t lda, int k, int p0, int kp, int i0,
                      int mc, uint32_t *dst)
{
    int rows = (mc + MR - 1) / MR * MR;
    int floats = k - 2 * p0 < 2 * kp ? k - 2 * p0 : 2 * kp;
    int i, p, pb;
    if (!trans) {                           /* op(A)[i, kk] = a[i lda + kk] */
        for (i = 0; i < rows; i++) {
            uint32_t *out = dst + (ptrdiff_t)i * kp;
            const float *row = a + (ptrdiff_t)(i0 + i) * lda + 2 * (ptrdiff_t)p0;
            for (pb = 0; pb < kp; pb += 16) {
                __m512i words = i < mc ? fm_pairs(row + 2 * pb, floats - 2 * pb)
                                       : _mm512_setzero_si512();
                _mm512_mask_storeu_epi32(out + pb, fm_mask(kp - pb), words);
            }
        }
    } else {                                /* op(A)[i, kk] = a[kk lda + i] */
        for (p = 0; p < kp; p++) {
            ptrdiff_t kk = 2 * (ptrdiff_t)(p0 + p);
            const float *r0 = a + kk * lda + i0;
            const float *r1 = kk + 1 < k ? r0 + lda : NULL;
            uint32_t *out = dst + (ptrdiff_t)p * rows;
            for (i = 0; i < rows; i += 16)
                _mm512_mask_storeu_epi32(out + i, fm_mask(rows - i),
                                         fm_interleave(r0 + i, r1 ? r1 + i : NULL, mc - i));
        }
    }
}

/* C[0:mr, 0:nr] (+)= A-tile (rows x kp pairs) @ B-panel (kp pairs x 32), for a constant
 * `rows` >= mr (inlined into one function per tile height, so the 2 rows accumulators live in
 * registers and a short tile does no work for rows it does not have). */
FM_FORCE_INLINE void
fm_micro(const int rows, int kp, const uint32_t *a, ptrdiff_t rs, ptrdiff_t ps, const uint32_t *b,
         float *c, ptrdiff_t ldc, int mr, int nr, int accumulate)
{
    __m512 c0[MR], c1[MR];
    __mmask16 m0 = fm_mask(nr), m1 = fm_mask(nr - 16);
    int r, p;
    FM_UNROLL(8)
    for (r = 0; r < rows; r++) {
        c0[r] = _mm512_setzero_ps();
        c1[r] = _mm512_setzero_ps();
    }
    for (p = 0; p < kp; p++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + p * NR);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + p * NR + 16);
        const uint32_t *ap = a + p * ps;
        FM_UNROLL(8)
        for (r = 0; r < rows; r++) {
            __m512bh ar = (__m512bh)_mm512_set1_epi32((int)ap[r * rs]);
            c0[r] = _mm512_dpbf16_ps(c0[r], ar, b0);
            c1[r] = _mm512_dpbf16_ps(c1[r], ar, b1);
        }
    }
    FM_UNROLL(8)
    for (r = 0; r < rows; r++) {
        float *row = c + r * ldc;
        if (r >= mr)
            break;
        if (accumulate) {
            c0[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, row), c0[r]);
            c1[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, row + 16), c1[r]);
        }
        _mm512_mask_storeu_ps(row, m0, c0[r]);
        _mm512_mask_storeu_ps(row + 16, m1, c1[r]);
    }
}

#define FM_MICRO(rows)                                                                          \
    static void fm_micro_##rows(int kp, const uint32_t *a, ptrdiff_t rs, ptrdiff_t ps,         \
                                const uint32_t *b, float *c, ptrdiff_t ldc, int mr, int nr,    \
                                int accumulate)                                                 \
    {                                                                                           \
        fm_micro(rows, kp, a, rs, ps, b, c, ldc, mr, nr, accumulate);                           \
    }
FM_MICRO(1)
FM_MICRO(2)
FM_MICRO(4)
FM_MICRO(8)

/* Up to 4 rows, no transposes: c[0:rows, :n] = bf16(a[0:rows, :k]) @ bf16(b[:k, :n])
 * without packing B (a product of a few rows would spend most of its time packing). B's
 * pairs of rows are converted as they are read, 256 / rows columns of C at a time in 16 ZMM
 * (in the lane order of fm_interleave_scrambled), each converted word used by every row; each element is summed exactly as the packed path
 * sums it (blocks of KCP pairs, pairs in order), so a row's result does not depend on how
 * many rows came with it. */
FM_FORCE_INLINE void
fm_few_rows(const int rows, int n, int k, const float *a, ptrdiff_t lda, const float *b,
            ptrdiff_t ldb, float *c, ptrdiff_t ldc)
{
    const int width = 16 / rows;            /* ZMM of columns per row */
    int pairs = (k + 1) / 2, jb, pc, p, j, r;
    uint32_t words[4][KCP + 16];
    for (jb = 0; jb < n; jb += 16 * width) {
        int cols = n - jb < 16 * width ? n - jb : 16 * width;
        for (pc = 0; pc < pairs; pc += KCP) {
            int kp = pairs - pc < KCP ? pairs - pc : KCP;
            int floats = k - 2 * pc < 2 * kp ? k - 2 * pc : 2 * kp;
            __m512 acc[16];
            FM_UNROLL(16)
            for (j = 0; j < 16; j++)
                acc[j] = _mm512_setzero_ps();
            for (r = 0; r < rows; r++)
                for (p = 0; p < kp; p += 16)
                    _mm512_storeu_si512(words[r] + p,
                                        fm_pairs(a + r * lda + 2 * (ptrdiff_t)(pc + p),
                                                 floats - 2 * p));
            for (p = 0; p < kp; p++) {
                ptrdiff_t kk = 2 * (ptrdiff_t)(pc + p);
                const float *r0 = b + kk * ldb + jb;
                const float *r1 = kk + 1 < k ? r0 + ldb : NULL;
                FM_UNROLL(16)
                for (j = 0; j < width; j++) {
                    __m512bh w = (__m512bh)fm_interleave_scrambled(
                        r0 + 16 * j, r1 ? r1 + 16 * j : NULL, cols - 16 * j);
                    FM_UNROLL(4)
                    for (r = 0; r < rows; r++)
                        acc[r * width + j] = _mm512_dpbf16_ps(
                            acc[r * width + j], (__m512bh)_mm512_set1_epi32((int)words[r][p]), w);
                }
            }
            FM_UNROLL(4)
            for (r = 0; r < rows; r++)
                FM_UNROLL(16)
                for (j = 0; j < width; j++) {
                    __mmask16 mask = fm_mask(cols - 16 * j);
                    float *out = c + r * ldc + jb + 16 * j;
                    __m512 sum = fm_unscramble(acc[r * width + j]);
                    if (pc > 0)
                        sum = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, out), sum);
                    _mm512_mask_storeu_ps(out, mask, sum);
                }
        }
    }
}

static void fm_few_rows_1(int n, int k, const float *a, ptrdiff_t lda, const float *b,
                          ptrdiff_t ldb, float *c, ptrdiff_t ldc)
{
    fm_few_rows(1, n, k, a, lda, b, ldb, c, ldc);
}
static void fm_few_rows_2(int n, int k, const float *a, ptrdiff_t lda, const float *b,
                          ptrdiff_t ldb, float *c, ptrdiff_t ldc)
{
    fm_few_rows(2, n, k, a, lda, b, ldb, c, ldc);
}
static void fm_few_rows_4(int n, int k, const float *a, ptrdiff_t lda, const float *b,
                          ptrdiff_t ldb, float *c, ptrdiff_t ldc)
{
    fm_few_rows(4, n, k, a, lda, b, ldb, c, ldc);
}

/* The packing space of the calling thread (NULL if it cannot be allocated), freed when the
 * thread ends (fm_platform.h's thread-local key). */
static fm_tls_key fm_space_key;
static int fm_space_key_made = 0;
static fm_once fm_space_once = FM_ONCE_INIT;
static void FM_TLS_CALLBACK fm_space_free(void *space) { if (space) fm_aligned_free(space); }
static void fm_space_key_init(void)
{
    fm_space_key_made = fm_tls_create(&fm_space_key, fm_space_free) == 0;
}

static fm_bf16_space *fm_space(void)
{
    void *space;
    fm_call_once(&fm_space_once, fm_space_key_init);
    if (!fm_space_key_made)
        return NULL;
    space = fm_tls_get(fm_space_key);
    if (space == NULL) {
        space = fm_aligned_alloc(64, sizeof(fm_bf16_space));
        if (space == NULL)
            return NULL;
        if (fm_tls_set(fm_space_key, space) != 0) {
            fm_aligned_free(space);
            return NULL;
        }
    }
    return (fm_bf16_space *)space;
}

/* The blocked product; op(B) is packed per block from b (bp NULL) or was packed whole by
 * fm_bf16_pack (bp: its panels of NR columns ps words apart). Both give every element the
 * same sums. */
static int fm_gemm_blocked(int trans_a, int trans_b, int m, int n, int k, const float *a, int lda,
                           const float *b, int ldb, const uint32_t *bp, ptrdiff_t ps, float *c,
                           int ldc)
{
    int pairs = (k + 1) / 2, jc, pc, ic, q, ir;
    fm_bf16_space *space = fm_space();
    if (space == NULL)
        return 0;
    if (k == 0) {
        for (ic = 0; ic < m; ic++)
            memset(c + (ptrdiff_t)ic * ldc, 0, sizeof(float) * (size_t)n);
        return 1;
    }
    for (jc = 0; jc < n; jc += NC) {
        int nc = n - jc < NC ? n - jc : NC;
        for (pc = 0; pc < pairs; pc += KCP) {
            int kp = pairs - pc < KCP ? pairs - pc : KCP;
            if (!bp)
                fm_pack_b(trans_b, b, ldb, k, pc, kp, jc, nc, space->b);
            for (ic = 0; ic < m; ic += MC) {
                int mc = m - ic < MC ? m - ic : MC;
                ptrdiff_t rows = (mc + MR - 1) / MR * MR;
                fm_pack_a(trans_a, a, lda, k, pc, kp, ic, mc, space->a);
                for (q = 0; q * NR < nc; q++) {
                    int nr = nc - q * NR < NR ? nc - q * NR : NR;
                    const uint32_t *panel = bp ? bp + (jc / NR + q) * ps + (ptrdiff_t)pc * NR
                                               : space->b + (ptrdiff_t)q * kp * NR;
                    for (ir = 0; ir < mc; ir += MR) {
                        int mr = mc - ir < MR ? mc - ir : MR;
                        const uint32_t *tile = trans_a ? space->a + ir
                                                       : space->a + (ptrdiff_t)ir * kp;
                        void (*micro)(int, const uint32_t *, ptrdiff_t, ptrdiff_t, const uint32_t *,
                                      float *, ptrdiff_t, int, int, int) =
                            mr > 4 ? fm_micro_8 : mr > 2 ? fm_micro_4 : mr > 1 ? fm_micro_2
                                                                               : fm_micro_1;
                        micro(kp, tile, trans_a ? 1 : kp, trans_a ? rows : 1, panel,
                              c + (ptrdiff_t)(ic + ir) * ldc + jc + q * NR, ldc, mr, nr, pc > 0);
                    }
                }
            }
        }
    }
    return 1;
}

/* 0 when no packing space could be had (the caller falls back to its scalar loop). */
int fm_gemm_bf16_avx512(int trans_a, int trans_b, int m, int n, int k, const float *a, int lda,
                        const float *b, int ldb, float *c, int ldc)
{
    if (m <= 4 && !trans_a && !trans_b && k > 0) {
        if (m == 3) {                       /* 2 rows, then 1 */
            fm_few_rows_2(n, k, a, lda, b, ldb, c, ldc);
            fm_few_rows_1(n, k, a + 2 * (ptrdiff_t)lda, lda, b, ldb, c + 2 * (ptrdiff_t)ldc, ldc);
        } else
            (m == 1 ? fm_few_rows_1 : m == 2 ? fm_few_rows_2 : fm_few_rows_4)(n, k, a, lda, b,
                                                                             ldb, c, ldc);
        return 1;
    }
    return fm_gemm_blocked(trans_a, trans_b, m, n, k, a, lda, b, ldb, NULL, 0, c, ldc);
}

int fm_gemm_bf16_packed_avx512(int trans_a, int m, int n, int k, const float *a, int lda,
                               const uint32_t *bp, ptrdiff_t ps, float *c, int ldc)
{
    return fm_gemm_blocked(trans_a, 0, m, n, k, a, lda, NULL, 0, bp, ps, c, ldc);
}

/* The word of pair p, column j of a packed operand whose panels are ps words apart. */
static inline ptrdiff_t fm_word(ptrdiff_t ps, int p, int j)
{
    return (ptrdiff_t)(j / NR) * ps + (ptrdiff_t)p * NR + j % NR;
}

/* Pack pairs [p0, p1) x columns [j0, j1) (j0 a multiple of 16) of op(B) = b (k rows) or, with
 * trans, b^T (b has k columns) into panels (bf16_gemm.h). */
void fm_bf16_pack_avx512(int trans, int k, const float *b, int ldb, int p0, int p1, int j0,
                         int j1, uint32_t *dst, ptrdiff_t ps)
{
    int p, j, i;
    if (!trans) {                           /* pairs of rows of b, read left to right */
        for (p = p0; p < p1; p++) {
            const float *r0 = b + 2 * (ptrdiff_t)p * ldb;
            const float *r1 = 2 * p + 1 < k ? r0 + ldb : NULL;
            for (j = j0; j < j1; j += 16)
                _mm512_mask_storeu_epi32(dst + fm_word(ps, p, j), fm_mask(j1 - j),
                                         fm_interleave(r0 + j, r1 ? r1 + j : NULL, j1 - j));
        }
        return;
    }
    for (j = j0; j < j1; j += 16)           /* rows of b hold pairs: 16 x 16 words transposed */
        for (p = p0; p < p1; p += 16) {
            __m512i r[16];
            for (i = 0; i < 16; i++)
                r[i] = j + i < j1
                           ? fm_pairs(b + (ptrdiff_t)(j + i) * ldb + 2 * (ptrdiff_t)p, k - 2 * p)
                           : _mm512_setzero_si512();
            fm_transpose16(r);
            for (i = 0; i < 16 && p + i < p1; i++)
                _mm512_mask_storeu_epi32(dst + fm_word(ps, p + i, j), fm_mask(j1 - j), r[i]);
        }
}

/* dst[i] := bf16 bits of src[i] (round to nearest even), i < n: operands for MKL's product. */
void fm_bf16_convert_avx512(ptrdiff_t n, const float *src, uint16_t *dst)
{
    ptrdiff_t i;
    for (i = 0; i < n; i += 16) {
        __mmask16 mask = fm_mask(n - i < 16 ? (int)(n - i) : 16);
        __m256bh half = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, src + i));
        _mm256_mask_storeu_epi16(dst + i, mask, (__m256i)half);
    }
}
