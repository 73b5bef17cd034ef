"""notebook.cost_table: the sparse-kernel latency lines appear exactly where a row measured them."""

from __future__ import annotations

import pytest

from mnist_pruning.models import build_model
from mnist_pruning.notebook import cost_table
from mnist_pruning.results import read_results
from mnist_pruning.settings import _project_root

NUMBERS = ("params_nonzero", "flops_dense", "flops_effective", "size_dense_bytes", "size_compact_bytes")


def fixture_row(method: str, ratio: str) -> dict:
    rows = read_results(_project_root() / "tests" / "fixtures" / "mlp_pruning_results.csv")
    row = next(r for r in rows if r["method"] == method and r["ratio"] == ratio and r["schedule"] == "oneshot")
    return {k: float(v) if k in NUMBERS or ("latency" in k and v) else v for k, v in row.items()}


@pytest.fixture(scope="module")
def base():
    return build_model("mlp")


def test_unstructured_row_shows_its_sparse_kernel_latencies_and_layers(base):
    table = cost_table(fixture_row("global", "0.99"), base)
    assert list(table.index[-2:]) == [
        "latency batch 1 (ms), sparse: fc1",
        "latency batch 256 (ms), sparse: fc1,fc2",
    ]
    assert table.loc["latency batch 256 (ms), sparse: fc1,fc2", "pruned"] == pytest.approx(0.1537)


def test_structured_row_has_no_sparse_kernel_lines(base):
    table = cost_table(fixture_row("structured", "0.5"), base)
    assert not any("sparse:" in label for label in table.index)
