"""Scale-out on Dask: predict, train incrementally and train data-parallel over chunked arrays.

Install with ``pip install "dask[array]" distributed`` (or ``pip install ".[dask]"`` from a
fusedmlp checkout; dask-ml only for its wrappers). Only this module imports dask; ``import fusedmlp`` never does.

Three ways to use many blocks (and many workers):

- :func:`predict_blocks` sends the fitted model to the data: one task per row block calls
  ``predict`` / ``predict_proba`` / ... on its block. The model travels once per worker as a
  pickle of its weights (2.7 MB for a 784-512-512-10 float32 network), never its workspace.
- :func:`partial_fit_blocks` sends the data to the model: the blocks of a Dask array are
  computed one at a time (the next while the current one trains) and fed to the estimator's
  ``partial_fit`` in this process, so memory holds two blocks, not the data set. Training
  is exactly in-memory ``partial_fit`` on the same blocks in the same order.
- :func:`fit_data_parallel` is synchronous data-parallel SGD on a ``distributed`` cluster:
  the rows stay on the workers in shards (Dask actors); every step each shard computes the
  loss and the gradient of its share of the batch at the current weights, this process
  averages them weighted by rows (the mean gradient of the whole batch, exactly) and applies
  one optimiser update, then sends the new weights out with the next step.
  :func:`loss_and_gradients` is the same reduction over a whole Dask array.

dask-ml's wrappers work too: ``dask_ml.wrappers.ParallelPostFit(estimator)`` predicts like
:func:`predict_blocks`, and ``dask_ml.wrappers.Incremental(estimator)`` trains through
``partial_fit`` by moving the *estimator* from worker to worker (pickled between blocks,
so its pickle must carry the optimiser state, which fusedmlp's estimators do).

BLAS threads: a ``distributed`` worker process pins OpenBLAS to one thread per worker by
default; with Dask's local threaded scheduler, pin them yourself
(``threadpoolctl.threadpool_limits(1)``) so the tasks' BLAS pools do not compete.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as exc:                               # pragma: no cover - depends on env
    raise ImportError(
        'fusedmlp.dask needs dask[array] (and distributed for fit_data_parallel): '
        'pip install "dask[array]" distributed (from a fusedmlp checkout: pip install ".[dask]")'
    ) from exc

from ._validation import as_positive_int, describe
from .model import MLP
from .optim import Optimizer

__all__ = ["predict_blocks", "partial_fit_blocks", "loss_and_gradients", "fit_data_parallel"]

_PREDICT_METHODS = ("predict", "predict_proba", "predict_log_proba", "forward",
                    "decision_function", "transform")


# ---------------------------------------------------------------------- inputs
def _as_row_blocked(X, name: str) -> da.Array:
    """X as a 2-D Dask array blocked along rows only (one column block)."""
    if not isinstance(X, da.Array):
        X = da.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.numblocks[1] > 1:
        X = X.rechunk({1: -1})
    return X


def _aligned_targets(y, X: da.Array, name: str = "y") -> da.Array:
    """y as a Dask array with X's row blocks (1-D labels or 2-D targets)."""
    if not isinstance(y, da.Array):
        y = da.asarray(y)
    if y.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D labels or 2-D targets, got shape {y.shape}")
    if not (math.isnan(y.shape[0]) or math.isnan(X.shape[0])) and y.shape[0] != X.shape[0]:
        raise ValueError(f"{name} must have {X.shape[0]} rows like X, got shape {y.shape}")
    if y.chunks[0] != X.chunks[0] or (y.ndim == 2 and y.numblocks[1] > 1):
        y = y.rechunk((X.chunks[0],) + ((-1,) if y.ndim == 2 else ()))
    return y


def _row_blocks(X: da.Array, y: da.Array):
    """Lists of Delayed blocks of X and y, one pair per row block."""
    return list(X.to_delayed().ravel()), list(y.to_delayed().ravel())


