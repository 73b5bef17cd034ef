"""Figures are byte-reproducible and readable: rerunning chapter 05 on the same CSVs leaves a checkout clean."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from mnist_pruning import plots  # noqa: E402
from mnist_pruning.notebook import format_number  # noqa: E402
from mnist_pruning.results import load_results  # noqa: E402


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
    assert format_number(value) == shown
