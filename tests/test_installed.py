"""The suite ran against an installed wheel, not the source tree.

tools/check_wheel.sh builds and repairs the wheel, installs it into a fresh virtual
environment and runs the whole suite from outside the source tree with
``FUSEDMLP_EXPECT_INSTALLED=1``; these tests then prove that what was tested is the installed
package: imported from site-packages, compiled modules beside it, no source-tree or editable
redirection involved. The README's test command (and so CI) installs the package the same
way, non-editable, so they run there too. They are skipped only in a developer's editable
install, where fusedmlp is imported from src/ (unless FUSEDMLP_EXPECT_INSTALLED is set, when
that is a failure).
"""

import importlib
import importlib.machinery
import importlib.metadata
import os
import sys
import sysconfig
from pathlib import Path

import pytest

import fusedmlp

SOURCE_TREE = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not os.environ.get("FUSEDMLP_EXPECT_INSTALLED")
    and SOURCE_TREE / "src" in Path(fusedmlp.__file__).resolve().parents,
    reason="fusedmlp is imported from src/ (an editable install); tools/check_wheel.sh or the "
           "README's test command check the installed package",
)
COMPILED_MODULES = ("_kernels", "_network")


def package_dir() -> Path:
    return Path(fusedmlp.__file__).resolve().parent


def test_imported_from_site_packages():
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    platform_site = Path(sysconfig.get_paths()["platlib"]).resolve()
    assert package_dir().parent in (site_packages, platform_site), package_dir()
    assert SOURCE_TREE not in package_dir().parents, f"imported from the source tree: {package_dir()}"


def test_compiled_modules_are_installed_beside_the_package():
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for name in COMPILED_MODULES:
        module = importlib.import_module(f"fusedmlp.{name}")
        path = Path(module.__file__).resolve()
        assert path.parent == package_dir(), path
        assert path.name.endswith(suffixes), path


def test_no_editable_or_source_path_redirects_the_import():
    # An editable install leaves a finder on sys.meta_path or a .pth entry on sys.path that
    # points back into the repository.
    for finder in sys.meta_path:
        assert "fusedmlp" not in type(finder).__module__.lower(), finder
    for entry in sys.path:
        if entry:
            assert Path(entry).resolve() != SOURCE_TREE / "src", sys.path


def test_distribution_metadata_matches_the_module():
    distribution = importlib.metadata.distribution("fusedmlp")
    assert distribution.version == fusedmlp.__version__
    installed_files = {str(f) for f in distribution.files or ()}
    for name in COMPILED_MODULES:
        assert any(f.startswith(f"fusedmlp/{name}.") for f in installed_files), installed_files


def test_declared_console_scripts_resolve():
    # pyproject.toml's [project.scripts] must point at code that the wheel ships.
    distribution = importlib.metadata.distribution("fusedmlp")
    scripts = [ep for ep in distribution.entry_points if ep.group == "console_scripts"]
    for entry_point in scripts:
        assert callable(entry_point.load()), entry_point


def test_installed_package_trains():
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    y = (X[:, 0] > 0).astype(int)
    model = fusedmlp.MLP([3, 8, 2], seed=0)
    model.fit(X, y, epochs=30, batch_size=16, optimizer=fusedmlp.Adam(0.05))
    assert model.score(X, y) > 0.9


def test_license_travels_with_the_wheel():
    # BSD-3-Clause requires its text in every copy: PEP 639 puts it in the .dist-info.
    distribution = importlib.metadata.distribution("fusedmlp")
    assert distribution.metadata["License-Expression"] == "BSD-3-Clause"
    licenses = [f for f in distribution.files or () if f.name == "LICENSE"]
    assert licenses, "LICENSE is not in the installed distribution"
    text = licenses[0].read_text()
    assert "BSD 3-Clause License" in text and "the fusedmlp developers" in text
