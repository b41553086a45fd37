"""Batch classification's speed against ``bench``'s end-to-end figure, in one run: printed by
``python -m resnet_hub bench-batch``.

Both read the same real photos as JPEG files (half 2,048 px wide, half 512 px: :func:`~resnet_hub.bench.bench_jpegs`)
with the same Predictor on the engine this machine chooses: ``bench``'s row is ``Predictor.classify`` of a batch of
files -> top-5; batch classification reads them from a zip, streams, and keeps a row (and an error) per image.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

GOAL = 0.8  # batch classification's images/s over bench's batch-32 end-to-end figure


def run_bench_batch(models: list[str], *, images: int = 256, batch_size: int = 32, runs: int = 3,
                    device: str = "auto", log: Callable[[str], None] | None = print) -> dict[str, Any]:
    from .batch import classify_batch
    from .bench import _load_bench_model, bench_jpegs
    from .hardware import cpu_model_name, device_name, resolve_device
    from .predict import Predictor

    dev = resolve_device(device)
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        paths, _ = bench_jpegs(Path(tmp) / "jpegs", max(images, batch_size))
        archive = Path(tmp) / "photos.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:  # JPEGs do not compress
            for i in range(images):
                z.write(paths[i % len(paths)], f"photos/{i:05d}-{paths[i % len(paths)].name}")
        batch = [str(p) for p in paths[:batch_size]]
        for name in models:
            model, weights, _ = _load_bench_model(name, dev)
            predictor = Predictor(model, dev)
            k = min(5, predictor.num_classes)
            predictor.classify(batch, top_k=k)  # warm: the first pass at this size
            bench_rates, batch_rates = [], []
            for _ in range(runs):  # in turns, so a drift in the machine's speed lands on both alike
                start = time.perf_counter()
                predictor.classify(batch, top_k=k)
                bench_rates.append(len(batch) / (time.perf_counter() - start))
                result = classify_batch(predictor, archive, top_k=k, chunk=batch_size)
                batch_rates.append(result.images_per_s)
            bench_rate, batch_rate = statistics.median(bench_rates), statistics.median(batch_rates)
            rows.append({"model": name, "engine": f"{predictor.engine} {predictor.precision}",
                         f"bench b{batch_size} JPEG -> top-5 img/s": bench_rate,
                         f"batch classify ({images} in a zip) img/s": batch_rate,
                         "ratio": batch_rate / bench_rate, "goal": f">= {GOAL}x"})
            if log:
                log(f"{name} ({weights}): measured")
    notes.append(f"median of {runs} runs each, taken in turns; device: {device_name(dev)}; CPU: {cpu_model_name()}")
    return {"rows": rows, "notes": notes}
