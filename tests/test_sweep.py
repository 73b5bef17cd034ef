import csv

import pytest

from mnist_pruning.results import PRUNING, read_results
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
        assert tuple(next(csv.reader(f))) == PRUNING.columns


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
    path = PRUNING.csv(tmp_path / "results", "mlp")
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
        ({"seeds": ()}, "seeds must hold at least one seed, got none"),
        ({"seeds": (0, -2)}, "seed must be an integer >= 0, got -2"),
        ({"seeds": (1, 2, 1)}, r"seeds must be distinct, got \[1, 2, 1\] \(repeated: \[1\]\)"),
        ({"seeds": (1.5,)}, "seed must be an integer >= 0, got 1.5"),
        ({"seed": 1, "seeds": (0, 1)}, r"seed=1 and seeds=\[0, 1\] disagree"),
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
    from mnist_pruning.sweep import _experiment_hash as config_hash

    exp = Experiment("mlp", "global", 0.9)
    gradual = Experiment("mlp", "global", 0.99, schedule="gradual")
    a = SweepConfig(schedules=("oneshot", "gradual"), frontier_epochs=5)
    b = SweepConfig(schedules=("oneshot",), frontier_epochs=9)
    assert config_hash(a, exp) == config_hash(b, exp)
    assert config_hash(a, gradual) != config_hash(b, gradual)
    assert config_hash(a, exp) != config_hash(SweepConfig(finetune_epochs=3), exp)


def test_a_notebook_recording_a_swept_experiment_adds_no_row(tmp_path, mnist_small):
    from mnist_pruning.runner import _record as record
    from mnist_pruning.sweep import SweepStudy

    full = tiny(tmp_path, methods=("global",), schedules=("oneshot", "gradual"), frontier_epochs=1)
    path = run_sweep(full, progress=False, data=mnist_small)["mlp"]
    rows = read_results(path)
    notebook_config = tiny(tmp_path, methods=("global",))  # what chapter 02 builds: one-shot only
    record(SweepStudy(notebook_config), rows[0])
    assert len(read_results(path)) == len(rows)


@pytest.mark.parametrize(
    ("method", "pattern", "ratio"), [("global", "", 0.9), ("nm", "2:4", 0.5), ("structured", "", 0.5)]
)
def test_run_experiment_returns_the_model_and_the_files_its_row_measured(
    tmp_path, mnist_small, method, pattern, ratio
):
    import torch

    from mnist_pruning.models import SAMPLE_SHAPE
    from mnist_pruning.runner import _accuracies, baseline
    from mnist_pruning.sparsity import count_parameters, flops, load_compact, sparsity
    from mnist_pruning.sweep import _ExperimentResult, run_experiment
    from mnist_pruning.train import evaluate

    config = tiny(tmp_path, methods=(method,))
    base, _ = baseline("mlp", mnist_small, config.baseline_config("mlp"), tmp_path / "runs", progress=False)
    acc = _accuracies(base, mnist_small)
    exp = Experiment("mlp", method, ratio, pattern)
    result = run_experiment(exp, base, mnist_small, config, acc, tmp_path / "files", progress=False)
    assert isinstance(result, _ExperimentResult)
    row, model = result.row, result.model
    PRUNING.check(row)  # exactly the schema's columns
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
    if method == "structured":  # surgery: a smaller dense model
        assert row["flops_dense"] < flops(base, SAMPLE_SHAPE)
    else:  # masks: the same architecture, fewer effective FLOPs
        assert row["flops_dense"] == flops(base, SAMPLE_SHAPE) > row["flops_effective"]
    assert float(row["acc_finetuned"]) == evaluate(model, mnist_small.test_x, mnist_small.test_y)["accuracy"]
    assert float(row["acc_val_finetuned"]) == evaluate(model, mnist_small.val_x, mnist_small.val_y)["accuracy"]
    assert float(row["acc_val_baseline"]) == evaluate(base, mnist_small.val_x, mnist_small.val_y)["accuracy"]
    assert tuple(x.shape[1:]) == SAMPLE_SHAPE


def test_record_appends_once_through_results_append_row(tmp_path, mnist_small):
    from mnist_pruning.runner import _record as record
    from mnist_pruning.sweep import SweepStudy

    config = tiny(tmp_path, methods=("l1",))
    path = run_sweep(config, progress=False, data=mnist_small)["mlp"]
    (row,) = read_results(path)
    assert record(SweepStudy(config), row) == path
    assert read_results(path) == [row]  # the same run again: skipped
    record(SweepStudy(config), {**row, "seed": "1"})  # another seed is another run
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


