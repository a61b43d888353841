# Sparse inputs of the compiled calls (included by _network.pyx before class Network).
#
# CSR is a canonical CSR matrix as train_step, train_epoch (training and validation X) and
# predict take it in place of a dense X: fusedmlp/sparse.py converts any scipy.sparse X into
# one (once per fit or predict call) and this class checks, once, every fact the kernels of
# _sparse.pxd trust (types, lengths, indptr non-decreasing, column indices in range), so a
# malformed matrix is refused here and never read out of bounds.

cdef class CSR:
    """A CSR matrix (data, int32 indices, int64 indptr) of n_cols columns, checked.

    Built by fusedmlp.sparse.as_csr (which also sorts, sums duplicates and checks that the
    values are finite); keeps the three arrays alive.
    """
    cdef SparseRows rows
    cdef readonly object data, indices, indptr
    cdef readonly Py_ssize_t n_rows, n_cols
    cdef readonly bint is_double

    def __cinit__(self, data, indices, indptr, Py_ssize_t n_cols):
        cdef const int32_t[::1] ind = indices
        cdef const int64_t[::1] ptr = indptr
        cdef const float[::1] data_f
        cdef const double[::1] data_d
        cdef Py_ssize_t i, n_rows = ptr.shape[0] - 1, nnz = ind.shape[0]
        cdef int32_t bad = 0
        if n_rows < 0:
            raise ValueError("a CSR matrix needs an indptr of at least one entry")
        self.is_double = data.dtype.itemsize == 8
        if self.is_double:
            data_d = data
            self.rows.data = &data_d[0] if nnz else NULL
        else:
            data_f = data
            self.rows.data = &data_f[0] if nnz else NULL
        if len(data) != nnz or ptr[0] != 0 or ptr[n_rows] != nnz:
            raise ValueError("a CSR matrix needs len(data) == len(indices) == indptr[-1] "
                             "and indptr[0] == 0")
        with nogil:
            for i in range(n_rows):
                if ptr[i + 1] < ptr[i]:
                    bad = -1
            for i in range(nnz):
                if ind[i] < 0 or ind[i] >= n_cols:
                    bad = 1
        if bad:
            raise ValueError("a CSR matrix has decreasing indptr entries" if bad < 0 else
                             f"a CSR matrix has column indices outside [0, {n_cols})")
        self.rows.indices = &ind[0] if nnz else NULL
        self.rows.indptr = &ptr[0]
        self.rows.rows = NULL
        self.data, self.indices, self.indptr = data, indices, indptr
        self.n_rows, self.n_cols = n_rows, n_cols

    def __len__(self):
        return self.n_rows

    @property
    def shape(self):
        return (self.n_rows, self.n_cols)

    @property
    def nnz(self):
        return len(self.indices)


cdef const SparseRows* sparse_rows(object X, bint is_double, Py_ssize_t n_cols) except? NULL:
    """X's rows if X is a CSR of the network's dtype and width; NULL if X is not a CSR."""
    if not isinstance(X, CSR):
        return NULL
    if (<CSR>X).is_double != is_double or (<CSR>X).n_cols != n_cols:
        raise ValueError(f"a sparse X must be {'float64' if is_double else 'float32'} with "
                         f"{n_cols} columns")
    return &(<CSR>X).rows
