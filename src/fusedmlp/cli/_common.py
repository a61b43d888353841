"""What the ``fusedmlp`` commands share: the program name and how a command's parser and help
text are made (the benchmarks' harness is ``_harness.py``).

A leaf module: the command modules (demo, bench, ...) import it, and so does the dispatcher
in ``fusedmlp/cli/__init__.py``, which imports the commands only when one runs.
"""

from __future__ import annotations

import argparse
import re
import textwrap

from .._version import PROG

__all__ = ["PROG", "plain", "parser_for"]


def plain(docstring: str, width: int = 78) -> str:
    """A module docstring as plain text for ``--help``: reST roles and literals unmarked,
    the leading ``command``: label dropped, each paragraph re-wrapped to `width`."""
    text = re.sub(r":\w+:`~?([^`]*?)`", lambda m: m.group(1).rsplit(".", 1)[-1]
                  if m.group(0).count("~") else m.group(1), docstring)
    text = text.replace("``", "")
    text = re.sub(r"^[\w .-]+: (?=\w)", "", text.strip(), count=1)     # "python -m x: ..."
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
    return "\n\n".join(textwrap.fill(p[:1].upper() + p[1:], width) for p in paragraphs)


def parser_for(command: str, docstring: str) -> argparse.ArgumentParser:
    """The parser of ``fusedmlp COMMAND``: its usage names the program as the others do, its
    help is the module's docstring as plain text."""
    return argparse.ArgumentParser(prog=f"{PROG} {command}", description=plain(docstring),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
