"""Dropout rates: what ``MLP(dropout=...)``, the estimators' ``dropout`` and model files accept.

Inverted dropout runs inside the compiled training step (csrc/_dropout.pxd, csrc/dropout.h):
in every step each unit of hidden layer l is kept with probability ``1 - p_l`` and scaled
by ``1 / (1 - p_l)``, so inference (``predict``, ``loss``, ``score``, validation scoring,
ONNX and the C API) runs the network as it is, without dropout. The masks are a function of
``(dropout_seed, dropout_step, layer, row, column)``: reproducible for a fixed seed,
independent of the thread count, and regenerated in backward instead of stored.
``dropout_step`` counts the updates that drew masks; a gradient-only step
(``loss_and_gradients``) uses the mask of the next update and does not advance it.
"""

from __future__ import annotations

import numpy as np

from ._validation import as_real, describe

__all__ = ["check_dropout", "check_dropout_key"]

#: dropout_seed and dropout_step are integers in [0, KEY_LIMIT) (int64 bits in the core)
KEY_LIMIT = 2**63


def check_dropout(dropout, n_hidden: int, name: str = "dropout"):
    """`dropout` as one float (every hidden layer) or a tuple of one float per hidden layer,
    each in [0, 1); TypeError/ValueError naming `name` otherwise."""
    if isinstance(dropout, (list, tuple, np.ndarray)):
        rates = list(dropout) if not isinstance(dropout, np.ndarray) else dropout.tolist()
        if np.ndim(dropout) != 1 or len(rates) != n_hidden:
            raise ValueError(f"{name} must be one rate or {n_hidden} rates (one per hidden "
                             f"layer), got {describe(dropout)}")
        return tuple(as_real(p, f"{name}[{i}]", low=0.0, high=1.0, high_open=True)
                     for i, p in enumerate(rates))
    try:
        return as_real(dropout, name, low=0.0, high=1.0, high_open=True)
    except TypeError:
        raise TypeError(f"{name} must be a rate in [0, 1) or a sequence of one rate per "
                        f"hidden layer, got {describe(dropout)}") from None


def layer_rates(dropout, n_layers: int) -> np.ndarray:
    """The compiled step's rates: one per layer (float64), the output layer's 0."""
    rates = np.zeros(n_layers)
    rates[:-1] = dropout
    return rates


def check_dropout_key(value, name: str) -> int:
    """dropout_seed / dropout_step: an integer in [0, 2**63)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {describe(value)}")
    if not 0 <= value < KEY_LIMIT:
        raise ValueError(f"{name} must lie in [0, 2**63), got {value}")
    return int(value)
