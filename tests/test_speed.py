"""The crossover map's measuring core (mnist_pruning.speed): the table's shape and columns, and its summaries.

Timings are tiny and never compared: what is checked is the table, not the machine's speed.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from mnist_pruning import speed
from mnist_pruning.models import build_model

TINY = speed.Timing(rounds=1, min_run_time=0.002, plan_min_run_time=0.001, batches=(1, 8))
COLUMNS = [
    "model",
    "point",
    "pattern",
    "density",
    "nonzero",
    "batch",
    "variant",
    "ms",
    "speedup",
    "structured_ratio",
    "params",
    "sparse_layers",
    "memory_format",
    "threads",
]


@pytest.fixture(scope="module")
def mlp_table() -> pd.DataFrame:
    torch.manual_seed(0)
    return speed.crossover(build_model("mlp"), "mlp", (1.0, 0.1, "1:4"), TINY)[0]


def test_crossover_has_one_row_per_point_batch_and_variant(mlp_table):
    assert list(mlp_table.columns) == COLUMNS
    assert len(mlp_table) == 3 * 2 * len(speed._VARIANTS)
    assert set(mlp_table.variant) == set(speed._VARIANTS) and set(mlp_table.batch) == {1, 8}


def test_crossover_points_give_their_kept_fraction(mlp_table):
    assert sorted(set(mlp_table.density)) == [0.1, 0.25, 1.0]
    assert set(mlp_table[mlp_table.density == 0.25].pattern) == {"1:4"}


def test_crossover_times_every_variant_and_takes_speedups_against_dense(mlp_table):
    assert (mlp_table.ms > 0).all()
    assert (mlp_table[mlp_table.variant == "dense"].speedup == 1).all()


def test_crossover_times_only_the_variants_asked_for():
    table, plans = speed.crossover(build_model("mlp"), "mlp", ("2:4",), TINY, variants=("dense", "sparse"))
    assert set(table.variant) == {"dense", "sparse"} and plans == {}


def test_crossover_without_dense_raises_naming_the_variants():
    with pytest.raises(ValueError, match=r"must include 'dense'.*\('sparse',\)"):
        speed.crossover(build_model("mlp"), "mlp", (0.1,), TINY, variants=("sparse",))


@pytest.mark.parametrize("point", [0.0, 1.5, "4:4", True])
def test_bad_point_raises_naming_it(point):
    with pytest.raises(ValueError, match=repr(point) if not isinstance(point, str) else "4:4"):
        speed.crossover(build_model("mlp"), "mlp", (point,), TINY)


def test_where_each_wins_has_one_line_per_model_and_batch(mlp_table):
    lines = speed._where_each_wins(mlp_table)
    assert [line.split(":")[0].strip() for line in lines] == ["mlp b1", "mlp b8"]


def _table(converted_ms: float, sparse_layers: str) -> pd.DataFrame:
    rows = []
    for variant, ms in (("dense", 2.0), ("converted", converted_ms), ("sparse", 1.5), ("structured", 3.0)):
        rows.append(
            {
                "model": "mlp",
                "density": 0.1,
                "batch": 256,
                "variant": variant,
                "ms": ms,
                "speedup": 2.0 / ms,
                "sparse_layers": sparse_layers if variant == "converted" else None,
            }
        )
    return pd.DataFrame(rows)


def test_crossover_text_names_where_sparse_kernels_win_and_by_how_much():
    text = speed.crossover_text(_table(0.5, "fc1"))
    assert text.startswith("**LeNet-300-100 (mlp)**. At batch 256 the sparse kernels beat dense by at least 1.1x")
    assert "with 10 % of the weights kept (best 4.0x, at 10 %)" in text


def test_crossover_text_says_when_the_structured_model_is_never_the_fastest():
    text = speed.crossover_text(_table(0.5, "fc1"))
    assert "structured model of as many parameters is never the fastest" in text


def test_crossover_text_does_not_count_a_dense_fallback_as_a_win():
    assert "never beat dense" in speed.crossover_text(_table(1.0, "-"))


def test_crossover_text_without_a_converted_model_judges_the_forced_sparse_kernels():
    table = _table(0.5, "fc1")
    text = speed.crossover_text(table[table.variant != "converted"])
    assert "beat dense by at least 1.1x with 10 % of the weights kept (best 1.3x, at 10 %)" in text
