"""Files written whole or not at all: to a temporary name in the same folder, then renamed over the target.

A reader (this process, another one, the next run) sees the old file or the new one, never half of one: a rename
within one filesystem is atomic, and the temporary name is unique, so concurrent writers never share it.

>>> from resnet_hub import atomic
>>> atomic.write_text("choice.json", "{}")                                     # doctest: +SKIP
>>> with atomic.atomic_path("heatmap.png", keep_suffix=True) as tmp:     # doctest: +SKIP
...     image.save(tmp)                                  # Pillow picks PNG from the suffix
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "sync", "write_bytes", "write_text"]


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an exception, rename it onto ``path``.

    The temporary path does not exist yet: write a file there, or make a folder. Its name is
    ``.NAME.<uuid>.tmp`` (with ``keep_suffix``, ``.NAME.<uuid>.tmp.SUFFIX``, for writers that choose the format
    by the suffix). On an exception, or when the rename fails, it is removed (file or folder) and the exception
    goes on; ``path`` is untouched. A folder is renamed like a file, so it replaces an empty folder but not a
    full one (``OSError``). ``path``'s folder must exist.

    ``fsync`` flushes the new file (or every file in the new folder) to disk before the rename and the folder
    after it: without it, a power cut shortly after can leave an empty file under the final name.
    """
    path = Path(path)
    suffix = path.suffix if keep_suffix else ""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp{suffix}")
    try:
        yield tmp
        if fsync:
            sync(tmp)
        os.replace(tmp, path)
        if fsync:
            sync(path.parent, recursive=False)
    finally:
        _remove(tmp)


def write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, *, fsync: bool = False, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def sync(path: str | os.PathLike, *, recursive: bool = True) -> None:
    """Flush ``path`` to disk: a file, or a folder's entries (and, when ``recursive``, every file and folder in it)."""
    path = Path(path)
    if path.is_dir() and recursive:
        for child in path.rglob("*"):
            if child.is_file() or child.is_dir():
                _fsync(child)
    _fsync(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
