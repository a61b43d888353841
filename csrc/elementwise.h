/* elementwise.h -- the elementwise loops of fusedmlp, written in C so that they vectorise.
 *
 * Everything around these loops (BLAS calls, the training step, the optimisers, the
 * Python-facing wrappers) is Cython; the loops that touch every activation live here because
 * their speed depends on the compiler turning them into SIMD code:
 *
 *   fm_exp, fm_expm1  exp() and expm1() that a compiler can vectorise (libm's cannot be)
 *   fm_activation  out = f(x)                                   (array functions)
 *   fm_bias_act    out = f(out + b) for each row                (dense forward, after the gemm)
 *   fm_act_grad    dz = da * f'(a), db = column sums of dz      (dense backward, one pass)
 *   fm_row_max, fm_exp_shifted, fm_sum, fm_exp_sum              (softmax and cross-entropy)
 *   fm_all_finite                                               (input checks)
 *   fm_sgd, fm_adam, fm_rms, fm_sum_sq                          (optimiser updates)
 *
 * Each loop is written once in FM_DEFINE_KERNELS and instantiated for float (suffix _f) and
 * double (suffix _d). On x86-64 Linux with gcc, the public loops are compiled three times
 * (AVX-512, AVX2 and the portable baseline) and the loader picks the best for the CPU
 * (target_clones): the wheel stays portable and never assumes an instruction set.
 * Floating-point contraction is off in the build (-ffp-contract=off), so every variant rounds
 * identically and results do not depend on the CPU.
 *
 * Numerics:
 * - fm_exp and fm_expm1 reduce x = k ln2 + r with |r| <= ln2/2, evaluate expm1(r) by its
 *   Taylor polynomial and scale by 2^k in two halves (fm_expm1_reduced): exp is
 *   2^k (1 + expm1(r)); expm1 is 2^k expm1(r) + (2^k - 1), with no cancellation near 0.
 *   Both are within 2.5 ulp (tests/test_vecmath.py); NaN, infinities and signed zeros behave
 *   as in libm.
 * - sigmoid is 1/(1+e) or e/(1+e) with e = exp(-|x|) <= 1: never overflows.
 * - tanh(|x|) = -u / (2 + u) with u = expm1(-2|x|), the sign restored with copysign; elu uses
 *   expm1 for x <= 0.
 * - Derivatives use the activation's output a: sigmoid' = a(1-a), tanh' = 1-a^2,
 *   relu'(z) = [a > 0] (so relu'(0) = 0), step' = 0, elu'(z) = a+1 for a <= 0,
 *   softplus'(z) = 1 - exp(-a).
 * - Bias gradients are summed in double whatever the data type.
 */
#ifndef FUSEDMLP_ELEMENTWISE_H
#define FUSEDMLP_ELEMENTWISE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)       \
    && !defined(FUSEDMLP_NO_CLONES)
#define FM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FM_CLONES
#endif

/* Activation numbers: the same as in csrc/_activations.pxd and fusedmlp.ACTIVATIONS. */
enum { FM_IDENTITY = 0, FM_RELU = 1, FM_SIGMOID = 2, FM_TANH = 3, FM_STEP = 4,
       FM_LEAKY_RELU = 5, FM_ELU = 6, FM_SOFTPLUS = 7 };

#define FM_LEAKY_SLOPE 0.01

static inline float fm_float_from_bits(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }
static inline double fm_double_from_bits(uint64_t u) { double d; memcpy(&d, &u, sizeof d); return d; }

/* x = k ln2 + r with |r| <= ln2/2 (Cody-Waite: ln2 split in two so that k * ln2_hi is exact);
 * returns expm1(r) by its Taylor polynomial r + r^2/2! + ... (degree 8 for float, truncation
 * error < 1e-9 relative; degree 14 for double, < 1e-19) and sets *s1 * *s2 = 2^k, two
 * halves so that the final products round once in the subnormal range and overflow cleanly
 * to inf. x is clamped to [lowest, highest] first (where exp is already 0 or inf in the
 * type) and NaN is replaced by 0: callers put NaN back. */
static inline float fm_expm1_reduced_f(float x, float lowest, float *s1, float *s2)
{
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693359375f;               /* 355/512: 9 significant bits */
    const float ln2_lo = -2.12194440054690583e-4f;   /* ln2 - ln2_hi */
    const float shifter = 12582912.0f;               /* 1.5 * 2^23: x + shifter - shifter rounds */
    float xc = x < lowest ? lowest : x;
    xc = xc > 89.0f ? 89.0f : xc;
    xc = x == x ? xc : 0.0f;
    float kf = (xc * log2e + shifter) - shifter;
    float r = (xc - kf * ln2_hi) - kf * ln2_lo;
    float p = 1.0f / 40320.0f;
    p = p * r + 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    int32_t k = (int32_t)kf, k1 = k / 2, k2 = k - k1;
    *s1 = fm_float_from_bits((uint32_t)(k1 + 127) << 23);
    *s2 = fm_float_from_bits((uint32_t)(k2 + 127) << 23);
    return r + r * (r * p);
}

