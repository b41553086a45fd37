"""What every engine shares: the check's thresholds, the error, the cache keys, the CAM from features."""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ResNetHubError
from ..hardware import cpu_model_name



ENGINES = ("auto", "torch", "openvino")
MAX_REL_ERROR = 0.1  # relative logit error against fp32 that a candidate may have
MIN_AGREEMENT = 0.99  # top-1 agreement with fp32 a candidate needs, for trained weights
CHECK_IMAGES = 48  # held-out images each candidate is checked on
CALIBRATION_IMAGES = 32
CHOICE_FORMAT = "2"  # bump when EngineChoice changes: an older cached choice is then made afresh


class EngineError(ResNetHubError, RuntimeError):
    """An engine that cannot run this model here (missing, or the conversion failed)."""






def weights_key(model: nn.Module, extra: str = "") -> str:
    """A digest of the weights, the architecture and the software: the cache key's base."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(memoryview(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()))
    config = getattr(model, "config", None)
    h.update(repr(config).encode())
    h.update(repr(getattr(model, "preprocessing", "")).encode())
    h.update(f"{torch.__version__}|{platform.machine()}|{cpu_model_name()}|{torch.get_num_threads()}|{extra}".encode())
    return h.hexdigest()


def _tensor_digest(t: Tensor | None) -> str:
    if t is None:
        return ""
    return hashlib.sha256(t.detach().to("cpu").contiguous().numpy().tobytes()).hexdigest()


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()






def cam_from_features(features: Tensor, fc_weight: Tensor, class_id: int) -> np.ndarray:
    """Class activation map (Zhou et al. 2016) of one image from its last feature map, in [0, 1].

    For a global-average-pool + linear head, Grad-CAM at the last stage is this map up to a
    positive scale (each channel's gradient is ``fc.weight[class] / (h * w)``), so it comes from
    the forward pass's own features, with no backward pass.
    """
    cam = torch.relu(torch.einsum("chw,c->hw", features.float(), fc_weight[class_id].float().to(features.device)))
    top = cam.max()
    return (cam / top if top > 0 else cam).cpu().numpy()
