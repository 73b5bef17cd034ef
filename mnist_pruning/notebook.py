"""What the notebooks call first: validate their papermill parameters, resolve paths, apply the smoke budget.

Usage (in a notebook, right after the ``parameters`` cell)::

    from mnist_pruning.notebook import setup
    run = setup(model=model, ratio=ratio, finetune_epochs=finetune_epochs, seed=seed,
                data_dir=data_dir, out_dir=out_dir)
    mnist = run.load_data()
    base, payload = run.baseline("mlp", mnist)   # reuses runs/mlp_baseline.pt when it fits, else trains it
    result = run.experiment(Experiment("mlp", "global", 0.9), base, payload["accuracy"], mnist)
    accuracy_table(result.row), cost_table(result.row, base)   # what the chapters show

Every parameter is checked before anything is loaded or trained, and a bad one raises a ValueError naming the
value and what is allowed, so ``papermill ... -p ratio 1.5`` fails in the notebook's first code cells.
With ``MNIST_PRUNING_SMOKE=1`` (tests, CI) budgets shrink to a few seconds and outputs go to ``runs/smoke/``.
``setup`` also makes pandas show floats as :func:`_format_number` does, so tables read ``532,400``, not
``532400.000000``.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn

from .checks import _check_choice, _check_int, _check_n_of_m, _check_ratio
from .compress import CompressConfig
from .config import RunConfig
from .data import MNISTData, _data_root
from .files import _check_writable_dir
from .frontier import choose_recipes
from .models import MODEL_NAMES, SAMPLE_SHAPE
from .references import _PUBLISHED_BASELINE
from .runner import _accuracies, _record, baseline
from .settings import SMOKE, _Paths, paths, smoke_mode
from .sparsity import measure
from .sparsity.compact import _dense_bytes
from .sparsity.nm import parse_pattern
from .sweep import METHODS, SCHEDULES, SweepConfig, SweepStudy, _latency_values, run_experiment
from .train import TrainConfig

__all__ = [
    "setup",
    "baseline_summary",
    "accuracy_table",
    "cost_table",
    "masked_state_dict_bytes",
]


@dataclass
class _Run:
    """Validated notebook parameters: the run's folders, seed and data (:class:`~mnist_pruning.config.RunConfig`,
    small in smoke mode) and the chapter's own parameters."""

    models: tuple[str, ...]  # model families this notebook works on
    config: RunConfig  # folders, seed, data subsets and baseline epochs
    finetune_epochs: int | None = None  # None: the model's budget (mnist_pruning.sweep.BUDGETS)
    params: dict = field(default_factory=dict)  # every other validated parameter, by name

    def __getattr__(self, name: str):
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(name)

    @property
    def paths(self) -> _Paths:
        return self.config.paths

    @property
    def seed(self) -> int:
        return self.config.one_seed()

    @property
    def smoke(self) -> bool:
        """Whether ``MNIST_PRUNING_SMOKE`` is set: tiny budgets."""
        return smoke_mode()

    def load_data(self) -> MNISTData:
        return self.config.load_data()

    def train_config(self, arch: str, **overrides) -> TrainConfig:
        """The baseline recipe with this run's seed, epochs and precision (the one the sweep uses); ``overrides``
        replace fields (``epochs=`` for a budget at the recipe's learning rate)."""
        return dataclasses.replace(self.config.baseline_config(arch), **overrides)

    def baseline(self, arch: str, data: MNISTData, progress: bool = True) -> tuple[nn.Module, dict]:
        """The dense baseline (reused from ``runs/`` when trained with this config, else trained now) and its
        checkpoint payload (``history``, ``train_config``) with ``accuracy`` (test) and ``val_accuracy`` added,
        measured on ``data``."""
        model, payload = baseline(arch, data, self.train_config(arch), self.paths.runs, progress=progress)
        test, val = _accuracies(model, data)
        return model, {**payload, "accuracy": test, "val_accuracy": val}

    def experiment(self, exp, base: nn.Module, payload: dict, data: MNISTData, **overrides):
        """Run ``exp`` (a :class:`~mnist_pruning.sweep.Experiment`) on ``base`` (whose :meth:`baseline` payload
        gives its test and validation accuracy) with this run's budgets, record its row in the results CSV
        (once), and return the :class:`~mnist_pruning.sweep._ExperimentResult` with its ``csv`` set.
        ``overrides`` go to :meth:`sweep_config` (e.g. ``frontier_epochs``)."""
        config = self.sweep_config(
            methods=(exp.method,),
            ratios=(exp.ratio,) if exp.method != "nm" else (),
            patterns=(exp.pattern,) if exp.pattern else (),
            schedules=(exp.schedule,),
            frontier_ratios=(exp.ratio,),
            **overrides,
        )
        acc_baseline = (payload["accuracy"], payload["val_accuracy"])
        result = run_experiment(exp, base, data, config, acc_baseline, self.paths.runs / "experiments")
        if config.latency:  # a chapter runs alone: its experiment is timed right away
            result.row.update(_latency_values(exp, result.model, base))
        result.csv = _record(SweepStudy(config), result.row)
        return result

    def sweep_config(self, **overrides) -> SweepConfig:
        """A :class:`~mnist_pruning.sweep.SweepConfig` with this run's folders, seed, data and budgets."""
        own = {"models": self.models, "finetune_epochs": self.finetune_epochs}
        return SweepConfig(**{**self.config.run_settings(), **own, **overrides})

    def compress_config(
        self, sparsity: float, bits: tuple[int, int], prune_epochs: int = 0, centroid_epochs: int = 0
    ) -> CompressConfig:
        """The compression grid's configuration for one point of this run's model: ``sparsity``, ``bits`` as
        (conv, fc) bits per index, the pruning and centroid epochs (0: the model's defaults; smoke mode: 1 epoch
        each), with this run's folders, seed and data, pruning with the frontier recipe the results' ablation
        chose (:func:`mnist_pruning.frontier.choose_recipes`; plain gradual pruning without an ablation). Every
        value is checked before anything is trained."""
        (arch,) = self.models
        if self.smoke:
            prune_epochs, centroid_epochs = self.finetune_epochs, 1
        try:  # the frontier's recipe, as the full run's grid prunes with it, where the results hold its ablation
            recipes = choose_recipes(self.paths.results, (arch,))
        except (FileNotFoundError, ValueError):
            recipes = {}
        return CompressConfig(
            **self.config.run_settings(),
            recipes=recipes,
            models=(arch,),
            sparsities={arch: (sparsity,)},
            bits=(bits,),
            prune_epochs={arch: prune_epochs} if prune_epochs else {},
            centroid_epochs={arch: centroid_epochs} if centroid_epochs else {},
        )


