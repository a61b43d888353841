"""A float64 pure-NumPy reference of every compiled kernel.

Written from the maths, independently of csrc/ and src/fusedmlp/: every function here
converts its inputs to float64 and computes with plain NumPy expressions. Derivatives are
functions of the pre-activation ``z`` (the kernels compute them from the activation's output;
agreeing with this reference is what shows that the two forms are the same).
"""

import numpy as np

#: Slope of leaky relu for z < 0.
LEAKY_SLOPE = 0.01

#: Activation names in the order of their kernel codes (fusedmlp.ACTIVATIONS).
ACTIVATION_NAMES = ("identity", "relu", "sigmoid", "tanh", "step", "leaky_relu", "elu", "softplus")


def _f64(x):
    return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------- activations

def identity(z):
    return _f64(z).copy()


def identity_grad(z):
    return np.ones_like(_f64(z))


def relu(z):
    # np.maximum, not np.where(z > 0, ...): a NaN must stay NaN.
    return np.maximum(_f64(z), 0.0)


def relu_grad(z):
    # The derivative at 0 is taken as 0.
    return np.where(_f64(z) > 0, 1.0, 0.0)


def sigmoid(z):
    z = _f64(z)
    # exp of a non-positive number never overflows; e / (1 + e) keeps full relative
    # precision for very negative z (1 - 1 / (1 + e) would cancel).
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_grad(z):
    z = _f64(z)
    # sigmoid'(z) = e^-|z| / (1 + e^-|z|)^2, symmetric in z.
    e = np.exp(-np.abs(z))
    return e / (1.0 + e) ** 2


def tanh(z):
    return np.tanh(_f64(z))


def tanh_grad(z):
    # cosh overflows to inf for |z| > 710, where the derivative is 0 anyway.
    with np.errstate(over="ignore"):
        return 1.0 / np.cosh(_f64(z)) ** 2


def step(z):
    # heaviside(0, 0) = 0, and a NaN stays NaN.
    return np.heaviside(_f64(z), 0.0)


def step_grad(z):
    return np.zeros_like(_f64(z))


def leaky_relu(z):
    z = _f64(z)
    return np.where(z > 0, z, LEAKY_SLOPE * z)


def leaky_relu_grad(z):
    return np.where(_f64(z) > 0, 1.0, LEAKY_SLOPE)


def elu(z):
    z = _f64(z)
    return np.where(z > 0, z, np.expm1(np.minimum(z, 0.0)))


def elu_grad(z):
    z = _f64(z)
    return np.where(z > 0, 1.0, np.exp(np.minimum(z, 0.0)))


def softplus(z):
    with np.errstate(invalid="ignore"):          # NaN in, NaN out, quietly
        return np.logaddexp(0.0, _f64(z))


def softplus_grad(z):
    return sigmoid(z)


ACTIVATIONS = {name: globals()[name] for name in ACTIVATION_NAMES}
DERIVATIVES = {name: globals()[name + "_grad"] for name in ACTIVATION_NAMES}


# --------------------------------------------------------------------------- softmax

def softmax(z):
    """Row-wise softmax of a 2-D array."""
    z = _f64(z)
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(z):
    """Row-wise log-softmax of a 2-D array."""
    z = _f64(z)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# --------------------------------------------------------------------------- dense layer

def dense_forward(X, W, b, activation):
    """f(X @ W + b) and the pre-activation Z."""
    Z = _f64(X) @ _f64(W) + _f64(b)
    return ACTIVATIONS[activation](Z), Z


def dense_backward(X, W, b, dA, activation):
    """(dZ, dW, db, dX) for A = f(X @ W + b), given dA = d(loss)/dA."""
    X, W, dA = _f64(X), _f64(W), _f64(dA)
    Z = X @ W + _f64(b)
    dZ = dA * DERIVATIVES[activation](Z)
    return dZ, X.T @ dZ, dZ.sum(axis=0), dZ @ W.T


# --------------------------------------------------------------------------- losses

def _weights(m, weights):
    return np.ones(m) if weights is None else _f64(weights)


def cross_entropy(logits, labels=None, targets=None, weights=None):
    """Softmax cross-entropy from logits: (weighted mean loss, d(loss)/d(logits)).

    Give integer ``labels`` (shape (m,)) or probability ``targets`` (shape (m, n)).
    loss_i = -sum_j t_ij log softmax(z_i)_j; mean = sum_i w_i loss_i / sum w;
    gradient_i = (softmax(z_i) * sum_j t_ij - t_i) * w_i / sum w.
    """
    z = _f64(logits)
    m, n = z.shape
    if targets is None:
        targets = np.zeros((m, n))
        targets[np.arange(m), np.asarray(labels)] = 1.0
    t = _f64(targets)
    w = _weights(m, weights)
    log_p = log_softmax(z)
    # A zero target contributes 0 even where log p is -inf.
    per_row = -np.multiply(t, log_p, out=np.zeros_like(t), where=t != 0).sum(axis=1)
    scale = w / w.sum()
    grad = (softmax(z) * t.sum(axis=1, keepdims=True) - t) * scale[:, None]
    return float(np.sum(per_row * scale)), grad


def squared_error(pred, target, weights=None):
    """Mean over all elements of (pred - target)^2, rows weighted: (loss, d(loss)/d(pred)).

    loss = sum_i w_i sum_j d_ij^2 / (sum w * n); gradient = 2 w_i d_ij / (sum w * n).
    """
    d = _f64(pred) - _f64(target)
    m, n = d.shape
    w = _weights(m, weights)
    scale = w / (w.sum() * n)
    return float(np.sum((d ** 2).sum(axis=1) * scale)), 2.0 * d * scale[:, None]


def central_differences(loss, array, h):
    """d loss / d array by central differences, perturbing `array` in place."""
    grad = np.zeros_like(array)
    flat, grad_flat = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + h
        plus = loss()
        flat[i] = saved - h
        minus = loss()
        flat[i] = saved
        grad_flat[i] = (plus - minus) / (2 * h)
    return grad
