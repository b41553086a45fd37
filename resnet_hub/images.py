"""Images: untrusted uploads -> RGB PIL images -> the tensors a model's preprocessing asks for.

Decoding is deliberately narrow: only common photo formats are opened (never
EPS, which shells out to Ghostscript), the pixel count is checked before any
pixel is decoded, and every failure is an :class:`ImageError` that names the
image. The transforms are built from the weights' own :class:`Preprocessing`,
and inference and fine-tuning validation share :func:`eval_transform`, so the
two cannot drift apart.
"""

from __future__ import annotations

import functools
import io
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from .errors import ImageError
from .metadata import Preprocessing

ALLOWED_FORMATS: frozenset[str] = frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF"})
# MPO (multi-picture JPEG, as phone cameras write) is opened by the JPEG plugin, so it is not asked for by name.
_OPEN_FORMATS = sorted(ALLOWED_FORMATS - {"MPO"})
MAX_PIXELS = 40_000_000  # about 6300 x 6300; a decoded RGB image this size is 120 MB
MAX_BYTES = 30 * 2**20
AUGMENTATIONS = ("photo", "digits", "none")

_ALLOWED_LIST = ", ".join(sorted(ALLOWED_FORMATS))
_WHITE = (255, 255, 255, 255)
_PIL_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
_INTERPOLATION = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}


# ---------------------------------------------------------------------------
# Decoding


# looks_like_photo: mean HSV saturation, and the share of pixels neither ink nor background.
# MNIST digits: saturation 0, mid tones 3-9%; scikit-image's photos: 0.15-0.6 saturation or 40-90% mid tones.
PHOTO_SATURATION = 0.12
PHOTO_MID_TONES = 0.25


