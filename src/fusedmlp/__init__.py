"""fusedmlp: dense neural networks whose training step is one compiled call over BLAS.

Array functions (NumPy conventions): softmax, log_softmax, one_hot, one_hot_encoding,
sigmoid, relu, tanh, step, leaky_relu, elu, softplus.
Layers and model: Dense, SoftmaxCrossEntropy, MeanSquaredError, MLP, load, gradient_check.
Optimisers: SGD, Adam, AdamW, RMSProp, AdaGrad. scikit-learn estimators: fusedmlp.sklearn.

BLAS threads: fusedmlp calls the OpenBLAS that SciPy ships. Pin its threads (and NumPy's)
with ``threadpoolctl.threadpool_limits(1)`` for small networks and reproducible timing.
"""

from .functional import (
    ACTIVATIONS, elu, leaky_relu, log_softmax, one_hot, one_hot_encoding, relu, sigmoid,
    softmax, softplus, step, tanh,
)
from .gradcheck import gradient_check
from .io import load
from .layers import Dense, MeanSquaredError, SoftmaxCrossEntropy
from .model import MLP
from .optim import (
    SGD, AdaGrad, Adam, AdamW, ConstantLR, CosineLR, Optimizer, ReduceLROnPlateau, RMSProp,
    StepLR,
)

from ._version import __version__

__all__ = [
    "ACTIVATIONS", "softmax", "log_softmax", "one_hot", "one_hot_encoding", "sigmoid", "relu",
    "tanh", "step", "leaky_relu", "elu", "softplus",
    "Dense", "SoftmaxCrossEntropy", "MeanSquaredError", "MLP", "load", "gradient_check",
    "Optimizer", "SGD", "Adam", "AdamW", "RMSProp", "AdaGrad",
    "ConstantLR", "StepLR", "CosineLR", "ReduceLROnPlateau",
]
