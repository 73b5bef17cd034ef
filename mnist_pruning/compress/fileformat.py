"""The coded file format ``mnist-pruning-coded/1`` (``.mnpz``): a :class:`_CodedModel` entropy-coded, checksummed.

Usage::

    from mnist_pruning.compress.fileformat import encode, decode, save_coded, load_model, size_breakdown
    n_bytes = save_coded(coded, "runs/cnn-99.mnpz")     # the smaller position coding per layer
    model = load_model("runs/cnn-99.mnpz")              # CRC checked, rebuilt with models.build_model
    size_breakdown(encode(coded))                       # bytes on header / codebooks / values / positions / biases
    layer_table(data), decode_header(data)              # per layer: k, coding, bytes; the header records

Layout (little-endian; no pickle, nothing in it is executed)::

    magic  b"MNPZ" | version u8 = 1 | header length u16 | header (ASCII) | payload | CRC-32 u32

The CRC-32 (``zlib.crc32``) covers every byte before it, so one flipped bit anywhere (magic, header, payload or
the CRC itself) is refused, as is a truncated file. The header is ``;``-joined records:

- ``model <arch> <widths>``, e.g. ``model cnn 20,50,500`` (rebuilt with :func:`mnist_pruning.models.build_model`);
- ``shared <name> <shape> <bits> <nnz> <k> <codebook dtype> <position coding> <5 section lengths>``: one per
  prunable weight; sections, in order: codebook (``k`` raw values), index table (``k`` LEB128 counts), index
  stream (ANS words), position table (gaps: the number of bit-length buckets then their LEB128 counts; mask:
  empty), position stream (ANS words); see :mod:`.coder`. Both position codings are measured per layer and the
  smaller is written;
- ``raw <name> <shape> <dtype> <length>``: every other state-dict entry (biases), raw bytes.

The loader checks that every length agrees with what shape / dtype / k imply and that they add up to the payload
exactly before decoding, and that the decoded counts and positions are consistent.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checks import _check_choice
from ..files import CorruptFileError, _atomic_write
from ..models import ModelConfig
from ..sparsity._binary import (
    _DTYPE_BY_NAME,
    _DTYPE_NAMES,
    _invalid_file,
    _parse_shape,
    _shape_text,
    _tensor_from_bytes,
)
from .coded import _CodedModel, _SharedLayer
from .coder import _POSITION_CODINGS, _decode_indices, _decode_positions, _encode_indices, _encode_positions
from .sharing import _CODEBOOK_DTYPES, _MAX_BITS

__all__ = [
    "encode",
    "decode",
    "save_coded",
    "load_model",
    "size_breakdown",
    "layer_table",
]

_FORMAT = "mnist-pruning-coded/1"
_MAGIC = b"MNPZ"
_VERSION = 1
_RAW_DTYPES = ("F32", "F16", "BF16")  # dtypes of the raw (non-shared) tensors
_PREFIX = struct.Struct("<4sBH")  # magic, version, header length


# ------------------------------------------------------------------------------------------------- writing


def _layer_sections(layer: _SharedLayer, coding: str | None = None) -> tuple[str, list[bytes]]:
    """The smaller position coding (or ``coding``) and the five sections of a shared layer."""
    k = len(layer.codebook)
    table, stream = _encode_indices(layer.indices, k)
    codebook = np.ascontiguousarray(layer.codebook, dtype=layer.codebook.dtype.newbyteorder("<")).tobytes()
    options = {}
    for c in (coding,) if coding else _POSITION_CODINGS:
        options[c] = _encode_positions(c, layer.positions, layer.numel)
    best = min(options, key=lambda c: (len(options[c][0]) + len(options[c][1]), _POSITION_CODINGS.index(c)))
    return best, [codebook, table, stream, *options[best]]


def encode(coded: _CodedModel, position_coding: str | None = None) -> bytes:
    """The bytes of the coded file (see the module docstring). ``position_coding`` forces "mask" or "gap" for
    every layer; by default each layer gets the smaller one."""
    if position_coding is not None:
        _check_choice(position_coding, _POSITION_CODINGS, "position coding")
    records = [f"model {coded.config.arch} {_shape_text(coded.config.widths)}"]
    payload: list[bytes] = []
    for name, layer in coded.layers.items():
        if layer.codebook.dtype not in (np.float32, np.float16):
            raise ValueError(f"codebook of {name!r} must be float32 or float16, got {layer.codebook.dtype}")
        dtype = "F32" if layer.codebook.dtype == np.float32 else "F16"
        coding, sections = _layer_sections(layer, position_coding)
        lengths = ",".join(str(len(s)) for s in sections)
        records.append(
            f"shared {name} {_shape_text(layer.shape)} {layer.bits} {layer.nnz} {len(layer.codebook)} {dtype} "
            f"{coding} {lengths}"
        )
        payload.extend(sections)
    for name, t in coded.tensors.items():
        if _DTYPE_NAMES.get(t.dtype) not in _RAW_DTYPES:
            raise ValueError(f"tensor {name!r} has unsupported dtype {t.dtype}")
        data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        records.append(f"raw {name} {_shape_text(t.shape)} {_DTYPE_NAMES[t.dtype]} {len(data)}")
        payload.append(data)
    header = ";".join(records).encode("ascii")
    if len(header) >= 1 << 16:
        raise ValueError("the header is too long for this format")
    body = _PREFIX.pack(_MAGIC, _VERSION, len(header)) + header + b"".join(payload)
    return body + struct.pack("<I", zlib.crc32(body))


def save_coded(coded: _CodedModel, path: str | os.PathLike, position_coding: str | None = None) -> int:
    """Write :func:`encode`'s bytes atomically; return the file size in bytes."""
    data = encode(coded, position_coding)
    with _atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return len(data)