# ---------------------------------------------------------------------- prediction
def _apply_method(block, model, method, trailing=(), dtype=None):
    # A block with no rows (a mask that keeps none of them) gives no rows, of the shape and
    # dtype the other blocks have: the in-memory call on the whole array has no such block,
    # and the estimators refuse an empty X.
    if block.shape[0] == 0 and dtype is not None:
        return np.empty((0, *trailing), dtype)
    return getattr(model, method)(block)


def predict_blocks(model, X, *, method="predict"):
    """Apply a fitted model's `method` to every row block of a Dask array, lazily.

    Parameters
    ----------
    model : MLP or a fitted fusedmlp.sklearn estimator (anything with `method`)
        It is embedded in the task graph once and shipped to each worker as a pickle of its
        weights. The graph holds the model object: do not train it before computing.
    X : dask.array.Array or array-like, shape (n_samples, n_features)
        Blocked along rows; several column blocks are merged into one first.
    method : {"predict", "predict_proba", "predict_log_proba", "forward", ...}
        The model's method to call on each block.

    Returns
    -------
    dask.array.Array
        ``(n_samples,)`` or ``(n_samples, n_outputs)`` with X's row blocks, the dtype the
        method returns; equal to calling the method on the whole array in memory.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fusedmlp
    >>> from fusedmlp.dask import predict_blocks
    >>> model = fusedmlp.MLP([4, 8, 3], seed=0)
    >>> X = da.from_array(np.random.default_rng(0).normal(size=(100, 4)), chunks=(25, 4))
    >>> proba = predict_blocks(model, X, method="predict_proba")
    >>> proba.shape, proba.chunks[0]
    ((100, 3), (25, 25, 25, 25))
    >>> bool(np.allclose(proba.compute(), model.predict_proba(X.compute())))
    True
    """
    if not isinstance(method, str) or method not in _PREDICT_METHODS:
        raise ValueError(f"method must be one of {list(_PREDICT_METHODS)}, got {method!r}")
    if not callable(getattr(model, method, None)):
        raise AttributeError(f"model must have a {method}() method, got {type(model).__name__}")
    X = _as_row_blocked(X, "X")
    # One row through the method fixes the output's trailing shape and dtype (and refuses an
    # unfitted estimator or a wrong column count here, not on a worker).
    probe = np.asarray(_apply_method(np.zeros((1, X.shape[1]), X.dtype), model, method))
    if probe.ndim == 1:
        chunks, drop_axis = (X.chunks[0],), 1
    elif probe.ndim == 2:
        chunks, drop_axis = (X.chunks[0], (probe.shape[1],)), None
    else:
        raise ValueError(f"{method} returned an array of shape {probe.shape}; expected 1-D or 2-D")
    model_node = dask.delayed(model, pure=True)
    return X.map_blocks(_apply_method, model_node, method, probe.shape[1:], probe.dtype,
                        chunks=chunks, drop_axis=drop_axis, dtype=probe.dtype, meta=np.empty((0,) * probe.ndim, probe.dtype))


# ---------------------------------------------------------------------- incremental training
def _is_unfitted_classifier(estimator) -> bool:
    try:
        from sklearn.base import is_classifier
    except ImportError:                  # without scikit-learn there are no sklearn classifiers
        return False
    return is_classifier(estimator) and not hasattr(estimator, "classes_")


