"""Whole training steps and inference calls, timed by pytest-benchmark on the case definitions
of ``python -m fusedmlp bench`` (``fusedmlp.cli.bench.BUILDERS``: the same models, data and
optimisers the command's table times) and of ``bench latency`` (``bench_latency.Latency``).

float32, one BLAS thread (conftest.py). The comparison table with PyTorch, scikit-learn and the
GEMM floor, in interleaved rounds, is ``python -m fusedmlp bench``.
"""

import numpy as np
import pytest

from fusedmlp.cli import bench, bench_latency

DTYPE = "float32"
STEPS = [((64, 32, 10), 32), ((784, 128, 10), 32)]
INFERENCE = [((784, 128, 10), 1), ((784, 128, 10), 256)]


def step_id(sizes, batch):
    return "-".join(map(str, sizes)) + f" b{batch}"


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("sizes, batch", STEPS, ids=[step_id(*s) for s in STEPS])
@pytest.mark.parametrize("implementation", ["fusedmlp", "numpy"])
def test_train_step(benchmark, implementation, sizes, batch, optimizer):
    benchmark.group = f"train step {step_id(sizes, batch)} {optimizer}"
    calls = bench.BUILDERS[implementation](sizes, batch, DTYPE, optimizer)
    benchmark(calls["train"])


@pytest.mark.parametrize("sizes, batch", INFERENCE, ids=[step_id(*s) for s in INFERENCE])
@pytest.mark.parametrize("implementation", ["fusedmlp", "numpy"])
def test_predict_proba(benchmark, implementation, sizes, batch):
    benchmark.group = f"predict_proba {step_id(sizes, batch)}"
    result = benchmark(bench.BUILDERS[implementation](sizes, batch, DTYPE, "adam")["infer"])
    assert result.shape == (batch, sizes[-1])     # probabilities of every row (each seeded
    np.testing.assert_allclose(result.sum(axis=1), 1, rtol=1e-5)   # model has its own weights)


@pytest.mark.parametrize("name", ["proba", "proba_out", "numpy"])
@pytest.mark.parametrize("rows", bench_latency.ROWS)
def test_latency(benchmark, name, rows):
    benchmark.group = f"latency 784-128-10 rows {rows}"
    calls = bench_latency.Latency(["fusedmlp", "numpy"]).setup(((784, 128, 10), rows))
    benchmark(calls[name])


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
