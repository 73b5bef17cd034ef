"""Sparse CPU inference: a pruned model whose Linear / Conv2d layers run as sparse (CSR) matrix products where,
per layer and batch size, that measured faster than dense, and dense where it did not.

Usage::

    from mnist_pruning import sparsity as sp

    sp.sparsify_(model, "global", 0.99)
    sp.bake_in(model)                                       # masks off: dense weights with the zeros in them
    fast = sp.to_sparse_inference(model, (1, 28, 28))       # a new model; a few seconds of timing per layer
    with torch.inference_mode():
        fast(x)                                             # allclose to model(x)

    plan = sp.plan_sparse_inference(model, (1, 28, 28), batch_sizes=(1, 256))   # the decisions, as data
    for row in plan:
        print(row.layer, row.density, row.ms, row.sparse, row.reason)      # ms: {batch: (dense, sparse)}
    fast = sp.apply_sparse_plan(model, plan)
    fast = sp.to_sparse_inference(model, (1, 28, 28), force="sparse")     # no timing: every layer with zeros

The converted model is for inference (``torch.inference_mode()``): its weights are buffers, not parameters, so
nothing trains them. Float32 on the CPU, the configuration measured; ``model`` itself is never changed.

The kernels are :class:`~.kernels.SparseLinear` and :class:`~.kernels.SparseConv2d` (:mod:`.kernels`).

When sparse wins depends on the density *and* the batch size (a sparse product has a fixed cost a small dense
one does not), so :func:`plan_sparse_inference` measures: layer by layer in the order they run, dense against
sparse on the input the layer sees at each of ``batch_sizes`` in the model converted so far (best of
alternating medians of ``torch.utils.benchmark`` blocks; sparse must win by 10 %), then the whole converted model
against the dense one (where it is not faster, everything runs dense at that batch size). If the choice differs
between batch sizes both kernels are kept, and an input of ``n`` rows uses the choice made for the measured batch
size nearest to ``n`` on a log scale (with 1 and 256: as at batch 1 below 16 rows, as at 256 from 16 on). A layer
with no zeros stays dense untimed.

Refused with a ValueError naming the layer: pruning masks still attached (call
:func:`~mnist_pruning.sparsity.unstructured.bake_in`), a layer to convert that is not float32 or not on the
CPU, a Conv2d padding mode other than zeros, and a weighted layer of another type whose weight matrices have
zeros (an ``nn.LSTM``, ``nn.Conv1d`` ...: it looks pruned, but it would run dense, so the speed-up asked for
would silently not happen). Other modules (activations, pooling, normalisation) stay as they are.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.nn.utils import prune

from ..checks import _check_choice, _check_fraction, _check_int
from .kernels import SparseConv2d, SparseLinear, _conv_geometry
from .measure import Timing, _FilterFn, prunable_layers, time_models

__all__ = [
    "plan_sparse_inference",
    "apply_sparse_plan",
    "to_sparse_inference",
]

_KERNELS = ("dense", "sparse")
_DEFAULT_BATCH_SIZES = (1, 256)
_MAX_DENSITY = 1.0  # time every layer that has zeros
# A layer runs sparse only where that measured at least 10 % faster: closer than that is timing noise on a shared
# 2-core machine (two identical models differ by that much), and dense is the choice that cannot lose.
_SPARSE_MARGIN = 0.9
# A convolution's CSR matrix has nnz(W) * H_out * W_out entries (8 bytes each, plus int64 temporaries while it
# is built); beyond this it would cost more memory than it can save time, so the layer stays dense.
_MAX_CONV_ENTRIES = 1 << 24


@dataclass(frozen=True)
class _LayerPlan:
    """What :func:`plan_sparse_inference` decided for one Linear / Conv2d layer, and why.

    Example::

        >>> [(p.layer, p.sparse) for p in plan_sparse_inference(net, (1, 28, 28))]   # {batch: runs sparse?}
    """

    layer: str  # name in model.named_modules()
    kind: str  # "Linear" or "Conv2d"
    nonzero: int  # non-zero weights
    params: int  # weights
    input_shape: tuple[int, ...]  # one sample's input, as seen in a forward of sample_shape
    channels_last: bool  # a Conv2d whose dense output was channels_last (the sparse one mirrors it)
    sparse: Mapping[int, bool]  # batch size -> run the sparse kernel
    ms: Mapping[int, tuple[float, float]] = field(default_factory=dict)  # batch size -> (dense, sparse) ms
    reason: str = ""  # "measured", "forced", or why the layer was never timed

    @property
    def density(self) -> float:
        return self.nonzero / self.params if self.params else 0.0

    @property
    def any_sparse(self) -> bool:
        return any(self.sparse.values())


# ------------------------------------------------------------------------------------------------ checks


def _pruning_hooks(module: nn.Module) -> list[str]:
    return [h._tensor_name for h in module._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]


def _pruned_looking_weights(module: nn.Module) -> list[str]:
    """Names of ``module``'s own weight matrices (2-D or more, named ``weight...``) that hold exact zeros."""
    return [
        name
        for name, p in module.named_parameters(recurse=False)
        if name.startswith("weight") and p.dim() >= 2 and p.is_floating_point() and bool((p == 0).any())
    ]


