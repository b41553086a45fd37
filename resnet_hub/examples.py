"""Example inputs that ship with the package: real photos (scikit-image's, in ``photos/``) and real digits, no network."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from PIL import Image


# scikit-image's photos, shipped in photos/ with the pixels skimage.data gives; sources and licences: photos/sources.json
PHOTO_FOLDER = Path(__file__).with_name("photos")
PHOTOS = ("chelsea", "astronaut", "coffee", "rocket")  # shown as examples
DIGIT_FOLDER = Path(__file__).with_name("example_images")
DIGITS = (3, 7, 9)
CALIBRATION_PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "cat", "hubble_deep_field", "immunohistochemistry", "retina")


def example_images() -> tuple[Path, ...]:
    """The example files the app shows: a few of the shipped photos, then real MNIST digits (shipped in
    ``example_images/``, sources beside them). Read-only: nothing is written."""
    return (*(photo_file(name) for name in PHOTOS),
            *(DIGIT_FOLDER / f"mnist-digit-{digit}.png" for digit in DIGITS))


def calibration_images(kind: str = "photo", n: int = 32, offset: int = 0) -> list[Image.Image]:
    """``n`` real images to calibrate a model with: MNIST digits, or views of scikit-image photos.

    Image ``offset + i`` is always the same image, and no two indices give the same one:
    a digit from its own place in the sample, or one of the calibration photos, mirrored or
    not, cropped to its own box. So ``offset`` picks a disjoint set (calibrate on one,
    measure on another); :func:`check_images` goes further, with photos never used here.
    """
    if kind == "digits":
        from .data import mnist_sample

        digits = mnist_sample()
        # the even places of the sample, spread over all of it: check_images takes the odd ones
        return [digits.images[2 * _spread(offset + i, len(digits.images) // 2)] for i in range(n)]
    return _views(CALIBRATION_PHOTOS, n, offset)


CHECK_PHOTOS = ("stereo_motorcycle", "camera", "coins", "clock", "moon", "grass", "gravel", "brick", "colorwheel", "page")


def check_images(kind: str = "photo", n: int = 48) -> tuple[list[Image.Image], str]:
    """Real images that :func:`calibration_images` never gives, to check a quantized model on,
    and a sentence saying what they are."""
    if kind == "digits":
        from .data import mnist_sample

        digits = mnist_sample()
        # the odd places of the sample: calibration takes the even ones
        out = [digits.images[2 * _spread(i, len(digits.images) // 2) + 1] for i in range(n)]
        return out, f"{n} MNIST digits not used for calibration"
    return _views(CHECK_PHOTOS, n, 0), (f"{n} views of {len(CHECK_PHOTOS)} scikit-image photos "
                                        f"that calibration never sees")


def _spread(j: int, size: int) -> int:
    """A distinct place in range(size) for each j < size, spread over all of it (97 is prime)."""
    stride = 97 if size % 97 else 89
    return (j * stride) % size


@functools.cache
def _photo_files() -> dict[str, str]:
    return {name: entry["file"] for name, entry in json.loads((PHOTO_FOLDER / "sources.json").read_text())["photos"].items()}


def photo_file(name: str) -> Path:
    """The shipped file of the photo ``skimage.data.<name>()`` gives."""
    files = _photo_files()
    if name not in files:
        raise ValueError(f"no shipped photo {name!r}: choose one of {', '.join(sorted(files))}")
    return PHOTO_FOLDER / files[name]


def photo(name: str) -> Image.Image:
    """The shipped photo ``skimage.data.<name>()`` gives, as RGB (a grey one as three equal channels).

    >>> photo("chelsea").size
    (451, 300)
    """
    with Image.open(photo_file(name), formats=("PNG", "JPEG", "WEBP")) as image:
        return image.convert("RGB")


def _views(names: tuple[str, ...], n: int, offset: int) -> list[Image.Image]:
    import random

    base = [photo(name) for name in names]
    out = []
    for index in range(offset, offset + n):
        img, view = base[index % len(base)], index // len(base)
        if view == 0:
            out.append(img)
            continue
        rng = random.Random(f"{names[index % len(base)]}/{view}")
        if view % 2:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        w, h = img.size
        scale = rng.uniform(0.6, 0.95)
        cw, ch = int(w * scale), int(h * scale)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        out.append(img.crop((x, y, x + cw, y + ch)))
    return out
