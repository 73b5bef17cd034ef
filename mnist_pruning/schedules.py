"""Magnitude pruning while training: masks that target an absolute sparsity, one-shot, and gradual (cubic) pruning.

Usage::

    from mnist_pruning.schedules import budget_table, gradual_prune, one_shot
    cfg = TrainConfig(epochs=3, lr=0.01)
    a = one_shot(copy.deepcopy(base), mnist, "global", 0.99, cfg)        # prune once, fine-tune 3 epochs
    b = gradual_prune(copy.deepcopy(base), mnist, "global", 0.99, cfg)   # prune while training, same 3 epochs
    budget_table({"one-shot": a, "gradual": b}, baseline_epochs=20)     # accuracy, sparsity, epochs, seconds

Every result carries ``epochs`` (passes over the training set, all training included) and ``seconds`` (wall time),
so methods can be compared on the same budget ("same total epochs") and the budget can be stated. Per-layer
ratios from a sensitivity scan are :mod:`mnist_pruning.sensitivity`; lottery tickets :mod:`mnist_pruning.lottery`.

Mask semantics (gradual pruning and lottery rounds): every pruning step targets an ABSOLUTE sparsity ``s``
(``sparsity.sparsify_(model, method, s, absolute=True)``): the ``round(s * n)`` smallest
``|weight_orig * weight_mask|`` are pruned, where ``n`` is the layer's weight count (``l1``) or the count over all
prunable layers (``global``), and weights pruned before always count among the smallest, so a mask only gains
zeros and a pruned weight never comes back. Masks are ``torch.nn.utils.prune`` masks, attached once and then
written in place (:mod:`mnist_pruning.sparsity.unstructured` says why).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn
from torch.nn.utils import prune

from .checks import _check_choice, _check_fraction, _check_int, _check_ratio
from .data import MNISTData
from .sparsity.masked import MaskedTraining
from .sparsity.measure import prunable_layers, sparsity
from .sparsity.unstructured import _check_floors, sparsify_
from .train import TrainConfig, _LossFn, evaluate, fine_tune

__all__ = [
    "PruneResult",
    "one_shot",
    "gradual_prune",
    "budget_table",
]

_UNSTRUCTURED_METHODS = ("l1", "global")  # the magnitude methods a schedule can target an absolute sparsity with


@dataclass(frozen=True)
class _CubicSchedule:
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
        _check_ratio(self.final, "final")
        _check_ratio(self.initial, "initial")
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


def _cubic_schedule(
    step: float, final: float, initial: float = 0.0, begin: int = 0, steps: int = 10, every: int = 1
) -> float:
    """Sparsity at optimizer step ``step`` of the Zhu & Gupta cubic schedule (see :class:`_CubicSchedule`)."""
    return _CubicSchedule(final=final, initial=initial, begin=begin, steps=steps, every=every)(step)


def _attach(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Make sure every prunable weight has a torch prune mask (all ones where none was); return the layers."""
    layers = prunable_layers(model)
    for _, module in layers:
        if not prune.is_pruned(module):
            prune.identity(module, "weight")
    return layers


