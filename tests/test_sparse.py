"""scipy.sparse X: the same results as the dense path to rounding, without the dense X.

The compiled first layer (csrc/_sparse.pxd) runs on the stored entries; these tests compare
every output kind, both dtypes, sample weights, the training epoch and the estimators
against the same calls on X.toarray(), and check the refusals and the memory bound.

Exactness: the sparse first layer (fusedmlp's loop over the stored entries) and the dense one
(the BLAS's product, whose kernel it picks) add in different orders, so sparse and dense are
compared within the bounds derived in tests/oracle.py, never bit for bit: one step from the
same parameters within loss_and_gradients_bound; inference within oracle.Outputs; SGD runs
(linear in the gradient) within the chain of their steps' sums (sgd_chain). Adam and L-BFGS
runs are not compared across the two paths: an adaptive step or a line search turns a
gradient's rounding near 0 into a whole step, so no rounding bound holds; there the CSR and
CSC inputs (the same values reach the same kernels) give the same bits.
"""

import tracemalloc
import warnings

import numpy as np
import pytest

import fusedmlp
from fusedmlp import _network
from fusedmlp.sparse import SparseX, as_csr

import oracle

sps = pytest.importorskip("scipy.sparse")

DTYPES = [np.float32, np.float64]


def sgd_chain(sizes, batch, steps, momentum=0.0):
    """k of oracle.rounding_tolerance for the parameters after ``steps`` SGD steps
    (oracle.step_chain), times 1 / (1 - momentum): momentum adds each gradient into the
    later steps' updates with weights summing to that (Nesterov's look-ahead too)."""
    return int(np.ceil(oracle.step_chain(sizes, batch, steps) / (1 - momentum)))


def mlp(sizes, dtype=np.float64, seed=0, **kwargs):
    """fusedmlp.MLP with its biases away from 0: an empty row's pre-activations are the
    biases, and relu's derivative bound jumps where a pre-activation lies within its
    rounding of 0 (oracle.loss_and_gradients_bound), which would leave it catching nothing."""
    model = fusedmlp.MLP(sizes, dtype=dtype, seed=seed, **kwargs)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.b = rng.uniform(0.1, 0.3, layer.n_out) * rng.choice([-1, 1], layer.n_out)
    return model


def assert_gradients_within(model, X, y, loss, grads, sample_weight=None):
    """``(loss, grads)`` of ``model`` on X (sparse or dense) within their derived bounds."""
    expected, loss_bound, exp_grads, bounds = oracle.loss_and_gradients_bound(
        oracle.parameters_of(model), oracle.activations_of(model), model.output,
        oracle.Outputs.of(model, X).X, y, model.dtype, sample_weight)
    oracle.assert_within(loss, expected, loss_bound)
    for (dW, db), (eW, eb), (bW, bb) in zip(grads, exp_grads, bounds):
        oracle.assert_within(dW, eW, bW)
        oracle.assert_within(db, eb, bb)


def sparse_data(n=120, n_features=40, density=0.1, seed=0):
    """A CSR matrix with some empty rows, and a generator for the targets."""
    rng = np.random.default_rng(seed)
    X = sps.random(n, n_features, density=density, format="csr", random_state=seed,
                   data_rvs=lambda k: rng.normal(size=k))
    X = X.tolil()
    X[3, :] = 0
    X[7, :] = 0                   # empty rows
    return X.tocsr(), rng


def targets(output, rng, n, n_out):
    if output == "softmax":
        return rng.integers(0, n_out, n)
    if output == "sigmoid":
        return (rng.random((n, n_out)) > 0.5).astype(float)
    if output == "exp":
        return rng.poisson(1.0, (n, n_out)).astype(float)
    return rng.normal(size=(n, n_out))


