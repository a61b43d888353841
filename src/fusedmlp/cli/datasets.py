"""Small real datasets for the demo, all available offline.

- :func:`load_digits_dataset`: scikit-learn's bundled 8x8 handwritten digits (needs
  scikit-learn: ``pip install scikit-learn``, or ``pip install ".[sklearn]"`` from a
  fusedmlp checkout).
- :func:`load_idx_dataset`: MNIST-style IDX files from a directory, such as Fashion-MNIST from
  the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).
- :func:`read_idx`: one IDX file, raw or gzip-compressed.

The IDX format (LeCun's MNIST files): two zero bytes, a type byte, the number of dimensions,
then each dimension as a big-endian uint32, then the values in C order, big-endian.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Dataset", "read_idx", "load_idx_dataset", "load_digits_dataset",
           "FASHION_MNIST_CLASSES", "DEFAULT_FASHION_MNIST_DIR"]

#: IDX type byte -> big-endian NumPy dtype.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

#: Where Debian's dataset-fashion-mnist package puts the files.
DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")

# The four files of an MNIST-style directory: role -> (name prefix, IDX dimensions).
_IDX_FILES = {"train images": ("train-images", 3), "train labels": ("train-labels", 1),
              "test images": ("t10k-images", 3), "test labels": ("t10k-labels", 1)}
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class Dataset:
    """A classification dataset split into training and test sets.

    ``X_*`` are float32 of shape ``(n, n_features)`` scaled to [0, 1]; ``y_*`` are int64
    labels in ``[0, len(class_names))``.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple = field(default=())

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def __repr__(self):
        return (f"Dataset({self.name!r}: {len(self.X_train)} training and {len(self.X_test)} "
                f"test samples, {self.n_features} features, {self.n_classes} classes)")


