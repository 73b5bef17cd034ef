"""What the notebooks call first: validate their papermill parameters, resolve paths, apply the smoke budget.

Usage (in a notebook, right after the ``parameters`` cell)::

    from mnist_pruning.notebook import setup
    run = setup(model=model, ratio=ratio, finetune_epochs=finetune_epochs, seed=seed,
                data_dir=data_dir, out_dir=out_dir)
    mnist = run.load_data()
    base, acc = run.baseline("mlp", mnist)     # reuses runs/mlp_baseline.pt when it fits, else trains it

Every parameter is checked before anything is loaded or trained, and a bad one raises a ValueError naming the
value and what is allowed, so ``papermill ... -p ratio 1.5`` fails in the notebook's first code cells.
With ``MNIST_PRUNING_SMOKE=1`` (tests, CI) budgets shrink to a few seconds and outputs go to ``runs/smoke/``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from .data import MNISTData, data_root, load_mnist
from .files import check_writable_dir
from .models import MODEL_NAMES, check_model_name
from .nm import parse_pattern, validate_nm
from .pruning import check_method, check_ratio
from .settings import SMOKE, Paths, paths, smoke_mode
from .train import TrainConfig, evaluate

__all__ = ["Run", "setup", "check_epochs", "check_seed"]


def check_epochs(value: object, name: str = "epochs") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_seed(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"seed must be a non-negative integer, got {value!r}")
    return int(value)


@dataclass
class Run:
    """Validated notebook parameters plus the resolved paths and budgets."""

    models: tuple[str, ...]  # model families this notebook works on
    paths: Paths  # data / runs / results folders
    seed: int = 0
    smoke: bool = False  # MNIST_PRUNING_SMOKE is set: tiny budgets
    epochs: int | None = None  # baseline epochs (None = the full recipe)
    finetune_epochs: int | None = None  # None: the model's budget (mnist_pruning.sweep.BUDGETS)
    subset: int | None = None  # training subset (smoke)
    test_subset: int | None = None  # test subset (smoke)
    params: dict = field(default_factory=dict)  # every other validated parameter, by name

    def __getattr__(self, name: str):
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(name)

    def load_data(self) -> MNISTData:
        return load_mnist(self.paths.data, subset=self.subset, test_subset=self.test_subset, seed=self.seed)

    def train_config(self, arch: str) -> TrainConfig:
        """The baseline recipe with this run's seed and epochs (the same one the sweep uses)."""
        return self.sweep_config(models=(arch,)).baseline_config(arch)

    def baseline(self, arch: str, data: MNISTData, progress: bool = True) -> tuple[nn.Module, dict]:
        """The dense baseline (reused from ``runs/`` when trained with this config, else trained now) and its
        checkpoint payload (``history``, ``train_config``) with ``accuracy`` added, measured on ``data``."""
        from .sweep import baseline

        model, payload = baseline(arch, data, self.train_config(arch), self.paths.runs, progress=progress)
        return model, {**payload, "accuracy": evaluate(model, data.test_x, data.test_y)["accuracy"]}

    def sweep_config(self, **overrides):
        """A :class:`~mnist_pruning.sweep.SweepConfig` with this run's budgets, seed and folders."""
        from .sweep import SweepConfig

        kwargs = dict(
            models=self.models,
            finetune_epochs=self.finetune_epochs,
            seed=self.seed,
            subset=self.subset,
            test_subset=self.test_subset,
            data_dir=str(self.paths.data) if self.paths.data else None,
            out_dir=str(self.paths.runs),
            results_dir=str(self.paths.results),
            baseline_epochs={m: self.epochs for m in self.models} if self.epochs else {},
        )
        return SweepConfig(**{**kwargs, **overrides})


