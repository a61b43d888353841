"""Model files: an ``.npz`` archive holding a JSON header and the flat parameter vector.

Loading never unpickles (``allow_pickle=False``), so opening a file cannot run code; every
field of the header is checked, and truncated, corrupt, unknown-version or inconsistent files
are refused with ``ValueError``. Saving writes a temporary file next to the target and renames
it over the target, so a crash never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from .functional import ACTIVATIONS

__all__ = ["save", "load", "FORMAT", "FORMAT_VERSION"]

FORMAT = "fusedmlp.MLP"
FORMAT_VERSION = 1


def save(model, path, *, optimizer=None):
    """Write `model` (and optionally `optimizer`'s state) to `path`, atomically."""
    header = {
        "format": FORMAT, "version": FORMAT_VERSION,
        "layer_sizes": list(model.layer_sizes), "activations": model.activations,
        "output": model.output, "dtype": model.dtype.name, "n_parameters": model.n_parameters,
        "optimizer": None,
    }
    arrays = {"params": model._params}
    if optimizer is not None:
        # binds an unused optimizer to the model (its state: zeros), so that the file always
        # holds state buffers of the model's size; refuses an optimizer of another model
        optimizer._buffers(model)
        state = optimizer.state_dict()
        header["optimizer"] = state.pop("class")
        arrays.update({f"optimizer_{k}": v for k, v in state.items()})
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fusedmlp-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _refuse(path, why):
    raise ValueError(f"{os.fspath(path)!s} is not a valid fusedmlp model file: {why}")


def load(path, *, with_optimizer=False):
    """Read a model written by ``MLP.save``; with ``with_optimizer=True`` return
    ``(model, optimizer)`` (optimizer is None when the file holds none)."""
    from .model import MLP
    from . import optim

    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                arrays = {name: loaded[name] for name in loaded.files}
        else:
            arrays = None                                # a bare .npy array
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        _refuse(path, f"cannot read the archive ({type(exc).__name__}: {exc})")
    if arrays is None:
        _refuse(path, "it holds a bare .npy array, not an .npz archive")
    if "header" not in arrays or "params" not in arrays:
        _refuse(path, "the header or the parameters are missing")
    try:
        header = json.loads(arrays["header"].tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _refuse(path, f"the header is not JSON ({exc})")
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        _refuse(path, "the header does not name the fusedmlp model format")
    if header.get("version") != FORMAT_VERSION:
        _refuse(path, f"unknown format version {header.get('version')!r} (this fusedmlp reads {FORMAT_VERSION})")
    sizes, activations = header.get("layer_sizes"), header.get("activations")
    if (not isinstance(sizes, list) or len(sizes) < 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes)):
        _refuse(path, f"bad layer_sizes {sizes!r}")
    if (not isinstance(activations, list) or len(activations) != len(sizes) - 2
            or not all(isinstance(a, str) and a in ACTIVATIONS for a in activations)):
        _refuse(path, f"bad activations {activations!r}")
    if header.get("output") not in ("softmax", "identity"):
        _refuse(path, f"bad output {header.get('output')!r}")
    if header.get("dtype") not in ("float32", "float64"):
        _refuse(path, f"bad dtype {header.get('dtype')!r}")
    params = arrays["params"]
    expected = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    if params.dtype != np.dtype(header["dtype"]) or params.shape != (expected,) \
            or header.get("n_parameters") != expected:
        _refuse(path, f"the parameters ({params.dtype}, {params.shape}) do not match the "
                      f"header ({header['dtype']}, ({expected},))")
    if not np.all(np.isfinite(params)):
        _refuse(path, "the parameters contain NaN or infinity")
    model = MLP(sizes, activation=activations, output=header["output"], dtype=header["dtype"],
                init="zeros")
    model._params[...] = params
    if not with_optimizer:
        return model
    name = header.get("optimizer")
    if name is None:
        return model, None
    cls = getattr(optim, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, optim.Optimizer)):
        _refuse(path, f"unknown optimizer {name!r}")
    state = {k[len("optimizer_"):]: v for k, v in arrays.items() if k.startswith("optimizer_")}
    optimizer = cls()
    hyper = state.get("hyper")
    if hyper is None or hyper.shape != optimizer.hyper.shape or not np.all(np.isfinite(hyper)):
        _refuse(path, "bad optimizer hyper-parameters")
    for i in range(optimizer.n_states):
        buffer = state.get(f"state_{i}")
        if buffer is None or buffer.shape != params.shape or buffer.dtype != params.dtype:
            _refuse(path, f"optimizer state {i} is missing or does not match the parameters")
        if not np.all(np.isfinite(buffer)):
            _refuse(path, f"optimizer state {i} contains NaN or infinity")
    optimizer.load_state_dict(model, state)
    return model, optimizer
