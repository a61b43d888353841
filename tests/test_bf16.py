"""bfloat16 compute (compute_dtype="bfloat16", docs/bf16.md).

The product C = bf16(op(A)) @ bf16(op(B)) summed in float32 (csrc/bf16_gemm.h) is checked
against a float64 product of the same bf16-rounded operands; the tests that run it skip, with
the reason, on CPUs without AVX512-BF16.
"""

import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import fusedmlp
from fusedmlp import _kernels
from fusedmlp.sklearn import MLPClassifier, MLPRegressor

import oracle

WHY_NOT = _kernels.bf16_why_not()
needs_bf16 = pytest.mark.skipif(bool(WHY_NOT), reason=f"no bf16 product here: {WHY_NOT}")
BACKEND = fusedmlp.show_config(as_dict=True)["bfloat16"].get("backend")
# The own kernel sums every output element in one order wherever it lies in a product; MKL's
# product (the default on AMX CPUs with the mkl package, or FUSEDMLP_BF16_GEMM=mkl) does not
# promise that, so the tests of those bits run on the own kernel only (docs/bf16.md).
needs_own = pytest.mark.skipif(bool(WHY_NOT) or BACKEND != "own",
                               reason=f"tests the own bf16 kernel's bits; the product here: "
                                      f"{BACKEND or WHY_NOT}")


bf16_round = oracle.bf16_round        # float32 -> nearest bfloat16 (ties to even), as float32


def test_bf16_round_reference():
    # 1 + 2^-8 is halfway between two bf16 neighbours: ties go to the even one (1.0);
    # 1 + 3 * 2^-8 goes up to 1 + 2^-6 (even), 1 + 2^-8 + 2^-20 goes up
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -2.5, 0.0], np.float32)
    oracle.assert_same_bits(bf16_round(x), [1.0, 1 + 2**-6, 1 + 2**-7, -2.5, 0.0],
                            why=oracle.EXACT)


# Shapes around the kernel's blocks: micro-tiles of 8 x 32, 128 pairs (256) along k, 96 rows
# and 1024 columns per block, odd k (a half pair), single rows and columns, k = 0.
SHAPES = [(1, 1, 1), (3, 5, 7), (8, 32, 2), (9, 33, 3), (32, 10, 128), (97, 1025, 257),
          (100, 10, 513), (17, 70, 256), (193, 31, 1), (4, 3, 0), (1, 300, 301), (1, 3, 0)]


# every shape with every transposition: the products the kernel tests run
each_product = pytest.mark.parametrize(
    "m, n, k, trans_a, trans_b",
    [(m, n, k, ta, tb) for m, n, k in SHAPES for ta in (False, True) for tb in (False, True)])


def _operands(m, n, k, trans_a, trans_b):
    """float32 A and B of a product C[m, n] = op(A) @ op(B), as stored (transposed or not)."""
    rng = np.random.default_rng(m * 1000 + n + k)
    A = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    B = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    return A, B


@needs_bf16
@each_product
def test_product_matches_float64_of_rounded_operands(m, n, k, trans_a, trans_b):
    A, B = _operands(m, n, k, trans_a, trans_b)
    C = np.full((m, n), np.nan, np.float32)
    _kernels.matmul_bf16(A, B, C, trans_a, trans_b)
    op_a = bf16_round(A).astype(np.float64)
    op_b = bf16_round(B).astype(np.float64)
    op_a = op_a.T if trans_a else op_a
    op_b = op_b.T if trans_b else op_b
    # the operands are exact in float64; only the float32 sums differ: k roundings of at most
    # 2^-24 of the running sum of |terms|
    bound = np.abs(op_a) @ np.abs(op_b) * (k + 1) * 2.0**-24
    assert np.all(np.abs(C - op_a @ op_b) <= bound)


