"""The sweep on Dask distributed (the optional ``dask`` extra): a real LocalCluster gives the in-process rows, and
a scheduler that cannot be used is refused before any training."""

import shutil
from pathlib import Path

import pytest

from mnist_pruning import parallel
from mnist_pruning.results import read_results
from mnist_pruning.sweep import SweepConfig, run_sweep

distributed = pytest.importorskip("distributed")

TIMING = {
    "finetune_seconds",
    "latency_b1_ms",
    "latency_b256_ms",
    "baseline_latency_b1_ms",
    "baseline_latency_b256_ms",
}
UNREACHABLE = "tcp://127.0.0.1:9"  # the discard port: nothing listens there


def smoke(folder: Path) -> SweepConfig:
    """Both seeds' baselines and two experiments each: a few seconds of training."""
    return SweepConfig(
        models=("mlp",),
        methods=("global", "nm"),
        ratios=(0.5,),
        patterns=("2:4",),
        seeds=(0, 1),
        finetune_epochs=1,
        baseline_epochs={"mlp": 1},
        subset=3000,
        test_subset=1000,
        out_dir=str(folder / "runs"),
        results_dir=str(folder / "results"),
        latency=False,
    )


def measured(rows: list[dict]) -> list[dict]:
    """Rows without their timings, in a fixed order (workers finish in any order)."""
    stripped = [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
    return sorted(stripped, key=lambda r: (r["seed"], r["method"], r["pattern"], r["ratio"]))


@pytest.mark.slow
def test_a_local_cluster_gives_the_in_process_rows(tmp_path):
    """Two worker processes with one thread each (this process runs one thread too: conftest), so every measured
    value - accuracy, sparsity, parameters, bytes, FLOPs - is bitwise the same."""
    # workers=1: in this process, MNIST loaded per seed as the workers load it (data= would share one subset)
    inline = read_results(run_sweep(smoke(tmp_path / "inline"), progress=False, workers=1)["mlp"])
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        parallel._sweep_executor(scheduler=cluster.scheduler_address) as executor,
    ):
        csvs = run_sweep(smoke(tmp_path / "cluster"), progress=False, executor=executor)
    rows = read_results(csvs["mlp"])
    assert len(rows) == 4
    assert measured(rows) == measured(inline)


def test_an_unreachable_scheduler_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match=r"cannot reach the Dask scheduler at 'tcp://127.0.0.1:9' within 1 s"):
        parallel._connect(UNREACHABLE, timeout=1)


def test_the_sweep_command_refuses_an_unreachable_scheduler_before_any_work(tmp_path, monkeypatch, capsys):
    from mnist_pruning.cli import main

    monkeypatch.setattr(parallel, "_CONNECT_TIMEOUT_S", 1.0)
    results = tmp_path / "results"
    results.mkdir()
    fixture = Path(__file__).resolve().parent / "fixtures" / "mlp_pruning_results.csv"
    shutil.copy(fixture, results)
    argv = ["sweep", "--models", "mlp", "--scheduler", UNREACHABLE, "--out-dir", str(tmp_path / "runs")]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--results-dir", str(results), "--subset", "100"])
    assert exc.value.code == 2
    assert "cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'" in capsys.readouterr().err
    assert (results / fixture.name).read_bytes() == fixture.read_bytes()
    assert sorted(p.name for p in results.iterdir()) == [fixture.name]
    assert not (tmp_path / "runs").exists()


def test_a_cluster_whose_workers_run_several_threads_is_refused():
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        pytest.raises(ValueError, match=r"must run one thread each \(start them with --nthreads 1"),
    ):
        parallel._connect(cluster.scheduler_address, timeout=5)
