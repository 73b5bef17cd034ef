"""Compare the pruning methods from the two results CSVs: figures, the smallest-model table, key findings.

Usage::

    import matplotlib.pyplot as plt
    from mnist_pruning import compare
    df = compare.load_results("")                # results/{mlp,cnn}_pruning_results.csv (see resolve_results_dir)
    fig = compare.accuracy_vs_sparsity(df, "mlp")
    compare.save_figure(fig, "results", "mlp_accuracy_vs_sparsity")   # PNG + SVG, atomically
    plt.show()
    compare.smallest_within(df)                  # per model and method: smallest model within 0.1 / 0.5 / 1 pp
    print(compare.key_findings_markdown(df))     # the table of the book's introduction

Everything here reads the CSVs only (nothing is trained or measured again), so the comparison notebook and the
book build run in seconds. Figure functions return a ``matplotlib.figure.Figure`` and never call
``show``/``savefig``.

Conventions: a *series* is one line of a figure (the method, plus the schedule when it is not one-shot, e.g.
"global (gradual)"); a *label* names one row's kind ("nm 2:4", "structured"). N:M rows are points, one per
pattern, since each pattern has exactly one sparsity. When a CSV holds the same experiment more than once (a
rerun with a changed configuration appends a new row), the last row wins.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from .files import atomic_write
from .settings import paths, project_root, smoke_mode

with warnings.catch_warnings():
    # sweep imports tqdm.auto, which warns into the notebook when ipywidgets is absent; nothing here uses tqdm.
    warnings.filterwarnings("ignore", message="IProgress not found")
    from .sweep import COLUMNS, read_results, results_csv

__all__ = [
    "RESULTS_ENV",
    "ANCHORS",
    "MODEL_TITLES",
    "Anchor",
    "resolve_results_dir",
    "resolve_figures_dir",
    "display_path",
    "load_results",
    "models",
    "overview",
    "baseline_accuracy",
    "dense_bytes",
    "accuracy_vs_sparsity",
    "bytes_vs_sparsity",
    "latency_vs_sparsity",
    "accuracy_vs_bytes",
    "pareto_front",
    "smallest_within",
    "format_smallest",
    "key_findings",
    "format_findings",
    "key_findings_markdown",
    "save_figure",
]

RESULTS_ENV = "MNIST_PRUNING_RESULTS"  # used when results_dir is "": lets nbval (which cannot pass parameters) aim
MODEL_TITLES = {"mlp": "LeNet-300-100 (mlp)", "cnn": "LeNet-5-Caffe (cnn)"}
METHOD_ORDER = ("l1", "global", "structured", "nm")

NUMERIC = (
    "ratio",
    "sparsity",
    "params_total",
    "params_nonzero",
    "acc_baseline",
    "acc_pruned",
    "acc_finetuned",
    "finetune_epochs",
    "size_dense_bytes",
    "size_compact_bytes",
    "size_nm_bytes",
    "flops_dense",
    "flops_effective",
    "latency_b1_ms",
    "latency_b256_ms",
    "baseline_latency_b1_ms",
    "baseline_latency_b256_ms",
    "finetune_seconds",
    "seed",
    "threads",
)
# One experiment; a later row with the same key replaces an earlier one (see the module docstring).
EXPERIMENT_KEY = ("model", "method", "pattern", "schedule", "ratio")
# Compared accuracies are float fractions read from text; this absorbs rounding without moving a real boundary.
_EPS = 1e-9


@dataclass(frozen=True)
class Anchor:
    """A published result to mark on the accuracy figure."""

    model: str  # mlp | cnn
    source: str  # short citation
    kept: float  # fraction of weights kept
    accuracy: float  # test accuracy, fraction

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept


# Han et al. 2015, "Learning both Weights and Connections for Efficient Neural Networks", Tables 1-3.
ANCHORS = (
    Anchor("mlp", "Han et al. 2015", 0.08, 0.9841),
    Anchor("cnn", "Han et al. 2015", 0.08, 0.9923),
)


# ---------------------------------------------------------------------------------------------------- loading


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
    """Where the notebook saves figures: ``figures_dir``; if "", the folder the CSVs were read from, except in
    smoke mode (``MNIST_PRUNING_SMOKE=1``), where it is ``runs/smoke/results`` like every other smoke output, so
    a test reading the fixture CSVs never writes into ``tests/fixtures`` or ``results/``.

    Relative paths follow :func:`resolve_results_dir`'s rule (current directory if it exists, else project root).
    """
    if not str(figures_dir or ""):
        return paths().results if smoke_mode() else Path(results_dir)
    p = Path(str(figures_dir)).expanduser()
    if not p.is_absolute() and not p.exists():
        p = project_root() / p
    return p


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the project root when inside it (so executed notebooks do not show home folders)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(project_root()))
    except ValueError:
        return str(p)


def load_results(results_dir: str | os.PathLike | None = "", dedupe: bool = True) -> pd.DataFrame:
    """Both results CSVs as one DataFrame with numeric columns typed and ``series`` / ``label`` columns added.

    Each CSV is validated by :func:`mnist_pruning.sweep.read_results` (a CSV with other columns raises).
    A missing CSV is skipped; FileNotFoundError when neither exists. With ``dedupe`` only the last row of each
    experiment (model, method, pattern, schedule, ratio) is kept.
    """
    folder = resolve_results_dir(results_dir)
    rows: list[dict[str, str]] = []
    found = []
    for arch in MODEL_TITLES:
        path = results_csv(folder, arch)
        if path.exists():
            found.append(path)
            rows.extend(read_results(path))
    if not found:
        raise FileNotFoundError(
            f"no results CSV in {str(folder)!r} (expected {results_csv(folder, 'mlp').name} and/or "
            f"{results_csv(folder, 'cnn').name}); run the sweep first or set results_dir / ${RESULTS_ENV}"
        )
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col].replace("", np.nan), errors="coerce").astype(float)
    for col in ("model", "method", "pattern", "schedule", "device", "config_hash", "version", "torch_version"):
        df[col] = df[col].fillna("").astype(str)
    df["schedule"] = df["schedule"].replace("", "oneshot")
    bad = sorted(set(df["model"]) - set(MODEL_TITLES))
    if bad:
        raise ValueError(f"unknown model(s) {bad} in {str(folder)!r}; allowed: {list(MODEL_TITLES)}")
    df["series"] = [_series(m, s) for m, s in zip(df["method"], df["schedule"], strict=True)]
    df["label"] = [
        f"{m} {p}" + ("" if s == "oneshot" else f" ({s})") if m == "nm" and p else _series(m, s)
        for m, p, s in zip(df["method"], df["pattern"], df["schedule"], strict=True)
    ]
    if dedupe:
        df = df.drop_duplicates(subset=list(EXPERIMENT_KEY), keep="last")
    return df.reset_index(drop=True)


def _series(method: str, schedule: str) -> str:
    return method if schedule in ("", "oneshot") else f"{method} ({schedule})"


def models(df: pd.DataFrame) -> list[str]:
    """The model families present, in the project's order (mlp, then cnn)."""
    return [m for m in MODEL_TITLES if (df["model"] == m).any()]


