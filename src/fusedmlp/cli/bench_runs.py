"""Training runs, not only steps: ``python -m fusedmlp bench runs``.

Two tables:

- **End to end**: one epoch of Fashion-MNIST-shaped data (60,000 x 784 float32 in [0, 1]
  with a blank border, as the real images have; or the real training set with ``--data DIR``),
  a 784-256-10 ReLU network, batch 128, Adam(1e-3), in fusedmlp (``MLP.fit``, one epoch per
  call, data checks included), the pure-NumPy reference (``NumpyMLP.train_step`` on gathered
  batches), PyTorch eager, ``torch.compile`` of the whole step and JAX (the whole step,
  batch gather included, under ``jax.jit`` with the parameters and optimiser state
  donated), the last three when installed; at each BLAS thread count. Each epoch is also
  shown as a multiple of (steps x the same competitor's isolated step time: one batch,
  repeated, on a fresh model), which is 1.0 for a run that costs exactly its steps.
- **Long run** (fusedmlp): the step time after 3,000 steps relative to a fresh model, at
  784-128-10 batch 1 and batch 32, Adam and SGD with momentum 0.9. A ratio above 1 is a
  run slowing down as it goes (subnormal optimiser state did that before fusedmlp flushed
  subnormals; docs/numerics.md).

Every competitor runs in its own worker process per thread count (their BLAS pools must not
meet), set up and warmed up once (one untimed epoch: torch.compile and jax.jit compile
there); then the rounds are interleaved, each round one further epoch of every competitor
in a rotating order, and the table shows the median, the first and the last timed epoch
(a run that slows down shows it there). Targets live in benchmarks/README.md; this prints
measurements only.
"""

from __future__ import annotations

import os
import statistics
import sys

from ._harness import (CPU, WALL, CommandParser, Stopwatch, Worker, WorkerError, header,
                       importable, interleave, markdown, median_seconds, one_call, split_list)
from ._peers import jax_adam, jax_mlp, torch_mlp

__all__ = ["main"]

SETTLE = 0.5            # seconds of pause before each multi-threaded measurement
COMPETITORS = ("fusedmlp", "numpy", "torch", "torch.compile", "jax")
MODULES = {"fusedmlp": "fusedmlp", "numpy": "numpy", "torch": "torch",
           "torch.compile": "torch", "jax": "jax"}
SIZES, BATCH, LEARNING_RATE = (784, 256, 10), 128, 1e-3
LONG_RUN_STEPS = 3000


# =================================================================== worker side
def _data(path, rows=60000, seed=0):
    """(X float32 (n, 784) in [0, 1], y int64): the real training set, or data shaped like it."""
    import numpy as np

    if path:
        from .datasets import load_idx_dataset

        data = load_idx_dataset(path)
        X = np.ascontiguousarray(data.X_train.reshape(len(data.X_train), -1), np.float32)
        if X.max() > 1:
            X /= 255
        return X, data.y_train.astype(np.int64)
    rng = np.random.default_rng(seed)
    X = rng.random((rows, 784), dtype=np.float32)
    X[X < 0.5] = 0                                  # about half the pixels blank
    images = X.reshape(-1, 28, 28)
    images[:, :3], images[:, -3:], images[:, :, :3], images[:, :, -3:] = 0, 0, 0, 0
    return X, rng.integers(0, 10, len(X))


def _fusedmlp(X, y, threads):
    import fusedmlp

    def model():
        try:
            return fusedmlp.MLP(list(SIZES), seed=0, n_threads=threads)
        except TypeError:                         # a fusedmlp without n_threads
            return fusedmlp.MLP(list(SIZES), seed=0)

    net, optimizer = model(), fusedmlp.Adam(LEARNING_RATE)
    fresh, fresh_optimizer = model(), fusedmlp.Adam(LEARNING_RATE)
    Xb, yb = X[:BATCH], y[:BATCH]
    return {
        "epoch": lambda: net.fit(X, y, epochs=1, batch_size=BATCH, optimizer=optimizer),
        "step": lambda: fresh.train_step(Xb, yb, fresh_optimizer),
    }


def _numpy(X, y, threads):
    import numpy as np

    from fusedmlp.reference import NumpyAdam, NumpyMLP

    net, optimizer = NumpyMLP(list(SIZES), seed=0), NumpyAdam(LEARNING_RATE)
    fresh, fresh_optimizer = NumpyMLP(list(SIZES), seed=0), NumpyAdam(LEARNING_RATE)
    rng = np.random.default_rng(0)

    def epoch():
        order = rng.permutation(len(X))
        for lo in range(0, len(X), BATCH):
            index = order[lo:lo + BATCH]
            net.train_step(X[index], y[index], optimizer)

    return {"epoch": epoch, "step": lambda: fresh.train_step(X[:BATCH], y[:BATCH],
                                                                fresh_optimizer)}


