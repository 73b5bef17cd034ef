"""Prune -> fine-tune -> measure, over models x methods x ratios, one CSV row per experiment.

Usage::

    from mnist_pruning.sweep import SweepConfig, run_sweep
    run_sweep(SweepConfig(models=("mlp",), methods=("global",), ratios=(0.9,)))
    # -> results/mlp_pruning_results.csv, one row per experiment (see COLUMNS)

or from the shell: ``mnist-pruning sweep --models mlp cnn --methods l1 global nm structured``.

Every number in a row is measured on the pruned model, never derived from the request: sparsity is counted in
the weights, sizes are the bytes of files written, FLOPs come from ``torch.utils.flop_counter`` and latency from
``torch.utils.benchmark``. Rows are appended atomically (the CSV is rewritten to a temporary file and renamed), a
rerun skips experiments already in the CSV, and a changed configuration gets a new row (its ``config_hash``
differs) instead of overwriting an old one.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from .data import MNISTData, load_mnist
from .export import save_compact, save_dense
from .files import atomic_write, check_writable_dir
from .metrics import latency_ms, model_report
from .models import MODEL_NAMES, build_model, check_model_name, prunable_layers
from .nm import NM_PATTERNS, nm_compact_bytes, nm_unstructured, parse_pattern, pattern_for_ratio
from .pruning import METHODS, bake_in, check_method, check_ratio, prune_unstructured
from .settings import paths
from .structured import apply_structured_masks, surgery
from .train import TrainConfig, evaluate, fine_tune, get_device, load_checkpoint, save_checkpoint, train

__all__ = [
    "COLUMNS",
    "BUDGETS",
    "Budget",
    "RATIOS",
    "SCHEDULES",
    "Experiment",
    "SweepConfig",
    "experiments",
    "results_csv",
    "read_results",
    "append_row",
    "baseline",
    "run_experiment",
    "run_sweep",
    "record",
    "experiment_files",
]

RATIOS = (0.3, 0.5, 0.7, 0.9, 0.99)
# oneshot: prune once, then fine-tune. gradual: Zhu & Gupta's cubic schedule while training. lottery: iterative
# magnitude pruning with rewinding to the initialisation (Frankle & Carbin 2019). See mnist_pruning.frontier.
SCHEDULES = ("oneshot", "gradual", "lottery")

# The CSV schema. Sizes in bytes, latency in milliseconds per batch, accuracies as fractions in [0, 1].
COLUMNS = (
    "model",  # mlp | cnn
    "method",  # l1 | global | nm | structured
    "pattern",  # N:M pattern for method=nm, else empty
    "schedule",  # oneshot | gradual | lottery
    "ratio",  # requested fraction of weights (units, for structured) removed
    "sparsity",  # measured: zero fraction of prunable weights (structured: removed fraction of parameters)
    "params_total",  # parameters of the architecture (structured: of the smaller model)
    "params_nonzero",  # non-zero parameters, biases included
    "acc_baseline",  # test accuracy of the dense baseline
    "acc_pruned",  # test accuracy right after pruning (empty for gradual / lottery: no such moment)
    "acc_finetuned",  # test accuracy after fine-tuning
    "finetune_epochs",  # epochs trained after (or, gradual / lottery: while) pruning, all rounds included
    "size_dense_bytes",  # file bytes of the ordinary dense state_dict (zeros stored)
    "size_compact_bytes",  # file bytes of the compact sparse format (mnist_pruning.export)
    "size_nm_bytes",  # bytes of the N:M format (values + in-group positions) for method=nm, else empty
    "flops_dense",  # forward FLOPs per image of the architecture (structured: of the smaller model)
    "flops_effective",  # FLOPs a sparse kernel would do: per layer, dense FLOPs x weight density
    "latency_b1_ms",  # CPU forward latency, batch 1 (median, torch.utils.benchmark)
    "latency_b256_ms",  # CPU forward latency, batch 256
    "baseline_latency_b1_ms",  # the dense baseline, measured in the same run
    "baseline_latency_b256_ms",
    "finetune_seconds",  # wall time of fine-tuning
    "seed",
    "threads",  # torch threads used for training and latency
    "device",  # cpu | cuda
    "config_hash",  # hash of everything that defines the experiment (not timings)
    "version",  # mnist_pruning version that produced the row
    "torch_version",
)


@dataclass(frozen=True)
class Budget:
    """How long a model family's experiments train: an MLP epoch costs ~1.5 s here, a LeNet-5 epoch ~15 s."""

    finetune_epochs: int  # fine-tuning after one-shot pruning
    finetune_lr: float  # its peak learning rate (cosine-decayed)
    frontier_epochs: int  # a gradual pruning run
    lottery_epochs: int  # the lottery's dense training and each of its rounds


