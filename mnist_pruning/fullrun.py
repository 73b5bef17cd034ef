"""The full run: every experiment, every chapter executed with full parameters, the book, and a record of it.

Usage::

    mnist-pruning run --full            # or: bash scripts/main.sh --full; seeds 0 1 2 unless --seeds
    from mnist_pruning.fullrun import full_run
    record = full_run(SweepConfig(schedules=SCHEDULES, seeds=(0, 1, 2)), workers=2)

Stages (each one resumes: finished experiments stay in the CSVs, baselines are reused from ``runs/``):

1. the sweep: both models x every method x every ratio / N:M pattern / schedule x every seed -> ``results/*.csv``,
   on ``workers`` local processes or the Dask cluster at ``scheduler`` (see :mod:`mnist_pruning.parallel`);
   then the compression grid for every seed (:func:`mnist_pruning.compress.run_compression_sweep`: gradual
   pruning, k-means weight sharing, centroid fine-tuning, entropy coding) -> ``results/compression_results.csv``;
2. the chapters, executed by papermill with the parameters below -> ``results/notebooks/*.ipynb``;
3. the book, built offline from those notebooks and CSVs -> ``book/_build/html``;
4. ``results/run.json``: settings (seeds included), where the sweep ran (workers or scheduler), library versions,
   machine, the wall time of every stage, and where the sweep's time went (:func:`_sweep_time`).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from . import __version__
from .compress import run_compression_sweep
from .compress.grid import _compress_config_of
from .files import _atomic_write, _check_writable_dir, _load_torch
from .frontier import choose_recipes
from .parallel import _WORKER_THREADS, _check_workers, _default_workers, _sweep_executor
from .results import load_results
from .runner import _baseline_path
from .settings import paths
from .sweep import SweepConfig, _settings_json, run_sweep

__all__ = ["full_run"]

# What each chapter shows in the published book (papermill parameters on top of the notebook's defaults).
_CHAPTER_PARAMETERS: dict[str, dict] = {
    "01_baseline": {"model": "both"},
    "02_prune": {"model": "mlp", "method": "global", "ratio": 0.9},
    "03_structured": {"model": "cnn", "ratio": 0.5},
    "04_nm": {"model": "cnn", "n": 2, "m": 4},
    "05_compare": {},
    "06_frontier": {"model": "mlp", "ratio": 0.99},
    "07_compress": {"model": "cnn", "sparsity": 0.95, "bits_conv": 6, "bits_fc": 4},
}


def _execute_chapters(
    out_dir: str | os.PathLike,
    results_dir: str | os.PathLike,
    chapters: dict[str, dict] | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Execute the notebooks with papermill into ``out_dir``; return seconds per chapter.

    Progress bars are switched off (``TQDM_DISABLE``) so the published pages hold results, not bars.
    """
    import papermill as pm

    root = paths().root
    out = _check_writable_dir(out_dir)
    seconds = {}
    user_setting = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        for name, params in (_CHAPTER_PARAMETERS if chapters is None else chapters).items():
            declared = pm.inspect_notebook(str(root / "notebooks" / f"{name}.ipynb"))
            if "results_dir" in declared and "results_dir" not in params:
                # relative to the notebooks' folder, so the published pages show no machine-specific paths
                params = {
                    **params,
                    "results_dir": os.path.relpath(Path(results_dir).resolve(), root / "notebooks"),
                }
            start = time.perf_counter()
            with _atomic_write(out / f"{name}.ipynb") as tmp:
                pm.execute_notebook(
                    str(root / "notebooks" / f"{name}.ipynb"),
                    str(tmp),
                    parameters=params,
                    cwd=str(root / "notebooks"),
                    progress_bar=progress,
                    kernel_name="python3",
                )
            seconds[name] = round(time.perf_counter() - start, 1)
    finally:
        if user_setting is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = user_setting
    return seconds


