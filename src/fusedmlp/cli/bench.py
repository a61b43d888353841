"""fusedmlp against pure NumPy, PyTorch eager and scikit-learn: one command, one table.

``python -m fusedmlp bench`` (or ``python -m fusedmlp.cli.bench``, or
``python benchmarks/compare.py``) times a training step and an inference call
(``predict_proba``) of the same multilayer perceptron in

- fusedmlp (``MLP.train_step`` with Adam, or plain SGD with ``--optimizer sgd``;
  ``MLP.predict_proba``),
- the pure-NumPy reference (``fusedmlp.reference.NumpyMLP``),
- PyTorch eager (``nn.Sequential``, ``F.cross_entropy``, ``torch.optim.Adam``), when importable,
- scikit-learn's ``MLPClassifier`` (``partial_fit`` on one batch, and
  ``predict_proba``), when importable,

and the **GEMM floor**: the matrix products of one fusedmlp training step alone, called from C
(``Network.matmuls_only``), i.e. what a step would cost if everything but BLAS were free.

How it measures
---------------
Each competitor runs in its own worker process (the harness's ``Worker``, ``cli/_harness.py``:
JSON lines over stdin/stdout): NumPy's and SciPy's OpenBLAS thread pools slow each other down
when one process uses both. For every setting (network, batch, dtype, BLAS threads) the rounds
are interleaved -- round 1 of every competitor, then round 2, ... in a rotating order -- so a
burst of load on the machine hits all competitors alike. One round is one timed loop whose
length adapts to the call (about ``--target-time`` seconds, at least ``--min-calls`` calls)
after a warm-up call and a call that sizes the loop; the table shows the median over rounds
and the min-max range. BLAS threads are set in each worker with threadpoolctl (and
``torch.set_num_threads``).
"""

from __future__ import annotations

import gc
import json
import os
import sys

from . import _plotting
from .._version import PROG
from ._harness import (CommandParser, Repeat, Stopwatch, Worker, WorkerError, header,
                       importable, interleave, markdown, pinned, seconds_per_call, split_list,
                       summary)
from ._peers import torch_mlp

__all__ = ["main", "serve", "CONFIGS", "QUICK_CONFIGS", "BUILDERS"]

#: (layer sizes, batch sizes) measured by a full run.
CONFIGS = [
    ((64, 32, 10), (32,)),
    ((784, 128, 10), (1, 32, 256)),
    ((784, 512, 512, 10), (64, 1024)),
]
QUICK_CONFIGS = CONFIGS
COMPETITORS = ("fusedmlp", "numpy", "torch", "sklearn")
LABELS = {"fusedmlp": "fusedmlp", "numpy": "NumPy", "torch": "PyTorch", "sklearn": "sklearn",
          "floor": "GEMM floor"}
LEARNING_RATE = 1e-3
#: Further tables, each a module with its own ``main(argv)``: ``python -m fusedmlp bench NAME``.
TABLES = {"runs": "fusedmlp.cli.bench_runs", "latency": "fusedmlp.cli.bench_latency",
          "threads": "fusedmlp.cli.bench_threads", "bf16": "fusedmlp.cli.bench_bf16",
          "sparse": "fusedmlp.cli.bench_sparse",
          "regularisers": "fusedmlp.cli.bench_regularisers", "isa": "fusedmlp.cli.bench_isa"}


# =================================================================== the case
def _data(sizes, batch, dtype, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(batch, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], size=batch)
    return X, y


def _build_fusedmlp(sizes, batch, dtype, optimizer):
    import fusedmlp

    X, y = _data(sizes, batch, dtype)
    model = fusedmlp.MLP(sizes, dtype=dtype, seed=0)
    step_optimizer = (fusedmlp.Adam(LEARNING_RATE) if optimizer == "adam"
                      else fusedmlp.SGD(LEARNING_RATE))
    model.train_step(X, y, step_optimizer)         # allocates the workspace the floor uses
    return {
        "train": lambda: model.train_step(X, y, step_optimizer),
        "infer": lambda: model.predict_proba(X),
        "floor": Repeat(lambda repeats: model.gemm_floor(X, repeats)),
    }


def _build_numpy(sizes, batch, dtype, optimizer):
    from fusedmlp.reference import NumpyAdam, NumpyMLP, NumpySGD

    X, y = _data(sizes, batch, dtype)
    model = NumpyMLP(sizes, dtype=dtype, seed=0)
    step_optimizer = (NumpyAdam(LEARNING_RATE) if optimizer == "adam"
                      else NumpySGD(LEARNING_RATE))
    return {
        "train": lambda: model.train_step(X, y, step_optimizer),
        "infer": lambda: model.predict_proba(X),
    }