@needs_bf16
def test_product_is_not_float32():
    # the operands really are rounded: 1 + 2^-9 is 1 in bf16
    A = np.full((4, 6), 1 + 2**-9, np.float32)
    B = np.ones((6, 40), np.float32)
    C = np.empty((4, 40), np.float32)
    _kernels.matmul_bf16(A, B, C, False, False)
    oracle.assert_same_bits(C, np.full_like(C, 6.0), why=oracle.EXACT)


@needs_own
def test_product_rows_and_columns_blocks_agree_bitwise():
    # the threads split C into blocks of rows or columns: each element must come out the same
    rng = np.random.default_rng(7)
    A = rng.standard_normal((70, 600)).astype(np.float32)
    B = rng.standard_normal((600, 90)).astype(np.float32)
    whole = np.empty((70, 90), np.float32)
    _kernels.matmul_bf16(A, B, whole, False, False)
    rows = np.empty((33, 90), np.float32)
    _kernels.matmul_bf16(np.ascontiguousarray(A[37:]), B, rows, False, False)
    cols = np.empty((70, 41), np.float32)
    _kernels.matmul_bf16(A, np.ascontiguousarray(B[:, 49:]), cols, False, False)
    oracle.assert_same_bits(rows, whole[37:], why=oracle.OWN_KERNEL)
    oracle.assert_same_bits(cols, whole[:, 49:], why=oracle.OWN_KERNEL)
    # single rows take a path of their own (no packing): the same numbers
    for i in (0, 37, 69):
        row = np.empty((1, 90), np.float32)
        _kernels.matmul_bf16(np.ascontiguousarray(A[i:i + 1]), B, row, False, False)
        oracle.assert_same_bits(row[0], whole[i], why=oracle.OWN_KERNEL)


def test_why_not_is_a_reason_or_empty():
    assert isinstance(WHY_NOT, str)
    if WHY_NOT:
        assert "bf16" in WHY_NOT.lower() or "avx" in WHY_NOT.lower() or "xsave" in WHY_NOT.lower()


# ---------------------------------------------------------------------- the model setting
def _digits(n=600):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X[:n] / 16).astype(np.float32), y[:n]


def test_compute_dtype_default_is_none_and_refusals():
    model = fusedmlp.MLP([4, 3, 2])
    assert model.compute_dtype is None and not model.network.bf16
    with pytest.raises(ValueError, match="compute_dtype must be None or 'bfloat16', got str"):
        fusedmlp.MLP([4, 2], compute_dtype="float16")
    with pytest.raises(TypeError, match="compute_dtype must be None or 'bfloat16', got int"):
        fusedmlp.MLP([4, 2], compute_dtype=16)
    with pytest.raises(ValueError, match="needs a float32 model.*float64"):
        fusedmlp.MLP([4, 2], dtype=np.float64, compute_dtype="bfloat16")
    with pytest.raises(ValueError, match="needs a float32 model"):
        fusedmlp.MLP([4, 2], dtype=np.float64).compute_dtype = "bfloat16"


def test_refused_where_the_cpu_lacks_it(monkeypatch):
    from fusedmlp import bf16

    monkeypatch.setattr(bf16, "why_unavailable", lambda: "the CPU lacks AVX512-BF16 (test)")
    with pytest.raises(ValueError, match=r"compute_dtype='bfloat16' needs a CPU with "
                                         r"AVX512-BF16 or AMX: the CPU lacks"):
        fusedmlp.MLP([4, 2], compute_dtype="bfloat16")
    assert fusedmlp.show_config(as_dict=True)["bfloat16"]["available"] is False
    # a file or pickle of a bf16 model still loads, computing in float32, with a warning
    with pytest.warns(RuntimeWarning, match="computes in float32 here"):
        assert bf16.restore_compute_dtype("bfloat16", "float32") is None


