"""One experiment runner for every study: what is pending, cached models, configuration hashes, accuracies, rows.

Usage::

    from mnist_pruning.runner import run_study
    from mnist_pruning.sweep import SweepConfig, SweepStudy
    run_study(SweepStudy(SweepConfig(models=("mlp",), seeds=(0, 1))), workers=2)

A study (:class:`Study`) supplies its configuration (a :class:`~mnist_pruning.config.RunConfig`), the schema of
the CSV it fills (:mod:`mnist_pruning.results`), its points per seed, the run key and hash of a point, and how to
run a group of points on a baseline. The runner does the rest, the same way for the pruning sweep and the
compression grid:

- **pending**: a point whose run key (with its configuration hash) is in the CSV is skipped, so a stopped run
  resumes and a changed configuration gets new rows instead of replacing old ones;
- **baselines first**: one task per model and seed trains (or loads, :func:`baseline`) the dense baseline and
  measures it; each group of points starts as soon as its seed's baseline is saved;
- **where tasks run**: any :class:`concurrent.futures.Executor` (:mod:`mnist_pruning.parallel`: this process,
  local worker processes, a Dask cluster). Every task seeds torch itself, loads its data and baseline from the
  folders the parent resolved, and returns rows; only the calling process writes the CSV, row by row, so a failed
  task loses no other row (:class:`SweepError` names what failed after the others are recorded).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import json
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import RunConfig
from .data import MNISTData, fetch_mnist
from .files import CorruptFileError, _check_writable_dir
from .parallel import _WORKER_THREADS, _available_cores, _check_workers, _InlineExecutor, _sweep_executor
from .results import Schema, append_row, read_results
from .settings import _show_progress
from .train import TrainConfig, _get_device, _load_checkpoint, _save_checkpoint, evaluate, train

__all__ = [
    "Study",
    "SweepError",
    "baseline",
    "run_study",
]

_Accuracy = tuple[float, float | str]  # (test, validation) accuracy of one model; "" without a validation split


def _config_hash(key: dict) -> str:
    """A short, stable hash of ``key`` (JSON with sorted keys): what names a configuration in rows and files."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _accuracies(model: nn.Module, data: MNISTData) -> _Accuracy:
    """(test, validation) accuracy of ``model``: the test number is reported, the validation one is what any
    choice may look at. Validation is "" (an empty cell) when the data has no validation split."""
    test = evaluate(model, data.test_x, data.test_y)["accuracy"]
    val = evaluate(model, data.val_x, data.val_y)["accuracy"] if len(data.val_y) else ""
    return test, val


def _cached_model(
    path: str | os.PathLike,
    config: TrainConfig,
    key: dict,
    make: Callable[[], tuple[nn.Module, list[dict], dict]],
    what: str,
    device: torch.device | None = None,
) -> tuple[nn.Module, dict, bool]:
    """The model checkpointed at ``path`` when it was trained with ``config`` and its payload holds every item of
    ``key``, else ``make()``'s model, saved there with both (a cache keyed by recipe). Returns (model, payload,
    whether it was made now).

    ``make`` returns (model, its training history, extra payload items); ``what`` names the model in messages. A
    damaged file (a full disk or an interrupted copy truncates it) is reported with a warning naming it and made
    again, never half-read.
    """
    path = Path(path)
    if path.exists():
        try:
            model, payload = _load_checkpoint(path, device)
        except CorruptFileError as e:
            warnings.warn(f"{e}; training {what} again and replacing it", stacklevel=3)
        else:
            if payload.get("train_config") == config.to_dict() and all(
                payload.get(k) == v for k, v in key.items()
            ):
                return model, payload, False
    model, history, extra = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_checkpoint(path, model, config, history, **extra, **key)
    return model, {"train_config": config.to_dict(), "history": history, **extra, **key}, True


def _baseline_path(out_dir: str | os.PathLike, arch: str, seed: int) -> Path:
    """Where the baseline of ``arch`` trained with ``seed`` is cached: ``<arch>_baseline_seed<seed>.pt``, except
    seed 0's ``<arch>_baseline.pt``, the name the chapters, benchmarks and earlier versions use."""
    return Path(out_dir) / (f"{arch}_baseline.pt" if seed == 0 else f"{arch}_baseline_seed{seed}.pt")


