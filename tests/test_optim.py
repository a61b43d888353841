"""Optimiser updates against PyTorch's formulas (tests/oracle.py).

Exactness: the reference gets the gradients the model itself computes (their own accuracy is
test_model's), so what is compared is the update, fusedmlp's own elementwise loop: within a
rounding bound derived from its few operations per element and step (oracle.update_bound), bit
for bit only between two runs of the same loop on the same values."""

import gc

import numpy as np
import pytest

import fusedmlp

import oracle

N_STEPS = 6

# (id, fusedmlp optimiser factory, reference optimiser factory, clip_norm)
CASES = [
    ("sgd", lambda: fusedmlp.SGD(0.1), lambda: oracle.ReferenceOptimizer("sgd", 0.1), 0.0),
    ("sgd-momentum", lambda: fusedmlp.SGD(0.1, momentum=0.9),
     lambda: oracle.ReferenceOptimizer("sgd", 0.1, momentum=0.9), 0.0),
    ("sgd-nesterov", lambda: fusedmlp.SGD(0.1, momentum=0.8, nesterov=True),
     lambda: oracle.ReferenceOptimizer("sgd", 0.1, momentum=0.8, nesterov=True), 0.0),
    ("sgd-momentum-decay", lambda: fusedmlp.SGD(0.1, momentum=0.9, weight_decay=0.3),
     lambda: oracle.ReferenceOptimizer("sgd", 0.1, momentum=0.9, weight_decay=0.3), 0.0),
    ("sgd-clip", lambda: fusedmlp.SGD(0.1, momentum=0.5),
     lambda: oracle.ReferenceOptimizer("sgd", 0.1, momentum=0.5, clip_norm=0.05), 0.05),
    ("adam", lambda: fusedmlp.Adam(0.01), lambda: oracle.ReferenceOptimizer("adam", 0.01), 0.0),
    ("adam-decay", lambda: fusedmlp.Adam(0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.5),
     lambda: oracle.ReferenceOptimizer("adam", 0.01, beta1=0.8, beta2=0.99, eps=1e-6,
                                    weight_decay=0.5), 0.0),
    ("adam-clip", lambda: fusedmlp.Adam(0.01, weight_decay=0.1),
     lambda: oracle.ReferenceOptimizer("adam", 0.01, weight_decay=0.1, clip_norm=0.05), 0.05),
    ("adamw", lambda: fusedmlp.AdamW(0.01, weight_decay=0.5),
     lambda: oracle.ReferenceOptimizer("adamw", 0.01, weight_decay=0.5), 0.0),
    ("rmsprop", lambda: fusedmlp.RMSProp(0.01),
     lambda: oracle.ReferenceOptimizer("rmsprop", 0.01), 0.0),
    ("rmsprop-decay", lambda: fusedmlp.RMSProp(0.01, alpha=0.9, weight_decay=0.5),
     lambda: oracle.ReferenceOptimizer("rmsprop", 0.01, alpha=0.9, weight_decay=0.5), 0.0),
    ("adagrad", lambda: fusedmlp.AdaGrad(0.1),
     lambda: oracle.ReferenceOptimizer("adagrad", 0.1), 0.0),
    ("adagrad-decay-clip", lambda: fusedmlp.AdaGrad(0.1, weight_decay=0.5),
     lambda: oracle.ReferenceOptimizer("adagrad", 0.1, weight_decay=0.5, clip_norm=0.05), 0.05),
]


def _model(dtype, seed=0):
    model = fusedmlp.MLP([5, 6, 4, 3], activation="tanh", dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 50)
    for layer in model.layers:           # biases far from 0, so that decaying them would show
        layer.b = rng.uniform(0.5, 1.5, layer.n_out)
    return model


def _batches(n=N_STEPS, m=8):
    rng = np.random.default_rng(7)
    return [(rng.normal(size=(m, 5)), rng.integers(0, 3, m)) for _ in range(n)]


