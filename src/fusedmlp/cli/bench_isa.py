"""Every instruction-set variant this CPU runs, forced: ``python -m fusedmlp bench isa``.

For each variant of ``show_config()["elementwise_isa_supported"]`` (``baseline``, ``avx2``,
``avx512`` on x86-64; ``neon`` on AArch64), a harness :class:`Worker` process started with
``FUSEDMLP_ISA=<variant>`` (the variant applies at import, and caps every kernel family),
and one more per variant with ``FUSEDMLP_OWN_GEMM=0`` (``<variant>+blas``: the inference
products in BLAS, what fusedmlp ran before it had a kernel for that variant), times

- inference: ``predict_proba(X, out=)`` of 784-128-10 and 64-32-10 at 1 and 32 rows;
- steps: ``train_step`` (ReLU, Adam, float32) of 784-128-10 at batch 1 and 32, 64-32-10 at
  32 and 784-256-10 at 128;

against the **hardware floor**: FLOPs / peak, the peak being NumPy's best single-thread
1024^3 float32 matmul on this machine; at batch 1 the memory floor, the bytes the call must
touch (inference: the parameters once; a step: W read twice, dW written, parameters and
Adam's two moments read and written) at the copy bandwidth measured with that much traffic
(NumPy ``copyto`` of half that many bytes: read + write). A peer worker (no variant forced) times NumPy's ``x @ W0`` alone,
NumPy's whole forward by hand and onnxruntime (one intra-op thread) when installed.

Every worker runs one BLAS thread, pinned to one CPU; the rounds are interleaved over the
workers (the harness's :func:`interleave`); the table shows medians in microseconds and
each time over the floor.

``--cutover`` instead times one layer's inference product (``forward`` of a one-layer
identity network: the product and the bias) at 1 to 1024 rows in each variant's worker and
its ``+blas`` twin: the rows from which BLAS is faster, the cut-over small_gemm.c uses.
"""

from __future__ import annotations

import sys

from ._harness import (CommandParser, Worker, WorkerError, header, interleave, markdown,
                       medians, seconds_per_call, split_list)
from ._peers import mlp_flops, numpy_predict_proba, onnxruntime_predict_proba

__all__ = ["main", "serve", "INFERENCE", "STEPS", "CUTOVER_SHAPES", "CUTOVER_ROWS"]

INFERENCE = [((784, 128, 10), 1), ((784, 128, 10), 32), ((64, 32, 10), 1), ((64, 32, 10), 32)]
STEPS = [((784, 128, 10), 1), ((784, 128, 10), 32), ((64, 32, 10), 32), ((784, 256, 10), 128)]
CUTOVER_SHAPES = [(784, 128), (128, 64), (64, 32)]
CUTOVER_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)
PEERS = ("numpy_x_w0", "numpy_forward", "onnxruntime")
LABELS = {"numpy_x_w0": "NumPy x @ W0", "numpy_forward": "NumPy forward",
          "onnxruntime": "onnxruntime"}


def _key(kind, sizes, rows):
    return f"{kind} {'-'.join(map(str, sizes))} x{rows}"


def _parameter_bytes(sizes):
    return 4 * sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


# =================================================================== the workers' side
def _fusedmlp_calls(cases, cutover):
    import numpy as np

    import fusedmlp

    calls = {}
    rng = np.random.default_rng(1)
    if cutover:
        for n_in, n_out in CUTOVER_SHAPES:
            model = fusedmlp.MLP([n_in, n_out], output="identity", dtype=np.float32, seed=0,
                                 n_threads=1)
            for rows in CUTOVER_ROWS:
                X = rng.normal(size=(rows, n_in)).astype(np.float32)
                out = np.empty((rows, n_out), np.float32)
                calls[f"{n_in}x{n_out} x{rows}"] = (lambda m=model, X=X, o=out: m.forward(X, out=o))
        return calls
    for kind, sizes, rows in cases:
        model = fusedmlp.MLP(list(sizes), dtype=np.float32, seed=0, n_threads=1)
        X = rng.normal(size=(rows, sizes[0])).astype(np.float32)
        if kind == "infer":
            out = np.empty((rows, sizes[-1]), np.float32)
            calls[_key(kind, sizes, rows)] = (lambda m=model, X=X, o=out:
                                              m.predict_proba(X, out=o))
        else:
            y = rng.integers(0, sizes[-1], size=rows)
            optimizer = fusedmlp.Adam(1e-3)
            model.train_step(X, y, optimizer)
            calls[_key(kind, sizes, rows)] = (lambda m=model, X=X, y=y, o=optimizer:
                                              m.train_step(X, y, o))
    return calls


