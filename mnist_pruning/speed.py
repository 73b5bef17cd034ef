"""Do pruned models run faster on this CPU? The crossover map: latency against the fraction of weights kept, for
the dense model, the pruned model on sparse kernels and the structured model of as many parameters.

Usage::

    from mnist_pruning import speed
    from mnist_pruning.models import build_model

    table, plans = speed.crossover(build_model("mlp"), "mlp", (1.0, 0.1, 0.01))   # global magnitude pruning
    table, plans = speed.crossover(model, "cnn", ("2:4", "1:8"), variants=("dense", "converted", "sparse"))
    speed._where_each_wins(table)       # one line per model and batch size, as bench/sparse_speed.py prints
    speed.crossover_text(table)         # the same, as sentences for a chapter
    plots.crossover_figure(table)

``bench/sparse_speed.py`` (the benchmark, with the goals of issue 13 and ONNX) and chapters 02 and 04 measure
with :func:`crossover`, so the benchmark and the book share one definition. For every point a copy of the model
is pruned (a float: the fraction of weights kept, by global magnitude; a string ``"n:m"``: that N:M pattern) and
baked in, then every variant is timed at every batch size (median ms per forward,
:func:`~mnist_pruning.sparsity.measure.time_models`; best of ``rounds`` rounds that alternate the variants, so
drift from other jobs on the machine hits them all alike). :class:`Timing` is
:class:`mnist_pruning.sparsity.measure.Timing`, re-exported here:

- ``dense``: the unpruned model, the baseline every ``speedup`` is taken against, timed in the same rounds;
- ``converted``: :func:`~mnist_pruning.sparsity.to_sparse_inference`, each layer sparse or dense as measured;
- ``sparse``: every layer with zeros forced onto the CSR kernel (the sparse curve of the map);
- ``structured``: :func:`~mnist_pruning.sparsity.shrink` at the ratio whose surgered model has about as many
  parameters as the pruned one has non-zeros.

A model with a Conv2d is timed in the memory format that is faster for the *dense* model (channels_last or
contiguous), the same for every variant: otherwise the format, not the sparsity, would decide the comparison.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pandas as pd
import torch
from torch import nn

from . import sparsity as sp
from .checks import _check_choices
from .models import SAMPLE_SHAPE
from .references import _MODEL_TITLES
from .sparsity.measure import Timing, time_models
from .sparsity.nm import parse_pattern

__all__ = [
    "Timing",
    "pick_format",
    "pruned_copy",
    "crossover",
    "crossover_text",
]

_VARIANTS = ("dense", "converted", "sparse", "structured")
_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
_WIN = 1.1  # "sparse kernels win": the converted model runs sparse layers and is at least 10 % faster than dense


def pick_format(
    dense: nn.Module, timing: Timing, others: Mapping[str, nn.Module] | None = None
) -> tuple[torch.memory_format, dict[str, float]]:
    """The memory format in which ``dense`` is faster at the largest batch of ``timing``, and the ms there of
    ``dense`` and of each of ``others`` (timed alongside, for the report only) in each format, keyed
    ``"<name> <format>"`` (``dense`` is ``"dense"``). Empty for a model without Conv2d layers: contiguous, untimed.
    The check is quick: one batch size, half of ``timing.min_run_time`` per median."""
    if not any(isinstance(m, nn.Conv2d) for m in dense.modules()):
        return torch.contiguous_format, {}
    big = max(timing.batches)
    models = {
        f"{name} {fmt_name}": copy.deepcopy(model).to(memory_format=fmt)
        for fmt_name, fmt in _FORMATS.items()
        for name, model in {"dense": dense, **(others or {})}.items()
    }
    quick = replace(timing, min_run_time=timing.min_run_time / 2, batches=(big,))
    ms = {name: per_b[big].best_ms for name, per_b in time_models(models, quick, SAMPLE_SHAPE).items()}
    return _FORMATS[min(_FORMATS, key=lambda f: ms[f"dense {f}"])], ms


def _density(point: float | str) -> float:
    if isinstance(point, str):
        n, m = parse_pattern(point)
        return n / m
    if isinstance(point, bool) or not isinstance(point, (int, float)) or not 0 < point <= 1:
        raise ValueError(f"a point must be a kept fraction in (0, 1] or an 'n:m' pattern, got {point!r}")
    return float(point)


def pruned_copy(dense: nn.Module, point: float | str, fmt: torch.memory_format) -> nn.Module:
    """A baked-in copy of ``dense`` pruned to ``point`` (a kept fraction by global magnitude, or an ``"n:m"``
    pattern), in eval mode and memory format ``fmt``."""
    model = copy.deepcopy(dense).to(memory_format=torch.contiguous_format)  # prune flattens the weights
    if isinstance(point, str):
        sp.sparsify_(model, "nm", pattern=point)
        sp.bake_in(model)
    elif _density(point) < 1:
        sp.sparsify_(model, "global", 1 - point)
        sp.bake_in(model)
    return model.eval().to(memory_format=fmt)


def _structured_like(dense: nn.Module, target: int) -> tuple[float, nn.Module]:
    """``(ratio, shrink(dense, ratio))`` whose parameter count is nearest ``target`` (parameters fall as the
    ratio grows, so a bisection over [0, 0.99] finds it)."""
    low, high = 0.0, 0.99
    best = (0.0, dense)
    for _ in range(12):
        mid = (low + high) / 2
        small = sp.shrink(dense, mid)
        if abs(sp.count_parameters(small) - target) < abs(sp.count_parameters(best[1]) - target):
            best = (mid, small)
        low, high = (mid, high) if sp.count_parameters(small) > target else (low, mid)
    return best[0], best[1].eval()


def crossover(
    model: nn.Module,
    arch: str,
    points: Sequence[float | str],
    timing: Timing | None = None,
    variants: Sequence[str] = _VARIANTS,
    memory_format: torch.memory_format | None = None,
) -> tuple[pd.DataFrame, dict[float | str, list[sp.inference._LayerPlan]]]:
    """Time ``variants`` of ``model`` (an unpruned float32 CPU model of family ``arch``) at every point and batch
    size with ``timing`` (None: :class:`Timing` defaults); see the module docstring. ``memory_format`` None picks
    the dense model's faster one (:func:`pick_format`).

    Returns the long-format table, one row per point x batch x variant: ``model``, ``point`` (as given),
    ``pattern`` (``"n:m"`` or ""), ``density`` (fraction of weights kept), ``nonzero`` (non-zero parameters of
    the pruned model), ``batch``, ``variant``, ``ms``, ``speedup`` (dense ms / this ms), ``structured_ratio``,
    ``params`` (the weights and biases the variant computes with), ``sparse_layers`` (converted only: the layers
    it runs sparse at that batch, space-separated, "-" for none), ``memory_format``, ``threads``; and each
    point's :class:`~mnist_pruning.sparsity.inference._LayerPlan` list (the converted model's decisions).
    """
    variants = _check_choices(tuple(variants), _VARIANTS, "variant")
    if "dense" not in variants:
        raise ValueError(f"variants must include 'dense' (every speedup is taken against it), got {variants!r}")
    if not points:
        raise ValueError(f"points must name at least one kept fraction or N:M pattern, got {points!r}")
    densities = {point: _density(point) for point in points}
    timing = Timing() if timing is None else timing
    base = copy.deepcopy(model).cpu().eval()
    fmt = pick_format(base, timing)[0] if memory_format is None else memory_format
    dense = copy.deepcopy(base).to(memory_format=fmt)
    rows, plans = [], {}
    for point in points:
        pruned = pruned_copy(base, point, fmt)
        nonzero = sp.count_nonzero_parameters(pruned)
        candidates: dict[str, nn.Module] = {"dense": dense}
        computes_with = {"dense": sp.count_parameters(dense)}
        ratio = None
        if "converted" in variants:
            plans[point] = sp.plan_sparse_inference(
                pruned,
                SAMPLE_SHAPE,
                timing.batches,
                min_run_time=timing.plan_min_run_time,
                rounds=timing.rounds,
            )
            candidates["converted"] = sp.apply_sparse_plan(pruned, plans[point])
        if "sparse" in variants:
            candidates["sparse"] = sp.to_sparse_inference(pruned, SAMPLE_SHAPE, timing.batches, force="sparse")
        if "structured" in variants:
            ratio, small = _structured_like(base, nonzero)
            candidates["structured"] = small.to(memory_format=fmt)
            computes_with["structured"] = sp.count_parameters(small)
        timed = time_models(candidates, timing, SAMPLE_SHAPE)
        ms = {k: {b: t.best_ms for b, t in per_b.items()} for k, per_b in timed.items()}
        for b in timing.batches:
            layers = " ".join(row.layer for row in plans[point] if row.sparse[b]) if point in plans else ""
            for variant in candidates:
                rows.append(
                    {
                        "model": arch,
                        "point": point,
                        "pattern": point if isinstance(point, str) else "",
                        "density": densities[point],
                        "nonzero": nonzero,
                        "batch": b,
                        "variant": variant,
                        "ms": ms[variant][b],
                        "speedup": ms["dense"][b] / ms[variant][b],
                        "structured_ratio": ratio if variant == "structured" else None,
                        "params": computes_with.get(variant, nonzero),
                        "sparse_layers": (layers or "-") if variant == "converted" else None,
                        "memory_format": "channels_last" if fmt is torch.channels_last else "contiguous",
                        "threads": torch.get_num_threads(),
                    }
                )
    return pd.DataFrame(rows), plans


def _wins(df: pd.DataFrame):
    """Per model and batch (in the table's order): which variant stands for the sparse kernels (``converted``
    when timed, else ``sparse``), the kept fractions where it runs sparse layers and is >= _WIN x faster than
    dense with its best speed-up, and those where the structured model is the fastest variant (None when the
    structured model was not timed)."""
    for (model, batch), sub in df[df.density < 1].groupby(["model", "batch"], sort=False):
        ms = sub.pivot(index="density", columns="variant", values="ms").sort_index(ascending=False)
        kind = "converted" if "converted" in ms else "sparse"
        timed = sub[sub.variant == kind]
        # The converted model runs sparse only where that measured faster; where no layer did it is the dense
        # model again (a fallback), and its ratio to dense only shows the timing noise.
        runs_sparse = set(timed[timed.sparse_layers != "-"].density) if kind == "converted" else set(ms.index)
        speedup = timed.set_index("density").speedup
        sparse_wins = [d for d in ms.index if d in runs_sparse and speedup[d] >= _WIN]
        best = max(sparse_wins, key=speedup.__getitem__) if sparse_wins else None
        structured_best = (
            [d for d in ms.index if ms.loc[d, "structured"] <= ms.loc[d].min()] if "structured" in ms else None
        )
        best_speedup = (best, speedup[best] if best is not None else None)
        yield model, batch, kind, sparse_wins, best_speedup, structured_best


def _where_each_wins(df: pd.DataFrame) -> list[str]:
    """The crossover map in one line per model and batch: the kept fractions where the sparse kernels (the
    converted model running sparse layers, or the forced ``sparse`` variant when no converted one was timed)
    beat dense by >= 1.1x, and where the structured model of as many parameters is the fastest (when timed)."""
    lines = []
    for model, batch, kind, sparse_wins, _, structured_best in _wins(df):
        kept = ", ".join(f"{d:g}" for d in sparse_wins) or "none"
        line = f"  {model} b{batch}: {kind} >= {_WIN:g}x dense at kept {kept}"
        if structured_best is not None:
            line += "; structured fastest at kept " + (", ".join(f"{d:g}" for d in structured_best) or "none")
        lines.append(line)
    return lines


def _kept_list(densities: list[float]) -> str:
    cells = [f"{100 * d:g} %" for d in densities]
    return cells[0] if len(cells) == 1 else ", ".join(cells[:-1]) + " and " + cells[-1]


def crossover_text(df: pd.DataFrame) -> str:
    """:func:`_where_each_wins` as sentences (Markdown, one paragraph per model), computed from the measured table
    so that a chapter's text says what this run measured."""
    paragraphs: dict[str, list[str]] = {}
    for model, batch, kind, sparse_wins, (best, speedup), structured_best in _wins(df):
        if sparse_wins:
            text = (
                f"At batch {batch} the sparse kernels beat dense by at least {_WIN:g}x with "
                f"{_kept_list(sparse_wins)} of the weights kept (best {speedup:.1f}x, at {100 * best:g} %)"
            )
        else:
            text = f"At batch {batch} the sparse kernels never beat dense by {_WIN:g}x at the densities measured"
            if kind == "converted":
                text += " (the converted model falls back to dense kernels where they lose)"
        if structured_best:
            text += f"; the structured model of as many parameters is the fastest at {_kept_list(structured_best)}"
        elif structured_best is not None:
            text += "; the structured model of as many parameters is never the fastest"
        paragraphs.setdefault(model, []).append(text + ".")
    return "\n\n".join(
        f"**{_MODEL_TITLES.get(model, model)}**. " + " ".join(parts) for model, parts in paragraphs.items()
    )
