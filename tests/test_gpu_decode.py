"""Decoding JPEG batches on the device: the same pixels as the CPU path, and the same rules for untrusted images.

The code is the same on every device; on the CPU, torchvision's libjpeg decoder stands in for nvJPEG.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import skimage.data
import torch
import torchvision.io
from PIL import Image

import resnet_hub
from resnet_hub.errors import ImageError
from resnet_hub.gpu_decode import classify_on_device, decode_to_device
from resnet_hub.images import load_image, to_tensor_batch
from resnet_hub.metadata import Preprocessing
from resnet_hub.predict import Predictor

from .conftest import needs_gpu

P = Preprocessing()  # 224 px, resize 256, bilinear, ImageNet mean and std


def jpeg(pixels: np.ndarray, quality: int = 90, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality, **save)
    return buffer.getvalue()


def photos() -> list[bytes]:
    """Real photos (scikit-image's) as JPEGs: ImageNet-sized, portrait, and one twice as large."""
    big = np.asarray(Image.fromarray(skimage.data.chelsea()).resize((900, 600)))
    return [jpeg(skimage.data.astronaut()), jpeg(skimage.data.coffee()[:, :300]), jpeg(big)]


def cpu_path(images: list[bytes], p: Preprocessing = P) -> torch.Tensor:
    return to_tensor_batch([load_image(i) for i in images], p)


def with_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` with the dimensions in its frame header (SOF0) changed: what a decompression bomb claims."""
    at = data.index(b"\xff\xc0")
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


@pytest.fixture
def decoder_calls(monkeypatch) -> list[int]:
    """How many images each call of torchvision's decode_jpeg was handed."""
    calls, real = [], torchvision.io.decode_jpeg

    def counting(data, *args, **kwargs):
        calls.append(len(data) if isinstance(data, list) else 1)
        return real(data, *args, **kwargs)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", counting)
    return calls


def test_a_batch_gives_the_cpu_paths_pixels(decoder_calls):
    images = photos()
    batch = decode_to_device(images, P, "cpu")
    assert batch.rows == [0, 1, 2] and batch.errors == {} and batch.on_cpu == []
    assert batch.pixels.shape == (3, 3, 224, 224) and batch.pixels.dtype == torch.float32
    assert decoder_calls == [3]  # one batched call to the device's decoder
    assert (batch.pixels - cpu_path(images)).abs().mean() < 0.01  # ~1e-5 here: rounding, one 8-bit level at most


def test_every_phase_is_timed():
    batch = decode_to_device(photos(), P, "cpu")
    assert set(batch.ms) == {"read", "header", "decode", "cpu fallback", "resize"}
    assert batch.ms["decode"] > 0 and batch.ms["resize"] > 0


@pytest.mark.parametrize("p", [Preprocessing(input_size=64, crop_pct=1.0, interpolation="bicubic"),
                               Preprocessing(input_size=32, crop_pct=0.8, mean=(0.5,), std=(0.25,))],
                         ids=["bicubic", "grayscale"])
def test_the_models_own_preprocessing_is_applied(p):
    images = photos()
    batch = decode_to_device(images, p, "cpu")
    assert batch.pixels.shape == (3, len(p.mean), p.input_size, p.input_size)
    assert (batch.pixels - cpu_path(images, p)).abs().mean() < 0.02


def test_files_are_read_from_paths_too(tmp_path):
    path = tmp_path / "cat.jpg"
    path.write_bytes(photos()[0])
    batch = decode_to_device([path, str(path)], P, "cpu")
    assert batch.rows == [0, 1] and batch.errors == {}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_applies_it(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = jpeg(skimage.data.astronaut()[:, :400], exif=exif.tobytes())  # not square: a wrong turn shows
    batch = decode_to_device([data], P, "cpu")
    assert batch.on_cpu == []
    assert (batch.pixels - cpu_path([data])).abs().mean() < 0.01


def test_the_pixel_limit_is_read_from_the_header_and_the_image_is_never_decoded(decoder_calls):
    good = photos()[0]
    bomb = with_size(jpeg(np.zeros((16, 16, 3), np.uint8)), 8000, 8000)  # 64 million pixels, claimed
    batch = decode_to_device([good, bomb], P, "cpu")
    assert batch.rows == [0]
    assert "image 2 of 2: 8000x8000 = 64,000,000 pixels is over the limit of 40,000,000" in str(batch.errors[1])
    assert decoder_calls == [1]  # the good image alone reached the decoder


def test_a_caller_may_lower_the_pixel_and_byte_limits():
    small, large = jpeg(np.zeros((10, 10, 3), np.uint8)), photos()[0]
    batch = decode_to_device([small, large], P, "cpu", max_pixels=500)
    assert batch.rows == [0] and "over the limit of 500" in str(batch.errors[1])
    batch = decode_to_device([small, large], P, "cpu", max_bytes=10_000)
    assert batch.rows == [0] and "over the 0 MiB limit" in str(batch.errors[1])


@pytest.mark.parametrize("damage", ["truncated", "garbage after the header", "garbage header", "empty"])
def test_a_corrupt_file_is_that_images_error_not_the_batchs(damage, decoder_calls):
    good = photos()
    data = good[0]
    bad = {"truncated": data[: len(data) // 2], "garbage after the header": data[:600] + bytes(range(256)) * 20,
           "garbage header": b"\xff\xd8\xff" + bytes(200), "empty": b""}[damage]
    batch = decode_to_device([good[0], bad, good[1]], P, "cpu")
    assert batch.rows == [0, 2] and list(batch.errors) == [1]
    assert isinstance(batch.errors[1], ImageError) and str(batch.errors[1]).startswith("image 2 of 3")
    assert (batch.pixels - cpu_path([good[0], good[1]])).abs().mean() < 0.01
    # the CPU path words it the same way: load_image's message, not the decoder's
    with pytest.raises(ImageError) as cpu_error:
        load_image(bad, name="image 2 of 3")
    assert str(batch.errors[1]) == str(cpu_error.value)


def test_a_jpeg_cut_short_never_reaches_the_devices_decoder(decoder_calls):
    """A hardware decoder may fill in a cut-short file without a word: Pillow, which says so, sees it instead."""
    good = photos()
    batch = decode_to_device([good[0], good[1][:-2000], good[2]], P, "cpu")
    assert decoder_calls == [2] and batch.rows == [0, 2]
    assert "truncated" in str(batch.errors[1])


def test_other_formats_and_cmyk_jpegs_take_the_cpu_path(decoder_calls):
    png = io.BytesIO()
    Image.fromarray(skimage.data.coffee()).save(png, "PNG")
    cmyk = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).convert("CMYK").save(cmyk, "JPEG")
    pictures = [photos()[0], png.getvalue(), cmyk.getvalue(), Image.fromarray(skimage.data.rocket())]
    batch = decode_to_device(pictures, P, "cpu")
    assert batch.rows == [0, 1, 2, 3] and batch.on_cpu == [1, 2, 3]
    assert decoder_calls == [1]
    expected = to_tensor_batch([load_image(x) for x in pictures], P)
    assert (batch.pixels - expected).abs().mean() < 0.01


def test_an_empty_batch_is_an_empty_tensor():
    batch = decode_to_device([], P, "cpu")
    assert batch.pixels.shape == (0, 3, 224, 224) and batch.rows == []


def test_classify_on_device_answers_each_image_in_its_place():
    torch.manual_seed(0)
    predictor = Predictor(resnet_hub.create("resnet18", num_classes=10), "cpu", "fp32", cache_dir=None)
    images = photos()
    answers, batch = classify_on_device(predictor, [images[0], b"not an image", images[2]], top_k=3)
    assert isinstance(answers[1], ImageError) and "image 2 of 3" in str(answers[1])
    expected = predictor.classify([images[0], images[2]], top_k=3)
    assert [a.class_ids for a in (answers[0], answers[2])] == [e.class_ids for e in expected]
    assert batch.ms["network"] > 0


# --- on a GPU: nvJPEG -----------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_gpu
def test_on_cuda_nvjpeg_gives_the_cpu_paths_pixels_and_keeps_a_corrupt_file_to_itself():
    images = photos()
    batch = decode_to_device([images[0], images[1][: len(images[1]) // 2], images[2]], P, "cuda")
    assert batch.pixels.is_cuda and batch.rows == [0, 2] and list(batch.errors) == [1]
    assert (batch.pixels.cpu() - cpu_path([images[0], images[2]])).abs().mean() < 0.02  # nvJPEG's IDCT differs a little


@pytest.mark.gpu
@needs_gpu
def test_on_cuda_the_pixel_limit_is_kept_before_nvjpeg_sees_the_file(decoder_calls):
    bomb = with_size(jpeg(np.zeros((16, 16, 3), np.uint8)), 8000, 8000)
    batch = decode_to_device([photos()[0], bomb], P, "cuda")
    assert batch.rows == [0] and "over the limit" in str(batch.errors[1]) and decoder_calls == [1]