def test_show_config_reports_bf16():
    info = fusedmlp.show_config(as_dict=True)["bfloat16"]
    assert info["available"] is (not WHY_NOT)
    assert info["why"] == (WHY_NOT or info["why"])
    if info["available"]:               # which product, and why (AMX decides the default)
        assert info["backend"] in ("own", "mkl") and info["backend_why"]
        if not os.environ.get("FUSEDMLP_BF16_GEMM") and info["backend"] == "own":
            assert "only with AMX" in info["backend_why"] or "unavailable" in info["backend_why"]


@needs_bf16
def test_gradients_at_bf16_tolerance_and_against_an_emulation():
    X, y = _digits(50)
    model = fusedmlp.MLP([64, 48, 10], activation="tanh", seed=0, compute_dtype="bfloat16")
    exact = model.astype(np.float64)
    assert exact.compute_dtype is None
    loss, grads = model.loss_and_gradients(X, y)
    loss64, grads64 = exact.loss_and_gradients(X, y)
    assert abs(loss - loss64) < 1e-2 * abs(loss64)
    for (dW, db), (dW64, db64) in zip(grads, grads64):
        assert np.linalg.norm(dW - dW64) < 2e-2 * np.linalg.norm(dW64)
        assert np.linalg.norm(db - db64) < 2e-2 * np.linalg.norm(db64)
    # the same step in NumPy with the same roundings: products of bf16 operands in float64
    (W1, b1), (W2, b2) = [(layer.W.astype(np.float64), layer.b.astype(np.float64))
                          for layer in exact.layers]
    r = lambda a: bf16_round(a).astype(np.float64)  # noqa: E731
    A1 = np.tanh(r(X) @ r(W1) + b1)
    Z = r(A1) @ r(W2) + b2
    P = np.exp(Z - Z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    dZ2 = P.copy()
    dZ2[np.arange(len(y)), y] -= 1
    dZ2 /= len(y)
    dZ1 = (r(dZ2) @ r(W2).T) * (1 - A1 ** 2)
    # float32 activations and sums: bf16 roundings of nearby float32 values may differ by one
    # bf16 step (2^-8), so compare at a few bf16 steps of the largest entry
    for got, want in ((grads[1][0], r(A1).T @ r(dZ2)), (grads[0][0], r(X).T @ r(dZ1))):
        assert np.abs(got - want).max() < 2e-2 * np.abs(want).max()


@needs_bf16
def test_training_reaches_float32_accuracy_and_reruns_bitwise():
    X, y = _digits(1797)
    train, test = slice(0, 1400), slice(1400, None)
    scores, params = {}, {}
    for compute in (None, "bfloat16", "bfloat16"):
        model = fusedmlp.MLP([64, 128, 10], seed=0, n_threads=1, compute_dtype=compute)
        model.fit(X[train], y[train], epochs=5, batch_size=32, optimizer=fusedmlp.Adam(1e-3))
        scores.setdefault(compute, model.score(X[test], y[test]))
        params.setdefault(compute, []).append(model.get_params_vector())
    assert abs(scores["bfloat16"] - scores[None]) <= 0.005 + 1e-12
    oracle.assert_same_bits(params["bfloat16"][0], params["bfloat16"][1], why=oracle.SAME_CALL)
    assert not np.array_equal(params["bfloat16"][0], params[None][0])


@needs_own
def test_results_do_not_depend_on_n_threads():
    X, y = _digits(512)
    runs = []
    for n_threads in (1, 2, 3):
        model = fusedmlp.MLP([64, 96, 64, 10], seed=1, n_threads=n_threads,
                             compute_dtype="bfloat16")
        model.fit(X, y, epochs=2, batch_size=256, optimizer=fusedmlp.Adam(1e-3), shuffle=False)
        runs.append((model.get_params_vector(), model.predict_proba(X)))
    for params, proba in runs[1:]:
        oracle.assert_same_bits(params, runs[0][0], why=oracle.OWN_KERNEL)
        oracle.assert_same_bits(proba, runs[0][1], why=oracle.OWN_KERNEL)


@needs_bf16
def test_inference_uses_bf16_and_the_setting_switches(tmp_path):
    X, _ = _digits(64)
    model = fusedmlp.MLP([64, 32, 10], seed=0, compute_dtype="bfloat16")
    bf16_scores = model.forward(X)
    model.compute_dtype = None
    f32_scores = model.forward(X)
    assert not np.array_equal(bf16_scores, f32_scores)
    np.testing.assert_allclose(bf16_scores, f32_scores, rtol=0.05, atol=0.05)
    model.compute_dtype = "bfloat16"
    oracle.assert_same_bits(model.forward(X), bf16_scores, why=oracle.SAME_CALL)
    # save/load and pickling keep float32 parameters and the compute dtype
    model.save(tmp_path / "m.npz")
    loaded = fusedmlp.load(tmp_path / "m.npz")
    assert loaded.compute_dtype == "bfloat16" and loaded.dtype == np.float32
    assert "compute_dtype='bfloat16'" in repr(loaded)
    oracle.assert_same_bits(loaded.forward(X), bf16_scores, why=oracle.SAME_CALL)
    unpickled = pickle.loads(pickle.dumps(model))
    assert unpickled.compute_dtype == "bfloat16"
    oracle.assert_same_bits(unpickled.forward(X), bf16_scores, why=oracle.SAME_CALL)


def test_files_without_compute_dtype_and_bad_ones(tmp_path):
    model = fusedmlp.MLP([4, 3, 2], seed=0)
    model.save(tmp_path / "plain.npz")
    assert fusedmlp.load(tmp_path / "plain.npz").compute_dtype is None
    with zipfile.ZipFile(tmp_path / "plain.npz") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header_text = np.load(tmp_path / "plain.npz")["header"].tobytes().decode()
    header = json.loads(header_text)
    header["dtype"], header["compute_dtype"] = "float64", "bfloat16"
    buffer = io.BytesIO()
    np.save(buffer, np.frombuffer(json.dumps(header).encode(), np.uint8))
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, buffer.getvalue() if name == "header.npy" else data)
    with pytest.raises(ValueError, match="compute_dtype"):
        fusedmlp.load(tmp_path / "bad.npz")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_estimators_take_compute_dtype(Estimator):
    est = Estimator(compute_dtype="bfloat16")
    assert est.get_params()["compute_dtype"] == "bfloat16"
    assert Estimator().get_params()["compute_dtype"] is None
    X, y = _digits(200)
    X64 = X.astype(np.float64)
    with pytest.raises(ValueError, match="needs a float32 model"):
        Estimator(compute_dtype="bfloat16", dtype=np.float64, max_iter=1).fit(X64, y)
    if WHY_NOT:
        with pytest.raises(ValueError, match="needs a CPU with AVX512-BF16"):
            est.set_params(max_iter=1).fit(X64, y)
        return
    # dtype=None: float32 parameters even for float64 data
    est.set_params(max_iter=3, hidden_layer_sizes=(32,), random_state=0).fit(X64, y)
    assert est.model_.compute_dtype == "bfloat16" and est.model_.dtype == np.float32
    est.set_params(compute_dtype=None, warm_start=True).fit(X64, y)
    assert est.model_.compute_dtype is None


