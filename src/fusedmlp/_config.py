"""fusedmlp.show_config(): what this process runs fusedmlp's arithmetic with."""

from __future__ import annotations

import json

__all__ = ["show_config"]


def show_config(as_dict: bool = False):
    """Print (or return, with ``as_dict=True``) fusedmlp's runtime configuration.

    Keys: ``version``; ``blas`` (``name`` of the backend -- "openblas" (fusedmlp's private
    single-threaded instance of the scipy-openblas32 library), "mkl" or "scipy" -- its
    ``version``, the ``path`` it was loaded from, ``core``: the OpenBLAS core (kernel set)
    the private instance runs, as its ``openblas_get_corename`` reports it (e.g. "Haswell",
    "SkylakeX"; None for "mkl" and "scipy"), ``skipped``: why earlier default
    candidates were not used, and ``own_inference_gemm``: whether inference's float32
    products use fusedmlp's own kernel instead, ``FUSEDMLP_OWN_GEMM=0`` to turn it
    off); ``elementwise_isa`` (the instruction-set variant of the
    elementwise loops: "baseline", "avx2", "avx512" or "neon"); ``elementwise_isa_supported``
    (the variants this build has and this CPU runs; ``FUSEDMLP_ISA`` forces one of them);
    ``kernels`` (the variant each kernel family runs: ``elementwise`` as above,
    ``small_gemm`` -- the own inference product, "avx512", "avx2", "neon" or "blas" --,
    ``bf16_gemm`` -- "avx512bf16" or "portable" --, the ``cpu_features`` the CPU probe found
    usable, and ``forced``: ``FUSEDMLP_ISA`` as read, which caps every family, or None);
    ``threads`` (fusedmlp's worker pool: workers started, usable cores, the most threads
    ``n_threads="auto"`` uses now, the BLAS's threads); ``bfloat16`` (``available``: whether
    ``compute_dtype="bfloat16"`` runs here, the ``kernel`` it uses, ``why`` it does or
    does not, the product's ``backend``, "own" or "mkl", and ``backend_why``). Set
    ``FUSEDMLP_BLAS=openblas|mkl|scipy`` before importing fusedmlp to force a backend, and
    ``FUSEDMLP_BF16_GEMM=own|mkl`` the bfloat16 product's. For tests only,
    ``FUSEDMLP_OPENBLAS_CORETYPE=<core>`` makes the private OpenBLAS instance load that
    core's kernels (OpenBLAS's ``OPENBLAS_CORETYPE``, applied to that one library while it
    loads, the process's value restored at once; NumPy's and SciPy's OpenBLAS keep theirs);
    if the instance does not then run a core of that name (an unknown name, an alias such as
    "Zen", or a core this CPU lacks), importing fusedmlp raises ImportError
    (docs/platforms.md).

    Examples
    --------
    >>> import fusedmlp
    >>> fusedmlp.show_config(as_dict=True)["blas"]["name"] in ("openblas", "mkl", "scipy")
    True
    """
    from . import _kernels, _network
    from ._version import __version__
    from .threads import pool_info
    from .bf16 import availability
    blas = _network.BLAS
    info = {
        "version": __version__,
        "blas": {"name": blas["name"], "version": blas["version"], "path": blas["path"],
                 "core": blas["core"], "skipped": dict(blas["tried"]),
                 "own_inference_gemm": _network.own_gemm()},
        "elementwise_isa": _kernels.isa(),
        "elementwise_isa_supported": list(_kernels.isa_supported()),
        "kernels": {"elementwise": _kernels.isa(), **_network.kernel_variants()},
        "threads": pool_info(),
        "bfloat16": availability(),
    }
    if as_dict:
        return info
    print(json.dumps(info, indent=2))
    return None
