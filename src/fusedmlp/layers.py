"""Layers in the style of *Deep Learning from Scratch*: ``forward`` keeps what ``backward``
needs, ``backward`` is the chain rule and returns the gradient for the layer below.

Each layer calls the fused compiled kernels; ``backward`` never writes into the caller's
array. The :class:`~fusedmlp.MLP` does not call these per layer when it trains -- its whole
step is one compiled call -- but its ``layers`` are these same :class:`Dense` objects, with
``W``, ``b``, ``dW`` and ``db`` as views into the model's flat buffers.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _kernels
from ._codes import Loss
from ._validation import (
    BLAS_INT_MAX, as_float_array, as_labels, as_matrix, as_model_dtype, as_positive_int,
    as_sample_weight, check_distribution, check_finite,
)
from .functional import ACTIVATIONS

__all__ = ["Dense", "SoftmaxCrossEntropy", "MeanSquaredError", "initial_weights", "OUTPUTS"]

#: A model's outputs and the loss each trains with (csrc/fusedmlp/_codes.pxd): the
#: SoftmaxCrossEntropy and MeanSquaredError layers below, fused into the compiled step.
OUTPUTS = {"softmax": Loss.SOFTMAX_CROSS_ENTROPY, "identity": Loss.MEAN_SQUARED_ERROR,
           "sigmoid": Loss.BINARY_CROSS_ENTROPY, "exp": Loss.POISSON_DEVIANCE}


#: Activations whose default initialisation is He's (the rest get Glorot/Xavier's).
RELU_LIKE = ("relu", "leaky_relu", "elu")

INITS = ("auto", "zeros", "he", "he_normal", "he_uniform", "xavier", "xavier_normal", "xavier_uniform",
         "glorot", "glorot_normal", "glorot_uniform", "lecun", "lecun_normal", "lecun_uniform")


def check_activation(name, what="activation") -> str:
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"{what} must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return name


def initial_weights(n_in: int, n_out: int, activation: str, init: str, rng) -> np.ndarray:
    """A float64 (n_in, n_out) weight matrix drawn by the named scheme.

    ``"auto"`` is He (normal) for relu-like activations and Glorot/Xavier (uniform) for the
    rest; ``"he"`` and ``"lecun"`` alone mean normal, ``"xavier"``/``"glorot"`` alone uniform.
    ``"zeros"`` gives all-zero weights (for weights about to be loaded; a network cannot learn
    from it, since every unit of a layer would stay identical).
    """
    if not isinstance(init, str) or init not in INITS:
        raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
    if init == "zeros":
        return np.zeros((n_in, n_out))
    if init == "auto":
        init = "he_normal" if activation in RELU_LIKE else "xavier_uniform"
    family, _, shape = init.partition("_")
    family = "xavier" if family == "glorot" else family
    shape = shape or ("uniform" if family == "xavier" else "normal")
    variance = {"he": 2.0 / n_in, "lecun": 1.0 / n_in, "xavier": 2.0 / (n_in + n_out)}[family]
    if shape == "normal":
        return rng.normal(0.0, np.sqrt(variance), size=(n_in, n_out))
    limit = np.sqrt(3.0 * variance)           # uniform(-a, a) has variance a^2 / 3
    return rng.uniform(-limit, limit, size=(n_in, n_out))


class Dense:
    """A fully connected layer ``A = f(X @ W + b)`` with ``W`` of shape ``(n_in, n_out)``.

    Parameters
    ----------
    n_in, n_out : int
        Input and output widths.
    activation : str
        One of ``fusedmlp.ACTIVATIONS`` (default ``"identity"``).
    init : str
        Weight initialisation (see :func:`initial_weights`); biases start at zero.
    dtype : float32 or float64
    seed : int, numpy Generator or None
        Seeds the initial weights (no global random state is used).

    Examples
    --------
    >>> import numpy as np, fusedmlp
    >>> layer = fusedmlp.Dense(3, 2, activation="relu", seed=0)
    >>> A = layer.forward(np.ones((4, 3), np.float32))
    >>> dX = layer.backward(np.ones_like(A))
    >>> layer.dW.shape, dX.shape
    ((3, 2), (4, 3))
    """

    def __init__(self, n_in: int, n_out: int, *, activation: str = "identity", init: str = "auto",
                 dtype: DTypeLike = np.float32,
                 seed: Union[int, np.random.Generator, None] = None):
        n_in = as_positive_int(n_in, "n_in", maximum=BLAS_INT_MAX)
        n_out = as_positive_int(n_out, "n_out", maximum=BLAS_INT_MAX)
        self.activation = check_activation(activation)
        self.dtype = as_model_dtype(dtype)
        rng = np.random.default_rng(seed)
        self._W = initial_weights(n_in, n_out, activation, init, rng).astype(self.dtype)
        self._b = np.zeros(n_out, self.dtype)
        self.dW = np.zeros_like(self._W)
        self.db = np.zeros_like(self._b)
        self._X: Optional[np.ndarray] = None          # kept by forward for backward
        self._A: Optional[np.ndarray] = None

    # W and b are views into the model's buffer when the layer belongs to an MLP: assigning
    # to them copies into that memory, so `layer.W = new` and `layer.W[...] = new` both work.
    @property
    def W(self) -> np.ndarray:
        return self._W

    @W.setter
    def W(self, value):
        self._W[...] = self._checked_parameter(value, self._W.shape, "W")

    @property
    def b(self) -> np.ndarray:
        return self._b

    @b.setter
    def b(self, value):
        self._b[...] = self._checked_parameter(value, self._b.shape, "b")

    def _checked_parameter(self, value, shape, name):
        value = as_float_array(value, name, self.dtype)
        if value.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {value.shape}")
        check_finite(np.ascontiguousarray(value), name)
        return value

    @property
    def n_in(self) -> int:
        return self._W.shape[0]

    @property
    def n_out(self) -> int:
        return self._W.shape[1]

    @property
    def activation_code(self) -> int:
        return ACTIVATIONS[self.activation]

    def use_buffers(self, W, b, dW, db):
        """Move this layer's parameters into `W`, `b` and keep its gradients in `dW`, `db`
        (views of a model's flat buffers, ``fusedmlp.layout``)."""
        W[...] = self._W
        b[...] = self._b
        self._W, self._b, self.dW, self.db = W, b, dW, db

    def forward(self, X: ArrayLike) -> np.ndarray:
        """``f(X @ W + b)`` for X of shape (batch, n_in); keeps X and the output for backward."""
        X = as_matrix(X, "X", self.dtype, self.n_in)
        check_finite(X, "X")
        out = np.empty((X.shape[0], self.n_out), self.dtype)
        _kernels.dense_forward(X, self._W, self._b, self.activation_code, out)
        self._X, self._A = X, out
        return out

    def backward(self, dA: ArrayLike) -> np.ndarray:
        """Given d(loss)/dA, set ``dW`` and ``db`` and return d(loss)/dX."""
        if self._A is None or self._X is None:
            raise RuntimeError("backward() needs a forward() call first")
        dA = as_matrix(dA, "dA", self.dtype, self.n_out)
        if dA.shape != self._A.shape:
            raise ValueError(f"dA must have shape {self._A.shape} (the last output), got {dA.shape}")
        check_finite(dA, "dA")
        dZ = np.empty_like(dA)                     # never written into the caller's dA
        dX = np.empty_like(self._X)
        scratch = np.empty(self.n_out, np.float64)
        _kernels.dense_backward(self._X, self._W, self._A, dA, self.activation_code,
                                dZ, self.dW, self.db, dX, scratch)
        return dX

    def __repr__(self):
        return (f"Dense({self.n_in}, {self.n_out}, activation={self.activation!r}, "
                f"dtype={self.dtype.name})")


class SoftmaxCrossEntropy:
    """Softmax and cross-entropy as one layer (the mean over the batch).

    ``forward(scores, y)`` takes integer labels (shape ``(batch,)``) or target probabilities
    (shape ``(batch, n_classes)``: finite, non-negative, each row summing to 1 within
    ``SOFT_TARGET_TOLERANCE`` = 1e-4, else ValueError) and returns the loss, computed from
    the scores by log-sum-exp; ``backward()`` returns ``(softmax(scores) - target) / batch``
    (weighted by ``sample_weight`` when given), computed in the same pass.
    """

    def forward(self, scores: ArrayLike, y: ArrayLike,
                sample_weight: Optional[ArrayLike] = None) -> float:
        scores = as_matrix(scores, "scores")
        check_finite(scores, "scores")
        m, n = scores.shape
        labels = targets = None
        if np.ndim(y) == 2:
            targets = as_matrix(y, "y", scores.dtype, n)
            check_distribution(targets, "y")
            rows = len(targets)
        else:
            labels = as_labels(y, "y", n)
            rows = len(labels)
        if rows != m:
            raise ValueError(f"y must have {m} rows (one per row of scores), got {np.shape(y)}")
        weights, total = as_sample_weight(sample_weight, m, scores.dtype)
        self.dscores = np.empty_like(scores)
        self.loss = _kernels.cross_entropy(scores, labels, targets, weights, total, self.dscores,
                                           np.empty(m))
        return self.loss

    def backward(self) -> np.ndarray:
        return self.dscores.copy()

    def __repr__(self):
        return "SoftmaxCrossEntropy()"


class MeanSquaredError:
    """Mean squared error over all elements, ``mean((pred - target)**2)`` (PyTorch's
    ``MSELoss``); ``backward()`` returns ``2 * (pred - target) / pred.size``."""

    def forward(self, pred: ArrayLike, target: ArrayLike,
                sample_weight: Optional[ArrayLike] = None) -> float:
        pred = as_matrix(pred, "pred")
        check_finite(pred, "pred")
        target = np.asarray(target)
        if target.ndim == 1 and pred.shape[1] == 1:
            target = target[:, None]
        target = as_matrix(target, "target", pred.dtype, pred.shape[1])
        check_finite(target, "target")
        if target.shape != pred.shape:
            raise ValueError(f"target must have shape {pred.shape}, got {target.shape}")
        weights, total = as_sample_weight(sample_weight, pred.shape[0], pred.dtype)
        self.dpred = np.empty_like(pred)
        self.loss = _kernels.squared_error(pred, target, weights, total, self.dpred)
        return self.loss

    def backward(self) -> np.ndarray:
        return self.dpred.copy()

    def __repr__(self):
        return "MeanSquaredError()"
