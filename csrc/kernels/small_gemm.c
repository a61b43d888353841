/* small_gemm.c -- the variants of fusedmlp's own inference product (small_gemm.h), picked
 * once at first use from cpu.h's probe, and its entry. Compiled with the baseline flags:
 * nothing here executes a vector instruction beyond the baseline.
 *
 * The variants, best first; the build defines FM_HAVE_SMALL_GEMM_<VARIANT> for each kernel it
 * compiled (CMakeLists.txt): avx512 (small_gemm_avx512.c, needs AVX-512F) and avx2
 * (small_gemm_avx2.c, needs AVX2 and FMA) on x86-64 with GCC or Clang, neon
 * (small_gemm_neon.c) on AArch64. The first that cpu.h allows runs (FUSEDMLP_ISA caps it);
 * FUSEDMLP_OWN_GEMM=0 in the environment turns every variant off (BLAS for every product).
 */
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "fm_atomic.h"
#include "small_gemm.h"

typedef void (*fm_sgemm_nn_fn)(int m, int n, int k, const float *a, int lda, const float *b,
                               int ldb, float *c, int ldc);

typedef struct {
    const char *name;
    unsigned needs;                 /* cpu.h bits */
    fm_sgemm_nn_fn kernel;
    int step_rows;                  /* the most rows of a training forward product it takes */
} fm_small_gemm_variant_t;

/* Inference has no cut-over by rows: `fusedmlp bench isa --cutover` (docs/performance.md,
 * Zen 5, OpenBLAS on its Haswell kernels) measured every x86 kernel faster than OpenBLAS or
 * within 5 % of it up to 1024 rows at 784x128, 128x64 and 64x32. The training step's forward
 * product takes the kernel up to step_rows rows (a block's): AVX-512 at every row count
 * (1.7-5x OpenBLAS up to 1024 rows), AVX2 up to 32 (from 64 rows at 784x128 it ties or
 * loses by up to 5 %), NEON not at all (not timed on AArch64 hardware yet). */
static const fm_small_gemm_variant_t fm_small_gemm_variants[] = {
#if defined(FM_HAVE_SMALL_GEMM_AVX512)
    {"avx512", FM_CPU_AVX512F, fm_sgemm_nn_avx512, 1 << 30},
#endif
#if defined(FM_HAVE_SMALL_GEMM_AVX2)
    {"avx2", FM_CPU_AVX2 | FM_CPU_FMA, fm_sgemm_nn_avx2, 32},
#endif
#if defined(FM_HAVE_SMALL_GEMM_NEON)
    {"neon", FM_CPU_NEON, fm_sgemm_nn_neon, 0},
#endif
    {"blas", 0, NULL, 0},        /* none: the caller calls BLAS */
};

static int fm_small_gemm_index = -1;        /* into fm_small_gemm_variants; -1: not chosen yet */

static int fm_small_gemm_choose(void)
{
    const char *env = getenv("FUSEDMLP_OWN_GEMM");
    int i, last = (int)(sizeof fm_small_gemm_variants / sizeof fm_small_gemm_variants[0]) - 1;
    if (env != NULL && strcmp(env, "0") == 0) return last;
    for (i = 0; i < last; i++)
        if (fm_cpu_allows(fm_small_gemm_variants[i].needs)) return i;
    return last;
}

static const fm_small_gemm_variant_t *fm_small_gemm_chosen(void)
{
    int index = fm_load_int(&fm_small_gemm_index, FM_ACQUIRE);
    if (index < 0) {
        index = fm_small_gemm_choose();
        fm_store_int(&fm_small_gemm_index, index, FM_RELEASE);
    }
    return &fm_small_gemm_variants[index];
}

int fm_small_gemm_cpu(void) { return fm_small_gemm_chosen()->kernel != NULL; }

const char *fm_small_gemm_variant(void) { return fm_small_gemm_chosen()->name; }

int fm_small_gemm_step_rows(void) { return fm_small_gemm_chosen()->step_rows; }

int fm_small_gemm(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                  float *c, int ldc)
{
    const fm_small_gemm_variant_t *v = fm_small_gemm_chosen();
    if (v->kernel == NULL) return 0;
    v->kernel(m, n, k, a, lda, b, ldb, c, ldc);
    return 1;
}
