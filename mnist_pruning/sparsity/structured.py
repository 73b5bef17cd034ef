"""Structured pruning on any chain of Linear / Conv2d layers: remove whole units, then cut them out (surgery).

Usage::

    import torch
    from torch import nn
    from mnist_pruning.sparsity.structured import Link, apply_structured_masks, apply_surgery, shrink, surgery

    net = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(16 * 13 * 13, 64), nn.ReLU(), nn.Linear(64, 10))
    small = shrink(net, 0.5)                    # a new model, half the units of "0" and "4"; `net` untouched

    # step by step, e.g. to fine-tune or evaluate the masked model before surgery:
    links = _trace_links(net)                    # [Link("0", "4", ReLU()), Link("4", "6", ReLU())]
    kept = apply_structured_masks(net, 0.5)     # {"0": LongTensor of kept filters, "4": ...}; masks attached
    small = apply_surgery(net)                  # masks -> physically smaller layers, outputs unchanged
    widths, state_dict = _surgery(net)           # the same as data: {"0": 8, "4": 32} + a plain state_dict

    # a model that is not a Sequential names its links: which layer feeds which, and what happens in between
    links = [Link("conv1", "conv2", torch.relu), Link("conv2", "fc1", torch.relu), Link("fc1", "fc2", torch.relu)]
    small = shrink(my_cnn, 0.5, links=links)

Links
-----
A :class:`Link` says that ``producer``'s output units (Linear rows, Conv2d filters) are read by exactly one
``consumer`` (a Conv2d: its input channels; a Linear: its input columns, ``H*W`` consecutive ones per channel
after ``flatten`` of a conv output, which is channel-major), with only unit-wise things in between: an elementwise
``activation``, pooling, flatten, dropout. Links come from ``links=``, else from the model's own
``structured_links()`` method, else they are traced from an ``nn.Sequential`` (:func:`_trace_links`). The last
layer (the classifier) is never a producer, so the model's outputs keep their number. Residual connections,
concatenations and normalisation layers between the two are not chains: :func:`_trace_links` refuses them.

Two steps
---------
1. :func:`apply_structured_masks` ranks each producer's units by the L2 norm of their weights and masks the
   weakest with ``torch.nn.utils.prune.ln_structured(..., n=2, dim=0)``: the *masked model*. A removed unit's
   weight row is zero but its bias is not, so it still outputs a constant: ``activation(bias)`` (pooling a
   constant map gives the same constant).
2. :func:`_surgery` deletes those units: the producer loses its rows, the consumer the matching inputs, and each
   removed unit's constant is folded into the consumer's bias (``sum`` of the consumer's weights on that unit's
   inputs times the constant). So the smaller model computes exactly what the masked one did, up to float
   rounding. That needs every input position of the consumer to see the constant: a padded consumer
   convolution is refused unless every folded constant is exactly zero.

Rules chosen here
-----------------
- **At least one unit survives.** ``ratio`` is the fraction of a layer's units removed,
  ``units_removed(units, ratio) = min(round(ratio * units), units - 1)`` (``round`` as in
  ``torch.nn.utils.prune``: round-half-to-even); a layer with no units cannot be built.
- **Which units :func:`_surgery` removes.** A unit is removed iff its row of ``weight_mask`` is all zero when the
  layer carries a pruning mask, else (e.g. after ``prune.remove``) iff its weight row is all zero: either way its
  effective weights are zero, so removing it and folding its bias is exact. Should every unit of a layer qualify,
  unit 0 is kept (still exact: it computes what it computed before).
- **Rebuilding.** :func:`apply_surgery` asks the model for ``with_widths({producer: units})`` (a fresh model of
  its own class, so a model that stores its config, like nanoGPT's ``GPT(config)``, stays truthful); a model
  without it is deep-copied and its producer / consumer layers are replaced by smaller ``nn.Linear`` /
  ``nn.Conv2d`` layers with the same settings.

Parameters: removing a fraction ``r`` of the units of two adjacent layers removes about ``1 - (1 - r)**2`` of the
weights between them (75 % at ``r = 0.5``); the first layer's inputs and the classifier's outputs stay, so those
layers lose about ``r``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from ..checks import _check_int, _check_ratio
from .measure import _effective_state_dict
from .unstructured import bake_in

__all__ = [
    "Link",
    "apply_structured_masks",
    "apply_surgery",
    "shrink",
]

_Activation = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Link:
    """``producer``'s output units feed ``consumer`` and nothing else, through ``activation``; see the module
    docstring.

    Example::

        >>> Link("conv1", "conv2", torch.relu)
    """

    producer: str  # name (as in named_modules) of the Linear / Conv2d whose output units can be removed
    consumer: str  # the Linear / Conv2d that reads them: its input channels / columns go with them
    activation: _Activation | None = None  # what an output value goes through on the way (ReLU ...); None: nothing


# Modules that act on every value alone: a removed unit's constant goes through them.
_ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
)
# Modules that keep a constant map constant and channels in place; they need nothing at surgery.
_TRANSPARENT = (nn.Identity, nn.Flatten, nn.Dropout, nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)


def _weighted(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.Conv2d))


def _compose(functions: Sequence[nn.Module]) -> _Activation | None:
    if not functions:
        return None
    return nn.Sequential(*functions)


def _transparent(module: nn.Module) -> bool:
    if isinstance(module, nn.AvgPool2d):
        # Zero padding counted in the average would turn a constant map into a different value at the borders.
        return module.padding in (0, (0, 0)) or not module.count_include_pad
    return isinstance(module, _TRANSPARENT)


def _trace_links(model: nn.Sequential) -> list[Link]:
    """The links of an ``nn.Sequential`` (nested ones flattened): each Linear / Conv2d but the last feeds the next
    one, through elementwise activations, pooling, flatten and dropout only.

    Args:
        model: an ``nn.Sequential``.

    Returns:
        One :class:`Link` per pair of consecutive weighted layers.

    Raises:
        ValueError: ``model`` is not an ``nn.Sequential``, or another module sits between two weighted layers
            (normalisation, attention, a custom block: surgery could not keep the outputs equal across it).

    Example::

        >>> trace_links(net)   # [Link("1", "3", ...), Link("3", "5", ...)]
    """
    if not isinstance(model, nn.Sequential):
        raise ValueError(
            f"links can only be traced from an nn.Sequential, not {type(model).__name__}; pass "
            "links=[Link(producer, consumer, activation), ...] or give the model a structured_links() method"
        )
    links: list[Link] = []
    producer: str | None = None
    between: list[nn.Module] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            continue  # containers: their children come next in named_modules' order
        if _weighted(module):
            if producer is not None:
                links.append(Link(producer, name, _compose(between)))
            producer, between = name, []
        elif isinstance(module, _ELEMENTWISE):
            between.append(module)
        elif not _transparent(module):
            if producer is None:
                continue  # before the first weighted layer, nothing is pruned: anything goes
            hint = (
                " (fold it into the layer before, e.g. torch.nn.utils.fusion.fuse_conv_bn_eval)"
                if isinstance(module, nn.modules.batchnorm._BatchNorm)
                else ""
            )
            raise ValueError(
                f"cannot trace structured links through {name!r} ({type(module).__name__}){hint}; only "
                "elementwise activations, pooling, flatten and dropout may sit between pruned layers"
            )
    return links


def _resolve_links(model: nn.Module, links: Iterable[Link | tuple] | None = None) -> list[Link]:
    """The links to use: ``links`` (``Link``s or ``(producer, consumer[, activation])`` tuples), else the model's
    ``structured_links()``, else :func:`_trace_links`. Checked: every name is a Linear / Conv2d of the model,
    each producer feeds one consumer, and the consumer's inputs fit the producer's units."""
    if links is None:
        links = model.structured_links() if hasattr(model, "structured_links") else _trace_links(model)
    resolved = [link if isinstance(link, Link) else Link(*link) for link in links]
    if not resolved:
        raise ValueError("no structured links: the model needs at least two chained Linear / Conv2d layers")
    producers = [link.producer for link in resolved]
    if len(set(producers)) != len(producers):
        raise ValueError(f"a layer can feed only one consumer; producers {producers} repeat one")
    for link in resolved:
        producer, consumer = _layer(model, link.producer), _layer(model, link.consumer)
        units, inputs = producer.weight.shape[0], consumer.weight.shape[1]
        grouped = [
            n for n, m in ((link.producer, producer), (link.consumer, consumer)) if getattr(m, "groups", 1) > 1
        ]
        if grouped:
            raise ValueError(f"grouped convolutions cannot be pruned structurally here: {grouped}")
        if isinstance(consumer, nn.Conv2d) and inputs != units:
            raise ValueError(f"{link.consumer!r} has {inputs} input channels, {link.producer!r} {units} units")
        if isinstance(consumer, nn.Linear) and inputs % units:
            raise ValueError(
                f"{link.consumer!r} has {inputs} inputs, not a multiple of {link.producer!r}'s {units}"
            )
    return resolved


def _layer(model: nn.Module, name: str) -> nn.Module:
    try:
        module = model.get_submodule(name)
    except AttributeError as e:
        raise ValueError(f"the model has no layer {name!r}") from e
    if not _weighted(module):
        raise ValueError(f"layer {name!r} is a {type(module).__name__}; structured links join Linear / Conv2d")
    return module


def _check_layers(links: Sequence[Link], layers: Iterable[str] | str | None) -> list[Link]:
    """The links whose producer is in ``layers`` (all when None), in link order; unknown names raise."""
    if layers is None:
        return list(links)
    names = {layers} if isinstance(layers, str) else set(layers)
    allowed = [link.producer for link in links]
    unknown = sorted(names - set(allowed))
    if unknown:
        raise ValueError(f"unknown structured layer(s) {unknown}; allowed: {allowed}")
    return [link for link in links if link.producer in names]


def _units_removed(units: int, ratio: float) -> int:
    """Units removed of ``units`` at ``ratio``: ``round(ratio * units)``, at most ``units - 1``."""
    ratio = _check_ratio(ratio, what="units")
    return min(round(ratio * _check_int(units, "units")), int(units) - 1)


# ---------------------------------------------------------------------------------------------- masking


def apply_structured_masks(
    model: nn.Module,
    ratio: float,
    links: Iterable[Link | tuple] | None = None,
    layers: Iterable[str] | str | None = None,
) -> dict[str, torch.Tensor]:
    """Mask the weakest (L2 norm) ``ratio`` of the output units of every producer (or of ``layers``), in place.

    Uses ``prune.ln_structured(module, "weight", amount=k, n=2, dim=0)``, so shapes stay and ``weight_orig`` /
    ``weight_mask`` appear.

    Args:
        model: the model; masks attach to its producers.
        ratio: the fraction of units removed, in [0, 1).
        links: the links (default: traced from an ``nn.Sequential``).
        layers: the producers to mask (default: all).

    Returns:
        ``{layer: sorted kept unit indices}``.

    Raises:
        ValueError: a bad ratio, an unknown layer, a layer already masked, or links that cannot be traced; all
            checked before any layer is touched.

    Example::

        >>> apply_structured_masks(net, 0.5); small = apply_surgery(net)
    """
    ratio = _check_ratio(ratio, what="units")
    chosen = _check_layers(_resolve_links(model, links), layers)
    already = [link.producer for link in chosen if hasattr(_layer(model, link.producer), "weight_mask")]
    if already:
        # A second ln_structured would count `amount` among the surviving units only (PruningContainer),
        # silently changing what `ratio` means; make the caller decide (prune.remove first, or a fresh model).
        raise ValueError(f"layer(s) {already} already carry a weight mask")
    kept = {}
    for link in chosen:
        module = _layer(model, link.producer)
        prune.ln_structured(module, "weight", amount=_units_removed(module.weight.shape[0], ratio), n=2, dim=0)
        kept[link.producer] = _kept_from(module.weight_mask)
    return kept


def _kept_from(source: torch.Tensor) -> torch.Tensor:
    """Sorted indices of the units whose row of ``source`` has a non-zero; unit 0 if none has."""
    kept = torch.nonzero(source.detach().reshape(source.shape[0], -1).ne(0).any(dim=1)).flatten()
    if kept.numel() == 0:
        kept = torch.zeros(1, dtype=torch.long, device=source.device)
    return kept


def _kept_units(model: nn.Module, links: Iterable[Link | tuple] | None = None) -> dict[str, torch.Tensor]:
    """``{producer: sorted kept unit indices}`` by the rule :func:`_surgery` uses (mask rows, else weight rows)."""
    out = {}
    for link in _resolve_links(model, links):
        module = _layer(model, link.producer)
        out[link.producer] = _kept_from(getattr(module, "weight_mask", module.weight))
    return out


# ------------------------------------------------------------------------------- surgery on plain tensors


def _prune_out_units(w: torch.Tensor, b: torch.Tensor | None, keep: torch.Tensor):
    """Keep only output units ``keep`` of a Linear ``[out, in]`` or Conv2d ``[out, in, kh, kw]`` weight + bias."""
    return w.index_select(0, keep).contiguous(), None if b is None else b.index_select(0, keep).contiguous()


def _prune_in_units(w: torch.Tensor, keep: torch.Tensor, group: int = 1) -> torch.Tensor:
    """Keep only the inputs of units ``keep``: Conv2d input channels, Linear columns; a Linear after ``flatten``
    of a conv output has ``group = H*W`` consecutive columns per channel (flatten is channel-major)."""
    columns = (keep[:, None] * group + torch.arange(group, device=keep.device)[None, :]).flatten()
    return w.index_select(1, columns).contiguous()


def _fold_removed_units(
    w_next: torch.Tensor, units: int, removed: torch.Tensor, constants: torch.Tensor
) -> torch.Tensor:
    """What to add to the consumer's bias so it no longer needs the removed units' constant outputs.

    ``w_next`` is the consumer's weight, whose inputs come from ``units`` units; ``constants[i]`` is what unit
    ``removed[i]`` feeds forward at every position. Output ``o`` receives ``constants[i] * sum(w_next[o, that
    unit's inputs])``; a unit's inputs are one column, one kernel slice (a valid conv sees all its taps inside
    the constant map) or ``H*W`` columns after flatten, all unit-major, so ``[out, units, -1]`` covers them.
    Summed in float64, then cast back.
    """
    per_unit = w_next.detach().to(torch.float64).reshape(w_next.shape[0], units, -1)
    contribution = per_unit.index_select(1, removed).sum(dim=2) @ constants.detach().to(torch.float64)
    return contribution.to(w_next.dtype)


def _surgery(
    model: nn.Module, links: Iterable[Link | tuple] | None = None
) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """Physically remove the masked (or all-zero) units of every producer; ``model`` is not modified.

    Removed units' constants are folded into the consumers' biases, so the outputs stay equal.

    Args:
        model: a model with structured masks (or all-zero units).
        links: the links (default: traced from an ``nn.Sequential``).

    Returns:
        ``{producer: units kept}`` and the whole state_dict (CPU tensors, masks folded in, producers and consumers
        cut), which a model of those widths loads with ``strict=True``.

    Raises:
        ValueError: a removed unit's constant output cannot be folded into its consumer, naming both.

    Example::

        >>> widths, state = surgery(masked_net)
    """
    resolved = _resolve_links(model, links)
    keep = _kept_units(model, resolved)
    sd = _effective_state_dict(model)
    for link in resolved:  # any order: a removed unit's row is zero, so folding into it adds exactly zero
        consumer = _layer(model, link.consumer)
        w_key, b_key = f"{link.producer}.weight", f"{link.producer}.bias"
        nw_key, nb_key = f"{link.consumer}.weight", f"{link.consumer}.bias"
        units = sd[w_key].shape[0]
        removed = torch.ones(units, dtype=torch.bool)
        removed[keep[link.producer]] = False
        removed = torch.nonzero(removed).flatten()
        bias = sd.get(b_key, torch.zeros(units))
        constants = bias.index_select(0, removed)
        if link.activation is not None:
            with torch.no_grad():
                constants = link.activation(constants)
        if bool(constants.ne(0).any()):
            padded = isinstance(consumer, nn.Conv2d) and (
                consumer.padding == "same" or any(p != 0 for p in consumer.padding)
            )
            if padded or nb_key not in sd:
                why = "is padded (its borders would mix the constant with zeros)" if padded else "has no bias"
                raise ValueError(f"cannot fold {link.producer!r}'s removed units into {link.consumer!r}: it {why}")
            sd[nb_key] = sd[nb_key] + _fold_removed_units(sd[nw_key], units, removed, constants)
        sd[w_key], new_bias = _prune_out_units(sd[w_key], sd.get(b_key), keep[link.producer])
        if new_bias is not None:
            sd[b_key] = new_bias
        group = sd[nw_key].shape[1] // units if isinstance(consumer, nn.Linear) else 1
        sd[nw_key] = _prune_in_units(sd[nw_key], keep[link.producer], group)
    return {p: int(k.numel()) for p, k in keep.items()}, sd


def _resized(module: nn.Module, inputs: int, outputs: int) -> nn.Module:
    """A fresh layer like ``module`` with other input / output sizes, on the same device and dtype."""
    like = {"device": module.weight.device, "dtype": module.weight.dtype}
    if isinstance(module, nn.Linear):
        return nn.Linear(inputs, outputs, bias=module.bias is not None, **like)
    return nn.Conv2d(
        inputs,
        outputs,
        module.kernel_size,
        stride=module.stride,
        padding=module.padding,
        dilation=module.dilation,
        bias=module.bias is not None,
        padding_mode=module.padding_mode,
        **like,
    )


def _copy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works on a masked model after a forward pass with autograd on.

    The prune hook then leaves ``weight`` as a non-leaf tensor, which ``deepcopy`` refuses; it is recomputed from
    ``weight_orig * weight_mask`` at the next forward anyway, so the copy gets a detached one.
    """
    swapped = []
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                tensor = getattr(module, hook._tensor_name)
                if not tensor.is_leaf:
                    swapped.append((module, hook._tensor_name, tensor))
                    setattr(module, hook._tensor_name, tensor.detach())
    try:
        return copy.deepcopy(model)
    finally:
        for module, name, tensor in swapped:
            setattr(module, name, tensor)


def apply_surgery(model: nn.Module, links: Iterable[Link | tuple] | None = None) -> nn.Module:
    """A new, smaller model computing what the masked ``model`` computes (see :func:`_surgery`).

    Args:
        model: a model with structured masks; not modified.
        links: the links (default: traced from an ``nn.Sequential``).

    Returns:
        The new model, on ``model``'s device, in its train / eval mode, with no masks attached.

    Raises:
        ValueError: as :func:`_surgery`.

    Example::

        >>> apply_structured_masks(net, 0.5); small = apply_surgery(net)
    """
    widths, state_dict = _surgery(model, links)
    if hasattr(model, "with_widths"):
        small = model.with_widths(widths)
    else:
        small = bake_in(_copy(model))
        for name, module in small.named_modules():
            if _weighted(module):
                shape = state_dict[f"{name}.weight"].shape
                if tuple(shape) != tuple(module.weight.shape):
                    small.set_submodule(name, _resized(module, shape[1], shape[0]))
    first = next(model.parameters(), None)
    small.load_state_dict(state_dict, strict=True)
    if first is not None:
        small.to(first.device)
    return small.train(model.training)


def shrink(
    model: nn.Module,
    ratio: float,
    links: Iterable[Link | tuple] | None = None,
    layers: Iterable[str] | str | None = None,
) -> nn.Module:
    """A new, smaller model: mask a copy of ``model`` at ``ratio`` (:func:`apply_structured_masks`) and cut the
    units out (:func:`apply_surgery`). ``model`` itself is left untouched.

    Args:
        model: any chain of Linear / Conv2d layers.
        ratio: the fraction of each producer's units removed, in [0, 1).
        links: the links (default: traced from an ``nn.Sequential``).
        layers: the producers to shrink (default: all).

    Returns:
        The smaller model.

    Raises:
        ValueError: as :func:`apply_structured_masks` and :func:`_surgery`.

    Example::

        >>> small = shrink(net, 0.5)   # half the hidden units, outputs kept equal to the masked model's
    """
    masked = _copy(model)
    apply_structured_masks(masked, ratio, links, layers)
    return apply_surgery(masked, links)
