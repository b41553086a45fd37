"""The lab's settings: one recipe for every net of a run, hyperparameters with their units, checked up front."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ResNetHubError
from ..model import InvalidDepthError, cifar_architecture

EXPERIMENTS = ("degradation", "gradients", "plain-vs-resnet")
MAX_DEPTH = 110  # the deepest net of the paper's CIFAR table but one (1202 layers takes hours here)


class LabError(ResNetHubError, ValueError):
    """Settings an experiment cannot run with."""


@dataclass(frozen=True)
class Recipe:
    """How every net of one experiment trains: SGD with momentum, a constant warm-up, then cosine to zero.

    The warm-up is the paper's for ResNet-110 (lr 0.01 until training gets going), here for every net. Batch 32
    rather than the paper's 128: four times the steps per epoch, which the deep nets need in a few epochs. lr 0.05:
    at 0.1 ResNet-56 ended behind ResNet-20 after 8 epochs (0.28-0.50% against 0.12-0.25% training error, 3 seeds),
    at 0.2 further behind (4.3% against 0.35%, 1 seed); at 0.05 it ends ahead (0.08% against 0.22%, 3 seeds).
    """

    epochs: int = 8
    batch_size: int = 32
    lr: float = 0.05  # after the warm-up
    warmup_lr: float = 0.01
    warmup_epochs: float = 0.5
    momentum: float = 0.9
    weight_decay: float = 1e-4  # the paper's
    train_limit: int | None = None  # training digits used, a fixed random subset (None: all 4,000)
    points_per_epoch: int = 4  # loss points reported per epoch, for live curves

    def validate(self) -> None:
        problems = []
        if not isinstance(self.epochs, int) or not 1 <= self.epochs <= 200:
            problems.append(f"epochs must be a whole number from 1 to 200, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or not 2 <= self.batch_size <= 4000:
            problems.append(f"batch size must be from 2 to 4000, got {self.batch_size!r}")
        if not (0 < self.lr <= 10 and 0 < self.warmup_lr <= 10):
            problems.append(f"learning rates must be above 0 and at most 10, got {self.lr} and {self.warmup_lr}")
        if not 0 <= self.warmup_epochs < self.epochs:
            problems.append(f"warm-up must be from 0 to fewer than the {self.epochs} epochs, got {self.warmup_epochs}")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            problems.append("momentum must be in [0, 1) and weight decay at least 0")
        if self.train_limit is not None and not self.batch_size <= self.train_limit <= 4000:
            problems.append(f"training digits must be from the batch size to 4000, got {self.train_limit}")
        if not isinstance(self.points_per_epoch, int) or self.points_per_epoch < 1:
            problems.append(f"points per epoch must be at least 1, got {self.points_per_epoch!r}")
        if problems:
            raise LabError("; ".join(problems))


@dataclass(frozen=True)
class DegradationSettings:
    depths: tuple[int, ...] = (20, 56)
    width: int = 8  # channels of the first stage (the paper's: 16); then 2x and 4x
    seeds: tuple[int, ...] = (0, 1, 2)
    recipe: Recipe = Recipe()

    def validate(self) -> None:
        _check_depths(self.depths, at_least=2)
        _check_width(self.width)
        _check_seeds(self.seeds)
        self.recipe.validate()


@dataclass(frozen=True)
class GradientSettings:
    depths: tuple[int, ...] = (20, 56, 110)
    width: int = 16
    batch_size: int = 128
    seed: int = 0  # picks the batch of real digits and the initial weights

    def validate(self) -> None:
        _check_depths(self.depths, at_least=1)
        _check_width(self.width)
        _check_seeds((self.seed,))
        if not isinstance(self.batch_size, int) or not 2 <= self.batch_size <= 1024:
            raise LabError(f"batch size must be from 2 to 1024, got {self.batch_size!r}")


@dataclass(frozen=True)
class PlainVsResNetSettings:
    resnet_depth: int = 20
    width: int = 8
    cnn_channels: tuple[int, int] = (32, 64)  # the two conv layers of the plain CNN
    seeds: tuple[int, ...] = (0,)
    recipe: Recipe = Recipe()

    def validate(self) -> None:
        _check_depths((self.resnet_depth,), at_least=1)
        _check_width(self.width)
        _check_seeds(self.seeds)
        if len(self.cnn_channels) != 2 or not all(isinstance(c, int) and 1 <= c <= 256 for c in self.cnn_channels):
            raise LabError(f"the plain CNN has two conv layers of 1 to 256 channels, got {self.cnn_channels!r}")
        self.recipe.validate()


Settings = DegradationSettings | GradientSettings | PlainVsResNetSettings
SETTINGS_TYPES: dict[str, type] = {
    "degradation": DegradationSettings, "gradients": GradientSettings, "plain-vs-resnet": PlainVsResNetSettings,
}

# The full runs, kept in the store by `python -m resnet_hub why-residual all`, within the 10-minute budget of a
# 2-core machine: width 8 (not the paper's 16) and 5 epochs, enough for all three orderings to hold in every seed
# (times and errors measured: docs/benchmarks.md).
CACHED_SETTINGS: dict[str, Settings] = {
    "degradation": DegradationSettings(depths=(20, 56), width=8, seeds=(0, 1, 2), recipe=Recipe(epochs=5)),
    "gradients": GradientSettings(depths=(20, 56, 110), width=16, batch_size=128, seed=0),
    "plain-vs-resnet": PlainVsResNetSettings(resnet_depth=20, width=8, seeds=(0,), recipe=Recipe(epochs=5)),
}
# Short versions to watch live: the same nets and recipe, fewer epochs and one seed (each within 90 s on 2 cores).
LIVE_SETTINGS: dict[str, Settings] = {
    "degradation": DegradationSettings(depths=(20, 56), width=8, seeds=(0,), recipe=Recipe(epochs=2)),
    "gradients": GradientSettings(depths=(20, 56), width=16, batch_size=64, seed=0),
    "plain-vs-resnet": PlainVsResNetSettings(resnet_depth=20, width=8, seeds=(0,), recipe=Recipe(epochs=2)),
}


def _check_depths(depths: Sequence[int], at_least: int) -> None:
    depths = tuple(depths)
    if len(depths) < at_least:
        raise LabError(f"give at least {at_least} depth{'s' if at_least > 1 else ''}, got {list(depths)}")
    if len(set(depths)) != len(depths):
        raise LabError(f"depths must differ from each other, got {list(depths)}")
    for depth in depths:
        cifar_architecture(depth)  # InvalidDepthError when not 6n+2
        if depth > MAX_DEPTH:
            raise InvalidDepthError(f"depth {depth} is more than this lab's {MAX_DEPTH}: choose 6n+2 up to {MAX_DEPTH}")


def _check_width(width: int) -> None:
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= 64:
        raise LabError(f"width (channels of the first stage) must be from 1 to 64, got {width!r}")


def _check_seeds(seeds: Sequence[int]) -> None:
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**31 for s in seeds):
        raise LabError(f"seeds must be one or more whole numbers from 0, got {list(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise LabError(f"seeds must differ from each other, got {list(seeds)}")



def settings_from_dict(experiment: str, d: dict[str, Any]) -> Settings:
    cls = SETTINGS_TYPES[experiment]
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    if "recipe" in values:
        values["recipe"] = Recipe(**values["recipe"])
    return cls(**values)


def check_experiment(experiment: str) -> None:
    if experiment not in EXPERIMENTS:
        raise LabError(f"unknown experiment {experiment!r}: choose one of {', '.join(EXPERIMENTS)}")
