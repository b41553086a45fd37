"""The torch engine: BatchNorm folded, channels_last; fp32, bf16, fp16, or int8 (FX static quantization)."""

from __future__ import annotations

import builtins
import copy
import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..hardware import DTYPES, cpu_has_int8
from ..model import Bottleneck, ResNet
from ..quiet import quiet_warnings

from .base import EngineError


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
    with quiet_warnings(DeprecationWarning, UserWarning), fx_tracing_confined_to_this_thread():
        prepared = prepare_fx(float_model, get_default_qconfig_mapping("x86"), (calibration[:1],))
        with torch.inference_mode():
            for chunk in calibration.split(32):
                prepared(chunk)
        return convert_fx(prepared)


_CONFINING = threading.Lock()


@contextmanager
def fx_tracing_confined_to_this_thread() -> Iterator[None]:
    """FX's symbolic tracing (``prepare_fx``) replaces ``nn.Module.__call__`` and ``__getattr__`` for the whole process
    while it traces: a forward pass in another thread (a request served while an engine is chosen in the background,
    a fine-tune) then runs into the tracer ("NameError: module is not installed as a submodule") or gets proxies for
    its weights. Here each replacement FX makes applies in the tracing thread only; other threads keep the original."""
    from torch.fx import _symbolic_trace as fx_trace

    with _CONFINING:  # one confined trace at a time: the patcher's methods are swapped for the process
        owner = threading.get_ident()
        patch, patch_method = fx_trace._Patcher.patch, fx_trace._Patcher.patch_method

        def confined(new_fn, orig_fn):
            @functools.wraps(new_fn)
            def dispatch(*args, **kwargs):
                return (new_fn if threading.get_ident() == owner else orig_fn)(*args, **kwargs)
            return dispatch

        def patch_here(self, frame_dict, name, new_fn, deduplicate=True):
            orig = frame_dict[name] if name in frame_dict else getattr(builtins, name, None)
            return patch(self, frame_dict, name, new_fn if orig is None else confined(new_fn, orig), deduplicate)

        def patch_method_here(self, cls, name, new_fn, deduplicate=True):
            return patch_method(self, cls, name, confined(new_fn, getattr(cls, name)), deduplicate)

        fx_trace._Patcher.patch, fx_trace._Patcher.patch_method = patch_here, patch_method_here
        try:
            yield
        finally:
            fx_trace._Patcher.patch, fx_trace._Patcher.patch_method = patch, patch_method


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


