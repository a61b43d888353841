"""fusedmlp on Dask (fusedmlp.dask): distributed prediction, block-streamed and dask-ml
incremental training, data-parallel gradients, and pickles small enough to ship.

Runs on one ``distributed.LocalCluster`` (two worker processes, one thread each, bound to
127.0.0.1) shared by the module: everything sent to a worker really is pickled. References are
the float64 oracle (tests/oracle.py), or in-memory training on the same blocks in the same
order.

Exactness: a worker runs the same build, with the same FUSEDMLP_* knobs (inherited), on the
same blocks: training streamed over blocks is the in-memory training on those blocks, the
same calls, bit for bit. Results over blocks of other sizes than one call (predict_blocks,
the tree-reduced gradients, data-parallel steps) add in other orders and are compared with
the oracle within its derived bounds (oracle.Outputs, loss_and_gradients_bound, the SGD
chain of oracle.step_chain).
"""

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

dask = pytest.importorskip("dask", reason="the dask extra (dask) is not installed")
da = pytest.importorskip("dask.array",
                         reason="the dask extra (dask[array]) is not installed")
distributed = pytest.importorskip("distributed",
                                  reason="the dask extra (distributed) is not installed")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import fusedmlp  # noqa: E402
from fusedmlp.dask import (  # noqa: E402
    fit_data_parallel, loss_and_gradients, partial_fit_blocks, predict_blocks,
)
from fusedmlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

import oracle  # noqa: E402

# short training runs on purpose: scikit-learn's "not converged" warning is expected
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

UNEVEN_CHUNKS = (100, 37, 263, 50)               # 450 rows in blocks of different sizes


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as dask_client:
        yield dask_client


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def _dask_pair(client, X, y, chunks):
    """X and y as Dask arrays with the given row blocks, held in the workers' memory."""
    X_dask = da.from_array(X, chunks=(chunks, X.shape[1]))
    y_dask = da.from_array(y, chunks=(chunks,) + ((y.shape[1],) if y.ndim == 2 else ()))
    return client.persist([X_dask, y_dask])


def _dask_ml_wrappers():
    return pytest.importorskip("dask_ml.wrappers", reason="dask-ml is not installed")


