"""The results CSVs: their schema, the one way rows are appended, experiment keys, and reading them back.

Usage::

    from mnist_pruning.results import PRUNING, COMPRESSION, append_row, load_results, read_results
    path = PRUNING.csv("results", "mlp")          # results/mlp_pruning_results.csv
    append_row(path, PRUNING.row(**values))       # atomically, unless the same run is already there
    rows = read_results(path)                     # list of {column: text}; other columns -> ValueError
    comp = read_results(COMPRESSION.csv("results"), COMPRESSION)
    df = load_results("results")                  # both CSVs, one row per point: means over seeds, *_std, n_seeds
    seeds = load_results("results", per_seed=True)  # one row per point and seed

Each CSV has one :class:`Schema` object (:data:`PRUNING`, :data:`COMPRESSION`): its columns, its text columns,
the key of a run and of a point, the columns whose seed spread is reported. The pruning results have one CSV per
model family, one row per pruned and fine-tuned model; every number in a row is measured on the saved
model (see ``mnist_pruning.sweep``). Reading needs pandas only, not torch: the comparison notebook and the book
build read results without importing the training code.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from .files import CorruptFileError, _atomic_write
from .settings import _project_root, paths, smoke_mode

__all__ = [
    "Schema",
    "PRUNING",
    "COMPRESSION",
    "read_results",
    "append_row",
    "resolve_results_dir",
    "resolve_figures_dir",
    "load_results",
    "load_compression_results",
]


@dataclass(frozen=True)
class Schema:
    """One results CSV: its columns, which of them are text, what makes two rows one run and one point.

    Example::

        >>> PRUNING.csv("results", "mlp").name
        'mlp_pruning_results.csv'
        >>> PRUNING.check({"model": "mlp"})
        Traceback (most recent call last):
        ...
        ValueError: a row of the pruning results lacks 37 column(s) ...
    """

    name: str  # what the CSV holds, for messages
    filename: str  # the file's name in the results folder; "{model}" is replaced by the model family
    columns: tuple[str, ...]  # every column, in file order
    text: tuple[str, ...]  # columns read as text; every other column is a number
    run_key: tuple[str, ...]  # what makes two rows the same run: a rerun skips a run already in the CSV
    point_key: tuple[str, ...]  # one point of a table or figure: its seeds are averaged (see aggregate)
    spread: tuple[str, ...]  # columns whose seed-to-seed standard deviation is reported as <column>_std
    added: frozenset[str] = frozenset()  # columns added after the first release: older CSVs may lack them

    def __post_init__(self) -> None:
        named = set(self.text) | set(self.run_key) | set(self.point_key) | set(self.spread) | set(self.added)
        unknown = sorted(named - set(self.columns))
        if unknown or len(set(self.columns)) != len(self.columns):
            raise ValueError(f"schema {self.name!r}: columns {unknown} are not among its columns (or one repeats)")

    @property
    def numeric(self) -> tuple[str, ...]:
        """The columns read as numbers."""
        return tuple(c for c in self.columns if c not in self.text)

    def csv(self, results_dir: str | os.PathLike, model: str = "") -> Path:
        """The CSV's path in ``results_dir`` (for ``model`` where the schema has one file per model family)."""
        return Path(results_dir) / self.filename.format(model=model)

    def key(self, row: Mapping[str, object]) -> tuple[str, ...]:
        """The row's :attr:`run_key`, written the same however its numbers were ("0.9", 0.9, "0.900000")."""
        return tuple(
            str(row.get(c) or "") if c in self.text else f"{float(row[c]):.6g}"  # type: ignore[arg-type]
            for c in self.run_key
        )

    def row(self, **values: object) -> dict[str, object]:
        """A row with every column: ``values`` where given, else empty. An unknown name raises (see check)."""
        row: dict[str, object] = dict.fromkeys(self.columns, "")
        row.update(values)
        self.check(row)
        return row

    def check(self, row: Mapping[str, object]) -> None:
        """Raise ValueError unless ``row`` has exactly this schema's columns, naming the missing and unknown ones:
        a misspelt key would otherwise become an empty column and a lost value."""
        missing = [c for c in self.columns if c not in row]
        unknown = [c for c in row if c not in self.columns]
        if missing or unknown:
            raise ValueError(
                f"a row of the {self.name} lacks {len(missing)} column(s) {missing[:8]} and has {len(unknown)} "
                f"unknown one(s) {unknown[:8]}; its columns are those of mnist_pruning.results"
            )

    def earlier(self, found: tuple[str, ...]) -> bool:
        """Whether ``found`` is this schema's columns in order with only :attr:`added` ones left out: a CSV of an
        earlier version. Any other missing column means a damaged header."""
        rest = iter(self.columns)
        in_order = all(any(c == wanted for wanted in rest) for c in found)
        return in_order and set(self.columns) - set(found) <= self.added


