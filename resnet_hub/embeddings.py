"""Embeddings of a data set's images: a base's pooled output before its head, at the fine-tune's image size.

They are the frozen part of a fine-tune that freezes every stage (:func:`~resnet_hub.frozen.frozen_trunk`, so the
same engine choice: OpenVINO int8 or bf16 where it converts and passes its check, else torch), computed a chunk at a
time, and kept per image in :data:`CACHE`, bounded in memory and keyed by the frozen part's own weights and input
shape and by each image's pixels. An inspection and the head-only fine-tune that follows on the same base therefore
compute each image once, and a fixed copy of the set (images dropped or moved to another class) reuses them all.

>>> model = load("starter-resnet18-mnist")                                # doctest: +SKIP
>>> found = embed(model, dataset.images, kind="digits")                  # doctest: +SKIP
>>> found.vectors.shape, found.reused                                    # doctest: +SKIP
(torch.Size([400, 512]), 0)
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from .frozen import frozen_identity, frozen_trunk
from .hardware import autocast_args, resolve_precision
from .images import to_tensor_batch
from .weights import HubResNet

MAX_CACHE_BYTES = 512 * 2**20  # all bases together; a ResNet-50's 2,048 floats are 8 KiB an image, 64k images
DECODE_CHUNK = 256  # images resized and normalised at a time: 48 MiB at 224 px, whatever the set's size


def image_key(image: Image.Image) -> str:
    """The image's identity by its pixels (mode, size and bytes): the same for the same file, and for a lossless
    re-encode of it. What the cache keys an image by, and what an inspection calls an exact copy."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{image.mode} {image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


class EmbeddingCache:
    """Per-image embeddings for each frozen part, at most ``max_bytes`` in all; the part used longest ago goes first."""

    def __init__(self, max_bytes: int = MAX_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._parts: OrderedDict[str, dict[str, Tensor]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, part: str, keys: Sequence[str]) -> list[Tensor | None]:
        with self._lock:
            rows = self._parts.get(part)
            if rows is None:
                return [None] * len(keys)
            self._parts.move_to_end(part)
            return [rows.get(k) for k in keys]

    def put(self, part: str, keys: Sequence[str], vectors: Tensor) -> None:
        if vectors.numel() * 4 > self.max_bytes:
            return  # larger than the whole cache: keeping it would evict everything for one use
        with self._lock:
            rows = self._parts.setdefault(part, {})
            self._parts.move_to_end(part)
            for key, vector in zip(keys, vectors):
                if key not in rows:
                    rows[key] = vector.clone()  # a row of its own: a view would keep the whole batch alive
                    self._bytes += vector.numel() * 4
            while self._bytes > self.max_bytes and len(self._parts) > 1:
                _, dropped = self._parts.popitem(last=False)
                self._bytes -= sum(v.numel() * 4 for v in dropped.values())

    def clear(self) -> None:
        with self._lock:
            self._parts.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes


CACHE = EmbeddingCache()


@dataclass
class Embeddings:
    """(N, D) float32 embeddings of a set's images, with how they were made."""

    vectors: Tensor
    keys: list[str]  # image_key of each image
    part: str  # the frozen part's cache key: its weights and input shape
    reused: int  # images read from the cache instead of computed
    note: str  # what computed them (the frozen part's engine), "" for torch with nothing to say


def whole_trunk(model: HubResNet) -> HubResNet:
    """``model`` with every stage frozen, in eval mode, on the CPU: what an embedding is the output of."""
    model.freeze(len(model.stage_names))
    return model.eval()


def part_key(model: HubResNet) -> str:
    """The cache key of ``model``'s whole trunk with its preprocessing (size, crop, mean and std)."""
    p = model.preprocessing
    return f"{frozen_identity(model, (len(p.mean), p.input_size, p.input_size))[0]} {p!r}"


def known(model: HubResNet, keys: Sequence[str], cache: EmbeddingCache = CACHE) -> Tensor | None:
    """The (N, D) embeddings of the images ``keys`` through ``model``'s whole trunk when every one is cached."""
    rows = cache.get(part_key(model), keys)
    return torch.stack(rows) if rows and all(r is not None for r in rows) else None


def remember(model: HubResNet, keys: Sequence[str], vectors: Tensor, cache: EmbeddingCache = CACHE) -> None:
    """Keep the embeddings a fine-tune computed for an inspection that follows."""
    cache.put(part_key(model), keys, vectors.detach().float().cpu())


def embed(
    model: HubResNet,
    images: Sequence[Image.Image],
    kind: str = "photo",
    *,
    keys: Sequence[str] | None = None,
    precision: str = "auto",
    engine: str = "auto",
    should_stop: Callable[[], str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    cache: EmbeddingCache = CACHE,
) -> Embeddings | str:
    """The embeddings of ``images`` through ``model``'s whole trunk (``model`` must have every stage frozen:
    :func:`whole_trunk`), read from ``cache`` where computed before; or the reason ``should_stop`` gave.

    ``on_progress(done, total)`` is called after each chunk. ``kind`` ("digits" or "photo") picks the calibration
    images of an int8 part, as the fine-tune's does.
    """
    if model.frozen_stages < len(model.stage_names):
        raise ValueError("embed needs every stage frozen: pass whole_trunk(model)")
    keys = list(keys) if keys is not None else [image_key(im) for im in images]
    part = part_key(model)
    found = cache.get(part, keys)
    missing = [i for i, row in enumerate(found) if row is None]
    reused = len(images) - len(missing)
    note = ""
    if missing:
        device = torch.device("cpu")
        autocast = autocast_args(device, resolve_precision(precision, device)[0])
        trunk = None
        done = reused
        for start in range(0, len(missing), DECODE_CHUNK):
            if should_stop is not None and (reason := should_stop()):
                return reason
            chunk = missing[start : start + DECODE_CHUNK]
            x = to_tensor_batch([images[i] for i in chunk], model.preprocessing)  # (B, C, S, S)
            if trunk is None:
                trunk, note = frozen_trunk(model, x, len(missing), autocast, engine, 1, kind)
            step = getattr(trunk, "chunk", None) or 64
            vectors = torch.cat([trunk(x[i : i + step]) for i in range(0, len(x), step)])  # (B, D)
            cache.put(part, [keys[i] for i in chunk], vectors)
            for i, row in zip(chunk, vectors):
                found[i] = row
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, len(images))
    elif on_progress is not None:
        on_progress(len(images), len(images))
    vectors = torch.stack(found) if found else torch.empty((0, model.config.num_features))
    return Embeddings(vectors.float(), keys, part, reused, note)
