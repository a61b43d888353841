"""scikit-learn estimators over :class:`fusedmlp.MLP`: ``MLPClassifier`` and ``MLPRegressor``.

They take scikit-learn's ``MLPClassifier``/``MLPRegressor`` parameter names where the names
mean the same thing, and they pass scikit-learn's ``parametrize_with_checks``. Importing this
module imports scikit-learn (``pip install scikit-learn``, or ``pip install ".[sklearn]"``
from a fusedmlp checkout); ``import fusedmlp`` does not.

How the parameters map onto fusedmlp
------------------------------------
Each mini-batch is one training step of the compiled model (forward, loss, backward and the
update), an epoch of them in one compiled call. scikit-learn minimises, per batch ``B`` with sample weights
``s`` (all ones without ``sample_weight``)::

    J_B = sum_i s_i * loss_i / sum(s) + alpha / (2 * sum(s)) * sum_layers ||W||^2

(biases are not penalised). fusedmlp's optimisers add ``weight_decay * W`` to the gradient
of the weights only, so ``alpha`` becomes a per-batch ``weight_decay = alpha / sum(s)``: the
same objective, including the last, smaller batch and weighted batches.

The output layer is scikit-learn's: softmax for multiclass targets, one logistic unit for two
classes, one logistic unit per label for a multilabel indicator ``y`` (fusedmlp's
``output="sigmoid"``, binary cross-entropy from the logits), the identity for squared-error
regression and ``exp`` for ``loss="poisson"`` (fusedmlp's ``output="exp"``, half Poisson
deviance). scikit-learn's gradient for every one of them is ``(output - y) / sum(s)``
summed over the outputs, while fusedmlp's squared error, binary cross-entropy and Poisson
deviance average over the outputs (and its squared error is not halved). Scaling a gradient
by ``c`` is exactly equivalent to SGD with learning rate ``c * lr`` and weight decay
``wd / c``, and to Adam with ``eps / c`` and ``wd / c``; the estimators use this with
``c = n_outputs / 2`` (squared error), ``c = n_outputs`` (logistic, Poisson) and ``c = 1``
(softmax), so ``alpha``, ``learning_rate_init`` and ``epsilon`` mean what they mean in
scikit-learn.

``solver="lbfgs"`` runs SciPy's L-BFGS-B with scikit-learn's options (``maxiter=max_iter``,
``maxfun=max_fun``, ``gtol=tol``) on the full-batch objective: each evaluation is one
compiled forward/backward pass with no update, scaled as above, plus the L2 term; the
parameter vector is the model's flat buffer, which is packed as scikit-learn packs it.

Everything else follows scikit-learn's stochastic solvers step by step: the initial weights
are drawn as scikit-learn draws them, from the same ``random_state`` stream; the batches come
in the same order; Adam's ``epsilon`` is placed as scikit-learn places it (before the bias
correction); SGD keeps scikit-learn's momentum semantics when ``learning_rate`` changes the
rate; the stopping rules (``tol``, ``n_iter_no_change``, ``early_stopping``) are the same. So
with the same ``random_state`` the classifier (multiclass, binary, multilabel) and the
regressor (squared error, Poisson) reproduce scikit-learn's ``loss_curve_``, weights and
``predict_proba`` to rounding (``tests/test_sklearn.py``), faster.

What users and tools match on behaves as scikit-learn's too (``tests/test_sklearn_dropin.py``,
and scikit-learn's own MLP tests in ``tests/sklearn_upstream``): ``partial_fit`` exists only
for ``solver="sgd"``/``"adam"``; a run whose loss becomes non-finite raises scikit-learn's
``ValueError`` ("Solver produced non-finite parameter weights...", also a
``FloatingPointError``), keeping the weights from before the refused update, except with
``early_stopping``: there that epoch's validation score is NaN, a ``ConvergenceWarning``
says what happened, and the best epoch's weights are kept (scikit-learn runs the remaining
epochs on NaN weights to the same end); ``_optimizer.learning_rate`` is the stochastic
solver's current rate as scikit-learn keeps it; error messages start with scikit-learn's.

Known differences from scikit-learn's estimators (all documented on the classes):

- the logistic loss is computed from the logits, so where scikit-learn clips probabilities
  to ``[eps, 1 - eps]`` (logits beyond about +-36) its reported loss is the clipped one and
  fusedmlp's the exact one (the gradients are the same);
- ``momentum`` must be below 1 (scikit-learn accepts 1, which never forgets a gradient).
"""

from __future__ import annotations

import inspect
import numbers
import warnings

import numpy as np
import scipy.optimize
from scipy.special import expit

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_array, check_random_state
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.class_weight import compute_class_weight
    from sklearn.utils.multiclass import (check_classification_targets, type_of_target,
                                          unique_labels)
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as exc:                               # pragma: no cover - depends on env
    raise ImportError(
        "fusedmlp.sklearn needs scikit-learn >= 1.6 (validate_data, __sklearn_tags__); "
        "pip install scikit-learn (from a fusedmlp checkout: pip install \".[sklearn]\")"
    ) from exc

from ._validation import as_positive_int, as_real, weight_exponent
from .bf16 import check_compute_dtype
from .class_weights import check_class_vector, weigh_rows
from .functional import ACTIVATIONS
from .dropout import check_dropout
from .model import MLP
from .optim import SGD, Adam
from .threads import check_n_threads
from .training import Batches, run_epoch

__all__ = ["MLPClassifier", "MLPRegressor"]

#: scikit-learn's activation names, and fusedmlp's extra ones, mapped to fusedmlp's (every
#: fusedmlp activation but "step", whose zero derivative leaves nothing to learn).
_ACTIVATIONS = {"logistic": "sigmoid",
                **{name: name for name in ACTIVATIONS if name != "step"}}
_SOLVERS = ("adam", "sgd", "lbfgs")
#: scipy.sparse formats taken as they are (others become CSR, as scikit-learn converts them;
#: fusedmlp.sparse turns CSC into CSR once)
_SPARSE = ("csr", "csc")
_STOCHASTIC_SOLVERS = ("adam", "sgd")       # the solvers with partial_fit
#: fusedmlp's output kinds under scikit-learn's names (``out_activation_``).
_OUT_ACTIVATIONS = {"softmax": "softmax", "sigmoid": "logistic", "identity": "identity",
                    "exp": "exp"}
_LEARNING_RATES = ("constant", "invscaling", "adaptive")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class _DivergenceError(ValueError, FloatingPointError):
    """Training diverged: a ValueError as in scikit-learn, and the FloatingPointError that
    :meth:`fusedmlp.MLP.fit` raises, so either ``except`` catches it."""


def _check_weights(coefs, intercepts, dtype):
    """Assigned coefs_/intercepts_ as arrays (of `dtype`; None: float32 stays float32, the
    rest becomes float64): as many of each, 2-D weights and 1-D biases whose shapes chain,
    finite."""
    for name, value in (("coefs_", coefs), ("intercepts_", intercepts)):
        if not isinstance(value, (list, tuple)) or not value:
            raise TypeError(f"{name} must be a non-empty list of arrays, got "
                            f"{type(value).__name__}")
    if len(coefs) != len(intercepts):
        raise ValueError(f"coefs_ has {len(coefs)} arrays but intercepts_ has "
                         f"{len(intercepts)}: one of each per layer")
    dtype = [np.float64, np.float32] if dtype is None else dtype
    coefs = [check_array(W, dtype=dtype, order="C", input_name=f"coefs_[{i}]")
             for i, W in enumerate(coefs)]
    intercepts = [check_array(b, dtype=dtype, ensure_2d=False, input_name=f"intercepts_[{i}]")
                  for i, b in enumerate(intercepts)]
    for i, (W, b) in enumerate(zip(coefs, intercepts)):
        if b.shape != (W.shape[1],):
            raise ValueError(f"intercepts_[{i}] must have shape ({W.shape[1]},) to match "
                             f"coefs_[{i}] of shape {W.shape}, got {b.shape}")
        if i and W.shape[0] != coefs[i - 1].shape[1]:
            raise ValueError(f"coefs_[{i}] must have {coefs[i - 1].shape[1]} rows (the "
                             f"columns of coefs_[{i - 1}]), got shape {W.shape}")
    return coefs, intercepts


