"""The ``fusedmlp`` command (also ``python -m fusedmlp``): ``demo``, ``bench`` and ``export-c``.

Tooling, not library: nothing in the core package imports ``fusedmlp.cli``.
"""

from __future__ import annotations

import argparse
import sys

from .._version import PROG, __version__
from ._common import plain

_DESCRIPTION = (
    "fusedmlp: dense neural networks whose training step is one compiled call over BLAS.\n\n"
    "  fusedmlp demo    train an MLP on digits (or Fashion-MNIST with --data DIR) and\n"
    "                   compare its speed with the pure-NumPy reference\n"
    "  fusedmlp bench   time training steps and inference against NumPy, PyTorch and\n"
    "                   scikit-learn\n"
    "  fusedmlp export-c MODEL_FILE DIRECTORY [--name NAME]\n"
    "                   write a saved model as dependency-free C99 inference code\n\n"
    "Run 'fusedmlp COMMAND --help' for a command's options."
)


def _parser() -> argparse.ArgumentParser:
    from . import demo, export_c

    parser = argparse.ArgumentParser(prog=PROG, description=_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo.add_arguments(commands.add_parser(
        "demo", help="train an MLP on real data; accuracy, time and speed-up over NumPy",
        description=plain(demo.__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter))
    # bench parses its own options (fusedmlp.cli.bench.main); listed here for --help
    commands.add_parser("bench", help="benchmark against NumPy, PyTorch and scikit-learn "
                                      "(options: fusedmlp bench --help)", add_help=False)
    export_c.add_arguments(commands.add_parser(
        "export-c", help="write a model file as C99 inference code (NAME.h, NAME.c)",
        description=plain(export_c.__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def _bench(argv) -> int:
    try:
        from . import bench
    except ImportError as exc:
        print(f"{PROG} bench: not available in this installation ({exc})", file=sys.stderr)
        return 1
    return bench.main(list(argv))


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "bench":
        # everything after 'bench' belongs to the benchmark's own parser
        return _bench(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "export-c":
        from . import export_c

        return export_c.run(args)
    from . import demo

    try:
        return demo.run(args)
    except (OSError, ValueError, ImportError, RuntimeError) as exc:
        print(f"{PROG} demo: error: {exc}", file=sys.stderr)
        return 1

