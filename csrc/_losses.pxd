# Row-wise softmax, log-softmax and the four losses, each with its gradient in the same pass.
#
# Softmax of a row z: subtract the row maximum first, so every exponent is <= 0 and exp cannot
# overflow (logits of 1e30 stay finite); entries of -inf get exactly 0; a NaN anywhere in a row
# makes the whole row NaN (NumPy/SciPy behaviour). The denominator is summed in float64 for
# both dtypes, so a float32 row of 10^6 entries loses no mass.
#
# Cross-entropy is computed from the logits by log-sum-exp:
#     loss_i = log(sum_j exp(z_ij - max_i)) - (z_i,y_i - max_i)
# never as log(p + eps), and nothing is clipped. Its gradient is (softmax - target) scaled by
# the sample's weight over the total weight, written in the same pass over the row.
#
# Binary cross-entropy of independent sigmoid outputs is computed from the logits too:
#     loss_ij = max(z, 0) - t z + log1p(exp(-|z|))         (= softplus(z) - t z)
# exp(-|z|) <= 1 never overflows, and max(z, 0) - t z is formed first so that a confident
# correct logit (t = 1, z = 40) gives log1p(exp(-40)), not (40 + tiny) - 40. No clipping.
#
# The half Poisson deviance of an exponential output mu = exp(z):
#     loss_ij = mu - t z + (t log t - t)                    (0 when mu = t)
# with gradient mu - t; t log t is taken as 0 at t = 0.
#
# Losses are the weighted mean over the batch (weights default to 1); the three losses with
# one value per output (squared error, binary cross-entropy, Poisson) average over the
# outputs as well (PyTorch's reduction="mean"). Every loss is accumulated in float64 and
# returned as a double; the elementwise exp/log of the last two are evaluated in float64 for
# both dtypes.

from cython cimport floating
from libc.math cimport log1p, frexp
from libc.stdint cimport int64_t

cdef extern from "elementwise.h" nogil:
    float fm_row_max_f(const float* z, Py_ssize_t n)
    double fm_row_max_d(const double* z, Py_ssize_t n)
    void fm_exp_shifted_f(const float* z, float* out, double* maxima, Py_ssize_t m, Py_ssize_t n)
    void fm_exp_shifted_d(const double* z, double* out, double* maxima, Py_ssize_t m,
                          Py_ssize_t n)
    double fm_sum_f(const float* x, Py_ssize_t n)
    double fm_sum_d(const double* x, Py_ssize_t n)
    double fm_exp_sum_f(const float* z, float mx, Py_ssize_t n)
    double fm_exp_sum_d(const double* z, double mx, Py_ssize_t n)
    int fm_all_finite_f(const float* x, Py_ssize_t n)
    int fm_all_finite_d(const double* x, Py_ssize_t n)
    double fm_exp_d(double x)


cdef inline double log_of_sum(double s) noexcept nogil:
    # log(s) for a softmax denominator s >= 1 (its largest term is exp(0) = 1), as
    # log1p(s - 1): s - 1 is exact for s >= 1, so nothing is lost. Calling log1p rather than
    # log keeps the extension off glibc 2.29's new log symbol, so the wheel stays
    # manylinux2014.
    return log1p(s - 1)


cdef inline bint all_finite(const floating* x, Py_ssize_t size) noexcept nogil:
    """True when x[0:size] holds no NaN and no inf."""
    if floating is float:
        return fm_all_finite_f(x, size)
    else:
        return fm_all_finite_d(x, size)


cdef inline floating row_max(const floating* z, Py_ssize_t n) noexcept nogil:
    # NaN entries never win the comparison; they still reach z - max below and turn the
    # row's sum, hence the whole row, into NaN.
    if floating is float:
        return fm_row_max_f(z, n)
    else:
        return fm_row_max_d(z, n)


cdef inline void exp_shifted(const floating* z, floating* out, double* maxima, Py_ssize_t m,
                             Py_ssize_t n) noexcept nogil:
    """out[i, j] := exp(z[i, j] - max_j z[i, :]) (out may be z); the row maxima go to
    maxima[0:m] unless it is NULL."""
    if floating is float:
        fm_exp_shifted_f(z, out, maxima, m, n)
    else:
        fm_exp_shifted_d(z, out, maxima, m, n)


cdef inline double row_sum(const floating* x, Py_ssize_t n) noexcept nogil:
    """sum(x[0:n]) accumulated in float64."""
    if floating is float:
        return fm_sum_f(x, n)
    else:
        return fm_sum_d(x, n)


