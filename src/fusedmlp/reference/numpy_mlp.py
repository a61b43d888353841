"""A pure-NumPy multilayer perceptron: the reference that fusedmlp is benchmarked against.

Written the way a careful NumPy user would write it, in the style of *Deep Learning from
Scratch*: one small class per operation, ``forward`` keeps what ``backward`` needs and
``backward`` is the chain rule in a line or two. It is careful where care is cheap --
a stable softmax-with-loss (log-sum-exp, never ``log(p + eps)``), a sigmoid that never
overflows, activation derivatives taken from the stored outputs, in-place optimiser updates,
no input gradient for the first layer -- and otherwise plain: every operation is one NumPy
call that allocates its result.

It calls none of fusedmlp's compiled kernels: only NumPy. Its conventions are fusedmlp's,
so both compute the same numbers (``tests/test_numpy_reference.py`` checks that):

- ``W`` has shape ``(n_in, n_out)`` and a layer computes ``f(X @ W + b)``;
- the loss is the mean over the batch: softmax cross-entropy from the logits
  (``logsumexp(z) - z[y]``) or mean squared error over all elements;
- the optimisers follow PyTorch's formulas; weight decay applies to weights, not biases.

Examples
--------
>>> import numpy as np
>>> from fusedmlp.reference import NumpyMLP, NumpyAdam
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(200, 4)).astype(np.float32); y = (X[:, 0] > 0).astype(int)
>>> model = NumpyMLP([4, 16, 2], seed=0)
>>> losses = model.fit(X, y, epochs=20, batch_size=20, optimizer=NumpyAdam(0.01), seed=0)
>>> bool((model.predict(X) == y).mean() > 0.9)
True
"""

from __future__ import annotations

import math

import numpy as np

from .._codes import LEAKY_RELU_SLOPE as LEAKY_SLOPE     # a constant, not a kernel

__all__ = ["NumpyMLP", "NumpySGD", "NumpyAdam", "Affine", "SoftmaxWithLoss",
           "MeanSquaredLoss", "ACTIVATION_LAYERS"]



# ---------------------------------------------------------------- layers
class Affine:
    """``out = x @ W + b``; ``backward`` sets ``dW``, ``db`` and returns ``dx`` (or None when
    the layer's input needs no gradient, as for the first layer)."""

    def __init__(self, W, b, *, input_gradient=True):
        self.W, self.b = W, b
        self.input_gradient = input_gradient
        self.x = self.dW = self.db = None

    def forward(self, x):
        self.x = x
        out = x @ self.W
        out += self.b
        return out

    def backward(self, dout):
        self.dW = self.x.T @ dout
        self.db = dout.sum(axis=0)
        return dout @ self.W.T if self.input_gradient else None


class Identity:
    def forward(self, x):
        return x

    def backward(self, dout):
        return dout


class Relu:
    # relu'(0) = 0, as in fusedmlp; the derivative is read from the output.
    def forward(self, x):
        self.out = np.maximum(x, 0, out=x)      # x is the Affine output: ours to overwrite
        return self.out

    def backward(self, dout):
        return dout * (self.out > 0)


class LeakyRelu:
    def forward(self, x):
        self.out = np.where(x > 0, x, LEAKY_SLOPE * x)
        return self.out

    def backward(self, dout):
        return np.where(self.out > 0, dout, LEAKY_SLOPE * dout)


def _sigmoid(x):
    # From exp(-|x|) <= 1, so nothing overflows: 1/(1+e) for x >= 0, e/(1+e) below.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


class Sigmoid:
    def forward(self, x):
        self.out = _sigmoid(x)
        return self.out

    def backward(self, dout):
        return dout * self.out * (1 - self.out)


class Tanh:
    def forward(self, x):
        self.out = np.tanh(x, out=x)
        return self.out

    def backward(self, dout):
        return dout * (1 - self.out * self.out)


