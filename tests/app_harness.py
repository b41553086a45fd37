"""The real app, started on loopback for end-to-end tests: offline, on a throwaway store, with tiny starters.

Offline, the app serves the starter digit models, which it trains on first use (minutes
on 2 cores). Here they are pre-built tiny (one epoch on a few hundred digits): the tests
check the plumbing, not the accuracy.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ENV = ("RESNET_HUB_HOME", "HF_HUB_OFFLINE", "GRADIO_ANALYTICS_ENABLED", "GRADIO_TEMP_DIR")
TINY_STARTERS = {"resnet18": 10, "resnet50": 10}  # arch -> MNIST digits per class


@dataclass(frozen=True)
class RunningApp:
    module: ModuleType  # the imported app.py
    url: str
    client: Any  # gradio_client.Client
    home: Path  # RESNET_HUB_HOME
    uploads: Path  # GRADIO_TEMP_DIR, where the server keeps uploads


def build_tiny_starters() -> None:
    """Save a one-epoch starter per architecture where the app looks for its starters."""
    from resnet_hub import store
    from resnet_hub.data import mnist_sample
    from resnet_hub.finetune import FinetuneConfig, finetune
    from resnet_hub.services import starters

    for arch, per_class in TINY_STARTERS.items():
        if not store.is_model_folder(store.starter_folder(arch)):
            config = FinetuneConfig(base=f"scratch:{arch}", epochs=1, image_size=32, batch_size=32)
            result = finetune(mnist_sample(limit_per_class=per_class), config)
            result.model.info.training["name"] = store.starter_name(arch)
            result.save(store.starter_folder(arch))
        trained = []
        starters.build_starter(arch, on_event=trained.append)
        if trained:
            raise RuntimeError(f"the app would train its {arch} starter: the pre-built one is not where it looks")


@contextmanager
def running_app(root: Path) -> Iterator[RunningApp]:
    """Import app.py into a fresh module and serve it on 127.0.0.1 until the block exits."""
    from huggingface_hub import constants

    saved_env = {k: os.environ.get(k) for k in ENV}
    saved_hub = (constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE)
    home, gradio_tmp, empty_cache = root / "home", root / "gradio", root / "hf-cache"
    for folder in (home, gradio_tmp, empty_cache):
        folder.mkdir(parents=True, exist_ok=True)
    os.environ.update(RESNET_HUB_HOME=str(home), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
                      GRADIO_TEMP_DIR=str(gradio_tmp))
    # An empty cache, so the ImageNet weights are never found even on a machine that has them.
    constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE = True, str(empty_cache)
    app = None
    try:
        build_tiny_starters()
        sys.modules.pop("app", None)
        app = importlib.import_module("app")
        app.ctx.start()
        _, url, _ = app.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True,
                                    **app.launch_options())
        from gradio_client import Client

        yield RunningApp(app, url, Client(url, verbose=False), home, gradio_tmp)
    finally:
        if app is not None:
            app.ctx.close()  # its background preparations end before the environment they read is restored
            app.demo.close()
        sys.modules.pop("app", None)
        constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE = saved_hub
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value



SPACE_ENV = {  # what a Hugging Face Space sets (any values do: nothing here reaches huggingface.co)
    "SYSTEM": "spaces", "SPACE_ID": "resnet-hub/test-space", "OAUTH_CLIENT_ID": "test-client-id",
    "OAUTH_CLIENT_SECRET": "test-client-secret", "OAUTH_SCOPES": "openid profile inference-api",
    "OPENID_PROVIDER_URL": "https://huggingface.co",
}


@dataclass(frozen=True)
class ServedApp:
    url: str
    home: Path
    process: Any  # subprocess.Popen
    log: Path


@contextmanager
def space_app(root: Path, *, extra_env: dict[str, str] | None = None) -> Iterator[ServedApp]:
    """app.py started as a Space starts it: its own process (Gradio reads the OAuth variables at import),
    Space mode, offline, with tiny pre-built starters; served on 127.0.0.1 until the block exits."""
    import socket
    import subprocess
    import time

    import httpx

    home, gradio_tmp, empty_cache = root / "home", root / "gradio", root / "hf-cache"
    for folder in (home, gradio_tmp, empty_cache):
        folder.mkdir(parents=True, exist_ok=True)
    saved = os.environ.get("RESNET_HUB_HOME")
    os.environ["RESNET_HUB_HOME"] = str(home)
    try:
        build_tiny_starters()
    finally:
        if saved is None:
            os.environ.pop("RESNET_HUB_HOME")
        else:
            os.environ["RESNET_HUB_HOME"] = saved
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "GRADIO_"))}
    env.update(SPACE_ENV, RESNET_HUB_HOME=str(home), HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(empty_cache),
               HF_HOME=str(root / "hf-home"), GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(gradio_tmp),
               GRADIO_SSR_MODE="true", **(extra_env or {}))
    code = ("import app; app.ctx.start(); app.demo.launch(server_name='127.0.0.1', server_port=%d, quiet=True, **app.launch_options())"
            % port)
    log = root / "app.log"
    repo = Path(__file__).resolve().parent.parent
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-c", code], cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the Space-mode app exited ({process.returncode}):\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Space-mode app did not serve within 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield ServedApp(url, home, process, log)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
