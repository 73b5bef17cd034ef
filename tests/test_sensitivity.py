"""Invariants of mnist_pruning.sensitivity: per-layer scans and the ratios chosen from them.

Scans run on a narrow LeNet-300-100 (16-8 hidden units) and 500 images of the small MNIST subset, in seconds.
"""

import copy
import re

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from tiny import n_weights, tiny_model

from mnist_pruning.plots import plot_sensitivity
from mnist_pruning.sensitivity import (
    _SENSITIVITY_RATIOS,
    one_shot_layers,
    ratios_from_sensitivity,
    sensitivity_scan,
)
from mnist_pruning.sparsity.measure import effective_weight, prunable_layers, sparsity
from mnist_pruning.sparsity.unstructured import sparsify_
from mnist_pruning.train import TrainConfig


def test_sensitivity_scan_has_a_row_per_layer_and_ratio_and_ratio_zero_drops_nothing(mnist_small):
    ratios = (0.0, 0.5, 0.9)
    df = sensitivity_scan(tiny_model(), mnist_small, ratios, max_samples=500)
    assert len(df) == 3 * len(ratios)
    assert list(df.columns) == ["layer", "params", "ratio", "accuracy", "accuracy_drop"]
    assert list(df["layer"].unique()) == ["fc1", "fc2", "fc3"]
    assert (df.loc[df["ratio"] == 0, "accuracy_drop"] == 0).all()
    assert df.attrs["epochs"] == 0 and df.attrs["samples"] == 500
    fig = plot_sensitivity(df)
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 3 + 1  # one per layer + the unpruned line


def test_ratios_from_sensitivity_reach_the_target_overall_sparsity(mnist_small):
    model = tiny_model()
    df = sensitivity_scan(model, mnist_small, (0.0, 0.5, 0.8, 0.95), max_samples=500)
    ratios = ratios_from_sensitivity(df, model, 0.9)
    overall = sum(r * m.weight.numel() for (_, m), r in zip(prunable_layers(model), ratios.values(), strict=True))
    assert overall / n_weights(model) == pytest.approx(0.9, abs=1e-6)
    pruned = sparsify_(copy.deepcopy(model), "l1", ratios)
    assert abs(sparsity(pruned) - 0.9) <= len(ratios) / n_weights(model)


def test_less_sensitive_layers_are_pruned_harder():
    drop = {"a": [0.0, 0.0, 0.01, 0.05], "b": [0.0, 0.02, 0.2, 0.5], "c": [0.0, 0.02, 0.2, 0.5]}
    rows = [
        {"layer": layer, "ratio": r, "accuracy": 0.9 - d, "accuracy_drop": d}
        for layer, drops in drop.items()
        for r, d in zip((0.0, 0.5, 0.8, 0.95), drops, strict=True)
    ]
    model = torch.nn.Sequential()
    for name in drop:
        model.add_module(name, torch.nn.Linear(100, 100))
    ratios = ratios_from_sensitivity(pd.DataFrame(rows), model, 0.8)
    assert ratios["a"] > ratios["b"] == pytest.approx(ratios["c"])
    assert sum(ratios.values()) / 3 == pytest.approx(0.8, abs=1e-6)
    with pytest.raises(ValueError, match="max_drop=0.001"):
        ratios_from_sensitivity(pd.DataFrame(rows), model, 0.8, max_drop=0.001)


def test_one_shot_layers_prunes_each_layer_to_its_own_ratio(mnist_small):
    model = tiny_model()
    ratios = {"fc1": 0.9, "fc2": 0.5, "fc3": 0.0}
    result = one_shot_layers(model, mnist_small, ratios, TrainConfig(epochs=1, batch_size=256), progress=False)
    for name, module in prunable_layers(model):
        assert int((effective_weight(module) == 0).sum()) == round(ratios[name] * module.weight.numel()), name
    assert result.epochs == 1 and result.sparsity == pytest.approx(sparsity(model))


def test_default_scan_ratios_start_dense_and_reach_the_frontier():
    assert _SENSITIVITY_RATIOS[0] == 0.0 and _SENSITIVITY_RATIOS[-1] == 0.99
    assert list(_SENSITIVITY_RATIOS) == sorted(_SENSITIVITY_RATIOS)


@pytest.mark.parametrize(
    "call, value",
    [
        (lambda d: sensitivity_scan(tiny_model(), d, (0.5, 1.0)), "1.0"),
        (lambda d: sensitivity_scan(tiny_model(), d, (0.5,), split="validation"), "'validation'"),
        (lambda d: sensitivity_scan(tiny_model(), d, ()), "ratios must not be empty"),
        (lambda d: sparsify_(tiny_model(), "l1", {"fc9": 0.5}), "fc9"),
        (lambda d: sparsify_(tiny_model(), "l1", {"fc1": 1.5}), "1.5"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_value(mnist_small, call, value):
    with pytest.raises(ValueError, match=re.escape(value)):
        call(mnist_small)


def test_scan_measures_on_the_validation_split_by_default(mnist_small):
    scan = sensitivity_scan(tiny_model(), mnist_small, (0.5,))
    assert scan.attrs["split"] == "val" and scan.attrs["samples"] == mnist_small.val_y.numel()
