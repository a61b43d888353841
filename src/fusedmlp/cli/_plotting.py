"""Checks and figures shared by ``fusedmlp demo --plot PATH`` and ``fusedmlp bench --plot DIR``.

Both check before any work starts that matplotlib is there and that the place to write is
writable, so that a long run never ends in an error about its output.
"""

from __future__ import annotations

import os
from pathlib import Path

_HINT = 'pip install matplotlib (from a fusedmlp checkout: pip install ".[plot]")'


def pyplot(option: str):
    """matplotlib.pyplot with the file-only Agg backend, or RuntimeError naming `option`."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError(
            f"{option} needs matplotlib, which is not installed: {_HINT} (or leave out "
            f"--plot)") from None
    matplotlib.use("Agg")                  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def check_file(path: str) -> None:
    """RuntimeError unless a file can be written at `path` (its directory exists, writable)."""
    target = Path(path)
    if target.is_dir():
        raise RuntimeError(f"--plot {path} is a directory; give a file name such as curves.png")
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise RuntimeError(f"--plot {path}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise RuntimeError(f"--plot {path}: the directory {directory} is not writable")


def check_directory(path: str) -> None:
    """Create `path` if needed; RuntimeError unless it is a writable directory."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise RuntimeError(f"--plot {path} is a file; give a directory for the figures")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RuntimeError(f"--plot {path}: cannot create the directory ({exc})") from None
    if not os.access(target, os.W_OK):
        raise RuntimeError(f"--plot {path}: the directory is not writable")


def bench_figures(plt, results, labels, directory) -> list:
    """Write the benchmark's figures into `directory`; return their paths.

    ``step_time.png`` and ``inference.png``: for each network measured at more than one batch
    size, time per call against batch size (log-log), one line per competitor (and the GEMM
    floor for training), one panel per network; one BLAS thread, each dtype its own line
    style. ``epoch_time.png``: the time of one epoch over 60,000 samples (MNIST's size) at each
    measured batch size, i.e. step time x 60,000 / batch, for the same networks.
    """
    written = []
    single = [r for r in results if r["threads"] == 1]
    networks = sorted({tuple(r["sizes"]) for r in single},
                      key=lambda s: sum(a * b for a, b in zip(s[:-1], s[1:])))
    networks = [n for n in networks
                if len({r["batch"] for r in single if tuple(r["sizes"]) == n}) > 1] or networks
    dtypes = sorted({r["dtype"] for r in single})
    styles = {"float32": "-", "float64": "--"}
    for name, kind, scale, ylabel in (
            ("step_time.png", "train", None, "µs per training step"),
            ("inference.png", "infer", None, "µs per predict_proba call"),
            ("epoch_time.png", "train", 60_000, "seconds per epoch of 60,000 samples")):
        figure, axes = plt.subplots(1, len(networks), figsize=(5.5 * len(networks), 4),
                                    squeeze=False)
        for axis, sizes in zip(axes[0], networks):
            for dtype in dtypes:
                rows = sorted((r for r in single
                               if tuple(r["sizes"]) == sizes and r["dtype"] == dtype),
                              key=lambda r: r["batch"])
                keys = sorted({k for r in rows for k in r[kind]},
                              key=lambda k: list(labels).index(k) if k in labels else 99)
                for key in keys:
                    points = [(r["batch"], r[kind][key]["median"]) for r in rows
                              if r[kind].get(key)]
                    if not points:
                        continue
                    batches = [b for b, _ in points]
                    values = [t * scale / b if scale else t * 1e6 for b, t in points]
                    axis.plot(batches, values, styles.get(dtype, "-"), marker="o",
                              label=f"{labels.get(key, key)} ({dtype})")
            axis.set_xscale("log", base=2)
            axis.set_yscale("log")
            axis.set_xlabel("batch size")
            axis.set_ylabel(ylabel)
            axis.set_title("-".join(map(str, sizes)))
            axis.grid(True, which="both", alpha=0.3)
            axis.legend(fontsize=7)
        figure.tight_layout()
        path = Path(directory) / name
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(str(path))
    return written
