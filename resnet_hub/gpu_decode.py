"""A batch of JPEGs decoded on the GPU (nvJPEG, through torchvision), resized, cropped and normalised there.

The untrusted-image rules of :mod:`resnet_hub.images` hold here too:

- a file over the byte limit is refused before it is read in full;
- the pixel count is read from the JPEG header (by Pillow, which decodes no pixel to open a file) and checked
  before any pixel is decoded;
- a corrupt file is that image's error (an :class:`~resnet_hub.errors.ImageError` naming it), never the batch's:
  when nvJPEG refuses the batch, each image is tried alone, and one nvJPEG refuses alone goes to Pillow, which
  either decodes it or says what is wrong with it;
- anything that is not a JPEG nvJPEG decodes (PNG, WEBP, a CMYK JPEG, a PIL image, an array) goes through the
  CPU path (:func:`~resnet_hub.images.load_image`), whose rules it already keeps.

The geometry is :func:`~resnet_hub.images.eval_transform`'s: the shorter side resized (antialiased) to the
preprocessing's ``resize_size``, the centre ``input_size`` square cropped, then normalised. EXIF orientation is
applied as Pillow applies it. ``device="cpu"`` runs the same code with torchvision's CPU decoder: the tests.

>>> batch = decode_to_device([open("cat.jpg", "rb").read()], Preprocessing(), "cuda")   # doctest: +SKIP
>>> batch.pixels.shape, batch.pixels.device, batch.errors                              # doctest: +SKIP
(torch.Size([1, 3, 224, 224]), device(type='cuda', index=0), {})
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .errors import ImageError
from .images import (
    MAX_BYTES,
    MAX_PIXELS,
    _batch_label,
    _interpolation,
    _pixel_limit,
    _read_file,
    _too_many_bytes,
    _too_many_pixels,
    crop_resized,
    load_image,
)
from .metadata import Preprocessing
from .quiet import quiet_warnings

JPEG_START = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
_EXIF_ORIENTATION = 0x0112
PHASES = ("read", "header", "decode", "cpu fallback", "resize")


@dataclass
class DecodedBatch:
    """The images of a batch that decoded, as one normalised tensor on the device, and what happened to the rest."""

    pixels: Tensor  # (len(rows), C, input_size, input_size) float32, normalised, on the device
    rows: list[int]  # the input index of each row of ``pixels``
    errors: dict[int, ImageError] = field(default_factory=dict)  # input index -> why that image was refused
    on_cpu: list[int] = field(default_factory=list)  # input indices decoded by Pillow, not by the device's decoder
    ms: dict[str, float] = field(default_factory=dict)  # milliseconds per phase (PHASES), the device synchronised


@dataclass
class _Jpeg:
    index: int
    data: bytes
    orientation: int


def decode_to_device(images: Sequence[object], p: Preprocessing, device: str | torch.device = "cuda", *,
                     max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> DecodedBatch:
    """Decode ``images`` (encoded bytes or paths; PIL images and arrays go through the CPU path) into a
    (B, C, H, W) batch on ``device``, preprocessed for ``p``; an image that cannot be decoded is in ``errors``."""
    device = torch.device(device)
    if len(p.mean) not in (1, 3):
        raise ValueError(f"preprocessing for {len(p.mean)} channels: images give 1 (grayscale) or 3 (RGB)")
    ms = dict.fromkeys(PHASES, 0.0)
    errors: dict[int, ImageError] = {}
    clock = _Clock(device, ms)

    with clock("read"):
        encoded: dict[int, object] = {}
        for i, image in enumerate(images):
            try:
                encoded[i] = _read(image, _batch_label(images, i), max_bytes)
            except ImageError as e:
                errors[i] = e
    with clock("header"):
        jpegs, for_cpu = [], []
        for i, data in encoded.items():
            try:
                jpeg = _jpeg_header(i, data, _batch_label(images, i), max_pixels)
            except ImageError as e:
                errors[i] = e
                continue
            (jpegs if jpeg is not None else for_cpu).append(jpeg or i)
    with clock("decode"):
        decoded, refused = _decode_jpegs(jpegs, len(p.mean), device)
    with clock("cpu fallback"):
        crops: dict[int, Tensor] = {}
        for i in sorted(for_cpu + refused):
            try:
                picture = load_image(encoded[i], name=_batch_label(images, i), max_pixels=max_pixels,
                                     max_bytes=max_bytes)
            except ImageError as e:
                errors[i] = e
                continue
            pixels = np.asarray(crop_resized(picture, p))
            crops[i] = torch.from_numpy(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1).copy())
    with clock("resize"):
        for i, pixels in decoded.items():
            crops[i] = _resize_and_crop(pixels, p)
        rows = sorted(crops)
        pixels = _normalised([crops[i].to(device, non_blocking=True) for i in rows], p, device)
    return DecodedBatch(pixels, rows, dict(sorted(errors.items())), sorted(set(crops) - set(decoded)), ms)


def _read(image: object, label: str, max_bytes: int) -> object:
    """Encoded bytes of a path or bytes-like (the byte limit checked); anything else as it is, for the CPU path."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if len(data) > max_bytes:
            raise ImageError(_too_many_bytes(label, len(data), max_bytes))
        return data
    if isinstance(image, (str, os.PathLike)) and not str(image).startswith(("http://", "https://")):
        return _read_file(Path(image), label, max_bytes)
    return image  # a PIL image, an array, a URL: load_image decodes or refuses it