class Elu:
    def forward(self, x):
        self.out = np.where(x > 0, x, np.expm1(np.minimum(x, 0)))
        return self.out

    def backward(self, dout):
        # a = e^z - 1 for z <= 0, so f'(z) = e^z = a + 1.
        return np.where(self.out > 0, dout, dout * (self.out + 1))


class Softplus:
    def forward(self, x):
        # log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow.
        self.out = np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))
        return self.out

    def backward(self, dout):
        # f'(z) = sigmoid(z) = 1 - e^-a with a = f(z).
        return dout * -np.expm1(-self.out)


class Step:
    # The derivative of the step is 0 everywhere: nothing below it learns.
    def forward(self, x):
        self.out = (x > 0).astype(x.dtype)
        return self.out

    def backward(self, dout):
        return np.zeros_like(dout)


#: Activation name -> layer class.
ACTIVATION_LAYERS = {
    "identity": Identity, "relu": Relu, "leaky_relu": LeakyRelu, "sigmoid": Sigmoid,
    "tanh": Tanh, "elu": Elu, "softplus": Softplus, "step": Step,
}


def _softmax(z):
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    e /= e.sum(axis=1, keepdims=True)
    return e


class SoftmaxWithLoss:
    """Softmax and mean cross-entropy as one layer.

    ``forward(z, y)`` takes integer labels ``(m,)`` or target probabilities ``(m, k)``; the
    loss is ``mean_i(logsumexp(z_i) - z_i . t_i)``, from the logits. ``backward()`` is
    ``(softmax(z) - t) / m``.
    """

    def forward(self, z, y):
        m = z.shape[0]
        shifted = z - z.max(axis=1, keepdims=True)     # the max subtracted: exp never overflows
        e = np.exp(shifted)
        sums = e.sum(axis=1, keepdims=True)
        log_sums = np.log(sums)
        if y.ndim == 1:
            rows = np.arange(m)
            loss = np.mean(log_sums[:, 0] - shifted[rows, y])
            self.dz = e / sums
            self.dz[rows, y] -= 1
        else:
            # minus the log-softmax dotted with the targets (which need not sum to one)
            target_sums = y.sum(axis=1, keepdims=True)
            loss = np.mean(log_sums[:, 0] * target_sums[:, 0] - (shifted * y).sum(axis=1))
            self.dz = e / sums * target_sums - y
        self.dz /= m
        return float(loss)

    def backward(self):
        return self.dz


class MeanSquaredLoss:
    """``mean((pred - target)**2)`` over all elements; ``backward()`` is
    ``2 * (pred - target) / pred.size``."""

    def forward(self, pred, target):
        self.diff = pred - target
        return float(np.mean(self.diff * self.diff))

    def backward(self):
        return self.diff * (2 / self.diff.size)


# ---------------------------------------------------------------- optimisers
class NumpySGD:
    """SGD with optional momentum (PyTorch's: ``v = momentum * v + g``, ``p -= lr * v``) and
    weight decay on the weights (``g = dW + weight_decay * W``)."""

    def __init__(self, lr=0.01, momentum=0.0, weight_decay=0.0):
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.velocity = None

    def update(self, params, grads):
        """Update ``params`` ([(W, b), ...]) in place from ``grads`` ([(dW, db), ...])."""
        if self.momentum and self.velocity is None:
            self.velocity = [(np.zeros_like(W), np.zeros_like(b)) for W, b in params]
        for i, ((W, b), (dW, db)) in enumerate(zip(params, grads)):
            if self.weight_decay:
                dW = dW + self.weight_decay * W
            if self.momentum:
                vW, vb = self.velocity[i]
                vW *= self.momentum
                vW += dW
                vb *= self.momentum
                vb += db
                dW, db = vW, vb
            W -= self.lr * dW
            b -= self.lr * db


