"""Maintainers: re-execute the chapters in smoke mode and keep only the outputs nbval checks.

Usage::

    MNIST_PRUNING_SMOKE=1 .venv/bin/python scripts/refresh_notebooks.py notebooks/02_prune.ipynb ...

The committed notebooks carry no outputs (readers run them, the book shows the full run's executed copies),
except cells marked ``# NBVAL_CHECK_OUTPUT``: nbval compares their output with the stored one, so it must be
stored, and it must not depend on the smoke configuration (counts, shapes, exact sparsities).
"""

import os
import sys

import nbformat
import papermill as pm


def refresh(path: str) -> None:
    if os.environ.get("MNIST_PRUNING_SMOKE") != "1":
        raise SystemExit("run with MNIST_PRUNING_SMOKE=1")
    executed = pm.execute_notebook(path, None, progress_bar=False, cwd=os.path.dirname(path) or ".")
    nb = nbformat.read(path, as_version=4)
    for cell, ran in zip(nb.cells, executed.cells, strict=True):
        if cell.cell_type != "code":
            continue
        keep = cell.source.lstrip().startswith("# NBVAL_CHECK_OUTPUT")
        # nbval refuses stored outputs without an execution count ("unrun reference cell has outputs")
        cell.execution_count = ran.execution_count if keep else None
        cell.outputs = [o for o in ran.outputs if o.get("name") != "stderr"] if keep else []
    nbformat.write(nb, path)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        refresh(p)
        print("refreshed", p)