def baseline(
    arch: str, data: MNISTData, config: TrainConfig, out_dir: str | os.PathLike, progress: bool = True
) -> tuple[nn.Module, dict]:
    """The dense baseline: loaded from :func:`_baseline_path` (per ``config.seed``) in ``out_dir`` when it was
    trained with ``config`` on the same data, else trained now and saved there (:func:`_cached_model`). Returns the
    model and its checkpoint payload (``history``, ``train_config``, ``metrics``, ``data``)."""

    def make():
        model, history = train(arch, data, config, progress=progress)
        metrics = {
            "test": evaluate(model, data.test_x, data.test_y),
            "val": evaluate(model, data.val_x, data.val_y),
        }
        return model, history, {"metrics": metrics}

    model, payload, _ = _cached_model(
        _baseline_path(out_dir, arch, config.seed), config, {"data": data.sizes()}, make, f"the {arch} baseline"
    )
    return model, payload


class Study(ABC):
    """What a study gives the runner. Subclasses are dataclasses with a ``config`` field (and nothing heavy):
    worker processes receive them with each task.

    A *point* is any hashable value with a ``model`` attribute (the model family whose baseline it starts from);
    points that share work (the bits settings of one pruned model) form one *group*, run by one task."""

    schema: Schema  # the CSV the study fills
    config: RunConfig  # folders, seeds, data; the study's own settings live in its subclass
    baseline_latency: bool = False  # whether baseline tasks also time the baseline (see baseline_info)

    @property
    def models(self) -> tuple[str, ...]:
        return self.config.models  # type: ignore[attr-defined]

    def with_config(self, config: RunConfig) -> Study:
        """A copy of this study holding ``config``."""
        return dataclasses.replace(self, config=config)  # type: ignore[type-var]

    def for_seed(self, seed: int) -> Study:
        """This study with one seed (``config.for_seed(seed)``): what one task runs."""
        return self.with_config(self.config.for_seed(seed))

    @abstractmethod
    def points(self) -> Sequence[Hashable]:
        """The points of this (single-seed) study, in order."""

    @abstractmethod
    def run_key(self, point: Hashable) -> dict:
        """The values of the schema's run key but ``config_hash`` that ``point``'s row will hold."""

    @abstractmethod
    def hash(self, point: Hashable) -> str:
        """The configuration hash of ``point``'s row: :func:`_config_hash` of all that shapes its numbers."""

    def key(self, point: Hashable) -> tuple[str, ...]:
        """The run key ``point``'s row will have in the study's CSV (:meth:`Schema.key`)."""
        return self.schema.key({**self.run_key(point), "config_hash": self.hash(point)})

    def group(self, point: Hashable) -> Hashable:
        """Points with the same group run in one task, in order (default: each point alone)."""
        return point

    def baseline_info(self, model: nn.Module, data: MNISTData) -> tuple:
        """What experiment tasks receive about their baseline: its (test, validation) accuracy; a study may add
        to it."""
        return (_accuracies(model, data),)

    @abstractmethod
    def run(
        self, points: Sequence[Hashable], base: nn.Module, info: tuple, data: MNISTData, progress: bool
    ) -> list:
        """Run ``points`` (one group, one seed) from the baseline ``base``; return their rows, whole (their
        ``config_hash`` included)."""


def _pending(study: Study) -> list[tuple[int, Hashable]]:
    """``(seed, point)`` for every run of ``study`` not in its CSV yet, seed by seed (reading the CSVs checks
    their columns before any training)."""
    schema = study.schema
    results = study.config.paths.results
    done = {schema.key(r) for arch in study.models for r in read_results(schema.csv(results, arch), schema)}
    out = []
    for seed in study.config.seeds:
        one = study.for_seed(seed)
        for point in one.points():
            if one.key(point) not in done:
                out.append((seed, point))
    return out


def _record(study: Study, row: dict) -> Path:
    """Append a finished row (one seed's) to the study's CSV unless the same run is there; return the CSV."""
    path = study.schema.csv(study.config.paths.results, row.get("model", ""))
    append_row(path, row, study.schema)
    return path


