"""Structured pruning + surgery (mnist_pruning.sparsity.structured) on the project's two models: exactness,
shapes, unit choice, checkpoints, training, validation. Models of other shapes: tests/test_sparsity_reuse.py.

Tiny and fast: random-initialised models (mostly narrow widths), random MNIST-shaped inputs, never MNIST itself.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from mnist_pruning.files import _load_torch
from mnist_pruning.models import ModelConfig, build_model
from mnist_pruning.sparsity.measure import count_parameters
from mnist_pruning.sparsity.structured import (
    _kept_units,
    _surgery,
    _units_removed,
    apply_structured_masks,
    apply_surgery,
    shrink,
)
from mnist_pruning.train import _load_checkpoint, _save_checkpoint

RATIOS = (0.3, 0.5, 0.7, 0.9, 0.99)
# Narrow but non-trivial widths keep every test in milliseconds; the CNN still has the real 4x4 flatten.
SMALL = {"mlp": ModelConfig("mlp", (40, 20)), "cnn": ModelConfig("cnn", (6, 10, 30))}
ATOL = 1e-5


def _model(config: ModelConfig, seed: int = 0) -> nn.Module:
    """A random model whose biases are N(0, 1), so removed units feed large constants forward."""
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.bias.copy_(torch.randn_like(module.bias))
    return model.eval()


def _inputs(batch: int = 8, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(batch, 1, 28, 28)


def _surgered(masked: nn.Module) -> nn.Module:
    """The surgered model built from surgery's data: the model's own with_widths + a strict state_dict load."""
    widths, state_dict = _surgery(masked)
    small = masked.with_widths(widths)
    small.load_state_dict(state_dict, strict=True)
    return small.eval()


def _expected(config: ModelConfig, ratio: float, layers: tuple[str, ...] | None = None) -> ModelConfig:
    """The config after removing units_removed(w, ratio) of every structured layer (or of ``layers``)."""
    names = build_model(config).STRUCTURED
    return ModelConfig(
        config.arch,
        tuple(
            w - _units_removed(w, ratio) if layers is None or n in layers else w
            for n, w in zip(names, config.widths, strict=True)
        ),
    )


def _param_formula(config: ModelConfig) -> int:
    if config.arch == "mlp":
        h1, h2 = config.widths
        return (784 * h1 + h1) + (h1 * h2 + h2) + (h2 * 10 + 10)
    c1, c2, h = config.widths
    return (25 * c1 + c1) + (25 * c1 * c2 + c2) + (c2 * 16 * h + h) + (h * 10 + 10)


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_surgered_outputs_equal_masked_outputs(arch: str, ratio: float) -> None:
    masked = _model(SMALL[arch])
    apply_structured_masks(masked, ratio)
    x = _inputs()
    with torch.no_grad():
        expected = masked(x)
        got = _surgered(masked)(x)
    assert got.shape == expected.shape == (8, 10)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_outputs_differ_without_bias_folding(arch: str) -> None:
    # Slicing the kept rows/columns alone (no folding) must NOT reproduce the masked model; otherwise the
    # equality test above could not detect a missing or wrong fold.
    torch.manual_seed(0)
    masked = _model(SMALL[arch])
    apply_structured_masks(masked, 0.5)
    keep = _kept_units(masked)
    widths, folded = _surgery(masked)
    naive = dict(folded)
    modules = dict(masked.named_modules())
    chain = ("fc1", "fc2", "fc3") if arch == "mlp" else ("conv1", "conv2", "fc1", "fc2")
    for i, name in enumerate(chain):
        bias = modules[name].bias.detach()
        naive[f"{name}.bias"] = bias[keep[name]] if name in keep else bias.clone()
        if i > 0 and chain[i - 1] in keep:
            # The weights themselves must match the plain slice exactly; only biases differ.
            w = modules[name].weight.detach()
            prev = keep[chain[i - 1]]
            cols = (prev[:, None] * 16 + torch.arange(16)).flatten() if name == "fc1" and arch == "cnn" else prev
            rows = keep.get(name, torch.arange(w.shape[0]))
            assert torch.equal(folded[f"{name}.weight"], w[rows][:, cols])
    unfolded = masked.with_widths(widths)
    unfolded.load_state_dict(naive)
    x = _inputs()
    with torch.no_grad():
        diff = (unfolded.eval()(x) - masked(x)).abs().max().item()
        folded_diff = (_surgered(masked)(x) - masked(x)).abs().max().item()
    assert diff > 1e-2
    assert folded_diff < ATOL


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_surgery_after_prune_remove_detects_zero_rows(arch: str) -> None:
    masked = _model(SMALL[arch])
    kept = apply_structured_masks(masked, 0.5)
    with_masks = _surgery(masked)[0]
    assert set(with_masks) == set(type(masked).STRUCTURED)
    for name in type(masked).STRUCTURED:
        prune.remove(dict(masked.named_modules())[name], "weight")
    widths, _ = _surgery(masked)
    assert widths == with_masks
    assert {k: v.tolist() for k, v in _kept_units(masked).items()} == {k: v.tolist() for k, v in kept.items()}
    x = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(_surgered(masked)(x), masked(x), atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_shapes_shrink_to_units_minus_removed(arch: str, ratio: float) -> None:
    config = SMALL[arch]
    small = shrink(_model(config), ratio)
    widths = tuple(w - _units_removed(w, ratio) for w in config.widths)
    assert small.config == ModelConfig(arch, widths) == _expected(config, ratio)
    assert type(small) is type(build_model(config))
    if arch == "mlp":
        h1, h2 = widths
        expected = {"fc1": ((h1, 784), (h1,)), "fc2": ((h2, h1), (h2,)), "fc3": ((10, h2), (10,))}
    else:
        c1, c2, h = widths
        expected = {
            "conv1": ((c1, 1, 5, 5), (c1,)),
            "conv2": ((c2, c1, 5, 5), (c2,)),
            "fc1": ((h, c2 * 16), (h,)),
            "fc2": ((10, h), (10,)),
        }
        assert small.fc1.in_features == c2 * 16
    for name, (w_shape, b_shape) in expected.items():
        layer = getattr(small, name)
        assert tuple(layer.weight.shape) == w_shape, name
        assert tuple(layer.bias.shape) == b_shape, name
    assert count_parameters(small) == _param_formula(small.config)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_published_widths_shrink_as_expected(arch: str) -> None:
    # Ratio 0.5 on the published architectures: half the units, about a quarter of the weights between them.
    expected = {"mlp": ((150, 50), 125_810), "cnn": ((10, 25, 250), 109_295)}[arch]
    small = shrink(build_model(arch), 0.5)
    assert small.config.widths == expected[0] == _expected(ModelConfig(arch), 0.5).widths
    assert _param_formula(small.config) == expected[1] == count_parameters(small)


@pytest.mark.parametrize(("arch", "widths"), [("mlp", (3, 2)), ("cnn", (2, 3, 2))])
def test_at_least_one_unit_kept_at_ratio_099(arch: str, widths: tuple[int, ...]) -> None:
    model = _model(ModelConfig(arch, widths))
    kept = apply_structured_masks(model, 0.99)
    assert all(k.numel() == 1 for k in kept.values())
    assert _units_removed(3, 0.99) == 2 and _units_removed(1, 0.99) == 0
    assert _surgered(model).config.widths == (1,) * len(widths)
    assert apply_surgery(model).config.widths == (1,) * len(widths)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_kept_units_have_largest_l2_norms(arch: str) -> None:
    model = _model(SMALL[arch])
    # Oracle from the dense weights, read before the masks exist.
    dense = {n: getattr(model, n).weight.detach().clone() for n in type(model).STRUCTURED}
    kept = apply_structured_masks(model, 0.5)
    for name, w in dense.items():
        norms = w.reshape(w.shape[0], -1).pow(2).sum(1).sqrt()
        n_keep = w.shape[0] - _units_removed(w.shape[0], 0.5)
        oracle = torch.topk(norms, n_keep).indices.sort().values
        assert torch.equal(kept[name], oracle), name
        assert torch.equal(kept[name], kept[name].sort().values) and kept[name].dtype == torch.long


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_checkpoint_round_trip_gives_identical_outputs(arch: str, tmp_path) -> None:
    masked = _model(SMALL[arch])
    apply_structured_masks(masked, 0.7)
    small = apply_surgery(masked)
    path = tmp_path / "small.pt"
    _save_checkpoint(path, small, ratio=0.7)
    raw = torch.load(path, weights_only=True)  # loadable without unpickling any module
    assert raw["model_config"] == small.config.to_dict() and raw["ratio"] == 0.7
    assert _load_torch(path)["state_dict"].keys() == small.state_dict().keys()
    reloaded, payload = _load_checkpoint(path, device=torch.device("cpu"))
    assert reloaded.config == small.config == _expected(SMALL[arch], 0.7) and payload["ratio"] == 0.7
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(x), small.eval()(x))
        torch.testing.assert_close(reloaded(x), masked(x), atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("training", [True, False])
def test_apply_surgery_equals_the_data_path_and_leaves_the_masked_model_alone(arch: str, training: bool) -> None:
    masked = _model(SMALL[arch])
    apply_structured_masks(masked, 0.5)
    masked.train(training)
    before = {k: v.clone() for k, v in masked.state_dict().items()}
    small = apply_surgery(masked)
    assert small.training is training and small.config == _expected(SMALL[arch], 0.5)
    assert not any(prune.is_pruned(m) for m in small.modules())
    assert all(torch.equal(masked.state_dict()[k], v) for k, v in before.items())
    assert all(prune.is_pruned(getattr(masked, n)) for n in type(masked).STRUCTURED)
    reference = _surgered(masked)
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(small.eval()(x), reference(x))


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_surgered_model_trains(arch: str) -> None:
    small = shrink(_model(SMALL[arch]), 0.5).train()
    assert not any(name.endswith(("_mask", "_orig")) for name, _ in small.state_dict().items())
    torch.manual_seed(2)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    losses = []
    for _ in range(5):
        small.zero_grad()
        loss = nn.functional.cross_entropy(small(x), y)
        loss.backward()
        losses.append(loss.item())
        with torch.no_grad():
            # Plain SGD by hand: the first torch.optim construction costs ~2 s of lazy imports on this machine.
            for name, p in small.named_parameters():
                assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
                p -= 0.01 * p.grad
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_shrink_leaves_input_model_unchanged(arch: str) -> None:
    model = _model(SMALL[arch])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shrink(model, 0.5)
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert not any(prune.is_pruned(m) for m in model.modules())
    assert model.config == SMALL[arch]


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, True, "0.5", float("nan")])
def test_bad_ratio_raises_naming_value(bad: object) -> None:
    model = _model(SMALL["mlp"])
    with pytest.raises(ValueError, match=re.escape(repr(bad))) as info:
        apply_structured_masks(model, bad)  # type: ignore[arg-type]
    assert "[0, 1)" in str(info.value)
    assert not any(prune.is_pruned(m) for m in model.modules())
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        shrink(model, bad)  # type: ignore[arg-type]


def test_unknown_layer_raises_before_any_pruning() -> None:
    model = _model(SMALL["cnn"])
    with pytest.raises(ValueError, match=r"\['fc9'\].*allowed: \['conv1', 'conv2', 'fc1'\]"):
        apply_structured_masks(model, 0.5, layers=["conv1", "fc9"])
    # conv1 was valid but listed with a bad name: validation happens first, so nothing is masked.
    assert not any(prune.is_pruned(m) for m in model.modules())
    with pytest.raises(ValueError, match="'fc2'"):  # the classifier is never structured-pruned
        apply_structured_masks(model, 0.5, layers="fc2")


class _NoLinks(nn.Module):
    """Not a Sequential and no structured_links(): nothing says which layer feeds which."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(784, 8), nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x.flatten(1))))


