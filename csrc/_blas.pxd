# The one file that knows BLAS.
#
# scipy.linalg.cython_blas exposes the Fortran (column-major) BLAS that SciPy itself links,
# so the wheel links nothing of its own. Our arrays are row-major: a row-major matrix is the
# column-major view of its transpose, so row-major C = op(A) @ op(B) is computed as the
# column-major C^T = op(B)^T @ op(A)^T -- the operands swap places, nothing is copied.

from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb,
                      floating beta, floating* c, int ldc) noexcept nogil:
    """Row-major C[m, n] := alpha * op(A)[m, k] @ op(B)[k, n] + beta * C."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m == 0 or n == 0:
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda,
              &beta, c, &ldc)
