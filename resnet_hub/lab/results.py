"""What the lab's experiments return: curves and tables as plain data, with ``to_dict`` for JSON and the app."""

from __future__ import annotations

import dataclasses
import datetime
import math
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..hardware import cpu_model_name
from .settings import DegradationSettings, GradientSettings, PlainVsResNetSettings, settings_from_dict


@dataclass(frozen=True)
class LabEvent:
    """One report from a running experiment.

    ``result`` is the experiment's result so far (curves up to this point), the same object that is returned at
    the end: read it, or take ``result.to_dict()``, inside the callback, which runs on the experiment's thread.
    """

    kind: str  # "start", "step", "epoch", "net" (one net done), "done", "stopped"
    experiment: str
    progress: float  # 0..1 of the whole experiment
    message: str
    result: Any
    net: str | None = None
    seed: int | None = None


@dataclass
class TrainingRun:
    """The curves of one net trained with one seed. Errors and accuracies are fractions (0.05 is 5%)."""

    net: str  # "plain-20", "resnet-56", "cnn"
    family: str  # "plain", "residual" or "cnn"
    depth: int | None  # weighted layers
    seed: int
    parameters: int
    epochs: list[int] = field(default_factory=list)
    train_loss: list[float | None] = field(default_factory=list)  # mean over the epoch's steps, in train mode
    train_error: list[float | None] = field(default_factory=list)  # likewise
    val_accuracy: list[float | None] = field(default_factory=list)  # the 1,000 held-out digits, after the epoch
    steps: list[int] = field(default_factory=list)  # points_per_epoch points per epoch
    step_loss: list[float | None] = field(default_factory=list)
    step_error: list[float | None] = field(default_factory=list)
    final_train_error: float | None = None  # every training digit, eval mode, after the last epoch
    final_val_accuracy: float | None = None
    seconds: float = 0.0
    status: str = "running"  # "done", "stopped" or "diverged" (a non-finite loss ended it)


