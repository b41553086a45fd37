"""Images: untrusted files decode safely to RGB; preprocessing follows the weights' metadata."""

from __future__ import annotations

import io
import re
import struct
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import EpsImagePlugin, ExifTags, Image, ImageFile
from torchvision.transforms import InterpolationMode, v2

from resnet_hub import ImageError, Preprocessing
from resnet_hub.images import (
    ALLOWED_FORMATS,
    decode_batch,
    denormalize,
    eval_transform,
    load_image,
    to_tensor_batch,
    train_transform,
)

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)
PLAIN = Preprocessing(input_size=224, crop_pct=0.875, interpolation="nearest", mean=(0, 0, 0), std=(1, 1, 1))


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


def rgb(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img).astype(int)


def noise(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    """A photo-like image: incompressible, so half of its file is half of its pixel data."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header declares width x height but holds almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


# --- modes, each against a reference decoding ---------------------------------------------


def test_palette_image_decodes_to_its_palette_colors(tmp_path):
    img = Image.new("P", (2, 2))
    img.putpalette([*RED, *GREEN, *BLUE, *WHITE] + [0] * 3 * 252)
    img.putdata([0, 1, 2, 3])
    out = load_image(save(img, tmp_path / "palette.png"))
    assert rgb(out).reshape(-1, 3).tolist() == [list(RED), list(GREEN), list(BLUE), list(WHITE)]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_is_composited_on_white(tmp_path, fmt):
    img = Image.new("P", (2, 1))
    img.putpalette([*BLACK, *RED] + [0] * 3 * 254)
    img.putdata([0, 1])  # index 0 is black but transparent: it must not show as black
    out = load_image(save(img, tmp_path / f"clear.{fmt.lower()}", format=fmt, transparency=0))
    assert rgb(out)[0].tolist() == [list(WHITE), list(RED)]


def test_gray_with_alpha_is_composited_on_white(tmp_path):
    img = Image.new("LA", (3, 1))
    img.putdata([(0, 0), (0, 255), (0, 128)])
    out = rgb(load_image(save(img, tmp_path / "la.png")))
    assert out[0, 0].tolist() == list(WHITE)
    assert out[0, 1].tolist() == list(BLACK)
    assert np.abs(out[0, 2] - 127).max() <= 1


def test_fully_transparent_rgba_pixel_becomes_white(tmp_path):
    img = Image.new("RGBA", (1, 1), (0, 0, 0, 0))
    assert rgb(load_image(save(img, tmp_path / "clear.png")))[0, 0].tolist() == list(WHITE)


def test_half_transparent_red_over_white_is_pink(tmp_path):
    img = Image.new("RGBA", (1, 1), (255, 0, 0, 128))
    out = rgb(load_image(save(img, tmp_path / "pink.png")))[0, 0]
    assert out[0] == 255
    assert np.abs(out[1:] - 128).max() <= 1


def test_rgb_png_with_a_transparent_color_shows_it_as_white(tmp_path):
    img = Image.new("RGB", (2, 1), BLACK)
    img.putpixel((1, 0), GREEN)
    out = load_image(save(img, tmp_path / "keyed.png", transparency=GREEN))
    assert rgb(out)[0].tolist() == [list(BLACK), list(WHITE)]


def test_cmyk_tiff_is_converted_to_rgb_colors(tmp_path):
    img = Image.new("CMYK", (3, 1))
    img.putdata([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)])  # paper white, cyan ink, black ink
    out = rgb(load_image(save(img, tmp_path / "print.tif")))
    assert out[0].tolist() == [list(WHITE), [0, 255, 255], list(BLACK)]


def test_16_bit_gray_png_is_scaled_by_its_bit_depth_not_clipped(tmp_path):
    img = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert img.mode == "I;16"
    out = rgb(load_image(save(img, tmp_path / "depth.png")))
    assert out[0, :, 0].tolist() == [0, 128, 255]  # 32768 is mid-gray, not white


def test_float_tiff_in_unit_range_is_scaled_to_8_bits(tmp_path):
    img = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert img.mode == "F"
    out = rgb(load_image(save(img, tmp_path / "float.tif")))
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_1_bit_image_is_black_and_white(tmp_path):
    img = Image.new("1", (2, 1))
    img.putdata([0, 1])
    out = rgb(load_image(save(img, tmp_path / "bits.png")))
    assert out[0].tolist() == [list(BLACK), list(WHITE)]


def test_gray_image_becomes_gray_rgb(tmp_path):
    img = Image.new("L", (2, 1))
    img.putdata([0, 77])
    out = rgb(load_image(save(img, tmp_path / "gray.png")))
    assert out[0].tolist() == [[0, 0, 0], [77, 77, 77]]


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [("HSV", (0, 255, 255), RED), ("YCbCr", (76, 85, 255), RED), ("LAB", (255, 128, 128), WHITE)],
)
def test_other_color_spaces_are_converted_colorimetrically(mode, value, expected):
    out = rgb(load_image(Image.new(mode, (1, 1), value)))[0, 0]
    assert np.abs(out - expected).max() <= 2


def test_float_array_in_unit_range_is_scaled_to_255():
    out = rgb(load_image(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)))
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_uint16_array_is_scaled_to_8_bits_not_clipped():
    out = rgb(load_image(np.array([[0, 257, 32768, 65535]], dtype=np.uint16)))
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]


def test_bool_array_is_black_and_white():
    out = rgb(load_image(np.array([[False, True]])))
    assert out[0].tolist() == [list(BLACK), list(WHITE)]


def test_rgba_array_is_composited_on_white():
    a = np.array([[[0, 0, 255, 0], [0, 0, 255, 255]]], dtype=np.uint8)
    assert rgb(load_image(a))[0].tolist() == [list(WHITE), list(BLUE)]


def test_gray_array_with_a_channel_axis_is_gray_rgb():
    out = rgb(load_image(np.full((2, 3, 1), 9, dtype=np.uint8)))
    assert out.shape == (2, 3, 3)
    assert (out == 9).all()


# --- orientation, animation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("orientation", "red_corner"),
    [(6, "top-right"), (8, "bottom-left")],  # 6: display rotated 90 degrees clockwise; 8: counter-clockwise
)
def test_exif_orientation_is_applied(tmp_path, orientation, red_corner):
    img = Image.new("RGB", (60, 30), BLUE)
    img.paste(RED, (0, 0, 12, 12))  # stored top-left corner
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    out = load_image(save(img, tmp_path / "phone.jpg", quality=95, exif=exif))
    assert out.size == (30, 60)
    x, y = {"top-right": (25, 5), "bottom-left": (5, 55)}[red_corner]
    assert np.abs(rgb(out)[y, x] - RED).max() < 40
    assert np.abs(rgb(out)[5, 5] - BLUE).max() < 40  # the stored orientation would put red here


@pytest.mark.parametrize(("fmt", "kwargs"), [("GIF", {}), ("PNG", {}), ("WEBP", {"lossless": True})])
def test_animation_gives_its_first_frame(tmp_path, fmt, kwargs):
    frames = [Image.new("RGB", (8, 8), color) for color in (RED, GREEN, BLUE)]
    path = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=100, **kwargs)
    with Image.open(path) as check:
        assert check.n_frames == 3
    assert (rgb(load_image(path)) == RED).all()


def test_pil_animation_left_on_a_later_frame_still_gives_the_first(tmp_path):
    frames = [Image.new("RGB", (8, 8), color) for color in (RED, GREEN)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with Image.open(tmp_path / "anim.gif") as img:
        img.seek(1)
        assert (rgb(load_image(img)) == RED).all()


def test_multi_picture_jpeg_from_a_camera_gives_its_first_picture(tmp_path):
    path = tmp_path / "camera.jpg"
    Image.new("RGB", (16, 16), RED).save(path, "MPO", save_all=True, append_images=[Image.new("RGB", (16, 16), BLUE)])
    with Image.open(path) as check:
        assert check.format == "MPO"
    assert np.abs(rgb(load_image(path)) - RED).max() < 10


# --- input types ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "str path", "Path", "PIL", "numpy"])
def test_every_input_type_decodes_to_the_same_pixels(tmp_path, kind):
    path = save(noise(), tmp_path / "photo.png")
    reference = rgb(load_image(path.read_bytes()))
    image = {
        "bytes": lambda: path.read_bytes(),
        "bytearray": lambda: bytearray(path.read_bytes()),
        "str path": lambda: str(path),
        "Path": lambda: path,
        "PIL": lambda: Image.open(path),
        "numpy": lambda: np.asarray(Image.open(path)),
    }[kind]()
    assert np.array_equal(rgb(load_image(image)), reference)


def test_allowed_formats_are_common_photo_formats_only():
    assert {"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"} <= ALLOWED_FORMATS
    assert not ALLOWED_FORMATS & {"EPS", "PSD", "PDF", "ICO", "WMF", "XPM"}


# --- bad input, refused with a specific message -------------------------------------------


def test_zero_bytes_are_refused_as_empty():
    with pytest.raises(ImageError, match=r"empty \(0 bytes\)"):
        load_image(b"")


def test_zero_byte_file_is_refused_as_empty_and_named(tmp_path):
    (tmp_path / "upload.png").write_bytes(b"")
    with pytest.raises(ImageError, match=r"^upload\.png: .*empty"):
        load_image(tmp_path / "upload.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "TIFF"])
def test_truncated_file_is_refused_and_truncation_stays_an_error(fmt):
    data = encode(noise(), fmt)
    with pytest.raises(ImageError, match=rf"{fmt} file is truncated"):
        load_image(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_random_bytes_are_not_an_image():
    junk = np.random.default_rng(0).bytes(2048)
    with pytest.raises(ImageError, match="is not an image Pillow can read safely: allowed formats are BMP, GIF"):
        load_image(junk)


def test_html_saved_as_jpg_is_refused_as_text(tmp_path):
    path = tmp_path / "cat.jpg"
    path.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    with pytest.raises(ImageError, match=r"^cat\.jpg \(text: HTML.*is not an image Pillow can read safely"):
        load_image(path)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nnewpath 0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"


def test_eps_is_refused_without_running_ghostscript(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: calls.append(args))
    path = tmp_path / "drawing.eps"
    path.write_bytes(EPS)
    with pytest.raises(ImageError, match=r"PostScript/EPS\) is not an image Pillow can read safely"):
        load_image(path)
    assert calls == []


def test_pil_image_of_a_refused_format_is_not_decoded(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: calls.append(args))
    (tmp_path / "drawing.eps").write_bytes(EPS)
    with Image.open(tmp_path / "drawing.eps") as img, pytest.raises(ImageError, match="EPS image is not decoded"):
        load_image(img)
    assert calls == []


def test_image_over_the_pixel_limit_is_refused_with_its_size(tmp_path):
    path = save(Image.new("RGB", (2000, 2000)), tmp_path / "big.png")
    with pytest.raises(ImageError, match=r"2000x2000 = 4,000,000 pixels is over the limit of 1,000,000"):
        load_image(path, max_pixels=1_000_000)


def test_header_over_the_pixel_limit_is_refused_before_decoding():
    # 7000 x 7000 is under Pillow's own limit: only the check on the header stops it. Were the
    # pixels decoded, the few bytes of data would fail as truncated instead.
    with pytest.raises(ImageError, match="7000x7000 = 49,000,000 pixels is over the limit of 40,000,000"):
        load_image(png_declaring(7000, 7000))


def test_decompression_bomb_header_is_refused_quickly():
    start = time.perf_counter()
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(png_declaring(100_000, 100_000))
    assert time.perf_counter() - start < 1.0


def test_pillows_own_pixel_limit_caps_a_larger_max_pixels():
    limit = Image.MAX_IMAGE_PIXELS  # between it and twice it, Pillow only warns: the check refuses the image
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(ImageError, match=f"over the limit of {limit:,} "):
        load_image(png_declaring(10_000, limit // 10_000 + 1), max_pixels=10 * limit)


def test_decoding_on_many_threads_leaves_the_process_warning_filters_as_they_were():
    # Before Python 3.14 the filters are the process's: a filter set around each decode, on the decode threads,
    # was left installed for good when two blocks ended out of order. Decoding sets none (resnet_hub.quiet).
    data = encode(noise(), "JPEG")
    before = list(warnings.filters)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: load_image(data), range(2000)))
    assert warnings.filters == before


def test_file_over_the_byte_limit_is_refused(tmp_path):
    path = save(noise(), tmp_path / "photo.png")
    with pytest.raises(ImageError, match="MiB limit"):
        load_image(path, max_bytes=1000)


@pytest.mark.parametrize("value", [42, {"image": "cat.png"}, None])
def test_unsupported_input_type_is_named(value):
    with pytest.raises(ImageError, match=f"object of type {type(value).__name__}; pass encoded bytes, a file path"):
        load_image(value)


def test_missing_path_is_refused_with_its_name(tmp_path):
    with pytest.raises(ImageError, match=r"^cat\.png: no such file"):
        load_image(tmp_path / "cat.png")


def test_folder_instead_of_a_file_is_refused(tmp_path):
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)


def test_url_is_not_fetched():
    with pytest.raises(ImageError, match="URLs are not fetched"):
        load_image("https://example.com/cat.jpg")


@pytest.mark.parametrize("shape", [(8, 8, 5), (2, 8, 8, 3), (8,), (0, 8, 3)])
def test_array_that_is_not_one_image_is_refused(shape):
    with pytest.raises(ImageError, match=r"array of shape"):
        load_image(np.zeros(shape, dtype=np.uint8))


def test_channels_first_array_is_refused_with_the_fix():
    with pytest.raises(ImageError, match=r"channels-first.*transpose\(1, 2, 0\)"):
        load_image(np.zeros((3, 32, 32), dtype=np.float32))


def test_array_of_unsupported_dtype_is_refused_with_the_fix():
    with pytest.raises(ImageError, match="int64 arrays are not read; pass uint8"):
        load_image(np.zeros((4, 4), dtype=np.int64))


def test_float_array_with_nan_is_refused():
    with pytest.raises(ImageError, match="NaN or Inf"):
        load_image(np.full((4, 4), np.nan, dtype=np.float32))


def test_name_labels_the_error():
    with pytest.raises(ImageError, match=r"^holiday\.jpg: "):
        load_image(b"", name="holiday.jpg")


# --- batches ------------------------------------------------------------------------------


def test_decode_batch_decodes_every_image_to_rgb(tmp_path):
    images = [save(noise(), tmp_path / "a.png"), encode(noise(seed=1), "JPEG"), np.zeros((5, 7), dtype=np.uint8)]
    out = decode_batch(images)
    assert [(img.mode, img.size) for img in out] == [("RGB", (96, 64)), ("RGB", (96, 64)), ("RGB", (7, 5))]


def test_decode_batch_names_the_image_that_failed(tmp_path):
    good = save(noise(), tmp_path / "dog.png")
    bad = tmp_path / "cat.png"
    bad.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ImageError, match=r"^image 2 of 3 \(cat\.png\): the PNG file is truncated"):
        decode_batch([good, bad, good])


def test_decode_batch_names_unnamed_input_by_position():
    with pytest.raises(ImageError, match=r"^image 1 of 2: the data is empty"):
        decode_batch([b"", b"x"])


# --- preprocessing ------------------------------------------------------------------------


def test_eval_transform_resizes_by_crop_pct_then_center_crops():
    # A 256 px white square centred on 512 px black: resized to 256 it is 128 px, and the
    # 224 crop keeps all of it. Resizing straight to 224 would leave 112 px.
    img = Image.new("RGB", (512, 512), BLACK)
    img.paste(WHITE, (128, 128, 384, 384))
    out = eval_transform(PLAIN)(img)
    assert out.shape == (3, 224, 224)
    assert int((out[0] > 0.5).sum()) == 128 * 128


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (20, 10), (224, 224)])
def test_eval_transform_gives_float32_of_the_input_size_for_any_shape(size):
    out = eval_transform(Preprocessing(input_size=160, crop_pct=0.95))(Image.new("RGB", size))
    assert out.shape == (3, 160, 160)
    assert out.dtype == torch.float32


def test_eval_transform_normalises_with_the_preprocessing_mean_and_std():
    p = Preprocessing(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    out = eval_transform(p)(Image.new("RGB", (300, 300), (51, 102, 255)))  # 0.2, 0.4, 1.0
    expected = torch.tensor([(0.2 - 0.5) / 0.5, (0.4 - 0.25) / 0.25, (1.0 - 0.0) / 2.0])
    assert torch.allclose(out.mean(dim=(1, 2)), expected, atol=1e-5)
    assert torch.allclose(out.std(dim=(1, 2)), torch.zeros(3), atol=1e-5)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("augment", ["eval", "photo", "digits"])
def test_interpolation_is_passed_to_every_resize(interpolation, augment):
    p = Preprocessing(interpolation=interpolation)
    transform = eval_transform(p) if augment == "eval" else train_transform(p, augment=augment)
    resizers = [t for t in transform.transforms if hasattr(t, "interpolation")]
    assert resizers
    assert {t.interpolation for t in resizers} == {InterpolationMode(interpolation)}


def test_one_channel_preprocessing_converts_to_grayscale_first():
    p = Preprocessing(input_size=32, crop_pct=1.0, mean=(0.0,), std=(1.0,))
    out = eval_transform(p)(Image.new("RGB", (40, 40), RED))
    assert out.shape == (1, 32, 32)
    assert abs(out.mean().item() - 76 / 255) < 0.01  # ITU-R 601 luma of pure red


def test_preprocessing_for_other_channel_counts_is_refused():
    with pytest.raises(ValueError, match="4 channels"):
        eval_transform(Preprocessing(mean=(0.5,) * 4, std=(0.5,) * 4))


@pytest.mark.parametrize("augment", ["photo", "digits", "none"])
def test_train_transform_gives_the_input_size(augment):
    torch.manual_seed(0)
    out = train_transform(Preprocessing(input_size=64, crop_pct=0.875), augment=augment)(noise(120, 90))
    assert out.shape == (3, 64, 64)
    assert out.dtype == torch.float32


def test_photo_augmentation_flips_horizontally():
    assert any(isinstance(t, v2.RandomHorizontalFlip) for t in train_transform(PLAIN, augment="photo").transforms)


def test_digits_augmentation_never_mirrors():
    p = Preprocessing(input_size=32, crop_pct=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    transform = train_transform(p, augment="digits")
    assert not any(isinstance(t, (v2.RandomHorizontalFlip, v2.RandomVerticalFlip)) for t in transform.transforms)
    img = Image.new("RGB", (64, 64), BLACK)
    img.paste(WHITE, (0, 0, 32, 64))  # white left half
    torch.manual_seed(0)
    for _ in range(50):
        out = transform(img)[0]
        assert out[:, :16].mean() - out[:, 16:].mean() > 0.3  # a mirror image would make this negative


def test_no_augmentation_is_the_eval_transform():
    img = noise(120, 90)
    assert torch.equal(train_transform(PLAIN, augment="none")(img), eval_transform(PLAIN)(img))


def test_unknown_augmentation_is_refused():
    with pytest.raises(ValueError, match="augment must be one of"):
        train_transform(PLAIN, augment="mnist")


def test_real_photos_become_a_model_batch():
    skimage_data = pytest.importorskip("skimage.data")
    images = [load_image(skimage_data.chelsea()), load_image(skimage_data.astronaut())]
    batch = to_tensor_batch(images, Preprocessing())
    assert batch.shape == (2, 3, 224, 224)
    assert batch.dtype == torch.float32
    assert torch.isfinite(batch).all()


def test_to_tensor_batch_refuses_undecoded_input():
    with pytest.raises(TypeError, match="load_image"):
        to_tensor_batch([b"\x89PNG"], Preprocessing())


def test_denormalize_inverts_the_normalisation():
    p = Preprocessing(input_size=32, crop_pct=1.0)
    batch = to_tensor_batch([Image.new("RGB", (32, 32), (51, 102, 255))], p)
    expected = torch.tensor([0.2, 0.4, 1.0]).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    assert torch.allclose(denormalize(batch, p), expected, atol=1e-5)


def test_a_decompression_bomb_is_refused_with_one_limit_stated():
    """Pillow's own sentence names its own, larger limit; the message states ours alone."""
    with pytest.raises(ImageError) as refused:
        load_image(png_declaring(100_000, 100_000), name="bomb.png")
    message = str(refused.value)
    assert message == ("bomb.png: 10,000,000,000 pixels is over the limit of 40,000,000 "
                       "(refused as a possible decompression bomb); downscale it first")
    assert len(re.findall(r"\d[\d,]{6,}", message)) == 2  # the image's pixels and the one limit
