"""bfloat16 compute (``compute_dtype="bfloat16"``): the check of the setting and the
availability report (docs/bf16.md).

A float32 model with ``compute_dtype="bfloat16"`` keeps its parameters, gradients, optimiser
state, activations, loss and update in float32; only the operands of its matrix products
are rounded to bfloat16 (round to nearest even) as they are packed, and the products are
summed and returned in float32 (csrc/bf16_gemm.h). It needs an x86-64 CPU with AVX512-BF16
(AMD Zen 4 and later, Intel Cooper Lake, Sapphire Rapids and later), found at run time. The
product is fusedmlp's own AVX512-BF16 kernel, or MKL's ``cblas_gemm_bf16bf16f32`` (the
``mkl`` package) on CPUs with AMX, where it uses the tiles; ``FUSEDMLP_BF16_GEMM=own|mkl``
forces one (csrc/_blas.pxd, ``_bf16_backend``).
"""

from __future__ import annotations

import warnings

import numpy as np

from . import _kernels
from ._validation import describe

__all__ = ["COMPUTE_DTYPES", "check_compute_dtype", "restore_compute_dtype", "why_unavailable",
           "availability"]

#: The values ``compute_dtype`` accepts (None: the model's own dtype).
COMPUTE_DTYPES = (None, "bfloat16")


def why_unavailable() -> str:
    """Why this process cannot compute in bfloat16 ("" when it can)."""
    return _kernels.bf16_why_not()


_KERNELS = {"own": "fusedmlp's AVX512-BF16 kernel (vdpbf16ps)",
            "mkl": "MKL's cblas_gemm_bf16bf16f32"}


def availability() -> dict:
    """show_config's ``bfloat16`` entry: ``available``, ``kernel`` and ``why`` (not), the
    product's ``backend`` (``"own"`` or ``"mkl"``) and ``backend_why``."""
    from ._network import BLAS
    why = why_unavailable()
    backend = BLAS["bf16_backend"]
    if why:
        return {"available": False, "kernel": None, "why": why, "backend": None,
                "backend_why": None}
    return {"available": True, "kernel": _KERNELS[backend["name"]],
            "why": "the CPU has AVX512-BF16 and the OS enables AVX-512",
            "backend": backend["name"], "backend_why": backend["why"]}


def check_compute_dtype(value, dtype, name="compute_dtype"):
    """``None`` or ``"bfloat16"`` for a model of `dtype`; raises naming what is wrong."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be None or 'bfloat16', got {describe(value)}")
    if value not in COMPUTE_DTYPES:
        raise ValueError(f"{name} must be None or 'bfloat16', got {describe(value)}")
    if np.dtype(dtype) != np.float32:
        raise ValueError(f"{name}='bfloat16' needs a float32 model (its parameters stay "
                         f"float32), got dtype={np.dtype(dtype).name}")
    why = why_unavailable()
    if why:
        raise ValueError(f"{name}='bfloat16' needs a CPU with AVX512-BF16 or AMX: {why}")
    return value


def restore_compute_dtype(value, dtype):
    """The compute dtype of a model read back (a file, a pickle): `value`, checked, or None
    with a warning where this CPU cannot run it (the model then computes in float32)."""
    if value is not None and why_unavailable() and np.dtype(dtype) == np.float32 \
            and value in COMPUTE_DTYPES:
        warnings.warn(f"the model was saved with compute_dtype={value!r}, which this CPU cannot "
                      f"run ({why_unavailable()}); it computes in float32 here",
                      RuntimeWarning, stacklevel=3)
        return None
    return check_compute_dtype(value, dtype)
