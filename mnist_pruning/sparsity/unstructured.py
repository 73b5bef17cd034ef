"""The model-level pruning entry: magnitude (per layer or global) and N:M, on any model, with a layer filter.

Usage::

    from mnist_pruning.sparsity import sparsify_, bake_in
    sparsify_(model, "global", 0.9)          # 90 % of all prunable weights, smallest |w| across layers
    sparsify_(model, "l1", 0.9)              # 90 % of every layer's weights, layer by layer
    sparsify_(model, "nm", pattern="2:4")    # 2 of every 4 consecutive inputs kept, in every layer
    sparsify_(model, "global", 0.9, filter_fn=lambda mod, fqn: fqn != "classifier")
    sparsify_(model, "global", 0.99, absolute=True)      # until 99 % are zero, zeros already there counted
    sparsify_(model, "l1", {"fc1": 0.9, "fc2": 0.5})     # a ratio per named layer; the others are left alone
    ...                                      # fine-tune: masks stay attached, pruned weights stay 0
    bake_in(model)                           # prune.remove: plain dense weights with the zeros in them

Like torchao's ``sparsify_(model, fn, filter_fn)``: the model is changed in place and returned, and
``filter_fn(module, fqn)`` picks the layers among the Linear / Conv2d ones (default: all of them). The work is
done by ``torch.nn.utils.prune`` (``l1_unstructured``, ``global_unstructured``) and by
:class:`~mnist_pruning.sparsity.nm.NMPruning`, a ``BasePruningMethod``; biases are never pruned (a zero bias
saves nothing).

Methods (:data:`METHODS`):

- ``l1`` - the same ``ratio`` in every layer, smallest ``|w|`` first.
- ``global`` - one threshold over the weights of all chosen layers, so layers that matter less (LeNet's big first
  fully connected layer) lose more.
- ``nm`` - N:M pattern pruning, by magnitude inside every group (:mod:`mnist_pruning.sparsity.nm`).

Relative or absolute (``absolute=``):

- relative (default, torch's convention): on top of existing masks ``ratio`` is a fraction of the weights still
  unpruned, and torch combines the masks (``PruningContainer``).
- absolute (:class:`_AbsoluteMagnitude`): ``ratio`` is the sparsity to end at. The ``round(ratio * n)`` smallest
  ``|weight_orig * weight_mask|`` are pruned, ``n`` being the layer's weight count (``l1``) or the count over all
  chosen layers (``global``), and weights pruned before always count among the smallest: a mask only gains
  zeros, and a ratio below the current sparsity changes nothing. Masks are attached once (``prune.identity``
  where none was) and later steps write the ``weight_mask`` buffer in place: torch's reparametrisation and hook
  stay, but no ``PruningContainer`` grows with every step (gradual pruning makes dozens), and torch's container
  would rank only the surviving weights, which makes the fraction relative again.

Structured pruning (whole units, then surgery) is :mod:`mnist_pruning.sparsity.structured`.

Masks only zero weights: while attached, a ``state_dict`` holds ``weight_orig`` *and* ``weight_mask`` (a file twice
the size), and after :func:`bake_in` it is dense with zeros. Smaller files need a sparse format
(:mod:`mnist_pruning.sparsity.compact`); faster models need physically smaller layers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import prune

from ..checks import _check_choice, _check_ratio
from .measure import _FilterFn, effective_weight, prunable_layers
from .nm import nm_unstructured, parse_pattern

__all__ = ["METHODS", "sparsify_", "bake_in"]

METHODS = ("l1", "global", "nm")


class _AbsoluteMagnitude(prune.BasePruningMethod):
    """Prune the ``round(amount * t.numel())`` smallest ``|t|``, counting what ``default_mask`` already prunes.

    Entries the default mask prunes rank first (below any ``|t|``), so the mask returned keeps a subset of what
    the default mask keeps; if they are more than the count, it is the default mask itself.

    Args:
        amount: the sparsity to end at, in [0, 1).

    Raises:
        ValueError: ``amount`` outside [0, 1), naming it.

    Example::

        >>> method = AbsoluteMagnitude(0.9)
        >>> keep = method.compute_mask(scores, default_mask=torch.ones_like(scores))   # 10 % of entries kept
    """

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount: float) -> None:
        self.amount = _check_ratio(amount, "amount")

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        scores, pruned = t.flatten(), default_mask.flatten() == 0
        count = max(round(self.amount * scores.numel()), int(pruned.sum().item()))  # never lose a zero
        keep = torch.ones_like(pruned)
        if count > 0:
            # Already-pruned entries get score -1 (< any |t|), so they are always among the `count` smallest.
            ranked = torch.where(pruned, torch.full_like(scores, -1.0), scores.abs())
            keep[torch.topk(ranked, count, largest=False, sorted=False).indices] = False
        return keep.view_as(default_mask).to(default_mask.dtype)


def _check_ratios(method: str, ratio: object, layers: list[tuple[str, nn.Module]]) -> dict[str, float] | float:
    """``ratio`` checked: one float in [0, 1), or (``l1`` only) a mapping of chosen layer names to one."""
    if not isinstance(ratio, Mapping):
        return _check_ratio(ratio)
    if method != "l1":
        raise ValueError(f"per-layer ratios are for method 'l1', not {method!r}; got {dict(ratio)!r}")
    names = [name for name, _ in layers]
    unknown = [name for name in ratio if name not in names]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; allowed: {names}")
    return {name: _check_ratio(r, f"ratio of {name}") for name, r in ratio.items()}


def _check_floors(
    floors: object, method: str, ratio: object, absolute: bool, layers: list[tuple[str, nn.Module]]
) -> dict:
    """``floors`` checked: a mapping of chosen layer names to the fraction of their weights always kept, (0, 1];
    only with ``global`` and ``absolute=True``, and leaving enough weights to reach ``ratio``."""
    if not floors:
        return {}
    if method != "global" or not absolute or not isinstance(floors, Mapping):
        raise ValueError(
            f"floors= (a mapping {{layer: fraction kept}}) is for method 'global' with absolute=True; got "
            f"method={method!r}, absolute={absolute!r}, floors={floors!r}"
        )
    names = [name for name, _ in layers]
    unknown = [name for name in floors if name not in names]
    if unknown:
        raise ValueError(f"unknown layers {unknown} in floors; allowed: {names}")
    for name, value in floors.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ValueError(f"the floor of {name!r} must be a fraction of weights kept in (0, 1], got {value!r}")
    sizes = {name: module.weight.numel() for name, module in layers}
    total = sum(sizes.values())
    protected = sum(math.ceil(f * sizes[name]) for name, f in floors.items())
    if round(ratio * total) > total - protected:
        raise ValueError(
            f"a sparsity of {ratio:g} cannot be reached with floors keeping {protected} of {total} weights"
        )
    return dict(floors)


def _prune_absolute(modules: list[nn.Module], amount: float, floors: list[float] | None = None) -> None:
    """:class:`_AbsoluteMagnitude` over the weights of ``modules`` together, written into their masks in place;
    ``floors[i]``: the fraction of module ``i``'s weights that is never pruned (its largest, ranked above all)."""
    for module in modules:
        if not prune.is_pruned(module):
            prune.identity(module, "weight")  # torch's reparametrisation, all ones: later steps write into it
    with torch.no_grad():
        ranked = [effective_weight(m).abs().flatten() for m in modules]
        for i, floor in enumerate(floors or []):
            if floor:
                kept = ranked[i].topk(math.ceil(floor * ranked[i].numel())).indices
                ranked[i] = ranked[i].clone()
                ranked[i][kept] = math.inf  # above any |w|: never among the smallest
        scores = torch.cat(ranked)
        current = torch.cat([m.weight_mask.flatten() for m in modules])
        keep = _AbsoluteMagnitude(amount).compute_mask(scores, current)
        offset = 0
        for module in modules:
            mask = module.weight_mask
            mask.mul_(keep[offset : offset + mask.numel()].view_as(mask))  # in place: the buffer the hook reads
            offset += mask.numel()
            module.weight = effective_weight(module)  # what the hook recomputes at the next forward, fresh now


