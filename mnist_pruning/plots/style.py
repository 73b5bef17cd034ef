"""How every figure looks and is saved: the book's width and fonts, one colour per method, the shared axes and
series helpers, and :func:`save_figure` (PNG + SVG, atomically, only when the drawing changed)."""

from __future__ import annotations

import functools
import io
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from ..compare import _baseline_accuracy, _dense_bytes
from ..files import _atomic_write

__all__ = ["save_figure"]


_WIDTH_IN = 7.0  # the book's content width: a wider figure is scaled down, and its text with it
_MIN_FONT_PT = 8.0  # the smallest text at that width
# One colour per method, in every figure; schedules of a method differ by line style (_SCHEDULE_LINES).
_METHOD_COLORS = {
    "l1": "#1f77b4",
    "global": "#2ca02c",
    "structured": "#d62728",
    "nm": "#9467bd",
    "dense": "#000000",
    "vd": "#ff7f0e",  # Sparse VD: a method of its own
}
_SCHEDULE_LINES = {"oneshot": "-", "gradual": "--", "lottery": ":", "ablation": "--", "frontier": "-"}
_RC = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "xtick.labelsize": _MIN_FONT_PT,
    "ytick.labelsize": _MIN_FONT_PT,
    "legend.fontsize": _MIN_FONT_PT,
    "figure.titlesize": 10,
    "figure.constrained_layout.use": True,  # room for the legends below the axes (loc="outside lower center")
}


def _method_color(series: str) -> str:
    """The colour of a method's series ("global", "global (gradual)", "nm 2:4"): :data:`_METHOD_COLORS` of its
    first word, grey for anything else."""
    return _METHOD_COLORS.get(series.split(" ")[0], "0.45")


def _schedule_line(series: str) -> str:
    schedule = series.partition("(")[2].rstrip(")") or "oneshot"
    return _SCHEDULE_LINES.get(schedule, "-.")


def _styled(draw):
    """Draw under the book's style (:data:`_RC`); tick labels created later, at draw time, keep its size."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> Figure:
        with plt.rc_context(_RC):
            fig = draw(*args, **kwargs)
        for ax in fig.axes:
            ax.tick_params(which="both", labelsize=_MIN_FONT_PT)
        return fig

    return wrapper


_SOURCE_MARKERS = ("*", "P", "X", "D", "v", "h")  # one per published source, in order of first appearance


def _anchor_marker(source: str, sources: list[str]) -> str:
    """The marker of a published source among ``sources`` (every figure marks the same paper the same way)."""
    return _SOURCE_MARKERS[sources.index(source) % len(_SOURCE_MARKERS)]


def _legend_below(fig: Figure, axes: Iterable[Axes], ncol: int = 2) -> None:
    """One legend for ``axes`` below them, outside the data; each label once."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if not label.startswith("_"):
                seen.setdefault(label, handle)
    if seen:
        longest = max(map(len, seen))
        cols = 1 if longest > 45 else min(ncol, len(seen))
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=cols, frameon=False)


_MARKERS = {"l1": "o", "global": "s", "structured": "D", "nm": "^"}
_SPARSITY_TICKS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


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
    """One line per series (sorted by x); N:M rows as separate points annotated with their pattern. Where the
    rows carry ``<y>_std`` (seed means, see ``results.aggregate``), each point gets a ±1 std error bar."""
    for series in order:
        rows = sub[(sub["series"] == series) & sub[x].notna() & sub[y].notna()].sort_values(x)
        if rows.empty:
            continue
        method = rows["method"].iloc[0]
        color = _method_color(series)
        label = f"{series}{suffix}"
        if f"{y}_std" in rows and rows[f"{y}_std"].notna().any():
            ax.errorbar(
                rows[x],
                scale * rows[y],
                yerr=scale * rows[f"{y}_std"].fillna(0),
                ls="none",
                color=color,
                capsize=3,
            )
        if method == "nm":
            ax.plot(rows[x], scale * rows[y], ls="none", marker="^", ms=8, color=color, label=label)
            # Neighbouring patterns (3:10 and 2:8, 1:8 and 1:10) sit close: alternate the labels above / below.
            for i, (xv, yv, pattern) in enumerate(zip(rows[x], scale * rows[y], rows["pattern"], strict=True)):
                offset = (4, 5) if i % 2 == 0 else (4, -11)
                ax.annotate(
                    pattern,
                    (xv, yv),
                    textcoords="offset points",
                    xytext=offset,
                    fontsize=_MIN_FONT_PT,
                    color=color,
                )
        else:
            ls = _schedule_line(series)
            hollow = {} if ls == "-" else {"mfc": "white"}  # other schedules: hollow markers on a broken line
            ax.plot(
                rows[x],
                scale * rows[y],
                ls=ls,
                marker="P"
                if ls == _SCHEDULE_LINES["lottery"]
                else _MARKERS.get(method, "o"),  # lone points differ
                color=color,
                label=label,
                **hollow,
            )