def _check_convertible(model: nn.Module, filter_fn: _FilterFn | None = None) -> list[tuple[str, nn.Module]]:
    """The ``(name, layer)`` pairs to convert (:func:`~.measure.prunable_layers`), after checking the whole model;
    a ValueError names the first layer that cannot be converted and says why (see the module docstring)."""
    for name, module in model.named_modules():
        masked = _pruning_hooks(module) or [
            n for n, _ in module.named_buffers(recurse=False) if n.endswith("_mask")
        ]
        if masked:
            raise ValueError(
                f"layer {name!r} ({type(module).__name__}) still carries pruning masks {masked}; "
                "call mnist_pruning.sparsity.bake_in(model) first"
            )
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding, nn.EmbeddingBag)):
            continue  # Linear / Conv2d are checked below; a lookup table's zeros cost no time anyway
        zeros = _pruned_looking_weights(module)
        if zeros:
            raise ValueError(
                f"layer {name!r} is a {type(module).__name__} whose {zeros} have zeros (pruned?); only nn.Linear "
                "and nn.Conv2d run sparse here, so its zeros would save no time"
            )
    layers = prunable_layers(model, filter_fn)
    for name, module in layers:
        weight = module.weight
        if weight.dtype != torch.float32:
            raise ValueError(f"layer {name!r} ({type(module).__name__}) is {weight.dtype}; only float32 converts")
        if weight.device.type != "cpu":
            raise ValueError(f"layer {name!r} is on {weight.device}; sparse inference here is for the CPU")
        if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
            raise ValueError(
                f"layer {name!r} (Conv2d) pads with {module.padding_mode!r}; only zero padding converts"
            )
    return layers


def _check_batch_sizes(batch_sizes: Sequence[int]) -> tuple[int, ...]:
    if isinstance(batch_sizes, (int, str)) or not batch_sizes:
        raise ValueError(f"batch_sizes must be a non-empty sequence of positive integers, got {batch_sizes!r}")
    sizes = tuple(sorted({_check_int(b, f"every batch size of {tuple(batch_sizes)!r}") for b in batch_sizes}))
    return sizes


def _check_force(force: str | Mapping[int, str] | None, batch_sizes: tuple[int, ...]) -> dict[int, str] | None:
    if force is None:
        return None
    if isinstance(force, str):
        return {b: _check_choice(force, _KERNELS, "force") for b in batch_sizes}
    if not isinstance(force, Mapping) or set(force) != set(batch_sizes):
        raise ValueError(
            f"force must be 'dense', 'sparse' or a mapping of every batch size {batch_sizes} to one, got {force!r}"
        )
    return {b: _check_choice(force[b], _KERNELS, f"force[{b}]") for b in batch_sizes}


# ---------------------------------------------------------------------------------------- plan and convert


def _converted(module: nn.Module, row: _LayerPlan) -> nn.Module:
    """The module a layer becomes: a SparseLinear (dense-only too, see its docstring), a SparseConv2d when it
    runs sparse at some batch size, else the module itself."""
    if isinstance(module, nn.Linear):
        return SparseLinear(module, row.sparse)
    if row.any_sparse:
        return SparseConv2d(module, row.input_shape, row.channels_last, row.sparse)
    return module


def _sample(batch: int, sample_shape: tuple[int, ...]) -> torch.Tensor:
    """A random input batch from a private generator, so that planning leaves the caller's RNG state alone."""
    return torch.randn(batch, *sample_shape, generator=torch.Generator().manual_seed(0))


def _trace(model: nn.Module, layers: list[tuple[str, nn.Module]], sample_shape: tuple[int, ...]):
    """One forward of a single random sample: the layers in the order they run, each one's input shape (per
    sample), and whether its output came out channels_last."""
    order: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}
    channels_last: dict[str, bool] = {}

    def hook(name):
        def record(_module, args, output):
            if name not in shapes:
                order.append(name)
                shapes[name] = tuple(args[0].shape[1:])
                channels_last[name] = (
                    output.dim() == 4
                    and not output.is_contiguous()
                    and output.is_contiguous(memory_format=torch.channels_last)
                )

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in layers]
    try:
        with torch.inference_mode():
            model(_sample(1, sample_shape))
    finally:
        for handle in handles:
            handle.remove()
    return order, shapes, channels_last