def _build_torch(sizes, batch, dtype, optimizer):
    import torch
    import torch.nn.functional as F

    X, y = _data(sizes, batch, dtype)
    model = torch_mlp(sizes, torch.float32 if dtype == "float32" else torch.float64)
    optimizer_class = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    step_optimizer = optimizer_class(model.parameters(), lr=LEARNING_RATE)
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)

    def train():
        step_optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(X_t), y_t)
        loss.backward()
        step_optimizer.step()
        return loss

    def infer():
        with torch.inference_mode():
            return torch.softmax(model(X_t), dim=1).numpy()

    return {"train": train, "infer": infer}


def _build_sklearn(sizes, batch, dtype, optimizer):
    import numpy as np
    from sklearn.neural_network import MLPClassifier

    X, y = _data(sizes, batch, dtype)
    # plain SGD for "sgd": no momentum, constant learning rate, as the others
    model = MLPClassifier(hidden_layer_sizes=sizes[1:-1], activation="relu",
                          solver=optimizer, momentum=0.0, nesterovs_momentum=False,
                          learning_rate="constant", alpha=0.0, batch_size=batch,
                          learning_rate_init=LEARNING_RATE, random_state=0)
    model.partial_fit(X, y, classes=np.arange(sizes[-1]))
    return {
        "train": lambda: model.partial_fit(X, y),
        "infer": lambda: model.predict_proba(X),
    }


#: The case's setup: ``BUILDERS[competitor](sizes, batch, dtype, optimizer)`` is ``{"train":
#: call, "infer": call[, "floor": Repeat]}``, the timed callables of one setting (also what
#: benchmarks/test_bench_steps.py times).
BUILDERS = {"fusedmlp": _build_fusedmlp, "numpy": _build_numpy, "torch": _build_torch,
            "sklearn": _build_sklearn}
MODULES = {"fusedmlp": "fusedmlp", "numpy": "numpy", "torch": "torch", "sklearn": "sklearn"}


def serve(name):
    """The ops of the worker process of competitor `name` (a :class:`Worker`'s target):
    ``info`` (its thread pools) and ``measure`` (one round of every callable of a setting)."""
    if name == "torch":
        import torch  # noqa: F401
    elif name == "sklearn":
        import sklearn.neural_network  # noqa: F401
    import fusedmlp  # noqa: F401  (loads SciPy's BLAS too, as an installed fusedmlp would)

    built = {}

    def info():
        import numpy  # noqa: F401
        from threadpoolctl import threadpool_info

        return {"blas": threadpool_info()}

    def measure(setting, threads, target_time, min_calls):
        key = json.dumps(setting)
        if key not in built:
            built.clear()
            gc.collect()
        with pinned(threads):
            if key not in built:
                built[key] = BUILDERS[name](**setting)
            return {what: seconds_per_call(call, target_time, min_calls)
                    for what, call in built[key].items()}

    return {"info": info, "measure": measure}


def _format_us(stat, spread=True):
    if stat is None:
        return "—"
    median, low, high = (stat[k] * 1e6 for k in ("median", "min", "max"))
    digits = 1 if median < 100 else 0
    text = f"{median:,.{digits}f}"
    if spread:
        text += f" ({low:,.{digits}f}–{high:,.{digits}f})"
    return text


def _format_ratio(numerator, denominator):
    if numerator is None or denominator is None:
        return "—"
    return f"{numerator['median'] / denominator['median']:.2f}×"


def _net_name(sizes):
    return "-".join(str(s) for s in sizes)


