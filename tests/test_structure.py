"""The shape of the package: no import cycles, no use of another module's private names.

Both read the installed package's sources with ``ast`` (nothing is imported). Imports inside
functions count (they are cycles that only show up later); ``if TYPE_CHECKING:`` blocks do
not (they never run). A private name is one with a single leading underscore; a module may
use its own (``self._x``, ``model._net`` inside model.py) but not one that only another
module defines (``model._params`` in io.py).
"""

import ast
import os

import pytest

import fusedmlp

PACKAGE_DIR = os.path.dirname(fusedmlp.__file__)


def _modules():
    """{dotted name: source path} of every Python module of the package."""
    found = {}
    for directory, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                dotted = "fusedmlp." + os.path.relpath(path, PACKAGE_DIR)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _compiled(dotted):
    stem = dotted.rsplit(".", 1)[-1]
    directory = os.path.join(PACKAGE_DIR, *dotted.split(".")[1:-1])
    return any(f.startswith(stem + ".") and f.endswith((".so", ".pyd"))
               for f in os.listdir(directory)) if os.path.isdir(directory) else False


def _runtime_nodes(tree):
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _imports(dotted, path):
    """The package's modules that module `dotted` imports, anywhere in its code."""
    package = dotted if path.endswith("__init__.py") else dotted.rsplit(".", 1)[0]
    out = set()
    for node in _runtime_nodes(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                source = base + ("." + node.module if node.module else "")
            else:
                source = node.module or ""
            if not source.startswith("fusedmlp"):
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:
                    out.add(submodule)
                elif not _compiled(submodule) and source in MODULES:
                    out.add(source)            # a name defined in that module
    out.discard(dotted)
    return out


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_the_sources_are_there():
    assert {"fusedmlp.model", "fusedmlp.training", "fusedmlp.io", "fusedmlp.cli.bench",
            "fusedmlp.reference.numpy_mlp"} <= set(MODULES)


def test_no_import_cycles():
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    assert "fusedmlp.io" in graph["fusedmlp.model"]          # the parser sees imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _private_names_defined(tree):
    """Private names a module defines: module globals, functions, classes, class and
    instance attributes (``self._x = ...``), methods."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)                   # __slots__ entries
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_attributes_of_other_modules(name):
    tree = ast.parse(open(MODULES[name]).read())
    own = _private_names_defined(tree)
    foreign = sorted(
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_")
        and not node.attr.startswith("__") and node.attr not in own
        # NumPy's and the standard library's own semi-private helpers are theirs to keep
        and not (isinstance(node.value, ast.Name) and node.value.id in ("np", "sys", "os"))
    )
    assert not foreign, f"{name} uses private names defined elsewhere: {foreign}"


CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")


@pytest.mark.skipif(not os.path.isdir(CSRC), reason="needs the source tree's csrc/")
def test_the_compiled_core_uses_only_the_public_surface_of_python_objects():
    # The Cython C API (_embed.pxi) and the network hold Python models and optimisers:
    # they go through their public methods (MLP.bind, MLP.reserve, ...), as io and sklearn do.
    import re

    pattern = re.compile(r"\b(model|mlp|opt|optimizer|bound)\._[a-z]\w*")
    found = []
    for name in sorted(os.listdir(CSRC)):
        if name.endswith((".pyx", ".pxi", ".pxd")):
            for number, line in enumerate(open(os.path.join(CSRC, name)), 1):
                if pattern.search(line.split("#")[0]):
                    found.append(f"{name}:{number}: {line.strip()}")
    assert not found, found


# ----------------------------------------------------------------- the repository's files
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tracked(*patterns):
    """Files git tracks in this checkout matching the patterns; skip outside a git checkout."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not os.path.exists(os.path.join(REPO, ".git")):
        pytest.skip("not a git checkout (an sdist or an installed copy)")
    done = subprocess.run(["git", "-C", REPO, "ls-files", *patterns], capture_output=True,
                          text=True, check=True)
    return done.stdout.split()


def test_no_build_output_is_tracked():
    # What a build writes (Cython's C beside its .pyx, objects, extension modules) is
    # ignored, and no tracked file matches an ignore pattern.
    ignored = _tracked("--cached", "--ignored", "--exclude-standard")
    assert ignored == [], f"tracked files that .gitignore marks as build outputs: {ignored}"
    binaries = [f for f in _tracked() if f.endswith((".so", ".pyd", ".o", ".obj", ".a"))]
    assert binaries == []
    # Every tracked C file in csrc/ is hand-written: not Cython's output, not one of the
    # names Cython gives it (csrc/_<module>.c), and compiled by CMakeLists.txt by name.
    with open(os.path.join(REPO, "CMakeLists.txt"), encoding="utf-8") as f:
        cmake = f.read()
    sources = _tracked("csrc/*.c", "csrc/**/*.c")
    assert sources, "the hand-written kernels in csrc/kernels/ are missing"
    for path in sources:
        with open(os.path.join(REPO, path), encoding="utf-8") as f:
            head = f.read(300)
        assert "Generated by Cython" not in head, path
        assert not os.path.basename(path).startswith("_"), path
        stem = os.path.basename(path)[:-2].removesuffix("_avx512")
        assert stem in cmake, f"{path} is not compiled by CMakeLists.txt"
