import json
import os

import pytest

from mnist_pruning.fullrun import _CHAPTER_PARAMETERS, _execute_chapters


def test_every_chapter_has_full_run_parameters():
    from mnist_pruning.book import _CHAPTERS

    assert list(_CHAPTER_PARAMETERS) == [name for name, _ in _CHAPTERS]


def test_execute_chapters_writes_an_executed_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_PRUNING_SMOKE", "1")
    monkeypatch.setenv("TQDM_DISABLE", "0")  # the user's own setting
    seconds = _execute_chapters(tmp_path, "tests/fixtures", {"05_compare": {}}, progress=False)
    assert set(seconds) == {"05_compare"}
    nb = json.loads((tmp_path / "05_compare.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] for c in code)
    assert any(o.get("output_type") == "display_data" for c in code for o in c["outputs"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert os.environ["TQDM_DISABLE"] == "0"  # bars were off for the chapters only


def test_execute_chapters_restores_an_unset_tqdm_disable_even_when_a_chapter_fails(tmp_path, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    with pytest.raises(Exception, match="no_such_chapter"):
        _execute_chapters(tmp_path, "tests/fixtures", {"no_such_chapter": {}}, progress=False)
    assert "TQDM_DISABLE" not in os.environ


def test_run_json_records_the_seeds_and_where_the_sweep_ran(tmp_path, monkeypatch):
    from mnist_pruning import fullrun
    from mnist_pruning.sweep import SweepConfig

    ran = {}
    monkeypatch.setattr(fullrun, "run_sweep", lambda config, progress, executor: ran.update(executor=executor))
    monkeypatch.setattr(fullrun, "_execute_chapters", lambda *args, **kwargs: {})
    compressed = []
    monkeypatch.setattr(fullrun, "run_compression_sweep", lambda c, **kwargs: compressed.extend(c.seeds))
    config = SweepConfig(seeds=(0, 1, 2), results_dir=str(tmp_path), out_dir=str(tmp_path / "runs"))
    record = fullrun.full_run(config, progress=False, book=False, workers=1)
    assert compressed == [0, 1, 2]  # the compression grid runs every seed too
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["sweep"]["seeds"] == [0, 1, 2] and saved["sweep"]["workers"] == 1
    assert saved["settings"]["sweep"]["seeds"] == [0, 1, 2]
    assert saved == json.loads(json.dumps(record))


def test_sweep_time_adds_up_the_saved_training_seconds(tmp_path):
    import shutil

    import pandas as pd

    from mnist_pruning.fullrun import _sweep_time
    from mnist_pruning.models import build_model
    from mnist_pruning.runner import _baseline_path
    from mnist_pruning.sweep import SweepConfig
    from mnist_pruning.train import _save_checkpoint

    for name in ("mlp_pruning_results.csv", "cnn_pruning_results.csv"):
        shutil.copy(f"tests/fixtures/{name}", tmp_path / name)
    runs = tmp_path / "runs"
    runs.mkdir()
    history = [{"seconds": 4.0}, {"seconds": 9.5}]  # cumulative, as fine_tune writes it
    _save_checkpoint(_baseline_path(runs, "mlp", 0), build_model("mlp"), history=history)
    config = SweepConfig(models=("mlp", "cnn"), seeds=(0,), results_dir=str(tmp_path), out_dir=str(runs))
    got = _sweep_time(config, wall_seconds=1000.0, workers=2)
    rows = pd.read_csv(tmp_path / "mlp_pruning_results.csv")
    expected_mlp = rows.groupby("schedule")["finetune_seconds"].sum()
    assert got["baseline_training"] == {"mlp": 9.5, "cnn": 0.0}  # the cnn baseline is not there
    assert got["experiment_training"]["mlp"] == pytest.approx(expected_mlp.to_dict(), abs=0.1)
    assert got["worker_seconds"] == 2000.0
    assert got["other"] == pytest.approx(2000.0 - got["training_total"], abs=0.1)
