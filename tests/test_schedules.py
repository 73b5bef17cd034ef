"""Invariants of mnist_pruning.frontier: the cubic schedule, gradual pruning, sensitivity, lottery rewinding.

Everything trains a narrow LeNet-300-100 (16-8 hidden units) for 1-2 epochs on the small MNIST subset, in seconds.
"""

import copy
import re

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from mnist_pruning.frontier import (
    CubicSchedule,
    cubic_schedule,
    gradual_prune,
    lottery_targets,
    lottery_ticket,
    masks,
    one_shot,
    plot_sensitivity,
    prune_per_layer,
    prune_to,
    ratios_from_sensitivity,
    sensitivity_scan,
)
from mnist_pruning.metrics import effective_weight, sparsity
from mnist_pruning.models import ModelConfig, build_model, prunable_layers
from mnist_pruning.pruning import bake_in
from mnist_pruning.train import TrainConfig

TINY = ModelConfig("mlp", (16, 8))
CFG = TrainConfig(epochs=2, batch_size=256, lr=0.05)  # 12 steps per epoch on the 3,000-image subset


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(TINY)


def n_weights(model: torch.nn.Module) -> int:
    return sum(m.weight.numel() for _, m in prunable_layers(model))


def n_zeros(model: torch.nn.Module) -> int:
    return sum(int((effective_weight(m) == 0).sum()) for _, m in prunable_layers(model))


@pytest.mark.parametrize("step", [0, 9, 10, 11, 13, 14, 20, 27, 29, 30, 31, 1000])
def test_cubic_schedule_equals_the_zhu_gupta_formula(step):
    s_i, s_f, t0, n, dt = 0.1, 0.95, 10, 5, 4
    if step < t0:
        expected = s_i
    elif step > t0 + n * dt:
        expected = s_f
    else:
        expected = s_f + (s_i - s_f) * (1 - (step - t0) / (n * dt)) ** 3
    assert cubic_schedule(step, s_f, initial=s_i, begin=t0, steps=n, every=dt) == expected
    schedule = CubicSchedule(final=s_f, initial=s_i, begin=t0, steps=n, every=dt)
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
        on_prune=lambda s, m: trace.append(masks(m)),
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
    keep = masks(model)
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
    prune_to(model, "global", 0.5)
    before = masks(model)
    assert prune_to(model, "global", 0.3) == pytest.approx(0.5, abs=1 / n_weights(model))
    assert all(torch.equal(before[k], v) for k, v in masks(model).items())


def test_one_shot_prunes_to_the_absolute_target(mnist_small):
    model = tiny_model()
    prune_to(model, "l1", 0.5)  # an existing mask: the one-shot ratio is still absolute, not relative to it
    result = one_shot(model, mnist_small, "global", 0.9, TrainConfig(epochs=1, batch_size=256), progress=False)
    assert n_zeros(model) == round(0.9 * n_weights(model))
    assert result.epochs == 1


def test_rewinding_restores_the_recorded_weights_at_unpruned_positions(mnist_small):
    checks = []

    def on_reset(index, model, state):
        for name, module in prunable_layers(model):
            kept = module.weight_mask.bool()
            checks.append(torch.equal(module.weight_orig[kept], state[f"{name}.weight"][kept]))
            checks.append(torch.equal(module.bias, state[f"{name}.bias"]))

    cfg = TrainConfig(epochs=1, batch_size=256)
    result = lottery_ticket(
        TINY, mnist_small, 0.7, cfg, rounds=2, rewind_iteration=3, progress=False, on_reset=on_reset
    )
    assert len(checks) == 2 * 3 * 2 and all(checks)
    init = tiny_model(cfg.seed)  # the rewind point after 3 steps is not the initialisation
    assert not torch.equal(result.rewind_state["fc1.weight"], init.fc1.weight)