def _series_order(df: pd.DataFrame) -> list[str]:
    """Series in a stable order: methods as in METHOD_ORDER, one-shot before other schedules."""

    def key(series: str) -> tuple[int, str]:
        method = series.split(" ")[0]
        return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), series)

    return sorted(set(df["series"]), key=key)


def overview(df: pd.DataFrame) -> pd.DataFrame:
    """What the CSVs hold, for display: per model and series, the number of experiments, the sparsity range,
    the fine-tuning epochs and the number of distinct configurations (``config_hash``)."""
    out = []
    for (model, series), rows in df.groupby(["model", "series"], sort=False):
        lo, hi = rows["sparsity"].min(), rows["sparsity"].max()
        out.append(
            {
                "model": model,
                "method": series,
                "experiments": len(rows),
                "sparsity": f"{100 * lo:.1f} %" if lo == hi else f"{100 * lo:.1f} - {100 * hi:.1f} %",
                "fine-tuning epochs": ", ".join(f"{v:g}" for v in sorted(set(rows["finetune_epochs"].dropna()))),
                "configurations": rows["config_hash"].nunique(),
            }
        )
    return pd.DataFrame(out).set_index(["model", "method"])


def baseline_accuracy(df: pd.DataFrame, model: str) -> float:
    """The dense baseline's test accuracy for ``model`` (median over rows: they share one baseline per run)."""
    return float(df.loc[df["model"] == model, "acc_baseline"].median())


