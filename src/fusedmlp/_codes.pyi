# Type stub of the compiled module fusedmlp._codes (csrc/_codes.pyx over
# csrc/fusedmlp/_codes.pxd): the codes that cross the Python/C boundary. Keep it in step with
# the .pxd (tests/test_typing.py checks the names).
import enum

H_BETA1: int
H_BETA2: int
H_CLIP_NORM: int
H_EPS: int
H_LR: int
H_MOMENTUM: int
H_NESTEROV: int
H_SIZE: int
H_T: int
H_L1: int
H_WEIGHT_DECAY: int
LEAKY_RELU_SLOPE: float
S_FINAL: int
S_KIND: int
S_PEAK_LR: int
S_SIZE: int
S_STEP: int
S_TOTAL_STEPS: int
S_WARMUP_STEPS: int
SOFT_TARGET_TOLERANCE: float
MAX_COUNTED_STEPS: int


# The activation functions: an IntEnum whose members ACT_<NAME> (one per entry of
# fusedmlp.ACTIVATIONS) are read from elementwise.h through the .pxd and deliberately not
# repeated here, so a new activation needs no stub line (Python code iterates over them).
Activation: type[enum.IntEnum]


class Inference(enum.IntEnum):
    SCORES = 0
    PROBABILITIES = 1
    LOG_PROBABILITIES = 2


class Loss(enum.IntEnum):
    SOFTMAX_CROSS_ENTROPY = 0
    MEAN_SQUARED_ERROR = 1
    BINARY_CROSS_ENTROPY = 2
    POISSON_DEVIANCE = 3


class Optimizer(enum.IntEnum):
    OPT_NONE = 0
    OPT_SGD = 1
    OPT_ADAM = 2
    OPT_ADAMW = 3
    OPT_RMSPROP = 4
    OPT_ADAGRAD = 5


class Schedule(enum.IntEnum):
    SCHEDULE_CONSTANT = 0
    SCHEDULE_COSINE = 1
    SCHEDULE_LINEAR = 2


class Status(enum.IntEnum):
    OK = 0
    BAD_INPUT = 1
    BAD_LABEL = 2
    BAD_TARGET = 3
    BAD_LOSS = 4
    BAD_OUTPUT = 5
    BAD_RANGE = 6
    BAD_COUNTER = 7
