"""Fine-grained (unstructured) magnitude pruning on top of ``torch.nn.utils.prune``, and the method registry.

Usage::

    from mnist_pruning.pruning import prune_unstructured, bake_in, check_ratio
    prune_unstructured(model, "global", 0.9)   # 90 % of all prunable weights, smallest |w| across layers
    prune_unstructured(model, "l1", 0.9)       # 90 % of every layer's weights, layer by layer
    ...                                        # fine-tune: masks stay attached, pruned weights stay 0
    bake_in(model)                             # prune.remove: plain dense weights with the zeros in them

Methods (``METHODS``):

- ``l1`` - per-layer L1 unstructured (``prune.l1_unstructured``): the same ratio in every prunable layer.
- ``global`` - global magnitude (``prune.global_unstructured`` with ``L1Unstructured``): one threshold over the
  weights of all prunable layers, so layers that matter less (the big first fully connected layer) lose more.
- ``nm`` - N:M pattern pruning (:mod:`mnist_pruning.nm`).
- ``structured`` - whole neurons/filters removed, then layer surgery (:mod:`mnist_pruning.structured`).

Only weights of Linear/Conv2d layers are pruned; biases never are (they are <1 % of the parameters, and a zero
bias saves nothing). A ``ratio`` is the fraction of those weights removed, ``0 <= ratio < 1``.

Masks only zero weights: while attached, a ``state_dict`` holds ``weight_orig`` *and* ``weight_mask`` (a file twice
the size), and after :func:`bake_in` it is dense with zeros. Smaller files need a sparse format
(:mod:`mnist_pruning.export`); faster models need physically smaller layers (:mod:`mnist_pruning.structured`).
"""

from __future__ import annotations

import math
import numbers

from torch import nn
from torch.nn.utils import prune

from .models import prunable_layers

__all__ = [
    "METHODS",
    "UNSTRUCTURED_METHODS",
    "check_ratio",
    "check_method",
    "prune_unstructured",
    "bake_in",
    "has_masks",
]

UNSTRUCTURED_METHODS = ("l1", "global")
METHODS = ("l1", "global", "nm", "structured")


def check_ratio(ratio: object, name: str = "ratio", what: str = "weights") -> float:
    """Return ``ratio`` as a float if it is a real number in [0, 1); else raise a ValueError naming it.

    ``what`` is what the ratio is a fraction of, for the message ("weights", or "units" for structured pruning).
    """
    # bool is an Integral, but True/False as a ratio is almost certainly a bug in the caller.
    if (
        isinstance(ratio, bool)
        or not isinstance(ratio, numbers.Real)
        or not math.isfinite(float(ratio))
        or not 0.0 <= float(ratio) < 1.0
    ):
        raise ValueError(f"{name} must be in [0, 1) (the fraction of {what} removed), got {ratio!r}")
    return float(ratio)


def check_method(method: object, allowed: tuple[str, ...] = METHODS) -> str:
    """Return ``method`` if it is one of ``allowed``; else raise a ValueError naming the allowed ones."""
    if method not in allowed:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(map(repr, allowed))}")
    return method  # type: ignore[return-value]


def prune_unstructured(model: nn.Module, method: str, ratio: float) -> nn.Module:
    """Attach magnitude-pruning masks to every prunable weight of ``model`` in place; return it.

    Pruning on top of existing masks prunes further (``torch.nn.utils.prune`` combines them), so a ratio
    given here is relative to the weights still unpruned.
    """
    check_method(method, UNSTRUCTURED_METHODS)
    ratio = check_ratio(ratio)
    layers = prunable_layers(model)
    if method == "l1":
        for _, module in layers:
            prune.l1_unstructured(module, "weight", amount=ratio)
    else:
        prune.global_unstructured(
            [(module, "weight") for _, module in layers], pruning_method=prune.L1Unstructured, amount=ratio
        )
    return model


def has_masks(model: nn.Module) -> bool:
    """True while any ``torch.nn.utils.prune`` reparametrisation is attached."""
    return any(prune.is_pruned(m) for _, m in prunable_layers(model))


def bake_in(model: nn.Module) -> nn.Module:
    """``prune.remove`` every attached mask: weights become plain parameters with the zeros in them."""
    for _, module in prunable_layers(model):
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return model
