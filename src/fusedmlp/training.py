"""The loop around the compiled training step.

One step (forward, loss, backward, update) is one compiled call (``MLP.bind`` gives it as a
callable). Everything around it lives here:

- :class:`Batches` and :func:`run_epoch`: THE mini-batch loop, shared by ``MLP.fit``, the
  scikit-learn estimators (``fit`` and ``partial_fit``) and, through them, ``fusedmlp.dask``;
- :func:`fit`: what ``MLP.fit`` does around the epochs: the validation split, the history,
  early stopping, learning-rate schedules, the NaN guard, progress and callbacks.

This module knows the model only through its public surface (``check_data``, ``bind``,
``parameters``, ``loss``, ``score``); it imports no other model code.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Dict

import numpy as np

from . import _kernels, sparse
from ._codes import H_T, S_STEP, Status
from ._validation import as_bool, as_positive_int, as_real, as_sample_weight, describe
from .class_weights import row_classes, row_weights
from .optim import (ConstantLR, WarmupLR, check_counters, check_hyper, make_optimizer,
                    make_schedule)

__all__ = ["Batches", "run_epoch", "fit"]


# ---------------------------------------------------------------------- the batch loop
class Batches:
    """Mini-batches of ``(X, y, sample_weight)`` rows.

    ``epoch(order)`` yields the batches of one pass in the given row order, gathered into
    buffers allocated once here (so an epoch allocates nothing per batch), or contiguous
    slices of the data when `order` is None. `sample_weight` may be None.
    """

    def __init__(self, X, y, sample_weight, batch_size):
        self.X, self.y, self.sample_weight = X, y, sample_weight
        self.batch_size = batch_size = min(batch_size, len(X))
        # (a sparse X's batches are its rows, read in place: no dense buffer)
        self.X_buffer = (None if sparse.is_sparse(X)
                         else np.empty((batch_size,) + X.shape[1:], X.dtype))
        self.y_buffer = np.empty((batch_size,) + y.shape[1:], y.dtype)
        self.w_buffer = (None if sample_weight is None
                         else np.empty(batch_size, sample_weight.dtype))

    def __len__(self):
        return len(self.X)

    def identity_order(self):
        """The rows in stored order, as the compiled epoch takes an order (kept)."""
        if getattr(self, "_identity", None) is None:
            self._identity = np.arange(len(self.X), dtype=np.int64)
        return self._identity

    def epoch(self, order=None):
        X, y, weights = self.X, self.y, self.sample_weight
        for start in range(0, len(X), self.batch_size):
            stop = min(start + self.batch_size, len(X))
            if order is None:
                yield (X[start:stop], y[start:stop],
                       None if weights is None else weights[start:stop])
                continue
            index, rows = order[start:stop], stop - start
            yield (X[index] if self.X_buffer is None else
                   np.take(X, index, axis=0, out=self.X_buffer[:rows]),
                   np.take(y, index, axis=0, out=self.y_buffer[:rows]),
                   None if weights is None else np.take(weights, index,
                                                        out=self.w_buffer[:rows]))


class EpochResult:
    """What one epoch measured: the mean batch loss, the training accuracy of the batches as
    they were trained (classification with a compiled step, else None) and, when validation
    data was scored in the same call, its loss and accuracy."""

    __slots__ = ("loss", "accuracy", "val_loss", "val_accuracy")

    def __init__(self, loss, accuracy=None, val_loss=None, val_accuracy=None):
        self.loss, self.accuracy = loss, accuracy
        self.val_loss, self.val_accuracy = val_loss, val_accuracy


#: Within-epoch progress (verbose): an epoch of more batches than this runs as this many
#: compiled calls, with a progress report after each (a few microseconds a call).
PROGRESS_CALLS = 20


def run_epoch(step, batches: Batches, order=None, *, validation=None, progress=None,
              schedule=None):
    """One pass over `batches` in `order` (None: as stored).

    ``step(X_batch, y_batch, w_batch) -> loss`` trains on one batch. A compiled step
    (``MLP.bind(optimizer)``, which has ``step.epoch``) runs the whole epoch in one compiled
    call, or in ``PROGRESS_CALLS`` calls when `progress` reports within epochs, with
    `validation` (``step.validation_buffers(X_val, y_val)``) scored after the last step, and
    returns an :class:`EpochResult`; any other step is called batch by batch (an
    :class:`EpochResult` with the loss only). This is the only place that loops over the
    batches of an epoch. `schedule` (a compiled step only) is a per-step learning-rate
    schedule's state (``WarmupLR.start``), advanced by the compiled call.
    """
    if not hasattr(step, "epoch"):
        if schedule is not None:
            raise TypeError("a per-step schedule needs a compiled step (MLP.bind)")
        total = 0.0
        for X_batch, y_batch, w_batch in batches.epoch(order):
            total += step(X_batch, y_batch, w_batch) * len(X_batch)
        return EpochResult(total / len(batches))
    n, size = len(batches), batches.batch_size
    order = batches.identity_order() if order is None else order.astype(np.int64, copy=False)
    n_batches = -(-n // size)
    per_call = n_batches
    if progress is not None and progress.within_epochs and n_batches > PROGRESS_CALLS:
        per_call = -(-n_batches // PROGRESS_CALLS)
    results = np.zeros(5)
    for first in range(0, n, per_call * size):
        stop = min(n, first + per_call * size)
        extra = {} if schedule is None else {"schedule": schedule}
        status = step.epoch(batches, order, first, stop,
                            validation if stop == n else None, results, **extra)
        if status == Status.BAD_COUNTER:
            model = step.model
            check_counters(step.optimizer.hyper[H_T], bool(np.any(np.asarray(model.dropout) > 0)),
                           model.dropout_step,
                           None if schedule is None else schedule[S_STEP])
        if status:
            _raise_epoch_status(status, int(results[2]), size, n_batches)
        if per_call < n_batches:
            progress.batch(-(-stop // size), n_batches, results[0] / stop)
    result = EpochResult(results[0] / n)
    if step.model.is_classifier:
        result.accuracy = results[1] / n
    if validation is not None:
        result.val_loss = results[3]
        if step.model.is_classifier:
            result.val_accuracy = results[4] / len(validation[0])
    return result


def _raise_epoch_status(status, row, batch_size, n_batches):
    if row < 0:
        raise FloatingPointError("the model's outputs on the validation data are not finite "
                                 "(NaN or inf)")
    where = f"batch {row // batch_size + 1} of {n_batches}"
    if status == Status.BAD_LOSS:
        raise FloatingPointError(f"the loss is not finite (NaN or inf) in {where}; no update "
                                 "was applied")
    # fit checks its data before training: this is a last line of defence
    raise ValueError(f"{where} was refused by the compiled step (status {status})")


# ---------------------------------------------------------------------- around the epochs
def _validation_split(model, X, y, weights, validation_data, validation_fraction, rng):
    """(X, y, weights, (X_val, y_val) or None): held-out data given or split off."""
    if validation_data is not None:
        if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
            raise TypeError(f"validation_data must be a pair (X_val, y_val), got {describe(validation_data)}")
        return X, y, weights, model.check_data(*validation_data, "validation_data ")
    if not validation_fraction:
        return X, y, weights, None
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must lie in (0, 1), got {validation_fraction}")
    n_val = int(round(len(X) * validation_fraction))
    if not 0 < n_val < len(X):
        raise ValueError(f"validation_fraction={validation_fraction} leaves no training or no validation data")
    order = rng.permutation(len(X))
    validation = X[order[:n_val]], y[order[:n_val]]
    keep = order[n_val:]
    return X[keep], y[keep], None if weights is None else weights[keep], validation


def _new_history(classify: bool, validate: bool) -> dict:
    history: Dict[str, Any] = {"loss": [], "lr": [], "time": []}
    if classify:
        history["accuracy"] = []
    if validate:
        history["val_loss"] = []
        if classify:
            history["val_accuracy"] = []
    history["stopped_epoch"] = None
    history["best_epoch"] = None
    return history


class _EarlyStopping:
    """The best monitored loss so far; says when `patience` epochs brought no improvement
    of `min_delta`, and keeps the best epoch's parameters to restore."""

    def __init__(self, patience, min_delta, restore_best_weights):
        self.patience = None if patience is None else as_positive_int(patience, "patience")
        self.min_delta = as_real(min_delta, "min_delta", low=0.0)
        self.restore_best = as_bool(restore_best_weights, "restore_best_weights")
        self.best_loss, self.best_params, self.wait = math.inf, None, 0

    def improved(self, monitored, parameters) -> bool:
        if monitored < self.best_loss - self.min_delta:
            self.best_loss, self.wait = monitored, 0
            if self.patience is not None and self.restore_best:
                self.best_params = parameters.copy()
            return True
        self.wait += 1
        return False

    @property
    def stop(self) -> bool:
        return self.patience is not None and self.wait >= self.patience


