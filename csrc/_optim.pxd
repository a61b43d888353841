# Optimiser updates, in place, over one flat parameter buffer.
#
# The model lays its parameters out as [W_0, W_1, ..., W_L-1, b_0, ..., b_L-1], so the first
# n_decay entries are the weights and the rest the biases: weight decay applies to the weights
# only (as in scikit-learn's `alpha`), and an update is two loops (weights, then biases).
#
# The formulas are PyTorch's (torch.optim, defaults dampening=0, centered=False, lr_decay=0),
# with g = grad * grad_scale + weight_decay * p + l1 * sign(p) for the weights (grad_scale implements
# gradient-norm clipping, PyTorch's clip_grad_norm_: clip / (norm + 1e-6) when the norm
# exceeds clip; 1 otherwise). AdamW instead decays the weights directly:
# p := p * (1 - lr * weight_decay) before the Adam step. The loops are in elementwise.h.
# The L1 subgradient (sign(0) = 0: a zero weight gets none) is added into the weights'
# gradient buffer before the update loop, as l1 / grad_scale so that clipping leaves it as
# it is; so after an update with l1 > 0 the gradient buffer holds it too. Its penalty
# l1 * sum |W| (l1_penalty) is what the training step adds to the loss it reports.
#
# Hyper-parameters arrive as one float64 array, laid out by the H_* slots (declared with the
# OPT_* kinds in fusedmlp/_codes.pxd); the step count H_T is incremented here, so a whole
# training step needs no Python arithmetic.

from cython cimport floating
from libc.math cimport sqrt

from _fpenv cimport fm_flush_subnormals_f, fm_flush_subnormals_d
from fusedmlp._codes cimport (OPT_NONE, OPT_SGD, OPT_ADAM, OPT_ADAMW, OPT_RMSPROP,
                             OPT_ADAGRAD, H_LR, H_WEIGHT_DECAY, H_MOMENTUM, H_NESTEROV,
                             H_BETA1, H_BETA2, H_EPS, H_CLIP_NORM, H_T, H_L1)


cdef inline int n_states(int kind) noexcept nogil:
    """How many parameter-sized state buffers optimiser `kind` keeps (state_a, state_b)."""
    if kind == OPT_ADAM or kind == OPT_ADAMW:
        return 2
    if kind == OPT_NONE:
        return 0
    return 1


cdef extern from "elementwise.h" nogil:
    void fm_sgd_f(float* p, const float* g, float* v, Py_ssize_t n, float lr, float wd,
                  float scale, float mom, int nesterov)
    void fm_sgd_d(double* p, const double* g, double* v, Py_ssize_t n, double lr, double wd,
                  double scale, double mom, int nesterov)
    void fm_adam_f(float* p, const float* g, float* m, float* v, Py_ssize_t n, float step_size,
                   float root_bc2, float b1, float gain1, float b2, float gain2, float eps,
                   float wd, float scale)
    void fm_adam_d(double* p, const double* g, double* m, double* v, Py_ssize_t n,
                   double step_size, double root_bc2, double b1, double gain1, double b2,
                   double gain2, double eps, double wd, double scale)
    void fm_rms_f(float* p, const float* g, float* v, Py_ssize_t n, float lr, float decay,
                  float gain, float eps, float wd, float scale)
    void fm_rms_d(double* p, const double* g, double* v, Py_ssize_t n, double lr, double decay,
                  double gain, double eps, double wd, double scale)
    double fm_sum_sq_f(const float* x, Py_ssize_t n)
    double fm_sum_sq_d(const double* x, Py_ssize_t n)


cdef inline double power(double base, double steps) noexcept nogil:
    # base ** steps for a whole number of steps, by repeated squaring (a few roundings for
    # any realistic step count). libm's pow would tie the wheel to glibc 2.29's new symbol.
    cdef unsigned long long n = <unsigned long long>steps
    cdef double result = 1
    while n:
        if n & 1:
            result *= base
        base *= base
        n >>= 1
    return result


