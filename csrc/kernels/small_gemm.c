/* small_gemm.c -- run-time detection and entry of fusedmlp's own inference product
 * (small_gemm.h). Compiled with the baseline flags: nothing here executes AVX-512. The kernel
 * (small_gemm_avx512.c, FM_HAVE_SMALL_GEMM) is built for x86-64 with GCC or Clang and runs when
 * cpu.h allows AVX-512F (the CPU has it, the OS saves the ZMM and opmask state, FUSEDMLP_ISA
 * does not name a variant below avx512); FUSEDMLP_OWN_GEMM=0 in the environment turns it off
 * (BLAS for every product).
 */
#include <stdlib.h>
#include <string.h>

#include "small_gemm.h"
#include "fm_atomic.h"
#include "cpu.h"

#if defined(FM_HAVE_SMALL_GEMM)
static int fm_small_gemm_state = -1;        /* -1 unknown, 0 no, 1 yes */

static int fm_small_gemm_detect(void)
{
    const char *env = getenv("FUSEDMLP_OWN_GEMM");
    if (env != NULL && strcmp(env, "0") == 0) return 0;
    return fm_cpu_allows(FM_CPU_AVX512F);
}

int fm_small_gemm_cpu(void)
{
    int state = fm_load_int(&fm_small_gemm_state, FM_ACQUIRE);
    if (state < 0) {
        state = fm_small_gemm_detect();
        fm_store_int(&fm_small_gemm_state, state, FM_RELEASE);
    }
    return state;
}

const char *fm_small_gemm_variant(void) { return fm_small_gemm_cpu() ? "avx512" : "blas"; }

int fm_small_gemm(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                  float *c, int ldc)
{
    if (!fm_small_gemm_cpu()) return 0;
    fm_sgemm_nn_avx512(m, n, k, a, lda, b, ldb, c, ldc);
    return 1;
}
#else
int fm_small_gemm_cpu(void) { return 0; }
const char *fm_small_gemm_variant(void) { return "blas"; }
int fm_small_gemm(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                  float *c, int ldc)
{
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)b; (void)ldb; (void)c; (void)ldc;
    return 0;
}
#endif
