"""Smoke tests for the benchmark scripts: they run end to end at their smallest settings and print their tables.

Speed targets are deliberately not asserted: they depend on the machine and on whatever else it runs, and live
only in the scripts' PASS/FAIL output. bench/ is not a package, so each script is imported from its file path.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def load_bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(module)
    return module


def test_train_speed_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from mnist_pruning.data import _MNIST_FILES, _raw_dir

    # Never fetch from a smoke test (load_mnist would); the data tests cover fetching and checksums.
    if not all((_raw_dir() / name).is_file() for name in _MNIST_FILES):
        pytest.skip(f"MNIST files not in {_raw_dir()}")
    bench = load_bench("train_speed")
    rc = bench.main(
        [
            "--batches",
            "2",
            "--rounds",
            "1",
            "--threads",
            "1",
            "--min-run-time",
            "0.01",
            "--mm-size",
            "64",
            "--peer-batches",
            "2",
            "--peer-eval",
            "500",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0  # without --strict the exit status never depends on the speed goals
    assert "1 torch thread(s)" in out
    assert re.search(r"^pipeline\s+s/epoch\s+steps/s\s+setup s$", out, re.M), out
    speedup = re.search(
        rf"speedup \(DataLoader / preloaded epoch time\): {NUMBER}x\s+GOAL >= 8x: (PASS|FAIL)", out
    )
    assert speedup and float(speedup.group(1)) > 0, out
    fraction = re.search(rf"fraction \(CNN training / torch\.mm\): {NUMBER}%\s+GOAL >= 40%: (PASS|FAIL)", out)
    assert fraction and float(fraction.group(1)) > 0, out
    assert re.search(r"GOAL >= 2x: (PASS|FAIL|NOT MEASURED)", out), out  # bf16: measured only where native
    masked = re.search(rf"masked / unmasked epoch: {NUMBER}x\s+GOAL <= 1.15x: (PASS|FAIL)", out)
    assert masked and float(masked.group(1)) > 0, out
    assert re.search(r"precision (bf16|fp32) \(CPU capability \w+", out), out  # part (e) says what it trained in
    epoch = re.search(rf"fine_tune epoch \(validation included\) / unmasked training steps: {NUMBER}x\s+GOAL", out)
    assert epoch and float(epoch.group(1)) > 0, out
    for arch, goal in (("mlp", "8"), ("cnn", "2.5")):
        peer = re.search(rf"{arch}: package {NUMBER} s, hand-written {NUMBER} s: {NUMBER}x\s+GOAL >= {goal}x", out)
        assert peer and float(peer.group(3)) > 0, out


def test_structured_speed_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench("structured_speed")
    argv = ["--ratios", "0.5", "--rounds", "1", "--threads", "1", "--min-run-time", "0.01", "--batch", "16"]
    rc = bench.main(argv)
    out = capsys.readouterr().out
    assert rc == 0
    assert "1 torch thread(s)" in out
    assert "memory format" in out and "using " in out  # the CNN's format check ran and named its choice
    headers = re.findall(r"^ratio\s+widths\s+params\s+bytes\s+MFLOP/img\s+FLOP red\b.*x/FLOPred", out, re.M)
    assert len(headers) == 2, out  # one table per model
    rows = re.findall(rf"^\s*0\.50 \(.*\)\s.*\s{NUMBER}\s+(PASS|FAIL)$", out, re.M)
    assert len(rows) == 2 and all(float(r[0]) > 0 for r in rows), out
    assert re.search(r"^\d+/2 rows meet the goal$", out, re.M), out


def test_compact_size_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench("compact_size")
    rc = bench.main([])
    out = capsys.readouterr().out
    assert rc == 0, out  # random init: every compact file is bitwise lossless and within 1.15x of the limit
    assert out.count("sparsity    dense B") == 2, out  # one table per model
    rows = re.findall(rf"^\s+(0\.\d\d)\s+[\d,]+\s+[\d,]+\s+[\d,]+\s+{NUMBER}\s+{NUMBER}\s+yes\s", out, re.M)
    assert [r[0] for r in rows] == ["0.30", "0.50", "0.70", "0.90", "0.99"] * 2, out
    assert "all within the limit" in out


def test_nm_speed_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench("nm_speed")
    bench.main(["--threads", "1", "--batch", "4", "--min-run-time", "0.01", "--rounds", "1", "--gpu-size", "256"])
    out = capsys.readouterr().out
    rows = re.findall(rf"^(mlp\.fc1|cnn\.fc1|square) .*\s{NUMBER}\s+{NUMBER}\s+{NUMBER}$", out, re.M)
    assert [r[0] for r in rows] == ["mlp.fc1", "cnn.fc1", "square"], out
    assert "No CPU N:M kernel" in out
    assert "GPU semi-structured 2:4 matmul: skipped" in out or "2:4 semi-structured" in out


def test_sparse_speed_smoke(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bench = load_bench("sparse_speed")
    argv = [
        "--smoke",
        "--no-onnx",
        "--threads",
        "1",
        "--batch",
        "16",
        "--runs",
        str(tmp_path),
        "--out",
        str(tmp_path),
    ]
    rc = bench.main(argv)
    out = capsys.readouterr().out
    assert rc == 0
    assert "1 torch thread(s)" in out
    assert out.count("random init (no ") == 2  # no baseline in --runs: both models say so
    assert "memory format for every variant: " in out  # the CNN's format check ran and named its choice
    rows = re.findall(
        rf"^\s+0\.1\s+[\d,]+\s+{NUMBER}\s+[\d,]+(?:\s+{NUMBER}){{10}}\s+b1: .* \| b16: .*$", out, re.M
    )
    assert len(rows) == 2, out  # one row per model at the one smoke density
    wins = r"^  cnn b16: converted >= 1\.1x dense at kept .*; structured fastest at kept .*$"
    assert re.search(wins, out, re.M), out  # the crossover map in words
    assert re.search(
        rf"^  mlp global 0\.9, b16: converted vs dense\s+{NUMBER}x\s+goal >= 1\.8x\s+(PASS|FAIL)", out, re.M
    )
    assert re.search(r"^  cnn global 0\.99, b16: .* n/a: not run", out, re.M), out
    slower = r"no converted model with sparse layers slower\s+[\d.]+x\s+goal >= 0\.95x\s+(PASS|FAIL)"
    assert re.search(rf"^  (dense fallbacks \(same computation as dense\)\s+\d+ rows|{slower})", out, re.M), out
    csv = (tmp_path / "sparse_crossover.csv").read_text().splitlines()
    assert len(csv) == 1 + 2 * 2 * 4  # header + model x batch x variant
    assert (tmp_path / "sparse_crossover.png").stat().st_size > 0


def test_sparse_speed_onnx_smoke(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from mnist_pruning.export import _ONNX_PACKAGES

    for name in _ONNX_PACKAGES:
        pytest.importorskip(name)
    bench = load_bench("sparse_speed")
    argv = ["--smoke", "--models", "mlp", "--threads", "1", "--batch", "16", "--runs", str(tmp_path)]
    rc = bench.main([*argv, "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    # The exported graph ran in onnxruntime and matched PyTorch (the bench raises otherwise); bytes were counted.
    row = re.search(r"^\s+dense\s+(\d+)\s+(\d+)\s+266610\s+0\.000\s", out, re.M)
    assert row and int(row.group(1)) > 4 * 266_610, out  # float32 weights, stored dense