class SweepError(RuntimeError):
    """Some tasks of a study failed; the others' rows were recorded. ``failures`` maps each failed task's label
    to its exception (the first one is also this error's ``__cause__``)."""

    def __init__(self, failures: dict[str, BaseException]):
        self.failures = failures
        names = "; ".join(f"{label}: {type(e).__name__}: {e}" for label, e in failures.items())
        super().__init__(f"{len(failures)} experiment(s) failed, the other rows were recorded: {names}")


# Per worker process: MNIST as tasks' configs ask for it, each loaded once (a worker runs many tasks, seeds
# interleaved). Full data is ~220 MB and shared by all seeds; smoke subsets are small.
_DATA_CACHE: dict[tuple, MNISTData] = {}
_DATA_CACHE_SIZE = 4


def _task_start(config: RunConfig, data: MNISTData | None, threads: int | None) -> MNISTData:
    """What every task does first: seed torch (nothing may depend on what the worker ran before), take
    ``threads`` torch threads (None: keep this process's), and return ``data`` (in-process runs), else MNIST as
    ``config`` (one seed) asks, from its folder the parent already verified."""
    torch.manual_seed(config.one_seed())
    if threads is not None:
        torch.set_num_threads(threads)
    if data is None:
        # load_mnist uses the seed only to draw the smoke subsets: full data is one set for every seed.
        drawn = config.subset is not None or config.test_subset is not None
        key = (
            config.data_dir,
            config.subset,
            config.test_subset,
            config.val_subset,
            config.seed if drawn else None,
        )
        if key not in _DATA_CACHE:
            if len(_DATA_CACHE) >= _DATA_CACHE_SIZE:
                del _DATA_CACHE[next(iter(_DATA_CACHE))]  # the oldest
            _DATA_CACHE[key] = config.load_data()
        data = _DATA_CACHE[key]
    return data.to(_get_device())


def _baseline_of(study: Study, arch: str, data: MNISTData, progress: bool) -> nn.Module:
    config = study.config
    model, _ = baseline(arch, data, config.baseline_config(arch), config.paths.runs, progress)
    return model.to(data.test_x.device)


def _baseline_task(study: Study, arch: str, data: MNISTData | None, progress: bool, threads: int | None) -> tuple:
    """Train (or load) the baseline of ``arch`` for the study's one seed; return :meth:`Study.baseline_info`."""
    data = _task_start(study.config, data, threads)
    return study.baseline_info(_baseline_of(study, arch, data, progress), data)


def _group_task(
    study: Study, points: list, info: tuple, data: MNISTData | None, progress: bool, threads: int | None
) -> list[dict]:
    """Run one group of points for the study's one seed on the baseline the baseline task saved; return its rows
    (the parent records them)."""
    data = _task_start(study.config, data, threads)
    return study.run(points, _baseline_of(study, points[0].model, data, progress), info, data, progress)


def run_study(
    study: Study,
    progress: bool = True,
    data: MNISTData | None = None,
    executor: cf.Executor | None = None,
    workers: int | None = None,
) -> dict[str, Path]:
    """Run every point of ``study`` (every seed) not yet in its CSV; return ``{model: csv_path}``.

    Tasks: the baselines (one per model and seed), then each group of points as soon as its seed's baseline is
    saved. They run on ``executor`` (any :class:`concurrent.futures.Executor`; see :mod:`mnist_pruning.parallel`),
    else on ``workers`` local processes (None: one per core; 1: in this process). Workers return rows; only this
    process writes the CSV, as each task finishes. A failed task does not stop the others: their rows are
    recorded, then :class:`SweepError` names what failed. ``data`` (tensors already loaded) runs every task in
    this process, all seeds on that data.
    """
    if workers is not None:
        _check_workers(workers)
    if data is not None and (not isinstance(executor, (_InlineExecutor, type(None))) or (workers or 1) > 1):
        raise ValueError("data= runs the study in this process; leave executor and workers out with it")
    p = study.config.paths
    _check_writable_dir(p.runs)
    _check_writable_dir(p.results)
    todo = _pending(study)  # also validates existing CSVs before any training
    csvs = {arch: study.schema.csv(p.results, arch) for arch in study.models}
    if not todo:
        return csvs
    if data is None:
        fetch_mnist(p.data, verbose=False)  # once here, so workers only read verified files
    with contextlib.ExitStack() as stack:
        if executor is None:
            in_process = data is not None or workers == 1
            executor = _InlineExecutor() if in_process else stack.enter_context(_sweep_executor(workers))
        inline = isinstance(executor, _InlineExecutor)
        if inline:
            stack.callback(_DATA_CACHE.clear)  # in this process, the data must not outlive the study
        local = isinstance(executor, cf.ProcessPoolExecutor)
        _Tasks(study, todo, executor, data, progress, local).run()
    return csvs