cdef struct UpdateStep:
    # What one step's update computes once (optimizer_prepare) for every range it updates
    int kind                   # OPT_*
    const double* hyper        # the H_* slots
    double scale               # the gradient scale: clipping's, else 1
    double step_size           # Adam/AdamW: lr / (1 - beta1^t)
    double root_bc2            # Adam/AdamW: sqrt(1 - beta2^t)


cdef inline void _update_range(const UpdateStep* u, floating wd, floating* p,
                               const floating* grad, floating* state_a, floating* state_b,
                               Py_ssize_t size) noexcept nogil:
    cdef int kind = u.kind
    cdef const double* hyper = u.hyper
    cdef floating scale = <floating>u.scale
    cdef floating lr = <floating>hyper[H_LR], eps = <floating>hyper[H_EPS]
    cdef floating b1 = <floating>hyper[H_BETA1], b2 = <floating>hyper[H_BETA2]
    # the moving averages' gains 1 - beta in double, rounded once: 1 - <float>0.999 would be
    # 1.3e-5 away from 0.001 (beta's own rounding, magnified by 1 / (1 - beta))
    cdef floating gain1 = <floating>(1 - hyper[H_BETA1])
    cdef floating gain2 = <floating>(1 - hyper[H_BETA2])
    cdef floating step_size = <floating>u.step_size, root_bc2 = <floating>u.root_bc2
    if kind == OPT_SGD:
        if floating is float:
            fm_sgd_f(p, grad, state_a, size, lr, wd, scale, <float>hyper[H_MOMENTUM],
                     hyper[H_NESTEROV] != 0)
        else:
            fm_sgd_d(p, grad, state_a, size, lr, wd, scale, hyper[H_MOMENTUM],
                     hyper[H_NESTEROV] != 0)
    elif kind == OPT_ADAM or kind == OPT_ADAMW:
        if floating is float:
            fm_adam_f(p, grad, state_a, state_b, size, step_size, root_bc2, b1, gain1, b2, gain2,
                      eps, wd, scale)
        else:
            fm_adam_d(p, grad, state_a, state_b, size, step_size, root_bc2, b1, gain1, b2, gain2,
                      eps, wd, scale)
    elif kind == OPT_RMSPROP or kind == OPT_ADAGRAD:
        # AdaGrad is RMSProp with decay 1 and gain 1: v = v + g^2
        if kind == OPT_ADAGRAD:
            b2 = gain2 = 1
        if floating is float:
            fm_rms_f(p, grad, state_a, size, lr, b2, gain2, eps, wd, scale)
        else:
            fm_rms_d(p, grad, state_a, size, lr, b2, gain2, eps, wd, scale)


cdef extern from "elementwise.h" nogil:      # the L1 loops (elementwise_impl.h)
    void fm_l1_subgradient_f(float* g, const float* p, float l1, Py_ssize_t n)
    void fm_l1_subgradient_d(double* g, const double* p, double l1, Py_ssize_t n)
    double fm_abs_sum_f(const float* p, Py_ssize_t n)
    double fm_abs_sum_d(const double* p, Py_ssize_t n)


cdef inline double l1_penalty(int kind, const double* hyper, const floating* p,
                              Py_ssize_t n_weights) noexcept nogil:
    """hyper[H_L1] * sum |p[0:n_weights]| (in float64) for an update of `kind`; 0 when the
    L1 penalty is off or there is no update."""
    if kind == OPT_NONE or hyper[H_L1] == 0:
        return 0
    if floating is float:
        return hyper[H_L1] * fm_abs_sum_f(p, n_weights)
    else:
        return hyper[H_L1] * fm_abs_sum_d(p, n_weights)


cdef inline void add_l1_subgradient(floating* grad, const floating* p, floating l1,
                                    Py_ssize_t n) noexcept nogil:
    """grad += l1 * sign(p) over n entries (nothing where p is 0)."""
    if floating is float:
        fm_l1_subgradient_f(grad, p, l1, n)
    else:
        fm_l1_subgradient_d(grad, p, l1, n)


