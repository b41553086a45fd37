"""What a model's name stands for, wherever a model is named: the app's choosers, ``--model``, ``--models``,
``--base``, ``--out`` and :func:`resnet_hub.load` all come here.

A name is one of, in this order:

- a short name, ``resnet18`` or ``resnet50``: the ImageNet pair on the Hub (the app and the command line serve the
  offline starter digit models instead when the pair cannot be reached; see ``ModelRegistry``);
- ``local:NAME``, as the choosers list a model of the store, or an existing folder (where paths are allowed);
- ``NAME``, a model of the local store (for a Space visitor: one of theirs);
- a Hub repo id, ``org/name`` or ``org/name@revision``.

A Space visitor may never name a path on the server: ``allow_paths=False``.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import ServiceError
from .hub import DEFAULT_SOURCES
from .owners import Visitor
from .store import STARTER_ARCHS, local_models, model_folder, stored_model

STORE_PREFIX = "local:"
# What a visitor may type as a model: a Hub repo id (org/name, optionally @revision), never a server path.
TYPED_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@[\w.-]+)?$")
LOCAL = Visitor.local()


def model_source(name: str, *, visitor: Visitor = LOCAL, allow_paths: bool = True) -> str:
    """The weights source (a Hub repo id, or a folder) that ``name`` stands for, for ``visitor``.

    >>> model_source("resnet50")
    'timm/resnet50.a1_in1k'
    >>> model_source("local:my-pets")                     # doctest: +SKIP
    '/home/me/.cache/resnet-hub/models/my-pets'
    """
    name = str(name or "").strip()
    if not name:
        raise ServiceError("choose a model first")
    if name in STARTER_ARCHS:
        return DEFAULT_SOURCES[name]
    if allow_paths and Path(name).expanduser().is_dir():
        return name  # the user's own folder, on their own machine
    if (folder := stored_source(name, visitor)) is not None:
        return folder
    if allow_paths and ("/" in name and not TYPED_REPO_ID.match(name) or name.startswith((".", "~"))
                        or Path(name).expanduser().exists()):
        return name  # a path: load() says what is wrong with it (missing, a file, no config.json)
    # A Hub repo id typed in by the user. Outside the command line, a name that is a server path is refused, so its
    # errors never tell a visitor which paths exist: the app serves the Hub and its store only.
    if not TYPED_REPO_ID.match(name) or ".." in name or Path(name).expanduser().exists():
        stored_names = ", ".join(f.name for f in local_models(visitor)) or "none yet"
        if allow_paths:
            raise ServiceError(
                f"{name!r} is not a model: give a short name ({', '.join(STARTER_ARCHS)}), the name of a model "
                f"in the local store ({stored_names}), a Hub repo id such as 'timm/resnet50.a1_in1k', or an existing "
                f"folder")
        raise ServiceError(
            f"{name!r} is not a model here: pick one from the list, type the name of a model in the store "
            f"({stored_names}), or a Hub repo id such as 'timm/resnet50.a1_in1k'")
    return name


def stored_source(name: str, visitor: Visitor = LOCAL) -> str | None:
    """The store folder of ``local:NAME`` (which must be there) or of ``NAME`` (None when it is not a stored model)."""
    name = str(name or "").strip()
    if name.startswith(STORE_PREFIX):
        stored = name[len(STORE_PREFIX):]
        model_folder(stored)  # a malformed name is said as such
        if (folder := stored_model(stored, visitor)) is None:
            if visitor.shared:
                raise ServiceError(f"{stored} is not in the local model store any more")
            raise ServiceError(f"{stored} is not one of your models (or it was removed after its retention "
                               f"time): pick one from the list")
        return str(folder)
    folder = stored_model(name, visitor)
    return None if folder is None else str(folder)


def is_hub_id(source: str) -> bool:
    """Whether ``source`` (as :func:`model_source` gives it) is fetched from the Hub."""
    return bool(TYPED_REPO_ID.match(source)) and not Path(source).expanduser().exists()


def output_folder(out: str, visitor: Visitor = LOCAL) -> Path:
    """Where ``--out`` saves a model: a plain name (no ``/``, not starting with ``.`` or ``~``) goes into the store
    the app lists; anything else is a path."""
    out = str(out).strip()
    if "/" in out or "\\" in out or out.startswith((".", "~")):
        return Path(out).expanduser()
    return model_folder(out, visitor)
