"""The C API's inference and training step on fusedmlp's worker pool: split into the model's
n_threads parts as Python's calls are, equal to Python's results, and the scratch contract:
fusedmlp_scratch_bytes() does not depend on n_threads, so scratch sized under one setting stays
large enough under any other (docs/embedding.md, docs/threading.md).

Tolerance (tests/test_threads.py): results for different n_threads agree to rounding. At the
same n_threads the C API runs what Python runs (one inference routine, the same shared
scratch layout), so the two agree bit for bit at every batch size.
"""

import os
import threading

import numpy as np
import pytest

import fusedmlp
from test_embedding import HERE, _build_and_import, _need_compiler
from oracle import rounding_tolerance

DTYPES = [np.float32, np.float64]
OUTPUTS = {0: "forward", 1: "predict_proba", 2: "predict_log_proba"}
# 40-48-6: every layer splits by rows from 48 rows (one part runs the whole network for its
# rows); 40-160-10: below 160 rows the hidden layer is wider than the batch, and the split is
# by layers (each product by columns), from 160 rows by rows
SIZES = [(40, 48, 6), (40, 160, 10)]
# split against whole inference: one forward's chain of sums (tests/oracle.py), relative to
# the outputs (probabilities, at most 1)
RTOL = ATOL = {dtype: rounding_tolerance(dtype, max(sum(s[:-1]) for s in SIZES))
               for dtype in DTYPES}


@pytest.fixture(scope="module")
def c_client(tmp_path_factory):
    _need_compiler()
    return _build_and_import("c_client", os.path.join(HERE, "embedding", "c_client.c"),
                             tmp_path_factory.mktemp("c_client_threads"))


def _model(sizes, dtype, n_threads=1):
    rng = np.random.default_rng(0)
    model = fusedmlp.MLP(list(sizes), activation="tanh", dtype=dtype, seed=0,
                         n_threads=n_threads)
    X = rng.normal(size=(64, sizes[0]))
    model.fit(X, rng.integers(0, sizes[-1], size=64), epochs=1, batch_size=16,
              optimizer=fusedmlp.Adam(0.01))
    return model


def _code(dtype):
    return 0 if dtype == np.float32 else 1


def _c_infer(c_client, handle, X, n_outputs, output, dtype, scratch_size):
    """One C API call over all of X, with exactly scratch_size bytes of scratch."""
    out = np.full((len(X), n_outputs), np.nan, dtype)
    status, intact = c_client.infer_guarded(handle, X, out, output, scratch_size, _code(dtype))
    assert status == 0 and intact, (status, "scratch overrun" if not intact else "")
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", SIZES)
def test_c_api_inference_splits_as_python_and_equals_it(c_client, sizes, dtype):
    model = _model(sizes, dtype)
    handle = c_client.model_new(model)
    X = np.random.default_rng(1).normal(size=(700, sizes[0])).astype(dtype)
    single = {}
    for n_threads in (1, 2, 3):
        model.n_threads = n_threads
        for m in (1, 17, 64, 256, 700):
            if m >= 64:
                assert model._net.inference_parts(m) == n_threads
            scratch = c_client.scratch_bytes(handle, m)
            for output, method in OUTPUTS.items():
                got = _c_infer(c_client, handle, X[:m], sizes[-1], output, dtype, scratch)
                expected = getattr(model, method)(X[:m])
                assert got.tobytes() == expected.tobytes(), (n_threads, m, output)
                if n_threads == 1:
                    single[m, output] = got
                else:
                    np.testing.assert_allclose(got, single[m, output], rtol=RTOL[dtype],
                                               atol=ATOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", SIZES)
def test_scratch_sized_at_one_thread_stays_enough_at_three(c_client, sizes, dtype):
    model = _model(sizes, dtype, n_threads=1)
    handle = c_client.model_new(model)
    X = np.random.default_rng(2).normal(size=(700, sizes[0])).astype(dtype)
    for m in (64, 200, 256, 700):
        scratch = c_client.scratch_bytes(handle, m)      # sized at n_threads=1
        expected = model.predict_proba(X[:m])
        model.n_threads = 3
        assert c_client.scratch_bytes(handle, m) == scratch
        assert model._net.inference_parts(m) == 3
        # the guard bytes after the scratch come back untouched (ASan would see more)
        got = _c_infer(c_client, handle, X[:m], sizes[-1], 1, dtype, scratch)
        np.testing.assert_allclose(got, expected, rtol=RTOL[dtype], atol=ATOL[dtype])
        model.n_threads = 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_c_api_threaded_inference_from_two_python_threads(c_client, dtype):
    """Two Python threads call the C API at once (GIL released), each call split in two: each
    uses the idle workers it can claim and runs the other parts itself."""
    models = [_model(SIZES[0], dtype, n_threads=2), _model(SIZES[1], dtype, n_threads=2)]
    handles = [c_client.model_new(model) for model in models]
    rng = np.random.default_rng(3)
    inputs = [rng.normal(size=(m, 40)).astype(dtype) for m in (64, 128, 256)]
    expected = [[model.predict_proba(X).tobytes() for X in inputs] for model in models]
    failures = []
    barrier = threading.Barrier(4)

    def work(t):
        which = t % 2
        barrier.wait()
        for _ in range(20):
            for i, X in enumerate(inputs):
                out = np.empty((len(X), models[which].n_outputs), dtype)
                status = c_client.infer(handles[which], X, out, 1, len(X), t >= 2, _code(dtype))
                if status != 0 or out.tobytes() != expected[which][i]:
                    failures.append((t, i, status))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_threads", [2, 3])
def test_c_api_train_step_splits_as_python_train_step(c_client, dtype, n_threads):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(96, 40)).astype(dtype)
    labels = rng.integers(0, 10, size=96)
    twins = [fusedmlp.MLP([40, 160, 10], dtype=dtype, seed=1, n_threads=n_threads)
             for _ in range(2)]
    assert twins[0]._net.step_parts(96) == n_threads
    optimizers = [fusedmlp.Adam(0.01), fusedmlp.Adam(0.01)]
    trainer = c_client.trainer_new(twins[0], optimizers[0], 96)
    for _ in range(3):
        status, loss = c_client.train_step(trainer, X, labels, None)
        assert status == 0 and loss == twins[1].train_step(X, labels, optimizers[1])
    assert twins[0].get_params_vector().tobytes() == twins[1].get_params_vector().tobytes()