def partial_fit_blocks(estimator, X, y, *, epochs=1, classes=None, shuffle_blocks=True,
                       random_state=None, prefetch=True, **fit_params):
    """Train `estimator` on a Dask array by streaming its row blocks through ``partial_fit``.

    Each epoch visits every row block once (in a random order with `shuffle_blocks`); a
    block is computed (on the cluster, if a ``distributed.Client`` is the default scheduler)
    and handed to ``estimator.partial_fit`` in this process, while the next block is being
    computed (`prefetch`). At most two blocks are in memory here at once. The result is the
    same as calling ``partial_fit`` on the in-memory blocks in the same order. A block with no
    rows (``X[mask]`` where the mask keeps none of a block's rows) is skipped; when every block
    is empty, ``ValueError`` is raised and the estimator is unchanged.

    Parameters
    ----------
    estimator : an estimator with ``partial_fit``, or an MLP
        Trained in place. An ``MLP`` is trained by ``fit(block, epochs=1, optimizer=...)``
        per block, which needs an ``Optimizer`` instance in `fit_params` (its state must
        persist from block to block), e.g. ``optimizer=fusedmlp.Adam(1e-3), batch_size=32``.
    X : dask.array.Array or array-like, shape (n_samples, n_features)
    y : dask.array.Array or array-like, shape (n_samples,) or (n_samples, n_outputs)
        Rechunked to X's row blocks when they differ.
    epochs : int
        Passes over all blocks.
    classes : array-like, optional
        Passed to every ``partial_fit`` call. For an unfitted scikit-learn classifier it is
        computed from `y` (one extra pass over `y`) when not given.
    shuffle_blocks : bool
        Visit the blocks in a fresh random order every epoch.
    random_state : int, numpy Generator or None
        Seeds the block order.
    prefetch : bool
        Compute the next block in a background thread while the current one trains.
    **fit_params
        Passed to every ``partial_fit`` (or ``MLP.fit``) call.

    Returns
    -------
    estimator
        The same object, trained.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fusedmlp
    >>> from fusedmlp.dask import partial_fit_blocks
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 4)).astype(np.float32); y = (X[:, 0] > 0).astype(int)
    >>> Xd, yd = da.from_array(X, chunks=100), da.from_array(y, chunks=100)
    >>> model = fusedmlp.MLP([4, 16, 2], seed=0)
    >>> model = partial_fit_blocks(model, Xd, yd, epochs=5, random_state=0,
    ...                            optimizer=fusedmlp.Adam(0.01), batch_size=20)
    >>> bool(model.score(X, y) > 0.9)
    True
    """
    epochs = as_positive_int(epochs, "epochs")
    X = _as_row_blocked(X, "X")
    y = _aligned_targets(y, X)
    if not math.isnan(X.shape[0]) and X.shape[0] == 0:
        raise ValueError("X is empty: training needs at least one sample")
    if hasattr(estimator, "partial_fit"):
        if classes is None and _is_unfitted_classifier(estimator):
            classes = np.unique(da.unique(y).compute())
        if classes is not None:
            fit_params["classes"] = classes

        def train(X_block, y_block):
            estimator.partial_fit(X_block, y_block, **fit_params)
    elif isinstance(estimator, MLP):
        if not isinstance(fit_params.get("optimizer"), Optimizer):
            raise TypeError(
                "an MLP trained block by block needs optimizer= an Optimizer instance (its "
                "state carries over between blocks), got "
                f"{describe(fit_params.get('optimizer'))}"
            )
        if classes is not None:
            raise TypeError("classes applies to scikit-learn classifiers, not to an MLP")

        def train(X_block, y_block):
            estimator.fit(X_block, y_block, epochs=1, **fit_params)
    else:
        raise TypeError(
            "estimator must have a partial_fit method or be a fusedmlp.MLP, got "
            f"{describe(estimator)}"
        )

    X_blocks, y_blocks = _row_blocks(X, y)
    rng = np.random.default_rng(random_state)
    order = [int(i) for epoch in range(epochs)
             for i in (rng.permutation(len(X_blocks)) if shuffle_blocks else range(len(X_blocks)))]

    def load(i):
        return dask.compute(X_blocks[i], y_blocks[i])

    trained = 0

    def train_rows(X_block, y_block):
        # A block with no rows (a mask that keeps none of its rows) is skipped: training on
        # X[mask] is training on the rows the mask keeps, which in memory has no such block,
        # and partial_fit refuses an empty X.
        nonlocal trained
        if X_block.shape[0]:
            train(X_block, y_block)
            trained += 1

    if not prefetch:
        for i in order:
            train_rows(*load(i))
    else:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fusedmlp-prefetch") as pool:
            pending = pool.submit(load, order[0])
            for position in range(len(order)):
                X_block, y_block = pending.result()
                if position + 1 < len(order):
                    pending = pool.submit(load, order[position + 1])
                train_rows(X_block, y_block)
    if not trained:
        raise ValueError("X is empty: training needs at least one sample (every row block of X "
                         "has no rows; the estimator is unchanged)")
    return estimator


