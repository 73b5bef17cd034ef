"""Invariants of mnist_pruning.schedules: the cubic schedule, absolute-sparsity masks, one-shot and gradual runs.

Everything trains a narrow LeNet-300-100 (16-8 hidden units) for 1-2 epochs on the small MNIST subset, in seconds.
Sensitivity scans: tests/test_sensitivity.py; lottery tickets: tests/test_lottery.py.
"""

import re

import pytest
import torch
from tiny import CFG, n_weights, n_zeros, tiny_model

from mnist_pruning.schedules import (
    _cubic_schedule,
    _CubicSchedule,
    _masks,
    _prune_to,
    budget_table,
    gradual_prune,
    one_shot,
)
from mnist_pruning.sparsity.measure import effective_weight, prunable_layers
from mnist_pruning.sparsity.unstructured import bake_in
from mnist_pruning.train import TrainConfig


@pytest.mark.parametrize("step", [0, 9, 10, 11, 13, 14, 20, 27, 29, 30, 31, 1000])
def test_cubic_schedule_equals_the_zhu_gupta_formula(step):
    s_i, s_f, t0, n, dt = 0.1, 0.95, 10, 5, 4
    if step < t0:
        expected = s_i
    elif step > t0 + n * dt:
        expected = s_f
    else:
        expected = s_f + (s_i - s_f) * (1 - (step - t0) / (n * dt)) ** 3
    assert _cubic_schedule(step, s_f, initial=s_i, begin=t0, steps=n, every=dt) == expected
    schedule = _CubicSchedule(final=s_f, initial=s_i, begin=t0, steps=n, every=dt)
    assert schedule(step) == expected
    assert schedule.events() == [10, 14, 18, 22, 26, 30]


@pytest.mark.parametrize("method", ["global", "l1"])
def test_gradual_masks_only_gain_zeros_and_final_sparsity_hits_target(mnist_small, method):
    model, trace = tiny_model(), []
    result = gradual_prune(
        model,
        mnist_small,
        method,
        0.9,
        CFG,
        prune_every=2,
        progress=False,
        on_prune=lambda s, m: trace.append(_masks(m)),
    )
    assert len(trace) == len(result.pruning_steps) >= 5
    for before, after in zip(trace, trace[1:], strict=False):
        for name in before:
            assert not (after[name] & ~before[name]).any(), f"{name}: a pruned weight came back"
    targets = [row["sparsity"] for row in result.pruning_steps]
    assert targets == sorted(targets) and result.pruning_steps[-1]["target"] == 0.9
    # the final sparsity is reached within the first 2/3 of training, then masks stay fixed
    assert result.pruning_steps[-1]["step"] <= round(2 / 3 * 24)
    layers = prunable_layers(model)
    if method == "global":
        assert n_zeros(model) == round(0.9 * n_weights(model))
    else:
        for _, m in layers:
            assert int((effective_weight(m) == 0).sum()) == round(0.9 * m.weight.numel())
    assert abs(result.sparsity - 0.9) <= len(layers) / n_weights(model)
    assert result.epochs == CFG.epochs and result.seconds > 0


def test_pruned_weights_stay_exactly_zero_after_gradual_run(mnist_small):
    model = tiny_model()
    gradual_prune(model, mnist_small, "global", 0.8, CFG, prune_every=3, progress=False)
    keep = _masks(model)
    model(mnist_small.test_x[:8])  # the prune hook recomputes .weight from weight_orig * weight_mask
    for name, module in prunable_layers(model):
        assert (~keep[name]).any()
        assert torch.all(module.weight[~keep[name]] == 0)
        assert torch.all(effective_weight(module)[~keep[name]] == 0)
    bake_in(model)
    for name, module in prunable_layers(model):
        assert torch.all(module.weight[~keep[name]] == 0)


def test_prune_to_a_lower_target_never_unprunes():
    model = tiny_model()
    _prune_to(model, "global", 0.5)
    before = _masks(model)
    assert _prune_to(model, "global", 0.3) == pytest.approx(0.5, abs=1 / n_weights(model))
    assert all(torch.equal(before[k], v) for k, v in _masks(model).items())


def test_one_shot_prunes_to_the_absolute_target(mnist_small):
    model = tiny_model()
    _prune_to(model, "l1", 0.5)  # an existing mask: the one-shot ratio is still absolute, not relative to it
    result = one_shot(model, mnist_small, "global", 0.9, TrainConfig(epochs=1, batch_size=256), progress=False)
    assert n_zeros(model) == round(0.9 * n_weights(model))
    assert result.epochs == 1


def test_same_budget_compares_one_shot_and_gradual_on_equal_epochs(mnist_small):
    cfg = TrainConfig(epochs=1, batch_size=256)
    a = one_shot(tiny_model(), mnist_small, "global", 0.8, cfg, progress=False)
    b = gradual_prune(tiny_model(), mnist_small, "global", 0.8, cfg, progress=False)
    table = budget_table({"one-shot": a, "gradual": b}, baseline_epochs=20)
    assert list(table.index) == ["one-shot", "gradual"]
    assert table["epochs"].tolist() == [1, 1]
    assert table["epochs incl. dense training"].tolist() == [21, 21]  # both start from the 20-epoch baseline
    assert table["sparsity"].tolist() == pytest.approx([0.8, 0.8], abs=3 / n_weights(a.model))
    assert table["validation accuracy %"].tolist() == pytest.approx([100 * a.accuracy, 100 * b.accuracy])


@pytest.mark.parametrize(
    "call, value",
    [
        (lambda d: gradual_prune(tiny_model(), d, "global", 1.0, CFG, progress=False), "1.0"),
        (lambda d: gradual_prune(tiny_model(), d, "random", 0.9, CFG, progress=False), "'random'"),
        (lambda d: gradual_prune(tiny_model(), d, "nm", 0.9, CFG, progress=False), "'nm'"),
        (lambda d: gradual_prune(tiny_model(), d, "global", 0.9, CFG, prune_every=0, progress=False), "got 0"),
        (lambda d: gradual_prune(tiny_model(), d, "global", 0.9, CFG, prune_every=99, progress=False), "99"),
        (lambda d: gradual_prune(tiny_model(), d, "global", 0.9, CFG, end_fraction=0.0, progress=False), "0.0"),
        (lambda d: one_shot(tiny_model(), d, "global", 1.0, CFG, progress=False), "1.0"),
        (lambda d: _prune_to(tiny_model(), "structured", 0.5), "'structured'"),
        (lambda d: _prune_to(tiny_model(), "global", -0.5), "-0.5"),
        (lambda d: _cubic_schedule(5, 0.9, steps=0), "got 0"),
        (lambda d: _cubic_schedule(5, 0.9, every=0), "got 0"),
        (lambda d: _cubic_schedule(5, 0.5, initial=0.6), "0.6"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_value(mnist_small, call, value):
    with pytest.raises(ValueError, match=re.escape(value)):
        call(mnist_small)
