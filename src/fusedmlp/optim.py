"""Optimisers and learning-rate schedules.

An optimiser holds its hyper-parameters and, once it has been used with a model, that
model's state (momentum, moment estimates, step count) in flat buffers matching the model's
parameter buffer; the compiled training step updates all of them in one loop
(csrc/_optim.pxd). Like PyTorch's, an optimiser belongs to one model: make one per model.

The formulas are PyTorch's (``torch.optim``), with one documented difference: weight decay
applies to the weights only, never to the biases (as scikit-learn's ``alpha``).
"""

from __future__ import annotations

import math
import threading
import weakref

import numpy as np

from . import _kernels

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSProp", "AdaGrad", "make_optimizer",
           "ConstantLR", "StepLR", "CosineLR", "ReduceLROnPlateau", "make_schedule"]

# Indices into the float64 hyper-parameter array (mirror csrc/_optim.pxd).
_LR, _WEIGHT_DECAY, _MOMENTUM, _NESTEROV, _EPS, _CLIP_NORM, _T = 0, 1, 2, 3, 4, 5, 6
_BETA1, _BETA2 = 2, 3
HYPER_SIZE = 8     # entries of the float64 hyper-parameter array (H_SIZE in _optim.pxd)

# Serialises the (rare) binding of an optimiser to a model; a module-level lock keeps
# optimisers copyable (scikit-learn's clone deep-copies them).
_BINDING = threading.Lock()


def _number(value, name, *, low=0.0, high=math.inf, low_open=False, high_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok or not math.isfinite(value):
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name} must lie in {lo}{low}, {high}{hi}, got {value}")
    return value


class Optimizer:
    """Base class: the compiled kernel number, hyper-parameters and per-model state."""

    kind = 0           # csrc/_optim.pxd OPT_*
    n_states = 0       # how many parameter-sized state buffers

    def __init__(self, lr, weight_decay=0.0):
        self.hyper = np.zeros(HYPER_SIZE)
        self.lr = lr
        self.weight_decay = weight_decay
        self._model = None
        self._states = ()

    @staticmethod
    def _param(index, name, **limits):
        """A validated float property stored in hyper[index] (read by the compiled step)."""
        def get(self):
            return float(self.hyper[index])

        def set(self, value):
            self.hyper[index] = _number(value, name, **limits)

        return property(get, set)

    lr = _param.__func__(_LR, "lr", low_open=True)
    weight_decay = _param.__func__(_WEIGHT_DECAY, "weight_decay")
    clip_norm = _param.__func__(_CLIP_NORM, "clip_norm")

    @property
    def steps(self) -> int:
        """Updates applied so far."""
        return int(self.hyper[_T])

    def _buffers(self, model):
        """(hyper, state_a, state_b) for `model`, creating the state at first use."""
        bound = self._model() if self._model is not None else None
        if bound is model:
            return self._states
        with _BINDING:
            # Two threads making a fresh optimiser's first step at once must share one
            # state: the check is repeated under the lock, and the model is published last.
            bound = self._model() if self._model is not None else None
            if bound is model:
                return self._states
            if bound is not None:
                raise ValueError(
                    f"this {type(self).__name__} is already in use with another model; "
                    "create one optimizer per model"
                )
            self.hyper[_T] = 0       # fresh state: the step count (Adam's bias correction) too
            size, dtype = model._params.size, model._params.dtype
            states = [np.zeros(size, dtype) for _ in range(self.n_states)]
            states += [None] * (2 - self.n_states)
            self._states = (self.hyper, *states)
            self._model = weakref.ref(model)
            return self._states

    def reset(self):
        """Forget the model and its state (momentum, moments, step count)."""
        self._model, self._states = None, ()
        self.hyper[_T] = 0

    def step(self, model):
        """Apply one update to `model` from the gradients it holds (``loss_and_gradients``
        or the layers' ``backward`` fill them)."""
        hyper, state_a, state_b = self._buffers(model)
        empty = model._params[:0]
        _kernels.optimizer_update(self.kind, hyper, model._params, model._grads,
                                  empty if state_a is None else state_a,
                                  empty if state_b is None else state_b, model._n_weights)

    def state_dict(self) -> dict:
        """Hyper-parameters, step count and state buffers (for saving)."""
        out = {"class": type(self).__name__, "hyper": self.hyper.copy()}
        for i, buffer in enumerate(self._states[1:]):
            if buffer is not None:
                out[f"state_{i}"] = buffer.copy()
        return out

    def load_state_dict(self, model, state: dict):
        """Bind to `model` and restore a ``state_dict()`` (hyper-parameters, steps, buffers)."""
        hyper, *buffers = self._buffers(model)
        hyper[...] = state["hyper"]
        for i, buffer in enumerate(buffers):
            if buffer is not None:
                buffer[...] = state[f"state_{i}"]

    def __repr__(self):
        return f"{type(self).__name__}(lr={self.lr:g})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and weight decay.

    ``g = grad + weight_decay * W``; with momentum ``v = momentum * v + g`` and the step uses
    ``v`` (or ``g + momentum * v`` for Nesterov); ``p -= lr * step``.
    """

    kind = 1
    n_states = 1

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.hyper[_MOMENTUM] = _number(momentum, "momentum", high=1.0, high_open=True)
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0")
        self.hyper[_NESTEROV] = bool(nesterov)

    momentum = property(lambda self: float(self.hyper[_MOMENTUM]))
    nesterov = property(lambda self: bool(self.hyper[_NESTEROV]))

    def __repr__(self):
        return (f"SGD(lr={self.lr:g}, momentum={self.momentum:g}, nesterov={self.nesterov}, "
                f"weight_decay={self.weight_decay:g})")


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's formulas; ``weight_decay`` is an L2 term added to
    the gradient of the weights."""

    kind = 2
    n_states = 2

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.hyper[_BETA1] = _number(beta1, "beta1", high=1.0, high_open=True)
        self.hyper[_BETA2] = _number(beta2, "beta2", high=1.0, high_open=True)
        self.eps = eps

    beta1 = property(lambda self: float(self.hyper[_BETA1]))
    beta2 = property(lambda self: float(self.hyper[_BETA2]))
    eps = Optimizer._param(_EPS, "eps", low_open=True)

    def __repr__(self):
        return (f"{type(self).__name__}(lr={self.lr:g}, beta1={self.beta1:g}, "
                f"beta2={self.beta2:g}, eps={self.eps:g}, weight_decay={self.weight_decay:g})")


