"""Which one-shot fine-tuning budget? Candidates compared on the validation split, never on the test set.

Run from the repository root (about 5 minutes on a 2-core CPU, baselines reused from ``runs/``)::

    python bench/budgets.py                     # both models, ratios 0.9 and 0.99, seed 0
    python bench/budgets.py --models mlp --ratios 0.9 --seed 1

For each model: its dense baseline (the full recipe, reused from ``runs/`` when cached), then for each candidate
(epochs, peak learning rate) and each ratio, global magnitude pruning and fine-tuning from that baseline. The
table shows the **validation** accuracy after the final epoch of each; the candidate chosen is the one with the
best mean validation accuracy over the ratios, the cheaper one when two are within ``--tie`` pp of each other
(the noise a single seed carries). Only the chosen candidate's test accuracy is printed, as a report. The last
line says whether ``mnist_pruning.sweep.BUDGETS`` holds the chosen budget.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_pruning.settings import paths  # noqa: E402
from mnist_pruning.sparsity.unstructured import sparsify_  # noqa: E402
from mnist_pruning.sweep import BUDGETS, SweepConfig, baseline  # noqa: E402
from mnist_pruning.train import TrainConfig, evaluate, fine_tune  # noqa: E402

CANDIDATES = {
    "mlp": [(2, 0.01), (4, 0.05), (8, 0.02), (8, 0.05)],
    "cnn": [(1, 0.01), (2, 0.01), (2, 0.02), (4, 0.01)],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=sorted(CANDIDATES))
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.9, 0.99])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tie", type=float, default=0.1, help="pp within which the cheaper candidate wins")
    args = parser.parse_args(argv)
    config = SweepConfig(models=tuple(args.models), ratios=tuple(args.ratios), seed=args.seed)
    data = config.load_data()
    runs = paths(config.data_dir, config.out_dir, config.results_dir).runs
    agree = True
    for arch in args.models:
        base, _ = baseline(arch, data, config.baseline_config(arch), runs)
        rows = []
        for epochs, lr in CANDIDATES[arch]:
            for ratio in args.ratios:
                model = copy.deepcopy(base)
                sparsify_(model, "global", ratio)
                cfg = TrainConfig(epochs=epochs, lr=lr, seed=args.seed, precision=config.precision)
                history = fine_tune(model, data, cfg, desc=f"{arch} {epochs} ep lr {lr} @ {ratio}", progress=False)
                rows.append(
                    {"epochs": epochs, "lr": lr, "ratio": ratio, "val %": 100 * history[-1]["val_accuracy"]}
                )
                rows[-1]["model"] = model
        df = pd.DataFrame(rows)
        table = df.pivot_table(index=["epochs", "lr"], columns="ratio", values="val %")
        table["mean"] = table.mean(axis=1)
        best = table["mean"].max()
        # cheapest (fewest epochs, then lowest lr) among those within the tie of the best
        chosen = min(idx for idx, v in table["mean"].items() if v >= best - args.tie)
        print(f"\n{arch}: validation accuracy (%) after global pruning and fine-tuning, seed {args.seed}")
        print(table.round(2).to_string())
        tests = [
            100 * evaluate(r["model"], data.test_x, data.test_y)["accuracy"]
            for r in rows
            if (r["epochs"], r["lr"]) == chosen
        ]
        print(
            f"chosen on validation: {chosen[0]} epochs at lr {chosen[1]} "
            f"(test accuracy, reported only: {', '.join(f'{t:.2f} %' for t in tests)})"
        )
        current = (BUDGETS[arch].finetune_epochs, BUDGETS[arch].finetune_lr)
        same = current == chosen
        agree &= same
        print(f"BUDGETS[{arch!r}] = {current[0]} epochs at lr {current[1]}: {'agrees' if same else 'DIFFERS'}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