# Sizes in bytes, latency in milliseconds per batch, accuracies as fractions in [0, 1].
PRUNING = Schema(
    name="pruning results",
    filename="{model}_pruning_results.csv",
    columns=(
        "model",  # mlp | cnn
        "method",  # l1 | global | nm | structured
        "pattern",  # N:M pattern for method=nm, else empty
        "schedule",  # oneshot | gradual | lottery | ablation | frontier | vd
        "recipe",  # ablation / frontier: the training recipe (mnist_pruning.frontier.RECIPES), else empty
        "ratio",  # requested fraction of weights (units, for structured) removed; 0 for vd (it chooses its own)
        "sparsity",  # measured: zero fraction of prunable weights (structured: removed fraction of parameters)
        "params_total",  # parameters of the architecture (structured: of the smaller model)
        "params_nonzero",  # non-zero parameters, biases included
        "acc_baseline",  # test accuracy of the dense baseline (reported only; never used to choose anything)
        "acc_pruned",  # test accuracy right after pruning (empty for gradual / lottery: no such moment)
        "acc_finetuned",  # test accuracy after fine-tuning (the final epoch's model, as saved)
        "acc_val_baseline",  # the same three on the validation split (5,000 held-out training images): what
        "acc_val_pruned",  # budgets and every other choice are judged on
        "acc_val_finetuned",
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
        # Unstructured and N:M rows (empty for structured and when latency is not measured): the pruned model as
        # sparsity.to_sparse_inference converts it, CSR kernels where they measured faster per layer and batch
        # size, timed in the same run and the same way as latency_b*_ms. Where no layer runs sparse at a batch
        # size the converted model is the dense one, and the row repeats latency_b*_ms.
        "latency_sparse_b1_ms",
        "latency_sparse_b256_ms",
        "sparse_layers_b1",  # layers the converted model runs sparse at batch 1, comma-joined ("fc1,fc2"); "none"
        "sparse_layers_b256",  # ... at batch 256
        "finetune_seconds",  # wall time of fine-tuning
        "seed",
        "precision",  # training arithmetic: bf16 (autocast, fp32 master weights) | fp32
        "threads",  # torch threads used for training and latency
        "device",  # cpu | cuda
        "config_hash",  # hash of everything that defines the experiment (not timings)
        "version",  # mnist_pruning version that produced the row
        "torch_version",
    ),
    text=(
        *("model", "method", "pattern", "schedule", "recipe", "precision", "device", "config_hash", "version"),
        *("torch_version", "sparse_layers_b1", "sparse_layers_b256"),
    ),
    run_key=(
        "model",
        "method",
        "pattern",
        "schedule",
        "recipe",
        "ratio",
        "finetune_epochs",
        "seed",
        "config_hash",
    ),
    point_key=("model", "method", "pattern", "schedule", "recipe", "ratio"),
    spread=(
        *("acc_baseline", "acc_pruned", "acc_finetuned", "acc_val_baseline", "acc_val_pruned"),
        "acc_val_finetuned",
    ),
    added=frozenset(
        {
            *("acc_val_baseline", "acc_val_pruned", "acc_val_finetuned", "precision", "latency_sparse_b1_ms"),
            *("latency_sparse_b256_ms", "sparse_layers_b1", "sparse_layers_b256", "recipe"),
        }
    ),
)

