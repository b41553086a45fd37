"""The digits and the networks of the lab: CIFAR-style plain and residual nets from :mod:`resnet_hub.model`, and
the plain CNN of the MNIST lesson."""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor, nn

from ..data import mnist_sample, stratified_split
from ..model import ResNet, ResNetConfig, cifar_architecture
from .settings import LabError

INITS = ("kaiming", "naive")


@functools.cache
def digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The MNIST sample as (N, 1, 28, 28) tensors, normalised by the training split's statistics.

    The 80/20 split is fixed (seed 0): every net and seed sees the same 4,000 training and 1,000 held-out digits.
    """
    dataset = mnist_sample()
    pixels = np.stack([np.asarray(img)[:, :, 0] for img in dataset.images])  # (N, 28, 28) uint8, grey as RGB
    x = torch.from_numpy(pixels).float().div_(255).unsqueeze(1)
    y = torch.tensor(dataset.targets, dtype=torch.int64)
    train, val = (torch.tensor(i) for i in stratified_split(dataset, 0.2, seed=0))
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    return x[train], y[train], x[val], y[val]


def network(family: str, depth: int, width: int = 16, *, batchnorm: bool = True, shortcut: str = "A") -> ResNet:
    """A CIFAR-style net for the 1-channel digits: ``network("plain", 56)`` is plain-56, ``("residual", 56)`` ResNet-56.

    The plain net is the residual one with every shortcut removed: same layers, same parameters (option A has none).
    """
    if family not in ("plain", "residual"):
        raise LabError(f"family must be 'plain' or 'residual', got {family!r}")
    config = ResNetConfig(cifar_architecture(depth), num_classes=10, in_chans=1, width=width, batchnorm=batchnorm,
                          shortcut="none" if family == "plain" else shortcut)
    return ResNet(config)


def plain_cnn(channels: tuple[int, int] = (32, 64)) -> nn.Sequential:
    """The CNN of the PyTorch MNIST example: two 3x3 convs, max-pool, dropout, two linear layers (no BatchNorm)."""
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(1, c1, 3), nn.ReLU(), nn.Conv2d(c1, c2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Flatten(), nn.Linear(c2 * 12 * 12, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10),
    )


def initialise(model: nn.Module, init: str) -> nn.Module:
    """``"kaiming"``: He et al. (arXiv:1502.01852), as :class:`ResNet` already is; ``"naive"``: every conv weight
    from N(0, 0.01^2), the fixed-scale Gaussian of pre-2015 practice that deep plain nets do not survive."""
    if init not in INITS:
        raise LabError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if init == "kaiming":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.normal_(m.weight, std=0.01)
    return model


def net_name(family: str, depth: int) -> str:
    return f"{'plain' if family == 'plain' else 'resnet'}-{depth}"
