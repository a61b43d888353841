# Sphinx configuration of fusedmlp's documentation site.
#
# Build (warnings are errors):
#   pip install ".[docs]" && python -m sphinx -W --keep-going -b html docs docs/_build/html
# tests/test_docs.py runs the same build when the docs extra is installed, and runs every
# ">>>" example of the Markdown pages as a doctest whether or not Sphinx is installed.
# Every docs/*.md page is in the site: index.md's toctree is a glob.
import fusedmlp

project = "fusedmlp"
author = "the fusedmlp developers"
copyright = "2026, the fusedmlp developers"
release = version = fusedmlp.__version__

extensions = [
    "myst_parser",            # the pages are Markdown
    "sphinx.ext.autodoc",     # the API reference, from the docstrings
    "numpydoc",               # which are numpydoc-style
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
numpydoc_show_class_members = False
autodoc_member_order = "bysource"
html_theme = "alabaster"
html_static_path = []
html_title = f"fusedmlp {release}"
