"""fusedmlp.export_c: the exported C compiles warning-free (gcc and clang, C99 and C11) and
reproduces predict_proba / predict to a bound derived from the layer widths."""

import ctypes
import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

import fusedmlp
from fusedmlp.cli import main
from fusedmlp.sklearn import MLPClassifier, MLPRegressor
from oracle import ACTIVATIONS, rounding_tolerance, softmax

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

WARNINGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-pedantic"]


def compiler(name):
    return pytest.param(name, marks=pytest.mark.skipif(
        shutil.which(name) is None, reason=f"{name} is not on PATH"))


# each compiler in both standards; the numerical tests run each output with one of them
BUILDS = [pytest.param(*b, id=f"{b[0]}-{b[1]}", marks=compiler(b[0]).marks)
          for b in (("gcc", "c99"), ("clang", "c11"))]
OTHER_BUILDS = [pytest.param(*b, id=f"{b[0]}-{b[1]}", marks=compiler(b[0]).marks)
                for b in (("gcc", "c11"), ("clang", "c99"))]
ANY_CC = next((c for c in ("gcc", "clang", "cc") if shutil.which(c)), None)
needs_cc = pytest.mark.skipif(ANY_CC is None, reason="no C compiler (gcc, clang, cc) on PATH")
# roundings of one elementwise pass, per side: fusedmlp's exp/expm1 are within 2.5 ulp (5
# units of u), libm's within 1 ulp; plus two roundings of the formula around them
ELEMENTWISE = 8
EVERY_ACTIVATION = ["relu", "sigmoid", "tanh", "leaky_relu", "elu", "softplus", "identity"]


def build(model, tmp_path, name, cc=None, std="c99", export=None):
    (export or fusedmlp.export_c)(model, tmp_path, name=name)
    lib = tmp_path / f"{name}.so"
    subprocess.run([cc or ANY_CC, f"-std={std}", *WARNINGS, "-shared", "-fPIC", "-o",
                    str(lib), str(tmp_path / f"{name}.c"), "-lm"], check=True,
                   capture_output=True)
    return ctypes.CDLL(str(lib))


def call(fn, X, out):
    return fn(X.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(len(X)),
              out.ctypes.data_as(ctypes.c_void_p))


def output_bound(model, X):
    """How far the exported code's outputs may lie from predict_proba's (both in the model's
    dtype): ``rounding_tolerance`` of the network's chain of sums, relative to the larger of
    1 and the scores' magnitude (the oracle's bound, tests/oracle.py).

    The chain: each layer's product is a sum of fan-in terms that the two programs add in
    other orders (BLAS or small_gemm against a plain loop), then the bias and the activation
    (ELEMENTWISE roundings per side: fusedmlp's exp/expm1 against libm's), layer after layer
    (to first order the relative errors add: the activations' slopes are at most 1); the
    output's softmax and logistic are 1-Lipschitz in the scores, exp carries the scores'
    absolute error as a relative one."""
    sizes = model.layer_sizes
    tol = rounding_tolerance(model.dtype, sum(sizes[:-1]) + ELEMENTWISE * len(model.layers))
    scores = np.asarray(model.forward(X), np.float64)
    scale = max(1.0, float(np.max(np.abs(scores))))
    if model.output == "exp":
        return tol * scale * np.exp(scores)
    return np.full(scores.shape, tol * scale)


def exported_and_model(model, X, tmp_path, name):
    """(the exported code's outputs, the model's) for X: predict_proba for a classifier,
    predict for a regressor."""
    lib = build(model, tmp_path, name)
    entry = "predict_proba" if model.is_classifier else "predict"
    out = np.empty((len(X), model.n_outputs), X.dtype)
    assert call(getattr(lib, f"{name}_{entry}"), X, out) == 0
    return out, getattr(model, entry)(X)


def assert_within(got, expected, bound):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    bound = bound.reshape(expected.shape)
    over = np.abs(got - expected) > bound
    assert not over.any(), (f"{over.sum()} entries beyond the bound: got {got[over]}, "
                            f"expected {expected[over]}, bound {bound[over]}")


