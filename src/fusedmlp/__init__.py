"""fusedmlp: dense neural networks whose training step is one compiled call over BLAS.

Array functions (NumPy conventions): softmax, log_softmax, one_hot, one_hot_encoding,
sigmoid, relu, tanh, step, leaky_relu, elu, softplus.
Layers and model: Dense, SoftmaxCrossEntropy, MeanSquaredError, MLP, load, gradient_check.
Optimisers: SGD, Adam, AdamW, RMSProp, AdaGrad. scikit-learn estimators: fusedmlp.sklearn.
Embedding in compiled code: get_include() (the C API's header fusedmlp.h), fusedmlp/capi.pxd.

BLAS: fusedmlp calls its own single-threaded instance of the scipy-openblas32 library (or MKL,
or SciPy's BLAS); ``fusedmlp.show_config()`` says which. NumPy's and SciPy's BLAS thread
settings are never changed.
"""

from . import functional as _functional
from .functional import *  # noqa: F401,F403  (the array functions and ACTIVATIONS: its __all__)
from .gradcheck import gradient_check
from .layers import Dense, MeanSquaredError, SoftmaxCrossEntropy
from ._config import show_config
from .model import MLP, load
from .export_c import export_c
from .optim import (
    SGD, AdaGrad, Adam, AdamW, ConstantLR, CosineLR, Optimizer, ReduceLROnPlateau, RMSProp,
    StepLR, WarmupLR,
)

from ._version import __version__


def get_include() -> str:
    """The directory of fusedmlp's C header ``fusedmlp.h``, for extensions that use the C API
    or ``cimport fusedmlp.capi`` (like ``numpy.get_include()``); see docs/embedding.md."""
    import os

    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "include")


__all__ = [
    *_functional.__all__,
    "Dense", "SoftmaxCrossEntropy", "MeanSquaredError", "MLP", "load", "gradient_check",
    "Optimizer", "SGD", "Adam", "AdamW", "RMSProp", "AdaGrad",
    "ConstantLR", "StepLR", "CosineLR", "ReduceLROnPlateau", "WarmupLR", "show_config",
    "get_include", "export_c",
]
