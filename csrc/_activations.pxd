# Activation functions and the two fused passes of a dense layer.
#
# Everything here is `noexcept nogil` arithmetic on raw pointers to row-major blocks; the
# Python layer has checked every shape before a pointer gets here.
#
#   bias_activation:  out[i, j] = f(out[i, j] + b[j])                  (after Z = X @ W)
#   activation_grad:  dz[i, j] = da[i, j] * f'(a[i, j]);  db[j] = sum_i dz[i, j]
#
# Every derivative is written in terms of the activation's OUTPUT a = f(z), so backward needs
# no copy of the pre-activation z. The activation is chosen once per call, outside the loops,
# so that the simple ones (identity, relu, leaky relu) vectorise.
#
# Conventions (each is a test): relu'(0) = 0; step'(z) = 0 everywhere, so layers below a step
# cannot learn; sigmoid is evaluated from exp(-|z|), which never overflows; NaN propagates
# through every activation (np.maximum semantics for relu).

from cython cimport floating
from libc.math cimport exp, expf, tanh, tanhf, log1p, log1pf, expm1, expm1f, fabs, fabsf

cdef enum:
    IDENTITY = 0
    RELU = 1
    SIGMOID = 2
    TANH = 3
    STEP = 4
    LEAKY_RELU = 5
    ELU = 6
    SOFTPLUS = 7

# The slope of leaky relu for z < 0, fixed at the usual default.
cdef extern from *:
    """
    #define FUSEDMLP_LEAKY_SLOPE 0.01
    """
    double LEAKY_SLOPE "FUSEDMLP_LEAKY_SLOPE"


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating _expm1(floating x) noexcept nogil:
    if floating is float:
        return expm1f(x)
    else:
        return expm1(x)


cdef inline floating _sigmoid(floating z) noexcept nogil:
    # exp(-|z|) is in (0, 1]: no overflow for any z, and both branches are exact formulas.
    cdef floating e
    if floating is float:
        e = expf(-fabsf(z))
    else:
        e = exp(-fabs(z))
    if z >= 0:
        return 1 / (1 + e)
    return e / (1 + e)


cdef inline floating _softplus(floating z) noexcept nogil:
    # log(1 + e^z) = max(z, 0) + log1p(e^-|z|): no overflow, exact for large |z|.
    if floating is float:
        return (z if z > 0 else 0) + log1pf(expf(-fabsf(z)))
    else:
        return (z if z > 0 else 0) + log1p(exp(-fabs(z)))


cdef inline void apply_activation(const floating* x, floating* out, Py_ssize_t size,
                                  int activation) noexcept nogil:
    """out := f(x) elementwise (out may be x)."""
    cdef Py_ssize_t i
    cdef floating z
    if activation == IDENTITY:
        if out != x:
            for i in range(size):
                out[i] = x[i]
    elif activation == RELU:
        for i in range(size):
            z = x[i]
            out[i] = 0 if z <= 0 else z        # NaN compares false: it stays NaN
    elif activation == LEAKY_RELU:
        for i in range(size):
            z = x[i]
            out[i] = z if z > 0 else <floating>LEAKY_SLOPE * z
    elif activation == SIGMOID:
        for i in range(size):
            out[i] = _sigmoid(x[i])
    elif activation == TANH:
        for i in range(size):
            if floating is float:
                out[i] = tanhf(x[i])
            else:
                out[i] = tanh(x[i])
    elif activation == STEP:
        for i in range(size):
            z = x[i]
            out[i] = 1 if z > 0 else (0 if z <= 0 else z)
    elif activation == ELU:
        for i in range(size):
            z = x[i]
            out[i] = z if z > 0 else _expm1(z)
    elif activation == SOFTPLUS:
        for i in range(size):
            out[i] = _softplus(x[i])


cdef inline void bias_activation(floating* out, const floating* b, Py_ssize_t m, Py_ssize_t n,
                                 int activation) noexcept nogil:
    """out[i, j] := f(out[i, j] + b[j]) over an m x n row-major block: one pass."""
    cdef Py_ssize_t i, j
    cdef floating* row
    cdef floating z
    for i in range(m):
        row = out + i * n
        if activation == IDENTITY:
            for j in range(n):
                row[j] = row[j] + b[j]
        elif activation == RELU:
            for j in range(n):
                z = row[j] + b[j]
                row[j] = 0 if z <= 0 else z
        else:
            for j in range(n):
                row[j] = row[j] + b[j]
            apply_activation(row, row, n, activation)


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
    cdef Py_ssize_t i, j
    cdef const floating* da_row
    cdef const floating* a_row
    cdef floating* dz_row
    cdef floating g, y
    for j in range(n):
        acc[j] = 0
    for i in range(m):
        da_row = da + i * n
        a_row = a + i * n
        dz_row = dz + i * n
        if activation == IDENTITY:
            for j in range(n):
                g = da_row[j]
                dz_row[j] = g
                acc[j] += g
        elif activation == RELU:
            for j in range(n):
                g = da_row[j] if a_row[j] > 0 else 0
                dz_row[j] = g
                acc[j] += g
        elif activation == SIGMOID:
            for j in range(n):
                y = a_row[j]
                g = da_row[j] * y * (1 - y)
                dz_row[j] = g
                acc[j] += g
        elif activation == TANH:
            for j in range(n):
                y = a_row[j]
                g = da_row[j] * (1 - y * y)
                dz_row[j] = g
                acc[j] += g
        elif activation == STEP:
            for j in range(n):
                dz_row[j] = 0
        elif activation == LEAKY_RELU:
            for j in range(n):
                g = da_row[j] if a_row[j] > 0 else <floating>LEAKY_SLOPE * da_row[j]
                dz_row[j] = g
                acc[j] += g
        elif activation == ELU:
            # a = e^z - 1 for z <= 0, so f'(z) = e^z = a + 1.
            for j in range(n):
                y = a_row[j]
                g = da_row[j] if y > 0 else da_row[j] * (y + 1)
                dz_row[j] = g
                acc[j] += g
        elif activation == SOFTPLUS:
            # a = log(1 + e^z), so f'(z) = sigmoid(z) = 1 - e^-a = -expm1(-a).
            for j in range(n):
                g = -da_row[j] * _expm1(-a_row[j])
                dz_row[j] = g
                acc[j] += g
    if db != NULL:
        for j in range(n):
            db[j] = <floating>acc[j]
