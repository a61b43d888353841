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
from typing import Any, Dict, Tuple
import threading
import weakref

import numpy as np

from . import _kernels
from ._validation import as_positive_int, as_real, describe
from . import _codes
from ._codes import Optimizer as Kind

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSProp", "AdaGrad", "make_optimizer",
           "ConstantLR", "StepLR", "CosineLR", "ReduceLROnPlateau", "WarmupLR", "make_schedule"]

# Slots of the float64 hyper-parameter array the compiled step reads (csrc/_codes.pxd).
_LR, _WEIGHT_DECAY, _CLIP_NORM, _T = _codes.H_LR, _codes.H_WEIGHT_DECAY, _codes.H_CLIP_NORM, _codes.H_T
_MOMENTUM, _NESTEROV, _EPS = _codes.H_MOMENTUM, _codes.H_NESTEROV, _codes.H_EPS
_BETA1, _BETA2, _L1 = _codes.H_BETA1, _codes.H_BETA2, _codes.H_L1
HYPER_SIZE = _codes.H_SIZE     # entries of the hyper-parameter array

# Serialises the (rare) binding of an optimiser to a model; a module-level lock keeps
# optimisers copyable (scikit-learn's clone deep-copies them).
_BINDING = threading.Lock()


# The legal range and hyper-parameter slot of every optimiser setting: the one table that the
# constructors, the property setters, load_state_dict and model files (fusedmlp.load) check
# against, through check_hyper below.
_SETTINGS: Dict[str, Tuple[int, Dict[str, Any]]] = {
    "lr": (_LR, dict(low_open=True)),
    "weight_decay": (_WEIGHT_DECAY, {}),
    "clip_norm": (_CLIP_NORM, {}),
    "l1": (_L1, {}),
    "momentum": (_MOMENTUM, dict(high=1.0, high_open=True)),
    "beta1": (_BETA1, dict(high=1.0, high_open=True)),
    "beta2": (_BETA2, dict(high=1.0, high_open=True)),
    "alpha": (_BETA2, dict(high=1.0, high_open=True)),
    "eps": (_EPS, dict(low_open=True)),
}
#: The largest step count a state may hold: float64 counts exactly up to 2**53. The compiled
#: step refuses an update past it (Status.BAD_COUNTER), so a state never leaves the range
#: that the setters, load_state_dict and model files accept.
MAX_STEPS = _codes.MAX_COUNTED_STEPS


def check_counters(optimizer_steps, dropout=False, dropout_step=0, schedule_steps=None):
    """OverflowError naming the counter if one more update would take it past its range:
    the optimiser's step count (or a WarmupLR's) past MAX_STEPS, or the model's
    dropout_step (advanced when dropout is on) past 2**63 - 1. The compiled step refuses
    the same updates (Status.BAD_COUNTER); this says which counter."""
    if optimizer_steps >= MAX_STEPS:
        raise OverflowError(f"the optimiser's step count is {int(optimizer_steps)}, the most it "
                            "counts (2**53): no further update is applied (optimizer.reset() "
                            "starts afresh)")
    if dropout and dropout_step >= 2**63 - 1:
        raise OverflowError(f"dropout_step is {dropout_step}, the last in its range [0, 2**63): "
                            "no further update with dropout is applied (set model.dropout_step "
                            "or model.dropout_seed to draw a new series of masks)")
    if schedule_steps is not None and schedule_steps >= MAX_STEPS:
        raise OverflowError(f"the WarmupLR schedule's step count is {int(schedule_steps)}, the "
                            "most it counts (2**53): no further step is scheduled "
                            "(schedule.reset() starts afresh)")


def check_hyper(name: str, value) -> float:
    """`value` as a float if it is a legal `name` (``"lr"``, ``"beta1"``, ...), else
    TypeError/ValueError naming it."""
    return as_real(value, name, **{"low": 0.0, **_SETTINGS[name][1]})


def _check_steps(value) -> int:
    if not (math.isfinite(value) and value == int(value) and 0 <= value <= MAX_STEPS):
        raise ValueError(f"the step count must be an integer in [0, 2**53], got {value!r}")
    return int(value)