def _torch(X, y, threads, compiled=False):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)

    def make():
        model = torch_mlp(SIZES)
        optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)

        def step(xb, yb):
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            return loss

        return torch.compile(step) if compiled else step

    step, fresh = make(), make()
    generator = torch.Generator().manual_seed(0)

    def epoch():
        order = torch.randperm(len(X_t), generator=generator)
        for lo in range(0, len(X_t), BATCH):
            index = order[lo:lo + BATCH]
            step(X_t[index], y_t[index])

    return {"epoch": epoch, "step": lambda: fresh(X_t[:BATCH], y_t[:BATCH])}


def _jax(X, y, threads):
    import jax
    import jax.numpy as jnp
    import numpy as np

    def gather_step_body(params, state, X_all, y_all, index):
        return jax_adam(params, state, X_all[index], y_all[index], LEARNING_RATE)

    gather_step = jax.jit(gather_step_body, donate_argnums=(0, 1))
    X_d, y_d = jnp.asarray(X), jnp.asarray(y.astype(np.int32))
    run = {"params": jax_mlp(SIZES)}
    fresh = {"params": jax_mlp(SIZES)}
    rng = np.random.default_rng(0)
    first = np.arange(BATCH, dtype=np.int32)

    def epoch():
        params, state = run["params"]
        order = rng.permutation(len(X)).astype(np.int32)
        for lo in range(0, len(X), BATCH):
            params, state, loss = gather_step(params, state, X_d, y_d, order[lo:lo + BATCH])
        loss.block_until_ready()
        run["params"] = params, state

    def step():
        params, state = fresh["params"]
        params, state, loss = gather_step(params, state, X_d, y_d, first)
        loss.block_until_ready()
        fresh["params"] = params, state

    return {"epoch": epoch, "step": step}


_BUILDERS = {"fusedmlp": _fusedmlp, "numpy": _numpy, "torch": _torch,
             "torch.compile": lambda X, y, t: _torch(X, y, t, compiled=True), "jax": _jax}


def _step_seconds(step, clock=WALL):
    """Median over 5 rounds of timed loops of about 0.06 s each (a fresh model's step)."""
    return median_seconds(step, rounds=5, target_time=0.06, clock=clock)


def _long_run(batch, optimizer_name, steps, data_path, rows):
    """Step time after `steps` steps over a fresh model's, for fusedmlp at 784-128-10."""
    import numpy as np

    import fusedmlp

    X, y = _data(data_path, rows)
    X, y = X[:batch * 200], y[:batch * 200]
    model = fusedmlp.MLP([784, 128, 10], seed=0)
    optimizer = (fusedmlp.Adam(LEARNING_RATE) if optimizer_name == "adam"
                 else fusedmlp.SGD(0.01, momentum=0.9))
    Xb, yb = X[:batch], y[:batch]
    fresh = median_seconds(lambda: model.train_step(Xb, yb, optimizer), 5, 0.04)
    n_batches = len(X) // batch
    for i in range(steps):
        lo = (i % n_batches) * batch
        model.train_step(X[lo:lo + batch], y[lo:lo + batch], optimizer)
    late = median_seconds(lambda: model.train_step(Xb, yb, optimizer), 5, 0.04)
    tiny = np.finfo(np.float32).tiny
    states = [s for s in optimizer.state_dict().values()
              if isinstance(s, np.ndarray) and s.dtype == np.float32]
    subnormal = sum(int(np.count_nonzero((s != 0) & (np.abs(s) < tiny))) for s in states)
    return {"fresh": fresh, "late": late, "subnormal": subnormal}


