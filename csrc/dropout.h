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

/* The two keep decisions (0 or 1) of units (i, 2k) and (i, 2k + 1): pair = i * ceil(n / 2) + k */
static inline void fm_dropout_pair(uint64_t key, uint64_t pair, uint64_t threshold,
                                   uint64_t *even, uint64_t *odd)
{
    uint64_t h = fm_mix64(key + pair * FM_DROPOUT_GOLDEN);
    *even = (uint64_t)((h & 0xFFFFFFFFULL) >= threshold);
    *odd = (uint64_t)((h >> 32) >= threshold);
}

/* The loops that apply a mask, fm_dropout_forward_<f|d> and fm_dropout_backward_<f|d> (and
 * the bit mask that keeps or zeroes a unit), are in elementwise_impl.h: one definition over
 * the element type, compiled per instruction-set variant, called through the kernel table
 * (elementwise.h). */

#endif