def _tables(results, competitors, spread=True):
    """The training, inference and threads tables as markdown text."""
    others = [c for c in competitors if c != "fusedmlp"]

    def comparison(key, extra_header, extra_cells):
        """One row per setting: fusedmlp, its extra columns, then each competitor and ratio."""
        header = ["threads", "dtype", "network", "batch", "fusedmlp", *extra_header]
        for other in others:
            header += [LABELS[other], f"×{LABELS[other]}"]
        rows = []
        for result in results:
            t = result[key]
            cells = [str(result["threads"]), result["dtype"], _net_name(result["sizes"]),
                     str(result["batch"]), _format_us(t.get("fusedmlp"), spread),
                     *extra_cells(t)]
            for other in others:
                cells += [_format_us(t.get(other), spread),
                          _format_ratio(t.get(other), t.get("fusedmlp"))]
            rows.append(cells)
        return markdown(header, rows)

    parts = ["Training step, µs per step: median (min–max) over rounds; ×X = X's time / "
             "fusedmlp's; fusedmlp/floor = fusedmlp's time / GEMM floor's.",
             comparison("train", ["GEMM floor", "fusedmlp/floor"],
                        lambda t: [_format_us(t.get("floor"), spread),
                                   _format_ratio(t.get("fusedmlp"), t.get("floor"))]),
             "Inference (predict_proba on one batch), µs per call: median (min–max); "
             "×X = X's time / fusedmlp's.",
             comparison("infer", [], lambda t: [])]

    # 1 vs 2 (or more) threads: time at 1 thread / time at n threads (> 1 means threads help)
    by_setting = {}
    for result in results:
        by_setting.setdefault((result["dtype"], tuple(result["sizes"]), result["batch"]),
                              {})[result["threads"]] = result
    thread_counts = sorted({r["threads"] for r in results})
    if len(thread_counts) > 1 and 1 in thread_counts:
        many = [n for n in thread_counts if n > 1]
        header = ["dtype", "network", "batch"]
        for n in many:
            header += [f"{LABELS[c]} {n}T" for c in ["fusedmlp", "floor"] + others]
        rows = []
        for (dtype, sizes, batch), per_threads in by_setting.items():
            if 1 not in per_threads:
                continue
            cells = [dtype, _net_name(sizes), str(batch)]
            for n in many:
                for c in ["fusedmlp", "floor"] + others:
                    one, other = per_threads[1], per_threads.get(n)
                    if other is None:
                        cells.append("—")
                        continue
                    train = _format_ratio(one["train"].get(c), other["train"].get(c))
                    infer = ("" if c == "floor" else
                             " / " + _format_ratio(one["infer"].get(c), other["infer"].get(c)))
                    cells.append(train + infer)
            rows.append(cells)
        parts += ["BLAS threads: speed-up of the median time over 1 thread "
                  "(> 1 means more threads help; training step / inference).",
                  markdown(header, rows)]
    return "\n\n".join(parts)


def _parse(argv):
    parser = CommandParser(
        "", "Time fusedmlp's training step and inference against pure NumPy, PyTorch eager and "
            "scikit-learn, next to the GEMM floor (one process per competitor). Further "
            "tables: " + ", ".join(f"'bench {name}'" for name in TABLES)
        + " (each with its own --help).",
        defaults={"rounds": 5, "target_time": 0.2, "min_calls": 3, "dtypes": "float32,float64"},
        quick={"rounds": 3, "target_time": 0.03, "min_calls": 2, "dtypes": "float32"},
        quick_help="float32 only, 3 short rounds: about a minute")
    parser.add_argument("--min-calls", type=int,
                        help="calls per timed loop, at least" + parser.said("min_calls"))
    parser.add_argument("--threads", default="1,2", help="BLAS thread counts (default 1,2)")
    parser.add_argument("--dtypes", help="comma-separated" + parser.said("dtypes"))
    parser.add_argument("--competitors", default=",".join(COMPETITORS),
                        help=f"comma-separated subset of {','.join(COMPETITORS)}")
    parser.add_argument("--networks",
                        help="comma-separated networks to run, e.g. 64-32-10,784-128-10")
    parser.add_argument("--settle", type=float, default=0.15,
                        help="seconds of pause before each measurement with more than one BLAS "
                             "thread: OpenBLAS's idle threads spin for ~0.1 s after their last "
                             "call, stealing the core another worker's threads need (default 0.15)")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                        help="the training step's optimiser, the same everywhere (default adam; "
                             "sgd is plain SGD: no momentum)")
    parser.add_argument("--no-spread", action="store_true", help="print medians only")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results to PATH")
    parser.add_argument("--plot", metavar="DIR",
                        help="also write figures to DIR (created if needed): step_time.png, "
                             "inference.png and epoch_time.png, time against batch size per "
                             "competitor (needs matplotlib)")
    args = parser.parse_args(argv)
    args.dtypes = split_list(parser, "--dtypes", args.dtypes, allowed=("float32", "float64"))
    args.threads = split_list(parser, "--threads", args.threads, int)
    args.competitors = split_list(parser, "--competitors", args.competitors,
                                  allowed=COMPETITORS)
    if "fusedmlp" not in args.competitors:
        parser.error(f"--competitors must include fusedmlp, got {args.competitors}")
    args.configs = QUICK_CONFIGS if args.quick else CONFIGS
    if args.networks:
        wanted = args.networks.split(",")
        args.configs = [c for c in args.configs if _net_name(c[0]) in wanted]
        if not args.configs:
            parser.error(f"--networks named none of {[_net_name(c[0]) for c in CONFIGS]}")
    return args


