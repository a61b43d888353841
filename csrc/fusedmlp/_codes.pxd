# Every number that crosses the Python/C boundary, declared once.
#
# Cython code cimports the names (`from fusedmlp._codes cimport OPT_ADAM, H_LR, BAD_LOSS`);
# Python code imports them from the compiled module fusedmlp._codes (csrc/_codes.pyx:
# `from ._codes import Status, H_LR`), whose members are these very constants. (This file
# sits in csrc/fusedmlp/ because Cython finds the .pxd of module fusedmlp._codes by its
# package path.) The Python tables of names (fusedmlp.ACTIVATIONS,
# the model's outputs, the optimiser classes, the status messages) are built from these
# enums, and tests/test_codes.py checks that every name the Python layer accepts maps to a
# code and back.
#
# Activation numbers are the C header's (elementwise.h switches on them): this file only
# names them, so a mismatch cannot compile. Everything else is numbered here.

cdef extern from "elementwise.h":
    # The activation functions (ACT_<NAME>: fusedmlp.ACTIVATIONS["<name>"]); Python sees them
    # as the members of fusedmlp._codes.Activation.
    cpdef enum Activation "fm_activation":
        ACT_IDENTITY "FM_IDENTITY"
        ACT_RELU "FM_RELU"
        ACT_SIGMOID "FM_SIGMOID"
        ACT_TANH "FM_TANH"
        ACT_STEP "FM_STEP"
        ACT_LEAKY_RELU "FM_LEAKY_RELU"
        ACT_ELU "FM_ELU"
        ACT_SOFTPLUS "FM_SOFTPLUS"
    # leaky_relu(z) = slope * z for z < 0
    const double LEAKY_SLOPE "FM_LEAKY_SLOPE"


# The loss a network trains with (one per MLP output kind, see fusedmlp.model.OUTPUTS).
# The output activation is the loss's canonical link, so d loss / d z of the last layer is
# (output - target), scaled.
cpdef enum Loss:
    SOFTMAX_CROSS_ENTROPY = 0   # output "softmax"
    MEAN_SQUARED_ERROR = 1      # output "identity"
    BINARY_CROSS_ENTROPY = 2    # output "sigmoid": independent logistic units
    POISSON_DEVIANCE = 3        # output "exp": half Poisson deviance of exp(z)


# Optimiser kinds (csrc/_optim.pxd implements them; fusedmlp.optim has one class each).
cpdef enum Optimizer:
    OPT_NONE = 0        # no update: a gradient-only step
    OPT_SGD = 1
    OPT_ADAM = 2
    OPT_ADAMW = 3
    OPT_RMSPROP = 4
    OPT_ADAGRAD = 5


# Slots of the float64 hyper-parameter array an optimiser hands to the compiled step
# (anonymous: Cython indexes arrays with plain ints only).
cpdef enum:
    H_LR = 0
    H_WEIGHT_DECAY = 1
    H_MOMENTUM = 2      # SGD
    H_NESTEROV = 3      # SGD: 0 or 1
    H_BETA1 = 2         # Adam, AdamW
    H_BETA2 = 3         # Adam, AdamW; RMSProp's alpha
    H_EPS = 4
    H_CLIP_NORM = 5     # clip the global gradient norm to this; 0 = off
    H_T = 6             # steps taken so far (incremented by the compiled update)
    H_L1 = 7            # L1 penalty on the weights: l1 * sign(W) added to their gradient
    H_SIZE = 8          # entries of the array


# What a compiled training step or inference call returns (the Python layer raises).
cpdef enum Status:
    OK = 0
    BAD_INPUT = 1       # X holds NaN or inf
    BAD_LABEL = 2       # a label outside [0, n_classes)
    BAD_TARGET = 3      # targets hold NaN or inf
    BAD_LOSS = 4        # the loss is NaN or inf: no update was applied
    BAD_OUTPUT = 5      # inference outputs NaN or inf (the parameters are, or overflow)
    BAD_RANGE = 6       # a target outside the loss's domain ([0, 1]; >= 0 for Poisson; soft
                        # targets of softmax: rows of probabilities, SOFT_TARGET_TOLERANCE)
    BAD_COUNTER = 7     # a step would take a counter past its range (the optimiser's step
                        # count or a WarmupLR's past MAX_STEPS, dropout_step past 2**63 - 1):
                        # nothing was updated


# How far from 1 a row of soft targets (class probabilities) may sum: the slack for rounding in
# targets computed in float32 (label smoothing, averaged one-hot rows). The compiled step and
# Python's check (fusedmlp._validation.check_distribution) both read this one number.
cdef extern from *:
    """
    #define FM_SOFT_TARGET_TOLERANCE 1e-4
    #define FM_MAX_STEPS 9007199254740992.0
    """
    const double SOFT_TOLERANCE "FM_SOFT_TARGET_TOLERANCE"
    # The most steps an optimiser (hyper[H_T]) or a schedule (S_STEP) may count: 2**53, the
    # float64 counts' last exact integer. The setters, the model file and the compiled step
    # (which refuses a step past it with BAD_COUNTER) agree on [0, MAX_STEPS]; dropout_step,
    # an int64, lies in [0, 2**63) the same way.
    const double MAX_STEPS "FM_MAX_STEPS"


# What inference writes into its output: the last layer's pre-activation, its output
# activation (probabilities, or the mean exp(z) of an exponential output), log-probabilities.
cpdef enum Inference:
    SCORES = 0
    PROBABILITIES = 1
    LOG_PROBABILITIES = 2


# A per-step learning-rate schedule (fusedmlp.optim.WarmupLR): a float64 array that the
# compiled epoch reads before every step (the step's rate goes into hyper[H_LR]) and whose
# S_STEP it advances after every step trained (csrc/_schedule.pxd has the formula).
cpdef enum Schedule:
    SCHEDULE_CONSTANT = 0   # warm-up, then the peak rate
    SCHEDULE_COSINE = 1     # warm-up, then cosine decay to final x peak
    SCHEDULE_LINEAR = 2     # warm-up, then linear decay to final x peak

cpdef enum:
    S_KIND = 0              # a Schedule
    S_PEAK_LR = 1           # the rate at the end of the warm-up
    S_WARMUP_STEPS = 2
    S_TOTAL_STEPS = 3       # warm-up and decay together
    S_FINAL = 4             # the last rate, as a fraction of the peak
    S_STEP = 5              # steps taken so far (advanced by the compiled epoch)
    S_SIZE = 8              # entries of the array
