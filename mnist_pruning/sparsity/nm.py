"""N:M semi-structured pruning: in every group of M consecutive input weights keep at most N.

Usage::

    import torch
    from torch import nn
    from torch.nn.utils import prune
    from mnist_pruning.sparsity.nm import (check_nm, decode_nm, encode_nm, nm_compact_bytes, nm_unstructured,
                                  parse_pattern, pattern_for_ratio)

    layer = nm_unstructured(nn.Linear(784, 300), "weight", n=2, m=4)   # mask attached, like l1_unstructured
    assert check_nm(layer.weight, 2, 4)                                  # every group checked
    prune.remove(layer, "weight")                                        # bake the zeros in

    n, m = parse_pattern("2:4")
    packed = encode_nm(layer.weight.detach(), n, m)     # kept values + 2-bit positions, tensors only
    assert torch.equal(decode_nm(packed), layer.weight.detach())
    nm_compact_bytes(layer.weight.detach(), n, m)       # ~2.125 bytes/weight for fp32 2:4 instead of 4

    pattern_for_ratio(0.9)                              # "1:10": the N:M that prunes exactly 90 %

Groups. A weight of shape ``[out, *rest]`` is viewed as ``[out, prod(rest)]`` and each row is cut into groups of
``m`` consecutive entries starting at column 0. For ``nn.Linear`` (``[out, in]``) a group is ``m`` neighbouring
inputs of one output unit; for ``nn.Conv2d`` (``[out, in_channels, kh, kw]``) it is ``m`` neighbouring entries of
one filter flattened channel-major as ``in_channels * kh * kw`` -- the same layout as the filter's row in the
im2col matrix, which is what an N:M sparse GEMM kernel consumes.

Row length not a multiple of ``m`` (conv1: 1*5*5 = 25, fc1 of the MLP: 784 with m=10/100, ...): the row is
treated as zero-padded on the right to a multiple of ``m`` and the pattern must hold in the padded row. So the
trailing partial group of ``r < m`` real weights keeps ``min(n, r)`` of them. This is what semi-structured
formats do (cuSPARSELt / ``to_sparse_semi_structured`` need padded shapes; the padding zeros count as pruned
slots), so a weight pruned here stays valid after zero-padding for such a kernel, and ``check_nm``,
``nm_violations`` and ``encode_nm`` all use the same padded groups.

Repeated pruning. :class:`NMPruning` has ``PRUNING_TYPE = "global"``: a ``PruningContainer`` then hands it the
whole tensor and the previous mask (with "unstructured" it would get a flattened vector of only the surviving
entries and the groups would no longer line up with the rows). ``compute_mask`` honours that ``default_mask``:
already-pruned weights stay pruned and the ``n`` survivors of a group are chosen among its not-yet-pruned
weights; a group with fewer than ``n`` survivors keeps all of them. The price of "global" is that
``prune.global_unstructured`` refuses this method -- N:M is per group by definition, so that is intended.

Ties in magnitude are broken towards the lower position in the group (stable sort), so masks are reproducible.
"""

from __future__ import annotations

import math
import numbers
import re
from fractions import Fraction

import torch
from torch import nn
from torch.nn.utils import prune

from ..checks import _check_n_of_m

__all__ = [
    "NM_PATTERNS",
    "NMPruning",
    "nm_unstructured",
    "check_nm",
    "nm_violations",
    "parse_pattern",
    "semi_structured_available",
]

# Patterns with (current or announced) hardware/kernel support; 2:4 is the one Ampere+ tensor cores run.
NM_PATTERNS: tuple[str, ...] = ("2:4", "1:4", "2:8", "1:8", "1:16")

# The project's sparsity ratios and the N:M that prunes exactly that fraction. 0.5 maps to 2:4 rather than the
# equivalent 1:2 because 2:4 is the pattern hardware accelerates (and it is less constraining than 1:2).
_PROJECT_RATIO_PATTERNS: dict[float, str] = {0.3: "7:10", 0.5: "2:4", 0.7: "3:10", 0.9: "1:10", 0.99: "1:100"}

_MAX_RATIO_M = 100
_PATTERN_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def _rows(t: torch.Tensor, what: str = "tensor") -> torch.Tensor:
    """View ``t`` as ``[out, in*kh*kw...]``: one row per output unit/filter."""
    if t.dim() < 2:
        raise ValueError(
            f"N:M pruning needs a {what} with at least 2 dimensions (out, in, ...), got shape {tuple(t.shape)}; "
            "biases and other 1-D tensors have no input dimension to group along"
        )
    return t.reshape(t.shape[0], -1)


