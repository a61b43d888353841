"""``python -m fusedmlp demo``: train an MLP on real data and compare it with pure NumPy.

The demo trains a :class:`fusedmlp.MLP` on scikit-learn's bundled digits (or, with
``--data DIR``, on MNIST-style IDX files such as Fashion-MNIST), prints one line per epoch,
the test accuracy and the training time, then trains the pure-NumPy reference
(:class:`fusedmlp.reference.NumpyMLP`) from the same initial weights with the same
optimiser and batch size, and prints the speed-up per epoch. ``--plot PATH`` writes the loss
and accuracy curves as a PNG (needs matplotlib).

BLAS threads are pinned (``--threads``, default 1) with threadpoolctl when it is installed:
small networks run fastest on one thread, and both contenders then get the same BLAS.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import numpy as np

from . import _plotting
from ._common import PROG, parser_for

__all__ = ["add_arguments", "run", "main"]

#: Above this many training samples the reference trains for fewer epochs by default.
_SMALL_DATASET = 10_000


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the demo's options to `parser` (used by ``python -m fusedmlp demo``)."""
    parser.add_argument("--data", metavar="DIR",
                        help="a directory of MNIST-style IDX files (raw or .gz), e.g. "
                             "/usr/share/datasets/fashion-mnist from the Debian package "
                             "dataset-fashion-mnist; default: scikit-learn's bundled digits")
    parser.add_argument("--epochs", type=_positive_int, default=None,
                        help="training epochs (default: 20 on digits, 5 on IDX data)")
    parser.add_argument("--hidden", type=_widths, default=(128,), metavar="N[,N...]",
                        help="hidden layer widths, comma-separated (default: 128)")
    parser.add_argument("--activation", default="relu",
                        help="hidden activation: relu, tanh, sigmoid, ... (default: relu)")
    parser.add_argument("--batch-size", type=_positive_int, default=32,
                        help="mini-batch size (default: 32)")
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="Adam's learning rate (default: 0.001)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="compute dtype (default: float32)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the split, the initial weights and the shuffling")
    parser.add_argument("--threads", type=_positive_int, default=1,
                        help="BLAS threads, set with threadpoolctl when installed (default: 1)")
    parser.add_argument("--reference-epochs", type=int, default=None, metavar="N",
                        help="epochs of the pure-NumPy reference used for the speed-up (0 "
                             "skips it; default: all on small data, 2 on large)")
    parser.add_argument("--plot", metavar="PATH",
                        help="write the loss and accuracy curves to this PNG (needs matplotlib)")
    return parser


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _widths(text):
    try:
        widths = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive widths separated by commas (e.g. 256,128), got {text!r}")
    return widths


