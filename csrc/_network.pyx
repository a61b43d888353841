# The whole network in one call: a training step (forward, loss, backward, optimiser update)
# and batched inference, each with the GIL released and nothing allocated.
#
# Memory (all allocated by the Python layer, src/fusedmlp/model.py):
#   params, grads   one flat buffer each, [W_0 .. W_{L-1}, b_0 .. b_{L-1}], W_l row-major
#                   (n_l, n_{l+1}), at the offsets of fusedmlp.layout.ParamLayout; the Dense
#                   layers' W, b, dW, db are views into them
#   acts            the activations of every layer for the largest batch seen so far; a
#                   batch of m rows uses the first m rows of each layer's block
#   delta_a/_b      two ping-pong buffers for the backward pass (rows x widest layer)
#   scratch         float64 scratch: the bias gradients' sums (widest layer) and the
#                   softmax's row maxima (rows), max(widest layer, rows) entries
#
# Training step for a batch X (m x n_0):
#   forward   A_l = f_l(A_{l-1} @ W_l + b_l)             gemm + one fused bias/activation pass
#   loss      dZ_L = d loss / d A_L                       exponentials, then one pass per row
#   backward  dZ_l = dA_l * f_l'(A_l), db_l = sum(dZ_l)   one fused pass (in place)
#             dW_l = A_{l-1}^T @ dZ_l                      gemm
#             dA_{l-1} = dZ_l @ W_l^T                      gemm, skipped for the input layer
#   update    one loop over the flat buffers (_optim.pxd)
# The inputs are checked (finite, labels in range) before anything is written, and the update
# is skipped when the loss is not finite, so a refused step leaves the model as it was.
#
# Training epoch (train_epoch): the steps of one pass over the training set in one call.
# Python draws the shuffled order (so results are those of a loop of train_step calls on
# the same batches, bit for bit); the core gathers each batch's rows (X, labels or targets,
# weights) into gather buffers, runs step() on them and sums the loss (times the batch's
# rows) and the correct predictions, read from the logits the step's forward pass left in
# the workspace (the accuracy of the batches as they were trained). A step that fails stops
# the epoch with the model as after the last good step, and the failing row is reported.
# Validation data, when given, is then scored through the inference path (infer), exactly
# as MLP.loss and MLP.score would.
#
# Every entry point runs its arithmetic with subnormals flushed (fpenv.h): set on entry to the
# nogil block, restored before it ends, so the caller's floating-point environment is never
# changed (errors are status codes, reported after the restore).
#
# Entry points take plain objects and read their data pointers through the buffer protocol,
# which also refuses non-contiguous, read-only-when-written or wrong-dtype buffers as a last
# line of defence: a whole step costs a few microseconds, so per-call overhead matters here.

from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyBUF_C_CONTIGUOUS,
                             PyBUF_WRITABLE, PyBUF_FORMAT)
from cython cimport floating
from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t, INT64_MAX
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, memset
from libc.math cimport isfinite, fabs

from _blas cimport (gemm, inference_gemm, step_forward_gemm, fm_small_gemm_cpu,
                   fm_small_gemm_variant, fm_bf16_cpu, cpu_report, gemm_bf16, fm_bf16_pack,
                   fm_bf16_gemm_packed, fm_bf16_mkl, fm_bf16_convert, fm_bf16_gemm_b16,
                   blas_enter, blas_leave, load_blas)
from _activations cimport bias_activation, activation_grad, bias_gradient, select_isa
from _losses cimport (all_finite, softmax_rows, log_softmax_rows, softmax_cross_entropy,
                      mean_squared_error, binary_cross_entropy, poisson_deviance,
                      sigmoid_outputs, exp_outputs, targets_in_range)
from _optim cimport (UpdateStep, optimizer_prepare, optimizer_apply, n_states,
                    fm_sum_sq_f, fm_sum_sq_d, l1_penalty)
from fusedmlp._codes cimport (H_SIZE, H_WEIGHT_DECAY, H_EPS, OK, BAD_INPUT, BAD_LABEL,
                             BAD_TARGET, BAD_LOSS, BAD_OUTPUT, BAD_RANGE, BAD_COUNTER, OPT_NONE,
                             SOFTMAX_CROSS_ENTROPY, MEAN_SQUARED_ERROR, BINARY_CROSS_ENTROPY,
                             POISSON_DEVIANCE, SCORES, PROBABILITIES, LOG_PROBABILITIES,
                             ACT_IDENTITY)
from _fpenv cimport fm_fpenv, fm_fpenv_enter, fm_fpenv_leave
from _dropout cimport dropout_on, dropout_forward, dropout_backward
from _schedule cimport scheduled_rate
from fusedmlp._codes cimport H_LR, H_CLIP_NORM, H_T, S_STEP, S_SIZE, SOFT_TOLERANCE, MAX_STEPS
from _sparse cimport (SparseRows, sparse_block, sparse_all_finite, sparse_matmul,
                      sparse_weight_grad)

BLAS = load_blas()      # this module's gemm backend (fusedmlp.show_config reports it)
select_isa()            # this module's table of elementwise loops (elementwise.h)

# How many threads are inside a compiled step or inference call right now, and the most
# ever seen at once: the tests read these to prove that the GIL is released (two threads
# inside at the same time) without depending on timing.
cdef extern from *:
    """
    #include "fm_atomic.h"
    static int fusedmlp_inside = 0, fusedmlp_most_inside = 0;
    static void fusedmlp_enter(void) {
        int now = fm_add_int(&fusedmlp_inside, 1, FM_SEQ_CST);
        int most = fm_load_int(&fusedmlp_most_inside, FM_SEQ_CST);
        while (now > most && !fm_cas_int(&fusedmlp_most_inside, &most, now, FM_SEQ_CST)) {}
    }
    static void fusedmlp_leave(void) { fm_add_int(&fusedmlp_inside, -1, FM_SEQ_CST); }
    """
    void fusedmlp_enter() nogil
    void fusedmlp_leave() nogil
    int fusedmlp_most_inside


def own_gemm():
    """Whether inference's float32 products use fusedmlp's own kernel here (small_gemm.h;
    FUSEDMLP_OWN_GEMM=0 turns it off)."""
    return bool(fm_small_gemm_cpu())


def kernel_variants():
    """The variant each kernel family of this module runs, the CPU features the probe found
    (cpu.h) and FUSEDMLP_ISA as it read it: show_config's ``kernels`` entry."""
    return cpu_report(fm_small_gemm_variant().decode(), fm_bf16_cpu())


def most_concurrent_calls(bint reset=False):
    """The most threads seen inside compiled steps/inference at once (optionally reset)."""
    global fusedmlp_most_inside
    cdef int most = fusedmlp_most_inside
    if reset:
        fusedmlp_most_inside = 0
    return most