def _peer_calls(cases):
    import numpy as np

    import fusedmlp

    calls, skipped = {}, {}
    rng = np.random.default_rng(1)
    for kind, sizes, rows in cases:
        if kind != "infer":
            continue
        model = fusedmlp.MLP(list(sizes), dtype=np.float32, seed=0, n_threads=1)
        X = rng.normal(size=(rows, sizes[0])).astype(np.float32)
        key = _key(kind, sizes, rows)
        calls[f"numpy_x_w0 {key}"] = lambda X=X, W=model.layers[0].W.copy(): X @ W
        calls[f"numpy_forward {key}"] = numpy_predict_proba(model, X)
        try:
            calls[f"onnxruntime {key}"] = onnxruntime_predict_proba(model, X)
        except ImportError as exc:
            skipped["onnxruntime"] = f"not installed ({exc.name or 'onnxruntime'})"
    return calls, skipped


def _hardware(target_time, rounds):
    """NumPy's best single-thread 1024^3 float32 matmul (FLOP/s)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.normal(size=(1024, 1024)).astype(np.float32)
    b = rng.normal(size=(1024, 1024)).astype(np.float32)
    c = np.empty_like(a)
    best = min(seconds_per_call(lambda: np.matmul(a, b, out=c), target_time, 3)
               for _ in range(rounds))
    return 2 * 1024 ** 3 / best


def _copy_bandwidth(n_bytes, target_time, rounds):
    import numpy as np

    src = np.ones(max(1, n_bytes // 8), np.float32)     # read + write = n_bytes of traffic
    dst = np.empty_like(src)
    best = min(seconds_per_call(lambda: np.copyto(dst, src), target_time, 3)
               for _ in range(rounds))
    return 2 * src.nbytes / best


def serve(role, cases=(), cutover=False):
    """A worker's ops: ``names`` (its timed callables), ``time`` (one round of one of them,
    seconds per call), ``kernels`` (its show_config()["kernels"]), and for the peer worker
    ``skipped``, ``peak`` and ``bandwidth``."""
    import fusedmlp

    cases = [(kind, tuple(sizes), rows) for kind, sizes, rows in cases]
    if role == "peers":
        calls, skipped = _peer_calls(cases)
    else:
        calls, skipped = _fusedmlp_calls(cases, cutover), {}
    ops = {"names": lambda: sorted(calls),
           "time": lambda name, target_time: seconds_per_call(calls[name], target_time, 3),
           "kernels": lambda: fusedmlp.show_config(as_dict=True)["kernels"],
           "skipped": lambda: skipped}
    if role == "peers":
        ops["peak"] = lambda target_time, rounds: _hardware(target_time, rounds)
        ops["bandwidth"] = lambda n_bytes, target_time, rounds: _copy_bandwidth(
            n_bytes, target_time, rounds)
    return ops


# =================================================================== the parent's side
def _workers(variants, cases, cutover):
    workers = {}
    for variant in variants:
        for flavour, env in (("", {}), ("+blas", {"FUSEDMLP_OWN_GEMM": "0"})):
            if variant == "baseline" and flavour:
                continue                      # baseline has no kernel: it is BLAS already
            name = variant + flavour
            workers[name] = Worker(name, "fusedmlp.cli.bench_isa:serve",
                                   {"role": "fusedmlp", "cases": cases, "cutover": cutover},
                                   threads=1, pin=True, env={"FUSEDMLP_ISA": variant, **env})
    if not cutover:
        workers["peers"] = Worker("peers", "fusedmlp.cli.bench_isa:serve",
                                  {"role": "peers", "cases": cases}, threads=1, pin=True)
    return workers


def _measure(workers, rounds, target_time):
    """{call name: {worker: median seconds}} over interleaved rounds, call by call."""
    names = {label: set(worker.ask("names")) for label, worker in workers.items()}
    everything = sorted(set().union(*names.values()))
    results = {}
    for call in everything:
        if call.split(" ", 1)[0] in PEERS:
            continue
        measures = {label: (lambda w=workers[label], c=call: w.ask("time", name=c,
                                                                   target_time=target_time))
                    for label in workers if call in names[label]}
        peer = {f"{p} {call}": p for p in PEERS if f"{p} {call}" in names.get("peers", ())}
        for full, p in peer.items():
            measures[p] = (lambda w=workers["peers"], c=full: w.ask("time", name=c,
                                                                    target_time=target_time))
        results[call] = medians(interleave(measures, rounds))
    return results


def isa_table(results, labels, peak, bandwidths, cases):
    """The ISA table: each case's floor and each worker's time in us (x floor)."""
    columns = labels + [p for p in PEERS if any(p in r for r in results.values())]
    rows = []
    for kind, sizes, rows_ in cases:
        key = _key(kind, sizes, rows_)
        if key not in results:
            continue
        compute = mlp_flops(sizes, rows_, step=kind != "infer") / peak
        touched = _parameter_bytes(sizes) * (1 if kind == "infer" else 9)
        memory = touched / bandwidths[key] if rows_ == 1 else 0.0
        floor, which = (memory, "mem") if memory > compute else (compute, "FLOPs")
        cells = [key.replace("infer", "predict_proba").replace("step", "train_step"),
                 f"{floor * 1e6:.2f} ({which})"]
        for column in columns:
            seconds = results[key].get(column)
            cells.append("-" if seconds is None
                         else f"{seconds * 1e6:.2f} ({seconds / floor:.2f}x)")
        rows.append(cells)
    return markdown(["case", "floor us", *(LABELS.get(c, c) for c in columns)], rows,
                    "ll" + "r" * len(columns))


def cutover_table(results, variants):
    """One row per product shape and rows: each variant's kernel and BLAS in us."""
    rows = []
    for call in sorted(results, key=lambda c: (c.split(" x")[0], int(c.split(" x")[1]))):
        cells = [call.split(" x")[0], call.split(" x")[1]]
        for variant in variants:
            own, blas = results[call].get(variant), results[call].get(variant + "+blas")
            if own is None or blas is None:
                cells.append(f"{(own or blas) * 1e6:.2f}" if (own or blas) else "-")
            else:
                cells.append(f"{own * 1e6:.2f} / {blas * 1e6:.2f} ({blas / own:.2f}x)")
        rows.append(cells)
    return markdown(["product", "rows", *(f"{v}: own / BLAS (BLAS/own)" for v in variants)],
                    rows, "lr" + "r" * len(variants))


