"""Threads table: ``python -m fusedmlp bench threads``.

For each network and batch: fusedmlp's float32 Adam training step and 'predict_proba' at
``n_threads`` = 1, 2 and "auto"; torch.compile and JAX ``jit`` training steps at 2 threads when
installed; the GEMM floor (the step's matrix products alone, one thread, from C) and the
hardware floors (the step's FLOPs over the measured large-GEMM rate of this backend at 1 and 2
threads). All in this process; rounds are interleaved so a burst of load hits every setting
alike; medians over rounds, microseconds per call; ratios are taken within this one run.
NumPy's and SciPy's BLAS are pinned to one thread (threadpoolctl, user_api="blas").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

import numpy as np

__all__ = ["main", "CONFIGS"]

CONFIGS = [((64, 32, 10), 32), ((784, 128, 10), 32), ((784, 128, 10), 256),
           ((784, 256, 10), 128), ((784, 512, 512, 10), 64), ((784, 512, 512, 10), 1024)]


def _loop(call, target_time):
    call()
    calls, start = 0, time.perf_counter()
    while True:
        call()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= target_time and calls >= 2:
            return elapsed / calls


def _step_flops(sizes, batch):
    weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return 2.0 * batch * (3 * weights - sizes[0] * sizes[1])


def gemm_peak(threads, seconds=0.3, n=1024):
    """GFLOP/s of float32 n x n x n products through fusedmlp's backend, on `threads` Python
    threads at once (the GIL is released), summed."""
    from .. import _kernels

    rng = np.random.default_rng(0)
    work = [(rng.random((n, n), np.float32), rng.random((n, n), np.float32),
             np.empty((n, n), np.float32)) for _ in range(threads)]
    reps = max(1, int(seconds * 50e9 / (2 * n ** 3)))
    barrier = threading.Barrier(threads)
    times = [0.0] * threads

    def run(i):
        A, B, C = work[i]
        _kernels.gemm_repeat(A, B, C, 1)
        barrier.wait()
        start = time.perf_counter()
        _kernels.gemm_repeat(A, B, C, reps)
        times[i] = time.perf_counter() - start

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return threads * reps * 2 * n ** 3 / max(times) / 1e9


def _torch_step(sizes, X, y):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(2)
    torch.manual_seed(0)
    layers = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-2], sizes[-1]))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)
    forward = torch.compile(lambda x, t: F.cross_entropy(model(x), t))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = forward(X_t, y_t)
        loss.backward()
        optimizer.step()

    return step


def _jax_step(sizes, X, y):
    import os
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true "
                                       "intra_op_parallelism_threads=2")
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(0)
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        params.append((jax.random.normal(sub, (a, b), jnp.float32) * (2 / a) ** 0.5,
                       jnp.zeros(b, jnp.float32)))

    def loss(p, x, t):
        for W, b in p[:-1]:
            x = jax.nn.relu(x @ W + b)
        z = x @ p[-1][0] + p[-1][1]
        return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, t[:, None], 1)[:, 0])

    @jax.jit
    def update(p, m, v, k, x, t):
        g = jax.grad(loss)(p, x, t)
        m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
        step = 1e-3 * jnp.sqrt(1 - 0.999 ** k) / (1 - 0.9 ** k)
        p = jax.tree_util.tree_map(lambda p, m, v: p - step * m / (jnp.sqrt(v) + 1e-8), p, m, v)
        return p, m, v

    state = [params, jax.tree_util.tree_map(jnp.zeros_like, params),
             jax.tree_util.tree_map(jnp.zeros_like, params), 1]
    x, t = jnp.asarray(X), jnp.asarray(y)

    def step():
        p, m, v = update(state[0], state[1], state[2], state[3], x, t)
        jax.block_until_ready(p)
        state[:3] = p, m, v
        state[3] += 1

    return step


def measure(configs=CONFIGS, rounds=5, target_time=0.1, peers=("torch", "jax")):
    import fusedmlp
    from threadpoolctl import threadpool_limits

    builders = {"torch": _torch_step, "jax": _jax_step}
    results, skipped = [], {}
    with threadpool_limits(limits=1, user_api="blas"):
        peaks = {1: gemm_peak(1), 2: gemm_peak(2)}
        for sizes, batch in configs:
            rng = np.random.default_rng(0)
            X = rng.normal(size=(batch, sizes[0])).astype(np.float32)
            y = rng.integers(0, sizes[-1], size=batch)
            calls = {}
            for n in (1, 2, "auto"):
                model = fusedmlp.MLP(list(sizes), seed=0, n_threads=n)
                optimizer = fusedmlp.Adam(1e-3)
                calls[f"step {n}"] = (lambda m=model, o=optimizer: m.train_step(X, y, o))
                calls[f"infer {n}"] = (lambda m=model: m.predict_proba(X))
                if n == 1:
                    model.train_step(X, y, optimizer)
                    calls["GEMM floor"] = (lambda m=model: m.gemm_floor(X, 1))
            for name in peers:
                try:
                    calls[f"{name} 2"] = builders[name](sizes, X, y)
                except Exception as exc:        # not installed, or failed to build: reported
                    skipped[name] = f"{type(exc).__name__}: {exc}"
            samples = {name: [] for name in calls}
            for r in range(rounds):
                names = list(calls)
                shift = r % len(names)
                for name in names[shift:] + names[:shift]:
                    samples[name].append(_loop(calls[name], target_time))
            row = {name: statistics.median(v) for name, v in samples.items()}
            flops = _step_flops(sizes, batch)
            row["hardware floor 1"] = flops / (peaks[1] * 1e9)
            row["hardware floor 2"] = flops / (peaks[2] * 1e9)
            results.append({"sizes": sizes, "batch": batch, "times": row,
                            "auto_parts": model.network.step_parts(batch)})
    return peaks, results, skipped


def table(results) -> str:
    columns = ["step 1", "step 2", "step auto", "infer 1", "infer 2", "torch 2", "jax 2",
               "GEMM floor", "hardware floor 1", "hardware floor 2"]
    present = [c for c in columns if any(c in r["times"] for r in results)]
    head = ["network", "batch"] + [c + " (µs)" for c in present] + ["2 vs 1", "auto vs 1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        t = r["times"]
        cells = [f"{t[c] * 1e6:,.0f}" if c in t else "–" for c in present]
        lines.append(
            "| " + " | ".join(["-".join(map(str, r["sizes"])), str(r["batch"])] + cells
                              + [f"{t['step 1'] / t['step 2']:.2f}×",
                                 f"{t['step 1'] / t['step auto']:.2f}×"]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="fusedmlp bench threads",
        description="fusedmlp's step and inference at 1, 2 and 'auto' threads beside "
                    "torch.compile and JAX jit at 2 threads, the GEMM and hardware floors.")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--target-time", type=float, default=0.1,
                        help="seconds per timed loop (default 0.1)")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.03 s")
    parser.add_argument("--peers", default="torch,jax",
                        help="comma-separated peers at 2 threads (default torch,jax; '' none)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.target_time = 3, 0.03
    import os

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