cdef char* address(object array, char kind, bint writable, Py_ssize_t rows=-1,
                   Py_ssize_t cols=-1) except? NULL:
    """Data pointer of a C-contiguous buffer of float32 ('f'), float64 ('d') or int64 ('q').

    With rows >= 0 the buffer must be 1-D of that length (cols < 0) or 2-D of shape
    (rows, cols); None gives NULL. Anything else raises TypeError or ValueError.
    """
    cdef Py_buffer view
    cdef char* data
    cdef char found
    cdef bint shape_ok = True
    if array is None:
        return NULL
    PyObject_GetBuffer(array, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT
                       | (PyBUF_WRITABLE if writable else 0))
    # One type code, optionally after a native/little-endian prefix ('Zf' is complex64).
    found = view.format[0]
    if (found == b'@' or found == b'=' or found == b'<') and view.format[1] != 0:
        found = view.format[1] if view.format[2] == 0 else 0
    elif view.format[1] != 0:
        found = 0
    if found == b'l' or found == b'q':
        found = b'q' if view.itemsize == 8 else 0
    elif found == b'f' or found == b'd':
        found = found if view.itemsize == (4 if found == b'f' else 8) else 0
    if rows >= 0:
        if cols < 0:
            shape_ok = view.ndim == 1 and view.shape[0] == rows
        else:
            shape_ok = view.ndim == 2 and view.shape[0] == rows and view.shape[1] == cols
    data = <char*>view.buf
    PyBuffer_Release(&view)
    if found != kind:
        raise TypeError(f"expected a buffer of type code {chr(kind)!r}")
    if not shape_ok:
        raise ValueError(f"a buffer has the wrong shape (expected {rows} x {cols})")
    return data


cdef struct Net:
    int n_layers
    int loss
    Py_ssize_t* sizes          # n_layers + 1
    int* activations           # n_layers
    Py_ssize_t* w_off          # offsets of W_l in params/grads
    Py_ssize_t* b_off          # offsets of b_l in params/grads
    Py_ssize_t* a_off          # offsets of A_l in acts, in rows of max_batch
    Py_ssize_t n_params, n_weights, max_width, max_batch
    void* params
    void* grads
    void* acts
    void* delta_a
    void* delta_b
    double* scratch
    bint is_double
    int n_threads              # parts per step/inference: > 0 as set; 0 "auto" (_parallel.pxi)
    bint auto_parallel         # "auto" may use more than one thread (not with SciPy's BLAS)
    int max_parts              # part_scratch holds max_parts x max_width doubles
    double* part_scratch
    void* partials             # n_partials gradient-sized buffers for batch-split parts
    int n_partials
    const double* dropout      # n_layers dropout rates, or NULL: none (_dropout.pxd)
    int64_t* dropout_state     # [seed, step]: the key of the masks (advanced per update)
    bint bf16                  # compute_dtype="bfloat16": products through gemm_bf16
    uint32_t* bf16_w           # the weights packed for it (fm_bf16_pack): W_l, W_l^T per layer
    int64_t* bf16_off          # 2 per layer: word offset of W_l's and W_l^T's pairs (-1: none)
    bint bf16_packed           # bf16_w holds the weights as they are now (inside one step)
    bint sparse                # the training step now (or the next, for step_plan) has a
                               # sparse X: its first layer splits by rows only


cdef inline Py_ssize_t panel_words(Py_ssize_t k) noexcept nogil:
    """Words between the 32-column panels of a packed k-row operand (bf16_gemm.h)."""
    return (k + 1) // 2 * 32


cdef inline void net_gemm(const Net* net, bint trans_a, bint trans_b, int m, int n, int k,
                          floating alpha, const floating* a, int lda, const floating* b,
                          int ldb, floating beta, floating* c, int ldc) noexcept nogil:
    """gemm in the network's compute dtype: float32 models with net.bf16 round the operands
    to bfloat16 (_blas.gemm_bf16; every product of a step has alpha 1 and beta 0)."""
    if floating is float:
        if net.bf16:
            gemm_bf16(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)
            return
    gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


