# Optimiser updates, in place, over one flat parameter buffer.
#
# The model lays its parameters out as [W_0, W_1, ..., W_L-1, b_0, ..., b_L-1], so the first
# n_decay entries are the weights and the rest the biases: weight decay applies to the weights
# only (as in scikit-learn's `alpha`), and every update below is a single loop.
#
# The formulas are PyTorch's (torch.optim, defaults dampening=0, centered=False, lr_decay=0),
# with g = grad * grad_scale + weight_decay * p for the weights (grad_scale implements
# gradient-norm clipping; it is 1 otherwise). AdamW instead decays the weights directly:
# p := p * (1 - lr * weight_decay) before the Adam step.
#
# Hyper-parameters arrive as one float64 array, laid out by the H_* indices; the step count
# H_T is incremented here, so a whole training step needs no Python arithmetic.

from cython cimport floating
from libc.math cimport sqrt, sqrtf, pow

cdef enum:
    OPT_NONE = 0
    OPT_SGD = 1
    OPT_ADAM = 2
    OPT_ADAMW = 3
    OPT_RMSPROP = 4
    OPT_ADAGRAD = 5

cdef enum:
    H_LR = 0
    H_WEIGHT_DECAY = 1
    H_MOMENTUM = 2      # SGD
    H_NESTEROV = 3      # SGD: 0 or 1
    H_BETA1 = 2         # Adam, AdamW
    H_BETA2 = 3         # Adam, AdamW; RMSProp's alpha
    H_EPS = 4
    H_CLIP_NORM = 5     # clip the global gradient norm to this; 0 = off
    H_T = 6             # steps taken so far
    H_SIZE = 8


cdef inline double grad_norm(const floating* grad, Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t i
    cdef double s = 0
    for i in range(size):
        s += <double>grad[i] * grad[i]
    return sqrt(s)


cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline void _update_range(int kind, const double* hyper, floating wd, floating scale,
                               floating* p, const floating* grad, floating* state_a,
                               floating* state_b, Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t i
    cdef double t = hyper[H_T]
    cdef floating g, v, m, d
    cdef floating lr = <floating>hyper[H_LR], eps = <floating>hyper[H_EPS]
    cdef floating mom = <floating>hyper[H_MOMENTUM]
    cdef floating b1 = <floating>hyper[H_BETA1], b2 = <floating>hyper[H_BETA2]
    cdef floating step_size, root_bc2
    cdef bint nesterov = hyper[H_NESTEROV] != 0
    if kind == OPT_SGD and mom == 0:
        for i in range(size):
            p[i] -= lr * (grad[i] * scale + wd * p[i])
    elif kind == OPT_SGD:
        for i in range(size):
            g = grad[i] * scale + wd * p[i]
            v = mom * state_a[i] + g
            state_a[i] = v
            p[i] -= lr * (g + mom * v if nesterov else v)
    elif kind == OPT_ADAM or kind == OPT_ADAMW:
        step_size = <floating>(hyper[H_LR] / (1 - pow(hyper[H_BETA1], t)))
        root_bc2 = <floating>sqrt(1 - pow(hyper[H_BETA2], t))
        for i in range(size):
            g = grad[i] * scale + wd * p[i]
            m = b1 * state_a[i] + (1 - b1) * g
            v = b2 * state_b[i] + (1 - b2) * g * g
            state_a[i] = m
            state_b[i] = v
            d = _sqrt(v) / root_bc2 + eps
            p[i] -= step_size * m / d
    elif kind == OPT_RMSPROP:
        for i in range(size):
            g = grad[i] * scale + wd * p[i]
            v = b2 * state_a[i] + (1 - b2) * g * g
            state_a[i] = v
            p[i] -= lr * g / (_sqrt(v) + eps)
    elif kind == OPT_ADAGRAD:
        for i in range(size):
            g = grad[i] * scale + wd * p[i]
            v = state_a[i] + g * g
            state_a[i] = v
            p[i] -= lr * g / (_sqrt(v) + eps)


cdef inline void optimizer_update(int kind, double* hyper, floating* p, const floating* grad,
                                  floating* state_a, floating* state_b,
                                  Py_ssize_t size, Py_ssize_t n_decay) noexcept nogil:
    """One optimiser step over p[0:size]; state_a/state_b are the optimiser's buffers
    (size entries each, zero before the first step; unused ones may be NULL)."""
    cdef Py_ssize_t i
    cdef double scale = 1, norm
    cdef floating wd = <floating>hyper[H_WEIGHT_DECAY]
    if kind == OPT_NONE:
        return
    hyper[H_T] += 1
    if hyper[H_CLIP_NORM] > 0:
        norm = grad_norm(grad, size)
        if norm > hyper[H_CLIP_NORM]:
            scale = hyper[H_CLIP_NORM] / (norm + 1e-6)
    if kind == OPT_ADAMW:
        for i in range(n_decay):
            p[i] *= <floating>(1 - hyper[H_LR] * hyper[H_WEIGHT_DECAY])
        wd = 0
    # the weights (decayed), then the biases (not decayed)
    _update_range(kind, hyper, wd, <floating>scale, p, grad, state_a, state_b, n_decay)
    _update_range(kind, hyper, <floating>0, <floating>scale, p + n_decay, grad + n_decay,
                  state_a + n_decay if state_a != NULL else NULL,
                  state_b + n_decay if state_b != NULL else NULL, size - n_decay)
