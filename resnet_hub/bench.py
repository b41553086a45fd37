"""Benchmarks: this project's paths against the plain PyTorch peer, in one run, same weights and inputs.

Printed by ``python -m resnet_hub bench`` and ``python -m resnet_hub bench-finetune``.
Tests check behaviour; speed is reported here, as ratios, with the machine named.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torchvision
from torch import Tensor

from .errors import WeightsNotFoundError
from .hardware import device_name, resolve_device, synchronize
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
