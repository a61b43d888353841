# Per-step learning-rate schedules, evaluated inside the compiled epoch (_network.pyx epoch()).
#
# The schedule is a float64 array laid out by the S_* slots of fusedmlp/_codes.pxd; step s
# (counting from 0 over every step the schedule has driven, S_STEP) trains with
#   warm-up (s + 1 <= W):  peak * (s + 1) / W
#   then, p = (s + 1 - W) / (T - W), 1 once s + 1 >= T:
#     constant: peak;  cosine: peak * (final + (1 - final) * (1 + cos(pi p)) / 2);
#     linear: peak * (final + (1 - final) * (1 - p))
# and never below 1e-300 (a rate of 0 is not a legal learning rate). So the warm-up reaches
# the peak on its last step and the decay reaches final x peak on the schedule's last step,
# staying there if training goes on. fusedmlp.optim.WarmupLR.rate is the same arithmetic in
# Python, operation for operation (its tests compare the two bit for bit).

from libc.math cimport cos

from fusedmlp._codes cimport (S_KIND, S_PEAK_LR, S_WARMUP_STEPS, S_TOTAL_STEPS, S_FINAL,
                             S_STEP, SCHEDULE_CONSTANT, SCHEDULE_COSINE)

cdef extern from *:
    """
    #define FUSEDMLP_PI 3.141592653589793
    """
    const double FUSEDMLP_PI


cdef inline double scheduled_rate(const double* schedule) noexcept nogil:
    """The learning rate of the next step of `schedule` (step schedule[S_STEP])."""
    cdef double step = schedule[S_STEP] + 1, warmup = schedule[S_WARMUP_STEPS]
    cdef double total = schedule[S_TOTAL_STEPS], peak = schedule[S_PEAK_LR]
    cdef double final = schedule[S_FINAL], progress, shape, rate
    cdef int kind = <int>schedule[S_KIND]
    if step <= warmup:
        rate = peak * (step / warmup)
    elif kind == SCHEDULE_CONSTANT:
        rate = peak
    else:
        progress = 1.0 if step >= total else (step - warmup) / (total - warmup)
        if kind == SCHEDULE_COSINE:
            shape = 0.5 * (1.0 + cos(FUSEDMLP_PI * progress))
        else:
            shape = 1.0 - progress
        rate = peak * (final + (1.0 - final) * shape)
    return rate if rate > 1e-300 else 1e-300
