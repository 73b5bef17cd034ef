"""Beyond one-shot pruning at high sparsity: gradual (cubic) pruning, per-layer sensitivity, lottery tickets.

Usage::

    from mnist_pruning.frontier import (
        cubic_schedule, gradual_prune, one_shot, sensitivity_scan, plot_sensitivity,
        ratios_from_sensitivity, prune_per_layer, lottery_ticket, lottery_targets,
    )
    cfg = TrainConfig(epochs=3, lr=0.01)
    a = one_shot(copy.deepcopy(base), mnist, "global", 0.99, cfg)        # prune once, fine-tune 3 epochs
    b = gradual_prune(copy.deepcopy(base), mnist, "global", 0.99, cfg)   # prune while training, same 3 epochs
    print(a.accuracy, b.accuracy, a.seconds, b.seconds, a.epochs, b.epochs)

    scan = sensitivity_scan(base, mnist)              # one row per (layer, ratio): accuracy, accuracy_drop
    fig = plot_sensitivity(scan)
    ratios = ratios_from_sensitivity(scan, base, 0.99)  # {"fc1": 0.995, "fc2": 0.97, ...}, overall exactly 0.99
    prune_per_layer(copy.deepcopy(base), ratios)

    ticket = lottery_ticket("mlp", mnist, 0.99, TrainConfig(epochs=2), per_round=0.2, rewind_iteration=0)
    print(ticket.rounds)                              # round, target, sparsity, accuracy, epochs, seconds
    print(ticket.epochs)                              # = epochs x (len(lottery_targets(0.99, 0.2)) + 1)

Every result carries ``epochs`` (passes over the training set, all training included) and ``seconds`` (wall time),
so methods can be compared on the same budget ("same total epochs") and the budget can be stated.

Mask semantics (gradual pruning and lottery rounds): masks are ``torch.nn.utils.prune`` masks. They are attached
once (``prune.identity`` - or whatever masks the model already has are kept), and every later pruning step
writes a mask that keeps a *subset* of the currently kept weights into the ``weight_mask`` buffer in place. A step
targets an ABSOLUTE sparsity ``s``: the ``round(s * n)`` smallest ``|weight_orig * weight_mask|`` are pruned, where
``n`` is the layer's weight count (``l1``) or the count over all prunable layers (``global``), and weights pruned
before always count among the smallest, so a mask only gains zeros and a pruned weight never comes back. Writing
the buffer in place (instead of calling ``prune.custom_from_mask`` again) keeps torch's reparametrisation and hook
but avoids a ``PruningContainer`` that would keep one full-size mask per pruning step alive.
"""

from __future__ import annotations

import copy
import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.nn.utils import prune

from .data import MNISTData
from .metrics import effective_weight, sparsity
from .models import ModelConfig, build_model, prunable_layers
from .pruning import UNSTRUCTURED_METHODS, check_method, check_ratio
from .train import TrainConfig, evaluate, fine_tune, get_device

__all__ = [
    "CubicSchedule",
    "cubic_schedule",
    "one_shot_layers",
    "budget_table",
    "plot_frontier",
    "PruneResult",
    "LotteryResult",
    "masks",
    "prune_to",
    "one_shot",
    "gradual_prune",
    "SENSITIVITY_RATIOS",
    "sensitivity_scan",
    "plot_sensitivity",
    "ratios_from_sensitivity",
    "prune_per_layer",
    "lottery_targets",
    "lottery_ticket",
]

