"""The pure-NumPy reference MLP the benchmarks compare against.

It lives in the package (``fusedmlp.reference``) so that the comparison command,
``python -m fusedmlp bench``, works from an installed wheel; this module re-exports it for
scripts in this directory.
"""

from fusedmlp.reference import (  # noqa: F401
    ACTIVATION_LAYERS, Affine, MeanSquaredLoss, NumpyAdam, NumpyMLP, NumpySGD, SoftmaxWithLoss,
)

__all__ = ["NumpyMLP", "NumpySGD", "NumpyAdam", "Affine", "SoftmaxWithLoss", "MeanSquaredLoss",
           "ACTIVATION_LAYERS"]
