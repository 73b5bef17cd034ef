"""sparsify_ / bake_in (mnist_pruning.sparsity.unstructured) on the project's two models: exact counts, torch's
own masks, biases untouched, fine-tuning through the masks, and arguments checked before any layer is touched."""

import copy
import re

import pytest
import torch
from torch.nn.utils import prune

from mnist_pruning.checks import _check_ratio
from mnist_pruning.models import build_model
from mnist_pruning.sparsity.measure import effective_weight, prunable_layers, sparsity
from mnist_pruning.sparsity.nm import check_nm
from mnist_pruning.sparsity.unstructured import METHODS, bake_in, sparsify_
from mnist_pruning.train import TrainConfig, fine_tune


def masked(model: torch.nn.Module) -> bool:
    return any(prune.is_pruned(m) for m in model.modules())


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.9, 0.99])
def test_l1_removes_exactly_the_ratio_in_every_layer(arch, ratio):
    torch.manual_seed(0)
    model = sparsify_(build_model(arch), "l1", ratio)
    for _, module in prunable_layers(model):
        n = module.weight.numel()
        assert int((module.weight == 0).sum()) == round(ratio * n)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("ratio", [0.3, 0.9, 0.99])
def test_global_removes_exactly_the_ratio_of_all_weights(arch, ratio):
    torch.manual_seed(0)
    model = sparsify_(build_model(arch), "global", ratio)
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
    sparsify_(model, "global", 0.8)
    for _, m in prunable_layers(model):
        expected = m.weight_orig.detach().abs() >= threshold
        assert torch.equal(m.weight_mask.bool(), expected)


def test_masks_equal_torch_prune_run_directly():
    torch.manual_seed(2)
    ours = build_model("cnn")
    theirs = copy.deepcopy(ours)
    sparsify_(ours, "l1", 0.7)
    for _, m in prunable_layers(theirs):
        prune.l1_unstructured(m, "weight", amount=0.7)
    for (_, a), (_, b) in zip(prunable_layers(ours), prunable_layers(theirs), strict=True):
        assert torch.equal(a.weight_mask, b.weight_mask)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_nm_holds_the_pattern_in_every_layer(arch):
    torch.manual_seed(3)
    model = sparsify_(build_model(arch), "nm", pattern="2:4")
    for name, module in prunable_layers(model):
        assert check_nm(effective_weight(module), 2, 4), name


@pytest.mark.parametrize("method", METHODS)
def test_filter_fn_leaves_the_rejected_layers_alone(method):
    torch.manual_seed(4)
    model = build_model("cnn")
    before = copy.deepcopy(model)
    kwargs = {"pattern": "1:4"} if method == "nm" else {"ratio": 0.9}
    sparsify_(model, method, filter_fn=lambda module, fqn: fqn != "fc1", **kwargs)
    assert not prune.is_pruned(model.fc1)
    assert torch.equal(model.fc1.weight, before.fc1.weight)
    for name in ("conv1", "conv2", "fc2"):
        assert prune.is_pruned(getattr(model, name)) and bool((effective_weight(getattr(model, name)) == 0).any())


def test_filter_fn_sees_only_linear_and_conv_layers_with_their_names():
    seen = []

    def accept_all(module, fqn):
        seen.append((fqn, type(module).__name__))
        return True

    sparsify_(build_model("cnn"), "l1", 0.5, filter_fn=accept_all)
    assert seen == [("conv1", "Conv2d"), ("conv2", "Conv2d"), ("fc1", "Linear"), ("fc2", "Linear")]


def test_biases_are_never_pruned():
    torch.manual_seed(0)
    model = sparsify_(build_model("mlp"), "global", 0.99)
    assert all(int((m.bias == 0).sum()) == 0 for _, m in prunable_layers(model))
    assert not any(hasattr(m, "bias_mask") for m in model.modules())


def test_fine_tuning_keeps_pruned_weights_zero_and_changes_the_kept_ones(mnist_small):
    torch.manual_seed(0)
    model = sparsify_(build_model("mlp"), "global", 0.9)
    layers = prunable_layers(model)
    pruned = {n: (m.weight_mask == 0).clone() for n, m in layers}
    before = {n: effective_weight(m).clone() for n, m in layers}
    orig_before = {n: m.weight_orig.detach().clone() for n, m in layers}
    # Momentum and weight decay act on every entry of weight_orig, pruned ones included: only the mask keeps
    # the zeros.
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.05, momentum=0.9, weight_decay=5e-4)
    fine_tune(model, mnist_small, cfg, progress=False)
    for name, module in layers:
        kept = ~pruned[name]
        assert torch.equal(module.weight_mask == 0, pruned[name]), f"{name}: the mask changed"
        after = effective_weight(module)
        assert bool((after[pruned[name]] == 0).all()), f"{name}: a pruned weight is no longer zero"
        # Training really happened: nearly every kept weight moved (not just some bookkeeping copy).
        moved = (after[kept] != before[name][kept]).float().mean().item()
        assert moved > 0.9, f"{name}: only {moved:.1%} of the kept weights changed"
        assert not torch.equal(module.weight_orig[pruned[name]], orig_before[name][pruned[name]])
    bake_in(model)
    for name, module in layers:
        assert not prune.is_pruned(module)
        assert bool((module.weight[pruned[name]] == 0).all()), name
        assert int((module.weight != 0).sum()) == int((~pruned[name]).sum()), name  # no kept weight hit 0


