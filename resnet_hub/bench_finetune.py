"""`bench-finetune`: resnet-hub's fine-tune against the tutorial loop, on the same photos and machine, end to end."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import torch

from .hardware import device_name, resolve_device, resolve_precision, synchronize
from .weights import create

from .bench import torchvision_reference


# ---------------------------------------------------------------------------
# Fine-tuning throughput


def photo_zip(path, classes: int = 8, per_class: int = 24, side: int = 320, seed: int = 0):
    """A zip of class folders made of real photos (scikit-image's), one photo per class, as JPEG views:
    random crops, scales and mirror images. Stands in for a user's upload when there is no network."""
    import io
    import random
    import zipfile

    from PIL import Image

    from .examples import CALIBRATION_PHOTOS, photo

    rng = random.Random(seed)
    with zipfile.ZipFile(path, "w") as archive:
        for name in CALIBRATION_PHOTOS[:classes]:
            picture = photo(name)
            for i in range(per_class):
                w, h = picture.size
                s = rng.uniform(0.5, 1.0)
                cw, ch = int(w * s), int(h * s)
                x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
                view = picture.crop((x, y, x + cw, y + ch)).resize((side, side * ch // cw))
                if rng.random() < 0.5:
                    view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                buffer = io.BytesIO()
                view.save(buffer, format="JPEG", quality=90)
                archive.writestr(f"photos/{name}/{i:03d}.jpg", buffer.getvalue())
    return path


FINETUNE_BENCH_FREEZES = (4, 3, -1)  # head only, the last stage, everything


def run_finetune_bench(arch: str = "resnet18", *, epochs: int | None = None, image_size: int = 224,
                       per_class: int = 25, classes: int = 8, freezes: tuple[int, ...] = FINETUNE_BENCH_FREEZES,
                       precision: str = "auto", device: str = "auto", wall_arch: str | None = "resnet50",
                       log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """This project's fine-tune against the PyTorch transfer-learning tutorial's loop, in one run.

    Same base weights, data (a zip of real photos, ``classes`` x ``per_class``, at ``image_size`` px), split,
    epochs (the app's default), batch, optimiser, schedule and label smoothing; per frozen-stage setting:
    - tutorial: torchvision's ResNet with ``requires_grad=False`` on the frozen part, ``model.train()``, a
      DataLoader (2 workers) decoding and augmenting every JPEG every epoch, fp32, the whole network every step;
    - resnet-hub: ``finetune()`` with the app's defaults (frozen-feature cache and its views, autocast where the
      CPU runs it fast), timed from the decoded zip to the validated model.
    Images/s are training images per second of wall time (epochs x training images / seconds); both loops'
    validation accuracy on the same held-out split is given beside them. Then a wall-time row: a subprocess
    from the zip to a saved ``wall_arch`` model with the CLI's default settings, Python start-up included.
    """
    import json
    import subprocess
    import sys
    import tempfile
    import zipfile

    from . import engines
    from .data import read_zip, stratified_split
    from .finetune import FinetuneConfig, finetune, lr_at
    from .frozen import prepare_frozen_part
    from .finetune_config import DEFAULT_CACHED_VIEWS
    from .images import eval_transform, load_image, to_tensor_batch, train_transform

    # Imported once per process (1.1 s here) for the per-class results the tutorial loop does not compute:
    # outside the timed runs, or the first row alone would pay it.
    import sklearn.metrics  # noqa: F401

    dev = resolve_device(device)
    epochs = epochs or FinetuneConfig().epochs
    rows, notes = [], []
    # An empty engine cache, for the bench and the subprocess it starts (os.environ restored after).
    with tempfile.TemporaryDirectory() as tmp, \
            mock.patch.dict(os.environ, {"RESNET_HUB_ENGINE_CACHE": f"{tmp}/engine-cache"}):
        archive = photo_zip(f"{tmp}/photos.zip", classes=classes, per_class=per_class)
        dataset = read_zip(archive)
        with zipfile.ZipFile(archive) as z:  # the tutorial loop decodes these bytes again every epoch
            encoded = {n: z.read(n) for n in z.namelist() if n.endswith(".jpg")}
        encoded = [encoded[n] for n in dataset.names]
        base = _bench_base(arch, f"{tmp}/base-{arch}")
        train_idx, val_idx = stratified_split(dataset, 0.2, seed=0)
        for freeze in freezes:
            config = FinetuneConfig(base=str(base), epochs=epochs, freeze=freeze, image_size=image_size,
                                    precision=precision, device=str(dev), val_every_epoch=False)
            batch = config.resolved_batch_size(len(train_idx))
            what = {4: "head only (freeze 4)", 3: "last stage (freeze 3)", -1: "full fine-tune (freeze -1)"}.get(
                freeze, f"freeze {freeze}")
            if log:
                log(f"{what}: tutorial loop ...")
            seconds, tutorial_acc = _tutorial_loop(base, encoded, dataset.targets, train_idx, val_idx, freeze, config,
                                                   batch, len(dataset.classes), dev, lr_at, train_transform,
                                                   eval_transform, load_image, to_tensor_batch)
            tutorial_speed = epochs * len(train_idx) / seconds
            rows.append({"setting": what, "loop": "tutorial (DataLoader, fp32, eager)", "epochs": epochs,
                         "images/s": tutorial_speed, "seconds": seconds, "of which caching s": float("nan"),
                         "val accuracy": tutorial_acc, "speedup": 1.0})
            runs = ("first run on this base", "again, same base") if freeze >= 0 else ("",)
            for run in runs:
                if log:
                    log(f"{what}: resnet-hub{' (' + run + ')' if run else ''} ...")
                engines.forget_converted()  # as in a new process: a converted frozen part comes from the disk cache
                events = []
                start = time.perf_counter()
                result = finetune(dataset, config, on_event=events.append)
                ours_seconds = time.perf_counter() - start
                ours_speed = epochs * len(train_idx) / ours_seconds
                cached = next((e.elapsed_s for e in events if e.kind == "cached"), None)
                used, _ = resolve_precision(precision, dev)
                trunk = (f"OpenVINO {result.frozen_part.split()[1]}, "
                         + ("from the engine cache" if result.frozen_part_source == "cache" else "converted")
                         if result.frozen_part.startswith("openvino") else f"torch {used}")
                how = (f"cache of {DEFAULT_CACHED_VIEWS} views by {trunk}" if cached is not None
                       else "whole network") + f"; training {used}"
                if run == runs[0] and freeze >= 0:  # what the app does after such a run, in its own turn
                    start = time.perf_counter()
                    if prepare_frozen_part(result.model, dataset.kind, precision):
                        run += f"; then its frozen part prepared in {time.perf_counter() - start:.1f} s"
                rows.append({"setting": what, "loop": f"resnet-hub ({how}){'; ' + run if run else ''}",
                             "epochs": epochs, "images/s": ours_speed, "seconds": ours_seconds,
                             "of which caching s": cached if cached is not None else float("nan"),
                             "val accuracy": result.val_accuracy, "speedup": ours_speed / tutorial_speed})
        if wall_arch:
            if log:
                log(f"wall time: zip -> saved {wall_arch} with the default settings ...")
            wall_base = _bench_base(wall_arch, f"{tmp}/base-{wall_arch}")
            out = f"{tmp}/saved-{wall_arch}"
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "resnet_hub", "finetune", "--data", str(archive), "--base",
                                   str(wall_base), "--out", out, "--json", "--device", str(dev)],
                                  capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"the wall-time run failed: {done.stderr[-2000:]}")
            summary = json.loads(done.stdout)
            hyper = summary["hyperparameters"]
            rows.append({"setting": f"wall time: {len(dataset)}-image {len(dataset.classes)}-class zip -> saved "
                                    f"{wall_arch}, defaults (freeze {hyper['freeze']}, batch {hyper['batch_size']})",
                         "loop": "resnet-hub CLI, start-up included", "epochs": hyper["epochs"],
                         "images/s": hyper["epochs"] * len(train_idx) / wall, "seconds": wall,
                         "of which caching s": float("nan"),
                         "val accuracy": summary["val_accuracy"], "speedup": float("nan")})
    notes += [
        f"{arch} at {image_size} px on {dataset.summary()}: {len(train_idx)} to train, {len(val_idx)} to validate; "
        f"batch {batch}; SGD with the same schedule and label smoothing in both loops",
        "base: random-init stand-in saved as a folder (no ImageNet weights on this machine): speed is what this "
        "measures; the accuracy columns compare the two loops on the same split, not transfer quality",
        "the engine cache starts empty: with frozen stages, resnet-hub's first run on the base converts its frozen "
        "part for OpenVINO only when the run is long enough to pay for it; otherwise torch runs it, and the part is "
        "then prepared (converted, quantized, cached: untimed, as the app does in its own turn after such a run), so "
        "the second run reads it from the cache, as a later run in a new process would",
        f"resnet-hub caches {DEFAULT_CACHED_VIEWS} views per image when stages are frozen (the image as served + "
        f"augmented copies); the tutorial augments every image every epoch",
        f"device: {device_name(dev)}; {_cpu_model()}; torch {torch.__version__}",
    ]
    return {"rows": rows, "notes": notes}


def _bench_base(arch: str, folder: str):
    torch.manual_seed(0)
    return create(arch).save_pretrained(folder)


def _cpu_model() -> str:
    from .hardware import cpu_model_name

    return cpu_model_name() or platform.processor() or platform.machine()


def _tutorial_loop(base, encoded, targets, train_idx, val_idx, freeze, config, batch, num_classes, dev, lr_at,
                   train_transform, eval_transform, load_image, to_tensor_batch) -> tuple[float, float]:
    """The PyTorch transfer-learning tutorial's loop (pytorch.org/tutorials/beginner/transfer_learning_tutorial):
    (training seconds, validation accuracy)."""
    import dataclasses

    from .weights import load

    hub_model = load(base, device=dev)
    hub_model.reset_head(num_classes)
    torch.manual_seed(config.seed)
    hub_model.fc.reset_parameters()
    preprocessing = dataclasses.replace(hub_model.preprocessing, input_size=config.image_size)
    model = torchvision_reference(hub_model)
    frozen = [model.conv1, model.bn1, *(getattr(model, f"layer{i}") for i in range(1, freeze + 1))] if freeze >= 0 else []
    for module in frozen:
        for p in module.parameters():
            p.requires_grad = False
    transform = train_transform(preprocessing, augment="photo")

    class Photos(torch.utils.data.Dataset):
        def __len__(self):
            return len(train_idx)

        def __getitem__(self, i):
            j = train_idx[i]
            return transform(load_image(encoded[j])), targets[j]

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay}],
                          lr=config.peak_lr, momentum=config.momentum, nesterov=True)
    loader = torch.utils.data.DataLoader(Photos(), batch_size=batch, shuffle=True, num_workers=2)
    total = len(loader) * config.epochs
    step = 0
    start = time.perf_counter()
    model.train()
    for _ in range(config.epochs):
        for x, y in loader:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, config)
            x, y = x.to(dev), y.to(dev)
            loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=config.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    synchronize(dev)
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        x = to_tensor_batch([load_image(encoded[j]) for j in val_idx], preprocessing).to(dev)
        pred = torch.cat([model(x[i : i + 64]) for i in range(0, len(x), 64)]).argmax(1).cpu()
    accuracy = (pred == torch.tensor([targets[j] for j in val_idx])).float().mean().item()
    return seconds, accuracy

