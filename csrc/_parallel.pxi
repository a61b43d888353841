# fusedmlp's own parallelism: the training step and inference split across the worker pool
# (pool.h). Included by _network.pyx after layer_block/forward(), before step(). These are
# the step's only passes: the serial step is the plan of one part (each region run by the
# caller).
#
# A product C (m x n) = A (m x k) @ B (k x n) of a layer is split into n parts by ROWS of C
# (every part multiplies its rows of A by all of B) or by COLUMNS of C (every part multiplies
# all of A by its columns of B). Which one is chosen by what each part must read and pack:
# the BLAS copies (packs) both operands into its own layout before multiplying, and with k
# inner products per element, a part of a row split packs all of B (k n) and its m/n_parts
# rows of A, a part of a column split all of A (k m) and its n/n_parts columns of B. So
# columns when m < n (a batch smaller than the layer is wide: e.g. 32 rows through 784 x 128
# weights, where a row split left each part packing the whole weight matrix to multiply 16
# rows by it, and two threads were slower than one), rows otherwise (split_columns()).
#
# Ownership. Moving a cache line between cores costs far more than reading it (measured:
# with the update's ranges unrelated to the forward's column blocks, ~1/4 of W_l moved
# between the cores twice a step and two threads ran at 0.6x of one at 784-128-10 b32; with
# the ownership below, 1.7x). So part p owns, for every layer, a block of rows of W_l (with
# those rows of dW_l and of the optimiser state) and a block of columns of b_l: the forward
# product reads its rows (inner split) or the batch splits by rows, dW_l and dA_{l-1} are
# computed on the owned rows, and the update touches only what the part owns. The pool runs
# part p on the same thread every call (pool.h), so the blocks stay in that core's cache.
#
# How a step is split into n parts (n = the model's n_threads, or the "auto" choice below):
#   check     X finite: each part of the first region checks the block of X it reads
#   forward   when every layer splits by rows: part p runs every layer for its block of rows
#             (no barrier between layers); otherwise one region per layer: an inner split
#             (split_inner: partial sums over the owned rows of W_l, then a region adding
#             them with bias and activation) when the batch is narrower than the layer's
#             input, else by rows or columns of its output
#   loss      the caller alone (m x n_classes: small; its sum stays in one fixed order)
#   backward  one parallel region per layer l, given dZ_l:
#               db_l        columns of dZ_l, each summed in float64 over the rows in order
#               dW_l        the owned rows of dW_l
#               dA_{l-1}    rows of the batch or columns of dA (= rows of W_l), as for
#                           forward, then dZ_{l-1} = dA_{l-1} * f'(A_{l-1}) on the same
#                           block (the next region's input)
#   update    the owned rows of every W_l and columns of every b_l (update_layer), fused
#             into the backward: at the end of layer l's region when dA_{l-1} went by
#             columns (the part read only its own rows of W_l), else in layer l-1's region;
#             after the sums of a batch-split backward. With gradient clipping (its norm
#             needs every gradient) in a region of its own after the backward.
# Inference: as forward (whole network per block of rows, or one region per layer), chunk
# rows at a time; softmax on the caller in the per-layer mode.
# Every part writes a disjoint block and nothing is summed across parts, so the results are
# the same whatever the number of parts -- bit for bit, as long as the BLAS computes each
# output element the same way wherever it lies in a product (tests/test_threads.py states the
# tolerance: OpenBLAS picks kernels by size). Blocks are whole multiples of ALIGN rows or
# columns; the rows of W_0 whole cache lines of it (w_rows: no dA_0 columns to keep apart).

cdef extern from "pool.h" nogil:
    ctypedef void (*fm_task)(void* ctx, int part, int n_parts) noexcept nogil
    ctypedef struct fm_team:
        int n_members
    void fm_pool_init()
    void fm_team_begin(fm_team* team, int n_parts)
    void fm_team_end(fm_team* team)
    void fm_team_run(fm_team* team, fm_task task, void* ctx, int n_parts)
    void fm_flag(int* flag)
    int fm_n_workers
    int fm_trace
    long long fm_trace_log[1]
    int fm_trace_used

cdef extern from *:
    """
    #include <stdlib.h>
    #include <stddef.h>
    #include <stdint.h>
    #include <string.h>
    #include "fm_compiler.h"        /* FM_EXPORT */
    /* "auto" uses at most this many threads: the usable cores (fm_cores.h: the affinity as
     * it is now), lowered by a threadpoolctl limit (fusedmlp.threads registers a controller
     * that calls these two). */
    #include "fm_cores.h"
    static int fm_thread_limit = 1;
    FM_EXPORT int fusedmlp_get_num_threads(void) { return fm_thread_limit; }
    FM_EXPORT void fusedmlp_set_num_threads(int n) { fm_thread_limit = n < 1 ? 1 : n; }

    #if defined(__GNUC__) || defined(__clang__)
    #define FM_PREFETCH(p) __builtin_prefetch((p), 0, 3)
    #elif defined(_M_X64) || defined(_M_IX86)
    #include <xmmintrin.h>
    #define FM_PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)
    #else
    #define FM_PREFETCH(p) ((void)0)
    #endif
    #define FM_GATHER_AHEAD 2
    /* dest + i * dest_stride := bytes bytes at source + rows[i] * stride, for i in [lo, hi).
     * The rows are random, so each would start with a miss to memory that nothing had
     * announced: the lines of the row FM_GATHER_AHEAD on are requested while this one is
     * copied (measured in a C loop over Fashion-MNIST's 60000 x 784 float32, 128 random
     * rows, best of 468 batches on a loaded machine: half rows, as a part of a column split
     * copies, 41 -> 23-26 us; whole rows 60 -> 55-57 us). */
    static void fm_gather(char *dest, ptrdiff_t dest_stride, const char *source, ptrdiff_t stride,
                          const int64_t *rows, ptrdiff_t lo, ptrdiff_t hi, ptrdiff_t bytes)
    {
        ptrdiff_t i, b;
        for (i = lo; i < hi && i < lo + FM_GATHER_AHEAD; i++)
            for (b = 0; b < bytes; b += 64) FM_PREFETCH(source + rows[i] * stride + b);
        for (i = lo; i < hi; i++) {
            if (i + FM_GATHER_AHEAD < hi)
                for (b = 0; b < bytes; b += 64)
                    FM_PREFETCH(source + rows[i + FM_GATHER_AHEAD] * stride + b);
            memcpy(dest + i * dest_stride, source + rows[i] * stride, (size_t)bytes);
        }
    }

    """
    int fm_cores() nogil
    void fm_set_cores(int n) nogil
    int fm_thread_limit
    void fm_gather(char* dest, Py_ssize_t dest_stride, const char* source, Py_ssize_t stride,
                   const int64_t* rows, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t bytes) nogil

