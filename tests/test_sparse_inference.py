"""Sparse inference: converted models compute what the dense ones do, the CSR kernels really run when chosen, and
bad models are refused with the layer named.

Nothing here is timed: every plan is forced (``force=``), so the tests do not depend on the machine's speed;
``bench/sparse_speed.py`` measures. Random weights throughout: the kernels do not care what the weights learned.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mnist_pruning import sparsity as sp
from mnist_pruning.models import SAMPLE_SHAPE, build_model
from mnist_pruning.sparsity.inference import apply_sparse_plan, plan_sparse_inference
from mnist_pruning.sparsity.kernels import SparseConv2d, SparseLinear

BOTH = {1: "sparse", 256: "sparse"}
# float32 sums in another order: the CSR product adds the same terms as the dense one, minus the zeros.
TOL = {"rtol": 1e-4, "atol": 1e-5}


def pruned(arch: str, method: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(arch)
    if method == "structured":
        model = sp.shrink(model, 0.5)  # smaller dense layers, no zeros: then pruned further to have some
        sp.sparsify_(model, "global", 0.8)
    elif method == "nm":
        sp.sparsify_(model, "nm", pattern="2:4")
    else:
        sp.sparsify_(model, method, 0.9)
    return sp.bake_in(model).eval()


def convert(model: nn.Module, shape=SAMPLE_SHAPE, force=BOTH, **options) -> nn.Module:
    return apply_sparse_plan(model, plan_sparse_inference(model, shape, force=force, **options))


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


def sparse_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, SparseConv2d) or (isinstance(m, SparseLinear) and m.weight_csr is not None)
    }


@pytest.mark.parametrize("method", ["l1", "global", "nm", "structured"])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_sparse_model_outputs_match_the_dense_model(arch: str, method: str) -> None:
    model = pruned(arch, method)
    fast = convert(model)
    assert set(sparse_layers(fast)) == {name for name, _ in sp.prunable_layers(model)}
    for batch in (1, 5, 40):  # 40 rows take the kernel chosen for batch 256
        x = torch.randn(batch, *SAMPLE_SHAPE)
        torch.testing.assert_close(outputs(fast, x), outputs(model, x), **TOL)


def test_channels_last_cnn_outputs_match_and_keep_their_memory_format() -> None:
    model = pruned("cnn", "global").to(memory_format=torch.channels_last)
    fast = convert(model)
    x = torch.randn(6, *SAMPLE_SHAPE)
    torch.testing.assert_close(outputs(fast, x), outputs(model, x), **TOL)
    with torch.inference_mode():
        y = fast.conv2(nn.functional.max_pool2d(fast.conv1(x), 2))
    assert fast.conv2.channels_last and y.is_contiguous(memory_format=torch.channels_last)


def odd_convnet() -> nn.Sequential:
    # Every convolution option the CSR matrix has to get right: padding, stride, groups, dilation, "same", no bias.
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, groups=2, bias=False),
        nn.ReLU(),
        nn.Conv2d(8, 6, (3, 2), dilation=(2, 1), padding="same"),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 3 * 3, 32, bias=False),
        nn.Tanh(),
        nn.Linear(32, 10),
    )


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # the asymmetric case, on purpose
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_non_lenet_sequential_outputs_match(memory_format: torch.memory_format) -> None:
    torch.manual_seed(0)
    model = sp.bake_in(sp.sparsify_(odd_convnet(), "global", 0.7)).eval().to(memory_format=memory_format)
    fast = convert(model, (3, 13, 14))
    assert len(sparse_layers(fast)) == 5
    for batch in (1, 7):
        x = torch.randn(batch, 3, 13, 14)
        torch.testing.assert_close(outputs(fast, x), outputs(model, x), **TOL)


def test_unbatched_conv_input_and_3d_linear_input_match() -> None:
    torch.manual_seed(0)
    conv = sp.bake_in(sp.sparsify_(nn.Sequential(nn.Conv2d(2, 4, 3)), "l1", 0.5)).eval()
    x = torch.randn(2, 9, 9)
    torch.testing.assert_close(outputs(convert(conv, (2, 9, 9)), x), outputs(conv, x), **TOL)
    tokens = sp.bake_in(sp.sparsify_(nn.Sequential(nn.Linear(16, 8), nn.GELU(), nn.Linear(8, 4)), "l1", 0.5))
    x = torch.randn(3, 5, 16)  # [batch, tokens, features]: the Linear layers see 15 rows
    torch.testing.assert_close(outputs(convert(tokens.eval(), (5, 16)), x), outputs(tokens, x), **TOL)


def test_forced_sparse_layer_holds_exactly_the_dense_weights_non_zeros_as_csr() -> None:
    model = pruned("mlp", "global")
    fast = convert(model, filter_fn=lambda module, name: name == "fc2")
    layer = fast.fc2
    assert isinstance(layer, SparseLinear)
    assert layer.weight_csr.layout == torch.sparse_csr
    assert layer.weight_csr.values().numel() == int(torch.count_nonzero(model.fc2.weight))
    torch.testing.assert_close(layer.weight_csr.to_dense(), model.fc2.weight.detach(), rtol=0, atol=0)
    assert layer.weight is None  # sparse at every batch size: no dense copy kept
    assert isinstance(fast.fc1, nn.Linear) and isinstance(fast.fc3, nn.Linear)  # not chosen by filter_fn


def test_conv_csr_matrix_holds_each_non_zero_weight_once_per_output_position() -> None:
    model = pruned("cnn", "l1")  # valid 5x5 convolutions: every tap of every position lies inside the input
    fast = convert(model)
    assert isinstance(fast.conv2, SparseConv2d)
    out_positions = 8 * 8
    assert fast.conv2.weight_csr.values().numel() == int(torch.count_nonzero(model.conv2.weight)) * out_positions


def test_model_without_zeros_converts_to_a_plain_dense_copy() -> None:
    torch.manual_seed(0)
    model = build_model("cnn").eval()
    plan = plan_sparse_inference(model, SAMPLE_SHAPE, force="sparse")
    assert [row.reason for row in plan] == ["no zeros"] * 4 and not any(row.any_sparse for row in plan)
    fast = apply_sparse_plan(model, plan)
    assert fast is not model and sparse_layers(fast) == {}
    assert not any(isinstance(m, SparseLinear) for m in fast.modules())
    x = torch.randn(3, *SAMPLE_SHAPE)
    torch.testing.assert_close(outputs(fast, x), outputs(model, x), rtol=0, atol=0)


def test_structured_model_alone_has_no_zeros_so_stays_dense() -> None:
    torch.manual_seed(0)
    small = sp.shrink(build_model("mlp"), 0.5).eval()
    fast = sp.to_sparse_inference(small, SAMPLE_SHAPE, force="sparse")
    assert sparse_layers(fast) == {}
    x = torch.randn(4, *SAMPLE_SHAPE)
    torch.testing.assert_close(outputs(fast, x), outputs(small, x), rtol=0, atol=0)


def test_batch_sizes_use_the_choice_of_the_nearest_measured_size_on_a_log_scale() -> None:
    model = pruned("mlp", "global")
    fast = convert(model, force={1: "dense", 256: "sparse"})
    for name in ("fc1", "fc2", "fc3"):  # spoil the dense copies: only inputs that take the dense kernel see them
        fast.get_submodule(name).weight.zero_()
    for n in (1, 15, 16, 300):  # sqrt(1 * 256) = 16 is the cut
        x = torch.randn(n, *SAMPLE_SHAPE)
        assert torch.allclose(outputs(fast, x), outputs(model, x), **TOL) == (n >= 16), n


def test_converted_model_leaves_the_original_untouched_and_is_in_eval_mode() -> None:
    model = pruned("mlp", "global").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = convert(model)
    assert model.training and not fast.training
    assert isinstance(model.fc1, nn.Linear) and not isinstance(model.fc1, SparseLinear)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_sparse_conv_refuses_an_input_of_another_size() -> None:
    fast = convert(pruned("cnn", "global"))
    with pytest.raises(ValueError, match=r"converted for inputs of shape \(1, 28, 28\), got \(1, 32, 32\)"):
        outputs(fast.conv1, torch.randn(2, 1, 32, 32))


# ------------------------------------------------------------------------------------------------ refusals


def test_masks_still_attached_are_refused_naming_the_layer() -> None:
    torch.manual_seed(0)
    model = sp.sparsify_(build_model("mlp"), "global", 0.9)
    message = r"layer 'fc1' \(Linear\) still carries pruning masks \['weight'\].*bake_in\(model\) first"
    with pytest.raises(ValueError, match=message):
        sp.to_sparse_inference(model, SAMPLE_SHAPE, force="sparse")


def test_float64_layer_is_refused_naming_the_layer_and_dtype() -> None:
    model = pruned("mlp", "global").double()
    with pytest.raises(ValueError, match=r"layer 'fc1' \(Linear\) is torch\.float64; only float32"):
        sp.to_sparse_inference(model, SAMPLE_SHAPE, force="sparse")


def test_integer_layer_is_refused_naming_the_layer_and_dtype() -> None:
    model = nn.Sequential(nn.Linear(4, 2))
    model[0].weight = nn.Parameter(torch.ones(2, 4, dtype=torch.int64), requires_grad=False)
    with pytest.raises(ValueError, match=r"layer '0' \(Linear\) is torch\.int64"):
        sp.to_sparse_inference(model, (4,), force="sparse")


def test_pruned_layer_of_an_unsupported_type_is_refused_naming_it() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.LSTM(8, 8))
    with torch.no_grad():
        model[1].weight_hh_l0[0, :4] = 0
    with pytest.raises(ValueError, match=r"layer '1' is a LSTM whose \['weight_hh_l0'\] have zeros"):
        sp.plan_sparse_inference(model, (8,), force="sparse")


def test_unpruned_modules_of_other_types_just_stay() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 3))  # LayerNorm: zero bias, no pruning
    model = sp.bake_in(sp.sparsify_(model, "l1", 0.5)).eval()
    fast = sp.to_sparse_inference(model, (8,), force="sparse")
    assert isinstance(fast[1], nn.LayerNorm)
    x = torch.randn(5, 8)
    torch.testing.assert_close(outputs(fast, x), outputs(model, x), **TOL)


def test_conv_with_reflect_padding_is_refused_naming_the_layer() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match=r"layer '0' \(Conv2d\) pads with 'reflect'"):
        sp.plan_sparse_inference(model, (1, 8, 8), force="sparse")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"force": "fast"}, r"unknown force 'fast'"),
        ({"force": {1: "sparse"}}, r"force must be .* every batch size \(1, 256\)"),
        ({"batch_sizes": ()}, r"batch_sizes must be a non-empty sequence"),
        ({"batch_sizes": (0, 256)}, r"every batch size of \(0, 256\) must be a positive integer, got 0"),
        ({"max_density": 1.5}, r"max_density must be a number in \[0, 1\], got 1.5"),
        ({"min_run_time": 0}, r"min_run_time must be a number of seconds > 0, got 0"),
    ],
)
def test_bad_options_are_refused_naming_the_value(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sp.plan_sparse_inference(pruned("mlp", "global"), SAMPLE_SHAPE, **options)


def test_a_plan_for_other_weights_is_refused() -> None:
    model = pruned("mlp", "global")
    plan = plan_sparse_inference(model, SAMPLE_SHAPE, force="sparse")
    other = pruned("mlp", "l1")
    with pytest.raises(ValueError, match=r"layer 'fc1' has changed since the plan was made"):
        apply_sparse_plan(other, plan)


def test_planning_leaves_the_callers_random_state_alone() -> None:
    model = pruned("mlp", "global")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    plan_sparse_inference(model, SAMPLE_SHAPE, force="sparse")
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)
