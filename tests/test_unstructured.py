import copy

import pytest
import torch
from torch.nn.utils import prune

from mnist_pruning.metrics import sparsity
from mnist_pruning.models import build_model, prunable_layers
from mnist_pruning.pruning import bake_in, check_ratio, prune_unstructured
from mnist_pruning.train import TrainConfig, fine_tune


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.9, 0.99])
def test_l1_removes_exactly_the_ratio_in_every_layer(arch, ratio):
    torch.manual_seed(0)
    model = prune_unstructured(build_model(arch), "l1", ratio)
    for _, module in prunable_layers(model):
        n = module.weight.numel()
        assert int((module.weight == 0).sum()) == round(ratio * n)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("ratio", [0.3, 0.9, 0.99])
def test_global_removes_exactly_the_ratio_of_all_weights(arch, ratio):
    torch.manual_seed(0)
    model = prune_unstructured(build_model(arch), "global", ratio)
    total = sum(m.weight.numel() for _, m in prunable_layers(model))
    zeros = sum(int((m.weight == 0).sum()) for _, m in prunable_layers(model))
    assert zeros == round(ratio * total)
    assert sparsity(model) == pytest.approx(zeros / total)


def test_global_keeps_the_largest_magnitudes_across_layers():
    torch.manual_seed(1)
    model = build_model("mlp")
    flat = torch.cat([m.weight.detach().abs().flatten() for _, m in prunable_layers(model)])
    keep = flat.numel() - round(0.8 * flat.numel())
    threshold = flat.topk(keep).values.min()
    prune_unstructured(model, "global", 0.8)
    for _, m in prunable_layers(model):
        expected = m.weight_orig.detach().abs() >= threshold
        assert torch.equal(m.weight_mask.bool(), expected)


def test_masks_equal_torch_prune_run_directly():
    torch.manual_seed(2)
    ours = build_model("cnn")
    theirs = copy.deepcopy(ours)
    prune_unstructured(ours, "l1", 0.7)
    for _, m in prunable_layers(theirs):
        prune.l1_unstructured(m, "weight", amount=0.7)
    for (_, a), (_, b) in zip(prunable_layers(ours), prunable_layers(theirs), strict=True):
        assert torch.equal(a.weight_mask, b.weight_mask)


def test_biases_are_never_pruned():
    torch.manual_seed(0)
    model = prune_unstructured(build_model("mlp"), "global", 0.99)
    assert all(int((m.bias == 0).sum()) == 0 for _, m in prunable_layers(model))


def test_pruned_weights_stay_zero_through_momentum_fine_tuning(mnist_small):
    torch.manual_seed(0)
    model = prune_unstructured(build_model("mlp"), "global", 0.9)
    pruned = {n: (m.weight_mask == 0).clone() for n, m in prunable_layers(model)}
    orig_before = {n: m.weight_orig.detach().clone() for n, m in prunable_layers(model)}
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.05, momentum=0.9, weight_decay=5e-4)
    fine_tune(model, mnist_small, cfg, progress=False)
    bake_in(model)
    for name, module in prunable_layers(model):
        assert bool((module.weight[pruned[name]] == 0).all())
        # the optimizer really moved the underlying weights, pruned positions included (momentum, decay)
        assert not torch.equal(orig_before[name], module.weight.detach())


def test_bake_in_leaves_plain_parameters_with_the_zeros():
    torch.manual_seed(0)
    model = prune_unstructured(build_model("cnn"), "l1", 0.5)
    masked = {n: m.weight.detach().clone() for n, m in prunable_layers(model)}
    bake_in(model)
    for name, module in prunable_layers(model):
        assert "weight_orig" not in dict(module.named_parameters())
        assert torch.equal(module.weight, masked[name])
    assert not any(k.endswith("_mask") for k in model.state_dict())


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan"), True, "0.5", None])
def test_bad_ratio_raises_naming_the_value(bad):
    with pytest.raises(ValueError, match=r"ratio must be"):
        check_ratio(bad)
    with pytest.raises(ValueError, match=r"ratio must be"):
        prune_unstructured(build_model("mlp"), "l1", bad)


def test_unknown_method_raises_naming_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown method 'magnitude'; allowed: 'l1', 'global'"):
        prune_unstructured(build_model("mlp"), "magnitude", 0.5)


def test_ratio_zero_prunes_nothing():
    model = prune_unstructured(build_model("mlp"), "global", 0.0)
    assert sparsity(model) == 0.0
