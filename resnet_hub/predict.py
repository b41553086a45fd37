"""Inference: a Predictor that loads weights once and serves top-k, timings and grad-CAM.

The served model is a copy of the loaded one, prepared for speed: BatchNorm
folded into the convolutions, channels_last memory, bf16 where the hardware
computes it fast (AVX-512-BF16/AMX CPUs, Ampere+ GPUs), fp16 on older GPUs,
and optionally ``torch.compile``. Each fast path is checked against fp32 by the
tests and by ``python -m resnet_hub bench``.
"""

from __future__ import annotations

import copy
import functools
import os
import statistics
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from .errors import ResNetHubError
from .hardware import device_name, elapsed_ms, resolve_device, resolve_precision, synchronize
from .images import decode_batch, decode_to_tensor_batch, eval_transform, load_image, resize_and_crop, to_tensor_batch
from .weights import HubResNet, load

DEFAULT_TOP_K = 5


class PredictorError(ResNetHubError, ValueError):
    """A request the Predictor cannot serve (a bad top_k or class id)."""


# ---------------------------------------------------------------------------
# Results: plain data, printed by the caller


@dataclass(frozen=True)
class Prediction:
    """Top-k classes of one image, most probable first."""

    labels: list[str]
    probabilities: list[float]  # softmax(logits / temperature): the model's calibrated confidence when it has one
    class_ids: list[int]
    engine: str = ""  # what computed it, e.g. "openvino int8" (torch fp32 while the choice is made in the background)

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.labels, self.probabilities))

    @property
    def top1(self) -> str:
        return self.labels[0]


# ---------------------------------------------------------------------------
# The fast path: the engines and their chooser live in resnet_hub.engines

from .heatmaps import _GradCAM, cam_layer, overlay_heatmap  # noqa: E402,F401 - cam_layer, overlay: public here too
from .engines import (  # noqa: E402
    CALIBRATION_IMAGES,
    CHECK_IMAGES,
    EngineChoice,
    EngineError,
    cam_from_features,
)
from . import engines as _engines  # noqa: E402
from .serving import (  # noqa: E402,F401 - laid_out, default_*, has_trained_weights: public here too
    PendingChoice,
    build_engine,
    choose_later,
    default_calibration,
    default_check_images,
    has_trained_weights,
    laid_out,
    plain_engine,
)
from .timing import Timing, percentile as _percentile  # noqa: E402


def count_gmacs(model: HubResNet) -> float:
    """Multiply-accumulates of one forward pass of ``model`` at its input size, in billions."""
    from torch.utils.flop_counter import FlopCounterMode

    size = model.preprocessing.input_size
    probe = copy.deepcopy(model).to("cpu").eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        probe(torch.zeros(1, model.config.in_chans, size, size))
    return counter.get_total_flops() / 2 / 1e9  # FlopCounterMode counts a multiply-add as 2 flops


# ---------------------------------------------------------------------------
# The Predictor


