"""Benchmarks: this project's paths against the plain PyTorch peer, in one run, same weights and inputs.

Printed by ``python -m resnet_hub bench`` and ``python -m resnet_hub bench-finetune``.
Tests check behaviour; speed is reported here, as ratios, with the machine named.
"""

from __future__ import annotations

import copy
import math
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torchvision
from torch import Tensor

from .errors import WeightsNotFoundError
from .hardware import cpu_has_int8, device_name, fast_precisions, resolve_device, resolve_precision, synchronize
from .examples import calibration_images
from .images import to_tensor_batch
from .predict import Predictor
from .store import is_model_folder, starter_folder
from .weights import HubResNet, create, load

def torchvision_reference(model: HubResNet) -> torch.nn.Module:
    """torchvision's own eager fp32 ResNet holding ``model``'s weights (the peer we measure against)."""
    ref = getattr(torchvision.models, model.config.architecture)(num_classes=model.config.num_classes)
    if model.config.stem == "small":
        ref.conv1 = torch.nn.Conv2d(model.config.in_chans, 64, 3, padding=1, bias=False)
        ref.maxpool = torch.nn.Identity()
    ref.load_state_dict(model.state_dict(), strict=True)
    return ref.eval().to(next(model.parameters()).device)


def _time(fn: Callable[[], Any], device: torch.device, runs: int, warmup: int = 2) -> tuple[float, float, float]:
    """(first call, median, p90) in ms."""
    start = time.perf_counter()
    fn()
    synchronize(device)
    first = (time.perf_counter() - start) * 1000
    for _ in range(warmup - 1):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return first, statistics.median(times), float(np.percentile(times, 90))


def _agreement(fast: Tensor, ref: Tensor) -> tuple[float, float]:
    rel = ((fast.float() - ref.float()).norm() / ref.float().norm()).item()
    agree = (fast.argmax(1) == ref.argmax(1)).float().mean().item()
    return rel, agree


def _load_bench_model(name: str, device: torch.device) -> tuple[HubResNet, str, bool]:
    """(model, description of its weights, whether they are trained)."""
    if name.startswith("starter-"):
        arch = name.removeprefix("starter-")
        folder = starter_folder(arch)
        if not is_model_folder(folder):
            raise WeightsNotFoundError(f"no starter {arch} in the store: run `python -m resnet_hub starter` first")
        return load(folder, device=device), "starter (MNIST-trained)", True
    try:
        model = load(name, device=device)
        return model, model.info.source or name, True
    except WeightsNotFoundError:
        torch.manual_seed(0)
        return create(name).to(device).eval(), "random init (Hub offline): agreement not meaningful", False


