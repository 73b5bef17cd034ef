"""Lottery tickets: iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020).

Usage::

    from mnist_pruning.lottery import lottery_targets, lottery_ticket
    ticket = lottery_ticket("mlp", mnist, 0.99, TrainConfig(epochs=2), per_round=0.2, rewind_iteration=0)
    print(ticket.rounds)                              # round, target, sparsity, accuracy, epochs, seconds
    print(ticket.epochs)                              # = epochs x (len(_lottery_targets(0.99, 0.2)) + 1)

Masks follow :mod:`mnist_pruning.schedules`: each round targets an absolute sparsity and masks only gain zeros.
"""

from __future__ import annotations

import copy
import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from .checks import _check_choice, _check_int, _check_ratio
from .data import MNISTData
from .models import ModelConfig, build_model
from .schedules import _UNSTRUCTURED_METHODS, _prune_to, _steps_per_epoch
from .sparsity.measure import prunable_layers, sparsity
from .train import TrainConfig, _get_device, fine_tune

__all__ = ["lottery_ticket"]


@dataclass
class _LotteryResult:
    """The winning ticket after the last round, and every round's numbers and cost."""

    model: nn.Module  # pruned, retrained model (masks attached)
    rounds: list[dict[str, float]]  # round, target, sparsity, accuracy (validation), epochs, total_epochs, seconds
    rewind_state: dict[str, torch.Tensor]  # dense state_dict at the rewind point (the weights rounds restart from)
    rewind_iteration: int  # optimizer steps of dense training before the rewind point (0 = initialisation)
    sparsity: float  # measured zero fraction of the prunable weights at the end
    accuracy: float  # validation accuracy after the last round's last epoch
    epochs: int  # all passes over the training set: dense training + every round's retraining
    seconds: float  # wall time of everything
    includes_dense_training: bool = True  # `epochs` counts the ticket's own dense training (see budget_table)


def _lottery_targets(final_ratio: float, per_round: float | None = None, rounds: int | None = None) -> list[float]:
    """Sparsity after each round of iterative pruning: ``1 - (1 - p)^r``, the last one exactly ``final_ratio``.

    Give ``per_round`` (fraction of the remaining weights pruned per round; default 0.2 as Frankle & Carbin) or
    ``rounds`` (then ``p = 1 - (1 - final_ratio)^(1/rounds)``), not both.
    """
    final_ratio = _check_ratio(final_ratio, "final_ratio")
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
) -> _LotteryResult:
    """Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020).

    1. Train the dense model for ``config.epochs``, recording its weights after ``rewind_iteration`` optimizer
       steps (0 = the initialisation itself; or ``rewind_epoch`` whole epochs).
    2. Each round: prune to the next :func:`_lottery_targets` sparsity (absolute; ``method`` ``"global"`` or
       ``"l1"``, by magnitude of the trained weights, masks only gain zeros), reset every unpruned weight and every
       bias to its rewind-point value exactly (masks kept), call ``on_reset(round, model, rewind_state)``, and
       retrain for ``config.epochs``.

    A string or :class:`ModelConfig` builds the model seeded by ``config.seed``; a module is deep-copied and its
    current weights are the initialisation (it is not modified). Retraining restarts the learning-rate schedule
    and optimizer state at every round (``fine_tune`` builds them afresh), also when rewinding to ``k > 0`` steps.
    Total epochs: ``config.epochs * (rounds + 1)`` - ``result.epochs``, known beforehand from ``lottery_targets``.
    """
    _check_choice(method, _UNSTRUCTURED_METHODS, "method")
    targets = _lottery_targets(final_ratio, per_round, rounds)
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
        model = build_model(arch_or_model).to(_get_device())

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
            "accuracy": history[-1]["val_accuracy"],
            "epochs": config.epochs,
            "total_epochs": config.epochs,
            "seconds": time.perf_counter() - start,
        }
    ]
    for index, target in enumerate(targets, start=1):
        round_start = time.perf_counter()
        _prune_to(model, method, target)
        _rewind(model, state)
        if on_reset is not None:
            on_reset(index, model, state)
        history = fine_tune(model, data, config, desc=f"lottery round {index}/{len(targets)}", progress=progress)
        rows.append(
            {
                "round": index,
                "target": target,
                "sparsity": sparsity(model),
                "accuracy": history[-1]["val_accuracy"],
                "epochs": config.epochs,
                "total_epochs": config.epochs * (index + 1),
                "seconds": time.perf_counter() - round_start,
            }
        )
    return _LotteryResult(
        model=model,
        rounds=rows,
        rewind_state=state,
        rewind_iteration=rewind_iteration,
        sparsity=rows[-1]["sparsity"],
        accuracy=rows[-1]["accuracy"],
        epochs=config.epochs * (len(targets) + 1),
        seconds=time.perf_counter() - start,
    )