# ---------------------------------------------------------------------- gradients
def _check_model(model):
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a fusedmlp.MLP, got {describe(model)}")


def _replica(state) -> MLP:
    """A private MLP with the state's architecture and weights (tasks never share one)."""
    return MLP.from_state_dict(state)


def _block_gradient(state, X_block, y_block):
    """(rows, rows * loss, float64 rows * flat gradient) of one block at the state's weights."""
    replica = _replica(state)
    rows = X_block.shape[0]               # (len() of a scipy sparse block raises)
    if rows == 0:
        return 0, 0.0, np.zeros(replica.n_parameters)
    loss, _ = replica.loss_and_gradients(X_block, y_block)
    # Block means weighted by their rows: the sum over blocks divided by the total row count
    # is the mean over all rows, whatever the block sizes. Summed in float64.
    return rows, rows * loss, rows * replica.gradients.astype(np.float64)


def _add_parts(a, b):
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def loss_and_gradients(model, X, y):
    """The mean loss and gradient of `model` over all rows of a Dask array.

    Each row block computes its loss and gradient at the model's weights (on a worker, or a
    thread of the local scheduler); the block results, weighted by their row counts, are
    summed in float64 by a tree reduction and divided by the number of rows. The result is
    ``model.loss_and_gradients(X, y)`` on the whole data, which need not fit in one process.
    Blocks with no rows add nothing; an X with no rows at all (known only after computing,
    for ``X[mask]``) raises ``ValueError`` like the in-memory call.

    Parameters
    ----------
    model : MLP
        Not modified (each task works on its own copy of the weights).
    X : dask.array.Array or array-like, shape (n_samples, n_features)
    y : dask.array.Array or array-like
        Integer labels (or target probabilities) for a softmax model, targets for a regressor.

    Returns
    -------
    loss : float
    gradients : list of (dW, db)
        In layer order, in the model's dtype, like ``MLP.loss_and_gradients``.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fusedmlp
    >>> from fusedmlp.dask import loss_and_gradients
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(90, 4)); y = rng.integers(0, 3, 90)
    >>> model = fusedmlp.MLP([4, 8, 3], dtype=np.float64, seed=0)
    >>> X_dask, y_dask = da.from_array(X, chunks=40), da.from_array(y, chunks=40)
    >>> loss, grads = loss_and_gradients(model, X_dask, y_dask)
    >>> expected_loss, expected = model.loss_and_gradients(X, y)
    >>> bool(np.isclose(loss, expected_loss) and np.allclose(grads[0][0], expected[0][0]))
    True
    """
    _check_model(model)
    X = _as_row_blocked(X, "X")
    y = _aligned_targets(y, X)
    if not math.isnan(X.shape[0]) and X.shape[0] == 0:
        raise ValueError("X is empty: the loss needs at least one sample")
    state = dask.delayed(model.state_dict(), pure=True)
    parts = [dask.delayed(_block_gradient, pure=True)(state, X_block, y_block)
             for X_block, y_block in zip(*_row_blocks(X, y))]
    while len(parts) > 1:                     # pairwise: log2(blocks) levels of additions
        paired = [dask.delayed(_add_parts, pure=True)(a, b)
                  for a, b in zip(parts[::2], parts[1::2])]
        parts = paired + (parts[-1:] if len(parts) % 2 else [])
    rows, loss_sum, gradient_sum = parts[0].compute()
    if rows == 0:
        # The row count was unknown until now (X[mask] has unknown block sizes): every block
        # is empty, the same refusal as for an X known to be empty.
        raise ValueError("X is empty: the loss needs at least one sample (every row block of X "
                         "has no rows)")
    flat = (gradient_sum / rows).astype(model.dtype)
    return loss_sum / rows, model.layout.views(flat)


