"""The two literature models, rebuildable from a small config.

Usage::

    from mnist_pruning.models import build_model, prunable_layers, count_parameters
    model = build_model("cnn")                   # LeNet-5 (Caffe variant), 431,080 parameters
    model = build_model(ModelConfig("mlp", (120, 40)))   # a narrower LeNet-300-100, e.g. after surgery
    for name, module in prunable_layers(model):  # Linear / Conv2d layers whose .weight can be pruned
        ...

Both models are described completely by a :class:`ModelConfig` (family + hidden widths). Structured pruning makes
the network physically smaller by returning a new config with smaller widths plus a ``state_dict`` that fits it,
so a checkpoint never needs to pickle a module.

- ``mlp`` = LeNet-300-100 (LeCun et al. 1998; Han et al. 2015): 784-300-100-10 with ReLU, 266,610 parameters.
- ``cnn`` = LeNet-5, Caffe variant (Han et al. 2015): conv 1->20 5x5, max-pool 2, conv 20->50 5x5, max-pool 2,
  fc 800->500, ReLU, fc 500->10; 431,080 parameters. As in Caffe's ``lenet_train_test.prototxt`` there is no
  ReLU after the convolutions: max-pooling is their only non-linearity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "MODEL_NAMES",
    "DEFAULT_WIDTHS",
    "ModelConfig",
    "MLP",
    "LeNet5",
    "build_model",
    "model_config",
    "prunable_layers",
    "count_parameters",
    "count_nonzero_parameters",
]

MODEL_NAMES = ("mlp", "cnn")
# Hidden widths of the published architectures: MLP (fc1, fc2); CNN (conv1 filters, conv2 filters, fc1 units).
DEFAULT_WIDTHS = {"mlp": (300, 100), "cnn": (20, 50, 500)}
IMAGE_SIZE = 28
NUM_CLASSES = 10


def check_model_name(name: str) -> str:
    """Return ``name`` if it is a known model family, else raise a ValueError naming the allowed ones."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(map(repr, MODEL_NAMES))}")
    return name


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model: its family and hidden widths."""

    arch: str  # "mlp" (LeNet-300-100) or "cnn" (LeNet-5, Caffe variant)
    widths: tuple[int, ...] = field(default=())  # hidden widths; () means the published ones

    def __post_init__(self) -> None:
        check_model_name(self.arch)
        widths = tuple(self.widths) if self.widths else DEFAULT_WIDTHS[self.arch]
        expected = len(DEFAULT_WIDTHS[self.arch])
        if len(widths) != expected or not all(isinstance(w, int) and w >= 1 for w in widths):
            raise ValueError(f"widths for {self.arch!r} must be {expected} positive integers, got {self.widths!r}")
        object.__setattr__(self, "widths", widths)

    def to_dict(self) -> dict:
        return {"arch": self.arch, "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(str(d["arch"]), tuple(int(w) for w in d["widths"]))


class MLP(nn.Module):
    """LeNet-300-100: two ReLU hidden layers on the flattened 28x28 image."""

    def __init__(self, widths: tuple[int, int] = DEFAULT_WIDTHS["mlp"]) -> None:
        super().__init__()
        h1, h2 = widths
        self.fc1 = nn.Linear(IMAGE_SIZE * IMAGE_SIZE, h1)
        self.fc2 = nn.Linear(h1, h2)
        self.fc3 = nn.Linear(h2, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """LeNet-5 as in Caffe's MNIST example: 28 -> conv5 -> 24 -> pool -> 12 -> conv5 -> 8 -> pool -> 4."""

    # Spatial size of conv2's pooled output; fc1 sees conv2_channels * 4 * 4 inputs, channel-major.
    FEATURE_HW = 4

    def __init__(self, widths: tuple[int, int, int] = DEFAULT_WIDTHS["cnn"]) -> None:
        super().__init__()
        c1, c2, h = widths
        self.conv1 = nn.Conv2d(1, c1, kernel_size=5)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5)
        self.fc1 = nn.Linear(c2 * self.FEATURE_HW * self.FEATURE_HW, h)
        self.fc2 = nn.Linear(h, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(self.conv1(x), 2)
        x = nn.functional.max_pool2d(self.conv2(x), 2)
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


def build_model(spec: str | ModelConfig) -> nn.Module:
    """Build a freshly initialised model from a family name (``"mlp"``/``"cnn"``) or a :class:`ModelConfig`."""
    config = spec if isinstance(spec, ModelConfig) else ModelConfig(check_model_name(spec))
    cls = MLP if config.arch == "mlp" else LeNet5
    model = cls(config.widths)
    model.config = config  # so checkpoints and surgery can read the widths back
    return model


def model_config(model: nn.Module) -> ModelConfig:
    """The :class:`ModelConfig` a model was built from."""
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise ValueError("model was not built by mnist_pruning.models.build_model; it has no ModelConfig")
    return config


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs whose ``weight`` is pruned: every Linear and Conv2d, in forward order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters the architecture holds (weights + biases), counted once per tensor.

    With pruning masks attached, ``weight_orig`` is counted and ``weight_mask`` (a buffer) is not, so the count
    is the architecture's, not the reparametrisation's.
    """
    return sum(p.numel() for p in model.parameters())


def count_nonzero_parameters(model: nn.Module) -> int:
    """Number of non-zero parameters as the model computes with them (masks applied), biases included."""
    total = 0
    for module in model.modules():
        for name, _ in module.named_parameters(recurse=False):
            base = name.removesuffix("_orig")
            total += int(torch.count_nonzero(getattr(module, base)).item())
    return total
