"""fusedmlp export-c: write a saved model as dependency-free C99 inference code.

Reads MODEL_FILE, a file written by ``MLP.save`` (``fusedmlp.load`` reads it), and writes
``NAME.h`` and ``NAME.c`` into DIRECTORY (created if missing; files of the same names are
replaced), as :func:`fusedmlp.export_c` does. A scikit-learn estimator's labels are not in
the file: a classifier saved as ``clf.model_.save(path)`` exports as its MLP (class indices,
one probability column for two classes); call ``clf.export_c(directory)`` in Python to get
the estimator's form.
"""

from __future__ import annotations

import argparse
import sys

from ._common import PROG

__all__ = ["add_arguments", "run"]


def _c_name(text: str) -> str:
    from ..export_c import check_name

    try:
        return check_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the command's arguments to `parser` (used by ``python -m fusedmlp export-c``)."""
    parser.add_argument("model_file", metavar="MODEL_FILE",
                        help="a model file written by MLP.save")
    parser.add_argument("directory", metavar="DIRECTORY",
                        help="where to write NAME.h and NAME.c (created if missing)")
    parser.add_argument("--name", type=_c_name, default="fusedmlp_model",
                        help="the C name of the files and the prefix of every symbol: a C "
                             "identifier that is not a keyword (default: fusedmlp_model)")
    return parser


def run(args, out=None) -> int:
    """Export ``args.model_file`` into ``args.directory``; prints the two paths to `out`
    (standard output by default) and returns 0, or prints the reason to standard error and
    returns 1 when the file cannot be read, is not a model file, or the model cannot be
    exported."""
    from .. import load
    from ..export_c import export_c

    out = sys.stdout if out is None else out
    try:
        model = load(args.model_file)
    except OSError as exc:
        return _fail(f"cannot read MODEL_FILE {args.model_file!r}: {exc.strerror or exc}")
    except ValueError as exc:
        return _fail(str(exc))
    try:
        paths = export_c(model, args.directory, name=args.name)
    except OSError as exc:
        return _fail(f"cannot write into DIRECTORY {args.directory!r}: {exc.strerror or exc}")
    except ValueError as exc:
        return _fail(str(exc))
    for path in paths:
        print(path, file=out)
    return 0


def _fail(message: str) -> int:
    print(f"{PROG} export-c: error: {message}", file=sys.stderr)
    return 1