def _finish(fig: Figure, axes: Iterable[Axes], title: str, ncol: int = 2) -> Figure:
    """Grid, the legend below the axes, the title."""
    axes = list(axes)
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    _legend_below(fig, axes, ncol)
    fig.suptitle(title)
    return fig


def _with_error(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with ``error_pct`` (test error after fine-tuning, %) and, for seed means, its std."""
    rows = rows.assign(error_pct=100 * (1 - rows["acc_finetuned"]))
    if "acc_finetuned_std" in rows:
        rows = rows.assign(error_pct_std=100 * rows["acc_finetuned_std"])
    return rows


def _dense_point(ax: Axes, df: pd.DataFrame, model: str) -> None:
    """The dense baseline on an error-vs-bytes axis: its file's bytes, its mean test error."""
    ax.plot(
        _dense_bytes(df, model),
        100 * (1 - _baseline_accuracy(df, model)),
        marker="X",
        ms=10,
        color="k",
        ls="none",
        label="dense baseline",
    )


def _error_axis(ax: Axes) -> None:
    """A log y-axis for test error in %, labelled with plain numbers (0.5, 1, 2, 5, ...)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: _plain(v) if _log_mantissa(v) in (2, 5) else ""))


def _log_mantissa(v: float) -> int:
    return round(v / 10 ** math.floor(math.log10(v))) if v > 0 else 0


def _plain(v: float, _pos: int | None = None) -> str:
    return f"{v:g}"


# Two SVGs of one figure drawn on different CPUs differ in the last printed digit of some coordinates (and in
# the clip-path / marker ids matplotlib hashes from them); below this many SVG units (1/72 in) nobody sees it.
_SVG_TOLERANCE = 1e-3
_SVG_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_SVG_HASH_ID = re.compile(rb"\b([a-z])[0-9a-f]{10}\b")  # matplotlib's _make_id: a letter + 10 hex digits


def _svg_content(svg: bytes) -> tuple[bytes, np.ndarray]:
    """(the SVG with hashed ids renamed in order of appearance and every number replaced by ``#``, its numbers)."""
    ids: dict[bytes, bytes] = {}
    svg = _SVG_HASH_ID.sub(lambda m: ids.setdefault(m.group(0), b"%s_%d" % (m.group(1), len(ids))), svg)
    return _SVG_NUMBER.sub(b"#", svg), np.array([float(x) for x in _SVG_NUMBER.findall(svg)])


def _same_svg(a: bytes, b: bytes, tolerance: float = _SVG_TOLERANCE) -> bool:
    """Whether two SVGs draw the same figure: identical but for numbers within ``tolerance`` of each other and
    the ids matplotlib derives from them.

    Example::

        >>> same_svg(b'<path d="M 34.994813 0"/>', b'<path d="M 34.994812 0"/>')
        True
    """
    (text_a, num_a), (text_b, num_b) = _svg_content(a), _svg_content(b)
    return text_a == text_b and num_a.shape == num_b.shape and bool(np.all(np.abs(num_a - num_b) <= tolerance))


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's header; None if ``data`` is no PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def save_figure(fig: Figure, results_dir: str | os.PathLike, name: str, dpi: int = 150) -> tuple[Path, Path]:
    """Write ``fig`` as ``<results_dir>/<name>.png`` and ``.svg``, each atomically, but only when its content
    changed; returns both paths.

    Rerunning a chapter on the same CSVs must leave a checkout clean on any CPU, where the last digit of a float
    may differ: the SVG is rewritten only when :func:`_same_svg` says it draws something else, and the PNG (whose
    antialiased pixels follow the same coordinates) only with it, or when it is missing or of another size.

    Example::

        >>> png, svg = save_figure(fig, "results", "mlp_accuracy_vs_sparsity")  # doctest: +SKIP
    """
    if not name or Path(name).name != name:
        raise ValueError(f"figure name must be a plain file stem, got {name!r}")
    png_path, svg_path = (Path(results_dir) / f"{name}.{fmt}" for fmt in ("png", "svg"))
    new: dict[str, bytes] = {}
    for fmt in ("png", "svg"):
        # No date, and a fixed salt for the SVG's clip-path ids (random by default): rerunning on the same
        # inputs writes the same bytes.
        metadata = {"Date": None} if fmt == "svg" else None
        buffer = io.BytesIO()
        with plt.rc_context({"svg.hashsalt": "mnist-pruning"}):
            fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)
        new[fmt] = buffer.getvalue()
    old_svg = svg_path.read_bytes() if svg_path.is_file() else b""
    old_png = png_path.read_bytes() if png_path.is_file() else b""
    svg_changed = not _same_svg(old_svg, new["svg"])
    png_changed = svg_changed or _png_size(old_png) != _png_size(new["png"])
    for path, data, changed in ((png_path, new["png"], png_changed), (svg_path, new["svg"], svg_changed)):
        if changed:
            with _atomic_write(path) as tmp:
                tmp.write_bytes(data)
    return png_path, svg_path
