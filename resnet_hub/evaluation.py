"""A labelled set in, a verdict out: how a model does on a zip (or folder) of class folders.

Folders are matched to the model's class names by one rule: the exact name first, then ignoring case and
separators (``golden_retriever``, ``Golden Retriever`` and ``golden-retriever`` are one class). The matched and
unmatched folders are listed; images in unmatched folders are answered (predictions only) but not scored, and
when no folder names a class the verdict says so instead of an accuracy. Figures are scikit-learn's, through
:class:`~resnet_hub.results.ValidationResults`, the record the fine-tune results use.

>>> verdict = evaluate("my-model", "held-out.zip")          # doctest: +SKIP
>>> verdict.accuracy, verdict.to_dict()["per_class"][0]     # doctest: +SKIP
(0.94, {'class': 'cats', 'precision': 0.95, 'recall': 0.93, 'f1': 0.94, 'support': 120})
"""

from __future__ import annotations

import dataclasses
import heapq
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from .batch import CHUNK, BatchRow, Chunk, classify_chunks, tta_applies, tta_refused
from .image_stream import StreamPlan, plan_stream
from .predict import Predictor
from .results import MAX_REVIEW_IMAGES, ValidationResults, mistake_thumbnails
from .trained_on import overlap, overlap_text, read_record

MATCH_RULE = "a folder names a class when its name equals the class name, else when the two are equal ignoring " \
             "case and separators (spaces, '_', '-', '.')"
OTHER = "(another class)"  # a prediction outside the set's classes, as the confusion matrix shows it


def _plain(name: str) -> str:
    return re.sub(r"[\s_\-.]+", "", name).casefold()


@dataclass(frozen=True)
class ClassMatch:
    """Which folders name which of the model's classes."""

    matched: dict[str, str]  # folder -> class name
    unmatched: list[str]

    @classmethod
    def of(cls, folders: Sequence[str], labels: Sequence[str]) -> ClassMatch:
        exact = set(labels)
        plain: dict[str, str] = {}
        for label in labels:
            plain.setdefault(_plain(label), label)
        matched, unmatched = {}, []
        for folder in sorted(folders):
            label = folder if folder in exact else plain.get(_plain(folder))
            if label is None:
                unmatched.append(folder)
            else:
                matched[folder] = label
        return cls(matched, unmatched)

    def describe(self) -> str:
        said = f"{len(self.matched)} folder{'s' * (len(self.matched) != 1)} name a class"
        if self.matched:
            said += ": " + ", ".join(f for f in self.matched)
        if self.unmatched:
            said += f"; {len(self.unmatched)} name none: " + ", ".join(self.unmatched)
        return said


