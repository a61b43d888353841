"""The supported range is stated once and agrees everywhere it is written.

requires-python's floor is the oldest Python the suite is run on (tools/pythons.sh), and the
lower bounds in pyproject.toml are the versions it is run with there (tools/oldest-deps.txt
pins them): so the classifiers, the wheel matrix, mypy's target, the README and the
constraints file must say what pyproject.toml says, or a claim goes untested.
"""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

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


def _reachable_requirements(extra: str) -> list[Requirement]:
    """The requirements an install of ``fusedmlp[extra]`` brings, fusedmlp's own extras
    followed (``fusedmlp[sklearn,dask-ml]`` inside ``test``)."""
    extras = PROJECT["optional-dependencies"]
    seen, todo, out = set(), [extra], [Requirement(r) for r in PROJECT["dependencies"]]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in extras[name]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == "fusedmlp":
                todo.extend(requirement.extras)
            else:
                out.append(requirement)
    return out


def _lower_bounds() -> dict[str, Version]:
    """{package: its lower bound} over the build requirements and everything ``[test]``
    (and ``[plot]``, which has no bounds) installs: what tools/pythons.sh's oldest run uses."""
    requirements = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    requirements += _reachable_requirements("test") + _reachable_requirements("plot")
    bounds: dict[str, Version] = {}
    for requirement in requirements:
        for spec in requirement.specifier:
            if spec.operator == ">=":
                name = canonicalize_name(requirement.name)
                bounds[name] = max(bounds.get(name, Version(spec.version)), Version(spec.version))
    return bounds


TRANSITIVE = "# --- not fusedmlp's own bounds"


def _pins(transitive: bool = False) -> dict[str, Version]:
    """tools/oldest-deps.txt's pins: fusedmlp's lower bounds, or (``transitive``) those after
    its TRANSITIVE line (others' packages, held back to run with the oldest NumPy)."""
    pins: dict[str, Version] = {}
    section = False
    for line in (ROOT / "tools" / "oldest-deps.txt").read_text().splitlines():
        section = section or line.startswith(TRANSITIVE)
        line = line.split("#", 1)[0].strip()
        if line and section == transitive:
            name, sep, version = line.partition("==")
            assert sep, f"tools/oldest-deps.txt: {line!r} is not 'name==version'"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_oldest_deps_pin_every_lower_bound_and_nothing_else():
    assert sorted(_pins()) == sorted(_lower_bounds())
    assert not set(_pins(transitive=True)) & set(_lower_bounds()), "a bound pinned twice"


def test_oldest_deps_pin_the_lower_bounds_release():
    # The pin is the bound itself or, where that release is not on PyPI, the first release of
    # the same series after it (a bound of 1.11 pinned as 1.11.1): never a later series.
    bounds = _lower_bounds()
    for name, pin in _pins().items():
        bound = bounds[name]
        assert pin >= bound and pin.release[:len(bound.release)] == bound.release, (name, pin, bound)
