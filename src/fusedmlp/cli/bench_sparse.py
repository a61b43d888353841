"""Sparse table: ``python -m fusedmlp bench sparse``.

A text-like problem (a bag of words): ``--rows`` documents of 20,000 features at 0.5%
density (about 100 stored entries a row, float32 tf-idf-like values), 2 or 10 classes, one
hidden layer of 64 ReLU units, Adam, batches of 200 (scikit-learn's "auto"). Each epoch of
``MLPClassifier.fit`` is timed for: fusedmlp on the CSR matrix (its sparse first layer),
fusedmlp on the same data densified (``X.toarray()``, the GEMM path), and scikit-learn's
``MLPClassifier`` on the CSR matrix. The rounds are interleaved so that a burst of load hits
every contender alike; the table gives the median seconds per epoch over the rounds and
the ratios within this run, and the peak memory traced (tracemalloc) during a one-epoch
fit (beyond the X it is given), beside the sizes of the sparse and the dense X. BLAS is pinned to ``--threads``
threads (threadpoolctl) and fusedmlp runs with ``n_threads`` equal to it.
"""

from __future__ import annotations

import os
import statistics
import sys
import tracemalloc
import warnings

import numpy as np

from ._harness import Case, CommandParser, interleave, markdown, one_call, pinned

__all__ = ["main", "make_data", "measure"]

N_FEATURES, DENSITY, HIDDEN, BATCH = 20_000, 0.005, 64, 200


