"""Prune -> fine-tune -> measure, over models x methods x ratios, one CSV row per experiment.

Usage::

    from mnist_pruning.sweep import SweepConfig, run_sweep
    run_sweep(SweepConfig(models=("mlp",), methods=("global",), ratios=(0.9,)))
    # -> results/mlp_pruning_results.csv, one row per experiment (see COLUMNS)
    run_sweep(SweepConfig(seeds=(0, 1, 2)), workers=2)     # every experiment per seed, on 2 worker processes

or from the shell: ``mnist-pruning sweep --models mlp cnn --methods l1 global nm structured --seeds 0 1 2``.

Each seed trains its own baselines; tasks (baselines, then experiments) run on a ``concurrent.futures`` executor
(in this process, local worker processes, or a Dask cluster: :mod:`mnist_pruning.parallel`), seed torch
themselves and return rows, which only the calling process writes.

Every number in a row is measured on the pruned model, never derived from the request: sparsity is counted in
the weights, sizes are the bytes of files written, FLOPs come from ``torch.utils.flop_counter`` and latency from
``torch.utils.benchmark``. Rows go through :func:`mnist_pruning.results.append_row` (atomic; the CSV schema lives
in :mod:`mnist_pruning.results`), a rerun skips experiments already in the CSV, and a changed configuration gets
a new row (its ``config_hash`` differs) instead of overwriting an old one.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from .checks import check_choice, check_choices, check_int, check_ratio, check_seeds
from .data import SPLIT_SEED, VAL_SIZE, MNISTData, load_mnist
from .files import CorruptFileError, check_writable_dir
from .models import MODEL_NAMES, SAMPLE_SHAPE
from .results import append_row, read_results, results_csv, run_key
from .settings import paths, show_progress
from .sparsity import measure
from .sparsity.compact import save_compact, save_dense
from .sparsity.inference import apply_sparse_plan, plan_sparse_inference
from .sparsity.nm import NM_PATTERNS, nm_compact_bytes, parse_pattern, pattern_for_ratio
from .sparsity.structured import apply_structured_masks, apply_surgery
from .sparsity.unstructured import bake_in, sparsify_
from .train import (
    PRECISIONS,
    TrainConfig,
    evaluate,
    fine_tune,
    get_device,
    load_checkpoint,
    save_checkpoint,
    train,
)

__all__ = [
    "BUDGETS",
    "Budget",
    "METHODS",
    "RATIOS",
    "SCHEDULES",
    "Experiment",
    "ExperimentResult",
    "SweepConfig",
    "experiments",
    "baseline",
    "run_experiment",
    "run_sweep",
    "record",
    "experiment_files",
    "baseline_path",
    "SweepError",
    "accuracies",
]

# The project's pruning methods: the unstructured ones of mnist_pruning.sparsity, and structured surgery.
METHODS = ("l1", "global", "nm", "structured")

RATIOS = (0.3, 0.5, 0.7, 0.9, 0.99)
# oneshot: prune once, then fine-tune. gradual: Zhu & Gupta's cubic schedule while training. lottery: iterative
# magnitude pruning with rewinding to the initialisation (Frankle & Carbin 2019). See mnist_pruning.schedules
# and mnist_pruning.lottery.
SCHEDULES = ("oneshot", "gradual", "lottery")


@dataclass(frozen=True)
class Budget:
    """How long a model family's experiments train: an MLP epoch costs ~1.5 s here, a LeNet-5 epoch ~15 s."""

    finetune_epochs: int  # fine-tuning after one-shot pruning
    finetune_lr: float  # its peak learning rate (cosine-decayed)
    frontier_epochs: int  # a gradual pruning run
    lottery_epochs: int  # the lottery's dense training and each of its rounds


# The one-shot fine-tuning budgets were chosen on the validation split by bench/budgets.py (global pruning to 0.9
# and 0.99 from the seed-0 baseline; mean validation accuracy over the two; the cheaper candidate within 0.1 pp):
# MLP 8 epochs at lr 0.05 (96.57 %; 4 at 0.05: 96.19 %, 2 at 0.01: 94.30 %); CNN 2 epochs at lr 0.02 (97.86 %;
# 2 at 0.01: 97.51 %, 4 at 0.01: 97.77 %, 1 at 0.01: 97.00 %). The gradual and lottery epochs, at the baseline
# recipe's learning rate, were re-checked the same way at ratio 0.99 (bench/budgets.py --schedules gradual
# lottery): MLP gradual 20 epochs (97.16 %; 10: 96.84 %, 30: 97.18 %, within the tie); MLP lottery 8 epochs per
# round (96.68 %; 3: 96.02 %, 5: 96.30 %, the budget before); CNN gradual 6 epochs (98.14 %; 3: 97.42 %, 10:
# 98.24 %, exactly at the 0.1 pp tie: 5 of the 5,000 images, on one seed); CNN lottery 5 epochs per round
# (98.32 %; 2: 97.60 %, 3: 97.86 %, the budget before).
BUDGETS = {
    "mlp": Budget(finetune_epochs=8, finetune_lr=0.05, frontier_epochs=20, lottery_epochs=8),
    "cnn": Budget(finetune_epochs=2, finetune_lr=0.02, frontier_epochs=6, lottery_epochs=5),
}


