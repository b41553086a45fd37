"""Inference engines behind the :class:`~resnet_hub.predict.Predictor`, and the choice among them.

Two engines, several precisions each:

* ``torch``: the model itself, BatchNorm folded into the convolutions, channels_last;
  fp32, bf16 (CPUs with AVX-512-BF16/AMX, Ampere+ GPUs), fp16 (GPUs), int8 (FX static
  quantization, PyTorch's x86 engine: VNNI CPUs). GPUs always run torch.
* ``openvino`` (CPUs): the model converted by ``openvino.convert_model``; fp32, bf16 (where the
  CPU computes it) and int8 (NNCF post-training quantization on real calibration images).

Every engine returns ``(logits, features)``: fp32 logits and the last stage's feature map,
from which the class activation map is drawn (:func:`cam_from_features`) with no second pass.

``precision="auto"`` builds every candidate this machine has, checks each against the fp32
model on real images of the model's kind that were *not* used to calibrate it, and keeps the
fastest that passes (:func:`choose`). The evidence is an :class:`EngineChoice`. Converted and
quantized OpenVINO models and the choice itself are cached on disk, keyed by the weights and
the software, so a second start is quick; a cache entry that fails its checksum is rebuilt.
"""

from __future__ import annotations

import collections
import copy
import functools
import hashlib
import json
import os
import platform
import shutil
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from . import atomic
from .errors import ResNetHubError
from .hardware import DTYPES, cpu_has_fast_bf16, cpu_has_int8, cpu_model_name, fast_precisions, synchronize
from .model import Bottleneck, ResNet
from .quiet import quiet_warnings

ENGINES = ("auto", "torch", "openvino")
MAX_REL_ERROR = 0.1  # relative logit error against fp32 that a candidate may have
MIN_AGREEMENT = 0.99  # top-1 agreement with fp32 a candidate needs, for trained weights
CHECK_IMAGES = 48  # held-out images each candidate is checked on
CALIBRATION_IMAGES = 32
CHOICE_FORMAT = "2"  # bump when EngineChoice changes: an older cached choice is then made afresh


class EngineError(ResNetHubError, RuntimeError):
    """An engine that cannot run this model here (missing, or the conversion failed)."""


# ---------------------------------------------------------------------------
# torch


