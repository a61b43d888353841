"""Every name the Python layer accepts maps to a code of the compiled core and back.

The codes are declared once, in csrc/fusedmlp/_codes.pxd; the Python tables are built from
them. These tests fail when a table and the declarations drift apart (a name without a code,
a code without a name, two names for one code).
"""

import numpy as np
import pytest

import fusedmlp
from fusedmlp import _codes, optim
from fusedmlp.model import OUTPUTS, STATUS_ERRORS

import oracle


def test_activation_names_and_codes_are_one_to_one():
    declared = {code.name[len("ACT_"):].lower(): code.value for code in _codes.Activation}
    assert fusedmlp.ACTIVATIONS == declared
    codes = list(fusedmlp.ACTIVATIONS.values())
    assert codes == sorted(codes) == list(range(len(codes)))      # each code once, no gaps
    for name, code in fusedmlp.ACTIVATIONS.items():
        assert fusedmlp.Dense(2, 3, activation=name).activation_code == code
        assert callable(getattr(fusedmlp.functional, name))     # and an array function


@pytest.mark.parametrize("name", sorted(fusedmlp.ACTIVATIONS))
def test_each_activation_code_runs_its_own_kernel(name):
    # The function of each name agrees with the whole network's layer of that name.
    x = np.linspace(-3, 3, 13)
    layer = fusedmlp.Dense(1, 1, activation=name, dtype=np.float64)
    layer.W[...], layer.b[...] = 1.0, 0.0
    function = getattr(fusedmlp.functional, name)
    # x * 1 + 0 is x exactly: the same elementwise kernel on the same values
    oracle.assert_same_bits(layer.forward(x[:, None])[:, 0], function(x), why=oracle.OWN_KERNEL)


def test_leaky_relu_slope_is_the_kernels():
    # -1 times the slope: one exact product
    oracle.assert_same_bits(fusedmlp.leaky_relu(-1.0), -_codes.LEAKY_RELU_SLOPE, why=oracle.EXACT)


def test_estimator_activation_names_map_to_kernel_activations():
    sklearn = pytest.importorskip("fusedmlp.sklearn")
    assert set(sklearn._ACTIVATIONS.values()) <= set(fusedmlp.ACTIVATIONS)
    assert set(fusedmlp.ACTIVATIONS) - {"step"} <= set(sklearn._ACTIVATIONS)


def test_outputs_and_losses_are_one_to_one():
    assert sorted(OUTPUTS.values()) == sorted(_codes.Loss)
    assert len(set(OUTPUTS.values())) == len(OUTPUTS)
    for output in OUTPUTS:
        assert fusedmlp.MLP([2, 2], output=output).output == output


def test_optimizer_names_and_kinds_are_one_to_one():
    classes = optim._OPTIMIZERS
    kinds = [cls.kind for cls in classes.values()]
    assert sorted(kinds) == sorted(set(_codes.Optimizer) - {_codes.Optimizer.OPT_NONE})
    for name, cls in classes.items():
        assert isinstance(optim.make_optimizer(name), cls)
        assert cls.__name__.lower() == name
    model = fusedmlp.MLP([2, 3, 2], seed=0)
    for cls in classes.values():
        opt = cls()
        opt.step(model)                     # binds: one state buffer per declared state
        assert len([b for b in opt.state_dict() if b.startswith("state_")]) == opt.n_states
        opt.reset()


def test_hyper_parameter_slots():
    slots = {name: getattr(_codes, name) for name in dir(_codes) if name.startswith("H_")}
    assert all(0 <= v < _codes.H_SIZE for k, v in slots.items() if k != "H_SIZE")
    assert optim.HYPER_SIZE == _codes.H_SIZE
    sgd = fusedmlp.SGD(lr=0.25, momentum=0.5, nesterov=True, weight_decay=0.125)
    sgd.clip_norm = 3.0
    expected = {"H_LR": 0.25, "H_MOMENTUM": 0.5, "H_NESTEROV": 1.0,
                "H_WEIGHT_DECAY": 0.125, "H_CLIP_NORM": 3.0}
    for name, value in expected.items():
        assert sgd.hyper[slots[name]] == value
    adam = fusedmlp.Adam(lr=0.5, beta1=0.75, beta2=0.875, eps=1e-3)
    for name, value in {"H_LR": 0.5, "H_BETA1": 0.75, "H_BETA2": 0.875, "H_EPS": 1e-3}.items():
        assert adam.hyper[slots[name]] == value
    assert fusedmlp.RMSProp(alpha=0.625).hyper[slots["H_BETA2"]] == 0.625


def test_every_failure_status_has_one_exception():
    failures = set(_codes.Status) - {_codes.Status.OK}
    assert set(STATUS_ERRORS) == failures
    assert _codes.Status.OK == 0


def test_inference_outputs():
    assert sorted(_codes.Inference) == [0, 1, 2]
    model = fusedmlp.MLP([3, 4], dtype=np.float64, seed=0)
    X = np.random.default_rng(0).normal(size=(5, 3))
    scores = model.forward(X)
    # the same scores through the inference path's softmax and the functional one: each
    # within its own rounding of the exact softmax of those scores (oracle.softmax_bound)
    p, p_bound, log_p, log_bound = oracle.softmax_bound(scores, np.zeros_like(scores),
                                                        np.float64)
    for got in (model.predict_proba(X), fusedmlp.softmax(scores)):
        oracle.assert_within(got, p, p_bound)
    for got in (model.predict_log_proba(X), fusedmlp.log_softmax(scores)):
        oracle.assert_within(got, log_p, log_bound)


def test_schedule_kinds_and_slots():
    assert {fusedmlp.WarmupLR(decay=name).state[_codes.S_KIND]: name
            for name in fusedmlp.WarmupLR.DECAYS} == {
        int(kind): kind.name[len("SCHEDULE_"):].lower() for kind in _codes.Schedule}
    slots = {name: getattr(_codes, name) for name in dir(_codes)
             if name.startswith("S_") and name != "S_SIZE"}
    assert len(set(slots.values())) == len(slots)
    assert all(0 <= v < _codes.S_SIZE for v in slots.values())