@needs_bf16
def test_bench_table_runs(capsys, monkeypatch):
    from fusedmlp.cli import bench_bf16

    monkeypatch.setattr(bench_bf16, "STEP_CONFIGS", [((64, 32, 10), 16)])
    monkeypatch.setattr(bench_bf16, "GEMM_SHAPES", [(8, 64, 32)])
    monkeypatch.setattr(bench_bf16, "TWO_THREAD_CONFIGS", [((64, 48, 10), 16)])
    monkeypatch.setattr(bench_bf16, "INFERENCE_SIZES", (64, 32, 10))
    monkeypatch.setattr(bench_bf16, "INFERENCE_ROWS", (1, 3))
    assert bench_bf16.main(["--rounds", "1", "--target-time", "0.001", "--no-torch",
                            "--no-epoch"]) == 0
    out = capsys.readouterr().out
    assert "| 8 x 64 x 32 |" in out and "| 64-32-10 | 16 |" in out
    assert "2 threads" in out and "| 64-48-10 | 16 |" in out
    assert "predict_proba at 64-32-10" in out and "| 3 |" in out
    assert f"bf16 product {BACKEND}" in out


FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


@needs_bf16
def test_fashion_mnist_accuracy_matches_float32():
    if not os.path.isdir(FASHION_MNIST):
        pytest.skip(f"{FASHION_MNIST} is absent (apt-get install dataset-fashion-mnist)")
    from fusedmlp.cli.datasets import load_idx_dataset

    data = load_idx_dataset(FASHION_MNIST)
    X, y = data.X_train[:10000], data.y_train[:10000]     # a subset: the test stays short
    accuracy = {}
    for compute in (None, "bfloat16"):
        model = fusedmlp.MLP([784, 128, 10], seed=0, n_threads=1, compute_dtype=compute)
        model.fit(X, y, epochs=5, batch_size=128, optimizer=fusedmlp.Adam(1e-3))
        accuracy[compute] = model.score(data.X_test, data.y_test)
    assert accuracy[None] > 0.8
    assert abs(accuracy["bfloat16"] - accuracy[None]) <= 0.005


