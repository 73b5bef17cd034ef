"""Prune -> fine-tune -> measure, over models x methods x ratios, one CSV row per experiment.

Usage::

    from mnist_pruning.sweep import SweepConfig, run_sweep
    run_sweep(SweepConfig(models=("mlp",), methods=("global",), ratios=(0.9,)))
    # -> results/mlp_pruning_results.csv, one row per experiment (mnist_pruning.results.PRUNING)
    run_sweep(SweepConfig(seeds=(0, 1, 2)), workers=2)     # every experiment per seed, on 2 worker processes

or from the shell: ``mnist-pruning sweep --models mlp cnn --methods l1 global nm structured --seeds 0 1 2``.

The sweep is a :class:`~mnist_pruning.runner.Study` (:class:`SweepStudy`): :mod:`mnist_pruning.runner` trains
each seed's baselines, skips experiments already in the CSV, runs the others on an executor and records rows.
This module says what an experiment is, how it prunes and trains (:func:`run_experiment`) and what it measures.

Every number in a row is measured on the pruned model, never derived from the request: sparsity is counted in
the weights, sizes are the bytes of files written, FLOPs come from ``torch.utils.flop_counter`` and latency from
``torch.utils.benchmark``. A changed configuration gets a new row (its ``config_hash`` differs) instead of
overwriting an old one.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import dataclasses
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from . import __version__, frontier
from .checks import _check_choice, _check_choices, _check_int, _check_ratio
from .config import RunConfig
from .data import MNISTData
from .lottery import lottery_ticket
from .models import MODEL_NAMES, SAMPLE_SHAPE, build_model
from .parallel import _WORKER_THREADS
from .results import PRUNING, Schema, _update_rows, read_results
from .runner import Study, _accuracies, _Accuracy, _baseline_path, _config_hash, run_study
from .schedules import gradual_prune
from .settings import _show_progress
from .sparsity import measure
from .sparsity.compact import load_compact, save_compact, save_dense
from .sparsity.inference import apply_sparse_plan, plan_sparse_inference
from .sparsity.nm import NM_PATTERNS, _nm_compact_bytes, _pattern_for_ratio, parse_pattern
from .sparsity.structured import apply_structured_masks, apply_surgery
from .sparsity.unstructured import bake_in, sparsify_
from .train import TrainConfig, _load_checkpoint, fine_tune
from .vd import VDConfig

_CPU = torch.device("cpu")

__all__ = [
    "BUDGETS",
    "METHODS",
    "SCHEDULES",
    "Experiment",
    "SweepConfig",
    "SweepStudy",
    "experiments",
    "run_experiment",
    "run_sweep",
]

# The project's pruning methods: the unstructured ones of mnist_pruning.sparsity, and structured surgery.
METHODS = ("l1", "global", "nm", "structured")

_RATIOS = (0.3, 0.5, 0.7, 0.9, 0.99)
# oneshot: prune once, then fine-tune. gradual: Zhu & Gupta's cubic schedule while training. lottery: iterative
# magnitude pruning with rewinding to the initialisation (Frankle & Carbin 2019). See mnist_pruning.schedules
# and mnist_pruning.lottery.
SCHEDULES = ("oneshot", "gradual", "lottery", "ablation", "frontier", "vd")


@dataclass(frozen=True)
class _Budget:
    """How long a model family's experiments train: an MLP epoch costs ~1.5 s here, a LeNet-5 epoch ~15 s."""

    finetune_epochs: int  # fine-tuning after one-shot pruning
    finetune_lr: float  # its peak learning rate (cosine-decayed)
    frontier_epochs: int  # a gradual pruning run
    lottery_epochs: int  # the lottery's dense training and each of its rounds


# Chosen on the validation split by bench/budgets.py; the README (How numbers are chosen) says what it measured.
BUDGETS = {
    "mlp": _Budget(finetune_epochs=8, finetune_lr=0.05, frontier_epochs=20, lottery_epochs=8),
    "cnn": _Budget(finetune_epochs=2, finetune_lr=0.02, frontier_epochs=6, lottery_epochs=5),
}


