import pytest
import torch

from mnist_pruning.models import _MLP, SAMPLE_SHAPE, ModelConfig, _LeNet5, build_model
from mnist_pruning.sparsity.measure import count_nonzero_parameters, count_parameters, prunable_layers
from mnist_pruning.sparsity.structured import _resolve_links


@pytest.mark.parametrize(("name", "expected"), [("mlp", 266_610), ("cnn", 431_080)])
def test_parameter_count_matches_the_published_architecture(name, expected):
    assert count_parameters(build_model(name)) == expected


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_forward_maps_a_batch_of_images_to_ten_logits(name):
    assert SAMPLE_SHAPE == (1, 28, 28)
    assert build_model(name)(torch.randn(7, *SAMPLE_SHAPE)).shape == (7, 10)


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


@pytest.mark.parametrize(("cls", "arch"), [(_MLP, "mlp"), (_LeNet5, "cnn")])
def test_model_stores_the_config_it_was_built_from(cls, arch):
    assert cls().config == ModelConfig(arch)  # no config: the published widths
    assert build_model(arch).config == ModelConfig(arch)
    small = ModelConfig(arch, (3,) * len(cls.STRUCTURED))
    assert cls(small).config == small and build_model(small).config == small
    assert isinstance(build_model(small), cls)


def test_a_config_of_the_other_family_is_refused():
    with pytest.raises(ValueError, match="arch 'mlp'.*got 'cnn'"):
        _MLP(ModelConfig("cnn"))


@pytest.mark.parametrize(("arch", "structured"), [("mlp", ("fc1", "fc2")), ("cnn", ("conv1", "conv2", "fc1"))])
def test_structured_links_join_every_structured_layer_to_the_next(arch, structured):
    model = build_model(arch)
    assert type(model).STRUCTURED == structured
    links = _resolve_links(model)  # checked: names exist, the consumer's inputs fit the producer's units
    assert [link.producer for link in links] == list(structured)
    layers = [n for n, _ in prunable_layers(model)]
    assert [link.consumer for link in links] == [layers[layers.index(p) + 1] for p in structured]


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_with_widths_is_a_fresh_model_of_the_same_family(arch):
    model = build_model(arch)
    first = type(model).STRUCTURED[0]
    small = model.with_widths({first: 7})
    assert type(small) is type(model) and small is not model
    assert small.config.widths == (7, *model.config.widths[1:])
    assert getattr(small, first).weight.shape[0] == 7
    assert model.config == ModelConfig(arch)  # the original is untouched
    assert small(torch.randn(2, *SAMPLE_SHAPE)).shape == (2, 10)


@pytest.mark.parametrize("bad", ["resnet", "", "MLP"])
def test_unknown_model_name_raises_naming_the_allowed_ones(bad):
    with pytest.raises(ValueError, match=r"unknown model .*allowed: 'mlp', 'cnn'"):
        build_model(bad)


@pytest.mark.parametrize(
    ("widths", "message"),
    [((300,), "widths for 'mlp'"), ((0, 10), r"width.*got 0"), ((3.5, 2), r"width.*got 3\.5")],
)
def test_bad_widths_raise_naming_them(widths, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig("mlp", widths)


def test_nonzero_count_sees_the_zeros():
    m = build_model("mlp")
    with torch.no_grad():
        m.fc3.weight.zero_()
    assert count_nonzero_parameters(m) == 266_610 - 1000
