"""The steps of ``scripts/gpu_check.py``, each run in a process of its own and writing its table as it goes.

Each step function takes ``(table, device, sizes, work)``: ``table`` gathers rows and notes and writes them to
the output folder after every row (a step cut at its time cap keeps what it had measured); ``sizes`` are the
GPU's (batch 256, ImageNet sizes) or, with ``--device cpu``, tiny ones; ``work`` is a scratch folder shared
by the steps of one run (the engine cache lives there, so step 3 and 6 reuse step 2's engine choice).
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    archs: tuple[str, ...]  # models of steps 2 and 3, in order
    batch: int  # model-only and end-to-end batch
    input_size: int | None  # None: the model's own (224 px)
    runs: int  # timed runs, after warm-up; the median is reported
    warmup: int
    distinct_jpegs: int  # distinct photos in a batch (repeated up to the batch size)
    load_arch: str
    per_class: int  # bench-finetune photos per class (8 classes)
    finetune_archs: tuple[str, ...]
    finetune_epochs: int | None  # None: the app's default
    finetune_size: int
    compare_runs: int


GPU_SIZES = Sizes(archs=("resnet50", "resnet18"), batch=256, input_size=None, runs=10, warmup=3, distinct_jpegs=32,
                  load_arch="resnet50", per_class=400, finetune_archs=("resnet18", "resnet50"), finetune_epochs=2, finetune_size=224, compare_runs=30)
CPU_SIZES = Sizes(archs=("resnet18",), batch=8, input_size=64, runs=3, warmup=1, distinct_jpegs=4,
                  load_arch="resnet18", per_class=3, finetune_archs=("resnet18",), finetune_epochs=1, finetune_size=32, compare_runs=3)


def _model(arch: str, sizes: Sizes, device: torch.device):
    """A random-init model (the same weights in every step: seed 0); the GPU machine has no network for ImageNet's."""
    import resnet_hub
    from resnet_hub.metadata import Preprocessing

    torch.manual_seed(0)
    kwargs = {"preprocessing": Preprocessing(input_size=sizes.input_size)} if sizes.input_size else {}
    return resnet_hub.create(arch, **kwargs).to(device).eval()


def _median_ms(fn, device: torch.device, runs: int, warmup: int) -> tuple[float, float]:
    """(median, p90) ms of ``fn()`` after ``warmup`` calls: CUDA events on a GPU (resnet_hub.hardware.elapsed_ms)."""
    from resnet_hub.hardware import elapsed_ms, synchronize

    for _ in range(warmup):
        fn()
    synchronize(device)
    times = [elapsed_ms(fn, device) for _ in range(runs)]
    return statistics.median(times), float(np.percentile(times, 90))


def _engine_arg(device: torch.device) -> str:
    # On a CPU the tiny run keeps to torch's engines: OpenVINO's conversions would take most of a test's time.
    return "auto" if device.type == "cuda" else "torch"


# --- 0: smoke --------------------------------------------------------------------------------------------


