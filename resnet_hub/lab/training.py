"""The two training experiments, degradation and plain-vs-resnet: one recipe, the digits kept on the device."""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hardware import resolve_device
from .nets import digits, net_name, network, plain_cnn
from .results import LabEvent, Reporter, TrainingResult, TrainingRun, environment, finite_or_none
from .settings import CACHED_SETTINGS, DegradationSettings, PlainVsResNetSettings, Recipe


def degradation(settings: DegradationSettings | None = None, *, on_event: Callable[[LabEvent], None] | None = None,
                stop: threading.Event | None = None, device: str = "auto") -> TrainingResult:
    """Plain and residual nets at each depth, one recipe, every seed; their training and validation curves.

    >>> result = degradation(LIVE_SETTINGS["degradation"])  # doctest: +SKIP
    >>> [(o["claim"], o["holds"]) for o in result.orderings()]  # doctest: +SKIP
    """
    settings = settings or CACHED_SETTINGS["degradation"]
    settings.validate()
    dev = resolve_device(device)
    result = TrainingResult("degradation", settings, environment=environment(dev))
    nets = [(net_name(family, depth), family, depth, functools.partial(network, family, depth, settings.width))
            for depth in sorted(settings.depths) for family in ("plain", "residual")]
    return _train_all(result, nets, settings.seeds, settings.recipe, dev, on_event, stop)


def plain_vs_resnet(settings: PlainVsResNetSettings | None = None, *,
                    on_event: Callable[[LabEvent], None] | None = None, stop: threading.Event | None = None,
                    device: str = "auto") -> TrainingResult:
    """The plain CNN of the MNIST lesson against a small ResNet, same recipe and digits."""
    settings = settings or CACHED_SETTINGS["plain-vs-resnet"]
    settings.validate()
    dev = resolve_device(device)
    result = TrainingResult("plain-vs-resnet", settings, environment=environment(dev))
    depth = settings.resnet_depth
    nets = [("cnn", "cnn", 4, functools.partial(plain_cnn, settings.cnn_channels)),
            (net_name("residual", depth), "residual", depth,
             functools.partial(network, "residual", depth, settings.width))]
    return _train_all(result, nets, settings.seeds, settings.recipe, dev, on_event, stop)


