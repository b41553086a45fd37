"""resnet-hub: try, compare and fine-tune ResNets.

>>> import resnet_hub
>>> model = resnet_hub.create("resnet18", num_classes=10)
>>> model = resnet_hub.load("timm/resnet50.a1_in1k")   # doctest: +SKIP
"""

from .errors import (
    CorruptWeightsError,
    DataError,
    ImageError,
    LayoutError,
    PickleRefusedError,
    PushError,
    ResNetHubError,
    SourceError,
    WeightsMismatchError,
    WeightsNotFoundError,
)
from .model import ARCHITECTURES, BasicBlock, Bottleneck, ResNet, ResNetConfig, UnknownArchitectureError
from .hub import DEFAULT_SOURCES
from .metadata import Preprocessing, WeightsInfo
from .weights import HubResNet, create, load

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_SOURCES",
    "BasicBlock",
    "Bottleneck",
    "CorruptWeightsError",
    "DataError",
    "HubResNet",
    "ImageError",
    "LayoutError",
    "PickleRefusedError",
    "Preprocessing",
    "PushError",
    "ResNet",
    "ResNetConfig",
    "ResNetHubError",
    "SourceError",
    "UnknownArchitectureError",
    "WeightsInfo",
    "WeightsMismatchError",
    "WeightsNotFoundError",
    "create",
    "load",
]
