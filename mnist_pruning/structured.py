"""Structured pruning: remove whole neurons / filters and make the network physically smaller.

Usage::

    from mnist_pruning.models import build_model
    from mnist_pruning.structured import apply_structured_masks, surgery, shrink, expected_widths
    model = build_model("cnn")
    small = shrink(model, 0.5)                       # new LeNet-5 with widths (10, 25, 250); `model` is untouched

    # or step by step, e.g. to fine-tune or evaluate the masked model before surgery:
    kept = apply_structured_masks(model, 0.5)        # {"conv1": LongTensor of kept filters, ...}; masks attached
    config, state_dict = surgery(model)              # smaller ModelConfig + a plain state_dict that fits it
    small = build_model(config)
    small.load_state_dict(state_dict)                # strict: every key and shape matches
    save_structured_checkpoint("runs/cnn-s50.pt", config, state_dict, extra={"ratio": 0.5})
    small = load_structured_checkpoint("runs/cnn-s50.pt")   # weights_only load; rebuilds the right widths

Two steps
---------
1. :func:`apply_structured_masks` ranks the output units (rows of a Linear weight, filters of a Conv2d weight)
   of every structured layer by their L2 norm and masks the weakest ones with
   ``torch.nn.utils.prune.ln_structured(..., n=2, dim=0)``. This is the *masked model*: a removed unit's weight
   row is zero but its bias is not, so it still outputs a constant (its bias, then ReLU / max-pool of it).
2. :func:`surgery` deletes those units: the layer loses its rows, the next layer loses the matching input
   columns (for ``conv2 -> flatten -> fc1`` that is the 4x4 = 16 columns ``c*16 .. c*16+15`` of channel ``c``,
   because flatten is channel-major), and each removed unit's constant output is folded into the next layer's
   bias. The surgered model therefore computes exactly what the masked model computes (up to float rounding).

Only hidden units are removed (:data:`STRUCTURED_LAYERS`); the classifier's 10 outputs never are.

Rules chosen here
-----------------
- **At least one unit survives.** ``ratio`` is the fraction of a layer's units removed,
  ``units_removed(units, ratio) = min(round(ratio * units), units - 1)`` (``round`` as in
  ``torch.nn.utils.prune``: Python's round-half-to-even). A ratio that would remove every unit keeps the
  strongest one instead, since a layer with no units cannot be built (and would cut the network in two).
  ``ratio`` itself must be a real number in ``[0, 1)``.
- **Which units :func:`surgery` removes.** A unit is removed iff its row of ``weight_mask`` is all zero when the
  layer carries a pruning mask, else (e.g. after ``prune.remove``) iff its weight row is all zero. Either way
  the unit's effective weights are zero, so removing it and folding its bias is exact. Should every unit of a
  layer qualify, unit 0 is kept (still exact: it computes what it computed before).

What ``ratio`` means for parameters
-----------------------------------
A weight connects an input unit to an output unit, so removing a fraction ``r`` of the units of *two adjacent*
layers leaves ``(1 - r)**2`` of the weights between them: about ``1 - (1 - r)**2`` are removed (75 % at
``r = 0.5``), while the first layer (the 784 pixels / the single input channel stay) and the classifier (its 10
outputs stay) lose only about ``r``. Hence LeNet-300-100 at ``r = 0.5`` keeps 125,810 of 266,610 parameters
(53 % removed; fc1 dominates and loses ~r), but LeNet-5 keeps 109,295 of 431,080 (75 % removed; fc1 sits between
conv2 and itself, both shrunk). :func:`expected_widths` gives the widths for a ratio without touching a model;
``count_parameters(build_model(expected_widths(config, r)))`` gives the exact count.
"""

from __future__ import annotations

import copy
import numbers
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune

from .files import load_torch, save_torch
from .models import ModelConfig, build_model, model_config
from .pruning import check_ratio as _check_ratio

__all__ = [
    "STRUCTURED_LAYERS",
    "check_ratio",
    "units_removed",
    "expected_widths",
    "apply_structured_masks",
    "kept_units",
    "prune_linear_out",
    "prune_linear_in",
    "prune_conv_out",
    "prune_conv_in",
    "flatten_columns",
    "fold_removed_units",
    "surgery",
    "shrink",
    "save_structured_checkpoint",
    "load_structured_checkpoint",
]