cdef inline UpdateStep optimizer_prepare(int kind, double* hyper, const floating* grad,
                                         Py_ssize_t size) noexcept nogil:
    """The once-per-step part of an update: counts the step and computes what every range
    of it shares (the gradient scale of gradient-norm clipping, 1 without; Adam's bias
    corrections). Then optimizer_apply over any split of [0, size)."""
    cdef UpdateStep u
    cdef double norm, t
    u.kind = kind
    u.hyper = hyper
    u.scale = 1
    u.step_size = 0
    u.root_bc2 = 0
    if kind == OPT_NONE:
        return u
    hyper[H_T] += 1
    t = hyper[H_T]
    if hyper[H_CLIP_NORM] > 0:
        if floating is float:
            norm = sqrt(fm_sum_sq_f(grad, size))
        else:
            norm = sqrt(fm_sum_sq_d(grad, size))
        if norm > hyper[H_CLIP_NORM]:
            u.scale = hyper[H_CLIP_NORM] / (norm + 1e-6)
    if kind == OPT_ADAM or kind == OPT_ADAMW:
        u.step_size = hyper[H_LR] / (1 - power(hyper[H_BETA1], t))
        u.root_bc2 = sqrt(1 - power(hyper[H_BETA2], t))
    return u


cdef inline void optimizer_apply(const UpdateStep* u, floating* p, const floating* grad,
                                 floating* state_a, floating* state_b, Py_ssize_t lo,
                                 Py_ssize_t hi, Py_ssize_t n_decay) noexcept nogil:
    """The update of p[lo:hi] after optimizer_prepare; elementwise, so the worker pool may
    split [0, size) into ranges and the result does not depend on the split."""
    cdef Py_ssize_t i, w_hi = min(hi, n_decay), b_lo = max(lo, n_decay)
    cdef const double* hyper = u.hyper
    cdef floating wd = <floating>hyper[H_WEIGHT_DECAY]
    if u.kind == OPT_NONE or hi <= lo:
        return
    if u.kind == OPT_ADAMW:
        for i in range(lo, w_hi):
            p[i] *= <floating>(1 - hyper[H_LR] * hyper[H_WEIGHT_DECAY])
        wd = 0
    # the weights (decayed), then the biases (not decayed)
    if w_hi > lo and hyper[H_L1] != 0:
        add_l1_subgradient(<floating*>grad + lo, p + lo, <floating>(hyper[H_L1] / u.scale),
                           w_hi - lo)
    if w_hi > lo:
        _update_range(u, wd, p + lo, grad + lo,
                      state_a + lo if state_a != NULL else NULL,
                      state_b + lo if state_b != NULL else NULL, w_hi - lo)
    if hi > b_lo:
        _update_range(u, <floating>0, p + b_lo, grad + b_lo,
                      state_a + b_lo if state_a != NULL else NULL,
                      state_b + b_lo if state_b != NULL else NULL, hi - b_lo)
    # Where the hardware has no flush-to-zero mode (fpenv.h), the state of always-zero
    # gradients would decay into subnormals: flush it here (a no-op elsewhere).
    if floating is float:
        if state_a != NULL:
            fm_flush_subnormals_f(state_a + lo, hi - lo)
        if state_b != NULL:
            fm_flush_subnormals_f(state_b + lo, hi - lo)
    else:
        if state_a != NULL:
            fm_flush_subnormals_d(state_a + lo, hi - lo)
        if state_b != NULL:
            fm_flush_subnormals_d(state_b + lo, hi - lo)


cdef inline void optimizer_update(int kind, double* hyper, floating* p, const floating* grad,
                                  floating* state_a, floating* state_b,
                                  Py_ssize_t size, Py_ssize_t n_decay) noexcept nogil:
    """One optimiser step over p[0:size]; state_a/state_b are the optimiser's buffers
    (size entries each, zero before the first step; unused ones may be NULL)."""
    cdef UpdateStep u = optimizer_prepare(kind, hyper, grad, size)
    optimizer_apply(&u, p, grad, state_a, state_b, 0, size, n_decay)
