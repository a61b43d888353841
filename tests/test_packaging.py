"""The supported Python range is stated once and agrees everywhere it is written:
requires-python's floor, the classifiers, the wheel matrix, mypy's target and the README."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def _floor_minor() -> int:
    match = re.fullmatch(r">=\s*3\.(\d+)", PROJECT["requires-python"])
    assert match, f"requires-python is {PROJECT['requires-python']!r}, expected '>=3.N'"
    return int(match.group(1))


def _classifier_minors() -> list[int]:
    prefix = "Programming Language :: Python :: 3."
    return sorted(int(c[len(prefix):]) for c in PROJECT["classifiers"] if c.startswith(prefix))


def test_classifiers_run_from_the_floor_without_gaps():
    minors = _classifier_minors()
    assert minors and minors[0] == _floor_minor(), (minors, PROJECT["requires-python"])
    assert minors == list(range(minors[0], minors[-1] + 1)), minors


def test_wheel_matrix_builds_exactly_the_classified_pythons():
    build = PYPROJECT["tool"]["cibuildwheel"]["build"].split()
    assert build == [f"cp3{minor}-*" for minor in _classifier_minors()], build


def test_mypy_targets_the_floor():
    assert PYPROJECT["tool"]["mypy"]["python_version"] == f"3.{_floor_minor()}"


def test_readme_states_the_floor():
    readme = (ROOT / "README.md").read_text()
    stated = set(re.findall(r"Python ≥ (3\.\d+)", readme))
    assert stated == {f"3.{_floor_minor()}"}, stated
