"""The elementwise loops tested in C, without Python (tests/c/elementwise_check.c).

Natively: csrc/elementwise_*.c compiled as CMakeLists.txt compiles them (one object per
instruction-set variant with its flags, the dispatcher), linked with the check program and
run once per variant this CPU runs (FUSEDMLP_ISA). AArch64 (the NEON variant under qemu) is
tests/test_c_kernels.py's, with every other kernel family (tools/cross_aarch64.sh).
Skips when no C compiler is installed, or the sources are absent.
"""

import platform
import shutil
import subprocess
from pathlib import Path

import pytest
from _ctools import run_check

ROOT = Path(__file__).resolve().parents[1]
CSRC, CHECK = ROOT / "csrc", ROOT / "tests" / "c" / "elementwise_check.c"
FLAGS = ["-O2", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-std=c99",
         "-Wall", "-Wextra", "-Werror", "-Wno-unused-function"]
X86_VARIANTS = {"baseline": [], "avx2": ["-mavx2"], "avx512": ["-mavx512f"]}

pytestmark = pytest.mark.skipif(not (CSRC / "kernels" / "elementwise_dispatch.c").exists() or
                                not CHECK.exists(), reason="the C sources are not here")


def build(cc, variants, out_dir, extra=()):
    """Compile the variants, the dispatcher, the CPU probe and the check program with `cc`; return its path."""
    objects = []
    for name, flags in variants.items():
        obj = out_dir / f"kernels_{name}.o"
        subprocess.run([cc, *FLAGS, *extra, *flags, f"-DFM_VARIANT={name}", "-I", str(CSRC),
                        "-c", str(CSRC / "kernels" / "elementwise_kernels.c"), "-o", str(obj)],
                       check=True, capture_output=True, text=True)
        objects.append(str(obj))
    have = [f"-DFM_HAVE_{name.upper()}" for name in variants]
    exe = out_dir / "elementwise_check"
    subprocess.run([cc, *FLAGS, *extra, *have, "-I", str(CSRC), str(CSRC / "kernels" / "elementwise_dispatch.c"),
                    str(CSRC / "kernels" / "cpu.c"), str(CHECK), *objects, "-o", str(exe), "-lm"],
                   check=True, capture_output=True, text=True)
    return exe


def _compiler_error(exc):
    return f"{exc.cmd[0]} failed:\n{exc.stderr}"


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 only")
@pytest.mark.parametrize("cc", ["cc", "clang"])
def test_every_x86_variant_in_c(tmp_path, cc):
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed")
    try:
        exe = build(cc, X86_VARIANTS, tmp_path)
    except subprocess.CalledProcessError as exc:
        pytest.fail(_compiler_error(exc))
    supported = run_check([str(exe)]).splitlines()[0].split("supported: ")[1].rstrip(")").split(",")
    for variant in supported:
        assert f"variant {variant}" in run_check([str(exe)], variant)

