"""fusedmlp on Dask (fusedmlp.dask): distributed prediction, block-streamed and dask-ml
incremental training, data-parallel gradients, and pickles small enough to ship.

Runs on one ``distributed.LocalCluster`` (two worker processes, one thread each, bound to
127.0.0.1) shared by the module: everything sent to a worker really is pickled. References are
float64 NumPy written here, or in-memory training on the same blocks in the same order.
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

# short training runs on purpose: scikit-learn's "not converged" warning is expected
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

UNEVEN_CHUNKS = (100, 37, 263, 50)               # 450 rows in blocks of different sizes
RTOL = {np.float32: 1e-4, np.float64: 1e-10}


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


# ---------------------------------------------------------------------- float64 reference
def _reference_forward(params, X):
    """Scores of a relu network, float64 NumPy; also the hidden activations."""
    activations = [np.asarray(X, np.float64)]
    for W, b in params[:-1]:
        activations.append(np.maximum(activations[-1] @ W + b, 0.0))
    W, b = params[-1]
    return activations[-1] @ W + b, activations


def _reference_softmax(scores):
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _reference_loss_and_gradients(params, X, y):
    """Mean softmax cross-entropy on integer labels and its gradient, float64 NumPy."""
    scores, activations = _reference_forward(params, X)
    m = len(X)
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_p[np.arange(m), y].mean()
    delta = np.exp(log_p)
    delta[np.arange(m), y] -= 1.0
    delta /= m
    grads = []
    for i in range(len(params) - 1, -1, -1):
        W, _ = params[i]
        grads.append((activations[i].T @ delta, delta.sum(axis=0)))
        if i:
            delta = (delta @ W.T) * (activations[i] > 0)
    return loss, grads[::-1]


def _params_of(model):
    return [(layer.W.astype(np.float64), layer.b.astype(np.float64)) for layer in model.layers]


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
    np.testing.assert_array_equal(restored.get_params_vector(), model.get_params_vector())
    np.testing.assert_array_equal(restored.predict_proba(X[:50]), model.predict_proba(X[:50]))


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
        np.testing.assert_array_equal(a, b)
    # Pickling (shipping to a worker) must not change the estimator that stays here.
    for a, b in zip(shipped.coefs_ + shipped.intercepts_, expected):
        np.testing.assert_array_equal(a, b, err_msg="pickling reset the original's optimiser")


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

    expected_scores, _ = _reference_forward(_params_of(model), X)
    expected_proba = _reference_softmax(expected_scores)
    assert proba.dtype == dtype and scores.dtype == dtype
    np.testing.assert_allclose(scores, expected_scores, rtol=RTOL[dtype], atol=RTOL[dtype])
    np.testing.assert_allclose(proba, expected_proba, rtol=RTOL[dtype], atol=RTOL[dtype])
    np.testing.assert_allclose(log_proba, np.log(expected_proba), rtol=RTOL[dtype],
                               atol=RTOL[dtype])
    # and the same numbers as predicting the whole array in this process
    np.testing.assert_allclose(proba, model.predict_proba(X), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(labels, model.predict(X))


def test_predict_blocks_regressor_shapes(client):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(sum(UNEVEN_CHUNKS), 6))
    X_dask = da.from_array(X, chunks=(UNEVEN_CHUNKS, 3))        # two column blocks: merged
    for n_outputs in (1, 3):
        model = fusedmlp.MLP([6, 8, n_outputs], output="identity", dtype=np.float64, seed=0)
        predicted = predict_blocks(model, X_dask).compute()
        expected, _ = _reference_forward(_params_of(model), X)
        expected = expected[:, 0] if n_outputs == 1 else expected
        assert predicted.shape == expected.shape
        np.testing.assert_allclose(predicted, expected, rtol=1e-10, atol=1e-12)


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
    expected_labels, expected_proba = clf.predict(X_test), clf.predict_proba(X_test)

    wrapped = _dask_ml_wrappers().ParallelPostFit(clf)
    labels, proba = dask.compute(wrapped.predict(X_dask), wrapped.predict_proba(X_dask))
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(proba, expected_proba, rtol=1e-6, atol=1e-7)

    labels, proba = dask.compute(predict_blocks(clf, X_dask),
                                 predict_blocks(clf, X_dask, method="predict_proba"))
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(proba, expected_proba, rtol=1e-6, atol=1e-7)


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
        np.testing.assert_array_equal(a, b)
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
        np.testing.assert_array_equal(a, b)
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
    np.testing.assert_array_equal(streamed.predict(X), in_memory.predict(X))


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
    np.testing.assert_array_equal(streamed.get_params_vector(), in_memory.get_params_vector())
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
    expected_loss, expected = _reference_loss_and_gradients(_params_of(model), X, y)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    for (dW, db), (eW, eb) in zip(grads, expected):
        np.testing.assert_allclose(dW, eW, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(db, eb, rtol=1e-9, atol=1e-12)


def test_fit_data_parallel_full_batch_is_gradient_descent(client):
    rng = np.random.default_rng(6)
    model = fusedmlp.MLP([10, 16, 3], dtype=np.float64, seed=2)
    X = rng.normal(size=(sum(UNEVEN_CHUNKS), 10))
    y = rng.integers(0, 3, len(X))
    X_dask, y_dask = _dask_pair(client, X, y, UNEVEN_CHUNKS)
    params, lr = _params_of(model), 0.3
    expected_losses = []
    for _ in range(4):                                 # four steps of full-batch descent
        loss, grads = _reference_loss_and_gradients(params, X, y)
        expected_losses.append(loss)
        params = [(W - lr * dW, b - lr * db) for (W, b), (dW, db) in zip(params, grads)]

    history = fit_data_parallel(model, X_dask, y_dask, optimizer=fusedmlp.SGD(lr), epochs=4,
                                batch_size=len(X), seed=0)
    assert history["steps"] == 4
    np.testing.assert_allclose(history["loss"], expected_losses, rtol=1e-10)
    for layer, (W, b) in zip(model.layers, params):
        np.testing.assert_allclose(layer.W, W, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(layer.b, b, rtol=1e-9, atol=1e-12)


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