class NumpyAdam:
    """Adam with PyTorch's formulas (bias-corrected moments, ``eps`` added after the square
    root) and L2 weight decay on the weights."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.weight_decay = weight_decay
        self.t = 0
        self.moments = None

    def update(self, params, grads):
        """Update ``params`` ([(W, b), ...]) in place from ``grads`` ([(dW, db), ...])."""
        if self.moments is None:
            self.moments = [[np.zeros_like(p) for p in (W, b, W, b)] for W, b in params]
        self.t += 1
        step_size = self.lr / (1 - self.beta1 ** self.t)
        # Python floats, so that float32 arrays stay float32 (NumPy 2 scalar promotion)
        root_correction = math.sqrt(1 - self.beta2 ** self.t)
        for (W, b), (dW, db), (mW, mb, vW, vb) in zip(params, grads, self.moments):
            if self.weight_decay:
                dW = dW + self.weight_decay * W
            for p, g, m, v in ((W, dW, mW, vW), (b, db, mb, vb)):
                m *= self.beta1
                m += (1 - self.beta1) * g
                v *= self.beta2
                v += (1 - self.beta2) * (g * g)
                p -= step_size * m / (np.sqrt(v) / root_correction + self.eps)


# ---------------------------------------------------------------- the model
def _initial_weights(n_in, n_out, activation, rng):
    # fusedmlp's "auto": He (normal) for relu-like activations, Glorot (uniform) otherwise.
    if activation in ("relu", "leaky_relu", "elu"):
        return rng.normal(0.0, np.sqrt(2.0 / n_in), size=(n_in, n_out))
    limit = np.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-limit, limit, size=(n_in, n_out))


class NumpyMLP:
    """A multilayer perceptron in pure NumPy, with fusedmlp's interface and conventions.

    Parameters
    ----------
    layer_sizes : sequence of int
        Widths from input to output, e.g. ``[784, 128, 10]``.
    activation : str or sequence of str
        The hidden layers' activation, or one per hidden layer (see ``ACTIVATION_LAYERS``).
    output : {"softmax", "identity"}
        Softmax cross-entropy on integer labels or target probabilities, or mean squared error.
    dtype : float32 or float64
    seed : int, numpy Generator or None
        Seeds the initial weights.

    Attributes
    ----------
    params : list of (W, b)
        The parameters in layer order, ``W`` of shape ``(n_in, n_out)``; updated in place.

    Examples
    --------
    >>> import numpy as np
    >>> from fusedmlp.reference import NumpyMLP, NumpySGD
    >>> model = NumpyMLP([3, 5, 2], seed=0)
    >>> loss, grads = model.loss_and_gradients(np.ones((4, 3)), [0, 1, 1, 0])
    >>> [dW.shape for dW, db in grads]
    [(3, 5), (5, 2)]
    """

    def __init__(self, layer_sizes, *, activation="relu", output="softmax", dtype=np.float32,
                 seed=None):
        sizes = [int(s) for s in layer_sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"layer_sizes must hold at least two positive widths, got {sizes}")
        n_hidden = len(sizes) - 2
        activations = [activation] * n_hidden if isinstance(activation, str) else list(activation)
        if len(activations) != n_hidden:
            raise ValueError(f"activation must be one name or {n_hidden} names, got {activations}")
        for name in activations:
            if name not in ACTIVATION_LAYERS:
                raise ValueError(f"activation must be one of {sorted(ACTIVATION_LAYERS)}, "
                                 f"got {name!r}")
        if output not in ("softmax", "identity"):
            raise ValueError(f"output must be 'softmax' or 'identity', got {output!r}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        self.layer_sizes = tuple(sizes)
        self.activations = activations
        self.output = output
        rng = np.random.default_rng(seed)
        self.params = []
        for n_in, n_out, name in zip(sizes[:-1], sizes[1:], activations + ["identity"]):
            W = _initial_weights(n_in, n_out, name, rng).astype(self.dtype)
            self.params.append((W, np.zeros(n_out, self.dtype)))
        self._build()

    def _build(self):
        self.affines = [Affine(W, b, input_gradient=i > 0) for i, (W, b) in enumerate(self.params)]
        self.nonlinearities = [ACTIVATION_LAYERS[a]() for a in self.activations]
        self.loss_layer = SoftmaxWithLoss() if self.output == "softmax" else MeanSquaredLoss()

    @classmethod
    def from_model(cls, model):
        """A NumpyMLP with the configuration and a copy of the weights of a ``fusedmlp.MLP``."""
        clone = cls(model.layer_sizes, activation=list(model.activations), output=model.output,
                    dtype=model.dtype)
        for (W, b), layer in zip(clone.params, model.layers):
            W[...] = layer.W
            b[...] = layer.b
        return clone

    def __repr__(self):
        return (f"NumpyMLP({list(self.layer_sizes)}, activation={self.activations!r}, "
                f"output={self.output!r}, dtype={self.dtype.name})")

    # ------------------------------------------------------------ inputs
    def _inputs(self, X):
        X = np.asarray(X, dtype=self.dtype)
        if X.ndim != 2 or X.shape[1] != self.layer_sizes[0]:
            raise ValueError(f"X must have shape (n_samples, {self.layer_sizes[0]}), "
                             f"got {X.shape}")
        return X

    def _targets(self, y):
        y = np.asarray(y)
        if self.output == "softmax" and y.ndim == 1:
            return y.astype(np.intp, copy=False)
        y = y.astype(self.dtype, copy=False)
        return y[:, None] if y.ndim == 1 else y

    # ------------------------------------------------------------ training
    def _forward_train(self, X):
        h = X
        for affine, nonlinearity in zip(self.affines, self.nonlinearities):
            h = nonlinearity.forward(affine.forward(h))
        return self.affines[-1].forward(h)

    def _backward(self):
        dout = self.loss_layer.backward()
        dout = self.affines[-1].backward(dout)
        for affine, nonlinearity in zip(self.affines[-2::-1], self.nonlinearities[::-1]):
            dout = affine.backward(nonlinearity.backward(dout))
        return [(affine.dW, affine.db) for affine in self.affines]

    def loss_and_gradients(self, X, y):
        """``(loss, [(dW, db), ...])`` for the batch, in layer order; no update."""
        X, y = self._inputs(X), self._targets(y)
        loss = self.loss_layer.forward(self._forward_train(X), y)
        return loss, self._backward()

    def train_step(self, X, y, optimizer) -> float:
        """One step of `optimizer` (NumpySGD or NumpyAdam) on (X, y); returns the loss
        before the step."""
        loss, grads = self.loss_and_gradients(X, y)
        optimizer.update(self.params, grads)
        return loss

    def fit(self, X, y, *, epochs, batch_size, optimizer, seed=None) -> list:
        """Mini-batch training with a fresh shuffle per epoch; returns each epoch's mean loss."""
        X, y = self._inputs(X), self._targets(y)
        rng = np.random.default_rng(seed)
        n = len(X)
        history = []
        for _ in range(epochs):
            order = rng.permutation(n)
            total = 0.0
            for start in range(0, n, batch_size):
                batch = order[start:start + batch_size]
                total += self.train_step(X[batch], y[batch], optimizer) * len(batch)
            history.append(total / n)
        return history

    # ------------------------------------------------------------ inference
    def forward(self, X):
        """Raw output scores (logits for ``output="softmax"``); keeps nothing for backward."""
        h = self._inputs(X)
        for (W, b), name in zip(self.params[:-1], self.activations):
            h = h @ W
            h += b
            if name == "relu":
                np.maximum(h, 0, out=h)
            elif name != "identity":
                h = ACTIVATION_LAYERS[name]().forward(h)
        W, b = self.params[-1]
        out = h @ W
        out += b
        return out

    def predict_proba(self, X):
        """Class probabilities (a stable softmax of the scores)."""
        return _softmax(self.forward(X))

    def predict(self, X):
        """Class indices for classification; outputs for regression (``(n,)`` for one)."""
        scores = self.forward(X)
        if self.output == "softmax":
            return scores.argmax(axis=1)
        return scores[:, 0] if scores.shape[1] == 1 else scores
