"""bfloat16 table: ``python -m fusedmlp bench bf16`` (docs/bf16.md).

These tables, all in this process, one thread everywhere unless a table says otherwise
(fusedmlp ``n_threads=1``, NumPy's and SciPy's BLAS pinned with threadpoolctl,
``torch.set_num_threads(1)``):

- products: GFLOP/s of C = A @ B at the shapes of a step, float32 (fusedmlp's BLAS) against
  bfloat16 (fusedmlp's AVX512-BF16 kernel, from float32 operands) and, when the ``mkl``
  package is installed, MKL's ``cblas_gemm_bf16bf16f32`` (on operands already in bf16);
- training steps: microseconds per Adam step, fusedmlp float32 and bfloat16, PyTorch eager
  float32 and with CPU bf16 autocast (when torch is installed);
- the same steps at two threads (fusedmlp only: a step of two parts converts its weights to
  bf16 once, for all its products and parts);
- inference: microseconds per ``predict_proba`` call at 784-512-512-10 from 1 to 4096 rows,
  float32 against bfloat16;
- one Fashion-MNIST epoch (784-256-10, batch 128, Adam 1e-3) per setting, with the test
  accuracy after ``--epochs`` epochs (when /usr/share/datasets/fashion-mnist exists).

Rounds are interleaved (a burst of load hits every setting alike); the tables show medians
over rounds and ratios taken within this one run.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys

import numpy as np

from ._common import plain
from ._harness import Case, CommandParser, medians, one_call, pinned, run_case
from ._peers import torch_mlp

__all__ = ["main", "STEP_CONFIGS", "GEMM_SHAPES"]

STEP_CONFIGS = [((784, 128, 10), 32), ((784, 256, 10), 128), ((784, 512, 512, 10), 64),
                ((784, 512, 512, 10), 1024)]
TWO_THREAD_CONFIGS = [((784, 512, 512, 10), 64), ((784, 512, 512, 10), 1024)]
INFERENCE_SIZES = (784, 512, 512, 10)
INFERENCE_ROWS = (1, 4, 64, 4096)
GEMM_SHAPES = [(32, 784, 128), (128, 784, 256), (1024, 784, 512), (1024, 512, 512)]


def _mkl_bf16():
    """MKL's cblas_gemm_bf16bf16f32 through ctypes, or None with the reason."""
    import importlib.metadata
    try:
        files = importlib.metadata.files("mkl") or []
    except importlib.metadata.PackageNotFoundError:
        return None, "the mkl package is not installed"
    paths = [str(f.locate()) for f in files if f.name.startswith("libmkl_rt.so")]
    if not paths:
        return None, "the mkl package holds no libmkl_rt"
    lib = ctypes.CDLL(paths[0])
    lib.MKL_Set_Num_Threads(1)
    fn = lib.cblas_gemm_bf16bf16f32
    fn.restype = None
    fn.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int,
                                        ctypes.c_void_p, ctypes.c_int, ctypes.c_float,
                                        ctypes.c_void_p, ctypes.c_int]
    return fn, ""