# Layers whose output units can be removed, in forward order and in the order of ModelConfig.widths.
STRUCTURED_LAYERS: dict[str, tuple[str, ...]] = {"mlp": ("fc1", "fc2"), "cnn": ("conv1", "conv2", "fc1")}
# Every weighted layer in forward order; the layer after a structured layer is the one that consumes its units.
_CHAIN: dict[str, tuple[str, ...]] = {"mlp": ("fc1", "fc2", "fc3"), "cnn": ("conv1", "conv2", "fc1", "fc2")}
# What a removed unit's constant output (its bias) becomes before the next layer sees it. The convolutions are
# followed only by max-pooling (no ReLU, as in Caffe), and the max of a constant map is that constant.
_AFTER: dict[str, dict[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    "mlp": {"fc1": torch.relu, "fc2": torch.relu},
    "cnn": {"conv1": lambda b: b, "conv2": lambda b: b, "fc1": torch.relu},
}
_CHECKPOINT_KEYS = ("model_config", "state_dict")


# --------------------------------------------------------------------------------------------- validation


def check_ratio(ratio: object) -> float:
    """:func:`mnist_pruning.pruning.check_ratio` for a fraction of units."""
    return _check_ratio(ratio, what="units")


def _check_layers(arch: str, layers: Iterable[str] | str | None) -> tuple[str, ...]:
    allowed = STRUCTURED_LAYERS[arch]
    if layers is None:
        return allowed
    names = (layers,) if isinstance(layers, str) else tuple(layers)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(
            f"unknown structured layer(s) {', '.join(map(repr, unknown))} for {arch!r}; "
            f"allowed: {', '.join(map(repr, allowed))}"
        )
    # Forward order, no duplicates: pruning a layer twice would stack masks.
    return tuple(n for n in allowed if n in names)


def units_removed(units: int, ratio: float) -> int:
    """Number of the ``units`` output units removed at ``ratio``: ``round(ratio * units)``, at most ``units - 1``.

    The cap keeps at least one unit alive for ratios close to 1 (e.g. 0.99 of 3 units removes 2, not 3).
    """
    ratio = check_ratio(ratio)
    if isinstance(units, bool) or not isinstance(units, numbers.Integral) or units < 1:
        raise ValueError(f"units must be a positive integer, got {units!r}")
    return min(round(ratio * units), int(units) - 1)


def expected_widths(config: ModelConfig, ratio: float, layers: Iterable[str] | str | None = None) -> ModelConfig:
    """The :class:`ModelConfig` that pruning ``layers`` of a ``config`` model at ``ratio`` produces."""
    ratio = check_ratio(ratio)
    names = _check_layers(config.arch, layers)
    widths = list(config.widths)
    for i, name in enumerate(STRUCTURED_LAYERS[config.arch]):
        if name in names:
            widths[i] -= units_removed(widths[i], ratio)
    return ModelConfig(config.arch, tuple(widths))


# ---------------------------------------------------------------------------------------------- masking


def apply_structured_masks(
    model: nn.Module, ratio: float, layers: Iterable[str] | str | None = None
) -> dict[str, torch.Tensor]:
    """Mask the weakest (L2 norm) ``ratio`` of output units of each structured layer, in place.

    Uses ``prune.ln_structured(module, "weight", amount=k, n=2, dim=0)`` with the integer
    ``k = units_removed(units, ratio)``, so the model keeps its shapes and gains ``weight_orig``/``weight_mask``.
    Returns ``{layer: sorted LongTensor of kept unit indices}`` for the layers pruned.

    Everything is validated before any layer is touched, so a ValueError leaves the model as it was.
    """
    config = model_config(model)
    ratio = check_ratio(ratio)
    names = _check_layers(config.arch, layers)
    modules = dict(model.named_modules())
    already = [n for n in names if hasattr(modules[n], "weight_mask")]
    if already:
        # A second ln_structured would count `amount` among the surviving units only (PruningContainer),
        # silently changing what `ratio` means; make the caller decide (prune.remove first, or a fresh model).
        raise ValueError(f"layer(s) {', '.join(map(repr, already))} already carry a weight mask")

    kept: dict[str, torch.Tensor] = {}
    for name in names:
        module = modules[name]
        k = units_removed(module.weight.shape[0], ratio)
        prune.ln_structured(module, "weight", amount=k, n=2, dim=0)
        kept[name] = _kept_from(module.weight_mask)
    return kept


def _removed_rows(source: torch.Tensor) -> torch.Tensor:
    """Bool per output unit: True where the unit's row (all dims but 0) is entirely zero."""
    return ~(source.detach().reshape(source.shape[0], -1) != 0).any(dim=1)


def _kept_from(source: torch.Tensor) -> torch.Tensor:
    kept = torch.nonzero(~_removed_rows(source)).flatten()
    if kept.numel() == 0:
        # Every row is zero: keep unit 0 so the layer can still be built; exact, as it computes what it did.
        kept = torch.zeros(1, dtype=torch.long, device=source.device)
    return kept  # nonzero() returns indices in ascending order


def kept_units(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{layer: sorted kept unit indices}`` for every structured layer, by the rule :func:`surgery` uses.

    A unit is removed iff its ``weight_mask`` row is all zero (mask attached), else iff its weight row is.
    """
    config = model_config(model)
    modules = dict(model.named_modules())
    out = {}
    for name in STRUCTURED_LAYERS[config.arch]:
        module = modules[name]
        out[name] = _kept_from(module.weight_mask if hasattr(module, "weight_mask") else module.weight)
    return out


# ------------------------------------------------------------------- per-layer-type surgery (pure functions)


def prune_linear_out(w: torch.Tensor, b: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep only output units ``keep`` of a Linear layer: rows of ``w`` [out, in] and entries of ``b`` [out]."""
    return w.index_select(0, keep).contiguous(), b.index_select(0, keep).contiguous()


def prune_linear_in(w: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Keep only input columns ``keep`` of a Linear weight [out, in] (see :func:`flatten_columns` after a conv)."""
    return w.index_select(1, keep).contiguous()


def prune_conv_out(w: torch.Tensor, b: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep only filters ``keep`` of a Conv2d layer: ``w`` [out, in, kh, kw] and ``b`` [out]."""
    return w.index_select(0, keep).contiguous(), b.index_select(0, keep).contiguous()


def prune_conv_in(w: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Keep only input channels ``keep`` of a Conv2d weight [out, in, kh, kw]."""
    return w.index_select(1, keep).contiguous()


def flatten_columns(keep: torch.Tensor, group: int) -> torch.Tensor:
    """Columns of the Linear layer after ``flatten`` that belong to channels ``keep``.

    ``torch.flatten`` of [B, C, H, W] is channel-major, so channel ``c`` owns the ``group = H*W`` consecutive
    columns ``c*group .. c*group + group - 1``.
    """
    offsets = torch.arange(group, dtype=keep.dtype, device=keep.device)
    return (keep[:, None] * group + offsets[None, :]).flatten()


def fold_removed_units(
    w_next: torch.Tensor, units: int, removed: torch.Tensor, constants: torch.Tensor
) -> torch.Tensor:
    """Amount to add to the next layer's bias so it no longer needs the removed units' constant outputs.

    ``w_next`` is the next layer's (effective) weight, whose inputs come from a layer of ``units`` units;
    ``constants[i]`` is what unit ``removed[i]`` feeds forward, the same value at every spatial position. Each
    next-layer output ``o`` receives ``constants[i] * sum(w_next[o, that unit's inputs])``. A unit's inputs are
    one column (Linear after Linear), one kernel slice (valid, unpadded Conv2d: every output position sees all
    taps inside the constant map) or ``H*W`` consecutive columns (Linear after flatten of a conv). All three
    layouts are unit-major, so reshaping to [out, units, -1] covers them. Summed in float64, then cast back.
    """
    per_unit = w_next.detach().to(torch.float64).reshape(w_next.shape[0], units, -1)
    contribution = per_unit.index_select(1, removed).sum(dim=2) @ constants.detach().to(torch.float64)
    return contribution.to(w_next.dtype)


# -------------------------------------------------------------------------------------------------- surgery


def _effective(module: nn.Module, name: str) -> torch.Tensor:
    """The tensor the layer computes with: ``orig * mask`` if a pruning mask is attached.

    Recomputed rather than read from ``module.weight``, which the pruning hook refreshes only on forward and
    so is stale if ``weight_orig`` changed (e.g. fine-tuning) since the last forward.
    """
    if hasattr(module, name + "_mask"):
        return (getattr(module, name + "_orig") * getattr(module, name + "_mask")).detach().clone()
    tensor = getattr(module, name)
    if tensor is None:
        raise ValueError(f"layer {module!r} has no {name}; models from build_model always have one")
    return tensor.detach().clone()


def surgery(model: nn.Module) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Physically remove the masked (or all-zero) units of a masked model.

    Returns the smaller :class:`ModelConfig` and a plain ``state_dict`` (no masks, contiguous tensors, the
    masked weights baked in) that ``build_model(config).load_state_dict(state_dict)`` accepts with
    ``strict=True``. The resulting model's outputs equal the masked model's: each removed unit's constant
    output is folded into the next layer's bias, using the next layer's *effective* (masked) weights. The input
    model is not modified.
    """
    config = model_config(model)
    modules = dict(model.named_modules())
    chain = _CHAIN[config.arch]
    weights = {n: _effective(modules[n], "weight") for n in chain}
    biases = {n: _effective(modules[n], "bias") for n in chain}
    keep = kept_units(model)

    # Forward order: when layer i is processed, layer i+1 still has all its input columns and output rows.
    for i, name in enumerate(STRUCTURED_LAYERS[config.arch]):
        nxt = chain[i + 1]
        units = weights[name].shape[0]
        removed_mask = torch.ones(units, dtype=torch.bool, device=keep[name].device)
        removed_mask[keep[name]] = False
        removed = torch.nonzero(removed_mask).flatten()

        w_next = weights[nxt]
        if isinstance(modules[nxt], nn.Conv2d) and (modules[nxt].padding != (0, 0) or modules[nxt].groups != 1):
            # Zero padding would mix the constant map with zeros at the borders: the fold would no longer be exact.
            raise ValueError(f"{nxt} must be an unpadded, ungrouped convolution for exact bias folding")
        if w_next.shape[1] % units:
            raise ValueError(f"{nxt} has {w_next.shape[1]} inputs, not a multiple of {name}'s {units} units")
        group = w_next.shape[1] // units  # 1, or H*W columns per channel after flatten
        constants = _AFTER[config.arch][name](biases[name].index_select(0, removed))
        biases[nxt] = biases[nxt] + fold_removed_units(w_next, units, removed, constants)

        prune_out = prune_conv_out if isinstance(modules[name], nn.Conv2d) else prune_linear_out
        weights[name], biases[name] = prune_out(weights[name], biases[name], keep[name])
        if isinstance(modules[nxt], nn.Conv2d):
            weights[nxt] = prune_conv_in(w_next, keep[name])
        else:
            weights[nxt] = prune_linear_in(w_next, flatten_columns(keep[name], group))

    new_config = ModelConfig(config.arch, tuple(int(keep[n].numel()) for n in STRUCTURED_LAYERS[config.arch]))
    state_dict: dict[str, torch.Tensor] = {}
    for name in chain:
        state_dict[f"{name}.weight"] = weights[name].contiguous()
        state_dict[f"{name}.bias"] = biases[name].contiguous()
    return new_config, state_dict


def shrink(model: nn.Module, ratio: float, layers: Iterable[str] | str | None = None) -> nn.Module:
    """A new, smaller model: structured-prune a copy of ``model`` at ``ratio`` and run :func:`surgery` on it.

    The returned model has ``.config`` set, sits on ``model``'s device and in its train/eval mode; ``model``
    itself is left untouched.
    """
    config = model_config(model)
    check_ratio(ratio)
    _check_layers(config.arch, layers)
    masked = copy.deepcopy(model)
    apply_structured_masks(masked, ratio, layers)
    new_config, state_dict = surgery(masked)
    small = build_model(new_config)
    small.load_state_dict(state_dict, strict=True)
    first = next(model.parameters(), None)
    if first is not None:
        small.to(device=first.device)
    small.train(model.training)
    return small


# ----------------------------------------------------------------------------------------------- checkpoints


def save_structured_checkpoint(
    path: str | os.PathLike,
    config: ModelConfig,
    state_dict: Mapping[str, torch.Tensor],
    extra: Mapping[str, object] | None = None,
) -> Path:
    """Atomically save ``{"model_config": config.to_dict(), "state_dict": ..., **extra}``; returns the path.

    Only plain containers, numbers, strings and tensors are stored (no pickled module), so
    :func:`load_structured_checkpoint` can load it with ``weights_only=True``.
    """
    if not isinstance(config, ModelConfig):
        raise ValueError(f"config must be a ModelConfig, got {config!r}")
    extra = dict(extra or {})
    clash = [k for k in _CHECKPOINT_KEYS if k in extra]
    if clash:
        raise ValueError(f"extra must not use the reserved key(s) {', '.join(map(repr, clash))}")
    obj = {
        "model_config": config.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
        **extra,
    }
    return save_torch(obj, path)


def load_structured_checkpoint(path: str | os.PathLike) -> nn.Module:
    """Rebuild the model saved by :func:`save_structured_checkpoint` (widths from the file, strict load).

    Extra entries are not returned here; read them with ``mnist_pruning.files.load_torch(path)``.
    """
    obj = load_torch(path)
    if not isinstance(obj, dict) or any(k not in obj for k in _CHECKPOINT_KEYS):
        raise ValueError(
            f"{str(path)!r} is not a structured checkpoint (needs keys {', '.join(_CHECKPOINT_KEYS)})"
        )
    model = build_model(ModelConfig.from_dict(obj["model_config"]))
    model.load_state_dict(obj["state_dict"], strict=True)
    return model