cdef inline double sum_exp_minus(const floating* z, floating mx, Py_ssize_t n) noexcept nogil:
    """sum_j exp(z[j] - mx) in float64, nothing stored."""
    if floating is float:
        return fm_exp_sum_f(z, mx, n)
    else:
        return fm_exp_sum_d(z, mx, n)


cdef inline void softmax_rows(const floating* z, floating* p, Py_ssize_t m,
                              Py_ssize_t n) noexcept nogil:
    """p := softmax of each row of the m x n block z (p may be z)."""
    cdef Py_ssize_t i, j
    cdef floating inv
    cdef floating* row
    exp_shifted(z, p, NULL, m, n)
    for i in range(m):
        row = p + i * n
        inv = <floating>(1.0 / row_sum(row, n))
        for j in range(n):
            row[j] *= inv


cdef inline void log_softmax_rows(const floating* z, floating* out, Py_ssize_t m,
                                  Py_ssize_t n) noexcept nogil:
    """out := z - max - log(sum(exp(z - max))) for each row (out may be z)."""
    cdef Py_ssize_t i, j
    cdef floating mx, log_sum
    cdef const floating* zrow
    cdef floating* row
    for i in range(m):
        zrow = z + i * n
        row = out + i * n
        mx = row_max(zrow, n)
        # (z - max) - log_sum, never z - (max + log_sum): next to a max of 1e30 the small
        # log_sum would vanish in the sum.
        log_sum = <floating>log_of_sum(sum_exp_minus(zrow, mx, n))
        for j in range(n):
            row[j] = (zrow[j] - mx) - log_sum


cdef inline double softmax_cross_entropy(const floating* z, const int64_t* labels,
                                         const floating* targets, const floating* weights,
                                         double total_weight, floating* dz, double* maxima,
                                         Py_ssize_t m, Py_ssize_t n) noexcept nogil:
    """Mean softmax cross-entropy of logits z (m x n) and its gradient dz.

    z        IN   logits
    labels   IN   m class indices in [0, n)           } exactly one of the two is not NULL
    targets  IN   m x n target probabilities          }
    weights  IN   m sample weights, or NULL for all ones
    total_weight  sum of the weights (m when weights is NULL), > 0
    dz       OUT  m x n, d(loss)/dz = (softmax(z) * sum(t) - t) * w_i / total_weight
    maxima   SCRATCH m doubles (the row maxima)
    returns  sum_i w_i * loss_i / total_weight
    """
    cdef Py_ssize_t i, j
    cdef const floating* zrow
    cdef const floating* trow
    cdef floating* grow
    cdef floating mx, t
    cdef double total = 0, s, log_s, row_loss, scale, t_sum
    exp_shifted(z, dz, maxima, m, n)              # dz[i, j] = exp(z_ij - max_i)
    for i in range(m):
        zrow = z + i * n
        grow = dz + i * n
        mx = <floating>maxima[i]                  # exact: the max was a floating
        s = row_sum(grow, n)
        log_s = log_of_sum(s)
        scale = (weights[i] if weights != NULL else 1.0) / total_weight
        if labels != NULL:
            row_loss = log_s - (zrow[labels[i]] - mx)
            for j in range(n):
                grow[j] = <floating>(grow[j] * (scale / s))
            grow[labels[i]] -= <floating>scale
        else:
            trow = targets + i * n
            row_loss = 0
            t_sum = 0
            for j in range(n):
                t = trow[j]
                if t != 0:                       # 0 * (-inf logit) must add 0, not NaN
                    row_loss += t * (log_s - (zrow[j] - mx))
                    t_sum += t
            for j in range(n):
                grow[j] = <floating>((grow[j] / s * t_sum - trow[j]) * scale)
        total += row_loss * scale
    return total


cdef inline double mean_squared_error(const floating* pred, const floating* target,
                                      const floating* weights, double total_weight,
                                      floating* dpred, Py_ssize_t m,
                                      Py_ssize_t n) noexcept nogil:
    """Weighted mean over all elements of (pred - target)^2 and its gradient.

    loss  = sum_i w_i sum_j (pred_ij - target_ij)^2 / (total_weight * n)
    dpred = 2 w_i (pred_ij - target_ij) / (total_weight * n)
    """
    cdef Py_ssize_t i, j
    cdef double total = 0, squares, scale, d
    for i in range(m):
        scale = (weights[i] if weights != NULL else 1.0) / (total_weight * n)
        squares = 0
        for j in range(n):
            d = <double>pred[i * n + j] - <double>target[i * n + j]
            squares += d * d
            dpred[i * n + j] = <floating>(2 * scale * d)
        total += squares * scale
    return total