# ---------------------------------------------------------------------- data-parallel training
class _Shard:
    """The rows one worker trains on, with a scratch model to compute their gradients.

    A Dask actor: it lives in one worker's memory for the whole training run and its
    method calls go straight from the client to that worker, one round trip per step,
    without the scheduler. The scratch model's weights are overwritten from the parameters
    sent with every call, so the shard holds no training state of its own.
    """

    def __init__(self, state, seed, X_blocks, y_blocks):
        self.model = _replica(state)
        self.X, self.y = self.model.check_data(
            np.concatenate(X_blocks) if len(X_blocks) > 1 else X_blocks[0],
            np.concatenate(y_blocks) if len(y_blocks) > 1 else y_blocks[0])
        self.seed = seed
        self.epoch, self.parts = None, None

    def gradient(self, params, epoch, step, steps):
        """(rows, loss, flat gradient) of this shard's share of step `step` of `epoch`."""
        if self.epoch != epoch:
            # Every epoch a fresh permutation of the shard's rows, cut into `steps` parts of
            # nearly equal size: step s takes part s from every shard, so a global batch is
            # drawn from all shards in proportion to their sizes.
            order = np.random.default_rng([*self.seed, epoch]).permutation(len(self.X))
            self.epoch, self.parts = epoch, np.array_split(order, steps)
        rows = self.parts[step]
        if len(rows) == 0:
            return 0, 0.0, None
        self.model.parameters[...] = params
        loss, _ = self.model.loss_and_gradients(self.X[rows], self.y[rows])
        return len(rows), loss, self.model.gradients.copy()


def _default_client():
    try:
        from distributed import get_client
    except ImportError as exc:
        raise ImportError("fit_data_parallel needs the distributed package: "
                          'pip install distributed (from a fusedmlp checkout: '
                          'pip install ".[dask]")') from exc
    try:
        return get_client()
    except ValueError:
        raise ValueError(
            "fit_data_parallel needs a distributed.Client and none is running: start one "
            "(distributed.Client() or Client(LocalCluster(...))) or pass client="
        ) from None


