"""fit's compiled epoch (Network.train_epoch): the same results as a loop of train_step calls
on the same batches, bit for bit, for every kind of target, weights and optimiser."""

import functools
import re

import numpy as np
import pytest

import fusedmlp

import oracle

OPTIMIZERS = {
    "sgd": lambda: fusedmlp.SGD(0.05),
    "momentum": lambda: fusedmlp.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda: fusedmlp.Adam(0.01, weight_decay=1e-3),
    "adamw": lambda: fusedmlp.AdamW(0.01),
    "rmsprop": lambda: fusedmlp.RMSProp(0.005),
    "adagrad": lambda: fusedmlp.AdaGrad(0.05),
}


def _problem(kind, dtype, n=103, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(dtype)
    if kind == "labels":
        return X, rng.integers(0, 4, n), "softmax", 4
    if kind == "soft":
        logits = rng.normal(size=(n, 4))
        return X, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), "softmax", 4
    return X, X @ rng.normal(size=(5, 2)), "identity", 2


def _replay(model, X, y, optimizer, epochs, batch_size, sample_weight=None, clip_norm=None):
    """fit's epochs as train_step calls: (mean losses, batch accuracies) per epoch."""
    if clip_norm is not None:
        optimizer.clip_norm = clip_norm
    X, y = model.check_data(X, y)
    losses, accuracies = [], []
    for _ in range(epochs):
        order = model._rng.permutation(len(X))
        total = correct = 0.0
        for lo in range(0, len(X), batch_size):
            idx = order[lo:lo + batch_size]
            if model.output == "softmax":
                truth = y[idx] if y.ndim == 1 else np.argmax(y[idx], axis=1)
                correct += np.sum(np.argmax(model.forward(X[idx]), axis=1) == truth)
            w = None if sample_weight is None else sample_weight[idx]
            if w is not None and not w.sum() > 0:
                model.loss_and_gradients(X[idx], y[idx], sample_weight=np.ones(len(idx)))
                continue                  # no gradient: scored, not trained on (loss 0)
            total += model.train_step(X[idx], y[idx], optimizer, sample_weight=w) * len(idx)
        losses.append(total / len(X))
        accuracies.append(correct / len(X))
    return losses, accuracies


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["labels", "soft", "regression"])
@pytest.mark.parametrize("weighted", [False, True])
def test_fit_equals_a_loop_of_train_steps(dtype, kind, weighted):
    X, y, output, n_out = _problem(kind, dtype)
    weights = np.random.default_rng(3).uniform(0, 2, len(X)).astype(dtype) if weighted else None
    fitted = fusedmlp.MLP([5, 7, n_out], output=output, dtype=dtype, seed=1)
    replayed = fusedmlp.MLP([5, 7, n_out], output=output, dtype=dtype, seed=1)
    history = fitted.fit(X, y, epochs=3, batch_size=10, optimizer=fusedmlp.Adam(0.01),
                         sample_weight=weights)
    losses, accuracies = _replay(replayed, X, y, fusedmlp.Adam(0.01), 3, 10, weights)
    oracle.assert_same_bits(fitted.get_params_vector(), replayed.get_params_vector(),
                            why=oracle.SAME_CALL)
    assert history["loss"] == losses
    if output == "softmax":
        assert history["accuracy"] == accuracies


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_optimiser_with_clipping(name, dtype):
    X, y, output, n_out = _problem("labels", dtype)
    fitted = fusedmlp.MLP([5, 6, n_out], dtype=dtype, seed=2)
    replayed = fusedmlp.MLP([5, 6, n_out], dtype=dtype, seed=2)
    first, second = OPTIMIZERS[name](), OPTIMIZERS[name]()
    history = fitted.fit(X, y, epochs=2, batch_size=16, optimizer=first, clip_norm=0.5)
    losses, _ = _replay(replayed, X, y, second, 2, 16, clip_norm=0.5)
    oracle.assert_same_bits(fitted.get_params_vector(), replayed.get_params_vector(),
                            why=oracle.SAME_CALL)
    assert history["loss"] == losses
    assert first.steps == second.steps == 2 * 7


