"""Threads: concurrent inference, parallel training of two models, and one model trained
from two threads.

What is promised (MLP's docstring, "Thread safety"):

- ``predict``/``predict_proba``/``forward`` may run from many threads on one model at once:
  each call has its own scratch buffers, so the results equal the serial ones bit for bit.
- The compiled step and inference release the GIL, so two models train in parallel. This is
  shown without timing: ``fusedmlp._network.most_concurrent_calls`` counts the threads that
  are inside a compiled call at the same moment, and must reach 2.
- Training steps on one model are serialised by the model's lock: two threads stepping one
  model give exactly the result of *some* serial order of their steps, and the optimiser
  counts every step.

Not promised: predicting while another thread trains the same model (it reads weights
mid-update).
"""

import sys
import threading
from contextlib import contextmanager

import numpy as np
import pytest

import fusedmlp
from fusedmlp import _network

import oracle

N_THREADS = 8


def run_in_threads(target, n_threads):
    """Run target(thread_index) in n_threads threads released together; re-raise the first
    exception any of them hit."""
    barrier = threading.Barrier(n_threads)
    errors = [None] * n_threads

    def body(index):
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:          # reported in the main thread below
            errors[index] = exc

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for exc in errors:
        if exc is not None:
            raise exc


@contextmanager
def frequent_thread_switches():
    """Make the interpreter switch threads every microsecond, so races in Python code show."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def trained_classifier(dtype, seed=0):
    rng = np.random.default_rng(seed)
    model = fusedmlp.MLP([12, 24, 16, 5], activation=["tanh", "relu"], dtype=dtype, seed=seed)
    X = rng.normal(size=(64, 12))
    y = rng.integers(0, 5, size=64)
    model.fit(X, y, epochs=2, batch_size=16, optimizer=fusedmlp.Adam(0.01))
    return model


# --------------------------------------------------------------------------- inference

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predict_from_many_threads_equals_serial(dtype):
    model = trained_classifier(dtype)
    rng = np.random.default_rng(1)
    n_iterations = 40
    # Different inputs per thread and iteration; sizes straddle the inference chunk (256
    # rows) so chunked and unchunked calls overlap.
    sizes = [1, 7, 64, 255, 257, 300]
    inputs = [[rng.normal(size=(sizes[(t + i) % len(sizes)], 12)).astype(dtype)
               for i in range(n_iterations)] for t in range(N_THREADS)]
    expected = [[(model.predict(X), model.predict_proba(X), model.forward(X)) for X in row]
                for row in inputs]
    results = [[None] * n_iterations for _ in range(N_THREADS)]

    def work(t):
        for i, X in enumerate(inputs[t]):
            results[t][i] = (model.predict(X), model.predict_proba(X), model.forward(X))

    run_in_threads(work, N_THREADS)
    for t in range(N_THREADS):
        for i in range(n_iterations):
            labels, proba, scores = results[t][i]
            want_labels, want_proba, want_scores = expected[t][i]
            # the same calls on the same rows, from another thread
            oracle.assert_same_bits(labels, want_labels, why=oracle.SAME_CALL)
            assert proba.dtype == want_proba.dtype == np.dtype(dtype)
            assert proba.tobytes() == want_proba.tobytes(), (t, i)
            assert scores.tobytes() == want_scores.tobytes(), (t, i)


def test_predict_proba_threads_on_a_regressor_and_shared_input():
    # All threads read the *same* input array (read-only, strided view) at once.
    model = fusedmlp.MLP([6, 10, 3], output="identity", activation="sigmoid",
                         dtype=np.float64, seed=3)
    base = np.random.default_rng(2).normal(size=(400, 12))
    X = base[:, ::2]
    X.flags.writeable = False
    expected = model.predict(X)
    results = [None] * N_THREADS

    def work(t):
        for _ in range(20):
            results[t] = model.predict(X)

    run_in_threads(work, N_THREADS)
    for got in results:
        assert got.tobytes() == expected.tobytes()


# --------------------------------------------------------------------------- parallel training

def test_two_models_train_in_parallel():
    """Two threads, two models: both threads are inside the compiled step at the same time.

    Each step of a 784-256-10 network on 256 rows spends milliseconds in BLAS with the GIL
    released; over many steps the two threads must overlap at least once. A build that held
    the GIL during the step would leave the counter at 1 however long this ran.
    """
    rng = np.random.default_rng(0)
    models = [fusedmlp.MLP([784, 256, 10], seed=s) for s in (0, 1)]
    optimizers = [fusedmlp.SGD(0.01) for _ in models]
    X = rng.random((256, 784), dtype=np.float32)
    y = rng.integers(0, 10, size=256)
    for model, optimizer in zip(models, optimizers):
        model.train_step(X, y, optimizer)     # workspace allocated outside the race
    n_steps = 150
    reached = []

    def work(t):
        for _ in range(n_steps):
            models[t].train_step(X, y, optimizers[t])
            if _network.most_concurrent_calls() >= 2:
                reached.append(t)
                return                        # proved; stop early

    _network.most_concurrent_calls(reset=True)
    run_in_threads(work, 2)
    assert _network.most_concurrent_calls() == 2
    assert reached
    for model in models:
        assert np.all(np.isfinite(model.get_params_vector()))


def test_two_models_train_in_parallel_give_the_serial_results():
    # The parallel run must not perturb either model: the same steps, run serially on
    # same-seed twins, give bit-identical parameters.
    rng = np.random.default_rng(4)
    data = [(rng.normal(size=(32, 20)), rng.integers(0, 4, size=32)) for _ in range(2)]

    def new_pair():
        return [fusedmlp.MLP([20, 32, 4], activation="tanh", seed=s) for s in (0, 1)]

    def train(model, X, y, optimizer):
        for _ in range(60):
            model.train_step(X, y, optimizer)

    parallel, serial = new_pair(), new_pair()
    parallel_opts = [fusedmlp.Adam(0.01) for _ in parallel]
    for model, optimizer, (X, y) in zip(parallel, parallel_opts, data):
        optimizer.buffers(model)             # bind before the threads start
    run_in_threads(lambda t: train(parallel[t], *data[t], parallel_opts[t]), 2)
    for model, (X, y) in zip(serial, data):
        train(model, X, y, fusedmlp.Adam(0.01))
    for a, b in zip(parallel, serial):
        assert a.get_params_vector().tobytes() == b.get_params_vector().tobytes()


# --------------------------------------------------------------------------- one model, two threads

def test_one_model_two_threads_identical_batches_equal_serial():
    """Two threads step one model on the same batch: any serial order gives the same result,
    so the parameters must equal 2 * n serial steps exactly, and the optimiser counts them."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(48, 10))
    y = rng.integers(0, 3, size=48)
    n_steps = 100

    def new_model():
        return fusedmlp.MLP([10, 64, 32, 3], activation="tanh", dtype=np.float64, seed=7)

    shared, shared_opt = new_model(), fusedmlp.Adam(0.005)
    shared.train_step(X, y, shared_opt)
    with frequent_thread_switches():
        run_in_threads(lambda t: [shared.train_step(X, y, shared_opt) for _ in range(n_steps)], 2)

    serial, serial_opt = new_model(), fusedmlp.Adam(0.005)
    for _ in range(1 + 2 * n_steps):
        serial.train_step(X, y, serial_opt)
    assert shared_opt.steps == serial_opt.steps == 1 + 2 * n_steps
    assert shared.get_params_vector().tobytes() == serial.get_params_vector().tobytes()


