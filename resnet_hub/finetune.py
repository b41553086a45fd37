"""Fine-tuning: a short, watchable training run that ends in a saved, loadable model.

The loop is a few named steps: prepare the data on the device once, build the
model and optimiser, then per step augment on the device, forward/backward
under autocast, and report an :class:`Event`. It runs alone or, unchanged,
under ``torchrun`` with DistributedDataParallel (gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .calibration import Calibration, record as record_calibration
from .data import ImageDataset, stratified_split
from .errors import DataError, LayoutError
from .finetune_config import (  # noqa: F401 - re-exported
    DEFAULT_BATCH_SIZE,
    DEFAULT_PRETRAINED_FREEZE,
    FREEZE_ADVICE,
    OPTIMIZERS,
    SMALL_PHOTO_SET,
    FinetuneConfig,
    FinetuneError,
)
from .distributed import World, init_world, run_device
from . import embeddings
from .copies import keep_together, split_groups
from .embeddings import image_key
from .frozen import Unfrozen, cache_features, epoch_view, frozen_trunk, plan_cache, small_photo_freeze
from .hardware import autocast_args, device_name, resolve_precision, synchronize
from .images import to_tensor_batch
from .metadata import Preprocessing
from .model import ARCHITECTURES, UnknownArchitectureError
from .results import ValidationResults
from .hub import hub_repo_id, source_label
from .weights import HubResNet, create, load

MAX_DEVICE_BYTES = 3 * 2**30  # the decoded training set kept on the device, at most
MAX_CARD_MISTAKES = 50  # misclassified images listed in the card and config.json (the total is always given)

@dataclass(frozen=True)
class Event:
    """One report from a run: the CLI draws a progress bar from these, the app live curves."""

    kind: str  # "start", "cached" (frozen features ready), "step", "epoch" (epoch 0: before training), "done", "stopped"
    step: int
    total_steps: int
    epoch: int
    epochs: int
    loss: float | None = None
    train_accuracy: float | None = None
    val_accuracy: float | None = None
    lr: float | None = None
    images_per_s: float | None = None
    eta_s: float | None = None
    message: str = ""
    images: int = 0  # images trained on so far, all processes together
    elapsed_s: float = 0.0  # since the first step began

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class FinetuneResult:
    """A finished or stopped run. ``model`` is None when it was cancelled, or stopped before its first step:
    nothing to keep. A stopped run keeps its model, marked as stopped (``stopped_at``)."""

    model: HubResNet | None
    stopped: bool
    reason: str
    val_accuracy: float | None
    confusion_matrix: list[list[int]] | None
    history: list[Event] = field(default_factory=list)
    images_per_s: float | None = None
    seconds: float = 0.0
    results: ValidationResults | None = None  # per-class metrics and the misclassified images
    stopped_at: dict[str, int] | None = None  # {"epoch", "step", "total_steps"} of a stopped run
    # What computed the frozen-feature cache: "" (no cache), "torch", or "openvino int8" (bf16, fp32), and then
    # where that part came from: "converted", "quantized", "cache" or "memory" (engines.OpenVINOPart.source).
    frozen_part: str = ""
    frozen_part_source: str = ""
    calibration: Calibration | None = None  # the temperature fitted on the validation split, its ECE

    def save(self, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
        if self.model is None:
            raise FinetuneError(f"the run {self.reason}: there are no weights to save")
        return self.model.save_pretrained(folder, overwrite=overwrite)


# ---------------------------------------------------------------------------
# Steps of a run


def scratch_preprocessing(kind: str) -> Preprocessing:
    """What a ``scratch:ARCH`` base sees of data of ``kind``: digits whole at 32 px, photos at 224 px."""
    digits = kind == "digits"
    return Preprocessing(input_size=32 if digits else 224, crop_pct=1.0 if digits else 0.875)


def build_model(config: FinetuneConfig, dataset: ImageDataset, device: torch.device) -> HubResNet:
    """The base model with a new head for the dataset's classes (the base itself is never modified)."""
    if config.base.startswith("scratch:"):
        arch = config.base.split(":", 1)[1]
        model = create(arch, num_classes=len(dataset.classes), labels=dataset.classes,
                       preprocessing=scratch_preprocessing(dataset.kind),
                       zero_init_residual=config.zero_init_residual).to(device)
    else:
        model = _load_base(config, dataset, device)
    changes = {k: v for k, v in (("input_size", config.image_size), ("crop_pct", config.crop_pct)) if v is not None}
    if changes:
        model.info.preprocessing = dataclasses.replace(model.info.preprocessing, **changes)
    return model


