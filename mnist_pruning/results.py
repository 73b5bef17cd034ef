"""The results CSVs: their schema, the one way rows are appended, experiment keys, and reading them back.

Usage::

    from mnist_pruning.results import COLUMNS, append_row, load_results, read_results, results_csv
    path = results_csv("results", "mlp")          # results/mlp_pruning_results.csv
    append_row(path, row)                         # atomically, unless the same run is already there
    rows = read_results(path)                     # list of {column: text}; other columns -> ValueError
    df = load_results("results")                  # both CSVs as one typed DataFrame (the comparison's input)

One CSV per model family, one row per pruned and fine-tuned model; every number in a row is measured on the saved
model (see ``mnist_pruning.sweep``). Reading needs pandas only, not torch: the comparison notebook and the book
build read results without importing the training code.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path

from .files import CorruptFileError, atomic_write
from .settings import paths, project_root, smoke_mode

__all__ = [
    "COLUMNS",
    "NUMERIC",
    "RESULTS_ENV",
    "POINT_KEY",
    "results_csv",
    "read_results",
    "run_key",
    "append_row",
    "resolve_results_dir",
    "resolve_figures_dir",
    "load_results",
    "COMPRESSION_COLUMNS",
    "compression_csv",
    "compression_key",
    "load_compression_results",
]

# The schema. Sizes in bytes, latency in milliseconds per batch, accuracies as fractions in [0, 1].
COLUMNS = (
    "model",  # mlp | cnn
    "method",  # l1 | global | nm | structured
    "pattern",  # N:M pattern for method=nm, else empty
    "schedule",  # oneshot | gradual | lottery
    "ratio",  # requested fraction of weights (units, for structured) removed
    "sparsity",  # measured: zero fraction of prunable weights (structured: removed fraction of parameters)
    "params_total",  # parameters of the architecture (structured: of the smaller model)
    "params_nonzero",  # non-zero parameters, biases included
    "acc_baseline",  # test accuracy of the dense baseline
    "acc_pruned",  # test accuracy right after pruning (empty for gradual / lottery: no such moment)
    "acc_finetuned",  # test accuracy after fine-tuning
    "finetune_epochs",  # epochs trained after (or, gradual / lottery: while) pruning, all rounds included
    "size_dense_bytes",  # file bytes of the ordinary dense state_dict (zeros stored)
    "size_compact_bytes",  # file bytes of the compact sparse format (mnist_pruning.sparsity.compact)
    "size_nm_bytes",  # bytes of the N:M format (values + in-group positions) for method=nm, else empty
    "flops_dense",  # forward FLOPs per image of the architecture (structured: of the smaller model)
    "flops_effective",  # FLOPs a sparse kernel would do: per layer, dense FLOPs x weight density
    "latency_b1_ms",  # CPU forward latency, batch 1 (median, torch.utils.benchmark)
    "latency_b256_ms",  # CPU forward latency, batch 256
    "baseline_latency_b1_ms",  # the dense baseline, measured in the same run
    "baseline_latency_b256_ms",
    "finetune_seconds",  # wall time of fine-tuning
    "seed",
    "threads",  # torch threads used for training and latency
    "device",  # cpu | cuda
    "config_hash",  # hash of everything that defines the experiment (not timings)
    "version",  # mnist_pruning version that produced the row
    "torch_version",
)
TEXT = ("model", "method", "pattern", "schedule", "device", "config_hash", "version", "torch_version")
NUMERIC = tuple(c for c in COLUMNS if c not in TEXT)
# One point of a figure: a later row with the same values replaces an earlier one when reading for display.
POINT_KEY = ("model", "method", "pattern", "schedule", "ratio")
# results/compression_results.csv (mnist_pruning.compress): one row per (model, sparsity, bits) point of the
# Deep Compression pipeline. Every accuracy is measured on the model decoded from the coded file.
COMPRESSION_COLUMNS = (
    "model",  # mlp | cnn
    "sparsity_target",  # requested fraction of weights removed (gradual global magnitude pruning)
    "sparsity",  # measured on the decoded model: zero fraction of the prunable weights
    "bits",  # bits per cluster index per layer, e.g. conv1=8;conv2=8;fc1=5;fc2=5 (codebook <= 2**bits)
    "codebook_entries",  # shared values actually used per layer, same format (<= 2**bits)
    "position_coding",  # per layer, the position coding written: mask (bitmask) | gap (relative index gaps)
    "acc_baseline",  # test accuracy of the dense baseline
    "acc_pruned",  # test accuracy of the pruned model, loaded back from its compact file
    "acc_shared",  # test accuracy after k-means weight sharing, before centroid fine-tuning (decoded file)
    "acc_test",  # test accuracy after centroid fine-tuning, of the model decoded from the coded file
    "acc_val",  # validation accuracy of the decoded model (empty when the data has no validation split)
    "size_coded_bytes",  # bytes of the coded file (mnist_pruning.compress format)
    "ratio_vs_dense",  # size_dense_bytes / size_coded_bytes
    "bytes_values",  # cluster indices: count tables + ANS streams
    "bytes_positions",  # positions of the kept weights: tables + ANS streams
    "bytes_codebooks",  # the shared values
    "bytes_biases",  # biases, raw (fp16 by default)
    "bytes_header",  # fixed fields, header text and CRC-32
    "limit_bytes",  # information limit of the same content (mnist_pruning.compress.information_limit)
    "size_fixed_bytes",  # computed: weight sharing without entropy coding (ceil(log2 k)-bit indices,
    # Elias-Fano positions, codebooks, biases, header)
    "size_dense_bytes",  # bytes of the ordinary dense fp32 state_dict file (torch.save) of the pruned model
    "size_compact_bytes",  # bytes of the compact sparse file (fp32 values) of the pruned model
    "dense_zstd_bytes",  # zstd (level 19) of the dense file
    "dense_lzma_bytes",  # lzma (preset 9 | extreme) of the dense file
    "compact_zstd_bytes",  # zstd (level 19) of the compact file
    "compact_lzma_bytes",  # lzma (preset 9 | extreme) of the compact file
    "prune_epochs",  # epochs of gradual pruning (from the dense baseline)
    "centroid_epochs",  # epochs of centroid fine-tuning
    "prune_seconds",  # wall time of gradual pruning (0 when the pruned model was reused from runs/)
    "seconds",  # wall time of this point without pruning: k-means, fine-tuning, coding, decoding, evaluation
    "seed",
    "config_hash",  # hash of everything that defines the point (not timings)
    "version",  # mnist_pruning version that produced the row
)
COMPRESSION_TEXT = ("model", "bits", "codebook_entries", "position_coding", "config_hash", "version")
COMPRESSION_KEY = ("model", "sparsity_target", "bits", "seed", "config_hash")  # what makes two rows one run
RESULTS_ENV = "MNIST_PRUNING_RESULTS"  # used when results_dir is "": lets nbval (which cannot pass parameters) aim


def results_csv(results_dir: str | os.PathLike, arch: str) -> Path:
    return Path(results_dir) / f"{arch}_pruning_results.csv"


def compression_csv(results_dir: str | os.PathLike) -> Path:
    return Path(results_dir) / "compression_results.csv"


def compression_key(row: Mapping[str, object]) -> tuple[str, ...]:
    """What makes two compression rows the same run (:data:`COMPRESSION_KEY`)."""
    return tuple(
        f"{float(row[c]):.6g}" if c == "sparsity_target" else str(int(row[c])) if c == "seed" else str(row[c])
        for c in COMPRESSION_KEY
    )


def read_results(path: str | os.PathLike, columns: tuple[str, ...] = COLUMNS) -> list[dict[str, str]]:
    """Rows of a results CSV (empty when absent); a CSV with other columns raises before any work.
    ``columns``: the schema to expect (:data:`COMPRESSION_COLUMNS` for the compression CSV)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        found = tuple(reader.fieldnames or ())
        if found != columns:
            missing = [c for c in columns if c not in found]
            extra = [c for c in found if c not in columns]
            raise ValueError(
                f"{str(path)!r} has unexpected columns (missing: {missing or 'none'}, "
                f"unexpected: {extra or 'none'}); move it aside or point results_dir elsewhere - it is left "
                "untouched"
            )
        rows = list(reader)
    if rows and not path.read_text().endswith("\n"):
        # Every row is written whole, newline included: without it the last row may have lost fields or digits.
        raise CorruptFileError(f"{str(path)!r} is cut short inside its last row; restore it from a copy")
    short = [i + 2 for i, row in enumerate(rows) if None in row.values() or None in row]
    if short:
        raise CorruptFileError(f"{str(path)!r} has rows with a wrong number of fields (lines {short[:5]})")
    return rows


