"""Batch classification and comparison on a set as owned jobs: rows stream to whoever started them, only they may
stop one (Stop keeps the rows so far, and their CSV), and they never starve single-image visitors.

How they share the CPU: one batch at a time (a queue of its own, so a batch never waits behind a fine-tune of
minutes, nor a fine-tune behind a batch); its thread, and the decoding threads it starts, run at the training
slot's lower priority; and it sends the model small chunks (``APP_CHUNK``) through
:meth:`~resnet_hub.predict.Predictor.forward_batched`, where a single request waits at most for the chunk
under way and then shares the next pass.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..batch import BatchRow, check_min_confidence, write_csv
from ..errors import ResNetHubError, ServiceError
from ..evaluation import Evaluation, evaluate
from ..image_stream import StreamPlan, plan_stream
from ..owners import Visitor
from ..set_comparison import SetComparison, compare_on_data
from ..training_slot import TrainingSlot, lower_this_threads_priority
from .jobs import LOCAL, OwnedJob
from .registry import ModelRegistry

logger = logging.getLogger(__name__)

MAX_FINISHED = 16  # finished jobs whose results (the mistakes' images) can still be looked at
APP_CHUNK = 16  # images per forward pass of a batch in the app: a visitor's single image waits for one such pass
BATCHES = TrainingSlot()  # the app's batch line: one batch at a time


@dataclass
class BatchJob(OwnedJob):
    """A batch classification (with its evaluation, when the folders name classes) or a comparison on a set."""

    kind: str = field(kw_only=True)  # "classify" or "compare"
    total: int = 0
    rows: list[BatchRow] = field(default_factory=list)
    evaluation: Evaluation | None = None
    comparison: SetComparison | None = None
    csv: Path | None = None
    progress_text: str = ""  # a comparison's: which model, how far

    @property
    def progress(self) -> str:
        if self.kind == "compare":
            return f"{self.progress_text or 'waiting for its turn'}"
        return f"{len(self.rows):,} of {self.total:,} images answered"


class BatchJobs:
    """Batch jobs: started, streamed and stopped per visitor."""

    def __init__(self, registry: ModelRegistry, slot: TrainingSlot = BATCHES, chunk: int = APP_CHUNK):
        self.registry, self.slot, self.chunk = registry, slot, chunk
        self._lock = threading.Lock()
        self._jobs: dict[str, BatchJob] = {}
        self._finished: OrderedDict[str, BatchJob] = OrderedDict()  # the latest, for their results views
        self._out: Path | None = None  # where the CSVs go: made at the first one (building the app writes nothing)

    def start_classify(self, files: Sequence[Any], choice: str, *, top_k: int | None = 5,
                       min_confidence: float | None = None, tta: bool = False, visitor: Visitor = LOCAL) -> BatchJob:
        """Queue the classification of every image in ``files`` (paths of images and zips) with ``choice``."""
        min_confidence = check_min_confidence(min_confidence)
        plan = self._plan(files)
        job = BatchJob(uuid.uuid4().hex, visitor=visitor, kind="classify", total=len(plan))

        def work() -> None:
            predictor = self.registry.predictor(choice, visitor=visitor)
            k = None if top_k is None else min(top_k, predictor.num_classes)
            job.evaluation = evaluate(predictor, plan, top_k=k, min_confidence=min_confidence, tta=tta,
                                      stop=job.stop, chunk=self.chunk,
                                      on_rows=lambda rows, done, total: self._add(job, rows))

        return self._start(job, work, f"a batch of {len(plan)} images")

    def start_compare(self, files: Sequence[Any], choices: Sequence[str], *, tta: bool = False,
                      visitor: Visitor = LOCAL) -> BatchJob:
        """Queue the comparison of ``choices`` on the labelled set in ``files``."""
        plan = self._plan(files)
        job = BatchJob(uuid.uuid4().hex, visitor=visitor, kind="compare", total=len(plan))

        def work() -> None:
            predictors = [self.registry.predictor(c, visitor=visitor) for c in choices]

            def progress(name: str, done: int, total: int) -> None:
                job.progress_text = f"{name}: {done:,} of {total:,} images"
                job.events.put(job.progress_text)

            job.comparison = compare_on_data(predictors, plan, tta=tta, stop=job.stop, on_progress=progress)

        return self._start(job, work, f"a comparison on {len(plan)} images")

    @staticmethod
    def _plan(files: Sequence[Any]) -> StreamPlan:
        files = [f for f in (files or []) if f]
        if not files:
            raise ServiceError("no images: upload a zip of images (or several image files) first")
        # Named by their file names: the rows and the CSV never show where the server keeps uploads.
        return plan_stream([(Path(str(f)).name, Path(str(f))) for f in files])

    def _add(self, job: BatchJob, rows: list[BatchRow]) -> None:
        job.rows += rows
        job.events.put(len(job.rows))

    def _start(self, job: BatchJob, work, what: str) -> BatchJob:
        with self._lock:
            job.ticket = self.slot.enter(what)
            self._jobs[job.id] = job
        threading.Thread(target=self._run, args=(job, work), name=f"batch-{job.id[:8]}", daemon=True).start()
        return job

    def _run(self, job: BatchJob, work) -> None:
        try:
            if not self.slot.wait_turn(job.ticket, stop=job.stop):
                return
            lower_this_threads_priority()  # single requests first; the decoding threads it starts inherit this
            work()
        except ResNetHubError as e:
            job.error = str(e)
        except Exception as e:  # noqa: BLE001 - the visitor hears of any failure; the app keeps serving
            logger.exception("batch job %s failed", job.id)
            job.error = f"the batch failed: {type(e).__name__}: {e}"
        finally:
            self.slot.leave(job.ticket)
            if job.rows:  # finished or stopped: the rows so far, as a CSV written whole or not at all
                self._out = self._out or Path(tempfile.mkdtemp(prefix="resnet-hub-batches-"))
                job.csv = Path(write_csv(job.rows, self._out / f"{job.id[:8]}-classified.csv"))
            with self._lock:
                self._jobs.pop(job.id, None)
                self._finished[job.id] = job
                while len(self._finished) > MAX_FINISHED:
                    self._finished.popitem(last=False)
            job.done.set()
            job.events.put(None)

    def stream(self, job: BatchJob, interval_s: float = 0.5) -> Iterator[BatchJob]:
        """The job, at most every ``interval_s`` while anything changed, until it ends (then once more)."""
        import queue

        while True:
            deadline = time.monotonic() + interval_s
            finished = False
            while time.monotonic() < deadline:
                try:
                    if job.events.get(timeout=max(0.01, deadline - time.monotonic())) is None:
                        finished = True
                        break
                except queue.Empty:
                    continue
            yield job
            if finished or job.done.is_set():
                return

    def finished(self, job_id: str | None, visitor: Visitor | None = None) -> BatchJob | None:
        """A finished job (the latest ``MAX_FINISHED``), only for the visitor who started it, when one is given."""
        with self._lock:
            job = self._finished.get(job_id or "")
        return job if job is not None and job.controlled_by(visitor) else None

    def position(self, job: BatchJob) -> int:
        return max(0, self.slot.position(job.ticket)) if job.ticket is not None else 0

    def stop(self, job_id: str | None, visitor: Visitor | None = None) -> bool:
        """End ``job_id`` after the chunk under way, keeping its rows; only for its owner."""
        with self._lock:
            job = self._jobs.get(job_id or "")
        if job is None or not job.controlled_by(visitor):
            return False
        job.stop.set()
        return True

    def close(self) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.stop.set()
