/* elementwise_impl.h -- every elementwise loop, written once over the element type T.
 *
 * Not a header to include on its own: elementwise_kernels.c includes it twice, for float and
 * for double, after defining
 *   T                    the element type
 *   FM_FN(name)          the name of this type's and this variant's function `name`
 *                        (fm_<name>_<f|d>_<variant>)
 *   FM_FIELD(name)       its field in fm_kernel_table (<name>_<f|d>)
 *   FM_FABS, FM_COPYSIGN, FM_LOG1P, FM_SQRT   the libm functions of type T
 *   FM_EXP, FM_EXPM1     fm_exp_f/fm_exp_d and fm_expm1_f/fm_expm1_d (elementwise.h)
 * The loops are static; the one external function, FM_FN(fill), puts them into a table.
 */
#include "dropout.h"            /* the dropout mask's hash (its loops are below) */
#include "fm_compiler.h"        /* FM_FORCE_INLINE */

/* return sum over j < n of TERM (an expression in j) in double: eight partial sums, which
 * vectorise, added in a fixed order, so the result does not depend on the CPU */
#ifndef FM_LANE_SUM
#define FM_LANE_SUM(TERM, n)                                                                    \
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0}, s = 0;                                           \
    ptrdiff_t j0, j, l;                                                                         \
    for (j0 = 0; j0 + 8 <= (n); j0 += 8)                                                        \
        for (l = 0; l < 8; l++) { j = j0 + l; lane[l] += TERM; }                                \
    for (j = j0; j < (n); j++) s += TERM;                                                       \
    for (l = 0; l < 8; l++) s += lane[l];                                                       \
    return s

#endif

#ifndef FM_GRAD_LOOP
/* one row of fm_act_grad over type T: dz = G (an expression in d = da[j] and y = a[j]), and
 * with `sum` acc[j] += dz[j] in the same loop (add_row's sum, term for term) */
#define FM_GRAD_LOOP(T, G)                                                                      \
    for (j = 0; j < n; j++) {                                                                   \
        T d = da_row[j], y = a_row[j], z;                                                       \
        (void)d; (void)y;                   /* G need not use them (identity, step) */          \
        z = (G);                                                                                \
        dz_row[j] = z;                                                                          \
        if (sum) acc[j] += (double)z;                                                           \
    }
#endif

static inline T FM_FN(sigmoid)(T x)
{
    T e = FM_EXP(-FM_FABS(x));
    T r = (T)1 / ((T)1 + e);
    return x >= 0 ? r : e * r;              /* NaN: e is NaN, so is e * r */
}

static inline T FM_FN(tanh)(T x)
{
    /* tanh|x| = -u / (2 + u) with u = expm1(-2|x|) in (-1, 0]: no cancellation anywhere */
    T u = FM_EXPM1(-2 * FM_FABS(x));
    return FM_COPYSIGN(FM_FABS(u) / ((T)2 + u), x);   /* tanh(+-0) = +-0 */
}

/* out[i] = f(x[i]); out may be x */
static void FM_FN(activation)(const T *x, T *out, ptrdiff_t n, int kind)
{
    ptrdiff_t i;
    switch (kind) {
    case FM_IDENTITY:
        if (out != x) memmove(out, x, (size_t)n * sizeof(T));
        break;
    case FM_RELU:                /* NaN compares false and stays NaN (np.maximum) */
        for (i = 0; i < n; i++) { T z = x[i]; out[i] = z <= 0 ? (T)0 : z; }
        break;
    case FM_LEAKY_RELU:
        for (i = 0; i < n; i++) { T z = x[i]; out[i] = z > 0 ? z : (T)FM_LEAKY_SLOPE * z; }
        break;
    case FM_SIGMOID:
        for (i = 0; i < n; i++) out[i] = FM_FN(sigmoid)(x[i]);
        break;
    case FM_TANH:
        for (i = 0; i < n; i++) out[i] = FM_FN(tanh)(x[i]);
        break;
    case FM_STEP:
        for (i = 0; i < n; i++) { T z = x[i]; out[i] = z > 0 ? (T)1 : (z <= 0 ? (T)0 : z); }
        break;
    case FM_ELU:                 /* expm1 keeps accuracy near 0 */
        for (i = 0; i < n; i++) { T z = x[i]; out[i] = z > 0 ? z : FM_EXPM1(z); }
        break;
    case FM_SOFTPLUS:            /* max(z, 0) + log1p(exp(-|z|)): no overflow */
        for (i = 0; i < n; i++) {
            T z = x[i];
            out[i] = (z > 0 ? z : (T)0) + FM_LOG1P(FM_EXP(-FM_FABS(z)));
        }
        break;
    }
}

