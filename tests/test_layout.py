"""ParamLayout: the one description of the flat parameter buffer, and the training loop's
batches."""

import numpy as np
import pytest

import fusedmlp
from fusedmlp.layout import ParamLayout
from fusedmlp.training import Batches, run_epoch

import oracle


def test_layout_offsets_and_views():
    layout = ParamLayout([5, 4, 3, 2])
    assert layout.n_layers == 3
    assert layout.weight_shapes == ((5, 4), (4, 3), (3, 2))
    assert layout.weight_offsets == (0, 20, 32)
    assert layout.n_weights == 38
    assert layout.bias_offsets == (38, 42, 45)
    assert layout.n_params == 47
    flat = np.arange(47.0)
    (W0, b0), (W1, b1), (W2, b2) = layout.views(flat)
    assert W0[0, 0] == 0 and W1[0, 0] == 20 and W2[-1, -1] == 37
    assert list(b0) == [38, 39, 40, 41] and list(b2) == [45, 46]
    assert all(np.shares_memory(part, flat) for pair in layout.views(flat) for part in pair)
    with pytest.raises(ValueError, match=r"shape \(47,\)"):
        layout.views(np.zeros(46))
    assert layout == ParamLayout((5, 4, 3, 2)) and repr(layout) == "ParamLayout([5, 4, 3, 2])"


def test_model_layers_are_the_layout_views():
    model = fusedmlp.MLP([6, 5, 3], seed=0)
    assert model.layout == ParamLayout([6, 5, 3])
    assert model.parameters.shape == model.gradients.shape == (model.layout.n_params,)
    for layer, (W, b), (dW, db) in zip(model.layers, model.layout.views(model.parameters),
                                       model.layout.views(model.gradients)):
        for a, b_ in ((layer.W, W), (layer.b, b), (layer.dW, dW), (layer.db, db)):
            assert a.shape == b_.shape and np.shares_memory(a, b_)
            assert a.__array_interface__["data"] == b_.__array_interface__["data"]


@pytest.mark.parametrize("order", [None, np.array([4, 0, 3, 1, 2])])
def test_batches_visit_every_row_once_in_order(order):
    X = np.arange(10.0).reshape(5, 2)
    y = np.arange(5)
    w = np.linspace(1, 2, 5)
    batches = Batches(X, y, w, batch_size=2)
    seen = [(Xb.copy(), yb.copy(), wb.copy()) for Xb, yb, wb in batches.epoch(order)]
    assert [len(b[1]) for b in seen] == [2, 2, 1]
    rows = np.concatenate([b[1] for b in seen])
    np.testing.assert_array_equal(rows, np.arange(5) if order is None else order)
    oracle.assert_same_bits(np.concatenate([b[0] for b in seen]), X[rows], why=oracle.COPY)
    oracle.assert_same_bits(np.concatenate([b[2] for b in seen]), w[rows], why=oracle.COPY)
    # run_epoch: the row-weighted mean of the batch losses
    assert run_epoch(lambda Xb, yb, wb: float(yb.sum()), batches, order).loss == pytest.approx(
        sum(float(b[1].sum()) * len(b[1]) for b in seen) / 5)


def test_bound_step_is_train_step():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(8, 3)), rng.integers(0, 2, 8)
    a, b = fusedmlp.MLP([3, 4, 2], seed=1), fusedmlp.MLP([3, 4, 2], seed=1)
    opt_a, opt_b = fusedmlp.Adam(0.01), fusedmlp.Adam(0.01)
    step = a.bind(opt_a)
    for _ in range(3):
        assert step(X, y) == b.train_step(X, y, opt_b)
    oracle.assert_same_bits(a.parameters, b.parameters, why=oracle.SAME_CALL)
    with pytest.raises(TypeError, match="optimizer must be a fusedmlp Optimizer"):
        a.bind("adam")
