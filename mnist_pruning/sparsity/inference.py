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

The kernels (torch.sparse, int32 CSR indices):

- ``nn.Linear`` -> :class:`SparseLinear`: ``y^T = W x^T + b``, ``torch.sparse.mm(W, x^T, "sum")`` for a
  batch (torch's own CSR kernel) and ``torch.addmv`` (MKL) for one row. For a batch the output is returned as
  the transposed view of ``y^T``, so the next Linear finds ``x^T`` contiguous and no copy is made between
  layers. Such an output is not contiguous: code that calls ``.view`` on it needs ``.contiguous()`` first.
- ``nn.Conv2d`` -> :class:`SparseConv2d`: the convolution as one CSR matrix from the flattened input to the
  flattened output (each non-zero weight once per output position it touches, ``nnz(W) * H_out * W_out``
  entries; no im2col copy), so its work is proportional to the surviving weights. The matrix is built for the
  input size seen in planning; another size raises. The output has the memory format the dense convolution
  gave (channels_last or contiguous): max-pooling is several times faster in channels_last on this CPU, so a
  format change would decide the timing, not the sparsity. Stride, zero padding, dilation and groups are
  supported; other padding modes are refused.

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

import bisect
import copy
import math
import statistics
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune

from ..checks import check_choice, check_fraction, check_int
from .measure import FilterFn, prunable_layers, torch_benchmark

__all__ = [
    "KERNELS",
    "LayerPlan",
    "SparseLinear",
    "SparseConv2d",
    "linear_csr",
    "conv_csr",
    "csr_mm",
    "plan_sparse_inference",
    "apply_sparse_plan",
    "to_sparse_inference",
    "check_convertible",
]

KERNELS = ("dense", "sparse")
DEFAULT_BATCH_SIZES = (1, 256)
MAX_DENSITY = 1.0  # time every layer that has zeros
# A layer runs sparse only where that measured at least 10 % faster: closer than that is timing noise on a shared
# 2-core machine (two identical models differ by that much), and dense is the choice that cannot lose.
SPARSE_MARGIN = 0.9
# A convolution's CSR matrix has nnz(W) * H_out * W_out entries (8 bytes each, plus int64 temporaries while it
# is built); beyond this it would cost more memory than it can save time, so the layer stays dense.
MAX_CONV_ENTRIES = 1 << 24


@dataclass(frozen=True)
class LayerPlan:
    """What :func:`plan_sparse_inference` decided for one Linear / Conv2d layer, and why."""

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


def check_convertible(model: nn.Module, filter_fn: FilterFn | None = None) -> list[tuple[str, nn.Module]]:
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
    sizes = tuple(sorted({check_int(b, f"every batch size of {tuple(batch_sizes)!r}") for b in batch_sizes}))
    return sizes


def _check_force(force: str | Mapping[int, str] | None, batch_sizes: tuple[int, ...]) -> dict[int, str] | None:
    if force is None:
        return None
    if isinstance(force, str):
        return {b: check_choice(force, KERNELS, "force") for b in batch_sizes}
    if not isinstance(force, Mapping) or set(force) != set(batch_sizes):
        raise ValueError(
            f"force must be 'dense', 'sparse' or a mapping of every batch size {batch_sizes} to one, got {force!r}"
        )
    return {b: check_choice(force[b], KERNELS, f"force[{b}]") for b in batch_sizes}


# ------------------------------------------------------------------------------------------- CSR matrices


def _csr(indices_rows: torch.Tensor, indices_cols: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    """A CSR tensor with int32 indices from COO entries (any order; no duplicates)."""
    with warnings.catch_warnings():
        # torch warns that sparse CSR support is "beta" on every construction; it is what we mean to use.
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        coo = torch.sparse_coo_tensor(
            torch.stack([indices_rows, indices_cols]), values, shape, check_invariants=True
        ).coalesce()
        csr = coo.to_sparse_csr()
        # MKL's sparse BLAS (LP64, used for batch 1) takes int32 indices and converts int64 ones on every call,
        # which measured 1.3-1.5x slower for these layer sizes; torch's own kernel takes either.
        return torch.sparse_csr_tensor(
            csr.crow_indices().to(torch.int32),
            csr.col_indices().to(torch.int32),
            csr.values(),
            shape,
            check_invariants=True,  # once, here: a malformed CSR matrix would make MKL read out of bounds
        )


def linear_csr(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (``[out, in]``) as a CSR matrix holding exactly its non-zeros."""
    rows, cols = torch.nonzero(weight, as_tuple=True)
    return _csr(rows, cols, weight[rows, cols], tuple(weight.shape))


def _conv_geometry(conv: nn.Conv2d, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((pad_top, pad_left), (out_height, out_width))`` of ``conv`` on a ``height x width`` input."""
    kernel, stride, dilation = conv.kernel_size, conv.stride, conv.dilation
    if isinstance(conv.padding, str):  # "valid" or "same" (stride 1): F.conv2d puts the odd pixel at the end
        total = [0, 0] if conv.padding == "valid" else [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
        pad_before = (total[0] // 2, total[1] // 2)
        pad_sum = tuple(total)
    else:
        pad_before = tuple(conv.padding)
        pad_sum = (2 * conv.padding[0], 2 * conv.padding[1])
    out = tuple(
        (size + p - d * (k - 1) - 1) // s + 1
        for size, p, d, k, s in zip((height, width), pad_sum, dilation, kernel, stride, strict=True)
    )
    return pad_before, out  # type: ignore[return-value]


def conv_csr(conv: nn.Conv2d, weight: torch.Tensor, in_shape: Sequence[int], channels_last: bool) -> torch.Tensor:
    """The convolution ``conv`` (weight ``weight``) on one ``[C, H, W]`` input as a CSR matrix
    ``[out positions, C*H*W]``: output ``y = M @ x.flatten()``, bias excluded.

    Columns are the input in ``(c, h, w)`` order and rows the output in ``(o, h, w)`` order, or ``(h, w, c)`` and
    ``(h, w, o)`` when ``channels_last``: the order of the activations in memory, so that getting them in and out
    of the product is a plain 2-D transpose. Each non-zero weight ``(o, c, kh, kw)`` contributes one entry per
    output position whose receptive field puts that tap inside the input; taps landing in the zero padding are
    simply left out.
    """
    channels, height, width = (int(s) for s in in_shape)
    (pad_h, pad_w), (out_h, out_w) = _conv_geometry(conv, height, width)
    o, c, kh, kw = torch.nonzero(weight, as_tuple=True)
    values = weight[o, c, kh, kw]
    # The input channel a filter of group g reads is g * (channels per group) + its own channel index.
    c = (o // (conv.out_channels // conv.groups)) * (channels // conv.groups) + c
    oy = torch.arange(out_h)[None, :, None]
    ox = torch.arange(out_w)[None, None, :]
    iy = oy * conv.stride[0] + (kh * conv.dilation[0] - pad_h)[:, None, None]  # [nnz, out_h, 1]
    ix = ox * conv.stride[1] + (kw * conv.dilation[1] - pad_w)[:, None, None]  # [nnz, 1, out_w]
    iy, ix = torch.broadcast_tensors(iy, ix)
    inside = (iy >= 0) & (iy < height) & (ix >= 0) & (ix < width)
    if channels_last:
        cols = (iy * width + ix) * channels + c[:, None, None]
        rows = (oy * out_w + ox) * conv.out_channels + o[:, None, None]
    else:
        cols = (c[:, None, None] * height + iy) * width + ix
        rows = (o[:, None, None] * out_h + oy) * out_w + ox
    rows = rows.expand_as(iy)
    entries = values[:, None, None].expand_as(iy)
    shape = (conv.out_channels * out_h * out_w, channels * height * width)
    return _csr(rows[inside], cols[inside], entries[inside], shape)


def csr_mm(csr: torch.Tensor, dense: torch.Tensor, bias_column: torch.Tensor | None = None) -> torch.Tensor:
    """``csr @ dense (+ bias_column)`` for a contiguous ``dense``.

    ``reduce="sum"`` makes ``torch.sparse.mm`` use torch's own vectorised, multi-threaded CSR kernel instead of
    MKL's sparse BLAS (which ``torch.mm`` / ``torch.addmm`` call): 1.3-1.6x faster for every LeNet layer here.
    """
    out = torch.sparse.mm(csr, dense, "sum")
    return out if bias_column is None else out.add_(bias_column)


# ------------------------------------------------------------------------------------------------ modules


class _Dispatch:
    """Which kernel an input of ``n`` rows uses: the choice made for the measured batch size nearest on a log
    scale. A handful of comparisons per call: batch sizes, never weights."""

    def __init__(self, sparse: Mapping[int, bool]) -> None:
        self.sizes = sorted(sparse)
        self.choices = [bool(sparse[b]) for b in self.sizes]
        self.cuts = [math.sqrt(a * b) for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=True)]

    def sparse(self, n: int) -> bool:
        return self.choices[bisect.bisect_right(self.cuts, n)]

    def describe(self) -> str:
        pairs = zip(self.sizes, self.choices, strict=True)
        return ", ".join(f"b{b}: {'sparse' if s else 'dense'}" for b, s in pairs)


class SparseLinear(nn.Module):
    """An ``nn.Linear`` for inference that runs a CSR kernel, a dense one, or each at its batch sizes.

    ``weight_csr`` holds exactly the non-zeros of the weight (``None`` for a layer that is dense at every batch
    size); ``weight`` the dense weight (``None`` for a layer that is sparse at every batch size). Both kernels
    take activations in either memory layout: row-major, as any layer gives them, or the transposed
    (feature-major) one a SparseLinear returns for a batch, which the next SparseLinear consumes without a copy
    (``W @ x^T`` on the CSR or the dense weight). That is why, once any Linear of a model runs sparse, its other
    Linear layers become dense-only SparseLinears: ``F.linear`` on a transposed input is up to 4x slower.
    """

    def __init__(self, linear: nn.Linear, sparse: Mapping[int, bool]) -> None:
        super().__init__()
        weight = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.dispatch = _Dispatch(sparse)
        any_sparse, all_sparse = any(self.dispatch.choices), all(self.dispatch.choices)
        self.register_buffer("weight_csr", linear_csr(weight) if any_sparse else None)
        self.register_buffer("weight", None if all_sparse else weight.clone())
        # A row-major input has to be transposed for the CSR product anyway; gathering only the columns some
        # weight reads does both in one pass (at 99 % sparsity LeNet-300-100's fc1 reads 222 of its 784 pixels).
        used = torch.nonzero(weight.ne(0).any(dim=0)).flatten() if any_sparse else None
        partial = used is not None and used.numel() < self.in_features
        self.register_buffer("used_columns", used if partial else None)
        self.register_buffer("weight_csr_used", linear_csr(weight.index_select(1, used)) if partial else None)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias)
        self.register_buffer("bias_column", None if bias is None else bias[:, None].clone())  # for W @ x^T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            lead = x.shape[:-1]
            return self.forward(x.reshape(-1, self.in_features)).reshape(*lead, self.out_features)
        # Tensors are read from self._buffers directly: Module.__getattr__ costs ~1.5 us per tensor on this CPU,
        # as much as the whole sparse product of a batch-1 layer.
        tensors = self._buffers
        n = x.shape[0]
        csr, weight = tensors["weight_csr"], tensors["weight"]
        if csr is not None and (weight is None or self.dispatch.sparse(n)):
            if n == 1:  # MKL's sparse matrix-vector product, no transposes at all
                bias = tensors["bias"]
                v = x.reshape(-1)
                y = torch.mv(csr, v) if bias is None else torch.addmv(bias, csr, v)
                return y.unsqueeze(0)
            xt = x.t()
            if not xt.is_contiguous():
                # The CSR product wants a row-major [in, n] operand, so transpose; gathering only the columns
                # some weight reads does that in the same pass.
                used = tensors["used_columns"]
                if used is None:
                    xt = xt.contiguous()
                else:
                    xt, csr = xt.index_select(0, used), tensors["weight_csr_used"]
            return csr_mm(csr, xt, tensors["bias_column"]).t()
        if n > 1 and x.t().is_contiguous():  # the transposed output of a SparseLinear before this one
            bias_column = tensors["bias_column"]
            xt = x.t()
            return (torch.mm(weight, xt) if bias_column is None else torch.addmm(bias_column, weight, xt)).t()
        return F.linear(x, weight, tensors["bias"])

    def extra_repr(self) -> str:
        nnz = "dense only" if self.weight_csr is None else f"nnz={self.weight_csr.values().numel()}"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, {nnz}, {self.dispatch.describe()}"
        )


class SparseConv2d(nn.Module):
    """An ``nn.Conv2d`` for inference on inputs of one size, as one CSR matrix (see the module docstring).

    ``weight_csr`` is that matrix (``nnz(W) * H_out * W_out`` entries); ``weight`` the dense weight, kept only
    when some batch size runs dense (``F.conv2d``).
    """

    def __init__(self, conv: nn.Conv2d, in_shape: Sequence[int], channels_last: bool, sparse: Mapping[int, bool]):
        super().__init__()
        weight = conv.weight.detach()
        self.dispatch = _Dispatch(sparse)
        self.in_shape = tuple(int(s) for s in in_shape)
        _, self.out_hw = _conv_geometry(conv, self.in_shape[1], self.in_shape[2])
        self.out_channels = conv.out_channels
        self.channels_last = channels_last
        self.conv_args = {
            "stride": conv.stride,
            "padding": conv.padding,
            "dilation": conv.dilation,
            "groups": conv.groups,
        }
        self.register_buffer("weight_csr", conv_csr(conv, weight, self.in_shape, channels_last))
        keep_dense = not all(self.dispatch.choices)
        self.register_buffer("weight", weight.clone(memory_format=torch.preserve_format) if keep_dense else None)
        bias = None if conv.bias is None else conv.bias.detach().clone()
        self.register_buffer("bias", bias)
        if bias is not None:  # one bias per output position, in the CSR matrix's row order
            positions = self.out_hw[0] * self.out_hw[1]
            bias = bias.repeat(positions) if channels_last else bias.repeat_interleave(positions)
        self.register_buffer("bias_rows", bias)
        self.register_buffer("bias_column", None if bias is None else bias[:, None].clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            return self.forward(x.unsqueeze(0)).squeeze(0)
        tensors = self._buffers  # not Module.__getattr__: see SparseLinear.forward
        n = x.shape[0]
        weight = tensors["weight"]
        if weight is not None and not self.dispatch.sparse(n):
            return F.conv2d(x, weight, tensors["bias"], **self.conv_args)
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(
                f"SparseConv2d was converted for inputs of shape {self.in_shape}, got {tuple(x.shape[1:])}"
            )
        csr = tensors["weight_csr"]
        out_h, out_w = self.out_hw
        # [n, C*H*W] in the CSR matrix's column order: a view of a batch in that memory format.
        x2 = x.permute(0, 2, 3, 1).reshape(n, -1) if self.channels_last else x.reshape(n, -1)
        if n == 1:
            bias = tensors["bias_rows"]
            y = (torch.mv(csr, x2[0]) if bias is None else torch.addmv(bias, csr, x2[0])).unsqueeze(0)
        else:
            xt = x2.t().contiguous()  # the CSR product wants a row-major [C*H*W, n] operand
            bias = tensors["bias_column"]
            yt = csr_mm(csr, xt, bias)
            y = yt.t().contiguous()  # batch-major again, as F.conv2d returns it
        if self.channels_last:
            return y.view(n, out_h, out_w, self.out_channels).permute(0, 3, 1, 2)
        return y.view(n, self.out_channels, out_h, out_w)

    def extra_repr(self) -> str:
        fmt = "channels_last" if self.channels_last else "contiguous"
        nnz = self.weight_csr.values().numel()
        shape = f"in_shape={self.in_shape}, out_channels={self.out_channels}"
        return f"{shape}, {fmt}, nnz={nnz}, {self.dispatch.describe()}"


# ---------------------------------------------------------------------------------------- plan and convert


def _converted(module: nn.Module, row: LayerPlan) -> nn.Module:
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


# Blocks per median in planning: 5, or 3 for a call slower than min_run_time / 3 (a LeNet-5 forward at batch 256,
# tens of ms: 5 would take several times what was asked). Not blocked_autorange: it grows its block size in steps
# of 10x, so a 10 us layer call was timed for ~0.2 s whatever min_run_time asked (an MLP's plan took ~5 s, not ~1).
PLAN_BLOCKS = (3, 5)


def _median_ms(module: nn.Module, x: torch.Tensor, min_run_time: float) -> float:
    """Median ms per call over 3 to 5 Timer blocks (:data:`PLAN_BLOCKS`) of about ``min_run_time`` s in all."""
    with torch.inference_mode():
        module(x)  # warm-up: oneDNN builds its primitive on the first call
        start = time.perf_counter()
        module(x)
        once = time.perf_counter() - start
        blocks = min(PLAN_BLOCKS[1], max(PLAN_BLOCKS[0], math.ceil(min_run_time / once)))
        number = max(1, round(min_run_time / blocks / once))
        timer = torch_benchmark().Timer(
            stmt="m(x)", globals={"m": module, "x": x}, num_threads=torch.get_num_threads()
        )
        return statistics.median(timer.timeit(number).mean for _ in range(blocks)) * 1e3


def _best_ms(
    candidates: dict[str, nn.Module], x: torch.Tensor, min_run_time: float, rounds: int
) -> dict[str, float]:
    """Best of ``rounds`` alternating medians of each candidate on ``x``: drift from other jobs hits all alike,
    and interference only ever adds time."""
    runs: dict[str, list[float]] = {k: [] for k in candidates}
    for _ in range(rounds):
        for key, module in candidates.items():
            runs[key].append(_median_ms(module, x, min_run_time))
    return {k: min(v) for k, v in runs.items()}


def plan_sparse_inference(
    model: nn.Module,
    sample_shape: Sequence[int],
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    *,
    force: str | Mapping[int, str] | None = None,
    filter_fn: FilterFn | None = None,
    max_density: float = MAX_DENSITY,
    min_run_time: float = 0.05,
    rounds: int = 3,
) -> list[LayerPlan]:
    """Decide, per Linear / Conv2d layer (those ``filter_fn`` accepts) and per batch size, dense or sparse.

    ``force=None`` measures: layer by layer in the order they run, each layer's dense and sparse kernels are
    timed on the input it sees at each batch size in the model converted so far (so in the memory layout the
    layers before it leave), ``rounds`` alternating Timer medians of ``min_run_time`` s each with
    ``torch.get_num_threads()`` threads, best kept; sparse is chosen where it is at least 10 % faster. Then the
    converted model is timed whole against the dense one at each batch size, and where it is not faster every
    layer runs dense at that size (what happens between layers is in neither layer's timing).
    ``force="sparse"`` / ``"dense"`` or ``{batch: "sparse" | "dense"}`` decides without timing.

    Either way a layer with no zeros or one that no forward calls stays dense untimed, and so, when measuring,
    does one denser than ``max_density`` (default 1: none; a lower bound saves planning time). Returns one
    :class:`LayerPlan` per layer, in the order they run; ``model`` is not changed.
    """
    shape = tuple(check_int(d, f"every dimension of sample_shape {tuple(sample_shape)!r}") for d in sample_shape)
    sizes = _check_batch_sizes(batch_sizes)
    forced = _check_force(force, sizes)
    max_density = check_fraction(max_density, "max_density")
    rounds = check_int(rounds, "rounds")
    if isinstance(min_run_time, bool) or not isinstance(min_run_time, (int, float)) or not min_run_time > 0:
        raise ValueError(f"min_run_time must be a number of seconds > 0, got {min_run_time!r}")
    layers = check_convertible(model, filter_fn)
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
            row = LayerPlan(*common, dense, reason="no zeros")
        elif entries > MAX_CONV_ENTRIES:
            row = LayerPlan(*common, dense, reason=f"its CSR matrix would exceed {MAX_CONV_ENTRIES:,} entries")
        elif forced is not None:
            row = LayerPlan(*common, {b: forced[b] == "sparse" for b in sizes}, reason="forced")
        elif nonzero / params > max_density:
            row = LayerPlan(*common, dense, reason=f"density {nonzero / params:.2f} > max_density {max_density:g}")
        else:
            candidates = {
                "dense": _converted(module, LayerPlan(*common, dense)),
                "sparse": _converted(module, LayerPlan(*common, {b: True for b in sizes})),
            }
            ms = {}
            for b in sizes:
                best = _best_ms(candidates, _input_of(work, name, b, shape), min_run_time, rounds)
                ms[b] = (best["dense"], best["sparse"])
            faster = {b: ms[b][1] < SPARSE_MARGIN * ms[b][0] for b in sizes}
            row = LayerPlan(*common, faster, ms=ms, reason="measured")
        plan.append(row)
        work.set_submodule(name, _converted(module, row))
    for name, module in layers:
        if name not in shapes:
            common = (name, type(module).__name__, *_counts(module), (), False)
            plan.append(LayerPlan(*common, dense, reason="not called in a forward of sample_shape"))
    if forced is None:
        plan = _whole_model_check(model, work, plan, shape, sizes, min_run_time, rounds)
    return plan


def _whole_model_check(model, converted, plan, shape, sizes, min_run_time, rounds) -> list[LayerPlan]:
    """Time the converted model against the dense one at each batch size where some layer runs sparse; where it
    is not faster (layer timings miss what happens between layers), every layer runs dense at that size."""
    dense = copy.deepcopy(model).eval()
    for b in sizes:
        if not any(row.sparse[b] for row in plan):
            continue
        best = _best_ms({"dense": dense, "converted": converted}, _sample(b, shape), min_run_time, rounds)
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


def apply_sparse_plan(model: nn.Module, plan: Sequence[LayerPlan]) -> nn.Module:
    """A copy of ``model`` in eval mode whose layers run as ``plan`` says; ``model`` is not changed.

    If any layer runs sparse, its Conv2d layers that do become :class:`SparseConv2d` and all its planned Linear
    layers :class:`SparseLinear` (dense-only ones included, see there); otherwise the copy is just the model.
    """
    check_convertible(model)
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
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    **plan_options,
) -> nn.Module:
    """``apply_sparse_plan(model, plan_sparse_inference(model, sample_shape, batch_sizes, **plan_options))``: a
    new model for ``torch.inference_mode()`` whose layers run sparse where that measured faster."""
    return apply_sparse_plan(model, plan_sparse_inference(model, sample_shape, batch_sizes, **plan_options))
