"""What a (pruned) model really holds and costs: the weights it computes with, sparsity, FLOPs, latency.

Usage::

    from mnist_pruning.sparsity import measure
    measure.sparsity(model)                          # 0.9: fraction of prunable weights that are exactly zero
    measure.layer_sparsity(model)                    # [{"layer", "shape", "params", "nonzero", "sparsity"}, ...]
    measure.flops(model, (1, 28, 28))                # dense forward FLOPs per sample of that input shape
    measure.effective_flops(model, (1, 28, 28))      # what a sparse kernel would do: per layer, FLOPs x density
    measure.latency_ms(model, 256, (1, 28, 28))      # median ms per forward of a [256, 1, 28, 28] batch
    ms = measure.time_models({"dense": a, "pruned": b}, measure.Timing(rounds=3), (1, 28, 28))
    ms["dense"][256].best_ms / ms["pruned"][256].best_ms   # a speed-up; Latency.low_ms..high_ms is the noise band

"Prunable" means the layers :func:`prunable_layers` yields: every ``nn.Linear`` and ``nn.Conv2d`` unless a
``filter_fn(module, fqn)`` says otherwise (torchao's ``sparsify_`` convention).

Everything reads the weights the model computes with (:func:`effective_weight`): with ``torch.nn.utils.prune``
attached that is ``weight_orig * weight_mask``, recomputed here, never the ``weight`` attribute, which the prune
hook refreshes only on the next forward and so is stale after an optimizer step. Nothing here changes the model:
the training/eval mode is restored after timing.

Latency is timed in one place, :func:`time_models`: models alternate round by round (drift from other jobs hits
them all alike), each round gives a ``torch.utils.benchmark`` median, and the fastest round is the latency (noise
only ever adds time) while the spread over rounds is the noise band (:class:`_Latency`).

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts matrix multiplications and
convolutions only, at 2 FLOPs per multiply-accumulate; bias additions, activations and pooling are not counted.
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..checks import _check_int

__all__ = [
    "prunable_layers",
    "effective_weight",
    "count_parameters",
    "count_nonzero_parameters",
    "layer_sparsity",
    "sparsity",
    "flops",
    "effective_flops",
    "Timing",
    "time_models",
    "latency_ms",
]

_FilterFn = Callable[[nn.Module, str], bool]  # (module, fully qualified name) -> prune this layer?
_StateDictLike = nn.Module | Mapping[str, torch.Tensor]


def _is_weighted_layer(module: nn.Module, fqn: str) -> bool:
    return isinstance(module, (nn.Linear, nn.Conv2d))


def prunable_layers(model: nn.Module, filter_fn: _FilterFn | None = None) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every Linear / Conv2d layer (forward-declaration order) that ``filter_fn`` accepts.

    ``filter_fn(module, fqn)`` is asked only about Linear and Conv2d layers, the ones whose ``weight`` the
    pruning methods, the compact format and the metrics here know how to handle.
    """
    return [
        (name, module)
        for name, module in model.named_modules()
        if _is_weighted_layer(module, name) and (filter_fn is None or filter_fn(module, name))
    ]


def _folded(lookup: Callable[[str], object], name: str) -> object:
    """``<name>_orig * <name>_mask`` when ``lookup`` finds both tensors (a prune reparametrisation), else
    ``lookup(name)``: the one place the product torch's prune hook computes is written out."""
    orig, mask = lookup(name + "_orig"), lookup(name + "_mask")
    if isinstance(orig, torch.Tensor) and isinstance(mask, torch.Tensor):
        return orig * mask
    return lookup(name)


