"""A float64 pure-NumPy reference of the whole MLP and of every optimiser update.

Written from the textbook formulas, independently of fusedmlp's kernels, so that the tests can
compare the compiled training step against it:

- activations and their derivatives are computed from the PRE-activation ``z`` (the kernels
  use the activation's output instead: a second route to the same numbers);
- losses are the weighted mean over the batch: softmax cross-entropy by log-sum-exp (integer
  labels or target probabilities) and mean squared error over all elements (PyTorch's
  ``MSELoss``);
- optimiser updates follow PyTorch's ``torch.optim`` documentation (dampening 0, centred
  RMSProp off, no AdaGrad lr decay), with one deliberate difference that fusedmlp documents:
  weight decay applies to the weights only, never to the biases. Gradient-norm clipping
  scales every gradient by ``clip / (norm + 1e-6)`` when the global norm exceeds ``clip``
  (``torch.nn.utils.clip_grad_norm_``), before weight decay is added.

Parameters are a list of ``(W, b)`` pairs in layer order, ``W`` of shape ``(n_in, n_out)``.
"""

from __future__ import annotations

import numpy as np

LEAKY_SLOPE = 0.01


def _sigmoid(z):
    # 1 / (1 + exp(-z)) without overflow warnings: exp(-|z|) is in (0, 1].
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


ACTIVATIONS = {
    # name: (f(z), f'(z))
    "identity": (lambda z: z, lambda z: np.ones_like(z)),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(z.dtype)),
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * (1.0 - _sigmoid(z))),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "step": (lambda z: (z > 0).astype(z.dtype), lambda z: np.zeros_like(z)),
    "leaky_relu": (lambda z: np.where(z > 0, z, LEAKY_SLOPE * z),
                   lambda z: np.where(z > 0, 1.0, LEAKY_SLOPE)),
    "elu": (lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))),
            lambda z: np.where(z > 0, 1.0, np.exp(np.minimum(z, 0.0)))),
    "softplus": (lambda z: np.logaddexp(0.0, z), _sigmoid),
}


def parameters_of(model):
    """The model's parameters as float64 ``[(W, b), ...]`` copies."""
    return [(layer.W.astype(np.float64), layer.b.astype(np.float64)) for layer in model.layers]


def activations_of(model):
    """One activation name per layer, the output layer's being ``"identity"``."""
    return [layer.activation for layer in model.layers]


def forward(params, activations, X):
    """Every layer's pre-activation and output: ``(zs, outputs)``; ``outputs[-1]`` are the
    raw scores when the last activation is ``"identity"``."""
    A = np.asarray(X, dtype=np.float64)
    zs, outputs = [], []
    for (W, b), name in zip(params, activations):
        Z = A @ W + b
        A = ACTIVATIONS[name][0](Z)
        zs.append(Z)
        outputs.append(A)
    return zs, outputs


def log_softmax(scores):
    shifted = scores - scores.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(scores):
    return np.exp(log_softmax(scores))


def loss_and_output_gradient(scores, y, output, sample_weight=None):
    """The weighted mean loss and its gradient with respect to the raw scores.

    ``output="softmax"``: cross-entropy with integer labels (1-D ``y``) or target
    probabilities (2-D ``y``); ``output="identity"``: mean squared error over all elements.
    """
    m, n = scores.shape
    w = np.ones(m) if sample_weight is None else np.asarray(sample_weight, np.float64)
    row_scale = w / w.sum()
    if output == "softmax":
        y = np.asarray(y)
        if y.ndim == 1:
            targets = np.zeros((m, n))
            targets[np.arange(m), y.astype(np.int64)] = 1.0
        else:
            targets = y.astype(np.float64)
        logp = log_softmax(scores)
        # -sum_j t_j log p_j; its derivative in z is softmax(z) * sum_j t_j - t
        per_row = -(targets * logp).sum(axis=1)
        dscores = (np.exp(logp) * targets.sum(axis=1, keepdims=True) - targets)
    elif output == "identity":
        targets = np.asarray(y, np.float64).reshape(m, n)
        diff = scores - targets
        per_row = (diff ** 2).sum(axis=1) / n
        dscores = 2.0 * diff / n
    else:
        raise ValueError(output)
    return float(per_row @ row_scale), dscores * row_scale[:, None]