def _groups(rows: torch.Tensor, m: int, fill: float) -> torch.Tensor:
    """``[out, cols]`` -> ``[out, ceil(cols/m), m]``, right-padding every row with ``fill``."""
    pad = -rows.shape[1] % m
    if pad:
        rows = nn.functional.pad(rows, (0, pad), value=fill)
    return rows.reshape(rows.shape[0], -1, m)


def _nm_mask(scores: torch.Tensor, n: int, m: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask keeping, in every (zero-padded) group of ``m`` along the last dimension, the ``n`` entries with
    the largest ``|scores|``.

    Args:
        scores: importance scores, e.g. a Linear weight ``[out, in]``.
        n: entries kept per group, ``1 <= n < m``.
        m: group size, ``m >= 2``.
        keep: optional, same shape, non-zero = still allowed; entries outside it are never kept, and a group with
            fewer than ``n`` allowed entries keeps all of them.

    Returns:
        A bool tensor of ``scores``' shape.

    Raises:
        ValueError: a bad ``n`` / ``m``, ``keep`` of another shape, or NaN scores.

    Example::

        >>> nm_mask(torch.tensor([[0.1, -3.0, 2.0, 0.5]]), 2, 4)   # tensor([[False, True, True, False]])
    """
    n, m = _check_n_of_m(n, m)
    rows = _rows(scores, "scores tensor")
    if keep is not None and keep.shape != scores.shape:
        raise ValueError(f"keep mask shape {tuple(keep.shape)} differs from scores shape {tuple(scores.shape)}")
    mag = rows.detach().abs()
    if not mag.is_floating_point():
        mag = mag.double()
    if torch.isnan(mag).any():
        raise ValueError("importance scores contain NaN; cannot rank weights within N:M groups")
    if keep is not None:
        # -inf sorts after every real magnitude, so disallowed entries only fill slots no allowed entry wants;
        # they are removed again by the final AND below.
        allowed = _rows(keep, "keep mask") != 0
        mag = mag.masked_fill(~allowed, -math.inf)
    groups = _groups(mag, m, -math.inf)
    # A stable descending sort (not topk) gives a documented tie-break: lower position in the group wins.
    order = torch.argsort(groups, dim=-1, descending=True, stable=True)[..., :n]
    chosen = torch.zeros(groups.shape, dtype=torch.bool, device=groups.device).scatter_(-1, order, True)
    chosen = chosen.reshape(rows.shape[0], -1)[:, : rows.shape[1]]
    if keep is not None:
        chosen &= allowed
    return chosen.reshape(scores.shape)


class NMPruning(prune.BasePruningMethod):
    """Keep the ``n`` largest-magnitude weights in every group of ``m`` consecutive inputs; zero the rest.

    Linear ``weight[out, in]``: groups run along each row. Conv2d ``weight[out, in_channels, kh, kw]``: groups
    run along each filter flattened to ``in_channels * kh * kw`` (channel-major, the im2col row). Rows whose
    length is not a multiple of ``m`` are treated as zero-padded, so their last partial group of ``r`` weights
    keeps ``min(n, r)``. Under a ``PruningContainer`` the previous mask is respected (see module docstring).

    Args:
        n: weights kept per group, ``1 <= n < m``.
        m: group size, ``m >= 2``.

    Raises:
        ValueError: a bad ``n`` / ``m``, naming it.

    Example::

        >>> NMPruning.apply(layer, "weight", n=2, m=4)   # as prune.l1_unstructured; prune.remove undoes it
    """

    # "global" makes PruningContainer pass the full tensor and previous mask instead of a flattened slice of
    # survivors, which would scramble the groups. compute_mask itself keeps already-pruned entries pruned.
    PRUNING_TYPE = "global"

    def __init__(self, n: int, m: int) -> None:
        self.n, self.m = _check_n_of_m(n, m)

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        chosen = _nm_mask(t, self.n, self.m, keep=default_mask)
        return default_mask * chosen.to(dtype=default_mask.dtype)

    @classmethod
    def apply(  # type: ignore[override]
        cls, module: nn.Module, name: str, n: int, m: int, importance_scores: torch.Tensor | None = None
    ) -> NMPruning:
        """Attach N:M pruning of ``module.<name>`` (``<name>_orig`` parameter, ``<name>_mask`` buffer, hook)."""
        # Validate before BasePruningMethod.apply touches the module, so a bad n/m leaves it unchanged.
        _check_n_of_m(n, m)
        return super().apply(module, name, n=n, m=m, importance_scores=importance_scores)


def nm_unstructured(
    module: nn.Module, name: str, n: int, m: int, importance_scores: torch.Tensor | None = None
) -> nn.Module:
    """Prune ``module.<name>`` to the N:M pattern by magnitude, like ``prune.l1_unstructured``.

    Adds ``<name>_orig`` (parameter) and ``<name>_mask`` (buffer); undo the reparametrisation with
    ``prune.remove(module, name)``. Calling it again (or any other ``prune`` method) stacks the masks.

    Args:
        module: the layer to prune.
        name: the parameter, usually ``"weight"``.
        n: weights kept per group, ``1 <= n < m``.
        m: group size, ``m >= 2``.
        importance_scores: ranks the weights instead of ``|weight|`` (same shape).

    Returns:
        ``module``.

    Raises:
        ValueError: a bad ``n`` / ``m``.

    Example::

        >>> nm_unstructured(nn.Linear(8, 4), "weight", 2, 4)
    """
    NMPruning.apply(module, name, n=n, m=m, importance_scores=importance_scores)
    return module


def nm_violations(tensor: torch.Tensor, n: int, m: int) -> int:
    """Number of (zero-padded) groups of ``m`` holding more than ``n`` non-zeros.

    Args:
        tensor: a weight; groups run along its last dimension (flattened filters for a conv weight).
        n: non-zeros allowed per group.
        m: group size.

    Returns:
        0 when ``tensor`` follows the pattern.

    Raises:
        ValueError: a bad ``n`` / ``m``.

    Example::

        >>> nm_violations(torch.ones(4, 8), 2, 4)   # 8: every group holds 4
    """
    n, m = _check_n_of_m(n, m)
    nonzero = _groups((_rows(tensor) != 0).to(torch.int32), m, 0)
    return int((nonzero.sum(dim=-1) > n).sum().item())


def check_nm(tensor: torch.Tensor, n: int, m: int) -> bool:
    """Whether every (zero-padded) group of ``m`` consecutive inputs has at most ``n`` non-zeros.

    Args:
        tensor: a weight, as for :func:`nm_violations`.
        n: non-zeros allowed per group.
        m: group size.

    Returns:
        True if ``tensor`` follows the N:M pattern.

    Raises:
        ValueError: a bad ``n`` / ``m``.

    Example::

        >>> sparsify_(net, "nm", pattern="2:4"); check_nm(net[1].weight, 2, 4)   # True
    """
    return nm_violations(tensor, n, m) == 0


def parse_pattern(pattern: str) -> tuple[int, int]:
    """Read an ``"N:M"`` pattern.

    Args:
        pattern: a string like ``"2:4"``.

    Returns:
        ``(n, m)``.

    Raises:
        TypeError: ``pattern`` is not a string.
        ValueError: not two integers ``"N:M"`` with ``1 <= N < M``.

    Example::

        >>> parse_pattern("2:4")   # (2, 4)
    """
    if not isinstance(pattern, str):
        raise TypeError(f"N:M pattern must be a string like '2:4', got {type(pattern).__name__} {pattern!r}")
    match = _PATTERN_RE.match(pattern)
    if match is None:
        raise ValueError(f"N:M pattern must be two integers separated by ':' like '2:4', got {pattern!r}")
    try:
        return _check_n_of_m(int(match.group(1)), int(match.group(2)))
    except ValueError as e:
        raise ValueError(f"invalid N:M pattern {pattern!r}: {e}") from e


def _format_pattern(n: int, m: int) -> str:
    """Write an N:M pattern, validated.

    Args:
        n: non-zeros per group, ``1 <= n < m``.
        m: group size, ``m >= 2``.

    Returns:
        ``"n:m"``.

    Raises:
        ValueError: a bad ``n`` / ``m``.

    Example::

        >>> format_pattern(2, 4)   # "2:4"
    """
    n, m = _check_n_of_m(n, m)
    return f"{n}:{m}"


def _pattern_for_ratio(ratio: float) -> str:
    """The N:M pattern that prunes exactly the fraction ``ratio`` of every full group.

    The project's ratios are fixed (0.3 -> "7:10", 0.5 -> "2:4", 0.7 -> "3:10", 0.9 -> "1:10",
    0.99 -> "1:100"). Any other ratio uses the smallest fraction ``n/m = 1 - ratio`` with ``m <= 100``;
    ValueError if no such fraction equals ``1 - ratio`` (up to float rounding) or it would keep nothing.
    """
    if not isinstance(ratio, numbers.Real) or isinstance(ratio, bool) or not 0.0 < float(ratio) < 1.0:
        raise ValueError(f"ratio (fraction of weights pruned) must be a number with 0 < ratio < 1, got {ratio!r}")
    ratio = float(ratio)
    if ratio in _PROJECT_RATIO_PATTERNS:
        return _PROJECT_RATIO_PATTERNS[ratio]
    density = 1.0 - ratio
    frac = Fraction(density).limit_denominator(_MAX_RATIO_M)
    # 1e-9 absorbs float rounding of e.g. 1 - 0.8 while rejecting genuinely inexact ratios like 0.123.
    if frac.numerator < 1 or abs(float(frac) - density) > 1e-9:
        raise ValueError(
            f"ratio {ratio!r} keeps {density!r} of the weights, which is not n/m for any 1 <= n < m <= "
            f"{_MAX_RATIO_M}; pick a ratio such as 0.5 (2:4), 0.75 (1:4) or 0.9 (1:10)"
        )
    return _format_pattern(frac.numerator, frac.denominator)


def _index_bits(m: int) -> int:
    """Bits needed for a position inside a group of ``m``: ``ceil(log2 m)`` (2 for 2:4, as NVIDIA's metadata)."""
    return (int(m) - 1).bit_length()


def _pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack non-negative ints < 2**bits into a little-endian bitstream of uint8 (``ceil(len*bits/8)`` bytes)."""
    shifts = torch.arange(bits, device=codes.device)
    stream = ((codes.reshape(-1, 1) >> shifts) & 1).reshape(-1)
    stream = nn.functional.pad(stream, (0, -stream.numel() % 8))
    weights = 1 << torch.arange(8, device=codes.device)
    return (stream.reshape(-1, 8) * weights).sum(dim=1).to(torch.uint8)


def _unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`_pack_bits`: the first ``count`` codes as int64."""
    shifts = torch.arange(8, device=packed.device)
    stream = ((packed.to(torch.int64).reshape(-1, 1) >> shifts) & 1).reshape(-1)[: count * bits]
    weights = 1 << torch.arange(bits, device=packed.device)
    return (stream.reshape(count, bits) * weights).sum(dim=1)


def _encode_nm(weight: torch.Tensor, n: int, m: int) -> dict[str, torch.Tensor]:
    """Compact N:M storage of a weight that satisfies the pattern; inverse of :func:`_decode_nm`.

    Every zero-padded group stores exactly ``n`` slots, so the layout is fixed by the shape alone:

    - ``values``: ``[out * groups * n]`` in the weight's dtype (fp32 here), slots in position order; a group
      with fewer than ``n`` non-zeros (a weight fine-tuned to exactly 0, a short padded tail) fills the spare
      slots with zeros taken from the group itself. Zeros are stored as +0.0 (see :func:`_decode_nm`).
    - ``indices``: each slot's position in its group, ``index_bits(m)`` bits each, bit-packed little-endian
      into uint8 (2 bits per kept value for 2:4, like NVIDIA's sparse metadata).
    - ``shape``: the dense shape (int64); ``nm``: ``[n, m]`` (int64).

    Only tensors, so it can go to safetensors or ``torch.save``/``torch.load(weights_only=True)``.
    """
    n, m = _check_n_of_m(n, m)
    if not weight.is_floating_point():
        raise ValueError(f"encode_nm needs a floating-point weight, got dtype {weight.dtype}")
    bad = nm_violations(weight, n, m)
    if bad:
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} is not {n}:{m} sparse: {bad} groups have > {n} non-zeros"
        )
    rows = _rows(weight.detach(), "weight")
    groups = _groups(rows, m, 0.0)
    # Non-zeros take the slots first; spare slots go to the group's first zero positions (stable sort).
    slots = torch.argsort((groups != 0).to(torch.int8), dim=-1, descending=True, stable=True)[..., :n]
    slots = torch.sort(slots, dim=-1).values  # position order, as hardware metadata is laid out
    # "+ 0.0" turns -0.0 into +0.0 (and changes nothing else) so every zero decodes the same way.
    values = torch.gather(groups, -1, slots) + 0.0
    return {
        "values": values.reshape(-1).contiguous(),
        "indices": _pack_bits(slots.reshape(-1), _index_bits(m)),
        "shape": torch.tensor(list(weight.shape), dtype=torch.int64),
        "nm": torch.tensor([n, m], dtype=torch.int64),
    }


