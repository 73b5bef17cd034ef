"""Does structured pruning make the models faster on CPU, in proportion to the FLOPs it removes?

Run from the repository root (about a minute on a 2-core CPU)::

    python bench/structured_speed.py                                # both models, random init
    python bench/structured_speed.py --checkpoint runs/cnn_baseline.pt --checkpoint runs/mlp_baseline.pt
    python bench/structured_speed.py --models mlp --ratios 0.5 --threads 1 --min-run-time 0.5

For each model and each ratio, ``sparsity.shrink(model, ratio)`` removes that fraction of the hidden units and
returns the physically smaller (surgered) model. Per row: its parameters, forward FLOPs per image
(``sparsity.flops``), ``torch.save(state_dict)`` bytes, and CPU latency (``sparsity.measure.time_models``, i.e.
``torch.utils.benchmark.Timer`` medians under ``inference_mode``) of the dense and the surgered model at batch 1
and 256 (``--batch``). Each of ``--rounds`` rounds times the dense model and every surgered one in turn, and the
best median of each is kept, so drift from other jobs on a shared CPU hits them all alike.

GOAL per row: (latency speedup at batch 256) / (FLOP reduction) >= 0.7, i.e. at least 70 % of the FLOPs removed
show up as time saved. Rows that miss it are explained by a "why" table: each layer timed alone (dense vs each
failing surgered model, with that layer's own FLOP reduction), the rest of the forward (pooling, ReLU, flatten,
Python), which no FLOP count includes, the time a FLOP-proportional model would take, and batch-1 latency as the
floor of fixed per-call cost. Random weights are fine:
latency depends on the shapes only. The exit status is 0 unless ``--strict`` (then 1 if any row FAILs).

LeNet-5 trains in channels_last on CPU; for inference the script times both memory formats on the dense model
and on one surgered model, then uses the format that is faster for the *dense* model for every row, dense and
surgered alike (so a handicapped baseline can never inflate a speedup), and prints which.
"""

from __future__ import annotations

import argparse
import copy
import io
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

# Running as `python bench/structured_speed.py` puts bench/ on sys.path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import check_timing_args  # noqa: E402
from mnist_pruning.checks import _check_ratio  # noqa: E402
from mnist_pruning.models import MODEL_NAMES, SAMPLE_SHAPE, build_model  # noqa: E402
from mnist_pruning.sparsity.measure import (  # noqa: E402
    Timing,
    _layer_flops,
    count_parameters,
    flops,
    prunable_layers,
    time_models,
)
from mnist_pruning.sparsity.structured import shrink  # noqa: E402
from mnist_pruning.speed import _FORMATS, pick_format  # noqa: E402

RATIOS = (0.3, 0.5, 0.7, 0.9, 0.99)
BIG_BATCH = 256  # the batch the goal is judged at; batch 1 is always timed too
GOAL = 0.7  # speedup / FLOP reduction at the largest batch


@dataclass
class Row:
    ratio: float
    widths: tuple[int, ...]
    params: int
    flops: int
    bytes: int
    ms: dict[int, float]  # best median ms per forward, by batch size
    model: nn.Module


def file_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``, written to memory."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def best_latencies(models: dict[str, nn.Module], timing: Timing) -> dict[str, dict[int, float]]:
    """Best (over ``timing.rounds``) median ms per forward of each model at each batch, timed alternately."""
    timed = time_models(models, timing, SAMPLE_SHAPE)
    return {k: {b: t.best_ms for b, t in per_b.items()} for k, per_b in timed.items()}


def choose_format(dense: nn.Module, small: nn.Module, ratio: float, timing: Timing) -> torch.memory_format:
    """``speed.pick_format`` of the dense CNN (one surgered model timed alongside for the report); print both."""
    fmt, ms = pick_format(dense, timing, {f"s{ratio:g}": small})
    big = max(timing.batches)
    print(f"memory format check (ms per forward at b{big}, best of alternating rounds):")
    for key, value in ms.items():
        print(f"  {key:<24} {value:>10.3f}")
    chosen = next(name for name, f in _FORMATS.items() if f is fmt)
    small_best = min(_FORMATS, key=lambda f: ms[f"s{ratio:g} {f}"])
    if small_best == chosen:
        why = f"faster at b{big} for both dense and s{ratio:g}"
    else:  # keep the dense model's best format, so a handicapped baseline cannot inflate the speedups
        why = f"faster at b{big} for dense; s{ratio:g} alone would prefer {small_best}"
    print(f"  -> using {chosen} for dense and surgered: {why}")
    return fmt


def _layer_inputs(model: nn.Module, batch: int) -> dict[str, torch.Tensor]:
    """The input each prunable layer sees in one forward of a random ``batch``, captured by pre-hooks."""
    inputs: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_pre_hook(lambda _m, args, name=name: inputs.__setitem__(name, args[0]))
        for name, module in prunable_layers(model)
    ]
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.randn(batch, *SAMPLE_SHAPE))
    finally:
        for hook in hooks:
            hook.remove()
    return inputs


