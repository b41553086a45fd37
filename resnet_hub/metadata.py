"""What travels with weights: label names, preprocessing, provenance and results.

Plain data, read from and written to ``config.json`` by :mod:`resnet_hub.weights`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "resnet-hub"
FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
_PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # transformers stores PIL's enum
HUB_ETAG_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input: resize to ``input_size / crop_pct``,
    center-crop ``input_size``, normalise with ``mean``/``std``. Read from the
    checkpoint's own config, so inference and training cannot drift apart."""

    input_size: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        if not 8 <= self.input_size <= 1024:
            raise ValueError(f"input_size must be between 8 and 1024 px, got {self.input_size}")
        if not 0.1 <= self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in [0.1, 1], got {self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(f"mean {self.mean} and std {self.std} must have one positive std per channel")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @property
    def resize_size(self) -> int:
        return math.floor(self.input_size / self.crop_pct)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def for_stem(cls, stem: str, in_chans: int = 3) -> Preprocessing:
        """The default for randomly initialised models."""
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if in_chans == 3 else ((0.5,) * in_chans, (0.5,) * in_chans)
        if stem == "small":
            return cls(input_size=32, crop_pct=1.0, interpolation="bilinear", mean=mean, std=std)
        return cls(mean=mean, std=std)


@dataclass
class WeightsInfo:
    """What travels with the weights: label names, preprocessing, provenance, results."""

    labels: list[str]
    preprocessing: Preprocessing
    source: str | None = None  # where these weights were loaded from
    layout: str = FORMAT
    base_model: str | None = None
    datasets: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)  # hyperparameters, data summary, confusion matrix
    license: str = "apache-2.0"
    notes: list[str] = field(default_factory=list)  # what loading did, e.g. a replaced head
    temperature: float = 1.0  # divides the logits before softmax: calibrated confidence (resnet_hub.calibration)


@functools.cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, shipped with the package (torchvision's list)."""
    text = (Path(__file__).parent / "imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(text.splitlines())


def repeated_labels(labels: list[str]) -> dict[str, list[int]]:
    """Each label name given to more than one class, with those classes' indices."""
    where: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        where.setdefault(str(label), []).append(i)
    return {label: ids for label, ids in where.items() if len(ids) > 1}


def check_labels(labels: list[str], where: str) -> None:
    """Refuse label names that repeat: a prediction keyed by name would merge those classes."""
    repeated = repeated_labels(labels)
    if repeated:
        shown = "; ".join(f"{label!r} for classes {', '.join(map(str, ids))}" for label, ids in list(repeated.items())[:5])
        raise ValueError(f"{where}: label names repeat ({shown}): give each class its own name")


def distinct_labels(labels: list[str]) -> tuple[list[str], str | None]:
    """Repeated names made distinct by their class index (``crane (class 134)``), with a note saying so."""
    repeated = repeated_labels(labels)
    if not repeated:
        return list(labels), None
    out = [f"{label} (class {i})" if str(label) in repeated else label for i, label in enumerate(labels)]
    names = ", ".join(repr(label) for label in list(repeated)[:5])
    return out, f"label names repeat in the checkpoint's config ({names}): each is shown with its class index"


def default_labels(num_classes: int) -> list[str]:
    if num_classes == 1000:
        return list(imagenet_labels())
    return [f"class_{i}" for i in range(num_classes)]
