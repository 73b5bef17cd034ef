"""mnist_pruning.frontier: the ablation's recipes, the validation choice, and the frontier and VD schedules."""

from __future__ import annotations

import csv
import dataclasses

import pytest

from mnist_pruning import frontier
from mnist_pruning.results import PRUNING, read_results
from mnist_pruning.sweep import Experiment, SweepConfig, experiments, run_sweep


def tiny(tmp_path, **overrides):
    kwargs = dict(
        models=("mlp",),
        methods=("global",),
        ratios=(),
        patterns=(),
        subset=500,
        test_subset=200,
        val_subset=200,
        baseline_epochs={"mlp": 1},
        recipe_epochs=1,
        vd_epochs=1,
        latency=False,
        out_dir=str(tmp_path / "runs"),
        results_dir=str(tmp_path / "results"),
    )
    return SweepConfig(**{**kwargs, **overrides})


def test_the_ablation_runs_every_recipe_at_the_frontier_ratio():
    exps = experiments(SweepConfig(models=("cnn",), methods=(), ratios=(), patterns=(), schedules=("ablation",)))
    assert [e.recipe for e in exps] == list(frontier.RECIPES["cnn"])
    assert {(e.method, e.ratio, e.schedule) for e in exps} == {("global", 0.99, "ablation")}


def test_the_frontier_runs_its_recipe_at_every_frontier_sparsity():
    config = SweepConfig(models=("mlp",), methods=(), ratios=(), patterns=(), schedules=("frontier",))
    config = dataclasses.replace(config, recipes={"mlp": "long"})
    assert [(e.ratio, e.recipe) for e in experiments(config)] == [(s, "long") for s in frontier._SPARSITIES]