static inline double fm_expm1_reduced_d(double x, double lowest, double *s1, double *s2)
{
    const double log2e = 1.4426950408889634;
    const double ln2_hi = 0.6931471803691238;        /* ln2 to 32 significant bits */
    const double ln2_lo = 1.9082149292705877e-10;    /* ln2 - ln2_hi */
    const double shifter = 6755399441055744.0;       /* 1.5 * 2^52 */
    double xc = x < lowest ? lowest : x;
    xc = xc > 710.0 ? 710.0 : xc;
    xc = x == x ? xc : 0.0;
    double kf = (xc * log2e + shifter) - shifter;
    double r = (xc - kf * ln2_hi) - kf * ln2_lo;
    double p = 1.0 / 87178291200.0;                  /* 1/14! */
    p = p * r + 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    int32_t k = (int32_t)kf, k1 = k / 2, k2 = k - k1;
    *s1 = fm_double_from_bits((uint64_t)(int64_t)(k1 + 1023) << 52);
    *s2 = fm_double_from_bits((uint64_t)(int64_t)(k2 + 1023) << 52);
    return r + r * (r * p);
}

/* exp(x) = 2^k (1 + expm1(r)). NaN propagates; exp(-inf) = 0, exp(inf) = inf. */
static inline float fm_exp_f(float x)
{
    float s1, s2, q = fm_expm1_reduced_f(x, -104.0f, &s1, &s2);
    float y = (1.0f + q) * s1 * s2;
    return x == x ? y : x;
}

static inline double fm_exp_d(double x)
{
    double s1, s2, q = fm_expm1_reduced_d(x, -746.0, &s1, &s2);
    double y = (1.0 + q) * s1 * s2;
    return x == x ? y : x;
}

/* expm1(x) = 2^k expm1(r) + (2^k - 1): no cancellation near 0, and 2^k - 1 is exact for the k
 * that matter (below x = -30 resp. -60 the result is -1 in the type). NaN propagates and
 * expm1(+-0) = +-0. */
static inline float fm_expm1_f(float x)
{
    float s1, s2, q = fm_expm1_reduced_f(x, -30.0f, &s1, &s2);
    float y = s1 * (s2 * q) + (s1 * s2 - 1.0f);
    return x == x && x != 0 ? y : x;
}

static inline double fm_expm1_d(double x)
{
    double s1, s2, q = fm_expm1_reduced_d(x, -60.0, &s1, &s2);
    double y = s1 * (s2 * q) + (s1 * s2 - 1.0);
    return x == x && x != 0 ? y : x;
}

/* return sum over j < n of TERM (an expression in j) in double: eight partial sums, which
 * vectorise, added in a fixed order, so the result does not depend on the CPU */
#define FM_LANE_SUM(TERM, n)                                                                    \
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0}, s = 0;                                           \
    ptrdiff_t j0, j, l;                                                                         \
    for (j0 = 0; j0 + 8 <= (n); j0 += 8)                                                        \
        for (l = 0; l < 8; l++) { j = j0 + l; lane[l] += TERM; }                                \
    for (j = j0; j < (n); j++) s += TERM;                                                       \
    for (l = 0; l < 8; l++) s += lane[l];                                                       \
    return s

/* one row of fm_act_grad over type T: g = G (an expression in d = da[j] and y = a[j]),
 * dz = g, acc += g */
#define FM_GRAD_LOOP(T, G)                                                                      \
    for (j = 0; j < n; j++) {                                                                   \
        T d = da_row[j], y = a_row[j], g = (G);                                                 \
        dz_row[j] = g;                                                                          \
        acc[j] += g;                                                                            \
    }

#define FM_DEFINE_KERNELS(T, S)                                                                 \
                                                                                                \
static inline T fm_sigmoid_##S(T x)                                                             \
{                                                                                               \
    T e = fm_exp_##S(-fabs##S##_(x));                                                           \
    T r = (T)1 / ((T)1 + e);                                                                    \
    return x >= 0 ? r : e * r;              /* NaN: e is NaN, so is e * r */                    \
}                                                                                               \
                                                                                                \
