"""The multilayer perceptron: a stack of Dense layers trained by one compiled call per step."""

from __future__ import annotations

import threading

import numpy as np

from . import _kernels, _network, io, sparse, training
from .dropout import KEY_LIMIT, check_dropout, check_dropout_key, layer_rates
from ._codes import H_SIZE, H_T, SOFT_TARGET_TOLERANCE, Inference, Status
from ._validation import (
    BLAS_INT_MAX, as_float_array, as_labels, as_matrix, as_model_dtype, as_positive_int,
    as_sample_weight, check_distribution, check_finite, check_out, check_out_disjoint, describe,
)
from .functional import ACTIVATIONS
from .layers import OUTPUTS, Dense, MeanSquaredError, SoftmaxCrossEntropy, check_activation
from .layout import ParamLayout
from .optim import Optimizer, check_counters
from .threads import bind as bind_threads, check_n_threads
from .bf16 import check_compute_dtype, restore_compute_dtype

__all__ = ["MLP", "load", "OUTPUTS"]

_CLASSIFIERS = ("softmax", "sigmoid")
_SCORES, _PROBABILITIES, _LOG_PROBABILITIES = (
    int(Inference.SCORES), int(Inference.PROBABILITIES), int(Inference.LOG_PROBABILITIES))
#: What each status of a compiled call means (csrc/_codes.pxd Status).
STATUS_ERRORS = {
    Status.BAD_INPUT: (ValueError, "X contains NaN or infinity"),
    Status.BAD_LABEL: (ValueError, "y holds a label outside [0, n_classes)"),
    Status.BAD_TARGET: (ValueError, "y contains NaN or infinity"),
    Status.BAD_LOSS: (FloatingPointError,
                      "the loss is not finite (NaN or inf); no update was applied"),
    Status.BAD_OUTPUT: (FloatingPointError,
                        "the model's outputs are not finite (NaN or inf): its parameters "
                        "contain NaN or infinity or overflow on this input (see "
                        "model.get_params_vector())"),
    Status.BAD_RANGE: (ValueError, "y holds targets outside [0, 1] (output='sigmoid' needs "
                                   "0/1 labels or probabilities)"),
    Status.BAD_COUNTER: (OverflowError, "the update would take a step counter past its range "
                                        "(the optimiser's steps past 2**53, dropout_step past "
                                        "2**63 - 1); no update was applied"),
}
_NEGATIVE_TARGETS = ("y holds negative targets (output='exp' trains with the Poisson "
                     "deviance, which needs y >= 0)")
_NOT_PROBABILITIES = ("y holds soft targets (class probabilities) that are negative or whose "
                      f"rows do not sum to 1 (within {SOFT_TARGET_TOLERANCE:g})")


def _raise_status(status, n_classes=None, output=None):
    cls, message = STATUS_ERRORS[status]
    if status == Status.BAD_RANGE and output == "exp":
        message = _NEGATIVE_TARGETS
    elif status == Status.BAD_RANGE and output == "softmax":
        message = _NOT_PROBABILITIES
    if n_classes is not None:
        message = message.replace("n_classes", str(n_classes))
    raise cls(message)


