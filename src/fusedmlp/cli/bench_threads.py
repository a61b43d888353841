"""Threads table: ``python -m fusedmlp bench threads``.

For each network and batch: fusedmlp's float32 Adam training step and ``predict_proba`` at
``n_threads`` = 1, 2 and "auto"; the critical-path estimate of the 2-part step (its parts run
one after another on one thread and timed: the longest part of every parallel region plus the
serial rest, so the partition is judged apart from the machine's load); onnxruntime's
inference at 1 thread, and torch.compile and JAX ``jit`` training steps at 1 and 2 threads
when installed (each peer and thread count in its own subprocess, so that its thread pool does
not spin beside fusedmlp's; at 1 thread pinned to one CPU as well as told to use one thread),
and a line saying whether fusedmlp's step is ahead of both in every cell; the GEMM floor (the step's matrix products alone, one thread, from C) and the
hardware floors (the step's FLOPs over the measured large-GEMM rate of this backend at 1 and 2
threads). Then the Fashion-MNIST epoch: ``fit`` for one epoch of 784-256-10, batch 128, Adam,
float32 at 1, 2 and "auto" threads (Debian's dataset-fashion-mnist; skipped when absent).

fusedmlp's settings and the peers are measured in interleaved rounds (a peer's process is
asked for one timed loop at a time), so a burst of load hits every setting alike; medians over rounds, microseconds per call; ratios are taken within this one run.
NumPy's and SciPy's BLAS are pinned to one thread (threadpoolctl, user_api="blas").
"""

from __future__ import annotations

import os
import sys

import numpy as np

from ._harness import (CommandParser, Worker, concurrent_seconds, fastest, interleave,
                       markdown, medians, one_call, pinned, seconds_per_call)
from ._peers import jax_adam, jax_mlp, mlp_flops, onnxruntime_predict_proba, torch_mlp

__all__ = ["main", "CONFIGS"]

CONFIGS = [((64, 32, 10), 32), ((784, 128, 10), 1), ((784, 128, 10), 32),
           ((784, 128, 10), 256), ((784, 256, 10), 128), ((784, 512, 512, 10), 64),
           ((784, 512, 512, 10), 1024)]


def _data(sizes, batch):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(batch, sizes[0])).astype(np.float32),
            rng.integers(0, sizes[-1], size=batch))


def gemm_peak(threads, seconds=0.3, n=1024):
    """GFLOP/s of float32 n x n x n products through fusedmlp's backend, on `threads` Python
    threads at once (the GIL is released), summed."""
    from .. import _kernels

    rng = np.random.default_rng(0)
    work = [(rng.random((n, n), np.float32), rng.random((n, n), np.float32),
             np.empty((n, n), np.float32)) for _ in range(threads)]
    reps = max(1, int(seconds * 50e9 / (2 * n ** 3)))
    elapsed = concurrent_seconds([lambda A=A, B=B, C=C: _kernels.gemm_repeat(A, B, C, reps)
                                  for A, B, C in work])
    return threads * reps * 2 * n ** 3 / elapsed / 1e9


def critical_path(call, seconds):
    """(fastest call, critical path) in seconds of `call` (a 2-part fusedmlp call) with its
    parts run on the calling thread and timed (pool.h's trace): the fastest time of every
    part over the calls, the longest part of each region, plus the serial rest."""
    from .. import _network

    _network.trace_parts(True)
    try:
        best, traces = fastest(call, seconds, after=_network.trace_parts)
    finally:
        _network.trace_parts(False)
    parts = traces[0]
    for runs in traces[1:]:
        parts = [[min(a, b) for a, b in zip(r, q)] for r, q in zip(parts, runs)]
    every = sum(sum(r) for r in parts) * 1e-9
    longest = sum(max(r) for r in parts) * 1e-9
    return best, best - every + longest


# ----------------------------------------------------------------------------- peers

def _torch_step(sizes, X, y, threads):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    model = torch_mlp(sizes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)
    forward = torch.compile(lambda x, t: F.cross_entropy(model(x), t))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = forward(X_t, y_t)
        loss.backward()
        optimizer.step()

    return step


def _jax_step(sizes, X, y, threads):
    import jax
    import jax.numpy as jnp

    update = jax.jit(jax_adam)
    state = list(jax_mlp(sizes))
    x, t = jnp.asarray(X), jnp.asarray(y)

    def step():
        state[0], state[1], loss = update(state[0], state[1], x, t)
        jax.block_until_ready(loss)

    return step


def serve_peer(name, threads, configs):
    """The ops of a peer's worker process (a :class:`Worker`'s target): build (and compile)
    the peer's training step of every config first, then ``time`` (one timed loop of config
    `index`'s step)."""
    builder = {"torch": _torch_step, "jax": _jax_step}[name]
    steps = []
    for sizes, batch in configs:
        X, y = _data(sizes, batch)
        steps.append(builder(tuple(sizes), X, y, threads))
        for _ in range(3):
            steps[-1]()         # compile
    return {"time": lambda index, target_time: seconds_per_call(steps[index], target_time)}


