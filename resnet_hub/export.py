"""Export a model for deployment elsewhere: ONNX, checked against PyTorch with onnxruntime on real images.

>>> record = export_onnx(load("my-model"), "my-model.onnx")       # doctest: +SKIP
>>> record.opset, record.top1_agreement                            # doctest: +SKIP
(17, 1.0)
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from . import atomic
from .errors import ResNetHubError
from .quiet import quiet_warnings
from .weights import HubResNet

ONNX_OPSET = 17  # onnxruntime 1.16+ runs it; every op a ResNet needs is in it
CHECK_IMAGES = 16  # real images (photos or digits, as the model was trained on) compared with PyTorch


class ExportError(ResNetHubError, RuntimeError):
    """The exporter cannot handle this model, or its output disagrees with PyTorch's."""


@dataclass(frozen=True)
class OnnxExport:
    """A written ONNX file and how it was checked."""

    path: Path
    opset: int
    images_checked: int
    top1_agreement: float  # share of the checked images with PyTorch's top-1
    max_abs_logit_diff: float
    temperature: float = 1.0  # the output is the logits divided by it: softmax gives the calibrated probabilities

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}

    def describe(self) -> str:
        scaled = (f" divided by the calibration temperature {self.temperature:.3f} (softmax of it is the calibrated "
                  f"confidence; top-1 unchanged)" if self.temperature != 1.0 else "")
        return (f"ONNX (opset {self.opset}): same top-1 as PyTorch on {self.images_checked} real images, logits within "
                f"{self.max_abs_logit_diff:.1e}; runs with onnxruntime, input 'pixel_values' (N, 3, "
                f"H, W) preprocessed as config.json says, output 'logits'{scaled}")


def export_onnx(model: HubResNet, path: str | os.PathLike, *, opset: int = ONNX_OPSET,
                images: torch.Tensor | None = None) -> OnnxExport:
    """Write ``model`` as ONNX to ``path`` (a temporary name, renamed when checked) with a dynamic batch, and check
    it with onnxruntime against PyTorch on ``images`` (default: real photos or digits, preprocessed as the model
    expects). Raises :class:`ExportError`, leaving nothing at ``path``, when the exporter fails or the top-1 differs.
    A calibrated model (``model.info.temperature``) is exported with its logits divided by the temperature, so
    softmax of the output is the Predictor's calibrated confidence.
    """
    import numpy as np

    _require_onnx()
    path = Path(path)
    cpu = _cpu_copy(model)
    if images is None:
        images = _check_images(model)
    # fsync: the export is a model the user asked for, and may be the only copy they take away.
    with atomic.atomic_path(path, fsync=True) as tmp:
        try:
            # torch 2.14 calls the TorchScript exporter legacy; its dynamo successor needs onnxscript, not installed.
            with quiet_warnings():
                torch.onnx.export(cpu, (images[:1],), str(tmp), dynamo=False, opset_version=opset,
                                  input_names=["pixel_values"], output_names=["logits"],
                                  dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}})
        except Exception as e:  # noqa: BLE001 - any exporter failure is one clear message
            raise ExportError(f"ONNX export of {model.config.architecture} failed ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); the safetensors weights are unaffected") from None
        import onnxruntime as ort

        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run(["logits"], {"pixel_values": images.numpy()})[0]
        with torch.no_grad():
            want = cpu(images).numpy()
        agree = float((got.argmax(1) == want.argmax(1)).mean())
        diff = float(np.abs(got - want).max())
        if agree < 1.0:
            raise ExportError(f"the ONNX export of {model.config.architecture} disagrees with PyTorch on "
                              f"{1 - agree:.0%} of {len(images)} images (logits differ by up to {diff:.3g}): not offered")
    return OnnxExport(path, opset, len(images), agree, diff, model.info.temperature)


def _require_onnx() -> None:
    """An :class:`ExportError` naming the extra to install when onnx or onnxruntime is missing (not core dependencies)."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"ONNX export needs {' and '.join(missing)}, not installed here: "
                          f"pip install 'resnet-hub[onnx]' adds {'them' if len(missing) > 1 else 'it'}")


class _Calibrated(torch.nn.Module):
    """The model with its logits divided by the calibration temperature, in the exported graph itself: a runtime
    that reads only the ONNX file then gives the confidence the Predictor gives."""

    def __init__(self, model: torch.nn.Module, temperature: float):
        super().__init__()
        self.model, self.temperature = model, float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / self.temperature


def _cpu_copy(model: HubResNet) -> torch.nn.Module:
    import copy

    cpu = copy.deepcopy(model).float().eval().to("cpu", memory_format=torch.contiguous_format)
    return _Calibrated(cpu, model.info.temperature).eval() if model.info.temperature != 1.0 else cpu


def _check_images(model: HubResNet) -> torch.Tensor:
    from .examples import calibration_images
    from .images import to_tensor_batch

    kind = model.info.training.get("kind", "photo")
    return to_tensor_batch(calibration_images(kind, CHECK_IMAGES), model.preprocessing).float().cpu()
