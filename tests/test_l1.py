"""The L1 penalty on the weights (optimizer.l1, hyper slot H_L1, csrc/_optim.pxd).

An update with l1 > 0 descends data loss + l1 * sum |W| (not the biases); the training step
reports that objective. With plain SGD at lr = 1 the step taken is the gradient it used, so
W - W_after is checked against central differences of the objective, away from zero weights
(|w| is not differentiable at 0, where the subgradient used is 0).
"""

import warnings

import numpy as np
import pytest

import fusedmlp
from fusedmlp import MLP, SGD, _codes

import oracle

L1 = 0.05


def problem(dtype=np.float64, n_threads=1, seed=0):
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(30, 5)), rng.integers(0, 3, 30)
    model = MLP([5, 8, 6, 3], activation="tanh", dtype=dtype, seed=seed, n_threads=n_threads)
    w = model.parameters[:model.layout.n_weights]
    w[np.abs(w) < 1e-2] = 0.1                       # away from |w|'s kink
    return model, X, y


def objective(model, X, y, l1):
    n = model.layout.n_weights
    return model.loss(X, y) + l1 * float(np.abs(model.parameters[:n].astype(np.float64)).sum())


def step_taken(model, X, y, **settings):
    """(reported loss, the update's gradient W - W_after at lr=1)."""
    before = model.get_params_vector().astype(np.float64)
    loss = model.train_step(X, y, SGD(lr=1.0, **settings))
    return loss, before - model.parameters.astype(np.float64)


def assert_objective(loss, model, X, y, l1):
    """``loss`` within the bound of the data loss (oracle.Outputs) plus the rounding of
    ``l1 * sum |W|`` (a sum over the weights, a product, the addition)."""
    expected = oracle.Outputs.of(model, X)
    n = model.layout.n_weights
    norm = float(np.abs(model.parameters[:n].astype(np.float64)).sum())
    data, data_bound, _, _ = oracle.loss_and_gradients_bound(
        expected.params, expected.activations, model.output, expected.X, y, model.dtype)
    oracle.assert_within(loss, data + l1 * norm,
                         data_bound + oracle.rounding_tolerance(model.dtype, n + 2) * l1 * norm)


def test_the_update_descends_loss_plus_l1_norm():
    model, X, y = problem()
    start = model.get_params_vector()
    before = model.get_params_vector()
    loss, used = step_taken(model, X, y, l1=L1)
    model.set_params_vector(before)
    assert_objective(loss, model, X, y, L1)
    model.set_params_vector(start)
    numeric = np.empty_like(used)
    params = model.parameters
    for i in range(params.size):
        saved = params[i]
        params[i] = saved + 1e-6
        plus = objective(model, X, y, L1)
        params[i] = saved - 1e-6
        minus = objective(model, X, y, L1)
        params[i] = saved
        numeric[i] = (plus - minus) / 2e-6
    assert np.linalg.norm(used - numeric) / np.linalg.norm(numeric) < 1e-7


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_l1_adds_its_subgradient_to_the_weights_only(dtype):
    model, X, y = problem(dtype)
    n = model.layout.n_weights
    model.parameters[3] = 0                          # a zero weight gets no subgradient
    start = model.get_params_vector()
    _, data_gradient = step_taken(model, X, y)
    model.set_params_vector(start)
    _, used = step_taken(model, X, y, l1=L1)
    expected = data_gradient.copy()
    expected[:n] += L1 * np.sign(start[:n].astype(np.float64))
    # the same data gradient (the same calls); only the update's own roundings differ: the
    # subgradient's addition and the two subtractions p - (g + l1 s), before - after
    start64 = start.astype(np.float64)
    oracle.assert_within(used, expected, oracle.rounding_tolerance(dtype, 3) * (
        np.abs(start64) + np.abs(data_gradient) + L1))
    # a zero weight and the biases: nothing added, fusedmlp's own update on the same values
    oracle.assert_same_bits(used[3], data_gradient[3], why=oracle.OWN_KERNEL)
    oracle.assert_same_bits(used[n:], data_gradient[n:], why=oracle.OWN_KERNEL)


def test_clipping_leaves_the_l1_term_alone():
    model, X, y = problem()
    n = model.layout.n_weights
    start = model.get_params_vector()
    _, data_gradient = step_taken(model, X, y)
    norm = np.linalg.norm(data_gradient)
    model.set_params_vector(start)
    _, used = step_taken(model, X, y, l1=L1)
    model.set_params_vector(start)
    optimizer = SGD(lr=1.0, l1=L1)
    optimizer.clip_norm = norm / 4
    model.train_step(X, y, optimizer)
    clipped = start - model.parameters
    scale = (norm / 4) / (norm + 1e-6)
    expected = data_gradient * scale
    expected[:n] += L1 * np.sign(start[:n])
    # the global norm (a sum over every parameter) sets the scale: within its roundings
    # relative to the gradient, plus the update's own (as above)
    oracle.assert_within(clipped, expected, oracle.rounding_tolerance(
        np.float64, model.n_parameters + 6) * (np.abs(start) + np.abs(data_gradient) + L1))


