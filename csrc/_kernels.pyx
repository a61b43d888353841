# Thin def wrappers over the nogil kernels, one per kernel, for the array functions, the
# Dense layer and the tests.
#
# Each wrapper takes const memoryviews (read-only and memory-mapped inputs work), is written
# once over `floating` (float32 and float64), checks nothing the Python layer in
# src/fusedmlp/ has already checked, and releases the GIL around the arithmetic. An optional
# array is passed as None (a NULL pointer for the kernel), as in _network.pyx.
#
# Subnormals (fpenv.h): the layer and training kernels (dense, losses, optimiser update) run
# with flush-to-zero, like the whole-network calls in _network.pyx, saving the caller's
# floating-point control word on entry to the nogil block and restoring it at its end. The
# public array functions (activation, softmax) keep IEEE gradual underflow, as NumPy does:
# they are one pass over the data, where a flush would cost results (sigmoid(-100) in float32
# is a subnormal) and save no time worth having.
#
# The arithmetic itself lives in the .pxd files: _activations (activations, fused bias and
# derivative passes), _losses (softmax, log-softmax, cross-entropy, MSE), _optim (updates),
# _blas (row-major gemm). The whole-network step is in _network.pyx.

from cython cimport floating
from libc.stdint cimport int64_t, uint32_t

import numpy as np

from _blas cimport (gemm, gemm_bf16, fm_bf16_pack, fm_bf16_gemm_packed, fm_bf16_why_not,
                   blas_enter, blas_leave, load_blas)
from _activations cimport (apply_activation, bias_activation, activation_grad, select_isa,
                          fm_isa_name, fm_isa_supported)
from _losses cimport (softmax_rows, log_softmax_rows, softmax_cross_entropy,
                      mean_squared_error, binary_cross_entropy, poisson_deviance,
                      all_finite as _all_finite, targets_in_range as _in_range)
from _optim cimport optimizer_update as _optimizer_update, n_states
from fusedmlp._codes cimport BINARY_CROSS_ENTROPY, BAD_RANGE
from _fpenv cimport (fm_fpenv, fm_fpenv_get, fm_fpenv_enter, fm_fpenv_leave, FM_FPENV_HARDWARE,
                     FM_FPENV_FLUSH_BITS, FM_FPENV_STATUS_BITS)

BLAS = load_blas()      # this module's gemm backend (fusedmlp.show_config reports it)
select_isa()            # this module's table of elementwise loops (elementwise.h)


def switch_blas(str name):
    """Point this module's gemm (not _network's) at another backend: for the benchmarks,
    which compare backends in one process. Returns the backend's description."""
    global BLAS
    BLAS = load_blas(name)
    return BLAS


def isa():
    """The instruction-set variant of the elementwise loops in use ("avx512", "neon", ...)."""
    return fm_isa_name().decode()


def isa_supported():
    """The variants this build has and this CPU can run, worst first (FUSEDMLP_ISA's choices)."""
    return tuple(fm_isa_supported().decode().split(","))


def bf16_why_not():
    """Why this process cannot run the bfloat16 product ("" when it can: csrc/bf16_gemm.h)."""
    return fm_bf16_why_not().decode()


