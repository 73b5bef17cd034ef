"""The ``mnist-pruning`` command.

Usage::

    mnist-pruning fetch-data                      # verified MNIST into ./data/MNIST/raw
    mnist-pruning baseline --models mlp cnn       # train (or reuse) the dense baselines in runs/
    mnist-pruning sweep --models mlp --methods global --ratios 0.5 0.9 --finetune-epochs 2
    mnist-pruning run                             # quick but real pipeline run (~3 min) -> runs/quick/
    mnist-pruning run --full                      # full sweep, executed chapters, book -> results/

Every argument is validated before any data is loaded or any model trained.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from .checks import check_choices
from .models import MODEL_NAMES
from .sparsity.nm import NM_PATTERNS
from .sweep import METHODS, RATIOS, SCHEDULES, SweepConfig, run_sweep

# The README's quick main job: the whole pipeline, every method, on a budget that fits ~3 minutes on 2 cores.
# These are defaults: whatever the user passes (--ratios, --patterns, ...) wins.
QUICK = {
    "ratios": (0.5, 0.9, 0.99),
    "patterns": ("2:4",),
    "finetune_epochs": 1,
    "baseline_epochs": {"mlp": 8, "cnn": 3},
    "subset": 10000,
    "out_dir": "runs/quick",
}


def _sweep_config(args: argparse.Namespace, quick: bool = False) -> SweepConfig:
    """The sweep the arguments ask for; options the user left out take the quick run's or the sweep's defaults."""
    defaults = dict(QUICK) if quick else {"ratios": RATIOS, "patterns": NM_PATTERNS}
    given = {
        "ratios": args.ratios,
        "patterns": args.patterns,
        "finetune_epochs": args.finetune_epochs,
        "baseline_epochs": None
        if args.baseline_epochs is None
        else dict.fromkeys(args.models, args.baseline_epochs),
        "subset": args.subset,
        "out_dir": args.out_dir,
    }
    chosen = {k: v for k, v in given.items() if v is not None}
    kwargs = {**defaults, **chosen}
    if quick and "results_dir" not in kwargs:
        kwargs["results_dir"] = args.results_dir or str(Path(kwargs["out_dir"]) / "results")
    return SweepConfig(
        models=tuple(args.models),
        methods=tuple(args.methods),
        seed=args.seed,
        precision=args.precision,
        data_dir=args.data_dir,
        results_dir=kwargs.pop("results_dir", args.results_dir),
        latency=not args.no_latency,
        schedules=tuple(args.schedules),
        frontier_ratios=tuple(args.frontier_ratios),
        frontier_epochs=args.frontier_epochs,
        **{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()},
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=list(MODEL_NAMES), help="model families (default: both)")
    p.add_argument("--seed", type=int, default=0, help="seed for init, batch order and pruning ties")
    p.add_argument("--data-dir", default=None, help="MNIST root (default: $MNIST_PRUNING_DATA or ./data)")
    p.add_argument("--out-dir", default=None, help="checkpoints and compact files (default: runs/)")
    p.add_argument("--subset", type=int, default=None, help="class-balanced training subset (smoke runs)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument(
        "--precision",
        default="auto",
        help="training arithmetic: bf16 (autocast, fp32 weights), fp32, or auto = bf16 where the CPU/GPU has it",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-pruning", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fetch-data", help="fetch and verify MNIST")
    p.add_argument("--data-dir", default=None)

    p = sub.add_parser("baseline", help="train (or reuse) the dense baselines")
    _add_common(p)
    p.add_argument("--epochs", type=int, default=None, help="baseline epochs (default: the full recipe)")

    for name, help_ in (
        ("sweep", "prune, fine-tune and measure; append rows to the CSVs"),
        ("run", "the main job: quick pipeline run, or --full"),
    ):
        p = sub.add_parser(name, help=help_)
        _add_common(p)
        p.add_argument("--methods", nargs="+", default=list(METHODS), help=f"from {', '.join(METHODS)}")
        p.add_argument(
            "--ratios", nargs="+", type=float, default=None, help=f"fractions removed (default: {RATIOS})"
        )
        p.add_argument("--patterns", nargs="+", default=None, help="N:M patterns for method nm")
        p.add_argument("--finetune-epochs", type=int, default=None, help="default: per model (MLP 8, CNN 2)")
        p.add_argument(
            "--baseline-epochs", type=int, default=None, help="default: the full recipe (MLP 20, CNN 10)"
        )
        p.add_argument("--results-dir", default=None, help="where the CSVs go (default: results/)")
        p.add_argument("--no-latency", action="store_true", help="skip latency measurement")
        p.add_argument(
            "--schedules",
            nargs="+",
            default=None,
            help=f"from {', '.join(SCHEDULES)}; gradual/lottery run at --frontier-ratios (default: oneshot; "
            "run --full: all)",
        )
        p.add_argument("--frontier-ratios", nargs="+", type=float, default=[0.99], help="for gradual / lottery")
        p.add_argument("--frontier-epochs", type=int, default=None, help="gradual epochs (default: MLP 20, CNN 6)")
        if name == "run":
            p.add_argument(
                "--full", action="store_true", help="full sweep + executed chapters + book; writes results/"
            )
            p.add_argument("--no-book", action="store_true", help="with --full: skip building the book")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        return _dispatch(args)
    except ValueError as e:
        parser.exit(2, f"mnist-pruning: error: {e}\n")


def _dispatch(args: argparse.Namespace) -> int:
    from .data import fetch_mnist

    if args.command == "fetch-data":
        print(fetch_mnist(args.data_dir))
        return 0
    if args.command == "baseline":
        from .data import load_mnist
        from .settings import display_path, paths
        from .sweep import baseline
        from .train import TrainConfig

        check_choices(args.models, MODEL_NAMES, "model")
        configs = {
            m: TrainConfig.for_model(
                m,
                seed=args.seed,
                precision=args.precision,
                **({"epochs": args.epochs} if args.epochs is not None else {}),
            )
            for m in args.models
        }
        p = paths(args.data_dir, args.out_dir)
        data = load_mnist(p.data, subset=args.subset, seed=args.seed)
        for m, cfg in configs.items():
            _, payload = baseline(m, data, cfg, p.runs)
            where = display_path(Path(p.runs) / f"{m}_baseline.pt")
            acc = payload["metrics"]
            print(
                f"{m}: validation accuracy {acc['val']['accuracy']:.4f}, "
                f"test accuracy {acc['test']['accuracy']:.4f} -> {where}"
            )
        return 0
    if args.schedules is None:
        args.schedules = list(SCHEDULES) if getattr(args, "full", False) else ["oneshot"]
    quick = args.command == "run" and not args.full
    config = _sweep_config(args, quick=quick)
    start = time.perf_counter()
    if args.command == "run" and args.full:
        from .fullrun import full_run

        record = full_run(config, book=not args.no_book)
        print(json.dumps(record["seconds"], indent=2))
        from .settings import paths

        results = paths(config.data_dir, config.out_dir, config.results_dir).results
        print(f"done in {time.perf_counter() - start:.0f} s; results in {results}")
        return 0
    csvs = run_sweep(config)
    from .compare import summary_table
    from .results import load_results
    from .settings import display_path

    folder = next(iter(csvs.values())).parent
    print(summary_table(load_results(folder, models=config.models)).to_string())
    print(
        f"\nrows in {', '.join(display_path(p) for p in csvs.values())}; "
        f"done in {time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