# Measured here: with 2 epochs at lr 0.01 LeNet-300-100 recovers to 98.15 % at 90 % global sparsity, with 8 at
# lr 0.05 to 98.38 % (2:4: 98.27 % -> 98.42 %); LeNet-5 recovers within 2 epochs.
BUDGETS = {
    "mlp": Budget(finetune_epochs=8, finetune_lr=0.05, frontier_epochs=20, lottery_epochs=5),
    "cnn": Budget(finetune_epochs=2, finetune_lr=0.01, frontier_epochs=6, lottery_epochs=3),
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
    seed: int = 0  # seeds the baseline, batch order and everything random
    subset: int | None = None  # class-balanced training subset (smoke runs); None = all 60,000
    test_subset: int | None = None  # class-balanced test subset; None = all 10,000
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
        self.models = tuple(self.models)
        self.methods = tuple(self.methods)
        self.ratios = tuple(self.ratios)
        self.patterns = tuple(self.patterns)
        for m in self.models:
            check_model_name(m)
        for m in self.methods:
            check_method(m)
        for r in self.ratios:
            check_ratio(r)
        for p in self.patterns:
            parse_pattern(p)
        self.schedules = tuple(self.schedules)
        self.frontier_ratios = tuple(self.frontier_ratios)
        for sched in self.schedules:
            if sched not in SCHEDULES:
                raise ValueError(f"unknown schedule {sched!r}; allowed: {', '.join(map(repr, SCHEDULES))}")
        for r in self.frontier_ratios:
            check_ratio(r)
        TrainConfig(epochs=self.lottery_rounds)  # same rule: a positive integer
        for arch in self.models:
            self.budget(arch)  # validates every override
        for arch, epochs in self.baseline_epochs.items():
            check_model_name(arch)
            TrainConfig(epochs=epochs)
        for name in ("subset", "test_subset"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 10):
                raise ValueError(f"{name} must be None or an integer >= 10, got {value!r}")

    def baseline_config(self, arch: str) -> TrainConfig:
        overrides = {"seed": self.seed}
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
        TrainConfig(epochs=budget.finetune_epochs, lr=budget.finetune_lr, seed=self.seed)
        TrainConfig(epochs=budget.frontier_epochs)
        TrainConfig(epochs=budget.lottery_epochs)
        return budget

    def finetune_config(self, arch: str) -> TrainConfig:
        budget = self.budget(arch)
        return TrainConfig(epochs=budget.finetune_epochs, lr=budget.finetune_lr, seed=self.seed)


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


def results_csv(results_dir: str | os.PathLike, arch: str) -> Path:
    return Path(results_dir) / f"{arch}_pruning_results.csv"


def read_results(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a results CSV (empty when absent); a CSV with other columns raises before any work."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        found = tuple(reader.fieldnames or ())
        if found != COLUMNS:
            missing = [c for c in COLUMNS if c not in found]
            extra = [c for c in found if c not in COLUMNS]
            raise ValueError(
                f"{str(path)!r} has unexpected columns (missing: {missing or 'none'}, "
                f"unexpected: {extra or 'none'});"
                " move it aside or point results_dir elsewhere - it is left untouched"
            )
        return list(reader)


def _row_key(row: dict) -> tuple[str, ...]:
    ratio = float(row["ratio"])
    return (
        str(row["model"]),
        str(row["method"]),
        str(row["pattern"] or ""),
        str(row["schedule"]),
        f"{ratio:.6g}",
        str(int(row["finetune_epochs"])),
        str(int(row["seed"])),
        str(row["config_hash"]),
    )


def append_row(path: str | os.PathLike, row: dict) -> None:
    """Append ``row`` to the CSV at ``path`` atomically (rewrite to a temp file, then rename)."""
    rows = read_results(path)
    rows.append({c: row.get(c, "") for c in COLUMNS})
    with atomic_write(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)


def baseline(
    arch: str, data: MNISTData, config: TrainConfig, out_dir: str | os.PathLike, progress: bool = True
) -> tuple[nn.Module, dict]:
    """The dense baseline: loaded from ``out_dir/<arch>_baseline.pt`` when it was trained with ``config`` on the
    same data, else trained now and saved there. Returns the model and its checkpoint payload."""
    path = Path(out_dir) / f"{arch}_baseline.pt"
    data_key = [int(data.train_y.numel()), int(data.test_y.numel())]
    if path.exists():
        model, payload = load_checkpoint(path)
        if payload.get("train_config") == config.to_dict() and payload.get("data") == data_key:
            return model, payload
    model, history = train(arch, data, config, progress=progress)
    metrics = evaluate(model, data.test_x, data.test_y)
    save_checkpoint(path, model, config, history, metrics=metrics, data=data_key)
    return model, {"train_config": config.to_dict(), "history": history, "metrics": metrics, "data": data_key}


def _prune(model: nn.Module, exp: Experiment) -> nn.Module:
    """Prune a copy of the baseline as ``exp`` says; structured returns the masked (not yet shrunk) model."""
    if exp.method in ("l1", "global"):
        return prune_unstructured(model, exp.method, exp.ratio)
    if exp.method == "nm":
        n, m = parse_pattern(exp.pattern)
        for _, module in prunable_layers(model):
            nm_unstructured(module, "weight", n, m)
        return model
    apply_structured_masks(model, exp.ratio)
    return model


def run_experiment(
    exp: Experiment,
    base_model: nn.Module,
    data: MNISTData,
    config: SweepConfig,
    acc_baseline: float,
    files_dir: str | os.PathLike,
    baseline_latency: tuple[float, float] | None = None,
    progress: bool = True,
) -> tuple[dict, nn.Module]:
    """Run one experiment on a copy of ``base_model``; return its CSV row and the fine-tuned model."""
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
        baseline_latency,
    )


def _run_oneshot(
    exp: Experiment, base_model: nn.Module, data: MNISTData, config: SweepConfig, progress: bool
) -> tuple[nn.Module, float, int, float]:
    """Prune a copy of the baseline once, then fine-tune it (structured: the surgered, smaller model)."""
    model = _prune(copy.deepcopy(base_model), exp)
    acc_pruned = evaluate(model, data.test_x, data.test_y)["accuracy"]
    if exp.method == "structured":
        # Surgery makes the tensors physically smaller; the small model needs no masks while fine-tuning.
        small_config, state_dict = surgery(model)
        model = build_model(small_config).to(next(base_model.parameters()).device)
        model.load_state_dict(state_dict)
    start = time.perf_counter()
    finetune = config.finetune_config(exp.model)
    fine_tune(model, data, finetune, desc=exp.label, progress=progress)
    return model, acc_pruned, finetune.epochs, time.perf_counter() - start


def experiment_files(exp: Experiment, files_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Where an experiment's dense ``state_dict`` and its compact file go, e.g. ``mlp_nm_2of4.safetensors``."""
    detail = (exp.pattern or f"{exp.ratio:g}").replace(":", "of")
    suffix = "" if exp.schedule == "oneshot" else f"_{exp.schedule}"
    stem = f"{exp.model}_{exp.method}_{detail}{suffix}"
    return Path(files_dir) / f"{stem}.dense.pt", Path(files_dir) / f"{stem}.safetensors"


def _run_frontier(
    exp: Experiment, base_model: nn.Module, data: MNISTData, config: SweepConfig, progress: bool
) -> tuple[nn.Module, str, int, float]:
    """Gradual pruning from the baseline, or a lottery ticket trained from scratch (it needs its own early
    iterate to rewind to); both at the model's baseline learning rate, since they train as much as they prune."""
    from .frontier import gradual_prune, lottery_ticket

    recipe = config.baseline_config(exp.model)
    if exp.schedule == "gradual":
        train_cfg = TrainConfig(epochs=config.budget(exp.model).frontier_epochs, lr=recipe.lr, seed=config.seed)
        result = gradual_prune(
            copy.deepcopy(base_model), data, exp.method, exp.ratio, train_cfg, progress=progress
        )
        return result.model, "", result.epochs, result.seconds
    train_cfg = TrainConfig(epochs=config.budget(exp.model).lottery_epochs, lr=recipe.lr, seed=config.seed)
    ticket = lottery_ticket(exp.model, data, exp.ratio, train_cfg, rounds=config.lottery_rounds, progress=progress)
    return ticket.model.to(next(base_model.parameters()).device), "", ticket.epochs, ticket.seconds


def _measure(
    exp: Experiment,
    model: nn.Module,
    base_model: nn.Module,
    data: MNISTData,
    config: SweepConfig,
    acc_baseline: float,
    acc_pruned: float | str,
    epochs: int,
    seconds: float,
    files_dir: str | os.PathLike,
    baseline_latency: tuple[float, float] | None,
) -> tuple[dict, nn.Module]:
    """Bake the masks in and measure everything a CSV row holds."""
    bake_in(model)
    model = model.to(memory_format=torch.contiguous_format).cpu()
    acc_finetuned = evaluate(model, data.test_x, data.test_y)["accuracy"]

    dense_path, compact_path = experiment_files(exp, files_dir)
    report = model_report(model)
    row = {
        "model": exp.model,
        "method": exp.method,
        "pattern": exp.pattern,
        "schedule": exp.schedule,
        "ratio": f"{exp.ratio:.6g}",
        "sparsity": report["sparsity"],
        "params_total": report["params_total"],
        "params_nonzero": report["params_nonzero"],
        "acc_baseline": acc_baseline,
        "acc_pruned": acc_pruned,
        "acc_finetuned": acc_finetuned,
        "finetune_epochs": epochs,
        "size_dense_bytes": save_dense(model, dense_path),
        "size_compact_bytes": save_compact(model, compact_path),
        "size_nm_bytes": "",
        "flops_dense": report["flops_dense"],
        "flops_effective": report["flops_effective"],
        "seed": config.seed,
        "threads": torch.get_num_threads(),
        "device": str(next(base_model.parameters()).device.type),
        "finetune_seconds": round(seconds, 3),
        "version": __version__,
        "torch_version": torch.__version__,
    }
    if exp.method == "structured":
        dense_params = sum(p.numel() for p in base_model.parameters())
        row["sparsity"] = 1 - report["params_total"] / dense_params
    if exp.method == "nm":
        n, m = parse_pattern(exp.pattern)
        row["size_nm_bytes"] = sum(
            nm_compact_bytes(module.weight.detach(), n, m) for _, module in prunable_layers(model)
        ) + sum(module.bias.numel() * module.bias.element_size() for _, module in prunable_layers(model))
    if config.latency:
        if baseline_latency is None:
            dense = copy.deepcopy(base_model).cpu()
            baseline_latency = (latency_ms(dense, 1), latency_ms(dense, 256))
        row["latency_b1_ms"] = latency_ms(model, 1)
        row["latency_b256_ms"] = latency_ms(model, 256)
        if baseline_latency is not None:
            row["baseline_latency_b1_ms"], row["baseline_latency_b256_ms"] = baseline_latency
    return row, model


def record(row: dict, config: SweepConfig) -> Path:
    """Append a finished experiment's row to its model's CSV unless an identical experiment is already there."""
    row = {**row, "config_hash": config_hash(config, experiment_of(row))}
    path = results_csv(paths(config.data_dir, config.out_dir, config.results_dir).results, row["model"])
    if _row_key(row) not in {_row_key(r) for r in read_results(path)}:
        append_row(path, row)
    return path


def _epochs_of(exp: Experiment, config: SweepConfig) -> int:
    budget = config.budget(exp.model)
    if exp.schedule == "gradual":
        return budget.frontier_epochs
    if exp.schedule == "lottery":
        return budget.lottery_epochs * (config.lottery_rounds + 1)
    return budget.finetune_epochs


def _pending(config: SweepConfig, results_dir: Path) -> Iterator[tuple[Experiment, Path]]:
    done: dict[str, set] = {}
    for exp in experiments(config):
        path = results_csv(results_dir, exp.model)
        if exp.model not in done:
            done[exp.model] = {_row_key(r) for r in read_results(path)}
        key = _row_key(
            {
                "model": exp.model,
                "method": exp.method,
                "pattern": exp.pattern,
                "schedule": exp.schedule,
                "ratio": exp.ratio,
                "finetune_epochs": _epochs_of(exp, config),
                "seed": config.seed,
                "config_hash": config_hash(config, exp),
            }
        )
        if key not in done[exp.model]:
            yield exp, path


def run_sweep(config: SweepConfig, progress: bool = True, data: MNISTData | None = None) -> dict[str, Path]:
    """Run every experiment of ``config`` not yet in its CSV; return ``{model: csv_path}``."""
    p = paths(config.data_dir, config.out_dir, config.results_dir)
    check_writable_dir(p.runs)
    check_writable_dir(p.results)
    pending = list(_pending(config, p.results))  # also validates existing CSVs before any training
    csvs = {arch: results_csv(p.results, arch) for arch in config.models}
    if not pending:
        return csvs
    if data is None:
        data = load_mnist(p.data, subset=config.subset, test_subset=config.test_subset, seed=config.seed)
    device = get_device()
    data = data.to(device)
    files_dir = p.runs / "experiments"
    bar = tqdm(pending, desc="sweep", disable=not progress)
    bases: dict[str, tuple[nn.Module, float, tuple[float, float] | None]] = {}
    for exp, csv_path in bar:
        bar.set_postfix_str(exp.label)
        if exp.model not in bases:
            model, payload = baseline(exp.model, data, config.baseline_config(exp.model), p.runs, progress)
            model = model.to(device)
            acc = evaluate(model, data.test_x, data.test_y)["accuracy"]
            lat = None
            if config.latency:
                dense = copy.deepcopy(model).cpu()
                lat = (latency_ms(dense, 1), latency_ms(dense, 256))
            bases[exp.model] = (model, acc, lat)
        model, acc, lat = bases[exp.model]
        row, _ = run_experiment(exp, model, data, config, acc, files_dir, lat, progress)
        row["config_hash"] = config_hash(config, exp)
        append_row(csv_path, row)
    return csvs


def sweep_rows(paths_: Iterable[str | os.PathLike]) -> list[dict]:
    """All rows of several results CSVs (for notebooks)."""
    return [row for path in paths_ for row in read_results(path)]


def settings_json(config: SweepConfig) -> str:
    """The sweep's settings and library versions as JSON (saved beside a full run's results)."""
    return json.dumps(
        {"sweep": asdict(config), "version": __version__, "torch": torch.__version__}, indent=2, default=str
    )
