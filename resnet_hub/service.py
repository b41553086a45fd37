"""What the app's buttons do, as plain Python: usable and tested without Gradio.

:class:`ModelRegistry` decides which weights serve (the ImageNet pair from the
Hub, or the offline starter digit models), loads each model once and shares
it. :class:`FinetuneJobs` runs one fine-tune at a time in a background thread
and streams its events; training always works on its own copy of the weights.
"""

from __future__ import annotations

import logging
import queue
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from .data import ImageDataset, mnist_sample, read_zip, stratified_split
from .errors import ResNetHubError, SourceError, WeightsNotFoundError
from .finetune import Event, FinetuneConfig, FinetuneResult, finetune
from .images import center_digit, load_image
from .predict import Comparison, Prediction, Predictor, compare
from .store import STARTER_ARCHS, build_starter, is_model_folder, local_models, model_folder, starter_folder
from .hub import DEFAULT_SOURCES, resolve

logger = logging.getLogger(__name__)

DISPLAY = {"resnet18": "ResNet-18", "resnet50": "ResNet-50"}
STORE_PREFIX = "local:"
# What a visitor may type as a model: a Hub repo id (org/name, optionally @revision), never a server path.
_TYPED_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@[\w.-]+)?$")


class ServiceError(ResNetHubError, ValueError):
    """A request the app cannot serve, with what to do instead."""


@dataclass(frozen=True)
class Classification:
    prediction: Prediction
    latency_ms: float
    heatmap: Image.Image | None
    model: str
    note: str = ""


class ModelRegistry:
    """The models the app offers; each loaded once, on first use, and shared by all requests.

    >>> registry = ModelRegistry()                        # doctest: +SKIP
    >>> registry.classify("cat.jpg", "resnet50").prediction.top1   # doctest: +SKIP
    'tabby'
    """

    def __init__(self, device: str = "auto", precision: str = "auto", *, check_hub: bool = True):
        self.device, self.precision = device, precision
        self._predictors: dict[str, Predictor] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.offline_reason: str | None = None
        if check_hub:
            self._check_default_weights()

    # -- which weights -------------------------------------------------------

    def _check_default_weights(self) -> None:
        """Fetch (or find in the cache) the ImageNet pair; fall back to the starters if we can't."""
        try:
            for source in DEFAULT_SOURCES.values():
                resolve(source)
        except (WeightsNotFoundError, SourceError) as e:
            self.offline_reason = str(e)
            logger.warning("default ImageNet weights unavailable, using the starter digit models: %s", e)

    @property
    def uses_starters(self) -> bool:
        return self.offline_reason is not None

    @property
    def banner(self) -> str:
        if not self.uses_starters:
            names = " and ".join(f"`{s}`" for s in DEFAULT_SOURCES.values())
            return f"Weights: {names} (ImageNet-1k, 1000 classes) from the Hugging Face Hub."
        return (
            "**Offline: the ImageNet weights are not reachable** "
            f"({', '.join(DEFAULT_SOURCES.values())} are neither on the Hub nor in the local cache). "
            "ResNet-18 and ResNet-50 are the *starter digit classifiers* instead, trained here on 5,000 "
            "real MNIST digits: draw a digit, or fine-tune your own model. "
            "They are built on first use (about half a minute for ResNet-18, under two minutes for ResNet-50 on two "
            "CPU cores) and then kept."
        )

    def default_source(self, arch: str) -> str:
        return str(starter_folder(arch)) if self.uses_starters else DEFAULT_SOURCES[arch]

    def choices(self) -> list[tuple[str, str]]:
        """(label, value) pairs for a chooser: the default pair, then every model in the local store."""
        kind = "starter digits" if self.uses_starters else "ImageNet"
        out = [(f"{DISPLAY[a]} ({kind})", a) for a in STARTER_ARCHS]
        for folder in local_models():
            if not folder.name.startswith("starter-"):
                out.append((f"{folder.name} (fine-tuned here)", f"{STORE_PREFIX}{folder.name}"))
        return out

    def source_for(self, choice: str) -> str:
        choice = (choice or "").strip()
        if not choice:
            raise ServiceError("choose a model first")
        if choice in STARTER_ARCHS:
            return self.default_source(choice)
        if choice.startswith(STORE_PREFIX):
            folder = model_folder(choice[len(STORE_PREFIX):])
            if not is_model_folder(folder):
                raise ServiceError(f"{choice[len(STORE_PREFIX):]} is not in the local model store any more")
            return str(folder)
        # A Hub repo id typed in by the user. resolve() would also load any folder on the server,
        # and its errors would tell a visitor which paths exist: the app serves the Hub and its store only.
        if not _TYPED_REPO_ID.match(choice) or ".." in choice or Path(choice).expanduser().exists():
            raise ServiceError(
                f"{choice!r} is not a model here: pick one from the list, or type a Hub repo id such as "
                f"'timm/resnet50.a1_in1k'"
            )
        return choice

    def _display_name(self, choice: str) -> str | None:
        """What the UI calls a model served from the store: by name, not by its path on the server."""
        if self.uses_starters and choice in STARTER_ARCHS:
            return f"{DISPLAY[choice]} (starter digits)"
        if choice.startswith(STORE_PREFIX):
            return choice[len(STORE_PREFIX):]
        return None

    # -- serving ---------------------------------------------------------------

    def predictor(self, choice: str, on_event: Callable[[Event], None] | None = None) -> Predictor:
        """The shared Predictor for ``choice``, loading it (or building a starter) on first use."""
        source = self.source_for(choice)
        with self._guard:
            if source in self._predictors:
                return self._predictors[source]
            lock = self._locks.setdefault(source, threading.Lock())
        with lock:  # one load per model, even when many requests ask at once
            if source not in self._predictors:
                if self.uses_starters and choice in STARTER_ARCHS:
                    build_starter(choice, on_event=on_event)
                predictor = Predictor(source, self.device, self.precision)
                predictor.name = self._display_name(choice) or predictor.name
                self._predictors[source] = predictor
            return self._predictors[source]

    def base_source(self, choice: str, on_event: Callable[[Event], None] | None = None) -> str:
        """The weights source to fine-tune from for ``choice``, building a starter if it is one."""
        if self.uses_starters and choice in STARTER_ARCHS:
            build_starter(choice, on_event=on_event)
        return self.source_for(choice)

    def classify(self, image: Any, choice: str, top_k: int = 5, *, heatmap: bool = True,
                 on_event: Callable[[Event], None] | None = None) -> Classification:
        _require_image(image)  # before any model is loaded or built
        predictor = self.predictor(choice, on_event)
        picture, note = self._prepare(image, predictor)
        start = time.perf_counter()
        prediction = predictor.classify(picture, top_k=min(top_k, predictor.num_classes))
        latency = (time.perf_counter() - start) * 1000
        overlay = predictor.gradcam(picture, prediction.class_ids[0])[0] if heatmap else None
        return Classification(prediction, latency, overlay, predictor.name, note)

    def compare(self, image: Any, choices: tuple[str, str] = ("resnet18", "resnet50"), top_k: int = 5,
                runs: int = 10, on_event: Callable[[Event], None] | None = None) -> Comparison:
        _require_image(image)
        predictors = [self.predictor(c, on_event) for c in choices]
        picture, _ = self._prepare(image, predictors[0])
        return compare(picture, predictors, top_k=min(top_k, *(p.num_classes for p in predictors)), runs=runs)

    @staticmethod
    def _prepare(image: Any, predictor: Predictor) -> tuple[Image.Image, str]:
        picture = load_image(image, name="the uploaded file")
        if predictor.model.info.training.get("kind") == "digits":
            return center_digit(picture), "digit model: the image was centred and scaled the way MNIST digits are"
        return picture, ""


