"""What the tests that build and run C programs share (tests/c/ and the tools/*.sh scripts),
and the run of one Python script under each forced FUSEDMLP_ISA variant: imported by name,
as oracle.py is (conftest.py puts tests/ on sys.path)."""

import os
import subprocess
import sys

import pytest


def missing(what):
    """Skip for a toolchain this machine lacks; with CI set, fail: there the check must run."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set: this check must run)")
    pytest.skip(what)


def run_check(command, variant=None):
    """Run a C check program (FUSEDMLP_ISA=variant, or unset); return its output, asserting
    that it exited 0 and that its last line reports no failed check ("N passed, 0 failed")."""
    env = {k: v for k, v in os.environ.items() if k != "FUSEDMLP_ISA"}
    if variant:
        env["FUSEDMLP_ISA"] = variant
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith(" 0 failed"), result.stdout
    return result.stdout


def run_script(script, *args, timeout=1800):
    """Run a tools/ script with bash; exit status 2 (its toolchain is missing and cannot be
    installed) is `missing`, any other non-zero status a failure. Returns its stdout."""
    result = subprocess.run(["bash", str(script), *map(str, args)], capture_output=True,
                            text=True, timeout=timeout)
    if result.returncode == 2:
        missing(result.stderr.strip())
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def results_per_variant(script, directory, variants, **env):
    """{variant: the array `script` saved}: the Python source `script` run in a fresh
    process per variant with FUSEDMLP_ISA=variant (and `env`); it takes the path of an .npy
    file to write as its argument and prints the variant it ran last (checked)."""
    import numpy as np

    path = directory / "per_variant.py"
    path.write_text(script)
    results = {}
    for variant in variants:
        saved = directory / f"{variant}.npy"
        proc = subprocess.run([sys.executable, str(path), str(saved)], capture_output=True,
                              text=True, env=dict(os.environ, FUSEDMLP_ISA=variant, **env))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split()[-1] == variant
        results[variant] = np.load(saved)
    return results
