"""Invariants of mnist_pruning.sparsity.variational: the KL approximation, VD layers, conversion and finalising.

Tiny models and random inputs only; no training (the schedule around it: tests/test_vd.py).
"""

import pytest
import torch
from tiny import TINY, tiny_model
from torch import nn
from torch.nn.utils import prune

from mnist_pruning.models import ModelConfig, build_model
from mnist_pruning.sparsity import variational as vd
from mnist_pruning.sparsity.measure import effective_weight

TINY_CNN = ModelConfig("cnn", (4, 6, 16))


def _spread_log_alpha(model: nn.Module, seed: int = 0) -> None:
    """Random log sigma^2 so that log alpha covers both sides of the threshold in every layer."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in vd._variational_layers(model):
            layer.log_sigma2.copy_(torch.empty(layer.weight.shape).uniform_(-12.0, 0.0, generator=gen))


def _vd_model(spec: ModelConfig) -> nn.Module:
    torch.manual_seed(0)
    model = vd.to_variational_(build_model(spec))
    _spread_log_alpha(model)
    return model.eval()


def test_neg_kl_equals_the_papers_formula():
    log_alpha = torch.linspace(-10, 10, 201, dtype=torch.float64)
    k1, k2, k3 = 0.63576, 1.87320, 1.48695
    expected = k1 * torch.sigmoid(k2 + k3 * log_alpha) - 0.5 * torch.log1p(torch.exp(-log_alpha)) - k1
    torch.testing.assert_close(vd._neg_kl(log_alpha), expected, rtol=1e-12, atol=1e-12)


def test_kl_is_nonnegative_and_decreasing_in_log_alpha():
    kl = -vd._neg_kl(torch.linspace(-10, 10, 2001, dtype=torch.float64))
    assert (kl >= 0).all()
    assert (kl[1:] < kl[:-1]).all()


def test_model_kl_is_the_sum_of_the_layers_negated_neg_kl():
    model = _vd_model(TINY)
    expected = sum(-vd._neg_kl(la).sum() for la in vd._log_alpha(model).values())
    torch.testing.assert_close(vd.kl(model).detach(), expected)


def test_log_alpha_is_log_sigma2_minus_log_theta2_clamped():
    layer = vd.to_variational_(nn.Sequential(nn.Linear(5, 3)))[0]
    expected = torch.clamp(layer.log_sigma2 - torch.log(layer.weight**2), -10, 10)
    torch.testing.assert_close(layer.log_alpha(), expected)


def test_eval_linear_equals_plain_linear_with_theta_masked():
    layer = _vd_model(TINY).fc1
    x = torch.randn(7, layer.in_features)
    keep = layer.log_alpha() <= layer.threshold
    assert 0 < keep.sum() < keep.numel()
    expected = nn.functional.linear(x, torch.where(keep, layer.weight, 0.0), layer.bias)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)


def test_eval_conv_equals_plain_conv_with_theta_masked():
    layer = _vd_model(TINY_CNN).conv2
    x = torch.randn(3, layer.in_channels, 12, 12)
    keep = layer.log_alpha() <= layer.threshold
    assert 0 < keep.sum() < keep.numel()
    expected = nn.functional.conv2d(x, torch.where(keep, layer.weight, 0.0), layer.bias)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_training_output_has_the_kept_weights_mean_and_the_full_variance(kind):
    torch.manual_seed(0)
    plain = nn.Linear(6, 3) if kind == "linear" else nn.Conv2d(2, 3, 3)
    layer = vd.to_variational_(nn.Sequential(plain))[0].train()
    with torch.no_grad():
        layer.log_sigma2.uniform_(-4.0, -1.0)
    one = torch.randn((1, 6) if kind == "linear" else (1, 2, 4, 4))
    x = one.expand(20000, *one.shape[1:])  # one input, 20,000 independent draws of the pre-activations
    f = nn.functional.linear if kind == "linear" else nn.functional.conv2d
    samples = layer(x)
    keep = layer.log_alpha() <= layer.threshold
    assert 0 < keep.sum() < keep.numel()
    kept = torch.where(keep, layer.weight, 0.0)
    torch.testing.assert_close(samples.mean(0), f(one, kept, layer.bias)[0], rtol=0, atol=0.03)
    torch.testing.assert_close(samples.var(0), f(one**2, layer.log_sigma2.exp())[0], rtol=0.05, atol=1e-3)


@pytest.mark.parametrize("spec", [TINY, TINY_CNN], ids=["mlp", "cnn"])
def test_finalised_model_prunes_exactly_the_weights_above_threshold(spec):
    model = _vd_model(spec)
    log_alpha = vd._log_alpha(model)
    vd.finalize_(model)
    for name, la in log_alpha.items():
        layer = model.get_submodule(name)
        assert prune.is_pruned(layer)
        assert torch.equal(layer.weight_mask.bool(), la <= 3.0)
        assert torch.equal(effective_weight(layer) == 0, la > 3.0)


@pytest.mark.parametrize("spec", [TINY, TINY_CNN], ids=["mlp", "cnn"])
def test_finalised_model_outputs_equal_the_vd_models_eval_outputs(spec):
    model = _vd_model(spec)
    x = torch.rand(5, 1, 28, 28)
    expected = model(x)
    vd.finalize_(model)
    torch.testing.assert_close(model.eval()(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("spec", [TINY, TINY_CNN], ids=["mlp", "cnn"])
def test_convert_and_finalise_keep_class_config_and_plain_layer_types(spec):
    model = build_model(spec)
    types = {name: type(m) for name, m in model.named_modules()}
    same = vd.finalize_(vd.to_variational_(model))
    assert same is model and type(model) is type(build_model(spec)) and model.config == spec
    assert {name: type(m) for name, m in model.named_modules()} == types


def test_to_variational_copies_weights_and_converts_only_the_filtered_layers():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    vd.to_variational_(model, filter_fn=lambda mod, fqn: fqn != "fc3")
    assert [name for name, _ in vd._variational_layers(model)] == ["fc1", "fc2"]
    assert type(model.fc3) is nn.Linear
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v)
    assert (model.fc1.log_sigma2 == -10.0).all()


def test_to_variational_refuses_a_masked_layer_before_converting_any():
    model = tiny_model()
    prune.identity(model.fc2, "weight")
    with pytest.raises(ValueError, match="'fc2' has prune masks"):
        vd.to_variational_(model)
    assert not vd._variational_layers(model)


@pytest.mark.parametrize("bad", [3.5e1, -11.0, float("nan"), "3", True])
def test_bad_threshold_raises_naming_it(bad):
    with pytest.raises(ValueError, match=r"threshold .*\[-10, 10\], got " + repr(bad).replace("(", r"\(")):
        vd.to_variational_(tiny_model(), threshold=bad)
    with pytest.raises(ValueError, match=r"threshold .*\[-10, 10\]"):
        vd.finalize_(vd.to_variational_(tiny_model()), threshold=bad)


def test_finalize_refuses_a_model_without_vd_layers():
    with pytest.raises(ValueError, match="no VD layer"):
        vd.finalize_(tiny_model())