class _Tasks:
    """The baselines, then each seed's groups once their baseline is done; rows recorded as they come.

    An in-process executor runs a task inside ``submit``, so it gets one task at a time: each row is recorded
    before the next task starts, and a killed run loses at most the task it was running. Local worker processes
    run one torch thread each, except while fewer tasks than cores are ready: then each task gets a share of the
    cores, so a lone baseline does not train on one thread while the other cores wait for it."""

    def __init__(self, study, todo, executor, data, progress: bool, local: bool):
        self.study, self.executor, self.data, self.local = study, executor, data, local
        self.inline = isinstance(executor, _InlineExecutor)
        self.absolute = study.with_config(study.config.absolute())
        self.groups: dict[tuple[str, int], dict[Hashable, list]] = {}
        for seed, point in todo:
            one = study.for_seed(seed)
            self.groups.setdefault((point.model, seed), {}).setdefault(one.group(point), []).append(point)
        n_groups = sum(len(g) for g in self.groups.values())
        total = len(self.groups) + n_groups
        self.bar = tqdm(total=total, desc=study.schema.name, disable=not _show_progress(progress))
        self.task_progress = progress and self.inline
        self.failures: dict[str, BaseException] = {}

    def _threads(self, busy: int) -> int | None:
        if self.inline:
            return None  # in this process tasks keep its torch threads
        if not self.local:
            return _WORKER_THREADS
        return max(_WORKER_THREADS, _available_cores() // max(busy, 1))

    def run(self) -> None:
        ready: collections.deque[tuple] = collections.deque(("baseline", key, None) for key in self.groups)
        limit = 1 if self.inline else len(ready) + sum(len(g) for g in self.groups.values())
        futures: dict[cf.Future, tuple] = {}
        try:
            while ready or futures:
                while ready and len(futures) < limit:
                    kind, key, what = ready.popleft()
                    threads = self._threads(len(futures) + len(ready) + 1)
                    one = self.absolute.for_seed(key[1])
                    if kind == "baseline":
                        sub = self.executor.submit(
                            _baseline_task, one, key[0], self.data, self.task_progress, threads
                        )
                    else:
                        points, info = what
                        sub = self.executor.submit(
                            _group_task, one, points, info, self.data, self.task_progress, threads
                        )
                    futures[sub] = (kind, key, what)
                done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
                for future in [f for f in futures if f in done]:  # in submission order
                    kind, key, what = futures.pop(future)
                    ready.extend(self._finished(future, kind, key, what))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            self.bar.close()
        if self.failures:
            raise SweepError(self.failures) from next(iter(self.failures.values()))

    def _label(self, kind: str, key: tuple[str, int], what) -> str:
        arch, seed = key
        if kind == "baseline":
            return f"{arch} baseline (seed {seed})"
        return f"{', '.join(_label(p) for p in what[0])} (seed {seed})"

    def _finished(self, future: cf.Future, kind: str, key: tuple[str, int], what) -> list[tuple]:
        label = self._label(kind, key, what)
        self.bar.update(1)
        self.bar.set_postfix_str(label)
        error = cf.CancelledError(label) if future.cancelled() else future.exception()
        if error is not None:
            self.failures[label] = error
            if kind == "baseline":  # its groups cannot run
                skipped = RuntimeError(f"not run: the {label} failed")
                for points in self.groups[key].values():
                    self.failures[self._label("group", key, (points, None))] = skipped
                    self.bar.update(1)
            return []
        if kind == "baseline":
            info = future.result()
            return [("group", key, (points, info)) for points in self.groups[key].values()]
        one = self.study.for_seed(key[1])
        for row in future.result():
            _record(one, row)
        return []


def _label(point) -> str:
    return getattr(point, "label", str(point))
