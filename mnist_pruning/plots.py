"""Every figure of the book, as functions (so tests reach them and notebooks stay short), and how they are saved.

Usage::

    import matplotlib.pyplot as plt
    from mnist_pruning import plots
    from mnist_pruning.results import load_results
    fig = plots.learning_curves({"mlp": history})
    fig = plots.accuracy_vs_sparsity(load_results(""), "mlp")
    plots.save_figure(fig, "results", "mlp_accuracy_vs_sparsity")   # PNG + SVG, atomically, only if changed
    plt.show()

Every figure function returns the ``matplotlib.figure.Figure`` it drew and never calls ``show``/``savefig``.
Figures are drawn for the book's content width (:data:`WIDTH_IN`, 7 in) with no text below 8 pt there, panels
stacked rather than squeezed, legends below the axes (off the data), and one colour per method in every figure
(:data:`METHOD_COLORS`).
The comparison figures read a typed results DataFrame (:func:`mnist_pruning.results.load_results`); a *series*
is one line (the method, plus the schedule when not one-shot), N:M rows are points labelled with their pattern.
"""

from __future__ import annotations

import functools
import io
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from .compare import _baseline_accuracy, _pareto_front, _series_order, dense_bytes
from .files import atomic_write
from .references import ANCHORS, MODEL_TITLES, SIZE_ANCHORS

__all__ = [
    "WIDTH_IN",
    "MIN_FONT_PT",
    "METHOD_COLORS",
    "method_color",
    "learning_curves",
    "weight_histograms",
    "conv_filters",
    "nm_block",
    "plot_sensitivity",
    "plot_frontier",
    "accuracy_vs_sparsity",
    "bytes_vs_sparsity",
    "latency_vs_sparsity",
    "accuracy_vs_bytes",
    "crossover_figure",
    "compression_breakdown",
    "compression_frontier",
    "save_figure",
    "same_svg",
]


WIDTH_IN = 7.0  # the book's content width: a wider figure is scaled down, and its text with it
MIN_FONT_PT = 8.0  # the smallest text at that width
# One colour per method, in every figure; schedules of a method differ by line style (_SCHEDULE_LINES).
METHOD_COLORS = {
    "l1": "#1f77b4",
    "global": "#2ca02c",
    "structured": "#d62728",
    "nm": "#9467bd",
    "dense": "#000000",
}
_SCHEDULE_LINES = {"oneshot": "-", "gradual": "--", "lottery": ":"}
_RC = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "xtick.labelsize": MIN_FONT_PT,
    "ytick.labelsize": MIN_FONT_PT,
    "legend.fontsize": MIN_FONT_PT,
    "figure.titlesize": 10,
    "figure.constrained_layout.use": True,  # room for the legends below the axes (loc="outside lower center")
}


def method_color(series: str) -> str:
    """The colour of a method's series ("global", "global (gradual)", "nm 2:4"): :data:`METHOD_COLORS` of its
    first word, grey for anything else."""
    return METHOD_COLORS.get(series.split(" ")[0], "0.45")


def _schedule_line(series: str) -> str:
    schedule = series.partition("(")[2].rstrip(")") or "oneshot"
    return _SCHEDULE_LINES.get(schedule, "-.")


def _styled(draw):
    """Draw under the book's style (:data:`_RC`); tick labels created later, at draw time, keep its size."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> Figure:
        with plt.rc_context(_RC):
            fig = draw(*args, **kwargs)
        for ax in fig.axes:
            ax.tick_params(which="both", labelsize=MIN_FONT_PT)
        return fig

    return wrapper


def _legend_below(fig: Figure, axes: Iterable[Axes], ncol: int = 2) -> None:
    """One legend for ``axes`` below them, outside the data; each label once."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if not label.startswith("_"):
                seen.setdefault(label, handle)
    if seen:
        longest = max(map(len, seen))
        cols = 1 if longest > 45 else min(ncol, len(seen))
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=cols, frameon=False)