def _as_verbosity(verbose) -> int:
    if isinstance(verbose, (bool, np.bool_)):
        return int(verbose)
    return as_positive_int(verbose, "verbose", minimum=0)


def _as_callbacks(callbacks) -> tuple:
    if not isinstance(callbacks, (list, tuple)) or not all(callable(c) for c in callbacks):
        raise TypeError("callbacks must be a list or tuple of callables "
                        f"callback(model, epoch, logs), got {describe(callbacks)}")
    return tuple(callbacks)


class _NanGuard:
    """The parameters of the last epoch that ended finite, to fall back to on divergence."""

    def __init__(self, parameters):
        self.parameters, self.last_good = parameters, parameters.copy()

    def check(self):
        if not _kernels.all_finite(self.parameters):
            # the epoch's last update overflowed: no later step would see its loss
            raise FloatingPointError("the parameters are not finite after the update")

    def keep(self):
        self.last_good[...] = self.parameters

    def restore(self):
        self.parameters[...] = self.last_good


class Progress:
    """Per-epoch progress: a tqdm bar on a terminal when tqdm is installed, else lines."""

    def __init__(self, verbose, epochs):
        self.verbose, self.epochs, self.bar = verbose, epochs, None
        self.epoch, self.started = 0, 0.0
        terminal = sys.stdout.isatty()
        # within an epoch: in place on a terminal (verbose >= 1), as lines with verbose >= 2
        self.within_epochs = bool(verbose) and (terminal or verbose >= 2)
        self.in_place = terminal
        if verbose and terminal:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=epochs, unit="epoch")
            except ImportError:
                pass

    def start(self, epoch):
        self.epoch, self.started = epoch, time.perf_counter()

    def batch(self, done, total, loss):
        """Within an epoch: `done` of `total` batches trained, the mean loss so far."""
        text = (f"epoch {self.epoch}/{self.epochs}: batch {done}/{total} loss={loss:.4g} "
                f"({(time.perf_counter() - self.started) * 1e3:.0f} ms)")
        if self.bar is not None:
            self.bar.set_postfix_str(text.split(": ", 1)[1])
        elif self.in_place:
            self.width = max(getattr(self, "width", 0), len(text))
            print("\r" + text.ljust(self.width), end="", flush=True)
        else:
            print(text, flush=True)

    def update(self, epoch, logs):
        if not self.verbose:
            return
        shown = {k: v for k, v in logs.items() if k not in ("lr", "time")}
        text = " ".join(f"{k}={v:.4g}" for k, v in shown.items())
        text += f" ({logs['time'] * 1e3:.1f} ms)"
        if self.bar is not None:
            self.bar.set_postfix_str(text)
            self.bar.update(1)
        else:
            line = f"epoch {epoch}/{self.epochs}: {text}"
            if self.in_place and self.within_epochs:     # over the in-place progress line
                line = "\r" + line.ljust(getattr(self, "width", 0))
            print(line, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def fit(model, X, y, *, rng, epochs, batch_size, optimizer, validation_data,
        validation_fraction, shuffle, verbose, sample_weight, lr_schedule, weight_decay,
        clip_norm, patience, min_delta, restore_best_weights, callbacks,
        train_accuracy="batches", class_weight=None, l1=None) -> dict:
    """``MLP.fit`` (whose docstring describes every argument); `rng` shuffles and splits.

    Every argument is checked before anything changes (the optimiser's settings included):
    a refused call leaves the model and the optimiser as they were.
    """
    if train_accuracy not in ("batches", "full"):
        raise ValueError(f"train_accuracy must be 'batches' or 'full', got {train_accuracy!r}")
    epochs = as_positive_int(epochs, "epochs")
    batch_size = as_positive_int(batch_size, "batch_size")
    optimizer = make_optimizer(optimizer)
    weight_decay = None if weight_decay is None else check_hyper("weight_decay", weight_decay)
    clip_norm = None if clip_norm is None else check_hyper("clip_norm", clip_norm)
    l1 = None if l1 is None else check_hyper("l1", l1)
    per_step = lr_schedule if isinstance(lr_schedule, WarmupLR) else None
    schedule = ConstantLR() if per_step is not None else make_schedule(lr_schedule, epochs)
    shuffle = as_bool(shuffle, "shuffle")
    verbose = _as_verbosity(verbose)
    validation_fraction = as_real(validation_fraction, "validation_fraction", low=0.0,
                                  high=1.0, high_open=True)
    callbacks = _as_callbacks(callbacks)
    stopping = _EarlyStopping(patience, min_delta, restore_best_weights)

    X, y = model.check_data(X, y)
    if len(X) == 0:
        raise ValueError("X is empty: fit needs at least one sample")
    if not _kernels.all_finite(model.parameters):
        # (training from them would diverge at once, and "the last finite weights" to fall
        # back to would be these)
        raise ValueError("the model's parameters contain NaN or infinity: fit cannot start "
                         "from them (set finite ones with set_params_vector, or make a new "
                         "model)")
    weights = sample_weight
    if class_weight is not None:
        row_class, n_classes = row_classes(model.output, y, model.n_outputs)
        weights = row_weights(class_weight, row_class, n_classes, sample_weight)
    if weights is not None:
        weights, _ = as_sample_weight(weights, len(X), model.dtype)
    X, y, weights, validation = _validation_split(model, X, y, weights, validation_data,
                                                  validation_fraction, rng)
    # (a per-step schedule fixes its peak and length now: a refusal changes nothing)
    steps = (None if per_step is None else
             per_step.start(optimizer.lr, epochs * -(-len(X) // min(batch_size, len(X)))))
    if weight_decay is not None:
        optimizer.weight_decay = weight_decay
    if clip_norm is not None:
        optimizer.clip_norm = clip_norm
    if l1 is not None:
        optimizer.l1 = l1
    classify = model.is_classifier
    history = _new_history(classify, validation is not None)

    batches = Batches(X, y, weights, batch_size)
    step = model.bind(optimizer)
    scoring = None if validation is None else step.validation_buffers(*validation)
    guard = _NanGuard(model.parameters)
    progress = Progress(verbose, epochs)
    lr0 = optimizer.lr
    try:
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            progress.start(epoch)
            order = rng.permutation(len(X)) if shuffle else None
            result = run_epoch(step, batches, order, validation=scoring, progress=progress,
                               schedule=steps)
            guard.check()
            logs = {"loss": result.loss, "lr": optimizer.lr,
                    "time": time.perf_counter() - start}
            if classify:
                logs["accuracy"] = (model.score(X, y) if train_accuracy == "full"
                                    else result.accuracy)
            if validation is not None:
                logs["val_loss"] = result.val_loss
                if classify:
                    logs["val_accuracy"] = result.val_accuracy
            for key, value in logs.items():
                history[key].append(value)
            guard.keep()
            progress.update(epoch, logs)

            monitored = logs.get("val_loss", logs["loss"])
            if stopping.improved(monitored, model.parameters):
                history["best_epoch"] = epoch
            stop = stopping.stop
            if epoch < epochs:              # the rate for the next epoch, if there is one
                optimizer.lr = schedule(epoch, lr0, optimizer.lr, monitored)
            for callback in callbacks:
                if callback(model, epoch, logs):
                    stop = True
            if stop:
                history["stopped_epoch"] = epoch
                break
    except FloatingPointError as exc:
        # A step refused mid-epoch left the model as after the last good step; if that
        # step's update itself overflowed, fall back to the last epoch that ended finite.
        kept = _kernels.all_finite(model.parameters)
        if not kept:
            guard.restore()
        progress.close()
        raise FloatingPointError(
            f"training diverged in epoch {epoch}: {exc}. The model keeps the weights "
            + ("after the last step whose loss was finite" if kept else
               "of the last epoch whose parameters were finite")
            + "; try a smaller learning rate, clip_norm, or scaled inputs."
        ) from None
    progress.close()
    if stopping.best_params is not None:
        model.parameters[...] = stopping.best_params
    return history