# One row per (model, sparsity, bits, seed) point of the Deep Compression pipeline (mnist_pruning.compress).
# Every accuracy is measured on the model decoded from the coded file.
COMPRESSION = Schema(
    name="compression results",
    filename="compression_results.csv",
    columns=(
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
    ),
    text=("model", "bits", "codebook_entries", "position_coding", "config_hash", "version"),
    run_key=("model", "sparsity_target", "bits", "seed", "config_hash"),
    # a different pruning or centroid budget is another point
    point_key=("model", "sparsity_target", "bits", "prune_epochs", "centroid_epochs"),
    spread=("acc_baseline", "acc_pruned", "acc_shared", "acc_test", "acc_val", "size_coded_bytes"),
)
# used when results_dir is "": lets nbval (which cannot pass parameters) aim
_RESULTS_ENV = "MNIST_PRUNING_RESULTS"


def read_results(path: str | os.PathLike, schema: Schema = PRUNING) -> list[dict[str, str]]:
    """Rows of a results CSV of ``schema`` (empty when absent); a CSV with other columns raises before any work.

    A CSV written by an earlier version, whose columns are the schema's in the same order with some of its
    :attr:`~Schema.added` ones missing, is read with those empty; the next :func:`append_row` rewrites it whole.
    """
    path = Path(path)
    if not path.exists():
        return []
    columns = schema.columns
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        found = tuple(reader.fieldnames or ())
        if found != columns and not schema.earlier(found):
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
    if found != columns:
        rows = [{c: row.get(c, "") for c in columns} for row in rows]
    return rows


_LOCK_TIMEOUT_S = 120.0  # how long append_row waits for another writer of the same CSV


def append_row(
    path: str | os.PathLike, row: Mapping[str, object], schema: Schema = PRUNING, timeout: float = _LOCK_TIMEOUT_S
) -> bool:
    """Append ``row`` to the CSV at ``path`` unless a row with the same run key (:meth:`Schema.key`) is there;
    return whether it was appended. A row without exactly the schema's columns raises before anything is read
    (:meth:`Schema.check`). The CSV is rewritten to a temporary file and renamed, so it is always whole.

    The read-modify-write holds an exclusive lock on ``<csv>.lock`` beside the CSV (:mod:`filelock`; released
    by the OS if the process dies), so writers in other processes - two sweeps, a sweep and a notebook, two
    papermill runs - wait for each other instead of each renaming its own copy over the other's rows. A
    TimeoutError names the lock file when it stays held for ``timeout`` seconds."""
    schema.check(row)
    with _locked(path, timeout):
        return _append_row_unlocked(path, row, schema)


@contextlib.contextmanager
def _locked(path: str | os.PathLike, timeout: float):
    """Hold ``<path>.lock`` (see :func:`append_row`); a TimeoutError names it when it stays held."""
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    held = FileLock(lock, timeout=timeout)
    try:
        held.acquire()
    except Timeout as e:
        raise TimeoutError(
            f"could not lock {str(lock)!r} within {timeout:g} s: another process (a sweep or a notebook) is "
            f"writing {str(path)!r}; wait for it and run again"
        ) from e
    try:
        yield
    finally:
        held.release()


def _update_rows(
    path: str | os.PathLike,
    updates: Mapping[tuple[str, ...], Mapping[str, object]],
    schema: Schema = PRUNING,
    timeout: float = _LOCK_TIMEOUT_S,
) -> int:
    """Set columns of rows already in the CSV: ``updates`` maps a run key (:meth:`Schema.key`) to the values of
    that row to set (a later measuring stage: the rows' latencies). Returns how many rows changed. Unknown column
    names raise before anything is read; keys not in the CSV are left alone. Locked and atomic like
    :func:`append_row`."""
    for values in updates.values():
        unknown = [c for c in values if c not in schema.columns]
        if unknown:
            raise ValueError(f"unknown column(s) {unknown} of the {schema.name}")
    with _locked(path, timeout):
        rows = read_results(path, schema)
        changed = 0
        for row in rows:
            values = updates.get(schema.key(row))
            if values:
                row.update({c: v for c, v in values.items()})
                changed += 1
        if changed:
            _write(path, rows, schema)
    return changed


def _write(path: str | os.PathLike, rows: list[Mapping[str, object]], schema: Schema) -> None:
    with _atomic_write(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=schema.columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)


