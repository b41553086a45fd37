"""Many images, read as a stream: files, folders and zips (flat, or one folder per class) in, chunks of decoded
images out, a bounded number at a time.

A zip is checked as :func:`resnet_hub.data.read_zip` checks it (the same functions: member names, links,
encryption, sizes and ratios from the central directory before anything is read; every read bounded). Unlike
``read_zip``, nothing is kept: each chunk's images are decoded in parallel while the caller works on the chunk
before, so 10,000 images never means 10,000 decoded images in memory. A bad image is an item with its error,
never a failed stream; files that are not images at all (a README in the folder) are skipped and counted.

>>> for chunk in stream_images(["photos.zip"]):          # doctest: +SKIP
...     for item in chunk:
...         print(item.name, item.folder, item.error or item.image.size)
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import (
    JUNK_FILES,
    JUNK_FOLDERS,
    ZipLimits,
    check_central_directory,
    peek_image,
    read_member,
)
from .errors import DataError, ImageError
from .images import load_image

CHUNK = 32  # images decoded together: the Predictor's batch (predict.MAX_BATCH)
NOT_AN_IMAGE = "not an image"


@dataclass
class StreamItem:
    """One image of the stream: what it is called, its class folder (None: none), and the image or why not."""

    name: str
    folder: str | None
    image: Any = None  # what ``prepare`` made of it: a decoded PIL image by default
    error: str | None = None
    digest: str = ""  # sha256 of the file's bytes (16 hex digits): the same file under any name


@dataclass
class StreamPlan:
    """What a stream will read, known before any image is decoded: the count (for progress), the class folders."""

    entries: list[_Entry]
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> names (junk, not an image)
    name: str = ""  # the sources, for people: "test.zip", "a.jpg, b.jpg"

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def folders(self) -> list[str]:
        """The class folders the images sit in, sorted (empty for loose files and flat zips)."""
        return sorted({e.folder for e in self.entries if e.folder is not None})


@dataclass
class _Entry:
    name: str
    folder: str | None
    read: Callable[[], bytes]  # the bytes, read on demand; raises ImageError or DataError


def content_digest(data: bytes) -> str:
    """A file's identity for "was this image in the training data": sha256 of its bytes, 16 hex digits."""
    return hashlib.sha256(data).hexdigest()[:16]


def plan_stream(sources: Sequence[Any], *, limits: ZipLimits = ZipLimits()) -> StreamPlan:
    """List every image the ``sources`` hold (paths of files, folders or zips; ``(name, bytes)`` of an upload),
    checking each zip's central directory; raises :class:`DataError` for a missing path, an unsafe zip, or
    nothing to read."""
    if isinstance(sources, (str, os.PathLike, tuple)):
        sources = [sources]
    if not sources:
        raise DataError("no images given: pass image files, folders or zips")
    entries: list[_Entry] = []
    skipped: dict[str, list[str]] = {}
    for source in sources:
        if isinstance(source, tuple):  # (name, bytes) of an upload in memory, or (name, path): a file named for people
            name, data = source
            if not isinstance(data, (bytes, bytearray)) and not Path(data).is_file():
                raise DataError(f"{name} does not exist any more: upload it again")
            if str(name).lower().endswith(".zip"):
                entries += _zip_entries(data, str(name), limits, skipped)
            elif isinstance(data, (bytes, bytearray)):
                entries.append(_Entry(str(name), None, lambda d=bytes(data): d))
            else:
                entries.append(_Entry(str(name), None, lambda p=Path(data), n=str(name): _read_file(p, n)))
            continue
        path = Path(source).expanduser()
        if path.is_dir():
            entries += _folder_entries(path, skipped)
        elif path.is_file() and path.suffix.lower() == ".zip":
            entries += _zip_entries(path, str(source), limits, skipped)
        elif path.is_file():
            entries.append(_Entry(str(source), None, lambda p=path, s=str(source): _read_file(p, s)))
        else:
            raise DataError(f"{source} does not exist: pass image files, folders of images or .zip files")
    if not entries:
        what = ", ".join(str(s[0] if isinstance(s, tuple) else s) for s in sources)
        found = f" ({_skipped_text(skipped)})" if skipped else ""
        raise DataError(f"{what} holds no images{found}: add JPEG, PNG, WebP, GIF, BMP or TIFF files")
    name = ", ".join(Path(str(s[0] if isinstance(s, tuple) else s)).name for s in sources)
    return StreamPlan(entries, skipped, name)


