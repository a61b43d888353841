"""Inference latency of small batches: ``python -m fusedmlp bench latency``.

What an embedding user pays per call (a request handler, a simulation step): the time of one
``predict_proba`` of 1, 8 and 32 rows on 64-32-10 and 784-128-10 networks (float32, ReLU,
softmax output, the same weights everywhere), for

- fusedmlp ``predict_proba(X)`` (allocates the result), ``predict_proba(X, out=o)`` (warm:
  allocates nothing), the C API called from a C loop (``fusedmlp_infer_f32`` through the
  capsule's table, GIL released: ``_network.c_loop``), and the GEMM floor (the forward pass's
  matrix products alone, from C);
- the model exported by :func:`fusedmlp.export_c`, compiled by the system C compiler (``$CC``,
  else the first of cc, gcc, clang on PATH) twice, with plain ``-O2`` and with ``-O3
  -march=native``, into a shared object with a loop that calls ``<name>_predict_proba``
  ``n`` times, timed as the C API is (one ctypes call of the loop, GIL released): a C caller
  pays no ctypes or interpreter cost per call, and at one row that cost (about 0.5 us) is
  as large as the call itself, so a ctypes call per row would time ctypes. The loop is in
  its own translation unit (no LTO), so the compiler cannot see into the exported function
  and hoist its work out of the loop; each build's output is checked against
  ``predict_proba`` before it is timed. No C compiler: the rows say why and are left out;
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
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from ._harness import (Case, CommandParser, Repeat, machine, markdown, measure_case,
                       medians, pinned)
from ._peers import numpy_predict_proba, onnxruntime_predict_proba

__all__ = ["main", "NETWORKS", "ROWS"]

NETWORKS = [(64, 32, 10), (784, 128, 10)]
ROWS = (1, 8, 32)
LABELS = {
    "proba": "predict_proba", "proba_out": "predict_proba(out=)", "c_api": "C API (C loop)",
    "floor": "GEMM floor", "export_O2": "export_c -O2 (C loop)",
    "export_O3": "export_c -O3 -march=native (C loop)", "onnxruntime": "onnxruntime",
    "numpy": "NumPy", "torch": "PyTorch", "jax": "JAX jit",
}
#: The exported code's two builds: (key, compiler flags).
EXPORT_BUILDS = (("export_O2", ["-O2"]), ("export_O3", ["-O3", "-march=native"]))


class Unavailable(Exception):
    """A competitor that cannot run on this machine (the reason is the message)."""


def _fusedmlp(model, X):
    from .. import _network

    out = np.empty((len(X), model.n_outputs), model.dtype)

    def repeat(gemm_only):
        return Repeat(lambda repeats: _network.c_loop(model, X, out, repeats, gemm_only))

    return {"proba": lambda: model.predict_proba(X),
            "proba_out": lambda: model.predict_proba(X, out=out),
            "c_api": repeat(False), "floor": repeat(True)}


def c_compiler():
    """The C compiler the export_c rows use: ``$CC``, else the first of cc, gcc, clang on
    PATH; None when there is none."""
    if os.environ.get("CC"):
        return os.environ["CC"]
    return next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)


def compiler_version(cc):
    """The first line of ``cc --version`` (how the table names the compiler)."""
    try:
        result = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{cc} ({type(exc).__name__})"
    lines = result.stdout.strip().splitlines()
    return lines[0] if lines else cc


_LOOP = """#include <stddef.h>
int {name}_predict_proba(const float *x, size_t rows, float *out);
int {name}_loop(const float *x, size_t rows, float *out, long calls)
{{
    int status = 0;
    long i;
    for (i = 0; i < calls; i++) status |= {name}_predict_proba(x, rows, out);
    return status;
}}
"""


def _export_c(model, X):
    import ctypes

    from ..export_c import export_c

    cc = c_compiler()
    if cc is None:
        raise Unavailable("no C compiler ($CC, cc, gcc or clang) on PATH")
    name, rows = "bench_model", len(X)
    out = np.empty((rows, model.n_outputs), np.float32)
    expected = model.predict_proba(X)
    calls = {}
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as directory:
        export_c(model, directory, name=name)
        loop = os.path.join(directory, "loop.c")
        with open(loop, "w", encoding="ascii") as handle:
            handle.write(_LOOP.format(name=name))
        for key, flags in EXPORT_BUILDS:
            library = os.path.join(directory, key + ".so")
            result = subprocess.run(
                [cc, "-std=c99", *flags, "-shared", "-fPIC", "-o", library,
                 os.path.join(directory, name + ".c"), loop, "-lm"],
                capture_output=True, text=True)
            if result.returncode != 0:
                raise Unavailable(f"{cc} {' '.join(flags)} failed: "
                                  + (result.stderr.strip().splitlines() or ["?"])[-1])
            function = getattr(ctypes.CDLL(library), f"{name}_loop")
            function.restype = ctypes.c_int
            function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                                 ctypes.c_long]
            if function(X.ctypes.data, rows, out.ctypes.data, 1) != 0 or not np.allclose(
                    out, expected, rtol=1e-4, atol=1e-6):
                raise RuntimeError(f"the {key} build does not reproduce predict_proba")
            # the arrays themselves are bound (their addresses alone would let them be freed)
            calls[key] = Repeat(lambda n, f=function, x=X, o=out:
                                f(x.ctypes.data, rows, o.ctypes.data, n))
    return calls


def _onnxruntime(model, X):
    return {"onnxruntime": onnxruntime_predict_proba(model, X)}


def _numpy(model, X):
    return {"numpy": numpy_predict_proba(model, X)}


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


BUILDERS = {"fusedmlp": (_fusedmlp, None), "export_c": (_export_c, None),
            "onnxruntime": (_onnxruntime, "onnxruntime"),
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
            except Unavailable as exc:
                self.skipped[name] = str(exc)
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
                   "the export_c code (-O2, -O3 -march=native), onnxruntime, NumPy, PyTorch, "
                   "JAX.",
        defaults={"rounds": 7, "target_time": 0.05}, quick={"rounds": 3, "target_time": 0.02},
        quick_help="3 rounds of 0.02 s")
    parser.add_argument("--competitors", help="comma-separated subset of " + ",".join(BUILDERS))
    args = parser.parse_args(argv)
    competitors = args.competitors.split(",") if args.competitors else None
    if competitors and set(competitors) - set(BUILDERS):
        parser.error(f"unknown competitors {sorted(set(competitors) - set(BUILDERS))}")
    results, skipped = measure(NETWORKS, ROWS, rounds=args.rounds, target_time=args.target_time,
                               competitors=competitors)
    print(f"# fusedmlp bench latency: float32, 1 BLAS thread, median of {args.rounds} "
          f"interleaved rounds, microseconds per call (x: relative to predict_proba(out=))")
    print(f"# machine: {machine()}")
    if "export_c" not in skipped and (competitors is None or "export_c" in competitors):
        print(f"# export_c rows: {compiler_version(c_compiler())}")
    for name, why in skipped.items():
        print(f"# {name}: {why}")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