def load_image(
    image: object,
    *,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    draft: int | None = None,
) -> Image.Image:
    """Decode one untrusted image into an RGB PIL image.

    ``image`` may be encoded bytes, a file path, a PIL image or a numpy array
    ((H, W), (H, W, 1), (H, W, 3) or (H, W, 4); uint8, uint16, bool, or float
    in [0, 1]). EXIF orientation is applied, animations give their first frame
    and transparency is composited on white. ``name`` labels error messages
    (an upload's file name, "image 3 of 5"); a path defaults to its file name.
    Larger than ``max_pixels`` pixels or ``max_bytes`` bytes is refused (Pillow's
    own ``Image.MAX_IMAGE_PIXELS`` still caps ``max_pixels``).

    ``draft``: the shorter side the caller will resize to. A JPEG at least twice that
    is decoded at a reduced scale (Pillow's ``draft``: 1/2, 1/4 or 1/8, never below
    ``draft``), several times faster than a full decode; the antialiased resize that
    follows gives nearly the same pixels (:func:`draft_agreement` measures it).

    >>> load_image("cat.jpg").size                     # doctest: +SKIP
    (640, 480)
    >>> load_image(np.zeros((32, 32), dtype=np.uint8)).mode
    'RGB'
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        return _decode(data, name or f"image data ({len(data):,} bytes)", max_pixels, max_bytes, draft)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        label = name or path.name or str(path)
        if isinstance(image, str) and image.startswith(("http://", "https://")):
            raise ImageError(f"{label}: URLs are not fetched; download the image and pass the file or its bytes")
        return _decode(_read_file(path, label, max_bytes), label, max_pixels, max_bytes, draft)
    if isinstance(image, Image.Image):
        return _from_pil(image, name or "the PIL image", max_pixels)
    if isinstance(image, np.ndarray):
        return _from_array(image, name or "the array", max_pixels)
    hint = " (call .cpu().numpy() and move channels last)" if isinstance(image, Tensor) else ""
    raise ImageError(
        f"{name or 'the image'}: cannot decode an object of type {type(image).__name__}"
        f"{hint}; pass encoded bytes, a file path, a PIL image or a numpy array"
    )


def decode_batch(
    images: Sequence[object], *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES, draft: int | None = None
) -> list[Image.Image]:
    """Decode several images with :func:`load_image`, in parallel across the cores (Pillow
    decodes without holding the GIL); an error names the one that failed.

    >>> decode_batch([b"", "cat.png"])                 # doctest: +SKIP
    ImageError: image 1 of 2: the data is empty (0 bytes) ...
    """
    n = len(images)

    def one(i: int) -> Image.Image:
        return load_image(images[i], name=_batch_label(images, i), max_pixels=max_pixels, max_bytes=max_bytes,
                          draft=draft)

    return parallel_map(one, range(n))


def _batch_label(images: Sequence[object], i: int) -> str:
    label = f"image {i + 1} of {len(images)}"
    if isinstance(images[i], (str, os.PathLike)):
        label += f" ({Path(images[i]).name})"
    return label


def decode_to_tensor_batch(images: Sequence[object], p: Preprocessing, *, draft: int | None = None) -> Tensor:
    """:func:`decode_batch` then :func:`to_tensor_batch`, each image decoded and cropped in one task
    on the shared pool (one hand-off per image, and no full-size image kept waiting for the others)."""
    _channels(p)
    return _normalized(len(images), lambda i: np.asarray(crop_resized(load_image(images[i], name=_batch_label(images, i),
                                                                                 draft=draft), p)), p)


def parallel_map(fn, items) -> list:
    """``[fn(x) for x in items]`` on a shared pool of one thread per core (one item: inline)."""
    items = list(items)
    if len(items) <= 1:
        return [fn(x) for x in items]
    return list(_pool().map(fn, items))


@functools.cache
def _pool():
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="resnet-hub-decode")


def _read_file(path: Path, label: str, max_bytes: int) -> bytes:
    text = str(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise ImageError(_too_many_bytes(label, size, max_bytes))
            return f.read(max_bytes + 1)
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file {text!r}; check the path") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: {text!r} is a folder, not an image file") from None
    except OSError as e:
        raise ImageError(f"{label}: cannot read {text!r} ({e.strerror or e})") from None


def _too_many_bytes(label: str, size: int, max_bytes: int) -> str:
    return (
        f"{label}: the file is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit; "
        f"downscale or recompress it"
    )


def _too_many_pixels(label: str, width: int, height: int, max_pixels: int) -> str:
    return (
        f"{label}: {width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,} "
        f"(refused as a possible decompression bomb); downscale it first"
    )


def _decode(data: bytes, label: str, max_pixels: int, max_bytes: int, draft: int | None = None) -> Image.Image:
    if not data:
        raise ImageError(f"{label}: the data is empty (0 bytes); the upload or the file is incomplete")
    if len(data) > max_bytes:
        raise ImageError(_too_many_bytes(label, len(data), max_bytes))
    fmt = None
    max_pixels = _pixel_limit(max_pixels)
    # No warnings filter here: decoding runs on several threads at once (see resnet_hub.quiet). Pillow raises on a
    # header over twice its own limit and only warns between the two; the check below refuses those.
    try:
        with Image.open(io.BytesIO(data), formats=_OPEN_FORMATS) as img:
            fmt = img.format
            # Image.open only parsed the header: refuse bombs before a single pixel is decoded.
            if img.width * img.height > max_pixels:
                raise ImageError(_too_many_pixels(label, img.width, img.height, max_pixels))
            if draft and img.format in ("JPEG", "MPO") and min(img.size) >= 2 * draft:
                img.draft("RGB", (draft, draft))  # the DCT itself scales: the shorter side stays >= draft
            return _decode_pixels(img, label)
    except ImageError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageError(
            f"{label}{_sniff(data)} is not an image Pillow can read safely: allowed formats are "
            f"{_ALLOWED_LIST}; convert it to PNG or JPEG"
        ) from None
    except Exception as e:  # noqa: BLE001 - a malformed file can make a Pillow plugin raise almost anything
        raise _decoding_error(e, label, fmt, max_pixels) from None


def _pixel_limit(max_pixels: int) -> int:
    """The caller's limit, capped by Pillow's own ``Image.MAX_IMAGE_PIXELS`` (None: Pillow sets no limit)."""
    return min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)


def _from_pil(img: Image.Image, label: str, max_pixels: int) -> Image.Image:
    if img.format is not None and img.format not in ALLOWED_FORMATS:
        raise ImageError(
            f"{label}: a {img.format} image is not decoded here, for safety: allowed formats are "
            f"{_ALLOWED_LIST}; convert it to PNG or JPEG"
        )
    max_pixels = _pixel_limit(max_pixels)
    if img.width * img.height > max_pixels:
        raise ImageError(_too_many_pixels(label, img.width, img.height, max_pixels))
    try:
        return _decode_pixels(img, label)
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - a lazily opened image decodes here, with the same risks as bytes
        raise _decoding_error(e, label, img.format, max_pixels) from None


def _decode_pixels(img: Image.Image, label: str) -> Image.Image:
    img.seek(0)  # animations (GIF, WEBP, APNG, MPO): the first frame
    img.load()
    return _to_rgb(ImageOps.exif_transpose(img), label)


def _decoding_error(e: Exception, label: str, fmt: str | None, max_pixels: int) -> ImageError:
    what = fmt or "image"
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        # Pillow's own sentence names its own (larger) limit: state ours alone.
        size = re.search(r"\((\d+) pixels\)", str(e))
        pixels = f"{int(size.group(1)):,} pixels" if size else "more pixels than allowed"
        return ImageError(
            f"{label}: {pixels} is over the limit of {max_pixels:,} "
            f"(refused as a possible decompression bomb); downscale it first"
        )
    if isinstance(e, OSError) and "truncated" in str(e):
        return ImageError(f"{label}: the {what} file is truncated ({e}); the upload or download was cut short")
    return ImageError(f"{label}: the {what} data is corrupt ({e}); re-save or re-upload it")


def _sniff(data: bytes) -> str:
    """A hint at what a refused file really is, from its first bytes."""
    head = data[:64].lstrip()
    if head.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):
        return " (PostScript/EPS)"
    if head.startswith(b"%PDF"):
        return " (a PDF document)"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return " (HEIC/AVIF)"
    if head.startswith(b"<"):
        return " (text: HTML, XML or SVG)"
    return ""


def _to_rgb(img: Image.Image, label: str = "the image") -> Image.Image:
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    # A transparent colour ("transparency" in info) is honoured for 8-bit modes; Pillow's RGBA
    # conversion of 16-bit and float modes clips, so those keep their gray values instead.
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or ("transparency" in img.info and mode in ("1", "L", "P", "RGB")):
        if mode == "La":  # premultiplied: Pillow converts it only via LA
            img = img.convert("LA")
        # Composite on white: what a transparent PNG looks like on a web page, not black.
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", img.size, _WHITE), rgba).convert("RGB")
    if mode.startswith("I;16"):
        return _gray_array_to_rgb(_scale_to_uint8(np.asarray(img), 65535))
    if mode == "I":
        a = np.asarray(img)
        if a.size and (a.min() < 0 or a.max() > 65535):
            lo, hi = int(a.min()), int(a.max())
            return _gray_array_to_rgb(_scale_to_uint8(a.astype(np.float64) - lo, max(hi - lo, 1)))
        return _gray_array_to_rgb(_scale_to_uint8(a, 65535))  # 16-bit data, as most "I" files hold
    if mode == "F":
        return _gray_array_to_rgb(_float_to_uint8(np.asarray(img)))
    try:
        return img.convert("RGB")  # "1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV"
    except ValueError:
        raise ImageError(f"{label}: Pillow cannot convert image mode {mode!r} to RGB; re-save it as RGB") from None


def _scale_to_uint8(a: np.ndarray, full_scale: float) -> np.ndarray:
    """Map [0, full_scale] onto [0, 255], rounding half up (never clipping full scale to white early)."""
    return np.clip(np.floor(a.astype(np.float64) * (255.0 / full_scale) + 0.5), 0, 255).astype(np.uint8)


def _float_to_uint8(a: np.ndarray) -> np.ndarray:
    a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return _scale_to_uint8(a, 1.0 if a.size == 0 or a.max() <= 1.0 else 255.0)


def _gray_array_to_rgb(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(a)).convert("RGB")


def _from_array(a: np.ndarray, label: str, max_pixels: int) -> Image.Image:
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4) and min(a.shape[1:]) > 4:
        raise ImageError(
            f"{label}: array of shape {a.shape} looks channels-first; pass (H, W, C), e.g. a.transpose(1, 2, 0)"
        )
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (1, 3, 4)):
        raise ImageError(
            f"{label}: array of shape {a.shape} is not one image; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
        )
    height, width = a.shape[:2]
    if height == 0 or width == 0:
        raise ImageError(f"{label}: array of shape {a.shape} has no pixels")
    if width * height > max_pixels:
        raise ImageError(_too_many_pixels(label, width, height, max_pixels))
    if a.dtype == np.uint8:
        pixels = a
    elif a.dtype == np.uint16:
        pixels = _scale_to_uint8(a, 65535)
    elif a.dtype == np.bool_:
        pixels = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ImageError(f"{label}: the float array holds NaN or Inf values")
        pixels = _float_to_uint8(a)
    else:
        raise ImageError(
            f"{label}: {a.dtype} arrays are not read; pass uint8 (0-255), uint16, bool, or float in [0, 1]"
        )
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    # uint8 (H, W), (H, W, 3), (H, W, 4) become "L", "RGB", "RGBA"; RGBA is then composited on white.
    return _to_rgb(Image.fromarray(np.ascontiguousarray(pixels)), label)


# ---------------------------------------------------------------------------
# Preprocessing


def eval_transform(p: Preprocessing) -> v2.Compose:
    """Resize the shorter side to ``p.resize_size``, center-crop ``p.input_size``, normalise.

    The one transform for inference and for validation during fine-tuning.

    >>> transform = eval_transform(Preprocessing(input_size=224, crop_pct=0.875))  # resize 256, crop 224
    >>> transform(load_image(np.zeros((300, 400, 3), np.uint8))).shape
    torch.Size([3, 224, 224])
    """
    return v2.Compose(_channels(p) + [*resize_and_crop(p).transforms, *_to_normalized_tensor(p)])


def resize_and_crop(p: Preprocessing) -> v2.Compose:
    """The geometric part of :func:`eval_transform`: the crop the model sees, still an image
    (grad-CAM draws its heatmap over it)."""
    return v2.Compose(
        [v2.Resize(p.resize_size, interpolation=_interpolation(p), antialias=True), v2.CenterCrop(p.input_size)]
    )


def train_transform(p: Preprocessing, *, augment: str = "photo") -> v2.Compose:
    """Training-time augmentation around the same resize and normalisation as :func:`eval_transform`.

    ``augment``: "photo" (random resized crop, horizontal flip), "digits"
    (small rotation/shift/scale, never a flip: digits are not mirror-symmetric),
    or "none" (the eval transform).
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    if augment == "none":
        return eval_transform(p)
    interpolation = _interpolation(p)
    if augment == "photo":
        geometry = [
            v2.RandomResizedCrop(p.input_size, scale=(0.35, 1.0), interpolation=interpolation, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    else:
        geometry = [
            v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), interpolation=interpolation),
            v2.Resize(p.resize_size, interpolation=interpolation, antialias=True),
            v2.CenterCrop(p.input_size),
        ]
    return v2.Compose(_channels(p) + geometry + _to_normalized_tensor(p))