@_styled
def learning_curves(histories: dict[str, list[dict]]) -> Figure:
    """Training loss and validation accuracy per epoch, one line per model (histories log the validation
    split; the test set is evaluated once, on the final model)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(WIDTH_IN, 3.4))
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label=f"{name} train")
        ax_loss.plot(epochs, [h["val_loss"] for h in history], marker="x", ls="--", label=f"{name} validation")
        ax_acc.plot(epochs, [100 * h["val_accuracy"] for h in history], marker="o", label=name)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    _legend_below(fig, (ax_loss, ax_acc), ncol=3)
    return fig


@_styled
def weight_histograms(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], bins: int = 80) -> Figure:
    """Per layer, the distribution of weight values before pruning and the non-zero ones after fine-tuning."""
    names = list(before)
    cols = min(2, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH_IN, 2.4 * rows + 0.5), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        b = before[name].detach().flatten().cpu().numpy()
        a = after[name].detach().flatten().cpu().numpy()
        lim = float(np.abs(b).max()) or 1.0
        edges = np.linspace(-lim, lim, bins + 1)
        ax.hist(b, bins=edges, alpha=0.5, label="dense")
        ax.hist(a[a != 0], bins=edges, alpha=0.7, label="kept (non-zero)")
        ax.set(title=f"{name}: {100 * (a == 0).mean():.1f} % zero", xlabel="weight", yscale="log")
    for row in axes:
        row[0].set_ylabel("count")
    _legend_below(fig, axes.flat)
    return fig


@_styled
def conv_filters(weight: torch.Tensor, kept: torch.Tensor | None = None, cols: int = 10) -> Figure:
    """First-layer filters as small images; removed ones (not in ``kept``) are greyed out and crossed."""
    w = weight.detach().cpu()[:, 0]
    n = w.shape[0]
    rows = (n + cols - 1) // cols
    keep = set(range(n)) if kept is None else {int(i) for i in kept}
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH_IN, rows * WIDTH_IN / cols * 1.2 + 0.4), squeeze=False)
    lim = float(w.abs().max()) or 1.0
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        ax.imshow(w[i].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, alpha=1.0 if i in keep else 0.25)
        if i not in keep:
            ax.plot([0, 4], [0, 4], color="k", lw=1)
            ax.plot([0, 4], [4, 0], color="k", lw=1)
        ax.set_title(f"{i}{'' if i in keep else ' ✗'}", fontsize=MIN_FONT_PT)
    fig.suptitle(f"conv1 filters: {len(keep)} kept, {n - len(keep)} removed (faded, crossed)")
    return fig


@_styled
def nm_block(before: torch.Tensor, after: torch.Tensor, m: int, rows: int = 8, groups: int = 6) -> Figure:
    """A corner of a weight matrix before and after N:M pruning, with the group boundaries drawn."""
    cols = groups * m
    b = before.detach().cpu().flatten(1)[:rows, :cols].numpy()
    a = after.detach().cpu().flatten(1)[:rows, :cols].numpy()
    lim = float(np.abs(b).max()) or 1.0
    stacked = cols > 24  # wide blocks get the full width each, one above the other
    shape, height = ((2, 1), 2 * (1.2 + rows * WIDTH_IN / cols)) if stacked else ((1, 2), 1.4 + rows * 0.2)
    fig, axes = plt.subplots(*shape, figsize=(WIDTH_IN, height))
    for ax, mat, title in ((axes[0], b, "dense"), (axes[1], a, "after N:M")):
        shown = np.where(mat == 0, np.nan, mat)
        ax.imshow(shown, cmap="RdBu_r", vmin=-lim, vmax=lim)
        for g in range(1, groups):
            ax.axvline(g * m - 0.5, color="k", lw=1.2)
        ax.set(title=title, xlabel=f"input index (groups of {m})", ylabel="output row")
    return fig


@_styled
def plot_sensitivity(df: pd.DataFrame) -> Figure:
    """Accuracy against the layer's pruning ratio, one line per layer (the output of :func:`sensitivity_scan`)."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.2))
    for layer, group in df.groupby("layer", sort=False):
        group = group.sort_values("ratio")
        n = int(group["params"].iloc[0]) if "params" in group else None
        label = f"{layer} ({n:,} weights)" if n is not None else str(layer)
        ax.plot(group["ratio"], 100 * group["accuracy"], marker="o", label=label)
    reference = float((df["accuracy"] + df["accuracy_drop"]).iloc[0])
    ax.axhline(100 * reference, color="grey", ls="--", lw=1, label="unpruned")
    split = df.attrs.get("split", "")
    ax.set(
        xlabel="fraction of the layer's weights pruned (that layer alone, no fine-tuning)",
        ylabel=f"{split} accuracy (%)".strip(),
        title="per-layer sensitivity",
    )
    ax.grid(alpha=0.3)
    _legend_below(fig, [ax])
    return fig