def _params_close(model, expected, bounds):
    for layer, (W, b), (bound_W, bound_b) in zip(model.layers, expected, bounds):
        oracle.assert_within(layer.W, W, bound_W)
        oracle.assert_within(layer.b, b, bound_b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_train_steps_match_reference(case, dtype):
    _, make, make_reference, clip_norm = case
    model = _model(dtype)
    opt = make()
    if clip_norm:
        opt.clip_norm = clip_norm
    reference = make_reference()
    params, activations = oracle.parameters_of(model), oracle.activations_of(model)
    clipped_steps = 0
    grads_so_far = []
    for step, (X, y) in enumerate(_batches(), start=1):
        X = X.astype(dtype)
        expected_loss, loss_bound, _, _ = oracle.loss_and_gradients_bound(
            params, activations, "softmax", X, y, dtype)
        # Adaptive steps divide by |g|: a gradient's rounding (large, relatively, for entries
        # near 0) would dominate the comparison. Gradients are tested in test_model.py; the
        # update gets the gradients the model itself computes (train_step computes the same,
        # test_step_after_loss_and_gradients_equals_train_step).
        grads = [(dW.astype(np.float64), db.astype(np.float64))
                 for dW, db in model.loss_and_gradients(X, y)[1]]
        grads_so_far.append(grads)
        norm = np.sqrt(sum((g ** 2).sum() for pair in grads for g in pair))
        clipped_steps += bool(clip_norm) and norm > clip_norm
        loss = model.train_step(X, y, opt)
        oracle.assert_within(loss, expected_loss, loss_bound)    # the loss before the step
        bounds = oracle.update_bound(make_reference, params, grads_so_far, dtype,
                                     model.n_parameters if clip_norm else 0)
        params = reference.step(params, grads)
        _params_close(model, params, bounds)
        # the model's state and the reference's part by their roundings step by step:
        # continue from the model's own parameters, so each step is compared on its own
        params = oracle.parameters_of(model)
        assert opt.steps == step
    if clip_norm:
        assert clipped_steps == N_STEPS           # the clipping path was exercised


def test_weight_decay_touches_weights_only():
    for kind, make in [("sgd", fusedmlp.SGD), ("adam", fusedmlp.Adam), ("adamw", fusedmlp.AdamW),
                       ("rmsprop", fusedmlp.RMSProp), ("adagrad", fusedmlp.AdaGrad)]:
        model = _model(np.float64)
        before = oracle.parameters_of(model)
        opt = make(0.1, weight_decay=0.5)
        for layer in model.layers:          # zero gradients: only the decay can move anything
            layer.dW[...] = 0
            layer.db[...] = 0
        opt.step(model)
        zero = [(np.zeros_like(W), np.zeros_like(b)) for W, b in before]
        reference = lambda: oracle.ReferenceOptimizer(kind, 0.1, weight_decay=0.5)  # noqa: E731
        expected = reference().step(before, zero)
        _params_close(model, expected, oracle.update_bound(reference, before, [zero], np.float64))
        for layer, (W, b) in zip(model.layers, before):
            # a zero gradient and no decay: the bias's update is exactly 0
            oracle.assert_same_bits(layer.b, b, why=oracle.EXACT)
            assert not np.any(layer.W == W)
        if kind in ("sgd", "adamw"):
            for layer, (W, _) in zip(model.layers, before):
                # W - lr * wd * W (or W * (1 - lr * wd)): two roundings of W's magnitude
                oracle.assert_rounding_close(layer.W, W * (1 - 0.1 * 0.5), np.float64, 2)


def test_clip_norm_inactive_below_the_limit():
    model_clip, model_plain = _model(np.float64), _model(np.float64)
    opt_clip, opt_plain = fusedmlp.SGD(0.1), fusedmlp.SGD(0.1)
    opt_clip.clip_norm = 1e6
    for X, y in _batches(3):
        model_clip.train_step(X, y, opt_clip)
        model_plain.train_step(X, y, opt_plain)
    # below the limit nothing is scaled: the same loop on the same values
    oracle.assert_same_bits(model_clip.get_params_vector(), model_plain.get_params_vector(),
                            why=oracle.OWN_KERNEL)


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_step_after_loss_and_gradients_equals_train_step(case):
    _, make, _, clip_norm = case
    stepped, fused = _model(np.float32), _model(np.float32)
    opt_stepped, opt_fused = make(), make()
    opt_stepped.clip_norm = opt_fused.clip_norm = clip_norm
    for X, y in _batches():
        loss_a, _ = stepped.loss_and_gradients(X, y)
        opt_stepped.step(stepped)
        loss_b = fused.train_step(X, y, opt_fused)
        # train_step is loss_and_gradients then step: the same calls on the same values
        oracle.assert_same_bits(loss_a, loss_b, why=oracle.SAME_CALL)
        oracle.assert_same_bits(stepped.get_params_vector(), fused.get_params_vector(),
                                why=oracle.SAME_CALL)
    assert opt_stepped.steps == opt_fused.steps == N_STEPS


def test_optimizer_belongs_to_one_model():
    first, second = _model(np.float32), _model(np.float32, seed=1)
    opt = fusedmlp.Adam(0.01)
    X, y = _batches(1)[0]
    first.train_step(X, y, opt)
    params = second.get_params_vector()
    with pytest.raises(ValueError, match="already in use with another model"):
        second.train_step(X, y, opt)
    with pytest.raises(ValueError, match="already in use with another model"):
        opt.step(second)
    oracle.assert_same_bits(second.get_params_vector(), params, why=oracle.UNTOUCHED)
    opt.reset()                                  # forgets the first model and its state
    assert opt.steps == 0
    second.train_step(X, y, opt)
    assert opt.steps == 1


def test_optimizer_of_a_discarded_model_starts_afresh_with_the_next():
    X, y = _batches(1)[0]
    opt = fusedmlp.Adam(0.01)
    first = _model(np.float64)
    for _ in range(3):
        first.train_step(X, y, opt)
    del first
    gc.collect()
    model, twin = _model(np.float64, seed=1), _model(np.float64, seed=1)
    model.train_step(X, y, opt)
    twin.train_step(X, y, fusedmlp.Adam(0.01))
    assert opt.steps == 1                        # Adam's bias correction starts over too
    oracle.assert_same_bits(model.get_params_vector(), twin.get_params_vector(),
                            why=oracle.SAME_CALL)


def test_learning_rate_change_takes_effect_at_the_next_step():
    model, reference_model = _model(np.float64), _model(np.float64)
    opt, reference = fusedmlp.SGD(0.1), fusedmlp.SGD(0.1)
    X, y = _batches(1)[0]
    opt.lr = 0.05
    reference_model.loss_and_gradients(X, y)
    before = oracle.parameters_of(reference_model)
    model.train_step(X, y, opt)
    for layer, ref_layer, (W, b) in zip(model.layers, reference_model.layers, before):
        # the same gradients (the same call), then p - lr * g: two roundings
        oracle.assert_rounding_close(layer.W, W - 0.05 * ref_layer.dW, np.float64, 2,
                                     scale=np.abs(W) + 0.05 * np.abs(ref_layer.dW))
        oracle.assert_rounding_close(layer.b, b - 0.05 * ref_layer.db, np.float64, 2,
                                     scale=np.abs(b) + 0.05 * np.abs(ref_layer.db))
    assert reference.lr == 0.1 and opt.lr == 0.05


def test_hyper_parameter_refusals():
    with pytest.raises(ValueError, match="lr must lie in"):
        fusedmlp.SGD(0.0)
    with pytest.raises(ValueError, match="lr must lie in"):
        fusedmlp.Adam(float("nan"))
    with pytest.raises(TypeError, match="lr must be a real number"):
        fusedmlp.Adam("0.1")
    with pytest.raises(ValueError, match="momentum must lie in"):
        fusedmlp.SGD(0.1, momentum=1.0)
    with pytest.raises(ValueError, match="nesterov=True needs a momentum"):
        fusedmlp.SGD(0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta2 must lie in"):
        fusedmlp.Adam(0.1, beta2=1.5)
    with pytest.raises(ValueError, match="eps must lie in"):
        fusedmlp.RMSProp(0.1, eps=0.0)
    with pytest.raises(ValueError, match="weight_decay must lie in"):
        fusedmlp.AdaGrad(0.1, weight_decay=-1.0)
    opt = fusedmlp.SGD(0.1)
    with pytest.raises(ValueError, match="clip_norm must lie in"):
        opt.clip_norm = -1.0
    with pytest.raises(ValueError, match="optimizer must be an Optimizer or one of"):
        fusedmlp.MLP([2, 2]).fit([[0.0, 1.0]], [1], epochs=1, optimizer="lbfgs")


def test_defaults_and_repr():
    assert repr(fusedmlp.SGD(0.5, momentum=0.9, nesterov=True)) == (
        "SGD(lr=0.5, momentum=0.9, nesterov=True, weight_decay=0)")
    adam = fusedmlp.Adam()
    assert (adam.lr, adam.beta1, adam.beta2, adam.eps, adam.weight_decay) == (
        0.001, 0.9, 0.999, 1e-8, 0.0)
    assert fusedmlp.AdamW().weight_decay == 0.01
    assert "AdamW(lr=0.001" in repr(fusedmlp.AdamW())
