"""ONNX export: the exported graph, run by onnxruntime, gives what the model gives.

Parity on every activation x output x dtype. Exactness: onnxruntime's Gemm (MLAS) and
fusedmlp's products add in different orders, so both are compared with the float64 oracle
within the bounds derived in tests/oracle.py (oracle.Outputs: the scores' sums carried
through the activations and the output; labels only where the top two scores are further
apart than their bounds), never with each other bit for bit.
"""

import numpy as np
import pytest

import fusedmlp

import oracle

onnx = pytest.importorskip("onnx", reason="the onnx package is not installed "
                                          '(pip install ".[onnx]")')
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed "
                                                '(pip install ".[onnx]")')

DTYPES = [np.float32, np.float64]


def run(path_or_proto, X):
    data = path_or_proto if isinstance(path_or_proto, bytes) else str(path_or_proto)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"X": X})))


def inputs(n, d, dtype, seed=0):
    # values on both sides of 0, moderately large, so every activation's branches are used
    return (np.random.default_rng(seed).normal(scale=2.0, size=(n, d))).astype(dtype)


def assert_parity(got, model, X):
    """onnxruntime's outputs and the model's, each within its bound of the float64 values."""
    expected = oracle.Outputs.of(model, X)
    if model.is_classifier:
        assert got["probabilities"].dtype == model.dtype
        for result in (got["probabilities"], model.predict_proba(X)):
            expected.check("predict_proba", result)
        for labels in (got["label"], model.predict(X)):
            expected.check("predict", labels)
    else:
        assert got["predictions"].dtype == model.dtype
        for result in (got["predictions"], model.predict(X)):
            expected.check("predict", result)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", sorted(fusedmlp.ACTIVATIONS))
def test_classifier_parity_for_every_activation(tmp_path, activation, dtype):
    model = fusedmlp.MLP([5, 16, 7, 4], activation=activation, dtype=dtype, seed=1)
    X = inputs(257, 5, dtype)
    path = tmp_path / "model.onnx"
    proto = model.to_onnx(path)
    assert isinstance(proto, onnx.ModelProto)
    assert_parity(run(path, X), model, X)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", sorted(fusedmlp.ACTIVATIONS))
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_regressor_parity_for_every_activation(activation, dtype, n_outputs):
    model = fusedmlp.MLP([3, 9, n_outputs], activation=activation, output="identity",
                         dtype=dtype, seed=2)
    X = inputs(64, 3, dtype, seed=3)
    got = run(model.to_onnx(None).SerializeToString(), X)
    assert got["predictions"].shape == model.predict(X).shape
    assert_parity(got, model, X)


def test_trained_model_and_per_layer_activations():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] ** 2 > 1).astype(int) + (X[:, 2] > 0)
    model = fusedmlp.MLP([6, 12, 12, 3], activation=["elu", "softplus"], seed=0)
    model.fit(X, y, epochs=5, batch_size=32, verbose=0)
    assert_parity(run(model.to_onnx(None).SerializeToString(), X), model, X)


def test_graph_is_standard_and_batch_dimension_is_dynamic():
    model = fusedmlp.MLP([4, 8, 3], activation="tanh", seed=0)
    proto = model.to_onnx(None)
    assert [node.op_type for node in proto.graph.node] == ["Gemm", "Tanh", "Gemm", "Softmax",
                                                           "ArgMax"]
    assert {o.domain for o in proto.opset_import} == {""}          # only the standard domain
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and dims[1].dim_value == 4
    for n in (1, 2, 1000):                                         # any batch size
        X = inputs(n, 4, np.float32)
        assert run(proto.SerializeToString(), X)["probabilities"].shape == (n, 3)


def test_extreme_inputs_match():
    # large logits (softmax must not overflow), zeros, and the activations' far tails
    for activation in sorted(fusedmlp.ACTIVATIONS):
        model = fusedmlp.MLP([2, 4, 3], activation=activation, dtype=np.float64, seed=0)
        X = np.array([[0.0, 0.0], [300.0, -300.0], [-1e3, 1e3], [1e-300, -1e-300]])
        got = run(model.to_onnx(None).SerializeToString(), X)
        expected = oracle.Outputs.of(model, X)
        expected.check("predict_proba", got["probabilities"])
        expected.check("predict_proba", model.predict_proba(X))


