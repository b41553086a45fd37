"""Datasets: zips of class folders read safely, the bundled MNIST sample, splits, tensors on the device."""

from __future__ import annotations

import io
import os
import socket
import urllib.error
import urllib.request
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_hub import DataError
from resnet_hub import data as data_module
from resnet_hub.data import (
    ImageDataset,
    ZipLimits,
    load_dataset,
    mnist_sample,
    read_zip,
    stratified_split,
    tensor_size_bytes,
    to_tensors,
    torchvision_dataset,
)
from resnet_hub.images import eval_transform
from resnet_hub.metadata import Preprocessing

from .conftest import needs_gpu

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 30), (30, 30, 220)
SMALL = Preprocessing(input_size=16, crop_pct=1.0)


def encode(color=RED, size=(16, 16), fmt="PNG", mode="RGB") -> bytes:
    buffer = io.BytesIO()
    fill = color if mode == "RGB" else color[0]
    Image.new(mode, size, fill).save(buffer, format=fmt)
    return buffer.getvalue()


def write_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, content in members.items():
            z.writestr(name, content)
    return path


def pets(prefix: str = "") -> dict[str, bytes]:
    """Three classes, unequal in size, one color each; PNG and JPEG mixed."""
    return {
        f"{prefix}cats/1.png": encode(RED),
        f"{prefix}cats/2.jpg": encode(RED, fmt="JPEG"),
        f"{prefix}cats/3.png": encode(RED, size=(20, 12)),
        f"{prefix}dogs/1.png": encode(GREEN),
        f"{prefix}dogs/2.jpg": encode(GREEN, fmt="JPEG"),
        f"{prefix}fox/1.png": encode(BLUE),
        f"{prefix}fox/2.png": encode(BLUE),
    }


def mean_color(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0)


# --- a good zip --------------------------------------------------------------------------


def test_zip_of_class_folders_gives_sorted_classes_and_matching_targets(tmp_path):
    dataset = read_zip(write_zip(tmp_path / "pets.zip", pets()))
    assert dataset.classes == ["cats", "dogs", "fox"]
    assert dataset.counts() == {"cats": 3, "dogs": 2, "fox": 2}
    assert (dataset.name, dataset.kind, dataset.skipped, len(dataset)) == ("pets.zip", "photo", {}, 7)
    colors = [RED, GREEN, BLUE]
    for image, target in zip(dataset.images, dataset.targets):
        assert image.mode == "RGB"
        np.testing.assert_allclose(mean_color(image), colors[target], atol=6)  # JPEG is lossy


def test_reading_zips_on_many_threads_leaves_the_process_warning_filters_as_they_were(tmp_path):
    archive = write_zip(tmp_path / "pets.zip", pets())
    before = list(warnings.filters)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: read_zip(archive), range(200)))
    assert warnings.filters == before


def test_single_top_level_folder_wrapping_the_class_folders_is_peeled_off(tmp_path):
    dataset = read_zip(write_zip(tmp_path / "wrapped.zip", pets("pets/")))
    assert dataset.classes == ["cats", "dogs", "fox"]
    assert dataset.counts() == {"cats": 3, "dogs": 2, "fox": 2}


def test_zip_bytes_read_like_the_file_and_take_the_given_name(tmp_path):
    path = write_zip(tmp_path / "pets.zip", pets())
    dataset = read_zip(path.read_bytes(), name="upload.zip")
    assert dataset.name == "upload.zip"
    assert dataset.counts() == read_zip(path).counts()


def test_files_in_subfolders_of_a_class_folder_belong_to_that_class(tmp_path):
    members = {**pets(), "cats/indoor/4.png": encode(RED)}
    assert read_zip(write_zip(tmp_path / "nested.zip", members)).counts()["cats"] == 4


def test_image_recognised_by_content_not_by_extension(tmp_path):
    members = {**pets(), "dogs/really-a-png.jpg": encode(GREEN, fmt="PNG"), "dogs/no-extension": encode(GREEN)}
    dataset = read_zip(write_zip(tmp_path / "pets.zip", members))
    assert dataset.counts()["dogs"] == 4
    assert dataset.skipped == {}


def test_small_grayscale_images_make_a_digits_dataset(tmp_path):
    members = {f"{digit}/{i}.png": encode((40 * i,) * 3, size=(28, 28), mode="L") for digit in "01" for i in range(3)}
    assert read_zip(write_zip(tmp_path / "digits.zip", members)).kind == "digits"