def test_l1_does_not_depend_on_the_thread_count_and_fit_reports_it():
    results = []
    for n_threads in (1, 2):
        model, X, y = problem(n_threads=n_threads)
        history = model.fit(X, y, epochs=2, batch_size=10, optimizer=SGD(0.1), l1=L1,
                            shuffle=False)
        results.append((history["loss"], model.get_params_vector()))
    # another thread count may split the products into other BLAS calls: SGD within the
    # chain of the six steps' sums (the L1 term is one more term of each update)
    k = oracle.step_chain([5, 8, 6, 3], 10, 6) + 6
    oracle.assert_rounding_close(results[0][0], results[1][0], np.float64, k + 19)
    oracle.assert_rounding_close(results[0][1], results[1][1], np.float64, k)
    model, X, y = problem()
    start = model.get_params_vector()
    history = model.fit(X, y, epochs=1, batch_size=30, optimizer=SGD(0.1), l1=L1)
    model.set_params_vector(start)
    assert_objective(history["loss"][0], model, X, y, L1)


def test_l1_setting_slot_and_refusals():
    assert SGD(l1=0.25).hyper[_codes.H_L1] == 0.25
    for cls in (fusedmlp.Adam, fusedmlp.AdamW, fusedmlp.RMSProp, fusedmlp.AdaGrad):
        assert cls(l1=0.5).l1 == 0.5
    with pytest.raises(ValueError, match=r"l1 must lie in \[0.0, inf\]"):
        SGD(l1=-1.0)
    model, X, y = problem()
    with pytest.raises(ValueError, match="l1 must lie in"):
        model.fit(X, y, epochs=1, l1=float("nan"))
    state = SGD(l1=0.5).state_dict()
    restored = SGD()
    restored.load_state_dict(model, state)
    assert restored.l1 == 0.5


sklearn = pytest.importorskip("fusedmlp.sklearn")


@pytest.mark.parametrize("Estimator, n_outputs", [(sklearn.MLPRegressor, 3),
                                                   (sklearn.MLPClassifier, 1)])
def test_estimators_report_and_descend_l1(Estimator, n_outputs):
    from sklearn.base import clone

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4))
    y = rng.normal(size=(40, n_outputs)) if n_outputs > 1 else (X[:, 0] > 0).astype(int)
    settings = dict(hidden_layer_sizes=(6,), solver="sgd", batch_size=40, max_iter=1,
                    random_state=0, momentum=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = Estimator(**settings).fit(X, y)
        first_weights = Estimator(**settings, learning_rate_init=1e-300).fit(X, y)
        penalised = Estimator(**settings, l1=0.1).fit(X, y)
    assert clone(penalised).get_params()["l1"] == 0.1
    # one batch: the first reported loss is that of the initial weights, plus l1 * sum |W|
    norm = sum(np.abs(w).sum() for w in first_weights.coefs_)
    # the same data loss (the same calls); the L1 sum over the weights in C against NumPy's,
    # and the reported loss's sum and subtraction: within those roundings
    n_weights = sum(w.size for w in first_weights.coefs_)
    oracle.assert_within(penalised.loss_curve_[0] - plain.loss_curve_[0], 0.1 * norm,
                         oracle.rounding_tolerance(np.float64, n_weights + 4)
                         * (0.1 * norm + penalised.loss_curve_[0]))
    with pytest.raises(ValueError, match="l1 must lie in"):
        Estimator(l1=-0.1).fit(X, y)


def test_lbfgs_minimises_with_l1_and_shrinks_the_weights():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 4))
    y = X @ rng.normal(size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        norms = [sum(np.abs(w).sum() for w in sklearn.MLPRegressor(
            hidden_layer_sizes=(5,), solver="lbfgs", max_iter=50, random_state=0,
            l1=l1).fit(X, y).coefs_) for l1 in (0.0, 0.05)]
    assert norms[1] < norms[0]


def test_a_slot_the_optimizer_does_not_use_must_be_zero():
    # slot 7 (l1) is used by every optimiser now; SGD leaves eps's slot unused
    hyper = SGD(0.1).hyper.copy()
    hyper[_codes.H_EPS] = 3.0
    with pytest.raises(ValueError, match="does not use hyper-parameter slot 4"):
        SGD.check_hyper_array(hyper)


def test_regulariser_bench_tabulates(capsys):
    from fusedmlp.cli import bench_regularisers, main

    results = bench_regularisers.measure(networks=[([8, 4, 2], 4)], rounds=1, target_time=0.0)
    assert set(results[0][2]) == set(bench_regularisers.VARIANTS)
    assert results[0][2]["off"][1] == 1.0
    assert main(["bench", "regularisers", "--quick", "--networks", "8-4-2:4"]) == 0
    table = capsys.readouterr().out
    assert "| 8-4-2 | 4 |" in table and "dropout 0.5" in table
