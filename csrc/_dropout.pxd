# Inverted dropout in the training step, its mask drawn from a counter-based generator
# (dropout.h: the mask of hidden layer l in a step is a function of (seed, step, l, row,
# column), drawn again in backward instead of stored).
#
#   rates   IN  n_layers rates in [0, 1) (the output layer's is 0), or NULL: no dropout
#   state   IN  [seed, step] (int64 bits), the model's; step counts the updates so far and is
#               advanced by the training step after its update (a gradient-only step keeps
#               the mask of the next update, so finite differences see one fixed mask)
#
# forward:  after layer l's bias/activation pass, rows [row0, row0 + rows) of its output
# backward: before activation_grad of layer l, the same rows of dA_l and of the stored output
# Both do nothing when rates is NULL or the layer's rate is 0 (one test per layer and pass).

from cython cimport floating
from libc.stdint cimport int64_t, uint64_t

cdef extern from "dropout.h" nogil:
    uint64_t fm_dropout_key(uint64_t seed, uint64_t step, int layer)
    uint64_t fm_dropout_threshold(double p)

# the loops that apply the mask (elementwise_impl.h, through the kernel table)
cdef extern from "elementwise.h" nogil:
    void fm_dropout_forward_f(float* a, Py_ssize_t row0, Py_ssize_t rows, Py_ssize_t n,
                              uint64_t key, uint64_t threshold, float scale)
    void fm_dropout_forward_d(double* a, Py_ssize_t row0, Py_ssize_t rows, Py_ssize_t n,
                              uint64_t key, uint64_t threshold, double scale)
    void fm_dropout_backward_f(float* d, float* a, Py_ssize_t row0, Py_ssize_t rows,
                               Py_ssize_t n, uint64_t key, uint64_t threshold, float scale,
                               float keep_fraction)
    void fm_dropout_backward_d(double* d, double* a, Py_ssize_t row0, Py_ssize_t rows,
                               Py_ssize_t n, uint64_t key, uint64_t threshold, double scale,
                               double keep_fraction)


cdef inline bint dropout_on(const double* rates, int layer) noexcept nogil:
    return rates != NULL and rates[layer] > 0


cdef inline bint layer_mask(const double* rates, const int64_t* state, int layer,
                            double* p, uint64_t* key) noexcept nogil:
    """Whether layer `layer` drops units in this step; if so its rate and mask key."""
    if not dropout_on(rates, layer):
        return False
    p[0] = rates[layer]
    key[0] = fm_dropout_key(<uint64_t>state[0], <uint64_t>state[1], layer)
    return True


cdef inline void dropout_forward(const double* rates, const int64_t* state, int layer,
                                 floating* a, Py_ssize_t row0, Py_ssize_t rows,
                                 Py_ssize_t n) noexcept nogil:
    """a (rows x n, rows row0.. of the batch) := mask * a / (1 - p), in place."""
    cdef double p
    cdef uint64_t key
    if not layer_mask(rates, state, layer, &p, &key):
        return
    if floating is float:
        fm_dropout_forward_f(a, row0, rows, n, key, fm_dropout_threshold(p), <float>(1 / (1 - p)))
    else:
        fm_dropout_forward_d(a, row0, rows, n, key, fm_dropout_threshold(p), 1 / (1 - p))


cdef inline void dropout_backward(const double* rates, const int64_t* state, int layer,
                                  floating* d, floating* a, Py_ssize_t row0, Py_ssize_t rows,
                                  Py_ssize_t n) noexcept nogil:
    """d := mask * d / (1 - p) (dL/dA before dropout) and a := mask * a * (1 - p) (the
    activation before dropout, for its derivative), in place, rows row0.. of the batch."""
    cdef double p
    cdef uint64_t key
    if not layer_mask(rates, state, layer, &p, &key):
        return
    if floating is float:
        fm_dropout_backward_f(d, a, row0, rows, n, key, fm_dropout_threshold(p),
                              <float>(1 / (1 - p)), <float>(1 - p))
    else:
        fm_dropout_backward_d(d, a, row0, rows, n, key, fm_dropout_threshold(p), 1 / (1 - p),
                              1 - p)
