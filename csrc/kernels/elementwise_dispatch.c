/* elementwise_dispatch.c -- pick the instruction-set variant of the elementwise loops at run
 * time and fill fm_kernels with it (see elementwise.h).
 *
 * Which variants exist is decided by the build (CMakeLists.txt defines FM_HAVE_AVX2,
 * FM_HAVE_AVX512 on x86-64 and FM_HAVE_NEON on AArch64, and always compiles the baseline
 * there, except that AArch64's baseline *is* NEON); which one runs is decided here from
 * the CPU's features: the best the CPU and the operating system support (cpu.h's probe:
 * CPUID, and XGETBV for the AVX state the OS saves). FUSEDMLP_ISA=<name> (read by cpu.h)
 * forces a variant, for tests and benchmarks; naming one this build lacks or this CPU cannot run is an error, not a silent
 * fallback.
 */
#include <stdio.h>
#include <string.h>

#include "cpu.h"
#include "elementwise.h"

fm_kernel_table fm_kernels;

typedef struct {
    const char *name;
    void (*fill_f)(fm_kernel_table *);
    void (*fill_d)(fm_kernel_table *);
    int (*cpu_runs)(void);
} fm_variant;

static int fm_always(void) { return 1; }

#define FM_DECLARE_VARIANT(v)                                                                   \
    void fm_fill_f_##v(fm_kernel_table *table);                                                 \
    void fm_fill_d_##v(fm_kernel_table *table);

#if defined(FM_HAVE_AVX2) || defined(FM_HAVE_AVX512)
/* 1 when the CPU has AVX2 (resp. AVX-512F) and the OS saves the registers it needs (cpu.h:
 * FUSEDMLP_ISA is not applied here, this is what the CPU runs). */
static int fm_cpu_avx2(void) { return (fm_cpu_features() & FM_CPU_AVX2) != 0; }
static int fm_cpu_avx512(void) { return (fm_cpu_features() & FM_CPU_AVX512F) != 0; }
#endif

/* The variants of this build, worst first. */
#if defined(FM_HAVE_NEON)
FM_DECLARE_VARIANT(neon)
static const fm_variant fm_variants[] = {
    {"neon", fm_fill_f_neon, fm_fill_d_neon, fm_always},
};
#else
FM_DECLARE_VARIANT(baseline)
#if defined(FM_HAVE_AVX2)
FM_DECLARE_VARIANT(avx2)
#endif
#if defined(FM_HAVE_AVX512)
FM_DECLARE_VARIANT(avx512)
#endif
static const fm_variant fm_variants[] = {
    {"baseline", fm_fill_f_baseline, fm_fill_d_baseline, fm_always},
#if defined(FM_HAVE_AVX2)
    {"avx2", fm_fill_f_avx2, fm_fill_d_avx2, fm_cpu_avx2},
#endif
#if defined(FM_HAVE_AVX512)
    {"avx512", fm_fill_f_avx512, fm_fill_d_avx512, fm_cpu_avx512},
#endif
};
#endif

#define FM_N_VARIANTS ((int)(sizeof fm_variants / sizeof fm_variants[0]))

static const char *fm_selected = "none";
static char fm_error[200];
static char fm_supported[64];

const char *fm_isa_name(void) { return fm_selected; }
const char *fm_isa_error(void) { return fm_error; }
const char *fm_isa_supported(void) { return fm_supported; }

int fm_select_isa(void)
{
    const char *forced = fm_cpu_forced();
    int i, best = 0, chosen = -1;
    size_t used = 0;
    fm_supported[0] = '\0';
    for (i = 0; i < FM_N_VARIANTS; i++) {
        if (!fm_variants[i].cpu_runs()) continue;
        best = i;
        used += (size_t)snprintf(fm_supported + used, sizeof fm_supported - used, "%s%s",
                                 used ? "," : "", fm_variants[i].name);
    }
    if (forced != NULL && forced[0] != '\0') {
        for (i = 0; i < FM_N_VARIANTS; i++)
            if (strcmp(forced, fm_variants[i].name) == 0) chosen = i;
        if (chosen < 0) {
            char names[64];
            size_t len = 0;
            for (i = 0; i < FM_N_VARIANTS; i++)
                len += (size_t)snprintf(names + len, sizeof names - len, "%s%s",
                                        len ? "," : "", fm_variants[i].name);
            snprintf(fm_error, sizeof fm_error,
                     "FUSEDMLP_ISA=%s is not a variant of this build (it has: %s)", forced,
                     names);
            return -1;
        }
        if (!fm_variants[chosen].cpu_runs()) {
            snprintf(fm_error, sizeof fm_error,
                     "FUSEDMLP_ISA=%s: this CPU cannot run it (it runs: %s)", forced,
                     fm_supported);
            return -1;
        }
    } else {
        chosen = best;
    }
    fm_variants[chosen].fill_f(&fm_kernels);
    fm_variants[chosen].fill_d(&fm_kernels);
    fm_selected = fm_variants[chosen].name;
    return 0;
}