def test_bake_in_leaves_plain_parameters_with_the_zeros():
    torch.manual_seed(0)
    model = sparsify_(build_model("cnn"), "l1", 0.5)
    weights = {n: m.weight.detach().clone() for n, m in prunable_layers(model)}
    bake_in(model)
    for name, module in prunable_layers(model):
        assert "weight_orig" not in dict(module.named_parameters())
        assert torch.equal(module.weight, weights[name])
    assert not any(k.endswith("_mask") for k in model.state_dict())
    assert not masked(model)


def test_bake_in_removes_stacked_masks_too():
    torch.manual_seed(0)
    model = sparsify_(sparsify_(build_model("mlp"), "l1", 0.5), "nm", pattern="1:4")
    expected = {n: effective_weight(m).clone() for n, m in prunable_layers(model)}
    bake_in(model)
    assert not masked(model)
    assert all(torch.equal(m.weight, expected[n]) for n, m in prunable_layers(model))


def test_pruning_again_prunes_further_relative_to_the_survivors():
    torch.manual_seed(0)
    model = sparsify_(sparsify_(build_model("mlp"), "l1", 0.5), "l1", 0.5)
    for _, module in prunable_layers(model):
        n = module.weight.numel()
        assert int((effective_weight(module) == 0).sum()) == round(0.5 * n) + round(0.5 * (n - round(0.5 * n)))


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan"), True, "0.5", None])
def test_bad_ratio_raises_naming_the_value(bad):
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\).*got " + re.escape(repr(bad))):
        _check_ratio(bad)
    model = build_model("mlp")
    with pytest.raises(ValueError, match=r"ratio must be .*got " + re.escape(repr(bad))):
        sparsify_(model, "l1", bad)
    assert not masked(model)


def test_unknown_method_raises_naming_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown method 'magnitude'; allowed: 'l1', 'global', 'nm'"):
        sparsify_(build_model("mlp"), "magnitude", 0.5)


@pytest.mark.parametrize(
    ("method", "kwargs", "message"),
    [
        ("nm", {"ratio": 0.5}, "ratio=0.5"),
        ("nm", {}, "pattern="),
        ("nm", {"pattern": "4:4"}, "'4:4'"),
        ("nm", {"pattern": "2-4"}, "'2-4'"),
        ("global", {"ratio": 0.5, "pattern": "2:4"}, "pattern='2:4'"),
        ("l1", {"ratio": 0.5, "filter_fn": lambda module, fqn: False}, "filter_fn accepted no"),
    ],
)
def test_bad_argument_combinations_raise_before_any_layer_is_touched(method, kwargs, message):
    model = build_model("cnn")
    with pytest.raises(ValueError, match=re.escape(message)):
        sparsify_(model, method, **kwargs)
    assert not masked(model)


def test_ratio_zero_prunes_nothing():
    model = sparsify_(build_model("mlp"), "global", 0.0)
    assert sparsity(model) == 0.0


# ------------------------------------------------------------------------------------ absolute and per layer


def _old_prune_to(model, method, target):
    """The oracle: schedules.prune_to as it was before it became sparsify_(..., absolute=True), verbatim."""

    def prune_smallest(scores, pruned, count):
        count = max(count, int(pruned.sum().item()))
        keep = torch.ones_like(pruned)
        if count > 0:
            ranked = torch.where(pruned, torch.full_like(scores, -1.0), scores)
            keep[torch.topk(ranked, count, largest=False, sorted=False).indices] = False
        return keep

    layers = prunable_layers(model)
    for _, module in layers:
        if not prune.is_pruned(module):
            prune.identity(module, "weight")
    with torch.no_grad():
        if method == "l1":
            for _, module in layers:
                mask = module.weight_mask
                scores = effective_weight(module).abs().flatten()
                keep = prune_smallest(scores, mask.flatten() == 0, round(target * mask.numel()))
                mask.mul_(keep.view_as(mask).to(mask.dtype))
        else:
            scores = torch.cat([effective_weight(m).abs().flatten() for _, m in layers])
            pruned = torch.cat([m.weight_mask.flatten() == 0 for _, m in layers])
            keep = prune_smallest(scores, pruned, round(target * scores.numel()))
            offset = 0
            for _, module in layers:
                mask = module.weight_mask
                mask.mul_(keep[offset : offset + mask.numel()].view_as(mask).to(mask.dtype))
                offset += mask.numel()
        for _, module in layers:
            module.weight = module.weight_orig * module.weight_mask


