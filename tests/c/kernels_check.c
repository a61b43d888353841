/* C-level checks of the kernel families other than the elementwise loops, without Python:
 * built and run by tests/test_c_kernels.py natively (per x86 variant) and, by
 * tools/cross_aarch64.sh, for AArch64 under qemu-aarch64-static.
 *
 *   cpu         the probe (cpu.h) against the compiler's own CPU checks; NEON on AArch64
 *   small_gemm  fm_small_gemm (the variant that runs, or "declined") against a float64
 *               product and a scalar fmaf sum, strided and misaligned (check_small_gemm)
 *   bf16_gemm   fm_bf16_gemm against a float64 product of the bf16-rounded operands
 *   dropout     forward/backward masks against the hash recomputed here, bit for bit
 *   l1          subgradient and |p| sum against a float64 oracle
 *               (both loops are in the elementwise kernel table: the variant FUSEDMLP_ISA
 *               selects, or the best this CPU runs)
 *   fpenv       fm_fpenv_enter flushes subnormal results, fm_fpenv_leave restores
 *   pool        fm_team_run runs every part exactly once, on 1 to 8 parts, many times
 * Tolerances of the products: float32 accumulation of k exact products (bf16 x bf16 is exact
 * in float32) errs by at most k * 2^-24 * sum |a||b| (the usual gamma_k bound), so the check
 * allows 2 k 2^-24 sum |a||b|. Prints one line per check and "N passed, M failed" last.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf16_gemm.h"
#include "cpu.h"
#include "dropout.h"
#include "elementwise.h"
#include "fpenv.h"
#include "pool.h"
#include "small_gemm.h"

static int passed = 0, failed = 0;

static void check(int ok, const char *what)
{
    if (ok) passed++;
    else failed++;
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
}

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static float uniform(void)          /* in [-1, 1) */
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(rng >> 40) / (double)(1ULL << 23) - 1.0);
}

static float bf16_round(float x)    /* round to nearest even to 8 significant bits */
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    bits = (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&x, &bits, sizeof bits);
    return x;
}

/* C (m x n, float32) against the float64 product of A (m x k) and B (k x n), rounded by
 * `round` first (NULL: as is), within 2 k 2^-24 sum |a||b| per element. */
static int products_agree(int m, int n, int k, const float *a, const float *b, const float *c,
                          float (*round)(float))
{
    int i, j, p;
    for (i = 0; i < m; i++)
        for (j = 0; j < n; j++) {
            double sum = 0, mag = 0;
            for (p = 0; p < k; p++) {
                double x = round ? round(a[i * k + p]) : a[i * k + p];
                double y = round ? round(b[p * n + j]) : b[p * n + j];
                sum += x * y;
                mag += fabs(x * y);
            }
            if (!(fabs(c[i * n + j] - sum) <= 2.0 * k * ldexp(mag, -24) + 1e-30)) return 0;
        }
    return 1;
}

static void check_products(void)
{
    static const int shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {16, 32, 64}, {17, 33, 65}, {32, 128, 100}};
    size_t s;
    for (s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], i;
        float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n);
        float *c = malloc(sizeof(float) * m * n);
        char what[96];
        for (i = 0; i < m * k; i++) a[i] = uniform();
        for (i = 0; i < k * n; i++) b[i] = uniform();
        memset(c, 0, sizeof(float) * m * n);
        fm_bf16_gemm(0, 0, m, n, k, a, k, b, n, c, n);
        snprintf(what, sizeof what, "bf16_gemm %dx%dx%d (kernel %d)", m, n, k, fm_bf16_cpu());
        check(products_agree(m, n, k, a, b, c, bf16_round), what);
        free(a);
        free(b);
        free(c);
    }
}

/* a * b + c rounded once to float (a correctly rounded fmaf), without libm's fmaf: that one is
 * not correctly rounded everywhere (mingw-w64's C runtime under wine differs from the hardware
 * fused multiply-add on about a quarter of random triples; glibc's is exact), and the check
 * must hold the kernels to the one right answer, not to a C runtime's.
 * Round to odd (Boldo and Melquiond, "Emulation of FMA and correctly rounded sums: proved
 * algorithms using rounding to odd", IEEE Trans. Computers 57(4), 2008):
 *   - p = a * b is exact in double (24 + 24 significant bits <= 53; no underflow: |p| >=
 *     2^-298 or 0), so a contraction of p + c into a double fma would give the same s;
 *   - s = p + c rounded to nearest, e its exact rounding error (TwoSum, no products);
 *   - when e != 0 and s is even, s moves one ulp towards p + c: that is p + c rounded to odd
 *     in double;
 *   - rounding that to float (53 >= 24 + 2 bits) is p + c rounded once to nearest even.
 * Finite inputs whose results stay finite only (the check's operands are in [-1, 1)). */
