"""The ResNet family: one typed config, BasicBlock, Bottleneck, ResNet.

Architecture only: nothing here reads a file or knows about the Hub. Module
names are torchvision's (``conv1``, ``bn1``, ``layer1..4``, ``downsample``,
``fc``), so state_dict keys of torchvision and timm checkpoints match key for key.

Two families from one set of blocks: the ImageNet ResNets (``resnet18`` ..
``resnet152``, Table 1) and the CIFAR-style ResNets of section 4.2
(``cifar-resnet20``, ``-32``, ``-44``, ``-56``, ``-110``: 6n+2 layers, three stages
of 16/32/64 channels). ``shortcut`` picks the paper's options A, B and C, or
``"none"``: the *plain* network, the same layers without any shortcut.

Deep Residual Learning for Image Recognition, He et al., arXiv:1512.03385.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ResNetHubError

BlockType = Literal["basic", "bottleneck"]
StemType = Literal["imagenet", "small"]
ShortcutType = Literal["A", "B", "C", "none"]
NormLayer = Callable[[int], nn.Module]

# name -> (block, blocks per stage), as in Table 1 of arXiv:1512.03385.
ARCHITECTURES: dict[str, tuple[BlockType, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}
STAGES = ("layer1", "layer2", "layer3", "layer4")

# Section 4.2 of arXiv:1512.03385: "cifar-resnet{6n+2}", n basic blocks in each of three stages. The paper's depths:
CIFAR_PREFIX = "cifar-resnet"
CIFAR_DEPTHS = (20, 32, 44, 56, 110)
SHORTCUTS: dict[str, str] = {
    "A": "identity; zero-padded channels and stride-2 subsampling where the shape changes (no parameters)",
    "B": "1x1 projection where the shape changes, identity elsewhere",
    "C": "1x1 projection in every block",
    "none": "no shortcut: a plain network",
}
_CIFAR_RE = re.compile(rf"^{CIFAR_PREFIX}([1-9]\d*)$")


class UnknownArchitectureError(ResNetHubError, ValueError):
    """The architecture name is not one of :data:`ARCHITECTURES` nor ``cifar-resnet{6n+2}``."""


class InvalidDepthError(UnknownArchitectureError):
    """A CIFAR-style depth that is not 6n+2."""


class UnknownShortcutError(ResNetHubError, ValueError):
    """The shortcut option is not one of :data:`SHORTCUTS`."""


def cifar_architecture(depth: int) -> str:
    """The CIFAR-style architecture name for ``depth`` layers: ``cifar_architecture(56) == "cifar-resnet56"``."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise InvalidDepthError(
            f"depth {depth!r} is not 6n+2 (n >= 1): CIFAR-style ResNets have 6n+2 layers (8, 14, 20, 26, 32, ...); "
            f"the paper's are {', '.join(map(str, CIFAR_DEPTHS))}"
        )
    return f"{CIFAR_PREFIX}{depth}"