def _start(competitors):
    """({name: Worker} of the competitors whose worker starts, {name: its info}, the names
    left out); a worker that fails to start is said on stderr."""
    workers, infos, skipped = {}, {}, []
    for name in competitors:
        worker = Worker(name, "fusedmlp.cli.bench:serve", {"name": name})
        try:
            infos[name] = worker.ask("info")
            workers[name] = worker
        except WorkerError as exc:
            print(f"# {name}: worker failed to start ({exc}); left out", file=sys.stderr)
            worker.close()
            skipped.append(name)
    return workers, infos, skipped


def _measure(args, workers, threads, dtype, sizes, batch):
    """One setting's result: every competitor's callables in interleaved rounds."""
    setting = {"sizes": list(sizes), "batch": batch, "dtype": dtype, "optimizer": args.optimizer}
    failed = {}
    samples = interleave(
        {name: (lambda worker=worker: worker.ask(
            "measure", setting=setting, threads=threads, target_time=args.target_time,
            min_calls=args.min_calls)) for name, worker in workers.items()},
        args.rounds, pause=args.settle if threads > 1 else 0.0, failed=failed)
    for name, why in failed.items():
        print(f"# {name} {_net_name(sizes)} b{batch} {dtype}: {why}", file=sys.stderr)
    times = {"train": {}, "infer": {}}
    for name, replies in samples.items():
        for reply in replies:
            for what, seconds in reply.items():
                kind, key = ("train", "floor") if what == "floor" else (what, name)
                times[kind].setdefault(key, []).append(seconds)
    return {"threads": threads, "dtype": dtype, "sizes": list(sizes), "batch": batch,
            "train": {k: summary(v) for k, v in times["train"].items()},
            "infer": {k: summary(v) for k, v in times["infer"].items()}}


def main(argv=None):
    """Run the comparison and print the tables; returns an exit status.

    Examples
    --------
    From a shell: ``python -m fusedmlp bench --quick`` (about a minute) or
    ``python -m fusedmlp bench`` (the full table, under ten minutes).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TABLES:
        import importlib

        return importlib.import_module(TABLES[argv[0]]).main(argv[1:])
    args = _parse(argv)
    args.command = " ".join([f"{PROG} bench"] + argv)
    plt = None
    if args.plot:
        try:                                  # before any measuring: fail in a second, not later
            plt = _plotting.pyplot(f"--plot {args.plot}")
            _plotting.check_directory(args.plot)
        except RuntimeError as exc:
            print(f"{PROG} bench: error: {exc}", file=sys.stderr)
            return 1

    competitors = [c for c in args.competitors if importable(MODULES[c])]
    skipped = [c for c in args.competitors if c not in competitors]
    started = Stopwatch()
    workers, infos, failed = _start(competitors)
    try:
        competitors = list(workers)
        _print_header(args, infos, skipped + failed)
        results = []
        settings = [(threads, dtype, sizes, batch) for threads in args.threads
                    for dtype in args.dtypes for sizes, batches in args.configs
                    for batch in batches]
        for index, setting in enumerate(settings):
            results.append(_measure(args, workers, *setting))
            threads, dtype, sizes, batch = setting
            print(f"# [{index + 1}/{len(settings)}] {threads} thread(s) {dtype} "
                  f"{_net_name(sizes)} batch {batch} done ({started.seconds():.0f} s)",
                  file=sys.stderr, flush=True)
    finally:
        for worker in workers.values():
            worker.close()

    print(_tables(results, competitors, spread=not args.no_spread))
    print(f"\n(total {started.seconds():.0f} s)")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"infos": infos, "results": results}, out, indent=1)
    if plt is not None:
        for path in _plotting.bench_figures(plt, results, LABELS, args.plot):
            print(f"figure written to {path}")
    return 0


def _print_header(args, infos, skipped):
    print(header("fusedmlp benchmark", args.command))
    for name, info in infos.items():
        pools = []
        for pool in info.get("blas", []):
            label = " ".join(str(pool[k]) for k in ("internal_api", "version") if pool.get(k))
            details = ", ".join(str(pool[k]) for k in ("architecture", "threading_layer")
                                if pool.get(k))
            library = os.path.basename(pool.get("filepath") or "?")
            pools.append(f"{label} [{details}] {library}" if details else f"{label} {library}")
        print(f"# thread pools in the {name} worker: " + "; ".join(pools))
    print(f"# settings: {args.rounds} rounds, ~{args.target_time:g} s per timed loop, "
          f"threads {args.threads}, dtypes {args.dtypes}; optimiser "
          f"{'Adam' if args.optimizer == 'adam' else 'SGD'}(lr={LEARNING_RATE:g}) everywhere; "
          "relu hidden layers, softmax cross-entropy")
    if skipped:
        print(f"# not importable, left out: {', '.join(skipped)}")
    print(flush=True)


if __name__ == "__main__":
    sys.exit(main())