def read_idx(path) -> np.ndarray:
    """Read one IDX file (MNIST's format), raw or gzip-compressed.

    Parameters
    ----------
    path : str or os.PathLike
        The file; gzip compression is recognised by its magic bytes, not by the name.

    Returns
    -------
    numpy.ndarray
        The array with the file's shape, in native byte order.

    Raises
    ------
    ValueError
        If the file is not IDX: a bad header, an unknown type byte, or a size that does not
        match the header (truncated, or with trailing bytes).

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> from fusedmlp.cli.datasets import read_idx
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 2, 1]))
    >>> read_idx(path)
    array([7, 2, 1], dtype=uint8)
    """
    path = Path(path)
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt gzip data ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (it must start with two zero bytes, a type "
                         f"byte and a dimension count; got {data[:4]!r})")
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX type byte 0x{type_code:02x} (expected one of "
                         f"{', '.join(f'0x{c:02x}' for c in IDX_TYPES)})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, {ndim} dimensions "
                         f"need {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[type_code])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "followed by extra bytes"
        raise ValueError(f"{path}: IDX data of shape {shape} and type {dtype.name} needs "
                         f"{expected} bytes, the file has {len(data)} ({what})")
    values = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def _find_idx_file(directory: Path, role: str) -> Path:
    prefix, _ = _IDX_FILES[role]
    candidates = sorted(p for p in directory.iterdir()
                        if p.is_file() and p.name.startswith(prefix) and "idx" in p.name)
    if not candidates:
        raise FileNotFoundError(
            f"{directory}: no {role} file (expected a file named like {prefix}-idx"
            f"{_IDX_FILES[role][1]}-ubyte or {prefix}-idx{_IDX_FILES[role][1]}-ubyte.gz)"
        )
    # prefer the uncompressed file when both are there (it reads faster)
    candidates.sort(key=lambda p: p.suffix == ".gz")
    return candidates[0]


def load_idx_dataset(path=DEFAULT_FASHION_MNIST_DIR, *, name=None) -> Dataset:
    """Load an MNIST-style directory of IDX files (Fashion-MNIST, MNIST, KMNIST, ...).

    Parameters
    ----------
    path : str or os.PathLike
        A directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or ``.gz``.
        Debian's ``dataset-fashion-mnist`` installs them in
        ``/usr/share/datasets/fashion-mnist``.
    name : str, optional
        The dataset's name for messages; by default "Fashion-MNIST" when the directory's
        name says so, otherwise the directory.

    Returns
    -------
    Dataset
        Images flattened to rows of float32 pixels scaled to [0, 1]; int64 labels.

    Raises
    ------
    FileNotFoundError
        If `path` is not a directory or lacks one of the four files.
    ValueError
        If a file is not valid IDX or the files disagree (counts, image sizes, labels).

    Examples
    --------
    >>> from fusedmlp.cli.datasets import load_idx_dataset
    >>> data = load_idx_dataset("/usr/share/datasets/fashion-mnist")  # doctest: +SKIP
    >>> data                                                          # doctest: +SKIP
    Dataset('Fashion-MNIST': 60000 training and 10000 test samples, 784 features, 10 classes)
    """
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory}: not a directory (pass the directory holding the IDX files, e.g. "
            f"{DEFAULT_FASHION_MNIST_DIR} from the Debian package dataset-fashion-mnist)"
        )
    arrays = {role: read_idx(_find_idx_file(directory, role)) for role in _IDX_FILES}
    for role, (_, ndim) in _IDX_FILES.items():
        if arrays[role].ndim != ndim:
            raise ValueError(f"{directory}: the {role} must have {ndim} dimensions, got shape "
                             f"{arrays[role].shape}")
    splits = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split} images"], arrays[f"{split} labels"]
        if len(images) != len(labels):
            raise ValueError(f"{directory}: {len(images)} {split} images but {len(labels)} "
                             f"{split} labels")
        if labels.dtype.kind not in "iu":
            raise ValueError(f"{directory}: {split} labels must be integers, got {labels.dtype}")
        splits[split] = (_scaled_pixels(images), labels.astype(np.int64))
    if splits["train"][0].shape[1] != splits["test"][0].shape[1]:
        raise ValueError(f"{directory}: training images have {splits['train'][0].shape[1]} "
                         f"pixels, test images {splits['test'][0].shape[1]}")
    all_labels = np.concatenate([splits["train"][1], splits["test"][1]])
    if all_labels.size and all_labels.min() < 0:
        raise ValueError(f"{directory}: labels must be >= 0, got {all_labels.min()}")
    n_classes = int(all_labels.max()) + 1 if all_labels.size else 0
    fashion = "fashion" in directory.resolve().name.lower()
    if name is None:
        name = "Fashion-MNIST" if fashion else str(directory)
    class_names = (FASHION_MNIST_CLASSES if fashion and n_classes == 10
                   else tuple(str(i) for i in range(n_classes)))
    return Dataset(name, *splits["train"], *splits["test"], class_names=class_names)


def _scaled_pixels(images) -> np.ndarray:
    """Rows of float32 pixels; integer images are scaled by their type's maximum."""
    rows = images.reshape(len(images), -1)
    if rows.dtype.kind in "iu":
        return rows.astype(np.float32) / np.float32(np.iinfo(rows.dtype).max)
    return rows.astype(np.float32)


def load_digits_dataset(*, test_fraction=0.25, seed=0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images), split into training and test sets.

    Parameters
    ----------
    test_fraction : float
        The share of each class held out for testing (a stratified split).
    seed : int
        Seeds the split.

    Returns
    -------
    Dataset
        Pixels scaled from 0..16 to [0, 1] (float32), int64 labels.

    Raises
    ------
    ImportError
        If scikit-learn is not installed (the data ships with it).

    Examples
    --------
    >>> from fusedmlp.cli.datasets import load_digits_dataset
    >>> data = load_digits_dataset()
    >>> data.X_train.shape, data.X_test.shape
    ((1347, 64), (450, 64))
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "the digits dataset ships with scikit-learn, which is not installed: "
            "pip install scikit-learn (from a fusedmlp checkout: pip install \".[sklearn]\"), "
            "or use IDX files, e.g. Fashion-MNIST"
        ) from None
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):                  # stratified: the same share of each class
        members = rng.permutation(np.flatnonzero(y == label))
        test[members[:int(round(test_fraction * len(members)))]] = True
    X = (X / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    return Dataset("digits", X[~test], y[~test], X[test], y[test],
                   class_names=tuple(str(i) for i in range(10)))
