"""What a (pruned) model really holds and costs: the weights it computes with, sparsity, FLOPs, latency.

Usage::

    from mnist_pruning.sparsity import measure
    measure.sparsity(model)                          # 0.9: fraction of prunable weights that are exactly zero
    measure.layer_sparsity(model)                    # [{"layer", "shape", "params", "nonzero", "sparsity"}, ...]
    measure.flops(model, (1, 28, 28))                # dense forward FLOPs per sample of that input shape
    measure.effective_flops(model, (1, 28, 28))      # what a sparse kernel would do: per layer, FLOPs x density
    measure.latency_ms(model, 256, (1, 28, 28))      # median ms per forward of a [256, 1, 28, 28] batch

"Prunable" means the layers :func:`prunable_layers` yields: every ``nn.Linear`` and ``nn.Conv2d`` unless a
``filter_fn(module, fqn)`` says otherwise (torchao's ``sparsify_`` convention).

Everything reads the weights the model computes with (:func:`effective_weight`): with ``torch.nn.utils.prune``
attached that is ``weight_orig * weight_mask``, recomputed here, never the ``weight`` attribute, which the prune
hook refreshes only on the next forward and so is stale after an optimizer step. Nothing here changes the model:
the training/eval mode is restored after timing.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts matrix multiplications and
convolutions only, at 2 FLOPs per multiply-accumulate; bias additions, activations and pooling are not counted.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..checks import check_int

__all__ = [
    "FilterFn",
    "prunable_layers",
    "effective_tensor",
    "effective_weight",
    "effective_state_dict",
    "count_parameters",
    "count_nonzero_parameters",
    "layer_sparsity",
    "sparsity",
    "flops",
    "layer_flops",
    "effective_flops",
    "latency_ms",
    "torch_benchmark",
]

FilterFn = Callable[[nn.Module, str], bool]  # (module, fully qualified name) -> prune this layer?
StateDictLike = nn.Module | Mapping[str, torch.Tensor]


def _is_weighted_layer(module: nn.Module, fqn: str) -> bool:
    return isinstance(module, (nn.Linear, nn.Conv2d))


def prunable_layers(model: nn.Module, filter_fn: FilterFn | None = None) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every Linear / Conv2d layer (forward-declaration order) that ``filter_fn`` accepts.

    ``filter_fn(module, fqn)`` is asked only about Linear and Conv2d layers, the ones whose ``weight`` the
    pruning methods, the compact format and the metrics here know how to handle.
    """
    return [
        (name, module)
        for name, module in model.named_modules()
        if _is_weighted_layer(module, name) and (filter_fn is None or filter_fn(module, name))
    ]


def effective_tensor(module: nn.Module, name: str = "weight") -> torch.Tensor | None:
    """The ``name`` tensor ``module`` computes with (detached): ``<name>_orig * <name>_mask`` while a prune mask is
    attached, else the attribute itself (``None`` for a layer built with ``bias=False``)."""
    orig = getattr(module, name + "_orig", None)
    mask = getattr(module, name + "_mask", None)
    if isinstance(orig, torch.Tensor) and isinstance(mask, torch.Tensor):
        return (orig * mask).detach()
    tensor = getattr(module, name, None)
    return tensor.detach() if isinstance(tensor, torch.Tensor) else None


def effective_weight(module: nn.Module) -> torch.Tensor:
    """:func:`effective_tensor` of ``weight``."""
    weight = effective_tensor(module, "weight")
    if weight is None:
        raise ValueError(f"{type(module).__name__} has no weight")
    return weight


def effective_state_dict(model_or_state_dict: StateDictLike) -> dict[str, torch.Tensor]:
    """The tensors the model computes with: CPU copies, prune reparametrisation folded in, zeros as ``+0.0``.

    ``<name>_orig`` with a matching ``<name>_mask`` becomes ``<name> = orig * mask`` (the same product the prune
    forward pre-hook computes, so the values are bitwise those the model uses); the mask is dropped. ``-0.0``
    becomes ``+0.0`` so that "pruned" has a single bit pattern and the compact format can be exactly lossless.
    """
    if isinstance(model_or_state_dict, nn.Module):
        sd: Mapping[str, torch.Tensor] = model_or_state_dict.state_dict()
    else:
        sd = model_or_state_dict
    out: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict entry {key!r} is a {type(t).__name__}, not a tensor")
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in sd:
            continue
        if key.endswith("_orig") and key[: -len("_orig")] + "_mask" in sd:
            key = key[: -len("_orig")]
            t = t * sd[key + "_mask"]
        t = t.detach().to("cpu")
        if t.is_floating_point():
            t = torch.where(t == 0, torch.zeros((), dtype=t.dtype), t)
        else:
            t = t.clone()
        out[key] = t.contiguous()
    return out


def _effective_parameters(model: nn.Module):
    """Every parameter as the model computes with it, once: a masked ``weight_orig`` as ``orig * mask``."""
    for module in model.modules():
        for name, _ in module.named_parameters(recurse=False):
            yield effective_tensor(module, name.removesuffix("_orig"))


