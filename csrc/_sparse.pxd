# The sparse first layer: X (CSR rows) times a dense W, and the weight gradient X^T dZ,
# without ever forming a dense X. cimported by _network.pyx, whose forward() and backward()
# call these for layer 0 when the batch is sparse (the rest of the step is unchanged).
#
# A batch is m rows of one CSR matrix (data, indices, indptr): batch row i is matrix row
# rows[i] (rows NULL: row i), whose entries are data[indptr[r]:indptr[r+1]] at the columns
# indices[...]. The Python layer (fusedmlp/sparse.py) hands over a canonical matrix, checked
# once: data of the model's dtype and finite, int32 column indices in [0, n_in), sorted, no
# duplicates, int64 indptr non-decreasing. So these loops trust every index.
#
#   forward   Z[i, :] = sum_k data[k] * W[indices[k], :]       (row i's entries, in order)
#   gradient  dW[j, :] = sum over entries (i, j) of data[k] * dZ[i, :]   (a scatter into dW)
# Both accumulate in the model's dtype, like the dense path's GEMM (so the two agree to
# rounding, not bit for bit: the sums run in a different order).

from cython cimport floating
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memset
from libc.math cimport isfinite


cdef enum:
    TILE = 16                      # output columns per register tile (sparse_matmul)


cdef struct SparseRows:
    const void* data               # floating, the matrix's stored values
    const int32_t* indices         # their columns
    const int64_t* indptr          # n_rows + 1 offsets into data/indices
    const int64_t* rows            # the batch's rows of the matrix, or NULL: rows 0 .. m-1


cdef inline Py_ssize_t sparse_row(const SparseRows* sp, Py_ssize_t i) noexcept nogil:
    return sp.rows[i] if sp.rows != NULL else i


cdef inline SparseRows sparse_block(const SparseRows* sp, Py_ssize_t lo) noexcept nogil:
    """The batch's rows from lo on (a part's block: its row i is the batch's row lo + i)."""
    cdef SparseRows rows = sp[0]
    if rows.rows != NULL:
        rows.rows += lo
    else:
        rows.indptr += lo
    return rows


cdef inline bint sparse_all_finite(const SparseRows* sp, const floating* like,
                                   Py_ssize_t m) noexcept nogil:
    """The stored values of the batch's m rows are all finite (`like` only picks the type)."""
    cdef const floating* data = <const floating*>sp.data
    cdef Py_ssize_t i, k, r
    for i in range(m):
        r = sparse_row(sp, i)
        for k in range(sp.indptr[r], sp.indptr[r + 1]):
            if not isfinite(data[k]):
                return False
    return True


cdef inline void sparse_matmul(const SparseRows* sp, Py_ssize_t m, const floating* W,
                               Py_ssize_t n_out, floating* out) noexcept nogil:
    """out (m x n_out, written) := X_batch @ W for W (n_in x n_out) row-major."""
    cdef const floating* data = <const floating*>sp.data
    cdef const floating* w
    cdef floating* o
    cdef floating v
    cdef floating acc[TILE]
    cdef Py_ssize_t i, j, k, r, lo, width
    # TILE output columns at a time, summed in a local array the compiler keeps in vector
    # registers (out is not re-read per entry); the sums run in the same order either way
    for i in range(m):
        r = sparse_row(sp, i)
        o = out + i * n_out
        lo = 0
        while lo < n_out:
            width = min(<Py_ssize_t>TILE, n_out - lo)
            if width == TILE:
                for j in range(TILE):
                    acc[j] = 0
                for k in range(sp.indptr[r], sp.indptr[r + 1]):
                    v = data[k]
                    w = W + <Py_ssize_t>sp.indices[k] * n_out + lo
                    for j in range(TILE):
                        acc[j] += v * w[j]
                for j in range(TILE):
                    o[lo + j] = acc[j]
            else:
                for j in range(width):
                    o[lo + j] = 0
                for k in range(sp.indptr[r], sp.indptr[r + 1]):
                    v = data[k]
                    w = W + <Py_ssize_t>sp.indices[k] * n_out + lo
                    for j in range(width):
                        o[lo + j] += v * w[j]
            lo += TILE


cdef inline void sparse_weight_grad(const SparseRows* sp, Py_ssize_t m, const floating* dZ,
                                    Py_ssize_t n_out, Py_ssize_t k_lo, Py_ssize_t k_hi,
                                    floating* dW) noexcept nogil:
    """Rows [k_lo, k_hi) of dW (n_in x n_out; written) := X_batch^T @ dZ for dZ (m x n_out).

    Rows of dW whose feature is absent from the batch stay zero (the whole block is
    written, as the optimiser reads all of it). Each row of dW sums its batch rows' entries
    in the batch's order whatever [k_lo, k_hi) is (a CSR row holds each column at most
    once), so a part's block has the bits of the whole scatter."""
    cdef const floating* data = <const floating*>sp.data
    cdef const floating* d
    cdef floating* g
    cdef floating v
    cdef Py_ssize_t i, j, k, r, col
    memset(dW + k_lo * n_out, 0, (k_hi - k_lo) * n_out * sizeof(floating))
    for i in range(m):
        r = sparse_row(sp, i)
        d = dZ + i * n_out
        for k in range(sp.indptr[r], sp.indptr[r + 1]):
            col = sp.indices[k]
            if col < k_lo or col >= k_hi:
                continue
            v = data[k]
            g = dW + col * n_out
            for j in range(n_out):
                g[j] += v * d[j]