/* out[i, j] = f(out[i, j] + b[j]) over an m x n row-major block */
static void FM_FN(bias_act)(T *out, const T *b, ptrdiff_t m, ptrdiff_t n, int kind)
{
    ptrdiff_t i, j;
    for (i = 0; i < m; i++) {
        T *row = out + i * n;
        if (kind == FM_RELU) {
            for (j = 0; j < n; j++) { T z = row[j] + b[j]; row[j] = z <= 0 ? (T)0 : z; }
        } else {
            for (j = 0; j < n; j++) row[j] += b[j];
            if (kind != FM_IDENTITY) FM_FN(activation)(row, row, n, kind);
        }
    }
}

/* The bias gradient, the one way it is summed: acc[j] += row[j] for one row, in double. Every
 * column sum adds its rows one by one in order, so a sum over rows [lo, hi) of some columns
 * is the same number however the columns are blocked. */
static inline void FM_FN(add_row)(double *acc, const T *row, ptrdiff_t n)
{
    ptrdiff_t j;
    for (j = 0; j < n; j++) acc[j] += (double)row[j];
}

/* db[j] = sum over the m rows of d (stride ld) of d[i, j], j < n, in double via acc[n] */
static void FM_FN(bias_grad)(const T *d, ptrdiff_t m, ptrdiff_t n, ptrdiff_t ld, double *acc,
                             T *db)
{
    ptrdiff_t i, j;
    for (j = 0; j < n; j++) acc[j] = 0;
    for (i = 0; i < m; i++) FM_FN(add_row)(acc, d + i * ld, n);
    for (j = 0; j < n; j++) db[j] = (T)acc[j];
}

/* one row of fm_act_grad: dz_row = da_row * f'(a_row), and with sum (a constant at each call,
 * so each call is its own loop) the row added into acc as add_row adds it, in the same loop */
FM_FORCE_INLINE void FM_FN(act_grad_row)(
    const T *da_row, const T *a_row, T *dz_row, double *acc, ptrdiff_t n, int kind, int sum)
{
    ptrdiff_t j;
    switch (kind) {                   /* G: the gradient from d = dA and y = A */
    case FM_IDENTITY:   FM_GRAD_LOOP(T, d); break;
    case FM_RELU:       FM_GRAD_LOOP(T, y > 0 ? d : (T)0); break;   /* relu'(0) = 0 */
    case FM_LEAKY_RELU: FM_GRAD_LOOP(T, d * (y > 0 ? (T)1 : (T)FM_LEAKY_SLOPE)); break;
    case FM_SIGMOID:    FM_GRAD_LOOP(T, d * (y * ((T)1 - y))); break;
    case FM_TANH:       FM_GRAD_LOOP(T, d * ((T)1 - y * y)); break;
    case FM_STEP:       FM_GRAD_LOOP(T, (T)0); break;
    /* elu: a = e^z - 1 for z <= 0, so f'(z) = e^z = a + 1 */
    case FM_ELU:        FM_GRAD_LOOP(T, d * (y > 0 ? (T)1 : y + (T)1)); break;
    /* softplus: f'(z) = sigmoid(z) = 1 - e^-a */
    case FM_SOFTPLUS:   FM_GRAD_LOOP(T, d * -FM_EXPM1(-y)); break;
    }
}

/* dz = da * f'(a) and, unless db is NULL, db = column sums of dz (fm_bias_grad's sums: each
 * row added in order, while it is computed; acc: n doubles); dz may be da */