@dataclass(frozen=True)
class Experiment:
    """One point of the sweep."""

    model: str  # "mlp" | "cnn"
    method: str  # "l1" | "global" | "nm" | "structured"
    ratio: float  # fraction removed; for nm it is 1 - n/m
    pattern: str = ""  # "n:m" for method="nm"
    schedule: str = "oneshot"
    recipe: str = ""  # ablation / frontier: a name of mnist_pruning.frontier.RECIPES[model]

    @property
    def label(self) -> str:
        if self.schedule == "vd":
            return f"{self.model} sparse VD"
        detail = self.pattern if self.method == "nm" else f"{self.ratio:g}"
        return f"{self.model} {self.method} {detail}" + (f" {self.recipe}" if self.recipe else "")


@dataclass
class SweepConfig(RunConfig):
    """What to sweep and with which budgets (folders, seeds, data: :class:`~mnist_pruning.config.RunConfig`)."""

    models: tuple[str, ...] = MODEL_NAMES  # model families
    methods: tuple[str, ...] = METHODS  # pruning methods
    ratios: tuple[float, ...] = _RATIOS  # for l1 / global / structured; nm uses their exact N:M equivalents too
    patterns: tuple[str, ...] = NM_PATTERNS  # hardware N:M patterns, in addition to the ratios' patterns
    finetune_epochs: int | None = None  # fine-tuning epochs after pruning; None = the model's BUDGETS entry
    finetune_lr: float | None = None  # peak learning rate of fine-tuning (cosine-decayed); None = BUDGETS
    latency: bool = True  # measure latency (a few seconds per experiment)
    schedules: tuple[str, ...] = ("oneshot",)  # add "gradual" / "lottery" for the high-sparsity frontier rows
    frontier_ratios: tuple[float, ...] = (0.99,)  # ratios run with the gradual and lottery schedules
    frontier_epochs: int | None = None  # epochs of a gradual run; None = BUDGETS
    lottery_rounds: int = 3  # pruning rounds of a lottery run (each removes the same fraction of what is left)
    lottery_epochs: int | None = None  # lottery's dense training and each round (x (rounds + 1)); None = BUDGETS
    recipes: dict[str, str] = field(default_factory=dict)  # the frontier schedule's recipe per model (chosen on
    # validation by mnist_pruning.frontier.choose_recipes from the ablation's rows)
    recipe_epochs: int | None = None  # every recipe's epochs (smoke runs); None = each recipe's own
    vd_epochs: int | None = None  # Sparse VD epochs; None = mnist_pruning.frontier._VD_BUDGETS

    def __post_init__(self) -> None:
        super().__post_init__()
        self.models = _check_choices(self.models, MODEL_NAMES, "model")
        self.methods = _check_choices(self.methods, METHODS, "method")
        self.schedules = _check_choices(self.schedules, SCHEDULES, "schedule")
        self.ratios = tuple(_check_ratio(r) for r in self.ratios)
        self.frontier_ratios = tuple(_check_ratio(r) for r in self.frontier_ratios)
        self.patterns = tuple(self.patterns)
        for p in self.patterns:
            parse_pattern(p)
        _check_int(self.lottery_rounds, "lottery_rounds")
        for arch in self.models:
            self.budget(arch)  # validates every override
        for name in ("recipe_epochs", "vd_epochs"):
            if getattr(self, name) is not None:
                _check_int(getattr(self, name), name)
        for arch, name in self.recipes.items():
            _check_choice(arch, MODEL_NAMES, "model")
            frontier._check_recipe(arch, name)

    def budget(self, arch: str) -> _Budget:
        """The model's :data:`BUDGETS` entry with this config's overrides applied (and validated)."""
        base = BUDGETS[arch]
        budget = _Budget(
            finetune_epochs=base.finetune_epochs if self.finetune_epochs is None else self.finetune_epochs,
            finetune_lr=base.finetune_lr if self.finetune_lr is None else self.finetune_lr,
            frontier_epochs=base.frontier_epochs if self.frontier_epochs is None else self.frontier_epochs,
            lottery_epochs=base.lottery_epochs if self.lottery_epochs is None else self.lottery_epochs,
        )
        TrainConfig(
            epochs=budget.finetune_epochs, lr=budget.finetune_lr, seed=self.seeds[0], precision=self.precision
        )
        _check_int(budget.frontier_epochs, "frontier_epochs")
        _check_int(budget.lottery_epochs, "lottery_epochs")
        return budget

    def epochs(self, exp: Experiment) -> int:
        """Epochs ``exp`` trains after (gradual / lottery: while) pruning, every lottery round included."""
        budget = self.budget(exp.model)
        if exp.schedule == "gradual":
            return budget.frontier_epochs
        if exp.schedule == "lottery":
            return budget.lottery_epochs * (self.lottery_rounds + 1)
        if exp.schedule in ("ablation", "frontier"):
            return self.recipe(exp).epochs
        if exp.schedule == "vd":
            return self.vd_config(exp.model).epochs
        return budget.finetune_epochs

    def recipe(self, exp: Experiment) -> frontier._Recipe:
        """The recipe an ablation / frontier experiment trains with (its epochs overridden by recipe_epochs)."""
        recipe = frontier.RECIPES[exp.model][exp.recipe]
        return recipe if self.recipe_epochs is None else dataclasses.replace(recipe, epochs=self.recipe_epochs)

    def vd_config(self, arch: str) -> VDConfig:
        """The Sparse VD run of ``arch`` (:data:`mnist_pruning.frontier._VD_BUDGETS`, or vd_epochs)."""
        epochs = frontier._VD_BUDGETS[arch] if self.vd_epochs is None else self.vd_epochs
        return VDConfig(epochs=epochs, seed=self.one_seed(), precision=self.precision)

    def finetune_config(self, arch: str) -> TrainConfig:
        budget = self.budget(arch)
        return TrainConfig(
            epochs=budget.finetune_epochs, lr=budget.finetune_lr, seed=self.one_seed(), precision=self.precision
        )

    def schedule_config(self, exp: Experiment) -> TrainConfig:
        """How a gradual run, or each lottery round, trains: at the baseline recipe's learning rate, since they
        train as much as they prune."""
        budget = self.budget(exp.model)
        epochs = budget.frontier_epochs if exp.schedule == "gradual" else budget.lottery_epochs
        lr = self.baseline_config(exp.model).lr
        return TrainConfig(epochs=epochs, lr=lr, seed=self.one_seed(), precision=self.precision)