@dataclass(frozen=True)
class Experiment:
    """One point of the sweep."""

    model: str  # "mlp" | "cnn"
    method: str  # "l1" | "global" | "nm" | "structured"
    ratio: float  # fraction removed; for nm it is 1 - n/m
    pattern: str = ""  # "n:m" for method="nm"
    schedule: str = "oneshot"

    @property
    def label(self) -> str:
        detail = self.pattern if self.method == "nm" else f"{self.ratio:g}"
        return f"{self.model} {self.method} {detail}"


@dataclass
class SweepConfig:
    """What to sweep and with which budgets."""

    models: tuple[str, ...] = MODEL_NAMES  # model families
    methods: tuple[str, ...] = METHODS  # pruning methods
    ratios: tuple[float, ...] = RATIOS  # for l1 / global / structured; nm uses their exact N:M equivalents too
    patterns: tuple[str, ...] = NM_PATTERNS  # hardware N:M patterns, in addition to the ratios' patterns
    finetune_epochs: int | None = None  # fine-tuning epochs after pruning; None = the model's BUDGETS entry
    finetune_lr: float | None = None  # peak learning rate of fine-tuning (cosine-decayed); None = BUDGETS
    baseline_epochs: dict[str, int] = field(default_factory=dict)  # per model; empty -> TrainConfig.for_model
    seed: int | None = None  # one seed (baseline, batch order, everything random); shorthand for seeds=(seed,)
    seeds: tuple[int, ...] | None = None  # each trains its own baselines and adds its own rows; None: (seed or 0,)
    subset: int | None = None  # class-balanced training subset (smoke runs); None = all 60,000
    test_subset: int | None = None  # class-balanced test subset; None = all 10,000
    val_subset: int | None = None  # class-balanced part of the validation hold-out; None = all 5,000
    precision: str = "auto"  # training arithmetic: "bf16" autocast | "fp32"; "auto" = bf16 where supported
    data_dir: str | None = None  # MNIST root; None = $MNIST_PRUNING_DATA or ./data
    out_dir: str | None = None  # checkpoints and compact files; None = runs/
    results_dir: str | None = None  # CSVs; None = results/
    latency: bool = True  # measure latency (a few seconds per experiment)
    schedules: tuple[str, ...] = ("oneshot",)  # add "gradual" / "lottery" for the high-sparsity frontier rows
    frontier_ratios: tuple[float, ...] = (0.99,)  # ratios run with the gradual and lottery schedules
    frontier_epochs: int | None = None  # epochs of a gradual run; None = BUDGETS
    lottery_rounds: int = 3  # pruning rounds of a lottery run (each removes the same fraction of what is left)
    lottery_epochs: int | None = None  # lottery's dense training and each round (x (rounds + 1)); None = BUDGETS

    def __post_init__(self) -> None:
        self.models = check_choices(self.models, MODEL_NAMES, "model")
        self.methods = check_choices(self.methods, METHODS, "method")
        self.schedules = check_choices(self.schedules, SCHEDULES, "schedule")
        self.ratios = tuple(check_ratio(r) for r in self.ratios)
        self.frontier_ratios = tuple(check_ratio(r) for r in self.frontier_ratios)
        self.patterns = tuple(self.patterns)
        for p in self.patterns:
            parse_pattern(p)
        check_int(self.lottery_rounds, "lottery_rounds")
        if self.seed is not None:
            check_int(self.seed, "seed", minimum=0)
        seeds = check_seeds((0 if self.seed is None else self.seed,) if self.seeds is None else self.seeds)
        if self.seed is not None and seeds != (self.seed,):
            raise ValueError(f"seed={self.seed!r} and seeds={list(seeds)} disagree; give one of them")
        self.seeds = seeds
        # After construction ``seed`` is the one seed of a single-seed config (what a task runs), else None.
        self.seed = seeds[0] if len(seeds) == 1 else None
        for arch in self.models:
            self.budget(arch)  # validates every override
        for arch, epochs in self.baseline_epochs.items():
            check_choice(arch, MODEL_NAMES, "model")
            check_int(epochs, f"baseline epochs of {arch!r}")
        check_choice(self.precision, PRECISIONS, "precision")
        if self.precision == "auto":
            self.precision = TrainConfig().precision  # resolved once, so hashes and rows hold what ran
        for name in ("subset", "test_subset", "val_subset"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, minimum=10)

    def for_seed(self, seed: int) -> SweepConfig:
        """This configuration with ``seed`` as its only seed: what one task of a multi-seed sweep runs."""
        if seed not in self.seeds:
            raise ValueError(f"seed {seed!r} is not one of this sweep's seeds {list(self.seeds)}")
        return dataclasses.replace(self, seed=seed, seeds=(seed,))

    def _one_seed(self) -> int:
        if self.seed is None:
            raise ValueError(
                f"this sweep has seeds {list(self.seeds)}; take one with config.for_seed(seed) for a single run"
            )
        return self.seed

    def baseline_config(self, arch: str) -> TrainConfig:
        overrides = {"seed": self._one_seed(), "precision": self.precision}
        if arch in self.baseline_epochs:
            overrides["epochs"] = self.baseline_epochs[arch]
        return TrainConfig.for_model(arch, **overrides)

    def budget(self, arch: str) -> Budget:
        """The model's :data:`BUDGETS` entry with this config's overrides applied (and validated)."""
        base = BUDGETS[arch]
        budget = Budget(
            finetune_epochs=base.finetune_epochs if self.finetune_epochs is None else self.finetune_epochs,
            finetune_lr=base.finetune_lr if self.finetune_lr is None else self.finetune_lr,
            frontier_epochs=base.frontier_epochs if self.frontier_epochs is None else self.frontier_epochs,
            lottery_epochs=base.lottery_epochs if self.lottery_epochs is None else self.lottery_epochs,
        )
        TrainConfig(
            epochs=budget.finetune_epochs, lr=budget.finetune_lr, seed=self.seeds[0], precision=self.precision
        )
        check_int(budget.frontier_epochs, "frontier_epochs")
        check_int(budget.lottery_epochs, "lottery_epochs")
        return budget

    def epochs(self, exp: Experiment) -> int:
        """Epochs ``exp`` trains after (gradual / lottery: while) pruning, every lottery round included."""
        budget = self.budget(exp.model)
        if exp.schedule == "gradual":
            return budget.frontier_epochs
        if exp.schedule == "lottery":
            return budget.lottery_epochs * (self.lottery_rounds + 1)
        return budget.finetune_epochs

    def finetune_config(self, arch: str) -> TrainConfig:
        budget = self.budget(arch)
        return TrainConfig(
            epochs=budget.finetune_epochs, lr=budget.finetune_lr, seed=self._one_seed(), precision=self.precision
        )

    def load_data(self) -> MNISTData:
        """MNIST as this config splits it (subsets for smoke runs), on the CPU."""
        p = paths(self.data_dir, self.out_dir, self.results_dir)
        return load_mnist(
            p.data,
            subset=self.subset,
            test_subset=self.test_subset,
            seed=self._one_seed(),
            val_size=VAL_SIZE if self.val_subset is None else self.val_subset,
        )


