"""The user's papermill commands, end to end, in the smoke configuration (MNIST_PRUNING_SMOKE=1)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))


def papermill(notebook: str, out: Path, *params: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MNIST_PRUNING_SMOKE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / notebook), str(out), "--no-progress-bar"]
    for p in params:
        cmd += p.split(" ", 2)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_prune_notebook_runs_with_the_readme_command(tmp_path):
    out = tmp_path / "out.ipynb"
    proc = papermill("02_prune.ipynb", out, "-p ratio 0.9")
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert "measured sparsity over all prunable weights: 0.9000" in text
    assert "mlp_pruning_results.csv" in text


@pytest.mark.parametrize(
    ("notebook", "param", "message"),
    [
        ("02_prune.ipynb", "-p ratio 1.5", r"ratio must be in [0, 1)"),
        ("02_prune.ipynb", "-p method magnitude", "unknown method 'magnitude'"),
        ("02_prune.ipynb", "-p finetune_epochs 0", "finetune_epochs must be a positive integer, got 0"),
        ("02_prune.ipynb", "-p schedule slow", "unknown schedule 'slow'"),
        ("03_structured.ipynb", "-p model resnet", "unknown model 'resnet'"),
        ("04_nm.ipynb", "-p n 4", "n must be an integer with 1 <= n < m"),
        ("01_baseline.ipynb", "-p epochs -1", "epochs must be a positive integer, got -1"),
        ("07_compress.ipynb", "-p bits_fc 17", "bits_fc must be an integer in 1..16"),
        ("07_compress.ipynb", "-p sparsity 1.0", "sparsity must be in [0, 1)"),
    ],
)
def test_bad_parameter_fails_in_the_first_cells_before_any_training(tmp_path, notebook, param, message):
    out = tmp_path / "out.ipynb"
    start = time.perf_counter()
    proc = papermill(notebook, out, param)
    assert proc.returncode != 0
    assert message in proc.stderr
    executed = json.loads(out.read_text())
    ran = [c for c in executed["cells"] if c["cell_type"] == "code" and c.get("execution_count")]
    # install cell, injected parameters, defaults, and the setup cell that raised: nothing after it ran
    assert len(ran) <= 4
    assert time.perf_counter() - start < 120


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_has_one_annotated_parameters_cell_and_a_colab_badge(path):
    nb = json.loads(path.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    lines = [ln for ln in "".join(tagged[0]["source"]).splitlines() if ln.strip()]
    assert lines and all("  # " in ln for ln in lines), "every parameter carries a comment"
    first = "".join(nb["cells"][0]["source"])
    assert nb["cells"][0]["cell_type"] == "markdown" and "colab.research.google.com" in first
    assert "**Question.**" in first


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_figure_cell_ends_with_show_not_a_semicolon(path):
    # Every figure comes from mnist_pruning.plots (one home for plots), so a cell calling it draws a figure.
    nb = json.loads(path.read_text())
    figure_cells = [
        "".join(c["source"]).rstrip()
        for c in nb["cells"]
        if c["cell_type"] == "code" and "plots." in "".join(c["source"])
    ]
    assert figure_cells, f"{path.name} draws no figure through mnist_pruning.plots"
    for src in figure_cells:
        assert not src.endswith(";")
        assert "plt.show()" in src, src[-200:]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_import_no_plotting_library_but_pyplot(path):
    # Figures are drawn in the package; a chapter only shows them.
    nb = json.loads(path.read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "plt.subplots" not in code and "plt.figure(" not in code


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_source_notebooks_store_outputs_only_where_nbval_checks_them(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] != "code" or "".join(cell["source"]).lstrip().startswith("# NBVAL_CHECK_OUTPUT"):
            continue
        assert cell.get("outputs") == [] and cell.get("execution_count") is None, "".join(cell["source"])[:120]