static void FM_FN(act_grad)(const T *da, const T *a, T *dz, double *acc, T *db,
                            ptrdiff_t m, ptrdiff_t n, int kind)
{
    ptrdiff_t i, j;
    if (db == NULL) {
        for (i = 0; i < m; i++)
            FM_FN(act_grad_row)(da + i * n, a + i * n, dz + i * n, acc, n, kind, 0);
        return;
    }
    for (j = 0; j < n; j++) acc[j] = 0;
    for (i = 0; i < m; i++)
        FM_FN(act_grad_row)(da + i * n, a + i * n, dz + i * n, acc, n, kind, 1);
    for (j = 0; j < n; j++) db[j] = (T)acc[j];
}

/* max of z[0:n] (-inf for n = 0). NaN never wins a comparison; it reaches z - max later
 * and makes the whole row NaN there. Eight running maxima let the loop vectorise. */
static T FM_FN(row_max)(const T *z, ptrdiff_t n)
{
    T lane[8];
    ptrdiff_t j, l;
    for (l = 0; l < 8; l++) lane[l] = -(T)INFINITY;
    for (j = 0; j + 8 <= n; j += 8)
        for (l = 0; l < 8; l++) lane[l] = z[j + l] > lane[l] ? z[j + l] : lane[l];
    for (; j < n; j++) lane[0] = z[j] > lane[0] ? z[j] : lane[0];
    for (l = 1; l < 8; l++) lane[0] = lane[l] > lane[0] ? lane[l] : lane[0];
    return lane[0];
}

/* out[i, j] = exp(z[i, j] - max_j z[i, j]) for an m x n row-major block (out may be z);
 * the row maxima go to maxima[0:m] unless it is NULL (cross-entropy needs them again).
 * Rows are processed in groups of about 1024 entries: the shifts of a group first, then
 * one flat loop of exponentials over the group, which vectorises however short the rows
 * (10 classes) and stays in cache however long. */
static void FM_FN(exp_shifted)(const T *z, T *out, double *maxima, ptrdiff_t m,
                               ptrdiff_t n)
{
    ptrdiff_t group = n >= 1024 ? 1 : 1024 / (n > 0 ? n : 1), i0, i, j;
    for (i0 = 0; i0 < m; i0 += group) {
        ptrdiff_t rows = m - i0 < group ? m - i0 : group;
        T *block = out + i0 * n;
        for (i = i0; i < i0 + rows; i++) {
            T mx = FM_FN(row_max)(z + i * n, n);
            if (maxima != NULL) maxima[i] = mx;
            for (j = 0; j < n; j++) out[i * n + j] = z[i * n + j] - mx;
        }
        for (j = 0; j < rows * n; j++) block[j] = FM_EXP(block[j]);
    }
}

/* sum of x[0:n] in double (see FM_LANE_SUM) */
static inline double FM_FN(sum)(const T *x, ptrdiff_t n)
{
    FM_LANE_SUM((double)x[j], n);
}

/* sum_j exp(z[j] - mx) in double, without storing the terms (log-softmax) */
static double FM_FN(exp_sum)(const T *z, T mx, ptrdiff_t n)
{
    T scratch[256];
    double s = 0;
    ptrdiff_t start, j;
    for (start = 0; start < n; start += 256) {
        ptrdiff_t len = n - start < 256 ? n - start : 256;
        for (j = 0; j < len; j++) scratch[j] = FM_EXP(z[start + j] - mx);
        s += FM_FN(sum)(scratch, len);
    }
    return s;
}

/* Optimiser updates over p[0:n] with gradient g, as in csrc/_optim.pxd (PyTorch's formulas):
 * g' = g * scale + wd * p, then
 *   sgd:      v = mom * v + g'; p -= lr * (nesterov ? g' + mom * v : v)   (mom = 0: p -= lr g')
 *   adam:     m = b1 m + gain1 g'; v = b2 v + gain2 g'^2  (gain = 1 - b, computed by the
 *             caller in double and rounded once: in float32, 1 - (float)0.999 is 1.3e-5 off);
 *             p -= step_size * m / (sqrt(v) / root_bc2 + eps)  (one division: see below)
 *   rmsprop:  v = alpha v + (1-alpha) g'^2;  p -= lr g' / (sqrt(v) + eps)
 *   adagrad:  v = v + g'^2;                  p -= lr g' / (sqrt(v) + eps)
 * (rmsprop and adagrad share one loop: adagrad is decay = 1, gain = 1.) */