# Ratios a sensitivity scan tries by default: dense (the reference) up to the 0.99 frontier.
SENSITIVITY_RATIOS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_fraction(value: object, name: str, low: float, high: float) -> float:
    """``value`` as a float in ``[low, high]``; else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= float(value) <= high:
        raise ValueError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------------------------
# The cubic schedule of Zhu & Gupta 2017
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CubicSchedule:
    """Zhu & Gupta 2017: ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3`` for t in [t0, t0 + n dt].

    Before ``t0`` the sparsity is ``s_i``, after ``t0 + n dt`` it is ``s_f``. Pruning happens at the
    ``n + 1`` steps :meth:`events` ``t0, t0 + dt, ..., t0 + n dt``: fast at first, when many redundant small
    weights are there to remove, and slowly near the end, when every removal hurts.
    """

    final: float  # s_f: sparsity reached at step t0 + n * dt and kept afterwards, in [0, 1)
    initial: float = 0.0  # s_i: sparsity at t0 (and before), in [0, final]
    begin: int = 0  # t0: optimizer step of the first pruning event (0 = before any training)
    steps: int = 10  # n: number of pruning steps after t0 (the schedule takes n * dt optimizer steps)
    every: int = 1  # dt: optimizer steps between two pruning events

    def __post_init__(self) -> None:
        check_ratio(self.final, "final")
        check_ratio(self.initial, "initial")
        if self.initial > self.final:
            raise ValueError(
                f"initial sparsity {self.initial!r} must not exceed final sparsity {self.final!r} "
                "(pruning only removes weights)"
            )
        _check_int(self.begin, "begin", 0)
        _check_int(self.steps, "steps", 1)
        _check_int(self.every, "every", 1)

    @property
    def end(self) -> int:
        """The step ``t0 + n * dt`` at which the final sparsity is reached."""
        return self.begin + self.steps * self.every

    def events(self) -> list[int]:
        """The optimizer steps at which the schedule prunes: ``t0, t0 + dt, ..., t0 + n dt``."""
        return [self.begin + i * self.every for i in range(self.steps + 1)]

    def __call__(self, step: float) -> float:
        # The formula itself on the closed interval [t0, t0 + n dt] (so s_t is exactly what the paper writes, to
        # the last bit); the constants only outside it.
        if step < self.begin:
            return self.initial
        if step > self.end:
            return self.final
        progress = (step - self.begin) / (self.steps * self.every)
        return self.final + (self.initial - self.final) * (1.0 - progress) ** 3


def cubic_schedule(
    step: float, final: float, initial: float = 0.0, begin: int = 0, steps: int = 10, every: int = 1
) -> float:
    """Sparsity at optimizer step ``step`` of the Zhu & Gupta cubic schedule (see :class:`CubicSchedule`)."""
    return CubicSchedule(final=final, initial=initial, begin=begin, steps=steps, every=every)(step)


# --------------------------------------------------------------------------------------------------------------
# Masks that target an absolute sparsity and only ever gain zeros
# --------------------------------------------------------------------------------------------------------------


def _attach(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Make sure every prunable weight has a torch prune mask (all ones where none was); return the layers."""
    layers = prunable_layers(model)
    for _, module in layers:
        if not prune.is_pruned(module):
            prune.identity(module, "weight")
    return layers


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the boolean keep-masks (True = kept) of every prunable layer; all True for an unmasked one."""
    out = {}
    for name, module in prunable_layers(model):
        mask = getattr(module, "weight_mask", None)
        out[name] = (
            mask.detach().bool().clone() if mask is not None else torch.ones_like(module.weight, dtype=bool)
        )
    return out


def _prune_smallest(scores: torch.Tensor, pruned: torch.Tensor, count: int) -> torch.Tensor:
    """Keep-mask (flat, bool) pruning ``count`` entries: every already ``pruned`` one, then the smallest scores."""
    count = max(count, int(pruned.sum().item()))  # a mask never loses a zero, whatever the rounding says
    keep = torch.ones_like(pruned)
    if count > 0:
        # Already-pruned weights get score -1 (< any |w|), so they are always among the `count` smallest.
        ranked = torch.where(pruned, torch.full_like(scores, -1.0), scores)
        keep[torch.topk(ranked, count, largest=False, sorted=False).indices] = False
    return keep


def prune_to(model: nn.Module, method: str, target: float) -> float:
    """Prune ``model`` in place to the ABSOLUTE sparsity ``target`` by magnitude; return the measured sparsity.

    ``l1`` prunes ``round(target * n_layer)`` weights of every layer, ``global`` ``round(target * n_all)`` over
    all prunable layers, smallest ``|weight_orig * weight_mask|`` first. Masks already attached are respected
    (their zeros stay zeros), so this never un-prunes; a target below the current sparsity changes nothing.
    """
    check_method(method, UNSTRUCTURED_METHODS)
    target = check_ratio(target, "target")
    layers = _attach(model)
    with torch.no_grad():
        if method == "l1":
            for _, module in layers:
                mask = module.weight_mask
                scores = effective_weight(module).abs().flatten()
                keep = _prune_smallest(scores, mask.flatten() == 0, round(target * mask.numel()))
                mask.mul_(keep.view_as(mask).to(mask.dtype))  # in place: keep the buffer torch's hook reads
        else:
            scores = torch.cat([effective_weight(m).abs().flatten() for _, m in layers])
            pruned = torch.cat([m.weight_mask.flatten() == 0 for _, m in layers])
            keep = _prune_smallest(scores, pruned, round(target * scores.numel()))
            offset = 0
            for _, module in layers:
                mask = module.weight_mask
                part = keep[offset : offset + mask.numel()]
                mask.mul_(part.view_as(mask).to(mask.dtype))
                offset += mask.numel()
        for _, module in layers:
            # The pre-hook recomputes `weight` at the next forward; refresh it now so it is never stale.
            module.weight = module.weight_orig * module.weight_mask
    return sparsity(model)


# --------------------------------------------------------------------------------------------------------------
# One-shot and gradual magnitude pruning
# --------------------------------------------------------------------------------------------------------------


@dataclass
class PruneResult:
    """A pruned, trained model and what it cost. The masks stay attached (``pruning.bake_in`` removes them)."""

    model: nn.Module  # the pruned model (the one passed in, modified in place)
    history: list[dict[str, float]]  # fine_tune's per-epoch rows: epoch, train_loss, test_loss, test_accuracy, ...
    sparsity: float  # measured zero fraction of the prunable weights at the end
    accuracy: float  # test accuracy at the end
    epochs: int  # passes over the training set spent (all of them)
    seconds: float  # wall time, pruning and training included
    pruning_steps: list[dict[str, float]] = field(default_factory=list)  # step, epoch, target, sparsity


def _result(
    model: nn.Module, history: list[dict[str, float]], config: TrainConfig, start: float, steps: list | None = None
) -> PruneResult:
    """A :class:`PruneResult` measured now: sparsity, last epoch's accuracy, time since ``start``."""
    return PruneResult(
        model=model,
        history=history,
        sparsity=sparsity(model),
        accuracy=history[-1]["test_accuracy"],
        epochs=config.epochs,
        seconds=time.perf_counter() - start,
        pruning_steps=steps or [],
    )


