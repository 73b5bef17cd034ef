"""fine_tune trains masked models through sparsity.MaskedTraining (plain weights, masks held aside): the weights
it computes with must be bitwise those of training with torch's prune hooks attached, as fine_tune did before."""

import math

import pytest
import torch
from tiny import TINY
from torch import nn
from torch.nn.utils import prune

from mnist_pruning import schedules
from mnist_pruning.data import MNISTData
from mnist_pruning.models import ModelConfig, build_model
from mnist_pruning.sparsity import MaskedTraining, sparsify_
from mnist_pruning.sparsity.masked import _pruned_tensors
from mnist_pruning.sparsity.measure import _effective_state_dict, prunable_layers
from mnist_pruning.train import TrainConfig, _bf16_supported, _optimizer, _train_one_epoch, fine_tune

TINY_CNN = ModelConfig("cnn", (4, 8, 16))
# 10 steps of 64 images per epoch, 2 epochs: 20 steps with Nesterov momentum, weight decay, warm-up and cosine.
CFG = TrainConfig(epochs=2, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4, warmup=0.1, precision="fp32")
NATIVE_BF16 = pytest.mark.skipif(not _bf16_supported(), reason="no native bf16 on this CPU")


@pytest.fixture(scope="module")
def data(mnist_small):
    n = 640
    return MNISTData(
        mnist_small.train_x[:n],
        mnist_small.train_y[:n],
        mnist_small.test_x[:100],
        mnist_small.test_y[:100],
        mnist_small.val_x[:100],
        mnist_small.val_y[:100],
    )


def _pruned(spec: ModelConfig, method: str = "global", ratio: float = 0.7) -> nn.Module:
    torch.manual_seed(0)
    return sparsify_(build_model(spec), method, ratio)


def _train_with_hooks(
    model, data, config, desc="", progress=False, after_step=None, masked=None, channels_last=True, loss_fn=None
) -> list:
    """fine_tune's training as it was before MaskedTraining: torch's prune hooks attached all along, so every
    forward computes ``weight_orig * weight_mask`` (the reference; ``masked`` is never entered). With
    ``masked`` entered instead (``channels_last=False``), the same loop through MaskedTraining."""
    if channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model.to(memory_format=torch.channels_last)
    steps = math.ceil(data.train_x.shape[0] / config.batch_size)
    optimizer, scheduler = _optimizer(model, config, config.epochs * steps)
    if masked is not None and masked._active:
        masked.watch(optimizer)
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    for _ in range(config.epochs):
        loss = _train_one_epoch(
            model, data.train_x, data.train_y, optimizer, config.batch_size, generator, scheduler, after_step,
            config.precision, None, loss_fn,
        )  # fmt: skip
        history.append({"train_loss": loss, "val_accuracy": 0.0})
    model.to(memory_format=torch.contiguous_format)
    return history


