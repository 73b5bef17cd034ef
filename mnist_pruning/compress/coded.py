"""What a coded file holds: per prunable weight which weights survive and which shared value each one takes.

Usage::

    from mnist_pruning.compress.coded import CodedModel, SharedLayer
    coded = unshare(shared_model)                  # or _snapshot(...), decode(...), _load_coded(...)
    coded.layers["fc1.weight"].codebook            # (k,) shared values, sorted ascending
    coded.state_dict(), coded.model()              # float32 tensors / the rebuilt model
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..models import ModelConfig, build_model

__all__ = []


@dataclass
class _SharedLayer:
    """One weight tensor as the file holds it: which weights survive, which shared value each one takes."""

    shape: tuple[int, ...]
    bits: int  # requested bits per index (the codebook has at most 2**bits entries)
    positions: np.ndarray  # int64, sorted flat (C order) positions of the kept weights
    indices: np.ndarray  # int64 in [0, k), the codebook entry of each kept weight, in position order
    codebook: np.ndarray  # (k,) shared values, sorted ascending, float32 or float16

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nnz(self) -> int:
        return len(self.positions)

    def weight(self) -> torch.Tensor:
        flat = np.zeros(self.numel, dtype=np.float32)
        flat[self.positions] = self.codebook.astype(np.float32)[self.indices]
        return torch.from_numpy(flat).reshape(self.shape)


@dataclass
class _CodedModel:
    """What a coded file holds: the model's config, its shared weights and every other tensor (biases)."""

    config: ModelConfig
    layers: dict[str, _SharedLayer]  # by state-dict name, e.g. "fc1.weight"
    tensors: dict[str, torch.Tensor]  # every other state-dict entry, as stored (e.g. fp16 biases)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Float32 tensors in the model's own state-dict order."""
        order = list(build_model(self.config).state_dict())
        out = {name: layer.weight() for name, layer in self.layers.items()}
        out.update({name: t.to(torch.float32) for name, t in self.tensors.items()})
        missing = set(order) ^ set(out)
        if missing:
            raise ValueError(
                f"the coded model's tensors do not match a {self.config.arch} model: {sorted(missing)}"
            )
        return {name: out[name] for name in order}

    def model(self) -> nn.Module:
        model = build_model(self.config)
        model.load_state_dict(self.state_dict())
        return model