def setup(
    model: str = "mlp",
    seed: int = 0,
    data_dir: str | None = None,
    out_dir: str | None = None,
    epochs: int | None = None,
    finetune_epochs: int | None = None,
    allow_both: bool = False,
    **params,
) -> Run:
    """Validate a notebook's parameters and resolve paths; see the module docstring.

    Known extra parameters: ``ratio`` (fraction removed, [0, 1)), ``ratios`` (a list of them), ``method``
    (l1 | global | nm | structured), ``n``/``m`` (an N:M pattern), ``patterns`` (list of "n:m"),
    ``schedule`` (oneshot | gradual | lottery), ``results_dir``.
    """
    allowed = (*MODEL_NAMES, "both") if allow_both else MODEL_NAMES
    if model not in allowed:
        raise ValueError(f"unknown model {model!r}; allowed: {', '.join(map(repr, allowed))}")
    models = MODEL_NAMES if model == "both" else (check_model_name(model),)
    seed = check_seed(seed)
    if epochs is not None:
        epochs = check_epochs(epochs, "epochs")
    if finetune_epochs is not None:
        finetune_epochs = check_epochs(finetune_epochs, "finetune_epochs")
    checked = {}
    for name, value in params.items():
        if name == "ratio":
            checked[name] = check_ratio(value)
        elif name == "ratios":
            checked[name] = tuple(check_ratio(r) for r in value)
        elif name == "method":
            checked[name] = check_method(value)
        elif name in ("n", "m"):
            checked[name] = value
        elif name == "patterns":
            checked[name] = tuple(value)
            for p in checked[name]:
                parse_pattern(p)
        elif name == "schedule":
            from .sweep import SCHEDULES

            if value not in SCHEDULES:
                raise ValueError(f"unknown schedule {value!r}; allowed: {', '.join(map(repr, SCHEDULES))}")
            checked[name] = value
        elif name == "results_dir":
            checked[name] = value or None
        else:
            raise TypeError(f"setup() got an unknown parameter {name!r}")
    if "n" in checked or "m" in checked:
        checked["n"], checked["m"] = validate_nm(checked.get("n"), checked.get("m"))
    if data_dir:
        data_root(data_dir)  # raises if it exists and is not a directory
    p = paths(data_dir or None, out_dir or None, checked.get("results_dir"))
    check_writable_dir(p.runs)
    smoke = smoke_mode()
    run = Run(
        models=models,
        paths=p,
        seed=seed,
        smoke=smoke,
        epochs=SMOKE.epochs if smoke else epochs,
        finetune_epochs=SMOKE.finetune_epochs if smoke else finetune_epochs,
        subset=SMOKE.subset if smoke else None,
        test_subset=SMOKE.test_subset if smoke else None,
        params=checked,
    )
    torch.manual_seed(seed)
    return run


PUBLISHED_BASELINE = {"mlp": 0.9836, "cnn": 0.9920}  # Han et al. 2015, Tables 1-2 (1.64 % / 0.80 % error)


def baseline_summary(arch: str, model: nn.Module, payload: dict) -> dict:
    """One row of the baseline table: parameters, accuracy, budget, and the published reference."""
    from .models import count_parameters

    history = payload.get("history") or [{}]
    return {
        "model": {"mlp": "LeNet-300-100", "cnn": "LeNet-5 (Caffe)"}[arch],
        "parameters": count_parameters(model),
        "test accuracy %": round(100 * payload["accuracy"], 2),
        "epochs": len(payload.get("history") or []),
        "train time s": round(history[-1].get("seconds", float("nan")), 1),
        "Han et al. 2015 %": 100 * PUBLISHED_BASELINE[arch],
    }


def accuracy_table(row: dict) -> pd.DataFrame:
    """Test accuracy (%) of a sweep row: dense baseline, right after pruning, after (or, for the gradual and
    lottery schedules, while and after) training."""
    schedule = row.get("schedule", "oneshot")
    epochs = row["finetune_epochs"]
    after = f"after {epochs} fine-tune epoch(s)" if schedule == "oneshot" else f"{schedule}, {epochs} epoch(s)"
    pruned = row["acc_pruned"]
    return pd.DataFrame(
        {
            "test accuracy %": [
                100 * row["acc_baseline"],
                100 * pruned if pruned != "" else None,
                100 * row["acc_finetuned"],
            ]
        },
        index=["dense baseline", "pruned, before fine-tuning", after],
    )


def masked_state_dict_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())`` as is (with masks attached: weight_orig AND weight_mask)."""
    import io

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def out_path(run: Run, name: str) -> Path:
    """A file path under the run's results folder (created)."""
    check_writable_dir(run.paths.results)
    return run.paths.results / name
