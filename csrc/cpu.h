/* cpu.h -- the one CPU probe of every kernel family (csrc/kernels/cpu.c).
 *
 * It asks the CPU once (x86: CPUID and XGETBV, through <cpuid.h> and inline asm with GCC and
 * Clang, <intrin.h>'s __cpuidex/_xgetbv with MSVC; AArch64: NEON is part of the baseline) and
 * reads FUSEDMLP_ISA once. Each kernel family then picks its variant from fm_cpu_allowed():
 * the instructions the CPU has *and* the operating system saves the registers of *and*
 * FUSEDMLP_ISA does not rule out. FUSEDMLP_ISA=<variant> caps every family at that variant:
 * "baseline" rules out AVX2, FMA and AVX-512, "avx2" rules out AVX-512 (F, BW, VL, BF16) and
 * AMX, "avx512" and "neon" rule out nothing. Whether the name is a variant of the build and
 * whether the CPU runs it is checked by the elementwise dispatcher, which refuses the import
 * otherwise (elementwise_dispatch.c); an unknown name caps the other families at baseline.
 *
 * Thread-safe: the first call of any function computes the answer; a race computes it twice,
 * identically.
 */
#ifndef FUSEDMLP_CPU_H
#define FUSEDMLP_CPU_H

/* The CPU's instruction-set extensions (CPUID, not yet the OS's consent) ... */
#define FM_CPU_AVX2 0x1u         /* CPUID.7.0:EBX[5] */
#define FM_CPU_FMA 0x2u          /* CPUID.1:ECX[12] */
#define FM_CPU_AVX512F 0x4u      /* CPUID.7.0:EBX[16] */
#define FM_CPU_AVX512BW 0x8u     /* CPUID.7.0:EBX[30] */
#define FM_CPU_AVX512VL 0x10u    /* CPUID.7.0:EBX[31] */
#define FM_CPU_AVX512BF16 0x20u  /* CPUID.7.1:EAX[5] */
#define FM_CPU_AMX_BF16 0x40u    /* CPUID.7.0:EDX[22] and EDX[24] (AMX-BF16, AMX-TILE) */
#define FM_CPU_NEON 0x80u        /* AArch64: always */
#define FM_CPU_INTEL 0x100u      /* vendor string GenuineIntel */
#define FM_CPU_LEAF7 0x200u      /* CPUID leaf 7 exists */
/* ... and the register state the operating system saves (XCR0, read when OSXSAVE is set). */
#define FM_OS_XSAVE 0x1000u      /* CPUID.1:ECX[27]: XGETBV is usable */
#define FM_OS_YMM 0x2000u        /* XCR0 bits 1-2: XMM, YMM */
#define FM_OS_ZMM 0x4000u        /* XCR0 bits 1-2, 5-7: XMM, YMM, opmask, ZMM */
#define FM_OS_TILE 0x8000u       /* XCR0 bits 17-18: AMX tile config and data */

/* Every FM_CPU_* and FM_OS_* bit this CPU and OS have, FUSEDMLP_ISA ignored. */
unsigned fm_cpu_raw(void);
/* The usable extensions: FM_CPU_* bits whose registers the OS saves (AVX2 and FMA need
 * FM_OS_YMM, AVX-512 needs FM_OS_ZMM, AMX needs FM_OS_TILE), FUSEDMLP_ISA ignored. */
unsigned fm_cpu_features(void);
/* fm_cpu_features() minus what FUSEDMLP_ISA rules out: what a kernel family may run. */
unsigned fm_cpu_allowed(void);
/* 1 when every bit of mask is allowed. */
int fm_cpu_allows(unsigned mask);
/* FUSEDMLP_ISA as read at the first call, or NULL when unset or empty. */
const char *fm_cpu_forced(void);

#endif