@contextlib.contextmanager
def _blas_threads(threads):
    """Pin BLAS threads with threadpoolctl; yield a description of what was done."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield "not pinned (pip install threadpoolctl to pin them)"
        return
    with threadpool_limits(limits=threads):
        yield f"{threads} (threadpoolctl)"


def _load(args):
    from .datasets import load_digits_dataset, load_idx_dataset

    if args.data is None:
        return load_digits_dataset(seed=args.seed)
    return load_idx_dataset(args.data)


def _check_plotting(path):
    """Fail before training when a plot was asked for and cannot be made or written."""
    if path is None:
        return None
    plt = _plotting.pyplot(f"--plot {path}")
    _plotting.check_file(path)
    return plt


def _write_plot(plt, path, history, title):
    from matplotlib.ticker import MaxNLocator

    epochs = np.arange(1, len(history["loss"]) + 1)
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    # the training loss is the mean over the epoch's batches (before each step), the test
    # loss is measured after the epoch
    loss_axes.plot(epochs, history["loss"], marker="o", label="training (epoch mean)")
    loss_axes.plot(epochs, history["val_loss"], marker="o", label="test")
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    accuracy_axes.plot(epochs, np.multiply(history["accuracy"], 100), marker="o",
                       label="training")
    accuracy_axes.plot(epochs, np.multiply(history["val_accuracy"], 100), marker="o",
                       label="test")
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _train_reference(reference, optimizer, X, y, epochs, batch_size, seed):
    """The pure-NumPy reference's epochs, each timed; the batching is NumpyMLP.fit's."""
    rng = np.random.default_rng(seed)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = rng.permutation(len(X))
        for low in range(0, len(X), batch_size):
            batch = order[low:low + batch_size]
            reference.train_step(X[batch], y[batch], optimizer)
        times.append(time.perf_counter() - start)
    return times


def run(args, out=None) -> int:
    """Run the demo with parsed arguments (see :func:`add_arguments`), printing to `out`
    (standard output by default); returns 0. Errors (missing data or packages) raise."""
    import fusedmlp
    from ..reference import NumpyAdam, NumpyMLP

    out = sys.stdout if out is None else out

    def say(text=""):
        print(text, file=out, flush=True)

    plt = _check_plotting(args.plot)
    data = _load(args)
    small = len(data.X_train) <= _SMALL_DATASET
    epochs = args.epochs or (20 if small else 5)
    reference_epochs = args.reference_epochs
    if reference_epochs is None:
        reference_epochs = epochs if small else min(epochs, 2)
    reference_epochs = max(0, min(reference_epochs, epochs))
    dtype = np.dtype(args.dtype)
    X_train, X_test = data.X_train.astype(dtype), data.X_test.astype(dtype)

    sizes = [data.n_features, *args.hidden, data.n_classes]
    model = fusedmlp.MLP(sizes, activation=args.activation, dtype=dtype, seed=args.seed)
    # the reference starts from the same weights (copied before any training)
    reference = NumpyMLP.from_model(model) if reference_epochs else None
    optimizer = fusedmlp.Adam(args.lr)

    say(f"fusedmlp demo: {data.name}, {len(data.X_train):,} training and "
        f"{len(data.X_test):,} test samples, {data.n_features} features, "
        f"{data.n_classes} classes")
    with _blas_threads(args.threads) as threads:
        say(f"network: {model!r}, {model.n_parameters:,} parameters")
        say(f"training: Adam(lr={args.lr:g}), batch {args.batch_size}, {epochs} epochs; "
            f"BLAS threads: {threads}")

        def progress(model_, epoch, logs):
            say(f"epoch {epoch:>3}/{epochs}  loss {logs['loss']:.4f}  "
                f"train acc {logs['accuracy']:6.2%}  test acc {logs['val_accuracy']:6.2%}  "
                f"({logs['time'] * 1e3:.0f} ms)")

        history = model.fit(X_train, data.y_train, epochs=epochs, batch_size=args.batch_size,
                            optimizer=optimizer, validation_data=(X_test, data.y_test),
                            callbacks=(progress,))
        train_time = sum(history["time"])
        test_accuracy = float(np.mean(model.predict(X_test) == data.y_test))
        say()
        say(f"test accuracy: {test_accuracy:.2%}")
        say(f"training time: {train_time:.2f} s for {epochs} epochs "
            f"({train_time / epochs * 1e3:.1f} ms per epoch; evaluation not included)")

        if reference is not None:
            say(f"pure-NumPy reference (fusedmlp.reference.NumpyMLP), same network, "
                f"initial weights, optimiser and batch size: {reference_epochs} epochs ...")
            reference_times = _train_reference(
                reference, NumpyAdam(args.lr), X_train, data.y_train, reference_epochs,
                args.batch_size, args.seed)
            reference_accuracy = float(np.mean(reference.predict(X_test) == data.y_test))
            ours = statistics.median(history["time"][:reference_epochs])
            theirs = statistics.median(reference_times)
            say(f"reference: {sum(reference_times):.2f} s for {reference_epochs} epochs "
                f"({theirs * 1e3:.1f} ms per epoch), test accuracy after epoch "
                f"{reference_epochs}: {reference_accuracy:.2%} (fusedmlp: "
                f"{history['val_accuracy'][reference_epochs - 1]:.2%})")
            say(f"speed-up over pure NumPy: {theirs / ours:.1f}x per epoch "
                f"(median epoch times of the first {reference_epochs} epochs)")
    if plt is not None:
        _write_plot(plt, args.plot, history,
                    f"fusedmlp on {data.name}: {list(sizes)}, {dtype.name}")
        say(f"curves written to {args.plot}")
    return 0


def main(argv=None) -> int:
    """Entry point of ``python -m fusedmlp.cli.demo`` (the same as ``python -m fusedmlp demo``).

    Parameters
    ----------
    argv : list of str, optional
        The options (``sys.argv[1:]`` by default), e.g. ``["--epochs", "5"]``.

    Returns
    -------
    int
        The exit status: 0, or 1 after printing an error (missing data, no scikit-learn for
        digits, no matplotlib for ``--plot``).

    Examples
    --------
    >>> from fusedmlp.cli.demo import main
    >>> main(["--epochs", "3", "--plot", "curves.png"])     # doctest: +SKIP
    fusedmlp demo: digits, 1,347 training and 450 test samples, 64 features, 10 classes
    ...
    """
    parser = add_arguments(parser_for("demo", __doc__))
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (OSError, ValueError, ImportError, RuntimeError) as exc:
        print(f"{PROG} demo: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