def to_tensor_batch(images: Sequence[Image.Image], p: Preprocessing) -> Tensor:
    """Stack images through :func:`eval_transform` into a (B, C, input_size, input_size) float32 tensor.

    >>> to_tensor_batch(decode_batch(["cat.jpg", "dog.png"]), Preprocessing()).shape   # doctest: +SKIP
    torch.Size([2, 3, 224, 224])
    """
    for i, img in enumerate(images, 1):
        if not isinstance(img, Image.Image):
            raise TypeError(f"image {i} is a {type(img).__name__}, not a PIL image: decode it with load_image first")
    if not images:
        return torch.empty((0, len(p.mean), p.input_size, p.input_size))
    _channels(p)  # an unsupported channel count is refused here, as eval_transform refuses it
    return _normalized(len(images), lambda i: np.asarray(crop_resized(_to_rgb(images[i]), p)), p)


def _normalized(n: int, crop: Callable[[int], np.ndarray], p: Preprocessing) -> Tensor:
    """The (n, C, H, W) float32 batch of the uint8 crops ``crop(i)`` ((H, W) or (H, W, C)), each made and normalized
    in one task on the shared pool: an image's few hundred KB stay in its core's cache, where normalizing the
    stacked batch afterwards streamed it through memory four times on one core.

    The same arithmetic as eval_transform's ToDtype(scale=True) then Normalize, in float32, in numpy: small torch
    ops here wait on torch's thread pool, which an OpenVINO pass has just left busy.
    """
    out = np.empty((n, len(p.mean), p.input_size, p.input_size), dtype=np.float32)
    mean = np.asarray(p.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(p.std, dtype=np.float32).reshape(-1, 1, 1)

    def one(i: int) -> None:
        pixels = crop(i)
        chw = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        x = out[i]
        np.divide(chw, np.float32(255.0), out=x)
        x -= mean
        x /= std

    parallel_map(one, range(n))
    return torch.from_numpy(out)


def crop_resized(img: Image.Image, p: Preprocessing) -> Image.Image:
    """:func:`resize_and_crop` in one resampling pass: only the centre crop's source box is resized.

    Each output pixel samples the source at the same place, with the same filter reaching into
    the same neighbours, as a resize of the whole image followed by the crop (the two differ by at
    most one 8-bit level, from rounding); the pixels the crop throws away are never computed.
    """
    if len(p.mean) == 1:
        img = img.convert("L")
    w, h = img.size
    size, crop = p.resize_size, p.input_size
    # torchvision's Resize(int): the shorter side becomes ``size``, the longer keeps the aspect ratio
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if crop > new_w or crop > new_h:  # CenterCrop would pad: leave that rare case to torchvision
        return resize_and_crop(p)(img)
    top = int(round((new_h - crop) / 2.0))
    left = int(round((new_w - crop) / 2.0))
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
    return img.resize((crop, crop), _PIL_RESAMPLE[p.interpolation], box=box)


def denormalize(t: Tensor, p: Preprocessing) -> Tensor:
    """Undo ``Normalize(p.mean, p.std)`` on (C, H, W) or (B, C, H, W): back to [0, 1] pixel values, for display."""
    mean = torch.tensor(p.mean, dtype=t.dtype, device=t.device).view(-1, 1, 1)
    std = torch.tensor(p.std, dtype=t.dtype, device=t.device).view(-1, 1, 1)
    return t * std + mean


def _interpolation(p: Preprocessing) -> InterpolationMode:
    return _INTERPOLATION[p.interpolation]


def _channels(p: Preprocessing) -> list[v2.Transform]:
    if len(p.mean) == 1:
        return [v2.Grayscale(1)]
    if len(p.mean) == 3:
        return []
    raise ValueError(f"preprocessing for {len(p.mean)} channels: images give 1 (grayscale) or 3 (RGB)")


def _to_normalized_tensor(p: Preprocessing) -> list[v2.Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(p.mean, p.std)]


def center_digit(image: Image.Image, canvas: int = 28, box: int = 20) -> Image.Image:
    """Lay out a hand-drawn digit the way MNIST's are: bright ink on black, the
    ink's bounding box scaled to fit ``box`` px, centred by its centre of mass
    in a ``canvas`` px square (LeCun et al.'s MNIST preprocessing).

    Drawings usually come dark on light: those are inverted first.
    """
    gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    if gray.mean() > 0.5:
        gray = 1.0 - gray
    ink = gray > 0.2
    if not ink.any():
        return Image.new("RGB", (canvas, canvas))
    rows, cols = np.nonzero(ink)
    crop = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = box / max(crop.shape)
    h, w = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    small = np.asarray(Image.fromarray(np.uint8(crop * 255)).resize((w, h), Image.Resampling.LANCZOS), np.float32)
    out = np.zeros((canvas, canvas), np.float32)
    total = small.sum() or 1.0
    cy, cx = (np.arange(h) @ small.sum(1)) / total, (np.arange(w) @ small.sum(0)) / total
    top = int(np.clip(round(canvas / 2 - cy), 0, canvas - h))
    left = int(np.clip(round(canvas / 2 - cx), 0, canvas - w))
    out[top : top + h, left : left + w] = small
    return Image.fromarray(np.uint8(np.clip(out, 0, 255))).convert("RGB")


def looks_like_photo(image: Image.Image) -> bool:
    """Whether ``image`` looks like a photo rather than a digit: colour, or many mid-grey tones.

    A digit (MNIST's, a sketch, ink on paper) is nearly two-toned: ink and background,
    with grey only along the strokes' edges. A digit model's answer for a photo means nothing,
    and the app says so.
    """
    small = image.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)
    saturation = np.asarray(small.convert("HSV"), np.float32)[..., 1].mean() / 255
    gray = np.asarray(small.convert("L"), np.float32) / 255
    mid_tones = ((gray > 0.2) & (gray < 0.8)).mean()
    return bool(saturation > PHOTO_SATURATION or mid_tones > PHOTO_MID_TONES)
