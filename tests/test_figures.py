"""Figures are byte-reproducible and readable: rerunning chapter 05 on the same CSVs leaves a checkout clean."""

import matplotlib

matplotlib.use("Agg")

import re  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from mnist_pruning import plots  # noqa: E402
from mnist_pruning.compress import steps_table  # noqa: E402
from mnist_pruning.notebook import _format_number  # noqa: E402
from mnist_pruning.results import COMPRESSION, load_results, read_results  # noqa: E402
from mnist_pruning.settings import _project_root  # noqa: E402

ROOT = _project_root()


@pytest.fixture
def results_df(fixture_results):
    return load_results(fixture_results)


def test_saving_the_same_figure_twice_writes_identical_bytes(tmp_path, results_df):
    first = plots.save_figure(plots.accuracy_vs_sparsity(results_df, "mlp"), tmp_path / "a", "fig")
    second = plots.save_figure(plots.accuracy_vs_sparsity(results_df, "mlp"), tmp_path / "b", "fig")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_saved_svg_has_no_date(tmp_path, results_df):
    _, svg = plots.save_figure(plots.bytes_vs_sparsity(results_df, "cnn"), tmp_path, "fig")
    assert "<dc:date>" not in svg.read_text()


def test_neighbouring_nm_labels_alternate_above_and_below(results_df):
    fig = plots.accuracy_vs_sparsity(results_df, "cnn")
    labels = [t for t in fig.axes[0].texts if ":" in t.get_text()]
    assert len(labels) >= 2
    offsets = [t.xyann[1] for t in labels]
    assert all(a * b < 0 for a, b in zip(offsets, offsets[1:], strict=False))


def _perturb_last_digit(svg: bytes) -> bytes:
    """``svg`` as another CPU might write it: the first 6-decimal coordinate one unit off in its last digit, and
    the first hashed clip-path id (derived from coordinates) different."""
    number = re.search(rb"\d+\.\d{6}\b", svg).group(0)
    last = int(number[-1:])
    changed = number[:-1] + str((last + 1) % 10 if last < 9 else last - 1).encode()
    old_id = re.search(rb"\bp[0-9a-f]{10}\b", svg).group(0)
    return svg.replace(number, changed, 1).replace(old_id, b"p0123456789")


def test_a_last_digit_difference_leaves_the_saved_files_untouched(tmp_path, results_df):
    png, svg = plots.save_figure(plots.accuracy_vs_sparsity(results_df, "mlp"), tmp_path, "fig")
    svg.write_bytes(_perturb_last_digit(svg.read_bytes()))  # as committed from another machine
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (png, svg)}
    plots.save_figure(plots.accuracy_vs_sparsity(results_df, "mlp"), tmp_path, "fig")
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (png, svg)} == before


def test_a_real_change_rewrites_both_files(tmp_path, results_df):
    png, svg = plots.save_figure(plots.accuracy_vs_sparsity(results_df, "mlp"), tmp_path, "fig")
    before = {p: p.read_bytes() for p in (png, svg)}
    changed = results_df.assign(acc_finetuned=results_df["acc_finetuned"] - 0.001)
    plots.save_figure(plots.accuracy_vs_sparsity(changed, "mlp"), tmp_path, "fig")
    assert all(p.read_bytes() != before[p] for p in (png, svg))


def test_same_svg_tells_coordinates_apart_only_beyond_the_tolerance():
    assert plots.style._same_svg(b'<path d="M 34.994813 35"/>', b'<path d="M 34.994812 34.999999"/>')
    assert not plots.style._same_svg(b'<path d="M 34.994813 35"/>', b'<path d="M 34.9 35"/>')
    assert not plots.style._same_svg(b'<path d="M 1 2"/>', b'<path d="M 1 2 L 3 4"/>')


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (532400.0, "532,400"),
        (632912.7, "632,913"),
        (98.3567, "98.36"),
        (0.123456, "0.1235"),
        (float("nan"), ""),
    ],
)
def test_tables_show_whole_numbers_with_separators_and_others_with_four_digits(value, shown):
    assert _format_number(value) == shown


def test_the_compression_steps_table_shows_a_dash_not_nan():
    row = read_results(COMPRESSION.csv(ROOT / "results"), COMPRESSION)[0]
    html = steps_table(row).to_html()
    assert "—" in html and not {"nan", "none"} & set(html.lower().replace("<", " ").replace(">", " ").split())


COMPARISON_FIGURES = ("accuracy_vs_sparsity", "bytes_vs_sparsity", "latency_vs_sparsity", "accuracy_vs_bytes")


def _shown_at_book_width(fig) -> tuple[float, list]:
    """(the scale a reader sees ``fig`` at in the book, its drawn texts): wider than WIDTH_IN, it is shrunk."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    scale = min(1.0, plots.style._WIDTH_IN / fig.get_tightbbox(renderer).width)
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    return scale, texts


@pytest.mark.parametrize("name", COMPARISON_FIGURES)
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_no_text_is_smaller_than_8_pt_at_the_books_width(results_df, name, model):
    scale, texts = _shown_at_book_width(getattr(plots, name)(results_df, model))
    small = {t.get_text(): round(scale * t.get_fontsize(), 1) for t in texts if scale * t.get_fontsize() < 7.95}
    style = plots.style
    assert not small, f"{name}({model}): text below {style._MIN_FONT_PT} pt at {style._WIDTH_IN} in: {small}"


@pytest.mark.parametrize("name", COMPARISON_FIGURES)
def test_legends_sit_outside_every_axes(results_df, name):
    fig = getattr(plots, name)(results_df, "cnn")
    fig.canvas.draw()
    assert fig.legends and not any(ax.get_legend() for ax in fig.axes)
    legend = fig.legends[0].get_window_extent()
    assert not any(legend.overlaps(ax.get_window_extent()) for ax in fig.axes), name


def test_a_method_has_one_colour_in_every_figure(results_df):
    colours = {}
    for name in COMPARISON_FIGURES:
        fig = getattr(plots, name)(results_df, "mlp")
        for ax in fig.axes:
            for line in ax.get_lines():
                method = line.get_label().split(" ")[0]
                if method in plots.style._METHOD_COLORS and method != "dense":
                    colours.setdefault(method, set()).add(to_hex(line.get_color()))
    assert colours and all(c == {plots.style._METHOD_COLORS[m]} for m, c in colours.items()), colours


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")
