"""Model files: an ``.npz`` archive holding a JSON header and the flat parameter vector.

Reading (``read``, behind ``fusedmlp.load``) never unpickles and never trusts the archive:

- The archive may hold only the members the header calls for (``header.npy``,
  ``params.npy`` and, when the header names an optimiser, ``optimizer_hyper.npy`` and that
  optimiser's ``optimizer_state_<i>.npy``), each stored or deflated, none encrypted.
- Every member's declared size is checked against what the header says it holds (dtype and
  shape, from the layer sizes) *before* it is inflated, and a deflated member may not declare
  more than deflate's maximum ratio over its compressed size; so the memory ``load`` uses is
  bounded by the model the header describes, which the file's size bounds in turn.
- Then each ``.npy`` member's own header must give exactly that dtype and shape, and the data
  is read into its final buffer with the archive's CRC checked. Only the members needed are
  read: without ``with_optimizer=True`` the optimiser's are checked but never inflated.
- The JSON header is checked field by field (exact types: ``"version": true`` is not 1), the
  optimiser record completely (``fusedmlp.optim``: a closed list of classes, the hyper-
  parameters of that class in the ranges its constructor enforces, exactly its state buffers).

Every invalid file raises ``ValueError`` naming the file and what is wrong, with the
underlying error (if any) chained as ``__cause__``; a file that cannot be read at all
(missing, a directory, no permission, an I/O error) raises ``OSError``.

Saving (``save``) writes the whole file under a temporary name in the target's directory,
flushes it to disk and renames it over the target, then flushes the directory, so a crash or
power loss leaves either the old file or the new one. Details in ``save``'s docstring.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
import threading
import zipfile
from typing import Set

import numpy as np

from . import _kernels, optim
from ._validation import BLAS_INT_MAX
from .dropout import check_dropout, check_dropout_key
from .functional import ACTIVATIONS
from .layers import OUTPUTS
from .layout import ParamLayout

__all__ = ["save", "read", "FORMAT", "FORMAT_VERSION"]

FORMAT = "fusedmlp.MLP"
FORMAT_VERSION = 1

#: The largest JSON header ``load`` reads, in bytes (a real one is a few hundred).
MAX_HEADER_BYTES = 1 << 16
# deflate cannot expand more than 1032:1; the slack covers a member's tiny fixed overhead
_DEFLATE_MAX_RATIO = 1032
_NPY_PREAMBLE_MAX = 10_000 + 12      # numpy's max_header_size plus magic and length fields


# ---------------------------------------------------------------------------------- save
def save(model, path, *, optimizer=None):
    """Write `model` (and optionally `optimizer`'s state) to `path`, atomically.

    `path` is a ``str``, ``bytes`` or ``os.PathLike``. The file is written completely under a
    temporary name in the target's directory, flushed to disk (``fsync``), renamed over the
    target, and the directory is flushed too, so that neither a crash nor a power loss leaves
    a half-written model: the target holds the old file or the new one.

    - Permissions: a new file gets the mode any new file gets under the process's umask
      (typically 0644); a file that is replaced keeps its mode.
    - A symbolic link is followed: the link stays and the file it points to is replaced.
    - No temporary file survives an exception. On Linux the file is written unnamed
      (``O_TMPFILE``) and only named for the instant before the rename, so even a killed
      process leaves nothing behind (at worst a temporary name, below). Elsewhere it is
      written as ``.<name>.fusedmlp-<pid>-<random>.tmp``; such a file left by a process
      that is no longer running is removed by the next save to the same path.
    """
    check_finite_model(model, "save")
    header = {
        "format": FORMAT, "version": FORMAT_VERSION,
        "layer_sizes": list(model.layer_sizes), "activations": model.activations,
        "output": model.output, "dtype": model.dtype.name, "n_parameters": model.n_parameters,
        "optimizer": None,
    }
    if np.any(model.dropout) or model.dropout_step:
        # the rates and the masks' key, so that a reloaded model continues the same masks
        header["dropout"] = {"rates": model.dropout, "seed": model.dropout_seed,
                             "step": model.dropout_step}
    if model.compute_dtype is not None:         # absent: the model's dtype (older files too)
        header["compute_dtype"] = model.compute_dtype
    arrays = {"params": model.parameters}
    if optimizer is not None:
        # binds an unused optimizer to the model (its state: zeros), so that the file always
        # holds state buffers of the model's size; refuses an optimizer of another model
        optimizer.buffers(model)
        state = optimizer.state_dict()
        try:                # what load would refuse is not written
            optimizer.check_state(model, state)
        except ValueError as exc:
            raise ValueError(f"save refuses to write the optimizer's state, which load "
                             f"would refuse: {exc}") from None
        header["optimizer"] = state.pop("class")
        arrays.update({f"optimizer_{k}": v for k, v in state.items()})
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    target = os.path.realpath(os.fsdecode(os.fspath(path)))     # follows symbolic links
    directory, name = os.path.split(target)
    _remove_stale_temporaries(directory, name)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None                  # a new file: created with 0o666 minus the umask
    _replace_atomically(target, directory, name, mode, lambda f: np.savez(f, **arrays))


def check_finite_model(model, what: str) -> None:
    """Refuse to write out (`what`: "save", "to_onnx", ...) a model whose parameters hold
    NaN or infinity: ``load`` refuses such a file and ``predict*`` such a model, so no
    writer produces one. (Pickling and ``state_dict`` do copy such a model: they are
    copies for inspection, and read back what they wrote.)"""
    if not _kernels.all_finite(model.parameters):
        raise ValueError(f"the model's parameters contain NaN or infinity: {what} refuses to "
                         "write them (fusedmlp.load and predict refuse such a model); set "
                         "finite ones with set_params_vector, or train a new model")


_TEMPORARY_MARK = ".fusedmlp-"
_ACTIVE: Set[str] = set()            # temporary names this process is writing right now
_ACTIVE_LOCK = threading.Lock()


def _temporary_prefix(name):
    return f".{name}{_TEMPORARY_MARK}"


def _new_temporary(directory, name):
    path = os.path.join(directory, f"{_temporary_prefix(name)}{os.getpid()}-"
                                   f"{secrets.token_hex(6)}.tmp")
    with _ACTIVE_LOCK:
        _ACTIVE.add(path)
    return path


def _forget_temporary(path):
    with _ACTIVE_LOCK:
        _ACTIVE.discard(path)


def _remove_stale_temporaries(directory, name):
    """Remove ``.<name>.fusedmlp-<pid>-*.tmp`` files of processes no longer running (and of
    this process's finished saves): what a killed save can leave behind."""
    prefix = _temporary_prefix(name)
    try:
        entries = [e for e in os.listdir(directory or ".")
                   if e.startswith(prefix) and e.endswith(".tmp")]
    except OSError:
        return
    for entry in entries:
        path = os.path.join(directory, entry)
        pid = entry[len(prefix):].split("-", 1)[0]
        if not pid.isdigit():
            continue
        with _ACTIVE_LOCK:
            if path in _ACTIVE:
                continue                 # a save of this process, in another thread
        if int(pid) != os.getpid() and _process_exists(int(pid)):
            continue                     # possibly a save in progress in another process
        try:
            os.unlink(path)
        except OSError:
            pass


def _process_exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True                      # someone else's process, or cannot tell: keep
    return True


def _open_unnamed(directory):
    """A file descriptor of an unnamed file in `directory` (Linux O_TMPFILE), or None."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag:
        return None
    try:
        return os.open(directory or ".", flag | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return None                  # the kernel or the file system lacks O_TMPFILE
        raise


def _link_unnamed(fd, path):
    """Give the unnamed file `fd` the name `path`; False if this system cannot."""
    try:
        # linkat through /proc: the documented way for unprivileged processes (open(2))
        os.link(f"/proc/self/fd/{fd}", path, follow_symlinks=True)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOENT, errno.EPERM, errno.EACCES, errno.EINVAL):
            raise
    try:
        # linkat(fd, "", AT_FDCWD, path, AT_EMPTY_PATH): needs CAP_DAC_READ_SEARCH
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        linked = libc.linkat(fd, b"", -100, os.fsencode(path), 0x1000) == 0
    except (OSError, AttributeError):
        return False
    return linked


def _replace_atomically(target, directory, name, mode, write):
    """Write a new file with write(binary file) and rename it over `target`."""
    temporary = None
    try:
        fd = _open_unnamed(directory)
        if fd is not None:
            with os.fdopen(fd, "wb") as f:
                _write_and_sync(f, write, mode)
                temporary = _new_temporary(directory, name)
                if not _link_unnamed(f.fileno(), temporary):
                    _forget_temporary(temporary)
                    temporary = None
        if temporary is None:        # no O_TMPFILE, or it cannot be named: a named file
            temporary = _new_temporary(directory, name)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0), 0o666)
            with os.fdopen(fd, "wb") as f:
                _write_and_sync(f, write, mode)
        os.replace(temporary, target)
        _forget_temporary(temporary)
        temporary = None
        _fsync_directory(directory)
    finally:
        if temporary is not None:
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass
            _forget_temporary(temporary)


def _write_and_sync(f, write, mode):
    write(f)
    f.flush()
    if mode is not None and hasattr(os, "fchmod"):
        os.fchmod(f.fileno(), mode)
    os.fsync(f.fileno())


def _fsync_directory(directory):
    """Make the rename durable (a no-op where directories cannot be opened)."""
    if os.name == "nt":
        return
    fd = os.open(directory or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------- load
class _InvalidFile(ValueError):
    pass


def read(path, build, *, with_optimizer=False):
    """Read a model file written by :func:`save` (``fusedmlp.load`` is this with the MLP).

    `build(header)` makes the model the checked header describes (its ``layer_sizes``,
    ``activations``, ``output`` and ``dtype``); the parameters are read straight into its
    ``parameters``. Returns the model, or with ``with_optimizer=True`` ``(model, optimizer)``
    (optimizer is None when the file holds none). This module knows the file, not the
    model class: it imports no model code.
    """
    if hasattr(path, "read"):
        where = getattr(path, "name", "the file object")
        return _Reader(path, where).read(build, with_optimizer)
    where = os.fsdecode(os.fspath(path))
    with open(where, "rb") as file:                  # OSError: cannot be read at all
        return _Reader(file, where).read(build, with_optimizer)


class _Reader:
    """One load: the archive, its members and the header, checked in that order."""

    def __init__(self, file, where):
        self.file, self.where = file, where

    def refuse(self, why, cause=None):
        raise _InvalidFile(f"{self.where!s} is not a valid fusedmlp model file: {why}") from cause

    def read(self, build, with_optimizer):
        try:
            return self._read(build, with_optimizer)
        except (_InvalidFile, MemoryError):
            raise
        except OSError as exc:
            # a read error of the file itself stays an OSError; zipfile reports some corrupt
            # offsets as EINVAL from seek
            if exc.errno not in (None, errno.EINVAL):
                raise
            self.refuse(f"cannot read the archive ({type(exc).__name__}: {exc})", exc)
        except Exception as exc:     # zipfile's and numpy's parsers: anything else is corrupt
            self.refuse(f"cannot read the archive ({type(exc).__name__}: {exc})", exc)

    # -------------------------------------------------------------- the archive
    def _read(self, build, with_optimizer):
        file = self.file
        start = file.tell()
        size = file.seek(0, os.SEEK_END) - start
        file.seek(start)
        if file.read(6) == b"\x93NUMPY":
            self.refuse("it holds a bare .npy array, not an .npz archive")
        file.seek(start)
        try:
            archive = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, EOFError, ValueError) as exc:
            self.refuse(f"cannot read the archive ({type(exc).__name__}: {exc})", exc)
        with archive:
            members = {}
            for info in archive.infolist():
                self._check_member(info, size)
                if info.filename in members:
                    self.refuse(f"the archive holds {info.filename} twice")
                members[info.filename] = info
            if "header.npy" not in members or "params.npy" not in members:
                self.refuse("the header or the parameters are missing")
            header = self._header(archive, members["header.npy"])
            sizes, dtype = header["layer_sizes"], np.dtype(header["dtype"])
            n_params = header["n_parameters"]

            # the optimiser record names the members that may exist besides these two
            expected = {"header.npy": None, "params.npy": (dtype, n_params)}
            name = header["optimizer"]
            cls = None
            if name is not None:
                try:
                    cls = optim.optimizer_class(name)
                except ValueError as exc:
                    self.refuse(f"bad optimizer record: {exc}", exc)
                expected["optimizer_hyper.npy"] = (np.dtype(np.float64), optim.HYPER_SIZE)
                for i in range(cls.n_states):
                    expected[f"optimizer_state_{i}.npy"] = (dtype, n_params)
            for member in members:
                if member not in expected:
                    why = ("the header names no optimizer" if name is None
                           else f"the header names optimizer {name}")
                    self.refuse(f"unexpected member {member} ({why})")
            for member, spec in expected.items():
                if member not in members:
                    self.refuse(f"member {member} is missing (the header names optimizer {name})")
                if spec is not None:
                    self._check_declared_size(members[member], *spec)

            # Everything declared is consistent: the model's memory is what the header says.
            model = build(header)
            self._array(archive, members["params.npy"], dtype, n_params, out=model.parameters)
            if not np.all(np.isfinite(model.parameters)):
                self.refuse("the parameters contain NaN or infinity")
            if not with_optimizer:
                return model
            if cls is None:
                return model, None
            state = {"class": name, "hyper": self._array(
                archive, members["optimizer_hyper.npy"], np.dtype(np.float64), optim.HYPER_SIZE)}
            for i in range(cls.n_states):
                state[f"state_{i}"] = self._array(
                    archive, members[f"optimizer_state_{i}.npy"], dtype, n_params)
            optimizer = cls()
            try:
                optimizer.load_state_dict(model, state)
            except ValueError as exc:
                self.refuse(f"bad optimizer record: {exc}", exc)
            return model, optimizer

    def _check_member(self, info, size):
        """What the archive's directory says about a member, before any of it is read."""
        name = info.filename
        if info.flag_bits & 0x1:
            self.refuse(f"member {name} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            self.refuse(f"member {name} uses compression method {info.compress_type} "
                        "(only stored and deflated members are read)")
        if info.compress_size > size or info.header_offset + info.compress_size > size:
            self.refuse(f"member {name} declares {info.compress_size} bytes beyond the end "
                        f"of the {size}-byte file")
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            self.refuse(f"stored member {name} declares {info.file_size} bytes but holds "
                        f"{info.compress_size}")
        if info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 1024:
            self.refuse(f"member {name} declares {info.file_size} bytes inflated from "
                        f"{info.compress_size}: more than deflate can produce")

    def _check_declared_size(self, info, dtype, count):
        data = dtype.itemsize * count
        if not data + 10 <= info.file_size <= data + _NPY_PREAMBLE_MAX:
            self.refuse(f"member {info.filename} declares {info.file_size} bytes, but the "
                        f"header says it holds {count} values of {dtype} ({data} bytes of data)")

    # -------------------------------------------------------------- members
    def _array(self, archive, info, dtype, count, *, out=None, at_most=False):
        """A member's 1-D array of `count` values of `dtype` (at most `count` with
        at_most), read into `out` if given; its .npy header must say exactly that."""
        try:
            with archive.open(info) as member:
                return self._read_member(member, info, dtype, count, out, at_most)
        except zipfile.BadZipFile as exc:              # a CRC mismatch, a bad local header
            self.refuse(f"member {info.filename} is corrupt ({exc})", exc)

    def _read_member(self, member, info, dtype, count, out, at_most):
        name = info.filename
        try:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, fortran, stored = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, fortran, stored = np.lib.format.read_array_header_2_0(member)
            else:
                self.refuse(f"member {name} has .npy format version {version}")
        except (_InvalidFile, zipfile.BadZipFile):
            raise
        except Exception as exc:       # numpy parses the header text with Python's parser
            self.refuse(f"member {name} has a malformed .npy header "
                        f"({type(exc).__name__}: {exc})", exc)
        if stored != dtype or fortran or len(shape) != 1 or \
                not (shape[0] <= count if at_most else shape[0] == count):
            what = f"at most {count}" if at_most else f"{count}"
            self.refuse(f"member {name} holds an array of dtype {stored} and shape {shape}; "
                        f"the header says {what} values of {dtype}")
        n = shape[0]
        preamble = member.tell()
        if info.file_size != preamble + n * dtype.itemsize:
            self.refuse(f"member {name} declares {info.file_size} bytes, but its array "
                        f"needs {preamble + n * dtype.itemsize}")
        array = np.empty(n, dtype) if out is None else out
        view = memoryview(array).cast("B")
        filled = 0
        while filled < len(view):
            got = member.readinto(view[filled:])
            if not got:
                self.refuse(f"member {name} is truncated")
            filled += got
        if member.read(1):                    # (reaching the end checks the CRC)
            self.refuse(f"member {name} is longer than it declares")
        return array

    def _header(self, archive, info):
        if info.file_size > MAX_HEADER_BYTES + _NPY_PREAMBLE_MAX:
            self.refuse(f"the header declares {info.file_size} bytes (at most "
                        f"{MAX_HEADER_BYTES} are read)")
        raw = self._array(archive, info, np.dtype(np.uint8), MAX_HEADER_BYTES, at_most=True)

        def no_constants(text):
            raise ValueError(f"{text} is not a number the header may hold")

        try:
            header = json.loads(raw.tobytes().decode("utf-8"), parse_constant=no_constants)
        except RecursionError as exc:
            self.refuse("the header is not JSON (nested too deeply)", exc)
        except (UnicodeDecodeError, ValueError) as exc:
            self.refuse(f"the header is not JSON ({exc})", exc)
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            self.refuse("the header does not name the fusedmlp model format")
        version = header.get("version")
        if type(version) is not int or version != FORMAT_VERSION:
            self.refuse(f"unknown format version {version!r} (this fusedmlp reads "
                        f"{FORMAT_VERSION})")
        sizes, activations = header.get("layer_sizes"), header.get("activations")
        if (not isinstance(sizes, list) or len(sizes) < 2
                or not all(type(s) is int and 1 <= s <= BLAS_INT_MAX for s in sizes)):
            self.refuse(f"bad layer_sizes {sizes!r}"[:200])
        if (not isinstance(activations, list) or len(activations) != len(sizes) - 2
                or not all(isinstance(a, str) and a in ACTIVATIONS for a in activations)):
            self.refuse(f"bad activations {activations!r}"[:200])
        if header.get("output") not in OUTPUTS:
            self.refuse(f"bad output {header.get('output')!r}"[:200])
        if header.get("dtype") not in ("float32", "float64"):
            self.refuse(f"bad dtype {header.get('dtype')!r}"[:200])
        if header.get("compute_dtype") not in (None, "bfloat16") or (
                header.get("compute_dtype") is not None and header["dtype"] != "float32"):
            self.refuse(f"bad compute_dtype {header.get('compute_dtype')!r} for dtype "
                        f"{header['dtype']!r}"[:200])
        expected = ParamLayout(sizes).n_params
        n_params = header.get("n_parameters")
        if type(n_params) is not int or n_params != expected:
            self.refuse(f"n_parameters is {n_params!r}"[:100] + f", but layer_sizes {sizes} "
                        f"have {expected} parameters")
        if header.get("optimizer") is not None and not isinstance(header["optimizer"], str):
            self.refuse(f"bad optimizer {header['optimizer']!r}"[:200])
        dropout = header.get("dropout")
        if dropout is not None:
            try:
                if not isinstance(dropout, dict) or set(dropout) != {"rates", "seed", "step"}:
                    raise ValueError("expected {'rates': ..., 'seed': ..., 'step': ...}")
                check_dropout(dropout["rates"], len(sizes) - 2, "rates")
                check_dropout_key(dropout["seed"], "seed")
                check_dropout_key(dropout["step"], "step")
            except (TypeError, ValueError) as exc:
                self.refuse(f"bad dropout record: {exc}"[:300], exc)
        return header
