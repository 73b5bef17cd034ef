"""Per-layer sensitivity: prune each layer alone, see what it costs, and give robust layers the higher ratio.

Usage::

    from mnist_pruning.sensitivity import one_shot_layers, ratios_from_sensitivity, sensitivity_scan
    scan = sensitivity_scan(base, mnist)                # one row per (layer, ratio): accuracy, accuracy_drop
    ratios = ratios_from_sensitivity(scan, base, 0.99)  # {"fc1": 0.995, "fc2": 0.97, ...}, overall exactly 0.99
    result = one_shot_layers(copy.deepcopy(base), mnist, ratios, TrainConfig(epochs=3))

The scan measures on training images by default, so ratios chosen from it are not tuned on the test set.
"""

from __future__ import annotations

import copy
import numbers
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
from torch import nn
from torch.nn.utils import prune

from .checks import _check_choice, _check_int, _check_ratio
from .data import MNISTData
from .schedules import PruneResult, _result_of
from .sparsity.measure import prunable_layers
from .sparsity.unstructured import sparsify_
from .train import TrainConfig, evaluate, fine_tune

__all__ = [
    "sensitivity_scan",
    "ratios_from_sensitivity",
    "one_shot_layers",
]

# Ratios a sensitivity scan tries by default: dense (the reference) up to the 0.99 frontier.
_SENSITIVITY_RATIOS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


def sensitivity_scan(
    model: nn.Module,
    data: MNISTData,
    ratios: Sequence[float] = _SENSITIVITY_RATIOS,
    split: str = "val",
    max_samples: int | None = 10_000,
) -> pd.DataFrame:
    """Accuracy when ONE layer alone is pruned (l1 magnitude, no fine-tuning), for every layer and ratio.

    Each (layer, ratio) prunes a copy of ``model``; the ratio is the absolute fraction of the layer's weights that
    are zero (a model that already has masks is baked first, so its zeros count). Rows: ``layer``, ``params``,
    ``ratio``, ``accuracy``, ``accuracy_drop`` (unpruned accuracy minus accuracy; positive = worse).

    ``split`` is ``"val"`` (default: the validation hold-out, what every choice is made on), ``"train"`` or
    ``"test"`` (per-layer ratios picked from test accuracy would be tuned on the test set: only for reports).
    The first ``max_samples`` images of the split are used. ``df.attrs`` holds the
    budget: ``seconds`` (wall time), ``epochs`` (0: nothing is trained), ``evaluations``, ``split``, ``samples``.
    """
    _check_choice(split, ("val", "train", "test"), "split")
    ratios = [_check_ratio(r) for r in ratios]
    if not ratios:
        raise ValueError("ratios must not be empty")
    if max_samples is not None:
        _check_int(max_samples, "max_samples", 1)
    x, y = {
        "val": (data.val_x, data.val_y),
        "train": (data.train_x, data.train_y),
        "test": (data.test_x, data.test_y),
    }[split]
    if max_samples is not None:
        x, y = x[:max_samples], y[:max_samples]
    start = time.perf_counter()
    base = copy.deepcopy(model)
    for _, module in prunable_layers(base):  # bake existing masks: the scan's ratios are absolute
        if prune.is_pruned(module):
            prune.remove(module, "weight")
    reference = evaluate(base, x, y)["accuracy"]
    rows = []
    for name, _ in prunable_layers(base):
        for ratio in ratios:
            trial = copy.deepcopy(base)
            layer = trial.get_submodule(name)
            if ratio > 0:
                sparsify_(trial, "l1", {name: ratio})  # |w| = 0 ranks first: zeros are counted
            accuracy = evaluate(trial, x, y)["accuracy"] if ratio > 0 else reference
            rows.append(
                {
                    "layer": name,
                    "params": layer.weight.numel(),
                    "ratio": ratio,
                    "accuracy": accuracy,
                    "accuracy_drop": reference - accuracy,
                }
            )
    df = pd.DataFrame(rows, columns=["layer", "params", "ratio", "accuracy", "accuracy_drop"])
    df.attrs.update(
        seconds=time.perf_counter() - start,
        epochs=0,
        evaluations=1 + sum(r > 0 for r in ratios) * len(prunable_layers(base)),
        split=split,
        samples=int(y.shape[0]),
    )
    return df


