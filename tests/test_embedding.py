"""Embedding: inference into caller memory (out=), the per-thread scratch cache, and the C and
Cython APIs (built into a temporary directory by the fixtures in this file)."""

import threading
import tracemalloc

import numpy as np
import pytest

import fusedmlp

METHODS = ["forward", "predict_proba", "predict_log_proba"]


def _classifier(dtype=np.float32, sizes=(12, 24, 16, 5), seed=0):
    rng = np.random.default_rng(seed)
    model = fusedmlp.MLP(list(sizes), activation=["tanh", "relu"][: len(sizes) - 2],
                         dtype=dtype, seed=seed)
    X = rng.normal(size=(64, sizes[0]))
    model.fit(X, rng.integers(0, sizes[-1], size=64), epochs=2, batch_size=16,
              optimizer=fusedmlp.Adam(0.01))
    return model


# --------------------------------------------------------------------------- out=

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("m", [0, 1, 7, 256, 300])
def test_out_receives_exactly_the_allocated_result(method, dtype, m):
    model = _classifier(dtype)
    X = np.random.default_rng(1).normal(size=(m, 12)).astype(dtype)
    expected = getattr(model, method)(X)
    out = np.full((m, 5), np.nan, dtype)
    got = getattr(model, method)(X, out=out)
    assert got is out
    assert out.tobytes() == expected.tobytes()


@pytest.mark.parametrize("method", METHODS)
def test_out_with_inputs_that_need_conversion(method):
    # a float64, strided, read-only input into a float32 model: converted once, out written
    model = _classifier(np.float32)
    base = np.random.default_rng(2).normal(size=(9, 24))
    X = base[:, ::2]
    X.flags.writeable = False
    out = np.empty((9, 5), np.float32)
    assert getattr(model, method)(X, out=out) is out
    assert out.tobytes() == getattr(model, method)(X.astype(np.float32)).tobytes()


def _bad_outs(dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    read_only = np.empty((4, 5), dtype)
    read_only.flags.writeable = False
    return [
        ("wrong-dtype", np.empty((4, 5), other), TypeError, "out must have dtype"),
        ("integer", np.empty((4, 5), np.int64), TypeError, "out must have dtype"),
        ("wrong-rows", np.empty((3, 5), dtype), ValueError, r"out must have shape \(4, 5\)"),
        ("wrong-columns", np.empty((4, 6), dtype), ValueError, r"out must have shape \(4, 5\)"),
        ("1-d", np.empty(20, dtype), ValueError, r"out must have shape \(4, 5\)"),
        ("read-only", read_only, ValueError, "out is read-only"),
        ("strided", np.empty((4, 10), dtype)[:, ::2], ValueError, "out must be C-contiguous"),
        ("fortran", np.asfortranarray(np.empty((4, 5), dtype)), ValueError,
         "out must be C-contiguous"),
        ("a-list", [[0.0] * 5] * 4, TypeError, "out must be a numpy.ndarray"),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("method", METHODS)
def test_bad_out_is_refused_naming_out(method, dtype):
    model = _classifier(dtype)
    X = np.ones((4, 12), dtype)
    for name, out, error, message in _bad_outs(dtype):
        with pytest.raises(error, match=message):
            getattr(model, method)(X, out=out)


@pytest.mark.parametrize("method", METHODS)
def test_out_overlapping_the_input_is_refused(method):
    # 5 features and 5 outputs, so out could alias X exactly
    model = fusedmlp.MLP([5, 8, 5], dtype=np.float64, seed=0)
    X = np.random.default_rng(3).normal(size=(6, 5))
    before = X.copy()
    for rows, out in ((X, X), (X[:4], X[2:6]), (X[1:3], X[2:4])):
        with pytest.raises(ValueError, match="out must not overlap X"):
            getattr(model, method)(rows, out=out)
    assert np.array_equal(X, before)


def test_out_on_a_regressor():
    model = fusedmlp.MLP([3, 4, 2], output="identity", dtype=np.float64, seed=0)
    X = np.ones((2, 3))
    out = np.empty((2, 2))
    assert model.forward(X, out=out) is out
    with pytest.raises(AttributeError, match="predict_proba needs output='softmax'"):
        model.predict_proba(X, out=out)


def test_nan_input_with_out_raises_and_names_X():
    model = _classifier(np.float32)
    X = np.ones((2, 12), np.float32)
    X[1, 3] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        model.predict_proba(X, out=np.empty((2, 5), np.float32))


# --------------------------------------------------------------------------- allocation

def _numpy_traced():
    """(bytes, blocks) of NumPy data alive now."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.DomainFilter(inclusive=True, domain=np.lib.tracemalloc_domain)])
    stats = snapshot.statistics("filename")
    return sum(s.size for s in stats), sum(s.count for s in stats)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("method", METHODS)
def test_warm_inference_with_out_allocates_nothing(method, dtype):
    model = _classifier(dtype, sizes=(40, 64, 32, 3))
    X = np.random.default_rng(0).normal(size=(32, 40)).astype(dtype)
    out = np.empty((32, 3), dtype)
    call = getattr(model, method)
    for _ in range(3):
        call(X, out=out)                    # warm: this thread's scratch exists
    tracemalloc.start()
    try:
        call(X, out=out)
        before = _numpy_traced()
        peaks = {"call": 0, "nothing": 0}
        for _ in range(200):
            for what, run in (("call", lambda: call(X, out=out)), ("nothing", lambda: None)):
                tracemalloc.reset_peak()
                current = tracemalloc.get_traced_memory()[0]
                run()
                peaks[what] = max(peaks[what], tracemalloc.get_traced_memory()[1] - current)
        after = _numpy_traced()
    finally:
        tracemalloc.stop()
    assert after == before
    # Not even transiently, in any domain: the peak is that of calling nothing (the
    # measurement's own tuple, when its free list is empty).
    assert peaks["call"] == peaks["nothing"], f"a warm {method}(out=) allocated: {peaks}"


def test_scratch_grows_for_bigger_batches_and_results_stay_exact():
    model = _classifier(np.float64)
    rng = np.random.default_rng(4)
    for m in (1, 3, 255, 256, 257, 1000, 2, 600):
        X = rng.normal(size=(m, 12))
        out = np.empty((m, 5))
        model.predict_proba(X, out=out)
        chunks = [model.predict_proba(X[i:i + 1]) for i in range(m)]
        np.testing.assert_array_equal(out, np.concatenate(chunks))


# --------------------------------------------------------------------------- threads

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_from_many_threads_equals_serial(dtype):
    model = _classifier(dtype)
    rng = np.random.default_rng(5)
    n_threads, n_iterations = 8, 30
    sizes = [1, 8, 32, 255, 257]
    inputs = [[rng.normal(size=(sizes[(t + i) % len(sizes)], 12)).astype(dtype)
               for i in range(n_iterations)] for t in range(n_threads)]
    expected = [[model.predict_proba(X).tobytes() for X in row] for row in inputs]
    mismatches = []
    barrier = threading.Barrier(n_threads)

    def work(t):
        barrier.wait()
        for i, X in enumerate(inputs[t]):
            out = np.empty((len(X), 5), dtype)
            model.predict_proba(X, out=out)
            if out.tobytes() != expected[t][i]:
                mismatches.append((t, i))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not mismatches