def setup(
    model: str = "mlp",
    seed: int = 0,
    data_dir: str | None = None,
    out_dir: str | None = None,
    epochs: int | None = None,
    finetune_epochs: int | None = None,
    allow_both: bool = False,
    allowed_methods: tuple[str, ...] = METHODS,
    **params,
) -> _Run:
    """Validate a notebook's parameters and resolve paths; see the module docstring.

    Known extra parameters: ``ratio`` (fraction removed, [0, 1)), ``ratios`` (a list of them), ``method``
    (one of ``allowed_methods``, by default l1 | global | nm | structured), ``n``/``m`` (an N:M pattern),
    ``patterns`` (list of "n:m"), ``schedule`` (oneshot | gradual | lottery), ``lottery_rounds`` (an int >= 1),
    ``results_dir``.
    """
    model = _check_choice(model, (*MODEL_NAMES, "both") if allow_both else MODEL_NAMES, "model")
    models = MODEL_NAMES if model == "both" else (model,)
    seed = _check_int(seed, "seed", minimum=0)
    if epochs is not None:
        epochs = _check_int(epochs, "epochs")
    if finetune_epochs is not None:
        finetune_epochs = _check_int(finetune_epochs, "finetune_epochs")
    checks = {
        "ratio": _check_ratio,
        "ratios": lambda v: tuple(_check_ratio(r) for r in v),
        "method": lambda v: _check_choice(v, allowed_methods, "method"),
        "methods": lambda v: _check_choice(v, METHODS, "method"),
        "patterns": lambda v: tuple(p for p, _ in ((p, parse_pattern(p)) for p in v)),
        "schedule": lambda v: _check_choice(v, SCHEDULES, "schedule"),
        "lottery_rounds": lambda v: _check_int(v, "lottery_rounds"),
        "results_dir": lambda v: v or None,
        "n": lambda v: v,
        "m": lambda v: v,
    }
    unknown = sorted(set(params) - set(checks))
    if unknown:
        raise TypeError(f"setup() got unknown parameter(s) {unknown}; known: {sorted(checks)}")
    checked = {name: checks[name](value) for name, value in params.items()}
    if "n" in checked or "m" in checked:
        checked["n"], checked["m"] = _check_n_of_m(checked.get("n"), checked.get("m"))
    if data_dir:
        _data_root(data_dir)  # raises if it exists and is not a directory
    p = paths(data_dir or None, out_dir or None, checked.get("results_dir"))
    _check_writable_dir(p.runs)
    folders = {"data_dir": str(p.data) if p.data else None, "out_dir": str(p.runs), "results_dir": str(p.results)}
    baseline_epochs = dict.fromkeys(models, epochs) if epochs else {}
    run = _Run(
        models=models,
        config=RunConfig.for_notebook(seed=seed, baseline_epochs=baseline_epochs, **folders),
        finetune_epochs=SMOKE.finetune_epochs if smoke_mode() else finetune_epochs,
        params=checked,
    )
    torch.manual_seed(seed)
    pd.set_option("display.float_format", _format_number)
    return run


