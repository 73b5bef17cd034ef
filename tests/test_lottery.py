"""Invariants of mnist_pruning.lottery: iterative magnitude pruning with rewinding (Frankle & Carbin 2019).

Everything trains a narrow LeNet-300-100 (16-8 hidden units) for 1 epoch per round on the small MNIST subset.
"""

import re

import pytest
import torch
from tiny import CFG, TINY, n_weights, n_zeros, tiny_model

from mnist_pruning.lottery import _lottery_targets, lottery_ticket
from mnist_pruning.schedules import _masks, budget_table
from mnist_pruning.sparsity.measure import prunable_layers
from mnist_pruning.train import TrainConfig


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
        TINY, mnist_small, 0.9, cfg, rounds=4, progress=False, on_reset=lambda i, m, s: trace.append(_masks(m))
    )
    assert len(trace) == 4
    for before, after in zip(trace, trace[1:], strict=False):
        for name in before:
            assert not (after[name] & ~before[name]).any(), f"{name}: a pruned weight came back"


def test_lottery_targets_prune_a_fixed_fraction_of_what_remains_and_end_exactly():
    targets = _lottery_targets(0.99, per_round=0.2)
    assert len(targets) == 21 and targets[-1] == 0.99
    assert targets[:-1] == pytest.approx([1 - 0.8**r for r in range(1, 21)])
    assert _lottery_targets(0.488, per_round=0.2) == pytest.approx([0.2, 0.36, 0.488])
    assert _lottery_targets(0.9, rounds=2) == pytest.approx([1 - 0.1**0.5, 0.9])


def test_budget_counts_the_tickets_own_dense_training(mnist_small):
    cfg = TrainConfig(epochs=1, batch_size=256)
    ticket = lottery_ticket(TINY, mnist_small, 0.5, cfg, rounds=1, progress=False)
    assert ticket.includes_dense_training and ticket.epochs == 2
    table = budget_table({"lottery": ticket}, baseline_epochs=20)
    assert table.loc["lottery", "epochs incl. dense training"] == 2  # not 2 + 20: it trained its own


@pytest.mark.parametrize(
    "call, value",
    [
        (lambda d: lottery_ticket(TINY, d, 0.9, CFG, per_round=0, progress=False), "got 0"),
        (lambda d: lottery_ticket(TINY, d, 0.9, CFG, per_round=1, progress=False), "got 1"),
        (lambda d: lottery_ticket(TINY, d, 1.0, CFG, progress=False), "1.0"),
        (lambda d: lottery_ticket(TINY, d, 0.9, CFG, method="nm", progress=False), "'nm'"),
        (lambda d: lottery_ticket(TINY, d, 0.9, CFG, per_round=0.2, rounds=3, progress=False), "not both"),
        (lambda d: lottery_ticket(TINY, d, 0.9, CFG, rewind_iteration=10_000, progress=False), "10000"),
        (lambda d: lottery_ticket(TINY, d, 0.9, CFG, rewind_iteration=-1, progress=False), "got -1"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_value(mnist_small, call, value):
    with pytest.raises(ValueError, match=re.escape(value)):
        call(mnist_small)