@needs_bf16
def test_non_finite_parameters_are_reported_as_in_float32():
    model = fusedmlp.MLP([4, 8, 3], seed=0, compute_dtype="bfloat16")
    model.layers[0].W[1, 2] = np.nan
    with pytest.raises(FloatingPointError, match="not finite"):
        model.predict_proba(np.ones((5, 4)))


def test_estimators_check_compute_dtype_at_fit_not_init():
    est = MLPClassifier(compute_dtype="float8", max_iter=1)   # scikit-learn: __init__ stores
    X, y = _digits(40)
    with pytest.raises(ValueError, match="compute_dtype must be None or 'bfloat16'"):
        est.fit(X, y)


@needs_own
def test_a_row_scores_the_same_alone_or_in_a_batch():
    X, _ = _digits(300)
    model = fusedmlp.MLP([64, 40, 10], seed=0, compute_dtype="bfloat16", n_threads=2)
    whole = model.predict_proba(X)
    for i in (0, 7, 299):
        oracle.assert_same_bits(model.predict_proba(X[i:i + 1])[0], whole[i],
                                why=oracle.OWN_KERNEL)
    for rows in (2, 3, 4, 5):           # the few-rows path (<= 4) and the packed one agree
        oracle.assert_same_bits(model.predict_proba(X[5:5 + rows]), whole[5:5 + rows],
                                why=oracle.OWN_KERNEL)


@needs_own
@each_product
def test_prepacked_operand_gives_the_same_bits(m, n, k, trans_a, trans_b):
    # fm_bf16_pack + fm_bf16_gemm_packed: what a multi-part step does with its weights
    A, B = _operands(m, n, k, trans_a, trans_b)
    direct, packed = np.zeros((m, n), np.float32), np.full((m, n), np.nan, np.float32)
    _kernels.matmul_bf16(A, B, direct, trans_a, trans_b)
    _kernels.matmul_bf16(A, B, packed, trans_a, trans_b, True)
    oracle.assert_same_bits(packed, direct, why=oracle.OWN_KERNEL)


def _change_in_place(model, est):
    model.layers[1].W[3:5] *= -2            # a user's write into the public arrays


def _change_coefs(model, est):
    est.coefs_[0][:7] = 0.25                 # the estimator's views


def _change_vector(model, est):
    model.set_params_vector(model.get_params_vector()[::-1].copy())


def _change_by_partial_fit(model, est):
    X, y = _digits(256)
    est.partial_fit(X[::-1], y[::-1])


