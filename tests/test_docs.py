"""The documentation site (docs/): every ">>>" example of every page runs as a doctest, and
the Sphinx build passes with warnings as errors when the docs extra is installed
(pip install ".[docs]"; the build command is in docs/conf.py and docs/index.md)."""

import doctest
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.glob("*.md"))

pytestmark = pytest.mark.skipif(not PAGES, reason="no docs/ directory here")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_examples_run(page):
    result = doctest.testfile(str(page), module_relative=False, encoding="utf-8",
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {page.name}"


def test_the_guide_has_examples():
    result = doctest.testfile(str(DOCS / "guide.md"), module_relative=False, encoding="utf-8",
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 40


def test_site_builds_without_warnings(tmp_path):
    missing = [m for m in ("sphinx", "myst_parser", "numpydoc")
               if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f'the docs extra is not installed (pip install ".[docs]"): no {missing}')
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    for page in PAGES:                                   # every page is in the site
        assert (tmp_path / "html" / page.with_suffix(".html").name).exists(), page.name