def _old_prune_per_layer(model, ratios):
    """The oracle: sensitivity.prune_per_layer as it was, verbatim (without its checks)."""
    layers = dict(prunable_layers(model))
    for name, ratio in ratios.items():
        prune.l1_unstructured(layers[name], "weight", amount=ratio)
    return model


def _disturb(model, seed):
    """What training or a lottery rewind does between pruning steps: every weight_orig entry moves, pruned ones
    too (rewinding gives them large values again), and some become exact ties."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, module in prunable_layers(model):
            orig = module.weight_orig
            orig.add_(0.05 * torch.randn(orig.shape, generator=generator))
            orig[:, :2] = orig[:, :2].round(decimals=1)  # ties, so topk's tie-breaking is compared too


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("method", ["l1", "global"])
@pytest.mark.parametrize("start", ["unmasked", "relative mask"])
def test_absolute_masks_are_bitwise_those_of_the_old_prune_to(arch, method, start):
    torch.manual_seed(5)
    ours = build_model(arch)
    theirs = copy.deepcopy(ours)
    if start == "relative mask":
        sparsify_(ours, "l1", 0.4)
        sparsify_(theirs, "l1", 0.4)
    for step, target in enumerate([0.3, 0.5, 0.5, 0.2, 0.9, 0.99]):
        sparsify_(ours, method, target, absolute=True)
        _old_prune_to(theirs, method, target)
        for (name, a), (_, b) in zip(prunable_layers(ours), prunable_layers(theirs), strict=True):
            assert torch.equal(a.weight_mask, b.weight_mask), f"step {step}, {name}: masks differ"
            assert torch.equal(a.weight, b.weight), f"step {step}, {name}: refreshed weights differ"
        _disturb(ours, step)
        _disturb(theirs, step)


def test_per_layer_masks_are_bitwise_those_of_the_old_prune_per_layer():
    torch.manual_seed(6)
    ours = build_model("cnn")
    theirs = copy.deepcopy(ours)
    for model in (ours, theirs):
        sparsify_(model, "l1", 0.3, filter_fn=lambda module, fqn: fqn == "fc1")
    ratios = {"conv2": 0.6, "fc1": 0.9, "fc2": 0.25}
    sparsify_(ours, "l1", ratios)
    _old_prune_per_layer(theirs, ratios)
    for (name, a), (_, b) in zip(prunable_layers(ours), prunable_layers(theirs), strict=True):
        assert prune.is_pruned(a) == prune.is_pruned(b), name
        assert torch.equal(effective_weight(a), effective_weight(b)), name


@pytest.mark.parametrize("method", ["l1", "global"])
def test_absolute_masks_only_gain_zeros(method):
    torch.manual_seed(7)
    model = build_model("mlp")
    previous = None
    for step, target in enumerate([0.5, 0.3, 0.8, 0.8, 0.95]):
        sparsify_(model, method, target, absolute=True)
        current = {n: m.weight_mask.clone() for n, m in prunable_layers(model)}
        if previous is not None:
            for name, mask in current.items():
                assert bool((mask <= previous[name]).all()), f"step {step}, {name}: a pruned weight came back"
        previous = current
        _disturb(model, step)


@pytest.mark.parametrize("ratio", [0.3, 0.9, 0.99])
def test_absolute_l1_ends_at_round_s_n_zeros_per_layer_counting_existing_ones(ratio):
    torch.manual_seed(8)
    model = sparsify_(build_model("cnn"), "l1", 0.2)  # existing zeros, fewer than the target asks
    sparsify_(model, "l1", ratio, absolute=True)
    for name, module in prunable_layers(model):
        assert int((module.weight_mask == 0).sum()) == round(ratio * module.weight.numel()), name


@pytest.mark.parametrize("ratio", [0.3, 0.9, 0.99])
def test_absolute_global_ends_at_round_s_n_zeros_overall(ratio):
    torch.manual_seed(9)
    model = sparsify_(build_model("mlp"), "global", 0.1)
    sparsify_(model, "global", ratio, absolute=True)
    total = sum(m.weight.numel() for _, m in prunable_layers(model))
    assert sum(int((m.weight_mask == 0).sum()) for _, m in prunable_layers(model)) == round(ratio * total)


def test_absolute_target_below_the_current_sparsity_changes_nothing():
    torch.manual_seed(10)
    model = sparsify_(build_model("mlp"), "global", 0.6)
    before = {n: m.weight_mask.clone() for n, m in prunable_layers(model)}
    sparsify_(model, "global", 0.4, absolute=True)
    assert all(torch.equal(m.weight_mask, before[n]) for n, m in prunable_layers(model))


@pytest.mark.parametrize("absolute", [False, True])
def test_per_layer_ratios_prune_only_the_named_layers_each_by_its_own_ratio(absolute):
    torch.manual_seed(11)
    model = sparsify_(build_model("mlp"), "l1", {"fc1": 0.9, "fc3": 0.5}, absolute=absolute)
    assert not prune.is_pruned(model.fc2)
    for name, ratio in (("fc1", 0.9), ("fc3", 0.5)):
        module = model.get_submodule(name)
        assert int((effective_weight(module) == 0).sum()) == round(ratio * module.weight.numel()), name


def test_unknown_layer_names_raise_naming_them_and_listing_the_allowed_ones():
    model = build_model("mlp")
    message = "unknown layers ['fc9', 'conv1']; allowed: ['fc1', 'fc2', 'fc3']"
    with pytest.raises(ValueError, match=re.escape(message)):
        sparsify_(model, "l1", {"fc1": 0.5, "fc9": 0.5, "conv1": 0.2})
    with pytest.raises(ValueError, match=re.escape("allowed: ['fc2', 'fc3']")):
        sparsify_(model, "l1", {"fc1": 0.5}, filter_fn=lambda module, fqn: fqn != "fc1")
    assert not masked(model)


@pytest.mark.parametrize(
    ("method", "kwargs", "message"),
    [
        ("global", {"ratio": {"fc1": 0.5}}, "per-layer ratios are for method 'l1', not 'global'"),
        ("l1", {"ratio": {"fc1": 1.5}}, "ratio of fc1 must be in [0, 1)"),
        ("nm", {"pattern": "2:4", "absolute": True}, "absolute=True"),
        ("global", {"ratio": 1.0, "absolute": True}, "got 1.0"),
    ],
)
def test_bad_absolute_or_per_layer_arguments_raise_before_any_layer_is_touched(method, kwargs, message):
    model = build_model("mlp")
    with pytest.raises(ValueError, match=re.escape(message)):
        sparsify_(model, method, **kwargs)
    assert not masked(model)


# ------------------------------------------------------------------------------------- density floors


def _kept(module) -> float:
    from mnist_pruning.sparsity.measure import effective_weight

    return (effective_weight(module) != 0).float().mean().item()


def test_a_density_floor_keeps_its_share_of_the_layer_while_the_target_is_met():
    from mnist_pruning.models import build_model
    from mnist_pruning.sparsity import sparsity

    torch.manual_seed(0)
    model = build_model("cnn")
    with torch.no_grad():
        model.conv1.weight.mul_(1e-3)  # so small that one global threshold would remove all of conv1
    sparsify_(model, "global", 0.99, absolute=True, floors={"conv1": 0.5})
    assert _kept(model.conv1) >= 0.5
    total = sum(m.weight.numel() for m in (model.conv1, model.conv2, model.fc1, model.fc2))
    assert round(sparsity(model) * total) == round(0.99 * total)


def test_without_a_floor_the_same_global_threshold_empties_the_small_layer():
    from mnist_pruning.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn")
    with torch.no_grad():
        model.conv1.weight.mul_(1e-3)
    sparsify_(model, "global", 0.99, absolute=True)
    assert _kept(model.conv1) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"floors": {"conv1": 1.5}}, r"floor of 'conv1' must be a fraction of weights kept in \(0, 1\], got 1.5"),
        ({"floors": {"conv9": 0.5}}, r"unknown layers \['conv9'\] in floors"),
        ({"floors": {"conv1": 0.5}, "absolute": False}, r"floors= .* is for method 'global' with absolute=True"),
        ({"ratio": 0.9999, "floors": {"fc2": 1.0, "conv1": 1.0}}, r"cannot be reached with floors keeping 5500"),
    ],
)
def test_bad_floors_raise_before_any_layer_is_touched(kwargs, message):
    from torch.nn.utils import prune

    from mnist_pruning.models import build_model

    model = build_model("cnn")
    kwargs = {"ratio": 0.99, "absolute": True, **kwargs}
    with pytest.raises(ValueError, match=message):
        sparsify_(model, "global", **kwargs)
    assert not any(prune.is_pruned(m) for m in model.modules() if m is not model)
