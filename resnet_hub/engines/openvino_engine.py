"""OpenVINO engines (CPUs): the whole model (:class:`OpenVINOEngine`) or a frozen part (:class:`OpenVINOPart`),
converted, quantized (NNCF) and cached on disk."""

from __future__ import annotations

import collections
import copy
import functools
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from .. import atomic
from ..hardware import cpu_has_fast_bf16
from ..model import ResNet
from ..quiet import quiet_warnings

from .base import EngineError, _digest, _file_digest, _tensor_digest
from .torch_engine import WithFeatures


OPENVINO_EXTRA = "pip install 'resnet-hub[openvino]'"  # OpenVINO and NNCF: not core dependencies


@functools.cache
def openvino_available() -> str | None:
    """None when OpenVINO imports and has a CPU device here, else why not."""
    try:
        import openvino  # noqa: F401 - an import that fails says more than the Core would

        from ..openvino_runtime import core

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

        from ..openvino_runtime import quantizing

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
    from ..openvino_runtime import core

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


def forget_converted() -> None:
    """Drop the converted models this process keeps in memory: what a new process would see (the disk cache stays)."""
    with _CONVERTED_LOCK:
        _CONVERTED.clear()


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
        # with many images keeps every stream busy (faster than one LATENCY request over chunks; docs/benchmarks.md).
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
    from ..store import store_root

    return Path(os.environ.get("RESNET_HUB_ENGINE_CACHE") or store_root() / "engine-cache")


def _read_ir(folder: Path):
    """The cached IR in ``folder``, or None (absent, or damaged: then removed)."""
    from ..openvino_runtime import core

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


