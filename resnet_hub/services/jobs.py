"""Fine-tunes as owned jobs: they take turns on the one training slot, stream their events to whoever started
them, and only that visitor may stop or cancel them. Training always works on its own copy of the weights."""

from __future__ import annotations

import itertools
import logging
import queue
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..calibration import Calibration
from ..data import ImageDataset, mnist_sample, read_zip
from ..errors import ResNetHubError, ServiceError
from ..finetune import Event, FinetuneConfig, FinetuneResult, finetune
from ..frozen import prepare_base, prepare_frozen_part
from ..hub import access
from ..owners import Visitor
from ..results import ValidationResults, mistake_thumbnails
from ..serving import choose_ahead
from ..store import model_folder
from ..trained_on import write_record
from ..training_slot import TRAINING, Ticket, TrainingSlot, lower_this_threads_priority
from .background import EXITING, background_conversion, start_preparer
from .registry import LOCAL, ModelRegistry, own_input_size
from .starters import DISPLAY

logger = logging.getLogger(__name__)

# The app's input size for a run that names none, by the data's kind; a model fine-tuned here on the same kind
# keeps its own (a 24 px digit starter fed 32 px digits scored 66.8% where it had 98.3%).
IMAGE_SIZE = {"digits": 32, "photo": 128}


@dataclass
class OwnedJob:
    """A run on the training slot that belongs to the visitor who started it: only they may stop or cancel it."""

    id: str
    visitor: Visitor = LOCAL  # who started it: the owner of what it saves, whose access fetches its base
    events: queue.Queue = field(default_factory=queue.Queue)
    stop: threading.Event = field(default_factory=threading.Event)  # ends the run at the next step, keeping it
    cancel: threading.Event = field(default_factory=threading.Event)  # ends it too, keeping nothing
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    ticket: Ticket | None = None  # its place in the training slot's line

    def controlled_by(self, visitor: Visitor | None) -> bool:
        """Whether ``visitor`` may stop or cancel it (None: the process itself, e.g. its page closed)."""
        return visitor is None or visitor.acts_for(self.visitor)


@dataclass
class Job(OwnedJob):
    """A fine-tune."""

    config: FinetuneConfig = field(kw_only=True)
    dataset: ImageDataset | None = None
    result: FinetuneResult | None = None
    folder: Path | None = None
    data: str = ""  # the zip (or "mnist-sample") it reads: trained_on.json records its images


MAX_REVIEWS = 16  # finished runs whose misclassified images can still be looked at


@dataclass(frozen=True)
class RunReview:
    """What a finished run got wrong, kept after its dataset is gone: results plus small copies of the images."""

    visitor: Visitor
    results: ValidationResults
    thumbnails: dict[int, Image.Image]
    calibration: Calibration | None = None  # its confidence's temperature and calibration errors

    def mistakes(self, true: str | None = None, predicted: str | None = None) -> list[tuple[Image.Image, str]]:
        """(image, caption) of the misclassified validation images of one confusion-matrix cell (None: any
        class), most confident first."""
        # What was mistaken for what first: a gallery cuts a long caption at its end.
        return [(self.thumbnails[m.index], f"{self.results.classes[m.true]} seen as {self.results.classes[m.predicted]} "
                 f"({m.confidence:.0%}): {m.name}")
                for m in self.results.mistakes(true, predicted) if m.index in self.thumbnails]


