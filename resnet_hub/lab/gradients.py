"""Gradients at initialisation: plain against residual, with and without BatchNorm, naive against Kaiming init."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hardware import resolve_device
from ..model import ResNet, main_path_convs
from .nets import INITS, digits, initialise, net_name, network
from .results import GradientNet, GradientResult, LabEvent, Reporter, environment, finite_or_none
from .settings import CACHED_SETTINGS, GradientSettings

# Activations (forward) or the backward signal (first block's over last's) beyond this factor either way are
# reported as exploded/exploding or vanished/vanishing: three orders of magnitude.
EXTREME = 1e3


def gradients(settings: GradientSettings | None = None, *, on_event: Callable[[LabEvent], None] | None = None,
              stop: threading.Event | None = None, device: str = "auto") -> GradientResult:
    """Gradient norms of every convolution at initialisation: plain/residual x BatchNorm or not x naive/Kaiming."""
    settings = settings or CACHED_SETTINGS["gradients"]
    settings.validate()
    dev = resolve_device(device)
    result = GradientResult("gradients", settings, environment=environment(dev))
    variants = [(depth, family, bn, init) for depth in sorted(settings.depths) for family in ("plain", "residual")
                for bn in (True, False) for init in INITS]
    report = Reporter("gradients", result, len(variants), on_event)
    start = time.perf_counter()
    x_train, y_train, _, _ = digits()
    batch = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(settings.seed))[: settings.batch_size]
    x, y = x_train[batch].to(dev), y_train[batch].to(dev)
    report("start", f"gradients at initialisation: {len(variants)} nets on one batch of {len(y)} digits")
    for depth, family, bn, init in variants:
        if stop is not None and stop.is_set():
            result.stopped = True
            report("stopped", "stopped: the nets measured so far are kept")
            break
        torch.manual_seed(settings.seed)
        model = initialise(network(family, depth, settings.width, batchnorm=bn), init).to(dev).train()
        result.nets.append(_measure_gradients(model, x, y, net_name(family, depth), family, depth, bn, init))
        report.done += 1
        result.seconds = time.perf_counter() - start
        net = result.nets[-1]
        report("net", f"{net.net} ({'BN' if bn else 'no BN'}, {init} init): forward {net.forward}, "
                      f"backward {net.backward}", net.net)
    result.seconds = time.perf_counter() - start
    if not result.stopped:
        report("done", f"gradients done in {result.seconds:.1f} s")
    return result


def _measure_gradients(model: ResNet, x: Tensor, y: Tensor, name: str, family: str, depth: int, bn: bool,
                       init: str) -> GradientNet:
    # The stem's output (its ReLU is the model's own, used nowhere else) and each block's, input to output.
    names = ["stem"] + [f"{stage}.{i}" for stage in model.stage_names for i in range(len(getattr(model, stage)))]
    modules = [model.relu] + [b for stage in model.stage_names for b in getattr(model, stage)]
    outputs: list[Tensor] = []

    def keep(_module: nn.Module, _inputs: Any, out: Tensor) -> None:
        out.retain_grad()
        outputs.append(out)

    hooks = [m.register_forward_hook(keep) for m in modules]
    try:
        logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    input_rms = float(x.pow(2).mean().sqrt())
    rms = [finite_or_none(float(o.detach().pow(2).mean().sqrt())) for o in outputs]
    loss = F.cross_entropy(logits, y)
    convs = main_path_convs(model)
    grads: list[float | None] = [None] * len(convs)
    signals: list[float | None] = [None] * len(outputs)
    if math.isfinite(loss.item()):
        loss.backward()
        grads = [finite_or_none(float(c.weight.grad.norm())) for _, c in convs]
        signals = [finite_or_none(float(o.grad.norm())) for o in outputs]
    if any(a is None or a > EXTREME * input_rms for a in rms) or not bool(torch.isfinite(logits).all()):
        forward = "exploded"
    else:
        forward = "vanished" if rms[-1] < input_rms / EXTREME else "ok"
    signal_ratio = _ratio(signals[0], signals[-1])
    if signal_ratio is None:
        backward = "exploding" if forward == "exploded" else "vanishing"
    else:
        backward = "vanishing" if signal_ratio < 1 / EXTREME else "exploding" if signal_ratio > EXTREME else "healthy"
    return GradientNet(name, family, depth, bn, init, [n for n, _ in convs], grads, _ratio(grads[0], grads[-1]),
                       names, rms, signals, signal_ratio, input_rms, finite_or_none(loss.item()), forward, backward)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return finite_or_none(a / b)
