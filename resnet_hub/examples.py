"""Example inputs that ship with installed packages: real photos and real digits, no network."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .store import store_root

# scikit-image's bundled photos (public domain or CC0; see skimage.data)
PHOTOS = ("chelsea", "astronaut", "coffee", "rocket")
DIGITS = (3, 7, 9)
CALIBRATION_PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "cat", "hubble_deep_field", "immunohistochemistry", "retina")


@functools.cache
def example_images() -> tuple[Path, ...]:
    """PNG files of a few real photos and MNIST digits, written once into the store."""
    folder = store_root() / "examples"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    import skimage.data

    for name in PHOTOS:
        paths.append(_write(folder / f"{name}.png", lambda n=name: getattr(skimage.data, n)()))
    from .data import mnist_sample

    digits = mnist_sample(limit_per_class=1)
    for digit in DIGITS:
        image = digits.images[digits.targets.index(digits.classes.index(str(digit)))]
        # 28 px is too small to see in a browser: 4x, nearest neighbour, keeps the real pixels.
        paths.append(_write(folder / f"mnist-digit-{digit}.png", lambda im=image: im.resize((112, 112), Image.Resampling.NEAREST)))
    return tuple(paths)


def _write(path: Path, pixels) -> Path:
    if not path.is_file():
        array = np.asarray(pixels())
        if array.ndim == 3 and array.shape[-1] == 4:
            array = array[..., :3]
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        Image.fromarray(array.astype(np.uint8)).save(tmp, format="PNG")
        os.replace(tmp, path)
    return path


def calibration_images(kind: str = "photo", n: int = 32, offset: int = 0) -> list[Image.Image]:
    """``n`` real images to calibrate or check a model with: MNIST digits, or photos with mirrored/cropped views.

    ``offset`` picks a disjoint set of digits (calibrate on one, measure on another).
    """
    if kind == "digits":
        from .data import mnist_sample

        digits = mnist_sample()
        return digits.images[offset :: max(1, len(digits.images) // n)][:n]
    import skimage.data

    base = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in CALIBRATION_PHOTOS]
    out = []
    for i in range(n):
        img, view = base[i % len(base)], i // len(base)
        if view % 2:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if view >= 2:
            w, h = img.size
            img = img.crop((w // 8, h // 8, w - w // 8, h - h // 8))
        out.append(img)
    return out
