"""What a validation split says about a trained model: the confusion matrix, per-class precision, recall, F1 and
support (scikit-learn's), and the images it got wrong, most confident mistakes first.

Plain data (lists and dicts), so the card, ``config.json``, the CLI's ``--json`` and the app read one record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Mistake:
    """One misclassified validation image."""

    index: int  # into the dataset
    name: str  # where the image came from (its zip member), for people
    true: int
    predicted: int
    confidence: float  # the model's probability for ``predicted``

    def to_dict(self, classes: list[str]) -> dict[str, Any]:
        return {"image": self.name, "index": self.index, "true": classes[self.true],
                "predicted": classes[self.predicted], "confidence": round(self.confidence, 4)}


@dataclass(frozen=True)
class ValidationResults:
    """The validation split's results, in class order.

    >>> results = ValidationResults.of([0, 1, 1], [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]], [10, 11, 12], ["cat", "dog"])
    >>> results.confusion_matrix
    [[1, 0], [1, 1]]
    >>> [m.index for m in results.mistakes(true=1)]
    [11]
    """

    classes: list[str]
    confusion_matrix: list[list[int]]
    per_class: list[dict[str, Any]]  # {"class", "precision", "recall", "f1", "support"} per class
    all_mistakes: list[Mistake] = field(default_factory=list)  # most confident first

    @classmethod
    def of(cls, y_true, probabilities, indices, classes: list[str], names: list[str] | None = None) -> ValidationResults:
        """From the true classes and the model's probabilities (N, classes) of the validation images
        ``indices`` (their positions in the dataset); ``names[i]`` names dataset image ``i``."""
        from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

        y = _numpy(y_true).astype(int)
        probs = _numpy(probabilities).astype(float).reshape(len(y), len(classes))
        pred = probs.argmax(1) if len(y) else np.zeros(0, dtype=int)
        labels = list(range(len(classes)))
        matrix = confusion_matrix(y, pred, labels=labels).tolist()
        precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
        per_class = [{"class": c, "precision": round(float(p), 4), "recall": round(float(r), 4), "f1": round(float(f), 4),
                      "support": int(s)} for c, p, r, f, s in zip(classes, precision, recall, f1, support)]
        confidence = probs[np.arange(len(y)), pred] if len(y) else np.zeros(0)
        wrong = [i for i in np.argsort(-confidence, kind="stable") if pred[i] != y[i]]
        indices = [int(i) for i in indices]
        mistakes = [Mistake(indices[i], names[indices[i]] if names else f"{classes[y[i]]} #{indices[i]}", int(y[i]),
                            int(pred[i]), float(confidence[i])) for i in wrong]
        return cls(list(classes), matrix, per_class, mistakes)

    @property
    def macro_f1(self) -> float:
        return float(np.mean([row["f1"] for row in self.per_class])) if self.per_class else 0.0

    def mistakes(self, true: int | str | None = None, predicted: int | str | None = None) -> list[Mistake]:
        """The misclassified images, most confident first; only those of class ``true`` predicted as
        ``predicted`` when given (class ids or names): one cell of the confusion matrix."""
        true, predicted = self._class_id(true), self._class_id(predicted)
        return [m for m in self.all_mistakes
                if (true is None or m.true == true) and (predicted is None or m.predicted == predicted)]

    def _class_id(self, c: int | str | None) -> int | None:
        if c is None or isinstance(c, int):
            return c
        if c not in self.classes:
            raise ValueError(f"{c!r} is not one of the classes ({', '.join(self.classes)})")
        return self.classes.index(c)

    def to_dict(self, max_mistakes: int | None = None) -> dict[str, Any]:
        mistakes = self.all_mistakes if max_mistakes is None else self.all_mistakes[:max_mistakes]
        return {"confusion_matrix": self.confusion_matrix, "per_class": self.per_class,
                "misclassified": [m.to_dict(self.classes) for m in mistakes],
                "misclassified_total": len(self.all_mistakes)}


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


MAX_REVIEW_IMAGES = 200  # misclassified images kept for review after a run, the most confident first


def mistake_thumbnails(dataset, results: ValidationResults, limit: int = MAX_REVIEW_IMAGES, side: int = 160) -> dict:
    """Small copies of the misclassified images (dataset index -> PIL image), the ``limit`` most confident, so a
    run's mistakes can be looked at after its dataset is gone."""
    out = {}
    for m in results.all_mistakes[:limit]:
        image = dataset.images[m.index].copy()
        image.thumbnail((side, side))
        if max(image.size) < 96:  # a 28 px digit: enlarged, pixels kept sharp, so it can be seen
            scale = 96 // max(image.size)
            image = image.resize((image.width * scale, image.height * scale), resample=0)
        out[m.index] = image
    return out