# ---------------------------------------------------------------------------
# Fine-tuning jobs


@dataclass
class Job:
    id: str
    config: FinetuneConfig
    dataset: ImageDataset | None = None
    events: queue.Queue = field(default_factory=queue.Queue)
    stop: threading.Event = field(default_factory=threading.Event)
    result: FinetuneResult | None = None
    error: str | None = None
    folder: Path | None = None
    done: threading.Event = field(default_factory=threading.Event)


class FinetuneJobs:
    """One fine-tune at a time per app; its events stream to whoever started it."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry
        self._lock = threading.Lock()
        self.active: Job | None = None

    def start(self, data: str | Path, config: FinetuneConfig, model_name: str | None = None) -> Job:
        """Read the data, then train in a background thread. ``data`` is a zip path or 'mnist-sample'.

        The app's one run is reserved first, so a second visitor hears "wait" at once,
        before any zip is read or starter built.
        """
        with self._lock:
            if self.active is not None and not self.active.done.is_set():
                raise ServiceError("another fine-tune run is in progress on this app: wait for it to finish, then start again")
            job = self.active = Job(uuid.uuid4().hex, config)
        try:
            job.dataset = mnist_sample() if str(data) == "mnist-sample" else read_zip(data)
            name = model_name or f"{_slug(Path(str(data)).stem)}-{config.base.split(':')[-1].split('/')[-1]}"
            job.folder = model_folder(_slug(name))
            # The app has no batch-size control: a dataset with fewer training images than one
            # batch trains in one smaller batch per step instead of failing validation.
            train_images = len(stratified_split(job.dataset, config.val_fraction, seed=config.seed)[0])
            config.batch_size = max(1, min(config.batch_size, train_images))
            if not config.base.startswith("scratch:"):
                config.base = self.registry.base_source(config.base)
        except BaseException:
            job.done.set()  # frees the reservation
            raise
        threading.Thread(target=self._run, args=(job,), name=f"finetune-{job.id[:8]}", daemon=True).start()
        return job

    def _run(self, job: Job) -> None:
        try:
            job.result = finetune(job.dataset, job.config, on_event=job.events.put, stop=job.stop)
            if not job.result.stopped:
                job.result.model.info.training["name"] = job.folder.name
                job.result.save(job.folder, overwrite=True)
        except ResNetHubError as e:
            job.error = str(e)
        except Exception as e:  # noqa: BLE001 - the UI must hear about any failure, and the app keeps serving
            logger.exception("fine-tune job %s failed", job.id)
            job.error = f"training failed: {type(e).__name__}: {e}"
        finally:
            job.done.set()
            job.events.put(None)

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

    def stop(self, job_id: str | None) -> bool:
        job = self.active
        if job is None or job.id != job_id or job.done.is_set():
            return False
        job.stop.set()
        return True


def zip_model_folder(folder: Path, out_dir: Path | None = None) -> Path:
    """A zip of a model folder for download, written under a temporary name and renamed.

    One zip per model name in one folder (the system's temporary directory by
    default), so repeated downloads do not pile up on disk.
    """
    out_dir = Path(out_dir or Path(tempfile.gettempdir()) / "resnet-hub-downloads")
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / f".{folder.name}.{uuid.uuid4().hex}.partial"
    tmp = Path(shutil.make_archive(str(partial), "zip", root_dir=folder.parent, base_dir=folder.name))
    final = out_dir / f"{folder.name}.zip"
    tmp.replace(final)
    return final


def _require_image(image: Any) -> None:
    if image is None:
        raise ServiceError("no image: upload one, take a webcam picture, paste one or draw a digit")


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:80]
    return slug or "model"


