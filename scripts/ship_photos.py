"""Write resnet_hub/photos/ from scikit-image's bundled photos: the ones the engine check calibrates and checks on,
and the app's example photos. PNGs become lossless WebP (same pixels, ~30% smaller); JPEGs are copied byte for byte.

    python scripts/ship_photos.py      # needs scikit-image; run once, commit the result
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from resnet_hub.examples import CALIBRATION_PHOTOS, CHECK_PHOTOS, PHOTOS, PHOTO_FOLDER  # noqa: E402

# skimage.data's function -> (its file, where the photo comes from, its licence), from skimage.data's docstrings
# (scikit-image 0.26). Where a docstring states no licence it says so; scikit-image ships them under BSD-3-Clause.
SOURCES = {
    "chelsea": ("chelsea.png", "Stefan van der Walt's cat Chelsea", "CC0 (the photographer)"),
    "astronaut": ("astronaut.png", "NASA Great Images database, https://flic.kr/p/r9qvLn (astronaut Eileen Collins)",
                  "public domain (no known copyright restrictions)"),
    "coffee": ("coffee.png", "Pikolo Espresso Bar, photographer Rachel Michetti", "CC0 (the photographer)"),
    "rocket": ("rocket.jpg", "SpaceX Photos, https://www.flickr.com/photos/spacexphotos/16511594820/ "
               "(DSCOVR on Falcon 9)", "public domain (released by SpaceX)"),
    "hubble_deep_field": ("hubble_deep_field.jpg", "HubbleSite, "
                          "http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/ (NASA)",
                          "public domain (NASA media guidelines)"),
    "immunohistochemistry": ("ihc.png", "Center for Microscopy And Molecular Imaging (CMMI)",
                             "no known copyright restrictions"),
    "retina": ("retina.jpg", "Wikimedia Commons, File:Fundus_photograph_of_normal_left_eye.jpg (Mikael Häggström)",
               "CC0 1.0"),
    "stereo_motorcycle": ("motorcycle_left.png", "Middlebury 2014 stereo benchmark (Nesic, Westling, Wang, "
                          "Kitajima, Krathwohl, Scharstein), left image, down-sampled 4x by scikit-image",
                          "not stated in skimage.data; distributed with scikit-image (BSD-3-Clause)"),
    "camera": ("camera.png", "photographer Lav Varshney", "CC0 (the photographer)"),
    "coins": ("coins.png", "Brooklyn Museum Collection, "
              "https://www.brooklynmuseum.org/opencollection/archives/image/51611", "no known copyright restrictions"),
    "clock": ("clock_motion.png", "Stefan van der Walt", "public domain (the photographer)"),
    "moon": ("moon.png", "scikit-image", "not stated in skimage.data; distributed with scikit-image (BSD-3-Clause)"),
    "grass": ("grass.png", "DeviantArt, https://www.deviantart.com/linolafett/art/Grass-01-434853879, cropped and "
              "made grey by scikit-image", "CC0"),
    "gravel": ("gravel.png", "CC0Textures, https://cc0textures.com/view.php?tex=Gravel04, rescaled, cropped and made "
               "grey by scikit-image", "CC0"),
    "brick": ("brick.png", "CC0Textures, https://cc0textures.com/view.php?tex=Bricks25, transformed by scikit-image",
              "CC0"),
    "colorwheel": ("color.png", "scikit-image", "not stated in skimage.data; distributed with scikit-image "
                   "(BSD-3-Clause)"),
    "page": ("page.png", "scikit-image", "not stated in skimage.data; distributed with scikit-image (BSD-3-Clause)"),
}
SAME_AS = {"cat": "chelsea"}  # skimage.data.cat() reads chelsea.png


def main() -> None:
    import skimage
    import skimage.data

    data = Path(skimage.data.__file__).parent
    wanted = [SAME_AS.get(n, n) for n in dict.fromkeys(PHOTOS + CALIBRATION_PHOTOS + CHECK_PHOTOS)]
    PHOTO_FOLDER.mkdir(exist_ok=True)
    record = {}
    for name in dict.fromkeys(wanted):
        original, source, licence = SOURCES[name]
        raw = (data / original).read_bytes()
        if original.endswith(".png"):
            image = Image.open(io.BytesIO(raw))
            buffer = io.BytesIO()
            image.save(buffer, format="WEBP", lossless=True, quality=100, method=6)
            shipped, payload = f"{name}.webp", buffer.getvalue()
            back = Image.open(io.BytesIO(payload)).convert(image.mode)
            assert np.array_equal(np.asarray(back), np.asarray(image)), name
        else:
            shipped, payload = f"{name}{os.path.splitext(original)[1]}", raw
        (PHOTO_FOLDER / shipped).write_bytes(payload)
        record[name] = {"file": shipped, "skimage_data": f"skimage.data.{name}()", "original_file": original,
                        "original_sha256": hashlib.sha256(raw).hexdigest(), "source": source, "licence": licence}
    for alias, name in SAME_AS.items():
        record[alias] = {**record[name], "skimage_data": f"skimage.data.{alias}()"}
    note = (f"Photos from scikit-image {skimage.__version__}'s skimage.data, for the engine check's calibration and "
            "check images and the app's examples. PNG originals are stored as lossless WebP (the same pixels), JPEG "
            "originals byte for byte. Written by scripts/ship_photos.py.")
    (PHOTO_FOLDER / "sources.json").write_text(json.dumps({"note": note, "photos": record}, indent=1,
                                                          ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
