"""Pure-NumPy references of what fusedmlp computes (shipped for the benchmarks and the demo).

Nothing in the core package imports this subpackage; it imports only NumPy (and reads one
constant, the leaky-ReLU slope, from the compiled codes).
"""

from .numpy_mlp import (  # noqa: F401
    ACTIVATION_LAYERS, Affine, MeanSquaredLoss, NumpyAdam, NumpyMLP, NumpySGD, SoftmaxWithLoss,
    __all__,
)
