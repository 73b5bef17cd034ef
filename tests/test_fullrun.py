import json
import os

import pytest

from mnist_pruning.fullrun import CHAPTER_PARAMETERS, execute_chapters


def test_every_chapter_has_full_run_parameters():
    from mnist_pruning.book import CHAPTERS

    assert list(CHAPTER_PARAMETERS) == [name for name, _ in CHAPTERS]


def test_execute_chapters_writes_an_executed_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_PRUNING_SMOKE", "1")
    monkeypatch.setenv("TQDM_DISABLE", "0")  # the user's own setting
    seconds = execute_chapters(tmp_path, "tests/fixtures", {"05_compare": {}}, progress=False)
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
        execute_chapters(tmp_path, "tests/fixtures", {"no_such_chapter": {}}, progress=False)
    assert "TQDM_DISABLE" not in os.environ


def test_run_json_records_the_seeds_and_where_the_sweep_ran(tmp_path, monkeypatch):
    from mnist_pruning import fullrun
    from mnist_pruning.sweep import SweepConfig

    ran = {}
    monkeypatch.setattr(fullrun, "run_sweep", lambda config, progress, executor: ran.update(executor=executor))
    monkeypatch.setattr(fullrun, "execute_chapters", lambda *args, **kwargs: {})
    config = SweepConfig(seeds=(0, 1, 2), results_dir=str(tmp_path), out_dir=str(tmp_path / "runs"))
    record = fullrun.full_run(config, progress=False, book=False, workers=1)
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["sweep"]["seeds"] == [0, 1, 2] and saved["sweep"]["workers"] == 1
    assert saved["settings"]["sweep"]["seeds"] == [0, 1, 2]
    assert saved == json.loads(json.dumps(record))
