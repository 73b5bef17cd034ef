import csv

import pytest

from mnist_pruning.results import COLUMNS, read_results, results_csv
from mnist_pruning.sweep import (
    Experiment,
    SweepConfig,
    experiments,
    run_sweep,
)

TIMING = {
    "latency_sparse_b1_ms",
    "latency_sparse_b256_ms",
    "sparse_layers_b1",
    "sparse_layers_b256",
    "finetune_seconds",
    "latency_b1_ms",
    "latency_b256_ms",
    "baseline_latency_b1_ms",
    "baseline_latency_b256_ms",
}


def tiny(tmp_path, **overrides):
    kwargs = dict(
        models=("mlp",),
        methods=("l1", "global", "nm", "structured"),
        ratios=(0.5,),
        patterns=("2:4",),
        finetune_epochs=1,
        baseline_epochs={"mlp": 1},
        subset=3000,
        test_subset=1000,
        out_dir=str(tmp_path / "runs"),
        results_dir=str(tmp_path / "results"),
        latency=False,
    )
    kwargs.update(overrides)
    return SweepConfig(**kwargs)


def test_sweep_writes_one_row_per_experiment_with_the_documented_columns(tmp_path, mnist_small):
    config = tiny(tmp_path)
    csvs = run_sweep(config, progress=False, data=mnist_small)
    rows = read_results(csvs["mlp"])
    assert [(r["method"], r["pattern"]) for r in rows] == [
        ("l1", ""),
        ("global", ""),
        ("nm", "2:4"),
        ("structured", ""),
    ]
    with open(csvs["mlp"]) as f:
        assert tuple(next(csv.reader(f))) == COLUMNS


def test_rows_hold_measured_values(tmp_path, mnist_small):
    rows = read_results(run_sweep(tiny(tmp_path, methods=("global",)), progress=False, data=mnist_small)["mlp"])
    row = rows[0]
    assert float(row["sparsity"]) == pytest.approx(0.5, abs=1e-5)
    assert int(row["params_total"]) == 266_610
    assert int(row["params_nonzero"]) < 266_610 * 0.6
    assert int(row["size_compact_bytes"]) < int(row["size_dense_bytes"])
    assert 0.1 < float(row["acc_finetuned"]) <= 1.0


def test_rerun_skips_finished_experiments(tmp_path, mnist_small):
    config = tiny(tmp_path)
    path = run_sweep(config, progress=False, data=mnist_small)["mlp"]
    before = path.read_bytes()
    run_sweep(config, progress=False, data=mnist_small)
    assert path.read_bytes() == before


def test_changed_configuration_adds_rows_instead_of_overwriting(tmp_path, mnist_small):
    run_sweep(tiny(tmp_path, methods=("l1",)), progress=False, data=mnist_small)
    path = run_sweep(tiny(tmp_path, methods=("l1",), finetune_epochs=2), progress=False, data=mnist_small)["mlp"]
    rows = read_results(path)
    assert [r["finetune_epochs"] for r in rows] == ["1", "2"]
    assert rows[0]["config_hash"] != rows[1]["config_hash"]


def test_same_seed_and_config_give_identical_rows_timings_aside(tmp_path, mnist_small):
    a = read_results(run_sweep(tiny(tmp_path / "a"), progress=False, data=mnist_small)["mlp"])
    b = read_results(run_sweep(tiny(tmp_path / "b"), progress=False, data=mnist_small)["mlp"])
    strip = [{k: v for k, v in r.items() if k not in TIMING} for r in a]
    assert strip == [{k: v for k, v in r.items() if k not in TIMING} for r in b]


def test_csv_with_unexpected_columns_raises_before_training_and_stays_untouched(tmp_path, mnist_small):
    config = tiny(tmp_path)
    path = results_csv(tmp_path / "results", "mlp")
    path.parent.mkdir(parents=True)
    path.write_text("model,accuracy\nmlp,0.9\n")
    with pytest.raises(ValueError, match=r"unexpected columns .*missing: \['method'"):
        run_sweep(config, progress=False, data=mnist_small)
    assert path.read_text() == "model,accuracy\nmlp,0.9\n"
    assert not (tmp_path / "runs" / "mlp_baseline.pt").exists()


