"""Calibrated confidence: temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks",
arXiv:1706.04599) fitted on a fine-tune's validation split, and the expected calibration error (ECE) before and after.

One number, the temperature T > 0, divides the logits: ``softmax(logits / T)``. T > 1 softens an overconfident
model, T < 1 sharpens an underconfident one (label smoothing, on by default here, tends to make one). The top-1 class
never changes, only how sure the model says it is.

The ECE (Guo et al., eq. 3; Naeini et al. 2015) sorts the images into ``bins`` (15) equal-width bins by confidence
(the top-1 probability; bin b holds confidences in ((b-1)/B, b/B]) and sums, over the bins, the share of images in
the bin times the gap between their accuracy and their mean confidence. 0 is perfectly calibrated.

The validation images serve twice without judging a temperature on the images it was fitted on: two-fold
cross-validation. The split is halved (class-balanced, seeded); a temperature fitted on each half calibrates the
other, and the "after" ECE and reliability diagram are those of the pooled held-out halves. The temperature that is
kept is then fitted on the whole split. Below :data:`MIN_IMAGES` validation images no temperature is fitted (T = 1),
and the result says so.

>>> import torch
>>> logits = torch.tensor([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [0.0, 4.0]])
>>> round(expected_calibration_error(torch.softmax(logits, 1), torch.tensor([0, 1, 1, 1])), 3)
0.232
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

BINS = 15  # equal-width confidence bins of the ECE and the reliability diagram (Guo et al. use 15)
MIN_IMAGES = 40  # validation images below which no temperature is fitted: each half of 20 would judge only noise
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # confidence thresholds of the "not sure" table
MIN_T, MAX_T = 0.05, 20.0  # the fitted temperature is kept inside these (a degenerate split cannot give 0 or inf)


def fit_temperature(logits: Tensor, labels: Tensor) -> float:
    """The T > 0 minimising the negative log-likelihood of ``softmax(logits / T)`` (LBFGS on log T).

    >>> import torch
    >>> logits = torch.tensor([[3.0, 0.0]] * 6 + [[0.0, 3.0]] * 4)
    >>> labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 0, 0])       # half the answers are wrong: soften
    >>> fit_temperature(logits, labels) > 1
    True
    """
    logits, labels = _as_tensor(logits).double(), _as_tensor(labels).long()
    if len(logits) == 0:
        return 1.0
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    t = float(log_t.detach().exp())
    return min(max(t, MIN_T), MAX_T) if math.isfinite(t) else 1.0


def reliability(probs: Tensor, labels: Tensor, bins: int = BINS) -> list[dict[str, Any]]:
    """Per equal-width confidence bin: its range, the images in it, their mean confidence and their accuracy
    (None for an empty bin): the data of a reliability diagram."""
    confidence, correct = _confidence_and_correct(probs, labels)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # (b-1)/B < c <= b/B -> bin b-1
    out = []
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        out.append({"low": b / bins, "high": (b + 1) / bins, "count": n,
                     "confidence": float(confidence[inside].mean()) if n else None,
                     "accuracy": float(correct[inside].mean()) if n else None})
    return out


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = BINS) -> float:
    """Expected calibration error of ``probs`` (N, classes) against the true ``labels`` (N,), with ``bins``
    equal-width confidence bins: sum over bins of (images in bin / N) x |accuracy - mean confidence|."""
    rows = reliability(probs, labels, bins)
    n = sum(r["count"] for r in rows)
    return float(sum(r["count"] / n * abs(r["accuracy"] - r["confidence"]) for r in rows if r["count"])) if n else 0.0


def answered_at(probs: Tensor, labels: Tensor, thresholds=THRESHOLDS) -> list[dict[str, Any]]:
    """For each confidence threshold: the share of images the model answers (top-1 probability >= threshold; the
    rest would be "not sure") and the accuracy of those answers (None when it answers none)."""
    confidence, correct = _confidence_and_correct(probs, labels)
    out = []
    for t in thresholds:
        kept = confidence >= t
        out.append({"threshold": float(t), "answered": float(kept.mean()) if len(kept) else 0.0,
                    "images": int(kept.sum()), "accuracy": float(correct[kept].mean()) if kept.any() else None})
    return out


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and what it did, on the validation split: data the card, the CLI and the app show."""

    temperature: float  # 1.0: not fitted (too few images)
    images: int  # validation images it was judged on
    ece_before: float  # of softmax(logits), on every validation image
    ece_after: float | None  # of the temperature-scaled probabilities, each image scaled by a T it was not fitted on
    bins: int = BINS
    reliability_before: list[dict[str, Any]] = field(default_factory=list)
    reliability_after: list[dict[str, Any]] = field(default_factory=list)
    thresholds: list[dict[str, Any]] = field(default_factory=list)  # answered_at of the probabilities served
    note: str = ""

    @property
    def fitted(self) -> bool:
        return self.ece_after is not None

    def describe(self) -> str:
        if not self.fitted:
            return self.note
        return (f"temperature {self.temperature:.3f}: expected calibration error {self.ece_before:.3f} before, "
                f"{self.ece_after:.3f} after ({self.bins} bins, {self.images} validation images, 2-fold "
                f"cross-validated)")

    def to_dict(self) -> dict[str, Any]:
        return _rounded(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def calibrate(logits: Tensor, labels: Tensor, *, seed: int = 0, min_images: int = MIN_IMAGES,
              bins: int = BINS) -> Calibration:
    """Fit a temperature on ``logits`` (N, classes) and ``labels`` (N,) of a validation split, judged by two-fold
    cross-validation (see the module's docstring); below ``min_images`` images T stays 1."""
    logits, labels = _as_tensor(logits).double(), _as_tensor(labels).long()
    n = len(labels)
    before = torch.softmax(logits, 1)
    common = dict(images=n, ece_before=expected_calibration_error(before, labels, bins), bins=bins,
                  reliability_before=reliability(before, labels, bins))
    if n < min_images:
        return Calibration(1.0, ece_after=None, thresholds=answered_at(before, labels), **common,
                           note=f"confidence not calibrated: {n} validation images, fewer than the {min_images} "
                                f"a temperature is fitted on (train on more images, or a larger --val-fraction)")
    first, second = _halves(labels, seed)
    held_out = torch.empty_like(before)
    for fit, judge in ((first, second), (second, first)):
        held_out[judge] = torch.softmax(logits[judge] / fit_temperature(logits[fit], labels[fit]), 1)
    t = fit_temperature(logits, labels)
    return Calibration(t, ece_after=expected_calibration_error(held_out, labels, bins),
                       reliability_after=reliability(held_out, labels, bins),
                       thresholds=answered_at(torch.softmax(logits / t, 1), labels), **common)


def calibrate_probabilities(probs: Tensor, labels: Tensor, **kwargs) -> Calibration:
    """:func:`calibrate` from softmax probabilities: their log is the logits less a per-row constant, which
    ``softmax(. / T)`` ignores, so the fit and the errors are the same."""
    return calibrate(torch.log(_as_tensor(probs).double().clamp_min(1e-300)), labels, **kwargs)


def record(model, probs: Tensor, labels: Tensor, seed: int = 0) -> Calibration:
    """Calibrate a fine-tuned ``model`` from its validation probabilities: the temperature goes into its metadata
    (``config.json``'s ``temperature``), the evidence into its training record (the card's calibration section)."""
    result = calibrate_probabilities(probs, labels, seed=seed)
    model.info.temperature = result.temperature
    model.info.training["calibration"] = result.to_dict()
    return result


def of_model(model) -> Calibration | None:
    """The calibration a model fine-tuned here records (None for any other)."""
    data = (getattr(model, "info", None) and model.info.training or {}).get("calibration")
    return Calibration.from_dict(data) if isinstance(data, dict) else None


def _halves(labels: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """Two disjoint halves of the indices, each class split evenly between them (shuffled with ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    first, second = [], []
    flip = 0
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        cut = (len(idx) + flip) // 2  # odd classes give their extra image to alternate halves
        flip ^= len(idx) % 2
        first.append(idx[:cut])
        second.append(idx[cut:])
    return torch.cat(first), torch.cat(second)


def _confidence_and_correct(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    p = _as_tensor(probs).double()
    y = _as_tensor(labels).long()
    if len(p) == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    confidence, predicted = p.max(1)
    return confidence.numpy(), (predicted == y).numpy()


def _as_tensor(x) -> Tensor:
    return x.detach().cpu() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def _rounded(value):
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value
