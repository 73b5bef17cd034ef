"""Compare the pruning methods from the results CSVs: the tables of chapter 05 and of the book's introduction.

Usage::

    from mnist_pruning import compare, plots
    from mnist_pruning.results import load_results
    df = compare.load_compared("")              # results/{mlp,cnn}_pruning_results.csv: seed means + speed-ups
    compare.overview(df)                        # what the CSVs hold
    compare.format_smallest(compare.smallest_within(df))   # per model and method: smallest within 0.1 / 0.5 / 1 pp
    print(compare.key_findings_markdown(df))    # the table of the book's introduction
    fig = plots.accuracy_vs_sparsity(df, "mlp") # the figures are in mnist_pruning.plots

Every table reads :func:`~mnist_pruning.results.load_results`' default frame: one row per point with the mean
over seeds, ``<column>_std`` and ``n_seeds`` (:func:`~mnist_pruning.results._aggregate`), so every comparison is
made on means. A difference smaller than :data:`_NOISE_SIGMAS` standard deviations of the dense baseline over
seeds (:func:`_noise_floor`) is reported as no measurable difference. Speed-ups follow the same rule
(:func:`_speedup_text`): each seed's ratio against the baseline timed in its own run, averaged over seeds, and a
mean within :data:`_NOISE_SIGMAS` of its seed-to-seed standard deviations of 1.00x is no measurable difference
(:func:`load_compared` adds ``speedup_b1`` / ``speedup_b256`` and their ``_std``).

Everything here reads the CSVs only (nothing is trained or measured again), so the comparison notebook and the
book build run in seconds. Tables come as DataFrames of numbers (``smallest_within``, ``key_findings``) and as
display versions of strings (``format_*``): integers with thousands separators, percentages with two decimals.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import pandas as pd

from .references import _MODEL_TITLES
from .results import PRUNING, _aggregate, load_results

__all__ = [
    "load_compared",
    "models",
    "overview",
    "noise_table",
    "smallest_within",
    "format_smallest",
    "key_findings_markdown",
]

_METHOD_ORDER = ("l1", "global", "structured", "nm")
# Compared accuracies are float fractions read from text; this absorbs rounding without moving a real boundary.
_EPS = 1e-9
_NOISE_SIGMAS = 2.0  # differences below this many baseline standard deviations are "no measurable difference"
_SPEEDUPS = ("speedup_b1", "speedup_b256")  # per seed: baseline latency / the faster of the row's kernels
_SPEEDUP_RULE = (
    f"Speed-ups are mean ± std over seeds of each seed's ratio to the dense baseline timed in the same run; "
    f"one within {_NOISE_SIGMAS:g} std of 1.00x is no measurable difference."
)


def models(df: pd.DataFrame) -> list[str]:
    """The model families present, in the project's order (mlp, then cnn)."""
    return [m for m in _MODEL_TITLES if (df["model"] == m).any()]


def _series_order(df: pd.DataFrame) -> list[str]:
    """Series in a stable order: methods as in METHOD_ORDER, one-shot before other schedules."""

    def key(series: str) -> tuple[int, str]:
        method = series.split(" ")[0]
        return (_METHOD_ORDER.index(method) if method in _METHOD_ORDER else len(_METHOD_ORDER), series)

    return sorted(set(df["series"]), key=key)


def _seed_speedups(seeds: pd.DataFrame) -> pd.DataFrame:
    """Per-seed rows (``load_results(per_seed=True)``) with :data:`_SPEEDUPS` added: at batch 1 and 256, the
    baseline's latency over the faster of the row's kernels (dense ``latency_b*_ms``, or the sparse
    ``latency_sparse_b*_ms`` where measured: masks pay only through sparse kernels); NaN where not measured.

    Example::

        >>> seed_speedups(load_results("results", per_seed=True))["speedup_b256"]  # doctest: +SKIP
    """
    return seeds.assign(**{f"speedup_b{b}": _speedup(seeds, b) for b in (1, 256)})


def _speedup(df: pd.DataFrame, batch: int) -> pd.Series:
    fastest = df[[f"latency_b{batch}_ms", f"latency_sparse_b{batch}_ms"]].min(axis=1)  # NaN only when both are
    return df[f"baseline_latency_b{batch}_ms"] / fastest


