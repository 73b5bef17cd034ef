"""The two literature models, each built from (and holding) a small config.

Usage::

    from mnist_pruning.models import ModelConfig, build_model
    model = build_model("cnn")                             # LeNet-5 (Caffe variant), 431,080 parameters
    model = build_model(ModelConfig("mlp", (120, 40)))     # a narrower LeNet-300-100, e.g. after surgery
    model.config                                           # ModelConfig(arch='mlp', widths=(120, 40))

As in nanoGPT's ``GPT(config)``, a model's constructor takes its :class:`ModelConfig` and stores it, so a
checkpoint is that config plus a ``state_dict``, never a pickled module. Structured pruning treats both models as
thin cases of the generic surgery in :mod:`mnist_pruning.sparsity.structured`: each names its
``structured_links()`` and rebuilds itself smaller with ``with_widths``.

- ``mlp`` = LeNet-300-100 (LeCun et al. 1998; Han et al. 2015): 784-300-100-10 with ReLU, 266,610 parameters.
- ``cnn`` = LeNet-5, Caffe variant (Han et al. 2015): conv 1->20 5x5, max-pool 2, conv 20->50 5x5, max-pool 2,
  fc 800->500, ReLU, fc 500->10; 431,080 parameters. As in Caffe's ``lenet_train_test.prototxt`` there is no
  ReLU after the convolutions: max-pooling is their only non-linearity.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from .checks import _check_choice, _check_int
from .sparsity.structured import Link

__all__ = ["MODEL_NAMES", "SAMPLE_SHAPE", "ModelConfig", "build_model"]

MODEL_NAMES = ("mlp", "cnn")
# Hidden widths of the published architectures: MLP (fc1, fc2); CNN (conv1 filters, conv2 filters, fc1 units).
_DEFAULT_WIDTHS = {"mlp": (300, 100), "cnn": (20, 50, 500)}
SAMPLE_SHAPE = (1, 28, 28)  # one MNIST image as the models take it: channels, height, width
_NUM_CLASSES = 10


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model: its family and hidden widths."""

    arch: str  # "mlp" (LeNet-300-100) or "cnn" (LeNet-5, Caffe variant)
    widths: tuple[int, ...] = field(
        default=()
    )  # hidden widths, in the order of the model's STRUCTURED; () = published

    def __post_init__(self) -> None:
        _check_choice(self.arch, MODEL_NAMES, "model")
        widths = tuple(self.widths) if self.widths else _DEFAULT_WIDTHS[self.arch]
        expected = len(_DEFAULT_WIDTHS[self.arch])
        if len(widths) != expected:
            raise ValueError(f"widths for {self.arch!r} must be {expected} positive integers, got {self.widths!r}")
        object.__setattr__(self, "widths", tuple(_check_int(w, f"every width of {self.widths!r}") for w in widths))

    def to_dict(self) -> dict:
        return {"arch": self.arch, "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(str(d["arch"]), tuple(int(w) for w in d["widths"]))


class _LeNet(nn.Module):
    """What both models share: the config they were built from, and their structure for surgery."""

    ARCH: str
    STRUCTURED: tuple[str, ...]  # layers whose output units can be removed, in the order of ModelConfig.widths
    LINKS: tuple[Link, ...]  # which layer feeds which, and what a unit's output goes through on the way

    def __init__(self, config: ModelConfig | None) -> None:
        super().__init__()
        config = config or ModelConfig(self.ARCH)
        if config.arch != self.ARCH:
            raise ValueError(f"{type(self).__name__} needs a config of arch {self.ARCH!r}, got {config.arch!r}")
        self.config = config

    def structured_links(self) -> list[Link]:
        return list(self.LINKS)

    def with_widths(self, widths: Mapping[str, int]) -> _LeNet:
        """A fresh model of this family with ``widths[layer]`` units in the named structured layers."""
        new = tuple(widths.get(name, w) for name, w in zip(self.STRUCTURED, self.config.widths, strict=True))
        return type(self)(replace(self.config, widths=new))


class _MLP(_LeNet):
    """LeNet-300-100: two ReLU hidden layers on the flattened 28x28 image."""

    ARCH = "mlp"
    STRUCTURED = ("fc1", "fc2")
    LINKS = (Link("fc1", "fc2", torch.relu), Link("fc2", "fc3", torch.relu))

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__(config)
        h1, h2 = self.config.widths
        self.fc1 = nn.Linear(SAMPLE_SHAPE[1] * SAMPLE_SHAPE[2], h1)
        self.fc2 = nn.Linear(h1, h2)
        self.fc3 = nn.Linear(h2, _NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class _LeNet5(_LeNet):
    """LeNet-5 as in Caffe's MNIST example: 28 -> conv5 -> 24 -> pool -> 12 -> conv5 -> 8 -> pool -> 4."""

    ARCH = "cnn"
    STRUCTURED = ("conv1", "conv2", "fc1")
    # No ReLU after the convolutions, and max-pooling a constant map gives that constant: no activation there.
    LINKS = (Link("conv1", "conv2"), Link("conv2", "fc1"), Link("fc1", "fc2", torch.relu))
    FEATURE_HW = 4  # spatial size of conv2's pooled output; fc1 sees conv2_channels * 4 * 4 inputs, channel-major

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__(config)
        c1, c2, h = self.config.widths
        self.conv1 = nn.Conv2d(SAMPLE_SHAPE[0], c1, kernel_size=5)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5)
        self.fc1 = nn.Linear(c2 * self.FEATURE_HW * self.FEATURE_HW, h)
        self.fc2 = nn.Linear(h, _NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(self.conv1(x), 2)
        x = nn.functional.max_pool2d(self.conv2(x), 2)
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


_CLASSES = {"mlp": _MLP, "cnn": _LeNet5}


def build_model(spec: str | ModelConfig) -> _LeNet:
    """A freshly initialised model from a family name (``"mlp"`` / ``"cnn"``) or a :class:`ModelConfig`."""
    config = spec if isinstance(spec, ModelConfig) else ModelConfig(spec)
    return _CLASSES[config.arch](config)