def _has_stochastic_solver(estimator) -> bool:
    """``partial_fit`` exists only for the mini-batch solvers, as in scikit-learn (so
    ``hasattr(estimator, "partial_fit")`` tells tools such as dask-ml's Incremental)."""
    if estimator.solver not in _STOCHASTIC_SOLVERS:
        raise AttributeError(
            f"partial_fit is only available for stochastic optimizers "
            f"{list(_STOCHASTIC_SOLVERS)}. {estimator.solver!r} is not stochastic."
        )
    return True


def _base_params(values) -> dict:
    """The parameters of _BaseMLP.__init__ among a subclass __init__'s ``locals()`` (the
    subclasses spell out the whole signature, which scikit-learn's get_params reads)."""
    return {name: values[name] for name in _BASE_PARAMS}


class _BaseMLP(BaseEstimator):
    """The training loop shared by MLPClassifier and MLPRegressor (not public)."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype=None, n_threads="auto", dropout=0.0, compute_dtype=None, l1=0.0):
        # scikit-learn's rule: __init__ stores the parameters and does nothing else.
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.n_threads = n_threads
        self.dropout = dropout
        self.compute_dtype = compute_dtype
        self.l1 = l1

    # ------------------------------------------------------------------ parameters
    def _hidden_sizes(self) -> list:
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if _is_int(sizes) else sizes
        try:
            sizes = list(sizes)
        except TypeError:
            raise TypeError(
                "hidden_layer_sizes must be an integer or a sequence of integers, got "
                f"{type(self.hidden_layer_sizes).__name__} {self.hidden_layer_sizes!r}"
            ) from None
        for size in sizes:
            if not _is_int(size) or size < 1:
                raise ValueError("hidden_layer_sizes must hold positive integers, "
                                 f"got {self.hidden_layer_sizes!r}")
        return [int(size) for size in sizes]

    def _first_dtype(self):
        """The dtypes validate_data may return for a new model: `dtype`, or with
        ``dtype=None`` float32 for float32 input and float64 for everything else (the first
        entry of the list is the conversion target), as scikit-learn's MLP."""
        return [np.float64, np.float32] if self._model_dtype() is None else self._model_dtype()

    def _model_dtype(self):
        """The `dtype` parameter resolved (None stays None, but means float32 with
        ``compute_dtype="bfloat16"``, whose parameters are float32)."""
        if self.dtype is None:
            return None if self.compute_dtype is None else np.dtype(np.float32)
        try:
            resolved = np.dtype(self.dtype)
        except TypeError:
            resolved = None
        if resolved not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be None, float32 or float64, got {self.dtype!r}")
        return resolved

    def _check_params(self):
        """Validate the hyper-parameters at fit time (never in __init__ or set_params)."""
        self._hidden_sizes()
        check_compute_dtype(self.compute_dtype, self._model_dtype() or np.float32)
        check_n_threads(self.n_threads)
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, "
                             f"got {self.activation!r}")
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {list(_SOLVERS)}, got {self.solver!r}")
        if self.learning_rate not in _LEARNING_RATES:
            raise ValueError(f"learning_rate must be one of {list(_LEARNING_RATES)}, "
                             f"got {self.learning_rate!r}")
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            if not _is_int(self.batch_size):
                raise TypeError(f"batch_size must be 'auto' or a positive integer, "
                                f"got {self.batch_size!r}")
            as_positive_int(self.batch_size, "batch_size")
        as_real(self.alpha, "alpha", low=0.0)
        as_real(self.l1, "l1", low=0.0)
        as_real(self.learning_rate_init, "learning_rate_init", low=0.0, low_open=True)
        as_real(self.power_t, "power_t", low=0.0)
        as_positive_int(self.max_iter, "max_iter")
        as_positive_int(self.max_fun, "max_fun")
        as_real(self.tol, "tol", low=0.0)
        as_real(self.momentum, "momentum", low=0.0, high=1, high_open=True)
        as_real(self.beta_1, "beta_1", low=0.0, high=1, high_open=True)
        as_real(self.beta_2, "beta_2", low=0.0, high=1, high_open=True)
        as_real(self.epsilon, "epsilon", low=0.0, low_open=True)
        if self.early_stopping:
            as_real(self.validation_fraction, "validation_fraction", low=0.0, high=1,
                        low_open=True, high_open=True)
        else:
            as_real(self.validation_fraction, "validation_fraction", low=0.0, high=1,
                        high_open=True)
        if not (self.n_iter_no_change == np.inf or _is_int(self.n_iter_no_change)):
            raise TypeError(f"n_iter_no_change must be a positive integer or numpy.inf, "
                            f"got {self.n_iter_no_change!r}")
        if self.n_iter_no_change < 1:
            raise ValueError(f"n_iter_no_change must be >= 1, got {self.n_iter_no_change!r}")
        for name in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        self._model_dtype()
        if np.any(check_dropout(self.dropout, len(self._hidden_sizes()))) and self.solver == "lbfgs":
            raise ValueError(f"dropout={self.dropout!r} needs a stochastic solver ('adam' or "
                             "'sgd'): solver='lbfgs' minimises one deterministic objective")

    # ------------------------------------------------------------------ fitted attributes
    # Assigning coefs_/intercepts_ (a warm start from known weights, as scikit-learn allows)
    # keeps the assigned list in __dict__ under the same name, where the property finds it
    # and check_is_fitted sees it; the next partial_fit, warm-started fit or predict
    # validates it and copies it into the network's buffers (_take_assigned_weights).
    @property
    def coefs_(self) -> list:
        """The weight matrices, ``coefs_[i]`` of shape ``(n_in, n_out)`` (views: writing into
        them changes the model). Assignable: a list of arrays assigned here is validated and
        copied into the network by the next ``partial_fit``, warm-started ``fit`` or
        ``predict`` (until then the assigned list is returned as it is)."""
        if "coefs_" in self.__dict__:
            return self.__dict__["coefs_"]
        return [layer.W for layer in self._fitted_model("coefs_").layers]

    @coefs_.setter
    def coefs_(self, coefs):
        self.__dict__["coefs_"] = coefs

    @property
    def intercepts_(self) -> list:
        """The bias vectors (views: writing into them changes the model); assignable as
        ``coefs_``."""
        if "intercepts_" in self.__dict__:
            return self.__dict__["intercepts_"]
        return [layer.b for layer in self._fitted_model("intercepts_").layers]

    @intercepts_.setter
    def intercepts_(self, intercepts):
        self.__dict__["intercepts_"] = intercepts

    def _take_assigned_weights(self):
        """Validate assigned coefs_/intercepts_ and copy them into the network's buffers."""
        coefs = self.__dict__.pop("coefs_", None)
        intercepts = self.__dict__.pop("intercepts_", None)
        if coefs is None and intercepts is None:
            return
        layers = self.model_.layers
        coefs, intercepts = _check_weights(
            [layer.W for layer in layers] if coefs is None else coefs,
            [layer.b for layer in layers] if intercepts is None else intercepts,
            self.model_.dtype)
        shapes = [(layer.W.shape, layer.b.shape) for layer in layers]
        assigned = [(W.shape, b.shape) for W, b in zip(coefs, intercepts)]
        if assigned != shapes:
            raise ValueError(
                f"the assigned coefs_/intercepts_ have shapes {assigned}, but the network "
                f"for n_features_in_={self.n_features_in_}, hidden_layer_sizes="
                f"{self.hidden_layer_sizes!r} and {self.n_outputs_} outputs has {shapes}")
        for layer, W, b in zip(layers, coefs, intercepts):
            layer.W[...] = W
            layer.b[...] = b

    def _check_both_assigned(self):
        if "coefs_" not in self.__dict__ or "intercepts_" not in self.__dict__:
            raise ValueError("an estimator without a fitted network needs both coefs_ and "
                             "intercepts_ assigned")

    def _network_from_assigned_weights(self):
        """A network for assigned coefs_/intercepts_ when predicting before any fit."""
        self._check_both_assigned()
        if isinstance(self, ClassifierMixin):
            raise ValueError(f"{type(self).__name__} learns its classes from data: call "
                             "partial_fit(X, y, classes=...) or fit with warm_start=True to "
                             "continue from the assigned coefs_/intercepts_")
        coefs, _ = _check_weights(self.__dict__["coefs_"], self.__dict__["intercepts_"], None)
        # as scikit-learn's, the network computes in the assigned weights' precision
        dtype = self._model_dtype() or np.result_type(np.float32, *coefs)
        self._initialize(coefs[0].shape[0], coefs[-1].shape[1], dtype, rng=None)
        self.n_features_in_ = coefs[0].shape[0]

    def to_onnx(self, path):
        """Export the fitted network as an ONNX graph to `path` (``None``: only return it).

        Returns the ``onnx.ModelProto``. Input ``X`` (``(N, n_features_in_)``, the model's
        dtype); outputs as :meth:`fusedmlp.MLP.to_onnx`, except that a classifier's ``label``
        holds ``classes_`` (as ``predict``), not class indices. Needs the ``onnx`` package.
        """
        from .onnx import to_onnx

        check_is_fitted(self, "model_")
        return to_onnx(self.model_, path, classes=self.__dict__.get("classes_"))

    def export_c(self, directory, *, name="fusedmlp_model"):
        """Write the fitted network as C99 inference code (``<name>.h``, ``<name>.c``) into
        `directory`, as :meth:`fusedmlp.MLP.export_c`; returns the two paths. A classifier's
        header also holds ``classes_`` (see :mod:`fusedmlp.export_c`), and for two classes
        ``predict_proba`` writes two columns, as this estimator's ``predict_proba``."""
        from .export_c import export_c

        check_is_fitted(self, "model_")
        return export_c(self, directory, name=name)

    def _fitted_model(self, what):
        model = self.__dict__.get("model_")
        if model is None:
            raise AttributeError(f"{type(self).__name__} has no {what} before fit")
        return model

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # The optimiser holds a weak reference to its model and cannot be pickled: pickle its
    # state instead and rebuild it on first use after unpickling.
    def __getstate__(self):
        state = dict(super().__getstate__())       # may be self.__dict__ itself: copy
        optimizer = state.pop("_optimizer", None)
        if optimizer is not None:
            state["_optimizer_state"] = optimizer.state_dict()
        return state

    def __setstate__(self, state):
        state = dict(state)
        saved = state.pop("_optimizer_state", None)
        super().__setstate__(state)
        if saved is not None:
            optimizer = self._new_optimizer()
            optimizer.load_state_dict(self.model_, saved)
            self._optimizer = optimizer

    # ------------------------------------------------------------------ training
    def _gradient_scale(self) -> float:
        """c such that scikit-learn's gradient = c * the gradient of fusedmlp's loss.

        fusedmlp's squared error, binary cross-entropy and Poisson deviance average over the
        outputs, scikit-learn's (half squared error for the first) sum over them; softmax
        cross-entropy is the same in both."""
        output, k = self.model_.output, self.n_outputs_
        return {"softmax": 1.0, "sigmoid": k, "identity": k / 2.0, "exp": k}[output]

    def _reported_loss_factor(self) -> float:
        """scikit-learn's reported loss over fusedmlp's (before the L2 term)."""
        output, k = self.model_.output, self.n_outputs_
        return {"softmax": 1.0, "sigmoid": k, "identity": 0.5, "exp": k}[output]

    def _new_optimizer(self):
        scale = self._gradient_scale()
        if self.solver == "sgd":
            return _SGD(self.learning_rate_init, scale, momentum=self.momentum,
                        nesterov=bool(self.nesterovs_momentum and self.momentum > 0))
        return _Adam(lr=self.learning_rate_init, beta1=self.beta_1, beta2=self.beta_2,
                     eps=self.epsilon / scale)

    def _apply_params(self):
        """The estimator's settings that live on the model, copied onto a warm model_ (a new
        one takes them in its constructor): every path -- fit, warm start, partial_fit --
        trains with the parameters as set now (validated by _check_params)."""
        self.model_.dropout = self.dropout
        self.model_.compute_dtype = self.compute_dtype
        self.model_.n_threads = self.n_threads

    def _initialize(self, n_features, n_outputs, dtype, rng):
        sizes = [n_features, *self._hidden_sizes(), n_outputs]
        output = self._model_output()
        self.model_ = MLP(sizes, activation=_ACTIVATIONS[self.activation], output=output,
                          dtype=dtype, seed=0, n_threads=self.n_threads, dropout=self.dropout,
                          compute_dtype=self.compute_dtype)
        if rng is not None:           # (None: the weights are assigned ones, copied next)
            self._draw_initial_weights(rng)
            if np.any(self.dropout):  # the masks' key, after the weights (random_state)
                self.model_.dropout_seed = int(rng.randint(0, 2**62))
        self.n_outputs_ = n_outputs
        self.n_layers_ = len(sizes)
        self.out_activation_ = _OUT_ACTIVATIONS[output]
        self.n_iter_ = 0
        self.t_ = 0
        if self.solver != "lbfgs":            # as scikit-learn: lbfgs keeps no loss curve
            self._initialize_stochastic()

    def _initialize_stochastic(self):
        self.loss_curve_ = []
        self._no_improvement_count = 0
        self._best_parameters = None
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = np.inf

    def _draw_initial_weights(self, rng):
        """scikit-learn's initialisation, drawn in its order from the same RandomState:
        with the same random_state both start from the same network.

        Weights and biases are uniform in +-sqrt(6 / (fan_in + fan_out)) (Glorot; 2 instead
        of 6 for the logistic activation).
        """
        factor = 2.0 if self.activation in ("logistic", "sigmoid") else 6.0
        for layer in self.model_.layers:
            fan_in, fan_out = layer.W.shape
            bound = np.sqrt(factor / (fan_in + fan_out))
            layer.W[...] = rng.uniform(-bound, bound, (fan_in, fan_out))
            layer.b[...] = rng.uniform(-bound, bound, fan_out)

    def _check_warm_model(self, n_outputs):
        model = self.model_
        expected = (model.layer_sizes[1:-1], model.activations, model.layer_sizes[-1],
                    model.output)
        wanted = (tuple(self._hidden_sizes()),
                  [_ACTIVATIONS[self.activation]] * (len(model.layer_sizes) - 2), n_outputs,
                  self._model_output())
        dtype = self._model_dtype()
        if expected != wanted or (dtype is not None and dtype != model.dtype):
            raise ValueError(
                "warm_start/partial_fit continue the fitted network, but hidden_layer_sizes, "
                f"activation, loss or dtype changed: fitted {model!r}, now hidden_layer_sizes="
                f"{self.hidden_layer_sizes!r}, activation={self.activation!r}, "
                f"dtype={self.dtype!r}; set "
                "warm_start=False (or call fit) to start a new network"
            )

    def _check_sample_weight(self, sample_weight, n_samples, dtype):
        self._weight_exponent = 0
        if sample_weight is None:
            return None
        if _is_real(sample_weight):
            sample_weight = np.full(n_samples, sample_weight, dtype=dtype)
        # checked in float64 and scaled before the cast to the model's dtype, so that weights
        # beyond float32's range (class weights times sample weights) weigh a float32 model
        weights = check_array(sample_weight, ensure_2d=False, dtype=np.float64, order="C",
                              input_name="sample_weight")
        if weights.ndim != 1 or weights.shape[0] != n_samples:
            raise ValueError(f"sample_weight must have shape ({n_samples},), got {weights.shape}")
        if np.any(weights < 0):
            raise ValueError("sample_weight must be non-negative, got negative values")
        if not weights.sum(dtype=np.float64) > 0:
            raise ValueError("sample_weight must contain at least one non-zero weight, "
                             "got all zero weights")
        # scaled exactly (by a power of two) so that no batch's sum can overflow, and alpha
        # alike (_Step), so that alpha / sum(s) means what it meant
        self._weight_exponent = weight_exponent(weights)
        return np.ldexp(weights, -self._weight_exponent).astype(dtype, copy=False)

    def _weigh_classes(self, y, sample_weight, incremental):
        """The sample weights with the class weights folded in (MLPClassifier)."""
        return sample_weight

    def _fit(self, X, y, sample_weight=None, *, incremental=False, classes=None):
        self._check_params()
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        assigned = "coefs_" in self.__dict__ or "intercepts_" in self.__dict__
        fitted = "model_" in self.__dict__
        first = not (fitted or assigned) or (not self.warm_start and not incremental)
        if first:      # as scikit-learn: a new network, whatever weights were assigned
            self.__dict__.pop("coefs_", None), self.__dict__.pop("intercepts_", None)
        # a new network for assigned weights: the data are validated as for a first fit
        build = assigned and not fitted and not first
        if build:
            self._check_both_assigned()
        X, y = self._validate_input(X, y, first=first or build, incremental=incremental,
                                    classes=classes)
        dtype = X.dtype
        sample_weight = self._weigh_classes(y, sample_weight, incremental)
        sample_weight = self._check_sample_weight(sample_weight, X.shape[0], dtype)
        n_outputs = self._n_outputs(y)
        rng = check_random_state(self.random_state)
        if first:
            self._initialize(X.shape[1], n_outputs, dtype, rng)
        else:
            if build:
                self._initialize(X.shape[1], n_outputs, dtype, rng=None)
            self._take_assigned_weights()
            self._check_warm_model(n_outputs)
            self._apply_params()                        # (set_params may have changed them)
        if self.solver == "lbfgs":
            self._optimizer = None
            self._fit_lbfgs(X, y, sample_weight)
            return self
        if "loss_curve_" not in self.__dict__:      # a warm start after an lbfgs fit
            self._initialize_stochastic()
        if not incremental or getattr(self, "_optimizer", None) is None:
            self._optimizer = self._new_optimizer()
        self._train(X, y, sample_weight, rng, incremental)
        return self

    def _fit_lbfgs(self, X, y, sample_weight):
        """Full-batch L-BFGS-B (SciPy) on scikit-learn's objective, as scikit-learn runs it.

        One evaluation is one compiled forward/backward pass over all of X (no update),
        scaled to scikit-learn's loss and gradient, plus the L2 term
        ``alpha / (2 * sum(s)) * ||W||^2``. The parameter vector is the model's own flat
        buffer layout ``[W_0, ..., b_0, ...]``, which is also scikit-learn's packing.
        """
        X, y = self.model_.check_data(X, y)     # once (a sparse X becomes canonical CSR here)
        loss_and_gradient = self._lbfgs_objective(X, y, sample_weight)
        params = self.model_.parameters

        try:
            result = scipy.optimize.minimize(
                loss_and_gradient, params.astype(np.float64), method="L-BFGS-B", jac=True,
                options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol})
        except FloatingPointError as exc:
            raise FloatingPointError(f"lbfgs diverged: {exc}; try scaled inputs or a larger "
                                     f"alpha (now {self.alpha})") from None
        self.n_iter_ = min(int(result.nit), self.max_iter)
        if result.status != 0:
            warnings.warn(f"lbfgs failed to converge after {self.n_iter_} iteration(s) "
                          f"(status={result.status}, {result.nfev} evaluations of the loss): "
                          f"{result.message}. Increase max_iter (now {self.max_iter}) or "
                          f"max_fun (now {self.max_fun}), or scale the data.",
                          ConvergenceWarning)
        self.loss_ = float(result.fun)
        params[...] = result.x
        if self.verbose:
            print(f"lbfgs: {self.n_iter_} iterations, {result.nfev} evaluations, "
                  f"loss = {self.loss_:.8f}", flush=True)

    def _lbfgs_objective(self, X, y, sample_weight):
        """packed -> (loss, gradient) of scikit-learn's lbfgs objective at the flat parameter
        vector `packed` (loaded into the model's live buffer), on checked X, encoded y and
        scaled sample weights."""
        model = self.model_
        factor, scale = self._reported_loss_factor(), self._gradient_scale()
        # the weights arrive scaled by 2**-_weight_exponent (_check_sample_weight); the loss is
        # a weighted mean and does not see the scale, but alpha / sum(s) is of the weights given
        total = float(len(X) if sample_weight is None else
                      np.ldexp(sample_weight.sum(dtype=np.float64), self._weight_exponent))
        alpha = float(self.alpha) / total
        l1 = float(self.l1)
        n_weights = sum(layer.W.size for layer in model.layers)
        params, grads = model.parameters, model.gradients    # live flat buffers
        gradient = np.empty(params.size, np.float64)

        def loss_and_gradient(packed):
            params[...] = packed
            loss, _ = model.loss_and_gradients(X, y, sample_weight=sample_weight)
            weights = packed[:n_weights]
            np.multiply(grads, scale, out=gradient)
            gradient[:n_weights] += alpha * weights
            loss = factor * loss + 0.5 * alpha * float(weights @ weights)
            if l1 > 0:
                gradient[:n_weights] += l1 * np.sign(weights)
                loss += l1 * float(np.abs(weights).sum())
            return loss, gradient

        return loss_and_gradient

    def _loss_grad_lbfgs(self, packed_coef_inter, X, y, sample_weight, activations, deltas,
                         coef_grads, intercept_grads):
        """scikit-learn's private lbfgs objective, for code written against it (its own
        test_gradient): the loss and gradient at `packed_coef_inter` (coefs_ then
        intercepts_, each raveled: fusedmlp's flat layout too) for X and the binarized y of
        a fitted estimator. The work-buffer arguments are accepted and not used (the
        compiled model has its own); the parameters stay at `packed_coef_inter`."""
        check_is_fitted(self, "model_")
        model = self.model_
        X = np.ascontiguousarray(X, dtype=model.dtype)
        y = np.asarray(y)
        if model.output == "softmax" and y.ndim == 2:
            y = np.ascontiguousarray(y, dtype=model.dtype)         # indicator rows
        elif model.output != "softmax":
            y = np.ascontiguousarray(y.reshape(len(X), -1), dtype=model.dtype)
        weights = self._check_sample_weight(sample_weight, len(X), model.dtype)
        loss, gradient = self._lbfgs_objective(X, y, weights)(
            np.asarray(packed_coef_inter, dtype=np.float64))
        return loss, gradient.copy()

    def _split_validation(self, X, y, sample_weight, rng):
        # As scikit-learn: stratified for classifiers with one output unit only (its
        # multiclass and multilabel targets are indicator rows, which it does not stratify),
        # on the same (n, 1) boolean column of "is the second class" it stratifies on, so
        # equal random_states give equal splits and a class too small to split is reported
        # as scikit-learn reports it.
        binary = is_classifier(self) and self.n_outputs_ == 1
        stratify = y > 0.5 if binary else None
        arrays = (X, y) if sample_weight is None else (X, y, sample_weight)
        try:
            parts = train_test_split(*arrays, random_state=rng,
                                     test_size=self.validation_fraction, stratify=stratify)
        except ValueError as exc:
            if not binary or "least populated" not in str(exc):
                raise
            raise ValueError(
                f"{exc} (early_stopping stratifies its validation split by class: 'True' is "
                f"class {self.classes_.tolist()[1]!r}, 'False' is class "
                f"{self.classes_.tolist()[0]!r})"
            ) from None
        if parts[1].shape[0] < 2:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' or the size "
                f"of your dataset (validation_fraction={self.validation_fraction} of "
                f"{X.shape[0]} samples leaves {parts[1].shape[0]} for validation; at least 2 "
                "are needed)."
            )
        X_train, X_val, y_train, y_val = parts[:4]
        sw_train = sw_val = None
        if sample_weight is not None:
            sw_train, sw_val = parts[4:]
        return X_train, y_train, sw_train, X_val, y_val, sw_val

    def _train(self, X, y, sample_weight, rng, incremental):
        """Epochs of mini-batch steps with scikit-learn's batching, loss and stopping rules."""
        optimizer = self._optimizer
        early_stopping = self.early_stopping
        if early_stopping:
            if self.validation_scores_ is None:       # warm start after a fit without it
                self.validation_scores_, self.best_validation_score_ = [], -np.inf
                self.best_loss_, self._best_parameters = None, None
            X, y, sample_weight, X_val, y_val, sw_val = self._split_validation(
                X, y, sample_weight, rng)
        n_samples = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn(f"batch_size={self.batch_size} is larger than the {n_samples} "
                              "training samples; using batches of all samples", UserWarning)
            batch_size = min(self.batch_size, n_samples)
        # the compiled epoch's native form: the model's dtype, int64 labels or 2-D targets
        X, y = self.model_.check_data(X, y)
        if sample_weight is not None:
            sample_weight = np.ascontiguousarray(sample_weight, self.model_.dtype)
        batches = Batches(X, y, sample_weight, batch_size)
        step = _Step(self, optimizer)
        lr = optimizer.learning_rate              # scikit-learn's current rate
        order = np.arange(n_samples) if self.shuffle else None

        self.n_iter_ = 0
        try:
            for _ in range(self.max_iter):
                if order is not None:
                    # scikit-learn's order: each epoch permutes the previous epoch's order
                    # with RandomState.shuffle, so equal random_states give equal batches.
                    permutation = np.arange(n_samples)
                    rng.shuffle(permutation)
                    order = order[permutation]
                diverged = None
                try:
                    self.loss_ = run_epoch(step, batches, order).loss
                except FloatingPointError as exc:    # the step refused a non-finite loss
                    if not early_stopping or self._best_parameters is None:
                        raise self._diverged(exc) from None
                    self.loss_, diverged = np.nan, exc
                self.n_iter_ += 1
                self.t_ += n_samples
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}", flush=True)
                if early_stopping:
                    self._track_validation(X_val, y_val, sw_val, diverged=diverged is not None)
                else:
                    self._track_loss()
                if diverged is not None:
                    # scikit-learn runs the remaining epochs on NaN weights, which can never
                    # beat the best validation score; the result is the same best weights.
                    warnings.warn(f"{self._diverged(diverged)} early_stopping keeps the weights "
                                  "of the best validation score.", ConvergenceWarning)
                    break
                if self.solver == "sgd" and self.learning_rate == "invscaling":
                    lr = self.learning_rate_init / (self.t_ + 1) ** self.power_t
                    self._set_sgd_lr(lr)
                if self._no_improvement_count > self.n_iter_no_change:
                    what = ("Validation score did not improve" if early_stopping
                            else "Training loss did not improve")
                    message = (f"{what} more than tol={self.tol} for "
                               f"{self.n_iter_no_change} consecutive epochs.")
                    if self.solver == "sgd" and self.learning_rate == "adaptive" and lr > 1e-6:
                        lr /= 5.0
                        self._set_sgd_lr(lr)
                        self._no_improvement_count = 0
                        if self.verbose:
                            print(f"{message} Setting learning rate to {lr:f}", flush=True)
                    else:
                        if self.verbose:
                            print(f"{message} Stopping.", flush=True)
                        break
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(
                        f"Stochastic optimizer: maximum iterations ({self.max_iter}) reached "
                        "and the optimization hasn't converged yet.", ConvergenceWarning)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        if early_stopping and self._best_parameters is not None:
            self.model_.set_params_vector(self._best_parameters)

    def _diverged(self, exc):
        """scikit-learn's error for a diverging run (a ValueError), with what happened."""
        return _DivergenceError(
            "Solver produced non-finite parameter weights. The input data may contain large "
            f"values and need to be preprocessed. (Training diverged in iteration "
            f"{self.n_iter_ + 1}: {exc}; the weights are those before that update. Try a "
            f"smaller learning_rate_init (now {self.learning_rate_init}) or scaled inputs.)"
        )

    def _set_sgd_lr(self, lr):
        """Change SGD's learning rate keeping scikit-learn's momentum semantics.

        scikit-learn keeps the velocity ``v = momentum * v - lr * grad``, fusedmlp (PyTorch)
        ``u = momentum * u + grad`` and steps by ``-lr * u``: the same while lr is constant.
        When lr changes, rescaling u by ``lr_old / lr_new`` keeps ``-lr * u`` equal to v.
        """
        optimizer = self._optimizer
        new_lr = lr * optimizer.scale
        velocity = optimizer.buffers(self.model_)[1]
        if velocity is not None and optimizer.lr != new_lr:
            velocity *= optimizer.lr / new_lr
        optimizer.lr = new_lr
        optimizer.learning_rate = lr

    def _track_loss(self):
        last = self.loss_curve_[-1]
        if last > self.best_loss_ - self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if last < self.best_loss_:
            self.best_loss_ = last

    def _track_validation(self, X_val, y_val, sw_val, *, diverged=False):
        # a diverged epoch scores NaN, as scikit-learn's NaN weights do
        score = np.nan if diverged else self._validation_score(X_val, y_val, sw_val)
        self.validation_scores_.append(score)
        if self.verbose:
            print(f"Validation score: {score:f}", flush=True)
        if score < self.best_validation_score_ + self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if score > self.best_validation_score_ or self._best_parameters is None:
            self.best_validation_score_ = score
            self._best_parameters = self.model_.get_params_vector()

    def _validate_X(self, X):
        check_is_fitted(self)
        if "model_" not in self.__dict__:
            self._network_from_assigned_weights()
        self._take_assigned_weights()
        return validate_data(self, X, reset=False, dtype=self.model_.dtype, order="C",
                             accept_sparse=_SPARSE)