def experiments(config: SweepConfig) -> list[Experiment]:
    """The experiments a sweep runs, in order: per model, per method, per ratio / pattern."""
    out = []
    for arch in config.models:
        for method in config.methods:
            if method == "nm":
                patterns = list(config.patterns)
                for r in config.ratios:
                    p = pattern_for_ratio(r)
                    if p not in patterns:
                        patterns.append(p)
                for p in patterns:
                    n, m = parse_pattern(p)
                    out.append(Experiment(arch, "nm", 1 - n / m, p))
            else:
                if "oneshot" in config.schedules:
                    out.extend(Experiment(arch, method, r) for r in config.ratios)
                for schedule in config.schedules:
                    if schedule == "gradual" and method in ("l1", "global"):
                        out.extend(Experiment(arch, method, r, schedule=schedule) for r in config.frontier_ratios)
                    if schedule == "lottery" and method == "global":
                        out.extend(Experiment(arch, method, r, schedule=schedule) for r in config.frontier_ratios)
    return out


def config_hash(config: SweepConfig, exp: Experiment) -> str:
    """A short hash of everything that shapes ``exp``'s numbers (baseline recipe, data, seed and the budget of
    its schedule), not of paths: changing the gradual budget does not invalidate one-shot rows."""
    budget = config.budget(exp.model)
    key: dict = {
        "baseline": config.baseline_config(exp.model).to_dict(),
        "subset": config.subset,
        "test_subset": config.test_subset,
        "val_subset": config.val_subset,
        "split": [VAL_SIZE, SPLIT_SEED],
    }
    if exp.schedule == "oneshot":
        key["finetune"] = config.finetune_config(exp.model).to_dict()
    elif exp.schedule == "gradual":
        key["gradual_epochs"] = budget.frontier_epochs
    else:
        key["lottery"] = [config.lottery_rounds, budget.lottery_epochs]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def experiment_of(row: dict) -> Experiment:
    """The :class:`Experiment` a CSV row records."""
    return Experiment(row["model"], row["method"], float(row["ratio"]), row["pattern"] or "", row["schedule"])