def _load_base(config: FinetuneConfig, dataset: ImageDataset, device: torch.device) -> HubResNet:
    try:
        model = load(config.base, device=device)  # a fresh copy: models serving elsewhere are never touched
    except (UnknownArchitectureError, LayoutError) as e:
        raise FinetuneError(f"cannot train from {source_label(config.base)}: {e}. Fine-tuning continues only from a "
                            f"ResNet ({', '.join(ARCHITECTURES)} or a CIFAR-style ResNet): pick one of those or a "
                            f"model fine-tuned here") from None
    # Hub metadata links base_model to huggingface.co: only a repo id belongs there, not a local path.
    model.info.base_model = hub_repo_id(config.base)
    previous = model.info.training.get("name")  # set when the base was fine-tuned here: this continues its training
    if model.labels != list(dataset.classes):
        old_classes = model.config.num_classes
        model.reset_head(len(dataset.classes), dataset.classes)
        model.info.notes.append(
            f"head replaced: the base's {old_classes}-class head does not match the {len(dataset.classes)} classes "
            f"of {dataset.name}, so a new one is trained from random initialisation"
        )
    elif previous:
        model.info.notes.append(
            f"continuing the training of {previous}: the same {len(dataset.classes)} classes, so its trained head is kept"
        )
    return model


def augment_batch(x: Tensor, kind: str, generator: torch.Generator) -> Tensor:
    """Per-image random affine warp, on the batch's device: no decoding, no CPU round trip.

    "digits": rotate +-10 degrees, scale 0.9-1.1, shift +-10%, never mirrored.
    "photo": zoom in up to 1.4x, shift +-10%, mirror half the images.
    """
    if kind == "none":
        return x
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> Tensor:
        return torch.rand(n, generator=generator).mul_(hi - lo).add_(lo)

    if kind == "digits":
        angle, scale = uniform(-10, 10) * math.pi / 180, uniform(0.9, 1.1)
        flip = torch.ones(n)
    else:
        angle, scale = torch.zeros(n), uniform(1.0, 1.4)
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    tx, ty = uniform(-0.2, 0.2), uniform(-0.2, 0.2)  # in [-1, 1] grid units: +-10% of the image
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class _ConvAsMatmul(nn.Conv2d):
    """A convolution computed as one matrix product where that is exact and faster on CPU: the same parameters,
    the same result as the ``nn.Conv2d`` it stands in for.

    oneDNN's bf16 weight-gradient kernels are slow on tiny maps: for a 1x1 map, a 1x1 convolution is about 4x
    slower than the matrix product, a 3x3 one about 30x. Those are ResNet-50's layer4 at 24-32 px.
    - When the output is one pixel, it is the product of the weights with the kernel-sized window at the
      top left of the zero-padded input.
    - A 1x1 convolution is a matrix product over the pixels of a channels_last map.
    The weights are used whole, never sliced: a slice's gradient is a scatter into zeros, slower than the saving.
    """

    def forward(self, x: Tensor) -> Tensor:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        n, c, h, w = x.shape
        if (h + 2 * ph - kh) // sh == 0 and (w + 2 * pw - kw) // sw == 0:
            window = F.pad(x, (pw, pw, ph, ph))[:, :, :kh, :kw]
            weight = self.weight
            if not weight.is_contiguous():  # channels_last weights: flatten in memory order, or every step copies
                weight, window = weight.permute(0, 2, 3, 1), window.permute(0, 2, 3, 1)
            return F.linear(window.reshape(n, -1), weight.flatten(1), self.bias).view(n, -1, 1, 1)
        if (kh, kw) == (1, 1) and (sh, sw) == (1, 1) and (ph, pw) == (0, 0):
            rows = F.linear(x.permute(0, 2, 3, 1).reshape(-1, c), self.weight.flatten(1), self.bias)
            return rows.view(n, h, w, -1).permute(0, 3, 1, 2)  # channels_last memory, NCHW shape
        return super().forward(x)