static void FM_FN(sgd)(T *p, const T *g, T *v, ptrdiff_t n, T lr, T wd, T scale,
                       T mom, int nesterov)
{
    ptrdiff_t i;
    if (mom == 0) {
        for (i = 0; i < n; i++) p[i] -= lr * (g[i] * scale + wd * p[i]);
    } else if (nesterov) {
        for (i = 0; i < n; i++) {
            T gi = g[i] * scale + wd * p[i], vi = mom * v[i] + gi;
            v[i] = vi;
            p[i] -= lr * (gi + mom * vi);
        }
    } else {
        for (i = 0; i < n; i++) {
            T gi = g[i] * scale + wd * p[i], vi = mom * v[i] + gi;
            v[i] = vi;
            p[i] -= lr * vi;
        }
    }
}

static void FM_FN(adam)(T *p, const T *g, T *m, T *v, ptrdiff_t n, T step_size,
                        T root_bc2, T b1, T gain1, T b2, T gain2, T eps, T wd, T scale)
{
    /* PyTorch's step_size * m / (sqrt(v) / root_bc2 + eps), with root_bc2 moved out of the
     * loop: one division and one square root per parameter instead of two divisions. */
    T eps_scaled = eps * root_bc2;
    ptrdiff_t i;
    step_size *= root_bc2;
    for (i = 0; i < n; i++) {
        T gi = g[i] * scale + wd * p[i];
        T mi = b1 * m[i] + gain1 * gi;
        T vi = b2 * v[i] + gain2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= step_size * mi / (FM_SQRT(vi) + eps_scaled);
    }
}

static void FM_FN(rms)(T *p, const T *g, T *v, ptrdiff_t n, T lr, T decay, T gain,
                       T eps, T wd, T scale)
{
    ptrdiff_t i;
    for (i = 0; i < n; i++) {
        T gi = g[i] * scale + wd * p[i];
        T vi = decay * v[i] + gain * gi * gi;
        v[i] = vi;
        p[i] -= lr * gi / (FM_SQRT(vi) + eps);
    }
}

/* sum of x^2 in double (gradient norms) */
static double FM_FN(sum_sq)(const T *x, ptrdiff_t n)
{
    FM_LANE_SUM((double)x[j] * x[j], n);
}

/* 1 when x[0:n] holds no NaN and no inf: x - x is 0 exactly for finite x */
static int FM_FN(all_finite)(const T *x, ptrdiff_t n)
{
    ptrdiff_t i;
    int bad = 0;
    for (i = 0; i < n; i++) bad |= (x[i] - x[i]) != 0;
    return !bad;
}

/* Dropout (the mask: dropout.h). v if keep (0 or 1), else +0: by masking v's bits. A
 * ternary here compiles to a branch, which mispredicts half the time (5x slower); a mask
 * never does. */
static inline T FM_FN(keep)(T v, uint64_t keep)
{
    if (sizeof(T) == sizeof(uint32_t)) {
        uint32_t bits;
        memcpy(&bits, &v, sizeof bits);
        bits &= (uint32_t)0 - (uint32_t)keep;
        memcpy(&v, &bits, sizeof bits);
    } else {
        uint64_t bits;
        memcpy(&bits, &v, sizeof bits);
        bits &= (uint64_t)0 - keep;
        memcpy(&v, &bits, sizeof bits);
    }
    return v;
}

/* Rows [row0, row0 + rows) of an n-column block a (a points at row row0):
 *   forward:  a := keep ? a * scale : 0                        (scale = 1/(1-p))
 *   backward: d := keep ? d * scale : 0;  a := keep ? a * keep_fraction : 0   (1-p) */