cdef enum:
    ALIGN = 16                 # rows/columns per block (a cache line of float32)
    INFERENCE_ROWS = 256       # rows per pass through the layers in inference (its chunk)
    BATCH_SPLIT_ROWS = 512     # the smallest batch whose backward may split by rows (split_batch)
# "auto" (n_parts_for): a call is split into n parts when each part of each of its parallel
# regions gets at least AUTO_WORK_PER_PART flop-equivalents, where a region hand-off (waking
# the helpers, waiting for the slowest part) costs a few microseconds: at ~90 GFLOP/s per
# core, 1.5e6 is ~17 us of work per part and region, so that even a call just above the
# threshold gains from two threads rather than loses (the measurements: docs/threading.md).
# The count depends only on the shapes, never on the machine's load: results do not change
# from run to run.
cdef double AUTO_WORK_PER_PART = 1.5e6
# the optimiser update, per parameter, in flop-equivalents (Adam: ~0.25 ns per parameter)
cdef double UPDATE_WORK_PER_PARAM = 20
# and only when the step does at least this much per activation element that moves between
# cores (step_parts; 784-128-10 at batch 256 does ~3,000: 1.8x; 100-100-100-10 ~500: 0.8x)
cdef double AUTO_WORK_PER_MOVED = 1000
# Inference reads the weights and writes nothing the next call needs: no cache line moves
# back, and half the work per part and region already gains (64-128-10 at batch 128: 1.7x).
cdef double AUTO_INFER_WORK_PER_PART = 0.75e6
# A region of fewer flops than this (an output layer of 10 units at a small batch: ~1 us; a
# whole small network's forward, or its update) runs on the caller alone: a hand-off would
# cost more than it saves.
cdef double SMALL_REGION_FLOPS = 2e5

fm_pool_init()


def set_cores(int cores):
    """The cores "auto" may use (fusedmlp.threads sets it from the process's CPU affinity)."""
    global fm_thread_limit
    fm_set_cores(cores)
    fm_thread_limit = max(cores, 1)


def thread_limit():
    """The most threads "auto" uses now (cores, or a threadpoolctl limit)."""
    return min(fm_cores(), fm_thread_limit)


def trace_parts(on=None):
    """Diagnostics (pool.h): with on=True later calls run their parts on the calling thread,
    timed. Returns the parts timed since the last call, as a list of runs (each a list of
    part times in ns), and forgets them."""
    global fm_trace, fm_trace_used
    cdef int i = 0, n
    runs = []
    while i < fm_trace_used:
        n = <int>fm_trace_log[i]
        runs.append([fm_trace_log[i + 1 + p] for p in range(n)])
        i += n + 1
    fm_trace_used = 0
    if on is not None:
        fm_trace = 1 if on else 0
    return runs


def pool_size():
    """Worker threads started so far (the pool starts lazily)."""
    return fm_n_workers


