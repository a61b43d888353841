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
    that cancels to nearly zero keeps the absolute error of its terms). ``scale`` may be an
    array (one magnitude per element, e.g. ``abs(X) @ abs(W)``)."""
    expected = np.asarray(expected, dtype=np.float64)
    if scale is None:
        scale = float(np.max(np.abs(expected), initial=0.0))
    tol = rounding_tolerance(dtype, k)
    assert_within(got, expected, tol * (np.abs(expected) + scale))


#: Roundings of one parameter's update in one step (the gradient plus the decay, the state's
#: one or two moving averages, the bias corrections, the root, eps, the division, the learning
#: rate and the subtraction), and those each earlier step's state update leaves in the state
#: (two per average), in terms of rounding_tolerance's k.
STEP_TERMS, STATE_TERMS = 12, 4


def update_bound(make_reference, params, grads_so_far, dtype, n_params=0):
    """Per parameter, how far fusedmlp's update may lie from the reference optimiser's (a
    ``ReferenceOptimizer`` from ``make_reference()``, given the same gradients) after the steps
    whose gradients are ``grads_so_far`` (the last one applied to ``params``): the rounding
    tolerance of STEP_TERMS plus STATE_TERMS per earlier step (plus the global norm's
    ``n_params`` terms when clipping), relative to the magnitude of the terms: ``|p|`` plus
    the update the same rule makes of ``|p|`` and ``|g|`` (every term then adds: momentum
    buffers and first moments of ``|g|``; the second moments are the same)."""
    magnitude = make_reference()
    for grads in grads_so_far[:-1]:
        magnitude.step(params, [(np.abs(dW), np.abs(db)) for dW, db in grads])
    absolute = [(np.abs(W), np.abs(b)) for W, b in params]
    last = [(np.abs(dW), np.abs(db)) for dW, db in grads_so_far[-1]]
    after = magnitude.step(absolute, last)
    k = STEP_TERMS + STATE_TERMS * (len(grads_so_far) - 1) + n_params
    tol = rounding_tolerance(dtype, k)
    return [(tol * (2 * np.abs(W) - W_after), tol * (2 * np.abs(b) - b_after))
            for (W, b), (W_after, b_after) in zip(absolute, after)]


# --------------------------------------------------------------------------- exactness claims
#
# Two kinds of comparison, and nothing in between (docs/platforms.md, "Exactness claims"):
# - the same bits (assert_same_bits), only where fusedmlp owns every rounding or none happens;
# - within a bound derived from the arithmetic (rounding_tolerance and the running bounds
#   below), wherever a product's kernel is the BLAS's choice (by the shapes, the thread
#   count, the CPU, the variant) or the comparison is with this float64 oracle.

#: The reasons a bit-identity claim may give (assert_same_bits's ``why``): what makes the two
#: sides perform exactly the same roundings, or none.
SAME_CALL = "the same computation twice: the same calls on the same shapes and data"
COPY = "a copy: no arithmetic (serialisation, pickling, a reload, get/set, a view)"
OWN_KERNEL = "fusedmlp's own loop (elementwise kernel, update, mask) on the same inputs"
FIXED_SPLIT = "the same split into the same parts: the same products on the same blocks"
EXACT = "exact arithmetic: every sum and product of these values is representable"
UNTOUCHED = "nothing ran: a refused or empty call leaves the values as they were"
SAME_INPUT = "the same values reach the same kernel: only the input's layout or type differs"

_REASONS = (SAME_CALL, COPY, OWN_KERNEL, FIXED_SPLIT, EXACT, UNTOUCHED, SAME_INPUT)


def assert_same_bits(got, expected, why):
    """``got`` and ``expected`` are the same values, bit for bit (NaN where NaN), and ``why``
    is one of the reasons above, which says what makes the claim hold on every CPU.

    Never claimed across two products whose kernel the BLAS chooses (different shapes, a
    different thread count or split, another CPU or FUSEDMLP_ISA variant) nor against this
    float64 oracle: those compare within a derived bound (assert_within, assert_rounding_close).
    """
    if why not in _REASONS:
        raise ValueError(f"why must be one of oracle's reasons, got {why!r}")
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, (got.shape, expected.shape, why)
    np.testing.assert_array_equal(got, expected, err_msg=f"not the same bits, though {why}")


def assert_within(got, expected, bound, vacuous=1e-2):
    """``|got - expected| <= bound`` elementwise (``bound`` broadcasts), reporting the worst
    element; also that the bound can fail: at most ``vacuous`` times the largest
    ``|expected|``, so an error of that size in the largest element is caught."""
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), expected.shape)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    largest = float(np.max(np.abs(expected), initial=0.0))
    assert float(np.max(bound, initial=0.0)) <= vacuous * largest or largest == 0, (
        f"the bound {np.max(bound):.3g} is too loose to catch anything (largest value "
        f"{largest:.3g})")
    same = (got == expected) | (np.isnan(got) & np.isnan(expected))
    error = np.where(same, 0.0, np.abs(got - expected))
    bad = ~(error <= bound)
    if np.any(bad):
        worst = np.unravel_index(np.argmax(np.where(bad, error - bound, -np.inf)), error.shape)
        raise AssertionError(
            f"{int(bad.sum())} of {error.size} elements outside the rounding bound; worst at "
            f"{tuple(int(i) for i in worst)}: got {got[worst]!r}, expected {expected[worst]!r}, "
            f"|difference| {error[worst]:.3g} > bound {bound[worst]:.3g}")


#: What one elementwise pass adds to a chain (in terms of rounding_tolerance's k): its own
#: rounding, within 3 ulp for fusedmlp's vector exp, log and tanh (tests/test_vecmath.py), an
#: ulp being at most 2u, i.e. 3 terms of 2u.
ELEMENTWISE = 3

#: The activations whose derivative jumps at 0 (relu's 0/1, leaky relu's 0.01/1) or whose
#: value jumps (step's 0/1): where a pre-activation lies within its rounding bound of 0, the
#: two computations may sit on either side.
_KINKED_DERIVATIVE = {"relu": 1.0, "leaky_relu": 1 - LEAKY_SLOPE}


def forward_bound(params, activations, X, dtype):
    """``(zs, outputs, z_bounds, bounds)``: the float64 forward (as ``forward``) and, for
    every layer, how far a computation in ``dtype`` that rounds each sum in any order (any
    BLAS kernel, blocking or split) may lie from it, elementwise, to first order:

    - a layer's ``Z = A @ W + b`` sums ``n_in + 1`` terms: within ``rounding_tolerance(dtype,
      n_in + 1)`` of their magnitudes ``|A| @ |W| + |b|``, plus the error carried in from
      ``A`` times ``|W|``;
    - every activation has slope at most 1 (the error in ``Z`` passes at most once) and rounds
      within ``ELEMENTWISE`` terms of its output; step jumps at 0: where ``|Z|`` is within the
      bound of 0 its output may be 0 or 1 (bound 1).

    ``rounding_tolerance`` is the bound between two computations, so this is also the bound
    between fusedmlp's result and the float64 one (whose own error is far smaller or, in
    float64, one of the two)."""
    A = _f64(X)
    err = np.zeros_like(A)
    zs, outputs, z_bounds, bounds = [], [], [], []
    for (W, b), name in zip(params, activations):
        W, b = _f64(W), _f64(b)
        Z = A @ W + b
        z_err = err @ np.abs(W) + rounding_tolerance(dtype, W.shape[0] + 1) * (
            np.abs(A) @ np.abs(W) + np.abs(b))
        A = ACTIVATIONS[name](Z)
        err = z_err + rounding_tolerance(dtype, ELEMENTWISE) * np.abs(A)
        if name == "step":
            # (a z with no rounding at all, z_err == 0, is the same in every computation)
            err = np.where((np.abs(Z) <= z_err) & (z_err > 0), 1.0, 0.0)
        zs.append(Z)
        outputs.append(A)
        z_bounds.append(z_err)
        bounds.append(err)
    return zs, outputs, z_bounds, bounds


def softmax_bound(scores, score_bound, dtype):
    """``(proba, proba_bound, log_proba, log_bound)`` of the row-wise softmax of scores known
    to within ``score_bound``: softmax moves by at most the largest score error of its row
    (its Jacobian's rows sum to ``2 p (1 - p) <= 1/2`` in absolute value) and log-softmax by
    at most twice it (``2 (1 - p)``), plus their own rounding: the subtraction of the row's
    maximum (relative to the shifted score, in the exponential), the exponentials, the row's
    sum of ``n`` terms, the division or the log."""
    scores = _f64(scores)
    n = scores.shape[1]
    row = np.max(score_bound, axis=1, keepdims=True)
    proba, log_proba = softmax(scores), log_softmax(scores)
    own = rounding_tolerance(dtype, 2 * ELEMENTWISE + n)
    shifted = np.abs(scores - scores.max(axis=1, keepdims=True))
    # z - max(z) rounds to within u |z - max(z)|: the exponential moves by that relatively,
    # and the row's sum by at most its largest such term
    moved = rounding_tolerance(dtype, 1) * (shifted + shifted.max(axis=1, keepdims=True))
    # below the smallest normal number the roundings are absolute: the exponential within
    # ELEMENTWISE ulps of the subnormal spacing, the division within half of it
    underflow = (ELEMENTWISE + 1) * float(np.finfo(dtype).smallest_subnormal)
    return (proba, row + (own + moved) * proba + underflow, log_proba,
            2 * row + own * (np.abs(log_proba) + shifted + 1))


def loss_and_gradients_bound(params, activations, output, X, y, dtype, sample_weight=None):
    """``(loss, loss_bound, grads, grad_bounds)``: ``loss_and_gradients`` and how far a
    computation in ``dtype`` may lie from each part (elementwise for the gradients), to first
    order, carrying ``forward_bound``'s errors through the backward pass:

    - the output gradient (``g``: softmax minus targets, or the residual, each times its
      weight) moves by its slope in the scores times their error (softmax: at most the row's
      largest score error; identity: 2; sigmoid: 1/4; exp: ``exp(z)``) plus its own rounding;
    - ``dZ = dA * f'(Z)``: ``|f'| <= 1`` and ``|f''| <= 1`` for every activation, so the error
      is ``err(dA) + |dA| * err(Z)`` plus a rounding (``f'`` is computed from the rounded
      output, e.g. ``1 - A**2``: a few ulps of 1); where ``f'`` jumps (relu, leaky relu) and
      ``|Z|`` is within its bound of 0, ``|dA|`` times the jump;
    - ``dA = dZ @ W.T`` sums the fan-out, ``dW = A.T @ dZ`` and ``db`` the batch: each within
      ``rounding_tolerance`` of its terms' magnitudes, plus the errors carried in;
    - the loss: the row losses' slopes in the scores (at most 2 for log-softmax, 2 for squared
      error, 1 for binary cross-entropy, ``exp(z) + t`` for Poisson) times the score errors,
      plus the rounding of the weighted mean over the batch."""
    X = _f64(X)
    zs, outputs, z_bounds, a_bounds = forward_bound(params, activations, X, dtype)
    loss, loss_err, g, g_err = output_bound(outputs[-1], y, output, dtype, sample_weight,
                                            a_bounds[-1])
    m = len(X)
    grads = [None] * len(params)
    bounds = [None] * len(params)
    dA, dA_err = g, g_err
    for layer in range(len(params) - 1, -1, -1):
        A_prev = X if layer == 0 else outputs[layer - 1]
        a_err = np.zeros_like(X) if layer == 0 else a_bounds[layer - 1]
        dW, db, dA, dW_err, db_err, dA_err = _backward_bound(
            A_prev, a_err, params[layer][0], zs[layer], z_bounds[layer], activations[layer],
            dA, dA_err, dtype)
        grads[layer], bounds[layer] = (dW, db), (dW_err, db_err)
    return loss, loss_err, grads, bounds


def output_bound(scores, y, output, dtype, sample_weight=None, score_bound=None):
    """``(loss, loss_bound, g, g_bound)``: ``loss_and_output_gradient`` and how far a
    computation in ``dtype`` may lie from the loss and (elementwise) from its gradient ``g``
    in the scores, the scores being known to within ``score_bound`` (default: exact), as
    loss_and_gradients_bound explains."""
    scores = _f64(scores)
    s_err = np.zeros_like(scores) if score_bound is None else _f64(score_bound)
    m, n = scores.shape
    loss, g = loss_and_output_gradient(scores, y, output, sample_weight)
    w = _weights(m, sample_weight)
    row_weight = (w / w.sum())[:, None]
    target = None if output == "softmax" else _f64(np.asarray(y)).reshape(scores.shape)
    if output == "softmax":
        yy = np.asarray(y)
        t = np.eye(n)[yy.astype(np.int64)] if yy.ndim == 1 else _f64(yy)
        t_sum = t.sum(axis=1, keepdims=True)
        # g = (p * sum(t) - t) * w / sum(w): p moves by at most the row's largest score error
        g_err = np.max(s_err, axis=1, keepdims=True) * t_sum * row_weight
        parts = (softmax(scores) * t_sum + np.abs(t)) * row_weight
        row_slope = 2 * t_sum                      # sum_j t_j |d log p_j / d z| <= 2 sum t
    else:
        # g = slope-part * w / (sum(w) n): 2 (z - t), sigmoid(z) - t, exp(z) - t
        value = {"identity": np.abs(scores), "sigmoid": sigmoid(scores),
                 "exp": np.exp(scores)}[output]
        g_slope = {"identity": 2.0, "sigmoid": 0.25, "exp": np.exp(scores)}[output]
        g_err = g_slope * s_err * row_weight / n
        parts = (1 + (output == "identity")) * (value + np.abs(target)) * row_weight / n
        row_slope = {"identity": 2 * np.abs(scores - target), "sigmoid": 1.0,
                     "exp": np.exp(scores) + np.abs(target)}[output] / n
    # its own rounding: the exponentials and the row's sum (softmax), the weights' rounding
    # to dtype and their sum over the batch, the subtraction and the scaling
    g_err = g_err + rounding_tolerance(dtype, 2 * ELEMENTWISE + n + m + 3) * parts
    loss_err = float(np.sum(row_weight * np.sum(row_slope * s_err, axis=1, keepdims=True)))
    loss_err += rounding_tolerance(dtype, 2 * m + n + 2 * ELEMENTWISE + 2) * float(
        np.sum(row_weight * np.abs(_per_row_loss_magnitude(scores, y, output))))
    return loss, loss_err, g, g_err


def _backward_bound(A_prev, a_err, W, Z, z_err, name, dA, dA_err, dtype):
    """One layer's backward pass and its bounds (loss_and_gradients_bound's list)."""
    W = _f64(W)
    m = len(A_prev)
    fprime = DERIVATIVES[name](Z)
    dZ = dA * fprime
    dZ_err = dA_err * np.abs(fprime) + np.abs(dA) * (
        z_err + rounding_tolerance(dtype, 2 * ELEMENTWISE) * (np.abs(fprime) + 1))
    if name in _KINKED_DERIVATIVE:
        dZ_err = dZ_err + np.where((np.abs(Z) <= z_err) & (z_err > 0),
                                   _KINKED_DERIVATIVE[name] * np.abs(dA), 0.0)
    tol_m = rounding_tolerance(dtype, m)
    dW_err = (np.abs(A_prev).T @ dZ_err + a_err.T @ np.abs(dZ)
              + tol_m * (np.abs(A_prev).T @ np.abs(dZ)))
    db_err = dZ_err.sum(axis=0) + tol_m * np.abs(dZ).sum(axis=0)
    dA_prev_err = dZ_err @ np.abs(W).T + rounding_tolerance(dtype, W.shape[1]) * (
        np.abs(dZ) @ np.abs(W).T)
    return A_prev.T @ dZ, dZ.sum(axis=0), dZ @ W.T, dW_err, db_err, dA_prev_err


def dense_backward_bound(X, W, b, dA, activation, dtype):
    """``((dW, db, dX), (dW_bound, db_bound, dX_bound))``: ``dense_backward`` of one layer for
    an exact ``dA`` and how far a computation in ``dtype`` may lie from each part
    (``loss_and_gradients_bound``'s backward step, after ``forward_bound``'s forward)."""
    X = _f64(X)
    zs, _, z_bounds, _ = forward_bound([(W, b)], [activation], X, dtype)
    dA = _f64(dA)
    dW, db, dX, dW_err, db_err, dX_err = _backward_bound(
        X, np.zeros_like(X), W, zs[0], z_bounds[0], activation, dA, np.zeros_like(dA), dtype)
    return (dW, db, dX), (dW_err, db_err, dX_err)


def _per_row_loss_magnitude(scores, y, output):
    """Each row's loss terms' magnitudes (the mean's terms), for the loss's rounding bound."""
    scores = _f64(scores)
    if output == "softmax":
        yy = np.asarray(y)
        t = np.eye(scores.shape[1])[yy.astype(np.int64)] if yy.ndim == 1 else _f64(yy)
        return np.sum(np.abs(t) * (np.abs(log_softmax(scores)) + np.abs(scores)), axis=1,
                      keepdims=True) + np.abs(scores).max(axis=1, keepdims=True)
    target = _f64(np.asarray(y)).reshape(scores.shape)
    if output == "identity":
        return np.sum((scores - target) ** 2, axis=1, keepdims=True)
    if output == "sigmoid":
        return np.sum(np.abs(scores) + np.logaddexp(0, -np.abs(scores)) + 1, axis=1,
                      keepdims=True)
    return np.sum(np.exp(scores) + np.abs(target * scores) + np.abs(target) * (
        1 + np.abs(np.log(np.where(target > 0, target, 1)))), axis=1, keepdims=True)


def assert_labels_agree(got, expected, scores, score_bound, at_least=0.9):
    """Two computations' labels (argmax of the scores) agree on every row whose top two
    scores lie further apart than their rounding bounds (``forward_bound``): only those rows'
    labels are determined; a near tie may go either way. At least ``at_least`` of the rows
    must be determined, so the comparison can fail."""
    determined = determined_rows(scores, score_bound)
    assert determined.mean() >= at_least, (
        f"only {determined.mean():.0%} of the rows' labels are determined")
    np.testing.assert_array_equal(np.asarray(got)[determined], np.asarray(expected)[determined])


def determined_rows(scores, score_bound):
    """The rows whose label (argmax) is the same in every computation within the bounds:
    their top two scores lie further apart than the sum of their bounds."""
    scores, score_bound = _f64(scores), _f64(score_bound)
    order = np.argsort(scores, axis=1)
    rows = np.arange(len(scores))
    top, second = order[:, -1], order[:, -2]
    margin = scores[rows, top] - scores[rows, second]
    return margin > score_bound[rows, top] + score_bound[rows, second]


# --------------------------------------------------------------------------- a model's outputs
def _dense(X):
    """X as a float64 ndarray (a scipy.sparse matrix or array densified)."""
    return _f64(X.toarray() if hasattr(X, "toarray") else X)


class Outputs:
    """Every inference result a model with these parameters gives on ``X``, in float64, and
    how far a computation in ``dtype`` may lie from each (forward_bound's scores carried
    through the output: softmax_bound; the logistic's slope 1/4 and log-sigmoid's 1; exp's
    ``exp(z)``; plus each one's own rounding). ``check(name, got)`` asserts one result
    within its bound: "forward", "predict_proba", "predict_log_proba", "predict" (labels
    and 0/1 indicators only where determined), "loss" and "score" (accuracy: off by at
    most the undetermined rows' share; R^2: by the residuals' bound)."""

    def __init__(self, params, activations, output, X, dtype):
        self.params, self.activations, self.output = params, activations, output
        self.dtype = np.dtype(dtype)
        # the values the model sees: X rounded to its dtype
        self.X = _dense(X).astype(self.dtype).astype(np.float64)
        _, outputs, _, bounds = forward_bound(params, activations, self.X, self.dtype)
        self.scores, self.score_bound = outputs[-1], bounds[-1]
        own = rounding_tolerance(self.dtype, 2 * ELEMENTWISE + 2)
        s, e = self.scores, self.score_bound
        if output == "softmax":
            self.proba, self.proba_bound, self.log_proba, self.log_bound = softmax_bound(
                s, e, self.dtype)
        elif output == "sigmoid":
            self.proba = sigmoid(s)
            self.proba_bound = e / 4 + own * self.proba
            self.log_proba = -np.logaddexp(0, -s)
            self.log_bound = e + own * (np.abs(self.log_proba) + np.abs(s) + 1)
        elif output == "exp":
            # exp(z + d) - exp(z) <= exp(z) d (1 + d) for d <= 1: first order plus its square
            self.proba = np.exp(s)
            self.proba_bound = self.proba * (e * (1 + e) + own)

    @classmethod
    def of(cls, model, X):
        """For a fusedmlp.MLP (or anything with its ``layers``, ``output`` and ``dtype``)."""
        return cls(parameters_of(model), activations_of(model), model.output, X, model.dtype)

    def determined(self):
        """Per row, whether every computation within the bounds gives the same label (softmax:
        the top two scores further apart than their bounds; sigmoid: every score further
        from 0 than its bound)."""
        if self.output == "softmax":
            return determined_rows(self.scores, self.score_bound)
        return np.all(np.abs(self.scores) > self.score_bound, axis=1)

    def labels(self):
        if self.output == "softmax":
            return np.argmax(self.scores, axis=1)
        return (self.scores > 0).astype(np.int64)

    def predictions(self):
        """What predict returns, in float64 (labels, indicators or values), and its bound."""
        if self.output in ("softmax", "sigmoid"):
            return self.labels(), None
        if self.output == "identity":
            return self.scores, self.score_bound
        return self.proba, self.proba_bound

    def check(self, name, got, y=None, sample_weight=None, at_least=0.9):
        got = np.asarray(got)
        if name == "forward":
            assert_within(got, self.scores, self.score_bound)
        elif name == "predict_proba":
            assert_within(got, self.proba, self.proba_bound)
        elif name == "predict_log_proba":
            assert_within(got, self.log_proba, self.log_bound)
        elif name == "predict":
            expected, bound = self.predictions()
            if bound is None:
                determined = self.determined()
                assert determined.mean() >= at_least, (
                    f"only {determined.mean():.0%} of the rows' labels are determined")
                got = got.reshape(len(expected), -1)[:, 0] if self.output == "softmax" else (
                    got.reshape(expected.shape))
                np.testing.assert_array_equal(got[determined], expected[determined])
            else:
                assert_within(got.reshape(expected.shape), expected, bound)
        elif name == "loss":
            expected, loss_bound, _, _ = loss_and_gradients_bound(
                self.params, self.activations, self.output, self.X, y, self.dtype,
                sample_weight)
            assert_within(got, expected, loss_bound)
        elif name == "score":
            assert abs(float(got) - self._score(y)) <= self._score_bound(y), (
                f"score {float(got)!r}, expected {self._score(y)!r} within "
                f"{self._score_bound(y):.3g}")
        else:
            raise ValueError(f"no bound for {name!r}")

    def _targets(self, y):
        return _f64(np.asarray(y)).reshape(len(self.scores), -1)

    def _score(self, y):
        pred, _ = self.predictions()
        if self.output == "softmax":
            yy = np.asarray(y)
            labels = yy if yy.ndim == 1 else np.argmax(yy, axis=1)
            return float(np.mean(pred == labels))
        if self.output == "sigmoid":
            return float(np.mean(np.all(pred == (self._targets(y) > 0.5), axis=1)))
        t = self._targets(y)
        return float(1 - ((t - pred) ** 2).sum() / ((t - t.mean(axis=0)) ** 2).sum())

    def _score_bound(self, y):
        if self.output in ("softmax", "sigmoid"):
            # a row's label may differ only where it is not determined
            return float(np.mean(~self.determined())) + rounding_tolerance(np.float64,
                                                                           len(self.scores))
        pred, bound = self.predictions()
        t = self._targets(y)
        residual, total = np.abs(t - pred), ((t - t.mean(axis=0)) ** 2).sum()
        # R^2 = 1 - sum r^2 / total: each residual moves by its prediction's bound, and
        # both sums (float64, over every element) round
        moved = float(np.sum(2 * residual * bound + bound ** 2))
        return (moved + rounding_tolerance(np.float64, 2 * t.size + 4)
                * float(np.sum(residual ** 2) + total)) / total


# --------------------------------------------------------------------------- bfloat16 compute
#: bfloat16's unit roundoff (8 significant bits): one step is at most 2 BF16_U relatively.
BF16_U = 2.0 ** -8


def bf16_round(x):
    """float32 -> nearest bfloat16 (ties to even), as float32."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def bf16_forward_bound(params, activations, X):
    """``(scores, score_bound)`` of a ``compute_dtype="bfloat16"`` forward: each product's
    operands (the layer's input and ``W``) rounded to bfloat16, their products exact in
    float32 and summed in float32 in any order, the float32 bias added. The sums are bounded
    as in forward_bound; a layer's input is rounded to bfloat16 from float32 values that two
    computations know only to within their bound: they round to the same bfloat16 unless a
    rounding boundary lies within that bound, and there they may be one bfloat16 step apart
    (at most 2 BF16_U relatively); X itself (no error) rounds the same in both."""
    A = _f64(bf16_round(np.asarray(X, np.float32)))
    err = np.zeros_like(A)
    for layer, ((W, b), name) in enumerate(zip(params, activations)):
        Wb = _f64(bf16_round(np.asarray(W, np.float32)))
        b = _f64(np.asarray(b, np.float32))
        Z = A @ Wb + b
        z_err = err @ np.abs(Wb) + rounding_tolerance(np.float32, Wb.shape[0] + 1) * (
            np.abs(A) @ np.abs(Wb) + np.abs(b))
        if layer == len(params) - 1:
            return Z, z_err
        out = ACTIVATIONS[name](Z)
        err = z_err + rounding_tolerance(np.float32, ELEMENTWISE) * np.abs(out)
        if name == "step":
            err = np.where((np.abs(Z) <= z_err) & (z_err > 0), 1.0, 0.0)
        # every computation's float32 output lies in [out - err, out + err]: they round to
        # the same bfloat16 unless a rounding boundary lies in it (then one step apart)
        lo = np.nextafter((out - err).astype(np.float32), np.float32(-np.inf))
        hi = np.nextafter((out + err).astype(np.float32), np.float32(np.inf))
        A = _f64(bf16_round(out.astype(np.float32)))
        err = np.abs(_f64(bf16_round(hi)) - _f64(bf16_round(lo)))