cdef inline void weight_gemm(const Net* net, int l, bint trans_w, int m, int n, int k,
                             const floating* a, int lda, Py_ssize_t row, Py_ssize_t col,
                             floating* c, int ldc) noexcept nogil:
    """C[m, n] := A[m, k] @ B for B the block of W_l from (row, col) on (the forward's
    X @ W_l), or with trans_w of W_l^T (the backward's dZ @ W_l^T: B[i, j] = W_l[row + i, j],
    col 0). While the step's packed weights are current (bf16_packed), bf16 models read B
    from them: the same bits as converting that block of W_l again, for every product and
    every part -- with the own kernel when the block starts a panel (fm_bf16_pack's pairs of
    rows and 32-column panels), with MKL's product (_blas._bf16_backend) from W_l in bf16 as
    it is laid out."""
    cdef Py_ssize_t n_in = net.sizes[l], n_out = net.sizes[l + 1]
    cdef const floating* w = <const floating*>net.params + net.w_off[l] + row * n_out + col
    cdef Py_ssize_t ps
    if floating is float:
        if net.bf16 and net.bf16_packed:
            if fm_bf16_mkl():
                fm_bf16_gemm_b16(False, trans_w, m, n, k, a, lda, <const uint16_t*>net.bf16_w
                                 + net.w_off[l] + row * n_out + col, <int>n_out, c, ldc)
                return
            if not trans_w and row % 2 == 0 and col % 32 == 0:
                ps = panel_words(n_in)
                fm_bf16_gemm_packed(False, m, n, k, a, lda, net.bf16_w + net.bf16_off[2 * l]
                                    + col // 32 * ps + row // 2 * 32, ps, c, ldc)
                return
            if trans_w and col == 0 and row % 32 == 0 and net.bf16_off[2 * l + 1] >= 0:
                ps = panel_words(n_out)
                fm_bf16_gemm_packed(False, m, n, k, a, lda, net.bf16_w + net.bf16_off[2 * l + 1]
                                    + row // 32 * ps, ps, c, ldc)
                return
    net_gemm(net, False, trans_w, m, n, k, <floating>1, a, lda, w, <int>n_out, <floating>0, c,
             ldc)


cdef void bf16_pack_part(void* ctx, int part, int n_parts) noexcept nogil:
    """Part `part` of packing every W_l (pairs of its rows) and W_l^T (its rows) into bf16_w;
    for MKL's product, of converting the rows of every W_l (bf16 in W_l's own layout)."""
    cdef Net* net = <Net*>ctx
    cdef const float* w
    cdef Py_ssize_t n_in, n_out, lo, hi
    cdef int l
    for l in range(net.n_layers):
        n_in = net.sizes[l]
        n_out = net.sizes[l + 1]
        w = <const float*>net.params + net.w_off[l]
        if fm_bf16_mkl():
            block(n_in, part, n_parts, &lo, &hi)
            if hi > lo:
                fm_bf16_convert((hi - lo) * n_out, w + lo * n_out,
                                <uint16_t*>net.bf16_w + net.w_off[l] + lo * n_out)
            continue
        block((n_in + 1) // 2, part, n_parts, &lo, &hi)
        if hi > lo:
            fm_bf16_pack(False, <int>n_in, w, <int>n_out, <int>lo, <int>hi, 0, <int>n_out,
                         net.bf16_w + net.bf16_off[2 * l], panel_words(n_in))
        block(n_in, part, n_parts, &lo, &hi)
        if hi > lo and net.bf16_off[2 * l + 1] >= 0:
            fm_bf16_pack(True, <int>n_out, w, <int>n_out, 0, <int>((n_out + 1) // 2), <int>lo,
                         <int>hi, net.bf16_w + net.bf16_off[2 * l + 1], panel_words(n_out))


cdef inline void layer_epilogue(const Net* net, int l, floating* out, Py_ssize_t r_lo,
                                Py_ssize_t r_hi, Py_ssize_t c_lo, Py_ssize_t c_hi,
                                bint training) noexcept nogil:
    """The bias + activation pass of layer l, and in training its dropout, on the block
    [r_lo, r_hi) x [c_lo, c_hi) of its output out (m x n_l+1, row-major, out at row 0):
    out := f_l(out + b_l). Every forward pass (serial, each split, inference) ends each
    block of a layer here; dropout is drawn for whole rows, so a dropout layer's blocks
    are never column blocks (layer_part, split_inner)."""
    cdef Py_ssize_t n_out = net.sizes[l + 1], i
    cdef const floating* b = <const floating*>net.params + net.b_off[l]
    if c_lo == 0 and c_hi == n_out:
        bias_activation(out + r_lo * n_out, b, r_hi - r_lo, n_out, net.activations[l])
        if training:
            dropout_forward(net.dropout, net.dropout_state, l, out + r_lo * n_out, r_lo,
                            r_hi - r_lo, n_out)
    else:
        for i in range(r_lo, r_hi):
            bias_activation(out + i * n_out + c_lo, b + c_lo, 1, c_hi - c_lo,
                            net.activations[l])


cdef inline void layer_block(const Net* net, int l, const floating* inp, floating* out,
                             Py_ssize_t r_lo, Py_ssize_t r_hi, Py_ssize_t c_lo, Py_ssize_t c_hi,
                             bint training, bint gemm_only,
                             const SparseRows* sp=NULL) noexcept nogil:
    """The one forward pass of layer l, on the block [r_lo, r_hi) x [c_lo, c_hi) of its
    output: out[rows, cols] := f_l(inp[rows] @ W_l[:, cols] + b_l[cols]), then dropout in
    training (inp, m x n_l, and out point at row 0 of the batch). The product: the CSR rows
    sp for layer 0 (whole rows only), inference_gemm outside training (float32: the own
    kernel), in training step_forward_gemm (float32: the own kernel up to its measured
    cut-over in rows), else weight_gemm (bf16 models: the step's packed weights). gemm_only: the
    product alone (the GEMM floor)."""
    cdef Py_ssize_t n_in = net.sizes[l], n_out = net.sizes[l + 1]
    cdef const floating* w = <const floating*>net.params + net.w_off[l]
    cdef SparseRows rows
    if r_hi <= r_lo or c_hi <= c_lo:
        return
    if l == 0 and sp != NULL:
        rows = sparse_block(sp, r_lo)  # this block's rows of the matrix
        sparse_matmul(&rows, r_hi - r_lo, w, n_out, out + r_lo * n_out)
    elif not training and not net.bf16:
        inference_gemm(<int>(r_hi - r_lo), <int>(c_hi - c_lo), <int>n_in, inp + r_lo * n_in,
                       <int>n_in, w + c_lo, <int>n_out, out + r_lo * n_out + c_lo, <int>n_out,
                       <int>n_out)
    elif net.bf16 or not step_forward_gemm(<int>(r_hi - r_lo), <int>(c_hi - c_lo), <int>n_in,
                                           inp + r_lo * n_in, <int>n_in, w + c_lo, <int>n_out,
                                           out + r_lo * n_out + c_lo, <int>n_out, <int>n_out):
        weight_gemm(net, l, False, <int>(r_hi - r_lo), <int>(c_hi - c_lo), <int>n_in,
                    inp + r_lo * n_in, <int>n_in, 0, c_lo, out + r_lo * n_out + c_lo,
                    <int>n_out)
    if not gemm_only:
        layer_epilogue(net, l, out, r_lo, r_hi, c_lo, c_hi, training)


cdef void forward(const Net* net, const floating* X, Py_ssize_t m, floating* buffers,
                  Py_ssize_t block_size, floating* last, bint gemm_only,
                  const SparseRows* sp=NULL) noexcept nogil:
    """Inference of m rows, one part (layer_block on each layer's whole output): the hidden
    layers ping-pong between buffers and buffers + block_size, the last layer writes into
    `last`. With sp the rows are sparse (X unused). gemm_only skips the bias/activation
    passes (the GEMM floor of the benchmarks). (Training runs forward_rows or the split
    layers of _parallel.pxi: parallel_forward.)"""
    cdef int l
    cdef const floating* inp = X
    cdef floating* out
    for l in range(net.n_layers):
        out = last if l == net.n_layers - 1 else buffers + (l % 2) * block_size
        layer_block(net, l, inp, out, 0, m, 0, net.sizes[l + 1], False, gemm_only, sp)
        inp = out


include "_parallel.pxi"


cdef inline int targets_status(const Net* net, Py_ssize_t m, const int64_t* labels,
                               const floating* targets) noexcept nogil:
    """step()'s checks of the labels or targets: OK or the status naming the problem."""
    cdef Py_ssize_t i, n_classes = net.sizes[net.n_layers]
    if labels != NULL:
        for i in range(m):
            if labels[i] < 0 or labels[i] >= n_classes:
                return BAD_LABEL
    if targets != NULL and not all_finite(targets, m * n_classes):
        return BAD_TARGET
    if ((net.loss == BINARY_CROSS_ENTROPY or net.loss == POISSON_DEVIANCE)
            and not targets_in_range(targets, m * n_classes, net.loss == BINARY_CROSS_ENTROPY)):
        return BAD_RANGE
    if (net.loss == SOFTMAX_CROSS_ENTROPY and targets != NULL
            and not soft_targets_ok(targets, m, n_classes)):
        return BAD_RANGE
    return OK


cdef bint soft_targets_ok(const floating* targets, Py_ssize_t m, Py_ssize_t n) noexcept nogil:
    """Rows of class probabilities, as fusedmlp._validation.check_distribution decides: every
    entry >= 0 and every row's float64 sum (NumPy's pairwise order) within SOFT_TOLERANCE
    of 1 (targets finite)."""
    cdef Py_ssize_t i
    if not targets_in_range(targets, m * n, False):
        return False
    for i in range(m):
        if fabs(pairwise_sum(targets + i * n, n) - 1.0) > SOFT_TOLERANCE:
            return False
    return True


cdef int step(Net* net, const floating* X, Py_ssize_t m, const int64_t* labels,
              const floating* targets, const floating* weights, double total_weight,
              int opt_kind, double* hyper, floating* state_a, floating* state_b,
              double* loss_out, const SparseRows* sp=NULL) noexcept nogil:
    """One training step of m rows: X dense, or (X NULL) the sparse rows sp."""
    cdef int L = net.n_layers
    cdef Py_ssize_t n_classes = net.sizes[L]
    cdef floating* acts = <floating*>net.acts
    cdef floating* d = <floating*>net.delta_a
    cdef floating* out_block = acts + net.a_off[L - 1] * net.max_batch
    cdef double loss
    cdef fm_team team
    cdef int status = OK
    cdef int n_parts
    cdef Work spec                     # the step, as the passes (_parallel.pxi) read it
    net.sparse = sp != NULL            # (read by the split predicates of this step)
    n_parts = step_parts(net, m)
    memset(&spec, 0, sizeof(Work))
    spec.net = net
    spec.X = X
    spec.sp = sp
    spec.m = m
    spec.n_parts = n_parts
    spec.opt_kind = opt_kind
    spec.hyper = hyper
    spec.state_a = state_a
    spec.state_b = state_b
    if opt_kind != OPT_NONE and (hyper[H_T] >= MAX_STEPS or (
            net.dropout != NULL and net.dropout_state[1] >= INT64_MAX)):
        return BAD_COUNTER              # the update would count past the counter's range
    fm_team_begin(&team, n_parts)
    if net.bf16 and net.bf16_w != NULL and (n_parts > 1 or fm_bf16_mkl()):
        # the weights as they are now (the last update, or whatever the caller wrote since),
        # converted once for all the products and parts of this step. Not for one part of
        # fusedmlp's kernel: its products convert each B block just before use, while it is
        # in cache, and measured 1-4 % faster than a separate packing pass (docs/bf16.md)
        if n_parts > 1:
            fm_team_run(&team, bf16_pack_part, net, n_parts)
        else:
            bf16_pack_part(net, 0, 1)
        net.bf16_packed = True
    # each part checks that the block of X it reads first is finite
    if not parallel_forward(&team, &spec):
        status = BAD_INPUT
    if status == OK:
        status = targets_status(net, m, labels, targets)
    if status != OK:
        net.bf16_packed = False
        fm_team_end(&team)
        return status
    if net.loss == SOFTMAX_CROSS_ENTROPY:
        loss = softmax_cross_entropy(out_block, labels, targets, weights, total_weight, d,
                                     net.scratch, m, n_classes)
    elif net.loss == MEAN_SQUARED_ERROR:
        loss = mean_squared_error(out_block, targets, weights, total_weight, d, m, n_classes)
    elif net.loss == BINARY_CROSS_ENTROPY:
        loss = binary_cross_entropy(out_block, targets, weights, total_weight, d, m, n_classes)
    else:
        loss = poisson_deviance(out_block, targets, weights, total_weight, d, m, n_classes)
    loss_out[0] = loss
    if not isfinite(loss):
        net.bf16_packed = False
        fm_team_end(&team)
        return BAD_LOSS
    parallel_backward(&team, &spec)
    net.bf16_packed = False                # the update changed the weights
    fm_team_end(&team)
    if net.dropout != NULL and opt_kind != OPT_NONE:
        net.dropout_state[1] += 1          # the next update draws fresh masks
    return OK


cdef void matmuls(Net* net, const floating* X, Py_ssize_t m) noexcept nogil:
    """The gemm calls of a one-part step(), the same calls in the same order, and nothing
    else (the passes with gemm_only, no update)."""
    cdef Work spec
    cdef fm_team team
    memset(&spec, 0, sizeof(Work))
    spec.net = net
    spec.X = X
    spec.m = m
    spec.n_parts = 1
    spec.opt_kind = OPT_NONE
    spec.gemm_only = True
    net.sparse = False
    fm_team_begin(&team, 1)
    parallel_forward(&team, &spec)
    parallel_backward(&team, &spec)
    fm_team_end(&team)


cdef int infer(const Net* net, const floating* X, Py_ssize_t m, floating* out,
               floating* buffers, Py_ssize_t chunk, int output, int n_parts=1,
               const SparseRows* sp=NULL) noexcept nogil:
    """Inference of m rows, chunk rows at a time, split into n_parts parts (buffers: 2 x chunk
    x widest layer, shared by the parts: parallel_infer). Sparse rows (sp, X unused) run as
    one part."""
    cdef SparseRows part
    cdef Py_ssize_t start = 0, n_out = net.sizes[net.n_layers]
    if not (sparse_all_finite(sp, X, m) if sp != NULL else all_finite(X, m * net.sizes[0])):
        return BAD_INPUT
    if sp != NULL:
        while start < m:
            part = sparse_block(sp, start)
            forward(net, X, min(chunk, m - start), buffers, chunk * net.max_width,
                    out + start * n_out, False, &part)
            start += chunk
        output_activation(net, out, m, output)
    elif n_parts <= 1:
        infer_rows(net, X, 0, m, out, buffers, chunk, output)
    else:
        parallel_infer(net, X, m, out, buffers, chunk, output, n_parts)
    # X is finite, so non-finite outputs mean NaN/inf parameters (or an overflow): never a
    # prediction. One pass over the outputs; checking every weight per call would not be cheap.
    if not all_finite(out, m * net.sizes[net.n_layers]):
        return BAD_OUTPUT
    return OK


cdef double pairwise_sum(const floating* x, Py_ssize_t n) noexcept nogil:
    """sum(x[0:n]) in float64 by NumPy's pairwise summation (its add.reduce), so a batch's
    total sample weight is the very number ``weights.sum(dtype=np.float64)`` gives."""
    cdef double r[8]
    cdef double total
    cdef Py_ssize_t i, j, half
    if n < 8:
        total = 0
        for i in range(n):
            total += x[i]
        return total
    if n <= 128:
        for j in range(8):
            r[j] = x[j]
        i = 8
        while i < n - n % 8:
            for j in range(8):
                r[j] += x[i + j]
            i += 8
        total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        while i < n:
            total += x[i]
            i += 1
        return total
    half = n // 2
    half -= half % 8
    return pairwise_sum(x, half) + pairwise_sum(x + half, n - half)


cdef inline Py_ssize_t argmax_row(const floating* z, Py_ssize_t n) noexcept nogil:
    """Index of the first maximum of z[0:n] (np.argmax for finite rows)."""
    cdef Py_ssize_t j, best = 0
    for j in range(1, n):
        if z[j] > z[best]:
            best = j
    return best


cdef Py_ssize_t count_correct(const floating* scores, const int64_t* labels,
                              const floating* targets, Py_ssize_t m, Py_ssize_t n) noexcept nogil:
    """Rows whose argmax of scores is the label (or the argmax of the target row)."""
    cdef Py_ssize_t i, correct = 0, truth
    for i in range(m):
        truth = labels[i] if labels != NULL else argmax_row(targets + i * n, n)
        correct += argmax_row(scores + i * n, n) == truth
    return correct


cdef Py_ssize_t count_correct_logistic(const floating* logits, const floating* targets,
                                      Py_ssize_t m, Py_ssize_t n) noexcept nogil:
    """Rows whose every logistic output is right: logit > 0 exactly where the target > 1/2
    (all labels of a row, scikit-learn's multilabel accuracy)."""
    cdef Py_ssize_t i, j, correct = 0
    cdef bint right
    for i in range(m):
        right = True
        for j in range(n):
            if (logits[i * n + j] > 0) != (targets[i * n + j] > 0.5):
                right = False
                break
        correct += right
    return correct


cdef void gather(const char* source, const int64_t* rows, Py_ssize_t count, Py_ssize_t row_bytes,
                 char* out) noexcept nogil:
    """out[i] := source[rows[i]] for rows of row_bytes bytes."""
    cdef Py_ssize_t i
    for i in range(count):
        memcpy(out + i * row_bytes, source + rows[i] * row_bytes, row_bytes)


include "_signals.pxi"


cdef struct EpochData:
    const void* X                  # n x n_0 training rows
    const int64_t* labels          # n, or NULL
    const void* targets            # n x n_L, or NULL
    const void* weights            # n, or NULL
    const int64_t* order           # the rows in training order
    void* X_batch                  # gather buffers for one batch
    int64_t* labels_batch
    void* targets_batch
    void* weights_batch
    const double* rule             # scikit-learn's per-batch L2 rule, or NULL (epoch())
    Py_ssize_t rule_size
    double* schedule               # a per-step learning-rate schedule, or NULL (_schedule.pxd)
    const SparseRows* sparse       # X as CSR rows (X and X_batch NULL), or NULL
    Signals* signals               # where the epoch looks for signals (_signals.pxi), or NULL


cdef inline double rule_before(const Net* net, const EpochData* data, Py_ssize_t k,
                               double total, double* hyper, const floating* params) noexcept nogil:
    """scikit-learn's per-batch rule (epoch()) before the k-th step of a call, for a batch
    of total sample weight `total` (> 0): the weight decay alpha / (scale total), Adam's
    k-th epsilon; returns the L2 term ||W||^2 x (0.5 alpha / total) of the weights now."""
    cdef const double* rule = data.rule
    hyper[H_WEIGHT_DECAY] = rule[0] / (rule[1] * total)
    if data.rule_size > 4:
        hyper[H_EPS] = rule[4 + k]
    if not rule[0] > 0:
        return 0
    if floating is float:
        return fm_sum_sq_f(params, net.n_weights) * (rule[2] / total)
    else:
        return fm_sum_sq_d(params, net.n_weights) * (rule[2] / total)


cdef int epoch(Net* net, const EpochData* data, Py_ssize_t first, Py_ssize_t stop,
               Py_ssize_t batch_size, int opt_kind, double* hyper, floating* state_a,
               floating* state_b, double* loss_sum, Py_ssize_t* correct,
               Py_ssize_t* failed_row) noexcept nogil:
    """Train on order[first:stop] in batches of batch_size rows; returns a status.

    loss_sum and correct are accumulated (batch loss x rows; correct predictions for
    softmax outputs); on a failure failed_row is the failing batch's first position.
    A batch whose sample weights sum to 0 carries no gradient: it is scored but not trained on.

    With data.rule = [alpha, scale, 0.5 alpha, loss factor, (epsilons)] (the scikit-learn
    estimators), each batch of total sample weight s instead: is skipped when s is 0; sets
    the weight decay to alpha / (scale s) (scikit-learn's L2 term) and, when there are
    epsilons, the epsilon to the k-th for the k-th step of this call (Adam's epsilon
    schedule); and reports loss factor x loss + ||W||^2 x (0.5 alpha / s), the squared
    weights read before the update (scikit-learn's loss with its penalty). This is the
    rule's one definition (rule_before and the loss below); tests/test_epoch.py keeps a
    Python oracle of it.

    With data.schedule, each step first sets the learning rate hyper[H_LR] to the schedule's
    rate (_schedule.pxd) and, once trained, advances the schedule's step count.
    """
    cdef Py_ssize_t lo = first, m, n_in = net.sizes[0], n_out = net.sizes[net.n_layers]
    cdef Py_ssize_t size = sizeof(floating)
    cdef const int64_t* rows
    cdef floating* weights
    cdef const int64_t* labels = NULL
    cdef const floating* targets = NULL
    cdef double total, loss = 0, penalty, penalty_l1
    cdef int status, kind
    cdef Py_ssize_t k = 0
    cdef const double* rule = data.rule
    cdef floating* out_block = (<floating*>net.acts
                                + net.a_off[net.n_layers - 1] * net.max_batch)
    cdef SparseRows batch_rows     # a sparse batch: the matrix, with this batch's rows
    cdef const SparseRows* sp = NULL
    net.sparse = data.sparse != NULL   # (parallel_gather's split is the step's)
    if data.sparse != NULL:
        batch_rows = data.sparse[0]
        sp = &batch_rows
    while lo < stop:
        m = min(batch_size, stop - lo)
        rows = data.order + lo
        if sp != NULL:
            batch_rows.rows = rows
        else:
            parallel_gather(net, <const char*>data.X, rows, m, size, <char*>data.X_batch)
        if data.labels != NULL:
            gather(<const char*>data.labels, rows, m, sizeof(int64_t), <char*>data.labels_batch)
            labels = data.labels_batch
        else:
            gather(<const char*>data.targets, rows, m, n_out * size, <char*>data.targets_batch)
            targets = <const floating*>data.targets_batch
        weights = NULL
        total = m
        kind = opt_kind
        penalty = 0
        penalty_l1 = l1_penalty(opt_kind, hyper, <floating*>net.params, net.n_weights)
        if data.weights != NULL:
            weights = <floating*>data.weights_batch
            gather(<const char*>data.weights, rows, m, size, <char*>weights)
            total = pairwise_sum(weights, m)
            if not total > 0:
                if rule != NULL:            # scikit-learn skips such a batch
                    lo += m
                    continue
                total = 1
                kind = OPT_NONE
        if rule != NULL:
            penalty = rule_before(net, data, k, total, hyper, <const floating*>net.params)
        if data.schedule != NULL:
            if data.schedule[S_STEP] >= MAX_STEPS:
                failed_row[0] = lo
                return BAD_COUNTER
            hyper[H_LR] = scheduled_rate(data.schedule)
        status = step(net, <const floating*>data.X_batch, m, labels, targets, weights, total,
                      kind, hyper, state_a, state_b, &loss, sp)
        if status != OK:
            failed_row[0] = lo
            return status
        if data.schedule != NULL:
            data.schedule[S_STEP] += 1
        if kind == OPT_NONE:
            penalty_l1 = 0
        if rule != NULL:
            # hyper[H_L1] is the estimators' l1 / scale (sklearn.py): l1 * sum |W| reported
            loss = rule[3] * loss + penalty + rule[1] * penalty_l1
        else:
            loss += penalty_l1
        k += 1
        loss_sum[0] += loss * m
        # the step's forward pass left this batch's logits in the workspace
        if net.loss == SOFTMAX_CROSS_ENTROPY:
            correct[0] += count_correct(out_block, labels, targets, m, n_out)
        elif net.loss == BINARY_CROSS_ENTROPY:
            correct[0] += count_correct_logistic(out_block, targets, m, n_out)
        lo += m
        if lo < stop and signals_stop(data.signals):  # Ctrl-C: stop between two steps
            failed_row[0] = lo
            return INTERRUPTED
    return OK


cdef int score(const Net* net, const floating* X, Py_ssize_t m, const int64_t* labels,
               const floating* targets, floating* scores, floating* dscores, double* maxima,
               floating* buffers, Py_ssize_t chunk, double* loss, Py_ssize_t* correct,
               const SparseRows* sp=NULL) noexcept nogil:
    """Mean loss and correct predictions of m rows (dense X, or sparse sp), through infer
    (the path of MLP.loss)."""
    cdef int status = infer(net, X, m, scores, buffers, chunk, SCORES, 1, sp)
    cdef Py_ssize_t n_out = net.sizes[net.n_layers]
    if status == BAD_OUTPUT:
        return BAD_LOSS           # finite inputs: the model itself overflows
    if status != OK:
        return status
    if net.loss == SOFTMAX_CROSS_ENTROPY:
        loss[0] = softmax_cross_entropy(scores, labels, targets, NULL, m, dscores, maxima, m, n_out)
        correct[0] = count_correct(scores, labels, targets, m, n_out)
    elif net.loss == MEAN_SQUARED_ERROR:
        loss[0] = mean_squared_error(scores, targets, NULL, m, dscores, m, n_out)
    elif net.loss == BINARY_CROSS_ENTROPY:
        loss[0] = binary_cross_entropy(scores, targets, NULL, m, dscores, m, n_out)
        correct[0] = count_correct_logistic(scores, targets, m, n_out)
    else:
        loss[0] = poisson_deviance(scores, targets, NULL, m, dscores, m, n_out)
    return OK


include "_sparse.pxi"


cdef class Network:
    """The compiled view of an MLP: its layout, parameter buffers and training workspace.

    Built and owned by fusedmlp.MLP; every array it is given is kept alive here.
    """
    cdef Net net
    cdef readonly bint is_double
    cdef readonly double loss
    cdef char kind
    cdef object _keep

    def __cinit__(self, layout, activations, int loss, params, grads):
        # layout: a fusedmlp.layout.ParamLayout, the one description of where W_l and b_l sit
        cdef int L = layout.n_layers, l
        self.net.n_layers = L
        self.net.loss = loss
        self.net.sizes = <Py_ssize_t*>malloc((L + 1) * sizeof(Py_ssize_t))
        self.net.activations = <int*>malloc(L * sizeof(int))
        self.net.w_off = <Py_ssize_t*>malloc(L * sizeof(Py_ssize_t))
        self.net.b_off = <Py_ssize_t*>malloc(L * sizeof(Py_ssize_t))
        self.net.a_off = <Py_ssize_t*>malloc(L * sizeof(Py_ssize_t))
        if (self.net.sizes == NULL or self.net.activations == NULL or self.net.w_off == NULL
                or self.net.b_off == NULL or self.net.a_off == NULL):
            raise MemoryError()
        self.net.n_weights = layout.n_weights
        self.net.n_params = layout.n_params
        self.net.max_width = 0
        for l in range(L + 1):
            self.net.sizes[l] = layout.sizes[l]
        for l in range(L):
            self.net.activations[l] = activations[l]
            self.net.w_off[l] = layout.weight_offsets[l]
            self.net.b_off[l] = layout.bias_offsets[l]
            self.net.a_off[l] = 0 if l == 0 else self.net.a_off[l - 1] + self.net.sizes[l]
            self.net.max_width = max(self.net.max_width, self.net.sizes[l + 1])
        self.is_double = params.dtype.itemsize == 8
        self.kind = b'd' if self.is_double else b'f'
        if len(params) != self.net.n_params or len(grads) != self.net.n_params:
            raise ValueError("params and grads must hold exactly the network's parameters")
        self.net.params = address(params, self.kind, True)
        self.net.grads = address(grads, self.kind, True)
        self.net.max_batch = 0
        self.net.is_double = self.is_double
        self.net.n_threads = 0
        self.net.auto_parallel = BLAS["name"] != "scipy"
        self.net.max_parts = 1
        self.net.part_scratch = NULL
        self.net.partials = NULL
        self.net.n_partials = 0
        self.net.dropout = NULL
        self.net.dropout_state = NULL
        self.net.bf16 = False
        self.net.bf16_w = NULL
        self.net.bf16_off = NULL
        self.net.bf16_packed = False
        self.net.sparse = False
        self._keep = [params, grads, None, None, None]

    def __dealloc__(self):
        free(self.net.sizes)
        free(self.net.activations)
        free(self.net.w_off)
        free(self.net.b_off)
        free(self.net.a_off)
        free(self.net.bf16_w)
        free(self.net.bf16_off)

    def set_workspace(self, Py_ssize_t max_batch, acts, delta_a, delta_b, scratch):
        """Adopt a training workspace for batches of up to max_batch rows."""
        cdef Py_ssize_t total = 0
        cdef int l
        for l in range(self.net.n_layers):
            total += self.net.sizes[l + 1]
        if (len(acts) != max_batch * total or len(delta_a) != max_batch * self.net.max_width
                or len(delta_b) != len(delta_a)
                or len(scratch) != max(self.net.max_width, max_batch)):
            raise ValueError("workspace buffers have the wrong sizes")
        self.net.acts = address(acts, self.kind, True)
        self.net.delta_a = address(delta_a, self.kind, True)
        self.net.delta_b = address(delta_b, self.kind, True)
        self.net.scratch = <double*>address(scratch, b'd', True)
        self.net.max_batch = max_batch
        self._keep[2] = (acts, delta_a, delta_b, scratch)

    def set_bf16(self, bint bf16):
        """Compute the products in bfloat16 (float32 networks; the caller checked the CPU)."""
        cdef Py_ssize_t total = 0, n_in, n_out
        cdef int64_t* offsets
        cdef int l
        if bf16 and self.is_double:
            raise ValueError("bfloat16 products need a float32 network")
        self.net.bf16 = bf16
        if bf16 and self.net.bf16_w == NULL:
            # each step packs the weights into these words once (step(), bf16_pack_part):
            # W_l and W_l^T (not for layer 0: no dA_0) in panels of 32 columns (bf16_gemm.h;
            # the columns past the last stay zero)
            offsets = <int64_t*>malloc(2 * self.net.n_layers * sizeof(int64_t))
            if offsets == NULL:
                raise MemoryError()
            for l in range(self.net.n_layers):
                n_in = self.net.sizes[l]
                n_out = self.net.sizes[l + 1]
                offsets[2 * l] = total
                total += (n_out + 31) // 32 * panel_words(n_in)
                offsets[2 * l + 1] = -1 if l == 0 else total
                total += 0 if l == 0 else (n_in + 31) // 32 * panel_words(n_out)
            self.net.bf16_w = <uint32_t*>calloc(total, sizeof(uint32_t))
            self.net.bf16_off = offsets
            if self.net.bf16_w == NULL:
                raise MemoryError()

    @property
    def bf16(self):
        return self.net.bf16

    @property
    def max_batch(self):
        return self.net.max_batch

    def set_dropout(self, rates, state):
        """Train with dropout: rates (float64, n_layers, each in [0, 1), the last 0) and
        state (int64, 2: [seed, step], advanced by every update); None, None: no dropout."""
        cdef int l
        cdef const double* r = <const double*>address(rates, b'd', False, self.net.n_layers)
        cdef int64_t* s = <int64_t*>address(state, b'q', True, 2)
        if (r == NULL) != (s == NULL):
            raise ValueError("give both the rates and the state, or neither")
        if r != NULL:
            for l in range(self.net.n_layers):
                if not 0 <= r[l] < 1 or (l == self.net.n_layers - 1 and r[l] != 0):
                    raise ValueError("dropout rates must lie in [0, 1), 0 for the output layer")
        self.net.dropout = r
        self.net.dropout_state = s
        self._keep[4] = (rates, state)

    @property
    def n_params(self):
        return self.net.n_params

    def set_threads(self, int n_threads, part_scratch, partials):
        """Split steps and inference into n_threads parts (0: "auto", _parallel.pxi), at most
        len(part_scratch) // (widest layer) of them (float64 scratch, one row per part);
        partials (the network's dtype): len(partials) // n_params gradient-sized buffers for
        the parts of a batch-split backward (_parallel.pxi)."""
        cdef Py_ssize_t parts = len(part_scratch) // self.net.max_width
        if n_threads < 0 or parts < max(n_threads, 1):
            raise ValueError("n_threads must be >= 0 with scratch for that many parts")
        self.net.partials = address(partials, self.kind, True)
        self.net.n_partials = <int>(len(partials) // self.net.n_params)
        self.net.part_scratch = <double*>address(part_scratch, b'd', True)
        self.net.max_parts = <int>min(parts, 4096)
        self.net.n_threads = n_threads
        self._keep[3] = (part_scratch, partials)

    def step_parts(self, Py_ssize_t m):
        """Parts a training step of m rows is split into."""
        return step_parts(&self.net, m)

    def step_plan(self, Py_ssize_t m, bint sparse=False):
        """How a training step of m rows is split: {"parts", "forward", "backward", "dA"},
        per layer "serial" (one part), "rows", "columns", "inner" (forward), "owned" (dW by
        the rows of W each part owns) or "batch" (summed per part's rows, backward), and
        dA's "rows" or "columns" (None for the first layer). sparse: for a sparse X (its
        first layer splits by rows only)."""
        self.net.sparse = sparse
        return step_plan(&self.net, m)

    def inference_plan(self, Py_ssize_t m):
        """How an inference of m rows is split: {"parts", "forward"}, as step_plan."""
        return inference_plan(&self.net, m)

    def inference_parts(self, Py_ssize_t m):
        """Parts an inference of m rows is split into; predict's buffers hold that many
        blocks of 2 x chunk x (widest layer) entries."""
        return inference_parts(&self.net, m)

    def train_step(self, X, labels, targets, weights, double total_weight, int opt_kind,
                   hyper, state_a, state_b):
        """One training step on the first len(X) rows of the workspace; returns a status.

        X (m x n_0), targets (m x n_L, or None), weights (m, or None), state_a/_b (n_params
        or None) are of the network's dtype; labels are int64 (m, or None); hyper is float64
        (_optim.pxd); total_weight <= 0 means m (no weights). The loss is left in self.loss.
        Every buffer's type and shape is checked here too (TypeError/ValueError), so the
        Python layer may call this first and validate only when it fails.
        """
        cdef Py_ssize_t m = len(X), n_out = self.net.sizes[self.net.n_layers]
        cdef int status
        cdef double loss = 0, penalty = 0
        cdef fm_fpenv saved
        cdef int blas_saved
        cdef const SparseRows* sp = sparse_rows(X, self.is_double, self.net.sizes[0])
        cdef char* x = NULL if sp != NULL else address(X, self.kind, False, m, self.net.sizes[0])
        cdef int64_t* y = <int64_t*>address(labels, b'q', False, m)
        cdef char* t = address(targets, self.kind, False, m, n_out)
        cdef char* w = address(weights, self.kind, False, m)
        cdef double* h = <double*>address(hyper, b"d", True, H_SIZE)
        cdef char* sa = address(state_a, self.kind, True, self.net.n_params)
        cdef char* sb = address(state_b, self.kind, True, self.net.n_params)
        if m > self.net.max_batch or m == 0:
            raise ValueError(f"X must have 1 to {self.net.max_batch} rows (the workspace), got {m}")
        if (y == NULL) == (t == NULL) or (t == NULL and self.net.loss != SOFTMAX_CROSS_ENTROPY):
            raise ValueError("give labels (softmax output only) or targets, not both")
        if (n_states(opt_kind) >= 1 and sa == NULL) or (n_states(opt_kind) >= 2 and sb == NULL):
            raise ValueError("the optimiser's state buffers are missing")
        if total_weight <= 0:
            total_weight = m
        with nogil:
            fusedmlp_enter()
            saved = fm_fpenv_enter()
            blas_saved = blas_enter()
            if self.is_double:
                penalty = l1_penalty(opt_kind, h, <double*>self.net.params, self.net.n_weights)
                status = step(&self.net, <double*>x, m, y, <double*>t, <double*>w,
                              total_weight, opt_kind, h, <double*>sa, <double*>sb, &loss, sp)
            else:
                penalty = l1_penalty(opt_kind, h, <float*>self.net.params, self.net.n_weights)
                status = step(&self.net, <float*>x, m, y, <float*>t, <float*>w,
                              total_weight, opt_kind, h, <float*>sa, <float*>sb, &loss, sp)
            blas_leave(blas_saved)
            fm_fpenv_leave(saved)
            fusedmlp_leave()
        self.loss = loss + penalty          # the L1 term, from the weights before the update
        return status

    def train_epoch(self, X, labels, targets, weights, order, Py_ssize_t first, Py_ssize_t stop,
                    Py_ssize_t batch_size, int opt_kind, hyper, state_a, state_b, gather_buffers,
                    validation, double[::1] results, rule=None, schedule=None):
        """Train on the rows order[first:stop] in batches of batch_size; returns a status.

        X (n x n_0) with labels (n, int64) or targets (n x n_L), weights (n, or None) are the
        training set, order (int64) the rows in training order; gather_buffers is
        (X_batch, labels_batch, targets_batch, weights_batch), each for batch_size rows
        (None where unused). results (float64, 5) accumulates [0] the summed batch loss x rows
        and [1] the correct predictions (zero them at the start of an epoch); [2] gets the first position of a failing batch.
        validation, unless None, is (X_val, labels_val, targets_val, scores, dscores, maxima,
        buffers, chunk), scored after the last step into [3] (mean loss) and [4] (correct);
        a non-finite validation output gives BAD_LOSS with [2] = -1. rule (float64, or
        None) is the scikit-learn estimators' per-batch rule (see epoch()): alpha, the
        gradient scale, 0.5 alpha, the reported loss factor, then optionally one epsilon
        per batch of this call. schedule (float64, S_SIZE, or None) is a per-step
        learning-rate schedule (_schedule.pxd): it sets hyper's rate before every step and
        its step count advances with every step trained.
        """
        cdef Py_ssize_t n = len(X), n_out = self.net.sizes[self.net.n_layers], i
        cdef Py_ssize_t m_val, chunk, correct = 0, failed = 0, val_correct = 0
        cdef int status = OK
        cdef double loss_sum = 0, val_loss = 0
        cdef fm_fpenv saved
        cdef int blas_saved
        cdef EpochData data
        cdef Signals signals
        loss_sum = results[0]            # continued: an epoch may run as several calls
        correct = <Py_ssize_t>results[1]
        cdef const int64_t* rows
        cdef char* v_x = NULL
        cdef int64_t* v_y = NULL
        cdef char* v_t = NULL
        cdef char* v_scores = NULL
        cdef char* v_dscores = NULL
        cdef double* v_maxima = NULL
        cdef char* v_buffers = NULL
        cdef char* sa = address(state_a, self.kind, True, self.net.n_params)
        cdef char* sb = address(state_b, self.kind, True, self.net.n_params)
        cdef double* h = <double*>address(hyper, b"d", True, H_SIZE)
        cdef const SparseRows* v_sp = NULL
        X_batch, labels_batch, targets_batch, weights_batch = gather_buffers
        data.sparse = sparse_rows(X, self.is_double, self.net.sizes[0])
        data.X = NULL if data.sparse != NULL else address(X, self.kind, False, n,
                                                          self.net.sizes[0])
        data.labels = <int64_t*>address(labels, b'q', False, n)
        data.targets = address(targets, self.kind, False, n, n_out)
        data.weights = address(weights, self.kind, False, n)
        data.order = <int64_t*>address(order, b'q', False)
        data.X_batch = address(X_batch, self.kind, True, batch_size, self.net.sizes[0])
        data.labels_batch = <int64_t*>address(labels_batch, b'q', True, batch_size)
        data.targets_batch = address(targets_batch, self.kind, True, batch_size, n_out)
        data.weights_batch = address(weights_batch, self.kind, True, batch_size)
        data.rule = <double*>address(rule, b'd', False)
        data.rule_size = 0 if rule is None else len(rule)
        data.schedule = <double*>address(schedule, b'd', True, S_SIZE)
        if rule is not None and (data.rule_size < 4 or (data.rule_size > 4 and
                                 data.rule_size < 4 + (stop - first + batch_size - 1) // batch_size)):
            raise ValueError("rule needs 4 entries, or 4 plus one epsilon per batch")
        if n == 0 or batch_size < 1 or batch_size > self.net.max_batch:
            raise ValueError(f"batch_size must lie in [1, {self.net.max_batch}] (the workspace)")
        if not 0 <= first <= stop <= len(order) or results.shape[0] < 5:
            raise ValueError("first/stop must select a part of order; results needs 5 entries")
        if (data.labels == NULL) == (data.targets == NULL) or (data.targets == NULL and self.net.loss != SOFTMAX_CROSS_ENTROPY):
            raise ValueError("give labels (softmax output only) or targets, not both")
        if ((data.labels != NULL and data.labels_batch == NULL)
                or (data.targets != NULL and data.targets_batch == NULL)
                or (data.weights != NULL and data.weights_batch == NULL)):
            raise ValueError("a gather buffer is missing")
        if (n_states(opt_kind) >= 1 and sa == NULL) or (n_states(opt_kind) >= 2 and sb == NULL):
            raise ValueError("the optimiser's state buffers are missing")
        rows = data.order
        for i in range(first, stop):
            if not 0 <= rows[i] < n:
                raise ValueError(f"order holds row {rows[i]}, outside [0, {n})")
        if validation is not None:
            X_val, labels_val, targets_val, scores, dscores, maxima, buffers, chunk = validation
            m_val = len(X_val)
            v_sp = sparse_rows(X_val, self.is_double, self.net.sizes[0])
            v_x = NULL if v_sp != NULL else address(X_val, self.kind, False, m_val,
                                                    self.net.sizes[0])
            v_y = <int64_t*>address(labels_val, b'q', False, m_val)
            v_t = address(targets_val, self.kind, False, m_val, n_out)
            v_scores = address(scores, self.kind, True, m_val, n_out)
            v_dscores = address(dscores, self.kind, True, m_val, n_out)
            v_maxima = <double*>address(maxima, b'd', True, m_val)
            v_buffers = address(buffers, self.kind, True)
            if (m_val == 0 or chunk < 1 or len(buffers) < 2 * chunk * self.net.max_width
                    or (v_y == NULL) == (v_t == NULL)):
                raise ValueError("validation: rows, labels or targets, and buffers are needed")
        signals_start(&signals)
        data.signals = &signals
        with nogil:
            fusedmlp_enter()
            saved = fm_fpenv_enter()
            blas_saved = blas_enter()
            if self.is_double:
                status = epoch(&self.net, &data, first, stop, batch_size, opt_kind, h,
                               <double*>sa, <double*>sb, &loss_sum, &correct, &failed)
                if status == OK and (v_x != NULL or v_sp != NULL):
                    status = score(&self.net, <double*>v_x, m_val, v_y, <double*>v_t,
                                   <double*>v_scores, <double*>v_dscores, v_maxima,
                                   <double*>v_buffers, chunk, &val_loss, &val_correct, v_sp)
                    failed = -1 if status != OK else 0
            else:
                status = epoch(&self.net, &data, first, stop, batch_size, opt_kind, h,
                               <float*>sa, <float*>sb, &loss_sum, &correct, &failed)
                if status == OK and (v_x != NULL or v_sp != NULL):
                    status = score(&self.net, <float*>v_x, m_val, v_y, <float*>v_t,
                                   <float*>v_scores, <float*>v_dscores, v_maxima,
                                   <float*>v_buffers, chunk, &val_loss, &val_correct, v_sp)
                    failed = -1 if status != OK else 0
            blas_leave(blas_saved)
            fm_fpenv_leave(saved)
            fusedmlp_leave()
        results[0] = loss_sum
        results[1] = correct
        results[2] = failed
        results[3] = val_loss
        results[4] = val_correct
        signals_raise(&signals)        # an interrupted epoch: results hold the steps done
        return status

    def predict(self, X, out, buffers, Py_ssize_t chunk, int output):
        """Forward pass of X into out (m x n_L), chunk rows at a time; returns a status.

        buffers holds 2 * chunk * (widest layer) entries of scratch for this call alone, so
        any number of threads may predict at once.
        """
        cdef Py_ssize_t m = len(X)
        cdef int status
        cdef fm_fpenv saved
        cdef int blas_saved
        cdef const SparseRows* sp = sparse_rows(X, self.is_double, self.net.sizes[0])
        cdef char* x = NULL if sp != NULL else address(X, self.kind, False, m, self.net.sizes[0])
        cdef char* o = address(out, self.kind, True, m, self.net.sizes[self.net.n_layers])
        cdef char* buf = address(buffers, self.kind, True)
        cdef int n_parts
        if len(buffers) < 2 * chunk * self.net.max_width or chunk < 1:
            raise ValueError("inference buffers are too small")
        n_parts = 1 if sp != NULL else inference_parts(&self.net, m)
        if m == 0:
            return OK
        with nogil:
            fusedmlp_enter()
            saved = fm_fpenv_enter()
            blas_saved = blas_enter()
            if self.is_double:
                status = infer(&self.net, <double*>x, m, <double*>o, <double*>buf, chunk, output,
                               n_parts, sp)
            else:
                status = infer(&self.net, <float*>x, m, <float*>o, <float*>buf, chunk, output,
                               n_parts, sp)
            blas_leave(blas_saved)
            fm_fpenv_leave(saved)
            fusedmlp_leave()
        return status

    def matmuls_only(self, X, Py_ssize_t repeats):
        """Run only the matrix products of a training step on X, `repeats` times.

        The GEMM floor of the benchmarks: what a step would cost if everything but BLAS
        were free. It writes into the training workspace and the gradient buffer, whose
        contents become meaningless (the next train_step overwrites both).
        """
        cdef Py_ssize_t m = len(X), r
        cdef fm_fpenv saved
        cdef int blas_saved
        cdef char* x = address(X, self.kind, False, m, self.net.sizes[0])
        if m > self.net.max_batch or m == 0:
            raise ValueError(f"X must have 1 to {self.net.max_batch} rows")
        with nogil:
            saved = fm_fpenv_enter()
            blas_saved = blas_enter()
            for r in range(repeats):
                if self.is_double:
                    matmuls(&self.net, <double*>x, m)
                else:
                    matmuls(&self.net, <float*>x, m)
            blas_leave(blas_saved)
            fm_fpenv_leave(saved)


include "_embed.pxi"
