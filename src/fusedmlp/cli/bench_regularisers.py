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

import statistics

import numpy as np

from ._harness import Case, CommandParser, markdown, measure_case, pinned

__all__ = ["main", "measure"]

NETWORKS = (([64, 32, 10], 32), ([784, 256, 10], 128), ([784, 512, 512, 10], 64))
VARIANTS = {"off": (0.0, 0.0), "dropout 0.5": (0.5, 0.0), "l1 1e-4": (0.0, 1e-4),
            "both": (0.5, 1e-4)}


class Regularisers(Case):
    """One setting (sizes, batch): a model and optimiser per variant, the same data."""

    def __init__(self, threads, seed):
        self.threads, self.seed = threads, seed
        self.rng = np.random.default_rng(seed)

    def setup(self, setting):
        import fusedmlp

        sizes, batch = setting
        X = self.rng.normal(size=(batch, sizes[0])).astype(np.float32)
        y = self.rng.integers(0, sizes[-1], batch)
        calls = {}
        for name, (p, l1) in VARIANTS.items():
            model = fusedmlp.MLP(sizes, seed=self.seed, n_threads=self.threads, dropout=p)
            optimizer = fusedmlp.Adam(1e-3, l1=l1)
            calls[name] = lambda model=model, optimizer=optimizer: model.train_step(X, y,
                                                                                   optimizer)
        return calls


def measure(networks=NETWORKS, rounds=7, target_time=0.05, threads=1, seed=0):
    """[(network, batch, {variant: (median seconds per step, median ratio to off)})]."""
    with pinned(threads):
        measured = measure_case(Regularisers(threads, seed), networks, rounds, target_time)
    results = []
    for (sizes, batch), times in measured:
        off = times["off"]
        results.append(("-".join(map(str, sizes)), batch, {
            name: (statistics.median(t), statistics.median(a / b for a, b in zip(t, off)))
            for name, t in times.items()}))
    return results


def main(argv=None) -> int:
    parser = CommandParser(
        "regularisers", "Training-step time with dropout and/or the L1 penalty on, against off.",
        defaults={"rounds": 7, "target_time": 0.05}, quick={"rounds": 3, "target_time": 0.01},
        quick_help="3 rounds of 0.01 s")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads and fusedmlp's n_threads (default 1)")
    parser.add_argument("--networks", default=",".join(
        f"{'-'.join(map(str, sizes))}:{batch}" for sizes, batch in NETWORKS),
        help="comma-separated SIZES:BATCH (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        networks = [([int(n) for n in sizes.split("-")], int(batch))
                    for sizes, batch in (item.split(":") for item in args.networks.split(","))]
    except ValueError:
        parser.error(f"--networks must look like 784-256-10:128, got {args.networks!r}")
    results = measure(networks, rounds=args.rounds, target_time=args.target_time,
                      threads=args.threads)
    print(f"# fusedmlp bench regularisers: train_step, Adam, float32, {args.threads} "
          f"thread(s); median of {args.rounds} interleaved rounds; x = median ratio to off")
    rows = [[network, str(batch), f"{row['off'][0] * 1e6:,.1f} µs"]
            + [f"{row[name][0] * 1e6:,.1f} µs (×{row[name][1]:.2f})"
               for name in list(VARIANTS)[1:]]
            for network, batch, row in results]
    print(markdown(["network", "batch", *VARIANTS], rows))
    return 0