def test_rows_are_recorded_untimed_and_the_quiet_phase_times_each_once(tmp_path, mnist_small):
    from mnist_pruning.runner import run_study
    from mnist_pruning.sweep import SweepStudy, measure_latencies

    config = tiny(tmp_path, ratios=(0.9,), patterns=(), latency=True)
    path = run_study(SweepStudy(config), progress=False, data=mnist_small)["mlp"]
    assert [r["latency_b1_ms"] for r in read_results(path)] == ["", "", "", ""]  # nothing timed while training
    assert measure_latencies(config, progress=False) == 4
    rows = read_results(path)
    assert all(float(r[c]) > 0 for r in rows for c in ("latency_b1_ms", "baseline_latency_b256_ms"))
    assert measure_latencies(config, progress=False) == 0  # a rerun times no row twice
    assert read_results(path) == rows


def test_the_quiet_phase_times_the_saved_model(tmp_path, mnist_small):
    import torch

    from mnist_pruning.runner import _accuracies, baseline
    from mnist_pruning.sweep import _saved_model, run_experiment

    config = tiny(tmp_path, methods=("structured",))
    base, _ = baseline("mlp", mnist_small, config.baseline_config("mlp"), config.paths.runs, progress=False)
    exp = Experiment("mlp", "structured", 0.5)
    result = run_experiment(
        exp, base, mnist_small, config, _accuracies(base, mnist_small), config.paths.runs / "experiments", False
    )
    loaded = _saved_model(exp, config)
    x = mnist_small.test_x[:8].cpu()
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), result.model.eval()(x))


def test_sparse_columns_stay_empty_without_latency(tmp_path, mnist_small):
    config = tiny(tmp_path, methods=("global",), ratios=(0.9,))
    row = read_results(run_sweep(config, progress=False, data=mnist_small)["mlp"])[0]
    assert [row[c] for c in SPARSE_COLUMNS] == ["", "", "", ""]


# ------------------------------------------------------------------------------------------------ seeds


def test_a_config_without_seeds_runs_seed_0_and_a_single_seed_is_its_seed():
    assert SweepConfig().seeds == (0,) and SweepConfig().seed == 0
    assert SweepConfig(seed=3).seeds == (3,)
    assert SweepConfig(seeds=(4,)).seed == 4


def test_a_multi_seed_config_gives_each_seed_its_own_single_seed_config():
    config = SweepConfig(seeds=(2, 0, 1))
    assert config.seed is None
    assert [config.for_seed(s).seed for s in config.seeds] == [2, 0, 1]
    assert config.for_seed(1).baseline_config("mlp").seed == 1


def test_a_multi_seed_config_refuses_single_run_questions():
    with pytest.raises(ValueError, match=r"this run has seeds \[0, 1\]; take one with config.for_seed"):
        SweepConfig(seeds=(0, 1)).baseline_config("mlp")
    with pytest.raises(ValueError, match=r"seed 5 is not one of this run's seeds \[0, 1\]"):
        SweepConfig(seeds=(0, 1)).for_seed(5)


