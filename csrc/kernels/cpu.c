/* cpu.c -- the CPU probe (cpu.h). Compiled with the baseline flags, in portable C: the
 * compiler-specific parts are the CPUID/XGETBV access below, one path for MSVC (and
 * clang-cl), one for GCC, Clang and mingw, and none elsewhere (no extension is then usable).
 */
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "fm_atomic.h"

#if defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#include <intrin.h>
#define FM_CPU_X86 1
static void fm_cpuid(unsigned leaf, unsigned sub, unsigned r[4])
{
    int regs[4];
    __cpuidex(regs, (int)leaf, (int)sub);
    r[0] = (unsigned)regs[0]; r[1] = (unsigned)regs[1];
    r[2] = (unsigned)regs[2]; r[3] = (unsigned)regs[3];
}
static unsigned long long fm_xcr0(void) { return (unsigned long long)_xgetbv(0); }
#elif (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#include <cpuid.h>
#define FM_CPU_X86 1
static void fm_cpuid(unsigned leaf, unsigned sub, unsigned r[4])
{
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}
static unsigned long long fm_xcr0(void)
{   /* xgetbv by its encoding: no -mxsave needed, and old assemblers know it */
    unsigned lo, hi;
    __asm__ __volatile__(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

static unsigned fm_probe(void)
{
    unsigned bits = 0;
#if defined(FM_CPU_X86)
    unsigned r[4], max_leaf;
    fm_cpuid(0, 0, r);
    max_leaf = r[0];
    /* "GenuineIntel" is EBX, EDX, ECX of leaf 0 */
    if (r[1] == 0x756e6547u && r[3] == 0x49656e69u && r[2] == 0x6c65746eu) bits |= FM_CPU_INTEL;
    if (max_leaf < 1) return bits;
    fm_cpuid(1, 0, r);
    if ((r[2] >> 12) & 1) bits |= FM_CPU_FMA;
    if ((r[2] >> 27) & 1) {
        unsigned long long xcr0 = fm_xcr0();
        bits |= FM_OS_XSAVE;
        if ((xcr0 & 0x6) == 0x6) bits |= FM_OS_YMM;
        if ((xcr0 & 0xe6) == 0xe6) bits |= FM_OS_ZMM;
        if (((xcr0 >> 17) & 3) == 3) bits |= FM_OS_TILE;
    }
    if (max_leaf >= 7) {
        bits |= FM_CPU_LEAF7;
        fm_cpuid(7, 0, r);
        if ((r[1] >> 5) & 1) bits |= FM_CPU_AVX2;
        if ((r[1] >> 16) & 1) bits |= FM_CPU_AVX512F;
        if ((r[1] >> 30) & 1) bits |= FM_CPU_AVX512BW;
        if ((r[1] >> 31) & 1) bits |= FM_CPU_AVX512VL;
        if (((r[3] >> 22) & 1) && ((r[3] >> 24) & 1)) bits |= FM_CPU_AMX_BF16;
        if (r[0] >= 1) {                    /* sub-leaf 1 exists */
            fm_cpuid(7, 1, r);
            if ((r[0] >> 5) & 1) bits |= FM_CPU_AVX512BF16;
        }
    }
#elif defined(__aarch64__) || defined(_M_ARM64)
    bits |= FM_CPU_NEON;
#endif
    return bits;
}

#define FM_CPU_X86_AVX (FM_CPU_AVX2 | FM_CPU_FMA)
#define FM_CPU_X86_AVX512 (FM_CPU_AVX512F | FM_CPU_AVX512BW | FM_CPU_AVX512VL | FM_CPU_AVX512BF16)

static int fm_cpu_raw_bits = -1;            /* -1: not probed yet */
static int fm_cpu_allowed_bits = -1;
static char fm_cpu_forced_name[32];          /* FUSEDMLP_ISA, truncated; "" when unset */

unsigned fm_cpu_raw(void)
{
    int bits = fm_load_int(&fm_cpu_raw_bits, FM_ACQUIRE);
    if (bits < 0) {
        bits = (int)fm_probe();
        fm_store_int(&fm_cpu_raw_bits, bits, FM_RELEASE);
    }
    return (unsigned)bits;
}

unsigned fm_cpu_features(void)
{
    unsigned raw = fm_cpu_raw(), usable = raw & (FM_CPU_NEON | FM_CPU_INTEL | FM_CPU_LEAF7);
    if (raw & FM_OS_YMM) usable |= raw & FM_CPU_X86_AVX;
    if (raw & FM_OS_ZMM) usable |= raw & FM_CPU_X86_AVX512;
    if ((raw & FM_OS_TILE) && (raw & FM_OS_ZMM)) usable |= raw & FM_CPU_AMX_BF16;
    return usable;
}

/* The bits FUSEDMLP_ISA=name rules out. */
static unsigned fm_ruled_out(const char *name)
{
    if (name[0] == '\0' || strcmp(name, "avx512") == 0 || strcmp(name, "neon") == 0) return 0;
    if (strcmp(name, "avx2") == 0) return FM_CPU_X86_AVX512 | FM_CPU_AMX_BF16;
    return FM_CPU_X86_AVX | FM_CPU_X86_AVX512 | FM_CPU_AMX_BF16;   /* baseline, or unknown */
}

unsigned fm_cpu_allowed(void)
{
    int bits = fm_load_int(&fm_cpu_allowed_bits, FM_ACQUIRE);
    if (bits < 0) {
        const char *env = getenv("FUSEDMLP_ISA");
        char name[sizeof fm_cpu_forced_name];
        size_t i;
        for (i = 0; env != NULL && env[i] != '\0' && i + 1 < sizeof name; i++) name[i] = env[i];
        name[i] = '\0';
        /* every racing thread writes the same bytes before publishing */
        memcpy(fm_cpu_forced_name, name, sizeof name);
        bits = (int)(fm_cpu_features() & ~fm_ruled_out(name));
        fm_store_int(&fm_cpu_allowed_bits, bits, FM_RELEASE);
    }
    return (unsigned)bits;
}

int fm_cpu_allows(unsigned mask) { return (fm_cpu_allowed() & mask) == mask; }

const char *fm_cpu_forced(void)
{
    fm_cpu_allowed();
    return fm_cpu_forced_name[0] ? fm_cpu_forced_name : NULL;
}
