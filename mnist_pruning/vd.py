"""Sparse Variational Dropout as a pruning schedule: from a trained dense model to a masked one, one call.

Usage::

    from mnist_pruning.vd import VDConfig, sparse_vd
    result = sparse_vd(copy.deepcopy(base), mnist, VDConfig(epochs=20))
    result.model            # the same class and config as `base`; plain layers with torch prune masks attached
    result.sparsity, result.accuracy, result.epochs, result.seconds
    pandas.DataFrame(result.layers)    # measured per-layer sparsity of result.model

Molchanov, Ashukha & Vetrov 2017 (:mod:`mnist_pruning.sparsity.variational` has the layers and the KL term): every
Linear / Conv2d layer becomes variational, the model is trained on the ELBO ``N * CE + kl_weight * KL`` with the
weight of the KL term rising linearly from 0 over the first ``kl_warmup`` of the steps (the authors' warm-up), and
weights with ``log alpha > threshold`` are removed at the end. ``fine_tune`` runs the training with Adam and a
cosine decay; it minimises ``CE + kl_weight * KL / N``, the ELBO divided by ``N``, which Adam's steps do not
distinguish from the ELBO itself. The validation accuracy in the history is the eval-mode (masked, deterministic)
model's, so it is already the accuracy of the pruned model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from .checks import _check_choice, _check_fraction, _check_int
from .data import MNISTData
from .schedules import PruneResult, _result_of
from .sparsity import variational
from .sparsity.measure import layer_sparsity
from .train import _PRECISIONS, TrainConfig, fine_tune

__all__ = ["VDConfig", "sparse_vd"]


@dataclass(frozen=True)
class VDConfig:
    """A Sparse VD run: its budget, optimizer and the KL schedule; checked when built."""

    epochs: int = 20  # passes over the training set, all spent in the variational model
    lr: float = 1e-3  # Adam's peak learning rate (the authors' 1e-3), decayed to ~0 by a cosine schedule
    batch_size: int = 128  # images per optimizer step
    kl_weight: float = 1.0  # final weight of the KL term; 1 = the ELBO, more = sparser than Bayes would have it
    kl_warmup: float = 0.3  # fraction of steps over which the KL weight rises linearly from 0 to kl_weight
    threshold: float = 3.0  # log alpha above which a weight is removed (3: dropout rate > 95 %, the paper's)
    log_sigma2: float = -10.0  # initial log sigma^2 of every weight (alpha ~ 0: starts as the dense model)
    seed: int = 0  # seeds the batch order and the noise of the local reparametrisation
    precision: str = "auto"  # forward/backward precision, as TrainConfig.precision

    def __post_init__(self) -> None:
        _check_int(self.epochs, "epochs")
        _check_int(self.batch_size, "batch_size")
        _check_int(self.seed, "seed", minimum=0)
        _check_fraction(self.lr, "lr", 1e-12, 1.0)
        _check_fraction(self.kl_weight, "kl_weight", 0.0, 100.0)
        _check_fraction(self.kl_warmup, "kl_warmup", 0.0, 1.0)
        _check_fraction(self.threshold, "threshold", *variational._LOG_ALPHA_RANGE)
        _check_fraction(self.log_sigma2, "log_sigma2", *variational._LOG_SIGMA2_RANGE)
        _check_choice(self.precision, _PRECISIONS, "precision")

    def train_config(self) -> TrainConfig:
        """The :class:`TrainConfig` that ``fine_tune`` runs: Adam, no weight decay (the KL term is the prior)."""
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=0.0,
            weight_decay=0.0,
            warmup=0.0,
            seed=self.seed,
            precision=self.precision,
            optimizer="adam",
        )

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class _VDResult(PruneResult):
    """A :class:`~mnist_pruning.schedules.PruneResult` plus the measured sparsity of every layer."""

    layers: list[dict] = field(default_factory=list)  # sparsity.layer_sparsity(model): layer, params, nonzero, ...


class _KLPenalty:
    """``kl_weight(step) * KL(model) / n``, the KL term of the ELBO divided by ``n``; one call per optimizer step.

    The weight rises linearly from ``weight / warmup_steps`` at the first call to ``weight`` at call
    ``warmup_steps`` and stays there (``warmup_steps = 0``: ``weight`` from the start).

    Example::

        penalty = KLPenalty(model, n=55_000, weight=1.0, warmup_steps=1000)
        fine_tune(model, data, config, penalty=penalty)
    """

    def __init__(self, model: nn.Module, n: int, weight: float = 1.0, warmup_steps: int = 0) -> None:
        self.model = model
        self.n = _check_int(n, "n")
        self.weight = _check_fraction(weight, "weight", 0.0, math.inf)
        self.warmup_steps = _check_int(warmup_steps, "warmup_steps", minimum=0)
        self.step = 0

    def current_weight(self) -> float:
        """The KL weight the next call uses."""
        if self.step >= self.warmup_steps:
            return self.weight
        return self.weight * (self.step + 1) / self.warmup_steps

    def __call__(self) -> torch.Tensor:
        weight = self.current_weight()
        self.step += 1
        return weight * variational.kl(self.model) / self.n


def sparse_vd(model: nn.Module, data: MNISTData, config: VDConfig, progress: bool = True) -> _VDResult:
    """Sparsify a trained dense ``model`` in place with Sparse Variational Dropout; return what it cost.

    Args:
        model: a trained model without prune masks (pass a copy to keep the original); its Linear / Conv2d layers
            become variational for the training and plain again, masked, at the end.
        data: MNIST splits; training on ``train``, the history on ``val``.
        config: the budget and the KL schedule.
        progress: show a progress bar.

    Returns:
        A :class:`_VDResult`: ``model`` (same object, class and config; masks where ``log alpha > threshold``),
        ``history``, measured ``sparsity`` and ``layers``, last-epoch validation ``accuracy``, ``epochs``,
        ``seconds``.

    Raises:
        ValueError: ``model`` already has prune masks, or has no Linear / Conv2d layer.

    Example::

        r = sparse_vd(copy.deepcopy(base), mnist, VDConfig(epochs=20)); sparsity.bake_in(r.model)
    """
    train_config = config.train_config()
    start = time.perf_counter()
    variational.to_variational_(model, log_sigma2=config.log_sigma2, threshold=config.threshold)
    steps = config.epochs * math.ceil(data.train_y.shape[0] / config.batch_size)
    penalty = _KLPenalty(model, data.train_y.shape[0], config.kl_weight, round(config.kl_warmup * steps))
    torch.manual_seed(config.seed)  # the local reparametrisation's noise
    history = fine_tune(model, data, train_config, desc="sparse VD", progress=progress, penalty=penalty)
    variational.finalize_(model)
    result = _result_of(model, history, train_config, start)
    return _VDResult(**{f.name: getattr(result, f.name) for f in fields(result)}, layers=layer_sparsity(model))
