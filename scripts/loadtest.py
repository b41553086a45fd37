"""Load-test the app's /classify endpoint from many clients at once, on loopback only.

    python scripts/loadtest.py --url http://127.0.0.1:7860 --clients 16 --requests 25 --image cat.png

Without --url the app is started here, in this process, on a free loopback port, offline,
on a throwaway store with tiny starter models (built in a few seconds), so what is measured
is serving, not training. The clients then share this process (and its GIL) with the server:
for numbers that mean something, start `python app.py` and pass --url.

Each client, by default, speaks Gradio's HTTP API as a browser does, over one kept-alive connection: upload the
image, call /classify, read the answer's event stream, fetch the heatmap it names. ``--client gradio_client``
uses Gradio's Python client instead. That client builds a new TLS context for every HTTP call (httpx's
module-level functions), even on plain http: measured on 2 cores, it used 3x the CPU the server did, so on one
machine it measured itself more than the app.

Prints total, answered, failed, p50/p95/max latency and requests/s; exits 1 if any request failed.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answered(self, ms: float) -> None:
        with self.lock:
            self.latencies_ms.append(ms)

    def failed(self, why: str) -> None:
        with self.lock:
            self.errors.append(why)


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app_here():
    """Serve app.py from this process, offline, on a temporary store with tiny starters; returns (demo, url)."""
    root = Path(tempfile.mkdtemp(prefix="resnet-hub-loadtest-"))
    os.environ.update(RESNET_HUB_HOME=str(root / "home"), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
                      GRADIO_TEMP_DIR=str(root / "gradio"))
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE = True, str(root / "empty-hf-cache")
    sys.path.insert(0, str(ROOT))
    from resnet_hub import store
    from resnet_hub.data import mnist_sample
    from resnet_hub.finetune import FinetuneConfig, finetune

    for arch in store.STARTER_ARCHS:  # tiny: one epoch on 100 digits
        result = finetune(mnist_sample(limit_per_class=10),
                          FinetuneConfig(base=f"scratch:{arch}", epochs=1, image_size=32, batch_size=32))
        result.model.info.training["name"] = store.starter_name(arch)
        result.save(store.starter_folder(arch))
    import app

    app.ctx.start()

    _, url, _ = app.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True,
                                **app.launch_options())
    return app.demo, url


def default_image() -> str:
    sys.path.insert(0, str(ROOT))
    from resnet_hub.examples import example_images

    return str(next(p for p in example_images() if p.name.startswith("mnist-digit-")))


def distinct_photos(folder: Path, clients: int, requests: int, side: int = 640) -> list[list[str]]:
    """A JPEG per request, no two alike: views (crops, mirror images) of real scikit-image photos,
    ``side`` px wide. Each client gets its own, so no answer can come from a cache."""
    sys.path.insert(0, str(ROOT))
    from PIL import Image

    from resnet_hub.examples import CALIBRATION_PHOTOS, CHECK_PHOTOS, _views

    folder.mkdir(parents=True, exist_ok=True)
    views = _views(CALIBRATION_PHOTOS + CHECK_PHOTOS, clients * requests, 0)
    out = []
    for c in range(clients):
        paths = []
        for r in range(requests):
            view = views[c * requests + r]
            path = folder / f"client{c:02d}-{r:03d}.jpg"
            view.resize((side, max(1, side * view.height // view.width)), Image.Resampling.LANCZOS).save(path, quality=90)
            paths.append(str(path))
        out.append(paths)
    return out


def send_requests(send, image: str | list[str], requests: int, deadline: float, tally: Tally) -> None:
    """A client's requests in turn: ``send`` takes an image path and returns the answer's label; each is timed
    and tallied, and any failure, a missing label among them, is counted."""
    for i in range(requests):
        if time.monotonic() > deadline:
            tally.failed("not sent: the run's time limit was reached")
            continue
        start = time.perf_counter()
        try:
            label = send(image[i] if isinstance(image, list) else image)
            if not label or "label" not in label:
                raise ValueError(f"no label in the answer: {label!r}")
            tally.answered((time.perf_counter() - start) * 1000)
        except Exception as e:  # noqa: BLE001 - every kind of failure is counted and reported
            tally.failed(f"{type(e).__name__}: {e}"[:200])


def one_client(url: str, image: str | list[str], model: str, requests: int, timeout_s: float, deadline: float,
               tally: Tally, ready: threading.Barrier) -> None:
    """Gradio's Python client."""
    from gradio_client import Client, handle_file

    try:
        client = Client(url, verbose=False)
    except Exception as e:  # noqa: BLE001 - a client that cannot connect counts all its requests as failed
        ready.wait()
        for _ in range(requests):
            tally.failed(f"connect: {type(e).__name__}: {e}")
        return

    def send(path: str):
        job = client.submit(handle_file(path), None, model, 5, api_name="/classify")
        try:
            return job.result(timeout=timeout_s)[0]
        except Exception:
            job.cancel()
            raise

    ready.wait()
    send_requests(send, image, requests, deadline, tally)


