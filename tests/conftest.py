"""Shared test setup.

BLAS threads are pinned to one for the whole session: results are then bit-reproducible, and
NumPy's and SciPy's two OpenBLAS thread pools cannot slow each other down (DESIGN.md §4).
"""

import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(scope="session", autouse=True)
def _one_blas_thread():
    with threadpool_limits(limits=1):
        yield
