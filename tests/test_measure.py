"""Measured metrics: sparsity counts zeros exactly, FLOPs match hand formulas, latency is a real number."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils import prune

from mnist_pruning.metrics import (
    effective_flops,
    flops,
    latency_ms,
    layer_flops,
    layer_sparsity,
    model_report,
    sparsity,
)
from mnist_pruning.models import ModelConfig, build_model, count_parameters, prunable_layers

MLP_FLOPS = 2 * (784 * 300 + 300 * 100 + 100 * 10)
CNN_FLOPS = 2 * (24 * 24 * 20 * 25 + 8 * 8 * 50 * 20 * 25 + 800 * 500 + 500 * 10)


def hand_zeroed_mlp() -> torch.nn.Module:
    """MLP with known zeros: 1000 in fc1.weight, 50 in fc3.weight, and zeroed biases that must not count."""
    torch.manual_seed(0)
    model = build_model("mlp")
    with torch.no_grad():
        for _, m in prunable_layers(model):  # random init has no exact zeros, but make sure
            m.weight.add_(torch.where(m.weight == 0, 1.0, 0.0))
        model.fc1.weight.view(-1)[:1000] = 0.0
        model.fc3.weight.view(-1)[-50:] = 0.0
        model.fc2.bias.zero_()
    return model


def test_sparsity_is_exact_on_hand_zeroed_model_and_excludes_biases() -> None:
    model = hand_zeroed_mlp()
    assert sparsity(model) == pytest.approx(1050 / (784 * 300 + 300 * 100 + 100 * 10), abs=1e-15)


def test_layer_sparsity_has_one_exact_row_per_prunable_layer() -> None:
    table = layer_sparsity(hand_zeroed_mlp())
    assert list(table.columns) == ["layer", "shape", "params", "nonzero", "sparsity"]
    assert table["layer"].tolist() == ["fc1", "fc2", "fc3"]
    assert table["shape"].tolist() == [(300, 784), (100, 300), (10, 100)]
    assert table["params"].tolist() == [235200, 30000, 1000]
    assert table["nonzero"].tolist() == [235200 - 1000, 30000, 1000 - 50]
    assert table["sparsity"].tolist() == pytest.approx([1000 / 235200, 0.0, 0.05])


def test_sparsity_reads_masks_even_when_weight_attribute_is_stale() -> None:
    torch.manual_seed(0)
    model = build_model("mlp")
    prune.l1_unstructured(model.fc2, "weight", amount=0.5)
    with torch.no_grad():
        model.fc2.weight_mask.zero_()  # no forward since: model.fc2.weight still shows the old mask
    assert layer_sparsity(model).set_index("layer").loc["fc2", "nonzero"] == 0


def test_dense_mlp_flops_match_hand_formula() -> None:
    assert flops(build_model("mlp")) == MLP_FLOPS == 2 * 266200


def test_dense_cnn_flops_match_hand_formula() -> None:
    assert flops(build_model("cnn")) == CNN_FLOPS


def test_flops_are_per_sample_whatever_the_batch() -> None:
    assert flops(build_model("mlp"), input_shape=(4, 1, 28, 28)) == MLP_FLOPS


def test_layer_flops_sum_to_total() -> None:
    model = build_model("cnn")
    per_layer = layer_flops(model)
    assert per_layer == {
        "conv1": 2 * 24 * 24 * 20 * 25,
        "conv2": 2 * 8 * 8 * 50 * 20 * 25,
        "fc1": 2 * 800 * 500,
        "fc2": 2 * 500 * 10,
    }
    assert sum(per_layer.values()) == flops(model)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_dense_flops_ignore_zeros_and_effective_flops_scale_with_layer_density(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch)
    dense = flops(model)
    assert effective_flops(model) == dense
    for i, (_, m) in enumerate(prunable_layers(model)):
        prune.l1_unstructured(m, "weight", amount=[0.5, 0.9, 0.0, 0.75][i])
    per_layer = layer_flops(model)
    density = {r.layer: r.nonzero / r.params for r in layer_sparsity(model).itertuples()}
    assert flops(model) == dense
    assert effective_flops(model) == round(sum(per_layer[k] * density[k] for k in per_layer))
    assert effective_flops(model) < dense


def test_flops_of_narrower_models_fall_accordingly() -> None:
    assert flops(build_model(ModelConfig("mlp", (120, 40)))) == 2 * (784 * 120 + 120 * 40 + 40 * 10)
    assert flops(build_model(ModelConfig("cnn", (10, 25, 200)))) == 2 * (
        24 * 24 * 10 * 25 + 8 * 8 * 25 * 10 * 25 + 400 * 200 + 200 * 10
    )


def test_latency_is_positive_and_finite_and_leaves_mode_alone() -> None:
    torch.manual_seed(0)
    model = build_model("mlp").train()
    ms = latency_ms(model, batch_size=8, min_run_time=0.01)
    assert math.isfinite(ms) and ms > 0
    assert model.training


def test_model_report_has_the_csv_fields() -> None:
    torch.manual_seed(0)
    model = build_model("mlp")
    prune.l1_unstructured(model.fc1, "weight", amount=0.5)
    report = model_report(model)
    assert set(report) == {"params_total", "params_nonzero", "sparsity", "flops_dense", "flops_effective"}
    assert report["params_total"] == count_parameters(model) == 266610
    assert report["params_nonzero"] == 266610 - 117600
    assert report["sparsity"] == pytest.approx(117600 / 266200)
    assert report["flops_dense"] == MLP_FLOPS
    assert report["flops_effective"] == MLP_FLOPS - 2 * 117600


def test_latency_on_explicit_device_leaves_model_where_it_is() -> None:
    model = build_model("mlp")
    assert latency_ms(model, batch_size=2, device="cpu", min_run_time=0.01) > 0
    assert next(model.parameters()).device.type == "cpu"