def test_a_batch_of_zero_weights_is_scored_but_not_trained_on():
    X, y, _, _ = _problem("labels", np.float64, n=40)
    weights = np.ones(40)
    weights[:20] = 0                          # unshuffled: the first two batches carry none
    model = fusedmlp.MLP([5, 6, 4], dtype=np.float64, seed=0)
    optimizer = fusedmlp.Adam(0.01)
    history = model.fit(X, y, epochs=1, batch_size=10, shuffle=False, optimizer=optimizer,
                        sample_weight=weights)
    assert optimizer.steps == 2
    assert np.isfinite(history["loss"][0]) and 0 <= history["accuracy"][0] <= 1


def test_unshuffled_epochs_train_in_stored_order():
    X, y, _, _ = _problem("labels", np.float32)
    fitted = fusedmlp.MLP([5, 6, 4], seed=0)
    replayed = fusedmlp.MLP([5, 6, 4], seed=0)
    fitted.fit(X, y, epochs=2, batch_size=32, shuffle=False, optimizer=fusedmlp.SGD(0.1))
    optimizer = fusedmlp.SGD(0.1)
    for _ in range(2):
        for lo in range(0, len(X), 32):
            replayed.train_step(X[lo:lo + 32], y[lo:lo + 32], optimizer)
    oracle.assert_same_bits(fitted.get_params_vector(), replayed.get_params_vector(),
                            why=oracle.SAME_CALL)


def test_batch_accuracy_is_a_count_and_full_accuracy_rescores():
    X, y, _, _ = _problem("labels", np.float64, n=90)
    batches = fusedmlp.MLP([5, 6, 4], dtype=np.float64, seed=0)
    full = fusedmlp.MLP([5, 6, 4], dtype=np.float64, seed=0)
    h_batches = batches.fit(X, y, epochs=3, batch_size=8)
    h_full = full.fit(X, y, epochs=3, batch_size=8, train_accuracy="full")
    assert h_batches["loss"] == h_full["loss"]               # the same training either way
    for accuracy in h_batches["accuracy"]:
        assert abs(accuracy * 90 - round(accuracy * 90)) < 1e-9
    assert h_full["accuracy"][-1] == full.score(X, y)


def test_a_non_finite_loss_names_the_epoch_and_batch():
    X, y, _, _ = _problem("regression", np.float64, n=64)
    model = fusedmlp.MLP([5, 6, 2], output="identity", dtype=np.float64, seed=0)
    model.layers[-1].b[...] = 1e200               # finite weights whose squared error overflows
    before = model.get_params_vector()
    with pytest.raises(FloatingPointError, match=re.escape("epoch 1: the loss is not finite "
                                                           "(NaN or inf) in batch 1 of 4")
                       + ".*after the last step whose loss was finite"):
        model.fit(X, y, epochs=2, batch_size=16, optimizer=fusedmlp.SGD(0.1))
    oracle.assert_same_bits(model.get_params_vector(), before, why=oracle.UNTOUCHED)


def test_verbose_2_reports_progress_within_long_epochs(capsys):
    X, y, _, _ = _problem("labels", np.float32, n=400)
    model = fusedmlp.MLP([5, 6, 4], seed=0)
    model.fit(X, y, epochs=2, batch_size=4, verbose=2)       # 100 batches: 20 calls
    lines = capsys.readouterr().out.splitlines()
    within = [line for line in lines if "batch " in line]
    assert len(within) == 2 * 20
    assert within[0].startswith("epoch 1/2: batch 5/100 loss=")
    assert within[-1].startswith("epoch 2/2: batch 100/100 loss=")
    assert sum(line.startswith("epoch") and "accuracy=" in line for line in lines) == 2


def test_verbose_progress_does_not_change_the_results():
    X, y, _, _ = _problem("labels", np.float32, n=400)
    quiet = fusedmlp.MLP([5, 6, 4], seed=0)
    chatty = fusedmlp.MLP([5, 6, 4], seed=0)
    h_quiet = quiet.fit(X, y, epochs=2, batch_size=4)
    h_chatty = chatty.fit(X, y, epochs=2, batch_size=4, verbose=2)
    oracle.assert_same_bits(quiet.get_params_vector(), chatty.get_params_vector(),
                            why=oracle.SAME_CALL)
    assert h_quiet["loss"] == h_chatty["loss"] and h_quiet["accuracy"] == h_chatty["accuracy"]


