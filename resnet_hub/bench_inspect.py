"""``python -m resnet_hub bench-inspect``: how long an inspection takes, and what the fine-tune after it saves.

1,000 photos (views of the shipped photos, JPEG, 10 class folders, in one zip) are inspected at 128 px on a
ResNet-18 with random weights (seeded: the same weights, so the same engine-cache entry, every run): first with an
empty embedding cache and the engine not yet converted, then again with the engine in the engine cache (the figure
the issue asks for: under 10 s on the 2-core machine). Then a head-only fine-tune on the same data and base reads the
inspection's embeddings, against the same fine-tune computing them itself.
"""

from __future__ import annotations

import io
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import embeddings
from .examples import calibration_images
from .finetune import FinetuneConfig, finetune
from .hardware import cpu_model_name
from .inspection import inspect, read_for_inspection
from .weights import create


def photo_zip(n: int, classes: int = 10) -> bytes:
    """``n`` distinct photo views as JPEGs, spread over ``classes`` folders."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for i, image in enumerate(calibration_images("photo", n)):
            jpeg = io.BytesIO()
            image.convert("RGB").save(jpeg, format="JPEG", quality=90)
            archive.writestr(f"photos/class{i % classes}/{i:05d}.jpg", jpeg.getvalue())
    return out.getvalue()


def run_inspect_bench(n: int = 1000, image_size: int = 128, arch: str = "resnet18", epochs: int = 1,
                      log: Callable[[str], None] | None = print) -> dict[str, Any]:
    say = log or (lambda text: None)
    say(f"making {n} photos ...")
    data = photo_zip(n)
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        base = str(create(arch, num_classes=10).save_pretrained(Path(folder) / "base"))
        rows = []

        def timed(what: str, fn):
            start = time.perf_counter()
            value = fn()
            seconds = time.perf_counter() - start
            say(f"{what}: {seconds:.1f} s")
            return value, seconds

        dataset, read_s = timed("reading the zip", lambda: read_for_inspection(data))
        rows.append({"step": f"read the zip ({n} JPEGs)", "seconds": round(read_s, 2), "note": ""})
        embeddings.CACHE.clear()
        first, first_s = timed("inspection, engine not yet converted", lambda: inspect(dataset, base, image_size))
        rows.append({"step": "inspect, first time (engine chosen and converted)", "seconds": round(first_s, 2),
                     "note": first.embedding_note})
        embeddings.CACHE.clear()
        warm, warm_s = timed("inspection, engine in the engine cache", lambda: inspect(dataset, base, image_size))
        rows.append({"step": "inspect, engine in the engine cache", "seconds": round(warm_s, 2),
                     "note": warm.embedding_note})
        config = FinetuneConfig(base=base, freeze=4, epochs=epochs, augment="none", image_size=image_size)
        after, after_s = timed("head-only fine-tune after the inspection", lambda: finetune(dataset, config))
        reused = any("inspection's cache" in note for note in after.model.info.notes)
        rows.append({"step": f"fine-tune (head only, {epochs} epoch) after the inspection", "seconds": round(after_s, 2),
                     "note": "read the inspection's embeddings" if reused else "computed its own embeddings"})
        embeddings.CACHE.clear()
        _, alone_s = timed("the same fine-tune, nothing cached", lambda: finetune(dataset, config))
        rows.append({"step": "the same fine-tune with no inspection before it", "seconds": round(alone_s, 2),
                     "note": "computed its own embeddings"})
    return {"cpu": cpu_model_name(), "threads": torch.get_num_threads(), "images": n, "image_size": image_size,
            "arch": arch, "rows": rows, "fine_tune_read_the_cache": reused,
            "timings": {"inspect_warm_s": warm_s, "inspect_first_s": first_s}}