def test_one_color_image_among_grayscale_digits_makes_it_a_photo_dataset(tmp_path):
    members = {f"{digit}/{i}.png": encode((40 * i,) * 3, size=(28, 28), mode="L") for digit in "01" for i in range(3)}
    members["1/color.png"] = encode(RED, size=(28, 28))
    assert read_zip(write_zip(tmp_path / "mixed.zip", members)).kind == "photo"


def test_large_images_are_downscaled_on_read_to_bound_memory(tmp_path):
    members = {**pets(), "cats/big.png": encode(RED, size=(900, 600))}
    dataset = read_zip(write_zip(tmp_path / "pets.zip", members), limits=ZipLimits(max_side=300))
    assert max(max(image.size) for image in dataset.images) == 300
    assert (300, 200) in {image.size for image in dataset.images}  # aspect ratio kept


# --- skipped members, reported -----------------------------------------------------------


def test_junk_is_skipped_and_counted(tmp_path):
    members = {
        **pets(),
        "__MACOSX/cats/._1.png": b"\x00\x05\x16\x07 resource fork",
        ".DS_Store": b"\x00\x00\x00\x01Bud1",
        "cats/.DS_Store": b"\x00\x00\x00\x01Bud1",
        "dogs/Thumbs.db": b"\xd0\xcf\x11\xe0",
        "fox/.hidden.png": encode(BLUE),
    }
    dataset = read_zip(write_zip(tmp_path / "pets.zip", members))
    assert sorted(dataset.skipped["junk"]) == sorted(
        ["__MACOSX/cats/._1.png", ".DS_Store", "cats/.DS_Store", "dogs/Thumbs.db", "fox/.hidden.png"]
    )
    assert set(dataset.skipped) == {"junk"}
    assert dataset.counts() == {"cats": 3, "dogs": 2, "fox": 2}


def test_folder_entries_are_structure_not_skipped_files(tmp_path):
    path = tmp_path / "pets.zip"
    with zipfile.ZipFile(path, "w") as z:
        for folder in ("cats/", "dogs/", "fox/"):
            z.mkdir(folder)
        for name, content in pets().items():
            z.writestr(name, content)
    assert read_zip(path).skipped == {}


def test_text_file_in_a_class_folder_is_skipped_as_not_an_image(tmp_path):
    members = {**pets(), "cats/notes.txt": b"these are my cats\n", "dogs/fake.png": b"not really a png\n"}
    dataset = read_zip(write_zip(tmp_path / "pets.zip", members))
    assert sorted(dataset.skipped["not an image"]) == ["cats/notes.txt", "dogs/fake.png"]
    assert dataset.counts() == {"cats": 3, "dogs": 2, "fox": 2}


