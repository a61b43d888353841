"""Building the C test extensions (tests/embedding/c_client.c, docs/embedding.md's examples)
against the installed fusedmlp's header: shared by test_embedding and test_hardening3 (the
c_client fixture in conftest.py), imported by name like oracle.py."""

import importlib.util
import os
import shutil
import sys
import sysconfig

import pytest

import fusedmlp

HERE = os.path.dirname(os.path.abspath(__file__))


def need_compiler():
    """Skip unless the compiler Python was built with is there (MSVC's cl on Windows, found
    on PATH in a developer prompt) and setuptools can drive it."""
    compiler = ["cl"] if sys.platform == "win32" else (
        sysconfig.get_config_var("CC") or "").split()
    if not compiler or shutil.which(compiler[0]) is None:
        pytest.skip(f"no C compiler ({compiler[0] if compiler else 'sysconfig CC unset'} not "
                    "found): the C and Cython API test extensions cannot be built")
    pytest.importorskip("setuptools", reason="setuptools builds the test extensions "
                                             '(pip install ".[test]")')


def build_and_import(name, source, build_dir):
    """Compile the one-file extension `source` as module `name` into build_dir; import it."""
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    extension = Extension(name, [source], include_dirs=[fusedmlp.get_include()])
    command = build_ext(Distribution({"ext_modules": [extension]}))
    command.build_lib = str(build_dir)
    command.build_temp = str(build_dir / "temp")
    command.ensure_finalized()
    command.run()
    spec = importlib.util.spec_from_file_location(name, command.get_ext_fullpath(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_c_client(build_dir):
    """tests/embedding/c_client.c: the C API's functions, callable from Python."""
    need_compiler()
    return build_and_import("c_client", os.path.join(HERE, "embedding", "c_client.c"), build_dir)