def baseline_path(out_dir: str | os.PathLike, arch: str, seed: int) -> Path:
    """Where the baseline of ``arch`` trained with ``seed`` is cached: ``<arch>_baseline_seed<seed>.pt``, except
    seed 0's ``<arch>_baseline.pt``, the name the chapters, benchmarks and earlier versions use."""
    return Path(out_dir) / (f"{arch}_baseline.pt" if seed == 0 else f"{arch}_baseline_seed{seed}.pt")


def baseline(
    arch: str, data: MNISTData, config: TrainConfig, out_dir: str | os.PathLike, progress: bool = True
) -> tuple[nn.Module, dict]:
    """The dense baseline: loaded from :func:`baseline_path` (per ``config.seed``) in ``out_dir`` when it was
    trained with ``config`` on the same data, else trained now and saved there. Returns the model and its
    checkpoint payload.

    The file is a cache: a damaged one (a full disk or an interrupted copy truncates it) is reported with a
    warning naming it and retrained, never half-read.
    """
    path = baseline_path(out_dir, arch, config.seed)
    data_key = data.sizes()
    if path.exists():
        try:
            model, payload = load_checkpoint(path)
        except CorruptFileError as e:
            warnings.warn(f"{e}; training the {arch} baseline again and replacing it", stacklevel=2)
        else:
            if payload.get("train_config") == config.to_dict() and payload.get("data") == data_key:
                return model, payload
    model, history = train(arch, data, config, progress=progress)
    metrics = {"test": evaluate(model, data.test_x, data.test_y), "val": evaluate(model, data.val_x, data.val_y)}
    save_checkpoint(path, model, config, history, metrics=metrics, data=data_key)
    return model, {"train_config": config.to_dict(), "history": history, "metrics": metrics, "data": data_key}


