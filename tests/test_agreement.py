"""The agreement grid: every execution mode of the compiled step against the one-part plan.

A step or an inference call of n parts (``n_threads = n``) runs the same passes as the serial
call (``n_threads = 1``, the one-part plan), each part on its block of rows, of columns, of
the inner dimension or of the batch; sparse X swaps layer 0's product for the CSR one. This
file checks each mode x feature x dtype against the one-part plan, in two regimes:

Exact data (``test_exact_*``): integer X and targets in {-1, 0, 1}, parameters in quarters,
identity layers, a squared-error gradient over m x 8 outputs (a power of two) and dyadic
rates, one step. Every sum of the step is then of short dyadic numbers, exact in any order
(``test_exact_data_is_exact`` proves it for these shapes: float32 and every split give the
float64 bits, and float64 has bits to spare), so *every* partition must give the one-part
plan's bits: a part that skipped, doubled or misplaced a block, or a feature threaded
through one mode and not another, shows up as a changed bit.

Random data (``test_random_*``): tanh layers, softmax cross-entropy, several SGD steps. A
split changes the shapes of the BLAS products and the order of some sums, so the runs agree
to the derived rounding bound of the step's chain of sums (``tests/oracle.py``:
``rounding_tolerance``, ``step_chain``), per mode:

- rows, columns, inner (the forward's partial sums over W's rows, added in part order) and
  batch rows (dW, db summed per part, then added in part order): every output element is
  the same sum of the same terms in another order or another kernel: the bound;
- bfloat16 by rows or columns: bit for bit on the own kernel (it sums every output element
  in one order wherever it lies in a product, docs/bf16.md); by the inner dimension or the
  batch rows the float32 sums move, and an operand on a bfloat16 rounding boundary then
  rounds to the other side (a 2**-8 step): no useful bound, so those two are checked on the
  exact data only;
- inference: the forward alone, k = the fan-ins;
- sparse X: split as dense X but for its first layer, which splits by rows only (its
  product is its own loop, by whole rows; dW_0's scatter by the owned rows of W_0 has the
  whole scatter's bits), compared with the dense serial plan: the bound.
"""

import numpy as np
import pytest

import fusedmlp
from fusedmlp import _kernels

from oracle import assert_rounding_close, step_chain

sps = pytest.importorskip("scipy.sparse")

WHY_NO_BF16 = _kernels.bf16_why_not()
BF16_BACKEND = fusedmlp.show_config(as_dict=True)["bfloat16"].get("backend")
DTYPES = [np.float32, np.float64]
EXACT_LR = 0.5

# mode: (layer sizes, batch rows, thread counts, the plan entry that must show it)
MODES = {
    "rows": ((40, 48, 36, 8), 64, (2, 3), ("forward", "rows")),
    "columns": ((32, 256, 128, 8), 32, (2, 4), ("forward", "columns")),
    "inner": ((200, 160, 128, 8), 16, (2, 3), ("forward", "inner")),
    "batch": ((20, 32, 24, 8), 512, (2, 3), ("backward", "batch")),
}
FEATURES = ["none", "dropout", "l1", "weights", "schedule", "bf16"]
RANDOM_FEATURES = FEATURES + ["soft_targets"]


def cells(features):
    return [(mode, n, feature) for mode, (_, _, threads, _) in MODES.items()
            for n in threads for feature in features]


def skip_unless_bf16(feature, dtype):
    if feature == "bf16":
        if dtype is np.float64:
            pytest.skip("bfloat16 products are for float32 models")
        if WHY_NO_BF16:
            pytest.skip(f"no bf16 product here: {WHY_NO_BF16}")


def build(sizes, n_threads, dtype, feature, activation, output, params=None):
    model = fusedmlp.MLP(list(sizes), activation=activation, output=output, dtype=dtype,
                         seed=0, n_threads=n_threads,
                         dropout=[0.0, 0.5] if feature == "dropout" else 0.0,
                         compute_dtype="bfloat16" if feature == "bf16" else None)
    if params is not None:
        model.parameters[:] = params
    return model


