"""The BLAS backends behind csrc/_blas.pxd, FUSEDMLP_BLAS, show_config, and the promise that
fusedmlp never changes NumPy's or SciPy's BLAS thread settings."""

import importlib.metadata
import importlib.util
import platform
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import fusedmlp
from fusedmlp import _kernels, _network

import oracle

BACKENDS = ("openblas", "mkl", "scipy")


def _installed(distribution):
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def run_python(code, backend=None):
    env = dict(os.environ)
    env.pop("FUSEDMLP_BLAS", None)
    if backend is not None:
        env["FUSEDMLP_BLAS"] = backend
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=os.path.dirname(os.path.abspath(__file__)) + "/..",
                          timeout=120)


TRAIN = """
import json, numpy as np, fusedmlp
from fusedmlp import _kernels, _network
rng = np.random.default_rng(0)
X = rng.normal(size=(96, 20)); y = rng.integers(0, 4, size=96)
model = fusedmlp.MLP([20, 32, 4], dtype=np.float64, seed=0)
model.fit(X, y, epochs=3, batch_size=16, optimizer=fusedmlp.SGD(0.1), shuffle=False)
print(json.dumps({"net": _network.BLAS["name"], "kernels": _kernels.BLAS["name"],
                  "p": model.predict_proba(X[:8]).tolist()}))
"""


def available(backend):
    if backend == "mkl":
        return _installed("mkl") and platform.machine().lower() in ("x86_64", "amd64")
    if backend == "openblas":
        return importlib.util.find_spec("scipy_openblas32") is not None
    return True


@pytest.mark.parametrize("backend", BACKENDS)
def test_forced_backend_is_used_and_trains_the_same(backend):
    if not available(backend):
        pytest.skip(f"the {backend} backend is not installed here")
    result = run_python(TRAIN, backend)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["net"] == got["kernels"] == backend
    # every backend computes the same products up to float64 rounding: 18 SGD steps (an
    # update linear in the gradient) within the chain of their sums, then one forward and
    # the softmax
    reference = json.loads(run_python(TRAIN, "scipy").stdout)
    sizes = [20, 32, 4]
    oracle.assert_rounding_close(got["p"], reference["p"], np.float64,
                                 oracle.step_chain(sizes, 16, 18) + sum(sizes[:-1])
                                 + 2 * oracle.ELEMENTWISE + sizes[-1])


@pytest.mark.parametrize("backend", ["mkl", "openblas"])
def test_forcing_a_missing_backend_is_a_clear_error(backend):
    if available(backend):
        pytest.skip(f"{backend} is installed here, so forcing it cannot fail")
    result = run_python("import fusedmlp", backend)
    assert result.returncode != 0
    assert f"FUSEDMLP_BLAS={backend}" in result.stderr
    assert "not installed" in result.stderr


def test_unknown_backend_name_is_refused():
    result = run_python("import fusedmlp", "blis")
    assert result.returncode != 0
    assert "FUSEDMLP_BLAS must be one of openblas, mkl, scipy, got 'blis'" in result.stderr


def test_show_config_dict_and_print(capsys):
    info = fusedmlp.show_config(as_dict=True)
    assert set(info) >= {"version", "blas", "elementwise_isa", "threads", "bfloat16"}
    assert info["blas"]["name"] in BACKENDS
    assert info["blas"]["name"] == _network.BLAS["name"] == _kernels.BLAS["name"]
    assert info["blas"]["version"]
    if info["blas"]["name"] != "scipy":
        assert os.path.isabs(info["blas"]["path"])      # loaded by absolute path
    assert isinstance(info["bfloat16"]["available"], bool) and info["bfloat16"]["why"]
    assert 1 <= info["threads"]["auto_limit"] <= info["threads"]["usable_cores"]
    assert info["threads"]["workers_started"] == _network.pool_size()
    assert fusedmlp.show_config() is None
    printed = json.loads(capsys.readouterr().out)
    assert printed["blas"] == json.loads(json.dumps(info["blas"]))


def test_default_backend_is_the_private_openblas_where_installed():
    if not available("openblas") or os.environ.get("FUSEDMLP_BLAS"):
        pytest.skip("scipy-openblas32 absent or a backend is forced")
    if _network.BLAS["name"] == "mkl":
        pytest.skip("MKL is the default on Intel CPUs when installed")
    assert _network.BLAS["name"] == "openblas"


def _pools():
    return sorted((p["filepath"], p["num_threads"]) for p in threadpool_info())


def test_fusedmlp_calls_leave_every_thread_pool_as_it_was():
    before = _pools()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 30)).astype(np.float32)
    y = rng.integers(0, 3, size=256)
    model = fusedmlp.MLP([30, 64, 3], seed=0)
    model.fit(X, y, epochs=2, batch_size=32)
    model.train_step(X[:64], y[:64], fusedmlp.SGD(0.1))
    model.predict_proba(X)
    layer = fusedmlp.Dense(30, 8, activation="tanh", seed=0)
    layer.backward(layer.forward(X))
    fusedmlp.show_config(as_dict=True)
    assert _pools() == before


def test_threadpool_limits_on_the_private_instance_change_nothing():
    """threadpoolctl lists fusedmlp's OpenBLAS like any other and may raise its limit; fusedmlp
    keeps it single-threaded anyway, so results are the same inside and outside."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(128, 40))
    y = rng.integers(0, 5, size=128)

    def train():
        model = fusedmlp.MLP([40, 48, 5], dtype=np.float64, seed=3)
        model.fit(X, y, epochs=2, batch_size=32, shuffle=False)
        return model.predict_proba(X)

    expected = train()
    with threadpool_limits(2):
        inside = train()
    # one part either way ("auto" keeps this shape on one thread), the instance at one thread
    oracle.assert_same_bits(inside, expected, why=oracle.FIXED_SPLIT)
