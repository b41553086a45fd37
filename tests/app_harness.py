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

    for arch, per_class in TINY_STARTERS.items():
        if not store.is_model_folder(store.starter_folder(arch)):
            config = FinetuneConfig(base=f"scratch:{arch}", epochs=1, image_size=32, batch_size=32)
            result = finetune(mnist_sample(limit_per_class=per_class), config)
            result.model.info.training["name"] = store.starter_name(arch)
            result.save(store.starter_folder(arch))
        trained = []
        store.build_starter(arch, on_event=trained.append)
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
        _, url, _ = app.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True,
                                    **app.launch_options())
        from gradio_client import Client

        yield RunningApp(app, url, Client(url, verbose=False), home, gradio_tmp)
    finally:
        if app is not None:
            app.demo.close()
        sys.modules.pop("app", None)
        constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE = saved_hub
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

