"""Compact on-disk format for pruned models: only the non-zero weights and where they are, so files really shrink.

Usage::

    from mnist_pruning.sparsity.compact import save_compact, load_compact, save_dense, compact_ratio
    n_bytes = save_compact(model, "runs/mlp-90.safetensors")   # a model (masks attached or not) or a state_dict
    state_dict = load_compact("runs/mlp-90.safetensors")        # plain {name: Tensor}, checksum verified
    model.load_state_dict(state_dict)                           # into a model *without* pruning masks attached
    dense = save_dense(model, "runs/mlp-90.pt")                 # the baseline: ordinary torch.save, zeros stored
    compact_ratio(model)                                        # compact bits / information limit, e.g. 1.01

What is saved is :func:`_effective_state_dict`: with ``torch.nn.utils.prune`` attached, ``weight`` is
``weight_orig * weight_mask`` and the ``_orig``/``_mask`` entries are dropped. A zero is a zero: ``-0.0`` (what
masking a negative weight produces) is written back as ``+0.0``; every other value, NaN included, round-trips
bit for bit, so ``load_compact(p)`` equals ``_effective_state_dict(model)`` even compared as integer bit patterns.

File format (a safetensors file, so loading never unpickles anything):

- one ``U8`` tensor ``data``: per state-dict entry, in order, its value section then its position section;
- string metadata ``format`` = ``mnist-pruning-compact/2``, ``layout`` = ``;``-joined records
  ``"<name> <dtype> <shape> <encoding> <nnz>"`` (dtype as safetensors spells it, shape ``300,784``, ``-`` for a
  scalar), and ``crc32`` = 8 hex digits, the CRC-32 of the layout string's UTF-8 bytes followed by the blob.
  Section lengths follow from shape, dtype, encoding and nnz; the loader checks they add up exactly, and checks
  the CRC before decoding anything, so a flipped bit anywhere in the payload or the layout is an error, never a
  silently different model (version 1 files carried no checksum and are refused: re-export them).

Encodings (the smallest is chosen per tensor; values are the non-zeros in flat C order, raw little-endian):

- ``dense``: all ``n`` values, no positions; wins for biases and barely pruned tensors.
- ``bitmask``: non-zero values + an ``n``-bit mask (``numpy.packbits``); optimal around 50 % sparsity.
- ``ef``: non-zero values + Elias-Fano code of the sorted flat indices: ``L = floor(log2(n/nnz))`` low bits per
  index, bit-packed, then the high parts as a unary bitvector of ``nnz + ((n - 1) >> L)`` bits (bit
  ``(i >> L) + j`` set for the j-th index ``i``), both in one packed bit stream. It costs at most about
  ``2 + log2(n/nnz)`` bits per index, within ~0.6 bit of ``log2 C(n, nnz) / nnz``, which at high sparsity
  beats a bitmask (``n/nnz`` bits per index) and plain indices (16-32 bits) by far.
- ``index``: non-zero values + flat indices in the smallest unsigned integer type that holds ``n - 1``.

The single blob keeps the safetensors JSON header to one entry plus a short layout string: on a model with a few
hundred surviving weights the header is a visible share of the file, and it counts against the goal of staying
within 15 % of :func:`_information_limit_bits`.
"""

from __future__ import annotations

import io
import math
import os
import zlib
from collections.abc import Mapping

import numpy as np
import safetensors.torch
import torch
from safetensors import safe_open

from ..files import CorruptFileError, _atomic_write, _UnsafeFileError
from ._binary import (
    _DTYPE_BY_NAME,
    _DTYPE_NAMES,
    _invalid_file,
    _log2_binomial,
    _parse_shape,
    _shape_text,
    _tensor_from_bytes,
)
from .measure import _effective_state_dict, _StateDictLike

__all__ = [
    "save_compact",
    "load_compact",
    "compact_summary",
    "save_dense",
    "compact_ratio",
]

_FORMAT = "mnist-pruning-compact/2"
_ENCODINGS = ("dense", "bitmask", "ef", "index")
_BLOB = "data"


