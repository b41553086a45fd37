"""Where a model looked: grad-CAM at the deepest stage with a usable map, drawn over the picture in inferno colours."""

from __future__ import annotations

import copy
import functools
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .model import ResNet
from .weights import HubResNet

DEFAULT_TOP_K = 5



class _GradCAM:
    MIN_SIDE = 4  # a 1x1 or 2x2 map cannot say where in the image anything is

    def __init__(self, model: HubResNet, device: torch.device):
        self.model = copy.deepcopy(model).to(device).float().eval()
        self.device = device
        self.lock = threading.Lock()
        self.layer = cam_layer(model)

    def __call__(self, x: Tensor, class_id: int | None) -> tuple[np.ndarray, int]:
        with self.lock, torch.enable_grad():
            h = self.model.stem(x.to(self.device))
            for name in self.model.stage_names:
                h = getattr(self.model, name)(h)
                if name == self.layer:
                    features = h = h.detach().requires_grad_(True)  # (1, C, h, w)
            logits = self.model.forward_head(h)
            class_id = int(logits.argmax(1)) if class_id is None else class_id
            (grad,) = torch.autograd.grad(logits[0, class_id], features)
        weights = grad.mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1): each channel's importance
        cam = torch.relu((weights * features.detach()).sum(1))[0]
        cam = cam / cam.max() if cam.max() > 0 else cam
        return cam.cpu().numpy(), class_id


def cam_layer(model: ResNet) -> str:
    """``layer4``, unless its map is too coarse at the model's input size (e.g. 1x1 for 32 px
    digit models): then the deepest stage whose map is at least 4x4."""
    from .model import stage_table

    rows = stage_table(model, model.preprocessing.input_size)
    names = model.stage_names
    sides = {r["stage"]: r["output (C, H, W)"][-1] for r in rows if r["stage"] in names}
    fine = [name for name in names if sides[name] >= _GradCAM.MIN_SIDE]
    return fine[-1] if fine else names[0]


def overlay_heatmap(picture: Image.Image, heat: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """Blend a [0, 1] heatmap (any size) over ``picture`` with a perceptual colour map (matplotlib's inferno)."""
    heat_img = Image.fromarray(np.uint8(np.clip(heat, 0, 1) * 255)).resize(picture.size, Image.Resampling.BICUBIC)
    colored = _colour(np.asarray(heat_img) / 255.0)
    blended = (1 - alpha) * np.asarray(picture.convert("RGB"), dtype=np.float32) / 255 + alpha * colored
    return Image.fromarray(np.uint8(np.clip(blended, 0, 1) * 255))


@functools.cache
def _inferno() -> np.ndarray:
    return np.loadtxt(Path(__file__).with_name("inferno.csv"), delimiter=",")  # (256, 3)


def _colour(values: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 1] for ``values`` in [0, 1]: the table lookup matplotlib's ``colormaps["inferno"]`` does."""
    table = _inferno()
    return table[np.clip((values * len(table)).astype(int), 0, len(table) - 1)]