cdef inline bint targets_in_range(const floating* t, Py_ssize_t size,
                                  bint at_most_one) noexcept nogil:
    """True when every t[k] >= 0, and <= 1 when at_most_one (NaN fails both)."""
    cdef Py_ssize_t k
    for k in range(size):
        if not (t[k] >= 0) or (at_most_one and t[k] > 1):
            return False
    return True


cdef inline double log_positive(double x) noexcept nogil:
    # log(x) for x > 0 as e ln2 + log1p(f - 1) with x = f 2^e, f in [0.5, 1): f - 1 is exact
    # (Sterbenz), so this is as accurate as log1p itself, without glibc 2.29's log symbol.
    cdef int e
    cdef double f = frexp(x, &e)
    return e * 0.6931471805599453 + log1p(f - 1)


cdef inline double binary_cross_entropy(const floating* z, const floating* targets,
                                        const floating* weights, double total_weight,
                                        floating* dz, Py_ssize_t m,
                                        Py_ssize_t n) noexcept nogil:
    """Weighted mean over all elements of the sigmoid cross-entropy of logits z (m x n).

    z        IN   logits
    targets  IN   m x n targets in [0, 1]
    weights  IN   m sample weights, or NULL for all ones
    dz       OUT  m x n, (sigmoid(z) - t) * w_i / (total_weight * n); may be z
    returns  sum_i w_i sum_j loss_ij / (total_weight * n)
    """
    cdef Py_ssize_t i, j, k
    cdef double total = 0, row_loss, scale, zz, t, e
    for i in range(m):
        scale = (weights[i] if weights != NULL else 1.0) / (total_weight * n)
        row_loss = 0
        for j in range(n):
            k = i * n + j
            zz = z[k]
            t = targets[k]
            e = fm_exp_d(-zz if zz >= 0 else zz)          # exp(-|z|) in (0, 1]
            row_loss += ((zz if zz > 0 else 0.0) - t * zz) + log1p(e)
            # sigmoid(z) from the same exponential: 1 / (1 + e) or e / (1 + e)
            dz[k] = <floating>(((1.0 if zz >= 0 else e) / (1.0 + e) - t) * scale)
        total += row_loss * scale
    return total


cdef inline double poisson_deviance(const floating* z, const floating* targets,
                                    const floating* weights, double total_weight,
                                    floating* dz, Py_ssize_t m, Py_ssize_t n) noexcept nogil:
    """Weighted mean over all elements of the half Poisson deviance of mu = exp(z).

    z        IN   m x n log-means (the output layer's pre-activation)
    targets  IN   m x n non-negative counts or rates
    dz       OUT  m x n, (exp(z) - t) * w_i / (total_weight * n); may be z
    returns  sum_i w_i sum_j (exp(z_ij) - t z_ij + t log t - t) / (total_weight * n)
    """
    cdef Py_ssize_t i, j, k
    cdef double total = 0, row_loss, scale, zz, t, mu
    for i in range(m):
        scale = (weights[i] if weights != NULL else 1.0) / (total_weight * n)
        row_loss = 0
        for j in range(n):
            k = i * n + j
            zz = z[k]
            t = targets[k]
            mu = fm_exp_d(zz)
            row_loss += mu - t * zz
            if t > 0:
                row_loss += t * log_positive(t) - t
            dz[k] = <floating>((mu - t) * scale)
        total += row_loss * scale
    return total


cdef inline void sigmoid_outputs(const floating* z, floating* out, Py_ssize_t size,
                                 bint log) noexcept nogil:
    """out := sigmoid(z), or log(sigmoid(z)) = -(max(-z, 0) + log1p(exp(-|z|))) computed
    directly (finite where sigmoid underflows); out may be z."""
    cdef Py_ssize_t k
    cdef double zz, e
    for k in range(size):
        zz = z[k]
        e = fm_exp_d(-zz if zz >= 0 else zz)
        if log:
            out[k] = <floating>(-((-zz if zz < 0 else 0.0) + log1p(e)))
        else:
            out[k] = <floating>((1.0 if zz >= 0 else e) / (1.0 + e))


cdef inline void exp_outputs(const floating* z, floating* out, Py_ssize_t size) noexcept nogil:
    """out := exp(z) (the mean of an exponential output); out may be z."""
    cdef Py_ssize_t k
    for k in range(size):
        out[k] = <floating>fm_exp_d(z[k])
