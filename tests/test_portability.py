"""csrc/ without GCC-only constructs: tools/portability_check.sh compiles every C source and
header of csrc/ (and the C the Cython sources carry verbatim) with mingw-w64, clang and gcc at
-std=c11 -pedantic -Werror on each atomics path, checks that what MSVC would compile holds no
GNU extension, and runs the C checks of tests/c/ built for Windows under wine. It installs its
toolchains with apt-get when it can; without them this skips, and with CI set it fails.
"""

import platform
import shutil
from pathlib import Path

import pytest
from _ctools import run_script

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