def strip_timings(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_each_seed_trains_its_own_baseline_and_adds_its_own_rows(tmp_path, mnist_small):
    config = tiny(tmp_path, methods=("global",), seeds=(0, 1))
    rows = read_results(run_sweep(config, progress=False, data=mnist_small)["mlp"])
    assert [r["seed"] for r in rows] == ["0", "1"]
    assert rows[0]["acc_baseline"] != rows[1]["acc_baseline"]
    assert (tmp_path / "runs" / "mlp_baseline.pt").is_file()
    assert (tmp_path / "runs" / "mlp_baseline_seed1.pt").is_file()


def test_a_seeds_rows_do_not_depend_on_the_other_seeds_of_the_sweep(tmp_path, mnist_small):
    both = read_results(
        run_sweep(tiny(tmp_path / "a", methods=("global",), seeds=(0, 1)), progress=False, data=mnist_small)["mlp"]
    )
    alone = read_results(
        run_sweep(tiny(tmp_path / "b", methods=("global",), seed=1), progress=False, data=mnist_small)["mlp"]
    )
    assert strip_timings([r for r in both if r["seed"] == "1"]) == strip_timings(alone)


def test_a_cached_baseline_of_another_seed_is_never_reused(tmp_path, mnist_small):
    from mnist_pruning.runner import _baseline_path, baseline
    from mnist_pruning.train import TrainConfig

    seed0 = TrainConfig(epochs=1, batch_size=256, seed=0)
    baseline("mlp", mnist_small, seed0, tmp_path, progress=False)
    # seed 1 written under seed 0's name: its recipe differs, so it is retrained and its own file written
    (tmp_path / "mlp_baseline.pt").rename(_baseline_path(tmp_path, "mlp", 1))
    _, payload = baseline("mlp", mnist_small, TrainConfig(epochs=1, batch_size=256, seed=1), tmp_path, False)
    assert payload["train_config"]["seed"] == 1
    assert load_seed(_baseline_path(tmp_path, "mlp", 1)) == 1


def load_seed(path):
    from mnist_pruning.train import _load_checkpoint

    return _load_checkpoint(path)[1]["train_config"]["seed"]


def test_experiment_files_are_unique_per_seed_and_budget(tmp_path):
    from mnist_pruning.sweep import _experiment_files

    exp = Experiment("mlp", "nm", 0.5, "2:4")
    names = {
        _experiment_files(exp, tmp_path, config)[1].name
        for config in (SweepConfig(seed=0), SweepConfig(seed=1), SweepConfig(seed=0, finetune_epochs=3))
    }
    assert len(names) == 3
    assert all(name.startswith("mlp_nm_2of4_seed") and name.endswith(".safetensors") for name in names)


def test_a_later_run_with_another_budget_keeps_the_earlier_rows_files(tmp_path, mnist_small):
    run_sweep(tiny(tmp_path, methods=("global",)), progress=False, data=mnist_small)
    (first,) = (tmp_path / "runs" / "experiments").glob("*.safetensors")
    before = first.read_bytes()
    run_sweep(tiny(tmp_path, methods=("global",), finetune_epochs=2), progress=False, data=mnist_small)
    assert len(list((tmp_path / "runs" / "experiments").glob("*.safetensors"))) == 2
    assert first.read_bytes() == before


# ------------------------------------------------------------------------------------- tasks and executors


def test_a_failed_experiment_keeps_the_others_rows_and_is_named(tmp_path, mnist_small, monkeypatch):
    from mnist_pruning import sweep
    from mnist_pruning.runner import SweepError

    real = sweep._prune

    def prune(model, exp):
        if exp.method == "nm":
            raise RuntimeError("boom")
        return real(model, exp)

    monkeypatch.setattr(sweep, "_prune", prune)
    config = tiny(tmp_path)
    with pytest.raises(SweepError, match=r"1 experiment\(s\) failed.*mlp nm 2:4 \(seed 0\): RuntimeError: boom"):
        run_sweep(config, progress=False, data=mnist_small)
    rows = read_results(PRUNING.csv(tmp_path / "results", "mlp"))
    assert [r["method"] for r in rows] == ["l1", "global", "structured"]


def test_in_process_each_row_is_recorded_before_the_next_experiment_starts(tmp_path, mnist_small, monkeypatch):
    from mnist_pruning import sweep

    real, rows_at_start = sweep._prune, []

    def prune(model, exp):
        rows_at_start.append(len(read_results(PRUNING.csv(tmp_path / "results", "mlp"))))
        return real(model, exp)

    monkeypatch.setattr(sweep, "_prune", prune)
    run_sweep(tiny(tmp_path), progress=False, data=mnist_small)
    assert rows_at_start == [0, 1, 2, 3]  # a killed sweep loses at most the experiment it was running


def test_preloaded_data_refuses_worker_processes(tmp_path, mnist_small):
    with pytest.raises(ValueError, match="data= runs the study in this process"):
        run_sweep(tiny(tmp_path), progress=False, data=mnist_small, workers=2)


def test_zero_workers_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="workers must be a positive integer, got 0"):
        run_sweep(tiny(tmp_path), progress=False, workers=0)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_worker_processes_give_the_in_process_rows(tmp_path, mnist_small):
    """Two spawned workers (1 torch thread each, MNIST loaded by each worker) against this process (1 thread,
    conftest): every measured value is bitwise equal, timings aside; rows arrive in completion order."""
    config = tiny(tmp_path / "pool", methods=("global", "nm"), seeds=(0, 1))
    pool = read_results(run_sweep(config, progress=False, workers=2)["mlp"])
    inline = read_results(
        run_sweep(tiny(tmp_path / "inline", methods=("global", "nm"), seeds=(0, 1)), progress=False, workers=1)[
            "mlp"
        ]
    )
    key = lambda r: (r["seed"], r["method"], r["pattern"])  # noqa: E731
    assert sorted(strip_timings(pool), key=key) == sorted(strip_timings(inline), key=key)
    assert len(pool) == 4  # global 0.5 and nm 2:4, two seeds