def _decode_nm(encoded: dict[str, torch.Tensor]) -> torch.Tensor:
    """Dense weight from :func:`_encode_nm`'s dict.

    Bitwise equal to the encoded weight except that every zero comes back as +0.0: pruning by ``mask * orig``
    leaves -0.0 wherever a negative weight was pruned, and keeping that sign would cost a bit per pruned
    weight. ``torch.equal(decode_nm(encode_nm(w, n, m)), w)`` holds, since -0.0 == +0.0.
    """
    missing = {"values", "indices", "shape", "nm"} - set(encoded)
    if missing:
        raise ValueError(f"not an encode_nm dict: missing {sorted(missing)}")
    values, packed = encoded["values"], encoded["indices"]
    n, m = _check_n_of_m(*(int(v) for v in encoded["nm"].tolist()))
    shape = [int(s) for s in encoded["shape"].tolist()]
    if len(shape) < 2 or min(shape) < 0:
        raise ValueError(f"corrupt encode_nm dict: shape {shape}")
    out_rows, cols = shape[0], math.prod(shape[1:])
    n_groups = -(-cols // m)
    count = out_rows * n_groups * n
    bits = _index_bits(m)
    n_bytes = -(-count * bits // 8)
    if values.numel() != count or packed.numel() != n_bytes or packed.dtype != torch.uint8:
        raise ValueError(
            f"corrupt encode_nm dict: shape {shape} with {n}:{m} needs {count} values and {n_bytes} uint8 "
            f"index bytes, got {values.numel()} values and {packed.numel()} index entries ({packed.dtype})"
        )
    slots = _unpack_bits(packed, bits, count).reshape(out_rows, n_groups, n)
    if count and (slots.max() >= m or (n > 1 and (slots.diff(dim=-1) <= 0).any())):
        raise ValueError("corrupt encode_nm dict: group positions out of range or not strictly increasing")
    dense = torch.zeros((out_rows, n_groups, m), dtype=values.dtype, device=values.device)
    dense.scatter_(-1, slots, values.reshape(out_rows, n_groups, n))
    return dense.reshape(out_rows, n_groups * m)[:, :cols].reshape(shape).contiguous()


def _nm_compact_bytes(weight: torch.Tensor, n: int, m: int) -> int:
    """Bytes of all tensors :func:`_encode_nm` produces for ``weight`` (values + packed indices + shape + nm)."""
    return sum(t.numel() * t.element_size() for t in _encode_nm(weight, n, m).values())


def _pad_to_multiple(t: torch.Tensor, row_multiple: int, col_multiple: int) -> torch.Tensor:
    """Zero-pad a 2-D tensor on the bottom / right to multiples of the given sizes (for semi-structured kernels).

    Zero padding keeps an N:M pattern valid because groups start at column 0 (see module docstring).

    Args:
        t: a 2-D tensor.
        row_multiple: rows are padded to a multiple of this.
        col_multiple: columns are padded to a multiple of this.

    Returns:
        A zero-padded copy of ``t``.

    Raises:
        ValueError: ``t`` is not 2-D.

    Example::

        >>> pad_to_multiple(torch.ones(300, 784), 64, 64).shape   # torch.Size([320, 832])
    """
    if t.dim() != 2:
        raise ValueError(f"pad_to_multiple needs a 2-D tensor, got shape {tuple(t.shape)}")
    return nn.functional.pad(t, (0, -t.shape[1] % col_multiple, 0, -t.shape[0] % row_multiple))


def semi_structured_available() -> bool:
    """Whether 2:4 sparse matmuls can run here.

    Returns:
        True on CUDA with compute capability >= 8.0 and ``torch.sparse.to_sparse_semi_structured`` present.

    Example::

        >>> semi_structured_available()   # False on a CPU-only machine
    """
    if not hasattr(torch.sparse, "to_sparse_semi_structured") or not torch.cuda.is_available():
        return False
    major, _minor = torch.cuda.get_device_capability()
    return major >= 8