@pytest.mark.parametrize("cc, std", BUILDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("output", ["softmax", "sigmoid", "identity", "exp"])
def test_matches_predict_proba_every_activation(tmp_path, cc, std, dtype, output):
    # 19 rows: two full row blocks of 8 and a partial one
    model = fusedmlp.MLP([3, 9, 5, 6, 7, 11, 13, 10, 4], activation=EVERY_ACTIVATION,
                         output=output, dtype=dtype, seed=1)
    X = np.random.default_rng(2).normal(size=(19, 3)).astype(dtype)
    lib = build(model, tmp_path, f"m_{output}", cc, std)
    out = np.empty((19, 4), dtype)
    bound = output_bound(model, X)
    if model.is_classifier:
        assert call(getattr(lib, f"m_{output}_predict_proba"), X, out) == 0
        assert_within(out, model.predict_proba(X), bound)
        labels = np.empty((19, 4) if output == "sigmoid" else 19, np.int32)
        assert call(getattr(lib, f"m_{output}_predict"), X, labels) == 0
        np.testing.assert_array_equal(labels, model.predict(X))
    else:
        assert call(getattr(lib, f"m_{output}_predict"), X, out) == 0
        assert_within(out, model.predict(X), bound)


@pytest.mark.parametrize("cc, std", OTHER_BUILDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiles_warning_free(tmp_path, cc, std, dtype):
    # the builds test_matches_predict_proba_every_activation does not run: only the compile
    for output in ("softmax", "sigmoid", "identity", "exp"):
        model = fusedmlp.MLP([3, 9, 5, 6, 7, 11, 13, 10, 4], activation=EVERY_ACTIVATION[:6] + [
            "step"], output=output, dtype=dtype, seed=1)
        model.export_c(tmp_path, name=f"w_{output}")
        result = subprocess.run([cc, f"-std={std}", *WARNINGS, "-c", "-o",
                                 str(tmp_path / f"w_{output}.o"), str(tmp_path / f"w_{output}.c")],
                                capture_output=True, text=True)
        assert result.returncode == 0 and not result.stderr, result.stderr


@needs_cc
def test_step_odd_sizes_and_codes(tmp_path):
    model = fusedmlp.MLP([1, 13, 1], activation="step", output="identity", dtype=np.float64,
                         seed=0)
    lib = build(model, tmp_path, "odd")
    X = np.linspace(-2, 2, 9)[:, None]
    out = np.empty((9, 1))
    assert call(lib.odd_predict, X, out) == 0
    assert_within(out[:, 0], model.predict(X), output_bound(model, X))
    assert lib.odd_predict(None, ctypes.c_size_t(3), None) == 1          # NULL, rows > 0
    assert lib.odd_predict(None, ctypes.c_size_t(0), None) == 0
    X[4, 0] = np.nan
    assert call(lib.odd_predict, X, out) == 2                             # as predict refuses


@needs_cc
def test_row_block_follows_the_widest_layer(tmp_path):
    # 1500 doubles wide: a block of 8 rows would take 192 KB of stack, so it shrinks to 2
    model = fusedmlp.MLP([2, 1500, 3], activation="tanh", dtype=np.float64, seed=4)
    lib = build(model, tmp_path, "wide")
    header = (tmp_path / "wide.h").read_text()
    assert "#define WIDE_ROW_BLOCK 2\n" in header
    assert f"#define WIDE_STACK_BYTES {(2 * 2 * 1500 + 2 * 3) * 8}\n" in header
    X = np.random.default_rng(5).normal(size=(5, 2))
    out = np.empty((5, 3))
    assert call(lib.wide_predict_proba, X, out) == 0
    assert_within(out, model.predict_proba(X), output_bound(model, X))
    # rows * N_FEATURES beyond SIZE_MAX: refused, never wrapped round to a small count
    pointer = X.ctypes.data_as(ctypes.c_void_p)
    assert lib.wide_predict_proba(pointer, ctypes.c_size_t(2 ** 63), pointer) == 1


@needs_cc
def test_sigmoid_label_is_the_probability_above_one_half(tmp_path):
    # score 1e-9 > 0, but its probability rounds to exactly 0.5 in float32: predict says 0
    model = fusedmlp.MLP([1, 1], output="sigmoid", dtype=np.float32, seed=0)
    model.set_params_vector(np.array([1e-9, 0], np.float32))
    lib = build(model, tmp_path, "half")
    X = np.ones((1, 1), np.float32)
    labels = np.empty(1, np.int32)
    assert call(lib.half_predict, X, labels) == 0
    assert model.predict(X)[0] == 0 and labels[0] == 0


@needs_cc
def test_fitted_classifier(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) * 5 + (X[:, 2] > 1) - 3       # labels -3, -2, 2, 3
    clf = MLPClassifier(hidden_layer_sizes=(10,), max_iter=20, random_state=0).fit(X, y)
    with pytest.raises(NotFittedError):
        MLPClassifier().export_c(tmp_path, name="x")
    lib = build(clf, tmp_path, "clf", export=lambda m, d, name: m.export_c(d, name=name))
    assert "#define CLF_CLASSES { -3, -2, 2, 3 }\n" in (tmp_path / "clf.h").read_text()
    labels = np.empty(60, np.int32)
    assert call(lib.clf_predict, X, labels) == 0
    np.testing.assert_array_equal(clf.classes_[labels], clf.predict(X))
    proba = np.empty((60, 4))
    assert call(lib.clf_predict_proba, X, proba) == 0
    assert_within(proba, clf.predict_proba(X), output_bound(clf.model_, X))


@needs_cc
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_classifier_writes_both_columns(tmp_path, dtype):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 3))
    y = np.where(X[:, 0] > 0, "yes", "no")
    clf = MLPClassifier(hidden_layer_sizes=(6,), max_iter=30, random_state=0, dtype=dtype)
    clf.fit(X, y)
    lib = build(clf, tmp_path, "yn", export=fusedmlp.export_c)
    header = (tmp_path / "yn.h").read_text()
    assert "#define YN_N_OUTPUTS 2\n" in header and "#define YN_N_LABELS 1\n" in header
    assert '#define YN_CLASS_NAMES { "no", "yes" }\n' in header
    Xm = X.astype(dtype)
    proba = np.empty((40, 2), dtype)
    assert call(lib.yn_predict_proba, Xm, proba) == 0
    bound = output_bound(clf.model_, Xm)                     # both columns
    assert_within(proba, clf.predict_proba(X), np.hstack([bound, bound]))
    labels = np.empty(40, np.int32)
    assert call(lib.yn_predict, Xm, labels) == 0
    np.testing.assert_array_equal(clf.classes_[labels], clf.predict(X))
    # an MLP of one logistic unit keeps MLP.predict_proba's one column
    fusedmlp.export_c(clf.model_, tmp_path, name="one")
    assert "#define ONE_N_OUTPUTS 1\n" in (tmp_path / "one.h").read_text()