def _change_by_assigned_coefs(model, est):
    X, y = _digits(256)                      # assigned weights are taken by the next fit
    est.coefs_ = [0.5 * W for W in est.coefs_]
    est.intercepts_ = [b + 0.1 for b in est.intercepts_]
    est.partial_fit(X, y)


@needs_bf16
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("change", [_change_in_place, _change_coefs, _change_vector,
                                    _change_by_partial_fit, _change_by_assigned_coefs])
def test_packed_weights_are_never_stale(change):
    # A step of two parts packs the weights once for all its products; whatever changed
    # them since (the last update, a user's write, set_params_vector, partial_fit) must be
    # what the next step and the next prediction see: the same bits as a fresh one-thread
    # model (per-product conversion) with those parameters.
    X, y = _digits(256)
    est = MLPClassifier(hidden_layer_sizes=(96, 64), batch_size=256, max_iter=2,
                        n_threads=2, compute_dtype="bfloat16", random_state=0, shuffle=False)
    est.fit(X, y)
    model = est._fitted_model("coefs_")
    change(model, est)
    # fresh: the same split (its packing is new), so that the bits agree with either backend
    fresh = fusedmlp.MLP([64, 96, 64, 10], n_threads=2, compute_dtype="bfloat16")
    fresh.set_params_vector(model.get_params_vector())
    oracle.assert_same_bits(model.predict_proba(X), fresh.predict_proba(X), why=oracle.FIXED_SPLIT)
    opt, fresh_opt = fusedmlp.Adam(1e-3), fusedmlp.Adam(1e-3)
    for _ in range(2):
        model.train_step(X, y, opt)
        fresh.train_step(X, y, fresh_opt)
        oracle.assert_same_bits(model.get_params_vector(), fresh.get_params_vector(),
                                why=oracle.FIXED_SPLIT)
    model.layers[0].W[:] = 0                 # after a packed step, inference sees the write
    fresh.layers[0].W[:] = 0
    oracle.assert_same_bits(model.predict_proba(X), fresh.predict_proba(X), why=oracle.FIXED_SPLIT)


@needs_bf16
def test_copies_and_files_compute_the_same_bits(tmp_path):
    X, y = _digits(256)
    model = fusedmlp.MLP([64, 96, 64, 10], seed=3, n_threads=2, compute_dtype="bfloat16")
    model.fit(X, y, epochs=1, batch_size=256, optimizer=fusedmlp.Adam(1e-3), shuffle=False)
    model.save(tmp_path / "m.npz")
    copies = [fusedmlp.load(tmp_path / "m.npz"), pickle.loads(pickle.dumps(model)),
              fusedmlp.MLP.from_state_dict(model.state_dict()), model.astype(np.float32)]
    for copy in copies:
        copy.n_threads = 2
        oracle.assert_same_bits(copy.predict_proba(X), model.predict_proba(X),
                                why=oracle.SAME_CALL)
    opt = fusedmlp.Adam(1e-3)
    model.train_step(X, y, opt)
    for copy in copies:
        copy.train_step(X, y, fusedmlp.Adam(1e-3))
        oracle.assert_same_bits(copy.get_params_vector(), model.get_params_vector(),
                                why=oracle.SAME_CALL)


# ------------------------------------------------------- MKL's product (FUSEDMLP_BF16_GEMM)
def _mkl_installed():
    import importlib.metadata
    try:
        importlib.metadata.distribution("mkl")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