# ------------------------------------------------------------------------------------------------- reading


def _bad(source: str, why: str) -> CorruptFileError:
    return _invalid_file(source, _FORMAT, why, "coded model file", "write it again with save_coded")


def _crc_ok(data: bytes) -> bool:
    return zlib.crc32(data[:-4]) == struct.unpack("<I", data[-4:])[0]


@dataclass
class _Parsed:
    coded: _CodedModel
    sections: dict[str, int]  # bytes per part: header, codebooks, values, positions, biases
    layers: list[dict]  # per shared layer: name, coding, section lengths


def _parse(data: bytes, source: str) -> _Parsed:
    if len(data) < _PREFIX.size + 4:
        raise _bad(source, f"it is {len(data)} bytes long, shorter than the fixed fields")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != _MAGIC:
        raise _bad(source, f"it starts with {magic!r}, not {_MAGIC!r}")
    if not _crc_ok(data):
        raise _bad(source, "its CRC-32 does not match its contents")
    if version != _VERSION:
        raise _bad(source, f"version {version} (this reader knows {_VERSION})")
    start = _PREFIX.size + header_len
    if start > len(data) - 4:
        raise _bad(source, "the header runs past the end")
    payload = data[start:-4]
    try:
        return _parse_records(data[_PREFIX.size : start].decode("ascii"), payload, header_len)
    except (ValueError, KeyError, IndexError, UnicodeDecodeError) as e:
        raise _bad(source, str(e)) from e


