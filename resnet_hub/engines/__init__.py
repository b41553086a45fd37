"""Inference engines behind the :class:`~resnet_hub.predict.Predictor`, and the choice among them.

The engines, several precisions each:

* ``torch``: the model itself, BatchNorm folded into the convolutions, channels_last;
  fp32, bf16 (CPUs with AVX-512-BF16/AMX, Ampere+ GPUs), fp16 (GPUs), int8 (FX static
  quantization, PyTorch's x86 engine: VNNI CPUs).
* ``cuda graphs`` and ``cuda compiled`` (GPUs): torch bf16/fp16 replayed from CUDA graphs, the second
  compiled by TorchInductor first (:mod:`.cuda_engine`).
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

from .base import (
    CALIBRATION_IMAGES,
    CHECK_IMAGES,
    CHOICE_FORMAT,
    ENGINES,
    MAX_REL_ERROR,
    MIN_AGREEMENT,
    EngineError,
    cam_from_features,
    weights_key,
)
from .choice import Candidate, EngineChoice, build, candidate_builders, candidates, check, check_against_fp32, choose, measure, pick
from .cuda_engine import BUCKETS, CUDA_ENGINES, CudaEngine, cuda_candidates
from .openvino_engine import (
    OPENVINO_EXTRA,
    OpenVINOEngine,
    OpenVINOPart,
    convert_cached,
    default_cache_dir,
    forget_converted,
    is_converted,
    nncf_available,
    nncf_version,
    openvino_available,
    openvino_version,
)
from .torch_engine import TorchEngine, WithFeatures, fold_batchnorm, prepare_for_inference, quantize_int8

__all__ = [
    "CALIBRATION_IMAGES", "CHECK_IMAGES", "CHOICE_FORMAT", "ENGINES", "MAX_REL_ERROR", "MIN_AGREEMENT", "OPENVINO_EXTRA",
    "BUCKETS", "CUDA_ENGINES", "Candidate", "CudaEngine", "EngineChoice", "EngineError", "OpenVINOEngine", "OpenVINOPart", "TorchEngine", "WithFeatures",
    "build", "cam_from_features", "candidate_builders", "candidates", "cuda_candidates", "check", "check_against_fp32", "choose", "convert_cached",
    "default_cache_dir", "fold_batchnorm", "forget_converted", "is_converted", "measure", "nncf_available", "nncf_version",
    "openvino_available", "openvino_version", "pick", "prepare_for_inference", "quantize_int8", "weights_key",
]
