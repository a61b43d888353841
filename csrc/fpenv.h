/* fpenv.h -- flush subnormals inside fusedmlp, and only there.
 *
 * Every compiled entry point that does floating-point work, and every worker thread that runs
 * fusedmlp's arithmetic, brackets that work with
 *
 *     fm_fpenv saved = fm_fpenv_enter();   // save the thread's FP control word, set flushing
 *     ...                                   // arithmetic: nothing in here may return early
 *     fm_fpenv_leave(saved);               // restore the caller's control word exactly
 *
 * so the caller's NumPy keeps IEEE subnormals (gradual underflow) after any fusedmlp call,
 * including one that reported an error (errors are status codes returned after the leave).
 *
 * Why: optimiser state of weights whose gradient is always zero (blank input pixels, dead
 * units) decays geometrically into the subnormal range and stays there (0.9 x the smallest
 * subnormal rounds back to itself); on x86 every operation on a subnormal costs ~100x a normal
 * one, so a training step got 3-11x slower after a few thousand steps.
 *
 * What is set:
 *   x86 / x86-64  MXCSR FTZ (bit 15: results below the smallest normal become 0) and DAZ
 *                 (bit 6: subnormal inputs are read as 0), for SSE/AVX arithmetic.
 *   AArch64       FPCR.FZ (bit 24: both of the above for float and double).
 *   elsewhere     nothing: FM_FPENV_HARDWARE is 0 and the optimiser updates flush their
 *                 state explicitly (fm_flush_subnormals_f/_d), which removes the slowdown
 *                 where it starts.
 * The rest of the control word (rounding mode, exception masks) is left as the caller had it;
 * exception flags raised inside fusedmlp are discarded with the restore.
 *
 * The saved word is a value on the caller's stack, so enter/leave nest and are thread-safe.
 */
#ifndef FUSEDMLP_FPENV_H
#define FUSEDMLP_FPENV_H

#include <stddef.h>

#if defined(__x86_64__) || defined(_M_X64) || defined(__SSE__) || (defined(_M_IX86_FP) && _M_IX86_FP >= 1)
#include <xmmintrin.h>
#define FM_FPENV_HARDWARE 1
#define FM_FPENV_FLUSH_BITS 0x8040u            /* FTZ | DAZ */
#define FM_FPENV_STATUS_BITS 0x3fu             /* the sticky exception flags */
typedef unsigned int fm_fpenv;
static inline fm_fpenv fm_fpenv_get(void) { return _mm_getcsr(); }
static inline void fm_fpenv_set(fm_fpenv word) { _mm_setcsr(word); }

#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define FM_FPENV_HARDWARE 1
#define FM_FPENV_FLUSH_BITS (1ull << 24)         /* FZ */
#define FM_FPENV_STATUS_BITS 0ull              /* flags live in FPSR, not FPCR */
typedef unsigned long long fm_fpenv;
static inline fm_fpenv fm_fpenv_get(void) {
    unsigned long long word;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(word));
    return word;
}
static inline void fm_fpenv_set(fm_fpenv word) { __asm__ __volatile__("msr fpcr, %0" : : "r"(word)); }

#else
#define FM_FPENV_HARDWARE 0
#define FM_FPENV_FLUSH_BITS 0u
#define FM_FPENV_STATUS_BITS 0u
typedef unsigned int fm_fpenv;
static inline fm_fpenv fm_fpenv_get(void) { return 0; }
static inline void fm_fpenv_set(fm_fpenv word) { (void)word; }
#endif

/* Save the calling thread's FP control word and switch flushing on; returns the saved word. */
static inline fm_fpenv fm_fpenv_enter(void) {
    fm_fpenv saved = fm_fpenv_get();
    if ((saved & FM_FPENV_FLUSH_BITS) != FM_FPENV_FLUSH_BITS)
        fm_fpenv_set(saved | FM_FPENV_FLUSH_BITS);
    return saved;
}

/* Restore the word fm_fpenv_enter returned (on the same thread). */
static inline void fm_fpenv_leave(fm_fpenv saved) {
    if (fm_fpenv_get() != saved)
        fm_fpenv_set(saved);
}

/* Explicit flushing for platforms without a flush mode: x[i] := 0 where |x[i]| is below the
 * smallest normal number. A no-op where the hardware flushes (FM_FPENV_HARDWARE). */
static inline void fm_flush_subnormals_f(float* x, ptrdiff_t n) {
#if !FM_FPENV_HARDWARE
    for (ptrdiff_t i = 0; i < n; i++)
        if (x[i] != 0 && x[i] > -1.17549435e-38f && x[i] < 1.17549435e-38f) x[i] = 0;
#else
    (void)x; (void)n;
#endif
}

static inline void fm_flush_subnormals_d(double* x, ptrdiff_t n) {
#if !FM_FPENV_HARDWARE
    for (ptrdiff_t i = 0; i < n; i++)
        if (x[i] != 0 && x[i] > -2.2250738585072014e-308 && x[i] < 2.2250738585072014e-308) x[i] = 0;
#else
    (void)x; (void)n;
#endif
}

#endif /* FUSEDMLP_FPENV_H */
