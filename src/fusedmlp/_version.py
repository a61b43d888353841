"""The version of fusedmlp: the one place it is written (pyproject.toml reads it from here)."""

__version__ = "0.1.0"

#: The command's name (pyproject.toml's [project.scripts]): the CLI's modules read it here.
PROG = "fusedmlp"
