"""mnist_pruning.distill: the soft-target loss, its limits, and its refusals."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from mnist_pruning.distill import Distillation
from mnist_pruning.models import build_model


@pytest.fixture
def batch():
    torch.manual_seed(0)
    return torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))


def test_weight_zero_is_plain_cross_entropy(batch):
    x, y = batch
    student = build_model("mlp")
    logits = student(x)
    assert torch.equal(Distillation(build_model("mlp"), weight=0.0)(logits, x, y), F.cross_entropy(logits, y))


def test_a_student_equal_to_its_teacher_has_no_soft_loss(batch):
    x, y = batch
    student = build_model("mlp")
    loss = Distillation(copy.deepcopy(student), temperature=3.0, weight=0.4)(student(x), x, y)
    torch.testing.assert_close(loss, 0.6 * F.cross_entropy(student(x), y))


def test_the_loss_is_hintons_weighted_sum(batch):
    x, y = batch
    student, teacher = build_model("mlp"), build_model("mlp")
    t, w = 2.0, 0.5
    logits = student(x)
    soft = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(teacher(x) / t, 1), reduction="batchmean")
    expected = (1 - w) * F.cross_entropy(logits, y) + w * t * t * soft
    torch.testing.assert_close(Distillation(teacher, t, w)(logits, x, y), expected)


def test_the_teacher_gets_no_gradient(batch):
    x, y = batch
    student, teacher = build_model("mlp"), build_model("mlp")
    Distillation(teacher)(student(x), x, y).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.requires_grad for p in teacher.parameters())  # the caller's model is left as it was


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 0.0}, r"distillation temperature must be a number in \[1e-06, 20\], got 0.0"),
        ({"temperature": 50}, r"distillation temperature must be a number in \[1e-06, 20\], got 50"),
        ({"weight": 1.5}, r"distillation weight must be a number in \[0, 1\], got 1.5"),
    ],
)
def test_bad_temperature_or_weight_raise_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Distillation(build_model("mlp"), **kwargs)
