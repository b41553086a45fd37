"""Many images in, a table out: batch classification through the Predictor's batched path.

Each chunk of images is decoded, laid out and cropped in parallel (:mod:`resnet_hub.image_stream`) while the chunk
before runs through :meth:`Predictor.forward_batched`, the path single requests share: rows (file, top-1,
confidence, top-k, error) come out as they are answered. A bad image is a row with its error.

>>> result = classify_batch("resnet50", ["photos.zip"], csv="labels.csv")   # doctest: +SKIP
>>> result.rows[0].top1, f"{result.images_per_s:.0f} images/s"              # doctest: +SKIP
('tabby', '41 images/s')
"""

from __future__ import annotations

import csv
import io
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import atomic
from .errors import ResNetHubError
from .image_stream import CHUNK, StreamItem, StreamPlan, plan_stream, stream_images
from .images import crop_resized
from .predict import Predictor

NOT_SURE = "not sure"
CSV_HEADERS = ["file", "folder", "top-1", "confidence", "top-k", "error"]


class BatchError(ResNetHubError, ValueError):
    """A batch request that cannot run (a threshold outside 0-1)."""


def check_min_confidence(value: Any) -> float | None:
    """A "not sure" threshold: None (off) or a share from 0 to 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not 0 <= value <= 1:
        raise BatchError(f"the minimum confidence must be a share from 0 to 1 (0.6 means 60%), got {value!r}: "
                         f"below it an answer is '{NOT_SURE}'")
    return float(value)


def tta_applies(predictor: Predictor) -> bool:
    """Whether the horizontal flip is a fair second look: for photos, never for digits (a flipped 2 is no digit)."""
    return predictor.kind != "digits"


@dataclass(frozen=True)
class BatchRow:
    """One image's answer: its top-1 ("not sure" below the threshold) and top-k, or why it has none."""

    file: str
    folder: str | None
    top1: str
    confidence: float | None
    top_k: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None
    digest: str = ""

    @property
    def answered(self) -> bool:
        return self.error is None

    @property
    def predicted(self) -> str | None:
        """The model's top class, "not sure" or not (None: no answer)."""
        return self.top_k[0][0] if self.top_k else None

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "folder": self.folder, "top1": self.top1,
                "confidence": None if self.confidence is None else round(self.confidence, 4),
                "top_k": {label: round(p, 4) for label, p in self.top_k}, "error": self.error}

    def cells(self) -> list[Any]:
        """The row as the table and the CSV show it (CSV_HEADERS)."""
        return [self.file, self.folder or "", self.top1, "" if self.confidence is None else round(self.confidence, 4),
                "; ".join(f"{label} ({p:.2%})" for label, p in self.top_k), self.error or ""]


@dataclass
class Chunk:
    """One chunk's rows, with what evaluation needs: each answered row's probabilities over the model's classes
    (TTA-averaged when asked) and, with TTA, those without it; the crops the model saw (when kept)."""

    rows: list[BatchRow]
    probs: Tensor  # (answered rows, num_classes)
    plain_probs: Tensor | None = None  # without TTA, when TTA ran
    crops: list[Any] = field(default_factory=list)  # per answered row, when keep_crops
    forward_s: float = 0.0  # the forward passes without the flip
    flip_s: float = 0.0  # the flipped pass of TTA


def classify_chunks(
    predictor: Predictor,
    sources: Sequence[Any] | StreamPlan,
    *,
    top_k: int | None = None,
    min_confidence: float | None = None,
    tta: bool = False,
    chunk: int = CHUNK,
    stop: threading.Event | None = None,
    workers: int | None = None,
    keep_crops: bool = False,
    restrict_to: Sequence[int] | None = None,
) -> Iterator[Chunk]:
    """The rows of every image in ``sources``, chunk by chunk, in order. ``tta``: average with the horizontally
    flipped image (photo models only: see :func:`tta_applies`). ``restrict_to``: class ids the answer is chosen
    among (comparing models on the classes they share). ``stop`` (a threading.Event): no further chunk once set."""
    min_confidence = check_min_confidence(min_confidence)
    k = predictor._check_top_k(top_k if top_k is None else min(top_k, predictor.num_classes))
    if restrict_to is not None:
        k = min(k, len(restrict_to))
    tta = tta and tta_applies(predictor)
    p = predictor.model.preprocessing

    def prepare(data: bytes, name: str):
        picture = predictor.decode(data, name)[0]  # a large JPEG decoded at reduced scale, as single requests are
        return crop_resized(predictor.layout([picture])[0], p)  # the crop the model sees

    mask = None
    if restrict_to is not None:
        mask = torch.full((predictor.num_classes,), float("-inf"))
        mask[list(restrict_to)] = 0.0
    for items in stream_images(sources, prepare=prepare, chunk=chunk, workers=workers, stop=stop):
        yield _classified(predictor, items, k, min_confidence, tta, keep_crops, mask)


