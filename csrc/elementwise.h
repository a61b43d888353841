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
 *   fm_bias_grad   db = column sums of a block of rows          (the split backward's db)
 *   fm_row_max, fm_exp_shifted, fm_sum, fm_exp_sum              (softmax and cross-entropy)
 *   fm_all_finite                                               (input checks)
 *   fm_sgd, fm_adam, fm_rms, fm_sum_sq                          (optimiser updates)
 *   fm_dropout_forward, fm_dropout_backward                     (dropout's mask: dropout.h)
 *   fm_l1_subgradient, fm_abs_sum                               (the L1 penalty)
 * Each exists for float (suffix _f) and double (suffix _d).
 *
 * Files:
 *   elementwise.h          this header: the codes, the scalar exp/expm1, the kernel table and
 *                          the public names (which call through the table)
 *   elementwise_impl.h     each loop written once over an element type T; included twice
 *                          (float, then double) by
 *   elementwise_kernels.c  one instruction-set variant of every loop; CMakeLists.txt compiles
 *                          it once per variant with that variant's flags (x86-64: baseline,
 *                          AVX2, AVX-512; AArch64: NEON, which is its baseline)
 *   elementwise_dispatch.c picks the best variant the CPU supports when a module is imported
 *                          (fm_select_isa), or the one named by FUSEDMLP_ISA, and fills the
 *                          table; fm_isa_name() reports it (fusedmlp.show_config()).
 * So the wheel stays portable, never assumes an instruction set, and works the same with gcc,
 * clang and MSVC. Floating-point contraction is off in the build (-ffp-contract=off), so every
 * variant rounds identically and results do not depend on the CPU (tests/test_isa.py).
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

/* Activation numbers (named for Python by csrc/fusedmlp/_codes.pxd: fusedmlp.ACTIVATIONS). */
enum fm_activation { FM_IDENTITY = 0, FM_RELU = 1, FM_SIGMOID = 2, FM_TANH = 3, FM_STEP = 4,
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

/* The kernels of one instruction-set variant, filled in by fm_select_isa(). */
typedef struct {
    void (*activation_f)(const float *x, float *out, ptrdiff_t n, int kind);
    void (*activation_d)(const double *x, double *out, ptrdiff_t n, int kind);
    void (*bias_act_f)(float *out, const float *b, ptrdiff_t m, ptrdiff_t n, int kind);
    void (*bias_act_d)(double *out, const double *b, ptrdiff_t m, ptrdiff_t n, int kind);
    void (*act_grad_f)(const float *da, const float *a, float *dz, double *acc, float *db,
                       ptrdiff_t m, ptrdiff_t n, int kind);
    void (*act_grad_d)(const double *da, const double *a, double *dz, double *acc, double *db,
                       ptrdiff_t m, ptrdiff_t n, int kind);
    void (*bias_grad_f)(const float *d, ptrdiff_t m, ptrdiff_t n, ptrdiff_t ld, double *acc,
                        float *db);
    void (*bias_grad_d)(const double *d, ptrdiff_t m, ptrdiff_t n, ptrdiff_t ld, double *acc,
                        double *db);
    float (*row_max_f)(const float *z, ptrdiff_t n);
    double (*row_max_d)(const double *z, ptrdiff_t n);
    void (*exp_shifted_f)(const float *z, float *out, double *maxima, ptrdiff_t m, ptrdiff_t n);
    void (*exp_shifted_d)(const double *z, double *out, double *maxima, ptrdiff_t m,
                          ptrdiff_t n);
    double (*sum_f)(const float *x, ptrdiff_t n);
    double (*sum_d)(const double *x, ptrdiff_t n);
    double (*exp_sum_f)(const float *z, float mx, ptrdiff_t n);
    double (*exp_sum_d)(const double *z, double mx, ptrdiff_t n);
    void (*sgd_f)(float *p, const float *g, float *v, ptrdiff_t n, float lr, float wd,
                  float scale, float mom, int nesterov);
    void (*sgd_d)(double *p, const double *g, double *v, ptrdiff_t n, double lr, double wd,
                  double scale, double mom, int nesterov);
    void (*adam_f)(float *p, const float *g, float *m, float *v, ptrdiff_t n, float step_size,
                   float root_bc2, float b1, float gain1, float b2, float gain2, float eps,
                   float wd, float scale);
    void (*adam_d)(double *p, const double *g, double *m, double *v, ptrdiff_t n,
                   double step_size, double root_bc2, double b1, double gain1, double b2,
                   double gain2, double eps, double wd, double scale);
    void (*rms_f)(float *p, const float *g, float *v, ptrdiff_t n, float lr, float decay,
                  float gain, float eps, float wd, float scale);
    void (*rms_d)(double *p, const double *g, double *v, ptrdiff_t n, double lr, double decay,
                  double gain, double eps, double wd, double scale);
    double (*sum_sq_f)(const float *x, ptrdiff_t n);
    double (*sum_sq_d)(const double *x, ptrdiff_t n);
    int (*all_finite_f)(const float *x, ptrdiff_t n);
    int (*all_finite_d)(const double *x, ptrdiff_t n);
    void (*dropout_forward_f)(float *a, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t n,
                              uint64_t key, uint64_t threshold, float scale);
    void (*dropout_forward_d)(double *a, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t n,
                              uint64_t key, uint64_t threshold, double scale);
    void (*dropout_backward_f)(float *d, float *a, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t n,
                               uint64_t key, uint64_t threshold, float scale,
                               float keep_fraction);
    void (*dropout_backward_d)(double *d, double *a, ptrdiff_t row0, ptrdiff_t rows,
                               ptrdiff_t n, uint64_t key, uint64_t threshold, double scale,
                               double keep_fraction);
    void (*l1_subgradient_f)(float *g, const float *p, float l1, ptrdiff_t n);
    void (*l1_subgradient_d)(double *g, const double *p, double l1, ptrdiff_t n);
    double (*abs_sum_f)(const float *p, ptrdiff_t n);
    double (*abs_sum_d)(const double *p, ptrdiff_t n);
} fm_kernel_table;

/* One table per extension module (the library is linked into each, with hidden symbols). */
extern fm_kernel_table fm_kernels;

/* Choose the variant (FUSEDMLP_ISA if set, else the best the CPU supports) and fill
 * fm_kernels; 0 on success, else fm_isa_error() says why. Called once at module import,
 * before any kernel runs. */
int fm_select_isa(void);
const char *fm_isa_error(void);
/* the selected variant ("baseline", "avx2", "avx512", "neon") */
const char *fm_isa_name(void);
/* the variants this build has and this CPU runs, best last, comma-separated */
const char *fm_isa_supported(void);

/* The public names: one indirect call into the selected variant. */
#define fm_activation_f (fm_kernels.activation_f)
#define fm_activation_d (fm_kernels.activation_d)
#define fm_bias_act_f (fm_kernels.bias_act_f)
#define fm_bias_act_d (fm_kernels.bias_act_d)
#define fm_act_grad_f (fm_kernels.act_grad_f)
#define fm_act_grad_d (fm_kernels.act_grad_d)
#define fm_bias_grad_f (fm_kernels.bias_grad_f)
#define fm_bias_grad_d (fm_kernels.bias_grad_d)
#define fm_row_max_f (fm_kernels.row_max_f)
#define fm_row_max_d (fm_kernels.row_max_d)
#define fm_exp_shifted_f (fm_kernels.exp_shifted_f)
#define fm_exp_shifted_d (fm_kernels.exp_shifted_d)
#define fm_sum_f (fm_kernels.sum_f)
#define fm_sum_d (fm_kernels.sum_d)
#define fm_exp_sum_f (fm_kernels.exp_sum_f)
#define fm_exp_sum_d (fm_kernels.exp_sum_d)
#define fm_sgd_f (fm_kernels.sgd_f)
#define fm_sgd_d (fm_kernels.sgd_d)
#define fm_adam_f (fm_kernels.adam_f)
#define fm_adam_d (fm_kernels.adam_d)
#define fm_rms_f (fm_kernels.rms_f)
#define fm_rms_d (fm_kernels.rms_d)
#define fm_sum_sq_f (fm_kernels.sum_sq_f)
#define fm_sum_sq_d (fm_kernels.sum_sq_d)
#define fm_all_finite_f (fm_kernels.all_finite_f)
#define fm_all_finite_d (fm_kernels.all_finite_d)
#define fm_dropout_forward_f (fm_kernels.dropout_forward_f)
#define fm_dropout_forward_d (fm_kernels.dropout_forward_d)
#define fm_dropout_backward_f (fm_kernels.dropout_backward_f)
#define fm_dropout_backward_d (fm_kernels.dropout_backward_d)
#define fm_l1_subgradient_f (fm_kernels.l1_subgradient_f)
#define fm_l1_subgradient_d (fm_kernels.l1_subgradient_d)
#define fm_abs_sum_f (fm_kernels.abs_sum_f)
#define fm_abs_sum_d (fm_kernels.abs_sum_d)

#endif
