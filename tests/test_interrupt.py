"""A sweep killed with SIGKILL mid-run and started again finishes with every experiment exactly once, whether it
ran in one process or on worker processes (which exit with their killed parent)."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnist_pruning.results import PRUNING, read_results
from mnist_pruning.sparsity import load_compact
from mnist_pruning.train import _load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def sweep_cmd(tmp_path: Path, workers: str) -> list[str]:
    return [
        sys.executable, "-m", "mnist_pruning.cli", "sweep", "--models", "mlp",
        "--methods", "l1", "global", "nm", "structured", "--ratios", "0.5", "0.9", "--patterns", "2:4",
        "--finetune-epochs", "1", "--baseline-epochs", "1", "--subset", "2000", "--no-latency",
        "--out-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"), "--workers", workers,
    ]  # fmt: skip


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sweep_killed_mid_run_resumes_without_duplicates_or_half_files(tmp_path, workers):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    csv_path = tmp_path / "results" / "mlp_pruning_results.csv"
    proc = subprocess.Popen(
        sweep_cmd(tmp_path, workers), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if csv_path.exists() and len(read_results(csv_path)) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(read_results(csv_path))
    assert 2 <= done_before < 8

    subprocess.run(sweep_cmd(tmp_path, workers), cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)

    rows = read_results(csv_path)
    keys = [(r["method"], r["pattern"], r["ratio"]) for r in rows]
    assert len(keys) == len(set(keys)) == 8  # l1, global, structured x 2 ratios + nm 2:4 and 1:10
    with open(csv_path, newline="") as f:
        lines = list(csv.reader(f))
    assert all(len(line) == len(PRUNING.columns) for line in lines)
    # every file a reader would pick up is whole; interrupted writes leave only hidden .tmp files
    _load_checkpoint(tmp_path / "runs" / "mlp_baseline.pt")
    compact = sorted((tmp_path / "runs" / "experiments").glob("*.safetensors"))
    assert len(compact) == 8
    for path in compact:
        load_compact(path)
