"""Subnormals are flushed inside fusedmlp's compiled calls and never outside them (fpenv.h)."""

import threading

import numpy as np
import pytest

import fusedmlp
from fusedmlp import _kernels

OUTSIDE, INSIDE, FLUSH_BITS, HARDWARE = _kernels.fp_control()

needs_flush_mode = pytest.mark.skipif(not HARDWARE, reason="no hardware flush-to-zero mode "
                                      "on this platform (the optimisers flush explicitly)")


def control_word():
    return _kernels.fp_control()[0]


def numpy_keeps_subnormals():
    """IEEE gradual underflow in the caller's NumPy: results and inputs below the smallest
    normal are kept (no FTZ), not read as zero (no DAZ)."""
    tiny32, tiny64 = np.finfo(np.float32).tiny, np.finfo(np.float64).tiny
    halves = np.array([tiny32], np.float32) / np.float32(4)
    assert halves[0] != 0, "FTZ leaked into NumPy (float32)"
    assert (halves * np.float32(2))[0] == tiny32 / 2, "DAZ leaked into NumPy (float32)"
    assert (np.array([tiny64]) / 4)[0] != 0, "FTZ leaked into NumPy (float64)"
    assert np.nextafter(np.float32(0), np.float32(1)) * np.float32(1) > 0


@pytest.fixture
def model():
    return fusedmlp.MLP([6, 5, 3], seed=0)


def _data(dtype=np.float32, n=40):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 6)).astype(dtype), rng.integers(0, 3, n)


@needs_flush_mode
def test_flush_bits_are_set_inside_and_clear_outside():
    assert OUTSIDE & FLUSH_BITS == 0          # the test process runs with IEEE subnormals
    assert INSIDE & FLUSH_BITS == FLUSH_BITS
    assert INSIDE & ~FLUSH_BITS == OUTSIDE    # rounding mode and masks untouched


ENTRY_POINTS = {
    "train_step": lambda m, X, y: m.train_step(X, y, fusedmlp.Adam(1e-3)),
    "train_step_weighted": lambda m, X, y: m.train_step(X, y, fusedmlp.SGD(0.1, momentum=0.9),
                                                        sample_weight=np.ones(len(X))),
    "loss_and_gradients": lambda m, X, y: m.loss_and_gradients(X, y),
    "loss": lambda m, X, y: m.loss(X, y),
    "fit": lambda m, X, y: m.fit(X, y, epochs=2, batch_size=8, validation_data=(X, y)),
    "forward": lambda m, X, y: m.forward(X),
    "predict_proba": lambda m, X, y: m.predict_proba(X),
    "predict_log_proba": lambda m, X, y: m.predict_log_proba(X),
    "optimizer.step": lambda m, X, y: fusedmlp.Adam(1e-3).step(m),
    "dense": lambda m, X, y: m.layers[0].backward(m.layers[0].forward(X)),
    "softmax": lambda m, X, y: fusedmlp.softmax(X),
    "log_softmax": lambda m, X, y: fusedmlp.log_softmax(X.astype(np.float64)),
    "sigmoid": lambda m, X, y: fusedmlp.sigmoid(X),
    "tanh": lambda m, X, y: fusedmlp.tanh(X),
    "relu": lambda m, X, y: fusedmlp.relu(X),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_entry_points_restore_the_callers_environment(model, name):
    X, y = _data()
    before = control_word()
    ENTRY_POINTS[name](model, X, y)
    assert control_word() == before
    numpy_keeps_subnormals()


def _diverge(model, X, y):
    model.layers[-1].W[...] = 3e38
    model.train_step(X * 1e3, y, fusedmlp.SGD(0.1))


ERRORS = {
    "nan_input_step": (lambda m, X, y: m.train_step(np.where(X > 1, np.nan, X), y,
                                                    fusedmlp.Adam()), ValueError),
    "bad_label_step": (lambda m, X, y: m.train_step(X, y + 5, fusedmlp.Adam()), ValueError),
    "nan_input_predict": (lambda m, X, y: m.predict(np.full_like(X, np.inf)), ValueError),
    "non_finite_loss": (_diverge, FloatingPointError),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors_restore_the_callers_environment(model, name):
    X, y = _data()
    call, error = ERRORS[name]
    before = control_word()
    with pytest.raises(error):
        call(model, X, y)
    assert control_word() == before
    numpy_keeps_subnormals()


def test_other_threads_are_restored_too(model):
    X, y = _data()
    seen = []

    def work():
        before = control_word()
        model.predict(X)
        seen.append((before, control_word()))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 3 and all(before == after for before, after in seen)


def _stale_state_would_be_subnormal(dtype, beta, start, steps):
    """The decay a dead unit's momentum goes through, in NumPy (IEEE): does it end subnormal?"""
    value = np.array([start], dtype)
    for _ in range(steps):
        value = value * dtype(beta)
    return 0 < abs(value[0]) < np.finfo(dtype).tiny


@pytest.mark.parametrize("dtype,steps", [(np.float32, 3000), (np.float64, 7500)])
@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_dead_units_never_leave_subnormal_optimiser_state(dtype, steps, optimizer):
    # Half the hidden units are killed after a warm-up (a large negative bias): from then on
    # the gradients of their weights are exactly zero and their momentum decays by beta each
    # step, which in IEEE arithmetic ends (and stays) in the subnormal range.
    beta = 0.9
    assert _stale_state_would_be_subnormal(dtype, beta, 1e-3, steps)
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(64, 6)).astype(dtype)
    y = rng.integers(0, 3, 64)
    model = fusedmlp.MLP([6, 8, 3], dtype=dtype, seed=0)
    opt = (fusedmlp.Adam(1e-3, beta1=beta) if optimizer == "adam"
           else fusedmlp.SGD(1e-3, momentum=beta))
    for i in range(50):
        model.train_step(X[i % 64:i % 64 + 1], y[i % 64:i % 64 + 1], opt)
    model.layers[0].b[:4] = -1e3
    for i in range(steps):
        j = i % 64
        model.train_step(X[j:j + 1], y[j:j + 1], opt)
    tiny = np.finfo(dtype).tiny
    for state in opt._states[1:]:
        if state is not None:
            assert not np.any((state != 0) & (np.abs(state) < tiny))
    assert not np.any((model._params != 0) & (np.abs(model._params) < tiny))
    numpy_keeps_subnormals()


def test_pool_threads_flush_too():
    # With two threads the update runs on parameter ranges split across the pool's workers:
    # each flushes while it works (pool.h), so the dead units' state still never goes
    # subnormal, and the caller's environment is left as it was.
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(64, 64)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model = fusedmlp.MLP([64, 96, 3], seed=0, n_threads=2)
    opt = fusedmlp.Adam(1e-3)
    for i in range(50):
        model.train_step(X[i:i + 1], y[i:i + 1], opt)
    model.layers[0].b[:48] = -1e3
    before = control_word()
    for i in range(3000):
        model.train_step(X[i % 64:i % 64 + 1], y[i % 64:i % 64 + 1], opt)
    assert control_word() == before
    from fusedmlp import _network
    assert model._net.step_parts(1) == 2 and _network.pool_size() >= 1   # the pool did work
    tiny = np.finfo(np.float32).tiny
    for state in opt._states[1:]:
        assert not np.any((state != 0) & (np.abs(state) < tiny))
    numpy_keeps_subnormals()
