"""A narrow LeNet-300-100 (16-8 hidden units) and its budget: the schedule, sensitivity and lottery tests train it
on the small MNIST subset in seconds."""

import torch

from mnist_pruning.models import ModelConfig, build_model
from mnist_pruning.sparsity.measure import effective_weight, prunable_layers
from mnist_pruning.train import TrainConfig

TINY = ModelConfig("mlp", (16, 8))
CFG = TrainConfig(epochs=2, batch_size=256, lr=0.05)  # 12 steps per epoch on the 3,000-image subset


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(TINY)


def n_weights(model: torch.nn.Module) -> int:
    return sum(m.weight.numel() for _, m in prunable_layers(model))


def n_zeros(model: torch.nn.Module) -> int:
    return sum(int((effective_weight(m) == 0).sum()) for _, m in prunable_layers(model))
