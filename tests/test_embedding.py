"""Embedding: inference into caller memory (out=), the per-thread scratch cache, and the C and
Cython APIs (built into a temporary directory by the fixtures in this file)."""

import importlib.util
import os
import sys
import threading
import tracemalloc

import numpy as np
import pytest

import fusedmlp
from fusedmlp import _network
from extensions import build_and_import as _build_and_import, need_compiler as _need_compiler

import oracle

HERE = os.path.dirname(os.path.abspath(__file__))

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
    oracle.assert_same_bits(X, before, why=oracle.UNTOUCHED)


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
        # the checked path (a Fortran-ordered input) uses fresh per-call buffers
        assert out.tobytes() == model.predict_proba(np.asfortranarray(X)).tobytes()


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


# --------------------------------------------------------------------------- C and Cython API
# Small extensions are compiled against the installed fusedmlp, as a user's package would be:
# tests/embedding/c_client.c includes fusedmlp.h from fusedmlp.get_include(); the examples of
# docs/embedding.md (a Cython module that cimports fusedmlp.capi, built by its own setup.py,
# and a C module) are built from the page itself.

def test_get_include_holds_the_header_and_the_pxd_is_installed():
    assert os.path.isfile(os.path.join(fusedmlp.get_include(), "fusedmlp.h"))
    assert os.path.isfile(os.path.join(os.path.dirname(fusedmlp.__file__), "capi.pxd"))
    assert _network._C_API.__class__.__name__ == "PyCapsule"


def test_c_api_table_is_versioned(c_client):
    version, size, header_size = c_client.table()
    assert version == c_client.constants()["CAPI_VERSION"] == 1
    assert size == header_size


def test_c_api_codes_are_the_python_layers(c_client):
    # fusedmlp.h spells out fusedmlp._codes' numbers for C callers
    from fusedmlp._codes import Inference, Status

    codes = c_client.constants()
    for enum in (Inference, Status):
        for member in enum:
            assert codes[member.name] == int(member), member


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("output", [0, 1, 2])
def test_c_api_inference_from_threads_equals_python(c_client, dtype, output):
    model = _classifier(dtype)
    method = getattr(model, METHODS[output])
    handle = c_client.model_new(model)
    dtype_code = 0 if dtype == np.float32 else 1
    rng = np.random.default_rng(6)
    X = rng.normal(size=(300, 12)).astype(dtype)
    n_threads = 6
    results = {}
    barrier = threading.Barrier(n_threads)

    def work(t):
        block = (1, 7, 300, 256, 32, 300)[t]      # rows per call
        out = np.full((300, 5), np.nan, dtype)
        barrier.wait()
        for _ in range(5):
            status = c_client.infer(handle, X, out, output, block, t % 2 == 0, dtype_code)
        results[t] = (status, block, out)

    _network.most_concurrent_calls(reset=True)
    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for status, block, out in results.values():
        assert status == 0
        expected = np.concatenate([method(X[i:i + block]) for i in range(0, 300, block)])
        assert out.tobytes() == expected.tobytes(), block


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("output", ["sigmoid", "exp"])
def test_c_api_probabilities_of_sigmoid_and_exp_outputs_equal_python(c_client, dtype, output):
    # sigmoid: PROBABILITIES / LOG_PROBABILITIES are predict_proba / predict_log_proba (one
    # column per logistic unit); exp: PROBABILITIES is the predicted mean (predict), and
    # log-probabilities of a count model are refused as Python refuses predict_log_proba
    rng = np.random.default_rng(9)
    model = fusedmlp.MLP([12, 16, 3], output=output, dtype=dtype, seed=2)
    X = rng.normal(size=(40, 12)).astype(dtype)
    y = (rng.random((40, 3)) < 0.4).astype(dtype) if output == "sigmoid" else rng.poisson(
        2.0, size=(40, 3)).astype(dtype)
    model.fit(X, y, epochs=2, batch_size=8, optimizer=fusedmlp.Adam(0.01))
    X[0, :] *= 40                                    # saturated units: log-probabilities finite
    handle = c_client.model_new(model)
    dtype_code = 0 if dtype == np.float32 else 1
    methods = ({1: model.predict_proba, 2: model.predict_log_proba} if output == "sigmoid"
               else {1: model.predict})
    for code, method in methods.items():
        for block, scratch in ((40, False), (7, True), (1, False)):
            out = np.full((40, 3), np.nan, dtype)
            assert c_client.infer(handle, X, out, code, block, scratch, dtype_code) == 0
            # (BLAS may round differently for another number of rows: compare block by block)
            expected = np.concatenate([method(X[i:i + block]) for i in range(0, 40, block)])
            assert out.tobytes() == expected.tobytes(), (code, block)
    if output == "exp":
        codes = c_client.constants()
        out = np.empty((40, 3), dtype)
        assert c_client.infer(handle, X, out, 2, 40, False, dtype_code) == codes["BAD_ARGUMENT"]


