"""MLP.fit: accuracy on real data, history, validation, early stopping, schedules,
callbacks, the divergence guard, verbosity and reproducibility."""

import math

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import fusedmlp

import oracle


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's bundled 8x8 digits (1797 samples), pixels scaled to [0, 1], split 75/25
    stratified with a fixed seed."""
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.25, stratify=y, random_state=0)


def _small_problem(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)
    return X, y


def _recorder():
    """A callback that keeps a copy of the parameters after every epoch."""
    seen = {}

    def callback(model, epoch, logs):
        seen[epoch] = model.get_params_vector()
        return False

    return callback, seen


# --------------------------------------------------------------------------- real data
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_digits_held_out_accuracy(digits, dtype):
    X_train, X_test, y_train, y_test = digits
    model = fusedmlp.MLP([64, 64, 10], activation="relu", dtype=dtype, seed=0)
    history = model.fit(X_train, y_train, epochs=30, batch_size=32,
                        optimizer=fusedmlp.Adam(0.003), validation_data=(X_test, y_test))
    accuracy = model.score(X_test, y_test)
    assert accuracy >= 0.97, f"held-out accuracy {accuracy:.4f}"
    assert history["val_accuracy"][-1] == accuracy
    assert history["loss"][-1] < history["loss"][0] / 10
    assert model.dtype == dtype and model.layers[0].W.dtype == dtype


def test_same_seed_gives_bit_identical_weights(digits):
    X_train, _, y_train, _ = digits
    X_train, y_train = X_train[:400], y_train[:400]

    def train(seed):
        model = fusedmlp.MLP([64, 32, 10], activation="tanh", dtype=np.float32, seed=seed)
        model.fit(X_train, y_train, epochs=3, batch_size=16, validation_fraction=0.2,
                  optimizer=fusedmlp.SGD(0.1, momentum=0.9))
        return model.get_params_vector()

    first = train(seed=7)
    oracle.assert_same_bits(train(seed=7), first, why=oracle.SAME_CALL)
    assert not np.array_equal(train(seed=8), first)


# --------------------------------------------------------------------------- history
def test_history_keys_and_values_for_classification():
    X, y = _small_problem()
    model = fusedmlp.MLP([6, 8, 3], dtype=np.float64, seed=0)
    history = model.fit(X, y, epochs=4, batch_size=25, optimizer=fusedmlp.Adam(0.01),
                        train_accuracy="full")
    assert set(history) == {"loss", "accuracy", "lr", "time", "stopped_epoch", "best_epoch"}
    for key in ("loss", "accuracy", "lr", "time"):
        assert len(history[key]) == 4
    assert history["stopped_epoch"] is None and history["best_epoch"] in (1, 2, 3, 4)
    assert history["lr"] == [0.01] * 4
    assert all(t >= 0 for t in history["time"])
    assert history["accuracy"][-1] == model.score(X, y)          # measured after the epoch
    with pytest.raises(ValueError, match="train_accuracy"):
        model.fit(X, y, epochs=1, train_accuracy="all")


def test_history_keys_for_regression_with_validation():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.3
    model = fusedmlp.MLP([3, 16, 1], activation="tanh", output="identity", dtype=np.float64,
                         seed=0)
    history = model.fit(X[:150], y[:150], epochs=60, batch_size=16, optimizer=fusedmlp.Adam(0.01),
                        validation_data=(X[150:], y[150:]))
    assert set(history) == {"loss", "val_loss", "lr", "time", "stopped_epoch", "best_epoch"}
    assert history["val_loss"][-1] == model.loss(X[150:], y[150:])
    assert model.score(X[150:], y[150:]) > 0.95                   # R^2
    assert model.predict(X[150:]).shape == (50,)


def test_validation_data_is_scored_every_epoch():
    X, y = _small_problem()
    X_val, y_val = _small_problem(n=40, seed=1)
    model = fusedmlp.MLP([6, 8, 3], seed=0)
    callback, seen = _recorder()
    history = model.fit(X, y, epochs=3, batch_size=20, validation_data=(X_val, y_val),
                        callbacks=[callback])
    assert len(history["val_loss"]) == len(history["val_accuracy"]) == 3
    # each epoch's validation numbers are those of the epoch's final weights
    probe = fusedmlp.MLP([6, 8, 3], seed=0)
    for epoch in (1, 2, 3):
        probe.set_params_vector(seen[epoch])
        assert history["val_loss"][epoch - 1] == probe.loss(X_val, y_val)
        assert history["val_accuracy"][epoch - 1] == probe.score(X_val, y_val)


def test_validation_fraction_holds_out_a_subset():
    X, y = _small_problem(n=100)
    model = fusedmlp.MLP([6, 8, 3], dtype=np.float64, seed=0)
    history = model.fit(X, y, epochs=3, batch_size=10, validation_fraction=0.2)
    assert len(history["val_loss"]) == 3
    # accuracies are counts over 20 held-out and 80 training samples
    for accuracy in history["val_accuracy"]:
        assert math.isclose(accuracy * 20, round(accuracy * 20), abs_tol=1e-9)
    for accuracy in history["accuracy"]:
        assert math.isclose(accuracy * 80, round(accuracy * 80), abs_tol=1e-9)
    for fraction in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="validation_fraction"):
            model.fit(X, y, epochs=1, validation_fraction=fraction)
    with pytest.raises(ValueError, match="leaves no training or no validation data"):
        model.fit(X[:3], y[:3], epochs=1, validation_fraction=0.1)


def test_fit_refusals_leave_the_model_unchanged():
    X, y = _small_problem()
    model = fusedmlp.MLP([6, 8, 3], seed=0)
    params = model.get_params_vector()
    X_nan = X.copy()
    X_nan[5, 2] = np.nan
    cases = [
        (dict(X=X[:0], y=y[:0]), ValueError, "X is empty"),
        (dict(X=X_nan, y=y), ValueError, "X contains NaN"),
        (dict(X=X, y=np.where(y == 2, 3, y)), ValueError, r"y must lie in \[0, 3\)"),
        (dict(X=X, y=y[:-1]), ValueError, "y must have shape"),
        (dict(X=X, y=y, epochs=0), ValueError, "epochs must be >= 1"),
        (dict(X=X, y=y, batch_size=1.5), TypeError, "batch_size must be an integer"),
        (dict(X=X, y=y, validation_data=X), TypeError, "validation_data must be a pair"),
        (dict(X=X, y=y, validation_data=(X, np.full(len(X), 5))), ValueError,
         "validation_data y must lie in"),
        (dict(X=X, y=y, lr_schedule="exponential"), ValueError, "lr_schedule must be"),
        (dict(X=X, y=y, patience=0), ValueError, "patience must be >= 1"),
    ]
    for kwargs, error, message in cases:
        kwargs.setdefault("epochs", 2)
        with pytest.raises(error, match=message):
            model.fit(kwargs.pop("X"), kwargs.pop("y"), **kwargs)
        oracle.assert_same_bits(model.get_params_vector(), params, why=oracle.UNTOUCHED)


def test_sample_weight_of_ones_changes_nothing_and_zeros_ignore_samples():
    X, y = _small_problem()

    def train(**kwargs):
        model = fusedmlp.MLP([6, 8, 3], dtype=np.float64, seed=0)
        model.fit(X, y, epochs=2, batch_size=len(X), shuffle=False,
                  optimizer=fusedmlp.SGD(0.5), **kwargs)
        return model.get_params_vector()

    # weights of 1: every product by a weight and their sum are exact
    oracle.assert_same_bits(train(sample_weight=np.ones(len(X))), train(), why=oracle.EXACT)
    # full-batch steps: samples of weight 0 are as good as absent (other batch sizes: other
    # BLAS kernels, so within the chain of the two SGD steps' sums over the 120 rows)
    half = np.r_[np.ones(60), np.zeros(60)]
    model = fusedmlp.MLP([6, 8, 3], dtype=np.float64, seed=0)
    model.fit(X[:60], y[:60], epochs=2, batch_size=60, shuffle=False, optimizer=fusedmlp.SGD(0.5))
    oracle.assert_rounding_close(train(sample_weight=half), model.get_params_vector(),
                                 np.float64, oracle.step_chain([6, 8, 3], 120, 2))


def test_one_hot_targets_train_like_labels():
    # The soft-target loss (-sum t log p) adds in another order than the label's -log p, so
    # the two runs round differently: plain SGD (an update linear in the gradient) keeps them
    # within the chain of their steps' sums (18 steps of 16 rows), the validation losses one
    # forward more.
    X, y = _small_problem()
    sizes, steps = [6, 8, 3], 3 * -(-96 // 16)

    def train(targets):
        model = fusedmlp.MLP(sizes, dtype=np.float64, seed=0)
        history = model.fit(X, targets, epochs=3, batch_size=16, validation_fraction=0.2,
                            optimizer=fusedmlp.SGD(0.1))
        return model.get_params_vector(), history

    params_labels, history_labels = train(y)
    params_one_hot, history_one_hot = train(np.eye(3)[y])
    oracle.assert_rounding_close(params_one_hot, params_labels, np.float64,
                                 oracle.step_chain(sizes, 16, steps))
    oracle.assert_rounding_close(history_one_hot["val_loss"], history_labels["val_loss"],
                                 np.float64, oracle.step_chain(sizes, 16, steps) + sum(sizes))
    assert len(history_one_hot["val_accuracy"]) == len(history_labels["val_accuracy"]) == 3


def test_weight_decay_and_clip_norm_arguments_reach_the_optimizer():
    X, y = _small_problem()
    opt = fusedmlp.SGD(0.1)
    model = fusedmlp.MLP([6, 8, 3], seed=0)
    model.fit(X, y, epochs=1, optimizer=opt, weight_decay=0.01, clip_norm=1.0)
    assert opt.weight_decay == 0.01 and opt.clip_norm == 1.0


# --------------------------------------------------------------------------- early stopping
def _rising_validation_loss():
    """Validation labels that are the training labels shifted by one class: the better the
    model fits the training data, the worse its validation loss."""
    X, y = _small_problem()
    return X, y, (X, (y + 1) % 3)


@pytest.mark.parametrize("restore", [True, False])
def test_early_stopping_restores_the_best_weights(restore):
    X, y, validation = _rising_validation_loss()
    model = fusedmlp.MLP([6, 16, 3], dtype=np.float64, seed=0)
    callback, seen = _recorder()
    history = model.fit(X, y, epochs=30, batch_size=20, optimizer=fusedmlp.Adam(0.02),
                        validation_data=validation, patience=3, restore_best_weights=restore,
                        callbacks=[callback])
    val_loss = history["val_loss"]
    assert all(b > a for a, b in zip(val_loss, val_loss[1:]))          # the loss rose
    assert history["best_epoch"] == 1
    assert history["stopped_epoch"] == 4 and len(val_loss) == 4      # 3 epochs of patience
    expected = seen[1] if restore else seen[4]
    oracle.assert_same_bits(model.get_params_vector(), expected, why=oracle.COPY)
    assert model.loss(*validation) == val_loss[0 if restore else 3]


def test_early_stopping_keeps_the_best_epoch_when_training_runs_to_the_end():
    X, y, validation = _rising_validation_loss()
    model = fusedmlp.MLP([6, 16, 3], dtype=np.float64, seed=0)
    callback, seen = _recorder()
    history = model.fit(X, y, epochs=3, batch_size=20, optimizer=fusedmlp.Adam(0.02),
                        validation_data=validation, patience=10, callbacks=[callback])
    assert history["stopped_epoch"] is None and history["best_epoch"] == 1
    oracle.assert_same_bits(model.get_params_vector(), seen[1], why=oracle.COPY)


def test_early_stopping_on_training_loss_without_validation():
    X, y = _small_problem()
    model = fusedmlp.MLP([6, 8, 3], seed=0)
    # the training loss keeps falling: patience never runs out
    history = model.fit(X, y, epochs=5, batch_size=20, optimizer=fusedmlp.Adam(0.01), patience=2)
    assert history["stopped_epoch"] is None and history["best_epoch"] == 5
    # with a min_delta no later epoch can beat, only the first epoch improves (on infinity)
    history = model.fit(X, y, epochs=20, patience=2, min_delta=1e9)
    assert history["stopped_epoch"] == 3 and history["best_epoch"] == 1


# --------------------------------------------------------------------------- schedules
def _lrs(lr_schedule, epochs, lr0=0.1, validation=None):
    X, y = _small_problem(n=40)
    model = fusedmlp.MLP([6, 4, 3], dtype=np.float64, seed=0)
    opt = fusedmlp.SGD(lr0)
    history = model.fit(X, y, epochs=epochs, batch_size=40, optimizer=opt,
                        lr_schedule=lr_schedule, validation_data=validation)
    return history["lr"], opt.lr


def assert_rates(lrs, expected):
    """A schedule's rates are a few float64 operations on lr0 (a power of the factor, a
    cosine, a product, a quotient: at most 8 roundings here), as the expected ones are."""
    oracle.assert_within(lrs, expected,
                         oracle.rounding_tolerance(np.float64, 8) * np.abs(expected))


def test_constant_schedule():
    assert _lrs(None, 3) == ([0.1] * 3, 0.1)
    assert _lrs("constant", 3) == ([0.1] * 3, 0.1)


def test_step_schedule_divides_by_ten_every_third_of_the_epochs():
    lrs, final = _lrs("step", 6)
    assert_rates(lrs, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert final == lrs[-1]          # the optimiser keeps the last epoch's rate


def test_cosine_schedule_anneals_to_zero():
    lrs, final = _lrs("cosine", 4)
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert_rates(lrs, expected)
    assert final == lrs[-1] > 0      # not annealed to ~0 after the last epoch


def test_plateau_schedule_reduces_after_patience_epochs_without_improvement():
    # a learning rate so small that the loss never improves by min_delta (1e-4) after the
    # first epoch; the default reduces by 0.1 after MORE than 5 such epochs (PyTorch's rule)
    lrs, _ = _lrs("plateau", 9, lr0=1e-9)
    assert_rates(lrs, [1e-9] * 7 + [1e-10] * 2)
    lrs, _ = _lrs(fusedmlp.ReduceLROnPlateau(factor=0.5, patience=1), 6, lr0=1e-9)
    assert_rates(lrs, np.array([1, 1, 1, 0.5, 0.5, 0.25]) * 1e-9)


def test_callable_schedule_gets_epoch_lr0_lr_and_loss():
    calls = []

    def schedule(epoch, lr0, lr, loss):
        calls.append((epoch, lr0, lr, loss))
        return lr0 / (epoch + 1)

    lrs, final = _lrs(schedule, 3)
    assert_rates(lrs, [0.1, 0.05, 0.1 / 3])
    assert final == lrs[-1]
    # called after every epoch but the last (there is no next epoch to set a rate for)
    assert [c[0] for c in calls] == [1, 2] and all(c[1] == 0.1 for c in calls)
    # the rate the schedule is given is the one the epoch used
    oracle.assert_same_bits([c[2] for c in calls], lrs[:2], why=oracle.COPY)
    assert all(isinstance(c[3], float) and c[3] > 0 for c in calls)


# --------------------------------------------------------------------------- callbacks
def test_callbacks_are_called_every_epoch_and_can_stop_training():
    X, y = _small_problem()
    model = fusedmlp.MLP([6, 8, 3], seed=0)
    calls = []

    def record(m, epoch, logs):
        assert m is model
        calls.append((epoch, dict(logs)))

    def stop_after_two(m, epoch, logs):
        return epoch == 2

    history = model.fit(X, y, epochs=5, callbacks=[record])
    assert [c[0] for c in calls] == [1, 2, 3, 4, 5]
    assert [c[1]["loss"] for c in calls] == history["loss"]
    assert set(calls[0][1]) == {"loss", "accuracy", "lr", "time"}
    calls.clear()
    history = model.fit(X, y, epochs=5, callbacks=[stop_after_two, record])
    assert history["stopped_epoch"] == 2 and len(history["loss"]) == 2
    assert [c[0] for c in calls] == [1, 2]           # every callback runs in the last epoch


# --------------------------------------------------------------------------- divergence
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("full_batch", [False, True])
def test_divergence_raises_and_keeps_the_last_finite_weights(dtype, full_batch):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    y = X @ np.array([1.0, 2.0, 3.0])
    model = fusedmlp.MLP([3, 8, 1], activation="tanh", output="identity", dtype=dtype, seed=0)
    initial = model.get_params_vector()
    callback, seen = _recorder()
    # a full batch with the training data as validation data: the last update of an epoch
    # overflows first, before any training step sees an infinite loss
    validation = (X, y) if full_batch else None
    with pytest.raises(FloatingPointError, match="training diverged in epoch"):
        model.fit(X, y, epochs=1000, batch_size=50 if full_batch else 5, validation_data=validation,
                  optimizer=fusedmlp.SGD(5.0), callbacks=[callback])
    params = model.get_params_vector()
    assert np.all(np.isfinite(params))
    # The same steps, one train_step at a time, up to the first refused one
    twin = fusedmlp.MLP([3, 8, 1], activation="tanh", output="identity", dtype=dtype, seed=0)
    optimizer, size = fusedmlp.SGD(5.0), 50 if full_batch else 5
    X_model, y_model = twin.check_data(X, y)
    try:
        for _ in range(1000):
            order = twin._rng.permutation(len(X))
            for lo in range(0, len(X), size):
                twin.train_step(X_model[order[lo:lo + size]], y_model[order[lo:lo + size]],
                                optimizer)
    except FloatingPointError:
        pass
    after_last_good_step = twin.get_params_vector()
    if np.all(np.isfinite(after_last_good_step)):
        # a step's loss was not finite: the weights after the last good step
        oracle.assert_same_bits(params, after_last_good_step, why=oracle.SAME_CALL)
    else:
        # the last update overflowed: the weights of the last epoch that ended finite
        last_epoch = max(seen, default=0)
        oracle.assert_same_bits(params, seen[last_epoch] if seen else initial, why=oracle.COPY)


# --------------------------------------------------------------------------- verbosity
def test_verbose_prints_one_line_per_epoch(capsys):
    X, y = _small_problem()
    model = fusedmlp.MLP([6, 8, 3], seed=0)
    model.fit(X, y, epochs=3, validation_fraction=0.25, verbose=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for epoch, line in enumerate(lines, start=1):
        assert line.startswith(f"epoch {epoch}/3:")
        assert "loss=" in line and "val_loss=" in line and "accuracy=" in line
    model.fit(X, y, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""