def start_peers(names, configs, skipped):
    """{label: Worker} of every peer at 1 and 2 threads that starts; why the others did not go
    into `skipped`. The processes build and compile at the same time, before any timing; each
    runs on as many CPUs as it has threads, so no helper thread of its runtime takes another
    core."""
    peers = {}
    for name in names:
        for threads in (1, 2):
            multi = "true" if threads > 1 else "false"
            xla = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=1"
                   f" --xla_cpu_multi_thread_eigen={multi} intra_op_parallelism_threads={threads}")
            label = f"{name} {threads}"
            peers[label] = Worker(label, "fusedmlp.cli.bench_threads:serve_peer",
                                  {"name": name, "threads": threads,
                                   "configs": [[list(s), b] for s, b in configs]},
                                  threads=threads, pin=True, env={"XLA_FLAGS": xla})
    for label, peer in list(peers.items()):
        try:
            peer.ask("ready")
        except Exception as exc:
            skipped[label] = f"{type(exc).__name__}: {exc}"
            peer.close()
            del peers[label]
    return peers


# ----------------------------------------------------------------------------- fusedmlp

def measure(configs=CONFIGS, rounds=5, target_time=0.1, peers=("torch", "jax", "onnxruntime")):
    import fusedmlp

    results, skipped = [], {}
    with pinned(1, user_api="blas"):
        peaks = {1: gemm_peak(1), 2: gemm_peak(2)}
        others = start_peers([p for p in peers if p != "onnxruntime"], configs, skipped)
        try:
            for index, (sizes, batch) in enumerate(configs):
                results.append(_measure_config(fusedmlp, index, sizes, batch, rounds,
                                               target_time, peers, others, peaks, skipped))
        finally:
            for peer in others.values():
                peer.close()
    return peaks, results, skipped


def _measure_config(fusedmlp, index, sizes, batch, rounds, target_time, peers, others, peaks,
                    skipped):
    X, y = _data(sizes, batch)
    calls = {}
    for n in (1, 2, "auto"):
        model = fusedmlp.MLP(list(sizes), seed=0, n_threads=n)
        optimizer = fusedmlp.Adam(1e-3)
        calls[f"step {n}"] = (lambda m=model, o=optimizer: m.train_step(X, y, o))
        calls[f"infer {n}"] = (lambda m=model: m.predict_proba(X))
        if n == 1:
            model.train_step(X, y, optimizer)
            calls["GEMM floor"] = (lambda m=model: m.gemm_floor(X, 1))
            one = calls["step 1"], calls["infer 1"]
        if n == 2:
            two = calls["step 2"], calls["infer 2"]
    if "onnxruntime" in peers:
        try:
            calls["onnxruntime 1"] = onnxruntime_predict_proba(model, X)
        except Exception as exc:        # not installed, or failed: reported
            skipped["onnxruntime"] = f"{type(exc).__name__}: {exc}"
    measures = {name: (lambda call=call: seconds_per_call(call, target_time))
                for name, call in calls.items()}
    measures.update({label: (lambda peer=peer: peer.ask("time", index=index,
                                                         target_time=target_time))
                     for label, peer in others.items()})
    row = medians(interleave(measures, rounds, failed=skipped))
    # the partition apart from the load: fastest single calls of one thread against the
    # critical path of two parts, both timed on this thread
    for kind, single, split in (("step", one[0], two[0]), ("infer", one[1], two[1])):
        row[f"{kind} 1 fastest"] = fastest(single, 3 * target_time)
        row[f"{kind} 2 critical"] = critical_path(split, 3 * target_time)[1]
    flops = mlp_flops(sizes, batch)
    row["hardware floor 1"] = flops / (peaks[1] * 1e9)
    row["hardware floor 2"] = flops / (peaks[2] * 1e9)
    return {"sizes": sizes, "batch": batch, "times": row,
            "auto_parts": model.network.step_parts(batch),
            "auto_infer_parts": model.network.inference_parts(batch)}


def epoch_times(rounds=3):
    """Seconds of fit(epochs=1) on Fashion-MNIST (784-256-10, batch 128, Adam, float32) per
    n_threads setting, medians of interleaved rounds; None when the data is absent."""
    import fusedmlp

    from .datasets import load_idx_dataset

    try:
        data = load_idx_dataset()
    except (OSError, ValueError):
        return None
    def epoch(n):
        model = fusedmlp.MLP([784, 256, 10], seed=0, n_threads=n)
        model.fit(data.X_train[:1024], data.y_train[:1024], epochs=1, batch_size=128)
        return one_call(lambda: model.fit(data.X_train, data.y_train, epochs=1, batch_size=128,
                                          optimizer=fusedmlp.Adam(1e-3)))["seconds"]

    with pinned(1, user_api="blas"):
        return medians(interleave({n: (lambda n=n: epoch(n)) for n in (1, 2, "auto")}, rounds))


def _us(t):
    return f"{t * 1e6:,.0f}" if t >= 1e-4 else f"{t * 1e6:.1f}"