def test_c_api_handle_keeps_the_model_alive(c_client):
    model = _classifier(np.float64)
    X = np.random.default_rng(7).normal(size=(4, 12))
    expected = model.predict_log_proba(X)
    handle = c_client.model_new(model)
    del model
    import gc
    gc.collect()
    out = np.empty((4, 5))
    assert c_client.infer(handle, X, out, 2, 4, False, 1) == 0
    assert out.tobytes() == expected.tobytes()


def test_c_api_refusals(c_client):
    codes = c_client.constants()
    model = _classifier(np.float32)
    handle = c_client.model_new(model)
    X = np.ones((3, 12), np.float32)
    out = np.empty((3, 5), np.float32)
    assert c_client.infer(handle, X, out, 1, 3, False, 1) == codes["WRONG_DTYPE"]
    assert c_client.infer(handle, X, out, 7, 3, False, 0) == codes["BAD_ARGUMENT"]
    X[1, 1] = np.inf
    assert c_client.infer(handle, X, out, 1, 3, False, 0) == codes["BAD_INPUT"]
    regressor = c_client.model_new(fusedmlp.MLP([12, 5], output="identity", dtype=np.float32))
    assert c_client.infer(regressor, np.ones((3, 12), np.float32), out, 1, 3, False, 0) == (
        codes["BAD_ARGUMENT"])
    with pytest.raises(TypeError, match="fusedmlp_model_new needs a fusedmlp.MLP"):
        c_client.model_new("not a model")
    with pytest.raises(TypeError, match="optimizer must be a fusedmlp Optimizer"):
        c_client.trainer_new(model, "adam", 8)
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        c_client.trainer_new(model, fusedmlp.Adam(), 0)
    trainer = c_client.trainer_new(model, fusedmlp.Adam(), 2)
    labels = np.zeros(3, np.int64)
    assert c_client.train_step(trainer, np.ones((3, 12), np.float32), labels, None)[0] == (
        codes["TOO_MANY_ROWS"])
    labels[0] = 5
    before = model.get_params_vector()
    assert c_client.train_step(trainer, np.ones((2, 12), np.float32), labels[:2], None)[0] == (
        codes["BAD_LABEL"])
    oracle.assert_same_bits(model.get_params_vector(), before, why=oracle.UNTOUCHED)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("output", ["softmax", "identity"])
@pytest.mark.parametrize("regularised", [False, True])
def test_c_api_train_steps_equal_python_train_steps(c_client, dtype, output, regularised):
    # regularised: dropout (same masks) and an L1 penalty (in the reported loss too)
    dropout, l1 = (0.3, 1e-3) if regularised else (0.0, 0.0)
    rng = np.random.default_rng(8)
    X = rng.normal(size=(16, 12)).astype(dtype)
    if output == "softmax":
        labels, targets = rng.integers(0, 5, size=16), None
    else:
        labels, targets = None, rng.normal(size=(16, 5)).astype(dtype)
    twins = [fusedmlp.MLP([12, 24, 5], output=output, dtype=dtype, seed=1, dropout=dropout)
             for _ in range(2)]
    optimizers = [fusedmlp.Adam(0.01, l1=l1), fusedmlp.Adam(0.01, l1=l1)]
    trainer = c_client.trainer_new(twins[0], optimizers[0], 16)
    for _ in range(3):
        status, loss = c_client.train_step(trainer, X, labels, targets)
        expected = twins[1].train_step(X, labels if labels is not None else targets, optimizers[1])
        assert status == 0 and loss == expected
    assert optimizers[0].steps == optimizers[1].steps == 3
    assert twins[0].get_params_vector().tobytes() == twins[1].get_params_vector().tobytes()
    # Python and the C trainer may take turns on one model (never at the same time)
    twins[0].train_step(X, labels if labels is not None else targets, optimizers[0])
    twins[1].train_step(X, labels if labels is not None else targets, optimizers[1])
    assert twins[0].get_params_vector().tobytes() == twins[1].get_params_vector().tobytes()


# --------------------------------------------------------------------------- latency bench