def _append_row_unlocked(path: str | os.PathLike, row: Mapping[str, object], schema: Schema = PRUNING) -> bool:
    """:func:`append_row`'s read-modify-write, without the lock (other writers can lose rows)."""
    rows = read_results(path, schema)
    if schema.key(row) in {schema.key(r) for r in rows}:
        return False
    rows.append(dict(row))
    _write(path, rows, schema)
    return True


def resolve_results_dir(results_dir: str | os.PathLike | None = "") -> Path:
    """The folder to read the CSVs from: ``results_dir``; if "" or None, ``$MNIST_PRUNING_RESULTS``; if unset,
    the project's ``results/`` (``runs/smoke/results`` with ``MNIST_PRUNING_SMOKE=1``).

    A relative path that does not exist from the current directory is taken relative to the project root,
    because nbval and JupyterLab run notebooks from ``notebooks/`` while papermill runs them from the caller's
    directory.
    """
    chosen = str(results_dir or "") or os.environ.get(_RESULTS_ENV, "")
    if not chosen:
        return paths().results
    p = Path(chosen).expanduser()
    if not p.is_absolute() and not p.exists():
        p = _project_root() / p
    return p


def resolve_figures_dir(figures_dir: str | os.PathLike | None, results_dir: str | os.PathLike) -> Path:
    """Where chapter 05 saves figures: ``figures_dir``; if "", the folder the CSVs were read from, except in smoke
    mode (``MNIST_PRUNING_SMOKE=1``), where it is ``runs/smoke/results`` like every other smoke output, so a test
    reading the fixture CSVs never writes into ``tests/fixtures`` or ``results/``. Relative paths follow
    :func:`resolve_results_dir`'s rule (current directory if it exists, else the project root)."""
    if not str(figures_dir or ""):
        return paths().results if smoke_mode() else Path(results_dir)
    p = Path(str(figures_dir)).expanduser()
    return p if p.is_absolute() or p.exists() else _project_root() / p


def load_results(
    results_dir: str | os.PathLike | None = "",
    dedupe: bool = True,
    models=("mlp", "cnn"),
    per_seed: bool = False,
):
    """Both results CSVs as one pandas DataFrame, numeric columns typed, ``series`` / ``label`` columns added.

    A *series* is one line of a figure (the method, plus the schedule when not one-shot: "global (gradual)"); a
    *label* names one row's kind ("nm 2:4", "structured"). Each CSV is checked by :func:`read_results`; a
    missing one is skipped, FileNotFoundError when none exists.

    With ``dedupe`` each point (``PRUNING.point_key``) keeps one training budget (``finetune_epochs``): the run
    with the most seeds, the later one on a tie (an extra budget run with one seed does not displace the 3-seed
    grid);
    within it, the last row of each seed (a rerun with changed settings replaces that seed's row). Then, unless
    ``per_seed``, the seeds are averaged by :func:`_aggregate`: one row per point. ``dedupe=False`` returns every
    row as stored.
    """
    folder = resolve_results_dir(results_dir)
    found = [PRUNING.csv(folder, arch) for arch in models if PRUNING.csv(folder, arch).exists()]
    if not found:
        names = " and/or ".join(PRUNING.csv(folder, arch).name for arch in models)
        raise FileNotFoundError(
            f"no results CSV in {str(folder)!r} (expected {names}); run the sweep first or set results_dir / "
            f"${_RESULTS_ENV}"
        )
    df = _typed(pd.DataFrame([row for path in found for row in read_results(path)], columns=list(PRUNING.columns)))
    df["schedule"] = df["schedule"].replace("", "oneshot")
    bad = sorted(set(df["model"]) - set(models))
    if bad:
        raise ValueError(f"unknown model(s) {bad} in {str(folder)!r}; allowed: {list(models)}")
    df["series"] = [_series_name(m, s) for m, s in zip(df["method"], df["schedule"], strict=True)]
    df["label"] = [
        (f"{m} {p}" + ("" if s == "oneshot" else f" ({s})") if m == "nm" and p else _series_name(m, s))
        + (f" {r}" if r else "")
        for m, p, s, r in zip(df["method"], df["pattern"], df["schedule"], df["recipe"], strict=True)
    ]
    if not dedupe:
        return df.reset_index(drop=True)
    df = _one_configuration_per_point(df)
    return df.reset_index(drop=True) if per_seed else _aggregate(df)


