"""The local model store: starter models and models fine-tuned here, in Hub layout.

Root: ``$RESNET_HUB_HOME`` or ``~/.cache/resnet-hub``. Each model is a folder
that :func:`resnet_hub.load` reads, so the store is only a naming convention:
``models/NAME`` for the starters and a local user's models, and
``models/visitors/OWNER/NAME`` for a Space visitor's (see :mod:`resnet_hub.owners`),
so two visitors may both call a model ``my-pets``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from .errors import ResNetHubError
from .layouts import CONFIG_NAME, WEIGHTS_NAME
from .owners import Visitor

STARTER_ARCHS = ("resnet18", "resnet50")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
VISITORS = "visitors"  # models/visitors/OWNER/NAME: never a model name of the shared store

def store_root() -> Path:
    return Path(os.environ.get("RESNET_HUB_HOME") or Path.home() / ".cache" / "resnet-hub").expanduser()


def models_dir() -> Path:
    return store_root() / "models"


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name or "") or name == VISITORS:
        raise ResNetHubError(
            f"model name {name!r} must start with a letter or digit and use only letters, digits, '.', '_' and '-'"
        )


def owner_dir(owner: str) -> Path:
    """Where one visitor's models live."""
    _check_name(owner)
    return models_dir() / VISITORS / owner


def model_folder(name: str, visitor: Visitor | None = None) -> Path:
    """The store folder a model called ``name`` is saved to: the visitor's own namespace on a Space."""
    _check_name(name)
    if visitor is None or visitor.shared:
        return models_dir() / name
    return owner_dir(visitor.owner) / name


def stored_model(name: str, visitor: Visitor | None = None) -> Path | None:
    """The store folder of the model called ``name`` that ``visitor`` may use, or None.

    The local user (``visitor`` None or shared) may use every model of the shared store; a Space
    visitor only their own and the starters.
    """
    if not _NAME_RE.match(name or "") or name == VISITORS:
        return None
    if visitor is None or visitor.shared:
        candidates = [models_dir() / name]
    else:
        candidates = [owner_dir(owner) / name for owner in visitor.owners]
        if name.startswith("starter-"):
            candidates.append(models_dir() / name)
    return next((folder for folder in candidates if is_model_folder(folder)), None)


def starter_name(arch: str) -> str:
    return f"starter-{arch}-mnist"


def starter_folder(arch: str) -> Path:
    return model_folder(starter_name(arch))


def is_model_folder(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()


def local_models(visitor: Visitor | None = None) -> list[Path]:
    """The complete model folders ``visitor`` may use, starters first, then by name.

    The local user: every model of the shared store. A Space visitor: the starters and their own.
    """
    root = models_dir()
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and is_model_folder(p)]
    if visitor is not None and not visitor.shared:
        found = [p for p in found if p.name.startswith("starter-")]
        seen = {p.name for p in found}
        for owner in visitor.owners:
            folder = owner_dir(owner)
            for p in sorted(folder.iterdir()) if folder.is_dir() else []:
                if p.is_dir() and not p.name.startswith(".") and p.name not in seen and is_model_folder(p):
                    found.append(p)
                    seen.add(p.name)
    return sorted(found, key=lambda p: (not p.name.startswith("starter-"), p.name))


def remove_expired(max_age_s: float, *, now: float | None = None) -> list[Path]:
    """Delete visitors' models trained more than ``max_age_s`` ago (never the shared store); returns them.

    The age is that of the model's ``config.json``, written once when the model was saved.
    """
    now = time.time() if now is None else now
    root = models_dir() / VISITORS
    removed = []
    for owner in sorted(root.iterdir()) if root.is_dir() else []:
        for folder in sorted(owner.iterdir()) if owner.is_dir() else []:
            try:
                age = now - (folder / CONFIG_NAME).stat().st_mtime
            except OSError:
                continue  # half-written (a temporary name) or not a model: not ours to judge
            if age > max_age_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        try:
            owner.rmdir()  # only when empty
        except OSError:
            pass
    return removed


def model_record(folder: str | Path) -> dict[str, Any]:
    """A model folder's config.json as read, without loading the model; {} when it has none that reads as one."""
    try:
        record = json.loads((Path(folder) / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
