"""Types: mypy is clean on src/fusedmlp (configured in pyproject.toml), and the stubs of the
compiled modules (src/fusedmlp/_codes.pyi, _kernels.pyi, _network.pyi) name exactly what the modules
define, so a type checker downstream sees real signatures, not Any."""

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import fusedmlp

ROOT = Path(__file__).resolve().parents[1]
COMPILED = ["_codes", "_kernels", "_network"]


def _stub_names(path):
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_")}


@pytest.mark.parametrize("name", COMPILED)
def test_stub_names_match_the_compiled_module(name):
    module = importlib.import_module(f"fusedmlp.{name}")
    stub = Path(fusedmlp.__file__).with_name(f"{name}.pyi")
    assert stub.exists(), f"{stub} is missing (installed packages ship their stubs)"
    public = {n for n in vars(module) if not n.startswith("_")}
    public -= {n for n, v in vars(module).items() if type(v).__name__ == "module"}
    stubbed = _stub_names(stub)
    assert stubbed == public, (
        f"fusedmlp.{name} and {stub.name} disagree: in the module only {sorted(public - stubbed)}, "
        f"in the stub only {sorted(stubbed - public)} -- update the .pyi beside the .pyx")


def test_package_is_marked_typed():
    assert Path(fusedmlp.__file__).with_name("py.typed").exists()


@pytest.mark.skipif(not (ROOT / "src" / "fusedmlp").is_dir(), reason="no source tree here")
def test_mypy_is_clean_on_the_package(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip('mypy is not installed (pip install ".[test]")')
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "cache"), str(ROOT / "src" / "fusedmlp")],
        capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