class AdamW(Adam):
    """Adam with decoupled weight decay: ``W *= 1 - lr * weight_decay`` before each step."""

    kind = 3

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
        super().__init__(lr, beta1, beta2, eps, weight_decay)


class RMSProp(Optimizer):
    """RMSProp: ``v = alpha * v + (1 - alpha) * g^2``, ``p -= lr * g / (sqrt(v) + eps)``."""

    kind = 4
    n_states = 1

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.hyper[_BETA2] = _number(alpha, "alpha", high=1.0, high_open=True)
        self.eps = eps

    alpha = property(lambda self: float(self.hyper[_BETA2]))
    eps = Optimizer._param(_EPS, "eps", low_open=True)


class AdaGrad(Optimizer):
    """AdaGrad: ``s += g^2``, ``p -= lr * g / (sqrt(s) + eps)``."""

    kind = 5
    n_states = 1

    def __init__(self, lr=0.01, eps=1e-10, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.eps = eps

    eps = Optimizer._param(_EPS, "eps", low_open=True)


_OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSProp, "adagrad": AdaGrad}


def make_optimizer(optimizer, lr=None) -> Optimizer:
    """An Optimizer instance from an instance or a name (``"adam"``, ``"sgd"``, ...)."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in _OPTIMIZERS:
        cls = _OPTIMIZERS[optimizer.lower()]
        return cls() if lr is None else cls(lr=lr)
    raise ValueError(f"optimizer must be an Optimizer or one of {sorted(_OPTIMIZERS)}, got {optimizer!r}")


# ---------------------------------------------------------------- learning-rate schedules
# A schedule is called once per epoch, after it: schedule(epoch, lr0, lr, monitored_loss)
# returns the learning rate for the next epoch (epoch counts from 1).

class ConstantLR:
    def __call__(self, epoch, lr0, lr, loss):
        return lr

    def __repr__(self):
        return "ConstantLR()"


class StepLR:
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, step_size=10, gamma=0.1):
        self.step_size = int(step_size)
        self.gamma = _number(gamma, "gamma", low_open=True)
        if self.step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")

    def __call__(self, epoch, lr0, lr, loss):
        return lr0 * self.gamma ** (epoch // self.step_size)


class CosineLR:
    """Cosine annealing from lr0 down to ``min_lr`` over ``total_epochs``."""

    def __init__(self, total_epochs, min_lr=0.0):
        self.total_epochs = int(total_epochs)
        self.min_lr = _number(min_lr, "min_lr")
        if self.total_epochs < 1:
            raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")

    def __call__(self, epoch, lr0, lr, loss):
        t = min(epoch, self.total_epochs) / self.total_epochs
        return max(self.min_lr + (lr0 - self.min_lr) * 0.5 * (1 + math.cos(math.pi * t)), 1e-300)


class ReduceLROnPlateau:
    """Multiply the learning rate by ``factor`` when the monitored loss has not improved by
    ``min_delta`` for ``patience`` epochs."""

    def __init__(self, factor=0.1, patience=5, min_lr=0.0, min_delta=1e-4):
        self.factor = _number(factor, "factor", low_open=True, high=1.0, high_open=True)
        self.patience = int(patience)
        self.min_lr = _number(min_lr, "min_lr")
        self.min_delta = _number(min_delta, "min_delta")
        self.best, self.wait = math.inf, 0

    def __call__(self, epoch, lr0, lr, loss):
        if loss < self.best - self.min_delta:
            self.best, self.wait = loss, 0
            return lr
        self.wait += 1
        if self.wait > self.patience:
            self.wait = 0
            return max(lr * self.factor, self.min_lr, 1e-300)
        return lr


def make_schedule(schedule, epochs):
    if schedule is None or schedule == "constant":
        return ConstantLR()
    if schedule == "step":
        return StepLR(step_size=max(1, epochs // 3))
    if schedule == "cosine":
        return CosineLR(total_epochs=epochs)
    if schedule == "plateau":
        return ReduceLROnPlateau()
    if callable(schedule):
        return schedule
    raise ValueError(
        "lr_schedule must be None, 'constant', 'step', 'cosine', 'plateau' or a callable "
        f"schedule(epoch, lr0, lr, loss) -> lr, got {schedule!r}"
    )
