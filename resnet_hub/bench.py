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
        if not trained:
            notes.append(f"{model_name}: random weights, so top-1 agreement is not meaningful; "
                         f"run with cached Hub weights or --models starter-resnet18 starter-resnet50 for trained ones")
    notes.append(f"device: {device_name(dev)}; {platform.processor() or platform.machine()}; torch {torch.__version__}; "
                 f"agreement over {len(batch)} real images")
    return {"rows": rows, "notes": notes}


# ---------------------------------------------------------------------------
# Fine-tuning throughput


def run_finetune_bench(steps: int = 30, batch_size: int = 64, arch: str = "resnet18", image_size: int = 32,
                       device: str = "auto", log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Images/s of this project's loop against a tutorial loop (DataLoader over PIL transforms, fp32, eager).

    Same model, same data (the MNIST sample), same batch size and optimiser.
    """
    from .data import mnist_sample
    from .finetune import FinetuneConfig, finetune
    from .images import train_transform
    from .metadata import Preprocessing

    dev = resolve_device(device)
    data = mnist_sample()
    n_images = steps * batch_size
    rows = []

    # The tutorial loop: decode + augment every image every epoch, in DataLoader workers.
    torch.manual_seed(0)
    p = Preprocessing(input_size=image_size, crop_pct=1.0)
    model = create(arch, num_classes=10, preprocessing=p).to(dev).train()
    transform = train_transform(p, augment="digits")
    dataset = [(img, t) for img, t in zip(data.images, data.targets)]

    class _Set(torch.utils.data.Dataset):
        def __len__(self):
            return len(dataset)

        def __getitem__(self, i):
            img, t = dataset[i]
            return transform(img), t

    loader = torch.utils.data.DataLoader(_Set(), batch_size=batch_size, shuffle=True, num_workers=2, drop_last=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    seen, start = 0, None
    for i, (x, y) in enumerate(loader):
        if i == 2:  # two warm-up steps
            synchronize(dev)
            start, seen = time.perf_counter(), 0
        x, y = x.to(dev), y.to(dev)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(x)
        if i + 1 >= steps + 2:
            break
    synchronize(dev)
    tutorial = seen / (time.perf_counter() - start)
    rows.append({"loop": "tutorial: DataLoader(2 workers) over PIL transforms, fp32, eager", "images/s": tutorial, "speedup": 1.0})
    if log:
        log("tutorial loop measured")

    # This project's loop: decoded once onto the device, augmented there, autocast, channels_last.
    epochs = max(1, math.ceil(n_images / (0.8 * len(data.images))))
    config = FinetuneConfig(base=f"scratch:{arch}", epochs=epochs, batch_size=batch_size, image_size=image_size,
                            device=str(dev))
    events = []
    finetune(data, config, on_event=events.append)
    step_events = [e for e in events if e.kind == "step"]
    ours = step_events[-1].images_per_s
    precision, _ = resolve_precision(config.precision, dev)
    rows.append({"loop": f"resnet-hub finetune ({precision}, data on device, channels_last)", "images/s": ours,
                 "speedup": ours / tutorial})
    return {"rows": rows, "notes": [f"{arch} at {image_size} px on the MNIST sample, batch {batch_size}; "
                                    f"device: {device_name(dev)}; ours includes per-epoch validation"]}
