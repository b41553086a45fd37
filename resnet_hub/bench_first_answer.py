"""The first answer of a model never served here, with an empty engine cache: the engine chosen before the first
answer (the synchronous path, as every request waited before) against the plain torch path answering at once while
the choice is made in the background (:mod:`resnet_hub.serving`); and the warm median latency of each.

Printed by ``python -m resnet_hub bench-first-answer MODEL``, e.g. for a 224 px ResNet-50 saved with
``python -m resnet_hub finetune --base scratch:resnet50 --image-size 224 ...``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .hardware import cpu_model_name, device_name, resolve_device
from .predict import Predictor
from .weights import load


def run_first_answer_bench(source: str, *, runs: int = 20, device: str = "auto",
                           log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Rows for the background path and the synchronous one, each on its own empty engine cache, same model and
    JPEG; the background path is measured first, so it bears the process's own first-use costs."""
    from .bench import bench_jpegs

    dev = resolve_device(device)
    with tempfile.TemporaryDirectory(prefix="resnet-hub-first-") as tmp:
        _, jpeg = bench_jpegs(Path(tmp) / "jpegs", 2)
        model = load(source, device=dev)  # the weights read once untimed: the page cache is warm for both paths
        size = model.preprocessing.input_size
        with torch.inference_mode():  # torch's own first-use costs, paid before either path is timed
            model(torch.zeros(1, model.config.in_chans, size, size, device=dev))
        del model
        rows = []
        for background in (True, False):
            cache = Path(tmp) / f"engine-cache-{'background' if background else 'sync'}"
            start = time.perf_counter()
            predictor = Predictor(source, dev, cache_dir=cache, background=background)
            first = predictor.classify(str(jpeg))
            first_s = time.perf_counter() - start
            if log:
                log(f"{'background' if background else 'synchronous'}: first answer in {first_s:.2f} s on "
                    f"{first.engine}")
            before = _median_ms(predictor, jpeg, runs) if predictor.choosing else None
            predictor.wait_for_engine()
            switched_s = time.perf_counter() - start
            after = _median_ms(predictor, jpeg, runs)
            rows.append({
                "path": "background choice (now)" if background else "choice before the first answer (before)",
                "first answer s": first_s, "first answer engine": first.engine,
                "warm median ms before the switch": before if before is not None else "-",
                "engine chosen": predictor.engine_name, "chosen after s": switched_s,
                "warm median ms (chosen engine)": after,
            })
    notes = [f"model: {source} ({size} px); a 512 px JPEG of a real photo, decoded, preprocessed, classified, "
             f"top-5, {runs} warm runs each; 'before the switch': answers on torch fp32 while the choice runs beside "
             f"them", f"device: {device_name(dev)}; CPU: {cpu_model_name()}; torch {torch.__version__}"]
    return {"rows": rows, "notes": notes}


def _median_ms(predictor: Predictor, jpeg, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        predictor.classify(str(jpeg))
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
