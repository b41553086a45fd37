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
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .errors import ResNetHubError
from .hardware import DTYPES, device_name, resolve_device, resolve_precision, synchronize
from .images import center_digit, decode_batch, eval_transform, load_image, resize_and_crop, to_tensor_batch
from .model import STAGES, Bottleneck, ResNet
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
    probabilities: list[float]
    class_ids: list[int]

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.labels, self.probabilities))

    @property
    def top1(self) -> str:
        return self.labels[0]


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

    @property
    def images_per_s(self) -> float:
        return 1000.0 * self.batch_size / self.median_ms

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": self.images_per_s}


# ---------------------------------------------------------------------------
# The fast path


def fold_batchnorm(model: ResNet) -> ResNet:
    """Fold every eval-mode BatchNorm into the convolution before it (in place); BN becomes Identity.

    y = gamma * (Wx - mean) / sqrt(var + eps) + beta is one convolution with
    scaled weights and a bias, so inference skips a full pass over each feature map.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (it uses the running statistics)")
    pairs = [(model, "conv1", "bn1")]
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in stage:
            n = 3 if isinstance(block, Bottleneck) else 2
            pairs += [(block, f"conv{i}", f"bn{i}") for i in range(1, n + 1)]
            if block.downsample is not None:
                pairs.append((block.downsample, "0", "1"))
    for parent, conv_name, bn_name in pairs:
        conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
        setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
        setattr(parent, bn_name, nn.Identity())
    return model


def prepare_for_inference(model: ResNet, device: torch.device, precision: str, *, fold: bool = True) -> nn.Module:
    """A copy of ``model`` set up for fast inference; the original is untouched."""
    fast = copy.deepcopy(model).eval().to(device)
    if fold:
        fold_batchnorm(fast)
    fast = fast.to(memory_format=torch.channels_last)
    if precision != "fp32":
        fast = fast.to(DTYPES[precision])
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast


def quantize_int8(model: ResNet, calibration: Tensor) -> nn.Module:
    """Static int8 post-training quantization (FX graph mode, PyTorch's x86 engine) of a CPU copy.

    Conv+BN+ReLU are fused, weights are quantized per channel, and activation
    ranges are observed on ``calibration``: real images of the kind the model
    will see, preprocessed. Opt-in (``precision="int8"``): it is the fastest CPU
    path on VNNI hardware, and its agreement with fp32 is reported by the bench.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    float_model = copy.deepcopy(model).float().eval().to("cpu")
    with warnings.catch_warnings():
        # torch.ao's FX API warns that it is deprecated; in torch 2.14 it is still the working int8 path.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        prepared = prepare_fx(float_model, get_default_qconfig_mapping("x86"), (calibration[:1],))
        with torch.inference_mode():
            for chunk in calibration.split(32):
                prepared(chunk)
        return convert_fx(prepared)


def default_calibration(model: HubResNet, n: int = 32) -> Tensor:
    """Real images for int8 calibration: MNIST digits for digit models, scikit-image photos otherwise."""
    from .examples import calibration_images

    images = calibration_images(model.info.training.get("kind", "photo"), n, offset=1)
    return to_tensor_batch(images, model.preprocessing)


def _compile(module: nn.Module) -> nn.Module:
    import torch._inductor.config as inductor_config

    # Freezing constant-folds the weights into the graph so oneDNN can pre-pack them.
    inductor_config.freezing = True
    return torch.compile(module, dynamic=False)


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
        compile: bool = False,
        fold_batchnorm: bool = True,
        calibration: Tensor | None = None,
    ):
        self.device = resolve_device(device)
        self.precision, note = resolve_precision(precision, self.device)
        self.notes: list[str] = [note] if note else []
        if note:
            warnings.warn(note, stacklevel=2)
        if isinstance(source_or_model, HubResNet):
            self.model = source_or_model
        else:
            self.model = load(source_or_model, device=self.device)
        self.name = self.model.info.source or self.model.config.architecture
        self.compiled = compile
        if self.precision == "int8":
            fast = quantize_int8(self.model, calibration if calibration is not None else default_calibration(self.model))
        else:
            fast = prepare_for_inference(self.model, self.device, self.precision, fold=fold_batchnorm)
        self._forward_module = _compile(fast) if compile else fast
        self._transform = eval_transform(self.model.preprocessing)
        self._lock = threading.Lock()
        self._first_call_ms: dict[int, float] = {}
        self._cam: _GradCAM | None = None

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
        from torch.utils.flop_counter import FlopCounterMode

        size = self.model.preprocessing.input_size
        probe = copy.deepcopy(self.model).to("cpu").eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            probe(torch.zeros(1, self.model.config.in_chans, size, size))
        return counter.get_total_flops() / 2 / 1e9  # FlopCounterMode counts a multiply-add as 2 flops

    # -- core -------------------------------------------------------------

    @property
    def kind(self) -> str:
        """What the model was trained on: "digits" (MNIST-style) or "photo"."""
        return self.model.info.training.get("kind", "photo")

    def layout(self, pictures: list[Image.Image]) -> list[Image.Image]:
        """Decoded images laid out as the model's training images were: a digit model sees each
        image centred and scaled the MNIST way (:func:`center_digit`); a photo model, the image as is.

        The one place this happens, so the app, the CLI, compare and grad-CAM all agree.
        """
        return [center_digit(p) for p in pictures] if self.kind == "digits" else list(pictures)

    def preprocess(self, images: Any) -> Tensor:
        """Decode, lay out and preprocess one image or a sequence into a (B, C, H, W) float batch."""
        batch = _as_list(images)
        return to_tensor_batch(self.layout(decode_batch(batch)), self.model.preprocessing)

    def logits(self, batch: Tensor) -> Tensor:
        """(B, C, H, W) preprocessed fp32 batch -> (B, num_classes) fp32 logits."""
        x = batch.to(self.device, DTYPES[self.precision], non_blocking=True).contiguous(memory_format=torch.channels_last)
        with self._lock, torch.inference_mode():
            start = time.perf_counter()
            out = self._forward_module(x).float()
            if len(x) not in self._first_call_ms:
                synchronize(self.device)
                self._first_call_ms[len(x)] = (time.perf_counter() - start) * 1000
        return out

    def classify(self, images: Any, top_k: int | None = None) -> Prediction | list[Prediction]:
        """Top-k labels of one image (returns a Prediction) or a list of them (returns a list).

        Images may be paths, bytes, PIL images or numpy arrays. ``top_k`` defaults
        to 5, or to every class when the model has fewer.
        """
        single = not isinstance(images, (list, tuple))
        top_k = self._check_top_k(top_k)
        out = self.top_k(self.logits(self.preprocess(images)), top_k)
        return out[0] if single else out

    def top_k(self, logits: Tensor, k: int) -> list[Prediction]:
        """(B, num_classes) logits -> the k most probable classes of each row."""
        values, ids = torch.softmax(logits.float(), dim=1).cpu().topk(k, dim=1)
        return [
            Prediction([self.labels[i] for i in row_ids.tolist()], row_values.tolist(), row_ids.tolist())
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
        start = time.perf_counter()
        self.logits(x)
        synchronize(self.device)
        return (time.perf_counter() - start) * 1000

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


class _GradCAM:
    MIN_SIDE = 4  # a 1x1 or 2x2 map cannot say where in the image anything is

    def __init__(self, model: HubResNet, device: torch.device):
        self.model = copy.deepcopy(model).to(device).float().eval()
        self.device = device
        self.lock = threading.Lock()
        self.layer = cam_layer(model)

    def __call__(self, x: Tensor, class_id: int | None) -> tuple[np.ndarray, int]:
        with self.lock, torch.enable_grad():
            h = self.model.stem(x.to(self.device))
            for name in STAGES:
                h = getattr(self.model, name)(h)
                if name == self.layer:
                    features = h = h.detach().requires_grad_(True)  # (1, C, h, w)
            logits = self.model.forward_head(h)
            class_id = int(logits.argmax(1)) if class_id is None else class_id
            (grad,) = torch.autograd.grad(logits[0, class_id], features)
        weights = grad.mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1): each channel's importance
        cam = torch.relu((weights * features.detach()).sum(1))[0]
        cam = cam / cam.max() if cam.max() > 0 else cam
        return cam.cpu().numpy(), class_id