# The pruning rows with each seed's speed-ups: averaged per point like the accuracies, their spread reported.
_COMPARED = dataclasses.replace(
    PRUNING, name="compared rows", columns=PRUNING.columns + _SPEEDUPS, spread=PRUNING.spread + _SPEEDUPS
)


def load_compared(results_dir="", models=("mlp", "cnn")) -> pd.DataFrame:
    """:func:`~mnist_pruning.results.load_results`' seed means, plus each point's speed-ups (:data:`_SPEEDUPS`)
    as the mean of the per-seed ratios and their seed-to-seed standard deviation (``speedup_b256_std``).

    Ratios are taken per seed before averaging because each seed timed its own baseline in the same run: the
    spread of those ratios is the noise band of the speed-up.

    Example::

        >>> df = load_compared("results")  # doctest: +SKIP
        >>> speedup_text(df["speedup_b256"][0], df["speedup_b256_std"][0])  # doctest: +SKIP
        '1.02x ± 0.05 (no measurable difference)'
    """
    seeds = _seed_speedups(load_results(results_dir, models=models, per_seed=True))
    return _aggregate(seeds, _COMPARED)


def _speedup_text(mean: float, std: float) -> str:
    """A speed-up with its band ("1.02x ± 0.05"), marked "no measurable difference" when 1.00x is within
    :data:`_NOISE_SIGMAS` standard deviations (the accuracy rule of :func:`_difference_text`); "" when not
    measured.

    Example::

        >>> speedup_text(1.02, 0.05), speedup_text(2.5, 0.1), speedup_text(1.3, float("nan"))
        ('1.02x ± 0.05 (no measurable difference)', '2.50x ± 0.10', '1.30x')
    """
    if pd.isna(mean):
        return ""
    if pd.isna(std):
        return f"{mean:.2f}x"
    text = f"{mean:.2f}x ± {std:.2f}"
    return text + " (no measurable difference)" if abs(mean - 1) < _NOISE_SIGMAS * std else text


def _speedup_columns(df: pd.DataFrame, batch: int) -> tuple[pd.Series, pd.Series]:
    """(mean, std) of the batch-``batch`` speed-up: :func:`load_compared`'s columns where ``df`` has them, else
    the ratio of the seed means with no band (NaN std)."""
    col = f"speedup_b{batch}"
    if col in df:
        return df[col], df[f"{col}_std"] if f"{col}_std" in df else pd.Series(math.nan, index=df.index)
    return _speedup(df, batch), pd.Series(math.nan, index=df.index)


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


def _baseline_accuracy(df: pd.DataFrame, model: str) -> float:
    """The dense baseline's test accuracy for ``model`` (median over rows: they share one baseline per seed, so
    on aggregated rows this is the mean over seeds)."""
    return float(df.loc[df["model"] == model, "acc_baseline"].median())


def _baseline_spread(df: pd.DataFrame, model: str) -> tuple[float, int]:
    """(standard deviation, number of seeds) of ``model``'s dense baseline test accuracy over seeds, from the
    aggregated rows (NaN and 1 with a single seed)."""
    rows = df[df["model"] == model]
    if "acc_baseline_std" not in rows or rows.empty:
        return math.nan, 1
    return float(rows["acc_baseline_std"].median()), int(rows["n_seeds"].max())


def _noise_floor(df: pd.DataFrame, model: str) -> float:
    """:data:`_NOISE_SIGMAS` times the baseline's seed-to-seed standard deviation (a fraction; NaN for one seed):
    an accuracy difference below it is no measurable difference."""
    return _NOISE_SIGMAS * _baseline_spread(df, model)[0]


