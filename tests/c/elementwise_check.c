/* C-level checks of the elementwise loops, without Python: built and run by
 * tests/test_c_elementwise.py natively (once per variant, FUSEDMLP_ISA) and, where a cross
 * compiler and qemu-user exist, for AArch64 under emulation.
 *
 * Checks, for the selected variant: exp/expm1 and the sigmoid, tanh and elu loops against
 * libm in a wider type (float against double; double against long double, or against
 * double's libm with a looser bound where long double is no wider) over a sweep of the range;
 * special values (NaN, infinities, signed zeros); softmax rows summing to 1; the bias pass,
 * the derivative pass, the optimiser loops and the finiteness check on small cases.
 * Prints one line per check and "N passed, M failed" last; exit status 1 on any failure.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "elementwise.h"

static int passed = 0, failed = 0;

static void check(int ok, const char *what)
{
    if (ok) passed++;
    else failed++;
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
}

/* distance in units in the last place of `ref` (in type float or double) */
static double ulps_f(float got, double ref)
{
    if (isnan(ref)) return isnan(got) ? 0 : INFINITY;
    if (isinf(ref) || ref == 0) return got == (float)ref ? 0 : INFINITY;
    int e;
    frexp(ref, &e);
    double ulp = ldexp(1.0, (e - 24 < -149 ? -149 : e - 24));
    return fabs((double)got - ref) / ulp;
}

static double ulps_d(double got, long double ref)
{
    if (isnan((double)ref)) return isnan(got) ? 0 : INFINITY;
    if (isinf((double)ref) || ref == 0) return got == (double)ref ? 0 : INFINITY;
    int e;
    frexpl(ref, &e);
    long double ulp = ldexpl(1.0L, (e - 53 < -1074 ? -1074 : e - 53));
    return (double)(fabsl((long double)got - ref) / ulp);
}

static double sigmoid_ref(double x) { return 1.0 / (1.0 + exp(-x)); }
static long double sigmoidl_ref(long double x) { return 1.0L / (1.0L + expl(-x)); }

#define N_SWEEP 20001
#define MAX_ULP 3.0                 /* as tests/test_vecmath.py */