def _parse_records(header: str, payload: bytes, header_len: int) -> _Parsed:
    records = [r.split(" ") for r in header.split(";")]
    if not records or records[0][0] != "model" or len(records[0]) != 3:
        raise ValueError("the header does not start with a model record")
    config = ModelConfig.from_dict({"arch": records[0][1], "widths": _parse_shape(records[0][2])})
    layers: dict[str, _SharedLayer] = {}
    tensors: dict[str, torch.Tensor] = {}
    info: list[dict] = []
    sizes = {"header": _PREFIX.size + header_len + 4, "codebooks": 0, "values": 0, "positions": 0, "biases": 0}
    offset = 0

    def take(length: int) -> bytes:
        nonlocal offset
        if offset + length > len(payload):
            raise ValueError("the payload ends inside a section")
        offset += length
        return payload[offset - length : offset]

    for fields in records[1:]:
        kind, name = fields[0], fields[1] if len(fields) > 1 else ""
        if name in layers or name in tensors:
            raise ValueError(f"{name!r} appears twice")
        if kind == "shared" and len(fields) == 9:
            shape = _parse_shape(fields[2])
            bits, nnz, k = (int(f) for f in fields[3:6])
            dtype, coding = fields[6], fields[7]
            lengths = [int(x) for x in fields[8].split(",")]
            n = math.prod(shape)
            if dtype not in _CODEBOOK_DTYPES or coding not in _POSITION_CODINGS or len(lengths) != 5:
                raise ValueError(f"record of {name!r} has an unknown dtype or position coding")
            if not 1 <= bits <= _MAX_BITS or not 0 <= nnz <= n or not (0 <= k <= min(nnz, 1 << bits)):
                raise ValueError(f"record of {name!r} has impossible bits / nnz / k")
            itemsize = _DTYPE_BY_NAME[dtype].itemsize
            if lengths[0] != k * itemsize or min(lengths) < 0:
                raise ValueError(f"codebook of {name!r} is {lengths[0]} bytes, {k} x {itemsize} expected")
            codebook_b, table, stream, ptable, pstream = (take(x) for x in lengths)
            codebook = np.frombuffer(codebook_b, dtype="<f4" if dtype == "F32" else "<f2").copy()
            indices = _decode_indices(table, stream, k, nnz)
            positions = _decode_positions(coding, ptable, pstream, n, nnz)
            layers[name] = _SharedLayer(
                shape, bits, positions, indices, codebook.astype(np.dtype(codebook.dtype.char))
            )
            sizes["codebooks"] += lengths[0]
            sizes["values"] += lengths[1] + lengths[2]
            sizes["positions"] += lengths[3] + lengths[4]
            info.append({"name": name, "coding": coding, "lengths": lengths, "k": k, "nnz": nnz, "numel": n})
        elif kind == "raw" and len(fields) == 5 and fields[3] in _RAW_DTYPES:
            shape, dtype, length = _parse_shape(fields[2]), _DTYPE_BY_NAME[fields[3]], int(fields[4])
            if length != math.prod(shape) * dtype.itemsize:
                raise ValueError(f"{name!r} is {length} bytes, its shape and dtype say otherwise")
            tensors[name] = _tensor_from_bytes(take(length), dtype).reshape(shape).clone()
            sizes["biases"] += length
        else:
            raise ValueError(f"unknown record {' '.join(fields)[:60]!r}")
    if offset != len(payload):
        raise ValueError(f"{len(payload) - offset} bytes after the last section")
    coded = _CodedModel(config, layers, tensors)
    coded.state_dict()  # the names must be exactly the model's
    return _Parsed(coded, sizes, info)


def decode(data: bytes, source: str = "<bytes>") -> _CodedModel:
    """The :class:`_CodedModel` in ``data``; CorruptFileError (naming ``source``) for anything not a whole,
    unaltered file of this format."""
    return _parse(bytes(data), source).coded


def _load_coded(path: str | os.PathLike) -> _CodedModel:
    """Read and check a coded file (see :func:`decode`)."""
    return decode(Path(path).read_bytes(), str(path))


def load_model(path: str | os.PathLike) -> nn.Module:
    """The model of a coded file, rebuilt with :func:`mnist_pruning.models.build_model` from its header."""
    return _load_coded(path).model()


def _decode_header(data: bytes, source: str = "<bytes>") -> list[str]:
    """The header records of a coded file (after its magic and CRC-32 are checked), for reading and tests."""
    data = bytes(data)
    if len(data) < _PREFIX.size + 4 or data[:4] != _MAGIC or not _crc_ok(data):
        raise _bad(source, "wrong magic, CRC-32 or length")
    n = _PREFIX.unpack_from(data)[2]
    return data[_PREFIX.size : _PREFIX.size + n].decode("ascii", errors="replace").split(";")


def size_breakdown(data: bytes) -> dict[str, int]:
    """Bytes of a coded file by what they hold: header (fixed fields, header text and CRC), codebooks, values
    (cluster-index count tables + streams), positions (tables + streams), biases; they sum to ``len(data)``."""
    return dict(_parse(bytes(data), "<bytes>").sections)


def layer_table(data: bytes) -> list[dict]:
    """Per shared layer: name, weights, kept, codebook entries, position coding chosen, bytes of each part."""
    rows = []
    for row in _parse(bytes(data), "<bytes>").layers:
        codebook, table, stream, ptable, pstream = row["lengths"]
        rows.append(
            {
                "layer": row["name"],
                "weights": row["numel"],
                "kept": row["nnz"],
                "codebook entries": row["k"],
                "positions coded as": row["coding"],
                "codebook bytes": codebook,
                "index bytes": table + stream,
                "position bytes": ptable + pstream,
            }
        )
    return rows
