import json

from mnist_pruning.fullrun import CHAPTER_PARAMETERS, execute_chapters


def test_every_chapter_has_full_run_parameters():
    from mnist_pruning.book import CHAPTERS

    assert list(CHAPTER_PARAMETERS) == [name for name, _ in CHAPTERS]


def test_execute_chapters_writes_an_executed_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_PRUNING_SMOKE", "1")
    seconds = execute_chapters(tmp_path, "tests/fixtures", {"05_compare": {}}, progress=False)
    assert set(seconds) == {"05_compare"}
    nb = json.loads((tmp_path / "05_compare.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] for c in code)
    assert any(o.get("output_type") == "display_data" for c in code for o in c["outputs"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
