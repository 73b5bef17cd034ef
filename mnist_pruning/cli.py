"""The ``mnist-pruning`` command.

Usage::

    mnist-pruning fetch-data                      # verified MNIST into ./data/MNIST/raw
    mnist-pruning baseline --models mlp cnn       # train (or reuse) the dense baselines in runs/
    mnist-pruning sweep --models mlp --methods global --ratios 0.5 0.9 --finetune-epochs 2
    mnist-pruning sweep --seeds 0 1 2 --workers 2 # three seeds, two local worker processes
    mnist-pruning sweep --scheduler tcp://host:8786   # the experiments on a Dask cluster (pip install '.[dask]')
    mnist-pruning run                             # quick but real pipeline run -> runs/quick/
    mnist-pruning run --full                      # full sweep (seeds 0 1 2), executed chapters, book -> results/
    mnist-pruning compress --model mlp --sparsity 0.95 --bits-fc 5   # prune, share, fine-tune, entropy-code
    mnist-pruning compress --sweep                # the compression grid of both models -> compression_results.csv

Every argument is validated before any data is loaded or any model trained.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from .checks import _check_choices
from .models import MODEL_NAMES
from .parallel import _check_workers, _default_workers, _sweep_executor
from .sparsity.nm import NM_PATTERNS
from .sweep import _RATIOS, METHODS, SCHEDULES, SweepConfig, run_sweep

__all__ = ["main"]

_FULL_SEEDS = (0, 1, 2)  # run --full: three seeds, so every point is a mean with a spread

# The README's quick main job: the whole pipeline, every method, on a budget small enough for a 2-core laptop.
# These are defaults: whatever the user passes (--ratios, --patterns, ...) wins.
_QUICK = {
    "ratios": (0.5, 0.9, 0.99),
    "patterns": ("2:4",),
    "finetune_epochs": 1,
    "baseline_epochs": {"mlp": 8, "cnn": 3},
    "subset": 10000,
    "out_dir": "runs/quick",
}


def _seeds(args: argparse.Namespace, full: bool = False) -> tuple[int, ...]:
    """``--seeds``, else ``--seed``, else the full run's :data:`_FULL_SEEDS` or seed 0."""
    seed, seeds = getattr(args, "seed", None), getattr(args, "seeds", None)
    if seed is not None and seeds is not None:
        raise ValueError(f"give --seed ({seed}) or --seeds ({' '.join(map(str, seeds))}), not both")
    if seeds is not None:
        return tuple(seeds)
    if seed is not None:
        return (seed,)
    return _FULL_SEEDS if full else (0,)


def _sweep_config(args: argparse.Namespace, quick: bool = False) -> SweepConfig:
    """The sweep the arguments ask for; options the user left out take the quick run's or the sweep's defaults."""
    defaults = dict(_QUICK) if quick else {"ratios": _RATIOS, "patterns": NM_PATTERNS}
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
        seeds=_seeds(args, full=getattr(args, "full", False)),
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
    p.add_argument(
        "--seed", type=int, default=None, help="seed for init, batch order and pruning ties (default: 0)"
    )
    p.add_argument("--data-dir", default=None, help="MNIST root (default: $MNIST_PRUNING_DATA or ./data)")
    p.add_argument("--out-dir", default=None, help="checkpoints and compact files (default: runs/)")
    p.add_argument("--subset", type=int, default=None, help="class-balanced training subset (smoke runs)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument(
        "--precision",
        default="auto",
        help="training arithmetic: bf16 (autocast, fp32 weights), fp32, or auto = bf16 where the CPU/GPU has it",
    )


def _build_parser() -> argparse.ArgumentParser:
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
            "--ratios", nargs="+", type=float, default=None, help=f"fractions removed (default: {_RATIOS})"
        )
        p.add_argument("--patterns", nargs="+", default=None, help="N:M patterns for method nm")
        p.add_argument("--finetune-epochs", type=int, default=None, help="default: per model (MLP 8, CNN 2)")
        p.add_argument(
            "--baseline-epochs", type=int, default=None, help="default: the full recipe (MLP 20, CNN 10)"
        )
        p.add_argument("--results-dir", default=None, help="where the CSVs go (default: results/)")
        p.add_argument("--no-latency", action="store_true", help="skip latency measurement")
        p.add_argument(
            "--seeds",
            nargs="+",
            type=int,
            default=None,
            help="distinct seeds >= 0, each with its own baselines and rows (default: 0; run --full: 0 1 2)",
        )
        p.add_argument(
            "--workers",
            type=int,
            default=None,
            help=f"local worker processes, 1 torch thread each (default: one per core, here {_default_workers()}; "
            "1: in this process)",
        )
        p.add_argument(
            "--scheduler",
            default=None,
            help="run the experiments on the Dask cluster at this address, e.g. tcp://host:8786 (needs the dask "
            "extra, a shared output folder and workers started with --nthreads 1; see the README)",
        )
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
    _add_compress(sub)
    return parser