def test_an_unknown_recipe_is_refused_naming_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown recipe 'best' for 'cnn'; allowed: \['gradual', 'long'"):
        SweepConfig(recipes={"cnn": "best"})


def test_recipe_and_vd_epochs_must_be_positive():
    with pytest.raises(ValueError, match="recipe_epochs"):
        SweepConfig(recipe_epochs=0)
    with pytest.raises(ValueError, match="vd_epochs"):
        SweepConfig(vd_epochs=-1)


def write_ablation(path, values):
    """Ablation rows for mlp: {recipe: [validation accuracy per seed]}."""
    rows = []
    for recipe, accs in values.items():
        for seed, acc in enumerate(accs):
            row = dict.fromkeys(PRUNING.columns, "")
            row.update(model="mlp", method="global", schedule="ablation", recipe=recipe, ratio="0.99", seed=seed)
            row.update(finetune_epochs=frontier.RECIPES["mlp"][recipe].epochs, acc_val_finetuned=acc)
            row.update(acc_finetuned=0.5, config_hash=f"{recipe}{seed}", sparsity=0.99)
            rows.append(row)
    path.mkdir(parents=True, exist_ok=True)
    with open(PRUNING.csv(path, "mlp"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PRUNING.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def test_the_recipe_with_the_best_mean_validation_accuracy_is_chosen(tmp_path):
    write_ablation(tmp_path, {"gradual": [0.96, 0.962], "long": [0.97, 0.968], "long+kd": [0.975, 0.977]})
    assert frontier.choose_recipes(tmp_path, ("mlp",)) == {"mlp": "long+kd"}


def test_a_recipe_within_the_tie_of_the_best_loses_to_a_cheaper_one(tmp_path):
    write_ablation(tmp_path, {"gradual": [0.96, 0.96], "long": [0.9700, 0.9700], "long+kd": [0.9705, 0.9705]})
    assert frontier.choose_recipes(tmp_path, ("mlp",)) == {"mlp": "long"}


def test_the_test_accuracy_never_enters_the_choice(tmp_path):
    write_ablation(tmp_path, {"gradual": [0.96, 0.96], "long": [0.97, 0.97]})
    path = PRUNING.csv(tmp_path, "mlp")
    rows = read_results(path)
    for row in rows:
        row["acc_finetuned"] = "0.99" if row["recipe"] == "gradual" else "0.10"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PRUNING.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    assert frontier.choose_recipes(tmp_path, ("mlp",)) == {"mlp": "long"}


def test_no_ablation_rows_is_an_error_naming_what_to_run(tmp_path):
    write_ablation(tmp_path, {})
    with pytest.raises(ValueError, match="run the 'ablation' schedule first"):
        frontier.choose_recipes(tmp_path, ("mlp",))


def test_the_sweep_chooses_the_frontier_recipe_from_its_own_ablation(tmp_path, mnist_small):
    config = tiny(tmp_path, schedules=("ablation", "frontier", "vd"))
    rows = read_results(run_sweep(config, progress=False, data=mnist_small)["mlp"])
    chosen = frontier.choose_recipes(config.paths.results, ("mlp",))["mlp"]
    front = [r for r in rows if r["schedule"] == "frontier"]
    assert [float(r["ratio"]) for r in front] == list(frontier._SPARSITIES)
    assert {r["recipe"] for r in front} == {chosen}
    for r in front:  # measured on the saved model: the target, to the weight
        assert float(r["sparsity"]) == pytest.approx(float(r["ratio"]), abs=1e-4)


def test_a_sparse_vd_row_holds_the_sparsity_its_saved_model_has(tmp_path, mnist_small):
    from mnist_pruning.sparsity import sparsity
    from mnist_pruning.sweep import _saved_model

    config = tiny(tmp_path, schedules=("vd",))
    (row,) = read_results(run_sweep(config, progress=False, data=mnist_small)["mlp"])
    assert row["method"] == "vd" and float(row["ratio"]) == 0
    assert float(row["sparsity"]) == sparsity(_saved_model(Experiment("mlp", "vd", 0.0, schedule="vd"), config))


def goal_rows(**accuracy_by_sparsity):
    import pandas as pd

    rows = [
        {
            "model": "cnn",
            "method": "global",
            "label": f"global {s}",
            "sparsity": float(s.replace("_", ".")),
            "acc_finetuned": acc,
            "acc_finetuned_std": std,
        }
        for s, (acc, std) in accuracy_by_sparsity.items()
    ]
    return pd.DataFrame(rows)


def test_a_goal_is_met_when_the_best_row_at_its_sparsity_reaches_it():
    table = frontier.goals_table(goal_rows(**{"0_99": (0.9915, 0.0005)}))
    assert table.loc["cnn: >= 99.10 % at >= 99 % sparsity (DNS 2016)", "verdict"] == "met (+0.05 pp)"


def test_a_miss_within_two_seed_std_says_so_and_a_larger_one_gives_its_size():
    near = frontier.goals_table(goal_rows(**{"0_99": (0.9905, 0.0005)}))
    far = frontier.goals_table(goal_rows(**{"0_99": (0.9850, 0.0005)}))
    goal = "cnn: >= 99.10 % at >= 99 % sparsity (DNS 2016)"
    assert near.loc[goal, "verdict"] == "missed by 0.05 pp, within the seed spread (2 std = 0.10 pp)"
    assert far.loc[goal, "verdict"] == "missed by 0.60 pp"


def test_a_goal_without_a_row_at_its_sparsity_says_so():
    table = frontier.goals_table(goal_rows(**{"0_98": (0.995, 0.0)}))
    assert table.loc["cnn: >= 99.10 % at >= 99 % sparsity (DNS 2016)", "verdict"] == "no row at that sparsity yet"


def test_the_frontier_figure_draws_every_published_point_on_logit_and_log_axes():
    import matplotlib

    matplotlib.use("Agg")
    from pathlib import Path

    from mnist_pruning import plots
    from mnist_pruning.references import _ANCHORS as ANCHORS
    from mnist_pruning.results import load_results

    df = load_results(Path(__file__).resolve().parent / "fixtures")
    fig = plots.frontier_curve(df, "cnn")
    (ax,) = fig.axes
    assert (ax.get_xscale(), ax.get_yscale()) == ("logit", "log")
    labels = ax.get_legend_handles_labels()[1]
    for a in ANCHORS:
        if a.model == "cnn":
            assert any(label.startswith(a.source) for label in labels), a.source
    assert "this project: one-shot" in labels  # the fixture holds one-shot rows only