def stream_images(
    sources: Sequence[Any] | StreamPlan,
    *,
    prepare: Callable[[bytes, str], Any] | None = None,
    chunk: int = CHUNK,
    workers: int | None = None,
    limits: ZipLimits = ZipLimits(),
    stop: Any = None,
) -> Iterator[list[StreamItem]]:
    """Chunks of :class:`StreamItem`, in the sources' order, each decoded in parallel (``workers`` threads, made
    by the calling thread so they share its priority) while the caller handles the chunk before: at most two
    chunks of decoded images exist at a time. ``prepare(data, name)`` turns a file's bytes into what the caller
    wants (default: :func:`~resnet_hub.images.load_image`); an :class:`ImageError` it raises becomes the item's
    error. ``stop`` (a threading.Event): no further chunk once set.
    """
    plan = sources if isinstance(sources, StreamPlan) else plan_stream(sources, limits=limits)
    prepare = prepare or (lambda data, name: load_image(data, name=name))
    chunk = max(1, int(chunk))
    parts = [plan.entries[i : i + chunk] for i in range(0, len(plan.entries), chunk)]
    pool = ThreadPoolExecutor(max_workers=workers or max(1, os.cpu_count() or 1), thread_name_prefix="resnet-hub-stream")
    try:
        pending: list[Future] | None = None
        for i in range(len(parts) + 1):
            ready = [f.result() for f in pending] if pending is not None else None
            if stop is not None and stop.is_set():
                return
            # The next chunk decodes while the caller works on this one.
            pending = [pool.submit(_one, e, prepare) for e in parts[i]] if i < len(parts) else None
            if ready is not None:
                yield ready
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _one(entry: _Entry, prepare: Callable[[bytes, str], Any]) -> StreamItem:
    item = StreamItem(entry.name, entry.folder)
    try:
        data = entry.read()
        item.digest = content_digest(data)
        item.image = prepare(data, entry.name)
    except _ZipLied:
        raise
    except (ImageError, DataError) as e:
        item.error = str(e).removeprefix(f"{entry.name}: ")  # the row names the file already
    except Exception as e:  # noqa: BLE001 - a malformed file may make a decoder raise anything: its row says so
        item.error = f"{type(e).__name__}: {e}"
    return item


def _read_file(path: Path, label: str, max_bytes: int = ZipLimits().max_member_bytes) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ImageError(f"{label}: cannot read it ({e.strerror or e})") from None
    if len(data) > max_bytes:
        raise ImageError(f"{label}: the file is over the {max_bytes / 2**20:.0f} MiB limit; downscale or recompress it")
    return data


def _is_junk(parts: Sequence[str]) -> bool:
    return any(p in JUNK_FOLDERS or p.startswith(".") for p in parts) or parts[-1].lower() in JUNK_FILES


def _folder_entries(root: Path, skipped: dict[str, list[str]]) -> list[_Entry]:
    """Every file under ``root``, sorted; a file in a sub-folder belongs to the class of its first-level folder.
    Files that are not images are recognised by their first bytes and skipped."""
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        parts = path.relative_to(root).parts
        name = str(root.name + "/" + "/".join(parts))
        if _is_junk(parts):
            skipped.setdefault("junk", []).append(name)
            continue
        with open(path, "rb") as f:
            head = f.read(4096)
        if peek_image(head) is None and not _looks_truncated_image(head):
            skipped.setdefault(NOT_AN_IMAGE, []).append(name)
            continue
        files.append((path, parts, name))
    depth = _class_depth([parts for _, parts, _ in files])
    return [_Entry(name, parts[depth] if len(parts) > depth + 1 else None, lambda p=path, n=name: _read_file(p, n))
            for path, parts, name in files]


def _class_depth(paths: Sequence[Sequence[str]]) -> int:
    """Where the class folders are: one folder wrapping them all ("pets/cats/1.jpg") is peeled off, as read_zip does."""
    top = {parts[0] for parts in paths if len(parts) > 1}
    return 1 if len(top) == 1 and any(len(parts) > 2 for parts in paths) else 0


def _looks_truncated_image(head: bytes) -> bool:
    """A header cut off after 4 KiB still names its format: such files are images (maybe broken), not skipped."""
    return head.startswith((b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")) or (
        head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _zip_entries(source: Any, name: str, limits: ZipLimits, skipped: dict[str, list[str]]) -> list[_Entry]:
    """The zip's image members in name order, after read_zip's own checks of its central directory. Class folders
    as read_zip finds them (one wrapping folder peeled off); a member outside any class folder has none."""
    import io

    label = Path(name).name
    try:
        archive = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as e:
        raise DataError(f"{label} is not a readable zip file ({e}): make it again with your system's 'Compress' or "
                        f"`zip -r`") from None
    members = archive.infolist()
    check_central_directory(members, limits, label)
    files = []
    for info in sorted(members, key=lambda i: i.filename):
        if info.is_dir():
            continue
        parts = [p for p in info.filename.split("/") if p not in ("", ".")]
        if not parts or _is_junk(parts):
            skipped.setdefault("junk", []).append(info.filename)
        else:
            files.append((info, parts))
    depth = _class_depth([parts for _, parts in files])
    budget = _Budget(limits.max_total_bytes, label)

    def reader(info: zipfile.ZipInfo) -> Callable[[], bytes]:
        def read() -> bytes:
            data = read_member(archive, info, limits, label)
            budget.take(len(data))
            return data
        return read

    return [_Entry(info.filename, parts[depth] if len(parts) > depth + 1 else None, reader(info))
            for info, parts in files]


class _ZipLied(DataError):
    """A zip that holds more than its headers declared: the whole stream stops."""


class _Budget:
    """Bytes read from one zip so far: past the limit the archive lied about its sizes, and reading stops."""

    def __init__(self, limit: int, name: str):
        import threading

        self.limit, self.name, self.used, self._lock = limit, name, 0, threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            self.used += n
            if self.used > self.limit:
                raise _ZipLied(f"{self.name} expands past {self.limit / 2**20:,.0f} MiB, more than its headers "
                                f"declare: the archive is corrupt or hostile; re-create it")


def _skipped_text(skipped: dict[str, list[str]]) -> str:
    return "skipped " + ", ".join(f"{len(v)} {reason}" for reason, v in skipped.items())
