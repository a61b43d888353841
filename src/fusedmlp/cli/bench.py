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
Each competitor runs in its own worker process (``python -m fusedmlp.cli.bench --worker NAME``,
JSON lines over stdin/stdout): NumPy's and SciPy's OpenBLAS thread pools slow each other down
when one process uses both. For every setting (network, batch, dtype, BLAS threads) the rounds
are interleaved -- round 1 of every competitor, then round 2, ... in a rotating order -- so a
burst of load on the machine hits all competitors alike. One round is one timed loop whose
length adapts to the call (about ``--target-time`` seconds, at least ``--min-calls`` calls)
after a warm-up call; the table shows the median over rounds and the min-max range. BLAS
threads are set in each worker with threadpoolctl (and ``torch.set_num_threads``).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

from ._common import PROG
from . import _plotting
from ._peers import torch_mlp

__all__ = ["main", "CONFIGS", "QUICK_CONFIGS"]

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
          "regularisers": "fusedmlp.cli.bench_regularisers"}


# =================================================================== worker side
def _data(sizes, batch, dtype, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(batch, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], size=batch)
    return X, y


def _build_fusedmlp(sizes, batch, dtype, optimizer_name):
    import fusedmlp

    X, y = _data(sizes, batch, dtype)
    model = fusedmlp.MLP(sizes, dtype=dtype, seed=0)
    optimizer = (fusedmlp.Adam(LEARNING_RATE) if optimizer_name == "adam"
                 else fusedmlp.SGD(LEARNING_RATE))
    model.train_step(X, y, optimizer)              # allocates the workspace the floor uses
    return {
        "train": lambda: model.train_step(X, y, optimizer),
        "infer": lambda: model.predict_proba(X),
        "floor": ("repeat", lambda repeats: model.gemm_floor(X, repeats)),
    }


def _build_numpy(sizes, batch, dtype, optimizer_name):
    from fusedmlp.reference import NumpyAdam, NumpyMLP, NumpySGD

    X, y = _data(sizes, batch, dtype)
    model = NumpyMLP(sizes, dtype=dtype, seed=0)
    optimizer = NumpyAdam(LEARNING_RATE) if optimizer_name == "adam" else NumpySGD(LEARNING_RATE)
    return {
        "train": lambda: model.train_step(X, y, optimizer),
        "infer": lambda: model.predict_proba(X),
    }


def _build_torch(sizes, batch, dtype, optimizer_name):
    import torch
    import torch.nn.functional as F

    X, y = _data(sizes, batch, dtype)
    model = torch_mlp(sizes, torch.float32 if dtype == "float32" else torch.float64)
    optimizer_class = torch.optim.Adam if optimizer_name == "adam" else torch.optim.SGD
    optimizer = optimizer_class(model.parameters(), lr=LEARNING_RATE)
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)

    def train():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(X_t), y_t)
        loss.backward()
        optimizer.step()
        return loss

    def infer():
        with torch.inference_mode():
            return torch.softmax(model(X_t), dim=1).numpy()

    return {"train": train, "infer": infer}


def _build_sklearn(sizes, batch, dtype, optimizer_name):
    import numpy as np
    from sklearn.neural_network import MLPClassifier

    X, y = _data(sizes, batch, dtype)
    classes = np.arange(sizes[-1])
    # plain SGD for "sgd": no momentum, constant learning rate, as the others
    model = MLPClassifier(hidden_layer_sizes=sizes[1:-1], activation="relu",
                          solver=optimizer_name, momentum=0.0, nesterovs_momentum=False,
                          learning_rate="constant", alpha=0.0, batch_size=batch,
                          learning_rate_init=LEARNING_RATE, random_state=0)
    model.partial_fit(X, y, classes=classes)
    return {
        "train": lambda: model.partial_fit(X, y),
        "infer": lambda: model.predict_proba(X),
    }


_BUILDERS = {"fusedmlp": _build_fusedmlp, "numpy": _build_numpy, "torch": _build_torch,
             "sklearn": _build_sklearn}


def _time_call(function, target_time, min_calls):
    """Seconds per call: a warm-up call, then one timed loop of about target_time seconds."""
    repeat = isinstance(function, tuple)
    if repeat:
        function = function[1]
    start = time.perf_counter()
    function(1) if repeat else function()
    first = time.perf_counter() - start
    calls = max(min_calls, int(math.ceil(target_time / max(first, 1e-7))))
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if repeat:
            start = time.perf_counter()
            function(calls)
            elapsed = time.perf_counter() - start
        else:
            start = time.perf_counter()
            for _ in range(calls):
                function()
            elapsed = time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    return elapsed / calls