@needs_cc
def test_fitted_regressor(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 5))
    reg = MLPRegressor(hidden_layer_sizes=(7,), max_iter=30, random_state=0)
    reg.fit(X, X[:, 0] - X[:, 1])
    lib = build(reg, tmp_path, "reg")
    out = np.empty((30, 1))
    assert call(lib.reg_predict, X, out) == 0
    assert_within(out[:, 0], reg.predict(X), output_bound(reg.model_, X))


def test_class_label_macros(tmp_path):
    from fusedmlp.export_c import _class_macros
    assert _class_macros("M", np.array([0, 2 ** 40, -2 ** 63]))[-1] == (
        "#define M_CLASSES { 0, 1099511627776LL, (-9223372036854775807LL - 1) }")
    assert _class_macros("M", np.array([0.5, 2.0]))[-1] == "#define M_CLASSES { 0x1.0000000000000p-1, 0x1.0000000000000p+1 }"
    assert _class_macros("M", np.array(['a"b', "\u00e9?"]))[-1] == (
        '#define M_CLASS_NAMES { "a\\"b", "\\303\\251\\?" }')
    assert "index" in _class_macros("M", np.array([1, "a"], dtype=object))[-1]


@pytest.mark.parametrize("cc", [compiler("gcc"), compiler("clang")])
def test_sanitized_driver(tmp_path, cc):
    """A C program (no Python in the process) that calls every entry point of an export with
    -fsanitize=address,undefined: in-bounds, no undefined behaviour; its outputs (printed
    as hexadecimal floats) match predict_proba."""
    model = fusedmlp.MLP([5, 12, 7, 3], activation=["tanh", "softplus"], dtype=np.float32,
                         seed=6)
    model.export_c(tmp_path, name="san")
    X = np.random.default_rng(7).normal(size=(11, 5)).astype(np.float32)
    rows = ", ".join(float(v).hex() + "f" for v in X.ravel())
    (tmp_path / "driver.c").write_text(f"""
#include <stdio.h>
#include "san.h"
static const float x[11 * SAN_N_FEATURES] = {{ {rows} }};
int main(void)
{{
    float p[11 * SAN_N_OUTPUTS];
    int32_t labels[11];
    size_t i;
    if (san_predict_proba(x, 11, p) != SAN_OK || san_predict(x, 11, labels) != SAN_OK) return 2;
    if (san_predict(NULL, 1, labels) != SAN_BAD_ARGUMENT) return 3;
    if (san_predict_proba(x, 0, NULL) != SAN_OK) return 4;
    for (i = 0; i < 11 * SAN_N_OUTPUTS; i++) printf("%a\\n", (double)p[i]);
    for (i = 0; i < 11; i++) printf("%d\\n", (int)labels[i]);
    return 0;
}}
""")
    exe = tmp_path / "driver"
    flags = ["-std=c99", *WARNINGS, "-g", "-fsanitize=address,undefined",
             "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
    built = subprocess.run([cc, *flags, "-o", str(exe), str(tmp_path / "driver.c"),
                            str(tmp_path / "san.c"), "-lm"], capture_output=True, text=True)
    if built.returncode != 0 and "sanitize" in built.stderr and "error:" not in built.stderr:
        pytest.skip(f"{cc} cannot link the sanitizers here: {built.stderr[:200]}")
    assert built.returncode == 0, built.stderr
    ran = subprocess.run([str(exe)], capture_output=True, text=True,
                         env={"ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS":
                              "print_stacktrace=1"})
    assert ran.returncode == 0 and not ran.stderr, ran.stderr
    values = ran.stdout.split()
    proba = np.array([float.fromhex(v) for v in values[:33]]).reshape(11, 3)
    assert_within(proba, model.predict_proba(X), output_bound(model, X))
    np.testing.assert_array_equal([int(v) for v in values[33:]], model.predict(X))


@pytest.mark.parametrize("name", ["1abc", "int", "a-b", "", 3])
def test_bad_name(tmp_path, name):
    with pytest.raises(ValueError, match="name"):
        fusedmlp.MLP([2, 2], seed=0).export_c(tmp_path, name=name)


def test_non_finite_parameters_refused(tmp_path):
    model = fusedmlp.MLP([2, 3, 2], seed=0)
    model.parameters[0] = np.inf
    with pytest.raises(ValueError, match="parameters contain NaN or infinity: export_c refuses"):
        model.export_c(tmp_path)


# --------------------------------------------------------------------------- the command line
def test_cli_writes_what_export_c_writes(tmp_path, capsys):
    model = fusedmlp.MLP([4, 7, 3], activation="tanh", seed=3)
    model.save(tmp_path / "model.fmlp")
    assert main(["export-c", str(tmp_path / "model.fmlp"), str(tmp_path / "out"),
                 "--name", "digits"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "out" / "digits.h"), str(tmp_path / "out" / "digits.c")]
    fusedmlp.export_c(model, tmp_path / "direct", name="digits")
    for suffix in (".h", ".c"):
        assert ((tmp_path / "out" / f"digits{suffix}").read_text()
                == (tmp_path / "direct" / f"digits{suffix}").read_text())
    assert main(["export-c", str(tmp_path / "model.fmlp"), str(tmp_path / "default")]) == 0
    assert (tmp_path / "default" / "fusedmlp_model.c").exists()


def test_cli_refusals_name_what_is_wrong(tmp_path, capsys):
    fusedmlp.MLP([2, 3, 2], seed=0).save(tmp_path / "model.fmlp")
    (tmp_path / "junk.fmlp").write_bytes(b"not a model")
    cases = [([str(tmp_path / "missing.fmlp"), str(tmp_path)],
              "cannot read MODEL_FILE .*missing.fmlp.*No such file"),
             ([str(tmp_path / "junk.fmlp"), str(tmp_path)], "junk.fmlp is not a valid fusedmlp "
                                                            "model file"),
             ([str(tmp_path / "model.fmlp"), str(tmp_path / "junk.fmlp")],
              "cannot write into DIRECTORY .*junk.fmlp")]
    for argv, match in cases:
        assert main(["export-c", *argv]) == 1
        err = capsys.readouterr().err
        assert err.startswith("fusedmlp export-c: error: ") and re.search(match, err), err
    for bad in ("2fast", "static", "a.b"):
        with pytest.raises(SystemExit) as info:
            main(["export-c", str(tmp_path / "model.fmlp"), str(tmp_path), "--name", bad])
        assert info.value.code == 2
        assert "argument --name: name must be a C identifier" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.c"))


# --------------------------------------------------------------------------- bench latency rows

@needs_cc
def test_latency_bench_times_the_exported_code(capsys, monkeypatch):
    # the rows run and are tabulated (their speed is measured by the command, not asserted)
    from fusedmlp.cli import bench_latency

    monkeypatch.setenv("CC", ANY_CC)
    results, skipped = bench_latency.measure(networks=[(8, 4, 3)], rows=(1, 2), rounds=2,
                                             target_time=0.002,
                                             competitors=["fusedmlp", "export_c"])
    assert skipped == {}
    for row in results.values():
        assert {"proba_out", "c_api", "export_O2", "export_O3"} <= set(row)
        assert all(t > 0 for t in row.values())
    text = bench_latency.table(results)
    assert "export_c -O2 (C loop)" in text and "export_c -O3 -march=native (C loop)" in text
    monkeypatch.setattr(bench_latency, "NETWORKS", [(8, 4, 3)])
    monkeypatch.setattr(bench_latency, "ROWS", (3,))
    assert bench_latency.main(["--rounds", "1", "--target-time", "0.001",
                               "--competitors", "export_c"]) == 0
    printed = capsys.readouterr().out
    assert "# export_c rows: " in printed and "| 8-4-3 | 3 |" in printed


def test_latency_bench_without_a_compiler_leaves_the_rows_out(capsys, monkeypatch):
    from fusedmlp.cli import bench_latency

    monkeypatch.setattr(bench_latency, "c_compiler", lambda: None)
    results, skipped = bench_latency.measure(networks=[(8, 4, 3)], rows=(1,), rounds=1,
                                             target_time=0.001,
                                             competitors=["fusedmlp", "export_c"])
    assert skipped == {"export_c": "no C compiler ($CC, cc, gcc or clang) on PATH"}
    assert "export_O2" not in results[((8, 4, 3), 1)] and "proba_out" in results[((8, 4, 3), 1)]
    # a compiler that fails: the reason, not a crash
    monkeypatch.setattr(bench_latency, "c_compiler", lambda: sys.executable)
    _, skipped = bench_latency.measure(networks=[(8, 4, 3)], rows=(1,), rounds=1,
                                       target_time=0.001, competitors=["export_c"])
    assert skipped["export_c"].startswith(f"{sys.executable} -O2 failed: ")


# --------------------------------------------------------------------------- examples/export_c

@needs_cc
def test_example_end_to_end(tmp_path):
    # examples/export_c/README.md's steps: train.py, compile main.c with the export, run it
    example = Path(__file__).resolve().parents[1] / "examples" / "export_c"
    if not example.is_dir():
        pytest.skip("examples/ is not beside the tests (installed-only run)")
    subprocess.run([sys.executable, str(example / "train.py"), str(tmp_path)], check=True,
                   capture_output=True)
    program = tmp_path / "blobs"
    subprocess.run([ANY_CC, "-std=c99", *WARNINGS, "-I", str(tmp_path), "-o", str(program),
                    str(example / "main.c"), str(tmp_path / "blobs.c"), "-lm"], check=True,
                   capture_output=True)
    sample = (tmp_path / "sample.txt").read_text()
    run = subprocess.run([str(program)], input=sample, capture_output=True, text=True,
                         check=True)
    lines = run.stdout.splitlines()
    model = fusedmlp.load(tmp_path / "blobs.fmlp")
    X = np.loadtxt(tmp_path / "sample.txt", dtype=np.float32, ndmin=2)
    assert len(lines) == len(X) == 5
    proba = np.array([[float(v) for v in line.split()[:3]] for line in lines])
    assert_within(proba, model.predict_proba(X), output_bound(model, X))
    assert [int(line.split()[-1]) for line in lines] == model.predict(X).tolist()
    # a short row is refused with the reason, not read as zeros
    short = subprocess.run([str(program)], input="1.5\n", capture_output=True, text=True)
    assert short.returncode == 1 and "expected 2 numbers a row" in short.stderr


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weights_round_trip_exactly(tmp_path, dtype):
    # the literals, trailing zeros dropped, read back bit for bit (no compiler needed: C's
    # hexadecimal floats are Python's float.fromhex), subnormals, zeros and extremes too
    model = fusedmlp.MLP([3, 5, 2], dtype=dtype, seed=3)
    info = np.finfo(dtype)
    special = np.array([0.0, -0.0, info.tiny, info.smallest_subnormal, -info.max, 1.0, 0.5],
                       dtype)
    params = model.get_params_vector()
    params[:special.size] = special
    model.set_params_vector(params)
    model.export_c(tmp_path, name="rt")
    text = (tmp_path / "rt.c").read_text()
    for i, layer in enumerate(model.layers):
        for label, values in (("W", layer.W), ("b", layer.b)):
            body = re.search(rf"rt_{label}{i}\[\d+\] = \{{(.*?)\}};", text, re.S).group(1)
            items = [v.strip() for v in body.split(",") if v.strip()]
            if dtype == np.float32:
                assert all(item.endswith("f") for item in items)
                items = [item[:-1] for item in items]
            got = np.array([float.fromhex(item) for item in items], dtype)
            assert got.tobytes() == np.ascontiguousarray(values).ravel().tobytes()
    assert "0000p" not in text              # no padded mantissas: float32 needs 6 digits


@needs_cc
@pytest.mark.parametrize("flags", [["-O2"], ["-O3", "-march=native"]], ids=["O2", "O3-native"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_784_128_10_matches_as_stated(tmp_path, dtype, flags):
    # the model and the builds `bench latency` times: float32 within the derived bound,
    # float64 within 1e-13 (as docs/export_c.md states), one row and a block and a half
    model = fusedmlp.MLP([784, 128, 10], dtype=dtype, seed=0)
    X = np.random.default_rng(1).normal(size=(13, 784)).astype(dtype)
    model.export_c(tmp_path, name="mnist")
    lib = tmp_path / "mnist.so"
    subprocess.run([ANY_CC, "-std=c99", *flags, "-shared", "-fPIC", "-o", str(lib),
                    str(tmp_path / "mnist.c"), "-lm"], check=True, capture_output=True)
    fn = ctypes.CDLL(str(lib)).mnist_predict_proba
    expected = model.predict_proba(X)
    for rows in (1, 13):
        out = np.empty((rows, 10), dtype)
        assert call(fn, X[:rows], out) == 0
        assert_within(out, expected[:rows], output_bound(model, X[:rows]))
        if dtype == np.float64:
            assert np.max(np.abs(out - expected[:rows])) <= 1e-13


# --------------------------------------------------------------------------- bfloat16 models

BF16_WHY_NOT = fusedmlp._kernels.bf16_why_not()
needs_bf16 = pytest.mark.skipif(bool(BF16_WHY_NOT) or ANY_CC is None,
                                reason=f"no bf16 product or no C compiler here: "
                                       f"{BF16_WHY_NOT or 'no cc'}")


@needs_bf16
def test_bf16_operands_rounded_bit_for_bit(tmp_path):
    # W = I, b = 0: each output is its input rounded to bfloat16 times 1, exactly, in the
    # model (the bf16 kernel) and in the export: ties to even, subnormals read as zero
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -2.5, 0.0, -0.0, 1e-40, -1e-40,
                  np.finfo(np.float32).tiny, 3.3e38, -(1 + 2**-7 + 2**-8), 0.1], np.float32)
    n = x.size
    model = fusedmlp.MLP([n, n], output="identity", dtype=np.float32, seed=0,
                         compute_dtype="bfloat16")
    model.set_params_vector(np.concatenate([np.eye(n, dtype=np.float32).ravel(),
                                            np.zeros(n, np.float32)]))
    lib = build(model, tmp_path, "r16")
    X = np.vstack([x, -x, np.random.default_rng(0).normal(size=n).astype(np.float32)])
    out = np.empty_like(X)
    assert call(lib.r16_predict, X, out) == 0
    # (+ 0: the sum over the fan-in starts at +0, so a -0 operand comes out +0 on both sides)
    expected = importlib.import_module("fusedmlp.export_c").round_bf16(X) + np.float32(0)
    assert out.tobytes() == expected.tobytes()
    assert model.predict(X).tobytes() == expected.tobytes()


@needs_bf16
@pytest.mark.parametrize("output", ["softmax", "identity"])
def test_bf16_models_export_their_numerics(tmp_path, output):
    # one layer: the same bf16 operands on both sides, only the float32 sums' order differs,
    # so the float32 bound holds, which the float32 numerics (no rounding) do not meet
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 20)).astype(np.float32)
    model = fusedmlp.MLP([20, 5], output=output, dtype=np.float32, seed=0,
                         compute_dtype="bfloat16")
    out, expected = exported_and_model(model, X, tmp_path, f"one_{output}")
    bound = output_bound(model, X)
    assert_within(out, expected, bound)
    model.compute_dtype = None
    plain = model.predict_proba(X) if output == "softmax" else model.predict(X)
    assert (np.abs(plain - expected) > bound).any()      # the bf16 rounding is what matches
    # deeper: a hidden activation within float32 rounding of fusedmlp's may round to the
    # other bf16 neighbour (one bf16 ulp, 2^-7 relative) where it lies near a midpoint: the
    # bound gets 2^-7 per layer after the first
    model = fusedmlp.MLP([3, 9, 5, 6, 7, 11, 13, 10, 4], activation=EVERY_ACTIVATION,
                         output=output, dtype=np.float32, seed=1, compute_dtype="bfloat16")
    X = rng.normal(size=(19, 3)).astype(np.float32)
    out, expected = exported_and_model(model, X, tmp_path, f"deep_{output}")
    scores = np.asarray(model.forward(X), np.float64)
    flips = 2.0 ** -7 * (len(model.layers) - 1) * max(1.0, float(np.max(np.abs(scores))))
    assert_within(out, expected, output_bound(model, X) + flips)


@pytest.mark.skipif(bool(BF16_WHY_NOT), reason=f"no bf16 product here: {BF16_WHY_NOT}")
@pytest.mark.parametrize("cc, std", BUILDS + OTHER_BUILDS)
def test_bf16_export_compiles_warning_free(tmp_path, cc, std):
    model = fusedmlp.MLP([3, 9, 5, 4], activation=["tanh", "softplus"], dtype=np.float32,
                         seed=1, compute_dtype="bfloat16")
    model.export_c(tmp_path, name="wb")
    result = subprocess.run([cc, f"-std={std}", *WARNINGS, "-c", "-o", str(tmp_path / "wb.o"),
                             str(tmp_path / "wb.c")], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr, result.stderr
