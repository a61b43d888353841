"""fusedmlp's worker pool as Python sees it: the cores it may use, the ``n_threads`` setting,
and threadpoolctl's view of it (see docs/threading.md).

The pool itself is C (csrc/pool.h): persistent worker threads, started lazily, shared by every
model in the process. A model's ``n_threads`` says into how many parts each training step and
inference call is split; ``"auto"`` chooses from the work of the call (one thread for small
ones) and never more than the usable cores, lowered by ``threadpoolctl.threadpool_limits``.
The cores are given to the compiled core here at import; on Linux it re-reads the affinity
itself (csrc/fm_cores.h), so a mask changed later is obeyed.
"""

from __future__ import annotations

import os

import numpy as np
from threadpoolctl import LibController, register

from . import _network
from ._validation import describe

__all__ = ["usable_cores", "check_n_threads", "pool_info"]


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_network.set_cores(usable_cores())


def check_n_threads(value, name="n_threads"):
    """``"auto"`` or a positive int, as given (the compiled core reads "auto" as 0)."""
    if isinstance(value, str) and value == "auto":
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be 'auto' or a positive integer, got {describe(value)}")
    if not 1 <= value <= 4096:
        raise ValueError(f"{name} must be 'auto' or an integer in [1, 4096], got {value}")
    return int(value)


# A batch-split backward (csrc/_parallel.pxi) gives every part but the first a gradient-sized
# buffer: up to this many parts use it (more parts split the backward by weight rows alone).
BATCH_SPLIT_PARTS = 4


def bind(network, n_threads, max_width):
    """Give a compiled Network its thread setting and the scratch its parts need."""
    parts = max(usable_cores(), 1 if n_threads == "auto" else n_threads)
    partials = (min(parts, BATCH_SPLIT_PARTS) - 1) * network.n_params
    network.set_threads(0 if n_threads == "auto" else n_threads,
                        np.zeros(parts * max_width, np.float64),
                        np.zeros(partials, np.float64 if network.is_double else np.float32))


def pool_info() -> dict:
    return {
        "pool": "fusedmlp's own (pthreads), shared by all models; started lazily",
        "workers_started": _network.pool_size(),
        "usable_cores": usable_cores(),
        "auto_limit": _network.thread_limit(),
        "blas_threads": ("SciPy's OpenBLAS pool (process-wide; 'auto' stays at 1 thread)"
                         if _network.BLAS["name"] == "scipy" else
                         "1 per fusedmlp thread (fusedmlp's own BLAS instance)"),
    }


# threadpoolctl: a controller for fusedmlp's pool, so that threadpool_info() lists it and
# threadpool_limits(n) caps what "auto" uses (explicit n_threads are obeyed as given).
class _PoolController(LibController):
    user_api = "fusedmlp"
    internal_api = "fusedmlp"
    filename_prefixes = ("_network",)
    check_symbols = ("fusedmlp_get_num_threads", "fusedmlp_set_num_threads")

    def get_num_threads(self):
        return self.dynlib.fusedmlp_get_num_threads()

    def set_num_threads(self, num_threads):
        self.dynlib.fusedmlp_set_num_threads(int(num_threads))

    def get_version(self):
        from ._version import __version__
        return __version__


register(_PoolController)