def experiments(config: SweepConfig) -> list[Experiment]:
    """The experiments a sweep runs, in order: per model, per method, per ratio / pattern."""
    out = []
    for arch in config.models:
        for method in config.methods:
            if method == "nm":
                patterns = list(config.patterns)
                for r in config.ratios:
                    p = _pattern_for_ratio(r)
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
        if "ablation" in config.schedules:
            for name in frontier.RECIPES[arch]:
                out.extend(
                    Experiment(arch, "global", r, schedule="ablation", recipe=name) for r in config.frontier_ratios
                )
        if "frontier" in config.schedules:
            if arch not in config.recipes:
                raise ValueError(f"the frontier schedule needs a recipe for {arch!r}: recipes={{model: name}}")
            recipe = config.recipes[arch]
            out.extend(
                Experiment(arch, "global", s, schedule="frontier", recipe=recipe) for s in frontier._SPARSITIES
            )
        if "vd" in config.schedules:
            out.append(Experiment(arch, "vd", 0.0, schedule="vd"))
    return out


def _experiment_hash(config: SweepConfig, exp: Experiment) -> str:
    """A short hash of everything that shapes ``exp``'s numbers (baseline recipe, data, seed and the budget of
    its schedule), not of paths: changing the gradual budget does not invalidate one-shot rows."""
    budget = config.budget(exp.model)
    key: dict = {"baseline": config.baseline_config(exp.model).to_dict(), **config.data_key()}
    if exp.schedule == "oneshot":
        key["finetune"] = config.finetune_config(exp.model).to_dict()
    elif exp.schedule == "gradual":
        key["gradual_epochs"] = budget.frontier_epochs
    elif exp.schedule == "lottery":
        key["lottery"] = [config.lottery_rounds, budget.lottery_epochs]
    elif exp.schedule == "vd":
        key["vd"] = asdict(config.vd_config(exp.model))
    else:
        key["recipe"] = config.recipe(exp).key()
    return _config_hash(key)


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
class _ExperimentResult:
    """What :func:`run_experiment` measured and where it saved the model."""

    row: dict  # the CSV row (every column of mnist_pruning.results.PRUNING)
    model: nn.Module  # the fine-tuned model, masks baked in, on the CPU
    dense_path: Path  # its ordinary dense state_dict file
    compact_path: Path  # its compact sparse file (mnist_pruning.sparsity.compact)
    csv: Path | None = None  # the results CSV its row went to, once recorded (see notebook._Run.experiment)


