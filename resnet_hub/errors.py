"""The exceptions resnet-hub raises for bad input: each names the input and the fix.

All derive from :class:`ResNetHubError`, so an entry point (CLI, app) can catch
the family, show the message, and keep serving.
"""

from __future__ import annotations


class ResNetHubError(Exception):
    """Base class: a problem with what the user gave us, explained in the message."""


class SourceError(ResNetHubError, ValueError):
    """A weights source (repo id or folder) is malformed, missing or unreachable."""


class WeightsNotFoundError(SourceError, FileNotFoundError):
    """The weights are neither on disk nor reachable on the Hub."""


class PickleRefusedError(SourceError):
    """The source has only pickle checkpoints, which resnet-hub never loads."""


class LayoutError(ResNetHubError, ValueError):
    """config.json or the tensor names fit none of the layouts resnet-hub reads."""


class CorruptWeightsError(ResNetHubError, ValueError):
    """model.safetensors is truncated, corrupt, or holds non-finite values."""


class WeightsMismatchError(ResNetHubError, ValueError):
    """The checkpoint's tensors do not fit the architecture: missing, extra or misshapen keys."""


class ImageError(ResNetHubError, ValueError):
    """An image could not be decoded safely."""


class DataError(ResNetHubError, ValueError):
    """A training dataset (zip of class folders) is unusable."""


class PushError(ResNetHubError):
    """A push to the Hub was refused before or during upload."""


class ServiceError(ResNetHubError, ValueError):
    """A request the app or the command line cannot serve, with what to do instead."""
