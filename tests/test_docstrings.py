"""Every Examples section in the package's docstrings runs and prints what it says."""

import doctest
import importlib

import pytest

MODULES = ["functional", "layers", "layout", "model", "training", "optim", "io", "gradcheck",
           "reference.numpy_mlp", "cli.datasets", "cli.demo", "cli.bench", "sklearn", "dask",
           "_config"]
OPTIONAL = {"sklearn": "sklearn", "dask": "distributed"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name])
    module = importlib.import_module(f"fusedmlp.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
