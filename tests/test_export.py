"""ONNX export (mnist_pruning.export): what onnxruntime computes, and what the files hold."""

import pytest
import torch

from mnist_pruning import export
from mnist_pruning import sparsity as sp
from mnist_pruning.models import build_model
from mnist_pruning.speed import Timing

for _name in export._ONNX_PACKAGES:  # export imports them only when used
    pytest.importorskip(_name)

QUICK = Timing(rounds=1, min_run_time=0.01, batches=(1, 8))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    torch.manual_seed(0)
    dense = build_model("mlp").eval()
    pruned = build_model("mlp").eval()
    pruned.load_state_dict(dense.state_dict())
    sp.sparsify_(pruned, "global", 0.9)
    sp.bake_in(pruned)
    small = sp.shrink(dense, 0.5).eval()
    models = {"dense": dense, "unstructured 0.9": pruned, "structured 0.5": small}
    folder = tmp_path_factory.mktemp("onnx")
    table = export.onnx_report(models, folder, QUICK)
    return models, table, folder


def test_onnxruntime_outputs_match_pytorch_for_every_batch_size(tmp_path):
    model = build_model("cnn").eval()
    session = export._ort_session(export.export_onnx(model, tmp_path / "cnn.onnx"))
    for batch in (1, 5, 64):
        x = torch.randn(batch, 1, 28, 28)
        with torch.inference_mode():
            expected = model(x)
        got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_an_unstructured_file_stores_its_zeros_dense(report):
    models, table, _ = report
    zeros = sum(int((p == 0).sum()) for p in models["unstructured 0.9"].parameters())
    assert table.loc["unstructured 0.9", "floats"] == table.loc["dense", "floats"]
    assert table.loc["unstructured 0.9", "zero_pct"] == pytest.approx(100 * zeros / table.loc["dense", "floats"])
    assert table.loc["unstructured 0.9", "bytes"] >= 0.99 * table.loc["dense", "bytes"]
    assert table.loc["unstructured 0.9", "zlib_bytes"] < 0.5 * table.loc["dense", "zlib_bytes"]


def test_a_structured_file_is_smaller(report):
    models, table, _ = report
    params = sum(p.numel() for p in models["structured 0.5"].parameters())
    assert table.loc["structured 0.5", "floats"] == params
    assert table.loc["structured 0.5", "bytes"] < 0.5 * table.loc["dense", "bytes"]


def test_the_report_times_both_runtimes_at_every_batch_and_nothing_else(report):
    _, table, _ = report
    timed = sorted(c for c in table.columns if c.endswith("_ms"))
    assert timed == ["eager_b1_ms", "eager_b8_ms", "ort_b1_ms", "ort_b8_ms"]
    assert table[timed].notna().all().all()


def test_the_reported_bytes_are_the_sizes_of_the_files_written(report):
    models, table, folder = report
    for name in models:
        assert table.loc[name, "bytes"] == (folder / f"{name.replace(' ', '_')}.onnx").stat().st_size


def test_a_model_with_masks_attached_is_refused_naming_the_layer(tmp_path):
    model = build_model("mlp")
    sp.sparsify_(model, "global", 0.5)
    with pytest.raises(ValueError, match="fc1.*bake_in"):
        export.export_onnx(model, tmp_path / "masked.onnx")
    assert not (tmp_path / "masked.onnx").exists()