def loss_and_gradients(params, activations, output, X, y, sample_weight=None):
    """``(loss, [(dW, db), ...])`` by the chain rule, float64."""
    X = np.asarray(X, dtype=np.float64)
    zs, outputs = forward(params, activations, X)
    loss, dA = loss_and_output_gradient(outputs[-1], y, output, sample_weight)
    grads = [None] * len(params)
    for layer in range(len(params) - 1, -1, -1):
        dZ = dA * ACTIVATIONS[activations[layer]][1](zs[layer])
        A_prev = X if layer == 0 else outputs[layer - 1]
        grads[layer] = (A_prev.T @ dZ, dZ.sum(axis=0))
        dA = dZ @ params[layer][0].T
    return loss, grads


def loss_only(params, activations, output, X, y, sample_weight=None):
    _, outputs = forward(params, activations, X)
    return loss_and_output_gradient(outputs[-1], y, output, sample_weight)[0]


# --------------------------------------------------------------------------- optimisers
class ReferenceOptimizer:
    """PyTorch's update rules over a list of ``(W, b)`` pairs, in float64.

    ``step(params, grads)`` returns new parameters; the state lives in the instance.
    Weight decay (L2 added to the gradient, or AdamW's decoupled decay) touches ``W`` only.
    """

    def __init__(self, kind, lr, *, momentum=0.0, nesterov=False, weight_decay=0.0,
                 beta1=0.9, beta2=0.999, alpha=0.99, eps=None, clip_norm=0.0):
        self.kind, self.lr, self.momentum, self.nesterov = kind, lr, momentum, nesterov
        self.weight_decay, self.beta1, self.beta2, self.alpha = weight_decay, beta1, beta2, alpha
        default_eps = {"adagrad": 1e-10}.get(kind, 1e-8)
        self.eps = default_eps if eps is None else eps
        self.clip_norm = clip_norm
        self.t = 0
        self.state = None

    def step(self, params, grads):
        self.t += 1
        flat_params = [p.astype(np.float64).copy() for pair in params for p in pair]
        flat_grads = [g.astype(np.float64) for pair in grads for g in pair]
        is_weight = [i % 2 == 0 for i in range(len(flat_params))]
        if self.clip_norm > 0:
            norm = np.sqrt(sum(float((g ** 2).sum()) for g in flat_grads))
            if norm > self.clip_norm:
                scale = self.clip_norm / (norm + 1e-6)
                flat_grads = [g * scale for g in flat_grads]
        if self.state is None:
            self.state = [{"a": np.zeros_like(p), "b": np.zeros_like(p)} for p in flat_params]
        new = [self._update(p, g, s, w)
               for p, g, s, w in zip(flat_params, flat_grads, self.state, is_weight)]
        return [(new[i], new[i + 1]) for i in range(0, len(new), 2)]

    def _update(self, p, g, state, is_weight):
        wd = self.weight_decay if is_weight else 0.0
        lr, t = self.lr, self.t
        if self.kind == "sgd":
            g = g + wd * p
            if self.momentum:
                # PyTorch: buf = g at the first step, then momentum * buf + g (the same
                # thing with a zero-initialised buffer)
                state["a"] = self.momentum * state["a"] + g
                g = g + self.momentum * state["a"] if self.nesterov else state["a"]
            return p - lr * g
        if self.kind in ("adam", "adamw"):
            if self.kind == "adamw":
                p = p * (1.0 - lr * wd)
            else:
                g = g + wd * p
            state["a"] = self.beta1 * state["a"] + (1 - self.beta1) * g
            state["b"] = self.beta2 * state["b"] + (1 - self.beta2) * g * g
            m_hat = state["a"] / (1 - self.beta1 ** t)
            v_hat = state["b"] / (1 - self.beta2 ** t)
            return p - lr * m_hat / (np.sqrt(v_hat) + self.eps)
        if self.kind == "rmsprop":
            g = g + wd * p
            state["a"] = self.alpha * state["a"] + (1 - self.alpha) * g * g
            return p - lr * g / (np.sqrt(state["a"]) + self.eps)
        if self.kind == "adagrad":
            g = g + wd * p
            state["a"] = state["a"] + g * g
            return p - lr * g / (np.sqrt(state["a"]) + self.eps)
        raise ValueError(self.kind)
