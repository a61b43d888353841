/* The atomic operations csrc/ uses, behind one portable header: GCC and Clang builtins (they
 * act on plain objects, which is how the pool's and kernels' structs declare their fields),
 * Interlocked* under MSVC (each a full barrier: at least the order asked for), C11
 * <stdatomic.h> elsewhere (on the plain object seen as _Atomic, which has the same size and
 * representation on every C11 compiler with lock-free ints, longs, 64-bit ints and pointers).
 * Each operation is typed (int, 64-bit unsigned, pointer) and takes its memory order,
 * FM_RELAXED, FM_ACQUIRE, FM_RELEASE, FM_ACQ_REL or FM_SEQ_CST. fm_ctz64 is the count of
 * trailing zero bits (x != 0). Everything else that differs between compilers is
 * fm_compiler.h's, between operating systems fm_platform.h's. */
#ifndef FM_ATOMIC_H
#define FM_ATOMIC_H

#include "fm_compiler.h"              /* FM_FORCE_INLINE */

/* FM_ATOMIC_FORCE_INTERLOCKED (with mingw) or FM_ATOMIC_FORCE_C11 picks a path for the
 * portability check (tools/portability_check.sh). */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(FM_ATOMIC_FORCE_INTERLOCKED) && \
    !defined(FM_ATOMIC_FORCE_C11)
#define FM_ATOMIC_GNU 1
#elif (defined(_MSC_VER) || defined(FM_ATOMIC_FORCE_INTERLOCKED)) && !defined(FM_ATOMIC_FORCE_C11)
#define FM_ATOMIC_INTERLOCKED 1
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN               /* the kernel32 API only */
#endif
#include <windows.h>
#include <intrin.h>
#else
#define FM_ATOMIC_C11 1
#include <stdatomic.h>
#endif

typedef unsigned long long fm_u64;

#if defined(FM_ATOMIC_GNU)
#define FM_RELAXED __ATOMIC_RELAXED
#define FM_ACQUIRE __ATOMIC_ACQUIRE
#define FM_RELEASE __ATOMIC_RELEASE
#define FM_ACQ_REL __ATOMIC_ACQ_REL
#define FM_SEQ_CST __ATOMIC_SEQ_CST
#define FM_ATOMIC_OPS(name, type)                                                            \
    FM_FORCE_INLINE type fm_load_##name(type *p, int o) { return __atomic_load_n(p, o); }    \
    FM_FORCE_INLINE void fm_store_##name(type *p, type v, int o) { __atomic_store_n(p, v, o); }
#define FM_ATOMIC_ARITH(name, type)                                                          \
    FM_FORCE_INLINE type fm_add_##name(type *p, type v, int o) { return __atomic_add_fetch(p, v, o); } \
    FM_FORCE_INLINE int fm_cas_##name(type *p, type *expected, type desired, int o)          \
    {                                                                                        \
        return __atomic_compare_exchange_n(p, expected, desired, 0, o,                       \
                                           o == FM_ACQ_REL ? FM_ACQUIRE : o == FM_RELEASE ? FM_RELAXED : o); \
    }
FM_FORCE_INLINE int fm_ctz64(fm_u64 x) { return __builtin_ctzll(x); }

#elif defined(FM_ATOMIC_INTERLOCKED)
#define FM_RELAXED 0
#define FM_ACQUIRE 2
#define FM_RELEASE 3
#define FM_ACQ_REL 4
#define FM_SEQ_CST 5
/* 32-bit (int, long: long is 32 bits on Windows) and 64-bit words, each op a full barrier. */
#define FM_IL_OPS(name, type, il, suffix)                                                    \
    FM_FORCE_INLINE type fm_load_##name(type *p, int o)                                      \
    { (void)o; return (type)InterlockedCompareExchange##suffix((il volatile *)p, 0, 0); }     \
    FM_FORCE_INLINE void fm_store_##name(type *p, type v, int o)                              \
    { (void)o; (void)InterlockedExchange##suffix((il volatile *)p, (il)v); }                  \
    FM_FORCE_INLINE type fm_add_##name(type *p, type v, int o)                                \
    { (void)o; return (type)(InterlockedExchangeAdd##suffix((il volatile *)p, (il)v) + (il)v); } \
    FM_FORCE_INLINE int fm_cas_##name(type *p, type *expected, type desired, int o)           \
    {                                                                                         \
        il seen = InterlockedCompareExchange##suffix((il volatile *)p, (il)desired, (il)*expected); \
        (void)o;                                                                              \
        if (seen == (il)*expected) return 1;                                                  \
        *expected = (type)seen;                                                               \
        return 0;                                                                             \
    }
typedef char fm_int_is_32_bits[sizeof(int) == sizeof(LONG) ? 1 : -1];
FM_IL_OPS(int, int, LONG, )
FM_IL_OPS(u64, fm_u64, LONG64, 64)
FM_FORCE_INLINE void *fm_load_ptr(void **p, int o)
{ (void)o; return InterlockedCompareExchangePointer((PVOID volatile *)p, NULL, NULL); }
FM_FORCE_INLINE void fm_store_ptr(void **p, void *v, int o)
{ (void)o; (void)InterlockedExchangePointer((PVOID volatile *)p, v); }
FM_FORCE_INLINE int fm_ctz64(fm_u64 x)
{
    unsigned long index;
    _BitScanForward64(&index, x);
    return (int)index;
}

#else /* C11 */
#define FM_RELAXED memory_order_relaxed
#define FM_ACQUIRE memory_order_acquire
#define FM_RELEASE memory_order_release
#define FM_ACQ_REL memory_order_acq_rel
#define FM_SEQ_CST memory_order_seq_cst
#define FM_ATOMIC_OPS(name, type)                                                            \
    FM_FORCE_INLINE type fm_load_##name(type *p, int o)                                      \
    { return atomic_load_explicit((_Atomic(type) *)p, (memory_order)o); }                     \
    FM_FORCE_INLINE void fm_store_##name(type *p, type v, int o)                              \
    { atomic_store_explicit((_Atomic(type) *)p, v, (memory_order)o); }
#define FM_ATOMIC_ARITH(name, type)                                                          \
    FM_FORCE_INLINE type fm_add_##name(type *p, type v, int o)                                \
    { return atomic_fetch_add_explicit((_Atomic(type) *)p, v, (memory_order)o) + v; }         \
    FM_FORCE_INLINE int fm_cas_##name(type *p, type *expected, type desired, int o)           \
    {                                                                                         \
        return atomic_compare_exchange_strong_explicit(                                       \
            (_Atomic(type) *)p, expected, desired, (memory_order)o,                           \
            o == FM_ACQ_REL ? FM_ACQUIRE : o == FM_RELEASE ? FM_RELAXED : (memory_order)o);   \
    }
FM_FORCE_INLINE int fm_ctz64(fm_u64 x)
{
    int n = 0;
    while (!(x & 1ULL)) { x >>= 1; n++; }
    return n;
}
#endif

#if !defined(FM_ATOMIC_INTERLOCKED)
FM_ATOMIC_OPS(int, int)
FM_ATOMIC_ARITH(int, int)
FM_ATOMIC_OPS(u64, fm_u64)
FM_ATOMIC_ARITH(u64, fm_u64)
FM_ATOMIC_OPS(ptr, void *)
#endif

#endif /* FM_ATOMIC_H */