# ---------------------------------------------------------------------- packaging and pickles
def test_import_fusedmlp_does_not_import_dask():
    code = textwrap.dedent("""
        import sys
        import fusedmlp, fusedmlp.sklearn
        loaded = sorted(m for m in sys.modules
                        if m.split('.')[0] in ('dask', 'distributed', 'dask_ml'))
        print(loaded)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_model_pickles_weights_not_workspace():
    model = fusedmlp.MLP([784, 512, 512, 10], dtype=np.float32, seed=0)
    rng = np.random.default_rng(0)
    X = rng.random((512, 784), dtype=np.float32)
    y = rng.integers(0, 10, 512)
    model.train_step(X, y, fusedmlp.Adam(1e-3))       # allocates a 512-row workspace
    payload = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    weights_bytes = model.n_parameters * 4            # 669,706 float32 parameters
    # The workspace alone would add 512 rows x 1034 activations x 4 bytes (> 2 MB).
    assert weights_bytes <= len(payload) < weights_bytes + 4096
    restored = pickle.loads(payload)
    assert restored.layer_sizes == model.layer_sizes and restored.dtype == np.float32
    oracle.assert_same_bits(restored.get_params_vector(), model.get_params_vector(),
                            why=oracle.COPY)
    oracle.assert_same_bits(restored.predict_proba(X[:50]), model.predict_proba(X[:50]),
                            why=oracle.SAME_CALL)


def test_estimator_pickle_carries_weights_and_optimizer_state(digits):
    X_train, _, y_train, _ = digits
    classes = np.arange(10)

    def trained_once():
        clf = MLPClassifier(hidden_layer_sizes=(128,), batch_size=64, random_state=0)
        return clf.partial_fit(X_train, y_train, classes=classes)

    shipped, twin = trained_once(), trained_once()
    payload = pickle.dumps(shipped, protocol=pickle.HIGHEST_PROTOCOL)
    n_parameters = shipped.model_.n_parameters
    # weights + Adam's two moment buffers, float32, plus bookkeeping -- no workspace
    assert len(payload) < 3 * 4 * n_parameters + 16384
    restored = pickle.loads(payload)
    for clf in (shipped, restored, twin):
        clf.partial_fit(X_train, y_train)
    expected = twin.coefs_ + twin.intercepts_
    # Continuing from the pickle is continuing the original: the Adam moments travelled.
    for a, b in zip(restored.coefs_ + restored.intercepts_, expected):
        oracle.assert_same_bits(a, b, why=oracle.SAME_CALL)
    # Pickling (shipping to a worker) must not change the estimator that stays here.
    for a, b in zip(shipped.coefs_ + shipped.intercepts_, expected):
        oracle.assert_same_bits(a, b, why=oracle.SAME_CALL)


# ---------------------------------------------------------------------- prediction
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predict_blocks_matches_reference_and_in_memory(client, dtype):
    rng = np.random.default_rng(1)
    model = fusedmlp.MLP([20, 32, 16, 5], dtype=dtype, seed=3)
    X = rng.normal(size=(sum(UNEVEN_CHUNKS), 20))
    X_dask = client.persist(da.from_array(X, chunks=(UNEVEN_CHUNKS, 20)))

    scores = predict_blocks(model, X_dask, method="forward")
    proba = predict_blocks(model, X_dask, method="predict_proba")
    log_proba = predict_blocks(model, X_dask, method="predict_log_proba")
    labels = predict_blocks(model, X_dask)
    assert proba.chunks == (UNEVEN_CHUNKS, (5,)) and labels.chunks == (UNEVEN_CHUNKS,)
    scores, proba, log_proba, labels = dask.compute(scores, proba, log_proba, labels)

    assert proba.dtype == dtype and scores.dtype == dtype
    # blocks of other sizes than the whole: each within its bound of the float64 values,
    # as predicting the whole array in this process is
    expected = oracle.Outputs.of(model, X)
    for name, got in (("forward", scores), ("predict_proba", proba),
                      ("predict_log_proba", log_proba), ("predict", labels)):
        expected.check(name, got)
    expected.check("predict_proba", model.predict_proba(X))
    expected.check("predict", model.predict(X))


def test_predict_blocks_regressor_shapes(client):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(sum(UNEVEN_CHUNKS), 6))
    X_dask = da.from_array(X, chunks=(UNEVEN_CHUNKS, 3))        # two column blocks: merged
    for n_outputs in (1, 3):
        model = fusedmlp.MLP([6, 8, n_outputs], output="identity", dtype=np.float64, seed=0)
        predicted = predict_blocks(model, X_dask).compute()
        assert predicted.shape == ((len(X),) if n_outputs == 1 else (len(X), n_outputs))
        oracle.Outputs.of(model, X).check("predict", predicted)


def test_predict_blocks_refusals():
    model = fusedmlp.MLP([4, 3], seed=0)
    X = da.zeros((10, 4), chunks=5)
    with pytest.raises(ValueError, match="method must be one of"):
        predict_blocks(model, X, method="fit")
    with pytest.raises(AttributeError, match="predict_proba"):
        predict_blocks(fusedmlp.MLP([4, 1], output="identity"), X, method="predict_proba")
    with pytest.raises(ValueError, match="4 columns"):
        predict_blocks(model, da.zeros((10, 5), chunks=5))
    with pytest.raises(ValueError, match="2-D"):
        predict_blocks(model, da.zeros(10, chunks=5))


def test_estimator_prediction_on_dask_equals_in_memory(client, digits):
    X_train, X_test, y_train, _ = digits
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=20, random_state=0)
    clf.fit(X_train, y_train)
    X_dask = client.persist(da.from_array(X_test, chunks=(100, 64)))
    # blocks of 100 rows against one call: within the bounds of the same float64 values
    # (the classes are 0..9: labels are the indices)
    expected = oracle.Outputs.of(clf.model_, X_test)
    expected.check("predict", clf.predict(X_test))
    expected.check("predict_proba", clf.predict_proba(X_test))

    wrapped = _dask_ml_wrappers().ParallelPostFit(clf)
    labels, proba = dask.compute(wrapped.predict(X_dask), wrapped.predict_proba(X_dask))
    expected.check("predict", labels)
    expected.check("predict_proba", proba)

    labels, proba = dask.compute(predict_blocks(clf, X_dask),
                                 predict_blocks(clf, X_dask, method="predict_proba"))
    expected.check("predict", labels)
    expected.check("predict_proba", proba)


# ---------------------------------------------------------------------- incremental training
def _in_memory_partial_fits(estimator, X, y, chunks, epochs, **kwargs):
    bounds = np.cumsum((0,) + tuple(chunks))
    for _ in range(epochs):
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            estimator.partial_fit(X[lo:hi], y[lo:hi], **kwargs)
    return estimator


def test_partial_fit_blocks_is_in_memory_partial_fit(client, digits):
    X_train, X_test, y_train, y_test = digits
    chunks = (400, 400, 400, len(X_train) - 1200)
    X_dask, y_dask = _dask_pair(client, X_train, y_train, chunks)
    template = MLPClassifier(hidden_layer_sizes=(64,), batch_size=32, learning_rate_init=3e-3,
                             random_state=0)
    streamed = partial_fit_blocks(clone(template), X_dask, y_dask, epochs=4,
                                  shuffle_blocks=False)             # classes from y
    in_memory = _in_memory_partial_fits(clone(template), X_train, y_train, chunks, 4,
                                        classes=np.arange(10))
    for a, b in zip(streamed.coefs_ + streamed.intercepts_,
                    in_memory.coefs_ + in_memory.intercepts_):
        oracle.assert_same_bits(a, b, why=oracle.SAME_CALL)
    assert streamed.score(X_test, y_test) > 0.92

    shuffled = partial_fit_blocks(clone(template), X_dask, y_dask, epochs=4,
                                  classes=np.arange(10), random_state=0)
    fitted = clone(template).set_params(max_iter=4).fit(X_train, y_train)
    # the same data, epochs and batch size: block-streamed matches in-memory fit's accuracy
    assert shuffled.score(X_test, y_test) > 0.92 and fitted.score(X_test, y_test) > 0.92
    assert abs(shuffled.score(X_test, y_test) - fitted.score(X_test, y_test)) < 0.03


def test_dask_ml_incremental_moves_the_estimator_between_workers(client, digits):
    X_train, X_test, y_train, y_test = digits
    chunks = (300,) * 4 + (len(X_train) - 1200,)
    X_dask, y_dask = _dask_pair(client, X_train, y_train, chunks)
    template = MLPClassifier(hidden_layer_sizes=(64,), batch_size=32, learning_rate_init=3e-3,
                             random_state=0)
    incremental = _dask_ml_wrappers().Incremental(clone(template), shuffle_blocks=False)
    for _ in range(3):           # each partial_fit is one pass; the estimator hops workers
        incremental.partial_fit(X_dask, y_dask, classes=np.arange(10))
    in_memory = _in_memory_partial_fits(clone(template), X_train, y_train, chunks, 3,
                                        classes=np.arange(10))
    trained = incremental.estimator_
    for a, b in zip(trained.coefs_ + trained.intercepts_,
                    in_memory.coefs_ + in_memory.intercepts_):
        oracle.assert_same_bits(a, b, why=oracle.SAME_CALL)
    assert incremental.score(X_test, y_test) > 0.92


def test_partial_fit_blocks_regressor(client):
    rng = np.random.default_rng(4)
    X = rng.uniform(-1, 1, size=(sum(UNEVEN_CHUNKS), 3))
    y = X[:, 0] ** 2 + np.sin(3 * X[:, 1])
    X_dask, y_dask = _dask_pair(client, X, y, UNEVEN_CHUNKS)
    template = MLPRegressor(hidden_layer_sizes=(16,), learning_rate_init=0.01, batch_size=32,
                            random_state=0)
    streamed = partial_fit_blocks(clone(template), X_dask, y_dask, epochs=3,
                                  shuffle_blocks=False, prefetch=False)
    in_memory = _in_memory_partial_fits(clone(template), X, y, UNEVEN_CHUNKS, 3)
    oracle.assert_same_bits(streamed.predict(X), in_memory.predict(X), why=oracle.SAME_CALL)


def test_partial_fit_blocks_mlp_with_optimizer(client, digits):
    X_train, X_test, y_train, y_test = digits
    chunks = (500, 500, len(X_train) - 1000)
    X_dask, y_dask = _dask_pair(client, X_train, y_train, chunks)
    streamed = partial_fit_blocks(fusedmlp.MLP([64, 64, 10], seed=0), X_dask, y_dask,
                                  epochs=5, shuffle_blocks=False,
                                  optimizer=fusedmlp.Adam(3e-3), batch_size=32)
    in_memory, optimizer = fusedmlp.MLP([64, 64, 10], seed=0), fusedmlp.Adam(3e-3)
    bounds = np.cumsum((0,) + chunks)
    for _ in range(5):
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            in_memory.fit(X_train[lo:hi], y_train[lo:hi], epochs=1, batch_size=32,
                          optimizer=optimizer)
    oracle.assert_same_bits(streamed.get_params_vector(), in_memory.get_params_vector(),
                            why=oracle.SAME_CALL)
    assert streamed.score(X_test, y_test) > 0.92


def test_partial_fit_blocks_refusals():
    X, y = da.zeros((10, 4), chunks=5), da.zeros(10, chunks=5, dtype=int)
    with pytest.raises(TypeError, match="optimizer="):
        partial_fit_blocks(fusedmlp.MLP([4, 2]), X, y, optimizer="adam")
    with pytest.raises(TypeError, match="partial_fit"):
        partial_fit_blocks(object(), X, y)
    with pytest.raises(ValueError, match="10 rows"):
        partial_fit_blocks(MLPClassifier(), X, da.zeros(9, chunks=5, dtype=int))
    with pytest.raises(ValueError, match="epochs"):
        partial_fit_blocks(MLPClassifier(), X, y, epochs=0)


# ---------------------------------------------------------------------- data-parallel training
def test_loss_and_gradients_over_blocks_matches_reference(client):
    rng = np.random.default_rng(5)
    model = fusedmlp.MLP([12, 16, 8, 4], dtype=np.float64, seed=1)
    for layer in model.layers:                        # non-zero biases matter too
        layer.b = 0.2 * rng.normal(size=layer.n_out)
    X = rng.normal(size=(sum(UNEVEN_CHUNKS), 12))
    y = rng.integers(0, 4, len(X))
    X_dask, y_dask = _dask_pair(client, X, y, UNEVEN_CHUNKS)
    loss, grads = loss_and_gradients(model, X_dask, y_dask)
    # the blocks' sums, weighted by their rows and added in a tree: another order of the
    # batch's sums, which loss_and_gradients_bound allows (its sums over the batch, any order)
    expected_loss, loss_bound, expected, bounds = oracle.loss_and_gradients_bound(
        oracle.parameters_of(model), oracle.activations_of(model), "softmax", X, y, np.float64)
    oracle.assert_within(loss, expected_loss, loss_bound)
    for (dW, db), (eW, eb), (bW, bb) in zip(grads, expected, bounds):
        oracle.assert_within(dW, eW, bW)
        oracle.assert_within(db, eb, bb)


def test_fit_data_parallel_full_batch_is_gradient_descent(client):
    rng = np.random.default_rng(6)
    model = fusedmlp.MLP([10, 16, 3], dtype=np.float64, seed=2)
    X = rng.normal(size=(sum(UNEVEN_CHUNKS), 10))
    y = rng.integers(0, 3, len(X))
    X_dask, y_dask = _dask_pair(client, X, y, UNEVEN_CHUNKS)
    params, lr = oracle.parameters_of(model), 0.3
    activations = oracle.activations_of(model)
    expected_losses = []
    for _ in range(4):                                 # four steps of full-batch descent
        loss, grads = oracle.loss_and_gradients(params, activations, "softmax", X, y)
        expected_losses.append(loss)
        params = [(W - lr * dW, b - lr * db) for (W, b), (dW, db) in zip(params, grads)]

    history = fit_data_parallel(model, X_dask, y_dask, optimizer=fusedmlp.SGD(lr), epochs=4,
                                batch_size=len(X), seed=0)
    assert history["steps"] == 4
    # SGD: the chain of the steps' sums (oracle.step_chain); the losses one forward more
    sizes, m = [10, 16, 3], len(X)
    for step, (loss, expected) in enumerate(zip(history["loss"], expected_losses)):
        oracle.assert_rounding_close(loss, expected, np.float64,
                                     oracle.step_chain(sizes, m, step) + sum(sizes[:-1]) + m)
    k = oracle.step_chain(sizes, m, 4)
    for layer, (W, b) in zip(model.layers, params):
        oracle.assert_rounding_close(layer.W, W, np.float64, k)
        oracle.assert_rounding_close(layer.b, b, np.float64, k)


def test_fit_data_parallel_trains_digits_like_in_memory(client, digits):
    X_train, X_test, y_train, y_test = digits
    X_dask, y_dask = _dask_pair(client, X_train, y_train, 270)
    parallel = fusedmlp.MLP([64, 64, 10], seed=0)
    history = fit_data_parallel(parallel, X_dask, y_dask, optimizer=fusedmlp.Adam(3e-3),
                                epochs=8, batch_size=64, seed=0)
    assert history["steps"] == 8 * int(np.ceil(len(X_train) / 64))
    assert history["loss"][-1] < history["loss"][0]
    in_memory = fusedmlp.MLP([64, 64, 10], seed=0)
    in_memory.fit(X_train, y_train, epochs=8, batch_size=64, optimizer=fusedmlp.Adam(3e-3))
    assert parallel.score(X_test, y_test) > 0.92 and in_memory.score(X_test, y_test) > 0.92
    assert abs(parallel.score(X_test, y_test) - in_memory.score(X_test, y_test)) < 0.03


def test_fit_data_parallel_refusals(client):
    X, y = da.zeros((10, 4), chunks=5), da.zeros(10, chunks=5, dtype=int)
    model = fusedmlp.MLP([4, 2])
    with pytest.raises(TypeError, match="optimizer must be"):
        fit_data_parallel(model, X, y, optimizer="adam")
    with pytest.raises(TypeError, match="model must be a fusedmlp.MLP"):
        fit_data_parallel(MLPClassifier(), X, y, optimizer=fusedmlp.SGD())
    with pytest.raises(ValueError, match="4 columns"):
        fit_data_parallel(model, da.zeros((10, 5), chunks=5), y, optimizer=fusedmlp.SGD())
    bad_labels = da.from_array(np.full(10, 7), chunks=5)
    with pytest.raises(ValueError, match="label"):
        fit_data_parallel(model, X, bad_labels, optimizer=fusedmlp.SGD())