def make_data(rows, n_classes, n_features=N_FEATURES, density=DENSITY, seed=0):
    """(X CSR float32, y): each class favours its own block of "words"; values are
    log-scaled counts, rows scaled to unit length (as a tf-idf vectoriser leaves them)."""
    import scipy.sparse

    rng = np.random.default_rng(seed)
    per_row = max(1, int(round(n_features * density)))
    y = rng.integers(0, n_classes, rows)
    block = n_features // n_classes
    # 3/4 of a row's words anywhere, 1/4 from its class's block (duplicates summed)
    common = rng.integers(0, n_features, (rows, per_row - per_row // 4))
    topical = y[:, None] * block + rng.integers(0, block, (rows, per_row // 4))
    cols = np.concatenate([common, topical], axis=1).ravel()
    data = np.log1p(rng.poisson(2.0, cols.size) + 1).astype(np.float32)
    X = scipy.sparse.csr_matrix((data, (np.repeat(np.arange(rows), per_row), cols)),
                                shape=(rows, n_features), dtype=np.float32)
    X.sum_duplicates()
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    X = (scipy.sparse.diags(1 / norms).astype(np.float32) @ X).tocsr()
    X.sum_duplicates()          # canonical (the product leaves its indices unsorted)
    return X, y


def _estimators(threads):
    from sklearn.neural_network import MLPClassifier as SkMLP

    from fusedmlp.sklearn import MLPClassifier

    common = dict(hidden_layer_sizes=(HIDDEN,), batch_size=BATCH, random_state=0, tol=0.0,
                  n_iter_no_change=10 ** 6)
    return {"fusedmlp sparse": (lambda e: MLPClassifier(max_iter=e, n_threads=threads,
                                                        **common), "sparse"),
            "fusedmlp dense": (lambda e: MLPClassifier(max_iter=e, n_threads=threads,
                                                       **common), "dense"),
            "scikit-learn sparse": (lambda e: SkMLP(max_iter=e, **common), "sparse")}


def _fit(make, X, y, epochs):
    """A fitted estimator of `make(epochs)` (its ConvergenceWarning silenced: max_iter is the
    point)."""
    estimator = make(epochs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(X, y)
    return estimator


class Fits(Case):
    """Each contender's fit of the same data; a sample is seconds per epoch of one fit."""

    def __init__(self, epochs, X, y):
        self.epochs, self.y = epochs, y
        self.inputs = {"sparse": X, "dense": X.toarray()}
        self.accuracy = {}

    def setup(self, contenders):
        return {name: (lambda name=name, make=make, kind=kind: self.fit(name, make, kind))
                for name, (make, kind) in contenders.items()}

    def fit(self, name, make, kind):
        done = one_call(lambda: _fit(make, self.inputs[kind], self.y, self.epochs))
        self.accuracy[name] = done["value"].score(self.inputs[kind], self.y)
        return done["seconds"] / done["value"].n_iter_


def measure(rows=10_000, n_classes=2, epochs=2, rounds=3, threads=1, memory=True):
    """{"name": {"epoch": median seconds per epoch, "peak": bytes, "accuracy": ...}}, and
    the data's description."""
    X, y = make_data(rows, n_classes)
    contenders = _estimators(threads)
    case = Fits(epochs, X, y)
    results = {name: {} for name in contenders}
    with pinned(threads, user_api="blas"):
        for name, (make, kind) in contenders.items():         # warm-up (imports, pools)
            _fit(make, case.inputs[kind][:2 * BATCH], y[:2 * BATCH], 1)
        samples = interleave(case.setup(contenders), rounds)
        if memory:
            for name, (make, kind) in contenders.items():
                tracemalloc.start()
                try:
                    _fit(make, case.inputs[kind], y, 1)
                    results[name]["peak"] = tracemalloc.get_traced_memory()[1]
                finally:
                    tracemalloc.stop()
    for name, times in samples.items():
        results[name]["epoch"] = statistics.median(times)
        results[name]["train accuracy"] = case.accuracy[name]
    sparse_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    about = {"rows": rows, "features": X.shape[1], "classes": n_classes, "nnz": X.nnz,
             "density": X.nnz / (X.shape[0] * X.shape[1]), "sparse bytes": sparse_bytes,
             "dense bytes": case.inputs["dense"].nbytes}
    return results, about


def table(results) -> str:
    base = results["fusedmlp sparse"]["epoch"]
    rows = [[name, f"{r['epoch']:.3f}", f"{r['epoch'] / base:.1f}×",
             f"{r['peak'] / 2 ** 20:,.1f} MiB" if "peak" in r else "–",
             f"{r['train accuracy']:.3f}"] for name, r in results.items()]
    return markdown(["fit, per epoch", "seconds", "vs fusedmlp sparse", "peak traced memory",
                     "train accuracy"], rows)


def main(argv=None) -> int:
    parser = CommandParser(
        "sparse", "MLPClassifier.fit per epoch on a text-like sparse problem (20,000 features "
                  "at 0.5%): fusedmlp on CSR, fusedmlp on the densified X, scikit-learn on CSR.",
        defaults={"rounds": 3, "rows": 10_000, "epochs": 2},
        quick={"rounds": 1, "rows": 2000, "epochs": 1}, quick_help="2,000 rows, 1 epoch, 1 round")
    parser.add_argument("--rows", type=int, help="documents" + parser.said("rows"))
    parser.add_argument("--classes", type=int, default=2, help="classes (default 2)")
    parser.add_argument("--epochs", type=int, help="epochs per timed fit" + parser.said("epochs"))
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads and fusedmlp's n_threads (default 1)")
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc runs")
    args = parser.parse_args(argv)

    import fusedmlp

    results, about = measure(args.rows, args.classes, args.epochs, args.rounds, args.threads,
                             memory=not args.no_memory)
    blas = fusedmlp.show_config(as_dict=True)["blas"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# fusedmlp bench sparse: {about['rows']:,} rows x {about['features']:,} features, "
          f"{about['density']:.2%} stored ({about['nnz']:,} entries), {about['classes']} "
          f"classes; {about['features']}-{HIDDEN}-{about['classes'] if about['classes'] > 2 else 1} "
          f"ReLU, Adam, batch {BATCH}, float32; median of {args.rounds} interleaved rounds of "
          f"{args.epochs}-epoch fits; {args.threads} thread(s); BLAS {blas['name']}; load "
          f"average {load:.1f}")
    print(f"# X: {about['sparse bytes'] / 2 ** 20:,.1f} MiB as CSR, "
          f"{about['dense bytes'] / 2 ** 20:,.1f} MiB dense")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