class FinetuneJobs:
    """Fine-tunes take turns on one training slot (shared with the lab's live runs); a queued run
    starts by itself when its turn comes, and its events stream to whoever started it."""

    def __init__(self, registry: ModelRegistry, slot: TrainingSlot = TRAINING, *, prepare_frozen_parts: bool = False):
        self.registry = registry
        self.slot = slot
        # After a run whose frozen part ran on torch for want of a converted one, convert it in the background, in
        # its own turn on the slot, so the next run on that base reads it (the app: many visitors, few bases).
        self.prepare_frozen_parts = prepare_frozen_parts
        self.preparing: threading.Thread | None = None
        self.preparing_bases: threading.Thread | None = None  # prepare_bases's, at the app's start
        self._closed = threading.Event()  # close(): prepare nothing more
        self._lock = threading.Lock()
        self.active: Job | None = None  # the latest job started
        self._jobs: dict[str, Job] = {}  # waiting or training
        self._saving_to: set[Path] = set()  # folders of the jobs not done: a name is taken from the start
        self._reviews: OrderedDict[str, RunReview] = OrderedDict()  # the latest finished runs' results, by job id

    def position(self, job: Job) -> int:
        """0: training now (or finished); n: n trainings ahead of it in line."""
        return max(0, self.slot.position(job.ticket)) if job.ticket is not None else 0

    def start(self, data: str | Path | ImageDataset, config: FinetuneConfig, model_name: str | None = None,
              visitor: Visitor = LOCAL) -> Job:
        """Read the data, then queue the run for the training slot; it trains in a background thread.

        ``data`` is a zip path, 'mnist-sample', or a set already read (an inspection's fixed set). The new model is
        ``visitor``'s, saved under their name.
        """
        if not visitor.can_own:
            raise ServiceError("this page has no visitor id yet: reload it, then start again")
        job = Job(uuid.uuid4().hex, visitor=visitor, config=config)
        try:
            with self._lock:  # the name is reserved at once: a second run named the same hears so before waiting
                named = data.name if isinstance(data, ImageDataset) else data
                job.folder = self._new_model_folder(model_name, named, config.base, visitor, self._saving_to)
                self._saving_to.add(job.folder)
            job.dataset = (data if isinstance(data, ImageDataset) else mnist_sample() if str(data) == "mnist-sample"
                           else read_zip(data))
            job.data = str(data) if not isinstance(data, ImageDataset) else ""
            if not config.base.startswith("scratch:"):
                config.base = self.registry.base_source(config.base, visitor=visitor)
            if config.image_size is None:
                kind = job.dataset.kind
                config.image_size = own_input_size(config.base, kind) or IMAGE_SIZE.get(kind, IMAGE_SIZE["photo"])
        except BaseException:
            self._forget(job)
            job.done.set()
            raise
        with self._lock:
            job.ticket = self.slot.enter(f"the fine-tune {job.folder.name}")
            self.active = self._jobs[job.id] = job
        threading.Thread(target=self._run, args=(job,), name=f"finetune-{job.id[:8]}", daemon=True).start()
        return job

    def _forget(self, job: Job) -> None:
        with self._lock:
            self._jobs.pop(job.id, None)
            self._saving_to.discard(job.folder)

    @staticmethod
    def _new_model_folder(model_name: str | None, data: str | Path, base: str, visitor: Visitor = LOCAL,
                          taken: set[Path] = frozenset()) -> Path:
        """The store folder a run will save to; a model already there (or a run's, queued) is never replaced.

        A name the visitor typed must be free among their models; without one, the run is named after its
        data and base, numbered (``-2``, ``-3`` ...) past the names already taken.
        """
        if model_name and model_name.strip():
            name = model_name.strip()
            folder = model_folder(name, visitor)
            if folder.exists() or folder in taken:
                where = "the store" if visitor.shared else "your models"
                raise ServiceError(f"a model named {name!r} is already in {where}: choose another name")
            return folder
        stem = _slug(f"{_slug(Path(str(data)).stem)}-{base.split(':')[-1].split('/')[-1]}")
        for n in itertools.count(1):
            folder = model_folder(stem if n == 1 else f"{stem}-{n}", visitor)
            if not folder.exists() and folder not in taken:
                return folder

    def _run(self, job: Job) -> None:
        try:
            if not self.slot.wait_turn(job.ticket, stop=job.stop):
                return  # stopped while waiting in line: nothing trained, nothing saved
            lower_this_threads_priority()  # requests first: training takes the CPU they leave
            with access(job.visitor.hub_access()):
                job.result = finetune(job.dataset, job.config, on_event=job.events.put, stop=job.stop,
                                     cancel=job.cancel)
            if job.result.model is not None:  # finished, or stopped with what it had learned
                job.result.model.info.training["name"] = job.folder.name
                job.result.save(job.folder, overwrite=False)
                write_record(job.folder, job.dataset, job.data, job.config.val_fraction, job.config.seed)
                self._keep_review(job)
                self._prepare_frozen_part(job)
                if self.registry.background_choice and self.registry.precision == "auto":  # its first answer is quick
                    choose_ahead(str(job.folder), self.registry.device, self.registry.engine)
        except ResNetHubError as e:
            job.error = str(e)
        except Exception as e:  # noqa: BLE001 - the UI must hear about any failure, and the app keeps serving
            logger.exception("fine-tune job %s failed", job.id)
            job.error = f"training failed: {type(e).__name__}: {e}"
        finally:
            self.slot.leave(job.ticket)
            self._forget(job)
            job.done.set()
            job.events.put(None)

    def _prepare_frozen_part(self, job: Job) -> None:
        model = job.result.model
        if not (self.prepare_frozen_parts and job.result.frozen_part == "torch" and job.config.cache_engine == "auto"):
            return

        def prepare() -> None:
            try:
                what = f"preparing the frozen part of {job.folder.name}'s base for the next run"
                with self.slot.turn(what) as mine, background_conversion() as may:
                    if mine and may and not self._closed.is_set():
                        lower_this_threads_priority()
                        note = prepare_frozen_part(model, job.dataset.kind, job.config.precision)
                        logger.info("after %s: %s", job.folder.name, note or "its frozen part was already prepared")
            except Exception:  # noqa: BLE001 - a failed preparation costs the next run speed, never the app
                if not EXITING.is_set():
                    logger.exception("preparing the frozen part after %s failed", job.folder.name)

        self.preparing = start_preparer(prepare, "resnet-hub-prepare")

    def prepare_bases(self, choices: Sequence[str], image_size: int) -> None:
        """In the background, convert the frozen parts that a first fine-tune of a small photo zip at ``image_size``
        on each of ``choices`` would use (:func:`~resnet_hub.frozen.prepare_base`), so that even the first
        visitor's run reads them: the app does this at start for its default bases, after their starters. Each
        base waits for a free slot and takes one turn on it: a visitor who starts a run meanwhile waits at most for
        the base being prepared."""

        def prepare() -> None:
            lower_this_threads_priority()
            for choice in choices:
                if self._stopping():
                    return
                try:
                    source = self.registry.base_source(choice)  # a starter is built first
                    while not self.slot.wait_until_free(timeout=0.5):
                        if self._stopping():
                            return
                    what = f"preparing {DISPLAY.get(choice, choice)}'s frozen parts for fine-tunes"
                    with self.slot.turn(what) as mine, background_conversion() as may:
                        if mine and may:
                            notes = prepare_base(source, image_size)
                            logger.info("prepared %s for fine-tunes: %s", choice, "; ".join(notes) or "already done")
                except Exception:  # noqa: BLE001 - a failed preparation costs the first runs speed, never the app
                    if not EXITING.is_set():
                        logger.exception("preparing the frozen parts of %s failed", choice)

        self.preparing_bases = start_preparer(prepare, "resnet-hub-prepare-bases")

    def _stopping(self) -> bool:
        return self._closed.is_set() or EXITING.is_set()

    def close(self, timeout_s: float = 120) -> None:
        """Prepare nothing more, and wait (at most ``timeout_s``) for a preparation under way: what an app that is
        closed but whose process goes on (a test's) does, so no conversion outlives it."""
        self._closed.set()
        for thread in (self.preparing_bases, self.preparing):
            if thread is not None:
                thread.join(timeout_s)

    def stream(self, job: Job, interval_s: float = 0.5) -> Iterator[list[Event]]:
        """Batches of new events, at most every ``interval_s``, until the job ends."""
        finished = False
        while not finished:
            batch = []
            deadline = time.monotonic() + interval_s
            while time.monotonic() < deadline:
                try:
                    event = job.events.get(timeout=max(0.01, deadline - time.monotonic()))
                except queue.Empty:
                    continue
                if event is None:
                    finished = True
                    break
                batch.append(event)
            yield batch

    def _unfinished(self, job_id: str | None, visitor: Visitor | None = None) -> Job | None:
        """The job ``job_id`` names, while it has not finished, if ``visitor`` may control it."""
        job = self._jobs.get(job_id or "") or self.active
        if job is None or job.id != job_id or job.done.is_set() or not job.controlled_by(visitor):
            return None
        return job

    def stop(self, job_id: str | None, visitor: Visitor | None = None) -> bool:
        """End the run at the next step, keeping what it learned; only for its owner (``visitor``)."""
        job = self._unfinished(job_id, visitor)
        if job is None:
            return False
        job.stop.set()
        return True

    def _keep_review(self, job: Job) -> None:
        review = RunReview(job.visitor, job.result.results, mistake_thumbnails(job.dataset, job.result.results),
                           job.result.calibration)
        with self._lock:
            self._reviews[job.id] = review
            while len(self._reviews) > MAX_REVIEWS:
                self._reviews.popitem(last=False)

    def review(self, job_id: str | None, visitor: Visitor | None = None) -> RunReview | None:
        """A finished run's validation results and its misclassified images (the latest runs only); only for
        the visitor who started it, when one is given."""
        with self._lock:
            review = self._reviews.get(job_id or "")
        if review is None:
            return None
        if visitor is not None and not review.visitor.shared and not visitor.acts_for(review.visitor):
            return None  # another visitor's run: its images are theirs
        return review

    def cancel(self, job_id: str | None, visitor: Visitor | None = None) -> bool:
        """End the run at the next step and keep nothing (Stop keeps what it learned); only for its owner."""
        job = self._unfinished(job_id, visitor)
        if job is None:
            return False
        job.cancel.set()
        job.stop.set()  # a run still waiting in line leaves it too
        return True




def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:80]
    return slug or "model"