cdef inline void block_of(Py_ssize_t n, Py_ssize_t unit, int part, int n_parts,
                          Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi) of part `part` when n items are split into n_parts runs of whole units."""
    cdef Py_ssize_t blocks = (n + unit - 1) // unit
    lo[0] = min(n, (blocks * part // n_parts) * unit)
    hi[0] = min(n, (blocks * (part + 1) // n_parts) * unit)


cdef inline void block(Py_ssize_t n, int part, int n_parts, Py_ssize_t* lo,
                       Py_ssize_t* hi) noexcept nogil:
    """[lo, hi) of part `part` when n items are split into n_parts runs of whole ALIGN blocks."""
    block_of(n, ALIGN, part, n_parts, lo, hi)


cdef inline void w_rows(const Net* net, int l, int part, int n_parts, Py_ssize_t* lo,
                        Py_ssize_t* hi) noexcept nogil:
    """The rows of W_l part `part` owns (of dW_l and the optimiser state too; the columns of
    layer l's input it reads in an inner split, and of dA_{l-1} it writes). Whole ALIGN
    blocks, as every block; but the first layer has no dA_0 whose columns would share cache
    lines, so there a unit is the fewest rows of W_0 that fill whole cache lines (one row of
    256 float32: 784 inputs split 392 + 392 rather than 384 + 400)."""
    cdef Py_ssize_t line = 64 // (8 if net.is_double else 4), n_out = net.sizes[l + 1]
    cdef Py_ssize_t unit = line
    if l > 0:
        block(net.sizes[l], part, n_parts, lo, hi)
        return
    while unit > 1 and (unit // 2) * n_out % line == 0:
        unit //= 2
    block_of(net.sizes[0], unit, part, n_parts, lo, hi)


cdef inline int n_parts_for(const Net* net, double work, int regions) noexcept nogil:
    """How many parts a call of `work` flop-equivalents in `regions` parallel regions is
    split into: the model's n_threads, or the "auto" rule above."""
    cdef int n
    if net.n_threads > 0:
        n = net.n_threads
    elif not net.auto_parallel:
        n = 1
    else:
        n = <int>(work / (AUTO_WORK_PER_PART * regions))
        n = max(1, min(n, fm_thread_limit))
        if n > 1:                       # the affinity matters only to a split call
            n = min(n, fm_cores())
    return min(n, net.max_parts)


cdef struct Work:
    Net* net
    const void* X
    Py_ssize_t m
    int layer
    const void* inp            # layer_task: the layer's input (m x n_in) and output (m x n_out)
    void* out_block
    bint training              # layer_task: a training forward (dropout applies)
    int* bad_input             # forward: set when a part finds NaN/inf in its block of X
    int reduced                # reduce_task: the partial sums to add
    void* d                    # backward: dZ of `layer`
    void* d_next               # backward: where dA/dZ of layer - 1 go
    int opt_kind               # update
    const double* hyper
    UpdateStep update          # the update's once-per-step values (optimizer_prepare)
    void* state_a
    void* state_b
    void* out                  # inference
    void* buffers
    Py_ssize_t chunk
    int output
    int n_parts                # backward: the step's parts (its regions may use fewer)
    const SparseRows* sp       # a sparse batch (X NULL), or NULL
    bint gemm_only             # the products alone (matmuls: the GEMM floor)


cdef void check_input(const Work* w, const void* X, bint columns, int part,
                      int n_parts) noexcept nogil:
    """step()'s finite check of X, split: part `part` checks the block of X it reads first
    (its columns, for an inner-split first layer; else its rows) and sets w.bad_input if it
    holds a NaN or an infinity. Nothing when w.bad_input is NULL."""
    cdef Py_ssize_t n_in = w.net.sizes[0], lo, hi, i
    cdef bint finite = True
    cdef SparseRows rows
    if w.bad_input == NULL:
        return
    if w.sp != NULL:
        block(w.m, part, n_parts, &lo, &hi)
        rows = sparse_block(w.sp, lo)
        if w.net.is_double:
            finite = sparse_all_finite(&rows, <const double*>NULL, hi - lo)
        else:
            finite = sparse_all_finite(&rows, <const float*>NULL, hi - lo)
    elif columns:
        w_rows(w.net, 0, part, n_parts, &lo, &hi)
        for i in range(w.m):
            if not finite:
                break
            if w.net.is_double:
                finite = all_finite(<const double*>X + i * n_in + lo, hi - lo)
            else:
                finite = all_finite(<const float*>X + i * n_in + lo, hi - lo)
    else:
        block(w.m, part, n_parts, &lo, &hi)
        if w.net.is_double:
            finite = all_finite(<const double*>X + lo * n_in, (hi - lo) * n_in)
        else:
            finite = all_finite(<const float*>X + lo * n_in, (hi - lo) * n_in)
    if not finite:
        fm_flag(w.bad_input)


cdef inline bint split_columns(Py_ssize_t m, Py_ssize_t n, int n_parts) noexcept nogil:
    """Split an m x n product by columns (True) or rows (False); see the top of this file.
    One part is the whole product: rows."""
    cdef bint columns_fill = (n + ALIGN - 1) // ALIGN >= n_parts
    cdef bint rows_fill = (m + ALIGN - 1) // ALIGN >= n_parts
    return n_parts > 1 and columns_fill and (m < n or not rows_fill)


cdef inline bint split_inner(const Net* net, Py_ssize_t m, int l, int n_parts) noexcept nogil:
    """Whether layer l's training forward splits its inner dimension: each part multiplies
    the rows of W_l it owns (and the input columns they meet) into a partial sum, and a
    second region adds the partials in part order, with the bias and activation. For batches
    of fewer rows than the layer has inputs, up to 3 parts (the partials live in the two
    backward buffers, free during forward), and not under dropout (drawn per whole row)."""
    cdef Py_ssize_t n_in = net.sizes[l]
    return (1 < n_parts <= 3 and m < n_in and (n_in + ALIGN - 1) // ALIGN >= n_parts
            and not dropout_on(net.dropout, l) and not (l == 0 and net.sparse))


cdef inline bint rows_everywhere(const Net* net, Py_ssize_t m, int n_parts,
                                 bint training) noexcept nogil:
    """Whether every layer's forward product splits by rows (then a part runs them all)."""
    cdef int l
    for l in range(net.n_layers):
        if ((split_columns(m, net.sizes[l + 1], n_parts) and not rows_only(net, l, training))
                or (training and split_inner(net, m, l, n_parts))):
            return False
    return True


cdef inline bint rows_only(const Net* net, int l, bint training) noexcept nogil:
    """Whether layer l's forward splits by rows whatever the shapes: in training, under
    dropout (its mask is drawn for whole rows) or for the CSR first layer of a sparse X
    (its product is by whole rows)."""
    return training and (dropout_on(net.dropout, l) or (l == 0 and net.sparse))


cdef inline bint split_batch(const Net* net, Py_ssize_t m, int l, int n_parts) noexcept nogil:
    """Whether layer l's dW and db split by rows of the batch (each part sums its own rows,
    those it computed in forward, into its own gradient-sized buffer; a region after the
    backward adds the buffers, in part order, into each part's owned blocks): when the
    forward ran by rows and the layer's activations outweigh its weights four times (large
    batches through narrow layers), so that the partial sums cost less cross-core traffic
    than the activations of the other parts' rows would; and only from BATCH_SPLIT_ROWS rows
    (a batch-split sum differs in its last bits from one thread's, where the rows-of-W split
    computes what one thread does for the shapes tests/test_bf16.py and test_dropout.py
    check: below it "auto" stays on one thread where the activations would move, see
    step_parts)."""
    cdef Py_ssize_t n_in = net.sizes[l], n_out = net.sizes[l + 1]
    return (n_parts > 1 and n_parts - 1 <= net.n_partials and m >= BATCH_SPLIT_ROWS
            and m * (n_in + n_out) > 4 * n_in * n_out and rows_everywhere(net, m, n_parts, True))


cdef inline int step_parts(const Net* net, Py_ssize_t m) noexcept nogil:
    """Parts a training step of m rows is split into."""
    cdef int regions
    # forward and dW: 2 m n_in n_out each; dA: the same for every layer but the first
    cdef double work = (2.0 * m * (3 * net.n_weights - net.sizes[0] * net.sizes[1])
                        + UPDATE_WORK_PER_PARAM * net.n_params)
    cdef double moved = 0
    cdef int l
    # regions at two parts: forward, the output layer's derivative, backward, update
    regions = ((1 if rows_everywhere(net, m, 2, True) else net.n_layers) + net.n_layers + 1
               + (net.activations[net.n_layers - 1] != ACT_IDENTITY))
    if rows_everywhere(net, m, 2, True):
        # a forward by rows whose backward splits by rows of W: the activations (every
        # layer's but the input) move between the cores; narrow layers do too little
        # arithmetic per element moved (64-128-10 at batch 128: 0.6x at two threads)
        for l in range(net.n_layers):
            if not split_batch(net, m, l, 2):
                moved += m * net.sizes[l + 1]
        if work < AUTO_WORK_PER_MOVED * moved:
            return n_parts_for(net, 0, 1)
    return n_parts_for(net, work, regions)


cdef void layer_part(const Net* net, int l, const floating* inp, floating* out, Py_ssize_t m,
                     int part, int n_parts, bint training,
                     const SparseRows* sp) noexcept nogil:
    """Part `part` of out := f_l(inp @ W_l + b_l) (m x n_out), by rows or columns (by rows
    where rows_only says so); sp: layer 0's sparse rows, or NULL."""
    cdef Py_ssize_t lo, hi
    if split_columns(m, net.sizes[l + 1], n_parts) and not rows_only(net, l, training):
        block(net.sizes[l + 1], part, n_parts, &lo, &hi)
        layer_block(net, l, inp, out, 0, m, lo, hi, training, False)
    else:
        block(m, part, n_parts, &lo, &hi)
        layer_block(net, l, inp, out, lo, hi, 0, net.sizes[l + 1], training, False, sp)


cdef void layer_task(void* ctx, int part, int n_parts) noexcept nogil:
    cdef Work* w = <Work*>ctx
    cdef int saved = blas_enter()
    check_input(w, w.inp, False, part, n_parts)
    if w.net.is_double:
        layer_part(w.net, w.layer, <const double*>w.inp, <double*>w.out_block, w.m, part,
                   n_parts, w.training, w.sp if w.layer == 0 else NULL)
    else:
        layer_part(w.net, w.layer, <const float*>w.inp, <float*>w.out_block, w.m, part,
                   n_parts, w.training, w.sp if w.layer == 0 else NULL)
    blas_leave(saved)


cdef inline floating* partial_sum(const Net* net, floating* out, int part) noexcept nogil:
    """Where part `part` of an inner split puts its partial product (part 0: the output).
    Part 1's goes to delta_a, where the loss then writes only m x n_L values: in a
    two-layer network delta_b keeps, step after step, the dA_0 columns each part writes in
    the backward, so neither buffer has a line that the other core wrote last (a cache line
    written on one core and then on the other crosses between them; deeper networks write
    column blocks of dA into both buffers and cross once either way)."""
    if part == 0:
        return out
    return <floating*>(net.delta_a if part == 1 else net.delta_b)


cdef void inner_part(const Net* net, int l, const floating* inp, floating* out, Py_ssize_t m,
                     int part, int n_parts) noexcept nogil:
    """partial_part := inp[:, k] @ W_l[k, :] over the rows k of W_l that part owns."""
    cdef const floating* params = <const floating*>net.params
    cdef Py_ssize_t n_in = net.sizes[l], n_out = net.sizes[l + 1], lo, hi
    w_rows(net, l, part, n_parts, &lo, &hi)
    if hi > lo:
        weight_gemm(net, l, False, <int>m, <int>n_out, <int>(hi - lo), inp + lo, <int>n_in, lo, 0,
                    partial_sum(net, out, part), <int>n_out)


cdef void reduce_part(const Net* net, int l, floating* out, Py_ssize_t m, int part,
                      int n_parts, int reduced) noexcept nogil:
    """Rows (or columns, for few rows) of out := f_l(sum of the `reduced` partials + b_l),
    the partials added in part order."""
    cdef Py_ssize_t n_in = net.sizes[l], n_out = net.sizes[l + 1], i, j, i_lo, i_hi
    cdef Py_ssize_t j_lo = 0, j_hi = n_out, k_lo, k_hi
    cdef floating* other
    cdef int q
    if (m + ALIGN - 1) // ALIGN >= n_parts:
        block(m, part, n_parts, &i_lo, &i_hi)
    else:
        i_lo, i_hi = 0, m
        block(n_out, part, n_parts, &j_lo, &j_hi)
    if i_hi <= i_lo or j_hi <= j_lo:
        return
    for q in range(1, reduced):
        w_rows(net, l, q, reduced, &k_lo, &k_hi)
        if k_hi <= k_lo:
            continue
        other = partial_sum(net, out, q)
        for i in range(i_lo, i_hi):
            for j in range(j_lo, j_hi):
                out[i * n_out + j] += other[i * n_out + j]
    layer_epilogue(net, l, out, i_lo, i_hi, j_lo, j_hi, True)   # (no dropout: split_inner)


cdef void inner_task(void* ctx, int part, int n_parts) noexcept nogil:
    cdef Work* w = <Work*>ctx
    cdef int saved = blas_enter()
    check_input(w, w.inp, True, part, n_parts)
    if w.net.is_double:
        inner_part(w.net, w.layer, <const double*>w.inp, <double*>w.out_block, w.m, part,
                   n_parts)
    else:
        inner_part(w.net, w.layer, <const float*>w.inp, <float*>w.out_block, w.m, part,
                   n_parts)
    blas_leave(saved)


cdef void reduce_task(void* ctx, int part, int n_parts) noexcept nogil:
    cdef Work* w = <Work*>ctx
    if w.net.is_double:
        reduce_part(w.net, w.layer, <double*>w.out_block, w.m, part, n_parts, w.reduced)
    else:
        reduce_part(w.net, w.layer, <float*>w.out_block, w.m, part, n_parts, w.reduced)


cdef void parallel_layer(Net* net, fm_team* team, int n_parts, int l, const void* inp,
                         void* out, Py_ssize_t m, bint training, int* bad_input,
                         const SparseRows* sp) noexcept nogil:
    """out := f_l(inp @ W_l + b_l) in one parallel region (two for an inner split); with
    bad_input, its first region checks inp (check_input); sp: layer 0's sparse rows."""
    cdef Work w
    memset(&w, 0, sizeof(Work))
    w.net = net
    w.sp = sp
    w.bad_input = bad_input
    w.training = training
    w.layer = l
    w.inp = inp
    w.out_block = out
    w.m = m
    if 2.0 * m * net.sizes[l] * net.sizes[l + 1] < SMALL_REGION_FLOPS:
        n_parts = 1
    if n_parts > 1 and training and split_inner(net, m, l, n_parts):
        fm_team_run(team, inner_task, &w, n_parts)
        w.bad_input = NULL
        w.reduced = n_parts
        # the sum is m x n_out additions: small ones on the caller alone. (Summing it in
        # the next inner split's region instead, each part on its columns of A_l, was
        # slower at two threads: 784-256-10 b128 and 784-512-512-10 b64, the columns of
        # the partials and of A_l then crossed between the cores in that region and the
        # next.)
        fm_team_run(team, reduce_task, &w,
                    1 if (n_parts + 1.0) * m * net.sizes[l + 1] < SMALL_REGION_FLOPS
                    else n_parts)
    else:
        fm_team_run(team, layer_task, &w, n_parts)


cdef void forward_rows(const Work* s, const floating* X, Py_ssize_t lo,
                       Py_ssize_t hi) noexcept nogil:
    """Rows [lo, hi) of the training forward pass, every layer (its block of the workspace);
    layer 0 from the sparse rows s.sp when the batch is sparse."""
    cdef const Net* net = s.net
    cdef int l
    cdef floating* acts = <floating*>net.acts
    cdef const floating* inp = X
    cdef floating* out
    for l in range(net.n_layers):
        out = acts + net.a_off[l] * net.max_batch
        layer_block(net, l, inp, out, lo, hi, 0, net.sizes[l + 1], True, s.gemm_only, s.sp)
        inp = out


cdef void forward_task(void* ctx, int part, int n_parts) noexcept nogil:
    cdef Work* w = <Work*>ctx
    cdef Py_ssize_t lo, hi
    cdef int saved = blas_enter()
    check_input(w, w.X, False, part, n_parts)
    block(w.m, part, n_parts, &lo, &hi)
    if hi > lo:
        if w.net.is_double:
            forward_rows(w, <const double*>w.X, lo, hi)
        else:
            forward_rows(w, <const float*>w.X, lo, hi)
    blas_leave(saved)


cdef inline double* part_acc(const Net* net, int part) noexcept nogil:
    """Part `part`'s float64 row of scratch for column sums (max_width entries)."""
    return net.scratch if part == 0 else net.part_scratch + part * net.max_width


cdef inline bint db_in_dz(const Net* net, Py_ssize_t m, int l, int n_parts) noexcept nogil:
    """Whether db_l is summed by the pass that computes dZ_l (grad_rows: fm_act_grad's fused
    sums, each row added while it is in cache; the same sums as fm_bias_grad's): when that
    pass runs as one part over every row of the batch, and layer l's dW and db do not split
    by the batch's rows. Otherwise layer l's backward region sums it on its column blocks
    (backward_owned). dZ_l's pass: for the output layer output_grad_task (none for an
    identity output: the loss wrote dZ), for a hidden layer with dropout output_grad_task
    too, else the end of layer l + 1's dA block (dA_part). n_parts: the step's."""
    cdef int parts
    if l == net.n_layers - 1:
        if net.activations[l] == ACT_IDENTITY:
            return False
        parts = n_parts
    elif dropout_on(net.dropout, l):
        parts = n_parts
    else:
        parts = backward_region_parts(net, m, l + 1, n_parts)
    return parts == 1 and not split_batch(net, m, l, backward_region_parts(net, m, l, n_parts))


cdef void grad_rows(const Net* net, int l, floating* d, Py_ssize_t lo, Py_ssize_t hi,
                    double* acc, floating* db) noexcept nogil:
    """dZ_l := dA_l * f'(A_l) on rows [lo, hi), in place, and with db (db_in_dz: [lo, hi) is
    the whole batch) db_l in the same pass; through layer l's dropout first (it restores the
    rows' activations: see parallel_backward for when that may run)."""
    cdef Py_ssize_t n = net.sizes[l + 1]
    cdef floating* a = <floating*>net.acts + net.a_off[l] * net.max_batch
    if hi <= lo:
        return
    dropout_backward(net.dropout, net.dropout_state, l, d + lo * n, a + lo * n, lo, hi - lo, n)
    if net.activations[l] != ACT_IDENTITY:
        activation_grad(d + lo * n, a + lo * n, d + lo * n, acc, db, hi - lo, n,
                        net.activations[l])
    elif db != NULL:
        bias_gradient(d + lo * n, hi - lo, n, n, acc, db)


cdef void backward_part(const Work* w, const floating* d, floating* d_next, int part,
                        int n_parts) noexcept nogil:
    """Part `part` of layer w.layer's backward region, given dZ_l in d: db_l and dW_l (its
    rows of the batch into its own gradient buffer for a batch split, else the blocks of the
    gradient it owns), then its block of dA_{l-1} into d_next. The one backward pass of a
    layer: the one-part plan is this with part 0 of 1."""
    cdef Net* net = w.net
    cdef int l = w.layer
    cdef Py_ssize_t m = w.m, n_in = net.sizes[l], n_out = net.sizes[l + 1], lo, hi
    cdef floating* acts = <floating*>net.acts
    cdef const floating* a_prev = (<const floating*>w.X if l == 0
                                   else acts + net.a_off[l - 1] * net.max_batch)
    cdef double* acc = part_acc(net, part)
    cdef floating* g
    cdef SparseRows rows
    if split_batch(net, m, l, n_parts):
        # db_l and dW_l of this part's rows of the batch, into its own gradient buffer
        g = <floating*>net.grads if part == 0 else <floating*>net.partials + (part - 1) * net.n_params
        block(m, part, n_parts, &lo, &hi)
        if not w.gemm_only:
            bias_gradient(d + lo * n_out, hi - lo, n_out, n_out, acc, g + net.b_off[l])
        if l == 0 and w.sp != NULL:
            rows = sparse_block(w.sp, lo)
            sparse_weight_grad(&rows, hi - lo, d + lo * n_out, n_out, 0, n_in, g + net.w_off[0])
        else:
            net_gemm(net, True, False, <int>n_in, <int>n_out, <int>(hi - lo), <floating>1,
                     a_prev + lo * n_in, <int>n_in, d + lo * n_out, <int>n_out, <floating>0,
                     g + net.w_off[l], <int>n_out)
    else:
        backward_owned(w, a_prev, d, acc, part, n_parts)
    dA_part(w, a_prev, d, d_next, acc, part, n_parts)


cdef void backward_owned(const Work* w, const floating* a_prev, const floating* d, double* acc,
                         int part, int n_parts) noexcept nogil:
    """db_l on the columns and dW_l on the rows of W_l this part owns (db_l not when dZ_l's
    pass summed it: db_in_dz)."""
    cdef Net* net = w.net
    cdef int l = w.layer
    cdef Py_ssize_t m = w.m, n_in = net.sizes[l], n_out = net.sizes[l + 1], lo, hi
    cdef floating* grads = <floating*>net.grads
    cdef floating* db = grads + net.b_off[l]
    # db_l: columns [lo, hi), each summed over the rows in order (as activation_grad does)
    if not w.gemm_only and not db_in_dz(net, m, l, w.n_parts):
        block(n_out, part, n_parts, &lo, &hi)
        bias_gradient(d + lo, m, hi - lo, n_out, acc, db + lo)
    # dW_l = A_{l-1}^T @ dZ_l: the rows of dW_l this part owns (as of W_l)
    w_rows(net, l, part, n_parts, &lo, &hi)
    if hi <= lo:
        return
    if l == 0 and w.sp != NULL:
        sparse_weight_grad(w.sp, m, d, n_out, lo, hi, grads + net.w_off[0])
    else:
        net_gemm(net, True, False, <int>(hi - lo), <int>n_out, <int>m, <floating>1,
                 a_prev + lo, <int>n_in, d, <int>n_out, <floating>0,
                 grads + net.w_off[l] + lo * n_out, <int>n_out)


cdef void dA_part(const Work* w, const floating* a_prev, const floating* d, floating* d_next,
                  double* acc, int part, int n_parts) noexcept nogil:
    """dA_{l-1} = dZ_l @ W_l^T (m x n_in) on a block of rows or of columns (rows of W_l),
    then dZ_{l-1} on the same block (and db_{l-1} with it: db_in_dz)."""
    cdef Net* net = w.net
    cdef int l = w.layer
    cdef Py_ssize_t m = w.m, n_in = net.sizes[l], n_out = net.sizes[l + 1], lo, hi, i
    cdef bint dz
    if l == 0:
        return
    dz = not w.gemm_only and not dropout_on(net.dropout, l - 1)
    if split_columns(m, n_in, n_parts):
        w_rows(net, l, part, n_parts, &lo, &hi)
        if hi > lo:
            weight_gemm(net, l, True, <int>m, <int>(hi - lo), <int>n_out, d, <int>n_out, lo, 0,
                        d_next + lo, <int>n_in)
            if dz and net.activations[l - 1] != ACT_IDENTITY:
                for i in range(m):
                    activation_grad(d_next + i * n_in + lo, a_prev + i * n_in + lo,
                                    d_next + i * n_in + lo, acc, <floating*>NULL, 1, hi - lo,
                                    net.activations[l - 1])
    else:
        block(m, part, n_parts, &lo, &hi)
        if hi > lo:
            weight_gemm(net, l, True, <int>(hi - lo), <int>n_in, <int>n_out, d + lo * n_out,
                        <int>n_out, 0, 0, d_next + lo * n_in, <int>n_in)
            if dz:
                grad_rows(net, l - 1, d_next, lo, hi, acc,
                          <floating*>net.grads + net.b_off[l - 1]
                          if db_in_dz(net, m, l - 1, w.n_parts) else <floating*>NULL)


cdef inline int backward_region_parts(const Net* net, Py_ssize_t m, int l,
                                      int n_parts) noexcept nogil:
    """Parts of layer l's backward region (dW_l, db_l and, but for the first layer, dA):
    small ones run on the caller alone."""
    if (2.0 + 2 * (l > 0)) * m * net.sizes[l] * net.sizes[l + 1] < SMALL_REGION_FLOPS:
        return 1
    return n_parts


cdef inline bint update_in_region(const Net* net, Py_ssize_t m, int l, int n_parts) noexcept nogil:
    """Whether layer l's update may run at the end of its own backward region, after the
    part's dW_l, db_l and dA block: when that part was the only one to read its rows of W_l
    there (dA by columns, i.e. rows of W_l; or no dA: the first layer; or a single part).
    Otherwise (dA by rows of the batch reads all of W_l) it runs in the next region, layer
    l - 1's, which does not read W_l."""
    cdef int parts = backward_region_parts(net, m, l, n_parts)
    return l == 0 or parts == 1 or split_columns(m, net.sizes[l], parts)


cdef void backward_task(void* ctx, int part, int n_parts) noexcept nogil:
    """Part `part` of layer w.layer's backward region; with w.opt_kind (a fused update, see
    parallel_backward) also the update of the layers whose weights this region was the
    last to read (update_in_region)."""
    cdef Work* w = <Work*>ctx
    cdef int l = w.layer
    cdef int saved = blas_enter()
    if w.opt_kind != OPT_NONE and l + 1 < w.net.n_layers and not update_in_region(
            w.net, w.m, l + 1, w.n_parts):
        update_layer(w, l + 1, part, n_parts)
    if w.net.is_double:
        backward_part(w, <const double*>w.d, <double*>w.d_next, part, n_parts)
    else:
        backward_part(w, <const float*>w.d, <float*>w.d_next, part, n_parts)
    if w.opt_kind != OPT_NONE and update_in_region(w.net, w.m, l, w.n_parts):
        update_layer(w, l, part, n_parts)
    blas_leave(saved)


cdef void output_grad_task(void* ctx, int part, int n_parts) noexcept nogil:
    """dZ of layer w.layer from its dA in w.d, on rows: the output layer when its
    activation is not the identity, and hidden layers with dropout (parallel_backward);
    with db_l when one part runs it (db_in_dz)."""
    cdef Work* w = <Work*>ctx
    cdef Net* net = w.net
    cdef Py_ssize_t lo, hi
    cdef bint db = db_in_dz(net, w.m, w.layer, w.n_parts)
    block(w.m, part, n_parts, &lo, &hi)
    if net.is_double:
        grad_rows(net, w.layer, <double*>w.d, lo, hi, part_acc(net, part),
                  <double*>net.grads + net.b_off[w.layer] if db else <double*>NULL)
    else:
        grad_rows(net, w.layer, <float*>w.d, lo, hi, part_acc(net, part),
                  <float*>net.grads + net.b_off[w.layer] if db else <float*>NULL)


cdef void update_layer(const Work* w, int l, int part, int n_parts) noexcept nogil:
    """The update (after optimizer_prepare) of the rows of W_l this part owns (those of its
    dW block and of its inner-split forward and column-split dA blocks), then of the bias
    columns whose gradient it summed. Every update of a step goes through here, once per
    layer and part, after the last read of W_l in the step (update_in_region): the place for
    whatever must follow a layer's new weights."""
    cdef Net* net = w.net
    cdef Py_ssize_t lo, hi, n_out = net.sizes[l + 1]
    cdef int bias
    for bias in range(2):
        if bias:
            block(n_out, part, n_parts, &lo, &hi)
            lo += net.b_off[l]
            hi += net.b_off[l]
        else:
            w_rows(net, l, part, n_parts, &lo, &hi)
            lo = net.w_off[l] + lo * n_out
            hi = net.w_off[l] + hi * n_out
        if net.is_double:
            optimizer_apply(&w.update, <double*>net.params, <const double*>net.grads,
                            <double*>w.state_a, <double*>w.state_b, lo, hi, net.n_weights)
        else:
            optimizer_apply(&w.update, <float*>net.params, <const float*>net.grads,
                            <float*>w.state_a, <float*>w.state_b, lo, hi, net.n_weights)


cdef void update_task(void* ctx, int part, int n_parts) noexcept nogil:
    """The update in a region of its own: every layer's owned blocks."""
    cdef Work* w = <Work*>ctx
    cdef int l
    for l in range(w.net.n_layers):
        update_layer(w, l, part, n_parts)


cdef bint parallel_forward(fm_team* team, const Work* s) noexcept nogil:
    """The training forward of the step s (s.m rows of s.X or s.sp, in s.n_parts parts);
    False if X holds a NaN or an infinity (checked by the parts of the first region, each
    on the block it reads)."""
    cdef Net* net = s.net
    cdef Py_ssize_t m = s.m
    cdef int n_parts = s.n_parts
    cdef Work w = s[0]
    cdef int l, bad_input = 0
    cdef size_t itemsize = 8 if net.is_double else 4
    cdef char* acts = <char*>net.acts
    cdef const char* inp = <const char*>s.X
    w.bad_input = NULL if s.gemm_only else &bad_input
    if rows_everywhere(net, m, n_parts, True):
        fm_team_run(team, forward_task, &w,
                    1 if 2.0 * m * net.n_weights < SMALL_REGION_FLOPS else n_parts)
        return not bad_input
    for l in range(net.n_layers):
        parallel_layer(net, team, n_parts, l, inp,
                       acts + net.a_off[l] * net.max_batch * itemsize, m, True,
                       w.bad_input if l == 0 else NULL, s.sp if l == 0 else NULL)
        inp = acts + net.a_off[l] * net.max_batch * itemsize
    return not bad_input


cdef void parallel_backward(fm_team* team, const Work* s) noexcept nogil:
    """Backward of the step s from dZ of the last layer in delta_a, filling the gradient
    buffer, and the update (s.opt_kind; OPT_NONE: none). Without gradient clipping the
    update is fused into the backward: each part updates its blocks of a layer at the end
    of the last region that reads that layer's weights (update_in_region), or, when the
    batch-split gradients are summed, right after its sums; no region of its own. With
    clipping (its norm needs every gradient) the update runs in a region after the
    backward. One part (the serial step) is the same regions, each run by the caller."""
    cdef Net* net = s.net
    cdef Py_ssize_t m = s.m
    cdef int n_parts = s.n_parts
    cdef Work w = s[0]
    cdef int l
    cdef void* tmp
    cdef bint batch_split = False
    cdef bint fused = s.opt_kind != OPT_NONE and not s.hyper[H_CLIP_NORM] > 0
    for l in range(net.n_layers):
        batch_split = batch_split or split_batch(net, m, l, n_parts)
    w.d = net.delta_a
    w.d_next = net.delta_b
    w.opt_kind = s.opt_kind if fused and not batch_split else OPT_NONE
    if fused:
        # counts the step; the scale is 1 without clipping
        if net.is_double:
            w.update = optimizer_prepare(s.opt_kind, s.hyper, <const double*>net.grads, 0)
        else:
            w.update = optimizer_prepare(s.opt_kind, s.hyper, <const float*>net.grads, 0)
    if net.activations[net.n_layers - 1] != ACT_IDENTITY and not s.gemm_only:
        w.layer = net.n_layers - 1
        fm_team_run(team, output_grad_task, &w, n_parts)
    for l in range(net.n_layers - 1, -1, -1):
        w.layer = l
        fm_team_run(team, backward_task, &w, backward_region_parts(net, m, l, n_parts))
        if l > 0 and dropout_on(net.dropout, l - 1) and not s.gemm_only:
            # dZ_{l-1} in a region of its own: undoing the dropout restores A_{l-1}, which
            # the region above read whole (dW_l), so it may start only when that one ended
            w.layer = l - 1
            w.d, w.d_next = w.d_next, w.d
            fm_team_run(team, output_grad_task, &w, n_parts)
            w.d, w.d_next = w.d_next, w.d
        tmp = w.d
        w.d = w.d_next
        w.d_next = tmp
    if batch_split:
        w.opt_kind = s.opt_kind if fused else OPT_NONE
        fm_team_run(team, gradient_sum_task, &w, n_parts)
    if not fused:
        parallel_update(team, s)


cdef void gradient_sum_part(Net* net, floating* grads, const floating* partials, Py_ssize_t m,
                            int part, int n_parts) noexcept nogil:
    """Into the gradient blocks this part owns (rows of W_l, columns of b_l), the partial
    sums of the other parts of every batch-split layer, in part order."""
    cdef const floating* other
    cdef Py_ssize_t lo, hi, i, n_out
    cdef int l, q, bias
    for l in range(net.n_layers):
        if not split_batch(net, m, l, n_parts):
            continue
        n_out = net.sizes[l + 1]
        for bias in range(2):
            if bias:
                block(n_out, part, n_parts, &lo, &hi)
                lo += net.b_off[l]
                hi += net.b_off[l]
            else:
                w_rows(net, l, part, n_parts, &lo, &hi)
                lo = net.w_off[l] + lo * n_out
                hi = net.w_off[l] + hi * n_out
            for q in range(1, n_parts):
                other = partials + (q - 1) * net.n_params
                for i in range(lo, hi):
                    grads[i] += other[i]


cdef void gradient_sum_task(void* ctx, int part, int n_parts) noexcept nogil:
    """The sums of the batch-split gradients; with w.opt_kind, then the fused update of every
    layer's blocks this part owns (they are complete now)."""
    cdef Work* w = <Work*>ctx
    cdef int l
    if w.net.is_double:
        gradient_sum_part(w.net, <double*>w.net.grads, <const double*>w.net.partials, w.m,
                          part, n_parts)
    else:
        gradient_sum_part(w.net, <float*>w.net.grads, <const float*>w.net.partials, w.m,
                          part, n_parts)
    if w.opt_kind != OPT_NONE:
        for l in range(w.net.n_layers):
            update_layer(w, l, part, n_parts)


cdef void gather_task(void* ctx, int part, int n_parts) noexcept nogil:
    """Part `part` of a batch's gather: the block of X_batch that the same part of the step
    reads first (columns for an inner-split first layer, else rows), so it is written in
    that part's cache rather than moved there from the caller's."""
    cdef Work* w = <Work*>ctx
    cdef const Net* net = w.net
    cdef Py_ssize_t n_in = net.sizes[0], lo, hi, i
    cdef size_t size = 8 if net.is_double else 4
    cdef const int64_t* rows = <const int64_t*>w.inp
    if split_inner(net, w.m, 0, n_parts):
        w_rows(net, 0, part, n_parts, &lo, &hi)
        fm_gather(<char*>w.out_block + lo * size, n_in * size, <const char*>w.X + lo * size,
                  n_in * size, rows, 0, w.m, (hi - lo) * size)
    else:
        block(w.m, part, n_parts, &lo, &hi)
        fm_gather(<char*>w.out_block, n_in * size, <const char*>w.X, n_in * size, rows, lo,
                  hi, n_in * size)


cdef void parallel_gather(Net* net, const char* X, const int64_t* rows, Py_ssize_t m,
                          size_t size, char* X_batch) noexcept nogil:
    """X_batch[i] := X[rows[i]] (rows of n_0 values of `size` bytes), split as the step of
    these m rows will be (compiled epoch)."""
    cdef Work w
    memset(&w, 0, sizeof(Work))
    cdef fm_team team
    cdef int n_parts = step_parts(net, m)
    w.net = net
    w.X = X
    w.inp = rows
    w.out_block = X_batch
    w.m = m
    fm_team_begin(&team, n_parts)
    fm_team_run(&team, gather_task, &w, n_parts)
    fm_team_end(&team)


cdef void parallel_update(fm_team* team, const Work* s) noexcept nogil:
    """The update of the step s in a region of its own (after the backward: clipping)."""
    cdef Net* net = s.net
    cdef Work w = s[0]
    if s.opt_kind == OPT_NONE:
        return
    if net.is_double:
        w.update = optimizer_prepare(s.opt_kind, s.hyper, <const double*>net.grads,
                                     net.n_params)
    else:
        w.update = optimizer_prepare(s.opt_kind, s.hyper, <const float*>net.grads,
                                     net.n_params)
    fm_team_run(team, update_task, &w,
                1 if UPDATE_WORK_PER_PARAM * net.n_params < SMALL_REGION_FLOPS else s.n_parts)


cdef inline void output_activation(const Net* net, floating* out, Py_ssize_t m,
                                   int output) noexcept nogil:
    """In place, the output layer's activation of m rows of scores for `output`
    (PROBABILITIES: probabilities, or the mean exp(z) of an exponential output)."""
    cdef Py_ssize_t n_out = net.sizes[net.n_layers]
    if output == SCORES or net.loss == MEAN_SQUARED_ERROR:
        return
    if net.loss == SOFTMAX_CROSS_ENTROPY:
        if output == PROBABILITIES:
            softmax_rows(out, out, m, n_out)
        else:
            log_softmax_rows(out, out, m, n_out)
    elif net.loss == BINARY_CROSS_ENTROPY:
        sigmoid_outputs(out, out, m * n_out, output == LOG_PROBABILITIES)
    else:
        exp_outputs(out, out, m * n_out)


cdef void infer_rows(const Net* net, const floating* X, Py_ssize_t lo, Py_ssize_t hi,
                     floating* out, floating* buffers, Py_ssize_t chunk,
                     int output) noexcept nogil:
    cdef Py_ssize_t start = lo, rows, n_in = net.sizes[0], n_out = net.sizes[net.n_layers]
    while start < hi:
        rows = min(chunk, hi - start)
        forward(net, X + start * n_in, rows, buffers, chunk * net.max_width,
                out + start * n_out, False)
        start += rows
    if hi > lo:
        output_activation(net, out + lo * n_out, hi - lo, output)


cdef void infer_task(void* ctx, int part, int n_parts) noexcept nogil:
    """Part `part` of a split by rows: its block of the batch through the whole network, in
    pieces as tall as its block of the chunk rows of scratch (for m <= chunk the block of its
    own rows: the products a one-part call runs on them, bit for bit)."""
    cdef Work* w = <Work*>ctx
    cdef Py_ssize_t lo, hi, s_lo, s_hi
    cdef int saved = blas_enter()
    block(w.m, part, n_parts, &lo, &hi)
    block(w.chunk, part, n_parts, &s_lo, &s_hi)
    if w.net.is_double:
        infer_rows(w.net, <const double*>w.X, lo, hi, <double*>w.out,
                   <double*>w.buffers + 2 * s_lo * w.net.max_width, s_hi - s_lo, w.output)
    else:
        infer_rows(w.net, <const float*>w.X, lo, hi, <float*>w.out,
                   <float*>w.buffers + 2 * s_lo * w.net.max_width, s_hi - s_lo, w.output)
    blas_leave(saved)


cdef void parallel_infer(const Net* net, const floating* X, Py_ssize_t m, floating* out,
                         floating* buffers, Py_ssize_t chunk, int output,
                         int n_parts) noexcept nogil:
    """Inference of m rows in n_parts parts: blocks of rows through the whole network when
    every layer splits by rows, else one region per layer and chunk. buffers: 2 x chunk x
    widest layer whatever n_parts (the parts of a split by rows share them, each its block of
    the chunk rows), so a caller's scratch sized for one part stays enough (the C API's)."""
    cdef Work w
    memset(&w, 0, sizeof(Work))
    cdef fm_team team
    cdef Py_ssize_t start = 0, rows, n_in = net.sizes[0], n_out = net.sizes[net.n_layers]
    cdef const floating* inp
    cdef floating* dest
    cdef int l
    w.net = <Net*>net
    w.X = X
    w.m = m
    w.out = out
    w.buffers = buffers
    w.output = output
    chunk = min(m, chunk)
    w.chunk = chunk
    if rows_everywhere(net, chunk, n_parts, False):
        if m > chunk:                   # every part gets rows of scratch
            n_parts = <int>min(n_parts, (chunk + ALIGN - 1) // ALIGN)
        fm_team_begin(&team, n_parts)
        fm_team_run(&team, infer_task, &w, n_parts)
    else:
        fm_team_begin(&team, n_parts)
        while start < m:
            rows = min(chunk, m - start)
            inp = X + start * n_in
            for l in range(net.n_layers):
                dest = (out + start * n_out if l == net.n_layers - 1
                        else buffers + (l % 2) * chunk * net.max_width)
                parallel_layer(<Net*>net, &team, n_parts, l, inp, dest, rows, False, NULL,
                               NULL)
                inp = dest
            start += rows
        output_activation(net, out, m, output)
    fm_team_end(&team)


cdef inline int inference_parts(const Net* net, Py_ssize_t m) noexcept nogil:
    """Parts an inference of m rows is split into (they share one block of scratch)."""
    cdef Py_ssize_t chunk = max(1, min(m, INFERENCE_ROWS))
    cdef int regions = <int>(((m + chunk - 1) // chunk)
                             * (1 if rows_everywhere(net, chunk, 2, False) else net.n_layers))
    cdef int n = n_parts_for(net, 2.0 * m * net.n_weights
                             * (AUTO_WORK_PER_PART / AUTO_INFER_WORK_PER_PART), regions)
    if n > 1 and rows_everywhere(net, chunk, n, False):
        n = min(n, <int>((m + ALIGN - 1) // ALIGN))
    return max(1, n)


cdef object step_plan(const Net* net, Py_ssize_t m):
    """What a training step of m rows runs (Network.step_plan): read from the same
    predicates the passes use, so a test can tell which split a shape really takes."""
    cdef int n = step_parts(net, m), l, parts
    forward = []
    backward = []
    dA = []
    rows_all = n > 1 and rows_everywhere(net, m, n, True)
    for l in range(net.n_layers):
        if n == 1:
            forward.append("serial")
        elif rows_all:
            forward.append("serial" if 2.0 * m * net.n_weights < SMALL_REGION_FLOPS
                           else "rows")
        elif 2.0 * m * net.sizes[l] * net.sizes[l + 1] < SMALL_REGION_FLOPS:
            forward.append("serial")
        elif split_inner(net, m, l, n):
            forward.append("inner")
        elif split_columns(m, net.sizes[l + 1], n) and not rows_only(net, l, True):
            forward.append("columns")
        else:
            forward.append("rows")
        parts = 1 if n == 1 else backward_region_parts(net, m, l, n)
        if parts == 1:
            backward.append("serial")
        elif split_batch(net, m, l, parts):
            backward.append("batch")
        else:
            backward.append("owned")
        if l == 0:
            dA.append(None)
        elif parts == 1:
            dA.append("serial")
        else:
            dA.append("columns" if split_columns(m, net.sizes[l], parts) else "rows")
    return {"parts": n, "forward": tuple(forward), "backward": tuple(backward),
            "dA": tuple(dA)}


cdef object inference_plan(const Net* net, Py_ssize_t m):
    """What an inference of m rows runs (Network.inference_plan), as step_plan."""
    cdef int n = inference_parts(net, m), l
    cdef Py_ssize_t chunk = max(1, min(m, INFERENCE_ROWS))
    layers = []
    rows_all = n > 1 and rows_everywhere(net, chunk, n, False)
    for l in range(net.n_layers):
        if n == 1:
            layers.append("serial")
        elif rows_all:
            layers.append("rows")
        elif 2.0 * chunk * net.sizes[l] * net.sizes[l + 1] < SMALL_REGION_FLOPS:
            layers.append("serial")
        elif split_columns(chunk, net.sizes[l + 1], n):
            layers.append("columns")
        else:
            layers.append("rows")
    return {"parts": n, "forward": tuple(layers)}