def _sweep_time(config: SweepConfig, wall_seconds: float, workers: int | None) -> dict:
    """Where a sweep's time went, from what it saved: the training seconds of each baseline (its checkpoint's
    history) and of the experiments (the rows' ``finetune_seconds``, per model and schedule), against the
    worker-seconds the sweep had (``wall_seconds`` x ``workers``; None with a Dask scheduler). ``other`` is the
    rest: measurement (latencies, evaluations), file writing, process start-up and workers idle at the end.
    Rows and baselines of an earlier run that this one resumed count too, so ``other`` can be negative then."""
    p = config.paths
    baselines: dict[str, float] = {}
    for arch in config.models:
        for seed in config.seeds:
            path = _baseline_path(p.runs, arch, seed)
            history = _load_torch(path)["history"] if path.exists() else []
            baselines[arch] = round(baselines.get(arch, 0.0) + (history[-1]["seconds"] if history else 0.0), 1)
    experiments: dict[str, dict[str, float]] = {}
    try:
        rows = load_results(p.results, models=config.models, per_seed=True)
    except FileNotFoundError:
        rows = None
    if rows is not None:
        rows = rows[rows["seed"].isin(config.seeds)]
        for (arch, schedule), seconds in rows.groupby(["model", "schedule"])["finetune_seconds"].sum().items():
            experiments.setdefault(arch, {})[schedule] = round(float(seconds), 1)
    training = sum(baselines.values()) + sum(s for by in experiments.values() for s in by.values())
    available = None if workers is None else round(wall_seconds * workers, 1)
    return {
        "worker_seconds": available,
        "baseline_training": baselines,
        "experiment_training": experiments,
        "training_total": round(training, 1),
        "other": None if available is None else round(available - training, 1),
    }


def _commit() -> str:
    """The checkout's commit (with "+changes" when files differ from it), or "" outside a git checkout."""
    root = paths().root
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return ""
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def full_run(
    config: SweepConfig,
    progress: bool = True,
    book: bool = True,
    workers: int | None = None,
    scheduler: str | None = None,
) -> dict:
    """Run the stages of the module docstring; return (and write to ``results/run.json``) the record.

    ``workers``: local worker processes for the sweep (None: one per core; 1: in this process); ``scheduler``: a
    Dask scheduler's address instead (see :mod:`mnist_pruning.parallel`)."""
    p = config.paths
    _check_writable_dir(p.results)
    if scheduler is None:
        workers = _default_workers() if workers is None else _check_workers(workers)
    record: dict = {
        "settings": json.loads(_settings_json(config)),
        "versions": {
            "mnist_pruning": __version__,
            "commit": _commit(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "machine": {
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "platform": platform.platform(),
        },
        "sweep": {
            "seeds": list(config.seeds),
            "workers": workers,  # local processes (None with a scheduler)
            # torch threads per worker; in this process (workers=1) whatever it was given
            "worker_threads": torch.get_num_threads() if workers == 1 and scheduler is None else _WORKER_THREADS,
            "scheduler": scheduler,
        },
        "seconds": {},
    }
    start = time.perf_counter()
    with _sweep_executor(workers, scheduler) as executor:
        run_sweep(config, progress=progress, executor=executor)
        record["seconds"]["sweep"] = round(time.perf_counter() - start, 1)
        t = time.perf_counter()
        recipes = dict(config.recipes)
        if "frontier" in config.schedules:  # chosen on validation from the ablation, as the sweep chose them
            missing = tuple(arch for arch in config.models if arch not in recipes)
            recipes.update(choose_recipes(p.results, missing) if missing else {})
        record["recipes"] = recipes
        # every seed prunes its own baseline, as in the sweep, on the same workers, with the frontier's recipe
        run_compression_sweep(_compress_config_of(config, recipes=recipes), progress=progress, executor=executor)
        record["seconds"]["compression"] = round(time.perf_counter() - t, 1)
    record["sweep_time"] = _sweep_time(config, record["seconds"]["sweep"], workers if scheduler is None else None)

    executed = p.results / "notebooks"
    record["seconds"]["chapters"] = _execute_chapters(executed, p.results, progress=progress)
    if book:
        from .book import _build

        t = time.perf_counter()
        _build(executed_dir=executed, results_dir=p.results, require_all=True)
        record["seconds"]["book"] = round(time.perf_counter() - t, 1)
    record["seconds"]["total"] = round(time.perf_counter() - start, 1)
    with _atomic_write(Path(p.results) / "run.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return record
