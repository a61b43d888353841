# The Python side of fusedmlp/_codes.pxd: importing this module gives Python the enums
# declared there (fusedmlp._codes.Optimizer.OPT_ADAM, H_LR, ACT_RELU, ...).

LEAKY_RELU_SLOPE = LEAKY_SLOPE      # the slope of leaky_relu below zero
