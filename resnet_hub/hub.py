"""Sources: a Hub repo id (``org/name[@revision]``) or a local folder, resolved to a folder on disk.

Offline (``HF_HUB_OFFLINE=1`` or no network) Hub ids resolve from the Hugging
Face cache. Only config and safetensors files are downloaded.

Whose token a download uses, and how large a download may be, is a
:class:`HubAccess` set around the call with :func:`access`: the library and the
command line use huggingface_hub's own (``HF_TOKEN``, ``hf auth login``); the app
fetches what a visitor typed anonymously or with that visitor's own OAuth token,
never with the process's, and refuses oversize weights from the Hub's file
metadata before a byte of them is downloaded.
"""

from __future__ import annotations

import contextvars
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
# ResNet-152 in fp32 is 240 MB; anything past this on a Space is not a ResNet worth serving to a visitor.
MAX_WEIGHTS_BYTES = 500 * 10**6


@dataclass(frozen=True)
class HubAccess:
    """How Hub ids are fetched: with whose token, up to what size, and what to tell someone who lacks access.

    ``token``: None is huggingface_hub's own (``HF_TOKEN``, the saved login); False is anonymous;
    a string is that token (a visitor's OAuth token). ``max_weights_bytes``: None is no limit.
    """

    token: str | bool | None = None
    max_weights_bytes: int | None = None
    login_hint: str = "log in with `hf auth login`"


_ACCESS: contextvars.ContextVar[HubAccess] = contextvars.ContextVar("resnet_hub_access", default=HubAccess())


@contextmanager
def access(hub_access: HubAccess) -> Iterator[HubAccess]:
    """Fetch Hub ids with ``hub_access`` inside the block (this thread or task only).

    >>> with access(HubAccess(token=False, max_weights_bytes=MAX_WEIGHTS_BYTES)):   # doctest: +SKIP
    ...     load("someone/resnet")          # anonymous, and refused above 500 MB
    """
    reset = _ACCESS.set(hub_access)
    try:
        yield hub_access
    finally:
        _ACCESS.reset(reset)


def current_access() -> HubAccess:
    return _ACCESS.get()


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
    hub = current_access()
    try:
        _check_weights_size(repo_id, revision, where, hub)
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, PREPROCESSOR_NAME],
            etag_timeout=HUB_ETAG_TIMEOUT_S,
            token=hub.token,
        )
    except GatedRepoError as e:
        raise SourceError(
            f"{where} is gated: the Hub answered {_hub_said(e)!r}. Request access on "
            f"https://huggingface.co/{repo_id}, then {hub.login_hint}"
        ) from None
    except RepositoryNotFoundError as e:
        raise WeightsNotFoundError(
            f"{where} was not found on the Hub, or it is private (the Hub answered {_hub_said(e)!r}): check the "
            f"name, or if it is yours, {hub.login_hint}"
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
    folder = Path(folder)
    _refuse_oversize(where, _file_size(folder / WEIGHTS_NAME), hub.max_weights_bytes)  # the cache, offline
    return folder


def _check_weights_size(repo_id: str, revision: str | None, where: str, hub: HubAccess) -> None:
    """Online: the weights' size from the Hub's file metadata, refused before any byte of them is fetched.

    Asked even without a size limit: a private or gated repo is refused here, before snapshot_download
    could fall back to a copy someone else's token left in the local cache.
    """
    from huggingface_hub import HfApi, is_offline_mode

    if is_offline_mode():
        _refuse_unverified(repo_id, where, hub)
        return
    import httpx2

    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        infos = HfApi().get_paths_info(repo_id, [WEIGHTS_NAME], revision=revision, token=hub.token)
    except (httpx2.ConnectError, httpx2.TimeoutException):
        _refuse_unverified(repo_id, where, hub)
        return  # no network: snapshot_download resolves from the cache, and the cached file is checked after
    except (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError):
        raise
    except HfHubHTTPError as e:  # the Hub is down or refused otherwise: say what it said
        raise SourceError(f"{where}: the Hub answered {_hub_said(e)!r}; try again later") from None
    for info in infos:
        if getattr(info, "path", None) == WEIGHTS_NAME:
            _refuse_oversize(where, getattr(info, "size", None), hub.max_weights_bytes)


def _refuse_unverified(repo_id: str, where: str, hub: HubAccess) -> None:
    """An anonymous fetch the Hub cannot confirm is refused: the local cache may hold a private repo that
    someone else's token downloaded. The public defaults are the exception."""
    if hub.token is False and repo_id not in DEFAULT_SOURCES.values():
        raise WeightsNotFoundError(
            f"{where}: the Hub cannot be reached to confirm that it is public, so it is not served from this "
            f"machine's cache; try again when the Hub is reachable"
        )


def _refuse_oversize(where: str, size: int | None, limit: int | None) -> None:
    if limit is not None and size is not None and size > limit:
        raise SourceError(
            f"{where}: {WEIGHTS_NAME} is {size / 1e6:,.0f} MB, over this app's limit of {limit / 1e6:,.0f} MB "
            f"for weights fetched from the Hub (refused before downloading). Use a smaller checkpoint "
            f"(ResNet-50 is about 100 MB), or run resnet-hub on your own machine"
        )


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _hub_said(error: Exception) -> str:
    """The Hub's own words for a refusal (its X-Error-Message or error body), else huggingface_hub's first line."""
    said = getattr(error, "server_message", None) or str(error).strip().splitlines()[0]
    return said.strip()[:200]


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
        return HfApi().list_repo_files(repo_id, revision=revision, token=current_access().token)
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
