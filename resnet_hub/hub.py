"""Sources: a Hub repo id (``org/name[@revision]``) or a local folder, resolved to a folder on disk.

Offline (``HF_HUB_OFFLINE=1`` or no network) Hub ids resolve from the Hugging
Face cache. Only config and safetensors files are downloaded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import SourceError, WeightsNotFoundError
from .layouts import CONFIG_NAME, PREPROCESSOR_NAME, WEIGHTS_NAME

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
HUB_ETAG_TIMEOUT_S = 10.0

# Same training recipe (timm's A1, arXiv:2110.00476) for both, so the comparison is fair.
DEFAULT_SOURCES = {
    "resnet18": "timm/resnet18.a1_in1k",
    "resnet50": "timm/resnet50.a1_in1k",
}

_REVISION_RE = re.compile(r"^[\w.\-/]{1,200}$")


def parse_repo_id(source: str, *, allow_revision: bool = True) -> tuple[str, str | None]:
    """``"org/name@rev"`` -> ``("org/name", "rev")``, or :class:`SourceError` if malformed."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    source = source.strip()
    repo_id, _, revision = source.partition("@")
    if revision and not allow_revision:
        raise SourceError(f"{source!r}: give a repo id without '@revision'")
    if "@" in source and not _REVISION_RE.match(revision):
        raise SourceError(f"{source!r}: the revision after '@' must be a branch, tag or commit hash")
    if repo_id.count("/") != 1:
        raise SourceError(
            f"{source!r} is not a Hub repo id: write it as 'org/name' (optionally '@revision'), "
            f"or give the path of an existing folder"
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise SourceError(f"{source!r} is not a valid Hub repo id: {e}") from None
    return repo_id, revision or None


def resolve(source: str | os.PathLike) -> Path:
    """The local folder for ``source``: itself if it is a folder, else the Hub snapshot.

    Hub ids resolve from the Hugging Face cache when offline (``HF_HUB_OFFLINE=1``
    or no network); only config and safetensors files are ever downloaded.
    """
    text = str(source).strip()
    if not text:
        raise SourceError("no weights source given: pass a Hub repo id such as 'timm/resnet50.a1_in1k' or a folder")
    text = DEFAULT_SOURCES.get(text, text)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise SourceError(f"{text} is a file: pass the folder that holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or os.sep != "/" and os.sep in text:
        raise SourceError(f"folder {text} does not exist")
    repo_id, revision = parse_repo_id(text)
    return _download(repo_id, revision)


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision}" if revision else repo_id
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, PREPROCESSOR_NAME],
            etag_timeout=HUB_ETAG_TIMEOUT_S,
        )
    except GatedRepoError:
        raise SourceError(f"{where} is gated: accept its terms on the Hub and log in (`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise WeightsNotFoundError(
            f"{where} was not found on the Hub (or it is private: log in with `hf auth login`)"
        ) from None
    except RevisionNotFoundError:
        raise WeightsNotFoundError(f"{where}: no such revision on the Hub") from None
    except LocalEntryNotFoundError:
        raise WeightsNotFoundError(
            f"{where} is not in the local Hugging Face cache and the Hub cannot be reached "
            f"(offline or HF_HUB_OFFLINE=1). On a machine with network run "
            f"`hf download {repo_id} {CONFIG_NAME} {WEIGHTS_NAME}` (it fills the cache), "
            f"or pass a local folder with those two files."
        ) from None
    return Path(folder)


def pickle_checkpoints(folder: Path, source: str) -> list[str]:
    """The pickle checkpoint files of ``source``: from the Hub's file list when it answers, else the folder."""
    repo_files = _remote_files(source)
    names = repo_files if repo_files is not None else [p.name for p in folder.iterdir()]
    return sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))


def _remote_files(source: str) -> list[str] | None:
    """The repo's file list when the Hub answers; None offline or for folders."""
    from huggingface_hub import HfApi, is_offline_mode

    if Path(source).expanduser().exists() or is_offline_mode():
        return None
    try:
        repo_id, revision = parse_repo_id(DEFAULT_SOURCES.get(source, source))
        return HfApi().list_repo_files(repo_id, revision=revision)
    except Exception:  # noqa: BLE001 - only used to improve an error message
        return None



def hub_repo_id(source: str | os.PathLike) -> str | None:
    """The Hub repo id ``source`` names (short names resolved), or None for a local folder."""
    text = str(source).strip()
    if Path(text).expanduser().exists():
        return None
    try:
        return parse_repo_id(DEFAULT_SOURCES.get(text, text))[0]
    except SourceError:
        return None


def source_label(source: str | os.PathLike) -> str:
    """How a card or a page names a weights source: a Hub id (or ``scratch:ARCH``) as given,
    a local folder by its own name only, never by its path on this machine.

    >>> source_label("/srv/store/models/starter-resnet18-mnist")
    'starter-resnet18-mnist'
    >>> source_label("timm/resnet50.a1_in1k@main")
    'timm/resnet50.a1_in1k@main'
    """
    text = str(source).strip()
    if text.startswith("scratch:") or hub_repo_id(text) is not None:
        return DEFAULT_SOURCES.get(text, text)
    return Path(text).expanduser().name or text