def fold_batchnorm(model: ResNet) -> ResNet:
    """Fold every eval-mode BatchNorm into the convolution before it (in place); BN becomes Identity.

    y = gamma * (Wx - mean) / sqrt(var + eps) + beta is one convolution with
    scaled weights and a bias, so inference skips a full pass over each feature map.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (it uses the running statistics)")
    pairs = [(model, "conv1", "bn1")]
    for stage in (getattr(model, name) for name in model.stage_names):
        for block in stage:
            n = 3 if isinstance(block, Bottleneck) else 2
            pairs += [(block, f"conv{i}", f"bn{i}") for i in range(1, n + 1)]
            downsample = getattr(block, "downsample", None)
            if isinstance(downsample, nn.Sequential) and len(downsample) == 2 and isinstance(downsample[1], nn.BatchNorm2d):
                pairs.append((downsample, "0", "1"))
    for parent, conv_name, bn_name in pairs:
        conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(parent, bn_name, nn.Identity())
    return model


class WithFeatures(nn.Module):
    """``model`` returning ``(logits, last feature map)``: one pass gives the answer and its CAM."""

    def __init__(self, model: ResNet):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.model.forward_features(x)
        return self.model.forward_head(features), features


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
    will see, preprocessed. The result returns ``(logits, features)``.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    float_model = WithFeatures(copy.deepcopy(model).float().eval().to("cpu")).eval()
    # torch.ao's FX API warns that it is deprecated; in torch 2.14 it is still the working int8 path.
    with quiet_warnings(DeprecationWarning, UserWarning):
        prepared = prepare_fx(float_model, get_default_qconfig_mapping("x86"), (calibration[:1],))
        with torch.inference_mode():
            for chunk in calibration.split(32):
                prepared(chunk)
        return convert_fx(prepared)


def _compile(module: nn.Module) -> nn.Module:
    import torch._inductor.config as inductor_config

    # Freezing constant-folds the weights into the graph so oneDNN can pre-pack them.
    inductor_config.freezing = True
    return torch.compile(module, dynamic=False)


class TorchEngine:
    """The model in PyTorch: fp32/bf16/fp16 BN-folded and channels_last, or int8 (x86, CPU)."""

    engine = "torch"

    def __init__(self, model: ResNet, device: torch.device, precision: str, *, calibration: Tensor | None = None,
                 fold: bool = True, compile: bool = False):
        self.device, self.precision, self.compiled = device, precision, compile
        if precision == "int8":
            if device.type != "cpu" or not cpu_has_int8():
                raise EngineError("torch int8 needs a CPU with PyTorch's x86 quantized engine")
            if calibration is None:
                raise EngineError("torch int8 needs calibration images")
            module = quantize_int8(model, calibration)
        else:
            module = WithFeatures(prepare_for_inference(model, device, precision, fold=fold))
        self.module = _compile(module) if compile else module
        self.input_dtype = DTYPES[precision]

    @property
    def name(self) -> str:
        return f"torch {self.precision}" + (" compiled" if self.compiled else "")

    def __call__(self, x: Tensor, features: bool = True) -> tuple[Tensor, Tensor]:
        x = x.to(self.device, self.input_dtype, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            logits, features = self.module(x)
        return logits.float(), features.float()


# ---------------------------------------------------------------------------
# OpenVINO


OPENVINO_EXTRA = "pip install 'resnet-hub[openvino]'"  # OpenVINO and NNCF: not core dependencies


@functools.cache
def openvino_available() -> str | None:
    """None when OpenVINO imports and has a CPU device here, else why not."""
    try:
        import openvino  # noqa: F401 - an import that fails says more than the Core would

        from .openvino_runtime import core

        if "CPU" not in core().available_devices:
            return "OpenVINO sees no CPU device"
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "openvino":
            return f"OpenVINO is not installed: {OPENVINO_EXTRA} adds it"
        return f"OpenVINO is not usable here (ModuleNotFoundError: {e}); {OPENVINO_EXTRA}"
    except Exception as e:  # noqa: BLE001 - a broken install can raise anything at import
        return f"OpenVINO is not usable here ({type(e).__name__}: {e}); {OPENVINO_EXTRA}"
    return None


@functools.cache
def nncf_available() -> bool:
    """Whether NNCF (OpenVINO's int8 quantizer) is installed, without importing it (~0.4 s)."""
    import importlib.util

    return importlib.util.find_spec("nncf") is not None


@functools.cache
def openvino_version() -> str:
    """OpenVINO's version from its package metadata ("absent" when not installed): cache keys need it before any
    OpenVINO code runs, and importing openvino and loading its CPU plugin takes ~0.3 s."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openvino")
    except PackageNotFoundError:
        return "absent"


@functools.cache
def nncf_version() -> str:
    """NNCF's version from its package metadata: importing nncf takes ~0.4 s, and a cache key needs only this."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nncf")
    except PackageNotFoundError:
        return "absent"


class OpenVINOEngine:
    """The model converted to OpenVINO (CPU): fp32, bf16 or int8 (NNCF), read from the cache when there.

    Converted models are saved as OpenVINO IR under ``cache_dir``, one folder per
    (weights, precision, calibration, OpenVINO and NNCF versions), with a manifest of
    checksums; the compiled form goes to OpenVINO's own model cache beside it.
    """

    engine = "openvino"
    compiled = False

    def __init__(self, model: ResNet, precision: str, *, calibration: Tensor | None, cache_dir: Path | None,
                 weights_key: str):
        _check_openvino(precision, calibration is not None)
        self.precision = precision
        self.device = torch.device("cpu")
        self.input_dtype = torch.float32
        self.from_cache = False
        size = model.preprocessing.input_size
        converted = lambda: _converted(model, size, cache_dir, weights_key)  # noqa: E731
        if precision == "int8":
            key = _digest(weights_key, precision, openvino_version(), nncf_version(), _tensor_digest(calibration))
            folder = cache_dir / f"openvino-{key[:24]}" if cache_dir else None
            ov_model, self.from_cache = _quantized_cached(folder, converted, lambda: calibration)
        else:  # fp32 and bf16 share the converted IR
            ov_model = converted()
        self.compiled_model = _compile_openvino(ov_model, precision, cache_dir)[0]
        # Large batches: the THROUGHPUT hint's streams, each running its share of the batch at once
        # (on this 2-core machine +7% images/s at batch 32 for ResNet-50); small ones: one LATENCY request.
        self.throughput_model = _compile_openvino(ov_model, precision, cache_dir, "THROUGHPUT")[0]
        self.streams = max(1, int(self.throughput_model.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        # One plain request per stream, started and then waited for: no Python callback on OpenVINO's threads.
        self._stream_requests = ([self.throughput_model.create_infer_request() for _ in range(self.streams)]
                                 if self.streams > 1 else [])
        self._requests = threading.local()
        # Large batches that want only logits (Compare's throughput, the bench) run a copy of the graph without the
        # feature-map output, compiled when first asked for: there the pooled map is fused, not written out (+5%
        # images/s for ResNet-50 int8 at batch 32 on 2 Sapphire Rapids cores, level with OpenVINO used directly).
        self._logits_graph = (ov_model, precision, cache_dir) if self._stream_requests else None
        self._logits_requests: list | None = None
        self._logits_lock = threading.Lock()

    @staticmethod
    def _quantize(ov_model, calibration: Tensor):
        import nncf

        from .openvino_runtime import quantizing

        samples = [calibration[i : i + 1].numpy() for i in range(len(calibration))]
        with quantizing():
            return nncf.quantize(ov_model, nncf.Dataset(samples), subset_size=len(samples),
                                 preset=nncf.QuantizationPreset.PERFORMANCE)

    @property
    def name(self) -> str:
        return f"openvino {self.precision}"

    def __call__(self, x: Tensor, features: bool = True) -> tuple[Tensor, Tensor | None]:
        """Logits and (unless ``features=False``: then None, and nothing copied) the last feature map."""
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        outputs = 2 if features else 1
        if self._stream_requests and len(array) >= 4 * self.streams:
            return self._split(array, outputs, self._stream_requests if features else self._logits_only())
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self.compiled_model.create_infer_request()
        request.infer({0: array})
        out = [torch.from_numpy(request.get_output_tensor(k).data.copy()) for k in range(outputs)]
        return out[0], out[1] if features else None

    def _logits_only(self) -> list:
        """The stream requests of the graph without its feature-map output (compiled once, on first use)."""
        with self._logits_lock:
            if self._logits_requests is None:
                import openvino as ov

                ov_model, precision, cache_dir = self._logits_graph
                graph = ov.Model([ov_model.get_results()[0].input_value(0)], ov_model.get_parameters(), "logits")
                compiled = _compile_openvino(graph, precision, cache_dir, "THROUGHPUT")[0]
                self._logits_requests = [compiled.create_infer_request() for _ in range(self.streams)]
                self._logits_graph = None  # the compiled copy is all that is needed now
            return self._logits_requests

    def _split(self, array: np.ndarray, outputs: int, requests: list) -> tuple[Tensor, Tensor | None]:
        """The batch in one part per stream, run at once; the caller (the Predictor) runs one pass at a time."""
        parts = np.array_split(array, len(requests))
        for request, part in zip(requests, parts):
            request.start_async({0: part})
        for request in requests:
            request.wait()
        out = [torch.from_numpy(np.concatenate([r.get_output_tensor(k).data for r in requests]))
               for k in range(outputs)]
        return out[0], out[1] if outputs == 2 else None


def _check_openvino(precision: str, calibrated: bool) -> None:
    """An :class:`EngineError` saying why OpenVINO cannot run ``precision`` here (int8: given calibration images)."""
    why = openvino_available()
    if why:
        raise EngineError(why)
    if precision not in ("fp32", "bf16", "int8"):
        raise EngineError(f"OpenVINO runs fp32, bf16 or int8, not {precision}")
    if precision == "bf16" and not cpu_has_fast_bf16():
        raise EngineError("OpenVINO bf16 needs a CPU with AVX-512-BF16 or AMX")
    if precision == "int8" and not calibrated:
        raise EngineError("OpenVINO int8 needs calibration images")
    if precision == "int8" and not nncf_available():
        raise EngineError(f"OpenVINO int8 needs NNCF, which is not installed: {OPENVINO_EXTRA} adds it")


def _quantized_cached(folder: Path | None, converted: Callable[[], Any], calibration: Callable[[], Tensor]
                      ) -> tuple[Any, bool]:
    """(the int8 IR in ``folder``, True), or (``converted()`` quantized on ``calibration()``, False), then written
    to ``folder``."""
    ov_model = _read_ir(folder) if folder is not None else None
    if ov_model is not None:
        return ov_model, True
    ov_model = OpenVINOEngine._quantize(converted(), calibration())
    if folder is not None:
        _write_ir(ov_model, folder)
    return ov_model, False


def _compile_openvino(ov_model, precision: str, cache_dir: Path | None, hint: str = "LATENCY") -> tuple[Any, dict]:
    """(``ov_model`` compiled for the CPU with the ``hint``, the config it was compiled with), its blob kept in
    OpenVINO's model cache under ``cache_dir``; a damaged blob there is removed and the model compiled afresh."""
    from .openvino_runtime import core

    # OpenVINO runs "fp32" models in bf16 on CPUs that have it unless told otherwise.
    config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    if cache_dir is not None:
        config["CACHE_DIR"] = str(cache_dir / "openvino-blobs")
    try:
        return core().compile_model(ov_model, "CPU", config), config
    except Exception:  # noqa: BLE001 - a damaged blob in OpenVINO's cache: compile afresh without it
        if "CACHE_DIR" not in config:
            raise
        shutil.rmtree(config.pop("CACHE_DIR"), ignore_errors=True)
        return core().compile_model(ov_model, "CPU", config), config


_CONVERTED: dict[str, Any] = {}  # weights key -> converted fp32 OpenVINO model (the last few, in this process)
_CONVERTED_LOCK = threading.Lock()


def _converted(model: ResNet, size: int, cache_dir: Path | None, weights_key: str):
    """The model converted to OpenVINO (fp32), converted once: from memory, the disk cache, or afresh."""
    return convert_cached(lambda: WithFeatures(copy.deepcopy(model).float().eval().to("cpu")).eval(),
                          (model.config.in_chans, size, size), cache_dir, weights_key)[0]


def convert_cached(module: Callable[[], nn.Module], input_shape: tuple[int, ...], cache_dir: Path | None,
                   key: str) -> tuple[Any, str]:
    """(a clone of ``module()`` converted to OpenVINO fp32 for inputs of (any batch, *``input_shape``), where it
    came from: "memory", "cache" or "converted"). ``key`` names the weights; ``module`` builds the module only
    when it must be converted."""
    import openvino as ov

    key = _digest(key, "converted", openvino_version())
    with _CONVERTED_LOCK:
        if key in _CONVERTED:
            return _CONVERTED[key].clone(), "memory"
    folder = cache_dir / f"openvino-{key[:24]}" if cache_dir else None
    ov_model = _read_ir(folder) if folder is not None else None
    source = "cache"
    if ov_model is None:
        source = "converted"
        try:
            with quiet_warnings(), torch.no_grad():
                ov_model = ov.convert_model(module(), example_input=torch.zeros(1, *input_shape),
                                            input=[(-1, *input_shape)])
        except Exception as e:  # noqa: BLE001 - any conversion failure means: fall back to torch
            raise EngineError(f"OpenVINO could not convert this model ({type(e).__name__}: {str(e)[:200]})") from None
        if folder is not None:
            _write_ir(ov_model, folder)
    with _CONVERTED_LOCK:
        _CONVERTED[key] = ov_model
        while len(_CONVERTED) > 2:
            _CONVERTED.pop(next(iter(_CONVERTED)))
    return ov_model.clone(), source


def is_converted(cache_dir: Path | None, key: str) -> bool:
    """Whether :func:`convert_cached` has ``key`` in memory or (by its manifest) in ``cache_dir``: no conversion."""
    key = _digest(key, "converted", openvino_version())
    with _CONVERTED_LOCK:
        if key in _CONVERTED:
            return True
    return cache_dir is not None and (cache_dir / f"openvino-{key[:24]}" / "manifest.json").is_file()


STREAM_ROWS = 8  # images per inference of an OpenVINOPart's stream


class OpenVINOPart:
    """Any fixed part of a model (fine-tuning's frozen stem and stages) run by OpenVINO on the CPU, fp32, bf16 or
    int8 (NNCF, on the images ``calibration()`` gives, which ``calibration_name`` names): ``part(x)`` is
    ``module(x)`` as an fp32 tensor. Converted once per ``key`` (the part's weights) and quantized once per key and
    calibration, then read from ``cache_dir``; ``source`` says which: "converted", "quantized" (from a cached
    conversion), "cache" or "memory"."""

    def __init__(self, module: Callable[[], nn.Module], input_shape: tuple[int, ...], precision: str, *,
                 cache_dir: Path | None, key: str, calibration: Callable[[], Tensor] | None = None,
                 calibration_name: str = ""):
        _check_openvino(precision, calibration is not None)
        self.precision = precision
        sources = []

        def converted():
            ov_model, source = convert_cached(module, input_shape, cache_dir, key)
            sources.append(source)
            return ov_model

        if precision == "int8":
            ov_model, from_cache = _quantized_cached(self._int8_folder(cache_dir, key, calibration_name), converted,
                                                     calibration)
            self.source = "cache" if from_cache else "converted" if sources == ["converted"] else "quantized"
        else:
            ov_model = converted()
            self.source = sources[0]
        # The THROUGHPUT hint's streams (one a core here), each running a slice of ``STREAM_ROWS`` images: a call
        # with many images keeps every stream busy; ResNet-18's frozen stem..layer4 at 224 px, int8, on 2 Zen 5
        # cores: 410-420 images/s against 366 for one LATENCY request over chunks of 8.
        compiled = _compile_openvino(ov_model, precision, cache_dir, "THROUGHPUT")[0]
        streams = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self.requests = [compiled.create_infer_request() for _ in range(streams)]
        self.chunk = STREAM_ROWS * streams * 4  # images per call that keep the streams fed (cache_features reads it)

    @staticmethod
    def _int8_folder(cache_dir: Path | None, key: str, calibration_name: str) -> Path | None:
        if cache_dir is None:
            return None
        return cache_dir / f"openvino-{_digest(key, 'int8', calibration_name, openvino_version(), nncf_version())[:24]}"

    @classmethod
    def is_cached(cls, cache_dir: Path | None, key: str, precision: str, calibration_name: str = "") -> bool:
        """Whether building this part would neither convert nor quantize (it is in memory or ``cache_dir``)."""
        if precision == "int8":
            folder = cls._int8_folder(cache_dir, key, calibration_name)
            return folder is not None and (folder / "manifest.json").is_file()
        return is_converted(cache_dir, key)

    def __call__(self, x: Tensor) -> Tensor:
        """``x``'s rows in slices of ``STREAM_ROWS``, each started on the next free stream as one finishes (a
        plain wait on the oldest: no Python callback on OpenVINO's threads)."""
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        out: np.ndarray | None = None
        free, running = list(reversed(self.requests)), collections.deque()

        def collect() -> None:
            nonlocal out
            request, start = running.popleft()
            request.wait()
            got = request.get_output_tensor(0).data
            if out is None:
                out = np.empty((len(array), *got.shape[1:]), dtype=np.float32)
            out[start : start + len(got)] = got
            free.append(request)

        for start in range(0, len(array), STREAM_ROWS):
            if not free:
                collect()
            request = free.pop()
            request.start_async({0: array[start : start + STREAM_ROWS]})
            running.append((request, start))
        while running:
            collect()
        if out is None:
            raise EngineError("an OpenVINO part was called with no images")
        return torch.from_numpy(out)


def default_cache_dir() -> Path:
    """Where converted engines are cached: ``$RESNET_HUB_ENGINE_CACHE``, else the store's ``engine-cache``."""
    from .store import store_root

    return Path(os.environ.get("RESNET_HUB_ENGINE_CACHE") or store_root() / "engine-cache")


def _read_ir(folder: Path):
    """The cached IR in ``folder``, or None (absent, or damaged: then removed)."""
    from .openvino_runtime import core

    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        sums = json.loads(manifest.read_text())
        for name, digest in sums.items():
            if _file_digest(folder / name) != digest:
                raise ValueError(f"{name} does not match its checksum")
        return core().read_model(folder / "model.xml")
    except Exception:  # noqa: BLE001 - a damaged cache entry is never half-read: rebuilt instead
        shutil.rmtree(folder, ignore_errors=True)
        return None


def _write_ir(ov_model, folder: Path) -> None:
    """Save the IR to a temporary folder, checksum it, then rename it into place."""
    import openvino as ov

    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic.atomic_path(folder) as staging:
            ov.save_model(ov_model, staging / "model.xml", compress_to_fp16=False)
            sums = {name: _file_digest(staging / name) for name in ("model.xml", "model.bin")}
            (staging / "manifest.json").write_text(json.dumps(sums))
    except OSError:
        if not folder.is_dir():
            raise
        # another process cached it first: its folder stays


# ---------------------------------------------------------------------------
# The choice


@dataclass
class Candidate:
    """One engine and precision, as checked and measured on this machine."""

    name: str  # "openvino int8"
    passed: bool
    rel_error: float | None = None  # ||logits - fp32|| / ||fp32|| on the check images
    top1_agreement: float | None = None
    b1_ms: float | None = None  # median batch-1 latency
    why: str = ""  # why it failed its check, or could not be built
    b8_ms: float | None = None  # median batch-8 latency: the choice minimises b1_ms + b8_ms

    def describe(self) -> str:
        if self.rel_error is None:
            return f"{self.name}: not available ({self.why})"
        text = f"{self.name}: error {self.rel_error:.3f}, top-1 agreement {self.top1_agreement:.1%}"
        if self.b1_ms is not None:
            text += f", {self.b1_ms:.1f} ms at batch 1"
        if self.b8_ms is not None:
            text += f", {self.b8_ms:.1f} ms at batch 8"
        return text + (f" (refused: {self.why})" if not self.passed else "")


@dataclass
class EngineChoice:
    """Which engine serves, why, and the evidence: data, shown in Compare and printed by ``bench``."""

    chosen: str
    candidates: list[Candidate]
    gate: str  # the rule each candidate had to pass
    check_set: str  # what it was checked on
    seconds: float = 0.0  # time the choice took at this start
    from_cache: bool = False  # the choice was read from the cache (and the chosen engine re-checked)
    forced: bool = False  # the user named the engine and precision

    @property
    def runner_up(self) -> str | None:
        passed = sorted((c for c in self.candidates if c.passed and c.b1_ms is not None and c.name != self.chosen),
                        key=lambda c: c.b1_ms + (c.b8_ms or 0))
        return passed[0].name if passed else None

    def summary(self) -> str:
        if self.forced:
            return f"{self.chosen} (as asked)"
        ours = next((c for c in self.candidates if c.name == self.chosen), None)
        # What is minimised is said: a runner-up faster at batch 1 alone read as a contradiction.
        text = f"{self.chosen}, the fastest of {len(self.candidates)} checked paths"
        if ours and ours.b1_ms is not None:
            text += (f" by batch 1 + batch 8 time when it loaded ({_ms(ours.b1_ms)} + {_ms(ours.b8_ms)}, error "
                     f"{ours.rel_error:.3f}, top-1 agreement {ours.top1_agreement:.0%})")
        if self.runner_up:
            runner = next(c for c in self.candidates if c.name == self.runner_up)
            text += f"; runner-up {runner.name} ({_ms(runner.b1_ms)} + {_ms(runner.b8_ms)})"
        if any(c.why and OPENVINO_EXTRA in c.why for c in self.candidates):
            text += f"; OpenVINO's engines are not installed ({OPENVINO_EXTRA} adds them, often the fastest on a CPU)"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "runner_up": self.runner_up}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineChoice:
        data = {k: v for k, v in data.items() if k != "runner_up"}
        data["candidates"] = [Candidate(**c) for c in data["candidates"]]
        return cls(**data)


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} ms"


def candidates(device: torch.device, engine: str = "auto") -> list[tuple[str, str]]:
    """(engine, precision) pairs this device can run, for ``engine`` ("auto": all of them)."""
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if device.type == "cuda":
        if engine == "openvino":
            raise EngineError("OpenVINO runs on CPUs here; on a GPU the engine is torch")
        return [("torch", p) for p in fast_precisions(device)]
    pairs = []
    if engine in ("auto", "openvino"):
        pairs += [("openvino", "int8")] + ([("openvino", "bf16")] if cpu_has_fast_bf16() else []) + [("openvino", "fp32")]
    if engine in ("auto", "torch"):
        pairs += ([("torch", "int8")] if cpu_has_int8() else []) + [("torch", p) for p in fast_precisions(device)]
        if ("torch", "fp32") not in pairs:
            pairs.append(("torch", "fp32"))
    return pairs


def build(model: ResNet, device: torch.device, engine: str, precision: str, *, calibration: Tensor | None,
          cache_dir: Path | None, weights_key: str, fold: bool = True, compile: bool = False):
    """One engine, or an :class:`EngineError` saying why it cannot run here."""
    if engine == "openvino":
        if device.type != "cpu":
            raise EngineError("OpenVINO runs on CPUs here")
        return OpenVINOEngine(model, precision, calibration=calibration, cache_dir=cache_dir, weights_key=weights_key)
    if precision in ("bf16", "fp16") and precision not in fast_precisions(device):
        raise EngineError(f"{precision} is not fast on this {'CPU' if device.type == 'cpu' else 'GPU'}")
    return TorchEngine(model, device, precision, calibration=calibration, fold=fold, compile=compile)


def check(engine_fn: Callable[[Tensor], tuple[Tensor, Tensor]], images: Tensor, reference: Tensor, *,
          trained: bool) -> tuple[float, float, str]:
    """(relative logit error, top-1 agreement, why it fails or "") of an engine on held-out images."""
    out = torch.cat([engine_fn(chunk)[0].cpu() for chunk in images.split(16)])
    if not torch.isfinite(out).all():
        return float("inf"), 0.0, "non-finite logits"
    rel = ((out - reference).norm() / reference.norm().clamp_min(1e-12)).item()
    agree = (out.argmax(1) == reference.argmax(1)).float().mean().item()
    if rel > MAX_REL_ERROR:
        return rel, agree, f"logit error {rel:.3f} > {MAX_REL_ERROR}"
    if trained and agree < MIN_AGREEMENT:
        return rel, agree, f"top-1 agreement {agree:.1%} < {MIN_AGREEMENT:.0%}"
    return rel, agree, ""


def measure(built: dict[str, Callable[[Tensor], Any]], images: Tensor, device: torch.device,
            rounds: int = 7) -> dict[str, tuple[float, float]]:
    """Median ms of a batch-1 and a batch-8 pass of each engine, after warm-up, measured in
    interleaved rounds (A B C, A B C, ...) so a change in the machine's load lands on all alike."""
    x1, x8 = images[:1], images[:8]
    for fn in built.values():
        for x in (x1, x1, x8):
            fn(x)
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in built}
    for _ in range(rounds):
        for name, fn in built.items():
            for x, out in zip((x1, x8), times[name]):
                start = time.perf_counter()
                fn(x)
                synchronize(device)
                out.append((time.perf_counter() - start) * 1000)
    return {name: (statistics.median(a), statistics.median(b)) for name, (a, b) in times.items()}