def _effective_tensor(module: nn.Module, name: str = "weight") -> torch.Tensor | None:
    """The ``name`` tensor ``module`` computes with (detached): ``<name>_orig * <name>_mask`` while a prune mask is
    attached, else the attribute itself (``None`` for a layer built with ``bias=False``).

    Example::

        >>> prune.l1_unstructured(layer, "weight", 0.5); effective_tensor(layer).eq(0).float().mean()   # 0.5
    """
    tensor = _folded(lambda key: getattr(module, key, None), name)
    return tensor.detach() if isinstance(tensor, torch.Tensor) else None


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight ``module`` computes with: :func:`_effective_tensor` of ``weight`` (a prune mask folded in).

    Args:
        module: a layer with a ``weight`` (plain, or reparametrised by ``torch.nn.utils.prune``).

    Returns:
        A detached tensor of the weight's shape; pruned entries are exactly zero.

    Raises:
        ValueError: ``module`` has no weight.

    Example::

        >>> prune.l1_unstructured(layer, "weight", 0.5); effective_weight(layer).eq(0).float().mean()   # 0.5
    """
    weight = _effective_tensor(module, "weight")
    if weight is None:
        raise ValueError(f"{type(module).__name__} has no weight")
    return weight


def _effective_state_dict(model_or_state_dict: _StateDictLike) -> dict[str, torch.Tensor]:
    """The tensors the model computes with: CPU copies, prune reparametrisation folded in, zeros as ``+0.0``.

    ``<name>_orig`` with a matching ``<name>_mask`` becomes ``<name> = orig * mask`` (the same product the prune
    forward pre-hook computes, so the values are bitwise those the model uses); the mask is dropped. ``-0.0``
    becomes ``+0.0`` so that "pruned" has a single bit pattern and the compact format can be exactly lossless.

    Args:
        model_or_state_dict: a model, or a state_dict of tensors.

    Returns:
        A new dict of contiguous CPU tensors, keyed as the plain (unpruned) model's state_dict.

    Raises:
        TypeError: an entry of the state_dict is not a tensor.

    Example::

        >>> sp.sparsify_(net, "global", 0.9); sorted(effective_state_dict(net))   # "1.weight", not "1.weight_orig"
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
            t = _folded(sd.get, key)
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
            yield _effective_tensor(module, name.removesuffix("_orig"))


def count_parameters(model: nn.Module) -> int:
    """Parameters the architecture holds (weights + biases), counted once per tensor.

    ``weight_mask`` buffers are not parameters, so a masked model counts what the unmasked one does.

    Args:
        model: any module.

    Returns:
        The number of parameter entries, zeros included.

    Example::

        >>> count_parameters(nn.Linear(784, 300))   # 235500
    """
    return sum(p.numel() for p in model.parameters())


def count_nonzero_parameters(model: nn.Module) -> int:
    """Non-zero parameters as the model computes with them (masks applied), biases included.

    Args:
        model: any module, masked or baked in.

    Returns:
        The number of parameter entries that are not exactly zero.

    Example::

        >>> sp.sparsify_(net, "global", 0.9); count_nonzero_parameters(net) < count_parameters(net)   # True
    """
    return sum(int(torch.count_nonzero(t).item()) for t in _effective_parameters(model))