@dataclass(frozen=True)
class ResNetConfig:
    """Everything that decides the shapes of a ResNet's parameters.

    ``stem="imagenet"`` is the 7x7/2 conv + 3x3/2 max-pool of the paper (224 px
    inputs); ``stem="small"`` is a 3x3/1 conv with no pooling, for 28-64 px inputs.
    ``None`` (``stem``, ``shortcut``, ``width``) is the family's own, filled in on
    construction: ImageNet family "imagenet", "B", 64; CIFAR family "small", "A", 16.

    >>> ResNetConfig("cifar-resnet56", num_classes=10, shortcut="none").layers  # plain-56
    (9, 9, 9)
    """

    architecture: str = "resnet50"
    num_classes: int = 1000
    in_chans: int = 3
    stem: StemType | None = None
    # Zero-init the last BN in each residual branch so that every block starts
    # as the identity: +0.2~0.3% top-1, arXiv:1706.02677.
    zero_init_residual: bool = False
    shortcut: ShortcutType | None = None  # see SHORTCUTS
    width: int | None = None  # channels of the first stage; each later stage doubles them
    batchnorm: bool = True  # False: every BatchNorm is an identity (to watch what BN does for depth)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            match = _CIFAR_RE.match(str(self.architecture))
            if match is None:
                raise UnknownArchitectureError(
                    f"unknown architecture {self.architecture!r}: choose one of {', '.join(ARCHITECTURES)}, "
                    f"or {CIFAR_PREFIX}N with N = 6n+2 ({', '.join(map(str, CIFAR_DEPTHS))})"
                )
            cifar_architecture(int(match.group(1)))
        cifar = self.family == "cifar"
        for name, value in (("stem", "small" if cifar else "imagenet"), ("shortcut", "A" if cifar else "B"),
                            ("width", 16 if cifar else 64)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {self.num_classes}")
        if self.in_chans < 1:
            raise ValueError(f"in_chans must be at least 1, got {self.in_chans}")
        if self.stem not in ("imagenet", "small"):
            raise ValueError(f"stem must be 'imagenet' or 'small', got {self.stem!r}")
        if self.shortcut not in SHORTCUTS:
            raise UnknownShortcutError(
                f"unknown shortcut option {self.shortcut!r}: choose "
                + "; ".join(f"{k} ({v})" for k, v in SHORTCUTS.items())
            )
        if isinstance(self.width, bool) or not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"width (channels of the first stage) must be a whole number >= 1, got {self.width!r}")
        if self.zero_init_residual and (self.shortcut == "none" or not self.batchnorm):
            raise ValueError("zero_init_residual needs a shortcut and BatchNorm: it zeroes each branch's last BN")

    @property
    def family(self) -> Literal["imagenet", "cifar"]:
        return "imagenet" if self.architecture in ARCHITECTURES else "cifar"

    @property
    def block(self) -> BlockType:
        return ARCHITECTURES[self.architecture][0] if self.family == "imagenet" else "basic"

    @property
    def layers(self) -> tuple[int, ...]:
        """Blocks per stage: four stages (ImageNet family) or three of n = (depth - 2) / 6 (CIFAR family)."""
        if self.family == "imagenet":
            return ARCHITECTURES[self.architecture][1]
        n = (int(self.architecture.removeprefix(CIFAR_PREFIX)) - 2) // 6
        return (n, n, n)

    @property
    def num_features(self) -> int:
        return self.width * 2 ** (len(self.layers) - 1) * _block_class(self.block).expansion

    def to_dict(self) -> dict:
        # The newer fields are written only where they differ from the family's own, so the config.json of an
        # ImageNet ResNet stays what it has always been.
        d = dataclasses.asdict(self)
        defaults = dataclasses.asdict(ResNetConfig(self.architecture))
        for name in ("shortcut", "width", "batchnorm"):
            if d[name] == defaults[name]:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ResNetConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown ResNetConfig fields: {', '.join(sorted(unknown))}")
        return cls(**d)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Option A of the paper: the identity, subsampled by the stride, with the new channels zero: no parameters."""

    def __init__(self, planes: int, stride: int):
        super().__init__()
        self.planes, self.stride = planes, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # the spatial size of a stride-s 3x3 conv with padding 1
        return F.pad(x, (0, 0, 0, 0, 0, self.planes - x.shape[1]))


class BasicBlock(nn.Module):
    """Two 3x3 convs; ResNet-18 and -34, and the CIFAR family. ``residual=False``: a plain block, F(x) alone."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 residual: bool = True, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.residual = residual

    def last_bn(self) -> nn.Module:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:  # H(x) = F(x) + x
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand; ResNet-50 and deeper.

    The stride sits on the 3x3 conv ("ResNet v1.5", as in torchvision and timm),
    not on the first 1x1 as in the paper: about +0.5% top-1.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 residual: bool = True, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = norm_layer(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual

    def last_bn(self) -> nn.Module:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


def _block_class(block: BlockType) -> type[BasicBlock] | type[Bottleneck]:
    return BasicBlock if block == "basic" else Bottleneck


def _no_norm(channels: int) -> nn.Module:
    return nn.Identity()


class ResNet(nn.Module):
    """A ResNet built from a :class:`ResNetConfig`.

    >>> model = ResNet(ResNetConfig("resnet18", num_classes=10))
    >>> model(torch.zeros(1, 3, 224, 224)).shape
    torch.Size([1, 10])
    >>> ResNet(ResNetConfig("cifar-resnet20", num_classes=10)).stage_names
    ('layer1', 'layer2', 'layer3')
    """

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.config = config
        block = _block_class(config.block)
        self.norm_layer: NormLayer = nn.BatchNorm2d if config.batchnorm else _no_norm
        width = config.width
        if config.stem == "imagenet":
            self.conv1 = nn.Conv2d(config.in_chans, width, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = conv3x3(config.in_chans, width)
            self.maxpool = nn.Identity()
        self.bn1 = self.norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = width
        # layer1..4 (ImageNet family) or layer1..3 (CIFAR family); each stage after the first halves the resolution.
        self.stage_names = STAGES[: len(config.layers)]
        for i, (name, blocks) in enumerate(zip(self.stage_names, config.layers)):
            setattr(self, name, self._make_stage(block, width * 2**i, blocks, stride=1 if i == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(config.num_features, config.num_classes)
        self.frozen_stages = -1  # -1: nothing frozen; 0: the stem; N: stem + layer1..N
        self._init_weights()

    def _make_stage(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int) -> nn.Sequential:
        residual = self.config.shortcut != "none"
        layers = []
        for i in range(blocks):
            stride_i = stride if i == 0 else 1
            layers.append(block(self.inplanes, planes, stride_i, self._shortcut(planes * block.expansion, stride_i),
                                residual, self.norm_layer))
            self.inplanes = planes * block.expansion
        return nn.Sequential(*layers)

    def _shortcut(self, planes: int, stride: int) -> nn.Module | None:
        """The ``downsample`` of one block; None is the plain identity (or, in a plain net, no shortcut at all)."""
        option = self.config.shortcut
        reshapes = stride != 1 or self.inplanes != planes
        if option == "none" or not (reshapes or option == "C"):
            return None
        if option == "A":
            return PadShortcut(planes, stride)
        return nn.Sequential(conv1x1(self.inplanes, planes, stride), self.norm_layer(planes))

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He et al., arXiv:1502.01852: keeps activations' variance through ReLUs.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.config.zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn().weight)  # a BatchNorm2d: the config refuses it without BN

    def stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) image -> (B, num_features, h, w) last feature map."""
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.avgpool(features), 1))  # (B, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def stage_features(self, x: Tensor) -> dict[str, Tensor]:
        """Feature maps after the stem and after each stage, for use as a backbone.

        >>> model = ResNet(ResNetConfig("resnet18"))
        >>> {k: tuple(v.shape) for k, v in model.stage_features(torch.zeros(1, 3, 64, 64)).items()}
        {'stem': (1, 64, 16, 16), 'layer1': (1, 64, 16, 16), 'layer2': (1, 128, 8, 8), 'layer3': (1, 256, 4, 4), 'layer4': (1, 512, 2, 2)}
        """
        features = {"stem": self.stem(x)}
        x = features["stem"]
        for name in self.stage_names:
            x = getattr(self, name)(x)
            features[name] = x
        return features

    def stage_modules(self) -> list[tuple[str, nn.Module]]:
        stem = nn.ModuleList([self.conv1, self.bn1])
        return [("stem", stem)] + [(name, getattr(self, name)) for name in self.stage_names]

    def freeze(self, stages: int) -> None:
        """Freeze the stem and the first ``stages`` stages (0: the stem only; -1: nothing).

        Frozen parts get no gradients and their BatchNorm statistics stay fixed
        (they stay in eval mode through ``train()``), as in detectron2 and mmdet.
        """
        if not -1 <= stages <= len(self.stage_names):
            raise ValueError(f"stages to freeze must be between -1 and {len(self.stage_names)}, got {stages}")
        self.frozen_stages = stages
        for i, (_, module) in enumerate(self.stage_modules()):
            for p in module.parameters():
                p.requires_grad_(i > stages)
        self.train(self.training)

    def train(self, mode: bool = True) -> ResNet:
        super().train(mode)
        for _, module in self.stage_modules()[: self.frozen_stages + 1]:
            module.eval()
        return self

    def reset_head(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes``."""
        self.config = dataclasses.replace(self.config, num_classes=num_classes)
        old = self.fc
        self.fc = nn.Linear(self.config.num_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)


def build(architecture: str = "resnet50", **overrides) -> ResNet:
    """A randomly initialised ResNet: ``build("resnet18", num_classes=10, stem="small")``."""
    return ResNet(ResNetConfig(architecture=architecture, **overrides))


def _shortcut_modules(model: ResNet) -> set[int]:
    return {id(m) for stage in model.stage_names for block in getattr(model, stage) if block.downsample is not None
            for m in block.downsample.modules()}


def weighted_layers(model: ResNet) -> int:
    """Convolutions and linear layers on the main path: the "18" of ResNet-18, the "56" of ResNet-56.

    The 1x1 projection shortcuts are not counted, as in the paper's naming.
    """
    shortcut = _shortcut_modules(model)
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in shortcut for m in model.modules())


def main_path_convs(model: ResNet) -> list[tuple[str, nn.Conv2d]]:
    """(name, conv) of every convolution on the main path, input to output: the stem's first."""
    shortcut = _shortcut_modules(model)
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and id(m) not in shortcut]


def stage_table(model: ResNet, input_size: int = 224) -> list[dict[str, object]]:
    """Per stage: output shape for one ``input_size`` image, residual blocks, layers and parameters."""
    with torch.device("meta"):
        probe = ResNet(model.config).eval()
    shapes = {k: tuple(v.shape[1:]) for k, v in probe.stage_features(
        torch.empty(1, model.config.in_chans, input_size, input_size, device="meta")).items()}
    rows = []
    shortcut = _shortcut_modules(model)
    for name, module in model.stage_modules():
        blocks = len(module) if name != "stem" else 0
        convs = sum(isinstance(m, nn.Conv2d) and id(m) not in shortcut for m in module.modules())
        rows.append({"stage": name, "output (C, H, W)": shapes[name], "residual blocks": blocks,
                     "weighted layers": convs, "parameters": sum(p.numel() for p in module.parameters())})
    rows.append({"stage": "fc", "output (C, H, W)": (model.config.num_classes,), "residual blocks": 0,
                 "weighted layers": 1, "parameters": sum(p.numel() for p in model.fc.parameters())})
    return rows