def run_bench(
    models: list[str],
    *,
    batch_size: int = 32,
    runs: int = 10,
    device: str = "auto",
    variants: list[str] | None = None,
    compile: bool = False,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Latency, throughput and agreement of each fast-path variant against torchvision eager fp32."""
    dev = resolve_device(device)
    names = variants or ["fp32 folded", *(f"{p} folded" for p in fast_precisions(dev) if p != "fp32")]
    if variants is None and dev.type == "cpu" and cpu_has_int8():
        names.append("int8 quantized")
    if compile:
        names += [f"{n} compiled" for n in names if "compiled" not in n]
    rows, notes = [], []
    for model_name in models:
        model, weights, trained = _load_bench_model(model_name, dev)
        kind = model.info.training.get("kind", "photo")
        images = calibration_images(kind, 256 if kind == "digits" else max(32, batch_size))
        batch = to_tensor_batch(images, model.preprocessing)
        x = batch[:batch_size].to(dev)
        if len(x) < batch_size:
            x = x.repeat(math.ceil(batch_size / len(x)), 1, 1, 1)[:batch_size]
        ref = torchvision_reference(model)
        with torch.inference_mode():
            ref_logits = torch.cat([ref(batch[i : i + 64].to(dev)) for i in range(0, len(batch), 64)])
            ref_first, ref_b1, ref_b1_p90 = _time(lambda: ref(x[:1]), dev, runs)
            _, ref_bn, _ = _time(lambda: ref(x), dev, max(3, runs // 3))
        ref_row = {"model": model_name, "weights": weights, "variant": "torchvision eager fp32 (reference)",
                   "b1 median ms": ref_b1, "b1 p90 ms": ref_b1_p90, "b1 speedup": 1.0,
                   f"b{batch_size} img/s": 1000 * batch_size / ref_bn, f"b{batch_size} speedup": 1.0,
                   "rel logit err": 0.0, "top-1 agree": 1.0, "first call ms": ref_first}
        rows.append(ref_row)
        if dev.type == "cuda":
            rows.append(_amp_reference_row(ref, x, dev, runs, ref_row, model_name, weights, batch_size))
        if log:
            log(f"{model_name}: reference measured ({weights})")
        for variant in names:
            precision = variant.split()[0]
            predictor = Predictor(copy.deepcopy(model), dev, precision, compile="compiled" in variant)
            fast_logits = torch.cat([predictor.logits(batch[i : i + 64]) for i in range(0, len(batch), 64)])
            rel, agree = _agreement(fast_logits, ref_logits)
            b1 = predictor.time(batch_size=1, runs=runs, images=x)
            bn = predictor.time(batch_size=batch_size, runs=max(3, runs // 3), images=x)
            rows.append({"model": model_name, "weights": weights, "variant": variant,
                         "b1 median ms": b1.median_ms, "b1 p90 ms": b1.p90_ms, "b1 speedup": ref_b1 / b1.median_ms,
                         f"b{batch_size} img/s": bn.images_per_s, f"b{batch_size} speedup": bn.images_per_s / ref_row[f"b{batch_size} img/s"],
                         "rel logit err": rel, "top-1 agree": agree, "first call ms": b1.first_call_ms})
            if log:
                log(f"{model_name}: {variant} measured")
        notes.append(f"{model_name}: agreement over {len(batch)} real {'MNIST digits' if kind == 'digits' else 'photos'}")
        if not trained:
            notes.append(f"{model_name}: random weights, so top-1 agreement is not meaningful; "
                         f"run with cached Hub weights or --models starter-resnet18 starter-resnet50 for trained ones")
    notes.append(f"device: {device_name(dev)}; {platform.processor() or platform.machine()}; torch {torch.__version__}")
    return {"rows": rows, "notes": notes}


def _amp_reference_row(ref, x, dev, runs, ref_row, model_name, weights, batch_size) -> dict[str, Any]:
    """On a GPU the fair peer is torchvision eager under autocast (AMP), not fp32: measured too."""
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def amp(batch):
        with torch.autocast("cuda", dtype=dtype):
            return ref(batch)

    with torch.inference_mode():
        first, b1, b1_p90 = _time(lambda: amp(x[:1]), dev, runs)
        _, bn, _ = _time(lambda: amp(x), dev, max(3, runs // 3))
    return {"model": model_name, "weights": weights, "variant": f"torchvision eager AMP ({str(dtype)[6:]})",
            "b1 median ms": b1, "b1 p90 ms": b1_p90, "b1 speedup": ref_row["b1 median ms"] / b1,
            f"b{batch_size} img/s": 1000 * batch_size / bn,
            f"b{batch_size} speedup": 1000 * batch_size / bn / ref_row[f"b{batch_size} img/s"],
            "rel logit err": float("nan"), "top-1 agree": float("nan"), "first call ms": first}


# ---------------------------------------------------------------------------
# Fine-tuning throughput


def photo_zip(path, classes: int = 8, per_class: int = 24, side: int = 320, seed: int = 0):
    """A zip of class folders made of real photos (scikit-image's), one photo per class, as JPEG views:
    random crops, scales and mirror images. Stands in for a user's upload when there is no network."""
    import io
    import random
    import zipfile

    from PIL import Image

    from .examples import CALIBRATION_PHOTOS

    import skimage.data

    rng = random.Random(seed)
    with zipfile.ZipFile(path, "w") as archive:
        for name in CALIBRATION_PHOTOS[:classes]:
            photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
            for i in range(per_class):
                w, h = photo.size
                s = rng.uniform(0.5, 1.0)
                cw, ch = int(w * s), int(h * s)
                x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
                view = photo.crop((x, y, x + cw, y + ch)).resize((side, side * ch // cw))
                if rng.random() < 0.5:
                    view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                buffer = io.BytesIO()
                view.save(buffer, format="JPEG", quality=90)
                archive.writestr(f"photos/{name}/{i:03d}.jpg", buffer.getvalue())
    return path


def _steady_rate(step_times: list[tuple[int, float]], skip: int = 2) -> float:
    """Images/s over consecutive steps after ``skip`` warm-up steps: (images, seconds) per step."""
    steps = step_times[skip:]
    return sum(n for n, _ in steps) / sum(t for _, t in steps)


def run_finetune_bench(data: str = "photos", steps: int = 20, batch_size: int = 32, arch: str = "resnet18",
                       image_size: int | None = None, device: str = "auto",
                       log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Images/s of this project's loop against a tutorial loop (a DataLoader over PIL transforms, fp32, eager,
    NCHW), on the same model, data, batch size and optimiser, in one run. Warm-up steps are excluded from both,
    and our per-epoch validation too.

    ``data``: "photos" (a zip of class folders of real photos, at 128 px) or "mnist-sample" (digits, 32 px).
    """
    import tempfile
    import zipfile

    from PIL import Image

    from .data import mnist_sample, read_zip
    from .finetune import FinetuneConfig, finetune
    from .images import load_image, train_transform
    from .metadata import Preprocessing

    dev = resolve_device(device)
    with tempfile.TemporaryDirectory() as tmp:
        if data == "photos":
            size = image_size or 128
            archive = photo_zip(f"{tmp}/photos.zip")
            dataset = read_zip(archive)
            with zipfile.ZipFile(archive) as z:  # the tutorial loop decodes these bytes again every epoch
                encoded = [z.read(n) for n in sorted(z.namelist()) if n.endswith(".jpg")]
            p = Preprocessing(input_size=size)
            augment = "photo"
        else:
            size = image_size or 32
            dataset = mnist_sample()
            encoded = dataset.images
            p = Preprocessing(input_size=size, crop_pct=1.0)
            augment = "digits"
    targets = dataset.targets
    rows = []

    # The tutorial loop: decode and augment every image every epoch, in DataLoader workers.
    torch.manual_seed(0)
    model = create(arch, num_classes=len(dataset.classes), preprocessing=p).to(dev).train()
    transform = train_transform(p, augment=augment)

    class _Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(encoded)

        def __getitem__(self, i):
            item = encoded[i]
            image = item if isinstance(item, Image.Image) else load_image(item)
            return transform(image), targets[i]

    loader = torch.utils.data.DataLoader(_Images(), batch_size=batch_size, shuffle=True, num_workers=2, drop_last=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    times: list[tuple[int, float]] = []
    while len(times) < steps + 2:
        last = time.perf_counter()
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            synchronize(dev)
            now = time.perf_counter()
            times.append((len(x), now - last))
            last = now
            if len(times) >= steps + 2:
                break
    tutorial = _steady_rate(times)
    rows.append({"loop": "tutorial: DataLoader (2 workers) over PIL decode + transforms, fp32, eager, NCHW",
                 "images/s": tutorial, "speedup": 1.0})
    if log:
        log("tutorial loop measured")

    # This project's loop: decoded once onto the device, augmented there, autocast, channels_last.
    n_train = int(len(targets) * 0.8)
    epochs = max(1, math.ceil((steps + 2) * batch_size / n_train))
    config = FinetuneConfig(base=f"scratch:{arch}", epochs=epochs, batch_size=batch_size, image_size=size,
                            device=str(dev), augment=augment)
    events = []
    finetune(dataset, config, on_event=events.append)
    step_events = [e for e in events if e.kind == "step"]
    ours_times = [(b.images - a.images, b.elapsed_s - a.elapsed_s)
                  for a, b in zip(step_events, step_events[1:]) if a.epoch == b.epoch]  # no validation inside
    ours = _steady_rate(ours_times)
    precision, _ = resolve_precision(config.precision, dev)
    rows.append({"loop": f"resnet-hub finetune ({precision} autocast, data on the device, channels_last)",
                 "images/s": ours, "speedup": ours / tutorial})
    return {"rows": rows, "notes": [f"{arch} at {size} px on {dataset.summary()}; batch {batch_size}; "
                                    f"device: {device_name(dev)}"]}