static float fmaf_exact(float a, float b, float c)
{
    double p = (double)a * (double)b, s = p + (double)c;
    double pb = s - (double)c, cb = s - pb;
    double e = (p - pb) + ((double)c - cb);
    uint64_t bits;
    memcpy(&bits, &s, sizeof bits);
    if (e != 0 && !(bits & 1)) {
        bits = (e > 0) == (s > 0) ? bits + 1 : bits - 1;
        memcpy(&s, &bits, sizeof s);
    }
    return (float)s;
}

/* fmaf_exact on cases with known answers, where rounding a * b + c to double first and then to
 * float (double rounding) or rounding a * b first goes wrong, and against this C runtime's
 * fmaf on random triples with wide exponents: where the runtime is glibc (correctly rounded)
 * they must agree on every triple; elsewhere the mismatches are only reported. */
static void check_fmaf_exact(void)
{
    static const float hard[][4] = {
        /* (1 + 2^-23) 2^-24 x -(1 - 2^-23) = -(2^-24 - 2^-70); + (1 + 2^-23) = 1 + 2^-24 + 2^-70:
         * just above the tie, up to 1 + 2^-23 (double rounding: the tie, to even 1) */
        {0x1.000002p-24f, -0x1.fffffcp-1f, 0x1.000002p+0f, 0x1.000002p+0f},
        /* + (2^-24 - 2^-70) + (1 + 2^-23) = 1 + 2^-23 + 2^-24 - 2^-70: just below the tie, down
         * to 1 + 2^-23 (double rounding: the tie, to even 1 + 2^-22) */
        {0x1.000002p-24f, 0x1.fffffcp-1f, 0x1.000002p+0f, 0x1.000002p+0f},
        /* 1 + 2^-24: an exact tie, to even 1 */
        {1.0f, 1.0f, 0x1p-24f, 1.0f},
        /* (1 + 2^-12)^2 - 1 = 2^-11 + 2^-24 exactly (rounding a * b first gives 2^-11) */
        {0x1.001p+0f, 0x1.001p+0f, -1.0f, 0x1.0008p-11f},
        /* (1 + 2^-23)(1 + 2^-23) + (-3 2^-24) = 1 + 2^-24 + 2^-46: above the tie, up */
        {0x1.000002p+0f, 0x1.000002p+0f, -0x1.8p-23f, 0x1.000002p+0f},
    };
    size_t i;
    int ok = 1, runtime = 0;
    char what[160];
    for (i = 0; i < sizeof hard / sizeof hard[0]; i++) {
        float r = fmaf_exact(hard[i][0], hard[i][1], hard[i][2]);
        if (memcmp(&r, &hard[i][3], sizeof r) != 0) {
            printf("     fmaf_exact(%a, %a, %a) = %a, not %a\n", hard[i][0], hard[i][1], hard[i][2], r,
                   hard[i][3]);
            ok = 0;
        }
    }
    check(ok, "fmaf_exact (round to odd): the known answers at and beside float ties");
    for (i = 0; i < 200000; i++) {
        float a = ldexpf(uniform(), (int)(i % 41) - 20), b = uniform();
        float c = ldexpf(uniform(), (int)(i % 23) - 11);
        float r = fmaf_exact(a, b, c), f = fmaf(a, b, c);
        runtime += memcmp(&r, &f, sizeof r) != 0;
    }
#ifdef __GLIBC__
    snprintf(what, sizeof what, "fmaf_exact = glibc's fmaf (correctly rounded) on 200000 random "
             "triples (%d differ)", runtime);
    check(runtime == 0, what);
#else
    snprintf(what, sizeof what, "note: this C runtime's fmaf differs from fmaf_exact on %d of 200000 "
             "random triples (not a failure: only glibc's is known to be correctly rounded)", runtime);
    puts(what);
#endif
}

/* fm_small_gemm on shapes that are not multiples of any vector width (4, 8, 16 floats) nor of
 * the tiles, one row, and misaligned (offset by one float) strided operands (lda > k,
 * ldb > n, ldc > n): every element of C against
 *   - the float64 product, within gamma_k = k u / (1 - k u) (u = 2^-24) of sum |a||b|: the
 *     bound of k products summed in order with one rounding each (fused multiply-adds);
 *   - the same sum done here one correctly rounded fused multiply-add at a time (fmaf_exact, not
 *     libm's fmaf), in the same order: bit for bit (every variant computes the same bits);
 * and C's padding between rows left untouched. */