def main(argv=None) -> int:
    from .. import _kernels

    supported = list(_kernels.isa_supported())
    parser = CommandParser(
        "isa", "Every instruction-set variant this CPU runs, forced (FUSEDMLP_ISA): "
               "inference and steps against the hardware floor, NumPy and onnxruntime.",
        defaults={"rounds": 7, "target_time": 0.05}, quick={"rounds": 3, "target_time": 0.02},
        quick_help="3 rounds of 0.02 s")
    parser.add_argument("--variants", help="comma-separated subset of " + ",".join(supported))
    parser.add_argument("--cutover", action="store_true",
                        help="time one layer's product at 1-1024 rows, kernel against BLAS")
    args = parser.parse_args(argv)
    variants = (split_list(parser, "--variants", args.variants, allowed=supported)
                if args.variants else supported)
    cases = [("infer", s, r) for s, r in INFERENCE] + [("step", s, r) for s, r in STEPS]
    command = "python -m fusedmlp bench isa " + " ".join(argv or sys.argv[1:])
    print(header("fusedmlp bench isa: float32, 1 BLAS thread, pinned, median of "
                 f"{args.rounds} interleaved rounds", command.strip()))
    workers = _workers(variants, cases, args.cutover)
    try:
        for label, worker in workers.items():
            if label != "peers":
                kernels = worker.ask("kernels")
                print(f"# {label}: elementwise {kernels['elementwise']}, small_gemm "
                      f"{kernels['small_gemm']}, bf16_gemm {kernels['bf16_gemm']}")
        results = _measure(workers, args.rounds, args.target_time)
        if args.cutover:
            print(cutover_table(results, variants))
            return 0
        peers = workers["peers"]
        for name, why in peers.ask("skipped").items():
            print(f"# {name}: {why}")
        peak = peers.ask("peak", target_time=args.target_time, rounds=args.rounds)
        bandwidths = {}
        for kind, sizes, rows in cases:
            if rows == 1:
                touched = _parameter_bytes(sizes) * (1 if kind == "infer" else 9)
                bandwidths[_key(kind, sizes, rows)] = peers.ask(
                    "bandwidth", n_bytes=touched, target_time=args.target_time,
                    rounds=args.rounds)
        print(f"# peak: NumPy 1024^3 float32 matmul, 1 thread: {peak / 1e9:.1f} GFLOP/s; copy "
              "bandwidth (read + write) at batch 1: " + ", ".join(
                  f"{k}: {v / 1e9:.1f} GB/s" for k, v in bandwidths.items()))
        labels = [label for label in workers if label != "peers"]
        print(isa_table(results, labels, peak, bandwidths, cases))
    except WorkerError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        for worker in workers.values():
            worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