def fit_data_parallel(model, X, y, *, optimizer, epochs=1, batch_size=256, client=None,
                      n_shards=None, seed=None, verbose=0):
    """Synchronous data-parallel training of `model` on a ``distributed`` cluster.

    The row blocks of (X, y) are grouped into `n_shards` shards, each held in a worker's
    memory. Every step, each shard computes the mean loss and gradient of its part of the
    batch at the current weights (``MLP.loss_and_gradients``); this process averages the
    parts weighted by their row counts -- which is exactly the mean gradient of the whole
    batch -- and applies one update with `optimizer`. Then the new weights go out with the
    next step. It is mini-batch training whose batches are drawn from all shards; batch
    composition depends on `seed` and `n_shards`, not on where Dask puts the shards.

    Parameters
    ----------
    model : MLP
        Trained in place (the weights live here; workers get a copy every step).
    X : dask.array.Array or array-like, shape (n_samples, n_features)
    y : dask.array.Array or array-like
        Integer labels (or target probabilities) for a softmax model, targets for a regressor.
    optimizer : Optimizer
        Its state (momentum, moments) stays in this process.
    epochs, batch_size : int
        An epoch is ``ceil(n_samples / batch_size)`` steps; every row is used once per epoch.
    client : distributed.Client, optional
        The default client when not given.
    n_shards : int, optional
        One per worker by default (at most one per row block). Shard k goes to worker
        ``k % n_workers``.
    seed : int, optional
        Seeds the per-epoch row order of every shard.
    verbose : int
        1 prints one line per epoch.

    Returns
    -------
    dict
        ``loss`` (mean training loss of each epoch's steps), ``time`` (seconds per epoch)
        and ``steps`` (updates applied).

    Notes
    -----
    The shards are Dask actors: a step is one direct round trip to each worker (no
    scheduler), shipping the weights out and a gradient back (4 bytes per float32 parameter
    each way). That pays off only when computing a shard's gradient takes much longer than
    the round trip -- large batches and networks, several machines. On one 2-core machine
    it is slower than ``MLP.fit``; its use is data that does not fit in one process. An
    actor dies with its worker: losing a worker mid-run raises, it is not recomputed.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fusedmlp
    >>> from distributed import Client, LocalCluster
    >>> from fusedmlp.dask import fit_data_parallel
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 4)).astype(np.float32); y = (X[:, 0] > 0).astype(int)
    >>> with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
    ...                   dashboard_address=None) as cluster, Client(cluster) as client:
    ...     model = fusedmlp.MLP([4, 16, 2], seed=0)
    ...     history = fit_data_parallel(model, da.from_array(X, chunks=100),
    ...                                 da.from_array(y, chunks=100), epochs=5,
    ...                                 batch_size=40, optimizer=fusedmlp.Adam(0.01), seed=0)
    >>> bool(model.score(X, y) > 0.9)
    True
    """
    _check_model(model)
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"optimizer must be a fusedmlp Optimizer instance, got {describe(optimizer)}")
    epochs = as_positive_int(epochs, "epochs")
    batch_size = as_positive_int(batch_size, "batch_size")
    client = client if client is not None else _default_client()
    X = _as_row_blocked(X, "X")
    if X.shape[1] != model.n_features:
        raise ValueError(f"X must have {model.n_features} columns, got shape {X.shape}")
    y = _aligned_targets(y, X)
    if any(math.isnan(c) for c in X.chunks[0]):
        X, y = X.compute_chunk_sizes(), y.compute_chunk_sizes()
    n_samples = X.shape[0]
    if n_samples == 0:
        raise ValueError("X is empty: training needs at least one sample")
    # ncores() asks the scheduler now; scheduler_info() falls back to a cache without the
    # workers when its query fails (seen under load: "no workers" with two running)
    workers = sorted(client.ncores())
    if not workers:
        raise ValueError("the client has no workers")
    n_blocks = X.numblocks[0]
    n_shards = len(workers) if n_shards is None else as_positive_int(n_shards, "n_shards")
    n_shards = min(n_shards, n_blocks)
    entropy = np.random.SeedSequence(seed).entropy

    state = model.state_dict()
    X_blocks, y_blocks = _row_blocks(X, y)
    handles = []                          # the actors' futures: releasing them ends the actors
    try:
        for k, blocks in enumerate(np.array_split(np.arange(n_blocks), n_shards)):
            X_parts = client.compute([X_blocks[i] for i in blocks])
            y_parts = client.compute([y_blocks[i] for i in blocks])
            handles.append(client.submit(_Shard, state, (entropy, k), X_parts, y_parts,
                                         workers=[workers[k % len(workers)]], actor=True,
                                         pure=False))
            del X_parts, y_parts          # the shard keeps what it needs
        shards = client.gather(handles)   # raises here if a shard refused its data

        steps = math.ceil(n_samples / batch_size)
        history = {"loss": [], "time": [], "steps": 0}
        gradient_sum = np.empty(model.n_parameters, np.float64)
        for epoch in range(epochs):
            start, epoch_loss = time.perf_counter(), 0.0
            for step in range(steps):
                params = model.parameters.copy()
                calls = [shard.gradient(params, epoch, step, steps) for shard in shards]
                gradient_sum[...] = 0.0
                rows_total, loss_sum = 0, 0.0
                for call in calls:
                    rows, loss, gradient = call.result()
                    if rows:
                        # Shard means weighted by rows, summed in float64: the batch mean.
                        rows_total += rows
                        loss_sum += rows * loss
                        gradient_sum += rows * gradient.astype(np.float64)
                loss = loss_sum / rows_total
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"the loss is not finite (NaN or inf) in epoch {epoch + 1}, step "
                        f"{step + 1}; no update was applied")
                model.gradients[...] = gradient_sum / rows_total
                optimizer.step(model)
                epoch_loss += loss * rows_total
                history["steps"] += 1
            history["loss"].append(epoch_loss / n_samples)
            history["time"].append(time.perf_counter() - start)
            if verbose:
                print(f"epoch {epoch + 1}/{epochs}: loss={history['loss'][-1]:.4g} "
                      f"time={history['time'][-1]:.3g}s", flush=True)
    finally:
        client.cancel(handles)
    return history