def _jpeg_header(index: int, data: object, label: str, max_pixels: int) -> _Jpeg | None:
    """The JPEG to decode on the device, after its header passed the pixel limit; None: the CPU path decodes it."""
    if not isinstance(data, bytes) or not data.startswith(JPEG_START):
        return None
    if not data.rstrip(b"\x00").endswith(JPEG_END):  # cut short: a hardware decoder may not say so; Pillow does
        return None
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as img:  # reads the header, decodes no pixel
            width, height, mode = img.width, img.height, img.mode
            limit = _pixel_limit(max_pixels)
            if width * height > limit:
                raise ImageError(_too_many_pixels(label, width, height, limit))
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except ImageError:
        raise
    except Exception:  # noqa: BLE001 - a malformed header: the CPU path refuses it in its own words
        return None
    if mode not in ("RGB", "L"):  # CMYK and YCCK JPEGs: Pillow converts them as the CPU path always has
        return None
    return _Jpeg(index, data, orientation if orientation in range(1, 9) else 1)


def _decode_jpegs(jpegs: list[_Jpeg], channels: int, device: torch.device) -> tuple[dict[int, Tensor], list[int]]:
    """({input index: (C, H, W) uint8 on the device, orientation applied}, indices the decoder refused)."""
    from torchvision.io import ImageReadMode

    if not jpegs:
        return {}, []
    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    data = [torch.frombuffer(bytearray(j.data), dtype=torch.uint8) for j in jpegs]
    try:
        out, refused = _decode_jpeg(data, mode, device), []
    except Exception:  # noqa: BLE001 - one bad file fails the whole batched call: find it by decoding one by one
        out, refused = [], []
        for j, d in zip(jpegs, data):
            try:
                out.append(_decode_jpeg(d, mode, device))
            except Exception:  # noqa: BLE001 - Pillow says what is wrong with it, or decodes it
                out.append(None)
                refused.append(j.index)
    decoded = {j.index: _oriented(pixels, j.orientation) for j, pixels in zip(jpegs, out) if pixels is not None}
    return decoded, refused


def _decode_jpeg(data, mode, device: torch.device):
    import torchvision.io

    with quiet_warnings(DeprecationWarning):  # torchvision 0.29 points to TorchCodec; 0.26 (the GPU machine's) does not
        return torchvision.io.decode_jpeg(data, mode=mode, device=device)


def _oriented(pixels: Tensor, orientation: int) -> Tensor:
    """``pixels`` (C, H, W) as Pillow's ``ImageOps.exif_transpose`` turns an image of this EXIF orientation."""
    if orientation == 2:
        return pixels.flip(-1)
    if orientation == 3:
        return pixels.flip(-1).flip(-2)
    if orientation == 4:
        return pixels.flip(-2)
    if orientation == 5:
        return pixels.transpose(-1, -2)
    if orientation == 6:
        return pixels.rot90(-1, dims=(-2, -1))
    if orientation == 7:
        return pixels.transpose(-1, -2).flip(-1).flip(-2)
    if orientation == 8:
        return pixels.rot90(1, dims=(-2, -1))
    return pixels


def _resize_and_crop(pixels: Tensor, p: Preprocessing) -> Tensor:
    from torchvision.transforms.v2 import functional as F

    resized = F.resize(pixels, [p.resize_size], interpolation=_interpolation(p), antialias=True)
    return F.center_crop(resized, [p.input_size, p.input_size])


def _normalised(crops: list[Tensor], p: Preprocessing, device: torch.device) -> Tensor:
    """The uint8 crops stacked and normalised as eval_transform does (ToDtype(scale=True), then Normalize)."""
    if not crops:
        return torch.empty((0, len(p.mean), p.input_size, p.input_size), device=device)
    x = torch.stack(crops).float().div_(255.0)
    mean = torch.tensor(p.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(p.std, device=device).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std)


class _Clock:
    """Adds each phase's milliseconds to ``ms``, the device synchronised at its end (so each phase owns its work)."""

    def __init__(self, device: torch.device, ms: dict[str, float]):
        self.device, self.ms = device, ms

    def __call__(self, phase: str):
        self.phase = phase
        return self

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.ms[self.phase] += (time.perf_counter() - self.start) * 1000
        return False


def classify_on_device(predictor, images: Sequence[object], top_k: int | None = None) -> tuple[list, DecodedBatch]:
    """Top-k of each image by ``predictor`` (a photo model), decoded on the predictor's device: one list entry per
    image, a :class:`~resnet_hub.predict.Prediction` or the :class:`ImageError` that refused it; and the batch."""
    if predictor.kind == "digits":
        raise ValueError("digit models lay each image out the MNIST way on the CPU: use Predictor.classify")
    k = predictor._check_top_k(top_k)
    batch = decode_to_device(images, predictor.model.preprocessing, predictor.device)
    start = time.perf_counter()
    predictions = predictor.top_k(predictor.logits(batch.pixels), k) if batch.rows else []
    batch.ms["network"] = (time.perf_counter() - start) * 1000  # top_k's copy to the CPU synchronises
    out: list = [batch.errors.get(i) for i in range(len(images))]
    for i, prediction in zip(batch.rows, predictions):
        out[i] = prediction
    return out, batch