@dataclass
class Evaluation:
    """A model's verdict on a labelled set: accuracy and scikit-learn's per-class figures over the images whose
    folder names a class, the confusion matrix and the mistakes (``results``), every row, and what else to know."""

    model: str
    engine: str
    data: str
    rows: list[BatchRow]
    match: ClassMatch
    accuracy: float | None
    results: ValidationResults | None
    no_accuracy: str = ""  # why there is no accuracy, when there is none
    seen_in_training: dict[str, Any] | None = None
    tta: dict[str, Any] | None = None  # accuracy and ms per image with and without the flip, when TTA ran
    calibration_error: float | None = None
    seconds: float = 0.0
    skipped: dict[str, list[str]] = field(default_factory=dict)
    stopped: bool = False
    notes: list[str] = field(default_factory=list)
    thumbnails: dict[int, Any] = field(default_factory=dict, repr=False)  # mistake index -> small image

    @property
    def images_per_s(self) -> float:
        answered = sum(r.answered for r in self.rows)
        return answered / self.seconds if self.seconds > 0 else 0.0

    @property
    def ms_per_image(self) -> float:
        answered = sum(r.answered for r in self.rows)
        return 1000 * self.seconds / answered if answered else float("nan")

    def summary(self) -> str:
        """The verdict in a few sentences, for people."""
        answered = sum(r.answered for r in self.rows)
        errors = len(self.rows) - answered
        head = (f"**Accuracy {self.accuracy:.2%}** on {self.scored} labelled images" if self.accuracy is not None
                else f"**No accuracy**: {self.no_accuracy}")
        parts = [f"{head} of {self.data} ({self.model}, {self.engine}; {self.images_per_s:.1f} images/s)."]
        if errors:
            parts.append(f"{errors} image{'s' * (errors != 1)} could not be read (their rows say why).")
        parts.append(f"Classes: {self.match.describe()} ({MATCH_RULE}).")
        if self.tta:
            parts.append(f"With the horizontal flip (test-time augmentation): accuracy {_pct(self.tta['accuracy'])} "
                         f"against {_pct(self.tta['accuracy_without'])} without, {self.tta['ms_per_image']:.1f} ms "
                         f"per image against {self.tta['ms_per_image_without']:.1f} ms.")
        if self.calibration_error is not None:
            parts.append(f"Expected calibration error {self.calibration_error:.3f}.")
        if text := overlap_text(self.seen_in_training):
            parts.append(text)
        if self.stopped:
            parts.append("Stopped: the figures cover the images answered before the stop.")
        return " ".join(parts + self.notes)

    @property
    def scored(self) -> int:
        return sum(self.results.confusion_matrix[i][j] for i in range(len(self.results.confusion_matrix))
                   for j in range(len(self.results.confusion_matrix[i]))) if self.results else 0

    def mistakes(self, true: str | None = None, predicted: str | None = None) -> list[tuple[Any, str]]:
        """(image, caption) of the mistakes of one confusion-matrix cell (None: any), most confident first."""
        if self.results is None:
            return []
        return [(self.thumbnails[m.index], (f"{self.results.classes[m.true]} seen as "
                                             f"{self.results.classes[m.predicted]} ({m.confidence:.0%}): {m.name}"))
                for m in self.results.mistakes(true, predicted) if m.index in self.thumbnails]

    def to_dict(self) -> dict[str, Any]:
        results = self.results.to_dict() if self.results else {}
        return {
            "model": self.model, "engine": self.engine, "data": self.data, "images": len(self.rows),
            "answered": sum(r.answered for r in self.rows), "accuracy": self.accuracy,
            "no_accuracy": self.no_accuracy or None, "rule": MATCH_RULE, "matched": self.match.matched,
            "unmatched": self.match.unmatched, "per_class": results.get("per_class", []),
            "confusion": {"classes": self.results.classes if self.results else [],
                          "matrix": results.get("confusion_matrix", [])},
            "mistakes": results.get("misclassified", []), "calibration_error": self.calibration_error,
            "seen_in_training": self.seen_in_training, "tta": self.tta, "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 2), "stopped": self.stopped, "skipped": self.skipped,
            "notes": self.notes, "rows": [r.to_dict() for r in self.rows],
        }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2%}"