class Predictor:
    """Loads a model once and classifies images with it.

    >>> predictor = Predictor("resnet50")                       # doctest: +SKIP
    >>> predictor.classify("cat.jpg", top_k=3).as_dict()         # doctest: +SKIP
    {'tabby': 0.62, 'tiger cat': 0.21, 'Egyptian cat': 0.09}

    Thread-safe: forward passes are serialised per Predictor (each already uses
    every core), while decoding and preprocessing run in the callers' threads.
    """

    def __init__(
        self,
        source_or_model: str | os.PathLike | HubResNet,
        device: str | torch.device | None = "auto",
        precision: str = "auto",
        *,
        engine: str = "auto",
        compile: bool = False,
        fold_batchnorm: bool = True,
        calibration: Tensor | None = None,
        cache_dir: str | os.PathLike | None = "default",
        extra_candidates: dict | None = None,
        background: bool = False,
    ):
        """``precision``/``engine``: "auto" picks the fastest path that passes its check against
        fp32 (see :mod:`resnet_hub.engines`); a named precision with ``engine="auto"`` runs torch,
        as before. ``cache_dir``: where converted engines and the choice are cached ("default":
        the store's ``engine-cache``; None: nothing cached). ``background`` (with ``precision="auto"``):
        answer at once on torch fp32 and make the choice in the background (:mod:`resnet_hub.serving`);
        :meth:`wait_for_engine` waits for it. Otherwise the choice is made here, before the first answer."""
        self.device = resolve_device(device)
        self.notes: list[str] = []
        if engine not in _engines.ENGINES:
            raise PredictorError(f"unknown engine {engine!r}: choose one of {', '.join(_engines.ENGINES)}")
        if precision != "auto":
            precision, note = resolve_precision(precision, self.device)
            if note:
                self.notes.append(note)
                warnings.warn(note, stacklevel=2)
        if isinstance(source_or_model, HubResNet):
            self.model = source_or_model
        else:
            self.model = load(source_or_model, device=self.device)
        self.name = self.model.info.source or self.model.config.architecture
        self._transform = eval_transform(self.model.preprocessing)
        self._lock = threading.Lock()
        self._first_call_ms: dict[int, float] = {}
        self._cam: _GradCAM | None = None
        self._pending: list[_Request] = []
        self._pending_lock = threading.Lock()
        self.batches_run = 0  # forward passes run by classify's micro-batching (tests and the loadtest read it)
        if cache_dir == "default":
            cache_dir = _engines.default_cache_dir()
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self.temperature = self.model.info.temperature  # probabilities are softmax(logits / temperature)
        self._answered = threading.Event()  # set by the first forward pass: a background choice waits for it
        self._engine_ready = threading.Event()
        if background and precision == "auto":
            self._set_engine(plain_engine(self._eval_model(), self.device, fold_batchnorm),
                             PendingChoice("torch fp32", [], "", ""))
            choose_later(self, engine=engine, calibration=calibration, fold=fold_batchnorm, compile=compile,
                         extra=extra_candidates)
        else:
            built, choice, notes = build_engine(self.model, self.device, engine, precision, calibration=calibration,
                                                cache_dir=self.cache_dir, fold=fold_batchnorm, compile=compile,
                                                extra=extra_candidates)
            self._switch(built, choice, notes)
            for note in notes:
                warnings.warn(note, stacklevel=2)

    def _eval_model(self) -> HubResNet:
        return copy.deepcopy(self.model).eval() if self.model.training else self.model

    def _set_engine(self, built, choice: EngineChoice) -> None:
        self._engine, self.engine_choice = built, choice
        self.engine, self.precision = built.engine, built.precision
        self.compiled = bool(getattr(built, "compiled", False))

    def _switch(self, built, choice: EngineChoice | None, notes: list[str]) -> None:
        """Serve on ``built`` from the next forward pass on (None: keep the engine; ``choice`` and ``notes`` say why)."""
        with self._lock:  # between two forward passes, never during one
            if built is not None:
                self._set_engine(built, choice)
            elif choice is not None:
                self.engine_choice = choice
            self.notes.extend(notes)
        self._engine_ready.set()

    @property
    def engine_name(self) -> str:
        """What serves now, e.g. "openvino int8" or "torch fp32"."""
        return getattr(self._engine, "name", "")

    @property
    def choosing(self) -> bool:
        """Whether the engine is still being chosen in the background (the plain torch path serves meanwhile)."""
        return not self._engine_ready.is_set()

    def wait_for_engine(self, timeout: float | None = None) -> bool:
        """Block until the engine is chosen (at once unless ``background``); False when ``timeout`` passed first."""
        return self._engine_ready.wait(timeout)

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    @property
    def num_classes(self) -> int:
        return len(self.model.labels)

    def num_parameters(self) -> int:
        return self.model.num_parameters()

    @functools.cached_property
    def gmacs(self) -> float:
        """Multiply-accumulates of one forward pass at the model's input size, in billions."""
        return count_gmacs(self.model)

    # -- core -------------------------------------------------------------

    @property
    def kind(self) -> str:
        """What the model was trained on: "digits" (MNIST-style) or "photo"."""
        return self.model.info.training.get("kind", "photo")

    def layout(self, pictures: list[Image.Image]) -> list[Image.Image]:
        """Decoded images laid out as the model's training images were: a digit model sees each
        image centred and scaled the MNIST way (:func:`center_digit`); a photo model, the image as is.

        The app, the CLI, compare and grad-CAM all come here (and calibration and check images go through
        :func:`laid_out` too), so they agree.
        """
        return laid_out(pictures, self.kind)

    @property
    def draft_side(self) -> int | None:
        """The shorter side a JPEG may be decoded down to (photo models: the resize before the crop)."""
        return None if self.kind == "digits" else self.model.preprocessing.resize_size

    def decode(self, images: Any, name: str | None = None) -> list[Image.Image]:
        """Decode one image or a sequence, a large JPEG at reduced scale (see :func:`load_image`)."""
        batch = _as_list(images)
        if len(batch) == 1 and name:
            return [load_image(batch[0], name=name, draft=self.draft_side)]
        return decode_batch(batch, draft=self.draft_side)

    def preprocess(self, images: Any) -> Tensor:
        """Decode, lay out and preprocess one image or a sequence into a (B, C, H, W) float batch."""
        if self.kind != "digits":  # a photo's layout is itself: decode and crop each in one task
            return decode_to_tensor_batch(_as_list(images), self.model.preprocessing, draft=self.draft_side)
        return to_tensor_batch(self.layout(self.decode(images)), self.model.preprocessing)

    def forward(self, batch: Tensor, features: bool = True) -> tuple[Tensor, Tensor | None]:
        """(B, C, H, W) preprocessed fp32 batch -> ((B, num_classes) fp32 logits, last feature map or None)."""
        with self._lock:
            start = time.perf_counter()
            logits, features = self._engine(batch, features) if not features else self._engine(batch)
            if len(batch) not in self._first_call_ms:
                synchronize(self.device)
                self._first_call_ms[len(batch)] = (time.perf_counter() - start) * 1000
        self._answered.set()
        return logits, features

    def logits(self, batch: Tensor) -> Tensor:
        """(B, C, H, W) preprocessed fp32 batch -> (B, num_classes) fp32 logits."""
        return self.forward(batch, features=False)[0]

    def forward_batched(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`forward`, with requests that arrive from other threads meanwhile run in one batch.

        Each caller queues its rows; whoever gets the model runs every queued request
        (up to ``MAX_BATCH`` images) in one pass and hands each its own rows. No request
        waits longer than the pass before it: under load, batches form by themselves.
        """
        return self._forward_batched(batch)[:2]

    def _forward_batched(self, batch: Tensor) -> tuple[Tensor, Tensor, str]:
        """:meth:`forward_batched`, and the name of the engine that ran the pass."""
        request = _Request(batch)
        with self._pending_lock:
            self._pending.append(request)
        while not request.done.is_set():
            with self._lock:
                if request.done.is_set():
                    break
                with self._pending_lock:
                    taken, size = [], 0
                    while self._pending and (not taken or size + len(self._pending[0].batch) <= MAX_BATCH):
                        taken.append(self._pending.pop(0))
                        size += len(taken[-1].batch)
                if not taken:
                    continue
                try:
                    start = time.perf_counter()
                    batch = taken[0].batch if len(taken) == 1 else torch.cat([r.batch for r in taken])
                    logits, features = self._engine(batch)
                    engine = getattr(self._engine, "name", "")  # a test's stand-in may be a plain function
                    self.batches_run += 1
                    if size not in self._first_call_ms:
                        synchronize(self.device)
                        self._first_call_ms[size] = (time.perf_counter() - start) * 1000
                    offset = 0
                    for r in taken:
                        n = len(r.batch)
                        r.result = (logits[offset : offset + n], features[offset : offset + n], engine)
                        offset += n
                except BaseException as e:  # noqa: BLE001 - every waiting caller gets the error, none hangs
                    for r in taken:
                        r.error = e
                finally:
                    for r in taken:
                        r.done.set()
        self._answered.set()
        if request.error is not None:
            raise request.error
        return request.result

    def classify(self, images: Any, top_k: int | None = None) -> Prediction | list[Prediction]:
        """Top-k labels of one image (returns a Prediction) or a list of them (returns a list).

        Images may be paths, bytes, PIL images or numpy arrays. ``top_k`` defaults
        to 5, or to every class when the model has fewer. Concurrent calls share forward passes.
        """
        single = not isinstance(images, (list, tuple))
        top_k = self._check_top_k(top_k)
        logits, _, engine = self._forward_batched(self.preprocess(images))
        out = self.top_k(logits, top_k, engine=engine)
        return out[0] if single else out

    def classify_with_heatmap(self, picture: Image.Image, top_k: int | None = None,
                              alpha: float = 0.45) -> tuple[Prediction, Image.Image]:
        """Top-k of one decoded image and the map of where the model looked, from one forward pass
        where that is exact (:attr:`cam_is_exact`), else from grad-CAM's own pass."""
        top_k = self._check_top_k(top_k)
        laid_out = self.layout([picture])[0]
        logits, features, engine = self._forward_batched(to_tensor_batch([laid_out], self.model.preprocessing))
        prediction = self.top_k(logits, top_k, engine=engine)[0]
        if self.cam_is_exact:
            heat = cam_from_features(features[0], self.model.fc.weight.detach(), prediction.class_ids[0])
            crop = resize_and_crop(self.model.preprocessing)(laid_out)
            return prediction, overlay_heatmap(crop, heat, alpha)
        return prediction, self.gradcam(picture, prediction.class_ids[0], alpha)[0]

    @functools.cached_property
    def cam_is_exact(self) -> bool:
        """Whether grad-CAM's layer is the last stage, before a global-average-pool + linear head:
        then grad-CAM equals the class activation map of the forward pass's features, up to scale."""
        return cam_layer(self.model) == self.model.stage_names[-1] and isinstance(self.model.fc, nn.Linear)

    def probabilities(self, logits: Tensor) -> Tensor:
        """(B, num_classes) logits -> softmax(logits / temperature): the calibrated confidence of a model fine-tuned
        here (:mod:`resnet_hub.calibration`; temperature 1 for any other). The top-1 class is the logits' own."""
        logits = logits.float()
        return torch.softmax(logits if self.temperature == 1.0 else logits / self.temperature, dim=1)

    def top_k(self, logits: Tensor, k: int, engine: str = "") -> list[Prediction]:
        """(B, num_classes) logits -> the k most probable classes of each row."""
        values, ids = self.probabilities(logits).cpu().topk(k, dim=1)
        return [
            Prediction([self.labels[i] for i in row_ids.tolist()], row_values.tolist(), row_ids.tolist(), engine)
            for row_values, row_ids in zip(values, ids)
        ]

    def _check_top_k(self, top_k: Any) -> int:
        if top_k is None:
            return min(DEFAULT_TOP_K, self.num_classes)
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= self.num_classes:
            raise PredictorError(f"top_k must be a whole number from 1 to {self.num_classes} (the class count), got {top_k!r}")
        return int(top_k)

    # -- timing -----------------------------------------------------------

    def time(self, batch_size: int = 1, runs: int = 20, warmup: int = 3, images: Tensor | None = None) -> Timing:
        """Warm median and p90 latency of a forward pass at ``batch_size``, plus the first call.

        Warm-up runs come first; on GPU every run is synchronised. ``images``
        (a preprocessed batch) defaults to random data of the model's input size.
        """
        if not all(_is_whole(n) for n in (batch_size, runs, warmup)) or batch_size < 1 or runs < 1 or warmup < 0:
            raise PredictorError(
                f"batch_size and runs must be whole numbers of at least 1, warmup at least 0; "
                f"got batch_size={batch_size!r}, runs={runs!r}, warmup={warmup!r}"
            )
        if images is not None and len(images) < batch_size:
            raise PredictorError(f"images holds {len(images)} preprocessed images, fewer than batch_size={batch_size}")
        if images is None:
            size = self.model.preprocessing.input_size
            images = torch.randn(batch_size, self.model.config.in_chans, size, size, generator=torch.Generator().manual_seed(0))
        x = images[:batch_size]
        for _ in range(max(warmup, 1)):  # the first of these is the first call, if none was made yet
            self.logits(x)
        return self._timing(batch_size, [self._timed_run(x) for _ in range(runs)])

    def _timed_run(self, x: Tensor) -> float:
        return elapsed_ms(lambda: self.logits(x), self.device)  # CUDA events on a GPU

    def _timing(self, batch_size: int, times: list[float]) -> Timing:
        return Timing(
            model=self.name,
            device=device_name(self.device),
            precision=self.precision,
            batch_size=batch_size,
            first_call_ms=self._first_call_ms[batch_size],
            median_ms=statistics.median(times),
            p90_ms=_percentile(times, 90),
            runs=len(times),
            compiled=self.compiled,
            p10_ms=_percentile(times, 10),
            engine=self.engine,
        )

    # -- explanation ------------------------------------------------------

    def gradcam(self, image: Any, class_id: int | None = None, alpha: float = 0.45) -> tuple[Image.Image, int]:
        """Grad-CAM (Selvaraju et al., arXiv:1610.02391) over ``layer4`` (or, for small inputs, the
        deepest stage with a map of at least 4x4: see :func:`cam_layer`) for ``class_id``
        (default: the top class), as an overlay on the model's input crop.

        Runs on its own fp32 copy of the model, never the one serving requests.
        """
        if class_id is not None and (not _is_whole(class_id) or not 0 <= class_id < self.num_classes):
            raise PredictorError(f"class_id must be a whole number from 0 to {self.num_classes - 1}, got {class_id!r}")
        if self._cam is None:
            self._cam = _GradCAM(self.model, self.device)
        picture = self.layout([load_image(image)])[0]
        x = self._transform(picture).unsqueeze(0)
        heat, class_id = self._cam(x, None if class_id is None else int(class_id))
        crop = resize_and_crop(self.model.preprocessing)(picture)
        return overlay_heatmap(crop, heat, alpha), class_id


MAX_BATCH = 32  # images in one micro-batched forward pass


class _Request:
    __slots__ = ("batch", "done", "result", "error")

    def __init__(self, batch: Tensor):
        self.batch, self.done, self.result, self.error = batch, threading.Event(), None, None


# ---------------------------------------------------------------------------
# Compare


@dataclass(frozen=True)
class Comparison:
    predictions: dict[str, Prediction]
    timings: dict[str, Timing]
    parameters: dict[str, int]
    gmacs: dict[str, float]
    notes: list[str] = field(default_factory=list)
    engine_choices: dict[str, EngineChoice] = field(default_factory=dict)

    @property
    def agree(self) -> bool:
        """Whether every model's top-1 label is the same."""
        return len({p.top1 for p in self.predictions.values()}) == 1

    def table(self) -> list[dict[str, Any]]:
        return [
            {
                "model": name,
                "top-1": self.predictions[name].top1,
                "confidence": round(self.predictions[name].probabilities[0], 4),
                "first call after load (ms)": round(t.first_call_ms, 1),
                "p10 (ms)": round(t.p10_ms, 2),
                "median (ms)": round(t.median_ms, 2),
                "p90 (ms)": round(t.p90_ms, 2),
                "runs": t.runs,
                "images/s": round(t.images_per_s, 1),
                "parameters (M)": round(self.parameters[name] / 1e6, 2),
                "GMACs": round(self.gmacs[name], 2),
                "device": t.device,
                "engine": f"{t.engine} {t.precision}",
                "why this engine": self.engine_choices[name].summary() if name in self.engine_choices else "",
            }
            for name, t in self.timings.items()
        ]


def compare(
    image: Any,
    models: Sequence[str | Predictor] = ("resnet18", "resnet50"),
    *,
    top_k: int | None = None,
    runs: int = 10,
    warmup: int = 3,
    device: str = "auto",
    precision: str = "auto",
) -> Comparison:
    """Run one image through several models: top-k side by side, timings, size and cost.

    Timings are batch-1 forward passes of the preprocessed image, ``warmup`` untimed
    runs each first, then ``runs`` timed runs of every model in turn (interleaved).

    >>> result = compare("cat.jpg")                      # doctest: +SKIP
    >>> result.agree, result.timings["resnet18"].median_ms   # doctest: +SKIP
    (True, 9.8)
    """
    predictors = [m if isinstance(m, Predictor) else Predictor(m, device, precision) for m in models]
    if not _is_whole(runs) or runs < 1:
        raise PredictorError(f"runs must be a whole number of at least 1, got {runs!r}")
    names = _unique_names([p.name for p in predictors])
    batches = [p.preprocess(image) for p in predictors]  # once per model: each has its own preprocessing
    predictions = {name: p.top_k(p.logits(batch), p._check_top_k(top_k), engine=p.engine_name)[0]
                   for name, p, batch in zip(names, predictors, batches)}
    serving = [p.engine_name for p in predictors]
    for p, batch in zip(predictors, batches):
        for _ in range(warmup):
            p.logits(batch)
    # Interleaved, A B A B ...: a change in the machine's load or clock lands on every model alike,
    # so the two columns stay comparable from one rerun to the next.
    times: list[list[float]] = [[] for _ in predictors]
    for _ in range(runs):
        for i, (p, batch) in enumerate(zip(predictors, batches)):
            times[i].append(p._timed_run(batch))
    timings = {name: p._timing(1, t) for name, p, t in zip(names, predictors, times)}
    switched = [f"{name}: the engine chosen in the background ({p.engine_name}) took over from {was} during the "
                f"timed runs, so they mix the two: compare again to time {p.engine_name} alone"
                for name, p, was in zip(names, predictors, serving) if p.engine_name != was]
    return Comparison(
        predictions=predictions,
        timings=timings,
        parameters={n: p.num_parameters() for n, p in zip(names, predictors)},
        gmacs={n: p.gmacs for n, p in zip(names, predictors)},
        notes=[note for p in predictors for note in p.notes] + switched,
        engine_choices={n: p.engine_choice for n, p in zip(names, predictors)},
    )


def _unique_names(names: list[str]) -> list[str]:
    """Names with "#1", "#2" ... added where the same model appears more than once."""
    out = []
    for i, name in enumerate(names):
        if names.count(name) == 1:
            out.append(name)
        else:
            out.append(f"{name} #{names[:i].count(name) + 1}")
    return out


# ---------------------------------------------------------------------------


def _is_whole(n: Any) -> bool:
    """An int (numpy's too), but not a bool: True would pass as 1 and index like a mask."""
    return isinstance(n, (int, np.integer)) and not isinstance(n, bool)


def _as_list(images: Any) -> list:
    return list(images) if isinstance(images, (list, tuple)) else [images]