def _classified(predictor, items: list[StreamItem], k, min_confidence, tta, keep_crops, mask) -> Chunk:
    good = [item for item in items if item.error is None]
    out = Chunk([], torch.zeros(0, predictor.num_classes))
    predictions = []
    if good:
        x = normalized([item.image for item in good], predictor.model.preprocessing)
        start = time.perf_counter()
        logits = predictor.forward_batched(x)[0].float().cpu()
        out.forward_s = time.perf_counter() - start
        if mask is not None:
            logits = logits + mask
        probs = torch.softmax(logits, dim=1)
        if tta:
            start = time.perf_counter()
            flipped = predictor.forward_batched(x.flip(3))[0].float().cpu()
            out.flip_s = time.perf_counter() - start
            if mask is not None:
                flipped = flipped + mask
            out.plain_probs = probs
            probs = (probs + torch.softmax(flipped, dim=1)) / 2
            logits = torch.log(probs)  # top_k's softmax gives back these probabilities
        out.probs = probs
        predictions = predictor.top_k(logits, k)
        if keep_crops:
            out.crops = [item.image for item in good]
    answers = iter(predictions)
    for item in items:
        if item.error is not None:
            out.rows.append(BatchRow(item.name, item.folder, "", None, [], item.error, item.digest))
            continue
        prediction = next(answers)
        confidence = prediction.probabilities[0]
        sure = min_confidence is None or confidence >= min_confidence
        out.rows.append(BatchRow(item.name, item.folder, prediction.top1 if sure else NOT_SURE, confidence,
                                 list(zip(prediction.labels, prediction.probabilities)), None, item.digest))
    return out


def normalized(crops: Sequence[Any], p) -> Tensor:
    """(B, C, H, W) float32 of crops already at the input size: the arithmetic of
    :func:`~resnet_hub.images.to_tensor_batch`, in the same order, so a row equals single-image classify."""
    out = np.empty((len(crops), len(p.mean), p.input_size, p.input_size), dtype=np.float32)
    mean = np.asarray(p.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(p.std, dtype=np.float32).reshape(-1, 1, 1)
    for i, crop in enumerate(crops):
        pixels = np.asarray(crop)
        chw = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        x = out[i]
        np.divide(chw, np.float32(255.0), out=x)
        x -= mean
        x /= std
    return torch.from_numpy(out)


# ---------------------------------------------------------------------------
# The plain function, for Python and the command line


@dataclass
class BatchResult:
    """Every row, how long it took, and what was skipped (junk, files that are not images)."""

    model: str
    engine: str
    rows: list[BatchRow]
    seconds: float
    skipped: dict[str, list[str]] = field(default_factory=dict)
    stopped: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        answered = sum(r.answered for r in self.rows)
        return answered / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "engine": self.engine, "images": len(self.rows),
                "answered": sum(r.answered for r in self.rows), "errors": sum(not r.answered for r in self.rows),
                "not_sure": sum(r.top1 == NOT_SURE for r in self.rows), "seconds": round(self.seconds, 3),
                "images_per_s": round(self.images_per_s, 2), "stopped": self.stopped,
                "skipped": self.skipped, "notes": self.notes, "rows": [r.to_dict() for r in self.rows]}


def classify_batch(
    model: str | os.PathLike | Predictor,
    data: Any,
    *,
    top_k: int | None = None,
    min_confidence: float | None = None,
    tta: bool = False,
    csv: str | os.PathLike | None = None,
    stop: threading.Event | None = None,
    on_rows: Callable[[list[BatchRow], int, int], None] | None = None,
    chunk: int = CHUNK,
) -> BatchResult:
    """Classify every image of ``data`` (a file, folder or zip, or a list of them) with ``model``.

    ``on_rows(rows, done, total)`` hears each chunk as it is answered; ``stop`` ends the run after the chunk under
    way, keeping the rows so far; ``csv``: where the table is written (atomically, also when stopped).
    """
    min_confidence = check_min_confidence(min_confidence)
    predictor = model if isinstance(model, Predictor) else Predictor(model)
    plan = data if isinstance(data, StreamPlan) else plan_stream(
        data if isinstance(data, (list, tuple)) and not _is_upload(data) else [data])
    notes = [] if not tta or tta_applies(predictor) else [tta_refused(predictor)]
    rows: list[BatchRow] = []
    start = time.perf_counter()
    try:
        for part in classify_chunks(predictor, plan, top_k=top_k, min_confidence=min_confidence, tta=tta,
                                    chunk=chunk, stop=stop):
            rows += part.rows
            if on_rows is not None:
                on_rows(part.rows, len(rows), len(plan))
    except KeyboardInterrupt:  # Ctrl-C on the command line: a Stop, whose rows so far are kept
        if csv is not None and rows:
            write_csv(rows, csv)
        raise
    result = BatchResult(predictor.name, f"{predictor.engine} {predictor.precision}", rows,
                         time.perf_counter() - start, plan.skipped, len(rows) < len(plan), notes)
    if csv is not None:
        write_csv(rows, csv)
    return result


def tta_refused(predictor: Predictor) -> str:
    return (f"test-time augmentation is off for {predictor.name}: it is a digit model, and a flipped digit is another "
            f"shape")


def _is_upload(data: Any) -> bool:
    return isinstance(data, tuple) and len(data) == 2 and isinstance(data[1], (bytes, bytearray))


def csv_text(rows: Sequence[BatchRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADERS)
    writer.writerows(r.cells() for r in rows)
    return buffer.getvalue()


def write_csv(rows: Sequence[BatchRow], path: str | os.PathLike) -> str:
    """The rows as a CSV file (one row per image, CSV_HEADERS first), written atomically."""
    return str(atomic.write_text(path, csv_text(rows)))