@_styled
def plot_frontier(results: dict, baseline_accuracy: float, title: str = "") -> Figure:
    """Validation accuracy vs sparsity: every lottery round as a curve, the other methods as points, the dense
    baseline (its validation accuracy) as a reference line. The x axis shows the fraction of weights kept on a
    log scale, where the frontier is."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.4))
    markers = iter("osD^v<>")
    for name, r in results.items():
        if hasattr(r, "rounds"):
            kept = [1 - row["sparsity"] for row in r.rounds]
            ax.plot(
                kept,
                [100 * row["accuracy"] for row in r.rounds],
                marker=".",
                color=method_color(name),
                label=f"{name} (each round)",
            )
        else:
            ax.plot(
                [1 - r.sparsity],
                [100 * r.accuracy],
                marker=next(markers),
                ls="",
                ms=9,
                color=method_color(name),
                label=name,
            )
    ax.axhline(100 * baseline_accuracy, color="k", ls="--", lw=1, label="dense baseline")
    ax.set(xscale="log", xlabel="fraction of weights kept (log)", ylabel="validation accuracy (%)", title=title)
    ax.invert_xaxis()
    ax.grid(alpha=0.3, which="both")
    _legend_below(fig, [ax])
    return fig


# ------------------------------------------------------------------------------------ comparison figures

_MARKERS = {"l1": "o", "global": "s", "structured": "D", "nm": "^"}
_SPARSITY_TICKS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def _sparsity_axis(ax: Axes, values: Iterable[float]) -> None:
    """A logit x-axis for sparsity: 90 %, 99 % and 99.9 % get equal room, which is where pruning gets hard."""
    vals = [v for v in values if np.isfinite(v) and 0 < v < 1]
    lo = min(vals, default=0.3)
    hi = max(vals, default=0.99)
    ax.set_xscale("logit")
    ax.set_xlim(max(1e-3, min(lo, 0.3) * 0.9), 1 - (1 - hi) * 0.6)
    ticks = [t for t in _SPARSITY_TICKS if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{100 * x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("sparsity (% of weights removed, logit scale)")


def _draw_series(
    ax: Axes, sub: pd.DataFrame, order: Sequence[str], x: str, y: str, scale: float = 1.0, suffix: str = ""
) -> None:
    """One line per series (sorted by x); N:M rows as separate points annotated with their pattern. Where the
    rows carry ``<y>_std`` (seed means, see ``results.aggregate``), each point gets a ±1 std error bar."""
    for series in order:
        rows = sub[(sub["series"] == series) & sub[x].notna() & sub[y].notna()].sort_values(x)
        if rows.empty:
            continue
        method = rows["method"].iloc[0]
        color = method_color(series)
        label = f"{series}{suffix}"
        if f"{y}_std" in rows and rows[f"{y}_std"].notna().any():
            ax.errorbar(
                rows[x],
                scale * rows[y],
                yerr=scale * rows[f"{y}_std"].fillna(0),
                ls="none",
                color=color,
                capsize=3,
            )
        if method == "nm":
            ax.plot(rows[x], scale * rows[y], ls="none", marker="^", ms=8, color=color, label=label)
            # Neighbouring patterns (3:10 and 2:8, 1:8 and 1:10) sit close: alternate the labels above / below.
            for i, (xv, yv, pattern) in enumerate(zip(rows[x], scale * rows[y], rows["pattern"], strict=True)):
                offset = (4, 5) if i % 2 == 0 else (4, -11)
                ax.annotate(
                    pattern, (xv, yv), textcoords="offset points", xytext=offset, fontsize=MIN_FONT_PT, color=color
                )
        else:
            ls = _schedule_line(series)
            hollow = {} if ls == "-" else {"mfc": "white"}  # other schedules: hollow markers on a broken line
            ax.plot(
                rows[x],
                scale * rows[y],
                ls=ls,
                marker="P"
                if ls == _SCHEDULE_LINES["lottery"]
                else _MARKERS.get(method, "o"),  # lone points differ
                color=color,
                label=label,
                **hollow,
            )


def _finish(fig: Figure, axes: Iterable[Axes], title: str, ncol: int = 2) -> Figure:
    """Grid, the legend below the axes, the title."""
    axes = list(axes)
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    _legend_below(fig, axes, ncol)
    fig.suptitle(title)
    return fig


def _with_error(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with ``error_pct`` (test error after fine-tuning, %) and, for seed means, its std."""
    rows = rows.assign(error_pct=100 * (1 - rows["acc_finetuned"]))
    if "acc_finetuned_std" in rows:
        rows = rows.assign(error_pct_std=100 * rows["acc_finetuned_std"])
    return rows


