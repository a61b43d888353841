"""Per-step learning-rate schedules (fusedmlp.WarmupLR) inside the compiled epoch.

The compiled epoch computes each step's rate in C (csrc/_schedule.pxd); WarmupLR.rate is
the Python reference. A fit with the schedule must equal, bit for bit, a loop of train_step
calls with the optimiser's lr set to the reference's rate before each step.
"""

import pickle

import numpy as np
import pytest

import fusedmlp
from fusedmlp import _codes

import oracle

N, BATCH = 60, 8            # 8 batches per epoch (the last one of 4 rows)
BATCHES = -(-N // BATCH)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, 5)), rng.integers(0, 3, size=N)


def _reference(dtype, schedule, optimizer, epochs, X, y, *, first_step=0):
    """(parameters, per-epoch lr) of train_step calls with the reference's rate per step."""
    model = fusedmlp.MLP([5, 7, 3], dtype=dtype, seed=4)
    lrs = []
    step = first_step
    for _ in range(epochs):
        for start in range(0, N, BATCH):
            optimizer.lr = schedule.rate(step)
            model.train_step(X[start:start + BATCH], y[start:start + BATCH], optimizer)
            step += 1
        lrs.append(optimizer.lr)
    return model.get_params_vector(), lrs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("decay", ["constant", "cosine", "linear"])
@pytest.mark.parametrize("optimizer", [fusedmlp.Adam, fusedmlp.SGD])
def test_compiled_epoch_rates_equal_a_loop_of_train_steps(decay, dtype, optimizer):
    X, y = _data()
    schedule = fusedmlp.WarmupLR(warmup_steps=5, decay=decay, final=0.1)
    model = fusedmlp.MLP([5, 7, 3], dtype=dtype, seed=4)
    opt = optimizer(lr=0.05)
    history = model.fit(X, y, epochs=3, batch_size=BATCH, optimizer=opt, shuffle=False,
                        lr_schedule=schedule)
    assert schedule.steps == 3 * BATCHES
    reference = fusedmlp.WarmupLR(warmup_steps=5, decay=decay, final=0.1)
    reference.start(0.05, 3 * BATCHES)
    params, lrs = _reference(dtype, reference, optimizer(lr=0.05), 3, X, y)
    assert model.get_params_vector().tobytes() == params.tobytes()
    assert history["lr"] == lrs                  # the rate of each epoch's last step
    assert opt.lr == lrs[-1]


def test_rates_warm_up_then_decay_to_the_final_fraction():
    def rates(decay, final=0.0, warmup=2, total=6, peak=0.8):
        schedule = fusedmlp.WarmupLR(warmup_steps=warmup, decay=decay, final=final)
        schedule.start(peak, total)
        return [schedule.rate(s) for s in range(total + 2)]

    # a rate is a few float64 operations on the step counts and the peak (a fraction, a
    # product, a sum; the cosine's): within that many roundings of the formula's
    def assert_rates(got, expected):
        oracle.assert_within(got, expected,
                             oracle.rounding_tolerance(np.float64, 6) * np.abs(expected))

    assert_rates(rates("linear"), [0.4, 0.8, 0.6, 0.4, 0.2, 1e-300, 1e-300, 1e-300])
    assert_rates(rates("linear", final=0.5), [0.4, 0.8, 0.7, 0.6, 0.5, 0.4, 0.4, 0.4])
    assert rates("constant", final=0.5) == [0.4, 0.8] + [0.8] * 6
    cosine = rates("cosine", final=0.25, warmup=0, total=4, peak=1.0)
    expected = [0.25 + 0.75 * 0.5 * (1 + np.cos(np.pi * p)) for p in (0.25, 0.5, 0.75, 1, 1, 1)]
    assert_rates(cosine, expected)
    assert cosine[3] == 0.25                     # the last step is exactly final x peak


def test_the_schedule_resumes_across_fits_and_pickles():
    X, y = _data(1)

    def run(splits, verbose=0, through_pickle=False):
        schedule = fusedmlp.WarmupLR(warmup_steps=6, decay="cosine", total_steps=4 * BATCHES)
        model = fusedmlp.MLP([5, 7, 3], dtype=np.float64, seed=4)
        opt = fusedmlp.Adam(0.02)
        lrs = []
        for epochs in splits:
            if through_pickle:
                model, opt, schedule = pickle.loads(pickle.dumps((model, opt, schedule)))
            lrs += model.fit(X, y, epochs=epochs, batch_size=BATCH, optimizer=opt,
                             shuffle=False, lr_schedule=schedule, verbose=verbose)["lr"]
        return model.get_params_vector().tobytes(), lrs, schedule.steps

    whole = run([4])
    assert run([1, 3]) == whole
    assert run([2, 2], through_pickle=True) == whole
    assert whole[2] == 4 * BATCHES


def test_the_schedule_continues_through_the_calls_of_a_long_epoch(capsys):
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(50, 5)), rng.integers(0, 3, size=50)      # 50 batches of 1

    def run(verbose):
        schedule = fusedmlp.WarmupLR(warmup_steps=7, decay="linear", final=0.2)
        model = fusedmlp.MLP([5, 7, 3], dtype=np.float64, seed=4)
        history = model.fit(X, y, epochs=2, batch_size=1, optimizer=fusedmlp.SGD(0.05),
                            shuffle=True, lr_schedule=schedule, verbose=verbose)
        return model.get_params_vector().tobytes(), history["lr"], schedule.steps

    quiet = run(0)
    assert run(2) == quiet                       # 20 compiled calls per epoch
    assert "batch" in capsys.readouterr().out
    assert quiet[2] == 100