MKL_RUN = """
import json, sys, numpy as np, fusedmlp
from fusedmlp import _kernels
inputs = np.load(sys.argv[1])
out = {}
for name in inputs.files:
    if name.startswith("A"):
        case = name[1:]
        trans_a, trans_b = (bool(int(t)) for t in case.split("_")[-2:])
        A, B = inputs[name], inputs["B" + case]
        out["C" + case] = np.full((A.shape[trans_a], B.shape[1 - trans_b]), np.nan, np.float32)
        _kernels.matmul_bf16(A, B, out["C" + case], trans_a, trans_b)
for run, n_threads in enumerate((1, 1, 2)):
    model = fusedmlp.MLP([64, 96, 64, 10], seed=1, n_threads=n_threads, compute_dtype="bfloat16")
    model.fit(inputs["X"], inputs["y"], epochs=2, batch_size=256,
              optimizer=fusedmlp.Adam(1e-3), shuffle=False)
    out[f"run{run}"] = model.predict_proba(inputs["X"])
np.savez(sys.argv[2], **out)
print(json.dumps(fusedmlp.show_config(as_dict=True)["bfloat16"]))
"""


def _bf16_subprocess(backend, code, *args):
    import subprocess
    import sys
    env = dict(os.environ, FUSEDMLP_BF16_GEMM=backend)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120)


@needs_bf16
@pytest.mark.skipif(not _mkl_installed(), reason="the mkl package is not installed")
def test_mkl_product_forced_matches_the_rounded_reference_and_the_own_kernel(tmp_path):
    X, y = _digits(512)
    inputs = {"X": X, "y": y}
    for m, n, k in SHAPES:
        for trans_a in (0, 1):
            for trans_b in (0, 1):
                rng = np.random.default_rng(m * 1000 + n + k)
                case = f"{m}_{n}_{k}_{trans_a}_{trans_b}"
                inputs["A" + case] = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
                inputs["B" + case] = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    np.savez(tmp_path / "in.npz", **inputs)
    done = _bf16_subprocess("mkl", MKL_RUN, tmp_path / "in.npz", tmp_path / "out.npz")
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout.splitlines()[-1])
    assert config["backend"] == "mkl" and "FUSEDMLP_BF16_GEMM=mkl" in config["backend_why"]
    assert config["kernel"] == "MKL's cblas_gemm_bf16bf16f32"
    out = np.load(tmp_path / "out.npz")
    for name in inputs:
        if name.startswith("A"):
            case = name[1:]
            k = int(case.split("_")[2])
            trans_a, trans_b = (bool(int(t)) for t in case.split("_")[-2:])
            op_a = bf16_round(inputs[name]).astype(np.float64)
            op_b = bf16_round(inputs["B" + case]).astype(np.float64)
            op_a, op_b = (op_a.T if trans_a else op_a), (op_b.T if trans_b else op_b)
            # within float32 sums of the same bf16 operands (test_product_matches_...)
            bound = np.abs(op_a) @ np.abs(op_b) * (k + 1) * 2.0**-24
            assert np.all(np.abs(out["C" + case] - op_a @ op_b) <= bound), case
    # reruns at one thread count give the same bits; MKL's sums are in its own order, so
    # against fusedmlp's kernel (and across thread counts) only at bf16 tolerances
    oracle.assert_same_bits(out["run0"], out["run1"], why=oracle.SAME_CALL)
    np.testing.assert_allclose(out["run2"], out["run0"], atol=1e-3)
    if fusedmlp.show_config(as_dict=True)["bfloat16"]["backend"] == "own":
        model = fusedmlp.MLP([64, 96, 64, 10], seed=1, n_threads=1, compute_dtype="bfloat16")
        model.fit(X, y, epochs=2, batch_size=256, optimizer=fusedmlp.Adam(1e-3), shuffle=False)
        np.testing.assert_allclose(out["run0"], model.predict_proba(X), atol=1e-3)


def test_bf16_backend_setting_is_checked():
    done = _bf16_subprocess("blas", "import fusedmlp._network")
    assert done.returncode != 0
    assert "FUSEDMLP_BF16_GEMM must be own or mkl, got 'blas'" in done.stderr
    if not _mkl_installed():
        done = _bf16_subprocess("mkl", "import fusedmlp._network")
        assert "FUSEDMLP_BF16_GEMM=mkl: the mkl package is not installed" in done.stderr