def step_smoke(table, device, sizes, work):
    import huggingface_hub
    import torchvision

    import resnet_hub
    from resnet_hub.hardware import device_name, synchronize

    start = time.perf_counter()
    model = resnet_hub.create("resnet18").to(device).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 224, 224, device=device))
    synchronize(device)
    table.row(check="import resnet_hub, one ResNet-18 forward", result=f"logits {tuple(out.shape)} on {out.device}, "
              f"finite: {bool(torch.isfinite(out).all())}", seconds=time.perf_counter() - start)
    try:
        import mlxtend
        mlx = mlxtend.__version__
    except ImportError:
        mlx = "missing (carry its wheel: scripts/gpu_wheels.sh)"
    table.row(check="versions", result=f"Python {sys.version.split()[0]}, torch {torch.__version__}, torchvision "
              f"{torchvision.__version__}, huggingface_hub {huggingface_hub.__version__}, mlxtend {mlx}", seconds=0.0)
    what = device_name(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        what += (f", compute capability {props.major}.{props.minor}, {props.total_memory / 2**30:.0f} GiB, "
                 f"{props.multi_processor_count} SMs, bf16: {torch.cuda.is_bf16_supported()}, "
                 f"cuDNN {torch.backends.cudnn.version()}")
    table.row(check="device", result=what, seconds=0.0)


# --- 1: the GPU-marked tests, and torchrun ------------------------------------------------------------------

GPU_TEST_MODULES = ("tests/test_data.py", "tests/test_finetune.py", "tests/test_predict.py", "tests/test_weights.py",
                    "tests/test_cuda_engine.py", "tests/test_gpu_decode.py")


def step_tests(table, device, sizes, work):
    pytest_timeout = 0.6 * table.cap  # the rest is torchrun's
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rA", "-p", "no:cacheprovider", *GPU_TEST_MODULES]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=pytest_timeout)
        output, closing = done.stdout + done.stderr, None
    except subprocess.TimeoutExpired as e:
        output, closing = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), \
            f"cut after {pytest_timeout:.0f} s"
    for line in output.splitlines():
        if m := re.match(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS) (\S+)(?: - (.*))?", line):
            table.row(what=m[2], outcome=m[1], detail=(m[3] or "")[:300])
        elif m := re.match(r"^SKIPPED \[\d+\] (\S+): (.*)", line):
            table.row(what=m[1], outcome="SKIPPED", detail=m[2][:300])
    summary = closing or next((l.strip("= ") for l in reversed(output.splitlines()) if re.search(r"\d+ (passed|failed|"
                                                                                               r"skipped|deselected|error)", l)), "no summary line")
    table.row(what="pytest -m gpu", outcome=summary, detail=f"{time.perf_counter() - start:.0f} s")
    if "failed" in summary or "error" in summary:
        table.note("pytest output (end):\n" + output[-3000:])
    table.row(what="torchrun --nproc_per_node=1: a process group, all_reduce and one DDP step",
              **_torchrun([str(REPO / "scripts" / "gpu_check.py"), "--probe-ddp", "--device", device.type]))
    cli = ["-m", "resnet_hub", "finetune", "--data", "mnist-sample", "--limit-per-class", "20", "--base",
           "scratch:resnet18", "--image-size", "32", "--batch-size", "32", "--epochs", "1", "--lr", "0.1",
           "--device", device.type, "--json", "--out", str(work / "torchrun-finetune")]
    table.row(what="torchrun --nproc_per_node=1 -m resnet_hub finetune (the package's entry point)", **_torchrun(cli))
    table.note("with one process the package's finetune starts no process group (resnet_hub.distributed.init_world "
               "joins one only for WORLD_SIZE > 1): the probe above is what goes over "
               f"{'NCCL' if device.type == 'cuda' else 'gloo'}; the package's DDP run over NCCL needs two GPUs "
               "(test_torchrun_on_two_gpus_uses_nccl_and_keeps_the_single_process_schedule)")


def _torchrun(args: list[str]) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", f"--master_port={port}", *args]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return {"outcome": "cut after 120 s", "detail": ""}
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return {"outcome": f"FAILED (exit {done.returncode})", "detail": done.stderr[-600:]}
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1] if "--probe-ddp" in args else done.stdout)
    except (json.JSONDecodeError, IndexError):
        return {"outcome": "FAILED (no JSON)", "detail": done.stdout[-300:] + done.stderr[-300:]}
    keep = {k: report[k] for k in ("backend", "world_size", "all_reduce", "ddp_step", "steps", "val_accuracy")
            if k in report}
    return {"outcome": "PASSED", "detail": f"{seconds:.0f} s; {json.dumps(keep)}"}


def probe_ddp(device_type: str) -> None:
    """Run under torchrun: a process group on this device's backend, an all_reduce and one DDP training step."""
    import torch.distributed as dist

    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    t = torch.ones(4, device=device) * (dist.get_rank() + 1)
    dist.all_reduce(t)
    net = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 2).to(device),
                                                    device_ids=[device.index] if device.type == "cuda" else None)
    loss = net(torch.randn(16, 8, device=device)).square().mean()
    loss.backward()
    ok = all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    print(json.dumps({"backend": dist.get_backend(), "world_size": dist.get_world_size(), "all_reduce": t[0].item(),
                      "ddp_step": "gradients finite" if ok else "bad gradients"}))
    dist.destroy_process_group()