def ratios_from_sensitivity(
    df: pd.DataFrame, model: nn.Module, target_sparsity: float, max_drop: float | None = None
) -> dict[str, float]:
    """Per-layer ratios that reach ``target_sparsity`` over all prunable weights, pruning robust layers harder.

    The rule ("equal tolerated drop"): every layer gets the largest ratio whose accuracy drop, read off its
    sensitivity curve, is at most a common tolerance ``tau``; ``tau`` is found by bisection so that
    ``sum(ratio_l * n_l) = target_sparsity * sum(n_l)``. A layer's curve is the scan's drop against ratio,
    made non-decreasing (running maximum; a measured gain counts as no drop), anchored at (0, 0) and at
    (1, unpruned accuracy - 0.1: a layer without weights predicts at chance), linearly interpolated, plus
    ``1e-6 * ratio`` so it is strictly increasing. Ratios are therefore continuous in ``tau`` (the target is hit
    exactly, up to rounding to whole weights) and monotone in sensitivity: a layer whose curve lies lower gets
    the higher ratio, and layers with the same curve get the same ratio. Each ratio is capped at
    ``1 - 1/n_l`` so a layer keeps at least one weight.

    ``max_drop`` additionally caps ``tau``: no layer is pruned beyond the ratio at which it alone loses more than
    ``max_drop`` accuracy; if the target cannot be reached under that cap, a ValueError says how far it gets.
    """
    target = _check_ratio(target_sparsity, "target_sparsity")
    if max_drop is not None and (isinstance(max_drop, bool) or not isinstance(max_drop, numbers.Real)):
        raise ValueError(f"max_drop must be None or a number, got {max_drop!r}")
    missing_cols = {"layer", "ratio", "accuracy", "accuracy_drop"} - set(df.columns)
    if missing_cols:
        raise ValueError(f"df lacks columns {sorted(missing_cols)}; pass the output of sensitivity_scan")
    sizes = {name: module.weight.numel() for name, module in prunable_layers(model)}
    layers_in_df = list(dict.fromkeys(df["layer"]))
    if set(layers_in_df) != set(sizes):
        raise ValueError(f"df covers layers {layers_in_df}, the model has {list(sizes)}; they must be the same")
    total = sum(sizes.values())
    reference = float((df["accuracy"] + df["accuracy_drop"]).iloc[0])
    eps = 1e-6
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in sizes:
        group = df[df["layer"] == name].groupby("ratio", as_index=False)["accuracy_drop"].mean()
        r = np.concatenate([[0.0], group["ratio"].to_numpy(float), [1.0]])
        d = np.concatenate([[0.0], group["accuracy_drop"].to_numpy(float), [reference - 0.1]])
        r, first = np.unique(r, return_index=True)  # sorted; ratio 0 keeps the (0, 0) anchor
        d = np.maximum.accumulate(np.maximum(d[first], 0.0))
        curves[name] = (d + eps * r, r)

    def ratios_at(tau: float) -> dict[str, float]:
        return {
            name: min(float(np.interp(tau, drop, r)), 1.0 - 1.0 / sizes[name])
            for name, (drop, r) in curves.items()
        }

    def overall(tau: float) -> float:
        return sum(ratio * sizes[name] for name, ratio in ratios_at(tau).items()) / total

    low, high = 0.0, max(float(drop[-1]) for drop, _ in curves.values())
    if max_drop is not None:
        high = min(high, float(max_drop))
        if overall(high) < target:
            raise ValueError(
                f"target_sparsity={target!r} is out of reach with max_drop={max_drop!r}: no layer pruned beyond "
                f"a drop of {max_drop!r} reaches at most {overall(high):.6f}; raise max_drop or lower the target"
            )
    if overall(high) < target:  # only when layers are tiny: every layer is already at its 1-weight cap
        raise ValueError(f"target_sparsity={target!r} exceeds the reachable {overall(high):.6f}")
    for _ in range(200):  # bisection on tau; overall() is continuous and non-decreasing in tau
        mid = 0.5 * (low + high)
        if overall(mid) < target:
            low = mid
        else:
            high = mid
    return ratios_at(high)


def one_shot_layers(
    model: nn.Module, data: MNISTData, ratios: dict[str, float], config: TrainConfig, progress: bool = True
) -> PruneResult:
    """Like :func:`~mnist_pruning.schedules.one_shot`, with per-layer ratios (e.g. from
    :func:`ratios_from_sensitivity`): ``sparsify_(model, "l1", ratios)``, so on an already masked layer a ratio
    is relative to the weights it still has, as with torch; layers not named stay as they are."""
    start = time.perf_counter()
    sparsify_(model, "l1", ratios)
    history = fine_tune(model, data, config, desc="one-shot per-layer", progress=progress)
    return _result_of(model, history, config, start)
