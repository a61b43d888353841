/* l1.h -- the loops of the L1 penalty on the weights (csrc/_optim.pxd calls them).
 *
 *   fm_l1_subgradient  g += l1 * sign(p)   (0 where p is 0), one pass over the weights
 *   fm_abs_sum         sum |p| in double, in 8 lanes added in a fixed order (vectorises,
 *                      and the result does not depend on anything but p)
 * No branches: the signs of the weights are a coin flip for the branch predictor (a branchy
 * loop was 10x slower on 200k weights). */
#ifndef FUSEDMLP_L1_H
#define FUSEDMLP_L1_H

#include <math.h>
#include <stddef.h>

#define FM_L1_LOOPS(T, SUFFIX)                                                             \
static inline void fm_l1_subgradient_##SUFFIX(T *g, const T *p, T l1, ptrdiff_t n)        \
{                                                                                          \
    ptrdiff_t i;                                                                           \
    for (i = 0; i < n; i++)                                                                \
        g[i] += l1 * (T)((p[i] > 0) - (p[i] < 0));                                         \
}                                                                                          \
static inline double fm_abs_sum_##SUFFIX(const T *p, ptrdiff_t n)                          \
{                                                                                          \
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                             \
    ptrdiff_t i, k;                                                                        \
    for (i = 0; i + 8 <= n; i += 8)                                                        \
        for (k = 0; k < 8; k++)                                                            \
            lane[k] += fabs((double)p[i + k]);                                             \
    for (k = 0; k < n % 8; k++)                                                            \
        lane[k] += fabs((double)p[i + k]);                                                 \
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) +                                   \
           ((lane[4] + lane[5]) + (lane[6] + lane[7]));                                    \
}

FM_L1_LOOPS(float, f)
FM_L1_LOOPS(double, d)
#undef FM_L1_LOOPS

#endif