def test_one_model_two_threads_different_batches_equal_some_serial_order():
    """Two threads step one model on different batches. Each train_step returns the loss
    *before* its update, which pins down the parameters it saw; replaying the two threads'
    steps serially, choosing at each point the thread whose recorded loss matches, must
    reproduce every loss and the final parameters bit for bit."""
    rng = np.random.default_rng(6)
    batches = [(rng.normal(size=(40, 8)), rng.integers(0, 3, size=40)) for _ in range(2)]
    n_steps = 60

    def new_model():
        return fusedmlp.MLP([8, 48, 3], activation="sigmoid", dtype=np.float64, seed=11)

    shared = new_model()
    shared_opt = fusedmlp.SGD(0.1, momentum=0.9)
    shared_opt.buffers(shared)
    losses = [[], []]

    def work(t):
        X, y = batches[t]
        for _ in range(n_steps):
            losses[t].append(shared.train_step(X, y, shared_opt))

    with frequent_thread_switches():
        run_in_threads(work, 2)
    assert shared_opt.steps == 2 * n_steps

    replay = new_model()
    replay_opt = fusedmlp.SGD(0.1, momentum=0.9)
    position = [0, 0]
    for _ in range(2 * n_steps):
        chosen = None
        for t in (0, 1):
            if position[t] < n_steps:
                loss, _ = replay.loss_and_gradients(*batches[t])
                if loss == losses[t][position[t]]:
                    chosen = t
                    break
        assert chosen is not None, f"no serial order explains the losses after {position} steps"
        replay.train_step(*batches[chosen], replay_opt)
        position[chosen] += 1
    assert replay.get_params_vector().tobytes() == shared.get_params_vector().tobytes()


def test_fresh_optimizer_first_used_from_two_threads():
    """An optimiser's state is created on its first step. Two threads making that first step
    on one model at once must both succeed and share one state: two steps counted, and the
    parameters of two serial Adam steps (a second, fresh moment buffer would differ)."""
    X = np.ones((4, 32))
    y = np.zeros(4, np.int64)
    failures = []
    with frequent_thread_switches():
        for trial in range(40):
            model = fusedmlp.MLP([32, 512, 10], seed=trial)
            optimizer = fusedmlp.Adam(0.01)
            try:
                run_in_threads(lambda t: model.train_step(X, y, optimizer), 2)
            except Exception as exc:
                failures.append(f"trial {trial}: {exc!r}")
                continue
            serial, serial_opt = fusedmlp.MLP([32, 512, 10], seed=trial), fusedmlp.Adam(0.01)
            serial.train_step(X, y, serial_opt)
            serial.train_step(X, y, serial_opt)
            if optimizer.steps != 2:
                failures.append(f"trial {trial}: {optimizer.steps} steps counted, expected 2")
            elif serial.get_params_vector().tobytes() != model.get_params_vector().tobytes():
                failures.append(f"trial {trial}: parameters differ from two serial steps")
    assert not failures, failures[:3]