def run_key(row: Mapping[str, object]) -> tuple[str, ...]:
    """What makes two rows the same run: the experiment, its training budget, seed and configuration hash."""
    return (
        str(row["model"]),
        str(row["method"]),
        str(row.get("pattern") or ""),
        str(row["schedule"]),
        f"{float(row['ratio']):.6g}",
        str(int(row["finetune_epochs"])),
        str(int(row["seed"])),
        str(row["config_hash"]),
    )


def append_row(
    path: str | os.PathLike, row: Mapping[str, object], columns: tuple[str, ...] = COLUMNS, key=run_key
) -> bool:
    """Append ``row`` to the CSV at ``path`` unless a row with the same :func:`run_key` is there; return whether
    it was appended. The CSV is rewritten to a temporary file and renamed, so it is always whole. ``columns`` and
    ``key``: another schema and its run key (:data:`COMPRESSION_COLUMNS`, :func:`compression_key`)."""
    rows = read_results(path, columns)
    if key(row) in {key(r) for r in rows}:
        return False
    rows.append({c: row.get(c, "") for c in columns})
    with atomic_write(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    return True


def resolve_results_dir(results_dir: str | os.PathLike | None = "") -> Path:
    """The folder to read the CSVs from: ``results_dir``; if "" or None, ``$MNIST_PRUNING_RESULTS``; if unset,
    the project's ``results/`` (``runs/smoke/results`` with ``MNIST_PRUNING_SMOKE=1``).

    A relative path that does not exist from the current directory is taken relative to the project root,
    because nbval and JupyterLab run notebooks from ``notebooks/`` while papermill runs them from the caller's
    directory.
    """
    chosen = str(results_dir or "") or os.environ.get(RESULTS_ENV, "")
    if not chosen:
        return paths().results
    p = Path(chosen).expanduser()
    if not p.is_absolute() and not p.exists():
        p = project_root() / p
    return p


def resolve_figures_dir(figures_dir: str | os.PathLike | None, results_dir: str | os.PathLike) -> Path:
    """Where chapter 05 saves figures: ``figures_dir``; if "", the folder the CSVs were read from, except in smoke
    mode (``MNIST_PRUNING_SMOKE=1``), where it is ``runs/smoke/results`` like every other smoke output, so a test
    reading the fixture CSVs never writes into ``tests/fixtures`` or ``results/``. Relative paths follow
    :func:`resolve_results_dir`'s rule (current directory if it exists, else the project root)."""
    if not str(figures_dir or ""):
        return paths().results if smoke_mode() else Path(results_dir)
    p = Path(str(figures_dir)).expanduser()
    return p if p.is_absolute() or p.exists() else project_root() / p


def load_results(results_dir: str | os.PathLike | None = "", dedupe: bool = True, models=("mlp", "cnn")):
    """Both results CSVs as one pandas DataFrame, numeric columns typed, ``series`` / ``label`` columns added.

    A *series* is one line of a figure (the method, plus the schedule when not one-shot: "global (gradual)"); a
    *label* names one row's kind ("nm 2:4", "structured"). Each CSV is checked by :func:`read_results`; a
    missing one is skipped, FileNotFoundError when none exists. With ``dedupe`` only the last row of each
    :data:`POINT_KEY` is kept (a rerun with a changed configuration appends a new row).
    """
    import numpy as np
    import pandas as pd

    folder = resolve_results_dir(results_dir)
    found = [results_csv(folder, arch) for arch in models if results_csv(folder, arch).exists()]
    if not found:
        names = " and/or ".join(results_csv(folder, arch).name for arch in models)
        raise FileNotFoundError(
            f"no results CSV in {str(folder)!r} (expected {names}); run the sweep first or set results_dir / "
            f"${RESULTS_ENV}"
        )
    df = pd.DataFrame([row for path in found for row in read_results(path)], columns=list(COLUMNS))
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col].replace("", np.nan), errors="coerce").astype(float)
    for col in TEXT:
        df[col] = df[col].fillna("").astype(str)
    df["schedule"] = df["schedule"].replace("", "oneshot")
    bad = sorted(set(df["model"]) - set(models))
    if bad:
        raise ValueError(f"unknown model(s) {bad} in {str(folder)!r}; allowed: {list(models)}")
    df["series"] = [series_name(m, s) for m, s in zip(df["method"], df["schedule"], strict=True)]
    df["label"] = [
        f"{m} {p}" + ("" if s == "oneshot" else f" ({s})") if m == "nm" and p else series_name(m, s)
        for m, p, s in zip(df["method"], df["pattern"], df["schedule"], strict=True)
    ]
    if dedupe:
        df = df.drop_duplicates(subset=list(POINT_KEY), keep="last")
    return df.reset_index(drop=True)


def load_compression_results(results_dir: str | os.PathLike | None = "", dedupe: bool = True):
    """The compression CSV as a typed pandas DataFrame (empty, with the columns, when there is none); with
    ``dedupe`` the last row of each (model, sparsity_target, bits, seed) is kept."""
    import numpy as np
    import pandas as pd

    path = compression_csv(resolve_results_dir(results_dir))
    df = pd.DataFrame(read_results(path, COMPRESSION_COLUMNS), columns=list(COMPRESSION_COLUMNS))
    for col in COMPRESSION_COLUMNS:
        if col in COMPRESSION_TEXT:
            df[col] = df[col].fillna("").astype(str)
        else:
            df[col] = pd.to_numeric(df[col].replace("", np.nan), errors="coerce").astype(float)
    if dedupe:
        df = df.drop_duplicates(subset=["model", "sparsity_target", "bits", "seed"], keep="last")
    return df.reset_index(drop=True)


def series_name(method: str, schedule: str) -> str:
    """The series a row belongs to: its method, plus its schedule when not one-shot."""
    return method if schedule in ("", "oneshot") else f"{method} ({schedule})"
