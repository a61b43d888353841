"""Benchmark setup: BLAS pinned to one thread for the whole session.

One thread makes timings repeatable on a shared machine, and keeps NumPy's and SciPy's two
OpenBLAS thread pools from slowing each other down (docs/architecture.md, Threading). Run with

    python -m pytest benchmarks/ --benchmark-enable --benchmark-only -p no:cacheprovider

(``--benchmark-enable`` overrides the ``--benchmark-disable`` in pyproject's addopts).
"""

import os
import sys

import pytest
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(__file__))      # for `import reference_numpy`


@pytest.fixture(scope="session", autouse=True)
def _one_blas_thread():
    with threadpool_limits(limits=1):
        yield