def _bits(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors the model computes with, as raw int32 bit patterns (zeros as +0.0)."""
    return {k: v.view(torch.int32) for k, v in _effective_state_dict(model).items()}


def _assert_bitwise_equal(a: nn.Module, b: nn.Module) -> None:
    bits_a, bits_b = _bits(a), _bits(b)
    assert bits_a.keys() == bits_b.keys()
    for key in bits_a:
        assert torch.equal(bits_a[key], bits_b[key]), f"{key} differs"


@pytest.mark.parametrize(
    "spec, precision",
    [
        pytest.param(TINY, "fp32", id="mlp-fp32"),
        pytest.param(TINY, "bf16", id="mlp-bf16", marks=NATIVE_BF16),
        pytest.param(TINY_CNN, "bf16", id="cnn-bf16", marks=NATIVE_BF16),
    ],
)
def test_fine_tune_gives_bitwise_the_effective_weights_of_training_through_prune_hooks(data, spec, precision):
    config = TrainConfig(**{**CFG.to_dict(), "precision": precision})
    fast, hooks = _pruned(spec), _pruned(spec)
    fine_tune(fast, data, config, progress=False)
    _train_with_hooks(hooks, data, config)
    _assert_bitwise_equal(fast, hooks)


def test_masked_training_gives_bitwise_the_cnn_weights_of_prune_hooks_in_the_same_memory_format(data):
    # fp32 CNN under channels_last differs in the last bits: the hooks' orig * mask comes out NCHW for conv1 (one
    # input channel makes the layout ambiguous), MaskedTraining keeps it channels_last, and oneDNN's NCHW and
    # channels_last convolutions round differently. In one memory format the two agree bitwise.
    fast, hooks = _pruned(TINY_CNN), _pruned(TINY_CNN)
    with MaskedTraining(fast) as masked:
        _train_with_hooks(fast, data, CFG, masked=masked, channels_last=False)
    _train_with_hooks(hooks, data, CFG, channels_last=False)
    _assert_bitwise_equal(fast, hooks)


def test_masked_conv_weights_keep_their_channels_last_layout_while_fine_tuning(data):
    model = _pruned(TINY_CNN)
    layouts = []

    def after_step() -> None:
        w = model.conv1.weight
        layouts.append(w.stride() == torch.empty_like(w, memory_format=torch.channels_last).stride())

    fine_tune(model, data, CFG, progress=False, after_step=after_step)
    assert len(layouts) == 20 and all(layouts)


def test_gradual_pruning_gives_bitwise_the_effective_weights_of_training_through_prune_hooks(data, monkeypatch):
    fast, hooks = _pruned(TINY, ratio=0.0), _pruned(TINY, ratio=0.0)
    a = schedules.gradual_prune(fast, data, "global", 0.9, CFG, prune_every=2, progress=False)
    monkeypatch.setattr(schedules, "fine_tune", _train_with_hooks)
    b = schedules.gradual_prune(hooks, data, "global", 0.9, CFG, prune_every=2, progress=False)
    assert a.pruning_steps == b.pruning_steps
    _assert_bitwise_equal(fast, hooks)


def test_pruned_weights_are_exactly_zero_after_every_optimizer_step(data):
    model = _pruned(TINY_CNN)
    masked = MaskedTraining(model)
    nonzero = []

    def after_step() -> None:
        nonzero.append(sum(int((getattr(m, n)[mask == 0] != 0).sum()) for (m, n), mask in masked.masks.items()))

    fine_tune(model, data, CFG, progress=False, after_step=after_step, masked=masked)
    assert len(nonzero) == 20 and not any(nonzero)


def test_fine_tune_leaves_the_same_masks_parameters_buffers_and_prune_hooks(data):
    model = _pruned(TINY_CNN)
    masks = {k: v.clone() for k, v in model.named_buffers()}
    params, hooked = [k for k, _ in model.named_parameters()], [(id(m), n) for m, n in _pruned_tensors(model)]
    fine_tune(model, data, CFG, progress=False)
    assert [k for k, _ in model.named_parameters()] == params
    assert [(id(m), n) for m, n in _pruned_tensors(model)] == hooked
    buffers = dict(model.named_buffers())
    assert buffers.keys() == masks.keys() and all(torch.equal(buffers[k], masks[k]) for k in masks)
    assert all(torch.equal(m.weight, m.weight_orig * m.weight_mask) for _, m in prunable_layers(model))


def test_gradual_pruning_through_masked_training_reaches_its_target_and_masks_only_gain_zeros(data):
    model = _pruned(TINY, ratio=0.0)
    seen = []

    def on_prune(step: int, m: nn.Module) -> None:
        seen.append(torch.cat([layer.weight_mask.flatten() for _, layer in prunable_layers(m)]))

    result = schedules.gradual_prune(model, data, "l1", 0.8, CFG, prune_every=2, on_prune=on_prune, progress=False)
    assert len(seen) > 2 and result.sparsity == pytest.approx(0.8, abs=1e-3)
    assert all(bool(((prev == 0) <= (mask == 0)).all()) for prev, mask in zip(seen, seen[1:], strict=False))


def test_a_mask_that_unprunes_a_weight_inside_masked_training_is_refused():
    model = _pruned(TINY)
    with MaskedTraining(model) as masked, pytest.raises(ValueError, match="un-pruned"):
        with masked.pruning():
            model.fc1.weight_mask.fill_(1.0)
    assert prune.is_pruned(model.fc1)  # the exit still put the masks back


def test_fine_tune_refuses_a_masked_training_of_another_model(data):
    with pytest.raises(ValueError, match="masked.model is model"):
        fine_tune(_pruned(TINY), data, CFG, progress=False, masked=MaskedTraining(_pruned(TINY)))