def _train_convs_as_matmuls(model: nn.Module) -> Callable[[], None]:
    """Swap the convolutions for :class:`_ConvAsMatmul` ones sharing their parameters; returns the undo. The run
    undoes it after its last step, so the model it returns and saves holds ``nn.Conv2d`` modules, as inference and
    int8 quantization expect. (A run that fails returns no model: its private copy needs no undo.)"""
    plain = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if type(child) is nn.Conv2d and child.groups == 1 and child.dilation == (1, 1)
             and child.padding_mode == "zeros" and isinstance(child.padding, tuple)]
    for parent, name, conv in plain:
        fast = _ConvAsMatmul(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                             padding=conv.padding, bias=False, device="meta")
        fast.weight, fast.bias = conv.weight, conv.bias
        setattr(parent, name, fast.train(conv.training))

    def undo() -> None:
        for parent, name, conv in plain:
            setattr(parent, name, conv)

    return undo


def _make_optimizer(model: nn.Module, config: FinetuneConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            # No weight decay on BatchNorm and biases: it only fights their scale (arXiv:1812.01187).
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.peak_lr, momentum=config.momentum, nesterov=True)
    # The fused kernel is one pass over all parameters: on 2 CPU cores it makes AdamW ~10% faster per step for
    # ResNet-50 at 32 px, where the per-tensor loop (the CPU default) is a quarter of the step.
    return torch.optim.AdamW(groups, lr=config.peak_lr, fused=True)


def lr_at(step: int, total_steps: int, config: FinetuneConfig) -> float:
    """Linear warm-up to the peak, then cosine decay to 0 (arXiv:1608.03983), per step."""
    warmup = max(1, int(config.warmup_fraction * total_steps))
    if step < warmup:
        return config.peak_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return config.peak_lr * 0.5 * (1 + math.cos(math.pi * progress))


def _steps_per_epoch(n: int, batch_size: int, world: World) -> int:
    """Steps that cover this process's share (a DistributedSampler pads it to ceil(n / world)).

    A last batch of one image is dropped (a different one each epoch, as the order
    is reshuffled): BatchNorm cannot train on a single value per channel.
    """
    share, local = math.ceil(n / world.size), batch_size // world.size
    steps = math.ceil(share / local)
    return steps - 1 if share % local == 1 and steps > 1 else steps


def _epoch_indices(n: int, epoch: int, config: FinetuneConfig, world: World) -> Tensor:
    """This process's share of the epoch's shuffled order: a DistributedSampler (one replica alone)."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=world.size, rank=world.rank, shuffle=True, seed=config.seed)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler))


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, autocast: dict, batch_size: int = 256) -> tuple[float, Tensor]:
    """(accuracy, predictions) on tensors already on the device."""
    accuracy, probs = _val_probabilities(model, x, y, autocast, batch_size)
    return accuracy, probs.argmax(1)


@torch.no_grad()
def _val_probabilities(model: nn.Module, x: Tensor, y: Tensor, autocast: dict, batch_size: int = 256) -> tuple[float, Tensor]:
    """(accuracy, softmax probabilities (N, classes)) of ``model`` in eval mode, on tensors on the device."""
    was_training = model.training
    model.eval()
    probs = []
    for i in range(0, len(x), batch_size):
        with torch.autocast(**autocast):
            probs.append(model(x[i : i + batch_size]).float().softmax(1))
    model.train(was_training)
    prob = torch.cat(probs) if probs else torch.empty(0, 0, device=x.device)
    return ((prob.argmax(1) == y).float().mean().item() if len(y) else 0.0), prob


# ---------------------------------------------------------------------------
# Defaults from the data


def resolve_freeze(config: FinetuneConfig, dataset: ImageDataset, model: HubResNet) -> tuple[int, str]:
    """(stages to freeze, why): the user's choice, or the default for this base and data."""
    if config.freeze is not None:
        return config.freeze, ""
    if config.base.startswith("scratch:"):
        return -1, "from scratch: every stage trains"
    if dataset.kind != "digits" and len(dataset) < SMALL_PHOTO_SET:
        stages = small_photo_freeze(model)
        return stages, f"freeze {stages} (default): {FREEZE_ADVICE}"
    return -1, f"every stage trains (default for {'digits' if dataset.kind == 'digits' else 'a large photo set'})"