OUTPUTS = ["softmax", "identity", "sigmoid", "exp"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("hidden", [[], [16, 8]], ids=["linear", "two-hidden"])
def test_step_and_inference_match_dense(dtype, output, hidden):
    X, rng = sparse_data()
    n_out = 3
    y = targets(output, rng, X.shape[0], n_out)
    w = rng.random(X.shape[0])
    sizes = [X.shape[1], *hidden, n_out]
    model = mlp(sizes, output=output, dtype=dtype, seed=1)
    dense = mlp(sizes, output=output, dtype=dtype, seed=1)
    Xd = X.toarray()
    for weights in (None, w):
        for data, net in ((Xd, dense), (X, model)):
            loss, grads = net.loss_and_gradients(data, y, sample_weight=weights)
            assert_gradients_within(net, X, y, loss, grads, weights)
    # steps (plain SGD: an update linear in the gradient), each from the same parameters
    seen = Xd.astype(dtype).astype(np.float64)
    activations = oracle.activations_of(model)
    own = oracle.rounding_tolerance(dtype, 2)      # each side's product 0.1 g and subtraction
    for _ in range(3):
        dense.set_params_vector(model.get_params_vector())
        params = oracle.parameters_of(model)
        expected, loss_bound, grads, bounds = oracle.loss_and_gradients_bound(
            params, activations, output, seen, y, dtype)
        oracle.assert_within(model.train_step(X, y, fusedmlp.SGD(0.1)), expected, loss_bound)
        oracle.assert_within(dense.train_step(Xd, y, fusedmlp.SGD(0.1)), expected, loss_bound)
        for sparse_layer, dense_layer, (W, b), (dW, db), (bW, bb) in zip(
                model.layers, dense.layers, params, grads, bounds):
            oracle.assert_within(sparse_layer.W, dense_layer.W,
                                 0.1 * bW + own * (np.abs(W) + 0.1 * np.abs(dW)))
            oracle.assert_within(sparse_layer.b, dense_layer.b,
                                 0.1 * bb + own * (np.abs(b) + 0.1 * np.abs(db)))
    # inference, each path within its bounds of the same float64 values
    dense.set_params_vector(model.get_params_vector())
    outputs = oracle.Outputs.of(model, X)
    w64 = w.astype(np.float64)
    for net, data in ((model, X), (dense, Xd)):
        out = np.empty((X.shape[0], n_out), dtype)
        assert net.forward(data, out=out) is out
        outputs.check("forward", out)
        outputs.check("predict", net.predict(data))
        outputs.check("loss", net.loss(data, y, sample_weight=w), y, w64)
        outputs.check("score", net.score(data, y), y)
        if net.is_classifier:
            outputs.check("predict_proba", net.predict_proba(data))
            outputs.check("predict_log_proba", net.predict_log_proba(data))


@pytest.mark.parametrize("output", OUTPUTS)
def test_sparse_gradients_agree_with_central_differences(output):
    X, rng = sparse_data(n=12, n_features=7, density=0.3)
    model = fusedmlp.MLP([7, 5, 3], activation="tanh", output=output, seed=0)
    assert max(fusedmlp.gradient_check(model, X, targets(output, rng, 12, 3))) < 1e-6


@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_matches_dense(dtype):
    """The compiled epoch (shuffled batches gathered from the CSR rows, validation split and
    scored inside the call, sample weights, full training accuracy) as on the dense X: SGD
    runs, so the parameters agree within the chain of their steps' sums (a batch gathered
    differently would not), and the last epoch's accuracy, validation loss and validation
    accuracy within their bounds at each model's final parameters."""
    X, rng = sparse_data(n=300)
    y = rng.integers(0, 4, X.shape[0])
    w = rng.random(X.shape[0])
    X_val, _ = sparse_data(n=50, seed=5)
    sizes = [40, 32, 4]
    runs = []
    for data, val in ((X.toarray(), X_val.toarray()), (X, X_val)):
        model = fusedmlp.MLP(sizes, dtype=dtype, seed=3)
        history = model.fit(data, y, epochs=3, batch_size=32, sample_weight=w,
                            validation_data=(val, y[:50]), train_accuracy="full",
                            optimizer=fusedmlp.SGD(0.1))
        split = fusedmlp.MLP(sizes, dtype=dtype, seed=3)
        split.fit(data, y, epochs=2, batch_size=50, validation_fraction=0.2,
                  optimizer=fusedmlp.SGD(0.1, momentum=0.9))
        runs.append((model, history, split))
        oracle.Outputs.of(model, X).check("score", history["accuracy"][-1], y)
        at_end = oracle.Outputs.of(model, X_val)
        at_end.check("score", history["val_accuracy"][-1], y[:50])
        at_end.check("loss", history["val_loss"][-1], y[:50])
    (model_d, history_d, split_d), (model_s, history_s, split_s) = runs
    oracle.assert_rounding_close(model_s.get_params_vector(), model_d.get_params_vector(),
                                 dtype, sgd_chain(sizes, 32, 3 * -(-300 // 32)))
    oracle.assert_rounding_close(split_s.get_params_vector(), split_d.get_params_vector(),
                                 dtype, sgd_chain(sizes, 50, 2 * -(-240 // 50), 0.9))
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert len(history_s[key]) == len(history_d[key]) == 3


def test_every_format_index_type_and_layout_gives_the_same_model():
    """CSC, COO, LIL, DOK, BSR, DIA and the sparse arrays are converted once; int64 or int32
    indices, unsorted indices, duplicate entries (summed, as their dense form) and
    explicit zeros all mean what X.toarray() means; the caller's matrix is untouched."""
    X, rng = sparse_data(n=60, n_features=12, density=0.3)
    y = rng.integers(0, 3, 60)
    reference = mlp([12, 8, 3])
    # every entry split in two (1/4 and 3/4 of it) plus explicit zeros, each row's entries
    # in decreasing column order: an unsorted CSR with duplicates, built as user code may
    coo = X.tocoo()
    rows = np.concatenate([coo.row, coo.row, coo.row[:5]])
    cols = np.concatenate([coo.col, coo.col, (coo.col[:5] + 1) % 12])
    vals = np.concatenate([0.25 * coo.data, 0.75 * coo.data, np.zeros(5)])
    order = np.lexsort((-cols, rows))
    indptr = np.searchsorted(rows[order], np.arange(X.shape[0] + 1))
    raw = sps.csr_matrix((vals[order], cols[order].astype(np.int32), indptr), shape=X.shape)
    assert not raw.has_canonical_format
    before = (raw.data.copy(), raw.indices.copy())
    int64 = X.copy()
    int64.indices, int64.indptr = int64.indices.astype(np.int64), int64.indptr.astype(np.int64)
    integers = sps.csr_matrix(np.round(4 * X.toarray()).astype(np.int32))
    variants = [X.tocsc(), X.tocoo(), X.tolil(), X.todok(), X.tobsr(), X.todia(),
                sps.csr_array(X), sps.csc_array(X), int64, raw, X.astype(np.float32), integers]
    for variant in variants:
        # what X.toarray() means, within the bounds of the sums over its entries
        model = mlp([12, 8, 3])
        loss, grads = model.loss_and_gradients(variant, y)
        assert_gradients_within(model, variant.toarray(), y, loss, grads)
        oracle.Outputs.of(reference, variant.toarray()).check("forward",
                                                               model.forward(variant))
    model = mlp([12, 8, 3])
    assert_gradients_within(model, X.toarray(), y, *model.loss_and_gradients(X, y))
    oracle.assert_same_bits(raw.data, before[0], why=oracle.UNTOUCHED)
    oracle.assert_same_bits(raw.indices, before[1], why=oracle.UNTOUCHED)


def test_empty_rows_and_an_all_empty_matrix():
    empty = sps.csr_matrix((5, 10))
    model = fusedmlp.MLP([10, 4, 2], dtype=np.float64, seed=0)
    # no stored entry and a zero row: the first layer's sums are exactly the biases
    oracle.assert_same_bits(model.forward(empty), model.forward(np.zeros((5, 10))),
                            why=oracle.EXACT)
    loss, grads = model.loss_and_gradients(empty, [0, 1, 0, 1, 1])
    assert np.isfinite(loss) and not grads[0][0].any()      # no input: no first-layer gradient
    assert model.forward(sps.csr_matrix((0, 10))).shape == (0, 2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_values_are_refused_naming_x(bad):
    X, rng = sparse_data(n=40, n_features=10, density=0.3)
    X.data[5] = bad
    y = rng.integers(0, 2, 40)
    model = fusedmlp.MLP([10, 4, 2], seed=0)
    before = model.get_params_vector()
    for call in (lambda: model.fit(X, y, epochs=1), lambda: model.train_step(X, y, fusedmlp.SGD(0.1)),
                 lambda: model.predict(X), lambda: model.predict_proba(X.tocsc()),
                 lambda: model.loss(X, y), lambda: model.score(X, y)):
        with pytest.raises(ValueError, match=r"^X contains NaN or infinity.*sparse"):
            call()
    with pytest.raises(ValueError, match=r"^validation_data X contains NaN"):
        model.fit(np.ones((40, 10)), y, epochs=1,
                  validation_data=(X, y))
    oracle.assert_same_bits(model.get_params_vector(), before, why=oracle.UNTOUCHED)


def test_other_refusals():
    model = fusedmlp.MLP([10, 4, 2], seed=0)
    X = sps.random(6, 10, density=0.5, format="csr", random_state=0)
    with pytest.raises(ValueError, match="X must have 10 columns.*shape \\(6, 9\\)"):
        model.predict(X[:, :9])
    with pytest.raises(TypeError, match="X must hold real numbers.*complex"):
        model.predict(X.astype(np.complex128))
    one_row = sps.coo_array(np.ones(10))
    if one_row.ndim == 1:     # SciPy with 1-D sparse arrays; older ones make it 1 x 10
        with pytest.raises(ValueError, match="2-D"):
            model.predict(one_row)
    # the compiled CSR checks the structure the kernels trust
    data, ind, ptr = np.ones(3), np.array([0, 12, 1], np.int32), np.array([0, 2, 3], np.int64)
    with pytest.raises(ValueError, match=r"column indices outside \[0, 10\)"):
        _network.CSR(data, ind, ptr, 10)
    with pytest.raises(ValueError, match="decreasing indptr"):
        _network.CSR(data, np.zeros(3, np.int32), np.array([0, 3, 2, 3], np.int64), 10)
    with pytest.raises(ValueError, match="indptr"):
        _network.CSR(data, np.zeros(3, np.int32), np.array([0, 2], np.int64), 10)
    checked = as_csr(X, "X", np.float32, 10)
    with pytest.raises(ValueError, match="float64 with 10 columns"):
        fusedmlp.MLP([10, 2], dtype=np.float64).network.predict(
            checked, np.empty((6, 2)), np.empty(24), 6, 0)


def test_fit_never_holds_the_dense_x():
    """Peak traced memory of fit + predict on a sparse X stays within the sparse X, the
    model (parameters, gradients, Adam's two states) and the workspace, far below X's
    dense size (100x here)."""
    n, n_features, hidden = 2000, 5000, 16
    X = sps.random(n, n_features, density=0.01, format="csr", dtype=np.float32,
                   random_state=0)
    X.indices, X.indptr = X.indices.astype(np.int32), X.indptr.astype(np.int64)
    y = np.random.default_rng(0).integers(0, 2, n)
    model = fusedmlp.MLP([n_features, hidden, 2], dtype=np.float32, seed=0)
    sparse_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    model_bytes = 4 * model.parameters.nbytes            # params, grads, two Adam states
    batch = 100
    workspace = 3 * batch * (hidden + 2) * 4 + n * 8 + n * 2 * 4 + 64 * 1024
    tracemalloc.start()
    try:
        model.fit(X, y, epochs=2, batch_size=batch)
        model.predict_proba(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= sparse_bytes + model_bytes + workspace, (peak, sparse_bytes, model_bytes)
    assert peak < n * n_features * 4 / 20


def test_sparse_x_objects():
    X = sps.random(8, 5, density=0.5, format="csr", random_state=0)
    checked = as_csr(X, "X", np.float64, 5)
    assert isinstance(checked, SparseX) and checked.shape == (8, 5) and len(checked) == 8
    assert as_csr(checked, "X", np.float64, 5) is checked         # already checked: as is
    oracle.assert_same_bits(checked[[4, 1]].to_scipy().toarray(), X.toarray()[[4, 1]],
                            why=oracle.COPY)
    assert checked.data is X.data           # canonical, of the dtype: the values not copied
    assert "8x5 float64" in repr(checked)


# ---------------------------------------------------------------------- estimators
sklearn = pytest.importorskip("sklearn")
from fusedmlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel", "regression"])
def test_estimators_match_dense(solver, kind):
    X, rng = sparse_data(n=150, n_features=30, density=0.15)
    params = dict(hidden_layer_sizes=(12,), solver=solver, max_iter=15, random_state=0)
    if kind == "regression":
        y, cls = rng.normal(size=(150, 2)), MLPRegressor
        params["early_stopping"] = solver != "lbfgs"
    else:
        y = {"multiclass": rng.integers(0, 3, 150), "binary": rng.integers(0, 2, 150),
             "multilabel": rng.integers(0, 2, (150, 3))}[kind]
        cls = MLPClassifier
    w = rng.random(150)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense = cls(**params).fit(X.toarray(), y, sample_weight=w)
        fitted = [cls(**params).fit(data, y, sample_weight=w) for data in (X, X.tocsc())]
    # each fit's inference on the sparse X within its bounds at its own parameters
    for est in fitted + [dense]:
        outputs = oracle.Outputs.of(est.model_, X)
        outputs.check("predict", est.predict(X.tocsc()))
        outputs.check("score", est.model_.score(X, y), y)
        if kind != "regression":
            outputs.check("predict_proba", est.model_.predict_proba(X))
    # CSR and CSC become the same CSR: the same values reach the same kernels
    oracle.assert_same_bits(fitted[1].model_.get_params_vector(),
                            fitted[0].model_.get_params_vector(), why=oracle.SAME_INPUT)
    assert fitted[0].n_iter_ == dense.n_iter_
    if solver == "sgd":
        # sparse and dense: SGD (momentum 0.9, an L2 term) within the chain of its steps' sums
        n_train = 150 - 15 * bool(params.get("early_stopping"))
        sizes = [30, 12, dense.model_.n_outputs]
        oracle.assert_rounding_close(
            fitted[0].model_.get_params_vector(), dense.model_.get_params_vector(),
            dense.model_.dtype, sgd_chain(sizes, n_train, dense.n_iter_, 0.9))


def test_partial_fit_with_sparse_batches():
    X, rng = sparse_data(n=100, n_features=20, density=0.2)
    y = rng.integers(0, 3, 100)
    dense, est = (MLPClassifier((8,), solver="sgd", random_state=0) for _ in range(2))
    for lo in range(0, 100, 25):
        dense.partial_fit(X[lo:lo + 25].toarray(), y[lo:lo + 25], classes=[0, 1, 2])
        est.partial_fit(X[lo:lo + 25], y[lo:lo + 25], classes=[0, 1, 2])
    # SGD (an update linear in the gradient): within the chain of the four steps' sums
    oracle.assert_rounding_close(est.model_.get_params_vector(),
                                 dense.model_.get_params_vector(), np.float64,
                                 sgd_chain([20, 8, 3], 25, 4, 0.9))
    oracle.Outputs.of(est.model_, X).check("predict_proba", est.predict_proba(X))
    with pytest.raises(ValueError, match="NaN"):
        bad = X.copy()
        bad.data[0] = np.nan
        est.predict(bad)


def test_sparse_steps_do_not_depend_on_the_thread_count():
    """Sparse steps and inference run as one part whatever n_threads says: equal bits."""
    X, rng = sparse_data(n=200, n_features=40)
    y = rng.integers(0, 3, 200)
    runs = []
    for n_threads in (1, 2, "auto"):
        model = fusedmlp.MLP([40, 64, 3], seed=0, n_threads=n_threads)
        model.fit(X, y, epochs=2, batch_size=100)
        runs.append((model.get_params_vector(), model.predict_proba(X)))
    for params, proba in runs[1:]:
        oracle.assert_same_bits(params, runs[0][0], why=oracle.FIXED_SPLIT)
        oracle.assert_same_bits(proba, runs[0][1], why=oracle.FIXED_SPLIT)


def test_estimator_fit_never_holds_the_dense_x():
    n, n_features = 1000, 20_000
    X = sps.random(n, n_features, density=0.002, format="csr", dtype=np.float32,
                   random_state=0)
    y = np.random.default_rng(0).integers(0, 2, n)
    estimator = MLPClassifier((8,), max_iter=1, random_state=0)
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator.fit(X, y)
        estimator.predict_proba(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the model's buffers (parameters, gradients, thread scratch, Adam's two states, the
    # float64 draw of the initial weights) and the workspace; X dense would be 80 MB
    sparse_bytes = X.data.nbytes + X.indices.nbytes + 2 * X.indptr.nbytes
    assert peak <= sparse_bytes + 8 * estimator.model_.parameters.nbytes + 256 * 1024, peak
    assert peak < n * n_features * 4 / 10, peak


def test_bench_sparse_runs_on_a_small_problem(capsys):
    from fusedmlp.cli import bench_sparse

    assert bench_sparse.main(["--rows", "300", "--epochs", "1", "--rounds", "1",
                              "--no-memory"]) == 0
    out = capsys.readouterr().out
    for name in ("fusedmlp sparse", "fusedmlp dense", "scikit-learn sparse"):
        assert f"| {name} |" in out


def test_dask_arrays_of_sparse_blocks():
    """fusedmlp.dask's block functions hand each block to the model: CSR blocks work."""
    da = pytest.importorskip("dask.array")
    from fusedmlp import dask as fdask

    X, rng = sparse_data(n=200, n_features=30)
    y = rng.integers(0, 3, 200)
    dense = da.from_array(X.toarray(), chunks=(50, 30))
    blocks = dense.map_blocks(sps.csr_matrix, dtype=dense.dtype)
    model = mlp([30, 8, 3])
    # blocks of 50 rows against one call: the BLAS may pick other kernels by the row count
    oracle.Outputs.of(model, X).check(
        "predict_proba", fdask.predict_blocks(model, blocks, method="predict_proba").compute())
    fitted = []
    for data in (blocks, dense):
        estimator = MLPClassifier((8,), solver="sgd", random_state=0)
        fdask.partial_fit_blocks(estimator, data, da.from_array(y, chunks=50),
                                 classes=[0, 1, 2], shuffle_blocks=False)
        fitted.append(estimator.model_.get_params_vector())
    # SGD over the four blocks: within the chain of the four steps' sums
    oracle.assert_rounding_close(fitted[0], fitted[1], np.float64,
                                 sgd_chain([30, 8, 3], 50, 4, 0.9))
