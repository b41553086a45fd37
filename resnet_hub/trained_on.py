"""What a model fine-tuned here trained on: the content digests of its training and validation images, saved as
``trained_on.json`` beside ``model.safetensors``, so an evaluation can say how many of its images the model saw.

A digest is the sha256 of an image file's bytes (:func:`~resnet_hub.image_stream.content_digest`): the same file
under another name is found; the same picture re-encoded is not. Data sets that are not files (the bundled MNIST
sample) are recorded as such, without digests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from . import atomic

RECORD_NAME = "trained_on.json"


def write_record(folder: str | os.PathLike, dataset, data: Any, val_fraction: float, seed: int) -> Path | None:
    """Write ``folder/trained_on.json`` for a run on ``dataset`` read from ``data`` (a zip path; anything else is
    recorded without digests), split as the fine-tune splits it (``val_fraction``, ``seed``)."""
    from .data import stratified_split
    from .image_stream import plan_stream

    train, val = stratified_split(dataset, val_fraction, seed=seed)
    record: dict[str, Any] = {"data": dataset.name, "digest": "sha256 of the file's bytes, first 16 hex digits",
                              "train": [], "validation": []}
    path = Path(str(data)) if isinstance(data, (str, os.PathLike)) else None
    if path is not None and path.is_file() and path.suffix.lower() == ".zip" and dataset.names:
        from .image_stream import content_digest

        by_name = {}
        for entry in plan_stream([path]).entries:
            try:
                by_name[entry.name] = content_digest(entry.read())
            except Exception:  # noqa: BLE001 - a member read_zip skipped as unreadable: nothing trained on it
                continue
        record["train"] = sorted({by_name[dataset.names[i]] for i in train if dataset.names[i] in by_name})
        record["validation"] = sorted({by_name[dataset.names[i]] for i in val if dataset.names[i] in by_name})
    else:
        record["note"] = f"{dataset.name} is not a zip of files: its images have no file digests"
    return atomic.write_text(Path(folder) / RECORD_NAME, json.dumps(record) + "\n")


def read_record(folder: str | os.PathLike | None) -> dict[str, Any] | None:
    """The record beside a model's weights, or None (not fine-tuned here, or before records were kept)."""
    if not folder:
        return None
    try:
        record = json.loads((Path(folder) / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def overlap(record: dict[str, Any] | None, digests: list[str]) -> dict[str, Any] | None:
    """How many of ``digests`` (one per image of an evaluated set) the model trained or was validated on."""
    if record is None:
        return None
    train, val = set(record.get("train") or []), set(record.get("validation") or [])
    return {"data": record.get("data"), "train": sum(d in train for d in digests),
            "validation": sum(d in val for d in digests), "images": len(digests), "note": record.get("note", "")}


def overlap_text(seen: dict[str, Any] | None) -> str:
    """One line for people, empty when the model has no record."""
    if not seen:
        return ""
    if seen.get("note") and not (seen["train"] or seen["validation"]):
        return f"Whether the model saw these images is unknown: {seen['note']}."
    if not seen["train"] and not seen["validation"]:
        return f"None of these {seen['images']} images were in the model's training data ({seen['data']})."
    return (f"{seen['train']} of these {seen['images']} images were in the model's training split and "
            f"{seen['validation']} in its validation split ({seen['data']}): its accuracy on them is no test of "
            f"new images.")
