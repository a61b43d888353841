# The Python side of fusedmlp/_codes.pxd: importing this module gives Python the enums
# declared there (fusedmlp._codes.Optimizer.OPT_ADAM, H_LR, ACT_RELU, ...).
#
# The explicit cimport of this module's own .pxd puts it in the build's dependency file
# (Cython's -M leaves it out otherwise), so a new code there rebuilds this module.
from fusedmlp._codes cimport LEAKY_SLOPE, SOFT_TOLERANCE, MAX_STEPS

LEAKY_RELU_SLOPE = LEAKY_SLOPE      # the slope of leaky_relu below zero
SOFT_TARGET_TOLERANCE = SOFT_TOLERANCE     # how far from 1 a row of soft targets may sum
MAX_COUNTED_STEPS = int(MAX_STEPS)        # the most steps an optimiser or a schedule counts