def _dense_point(ax: Axes, df: pd.DataFrame, model: str) -> None:
    """The dense baseline on an error-vs-bytes axis: its file's bytes, its mean test error."""
    ax.plot(
        dense_bytes(df, model),
        100 * (1 - _baseline_accuracy(df, model)),
        marker="X",
        ms=10,
        color="k",
        ls="none",
        label="dense baseline",
    )


@_styled
def accuracy_vs_sparsity(df: pd.DataFrame, model: str, zoom_pp: float = 2.0) -> Figure:
    """Test accuracy after fine-tuning against measured sparsity, one line per method and one point per N:M
    pattern; the dense baseline as a horizontal line and the published anchors (Han et al. 2015) as stars.

    Two panels, one above the other: the full range, and the same data zoomed to ``zoom_pp`` percentage points
    below the baseline, where the differences that matter (0.1-1 pp) are visible.
    """
    sub = df[df["model"] == model]
    order = _series_order(sub)
    base = 100 * _baseline_accuracy(df, model)
    fig, axes = plt.subplots(2, 1, figsize=(WIDTH_IN, 8.6))
    for ax in axes:
        _draw_series(ax, sub, order, "sparsity", "acc_finetuned", scale=100)
        ax.axhline(base, color="k", ls=":", lw=1.2, label=f"dense baseline ({base:.2f} %)")
        for a in ANCHORS:
            if a.model == model:
                ax.plot(
                    a.sparsity,
                    100 * a.accuracy,
                    ls="none",
                    marker="*",
                    ms=14,
                    color="gold",
                    markeredgecolor="k",
                    label=f"{a.source} ({100 * a.kept:g} % kept)",
                )
        _sparsity_axis(ax, [*sub["sparsity"], *(a.sparsity for a in ANCHORS if a.model == model)])
        ax.set_ylabel("test accuracy after\nfine-tuning (%, mean ± std)")
    axes[0].set_title("full range")
    anchors = [100 * a.accuracy for a in ANCHORS if a.model == model]
    # Capped at zoom_pp above the baseline: an anchor far above a weak (smoke) baseline must not undo the zoom.
    top = min(max(base, *(100 * sub["acc_finetuned"].dropna()), *anchors), base + zoom_pp)
    axes[1].set_ylim(base - zoom_pp, top + 0.15 * zoom_pp)
    axes[1].set_title(f"zoom: within {zoom_pp:g} pp of the baseline")
    return _finish(fig, axes, f"{MODEL_TITLES.get(model, model)}: accuracy vs sparsity")


