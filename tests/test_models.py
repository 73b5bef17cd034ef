import pytest
import torch

from mnist_pruning.models import (
    ModelConfig,
    build_model,
    count_nonzero_parameters,
    count_parameters,
    prunable_layers,
)


@pytest.mark.parametrize(("name", "expected"), [("mlp", 266_610), ("cnn", 431_080)])
def test_parameter_count_matches_the_published_architecture(name, expected):
    assert count_parameters(build_model(name)) == expected


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_forward_maps_a_batch_of_images_to_ten_logits(name):
    assert build_model(name)(torch.randn(7, 1, 28, 28)).shape == (7, 10)


def test_prunable_layers_are_every_linear_and_conv_in_forward_order():
    assert [n for n, _ in prunable_layers(build_model("mlp"))] == ["fc1", "fc2", "fc3"]
    assert [n for n, _ in prunable_layers(build_model("cnn"))] == ["conv1", "conv2", "fc1", "fc2"]


def test_cnn_layer_shapes_are_the_caffe_lenet5():
    m = build_model("cnn")
    assert m.conv1.weight.shape == (20, 1, 5, 5)
    assert m.conv2.weight.shape == (50, 20, 5, 5)
    assert m.fc1.weight.shape == (500, 800)
    assert m.fc2.weight.shape == (10, 500)


def test_model_rebuilds_from_smaller_widths():
    m = build_model(ModelConfig("cnn", (4, 6, 30)))
    assert m.fc1.in_features == 6 * 16
    assert count_parameters(m) == (4 * 25 + 4) + (6 * 4 * 25 + 6) + (96 * 30 + 30) + (30 * 10 + 10)
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_config_round_trips_through_a_plain_dict():
    c = ModelConfig("mlp", (12, 5))
    assert ModelConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("bad", ["resnet", "", "MLP"])
def test_unknown_model_name_raises_naming_the_allowed_ones(bad):
    with pytest.raises(ValueError, match=r"unknown model .*allowed: 'mlp', 'cnn'"):
        build_model(bad)


@pytest.mark.parametrize("widths", [(300,), (0, 10), (3.5, 2)])
def test_bad_widths_raise(widths):
    with pytest.raises(ValueError, match="widths for 'mlp'"):
        ModelConfig("mlp", widths)


def test_nonzero_count_sees_the_zeros():
    m = build_model("mlp")
    with torch.no_grad():
        m.fc3.weight.zero_()
    assert count_nonzero_parameters(m) == 266_610 - 1000