def one_http_client(url: str, image: str | list[str], model: str, requests: int, timeout_s: float, deadline: float,
                    tally: Tally, ready: threading.Barrier) -> None:
    """Gradio's HTTP API (upload, call, event stream, then the heatmap file), on one kept-alive connection."""
    import json

    import httpx

    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s) as http:

        def send(path: str):
            with open(path, "rb") as f:
                uploaded = http.post("/gradio_api/upload", files=[("files", (Path(path).name, f, "image/jpeg"))])
            uploaded.raise_for_status()
            file = {"path": uploaded.json()[0], "meta": {"_type": "gradio.FileData"}}
            call = http.post("/gradio_api/call/classify", json={"data": [file, None, model, 5, None, 0]})
            call.raise_for_status()
            event, data = "", ""
            with http.stream("GET", f"/gradio_api/call/classify/{call.json()['event_id']}") as stream:
                for line in stream.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:") and event in ("complete", "error"):
                        data = line[5:].strip()
                        break
            if event != "complete":
                raise ValueError(f"the app answered {event or 'nothing'}: {data[:150]}")
            label, _, heatmap = json.loads(data)
            if heatmap:  # the browser shows it: fetch it as the page would
                http.get(heatmap["url"]).raise_for_status()
            return label

        ready.wait()
        send_requests(send, image, requests, deadline, tally)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


def report(tally: Tally, total: int, seconds: float) -> str:
    ms = sorted(tally.latencies_ms)
    rows = [
        ("requests", f"{total}"),
        ("answered", f"{len(ms)}"),
        ("failed", f"{len(tally.errors)}"),
        ("p50 latency (ms)", f"{percentile(ms, 0.50):.0f}"),
        ("p95 latency (ms)", f"{percentile(ms, 0.95):.0f}"),
        ("max latency (ms)", f"{ms[-1]:.0f}" if ms else "nan"),
        ("requests/s", f"{len(ms) / seconds:.1f}"),
        ("wall time (s)", f"{seconds:.1f}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value:>8}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running app on loopback (default: start one here)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients, each its own connection")
    parser.add_argument("--requests", type=int, default=25, help="/classify requests per client")
    parser.add_argument("--image", help="the image every request sends (default: an example MNIST digit)")
    parser.add_argument("--distinct-photos", action="store_true",
                        help="every request sends its own JPEG (views of real photos, 640 px): nothing can be cached")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request before it counts as failed")
    parser.add_argument("--client", choices=("http", "gradio_client"), default="http",
                        help="how each client talks to the app (default: Gradio's HTTP API, as a browser does)")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="no request is sent after this long")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 64 or not 1 <= args.requests <= 1000:
        parser.error("--clients must be 1-64 (the app's queue holds 64) and --requests 1-1000")

    demo = None
    if args.url:
        if not is_loopback(args.url):
            parser.error(f"{args.url} is not a loopback address: this script only loads an app on this machine")
        url = args.url
    else:
        print("starting the app in this process (offline, tiny starter models) ...", flush=True)
        demo, url = start_app_here()
    image = args.image or default_image()
    if not Path(image).is_file():
        parser.error(f"--image {image} does not exist")
    images = [image] * args.clients
    if args.distinct_photos:
        images = distinct_photos(Path(tempfile.mkdtemp(prefix="resnet-hub-loadtest-photos-")), args.clients, args.requests)

    tally = Tally()
    ready = threading.Barrier(args.clients + 1, timeout=120)
    deadline = time.monotonic() + args.max_seconds
    client = one_http_client if args.client == "http" else one_client
    threads = [
        threading.Thread(target=client, args=(url, images[c], args.model, args.requests, args.timeout, deadline,
                                              tally, ready), daemon=True)
        for c in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    try:
        ready.wait()  # every client connected: time the requests only
    except threading.BrokenBarrierError:
        print("some clients could not start within 120 s", file=sys.stderr)
    start = time.perf_counter()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + args.timeout + 5)
    seconds = time.perf_counter() - start
    total = args.clients * args.requests
    missing = total - len(tally.latencies_ms) - len(tally.errors)
    for _ in range(missing):  # threads still stuck past every limit
        tally.failed("no answer within the run's time limit")

    what = "each its own JPEG photo" if args.distinct_photos else Path(image).name
    print(f"{args.clients} clients x {args.requests} /classify requests ({args.model}; {what}) against {url}, "
          f"{args.client} clients")
    print(report(tally, total, seconds))
    for error in sorted(set(tally.errors))[:5]:
        print(f"  error: {error}")
    if demo is not None:
        demo.close()
    return 1 if tally.errors else 0


if __name__ == "__main__":
    sys.exit(main())
