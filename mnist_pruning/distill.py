"""Knowledge distillation from the dense baseline: a training loss for pruned students.

Usage::

    from mnist_pruning.distill import Distillation
    loss = Distillation(teacher=dense_baseline, temperature=2.0, weight=0.5)
    fine_tune(pruned, mnist, TrainConfig(epochs=10, lr=0.02), loss_fn=loss)

The loss is Hinton, Vinyals & Dean's (2015): ``(1 - weight) * CE(student, labels) + weight * T^2 *
KL(softmax(teacher / T) || softmax(student / T))``; the ``T^2`` keeps the soft term's gradients at the scale of the
hard one's as ``T`` grows. The teacher runs in eval mode without gradients, in the student's autocast.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .checks import _check_fraction

__all__ = ["Distillation"]

_MAX_TEMPERATURE = 20.0  # softmax at higher temperatures is flat to float precision: nothing left to learn


@dataclass
class Distillation:
    """The distillation loss of a student against ``teacher``; call it as ``loss(logits, x, y)``.

    Raises:
        ValueError: a temperature outside (0, 20] or a weight outside [0, 1], naming the value.
    """

    teacher: nn.Module  # the dense model whose soft predictions the student learns from
    temperature: float = 2.0  # T: softens both distributions, (0, 20]
    weight: float = 0.5  # share of the soft term in the loss, [0, 1]; 0 is plain cross-entropy

    def __post_init__(self) -> None:
        _check_fraction(self.temperature, "distillation temperature", 1e-6, _MAX_TEMPERATURE)
        _check_fraction(self.weight, "distillation weight", 0.0, 1.0)

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        hard = F.cross_entropy(logits, y)
        if self.weight == 0:
            return hard
        self.teacher.eval()
        with torch.no_grad():
            soft_targets = F.log_softmax(self.teacher(x).float() / self.temperature, dim=1)
        soft = F.kl_div(
            F.log_softmax(logits.float() / self.temperature, dim=1),
            soft_targets,
            reduction="batchmean",
            log_target=True,
        )
        return (1 - self.weight) * hard + self.weight * self.temperature**2 * soft