def test_nm_experiments_cover_hardware_patterns_and_the_ratio_equivalents():
    config = SweepConfig(models=("cnn",), methods=("nm",))
    patterns = [e.pattern for e in experiments(config)]
    assert patterns == ["2:4", "1:4", "2:8", "1:8", "1:16", "7:10", "3:10", "1:10", "1:100"]


def test_frontier_schedules_add_rows_at_the_frontier_ratios():
    config = SweepConfig(
        models=("mlp",),
        methods=("l1", "global"),
        ratios=(0.5,),
        schedules=("oneshot", "gradual", "lottery"),
        frontier_ratios=(0.99,),
    )
    assert experiments(config) == [
        Experiment("mlp", "l1", 0.5),
        Experiment("mlp", "l1", 0.99, schedule="gradual"),
        Experiment("mlp", "global", 0.5),
        Experiment("mlp", "global", 0.99, schedule="gradual"),
        Experiment("mlp", "global", 0.99, schedule="lottery"),
    ]


def test_gradual_row_reaches_its_sparsity(tmp_path, mnist_small):
    config = tiny(tmp_path, methods=("global",), schedules=("gradual",), frontier_ratios=(0.9,), frontier_epochs=1)
    row = read_results(run_sweep(config, progress=False, data=mnist_small)["mlp"])[0]
    assert row["schedule"] == "gradual" and row["acc_pruned"] == ""
    assert float(row["sparsity"]) == pytest.approx(0.9, abs=1e-5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"models": ("resnet",)}, "unknown model 'resnet'"),
        ({"methods": ("random",)}, "unknown method 'random'"),
        ({"ratios": (1.0,)}, r"ratio must be in \[0, 1\)"),
        ({"patterns": ("4:4",)}, "4:4"),
        ({"finetune_epochs": 0}, "epochs must be a positive integer, got 0"),
        ({"schedules": ("slow",)}, "unknown schedule 'slow'"),
        ({"subset": 5}, "subset must be an integer >= 10, got 5"),
        ({"test_subset": 2.5}, "test_subset must be an integer >= 10, got 2.5"),
        ({"lottery_rounds": 0}, "lottery_rounds must be a positive integer, got 0"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"baseline_epochs": {"mlp": 0}}, "baseline epochs of 'mlp' must be a positive integer, got 0"),
        ({"baseline_epochs": {"vgg": 3}}, "unknown model 'vgg'"),
        ({"finetune_lr": -1.0}, "lr must be a number"),
    ],
)
def test_bad_sweep_config_raises_naming_the_value(overrides, message):
    with pytest.raises(ValueError, match=message):
        SweepConfig(**overrides)


def test_unwritable_results_dir_raises_before_any_work(tmp_path, mnist_small):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        run_sweep(tiny(tmp_path, results_dir=str(blocker)), progress=False, data=mnist_small)


def test_frontier_budget_does_not_change_one_shot_hashes():
    from mnist_pruning.sweep import config_hash

    exp = Experiment("mlp", "global", 0.9)
    gradual = Experiment("mlp", "global", 0.99, schedule="gradual")
    a = SweepConfig(schedules=("oneshot", "gradual"), frontier_epochs=5)
    b = SweepConfig(schedules=("oneshot",), frontier_epochs=9)
    assert config_hash(a, exp) == config_hash(b, exp)
    assert config_hash(a, gradual) != config_hash(b, gradual)
    assert config_hash(a, exp) != config_hash(SweepConfig(finetune_epochs=3), exp)


def test_a_notebook_recording_a_swept_experiment_adds_no_row(tmp_path, mnist_small):
    from mnist_pruning.sweep import record

    full = tiny(tmp_path, methods=("global",), schedules=("oneshot", "gradual"), frontier_epochs=1)
    path = run_sweep(full, progress=False, data=mnist_small)["mlp"]
    rows = read_results(path)
    notebook_config = tiny(tmp_path, methods=("global",))  # what chapter 02 builds: one-shot only
    record(rows[0], notebook_config)
    assert len(read_results(path)) == len(rows)