def choose(model: ResNet, device: torch.device, *, engine: str, calibration: Tensor, check_images: Tensor,
           trained: bool, check_set: str, cache_dir: Path | None, weights_key: str, fold: bool = True,
           compile: bool = False, extra: dict[str, Callable[[], Any]] | None = None):
    """(engine, EngineChoice): the fastest candidate that passes its check against fp32.

    ``extra`` maps a name to a builder of a further candidate (tests pass a broken one).
    A cached choice is reused when the chosen engine passes its check again; otherwise every
    candidate is built, checked and timed afresh.
    """
    start = time.perf_counter()
    gate = (f"relative logit error <= {MAX_REL_ERROR} and top-1 agreement >= {MIN_AGREEMENT:.0%} against fp32"
            if trained else
            f"relative logit error <= {MAX_REL_ERROR} against fp32 (random weights: no accuracy to protect, "
            f"so top-1 agreement is reported but not required)")
    with torch.inference_mode():
        reference = torch.cat([model(chunk.to(device)).float().cpu() for chunk in check_images.split(16)])
    builders: dict[str, Callable[[], Any]] = {
        f"{e} {p}": functools.partial(build, model, device, e, p, calibration=calibration, cache_dir=cache_dir,
                                      weights_key=weights_key, fold=fold, compile=compile)
        for e, p in candidates(device, engine)
    }
    builders.update(extra or {})
    # OpenVINO's and NNCF's versions in the key: installing (or updating) them makes the choice afresh.
    key = _digest(CHOICE_FORMAT, weights_key, str(device), openvino_version(), nncf_version(), *builders)
    choice_file = cache_dir / f"choice-{key[:24]}.json" if cache_dir else None
    cached = _read_choice(choice_file)
    if cached is not None and cached.chosen in builders:
        try:
            chosen = builders[cached.chosen]()
            rel, agree, why = check(chosen, check_images, reference, trained=trained)
            if not why:
                cached.from_cache, cached.seconds = True, time.perf_counter() - start
                return chosen, cached
        except EngineError:
            pass
    found, built = [], {}
    for name, make in builders.items():
        try:
            candidate = make()
        except EngineError as e:
            found.append(Candidate(name, False, why=str(e)))
            continue
        rel, agree, why = check(candidate, check_images, reference, trained=trained)
        found.append(Candidate(name, not why, rel, agree, None, why))
        if not why:
            built[name] = candidate
    speeds = measure(built, check_images, device)
    for c in found:
        if c.name in speeds:
            c.b1_ms, c.b8_ms = speeds[c.name]
    passed = sorted((c for c in found if c.passed), key=lambda c: c.b1_ms + c.b8_ms)
    if not passed:
        raise EngineError("no engine passed its check against fp32: " + "; ".join(c.describe() for c in found))
    choice = EngineChoice(passed[0].name, found, gate, check_set, time.perf_counter() - start)
    _write_choice(choice_file, choice)
    return built[choice.chosen], choice


