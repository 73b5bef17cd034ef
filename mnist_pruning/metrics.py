"""Measured metrics of a (pruned) model: sparsity, FLOPs, latency, and the row of numbers a results CSV needs.

Usage::

    from mnist_pruning.metrics import sparsity, layer_sparsity, flops, effective_flops, latency_ms, model_report
    sparsity(model)                 # 0.9: fraction of prunable weights that are exactly zero (biases excluded)
    layer_sparsity(model)           # DataFrame: layer, shape, params, nonzero, sparsity (one row per layer)
    flops(model)                    # 532400 for LeNet-300-100: dense forward FLOPs per sample
    effective_flops(model)          # what a sparse kernel would do: per layer, FLOPs x weight density
    latency_ms(model, 256)          # median ms per forward of a [256, 1, 28, 28] batch
    model_report(model)             # {"params_total", "params_nonzero", "sparsity", "flops_dense", ...}

Everything reads the weights the model computes with: with ``torch.nn.utils.prune`` attached that is
``weight_orig * weight_mask``, not the possibly stale ``weight`` attribute. Nothing here changes the model: the
training/eval mode is restored after timing.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts matrix multiplications and
convolutions only, at 2 FLOPs per multiply-accumulate; bias additions, ReLU and max-pooling are not counted
(they are < 1 % of these models' arithmetic).
"""

from __future__ import annotations

import copy
import logging
import math

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .models import count_nonzero_parameters, count_parameters, prunable_layers

__all__ = [
    "effective_weight",
    "sparsity",
    "layer_sparsity",
    "flops",
    "layer_flops",
    "effective_flops",
    "latency_ms",
    "torch_benchmark",
    "model_report",
]

INPUT_SHAPE = (1, 1, 28, 28)


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight ``module`` computes with: ``weight_orig * weight_mask`` while a prune mask is attached."""
    mask = getattr(module, "weight_mask", None)
    orig = getattr(module, "weight_orig", None)
    if isinstance(mask, torch.Tensor) and isinstance(orig, torch.Tensor):
        return (orig * mask).detach()
    return module.weight.detach()


def layer_sparsity(model: nn.Module) -> pd.DataFrame:
    """One row per prunable layer (Linear/Conv2d weight, biases excluded): layer, shape, params, nonzero,
    sparsity."""
    rows = []
    for name, module in prunable_layers(model):
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
    return pd.DataFrame(rows, columns=["layer", "shape", "params", "nonzero", "sparsity"])


def sparsity(model: nn.Module) -> float:
    """Fraction of prunable weights (Linear/Conv2d ``.weight``, biases excluded) that are exactly zero."""
    table = layer_sparsity(model)
    total = int(table["params"].sum())
    return 1.0 - int(table["nonzero"].sum()) / total if total else 0.0


def _count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> FlopCounterMode:
    """Run one forward under FlopCounterMode on zeros of ``input_shape`` (values do not change the count)."""
    param = next(model.parameters(), None)
    x = torch.zeros(
        input_shape,
        device=param.device if param is not None else None,
        dtype=param.dtype if param is not None else None,
    )
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return counter


def flops(model: nn.Module, input_shape: tuple[int, ...] = INPUT_SHAPE) -> int:
    """Dense forward FLOPs per sample (matmul/conv only, 2 per multiply-accumulate), whatever the zeros."""
    return _count_flops(model, input_shape).get_total_flops() // input_shape[0]


def layer_flops(model: nn.Module, input_shape: tuple[int, ...] = INPUT_SHAPE) -> dict[str, int]:
    """Dense FLOPs per sample of each prunable layer, keyed by its name in ``model.named_modules()``."""
    counts = _count_flops(model, input_shape).get_flop_counts()
    # FlopCounterMode names modules "<RootClass>.<qualified name>"; the root itself is just "<RootClass>".
    root = type(model).__name__
    out = {}
    for name, _ in prunable_layers(model):
        per_op = counts.get(f"{root}.{name}" if name else root, {})
        out[name] = sum(per_op.values()) // input_shape[0]
    return out


def effective_flops(model: nn.Module, input_shape: tuple[int, ...] = INPUT_SHAPE) -> int:
    """FLOPs per sample a sparse kernel would do: each prunable layer's dense FLOPs times its weight density.

    An approximation: it assumes work is proportional to the surviving weights (true for a CSR matmul; a conv
    reuses each weight at every output position, so the scaling holds there too) and ignores index overhead,
    which is why measured sparse speed-ups are smaller. FLOPs outside prunable layers are counted dense.
    """
    total = flops(model, input_shape)
    per_layer = layer_flops(model, input_shape)
    density = {
        row.layer: row.nonzero / row.params if row.params else 0.0 for row in layer_sparsity(model).itertuples()
    }
    saved = sum(f * (1.0 - density[name]) for name, f in per_layer.items())
    return int(round(total - saved))


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
    device: str | torch.device | None = None,
    min_run_time: float = 0.2,
) -> float:
    """Median milliseconds per forward of a ``[batch_size, 1, 28, 28]`` batch (eval mode, inference_mode).

    Measured with ``torch.utils.benchmark.Timer.blocked_autorange`` using ``torch.get_num_threads()`` threads;
    the Timer synchronises CUDA itself. ``device`` defaults to where the model's parameters are; another device
    times a copy of the model moved there.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    param = next(model.parameters(), None)
    here = param.device if param is not None else torch.device("cpu")
    device = torch.device(device) if device is not None else here
    if device != here:
        model = copy.deepcopy(model).to(device)  # time a copy: moving the caller's model would be a side effect
    x = torch.randn(batch_size, *INPUT_SHAPE[1:], device=device)
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


def model_report(model: nn.Module) -> dict[str, int | float]:
    """Counts for a results row: params_total, params_nonzero, sparsity, flops_dense, flops_effective.

    ``params_nonzero`` includes biases; ``sparsity`` is over prunable weights only (see :func:`sparsity`).
    """
    return {
        "params_total": count_parameters(model),
        "params_nonzero": count_nonzero_parameters(model),
        "sparsity": sparsity(model),
        "flops_dense": flops(model),
        "flops_effective": effective_flops(model),
    }