def test_rewind_iteration_zero_is_the_initialisation(mnist_small):
    init = tiny_model(7)
    result = lottery_ticket(
        init, mnist_small, 0.5, TrainConfig(epochs=1, batch_size=256), rounds=1, progress=False
    )
    for key, value in init.state_dict().items():
        assert torch.equal(result.rewind_state[key], value)
    assert torch.equal(init.fc1.weight, result.rewind_state["fc1.weight"])  # the caller's model is untouched


def test_lottery_final_sparsity_hits_target_and_rounds_increase_it(mnist_small):
    cfg = TrainConfig(epochs=1, batch_size=256)
    result = lottery_ticket(TINY, mnist_small, 0.8, cfg, per_round=0.5, progress=False)
    assert [r["target"] for r in result.rounds] == [0.0, 0.5, 0.75, 0.8]
    measured = [r["sparsity"] for r in result.rounds]
    assert all(a < b for a, b in zip(measured, measured[1:], strict=False))
    assert n_zeros(result.model) == round(0.8 * n_weights(result.model))
    assert result.epochs == 4 * cfg.epochs == result.rounds[-1]["total_epochs"]


def test_lottery_masks_only_gain_zeros_across_rounds(mnist_small):
    # Rewinding gives pruned positions of weight_orig large values again: a mask scored on |weight_orig| alone
    # would let them back in; scored on |weight_orig * mask| (pruned first) it cannot.
    trace = []
    cfg = TrainConfig(epochs=1, batch_size=256)
    lottery_ticket(
        TINY, mnist_small, 0.9, cfg, rounds=4, progress=False, on_reset=lambda i, m, s: trace.append(masks(m))
    )
    assert len(trace) == 4
    for before, after in zip(trace, trace[1:], strict=False):
        for name in before:
            assert not (after[name] & ~before[name]).any(), f"{name}: a pruned weight came back"


def test_lottery_targets_prune_a_fixed_fraction_of_what_remains_and_end_exactly():
    targets = lottery_targets(0.99, per_round=0.2)
    assert len(targets) == 21 and targets[-1] == 0.99
    assert targets[:-1] == pytest.approx([1 - 0.8**r for r in range(1, 21)])
    assert lottery_targets(0.488, per_round=0.2) == pytest.approx([0.2, 0.36, 0.488])
    assert lottery_targets(0.9, rounds=2) == pytest.approx([1 - 0.1**0.5, 0.9])


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
    pruned = prune_per_layer(copy.deepcopy(model), ratios)
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


@pytest.mark.parametrize(
    "call, value",
    [
        (lambda d: gradual_prune(tiny_model(), d, "global", 1.0, CFG, progress=False), "1.0"),
        (lambda d: gradual_prune(tiny_model(), d, "random", 0.9, CFG, progress=False), "'random'"),
        (lambda d: one_shot(tiny_model(), d, "global", 1.0, CFG, progress=False), "1.0"),
        (lambda d: lottery_ticket(TINY, d, 0.9, CFG, per_round=0, progress=False), "got 0"),
        (lambda d: lottery_ticket(TINY, d, 0.9, CFG, per_round=1, progress=False), "got 1"),
        (lambda d: lottery_ticket(TINY, d, 1.0, CFG, progress=False), "1.0"),
        (lambda d: lottery_ticket(TINY, d, 0.9, CFG, method="nm", progress=False), "'nm'"),
        (lambda d: cubic_schedule(5, 0.9, steps=0), "got 0"),
        (lambda d: cubic_schedule(5, 0.9, every=0), "got 0"),
        (lambda d: cubic_schedule(5, 0.5, initial=0.6), "0.6"),
        (lambda d: sensitivity_scan(tiny_model(), d, (0.5, 1.0)), "1.0"),
        (lambda d: prune_per_layer(tiny_model(), {"fc9": 0.5}), "fc9"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_value(mnist_small, call, value):
    with pytest.raises(ValueError, match=re.escape(value)):
        call(mnist_small)
