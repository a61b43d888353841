"""Inference latency of small batches: ``python -m fusedmlp bench latency``.

What an embedding user pays per call (a request handler, a simulation step): the time of one
``predict_proba`` of 1, 8 and 32 rows on 64-32-10 and 784-128-10 networks (float32, ReLU,
softmax output, the same weights everywhere), for

- fusedmlp ``predict_proba(X)`` (allocates the result), ``predict_proba(X, out=o)`` (warm:
  allocates nothing), the C API called from a C loop (``fusedmlp_infer_f32`` through the
  capsule's table, GIL released: ``_network.c_loop``), and the GEMM floor (the forward pass's
  matrix products alone, from C);
- onnxruntime on ``MLP.to_onnx``'s graph (one intra-op thread), NumPy (matmul, bias, ReLU,
  softmax), PyTorch eager under ``inference_mode`` and JAX ``jit``, each when installed.

All run in this one process with every BLAS pinned to one thread (threadpoolctl,
``torch.set_num_threads(1)``): at one thread no pool spins between calls. Rounds are
interleaved (round 1 of every competitor, then round 2, ...) so a burst of load hits all
alike; a round is a timed loop of about ``--target-time`` seconds; the table shows the median
over rounds in microseconds per call, and each time relative to ``predict_proba(out=)``.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

from ._harness import Case, CommandParser, Repeat, markdown, measure_case, medians, pinned

__all__ = ["main", "NETWORKS", "ROWS"]

NETWORKS = [(64, 32, 10), (784, 128, 10)]
ROWS = (1, 8, 32)
LABELS = {
    "proba": "predict_proba", "proba_out": "predict_proba(out=)", "c_api": "C API (C loop)",
    "floor": "GEMM floor", "onnxruntime": "onnxruntime", "numpy": "NumPy", "torch": "PyTorch",
    "jax": "JAX jit",
}


def _fusedmlp(model, X):
    from .. import _network

    out = np.empty((len(X), model.n_outputs), model.dtype)

    def repeat(gemm_only):
        return Repeat(lambda repeats: _network.c_loop(model, X, out, repeats, gemm_only))

    return {"proba": lambda: model.predict_proba(X),
            "proba_out": lambda: model.predict_proba(X, out=out),
            "c_api": repeat(False), "floor": repeat(True)}


def _onnxruntime(model, X):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.onnx")
        model.to_onnx(path)
        session = onnxruntime.InferenceSession(path, options,
                                               providers=["CPUExecutionProvider"])
    feed, wanted = {"X": X}, ["probabilities"]
    return {"onnxruntime": lambda: session.run(wanted, feed)[0]}


def _numpy(model, X):
    params = [(layer.W.copy(), layer.b.copy()) for layer in model.layers]

    def predict_proba():
        a = X
        for W, b in params[:-1]:
            a = np.maximum(a @ W + b, 0)
        z = a @ params[-1][0] + params[-1][1]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return {"numpy": predict_proba}


def _torch(model, X):
    import torch

    torch.set_num_threads(1)
    layers = []
    for layer in model.layers:
        linear = torch.nn.Linear(layer.n_in, layer.n_out)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(layer.W.T.copy()))
            linear.bias.copy_(torch.from_numpy(layer.b.copy()))
        layers += [linear, torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1])
    X_t = torch.from_numpy(X)

    def predict_proba():
        with torch.inference_mode():
            return torch.softmax(net(X_t), dim=1).numpy()

    return {"torch": predict_proba}


def _jax(model, X):
    import jax
    import jax.numpy as jnp

    params = [(jnp.asarray(layer.W), jnp.asarray(layer.b)) for layer in model.layers]

    @jax.jit
    def forward(params, x):
        for W, b in params[:-1]:
            x = jax.nn.relu(x @ W + b)
        return jax.nn.softmax(x @ params[-1][0] + params[-1][1], axis=1)

    X_j = jnp.asarray(X)
    return {"jax": lambda: forward(params, X_j).block_until_ready()}


BUILDERS = {"fusedmlp": (_fusedmlp, None), "onnxruntime": (_onnxruntime, "onnxruntime"),
            "numpy": (_numpy, None), "torch": (_torch, "torch"), "jax": (_jax, "jax")}


class Latency(Case):
    """One setting (network sizes, rows): every competitor's call on the same weights."""

    def __init__(self, competitors=None):
        self.competitors, self.skipped = competitors, {}

    def setup(self, setting):
        import fusedmlp

        sizes, m = setting
        model = fusedmlp.MLP(list(sizes), dtype=np.float32, seed=0)
        X = np.random.default_rng(1).normal(size=(m, sizes[0])).astype(np.float32)
        calls = {}
        for name, (build, module) in BUILDERS.items():
            if self.competitors is not None and name not in self.competitors:
                continue
            try:
                calls.update(build(model, X))
            except ImportError as exc:
                self.skipped[name] = f"not installed ({exc.name or module})"
            except Exception as exc:                  # a competitor that fails is left out
                self.skipped[name] = f"failed: {type(exc).__name__}: {exc}"
        return calls


def measure(networks=NETWORKS, rows=ROWS, rounds=7, target_time=0.05, competitors=None):
    """{(sizes, rows): {name: median microseconds}} and the competitors left out (with why)."""
    case = Latency(competitors)
    with pinned(1):
        measured = measure_case(case, [(tuple(sizes), m) for sizes in networks for m in rows],
                                rounds, target_time)
    return ({setting: {name: t * 1e6 for name, t in medians(samples).items()}
             for setting, samples in measured}, case.skipped)


def table(results) -> str:
    """The latency table as markdown: microseconds per call, and x relative to out=."""
    names = [n for n in LABELS if any(n in r for r in results.values())]
    rows = []
    for (sizes, m), row in results.items():
        base = row.get("proba_out")
        cells = []
        for name in names:
            if name not in row:
                cells.append("-")
            elif base and name != "proba_out":
                cells.append(f"{row[name]:.2f} ({row[name] / base:.2f}x)")
            else:
                cells.append(f"{row[name]:.2f}")
        rows.append(["-".join(map(str, sizes)), str(m), *cells])
    return markdown(["network", "rows", *(LABELS[n] for n in names)], rows,
                    "l" + "r" * (len(names) + 1))


def main(argv=None) -> int:
    parser = CommandParser(
        "latency", "Inference latency of 1-32 rows: fusedmlp (allocating, out=, C API), "
                   "onnxruntime, NumPy, PyTorch, JAX.",
        defaults={"rounds": 7, "target_time": 0.05}, quick={"rounds": 3, "target_time": 0.02},
        quick_help="3 rounds of 0.02 s")
    parser.add_argument("--competitors", help="comma-separated subset of " + ",".join(BUILDERS))
    args = parser.parse_args(argv)
    competitors = args.competitors.split(",") if args.competitors else None
    if competitors and set(competitors) - set(BUILDERS):
        parser.error(f"unknown competitors {sorted(set(competitors) - set(BUILDERS))}")
    results, skipped = measure(rounds=args.rounds, target_time=args.target_time,
                               competitors=competitors)
    print(f"# fusedmlp bench latency: float32, 1 BLAS thread, median of {args.rounds} "
          f"interleaved rounds, microseconds per call (x: relative to predict_proba(out=))")
    for name, why in skipped.items():
        print(f"# {name}: {why}")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
