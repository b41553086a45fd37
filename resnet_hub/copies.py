"""Copies in a data set: the same pixels, or a near copy (shifted a pixel or two, brightened, re-encoded).

A near copy is judged by the pixels, never by a classifier's embedding, which is built to put every 7 of a digit set
close together. Each image becomes a small grey thumbnail; two images are near copies when the centre of one
correlates with the other, at the best of a few small shifts, above :data:`NEAR_COPY_MIN_CORRELATION` (a normalised
correlation: a change of brightness or contrast leaves it unchanged). The figures behind the constants are in
docs/benchmarks.md ("Near copies").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from .data import ImageDataset

SPLIT_NEAR_COPY_LIMIT = 1000  # images: up to this many, a fine-tune looks for near copies itself (~1.5 s)
THUMB = 32  # px: the thumbnail's side (Lanczos), or the smallest image's when that is smaller (a digit's 28)
SHIFT = 2  # px of the thumbnail, each way: a shift of up to SHIFT * (side / THUMB) px of the image is matched
# 1,000 held-out MNIST digits at their own 28 px: distinct digits of one class (two 1s) reach 0.970; a copy shifted a
# pixel, brightened 1.4x or re-encoded as JPEG (quality 70) stays at or above 0.989 (docs/benchmarks.md).
NEAR_COPY_MIN_CORRELATION = 0.982
CHUNK = 1024  # rows of the correlation matrix at a time: 1024 x N float32


def thumbnail_side(images: Sequence[Image.Image]) -> int:
    """:data:`THUMB`, or the smallest side in the set when smaller: resampling a small image moves its pixel grid,
    so a copy shifted by one pixel would no longer line up at any whole shift (and its 1s would look like all 1s)."""
    smallest = min((min(im.size) for im in images), default=THUMB)
    return max(4 * SHIFT + 4, min(THUMB, smallest))


def thumbnails(images: Sequence[Image.Image], side: int = THUMB) -> np.ndarray:
    """(N, side, side) float32 grey thumbnails."""
    out = np.empty((len(images), side, side), dtype=np.float32)
    for i, im in enumerate(images):
        grey = im.convert("L")
        if grey.size != (side, side):
            grey = grey.resize((side, side), Image.Resampling.LANCZOS)
        out[i] = np.asarray(grey, dtype=np.float32)
    return out


def _normalised(x: np.ndarray) -> np.ndarray:
    """Rows minus their mean, over their norm: dot products are correlations. A flat image becomes all zeros."""
    x = x.reshape(len(x), -1)
    x = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 1e-6)


def near_pairs(images: Sequence[Image.Image]) -> list[tuple[int, int]]:
    """Pairs (i < j) of near copies."""
    side = thumbnail_side(images)
    t = thumbnails(images, side)
    s = SHIFT
    inner = slice(s, side - s)
    centre = _normalised(t[:, inner, inner])  # (N, (side - 2s)^2)
    shifted = [_normalised(t[:, s + dy : side - s + dy, s + dx : side - s + dx])
               for dy in range(-s, s + 1) for dx in range(-s, s + 1)]
    pairs = []
    for start in range(0, len(t), CHUNK):
        rows = centre[start : start + CHUNK]
        best = rows @ shifted[0].T  # (rows, N): the best correlation over the shifts, one matrix product each
        for view in shifted[1:]:
            np.maximum(best, rows @ view.T, out=best)
        i, j = np.nonzero(best >= NEAR_COPY_MIN_CORRELATION)
        i += start
        keep = i < j  # each pair once; an image always matches itself
        pairs += list(zip(i[keep].tolist(), j[keep].tolist()))
    return pairs


def copy_groups(images: Sequence[Image.Image], keys: Sequence[str] | None = None) -> list[list[int]]:
    """Groups of two or more images that are copies of each other (the same ``keys``, the image's pixel hash, or
    near copies), each sorted, in the order of their first image."""
    parent = list(range(len(images)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    if keys is not None:
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            join(first.setdefault(key, i), i)
    for i, j in near_pairs(images):
        join(i, j)
    groups: dict[int, list[int]] = {}
    for i in range(len(images)):
        groups.setdefault(root(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def split_groups(dataset: ImageDataset, keys: Sequence[str]) -> tuple[list[list[int]], str]:
    """(the copy groups a fine-tune's split keeps on one side, a note when near copies were not looked for): an
    inspection's when it found them, else the exact copies, and the near ones up to :data:`SPLIT_NEAR_COPY_LIMIT`
    images."""
    if dataset.copy_groups is not None:
        return dataset.copy_groups, ""
    if len(dataset) <= SPLIT_NEAR_COPY_LIMIT:
        return copy_groups(dataset.images, keys), ""
    return _exact_groups(keys), (f"near copies not looked for in {len(dataset):,} images (over {SPLIT_NEAR_COPY_LIMIT:,}): "
                   f"exact copies only are kept on one side of the split; inspect the data to find the rest")


def _exact_groups(keys: Sequence[str]) -> list[list[int]]:
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def keep_together(train: list[int], val: list[int], groups: list[list[int]]) -> tuple[list[int], list[int], int]:
    """(train, val, groups moved): each group that spans the split moves to the training side whole, so validation
    never holds a copy of a training image."""
    in_val = set(val)
    moved = 0
    for group in groups:
        members = set(group)
        if members & in_val and members - in_val:
            in_val -= members
            moved += 1
    if not moved:
        return train, val, 0
    return sorted(set(train) | (set(val) - in_val)), sorted(in_val), moved
