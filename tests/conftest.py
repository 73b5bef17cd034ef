"""Shared fixtures. MNIST is loaded once per session, as a small class-balanced subset."""

import os
import shutil
from pathlib import Path

import pytest
import torch

# Parallel test workers on 2 cores fight over OpenMP threads (3-30x slowdowns); one thread each.
torch.set_num_threads(int(os.environ.get("MNIST_PRUNING_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def mnist_small():
    from mnist_pruning.data import load_mnist

    return load_mnist(subset=3000, test_subset=1000, val_size=1000)


@pytest.fixture
def fixture_results(tmp_path):
    """A writable copy of the fixture CSVs (tests/fixtures) in tmp_path/results."""
    out = tmp_path / "results"
    out.mkdir()
    for model in ("mlp", "cnn"):
        shutil.copy(Path(__file__).parent / "fixtures" / f"{model}_pruning_results.csv", out)
    return out
