"""Data inspections as owned jobs: they take turns on the training slot with fine-tunes and the lab (the CPU the app
already budgets for heavy work), report progress, stop on request, and keep their findings for the visitor who
started them, who may then fix the data and train on the fixed set."""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from ..data import ImageDataset
from ..errors import ResNetHubError, ServiceError
from ..inspection import DROP, MOVE, Inspection, InspectionStopped, fixed, inspect, read_for_inspection, write_zip
from ..owners import Visitor
from ..training_slot import TRAINING, TrainingSlot, lower_this_threads_priority
from .jobs import IMAGE_SIZE, LOCAL, OwnedJob
from .registry import ModelRegistry, own_input_size

logger = logging.getLogger(__name__)

MAX_KEPT = 4  # finished inspections whose images are kept for fixing (each holds its data set in memory)


@dataclass
class InspectionJob(OwnedJob):
    """One inspection; its events are ``(fraction, what)`` progress pairs, then None when it ends."""

    base: str = field(kw_only=True)
    data_name: str = ""
    result: Inspection | None = None


class Inspections:
    """Inspections per visitor: started, followed, stopped; the latest findings kept for fixing."""

    def __init__(self, registry: ModelRegistry, slot: TrainingSlot = TRAINING):
        self.registry = registry
        self.slot = slot
        self._lock = threading.Lock()
        self._running: dict[str, InspectionJob] = {}
        self._kept: OrderedDict[str, InspectionJob] = OrderedDict()

    def start(self, data: str | Path, base: str, visitor: Visitor = LOCAL, image_size: int | None = None
              ) -> InspectionJob:
        """Read ``data`` (a zip path or 'mnist-sample'; a bad zip is refused here, before queueing), then queue the
        inspection on ``base``'s embeddings for the slot; it runs in a background thread."""
        dataset = read_for_inspection(data)
        job = InspectionJob(uuid.uuid4().hex, visitor=visitor, base=base, data_name=dataset.name)
        with self._lock:
            self._running[job.id] = job
        threading.Thread(target=self._run, args=(job, dataset, image_size), name=f"inspect-{job.id[:8]}",
                         daemon=True).start()
        return job

    def _run(self, job: InspectionJob, dataset: ImageDataset, image_size: int | None) -> None:
        try:
            # The base first, before joining the line: a starter still training needs the training slot itself, so
            # waiting for it from a place in line would wait forever (a fine-tune resolves its base first too).
            base = job.base
            if not base.startswith("scratch:"):
                base = self.registry.base_source(base, visitor=job.visitor)
            job.ticket = self.slot.enter(f"the inspection of {job.data_name}")
            if not self.slot.wait_turn(job.ticket, stop=job.stop):
                return  # stopped before its turn came: nothing ran, result stays None
            lower_this_threads_priority()  # single-image requests first
            if image_size is None:  # the size the app's fine-tune of this data would use: its embeddings are reused
                image_size = own_input_size(base, dataset.kind) or IMAGE_SIZE.get(dataset.kind, IMAGE_SIZE["photo"])
            job.result = inspect(dataset, base=base, image_size=image_size,
                                 should_stop=lambda: "stopped" if job.stop.is_set() else "",
                                 on_progress=lambda fraction, what: job.events.put((fraction, what)))
            job.result.base = job.base  # as the visitor named it
            with self._lock:
                self._kept[job.id] = job
                while len(self._kept) > MAX_KEPT:
                    self._kept.popitem(last=False)
        except InspectionStopped:
            pass  # stopped by its owner: nothing found, nothing kept
        except ResNetHubError as e:
            job.error = str(e)
        except Exception as e:  # noqa: BLE001 - the visitor hears of any failure; the app keeps serving
            logger.exception("inspection %s failed", job.id)
            job.error = f"the inspection failed: {type(e).__name__}: {e}"
        finally:
            if job.ticket is not None:
                self.slot.leave(job.ticket)
            with self._lock:
                self._running.pop(job.id, None)
            job.done.set()
            job.events.put(None)

    def position(self, job: InspectionJob) -> int:
        """0: running now (or finished); n: n jobs ahead of it in line."""
        return max(0, self.slot.position(job.ticket)) if job.ticket is not None else 0

    def stop(self, visitor: Visitor | None = None, job_id: str | None = None) -> bool:
        """Stop ``visitor``'s unfinished inspections (only ``job_id``, when given); False when they have none."""
        with self._lock:
            jobs = [j for j in self._running.values() if (job_id is None or j.id == job_id) and j.controlled_by(visitor)]
        for job in jobs:
            job.stop.set()
        return bool(jobs)

    def found(self, job_id: str | None, visitor: Visitor | None = None) -> Inspection:
        """A finished inspection's findings, for its owner only."""
        with self._lock:
            job = self._kept.get(job_id or "")
        if job is None or not job.controlled_by(visitor) or job.result is None:
            raise ServiceError("no inspection of yours to fix: inspect the data first (only the latest few are kept)")
        return job.result

    def fixed_dataset(self, job_id: str | None, decisions: dict[int, str], visitor: Visitor | None = None,
                      ) -> ImageDataset:
        """The inspected set with ``decisions`` applied: image index -> "drop", "move" (to its suggested class)
        or "keep"."""
        found = self.found(job_id, visitor)
        suggested = {issue.index: issue.suggested for issue in found.label_issues}
        drop = {i for i, what in decisions.items() if what == DROP}
        move = {i: suggested[i] for i, what in decisions.items() if what == MOVE and i in suggested}
        return fixed(found.dataset, drop, move, groups=[g.indices for g in found.duplicates])

    def write_fixed_zip(self, job_id: str | None, decisions: dict[int, str], path: Path,
                        visitor: Visitor | None = None) -> Path:
        write_zip(self.fixed_dataset(job_id, decisions, visitor), path)
        return path

    def close(self) -> None:
        """Stop every inspection (the app is closing)."""
        with self._lock:
            jobs = list(self._running.values())
        for job in jobs:
            job.stop.set()


