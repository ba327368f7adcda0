"""Parameter counts (computed by hand in the comments) and forward shapes of each model."""

import pytest
import torch

from fedmap.errors import ConfigError
from fedmap.models.cnn import FedAvgCNN
from fedmap.models.mlp import MLP
from fedmap.models.resnet20 import ResNet20
from fedmap.models.simple_cnn import SimpleCNN


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_mlp_matches_fedavg_2nn_count():
    # 784*200+200 + 200*200+200 + 200*10+10
    assert count_parameters(MLP((1, 28, 28), 10)) == 199_210


def test_fedavg_cnn_matches_paper_count():
    # conv 1*32*25+32, conv 32*64*25+64, fc 3136*512+512, fc 512*10+10
    assert count_parameters(FedAvgCNN((1, 28, 28), 10)) == 1_663_370


def test_fedavg_cnn_on_8x8_digits_has_fc_of_64x2x2():
    model = FedAvgCNN((1, 8, 8), 10)
    assert model.fc1.in_features == 64 * 2 * 2


def test_simple_cnn_matches_pfl_research_count():
    # conv 3*32*9+32, conv 32*64*9+64, fc 12544*128+128, fc 128*10+10
    assert count_parameters(SimpleCNN()) == 1_626_442


def test_simple_cnn_dropout_is_off_in_eval_mode():
    model = SimpleCNN().eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), model(x))


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_resnet20_count_is_the_papers_027m(norm):
    # stem 432+32; stage1 3*(2*2304+64); stage2 13952+2*18560; stage3 55552+2*73984; head 650
    count = count_parameters(ResNet20(norm=norm))
    assert count == 269_722
    assert 260_000 <= count <= 280_000


def test_resnet20_group_norm_uses_two_groups_and_has_no_batchnorm():
    model = ResNet20(norm="group")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 2 for m in norms)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_resnet20_unknown_norm_is_a_config_error():
    with pytest.raises(ConfigError, match="norm"):
        ResNet20(norm="layer")


@pytest.mark.parametrize(
    ("model", "input_shape"),
    [
        (MLP((1, 28, 28), 10), (1, 28, 28)),
        (MLP((1, 8, 8), 10), (1, 8, 8)),
        (FedAvgCNN((1, 28, 28), 10), (1, 28, 28)),
        (FedAvgCNN((1, 8, 8), 10), (1, 8, 8)),
        (SimpleCNN((3, 32, 32), 10), (3, 32, 32)),
        (ResNet20((3, 32, 32), 10, norm="batch"), (3, 32, 32)),
        (ResNet20((3, 32, 32), 10, norm="group"), (3, 32, 32)),
    ],
)
def test_forward_gives_one_logit_row_per_sample(model, input_shape):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, *input_shape, generator=generator)
    logits = model(x)
    assert logits.shape == (4, 10)
    assert torch.isfinite(logits).all()


def test_num_classes_sets_the_head_width():
    assert MLP((1, 8, 8), 3)(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
