"""Side-by-side timing of fusedmlp, pure NumPy, PyTorch and scikit-learn (see fusedmlp.cli.bench).

    python benchmarks/compare.py --quick     # about a minute
    python benchmarks/compare.py             # the full table (under ten minutes)

The same as ``python -m fusedmlp bench``; all options: ``--help``.
"""

import sys

from fusedmlp.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
