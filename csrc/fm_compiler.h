/* fm_compiler.h -- what differs between C compilers in csrc/, in one place (the operating
 * system's differences are fm_platform.h's, the atomics fm_atomic.h's; both include this):
 *
 *   FM_FORCE_INLINE  static, always inlined
 *   FM_UNROLL(n)     unroll the next loop n times where the compiler takes the hint
 *   FM_UNROLL_FULL   unroll the next loop completely (its trip count a constant once inlined,
 *                    at most 16): a register tile's loops, so that its accumulators stay in
 *                    registers (clang needs its own pragma for that: `GCC unroll n` leaves
 *                    a tile of the small products partly rolled under clang 14)
 *   FM_EXPORT        a symbol the extension module exports
 *   FM_PAUSE()       the spin-wait hint
 *
 * Each has a GCC-or-Clang and an MSVC form, and a plain C fallback.
 */
#ifndef FM_COMPILER_H
#define FM_COMPILER_H

#if defined(_MSC_VER)
#define FM_FORCE_INLINE static __forceinline
#elif defined(__GNUC__) || defined(__clang__)
#define FM_FORCE_INLINE static inline __attribute__((always_inline))
#else
#define FM_FORCE_INLINE static inline
#endif

#define FM_PRAGMA(text) _Pragma(#text)
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 8)
#define FM_UNROLL(n) FM_PRAGMA(GCC unroll n)
#else
#define FM_UNROLL(n)                  /* MSVC: a hint only; its own heuristics decide */
#endif
#if defined(__clang__)
#define FM_UNROLL_FULL FM_PRAGMA(clang loop unroll(full))
#elif defined(__GNUC__) && __GNUC__ >= 8
#define FM_UNROLL_FULL FM_PRAGMA(GCC unroll 16)
#else
#define FM_UNROLL_FULL
#endif

#if defined(_WIN32)
#define FM_EXPORT __declspec(dllexport)
#elif defined(__GNUC__) || defined(__clang__)
#define FM_EXPORT __attribute__((visibility("default")))
#else
#define FM_EXPORT                     /* no -fvisibility=hidden: every symbol is visible */
#endif

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#include <emmintrin.h>            /* SSE2: _mm_pause */
#define FM_PAUSE() _mm_pause()
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define FM_PAUSE() __asm__ __volatile__("yield")
#elif defined(_M_ARM64)
#include <intrin.h>
#define FM_PAUSE() __yield()
#else
#define FM_PAUSE() ((void)0)
#endif

#endif /* FM_COMPILER_H */