@_styled
def bytes_vs_sparsity(df: pd.DataFrame, model: str) -> Figure:
    """Bytes of the compact file against sparsity (log y), with the dense file as reference; N:M rows also
    show their N:M-format size (hollow triangles). Structured rows are smaller dense models."""
    sub = df[df["model"] == model]
    order = _series_order(sub)
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 5.0))
    _draw_series(ax, sub, order, "sparsity", "size_compact_bytes", suffix=" (compact file)")
    nm = sub[(sub["method"] == "nm") & sub["size_nm_bytes"].notna()]
    if not nm.empty:
        ax.plot(
            nm["sparsity"],
            nm["size_nm_bytes"],
            ls="none",
            marker="^",
            ms=8,
            mfc="none",
            color=method_color("nm"),
            label="nm (N:M format)",
        )
    ax.axhline(dense_bytes(df, model), color="k", ls=":", lw=1.2, label="dense file (zeros stored)")
    ax.set_yscale("log")
    ax.set_ylabel("file size (bytes, log scale)")
    _sparsity_axis(ax, sub["sparsity"])
    return _finish(fig, [ax], f"{MODEL_TITLES.get(model, model)}: file size vs sparsity")


@_styled
def latency_vs_sparsity(df: pd.DataFrame, model: str) -> Figure:
    """CPU forward latency at batch 1 and batch 256 against sparsity, the dense baseline as reference lines."""
    sub = df[df["model"] == model]
    order = _series_order(sub)
    fig, axes = plt.subplots(2, 1, figsize=(WIDTH_IN, 8.0))
    for ax, batch in zip(axes, (1, 256), strict=True):
        col, base_col = f"latency_b{batch}_ms", f"baseline_latency_b{batch}_ms"
        if sub[col].notna().any():
            _draw_series(ax, sub, order, "sparsity", col)
            ax.axhline(sub[base_col].median(), color="k", ls=":", lw=1.2, label="dense baseline")
            ax.set_ylim(bottom=0)
        else:
            ax.text(0.5, 0.5, "latency not measured", ha="center", va="center", transform=ax.transAxes)
        _sparsity_axis(ax, sub["sparsity"])
        ax.set(ylabel="latency (ms per batch, median)", title=f"batch {batch}")
    return _finish(fig, axes, f"{MODEL_TITLES.get(model, model)}: CPU latency vs sparsity")


@_styled
def accuracy_vs_bytes(df: pd.DataFrame, model: str) -> Figure:
    """Test error after fine-tuning (%, log y) against compact-file bytes (log x): the trade-off, with the top
    accuracy points (where the methods differ) spread out. The grey step line is the frontier over all methods;
    the black cross is the dense baseline and its file."""
    sub = _with_error(df[df["model"] == model])
    order = _series_order(sub)
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 5.0))
    _draw_series(ax, sub, order, "size_compact_bytes", "error_pct")
    front = _pareto_front(sub)
    ax.step(
        front["size_compact_bytes"],
        100 * (1 - front["acc_finetuned"]),
        where="post",
        color="grey",
        lw=3,
        alpha=0.35,
        zorder=0,
        label="frontier (all methods)",
    )
    _dense_point(ax, df, model)
    ax.set_xscale("log")
    _error_axis(ax)
    ax.set(xlabel="compact file size (bytes, log scale)", ylabel="test error after fine-tuning (%, log scale)")
    return _finish(fig, [ax], f"{MODEL_TITLES.get(model, model)}: error vs file size")