static void check_small_gemm(void)
{
    static const int shapes[][3] = {{1, 1, 1},   {1, 7, 3},    {1, 64, 5},   {1, 65, 9},
                                    {1, 130, 33}, {1, 128, 784}, {2, 9, 4},    {3, 5, 7},
                                    {4, 24, 10}, {5, 25, 11},  {7, 63, 17},  {16, 32, 64},
                                    {17, 33, 65}, {32, 128, 100}, {33, 200, 31}};
    const double u = ldexp(1.0, -24);
    size_t s;
    if (!fm_small_gemm_cpu()) {
        float c = 0;
        check(!fm_small_gemm(1, 1, 1, &c, 1, &c, 1, &c, 1), "small_gemm: no kernel here, declined");
        return;
    }
    for (s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        int lda = k + 3, ldb = n + 5, ldc = n + 2, i, j, p, bound = 1, bits = 1, padding = 1;
        float *a0 = malloc(sizeof(float) * ((size_t)m * lda + 1));
        float *b0 = malloc(sizeof(float) * ((size_t)k * ldb + 1));
        float *c0 = malloc(sizeof(float) * ((size_t)m * ldc + 1));
        float *a = a0 + 1, *b = b0 + 1, *c = c0 + 1;     /* misaligned */
        char what[128];
        for (i = 0; i < m * lda; i++) a[i] = uniform();
        for (i = 0; i < k * ldb; i++) b[i] = uniform();
        for (i = 0; i < m * ldc; i++) c[i] = 12345.0f;
        fm_small_gemm(m, n, k, a, lda, b, ldb, c, ldc);
        for (i = 0; i < m; i++) {
            for (j = 0; j < n; j++) {
                double sum = 0, mag = 0;
                float f = 0.0f;
                for (p = 0; p < k; p++) {
                    double x = a[i * lda + p], y = b[p * ldb + j];
                    sum += x * y;
                    mag += fabs(x * y);
                    f = fmaf_exact(a[i * lda + p], b[p * ldb + j], f);
                }
                if (!(fabs(c[i * ldc + j] - sum) <= k * u / (1 - k * u) * mag)) bound = 0;
                if (memcmp(&c[i * ldc + j], &f, sizeof f) != 0) bits = 0;
            }
            for (j = n; j < ldc; j++) padding &= c[i * ldc + j] == 12345.0f;
        }
        snprintf(what, sizeof what, "small_gemm[%s] %dx%dx%d strided, misaligned: float64 within "
                 "gamma_k, scalar fma bit for bit, padding kept", fm_small_gemm_variant(), m, n, k);
        check(bound && bits && padding, what);
        free(a0);
        free(b0);
        free(c0);
    }
}

static void check_dropout(void)
{
    enum { ROWS = 7, N = 9 };
    float a[ROWS * N], d[ROWS * N], a0[ROWS * N];
    uint64_t key = fm_dropout_key(12345, 6, 1), threshold = fm_dropout_threshold(0.3);
    int i, j, ok = 1, kept = 0;
    for (i = 0; i < ROWS * N; i++) a0[i] = a[i] = d[i] = uniform() + 2.0f;
    fm_dropout_forward_f(a, 0, ROWS, N, key, threshold, 2.0f);
    for (i = 0; i < ROWS; i++)
        for (j = 0; j < N; j++) {
            uint64_t pair = (uint64_t)i * ((N + 1) / 2) + (uint64_t)(j / 2);
            uint64_t h = fm_mix64(key + pair * FM_DROPOUT_GOLDEN);
            int keep = (int)((j % 2 ? h >> 32 : h & 0xFFFFFFFFULL) >= threshold);
            kept += keep;
            if (a[i * N + j] != (keep ? a0[i * N + j] * 2.0f : 0.0f)) ok = 0;
        }
    check(ok && kept > 0 && kept < ROWS * N, "dropout forward: the mask is the hash's, bit for bit");
    memcpy(a, a0, sizeof a);
    fm_dropout_backward_f(d, a, 0, ROWS, N, key, threshold, 2.0f, 0.5f);
    for (i = 0, ok = 1; i < ROWS * N; i++)
        if ((d[i] == 0) != (a[i] == 0) || (a[i] != 0 && a[i] != a0[i] * 0.5f)) ok = 0;
    check(ok, "dropout backward: the same mask on the gradient and the activation");
}

