"""Export a trained :class:`fusedmlp.MLP` (or a scikit-learn estimator of fusedmlp) to ONNX.

The graph is the model written in standard ONNX operators, so that any ONNX runtime can serve
it: one ``Gemm`` per layer (``X @ W + b``), each hidden activation, then the output head. The
batch dimension is dynamic (``"N"``); the data type is the model's (float32 or float64).
It is the inference network: dropout and the optimisers' L1 penalty act in training only, so
a model trained with them exports exactly as any other (nothing is dropped or rescaled).

Inputs and outputs of the exported graph:

- ``X``: ``(N, n_features)``, the model's dtype.
- ``output="softmax"``: ``probabilities`` ``(N, n_classes)`` (``Softmax`` over the classes,
  as ``predict_proba``) and ``label`` ``(N,)`` int64 (``ArgMax`` of the scores, ties to the
  first, as ``predict``).
- ``output="identity"``: ``predictions``, ``(N, n_outputs)``, or ``(N,)`` for one output
  (as ``predict``).
- ``output="sigmoid"``: ``probabilities`` (``Sigmoid`` of each output; for one output the two
  columns ``[sigmoid(-z), sigmoid(z)]`` of the estimators' two-class ``predict_proba``) and
  ``label``, int64 indicators ``z > 0`` (``(N,)`` for one output, else ``(N, n_outputs)``).

A model with ``compute_dtype="bfloat16"`` exports its numerics: each layer's input goes
through ``Cast`` to ``BFLOAT16`` and back to float32, and its weights are stored as
``BFLOAT16`` (rounded to nearest even, subnormals to zero, as fusedmlp's product reads them)
and cast to float32, so that the float32 ``Gemm`` multiplies the very bf16 operands fusedmlp
does and sums them in float32 (in the runtime's order; onnxruntime's CPU provider runs it
and agrees with ``predict_proba`` to about 2e-5). Only the rounding of subnormal inputs
differs: ``Cast`` keeps them, fusedmlp reads them as zero.

Activations with an operator that every runtime implements for float32 and float64 use it
(``Relu``, ``Sigmoid``, ``Tanh``); the others are composed from elementary operators, because
onnxruntime has no float64 kernel for ``Elu`` or ``Softplus``:

========== ==========================================================
step       ``Relu(Sign(x))``  (1 for x > 0, 0 for x <= 0, NaN stays NaN)
leaky_relu ``Where(x > 0, x, slope * x)``
elu        ``Where(x > 0, x, Exp(Min(x, 0)) - 1)``
softplus   ``Relu(x) + Log(1 + Exp(-|x|))``  (never overflows)
========== ==========================================================

Needs the ``onnx`` package (``pip install onnx``, or ``pip install ".[onnx]"`` from a fusedmlp
checkout); running the exported file needs a runtime such as onnxruntime::

    model.to_onnx("model.onnx")
    session = onnxruntime.InferenceSession("model.onnx")
    probabilities, label = session.run(None, {"X": X.astype(model.dtype)})
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from . import _codes
from .io import check_finite_model

if TYPE_CHECKING:                          # pragma: no cover
    import onnx

    from .model import MLP

__all__ = ["to_onnx", "OPSET", "LEAKY_SLOPE"]

#: The ONNX operator set the graph is written for (onnxruntime >= 1.12 runs it).
OPSET = 17
#: IR version 8 goes with opset 17: newer onnx packages write a newer one by default, which
#: older runtimes refuse although the graph needs nothing from it.
_IR_VERSION = 8
#: Slope of leaky_relu for x < 0 (the kernels' own, csrc/elementwise.h).
LEAKY_SLOPE = _codes.LEAKY_RELU_SLOPE

PathLike = str | os.PathLike[str]


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "to_onnx needs the onnx package: pip install onnx (from a fusedmlp checkout: "
            'pip install ".[onnx]")'
        ) from None
    return onnx


class _Graph:
    """Collects nodes and constants; each ``op`` call returns the name of its output."""

    def __init__(self, onnx_module, dtype: np.dtype):
        self.onnx, self.dtype = onnx_module, dtype
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def _name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, value, stem: str = "c", dtype=None) -> str:
        name = self._name(stem)
        array = np.asarray(value, dtype=self.dtype if dtype is None else dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def bf16_const(self, value, stem: str) -> str:
        """A float32 tensor holding `value` rounded to bfloat16, stored as BFLOAT16."""
        bits = np.ascontiguousarray(value, dtype=np.float32).view(np.uint32).astype(np.uint64)
        bits[(bits & 0x7F800000) == 0] &= 0x80000000     # subnormals read as zero
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        name = self._name(stem)
        self.initializers.append(self.onnx.helper.make_tensor(
            name, self.onnx.TensorProto.BFLOAT16, bits.shape, bits.tobytes(), raw=True))
        return self.op("Cast", name, to=self.onnx.TensorProto.FLOAT)

    def op(self, op_type: str, *inputs: str, output: Optional[str] = None, **attributes) -> str:
        name = output or self._name(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [name],
                                                     name=f"{op_type}_{len(self.nodes)}",
                                                     **attributes))
        return name


# -- hidden activations: x (a tensor name) -> f(x); one entry per fusedmlp activation -------

def _step(g: _Graph, x: str) -> str:
    return g.op("Relu", g.op("Sign", x))


def _leaky_relu(g: _Graph, x: str) -> str:
    positive = g.op("Greater", x, g.const(0))
    return g.op("Where", positive, x, g.op("Mul", x, g.const(LEAKY_SLOPE)))


def _elu(g: _Graph, x: str) -> str:
    # exp of min(x, 0) only: the branch Where discards must not overflow to inf
    negative_part = g.op("Sub", g.op("Exp", g.op("Min", x, g.const(0))), g.const(1))
    return g.op("Where", g.op("Greater", x, g.const(0)), x, negative_part)


def _softplus(g: _Graph, x: str) -> str:
    tail = g.op("Exp", g.op("Neg", g.op("Abs", x)))                   # exp(-|x|) <= 1
    return g.op("Add", g.op("Relu", x), g.op("Log", g.op("Add", tail, g.const(1))))


_ACTIVATIONS: Dict[str, Callable[[_Graph, str], str]] = {
    "identity": lambda g, x: x,
    "relu": lambda g, x: g.op("Relu", x),
    "sigmoid": lambda g, x: g.op("Sigmoid", x),
    "tanh": lambda g, x: g.op("Tanh", x),
    "step": _step,
    "leaky_relu": _leaky_relu,
    "elu": _elu,
    "softplus": _softplus,
}


# -- output heads: scores -> the graph's named outputs; one entry per MLP output kind ---------

def _softmax_head(g: _Graph, scores: str, n_outputs: int) -> List[tuple]:
    g.op("Softmax", scores, output="probabilities", axis=1)
    g.op("ArgMax", scores, output="label", axis=1, keepdims=0)
    return [("probabilities", g.dtype, ["N", n_outputs]), ("label", np.int64, ["N"])]


def _identity_head(g: _Graph, scores: str, n_outputs: int) -> List[tuple]:
    if n_outputs == 1:                                    # predict returns (n,) then
        g.op("Squeeze", scores, g.const([1], dtype=np.int64), output="predictions")
        return [("predictions", g.dtype, ["N"])]
    g.op("Identity", scores, output="predictions")
    return [("predictions", g.dtype, ["N", n_outputs])]


def _sigmoid_head(g: _Graph, scores: str, n_outputs: int) -> List[tuple]:
    # label: logit > 0 (probability above 1/2), int64
    positive = g.op("Greater", scores, g.const(0))
    if n_outputs == 1:
        # one logistic unit: [sigmoid(-z), sigmoid(z)], as the estimators' predict_proba for
        # two classes, and the (N,) label of predict
        g.op("Concat", g.op("Sigmoid", g.op("Neg", scores)), g.op("Sigmoid", scores),
             output="probabilities", axis=1)
        squeezed = g.op("Squeeze", positive, g.const([1], dtype=np.int64))
        g.op("Cast", squeezed, output="label", to=g.onnx.TensorProto.INT64)
        return [("probabilities", g.dtype, ["N", 2]), ("label", np.int64, ["N"])]
    g.op("Sigmoid", scores, output="probabilities")
    g.op("Cast", positive, output="label", to=g.onnx.TensorProto.INT64)
    return [("probabilities", g.dtype, ["N", n_outputs]), ("label", np.int64, ["N", n_outputs])]


_HEADS = {"softmax": _softmax_head, "identity": _identity_head, "sigmoid": _sigmoid_head}


def build(model: "MLP", *, classes: Optional[Sequence] = None) -> "onnx.ModelProto":
    """The ONNX graph of `model` (see the module docstring for its inputs and outputs).

    With `classes` (a classifier's ``classes_``), ``label`` holds ``classes[argmax]`` instead
    of the index, as the scikit-learn estimators' ``predict``.
    """
    check_finite_model(model, "to_onnx")
    onnx = _require_onnx()
    if model.output not in _HEADS:
        raise ValueError(f"cannot export output={model.output!r} to ONNX yet "
                         f"(supported: {sorted(_HEADS)})")
    dtype = np.dtype(model.dtype)
    g = _Graph(onnx, dtype)
    x = "X"
    last = len(model.layers) - 1
    bf16 = getattr(model, "compute_dtype", None) == "bfloat16"
    for i, layer in enumerate(model.layers):
        # Gemm computes A @ B + C with C broadcast over the rows: the Dense forward exactly
        if bf16:                            # the product's operands rounded to bfloat16
            bf16_x = g.op("Cast", x, to=onnx.TensorProto.BFLOAT16)
            x = g.op("Gemm", g.op("Cast", bf16_x, to=onnx.TensorProto.FLOAT),
                     g.bf16_const(layer.W, f"W{i}"), g.const(layer.b, f"b{i}"))
        else:
            x = g.op("Gemm", x, g.const(layer.W, f"W{i}"), g.const(layer.b, f"b{i}"))
        if i < last:
            x = _ACTIVATIONS[layer.activation](g, x)
    outputs = _HEADS[model.output](g, x, model.n_outputs)
    if classes is not None:
        outputs = _relabel(g, onnx, outputs, np.asarray(classes))

    elem = onnx.helper.np_dtype_to_tensor_dtype
    graph = onnx.helper.make_graph(
        g.nodes, "fusedmlp",
        [onnx.helper.make_tensor_value_info("X", elem(dtype), ["N", model.n_features])],
        [onnx.helper.make_tensor_value_info(name, elem(np.dtype(t)), shape)
         for name, t, shape in outputs],
        initializer=g.initializers)
    proto = onnx.helper.make_model(graph, producer_name="fusedmlp",
                                   opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    from ._version import __version__

    proto.producer_version = __version__
    proto.ir_version = _IR_VERSION
    proto.doc_string = repr(model)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _relabel(g: _Graph, onnx, outputs: List[tuple], classes: np.ndarray) -> List[tuple]:
    """Rename the index output and map it through the classes with Gather."""
    node = next(n for n in g.nodes if list(n.output) == ["label"])
    node.output[0] = "label_index"
    kind: Any
    if classes.dtype.kind in "US":
        classes = classes.astype(object)
        kind = object
    elif classes.dtype.kind == "O":
        kind = object
    else:
        kind = classes.dtype
    table = g._name("classes")
    g.initializers.append(onnx.numpy_helper.from_array(classes, table))
    g.op("Gather", table, "label_index", output="label", axis=0)
    return [(name, kind if name == "label" else t, shape) for name, t, shape in outputs]


def to_onnx(model: "MLP", path: Optional[PathLike] = None, *,
            classes: Optional[Sequence] = None) -> "onnx.ModelProto":
    """Write `model` as an ONNX file at `path` (if not None) and return the ``ModelProto``."""
    proto = build(model, classes=classes)
    if path is not None:
        _require_onnx().save_model(proto, os.fspath(path))
    return proto
