"""Shared test setup.

BLAS threads are pinned to one for the whole session: results are then bit-reproducible, and
NumPy's and SciPy's two OpenBLAS thread pools cannot slow each other down (docs/architecture.md, Threading).
"""

import os
import sys

import pytest
from hypothesis import settings
from threadpoolctl import threadpool_limits

# The float64 NumPy oracle (tests/oracle.py) is imported by name, also when the suite
# runs against an installed wheel with --import-mode=importlib (tools/check_wheel.sh).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# In CI (CI=true) the property tests draw the same examples every run: a failure there is
# reproducible, never a one-off draw. Locally they explore new examples each run.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session", autouse=True)
def _one_blas_thread():
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def c_client(tmp_path_factory):
    """The C API client (tests/embedding/c_client.c), built once for the session."""
    from extensions import build_c_client

    return build_c_client(tmp_path_factory.mktemp("c_client"))
