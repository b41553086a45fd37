"""Who is asking: the one user of a local app, or one visitor among many on a Space.

One setting decides the mode: ``RESNET_HUB_MULTI_USER`` (``1``/``0``), defaulting
to on where Hugging Face Spaces run the app (``SYSTEM=spaces``). In Space mode a
visitor is known by their Hugging Face login when they log in, else by a random
id their browser keeps; the models they fine-tune are stored under that owner,
are theirs alone, and are removed after :func:`retention_hours`. Hub ids they
type are fetched anonymously or with their own OAuth token, never with the
process's. Locally, the one user sees the whole store and uses their own login.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass

from .hub import MAX_WEIGHTS_BYTES, HubAccess

MULTI_USER_ENV = "RESNET_HUB_MULTI_USER"
RETENTION_ENV = "RESNET_HUB_RETENTION_HOURS"
DEFAULT_RETENTION_HOURS = 24.0
_BROWSER_ID = re.compile(r"^[0-9a-f]{32}$")
_HF_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")  # with "hf-", still a store folder name


def multi_user() -> bool:
    """Space mode: ``RESNET_HUB_MULTI_USER`` if set, else whether this runs on a Hugging Face Space."""
    value = os.environ.get(MULTI_USER_ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return os.environ.get("SYSTEM") == "spaces"


def retention_hours() -> float:
    """How long a visitor's fine-tuned model is kept in Space mode (``RESNET_HUB_RETENTION_HOURS``, default 24)."""
    try:
        hours = float(os.environ.get(RETENTION_ENV) or DEFAULT_RETENTION_HOURS)
    except ValueError:
        hours = DEFAULT_RETENTION_HOURS
    return hours if hours > 0 else DEFAULT_RETENTION_HOURS


def new_browser_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Visitor:
    """Whose models a request sees and where its new ones go; whose token fetches its Hub ids.

    ``owners`` empty: the one local user, who sees the whole store. Otherwise the first owner
    receives new models, and models of every owner listed are theirs (a visitor who logs in
    keeps what this browser trained before).

    >>> Visitor.on_space(browser_id="0" * 32, hf_login="alice").owners
    ('hf-alice', 'browser-00000000000000000000000000000000')
    """

    owners: tuple[str, ...] = ()
    token: str | None = None  # the visitor's own OAuth token (Space mode only)

    @classmethod
    def local(cls) -> Visitor:
        return cls()

    @classmethod
    def on_space(cls, *, browser_id: str | None = None, hf_login: str | None = None,
                 token: str | None = None, session: str | None = None) -> Visitor:
        """A Space visitor: their login, else this browser's id, else (an API client) this session's.

        With none of them, one who owns nothing and sees only the shared models.
        """
        owners = []
        if hf_login and _HF_NAME.match(hf_login):
            owners.append(f"hf-{hf_login}")
        if browser_id and _BROWSER_ID.match(browser_id):  # the browser says it: only an unguessable id is taken
            owners.append(f"browser-{browser_id}")
        elif session and not owners:
            owners.append(f"session-{hashlib.sha256(session.encode()).hexdigest()[:32]}")
        return cls(tuple(owners) or ("nobody",), token or None)

    @property
    def shared(self) -> bool:
        """True for the local user, who sees every model in the store."""
        return not self.owners

    @property
    def owner(self) -> str | None:
        """The namespace new models go to (None: the shared store, locally)."""
        return self.owners[0] if self.owners else None

    @property
    def can_own(self) -> bool:
        return self.shared or self.owner != "nobody"

    def acts_for(self, owner: Visitor) -> bool:
        """Whether this visitor may control (stop, cancel, review) what ``owner`` started: the local user may
        control anything; a Space visitor only what one of their own identities started."""
        return self.shared or bool(set(self.owners) & set(owner.owners))

    def hub_access(self) -> HubAccess:
        if self.shared:  # the machine's user fetches with their own login
            return HubAccess(token=None, max_weights_bytes=MAX_WEIGHTS_BYTES, login_hint="log in with `hf auth login`")
        return HubAccess(token=self.token or False, max_weights_bytes=MAX_WEIGHTS_BYTES,
                         login_hint="log in with the Hugging Face button on this page (it lends the app your own "
                                    "token for this visit only)")

    @property
    def cache_key(self) -> str | None:
        """Whose access a Hub model loaded for this visitor was fetched with (None: anonymous or local, shared)."""
        return self.owner if (self.token and not self.shared) else None
