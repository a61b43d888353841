"""The refusal matrix (docs/architecture.md, Inputs refused) at the model's entry points.

Every case is one row of a table: the call, the exception type it must raise and the argument
its message must name. After each refused call, everything the call could have touched --
both models' parameters and random state, the optimisers' hyper-parameters, step counts and
state, a Dense layer's parameters and gradients -- must be bit-identical to before.

Sizes beyond BLAS's 32-bit integers are faked with zero-stride views (``np.broadcast_to``),
so nothing big exists; those calls run under an address-space limit and tracemalloc, which
shows that the refusal comes before any allocation (a call that tried to allocate the huge
array would get a MemoryError instead of the expected refusal).
"""

import io
import json
import re
import resource
import tracemalloc
import zipfile
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest

import fusedmlp

N_FEATURES, N_CLASSES, N_SAMPLES = 4, 3, 5
HUGE = 2**31                                  # one past BLAS's largest int


# --------------------------------------------------------------------------- the world

def make_world():
    rng = np.random.default_rng(0)
    world = SimpleNamespace()
    world.X = rng.normal(size=(N_SAMPLES, N_FEATURES))
    world.y = np.arange(N_SAMPLES) % N_CLASSES
    world.targets = rng.normal(size=(N_SAMPLES, 2))
    world.clf = fusedmlp.MLP([N_FEATURES, 6, N_CLASSES], activation="tanh", seed=0)
    world.clf_opt = fusedmlp.Adam(0.01)
    world.clf.train_step(world.X, world.y, world.clf_opt)        # bind state, take a step
    world.reg = fusedmlp.MLP([N_FEATURES, 6, 2], output="identity", dtype=np.float64, seed=1)
    world.reg_opt = fusedmlp.SGD(0.01, momentum=0.9)
    world.reg.train_step(world.X, world.targets, world.reg_opt)
    world.dense = fusedmlp.Dense(N_FEATURES, N_CLASSES, activation="relu", seed=2)
    world.dense.forward(world.X)
    world.dense.backward(np.ones((N_SAMPLES, N_CLASSES)))
    return world


def snapshot(world):
    """Bytes of everything a refused call must leave alone."""
    state = {}
    for name in ("clf", "reg"):
        model, optimizer = getattr(world, name), getattr(world, name + "_opt")
        state[name] = model._params.tobytes()
        state[name + "_rng"] = repr(model._rng.bit_generator.state)
        state[name + "_opt"] = b"".join(np.asarray(b).tobytes() for b in optimizer._states
                                        if b is not None)
        state[name + "_lr"] = optimizer.lr
    for name in ("W", "b", "dW", "db"):
        state["dense_" + name] = getattr(world.dense, name).tobytes()
    return state


@pytest.fixture
def world():
    return make_world()


def with_value(array, value, where=(0, 0)):
    out = np.array(array, dtype=np.float64)
    out[where] = value
    return out


# --------------------------------------------------------------------------- the table

# Bad X for anything that takes a (n_samples, n_features) matrix: (id, make(X), type).
BAD_X = [
    ("1-D", lambda X: X[0], ValueError),
    ("3-D", lambda X: X[None], ValueError),
    ("0-D", lambda X: np.float64(1.0), ValueError),
    ("too-few-columns", lambda X: X[:, :3], ValueError),
    ("too-many-columns", lambda X: np.hstack([X, X]), ValueError),
    ("nan", lambda X: with_value(X, np.nan), ValueError),
    ("inf", lambda X: with_value(X, np.inf, (2, 1)), ValueError),
    ("-inf", lambda X: with_value(X, -np.inf, (-1, -1)), ValueError),
    ("float16", lambda X: X.astype(np.float16), TypeError),
    ("complex128", lambda X: X.astype(np.complex128), TypeError),
    ("complex64", lambda X: X.astype(np.complex64), TypeError),
    ("object", lambda X: X.astype(object), TypeError),
    ("string", lambda X: X.astype(str), TypeError),
    ("ragged-list", lambda X: [list(X[0]), list(X[1][:2])], TypeError),
    ("None", lambda X: None, TypeError),
]

