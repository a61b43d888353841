"""Finite-difference check of a model's gradients."""

from __future__ import annotations

import numpy as np

from . import sparse

__all__ = ["gradient_check"]


def gradient_check(model, X, y, *, eps=1e-6, max_checks_per_layer=None, seed=0):
    """Relative error between ``model.loss_and_gradients`` and central differences.

    The check runs on a float64 copy of the model (the model itself is not changed):
    for each checked parameter p, ``(loss(p + eps) - loss(p - eps)) / (2 eps)``. With
    dropout the loss is that of ``loss_and_gradients`` (the training loss, whose masks are
    fixed until the next update), otherwise ``model.loss``. A scipy.sparse `X` goes through
    the sparse first layer, as in training. Returns one
    relative error per layer, ``|g - g_num| / max(|g| + |g_num|, tiny)`` over that layer's W
    and b together; values below ~1e-6 mean the gradients are right.

    Parameters
    ----------
    max_checks_per_layer : int, optional
        Check only this many randomly chosen parameters per layer (all by default).

    Examples
    --------
    >>> import numpy as np, fusedmlp
    >>> model = fusedmlp.MLP([3, 4, 2], activation="tanh", seed=0)
    >>> X, y = np.random.default_rng(0).normal(size=(5, 3)), np.array([0, 1, 1, 0, 1])
    >>> max(fusedmlp.gradient_check(model, X, y)) < 1e-6
    True
    """
    clone = model.astype(np.float64)
    if sparse.is_sparse(X):             # checked once; the sparse first layer is checked
        X = sparse.as_csr(X, "X", np.dtype(np.float64), clone.n_features)
    else:
        X = np.asarray(X, dtype=np.float64)
    _, grads = clone.loss_and_gradients(X, y)
    if np.any(clone.dropout):
        def loss(X, y):
            return clone.loss_and_gradients(X, y)[0]
    else:
        loss = clone.loss
    rng = np.random.default_rng(seed)
    errors = []
    for layer, (dW, db) in zip(clone.layers, grads):
        analytic, numeric = [], []
        for param, grad in ((layer.W, dW), (layer.b, db)):
            flat, gflat = param.reshape(-1), grad.reshape(-1)
            idx = np.arange(flat.size)
            if max_checks_per_layer is not None and flat.size > max_checks_per_layer:
                idx = rng.choice(flat.size, max_checks_per_layer, replace=False)
            for i in idx:
                saved = flat[i]
                flat[i] = saved + eps
                plus = loss(X, y)
                flat[i] = saved - eps
                minus = loss(X, y)
                flat[i] = saved
                numeric.append((plus - minus) / (2 * eps))
                analytic.append(gflat[i])
        analytic, numeric = np.array(analytic), np.array(numeric)
        scale = np.linalg.norm(analytic) + np.linalg.norm(numeric)
        errors.append(float(np.linalg.norm(analytic - numeric) / scale) if scale > 1e-300 else 0.0)
    return errors