def _input_of(model: nn.Module, name: str, batch: int, sample_shape: tuple[int, ...]) -> torch.Tensor:
    """The input layer ``name`` of ``model`` sees in a forward of a random ``[batch, *sample_shape]`` input, in
    the memory layout the layers before it leave it in."""
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(name).register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        with torch.inference_mode():
            model(_sample(batch, sample_shape))
    finally:
        handle.remove()
    return seen[0]


def _best_ms(candidates: dict[str, nn.Module], x: torch.Tensor, timing: Timing) -> dict[str, float]:
    """Best of ``timing.rounds`` alternating medians of each candidate on ``x`` (few blocks per median: a layer
    call takes microseconds)."""
    (b,) = timing.batches
    timed = time_models(candidates, timing, inputs=lambda _name, _b: x, autorange=False)
    return {k: per_b[b].best_ms for k, per_b in timed.items()}


def plan_sparse_inference(
    model: nn.Module,
    sample_shape: Sequence[int],
    batch_sizes: Sequence[int] = _DEFAULT_BATCH_SIZES,
    *,
    force: str | Mapping[int, str] | None = None,
    filter_fn: _FilterFn | None = None,
    max_density: float = _MAX_DENSITY,
    min_run_time: float = 0.05,
    rounds: int = 3,
) -> list[_LayerPlan]:
    """Decide, per Linear / Conv2d layer (those ``filter_fn`` accepts) and per batch size, dense or sparse.

    ``force=None`` measures: layer by layer in the order they run, each layer's dense and sparse kernels are
    timed on the input it sees at each batch size in the model converted so far, ``rounds`` alternating Timer
    medians of ``min_run_time`` s each, best kept; sparse is chosen where it is clearly faster. Then the converted
    model is timed whole against the dense one at each batch size, and where it is not faster every layer runs
    dense at that size. A layer with no zeros, or that no forward calls, stays dense untimed.

    Args:
        model: a baked-in pruned model; not changed.
        sample_shape: the shape of one sample without the batch dimension.
        batch_sizes: the batch sizes to decide for.
        force: ``"sparse"`` / ``"dense"`` or ``{batch: "sparse" | "dense"}``: decide without timing.
        filter_fn: ``filter_fn(module, fqn) -> bool`` choosing layers; default: every Linear and Conv2d.
        max_density: layers denser than this stay dense untimed (default 1: none).
        min_run_time: seconds per Timer median.
        rounds: alternating rounds per layer.

    Returns:
        One :class:`_LayerPlan` per layer, in the order they run.

    Raises:
        ValueError: a bad argument (naming it), or a layer with prune masks still attached.

    Example::

        >>> plan = plan_sparse_inference(net, (1, 28, 28), (1, 256)); fast = apply_sparse_plan(net, plan)
    """
    shape = tuple(_check_int(d, f"every dimension of sample_shape {tuple(sample_shape)!r}") for d in sample_shape)
    sizes = _check_batch_sizes(batch_sizes)
    forced = _check_force(force, sizes)
    max_density = _check_fraction(max_density, "max_density")
    timing = Timing(rounds=rounds, min_run_time=min_run_time)
    layers = _check_convertible(model, filter_fn)
    work = copy.deepcopy(model).eval()
    layers = [(name, work.get_submodule(name)) for name, _ in layers]
    order, shapes, channels_last = _trace(work, layers, shape)
    dense = {b: False for b in sizes}
    plan = []
    # Every Linear starts as a dense-only SparseLinear: on a row-major input exactly F.linear, and on the
    # transposed output of a sparse layer before it the layout-aware kernel it will have in the converted model.
    for name, module in layers:
        if isinstance(module, nn.Linear):
            work.set_submodule(name, SparseLinear(module, dense))
    originals = dict(layers)
    for name in order:
        module = originals[name]
        nonzero, params = _counts(module)
        common = (name, type(module).__name__, nonzero, params, shapes[name], channels_last[name])
        entries = nonzero * _positions(module, shapes[name]) if isinstance(module, nn.Conv2d) else nonzero
        if nonzero == params:
            row = _LayerPlan(*common, dense, reason="no zeros")
        elif entries > _MAX_CONV_ENTRIES:
            row = _LayerPlan(*common, dense, reason=f"its CSR matrix would exceed {_MAX_CONV_ENTRIES:,} entries")
        elif forced is not None:
            row = _LayerPlan(*common, {b: forced[b] == "sparse" for b in sizes}, reason="forced")
        elif nonzero / params > max_density:
            reason = f"density {nonzero / params:.2f} > max_density {max_density:g}"
            row = _LayerPlan(*common, dense, reason=reason)
        else:
            candidates = {
                "dense": _converted(module, _LayerPlan(*common, dense)),
                "sparse": _converted(module, _LayerPlan(*common, {b: True for b in sizes})),
            }
            ms = {}
            for b in sizes:
                best = _best_ms(candidates, _input_of(work, name, b, shape), replace(timing, batches=(b,)))
                ms[b] = (best["dense"], best["sparse"])
            faster = {b: ms[b][1] < _SPARSE_MARGIN * ms[b][0] for b in sizes}
            row = _LayerPlan(*common, faster, ms=ms, reason="measured")
        plan.append(row)
        work.set_submodule(name, _converted(module, row))
    for name, module in layers:
        if name not in shapes:
            common = (name, type(module).__name__, *_counts(module), (), False)
            plan.append(_LayerPlan(*common, dense, reason="not called in a forward of sample_shape"))
    if forced is None:
        plan = _whole_model_check(model, work, plan, shape, sizes, timing)
    return plan