class Optimizer:
    """Base class: the compiled kernel number, hyper-parameters and per-model state.

    Subclasses set ``kind`` (csrc/fusedmlp/_codes.pxd) and list their settings in
    ``settings`` (names of the table in this module, each with its slot in ``hyper`` and its
    legal range); how many parameter-sized state buffers they keep (``n_states``) is the
    compiled update's to say (csrc/_optim.pxd). ``check_hyper_array`` validates a whole
    hyper-parameter array against that, so that every way of making an optimiser
    (constructor, setters, ``load_state_dict``, a model file) accepts exactly the same values.
    """

    kind = Kind.OPT_NONE
    n_states = _kernels.optimizer_states(kind)
    settings: Tuple[str, ...] = ("lr", "weight_decay", "clip_norm", "l1")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.n_states = _kernels.optimizer_states(cls.kind)

    def __init__(self, lr, weight_decay=0.0, l1=0.0):
        self.hyper = np.zeros(HYPER_SIZE)
        self.lr = lr
        self.weight_decay = weight_decay
        self.l1 = l1
        self._model = None
        self._states = ()

    @staticmethod
    def _param(name):
        """A validated float property stored in its hyper slot (read by the compiled step)."""
        index = _SETTINGS[name][0]

        def get(self):
            return float(self.hyper[index])

        def set(self, value):
            self.hyper[index] = check_hyper(name, value)

        return property(get, set)

    lr = _param.__func__("lr")  # type: ignore[attr-defined]
    weight_decay = _param.__func__("weight_decay")  # type: ignore[attr-defined]
    clip_norm = _param.__func__("clip_norm")  # type: ignore[attr-defined]
    #: L1 penalty on the weights (not the biases): ``l1 * sign(W)`` (0 where W is 0) is
    #: added to their gradient before the update, and ``l1 * sum |W|`` (the weights before
    #: the update) to the loss a training step reports. Every optimiser takes it.
    l1 = _param.__func__("l1")  # type: ignore[attr-defined]

    @property
    def steps(self) -> int:
        """Updates applied so far."""
        return int(self.hyper[_T])

    @classmethod
    def check_hyper_array(cls, hyper) -> np.ndarray:
        """`hyper` (a float64 array of HYPER_SIZE) if every slot holds a legal value for this
        class: each setting in its range, the step count an integer in [0, 2**53], unused
        slots zero; else ValueError naming the setting."""
        if not (isinstance(hyper, np.ndarray) and hyper.dtype == np.float64
                and hyper.shape == (HYPER_SIZE,)):
            raise ValueError(f"{cls.__name__}'s hyper-parameters must be a float64 array of "
                             f"shape ({HYPER_SIZE},), got {describe(hyper)}")
        used = {_T}
        for name in cls.settings:
            slot = _SETTINGS[name][0]
            check_hyper(name, float(hyper[slot]))
            used.add(slot)
        _check_steps(float(hyper[_T]))
        used |= cls._check_flags(hyper)
        for slot in sorted(set(range(HYPER_SIZE)) - used):
            if hyper[slot] != 0:
                raise ValueError(f"{cls.__name__} does not use hyper-parameter slot {slot} "
                                 f"(an unused slot must be 0), got {hyper[slot]!r}")
        return hyper

    @classmethod
    def _check_flags(cls, hyper) -> set:
        """Check the class's non-range settings; return their slots."""
        return set()

    def buffers(self, model):
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
            size, dtype = model.parameters.size, model.parameters.dtype
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
        hyper, state_a, state_b = self.buffers(model)
        check_counters(hyper[_T])
        _kernels.optimizer_update(self.kind, hyper, model.parameters, model.gradients,
                                  state_a, state_b, model.layout.n_weights)

    def state_dict(self) -> dict:
        """Hyper-parameters, step count and state buffers (for saving)."""
        out = {"class": type(self).__name__, "hyper": self.hyper.copy()}
        for i, buffer in enumerate(self._states[1:]):
            if buffer is not None:
                out[f"state_{i}"] = buffer.copy()
        return out

    def load_state_dict(self, model, state: dict):
        """Bind to `model` and restore a ``state_dict()`` (hyper-parameters, steps, buffers).

        The state is validated completely before anything changes: its class (when it names
        one) must be this optimiser's, the hyper-parameters must pass ``check_hyper_array``,
        and it must hold exactly ``n_states`` finite buffers of the model's parameter shape
        and dtype. ValueError otherwise.
        """
        hyper, given = self.check_state(model, state)
        hyper_out, *buffers = self.buffers(model)
        hyper_out[...] = hyper
        for i, buffer in enumerate(buffers):
            if buffer is not None and given:
                buffer[...] = state[f"state_{i}"]

    def check_state(self, model, state: dict):
        """``load_state_dict``'s checks of `state` for `model`, changing nothing: (the
        checked hyper-parameters, the state buffers' keys). ``MLP.save`` runs them on what it
        writes, so a file that ``fusedmlp.load`` would refuse is never written."""
        name = type(self).__name__
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict from state_dict(), got {describe(state)}")
        if state.get("class", name) != name:
            raise ValueError(f"the state is of {state['class']!r}, not of this {name}")
        if "hyper" not in state:
            raise ValueError(f"the state of this {name} has no hyper-parameters ('hyper')")
        hyper = self.check_hyper_array(state["hyper"])
        names = {f"state_{i}" for i in range(self.n_states)}
        given = {key for key in state if key.startswith("state_")}
        # (the state of an optimiser never used has no buffers: zeros, from step 0)
        if given != names and (given or hyper[_T] != 0):
            raise ValueError(f"{name} keeps {self.n_states} state buffer(s) "
                             f"{sorted(names)}, the state holds {sorted(given)}")
        params = model.parameters
        for key in sorted(given):
            buffer = state[key]
            if not (isinstance(buffer, np.ndarray) and buffer.shape == params.shape
                    and buffer.dtype == params.dtype):
                raise ValueError(f"{name}'s {key} must be an array of dtype {params.dtype} and "
                                 f"shape {params.shape} (the model's parameters), got "
                                 f"{describe(buffer)}")
            if not _kernels.all_finite(np.ascontiguousarray(buffer)):
                raise ValueError(f"{name}'s {key} contains NaN or infinity")
        return hyper, given

    # Pickling and copying: the model an optimiser is bound to travels with it as a strong
    # reference, so that pickle.dumps((model, opt)) and copy.deepcopy((model, opt)) give a
    # pair whose optimiser is bound to the copied model (pickle's memo makes the two one
    # object). An optimiser pickled without its model unpickles bound to a model nobody
    # holds, which is dropped: it then starts afresh with the next model, as after reset().
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_model"] = self._model() if self._model is not None else None
        if state["_model"] is None:
            state["_states"] = ()
        return state

    def __setstate__(self, state):
        state = dict(state)
        model = state.pop("_model")
        self.__dict__.update(state)
        self._model = weakref.ref(model) if model is not None else None

    def __repr__(self):
        return f"{type(self).__name__}(lr={self.lr:g})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and weight decay.

    ``g = grad + weight_decay * W``; with momentum ``v = momentum * v + g`` and the step uses
    ``v`` (or ``g + momentum * v`` for Nesterov); ``p -= lr * step``.
    """

    kind = Kind.OPT_SGD

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, l1=0.0):
        super().__init__(lr, weight_decay, l1)
        self.hyper[_MOMENTUM] = check_hyper("momentum", momentum)
        self.hyper[_NESTEROV] = bool(nesterov)
        self._check_flags(self.hyper)

    settings = Optimizer.settings + ("momentum",)
    momentum = property(lambda self: float(self.hyper[_MOMENTUM]))
    nesterov = property(lambda self: bool(self.hyper[_NESTEROV]))

    @classmethod
    def _check_flags(cls, hyper) -> set:
        if hyper[_NESTEROV] not in (0.0, 1.0):
            raise ValueError(f"SGD's nesterov flag must be 0 or 1, got {hyper[_NESTEROV]!r}")
        if hyper[_NESTEROV] and hyper[_MOMENTUM] == 0:
            raise ValueError("nesterov=True needs a momentum > 0")
        return {_NESTEROV}

    def __repr__(self):
        return (f"SGD(lr={self.lr:g}, momentum={self.momentum:g}, nesterov={self.nesterov}, "
                f"weight_decay={self.weight_decay:g})")


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's formulas; ``weight_decay`` is an L2 term added to
    the gradient of the weights."""

    kind = Kind.OPT_ADAM

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                 l1=0.0):
        super().__init__(lr, weight_decay, l1)
        self.hyper[_BETA1] = check_hyper("beta1", beta1)
        self.hyper[_BETA2] = check_hyper("beta2", beta2)
        self.eps = eps

    settings = Optimizer.settings + ("beta1", "beta2", "eps")
    beta1 = property(lambda self: float(self.hyper[_BETA1]))
    beta2 = property(lambda self: float(self.hyper[_BETA2]))
    eps = Optimizer._param("eps")

    def __repr__(self):
        return (f"{type(self).__name__}(lr={self.lr:g}, beta1={self.beta1:g}, "
                f"beta2={self.beta2:g}, eps={self.eps:g}, weight_decay={self.weight_decay:g})")


