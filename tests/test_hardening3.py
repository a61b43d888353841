"""The third hostile battery (issue 26): one test, or a small group, per class of
misbehaviour, each named in its docstring. Every test here failed on the main of the day
the issue was filed."""

import os
import sys
import time
import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fusedmlp
from fusedmlp._validation import SOFT_TARGET_TOLERANCE
from fusedmlp.sklearn import MLPClassifier


def _blobs(n=60, n_features=4, n_classes=3, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features)).astype(dtype)
    y = np.arange(n) % n_classes
    return X, y


# ---------------------------------------------------------------- class 5: messages
_BAD_CLASS_WEIGHTS = [
    ({0: 0, 1: 0, 2: 0}, r"class_weight gives weight 0 to every class"),
    ({0: -1.0}, r"class_weight\[0\] must be a finite number >= 0, got -1\.0"),
    ({1: np.nan}, r"class_weight\[1\] must be a finite number >= 0, got nan"),
    ({2: np.inf}, r"class_weight\[2\] must be a finite number >= 0, got inf"),
]


@pytest.mark.parametrize("with_sample_weight", [False, True])
@pytest.mark.parametrize("class_weight, message", _BAD_CLASS_WEIGHTS)
def test_class_weight_refusals_name_class_weight(class_weight, message, with_sample_weight):
    """Class 5 (messages naming the wrong argument): every class weight that is refused --
    all zero, negative, NaN, infinite -- is refused naming class_weight, never
    sample_weight, in MLP.fit and in MLPClassifier.fit (whose compute_class_weight passes
    such weights on unchecked)."""
    X, y = _blobs()
    sample_weight = np.full(len(y), 2.0) if with_sample_weight else None
    model = fusedmlp.MLP([4, 5, 3], seed=0)
    before = model.get_params_vector()
    with pytest.raises(ValueError, match=message):
        model.fit(X, y, epochs=1, class_weight=class_weight, sample_weight=sample_weight)
    assert np.array_equal(model.get_params_vector(), before)
    estimator = MLPClassifier(hidden_layer_sizes=(5,), max_iter=1, class_weight=class_weight)
    with pytest.raises(ValueError, match=message):
        estimator.fit(X, y, sample_weight=sample_weight)