def cam_layer(model: ResNet) -> str:
    """``layer4``, unless its map is too coarse at the model's input size (e.g. 1x1 for 32 px
    digit models): then the deepest stage whose map is at least 4x4."""
    from .model import stage_table

    rows = stage_table(model, model.preprocessing.input_size)
    sides = {r["stage"]: r["output (C, H, W)"][-1] for r in rows if r["stage"] in STAGES}
    fine = [name for name in STAGES if sides[name] >= _GradCAM.MIN_SIDE]
    return fine[-1] if fine else STAGES[0]


def overlay_heatmap(picture: Image.Image, heat: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """Blend a [0, 1] heatmap (any size) over ``picture`` with a perceptual colour map."""
    from matplotlib import colormaps

    heat_img = Image.fromarray(np.uint8(np.clip(heat, 0, 1) * 255)).resize(picture.size, Image.Resampling.BICUBIC)
    colored = colormaps["inferno"](np.asarray(heat_img) / 255.0)[..., :3]
    blended = (1 - alpha) * np.asarray(picture.convert("RGB"), dtype=np.float32) / 255 + alpha * colored
    return Image.fromarray(np.uint8(np.clip(blended, 0, 1) * 255))


# ---------------------------------------------------------------------------
# Compare


@dataclass(frozen=True)
class Comparison:
    predictions: dict[str, Prediction]
    timings: dict[str, Timing]
    parameters: dict[str, int]
    gmacs: dict[str, float]
    notes: list[str] = field(default_factory=list)

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
                "precision": t.precision,
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
    predictions = {name: p.top_k(p.logits(batch), p._check_top_k(top_k))[0]
                   for name, p, batch in zip(names, predictors, batches)}
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
    return Comparison(
        predictions=predictions,
        timings=timings,
        parameters={n: p.num_parameters() for n, p in zip(names, predictors)},
        gmacs={n: p.gmacs for n, p in zip(names, predictors)},
        notes=[note for p in predictors for note in p.notes],
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


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))