def run_experiment(
    exp: Experiment,
    base_model: nn.Module,
    data: MNISTData,
    config: SweepConfig,
    acc_baseline: _Accuracy,
    files_dir: str | os.PathLike,
    progress: bool = True,
) -> _ExperimentResult:
    """Run one experiment on a copy of ``base_model``: prune, fine-tune, save, measure everything but latency
    (its columns stay empty: :func:`_latency_values` times the saved model later, in a quiet phase).

    ``acc_baseline`` is the baseline's (test, validation) accuracy (:func:`~mnist_pruning.runner._accuracies`).
    """
    run = _run_oneshot if exp.schedule == "oneshot" else _run_frontier
    model, acc_pruned, epochs, seconds = run(exp, base_model, data, config, progress)
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
    )


_LATENCY_BATCHES = (1, 256)
# Planning a row's sparse conversion times each layer dense and sparse, then the whole model (sparsity.inference).
# One round of 3-5 block medians of 20 ms keeps that to about a second per row on 2 cores. Layers denser than 0.4
# stay dense untimed: their CSR matrix (a float32 value and an int32 column index per non-zero) holds 80 % or more
# of the dense matrix's bytes, and torch's CSR kernel needed density ~0.1 to beat dense GEMM by 2x at batch 256
# (bench/sparse_speed.py); this spares the timing on the rows pruned to 30-50 %.
_SPARSE_PLAN_OPTIONS = {"min_run_time": 0.02, "rounds": 1, "max_density": 0.4}


# Latency is timed after training, in one process at one thread with nothing else running (measure_latencies):
# the model, its sparse conversion and its baseline alternate round by round, so drift hits them alike.
_LATENCY_TIMING = measure.Timing(rounds=3, min_run_time=0.1, batches=_LATENCY_BATCHES)


def _latency_values(exp: Experiment, model: nn.Module, base_model: nn.Module) -> dict[str, object]:
    """The latency columns of ``exp``'s row: ``model`` (masks baked in), its sparse conversion (unstructured and
    N:M rows) and ``base_model``, timed alternately (:data:`_LATENCY_TIMING`) on CPU copies."""
    models = {
        name: copy.deepcopy(m).cpu().to(memory_format=torch.contiguous_format)
        for name, m in (("baseline", base_model), ("dense", model))
    }
    names: dict[int, str] = {}
    if exp.method != "structured":  # surgery already made it a smaller dense model: nothing to convert
        sparse, names = _sparse_inference(models["dense"])
        if sparse is not None:  # else every layer stays dense: the converted model is the dense one
            models["sparse"] = sparse
    timed = measure.time_models(models, _LATENCY_TIMING, SAMPLE_SHAPE)
    values: dict[str, object] = {}
    for b in _LATENCY_BATCHES:
        values[f"baseline_latency_b{b}_ms"] = timed["baseline"][b].best_ms
        values[f"latency_b{b}_ms"] = timed["dense"][b].best_ms
        if names:
            values[f"latency_sparse_b{b}_ms"] = timed["sparse" if "sparse" in models else "dense"][b].best_ms
            values[f"sparse_layers_b{b}"] = names[b]
    return values


def _saved_model(exp: Experiment, config: SweepConfig) -> nn.Module:
    """``exp``'s model as the sweep saved it (its compact file, CRC-checked), on the CPU."""
    state = load_compact(_experiment_files(exp, config.paths.runs / "experiments", config)[1])
    model = build_model(exp.model)
    widths = {name: state[f"{name}.weight"].shape[0] for name in model.STRUCTURED}
    model = model.with_widths(widths)  # a surgered model's layers are smaller
    model.load_state_dict(state)
    return model


