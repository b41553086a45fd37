"""What the app's buttons do, as plain Python: usable and tested without Gradio.

:class:`ModelRegistry` decides which weights serve (the ImageNet pair from the
Hub, or the offline starter digit models), loads each model once and shares
it. :class:`FinetuneJobs` runs one fine-tune at a time in a background thread
and streams its events; training always works on its own copy of the weights.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import queue
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from .data import ImageDataset, mnist_sample, read_zip, stratified_split
from .errors import ResNetHubError, SourceError, WeightsNotFoundError
from .finetune import Event, FinetuneConfig, FinetuneResult, finetune, prepare_base, prepare_frozen_part
from .images import load_image, looks_like_photo
from .layouts import CONFIG_NAME
from .results import ValidationResults, mistake_thumbnails
from .predict import Comparison, Prediction, Predictor, compare
from .store import (
    STARTER_ARCHS,
    build_starter,
    is_model_folder,
    local_models,
    model_folder,
    starter_folder,
    stored_model,
)
from .hub import DEFAULT_SOURCES, HubAccess, access, resolve
from .owners import Visitor
from .training_slot import TRAINING, Ticket, TrainingSlot, lower_this_threads_priority

logger = logging.getLogger(__name__)

DISPLAY = {"resnet18": "ResNet-18", "resnet50": "ResNet-50"}
STORE_PREFIX = "local:"
# What a visitor may type as a model: a Hub repo id (org/name, optionally @revision), never a server path.
_TYPED_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@[\w.-]+)?$")
PHOTO_TO_DIGITS = "This looks like a photo, not a digit"
NOTHING_TO_SEE = "This image shows nothing to recognise"
_SMALLEST_SIDE = 8  # px: a picture smaller than this shows no shape (MNIST's strokes alone are 2-3 px wide)
_ONE_SHADE = 8  # of 255 grey levels: a picture whose darkest and lightest pixels are this close is blank
COMPARE_RUNS = 30  # timed batch-1 runs per model, interleaved, after warm-up
# Loaded models beside the always-loaded defaults (the ImageNet pair or the starters), least recently used out:
# every typed repo id would otherwise stay in memory for the life of the process.
MAX_LOADED_MODELS = 6
MAX_LOADED_BYTES = 1_000 * 10**6  # parameters and buffers, as loaded (ResNet-50 in fp32: ~100 MB)
LOCAL = Visitor.local()
_UNCHECKED = object()
# The app's input size for a run that names none, by the data's kind; a model fine-tuned here on the same kind
# keeps its own (a 24 px digit starter fed 32 px digits scored 66.8% where it had 98.3%).
IMAGE_SIZE = {"digits": 32, "photo": 128}

# The frozen parts converted in the background (OpenVINO, NNCF: threads of their own in C++) must not be cut off
# by the interpreter's exit, nor outlive it in a thread that converted: the process then aborts ("terminate called
# without an active exception", exit 134; seen on Ctrl-C while the app prepared its bases). Exit waits for the
# conversion under way, converts nothing more, and lets each thread that prepares end.
_EXITING = threading.Event()
_CONVERTING = threading.Lock()
_PREPARERS: set[threading.Thread] = set()


@contextmanager
def _background_conversion() -> Iterator[bool]:
    """Held while a background thread converts; yields False once the interpreter is exiting: convert nothing."""
    with _CONVERTING:
        yield not _EXITING.is_set()


def _start_preparer(target: Callable[[], None], name: str) -> threading.Thread:
    def run() -> None:
        try:
            target()
        finally:
            _PREPARERS.discard(threading.current_thread())

    thread = threading.Thread(target=run, name=name, daemon=True)
    _PREPARERS.add(thread)
    thread.start()
    return thread


@atexit.register
def _let_the_preparers_finish(timeout_s: float = 120, join_s: float = 2) -> None:
    _EXITING.set()
    if _CONVERTING.acquire(timeout=timeout_s):
        _CONVERTING.release()
    for thread in list(_PREPARERS):  # one that only waits (for a starter, for the slot) is left after join_s
        thread.join(join_s)


class ServiceError(ResNetHubError, ValueError):
    """A request the app cannot serve, with what to do instead."""


@dataclass(frozen=True)
class Classification:
    prediction: Prediction
    latency_ms: float
    heatmap: Image.Image | None
    model: str
    note: str = ""


@dataclass
class StarterBuild:
    """One offline starter model: queued, building (with progress) or ready, as measured here."""

    arch: str
    state: str = "queued"  # "queued", "building", "ready", "failed"
    step: int = 0
    total_steps: int = 0
    eta_s: float | None = None
    seconds: float | None = None  # how long its training took on this machine
    accuracy: float | None = None  # held-out accuracy
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    def describe(self) -> str:
        name = f"{DISPLAY[self.arch]} starter"
        if self.state == "ready":
            measured = f"trained on this machine in {self.seconds:.0f} s" if self.seconds is not None else "stored"
            accuracy = f", {self.accuracy:.1%} held-out accuracy" if self.accuracy is not None else ""
            return f"{name}: ready ({measured}{accuracy})"
        if self.state == "building":
            left = f", about {self.eta_s:.0f} s left (measured on this machine as it trains)" if self.eta_s else ""
            return f"{name}: training now, {self.fraction:.0%}{left}"
        if self.state == "failed":
            return f"{name}: could not be built ({self.error})"
        return f"{name}: waits its turn to train"


class StarterBuilds:
    """The offline starters, trained one after the other in one background thread.

    The app starts it at launch, so that the first click rarely waits; a request for a
    starter that is not ready yet waits for it and watches its progress.
    """

    def __init__(self, slot: TrainingSlot = TRAINING):
        self.slot = slot
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._first: str | None = None
        self._wanted: set[str] = set()
        self.builds = {arch: self._from_store(arch) for arch in STARTER_ARCHS}

    @staticmethod
    def _from_store(arch: str) -> StarterBuild:
        build = StarterBuild(arch)
        folder = starter_folder(arch)
        if is_model_folder(folder):
            record = _model_record(folder)  # the model itself is checked when it loads; this only fills the banner
            build.seconds = (record.get("training") or {}).get("seconds")
            build.accuracy = (record.get("metrics") or {}).get("accuracy")
            build.state = "ready"
            build.done.set()
        return build

    @property
    def building(self) -> bool:
        return any(not b.done.is_set() for b in self.builds.values())

    def status_text(self) -> str:
        return " · ".join(b.describe() for b in self.builds.values())

    def start(self, first: str | None = None, *, only: bool = False) -> None:
        """Train every starter not yet stored (``only``: just ``first``), ``first`` first, in a background thread."""
        with self._lock:
            self._wanted |= {first} if only and first else set(self.builds)
            for arch, build in self.builds.items():
                if build.state == "ready" and not is_model_folder(starter_folder(arch)):
                    self.builds[arch] = StarterBuild(arch)  # deleted from the store since: train it again
                elif build.state == "failed":
                    self.builds[arch] = StarterBuild(arch)
            if first is not None:
                self._first = first
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="starter-builds", daemon=True)
                self._thread.start()

    def _next(self) -> StarterBuild | None:
        with self._lock:
            pending = sorted((b for b in self.builds.values() if not b.done.is_set() and b.arch in self._wanted),
                             key=lambda b: b.arch != self._first)
            if not pending:
                self._thread = None  # checked and cleared under the lock: a later start() begins a new thread
            return pending[0] if pending else None

    def _run(self) -> None:
        while (build := self._next()) is not None:
            build.state = "building"

            def on_event(event: Event, build: StarterBuild = build) -> None:
                build.step, build.total_steps, build.eta_s = event.step, event.total_steps, event.eta_s

            try:
                # The app's one training slot: a lab run started meanwhile waits its turn, and says so.
                with self.slot.turn(f"the {DISPLAY[build.arch]} starter's build"):
                    lower_this_threads_priority()
                    build_starter(build.arch, on_event=on_event)
                stored = self._from_store(build.arch)
                build.seconds, build.accuracy, build.state = stored.seconds, stored.accuracy, "ready"
            except Exception as e:  # noqa: BLE001 - a failed build is shown and retried on the next request
                logger.exception("building the %s starter failed", build.arch)
                build.state, build.error = "failed", f"{type(e).__name__}: {e}"
            finally:
                build.done.set()

    def wait(self, arch: str, on_progress: Callable[[StarterBuild], None] | None = None, poll_s: float = 0.5,
             *, only: bool = False) -> None:
        """Return once ``arch``'s starter is stored, training it first if no one has.

        ``only``: train just this one (the CLI, which exits when it has its answer).
        """
        build = self.builds[arch]
        if build.state != "ready" or not is_model_folder(starter_folder(arch)):
            self.start(first=arch, only=only)
            build = self.builds[arch]
        while not build.done.wait(poll_s):
            if on_progress is not None:
                on_progress(build)
        if build.state == "failed":
            raise ServiceError(f"the {DISPLAY[arch]} starter model could not be built: {build.error}")


class ModelRegistry:
    """The models the app offers; each loaded once, on first use, and shared by the requests that may use it.

    The defaults (the ImageNet pair, or offline the starters) stay loaded; other models live in an
    LRU cache bounded by count and bytes (``max_models``, ``max_bytes``). A visitor (see
    :class:`~resnet_hub.owners.Visitor`) sees the shared models and their own; a Hub id they type is
    fetched with their access, and a model fetched with a visitor's own token serves only them.

    >>> registry = ModelRegistry()                        # doctest: +SKIP
    >>> registry.classify("cat.jpg", "resnet50").prediction.top1   # doctest: +SKIP
    'tabby'
    """

    def __init__(self, device: str = "auto", precision: str = "auto", *, check_hub: bool = True,
                 compile: bool = False, allow_paths: bool = False, max_models: int = MAX_LOADED_MODELS,
                 max_bytes: int = MAX_LOADED_BYTES, engine: str = "auto"):
        # allow_paths: local folders are models too (the command line); never for the app's visitors.
        self.device, self.precision, self.compile, self.allow_paths = device, precision, compile, allow_paths
        self.engine = engine  # "auto", "torch" or "openvino" (see resnet_hub.engines)
        self.max_models, self.max_bytes = max_models, max_bytes
        self._predictors: OrderedDict[tuple[str, str | None], Predictor] = OrderedDict()  # least recently used first
        self._sizes: dict[tuple[str, str | None], int] = {}
        self._locks: dict[tuple[str, str | None], threading.Lock] = {}  # only while a model loads
        self._guard = threading.Lock()
        self._offline_reason: str | None | object = _UNCHECKED
        self.starters = StarterBuilds()
        if check_hub:
            self._check_default_weights()

    # -- which weights -------------------------------------------------------

    def _check_default_weights(self) -> None:
        """Fetch (or find in the cache) the ImageNet pair; fall back to the starters if we can't."""
        self._offline_reason = None
        try:
            with access(HubAccess(token=False)):  # public repos: no one's token is needed, so none is sent
                for source in DEFAULT_SOURCES.values():
                    resolve(source)
        except (WeightsNotFoundError, SourceError) as e:
            self._offline_reason = str(e)
            logger.warning("default ImageNet weights unavailable, using the starter digit models: %s", e)

    @property
    def offline_reason(self) -> str | None:
        """Why the ImageNet pair cannot serve (None when it can); checked once, on first need."""
        if self._offline_reason is _UNCHECKED:
            self._check_default_weights()
        return self._offline_reason

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
            "real MNIST digits: **they know only the digits 0-9**, so draw a digit or try a digit example; "
            "a photo gets a meaningless answer. Or fine-tune your own model.\n\n"
            + self.starters.status_text()
        )

    def start_building_starters(self) -> None:
        """Offline: build the starters now, in the background, so the first click rarely waits."""
        if self.uses_starters:
            self.starters.start()

    def default_source(self, arch: str) -> str:
        return str(starter_folder(arch)) if self.uses_starters else DEFAULT_SOURCES[arch]

    def choices(self, visitor: Visitor = LOCAL) -> list[tuple[str, str]]:
        """(label, value) pairs for a chooser: the default pair, then the models of the store ``visitor`` may use."""
        kind = "starter digits" if self.uses_starters else "ImageNet"
        out = [(f"{DISPLAY[a]} ({kind})", a) for a in STARTER_ARCHS]
        for folder in local_models(visitor):
            if not folder.name.startswith("starter-"):
                out.append((f"{folder.name} (fine-tuned here)", f"{STORE_PREFIX}{folder.name}"))
        return out

    def source_for(self, choice: str, visitor: Visitor = LOCAL) -> str:
        """The weights source a chooser's value (or a typed name) stands for, for ``visitor``.

        Accepted: the short names (the ImageNet pair, or offline the starters), store models
        with or without ``local:``, and Hub repo ids; local folders only with ``allow_paths``
        (the command line, never a visitor of the app: see ``allow_paths``).
        """
        choice = (choice or "").strip()
        if not choice:
            raise ServiceError("choose a model first")
        if choice in STARTER_ARCHS:
            return self.default_source(choice)
        if choice.startswith(STORE_PREFIX):
            name = choice[len(STORE_PREFIX):]
            model_folder(name)  # a malformed name is said as such
            if (folder := stored_model(name, visitor)) is None:
                if visitor.shared:
                    raise ServiceError(f"{name} is not in the local model store any more")
                raise ServiceError(f"{name} is not one of your models (or it was removed after its retention "
                                   f"time): pick one from the list")
            return str(folder)
        if (folder := stored_model(choice, visitor)) is not None:
            return str(folder)  # a store name typed without "local:", as the choosers list it
        if self.allow_paths and ("/" in choice or choice.startswith((".", "~")) or Path(choice).expanduser().exists()):
            return choice  # the CLI's user may name any folder on their machine; load() says what is wrong with it
        # A Hub repo id typed in by the user. resolve() would also load any folder on the server,
        # and its errors would tell a visitor which paths exist: the app serves the Hub and its store only.
        if not _TYPED_REPO_ID.match(choice) or ".." in choice or Path(choice).expanduser().exists():
            stored = ", ".join(f.name for f in local_models(visitor)) or "none yet"
            if self.allow_paths:
                raise ServiceError(
                    f"{choice!r} is not a model: give a short name ({', '.join(STARTER_ARCHS)}), the name of a model "
                    f"in the local store ({stored}), a Hub repo id such as 'timm/resnet50.a1_in1k', or an existing folder"
                )
            raise ServiceError(
                f"{choice!r} is not a model here: pick one from the list, type the name of a model in the store "
                f"({stored}), or a Hub repo id such as 'timm/resnet50.a1_in1k'"
            )
        return choice

    def starter_note(self, choice: str) -> str:
        """Offline, what a short name serves instead of the ImageNet weights (empty when online)."""
        choice = (choice or "").strip()
        if choice not in STARTER_ARCHS or not self.uses_starters:
            return ""
        return (f"offline: {DEFAULT_SOURCES[choice]} is neither on the Hub nor in the local cache, so {choice} is the "
                f"starter digit classifier {starter_folder(choice).name} (it knows only the digits 0-9)")

    def _display_name(self, choice: str, visitor: Visitor = LOCAL) -> str | None:
        """What the UI calls a model served from the store: by name, not by its path on the server."""
        if self.uses_starters and choice in STARTER_ARCHS:
            return f"{DISPLAY[choice]} (starter digits)"
        choice = choice.strip()
        if choice.startswith(STORE_PREFIX):
            return choice[len(STORE_PREFIX):]
        return choice if stored_model(choice, visitor) is not None else None

    # -- serving ---------------------------------------------------------------

    def predictor(self, choice: str, on_progress: Callable[[StarterBuild], None] | None = None,
                  visitor: Visitor = LOCAL) -> Predictor:
        """The shared Predictor for ``choice``, loading it (or waiting for its starter) on first use."""
        source = self.source_for(choice, visitor)
        shared_key = (source, None)
        # A Hub model fetched with a visitor's own token may be private: it serves that visitor only.
        key = (source, visitor.cache_key) if _is_hub_id(source) else shared_key
        with self._guard:
            for k in dict.fromkeys((shared_key, key)):
                if k in self._predictors:
                    self._predictors.move_to_end(k)
                    return self._predictors[k]
            lock = self._locks.setdefault(key, threading.Lock())
        try:
            with lock:  # one load per model, even when many requests ask at once
                with self._guard:
                    if key in self._predictors:
                        return self._predictors[key]
                if self.uses_starters and choice in STARTER_ARCHS:
                    self.starters.wait(choice, on_progress)
                with access(visitor.hub_access()):
                    predictor = Predictor(source, self.device, self.precision, engine=self.engine, compile=self.compile)
                predictor.name = self._display_name(choice, visitor) or predictor.name
                with self._guard:
                    self._keep(key, predictor)
                return predictor
        finally:
            with self._guard:
                if self._locks.get(key) is lock and not lock.locked():
                    del self._locks[key]  # the table holds only the loads in progress

    def _keep(self, key: tuple[str, str | None], predictor: Predictor) -> None:
        """Cache ``predictor``; evict the least recently used of the others past the count or byte bound."""
        self._predictors[key] = predictor
        self._sizes[key] = _model_bytes(predictor)
        pinned = self._pinned()
        while True:
            evictable = [k for k in self._predictors if k[0] not in pinned]
            held = sum(self._sizes[k] for k in evictable)
            if len(evictable) <= self.max_models and (held <= self.max_bytes or len(evictable) <= 1):
                return
            del self._predictors[evictable[0]], self._sizes[evictable[0]]  # the new one is last: never it

    def _pinned(self) -> set[str]:
        return set(DEFAULT_SOURCES.values()) | {str(starter_folder(a)) for a in STARTER_ARCHS}

    def loaded(self) -> dict[str, int]:
        """What is held now: models loaded, their bytes, and per-model load locks (for tests and the log)."""
        with self._guard:
            return {"models": len(self._predictors), "bytes": sum(self._sizes.values()), "locks": len(self._locks)}

    def pending_starter(self, choice: str) -> StarterBuild | None:
        """The starter build ``choice`` would wait for, or None when it serves at once."""
        choice = (choice or "").strip()
        if self.uses_starters and choice in STARTER_ARCHS and not self.starters.builds[choice].done.is_set():
            return self.starters.builds[choice]
        return None

    def base_source(self, choice: str, on_progress: Callable[[StarterBuild], None] | None = None,
                    visitor: Visitor = LOCAL) -> str:
        """The weights source to fine-tune from for ``choice``, waiting for its starter if it is one.

        A Hub id is fetched here, with ``visitor``'s access, so a refusal (private, gated, oversize) comes
        before any data is read or a run is queued.
        """
        if self.uses_starters and (choice or "").strip() in STARTER_ARCHS:
            self.starters.wait(choice.strip(), on_progress)
        source = self.source_for(choice, visitor)
        if _is_hub_id(source):
            with access(visitor.hub_access()):
                resolve(source)
        return source

    def classify(self, image: Any, choice: str, top_k: int | None = 5, *, heatmap: bool = True,
                 on_progress: Callable[[StarterBuild], None] | None = None,
                 image_name: str | None = "the uploaded file", visitor: Visitor = LOCAL) -> Classification:
        """Top-k of one image (an upload, a path, a drawing), with what the visitor should know about it.

        The app's Classify button and the CLI's ``classify`` both come here: one code path.
        ``top_k=None``: 5, or every class when the model has fewer.
        """
        _require_image(image)  # before any model is loaded or built
        start = time.perf_counter()
        if self.pending_starter(choice) is not None:  # a bad image is said at once, not after the build
            picture = load_image(image, name=image_name)
            predictor = self.predictor(choice, on_progress, visitor)
            start = time.perf_counter()
        else:  # the model says how small a large JPEG may be decoded (Predictor.decode)
            predictor = self.predictor(choice, on_progress, visitor)
            start = time.perf_counter()
            picture = predictor.decode(image, image_name)[0]
        top_k = None if top_k is None else min(top_k, predictor.num_classes)
        if heatmap:  # one forward pass gives both where that is exact (Predictor.cam_is_exact)
            prediction, overlay = predictor.classify_with_heatmap(picture, top_k)
        else:
            prediction, overlay = predictor.classify(picture, top_k=top_k), None
        latency = (time.perf_counter() - start) * 1000
        return Classification(prediction, latency, overlay, predictor.name, input_note(picture, predictor))

    def compare(self, image: Any, choices: Sequence[str] = ("resnet18", "resnet50"), top_k: int | None = 5,
                runs: int = COMPARE_RUNS, on_progress: Callable[[StarterBuild], None] | None = None,
                image_name: str | None = "the uploaded file", visitor: Visitor = LOCAL) -> Comparison:
        _require_image(image)
        picture = load_image(image, name=image_name)
        predictors = [self.predictor(c, on_progress, visitor) for c in choices]
        fewest = min(p.num_classes for p in predictors)
        result = compare(picture, predictors, top_k=min(top_k or 5, fewest), runs=runs)
        return dataclasses.replace(result, notes=result.notes + input_notes(picture, predictors))