def _one_configuration_per_point(df):
    """The rows :func:`load_results` keeps with ``dedupe`` (see there), in file order.

    A configuration is told apart by its training budget (``finetune_epochs``), not by ``config_hash``: the hash
    covers the seed too (it names one run), so it differs between the seeds of one configuration."""
    df = df.assign(_order=range(len(df)))
    run = list(PRUNING.point_key) + ["finetune_epochs"]
    latest = df.drop_duplicates(subset=run + ["seed"], keep="last")
    runs = latest.groupby(run, dropna=False, sort=False).agg(_seeds=("seed", "nunique"), _last=("_order", "max"))
    runs = runs.reset_index().sort_values(["_seeds", "_last"])
    runs = runs.drop_duplicates(list(PRUNING.point_key), keep="last")
    kept = latest.merge(runs[run], on=run, how="inner").sort_values("_order")
    return kept.drop(columns="_order")


def _aggregate(df, schema: Schema = PRUNING):
    """One row per point (``schema.point_key``) of per-seed rows: numeric columns are the mean over seeds, the
    others the first row's, ``n_seeds`` how many seeds, ``seeds`` which (e.g. "0 1 2"), and ``<column>_std`` the
    sample standard deviation (n - 1 in the denominator; NaN for a single seed) of each ``schema.spread`` column.

    Averaging first and comparing afterwards is the rule of the book: a method is judged on its mean, and a
    difference smaller than the seed-to-seed spread is no measurable difference.
    """
    keys, numeric, spread = list(schema.point_key), schema.numeric, list(schema.spread)
    stds = [f"{c}_std" for c in spread]
    if df.empty:
        empty = {"n_seeds": pd.Series(dtype=int), "seeds": pd.Series(dtype=str)}
        empty.update({c: pd.Series(dtype=float) for c in stds})
        return df.drop(columns="seed").assign(**empty).reset_index(drop=True)
    groups = df.groupby(keys, sort=False, dropna=False)
    text = [c for c in df.columns if c not in numeric and c not in keys]
    out = groups[[c for c in numeric if c != "seed" and c not in keys]].mean()
    out = out.join(groups[text].first())
    out = out.join(groups[spread].std(ddof=1).add_suffix("_std"))
    out["n_seeds"] = groups["seed"].nunique()
    out["seeds"] = groups["seed"].agg(lambda s: " ".join(f"{v:g}" for v in sorted(set(s))))
    out = out.reset_index()
    columns = [c for c in df.columns if c != "seed"] + ["n_seeds", "seeds"] + stds
    return out[columns]


def load_compression_results(
    results_dir: str | os.PathLike | None = "", dedupe: bool = True, per_seed: bool = False
):
    """The compression CSV as a typed pandas DataFrame (empty, with the columns, when there is none).

    With ``dedupe`` the last row of each (model, sparsity_target, bits, seed) is kept, then, unless
    ``per_seed``, the seeds of each point are averaged by :func:`_aggregate` (means, ``n_seeds``, ``seeds`` and
    ``<column>_std`` of the spread columns). ``dedupe=False`` returns every row as stored."""
    path = COMPRESSION.csv(resolve_results_dir(results_dir))
    df = _typed(pd.DataFrame(read_results(path, COMPRESSION), columns=list(COMPRESSION.columns)), COMPRESSION)
    if not dedupe:
        return df.reset_index(drop=True)
    df = df.drop_duplicates(subset=["model", "sparsity_target", "bits", "seed"], keep="last")
    if per_seed:
        return df.reset_index(drop=True)
    return _aggregate(df, COMPRESSION)


def _typed(df, schema: Schema = PRUNING):
    """``df`` with the schema's numeric columns as floats (empty cells NaN) and its text columns as strings."""
    for col in schema.numeric:
        df[col] = pd.to_numeric(df[col].replace("", np.nan), errors="coerce").astype(float)
    for col in schema.text:
        df[col] = df[col].fillna("").astype(str)
    return df


def _series_name(method: str, schedule: str) -> str:
    """The series a row belongs to: its method, plus its schedule when not one-shot."""
    return method if schedule in ("", "oneshot") else f"{method} ({schedule})"
