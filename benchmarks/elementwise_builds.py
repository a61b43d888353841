"""Elementwise-loop timings of several fusedmlp builds, rounds interleaved (issue 16's table).

    python benchmarks/elementwise_builds.py NAME=DIR [NAME=DIR ...] [--rounds 7]

Each DIR holds an unpacked fusedmlp (e.g. ``unzip`` of a wheel built with ``CC=clang``); every
round runs each build once in its own subprocess with BLAS pinned to one thread (nothing here
calls BLAS anyway), and the table gives the median over rounds of each kernel's best-of-5 time,
in microseconds, plus each build's ratio to the first. ``FUSEDMLP_ISA`` passes through, so one
build can be timed per variant.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

KERNELS = ["relu", "sigmoid", "tanh", "elu", "softplus", "softmax", "adam"]
N = 1 << 18                     # 256 Ki elements: in L2, so the arithmetic is what is timed


def _child():
    import time

    import numpy as np

    from fusedmlp import _kernels
    from fusedmlp.functional import ACTIVATIONS

    results = {}
    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(0)
        x = rng.normal(scale=3.0, size=N).astype(dtype)
        out = np.empty_like(x)
        z = x.reshape(-1, 1024)
        zout = np.empty_like(z)
        p, g = rng.normal(size=N).astype(dtype), rng.normal(size=N).astype(dtype)
        m, v = np.zeros(N, dtype), np.zeros(N, dtype)
        for name in KERNELS:
            if name == "softmax":
                call = lambda: _kernels.softmax(z, zout, False)           # noqa: E731
            elif name == "adam":
                hyper = np.zeros(8)
                hyper[:5] = 1e-3, 0.0, 0.9, 0.999, 1e-8       # lr, decay, beta1, beta2, eps
                hyper[6] = 1                                   # step count
                call = lambda: _kernels.optimizer_update(2, hyper, p, g, m, v, N)  # noqa: E731
            else:
                kind = ACTIVATIONS[name]
                call = lambda: _kernels.activation(x, out, kind)          # noqa: E731
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(10):
                    call()
                best = min(best, (time.perf_counter() - t0) / 10)
            results[f"{name} {np.dtype(dtype).name}"] = best * 1e6
    print(json.dumps(results))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("builds", nargs="+", metavar="NAME=DIR")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    builds = [b.split("=", 1) for b in args.builds]
    times = {name: [] for name, _ in builds}
    for _ in range(args.rounds):
        for name, directory in builds:
            env = dict(os.environ, PYTHONPATH=directory, OPENBLAS_NUM_THREADS="1")
            out = subprocess.run([sys.executable, __file__, "--child"], env=env, check=True,
                                 capture_output=True, text=True, cwd="/").stdout
            times[name].append(json.loads(out))
    names = [name for name, _ in builds]
    rows = list(times[names[0]][0])
    med = {n: {r: statistics.median(t[r] for t in times[n]) for r in rows} for n in names}
    print("| kernel (2^18 elements) | " + " | ".join(f"{n} µs" for n in names)
          + " | " + " | ".join(f"{n}/{names[0]}" for n in names[1:]) + " |")
    print("| --- " * (1 + 2 * len(names) - 1) + "|")
    for r in rows:
        cells = [f"{med[n][r]:.1f}" for n in names]
        ratios = [f"{med[n][r] / med[names[0]][r]:.2f}" for n in names[1:]]
        print(f"| {r} | " + " | ".join(cells + ratios) + " |")


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        _child()
    else:
        main()