def _error_axis(ax: Axes) -> None:
    """A log y-axis for test error in %, labelled with plain numbers (0.5, 1, 2, 5, ...)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: _plain(v) if _log_mantissa(v) in (2, 5) else ""))


def _log_mantissa(v: float) -> int:
    return round(v / 10 ** math.floor(math.log10(v))) if v > 0 else 0


def _plain(v: float, _pos: int | None = None) -> str:
    return f"{v:g}"


@_styled
def crossover_figure(df: pd.DataFrame) -> Figure:
    """Latency against the fraction of weights kept, per model (rows) and batch size (columns): dense, the
    converted model (mnist_pruning.sparsity.inference), every layer on the sparse kernel, and the structured
    model of as many parameters. ``df`` is :func:`mnist_pruning.speed.crossover`'s table (columns model, batch,
    variant, density, ms)."""
    models = [m for m in MODEL_TITLES if m in set(df.model)]
    batches = sorted(set(df.batch))
    cols = min(2, len(batches))  # at most two panels side by side at the book's width
    panels = [(model, batch) for model in models for batch in batches]
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH_IN, 2.9 * rows + 0.6), squeeze=False)
    styles = {
        "dense": {"color": METHOD_COLORS["dense"], "ls": ":", "marker": "."},
        "converted": {"color": "#ff7f0e", "ls": "-", "marker": "o"},
        "sparse": {"color": "#8c564b", "ls": "--", "marker": "x"},
        "structured": {"color": METHOD_COLORS["structured"], "ls": "-.", "marker": "s"},
    }
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (model, batch) in zip(axes.flat, panels, strict=False):
        sub = df[(df.model == model) & (df.batch == batch)].sort_values("density")
        for variant, style in styles.items():
            line = sub[sub.variant == variant]
            if not line.empty:  # a map may time only some variants (chapter 04: no structured model)
                ax.plot(line.density, line.ms, label=variant, lw=1.5, ms=5, **style)
        ax.set(xscale="log", yscale="log", xlabel="fraction of weights kept", ylabel="ms per forward")
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers (0.05, 2), not powers of ten
            axis.set_major_formatter(FuncFormatter(_plain))
            axis.set_minor_formatter(
                FuncFormatter(lambda v, pos: _plain(v, pos) if _log_mantissa(v) in (2, 3, 5) else "")
            )
        ax.set_title(f"{MODEL_TITLES.get(model, model)}, batch {batch}")
        ax.invert_xaxis()  # more pruning to the right
        ax.grid(alpha=0.3, which="both")
    _legend_below(fig, axes.flat, ncol=4)
    fig.suptitle("median ms per forward pass")
    return fig


# ------------------------------------------------------------------------------------------------- saving


_PARTS = (
    ("bytes_values", "values (cluster indices)"),
    ("bytes_positions", "positions"),
    ("bytes_codebooks", "codebooks"),
    ("bytes_biases", "biases"),
    ("bytes_header", "header + CRC"),
)


@_styled
def compression_breakdown(comp: pd.DataFrame, model: str) -> Figure:
    """Where the bytes of the coded files go: one stacked bar per (sparsity, bits) row of ``model`` in the
    compression results (:func:`mnist_pruning.results.load_compression_results`), with each file's information
    limit as a black tick and its test error (decoded model) above the bar."""
    sub = comp[comp["model"] == model].sort_values(
        ["sparsity_target", "size_coded_bytes"], ascending=[True, False]
    )
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 5.0))
    if sub.empty:
        ax.text(0.5, 0.5, "no compression rows", ha="center", va="center", transform=ax.transAxes)
        return _finish(fig, [ax], f"{MODEL_TITLES.get(model, model)}: where the bytes go")
    x = np.arange(len(sub))
    bottom = np.zeros(len(sub))
    for i, (col, label) in enumerate(_PARTS):
        values = sub[col].to_numpy(dtype=float)
        ax.bar(x, values / 1000, bottom=bottom / 1000, color=f"C{i}", label=label, width=0.7)
        bottom += values
    ax.plot(
        x, sub["limit_bytes"] / 1000, ls="none", marker="_", ms=22, mew=2, color="k", label="information limit"
    )
    for xi, total, acc in zip(x, bottom, sub["acc_test"], strict=True):
        ax.annotate(
            f"{100 * (1 - acc):.2f} %",
            (xi, total / 1000),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            fontsize=MIN_FONT_PT,
            rotation=90 if len(sub) > 10 else 0,  # more bars than room for a level label each
        )
    labels = [f"{100 * s:g} %\n{_short_bits(b)}" for s, b in zip(sub["sparsity_target"], sub["bits"], strict=True)]
    ax.set_xticks(x, labels, fontsize=MIN_FONT_PT)
    ax.set(ylabel="coded file (kB)", xlabel="sparsity / bits per index (conv, fc); test error above each bar")
    ax.margins(y=0.12)  # room for the error labels above the tallest bar
    return _finish(fig, [ax], f"{MODEL_TITLES.get(model, model)}: where the bytes go")


def _short_bits(bits: str) -> str:
    """``conv1=8;conv2=8;fc1=5;fc2=5`` -> ``8/5``; ``fc1=5;fc2=5;fc3=5`` -> ``5``: distinct values in order."""
    out: list[str] = []
    for part in bits.split(";"):
        value = part.partition("=")[2]
        if value not in out:
            out.append(value)
    return "/".join(out)


@_styled
def compression_frontier(df: pd.DataFrame, comp: pd.DataFrame, model: str) -> Figure:
    """Test error (%, log y) against file bytes (log x): every pruning method of the main CSVs with its compact
    file, lzma of the compact files, the coded files of the compression rows each with its information limit
    beside it (hollow marker, joined by a thin line; error bars: +-1 std over seeds), the dense baseline, and the
    published references (:data:`mnist_pruning.references.SIZE_ANCHORS`; hollow stars are parameter-count
    ratios, not bytes)."""
    sub = _with_error(df[df["model"] == model]) if len(df) else df
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 6.0))
    if len(sub):
        order = _series_order(sub)
        _draw_series(ax, sub, order, "size_compact_bytes", "error_pct", suffix=" (compact file)")
        _dense_point(ax, df, model)
    rows = comp[comp["model"] == model] if len(comp) else comp
    if len(rows):
        err = 100 * (1 - rows["acc_pruned"])
        ax.plot(
            rows["compact_lzma_bytes"],
            err,
            ls="none",
            marker="v",
            color="0.5",
            ms=6,
            label="lzma of the compact file (pruned)",
        )
        for i, (s, group) in enumerate(rows.groupby("sparsity_target")):
            color = f"C{(i + 6) % 10}"
            g = group.sort_values("size_coded_bytes")
            e = 100 * (1 - g["acc_test"])
            ax.plot(
                g["size_coded_bytes"],
                e,
                marker="o",
                color=color,
                ls="-",
                label=f"coded: {100 * s:g} % sparse, bits varied",
            )
            if "acc_test_std" in g:  # seed means (load_compression_results) carry their spread: +-1 std
                yerr = 100 * g["acc_test_std"].fillna(0)
                ax.errorbar(g["size_coded_bytes"], e, yerr=yerr, fmt="none", ecolor=color, capsize=2)
            ax.plot(g["limit_bytes"], e, marker="o", mfc="none", color=color, ls="none")
            for xl, xc, ye in zip(g["limit_bytes"], g["size_coded_bytes"], e, strict=True):
                ax.plot([xl, xc], [ye, ye], color=color, lw=0.8, alpha=0.6)
        ax.plot([], [], marker="o", mfc="none", color="0.3", ls="none", label="information limit of that file")
    for anchor in (a for a in SIZE_ANCHORS if a.model == model):
        ax.plot(
            anchor.bytes,
            100 * anchor.error,
            marker="*",
            ms=14,
            ls="none",
            color="crimson" if anchor.measured_in_bytes else "none",
            mec="crimson",
            label=f"{anchor.source}: {anchor.note}",
        )
    ax.set_xscale("log")
    _error_axis(ax)
    ax.set(xlabel="file size (bytes, log scale)", ylabel="test error (%, log scale)")
    return _finish(fig, [ax], f"{MODEL_TITLES.get(model, model)}: test error vs file bytes")


# Two SVGs of one figure drawn on different CPUs differ in the last printed digit of some coordinates (and in
# the clip-path / marker ids matplotlib hashes from them); below this many SVG units (1/72 in) nobody sees it.
_SVG_TOLERANCE = 1e-3
_SVG_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_SVG_HASH_ID = re.compile(rb"\b([a-z])[0-9a-f]{10}\b")  # matplotlib's _make_id: a letter + 10 hex digits


def _svg_content(svg: bytes) -> tuple[bytes, np.ndarray]:
    """(the SVG with hashed ids renamed in order of appearance and every number replaced by ``#``, its numbers)."""
    ids: dict[bytes, bytes] = {}
    svg = _SVG_HASH_ID.sub(lambda m: ids.setdefault(m.group(0), b"%s_%d" % (m.group(1), len(ids))), svg)
    return _SVG_NUMBER.sub(b"#", svg), np.array([float(x) for x in _SVG_NUMBER.findall(svg)])


def same_svg(a: bytes, b: bytes, tolerance: float = _SVG_TOLERANCE) -> bool:
    """Whether two SVGs draw the same figure: identical but for numbers within ``tolerance`` of each other and
    the ids matplotlib derives from them.

    Example::

        >>> same_svg(b'<path d="M 34.994813 0"/>', b'<path d="M 34.994812 0"/>')
        True
    """
    (text_a, num_a), (text_b, num_b) = _svg_content(a), _svg_content(b)
    return text_a == text_b and num_a.shape == num_b.shape and bool(np.all(np.abs(num_a - num_b) <= tolerance))


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's header; None if ``data`` is no PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def save_figure(fig: Figure, results_dir: str | os.PathLike, name: str, dpi: int = 150) -> tuple[Path, Path]:
    """Write ``fig`` as ``<results_dir>/<name>.png`` and ``.svg``, each atomically, but only when its content
    changed; returns both paths.

    Rerunning a chapter on the same CSVs must leave a checkout clean on any CPU, where the last digit of a float
    may differ: the SVG is rewritten only when :func:`same_svg` says it draws something else, and the PNG (whose
    antialiased pixels follow the same coordinates) only with it, or when it is missing or of another size.

    Example::

        >>> png, svg = save_figure(fig, "results", "mlp_accuracy_vs_sparsity")  # doctest: +SKIP
    """
    if not name or Path(name).name != name:
        raise ValueError(f"figure name must be a plain file stem, got {name!r}")
    png_path, svg_path = (Path(results_dir) / f"{name}.{fmt}" for fmt in ("png", "svg"))
    new: dict[str, bytes] = {}
    for fmt in ("png", "svg"):
        # No date, and a fixed salt for the SVG's clip-path ids (random by default): rerunning on the same
        # inputs writes the same bytes.
        metadata = {"Date": None} if fmt == "svg" else None
        buffer = io.BytesIO()
        with plt.rc_context({"svg.hashsalt": "mnist-pruning"}):
            fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)
        new[fmt] = buffer.getvalue()
    old_svg = svg_path.read_bytes() if svg_path.is_file() else b""
    old_png = png_path.read_bytes() if png_path.is_file() else b""
    svg_changed = not same_svg(old_svg, new["svg"])
    png_changed = svg_changed or _png_size(old_png) != _png_size(new["png"])
    for path, data, changed in ((png_path, new["png"], png_changed), (svg_path, new["svg"], svg_changed)):
        if changed:
            with atomic_write(path) as tmp:
                tmp.write_bytes(data)
    return png_path, svg_path