static void FM_FN(dropout_forward)(T *a, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t n,
                                   uint64_t key, uint64_t threshold, T scale)
{
    ptrdiff_t i, j, half = (n + 1) / 2;
    uint64_t even, odd;
    for (i = 0; i < rows; i++) {
        uint64_t pair = (uint64_t)(row0 + i) * (uint64_t)half;
        T *row = a + i * n;
        for (j = 0; j + 1 < n; j += 2, pair++) {
            fm_dropout_pair(key, pair, threshold, &even, &odd);
            row[j] = FM_FN(keep)(row[j] * scale, even);
            row[j + 1] = FM_FN(keep)(row[j + 1] * scale, odd);
        }
        if (j < n) {
            fm_dropout_pair(key, pair, threshold, &even, &odd);
            row[j] = FM_FN(keep)(row[j] * scale, even);
        }
    }
}

static void FM_FN(dropout_backward)(T *d, T *a, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t n,
                                    uint64_t key, uint64_t threshold, T scale,
                                    T keep_fraction)
{
    ptrdiff_t i, j, half = (n + 1) / 2;
    uint64_t even, odd;
    for (i = 0; i < rows; i++) {
        uint64_t pair = (uint64_t)(row0 + i) * (uint64_t)half;
        T *drow = d + i * n, *arow = a + i * n;
        for (j = 0; j + 1 < n; j += 2, pair++) {
            fm_dropout_pair(key, pair, threshold, &even, &odd);
            drow[j] = FM_FN(keep)(drow[j] * scale, even);
            arow[j] = FM_FN(keep)(arow[j] * keep_fraction, even);
            drow[j + 1] = FM_FN(keep)(drow[j + 1] * scale, odd);
            arow[j + 1] = FM_FN(keep)(arow[j + 1] * keep_fraction, odd);
        }
        if (j < n) {
            fm_dropout_pair(key, pair, threshold, &even, &odd);
            drow[j] = FM_FN(keep)(drow[j] * scale, even);
            arow[j] = FM_FN(keep)(arow[j] * keep_fraction, even);
        }
    }
}

/* The L1 penalty (csrc/_optim.pxd): g += l1 * sign(p) (0 where p is 0), and sum |p| in
 * double, in 8 lanes added in a fixed order (vectorises; the result depends on p alone).
 * No branches: the signs of the weights are a coin flip for the branch predictor (a branchy
 * loop was 10x slower on 200k weights). */
static void FM_FN(l1_subgradient)(T *g, const T *p, T l1, ptrdiff_t n)
{
    ptrdiff_t i;
    for (i = 0; i < n; i++)
        g[i] += l1 * (T)((p[i] > 0) - (p[i] < 0));
}

static double FM_FN(abs_sum)(const T *p, ptrdiff_t n)
{
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    ptrdiff_t i, k;
    for (i = 0; i + 8 <= n; i += 8)
        for (k = 0; k < 8; k++)
            lane[k] += fabs((double)p[i + k]);
    for (k = 0; k < n % 8; k++)
        lane[k] += fabs((double)p[i + k]);
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
           ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

/* Put this variant's loops of type T into `table`. */
void FM_FN(fill)(fm_kernel_table *table)
{
    table->FM_FIELD(activation) = FM_FN(activation);
    table->FM_FIELD(bias_act) = FM_FN(bias_act);
    table->FM_FIELD(act_grad) = FM_FN(act_grad);
    table->FM_FIELD(bias_grad) = FM_FN(bias_grad);
    table->FM_FIELD(row_max) = FM_FN(row_max);
    table->FM_FIELD(exp_shifted) = FM_FN(exp_shifted);
    table->FM_FIELD(exp_sum) = FM_FN(exp_sum);
    table->FM_FIELD(sgd) = FM_FN(sgd);
    table->FM_FIELD(adam) = FM_FN(adam);
    table->FM_FIELD(rms) = FM_FN(rms);
    table->FM_FIELD(sum_sq) = FM_FN(sum_sq);
    table->FM_FIELD(all_finite) = FM_FN(all_finite);
    table->FM_FIELD(sum) = FM_FN(sum);
    table->FM_FIELD(dropout_forward) = FM_FN(dropout_forward);
    table->FM_FIELD(dropout_backward) = FM_FN(dropout_backward);
    table->FM_FIELD(l1_subgradient) = FM_FN(l1_subgradient);
    table->FM_FIELD(abs_sum) = FM_FN(abs_sum);
}