def dense_bytes(df: pd.DataFrame, model: str) -> float:
    """File bytes of the dense baseline's ordinary ``state_dict`` file.

    Masked (unstructured / N:M) models keep the architecture's shapes, so their dense file is the baseline's:
    the largest ``size_dense_bytes`` of those rows. Structured rows are smaller models; when a CSV holds only
    those, the full architecture's dense file is measured in memory instead (same format, same torch).
    """
    rows = df[(df["model"] == model) & (df["method"] != "structured")]
    if rows["size_dense_bytes"].notna().any():
        return float(rows["size_dense_bytes"].max())
    return float(_architecture_dense_bytes(model))


@functools.cache
def _architecture_dense_bytes(model: str) -> int:
    from .export import dense_bytes as measure
    from .models import build_model

    return measure(build_model(model))


# ---------------------------------------------------------------------------------------------------- figures

_MARKERS = {"l1": "o", "global": "s", "structured": "D", "nm": "^"}
_SPARSITY_TICKS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def _color(series: str, order: Sequence[str]) -> str:
    return f"C{order.index(series) % 10}"


def _sparsity_axis(ax: Axes, values: Iterable[float]) -> None:
    """A logit x-axis for sparsity: 90 %, 99 % and 99.9 % get equal room, which is where pruning gets hard."""
    vals = [v for v in values if np.isfinite(v) and 0 < v < 1]
    lo = min(vals, default=0.3)
    hi = max(vals, default=0.99)
    ax.set_xscale("logit")
    ax.set_xlim(max(1e-3, min(lo, 0.3) * 0.9), 1 - (1 - hi) * 0.6)
    ticks = [t for t in _SPARSITY_TICKS if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{100 * x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("sparsity (% of weights removed, logit scale)")


def _draw_series(
    ax: Axes, sub: pd.DataFrame, order: Sequence[str], x: str, y: str, scale: float = 1.0, suffix: str = ""
) -> None:
    """One line per series (sorted by x); N:M rows as separate points annotated with their pattern."""
    for series in order:
        rows = sub[(sub["series"] == series) & sub[x].notna() & sub[y].notna()].sort_values(x)
        if rows.empty:
            continue
        method = rows["method"].iloc[0]
        color = _color(series, order)
        label = f"{series}{suffix}"
        if method == "nm":
            ax.plot(rows[x], scale * rows[y], ls="none", marker="^", ms=8, color=color, label=label)
            for xv, yv, pattern in zip(rows[x], scale * rows[y], rows["pattern"], strict=True):
                ax.annotate(pattern, (xv, yv), textcoords="offset points", xytext=(5, 4), fontsize=8, color=color)
        else:
            ls = "-" if series == method else "--"
            ax.plot(rows[x], scale * rows[y], ls=ls, marker=_MARKERS.get(method, "o"), color=color, label=label)


def _finish(fig: Figure, axes: Iterable[Axes], title: str) -> Figure:
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def accuracy_vs_sparsity(df: pd.DataFrame, model: str, zoom_pp: float = 2.0) -> Figure:
    """Test accuracy after fine-tuning against measured sparsity, one line per method and one point per N:M
    pattern; the dense baseline as a horizontal line and the published anchors (Han et al. 2015) as stars.

    Two panels: the full range, and the same data zoomed to ``zoom_pp`` percentage points below the baseline,
    where the differences that matter (0.1-1 pp) are visible.
    """
    sub = df[df["model"] == model]
    order = _series_order(sub)
    base = 100 * baseline_accuracy(df, model)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax in axes:
        _draw_series(ax, sub, order, "sparsity", "acc_finetuned", scale=100)
        ax.axhline(base, color="k", ls=":", lw=1.2, label=f"dense baseline ({base:.2f} %)")
        for a in ANCHORS:
            if a.model == model:
                ax.plot(
                    a.sparsity,
                    100 * a.accuracy,
                    ls="none",
                    marker="*",
                    ms=14,
                    color="gold",
                    markeredgecolor="k",
                    label=f"{a.source} ({100 * a.kept:g} % kept)",
                )
        _sparsity_axis(ax, [*sub["sparsity"], *(a.sparsity for a in ANCHORS if a.model == model)])
        ax.set_ylabel("test accuracy after fine-tuning (%)")
    axes[0].set_title("full range")
    anchors = [100 * a.accuracy for a in ANCHORS if a.model == model]
    # Capped at zoom_pp above the baseline: an anchor far above a weak (smoke) baseline must not undo the zoom.
    top = min(max(base, *(100 * sub["acc_finetuned"].dropna()), *anchors), base + zoom_pp)
    axes[1].set_ylim(base - zoom_pp, top + 0.15 * zoom_pp)
    axes[1].set_title(f"zoom: within {zoom_pp:g} pp of the baseline")
    axes[0].legend(fontsize=8, loc="best")
    return _finish(fig, axes, f"{MODEL_TITLES.get(model, model)}: accuracy vs sparsity")


def bytes_vs_sparsity(df: pd.DataFrame, model: str) -> Figure:
    """Bytes of the compact file against sparsity (log y), with the dense file as reference; N:M rows also
    show their N:M-format size (hollow triangles). Structured rows are smaller dense models."""
    sub = df[df["model"] == model]
    order = _series_order(sub)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    _draw_series(ax, sub, order, "sparsity", "size_compact_bytes", suffix=" (compact file)")
    nm = sub[(sub["method"] == "nm") & sub["size_nm_bytes"].notna()]
    if not nm.empty:
        ax.plot(
            nm["sparsity"],
            nm["size_nm_bytes"],
            ls="none",
            marker="^",
            ms=8,
            mfc="none",
            color=_color(nm["series"].iloc[0], order),
            label="nm (N:M format)",
        )
    ax.axhline(dense_bytes(df, model), color="k", ls=":", lw=1.2, label="dense file (zeros stored)")
    ax.set_yscale("log")
    ax.set_ylabel("file size (bytes, log scale)")
    _sparsity_axis(ax, sub["sparsity"])
    ax.legend(fontsize=8)
    return _finish(fig, [ax], f"{MODEL_TITLES.get(model, model)}: file size vs sparsity")


def latency_vs_sparsity(df: pd.DataFrame, model: str) -> Figure:
    """CPU forward latency at batch 1 and batch 256 against sparsity, the dense baseline as reference lines."""
    sub = df[df["model"] == model]
    order = _series_order(sub)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, batch in zip(axes, (1, 256), strict=True):
        col, base_col = f"latency_b{batch}_ms", f"baseline_latency_b{batch}_ms"
        if sub[col].notna().any():
            _draw_series(ax, sub, order, "sparsity", col)
            ax.axhline(sub[base_col].median(), color="k", ls=":", lw=1.2, label="dense baseline")
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "latency not measured", ha="center", va="center", transform=ax.transAxes)
        _sparsity_axis(ax, sub["sparsity"])
        ax.set(ylabel="latency (ms per batch, median)", title=f"batch {batch}")
    return _finish(fig, axes, f"{MODEL_TITLES.get(model, model)}: CPU latency vs sparsity")


def pareto_front(sub: pd.DataFrame, x: str = "size_compact_bytes", y: str = "acc_finetuned") -> pd.DataFrame:
    """Rows not beaten by another row that is both at most as large and at least as accurate (sorted by x)."""
    rows = sub[sub[x].notna() & sub[y].notna()].sort_values([x, y], ascending=[True, False])
    keep, best = [], -math.inf
    for idx, acc in zip(rows.index, rows[y], strict=True):
        if acc > best + _EPS:
            keep.append(idx)
            best = acc
    return rows.loc[keep]


def accuracy_vs_bytes(df: pd.DataFrame, model: str) -> Figure:
    """Accuracy after fine-tuning against compact-file bytes (log x): the trade-off. The grey step line is the
    frontier over all methods; the black cross is the dense baseline and its file."""
    sub = df[df["model"] == model]
    order = _series_order(sub)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    _draw_series(ax, sub, order, "size_compact_bytes", "acc_finetuned", scale=100)
    front = pareto_front(sub)
    ax.step(
        front["size_compact_bytes"],
        100 * front["acc_finetuned"],
        where="post",
        color="grey",
        lw=3,
        alpha=0.35,
        zorder=0,
        label="frontier (all methods)",
    )
    ax.plot(
        dense_bytes(df, model),
        100 * baseline_accuracy(df, model),
        marker="X",
        ms=10,
        color="k",
        ls="none",
        label="dense baseline",
    )
    ax.set_xscale("log")
    ax.set(xlabel="compact file size (bytes, log scale)", ylabel="test accuracy after fine-tuning (%)")
    ax.legend(fontsize=8, loc="lower right")
    return _finish(fig, [ax], f"{MODEL_TITLES.get(model, model)}: accuracy vs file size")


# ----------------------------------------------------------------------------------------------------- tables


def smallest_within(df: pd.DataFrame, tolerances: Sequence[float] = (0.001, 0.005, 0.01)) -> pd.DataFrame:
    """Per model, series and tolerance: the row with the fewest compact-file bytes whose ``acc_finetuned`` is
    at least its own ``acc_baseline`` minus the tolerance (0.001 = 0.1 pp).

    Ties go to fewer non-zero parameters, then higher accuracy. A combination with no qualifying row is kept
    with NaN values, so a table shows "none" instead of silently dropping it. Columns: model, series, label,
    tolerance_pp, ratio, sparsity, acc_finetuned, acc_baseline, drop_pp, size_compact_bytes, params_nonzero,
    x_smaller (dense-file bytes / compact bytes).
    """
    out = []
    for model in models(df):
        sub = df[df["model"] == model]
        dense = dense_bytes(df, model)
        for series in _series_order(sub):
            rows = sub[sub["series"] == series]
            for tol in tolerances:
                ok = rows[rows["acc_finetuned"] >= rows["acc_baseline"] - tol - _EPS]
                record = {"model": model, "series": series, "tolerance_pp": round(100 * tol, 6)}
                if ok.empty:
                    record |= {
                        "label": "",
                        "ratio": np.nan,
                        "sparsity": np.nan,
                        "acc_finetuned": np.nan,
                        "acc_baseline": np.nan,
                        "drop_pp": np.nan,
                        "size_compact_bytes": np.nan,
                        "params_nonzero": np.nan,
                        "x_smaller": np.nan,
                    }
                else:
                    best = ok.sort_values(
                        ["size_compact_bytes", "params_nonzero", "acc_finetuned"], ascending=[True, True, False]
                    ).iloc[0]
                    record |= _summary(best, dense)
                out.append(record)
    columns = [
        "model",
        "series",
        "label",
        "tolerance_pp",
        "ratio",
        "sparsity",
        "acc_finetuned",
        "acc_baseline",
        "drop_pp",
        "size_compact_bytes",
        "params_nonzero",
        "x_smaller",
    ]
    return pd.DataFrame(out, columns=columns)


def _summary(row: pd.Series, dense: float) -> dict:
    return {
        "label": row["label"],
        "ratio": float(row["ratio"]),
        "sparsity": float(row["sparsity"]),
        "acc_finetuned": float(row["acc_finetuned"]),
        "acc_baseline": float(row["acc_baseline"]),
        "drop_pp": 100 * float(row["acc_baseline"] - row["acc_finetuned"]),
        "size_compact_bytes": float(row["size_compact_bytes"]),
        "params_nonzero": float(row["params_nonzero"]),
        "x_smaller": dense / float(row["size_compact_bytes"]),
    }


def _pct(x: float, digits: int = 2) -> str:
    return "none" if pd.isna(x) else f"{100 * x:.{digits}f} %"


def _kb(x: float) -> str:
    return "" if pd.isna(x) else f"{x / 1000:,.1f} kB"


def _times(x: float) -> str:
    return "" if pd.isna(x) else f"{x:.1f}x"


def format_smallest(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`smallest_within` as strings for display (percentages, kB = 1000 bytes, x-smaller factors)."""
    return pd.DataFrame(
        {
            "model": table["model"],
            "method": [label or series for label, series in zip(table["label"], table["series"], strict=True)],
            "within": [f"{t:g} pp" for t in table["tolerance_pp"]],
            "sparsity": [_pct(v, 1) for v in table["sparsity"]],
            "accuracy": [_pct(v) for v in table["acc_finetuned"]],
            "drop (pp)": ["" if pd.isna(v) else f"{v:.2f}" for v in table["drop_pp"]],
            "compact file": [_kb(v) for v in table["size_compact_bytes"]],
            "non-zero params": ["" if pd.isna(v) else f"{v:,.0f}" for v in table["params_nonzero"]],
            "smaller than dense": [_times(v) for v in table["x_smaller"]],
        }
    ).set_index(["model", "method", "within"])


def key_findings(df: pd.DataFrame, tolerance: float = 0.005) -> pd.DataFrame:
    """Per model and series, the most sparse row whose accuracy is within ``tolerance`` (0.005 = 0.5 pp) of its
    baseline: its sparsity, accuracy, compact bytes, how many times smaller than the dense file it is, and its
    batch-256 latency speedup over the dense baseline (``baseline_latency_b256_ms / latency_b256_ms``; expect
    about 1x for masks, more only for structured pruning). Series with no such row get NaN values.
    """
    out = []
    for model in models(df):
        sub = df[df["model"] == model]
        dense = dense_bytes(df, model)
        for series in _series_order(sub):
            rows = sub[sub["series"] == series]
            ok = rows[rows["acc_finetuned"] >= rows["acc_baseline"] - tolerance - _EPS]
            record = {
                "model": model,
                "acc_baseline_model": baseline_accuracy(df, model),
                "tolerance_pp": round(100 * tolerance, 6),
                "series": series,
            }
            if ok.empty:
                record |= {
                    "label": "",
                    "ratio": np.nan,
                    "sparsity": np.nan,
                    "acc_finetuned": np.nan,
                    "size_compact_bytes": np.nan,
                    "x_smaller": np.nan,
                    "speedup_b256": np.nan,
                }
            else:
                best = ok.sort_values(["sparsity", "acc_finetuned"], ascending=[False, False]).iloc[0]
                summary = _summary(best, dense)
                record |= {
                    k: summary[k]
                    for k in ("label", "ratio", "sparsity", "acc_finetuned", "size_compact_bytes", "x_smaller")
                }
                record["speedup_b256"] = float(best["baseline_latency_b256_ms"] / best["latency_b256_ms"])
            out.append(record)
    columns = [
        "model",
        "acc_baseline_model",
        "tolerance_pp",
        "series",
        "label",
        "ratio",
        "sparsity",
        "acc_finetuned",
        "size_compact_bytes",
        "x_smaller",
        "speedup_b256",
    ]
    return pd.DataFrame(out, columns=columns)


def format_findings(findings: pd.DataFrame) -> pd.DataFrame:
    """:func:`key_findings` as strings for display."""
    tol = float(findings["tolerance_pp"].iloc[0]) if len(findings) else 0.5
    return pd.DataFrame(
        {
            "model": [MODEL_TITLES.get(m, m) for m in findings["model"]],
            "method": [
                label or series for label, series in zip(findings["label"], findings["series"], strict=True)
            ],
            f"most sparse within {tol:g} pp": [_pct(v, 1) for v in findings["sparsity"]],
            "accuracy": [_pct(v) for v in findings["acc_finetuned"]],
            "compact file": [_kb(v) for v in findings["size_compact_bytes"]],
            "smaller than dense": [_times(v) for v in findings["x_smaller"]],
            "speedup, batch 256": ["" if pd.isna(v) else f"{v:.2f}x" for v in findings["speedup_b256"]],
        }
    )


def key_findings_markdown(df: pd.DataFrame, tolerance: float = 0.005) -> str:
    """The key findings as Markdown: per model, one sentence (baseline, smallest file within ``tolerance``) and
    a table of :func:`format_findings` rows. The book's introduction includes it; no headings, so it fits
    under any section."""
    findings = key_findings(df, tolerance)
    table = format_findings(findings).drop(columns="model")
    dense = {m: dense_bytes(df, m) for m in models(df)}
    lines = []
    for model in models(df):
        mask = (findings["model"] == model).to_numpy()
        f = findings[mask & findings["sparsity"].notna().to_numpy()]
        base = 100 * baseline_accuracy(df, model)
        lead = f"**{MODEL_TITLES[model]}**: dense baseline {base:.2f} %, dense file {_kb(dense[model])}."
        if f.empty:
            lead += f" No pruned model stays within {100 * tolerance:g} pp of the baseline."
        else:
            best = f.sort_values(["size_compact_bytes", "acc_finetuned"], ascending=[True, False]).iloc[0]
            lead += (
                f" Within {100 * tolerance:g} pp, the smallest file is {best['label']} at "
                f"{100 * best['sparsity']:.1f} % sparsity: {_kb(best['size_compact_bytes'])}, "
                f"{best['x_smaller']:.1f}x smaller."
            )
        rows = table[mask]
        lines += [lead, "", "| " + " | ".join(rows.columns) + " |", "|" + "---|" * len(rows.columns)]
        lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in r) + " |" for r in rows.itertuples(False)]
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- saving


def save_figure(fig: Figure, results_dir: str | os.PathLike, name: str, dpi: int = 150) -> tuple[Path, Path]:
    """Write ``fig`` as ``<results_dir>/<name>.png`` and ``.svg``, each atomically; returns both paths."""
    if not name or Path(name).name != name:
        raise ValueError(f"figure name must be a plain file stem, got {name!r}")
    out = []
    for fmt in ("png", "svg"):
        path = Path(results_dir) / f"{name}.{fmt}"
        # No creation date in the metadata: re-running on the same CSVs gives byte-identical SVGs.
        metadata = {"Date": None} if fmt == "svg" else None
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)
        out.append(path)
    return out[0], out[1]
