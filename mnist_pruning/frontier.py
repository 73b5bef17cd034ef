"""The frontier at 95-99.5 % sparsity: training recipes, their ablation on validation, and Sparse VD in the sweep.

Usage::

    from mnist_pruning.frontier import RECIPES, choose_recipes
    from mnist_pruning.sweep import SweepConfig, run_sweep
    run_sweep(SweepConfig(schedules=("ablation",), seeds=(0, 1, 2)))     # every recipe at 0.99, 3 seeds
    chosen = choose_recipes("results")                                   # best mean validation accuracy
    run_sweep(SweepConfig(schedules=("frontier", "vd"), recipes=chosen, seeds=(0, 1, 2)))

A *recipe* is gradual global magnitude pruning from the dense baseline (Zhu & Gupta's cubic schedule) with
ingredients: a longer schedule, distillation from the dense baseline (:class:`~mnist_pruning.distill.Distillation`)
and density floors that keep a share of a small layer (``sparsify_(..., floors=)``). The ``ablation`` schedule
runs every recipe of :data:`RECIPES` at the sweep's frontier ratio (0.99); :func:`choose_recipes` picks, per
model, the recipe with the best mean validation accuracy over the seeds (the cheaper one within
:data:`_TIE_PP`); the ``frontier`` schedule runs the chosen recipe at every sparsity of :data:`_SPARSITIES`. The
``vd`` schedule is Sparse Variational Dropout (:mod:`mnist_pruning.vd`) from the same baseline: it chooses its own
sparsity, measured on the saved model like every other row. The test set never enters a choice.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import pandas as pd
from torch import nn

from .data import MNISTData
from .distill import Distillation
from .models import MODEL_NAMES
from .references import _ANCHORS as ANCHORS
from .references import _FRONTIER_GOALS, _SPARSE_VD_PAPER_EPOCHS
from .results import load_results
from .schedules import PruneResult, gradual_prune
from .train import TrainConfig
from .vd import VDConfig, sparse_vd

__all__ = [
    "ablation_table",
    "goals_table",
    "vd_summary",
    "RECIPES",
    "choose_recipes",
]


@dataclass(frozen=True)
class _Recipe:
    """Gradual global pruning from the dense baseline, and what it adds."""

    epochs: int  # epochs of the gradual schedule (the cubic ramp spans its first two thirds)
    distill: tuple[float, float] | None = None  # (temperature, weight) of distillation from the baseline
    floors: tuple[tuple[str, float], ...] = ()  # (layer, fraction of its weights always kept)

    def key(self) -> dict:
        """What shapes its numbers (part of a row's configuration hash)."""
        return asdict(self)


# The ablation's candidates per model, cheapest first (a tie goes to the first). The baseline-budget gradual run
# repeats the sweep's gradual rows; each later entry adds one ingredient, the last combine them.
RECIPES: dict[str, dict[str, _Recipe]] = {
    "mlp": {
        "gradual": _Recipe(20),
        "long": _Recipe(40),
        "long+kd": _Recipe(40, distill=(2.0, 0.5)),
        "long+kd+floor": _Recipe(40, distill=(2.0, 0.5), floors=(("fc3", 0.5),)),
        "longer": _Recipe(80),
        "longer+kd": _Recipe(80, distill=(2.0, 0.5)),
    },
    "cnn": {
        "gradual": _Recipe(6),
        "long": _Recipe(15),
        "long+kd": _Recipe(15, distill=(2.0, 0.5)),
        "long+floor": _Recipe(15, floors=(("conv1", 0.5),)),
        "long+kd+floor": _Recipe(15, distill=(2.0, 0.5), floors=(("conv1", 0.5),)),
        "longer+kd+floor": _Recipe(30, distill=(2.0, 0.5), floors=(("conv1", 0.5),)),
    },
}
_SPARSITIES = (0.95, 0.98, 0.985, 0.99, 0.995)  # where the frontier runs its recipe; 0.985: the MLP goal
# Sparse VD budgets, chosen on the validation split from the seed-0 baselines (lr 1e-3, Adam): MLP 40 epochs
# (10 and 20 were lower), CNN 10 (5 was lower; 20 not run). The README lists what each measured.
_VD_BUDGETS = {"mlp": 40, "cnn": 10}
_TIE_PP = 0.1  # validation accuracy differences below this (percentage points) are a tie: the cheaper recipe wins


def _check_recipe(arch: str, name: str) -> _Recipe:
    """The recipe ``name`` of ``arch``; a ValueError listing the allowed names otherwise."""
    if name not in RECIPES[arch]:
        raise ValueError(f"unknown recipe {name!r} for {arch!r}; allowed: {list(RECIPES[arch])}")
    return RECIPES[arch][name]


def _run_recipe(
    base: nn.Module, data: MNISTData, ratio: float, recipe: _Recipe, config: TrainConfig, progress: bool = True
) -> PruneResult:
    """``recipe`` on a copy of the dense ``base``: gradual global pruning to ``ratio`` for ``recipe.epochs`` at
    ``config``'s learning rate, seed and precision, distilling from ``base`` when the recipe says so."""
    loss = Distillation(copy.deepcopy(base), *recipe.distill) if recipe.distill else None
    train_cfg = TrainConfig(epochs=recipe.epochs, lr=config.lr, seed=config.seed, precision=config.precision)
    return gradual_prune(
        copy.deepcopy(base),
        data,
        "global",
        ratio,
        train_cfg,
        progress=progress,
        floors=dict(recipe.floors),
        loss_fn=loss,
    )


def _run_vd(base: nn.Module, data: MNISTData, config: VDConfig, progress: bool = True) -> PruneResult:
    """Sparse VD on a copy of the dense ``base``; the model comes back with prune masks where log alpha > 3."""
    return sparse_vd(copy.deepcopy(base), data, config, progress=progress)


def choose_recipes(results_dir="", models: tuple[str, ...] = MODEL_NAMES) -> dict[str, str]:
    """Per model, the ablation's recipe with the best mean validation accuracy over its seeds; one within
    :data:`_TIE_PP` of the best that comes earlier in :data:`RECIPES` (cheaper) wins. Raises when a model has no
    ablation rows (run the ``ablation`` schedule first) or a recipe lacks seeds the others have."""
    df = load_results(results_dir, models=models)
    return {arch: _choose(df, arch) for arch in models}


def _choose(df: pd.DataFrame, arch: str) -> str:
    rows = df[(df["model"] == arch) & (df["schedule"] == "ablation")]
    if rows.empty:
        raise ValueError(f"no ablation rows for {arch!r} in the results: run the 'ablation' schedule first")
    seeds = set(rows["n_seeds"])
    if len(seeds) != 1:
        raise ValueError(f"the {arch} ablation recipes have different numbers of seeds: {sorted(seeds)}")
    val = {r: 100 * float(v) for r, v in zip(rows["recipe"], rows["acc_val_finetuned"], strict=True)}
    best = max(val.values())
    return next(name for name in RECIPES[arch] if name in val and val[name] >= best - _TIE_PP)


def ablation_table(df: pd.DataFrame, model: str) -> pd.DataFrame:
    """The ablation of ``model`` from :func:`~mnist_pruning.results.load_results`' seed means: per recipe its
    ingredients, validation accuracy (what the choice reads) and test accuracy as mean ± std over the seeds, the
    measured sparsity, and which recipe :func:`choose_recipes` picks. Empty without ablation rows."""
    rows = df[(df["model"] == model) & (df["schedule"] == "ablation")]
    if rows.empty:
        return pd.DataFrame()
    chosen = _choose(df, model)
    out = []
    for name in [r for r in RECIPES[model] if r in set(rows["recipe"])]:
        row = rows[rows["recipe"] == name].iloc[0]
        recipe = RECIPES[model][name]
        out.append(
            {
                "recipe": name,
                "epochs": int(row["finetune_epochs"]),
                "distillation (T, weight)": "—"
                if recipe.distill is None
                else f"{recipe.distill[0]:g}, {recipe.distill[1]:g}",
                "density floor": ", ".join(f"{layer} {100 * f:g} %" for layer, f in recipe.floors) or "—",
                "validation %": _pm(row["acc_val_finetuned"], row["acc_val_finetuned_std"]),
                "test %": _pm(row["acc_finetuned"], row["acc_finetuned_std"]),
                "sparsity %": f"{100 * row['sparsity']:.2f}",
                "seeds": int(row["n_seeds"]),
                "chosen": "yes" if name == chosen else "",
            }
        )
    return pd.DataFrame(out).set_index("recipe")


def _pm(mean: float, std: float) -> str:
    return f"{100 * mean:.2f}" + ("" if std != std else f" ± {100 * std:.2f}")


def goals_table(df: pd.DataFrame) -> pd.DataFrame:
    """Chapter 06's goals (:data:`~mnist_pruning.references._FRONTIER_GOALS`) against the seed means of
    :func:`~mnist_pruning.results.load_results`: per goal the most accurate row at or above its sparsity (any
    schedule, structured surgery aside), its test accuracy ± std over seeds, and whether the goal is met,
    missed within the seed spread (2 std), or missed by more."""
    out = []
    for model, sparsity, accuracy, level in _FRONTIER_GOALS:
        # structured rows count removed parameters, not zero weights: another kind of sparsity
        rows = df[(df["model"] == model) & (df["method"] != "structured") & (df["sparsity"] >= sparsity - 1e-6)]
        goal = f"{model}: >= {100 * accuracy:.2f} % at >= {100 * sparsity:g} % sparsity ({level})"
        if rows.empty:
            out.append({"goal": goal, "best row": "—", "test %": "—", "verdict": "no row at that sparsity yet"})
            continue
        best = rows.loc[rows["acc_finetuned"].idxmax()]
        std = best["acc_finetuned_std"]
        gap = 100 * (best["acc_finetuned"] - accuracy)
        if gap >= 0:
            verdict = f"met (+{gap:.2f} pp)"
        elif std == std and -gap <= 200 * std:
            verdict = f"missed by {-gap:.2f} pp, within the seed spread (2 std = {200 * std:.2f} pp)"
        else:
            verdict = f"missed by {-gap:.2f} pp"
        out.append(
            {
                "goal": goal,
                "best row": f"{best['label']} at {100 * best['sparsity']:.2f} %",
                "test %": _pm(best["acc_finetuned"], std),
                "verdict": verdict,
            }
        )
    return pd.DataFrame(out).set_index("goal")


def vd_summary(df: pd.DataFrame, model: str) -> str:
    """One sentence: the sparsity Sparse VD reached for ``model`` (measured on the saved models, mean over
    seeds), its test error and budget, beside the paper's (:data:`~mnist_pruning.references.ANCHORS`)."""
    rows = df[(df["model"] == model) & (df["schedule"] == "vd")]
    paper = next(a for a in ANCHORS if a.model == model and a.source.startswith("Sparse VD"))
    ours = (
        "no Sparse VD row in the results yet (the full run adds it)"
        if rows.empty
        else (
            f"Sparse VD from our dense baseline, {int(rows['finetune_epochs'].iloc[0])} epochs: "
            f"{100 * rows['sparsity'].iloc[0]:.2f} % of the weights removed "
            f"({1 / (1 - rows['sparsity'].iloc[0]):.3g}x fewer), test error "
            f"{_pm(1 - rows['acc_finetuned'].iloc[0], rows['acc_finetuned_std'].iloc[0])} %"
        )
    )
    return (
        f"{ours}; the paper: {1 / paper.kept:.0f}x fewer at {100 * (1 - paper.accuracy):.2f} % error after "
        f"{_SPARSE_VD_PAPER_EPOCHS} epochs."
    )
