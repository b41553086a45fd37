"""Shared fixtures: real files on disk, a real Hugging Face cache laid out by hand, no network."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

ARCHS = ["resnet18", "resnet50"]


@pytest.fixture(scope="session", autouse=True)
def shared_engine_cache(tmp_path_factory):
    """One engine cache for the whole run, apps and subprocesses included (entries are keyed by the
    weights and the software, so sharing is safe): each model's engines are chosen once, not per test."""
    saved = os.environ.get("RESNET_HUB_ENGINE_CACHE")
    os.environ["RESNET_HUB_ENGINE_CACHE"] = str(tmp_path_factory.mktemp("engine-cache"))
    yield
    if saved is None:
        os.environ.pop("RESNET_HUB_ENGINE_CACHE", None)
    else:
        os.environ["RESNET_HUB_ENGINE_CACHE"] = saved


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics, so a wrong key mapping shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model


class HubCache:
    """A Hugging Face hub cache (``models--org--name/{blobs,refs,snapshots}``) written the way
    huggingface_hub writes it: content-addressed blobs, refs naming a commit, snapshot symlinks."""

    def __init__(self, root: Path):
        self.root = root

    def add(self, repo_id: str, files: dict[str, Path | bytes], revision: str = "main") -> Path:
        repo = self.root / f"models--{repo_id.replace('/', '--')}"
        commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
        snapshot = repo / "snapshots" / commit
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        snapshot.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            data = content if isinstance(content, bytes) else Path(content).read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            link = snapshot / name
            if link.exists() or link.is_symlink():
                link.unlink()
            link.symlink_to(os.path.relpath(blob, snapshot))
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / revision).write_text(commit)
        return snapshot

    def add_folder(self, repo_id: str, folder: Path, revision: str = "main") -> Path:
        return self.add(repo_id, {p.name: p for p in folder.iterdir() if p.is_file()}, revision)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> HubCache:
    """An empty offline Hugging Face cache: the real download functions resolve from it."""
    from huggingface_hub import constants

    root = tmp_path / "hf-cache" / "hub"
    root.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return HubCache(root)


@pytest.fixture(scope="session")
def saved_models(tmp_path_factory) -> dict[str, Path]:
    """One saved random model per architecture, in resnet-hub's own layout (randomised BN)."""
    import resnet_hub

    out = {}
    for arch in ARCHS:
        torch.manual_seed(0)
        model = randomize_batchnorm(resnet_hub.create(arch, num_classes=10, labels=[f"digit {i}" for i in range(10)]))
        out[arch] = model.save_pretrained(tmp_path_factory.mktemp(arch) / "model")
    return out


@pytest.fixture(scope="session")
def digit_base(tmp_path_factory) -> Path:
    """A ResNet-18 trained here on real MNIST digits (3 epochs, 32 px), saved: weights with an accuracy to protect."""
    from resnet_hub.data import mnist_sample
    from resnet_hub.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(base="scratch:resnet18", epochs=3, image_size=32, batch_size=64, seed=0)
    result = finetune(mnist_sample(limit_per_class=200), config)
    return result.save(tmp_path_factory.mktemp("digits") / "digits")


@pytest.fixture
def copy_of(tmp_path):
    def copy(folder: Path) -> Path:
        return Path(shutil.copytree(folder, tmp_path / f"copy-{folder.parent.name}"))

    return copy


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """The Hub's upload endpoints, faked at the network edge, with no token anywhere (tests pass their own)."""
    from huggingface_hub import constants

    from .fake_hub import FakeHub

    hub = FakeHub()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    # huggingface_hub reads the token file's path once, at import: HF_HOME alone does not move it.
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    hub.install(monkeypatch)
    yield hub
    hub.uninstall()


@pytest.fixture(scope="session")
def running_app(tmp_path_factory):
    """app.py served on 127.0.0.1, offline, with a throwaway store and tiny pre-built starters; started once."""
    from .app_harness import running_app as serve

    with serve(tmp_path_factory.mktemp("app")) as running:
        yield running


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