def test_a_model_whose_links_cannot_be_known_raises_before_any_masking() -> None:
    torch.manual_seed(0)
    model = _NoLinks()
    for call in (apply_structured_masks, shrink):
        with pytest.raises(ValueError, match=r"links=\[Link\(producer, consumer, activation\)"):
            call(model, 0.5)
    with pytest.raises(ValueError, match="structured_links"):
        _surgery(model)
    assert not any(prune.is_pruned(m) for m in model.modules())
    single = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with pytest.raises(ValueError, match="no structured links"):
        apply_structured_masks(single, 0.5)


def test_selected_layers_only_shrink_those() -> None:
    model = _model(SMALL["cnn"])
    kept = apply_structured_masks(model, 0.5, layers=["conv2"])
    assert set(kept) == {"conv2"}
    small = _surgered(model)
    assert small.config.widths == (6, 5, 30) == _expected(SMALL["cnn"], 0.5, ("conv2",)).widths
    x = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), atol=ATOL, rtol=1e-5)


def test_second_masking_of_same_layer_is_refused() -> None:
    model = _model(SMALL["mlp"])
    apply_structured_masks(model, 0.3, layers="fc1")
    with pytest.raises(ValueError, match="'fc1'.*already"):
        apply_structured_masks(model, 0.3)
