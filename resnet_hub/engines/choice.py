"""The one engine chooser (:func:`pick`) and the Predictor's use of it (:func:`choose`), with its evidence."""

from __future__ import annotations

import copy
import functools
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from .. import atomic
from ..hardware import cpu_has_fast_bf16, cpu_has_int8, fast_precisions, synchronize
from ..model import ResNet

from .base import CHOICE_FORMAT, ENGINES, MAX_REL_ERROR, MIN_AGREEMENT, EngineError, _digest
from .cuda_engine import CUDA_ENGINES, CudaEngine, cuda_candidates
from .openvino_engine import OPENVINO_EXTRA, OpenVINOEngine, nncf_version, openvino_version
from .torch_engine import TorchEngine


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
        fast = fast_precisions(device)
        return [("torch", p) for p in fast] + cuda_candidates(fast)
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
    if engine in CUDA_ENGINES:
        if device.type != "cuda":
            raise EngineError(f"{engine} runs on a CUDA GPU")
        return CudaEngine(model, device, precision, compile=engine == "cuda compiled")
    if precision in ("bf16", "fp16") and precision not in fast_precisions(device):
        raise EngineError(f"{precision} is not fast on this {'CPU' if device.type == 'cpu' else 'GPU'}")
    return TorchEngine(model, device, precision, calibration=calibration, fold=fold, compile=compile)


def check_against_fp32(out: Tensor, reference: Tensor, *, logits: bool = True, trained: bool = False
                       ) -> tuple[float, float | None, str]:
    """(relative error, top-1 agreement, why it fails or "") of a candidate's output against fp32's.

    ``logits``: a Predictor's output, whose top-1 agreement is reported (and, for ``trained`` weights, required);
    otherwise features (a frozen part's), judged by their relative error alone.
    """
    out = out.float().cpu()
    if not torch.isfinite(out).all():
        return float("inf"), 0.0 if logits else None, f"non-finite {'logits' if logits else 'features'}"
    rel = ((out - reference).norm() / reference.norm().clamp_min(1e-12)).item()
    if not logits:
        return rel, None, f"feature error {rel:.3f} > {MAX_REL_ERROR}" if rel > MAX_REL_ERROR else ""
    agree = (out.argmax(1) == reference.argmax(1)).float().mean().item()
    if rel > MAX_REL_ERROR:
        return rel, agree, f"logit error {rel:.3f} > {MAX_REL_ERROR}"
    if trained and agree < MIN_AGREEMENT:
        return rel, agree, f"top-1 agreement {agree:.1%} < {MIN_AGREEMENT:.0%}"
    return rel, agree, ""


def check(engine_fn: Callable[[Tensor], tuple[Tensor, Tensor]], images: Tensor, reference: Tensor, *,
          trained: bool) -> tuple[float, float, str]:
    """(relative logit error, top-1 agreement, why it fails or "") of an engine on held-out images."""
    out = torch.cat([engine_fn(chunk)[0].cpu() for chunk in images.split(16)])
    return check_against_fp32(out, reference, logits=True, trained=trained)


def pick(builders: dict[str, Callable[[], Any]], check_one: Callable[[Any], tuple[float, float | None, str]], *,
         fastest: Callable[[dict[str, Any]], dict[str, tuple[float, float]]] | None = None,
         pays: Callable[[str], bool] | None = None) -> tuple[str | None, Any, list[Candidate]]:
    """The one engine chooser: (name, engine, every candidate as found) of the candidate chosen, or (None, None, ...).

    Each candidate is built (an :class:`EngineError`: it cannot run here) and checked against fp32 by ``check_one``
    (which compares logits for a Predictor, features for a frozen part), in the order of ``builders``.

    - ``fastest`` given (a Predictor, which serves for the life of the process): every candidate is checked, and
      the fastest that passes by ``fastest(passed)`` (ms at batch 1 and 8) is chosen.
    - otherwise (a frozen part, which runs once per fine-tune): the first that passes, in order of preference;
      ``pays(name)`` False skips a candidate unbuilt (converting it would not pay within the run).
    """
    found, built = [], {}
    for name, make in builders.items():
        if pays is not None and not pays(name):
            continue
        try:
            engine = make()
            rel, agree, why = check_one(engine)
        except EngineError as e:
            found.append(Candidate(name, False, why=str(e)))
            continue
        found.append(Candidate(name, not why, rel, agree, None, why))
        if why:
            continue
        if fastest is None:
            return name, engine, found
        built[name] = engine
    if fastest is None or not built:
        return None, None, found
    speeds = fastest(built)
    for c in found:
        if c.name in speeds:
            c.b1_ms, c.b8_ms = speeds[c.name]
    chosen = min((c for c in found if c.passed), key=lambda c: c.b1_ms + c.b8_ms).name
    return chosen, built[chosen], found


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


