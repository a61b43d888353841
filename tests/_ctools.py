"""What the tests that build and run C programs share (tests/c/ and the tools/*.sh scripts):
imported by name, as oracle.py is (conftest.py puts tests/ on sys.path)."""

import os
import subprocess

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
