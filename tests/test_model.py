"""The ResNet architecture: shapes, names and numbers that must match torchvision."""

import pytest
import torch
import torchvision

from resnet_hub.errors import ResNetHubError
from resnet_hub.model import (
    ARCHITECTURES,
    BasicBlock,
    InvalidDepthError,
    PadShortcut,
    ResNet,
    ResNetConfig,
    UnknownArchitectureError,
    UnknownShortcutError,
    build,
    cifar_architecture,
    weighted_layers,
)

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


# --- the CIFAR-style family (section 4.2 of arXiv:1512.03385), plain nets and shortcut options -----------------


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cifar(depth: int, **overrides) -> ResNet:
    return build(cifar_architecture(depth), num_classes=10, **overrides)


@pytest.mark.parametrize("depth,millions", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)])
def test_cifar_resnets_have_the_papers_layers_and_parameters(depth, millions):
    model = cifar(depth)  # option A, width 16, 3 input channels: the paper's Table 6
    digits = 1 if depth == 110 else 2
    assert weighted_layers(model) == depth
    assert round(_params(model) / 1e6, digits) == millions
    assert [len(getattr(model, s)) for s in model.stage_names] == [(depth - 2) // 6] * 3


@pytest.mark.parametrize("depth", [20, 56])
def test_plain_nets_have_the_same_layers_and_parameters_as_option_a(depth):
    plain, residual = cifar(depth, shortcut="none"), cifar(depth, shortcut="A")
    assert weighted_layers(plain) == weighted_layers(residual) == depth
    assert _params(plain) == _params(residual)
    assert list(plain.state_dict()) == list(residual.state_dict())


def test_cifar_stages_have_16_32_64_channels_times_the_width():
    feats = cifar(20).eval().stage_features(torch.zeros(1, 3, 32, 32))
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == {
        "stem": (16, 32, 32), "layer1": (16, 32, 32), "layer2": (32, 16, 16), "layer3": (64, 8, 8)}
    assert cifar(20, width=4).layer3[0].conv2.out_channels == 16
    assert cifar(20, in_chans=1).eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_option_b_projects_only_where_the_shape_changes_and_c_everywhere():
    a, b, c = (cifar(20, shortcut=s) for s in "ABC")
    def projection(cin: int, cout: int) -> int:
        return cin * cout + 2 * cout  # 1x1 conv + BN

    assert _params(b) - _params(a) == projection(16, 32) + projection(32, 64)
    assert _params(c) - _params(a) == 3 * projection(16, 16) + projection(16, 32) + 2 * projection(32, 32) \
        + projection(32, 64) + 2 * projection(64, 64)
    assert [blk.downsample is not None for blk in b.layer2] == [True, False, False]
    assert all(blk.downsample is not None for s in c.stage_names for blk in getattr(c, s))


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
    block = cifar(20).layer2[0]
    assert isinstance(block.downsample, PadShortcut) and not list(block.downsample.parameters())
    x = torch.randn(2, 16, 7, 7)
    out = block.downsample(x)
    assert out.shape == (2, 32, 4, 4) == block.conv1(x).shape
    torch.testing.assert_close(out[:, :16], x[:, :, ::2, ::2])
    assert not out[:, 16:].any()


@pytest.mark.parametrize("shortcut", ["A", "B", "C"])
def test_a_residual_block_adds_its_input_and_a_plain_block_does_not(shortcut):
    torch.manual_seed(0)
    residual, plain = cifar(20, shortcut=shortcut).eval(), cifar(20, shortcut="none").eval()
    plain.load_state_dict({k: v for k, v in residual.state_dict().items() if "downsample" not in k})
    x = torch.randn(2, 16, 8, 8)
    r, p = residual.layer1[1], plain.layer1[1]
    with torch.no_grad():
        branch = p.bn2(p.conv2(p.relu(p.bn1(p.conv1(x)))))
        shortcut_x = x if r.downsample is None else r.downsample(x)
        torch.testing.assert_close(p(x), torch.relu(branch))
        torch.testing.assert_close(r(x), torch.relu(branch + shortcut_x))


def test_with_every_branch_zeroed_a_residual_net_passes_its_input_on_and_a_plain_net_passes_nothing():
    x = torch.rand(2, 1, 28, 28) + 0.1  # positive, so the stem's ReLU keeps something
    outputs = {}
    for shortcut in ("A", "none"):
        model = cifar(20, in_chans=1, shortcut=shortcut).eval()
        for m in model.modules():
            if isinstance(m, BasicBlock):
                torch.nn.init.zeros_(m.bn2.weight), torch.nn.init.zeros_(m.bn2.bias)
        with torch.no_grad():
            outputs[shortcut] = model.forward_features(x)
    assert outputs["A"].abs().sum() > 0
    assert not outputs["none"].any()
    assert not any(b.downsample is not None or b.residual for b in cifar(56, shortcut="none").modules()
                   if isinstance(b, BasicBlock))


def test_imagenet_family_takes_the_shortcut_options_too():
    projections = {"resnet18": 64 * 128 + 256 + 128 * 256 + 512 + 256 * 512 + 1024}
    assert _params(build("resnet18", shortcut="A")) == _params(build("resnet18", shortcut="none")) \
        == PARAMS["resnet18"] - projections["resnet18"]
    assert _params(build("resnet18", shortcut="B")) == PARAMS["resnet18"]
    model = build("resnet50", shortcut="A").eval()  # zero padding from 64 to 256 channels in layer1
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def test_without_batchnorm_every_norm_is_an_identity():
    model = cifar(20, batchnorm=False, shortcut="B")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("name", ["cifar-resnet21", "cifar-resnet2", "cifar-resnet57"])
def test_depths_that_are_not_6n_plus_2_name_the_valid_ones(name):
    with pytest.raises(InvalidDepthError, match=r"not 6n\+2.*8, 14, 20.*20, 32, 44, 56, 110") as err:
        ResNetConfig(name)
    assert isinstance(err.value, ResNetHubError) and isinstance(err.value, ValueError)
    with pytest.raises(InvalidDepthError, match="21"):
        cifar_architecture(21)


def test_unknown_shortcut_option_names_the_choices():
    with pytest.raises(UnknownShortcutError, match=r"'D'.*A \(identity.*B \(1x1.*C \(1x1.*none \(no shortcut"):
        ResNetConfig("cifar-resnet20", shortcut="D")


def test_zero_init_residual_is_refused_for_a_plain_net():
    with pytest.raises(ValueError, match="zero_init_residual needs a shortcut"):
        ResNetConfig("cifar-resnet20", shortcut="none", zero_init_residual=True)


def test_imagenet_config_dict_is_what_it_always_was():
    assert ResNetConfig("resnet18").to_dict() == {
        "architecture": "resnet18", "num_classes": 1000, "in_chans": 3, "stem": "imagenet", "zero_init_residual": False}
    legacy = {"architecture": "resnet50", "num_classes": 10, "in_chans": 3, "stem": "small", "zero_init_residual": True}
    assert ResNetConfig.from_dict(legacy).shortcut == "B" and ResNetConfig.from_dict(legacy).width == 64


def test_cifar_config_round_trips_through_a_dict():
    config = ResNetConfig("cifar-resnet56", num_classes=10, in_chans=1, shortcut="none", width=4, batchnorm=False)
    assert (config.stem, config.layers, config.num_features) == ("small", (9, 9, 9), 16)
    assert ResNetConfig.from_dict(config.to_dict()) == config
    assert ResNetConfig.from_dict(ResNetConfig("cifar-resnet20").to_dict()).shortcut == "A"