def _small_epochs(rounds):
    """fusedmlp fit epochs of scikit-learn's digits (64-64-10, batch 32: 57 steps of a few
    microseconds, where everything around the steps shows) against steps x step time."""
    import numpy as np

    import fusedmlp
    from .datasets import load_digits_dataset

    data = load_digits_dataset()
    X = np.ascontiguousarray(data.X_train, np.float32)
    y = data.y_train
    net, optimizer = fusedmlp.MLP([64, 64, 10], seed=0), fusedmlp.Adam(LEARNING_RATE)
    fresh, fresh_optimizer = fusedmlp.MLP([64, 64, 10], seed=0), fusedmlp.Adam(LEARNING_RATE)
    net.fit(X, y, epochs=1, batch_size=32, optimizer=optimizer)
    epochs, steps = [], []
    for _ in range(rounds):
        epochs.append(one_call(lambda: net.fit(X, y, epochs=1, batch_size=32,
                                               optimizer=optimizer))["seconds"])
        steps.append(median_seconds(lambda: fresh.train_step(X[:32], y[:32], fresh_optimizer),
                                    5, 0.01))
    return {"epoch": statistics.median(epochs), "step": statistics.median(steps),
            "steps": -(-len(X) // 32), "rows": len(X)}


def serve(name, threads, data_path, rows):
    """The ops of one competitor's worker at one thread count (a :class:`Worker`'s target):
    ``setup`` (build, and one untimed epoch: compilation), ``epoch`` (one timed epoch),
    ``step`` (the isolated step), and fusedmlp's ``small_epochs`` and ``long_run``."""
    built = {}

    def setup():
        def build():
            X, y = _data(data_path, rows)
            built.update(_BUILDERS[name](X, y, threads))
            built["epoch"]()                      # warm-up (and compilation)
            return -(-len(X) // BATCH)

        done = one_call(build)
        return {"seconds": done["seconds"], "steps": done["value"]}

    def epoch():
        done = one_call(built["epoch"])
        return {"seconds": done["seconds"], "cpu": done["cpu"]}

    def step():
        return {"seconds": _step_seconds(built["step"]),
                "cpu": _step_seconds(built["step"], clock=CPU)}

    return {"setup": setup, "epoch": epoch, "step": step, "small_epochs": _small_epochs,
            "long_run": lambda batch, optimizer, steps: _long_run(batch, optimizer, steps,
                                                                  data_path, rows)}


# =================================================================== orchestrator side
def _worker(name, threads, data_path, rows):
    """A worker of this module for one competitor at one BLAS thread count, on `threads`
    CPUs (a k-thread row runs on k cores, whatever size the library's pool picks)."""
    multi = "true" if threads > 1 else "false"
    xla = (os.environ.get("XLA_FLAGS", "") + f" --xla_cpu_multi_thread_eigen={multi}"
           f" intra_op_parallelism_threads={threads}")
    return Worker(f"{name} ({threads} thread{'s' if threads > 1 else ''})",
                  "fusedmlp.cli.bench_runs:serve",
                  {"name": name, "threads": threads, "data_path": data_path, "rows": rows},
                  threads=threads, pin=True, env={"XLA_FLAGS": xla})


def _round(worker):
    """One round of a competitor: a timed epoch, then its isolated step."""
    return worker.ask("epoch"), worker.ask("step")


def _end_to_end(args, competitors):
    rows = []
    for threads in args.threads:
        workers, steps = {}, {}
        for name in competitors:
            worker = _worker(name, threads, args.data, args.rows)
            try:
                reply = worker.ask("setup")
            except WorkerError as exc:
                print(f"# {worker.label}: {exc}; left out", file=sys.stderr)
                worker.close()
                continue
            workers[name], steps[name] = worker, reply["steps"]
            print(f"# {worker.label} set up and warmed up in {reply['seconds']:.1f} s",
                  file=sys.stderr, flush=True)
        try:
            # the previous worker's idle pool threads spin for a while after its last call
            # (OpenMP, OpenBLAS): let them sleep before the next epoch
            samples = interleave({name: (lambda w=worker: _round(w))
                                  for name, worker in workers.items()},
                                 args.rounds, pause=SETTLE if threads > 1 else 0.0)
        finally:
            for worker in workers.values():
                worker.close()
        for name, replies in samples.items():
            epochs = [epoch["seconds"] for epoch, _ in replies]
            epoch = statistics.median(epochs)
            step = statistics.median(step["seconds"] for _, step in replies)
            cpu_epoch = statistics.median(epoch["cpu"] for epoch, _ in replies)
            cpu_step = statistics.median(step["cpu"] for _, step in replies)
            rows.append([name, str(threads), f"{epoch:.3f}", f"{epochs[0]:.3f}",
                         f"{epochs[-1]:.3f}", f"{step * 1e3:.3f}",
                         f"{epoch / (steps[name] * step):.2f}×", f"{cpu_epoch:.3f}",
                         f"{cpu_epoch / (steps[name] * cpu_step):.2f}×"])
    return rows


def _long_runs(args):
    worker = _worker("fusedmlp", 1, args.data, args.rows)
    rows = []
    try:
        try:
            reply = worker.ask("small_epochs", rounds=max(args.rounds, 5) * 4)
            args.small = (f"digits ({reply['rows']:,} training rows) 64-64-10 b32, fit epoch "
                          f"{reply['epoch'] * 1e3:.2f} ms = {reply['steps']} steps x "
                          f"{reply['step'] * 1e6:.1f} us x "
                          f"{reply['epoch'] / (reply['steps'] * reply['step']):.2f}")
        except WorkerError as exc:
            print(f"# digits epochs: {exc}", file=sys.stderr)
        for batch in (1, 32):
            for optimizer in ("adam", "momentum"):
                try:
                    reply = worker.ask("long_run", batch=batch, optimizer=optimizer,
                                       steps=args.long_steps)
                except WorkerError as exc:
                    print(f"# long run b{batch} {optimizer}: {exc}", file=sys.stderr)
                    continue
                rows.append([f"784-128-10 b{batch}",
                             "Adam" if optimizer == "adam" else "SGD momentum 0.9",
                             f"{reply['fresh'] * 1e6:,.1f}", f"{reply['late'] * 1e6:,.1f}",
                             f"{reply['late'] / reply['fresh']:.2f}", str(reply["subnormal"])])
    finally:
        worker.close()
    return rows


def _parse(argv):
    parser = CommandParser(
        "runs", "Time whole training epochs (fusedmlp fit, NumPy, PyTorch eager, "
                "torch.compile, JAX jit) and fusedmlp's step time after a long run.",
        defaults={"rounds": 5})
    parser.add_argument("--data", help="directory of the Fashion-MNIST IDX files (default: "
                                       "synthetic data of the same shape)")
    parser.add_argument("--threads", default="1,2", help="BLAS thread counts (default 1,2)")
    parser.add_argument("--competitors", default=",".join(COMPETITORS),
                        help=f"comma-separated subset of {','.join(COMPETITORS)}")
    parser.add_argument("--long-steps", type=int, default=LONG_RUN_STEPS,
                        help=f"steps of the long run (default {LONG_RUN_STEPS})")
    parser.add_argument("--tables", default="end-to-end,long-run",
                        help="which tables (default end-to-end,long-run)")
    parser.add_argument("--rows", type=int, default=60000,
                        help="rows of the synthetic data (default 60000, as Fashion-MNIST)")
    args = parser.parse_args(argv)
    args.threads = split_list(parser, "--threads", args.threads, int)
    args.competitors = split_list(parser, "--competitors", args.competitors,
                                  allowed=COMPETITORS)
    args.tables = split_list(parser, "--tables", args.tables,
                             allowed=("end-to-end", "long-run"))
    return args


def main(argv=None) -> int:
    """Run the tables and print them as Markdown; returns an exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse(argv)
    started = Stopwatch()
    competitors = [c for c in args.competitors if importable(MODULES[c])]
    skipped = [c for c in args.competitors if c not in competitors]
    print(header("fusedmlp benchmark: training runs",
                 f"python -m fusedmlp bench runs {' '.join(argv)}".rstrip()))
    if skipped:
        print(f"# not importable, left out: {', '.join(skipped)}")
    print(flush=True)
    if "end-to-end" in args.tables:
        source = args.data or f"synthetic {args.rows:,} x 784 float32 (blank border)"
        print(f"One epoch, {source}, 784-256-10 ReLU, batch {BATCH}, Adam(lr={LEARNING_RATE:g}), "
              f"float32; seconds (median, first and last of {args.rounds} timed epochs "
              "after one untimed); step = one batch repeated on a fresh model; "
              "×steps = epoch / (steps × step); CPU s = the worker's CPU time (all its "
              "threads; on a loaded machine steadier than wall time):\n")
        print(markdown(["", "threads", "epoch s", "first", "last", "step ms", "×steps",
                         "CPU s", "×steps (CPU)"],
                        _end_to_end(args, competitors)), flush=True)
        print()
    if "long-run" in args.tables:
        print(f"fusedmlp step time after {args.long_steps:,} steps relative to a fresh model, "
              "float32, 1 thread (µs; subnormal = optimiser-state entries below the smallest "
              "normal float32 at the end):\n")
        args.small = None
        print(markdown(["network", "optimiser", "fresh µs", "after µs", "ratio", "subnormal"],
                        _long_runs(args)))
        if args.small:
            print(f"\nSmall epochs (fusedmlp, 1 thread): {args.small}")
    print(f"\n(total {started.seconds():.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