def test_latency_bench_measures_and_tabulates(capsys):
    from fusedmlp.cli import bench_latency
    from fusedmlp.cli import main

    results, skipped = bench_latency.measure(networks=[(8, 4, 3)], rows=(1, 2), rounds=2,
                                             target_time=0.002,
                                             competitors=["fusedmlp", "numpy"])
    assert set(results) == {((8, 4, 3), 1), ((8, 4, 3), 2)}
    for row in results.values():
        assert set(row) == {"proba", "proba_out", "c_api", "floor", "numpy"}
        assert all(t > 0 for t in row.values())
    text = bench_latency.table(results)
    assert "| 8-4-3 | 2 |" in text and "C API (C loop)" in text
    with pytest.raises(SystemExit):
        main(["bench", "latency", "--help"])
    assert "onnxruntime" in capsys.readouterr().out


# --------------------------------------------------------------------------- docs examples

def _doc_examples():
    """{file name: source} of the examples in docs/embedding.md (marked for this test)."""
    import re

    path = os.path.join(HERE, os.pardir, "docs", "embedding.md")
    if not os.path.exists(path):
        pytest.skip("docs/embedding.md is not beside the tests (installed-only run)")
    with open(path, encoding="utf-8") as file:
        text = file.read()
    return dict(re.findall(r"<!-- embedding-example: (\S+) -->\n```\w+\n(.*?)```", text, re.S))


@pytest.fixture(scope="module")
def fast_policy(tmp_path_factory):
    """The Cython API client: docs/embedding.md's example, built with its own setup.py."""
    import subprocess

    _need_compiler()
    pytest.importorskip("Cython",
                        reason='Cython builds the Cython API example (pip install ".[test]")')
    examples = _doc_examples()
    build_dir = tmp_path_factory.mktemp("fast_policy")
    for name in ("fast_policy.pyx", "setup.py"):
        (build_dir / name).write_text(examples[name])
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                   cwd=build_dir, check=True, capture_output=True)
    built = [p for p in build_dir.glob("fast_policy*") if p.suffix not in (".pyx", ".c")]
    spec = importlib.util.spec_from_file_location("fast_policy", str(built[0]))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cython_api_prange_rows_equal_python(fast_policy):
    model = _classifier(np.float32)
    X = np.random.default_rng(12).normal(size=(200, 12)).astype(np.float32)
    out = np.full((200, 5), np.nan, np.float32)
    assert fast_policy.act(model, X, out) == 0
    expected = np.concatenate([model.predict_proba(X[i:i + 1]) for i in range(200)])
    assert out.tobytes() == expected.tobytes()
    X[7, 3] = np.nan                      # a refused row is counted, the others computed
    assert fast_policy.act(model, X, out) == 1
    with pytest.raises(ValueError, match="float32 model"):
        fast_policy.act(model, X[:, :6].copy(), out)


def test_cython_api_from_python_threads_equals_python(fast_policy):
    # act releases the GIL: Python threads run it on one model at once
    model = _classifier(np.float32)
    X = np.random.default_rng(14).normal(size=(64, 12)).astype(np.float32)
    expected = np.concatenate([model.predict_proba(X[i:i + 1]) for i in range(64)]).tobytes()
    outs = [np.empty((64, 5), np.float32) for _ in range(4)]
    failures = []
    threads = [threading.Thread(target=lambda o=o: failures.append(fast_policy.act(model, X, o)))
               for o in outs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [0] * 4
    assert all(out.tobytes() == expected for out in outs)


def test_cython_api_train_step_equals_python(fast_policy):
    rng = np.random.default_rng(11)
    X = rng.normal(size=(8, 12)).astype(np.float32)
    y = rng.integers(0, 5, size=8)
    twins = [_classifier(np.float32) for _ in range(2)]
    optimizers = [fusedmlp.SGD(0.1, momentum=0.9) for _ in range(2)]
    for _ in range(2):
        assert fast_policy.learn(twins[0], optimizers[0], X, y) == (
            twins[1].train_step(X, y, optimizers[1]))
    assert twins[0].get_params_vector().tobytes() == twins[1].get_params_vector().tobytes()
    y[0] = 9
    with pytest.raises(ValueError, match="training step refused"):
        fast_policy.learn(twins[0], optimizers[0], X, y)


def test_docs_c_example_builds_and_works(tmp_path):
    _need_compiler()
    source = tmp_path / "policy.c"
    source.write_text(_doc_examples()["policy.c"])
    policy = _build_and_import("policy", str(source), tmp_path)
    model = _classifier(np.float32)
    X = np.random.default_rng(13).normal(size=(20, 12)).astype(np.float32)
    out = np.empty((20, 5), np.float32)
    assert policy.act(model, X, out) == 0
    assert out.tobytes() == model.predict_proba(X).tobytes()
    assert policy.act(model, X, np.empty((20, 4), np.float32)) == -2    # FUSEDMLP_BAD_ARGUMENT