def _train(run: TrainingRun, model: nn.Module, recipe: Recipe, device: torch.device, report: Reporter,
           stop: threading.Event | None) -> None:
    """Train ``model`` with ``recipe``, filling ``run``'s curves as it goes."""
    x_train, y_train, x_val, y_val = digits()
    # channels_last: about 15% faster convolutions on CPU for these small nets, and the layout tensor cores want.
    x_train, x_val = (x.to(device, memory_format=torch.channels_last) for x in (x_train, x_val))
    y_train, y_val = y_train.to(device), y_val.to(device)
    if recipe.train_limit is not None:  # a fixed random subset: the split is ordered by class
        keep = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(0))[: recipe.train_limit]
        x_train, y_train = x_train[keep.to(device)], y_train[keep.to(device)]
    n, bs = len(y_train), recipe.batch_size
    steps_per_epoch = n // bs  # the last partial batch is dropped: every step sees a full batch
    total = recipe.epochs * steps_per_epoch
    warmup = round(recipe.warmup_epochs * steps_per_epoch)
    log_every = max(1, steps_per_epoch // recipe.points_per_epoch)
    model.to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=recipe.warmup_lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)
    order = torch.Generator().manual_seed(run.seed)
    start, step = time.perf_counter(), 0
    for epoch in range(recipe.epochs):
        perm = torch.randperm(n, generator=order).to(device)
        sums = torch.zeros(4, device=device)  # loss and errors, this epoch and since the last point
        for i in range(steps_per_epoch):
            if stop is not None and stop.is_set():
                run.status, run.seconds = "stopped", time.perf_counter() - start
                return
            for group in opt.param_groups:
                group["lr"] = _lr(recipe, step, warmup, total)
            idx = perm[i * bs : (i + 1) * bs]
            logits = model(x_train[idx])
            loss = F.cross_entropy(logits, y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            report.done += 1
            errors = (logits.argmax(1) != y_train[idx]).float().mean()
            sums += torch.stack([loss.detach(), errors, loss.detach(), errors])
            if not math.isfinite(loss.item()):
                run.status, run.seconds = "diverged", time.perf_counter() - start
                report("net", f"{run.net} (seed {run.seed}) diverged at step {step}", run.net, run.seed)
                return
            if (i + 1) % log_every == 0:
                loss_pt, err_pt = (sums[2:] / log_every).tolist()
                run.steps.append(step)
                run.step_loss.append(finite_or_none(loss_pt))
                run.step_error.append(err_pt)
                sums[2:] = 0
                report("step", f"{run.net} (seed {run.seed}) step {step}/{total}: loss {loss_pt:.3f}",
                       run.net, run.seed)
        loss_ep, err_ep = (sums[:2] / steps_per_epoch).tolist()
        run.epochs.append(epoch + 1)
        run.train_loss.append(finite_or_none(loss_ep))
        run.train_error.append(err_ep)
        run.val_accuracy.append(_accuracy(model, x_val, y_val))
        report("epoch", f"{run.net} (seed {run.seed}) epoch {epoch + 1}/{recipe.epochs}: training error "
                        f"{err_ep:.1%}, validation accuracy {run.val_accuracy[-1]:.1%}", run.net, run.seed)
    run.final_train_error = 1 - _accuracy(model, x_train, y_train)
    run.final_val_accuracy = run.val_accuracy[-1]
    run.status, run.seconds = "done", time.perf_counter() - start


def _lr(recipe: Recipe, step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return recipe.warmup_lr
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


@torch.no_grad()
def _accuracy(model: nn.Module, x: Tensor, y: Tensor, batch: int = 500) -> float:
    model.eval()
    correct = sum(int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum()) for i in range(0, len(y), batch))
    model.train()
    return correct / len(y)


def _steps(recipe: Recipe) -> int:
    n = recipe.train_limit or len(digits()[1])
    return recipe.epochs * (n // recipe.batch_size)


def _train_all(result: TrainingResult, nets: list[tuple[str, str, int | None, Callable[[], nn.Module]]],
               seeds: Sequence[int], recipe: Recipe, device: torch.device,
               on_event: Callable[[LabEvent], None] | None, stop: threading.Event | None) -> TrainingResult:
    """Train each (name, family, depth, builder) with each seed, seed by seed: after seed 0 every net has a curve."""
    start = time.perf_counter()
    report = Reporter(result.experiment, result, len(nets) * len(seeds) * _steps(recipe), on_event)
    report("start", f"{result.experiment}: {', '.join(n[0] for n in nets)}; seeds {', '.join(map(str, seeds))}")
    for seed in seeds:
        for name, family, depth, builder in nets:
            if stop is not None and stop.is_set():  # between two runs: nothing of the next one to keep
                return _stopped(result, report, f"stopped before {name} (seed {seed}): the curves so far are kept")
            torch.manual_seed(seed)  # the same seed gives plain-N and resnet-N the same initial weights
            model = builder()
            run = TrainingRun(name, family, depth, seed, sum(p.numel() for p in model.parameters()))
            result.runs.append(run)
            _train(run, model, recipe, device, report, stop)
            result.seconds = time.perf_counter() - start
            if run.status == "stopped":
                return _stopped(result, report, f"stopped during {name} (seed {seed}): the curves so far are kept")
            if run.status == "done":
                report("net", f"{name} (seed {seed}): final training error {run.final_train_error:.2%}", name, seed)
    report.done = report.total
    report("done", f"{result.experiment} done in {result.seconds:.0f} s")
    return result


def _stopped(result: TrainingResult, report: Reporter, message: str) -> TrainingResult:
    result.stopped = True
    report("stopped", message)
    return result
