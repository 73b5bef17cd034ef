"""The information limit of a coded file: what an ideal order-0 coder needs for the same content.

Usage::

    from mnist_pruning.compress.limits import _information_limit, empirical_entropy_bits
    _information_limit(coded)["total"]            # bytes; also "values", "positions", "codebooks", "biases"
    empirical_entropy_bits(np.array([0, 0, 1]))  # 2.75...: sum -c log2(c / N) over the symbols' counts

Per layer: the empirical entropy of its cluster indices, ``log2 C(n, nnz)`` bits for the positions, the
codebook's raw bits; plus the raw bits of the biases. The header and the count tables are not in it.
"""

from __future__ import annotations

import numpy as np

from ..sparsity._binary import _log2_binomial
from .coded import _CodedModel

__all__ = []


def _empirical_entropy_bits(symbols: np.ndarray) -> float:
    """``sum_s -c_s log2(c_s / N)``: the order-0 information content of a symbol sequence, in bits."""
    counts = np.bincount(np.asarray(symbols, dtype=np.int64))
    counts = counts[counts > 0]
    total = counts.sum()
    return float(-(counts * np.log2(counts / total)).sum()) if total else 0.0


def _information_limit(coded: _CodedModel) -> dict[str, float]:
    """Bytes an ideal order-0 coder needs for the same content: index entropy (values), ``log2 C(n, nnz)``
    (positions), raw codebooks and biases; no header, no count tables. See the module docstring."""
    values = positions = codebooks = 0.0
    for layer in coded.layers.values():
        values += _empirical_entropy_bits(layer.indices)
        positions += _log2_binomial(layer.numel, layer.nnz)
        codebooks += 8 * layer.codebook.nbytes
    biases = sum(8 * t.numel() * t.element_size() for t in coded.tensors.values())
    out = {"values": values / 8, "positions": positions / 8, "codebooks": codebooks / 8, "biases": biases / 8}
    out["total"] = sum(out.values())
    return out