class MLP:
    """A multilayer perceptron ``X -> Dense -> ... -> Dense -> scores``.

    Parameters
    ----------
    layer_sizes : sequence of int
        Widths from input to output, e.g. ``[784, 128, 10]`` (at least two).
    activation : str or sequence of str
        The hidden layers' activation, or one per hidden layer (``"relu"`` by default).
    output : {"softmax", "identity", "sigmoid", "exp"}
        ``"softmax"``: classification trained with softmax cross-entropy on integer labels or
        target probabilities. ``"identity"``: regression trained with mean squared error.
        ``"sigmoid"``: independent logistic outputs (binary with one output, multilabel with
        several) trained with binary cross-entropy computed from the logits, on targets in
        [0, 1] of shape ``(n, n_outputs)`` (or ``(n,)`` for one output). ``"exp"``: counts or
        rates, predictions ``exp(z)``, trained with the half Poisson deviance on targets
        ``>= 0``. The losses of the last three are means over all elements.
    dtype : float32 or float64
    init : str
        Weight initialisation (see ``fusedmlp.layers.initial_weights``).
    seed : int, numpy Generator or None
        Seeds the initial weights and ``fit``'s shuffling.
    n_threads : "auto" or int
        Threads for each training step and inference call (see the ``n_threads`` attribute
        and docs/threading.md); results do not depend on it.
    dropout : float or sequence of float
        Inverted dropout in training: one rate in [0, 1) for every hidden layer, or one per
        hidden layer (0, the default, is off). Inference never drops units. See the
        ``dropout`` attribute and :mod:`fusedmlp.dropout`.
    compute_dtype : None or "bfloat16"
        ``None`` (default): the products compute in `dtype`. ``"bfloat16"`` (float32 models,
        CPUs with AVX512-BF16): their operands are rounded to bfloat16 and summed in float32,
        up to 2x faster products at about 3 significant digits; parameters, optimiser state,
        the loss and the update stay float32 (see the attribute and docs/bf16.md).

    Notes
    -----
    All weights and biases live in one flat buffer (``[W_0, ..., b_0, ...]``) of which the
    layers' ``W`` and ``b`` are views, so ``model.layers[0].W[...] = w`` changes the model.
    A training step runs forward, loss, backward and the optimiser update in one compiled call
    with the GIL released, on a workspace sized for the largest batch seen.

    Thread safety: ``predict``/``predict_proba``/``forward`` may run from many threads at once
    (each thread has its own inference scratch). Training steps on one model are serialised by a
    lock; predicting while another thread trains the same model reads weights mid-update.

    Examples
    --------
    >>> import numpy as np, fusedmlp
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4)).astype(np.float32); y = (X[:, 0] > 0).astype(int)
    >>> model = fusedmlp.MLP([4, 16, 2], seed=0)
    >>> history = model.fit(X, y, epochs=20, batch_size=20, optimizer=fusedmlp.Adam(0.01))
    >>> bool((model.predict(X) == y).mean() > 0.9)
    True
    """

    def __init__(self, layer_sizes, *, activation="relu", output="softmax", dtype=np.float32,
                 init="auto", seed=None, n_threads="auto", dropout=0.0,
                 compute_dtype=None):
        try:
            sizes = [as_positive_int(s, "layer_sizes entry", maximum=BLAS_INT_MAX)
                     for s in layer_sizes]
        except TypeError as exc:
            raise TypeError(f"layer_sizes must be a sequence of positive integers: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"layer_sizes: {exc}") from None
        if len(sizes) < 2:
            raise ValueError(f"layer_sizes needs at least an input and an output size, got {sizes}")
        n_hidden = len(sizes) - 2
        if isinstance(activation, str):
            activations = [activation] * n_hidden
        elif not isinstance(activation, (list, tuple)):
            raise TypeError(
                f"activation must be a name or a list of names (one per hidden layer), "
                f"got {describe(activation)}"
            )
        else:
            activations = list(activation)
            if len(activations) != n_hidden:
                raise ValueError(
                    f"activation must be one name or {n_hidden} names (one per hidden layer), "
                    f"got {len(activations)}"
                )
        activations = [check_activation(a) for a in activations] + ["identity"]
        if not isinstance(output, str) or output not in OUTPUTS:
            raise ValueError(f"output must be one of {list(OUTPUTS)}, got {output!r}")
        self.layer_sizes = tuple(sizes)
        self._max_width = max(sizes[1:])
        self.output = output
        self.dtype = as_model_dtype(dtype)
        compute_dtype = check_compute_dtype(compute_dtype, self.dtype)
        self.init = init
        self._rng = np.random.default_rng(seed)

        self.layers = [Dense(a, b, activation=f, init=init, dtype=self.dtype, seed=self._rng)
                       for a, b, f in zip(sizes[:-1], sizes[1:], activations)]
        self.layout = ParamLayout(sizes)
        self._params = np.zeros(self.layout.n_params, self.dtype)
        self._grads = np.zeros(self.layout.n_params, self.dtype)
        for layer, (W, b), (dW, db) in zip(self.layers, self.layout.views(self._params),
                                           self.layout.views(self._grads)):
            layer.use_buffers(W, b, dW, db)
        self._net = _network.Network(
            self.layout, [ACTIVATIONS[a] for a in activations], OUTPUTS[output], self._params,
            self._grads
        )
        self._lock = threading.Lock()
        self._workspace = None
        self._n_threads = check_n_threads(n_threads)
        bind_threads(self._net, self._n_threads, self._max_width)
        self._compute_dtype = compute_dtype
        self._net.set_bf16(compute_dtype == "bfloat16")
        self._no_update = np.zeros(H_SIZE)   # hyper-parameters of a gradient-only step
        self._dropout_state = np.zeros(2, np.int64)     # [seed, step] of the masks
        self._dropout_seeded = False
        self.dropout = dropout

    @property
    def dropout(self):
        """The hidden layers' dropout rate (a float), or their rates (a tuple); settable.

        Setting a rate > 0 for the first time draws ``dropout_seed`` from the model's seeded
        generator (after the initial weights), so a fixed ``seed`` gives fixed masks.
        """
        return self._dropout

    @dropout.setter
    def dropout(self, value):
        value = check_dropout(value, len(self.layer_sizes) - 2)
        rates = layer_rates(value, len(self.layers))
        with self._lock:
            if rates.any():
                if not self._dropout_seeded:
                    self._dropout_state[0] = self._rng.integers(KEY_LIMIT)
                    self._dropout_seeded = True
                self._net.set_dropout(rates, self._dropout_state)
            else:
                self._net.set_dropout(None, None)
            self._dropout = value

    @property
    def dropout_seed(self) -> int:
        """The key of the dropout masks (an integer in [0, 2**63)); settable."""
        return int(self._dropout_state[0])

    @dropout_seed.setter
    def dropout_seed(self, value):
        self._dropout_state[0] = check_dropout_key(value, "dropout_seed")
        self._dropout_seeded = True

    @property
    def dropout_step(self) -> int:
        """Updates that drew dropout masks so far (each update advances it by one; a
        gradient-only step does not); settable, e.g. to replay a step's mask."""
        return int(self._dropout_state[1])

    @dropout_step.setter
    def dropout_step(self, value):
        self._dropout_state[1] = check_dropout_key(value, "dropout_step")

    @property
    def n_threads(self):
        """Threads for each training step and inference call: ``"auto"`` (default) or an int.

        ``"auto"`` picks from the work of the call (one thread for small networks and
        batches, never more than the usable cores or a ``threadpoolctl.threadpool_limits``
        limit); an integer n splits every call into exactly n parts run by the caller and
        fusedmlp's worker pool. Results are the same for every value (docs/threading.md).
        """
        return self._n_threads

    @n_threads.setter
    def n_threads(self, value):
        value = check_n_threads(value)
        with self._lock:
            bind_threads(self._net, value, self._max_width)
            self._n_threads = value

    @property
    def compute_dtype(self):
        """What the matrix products compute in: ``None`` (default: the model's dtype) or
        ``"bfloat16"`` (float32 models on CPUs with AVX512-BF16: the products' operands are
        rounded to bfloat16 and summed in float32; everything else stays float32; see
        docs/bf16.md). Settable, e.g. to train in bfloat16 and predict in float32."""
        return self._compute_dtype

    @compute_dtype.setter
    def compute_dtype(self, value):
        value = check_compute_dtype(value, self.dtype)
        with self._lock:
            self._net.set_bf16(value == "bfloat16")
            self._compute_dtype = value

    # ------------------------------------------------------------------ description
    @property
    def n_features(self) -> int:
        return self.layer_sizes[0]

    @property
    def n_outputs(self) -> int:
        return self.layer_sizes[-1]

    @property
    def activations(self) -> list:
        return [layer.activation for layer in self.layers[:-1]]

    @property
    def is_classifier(self) -> bool:
        """True for the outputs with probabilities and an accuracy ("softmax", "sigmoid")."""
        return self.output in _CLASSIFIERS

    @property
    def n_parameters(self) -> int:
        return self._params.size

    # ------------------------------------------------------------------ for siblings
    # What fusedmlp's other modules (training, optim, io, dask, sklearn, the benchmarks) may
    # use of a model besides its user-facing methods; none of them touches a private name.
    @property
    def parameters(self) -> np.ndarray:
        """The live flat parameter buffer ``[W_0, ..., b_0, ...]`` (``self.layout``); the
        layers' ``W`` and ``b`` are views into it, so writing into it changes the model."""
        return self._params

    @property
    def gradients(self) -> np.ndarray:
        """The live flat gradient buffer, laid out like ``parameters``: what the last
        training step or ``loss_and_gradients`` computed (the layers' ``dW``/``db`` views)."""
        return self._grads

    @property
    def network(self):
        """The compiled network (``fusedmlp._network.Network``) behind this model, for the
        benchmarks' and embedders' introspection (its methods are not a stable API)."""
        return self._net

    def bind(self, optimizer) -> "CompiledStep":
        """The compiled training step with `optimizer` bound: ``step(X, y, sample_weight)``
        is ``train_step(X, y, optimizer, sample_weight=sample_weight)`` without the per-call
        optimiser lookup (``fusedmlp.training`` loops over it)."""
        return CompiledStep(self, optimizer)

    def __repr__(self):
        hidden = self.activations
        act = hidden[0] if hidden and len(set(hidden)) == 1 else hidden
        compute = "" if self._compute_dtype is None else f", compute_dtype={self._compute_dtype!r}"
        dropout = f", dropout={self._dropout!r}" if np.any(self._dropout) else ""
        return (f"MLP({list(self.layer_sizes)}, activation={act!r}, output={self.output!r}, "
                f"dtype={self.dtype.name}{compute}{dropout})")

    def summary(self) -> str:
        """A table of the layers, their shapes and the parameter count."""
        lines = [f"{'layer':<6} {'W':>14} {'b':>8} {'activation':>12} {'parameters':>11}"]
        for i, layer in enumerate(self.layers):
            act = "(" + self.output + ")" if i == len(self.layers) - 1 else layer.activation
            lines.append(f"{i:<6} {str(layer.W.shape):>14} {str(layer.b.shape):>8} {act:>12} "
                         f"{layer.W.size + layer.b.size:>11,}")
        lines.append(f"total parameters: {self.n_parameters:,} ({self.dtype.name})")
        return "\n".join(lines)

    # ------------------------------------------------------------------ input handling
    def _inputs(self, X, name="X"):
        if type(X) is np.ndarray and X.ndim == 2 and self._is_native(X):
            return X
        if sparse.is_sparse(X):         # checked (finite too) and canonical CSR, never dense
            return sparse.as_csr(X, name, self.dtype, self.layer_sizes[0])
        return as_matrix(X, "X", self.dtype, self.layer_sizes[0])

    def _targets(self, y, m, name="y", distribution=True):
        """(labels or None, targets or None) for m rows, checked against the output: labels
        in [0, n_classes), soft targets class probabilities (``check_distribution``; not with
        distribution=False, for a compiled step, which checks them itself)."""
        n_out = self.layer_sizes[-1]
        if self.output == "softmax":
            if np.ndim(y) == 2:
                targets = as_matrix(y, name, self.dtype, n_out)
                if len(targets) != m:
                    raise ValueError(f"{name} must have {m} rows like X, got shape {targets.shape}")
                if distribution:
                    check_distribution(targets, name)
                return None, targets
            labels = as_labels(y, name, n_out)
            if labels.shape != (m,):
                raise ValueError(f"{name} must have shape ({m},) like X's rows, got {labels.shape}")
            return labels, None
        targets = y if isinstance(y, np.ndarray) else np.asarray(y)
        if targets.ndim == 1 and n_out == 1:
            targets = targets[:, None]
        targets = as_matrix(targets, name, self.dtype, n_out)
        if len(targets) != m:
            raise ValueError(f"{name} must have {m} rows like X, got shape {targets.shape}")
        return None, targets

    def check_data(self, X, y, what=""):
        """(X, labels or targets) converted to what the compiled step takes and fully
        checked: finite, labels in range (so fit refuses a bad label now, not after an
        epoch). `what` prefixes the argument names in error messages."""
        X = self._inputs(X, f"{what}X")
        if not sparse.is_sparse(X):
            check_finite(X, f"{what}X")
        labels, targets = self._targets(y, len(X), f"{what}y")
        if labels is not None:
            return X, labels
        check_finite(targets, f"{what}y")
        if self.output in ("sigmoid", "exp") and not _kernels.targets_in_range(
                targets.reshape(-1), self.output == "sigmoid"):
            _raise_status(Status.BAD_RANGE, output=self.output)
        return X, targets

    def _is_native(self, X) -> bool:
        """X (a 2-D ndarray) is what the compiled calls take as it is: no conversion."""
        return (X.dtype == self.dtype and X.shape[1] == self.layer_sizes[0]
                and X.flags.c_contiguous and len(X) <= BLAS_INT_MAX)

    def reserve(self, max_batch: int) -> None:
        """Allocate the training workspace for batches of up to `max_batch` rows now, so
        that no later step or epoch of at most that size allocates (the workspace otherwise
        grows on the first larger batch)."""
        max_batch = as_positive_int(max_batch, "max_batch")
        with self._lock:
            self._ensure_workspace(max_batch)

    def _ensure_workspace(self, m):
        if m <= self._net.max_batch:
            return
        widths = self.layer_sizes[1:]
        rows = max(m, 2 * self._net.max_batch)          # grow geometrically
        self._workspace = (np.empty(rows * sum(widths), self.dtype),
                           np.empty(rows * self._max_width, self.dtype),
                           np.empty(rows * self._max_width, self.dtype),
                           np.empty(max(self._max_width, rows), np.float64))
        self._net.set_workspace(rows, *self._workspace)

    # ------------------------------------------------------------------ training
    def _step(self, X, y, opt_kind, hyper, state_a, state_b, sample_weight):
        if sample_weight is None:
            # Fast path: the compiled step checks types and shapes itself, so arrays already in
            # its native form (C-contiguous, the model's dtype, int64 labels) go straight in;
            # anything else is validated and converted below, with a precise error if needed.
            # The workspace grows first, so a native batch never takes that route.
            if (type(X) is np.ndarray and X.ndim == 2 and len(X) > self._net.max_batch
                    and self._is_native(X)):
                with self._lock:
                    self._ensure_workspace(len(X))
            labels, targets = (y, None) if self.output == "softmax" else (None, y)
            try:
                with self._lock:
                    status = self._net.train_step(X, labels, targets, None, 0.0, opt_kind, hyper,
                                                  state_a, state_b)
                    loss = self._net.loss
            except (TypeError, ValueError, BufferError):
                pass
            else:
                if status:
                    self._raise_step_status(status, y, hyper)
                return loss
        X = self._inputs(X)
        m = X.shape[0]
        if m == 0:
            raise ValueError("X is empty: a training step needs at least one sample")
        # Soft targets are checked once, by the compiled step (before it writes anything);
        # a refusal is then explained by check_distribution, in the words it always used.
        labels, targets = self._targets(y, m, distribution=False)
        if sample_weight is None:
            weights, total = None, float(m)
        else:
            weights, total = as_sample_weight(sample_weight, m, self.dtype)
        with self._lock:
            self._ensure_workspace(m)
            status = self._net.train_step(X, labels, targets, weights, total, opt_kind, hyper,
                                          state_a, state_b)
            loss = self._net.loss
        if status:
            self._raise_step_status(status, labels, hyper, targets)
        return loss

    def _raise_step_status(self, status, labels, hyper, targets=None):
        if (status in (Status.BAD_TARGET, Status.BAD_RANGE) and self.output == "softmax"
                and targets is not None):
            check_distribution(targets, "y")            # raises, showing the bad row or value
        if status == Status.BAD_LABEL:
            as_labels(labels, "y", self.n_outputs)      # raises, showing the bad values
        if status == Status.BAD_COUNTER:                # raises, naming the counter
            check_counters(hyper[H_T], bool(np.any(np.asarray(self._dropout) > 0)),
                           self.dropout_step)
        _raise_status(status, self.n_outputs, self.output)

    def train_step(self, X, y, optimizer, *, sample_weight=None) -> float:
        """One step of `optimizer` on the batch (X, y); returns the batch's loss before the step.

        Forward, loss, backward and update run in one compiled call. `y` holds integer labels
        (or target probabilities, shape (batch, n_classes)) for ``output="softmax"``, targets
        for ``output="identity"``. A refused batch (NaN/inf, bad labels, non-finite loss)
        raises and leaves the model unchanged.
        """
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer must be a fusedmlp Optimizer (e.g. fusedmlp.Adam(1e-3)), "
                f"got {describe(optimizer)}"
            )
        hyper, state_a, state_b = optimizer.buffers(self)
        return self._step(X, y, optimizer.kind, hyper, state_a, state_b, sample_weight)

    def loss_and_gradients(self, X, y, *, sample_weight=None):
        """``(loss, [(dW, db), ...])`` for the batch, in layer order (copies); no update.

        The loss is the mean over the batch (softmax cross-entropy or mean squared error);
        regularisation is not included. The layers' ``dW``/``db`` hold the same values.
        Like ``train_step`` it runs on the training workspace, which grows to the largest
        batch seen and is kept (``loss`` and ``predict*`` use no workspace: prefer ``loss``
        for the loss of a whole dataset).
        """
        loss = self._step(X, y, 0, self._no_update, None, None, sample_weight)
        return loss, [(layer.dW.copy(), layer.db.copy()) for layer in self.layers]

    def loss(self, X, y, *, sample_weight=None) -> float:
        """The mean loss on (X, y), through the inference path (no gradients, no update)."""
        scores = self._infer(X, _SCORES)
        labels, targets = self._targets(y, len(scores))
        if len(scores) == 0:
            raise ValueError("X is empty: the loss needs at least one sample")
        if self.output == "softmax":
            return SoftmaxCrossEntropy().forward(scores, labels if labels is not None else targets,
                                                 sample_weight)
        if self.output == "identity":
            return MeanSquaredError().forward(scores, targets, sample_weight)
        check_finite(targets, "y")
        weights, total = as_sample_weight(sample_weight, len(scores), self.dtype)
        weights = np.empty(0, self.dtype) if weights is None else weights
        status, loss = _kernels.output_loss(OUTPUTS[self.output], scores, targets, weights,
                                            total, np.empty_like(scores))
        if status:
            _raise_status(Status.BAD_RANGE, output=self.output)
        return loss

    # ------------------------------------------------------------------ inference
    def _infer(self, X, output, out=None):
        # Fast path: native arrays go straight into one compiled call (scratch from a
        # per-thread cache, so a warm call with out= allocates nothing); anything else is
        # checked and converted below.
        # Non-finite outputs (NaN/inf parameters, or an overflow) are refused by the compiled
        # call itself (Status.BAD_OUTPUT): never returned as predictions.
        result = _network.infer_into(self._net, X, out, output)
        if result is None:
            return self._infer_checked(X, output, out)
        if result.__class__ is int:
            _raise_status(result)
        return result

    def _infer_checked(self, X, output, out):
        X = self._inputs(X)
        m = X.shape[0]
        if out is None:
            out = np.empty((m, self.n_outputs), self.dtype)
        else:
            check_out(out, (m, self.n_outputs), self.dtype)
            # Everything the compiled call reads while it writes out: X (a sparse X's three
            # arrays) and the parameters. Its scratch is its own (fresh, or the thread's).
            if sparse.is_sparse(X):
                inputs = (("X.data", X.data), ("X.indices", X.indices), ("X.indptr", X.indptr))
            else:
                inputs = (("X", X),)
            check_out_disjoint(out, (*inputs, ("the model's parameters", self.parameters)))
        chunk = m if 0 < m < _network.INFERENCE_CHUNK else _network.INFERENCE_CHUNK
        # per-call scratch (two ping-pong blocks): what makes concurrent predicts safe
        buffers = np.empty(2 * chunk * self._max_width, self.dtype)
        status = self._net.predict(X, out, buffers, chunk, output)
        if status:
            _raise_status(status)
        return out

    def forward(self, X, out=None) -> np.ndarray:
        """Raw output scores ``(n_samples, n_outputs)``: the last layer's pre-activation
        (logits for ``output="softmax"`` and ``"sigmoid"``, log-means for ``"exp"``).

        `out`, if given, receives the result: a writable C-contiguous array of the model's
        dtype and shape ``(n_samples, n_outputs)``, overlapping neither X (a sparse X's
        data, indices, indptr) nor the model's parameters. With it a call on a
        warm model allocates nothing (scratch comes from a per-thread cache).
        """
        return self._infer(X, _SCORES, out)

    def predict_proba(self, X, out=None) -> np.ndarray:
        """Probabilities: the softmax of the scores, or each sigmoid output's probability
        (``output="sigmoid"``); classification models only.

        `out` as for ``forward``.
        """
        self._need_classifier("predict_proba")
        return self._infer(X, _PROBABILITIES, out)

    def predict_log_proba(self, X, out=None) -> np.ndarray:
        """Log-probabilities, computed directly from the scores (log-softmax, or
        ``log sigmoid(z) = -softplus(-z)``): finite where ``predict_proba`` underflows.

        `out` as for ``forward``.
        """
        self._need_classifier("predict_log_proba")
        return self._infer(X, _LOG_PROBABILITIES, out)

    def predict(self, X) -> np.ndarray:
        """Class indices (argmax of the scores) for ``output="softmax"``; 0/1 indicators
        (probability above 1/2) for ``"sigmoid"``; outputs for regression, ``exp(z)`` for
        ``"exp"`` (shape ``(n,)`` when there is one output)."""
        if self.output == "softmax":
            return np.argmax(self._infer(X, _SCORES), axis=1)
        if self.output == "sigmoid":
            pred = (self._infer(X, _PROBABILITIES) > 0.5).astype(np.int64)
        else:
            pred = self._infer(X, _SCORES if self.output == "identity" else _PROBABILITIES)
        return pred[:, 0] if pred.shape[1] == 1 else pred

    def score(self, X, y) -> float:
        """Accuracy for classification (for several sigmoid outputs, the fraction of rows
        whose every output is right), R^2 for regression."""
        pred = self.predict(X)
        labels, targets = self._targets(y, len(pred))
        if self.output == "softmax":
            if labels is None:
                check_finite(targets, "y")
                labels = np.argmax(targets, axis=1)
            return float(np.mean(pred == labels))
        check_finite(targets, "y")
        if self.output == "sigmoid":
            right = pred.reshape(len(pred), -1) == (targets > 0.5)
            return float(np.mean(np.all(right, axis=1)))
        y = targets.reshape(pred.shape).astype(np.float64)
        residual = ((y - pred) ** 2).sum()
        total = ((y - y.mean(axis=0)) ** 2).sum()
        return float(1 - residual / total) if total > 0 else 0.0

    def _need_classifier(self, what):
        if not self.is_classifier:
            raise AttributeError(f"{what} needs output='softmax' or 'sigmoid'; this model is "
                                 f"a regressor (output={self.output!r})")

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, *, epochs=10, batch_size=32, optimizer="adam", validation_data=None,
            validation_fraction=0.0, shuffle=True, verbose=0, sample_weight=None,
            lr_schedule=None, weight_decay=None, clip_norm=None, l1=None, patience=None,
            min_delta=0.0,
            restore_best_weights=True, callbacks=(), train_accuracy="batches",
            class_weight=None):
        """Train for `epochs` passes over (X, y) in mini-batches; returns the history.

        Each epoch is one compiled call (GIL released): it gathers every batch's rows, runs
        the steps, sums the loss and counts correct predictions from the logits the steps
        compute anyway, and scores the validation data after the last step. The results
        are those of calling ``train_step`` on the same batches, bit for bit.

        `y` holds integer labels in ``[0, n_classes)`` or, for ``output="softmax"``, target
        probabilities of shape ``(n_samples, n_classes)``: finite, non-negative, each row
        summing to 1 within 1e-4. Every argument is checked before training starts (and a
        refused call changes neither the model nor the optimiser); so are the model's own
        parameters, which must be finite.

        Parameters
        ----------
        epochs, batch_size : int
            Each epoch visits every sample once, in a fresh random order when `shuffle`
            (drawn from the model's seeded generator); True or False.
        optimizer : Optimizer or str
            An optimiser instance (``fusedmlp.Adam(1e-3)``) or a name (``"adam"``, ``"sgd"``).
        validation_data : (X_val, y_val), optional
            Held-out data scored after every epoch.
        validation_fraction : float in [0, 1)
            Or hold out this fraction of (X, y) (a seeded random subset).
        sample_weight : array-like of shape (n_samples,), optional
            Finite, non-negative, not all zero; each batch's loss is the weighted mean.
            The weights are scaled by a power of two (exactly) so that their sum cannot
            overflow: only their ratios matter.
        class_weight : None, "balanced" or dict, optional
            Classification: row ``i`` of class ``c`` weighs ``class_weight[c] *
            sample_weight[i]`` (exactly fit with that product as `sample_weight`). A dict
            maps class indices (labels in y) to weights >= 0, absent classes weigh 1, a
            label not in y is refused; ``"balanced"`` is scikit-learn's
            ``n_samples / (n_classes * bincount(y))`` over the classes in y, with the
            sample weights counted. Needs one class per row: integer labels, one-hot
            rows, or 0/1 targets of one sigmoid output (multilabel models refuse it).
            See :mod:`fusedmlp.class_weights`.
        lr_schedule : None, "constant", "step", "cosine", "plateau", callable or WarmupLR
            Sets ``optimizer.lr`` after each epoch (epochs count from 1; ``lr0`` is the rate
            at the start of fit). ``"step"``: ``lr0 * 0.1 ** (epoch // max(1, epochs // 3))``;
            ``"cosine"``: ``lr0 * (1 + cos(pi * epoch / epochs)) / 2``; ``"plateau"``:
            ``fusedmlp.ReduceLROnPlateau()`` (x0.1 after more than 5 epochs without
            improvement of the monitored loss). A callable (such as a ``StepLR``,
            ``CosineLR`` or ``ReduceLROnPlateau`` instance) gets
            ``(epoch, lr0, lr, monitored_loss)`` and returns the next rate. The optimiser
            keeps the rate of the last epoch after fit. A ``fusedmlp.WarmupLR`` is a
            per-step schedule instead (linear warm-up, then constant, cosine or linear
            decay over all the steps of the fit), evaluated inside the compiled epoch
            before every step.
        weight_decay, clip_norm, l1 : float, optional
            Override the optimiser's L2 weight decay (weights only), set a global
            gradient-norm limit, and set its L1 penalty on the weights (``optimizer.l1``:
            ``l1 * sum |W|`` is added to each batch's loss, reported in ``history``).
        patience : int, optional
            Early stopping: stop when the monitored loss (validation loss if there is
            validation data, training loss otherwise) has not improved by `min_delta` (a
            finite number >= 0) for `patience` epochs; with `restore_best_weights` (True or
            False) the best epoch's weights are kept.
        callbacks : list or tuple of callables
            Each is called as ``callback(model, epoch, logs)`` after every epoch; returning
            True stops training.
        verbose : int >= 0 or bool
            0 silent; 1 one line per epoch (a tqdm progress bar when tqdm is installed and the
            output is a terminal), and on a terminal the batches done and the running loss
            within long epochs; 2 also prints those within-epoch lines when the output is
            not a terminal. (An epoch then runs as a few compiled calls.)
        train_accuracy : {"batches", "full"}
            How ``history["accuracy"]`` is measured: ``"batches"`` (default) counts the
            correct predictions of each batch as it was trained (before its update, as Keras
            reports it), at no extra cost; ``"full"`` re-scores the whole training set with
            the weights at the end of each epoch (one more forward pass over all of it).

        Returns
        -------
        dict
            Lists per epoch: ``loss`` (the mean of the batch losses, each before its
            update), ``val_loss`` (with validation, after the epoch), ``accuracy`` (see
            `train_accuracy`) and ``val_accuracy`` (classification), ``lr`` and ``time``;
            plus ``stopped_epoch`` and ``best_epoch``.

        Raises
        ------
        TypeError, ValueError
            For an invalid argument (named in the message), or parameters holding NaN/inf.
        FloatingPointError
            When the loss becomes NaN or inf, naming the epoch and the batch. The model
            keeps the weights after the last step whose loss was finite, or, when those
            are not finite (the last update overflowed), the weights of the last epoch
            whose parameters were all finite.
        """
        return training.fit(
            self, X, y, rng=self._rng, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
            validation_data=validation_data, validation_fraction=validation_fraction,
            shuffle=shuffle, verbose=verbose, sample_weight=sample_weight,
            lr_schedule=lr_schedule, weight_decay=weight_decay, clip_norm=clip_norm, l1=l1,
            patience=patience, min_delta=min_delta, restore_best_weights=restore_best_weights,
            callbacks=callbacks, train_accuracy=train_accuracy, class_weight=class_weight)

    # ------------------------------------------------------------------ persistence
    def save(self, path, *, optimizer=None):
        """Write the model (and optionally an optimiser's state) to `path` (.npz + JSON
        header), atomically. Load it with ``fusedmlp.load``."""
        io.save(self, path, optimizer=optimizer)

    def to_onnx(self, path):
        """Export the model as an ONNX graph to `path` (``None``: only return it).

        Returns the ``onnx.ModelProto``. The graph takes ``X`` (``(N, n_features)``, the
        model's dtype, any N) and gives ``probabilities`` and ``label`` for
        ``output="softmax"``, ``predictions`` for ``output="identity"``, equal to
        ``predict_proba``/``predict`` to rounding. Needs the ``onnx`` package; see
        :mod:`fusedmlp.onnx` for the operators used.
        """
        from .onnx import to_onnx

        return to_onnx(self, path)

    def export_c(self, directory, *, name="fusedmlp_model"):
        """Write the model as dependency-free C99 inference code, ``<name>.h`` and
        ``<name>.c``, into `directory`; returns the two paths (see :mod:`fusedmlp.export_c`)."""
        from .export_c import export_c

        return export_c(self, directory, name=name)

    def get_params_vector(self) -> np.ndarray:
        """A copy of all parameters as one flat vector ([W_0, ..., b_0, ...])."""
        return self._params.copy()

    def set_params_vector(self, vector):
        """Set all parameters from one flat vector (the layout of ``get_params_vector``)."""
        def check_shape(array):
            if array.shape != self._params.shape:
                raise ValueError(f"vector must have shape {self._params.shape}, got {array.shape}")

        # real numbers only (complex, strings, objects and float16 are refused), finite
        vector = np.ascontiguousarray(as_float_array(vector, "vector", self.dtype, check_shape))
        check_finite(vector, "vector")
        self._params[...] = vector

    def state_dict(self) -> dict:
        """The configuration, a copy of the parameters and the shuffling generator's state:
        everything that defines the model (never the workspace or the compiled handle).
        ``MLP.from_state_dict`` rebuilds the model; pickling uses the pair."""
        return {"layer_sizes": self.layer_sizes, "activation": self.activations,
                "output": self.output, "dtype": self.dtype.name, "init": self.init,
                "params": self._params.copy(), "rng": self._rng.bit_generator.state,
                "n_threads": self._n_threads, "dropout": self._dropout,
                "dropout_seed": self.dropout_seed if self._dropout_seeded else None,
                "dropout_step": self.dropout_step, "compute_dtype": self._compute_dtype}

    @classmethod
    def from_state_dict(cls, state: dict) -> "MLP":
        """A new model from a ``state_dict()``."""
        model = cls.__new__(cls)
        model.__setstate__(state)
        return model

    def __getstate__(self):
        return self.state_dict()

    def __setstate__(self, state):
        self.__init__(state["layer_sizes"], activation=state["activation"],
                      output=state["output"], dtype=state["dtype"], init="zeros",
                      n_threads=state.get("n_threads", "auto"), dropout=state.get("dropout", 0.0),
                      compute_dtype=restore_compute_dtype(state.get("compute_dtype"),
                                                          state["dtype"]))
        self.init = state["init"]
        self._params[...] = state["params"]
        self._rng.bit_generator.state = state["rng"]
        self._restore_dropout_key(state.get("dropout_seed"), state.get("dropout_step", 0))

    def _restore_dropout_key(self, seed, step):
        self._dropout_seeded = seed is not None
        self._dropout_state[:] = (0 if seed is None else check_dropout_key(seed, "dropout_seed"),
                                  check_dropout_key(step, "dropout_step"))

    def astype(self, dtype) -> "MLP":
        """A copy of the model with parameters of another dtype (a float64 copy computes in
        float64: its ``compute_dtype`` is None)."""
        state = self.state_dict()
        state["dtype"] = as_model_dtype(dtype).name
        if state["dtype"] != "float32":
            state["compute_dtype"] = None
        state["params"] = state["params"].astype(state["dtype"])
        return MLP.from_state_dict(state)

    def gemm_floor(self, X, repeats: int) -> None:
        """Run only the matrix products of a training step on `X` (native: C-contiguous, the
        model's dtype), `repeats` times: the benchmarks' GEMM floor, what a step would cost
        if everything but BLAS were free. Needs a workspace of at least ``len(X)`` rows (any
        earlier training step of that size); leaves the gradients meaningless."""
        with self._lock:
            self._net.matmuls_only(X, repeats)


