"""Instruction-set dispatch of the elementwise loops (csrc/kernels/elementwise_dispatch.c).

Every variant this build has and this CPU runs passes the accuracy (ulp), numerics and kernel
tests: each is forced with FUSEDMLP_ISA in a fresh interpreter (the choice is made once, at
import). Every variant gives bit-identical results, since contraction is off in the build.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _ctools import results_per_variant

from fusedmlp import _kernels

TESTS = Path(__file__).resolve().parent
#: the tests that exercise the elementwise loops: ulp bounds, special values, every kernel
NUMERICS_TESTS = ["test_vecmath.py", "test_kernels.py", "test_functional.py"]
VARIANTS = _kernels.isa_supported()


def run_python(code, **env):
    environment = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True,
                          text=True, cwd=TESTS.parent.parent)


def test_default_is_the_best_supported_variant():
    if os.environ.get("FUSEDMLP_ISA"):
        pytest.skip("FUSEDMLP_ISA is set for this run")
    assert _kernels.isa() == VARIANTS[-1]
    assert VARIANTS[0] in ("baseline", "neon")


def test_show_config_names_the_variant(capsys):
    import fusedmlp

    facts = fusedmlp.show_config(as_dict=True)
    assert facts["elementwise_isa"] == _kernels.isa()
    assert facts["elementwise_isa_supported"] == list(VARIANTS)
    fusedmlp.show_config()
    assert f'"elementwise_isa": "{_kernels.isa()}"' in capsys.readouterr().out


def test_expected_variants_on_x86_64():
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86-64 only")
    assert VARIANTS[0] == "baseline"
    assert set(VARIANTS) <= {"baseline", "avx2", "avx512"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_numerics_pass_for_every_variant(variant):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         *[str(TESTS / name) for name in NUMERICS_TESTS]],
        env=dict(os.environ, FUSEDMLP_ISA=variant), capture_output=True, text=True,
        cwd=TESTS.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


_RESULTS = """
import sys
import numpy as np, fusedmlp
from fusedmlp import _kernels
rng = np.random.default_rng(0)
x = rng.normal(scale=20, size=4099)
out = []
for dtype in (np.float32, np.float64):
    for name in sorted(fusedmlp.ACTIVATIONS):
        out.append(getattr(fusedmlp, name)(x.astype(dtype)) if name != "identity" else x)
    out.append(fusedmlp.softmax(x.reshape(-1, 1).repeat(3, 1).astype(dtype)))
    model = fusedmlp.MLP([3, 17, 4], activation="tanh", dtype=dtype, seed=0)
    X = x[:300].reshape(100, 3).astype(dtype)
    model.fit(X, (X[:, 0] > 0).astype(int), epochs=2, batch_size=16, verbose=0)
    out.append(model.predict_proba(X))
np.save(sys.argv[1], np.concatenate([np.ravel(a).astype(np.float64) for a in out]))
print(_kernels.isa())
"""


def test_every_variant_gives_identical_results(tmp_path):
    if len(VARIANTS) < 2:
        pytest.skip(f"this CPU runs one variant only ({VARIANTS[0]})")
    results = results_per_variant(_RESULTS, tmp_path, VARIANTS, OPENBLAS_NUM_THREADS="1")
    first = results[VARIANTS[0]]
    for variant in VARIANTS[1:]:
        np.testing.assert_array_equal(results[variant], first, err_msg=variant)


def test_forcing_an_unknown_variant_is_refused_at_import():
    proc = run_python("import fusedmlp", FUSEDMLP_ISA="sse9")
    assert proc.returncode != 0
    assert "FUSEDMLP_ISA=sse9 is not a variant of this build" in proc.stderr
    assert VARIANTS[0] in proc.stderr                      # names what it has



def test_forcing_a_variant_caps_every_kernel_family():
    """FUSEDMLP_ISA=baseline or avx2 means no AVX-512 kernel of any family runs: not the
    elementwise loops, not the own inference product (baseline: none; avx2: the AVX2+FMA
    one), not the bfloat16 kernel."""
    code = ("import fusedmlp, fusedmlp._network as n, fusedmlp.bf16 as b; "
            "print(n.kernel_variants()['small_gemm'], b.availability())")
    for variant in ("baseline", "avx2"):
        proc = run_python(code, FUSEDMLP_ISA=variant)
        if "this CPU cannot run it" in proc.stderr:
            continue
        assert proc.returncode == 0, proc.stderr
        expected = "blas" if variant == "baseline" else "avx2"
        assert proc.stdout.split()[0] == expected, (variant, proc.stdout)
        if "avx512" in VARIANTS:                # the CPU has it: the cap is the reason
            assert "FUSEDMLP_ISA forces a variant without AVX-512" in proc.stdout, (variant,
                                                                                 proc.stdout)


def test_show_config_reports_each_familys_variant():
    """show_config()["kernels"]: the variant of every family, the probe's features and the
    FUSEDMLP_ISA it read; a forced variant shows in every family."""
    import json

    code = ("import json, fusedmlp; "
            "print(json.dumps(fusedmlp.show_config(as_dict=True)['kernels']))")
    for variant in VARIANTS:
        proc = run_python(code, FUSEDMLP_ISA=variant)
        assert proc.returncode == 0, proc.stderr
        kernels = json.loads(proc.stdout)
        assert kernels["forced"] == variant and kernels["elementwise"] == variant
        assert kernels["small_gemm"] in ("blas", variant), kernels
        if variant in ("baseline", "avx2"):
            assert kernels["bf16_gemm"] == "portable", kernels
        features = set(kernels["cpu_features"])
        assert ("avx2" in features) == ("avx2" in VARIANTS or "avx512" in VARIANTS)
    import fusedmlp
    from fusedmlp import _network

    facts = fusedmlp.show_config(as_dict=True)["kernels"]
    assert facts["elementwise"] == _kernels.isa()
    assert (facts["small_gemm"] != "blas") == _network.own_gemm()