@pytest.mark.parametrize(
    ("method", "pattern", "ratio"), [("global", "", 0.9), ("nm", "2:4", 0.5), ("structured", "", 0.5)]
)
def test_run_experiment_returns_the_model_and_the_files_its_row_measured(
    tmp_path, mnist_small, method, pattern, ratio
):
    import torch

    from mnist_pruning.models import SAMPLE_SHAPE
    from mnist_pruning.sparsity import count_parameters, load_compact, sparsity
    from mnist_pruning.sweep import ExperimentResult, accuracies, baseline, run_experiment
    from mnist_pruning.train import evaluate

    config = tiny(tmp_path, methods=(method,))
    base, _ = baseline("mlp", mnist_small, config.baseline_config("mlp"), tmp_path / "runs", progress=False)
    acc = accuracies(base, mnist_small)
    exp = Experiment("mlp", method, ratio, pattern)
    result = run_experiment(exp, base, mnist_small, config, acc, tmp_path / "files", progress=False)
    assert isinstance(result, ExperimentResult)
    row, model = result.row, result.model
    assert result.dense_path.is_file() and result.compact_path.is_file()
    assert int(row["size_dense_bytes"]) == result.dense_path.stat().st_size
    assert int(row["size_compact_bytes"]) == result.compact_path.stat().st_size
    # The compact file is the returned model: a fresh model of its config computes the same outputs from it.
    fresh = model.with_widths(dict(zip(type(model).STRUCTURED, model.config.widths, strict=True)))
    fresh.load_state_dict(load_compact(result.compact_path))
    x = mnist_small.test_x[:16].cpu()
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), model.eval()(x))
    assert int(row["params_total"]) == count_parameters(model)
    if method == "structured":
        assert count_parameters(model) < count_parameters(base)
        assert float(row["sparsity"]) == pytest.approx(1 - count_parameters(model) / count_parameters(base))
    else:
        assert float(row["sparsity"]) == pytest.approx(sparsity(model)) == pytest.approx(ratio, abs=1e-3)
    assert row["flops_dense"] > row["flops_effective"] or method == "structured"
    assert float(row["acc_finetuned"]) == evaluate(model, mnist_small.test_x, mnist_small.test_y)["accuracy"]
    assert float(row["acc_val_finetuned"]) == evaluate(model, mnist_small.val_x, mnist_small.val_y)["accuracy"]
    assert float(row["acc_val_baseline"]) == evaluate(base, mnist_small.val_x, mnist_small.val_y)["accuracy"]
    assert tuple(x.shape[1:]) == SAMPLE_SHAPE


def test_record_appends_once_through_results_append_row(tmp_path, mnist_small):
    from mnist_pruning.sweep import record

    config = tiny(tmp_path, methods=("l1",))
    path = run_sweep(config, progress=False, data=mnist_small)["mlp"]
    (row,) = read_results(path)
    assert record(row, config) == path
    assert read_results(path) == [row]  # the same run again: skipped
    record({**row, "seed": "1"}, config)  # another seed is another run
    assert [r["seed"] for r in read_results(path)] == ["0", "1"]


SPARSE_COLUMNS = ("latency_sparse_b1_ms", "latency_sparse_b256_ms", "sparse_layers_b1", "sparse_layers_b256")


@pytest.fixture(scope="module")
def timed_rows(tmp_path_factory, mnist_small):
    """One row per method, latency measured (ratio 0.9: sparse enough that planning really times layers)."""
    config = tiny(tmp_path_factory.mktemp("timed"), ratios=(0.9,), patterns=(), latency=True)
    return {r["method"]: r for r in read_results(run_sweep(config, progress=False, data=mnist_small)["mlp"])}


@pytest.mark.parametrize("method", ["l1", "global", "nm"])
def test_unstructured_and_nm_rows_hold_sparse_latencies_and_the_layers_that_ran_sparse(timed_rows, method):
    row = timed_rows[method]
    assert float(row["latency_sparse_b1_ms"]) > 0 and float(row["latency_sparse_b256_ms"]) > 0
    for batch in (1, 256):
        layers = row[f"sparse_layers_b{batch}"]
        assert layers == "none" or set(layers.split(",")) <= {"fc1", "fc2", "fc3"}


def test_structured_rows_leave_the_sparse_columns_empty(timed_rows):
    row = timed_rows["structured"]
    assert float(row["latency_b256_ms"]) > 0
    assert [row[c] for c in SPARSE_COLUMNS] == ["", "", "", ""]


def test_sparse_columns_stay_empty_without_latency(tmp_path, mnist_small):
    config = tiny(tmp_path, methods=("global",), ratios=(0.9,))
    row = read_results(run_sweep(config, progress=False, data=mnist_small)["mlp"])[0]
    assert [row[c] for c in SPARSE_COLUMNS] == ["", "", "", ""]
