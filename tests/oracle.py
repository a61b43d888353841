"""The float64 test oracle: a pure-NumPy reference of every compiled kernel, of the whole MLP
and of every optimiser update.

Written from the maths and the textbook formulas, independently of csrc/ and src/fusedmlp/:
every function converts its inputs to float64 and computes with plain NumPy expressions.

- Derivatives are functions of the PRE-activation ``z`` (the kernels compute them from the
  activation's output; agreeing with this oracle is what shows the two forms are the same).
- Losses are the weighted mean over the batch: softmax cross-entropy by log-sum-exp (integer
  labels or target probabilities) and mean squared error over all elements (PyTorch's
  ``MSELoss``).
- Optimiser updates follow PyTorch's ``torch.optim`` documentation (dampening 0, centred
  RMSProp off, no AdaGrad lr decay), with one deliberate difference that fusedmlp documents:
  weight decay applies to the weights only, never to the biases. Gradient-norm clipping
  scales every gradient by ``clip / (norm + 1e-6)`` when the global norm exceeds ``clip``
  (``torch.nn.utils.clip_grad_norm_``), before weight decay is added.

Model parameters are a list of ``(W, b)`` pairs in layer order, ``W`` of shape
``(n_in, n_out)``.
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


def binary_cross_entropy(logits, target, weights=None):
    """Mean over all elements of -t log p - (1 - t) log(1 - p), p = 1 / (1 + exp(-z)), rows
    weighted, by np.logaddexp: (loss, d(loss)/dz = (p - t) w_i / (sum w * n))."""
    z, t = _f64(logits), _f64(target)
    m, n = z.shape
    w = _weights(m, weights)
    scale = w / (w.sum() * n)
    per_element = t * np.logaddexp(0, -z) + (1 - t) * np.logaddexp(0, z)
    return (float(np.sum(per_element.sum(axis=1) * scale)),
            (1 / (1 + np.exp(-z)) - t) * scale[:, None])


def poisson_deviance(log_mean, target, weights=None):
    """Mean over all elements of the half Poisson deviance mu - t log mu + t log t - t,
    mu = exp(z), rows weighted: (loss, d(loss)/dz = (mu - t) w_i / (sum w * n))."""
    z, t = _f64(log_mean), _f64(target)
    m, n = z.shape
    w = _weights(m, weights)
    scale = w / (w.sum() * n)
    mu = np.exp(z)
    t_log_t = np.where(t > 0, t * np.log(np.where(t > 0, t, 1)), 0)
    per_element = mu - t * z + t_log_t - t
    return float(np.sum(per_element.sum(axis=1) * scale)), (mu - t) * scale[:, None]


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


# --------------------------------------------------------------------------- the whole MLP

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
        A = ACTIVATIONS[name](Z)
        zs.append(Z)
        outputs.append(A)
    return zs, outputs


def loss_and_output_gradient(scores, y, output, sample_weight=None):
    """The weighted mean loss and its gradient with respect to the raw scores.

    ``output="softmax"``: cross-entropy with integer labels (1-D ``y``) or target
    probabilities (2-D ``y``); ``output="identity"``: mean squared error over all elements;
    ``"sigmoid"``: binary cross-entropy; ``"exp"``: half Poisson deviance of exp(scores).
    """
    if output == "softmax":
        y = np.asarray(y)
        if y.ndim == 1:
            return cross_entropy(scores, labels=y.astype(np.int64), weights=sample_weight)
        return cross_entropy(scores, targets=y, weights=sample_weight)
    if output == "identity":
        target = np.asarray(y, np.float64).reshape(np.shape(scores))
        return squared_error(scores, target, sample_weight)
    if output in ("sigmoid", "exp"):
        target = np.asarray(y, np.float64).reshape(np.shape(scores))
        loss = binary_cross_entropy if output == "sigmoid" else poisson_deviance
        return loss(scores, target, sample_weight)
    raise ValueError(output)


def loss_and_gradients(params, activations, output, X, y, sample_weight=None):
    """``(loss, [(dW, db), ...])`` by the chain rule, float64."""
    X = np.asarray(X, dtype=np.float64)
    zs, outputs = forward(params, activations, X)
    loss, dA = loss_and_output_gradient(outputs[-1], y, output, sample_weight)
    grads = [None] * len(params)
    for layer in range(len(params) - 1, -1, -1):
        dZ = dA * DERIVATIVES[activations[layer]](zs[layer])
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


# --------------------------------------------------------------------------- rounding

def rounding_tolerance(dtype, k):
    """How far apart (relatively) two computations of one sum of ``k`` products may lie when
    they add in different orders: another BLAS kernel or blocking (the BLAS picks them by
    the matrix sizes, the thread count and the CPU), another split of a step into parts.

    Either is within ``gamma_k = k u / (1 - k u)`` of the exact sum, relative to the sum of
    the absolute values of its terms, whatever the order of the additions and whether they
    are fused (``u = eps / 2``, the unit roundoff of ``dtype``; the standard bound of
    floating-point summation, e.g. Higham, *Accuracy and Stability of Numerical Algorithms*,
    2nd ed., section 3.1); so the two lie within ``2 gamma_k`` of each other. Where a result
    passes through a chain of such sums (a layer's output is the next layer's input, a step's
    parameters the next step's), ``k`` is the chain's total length: to first order the
    relative errors add (activations' slopes are at most 1, softmax and the loss are
    1-Lipschitz in the scores). The elementwise passes' own roundings (a few ulps each) are
    covered by the same sum: each is one more term of the chain. This is a bound, not a fit
    to what some CPU gives: a test that uses it holds on every CPU.
    """
    u = float(np.finfo(dtype).eps) / 2
    if not k * u < 0.5:
        raise ValueError(f"k = {k} is too long a chain for a rounding bound in {np.dtype(dtype)}")
    return 2 * k * u / (1 - k * u)


def step_chain(sizes, batch, steps=1):
    """``k`` of ``rounding_tolerance`` for the parameters after ``steps`` SGD steps of an MLP
    of layer widths ``sizes`` on batches of ``batch`` rows: each step's longest chain of sums
    is forward through every layer (the fan-ins, ``sizes[:-1]``), backward through every
    layer but the first (``dA`` of layer l sums over the fan-out, ``sizes[2:]``) and the sum
    over the batch of ``dW``, ``db``; the steps' errors add (SGD's update is linear in the
    gradient, and at these learning rates an earlier step's error is not amplified). Adaptive
    optimisers (Adam, RMSProp, AdaGrad) divide by the root of the gradient's square: a
    gradient within rounding of zero can move its weight by a whole learning rate, so no
    bound of this kind holds for them across different roundings."""
    return steps * (sum(sizes[:-1]) + sum(sizes[2:]) + batch)


def assert_rounding_close(got, expected, dtype, k, scale=None):
    """``got`` and ``expected`` agree to ``rounding_tolerance(dtype, k)`` relative to
    ``scale``, the magnitude of the terms summed (default: the largest ``|expected|``): the
    bound is relative to the sum of the terms' absolute values, not to each result (a sum
    that cancels to nearly zero keeps the absolute error of its terms)."""
    expected = np.asarray(expected, dtype=np.float64)
    if scale is None:
        scale = float(np.max(np.abs(expected), initial=0.0))
    tol = rounding_tolerance(dtype, k)
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), expected, rtol=tol,
                               atol=tol * scale)
