"""Helpers shared by the package's binary file formats (``compact`` here, ``mnist_pruning.compress.fileformat``).

Usage::

    from mnist_pruning.sparsity._binary import DTYPE_BY_NAME, DTYPE_NAMES, parse_shape, shape_text
    shape_text((300, 784)), parse_shape("300,784")        # "300,784", (300, 784); "-" for a scalar
    DTYPE_NAMES[torch.float16], DTYPE_BY_NAME["F16"]       # "F16", torch.float16 (safetensors' spelling)
    log2_binomial(1000, 50)                                # bits to say which 50 of 1000 positions
    raise invalid_file(path, "mnist-pruning-compact/2", "its CRC-32 does not match", "compact file", "...")
"""

from __future__ import annotations

import math
import os

import torch

from ..files import CorruptFileError

__all__ = [
]

# Names as safetensors spells them: short, and a reader of the files already knows them.
_DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float32: "F32",
    torch.float64: "F64",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_DTYPE_BY_NAME: dict[str, torch.dtype] = {v: k for k, v in _DTYPE_NAMES.items()}


def _shape_text(shape) -> str:
    """``300,784`` for a shape, ``-`` for a scalar (a field of a space-separated record is never empty)."""
    return ",".join(map(str, shape)) or "-"


def _parse_shape(text: str) -> tuple[int, ...]:
    """The shape :func:`_shape_text` wrote; ValueError for a field that is not one."""
    shape = () if text == "-" else tuple(int(s) for s in text.split(","))
    if any(s < 0 for s in shape):
        raise ValueError(f"negative dimension in {text!r}")
    return shape


def _tensor_from_bytes(data: bytes, dtype: torch.dtype) -> torch.Tensor:
    """A fresh, writable 1-D tensor over a copy of ``data`` (torch.frombuffer refuses empty buffers)."""
    if not data:
        return torch.zeros(0, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype)


def _log2_binomial(n: int, k: int) -> float:
    """``log2 C(n, k)``: the bits that say which ``k`` of ``n`` positions; ``lgamma`` keeps it exact enough for
    any ``n`` without big integers."""
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


def _invalid_file(source: str | os.PathLike, fmt: str, why: str, kind: str, remedy: str) -> CorruptFileError:
    """The error for a file that is not a whole, unaltered ``fmt`` file, naming it and what to do."""
    return CorruptFileError(
        f"{str(source)!r} is not a valid {fmt} file: {why}. It is damaged (truncated or altered) or not a "
        f"{kind}; {remedy}"
    )
