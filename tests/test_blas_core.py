"""FUSEDMLP_OPENBLAS_CORETYPE: the test-only knob that loads fusedmlp's private OpenBLAS
instance with a chosen core's kernels (csrc/_blas.pxd, docs/platforms.md).

Each case runs in a fresh interpreter (OpenBLAS picks its core once, when its library loads)
with the environment this process has, plus the knob: OPENBLAS_CORETYPE is never changed here.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

import fusedmlp
from fusedmlp import _kernels

pytestmark = pytest.mark.skipif(importlib.util.find_spec("scipy_openblas32") is None,
                                reason="the openblas backend (scipy-openblas32) is not installed")

REPORT = """
import ctypes, ctypes.util, json, os
before = os.environ.get("OPENBLAS_CORETYPE")
import fusedmlp
from threadpoolctl import threadpool_info
blas = fusedmlp.show_config(as_dict=True)["blas"]
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.getenv.restype = ctypes.c_char_p
seen = libc.getenv(b"OPENBLAS_CORETYPE")
print(json.dumps({
    "blas": blas, "environ": os.environ.get("OPENBLAS_CORETYPE"),
    "getenv": None if seen is None else seen.decode(),
    "others": sorted((os.path.basename(p["filepath"]), p.get("architecture"))
                     for p in threadpool_info()
                     if p["internal_api"] == "openblas" and p["filepath"] != blas["path"]),
    "own": [p.get("architecture") for p in threadpool_info() if p["filepath"] == blas["path"]],
}))
"""


def run(core):
    env = dict(os.environ, FUSEDMLP_BLAS="openblas")
    env.pop("FUSEDMLP_OPENBLAS_CORETYPE", None)
    if core is not None:
        env["FUSEDMLP_OPENBLAS_CORETYPE"] = core
    return subprocess.run([sys.executable, "-c", REPORT], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.fixture(scope="module")
def unforced():
    done = run(None)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("core", ["Haswell", "SkylakeX"])
def test_the_private_instance_runs_the_core_it_is_given_and_nothing_else_changes(core, unforced):
    if core == "SkylakeX" and "avx512" not in _kernels.isa_supported():
        pytest.skip("this CPU (or this build) runs no AVX-512")
    done = run(core)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["blas"]["name"] == "openblas"
    assert got["blas"]["core"] == core                    # openblas_get_corename
    assert got["own"] == [core]                           # threadpoolctl asks the library too
    # the process's OPENBLAS_CORETYPE (set or not) is what it was, for Python and for C,
    # and NumPy's and SciPy's OpenBLAS run the cores they run without the knob
    assert got["environ"] == got["getenv"] == os.environ.get("OPENBLAS_CORETYPE")
    assert got["others"] == unforced["others"]


def test_a_core_the_instance_does_not_run_is_an_import_error():
    # OpenBLAS itself auto-detects, silently, for a name it does not know
    done = run("NoSuchCore")
    assert done.returncode != 0
    assert "FUSEDMLP_OPENBLAS_CORETYPE='NoSuchCore', but" in done.stderr
    assert "runs the" in done.stderr


def test_show_config_reports_the_core():
    blas = fusedmlp.show_config(as_dict=True)["blas"]
    if blas["name"] == "openblas":
        assert isinstance(blas["core"], str) and blas["core"]
        forced = os.environ.get("FUSEDMLP_OPENBLAS_CORETYPE")
        if forced:
            assert blas["core"].lower() == forced.lower()
    else:
        assert blas["core"] is None