def _whole_model_check(model, converted, plan, shape, sizes, timing: Timing) -> list[_LayerPlan]:
    """Time the converted model against the dense one at each batch size where some layer runs sparse; where it
    is not faster (layer timings miss what happens between layers), every layer runs dense at that size."""
    dense = copy.deepcopy(model).eval()
    for b in sizes:
        if not any(row.sparse[b] for row in plan):
            continue
        best = _best_ms({"dense": dense, "converted": converted}, _sample(b, shape), replace(timing, batches=(b,)))
        if best["converted"] >= best["dense"]:
            why = f"; whole model at b{b}: {best['converted']:.3g} ms converted >= {best['dense']:.3g} ms dense"
            plan = [replace(row, sparse={**row.sparse, b: False}, reason=row.reason + why) for row in plan]
    return plan


def _counts(module: nn.Module) -> tuple[int, int]:
    weight = module.weight.detach()
    return int(torch.count_nonzero(weight)), weight.numel()


def _positions(conv: nn.Conv2d, input_shape: tuple[int, ...]) -> int:
    _, (out_h, out_w) = _conv_geometry(conv, input_shape[-2], input_shape[-1])
    return out_h * out_w


def apply_sparse_plan(model: nn.Module, plan: Sequence[_LayerPlan]) -> nn.Module:
    """A copy of ``model`` in eval mode whose layers run as ``plan`` says; ``model`` is not changed.

    If any layer runs sparse, its Conv2d layers that do become :class:`SparseConv2d` and all its planned Linear
    layers :class:`SparseLinear` (dense-only ones included, see there); otherwise the copy is just the model.

    Args:
        model: the model the plan was made for.
        plan: from :func:`plan_sparse_inference`.

    Returns:
        The converted copy, for ``torch.inference_mode()``.

    Raises:
        ValueError: a layer's non-zeros changed since the plan was made, or masks are attached.

    Example::

        >>> fast = apply_sparse_plan(net, plan_sparse_inference(net, (1, 28, 28), force="sparse"))
    """
    _check_convertible(model)
    converted = copy.deepcopy(model).eval()
    if not any(row.any_sparse for row in plan):
        return converted
    for row in plan:
        module = converted.get_submodule(row.layer)
        if _counts(module)[0] != row.nonzero:
            raise ValueError(f"layer {row.layer!r} has changed since the plan was made (its non-zeros differ)")
        converted.set_submodule(row.layer, _converted(module, row))
    return converted


def to_sparse_inference(
    model: nn.Module,
    sample_shape: Sequence[int],
    batch_sizes: Sequence[int] = _DEFAULT_BATCH_SIZES,
    **plan_options,
) -> nn.Module:
    """A new model for ``torch.inference_mode()`` whose layers run sparse where that measured faster:
    ``apply_sparse_plan(model, plan_sparse_inference(model, sample_shape, batch_sizes, **plan_options))``.

    Args:
        model: a baked-in pruned model; not changed.
        sample_shape: the shape of one sample without the batch dimension.
        batch_sizes: the batch sizes to decide for.
        **plan_options: passed to :func:`plan_sparse_inference`.

    Returns:
        The converted copy.

    Raises:
        ValueError: as :func:`plan_sparse_inference`.

    Example::

        >>> sp.bake_in(net); fast = to_sparse_inference(net, (1, 28, 28))
    """
    return apply_sparse_plan(model, plan_sparse_inference(model, sample_shape, batch_sizes, **plan_options))