def test_warmup_lr_refusals_leave_the_model_unchanged():
    X, y = _data()
    with pytest.raises(ValueError, match="decay must be one of"):
        fusedmlp.WarmupLR(decay="exponential")
    with pytest.raises(ValueError, match="warmup_steps must be >= 0"):
        fusedmlp.WarmupLR(warmup_steps=-1)
    with pytest.raises(TypeError, match="warmup_steps must be an integer"):
        fusedmlp.WarmupLR(warmup_steps=2.5)
    with pytest.raises(ValueError, match="final must lie in"):
        fusedmlp.WarmupLR(final=1.5)
    with pytest.raises(ValueError, match="total_steps must be >= 10"):
        fusedmlp.WarmupLR(warmup_steps=10, total_steps=5)
    model = fusedmlp.MLP([5, 7, 3], seed=4)
    before = model.get_params_vector()
    schedule = fusedmlp.WarmupLR(warmup_steps=100)
    opt = fusedmlp.Adam(0.01)
    with pytest.raises(ValueError, match="warmup_steps=100 exceeds the 16 steps of the fit"):
        model.fit(X, y, epochs=2, batch_size=BATCH, lr_schedule=schedule, optimizer=opt,
                  weight_decay=0.5)
    assert model.get_params_vector().tobytes() == before.tobytes()
    assert not schedule.started and schedule.steps == 0
    assert opt.weight_decay == 0.0 and opt.steps == 0      # the optimiser untouched too


def test_reset_starts_a_new_schedule():
    X, y = _data()
    schedule = fusedmlp.WarmupLR(warmup_steps=3, decay="linear")
    model = fusedmlp.MLP([5, 7, 3], seed=4)
    model.fit(X, y, epochs=1, batch_size=BATCH, lr_schedule=schedule,
              optimizer=fusedmlp.Adam(0.01))
    assert schedule.steps == BATCHES and schedule.state[_codes.S_PEAK_LR] == 0.01
    schedule.reset()
    assert not schedule.started and schedule.steps == 0
    assert "WarmupLR(warmup_steps=3, decay='linear'" in repr(schedule)


def test_save_and_load_mid_schedule(tmp_path):
    # the model file keeps the model and the optimiser (its state and current rate); the
    # schedule keeps its own place and pickles: together they continue the run exactly
    X, y = _data(3)

    def fresh():
        return (fusedmlp.MLP([5, 7, 3], dtype=np.float64, seed=4), fusedmlp.Adam(0.02),
                fusedmlp.WarmupLR(warmup_steps=5, decay="linear", final=0.05,
                                  total_steps=4 * BATCHES))

    model, opt, schedule = fresh()
    model.fit(X, y, epochs=4, batch_size=BATCH, optimizer=opt, shuffle=False,
              lr_schedule=schedule)
    whole = model.get_params_vector().tobytes()

    model, opt, schedule = fresh()
    model.fit(X, y, epochs=2, batch_size=BATCH, optimizer=opt, shuffle=False,
              lr_schedule=schedule)
    model.save(tmp_path / "half.npz", optimizer=opt)
    kept = pickle.dumps(schedule)
    model, opt = fusedmlp.load(tmp_path / "half.npz", with_optimizer=True)
    schedule = pickle.loads(kept)
    assert schedule.steps == 2 * BATCHES
    model.fit(X, y, epochs=2, batch_size=BATCH, optimizer=opt, shuffle=False,
              lr_schedule=schedule)
    assert model.get_params_vector().tobytes() == whole


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_every_compiled_rate_equals_the_reference(decay):
    # one batch per epoch: history["lr"] is the rate of every step, past the schedule's end
    X, y = _data(4)
    schedule = fusedmlp.WarmupLR(warmup_steps=7, decay=decay, final=0.3, total_steps=151)
    model = fusedmlp.MLP([5, 3], dtype=np.float64, seed=0)
    history = model.fit(X, y, epochs=160, batch_size=N, optimizer=fusedmlp.SGD(0.37),
                        lr_schedule=schedule)
    assert history["lr"] == [schedule.rate(s) for s in range(160)]
    assert history["lr"][150:] == [0.37 * 0.3] * 10            # exactly final x peak
    assert history["lr"][150] == schedule.rate(150) == schedule.rate(10**9)