def _format_number(value: float) -> str:
    """How the chapters' tables show a float: whole numbers and anything from 1,000 up with thousands separators
    and no decimals (``532,400``, never ``532400.000000`` or ``5.324e+05``), others with four significant digits
    (``98.36``, ``0.1235``)."""
    if value != value:  # NaN: an empty cell
        return ""
    if abs(value) >= 1000 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.4g}" if abs(value) >= 1e-3 else f"{value:.3g}"


def baseline_summary(arch: str, model: nn.Module, payload: dict) -> dict:
    """One row of the baseline table: parameters, accuracy, budget, and the published reference."""
    history = payload.get("history") or [{}]
    return {
        "model": {"mlp": "LeNet-300-100", "cnn": "LeNet-5 (Caffe)"}[arch],
        "parameters": f"{measure.count_parameters(model):,}",
        "validation accuracy %": round(100 * payload["val_accuracy"], 2),
        "test accuracy %": round(100 * payload["accuracy"], 2),
        "epochs": len(payload.get("history") or []),
        "train time s": round(history[-1].get("seconds", float("nan")), 1),
        "Han et al. 2015 %": 100 * _PUBLISHED_BASELINE[arch],
    }


def accuracy_table(row: dict) -> pd.DataFrame:
    """Validation and test accuracy (%) of a sweep row: dense baseline, right after pruning, after (or, for the
    gradual and lottery schedules, while and after) training. Choices look at the validation column only."""
    schedule = row.get("schedule", "oneshot")
    epochs = row["finetune_epochs"]
    after = f"after {epochs} fine-tune epoch(s)" if schedule == "oneshot" else f"{schedule}, {epochs} epoch(s)"

    def column(prefix: str) -> list[float | None]:
        values = [
            row.get(f"{prefix}_baseline", ""),
            row.get(f"{prefix}_pruned", ""),
            row.get(f"{prefix}_finetuned", ""),
        ]
        return [None if v in ("", None) else 100 * float(v) for v in values]

    return pd.DataFrame(
        {"validation accuracy %": column("acc_val"), "test accuracy %": column("acc")},
        index=["dense baseline", "pruned, before fine-tuning", after],
    )


def cost_table(row: dict, base: nn.Module) -> pd.DataFrame:
    """What pruning bought, dense baseline against pruned model, from a results row and the baseline model:
    parameters, FLOPs, file bytes and latency, with their ratio (dense / pruned; above 1 means pruning helped).

    The baseline's counts and file are measured on ``base`` now; its latencies are the row's, measured in the
    same run as the pruned model's. Rows a method does not fill (latency when not measured) stay empty. Where
    the row has them (unstructured and N:M), two more lines give the pruned model's latency on sparse kernels
    (``sparsity.to_sparse_inference``) and the layers that ran sparse.
    """
    dense = [
        measure.count_nonzero_parameters(base),
        measure.flops(base, SAMPLE_SHAPE),
        measure.flops(base, SAMPLE_SHAPE),
        _dense_bytes(base),
        row.get("baseline_latency_b1_ms"),
        row.get("baseline_latency_b256_ms"),
    ]
    pruned = [
        row["params_nonzero"],
        row["flops_dense"],
        row["flops_effective"],
        min(row["size_dense_bytes"], row["size_compact_bytes"]),
        row.get("latency_b1_ms"),
        row.get("latency_b256_ms"),
    ]
    index = [
        "non-zero parameters",
        "FLOPs per image (dense kernels)",
        "FLOPs per image (a sparse kernel's share)",
        "smallest file (bytes)",
        "latency batch 1 (ms)",
        "latency batch 256 (ms)",
    ]
    for batch in (1, 256):  # unstructured and N:M rows: the same model on sparse kernels where they won
        if row.get(f"latency_sparse_b{batch}_ms") not in (None, ""):
            layers = row.get(f"sparse_layers_b{batch}") or "none"
            dense.append(row.get(f"baseline_latency_b{batch}_ms"))
            pruned.append(row[f"latency_sparse_b{batch}_ms"])
            index.append(f"latency batch {batch} (ms), sparse: {layers}")  # <= 50 characters: pandas cuts longer
    table = pd.DataFrame({"dense baseline": dense, "pruned": pruned}, index=index).apply(
        pd.to_numeric, errors="coerce"
    )
    table["dense / pruned"] = table["dense baseline"] / table["pruned"]
    return table


def masked_state_dict_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())`` as is (with masks attached: weight_orig AND weight_mask)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
