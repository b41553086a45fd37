"""resnet_hub.examples: the photos shipped in the package are scikit-image's, pixel for pixel."""

from __future__ import annotations

import json

import numpy as np
import pytest

from resnet_hub import examples


def _skimage_photo(name: str) -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    pixels = getattr(data, name)()
    pixels = np.asarray(pixels[0] if isinstance(pixels, tuple) else pixels)
    return np.repeat(pixels[..., None], 3, axis=-1) if pixels.ndim == 2 else pixels[..., :3]


@pytest.mark.parametrize("name", sorted(set(examples.PHOTOS + examples.CALIBRATION_PHOTOS + examples.CHECK_PHOTOS)))
def test_a_shipped_photo_has_the_pixels_skimage_data_gives(name):
    assert np.array_equal(np.asarray(examples.photo(name)), _skimage_photo(name))


def test_every_shipped_photo_names_its_source_and_licence():
    sources = json.loads((examples.PHOTO_FOLDER / "sources.json").read_text())["photos"]
    shipped = {p.name for p in examples.PHOTO_FOLDER.iterdir()} - {"sources.json"}
    assert {entry["file"] for entry in sources.values()} == shipped
    for entry in sources.values():
        assert entry["source"] and entry["licence"] and entry["skimage_data"].startswith("skimage.data.")


def test_calibration_and_check_images_need_no_scikit_image(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "skimage", None)  # `import skimage` now raises ImportError
    assert len(examples.calibration_images("photo", 8)) == 8
    assert len(examples.check_images("photo", 12)[0]) == 12


def test_an_unknown_photo_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="no shipped photo 'lena'.*chelsea"):
        examples.photo("lena")
