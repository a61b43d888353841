"""fusedmlp's own worker pool: n_threads, equal results for every thread count, threadpoolctl,
fork, and models trained from several Python threads (docs/threading.md).

Exactness: the parts of a step are disjoint blocks with no cross-part sum, but the BLAS picks
its kernels by the matrix sizes (and the CPU), so a product computed in two blocks may round
differently from the same product computed whole. Results for different n_threads therefore
agree to the rounding bound of their chain of sums (tests/oracle.py, rounding_tolerance,
step_chain; trained with SGD, whose update is linear in the gradient), and are bit-identical
only between runs with the same n_threads (the same BLAS calls on the same shapes and data).
The adaptive optimisers, which a near-zero gradient's rounding can move by a whole learning
rate, are compared on a step whose every sum is exact (small dyadic numbers), where the split
cannot change a bit.
"""

import os
import sys
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import fusedmlp
from fusedmlp import _network
from fusedmlp.threads import usable_cores

import oracle
from oracle import assert_rounding_close, step_chain

ACTIVATIONS = ["relu", "tanh", "sigmoid", "identity", "leaky_relu", "elu", "softplus", "step"]
DTYPES = [np.float32, np.float64]
THREADS = (1, 2, 3)
SIZES = (40, 48, 36, 6)


def data(n=200, n_in=40, n_out=6, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_in)).astype(dtype), rng.integers(0, n_out, size=n)


def train(n_threads, dtype, activation="relu", optimizer=None, sizes=SIZES,
          output="softmax", targets=None, sample_weight=None, epochs=2, batch_size=64):
    X, y = data(dtype=dtype)
    if targets is not None:
        y = targets
    model = fusedmlp.MLP(list(sizes), activation=activation, output=output, dtype=dtype, seed=0,
                         n_threads=n_threads)
    model.fit(X, y, epochs=epochs, batch_size=batch_size, shuffle=False,
              optimizer=optimizer() if optimizer else fusedmlp.SGD(0.1),
              sample_weight=sample_weight)
    return model, X


