"""CSR kernels for inference: ``nn.Linear`` and ``nn.Conv2d`` layers as torch.sparse (CSR) matrix products.

Usage::

    from mnist_pruning.sparsity.kernels import SparseConv2d, SparseLinear
    fast = SparseLinear(linear, {1: True, 256: True})           # sparse at every batch size
    both = SparseLinear(linear, {1: False, 256: True})          # dense for 1 row, sparse from 16 rows on
    conv = SparseConv2d(conv2d, (20, 12, 12), channels_last=True, sparse={1: True, 256: True})
    with torch.inference_mode():
        fast(x)                                                 # allclose to linear(x)

``sparse`` maps measured batch sizes to "run the CSR kernel"; an input of ``n`` rows uses the choice made for the
batch size nearest to ``n`` on a log scale. Which layers gain, and at which batch sizes, is measured by
:func:`mnist_pruning.sparsity.inference.plan_sparse_inference`, which builds these modules.

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
"""

from __future__ import annotations

import bisect
import math
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SparseLinear", "SparseConv2d"]


def _csr(indices_rows: torch.Tensor, indices_cols: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    """A CSR tensor with int32 indices from COO entries (any order; no duplicates)."""
    with warnings.catch_warnings():
        # torch warns that sparse CSR support is "beta" on every construction; it is what we mean to use.
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        coo = torch.sparse_coo_tensor(
            torch.stack([indices_rows, indices_cols]), values, shape, check_invariants=True
        ).coalesce()
        csr = coo.to_sparse_csr()
        # MKL's sparse BLAS (LP64, used for batch 1) takes int32 indices and converts int64 ones on every call;
        # torch's own kernel takes either.
        return torch.sparse_csr_tensor(
            csr.crow_indices().to(torch.int32),
            csr.col_indices().to(torch.int32),
            csr.values(),
            shape,
            check_invariants=True,  # once, here: a malformed CSR matrix would make MKL read out of bounds
        )


def _linear_csr(weight: torch.Tensor) -> torch.Tensor:
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


def _conv_csr(conv: nn.Conv2d, weight: torch.Tensor, in_shape: Sequence[int], channels_last: bool) -> torch.Tensor:
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


def _csr_mm(csr: torch.Tensor, dense: torch.Tensor, bias_column: torch.Tensor | None = None) -> torch.Tensor:
    """``csr @ dense (+ bias_column)`` for a contiguous ``dense``.

    ``reduce="sum"`` makes ``torch.sparse.mm`` use torch's own vectorised, multi-threaded CSR kernel instead of
    MKL's sparse BLAS (which ``torch.mm`` / ``torch.addmm`` call), which ``bench/sparse_speed.py`` measured slower.
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
    Linear layers become dense-only SparseLinears: ``F.linear`` would copy a transposed input first.

    Example::

        >>> fast = apply_sparse_plan(net, plan_sparse_inference(net, (1, 28, 28), force="sparse")); fast[1]
    """

    def __init__(self, linear: nn.Linear, sparse: Mapping[int, bool]) -> None:
        super().__init__()
        weight = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.dispatch = _Dispatch(sparse)
        any_sparse, all_sparse = any(self.dispatch.choices), all(self.dispatch.choices)
        self.register_buffer("weight_csr", _linear_csr(weight) if any_sparse else None)
        self.register_buffer("weight", None if all_sparse else weight.clone())
        # A row-major input has to be transposed for the CSR product anyway; gathering only the columns some
        # weight reads does both in one pass (at 99 % sparsity LeNet-300-100's fc1 reads 222 of its 784 pixels).
        used = torch.nonzero(weight.ne(0).any(dim=0)).flatten() if any_sparse else None
        partial = used is not None and used.numel() < self.in_features
        self.register_buffer("used_columns", used if partial else None)
        self.register_buffer("weight_csr_used", _linear_csr(weight.index_select(1, used)) if partial else None)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias)
        self.register_buffer("bias_column", None if bias is None else bias[:, None].clone())  # for W @ x^T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            lead = x.shape[:-1]
            return self.forward(x.reshape(-1, self.in_features)).reshape(*lead, self.out_features)
        # Tensors are read from self._buffers directly: Module.__getattr__ per tensor costs as much as the whole
        # sparse product of a batch-1 layer.
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
            return _csr_mm(csr, xt, tensors["bias_column"]).t()
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

    Raises:
        ValueError: (forward) an input of another shape than the one it was converted for.

    Example::

        >>> to_sparse_inference(cnn, (1, 28, 28), force="sparse").conv1   # a SparseConv2d
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
        self.register_buffer("weight_csr", _conv_csr(conv, weight, self.in_shape, channels_last))
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
            yt = _csr_mm(csr, xt, bias)
            y = yt.t().contiguous()  # batch-major again, as F.conv2d returns it
        if self.channels_last:
            return y.view(n, out_h, out_w, self.out_channels).permute(0, 3, 1, 2)
        return y.view(n, self.out_channels, out_h, out_w)

    def extra_repr(self) -> str:
        fmt = "channels_last" if self.channels_last else "contiguous"
        nnz = self.weight_csr.values().numel()
        shape = f"in_shape={self.in_shape}, out_channels={self.out_channels}"
        return f"{shape}, {fmt}, nnz={nnz}, {self.dispatch.describe()}"
