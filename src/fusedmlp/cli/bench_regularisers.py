"""Regulariser table: ``python -m fusedmlp bench regularisers``.

What dropout and the L1 penalty cost when they are on: the training step (``train_step``,
Adam, float32) of a few networks, each timed without regularisation, with dropout 0.5 on
every hidden layer, with ``l1=1e-4`` and with both. The variants are separate models of the
same shape, timed in interleaved rounds (so a burst of load hits each alike); the table gives
the median microseconds per step and each variant's median ratio to "off" within a round.
BLAS is pinned to ``--threads`` threads (threadpoolctl) and the models run with
``n_threads`` equal to it. (That they cost nothing when off is the main ``bench`` step table,
before and after.)
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

__all__ = ["main", "measure"]

NETWORKS = (([64, 32, 10], 32), ([784, 256, 10], 128), ([784, 512, 512, 10], 64))
VARIANTS = {"off": (0.0, 0.0), "dropout 0.5": (0.5, 0.0), "l1 1e-4": (0.0, 1e-4),
            "both": (0.5, 1e-4)}


def _per_step(model, optimizer, X, y, calls):
    start = time.perf_counter()
    for _ in range(calls):
        model.train_step(X, y, optimizer)
    return (time.perf_counter() - start) / calls


def measure(networks=NETWORKS, rounds=7, target_time=0.05, threads=1, seed=0):
    """[(network, batch, {variant: (median seconds per step, median ratio to off)})]."""
    import fusedmlp
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    results = []
    with threadpool_limits(threads):
        for sizes, batch in networks:
            X = rng.normal(size=(batch, sizes[0])).astype(np.float32)
            y = rng.integers(0, sizes[-1], batch)
            runs = {name: (fusedmlp.MLP(sizes, seed=seed, n_threads=threads, dropout=p),
                           fusedmlp.Adam(1e-3, l1=l1))
                    for name, (p, l1) in VARIANTS.items()}
            warm = _per_step(*runs["off"], X, y, 3)
            calls = max(2, int(target_time / max(warm, 1e-7)))
            times = {name: [] for name in runs}
            for name, (model, optimizer) in runs.items():
                _per_step(model, optimizer, X, y, 2)
            for _ in range(rounds):
                for name, (model, optimizer) in runs.items():
                    times[name].append(_per_step(model, optimizer, X, y, calls))
            off = times["off"]
            results.append(("-".join(map(str, sizes)), batch, {
                name: (statistics.median(t), statistics.median(a / b for a, b in zip(t, off)))
                for name, t in times.items()}))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="fusedmlp bench regularisers",
        description="Training-step time with dropout and/or the L1 penalty on, against off.")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--target-time", type=float, default=0.05,
                        help="seconds per timed loop (default 0.05)")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads and fusedmlp's n_threads (default 1)")
    parser.add_argument("--networks", default=",".join(
        f"{'-'.join(map(str, sizes))}:{batch}" for sizes, batch in NETWORKS),
        help="comma-separated SIZES:BATCH (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.01 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.target_time = 3, 0.01
    try:
        networks = [([int(n) for n in sizes.split("-")], int(batch))
                    for sizes, batch in (item.split(":") for item in args.networks.split(","))]
    except ValueError:
        parser.error(f"--networks must look like 784-256-10:128, got {args.networks!r}")
    results = measure(networks, rounds=args.rounds, target_time=args.target_time,
                      threads=args.threads)
    print(f"# fusedmlp bench regularisers: train_step, Adam, float32, {args.threads} "
          f"thread(s); median of {args.rounds} interleaved rounds; x = median ratio to off")
    print("| network | batch | " + " | ".join(VARIANTS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in VARIANTS) + " |")
    for network, batch, row in results:
        cells = [f"{row['off'][0] * 1e6:,.1f} µs"] + [
            f"{row[name][0] * 1e6:,.1f} µs (×{row[name][1]:.2f})" for name in list(VARIANTS)[1:]]
        print(f"| {network} | {batch} | " + " | ".join(cells) + " |")
    return 0
