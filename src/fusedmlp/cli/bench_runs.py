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

import argparse
import json
import os
import statistics
import sys
import time
import warnings

from . import bench
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


def _median_step(step, seconds=0.3, rounds=5, clock=time.perf_counter):
    """Median over rounds of the mean time of a timed loop of about `seconds`."""
    step()
    start = time.perf_counter()
    step()
    calls = max(3, int(seconds / rounds / max(time.perf_counter() - start, 1e-7)))
    times = []
    for _ in range(rounds):
        start = clock()
        for _ in range(calls):
            step()
        times.append((clock() - start) / calls)
    return statistics.median(times)


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
    fresh = _median_step(lambda: model.train_step(Xb, yb, optimizer), seconds=0.2)
    n_batches = len(X) // batch
    for i in range(steps):
        lo = (i % n_batches) * batch
        model.train_step(X[lo:lo + batch], y[lo:lo + batch], optimizer)
    late = _median_step(lambda: model.train_step(Xb, yb, optimizer), seconds=0.2)
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
        start = time.perf_counter()
        net.fit(X, y, epochs=1, batch_size=32, optimizer=optimizer)
        epochs.append(time.perf_counter() - start)
        steps.append(_median_step(lambda: fresh.train_step(X[:32], y[:32], fresh_optimizer),
                                  seconds=0.05))
    return {"epoch": statistics.median(epochs), "step": statistics.median(steps),
            "steps": -(-len(X) // 32), "rows": len(X)}


def _worker(name, threads, data_path, rows):
    """Serve one competitor at one thread count: JSON lines on stdin -> stdout."""
    warnings.simplefilter("ignore")
    if hasattr(os, "sched_setaffinity"):
        # A k-thread row runs on k cores, whatever the library's own pool sizes itself to
        # (XLA's CPU client ignores its thread flags and spreads over every core it sees).
        # Threads started from here on inherit the mask.
        cpus = sorted(os.sched_getaffinity(0))
        if threads < len(cpus):
            os.sched_setaffinity(0, cpus[:threads])
    reply_stream, sys.stdout = sys.stdout, sys.stderr
    from threadpoolctl import threadpool_limits

    limits = threadpool_limits(limits=threads)   # noqa: F841  (kept for the process)
    built = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "setup":
                start = time.perf_counter()
                X, y = _data(data_path, rows)
                built = _BUILDERS[name](X, y, threads)
                built["epoch"]()                      # warm-up (and compilation)
                reply = {"seconds": time.perf_counter() - start, "steps": -(-len(X) // BATCH)}
            elif request["op"] == "epoch":
                start, cpu = time.perf_counter(), time.process_time()
                built["epoch"]()
                reply = {"seconds": time.perf_counter() - start,
                         "cpu": time.process_time() - cpu}
            elif request["op"] == "step":
                reply = {"seconds": _median_step(built["step"]),
                         "cpu": _median_step(built["step"], clock=time.process_time)}
            elif request["op"] == "small_epochs":
                reply = _small_epochs(request["rounds"])
            elif request["op"] == "long_run":
                reply = _long_run(request["batch"], request["optimizer"], request["steps"],
                                  data_path, rows)
            else:
                raise ValueError(f"unknown op {request['op']!r}")
        except Exception as exc:       # report, keep serving: the table shows the gap
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        reply_stream.write(json.dumps(reply) + "\n")
        reply_stream.flush()


# =================================================================== orchestrator side
class _Worker(bench.Worker):
    """A bench worker of this module for one competitor at one BLAS thread count."""

    def __init__(self, name, threads, data_path, rows):
        import subprocess
        import tempfile

        self.name = f"{name} ({threads} thread{'s' if threads > 1 else ''})"
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads),
                   XLA_FLAGS=(os.environ.get("XLA_FLAGS", "")
                              + f" --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
                              + f" intra_op_parallelism_threads={threads}"))
        command = [sys.executable, "-m", "fusedmlp.cli.bench_runs", "--worker", name,
                   "--worker-threads", str(threads)]
        if data_path:
            command += ["--data", data_path]
        command += ["--rows", str(rows)]
        self.errors = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.errors, text=True, env=env)


def _end_to_end(args, competitors):
    rows = []
    for threads in args.threads:
        workers, steps = {}, {}
        for name in competitors:
            worker = _Worker(name, threads, args.data, args.rows)
            reply = worker.ask(op="setup")
            if "error" in reply:
                print(f"# {worker.name}: {reply['error']}; left out", file=sys.stderr)
                worker.close()
                continue
            workers[name], steps[name] = worker, reply["steps"]
            print(f"# {worker.name} set up and warmed up in {reply['seconds']:.1f} s",
                  file=sys.stderr, flush=True)
        epochs = {name: [] for name in workers}
        step_times = {name: [] for name in workers}
        cpu_epochs = {name: [] for name in workers}
        cpu_steps = {name: [] for name in workers}
        names = list(workers)
        try:
            for round_index in range(args.rounds):
                shift = round_index % max(1, len(names))
                for name in names[shift:] + names[:shift]:
                    if threads > 1:
                        # the previous worker's idle pool threads spin for a while after its
                        # last call (OpenMP, OpenBLAS): let them sleep before the next epoch
                        time.sleep(SETTLE)
                    reply = workers[name].ask(op="epoch")
                    epochs[name].append(reply["seconds"])
                    cpu_epochs[name].append(reply["cpu"])
                    reply = workers[name].ask(op="step")
                    step_times[name].append(reply["seconds"])
                    cpu_steps[name].append(reply["cpu"])
        finally:
            for worker in workers.values():
                worker.close()
        for name in names:
            epoch = statistics.median(epochs[name])
            step = statistics.median(step_times[name])
            cpu_epoch = statistics.median(cpu_epochs[name])
            cpu_step = statistics.median(cpu_steps[name])
            rows.append([name, str(threads), f"{epoch:.3f}", f"{epochs[name][0]:.3f}",
                         f"{epochs[name][-1]:.3f}", f"{step * 1e3:.3f}",
                         f"{epoch / (steps[name] * step):.2f}×", f"{cpu_epoch:.3f}",
                         f"{cpu_epoch / (steps[name] * cpu_step):.2f}×"])
    return rows


def _long_runs(args):
    worker = _Worker("fusedmlp", 1, args.data, args.rows)
    rows = []
    try:
        reply = worker.ask(op="small_epochs", rounds=max(args.rounds, 5) * 4)
        if "error" in reply:
            print(f"# digits epochs: {reply['error']}", file=sys.stderr)
        else:
            args.small = (f"digits ({reply['rows']:,} training rows) 64-64-10 b32, fit epoch "
                          f"{reply['epoch'] * 1e3:.2f} ms = {reply['steps']} steps x "
                          f"{reply['step'] * 1e6:.1f} us x "
                          f"{reply['epoch'] / (reply['steps'] * reply['step']):.2f}")
        for batch in (1, 32):
            for optimizer in ("adam", "momentum"):
                reply = worker.ask(op="long_run", batch=batch, optimizer=optimizer,
                                   steps=args.long_steps)
                if "error" in reply:
                    print(f"# long run b{batch} {optimizer}: {reply['error']}", file=sys.stderr)
                    continue
                rows.append([f"784-128-10 b{batch}",
                             "Adam" if optimizer == "adam" else "SGD momentum 0.9",
                             f"{reply['fresh'] * 1e6:,.1f}", f"{reply['late'] * 1e6:,.1f}",
                             f"{reply['late'] / reply['fresh']:.2f}", str(reply["subnormal"])])
    finally:
        worker.close()
    return rows


def _markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m fusedmlp bench runs",
        description="Time whole training epochs (fusedmlp fit, NumPy, PyTorch eager, "
                    "torch.compile, JAX jit) and fusedmlp's step time after a long run.")
    parser.add_argument("--data", help="directory of the Fashion-MNIST IDX files (default: "
                                       "synthetic data of the same shape)")
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs each (default 5)")
    parser.add_argument("--threads", default="1,2", help="BLAS thread counts (default 1,2)")
    parser.add_argument("--competitors", default=",".join(COMPETITORS),
                        help=f"comma-separated subset of {','.join(COMPETITORS)}")
    parser.add_argument("--long-steps", type=int, default=LONG_RUN_STEPS,
                        help=f"steps of the long run (default {LONG_RUN_STEPS})")
    parser.add_argument("--tables", default="end-to-end,long-run",
                        help="which tables (default end-to-end,long-run)")
    parser.add_argument("--rows", type=int, default=60000,
                        help="rows of the synthetic data (default 60000, as Fashion-MNIST)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.threads = [int(n) for n in args.threads.split(",")]
    args.competitors = [c for c in args.competitors.split(",") if c]
    unknown = set(args.competitors) - set(COMPETITORS)
    if unknown:
        parser.error(f"--competitors: unknown {sorted(unknown)}; choose from {COMPETITORS}")
    args.tables = args.tables.split(",")
    return args


def main(argv=None) -> int:
    """Run the tables and print them as Markdown; returns an exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse(argv)
    if args.worker:
        _worker(args.worker, args.worker_threads, args.data, args.rows)
        return 0
    started = time.perf_counter()
    competitors = [c for c in args.competitors if bench.importable(MODULES[c])]
    skipped = [c for c in args.competitors if c not in competitors]
    print("# fusedmlp benchmark: training runs")
    print(f"# command: python -m fusedmlp bench runs {' '.join(argv)}".rstrip())
    print(f"# machine: {bench.machine()}")
    versions = bench.versions()
    print("# versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
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
        print(_markdown(["", "threads", "epoch s", "first", "last", "step ms", "×steps",
                         "CPU s", "×steps (CPU)"],
                        _end_to_end(args, competitors)), flush=True)
        print()
    if "long-run" in args.tables:
        print(f"fusedmlp step time after {args.long_steps:,} steps relative to a fresh model, "
              "float32, 1 thread (µs; subnormal = optimiser-state entries below the smallest "
              "normal float32 at the end):\n")
        args.small = None
        print(_markdown(["network", "optimiser", "fresh µs", "after µs", "ratio", "subnormal"],
                        _long_runs(args)))
        if args.small:
            print(f"\nSmall epochs (fusedmlp, 1 thread): {args.small}")
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