def _masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the boolean keep-masks (True = kept) of every prunable layer; all True for an unmasked one."""
    out = {}
    for name, module in prunable_layers(model):
        mask = getattr(module, "weight_mask", None)
        out[name] = (
            mask.detach().bool().clone() if mask is not None else torch.ones_like(module.weight, dtype=bool)
        )
    return out


def _prune_to(model: nn.Module, method: str, target: float, floors: Mapping[str, float] | None = None) -> float:
    """Prune ``model`` in place to the ABSOLUTE sparsity ``target`` by magnitude; return the measured sparsity.

    ``sparsify_(model, method, target, absolute=True)`` on every prunable layer: ``l1`` prunes
    ``round(target * n_layer)`` weights of every layer, ``global`` ``round(target * n_all)`` over all prunable
    layers, smallest ``|weight_orig * weight_mask|`` first. Masks already attached are respected (their zeros stay
    zeros), so this never un-prunes; a target below the current sparsity changes nothing. ``floors`` (``global``
    only): the fraction of each named layer's weights always kept.
    """
    _check_choice(method, _UNSTRUCTURED_METHODS, "method")
    sparsify_(model, method, _check_ratio(target, "target"), absolute=True, floors=floors)
    return sparsity(model)


@dataclass
class PruneResult:
    """A pruned, trained model and what it cost. The masks stay attached (``sparsity.bake_in`` removes them)."""

    model: nn.Module  # the pruned model (the one passed in, modified in place)
    history: list[dict[str, float]]  # fine_tune's per-epoch rows: epoch, train_loss, val_loss, val_accuracy, ...
    sparsity: float  # measured zero fraction of the prunable weights at the end
    accuracy: float  # validation accuracy after the last epoch (the test set is for final reports only)
    epochs: int  # passes over the training set spent (all of them)
    seconds: float  # wall time, pruning and training included
    pruning_steps: list[dict[str, float]] = field(default_factory=list)  # step, epoch, target, sparsity
    includes_dense_training: bool = False  # True when `epochs` counts training the dense model too (lottery)


def _result_of(
    model: nn.Module, history: list[dict[str, float]], config: TrainConfig, start: float, steps: list | None = None
) -> PruneResult:
    """A :class:`PruneResult` measured now: sparsity, last epoch's accuracy, time since ``start``."""
    return PruneResult(
        model=model,
        history=history,
        sparsity=sparsity(model),
        accuracy=history[-1]["val_accuracy"],
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
    _check_choice(method, _UNSTRUCTURED_METHODS, "method")
    ratio = _check_ratio(ratio)
    start = time.perf_counter()
    measured = _prune_to(model, method, ratio)
    steps = [{"step": 0, "epoch": 0.0, "target": ratio, "sparsity": measured}]
    history = fine_tune(model, data, config, desc=f"one-shot {method} {ratio:g}", progress=progress)
    return _result_of(model, history, config, start, steps)


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
    floors: Mapping[str, float] | None = None,
    loss_fn: _LossFn | None = None,
) -> PruneResult:
    """Gradual magnitude pruning (Zhu & Gupta 2017) while fine-tuning ``model`` in place for ``config.epochs``.

    With ``T`` = total optimizer steps, pruning starts at step ``t0 = round(begin_fraction * T)`` and reaches
    ``final_ratio`` at the last pruning event, at or before ``round(end_fraction * T)``; the rest of the
    training recovers with fixed masks (fine-tuning with the low, cosine-decayed learning rate of the end).
    Every ``prune_every`` steps (default: 20 pruning steps over the window) the masks are recomputed to the
    :class:`_CubicSchedule` sparsity from the current magnitudes, by ``method`` (``"l1"`` per layer or
    ``"global"``); see the module docstring for why masks only gain zeros. ``on_prune(step, model)`` is called
    after every pruning event (step 0 = before training). ``floors`` keeps a share of named layers at every event
    (``global`` only, see :func:`~mnist_pruning.sparsity.sparsify_`); ``loss_fn`` replaces the cross-entropy
    (e.g. :class:`~mnist_pruning.distill.Distillation` from the dense model).
    """
    _check_choice(method, _UNSTRUCTURED_METHODS, "method")
    final_ratio = _check_ratio(final_ratio, "final_ratio")
    _check_floors(floors, method, final_ratio, True, prunable_layers(model))
    initial_ratio = _check_ratio(initial_ratio, "initial_ratio")
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
    schedule = _CubicSchedule(
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
        measured = _prune_to(model, method, target, floors)
        log.append({"step": step, "epoch": step / spe, "target": target, "sparsity": measured})
        if on_prune is not None:
            on_prune(step, model)

    counter = [0]
    masked = MaskedTraining(model)  # fine_tune trains through it: the masks are held aside between events

    def after_step() -> None:
        counter[0] += 1
        if counter[0] in events:
            with masked.pruning():  # torch's prune masks back on while _prune_to writes them (and on_prune reads)
                prune_now(counter[0])

    start = time.perf_counter()
    _attach(model)
    if 0 in events:
        prune_now(0)
    history = fine_tune(
        model,
        data,
        config,
        desc=f"gradual {method} {final_ratio:g}",
        progress=progress,
        after_step=after_step,
        masked=masked,
        loss_fn=loss_fn,
    )
    return _result_of(model, history, config, start, log)


def budget_table(
    results: dict[str, PruneResult], baseline_epochs: int, data: MNISTData | None = None
) -> pd.DataFrame:
    """One row per method: validation accuracy (and, given ``data``, the test accuracy of the final model,
    measured once, for the report), measured sparsity, epochs of its own and in all (the dense baseline's
    training included for methods that start from it; a lottery ticket trains its own dense model), wall time."""
    rows = []
    for name, r in results.items():
        own_dense = r.includes_dense_training
        test = (
            {}
            if data is None
            else {"test accuracy %": 100 * evaluate(r.model, data.test_x, data.test_y)["accuracy"]}
        )
        rows.append(
            {
                "method": name,
                "validation accuracy %": 100 * r.accuracy,
                **test,
                "sparsity": r.sparsity,
                "epochs": r.epochs,
                "epochs incl. dense training": r.epochs if own_dense else r.epochs + baseline_epochs,
                "wall time s": r.seconds,
            }
        )
    return pd.DataFrame(rows).set_index("method")
