# Activation functions and the two fused passes of a dense layer, for float32 and float64.
#
#   apply_activation: out = f(x)                                        (array functions)
#   bias_activation:  out[i, j] = f(out[i, j] + b[j])                  (after Z = X @ W)
#   activation_grad:  dz[i, j] = da[i, j] * f'(a[i, j]);  db[j] = sum_i dz[i, j]
#   bias_gradient:    db[j] = sum_i d[i, j] over a block (the split backward's db)
#
# The loops themselves are C (elementwise.h), where they vectorise and are compiled for
# several instruction sets (the variant is chosen at import: select_isa); this file gives them one fused-type (`floating`) interface.
# Every derivative is written in terms of the activation's OUTPUT a = f(z), so backward needs
# no copy of the pre-activation z. Conventions (each is a test): relu'(0) = 0; step'(z) = 0,
# so layers below a step cannot learn; sigmoid never overflows; NaN propagates. The activation
# numbers (`kind`) are named in fusedmlp/_codes.pxd.

from cython cimport floating

cdef extern from "elementwise.h" nogil:
    void fm_activation_f(const float* x, float* out, Py_ssize_t n, int kind)
    void fm_activation_d(const double* x, double* out, Py_ssize_t n, int kind)
    void fm_bias_act_f(float* out, const float* b, Py_ssize_t m, Py_ssize_t n, int kind)
    void fm_bias_act_d(double* out, const double* b, Py_ssize_t m, Py_ssize_t n, int kind)
    void fm_act_grad_f(const float* da, const float* a, float* dz, double* acc, float* db,
                       Py_ssize_t m, Py_ssize_t n, int kind)
    void fm_act_grad_d(const double* da, const double* a, double* dz, double* acc, double* db,
                       Py_ssize_t m, Py_ssize_t n, int kind)
    void fm_bias_grad_f(const float* d, Py_ssize_t m, Py_ssize_t n, Py_ssize_t ld, double* acc,
                        float* db)
    void fm_bias_grad_d(const double* d, Py_ssize_t m, Py_ssize_t n, Py_ssize_t ld, double* acc,
                        double* db)
    float fm_exp_f(float x)
    double fm_exp_d(double x)
    int fm_select_isa()
    const char* fm_isa_error()
    const char* fm_isa_name()
    const char* fm_isa_supported()


cdef inline int select_isa() except -1:
    """Fill this module's kernel table with the variant for this CPU (or FUSEDMLP_ISA's).

    Each compiled module links its own copy of the loops, so each calls this once, at import,
    before any kernel runs."""
    if fm_select_isa() != 0:
        raise ImportError(fm_isa_error().decode())
    return 0


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return fm_exp_f(x)
    else:
        return fm_exp_d(x)


cdef inline void apply_activation(const floating* x, floating* out, Py_ssize_t size,
                                  int activation) noexcept nogil:
    """out := f(x) elementwise (out may be x)."""
    if floating is float:
        fm_activation_f(x, out, size, activation)
    else:
        fm_activation_d(x, out, size, activation)


cdef inline void bias_activation(floating* out, const floating* b, Py_ssize_t m, Py_ssize_t n,
                                 int activation) noexcept nogil:
    """out[i, j] := f(out[i, j] + b[j]) over an m x n row-major block: one pass."""
    if floating is float:
        fm_bias_act_f(out, b, m, n, activation)
    else:
        fm_bias_act_d(out, b, m, n, activation)


cdef inline void activation_grad(const floating* da, const floating* a, floating* dz,
                                 double* acc, floating* db,
                                 Py_ssize_t m, Py_ssize_t n, int activation) noexcept nogil:
    """dz := da * f'(a) and db := column sums of dz, in one pass.

    da      IN   m x n, the gradient with respect to the activation output
    a       IN   m x n, the activation output kept from forward
    dz      OUT  m x n, may be the same memory as da
    acc     SCRATCH n doubles: the bias gradient is summed in float64 for either dtype
    db      OUT  n (NULL: skip the bias gradient)
    """
    if floating is float:
        fm_act_grad_f(da, a, dz, acc, db, m, n, activation)
    else:
        fm_act_grad_d(da, a, dz, acc, db, m, n, activation)


cdef inline void bias_gradient(const floating* d, Py_ssize_t m, Py_ssize_t n, Py_ssize_t ld,
                               double* acc, floating* db) noexcept nogil:
    """db[j] := sum over the m rows of d (row stride ld) of d[i, j], j < n, in float64 (acc:
    n doubles): the sums activation_grad's db adds, row by row in order, so a block of the
    columns or of the rows (then added in order) is summed the same way as the whole."""
    if floating is float:
        fm_bias_grad_f(d, m, n, ld, acc, db)
    else:
        fm_bias_grad_d(d, m, n, ld, acc, db)
