"""scipy.sparse inputs: the one place that turns a sparse ``X`` into what the compiled calls
take in place of a dense matrix.

The rule: a CSR matrix (``csr_matrix`` or ``csr_array``) is used as it is; any other
scipy.sparse format (CSC, COO, BSR, LIL, DOK, DIA) is converted to CSR once per call
(``fit``, ``train_step``, ``predict`` ...), as scikit-learn converts it. Then, also once:
the values are cast to the model's dtype and must be finite; unsorted column indices and
duplicate entries are put in canonical form (sorted, duplicates summed: the matrix means
what its dense form means) on a copy, never on the caller's matrix; indices become int32
(``n_features`` is within BLAS's 32-bit range) and the row pointers int64.

The result is a :class:`SparseX` (the compiled ``CSR`` of ``fusedmlp._network``, which
checks the structure itself), so the dense ``X`` is never formed: the first layer's
products run on the stored entries (``csrc/_sparse.pxd``).
"""

from __future__ import annotations

import sys

import numpy as np

from . import _kernels, _network
from ._validation import describe

__all__ = ["SparseX", "as_csr", "is_sparse"]


class SparseX(_network.CSR):
    """A canonical CSR matrix of the model's dtype, checked (see the module docstring).

    What training needs of a checked ``X``: ``len``, ``shape``, ``dtype``, ``ndim`` and row
    selection by an integer array (``X[rows]``, for validation splits and batches).
    """

    ndim = 2

    @property
    def dtype(self):
        return self.data.dtype

    def to_scipy(self):
        """The same matrix as a ``scipy.sparse.csr_matrix`` (sharing the arrays)."""
        return _to_scipy(self)

    def __getitem__(self, rows):
        taken = self.to_scipy()[np.asarray(rows)]
        return SparseX(taken.data, taken.indices.astype(np.int32, copy=False),
                       taken.indptr.astype(np.int64, copy=False), self.n_cols)

    def __repr__(self):
        return (f"<SparseX {self.n_rows}x{self.n_cols} {self.dtype.name}, "
                f"{self.nnz} stored entries>")


def _to_scipy(X: _network.CSR):
    import scipy.sparse

    return scipy.sparse.csr_matrix((X.data, X.indices, X.indptr), shape=X.shape)


def is_sparse(X) -> bool:
    """True for a scipy.sparse matrix or array, or an already checked :class:`SparseX`."""
    if isinstance(X, _network.CSR):
        return True
    sparse = sys.modules.get("scipy.sparse")     # not imported: X cannot be one of its types
    return sparse is not None and sparse.issparse(X)


def as_csr(X, name, dtype, n_features) -> _network.CSR:
    """`X` (scipy.sparse, 2-D, real) as a checked :class:`SparseX` of `dtype` with
    `n_features` columns (one already checked as it is); `name` is the argument named in
    error messages."""
    if isinstance(X, _network.CSR):
        if X.data.dtype == dtype and X.n_cols == n_features:
            return X
        X = _to_scipy(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got a sparse matrix "
                         f"of shape {X.shape}")
    if X.dtype.kind not in "biuf" or X.dtype == np.float16:
        raise TypeError(f"{name} must hold real numbers (float32/float64, integers or bools), "
                        f"got a sparse matrix of dtype {X.dtype}")
    if X.shape[1] != n_features:
        raise ValueError(f"{name} must have {n_features} columns (features), got a sparse "
                         f"matrix of shape {X.shape}")
    owned = X.format != "csr"
    if owned:
        X = X.tocsr()           # CSC, COO, ...: converted once (COO sums duplicates here)
    if not X.has_canonical_format:
        if not owned:
            X = X.copy()
        X.sum_duplicates()      # sorts the indices of each row and sums repeated entries
    data = np.ascontiguousarray(X.data, dtype=dtype)
    if not _kernels.all_finite(data):
        raise ValueError(f"{name} contains NaN or infinity (in the stored values of a "
                         f"sparse {describe(X)})")
    return SparseX(data, X.indices.astype(np.int32, copy=False),
                   X.indptr.astype(np.int64, copy=False), n_features)