static void check_l1(void)
{
    enum { N = 37 };
    double p[N], g[N], sum = 0;
    int i, ok = 1;
    for (i = 0; i < N; i++) {
        p[i] = i % 5 == 0 ? 0.0 : uniform();
        g[i] = 1.0;
        sum += fabs(p[i]);
    }
    fm_l1_subgradient_d(g, p, 0.25, N);
    for (i = 0; i < N; i++)
        if (g[i] != 1.0 + 0.25 * ((p[i] > 0) - (p[i] < 0))) ok = 0;
    check(ok, "l1 subgradient: g += l1 sign(p), 0 at 0");
    check(fabs(fm_abs_sum_d(p, N) - sum) <= 1e-15 * sum * N, "l1 |p| sum");
}

static void check_fpenv(void)
{
    volatile float tiny = 1e-30f, scale = 1e-10f;
    fm_fpenv before = fm_fpenv_get(), saved = fm_fpenv_enter();
    float flushed = tiny * scale;           /* 1e-40: subnormal */
    fm_flush_subnormals_f(&flushed, 1);
    check(flushed == 0.0f, "fpenv: a subnormal result is flushed to zero inside");
    fm_fpenv_leave(saved);
    check(fm_fpenv_get() == before, "fpenv: the caller's control word is restored");
#if FM_FPENV_HARDWARE
    check(tiny * scale != 0.0f, "fpenv: subnormals are back outside");
#endif
}

typedef struct { int hits[64]; } pool_ctx;
static void count_part(void *ctx, int part, int n_parts)
{
    (void)n_parts;
    fm_add_int(&((pool_ctx *)ctx)->hits[part], 1, FM_RELAXED);
}

static void check_pool(void)
{
    int n, round, i, ok = 1;
    fm_pool_init();
    for (n = 1; n <= 40; n += (n < 8 ? 1 : 16)) {
        for (round = 0; round < 200; round++) {
            pool_ctx ctx;
            fm_team team;
            memset(&ctx, 0, sizeof ctx);
            fm_team_begin(&team, n);
            fm_team_run(&team, count_part, &ctx, n);
            fm_team_end(&team);
            for (i = 0; i < n; i++)
                if (fm_load_int(&ctx.hits[i], FM_ACQUIRE) != 1) ok = 0;
        }
    }
    check(ok, "pool: every part runs exactly once (1 to 40 parts, 200 rounds each)");
}

static void check_cpu(void)
{
    unsigned have = fm_cpu_features();
    char what[96];
#if defined(__aarch64__)
    check((have & FM_CPU_NEON) != 0, "cpu: NEON on AArch64");
#elif defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    /* libgcc's (compiler-rt's) CPUID/XGETBV reading, which cpu.c does not use */
    static const struct { unsigned bit; const char *name; int builtin; } known[] = {
        {FM_CPU_AVX2, "avx2", 0}, {FM_CPU_FMA, "fma", 1}, {FM_CPU_AVX512F, "avx512f", 2},
        {FM_CPU_AVX512BW, "avx512bw", 3}, {FM_CPU_AVX512VL, "avx512vl", 4}};
    size_t i;
    __builtin_cpu_init();
    for (i = 0; i < sizeof known / sizeof known[0]; i++) {
        int builtin = 0;
        switch (known[i].builtin) {
        case 0: builtin = __builtin_cpu_supports("avx2"); break;
        case 1: builtin = __builtin_cpu_supports("fma"); break;
        case 2: builtin = __builtin_cpu_supports("avx512f"); break;
        case 3: builtin = __builtin_cpu_supports("avx512bw"); break;
        default: builtin = __builtin_cpu_supports("avx512vl"); break;
        }
        snprintf(what, sizeof what, "cpu: %s %s, as the compiler's check says", known[i].name,
                 (have & known[i].bit) ? "usable" : "not usable");
        check(!(have & known[i].bit) == !builtin, what);
    }
#endif
    snprintf(what, sizeof what, "cpu: allowed %#x within usable %#x (FUSEDMLP_ISA=%s)",
             fm_cpu_allowed(), have, fm_cpu_forced() ? fm_cpu_forced() : "");
    check((fm_cpu_allowed() & ~have) == 0, what);
}

int main(void)
{
    check_cpu();
    if (fm_select_isa() != 0) {
        printf("FAIL fm_select_isa: %s\n", fm_isa_error());
        return 1;
    }
    check_fmaf_exact();
    check_small_gemm();
    check_products();
    check_dropout();
    check_l1();
    check_fpenv();
    check_pool();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
