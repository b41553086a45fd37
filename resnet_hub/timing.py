"""Latency as data: the Predictor's timings, printed by the caller."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Latency of one model at one batch size; times in milliseconds."""

    model: str
    device: str
    precision: str
    batch_size: int
    first_call_ms: float  # the first forward pass at this batch size since the model was loaded: cold caches
    median_ms: float
    p90_ms: float
    runs: int
    compiled: bool = False
    p10_ms: float | None = None
    engine: str = "torch"

    @property
    def images_per_s(self) -> float:
        return 1000.0 * self.batch_size / self.median_ms

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": self.images_per_s}


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))
