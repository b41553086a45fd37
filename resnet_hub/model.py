"""The ResNet family: one typed config, BasicBlock, Bottleneck, ResNet.

Architecture only: nothing here reads a file or knows about the Hub. Module
names are torchvision's (``conv1``, ``bn1``, ``layer1..4``, ``downsample``,
``fc``), so state_dict keys of torchvision and timm checkpoints match key for key.

Deep Residual Learning for Image Recognition, He et al., arXiv:1512.03385.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from .errors import ResNetHubError

BlockType = Literal["basic", "bottleneck"]
StemType = Literal["imagenet", "small"]

# name -> (block, blocks per stage), as in Table 1 of arXiv:1512.03385.
ARCHITECTURES: dict[str, tuple[BlockType, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}
STAGES = ("layer1", "layer2", "layer3", "layer4")


class UnknownArchitectureError(ResNetHubError, ValueError):
    """The architecture name is not one of :data:`ARCHITECTURES`."""


@dataclass(frozen=True)
class ResNetConfig:
    """Everything that decides the shapes of a ResNet's parameters.

    ``stem="imagenet"`` is the 7x7/2 conv + 3x3/2 max-pool of the paper (224 px
    inputs); ``stem="small"`` is a 3x3/1 conv with no pooling, for 28-64 px inputs.
    """

    architecture: str = "resnet50"
    num_classes: int = 1000
    in_chans: int = 3
    stem: StemType = "imagenet"
    # Zero-init the last BN in each residual branch so that every block starts
    # as the identity: +0.2~0.3% top-1, arXiv:1706.02677.
    zero_init_residual: bool = False

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise UnknownArchitectureError(
                f"unknown architecture {self.architecture!r}: "
                f"choose one of {', '.join(ARCHITECTURES)}"
            )
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {self.num_classes}")
        if self.in_chans < 1:
            raise ValueError(f"in_chans must be at least 1, got {self.in_chans}")
        if self.stem not in ("imagenet", "small"):
            raise ValueError(f"stem must be 'imagenet' or 'small', got {self.stem!r}")

    @property
    def block(self) -> BlockType:
        return ARCHITECTURES[self.architecture][0]

    @property
    def layers(self) -> tuple[int, int, int, int]:
        return ARCHITECTURES[self.architecture][1]

    @property
    def num_features(self) -> int:
        return 512 * _block_class(self.block).expansion

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

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


class BasicBlock(nn.Module):
    """Two 3x3 convs; ResNet-18 and -34."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand; ResNet-50 and deeper.

    The stride sits on the 3x3 conv ("ResNet v1.5", as in torchvision and timm),
    not on the first 1x1 as in the paper: about +0.5% top-1.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _block_class(block: BlockType) -> type[BasicBlock] | type[Bottleneck]:
    return BasicBlock if block == "basic" else Bottleneck


class ResNet(nn.Module):
    """A ResNet built from a :class:`ResNetConfig`.

    >>> model = ResNet(ResNetConfig("resnet18", num_classes=10))
    >>> model(torch.zeros(1, 3, 224, 224)).shape
    torch.Size([1, 10])
    """

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.config = config
        block = _block_class(config.block)
        if config.stem == "imagenet":
            self.conv1 = nn.Conv2d(config.in_chans, 64, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = conv3x3(config.in_chans, 64)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = 64
        self.layer1 = self._make_stage(block, 64, config.layers[0], stride=1)
        self.layer2 = self._make_stage(block, 128, config.layers[1], stride=2)
        self.layer3 = self._make_stage(block, 256, config.layers[2], stride=2)
        self.layer4 = self._make_stage(block, 512, config.layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(config.num_features, config.num_classes)
        self.frozen_stages = -1  # -1: nothing frozen; 0: the stem; N: stem + layer1..N
        self._init_weights()

    def _make_stage(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            # 1x1 projection shortcut where the shape changes (option B of the paper).
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

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
                    nn.init.zeros_(m.last_bn().weight)

    def stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) image -> (B, num_features, h, w) last feature map."""
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

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
        for name in STAGES:
            x = getattr(self, name)(x)
            features[name] = x
        return features

    def stage_modules(self) -> list[tuple[str, nn.Module]]:
        stem = nn.ModuleList([self.conv1, self.bn1])
        return [("stem", stem)] + [(name, getattr(self, name)) for name in STAGES]

    def freeze(self, stages: int) -> None:
        """Freeze the stem and the first ``stages`` stages (0: the stem only; -1: nothing).

        Frozen parts get no gradients and their BatchNorm statistics stay fixed
        (they stay in eval mode through ``train()``), as in detectron2 and mmdet.
        """
        if not -1 <= stages <= len(STAGES):
            raise ValueError(f"stages to freeze must be between -1 and {len(STAGES)}, got {stages}")
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


def weighted_layers(model: ResNet) -> int:
    """Convolutions and linear layers on the main path: the "18" of ResNet-18.

    The 1x1 projection shortcuts are not counted, as in the paper's naming.
    """
    shortcut = {id(m) for stage in STAGES for block in getattr(model, stage) if block.downsample is not None
                for m in block.downsample.modules()}
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in shortcut for m in model.modules())


def stage_table(model: ResNet, input_size: int = 224) -> list[dict[str, object]]:
    """Per stage: output shape for one ``input_size`` image, residual blocks, layers and parameters."""
    with torch.device("meta"):
        probe = ResNet(model.config).eval()
    shapes = {k: tuple(v.shape[1:]) for k, v in probe.stage_features(
        torch.empty(1, model.config.in_chans, input_size, input_size, device="meta")).items()}
    rows = []
    for name, module in model.stage_modules():
        blocks = len(module) if name != "stem" else 0
        convs = sum(isinstance(m, nn.Conv2d) for m in module.modules())
        if name != "stem":
            convs -= sum(b.downsample is not None for b in module)
        rows.append({"stage": name, "output (C, H, W)": shapes[name], "residual blocks": blocks,
                     "weighted layers": convs, "parameters": sum(p.numel() for p in module.parameters())})
    rows.append({"stage": "fc", "output (C, H, W)": (model.config.num_classes,), "residual blocks": 0,
                 "weighted layers": 1, "parameters": sum(p.numel() for p in model.fc.parameters())})
    return rows
