"""The runner, the schema objects and the compression sub-package changed no number: a small sweep and
compression grid write the rows the code before them wrote (tests/fixtures/rows_before_runner), timings aside.

The fixture was made on a CPU with native bf16 (AVX-512 BF16) with torch 2.14.1; float rounding differs on other
CPUs and versions, so elsewhere the test skips and says why.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from mnist_pruning.compress import run_compression_sweep
from mnist_pruning.compress.grid import _compress_config_of as compress_config_of
from mnist_pruning.sweep import SweepConfig, run_sweep

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "rows_before_runner"
MADE_WITH = json.loads((FIXTURE / "made_with.json").read_text())
# Wall times; the sizes zstd / lzma give the torch.save file (it holds a random serialization id) and the compact
# file; the columns added since; and the compression grid's validation accuracy, which now uses the sweep's
# validation subset (1,000 images here) instead of all 5,000.
NOT_COMPARED = {
    "finetune_seconds",
    "seconds",
    "prune_seconds",
    "dense_zstd_bytes",
    "dense_lzma_bytes",
    "compact_zstd_bytes",
    "compact_lzma_bytes",
    "recipe",
    "acc_val",
}

HERE = (torch.backends.cpu.get_cpu_capability(), torch.__version__)
pytestmark = pytest.mark.skipif(
    HERE != (MADE_WITH["cpu_capability"], MADE_WITH["torch"]),
    reason=f"the fixture rows were computed with {MADE_WITH['cpu_capability']} and torch {MADE_WITH['torch']}",
)


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in NOT_COMPARED} for r in csv.DictReader(f)]


def test_a_small_sweep_and_grid_write_the_rows_they_wrote_before(tmp_path):
    config = SweepConfig(
        models=("mlp", "cnn"),
        ratios=(0.5, 0.9),
        patterns=("2:4",),
        schedules=("oneshot", "gradual", "lottery"),
        frontier_ratios=(0.9,),
        subset=2000,
        test_subset=1000,
        val_subset=1000,
        finetune_epochs=1,
        frontier_epochs=1,
        lottery_epochs=1,
        lottery_rounds=2,
        baseline_epochs={"mlp": 1, "cnn": 1},
        latency=False,
        precision=MADE_WITH["precision"],
        out_dir=str(tmp_path / "runs"),
        results_dir=str(tmp_path / "results"),
    )
    run_sweep(config, progress=False, workers=1)
    grid = compress_config_of(
        config,
        sparsities={"mlp": (0.9,), "cnn": (0.9,)},
        bits={"mlp": ((8, 3),), "cnn": ((8, 4),)},
        prune_epochs={"mlp": 1, "cnn": 1},
        centroid_epochs={"mlp": 1, "cnn": 1},
    )
    run_compression_sweep(grid, progress=False, workers=1)
    for name in ("mlp_pruning_results.csv", "cnn_pruning_results.csv", "compression_results.csv"):
        assert rows(tmp_path / "results" / name) == rows(FIXTURE / name), name