def test_class_weight_messages_name_the_label_and_the_product():
    """Class 5: the estimator's message names the user's label (a string label here), and
    class weights whose product with the sample weights overflows are refused naming
    both; weights beyond float32's range but within float64's weigh a float32 model, as
    they do in MLP.fit (only their ratios matter)."""
    X, y = _blobs()
    labels = np.array(["a", "b", "c"])[y]
    estimator = MLPClassifier(hidden_layer_sizes=(5,), max_iter=1, class_weight={"b": -2})
    with pytest.raises(ValueError, match=r"class_weight\['b'\] must be a finite number >= 0"):
        estimator.fit(X, labels)
    huge = {0: 1e308, 1: 1e308, 2: 1e308}
    estimator = MLPClassifier(hidden_layer_sizes=(5,), max_iter=1, class_weight=huge)
    with pytest.raises(ValueError, match=r"class_weight \* sample_weight overflows"):
        estimator.fit(X, y, sample_weight=np.full(len(y), 10.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # (one epoch does not converge)
        estimator.fit(X, y)
    fusedmlp.MLP([4, 5, 3], seed=0).fit(X, y, epochs=1, class_weight=huge)


# ---------------------------------------------------------------- class 7: writes
def _nan_model(dtype=np.float32):
    model = fusedmlp.MLP([4, 5, 3], dtype=dtype, seed=0)
    model.parameters[3] = np.nan
    return model


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_models_are_refused_on_write(tmp_path, dtype):
    """Class 7 (non-finite models written out): save and to_onnx (MLP's and the
    estimators') refuse a model holding NaN or infinity -- load refuses such a file,
    predict_proba such a model -- and save leaves no file behind (nor replaces an old
    one); the one message names the writer."""
    model = _nan_model(dtype)
    path = tmp_path / "model.npz"
    with pytest.raises(ValueError, match="NaN or infinity: save refuses"):
        model.save(path)
    assert not path.exists()
    good = fusedmlp.MLP([4, 5, 3], dtype=dtype, seed=0)
    good.save(path)
    before = path.read_bytes()
    good.parameters[0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity: save refuses"):
        good.save(path)
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]
    pytest.importorskip("onnx")
    with pytest.raises(ValueError, match="NaN or infinity: to_onnx refuses"):
        model.to_onnx(None)
    X, y = _blobs(dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = MLPClassifier(hidden_layer_sizes=(5,), max_iter=1).fit(X, y)
    estimator.model_.parameters[0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity: to_onnx refuses"):
        estimator.to_onnx(tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_save_refuses_an_optimizer_state_that_load_refuses(tmp_path):
    """Class 7: save with an optimiser whose state load would refuse (a NaN moment) is
    refused before anything is written; the same file without it loads."""
    X, y = _blobs()
    model = fusedmlp.MLP([4, 5, 3], seed=0)
    adam = fusedmlp.Adam(0.01)
    model.train_step(X, y, adam)
    _, first_moment, _ = adam.buffers(model)
    first_moment[2] = np.nan
    path = tmp_path / "model.npz"
    with pytest.raises(ValueError, match="optimizer's state.*NaN or infinity"):
        model.save(path, optimizer=adam)
    assert not path.exists()
    first_moment[2] = 0
    model.save(path, optimizer=adam)
    fusedmlp.load(path, with_optimizer=True)


# ---------------------------------------------------------------- class 9: C API parity
_NOT_DISTRIBUTIONS = [
    [[-1.0, 2.0, 0.0]],                 # the row: sums to 1, one entry negative
    [[0.5, 0.5, 0.5]],                  # non-negative, sums to 1.5
    [[0.0, 0.0, 0.0]],                  # sums to 0
    [[1.0, 0.0, 0.0], [0.3, 0.3, 0.3]],  # the second row sums to 0.9
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", _NOT_DISTRIBUTIONS)
def test_c_step_refuses_soft_targets_python_refuses(c_client, rows, dtype):
    """Class 9 (the C API trains on targets that Python refuses): soft targets that are not
    class probabilities are refused by the C step (BAD_RANGE, the model untouched) as by
    MLP.train_step, and rows that Python accepts (within the tolerance) train in C too."""
    codes = c_client.constants()
    targets = np.array(rows, dtype)
    X = np.ones((len(targets), 4), dtype)
    model = fusedmlp.MLP([4, 5, 3], dtype=dtype, seed=0)
    trainer = c_client.trainer_new(model, fusedmlp.SGD(0.1), 4)
    before = model.get_params_vector()
    with pytest.raises(ValueError, match="soft targets"):
        model.train_step(X, targets, fusedmlp.SGD(0.1))
    assert c_client.train_step(trainer, X, None, targets)[0] == codes["BAD_RANGE"]
    assert np.array_equal(model.get_params_vector(), before)
    near = np.full((len(targets), 3), 1 / 3, dtype)
    near[:, 0] += np.asarray(0.5 * SOFT_TARGET_TOLERANCE, dtype)
    model.train_step(X, near, fusedmlp.SGD(0.1))
    assert c_client.train_step(trainer, X, None, near)[0] == codes["OK"]


# ---------------------------------------------------------------- class 4: counters
def _dropout_model(dtype=np.float32):
    return fusedmlp.MLP([4, 6, 3], dtype=dtype, seed=0, dropout=0.25)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_step_never_wraps(tmp_path, dtype):
    """Class 4 (counters that wrap): dropout_step = 2**63 - 1 is accepted (it is in range)
    but the next update with dropout, which would take it past 2**63 - 1, is refused
    naming dropout_step and changes nothing -- by train_step, fit's compiled epoch and
    the C step -- so the model still saves, loads and pickles. A gradient-only step and
    an update without dropout do not advance it and still run."""
    import pickle

    X, y = _blobs(dtype=dtype)
    model = _dropout_model(dtype)
    model.dropout_step = 2**63 - 1
    before = model.get_params_vector()
    adam = fusedmlp.Adam(0.01)
    with pytest.raises(OverflowError, match="dropout_step"):
        model.train_step(X[:8], y[:8], adam)
    with pytest.raises(OverflowError, match="dropout_step"):
        model.fit(X, y, epochs=1, batch_size=8, optimizer=fusedmlp.Adam(0.01))
    assert model.dropout_step == 2**63 - 1 and adam.steps == 0
    assert np.array_equal(model.get_params_vector(), before)
    model.save(tmp_path / "m.npz")
    assert fusedmlp.load(tmp_path / "m.npz").dropout_step == 2**63 - 1
    assert pickle.loads(pickle.dumps(model)).dropout_step == 2**63 - 1
    model.loss_and_gradients(X, y)                      # no update: no mask advanced
    model.dropout = 0.0
    model.train_step(X[:8], y[:8], adam)                # no dropout: nothing to count
    assert model.dropout_step == 2**63 - 1


def test_c_step_refuses_a_counter_past_its_range(c_client):
    """Class 4: the C step refuses what the Python step refuses (FUSEDMLP_BAD_COUNTER),
    the model and the counters unchanged."""
    codes = c_client.constants()
    X, y = _blobs(n=8)
    model = _dropout_model()
    model.dropout_step = 2**63 - 1
    adam = fusedmlp.Adam(0.01)
    trainer = c_client.trainer_new(model, adam, 8)
    before = model.get_params_vector()
    assert c_client.train_step(trainer, X, y.astype(np.int64), None)[0] == codes["BAD_COUNTER"]
    assert np.array_equal(model.get_params_vector(), before)
    assert model.dropout_step == 2**63 - 1 and adam.steps == 0
    model.dropout_step = 0
    assert c_client.train_step(trainer, X, y.astype(np.int64), None)[0] == codes["OK"]
    assert model.dropout_step == 1 and adam.steps == 1


def _optimizer_at(steps, model):
    adam = fusedmlp.Adam(0.01)
    adam.buffers(model)
    state = adam.state_dict()
    state["hyper"][fusedmlp._codes.H_T] = steps
    adam.load_state_dict(model, state)
    return adam


def test_optimizer_step_count_stops_at_its_limit():
    """Class 4: an optimiser's step count is an integer in [0, 2**53] for the setter
    (load_state_dict) and the file; at 2**53 (float64's last exact count, where one more
    step silently stalled) every update path -- train_step, fit's epoch and
    Optimizer.step after loss_and_gradients -- refuses naming the step count and leaves
    the model as it was; one below, the update counts to 2**53 exactly."""
    X, y = _blobs()
    model = fusedmlp.MLP([4, 5, 3], seed=0)
    before = model.get_params_vector()
    adam = _optimizer_at(2**53, model)
    with pytest.raises(OverflowError, match="step count"):
        model.train_step(X[:8], y[:8], adam)
    with pytest.raises(OverflowError, match="step count"):
        model.fit(X, y, epochs=1, batch_size=8, optimizer=adam)
    model.loss_and_gradients(X, y)
    with pytest.raises(OverflowError, match="step count"):
        adam.step(model)
    assert np.array_equal(model.get_params_vector(), before) and adam.steps == 2**53
    adam = _optimizer_at(2**53 - 1, model)
    model.train_step(X[:8], y[:8], adam)
    assert adam.steps == 2**53


def test_warmup_schedule_step_count_has_a_range():
    """Class 4: a WarmupLR's step count (advanced by the compiled epoch) is refused past
    2**53 by the epoch (naming the schedule) and out of range in its file (a pickle) and
    at the start of a fit; it used to stall silently, or be taken as it came."""
    import pickle

    X, y = _blobs()
    model = fusedmlp.MLP([4, 5, 3], seed=0)
    schedule = fusedmlp.optim.WarmupLR(warmup_steps=2)
    schedule.state[fusedmlp._codes.S_STEP] = 2**53
    with pytest.raises(OverflowError, match="WarmupLR"):
        model.fit(X, y, epochs=1, batch_size=8, lr_schedule=schedule)
    assert schedule.steps == 2**53
    schedule.state[fusedmlp._codes.S_STEP] = -3
    with pytest.raises(ValueError, match="WarmupLR's step count"):
        model.fit(X, y, epochs=1, batch_size=8, lr_schedule=schedule)
    data = pickle.dumps(schedule)
    with pytest.raises(ValueError, match="WarmupLR's step count"):
        pickle.loads(data)
    schedule.state[fusedmlp._codes.S_STEP] = 2**53 - 1
    assert pickle.loads(pickle.dumps(schedule)).steps == 2**53 - 1


# ---------------------------------------------------------------- class 6: estimator params
@pytest.mark.parametrize("path", ["partial_fit", "warm_start"])
def test_estimator_parameters_are_validated_and_applied_on_every_path(path):
    """Class 6 (estimator parameters that do not reach the model): after a first fit,
    set_params(n_threads=0) is refused naming n_threads on partial_fit and on a warm-started
    fit alike (it was accepted by partial_fit), and set_params(n_threads=1) reaches the
    model on both paths (a warm fit kept "auto"), as dropout and compute_dtype do."""
    X, y = _blobs()
    estimator = MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, warm_start=True,
                              random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(X, y)
        resume = (estimator.partial_fit if path == "partial_fit" else estimator.fit)
        estimator.set_params(n_threads=0)
        with pytest.raises(ValueError, match="n_threads"):
            resume(X, y)
        estimator.set_params(n_threads=1, dropout=0.1)
        resume(X, y)
    assert estimator.model_.n_threads == 1 and estimator.model_.dropout == 0.1


# ---------------------------------------------------------------- class 8: empty Dask blocks
@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_predict_blocks_with_an_empty_block_equals_memory(method):
    """Class 8 (empty blocks in Dask): predict_blocks over X[mask] where the mask empties a
    whole block gives what the in-memory call on the masked rows gives (it raised
    scikit-learn's "Found array with 0 sample(s)" from that block)."""
    da = pytest.importorskip("dask.array")
    from fusedmlp.dask import predict_blocks

    X, y = _blobs(n=80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0).fit(X, y)
    mask = np.ones(len(X), bool)
    mask[20:40] = False                                 # the second block keeps no row
    blocked = da.from_array(X, chunks=(20, 4))
    result = predict_blocks(estimator, blocked[da.from_array(mask, chunks=20)], method=method)
    expected = getattr(estimator, method)(X[mask])
    assert np.array_equal(np.asarray(result.compute()), expected)


def _masked_dask(X, y, mask, chunks=20):
    """X[mask], y[mask] as Dask arrays of unknown block sizes (what a boolean mask gives)."""
    da = pytest.importorskip("dask.array")
    mask_dask = da.from_array(mask, chunks=chunks)
    return (da.from_array(X, chunks=(chunks, X.shape[1]))[mask_dask],
            da.from_array(y, chunks=chunks)[mask_dask])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_and_gradients_over_empty_blocks(dtype):
    """Class 8 (empty blocks in Dask): loss_and_gradients over a mask that keeps no row raised
    ZeroDivisionError (the row count is unknown until computed); it is the ValueError an X
    known to be empty gets. A mask that empties one block gives the in-memory result, and so
    do sparse blocks (len() of a scipy sparse block raised TypeError)."""
    dask = pytest.importorskip("dask")
    sparse = pytest.importorskip("scipy.sparse")
    from fusedmlp.dask import loss_and_gradients

    X, y = _blobs(n=80, dtype=dtype)
    model = fusedmlp.MLP([4, 8, 3], dtype=dtype, seed=0)
    with dask.config.set(scheduler="synchronous"):
        with pytest.raises(ValueError, match=r"X is empty: the loss needs at least one sample"):
            loss_and_gradients(model, *_masked_dask(X, y, np.zeros(len(X), bool)))
        with pytest.raises(ValueError, match=r"X is empty: the loss needs at least one sample"):
            loss_and_gradients(model, *_masked_dask(X, y, np.zeros(len(X), bool), chunks=40))
        mask = np.ones(len(X), bool)
        mask[20:40] = False                            # the second block keeps no row
        loss, grads = loss_and_gradients(model, *_masked_dask(X, y, mask))
        X_sparse_dask = _masked_dask(X, y, mask)[0].map_blocks(sparse.csr_matrix, dtype=dtype)
        loss_sparse, _ = loss_and_gradients(model, X_sparse_dask, _masked_dask(X, y, mask)[1])
    expected_loss, expected = model.loss_and_gradients(X[mask], y[mask])
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    assert np.isclose(loss, expected_loss, rtol=tolerance)
    assert np.isclose(loss_sparse, expected_loss, rtol=tolerance)
    for (dW, db), (eW, eb) in zip(grads, expected):
        np.testing.assert_allclose(dW, eW, rtol=tolerance, atol=tolerance)
        np.testing.assert_allclose(db, eb, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("kind", ["estimator", "mlp"])
def test_partial_fit_blocks_skips_empty_blocks(kind):
    """Class 8 (empty blocks in Dask): partial_fit_blocks over X[mask] where the mask empties
    a block trains on the other blocks, like partial_fit on the in-memory blocks the mask
    leaves (it raised "Found array with 0 sample(s)" / "X is empty" from the empty block);
    a mask that keeps no row is a ValueError and leaves the estimator unchanged."""
    dask = pytest.importorskip("dask")
    from fusedmlp.dask import partial_fit_blocks

    X, y = _blobs(n=80)
    mask = np.ones(len(X), bool)
    mask[20:40] = False

    def make():
        if kind == "estimator":
            return MLPClassifier(hidden_layer_sizes=(5,), random_state=0), {}
        return fusedmlp.MLP([4, 5, 3], seed=0), {"optimizer": fusedmlp.SGD(0.1),
                                                 "batch_size": 8}

    def parameters(trained):
        return (trained.model_ if kind == "estimator" else trained).parameters.copy()

    with warnings.catch_warnings(), dask.config.set(scheduler="synchronous"):
        warnings.simplefilter("ignore")
        streamed, fit_params = make()
        partial_fit_blocks(streamed, *_masked_dask(X, y, mask), shuffle_blocks=False,
                           **({"classes": np.arange(3)} if kind == "estimator" else {}),
                           **fit_params)
        in_memory, fit_params = make()
        for start in (0, 40, 60):                       # the blocks the mask leaves, in order
            rows = slice(start, start + 20)
            if kind == "estimator":
                in_memory.partial_fit(X[rows], y[rows], classes=np.arange(3))
            else:
                in_memory.fit(X[rows], y[rows], epochs=1, **fit_params)
        assert np.array_equal(parameters(streamed), parameters(in_memory))

        untouched, fit_params = make()
        before = None if kind == "estimator" else parameters(untouched)
        with pytest.raises(ValueError, match=r"X is empty: training needs at least one sample"):
            partial_fit_blocks(untouched, *_masked_dask(X, y, np.zeros(len(X), bool)),
                               **fit_params)
        if kind == "estimator":
            assert not hasattr(untouched, "model_")
        else:
            assert np.array_equal(parameters(untouched), before)


# ---------------------------------------------------------------- class 3: out= aliasing
_INFER = ["forward", "predict_proba", "predict_log_proba"]


def _wide_model(dtype):
    # 600 x 3 outputs fit inside its 4 x 512 + 512 + 512 x 3 + 3 parameters
    return fusedmlp.MLP([4, 512, 3], dtype=dtype, seed=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("method", _INFER)
def test_out_overlapping_the_parameters_is_refused(method, dtype):
    """Class 3 (out= aliasing): an out that is a view of the model's own parameters was
    accepted, and rows past the first chunk were computed from weights the call had already
    overwritten (probabilities 0.98 off). It is refused, naming out and the parameters, on
    the compiled fast path (native X) and on the checked one (X converted), nothing
    written."""
    model = _wide_model(dtype)
    X = np.random.default_rng(0).normal(size=(600, 4)).astype(dtype)
    before = model.parameters.copy()
    for start in (0, 7, model.n_parameters - 1800):
        out = model.parameters[start:start + 1800].reshape(600, 3)
        for rows in (X, X.astype(np.float64 if dtype == np.float32 else np.float32)):
            with pytest.raises(ValueError,
                               match=r"out must not overlap the model's parameters"):
                getattr(model, method)(rows, out=out)
    assert np.array_equal(model.parameters, before)
    disjoint = np.empty((600, 3), dtype)                # the same call with its own out works
    assert getattr(model, method)(X, out=disjoint) is disjoint


def _shared_buffer_csr(X, dtype, which):
    """A CSR copy of X whose array `which` ("data", "indices", "indptr") lies inside one
    byte buffer, and an out (600 x 3, dtype) that overlaps it there."""
    sparse = pytest.importorskip("scipy.sparse")
    csr = sparse.csr_matrix(X)
    arrays = {"data": csr.data.astype(dtype), "indices": csr.indices.astype(np.int32),
              "indptr": csr.indptr.astype(np.int64)}          # the types used as they are
    itemsize = np.dtype(dtype).itemsize
    target = arrays[which]
    buffer = np.zeros(target.nbytes + 600 * 3 * itemsize + 64, np.uint8)
    offset = (target.nbytes // 2) // 64 * 64             # out starts inside the array
    placed = buffer[:target.nbytes].view(target.dtype)
    placed[...] = target
    arrays[which] = placed
    out = buffer[offset:offset + 600 * 3 * itemsize].view(dtype).reshape(600, 3)
    matrix = sparse.csr_matrix(X.shape, dtype=dtype)
    # set as they are (the constructor may copy): the types fusedmlp uses without a copy
    matrix.data, matrix.indices, matrix.indptr = (arrays["data"], arrays["indices"],
                                                   arrays["indptr"])
    matrix.has_canonical_format = True                    # (it is: sorted, no duplicates)
    assert np.shares_memory(getattr(matrix, which), out)
    return matrix, out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("which", ["data", "indices", "indptr"])
def test_out_overlapping_a_sparse_x_is_refused(which, dtype):
    """Class 3 (out= aliasing): with a sparse X, an out overlapping X's stored values (or its
    indices, or its row pointers) was accepted and returned wrong probabilities (0.84 off);
    it is refused, naming out and the array it overlaps."""
    model = _wide_model(dtype)
    X = np.random.default_rng(1).normal(size=(600, 4))
    X[X < 0] = 0
    matrix, out = _shared_buffer_csr(X, dtype, which)
    for method in _INFER:
        with pytest.raises(ValueError, match=rf"out must not overlap X\.{which}"):
            getattr(model, method)(matrix, out=out)
    expected = model.predict_proba(X.astype(dtype))
    np.testing.assert_allclose(model.predict_proba(matrix, out=np.empty((600, 3), dtype)),
                               expected, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_c_infer_refuses_out_or_scratch_overlapping_what_it_reads(c_client, dtype):
    """Class 3 (out= aliasing), the C API: fusedmlp_infer refused only an out overlapping X.
    It refuses (FUSEDMLP_BAD_ARGUMENT, nothing written) an out overlapping the model's
    parameters and a caller's scratch overlapping X or out."""
    codes = c_client.constants()
    model = _wide_model(dtype)
    handle = c_client.model_new(model)
    code = codes["FLOAT32" if dtype == np.float32 else "FLOAT64"]
    X = np.random.default_rng(2).normal(size=(600, 4)).astype(dtype)
    before = model.parameters.copy()
    out = model.parameters[7:7 + 1800].reshape(600, 3)
    for scratch in (False, True):
        assert (c_client.infer(handle, X, out, codes["PROBABILITIES"], 600, scratch, code)
                == codes["BAD_ARGUMENT"])
    assert np.array_equal(model.parameters, before)
    size = c_client.scratch_bytes(handle, 600)
    own_out = np.empty((600, 3), dtype)
    joint = np.zeros(size + X.nbytes, np.uint8)          # scratch, then X inside its end
    X_in = joint[size - 64:size - 64 + X.nbytes].view(dtype).reshape(X.shape)
    X_in[...] = X
    assert (c_client.infer_into_scratch(handle, X_in, own_out, codes["PROBABILITIES"],
                                        joint[:size], code) == codes["BAD_ARGUMENT"])
    joint = np.zeros(size + own_out.nbytes, np.uint8)    # scratch, then out inside its end
    out_in = joint[size - 64:size - 64 + own_out.nbytes].view(dtype).reshape(600, 3)
    assert (c_client.infer_into_scratch(handle, X, out_in, codes["PROBABILITIES"],
                                        joint[:size], code) == codes["BAD_ARGUMENT"])
    assert (c_client.infer_into_scratch(handle, X, own_out, codes["PROBABILITIES"],
                                        np.zeros(size, np.uint8), code) == codes["OK"])
    np.testing.assert_allclose(own_out, model.predict_proba(X),
                               rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "sigmoid", "relu"])
def test_array_function_out_partly_overlapping_x_is_refused(name):
    """Class 3 (out= aliasing), the array functions: out may be x itself (in place), but an
    out that overlaps x shifted by a row or an element was accepted and returned wrong values
    (0.6 off); it is refused, naming out and x."""
    function = getattr(fusedmlp, name)
    base = np.random.default_rng(3).normal(size=(6, 4))
    for x, out in ((base[:5], base[1:]), (base.reshape(-1)[:23], base.reshape(-1)[1:])):
        if name.endswith("softmax") and x.ndim == 1:
            x, out = x[:20].reshape(5, 4), base.reshape(-1)[2:22].reshape(5, 4)
        before = base.copy()
        with pytest.raises(ValueError, match=r"out must not overlap x"):
            function(x, out=out)
        assert np.array_equal(base, before)
    x = base.copy()
    expected = function(x)
    assert function(x, out=x) is x and np.allclose(x, expected)


# ---------------------------------------------------------------- class 2: CPU affinity
def _parts_of_a_real_step(model, X, y):
    """How many parts one training step really ran in (the pool's trace of its parts)."""
    from fusedmlp import _network

    _network.trace_parts(True)
    try:
        model.train_step(X, y, fusedmlp.SGD(0.01))
    finally:
        runs = _network.trace_parts(False)
    return max((len(run) for run in runs), default=1)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or not sys.platform.startswith("linux"),
                    reason="the CPU affinity is re-read on Linux only")
def test_auto_follows_the_affinity_changed_after_import():
    """Class 2 (CPU affinity changed after import): after os.sched_setaffinity(0, {cpu})
    show_config() said one usable core but n_threads="auto" still split into 2 parts. The
    compiled core re-reads the affinity (at most every 10 ms, on Linux): every split of a
    step, of inference and a real step stay within the usable cores, and follow the mask
    back when it widens again."""
    from fusedmlp import _network

    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("needs a process allowed on at least 2 CPUs")
    model = fusedmlp.MLP([784, 128, 10], seed=0)          # "auto": 2 parts at batch 256
    X = np.random.default_rng(0).normal(size=(256, 784)).astype(np.float32)
    y = np.arange(256) % 10
    # (tests/conftest.py holds threadpool_limits(1), which caps "auto" too: lifted here)
    with threadpool_limits({"fusedmlp": len(cpus)}):
        assert model._net.step_parts(256) >= 2 and model._net.inference_parts(1024) >= 2
        try:
            os.sched_setaffinity(0, {min(cpus)})
            time.sleep(0.03)
            assert _network.thread_limit() == 1
            assert model._net.step_parts(256) == 1 and model._net.inference_parts(1024) == 1
            assert _parts_of_a_real_step(model, X, y) == 1
            assert fusedmlp.show_config(as_dict=True)["threads"]["auto_limit"] == 1
        finally:
            os.sched_setaffinity(0, cpus)
        time.sleep(0.03)
        assert model._net.step_parts(256) >= 2 and _parts_of_a_real_step(model, X, y) >= 2


# ---------------------------------------------------------------- class 1: Ctrl-C
_INTERRUPTED_FIT = r"""
import json, os, signal, sys, threading, time
import numpy as np, fusedmlp
# a shell's background job inherits SIGINT ignored, and Python then installs no handler
signal.signal(signal.SIGINT, signal.default_int_handler)
rng = np.random.default_rng(0)
X = rng.normal(size=(40000, 256)).astype(np.float32); y = rng.integers(0, 10, len(X))
model = fusedmlp.MLP([256, 1024, 1024, 10], seed=0, n_threads=1, dtype=np.DTYPE)
adam = fusedmlp.Adam(1e-3)
start = time.perf_counter()
model.fit(X[:640], y[:640], epochs=1, batch_size=64, optimizer=fusedmlp.Adam(1e-3))
step = (time.perf_counter() - start) / 10
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
start = time.perf_counter()
try:
    model.fit(X, y, epochs=2, batch_size=64, optimizer=adam)
    raised = False
except KeyboardInterrupt:
    raised = True
elapsed = time.perf_counter() - start
finite = bool(np.all(np.isfinite(model.parameters)))
steps = int(adam.steps)
model.predict_proba(X[:10])
model.fit(X[:128], y[:128], epochs=1, batch_size=64, optimizer=adam)
print(json.dumps({"raised": raised, "elapsed": elapsed, "step": step, "steps": steps,
                  "finite": finite, "steps_after": int(adam.steps)}))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="os.kill(SIGINT) is not a Ctrl-C there")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ctrl_c_stops_a_long_compiled_epoch(dtype):
    """Class 1 (Ctrl-C inside one long compiled epoch is ignored until the epoch ends): a
    real SIGINT 0.3 s into a fit whose epoch lasts seconds (625 steps of a 256-1024-1024-10
    network) stops it at a step boundary within a few steps, fit raises KeyboardInterrupt,
    and the model is finite and usable: it predicts and trains on, its optimiser counting
    on from the steps done. (Before, the signal waited for the epoch's end: 3.5 s here on
    a Zen 5 core, float32.)"""
    import json
    import subprocess

    result = subprocess.run([sys.executable, "-c", _INTERRUPTED_FIT.replace("DTYPE", dtype)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    epoch_steps = 40000 // 64 + 1
    assert report["raised"] and report["finite"]
    assert 0 < report["steps"] < epoch_steps // 2      # stopped well inside the first epoch
    # within 10 ms of looking plus the step under way (and a loaded machine's slack)
    assert report["elapsed"] < 0.3 + 20 * report["step"] + 0.5, report
    assert report["steps_after"] == report["steps"] + 2


# ---------------------------------------------------------------- review: one soft-target check
_BAD_SOFT_TARGETS = [
    [[0.5, 0.5, np.nan]],                         # not finite
    [[1.5, -0.5, 0.0]],                           # negative
    [[0.2, 0.2, 0.2], [1.0, 0.0, 0.0]],           # row 0 sums to 0.6
    [[1.0, 0.0, 0.0], [0.5, 0.5, 0.001]],         # row 1 sums to 1.001
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_soft_targets_are_checked_once_per_step_with_the_same_messages(monkeypatch, dtype):
    """Review item (the soft-target check ran twice per step on the Python path, in
    _validation.check_distribution and in the compiled step): train_step and
    loss_and_gradients leave it to the compiled step, and a refusal is explained by
    check_distribution in the words users saw before, the model unchanged."""
    from fusedmlp import _validation
    from fusedmlp import model as model_module

    model = fusedmlp.MLP([4, 5, 3], dtype=dtype, seed=0)
    before = model.parameters.copy()
    for rows in _BAD_SOFT_TARGETS:
        targets = np.array(rows, dtype)
        with pytest.raises(ValueError) as expected:
            _validation.check_distribution(targets, "y")
        X = np.ones((len(targets), 4), dtype)
        for call in (lambda: model.train_step(X, targets, fusedmlp.SGD(0.1)),
                     lambda: model.loss_and_gradients(X, targets)):
            with pytest.raises(type(expected.value), match=None) as raised:
                call()
            assert str(raised.value) == str(expected.value)
    assert np.array_equal(model.parameters, before)

    calls = []
    real = model_module.check_distribution
    monkeypatch.setattr(model_module, "check_distribution",
                        lambda *args: calls.append(args) or real(*args))
    targets = np.full((8, 3), 1 / 3, dtype)
    model.train_step(np.ones((8, 4), dtype), targets, fusedmlp.SGD(0.1))
    model.loss_and_gradients(np.ones((8, 4), dtype), targets)
    assert calls == []                                   # the compiled step's check alone