def matmul_bf16(const float[:, ::1] A, const float[:, ::1] B, float[:, ::1] C, bint trans_a,
                bint trans_b, bint packed=False):
    """C := bf16(op(A)) @ bf16(op(B)) summed in float32 (A, B as stored: op(A) = A.T when
    trans_a). packed: B goes through fm_bf16_pack first (op(A) not transposed), as a step's
    weights do. The Python layer checks the shapes and that the CPU runs it."""
    cdef int m = C.shape[0], n = C.shape[1]
    cdef int k = A.shape[0] if trans_a else A.shape[1]
    cdef Py_ssize_t ps = (k + 1) // 2 * 32
    cdef fm_fpenv saved
    cdef uint32_t[::1] words
    if m == 0 or n == 0:
        return
    if packed:
        words = np.zeros((n + 31) // 32 * ps + 1, dtype=np.uint32)
    with nogil:
        saved = fm_fpenv_enter()
        if packed:
            fm_bf16_pack(trans_b, k, &B[0, 0] if B.shape[0] and B.shape[1] else NULL,
                         <int>B.shape[1], 0, (k + 1) // 2, 0, n, &words[0], ps)
            fm_bf16_gemm_packed(trans_a, m, n, k, &A[0, 0] if A.shape[0] and A.shape[1]
                                else NULL, <int>A.shape[1], &words[0], ps, &C[0, 0], n)
        else:
            gemm_bf16(trans_a, trans_b, m, n, k, &A[0, 0] if A.shape[0] and A.shape[1]
                      else NULL, <int>A.shape[1], &B[0, 0] if B.shape[0] and B.shape[1]
                      else NULL, <int>B.shape[1], &C[0, 0], n)
        fm_fpenv_leave(saved)


def activation(const floating[::1] x, floating[::1] out, int kind):
    """out := f(x) for the activation numbered `kind` (out may be x)."""
    with nogil:
        apply_activation(&x[0] if x.shape[0] else NULL, &out[0] if out.shape[0] else NULL,
                         x.shape[0], kind)


def softmax(const floating[:, ::1] x, floating[:, ::1] out, bint log):
    """out := softmax (or log-softmax) of each row of x (out may be x)."""
    cdef Py_ssize_t m = x.shape[0], n = x.shape[1]
    if m == 0 or n == 0:
        return
    with nogil:
        if log:
            log_softmax_rows(&x[0, 0], &out[0, 0], m, n)
        else:
            softmax_rows(&x[0, 0], &out[0, 0], m, n)


def all_finite(const floating[::1] x):
    """True when x holds no NaN and no inf (comparisons only: no flushing needed)."""
    cdef bint finite = True
    if x.shape[0] != 0:
        with nogil:
            finite = _all_finite(&x[0], x.shape[0])
    return finite


def dense_forward(const floating[:, ::1] X, const floating[:, ::1] W, const floating[::1] b,
                  int kind, floating[:, ::1] out):
    """out := f(X @ W + b): one gemm, then one pass for the bias and the activation."""
    cdef fm_fpenv saved
    cdef int blas_saved
    cdef int m = X.shape[0], n_in = W.shape[0], n_out = W.shape[1]
    if m == 0:
        return
    with nogil:
        saved = fm_fpenv_enter()
        blas_saved = blas_enter()
        gemm(False, False, m, n_out, n_in, <floating>1, &X[0, 0], n_in, &W[0, 0], n_out,
             <floating>0, &out[0, 0], n_out)
        bias_activation(&out[0, 0], &b[0], m, n_out, kind)
        blas_leave(blas_saved)
        fm_fpenv_leave(saved)


def dense_backward(const floating[:, ::1] X, const floating[:, ::1] W,
                   const floating[:, ::1] A, const floating[:, ::1] dA, int kind,
                   floating[:, ::1] dZ, floating[:, ::1] dW, floating[::1] db,
                   floating[:, ::1] dX, double[::1] scratch):
    """Backward through A = f(X @ W + b).

    dZ := dA * f'(A) and db := sum_rows(dZ) in one pass (scratch: n_out float64 sums),
    dW := X^T @ dZ, and dX := dZ @ W^T unless dX is None (the first layer needs none).
    """
    cdef fm_fpenv saved
    cdef int blas_saved
    cdef int m = X.shape[0], n_in = W.shape[0], n_out = W.shape[1]
    cdef bint want_dX = dX is not None
    if m == 0:
        dW[:, :] = 0
        db[:] = 0
        return
    with nogil:
        saved = fm_fpenv_enter()
        blas_saved = blas_enter()
        activation_grad(&dA[0, 0], &A[0, 0], &dZ[0, 0], &scratch[0], &db[0], m, n_out, kind)
        gemm(True, False, n_in, n_out, m, <floating>1, &X[0, 0], n_in, &dZ[0, 0], n_out,
             <floating>0, &dW[0, 0], n_out)
        if want_dX:
            gemm(False, True, m, n_in, n_out, <floating>1, &dZ[0, 0], n_out, &W[0, 0], n_out,
                 <floating>0, &dX[0, 0], n_in)
        blas_leave(blas_saved)
        fm_fpenv_leave(saved)


def cross_entropy(const floating[:, ::1] logits, const int64_t[::1] labels,
                  const floating[:, ::1] targets, const floating[::1] weights,
                  double total_weight, floating[:, ::1] dlogits, double[::1] scratch):
    """Mean softmax cross-entropy from logits and its gradient, computed together.

    Give either labels (targets None) or targets (labels None); weights may be None;
    scratch holds one float64 per row.
    """
    cdef fm_fpenv saved
    cdef Py_ssize_t m = logits.shape[0], n = logits.shape[1]
    cdef double loss
    cdef const int64_t* y = NULL if labels is None else &labels[0]
    cdef const floating* t = NULL if targets is None else &targets[0, 0]
    cdef const floating* w = NULL if weights is None else &weights[0]
    if m == 0:
        return 0.0
    with nogil:
        saved = fm_fpenv_enter()
        loss = softmax_cross_entropy(&logits[0, 0], y, t, w, total_weight, &dlogits[0, 0],
                                     &scratch[0], m, n)
        fm_fpenv_leave(saved)
    return loss


def squared_error(const floating[:, ::1] pred, const floating[:, ::1] target,
                  const floating[::1] weights, double total_weight, floating[:, ::1] dpred):
    """Mean squared error over all elements and, in the same pass, its gradient."""
    cdef fm_fpenv saved
    cdef Py_ssize_t m = pred.shape[0], n = pred.shape[1]
    cdef double loss
    cdef const floating* w = NULL if weights is None else &weights[0]
    if m == 0 or n == 0:
        return 0.0
    with nogil:
        saved = fm_fpenv_enter()
        loss = mean_squared_error(&pred[0, 0], &target[0, 0], w, total_weight, &dpred[0, 0],
                                  m, n)
        fm_fpenv_leave(saved)
    return loss


def targets_in_range(const floating[::1] targets, bint at_most_one):
    """True when every target is >= 0 (and <= 1 when at_most_one): the domains of binary
    cross-entropy and of the Poisson deviance."""
    cdef bint ok = True
    if targets.shape[0] != 0:
        with nogil:
            ok = _in_range(&targets[0], targets.shape[0], at_most_one)
    return ok


def output_loss(int kind, const floating[:, ::1] z, const floating[:, ::1] targets,
                const floating[::1] weights, double total_weight, floating[:, ::1] dz):
    """(status, loss) of binary cross-entropy or the half Poisson deviance (`kind`, a
    fusedmlp._codes.Loss) of the output layer's pre-activation z against targets, with the
    gradient in dz; status is BAD_RANGE when a target lies outside the loss's domain
    (nothing is computed then)."""
    cdef Py_ssize_t m = z.shape[0], n = z.shape[1]
    cdef double loss = 0
    cdef const floating* w
    if m == 0 or n == 0:
        return 0, 0.0
    w = &weights[0] if weights.shape[0] else NULL
    if not _in_range(&targets[0, 0], m * n, kind == BINARY_CROSS_ENTROPY):
        return BAD_RANGE, 0.0
    with nogil:
        if kind == BINARY_CROSS_ENTROPY:
            loss = binary_cross_entropy(&z[0, 0], &targets[0, 0], w, total_weight, &dz[0, 0],
                                        m, n)
        else:
            loss = poisson_deviance(&z[0, 0], &targets[0, 0], w, total_weight, &dz[0, 0], m, n)
    return 0, loss


def optimizer_update(int kind, double[::1] hyper, floating[::1] params,
                     const floating[::1] grads, floating[::1] state_a, floating[::1] state_b,
                     Py_ssize_t n_decay):
    """One in-place optimiser step over a flat parameter buffer (see _optim.pxd); the state
    buffers the optimiser does not keep are None."""
    cdef fm_fpenv saved
    cdef floating* sa = NULL if state_a is None else &state_a[0]
    cdef floating* sb = NULL if state_b is None else &state_b[0]
    if params.shape[0] == 0:
        return
    with nogil:
        saved = fm_fpenv_enter()
        _optimizer_update(kind, &hyper[0], &params[0], &grads[0], sa, sb, params.shape[0],
                          n_decay)
        fm_fpenv_leave(saved)


def fp_control():
    """``(caller's word, word inside fusedmlp, flush bits, hardware flushes)``.

    The floating-point control register (MXCSR on x86, FPCR on AArch64; 0 elsewhere) without
    its sticky exception flags, read outside and inside an fm_fpenv_enter/leave bracket: the
    tests use it to check that every entry point leaves the caller's environment as it found it.
    """
    cdef fm_fpenv outside, inside, saved
    outside = fm_fpenv_get() & ~FM_FPENV_STATUS_BITS
    saved = fm_fpenv_enter()
    inside = fm_fpenv_get() & ~FM_FPENV_STATUS_BITS
    fm_fpenv_leave(saved)
    return int(outside), int(inside), int(FM_FPENV_FLUSH_BITS), bool(FM_FPENV_HARDWARE)


def gemm_repeat(const floating[:, ::1] A, const floating[:, ::1] B, floating[:, ::1] C,
                Py_ssize_t repeats):
    """C := A @ B, `repeats` times, through the gemm backend (the benchmarks' GEMM rates)."""
    cdef int m = A.shape[0], k = A.shape[1], n = B.shape[1], blas_saved
    cdef Py_ssize_t r
    cdef fm_fpenv saved
    with nogil:
        saved = fm_fpenv_enter()
        blas_saved = blas_enter()
        for r in range(repeats):
            gemm(False, False, m, n, k, <floating>1, &A[0, 0], k, &B[0, 0], n, <floating>0,
                 &C[0, 0], n)
        blas_leave(blas_saved)
        fm_fpenv_leave(saved)


def optimizer_states(int kind):
    """How many parameter-sized state buffers optimiser `kind` keeps (see _optim.pxd)."""
    return n_states(kind)