def own_input_size(source: str, kind: str) -> int | None:
    """The input size of ``source`` when it is a model fine-tuned here on data of ``kind`` (a starter, or a model of
    the store), read from its config.json; None for any other source (a Hub id, a base trained elsewhere)."""
    record = _model_record(source)
    if (record.get("training") or {}).get("kind") != kind:
        return None
    size = (record.get("preprocessing") or {}).get("input_size")
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def _model_record(folder: str | Path) -> dict[str, Any]:
    """A model folder's config.json as read, without loading the model; {} when it has none that reads as one."""
    try:
        record = json.loads((Path(folder) / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _is_hub_id(source: str) -> bool:
    return bool(_TYPED_REPO_ID.match(source)) and not Path(source).expanduser().exists()


def _model_bytes(predictor: Predictor) -> int:
    """What a loaded model holds: its weights, plus the engine's own copy (folded, int8, or OpenVINO's)."""
    import torch

    model = getattr(predictor, "model", None)
    if model is None:
        return 0
    tensors = {t.data_ptr(): t.numel() * t.element_size() for t in model.state_dict().values()}
    own = sum(tensors.values())
    engine = getattr(predictor, "_engine", None)
    module = getattr(engine, "module", None)
    if isinstance(module, torch.nn.Module):
        tensors.update({t.data_ptr(): t.numel() * t.element_size() for t in module.state_dict().values()
                        if isinstance(t, torch.Tensor)})
        return sum(tensors.values())
    return own * 2 if engine is not None else own  # a compiled copy outside torch: about the weights' size again


def input_notes(picture: Image.Image, predictors: Sequence[Predictor]) -> list[str]:
    """:func:`input_note` for several models seeing one picture, each said once: a photo sent to several digit
    models is one notice naming them all (it was one per model, the last model's first)."""
    if blank := _nothing_to_see_note(picture):  # checked once: it reads every pixel
        return [blank]
    # Whether it looks like a photo: asked once for all the digit models (49 ms for a 12 MP photo), never for others.
    is_photo = functools.cache(functools.partial(looks_like_photo, picture))
    notes = [_model_note(p, is_photo) for p in predictors]
    photo = [p for p, n in zip(predictors, notes) if n.startswith(PHOTO_TO_DIGITS)]
    if len({p.name for p in photo}) > 1:  # one model on both sides of a compare: its own notice, said once
        labels = {tuple(p.labels) for p in photo}
        digits = f"the digits {', '.join(photo[0].labels)}" if len(labels) == 1 else "their digits"
        merged = (f"{PHOTO_TO_DIGITS}: {' and '.join(p.name for p in photo)} know only {digits}, so their answers "
                  f"say nothing about the photo")
        notes = [merged if n.startswith(PHOTO_TO_DIGITS) else n for n in notes]
    return list(dict.fromkeys(n for n in notes if n))


def input_note(picture: Image.Image, predictor: Predictor) -> str:
    """What a visitor should know about how ``predictor`` saw ``picture`` (empty: nothing)."""
    return _nothing_to_see_note(picture) or _model_note(predictor, lambda: looks_like_photo(picture))


def _nothing_to_see_note(picture: Image.Image) -> str:
    blank = nothing_to_see(picture)
    return f"{NOTHING_TO_SEE}: {blank}, so any answer is a guess" if blank else ""


def _model_note(predictor: Predictor, is_photo: Callable[[], bool]) -> str:
    """What a digit model's answer is worth, asking ``is_photo()`` only for a digit model."""
    if predictor.kind != "digits":
        return ""
    if is_photo():
        return (f"{PHOTO_TO_DIGITS}: {predictor.name} knows only the digits "
                f"{', '.join(predictor.labels)}, so this answer says nothing about the photo")
    return "digit model: the image was centred and scaled the way MNIST digits are"


def nothing_to_see(picture: Image.Image) -> str:
    """Why no model can recognise anything in ``picture`` (too small, or one shade), or empty."""
    if min(picture.size) < _SMALLEST_SIDE:
        return f"it is {picture.width}x{picture.height} px"
    low, high = picture.convert("L").getextrema()
    if high - low <= _ONE_SHADE:
        return "it is a single shade"
    return ""


# ---------------------------------------------------------------------------
# Fine-tuning jobs


@dataclass
class Job:
    id: str
    config: FinetuneConfig
    dataset: ImageDataset | None = None
    events: queue.Queue = field(default_factory=queue.Queue)
    stop: threading.Event = field(default_factory=threading.Event)  # ends the run at the next step, keeping it
    cancel: threading.Event = field(default_factory=threading.Event)  # ends it too, keeping nothing
    result: FinetuneResult | None = None
    error: str | None = None
    folder: Path | None = None
    done: threading.Event = field(default_factory=threading.Event)
    visitor: Visitor = LOCAL  # who started it: the owner of what it saves, whose access fetches its base
    ticket: Ticket | None = None  # its place in the training slot's line


MAX_REVIEWS = 16  # finished runs whose misclassified images can still be looked at


@dataclass(frozen=True)
class RunReview:
    """What a finished run got wrong, kept after its dataset is gone: results plus small copies of the images."""

    visitor: Visitor
    results: ValidationResults
    thumbnails: dict[int, Image.Image]

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

    def start(self, data: str | Path, config: FinetuneConfig, model_name: str | None = None,
              visitor: Visitor = LOCAL) -> Job:
        """Read the data, then queue the run for the training slot; it trains in a background thread.

        ``data`` is a zip path or 'mnist-sample'. The new model is ``visitor``'s, saved under their name.
        """
        if not visitor.can_own:
            raise ServiceError("this page has no visitor id yet: reload it, then start again")
        job = Job(uuid.uuid4().hex, config, visitor=visitor)
        try:
            with self._lock:  # the name is reserved at once: a second run named the same hears so before waiting
                job.folder = self._new_model_folder(model_name, data, config.base, visitor, self._saving_to)
                self._saving_to.add(job.folder)
            job.dataset = mnist_sample() if str(data) == "mnist-sample" else read_zip(data)
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
                self._keep_review(job)
                self._prepare_frozen_part(job)
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
                with self.slot.turn(what) as mine, _background_conversion() as may:
                    if mine and may and not self._closed.is_set():
                        lower_this_threads_priority()
                        note = prepare_frozen_part(model, job.dataset.kind, job.config.precision)
                        logger.info("after %s: %s", job.folder.name, note or "its frozen part was already prepared")
            except Exception:  # noqa: BLE001 - a failed preparation costs the next run speed, never the app
                if not _EXITING.is_set():
                    logger.exception("preparing the frozen part after %s failed", job.folder.name)

        self.preparing = _start_preparer(prepare, "resnet-hub-prepare")

    def prepare_bases(self, choices: Sequence[str], image_size: int) -> None:
        """In the background, convert the frozen parts that a first fine-tune of a small photo zip at ``image_size``
        on each of ``choices`` would use (:func:`~resnet_hub.finetune.prepare_base`), so that even the first
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
                    with self.slot.turn(what) as mine, _background_conversion() as may:
                        if mine and may:
                            notes = prepare_base(source, image_size)
                            logger.info("prepared %s for fine-tunes: %s", choice, "; ".join(notes) or "already done")
                except Exception:  # noqa: BLE001 - a failed preparation costs the first runs speed, never the app
                    if not _EXITING.is_set():
                        logger.exception("preparing the frozen parts of %s failed", choice)

        self.preparing_bases = _start_preparer(prepare, "resnet-hub-prepare-bases")

    def _stopping(self) -> bool:
        return self._closed.is_set() or _EXITING.is_set()

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

    def _unfinished(self, job_id: str | None) -> Job | None:
        """The job ``job_id`` names, while it has not finished."""
        job = self._jobs.get(job_id or "") or self.active
        return None if job is None or job.id != job_id or job.done.is_set() else job

    def stop(self, job_id: str | None) -> bool:
        job = self._unfinished(job_id)
        if job is None:
            return False
        job.stop.set()
        return True

    def _keep_review(self, job: Job) -> None:
        review = RunReview(job.visitor, job.result.results, mistake_thumbnails(job.dataset, job.result.results))
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
        if visitor is not None and review.visitor.owners and not set(review.visitor.owners) & set(visitor.owners):
            return None  # another visitor's run: its images are theirs
        return review

    def cancel(self, job_id: str | None) -> bool:
        """End the run at the next step and keep nothing (Stop keeps what it learned)."""
        job = self._unfinished(job_id)
        if job is None:
            return False
        job.cancel.set()
        job.stop.set()  # a run still waiting in line leaves it too
        return True


# What a pushed card keeps of a model's training record when the visitor has not asked to publish their data's
# names: counts, settings and scores, never a file name (the zip's, a member's, a misclassified image's).
PUBLISHABLE_TRAINING = ("kind", "hyperparameters", "confusion_matrix", "per_class", "seconds", "notes", "stopped",
                        "misclassified_total")


def withhold_upload_names(info, name: str) -> None:
    """Strip from ``info`` (a model's WeightsInfo) whatever names the visitor's uploads, before a push.

    The bundled MNIST sample is not an upload and stays named. Labels stay: they are the model's classes.
    """
    from .data import MNIST_SAMPLE

    if info.datasets == [MNIST_SAMPLE] and "continued_from" not in info.training:
        info.training = {**info.training, "name": name}
        return
    training = {k: v for k, v in info.training.items() if k in PUBLISHABLE_TRAINING}
    training["name"] = name
    if info.training.get("data"):
        training["data"] = (f"The uploader's own images in {len(info.labels)} classes "
                            f"(their file names are not published).")
    info.training, info.datasets = training, []


def push_stored_model(folder: Path, repo_id: str, token: str, *, include_data_names: bool = False) -> str:
    """Push a model of the store to ``repo_id``; its card names no uploaded file unless ``include_data_names``."""
    from .hub import parse_repo_id
    from .weights import load

    name = parse_repo_id(repo_id, allow_revision=False)[0].split("/")[1]  # a malformed id is refused before loading
    model = load(folder, device="cpu")
    if not include_data_names:
        withhold_upload_names(model.info, name)
    return model.push_to_hub(repo_id, token=token)


def zip_model_folder(folder: Path, out_dir: Path | None = None) -> Path:
    """A zip of a model folder for download, written under a temporary name and renamed.

    One zip per model in one folder (the system's temporary directory by default, one
    subfolder per owner's namespace: two visitors' ``my-pets`` are two zips), so repeated
    downloads do not pile up on disk.
    """
    if out_dir is None:
        namespace = hashlib.sha256(str(folder.resolve().parent).encode()).hexdigest()[:16]
        out_dir = Path(tempfile.gettempdir()) / "resnet-hub-downloads" / namespace
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / f".{folder.name}.{uuid.uuid4().hex}.partial"
    tmp = Path(shutil.make_archive(str(partial), "zip", root_dir=folder.parent, base_dir=folder.name))
    final = out_dir / f"{folder.name}.zip"
    tmp.replace(final)
    return final


def model_downloads(folder: Path, out_dir: Path | None = None) -> tuple[list[Path], str]:
    """What a visitor downloads for a model: the zip of its folder and, when the exporter handles it, a checked
    ``.onnx`` beside it; and a line saying how the ONNX file was checked, or why there is none."""
    from .export import ExportError, export_onnx
    from .weights import load

    zipped = zip_model_folder(folder, out_dir)
    try:
        record = export_onnx(load(folder, device="cpu"), zipped.with_suffix(".onnx"))
    except ExportError as e:
        return [zipped], f"No ONNX download: {e}."
    return [zipped, record.path], record.describe()


def _require_image(image: Any) -> None:
    if image is None:
        raise ServiceError("no image: upload one, take a webcam picture, paste one or draw a digit")


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:80]
    return slug or "model"


