"""mnist_pruning.results: the one way rows are appended (once per run, whole files) and what makes a run."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mnist_pruning.results import COMPRESSION, PRUNING, Schema, append_row, read_results

COLUMNS = PRUNING.columns

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def rows() -> list[dict[str, str]]:
    with open(FIXTURES / "mlp_pruning_results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_results_csv_is_one_file_per_model(tmp_path):
    assert PRUNING.csv(tmp_path, "cnn") == tmp_path / "cnn_pruning_results.csv"
    assert read_results(tmp_path / "absent.csv") == []


def test_append_row_writes_the_schema_and_skips_a_run_already_there(tmp_path, rows):
    path = tmp_path / "r.csv"
    assert append_row(path, rows[0]) is True
    assert append_row(path, rows[1]) is True
    assert append_row(path, dict(rows[0])) is False  # same run: nothing written
    assert read_results(path) == rows[:2]
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    assert tuple(lines[0]) == COLUMNS and all(len(line) == len(COLUMNS) for line in lines)
    # no temporary files left behind; the lock file stays (deleting it would race with a waiting writer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.csv.lock"]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("finetune_epochs", "3"),
        ("seed", "1"),
        ("config_hash", "other"),
        ("ratio", "0.55"),
        ("schedule", "gradual"),
    ],
)
def test_a_row_differing_in_what_defines_a_run_is_appended(tmp_path, rows, column, value):
    path = tmp_path / "r.csv"
    append_row(path, rows[0])
    assert append_row(path, {**rows[0], column: value}) is True
    assert len(read_results(path)) == 2


@pytest.mark.parametrize(
    ("column", "value"), [("acc_finetuned", "0.5"), ("latency_b1_ms", "9.9"), ("device", "cuda")]
)
def test_measured_values_do_not_make_another_run(tmp_path, rows, column, value):
    path = tmp_path / "r.csv"
    append_row(path, rows[0])
    assert append_row(path, {**rows[0], column: value}) is False
    assert read_results(path) == rows[:1]


def test_run_key_normalises_how_numbers_are_written(rows):
    row = rows[0]
    same = {**row, "ratio": f"{float(row['ratio']):.10f}", "pattern": None}
    assert PRUNING.key(same) == PRUNING.key({**row, "pattern": ""})


@pytest.mark.parametrize("field", ["text", "run_key", "point_key", "spread", "added"])
def test_a_schema_naming_a_column_it_does_not_have_is_refused(field):
    value = frozenset({"nope"}) if field == "added" else ("nope",)
    kwargs = dict(name="t", filename="t.csv", columns=("a", "b"), text=("a",), run_key=("a",), point_key=("a",))
    with pytest.raises(ValueError, match="nope"):
        Schema(**{"spread": ("b",), **kwargs, field: value})


@pytest.mark.parametrize("schema", [PRUNING, COMPRESSION], ids=["pruning", "compression"])
def test_a_row_with_a_misspelt_column_is_refused_before_anything_is_written(tmp_path, schema):
    row = {**schema.row(), "acc_finetunde": "0.9"}
    path = tmp_path / "r.csv"
    with pytest.raises(ValueError, match=r"acc_finetunde"):
        append_row(path, row, schema)
    assert not path.exists()


def test_a_row_missing_a_column_is_refused_naming_it(tmp_path, rows):
    row = dict(rows[0])
    del row["sparsity"]
    with pytest.raises(ValueError, match=r"lacks 1 column\(s\) \['sparsity'\]"):
        append_row(tmp_path / "r.csv", row)


def test_the_numeric_columns_are_the_non_text_ones():
    assert "sparsity" in PRUNING.numeric and "model" not in PRUNING.numeric


def test_a_csv_of_an_earlier_schema_is_read_with_the_new_columns_empty_and_upgraded_on_append(tmp_path, rows):
    old = [c for c in COLUMNS if not c.startswith("acc_val_") and c != "precision"]
    path = tmp_path / "r.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=old, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerow(rows[0])
    (first,) = read_results(path)
    assert first["acc_val_finetuned"] == "" and first["acc_finetuned"] == rows[0]["acc_finetuned"]
    append_row(path, rows[1])
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert [r["acc_finetuned"] for r in read_results(path)] == [rows[0]["acc_finetuned"], rows[1]["acc_finetuned"]]


def test_columns_out_of_order_are_refused(tmp_path, rows):
    path = tmp_path / "r.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(reversed(COLUMNS)), lineterminator="\n")
        writer.writeheader()
        writer.writerow(rows[0])
    with pytest.raises(ValueError, match="unexpected columns"):
        read_results(path)
