"""Benchmarks: this project's paths against the plain PyTorch peer, in one run, same weights and inputs.

Printed by ``python -m resnet_hub bench`` and ``python -m resnet_hub bench-finetune``.
Tests check behaviour; speed is reported here, as ratios, with the machine named.
"""

from __future__ import annotations

import copy
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import numpy as np
import torch
import torchvision
from torch import Tensor

from .errors import WeightsNotFoundError
from .hardware import device_name, resolve_device, resolve_precision, synchronize
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
        return create(name).to(device).eval(), "random init (Hub offline)", False


# ---------------------------------------------------------------------------
# The OpenVINO peer: what a performance-minded user writes by hand


class OpenVINOPeer:
    """OpenVINO used directly: ``convert_model``, NNCF's default quantization for int8, and for each
    batch size the faster of the LATENCY hint (one request) and the THROUGHPUT hint (the batch split
    across the streams OpenVINO asks for, run by an ``AsyncInferQueue``)."""

    def __init__(self, model: HubResNet, precision: str, calibration: Tensor):
        import nncf
        import openvino as ov

        from .openvino_runtime import core, quantizing

        size = model.preprocessing.input_size
        ov_model = ov.convert_model(copy.deepcopy(model).float().eval(), example_input=torch.zeros(1, 3, size, size),
                                    input=[(-1, model.config.in_chans, size, size)])
        if precision == "int8":
            with quantizing():
                ov_model = nncf.quantize(ov_model, nncf.Dataset([calibration[i : i + 1].numpy()
                                                                 for i in range(len(calibration))]),
                                         subset_size=len(calibration))
        # The process's one Core, as a script holds one; see openvino_runtime for why never a second.
        self.latency = core().compile_model(ov_model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        self.throughput = core().compile_model(ov_model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
        self.streams = int(self.throughput.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._request = self.latency.create_infer_request()
        self._queue = ov.AsyncInferQueue(self.throughput, self.streams)
        self.hint: dict[int, str] = {}
        self.precision = precision

    def run_latency(self, x: np.ndarray) -> np.ndarray:
        return self._request.infer({0: x})[0]

    def run_throughput(self, x: np.ndarray) -> np.ndarray:
        parts = np.array_split(x, min(self.streams, len(x)))
        out: list = [None] * len(parts)

        def done(request, i):
            out[i] = request.get_output_tensor(0).data.copy()

        self._queue.set_callback(done)  # the peer as its users write it: OpenVINO's AsyncInferQueue
        for i, part in enumerate(parts):
            self._queue.start_async({0: part}, i)
        self._queue.wait_all()
        return np.concatenate(out)

    def best(self, x: np.ndarray, runs: int) -> tuple[Callable[[np.ndarray], np.ndarray], float, float, float]:
        """(the faster way for this batch, first ms, median ms, p90 ms); the hint is remembered."""
        results = {}
        for hint, fn in (("LATENCY", self.run_latency), ("THROUGHPUT", self.run_throughput)):
            results[hint] = (fn, *_time(lambda: fn(x), torch.device("cpu"), runs))
        hint = min(results, key=lambda h: results[h][2])
        self.hint[len(x)] = hint
        return results[hint]


# ---------------------------------------------------------------------------
# Inputs as users send them


def bench_jpegs(folder, n: int = 32) -> tuple[list, Any]:
    """``n`` JPEG files of real photos, half at phone size (2,048 px wide), half at 512 px, and one 512 px JPEG."""
    import io
    from pathlib import Path

    from PIL import Image

    from .examples import check_images

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    photos, _ = check_images("photo", n)
    paths = []
    for i, photo in enumerate(photos):
        width = 2048 if i % 2 == 0 else 512
        image = photo.resize((width, max(1, width * photo.height // photo.width)), Image.Resampling.LANCZOS)
        path = folder / f"photo-{i:02d}-{width}px.jpg"
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths, next(p for p in paths if "512px" in p.name)


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
    """Model-only and end-to-end (JPEG files -> top-5) speed of every resnet-hub engine and of the
    default (``precision="auto"``), against torchvision eager fp32 and OpenVINO used directly, in one run,
    same weights and inputs; with each path's agreement with fp32 and its share of the CPU's int8 peak.

    ``variants`` limits the resnet-hub engines measured (names such as "openvino int8", "torch fp32").
    """
    import tempfile

    from . import engines
    from .hardware import cpu_model_name, int8_peak
    from .predict import count_gmacs, default_calibration, default_check_images

    dev = resolve_device(device)
    pairs = [f"{e} {p}" for e, p in engines.candidates(dev)]
    names = [v for v in (variants or pairs)]
    unknown = [v for v in names if v not in pairs]
    if unknown:
        raise ValueError(f"unknown variants {unknown}: this device runs {', '.join(pairs)}")
    peak = int8_peak() if dev.type == "cpu" else None
    rows, e2e, notes, choices = [], [], [], {}
    cache = tempfile.TemporaryDirectory()  # a cold engine cache: first-start cost is measured, not hidden
    jpeg_dir = tempfile.TemporaryDirectory()
    paths, one_jpeg = bench_jpegs(jpeg_dir.name, max(32, batch_size))
    paths = paths[:batch_size]
    for model_name in models:
        model, weights, trained = _load_bench_model(model_name, dev)
        check, what = default_check_images(model, 64)
        x = check[:batch_size].to(dev)
        if len(x) < batch_size:
            x = x.repeat(math.ceil(batch_size / len(x)), 1, 1, 1)[:batch_size]
        calibration = default_calibration(model)
        gmacs = count_gmacs(model)
        ref = torchvision_reference(model)
        with torch.inference_mode():
            ref_logits = ref(check.to(dev)).float().cpu()

        def row(variant, b1, bn, rel, agree, first=None, hint=""):
            r = {"model": model_name, "path": variant, "b1 ms": b1, f"b{batch_size} img/s": 1000 * batch_size / bn}
            r["vs eager"] = r[f"b{batch_size} img/s"] / rows_ref[f"b{batch_size} img/s"] if rows_ref else 1.0
            if peak:
                r["% int8 peak"] = 100 * r[f"b{batch_size} img/s"] * gmacs / peak["gmacs_per_s"]
            r.update({"rel err": rel, "top-1 agree": agree, "first call ms": first if first is not None else float("nan"),
                      "note": hint})
            return r

        rows_ref = None
        with torch.inference_mode():
            first, b1, _ = _time(lambda: ref(x[:1]), dev, runs)
            _, bn, _ = _time(lambda: ref(x), dev, max(3, runs // 3))
        rows_ref = row("torchvision eager fp32", b1, bn, 0.0, 1.0, first)
        rows_ref["vs eager"] = 1.0
        rows.append(rows_ref)
        if dev.type == "cuda":
            rows.append(_amp_reference_row(ref, x, dev, runs, rows_ref, model_name, weights, batch_size))
        peers = {}
        if dev.type == "cpu" and engines.openvino_available() is None:
            for precision in ("fp32", "int8"):
                peer = OpenVINOPeer(model, precision, calibration)
                xb = x.cpu().numpy()
                _, first, p1, _ = peer.best(xb[:1], runs)
                fn, _, pn, _ = peer.best(xb, max(3, runs // 3))
                rel, agree = _agreement(torch.from_numpy(np.concatenate([fn(c) for c in np.array_split(check.numpy(), 4)])), ref_logits)
                rows.append(row(f"OpenVINO {precision} used directly", p1, pn, rel, agree, first,
                                f"hints: b1 {peer.hint[1]}, b{batch_size} {peer.hint[batch_size]}"
                                + (", NNCF default quantization" if precision == "int8" else "")))
                peers[precision] = peer
        if log:
            log(f"{model_name}: peers measured ({weights})")
        for variant in names:
            engine, precision = variant.split()
            try:
                predictor = Predictor(copy.deepcopy(model), dev, precision, engine=engine, compile=compile,
                                      calibration=calibration, cache_dir=cache.name)
            except Exception as e:  # noqa: BLE001 - a path that cannot run here is a row that says why
                rows.append({"model": model_name, "path": f"resnet-hub {variant}", "note": f"not available: {e}"})
                continue
            if predictor.notes:
                rows.append({"model": model_name, "path": f"resnet-hub {variant}", "note": "; ".join(predictor.notes)})
                continue
            rel, agree = _agreement(torch.cat([predictor.logits(c) for c in check.split(16)]), ref_logits)
            t1 = predictor.time(batch_size=1, runs=runs, images=x)
            tn = predictor.time(batch_size=batch_size, runs=max(3, runs // 3), images=x)
            rows.append(row(f"resnet-hub {variant}", t1.median_ms, tn.median_ms, rel, agree, t1.first_call_ms))
            if log:
                log(f"{model_name}: {variant} measured")
        start = time.perf_counter()
        default = Predictor(copy.deepcopy(model), dev, cache_dir=cache.name)
        first_start = time.perf_counter() - start
        start = time.perf_counter()
        default = Predictor(copy.deepcopy(model), dev, cache_dir=cache.name)
        second_start = time.perf_counter() - start
        choices[model_name] = default.engine_choice
        rel, agree = _agreement(torch.cat([default.logits(c) for c in check.split(16)]), ref_logits)
        t1 = default.time(batch_size=1, runs=runs, images=x)
        tn = default.time(batch_size=batch_size, runs=max(3, runs // 3), images=x)
        rows.append(row(f"resnet-hub default (auto: {default.engine} {default.precision})", t1.median_ms, tn.median_ms,
                        rel, agree, t1.first_call_ms, f"start {first_start:.1f} s cold, {second_start:.1f} s warm"))
        if "int8" in peers:
            notes.append(_head_to_head(model_name, peers["int8"], default, x, batch_size, runs))
        e2e += _end_to_end(model_name, model, ref, peers.get("int8"), default, paths, one_jpeg, dev, runs)
        notes.append(f"{model_name} ({weights}): agreement over {what}; "
                     + ("top-1 agreement is required of trained weights" if trained else
                        "random weights: top-1 agreement is shown but only the logit error is gated"))
        notes.append(f"{model_name}: auto chose {default.engine_choice.summary()}")
        if log:
            log(f"{model_name}: end to end measured")
    if peak:
        notes += peak_notes(rows, peak)
    notes.append(f"device: {device_name(dev)}; CPU: {cpu_model_name()}; torch {torch.__version__}"
                 + (f"; OpenVINO {engines.openvino_version()}" if engines.openvino_available() is None else ""))
    notes.append(f"end to end: {len(paths)} JPEG files of real photos (half 2,048 px wide, half 512 px) read from disk, "
                 f"decoded, preprocessed, classified, top-5; batch 1 is one 512 px JPEG")
    cache.cleanup()
    jpeg_dir.cleanup()
    return {"rows": rows, "end_to_end": e2e, "choices": {k: v.to_dict() for k, v in choices.items()},
            "notes": notes}


def peak_notes(rows: list[dict[str, Any]], peak: dict) -> list[str]:
    """The formula of the int8 peak, and a warning where a measured share goes past it."""
    notes = [f"% int8 peak = images/s x GMACs per image / int8 peak; peak = {peak['formula']} = "
             f"{peak['gmacs_per_s']:.0f} GMAC/s"]
    shares = [r["% int8 peak"] for r in rows if "% int8 peak" in r and not math.isnan(r["% int8 peak"])]
    top = max(shares, default=0.0)
    if top > 100:  # measured beyond the computed peak: the clock read is below the one run at
        notes.append(f"% int8 peak reaches {top:.0f}%: the peak is a lower bound here, so the shares are upper "
                     f"bounds. The cores ran faster than the {peak['ghz']:.2f} GHz this machine reports (with no "
                     f"cpufreq maximum, the clock in /proc/cpuinfo; a boost clock is not shown), or they retire more "
                     f"int8 MACs per cycle than {peak['macs_per_cycle']}")
    return notes


def _head_to_head(model_name: str, peer: OpenVINOPeer, default: Predictor, x: Tensor, batch_size: int,
                  runs: int) -> str:
    """The default against OpenVINO int8 used directly at the batch size, measured in alternating turns
    (peer, ours, peer, ours ...): the rows above are measured one after another, and this machine's
    speed drifts by ~5% from one minute to the next."""
    xb = x.cpu().numpy()
    peer_fn = peer.run_latency if peer.hint.get(len(xb)) == "LATENCY" else peer.run_throughput
    ours_fn = lambda: default.logits(x)  # noqa: E731
    peer_fn(xb), ours_fn()
    peer_ms, ours_ms = [], []
    for _ in range(max(5, runs)):
        for fn, out in ((lambda: peer_fn(xb), peer_ms), (ours_fn, ours_ms)):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1000)
    peer_rate = 1000 * batch_size / statistics.median(peer_ms)
    ours_rate = 1000 * batch_size / statistics.median(ours_ms)
    return (f"{model_name}: head to head at batch {batch_size}, {len(ours_ms)} alternating turns each: default "
            f"{ours_rate:.1f} img/s, OpenVINO int8 used directly {peer_rate:.1f} img/s: {ours_rate / peer_rate:.2f}x")


def _end_to_end(model_name, model, ref, ov_int8, default, paths, one_jpeg, dev, runs) -> list[dict[str, Any]]:
    """JPEG files -> top-5 labels, as a user waits: torchvision eager, OpenVINO int8 with torchvision
    transforms, and resnet-hub's default Predictor (its own decode and preprocessing)."""
    from PIL import Image
    from torchvision.transforms import v2

    p = model.preprocessing
    transform = v2.Compose([v2.Resize(p.resize_size, antialias=True), v2.CenterCrop(p.input_size), v2.ToImage(),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(p.mean, p.std)])

    def tv_batch(files):
        return torch.stack([transform(Image.open(f, formats=["JPEG"]).convert("RGB")) for f in files])

    def eager(files):
        with torch.inference_mode():
            return torch.softmax(ref(tv_batch(files).to(dev)), 1).topk(5)

    def openvino(files):
        x = tv_batch(files).numpy()
        logits = (ov_int8.run_latency if ov_int8.hint.get(len(files)) == "LATENCY" else ov_int8.run_throughput)(x)
        return torch.softmax(torch.from_numpy(logits), 1).topk(5)

    def ours(files):
        return default.classify([str(f) for f in files], top_k=5)

    out, rates = [], {}
    contenders = [("torchvision eager fp32 + torchvision transforms", eager)]
    if ov_int8 is not None:
        contenders.append(("OpenVINO int8 + torchvision transforms", openvino))
    contenders.append((f"resnet-hub default ({default.engine} {default.precision})", ours))
    for name, fn in contenders:
        _, b1, b1_p90 = _time(lambda: fn([one_jpeg]), dev, runs)
        _, bn, _ = _time(lambda: fn(paths), dev, max(3, runs // 3))
        rates[name] = 1000 * len(paths) / bn
        out.append({"model": model_name, "end to end": name, "b1 ms (512 px JPEG)": b1, "b1 p90 ms": b1_p90,
                    f"b{len(paths)} img/s": rates[name]})
    first = out[0][f"b{len(paths)} img/s"]
    peer = out[1][f"b{len(paths)} img/s"] if ov_int8 is not None else float("nan")
    for r in out:
        r["vs eager"] = r[f"b{len(paths)} img/s"] / first
        r["vs OpenVINO peer"] = r[f"b{len(paths)} img/s"] / peer
    return out


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
    from .finetune import FinetuneConfig, finetune, lr_at, prepare_frozen_part
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
                engines._CONVERTED.clear()  # as in a new process: a converted frozen part comes from the disk cache
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

