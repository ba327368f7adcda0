"""The registry: names, errors, and the prunable and transmitted tensor lists."""

import pytest
import torch
from torch import nn

from fedmap.errors import ConfigError
from fedmap.models import MODEL_NAMES, build_model, prunable_names, transmitted_names

SHAPES = {
    "mlp": (1, 28, 28),
    "cnn": (1, 28, 28),
    "simple_cnn": (3, 32, 32),
    "resnet20": (3, 32, 32),
}


def test_model_names_are_the_documented_four():
    assert MODEL_NAMES == ("mlp", "cnn", "simple_cnn", "resnet20")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_builds_identical_models(name):
    torch.manual_seed(7)
    first = build_model(name, SHAPES[name], 10).state_dict()
    torch.manual_seed(7)
    second = build_model(name, SHAPES[name], 10).state_dict()
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_unknown_name_is_a_config_error_listing_valid_names():
    with pytest.raises(ConfigError, match="model.name") as info:
        build_model("vgg16", (3, 32, 32), 10)
    for name in MODEL_NAMES:
        assert name in str(info.value)


def test_simple_cnn_on_mnist_shape_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model\.name.*\(3, 32, 32\).*\(1, 28, 28\)"):
        build_model("simple_cnn", (1, 28, 28), 10)


def test_cnn_on_size_not_divisible_by_4_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model\.name='cnn'.*divisible by 4"):
        build_model("cnn", (1, 30, 30), 10)


@pytest.mark.parametrize("name", ["cnn", "simple_cnn", "resnet20"])
def test_image_model_on_flat_shape_is_a_config_error(name):
    with pytest.raises(ConfigError, match=r"model\.name.*\(C, H, W\)"):
        build_model(name, (784,), 10)


def test_empty_shape_is_a_config_error():
    with pytest.raises(ConfigError, match="model.name"):
        build_model("mlp", (), 10)


def test_zero_classes_is_a_config_error():
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("mlp", (1, 8, 8), 0)


def test_prunable_names_of_fedavg_cnn_are_its_four_weights():
    model = build_model("cnn", (1, 28, 28), 10)
    assert prunable_names(model) == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_prunable_names_are_every_conv_and_linear_weight_and_nothing_else(name):
    model = build_model(name, SHAPES[name], 10)
    names = prunable_names(model)
    layers = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    expected = {f"{p}.weight" for p, m in model.named_modules() if isinstance(m, layers)}
    assert set(names) == expected
    keys = list(model.state_dict())
    assert names == [key for key in keys if key in expected]  # state_dict order
    assert not any(key.endswith("bias") for key in names)


def test_resnet20_prunable_names_skip_norm_parameters():
    model = build_model("resnet20", (3, 32, 32), 10)
    names = prunable_names(model)
    assert len(names) == 20  # 19 convs + the head: the "20" in ResNet-20
    assert "norm1.weight" not in names
    assert not any(".norm" in key or key.startswith("norm") for key in names)


def test_prunable_names_cover_conv1d_and_conv3d_and_a_bare_linear():
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Conv3d(1, 2, 3), nn.LayerNorm(4), nn.Linear(4, 2))
    assert prunable_names(model) == ["0.weight", "1.weight", "3.weight"]
    assert prunable_names(nn.Linear(3, 2)) == ["weight"]


def test_transmitted_names_include_bn_running_stats_but_not_batch_counter():
    model = build_model("resnet20", (3, 32, 32), 10)
    names = transmitted_names(model)
    assert "norm1.running_mean" in names
    assert "norm1.running_var" in names
    assert not any(key.endswith("num_batches_tracked") for key in names)
    state = model.state_dict()
    assert names == [key for key in state if not key.endswith("num_batches_tracked")]


@pytest.mark.parametrize("name", ["mlp", "cnn", "simple_cnn"])
def test_transmitted_names_of_models_without_buffers_are_all_parameters(name):
    model = build_model(name, SHAPES[name], 10)
    assert transmitted_names(model) == [key for key, _ in model.named_parameters()]


def test_group_norm_resnet20_transmits_only_parameters():
    from fedmap.models.resnet20 import ResNet20

    model = ResNet20(norm="group")
    assert transmitted_names(model) == [key for key, _ in model.named_parameters()]