def noise_png(size=(64, 64)) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)  # incompressible
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_truncated_image_is_skipped_and_reported_by_name_with_the_reason(tmp_path):
    whole = noise_png()
    dataset = read_zip(write_zip(tmp_path / "pets.zip", {**pets(), "cats/bad.png": whole[: len(whole) // 2]}))
    [entry] = dataset.skipped["unreadable"]
    assert entry.startswith("cats/bad.png: ") and "truncated" in entry.lower()
    assert dataset.counts()["cats"] == 3


def test_files_at_the_top_level_are_skipped_as_not_in_a_class_folder(tmp_path):
    members = {**pets(), "notes.txt": b"read me", "stray.png": encode(RED)}
    dataset = read_zip(write_zip(tmp_path / "pets.zip", members))
    assert sorted(dataset.skipped["not in a class folder"]) == ["notes.txt", "stray.png"]


def test_files_beside_the_wrapping_folders_class_folders_are_not_in_a_class_folder(tmp_path):
    members = {**pets("pets/"), "pets/README.md": b"# pets"}
    dataset = read_zip(write_zip(tmp_path / "wrapped.zip", members))
    assert dataset.skipped == {"not in a class folder": ["pets/README.md"]}
    assert dataset.classes == ["cats", "dogs", "fox"]


def test_summary_counts_images_classes_and_names_the_unreadable(tmp_path):
    members = {
        "cats/1.png": encode(RED),
        "cats/2.png": encode(RED),
        "cats/3.png": encode(RED),
        "cats/bad.png": noise_png()[:5000],
        "dogs/1.png": encode(GREEN),
        "dogs/2.png": encode(GREEN),
        "__MACOSX/._x.png": b"\x00",
        ".DS_Store": b"\x00",
    }
    dataset = read_zip(write_zip(tmp_path / "pets.zip", members))
    assert dataset.summary() == (
        "pets.zip: 5 images in 2 classes (2-3 per class); skipped 3 (2 junk, 1 unreadable: cats/bad.png)"
    )


def test_summary_of_balanced_dataset_without_skips():
    dataset = ImageDataset([Image.new("RGB", (4, 4))] * 4, [0, 0, 1, 1], ["a", "b"], "tiny")
    assert dataset.summary() == "tiny: 4 images in 2 classes (2 per class)"


# --- unsafe or unusable zips are refused -------------------------------------------------


def refuse(path: Path, *, limits: ZipLimits = ZipLimits(), match: str) -> DataError:
    with pytest.raises(DataError, match=match) as caught:
        read_zip(path, limits=limits)
    return caught.value


@pytest.mark.parametrize(
    "member, match",
    [
        ("../evil.png", r"'\.\./evil\.png' points outside the archive"),
        ("cats/../../evil.png", r"points outside the archive"),
        ("/etc/evil.png", r"'/etc/evil\.png' has an absolute"),
        ("C:/Windows/evil.png", r"absolute or Windows-style path"),
        ("cats\\..\\..\\evil.png", r"absolute or Windows-style path"),
    ],
)
def test_member_escaping_the_archive_is_refused(tmp_path, member, match):
    error = refuse(write_zip(tmp_path / "evil.zip", {**pets(), member: encode()}), match=match)
    assert "re-create the zip" in str(error)


def test_symlink_member_is_refused(tmp_path):
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, content in pets().items():
            z.writestr(name, content)
        link = zipfile.ZipInfo("cats/link.png")
        link.external_attr = 0o120777 << 16  # S_IFLNK | rwxrwxrwx, as `zip --symlinks` stores it
        z.writestr(link, "../../../etc/passwd")
    refuse(path, match=r"'cats/link\.png' is a symbolic link")


def test_encrypted_member_is_refused(tmp_path):
    path = tmp_path / "secret.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, content in pets().items():
            z.writestr(name, content)
        secret = zipfile.ZipInfo("cats/secret.png")
        z.writestr(secret, encode())
        secret.flag_bits |= 0x1  # zipfile cannot encrypt; flag it in the central directory written on close
    with zipfile.ZipFile(path) as z:
        assert z.getinfo("cats/secret.png").flag_bits & 0x1  # still listed, flagged encrypted
    refuse(path, match=r"'cats/secret\.png' is encrypted.*without a password")


def test_more_members_than_the_cap_is_refused(tmp_path):
    error = refuse(write_zip(tmp_path / "many.zip", pets()), limits=ZipLimits(max_members=6), match="7 entries")
    assert "the limit is 6" in str(error)


def test_total_uncompressed_size_over_the_cap_is_refused(tmp_path):
    total = sum(len(content) for content in pets().values())
    path = write_zip(tmp_path / "big.zip", pets(), compression=zipfile.ZIP_STORED)
    refuse(path, limits=ZipLimits(max_total_bytes=total - 1), match="expands to .* the limit is")
    assert len(read_zip(path, limits=ZipLimits(max_total_bytes=total))) == 7


def test_member_over_the_size_cap_is_refused(tmp_path):
    members = {**pets(), "cats/huge.png": encode(RED, size=(200, 200), fmt="BMP")}  # 120 KB uncompressed
    refuse(write_zip(tmp_path / "big.zip", members), limits=ZipLimits(max_member_bytes=100_000), match="huge.png")


def test_member_with_a_bomb_compression_ratio_is_refused(tmp_path):
    members = {**pets(), "cats/zeros.png": bytes(5_000_000)}  # deflates about 1000x
    refuse(write_zip(tmp_path / "bomb.zip", members), match=r"'cats/zeros\.png' expands .*zip bomb")


def test_many_small_members_with_a_bomb_ratio_in_total_are_refused(tmp_path):
    # Each is under the 1 MiB floor where ratios are checked per member; together they are not.
    members = {**pets(), **{f"cats/zeros{i}.png": bytes(200_000) for i in range(10)}}
    refuse(write_zip(tmp_path / "bombs.zip", members), match=r"expands .*x in total.*zip bomb")


def test_tiny_member_that_compresses_well_is_not_a_bomb(tmp_path):
    members = {**pets(), "cats/flat.bmp": encode(RED, size=(64, 64), fmt="BMP")}  # 12 KB -> ~100 B
    assert read_zip(write_zip(tmp_path / "flat.zip", members)).counts()["cats"] == 4


def test_member_whose_header_understates_its_size_is_refused_after_a_bounded_read(tmp_path):
    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in pets().items():
            z.writestr(name, content)
        liar = zipfile.ZipInfo("cats/liar.png")
        liar.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(liar, bytes(5_000_000))
        liar.file_size = 1_000  # the central directory, written on close, declares 1 kB: ratio and size look fine
    with zipfile.ZipFile(path) as z:
        assert z.getinfo("cats/liar.png").file_size == 1_000
    refuse(path, match=r"'cats/liar\.png' cannot be extracted .*headers do not match")


def test_read_that_runs_past_the_member_cap_is_refused_whatever_the_header_says(tmp_path, monkeypatch):
    class Endless(io.RawIOBase):
        """A member stream that yields more than any header promised, and counts what it gave."""

        given = 0

        def readinto(self, buffer):
            buffer[:] = bytes(len(buffer))
            Endless.given += len(buffer)
            return len(buffer)

    path = write_zip(tmp_path / "pets.zip", pets())
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info, mode="r": Endless())
    refuse(path, limits=ZipLimits(max_member_bytes=1_000_000), match="expands past .* more than its header declares")
    assert Endless.given == 1_000_001  # the read stopped one byte past the cap


@pytest.mark.parametrize(
    "content, match",
    [
        (os.urandom(4096), "not a readable zip file"),
        (b"", r"empty \(0 bytes\)"),
        (b"cats,dogs\n1,2\n", "not a readable zip file"),
    ],
    ids=["random-bytes", "zero-bytes", "text-file"],
)
def test_file_that_is_not_a_zip_is_refused(tmp_path, content, match):
    path = tmp_path / "data.zip"
    path.write_bytes(content)
    refuse(path, match=match)


def test_truncated_zip_is_refused(tmp_path):
    whole = write_zip(tmp_path / "whole.zip", pets()).read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole[: len(whole) // 2])
    refuse(cut, match="not a readable zip file")


def test_missing_zip_and_folder_are_refused_with_what_to_pass(tmp_path):
    refuse(tmp_path / "missing.zip", match="does not exist")
    refuse(tmp_path, match="is a folder: zip it first")


def test_one_class_is_too_few(tmp_path):
    members = {"cats/1.png": encode(), "cats/2.png": encode(), "cats/3.png": encode()}
    refuse(write_zip(tmp_path / "cats.zip", members), match=r"1 class folder \(found 'cats'\); at least 2")


def test_zip_of_loose_images_names_the_expected_layout(tmp_path):
    members = {"1.png": encode(), "2.png": encode(), "3.png": encode()}
    error = refuse(write_zip(tmp_path / "loose.zip", members), match="0 class folders")
    assert "cats/1.jpg" in str(error) and "3 not in a class folder" in str(error)


def test_class_with_too_few_images_is_named(tmp_path):
    members = {**pets(), "wolf/1.png": encode(), "owl/notes.txt": b"no images here"}
    path = write_zip(tmp_path / "pets.zip", members)
    error = refuse(path, match="class 'owl' has 0 images; class 'wolf' has 1 image")
    assert "each class needs at least 2" in str(error)


def test_min_per_class_comes_from_the_limits(tmp_path):
    refuse(write_zip(tmp_path / "pets.zip", pets()), limits=ZipLimits(min_per_class=3), match="class 'dogs' has 2")


def test_limits_must_be_sensible():
    with pytest.raises(ValueError, match="max_ratio"):
        ZipLimits(max_ratio=0.5)
    with pytest.raises(ValueError, match="min_classes"):
        ZipLimits(min_classes=0)


# --- the bundled MNIST sample ------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return mnist_sample()


def test_mnist_sample_is_5000_digits_500_per_class(digits):
    assert (len(digits), digits.name, digits.kind) == (5000, "mnist-sample", "digits")
    assert digits.classes == [str(d) for d in range(10)]
    assert digits.counts() == {str(d): 500 for d in range(10)}
    assert {(image.size, image.mode) for image in digits.images} == {((28, 28), "RGB")}


def test_mnist_digits_are_white_strokes_on_black(digits):
    pixels = np.stack([np.asarray(image) for image in digits.images[::50]])  # (100, 28, 28, 3)
    assert pixels.dtype == np.uint8
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()  # gray
    assert pixels[:, :2].max() == 0 and pixels[:, :, :2].max() == 0  # border: background is 0
    assert (pixels.reshape(100, -1).max(axis=1) >= 250).all()  # every digit has bright strokes
    assert 0.1 < (pixels > 0).mean() < 0.3  # ink covers a fifth of the image, as in MNIST


def test_mnist_sample_limit_per_class():
    small = mnist_sample(limit_per_class=3)
    assert small.counts() == {str(d): 3 for d in range(10)}
    assert small.targets[:3] == [0, 0, 0]


def test_mnist_sample_loads_without_the_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("mnist_sample tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    data_module._mnist_arrays.cache_clear()
    assert len(mnist_sample(limit_per_class=1)) == 10


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_torchvision_dataset_without_the_network_points_to_the_bundled_sample(tmp_path, monkeypatch, name):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=f"{name} is not in .* needs the network to download.*mnist-sample offline"):
        torchvision_dataset(name, root=tmp_path)


def test_unknown_torchvision_dataset_is_refused(tmp_path):
    with pytest.raises(DataError, match="choose one of mnist, cifar10"):
        torchvision_dataset("imagenet", root=tmp_path)


# --- splitting ---------------------------------------------------------------------------


def test_stratified_split_keeps_each_class_in_proportion(digits):
    train, val = stratified_split(digits, val_fraction=0.2, seed=0)
    targets = np.asarray(digits.targets)
    assert np.bincount(targets[val]).tolist() == [100] * 10
    assert np.bincount(targets[train]).tolist() == [400] * 10


def test_stratified_split_is_disjoint_and_covers_the_dataset(digits):
    train, val = stratified_split(digits, val_fraction=0.25, seed=3)
    assert not set(train) & set(val)
    assert sorted(train + val) == list(range(len(digits)))


def test_stratified_split_is_deterministic_for_a_seed(digits):
    assert stratified_split(digits, seed=7) == stratified_split(digits, seed=7)
    assert stratified_split(digits, seed=7) != stratified_split(digits, seed=8)


def test_stratified_split_gives_every_class_of_two_one_validation_image():
    tiny = ImageDataset([Image.new("RGB", (4, 4))] * 5, [0, 0, 1, 1, 1], ["a", "b"], "tiny")
    train, val = stratified_split(tiny, val_fraction=0.1)
    assert sorted(tiny.targets[i] for i in val) == [0, 1]
    assert sorted(tiny.targets[i] for i in train) == [0, 1, 1]


def test_stratified_split_refuses_fractions_outside_0_1(digits):
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(digits, val_fraction=1.0)


# --- tensors on the device ---------------------------------------------------------------


def test_to_tensors_stacks_the_transformed_images_with_their_targets(digits):
    transform = eval_transform(SMALL)
    indices = [0, 600, 4999]
    x, y = to_tensors(digits, indices, transform, "cpu", chunk=2)  # chunks of 2 and 1
    assert (x.shape, x.dtype, y.dtype) == ((3, 3, 16, 16), torch.float32, torch.int64)
    assert y.tolist() == [0, 1, 9]
    for row, i in zip(x, indices):
        torch.testing.assert_close(row, transform(digits.images[i]))


def test_to_tensors_refuses_transforms_that_give_different_sizes(digits):
    sizes = iter([(28, 28), (14, 14)])

    def uneven(image):
        return torch.zeros(3, *next(sizes))

    with pytest.raises(ValueError, match="eval_transform"):
        to_tensors(digits, [0, 1], uneven, "cpu")


def test_tensor_size_bytes_counts_float32_pixels_and_int64_targets(digits):
    x, y = to_tensors(digits, range(10), eval_transform(SMALL), "cpu")
    assert tensor_size_bytes(10, 3, 16, 16) == x.numel() * x.element_size() + y.numel() * y.element_size()


@needs_gpu
@pytest.mark.gpu
def test_to_tensors_puts_both_tensors_on_the_gpu(digits):
    x, y = to_tensors(digits, range(64), eval_transform(SMALL), "cuda")
    assert x.is_cuda and y.is_cuda
    torch.testing.assert_close(x.cpu(), to_tensors(digits, range(64), eval_transform(SMALL), "cpu")[0])


# --- one entry point ---------------------------------------------------------------------


def test_load_dataset_reads_the_bundled_sample_and_zips(tmp_path):
    assert load_dataset("mnist-sample", limit_per_class=2).counts() == {str(d): 2 for d in range(10)}
    assert load_dataset(str(write_zip(tmp_path / "pets.ZIP", pets()))).classes == ["cats", "dogs", "fox"]


def test_load_dataset_refuses_unknown_specs_listing_what_it_accepts():
    accepted = r"unknown dataset 'imagenet': give 'mnist-sample'.*'mnist' or 'cifar10'.*\.zip"
    with pytest.raises(DataError, match=accepted):
        load_dataset("imagenet")


def test_load_dataset_refuses_a_missing_zip(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nowhere.zip")