# Entry points taking X: (id, call(world, X)).
X_ENTRY_POINTS = [
    ("train_step", lambda w, X: w.clf.train_step(X, w.y, w.clf_opt)),
    ("loss_and_gradients", lambda w, X: w.clf.loss_and_gradients(X, w.y)),
    ("fit", lambda w, X: w.clf.fit(X, w.y, epochs=1, batch_size=2, optimizer=w.clf_opt)),
    ("predict", lambda w, X: w.clf.predict(X)),
    ("predict_proba", lambda w, X: w.clf.predict_proba(X)),
    ("forward", lambda w, X: w.clf.forward(X)),
    ("score", lambda w, X: w.clf.score(X, w.y)),
    ("regressor.train_step", lambda w, X: w.reg.train_step(X, w.targets, w.reg_opt)),
    ("regressor.predict", lambda w, X: w.reg.predict(X)),
    ("Dense.forward", lambda w, X: w.dense.forward(X)),
]


def _case(case_id, call, error, argument):
    return pytest.param(call, error, argument, id=case_id)


CASES = [
    _case(f"{entry}-X-{bad}", (lambda c, m: lambda w: c(w, m(w.X)))(call, make), error, r"\bX\b")
    for entry, call in X_ENTRY_POINTS for bad, make, error in BAD_X
]

# Bad targets for a classifier: (id, make(world) -> y, type).
BAD_LABELS = [
    ("label-equal-to-n_classes", lambda w: np.r_[w.y[:-1], N_CLASSES], ValueError),
    ("label-negative", lambda w: np.r_[-1, w.y[1:]], ValueError),
    ("label-huge", lambda w: np.r_[w.y[:-1], 2**62], ValueError),
    ("label-non-integral", lambda w: w.y + 0.5, ValueError),
    ("label-nan", lambda w: with_value(w.y[None], np.nan)[0], ValueError),
    ("label-inf", lambda w: with_value(w.y[None], np.inf)[0], ValueError),
    ("labels-too-few", lambda w: w.y[:-1], ValueError),
    ("labels-too-many", lambda w: np.r_[w.y, 0], ValueError),
    ("labels-3-D", lambda w: w.y[:, None, None], ValueError),
    ("labels-string", lambda w: w.y.astype(str), TypeError),
    ("labels-complex", lambda w: w.y.astype(np.complex128), TypeError),
    ("labels-object", lambda w: w.y.astype(object), TypeError),
    ("probabilities-wrong-columns", lambda w: np.full((N_SAMPLES, 2), 0.5), ValueError),
    ("probabilities-wrong-rows", lambda w: np.full((N_SAMPLES - 1, N_CLASSES), 1 / 3), ValueError),
    ("probabilities-nan", lambda w: with_value(np.full((N_SAMPLES, N_CLASSES), 1 / 3), np.nan), ValueError),
    ("probabilities-float16", lambda w: np.full((N_SAMPLES, N_CLASSES), 1 / 3, np.float16), TypeError),
]

Y_ENTRY_POINTS = [
    ("train_step", lambda w, y: w.clf.train_step(w.X, y, w.clf_opt)),
    ("loss_and_gradients", lambda w, y: w.clf.loss_and_gradients(w.X, y)),
    ("fit", lambda w, y: w.clf.fit(w.X, y, epochs=1, batch_size=2, optimizer=w.clf_opt)),
]

CASES += [
    _case(f"{entry}-y-{bad}", (lambda c, m: lambda w: c(w, m(w)))(call, make), error, r"\by\b")
    for entry, call in Y_ENTRY_POINTS for bad, make, error in BAD_LABELS
]

# Bad regression targets (model with 2 outputs).
BAD_TARGETS = [
    ("targets-nan", lambda w: with_value(w.targets, np.nan), ValueError),
    ("targets-inf", lambda w: with_value(w.targets, np.inf, (4, 1)), ValueError),
    ("targets-1-D", lambda w: w.targets[:, 0], ValueError),
    ("targets-wrong-columns", lambda w: np.ones((N_SAMPLES, 3)), ValueError),
    ("targets-wrong-rows", lambda w: w.targets[:-1], ValueError),
    ("targets-float16", lambda w: w.targets.astype(np.float16), TypeError),
    ("targets-complex64", lambda w: w.targets.astype(np.complex64), TypeError),
    ("targets-complex128", lambda w: w.targets.astype(np.complex128), TypeError),
    ("targets-string", lambda w: w.targets.astype(str), TypeError),
]

REGRESSION_ENTRY_POINTS = [
    ("regressor.train_step", lambda w, y: w.reg.train_step(w.X, y, w.reg_opt)),
    ("regressor.loss_and_gradients", lambda w, y: w.reg.loss_and_gradients(w.X, y)),
    ("regressor.fit", lambda w, y: w.reg.fit(w.X, y, epochs=1, batch_size=2, optimizer=w.reg_opt)),
]

