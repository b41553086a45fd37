"""The ResNet architecture: shapes, names and numbers that must match torchvision."""

import pytest
import torch
import torchvision

from resnet_hub.model import ARCHITECTURES, ResNet, ResNetConfig, UnknownArchitectureError, build

from .conftest import ARCHS, randomize_batchnorm

PARAMS = {"resnet18": 11_689_512, "resnet50": 25_557_032}


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_count_matches_the_paper_models(arch):
    assert sum(p.numel() for p in build(arch).parameters()) == PARAMS[arch]


@pytest.mark.parametrize("arch", ["resnet34", "resnet101", "resnet152"])
def test_deeper_family_members_match_torchvision_parameter_counts(arch):
    ours = sum(p.numel() for p in build(arch).parameters())
    theirs = sum(p.numel() for p in getattr(torchvision.models, arch)().parameters())
    assert ours == theirs


@pytest.mark.parametrize("arch", ARCHS)
def test_torchvision_state_dict_loads_strictly_and_gives_the_same_logits(arch):
    torch.manual_seed(0)
    reference = randomize_batchnorm(getattr(torchvision.models, arch)()).eval()
    ours = build(arch).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_names_are_torchvisions(arch):
    assert list(build(arch).state_dict()) == list(getattr(torchvision.models, arch)().state_dict())


def test_bottleneck_puts_the_stride_on_the_3x3_conv():
    block = build("resnet50").layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)


def test_projection_shortcut_only_where_the_shape_changes():
    model = build("resnet18")
    assert model.layer1[0].downsample is None
    assert [model.layer2[0].downsample[0].kernel_size, model.layer2[1].downsample] == [(1, 1), None]
    assert build("resnet50").layer1[0].downsample is not None  # 64 -> 256 channels


def test_small_stem_keeps_resolution_for_digit_sized_inputs():
    model = build("resnet18", stem="small", num_classes=10).eval()
    assert model.conv1.kernel_size == (3, 3) and isinstance(model.maxpool, torch.nn.Identity)
    feats = model.stage_features(torch.zeros(1, 3, 32, 32))
    assert feats["stem"].shape[-1] == 32 and feats["layer4"].shape[-1] == 4
    assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("arch", ARCHS)
def test_stage_features_have_the_documented_shapes(arch):
    expansion = 1 if arch == "resnet18" else 4
    feats = build(arch).eval().stage_features(torch.zeros(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "stem": (1, 64, 16, 16),
        "layer1": (1, 64 * expansion, 16, 16),
        "layer2": (1, 128 * expansion, 8, 8),
        "layer3": (1, 256 * expansion, 4, 4),
        "layer4": (1, 512 * expansion, 2, 2),
    }


def test_input_channels_are_configurable():
    assert build("resnet18", in_chans=1).eval()(torch.zeros(1, 1, 32, 32)).shape == (1, 1000)


def test_freezing_stops_gradients_and_batchnorm_statistics_of_frozen_stages():
    model = build("resnet18")
    model.freeze(2)
    model.train()
    frozen = [model.conv1, model.bn1, model.layer1, model.layer2]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for m in (model.layer3, model.layer4, model.fc) for p in m.parameters())
    assert not model.bn1.training and not model.layer2[0].bn1.training
    assert model.layer3[0].bn1.training
    mean_before = model.layer1[0].bn1.running_mean.clone()
    model(torch.randn(4, 3, 64, 64))
    torch.testing.assert_close(model.layer1[0].bn1.running_mean, mean_before)


def test_freeze_minus_one_trains_everything():
    model = build("resnet18")
    model.freeze(4)
    model.freeze(-1)
    assert all(p.requires_grad for p in model.parameters()) and model.train().bn1.training


def test_freezing_more_stages_than_exist_is_an_error():
    with pytest.raises(ValueError, match="between -1 and 4"):
        build("resnet18").freeze(5)


def test_reset_head_gives_a_new_classifier():
    model = build("resnet50").eval()
    model.reset_head(7)
    assert model.fc.out_features == 7 and model.config.num_classes == 7
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 7)


def test_zero_init_residual_makes_each_block_start_as_identity_branch():
    model = build("resnet50", zero_init_residual=True)
    assert all(float(b.bn3.weight.abs().sum()) == 0 for stage in (model.layer1, model.layer4) for b in stage)


def test_kaiming_initialisation_of_convolutions():
    conv = build("resnet50").layer3[0].conv2  # 3x3, 256 -> 256
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)


def test_unknown_architecture_names_the_choices():
    with pytest.raises(UnknownArchitectureError, match="resnet51.*resnet18, resnet34, resnet50"):
        ResNetConfig("resnet51")


@pytest.mark.parametrize("field,value", [("num_classes", 0), ("in_chans", 0), ("stem", "tiny")])
def test_nonsense_config_values_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        ResNetConfig("resnet18", **{field: value})


def test_config_round_trips_through_a_dict():
    config = ResNetConfig("resnet34", num_classes=5, stem="small", in_chans=1)
    assert ResNetConfig.from_dict(config.to_dict()) == config
    assert config.layers == ARCHITECTURES["resnet34"][1] and config.block == "basic"


def test_model_is_a_plain_nn_module_built_from_config():
    model = ResNet(ResNetConfig("resnet18", num_classes=3)).eval()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