def _to_bf16_bits(x):
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return (((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF).astype(np.uint16)


class Products(Case):
    """One product shape (m, k, n): float32 through BLAS, bf16 through fusedmlp's kernel and
    MKL's (when installed), in GFLOP/s."""

    title = ("Products C[m, n] = A[m, k] @ B[k, n], one thread: GFLOP/s (median over "
             "{rounds} interleaved rounds)")
    header = ["m x k x n", "float32 (BLAS)", "bf16, fusedmlp kernel", "ratio",
              "bf16, MKL cblas_gemm_bf16bf16f32"]

    def __init__(self):
        self.mkl, self.mkl_why = _mkl_bf16()
        self.rng = np.random.default_rng(0)

    def setup(self, shape):
        from .. import _kernels

        m, k, n = shape
        A = self.rng.standard_normal((m, k)).astype(np.float32)
        B = self.rng.standard_normal((k, n)).astype(np.float32)
        C = np.empty((m, n), np.float32)
        calls = {"f32": lambda: _kernels.gemm_repeat(A, B, C, 1),
                 "bf16": lambda: _kernels.matmul_bf16(A, B, C, False, False)}
        if self.mkl is not None:
            a16, b16 = _to_bf16_bits(A), _to_bf16_bits(B)
            # row-major (101), no transposes (111)
            calls["mkl"] = lambda: self.mkl(101, 111, 111, m, n, k, 1.0, a16.ctypes.data, k,
                                            b16.ctypes.data, n, 0.0, C.ctypes.data, n)
        return calls

    def row(self, shape, samples):
        m, k, n = shape
        t = medians(samples)
        gf = {name: 2.0 * m * n * k / s / 1e9 for name, s in t.items()}
        return [f"{m} x {k} x {n}", f"{gf['f32']:.0f}", f"{gf['bf16']:.0f}",
                f"{t['f32'] / t['bf16']:.2f}x",
                f"{gf['mkl']:.0f}" if "mkl" in gf else f"- ({self.mkl_why})"]


def gemm_table(rounds, target_time):
    return run_case(Products(), GEMM_SHAPES, rounds, target_time)


def _torch_step(sizes, batch, autocast):
    import torch
    from torch import nn

    net = torch_mlp(sizes)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    X = torch.randn(batch, sizes[0])
    y = torch.randint(0, sizes[-1], (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = nn.functional.cross_entropy(net(X), y)
        loss.backward()
        opt.step()

    return step


class Steps(Case):
    """One setting (sizes, batch): fusedmlp's float32 and bf16 Adam steps at `n_threads`,
    and PyTorch eager float32 and bf16 autocast (when `torch_ok`)."""

    def __init__(self, rounds, torch_ok, n_threads):
        self.torch_ok, self.n_threads = torch_ok, n_threads
        self.rng = np.random.default_rng(0)
        self.header = ["network", "batch", "float32 (us)", "bf16 (us)", "bf16 speed-up"]
        if torch_ok:
            self.header += ["torch f32 (us)", "torch bf16 autocast (us)",
                            "bf16: fusedmlp vs torch autocast"]
        threads = "one thread" if n_threads == 1 else f"{n_threads} threads"
        self.title = (f"Adam training steps, {threads}: microseconds per step (median over "
                      "{rounds} interleaved rounds)")

    def setup(self, setting):
        import fusedmlp

        sizes, batch = setting
        X = self.rng.random((batch, sizes[0]), dtype=np.float32)
        y = self.rng.integers(0, sizes[-1], batch)
        calls = {}
        for name, compute in (("f32", None), ("bf16", "bfloat16")):
            model = fusedmlp.MLP(sizes, seed=0, n_threads=self.n_threads, compute_dtype=compute)
            step = model.bind(fusedmlp.Adam(1e-3))
            calls[name] = lambda step=step: step(X, y)
        if self.torch_ok:
            calls["torch"] = _torch_step(sizes, batch, False)
            calls["torch_bf16"] = _torch_step(sizes, batch, True)
        return calls

    def row(self, setting, samples):
        sizes, batch = setting
        t = {k: v * 1e6 for k, v in medians(samples).items()}
        cells = ["-".join(map(str, sizes)), str(batch), f"{t['f32']:.0f}", f"{t['bf16']:.0f}",
                 f"{t['f32'] / t['bf16']:.2f}x"]
        if self.torch_ok:
            cells += [f"{t['torch']:.0f}", f"{t['torch_bf16']:.0f}",
                      f"{t['torch_bf16'] / t['bf16']:.2f}x"]
        return cells


def step_table(rounds, target_time, torch_ok, n_threads=1, configs=None):
    case = Steps(rounds, torch_ok and n_threads == 1, n_threads)
    return run_case(case, STEP_CONFIGS if configs is None else configs, rounds, target_time)


def _torch_epochs(data, epochs, batch, autocast):
    """(seconds of the first epoch, test accuracy after `epochs`) for PyTorch eager."""
    import torch
    from torch import nn

    net = torch_mlp((784, 256, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    X, y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
    gen = torch.Generator().manual_seed(0)

    def epoch():
        order = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), batch):
            rows = order[i:i + batch]
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = nn.functional.cross_entropy(net(X[rows]), y[rows])
            loss.backward()
            opt.step()

    first = one_call(epoch)["seconds"]
    for _ in range(epochs - 1):
        epoch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        pred = net(torch.from_numpy(data.X_test)).argmax(1).numpy()
    return first, float((pred == data.y_test).mean())


def epoch_table(epochs, torch_ok, path):
    import fusedmlp
    from .datasets import load_idx_dataset

    try:
        data = load_idx_dataset(path)
    except (FileNotFoundError, ValueError) as exc:
        return f"Fashion-MNIST epoch: left out ({exc})"
    rows = []
    for name, compute in (("fusedmlp float32", None), ("fusedmlp bf16", "bfloat16")):
        model = fusedmlp.MLP([784, 256, 10], seed=0, n_threads=1, compute_dtype=compute)
        opt = fusedmlp.Adam(1e-3)
        times = [one_call(lambda: model.fit(data.X_train, data.y_train, epochs=1,
                                            batch_size=128, optimizer=opt))["seconds"]
                 for _ in range(epochs)]
        rows.append((name, statistics.median(times), model.score(data.X_test, data.y_test)))
    if torch_ok:
        for name, autocast in (("torch eager float32", False), ("torch eager bf16 autocast", True)):
            seconds, accuracy = _torch_epochs(data, epochs, 128, autocast)
            rows.append((name, seconds, accuracy))
    lines = [f"Fashion-MNIST, 784-256-10, batch 128, Adam 1e-3, one thread: seconds per epoch "
             f"(fusedmlp: median of {epochs} epochs; torch: the first) and test accuracy after "
             f"{epochs} epochs", "", "| setting | s / epoch | test accuracy |", "|---|---|---|"]
    lines += [f"| {name} | {s:.2f} | {100 * acc:.2f} % |" for name, s, acc in rows]
    return "\n".join(lines)


class Inference(Case):
    """One batch of rows: predict_proba of a float32 and a bf16 model at INFERENCE_SIZES."""

    header = ["rows", "float32 (us)", "bf16 (us)", "bf16 speed-up"]

    def __init__(self):
        import fusedmlp

        self.rng = np.random.default_rng(0)
        self.models = {name: fusedmlp.MLP(INFERENCE_SIZES, seed=0, n_threads=1,
                                          compute_dtype=compute)
                       for name, compute in (("f32", None), ("bf16", "bfloat16"))}
        self.title = (f"predict_proba at {'-'.join(map(str, INFERENCE_SIZES))}, one thread: "
                      "microseconds per call (median over {rounds} interleaved rounds)")

    def setup(self, rows):
        X = self.rng.random((rows, INFERENCE_SIZES[0]), dtype=np.float32)
        return {name: (lambda model=model: model.predict_proba(X))
                for name, model in self.models.items()}

    def row(self, rows, samples):
        t = {k: v * 1e6 for k, v in medians(samples).items()}
        return [str(rows), f"{t['f32']:.1f}", f"{t['bf16']:.1f}", f"{t['f32'] / t['bf16']:.2f}x"]


def inference_table(rounds, target_time):
    return run_case(Inference(), INFERENCE_ROWS, rounds, target_time)


def main(argv=None) -> int:
    parser = CommandParser("bf16", plain(__doc__),
                           defaults={"rounds": 5, "target_time": 0.2, "epochs": 5},
                           quick={"rounds": 2, "target_time": 0.05, "epochs": 1},
                           quick_help="fewer rounds, shorter calls, one epoch",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, help="Fashion-MNIST epochs" + parser.said("epochs"))
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--no-epoch", action="store_true", help="leave the Fashion-MNIST table out")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                        help="Fashion-MNIST's directory (IDX files)")
    args = parser.parse_args(argv)
    rounds, target, epochs = args.rounds, args.target_time, args.epochs

    from .. import bf16

    why = bf16.why_unavailable()
    if why:
        print(f"bench bf16: bfloat16 compute is not available here: {why}", file=sys.stderr)
        return 1
    torch_ok = False
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(1)
            torch_ok = True
        except ImportError:
            print("# torch is not importable: its columns are left out")
    import fusedmlp
    config = fusedmlp.show_config(as_dict=True)
    print(f"# fusedmlp {fusedmlp.__version__}; BLAS {config['blas']['name']}; bf16 product "
          f"{config['bfloat16']['backend']} ({config['bfloat16']['backend_why']})"
          + (f"; torch {torch.__version__}" if torch_ok else ""))
    with pinned(1):
        print(gemm_table(rounds, target), end="\n\n", flush=True)
        print(step_table(rounds, target, torch_ok), end="\n\n", flush=True)
        print(step_table(rounds, target, False, 2, TWO_THREAD_CONFIGS), end="\n\n", flush=True)
        print(inference_table(rounds, target), end="\n\n", flush=True)
        if not args.no_epoch:
            print(epoch_table(epochs, torch_ok, args.data), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