def chain(sizes=SIZES, batch=64, n=200, epochs=2):
    """k of the parameters and outputs after train(...): its SGD steps, then one forward."""
    steps = epochs * -(-n // batch)
    return step_chain(sizes, batch, steps) + sum(sizes[:-1])


def assert_close(got, expected, dtype, k):
    assert_rounding_close(got, expected, dtype, k)


def outputs(model, X):
    if model.output == "softmax":
        return [model._params.copy(), model.predict_proba(X), model.predict_log_proba(X)]
    return [model._params.copy(), model.forward(X)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fit_and_inference_agree_for_1_2_3_threads(dtype, activation):
    results = []
    for n in THREADS:
        model, X = train(n, dtype, activation)
        assert model._net.step_parts(64) == n            # really split as asked
        results.append(outputs(model, X))
    for other in results[1:]:
        for got, expected in zip(other, results[0]):
            assert_close(got, expected, dtype, chain())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["sample_weight", "soft_targets", "regression"])
def test_weights_soft_targets_and_regression_agree_across_threads(dtype, case):
    rng = np.random.default_rng(5)
    kwargs = {}
    if case == "sample_weight":
        kwargs["sample_weight"] = rng.uniform(0.1, 2.0, size=200)
    elif case == "soft_targets":
        t = rng.uniform(size=(200, 6))
        kwargs["targets"] = t / t.sum(axis=1, keepdims=True)
    else:
        kwargs.update(output="identity", targets=rng.normal(size=(200, 6)))
    results = [outputs(*train(n, dtype, "tanh", **kwargs)) for n in THREADS]
    for other in results[1:]:
        for got, expected in zip(other, results[0]):
            assert_close(got, expected, dtype, chain())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_small_batches_split_by_columns_agree_across_threads(dtype, activation):
    # batches narrower than the layers: every product (forward, dA) is split by columns
    results = []
    for n in THREADS:
        model, X = train(n, dtype, activation, sizes=(40, 96, 64, 6), batch_size=16, epochs=1)
        results.append(outputs(model, X[:16]) + [model.forward(X[:1]), model.forward(X[:5])])
    for other in results[1:]:
        for got, expected in zip(other, results[0]):
            assert_close(got, expected, dtype, chain((40, 96, 64, 6), 16, epochs=1))


def test_small_batches_with_dropout_agree_across_threads():
    # dropout's mask is drawn per whole row: those layers split by rows, the rest by columns
    X, y = data()
    params = []
    for n in THREADS:
        model = fusedmlp.MLP([40, 96, 64, 6], dropout=[0.3, 0.0], dtype=np.float64, seed=0,
                             n_threads=n)
        model.fit(X, y, epochs=1, batch_size=16, shuffle=False, optimizer=fusedmlp.SGD(0.1))
        params.append(model._params.copy())
    for other in params[1:]:
        assert_close(other, params[0], np.float64, chain((40, 96, 64, 6), 16, epochs=1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_batches_split_by_batch_rows_agree_across_threads(dtype):
    # batches of >= 512 rows through narrow layers: dW and db summed per part, then added
    X, y = data(n=1200, n_in=20, dtype=dtype)
    results = []
    for n in THREADS:
        model = fusedmlp.MLP([20, 32, 24, 6], dtype=dtype, seed=0, n_threads=n)
        loss, grads = model.loss_and_gradients(X[:600], y[:600])
        model.fit(X, y, epochs=2, batch_size=600, shuffle=False, optimizer=fusedmlp.SGD(0.1))
        results.append([np.array([loss])] + [g for pair in grads for g in pair]
                       + [model._params.copy()])
    for other in results[1:]:
        for got, expected in zip(other, results[0]):
            assert_close(got, expected, dtype, chain((20, 32, 24, 6), 600, n=1200))


# (sizes, batch) at 2 parts: dA by rows (each layer's update runs in the next region), dA by
# columns (in its own region) beside a region small enough for the caller, a batch-split
# backward (the update after the sums), an inner-split forward, and two inner splits in a
# row
FUSED_CASES = [((40, 48, 36, 6), 64), ((100, 128, 96, 6), 16), ((20, 32, 24, 6), 512),
               ((300, 64, 10), 32), ((200, 160, 128, 10), 16)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_inner_splits_in_a_row_agree_across_threads(dtype):
    X, y = data(n=16, n_in=200, n_out=10, dtype=dtype)
    results = []
    for n in THREADS:
        model = fusedmlp.MLP([200, 160, 128, 10], dtype=dtype, seed=0, n_threads=n)
        # SGD: Adam would magnify the rounding of near-zero gradients (module docstring)
        losses = [model.train_step(X, y, fusedmlp.SGD(0.05)) for _ in range(3)]
        results.append((losses, model._params.copy(), model.forward(X)))
    k = chain((200, 160, 128, 10), 16, n=48, epochs=1)
    for losses, params, scores in results[1:]:
        assert_close(losses, results[0][0], dtype, k)
        assert_close(params, results[0][1], dtype, k)
        assert_close(scores, results[0][2], dtype, k)


@pytest.mark.parametrize("sizes, batch", FUSED_CASES)
@pytest.mark.parametrize("n_threads", [2, 3])
def test_update_fused_into_the_backward_gives_the_bits_of_its_own_region(sizes, batch,
                                                                          n_threads):
    # without clipping each part updates its blocks inside the backward; with a clipping
    # norm never reached (scale 1), in a region after it: the same arithmetic, the same bits
    X, y = data(n=batch, n_in=sizes[0], n_out=sizes[-1], dtype=np.float32)
    params = []
    for clip in (0.0, 1e30):
        model = fusedmlp.MLP(list(sizes), seed=0, n_threads=n_threads)
        optimizer = fusedmlp.Adam(0.01)
        optimizer.clip_norm = clip
        losses = [model.train_step(X, y, optimizer) for _ in range(3)]
        params.append((losses, model._params.copy()))
    assert params[0][0] == params[1][0]
    oracle.assert_same_bits(params[0][1], params[1][1], why=oracle.FIXED_SPLIT)


@pytest.mark.parametrize("sizes, batch", FUSED_CASES)
def test_split_step_refuses_nan_in_any_part_of_x(sizes, batch):
    # the parts check the blocks of X they read (rows, or columns of an inner split)
    X, y = data(n=batch, n_in=sizes[0], n_out=sizes[-1], dtype=np.float32)
    model = fusedmlp.MLP(list(sizes), seed=0, n_threads=2)
    before = model._params.copy()
    for i, j in [(0, 0), (batch - 1, sizes[0] - 1), (batch // 2, sizes[0] // 2)]:
        bad = X.copy()
        bad[i, j] = np.nan if i else np.inf
        with pytest.raises(ValueError, match="X contains NaN or infinity"):
            model.train_step(bad, y, fusedmlp.Adam(0.01))
        with pytest.raises(ValueError, match="X contains NaN or infinity"):
            model.train_step(bad, np.full_like(y, 99), fusedmlp.Adam(0.01))
    oracle.assert_same_bits(model._params, before, why=oracle.UNTOUCHED)
    model.train_step(X, y, fusedmlp.Adam(0.01))


def test_auto_depends_on_the_shapes_alone():
    # no load average or timing: the same shapes always give the same count
    with threadpool_limits({"fusedmlp": 2}):
        cores = min(2, usable_cores())
        small, big = fusedmlp.MLP([64, 32, 10]), fusedmlp.MLP([784, 512, 512, 10])
        for _ in range(3):
            assert small._net.step_parts(32) == 1 and small._net.inference_parts(32) == 1
            assert big._net.step_parts(64) == cores and big._net.step_parts(1024) == cores
            assert big._net.inference_parts(1) == 1


OPTIMIZERS = {
    "sgd": lambda: fusedmlp.SGD(0.05),
    "nesterov": lambda: fusedmlp.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda: fusedmlp.Adam(0.01),
    "adamw": lambda: fusedmlp.AdamW(0.01, weight_decay=0.1),
    "rmsprop": lambda: fusedmlp.RMSProp(0.01),
    "adagrad": lambda: fusedmlp.AdaGrad(0.05),
}
LINEAR = ("sgd", "nesterov")      # updates linear in the gradient: rounding is not magnified


@pytest.mark.parametrize("name", LINEAR)
def test_linear_optimizer_updates_agree_across_threads(name):
    results = [train(n, np.float64, optimizer=OPTIMIZERS[name])[0]._params.copy()
               for n in THREADS]
    # momentum 0.9 sums each gradient into the next 1 / (1 - 0.9) = 10 steps' updates
    k = 10 * chain()
    for other in results[1:]:
        assert_close(other, results[0], np.float64, k)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_update_is_bit_identical_across_threads_when_the_sums_are_exact(name):
    # Integers in X and the targets, weights in quarters, identity layers and a squared-error
    # gradient over 64 x 8 outputs (2 / 512 = 2**-8): every sum of the step is of short dyadic
    # numbers, exact in any order, so each split gets the very same gradient and the update
    # (fusedmlp's own loop, run on each part's rows) the very same bits.
    rng = np.random.default_rng(3)
    sizes = (40, 48, 36, 8)
    X = rng.integers(-3, 4, size=(64, 40)).astype(np.float64)
    t = rng.integers(-3, 4, size=(64, 8)).astype(np.float64)
    start = None
    results = []
    for n in THREADS:
        model = fusedmlp.MLP(list(sizes), activation="identity", output="identity",
                             dtype=np.float64, seed=0, n_threads=n)
        assert model._net.step_parts(64) == n
        if start is None:
            start = rng.integers(-4, 5, size=model.parameters.size) / 4
        model.parameters[:] = start
        model.train_step(X, t, OPTIMIZERS[name]())
        results.append(model._params.copy())
    assert not np.array_equal(results[0], start)
    for params in results[1:]:
        oracle.assert_same_bits(params, results[0], why=oracle.EXACT)


def test_clipped_training_agrees_across_threads():
    X, y = data()
    params = []
    for n in THREADS:
        model = fusedmlp.MLP([40, 48, 6], dtype=np.float64, seed=1, n_threads=n)
        model.fit(X, y, epochs=2, batch_size=50, shuffle=False, clip_norm=0.05,
                  optimizer=fusedmlp.SGD(0.1))
        params.append(model._params.copy())
    # each of the 2 x 4 steps' clipping scale (the gradient's norm: one sum over every
    # parameter) joins the chain
    k = chain((40, 48, 6), 50) + 2 * 4 * model.parameters.size
    for other in params[1:]:
        assert_close(other, params[0], np.float64, k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_same_thread_count_is_bit_identical_run_to_run(dtype):
    first, X = train(2, dtype, sizes=(40, 64, 6), batch_size=100)
    second, _ = train(2, dtype, sizes=(40, 64, 6), batch_size=100)
    oracle.assert_same_bits(first._params, second._params, why=oracle.SAME_CALL)
    oracle.assert_same_bits(first.predict_proba(X), second.predict_proba(X), why=oracle.SAME_CALL)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_inference_split_across_threads(dtype):
    model, _ = train(1, dtype, epochs=1)
    X, _ = data(n=1500, dtype=dtype, seed=9)       # several chunks per part
    expected = model.predict_proba(X)
    k = sum(SIZES[:-1])                            # one forward; the parameters are shared
    for n in (2, 3):
        model.n_threads = n
        assert model._net.inference_parts(len(X)) == n
        assert_close(model.predict_proba(X), expected, dtype, k)
        out = np.empty_like(expected)
        assert model.predict_proba(X, out=out) is out
        assert_close(out, expected, dtype, k)
    # more parts than the shared scratch's 256 rows have blocks of 16: the split uses 16
    model.n_threads = 20
    assert_close(model.predict_proba(X), expected, dtype, k)


def test_n_threads_attribute_and_validation():
    model = fusedmlp.MLP([4, 8, 2])
    assert model.n_threads == "auto"
    model.n_threads = 3
    assert model.n_threads == 3 and model._net.step_parts(32) == 3
    model.n_threads = "auto"
    assert model.n_threads == "auto"
    for bad, error in [(0, ValueError), (-1, ValueError), (5000, ValueError), (2.0, TypeError),
                       (True, TypeError), ("two", TypeError), (None, TypeError)]:
        with pytest.raises(error, match="n_threads must be 'auto' or"):
            model.n_threads = bad
        with pytest.raises(error, match="n_threads must be 'auto' or"):
            fusedmlp.MLP([4, 8, 2], n_threads=bad)
    assert model.n_threads == "auto"


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_n_threads_survives_pickle_and_reaches_the_estimators():
    import pickle
    model = fusedmlp.MLP([4, 8, 2], n_threads=2)
    assert pickle.loads(pickle.dumps(model)).n_threads == 2
    pytest.importorskip("sklearn")
    from fusedmlp.sklearn import MLPClassifier
    X, y = data(n=60, n_in=4, n_out=2)
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, n_threads=2).fit(X, y)
    assert est.get_params()["n_threads"] == 2 and est.model_.n_threads == 2


def test_auto_is_one_thread_for_small_work_and_bounded_by_cores():
    small = fusedmlp.MLP([64, 32, 10])
    assert small._net.step_parts(32) == 1
    assert small._net.inference_parts(32) == 1
    big = fusedmlp.MLP([784, 512, 512, 10])
    assert 1 <= big._net.step_parts(1024) <= usable_cores()


def test_threadpool_limits_caps_auto_and_explicit_counts_are_obeyed():
    big = fusedmlp.MLP([784, 512, 512, 10])
    explicit = fusedmlp.MLP([784, 512, 512, 10], n_threads=2)
    pools = [p for p in threadpool_info() if p["user_api"] == "fusedmlp"]
    assert len(pools) == 1 and pools[0]["num_threads"] == _network.thread_limit()
    before = _network.thread_limit()      # (tests/conftest.py holds threadpool_limits(1))
    with threadpool_limits(2):
        assert _network.thread_limit() == min(2, usable_cores())
    with threadpool_limits(1):
        assert _network.thread_limit() == 1
        assert big._net.step_parts(1024) == 1
        assert explicit._net.step_parts(1024) == 2
    with threadpool_limits({"fusedmlp": 1}):
        assert big._net.step_parts(1024) == 1
    assert _network.thread_limit() == before


def test_threadpool_info_unchanged_by_threaded_calls():
    before = sorted((p["filepath"], p["num_threads"]) for p in threadpool_info())
    model, X = train(2, np.float32)
    model.predict(X)
    assert sorted((p["filepath"], p["num_threads"]) for p in threadpool_info()) == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
# forking a multi-threaded process is what this test checks (Python 3.12+ warns about it)
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_after_a_threaded_fit_gives_the_child_a_working_pool():
    model, X = train(2, np.float64)
    assert _network.pool_size() >= 1
    expected = train(2, np.float64)[0]._params.copy()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                # child: a fresh pool, started on demand
        status = 1
        try:
            os.close(read)
            fresh = _network.pool_size() == 0
            again = train(2, np.float64)[0]._params
            # the same calls in the child: the same bits (oracle.SAME_CALL)
            ok = fresh and _network.pool_size() >= 1 and np.array_equal(again, expected)
            os.write(write, b"ok" if ok else b"mismatch")
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        answer = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0 and answer == b"ok"


def test_two_models_in_two_python_threads_share_the_pool():
    """Each call uses the idle workers it can claim and runs the other parts itself, so two
    models stepping at once neither wait for each other nor change each other's results."""
    results = [None, None]

    def work(i):
        results[i] = train(2, np.float32, sizes=(40, 96, 6), epochs=4)[0]._params.copy()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = train(2, np.float32, sizes=(40, 96, 6), epochs=4)[0]._params
    for got in results:
        oracle.assert_same_bits(got, expected, why=oracle.SAME_CALL)   # same n_threads: same bits


def test_threads_bench_table_runs():
    from fusedmlp.cli import bench_threads
    peaks, results, skipped = bench_threads.measure(configs=[((8, 8, 2), 4)], rounds=1,
                                                    target_time=0.001, peers=())
    assert peaks[1] > 0 and peaks[2] > 0
    text = bench_threads.table(results)
    assert "| 8-8-2 | 4 |" in text and "2 vs 1" in text


def test_threads_bench_verdict_names_every_cell_behind():
    from fusedmlp.cli import bench_threads
    times = {"step 1": 1.0, "step 2": 0.6, "torch 1": 5.0, "jax 1": 1.2, "torch 2": 4.0,
             "jax 2": 0.5}
    line = bench_threads.verdict([{"sizes": (8, 4, 2), "batch": 16, "times": times}])
    assert "every cell at 1 and 2 threads: NO" in line and "8-4-2 b16 against jax 2 (0.83×)" in line
    assert "jax 1 thread 1.20×" in line and "against torch" not in line
    del times["jax 2"]
    line = bench_threads.verdict([{"sizes": (8, 4, 2), "batch": 16, "times": times}])
    assert ": yes" in line and "not measured: jax 2" in line


def test_threads_bench_reports_a_peer_that_cannot_start():
    from fusedmlp.cli import bench_threads
    skipped = {}
    assert bench_threads.start_peers(["no-such-peer"], [((8, 4, 2), 4)], skipped) == {}
    assert set(skipped) == {"no-such-peer 1", "no-such-peer 2"}
    assert "KeyError" in skipped["no-such-peer 1"]


@pytest.mark.skipif(bool(fusedmlp._kernels.bf16_why_not()), reason="no bf16 product here")
def test_refused_split_bf16_step_leaves_no_stale_packed_weights():
    # a split bf16 step packs the weights first; a step refused for its X must drop them, or
    # inference after the user's own write to W would read the old ones
    X, y = data(n=32, n_in=300, n_out=10, dtype=np.float32)
    model = fusedmlp.MLP([300, 64, 10], seed=0, n_threads=2, compute_dtype="bfloat16")
    bad = X.copy()
    bad[-1, -1] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        model.train_step(bad, y, fusedmlp.Adam(0.01))
    model.layers[0].W[...] *= 0.5
    fresh = fusedmlp.MLP([300, 64, 10], seed=0, n_threads=2, compute_dtype="bfloat16")
    fresh.set_params_vector(model.get_params_vector())
    oracle.assert_same_bits(model.forward(X), fresh.forward(X), why=oracle.SAME_CALL)