CASES += [
    _case(f"{entry}-y-{bad}", (lambda c, m: lambda w: c(w, m(w)))(call, make), error, r"\by\b")
    for entry, call in REGRESSION_ENTRY_POINTS for bad, make, error in BAD_TARGETS
]

# Everything else, one row each: (id, call(world), type, argument pattern).
EMPTY_X = np.empty((0, N_FEATURES))
EMPTY_Y = np.empty(0, np.int64)
MISC = [
    # empty training sets
    ("train_step-empty", lambda w: w.clf.train_step(EMPTY_X, EMPTY_Y, w.clf_opt), ValueError, r"\bX\b"),
    ("loss_and_gradients-empty", lambda w: w.clf.loss_and_gradients(EMPTY_X, EMPTY_Y), ValueError, r"\bX\b"),
    ("fit-empty", lambda w: w.clf.fit(EMPTY_X, EMPTY_Y, epochs=1), ValueError, r"\bX\b"),
    ("regressor.fit-empty", lambda w: w.reg.fit(EMPTY_X, np.empty((0, 2)), epochs=1), ValueError, r"\bX\b"),
    # sample weights
    ("train_step-sample_weight-shape", lambda w: w.clf.train_step(w.X, w.y, w.clf_opt, sample_weight=np.ones(3)), ValueError, "sample_weight"),
    ("train_step-sample_weight-negative", lambda w: w.clf.train_step(w.X, w.y, w.clf_opt, sample_weight=-np.ones(N_SAMPLES)), ValueError, "sample_weight"),
    ("train_step-sample_weight-nan", lambda w: w.clf.train_step(w.X, w.y, w.clf_opt, sample_weight=with_value(np.ones((1, N_SAMPLES)), np.nan)[0]), ValueError, "sample_weight"),
    ("train_step-sample_weight-zero-sum", lambda w: w.clf.train_step(w.X, w.y, w.clf_opt, sample_weight=np.zeros(N_SAMPLES)), ValueError, "sample_weight"),
    ("fit-sample_weight-negative", lambda w: w.clf.fit(w.X, w.y, epochs=1, sample_weight=-np.ones(N_SAMPLES)), ValueError, "sample_weight"),
    ("fit-sample_weight-string", lambda w: w.clf.fit(w.X, w.y, epochs=1, sample_weight=np.array(["1"] * N_SAMPLES)), TypeError, "sample_weight"),
    # the optimiser argument
    ("train_step-optimizer-a-string", lambda w: w.clf.train_step(w.X, w.y, "adam"), TypeError, "optimizer"),
    ("train_step-optimizer-None", lambda w: w.clf.train_step(w.X, w.y, None), TypeError, "optimizer"),
    ("train_step-optimizer-of-another-model", lambda w: w.clf.train_step(w.X, w.y, w.reg_opt), ValueError, "optimizer"),
    ("fit-optimizer-unknown-name", lambda w: w.clf.fit(w.X, w.y, epochs=1, optimizer="newton"), ValueError, "optimizer"),
    ("fit-optimizer-a-number", lambda w: w.clf.fit(w.X, w.y, epochs=1, optimizer=0.1), (ValueError, TypeError), "optimizer"),
    # fit's hyper-parameters
    ("fit-epochs-zero", lambda w: w.clf.fit(w.X, w.y, epochs=0), ValueError, "epochs"),
    ("fit-epochs-negative", lambda w: w.clf.fit(w.X, w.y, epochs=-3), ValueError, "epochs"),
    ("fit-epochs-float", lambda w: w.clf.fit(w.X, w.y, epochs=1.5), TypeError, "epochs"),
    ("fit-batch_size-zero", lambda w: w.clf.fit(w.X, w.y, epochs=1, batch_size=0), ValueError, "batch_size"),
    ("fit-batch_size-string", lambda w: w.clf.fit(w.X, w.y, epochs=1, batch_size="32"), TypeError, "batch_size"),
    ("fit-patience-zero", lambda w: w.clf.fit(w.X, w.y, epochs=1, patience=0), ValueError, "patience"),
    ("fit-lr_schedule-unknown", lambda w: w.clf.fit(w.X, w.y, epochs=1, lr_schedule="warmup"), ValueError, "lr_schedule"),
    ("fit-weight_decay-negative", lambda w: w.clf.fit(w.X, w.y, epochs=1, optimizer=fusedmlp.Adam(), weight_decay=-1.0), ValueError, "weight_decay"),
    ("fit-clip_norm-negative", lambda w: w.clf.fit(w.X, w.y, epochs=1, optimizer=fusedmlp.Adam(), clip_norm=-1.0), ValueError, "clip_norm"),
    ("fit-validation_fraction-above-1", lambda w: w.clf.fit(w.X, w.y, epochs=1, validation_fraction=1.5), ValueError, "validation_fraction"),
    ("fit-validation_fraction-negative", lambda w: w.clf.fit(w.X, w.y, epochs=1, validation_fraction=-0.2), ValueError, "validation_fraction"),
    ("fit-validation_data-not-a-pair", lambda w: w.clf.fit(w.X, w.y, epochs=1, validation_data=w.X), TypeError, "validation_data"),
    ("fit-validation_data-X-nan", lambda w: w.clf.fit(w.X, w.y, epochs=1, validation_data=(with_value(w.X, np.nan), w.y)), ValueError, r"validation_data|\bX\b"),
    ("fit-validation_data-X-columns", lambda w: w.clf.fit(w.X, w.y, epochs=1, validation_data=(w.X[:, :2], w.y)), ValueError, r"validation_data|\bX\b"),
    ("fit-validation_data-y-rows", lambda w: w.clf.fit(w.X, w.y, epochs=1, validation_data=(w.X, w.y[:2])), ValueError, r"validation_data|\by\b"),
    ("fit-validation_data-label-out-of-range", lambda w: w.clf.fit(w.X, w.y, epochs=1, validation_data=(w.X, w.y + N_CLASSES)), ValueError, r"validation_data|\by\b"),
    ("fit-validation_data-label-non-integral", lambda w: w.clf.fit(w.X, w.y, epochs=1, validation_data=(w.X, w.y + 0.5)), ValueError, r"validation_data|\by\b"),
    ("regressor.fit-validation_data-y-nan", lambda w: w.reg.fit(w.X, w.targets, epochs=1, validation_data=(w.X, with_value(w.targets, np.nan))), ValueError, r"validation_data|\by\b"),
    # score's y
    ("score-y-too-few", lambda w: w.clf.score(w.X, w.y[:-2]), ValueError, r"\by\b"),
    ("score-y-string", lambda w: w.clf.score(w.X, w.y.astype(str)), TypeError, r"\by\b"),
    ("regressor.score-y-nan", lambda w: w.reg.score(w.X, with_value(w.targets, np.nan)), ValueError, r"\by\b"),
    ("regressor.score-y-wrong-shape", lambda w: w.reg.score(w.X, np.ones((N_SAMPLES, 3))), ValueError, r"\by\b"),
    # MLP construction
    ("MLP-layer_sizes-one-size", lambda w: fusedmlp.MLP([4]), ValueError, "layer_sizes"),
    ("MLP-layer_sizes-zero", lambda w: fusedmlp.MLP([4, 0, 3]), ValueError, "layer_sizes"),
    ("MLP-layer_sizes-negative", lambda w: fusedmlp.MLP([4, -2]), ValueError, "layer_sizes"),
    ("MLP-layer_sizes-float", lambda w: fusedmlp.MLP([4, 2.5]), TypeError, "layer_sizes"),
    ("MLP-layer_sizes-bool", lambda w: fusedmlp.MLP([4, True]), TypeError, "layer_sizes"),
    ("MLP-layer_sizes-int", lambda w: fusedmlp.MLP(5), TypeError, "layer_sizes"),
    ("MLP-layer_sizes-string", lambda w: fusedmlp.MLP("43"), TypeError, "layer_sizes"),
    ("MLP-activation-unknown", lambda w: fusedmlp.MLP([4, 3, 2], activation="swish"), ValueError, "activation"),
    ("MLP-activation-wrong-count", lambda w: fusedmlp.MLP([4, 3, 3, 2], activation=["relu"]), ValueError, "activation"),
    ("MLP-activation-a-number", lambda w: fusedmlp.MLP([4, 3, 2], activation=3), (TypeError, ValueError), "activation"),
    ("MLP-output-unknown", lambda w: fusedmlp.MLP([4, 2], output="softsign"), ValueError, "output"),
    ("MLP-output-a-list", lambda w: fusedmlp.MLP([4, 2], output=["softmax"]), (TypeError, ValueError), "output"),
    ("MLP-dtype-float16", lambda w: fusedmlp.MLP([4, 2], dtype=np.float16), TypeError, "dtype"),
    ("MLP-dtype-'float16'", lambda w: fusedmlp.MLP([4, 2], dtype="float16"), TypeError, "dtype"),
    ("MLP-dtype-int32", lambda w: fusedmlp.MLP([4, 2], dtype="int32"), TypeError, "dtype"),
    ("MLP-dtype-complex", lambda w: fusedmlp.MLP([4, 2], dtype=np.complex128), TypeError, "dtype"),
    ("MLP-dtype-object", lambda w: fusedmlp.MLP([4, 2], dtype=object), TypeError, "dtype"),
    ("MLP-dtype-'banana'", lambda w: fusedmlp.MLP([4, 2], dtype="banana"), TypeError, "dtype"),
    ("MLP-dtype-'float'-typo", lambda w: fusedmlp.MLP([4, 2], dtype="flaot32"), TypeError, "dtype"),
    ("MLP-init-unknown", lambda w: fusedmlp.MLP([4, 2], init="kaiming_fancy"), ValueError, "init"),
    # Dense construction
    ("Dense-n_in-zero", lambda w: fusedmlp.Dense(0, 3), ValueError, "n_in"),
    ("Dense-n_in-negative", lambda w: fusedmlp.Dense(-1, 3), ValueError, "n_in"),
    ("Dense-n_in-float", lambda w: fusedmlp.Dense(2.5, 3), TypeError, "n_in"),
    ("Dense-n_in-string", lambda w: fusedmlp.Dense("4", 3), TypeError, "n_in"),
    ("Dense-n_out-zero", lambda w: fusedmlp.Dense(4, 0), ValueError, "n_out"),
    ("Dense-activation-unknown", lambda w: fusedmlp.Dense(4, 3, activation="gelu"), ValueError, "activation"),
    ("Dense-dtype-float16", lambda w: fusedmlp.Dense(4, 3, dtype=np.float16), TypeError, "dtype"),
    ("Dense-dtype-'int64'", lambda w: fusedmlp.Dense(4, 3, dtype="int64"), TypeError, "dtype"),
    ("Dense-dtype-'banana'", lambda w: fusedmlp.Dense(4, 3, dtype="banana"), TypeError, "dtype"),
    ("Dense-init-unknown", lambda w: fusedmlp.Dense(4, 3, init="orthogonal"), ValueError, "init"),
    # Dense.backward
    ("Dense.backward-dA-wrong-columns", lambda w: w.dense.backward(np.ones((N_SAMPLES, 2))), ValueError, "dA"),
    ("Dense.backward-dA-wrong-rows", lambda w: w.dense.backward(np.ones((N_SAMPLES - 1, N_CLASSES))), ValueError, "dA"),
    ("Dense.backward-dA-1-D", lambda w: w.dense.backward(np.ones(N_CLASSES)), ValueError, "dA"),
    ("Dense.backward-dA-nan", lambda w: w.dense.backward(with_value(np.ones((N_SAMPLES, N_CLASSES)), np.nan)), ValueError, "dA"),
    ("Dense.backward-dA-float16", lambda w: w.dense.backward(np.ones((N_SAMPLES, N_CLASSES), np.float16)), TypeError, "dA"),
    ("Dense.backward-dA-complex", lambda w: w.dense.backward(np.ones((N_SAMPLES, N_CLASSES), complex)), TypeError, "dA"),
    ("Dense.backward-dA-string", lambda w: w.dense.backward(np.ones((N_SAMPLES, N_CLASSES)).astype(str)), TypeError, "dA"),
    ("Dense.W-assign-wrong-shape", lambda w: setattr(w.dense, "W", np.ones((3, 3))), ValueError, r"\bW\b"),
    ("Dense.W-assign-nan", lambda w: setattr(w.dense, "W", with_value(np.ones((N_FEATURES, N_CLASSES)), np.nan)), ValueError, r"\bW\b"),
    ("MLP.layer.b-assign-nan", lambda w: setattr(w.clf.layers[0], "b", with_value(np.ones((1, 6)), np.nan)[0]), ValueError, r"\bb\b"),
    ("MLP.set_params_vector-wrong-size", lambda w: w.clf.set_params_vector(np.ones(3)), ValueError, "vector"),
    ("MLP.set_params_vector-inf", lambda w: w.clf.set_params_vector(with_value(w.clf.get_params_vector()[None], np.inf)[0]), ValueError, "vector"),
    # optimisers
    ("SGD-lr-negative", lambda w: fusedmlp.SGD(lr=-0.1), ValueError, r"\blr\b"),
    ("SGD-lr-zero", lambda w: fusedmlp.SGD(lr=0.0), ValueError, r"\blr\b"),
    ("SGD-lr-nan", lambda w: fusedmlp.SGD(lr=float("nan")), ValueError, r"\blr\b"),
    ("SGD-lr-inf", lambda w: fusedmlp.SGD(lr=float("inf")), ValueError, r"\blr\b"),
    ("SGD-lr-string", lambda w: fusedmlp.SGD(lr="0.1"), TypeError, r"\blr\b"),
    ("SGD-lr-None", lambda w: fusedmlp.SGD(lr=None), TypeError, r"\blr\b"),
    ("SGD-momentum-one", lambda w: fusedmlp.SGD(0.1, momentum=1.0), ValueError, "momentum"),
    ("SGD-momentum-negative", lambda w: fusedmlp.SGD(0.1, momentum=-0.5), ValueError, "momentum"),
    ("SGD-nesterov-without-momentum", lambda w: fusedmlp.SGD(0.1, nesterov=True), ValueError, "nesterov"),
    ("SGD-weight_decay-negative", lambda w: fusedmlp.SGD(0.1, weight_decay=-1e-4), ValueError, "weight_decay"),
    ("SGD-weight_decay-inf", lambda w: fusedmlp.SGD(0.1, weight_decay=float("inf")), ValueError, "weight_decay"),
    ("Adam-lr-negative", lambda w: fusedmlp.Adam(lr=-1e-3), ValueError, r"\blr\b"),
    ("Adam-beta1-one", lambda w: fusedmlp.Adam(beta1=1.0), ValueError, "beta1"),
    ("Adam-beta1-negative", lambda w: fusedmlp.Adam(beta1=-0.1), ValueError, "beta1"),
    ("Adam-beta1-nan", lambda w: fusedmlp.Adam(beta1=float("nan")), ValueError, "beta1"),
    ("Adam-beta2-one", lambda w: fusedmlp.Adam(beta2=1.0), ValueError, "beta2"),
    ("Adam-beta2-above-one", lambda w: fusedmlp.Adam(beta2=1.5), ValueError, "beta2"),
    ("Adam-eps-zero", lambda w: fusedmlp.Adam(eps=0.0), ValueError, "eps"),
    ("Adam-eps-negative", lambda w: fusedmlp.Adam(eps=-1e-8), ValueError, "eps"),
    ("Adam-weight_decay-negative", lambda w: fusedmlp.Adam(weight_decay=-0.1), ValueError, "weight_decay"),
    ("AdamW-beta1-one", lambda w: fusedmlp.AdamW(beta1=1.0), ValueError, "beta1"),
    ("AdamW-weight_decay-negative", lambda w: fusedmlp.AdamW(weight_decay=-0.01), ValueError, "weight_decay"),
    ("RMSProp-alpha-one", lambda w: fusedmlp.RMSProp(alpha=1.0), ValueError, "alpha"),
    ("RMSProp-alpha-negative", lambda w: fusedmlp.RMSProp(alpha=-0.5), ValueError, "alpha"),
    ("RMSProp-eps-zero", lambda w: fusedmlp.RMSProp(eps=0.0), ValueError, "eps"),
    ("RMSProp-lr-zero", lambda w: fusedmlp.RMSProp(lr=0.0), ValueError, r"\blr\b"),
    ("AdaGrad-eps-zero", lambda w: fusedmlp.AdaGrad(eps=0.0), ValueError, "eps"),
    ("AdaGrad-lr-negative", lambda w: fusedmlp.AdaGrad(lr=-0.01), ValueError, r"\blr\b"),
    ("Optimizer.lr-set-negative", lambda w: setattr(w.clf_opt, "lr", -1.0), ValueError, r"\blr\b"),
    ("Optimizer.lr-set-nan", lambda w: setattr(w.reg_opt, "lr", float("nan")), ValueError, r"\blr\b"),
]
CASES += [_case(case_id, call, error, argument) for case_id, call, error, argument in MISC]