def test_two_models_fit_in_parallel():
    # The epoch call releases the GIL: two threads fitting their own models are inside
    # compiled epochs at the same moment (counted by the core, so no timing is involved).
    import threading

    from fusedmlp import _network

    X, y, _, _ = _problem("labels", np.float32, n=2000)
    models = [fusedmlp.MLP([5, 32, 4], seed=s) for s in (0, 1)]
    reached = []

    def work(t):
        for _ in range(500):
            models[t].fit(X, y, epochs=1, batch_size=50)
            if _network.most_concurrent_calls() >= 2:
                reached.append(t)
                return

    _network.most_concurrent_calls(reset=True)
    threads = [threading.Thread(target=work, args=(t,)) for t in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert reached and _network.most_concurrent_calls() == 2


class PerBatchRule:
    """The oracle of the estimators' per-batch rule, written out in Python over
    MLP.train_step (the library has it once, in the compiled epoch): weight decay
    alpha / (scale x the batch's total weight), Adam's epsilon of the step, the reported
    loss with the L2 term of the weights before the update; zero-weight batches skipped.
    No ``epoch``, so run_epoch calls it batch by batch."""

    def __init__(self, step_class, estimator, optimizer):
        self.setup = step_class(estimator, optimizer)     # the constants (and optimizer.l1)
        self.model, self.optimizer = self.setup.model, optimizer
        self.weights = [layer.W.reshape(-1) for layer in self.model.layers]

    def __call__(self, X_batch, y_batch, w_batch):
        s, optimizer = self.setup, self.optimizer
        total = len(X_batch) if w_batch is None else float(w_batch.sum(dtype=np.float64))
        if not total > 0:
            return 0.0
        penalty = 0.0
        if s.alpha > 0:
            penalty = (sum(float(np.multiply(w, w).sum()) for w in self.weights)
                       * (0.5 * s.alpha / total))
        optimizer.weight_decay = s.alpha / (s.scale * total)
        if s.adam:
            optimizer.eps = s.epsilons(1)[0]
        l1_penalty = (optimizer.l1 * sum(float(np.abs(w).sum()) for w in self.weights)
                      if s.l1 > 0 else 0.0)
        loss = self.model.train_step(X_batch, y_batch, optimizer, sample_weight=w_batch)
        return s.loss_factor * (loss - l1_penalty) + penalty + s.scale * l1_penalty


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("estimator", ["classifier", "regressor"])
def test_estimators_train_through_the_compiled_epoch(monkeypatch, solver, estimator):
    # partial_fit/fit of the scikit-learn estimators run each epoch in one compiled call
    # whose per-batch rule (L2 from the batch's total weight, Adam's epsilon schedule, the
    # penalty in the reported loss) gives the weights of the per-batch Python loop exactly.
    pytest.importorskip("sklearn")
    from fusedmlp import sklearn as fsk

    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 5))
    y = rng.integers(0, 3, 150) if estimator == "classifier" else X @ rng.normal(size=5)
    weights = rng.uniform(0, 2, 150)
    weights[:40] = 0                               # whole zero-weight batches (unshuffled)
    cls = fsk.MLPClassifier if estimator == "classifier" else fsk.MLPRegressor

    def train():
        model = cls(hidden_layer_sizes=(7,), solver=solver, alpha=1e-2, batch_size=20,
                    max_iter=3, shuffle=False, random_state=0, momentum=0.9)
        if estimator == "classifier":
            model.partial_fit(X, y, sample_weight=weights, classes=np.arange(3))
        else:
            model.partial_fit(X, y, sample_weight=weights)
        model.partial_fit(X, y, sample_weight=weights)
        return model

    compiled = train()
    # the per-batch loop of train_step calls
    monkeypatch.setattr(fsk, "_Step", functools.partial(PerBatchRule, fsk._Step))
    looped = train()
    for a, b in zip(compiled.coefs_ + compiled.intercepts_, looped.coefs_ + looped.intercepts_):
        oracle.assert_same_bits(a, b, why=oracle.SAME_CALL)
    # the same weights; the reported losses add the batches' losses and the penalty's sum
    # over the weights in other orders (C against NumPy): within that many float64 roundings
    oracle.assert_rounding_close(compiled.loss_curve_, looped.loss_curve_, np.float64,
                                 compiled.model_.n_parameters + -(-150 // 20) + 4)
    assert compiled._optimizer.steps == looped._optimizer.steps