def sparsify_(
    model: nn.Module,
    method: str,
    ratio: float | Mapping[str, float] | None = None,
    *,
    pattern: str | None = None,
    filter_fn: _FilterFn | None = None,
    absolute: bool = False,
    floors: Mapping[str, float] | None = None,
) -> nn.Module:
    """Attach pruning masks to the weights of ``model``'s chosen layers in place; return ``model``.

    Args:
        model: any model; its Linear / Conv2d layers that ``filter_fn`` accepts are pruned.
        method: ``"l1"`` (per layer), ``"global"`` (one threshold over the chosen layers) or ``"nm"``.
        ratio: for ``l1`` and ``global``, the fraction of weights removed, in [0, 1); for ``l1`` also a mapping
            ``{layer name: ratio}`` that prunes only the layers named, each by its own ratio.
        pattern: for ``nm``, the N:M pattern (``"2:4"``).
        filter_fn: ``filter_fn(module, fqn)`` -> prune this layer? (default: every Linear / Conv2d).
        absolute: False: on top of existing masks ``ratio`` is relative to the weights still unpruned (torch's
            convention). True: ``ratio`` is the sparsity to end at, the zeros already there counted, and a mask
            only gains zeros (see the module docstring).
        floors: with ``global`` and ``absolute=True``, ``{layer name: fraction}`` of each named layer's weights
            that is always kept (its largest): one global threshold would otherwise nearly empty a small layer
            that matters, like LeNet-5's 500-weight conv1.

    Returns:
        ``model``, with ``weight_orig`` parameters, ``weight_mask`` buffers and torch's prune hooks.

    Raises:
        ValueError: an unknown method, a ratio outside [0, 1), a pattern with ``l1`` / ``global`` or a ratio with
            ``nm``, ``absolute`` with ``nm``, per-layer ratios with another method than ``l1``, a layer name that
            is not one of the chosen layers (the message lists them), floors outside (0, 1] or without global and
            absolute, floors that leave too few weights to reach ``ratio``, or no layer chosen. All checked before
            any layer is touched.

    Example::

        >>> sparsify_(model, "global", 0.9)
        >>> sparsify_(model, "global", 0.95, absolute=True)      # 5 % more of all weights, not 95 % of the rest
        >>> sparsify_(model, "l1", {"fc1": 0.9, "fc3": 0.5})
        >>> sparsify_(model, "global", 0.99, absolute=True, floors={"conv1": 0.5})
    """
    _check_choice(method, METHODS, "method")
    layers = prunable_layers(model, filter_fn)
    if method == "nm":
        if pattern is None or ratio is not None or absolute:
            raise ValueError(
                f"method 'nm' takes pattern= (like '2:4'), no ratio and no absolute=; got ratio={ratio!r}, "
                f"absolute={absolute!r}"
            )
        n, m = parse_pattern(pattern)
    else:
        if pattern is not None:
            raise ValueError(f"pattern= is for method 'nm', not {method!r}; got pattern={pattern!r}")
        ratio = _check_ratios(method, ratio, layers)
    floors = _check_floors(floors, method, ratio, absolute, layers)
    if not layers:
        raise ValueError("filter_fn accepted no Linear / Conv2d layer of the model: nothing to prune")
    if isinstance(ratio, dict):
        chosen = dict(layers)
        for name, amount in ratio.items():
            if absolute:
                _prune_absolute([chosen[name]], amount)
            else:
                prune.l1_unstructured(chosen[name], "weight", amount=amount)
    elif method == "nm":
        for _, module in layers:
            nm_unstructured(module, "weight", n, m)
    elif absolute:
        if method == "l1":
            for _, module in layers:
                _prune_absolute([module], ratio)
        else:
            _prune_absolute([module for _, module in layers], ratio, [floors.get(name, 0.0) for name, _ in layers])
    elif method == "l1":
        for _, module in layers:
            prune.l1_unstructured(module, "weight", amount=ratio)
    else:
        prune.global_unstructured(
            [(module, "weight") for _, module in layers], pruning_method=prune.L1Unstructured, amount=ratio
        )
    return model


def bake_in(model: nn.Module) -> nn.Module:
    """``prune.remove`` every pruning reparametrisation attached anywhere in ``model``.

    Args:
        model: any module.

    Returns:
        ``model``, its weights plain parameters with the zeros in them.

    Example::

        >>> sparsify_(net, "global", 0.9); bake_in(net); sparsity(net)   # 0.9, no masks left
    """
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return model
