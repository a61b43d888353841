/* small_gemm.c -- run-time detection and entry of fusedmlp's own inference product
 * (small_gemm.h). Compiled with the baseline flags: nothing here executes AVX-512. The kernel
 * (small_gemm_avx512.c, FM_HAVE_SMALL_GEMM) is built for x86-64 with GCC or Clang and runs when
 * CPUID says AVX-512F and XGETBV says the OS saves the ZMM and opmask state; FUSEDMLP_OWN_GEMM=0
 * in the environment turns it off (BLAS for every product), and so does FUSEDMLP_ISA naming a
 * variant below avx512.
 */
#include <stdlib.h>
#include <string.h>

#include "small_gemm.h"
#include "fm_atomic.h"
#include "isa_cap.h"

#if defined(FM_HAVE_SMALL_GEMM)
#include <cpuid.h>

static int fm_small_gemm_state = -1;        /* -1 unknown, 0 no, 1 yes */

static int fm_small_gemm_detect(void)
{
    unsigned eax, ebx, ecx, edx, xcr0_lo, xcr0_hi;
    const char *env = getenv("FUSEDMLP_OWN_GEMM");
    if (env != NULL && strcmp(env, "0") == 0) return 0;
    if (!fm_isa_allows_avx512()) return 0;          /* isa_cap.h */
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 27))) return 0;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    if (!((ebx >> 16) & 1)) return 0;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    return (xcr0_lo & 0xe6) == 0xe6;
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

int fm_small_gemm(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                  float *c, int ldc)
{
    if (!fm_small_gemm_cpu()) return 0;
    fm_sgemm_nn_avx512(m, n, k, a, lda, b, ldb, c, ldc);
    return 1;
}
#else
int fm_small_gemm_cpu(void) { return 0; }
int fm_small_gemm(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                  float *c, int ldc)
{
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)b; (void)ldb; (void)c; (void)ldc;
    return 0;
}
#endif