def noise_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per model, for display: the dense baseline's test (and validation) accuracy as mean ± std over seeds,
    the number of seeds, and the noise floor below which a difference is no measurable difference."""
    out = []
    for model in models(df):
        rows = df[df["model"] == model]
        std, n = _baseline_spread(df, model)
        val_std = float(rows["acc_val_baseline_std"].median()) if "acc_val_baseline_std" in rows else math.nan
        floor = _noise_floor(df, model)
        out.append(
            {
                "model": _MODEL_TITLES.get(model, model),
                "baseline test accuracy": _pct_pm(_baseline_accuracy(df, model), std),
                "baseline validation accuracy": _pct_pm(float(rows["acc_val_baseline"].median()), val_std),
                "seeds": n,
                f"noise floor ({_NOISE_SIGMAS:g} std)": "n/a (one seed)"
                if pd.isna(floor)
                else f"{100 * floor:.2f} pp",
            }
        )
    return pd.DataFrame(out).set_index("model")


def _difference_text(difference: float, floor: float) -> str:
    """A signed difference in percentage points, marked when it is within the noise floor (both fractions)."""
    if pd.isna(difference):
        return ""
    text = f"{100 * difference:+.2f} pp"
    return text + " (no measurable difference)" if not pd.isna(floor) and abs(difference) < floor else text


def _dense_bytes(df: pd.DataFrame, model: str) -> float:
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
    from .models import build_model
    from .sparsity.compact import _dense_bytes as measure

    return measure(build_model(model))


def _pareto_front(sub: pd.DataFrame, x: str = "size_compact_bytes", y: str = "acc_finetuned") -> pd.DataFrame:
    """Rows not beaten by another row that is both at most as large and at least as accurate (sorted by x)."""
    rows = sub[sub[x].notna() & sub[y].notna()].sort_values([x, y], ascending=[True, False])
    keep, best = [], -math.inf
    for idx, acc in zip(rows.index, rows[y], strict=True):
        if acc > best + _EPS:
            keep.append(idx)
            best = acc
    return rows.loc[keep]


# ----------------------------------------------------------------------------------------------------- tables


def _within(df: pd.DataFrame, tolerance: float):
    """Per model and series (in display order): the dense file's bytes and the rows whose ``acc_finetuned`` is at
    least their own ``acc_baseline`` minus ``tolerance``."""
    for model in models(df):
        sub = df[df["model"] == model]
        dense = _dense_bytes(df, model)
        for series in _series_order(sub):
            rows = sub[sub["series"] == series]
            yield model, series, dense, rows[rows["acc_finetuned"] >= rows["acc_baseline"] - tolerance - _EPS]


def smallest_within(df: pd.DataFrame, tolerances: Sequence[float] = (0.001, 0.005, 0.01)) -> pd.DataFrame:
    """Per model, series and tolerance: the row with the fewest compact-file bytes whose ``acc_finetuned`` is
    at least its own ``acc_baseline`` minus the tolerance (0.001 = 0.1 pp).

    Ties go to fewer non-zero parameters, then higher accuracy. A combination with no qualifying row is kept
    with NaN values, so a table shows "none" instead of silently dropping it. Columns: model, series, label,
    tolerance_pp, ratio, sparsity, acc_finetuned, acc_baseline, drop_pp, size_compact_bytes, params_nonzero,
    x_smaller (dense-file bytes / compact bytes).
    """
    grouped: dict[tuple[str, str], list[dict]] = {}  # (model, series) in display order, then each tolerance
    for tol in tolerances:
        for model, series, dense, ok in _within(df, tol):
            record = {"model": model, "series": series, "tolerance_pp": round(100 * tol, 6), "label": ""}
            if not ok.empty:
                best = ok.sort_values(
                    ["size_compact_bytes", "params_nonzero", "acc_finetuned"], ascending=[True, True, False]
                ).iloc[0]
                record |= _summary(best, dense)
            grouped.setdefault((model, series), []).append(record)
    out = [record for records in grouped.values() for record in records]
    columns = [
        "model",
        "series",
        "label",
        "tolerance_pp",
        "ratio",
        "sparsity",
        "acc_finetuned",
        "acc_finetuned_std",
        "n_seeds",
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
        "acc_finetuned_std": float(row.get("acc_finetuned_std", math.nan)),
        "n_seeds": int(row.get("n_seeds", 1)),
        "acc_baseline": float(row["acc_baseline"]),
        "drop_pp": 100 * float(row["acc_baseline"] - row["acc_finetuned"]),
        "size_compact_bytes": float(row["size_compact_bytes"]),
        "params_nonzero": float(row["params_nonzero"]),
        "x_smaller": dense / float(row["size_compact_bytes"]),
    }


def _pct(x: float, digits: int = 2) -> str:
    return "none" if pd.isna(x) else f"{100 * x:.{digits}f} %"


def _pct_pm(mean: float, std: float) -> str:
    """Mean ± standard deviation in percent ("98.40 ± 0.08 %"); the mean alone for a single seed."""
    if pd.isna(mean):
        return "none"
    return f"{100 * mean:.2f} %" if pd.isna(std) else f"{100 * mean:.2f} ± {100 * std:.2f} %"


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
            "accuracy (mean ± std)": [
                _pct_pm(v, s) for v, s in zip(table["acc_finetuned"], table["acc_finetuned_std"], strict=True)
            ],
            "seeds": ["" if pd.isna(v) else f"{v:.0f}" for v in table["n_seeds"]],
            "drop (pp)": ["" if pd.isna(v) else f"{v:.2f}" for v in table["drop_pp"]],
            "compact file": [_kb(v) for v in table["size_compact_bytes"]],
            "non-zero params": ["" if pd.isna(v) else f"{v:,.0f}" for v in table["params_nonzero"]],
            "smaller than dense": [_times(v) for v in table["x_smaller"]],
        }
    ).set_index(["model", "method", "within"])


# what a key finding takes from the summary of the sparsest row within tolerance
_BEST_FIELDS = "label ratio sparsity acc_finetuned acc_finetuned_std n_seeds size_compact_bytes x_smaller".split()


def _key_findings(df: pd.DataFrame, tolerance: float = 0.005) -> pd.DataFrame:
    """Per model and series, the most sparse row whose accuracy is within ``tolerance`` (0.005 = 0.5 pp) of its
    baseline: its sparsity, accuracy, compact bytes, how many times smaller than the dense file it is, and its
    batch-256 latency speed-up over the dense baseline with the faster kernel (:func:`_seed_speedups`; mean and
    std over seeds when ``df`` comes from :func:`load_compared`). Series with no such row get NaN values.
    """
    out = []
    for model, series, dense, ok in _within(df, tolerance):
        record = {
            "model": model,
            "acc_baseline_model": _baseline_accuracy(df, model),
            "noise_floor": _noise_floor(df, model),
            "tolerance_pp": round(100 * tolerance, 6),
            "series": series,
            "label": "",
        }
        if not ok.empty:
            best = ok.sort_values(["sparsity", "acc_finetuned"], ascending=[False, False]).iloc[0]
            summary = _summary(best, dense)
            record |= {k: summary[k] for k in _BEST_FIELDS}
            record["difference"] = summary["acc_finetuned"] - record["acc_baseline_model"]
            mean, std = (v.loc[best.name] for v in _speedup_columns(ok, 256))
            record["speedup_b256"], record["speedup_b256_std"] = float(mean), float(std)
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
        "acc_finetuned_std",
        "n_seeds",
        "difference",
        "noise_floor",
        "size_compact_bytes",
        "x_smaller",
        "speedup_b256",
        "speedup_b256_std",
    ]
    return pd.DataFrame(out, columns=columns)


def _format_findings(findings: pd.DataFrame) -> pd.DataFrame:
    """:func:`_key_findings` as strings for display."""
    tol = float(findings["tolerance_pp"].iloc[0]) if len(findings) else 0.5
    return pd.DataFrame(
        {
            "model": [_MODEL_TITLES.get(m, m) for m in findings["model"]],
            "method": [
                label or series for label, series in zip(findings["label"], findings["series"], strict=True)
            ],
            f"most sparse within {tol:g} pp": [_pct(v, 1) for v in findings["sparsity"]],
            "accuracy (mean ± std)": [
                _pct_pm(v, s)
                for v, s in zip(findings["acc_finetuned"], findings["acc_finetuned_std"], strict=True)
            ],
            "vs baseline": [
                _difference_text(d, f)
                for d, f in zip(findings["difference"], findings["noise_floor"], strict=True)
            ],
            "compact file": [_kb(v) for v in findings["size_compact_bytes"]],
            "smaller than dense": [_times(v) for v in findings["x_smaller"]],
            "speed-up, batch 256": [
                _speedup_text(v, s)
                for v, s in zip(findings["speedup_b256"], _std(findings, "speedup_b256"), strict=True)
            ],
        }
    )


def key_findings_markdown(df: pd.DataFrame, tolerance: float = 0.005) -> str:
    """The key findings as Markdown: per model, one sentence (baseline, smallest file within ``tolerance``) and
    a table of :func:`_format_findings` rows. The book's introduction includes it; no headings, so it fits
    under any section."""
    findings = _key_findings(df, tolerance)
    table = _format_findings(findings).drop(columns="model")
    dense = {m: _dense_bytes(df, m) for m in models(df)}
    lines = []
    for model in models(df):
        mask = (findings["model"] == model).to_numpy()
        f = findings[mask & findings["sparsity"].notna().to_numpy()]
        std, n = _baseline_spread(df, model)
        base = _pct_pm(_baseline_accuracy(df, model), std)
        lead = f"**{_MODEL_TITLES[model]}**: dense baseline {base}"
        if n > 1:
            lead += (
                f" (mean ± std over {n} seeds; differences below {_NOISE_SIGMAS:g} std = "
                f"{100 * _noise_floor(df, model):.2f} pp are no measurable difference)"
            )
        else:
            lead += " (one seed: no spread measured)"
        lead += f", dense file {_kb(dense[model])}."
        if f.empty:
            lead += f" No pruned model stays within {100 * tolerance:g} pp of the baseline."
        else:
            best = f.sort_values(["size_compact_bytes", "acc_finetuned"], ascending=[True, False]).iloc[0]
            lead += (
                f" Within {100 * tolerance:g} pp, the smallest file is {best['label']} at "
                f"{100 * best['sparsity']:.1f} % sparsity: {_kb(best['size_compact_bytes'])}, "
                f"{best['x_smaller']:.1f}x smaller."
            )
        missing = findings.loc[mask & findings["sparsity"].isna().to_numpy(), "series"].tolist()
        if missing:
            lead += f" Not within {100 * tolerance:g} pp at any sparsity tried: {', '.join(missing)}."
        rows = table[mask & findings["sparsity"].notna().to_numpy()]
        lines += [lead, ""]
        if rows.empty:
            continue
        lines += ["| " + " | ".join(rows.columns) + " |", "|" + "---|" * len(rows.columns)]
        lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in r) + " |" for r in rows.itertuples(False)]
        lines.append("")
    if findings["speedup_b256"].notna().any():
        lines += [_SPEEDUP_RULE, ""]
    return "\n".join(lines)


def _std(df: pd.DataFrame, column: str) -> pd.Series:
    """The ``<column>_std`` of aggregated rows, NaN for per-seed rows."""
    return df[f"{column}_std"] if f"{column}_std" in df else pd.Series(math.nan, index=df.index)


def _summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every experiment in one short display table, for the end of a run: per model, method and ratio the
    accuracy after fine-tuning (and the baseline's), the measured sparsity, the compact file against the
    dense baseline's file (for structured rows too: what the smaller model saves over the original) and the
    batch-256 speed-up with the faster kernel and, from :func:`load_compared`, its band (:func:`_speedup_text`)."""
    out = pd.DataFrame(
        {
            "model": df["model"],
            "method": df["label"],
            "ratio": [f"{v:g}" for v in df["ratio"]],
            "accuracy": [
                _pct_pm(v, s) for v, s in zip(df["acc_finetuned"], _std(df, "acc_finetuned"), strict=True)
            ],
            "baseline": [_pct_pm(v, s) for v, s in zip(df["acc_baseline"], _std(df, "acc_baseline"), strict=True)],
            "seeds": [f"{v:.0f}" for v in df["n_seeds"]] if "n_seeds" in df else [1] * len(df),
            "sparsity": [_pct(v, 1) for v in df["sparsity"]],
            "compact file": [_kb(v) for v in df["size_compact_bytes"]],
            "smaller than dense": [
                _times(_dense_bytes(df, m) / c) for m, c in zip(df["model"], df["size_compact_bytes"], strict=True)
            ],
            "faster at b256": [_speedup_text(v, s) for v, s in zip(*_speedup_columns(df, 256), strict=True)],
        }
    )
    return out.set_index(["model", "method", "ratio"])
