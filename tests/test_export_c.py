"""fusedmlp.export_c: the exported C compiles warning-free and reproduces predict_proba."""

import ctypes
import re
import shutil
import subprocess

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

import fusedmlp
from fusedmlp.cli import main
from fusedmlp.sklearn import MLPClassifier

CC = shutil.which("cc") or shutil.which("gcc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc/gcc) on PATH")
FLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic"]
# float32: both sides sum in float32 in different orders (a few ulps per layer of these
# small widths); float64 as the issue states
TOL = {np.float32: 2e-5, np.float64: 1e-13}


def build(model, tmp_path, name):
    fusedmlp.export_c(model, tmp_path, name=name)
    lib = tmp_path / f"{name}.so"
    subprocess.run([CC, *FLAGS, "-shared", "-fPIC", "-o", str(lib), str(tmp_path / f"{name}.c"),
                    "-lm"], check=True, capture_output=True)
    return ctypes.CDLL(str(lib))


def call(fn, X, out):
    return fn(X.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(len(X)),
              out.ctypes.data_as(ctypes.c_void_p))


@needs_cc
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("output", ["softmax", "sigmoid", "identity", "exp"])
def test_matches_predict_proba_every_activation(tmp_path, dtype, output):
    acts = ["relu", "sigmoid", "tanh", "leaky_relu", "elu", "softplus", "identity"]
    model = fusedmlp.MLP([3, 9, 5, 6, 7, 11, 13, 10, 4], activation=acts, output=output,
                         dtype=dtype, seed=1)
    X = np.random.default_rng(2).normal(size=(6, 3)).astype(dtype)
    lib = build(model, tmp_path, f"m_{output}")
    out = np.empty((6, 4), dtype)
    if model.is_classifier:
        assert call(getattr(lib, f"m_{output}_predict_proba"), X, out) == 0
        np.testing.assert_allclose(out, model.predict_proba(X), rtol=TOL[dtype],
                                   atol=TOL[dtype])
        labels = np.empty((6, 4) if output == "sigmoid" else 6, np.int32)
        assert call(getattr(lib, f"m_{output}_predict"), X, labels) == 0
        np.testing.assert_array_equal(labels, model.predict(X))
    else:
        assert call(getattr(lib, f"m_{output}_predict"), X, out) == 0
        np.testing.assert_allclose(out, model.predict(X), rtol=TOL[dtype], atol=TOL[dtype])


@needs_cc
def test_step_odd_sizes_and_codes(tmp_path):
    model = fusedmlp.MLP([1, 13, 1], activation="step", output="identity", dtype=np.float64,
                         seed=0)
    lib = build(model, tmp_path, "odd")
    X = np.linspace(-2, 2, 9)[:, None]
    out = np.empty((9, 1))
    assert call(lib.odd_predict, X, out) == 0
    np.testing.assert_allclose(out[:, 0], model.predict(X), rtol=1e-13, atol=1e-13)
    assert lib.odd_predict(None, ctypes.c_size_t(3), None) == 1          # NULL, rows > 0
    assert lib.odd_predict(None, ctypes.c_size_t(0), None) == 0
    X[4, 0] = np.nan
    assert call(lib.odd_predict, X, out) == 2                             # as predict refuses


@needs_cc
def test_fitted_estimator(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    clf = MLPClassifier(hidden_layer_sizes=(10,), max_iter=20, random_state=0).fit(X, y)
    with pytest.raises(NotFittedError):
        MLPClassifier().export_c(tmp_path, name="x")
    lib = build(clf, tmp_path, "clf")
    Xm = X.astype(clf.model_.dtype)
    labels = np.empty(60, np.int32)
    assert call(lib.clf_predict, Xm, labels) == 0
    np.testing.assert_array_equal(clf.classes_[labels], clf.predict(X))


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
