"""resnet-hub: try, compare and fine-tune ResNets.

>>> import resnet_hub
>>> model = resnet_hub.create("resnet18", num_classes=10)
>>> model = resnet_hub.load("timm/resnet50.a1_in1k")   # doctest: +SKIP

The names below load on first use (PEP 562), so ``import resnet_hub`` and the
command line's ``--help`` do not wait for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

__version__ = "0.1.0"

_LAZY = {
    "ARCHITECTURES": "model", "BasicBlock": "model", "Bottleneck": "model", "ResNet": "model",
    "ResNetConfig": "model", "UnknownArchitectureError": "model",
    "DEFAULT_SOURCES": "hub",
    "Preprocessing": "metadata", "WeightsInfo": "metadata",
    "HubResNet": "weights", "create": "weights", "load": "weights",
    "inspect": "inspection", "Inspection": "inspection",
    "evaluate": "evaluation", "classify_batch": "batch", "compare_on_data": "set_comparison",
}

if TYPE_CHECKING:
    from .hub import DEFAULT_SOURCES
    from .inspection import Inspection, inspect
    from .metadata import Preprocessing, WeightsInfo
    from .model import ARCHITECTURES, BasicBlock, Bottleneck, ResNet, ResNetConfig, UnknownArchitectureError
    from .weights import HubResNet, create, load
    from .batch import classify_batch
    from .evaluation import evaluate
    from .set_comparison import compare_on_data


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted([
    "CorruptWeightsError", "DataError", "ImageError", "LayoutError", "PickleRefusedError", "PushError",
    "ResNetHubError", "SourceError", "WeightsMismatchError", "WeightsNotFoundError", *_LAZY,
])