class Evaluator:
    """Builds an :class:`Evaluation` chunk by chunk, so a job can show rows as they come and stop at any chunk."""

    def __init__(self, predictor: Predictor, plan: StreamPlan, data: str, *, tta: bool = False,
                 restrict_to: Sequence[str] | None = None):
        self.predictor, self.plan, self.data = predictor, plan, data
        labels = restrict_to if restrict_to is not None else predictor.labels
        self.match = ClassMatch.of(plan.folders, labels)
        self.tta = tta and tta_applies(predictor)
        self.notes = [tta_refused(predictor)] if tta and not self.tta else []
        self.rows: list[BatchRow] = []
        self._true: list[str] = []  # per scored row: its class
        self._pred: list[str] = []
        self._plain_pred: list[str] = []
        self._conf: list[float] = []
        self._index: list[int] = []  # per scored row: its index in rows
        self._probs: list[torch.Tensor] = []  # per scored row: probabilities over the model's classes
        self._truth_ids: list[int] = []
        self._kept: list[tuple[float, int, Any]] = []  # heap of the most confident mistakes' crops
        self.forward_s = self.flip_s = 0.0
        self.start = time.perf_counter()

    def add(self, part: Chunk) -> None:
        answered = iter(range(len(part.probs)))
        labels = self.predictor.labels
        for row in part.rows:
            index = len(self.rows)
            self.rows.append(row)
            if not row.answered:
                continue
            j = next(answered)
            truth = self.match.matched.get(row.folder) if row.folder is not None else None
            if truth is None:
                continue
            self._true.append(truth)
            self._pred.append(row.predicted)
            self._conf.append(row.confidence)
            self._index.append(index)
            self._probs.append(part.probs[j])
            self._truth_ids.append(labels.index(truth))
            if part.plain_probs is not None:
                self._plain_pred.append(labels[int(part.plain_probs[j].argmax())])
            if row.predicted != truth and part.crops:
                entry = (row.confidence, index, part.crops[j])
                if len(self._kept) < MAX_REVIEW_IMAGES:
                    heapq.heappush(self._kept, entry)
                elif entry[:2] > self._kept[0][:2]:
                    heapq.heapreplace(self._kept, entry)
        self.forward_s += part.forward_s
        self.flip_s += part.flip_s

    def finish(self, stopped: bool = False) -> Evaluation:
        seconds = time.perf_counter() - self.start
        results = accuracy = None
        no_accuracy = ""
        if not self.match.matched:
            no_accuracy = (f"no folder of {self.data} names a class of {self.predictor.name}" if self.plan.folders else
                           f"{self.data} has no class folders (the images are loose): nothing says what they are")
            no_accuracy += " so these are predictions only; to score them, put each image in a folder named for its class"
        elif not self._true:
            no_accuracy = "no image of a folder that names a class was answered"
        else:
            classes = sorted(set(self.match.matched.values()), key=self.predictor.labels.index)
            if any(p not in classes for p in self._pred):
                classes.append(OTHER)
            column = {c: i for i, c in enumerate(classes)}
            y = [column[t] for t in self._true]
            probs = np.zeros((len(y), len(classes)))
            for i, (p, c) in enumerate(zip(self._pred, self._conf)):
                probs[i, column.get(p, column.get(OTHER, 0))] = max(c, 1e-9)
            names = {index: self.rows[index].file for index in self._index}
            results = ValidationResults.of(y, probs, self._index, classes, names)
            accuracy = float(np.mean([p == t for p, t in zip(self._pred, self._true)]))
        tta = None
        if self.tta and self._true:
            answered = max(1, sum(r.answered for r in self.rows))
            tta = {"accuracy": accuracy, "accuracy_without": float(np.mean([p == t for p, t in
                                                                            zip(self._plain_pred, self._true)])),
                   "ms_per_image": 1000 * (self.forward_s + self.flip_s) / answered,
                   "ms_per_image_without": 1000 * self.forward_s / answered,
                   "note": "ms per image: the forward passes alone; decoding is the same with or without the flip"}
        kept = {index: crop for _, index, crop in self._kept}
        thumbnails = {}
        if results is not None and kept:
            shown = dataclasses.replace(results, all_mistakes=[m for m in results.all_mistakes if m.index in kept])
            thumbnails = mistake_thumbnails(SimpleNamespace(images=kept), shown)
        record = read_record(_folder_of(self.predictor))
        seen = overlap(record, [r.digest for r in self.rows if r.digest])
        return Evaluation(self.predictor.name, f"{self.predictor.engine} {self.predictor.precision}", self.data,
                          self.rows, self.match, accuracy, results, no_accuracy, seen, tta, self._calibration(),
                          seconds, self.plan.skipped, stopped, self.notes, thumbnails)

    def _calibration(self) -> float | None:
        """The set's expected calibration error (:mod:`resnet_hub.calibration`, 15 bins), on the model's own
        (temperature-scaled) probabilities."""
        from .calibration import expected_calibration_error

        if not self._probs:
            return None
        return float(expected_calibration_error(torch.stack(self._probs), torch.as_tensor(self._truth_ids)))


def _folder_of(predictor: Predictor) -> str | None:
    source = predictor.model.info.source
    return source if source and os.path.isdir(source) else None


def evaluate(
    model: str | os.PathLike | Predictor,
    data: Any,
    *,
    top_k: int | None = None,
    tta: bool = False,
    min_confidence: float | None = None,
    stop: threading.Event | None = None,
    on_rows: Callable[[list[BatchRow], int, int], None] | None = None,
    chunk: int = CHUNK,
    restrict_to: Sequence[str] | None = None,
) -> Evaluation:
    """How ``model`` does on ``data`` (a zip or folder of class folders, or a list of files, folders and zips).

    ``tta``: also run each image flipped left-right and average (photo models only), reporting accuracy and time
    with and without. ``restrict_to``: class names the answers are chosen among (comparing models on the classes
    they share). ``on_rows(rows, done, total)`` hears each chunk; ``stop`` ends it after the chunk under way.

    >>> evaluate("resnet18", "pets.zip").accuracy               # doctest: +SKIP
    0.91
    """
    predictor = model if isinstance(model, Predictor) else Predictor(model)
    plan = data if isinstance(data, StreamPlan) else plan_stream(data if isinstance(data, list) else [data])
    evaluator = Evaluator(predictor, plan, plan.name, tta=tta, restrict_to=restrict_to)
    ids = None if restrict_to is None else [predictor.labels.index(c) for c in restrict_to]
    for part in classify_chunks(predictor, plan, top_k=top_k, min_confidence=min_confidence, tta=evaluator.tta,
                                chunk=chunk, stop=stop, keep_crops=True, restrict_to=ids):
        evaluator.add(part)
        if on_rows is not None:
            on_rows(part.rows, len(evaluator.rows), len(plan))
    return evaluator.finish(stopped=len(evaluator.rows) < len(plan))