def candidate_builders(model: ResNet, device: torch.device, *, engine: str = "auto", calibration: Tensor | None = None,
                       cache_dir: Path | None = None, weights_key: str = "", fold: bool = True,
                       compile: bool = False) -> dict[str, Callable[[], Any]]:
    """A builder of each candidate :func:`choose` tries here, by name ("torch bf16", "cuda graphs fp16" ...)."""
    return {f"{e} {p}": functools.partial(build, model, device, e, p, calibration=calibration, cache_dir=cache_dir,
                                          weights_key=weights_key, fold=fold, compile=compile)
            for e, p in candidates(device, engine)}


def choose(model: ResNet, device: torch.device, *, engine: str, calibration: Tensor, check_images: Tensor,
           trained: bool, check_set: str, cache_dir: Path | None, weights_key: str, fold: bool = True,
           compile: bool = False, extra: dict[str, Callable[[], Any]] | None = None, stop: Any = None):
    """(engine, EngineChoice): the fastest candidate that passes its check against fp32.

    ``extra`` maps a name to a builder of a further candidate (tests pass a broken one). ``stop`` (a
    threading.Event; a background choice's) set: the candidates not yet built are skipped and nothing is cached.
    A cached choice is reused when the chosen engine passes its check again; otherwise every
    candidate is built, checked and timed afresh.
    """
    start = time.perf_counter()
    gate = (f"relative logit error <= {MAX_REL_ERROR} and top-1 agreement >= {MIN_AGREEMENT:.0%} against fp32"
            if trained else
            f"relative logit error <= {MAX_REL_ERROR} against fp32 (random weights: no accuracy to protect, "
            f"so top-1 agreement is reported but not required)")
    # The reference runs where the candidates run: a model handed over on the CPU is copied to the GPU for it.
    on_device = model if next(model.parameters()).device.type == device.type else copy.deepcopy(model).to(device)
    with torch.inference_mode():
        reference = torch.cat([on_device(chunk.to(device)).float().cpu() for chunk in check_images.split(16)])
    del on_device
    builders = candidate_builders(model, device, engine=engine, calibration=calibration, cache_dir=cache_dir,
                                  weights_key=weights_key, fold=fold, compile=compile)
    builders.update(extra or {})
    if stop is not None:
        builders = {name: functools.partial(_unless_stopped, stop, make) for name, make in builders.items()}
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
    chosen, engine_fn, found = pick(builders, lambda e: check(e, check_images, reference, trained=trained),
                                    fastest=lambda built: measure(built, check_images, device))
    if stop is not None and stop.is_set():
        raise EngineError("the choice was stopped before every candidate was checked")
    if chosen is None:
        raise EngineError("no engine passed its check against fp32: " + "; ".join(c.describe() for c in found))
    choice = EngineChoice(chosen, found, gate, check_set, time.perf_counter() - start)
    _write_choice(choice_file, choice)
    return engine_fn, choice


def _unless_stopped(stop, make: Callable[[], Any]) -> Any:
    if stop.is_set():
        raise EngineError("stopped")
    return make()


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