def _layer_bits_arg(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected LAYER=BITS, e.g. fc1=4, got {text!r}")
    try:
        return name, int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bits of {name!r} must be an integer, got {value!r}") from None


def _add_compress(sub) -> None:
    p = sub.add_parser(
        "compress", help="Deep Compression: prune, share weights, fine-tune centroids, entropy-code"
    )
    p.add_argument("--model", default="mlp", help="mlp | cnn (one point; --sweep: see --models)")
    p.add_argument("--models", nargs="+", default=list(MODEL_NAMES), help="with --sweep: model families")
    p.add_argument("--sparsity", type=float, default=0.95, help="fraction of weights removed, in [0, 1)")
    p.add_argument("--bits-conv", type=int, default=8, help="bits per cluster index of conv layers (1..16)")
    p.add_argument("--bits-fc", type=int, default=5, help="bits per cluster index of fc layers (1..16)")
    p.add_argument("--layer-bits", nargs="+", type=_layer_bits_arg, default=[], help="per layer, e.g. fc1=4")
    p.add_argument("--sweep", action="store_true", help="the grid of mnist_pruning.compress (SPARSITIES x BITS)")
    p.add_argument("--prune-epochs", type=int, default=None, help="gradual pruning (default: MLP 20, CNN 6)")
    p.add_argument(
        "--centroid-epochs", type=int, default=None, help="centroid fine-tuning (default: MLP 2, CNN 1)"
    )
    p.add_argument("--baseline-epochs", type=int, default=None, help="default: the full recipe (MLP 20, CNN 10)")
    p.add_argument("--codebook-dtype", default="F32", help="F32 | F16: how shared values are stored")
    p.add_argument("--bias-dtype", default="float16", help="float16 | float32: how biases are stored")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="MNIST root (default: $MNIST_PRUNING_DATA or ./data)")
    p.add_argument("--out-dir", default=None, help="baselines, pruned models, coded files (default: runs/)")
    p.add_argument("--results-dir", default=None, help="where compression_results.csv goes (default: results/)")
    p.add_argument("--subset", type=int, default=None, help="class-balanced training subset (smoke runs)")
    p.add_argument("--test-subset", type=int, default=None, help="class-balanced test subset (smoke runs)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def _compress(args: argparse.Namespace) -> int:
    """One point (prints the step-by-step table) or, with --sweep, the grid."""
    import pandas as pd

    from . import compress as C

    models = tuple(args.models) if args.sweep else (args.model,)
    _check_choices(models, MODEL_NAMES, "model")
    per_model = lambda v: {} if v is None else dict.fromkeys(models, v)  # noqa: E731
    kwargs = dict(
        models=models,
        per_layer=dict(args.layer_bits),
        seed=args.seed,
        prune_epochs=per_model(args.prune_epochs),
        centroid_epochs=per_model(args.centroid_epochs),
        baseline_epochs=per_model(args.baseline_epochs),
        codebook_dtype=args.codebook_dtype,
        bias_dtype=args.bias_dtype,
        subset=args.subset,
        test_subset=args.test_subset,
        data_dir=args.data_dir,
        out_dir=args.out_dir,
        results_dir=args.results_dir,
    )
    if not args.sweep:
        kwargs.update(sparsities={args.model: (args.sparsity,)}, bits=((args.bits_conv, args.bits_fc),))
    config = C.CompressConfig(**kwargs)  # validates everything before any data is loaded
    start = time.perf_counter()
    path = C.run_compression_sweep(config, progress=False, workers=1)
    from .results import load_compression_results
    from .settings import display_path

    if not args.sweep:
        df = load_compression_results(path.parent, per_seed=True)
        point = config.points()[0]
        arch, s = point.model, point.sparsity
        hit = df[
            (df["model"] == arch)
            & (df["sparsity_target"].round(6) == round(s, 6))
            & (df["bits"] == C.sharing._bits_text(dict(point.bits)))
            & (df["seed"] == args.seed)
        ]
        row = hit.iloc[-1].to_dict()
        with pd.option_context("display.float_format", "{:,.2f}".format, "display.width", 120):
            print(f"{arch}, sparsity {s:g}, bits {row['bits']} (accuracies of decoded files)")
            print(C.steps_table(row).to_string())
    else:
        df = load_compression_results(path.parent)  # every seed in the CSV, averaged per point
        cols = ["model", "sparsity", "bits", "size_coded_bytes", "ratio_vs_dense", "acc_test", "acc_test_std"]
        print(df[cols + ["n_seeds"]].to_string())
    print(f"\nrows in {display_path(path)}; done in {time.perf_counter() - start:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
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
    if args.command == "compress":
        return _compress(args)
    if args.command == "baseline":
        from .data import load_mnist
        from .runner import _baseline_path, baseline
        from .settings import display_path, paths
        from .train import TrainConfig

        _check_choices(args.models, MODEL_NAMES, "model")
        seed = 0 if args.seed is None else args.seed
        configs = {
            m: TrainConfig.for_model(
                m,
                seed=seed,
                precision=args.precision,
                **({"epochs": args.epochs} if args.epochs is not None else {}),
            )
            for m in args.models
        }
        p = paths(args.data_dir, args.out_dir)
        data = load_mnist(p.data, subset=args.subset, seed=seed)
        for m, cfg in configs.items():
            _, payload = baseline(m, data, cfg, p.runs)
            where = display_path(_baseline_path(p.runs, m, seed))
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
    if args.workers is not None:
        _check_workers(args.workers)
        if args.scheduler is not None:
            raise ValueError(
                f"--workers {args.workers} counts local processes; with --scheduler the cluster's workers run "
                "the experiments: give one of them"
            )
    start = time.perf_counter()
    if args.command == "run" and args.full:
        from .fullrun import full_run

        record = full_run(config, book=not args.no_book, workers=args.workers, scheduler=args.scheduler)
        print(json.dumps(record["seconds"], indent=2))
        from .settings import paths

        results = config.paths.results
        print(f"done in {time.perf_counter() - start:.0f} s; results in {results}")
        return 0
    with _sweep_executor(args.workers, args.scheduler) as executor:  # connects (or fails) before any training
        csvs = run_sweep(config, executor=executor)
    from .compare import _summary_table, load_compared
    from .settings import display_path

    folder = next(iter(csvs.values())).parent
    print(_summary_table(load_compared(folder, models=config.models)).to_string())
    print(
        f"\nrows in {', '.join(display_path(p) for p in csvs.values())}; "
        f"done in {time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
