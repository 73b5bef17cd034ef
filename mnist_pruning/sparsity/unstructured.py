"""The model-level pruning entry: magnitude (per layer or global) and N:M, on any model, with a layer filter.

Usage::

    from mnist_pruning.sparsity import sparsify_, bake_in
    sparsify_(model, "global", 0.9)          # 90 % of all prunable weights, smallest |w| across layers
    sparsify_(model, "l1", 0.9)              # 90 % of every layer's weights, layer by layer
    sparsify_(model, "nm", pattern="2:4")    # 2 of every 4 consecutive inputs kept, in every layer
    sparsify_(model, "global", 0.9, filter_fn=lambda mod, fqn: fqn != "classifier")
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

Structured pruning (whole units, then surgery) is :mod:`mnist_pruning.sparsity.structured`.

Masks only zero weights: while attached, a ``state_dict`` holds ``weight_orig`` *and* ``weight_mask`` (a file twice
the size), and after :func:`bake_in` it is dense with zeros. Smaller files need a sparse format
(:mod:`mnist_pruning.sparsity.compact`); faster models need physically smaller layers.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils import prune

from ..checks import check_choice, check_ratio
from .measure import FilterFn, prunable_layers
from .nm import nm_unstructured, parse_pattern

__all__ = ["METHODS", "sparsify_", "bake_in"]

METHODS = ("l1", "global", "nm")


def sparsify_(
    model: nn.Module,
    method: str,
    ratio: float | None = None,
    *,
    pattern: str | None = None,
    filter_fn: FilterFn | None = None,
) -> nn.Module:
    """Attach pruning masks to the weights of ``model``'s chosen layers in place; return ``model``.

    ``ratio`` (fraction of weights removed, in [0, 1)) is for ``l1`` and ``global``; ``pattern`` (``"2:4"``) is for
    ``nm``. Everything is checked before any layer is touched. Pruning on top of existing masks prunes further
    (``torch.nn.utils.prune`` combines them), so a ratio given here is relative to the weights still unpruned.
    """
    check_choice(method, METHODS, "method")
    if method == "nm":
        if pattern is None or ratio is not None:
            raise ValueError(f"method 'nm' takes pattern= (like '2:4') and no ratio; got ratio={ratio!r}")
        n, m = parse_pattern(pattern)
    else:
        if pattern is not None:
            raise ValueError(f"pattern= is for method 'nm', not {method!r}; got pattern={pattern!r}")
        ratio = check_ratio(ratio)
    layers = prunable_layers(model, filter_fn)
    if not layers:
        raise ValueError("filter_fn accepted no Linear / Conv2d layer of the model: nothing to prune")
    if method == "l1":
        for _, module in layers:
            prune.l1_unstructured(module, "weight", amount=ratio)
    elif method == "global":
        prune.global_unstructured(
            [(module, "weight") for _, module in layers], pruning_method=prune.L1Unstructured, amount=ratio
        )
    else:
        for _, module in layers:
            nm_unstructured(module, "weight", n, m)
    return model


def bake_in(model: nn.Module) -> nn.Module:
    """``prune.remove`` every pruning reparametrisation attached anywhere in ``model``: weights become plain
    parameters with the zeros in them. Returns ``model``."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return model
