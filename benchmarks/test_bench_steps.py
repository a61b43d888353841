"""Whole training steps and inference calls: fusedmlp.MLP next to the pure-NumPy reference.

Same architecture, same weights (``NumpyMLP.from_model``), same batch; float32, one BLAS
thread (conftest.py). The comparison table with PyTorch, scikit-learn and the GEMM floor is
``python -m fusedmlp bench`` (src/fusedmlp/bench.py).
"""

import numpy as np
import pytest

import fusedmlp
from reference_numpy import NumpyAdam, NumpyMLP, NumpySGD

DTYPE = np.float32
STEPS = [((64, 32, 10), 32), ((784, 128, 10), 32)]
OPTIMIZERS = {
    "sgd": (lambda: fusedmlp.SGD(0.01, momentum=0.9), lambda: NumpySGD(0.01, momentum=0.9)),
    "adam": (lambda: fusedmlp.Adam(1e-3), lambda: NumpyAdam(1e-3)),
}


def make_pair(sizes, batch):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(batch, sizes[0])).astype(DTYPE)
    y = rng.integers(0, sizes[-1], size=batch)
    model = fusedmlp.MLP(sizes, dtype=DTYPE, seed=0)
    return model, NumpyMLP.from_model(model), X, y


def step_id(sizes, batch):
    return "-".join(map(str, sizes)) + f" b{batch}"


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("sizes, batch", STEPS, ids=[step_id(*s) for s in STEPS])
@pytest.mark.parametrize("implementation", ["fusedmlp", "numpy"])
def test_train_step(benchmark, implementation, sizes, batch, optimizer):
    benchmark.group = f"train step {step_id(sizes, batch)} {optimizer}"
    model, reference, X, y = make_pair(sizes, batch)
    make_ours, make_numpy = OPTIMIZERS[optimizer]
    if implementation == "fusedmlp":
        benchmark(model.train_step, X, y, make_ours())
    else:
        benchmark(reference.train_step, X, y, make_numpy())


INFERENCE = [((784, 128, 10), 1), ((784, 128, 10), 256)]


@pytest.mark.parametrize("sizes, batch", INFERENCE, ids=[step_id(*s) for s in INFERENCE])
@pytest.mark.parametrize("implementation", ["fusedmlp", "numpy"])
def test_predict_proba(benchmark, implementation, sizes, batch):
    benchmark.group = f"predict_proba {step_id(sizes, batch)}"
    model, reference, X, _ = make_pair(sizes, batch)
    if implementation == "fusedmlp":
        result = benchmark(model.predict_proba, X)
    else:
        result = benchmark(reference.predict_proba, X)
    np.testing.assert_allclose(result, model.predict_proba(X), rtol=1e-4, atol=1e-6)


def test_comparison_command_prints_the_tables(capsys):
    # A smoke run of `python -m fusedmlp bench` (skipped under --benchmark-only): two
    # competitors, one tiny setting, a millisecond per loop.
    from fusedmlp.cli.bench import main

    status = main(["--networks", "64-32-10", "--threads", "1", "--dtypes", "float64",
                   "--rounds", "2", "--target-time", "0.001", "--min-calls", "1",
                   "--competitors", "fusedmlp,numpy"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "| 1 | float64 | 64-32-10 | 32 |" in printed
    assert "GEMM floor" in printed and "NumPy" in printed and "Targets" not in printed
