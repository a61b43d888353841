"""What the ``fusedmlp`` commands share: the program name, how a command's parser is made and
the benchmarks' timing loop.

A leaf module: the command modules (demo, bench, ...) import it, and so does the dispatcher
in ``fusedmlp/cli/__init__.py``, which imports the commands only when one runs.
"""

from __future__ import annotations

import argparse
import re
import textwrap
import time

from .._version import PROG

__all__ = ["PROG", "plain", "parser_for", "seconds_per_call"]


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


def seconds_per_call(call, target_time: float) -> float:
    """Mean seconds of `call()` over a loop of at least `target_time` seconds and two calls,
    after one warm-up call."""
    call()
    calls, start = 0, time.perf_counter()
    while True:
        call()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= target_time and calls >= 2:
            return elapsed / calls
