"""The entropy coder of the coded files: ``constriction``'s ANS coder (``constriction.stream.stack.AnsCoder``)
with order-0 models built from counts that the file stores.

Usage::

    from mnist_pruning.compress.coder import encode_indices, decode_indices, encode_positions, decode_positions
    table, stream = encode_indices(indices, k)                   # LEB128 counts, ANS words
    indices = decode_indices(table, stream, k, nnz)              # ValueError for anything inconsistent
    table, stream = encode_positions("gap", positions, n)        # or "mask"
    positions = decode_positions("gap", table, stream, n, nnz)

The cluster indices are coded with a ``Categorical`` over their empirical frequencies; the positions either as a
bitmask (``Bernoulli(nnz / n)`` per weight) or as relative index gaps (the gap's bit length coded with a
``Categorical``, its remaining low bits with ``Uniform``). Both sides build every model from the same integer
counts, so both quantise it identically.
"""

from __future__ import annotations

import constriction
import numpy as np

__all__ = [
]

_POSITION_CODINGS = ("mask", "gap")


def _write_uleb(values) -> bytes:
    """Unsigned LEB128 of every number in ``values``, concatenated."""
    out = bytearray()
    for v in values:
        v = int(v)
        while True:
            byte = v & 0x7F
            v >>= 7
            out.append(byte | (0x80 if v else 0))
            if not v:
                break
    return bytes(out)


def _read_uleb(buf: bytes, count: int | None) -> list[int]:
    """Exactly ``count`` (None: any number of) LEB128 numbers filling ``buf``; ValueError otherwise."""
    out, v, shift = [], 0, 0
    for byte in buf:
        v |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            out.append(v)
            v, shift = 0, 0
        elif shift > 63:
            raise ValueError("a count is too long")
    if shift or (count is not None and len(out) != count):
        raise ValueError(f"count table holds {len(out)} complete numbers, expected {count}")
    return out


def _categorical(counts: np.ndarray):
    # Both sides build the model from the same integer counts, so both quantise it identically.
    return constriction.stream.model.Categorical(np.asarray(counts, dtype=np.float64), perfect=False)


def _bernoulli(n: int, nnz: int):
    return constriction.stream.model.Bernoulli(nnz / n, perfect=False)


def _words(coder) -> bytes:
    return coder.get_compressed().astype("<u4").tobytes()


def _coder(data: bytes):
    if len(data) % 4:
        raise ValueError("an ANS stream must be a whole number of 32-bit words")
    return constriction.stream.stack.AnsCoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))


def _encode_indices(indices: np.ndarray, k: int) -> tuple[bytes, bytes]:
    """(count table, ANS stream) of a layer's cluster indices; an empty stream when k <= 1."""
    counts = np.bincount(indices, minlength=k) if k else np.zeros(0, dtype=np.int64)
    if k <= 1:
        return _write_uleb(counts), b""
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(indices.astype(np.int32), _categorical(counts))
    return _write_uleb(counts), _words(coder)


def _decode_indices(table: bytes, stream: bytes, k: int, nnz: int) -> np.ndarray:
    """The ``nnz`` indices below ``k`` of :func:`_encode_indices`; ValueError if they do not fit the counts."""
    counts = np.array(_read_uleb(table, k), dtype=np.int64)
    if counts.sum() != nnz or (k and counts.min() < 1):
        raise ValueError(f"index counts {counts.tolist()[:8]}... do not add up to {nnz} with every entry used")
    if k <= 1:
        if stream:
            raise ValueError("a one-entry codebook has no index stream")
        return np.zeros(nnz, dtype=np.int64)
    coder = _coder(stream)
    indices = coder.decode(_categorical(counts), nnz).astype(np.int64)
    if not coder.is_empty() or not np.array_equal(np.bincount(indices, minlength=k), counts):
        raise ValueError("the index stream does not decode to the recorded counts")
    return indices


def _encode_positions(coding: str, positions: np.ndarray, n: int) -> tuple[bytes, bytes]:
    """(table, ANS stream) of sorted flat positions among ``n``, as a bitmask or as gaps."""
    nnz = len(positions)
    if nnz in (0, n):
        return b"", b""
    coder = constriction.stream.stack.AnsCoder()
    if coding == "mask":
        bits = np.zeros(n, dtype=np.int32)
        bits[positions] = 1
        coder.encode_reverse(bits, _bernoulli(n, nnz))
        return b"", _words(coder)
    gaps = np.diff(positions, prepend=-1)  # >= 1
    buckets = np.floor(np.log2(gaps)).astype(np.int64)  # gap in [2**b, 2**(b+1)): b low bits follow
    low = buckets > 0
    if low.any():  # encoded first, so the decoder (a stack) reads the buckets first
        coder.encode_reverse(
            (gaps[low] - (1 << buckets[low])).astype(np.int32),
            constriction.stream.model.Uniform(),
            (1 << buckets[low]).astype(np.int32),
        )
    counts = np.bincount(buckets)
    if len(counts) > 1:
        coder.encode_reverse(buckets.astype(np.int32), _categorical(counts))
    return _write_uleb([len(counts), *counts]), _words(coder)


def _decode_positions(coding: str, table: bytes, stream: bytes, n: int, nnz: int) -> np.ndarray:
    """The ``nnz`` sorted positions below ``n`` of :func:`_encode_positions`; ValueError for anything else."""
    if nnz in (0, n):
        if table or stream:
            raise ValueError("an empty or full layer has no position sections")
        return np.arange(nnz, dtype=np.int64)
    coder = _coder(stream)
    if coding == "mask":
        if table:
            raise ValueError("a bitmask has no table")
        positions = np.flatnonzero(coder.decode(_bernoulli(n, nnz), n)).astype(np.int64)
    else:
        if not table:
            raise ValueError("gap coding needs a bucket table")
        numbers = _read_uleb(table, None)
        if numbers[0] != len(numbers) - 1 or numbers[0] < 1:
            raise ValueError("the gap bucket table does not say how many buckets it holds")
        nb, counts = numbers[0], np.array(numbers[1:], dtype=np.int64)
        if counts.sum() != nnz:
            raise ValueError(f"gap bucket counts add up to {counts.sum()}, not {nnz}")
        buckets = coder.decode(_categorical(counts), nnz).astype(np.int64) if nb > 1 else np.zeros(nnz, np.int64)
        if np.any(buckets > 23):
            raise ValueError("a gap is too long")
        gaps = np.left_shift(1, buckets)
        low = buckets > 0
        if low.any():
            gaps[low] += coder.decode(constriction.stream.model.Uniform(), (1 << buckets[low]).astype(np.int32))
        positions = np.cumsum(gaps) - 1
    if not coder.is_empty():
        raise ValueError("the position stream holds more than the recorded positions")
    if len(positions) != nnz or (nnz and positions[-1] >= n):
        raise ValueError(f"the positions are not {nnz} increasing indices below {n}")
    return positions