def fit(model, X, y, batch, feature, lr, epochs, weights=None):
    schedule = fusedmlp.WarmupLR(warmup_steps=2, decay="linear", total_steps=4) if feature == "schedule" else None
    history = model.fit(X, y, epochs=epochs, batch_size=batch, shuffle=False,
                        optimizer=fusedmlp.SGD(lr, l1=2.0 ** -6 if feature == "l1" else 0.0),
                        sample_weight=weights if feature == "weights" else None,
                        lr_schedule=schedule)
    return [np.asarray(history["loss"]), model.get_params_vector(), model.forward(X)]


def assert_plan(model, mode, batch):
    _, _, _, (entry, name) = MODES[mode]
    plan = model._net.step_plan(batch)
    assert name in plan[entry], (mode, plan)       # the shape really takes this split


# ---- exact data ------------------------------------------------------------------------

def exact_problem(sizes, batch, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.integers(-1, 2, size=(batch, sizes[0])) * (rng.uniform(size=(batch, sizes[0])) < 0.5)
    t = rng.integers(-1, 2, size=(batch, sizes[-1])).astype(np.float64)
    n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    params = rng.integers(-1, 2, size=n_params) * (rng.uniform(size=n_params) < 0.5) / 4
    weights = np.tile([0.5, 1.5], batch // 2)       # each batch's total is its rows: 2**k
    return X.astype(np.float64), t, params, weights


def exact_run(mode, n_threads, dtype, feature, sparse=False):
    sizes, batch, _, _ = MODES[mode]
    X, t, params, weights = exact_problem(sizes, batch)
    model = build(sizes, n_threads, dtype, feature, "identity", "identity", params)
    X = X.astype(dtype)
    if n_threads > 1 and not sparse:
        assert_plan(model, mode, batch)
    data = sps.csr_matrix(X) if sparse else X
    loss, params, _ = fit(model, data, t.astype(dtype), batch, feature, EXACT_LR, 1, weights)
    return [loss, params]          # (a forward with the updated weights would round)


def assert_same_bits(got, expected):
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(np.asarray(g, np.float64), np.asarray(e, np.float64))


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("feature", ["none", "dropout", "l1", "weights"])
def test_exact_data_is_exact(mode, feature):
    # float32 and every split give the float64 serial bits: no sum of these steps rounded
    # (float64 has 53 bits for sums these short; the rates, weights and dropout scales are
    # powers of two, so the features add no rounding of their own)
    expected = exact_run(mode, 1, np.float64, feature)
    assert not np.array_equal(expected[1], exact_problem(*MODES[mode][:2])[2])  # it trained
    for dtype in DTYPES:
        for n in (1,) + MODES[mode][2]:
            assert_same_bits(exact_run(mode, n, dtype, feature), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode, n_threads, feature", cells(FEATURES))
def test_exact_every_split_gives_the_one_part_bits(mode, n_threads, feature, dtype):
    skip_unless_bf16(feature, dtype)
    assert_same_bits(exact_run(mode, n_threads, dtype, feature),
                     exact_run(mode, 1, dtype, feature))


SPARSE_FEATURES = ["none", "dropout", "l1", "weights", "schedule"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode, n_threads, feature",
                         [("rows", 1, f) for f in SPARSE_FEATURES] + cells(SPARSE_FEATURES))
def test_exact_sparse_x_gives_the_dense_one_part_bits(mode, n_threads, feature, dtype):
    # sparse X trains on the pool: layer 0's CSR product by rows, dW_0 by the owned rows
    # of W_0 (or the batch's rows), the other layers as for dense X
    assert_same_bits(exact_run(mode, n_threads, dtype, feature, sparse=True),
                     exact_run(mode, 1, dtype, feature))


@pytest.mark.parametrize("mode, n_threads", [(mode, n) for mode, (_, _, threads, _) in
                                             MODES.items() for n in threads])
def test_sparse_x_splits_like_dense_x_but_its_first_layer(mode, n_threads):
    sizes, batch, _, _ = MODES[mode]
    model = build(sizes, n_threads, np.float32, "none", "identity", "identity")
    dense, sparse = model._net.step_plan(batch), model._net.step_plan(batch, sparse=True)
    assert sparse["parts"] == dense["parts"] == n_threads
    assert sparse["forward"][0] in ("serial", "rows")         # the CSR product: whole rows
    if dense["forward"][0] in ("serial", "rows"):
        assert sparse == dense


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, split", [(300, "rows"), (16, "columns")])
@pytest.mark.parametrize("n_threads", [2, 3])
def test_exact_inference_splits_give_the_one_part_bits(rows, split, n_threads, dtype):
    sizes = MODES["inner"][0]
    X, _, params, _ = exact_problem(sizes, rows)
    outputs = []
    for n in (1, n_threads):
        model = build(sizes, n, dtype, "none", "identity", "identity", params)
        if n > 1:
            assert split in model._net.inference_plan(rows)["forward"]
        outputs.append(model.forward(X.astype(dtype)))
    np.testing.assert_array_equal(outputs[1], outputs[0])


# ---- random data -----------------------------------------------------------------------

def random_problem(sizes, batch, feature, seed=5):
    rng = np.random.default_rng(seed)
    n = 2 * batch
    X = rng.normal(size=(n, sizes[0]))
    if feature == "soft_targets":
        y = rng.uniform(size=(n, sizes[-1]))
        y /= y.sum(axis=1, keepdims=True)
    else:
        y = rng.integers(0, sizes[-1], size=n)
    return X, y, rng.uniform(0.1, 2.0, size=n)


def random_run(mode, n_threads, dtype, feature, sparse=False):
    sizes, batch, _, _ = MODES[mode]
    X, y, weights = random_problem(sizes, batch, feature)
    model = build(sizes, n_threads, dtype, feature, "tanh", "softmax")
    if n_threads > 1 and not sparse:
        assert_plan(model, mode, batch)
    X = X.astype(dtype)
    data = sps.csr_matrix(X) if sparse else X
    results = fit(model, data, y, batch, feature, 0.1, 2, weights)
    results[2] = model.forward(X)
    return results


def random_chain(mode):
    sizes, batch, _, _ = MODES[mode]
    return step_chain(sizes, batch, steps=4) + sum(sizes[:-1])   # 4 steps, one forward


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode, n_threads, feature", cells(RANDOM_FEATURES))
def test_random_every_split_agrees_with_the_one_part_plan(mode, n_threads, feature, dtype):
    skip_unless_bf16(feature, dtype)
    if feature == "bf16":
        plan = build(*MODES[mode][:1], n_threads, dtype, feature, "tanh",
                     "softmax")._net.step_plan(MODES[mode][1])
        if "inner" in plan["forward"] or "batch" in plan["backward"]:
            pytest.skip(f"bf16 with {plan}: partial sums added in another order, no "
                        "rounding bound (module docstring); checked on exact data")
        if BF16_BACKEND != "own":
            pytest.skip(f"the own bf16 kernel's bits; the product here: {BF16_BACKEND}")
    got = random_run(mode, n_threads, dtype, feature)
    expected = random_run(mode, 1, dtype, feature)
    if feature == "bf16":
        assert_same_bits(got, expected)
        return
    for g, e in zip(got, expected):
        assert_rounding_close(g, e, dtype, random_chain(mode))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("feature", ["none", "dropout", "l1", "weights", "schedule"])
def test_random_sparse_x_agrees_with_the_dense_one_part_plan(feature, dtype):
    for mode in MODES:
        got = random_run(mode, 2, dtype, feature, sparse=True)
        expected = random_run(mode, 1, dtype, feature)
        for g, e in zip(got, expected):
            assert_rounding_close(g, e, dtype, random_chain(mode))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, split", [(300, "rows"), (16, "columns")])
def test_random_inference_splits_agree_with_the_one_part_plan(rows, split, dtype):
    sizes = MODES["inner"][0]
    X = np.random.default_rng(7).normal(size=(rows, sizes[0])).astype(dtype)
    outputs = []
    for n in (1, 2, 3):
        model = build(sizes, n, dtype, "none", "tanh", "softmax")
        if n > 1:
            assert split in model._net.inference_plan(rows)["forward"]
        outputs.append((model.predict_proba(X), model.forward(X)))
    for proba, scores in outputs[1:]:
        assert_rounding_close(proba, outputs[0][0], dtype, sum(sizes[:-1]))
        assert_rounding_close(scores, outputs[0][1], dtype, sum(sizes[:-1]))