static inline T fm_tanh_##S(T x)                                                                \
{                                                                                               \
    /* tanh|x| = -u / (2 + u) with u = expm1(-2|x|) in (-1, 0]: no cancellation anywhere */     \
    T u = fm_expm1_##S(-2 * fabs##S##_(x));                                                     \
    return copysign##S##_(fabs##S##_(u) / ((T)2 + u), x);   /* tanh(+-0) = +-0 */               \
}                                                                                               \
                                                                                                \
/* out[i] = f(x[i]); out may be x */                                                            \
FM_CLONES static void fm_activation_##S(const T *x, T *out, ptrdiff_t n, int kind)              \
{                                                                                               \
    ptrdiff_t i;                                                                                \
    switch (kind) {                                                                             \
    case FM_IDENTITY:                                                                           \
        if (out != x) memmove(out, x, (size_t)n * sizeof(T));                                   \
        break;                                                                                  \
    case FM_RELU:                /* NaN compares false and stays NaN (np.maximum) */            \
        for (i = 0; i < n; i++) { T z = x[i]; out[i] = z <= 0 ? (T)0 : z; }                     \
        break;                                                                                  \
    case FM_LEAKY_RELU:                                                                         \
        for (i = 0; i < n; i++) { T z = x[i]; out[i] = z > 0 ? z : (T)FM_LEAKY_SLOPE * z; }     \
        break;                                                                                  \
    case FM_SIGMOID:                                                                            \
        for (i = 0; i < n; i++) out[i] = fm_sigmoid_##S(x[i]);                                  \
        break;                                                                                  \
    case FM_TANH:                                                                               \
        for (i = 0; i < n; i++) out[i] = fm_tanh_##S(x[i]);                                     \
        break;                                                                                  \
    case FM_STEP:                                                                               \
        for (i = 0; i < n; i++) { T z = x[i]; out[i] = z > 0 ? (T)1 : (z <= 0 ? (T)0 : z); }    \
        break;                                                                                  \
    case FM_ELU:                 /* expm1 keeps accuracy near 0 */                              \
        for (i = 0; i < n; i++) { T z = x[i]; out[i] = z > 0 ? z : fm_expm1_##S(z); }           \
        break;                                                                                  \
    case FM_SOFTPLUS:            /* max(z, 0) + log1p(exp(-|z|)): no overflow */                \
        for (i = 0; i < n; i++) {                                                               \
            T z = x[i];                                                                         \
            out[i] = (z > 0 ? z : (T)0) + log1p##S##_(fm_exp_##S(-fabs##S##_(z)));              \
        }                                                                                       \
        break;                                                                                  \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* out[i, j] = f(out[i, j] + b[j]) over an m x n row-major block */                             \
FM_CLONES static void fm_bias_act_##S(T *out, const T *b, ptrdiff_t m, ptrdiff_t n, int kind)   \
{                                                                                               \
    ptrdiff_t i, j;                                                                             \
    for (i = 0; i < m; i++) {                                                                   \
        T *row = out + i * n;                                                                   \
        if (kind == FM_RELU) {                                                                  \
            for (j = 0; j < n; j++) { T z = row[j] + b[j]; row[j] = z <= 0 ? (T)0 : z; }        \
        } else {                                                                                \
            for (j = 0; j < n; j++) row[j] += b[j];                                             \
            if (kind != FM_IDENTITY) fm_activation_##S(row, row, n, kind);                      \
        }                                                                                       \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* dz = da * f'(a) and db = column sums of dz (in double, via acc[n]); dz may be da;            \
 * db may be NULL */                                                                            \
FM_CLONES static void fm_act_grad_##S(const T *da, const T *a, T *dz, double *acc, T *db,       \
                                      ptrdiff_t m, ptrdiff_t n, int kind)                       \
{                                                                                               \
    ptrdiff_t i, j;                                                                             \
    for (j = 0; j < n; j++) acc[j] = 0;                                                         \
    for (i = 0; i < m; i++) {                                                                   \
        const T *da_row = da + i * n, *a_row = a + i * n;                                       \
        T *dz_row = dz + i * n;                                                                 \
        switch (kind) {                   /* G: the gradient from d = dA and y = A */           \
        case FM_IDENTITY:   FM_GRAD_LOOP(T, d); break;                                          \
        case FM_RELU:       FM_GRAD_LOOP(T, y > 0 ? d : (T)0); break;   /* relu'(0) = 0 */      \
        case FM_LEAKY_RELU: FM_GRAD_LOOP(T, d * (y > 0 ? (T)1 : (T)FM_LEAKY_SLOPE)); break;     \
        case FM_SIGMOID:    FM_GRAD_LOOP(T, d * (y * ((T)1 - y))); break;                       \
        case FM_TANH:       FM_GRAD_LOOP(T, d * ((T)1 - y * y)); break;                         \
        case FM_STEP:       for (j = 0; j < n; j++) dz_row[j] = 0; break;                       \
        /* elu: a = e^z - 1 for z <= 0, so f'(z) = e^z = a + 1 */                               \
        case FM_ELU:        FM_GRAD_LOOP(T, d * (y > 0 ? (T)1 : y + (T)1)); break;              \
        /* softplus: f'(z) = sigmoid(z) = 1 - e^-a */                                           \
        case FM_SOFTPLUS:   FM_GRAD_LOOP(T, d * -fm_expm1_##S(-y)); break;                      \
        }                                                                                       \
    }                                                                                           \
    if (db != NULL)                                                                             \
        for (j = 0; j < n; j++) db[j] = (T)acc[j];                                              \
}                                                                                               \
                                                                                                \
/* max of z[0:n] (-inf for n = 0). NaN never wins a comparison; it reaches z - max later        \
 * and makes the whole row NaN there. Eight running maxima let the loop vectorise. */           \
FM_CLONES static T fm_row_max_##S(const T *z, ptrdiff_t n)                                      \
{                                                                                               \
    T lane[8];                                                                                  \
    ptrdiff_t j, l;                                                                             \
    for (l = 0; l < 8; l++) lane[l] = -(T)INFINITY;                                             \
    for (j = 0; j + 8 <= n; j += 8)                                                             \
        for (l = 0; l < 8; l++) lane[l] = z[j + l] > lane[l] ? z[j + l] : lane[l];              \
    for (; j < n; j++) lane[0] = z[j] > lane[0] ? z[j] : lane[0];                               \
    for (l = 1; l < 8; l++) lane[0] = lane[l] > lane[0] ? lane[l] : lane[0];                    \
    return lane[0];                                                                             \
}                                                                                               \
                                                                                                \
/* out[i, j] = exp(z[i, j] - max_j z[i, j]) for an m x n row-major block (out may be z);        \
 * the row maxima go to maxima[0:m] unless it is NULL (cross-entropy needs them again).         \
 * Rows are processed in groups of about 1024 entries: the shifts of a group first, then        \
 * one flat loop of exponentials over the group, which vectorises however short the rows        \
 * (10 classes) and stays in cache however long. */                                             \
FM_CLONES static void fm_exp_shifted_##S(const T *z, T *out, double *maxima, ptrdiff_t m,       \
                                         ptrdiff_t n)                                           \
{                                                                                               \
    ptrdiff_t group = n >= 1024 ? 1 : 1024 / (n > 0 ? n : 1), i0, i, j;                         \
    for (i0 = 0; i0 < m; i0 += group) {                                                         \
        ptrdiff_t rows = m - i0 < group ? m - i0 : group;                                       \
        T *block = out + i0 * n;                                                                \
        for (i = i0; i < i0 + rows; i++) {                                                      \
            T mx = fm_row_max_##S(z + i * n, n);                                                \
            if (maxima != NULL) maxima[i] = mx;                                                 \
            for (j = 0; j < n; j++) out[i * n + j] = z[i * n + j] - mx;                         \
        }                                                                                       \
        for (j = 0; j < rows * n; j++) block[j] = fm_exp_##S(block[j]);                         \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* sum of x[0:n] in double (see FM_LANE_SUM) */                                                 \
static inline double fm_sum_##S(const T *x, ptrdiff_t n)                                        \
{                                                                                               \
    FM_LANE_SUM((double)x[j], n);                                                               \
}                                                                                               \
                                                                                                \
/* sum_j exp(z[j] - mx) in double, without storing the terms (log-softmax) */                   \
FM_CLONES static double fm_exp_sum_##S(const T *z, T mx, ptrdiff_t n)                           \
{                                                                                               \
    T scratch[256];                                                                             \
    double s = 0;                                                                               \
    ptrdiff_t start, j;                                                                         \
    for (start = 0; start < n; start += 256) {                                                  \
        ptrdiff_t len = n - start < 256 ? n - start : 256;                                      \
        for (j = 0; j < len; j++) scratch[j] = fm_exp_##S(z[start + j] - mx);                   \
        s += fm_sum_##S(scratch, len);                                                          \
    }                                                                                           \
    return s;                                                                                   \
}                                                                                               \
                                                                                                \
/* Optimiser updates over p[0:n] with gradient g, as in csrc/_optim.pxd (PyTorch's formulas):   \
 * g' = g * scale + wd * p, then                                                                \
 *   sgd:      v = mom * v + g'; p -= lr * (nesterov ? g' + mom * v : v)   (mom = 0: p -= lr g') \
 *   adam:     m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;                                    \
 *             p -= step_size * m / (sqrt(v) / root_bc2 + eps)  (one division: see below)       \
 *   rmsprop:  v = alpha v + (1-alpha) g'^2;  p -= lr g' / (sqrt(v) + eps)                      \
 *   adagrad:  v = v + g'^2;                  p -= lr g' / (sqrt(v) + eps)                      \
 * (rmsprop and adagrad share one loop: adagrad is decay = 1, gain = 1.) */                     \
FM_CLONES static void fm_sgd_##S(T *p, const T *g, T *v, ptrdiff_t n, T lr, T wd, T scale,      \
                                 T mom, int nesterov)                                           \
{                                                                                               \
    ptrdiff_t i;                                                                                \
    if (mom == 0) {                                                                             \
        for (i = 0; i < n; i++) p[i] -= lr * (g[i] * scale + wd * p[i]);                        \
    } else if (nesterov) {                                                                      \
        for (i = 0; i < n; i++) {                                                               \
            T gi = g[i] * scale + wd * p[i], vi = mom * v[i] + gi;                              \
            v[i] = vi;                                                                          \
            p[i] -= lr * (gi + mom * vi);                                                       \
        }                                                                                       \
    } else {                                                                                    \
        for (i = 0; i < n; i++) {                                                               \
            T gi = g[i] * scale + wd * p[i], vi = mom * v[i] + gi;                              \
            v[i] = vi;                                                                          \
            p[i] -= lr * vi;                                                                    \
        }                                                                                       \
    }                                                                                           \
}                                                                                               \
                                                                                                \
FM_CLONES static void fm_adam_##S(T *p, const T *g, T *m, T *v, ptrdiff_t n, T step_size,       \
                                  T root_bc2, T b1, T b2, T eps, T wd, T scale)                 \
{                                                                                               \
    /* PyTorch's step_size * m / (sqrt(v) / root_bc2 + eps), with root_bc2 moved out of the     \
     * loop: one division and one square root per parameter instead of two divisions. */        \
    T eps_scaled = eps * root_bc2;                                                              \
    ptrdiff_t i;                                                                                \
    step_size *= root_bc2;                                                                      \
    for (i = 0; i < n; i++) {                                                                   \
        T gi = g[i] * scale + wd * p[i];                                                        \
        T mi = b1 * m[i] + ((T)1 - b1) * gi;                                                    \
        T vi = b2 * v[i] + ((T)1 - b2) * gi * gi;                                               \
        m[i] = mi;                                                                              \
        v[i] = vi;                                                                              \
        p[i] -= step_size * mi / (sqrt##S##_(vi) + eps_scaled);                                 \
    }                                                                                           \
}                                                                                               \
                                                                                                \
FM_CLONES static void fm_rms_##S(T *p, const T *g, T *v, ptrdiff_t n, T lr, T decay, T gain,    \
                                 T eps, T wd, T scale)                                          \
{                                                                                               \
    ptrdiff_t i;                                                                                \
    for (i = 0; i < n; i++) {                                                                   \
        T gi = g[i] * scale + wd * p[i];                                                        \
        T vi = decay * v[i] + gain * gi * gi;                                                   \
        v[i] = vi;                                                                              \
        p[i] -= lr * gi / (sqrt##S##_(vi) + eps);                                               \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* sum of x^2 in double (gradient norms) */                                                     \
FM_CLONES static double fm_sum_sq_##S(const T *x, ptrdiff_t n)                                  \
{                                                                                               \
    FM_LANE_SUM((double)x[j] * x[j], n);                                                        \
}                                                                                               \
                                                                                                \
/* 1 when x[0:n] holds no NaN and no inf: x - x is 0 exactly for finite x */                    \
FM_CLONES static int fm_all_finite_##S(const T *x, ptrdiff_t n)                                 \
{                                                                                               \
    ptrdiff_t i;                                                                                \
    int bad = 0;                                                                                \
    for (i = 0; i < n; i++) bad |= (x[i] - x[i]) != 0;                                          \
    return !bad;                                                                                \
}

/* libm names per type, for the macro above */
#define fabsf_(x) fabsf(x)
#define copysignf_(x, y) copysignf(x, y)
#define copysignd_(x, y) copysign(x, y)
#define fabsd_(x) fabs(x)
#define log1pf_(x) log1pf(x)
#define log1pd_(x) log1p(x)
#define sqrtf_(x) sqrtf(x)
#define sqrtd_(x) sqrt(x)

FM_DEFINE_KERNELS(float, f)
FM_DEFINE_KERNELS(double, d)

#endif