@dataclass
class TrainingResult:
    """A degradation or plain-vs-resnet experiment: every run's curves, and the verdicts drawn from them."""

    experiment: str
    settings: DegradationSettings | PlainVsResNetSettings
    runs: list[TrainingRun] = field(default_factory=list)
    stopped: bool = False
    seconds: float = 0.0
    environment: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> list[dict[str, Any]]:
        """One row per net: final training error (mean, min and max over the seeds) and validation accuracy."""
        rows = []
        for net in dict.fromkeys(r.net for r in self.runs):
            runs = [r for r in self.runs if r.net == net]
            errors = [r.final_train_error for r in runs if r.final_train_error is not None]
            accs = [r.final_val_accuracy for r in runs if r.final_val_accuracy is not None]
            rows.append({
                "net": net, "layers": runs[0].depth, "parameters": runs[0].parameters,
                "seeds": ",".join(str(r.seed) for r in runs),
                "train error (mean)": _mean(errors), "train error (min)": min(errors, default=None),
                "train error (max)": max(errors, default=None), "val accuracy (mean)": _mean(accs),
                "status": ",".join(sorted({r.status for r in runs})),
            })
        return rows

    def orderings(self) -> list[dict[str, Any]]:
        """The paper's claims, each judged on the final training errors over the seeds.

        "Worse" is a mean beyond the other net's worst seed; "no worse" a mean within or below its range.
        """
        if self.experiment != "degradation":
            return []
        depths = sorted(self.settings.depths)
        shallow, deep = depths[0], depths[-1]
        out = []

        def errors(net: str) -> list[float]:
            return [r.final_train_error for r in self.runs if r.net == net and r.final_train_error is not None]

        def add(claim: str, a: str, b: str, holds: Callable[[float, list[float]], bool]) -> None:
            ea, eb = errors(a), errors(b)
            ok = holds(sum(ea) / len(ea), eb) if ea and eb else None
            out.append({"claim": claim, "holds": ok, "net": a, "train error (mean)": _mean(ea), "against": b,
                        "against: train error (mean)": _mean(eb), "against: range": _range(eb)})

        add(f"plain-{deep} trains worse than plain-{shallow}", f"plain-{deep}", f"plain-{shallow}",
            lambda m, other: m > max(other))
        add(f"resnet-{deep} trains no worse than resnet-{shallow}", f"resnet-{deep}", f"resnet-{shallow}",
            lambda m, other: m <= max(other))
        add(f"resnet-{deep} trains better than plain-{deep}", f"resnet-{deep}", f"plain-{deep}",
            lambda m, other: m < min(other))
        return out

    def rows(self) -> list[dict[str, Any]]:
        """Long format for a line plot: one row per run and epoch."""
        return [{"net": r.net, "seed": r.seed, "epoch": e, "train loss": loss, "train error": err, "val accuracy": acc}
                for r in self.runs for e, loss, err, acc in zip(r.epochs, r.train_loss, r.train_error, r.val_accuracy)]

    def to_dict(self) -> dict[str, Any]:
        return {**_header(self), "runs": [dataclasses.asdict(r) for r in self.runs],
                "summary": self.summary(), "orderings": self.orderings()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingResult:
        return cls(d["experiment"], settings_from_dict(d["experiment"], d["settings"]),
                   [TrainingRun(**r) for r in d["runs"]], d["stopped"], d["seconds"], d["environment"])


@dataclass
class GradientNet:
    """One net at initialisation: forward and backward on one real batch, in train mode (BatchNorm on batch stats).

    Two views of the backward pass: the weight gradient of each convolution (what the optimiser gets), and the
    gradient of the loss with respect to each block's output (the signal that flows back through the depth).
    """

    net: str  # "plain-56", "resnet-56"
    family: str
    depth: int
    batchnorm: bool
    init: str  # "kaiming" or "naive" (every conv weight from N(0, 0.01^2))
    conv_names: list[str]  # the main path's convolutions, input to output
    grad_norms: list[float | None]  # weight-gradient L2 norm of each
    first_last_ratio: float | None  # grad norm of the first conv over the last's; None when both are 0
    block_names: list[str]  # "stem", then each block: "layer1.0", ...
    activation_rms: list[float | None]  # RMS of each block's output
    signal_norms: list[float | None]  # L2 norm of d(loss)/d(block output)
    signal_ratio: float | None  # the stem's signal norm over the last block's
    input_rms: float
    loss: float | None
    forward: str  # "ok", "exploded" (an RMS EXTREME times the input's, or non-finite) or "vanished" (1/EXTREME)
    backward: str  # "healthy", "vanishing" or "exploding": the signal ratio beyond 1/EXTREME or EXTREME

    def row(self) -> dict[str, Any]:
        return {
            "net": self.net, "batchnorm": "yes" if self.batchnorm else "no", "init": self.init,
            "grad first conv": self.grad_norms[0], "grad last conv": self.grad_norms[-1],
            "grad first/last": self.first_last_ratio, "signal first/last": self.signal_ratio,
            "output RMS": self.activation_rms[-1], "forward": self.forward, "backward": self.backward,
        }


@dataclass
class GradientResult:
    experiment: str
    settings: GradientSettings
    nets: list[GradientNet] = field(default_factory=list)
    stopped: bool = False
    seconds: float = 0.0
    environment: dict[str, Any] = field(default_factory=dict)

    def table(self) -> list[dict[str, Any]]:
        return [n.row() for n in self.nets]

    def to_dict(self) -> dict[str, Any]:
        return {**_header(self), "nets": [dataclasses.asdict(n) for n in self.nets], "table": self.table()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GradientResult:
        return cls(d["experiment"], settings_from_dict(d["experiment"], d["settings"]),
                   [GradientNet(**n) for n in d["nets"]], d["stopped"], d["seconds"], d["environment"])


Result = TrainingResult | GradientResult


def _header(result: Result) -> dict[str, Any]:
    return {"experiment": result.experiment, "settings": dataclasses.asdict(result.settings),
            "stopped": result.stopped, "seconds": result.seconds, "environment": result.environment}


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _range(values: Sequence[float]) -> list[float] | None:
    return [min(values), max(values)] if values else None


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no NaN: a non-finite number is stored as null


def environment(device: torch.device) -> dict[str, Any]:
    """Where a result was measured: date, CPU (or GPU), threads, torch."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model_name(), "threads": torch.get_num_threads(), "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "python": platform.python_version(),
    }


class Reporter:
    """Turns progress into LabEvents: steps done over all steps of the experiment."""

    def __init__(self, experiment: str, result: Result, total: int, on_event: Callable[[LabEvent], None] | None):
        self.experiment, self.result, self.total, self.on_event = experiment, result, max(total, 1), on_event
        self.done = 0

    def __call__(self, kind: str, message: str, net: str | None = None, seed: int | None = None) -> None:
        if self.on_event is not None:
            self.on_event(LabEvent(kind, self.experiment, min(self.done / self.total, 1.0), message, self.result,
                                   net, seed))