def layer_breakdown(models: dict[str, nn.Module], batch: int, timing: Timing) -> dict[str, dict[str, float]]:
    """Per model: best median ms of each prunable layer alone at ``batch``, of the whole forward, and the rest.

    Each layer is timed on the input it sees in a forward; the models are alternated layer by layer over
    ``timing.rounds`` so contention hits them alike. ``"rest"`` = whole forward - sum of the layers (clamped at
    0, as noise can make the parts exceed the whole): pooling, ReLU, flatten and Python, which ``sparsity.flops``
    does not count. Timed at a quarter of ``timing.min_run_time``: it explains, it is not the headline number.
    """
    inputs = {key: _layer_inputs(model, batch) for key, model in models.items()}
    layers = {key: dict(prunable_layers(model)) for key, model in models.items()}
    # Layer by layer (then the whole forward), each model in turn: the mapping's order is the timing order.
    calls = {
        (key, name): model if name == "total" else layers[key][name]
        for name in [*layers[next(iter(models))], "total"]
        for key, model in models.items()
    }
    images = torch.randn(batch, *SAMPLE_SHAPE)
    quarter = replace(timing, min_run_time=timing.min_run_time / 4, batches=(batch,))
    timed = time_models(calls, quarter, inputs=lambda k, _: images if k[1] == "total" else inputs[k[0]][k[1]])
    out: dict[str, dict[str, float]] = {key: {} for key in models}
    for (key, name), per_b in timed.items():
        out[key][name] = per_b[batch].best_ms
    for per in out.values():
        per["rest"] = max(per["total"] - sum(v for k, v in per.items() if k != "total"), 0.0)
    return out


def explain(dense: nn.Module, dense_ms: dict[int, float], failed: list[Row], timing: Timing) -> None:
    """Why rows miss the goal: a table of each layer timed alone, dense vs every failing surgered model."""
    big = max(timing.batches)
    models = {"dense": dense, **{f"r={row.ratio:g}": row.model for row in failed}}
    times = layer_breakdown(models, big, timing)
    counts = {key: _layer_flops(model, SAMPLE_SHAPE) for key, model in models.items()}
    print(
        f"\nwhy: b{big} ms per forward, each layer timed alone on the input it sees (best of {timing.rounds} "
        "alternating rounds);\n/N = that layer's FLOP reduction; 'rest' = forward - sum of layers: pooling, ReLU, "
        "flatten and Python, which no FLOP count includes"
    )
    print(f"  {'':<28}" + "".join(f" {key:>14}" for key in models))
    for name in times["dense"]:
        if name in ("total", "rest"):
            continue
        cells = [f"{times['dense'][name]:.3f}"]
        cells += [f"{times[k][name]:.3f} /{counts['dense'][name] / counts[k][name]:.3g}" for k in list(models)[1:]]
        print(f"  {name:<28}" + "".join(f" {c:>14}" for c in cells))
    for name, label in (("rest", "rest (no FLOPs counted)"), ("total", "whole forward, timed here")):
        print(f"  {label:<28}" + "".join(f" {times[k][name]:>14.3f}" for k in models))
    dense_flops = flops(dense, SAMPLE_SHAPE)
    proportional = [dense_ms[big] * row.flops / dense_flops for row in failed]  # if time scaled with FLOPs
    print(f"  {'if time scaled with FLOPs':<28} {'':>14}" + "".join(f" {ms:>14.3f}" for ms in proportional))
    floors = [dense_ms[1]] + [row.ms[1] for row in failed]  # batch 1 is mostly fixed per-call cost
    print(f"  {'b1 latency (per-call floor)':<28}" + "".join(f" {ms:>14.3f}" for ms in floors))