def _prune(model: nn.Module, exp: Experiment) -> nn.Module:
    """Prune ``model`` in place as ``exp`` says; structured leaves the masked (not yet shrunk) model."""
    if exp.method == "structured":
        apply_structured_masks(model, exp.ratio)
    elif exp.method == "nm":
        sparsify_(model, "nm", pattern=exp.pattern)
    else:
        sparsify_(model, exp.method, exp.ratio)
    return model


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` measured and where it saved the model."""

    row: dict  # the CSV row (every column of mnist_pruning.results.COLUMNS but config_hash)
    model: nn.Module  # the fine-tuned model, masks baked in, on the CPU
    dense_path: Path  # its ordinary dense state_dict file
    compact_path: Path  # its compact sparse file (mnist_pruning.sparsity.compact)
    csv: Path | None = None  # the results CSV its row went to, once recorded (see notebook.Run.experiment)


def run_experiment(
    exp: Experiment,
    base_model: nn.Module,
    data: MNISTData,
    config: SweepConfig,
    acc_baseline: Accuracy,
    files_dir: str | os.PathLike,
    baseline_latency: tuple[float, float] | None = None,
    progress: bool = True,
) -> ExperimentResult:
    """Run one experiment on a copy of ``base_model``: prune, fine-tune, save, measure.

    ``acc_baseline`` is the baseline's (test, validation) accuracy (:func:`accuracies`). ``baseline_latency``
    (batch 1, batch 256) is measured now when ``config.latency`` and it is not given.
    """
    run = _run_oneshot if exp.schedule == "oneshot" else _run_frontier
    model, acc_pruned, epochs, seconds = run(exp, base_model, data, config, progress)
    if config.latency and baseline_latency is None:
        baseline_latency = _latencies(base_model)
    return _measure(
        exp,
        model,
        base_model,
        data,
        config,
        acc_baseline,
        acc_pruned,
        epochs,
        seconds,
        files_dir,
        baseline_latency,
    )


Accuracy = tuple[float, float]  # (test, validation) accuracy of one model


def accuracies(model: nn.Module, data: MNISTData) -> Accuracy:
    """(test, validation) accuracy of ``model``: the test number is reported, the validation one is what any
    choice may look at."""
    return evaluate(model, data.test_x, data.test_y)["accuracy"], evaluate(model, data.val_x, data.val_y)[
        "accuracy"
    ]


LATENCY_BATCHES = (1, 256)
# Planning a row's sparse conversion times each layer dense and sparse, then the whole model (sparsity.inference).
# One round of 3-5 block medians of 20 ms keeps that to about a second per row on 2 cores. Layers denser than 0.4
# stay dense untimed: their CSR matrix (a float32 value and an int32 column index per non-zero) holds 80 % or more
# of the dense matrix's bytes, and torch's CSR kernel needed density ~0.1 to beat dense GEMM by 2x at batch 256
# (bench/sparse_speed.py); this spares the timing on the rows pruned to 30-50 %.
SPARSE_PLAN_OPTIONS = {"min_run_time": 0.02, "rounds": 1, "max_density": 0.4}


def _latencies(model: nn.Module) -> tuple[float, float]:
    """CPU latency at batch 1 and 256 of a contiguous CPU copy of ``model``."""
    return _latency_pairs(copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format))[0]


def _latency_pairs(*models: nn.Module) -> list[tuple[float, float]]:
    """CPU latency at batch 1 and 256 of each model (on the CPU, timed as given: a sparse model's CSR tensors
    can be neither deep-copied nor moved), measured alike and interleaved, batch by batch and model after model,
    so drift from other jobs on the machine hits them all the same."""
    timing = measure.Timing(rounds=1, min_run_time=0.2, batches=LATENCY_BATCHES)  # one round, as always here
    timed = measure.time_models(dict(enumerate(models)), timing, SAMPLE_SHAPE)
    return [(timed[i][1].best_ms, timed[i][256].best_ms) for i in range(len(models))]


def _sparse_inference(model: nn.Module) -> tuple[nn.Module | None, dict[int, str]]:
    """``model`` (baked in, contiguous, on the CPU) converted by ``sparsity.to_sparse_inference`` for batch 1
    and 256, and per batch size the layers that run sparse, comma-joined ("none": the plan keeps them all dense).
    The model is None when no layer runs sparse at any batch size: it would be the dense model again."""
    plan = plan_sparse_inference(model, SAMPLE_SHAPE, LATENCY_BATCHES, **SPARSE_PLAN_OPTIONS)
    names = {b: ",".join(row.layer for row in plan if row.sparse[b]) or "none" for b in LATENCY_BATCHES}
    if not any(row.any_sparse for row in plan):
        return None, names
    return apply_sparse_plan(model, plan), names


def _run_oneshot(
    exp: Experiment, base_model: nn.Module, data: MNISTData, config: SweepConfig, progress: bool
) -> tuple[nn.Module, Accuracy | None, int, float]:
    """Prune a copy of the baseline once, then fine-tune it (structured: the surgered, smaller model)."""
    model = _prune(copy.deepcopy(base_model), exp)
    acc_pruned = accuracies(model, data)
    if exp.method == "structured":
        # Surgery makes the tensors physically smaller; the small model needs no masks while fine-tuning.
        model = apply_surgery(model)
    start = time.perf_counter()
    finetune = config.finetune_config(exp.model)
    fine_tune(model, data, finetune, desc=exp.label, progress=progress)
    return model, acc_pruned, finetune.epochs, time.perf_counter() - start


def experiment_files(exp: Experiment, files_dir: str | os.PathLike, config: SweepConfig) -> tuple[Path, Path]:
    """Where an experiment's dense ``state_dict`` and its compact file go, e.g.
    ``mlp_nm_2of4_seed0_<config_hash>.safetensors``: the seed and the :func:`config_hash` (budget, baseline
    recipe, data) make the names unique per run, so a later run never replaces the files of an earlier row."""
    detail = (exp.pattern or f"{exp.ratio:g}").replace(":", "of")
    suffix = "" if exp.schedule == "oneshot" else f"_{exp.schedule}"
    stem = f"{exp.model}_{exp.method}_{detail}{suffix}_seed{config._one_seed()}_{config_hash(config, exp)}"
    return Path(files_dir) / f"{stem}.dense.pt", Path(files_dir) / f"{stem}.safetensors"


def _run_frontier(
    exp: Experiment, base_model: nn.Module, data: MNISTData, config: SweepConfig, progress: bool
) -> tuple[nn.Module, None, int, float]:
    """Gradual pruning from the baseline, or a lottery ticket trained from scratch (it needs its own early
    iterate to rewind to); both at the model's baseline learning rate, since they train as much as they prune."""
    from .lottery import lottery_ticket
    from .schedules import gradual_prune

    recipe = config.baseline_config(exp.model)
    if exp.schedule == "gradual":
        train_cfg = TrainConfig(
            epochs=config.budget(exp.model).frontier_epochs,
            lr=recipe.lr,
            seed=config.seed,
            precision=config.precision,
        )
        result = gradual_prune(
            copy.deepcopy(base_model), data, exp.method, exp.ratio, train_cfg, progress=progress
        )
        return result.model, None, result.epochs, result.seconds
    train_cfg = TrainConfig(
        epochs=config.budget(exp.model).lottery_epochs, lr=recipe.lr, seed=config.seed, precision=config.precision
    )
    ticket = lottery_ticket(exp.model, data, exp.ratio, train_cfg, rounds=config.lottery_rounds, progress=progress)
    return ticket.model.to(next(base_model.parameters()).device), None, ticket.epochs, ticket.seconds


def _measure(
    exp: Experiment,
    model: nn.Module,
    base_model: nn.Module,
    data: MNISTData,
    config: SweepConfig,
    acc_baseline: Accuracy,
    acc_pruned: Accuracy | None,
    epochs: int,
    seconds: float,
    files_dir: str | os.PathLike,
    baseline_latency: tuple[float, float] | None,
) -> ExperimentResult:
    """Bake the masks in, save the model both ways and measure everything a CSV row holds on what was saved."""
    bake_in(model)
    model = model.to(memory_format=torch.contiguous_format).cpu()
    dense_path, compact_path = experiment_files(exp, files_dir, config)
    size_dense = save_dense(model, dense_path)
    size_compact = save_compact(model, compact_path)
    layers = measure.prunable_layers(model)
    acc_finetuned = accuracies(model, data)
    row = {
        "model": exp.model,
        "method": exp.method,
        "pattern": exp.pattern,
        "schedule": exp.schedule,
        "ratio": f"{exp.ratio:.6g}",
        "sparsity": measure.sparsity(model),
        "params_total": measure.count_parameters(model),
        "params_nonzero": measure.count_nonzero_parameters(model),
        "acc_baseline": acc_baseline[0],
        "acc_pruned": "" if acc_pruned is None else acc_pruned[0],
        "acc_finetuned": acc_finetuned[0],
        "acc_val_baseline": acc_baseline[1],
        "acc_val_pruned": "" if acc_pruned is None else acc_pruned[1],
        "acc_val_finetuned": acc_finetuned[1],
        "finetune_epochs": epochs,
        "size_dense_bytes": size_dense,
        "size_compact_bytes": size_compact,
        "size_nm_bytes": "",
        "flops_dense": measure.flops(model, SAMPLE_SHAPE),
        "flops_effective": measure.effective_flops(model, SAMPLE_SHAPE),
        "seed": config.seed,
        "precision": config.precision,
        "threads": torch.get_num_threads(),
        "device": str(next(base_model.parameters()).device.type),
        "finetune_seconds": round(seconds, 3),
        "version": __version__,
        "torch_version": torch.__version__,
    }
    if exp.method == "structured":
        row["sparsity"] = 1 - row["params_total"] / measure.count_parameters(base_model)
    if exp.method == "nm":
        n, m = parse_pattern(exp.pattern)
        row["size_nm_bytes"] = sum(
            nm_compact_bytes(module.weight.detach(), n, m) + module.bias.numel() * module.bias.element_size()
            for _, module in layers
        )
    if config.latency:
        row["baseline_latency_b1_ms"], row["baseline_latency_b256_ms"] = baseline_latency
        if exp.method == "structured":  # surgery already made it a smaller dense model: nothing to convert
            row["latency_b1_ms"], row["latency_b256_ms"] = _latencies(model)
        else:
            sparse, names = _sparse_inference(model)
            if sparse is None:  # every layer stays dense: the converted model is this one, timed once
                dense_ms = sparse_ms = _latencies(model)
            else:
                dense_ms, sparse_ms = _latency_pairs(model, sparse)
            row["latency_b1_ms"], row["latency_b256_ms"] = dense_ms
            row["latency_sparse_b1_ms"], row["latency_sparse_b256_ms"] = sparse_ms
            row["sparse_layers_b1"], row["sparse_layers_b256"] = names[1], names[256]
    return ExperimentResult(row, model, dense_path, compact_path)


def record(row: dict, config: SweepConfig) -> Path:
    """Append a finished experiment's row to its model's CSV unless the same run is already there; return the
    CSV's path. The row's ``config_hash`` is set here, from ``config``."""
    row = {**row, "config_hash": config_hash(config, experiment_of(row))}
    path = results_csv(paths(config.data_dir, config.out_dir, config.results_dir).results, row["model"])
    append_row(path, row)
    return path


def _pending(config: SweepConfig, results_dir: Path) -> Iterator[tuple[int, Experiment]]:
    """``(seed, experiment)`` for every run of ``config`` not in its CSV yet (reading every CSV checks its
    columns), seed by seed."""
    done = {arch: {run_key(r) for r in read_results(results_csv(results_dir, arch))} for arch in config.models}
    for seed in config.seeds:
        one = config.for_seed(seed)
        for exp in experiments(one):
            key = {**asdict(exp), "finetune_epochs": one.epochs(exp), "seed": seed}
            if run_key({**key, "config_hash": config_hash(one, exp)}) not in done[exp.model]:
                yield seed, exp


class SweepError(RuntimeError):
    """Some experiments of a sweep failed; the others' rows were recorded. ``failures`` maps each failed
    experiment's label to its exception (the first one is also this error's ``__cause__``)."""

    def __init__(self, failures: dict[str, BaseException]):
        self.failures = failures
        names = "; ".join(f"{label}: {type(e).__name__}: {e}" for label, e in failures.items())
        super().__init__(f"{len(failures)} experiment(s) failed, the other rows were recorded: {names}")


# Per worker process: MNIST as tasks' configs ask for it, each loaded once (a worker runs many tasks, seeds
# interleaved). Full data is ~220 MB and shared by all seeds; smoke subsets are small.
_DATA_CACHE: dict[tuple, MNISTData] = {}
_DATA_CACHE_SIZE = 4


def _task_start(config: SweepConfig, data: MNISTData | None, threads: int | None) -> MNISTData:
    """What every task does first: seed torch (nothing may depend on what the worker ran before), take
    ``threads`` torch threads (None: keep this process's), and return ``data`` (in-process runs), else MNIST as
    ``config`` (one seed) asks, from its folder the parent already verified."""
    torch.manual_seed(config.seed)
    if threads is not None:
        torch.set_num_threads(threads)
    if data is None:
        # load_mnist uses the seed only to draw the smoke subsets: full data is one set for every seed.
        drawn = config.subset is not None or config.test_subset is not None
        seed = config.seed if drawn else None
        key = (config.data_dir, config.subset, config.test_subset, config.val_subset, seed)
        if key not in _DATA_CACHE:
            if len(_DATA_CACHE) >= _DATA_CACHE_SIZE:
                del _DATA_CACHE[next(iter(_DATA_CACHE))]  # the oldest
            _DATA_CACHE[key] = config.load_data()
        data = _DATA_CACHE[key]
    return data.to(get_device())


def _baseline_task(
    config: SweepConfig,
    arch: str,
    data: MNISTData | None = None,
    progress: bool = False,
    threads: int | None = None,
) -> tuple[Accuracy, tuple[float, float] | None]:
    """Train (or load) the baseline of ``arch`` for ``config``'s one seed into its out_dir; return its (test,
    validation) accuracy and, with ``config.latency``, its latency at batch 1 and 256. Runs in a worker."""
    data = _task_start(config, data, threads)
    p = paths(config.data_dir, config.out_dir, config.results_dir)
    model, _ = baseline(arch, data, config.baseline_config(arch), p.runs, progress)
    model = model.to(data.test_x.device)
    return accuracies(model, data), _latencies(model) if config.latency else None


def _experiment_task(
    config: SweepConfig,
    exp: Experiment,
    acc_baseline: Accuracy,
    baseline_latency: tuple[float, float] | None,
    data: MNISTData | None = None,
    progress: bool = False,
    threads: int | None = None,
) -> dict:
    """Run ``exp`` for ``config``'s one seed on the baseline :func:`_baseline_task` saved; return its row
    (the parent records it). Runs in a worker."""
    data = _task_start(config, data, threads)
    p = paths(config.data_dir, config.out_dir, config.results_dir)
    base, _ = baseline(exp.model, data, config.baseline_config(exp.model), p.runs, progress)
    base = base.to(data.test_x.device)
    result = run_experiment(
        exp, base, data, config, acc_baseline, p.runs / "experiments", baseline_latency, progress
    )
    return result.row


def _absolute(config: SweepConfig) -> SweepConfig:
    """``config`` with its folders resolved to absolute paths, as workers (other processes, other machines with
    a shared filesystem) must see them."""
    from .data import data_root

    p = paths(config.data_dir, config.out_dir, config.results_dir)
    return dataclasses.replace(
        config,
        data_dir=str(data_root(p.data).resolve()),
        out_dir=str(p.runs.resolve()),
        results_dir=str(p.results.resolve()),
    )


def run_sweep(
    config: SweepConfig,
    progress: bool = True,
    data: MNISTData | None = None,
    executor: cf.Executor | None = None,
    workers: int | None = None,
) -> dict[str, Path]:
    """Run every experiment of ``config`` (every seed) not yet in its CSV; return ``{model: csv_path}``.

    Tasks: the baselines (one per model and seed), then each experiment as soon as its seed's baseline is saved.
    They run on ``executor`` (any :class:`concurrent.futures.Executor`; see :mod:`mnist_pruning.parallel`), else
    on ``workers`` local processes (None: one per core; 1: in this process). Workers return rows; only this
    process writes the CSVs, as each task finishes. A failed task does not stop the others: their rows are
    recorded, then :class:`SweepError` names what failed. ``data`` (tensors already loaded) runs every task in
    this process, all seeds on that data.
    """
    from .parallel import WORKER_THREADS, InlineExecutor, check_workers, sweep_executor

    if workers is not None:
        check_workers(workers)
    if data is not None and (not isinstance(executor, (InlineExecutor, type(None))) or (workers or 1) > 1):
        raise ValueError("data= runs the sweep in this process; leave executor and workers out with it")
    p = paths(config.data_dir, config.out_dir, config.results_dir)
    check_writable_dir(p.runs)
    check_writable_dir(p.results)
    pending = list(_pending(config, p.results))  # also validates existing CSVs before any training
    csvs = {arch: results_csv(p.results, arch) for arch in config.models}
    if not pending:
        return csvs
    if data is None:
        from .data import fetch_mnist

        fetch_mnist(p.data, verbose=False)  # once here, so workers only read verified files
    with contextlib.ExitStack() as stack:
        if executor is None:
            in_process = data is not None or workers == 1
            executor = InlineExecutor() if in_process else stack.enter_context(sweep_executor(workers))
        inline = isinstance(executor, InlineExecutor)
        if inline:
            stack.callback(_DATA_CACHE.clear)  # in this process, the data must not outlive the sweep
        # In this process tasks keep its torch threads and may draw their own bars; workers get their threads.
        threads = None if inline else WORKER_THREADS
        _run_tasks(config, pending, executor, data, progress and inline, progress, threads)
    return csvs


def _run_tasks(
    config: SweepConfig,
    pending: list[tuple[int, Experiment]],
    executor: cf.Executor,
    data: MNISTData | None,
    task_progress: bool,
    progress: bool,
    threads: int | None,
) -> None:
    """Submit the baselines, then each seed's experiments once its baselines are done; record rows as they come.

    An in-process executor runs a task inside ``submit``, so it gets one task at a time: each row is recorded
    before the next experiment starts, and a killed sweep loses at most the experiment it was running."""
    from .parallel import InlineExecutor

    shipped = _absolute(config)
    by_base: dict[tuple[str, int], list[Experiment]] = {}
    for seed, exp in pending:
        by_base.setdefault((exp.model, seed), []).append(exp)
    # Tasks ready to run, in order: (kind, baseline arch or experiment, seed, baseline accuracy and latency).
    ready: collections.deque[tuple] = collections.deque(("baseline", arch, seed, None) for arch, seed in by_base)
    in_flight = 1 if isinstance(executor, InlineExecutor) else len(by_base) + len(pending)
    futures: dict[cf.Future, tuple] = {}
    failures: dict[str, BaseException] = {}
    bar = tqdm(total=len(by_base) + len(pending), desc="sweep", disable=not show_progress(progress))
    try:
        while ready or futures:
            while ready and len(futures) < in_flight:
                kind, what, seed, base = ready.popleft()
                one = shipped.for_seed(seed)
                if kind == "baseline":
                    sub = executor.submit(_baseline_task, one, what, data, task_progress, threads)
                else:
                    sub = executor.submit(_experiment_task, one, what, *base, data, task_progress, threads)
                futures[sub] = (kind, what, seed)
            done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
            for future in [f for f in futures if f in done]:  # in submission order
                kind, what, seed = futures.pop(future)
                label = f"{what} baseline" if kind == "baseline" else what.label
                label += f" (seed {seed})"
                bar.update(1)
                bar.set_postfix_str(label)
                error = cf.CancelledError(label) if future.cancelled() else future.exception()
                if error is not None:
                    failures[label] = error
                    if kind == "baseline":  # its experiments cannot run
                        skipped = RuntimeError(f"not run: the {label} failed")
                        for exp in by_base[(what, seed)]:
                            failures[f"{exp.label} (seed {seed})"] = skipped
                            bar.update(1)
                elif kind == "baseline":
                    ready.extend(("experiment", exp, seed, future.result()) for exp in by_base[(what, seed)])
                else:
                    record(future.result(), config.for_seed(seed))
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    finally:
        bar.close()
    if failures:
        raise SweepError(failures) from next(iter(failures.values()))


def settings_json(config: SweepConfig) -> str:
    """The sweep's settings and library versions as JSON (saved beside a full run's results)."""
    return json.dumps(
        {"sweep": asdict(config), "version": __version__, "torch": torch.__version__}, indent=2, default=str
    )