class AdamW(Adam):
    """Adam with decoupled weight decay: ``W *= 1 - lr * weight_decay`` before each step."""

    kind = Kind.OPT_ADAMW

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
                 l1=0.0):
        super().__init__(lr, beta1, beta2, eps, weight_decay, l1)


class RMSProp(Optimizer):
    """RMSProp: ``v = alpha * v + (1 - alpha) * g^2``, ``p -= lr * g / (sqrt(v) + eps)``."""

    kind = Kind.OPT_RMSPROP

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, l1=0.0):
        super().__init__(lr, weight_decay, l1)
        self.hyper[_BETA2] = check_hyper("alpha", alpha)
        self.eps = eps

    settings = Optimizer.settings + ("alpha", "eps")
    alpha = property(lambda self: float(self.hyper[_BETA2]))
    eps = Optimizer._param("eps")


class AdaGrad(Optimizer):
    """AdaGrad: ``s += g^2``, ``p -= lr * g / (sqrt(s) + eps)``."""

    kind = Kind.OPT_ADAGRAD

    def __init__(self, lr=0.01, eps=1e-10, weight_decay=0.0, l1=0.0):
        super().__init__(lr, weight_decay, l1)
        self.eps = eps

    settings = Optimizer.settings + ("eps",)
    eps = Optimizer._param("eps")


_OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSProp, "adagrad": AdaGrad}


def optimizer_class(name) -> type:
    """The optimiser class called `name` (``"SGD"``, ``"Adam"``, ``"AdamW"``, ``"RMSProp"``,
    ``"AdaGrad"``: a closed list, as written in model files); ValueError otherwise."""
    for cls in _OPTIMIZERS.values():
        if name == cls.__name__:
            return cls
    raise ValueError(f"unknown optimizer {name!r} (one of "
                     f"{[cls.__name__ for cls in _OPTIMIZERS.values()]} expected)")


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
        self.gamma = as_real(gamma, "gamma", low=0.0, low_open=True)
        if self.step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")

    def __call__(self, epoch, lr0, lr, loss):
        return lr0 * self.gamma ** (epoch // self.step_size)


class CosineLR:
    """Cosine annealing from lr0 down to ``min_lr`` over ``total_epochs``."""

    def __init__(self, total_epochs, min_lr=0.0):
        self.total_epochs = int(total_epochs)
        self.min_lr = as_real(min_lr, "min_lr", low=0.0)
        if self.total_epochs < 1:
            raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")

    def __call__(self, epoch, lr0, lr, loss):
        t = min(epoch, self.total_epochs) / self.total_epochs
        return max(self.min_lr + (lr0 - self.min_lr) * 0.5 * (1 + math.cos(math.pi * t)), 1e-300)


class ReduceLROnPlateau:
    """Multiply the learning rate by ``factor`` when the monitored loss has not improved by
    ``min_delta`` for ``patience`` epochs."""

    def __init__(self, factor=0.1, patience=5, min_lr=0.0, min_delta=1e-4):
        self.factor = as_real(factor, "factor", low=0.0, low_open=True, high=1.0, high_open=True)
        self.patience = int(patience)
        self.min_lr = as_real(min_lr, "min_lr", low=0.0)
        self.min_delta = as_real(min_delta, "min_delta", low=0.0)
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


class WarmupLR:
    """A per-step schedule: linear warm-up over `warmup_steps`, then `decay` to
    ``final`` x the peak rate over the rest of `total_steps`, evaluated inside the compiled
    epoch before every step (``MLP.fit(..., lr_schedule=WarmupLR(...))``).

    Step ``s`` (counting from 0) trains with ``peak * (s + 1) / warmup_steps`` during the
    warm-up, so the last warm-up step reaches the peak; then, with ``p = (s + 1 -
    warmup_steps) / (total_steps - warmup_steps)`` (1 from the last step on),
    ``"constant"``: ``peak``; ``"cosine"``: ``peak * (final + (1 - final) * (1 + cos(pi p))
    / 2)``; ``"linear"``: ``peak * (final + (1 - final) * (1 - p))``; never below 1e-300
    (0 is not a learning rate). The peak is the optimiser's ``lr`` when the schedule is
    first used; `total_steps` defaults to that fit's ``epochs x batches per epoch``.

    The schedule keeps its place: passing the same instance to another ``fit`` continues
    where the last one stopped (and stays at the final rate past `total_steps`); pickling
    it keeps the place too; ``reset()`` starts afresh. After a fit the optimiser's ``lr``
    is the rate of the last step taken.
    """

    DECAYS = {"constant": _codes.Schedule.SCHEDULE_CONSTANT,
              "cosine": _codes.Schedule.SCHEDULE_COSINE,
              "linear": _codes.Schedule.SCHEDULE_LINEAR}

    def __init__(self, warmup_steps=0, decay="cosine", final=0.0, total_steps=None):
        if decay not in self.DECAYS:
            raise ValueError(f"decay must be one of {list(self.DECAYS)}, got {decay!r}")
        self.warmup_steps = as_positive_int(warmup_steps, "warmup_steps", minimum=0)
        self.decay = decay
        self.final = as_real(final, "final", low=0.0, high=1.0)
        self.total_steps = None if total_steps is None else as_positive_int(
            total_steps, "total_steps", minimum=max(1, self.warmup_steps))
        self.state = np.zeros(_codes.S_SIZE)          # read and advanced by the compiled epoch
        self.state[_codes.S_KIND] = self.DECAYS[decay]
        self.state[_codes.S_WARMUP_STEPS] = self.warmup_steps
        self.state[_codes.S_FINAL] = self.final

    @property
    def steps(self) -> int:
        """Steps this schedule has driven so far."""
        return int(self.state[_codes.S_STEP])

    @property
    def started(self) -> bool:
        return bool(self.state[_codes.S_PEAK_LR] > 0)

    def __setstate__(self, state):
        # a pickle is this schedule's file: its step count in the range the compiled epoch
        # advances it through (the other slots are checked as the constructor checks them)
        self.__dict__.update(state)
        self._check_state()

    def _check_state(self):
        steps = self.state[_codes.S_STEP] if (
            isinstance(self.state, np.ndarray) and self.state.dtype == np.float64
            and self.state.shape == (_codes.S_SIZE,)) else None
        if steps is None:
            raise ValueError(f"a WarmupLR's state must be a float64 array of shape "
                             f"({_codes.S_SIZE},), got {describe(self.state)}")
        if not (math.isfinite(steps) and steps == int(steps) and 0 <= steps <= MAX_STEPS):
            raise ValueError(f"a WarmupLR's step count must be an integer in [0, 2**53], got "
                             f"{steps!r}")

    def start(self, peak_lr, total_steps) -> np.ndarray:
        """Fix the peak rate and the length at first use (later calls keep them); returns
        the state array the compiled epoch reads."""
        self._check_state()
        if not self.started:
            total = self.total_steps if self.total_steps is not None else total_steps
            if total < max(1, self.warmup_steps):
                raise ValueError(f"warmup_steps={self.warmup_steps} exceeds the {total} steps "
                                 "of the fit (epochs x batches per epoch): give fewer "
                                 "warm-up steps or total_steps")
            self.state[_codes.S_PEAK_LR] = as_real(peak_lr, "lr", low=0.0, low_open=True)
            self.state[_codes.S_TOTAL_STEPS] = total
        return self.state

    def reset(self):
        """Forget the peak, the length and the place: the next fit starts a new schedule."""
        self.state[_codes.S_PEAK_LR] = self.state[_codes.S_STEP] = 0
        self.state[_codes.S_TOTAL_STEPS] = 0

    def rate(self, step) -> float:
        """The learning rate of step `step` (from 0) once started: the compiled epoch's
        arithmetic (csrc/_schedule.pxd), operation for operation."""
        state = self.state
        s = float(step) + 1
        warmup, total = float(state[_codes.S_WARMUP_STEPS]), float(state[_codes.S_TOTAL_STEPS])
        peak, final = float(state[_codes.S_PEAK_LR]), float(state[_codes.S_FINAL])
        if s <= warmup:
            rate = peak * (s / warmup)
        elif self.decay == "constant":
            rate = peak
        else:
            progress = 1.0 if s >= total else (s - warmup) / (total - warmup)
            shape = (0.5 * (1.0 + math.cos(math.pi * progress)) if self.decay == "cosine"
                     else 1.0 - progress)
            rate = peak * (final + (1.0 - final) * shape)
        return rate if rate > 1e-300 else 1e-300

    def __repr__(self):
        return (f"WarmupLR(warmup_steps={self.warmup_steps}, decay={self.decay!r}, "
                f"final={self.final:g}, total_steps={self.total_steps})")


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