int main(void)
{
    static float xf[N_SWEEP], yf[N_SWEEP];
    static double xd[N_SWEEP], yd[N_SWEEP];
    /* long double no wider than double (MSVC, some ABIs): compare with double libm, 1 ulp more */
    const double slack = LDBL_MANT_DIG > DBL_MANT_DIG ? 0.0 : 1.0;
    char line[160];
    int i;

    if (fm_select_isa() != 0) {
        printf("FAIL fm_select_isa: %s\n", fm_isa_error());
        return 1;
    }
    printf("variant %s (supported: %s)\n", fm_isa_name(), fm_isa_supported());

    /* exp over [-110, 90] (float) and [-750, 710] (double), into the subnormals and to inf */
    double worst = 0;
    for (i = 0; i < N_SWEEP; i++) {
        float x = -110.0f + 200.0f * (float)i / (N_SWEEP - 1);
        double u = ulps_f(fm_exp_f(x), exp((double)x));
        if (fabs((double)x) < 87 && u > worst) worst = u;
    }
    snprintf(line, sizeof line, "exp float32 within 3 ulp on [-87, 87] (worst %.2f)", worst);
    check(worst <= MAX_ULP, line);
    worst = 0;
    for (i = 0; i < N_SWEEP; i++) {
        double x = -700.0 + 1400.0 * (double)i / (N_SWEEP - 1);
        double u = ulps_d(fm_exp_d(x), expl((long double)x));
        if (u > worst) worst = u;
    }
    snprintf(line, sizeof line, "exp float64 within %.1f ulp on [-700, 700] (worst %.2f)",
             MAX_ULP + slack, worst);
    check(worst <= MAX_ULP + slack, line);
    worst = 0;
    for (i = 0; i < N_SWEEP; i++) {
        double x = -40.0 + 80.0 * (double)i / (N_SWEEP - 1);
        double u = ulps_d(fm_expm1_d(x), expm1l((long double)x));
        if (u > worst) worst = u;
    }
    snprintf(line, sizeof line, "expm1 float64 within %.1f ulp on [-40, 40] (worst %.2f)",
             MAX_ULP + slack, worst);
    check(worst <= MAX_ULP + slack, line);

    /* special values */
    check(isnan(fm_exp_f(NAN)) && fm_exp_f(-INFINITY) == 0 && isinf(fm_exp_f(INFINITY)),
          "exp float32: NaN, -inf, inf");
    check(isnan(fm_exp_d(NAN)) && fm_exp_d(-INFINITY) == 0 && isinf(fm_exp_d(INFINITY)),
          "exp float64: NaN, -inf, inf");
    check(signbit(fm_expm1_d(-0.0)) && fm_expm1_d(-0.0) == 0 && fm_expm1_d(-INFINITY) == -1,
          "expm1 float64: -0 and -inf");

    /* the activation loops (the dispatched code) over a sweep */
    for (i = 0; i < N_SWEEP; i++) {
        xf[i] = -30.0f + 60.0f * (float)i / (N_SWEEP - 1);
        xd[i] = xf[i];
    }
    fm_activation_f(xf, yf, N_SWEEP, FM_SIGMOID);
    worst = 0;
    for (i = 0; i < N_SWEEP; i++) {
        double u = ulps_f(yf[i], sigmoid_ref((double)xf[i]));
        if (u > worst) worst = u;
    }
    snprintf(line, sizeof line, "sigmoid float32 within 3 ulp (worst %.2f)", worst);
    check(worst <= MAX_ULP, line);
    fm_activation_d(xd, yd, N_SWEEP, FM_SIGMOID);
    worst = 0;
    for (i = 0; i < N_SWEEP; i++) {
        double u = ulps_d(yd[i], sigmoidl_ref((long double)xd[i]));
        if (u > worst) worst = u;
    }
    snprintf(line, sizeof line, "sigmoid float64 within %.1f ulp (worst %.2f)", MAX_ULP + slack,
             worst);
    check(worst <= MAX_ULP + slack, line);
    fm_activation_f(xf, yf, N_SWEEP, FM_TANH);
    worst = 0;
    for (i = 0; i < N_SWEEP; i++) {
        double u = ulps_f(yf[i], tanh((double)xf[i]));
        if (u > worst) worst = u;
    }
    snprintf(line, sizeof line, "tanh float32 within 3 ulp (worst %.2f)", worst);
    check(worst <= MAX_ULP, line);
    fm_activation_d(xd, yd, N_SWEEP, FM_TANH);
    worst = 0;
    for (i = 0; i < N_SWEEP; i++) {
        double u = ulps_d(yd[i], tanhl((long double)xd[i]));
        if (u > worst) worst = u;
    }
    snprintf(line, sizeof line, "tanh float64 within %.1f ulp (worst %.2f)", MAX_ULP + slack, worst);
    check(worst <= MAX_ULP + slack, line);
    fm_activation_d(xd, yd, N_SWEEP, FM_ELU);
    worst = 0;
    for (i = 0; i < N_SWEEP; i++) {
        long double x = xd[i];
        double u = ulps_d(yd[i], x > 0 ? x : expm1l(x));
        if (u > worst) worst = u;
    }
    snprintf(line, sizeof line, "elu float64 within %.1f ulp (worst %.2f)", MAX_ULP + slack, worst);
    check(worst <= MAX_ULP + slack, line);

    /* signed zeros, NaN and infinities through the loops */
    {
        double in[5] = {-0.0, 0.0, NAN, INFINITY, -INFINITY}, out[5];
        fm_activation_d(in, out, 5, FM_TANH);
        check(signbit(out[0]) && out[0] == 0 && !signbit(out[1]) && isnan(out[2])
              && out[3] == 1 && out[4] == -1, "tanh float64: -0, +0, NaN, +-inf");
        fm_activation_d(in, out, 5, FM_SIGMOID);
        check(out[0] == 0.5 && isnan(out[2]) && out[3] == 1 && out[4] == 0,
              "sigmoid float64: 0, NaN, +-inf");
        fm_activation_d(in, out, 5, FM_RELU);
        check(out[0] == 0 && isnan(out[2]) && isinf(out[3]) && out[4] == 0,
              "relu float64: 0, NaN, +-inf (relu(0) = 0)");
    }

    /* softmax: exp of the shifted rows, then row sums; 1e30 logits stay finite */
    {
        float z[3 * 4] = {1, 2, 3, 4, 1e30f, 0, -1e30f, 5, -INFINITY, 0, 0, 0}, e[12];
        double maxima[3], first = exp(-3.0) + exp(-2.0) + exp(-1.0) + 1;
        fm_exp_shifted_f(z, e, maxima, 3, 4);
        check(fabs(fm_sum_f(e, 4) - first) < 1e-6 * first && fm_sum_f(e + 4, 4) == 1
              && fm_sum_f(e + 8, 4) == 3 && e[8] == 0 && maxima[1] == (double)1e30f
              && fm_row_max_f(z + 8, 4) == 0,
              "softmax pieces: row sums, finite for 1e30, -inf gets 0, row maxima");
    }

    /* bias + activation, derivative + bias gradient, optimiser loops, finiteness */
    {
        double out[6] = {-1, 0, 1, 2, -3, 4}, b[3] = {0.5, 0.5, -5}, acc[3], db[3];
        double da[6] = {1, 1, 1, 1, 1, 1}, dz[6];
        fm_bias_act_d(out, b, 2, 3, FM_RELU);
        check(out[0] == 0 && out[1] == 0.5 && out[2] == 0 && out[3] == 2.5 && out[5] == 0,
              "bias + relu");
        fm_act_grad_d(da, out, dz, acc, db, 2, 3, FM_RELU);
        check(dz[0] == 0 && dz[1] == 1 && db[1] == 1 && db[0] == 1 && db[2] == 0,
              "relu derivative and bias gradient (relu'(0) = 0)");
        double p[3] = {1, 2, 3}, g[3] = {1, 1, 1}, m[3] = {0, 0, 0}, v[3] = {0, 0, 0};
        fm_sgd_d(p, g, v, 3, 0.5, 0, 1, 0, 0);
        check(p[0] == 0.5 && p[2] == 2.5, "sgd");
        /* first step: m = 0.1, v = 0.001, p -= 0.1 * m / sqrt(v / (1 - 0.999)) = 0.01 */
        fm_adam_d(p, g, m, v, 3, 0.1, sqrt(1 - 0.999), 0.9, 1 - 0.9, 0.999, 1 - 0.999, 0, 0, 1);
        check(fabs(p[0] - 0.49) < 1e-12 && fabs(m[0] - 0.1) < 1e-15, "adam's first step");
        check(fm_sum_sq_d(g, 3) == 3, "sum of squares");
        double bad[4] = {1, 2, NAN, 3};
        check(fm_all_finite_d(bad, 2) && !fm_all_finite_d(bad, 4), "all_finite");
    }

    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