@pytest.mark.parametrize("call, error, argument", CASES)
def test_refusal(world, call, error, argument):
    before = snapshot(world)
    with pytest.raises(error) as caught:
        call(world)
    message = str(caught.value)
    assert re.search(argument, message), f"the message does not name {argument!r}: {message!r}"
    after = snapshot(world)
    changed = [key for key in before if before[key] != after[key]]
    assert not changed, f"a refused call changed {changed}"


# --------------------------------------------------------------------------- model files

def _valid_file_bytes(world, directory):
    path = directory / "valid.npz"
    world.clf.save(path, optimizer=world.clf_opt)
    return path.read_bytes()


def _npz_with(world, directory, *, header_changes=None, arrays_changes=None, drop=()):
    """The bytes of a model file like a valid one, with header fields or arrays changed."""
    with np.load(io.BytesIO(_valid_file_bytes(world, directory)), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(arrays["header"].tobytes().decode())
    header.update(header_changes or {})
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    arrays.update(arrays_changes or {})
    for name in drop:
        arrays.pop(name)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _flip_middle(data):
    """Flip 64 bytes in the middle of the parameters' member (load reads only the members it
    needs: a corrupt optimiser member is refused only with_optimizer=True, see test_io.py)."""
    data = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("params.npy")
    middle = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    for i in range(middle - 32, middle + 32):
        data[i] ^= 0xFF
    return bytes(data)


def _pickled_array_file(world, directory):
    buffer = io.BytesIO()
    np.savez(buffer, header=np.array([{"format": "fusedmlp.MLP"}], dtype=object),
             params=np.zeros(3))
    return buffer.getvalue()


def _garbage_entry_file(world, directory):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("header.npy", b"not an npy file")
        archive.writestr("params.npy", b"\x93NUMPY garbage")
    return buffer.getvalue()


def _header_with(**changes):
    return lambda w, d: _npz_with(w, d, header_changes=changes)


def _params(make):
    return lambda w, d: _npz_with(w, d, arrays_changes={"params": make(w)})


# (id, make(world, directory) -> bytes of a file that load must refuse)
LOAD_CASES = [
    ("empty-file", lambda w, d: b""),
    ("not-a-zip", lambda w, d: b"this is not a model file\n" * 10),
    ("truncated-half", lambda w, d: _valid_file_bytes(w, d)[: len(_valid_file_bytes(w, d)) // 2]),
    ("truncated-last-byte", lambda w, d: _valid_file_bytes(w, d)[:-1]),
    ("corrupt-bytes", lambda w, d: _flip_middle(_valid_file_bytes(w, d))),
    ("unknown-version", _header_with(version=99)),
    ("version-missing", _header_with(version=None)),
    ("wrong-format-name", _header_with(format="keras")),
    ("layer_sizes-negative", _header_with(layer_sizes=[4, -6, 3])),
    ("layer_sizes-not-a-list", _header_with(layer_sizes="4,6,3")),
    ("layer_sizes-inconsistent", _header_with(layer_sizes=[3, 6, 4])),
    ("activation-unknown", _header_with(activations=["swish"])),
    ("activations-too-many", _header_with(activations=["relu", "relu"])),
    ("output-unknown", _header_with(output="softsign")),
    ("dtype-float16", _header_with(dtype="float16")),
    ("n_parameters-wrong", _header_with(n_parameters=7)),
    ("header-not-json", lambda w, d: _npz_with(
        w, d, arrays_changes={"header": np.frombuffer(b"{nope", np.uint8)})),
    ("header-a-json-list", lambda w, d: _npz_with(
        w, d, arrays_changes={"header": np.frombuffer(b"[1, 2]", np.uint8)})),
    ("header-missing", lambda w, d: _npz_with(w, d, drop=("header",))),
    ("params-missing", lambda w, d: _npz_with(w, d, drop=("params",))),
    ("params-too-short", _params(lambda w: np.zeros(5, np.float32))),
    ("params-wrong-dtype", _params(lambda w: w.clf._params.astype(np.float64))),
    ("params-2-D", _params(lambda w: w.clf._params[None])),
    ("params-nan", _params(lambda w: with_value(w.clf._params[None], np.nan)[0].astype(np.float32))),
    ("object-array-needs-pickle", _pickled_array_file),
    ("npy-entry-garbage", _garbage_entry_file),
]


@pytest.mark.parametrize("make", [pytest.param(m, id=i) for i, m in LOAD_CASES])
def test_load_refuses(world, tmp_path, make):
    path = tmp_path / "model.npz"
    path.write_bytes(make(world, tmp_path))
    with pytest.raises(ValueError) as caught:
        fusedmlp.load(path)
    assert str(path) in str(caught.value), caught.value


@pytest.mark.parametrize("state", [np.zeros(3, np.float32), np.zeros(51, np.float64)],
                         ids=["too-short", "wrong-dtype"])
def test_load_refuses_optimizer_state_that_does_not_fit(world, tmp_path, state):
    path = tmp_path / "model.npz"
    path.write_bytes(_npz_with(world, tmp_path, arrays_changes={"optimizer_state_0": state}))
    with pytest.raises(ValueError) as caught:
        fusedmlp.load(path, with_optimizer=True)
    assert str(path) in str(caught.value)


def test_load_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        fusedmlp.load(tmp_path / "absent.npz")


# --------------------------------------------------------------------------- sizes beyond BLAS

def _address_space_in_use():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@contextmanager
def no_big_allocation(headroom=1 << 30):
    """Cap the address space at what is in use plus `headroom` and trace NumPy's allocations:
    an attempt to allocate a 2**31-row array fails (MemoryError) instead of paging the
    machine to death, and the traced peak shows what was allocated."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space_in_use() + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    tracemalloc.start()
    peak = {}
    try:
        yield peak
    finally:
        peak["bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def huge_rows(dtype, n_columns=N_FEATURES):
    """A (2**31, n_columns) array of zeros that occupies one element (zero strides)."""
    return np.broadcast_to(np.zeros((), dtype), (HUGE, n_columns))


HUGE_LABELS = np.broadcast_to(np.zeros((), np.int64), (HUGE,))

HUGE_CASES = [
    ("predict-float32-model-float32-X", lambda w: w.clf.predict(huge_rows(np.float32)), ValueError, r"\bX\b"),
    ("predict-float32-model-float64-X", lambda w: w.clf.predict(huge_rows(np.float64)), ValueError, r"\bX\b"),
    ("predict_proba-int64-X", lambda w: w.clf.predict_proba(huge_rows(np.int64)), ValueError, r"\bX\b"),
    ("forward-float64-model-float64-X", lambda w: w.reg.forward(huge_rows(np.float64)), ValueError, r"\bX\b"),
    ("forward-float64-model-float32-X", lambda w: w.reg.forward(huge_rows(np.float32)), ValueError, r"\bX\b"),
    ("train_step", lambda w: w.clf.train_step(huge_rows(np.float32), HUGE_LABELS, w.clf_opt), ValueError, r"\bX\b"),
    ("train_step-float64-X", lambda w: w.clf.train_step(huge_rows(np.float64), HUGE_LABELS, w.clf_opt), ValueError, r"\bX\b"),
    ("loss_and_gradients", lambda w: w.reg.loss_and_gradients(huge_rows(np.float64), huge_rows(np.float64, 2)), ValueError, r"\bX\b"),
    ("fit", lambda w: w.clf.fit(huge_rows(np.float32), HUGE_LABELS, epochs=1), ValueError, r"\bX\b"),
    ("fit-float64-X", lambda w: w.clf.fit(huge_rows(np.float64), HUGE_LABELS, epochs=1), ValueError, r"\bX\b"),
    ("Dense.forward", lambda w: w.dense.forward(huge_rows(np.float32)), ValueError, r"\bX\b"),
    ("Dense.forward-float64-X", lambda w: w.dense.forward(huge_rows(np.float64)), ValueError, r"\bX\b"),
    ("MLP-hidden-width", lambda w: fusedmlp.MLP([4, HUGE, 3]), ValueError, "layer_sizes"),
    ("MLP-input-width", lambda w: fusedmlp.MLP([HUGE, 3]), ValueError, "layer_sizes"),
    ("Dense-n_in", lambda w: fusedmlp.Dense(HUGE, 3), ValueError, "n_in"),
    ("Dense-n_out", lambda w: fusedmlp.Dense(3, HUGE), ValueError, "n_out"),
]


@pytest.mark.parametrize("call, error, argument",
                         [pytest.param(c, e, a, id=i) for i, c, e, a in HUGE_CASES])
def test_refusal_beyond_blas_int(world, call, error, argument):
    before = snapshot(world)
    with no_big_allocation() as peak:
        try:
            call(world)
        except MemoryError:
            pytest.fail("the call tried to allocate the huge array before refusing it")
        except error as exc:
            caught = exc
        else:
            pytest.fail("the call was not refused")
    assert re.search(argument, str(caught)), f"the message does not name {argument!r}: {caught}"
    assert peak["bytes"] < 1 << 20, f"{peak['bytes']} bytes allocated before the refusal"
    assert snapshot(world) == before