def load(path, *, with_optimizer=False):
    """Read a model written by ``MLP.save``; with ``with_optimizer=True`` return
    ``(model, optimizer)`` (optimizer is None when the file holds none).

    `path` is a ``str``, ``bytes``, ``os.PathLike`` or a binary file object. Every check is
    described in this module's docstring: an invalid file raises ``ValueError`` (the cause
    chained), an unreadable one ``OSError``.
    """
    return io.read(path, _model_of_header, with_optimizer=with_optimizer)


def _model_of_header(header) -> MLP:
    dropout = header.get("dropout")
    model = MLP(header["layer_sizes"], activation=header["activations"],
                output=header["output"], dtype=header["dtype"], init="zeros",
                dropout=0.0 if dropout is None else dropout["rates"],
                compute_dtype=restore_compute_dtype(header.get("compute_dtype"),
                                                    header["dtype"]))
    if dropout is not None:
        model._restore_dropout_key(dropout["seed"], dropout["step"])
    return model


class CompiledStep:
    """``model.bind(optimizer)``: one compiled training step per call, `optimizer` bound.

    ``step(X, y, sample_weight=None) -> loss`` behaves as ``model.train_step``.
    """

    __slots__ = ("model", "optimizer", "kind", "hyper", "state_a", "state_b")

    def __init__(self, model, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer must be a fusedmlp Optimizer (e.g. fusedmlp.Adam(1e-3)), "
                f"got {describe(optimizer)}"
            )
        self.model, self.optimizer, self.kind = model, optimizer, optimizer.kind
        self.hyper, self.state_a, self.state_b = optimizer.buffers(model)

    def __call__(self, X, y, sample_weight=None) -> float:
        return self.model._step(X, y, self.kind, self.hyper, self.state_a, self.state_b,
                                sample_weight)

    def epoch(self, batches, order, first, stop, validation, results, rule=None,
              schedule=None) -> int:
        """Train on the batches of rows ``order[first:stop]`` of `batches` (a
        ``training.Batches`` of checked data) in one compiled call; returns its status.

        `results` (float64, 5 entries) accumulates the summed loss x rows and the correct
        predictions; `validation` (``validation_buffers``) is scored after the last step;
        `rule` is the scikit-learn estimators' per-batch L2 rule (``Network.train_epoch``);
        `schedule` a per-step learning-rate schedule's state (``optim.WarmupLR``).
        """
        model = self.model
        labels, targets = ((batches.y, None) if batches.y.ndim == 1 and model.output == "softmax"
                           else (None, batches.y))
        target_buffer = batches.y_buffer
        if targets is not None and targets.ndim == 1:       # one output as a vector
            targets, target_buffer = targets[:, None], target_buffer[:, None]
        gather = (batches.X_buffer, batches.y_buffer if labels is not None else None,
                  target_buffer if targets is not None else None, batches.w_buffer)
        with model._lock:
            model._ensure_workspace(batches.batch_size)
            return model._net.train_epoch(batches.X, labels, targets, batches.sample_weight,
                                          order, first, stop, batches.batch_size, self.kind,
                                          self.hyper, self.state_a, self.state_b, gather,
                                          validation, results, rule, schedule)

    def validation_buffers(self, X, y):
        """What ``epoch`` needs to score checked data (X, labels or targets) after the last
        step, the way ``model.loss`` and ``model.score`` do."""
        model = self.model
        m = len(X)
        labels, targets = (y, None) if y.ndim == 1 and model.output == "softmax" else (None, y)
        chunk = m if 0 < m < _network.INFERENCE_CHUNK else _network.INFERENCE_CHUNK
        return (X, labels, targets, np.empty((m, model.n_outputs), model.dtype),
                np.empty((m, model.n_outputs), model.dtype), np.empty(m),
                np.empty(2 * chunk * model._max_width, model.dtype), chunk)