# ---------------------------------------------------------------------------
# What the page shows of the findings

LABEL_ISSUES, COPIES, OUTLIERS = "Probably mislabelled", "Copies", "Outliers"
FINDINGS = (LABEL_ISSUES, COPIES, OUTLIERS)
PAGE_SIZE = 24
THUMBNAIL_SIDE = 112  # px


@dataclass(frozen=True)
class Page:
    """One page of one kind of finding: thumbnails with captions, the image index of each, and the page count."""

    items: list[tuple[object, str]]
    indices: list[int]
    page: int
    pages: int
    total: int


def _mark(index: int, decisions: dict[int, str], suggested: str | None) -> str:
    what = decisions.get(index)
    if what == DROP:
        return "[dropped] "
    if what == MOVE and suggested:
        return f"[moved to {suggested}] "
    if what == "keep":
        return "[kept] "
    return ""


def findings_page(found: Inspection, kind: str, page: int, decisions: dict[int, str]) -> Page:
    """Page ``page`` (from 0, clipped) of the ``kind`` findings (:data:`FINDINGS`), each captioned with what it is
    and what the visitor decided: "given cat, looks like dog (93%)"."""
    dataset = found.dataset
    suggested = {i.index: i.suggested for i in found.label_issues}
    if kind == LABEL_ISSUES:
        rows = [(i.index, f"given {i.given}, looks like {i.suggested} ({i.confidence:.0%}): {i.path}")
                for i in found.label_issues]
    elif kind == COPIES:
        rows = [(index, f"group {n} ({'exact' if g.exact else 'near'}"
                        f"{', across classes' if g.across_classes else ''}{', across the split' if g.across_split else ''}"
                        f"): {dataset.classes[dataset.targets[index]]}: {dataset.image_name(index)}")
                for n, g in enumerate(found.duplicates, 1) for index in g.indices]
    elif kind == OUTLIERS:
        rows = [(o.index, f"far from the rest (score {o.score:.1f}): {dataset.classes[dataset.targets[o.index]]}: "
                          f"{o.path}") for o in found.outliers]
    else:
        raise ServiceError(f"no findings called {kind!r}: choose one of {', '.join(FINDINGS)}")
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    page = min(max(int(page), 0), pages - 1)
    shown = rows[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    items = [(_thumbnail(dataset.images[i]), _mark(i, decisions, suggested.get(i)) + caption) for i, caption in shown]
    return Page(items, [i for i, _ in shown], page, pages, len(rows))


def _thumbnail(image):
    small = image.copy()
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return small


def bulk_drop_copies(found: Inspection, decisions: dict[int, str]) -> dict[int, str]:
    """Every copy dropped but the first image of each group (an image the visitor kept stays)."""
    out = dict(decisions)
    for group in found.duplicates:
        for index in group.indices[1:]:
            if out.get(index) != "keep":
                out[index] = DROP
    return out


def bulk_drop_label_issues(found: Inspection, decisions: dict[int, str], min_confidence: float) -> dict[int, str]:
    """Every label issue whose suggested class has at least ``min_confidence`` dropped (kept ones stay)."""
    if not 0 <= min_confidence <= 1:
        raise ServiceError(f"the confidence must be from 0 to 1, got {min_confidence}")
    out = dict(decisions)
    for issue in found.label_issues:
        if issue.confidence >= min_confidence and out.get(issue.index) != "keep":
            out[issue.index] = DROP
    return out


def decisions_line(decisions: dict[int, str]) -> str:
    dropped = sum(v == DROP for v in decisions.values())
    moved = sum(v == MOVE for v in decisions.values())
    if not dropped and not moved:
        return "No change yet: every image is trained on as it was given."
    return f"{dropped} image{'s' * (dropped != 1)} dropped, {moved} moved to the suggested class."
