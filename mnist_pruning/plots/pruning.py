"""The pruning chapters' figures: training curves, weights, filters, N:M blocks, sensitivity, the frontier, and
the comparison of methods by accuracy, bytes and latency against sparsity."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ..compare import _baseline_accuracy, _dense_bytes, _pareto_front, _series_order
from ..references import _ANCHORS as ANCHORS
from ..references import _MODEL_TITLES as MODEL_TITLES
from .style import (
    _METHOD_COLORS,
    _MIN_FONT_PT,
    _WIDTH_IN,
    _anchor_marker,
    _dense_point,
    _draw_series,
    _error_axis,
    _finish,
    _legend_below,
    _log_mantissa,
    _method_color,
    _plain,
    _sparsity_axis,
    _styled,
    _with_error,
)

__all__ = [
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
]


@_styled
def learning_curves(histories: dict[str, list[dict]]) -> Figure:
    """Training loss and validation accuracy per epoch, one line per model (histories log the validation
    split; the test set is evaluated once, on the final model)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(_WIDTH_IN, 3.4))
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
    fig, axes = plt.subplots(rows, cols, figsize=(_WIDTH_IN, 2.4 * rows + 0.5), squeeze=False)
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
    fig, axes = plt.subplots(rows, cols, figsize=(_WIDTH_IN, rows * _WIDTH_IN / cols * 1.2 + 0.4), squeeze=False)
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
        ax.set_title(f"{i}{'' if i in keep else ' ✗'}", fontsize=_MIN_FONT_PT)
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
    shape, height = ((2, 1), 2 * (1.2 + rows * _WIDTH_IN / cols)) if stacked else ((1, 2), 1.4 + rows * 0.2)
    fig, axes = plt.subplots(*shape, figsize=(_WIDTH_IN, height))
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
    fig, ax = plt.subplots(figsize=(_WIDTH_IN, 4.2))
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
    fig, ax = plt.subplots(figsize=(_WIDTH_IN, 4.4))
    markers = iter("osD^v<>")
    for name, r in results.items():
        if hasattr(r, "rounds"):
            kept = [1 - row["sparsity"] for row in r.rounds]
            ax.plot(
                kept,
                [100 * row["accuracy"] for row in r.rounds],
                marker=".",
                color=_method_color(name),
                label=f"{name} (each round)",
            )
        else:
            ax.plot(
                [1 - r.sparsity],
                [100 * r.accuracy],
                marker=next(markers),
                ls="",
                ms=9,
                color=_method_color(name),
                label=name,
            )
    ax.axhline(100 * baseline_accuracy, color="k", ls="--", lw=1, label="dense baseline")
    ax.set(xscale="log", xlabel="fraction of weights kept (log)", ylabel="validation accuracy (%)", title=title)
    ax.invert_xaxis()
    ax.grid(alpha=0.3, which="both")
    _legend_below(fig, [ax])
    return fig


# ------------------------------------------------------------------------------------ comparison figures


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
    fig, axes = plt.subplots(2, 1, figsize=(_WIDTH_IN, 8.6))
    for ax in axes:
        _draw_series(ax, sub, order, "sparsity", "acc_finetuned", scale=100)
        ax.axhline(base, color="k", ls=":", lw=1.2, label=f"dense baseline ({base:.2f} %)")
        sources = list(dict.fromkeys(a.source for a in ANCHORS))
        for a in ANCHORS:
            if a.model == model:
                ax.plot(
                    a.sparsity,
                    100 * a.accuracy,
                    ls="none",
                    marker=_anchor_marker(a.source, sources),
                    ms=12,
                    color="gold",
                    markeredgecolor="k",
                    label=f"{a.source} ({100 * a.kept:.2g} % kept)",
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
    fig, ax = plt.subplots(figsize=(_WIDTH_IN, 5.0))
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
            color=_method_color("nm"),
            label="nm (N:M format)",
        )
    ax.axhline(_dense_bytes(df, model), color="k", ls=":", lw=1.2, label="dense file (zeros stored)")
    ax.set_yscale("log")
    ax.set_ylabel("file size (bytes, log scale)")
    _sparsity_axis(ax, sub["sparsity"])
    return _finish(fig, [ax], f"{MODEL_TITLES.get(model, model)}: file size vs sparsity")


@_styled
def latency_vs_sparsity(df: pd.DataFrame, model: str) -> Figure:
    """CPU forward latency at batch 1 and batch 256 against sparsity, the dense baseline as reference lines."""
    sub = df[df["model"] == model]
    order = _series_order(sub)
    fig, axes = plt.subplots(2, 1, figsize=(_WIDTH_IN, 8.0))
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
    fig, ax = plt.subplots(figsize=(_WIDTH_IN, 5.0))
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
    fig, axes = plt.subplots(rows, cols, figsize=(_WIDTH_IN, 2.9 * rows + 0.6), squeeze=False)
    styles = {
        "dense": {"color": _METHOD_COLORS["dense"], "ls": ":", "marker": "."},
        "converted": {"color": "#ff7f0e", "ls": "-", "marker": "o"},
        "sparse": {"color": "#8c564b", "ls": "--", "marker": "x"},
        "structured": {"color": _METHOD_COLORS["structured"], "ls": "-.", "marker": "s"},
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