def measure_latencies(config: SweepConfig, progress: bool = True) -> int:
    """Time every row of ``config`` (every seed) whose latency is still empty, on its saved model and its seed's
    saved baseline, in this process at one torch thread; write each row's latencies as soon as they are measured.
    Returns how many rows were timed. Run after training, when nothing else runs: that is the quiet phase."""
    study = SweepStudy(config)
    todo = []
    for arch in config.models:
        path = PRUNING.csv(config.paths.results, arch)
        empty = {PRUNING.key(r) for r in read_results(path) if r["latency_b1_ms"] == ""}
        for seed in config.seeds:
            one = study.for_seed(seed)
            todo += [(path, one, exp) for exp in one.points() if exp.model == arch and one.key(exp) in empty]
    threads = torch.get_num_threads()
    torch.set_num_threads(_WORKER_THREADS)
    try:
        bases: dict[tuple[str, int], nn.Module] = {}
        for path, one, exp in tqdm(todo, desc="latency", disable=not _show_progress(progress)):
            seed = one.config.one_seed()
            if (exp.model, seed) not in bases:
                saved = _baseline_path(config.paths.runs, exp.model, seed)
                bases[(exp.model, seed)] = _load_checkpoint(saved, _CPU)[0]
            values = _latency_values(exp, _saved_model(exp, one.config), bases[(exp.model, seed)])
            _update_rows(path, {one.key(exp): values})
    finally:
        torch.set_num_threads(threads)
    return len(todo)


def _sparse_inference(model: nn.Module) -> tuple[nn.Module | None, dict[int, str]]:
    """``model`` (baked in, contiguous, on the CPU) converted by ``sparsity.to_sparse_inference`` for batch 1
    and 256, and per batch size the layers that run sparse, comma-joined ("none": the plan keeps them all dense).
    The model is None when no layer runs sparse at any batch size: it would be the dense model again."""
    plan = plan_sparse_inference(model, SAMPLE_SHAPE, _LATENCY_BATCHES, **_SPARSE_PLAN_OPTIONS)
    names = {b: ",".join(row.layer for row in plan if row.sparse[b]) or "none" for b in _LATENCY_BATCHES}
    if not any(row.any_sparse for row in plan):
        return None, names
    return apply_sparse_plan(model, plan), names


def _run_oneshot(
    exp: Experiment, base_model: nn.Module, data: MNISTData, config: SweepConfig, progress: bool
) -> tuple[nn.Module, _Accuracy | None, int, float]:
    """Prune a copy of the baseline once, then fine-tune it (structured: the surgered, smaller model)."""
    model = _prune(copy.deepcopy(base_model), exp)
    acc_pruned = _accuracies(model, data)
    if exp.method == "structured":
        # Surgery makes the tensors physically smaller; the small model needs no masks while fine-tuning.
        model = apply_surgery(model)
    start = time.perf_counter()
    finetune = config.finetune_config(exp.model)
    fine_tune(model, data, finetune, desc=exp.label, progress=progress)
    return model, acc_pruned, finetune.epochs, time.perf_counter() - start


def _experiment_files(exp: Experiment, files_dir: str | os.PathLike, config: SweepConfig) -> tuple[Path, Path]:
    """Where an experiment's dense ``state_dict`` and its compact file go, e.g.
    ``mlp_nm_2of4_seed0_<config_hash>.safetensors``: the seed and the :func:`_config_hash` (budget, baseline
    recipe, data) make the names unique per run, so a later run never replaces the files of an earlier row."""
    detail = (exp.pattern or f"{exp.ratio:g}").replace(":", "of")
    suffix = "" if exp.schedule == "oneshot" else f"_{exp.schedule}"
    suffix += f"_{exp.recipe.replace('+', '-')}" if exp.recipe else ""
    stem = f"{exp.model}_{exp.method}_{detail}{suffix}_seed{config.one_seed()}_{_experiment_hash(config, exp)}"
    return Path(files_dir) / f"{stem}.dense.pt", Path(files_dir) / f"{stem}.safetensors"


def _run_frontier(
    exp: Experiment, base_model: nn.Module, data: MNISTData, config: SweepConfig, progress: bool
) -> tuple[nn.Module, None, int, float]:
    """Gradual pruning or a frontier recipe from the baseline, Sparse VD from the baseline, or a lottery ticket
    trained from scratch (it needs its own early iterate to rewind to)."""
    if exp.schedule == "vd":
        result = frontier._run_vd(base_model, data, config.vd_config(exp.model), progress)
        return result.model, None, result.epochs, result.seconds
    if exp.schedule in ("ablation", "frontier"):
        recipe, recipe_cfg = config.recipe(exp), config.baseline_config(exp.model)
        result = frontier._run_recipe(base_model, data, exp.ratio, recipe, recipe_cfg, progress)
        return result.model, None, result.epochs, result.seconds
    train_cfg = config.schedule_config(exp)
    if exp.schedule == "gradual":
        result = gradual_prune(
            copy.deepcopy(base_model), data, exp.method, exp.ratio, train_cfg, progress=progress
        )
        return result.model, None, result.epochs, result.seconds
    ticket = lottery_ticket(exp.model, data, exp.ratio, train_cfg, rounds=config.lottery_rounds, progress=progress)
    return ticket.model.to(next(base_model.parameters()).device), None, ticket.epochs, ticket.seconds


