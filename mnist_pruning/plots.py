"""The figures of the notebooks, as functions (so tests reach them and notebooks stay short).

Usage::

    import matplotlib.pyplot as plt
    from mnist_pruning.plots import learning_curves
    fig = learning_curves({"mlp": history})
    plt.show()

Every function returns the ``matplotlib.figure.Figure`` it drew and never calls ``show``/``savefig`` itself.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = ["learning_curves", "weight_histograms", "conv_filters", "nm_block"]


def learning_curves(histories: dict[str, list[dict]]) -> Figure:
    """Training loss and test accuracy per epoch, one line per model."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label=f"{name} train")
        ax_loss.plot(epochs, [h["test_loss"] for h in history], marker="x", ls="--", label=f"{name} test")
        ax_acc.plot(epochs, [100 * h["test_accuracy"] for h in history], marker="o", label=name)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def weight_histograms(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], bins: int = 80) -> Figure:
    """Per layer, the distribution of weight values before pruning and the non-zero ones after fine-tuning."""
    names = list(before)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        b = before[name].detach().flatten().cpu().numpy()
        a = after[name].detach().flatten().cpu().numpy()
        lim = float(np.abs(b).max()) or 1.0
        edges = np.linspace(-lim, lim, bins + 1)
        ax.hist(b, bins=edges, alpha=0.5, label="dense")
        ax.hist(a[a != 0], bins=edges, alpha=0.7, label="kept (non-zero)")
        ax.set(title=f"{name}: {100 * (a == 0).mean():.1f} % zero", xlabel="weight", yscale="log")
    axes[0][0].set_ylabel("count")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def conv_filters(weight: torch.Tensor, kept: torch.Tensor | None = None, cols: int = 10) -> Figure:
    """First-layer filters as small images; removed ones (not in ``kept``) are greyed out and crossed."""
    w = weight.detach().cpu()[:, 0]
    n = w.shape[0]
    rows = (n + cols - 1) // cols
    keep = set(range(n)) if kept is None else {int(i) for i in kept}
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 1.0), squeeze=False)
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
        ax.set_title(f"{i}{'' if i in keep else ' ✗'}", fontsize=7)
    fig.suptitle(f"conv1 filters: {len(keep)} kept, {n - len(keep)} removed (faded, crossed)", fontsize=9)
    fig.tight_layout()
    return fig


def nm_block(before: torch.Tensor, after: torch.Tensor, m: int, rows: int = 8, groups: int = 6) -> Figure:
    """A corner of a weight matrix before and after N:M pruning, with the group boundaries drawn."""
    cols = groups * m
    b = before.detach().cpu().flatten(1)[:rows, :cols].numpy()
    a = after.detach().cpu().flatten(1)[:rows, :cols].numpy()
    lim = float(np.abs(b).max()) or 1.0
    fig, axes = plt.subplots(1, 2, figsize=(max(6, cols * 0.35), 2.2 + rows * 0.12))
    for ax, mat, title in ((axes[0], b, "dense"), (axes[1], a, "after N:M")):
        shown = np.where(mat == 0, np.nan, mat)
        ax.imshow(shown, cmap="RdBu_r", vmin=-lim, vmax=lim)
        for g in range(1, groups):
            ax.axvline(g * m - 0.5, color="k", lw=1.2)
        ax.set(title=title, xlabel=f"input index (groups of {m})", ylabel="output row")
    fig.tight_layout()
    return fig
