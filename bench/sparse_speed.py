"""Do pruned models run faster on this CPU? Sparse kernels vs dense vs structured: the crossover map, the goals of
issue 13, and ONNX export.

Run from the repository root (a few minutes on a 2-core CPU; keep the machine otherwise idle)::

    python bench/sparse_speed.py --threads 2                      # both models, trained baselines if in runs/
    python bench/sparse_speed.py --models mlp --densities 0.1 0.01 --rounds 5
    python bench/sparse_speed.py --smoke                          # seconds: one density, tiny repeat counts

Models: ``runs/<model>_baseline.pt`` (``--runs``) when it exists, else a freshly initialised model (the output
says which). The measuring is ``mnist_pruning.speed.crossover``, the same definition chapters 02 and 04 use: for
every kept fraction in ``--densities`` a copy is pruned by global magnitude and baked in, then timed at batch 1
and ``--batch`` (median ms per forward, ``mnist_pruning.sparsity.measure.time_models``, best of ``--rounds``
rounds that alternate the variants so drift from other jobs hits all alike) as:

- ``dense`` - the unpruned model (the baseline every ratio is taken against, in this same run);
- ``converted`` - ``sparsity.to_sparse_inference``: each layer sparse or dense as measured faster;
- ``sparse`` - every layer with zeros forced onto the CSR kernel (the sparse curve of the map);
- ``structured`` - ``sparsity.shrink`` at the ratio whose surgered model has about as many parameters as the
  pruned one has non-zeros.

LeNet-5 is timed in the memory format that is faster for the *dense* model (channels_last or contiguous; the
script prints which), the same for every variant. The numbers go to ``<out>/sparse_crossover.csv`` and the map to
``<out>/sparse_crossover.png`` (and ``.svg``).

GOALS (converted / dense, median latency, same run): LeNet-300-100 at global 0.9 >= 1.8x at the large batch, at
0.99 >= 8x there and >= 1.5x at batch 1; LeNet-5-Caffe at 0.99 >= 1.5x at the large batch; no converted model
slower than dense at either batch (within a 5 % noise band; where no layer runs sparse the converted model is
the dense computation, so those rows only show the run's timing noise). A goal that fails prints the plan of that
model: each layer's density, dense and sparse ms, choice and reason, and the time spent outside the layers.

ONNX (needs the ``onnx`` extra: onnx, onnxruntime, onnxscript; skipped with a message otherwise): the dense,
unstructured 0.9 (baked) and structured 0.5 models of each LeNet exported with ``torch.onnx.export``; the
onnxruntime output is checked ``allclose`` to PyTorch's, and the file bytes (raw and zlib -9) and onnxruntime
latency are printed next to eager. Chapter 03's structured goal, (speedup at the large batch) / (FLOP
reduction) >= 0.7 at ratio 0.5, is judged for both runtimes.

The exit status is 0 unless ``--strict`` (then 1 if a goal fails).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from torch import nn

# Running as `python bench/sparse_speed.py` puts bench/ on sys.path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import check_timing_args  # noqa: E402
from mnist_pruning import export  # noqa: E402
from mnist_pruning import sparsity as sp  # noqa: E402
from mnist_pruning.models import MODEL_NAMES, build_model  # noqa: E402
from mnist_pruning.plots import crossover_figure  # noqa: E402
from mnist_pruning.references import _MODEL_TITLES  # noqa: E402
from mnist_pruning.speed import _VARIANTS, Timing, _where_each_wins, crossover, pick_format, pruned_copy  # noqa: E402

DENSITIES = (1.0, 0.5, 0.3, 0.1, 0.05, 0.02, 0.01)  # fraction of weights kept
BIG_BATCH = 256
NOISE = 0.95  # "not slower than dense" allows 5 % of timing noise


@dataclass(frozen=True)
class Goal:
    model: str
    density: float
    batch: str  # "big" or "1"
    target: float

    def label(self, big: int) -> str:
        batch = big if self.batch == "big" else 1
        return f"{self.model} global {1 - self.density:g}, b{batch}: converted vs dense"


GOALS = (Goal("mlp", 0.1, "big", 1.8), Goal("mlp", 0.01, "big", 8.0), Goal("mlp", 0.01, "1", 1.5))
GOALS += (Goal("cnn", 0.01, "big", 1.5),)


def load_baseline(arch: str, runs: Path, seed: int) -> tuple[nn.Module, str]:
    path = runs / f"{arch}_baseline.pt"
    if path.is_file():
        from mnist_pruning.train import _load_checkpoint  # only when there is one: it pulls in the data code

        model, _ = _load_checkpoint(path, device=torch.device("cpu"))
        return model.eval(), f"trained ({path})"
    torch.manual_seed(seed)
    return build_model(arch).eval(), f"random init (no {path})"


def bench_model(arch: str, densities: tuple[float, ...], timing: Timing, runs: Path, seed: int):
    """Time every variant at every density (``mnist_pruning.speed.crossover``, the definition the chapters use
    too) and print the table; return the long-format table, the plans by density, and the memory format."""
    base, source = load_baseline(arch, runs, seed)
    print(f"\n{_MODEL_TITLES[arch]}: {source}, {sp.count_parameters(base):,} parameters")
    fmt, format_ms = pick_format(base, timing)
    if format_ms:
        cells = ", ".join(f"{name.removeprefix('dense ')} {ms:.3f} ms" for name, ms in format_ms.items())
        name = "channels_last" if fmt is torch.channels_last else "contiguous"
        print(f"  memory format for every variant: {name} (dense at b{max(timing.batches)}: {cells})")
    df, plans = crossover(base, arch, densities, timing, memory_format=fmt)
    df.insert(1, "source", source)
    header = f"{'kept':>6} {'nonzero':>8} {'struct r':>8} {'s params':>8}"
    for b in timing.batches:
        header += "".join(f" {f'{v[:6]} b{b}':>12}" for v in _VARIANTS) + f" {f'x b{b}':>7}"
    print(
        f"  ms per forward (best of {timing.rounds} alternating medians); x = dense / converted; last: the layers "
        "the converted model runs sparse"
    )
    print(f"  {header}  sparse layers")
    for density in densities:
        sub = df[df.density == density]
        ms = sub.pivot(index="variant", columns="batch", values="ms")
        structured = sub[sub.variant == "structured"].iloc[0]
        converted = sub[sub.variant == "converted"].set_index("batch")
        line = f"{density:>6g} {int(structured.nonzero):>8,} {structured.structured_ratio:>8.3f}"
        line += f" {int(structured.params):>8,}"
        for b in timing.batches:
            line += "".join(f" {ms.loc[v, b]:>12.3f}" for v in _VARIANTS)
            line += f" {ms.loc['dense', b] / ms.loc['converted', b]:>7.2f}"
        layers = " | ".join(f"b{b}: {converted.loc[b, 'sparse_layers']}" for b in timing.batches)
        print(f"  {line}  {layers}")
    return df, plans, fmt


def print_plan(plan: list[sp.inference._LayerPlan], big: int) -> None:
    timed = "".join(f" {f'b{b} dense/sparse ms':>22}" for b in (1, big))
    print(f"    {'layer':<8} {'kind':<7} {'density':>8}{timed}  choice: reason")
    for row in plan:
        cells = ""
        for b in (1, big):
            d_s = row.ms.get(b)
            cells += f" {f'{d_s[0]:.3f} / {d_s[1]:.3f}' if d_s else 'not timed':>22}"
        choice = ", ".join(f"b{b} {'sparse' if s else 'dense'}" for b, s in row.sparse.items())
        print(f"    {row.layer:<8} {row.kind:<7} {row.density:>8.4f}{cells}  {choice}: {row.reason}")


def judge(df: pd.DataFrame, plans: dict, big: int) -> bool:
    """Print every goal with its ratio and PASS/FAIL (and the plan when one fails); True if all pass."""
    print(f"\nGOALS (median latency, best of alternating rounds, this run, {torch.get_num_threads()} thread(s))")
    ok = True
    for goal in GOALS:
        batch = big if goal.batch == "big" else 1
        row = df[(df.model == goal.model) & (df.density == goal.density) & (df.batch == batch)]
        row = row[row.variant == "converted"]
        label = goal.label(big)
        if row.empty:
            print(f"  {label:<50} n/a: not run (needs --models {goal.model} and density {goal.density:g})")
            continue
        ratio = float(row.speedup.iloc[0])
        passed = ratio >= goal.target
        ok &= passed
        print(f"  {label:<50} {ratio:>6.2f}x  goal >= {goal.target:g}x  {'PASS' if passed else 'FAIL'}")
        if not passed:
            explain(df, plans[(goal.model, goal.density)], goal.model, goal.density, batch, big)
    converted = df[(df.variant == "converted") & (df.density < 1)]
    # Where no layer runs sparse the converted model computes exactly what the dense one does (the fallback): it
    # cannot be slower, and its measured ratio shows the timing noise of this run instead.
    fallback = converted[converted.sparse_layers == "-"]
    if not fallback.empty:
        print(
            f"  {'dense fallbacks (same computation as dense)':<50} {len(fallback)} rows, measured "
            f"{fallback.speedup.min():.2f}x..{fallback.speedup.max():.2f}x: the timing noise of this run"
        )
    running = converted[converted.sparse_layers != "-"]
    if not running.empty:
        worst = running.loc[running.speedup.idxmin()]
        passed = bool(worst.speedup >= NOISE)
        ok &= passed
        where = f"worst: {worst.model} kept {worst.density:g} b{worst.batch}"
        label = "no converted model with sparse layers slower"
        print(
            f"  {label:<50} {worst.speedup:>6.2f}x  goal >= {NOISE:g}x  {'PASS' if passed else 'FAIL'} ({where})"
        )
        if not passed:
            explain(df, plans[(worst.model, worst.density)], worst.model, worst.density, int(worst.batch), big)
    return ok


def explain(
    df: pd.DataFrame, plan: list[sp.inference._LayerPlan], model: str, density: float, batch: int, big: int
) -> None:
    """Why a goal failed: the plan (each layer's dense and sparse ms, choice, reason), what the chosen kernels
    give summed over the layers, and roughly how much of the dense forward lies outside the layers."""
    print("    why, per layer (the plan to_sparse_inference measured; ms per call of the layer alone):")
    print_plan(plan, big)
    timed = [row for row in plan if batch in row.ms]
    if len(timed) < len(plan):
        return  # untimed layers: their share is unknown
    chosen = sum(row.ms[batch][1] if row.sparse[batch] else row.ms[batch][0] for row in timed)
    dense_layers = sum(row.ms[batch][0] for row in timed)
    dense = float(
        df[(df.model == model) & (df.density == density) & (df.batch == batch) & (df.variant == "dense")].ms.iloc[
            0
        ]
    )
    # Layer timings come from the plan, a little earlier than the whole-model ones: only a rough split.
    outside = dense - dense_layers
    rest = (
        f"the dense forward ({dense:.3f} ms) spends ~{outside:.3f} ms outside the layers (activations, pooling, "
        "flatten, Python), which no kernel choice shortens"
        if outside > 0.05 * dense
        else f"the layers are about all of the dense forward ({dense:.3f} ms)"
    )
    print(
        f"    at b{batch}: the layers take {dense_layers:.3f} ms dense and {chosen:.3f} ms as chosen, so the "
        f"kernels alone give {dense_layers / chosen:.2f}x;\n    {rest}"
    )


# ------------------------------------------------------------------------------------------------- ONNX


def bench_onnx(
    archs: list[str], formats: dict[str, torch.memory_format], timing: Timing, runs: Path, seed: int, smoke: bool
) -> bool | None:
    """Export, check and time the dense / unstructured 0.9 / structured 0.5 models (``mnist_pruning.export``;
    eager in ``formats[arch]``, the memory format the crossover chose); return whether chapter 03's structured
    goal is met, for every model, by at least one runtime (None when not judged)."""
    missing = export.onnx_missing()
    if missing:
        print(f"\nONNX: skipped: {missing} not installed (pip install -e '.[onnx]')")
        return None
    print(f"\nONNX: torch.onnx.export (dynamo), onnxruntime CPU, {torch.get_num_threads()} thread(s)")
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs[:1] if smoke else archs:
            base, _ = load_baseline(arch, runs, seed)
            variants = {"dense": base}
            if not smoke:
                variants["unstructured 0.9"] = pruned_copy(base, 0.1, torch.contiguous_format)
                variants["structured 0.5"] = sp.shrink(base, 0.5).eval()
            fmt = formats.get(arch, torch.contiguous_format)
            table = export.onnx_report(variants, Path(tmp) / arch, timing, memory_format=fmt)
            with pd.option_context("display.width", 160, "display.float_format", "{:,.3f}".format):
                print(f"  {arch}:\n" + textwrap.indent(table.to_string(), "    "))
            if "structured 0.5" in variants:
                goal = export.speedup_vs_flops(table, base, variants["structured 0.5"], "dense", "structured 0.5")
                for runtime in ("eager", "ort"):
                    print(
                        f"  {arch} structured 0.5, {runtime:<5}: speedup b{goal['batch']} "
                        f"{goal[runtime]['speedup']:.2f}x / FLOP reduction {goal['flop_reduction']:.2f}x = "
                        f"{goal[runtime]['ratio']:.2f} (chapter 03 goal >= 0.7)"
                    )
                verdicts.append(goal["eager"]["ratio"] >= 0.7 or goal["ort"]["ratio"] >= 0.7)  # either runtime
    print(
        "  An unstructured model's ONNX file stores every weight tensor dense, its zeros included (zero_pct):\n"
        "  as large as the dense file, smaller only once compressed. A structured model's graph has smaller "
        "tensors: a smaller file, and less work in either runtime."
    )
    return None if not verdicts else all(verdicts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    parser.add_argument(
        "--densities", nargs="+", type=float, default=None, help=f"kept fractions (default {DENSITIES})"
    )
    parser.add_argument("--runs", default="runs", help="folder with <model>_baseline.pt (default runs)")
    parser.add_argument(
        "--out", default="runs/bench", help="folder for the CSV and the figure (default runs/bench)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--min-run-time", type=float, default=0.2, help="seconds per Timer median (default 0.2)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default torch.get_num_threads())"
    )
    parser.add_argument("--batch", type=int, default=BIG_BATCH, help=f"the large batch (default {BIG_BATCH})")
    parser.add_argument("--seed", type=int, default=0, help="seed for random init (default 0)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX part")
    parser.add_argument("--smoke", action="store_true", help="seconds: one density, one round, tiny timings")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a goal fails (default: report)")
    args = parser.parse_args(argv)
    densities = tuple(args.densities) if args.densities else ((0.1,) if args.smoke else DENSITIES)
    for d in densities:
        if not 0 < d <= 1:
            parser.error(f"every density must be in (0, 1] (the fraction of weights kept), got {d}")
    check_timing_args(parser, args, ("rounds", "batch"))
    if args.smoke:
        timing = Timing(1, 0.01, 0.002, (1, args.batch))
    else:
        timing = Timing(args.rounds, args.min_run_time, args.min_run_time / 4, (1, args.batch))

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or previous_threads)  # latency_ms and the plans time with this many
    try:
        print(
            f"torch {torch.__version__}; {torch.get_num_threads()} torch thread(s); float32 CPU; latency = best "
            f"of {timing.rounds} alternating torch.utils.benchmark medians ({timing.min_run_time:g} s each)"
        )
        tables, plans, formats = [], {}, {}
        for arch in args.models:
            table, model_plans, formats[arch] = bench_model(arch, densities, timing, Path(args.runs), args.seed)
            tables.append(table)
            plans.update({(arch, d): plan for d, plan in model_plans.items()})
        df = pd.concat(tables, ignore_index=True)
        print("\nWHERE EACH WINS (this run; kept = fraction of weights kept)")
        print("\n".join(_where_each_wins(df)))
        ok = judge(df, plans, max(timing.batches))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        csv = out / "sparse_crossover.csv"
        df.to_csv(csv, index=False)
        fig = crossover_figure(df)
        from mnist_pruning.plots import save_figure  # the project's byte-reproducible PNG + SVG writer

        png, _ = save_figure(fig, out, "sparse_crossover")
        plt.close(fig)
        print(f"\nwrote {csv} and {png}")
        if not args.no_onnx:
            structured_ok = bench_onnx(args.models, formats, timing, Path(args.runs), args.seed, args.smoke)
            if structured_ok is not None:
                verdict = "PASS" if structured_ok else "FAIL"
                print(f"  chapter 03 structured goal, each model by either runtime: {verdict}")
                ok &= structured_ok
    finally:
        torch.set_num_threads(previous_threads)
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
