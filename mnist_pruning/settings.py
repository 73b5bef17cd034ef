"""Where things live, and the smoke configuration used by tests and CI.

Usage::

    from mnist_pruning.settings import paths, smoke_mode
    p = paths()                  # _Paths(root, data, runs, results) resolved for this checkout / Colab
    if smoke_mode():             # MNIST_PRUNING_SMOKE=1: tiny budgets so notebooks execute in seconds
        ...

Notebooks run with different working directories (papermill: the caller's; nbval and JupyterLab: the notebook's
folder; Colab: ``/content``, also after a restart), so paths are resolved from the project root: the checkout this
package was imported from (an editable install or ``PYTHONPATH``), else the nearest folder upwards of the current
directory holding this project's ``pyproject.toml``, else the current directory.

In smoke mode every output goes under ``runs/smoke/``, so a test run never touches the committed ``results/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["paths", "smoke_mode", "SMOKE", "display_path"]

_SMOKE_ENV = "MNIST_PRUNING_SMOKE"


@dataclass(frozen=True)
class _SmokeBudget:
    """The small configuration notebooks and tests switch to when ``MNIST_PRUNING_SMOKE=1``."""

    subset: int = 2000  # class-balanced training images
    test_subset: int = 1000  # class-balanced test images
    val_subset: int = 1000  # class-balanced part of the validation hold-out
    epochs: int = 1  # baseline epochs
    finetune_epochs: int = 1  # fine-tuning epochs


SMOKE = _SmokeBudget()


@dataclass(frozen=True)
class _Paths:
    root: Path  # the project checkout (or the current directory outside one)
    data: Path | None  # MNIST root; None lets mnist_pruning.data resolve $MNIST_PRUNING_DATA / ./data
    runs: Path  # checkpoints and compact files
    results: Path  # CSVs and figures


def smoke_mode() -> bool:
    """True when ``$MNIST_PRUNING_SMOKE`` is set to something other than ``""``/``0``/``false``."""
    return os.environ.get(_SMOKE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _is_project(folder: Path) -> bool:
    toml = folder / "pyproject.toml"
    return toml.is_file() and 'name = "mnist-pruning"' in toml.read_text(errors="ignore")


def _project_root(start: str | os.PathLike | None = None) -> Path:
    """The project checkout: with ``start``, the nearest folder at or above it whose pyproject.toml is this
    project's (else ``start``). Without, first the checkout holding this package, then the same search from the
    current directory."""
    if start is None:
        # The package's own checkout wins over the cwd: Colab restarts a kernel in /content, not in the clone.
        package_checkout = Path(__file__).resolve().parent.parent
        if _is_project(package_checkout):
            return package_checkout
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if _is_project(folder):
            return folder
    return here


def paths(
    data_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    results_dir: str | os.PathLike | None = None,
) -> _Paths:
    """Resolve the data, runs and results folders (arguments win; smoke mode redirects the defaults)."""
    root = _project_root()
    smoke = smoke_mode()
    base_runs = root / "runs" / "smoke" if smoke else root / "runs"
    if data_dir in (None, "") and not os.environ.get("MNIST_PRUNING_DATA"):
        data_dir = root / "data"
    runs = Path(out_dir) if out_dir not in (None, "") else base_runs
    results = (
        Path(results_dir)
        if results_dir not in (None, "")
        else (base_runs / "results" if smoke else root / "results")
    )
    return _Paths(
        root=root, data=Path(data_dir) if data_dir not in (None, "") else None, runs=runs, results=results
    )


def _show_progress(progress: bool) -> bool:
    """Whether to draw a progress bar: ``progress``, unless ``$TQDM_DISABLE`` is set. tqdm reads that variable
    only for arguments left at their defaults, and this package always passes ``disable=``, so the published
    chapters (executed with ``TQDM_DISABLE=1``) would otherwise still show bars."""
    return progress and os.environ.get("TQDM_DISABLE", "").strip().lower() in ("", "0", "false", "no")


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the project root when inside it, so published pages show no machine's folders."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(_project_root()))
    except ValueError:
        return str(p)