def _measure(
    exp: Experiment,
    model: nn.Module,
    base_model: nn.Module,
    data: MNISTData,
    config: SweepConfig,
    acc_baseline: _Accuracy,
    acc_pruned: _Accuracy | None,
    epochs: int,
    seconds: float,
    files_dir: str | os.PathLike,
) -> _ExperimentResult:
    """Bake the masks in, save the model both ways and measure everything a CSV row holds on what was saved."""
    bake_in(model)
    model = model.to(memory_format=torch.contiguous_format).cpu()
    dense_path, compact_path = _experiment_files(exp, files_dir, config)
    size_dense = save_dense(model, dense_path)
    size_compact = save_compact(model, compact_path)
    layers = measure.prunable_layers(model)
    acc_finetuned = _accuracies(model, data)
    row = PRUNING.row(
        **{
            "model": exp.model,
            "method": exp.method,
            "pattern": exp.pattern,
            "schedule": exp.schedule,
            "recipe": exp.recipe,
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
            "config_hash": _experiment_hash(config, exp),
        }
    )
    if exp.method == "structured":
        row["sparsity"] = 1 - row["params_total"] / measure.count_parameters(base_model)
    if exp.method == "nm":
        n, m = parse_pattern(exp.pattern)
        row["size_nm_bytes"] = sum(
            _nm_compact_bytes(module.weight.detach(), n, m) + module.bias.numel() * module.bias.element_size()
            for _, module in layers
        )
    return _ExperimentResult(row, model, dense_path, compact_path)


@dataclass
class SweepStudy(Study):
    """The pruning sweep as the runner runs it: one point per :class:`Experiment`, rows of
    :data:`mnist_pruning.results.PRUNING`."""

    config: SweepConfig
    schema: ClassVar[Schema] = PRUNING

    def points(self) -> list[Experiment]:
        return experiments(self.config)

    def run_key(self, exp: Experiment) -> dict:
        return {**asdict(exp), "finetune_epochs": self.config.epochs(exp), "seed": self.config.one_seed()}

    def hash(self, exp: Experiment) -> str:
        return _experiment_hash(self.config, exp)

    def run(self, points, base, info, data, progress) -> list[dict]:
        files = self.config.paths.runs / "experiments"
        (acc,) = info
        return [run_experiment(exp, base, data, self.config, acc, files, progress).row for exp in points]


def run_sweep(
    config: SweepConfig,
    progress: bool = True,
    data: MNISTData | None = None,
    executor: cf.Executor | None = None,
    workers: int | None = None,
) -> dict[str, Path]:
    """Run every experiment of ``config`` (every seed) not yet in its CSV, then, with ``config.latency``, time
    every row still without latency (:func:`measure_latencies`); return ``{model: csv_path}``. The frontier
    schedule runs last, with ``config.recipes`` or, for a model without one, the recipe
    :func:`mnist_pruning.frontier.choose_recipes` picks on validation from the ablation's rows
    (:func:`mnist_pruning.runner.run_study` on a :class:`SweepStudy`: see there for ``executor``, ``workers``
    and ``data``)."""
    where = dict(progress=progress, data=data, executor=executor, workers=workers)
    first = dataclasses.replace(config, schedules=tuple(s for s in config.schedules if s != "frontier"))
    csvs = run_study(SweepStudy(first), **where) if first.schedules else {}
    if "frontier" in config.schedules:
        missing = tuple(arch for arch in config.models if arch not in config.recipes)
        chosen = frontier.choose_recipes(config.paths.results, missing) if missing else {}
        config = dataclasses.replace(config, recipes={**chosen, **config.recipes})
        csvs = run_study(SweepStudy(dataclasses.replace(config, schedules=("frontier",))), **where)
    if config.latency:
        measure_latencies(config, progress)
    return csvs


def _settings_json(config: SweepConfig) -> str:
    """The sweep's settings and library versions as JSON (saved beside a full run's results)."""
    return json.dumps(
        {"sweep": asdict(config), "version": __version__, "torch": torch.__version__}, indent=2, default=str
    )
