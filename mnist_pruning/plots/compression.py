"""The compression chapter's figures: where a coded file's bytes go, and test error against file bytes."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..compare import _series_order
from ..references import _MODEL_TITLES as MODEL_TITLES
from ..references import _SIZE_ANCHORS as SIZE_ANCHORS
from . import style

__all__ = ["compression_breakdown", "compression_frontier"]


_PARTS = (
    ("bytes_values", "values (cluster indices)"),
    ("bytes_positions", "positions"),
    ("bytes_codebooks", "codebooks"),
    ("bytes_biases", "biases"),
    ("bytes_header", "header + CRC"),
)


@style._styled
def compression_breakdown(comp: pd.DataFrame, model: str) -> Figure:
    """Where the bytes of the coded files go: one stacked bar per (sparsity, bits) row of ``model`` in the
    compression results (:func:`mnist_pruning.results.load_compression_results`), with each file's information
    limit as a black tick and its test error (decoded model) above the bar."""
    sub = comp[comp["model"] == model].sort_values(
        ["sparsity_target", "size_coded_bytes"], ascending=[True, False]
    )
    fig, ax = plt.subplots(figsize=(style._WIDTH_IN, 5.0))
    if sub.empty:
        ax.text(0.5, 0.5, "no compression rows", ha="center", va="center", transform=ax.transAxes)
        return style._finish(fig, [ax], f"{MODEL_TITLES.get(model, model)}: where the bytes go")
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
            fontsize=style._MIN_FONT_PT,
            rotation=90 if len(sub) > 10 else 0,  # more bars than room for a level label each
        )
    labels = [f"{100 * s:g} %\n{_short_bits(b)}" for s, b in zip(sub["sparsity_target"], sub["bits"], strict=True)]
    ax.set_xticks(x, labels, fontsize=style._MIN_FONT_PT)
    ax.set(ylabel="coded file (kB)", xlabel="sparsity / bits per index (conv, fc); test error above each bar")
    ax.margins(y=0.12)  # room for the error labels above the tallest bar
    return style._finish(fig, [ax], f"{MODEL_TITLES.get(model, model)}: where the bytes go")


def _short_bits(bits: str) -> str:
    """``conv1=8;conv2=8;fc1=5;fc2=5`` -> ``8/5``; ``fc1=5;fc2=5;fc3=5`` -> ``5``: distinct values in order."""
    out: list[str] = []
    for part in bits.split(";"):
        value = part.partition("=")[2]
        if value not in out:
            out.append(value)
    return "/".join(out)


@style._styled
def compression_frontier(df: pd.DataFrame, comp: pd.DataFrame, model: str) -> Figure:
    """Test error (%, log y) against file bytes (log x): every pruning method of the main CSVs with its compact
    file, lzma of the compact files, the coded files of the compression rows each with its information limit
    beside it (hollow marker, joined by a thin line; error bars: +-1 std over seeds), the dense baseline, and the
    published references (:data:`mnist_pruning.references.SIZE_ANCHORS`; hollow stars are parameter-count
    ratios, not bytes)."""
    sub = style._with_error(df[df["model"] == model]) if len(df) else df
    fig, ax = plt.subplots(figsize=(style._WIDTH_IN, 6.0))
    if len(sub):
        order = _series_order(sub)
        style._draw_series(ax, sub, order, "size_compact_bytes", "error_pct", suffix=" (compact file)")
        style._dense_point(ax, df, model)
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
    style._error_axis(ax)
    ax.set(xlabel="file size (bytes, log scale)", ylabel="test error (%, log scale)")
    return style._finish(fig, [ax], f"{MODEL_TITLES.get(model, model)}: test error vs file bytes")