def table(results) -> str:
    """Two markdown tables: training steps, then inference."""
    step_cols = ["step 1", "step 2", "step auto", "torch 1", "jax 1", "torch 2", "jax 2",
                 "GEMM floor", "hardware floor 1", "hardware floor 2"]
    infer_cols = ["infer 1", "infer 2", "infer auto", "onnxruntime 1"]
    out = []
    for columns, kind in ((step_cols, "step"), (infer_cols, "infer")):
        present = [c for c in columns if any(c in r["times"] for r in results)]
        head = (["network", "batch"] + [c + " (µs)" for c in present]
                + ["2 vs 1", "2 vs 1 critical path", "auto parts", "auto vs 1"])
        rows = []
        for r in results:
            t = r["times"]
            parts = r["auto_parts"] if kind == "step" else r["auto_infer_parts"]
            cells = [_us(t[c]) if c in t else "–" for c in present]
            rows.append(["-".join(map(str, r["sizes"])), str(r["batch"])] + cells
                        + [f"{t[kind + ' 1'] / t[kind + ' 2']:.2f}×",
                           f"{t[kind + ' 1 fastest'] / t[kind + ' 2 critical']:.2f}×",
                           str(parts), f"{t[kind + ' 1'] / t[kind + ' auto']:.2f}×"])
        out.append(markdown(head, rows))
    return "\n\n".join(out)


PEER_NAMES = {"torch": "torch.compile", "jax": "JAX jit"}


def verdict(results) -> str:
    """One line: is fusedmlp's step faster than every peer's in every cell of the step table
    at 1 and 2 threads (the issue's target), with the smallest lead over each peer."""
    behind: list[str] = []
    leads: dict[tuple[str, int], float] = {}
    for r in results:
        t = r["times"]
        for peer in PEER_NAMES:
            for n in (1, 2):
                if f"{peer} {n}" not in t:
                    continue
                ratio = t[f"{peer} {n}"] / t[f"step {n}"]
                leads[peer, n] = min(leads.get((peer, n), ratio), ratio)
                if ratio <= 1:
                    behind.append(f"{'-'.join(map(str, r['sizes']))} b{r['batch']} against "
                                  f"{peer} {n} ({ratio:.2f}×)")
    if not leads:
        return "# fusedmlp ahead of torch.compile and JAX jit: not measured (neither ran)"
    missing = [f"{p} {n}" for p in PEER_NAMES for n in (1, 2) if (p, n) not in leads]
    smallest = ", ".join(f"{p} {n} thread{'s' if n > 1 else ''} {v:.2f}×"
                         for (p, n), v in sorted(leads.items()))
    answer = "yes" if not behind else "NO: behind at " + "; ".join(behind)
    return (f"# fusedmlp's step ahead of torch.compile and JAX jit in every cell at 1 and 2 "
            f"threads: {answer} (the smallest ratio of a peer's time to fusedmlp's at the same "
            f"thread count: {smallest})"
            + (f"; not measured: {', '.join(missing)}" if missing else ""))


def main(argv=None) -> int:
    parser = CommandParser(
        "threads", "fusedmlp's step and inference at 1, 2 and 'auto' threads beside "
                   "torch.compile and JAX jit at 1 and 2 threads and onnxruntime inference at 1, "
                   "the GEMM and hardware floors, and the Fashion-MNIST epoch.",
        defaults={"rounds": 5, "target_time": 0.1, "epoch_rounds": 3},
        quick={"rounds": 3, "target_time": 0.03, "epoch_rounds": 1},
        quick_help="3 rounds of 0.03 s")
    parser.add_argument("--peers", default="torch,jax,onnxruntime",
                        help="comma-separated peers (default torch,jax,onnxruntime; '' none)")
    parser.add_argument("--no-epoch", action="store_true", help="skip the Fashion-MNIST epoch")
    args = parser.parse_args(argv)

    import fusedmlp

    peers = [p for p in args.peers.split(",") if p]
    peaks, results, skipped = measure(rounds=args.rounds, target_time=args.target_time,
                                      peers=peers)
    blas = fusedmlp.show_config(as_dict=True)["blas"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# fusedmlp bench threads: float32 Adam steps, median of {args.rounds} interleaved "
          f"rounds; BLAS {blas['name']} ({blas['version']}); large-GEMM peak "
          f"{peaks[1]:.0f} GFLOP/s at 1 thread, {peaks[2]:.0f} at 2; load average {load:.1f}")
    for name, why in skipped.items():
        print(f"# {name} left out: {why}")
    print(table(results))
    print("\n" + verdict(results))
    if not args.no_epoch:
        epoch = epoch_times(rounds=args.epoch_rounds)
        if epoch is None:
            print("\n# Fashion-MNIST epoch left out: no data (apt-get install dataset-fashion-mnist)")
        else:
            print("\nFashion-MNIST, one epoch of fit (784-256-10, batch 128, Adam, float32), s:\n")
            print(markdown(["n_threads", "1", "2", "auto"],
                           [["fit, 1 epoch"] + [f"{epoch[n]:.3f}" for n in (1, 2, "auto")]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
