"""Every C kernel family checked in C, without Python (tests/c/kernels_check.c and
tests/c/elementwise_check.c).

Natively on x86-64: small_gemm and bf16_gemm with their AVX-512 kernels compiled in (as
CMakeLists.txt does with GCC), dropout, l1, fpenv and the pool; run once per elementwise
variant this CPU runs (FUSEDMLP_ISA). For AArch64: tools/cross_aarch64.sh cross-compiles the
same sources statically and runs them under qemu-aarch64-static (it installs the toolchain
with apt-get when it can). With CI set, a missing toolchain fails instead of skipping.
"""

import platform
import shutil
import subprocess
from pathlib import Path

import pytest
from _ctools import missing, run_check, run_script

ROOT = Path(__file__).resolve().parents[1]
CSRC, KERNELS, CHECKS = ROOT / "csrc", ROOT / "csrc" / "kernels", ROOT / "tests" / "c"
SCRIPT = ROOT / "tools" / "cross_aarch64.sh"
FLAGS = ["-O2", "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-fno-math-errno", "-fno-trapping-math",
         "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", "-Wno-unused-function", "-I", str(CSRC)]


def linked_units(arch):
    """(source, flags) of every unit the C checks link for ``arch``, as CMakeLists.txt builds
    them: tests/c/units.txt, the one list tools/cross_aarch64.sh and portability_check.sh
    read too."""
    units = []
    for line in (CHECKS / "units.txt").read_text().splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#") and fields[:2] == [arch, "link"]:
            units.append((fields[2], fields[3:]))
    return units


pytestmark = pytest.mark.skipif(not (KERNELS / "small_gemm.c").exists() or
                                not (CHECKS / "kernels_check.c").exists(),
                                reason="the C sources are not here")


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 only")
def test_every_kernel_family_natively_for_each_variant(tmp_path):
    if shutil.which("cc") is None:
        missing("no C compiler (cc)")
    objects = []
    for i, (source, flags) in enumerate(linked_units("x86")):
        obj = tmp_path / f"{i}_{source[:-2]}.o"
        subprocess.run(["cc", *FLAGS, *flags, "-c", str(KERNELS / source), "-o", str(obj)],
                       check=True)
        objects.append(str(obj))
    for check in ("elementwise_check", "kernels_check"):
        exe = tmp_path / check
        subprocess.run(["cc", *FLAGS, str(CHECKS / f"{check}.c"), *objects, "-o", str(exe),
                        "-lm", "-lpthread"], check=True)
        out = run_check([str(exe)])
        if check == "elementwise_check":
            supported = out.splitlines()[0].split("supported: ")[1].rstrip(")").split(",")
            for variant in supported:
                assert f"variant {variant}" in run_check([str(exe)], variant)
        else:
            assert "small_gemm[" in out and "pool: every part" in out
            # each small_gemm kernel the CPU runs, forced (baseline: declined, BLAS's turn)
            for variant in supported:
                forced = run_check([str(exe)], variant)
                expected = ("small_gemm: no kernel here, declined" if variant == "baseline"
                            else f"small_gemm[{variant}] 33x200x31")
                assert expected in forced, forced


def test_every_kernel_family_on_aarch64_under_qemu(tmp_path):
    if platform.machine().lower() not in ("x86_64", "amd64") or shutil.which("bash") is None:
        pytest.skip("the cross toolchain is set up for x86-64 Debian hosts")
    out = run_script(SCRIPT, tmp_path)
    assert "variant neon (supported: neon)" in out
    for check in ("elementwise_check", "kernels_check"):
        out = (tmp_path / f"{check}.txt").read_text()
        assert out.rstrip().endswith(" 0 failed"), out
    out = (tmp_path / "kernels_check.txt").read_text()
    assert "bf16_gemm 32x128x100" in out and "small_gemm[neon] 33x200x31" in out