@pytest.mark.filterwarnings("ignore:Stochastic optimizer")
def test_estimators_export_labels_and_predictions(tmp_path):
    sklearn = pytest.importorskip("fusedmlp.sklearn", reason="scikit-learn is not installed")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4))
    names = np.array(["cat", "dog", "emu"])
    y = names[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)]
    clf = sklearn.MLPClassifier((8,), max_iter=20, random_state=0).fit(X, y)
    clf.to_onnx(tmp_path / "clf.onnx")
    got = run(tmp_path / "clf.onnx", X.astype(clf.model_.dtype))
    assert_estimator_parity(got, clf, X)

    y_num = np.array([3, 7])[(X[:, 0] > 0).astype(int)]             # integer classes
    clf = sklearn.MLPClassifier((8,), max_iter=20, random_state=0).fit(X, y_num)
    got = run(clf.to_onnx(None).SerializeToString(), X.astype(clf.model_.dtype))
    assert_estimator_parity(got, clf, X)

    reg = sklearn.MLPRegressor((8,), max_iter=20, random_state=0).fit(X, X[:, 0] - X[:, 1])
    got = run(reg.to_onnx(None).SerializeToString(), X.astype(reg.model_.dtype))
    assert got["predictions"].reshape(-1).shape == reg.predict(X).shape
    for result in (got["predictions"], reg.predict(X)):
        oracle.Outputs.of(reg.model_, X).check("predict", result)


def assert_estimator_parity(got, clf, X):
    """The graph's labels (the class names) and probabilities and the estimator's, each
    within its bound of the float64 values of the estimator's model."""
    expected = oracle.Outputs.of(clf.model_, X)
    for labels in (got["label"], clf.predict(X)):
        expected.check("predict", np.searchsorted(clf.classes_, labels))
    for proba in (got["probabilities"], clf.predict_proba(X)):
        assert proba.shape == (len(X), len(clf.classes_))
        # two classes: one sigmoid output, the second column its probability
        expected.check("predict_proba", proba[:, 1:] if clf.model_.output == "sigmoid" else proba)


def test_unfitted_estimator_refuses():
    sklearn = pytest.importorskip("fusedmlp.sklearn", reason="scikit-learn is not installed")
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        sklearn.MLPClassifier().to_onnx(None)


BF16_WHY_NOT = fusedmlp._kernels.bf16_why_not()


@pytest.mark.skipif(bool(BF16_WHY_NOT), reason=f"no bf16 product here: {BF16_WHY_NOT}")
@pytest.mark.parametrize("output", ["softmax", "identity"])
def test_bf16_model_exports_its_own_numerics(output):
    # the graph rounds the products' operands to bfloat16 (Cast) as the model does: it
    # agrees with the model at float32 tolerance, where the float32 graph would not
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 20)).astype(np.float32)
    model = fusedmlp.MLP([20, 64, 48, 5], output=output, seed=0, compute_dtype="bfloat16")
    proto = model.to_onnx(None)
    kinds = {t.data_type for t in proto.graph.initializer}
    assert onnx.TensorProto.BFLOAT16 in kinds          # the weights are stored in bf16
    got = run(proto.SerializeToString(), X)
    name = "probabilities" if output == "softmax" else "predictions"
    scores, score_bound = oracle.bf16_forward_bound(oracle.parameters_of(model),
                                                    oracle.activations_of(model), X)
    if output == "softmax":
        expected, bound, _, _ = oracle.softmax_bound(scores, score_bound, np.float32)
        results = (got[name], model.predict_proba(X))
    else:
        expected, bound = scores, score_bound
        results = (got[name], model.predict(X))
    # the graph and the model, within the bf16 bound: one bfloat16 step is 2**-7, so a bound
    # of a few steps of the largest value is what bfloat16 can promise (vacuous=5e-2); the
    # float32 graph of the same weights lies outside it, so the bound tells the two apart
    for result in results:
        oracle.assert_within(result, expected, bound, vacuous=5e-2)
    model.compute_dtype = None
    float32_graph = run(model.to_onnx(None).SerializeToString(), X)[name]
    with pytest.raises(AssertionError, match="outside the rounding bound"):
        oracle.assert_within(float32_graph, expected, bound, vacuous=5e-2)
