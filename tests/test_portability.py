"""csrc/ without GCC-only constructs: tools/portability_check.sh compiles every C source and
header of csrc/ (and the C the Cython sources carry verbatim) with mingw-w64, clang and gcc at
-std=c11 -pedantic -Werror on each atomics path, checks that what MSVC would compile holds no
GNU extension, and runs the C checks of tests/c/ built for Windows under wine. It installs its
toolchains with apt-get when it can; without them this skips, and with CI set it fails.
"""

import platform
import shutil
import subprocess
from pathlib import Path

import pytest
from _ctools import missing, run_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "portability_check.sh"

pytestmark = pytest.mark.skipif(not SCRIPT.exists() or not (ROOT / "csrc" / "kernels").exists(),
                                reason="the C sources are not here")


def test_csrc_compiles_with_every_toolchain_and_runs_under_wine(tmp_path):
    if platform.machine().lower() not in ("x86_64", "amd64") or shutil.which("bash") is None:
        pytest.skip("the toolchains are set up for x86-64 Debian hosts")
    out = run_script(SCRIPT, tmp_path)
    assert out.rstrip().endswith("passed"), out
    for toolchain in ("mingw gnu-atomics", "mingw interlocked", "clang gnu-atomics",
                      "clang c11-atomics", "gcc c11-atomics"):
        assert f"{toolchain}: " in out and " 0 failed" in out.split(f"{toolchain}: ")[1].splitlines()[0]
    assert "msvc-x64 view:" in out and "msvc-arm64 view:" in out
    for build in ("windows gnu-atomics", "windows interlocked-atomics",
                  "windows+avx512 interlocked-atomics"):
        for check in ("kernels_check", "elementwise_check"):
            assert f"wine {build} {check}: " in out, out
    assert "FAIL" not in out


def test_the_check_fails_on_gnu_only_code(tmp_path):
    """The check can fail: a copy of csrc/ given two constructs it must reject -- an attribute
    with no MSVC path (which -pedantic accepts; only the MSVC view sees it) and an object
    pointer converted to a function pointer (which ISO C does not allow)."""
    if platform.machine().lower() not in ("x86_64", "amd64") or shutil.which("bash") is None:
        pytest.skip("the toolchains are set up for x86-64 Debian hosts")
    copy = tmp_path / "tree"
    for part in ("csrc", "tests/c", "tools"):
        shutil.copytree(ROOT / part, copy / part)
    header = copy / "csrc" / "fm_compiler.h"
    text = header.read_text()
    guard_end = text.rindex("#endif")
    header.write_text(text[:guard_end]
                      + "static int fm_gnu_only(void) __attribute__((unused));\n"
                      + "static void (*fm_as_function(void *p))(void) { return (void (*)(void))p; }\n"
                      + text[guard_end:])
    result = subprocess.run(["bash", str(copy / "tools" / "portability_check.sh"), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=1800)
    if result.returncode == 2:
        missing(result.stderr.strip())
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL msvc-x64: GNU-only code left in" in result.stdout
    assert "FAIL mingw gnu-atomics: " in result.stdout and "FAIL gcc gnu-atomics: " in result.stdout
    assert "ISO C forbids conversion of object pointer to function pointer" in result.stdout
    assert result.stdout.rstrip().endswith("FAILED")
