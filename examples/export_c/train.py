"""Train a small classifier, save it and export it as C: ``python train.py DIRECTORY``.

Writes into DIRECTORY: ``blobs.h`` and ``blobs.c`` (the exported model), ``blobs.fmlp`` (the
model, for ``fusedmlp.load``) and ``sample.txt`` (a few rows, one a line, for ``main.c``).
"""

import sys

import numpy as np

import fusedmlp


def main(directory):
    # three classes of points in the plane, around three centres
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 2.0], [-2.0, -1.0], [2.0, -1.0]], np.float32)
    y = rng.integers(0, 3, size=600)
    X = (centres[y] + rng.normal(size=(600, 2))).astype(np.float32)

    model = fusedmlp.MLP([2, 16, 3], activation="tanh", dtype=np.float32, seed=0)
    model.fit(X, y, epochs=20, batch_size=32, optimizer=fusedmlp.Adam(0.01))
    print(f"training accuracy {np.mean(model.predict(X) == y):.3f}")

    model.save(f"{directory}/blobs.fmlp")
    header, source = model.export_c(directory, name="blobs")
    print(f"wrote {header} and {source}")
    np.savetxt(f"{directory}/sample.txt", X[:5], fmt="%.9g")
    print("predict_proba of the sample:")
    print(model.predict_proba(X[:5]))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python train.py DIRECTORY")
    main(sys.argv[1])