def _read_choice(path: Path | None) -> EngineChoice | None:
    if path is None or not path.is_file():
        return None
    try:
        return EngineChoice.from_dict(json.loads(path.read_text()))
    except Exception:  # noqa: BLE001 - a damaged choice file is chosen afresh
        path.unlink(missing_ok=True)
        return None


def _write_choice(path: Path | None, choice: EngineChoice) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(choice.to_dict(), indent=1))


# ---------------------------------------------------------------------------
# Keys


def weights_key(model: nn.Module, extra: str = "") -> str:
    """A digest of the weights, the architecture and the software: the cache key's base."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(memoryview(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()))
    config = getattr(model, "config", None)
    h.update(repr(config).encode())
    h.update(repr(getattr(model, "preprocessing", "")).encode())
    h.update(f"{torch.__version__}|{platform.machine()}|{cpu_model_name()}|{torch.get_num_threads()}|{extra}".encode())
    return h.hexdigest()


def _tensor_digest(t: Tensor | None) -> str:
    if t is None:
        return ""
    return hashlib.sha256(t.detach().to("cpu").contiguous().numpy().tobytes()).hexdigest()


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# CAM from the forward pass


def cam_from_features(features: Tensor, fc_weight: Tensor, class_id: int) -> np.ndarray:
    """Class activation map (Zhou et al. 2016) of one image from its last feature map, in [0, 1].

    For a global-average-pool + linear head, Grad-CAM at the last stage is this map up to a
    positive scale (each channel's gradient is ``fc.weight[class] / (h * w)``), so it comes from
    the forward pass's own features, with no backward pass.
    """
    cam = torch.relu(torch.einsum("chw,c->hw", features.float(), fc_weight[class_id].float().to(features.device)))
    top = cam.max()
    return (cam / top if top > 0 else cam).cpu().numpy()
