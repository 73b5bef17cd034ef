"""Invariants of mnist_pruning.vd: Sparse VD on the narrow LeNet-300-100, 1 epoch on the MNIST subset."""

import pytest
import torch
from tiny import TINY, n_weights, n_zeros, tiny_model
from torch.nn.utils import prune

from mnist_pruning.sparsity.measure import layer_sparsity
from mnist_pruning.sparsity.variational import _variational_layers, kl, to_variational_
from mnist_pruning.train import evaluate
from mnist_pruning.vd import VDConfig, _KLPenalty, sparse_vd

QUICK = VDConfig(epochs=1, batch_size=256, lr=3e-3)


@pytest.fixture(scope="module")
def result(mnist_small):
    return sparse_vd(tiny_model(), mnist_small, QUICK, progress=False)


def test_sparse_vd_returns_the_same_model_class_and_config_with_masks_only(result):
    assert type(result.model) is type(tiny_model()) and result.model.config == TINY
    assert not _variational_layers(result.model)
    assert all(prune.is_pruned(result.model.get_submodule(n)) for n in ("fc1", "fc2", "fc3"))


def test_sparse_vd_reports_the_sparsity_measured_on_its_model(result):
    assert 0 < result.sparsity < 1
    assert result.sparsity == n_zeros(result.model) / n_weights(result.model)
    assert result.layers == layer_sparsity(result.model)
    assert result.epochs == QUICK.epochs and result.seconds > 0


def test_sparse_vd_accuracy_is_the_finalised_models_validation_accuracy(result, mnist_small):
    assert result.accuracy == evaluate(result.model, mnist_small.val_x, mnist_small.val_y)["accuracy"]


def test_kl_weight_rises_linearly_over_the_warmup_then_stays():
    penalty = _KLPenalty(tiny_model(), n=10, weight=2.0, warmup_steps=4)
    weights = []
    for _ in range(6):
        weights.append(penalty.current_weight())
        penalty()
    assert weights == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]


def test_kl_penalty_is_the_weighted_model_kl_over_n():
    model = to_variational_(tiny_model())
    penalty = _KLPenalty(model, n=1000, weight=0.5)
    torch.testing.assert_close(penalty(), 0.5 * kl(model) / 1000)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("threshold", 11.0, r"\[-10, 10\]"),
        ("threshold", float("nan"), r"\[-10, 10\]"),
        ("kl_weight", -0.1, r"\[0, 100\]"),
        ("kl_warmup", 1.5, r"\[0, 1\]"),
        ("epochs", 0, "positive integer"),
        ("epochs", 2.5, "positive integer"),
        ("lr", 0.0, r"\[1e-12, 1\]"),
    ],
)
def test_bad_vd_config_raises_naming_the_field_value_and_range(field, value, allowed):
    with pytest.raises(ValueError, match=rf"{field} must .*{allowed}.*got {value!r}"):
        VDConfig(**{field: value})


def test_sparse_vd_refuses_a_masked_model_before_training(mnist_small):
    model = tiny_model()
    prune.identity(model.fc1, "weight")
    with pytest.raises(ValueError, match="'fc1' has prune masks"):
        sparse_vd(model, mnist_small, QUICK, progress=False)