# ---------------------------------------------------------------------------
# The run


def finetune(
    dataset: ImageDataset,
    config: FinetuneConfig | None = None,
    *,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
    cancel: threading.Event | None = None,
) -> FinetuneResult:
    """Fine-tune ``config.base`` on ``dataset``; returns the model with its validation results.

    ``stop`` (a threading.Event) or ``config.time_budget_s`` ends the run at the next step: the model is
    validated and returned marked as stopped (epoch and step in its card). ``cancel`` ends it too and returns
    no model. A stop before the first training step (during feature caching, say) has nothing to keep.

    >>> from resnet_hub.data import mnist_sample
    >>> result = finetune(mnist_sample(), FinetuneConfig(base="scratch:resnet18", epochs=1))  # doctest: +SKIP
    >>> result.save("digits-resnet18")                                                        # doctest: +SKIP
    """
    config = config or FinetuneConfig()
    device = run_device(config.device)
    precision, precision_note = resolve_precision(config.precision, device)
    world = init_world(device)
    emit = on_event if (on_event is not None and world.is_main) else (lambda event: None)
    torch.manual_seed(config.seed)

    config.validate()  # before the split, which cannot take a bad val_fraction
    keys = [image_key(image) for image in dataset.images]
    groups, copies_note = split_groups(dataset, keys)
    train_idx, val_idx, moved = keep_together(*stratified_split(dataset, config.val_fraction, config.seed), groups)
    config.validate(len(train_idx))
    batch_size = config.resolved_batch_size(len(train_idx), world.size)
    if batch_size % world.size:
        raise FinetuneError(f"batch size {batch_size} does not split evenly across {world.size} processes")

    model = build_model(config, dataset, device)
    freeze, freeze_note = resolve_freeze(config, dataset, model)
    model.freeze(freeze)
    n_train = len(train_idx)
    x_all, y_all = _data_on_device(dataset, model.preprocessing, [*train_idx, *val_idx], device)
    x_train, y_train, x_val, y_val = x_all[:n_train], y_all[:n_train], x_all[n_train:], y_all[n_train:]
    augment = config.augment if config.augment != "auto" else dataset.kind
    model = model.to(memory_format=torch.channels_last).train()
    autocast = autocast_args(device, precision)
    generator = torch.Generator().manual_seed(config.seed + world.rank)
    plan = plan_cache(config, model, x_train, len(train_idx), len(val_idx), augment, device, autocast)
    # The resolved settings, as the card records them.
    settings = dataclasses.replace(config, batch_size=batch_size, freeze=freeze)

    steps_per_epoch = _steps_per_epoch(len(train_idx), batch_size, world)
    total_steps = steps_per_epoch * config.epochs
    local_batch = batch_size // world.size
    history: list[Event] = []

    def report(event: Event) -> None:
        history.append(event)
        emit(event)

    batch_note = (f"batch {batch_size} (default {DEFAULT_BATCH_SIZE}, clipped to the {len(train_idx)} training images)"
                  if config.batch_size is None and batch_size < DEFAULT_BATCH_SIZE else "")
    split_note = f"{moved} group{'s' * (moved != 1)} of copies kept on the training side of the split" if moved else ""
    model.info.notes += [n for n in (freeze_note, batch_note, split_note, copies_note, plan.message) if n]  # the app and CLI show them at the end
    notes = [n for n in (precision_note, *model.info.notes) if n]
    report(Event("start", 0, total_steps, 0, config.epochs, message=_start_message(dataset, model, device, precision, world, notes)))
    start = time.perf_counter()

    def should_stop() -> str:
        return _should_stop(stop, cancel, config, start, world, device)

    net: nn.Module = model
    features: list[Tensor] | None = None
    frozen_part = ("", "")
    if plan.cached:
        whole = model.frozen_stages >= len(model.stage_names) and world.size == 1
        order = [keys[i] for i in (*train_idx, *val_idx)]
        view0 = embeddings.known(model, order) if whole else None
        trunk, trunk_note = (None, "") if view0 is not None and plan.views == 1 else frozen_trunk(
            model, x_all, n_train * plan.views + len(val_idx), autocast, config.cache_engine, world.size, dataset.kind)
        cached = cache_features(trunk, x_all, plan, lambda b: augment_batch(b, augment, generator), should_stop,
                                n_train=n_train, view0=view0)
        openvino = getattr(trunk, "precision", None)  # an engines.OpenVINOPart; torch's is a plain function
        frozen_part = (f"openvino {openvino}", trunk.source) if openvino else ("torch", "")
        del trunk, x_all
        if isinstance(cached, str):
            return _nothing_kept(report, history, f"{cached} while caching the frozen features", 0, total_steps, 0,
                                 config, time.perf_counter() - start)
        if whole and view0 is None:
            embeddings.remember(model, order, cached[0])
        elif view0 is not None:
            reused = f"the embeddings of all {len(order)} images read from the inspection's cache"
            trunk_note = "; ".join(filter(None, [reused, trunk_note]))
        features = [view[:n_train] for view in cached]
        x_val = cached[0][n_train:]
        del x_train, cached  # the images are not needed again: the cache stands in for them
        net = Unfrozen(model)
        if trunk_note:
            model.info.notes.append(trunk_note)
        report(Event("cached", 0, total_steps, 0, config.epochs, elapsed_s=time.perf_counter() - start,
                     message=f"frozen features cached in {time.perf_counter() - start:.1f} s"
                             + (f" ({trunk_note})" if trunk_note else "")))
    # On CPU the convolutions train as matrix products until undo_convs(), after the last step.
    undo_convs = _train_convs_as_matmuls(model) if device.type == "cpu" else (lambda: None)
    evaluated: nn.Module = net
    if world.size > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = _make_optimizer(model, config)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if config.val_every_epoch:  # where the curve starts: chance for a new head, the source's own for a continued model
        val_acc, _ = evaluate(evaluated, x_val, y_val, autocast)
        report(Event("epoch", 0, total_steps, 0, config.epochs, val_accuracy=val_acc, lr=0.0,
                     message=f"before training: validation accuracy {val_acc:.2%}"))

    step, seen, stopped_reason = 0, 0, ""
    val_acc, epoch, lr = None, 0, 0.0
    for epoch in range(config.epochs):
        order = _epoch_indices(len(train_idx), epoch, config, world).to(device)
        clean = epoch >= config.epochs - config.clean_epochs
        for i in range(steps_per_epoch):
            stopped_reason = should_stop()
            if stopped_reason:
                break
            batch = order[i * local_batch : (i + 1) * local_batch]
            lr = lr_at(step, total_steps, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if features is not None:
                x = features[epoch_view(epoch, config, plan.views)][batch]
            else:
                x = augment_batch(x_train[batch], "none" if clean else augment, generator)
            loss, correct = _train_step(net, optimizer, scaler, x, y_train[batch], autocast, config)
            step += 1
            seen += len(batch) * world.size
            elapsed = time.perf_counter() - start
            report(Event("step", step, total_steps, epoch, config.epochs, loss=loss, train_accuracy=correct / len(batch), lr=lr,
                         images_per_s=seen / elapsed, eta_s=elapsed / step * (total_steps - step),
                         images=seen, elapsed_s=elapsed))
        if stopped_reason:
            break
        message = f"epoch {epoch + 1} of {config.epochs} done"
        if config.val_every_epoch:
            val_acc, _ = evaluate(evaluated, x_val, y_val, autocast)
            message = f"epoch {epoch + 1}: validation accuracy {val_acc:.2%}"
        report(Event("epoch", step, total_steps, epoch + 1, config.epochs, loss=history[-1].loss, val_accuracy=val_acc, lr=lr,
                     images_per_s=seen / (time.perf_counter() - start), message=message, images=seen))
    undo_convs()
    synchronize(device)
    seconds = time.perf_counter() - start
    speed = seen / seconds if seconds > 0 else None

    if stopped_reason and (step == 0 or (cancel is not None and cancel.is_set())):
        return _nothing_kept(report, history, stopped_reason, step, total_steps, epoch, config, seconds, speed)

    val_acc, probs = _val_probabilities(evaluated, x_val, y_val, autocast)
    model.eval()
    results = ValidationResults.of(y_val, probs, val_idx, dataset.classes, {i: dataset.image_name(i) for i in val_idx})
    stopped_at = {"epoch": epoch + 1, "step": step, "total_steps": total_steps} if stopped_reason else None
    _record_results(model, dataset, settings, val_acc, results, len(train_idx), len(val_idx), precision, seconds,
                    stopped_at, stopped_reason, plan)
    calibrated = record_calibration(model, probs, y_val, seed=config.seed)
    if stopped_reason:
        message = (f"{stopped_reason} at epoch {epoch + 1}, step {step} of {total_steps}: kept, validation accuracy "
                   f"{val_acc:.2%}")
        report(Event("stopped", step, total_steps, epoch, config.epochs, val_accuracy=val_acc, images_per_s=speed,
                     message=message, images=seen))
    else:
        report(Event("done", step, total_steps, config.epochs, config.epochs, val_accuracy=val_acc, images_per_s=speed,
                     message=f"done in {seconds:.0f} s: validation accuracy {val_acc:.2%}"))
    return FinetuneResult(model, bool(stopped_reason), stopped_reason or "finished", val_acc, results.confusion_matrix,
                          history, speed, seconds, results=results, stopped_at=stopped_at, frozen_part=frozen_part[0],
                          frozen_part_source=frozen_part[1], calibration=calibrated)


def _nothing_kept(report, history, reason, step, total_steps, epoch, config, seconds, speed=None) -> FinetuneResult:
    why = "cancelled: nothing saved" if reason.startswith("cancelled") else f"{reason}: nothing learned yet, nothing saved"
    report(Event("stopped", step, total_steps, epoch, config.epochs, message=why))
    return FinetuneResult(None, True, reason, None, None, history, speed, seconds)


def _train_step(net, optimizer, scaler, x, y, autocast, config) -> tuple[float, int]:
    if x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(**autocast):
        logits = net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item(), int((logits.argmax(1) == y).sum())


def _should_stop(stop: threading.Event | None, cancel: threading.Event | None, config: FinetuneConfig, start: float,
                 world: World, device: torch.device) -> str:
    reason = ""
    if cancel is not None and cancel.is_set():
        reason = "cancelled on request"
    elif stop is not None and stop.is_set():
        reason = "stopped on request"
    elif config.time_budget_s is not None and time.perf_counter() - start > config.time_budget_s:
        reason = f"stopped at the time budget of {config.time_budget_s:g} s"
    if world.size > 1:
        # Every process must stop at the same step, or the others wait forever in all-reduce.
        flag = torch.tensor([2 if reason.startswith("cancelled") else 1 if reason else 0], dtype=torch.int32,
                            device=device)  # NCCL reduces only CUDA tensors
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        other = {2: "cancelled by another process", 1: "stopped by another process"}.get(int(flag.item()), "")
        reason = reason or other
    return reason


def _data_on_device(dataset, preprocessing, indices, device) -> tuple[Tensor, Tensor]:
    """Decode every image once, through the same transform inference uses, and keep it on the device: one batch in
    the order of ``indices`` (the training rows, then the validation rows), which the run slices without copying."""
    c, s = len(preprocessing.mean), preprocessing.input_size
    needed = len(indices) * c * s * s * 4
    if needed > MAX_DEVICE_BYTES:
        raise DataError(
            f"{len(indices)} images at {s} px need {needed / 2**30:.1f} GiB on the device: "
            f"use a smaller image size (e.g. --image-size 128) or fewer images"
        )
    return _decoded(dataset, indices, preprocessing, device)


def _decoded(dataset: ImageDataset, indices, preprocessing: Preprocessing, device: torch.device,
             chunk: int = 512) -> tuple[Tensor, Tensor]:
    """The images resized and cropped by inference's own pipeline (:func:`~resnet_hub.images.to_tensor_batch`:
    eval_transform's pixels, on every core), on ``device``: on a CPU in one batch, elsewhere ``chunk`` at a time so
    host memory holds one chunk."""
    indices = list(indices)
    y = torch.tensor([dataset.targets[i] for i in indices], dtype=torch.int64, device=device)
    if device.type == "cpu":  # host memory holds the whole set anyway: no staging copy
        return to_tensor_batch([dataset.images[i] for i in indices], preprocessing), y
    c, s = len(preprocessing.mean), preprocessing.input_size
    x = torch.empty((len(indices), c, s, s), dtype=torch.float32, device=device)
    for start in range(0, len(indices), chunk):
        part = indices[start : start + chunk]
        x[start : start + len(part)] = to_tensor_batch([dataset.images[i] for i in part], preprocessing).to(device)
    return x, y


def _record_results(model, dataset, settings, val_acc, results, n_train, n_val, precision, seconds, stopped_at,
                    stopped_reason, plan) -> None:
    info = model.info
    info.metrics = {"accuracy": round(val_acc, 4), "macro_f1": round(results.macro_f1, 4)}
    info.datasets = [dataset.name]
    hyper = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("device", "time_budget_s")}
    # A card is published with the model: it names the base, never where the base sat on this machine.
    hyper.update(base=source_label(settings.base), lr=settings.peak_lr, precision=precision,
                 image_size=model.preprocessing.input_size)
    if plan.cached:
        hyper["cached_views"] = plan.views
    else:
        hyper.pop("cached_views")
    previous = info.training if info.training.get("name") else None  # continued from a model fine-tuned here
    info.training = {
        "name": f"{model.config.architecture}-{dataset.name}",
        "kind": dataset.kind,  # "digits" models get MNIST-style centring of drawings in the app
        "data": f"{dataset.summary()}. Split {n_train} for training and {n_val} for validation (stratified, seed {settings.seed}).",
        "hyperparameters": hyper,
        **results.to_dict(max_mistakes=MAX_CARD_MISTAKES),
        "seconds": round(seconds, 1),
        "notes": [n for n in (plan.message,) if n],
    }
    if dataset.fixes:
        info.training["data_fixes"] = dataset.fixes  # counts of what an inspection's fixes changed, never file names
    if stopped_at is not None:
        info.training["stopped"] = {**stopped_at, "reason": stopped_reason}
    if previous is not None:
        info.training["continued_from"] = {"name": previous.get("name"), "data": previous.get("data"),
                                           "epochs": (previous.get("hyperparameters") or {}).get("epochs")}


def _start_message(dataset, model, device, precision, world, notes) -> str:
    parts = [f"{dataset.summary()}", f"{model.config.architecture} on {device_name(device)}, {precision}"]
    if world.size > 1:
        parts.append(f"{world.size} processes (DistributedDataParallel)")
    return "; ".join(parts + notes)