def layer_sparsity(model: nn.Module, filter_fn: _FilterFn | None = None) -> list[dict]:
    """One record per prunable layer (weights only, biases excluded): layer, shape, params, nonzero, sparsity.

    Args:
        model: any module.
        filter_fn: ``filter_fn(module, fqn) -> bool`` choosing layers (torchao's convention); default: every
            Linear and Conv2d.

    Returns:
        A list of dicts, so ``pandas.DataFrame(layer_sparsity(model))`` is a table.

    Example::

        >>> [r["sparsity"] for r in layer_sparsity(net)]   # one fraction per Linear / Conv2d
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


def sparsity(model: nn.Module, filter_fn: _FilterFn | None = None) -> float:
    """Fraction of prunable weights (biases excluded) that are exactly zero, counted in the weights.

    Args:
        model: any module, masked or baked in.
        filter_fn: ``filter_fn(module, fqn) -> bool`` choosing layers; default: every Linear and Conv2d.

    Returns:
        A float in ``[0, 1]``; 0.0 for a model without prunable weights.

    Example::

        >>> sp.sparsify_(net, "global", 0.9); round(sparsity(net), 3)   # 0.9
    """
    rows = layer_sparsity(model, filter_fn)
    total = sum(r["params"] for r in rows)
    return 1.0 - sum(r["nonzero"] for r in rows) / total if total else 0.0


def _check_shape(sample_shape: Sequence[int]) -> tuple[int, ...]:
    if isinstance(sample_shape, (str, bytes)) or not isinstance(sample_shape, Sequence):
        raise ValueError(f"sample_shape must be a sequence of positive integers, got {sample_shape!r}")
    shape = tuple(sample_shape)
    for dim in shape:
        _check_int(dim, f"every dimension of sample_shape {shape!r}")
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
    """Dense forward FLOPs of one sample, whatever the zeros (``torch.utils.flop_counter``).

    Args:
        model: any module.
        sample_shape: the shape of one sample without the batch dimension, e.g. ``(1, 28, 28)``.

    Returns:
        FLOPs per sample.

    Raises:
        ValueError: ``sample_shape`` is not a sequence of positive integers.

    Example::

        >>> flops(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), (1, 28, 28))   # 15680
    """
    return _count_flops(model, sample_shape).get_total_flops()


def _layer_flops(
    model: nn.Module, sample_shape: Sequence[int], filter_fn: _FilterFn | None = None
) -> dict[str, int]:
    """Dense FLOPs per sample of each prunable layer.

    Args:
        model: any module.
        sample_shape: the shape of one sample without the batch dimension.
        filter_fn: ``filter_fn(module, fqn) -> bool`` choosing layers; default: every Linear and Conv2d.

    Returns:
        ``{name in model.named_modules(): FLOPs}``.

    Raises:
        ValueError: ``sample_shape`` is not a sequence of positive integers.

    Example::

        >>> layer_flops(net, (1, 28, 28))   # {"1": 802816, "3": 262144, "5": 5120}
    """
    counts = _count_flops(model, sample_shape).get_flop_counts()
    # FlopCounterMode names modules "<RootClass>.<qualified name>"; the root itself is just "<RootClass>".
    root = type(model).__name__
    return {
        name: sum(counts.get(f"{root}.{name}" if name else root, {}).values())
        for name, _ in prunable_layers(model, filter_fn)
    }


def effective_flops(model: nn.Module, sample_shape: Sequence[int], filter_fn: _FilterFn | None = None) -> int:
    """FLOPs per sample a sparse kernel would do: each prunable layer's dense FLOPs times its weight density.

    An approximation: work proportional to the surviving weights (true for a CSR matmul, and for a conv, which
    reuses each weight at every output position), index overhead ignored - which is why measured sparse speed-ups
    are smaller. FLOPs outside prunable layers are counted dense.

    Args:
        model: any module, masked or baked in.
        sample_shape: the shape of one sample without the batch dimension.
        filter_fn: ``filter_fn(module, fqn) -> bool`` choosing layers; default: every Linear and Conv2d.

    Returns:
        FLOPs per sample, rounded to an integer.

    Raises:
        ValueError: ``sample_shape`` is not a sequence of positive integers.

    Example::

        >>> sp.sparsify_(net, "global", 0.9); effective_flops(net, (1, 28, 28)) < flops(net, (1, 28, 28))   # True
    """
    per_layer = _layer_flops(model, sample_shape, filter_fn)
    density = {r["layer"]: r["nonzero"] / r["params"] if r["params"] else 0.0 for r in layer_sparsity(model)}
    saved = sum(f * (1.0 - density[name]) for name, f in per_layer.items())
    return int(round(flops(model, sample_shape) - saved))


def _torch_benchmark():
    """``torch.utils.benchmark``, imported on first use with ``torch.utils.cpp_extension``'s logger quieted.

    Importing it on a CUDA build of torch without a CUDA runtime logs a "No CUDA runtime is found" warning that
    means nothing for CPU timing.

    Returns:
        The ``torch.utils.benchmark`` module.

    Example::

        >>> torch_benchmark().Timer("x @ x", globals={"x": torch.ones(64, 64)}).blocked_autorange()
    """
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils import benchmark
    finally:
        log.setLevel(level)
    return benchmark


def _check_seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Timing:
    """How :func:`time_models` times; every field is checked on construction.

    Raises:
        ValueError: a field out of range, naming it (``rounds`` or a batch size below 1, seconds not > 0, no
            batch sizes).

    Example::

        >>> time_models({"dense": net}, Timing(rounds=1, batches=(1,)), sample_shape=(1, 28, 28))
    """

    rounds: int = 3  # alternating rounds; each model keeps its fastest round (interference only adds time)
    min_run_time: float = 0.2  # seconds of Timer blocks behind one median
    plan_min_run_time: float = 0.05  # seconds per layer median when plan_sparse_inference decides a layer
    batches: tuple[int, ...] = (1, 256)  # batch sizes every model is timed at, in this order
    threads: int | None = None  # torch threads while timing; None: torch.get_num_threads() at the call

    def __post_init__(self) -> None:
        _check_int(self.rounds, "rounds")
        _check_seconds(self.min_run_time, "min_run_time")
        _check_seconds(self.plan_min_run_time, "plan_min_run_time")
        if isinstance(self.batches, (int, str)) or not self.batches:
            raise ValueError(f"batches must name at least one batch size, got {self.batches!r}")
        for b in self.batches:
            _check_int(b, f"every batch size of {self.batches!r}")
        if self.threads is not None:
            _check_int(self.threads, "threads")


@dataclass(frozen=True)
class _Latency:
    """One model at one batch size: the median ms per call of every round, and what the rounds say together.

    ``best_ms`` (the fastest round) is the latency; ``low_ms``..``high_ms`` is the noise band: two models whose
    ratio of best times lies within the band's ratio ``high_ms / low_ms`` differ by no more than noise.

    Example::

        >>> Latency((1.2, 1.0, 1.1)).best_ms, Latency((1.2, 1.0, 1.1)).median_ms   # (1.0, 1.1)
    """

    rounds_ms: tuple[float, ...]  # median ms per call of each round, in round order

    @property
    def best_ms(self) -> float:
        return min(self.rounds_ms)

    @property
    def low_ms(self) -> float:
        return min(self.rounds_ms)

    @property
    def high_ms(self) -> float:
        return max(self.rounds_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.rounds_ms)


# Blocks per median without autorange: 5, or 3 for a call slower than min_run_time / 3 (5 would take several times
# what was asked). Not blocked_autorange there: it grows its block size in steps of 10x, so a 10 us call was timed
# for ~0.2 s whatever min_run_time asked.
_FEW_BLOCKS = (3, 5)


def _median_ms(call: Callable, arg: object, min_run_time: float, threads: int, autorange: bool) -> float:
    """Median ms of one ``call(arg)`` over Timer blocks of about ``min_run_time`` s in all, after warm-up."""
    timer = _torch_benchmark().Timer(stmt="f(x)", globals={"f": call, "x": arg}, num_threads=threads)
    if autorange:
        for _ in range(3):  # warm-up: allocator, lazy CUDA init, oneDNN primitives, prune hooks' first product
            call(arg)
        return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3
    call(arg)  # warm-up: oneDNN builds its primitive on the first call
    start = time.perf_counter()
    call(arg)
    once = time.perf_counter() - start
    blocks = min(_FEW_BLOCKS[1], max(_FEW_BLOCKS[0], math.ceil(min_run_time / once)))
    number = max(1, round(min_run_time / blocks / once))
    return statistics.median(timer.timeit(number).mean for _ in range(blocks)) * 1e3


def _random_input(model: object, batch: int, sample_shape: tuple[int, ...]) -> torch.Tensor:
    """A ``[batch, *sample_shape]`` batch from a private generator (the caller's RNG is left alone), on the
    model's device."""
    like = _param_like(model) if isinstance(model, nn.Module) else {}
    x = torch.randn(batch, *sample_shape, generator=torch.Generator().manual_seed(0))
    return x.to(like.get("device", "cpu"))


def time_models(
    models: Mapping[Hashable, Callable],
    timing: Timing,
    sample_shape: Sequence[int] | None = None,
    *,
    inputs: Callable[[Hashable, int], object] | None = None,
    autorange: bool = True,
) -> dict[Hashable, dict[int, _Latency]]:
    """Time every model at every batch size of ``timing``, alternating them round by round.

    Each of ``timing.rounds`` rounds times, for each batch size in turn, every model in the mapping's order
    (``a b a b ...``), so drift from other jobs on the machine hits them all alike. One timing is the median ms
    per call of ``torch.utils.benchmark.Timer`` blocks (``timing.threads`` threads) after warm-up calls:
    ``blocked_autorange(timing.min_run_time)``, or with ``autorange=False`` 3 to 5 ``timeit`` blocks of about
    ``timing.min_run_time`` s in all (for calls of microseconds). An ``nn.Module`` is timed in eval mode under
    ``torch.inference_mode()`` and its training mode is restored; any other callable is called as it is.

    Args:
        models: name (any hashable) -> ``nn.Module`` or any callable of one argument (an onnxruntime
            session's ``functools.partial(session.run, None)``, say).
        timing: rounds, seconds per median, batch sizes, threads (:class:`Timing`).
        sample_shape: one sample's shape; the default input of a batch is a random ``[batch, *sample_shape]``
            float tensor on the model's device (from a private generator: the global RNG is left alone).
        inputs: ``inputs(name, batch)`` -> the argument for that model at that batch instead (made once, before
            the rounds, so converting it is never timed).

    Returns:
        ``{name: {batch: Latency}}`` for every model and batch size; ``Latency.best_ms`` is the fastest round.

    Raises:
        ValueError: no models, a model that is not callable, neither ``sample_shape`` nor ``inputs`` given, or a
            bad ``sample_shape`` (each message names the value).
        RuntimeError: a median that came out not finite or not positive.

    Example::

        >>> ms = time_models({"dense": dense, "small": small}, Timing(rounds=3), (1, 28, 28))
        >>> speedup = ms["dense"][256].best_ms / ms["small"][256].best_ms
    """
    if not isinstance(models, Mapping) or not models:
        raise ValueError(f"models must be a non-empty mapping of names to models or callables, got {models!r}")
    for name, model in models.items():
        if not callable(model):
            raise ValueError(f"model {name!r} is a {type(model).__name__}, not an nn.Module or a callable")
    if inputs is None:
        if sample_shape is None:
            raise ValueError("give sample_shape (random inputs) or inputs(name, batch); got neither")
        shape = _check_shape(sample_shape)
        args = {(n, b): _random_input(m, b, shape) for b in timing.batches for n, m in models.items()}
    else:
        args = {(n, b): inputs(n, b) for b in timing.batches for n in models}
    threads = timing.threads or torch.get_num_threads()
    modules = [m for m in models.values() if isinstance(m, nn.Module)]
    modes = [(m, m.training) for module in modules for m in module.modules()]
    runs: dict[Hashable, dict[int, list[float]]] = {n: {b: [] for b in timing.batches} for n in models}
    try:
        for module in modules:
            module.eval()
        with torch.inference_mode():
            for _ in range(timing.rounds):
                for b in timing.batches:
                    for name, model in models.items():
                        ms = _median_ms(model, args[name, b], timing.min_run_time, threads, autorange)
                        if not math.isfinite(ms) or ms <= 0:
                            raise RuntimeError(f"the latency of {name!r} at batch {b} came out as {ms!r} ms")
                        runs[name][b].append(ms)
    finally:
        for m, training in modes:
            m.training = training
    return {n: {b: _Latency(tuple(v)) for b, v in per_b.items()} for n, per_b in runs.items()}


def latency_ms(
    model: nn.Module,
    batch_size: int,
    sample_shape: Sequence[int],
    device: str | torch.device | None = None,
    min_run_time: float = 0.2,
) -> float:
    """Median milliseconds per forward of a ``[batch_size, *sample_shape]`` batch: :func:`time_models` of one
    model, one round.

    Args:
        model: timed in eval mode under ``torch.inference_mode()``; its mode is restored.
        batch_size: rows of the random input batch.
        sample_shape: one sample's shape, e.g. ``(1, 28, 28)``.
        device: where to time; default where the model's parameters are. Another device times a copy moved there.
        min_run_time: seconds of ``Timer.blocked_autorange`` (with ``torch.get_num_threads()`` threads).

    Returns:
        The median ms per forward.

    Raises:
        ValueError: a bad ``batch_size`` or ``sample_shape``, naming the value.

    Example::

        >>> latency_ms(model, 256, (1, 28, 28))
    """
    batch_size = _check_int(batch_size, "batch_size")
    shape = _check_shape(sample_shape)
    here = _param_like(model).get("device", torch.device("cpu"))
    device = torch.device(device) if device is not None else here
    if device != here:
        model = copy.deepcopy(model).to(device)  # time a copy: moving the caller's model would be a side effect
    timing = Timing(rounds=1, min_run_time=min_run_time, batches=(batch_size,))
    return time_models({"model": model}, timing, shape)["model"][batch_size].best_ms
