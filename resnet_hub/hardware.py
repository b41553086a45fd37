"""Which device and precision to run on, decided at run time from what the hardware has."""

from __future__ import annotations

import functools

import torch

from .errors import ResNetHubError

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
# The dtype of the model's inputs; int8 models quantize their fp32 input themselves.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}


class HardwareError(ResNetHubError, ValueError):
    """A device or precision that does not exist here."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' (or None) -> CUDA when present, else CPU; a named device is checked."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise HardwareError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HardwareError("device 'cuda' was asked for but no CUDA GPU is available: use 'auto' or 'cpu'")
    if device.type not in ("cpu", "cuda"):
        raise HardwareError(f"device {device.type!r} is not supported: use 'auto', 'cpu' or 'cuda'")
    return device


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """AVX-512-BF16 or AMX: oneDNN then runs bf16 convolutions well ahead of fp32."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = f.read()
    except OSError:
        return False
    return any(f in flags for f in (" avx512_bf16", " amx_bf16")) and torch.backends.mkldnn.is_available()


@functools.cache
def cpu_has_int8() -> bool:
    """PyTorch's x86 quantized engine (fbgemm/oneDNN; VNNI makes it fast)."""
    return "x86" in torch.backends.quantized.supported_engines


def fast_precisions(device: torch.device) -> tuple[str, ...]:
    """The precisions this device computes natively, fastest first."""
    if device.type == "cuda":
        return ("bf16", "fp16", "fp32") if torch.cuda.is_bf16_supported() else ("fp16", "fp32")
    return ("bf16", "fp32") if cpu_has_fast_bf16() else ("fp32",)


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str | None]:
    """(precision to use, a note when it differs from what was asked).

    A precision the device lacks falls back to fp32 and says so: never silently wrong.
    """
    if precision not in PRECISIONS:
        raise HardwareError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    available = fast_precisions(device)
    if precision == "auto":
        return available[0], None
    if precision in available or (precision == "int8" and device.type == "cpu" and cpu_has_int8()):
        return precision, None
    where = "this CPU" if device.type == "cpu" else torch.cuda.get_device_name(device)
    return "fp32", f"{precision} is not supported fast on {where}: running fp32 instead"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"