# --- 2: model only, batch 256 --------------------------------------------------------------------------------


def step_model_only(table, device, sizes, work):
    from resnet_hub import engines
    from resnet_hub.bench import torchvision_reference
    from resnet_hub.predict import Predictor, default_calibration, default_check_images

    for arch in sizes.archs:
        model = _model(arch, sizes, device)
        size = model.preprocessing.input_size
        x = torch.randn(sizes.batch, 3, size, size, device=device, generator=torch.Generator(device).manual_seed(0))
        ref = torchvision_reference(model)

        def eager():
            with torch.inference_mode():
                ref(x)

        def amp():
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
                ref(x)

        base = {}
        for path, fn in (("torchvision eager fp32", eager), ("torchvision eager AMP (bf16 autocast)", amp)):
            median, p90 = _median_ms(fn, device, sizes.runs, sizes.warmup)
            base[path] = median
            table.row(model=arch, path=path, passed="(the peer)", **_speed(median, p90, sizes.batch, base))
        check_images, what = default_check_images(model)
        with torch.inference_mode():
            reference = torch.cat([model(c.to(device)).float().cpu() for c in check_images.split(16)])
        calibration = default_calibration(model) if device.type == "cpu" else None
        built = {}
        for name, make in engines.candidate_builders(model, device, engine=_engine_arg(device),
                                                     calibration=calibration).items():
            start = time.perf_counter()
            try:
                engine = make()
                rel, agree, why = engines.check(engine, check_images, reference, trained=False)
            except engines.EngineError as e:
                table.row(model=arch, path=name, passed=f"not built: {e}")
                continue
            built_s = time.perf_counter() - start
            built[name] = engine
            median, p90 = _median_ms(lambda: engine(x, False), device, sizes.runs, sizes.warmup)
            table.row(model=arch, path=name, passed="yes" if not why else f"no: {why}", **{
                "logit error": rel, "top-1 agreement": agree, "build + check s": built_s},
                **_speed(median, p90, sizes.batch, base))
        start = time.perf_counter()
        predictor = Predictor(model, device, engine=_engine_arg(device), calibration=calibration,
                              cache_dir=work / "engine-cache", extra_candidates={n: (lambda e=e: e) for n, e in built.items()})
        choice = predictor.engine_choice
        median, p90 = _median_ms(lambda: predictor.logits(x), device, sizes.runs, sizes.warmup)
        table.row(model=arch, path=f"Predictor, as served: {choice.chosen}", passed="chosen",
                  **{"build + check s": time.perf_counter() - start}, **_speed(median, p90, sizes.batch, base))
        table.note(f"{arch}: the Predictor's choice: {choice.summary()}")
        del built, predictor, ref
        if device.type == "cuda":
            torch.cuda.empty_cache()
    table.note("torchvision eager runs with PyTorch's defaults (cuDNN may use TF32 for fp32 convolutions)")
    table.note(f"random-init weights (no network for ImageNet's): the check against fp32 gates on the logit error "
               f"(<= {engines.MAX_REL_ERROR}), top-1 agreement is shown; the check images are "
               f"{what}; input fp32 on the device, batch {sizes.batch}; median of {sizes.runs} runs after "
               f"{sizes.warmup} warm-up, timed by {'CUDA events' if device.type == 'cuda' else 'the wall clock'}")


def _speed(median: float, p90: float, batch: int, base: dict[str, float]) -> dict:
    out = {"median ms": median, "p90 ms": p90, "images/s": 1000 * batch / median}
    for path, label in (("torchvision eager fp32", "x eager fp32"), ("torchvision eager AMP (bf16 autocast)",
                                                                    "x eager AMP")):
        if path in base:
            out[label] = base[path] / median
    return out


# --- 3: end to end, JPEG bytes to top-5 ----------------------------------------------------------------------


