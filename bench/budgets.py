"""Which training budgets? Candidates compared on the validation split, never on the test set.

Run from the repository root (baselines reused from ``runs/``; on a 2-core CPU about 5 minutes for the one-shot
check, 15 for all three)::

    python bench/budgets.py                                 # one-shot fine-tuning, ratios 0.9 and 0.99
    python bench/budgets.py --schedules gradual lottery     # the frontier budgets, at ratio 0.99
    python bench/budgets.py --models mlp --ratios 0.9 --seed 1

For each model, schedule and candidate, from the dense baseline of ``--seed`` (the full recipe, reused when
cached), global magnitude pruning to each ratio and:

- ``oneshot``: candidates (fine-tuning epochs, peak learning rate) after one-shot pruning;
- ``gradual``: candidates (epochs of the whole gradual run), the baseline recipe's learning rate, as the sweep;
- ``lottery``: candidates (epochs of the dense training and of each of the 3 rounds), from scratch, as the sweep.

The table shows the **validation** accuracy after the final epoch of each run; the candidate chosen is the one
with the best mean validation accuracy over the ratios, the cheaper one when several are within ``--tie`` pp
of the best (the noise a single seed carries). Only the chosen candidate's test accuracy is printed, as a
report. The last line of each block says whether ``mnist_pruning.sweep.BUDGETS`` holds the chosen budget; the
exit status is 1 if any differs.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_pruning.lottery import lottery_ticket  # noqa: E402
from mnist_pruning.runner import baseline  # noqa: E402
from mnist_pruning.schedules import gradual_prune  # noqa: E402
from mnist_pruning.sparsity.unstructured import sparsify_  # noqa: E402
from mnist_pruning.sweep import BUDGETS, SweepConfig  # noqa: E402
from mnist_pruning.train import TrainConfig, evaluate, fine_tune  # noqa: E402

# Candidates around each budget in use, cheapest first within a schedule (the tie-break takes the first).
CANDIDATES = {
    "oneshot": {  # (fine-tuning epochs, peak lr)
        "mlp": [(2, 0.01), (4, 0.05), (8, 0.02), (8, 0.05)],
        "cnn": [(1, 0.01), (2, 0.01), (2, 0.02), (4, 0.01)],
    },
    "gradual": {"mlp": [(10,), (20,), (30,)], "cnn": [(3,), (6,), (10,)]},  # (epochs of the run,)
    "lottery": {"mlp": [(3,), (5,), (8,)], "cnn": [(2,), (3,), (5,)]},  # (epochs per round,)
}
DEFAULT_RATIOS = {"oneshot": [0.9, 0.99], "gradual": [0.99], "lottery": [0.99]}  # the sweep's frontier: 0.99
COLUMNS = {"oneshot": ["epochs", "lr"], "gradual": ["epochs"], "lottery": ["epochs per round"]}


def current(schedule: str, arch: str) -> tuple:
    """The candidate tuple that ``BUDGETS`` holds now."""
    budget = BUDGETS[arch]
    return {
        "oneshot": (budget.finetune_epochs, budget.finetune_lr),
        "gradual": (budget.frontier_epochs,),
        "lottery": (budget.lottery_epochs,),
    }[schedule]


def run_candidate(schedule, arch, candidate, ratio, base, data, config, seed):
    """Train one candidate; return (model, final-epoch validation accuracy)."""
    recipe_lr = config.baseline_config(arch).lr
    if schedule == "oneshot":
        epochs, lr = candidate
        model = copy.deepcopy(base)
        sparsify_(model, "global", ratio)
        cfg = TrainConfig(epochs=epochs, lr=lr, seed=seed, precision=config.precision)
        history = fine_tune(model, data, cfg, progress=False)
        return model, history[-1]["val_accuracy"]
    cfg = TrainConfig(epochs=candidate[0], lr=recipe_lr, seed=seed, precision=config.precision)
    if schedule == "gradual":
        result = gradual_prune(copy.deepcopy(base), data, "global", ratio, cfg, progress=False)
        return result.model, result.accuracy
    ticket = lottery_ticket(arch, data, ratio, cfg, rounds=config.lottery_rounds, progress=False)
    return ticket.model, ticket.accuracy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=sorted(BUDGETS))
    parser.add_argument("--schedules", nargs="+", default=["oneshot"], choices=list(CANDIDATES))
    parser.add_argument("--ratios", nargs="+", type=float, help="default: 0.9 0.99 one-shot, 0.99 otherwise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tie", type=float, default=0.1, help="pp within which the cheaper candidate wins")
    args = parser.parse_args(argv)
    config = SweepConfig(models=tuple(args.models), seed=args.seed)
    data = config.load_data()
    runs = config.paths.runs
    agree = True
    for arch in args.models:
        base, _ = baseline(arch, data, config.baseline_config(arch), runs)
        for schedule in args.schedules:
            ratios = args.ratios or DEFAULT_RATIOS[schedule]
            rows, models = [], {}
            for candidate in CANDIDATES[schedule][arch]:
                for ratio in ratios:
                    model, val = run_candidate(schedule, arch, candidate, ratio, base, data, config, args.seed)
                    labels = dict(zip(COLUMNS[schedule], candidate, strict=True))
                    rows.append({**labels, "ratio": ratio, "val %": 100 * val})
                    models[candidate, ratio] = model
                    print(f"  {arch} {schedule} {candidate} @ {ratio}: validation {100 * val:.2f} %", flush=True)
            table = pd.DataFrame(rows).pivot_table(index=COLUMNS[schedule], columns="ratio", values="val %")
            table["mean"] = table.mean(axis=1)
            means = {c: table["mean"][c if len(c) > 1 else c[0]] for c in CANDIDATES[schedule][arch]}
            best = max(means.values())
            # "within the tie" includes the tie itself (1e-9: 98.24 - 0.1 is 98.14000000000001 in floating point)
            chosen = next(c for c in CANDIDATES[schedule][arch] if means[c] >= best - args.tie - 1e-9)
            print(f"\n{arch} {schedule}: validation accuracy (%) after global pruning, seed {args.seed}")
            print(table.round(2).to_string())
            tests = [100 * evaluate(models[chosen, r], data.test_x, data.test_y)["accuracy"] for r in ratios]
            print(
                f"chosen on validation: {chosen} (test accuracy, reported only: "
                f"{', '.join(f'{t:.2f} %' for t in tests)})"
            )
            same = current(schedule, arch) == chosen
            agree &= same
            print(f"BUDGETS[{arch!r}] holds {current(schedule, arch)}: {'agrees' if same else 'DIFFERS'}\n")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