# ---------------------------------------------------------------------------------------- position encodings


def _index_width(n: int) -> int:
    """Bytes per flat index for the ``index`` encoding: the smallest unsigned type holding ``n - 1``."""
    for width in (1, 2, 4):
        if n <= 1 << (8 * width):
            return width
    return 8


def _ef_params(n: int, nnz: int) -> tuple[int, int]:
    """Elias-Fano ``(L, total bits)``; integer arithmetic so ``L`` is exactly ``floor(log2(n / nnz))``."""
    if nnz == 0:
        return 0, 0
    low = (n // nnz).bit_length() - 1
    return low, nnz * low + ((n - 1) >> low) + nnz


def _position_bytes(encoding: str, n: int, nnz: int) -> int:
    """Exact size of a tensor's position section; the loader relies on it to split the blob."""
    if encoding == "dense":
        return 0
    if encoding == "bitmask":
        return (n + 7) // 8
    if encoding == "ef":
        return (_ef_params(n, nnz)[1] + 7) // 8
    if encoding == "index":
        return nnz * _index_width(n)
    raise ValueError(f"unknown encoding {encoding!r}")


def _encode_positions(encoding: str, idx: np.ndarray, n: int) -> bytes:
    """Encode sorted flat indices ``idx`` (int64) of the non-zeros of an ``n``-element tensor."""
    nnz = len(idx)
    if encoding == "dense":
        return b""
    if encoding == "bitmask":
        bits = np.zeros(n, dtype=np.uint8)
        bits[idx] = 1
        return np.packbits(bits).tobytes()
    if encoding == "ef":
        low, total = _ef_params(n, nnz)
        if nnz == 0:
            return b""
        shifts = np.arange(low - 1, -1, -1, dtype=np.int64)  # most significant low bit first
        low_bits = ((idx[:, None] >> shifts[None, :]) & 1).astype(np.uint8).ravel()
        high_bits = np.zeros(total - nnz * low, dtype=np.uint8)
        high_bits[(idx >> low) + np.arange(nnz, dtype=np.int64)] = 1
        return np.packbits(np.concatenate([low_bits, high_bits])).tobytes()
    if encoding == "index":
        return idx.astype(f"<u{_index_width(n)}").tobytes()
    raise ValueError(f"unknown encoding {encoding!r}")


def _decode_positions(encoding: str, buf: np.ndarray, n: int, nnz: int) -> np.ndarray:
    """Inverse of :func:`_encode_positions`; raises ValueError when ``buf`` cannot be a valid encoding."""
    if encoding == "dense":
        return np.arange(n, dtype=np.int64)
    if encoding == "bitmask":
        idx = np.flatnonzero(np.unpackbits(buf, count=n)).astype(np.int64)
    elif encoding == "ef":
        low, total = _ef_params(n, nnz)
        if nnz == 0:
            return np.zeros(0, dtype=np.int64)
        bits = np.unpackbits(buf, count=total)
        weights = np.left_shift(np.int64(1), np.arange(low - 1, -1, -1, dtype=np.int64))
        lows = bits[: nnz * low].reshape(nnz, low).astype(np.int64) @ weights
        ones = np.flatnonzero(bits[nnz * low :])
        if len(ones) != nnz:
            raise ValueError(f"Elias-Fano high bits hold {len(ones)} entries, layout says {nnz}")
        idx = ((ones - np.arange(nnz)) << low) | lows
    elif encoding == "index":
        idx = np.frombuffer(buf.tobytes(), dtype=f"<u{_index_width(n)}").astype(np.int64)
    else:
        raise ValueError(f"unknown encoding {encoding!r}")
    if len(idx) != nnz or (nnz and (idx[0] < 0 or idx[-1] >= n or np.any(np.diff(idx) <= 0))):
        raise ValueError(f"{encoding} positions are not {nnz} increasing indices below {n}")
    return idx


def _choose_encoding(n: int, nnz: int, itemsize: int) -> str:
    """Smallest encoding; ties go to the simpler one (order of :data:`_ENCODINGS`)."""
    sizes = {enc: (n if enc == "dense" else nnz) * itemsize + _position_bytes(enc, n, nnz) for enc in _ENCODINGS}
    return min(_ENCODINGS, key=lambda enc: sizes[enc])


# ----------------------------------------------------------------------------------------------- file format


def _plan(sd: Mapping[str, torch.Tensor]) -> list[dict]:
    """Per tensor: name, dtype name, shape, numel, nnz, chosen encoding, its section sizes."""
    rows = []
    for name, t in sd.items():
        if not name or any(c.isspace() or c == ";" for c in name):
            raise ValueError(f"state_dict key {name!r} cannot be stored: it is empty or has whitespace or ';'")
        if t.dtype not in _DTYPE_NAMES:
            raise ValueError(f"state_dict entry {name!r} has unsupported dtype {t.dtype}")
        n, itemsize = t.numel(), t.element_size()
        nnz = int(torch.count_nonzero(t).item())
        enc = _choose_encoding(n, nnz, itemsize)
        value_bytes = (n if enc == "dense" else nnz) * itemsize
        rows.append(
            {
                "name": name,
                "dtype": _DTYPE_NAMES[t.dtype],
                "shape": tuple(t.shape),
                "numel": n,
                "nnz": nnz,
                "encoding": enc,
                "value_bytes": value_bytes,
                "position_bytes": _position_bytes(enc, n, nnz),
            }
        )
    return rows


def _layout_record(row: dict) -> str:
    return f"{row['name']} {row['dtype']} {_shape_text(row['shape'])} {row['encoding']} {row['nnz']}"


def _encode_compact(model_or_state_dict: _StateDictLike) -> bytes:
    """The bytes :func:`save_compact` writes (a complete safetensors file), without touching the disk."""
    sd = _effective_state_dict(model_or_state_dict)
    rows = _plan(sd)
    parts: list[bytes] = []
    for row in rows:
        flat = sd[row["name"]].reshape(-1)
        if row["encoding"] == "dense":
            values, idx = flat, np.zeros(0, dtype=np.int64)
        else:
            nonzero = flat != 0
            values = flat[nonzero]
            idx = np.flatnonzero(nonzero.numpy()).astype(np.int64)
        # Raw bytes through a uint8 view: works for bfloat16, which numpy cannot represent.
        parts.append(values.contiguous().view(torch.uint8).numpy().tobytes())
        parts.append(_encode_positions(row["encoding"], idx, row["numel"]))
    blob = _tensor_from_bytes(b"".join(parts), torch.uint8)
    layout = ";".join(_layout_record(r) for r in rows)
    metadata = {"format": _FORMAT, "layout": layout, "crc32": _crc32(layout, blob.numpy())}
    return safetensors.torch.save({_BLOB: blob}, metadata=metadata)


def _crc32(layout: str, blob: np.ndarray) -> str:
    return f"{zlib.crc32(blob.tobytes(), zlib.crc32(layout.encode())):08x}"


def save_compact(model_or_state_dict: _StateDictLike, path: str | os.PathLike) -> int:
    """Write the compact file (non-zeros + their positions + a CRC-32, in safetensors) atomically.

    Args:
        model_or_state_dict: a model (masks folded in) or a state_dict of tensors.
        path: where to write; replaced only once the whole file is written.

    Returns:
        The number of bytes written.

    Raises:
        ValueError: a state_dict key is empty or holds whitespace or ``;``, or a tensor has an unsupported dtype.
        TypeError: a state_dict entry is not a tensor.

    Example::

        >>> sp.sparsify_(net, "global", 0.9); save_compact(net, "net.safetensors")   # ~ 1/9 of the dense bytes
    """
    data = _encode_compact(model_or_state_dict)
    with _atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return len(data)


def _compact_bytes(model_or_state_dict: _StateDictLike) -> int:
    """Size in bytes of the compact file, header included, computed in memory (nothing written).

    Args:
        model_or_state_dict: a model or a state_dict of tensors.

    Returns:
        What :func:`save_compact` would write, in bytes.

    Raises:
        ValueError: as :func:`save_compact`.
        TypeError: as :func:`save_compact`.

    Example::

        >>> compact_bytes(net) == save_compact(net, "net.safetensors")   # True
    """
    return len(_encode_compact(model_or_state_dict))


def _parse_layout(layout: str) -> list[tuple[str, torch.dtype, tuple[int, ...], str, int]]:
    records = []
    seen: set[str] = set()
    for record in layout.split(";") if layout else []:
        fields = record.split(" ")
        if len(fields) != 5:
            raise ValueError(f"layout record {record!r} does not have 5 fields")
        name, dtype_name, shape_field, enc, nnz_text = fields
        if dtype_name not in _DTYPE_BY_NAME or enc not in _ENCODINGS or name in seen:
            raise ValueError(f"layout record {record!r} has an unknown dtype/encoding or a repeated name")
        shape = _parse_shape(shape_field)
        nnz = int(nnz_text)
        if not 0 <= nnz <= math.prod(shape):
            raise ValueError(f"layout record {record!r} has an impossible shape or nnz")
        seen.add(name)
        records.append((name, _DTYPE_BY_NAME[dtype_name], shape, enc, nnz))
    return records


def _not_compact(path: str | os.PathLike, why: str) -> CorruptFileError:
    return _invalid_file(path, _FORMAT, why, "compact file", "export the model again with save_compact")


def load_compact(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a file written by :func:`save_compact` back into a plain state_dict of CPU tensors.

    Only safetensors is parsed (JSON header + raw bytes), so nothing in the file can run code.

    Args:
        path: the compact file.

    Returns:
        ``{name: tensor}``, bit for bit the effective state_dict that was saved.

    Raises:
        UnsafeFileError: the file is a pickle or ``torch.save`` archive (never unpickled).
        CorruptFileError: a truncated, foreign or inconsistent file (a ValueError naming ``path``).

    Example::

        >>> net.load_state_dict(load_compact("net.safetensors"))
    """
    with open(path, "rb") as f:
        head = f.read(9)
    # A safetensors file is an 8-byte header length followed by a JSON object. torch.save writes a zip archive
    # ("PK\x03\x04"); a pickle starts with the PROTO opcode 0x80 (or an older opcode): name those precisely.
    if head[8:9] != b"{":
        if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
            raise _UnsafeFileError(
                f"refusing to load {str(path)!r}: it is a pickle/torch.save file, and compact files are "
                "safetensors (load_compact never unpickles)"
            )
        raise _not_compact(path, "it does not start with a safetensors header")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            keys = list(f.keys())
            blob = f.get_tensor(_BLOB).numpy() if keys == [_BLOB] else None
    except Exception as e:  # safetensors raises its own error type for truncated or malformed headers
        raise _not_compact(path, f"safetensors could not read it ({e})") from e
    if metadata.get("format") != _FORMAT or blob is None or blob.dtype != np.uint8 or blob.ndim != 1:
        raise _not_compact(path, f"format tag {metadata.get('format')!r}, tensors {keys}")
    if metadata.get("crc32") != _crc32(metadata.get("layout", ""), blob):
        raise _not_compact(path, "its CRC-32 does not match its contents")
    try:
        records = _parse_layout(metadata.get("layout", ""))
    except ValueError as e:
        raise _not_compact(path, str(e)) from e

    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name, dtype, shape, enc, nnz in records:
        n = math.prod(shape)
        value_len = (n if enc == "dense" else nnz) * dtype.itemsize
        pos_len = _position_bytes(enc, n, nnz)
        if offset + value_len + pos_len > len(blob):
            raise _not_compact(path, f"data ends inside {name!r}")
        values = _tensor_from_bytes(blob[offset : offset + value_len].tobytes(), dtype)
        offset += value_len
        try:
            idx = _decode_positions(enc, blob[offset : offset + pos_len], n, nnz)
        except ValueError as e:
            raise _not_compact(path, f"{name!r}: {e}") from e
        offset += pos_len
        flat = torch.zeros(n, dtype=dtype)
        flat[torch.from_numpy(idx)] = values
        if enc == "dense" and int(torch.count_nonzero(flat).item()) != nnz:
            raise _not_compact(path, f"{name!r} has a different number of non-zeros than recorded")
        out[name] = flat.reshape(shape)
    if offset != len(blob):
        raise _not_compact(path, f"{len(blob) - offset} trailing bytes after the last tensor")
    return out


# -------------------------------------------------------------------------------------------- dense baseline


def _dense_file(model_or_state_dict: _StateDictLike) -> bytes:
    # Serialised in memory: torch.save names the zip's inner folder after the file, so writing to a temporary
    # file would make the size depend on a random name.
    buf = io.BytesIO()
    torch.save(_effective_state_dict(model_or_state_dict), buf)
    return buf.getvalue()


def save_dense(model_or_state_dict: _StateDictLike, path: str | os.PathLike) -> int:
    """``torch.save`` the effective state_dict (zeros stored as zeros) atomically: the baseline file format.

    Args:
        model_or_state_dict: a model (masks folded in) or a state_dict of tensors.
        path: where to write.

    Returns:
        The number of bytes written.

    Raises:
        TypeError: a state_dict entry is not a tensor.

    Example::

        >>> save_dense(net, "net.pt")
    """
    data = _dense_file(model_or_state_dict)
    with _atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return len(data)


def _dense_bytes(model_or_state_dict: _StateDictLike, path: str | os.PathLike | None = None) -> int:
    """Size of the ordinary dense checkpoint (:func:`save_dense`).

    Args:
        model_or_state_dict: a model or a state_dict of tensors.
        path: if given, the file is also written there.

    Returns:
        The checkpoint's size in bytes.

    Raises:
        TypeError: a state_dict entry is not a tensor.

    Example::

        >>> dense_bytes(net) / compact_bytes(net)   # the compact file's gain
    """
    if path is not None:
        return save_dense(model_or_state_dict, path)
    return len(_dense_file(model_or_state_dict))


# ------------------------------------------------------------------------------------------ information limit


def _information_limit_bits(n: int, nnz: int, value_bits: int = 32) -> float:
    """Bits needed at least to store ``nnz`` arbitrary values at unknown positions among ``n``.

    ``nnz * value_bits + log2 C(n, nnz)``: the values themselves plus which of the ``C(n, nnz)`` equally
    likely position sets it is.
    """
    if not 0 <= nnz <= n:
        raise ValueError(f"need 0 <= nnz <= n, got n={n}, nnz={nnz}")
    return nnz * value_bits + max(_log2_binomial(n, nnz), 0.0)


def compact_summary(model_or_state_dict: _StateDictLike) -> list[dict]:
    """What the compact file holds, tensor by tensor.

    Args:
        model_or_state_dict: a model or a state_dict of tensors.

    Returns:
        One dict per stored tensor: name, shape, numel, nnz, encoding, payload bytes, information limit bits.

    Raises:
        ValueError: as :func:`save_compact`.

    Example::

        >>> pandas.DataFrame(compact_summary(net))
    """
    rows = _plan(_effective_state_dict(model_or_state_dict))
    for row in rows:
        row["bytes"] = row.pop("value_bytes") + row.pop("position_bytes")
        row["limit_bits"] = _information_limit_bits(
            row["numel"], row["nnz"], 8 * _DTYPE_BY_NAME[row.pop("dtype")].itemsize
        )
    return rows


def compact_ratio(model_or_state_dict: _StateDictLike) -> float:
    """How close the compact file comes to the information limit of its content.

    Args:
        model_or_state_dict: a model or a state_dict of tensors.

    Returns:
        The file's size in bits (header included) over the summed information limit of its tensors (>= 1).

    Raises:
        ValueError: as :func:`save_compact`.

    Example::

        >>> compact_ratio(net)   # e.g. 1.1: 10 % above the limit
    """
    sd = _effective_state_dict(model_or_state_dict)
    limit = sum(r["limit_bits"] for r in compact_summary(sd))
    return _compact_bytes(sd) * 8 / limit if limit else math.inf
