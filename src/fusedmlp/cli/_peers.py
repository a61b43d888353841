"""The benchmarks' competitors, built one way: the same MLP (ReLU hidden layers, a linear
output, He-normal weights for JAX) and the same Adam (PyTorch's formulas, lr 1e-3) in every
table that runs PyTorch or JAX; a fusedmlp model's forward pass in NumPy by hand and in
onnxruntime (one thread); and the FLOPs of that MLP's calls, every table's hardware floor.
Imported only when a benchmark runs them: torch, jax and onnxruntime are imported inside the
functions.
"""

from __future__ import annotations

__all__ = ["torch_mlp", "jax_mlp", "jax_cross_entropy", "jax_adam", "numpy_predict_proba",
           "onnxruntime_predict_proba", "mlp_flops"]


def torch_mlp(sizes, dtype=None):
    """``nn.Sequential`` of Linear layers with ReLU between them (seeded: the same weights
    every call), in `dtype` (a torch dtype; float32 by default)."""
    import torch

    torch.manual_seed(0)
    layers = []
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(sizes[-2], sizes[-1]))
    model = torch.nn.Sequential(*layers)
    return model.to(dtype) if dtype is not None else model


def jax_mlp(sizes, seed=0):
    """(params, Adam state) of an MLP for :func:`jax_cross_entropy` and :func:`jax_adam`:
    params a list of (W, b), float32, W He-normal; the state (m, v, step count) zeros."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(seed)
    params = [(jnp.asarray(rng.normal(0, np.sqrt(2 / n_in), (n_in, n_out)).astype(np.float32)),
               jnp.zeros(n_out, jnp.float32)) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    return params, (zeros, jax.tree_util.tree_map(jnp.zeros_like, params), jnp.zeros(()))


def jax_cross_entropy(params, x, labels):
    """Mean softmax cross-entropy of the MLP `params` on rows x with integer labels."""
    import jax
    import jax.numpy as jnp

    for W, b in params[:-1]:
        x = jax.nn.relu(x @ W + b)
    z = x @ params[-1][0] + params[-1][1]
    return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, labels[:, None], 1)[:, 0])


def jax_adam(params, state, x, labels, lr=1e-3):
    """One Adam step (PyTorch's formulas) of :func:`jax_cross_entropy` on (x, labels):
    returns (params, state, loss). Meant to run inside ``jax.jit``."""
    import jax
    import jax.numpy as jnp

    m, v, t = state
    loss, grads = jax.value_and_grad(jax_cross_entropy)(params, x, labels)
    t = t + 1
    m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, grads)
    v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, grads)
    scale = lr * jnp.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
    params = jax.tree_util.tree_map(lambda p, m, v: p - scale * m / (jnp.sqrt(v) + 1e-8),
                                    params, m, v)
    return params, (m, v, t), loss


def numpy_predict_proba(model, X):
    """A call computing `model`'s (ReLU, softmax output) predict_proba of X with NumPy by hand:
    the forward pass a user would otherwise write (copies of the weights)."""
    import numpy as np

    params = [(layer.W.copy(), layer.b.copy()) for layer in model.layers]

    def predict_proba():
        a = X
        for W, b in params[:-1]:
            a = np.maximum(a @ W + b, 0)
        z = a @ params[-1][0] + params[-1][1]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return predict_proba


def onnxruntime_predict_proba(model, X):
    """A call of onnxruntime (one intra-op and one inter-op thread, CPU) on `model`'s ONNX
    export, returning the probabilities of X. ImportError without onnxruntime."""
    import os
    import tempfile

    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.onnx")
        model.to_onnx(path)
        session = onnxruntime.InferenceSession(path, options,
                                               providers=["CPUExecutionProvider"])
    feed, wanted = {session.get_inputs()[0].name: X}, ["probabilities"]
    return lambda: session.run(wanted, feed)[0]


def mlp_flops(sizes, rows, step=True):
    """Floating-point operations of one call of the MLP `sizes` on `rows` rows: the forward
    products (inference), and for a training step also dW of every layer and dA of every
    layer but the first (2 per multiply-add; the elementwise passes are not counted)."""
    weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    if not step:
        return 2.0 * rows * weights
    return 2.0 * rows * (3 * weights - sizes[0] * sizes[1])