def count_parameters(model: nn.Module) -> int:
    """Parameters the architecture holds (weights + biases), counted once per tensor; ``weight_mask`` buffers
    are not parameters, so a masked model counts what the unmasked one does."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero_parameters(model: nn.Module) -> int:
    """Non-zero parameters as the model computes with them (masks applied), biases included."""
    return sum(int(torch.count_nonzero(t).item()) for t in _effective_parameters(model))


def layer_sparsity(model: nn.Module, filter_fn: FilterFn | None = None) -> list[dict]:
    """One record per prunable layer (weights only, biases excluded): layer, shape, params, nonzero, sparsity.

    A list of dicts, so ``pandas.DataFrame(layer_sparsity(model))`` is a table.
    """
    rows = []
    for name, module in prunable_layers(model, filter_fn):
        w = effective_weight(module)
        nonzero = int(torch.count_nonzero(w).item())
        rows.append(
            {
                "layer": name,
                "shape": tuple(w.shape),
                "params": w.numel(),
                "nonzero": nonzero,
                "sparsity": 1.0 - nonzero / w.numel() if w.numel() else 0.0,
            }
        )
    return rows


def sparsity(model: nn.Module, filter_fn: FilterFn | None = None) -> float:
    """Fraction of prunable weights (biases excluded) that are exactly zero."""
    rows = layer_sparsity(model, filter_fn)
    total = sum(r["params"] for r in rows)
    return 1.0 - sum(r["nonzero"] for r in rows) / total if total else 0.0


def _check_shape(sample_shape: Sequence[int]) -> tuple[int, ...]:
    if isinstance(sample_shape, (str, bytes)) or not isinstance(sample_shape, Sequence):
        raise ValueError(f"sample_shape must be a sequence of positive integers, got {sample_shape!r}")
    shape = tuple(sample_shape)
    for dim in shape:
        check_int(dim, f"every dimension of sample_shape {shape!r}")
    return shape


def _param_like(model: nn.Module) -> dict:
    param = next(model.parameters(), None)
    return {} if param is None else {"device": param.device, "dtype": param.dtype}


def _count_flops(model: nn.Module, sample_shape: Sequence[int]) -> FlopCounterMode:
    """One forward of a single zero sample under FlopCounterMode (values do not change the count)."""
    x = torch.zeros((1, *_check_shape(sample_shape)), **_param_like(model))
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()  # a train-mode forward would update BatchNorm's running statistics; the count is the same
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return counter


def flops(model: nn.Module, sample_shape: Sequence[int]) -> int:
    """Dense forward FLOPs of one sample of shape ``sample_shape`` (e.g. ``(1, 28, 28)``), whatever the zeros."""
    return _count_flops(model, sample_shape).get_total_flops()


def layer_flops(
    model: nn.Module, sample_shape: Sequence[int], filter_fn: FilterFn | None = None
) -> dict[str, int]:
    """Dense FLOPs per sample of each prunable layer, keyed by its name in ``model.named_modules()``."""
    counts = _count_flops(model, sample_shape).get_flop_counts()
    # FlopCounterMode names modules "<RootClass>.<qualified name>"; the root itself is just "<RootClass>".
    root = type(model).__name__
    return {
        name: sum(counts.get(f"{root}.{name}" if name else root, {}).values())
        for name, _ in prunable_layers(model, filter_fn)
    }


def effective_flops(model: nn.Module, sample_shape: Sequence[int], filter_fn: FilterFn | None = None) -> int:
    """FLOPs per sample a sparse kernel would do: each prunable layer's dense FLOPs times its weight density.

    An approximation: it assumes work is proportional to the surviving weights (true for a CSR matmul; a conv
    reuses each weight at every output position, so the scaling holds there too) and ignores index overhead,
    which is why measured sparse speed-ups are smaller. FLOPs outside prunable layers are counted dense.
    """
    per_layer = layer_flops(model, sample_shape, filter_fn)
    density = {r["layer"]: r["nonzero"] / r["params"] if r["params"] else 0.0 for r in layer_sparsity(model)}
    saved = sum(f * (1.0 - density[name]) for name, f in per_layer.items())
    return int(round(flops(model, sample_shape) - saved))


def torch_benchmark():
    """``torch.utils.benchmark``, imported on first use.

    Importing it pulls in ``torch.utils.cpp_extension``, which on a CUDA build of torch without a CUDA runtime
    (a CPU-only machine) logs a "No CUDA runtime is found" warning that means nothing here.
    """
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils import benchmark
    finally:
        log.setLevel(level)
    return benchmark


def latency_ms(
    model: nn.Module,
    batch_size: int,
    sample_shape: Sequence[int],
    device: str | torch.device | None = None,
    min_run_time: float = 0.2,
) -> float:
    """Median milliseconds per forward of a ``[batch_size, *sample_shape]`` batch (eval mode, inference_mode).

    Measured with ``torch.utils.benchmark.Timer.blocked_autorange`` using ``torch.get_num_threads()`` threads;
    the Timer synchronises CUDA itself. ``device`` defaults to where the model's parameters are; another device
    times a copy of the model moved there.
    """
    batch_size = check_int(batch_size, "batch_size")
    shape = _check_shape(sample_shape)
    here = _param_like(model).get("device", torch.device("cpu"))
    device = torch.device(device) if device is not None else here
    if device != here:
        model = copy.deepcopy(model).to(device)  # time a copy: moving the caller's model would be a side effect
    x = torch.randn(batch_size, *shape, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for _ in range(3):  # warm-up: allocator, lazy CUDA init, prune hooks' first mask product
                model(x)
            timer = torch_benchmark().Timer(
                stmt="model(x)", globals={"model": model, "x": x}, num_threads=torch.get_num_threads()
            )
            measurement = timer.blocked_autorange(min_run_time=min_run_time)
    finally:
        model.train(was_training)
    ms = measurement.median * 1e3
    if not math.isfinite(ms) or ms <= 0:
        raise RuntimeError(f"latency measurement came out as {ms!r} ms")
    return ms