def versions():
    """Installed versions, read from package metadata (importing torch or scikit-learn here
    would load their thread pools into every worker)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for label, distribution in (("numpy", "numpy"), ("scipy", "scipy"), ("torch", "torch"),
                                ("scikit-learn", "scikit-learn"), ("fusedmlp", "fusedmlp"),
                                ("threadpoolctl", "threadpoolctl")):
        try:
            out[label] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            out[label] = None
    return out


def _worker(name):
    """Serve measurement requests for one competitor: JSON lines on stdin -> stdout."""
    warnings.simplefilter("ignore")
    reply_stream = sys.stdout
    sys.stdout = sys.stderr                  # nothing but replies may reach the pipe
    from threadpoolctl import threadpool_info, threadpool_limits

    if name == "torch":
        import torch
    elif name == "sklearn":
        import sklearn.neural_network  # noqa: F401
    import fusedmlp  # noqa: F401  (loads SciPy's BLAS too, as an installed fusedmlp would)

    built_key, built = None, None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "info":
                import numpy  # noqa: F401

                reply = {"blas": threadpool_info()}
            elif request["op"] == "measure":
                key = (tuple(request["sizes"]), request["batch"], request["dtype"],
                       request["optimizer"])
                if key != built_key:
                    built_key, built = None, None
                    gc.collect()
                with threadpool_limits(limits=request["threads"]):
                    if name == "torch":
                        torch.set_num_threads(request["threads"])
                    if built is None:
                        built = _BUILDERS[name](*key)
                        built_key = key
                    reply = {what: _time_call(function, request["target_time"],
                                              request["min_calls"])
                             for what, function in built.items()}
            else:
                raise ValueError(f"unknown op {request['op']!r}")
        except Exception as exc:         # report, keep serving: the table shows the gap
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        reply_stream.write(json.dumps(reply) + "\n")
        reply_stream.flush()


# =================================================================== orchestrator side
class Worker:
    def __init__(self, name):
        self.name = name
        # stderr to a file, not a pipe: a chatty worker must never block on a full pipe
        self.errors = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fusedmlp.cli.bench", "--worker", name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors, text=True)

    def ask(self, **request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=10)
            self.errors.seek(0)
            error = self.errors.read()[-2000:]
            raise RuntimeError(f"the {self.name} worker died: {error}")
        return json.loads(line)

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.errors.close()


def importable(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def machine():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return f"{model}; {os.cpu_count()} logical CPUs" + (
        f" ({affinity} usable)" if affinity and affinity != os.cpu_count() else "")


def _summary(samples):
    if not samples:
        return None
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "n": len(samples)}


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
    lines = []

    def row(cells):
        lines.append("| " + " | ".join(cells) + " |")

    def comparison(key, extra_header, extra_cells):
        """One row per setting: fusedmlp, its extra columns, then each competitor and ratio."""
        header = ["threads", "dtype", "network", "batch", "fusedmlp", *extra_header]
        for other in others:
            header += [LABELS[other], f"×{LABELS[other]}"]
        row(header)
        row(["---"] * len(header))
        for result in results:
            t = result[key]
            cells = [str(result["threads"]), result["dtype"], _net_name(result["sizes"]),
                     str(result["batch"]), _format_us(t.get("fusedmlp"), spread),
                     *extra_cells(t)]
            for other in others:
                cells += [_format_us(t.get(other), spread),
                          _format_ratio(t.get(other), t.get("fusedmlp"))]
            row(cells)

    lines.append("Training step, µs per step: median (min–max) over rounds; "
                 "×X = X's time / fusedmlp's; fusedmlp/floor = fusedmlp's time / GEMM floor's.")
    lines.append("")
    comparison("train", ["GEMM floor", "fusedmlp/floor"],
               lambda t: [_format_us(t.get("floor"), spread),
                          _format_ratio(t.get("fusedmlp"), t.get("floor"))])
    lines += ["", "Inference (predict_proba on one batch), µs per call: median (min–max); "
              "×X = X's time / fusedmlp's.", ""]
    comparison("infer", [], lambda t: [])

    # 1 vs 2 (or more) threads: time at 1 thread / time at n threads (> 1 means threads help)
    by_setting = {}
    for result in results:
        by_setting.setdefault((result["dtype"], tuple(result["sizes"]), result["batch"]),
                              {})[result["threads"]] = result
    thread_counts = sorted({r["threads"] for r in results})
    if len(thread_counts) > 1 and 1 in thread_counts:
        many = [n for n in thread_counts if n > 1]
        lines += ["", "BLAS threads: speed-up of the median time over 1 thread "
                  "(> 1 means more threads help; training step / inference).", ""]
        header = ["dtype", "network", "batch"]
        for n in many:
            header += [f"{LABELS[c]} {n}T" for c in ["fusedmlp", "floor"] + others]
        row(header)
        row(["---"] * len(header))
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
            row(cells)
    return "\n".join(lines)


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog=f"{PROG} bench",
        description="Time fusedmlp's training step and inference against pure NumPy, PyTorch "
                    "eager and scikit-learn, next to the GEMM floor (one process per competitor). "
                    "Further tables: " + ", ".join(f"'bench {name}'" for name in TABLES)
                    + " (each with its own --help).")
    parser.add_argument("--quick", action="store_true",
                        help="float32 only, 3 short rounds: about a minute")
    parser.add_argument("--rounds", type=int, help="rounds per setting (default 5; quick 3)")
    parser.add_argument("--target-time", type=float,
                        help="seconds per timed loop (default 0.2; quick 0.03)")
    parser.add_argument("--min-calls", type=int,
                        help="calls per timed loop, at least (default 3; quick 2)")
    parser.add_argument("--threads", default="1,2", help="BLAS thread counts (default 1,2)")
    parser.add_argument("--dtypes", help="comma-separated (default float32,float64; quick float32)")
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
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.min_calls = args.min_calls or (2 if args.quick else 3)
    args.target_time = args.target_time or (0.03 if args.quick else 0.2)
    args.dtypes = (args.dtypes or ("float32" if args.quick else "float32,float64")).split(",")
    for dtype in args.dtypes:
        if dtype not in ("float32", "float64"):
            parser.error(f"--dtypes must list float32 and/or float64, got {dtype!r}")
    try:
        args.threads = [int(n) for n in args.threads.split(",")]
    except ValueError:
        parser.error(f"--threads must be comma-separated integers, got {args.threads!r}")
    args.competitors = args.competitors.split(",")
    unknown = set(args.competitors) - set(COMPETITORS)
    if unknown or "fusedmlp" not in args.competitors:
        parser.error(f"--competitors must include fusedmlp and name only {COMPETITORS}, "
                     f"got {args.competitors}")
    args.configs = QUICK_CONFIGS if args.quick else CONFIGS
    if args.networks:
        wanted = args.networks.split(",")
        args.configs = [c for c in args.configs if _net_name(c[0]) in wanted]
        if not args.configs:
            parser.error(f"--networks named none of {[_net_name(c[0]) for c in CONFIGS]}")
    return args


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
    if args.worker:
        _worker(args.worker)
        return 0
    plt = None
    if args.plot:
        try:                                  # before any measuring: fail in a second, not later
            plt = _plotting.pyplot(f"--plot {args.plot}")
            _plotting.check_directory(args.plot)
        except RuntimeError as exc:
            print(f"{PROG} bench: error: {exc}", file=sys.stderr)
            return 1

    module_of = {"fusedmlp": "fusedmlp", "numpy": "numpy", "torch": "torch", "sklearn": "sklearn"}
    competitors = [c for c in args.competitors if importable(module_of[c])]
    skipped = [c for c in args.competitors if c not in competitors]
    started = time.perf_counter()
    workers = {name: Worker(name) for name in competitors}
    try:
        infos = {}
        for name, worker in list(workers.items()):
            try:
                infos[name] = worker.ask(op="info")
            except RuntimeError as exc:
                print(f"# {name}: worker failed to start ({exc}); left out", file=sys.stderr)
                worker.close()
                del workers[name]
                skipped.append(name)
        competitors = [c for c in competitors if c in workers]
        _print_header(args, infos, skipped)

        results = []
        settings = [(threads, dtype, sizes, batch) for threads in args.threads
                    for dtype in args.dtypes for sizes, batches in args.configs
                    for batch in batches]
        for index, (threads, dtype, sizes, batch) in enumerate(settings):
            samples = {"train": {}, "infer": {}}
            for round_index in range(args.rounds):
                shift = round_index % len(competitors)
                for name in competitors[shift:] + competitors[:shift]:
                    if threads > 1 and args.settle:
                        time.sleep(args.settle)
                    reply = workers[name].ask(op="measure", sizes=list(sizes), batch=batch,
                                              dtype=dtype, threads=threads,
                                              optimizer=args.optimizer,
                                              target_time=args.target_time,
                                              min_calls=args.min_calls)
                    if "error" in reply:
                        print(f"# {name} {_net_name(sizes)} b{batch} {dtype}: {reply['error']}",
                              file=sys.stderr)
                        continue
                    for what, seconds in reply.items():
                        kind, key = ("train", "floor") if what == "floor" else (what, name)
                        samples[kind].setdefault(key, []).append(seconds)
            results.append({
                "threads": threads, "dtype": dtype, "sizes": list(sizes), "batch": batch,
                "train": {k: _summary(v) for k, v in samples["train"].items()},
                "infer": {k: _summary(v) for k, v in samples["infer"].items()},
            })
            print(f"# [{index + 1}/{len(settings)}] {threads} thread(s) {dtype} "
                  f"{_net_name(sizes)} batch {batch} done ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr, flush=True)
    finally:
        for worker in workers.values():
            worker.close()

    print(_tables(results, competitors, spread=not args.no_spread))
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"infos": infos, "results": results}, out, indent=1)
    if plt is not None:
        for path in _plotting.bench_figures(plt, results, LABELS, args.plot):
            print(f"figure written to {path}")
    return 0


def _print_header(args, infos, skipped):
    installed = versions()
    print("# fusedmlp benchmark")
    print(f"# command: {args.command}")
    print(f"# machine: {machine()}; {platform.system()} {platform.release()}")
    print("# versions: " + ", ".join(f"{k} {v}" for k, v in installed.items() if v))
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
