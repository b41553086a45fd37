"""Which models the app offers, and each loaded once: the ImageNet pair from the Hub, or offline the starters.

The app's Classify and Compare buttons and the CLI's ``classify`` and ``compare`` all come here.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from ..errors import ServiceError, SourceError, WeightsNotFoundError
from ..hub import DEFAULT_SOURCES, HubAccess, access, resolve
from ..images import load_image
from ..names import STORE_PREFIX, is_hub_id, model_source
from ..owners import Visitor
from ..predict import Comparison, Prediction, Predictor, compare
from ..serving import BACKGROUND_CHOICES
from ..store import STARTER_ARCHS, local_models, model_record, starter_folder, stored_model
from .input_notes import input_note, input_notes
from .starters import DISPLAY, StarterBuild, StarterBuilds

logger = logging.getLogger(__name__)

COMPARE_RUNS = 30  # timed batch-1 runs per model, interleaved, after warm-up
# Loaded models beside the always-loaded defaults (the ImageNet pair or the starters), least recently used out:
# every typed repo id would otherwise stay in memory for the life of the process.
MAX_LOADED_MODELS = 6
MAX_LOADED_BYTES = 1_000 * 10**6  # parameters and buffers, as loaded (ResNet-50 in fp32: ~100 MB)
LOCAL = Visitor.local()
_UNCHECKED = object()


@dataclass(frozen=True)
class Classification:
    prediction: Prediction
    latency_ms: float
    heatmap: Image.Image | None
    model: str
    note: str = ""
    engine: str = ""  # what answered, e.g. "openvino int8"
    engine_note: str = ""  # while the engine is chosen in the background, says that the plain torch path answered



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
                 max_bytes: int = MAX_LOADED_BYTES, engine: str = "auto", background_choice: bool = True):
        # allow_paths: local folders are models too (the command line); never for the app's visitors.
        self.device, self.precision, self.compile, self.allow_paths = device, precision, compile, allow_paths
        self.engine = engine  # "auto", "torch" or "openvino" (see resnet_hub.engines)
        # A model not served here before answers at once on torch fp32 while its engine is chosen in the background
        # (resnet_hub.serving); False: the choice is made before the first answer (the command line, whose
        # compare and bench time the engine chosen).
        self.background_choice = background_choice
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
                stopped = (model_record(folder).get("training") or {}).get("stopped")
                how = "fine-tuned here, stopped early" if stopped else "fine-tuned here"
                out.append((f"{folder.name} ({how})", f"{STORE_PREFIX}{folder.name}"))
        return out

    def source_for(self, choice: str, visitor: Visitor = LOCAL) -> str:
        """The weights source a chooser's value (or a typed name) stands for, for ``visitor``: what
        :func:`~resnet_hub.names.model_source` says, except that offline the short names are the starters.
        Local folders only with ``allow_paths`` (the command line, never a visitor of the app)."""
        if (choice or "").strip() in STARTER_ARCHS:
            return self.default_source(choice.strip())
        return model_source(choice, visitor=visitor, allow_paths=self.allow_paths)

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
        key = (source, visitor.cache_key) if is_hub_id(source) else shared_key
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
                    predictor = Predictor(source, self.device, self.precision, engine=self.engine, compile=self.compile,
                                          background=self.background_choice)
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

    def close(self, timeout_s: float = 120) -> None:
        """Wait (at most ``timeout_s``) for the engine choices under way or queued: what an app closed in a process
        that goes on (a test's) does, so no conversion outlives it."""
        BACKGROUND_CHOICES.wait_idle(timeout_s)

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
                    visitor: Visitor = LOCAL, *, only: bool = False) -> str:
        """The weights source to fine-tune from for ``choice``, waiting for its starter if it is one (``only``:
        training just that starter, for the command line).

        A Hub id is fetched here, with ``visitor``'s access, so a refusal (private, gated, oversize) comes
        before any data is read or a run is queued.
        """
        if self.uses_starters and (choice or "").strip() in STARTER_ARCHS:
            self.starters.wait(choice.strip(), on_progress, only=only)
        source = self.source_for(choice, visitor)
        if is_hub_id(source):
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
        chosen = prediction.engine == predictor.engine_name and not predictor.choosing
        engine_note = "" if chosen else (f"{prediction.engine} answered while the fastest engine for this model is "
                                         f"chosen in the background; later answers use it")
        return Classification(prediction, latency, overlay, predictor.name, input_note(picture, predictor),
                              prediction.engine, engine_note)

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
    record = model_record(source)
    if (record.get("training") or {}).get("kind") != kind:
        return None
    size = (record.get("preprocessing") or {}).get("input_size")
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def _model_bytes(predictor: Predictor) -> int:
    """What a loaded model holds: its weights, plus the engine's own copy (folded, int8, or OpenVINO's)."""
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


def _require_image(image: Any) -> None:
    if image is None:
        raise ServiceError("no image: upload one, take a webcam picture, paste one or draw a digit")