def bench_model(label: str, base: nn.Module, ratios: tuple[float, ...], timing: Timing) -> tuple[int, int]:
    """Print one table for ``base``; return (rows meeting the goal, rows)."""
    dense = copy.deepcopy(base).cpu().eval()
    config = dense.config
    has_conv = any(isinstance(m, nn.Conv2d) for m in dense.modules())
    print(f"\n{label}: widths {config.widths}, {count_parameters(dense):,} parameters")
    fmt = torch.contiguous_format
    if has_conv:
        mid = ratios[len(ratios) // 2]
        fmt = choose_format(dense, shrink(dense, mid), mid, timing)
    else:
        print("memory format: n/a (no convolutions)")
    dense = dense.to(memory_format=fmt)
    smalls = {ratio: shrink(dense, ratio).eval().to(memory_format=fmt) for ratio in ratios}
    # One round times dense and every surgered model in turn, so drift from other jobs hits them all alike.
    ms = best_latencies({"dense": dense, **{f"{r:g}": m for r, m in smalls.items()}}, timing)
    rows = [
        Row(r, m.config.widths, count_parameters(m), flops(m, SAMPLE_SHAPE), file_bytes(m), ms[f"{r:g}"], m)
        for r, m in smalls.items()
    ]
    dense_flops = flops(dense, SAMPLE_SHAPE)

    big = max(timing.batches)
    print(
        f"{'ratio':>5} {'widths':<14} {'params':>8} {'bytes':>9} {'MFLOP/img':>9} {'FLOP red':>8}"
        f" {'b1 ms':>8} {'b1 x':>6} {f'b{big} ms':>9} {f'b{big} x':>7} {'x/FLOPred':>9}  goal>={GOAL:g}"
    )
    print(
        f"{0:>5.2f} {str(config.widths):<14} {count_parameters(dense):>8,} {file_bytes(dense):>9,}"
        f" {dense_flops / 1e6:>9.3f} {1:>8.2f} {ms['dense'][1]:>8.3f} {1:>6.2f} {ms['dense'][big]:>9.3f}"
        f" {1:>7.2f}  (dense)"
    )
    failed: list[Row] = []
    for row in rows:
        reduction = dense_flops / row.flops
        speedup = {b: ms["dense"][b] / row.ms[b] for b in timing.batches}
        efficiency = speedup[big] / reduction
        if efficiency < GOAL:
            failed.append(row)
        print(
            f"{row.ratio:>5.2f} {str(row.widths):<14} {row.params:>8,} {row.bytes:>9,} {row.flops / 1e6:>9.3f}"
            f" {reduction:>8.2f} {row.ms[1]:>8.3f} {speedup[1]:>6.2f} {row.ms[big]:>9.3f} {speedup[big]:>7.2f}"
            f" {efficiency:>9.2f}  {'PASS' if efficiency >= GOAL else 'FAIL'}"
        )
    if failed:
        explain(dense, ms["dense"], failed, timing)
    return len(rows) - len(failed), len(rows)


def _label_and_model(path: str) -> tuple[str, nn.Module]:
    # Imported here so that the random-init default needs nothing beyond models and the sparsity core.
    from mnist_pruning.train import _load_checkpoint

    model, _ = _load_checkpoint(path, device=torch.device("cpu"))
    return f"{model.config.arch} ({Path(path).name})", model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES), help="random init")
    parser.add_argument(
        "--checkpoint", action="append", default=[], help="trained checkpoint (repeatable); replaces --models"
    )
    parser.add_argument("--ratios", nargs="+", type=float, default=list(RATIOS), help=f"default {RATIOS}")
    parser.add_argument("--rounds", type=int, default=3, help="alternating dense/surgered rounds (default 3)")
    parser.add_argument("--min-run-time", type=float, default=0.2, help="seconds per Timer median (default 0.2)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch.get_num_threads())"
    )
    parser.add_argument(
        "--batch", type=int, default=BIG_BATCH, help=f"large batch the goal is judged at (default {BIG_BATCH})"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for random init (default 0)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a row FAILs the goal (default: report)")
    args = parser.parse_args(argv)
    try:
        ratios = tuple(_check_ratio(r) for r in args.ratios)
    except ValueError as e:
        parser.error(str(e))
    check_timing_args(parser, args, ("rounds", "batch"))

    timing = Timing(args.rounds, args.min_run_time, batches=(1, args.batch))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or previous_threads)  # time_models times with torch.get_num_threads()
    try:
        if args.checkpoint:
            models = [_label_and_model(p) for p in args.checkpoint]
        else:
            torch.manual_seed(args.seed)
            names = {"mlp": "mlp (LeNet-300-100, random init)", "cnn": "cnn (LeNet-5-Caffe, random init)"}
            models = [(names[m], build_model(m)) for m in args.models]
        print(
            f"torch {torch.__version__}; {torch.get_num_threads()} torch thread(s); latency = best of "
            f"{args.rounds} alternating torch.utils.benchmark.Timer medians ({args.min_run_time:g} s each); "
            f"x = dense ms / surgered ms; GOAL: (b{max(timing.batches)} x) / (FLOP reduction) >= {GOAL:g}"
        )
        met = total = 0
        for label, model in models:
            m, n = bench_model(label, model, ratios, timing)
            met, total = met + m, total + n
    finally:
        torch.set_num_threads(previous_threads)
    print(f"\n{met}/{total} rows meet the goal")
    if met < total:
        print(
            "FAIL rows are reported as measured, not fixed up. The 'why' tables show which costs did not shrink "
            "with the FLOPs:\nlayers that keep a fixed cost (e.g. a conv with 1 input channel, or layers too "
            "narrow to fill the vector units), the FLOP-free rest of the forward, and per-call overhead."
        )
    return 1 if args.strict and met < total else 0


if __name__ == "__main__":
    raise SystemExit(main())
