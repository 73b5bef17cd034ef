"""Chapter 07's tables from compression rows: the steps of one point, and the goals against the grid.

Usage::

    steps_table(result.row)          # bytes, x smaller than dense, test error % of every step of one point
    goals_table(load_compression_results())   # per goal of references._COMPRESSION_GOALS: reached, smallest file
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from ..references import _COMPRESSION_GOALS

__all__ = ["steps_table", "goals_table"]


def steps_table(row: Mapping[str, object]):
    """The Deep Compression story of one row, step by step: file bytes, ratio to the dense file and test
    accuracy of each stage (accuracies of decoded files), then what zstd and lzma make of the usual files. The
    information limit is a size with no model: its test error reads "—", never NaN."""
    dense = float(row["size_dense_bytes"])
    steps = [
        ("dense baseline (fp32 state_dict file)", dense, row["acc_baseline"]),
        ("pruned (gradual), compact file: fp32 values + positions", row["size_compact_bytes"], row["acc_pruned"]),
        ("+ weight sharing (k-means), fixed-width indices*", row["size_fixed_bytes"], row["acc_shared"]),
        ("+ centroid fine-tuning, fixed-width indices*", row["size_fixed_bytes"], row["acc_test"]),
        ("+ entropy coding (ANS): the coded file", row["size_coded_bytes"], row["acc_test"]),
        ("information limit of the coded content", row["limit_bytes"], None),
        ("zstd of the dense file", row["dense_zstd_bytes"], row["acc_pruned"]),
        ("lzma of the dense file", row["dense_lzma_bytes"], row["acc_pruned"]),
        ("zstd of the compact file", row["compact_zstd_bytes"], row["acc_pruned"]),
        ("lzma of the compact file", row["compact_lzma_bytes"], row["acc_pruned"]),
    ]
    table = pd.DataFrame(
        [
            {
                "bytes": float(b),
                "x smaller than dense": dense / float(b),
                "test error %": 100 * (1 - float(a)) if a not in (None, "") else "—",  # a size, not a model
            }
            for _, b, a in steps
        ],
        index=[name for name, _, _ in steps],
    )
    return table


def goals_table(comp):
    """Chapter 07's goals (:data:`mnist_pruning.references._COMPRESSION_GOALS`) against the compression rows: per
    goal, the smallest coded file within the error bound, and the lowest error within the byte bound. Given the
    seed means of :func:`~mnist_pruning.results.load_compression_results`, goals are judged on the means."""
    out = []
    for arch, goals in _COMPRESSION_GOALS.items():
        rows = comp[comp["model"] == arch] if len(comp) else comp
        base = float(rows["acc_baseline"].median()) if len(rows) else math.nan
        for max_bytes, max_error in goals:
            # "or, if the dense baseline is above the reference's error, at no loss against it"
            bound = (
                max(max_error, 1 - base) if arch == "cnn" and max_bytes == 44_000 and base == base else max_error
            )
            err = 1 - rows["acc_test"] if len(rows) else pd.Series(dtype=float)
            within_error = rows[err <= bound + 1e-12] if len(rows) else rows
            within_bytes = rows[rows["size_coded_bytes"] <= max_bytes] if len(rows) else rows
            smallest = within_error.nsmallest(1, "size_coded_bytes") if len(within_error) else None
            best = within_bytes.loc[[(1 - within_bytes["acc_test"]).idxmin()]] if len(within_bytes) else None
            out.append(
                {
                    "model": arch,
                    "goal": f"<= {max_bytes / 1000:g} kB at <= {100 * bound:.2f} % error",
                    "reached": bool(smallest is not None and smallest["size_coded_bytes"].iloc[0] <= max_bytes),
                    "smallest file within the error (bytes)": None
                    if smallest is None
                    else int(smallest["size_coded_bytes"].iloc[0]),
                    "its sparsity / bits": None
                    if smallest is None
                    else f"{smallest['sparsity_target'].iloc[0]:g} / {smallest['bits'].iloc[0]}",
                    "lowest error within the bytes (%)": None
                    if best is None
                    else round(100 * (1 - float(best["acc_test"].iloc[0])), 2),
                    "seeds": None
                    if smallest is None or "n_seeds" not in smallest
                    else int(smallest["n_seeds"].iloc[0]),
                }
            )
    return pd.DataFrame(out)