def jpegs(n: int, width: int, height: int, seed: int = 0) -> list[bytes]:
    """``n`` JPEGs of real photos (scikit-image's, ~512 px): random crops resized to ``width`` x ``height``."""
    from PIL import Image

    from resnet_hub.examples import CALIBRATION_PHOTOS, photo
    from resnet_hub.images import parallel_map

    def one(i: int) -> bytes:
        rng = random.Random(seed * 1000 + i)
        picture = photo(CALIBRATION_PHOTOS[i % len(CALIBRATION_PHOTOS)])
        w, h = picture.size
        s = rng.uniform(0.6, 1.0)
        cw, ch = int(w * s), int(h * s)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        view = picture.crop((x, y, x + cw, y + ch)).resize((width, height), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        view.convert("RGB").save(buffer, "JPEG", quality=90)
        return buffer.getvalue()

    return parallel_map(one, range(n))


def step_end_to_end(table, device, sizes, work):
    from resnet_hub.gpu_decode import classify_on_device
    from resnet_hub.predict import Predictor

    for arch in sizes.archs[:1]:
        model = _model(arch, sizes, device)
        # on a CPU, fp32 as asked: the tiny run checks the table, not the chooser (step 2 does)
        predictor = Predictor(model, device, "auto" if device.type == "cuda" else "fp32", engine=_engine_arg(device),
                              cache_dir=work / "engine-cache")
        choice = predictor.engine_choice
        table.note(f"{arch} served by {choice.chosen}"
                   + (" (step 2's choice, from the engine cache)" if choice.from_cache else ""))
        for label, (w, h) in (("ImageNet-sized, 500x375", (500, 375)), ("2,000 px photos, 2000x1500", (2000, 1500))):
            distinct = jpegs(sizes.distinct_jpegs, w, h)
            batch = (distinct * (sizes.batch // len(distinct) + 1))[: sizes.batch]
            mb = sum(map(len, batch)) / 2**20
            on_device, phases, answers = [], [], None
            for i in range(sizes.warmup + sizes.runs):
                start = time.perf_counter()
                answers, decoded = classify_on_device(predictor, batch, top_k=5)
                if i >= sizes.warmup:
                    on_device.append((time.perf_counter() - start) * 1000)
                    phases.append(decoded.ms)
            ms = statistics.median(on_device)
            row = {"photos": label, "path": f"{'nvJPEG on the GPU' if device.type == 'cuda' else 'torchvision on the CPU'} "
                                           f"(resnet_hub.gpu_decode)", "batch": sizes.batch, "images/s": 1000 * sizes.batch / ms,
                   "ms per batch": ms}
            for phase in ("read", "header", "decode", "cpu fallback", "resize", "network"):
                row[f"{phase} ms"] = statistics.median(p[phase] for p in phases)
            errors = sum(isinstance(a, Exception) for a in answers)
            row["errors"] = errors
            table.row(**row)
            on_cpu, pre, net, cpu_answers = [], [], [], None
            for i in range(sizes.warmup + sizes.runs):
                start = time.perf_counter()
                x = predictor.preprocess(batch)
                mid = time.perf_counter()
                cpu_answers = predictor.top_k(predictor.logits(x), 5)
                if i >= sizes.warmup:
                    on_cpu.append((time.perf_counter() - start) * 1000)
                    pre.append((mid - start) * 1000)
                    net.append((time.perf_counter() - mid) * 1000)
            ms = statistics.median(on_cpu)
            same = np.mean([getattr(a, "class_ids", [None])[0] == c.class_ids[0] for a, c in zip(answers, cpu_answers)])
            table.row(**{"photos": label, "path": f"Pillow on the CPU, {os.cpu_count()} threads (Predictor.preprocess)",
                         "batch": sizes.batch, "images/s": 1000 * sizes.batch / ms, "ms per batch": ms, "read ms": 0.0,
                         "header ms": 0.0, "decode ms": statistics.median(pre), "cpu fallback ms": 0.0, "resize ms": 0.0,
                         "network ms": statistics.median(net), "errors": 0})
            table.note(f"{label}: {mb:.1f} MB of JPEG per batch ({len(distinct)} distinct photos, repeated); top-1 "
                       f"of the two paths agrees on {same:.0%} of the images (random weights: near ties can flip)")
    table.note("the CPU path decodes and resizes each image in one task (its 'decode ms' holds both; large JPEGs "
               "are decoded at reduced scale by Pillow's draft); the device path's phases are timed with the device "
               "synchronised at each end; 'network' includes top-5 and the copy of the answers to the CPU")


# --- 4: weights onto the device ------------------------------------------------------------------------------


def hub_cache(root: Path, repo_id: str, folder: Path) -> None:
    """``folder`` laid out as huggingface_hub's cache keeps a downloaded repo (blobs, refs, snapshot links)."""
    import hashlib

    repo = root / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def step_load(table, device, sizes, work):
    import resnet_hub

    folders = {}
    for arch in dict.fromkeys(("resnet18", sizes.load_arch)):
        torch.manual_seed(0)
        folders[arch] = resnet_hub.create(arch).save_pretrained(work / "load" / arch)
    cache = work / "load" / "hf-cache" / "hub"
    repo_id = f"resnet-hub-check/{sizes.load_arch}"
    if not (cache / f"models--{repo_id.replace('/', '--')}").exists():
        hub_cache(cache, repo_id, folders[sizes.load_arch])
    weights = (folders[sizes.load_arch] / "model.safetensors").stat().st_size
    warm = folders["resnet18"] if sizes.load_arch != "resnet18" else None
    for label, source in (("Hub-layout folder", str(folders[sizes.load_arch])),
                          ("Hugging Face cache, offline (repo id)", repo_id)):
        env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--measure-load", source,
                   "--device", device.type] + (["--warm", str(warm)] if warm else [])
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
        if done.returncode != 0:
            table.row(source=label, model=sizes.load_arch, outcome=f"FAILED: {done.stderr[-500:]}")
            continue
        m = json.loads(done.stdout.strip().splitlines()[-1])
        growth = m["rss_anon_after"] - m["rss_anon_before"]
        table.row(source=label, model=sizes.load_arch, outcome="loaded", **{
            "weights MB": weights / 1e6, "load s": m["seconds"], "RssAnon growth MB": growth / 1e6,
            "growth / weights": growth / weights, "no CPU copy (< 10%)": growth < 0.1 * weights,
            "tensors on": m["device"]})
    table.note("each row is a fresh process: CUDA initialised and a ResNet-18 loaded first (imports and kernels "
               "warm), then the RssAnon of /proc/self/status read around resnet_hub.load(source, device) "
               "(safetensors' file pages are not anonymous memory: only a copy made on the CPU is)"
               + ("; on a CPU the weights are the copy, so ~100% is expected there" if device.type == "cpu" else ""))


def measure_load(source: str, device_type: str, warm: str | None) -> None:
    """In a fresh process: (seconds, RssAnon before and after) of loading ``source`` onto the device, as JSON."""
    import resnet_hub
    from resnet_hub.hardware import synchronize

    device = torch.device(device_type)
    if device.type == "cuda":
        torch.zeros(1, device=device)
    if warm:
        resnet_hub.load(warm, device=device)
    synchronize(device)
    before = _rss_anon()
    start = time.perf_counter()
    model = resnet_hub.load(source, device=device)
    synchronize(device)
    seconds = time.perf_counter() - start
    after = _rss_anon()
    print(json.dumps({"seconds": seconds, "rss_anon_before": before, "rss_anon_after": after,
                      "device": str(next(model.parameters()).device)}))


def _rss_anon() -> int:
    """The process's resident anonymous memory in bytes: RssAnon, or where a kernel (gVisor's) lacks it, statm's
    resident less shared pages."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    with open("/proc/self/statm", encoding="ascii") as f:
        _, resident, shared, *_ = map(int, f.read().split())
    return (resident - shared) * os.sysconf("SC_PAGE_SIZE")


# --- 5: bench-finetune ---------------------------------------------------------------------------------------


def step_finetune(table, device, sizes, work):
    from resnet_hub.bench_finetune import run_finetune_bench

    if device.type == "cuda":  # a warm-up run, untimed: CUDA's and cuDNN's first calls
        run_finetune_bench("resnet18", epochs=1, image_size=32, per_class=2, freezes=(-1,), device=device.type,
                           wall_arch=None, log=None)
    for arch in sizes.finetune_archs:
        report = run_finetune_bench(arch, epochs=sizes.finetune_epochs, image_size=sizes.finetune_size,
                                    per_class=sizes.per_class, freezes=(-1,), device=device.type, wall_arch=None,
                                    log=None)
        for row in report["rows"]:
            table.row(model=arch, **row)
        table.note(f"{arch}: " + "; ".join(report["notes"][:1]))
    table.note("python -m resnet_hub bench-finetune --device DEVICE --freezes -1 --wall-arch none --per-class "
               f"{sizes.per_class} --image-size {sizes.finetune_size}"
               + (f" --epochs {sizes.finetune_epochs}" if sizes.finetune_epochs else "")
               + " --arch ARCH prints the same rows; a warm-up run came first, untimed")


# --- 6: the service's classify and compare ------------------------------------------------------------------


def step_service(table, device, sizes, work):
    import resnet_hub
    from resnet_hub.metadata import Preprocessing
    from resnet_hub.services.registry import ModelRegistry

    folders = []
    for arch in ("resnet18", "resnet50"):
        torch.manual_seed(0)
        kwargs = {"preprocessing": Preprocessing(input_size=sizes.input_size)} if sizes.input_size else {}
        folders.append(str(resnet_hub.create(arch, **kwargs).save_pretrained(work / "service" / arch)))
    registry = ModelRegistry(device=device.type, check_hub=False, allow_paths=True, engine=_engine_arg(device),
                             precision="auto" if device.type == "cuda" else "fp32")
    photo = jpegs(1, 500, 375, seed=7)[0]
    for arch, folder in zip(("resnet18", "resnet50"), folders):
        start = time.perf_counter()
        first = registry.classify(photo, folder)
        load_s = time.perf_counter() - start
        clicks = [registry.classify(photo, folder).latency_ms for _ in range(max(sizes.runs, 3))]
        predictor = registry.predictor(folder)
        table.row(button="Classify (with its heatmap)", model=arch, engine=predictor.engine_choice.chosen, **{
            "first click s (load + engine choice)": load_s, "first click ms (as reported)": first.latency_ms,
            "median click ms": statistics.median(clicks), "top-1": first.prediction.top1})
    start = time.perf_counter()
    result = registry.compare(photo, folders, runs=sizes.compare_runs)
    seconds = time.perf_counter() - start
    table.row(button="Compare", model=" vs ".join(("resnet18", "resnet50")), engine="; ".join(
        c.chosen for c in result.engine_choices.values()), **{"first click s (load + engine choice)": seconds,
                                                             "top-1": "agree" if result.agree else "disagree"})
    table.extra("compare", result.table())
    table.note(f"ModelRegistry.classify and .compare (what the Classify and Compare buttons call) on random-init "
               f"models saved as folders; Compare's timings are {sizes.compare_runs} interleaved batch-1 runs each, "
               f"timed {'by CUDA events' if device.type == 'cuda' else 'by the wall clock'} (Predictor._timed_run)")


STEPS = {
    0: ("smoke", "a smoke test: the package imports and runs one forward", step_smoke, 30),
    1: ("tests", "the GPU-marked tests, and torchrun --nproc_per_node=1", step_tests, 150),
    2: ("model-only", "model-only throughput per engine candidate, against torchvision eager fp32 and AMP",
        step_model_only, 120),
    3: ("end-to-end", "end to end from JPEG bytes to top-5: device decoding against Pillow on the CPU",
        step_end_to_end, 45),
    4: ("load", "weights from a Hub folder and a Hugging Face cache onto the device: time, anonymous memory",
        step_load, 30),
    5: ("bench-finetune", "bench-finetune: full fine-tune against the tutorial loop", step_finetune, 90),
    6: ("service", "the service's Classify and Compare, as the app's buttons call them", step_service, 45),
}
