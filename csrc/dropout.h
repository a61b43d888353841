/* dropout.h -- inverted dropout with a counter-based mask (csrc/_dropout.pxd wraps it).
 *
 * Whether unit (row i, column j) of hidden layer l is kept in a training step is a pure
 * function of (seed, step, l, i, j): nothing is stored between forward and backward, the
 * backward pass draws the same mask again. So the mask does not depend on how the rows are
 * split across threads (i is the row's position in the batch, wherever it is computed), nor
 * on the dtype, and a model reloaded with its (seed, step) continues the same stream.
 *
 *   key   = mix(mix(mix(seed) + step) + l)                      one per layer and step
 *   h     = mix(key + (i * ceil(n / 2) + j / 2) * GOLDEN)        64 bits for 2 units of row i
 *   u     = the low 32 bits of h for even j, the high 32 for odd j
 *   keep  = u >= threshold,  threshold = round(p * 2^32)        P(keep) = 1 - p (to 2^-32)
 *
 * mix is the 64-bit finaliser of SplitMix64 (Steele, Lea, Flood 2014; the variant of Stafford's
 * "Mix13" constants); mix(key + k * GOLDEN) for k = 0, 1, ... is SplitMix64's sequence started
 * at key, whose outputs pass BigCrush. Kept units are scaled by 1/(1-p) in forward, so the
 * expected activation is unchanged and inference needs no dropout at all.
 *
 * Backward gets d = dL/d(dropped a) and the stored dropped activations; it makes
 * d := mask * d / (1-p) (the chain rule through the dropout) and restores the kept
 * activations a := a * (1-p) in place, so that the activation's derivative, computed from its
 * output (fm_act_grad), sees the activation before dropout (dropped units have d = 0, their
 * activation stays 0: any finite derivative times 0 is 0).
 */
#ifndef FUSEDMLP_DROPOUT_H
#define FUSEDMLP_DROPOUT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FM_DROPOUT_GOLDEN 0x9E3779B97F4A7C15ULL

static inline uint64_t fm_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* the key of layer l's mask in step `step` of a model seeded with `seed` */
static inline uint64_t fm_dropout_key(uint64_t seed, uint64_t step, int layer)
{
    return fm_mix64(fm_mix64(fm_mix64(seed) + step) + (uint64_t)layer);
}

/* keep iff u >= threshold: the threshold of rate p in [0, 1) (at most 2^32: keep none) */
static inline uint64_t fm_dropout_threshold(double p)
{
    return (uint64_t)(p * 4294967296.0 + 0.5);             /* p * 2^32, rounded */
}

/* v if keep (0 or 1), else +0: by masking v's bits. A ternary here compiles to a branch,
 * which mispredicts half the time (5x slower); a mask never does. */
static inline float fm_keep_f(float v, uint64_t keep)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    bits &= (uint32_t)0 - (uint32_t)keep;
    memcpy(&v, &bits, sizeof bits);
    return v;
}

static inline double fm_keep_d(double v, uint64_t keep)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    bits &= (uint64_t)0 - keep;
    memcpy(&v, &bits, sizeof bits);
    return v;
}

/* The two keep decisions (0 or 1) of units (i, 2k) and (i, 2k + 1): pair = i * ceil(n / 2) + k */
#define FM_DROPOUT_PAIR(key, pair, threshold, even, odd)                                   \
    do {                                                                                   \
        uint64_t h_ = fm_mix64((key) + (pair) * FM_DROPOUT_GOLDEN);                        \
        (even) = (uint64_t)((h_ & 0xFFFFFFFFULL) >= (threshold));                          \
        (odd) = (uint64_t)((h_ >> 32) >= (threshold));                                     \
    } while (0)

/* Rows [row0, row0 + rows) of an n-column block a (a points at row row0):
 *   forward:  a := keep ? a * scale : 0                        (scale = 1/(1-p))
 *   backward: d := keep ? d * scale : 0;  a := keep ? a * keep_fraction : 0   (1-p) */
#define FM_DROPOUT_LOOPS(T, SUFFIX)                                                        \
static inline void fm_dropout_forward_##SUFFIX(T *a, ptrdiff_t row0, ptrdiff_t rows,       \
                                               ptrdiff_t n, uint64_t key,                  \
                                               uint64_t threshold, T scale)                \
{                                                                                          \
    ptrdiff_t i, j, half = (n + 1) / 2;                                                    \
    uint64_t even, odd;                                                                    \
    for (i = 0; i < rows; i++) {                                                           \
        uint64_t pair = (uint64_t)(row0 + i) * (uint64_t)half;                             \
        T *row = a + i * n;                                                                \
        for (j = 0; j + 1 < n; j += 2, pair++) {                                           \
            FM_DROPOUT_PAIR(key, pair, threshold, even, odd);                              \
            row[j] = fm_keep_##SUFFIX(row[j] * scale, even);                               \
            row[j + 1] = fm_keep_##SUFFIX(row[j + 1] * scale, odd);                        \
        }                                                                                  \
        if (j < n) {                                                                       \
            FM_DROPOUT_PAIR(key, pair, threshold, even, odd);                              \
            row[j] = fm_keep_##SUFFIX(row[j] * scale, even);                               \
        }                                                                                  \
    }                                                                                      \
}                                                                                          \
static inline void fm_dropout_backward_##SUFFIX(T *d, T *a, ptrdiff_t row0, ptrdiff_t rows, \
                                                ptrdiff_t n, uint64_t key,                 \
                                                uint64_t threshold, T scale,               \
                                                T keep_fraction)                           \
{                                                                                          \
    ptrdiff_t i, j, half = (n + 1) / 2;                                                    \
    uint64_t even, odd;                                                                    \
    for (i = 0; i < rows; i++) {                                                           \
        uint64_t pair = (uint64_t)(row0 + i) * (uint64_t)half;                             \
        T *drow = d + i * n, *arow = a + i * n;                                            \
        for (j = 0; j + 1 < n; j += 2, pair++) {                                           \
            FM_DROPOUT_PAIR(key, pair, threshold, even, odd);                              \
            drow[j] = fm_keep_##SUFFIX(drow[j] * scale, even);                             \
            arow[j] = fm_keep_##SUFFIX(arow[j] * keep_fraction, even);                     \
            drow[j + 1] = fm_keep_##SUFFIX(drow[j + 1] * scale, odd);                      \
            arow[j + 1] = fm_keep_##SUFFIX(arow[j + 1] * keep_fraction, odd);              \
        }                                                                                  \
        if (j < n) {                                                                       \
            FM_DROPOUT_PAIR(key, pair, threshold, even, odd);                              \
            drow[j] = fm_keep_##SUFFIX(drow[j] * scale, even);                             \
            arow[j] = fm_keep_##SUFFIX(arow[j] * keep_fraction, even);                     \
        }                                                                                  \
    }                                                                                      \
}

FM_DROPOUT_LOOPS(float, f)
FM_DROPOUT_LOOPS(double, d)
#undef FM_DROPOUT_LOOPS

#endif