def _steps_per_epoch(data: MNISTData, config: TrainConfig) -> int:
    return math.ceil(data.train_y.shape[0] / config.batch_size)


def one_shot(
    model: nn.Module, data: MNISTData, method: str, ratio: float, config: TrainConfig, progress: bool = True
) -> PruneResult:
    """The reference point: prune once to ``ratio`` (absolute), fine-tune ``config.epochs`` with fixed masks."""
    check_method(method, UNSTRUCTURED_METHODS)
    ratio = check_ratio(ratio)
    start = time.perf_counter()
    measured = prune_to(model, method, ratio)
    steps = [{"step": 0, "epoch": 0.0, "target": ratio, "sparsity": measured}]
    history = fine_tune(model, data, config, desc=f"one-shot {method} {ratio:g}", progress=progress)
    return _result(model, history, config, start, steps)


def gradual_prune(
    model: nn.Module,
    data: MNISTData,
    method: str,
    final_ratio: float,
    config: TrainConfig,
    prune_every: int | None = None,
    initial_ratio: float = 0.0,
    begin_fraction: float = 0.0,
    end_fraction: float = 2 / 3,
    progress: bool = True,
    on_prune: Callable[[int, nn.Module], None] | None = None,
) -> PruneResult:
    """Gradual magnitude pruning (Zhu & Gupta 2017) while fine-tuning ``model`` in place for ``config.epochs``.

    With ``T`` = total optimizer steps, pruning starts at step ``t0 = round(begin_fraction * T)`` and reaches
    ``final_ratio`` at the last pruning event, at or before ``round(end_fraction * T)``; the rest of the
    training recovers with fixed masks (fine-tuning with the low, cosine-decayed learning rate of the end).
    Every ``prune_every`` steps (default: 20 pruning steps over the window) the masks are recomputed to the
    :class:`CubicSchedule` sparsity from the current magnitudes, by ``method`` (``"l1"`` per layer or
    ``"global"``); see the module docstring for why masks only gain zeros. ``on_prune(step, model)`` is called
    after every pruning event (step 0 = before training).
    """
    check_method(method, UNSTRUCTURED_METHODS)
    final_ratio = check_ratio(final_ratio, "final_ratio")
    initial_ratio = check_ratio(initial_ratio, "initial_ratio")
    begin_fraction = _check_fraction(begin_fraction, "begin_fraction", 0.0, 1.0)
    end_fraction = _check_fraction(end_fraction, "end_fraction", 0.0, 1.0)
    total = config.epochs * _steps_per_epoch(data, config)
    begin, end = round(begin_fraction * total), round(end_fraction * total)
    if end <= begin:
        raise ValueError(
            f"the pruning window is empty: begin_fraction={begin_fraction!r} and end_fraction={end_fraction!r} "
            f"give steps {begin}..{end} of {total}; need end_fraction > begin_fraction"
        )
    if prune_every is None:
        prune_every = max(1, (end - begin) // 20)
    prune_every = _check_int(prune_every, "prune_every", 1)
    if prune_every > end - begin:
        raise ValueError(
            f"prune_every={prune_every} is longer than the pruning window of {end - begin} steps "
            f"(steps {begin}..{end} of {total}); allowed: 1..{end - begin}"
        )
    schedule = CubicSchedule(
        final=final_ratio,
        initial=initial_ratio,
        begin=begin,
        steps=(end - begin) // prune_every,
        every=prune_every,
    )
    events = set(schedule.events())
    spe = _steps_per_epoch(data, config)
    log: list[dict[str, float]] = []

    def prune_now(step: int) -> None:
        target = schedule(step)
        measured = prune_to(model, method, target)
        log.append({"step": step, "epoch": step / spe, "target": target, "sparsity": measured})
        if on_prune is not None:
            on_prune(step, model)

    counter = [0]

    def after_step() -> None:
        counter[0] += 1
        if counter[0] in events:
            prune_now(counter[0])

    start = time.perf_counter()
    _attach(model)
    if 0 in events:
        prune_now(0)
    history = fine_tune(
        model, data, config, desc=f"gradual {method} {final_ratio:g}", progress=progress, after_step=after_step
    )
    return _result(model, history, config, start, log)


# --------------------------------------------------------------------------------------------------------------
# Per-layer sensitivity
# --------------------------------------------------------------------------------------------------------------


def sensitivity_scan(
    model: nn.Module,
    data: MNISTData,
    ratios: Sequence[float] = SENSITIVITY_RATIOS,
    split: str = "train",
    max_samples: int | None = 10_000,
) -> pd.DataFrame:
    """Accuracy when ONE layer alone is pruned (l1 magnitude, no fine-tuning), for every layer and ratio.

    Each (layer, ratio) prunes a copy of ``model``; the ratio is the absolute fraction of the layer's weights that
    are zero (a model that already has masks is baked first, so its zeros count). Rows: ``layer``, ``params``,
    ``ratio``, ``accuracy``, ``accuracy_drop`` (unpruned accuracy minus accuracy; positive = worse).

    ``split`` is ``"train"`` (default) or ``"test"``: per-layer ratios picked from test accuracy would be tuned on
    the test set, so the default measures on (the first ``max_samples``) training images. ``df.attrs`` holds the
    budget: ``seconds`` (wall time), ``epochs`` (0: nothing is trained), ``evaluations``, ``split``, ``samples``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; allowed: 'train', 'test'")
    ratios = [check_ratio(r) for r in ratios]
    if not ratios:
        raise ValueError("ratios must not be empty")
    if max_samples is not None:
        _check_int(max_samples, "max_samples", 1)
    x, y = (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)
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
                prune.l1_unstructured(layer, "weight", amount=ratio)  # |w| = 0 ranks first: zeros are counted
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


def plot_sensitivity(df: pd.DataFrame) -> Figure:
    """Accuracy against the layer's pruning ratio, one line per layer (the output of :func:`sensitivity_scan`)."""
    import matplotlib.pyplot as plt  # here, not at import: importing the module must not touch a backend

    fig, ax = plt.subplots(figsize=(6.4, 4))
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
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


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
    target = check_ratio(target_sparsity, "target_sparsity")
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


def prune_per_layer(model: nn.Module, ratios: dict[str, float]) -> nn.Module:
    """``prune.l1_unstructured`` with its own ratio on every layer named in ``ratios``; return ``model``.

    Layers not named stay as they are. As with torch, a ratio on an already masked layer is relative to the weights
    it still has.
    """
    layers = dict(prunable_layers(model))
    unknown = [name for name in ratios if name not in layers]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; allowed: {list(layers)}")
    for name, ratio in ratios.items():
        prune.l1_unstructured(layers[name], "weight", amount=check_ratio(ratio, f"ratio of {name}"))
    return model


def one_shot_layers(
    model: nn.Module, data: MNISTData, ratios: dict[str, float], config: TrainConfig, progress: bool = True
) -> PruneResult:
    """Like :func:`one_shot`, with per-layer ratios (e.g. from :func:`ratios_from_sensitivity`)."""
    start = time.perf_counter()
    prune_per_layer(model, ratios)
    history = fine_tune(model, data, config, desc="one-shot per-layer", progress=progress)
    return _result(model, history, config, start)


# --------------------------------------------------------------------------------------------------------------
# Lottery tickets with rewinding
# --------------------------------------------------------------------------------------------------------------


@dataclass
class LotteryResult:
    """The winning ticket after the last round, and every round's numbers and cost."""

    model: nn.Module  # pruned, retrained model (masks attached)
    rounds: list[dict[str, float]]  # round, target, sparsity, accuracy, epochs, total_epochs, seconds
    rewind_state: dict[str, torch.Tensor]  # dense state_dict at the rewind point (the weights rounds restart from)
    rewind_iteration: int  # optimizer steps of dense training before the rewind point (0 = initialisation)
    sparsity: float  # measured zero fraction of the prunable weights at the end
    accuracy: float  # test accuracy at the end
    epochs: int  # all passes over the training set: dense training + every round's retraining
    seconds: float  # wall time of everything


def lottery_targets(final_ratio: float, per_round: float | None = None, rounds: int | None = None) -> list[float]:
    """Sparsity after each round of iterative pruning: ``1 - (1 - p)^r``, the last one exactly ``final_ratio``.

    Give ``per_round`` (fraction of the remaining weights pruned per round; default 0.2 as Frankle & Carbin) or
    ``rounds`` (then ``p = 1 - (1 - final_ratio)^(1/rounds)``), not both.
    """
    final_ratio = check_ratio(final_ratio, "final_ratio")
    if per_round is not None and rounds is not None:
        raise ValueError(f"give per_round ({per_round!r}) or rounds ({rounds!r}), not both")
    if rounds is not None:
        rounds = _check_int(rounds, "rounds", 1)
    else:
        per_round = 0.2 if per_round is None else per_round
        if isinstance(per_round, bool) or not isinstance(per_round, numbers.Real) or not 0 < per_round < 1:
            raise ValueError(f"per_round must be a fraction in (0, 1) of the remaining weights, got {per_round!r}")
        # The small tolerance keeps e.g. 1 - 0.8**3 from needing a 4th round through floating-point noise.
        rounds = math.ceil(math.log1p(-final_ratio) / math.log1p(-per_round) - 1e-9) if final_ratio > 0 else 0
        rounds = max(rounds, 0)
    if rounds == 0:
        return []
    p = per_round if per_round is not None else 1 - (1 - final_ratio) ** (1 / rounds)
    targets = [min(1 - (1 - p) ** r, final_ratio) for r in range(1, rounds + 1)]
    targets[-1] = final_ratio  # the last round hits the target exactly
    return targets


def _rewind(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy the rewind-point values into every parameter (``weight_orig`` for masked weights); masks stay."""
    with torch.no_grad():
        for module_name, module in model.named_modules():
            for name, param in module.named_parameters(recurse=False):
                base = name[: -len("_orig")] if name.endswith("_orig") else name
                key = f"{module_name}.{base}" if module_name else base
                param.copy_(state[key])
        for _, module in prunable_layers(model):
            if prune.is_pruned(module):
                module.weight = module.weight_orig * module.weight_mask


def lottery_ticket(
    arch_or_model: str | ModelConfig | nn.Module,
    data: MNISTData,
    final_ratio: float,
    config: TrainConfig,
    per_round: float | None = None,
    rounds: int | None = None,
    rewind_iteration: int = 0,
    rewind_epoch: int | None = None,
    method: str = "global",
    progress: bool = True,
    on_reset: Callable[[int, nn.Module, dict[str, torch.Tensor]], None] | None = None,
) -> LotteryResult:
    """Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020).

    1. Train the dense model for ``config.epochs``, recording its weights after ``rewind_iteration`` optimizer
       steps (0 = the initialisation itself; or ``rewind_epoch`` whole epochs).
    2. Each round: prune to the next :func:`lottery_targets` sparsity (absolute; ``method`` ``"global"`` or
       ``"l1"``, by magnitude of the trained weights, masks only gain zeros), reset every unpruned weight and every
       bias to its rewind-point value exactly (masks kept), call ``on_reset(round, model, rewind_state)``, and
       retrain for ``config.epochs``.

    A string or :class:`ModelConfig` builds the model seeded by ``config.seed``; a module is deep-copied and its
    current weights are the initialisation (it is not modified). Retraining restarts the learning-rate schedule
    and optimizer state at every round (``fine_tune`` builds them afresh), also when rewinding to ``k > 0`` steps.
    Total epochs: ``config.epochs * (rounds + 1)`` - ``result.epochs``, known beforehand from ``lottery_targets``.
    """
    check_method(method, UNSTRUCTURED_METHODS)
    targets = lottery_targets(final_ratio, per_round, rounds)
    spe = _steps_per_epoch(data, config)
    if rewind_epoch is not None:
        rewind_epoch = _check_int(rewind_epoch, "rewind_epoch", 0)
        if rewind_iteration:
            raise ValueError(
                f"give rewind_iteration ({rewind_iteration!r}) or rewind_epoch ({rewind_epoch!r}), not both"
            )
        rewind_iteration = rewind_epoch * spe
    rewind_iteration = _check_int(rewind_iteration, "rewind_iteration", 0)
    if rewind_iteration > config.epochs * spe:
        raise ValueError(
            f"rewind_iteration={rewind_iteration} is past the end of dense training "
            f"({config.epochs * spe} steps); allowed: 0..{config.epochs * spe}"
        )
    if isinstance(arch_or_model, nn.Module):
        model = copy.deepcopy(arch_or_model)
    else:
        torch.manual_seed(config.seed)
        model = build_model(arch_or_model).to(get_device())

    start = time.perf_counter()
    snapshot: dict[str, dict[str, torch.Tensor]] = {}

    def record() -> None:
        # state_dict of the dense model: keys "fc1.weight", ... (no masks yet); clone, training goes on in place
        snapshot["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    counter = [0]

    def after_step() -> None:
        counter[0] += 1
        if counter[0] == rewind_iteration:
            record()

    if rewind_iteration == 0:
        record()
    history = fine_tune(model, data, config, desc="lottery dense", progress=progress, after_step=after_step)
    state = snapshot["state"]
    rows = [
        {
            "round": 0,
            "target": 0.0,
            "sparsity": sparsity(model),
            "accuracy": history[-1]["test_accuracy"],
            "epochs": config.epochs,
            "total_epochs": config.epochs,
            "seconds": time.perf_counter() - start,
        }
    ]
    for index, target in enumerate(targets, start=1):
        round_start = time.perf_counter()
        prune_to(model, method, target)
        _rewind(model, state)
        if on_reset is not None:
            on_reset(index, model, state)
        history = fine_tune(model, data, config, desc=f"lottery round {index}/{len(targets)}", progress=progress)
        rows.append(
            {
                "round": index,
                "target": target,
                "sparsity": sparsity(model),
                "accuracy": history[-1]["test_accuracy"],
                "epochs": config.epochs,
                "total_epochs": config.epochs * (index + 1),
                "seconds": time.perf_counter() - round_start,
            }
        )
    return LotteryResult(
        model=model,
        rounds=rows,
        rewind_state=state,
        rewind_iteration=rewind_iteration,
        sparsity=rows[-1]["sparsity"],
        accuracy=rows[-1]["accuracy"],
        epochs=config.epochs * (len(targets) + 1),
        seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------------------------------------------
# Comparing the schedules
# --------------------------------------------------------------------------------------------------------------


def budget_table(results: dict[str, PruneResult | LotteryResult], baseline_epochs: int) -> pd.DataFrame:
    """One row per method: accuracy, measured sparsity, epochs of its own and in all (the dense baseline's
    training included for methods that start from it; a lottery ticket trains its own dense model), wall time."""
    rows = []
    for name, r in results.items():
        own_dense = isinstance(r, LotteryResult)
        rows.append(
            {
                "method": name,
                "test accuracy %": 100 * r.accuracy,
                "sparsity": r.sparsity,
                "epochs": r.epochs,
                "epochs incl. dense training": r.epochs if own_dense else r.epochs + baseline_epochs,
                "wall time s": r.seconds,
            }
        )
    return pd.DataFrame(rows).set_index("method")


def plot_frontier(
    results: dict[str, PruneResult | LotteryResult], baseline_accuracy: float, title: str = ""
) -> Figure:
    """Accuracy vs sparsity: every lottery round as a curve, the other methods as points, the dense baseline as a
    reference line. The x axis shows the fraction of weights kept on a log scale, where the frontier is."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    markers = iter("osD^v<>")
    for name, r in results.items():
        if isinstance(r, LotteryResult):
            kept = [1 - row["sparsity"] for row in r.rounds]
            ax.plot(kept, [100 * row["accuracy"] for row in r.rounds], marker=".", label=f"{name} (each round)")
        else:
            ax.plot([1 - r.sparsity], [100 * r.accuracy], marker=next(markers), ls="", ms=9, label=name)
    ax.axhline(100 * baseline_accuracy, color="k", ls="--", lw=1, label="dense baseline")
    ax.set(xscale="log", xlabel="fraction of weights kept (log)", ylabel="test accuracy (%)", title=title)
    ax.invert_xaxis()
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