class _SGD(SGD):
    """fusedmlp's SGD as the estimators' ``_optimizer``, keeping scikit-learn's
    ``learning_rate`` too (where scikit-learn's ``_optimizer`` has it): the current rate of
    the ``invscaling``/``adaptive`` schedule, before the regressor's gradient scaling
    (``lr = learning_rate * scale``, see the module docstring)."""

    def __init__(self, learning_rate, scale, **kwargs):
        super().__init__(lr=learning_rate * scale, **kwargs)
        self.learning_rate, self.scale = float(learning_rate), scale

    def state_dict(self):
        return {**super().state_dict(), "learning_rate": self.learning_rate}

    def load_state_dict(self, model, state):
        super().load_state_dict(model, state)
        self.learning_rate = float(state["learning_rate"])


class _Adam(Adam):
    """fusedmlp's Adam as the estimators' ``_optimizer``, with scikit-learn's
    ``learning_rate``: the step size of the last update after the bias correction,
    ``learning_rate_init * sqrt(1 - beta_2**t) / (1 - beta_1**t)`` (``learning_rate_init``
    before the first)."""

    @property
    def learning_rate(self):
        t = self.steps
        if t == 0:
            return self.lr
        return self.lr * np.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)


class _Step:
    """scikit-learn's mini-batch steps on the compiled model, an epoch (or part of one) per
    call (``training.run_epoch`` calls ``epoch``).

    The per-batch rule is applied by the compiled epoch, its one definition (``epoch()`` in
    csrc/_network.pyx): each batch's weight decay alpha / (scale x its total sample weight),
    scikit-learn's L2 term; its reported loss, loss factor x data loss + 0.5 alpha ||W||^2 /
    total (the weights before the update) + the L1 term; an all-zero-weight batch skipped.
    Python gives it the constants and the one policy that is a schedule: Adam's epsilon of
    each step (``epsilons``).
    """

    def __init__(self, estimator, optimizer):
        self.model, self.optimizer = estimator.model_, optimizer
        self.compiled = self.model.bind(optimizer)
        self.scale = estimator._gradient_scale()
        self.loss_factor = estimator._reported_loss_factor()
        # (the sample weights were scaled by 2**-_weight_exponent: alpha / sum(s) is not)
        with np.errstate(over="ignore", under="ignore"):
            self.alpha = float(np.ldexp(float(estimator.alpha),
                                        -getattr(estimator, "_weight_exponent", 0)))
        self.adam = estimator.solver == "adam"
        self.beta_2, self.epsilon = float(estimator.beta_2), float(estimator.epsilon)
        # l1 * sum |W| in scikit-learn's units is (l1 / scale) * sum |W| in fusedmlp's,
        # whose step adds it to its loss; the core reports it as scale x that (epoch())
        self.l1 = float(estimator.l1)
        optimizer.l1 = self.l1 / self.scale

    def epsilons(self, n_steps):
        """Adam's epsilon for each of the next n_steps steps in fusedmlp's formula.
        scikit-learn's Adam adds epsilon to sqrt(v) before the bias correction
        sqrt(1 - beta_2**t), PyTorch's formula (fusedmlp's) after it: the same step with
        epsilon_t = epsilon / sqrt(1 - beta_2**t) (and / scale, the gradients' units)."""
        t = self.optimizer.steps
        return [self.epsilon / (self.scale * np.sqrt(1.0 - self.beta_2 ** (t + k)))
                for k in range(1, n_steps + 1)]

    def epoch(self, batches, order, first, stop, validation, results):
        """The batches of rows order[first:stop] in one compiled call, with the per-batch
        rule (``Network.train_epoch``'s `rule`: alpha, the gradient scale, 0.5 alpha, the
        loss factor, then Adam's epsilons)."""
        rule = [self.alpha, self.scale, 0.5 * self.alpha, self.loss_factor]
        if self.adam:
            rule += self.epsilons(-(-(stop - first) // batches.batch_size))
        return self.compiled.epoch(batches, order, first, stop, validation, results,
                                   np.array(rule))


_BASE_PARAMS = tuple(inspect.signature(_BaseMLP.__init__).parameters)[1:]


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multilayer perceptron classifier with scikit-learn's API, trained by fusedmlp.

    Drop-in for ``sklearn.neural_network.MLPClassifier``: the same parameter names, solvers
    (``"adam"``, ``"sgd"``, ``"lbfgs"``) and fitted attributes; softmax cross-entropy for
    multiclass targets, binary cross-entropy of logistic units for two classes and for
    multilabel indicator targets, with an L2 penalty ``alpha``; one compiled call per
    mini-batch (per loss evaluation for lbfgs).

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default=(100,)
        Widths of the hidden layers (``()`` for none).
    activation : {"relu", "logistic", "tanh", "identity"}, default="relu"
        The hidden layers' activation (fusedmlp's ``"leaky_relu"``, ``"elu"`` and
        ``"softplus"`` are accepted too).
    solver : {"adam", "sgd", "lbfgs"}, default="adam"
        ``"lbfgs"``: SciPy's L-BFGS-B on the whole training set (no mini-batches, no
        ``partial_fit``, no ``loss_curve_``), as scikit-learn.
    alpha : float, default=1e-4
        L2 penalty on the weights (not the biases), scikit-learn's definition: each batch adds
        ``alpha / (2 * sum(sample_weight))`` times the sum of squared weights to the loss.
    batch_size : int or "auto", default="auto"
        ``"auto"`` is ``min(200, n_samples)``.
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        Schedule for ``solver="sgd"`` (scikit-learn's: ``invscaling`` sets
        ``learning_rate_init / (t + 1) ** power_t`` after each epoch, ``t`` the samples seen;
        ``adaptive`` divides by 5 instead of stopping when the loss stalls).
    learning_rate_init : float, default=1e-3
    power_t : float, default=0.5
    max_iter : int, default=200
        Maximum number of epochs (of L-BFGS iterations for ``solver="lbfgs"``).
    shuffle : bool, default=True
        Shuffle the samples every epoch.
    random_state : int, RandomState or None, default=None
        Seeds the initial weights, the shuffling and the validation split.
    tol : float, default=1e-4
    verbose : bool, default=False
        Print the loss after every epoch.
    warm_start : bool, default=False
        ``fit`` continues from the fitted weights (with a fresh optimiser, as scikit-learn).
    momentum : float in [0, 1), default=0.9
        SGD momentum.
    nesterovs_momentum : bool, default=True
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified for two classes,
        as scikit-learn), stop when its accuracy has not improved by ``tol`` for
        ``n_iter_no_change`` epochs and keep the best weights.
    validation_fraction : float, default=0.1
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam's parameters.
    n_iter_no_change : int, default=10
        Epochs without an improvement of ``tol`` before stopping.
    max_fun : int, default=15000
        ``solver="lbfgs"`` only: the most evaluations of the loss (L-BFGS-B's ``maxfun``).
    dtype : None, float32 or float64, default=None
        What the network computes in. ``None`` follows the training data as scikit-learn's
        MLP does (float32 stays float32, everything else becomes float64). ``np.float32``
        is typically 1.5-2x faster and plenty for most classification.
    n_threads : "auto" or int, default="auto"
        Threads for each training step and prediction (fusedmlp's own pool; see
        ``fusedmlp.MLP.n_threads``). Results do not depend on it beyond rounding.
    compute_dtype : None or "bfloat16", default=None
        ``"bfloat16"``: the matrix products round their operands to bfloat16 and sum in
        float32 (CPUs with AVX512-BF16; ``fusedmlp.MLP.compute_dtype``, docs/bf16.md). The
        network is then float32 (``dtype`` None or float32).
    class_weight : None, "balanced" or dict, default=None
        Weights of the classes (not in scikit-learn's MLP; as in its linear classifiers):
        a row of class ``c`` weighs ``class_weight[c] * sample_weight``, exactly as if that
        product were passed as ``sample_weight``. A dict maps labels of ``classes_`` to
        weights (absent classes weigh 1); ``"balanced"`` is
        ``compute_class_weight("balanced", classes=classes_, y=y, sample_weight=...)``,
        ``n_samples / (n_classes * bincount(y))`` with the sample weights counted, and is
        refused by ``partial_fit`` (as scikit-learn's ``SGDClassifier`` refuses it).
        Multilabel targets refuse class weights.
    dropout : float or sequence of float, default=0.0
        fusedmlp's inverted dropout (not in scikit-learn): one rate in [0, 1) for every
        hidden layer, or one per hidden layer; training only (``adam``/``sgd``; refused with
        ``lbfgs``), the masks seeded by ``random_state``. See ``fusedmlp.MLP.dropout``.
    l1 : float >= 0, default=0.0
        An L1 penalty on the weights (not the biases; not in scikit-learn's MLP): each
        batch's objective gets ``l1 * sum |W|`` (as ``SGDClassifier(penalty="l1")``'s
        ``alpha``; unlike this class's ``alpha`` it is not divided by the batch's weight),
        its subgradient ``l1 * sign(W)`` the gradient; included in ``loss_curve_``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels (``arange(n_labels)`` for multilabel targets).
    model_ : fusedmlp.MLP
        The trained network (``model_.save(path)`` writes it).
    coefs_, intercepts_ : list of ndarray
        Views of the layers' ``W`` (shape ``(n_in, n_out)``) and ``b``, in the model's dtype.
        The last layer has ``n_outputs_`` columns. Assign lists of arrays to warm-start
        from known weights, as in scikit-learn: the next ``partial_fit``, warm-started
        ``fit`` or ``predict`` validates them and copies them into the network (a new
        estimator builds it for the data it is given).
    loss_, loss_curve_, best_loss_ : float, list of float, float or None
        Training loss (cross-entropy plus the L2 term) per epoch, as scikit-learn defines it;
        ``best_loss_`` is None with ``early_stopping``.
    validation_scores_, best_validation_score_ : list of float or None, float or None
        Validation accuracy per epoch (with ``early_stopping``).
    n_iter_ : int
        Epochs run by the last call of ``fit`` (1 for ``partial_fit``).
    t_ : int
        Training samples seen so far.
    n_features_in_, feature_names_in_ : int, ndarray
    n_outputs_, n_layers_, out_activation_ : int, int, str
        ``n_outputs_`` is 1 and ``out_activation_`` ``"logistic"`` for two classes,
        ``n_labels`` and ``"logistic"`` for multilabel targets, ``n_classes`` and
        ``"softmax"`` otherwise (scikit-learn's layout).

    Notes
    -----
    With the same ``random_state`` a fit reproduces scikit-learn's (the same initial weights,
    batches, updates and stopping; for lbfgs the same objective and gradient). See the module
    docstring for how ``alpha`` maps onto fusedmlp's weight decay.

    BLAS threads: for small networks pin them with
    ``threadpoolctl.threadpool_limits(1)`` (see ``fusedmlp``'s docstring).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.model_selection import train_test_split
    >>> from fusedmlp.sklearn import MLPClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X_train, X_test, y_train, y_test = train_test_split(X / 16, y, random_state=0)
    >>> clf = MLPClassifier(hidden_layer_sizes=(64,), learning_rate_init=0.01, random_state=0)
    >>> clf = clf.fit(X_train, y_train)          # stops after 95 epochs (tol)
    >>> bool(clf.score(X_test, y_test) > 0.95)
    True
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype=None, n_threads="auto", class_weight=None, dropout=0.0,
                 compute_dtype=None, l1=0.0):
        super().__init__(**_base_params(locals()))
        self.class_weight = class_weight

    def _weigh_classes(self, y, sample_weight, incremental):
        # scikit-learn's class weights (compute_class_weight over classes_), times the sample
        # weights: training with class_weight is training with that product as sample_weight
        if self.class_weight is None:
            return sample_weight
        if incremental and isinstance(self.class_weight, str) and self.class_weight == "balanced":
            raise ValueError(
                "class_weight 'balanced' is not supported for partial_fit (a batch's class "
                "frequencies are not the data's). In order to use 'balanced' weights, use "
                "compute_class_weight('balanced', classes=classes, y=y) on a large enough "
                "sample of the targets and pass the resulting weights as a dict.")
        if self._label_binarizer.y_type_.startswith("multilabel"):
            raise ValueError("class_weight is not supported for multilabel y (each row has "
                             "several labels): weigh the rows with sample_weight")
        index = y if y.ndim == 1 else y[:, 0].astype(np.int64)
        if sample_weight is not None:     # validated; unscaled, as the user's product would be
            sample_weight = np.ldexp(
                self._check_sample_weight(sample_weight, len(index), np.float64),
                self._weight_exponent)
        vector = compute_class_weight(self.class_weight, classes=self.classes_,
                                      y=self.classes_[index], sample_weight=sample_weight)
        vector = np.asarray(vector, dtype=np.float64)
        check_class_vector(vector, self.classes_)
        return weigh_rows(vector, index, sample_weight)

    def fit(self, X, y, sample_weight=None):
        """Train on (X, y) for up to ``max_iter`` epochs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels of any type ``numpy.unique`` sorts (integers, strings, ...).
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights: each batch's loss is the weighted mean (times the
            class weights, with ``class_weight``).

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight)

    @available_if(_has_stochastic_solver)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y), continuing from the current weights and optimiser state
        (only for ``solver="adam"`` or ``"sgd"``).

        Parameters
        ----------
        X, y, sample_weight
            As in :meth:`fit`.
        classes : array-like of shape (n_classes,), optional
            All the classes; required on the first call, since later batches may lack some.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _validate_input(self, X, y, *, first, incremental, classes):
        dtype = self._first_dtype() if first else self.model_.dtype
        X, y = validate_data(self, X, y, reset=first, dtype=dtype, order="C",
                             accept_sparse=_SPARSE, multi_output=True)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)          # as scikit-learn: a column is 1-D labels
        check_classification_targets(y)
        multilabel = type_of_target(y).startswith("multilabel")
        if incremental and "classes_" not in self.__dict__ and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit "
                             "(all the class labels, since a batch may lack some)")
        if first:
            # scikit-learn's encoding: LabelBinarizer decides the output layer (softmax for
            # multiclass, one logistic unit for two classes, one per label for multilabel)
            binarizer = LabelBinarizer()
            binarizer.fit(y if multilabel or not incremental else np.asarray(classes))
            self._label_binarizer = binarizer
            self.classes_ = binarizer.classes_
        elif incremental and classes is not None and not multilabel and not np.array_equal(
                unique_labels(np.asarray(classes)), self.classes_):
            raise ValueError(f"classes={classes!r} differs from the classes of the first "
                             f"partial_fit call, {self.classes_!r}")
        elif self.warm_start and not incremental:
            present = unique_labels(y)
            if not np.array_equal(present, self.classes_):
                raise ValueError(
                    "warm_start can only be used where `y` has the same classes as in the "
                    f"previous call to fit. Previously got {self.classes_}, `y` has {present}"
                )
        binarizer = self._label_binarizer
        if multilabel != binarizer.y_type_.startswith("multilabel"):
            raise ValueError(f"y is {type_of_target(y)}, but the estimator was fitted on "
                             f"{binarizer.y_type_} targets")
        if multilabel:
            if y.shape[1] != len(self.classes_):
                raise ValueError(f"y has {y.shape[1]} labels (columns), the estimator was "
                                 f"fitted with {len(self.classes_)}")
            return X, np.ascontiguousarray(y, dtype=X.dtype)
        encoded = np.searchsorted(self.classes_, y)
        known = encoded < len(self.classes_)
        known[known] = self.classes_[encoded[known]] == y[known]
        if not np.all(known):
            unknown = unique_labels(y[~known])
            raise ValueError(f"y has classes not in classes_ {self.classes_}: {unknown}")
        if binarizer.y_type_ == "multiclass":
            return X, encoded.astype(np.int64, copy=False)
        # two classes (or one): one logistic unit whose target is "the second class"
        return X, (encoded == 1).astype(X.dtype).reshape(-1, 1)

    def _model_output(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "sigmoid"

    def _n_outputs(self, y):
        return y.shape[1] if y.ndim == 2 else len(self.classes_)

    def _validation_score(self, X, y, sample_weight):
        try:
            if self.model_.output == "softmax":
                return accuracy_score(y, self.model_.predict(X), sample_weight=sample_weight)
            predicted = self.model_.predict_proba(X) > 0.5
        except FloatingPointError:      # diverged weights: scored NaN, never the best
            return np.nan
        y = y > 0.5
        if y.shape[1] == 1:
            y, predicted = y[:, 0], predicted[:, 0]
        return accuracy_score(y, predicted, sample_weight=sample_weight)

    def predict(self, X):
        """The most probable class of each row of X (from ``classes_``); for multilabel
        targets, the 0/1 indicator matrix of the labels whose probability exceeds 1/2."""
        X = self._validate_X(X)
        if self.model_.output == "softmax":
            return self.classes_[self.model_.predict(X)]
        proba = self.model_.predict_proba(X)
        return self._label_binarizer.inverse_transform(
            proba[:, 0] if self.n_outputs_ == 1 else proba)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in ``classes_`` order
        (for two classes ``[1 - p, p]`` from the one logistic unit; for multilabel targets,
        each label's probability)."""
        X = self._validate_X(X)
        if self.model_.output == "sigmoid" and self.n_outputs_ == 1:
            # [sigmoid(-z), sigmoid(z)]: the same as [1 - p, p] to rounding, but 1 - p is
            # not rounded to 0 where p rounds to 1, so log(predict_proba) stays finite
            z = self.model_.forward(X)[:, 0]
            return np.column_stack([expit(-z), expit(z)])
        return self.model_.predict_proba(X)

    def predict_log_proba(self, X):
        """``log(predict_proba(X))``, scikit-learn's definition (so ``-inf`` where a
        probability underflows to 0, and 0 where it rounds to 1). For log-probabilities
        computed from the scores, finite and accurate near 1, use
        ``model_.predict_log_proba(X)`` (fusedmlp's :class:`~fusedmlp.MLP`)."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multilayer perceptron regressor with scikit-learn's API, trained by fusedmlp.

    Drop-in for ``sklearn.neural_network.MLPRegressor``. The parameters are those of
    :class:`MLPClassifier` plus ``loss``; ``early_stopping`` monitors the validation R^2.

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default="squared_error"
        ``"squared_error"``: identity output, half the squared error. ``"poisson"``:
        exponential output ``exp(z)`` (a log link) trained with the half Poisson deviance
        ``exp(z) - y z + y log y - y``, for counts or rates ``y >= 0`` (scikit-learn's
        definition, computed from ``z`` so ``y log y`` is exact and 0 at ``y = 0``).
    hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate, \
learning_rate_init, power_t, max_iter, shuffle, random_state, tol, verbose, warm_start, \
momentum, nesterovs_momentum, early_stopping, validation_fraction, beta_1, beta_2, epsilon, \
n_iter_no_change, max_fun, dtype, n_threads, dropout, compute_dtype, l1
        As in :class:`MLPClassifier`.

    Attributes
    ----------
    model_ : fusedmlp.MLP
    coefs_, intercepts_ : list of ndarray
        Views of the layers' ``W`` and ``b``; assignable as in :class:`MLPClassifier`.
    loss_, loss_curve_, best_loss_
        Half the mean squared error (or the half Poisson deviance summed over the outputs)
        plus the L2 term, as scikit-learn reports it.
    validation_scores_, best_validation_score_
        Validation R^2 per epoch (with ``early_stopping``).
    n_iter_, t_, n_features_in_, feature_names_in_, n_outputs_, n_layers_, out_activation_

    Notes
    -----
    As in scikit-learn, the training gradient is that of half the squared error summed over
    the outputs, averaged over the samples, plus ``alpha / (2 * n_batch) * ||W||^2``; the
    reported ``loss_`` averages the squared error over the outputs too. Predictions have shape
    ``(n_samples,)`` when there is one output.

    Examples
    --------
    >>> import numpy as np
    >>> from fusedmlp.sklearn import MLPRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(-1, 1, size=(500, 3)); y = X[:, 0] ** 2 + np.sin(3 * X[:, 1])
    >>> reg = MLPRegressor(hidden_layer_sizes=(32,), learning_rate_init=0.01,
    ...                    random_state=0).fit(X, y)
    >>> bool(reg.score(X, y) > 0.9)
    True
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, loss="squared_error",
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype=None, n_threads="auto", dropout=0.0, compute_dtype=None, l1=0.0):
        super().__init__(**_base_params(locals()))
        self.loss = loss

    def _check_params(self):
        super()._check_params()
        if self.loss not in ("squared_error", "poisson"):
            raise ValueError(f"loss must be 'squared_error' or 'poisson', got {self.loss!r}")

    def _model_output(self):
        return "exp" if self.loss == "poisson" else "identity"

    def fit(self, X, y, sample_weight=None):
        """Train on (X, y) for up to ``max_iter`` epochs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight)

    @available_if(_has_stochastic_solver)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights and optimiser state
        (only for ``solver="adam"`` or ``"sgd"``)."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _validate_input(self, X, y, *, first, incremental, classes):
        dtype = self._first_dtype() if first else self.model_.dtype
        X, y = validate_data(self, X, y, reset=first, dtype=dtype, order="C",
                             accept_sparse=_SPARSE, multi_output=True, y_numeric=True)
        y = np.ascontiguousarray(y, dtype=X.dtype)
        if y.ndim == 1:
            y = y[:, None]
        if self.loss == "poisson" and np.any(y < 0):
            raise ValueError("loss='poisson' needs non-negative targets (counts or rates): "
                             f"y has negative values, the smallest is {y.min()!r}")
        return X, y

    def _n_outputs(self, y):
        return y.shape[1]

    def _validation_score(self, X, y, sample_weight):
        try:
            predictions = self.model_.predict(X)
        except FloatingPointError:      # non-finite predictions: NaN, as scikit-learn
            return np.nan
        return r2_score(y, predictions, sample_weight=sample_weight)

    def predict(self, X):
        """Predictions, shape (n_samples,) for one output, else (n_samples, n_outputs)."""
        X = self._validate_X(X)
        return self.model_.predict(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
