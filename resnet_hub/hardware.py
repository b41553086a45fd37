"""Which device and precision to run on, decided at run time from what the hardware has."""

from __future__ import annotations

import functools
import os

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


def zero_gpu_space() -> bool:
    """A ZeroGPU Space: a GPU is attached only while a function decorated with ``@spaces.GPU`` runs, so CUDA is not
    visible at start, yet the app's fine-tunes train on it (the ``spaces`` package reads the same variable)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


@functools.cache
def cpu_model_name() -> str:
    """The CPU's model name as the kernel reports it (``lscpu``'s "Model name")."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


@functools.cache
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def int8_peak() -> dict:
    """The CPU's int8 multiply-accumulate peak, from what the machine says about itself.

    physical cores x clock x int8 MACs per cycle of the widest unit the flags show:
    AMX tiles 1024 per core; AVX-512 VNNI 2 ports x 64; AVX-VNNI (256-bit) 2 x 32;
    AVX2 without VNNI 2 x 16 (three instructions per 32 MACs, counted generously).
    """
    import os

    flags = cpu_flags()
    if "amx_int8" in flags:
        unit, macs = "AMX-INT8", 1024
    elif "avx512_vnni" in flags:
        unit, macs = "AVX-512 VNNI (2 x 64)", 128
    elif "avx_vnni" in flags:
        unit, macs = "AVX-VNNI (2 x 32)", 64
    elif "avx2" in flags:
        unit, macs = "AVX2 (2 x 16)", 32
    else:
        unit, macs = "SSE (2 x 8)", 16
    cores = physical_cores()
    ghz = cpu_ghz()
    return {"unit": unit, "macs_per_cycle": macs, "cores": cores, "ghz": ghz,
            "gmacs_per_s": cores * ghz * macs,
            "formula": f"{cores} physical cores x {ghz:.2f} GHz x {macs} int8 MACs/cycle ({unit})",
            "threads": os.cpu_count()}


@functools.cache
def physical_cores() -> int:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; the CPU count when absent."""
    import os

    pairs, phys, core = set(), None, None
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":", 1)[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":", 1)[1].strip()
                elif not line.strip() and core is not None:
                    pairs.add((phys, core))
                    phys = core = None
    except OSError:
        pass
    if core is not None:
        pairs.add((phys, core))
    return len(pairs) or os.cpu_count() or 1


@functools.cache
def cpu_ghz() -> float:
    """The CPU's maximum clock (cpufreq) or, in a VM without it, the clock /proc/cpuinfo reports."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", encoding="ascii") as f:
            return int(f.read().strip()) / 1e6
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1]) / 1000
    except (OSError, ValueError):
        pass
    return float("nan")


def autocast_args(device: torch.device, precision: str) -> dict:
    """``torch.autocast``'s arguments for ``precision`` on ``device`` (fp32: autocast off)."""
    return {"device_type": device.type, "dtype": DTYPES[precision], "enabled": precision != "fp32"}


def elapsed_ms(fn, device: torch.device) -> float:
    """Milliseconds that ``fn()`` takes on ``device``: between CUDA events on a GPU (its own clock, the queued work
    included), else by the wall clock."""
    if device.type != "cuda":
        import time

        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1000
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)
