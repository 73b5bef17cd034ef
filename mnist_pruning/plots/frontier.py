"""Chapter 06's frontier figure: test error against sparsity where the published results are, 95-99.7 %."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ..compare import _baseline_accuracy
from ..references import _ANCHORS as ANCHORS
from ..references import _MODEL_TITLES as MODEL_TITLES
from .style import _WIDTH_IN, _anchor_marker, _legend_below, _method_color, _plain, _styled

__all__ = ["frontier_curve"]

_ROW_MARKERS = {"frontier": "o", "gradual": "s", "lottery": "^", "oneshot": "o", "vd": "D"}
_TICKS = (0.9, 0.95, 0.98, 0.99, 0.995, 0.998)
_SHOWN = (  # (schedule, label): the project's high-sparsity rows, in legend order
    ("frontier", "chosen recipe"),
    ("gradual", "gradual"),
    ("lottery", "lottery ticket"),
    ("oneshot", "one-shot"),
    ("vd", "Sparse VD"),
)


@_styled
def frontier_curve(df: pd.DataFrame, model: str, low: float = 0.9) -> Figure:
    """Test error (%, log scale) against sparsity (logit scale) of ``model``'s global-magnitude rows from
    ``low`` up and its Sparse VD row, mean ± std over seeds (:func:`~mnist_pruning.results.load_results`),
    with the dense baseline and the published points of :data:`~mnist_pruning.references.ANCHORS` (Han et al.
    2015, Deep Compression, DNS, Sparse VD)."""
    fig, ax = plt.subplots(figsize=(_WIDTH_IN, 4.8))
    rows = df[(df["model"] == model) & (df["method"].isin(["global", "vd"])) & (df["sparsity"] >= low)]
    for schedule, label in _SHOWN:
        sub = rows[rows["schedule"] == schedule].sort_values("sparsity")
        if sub.empty:
            continue
        recipe = f" ({sub['recipe'].iloc[0]})" if schedule == "frontier" else ""
        ax.errorbar(
            sub["sparsity"],
            100 * (1 - sub["acc_finetuned"]),
            yerr=100 * sub["acc_finetuned_std"].fillna(0),
            marker=_ROW_MARKERS[schedule],
            ls="-" if len(sub) > 1 else "none",
            capsize=3,
            color=_method_color("global" if schedule != "vd" else "vd"),
            alpha=1.0 if schedule in ("frontier", "vd") else 0.55,
            label=f"this project: {label}{recipe}",
        )
    base = _baseline_accuracy(df, model) if not rows.empty else None
    if base is not None:
        error = 100 * (1 - base)
        ax.axhline(error, color="k", ls=":", lw=1.2, label=f"our dense baseline ({error:.2f} % error)")
    sources = list(dict.fromkeys(a.source for a in ANCHORS))
    for a in ANCHORS:
        if a.model == model:
            marker = _anchor_marker(a.source, sources)
            ax.plot(
                a.sparsity,
                100 * (1 - a.accuracy),
                marker=marker,
                ms=11,
                ls="none",
                color="gold",
                markeredgecolor="k",
                label=f"{a.source} ({1 / a.kept:.0f}x fewer weights)",
            )
    ax.set_xscale("logit")
    shown = [t for t in _TICKS if t >= low]
    ax.set_xticks(shown, [f"{100 * t:g} %" for t in shown])
    ax.xaxis.set_minor_formatter("")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    ax.yaxis.set_minor_formatter(FuncFormatter(_plain))
    ax.set_xlabel("sparsity: fraction of weights removed (logit scale)")
    ax.set_ylabel("test error (%, log scale)")
    ax.set_title(f"{MODEL_TITLES[model]}: the high-sparsity frontier")
    ax.grid(alpha=0.3, which="both")
    _legend_below(fig, [ax], ncol=2)
    return fig
