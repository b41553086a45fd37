"""What every tab is given: the services, who is asking, and the app's settings. No Gradio here.

Building it reads only read-only inputs (the environment, the store as it is); :meth:`AppContext.start` does what
runs once per process: the Hub check, the files the app keeps in the store, the starters' build and the frozen-part
preparation.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .. import atomic
from ..owners import Visitor, multi_user, new_browser_id, retention_hours
from ..services.inspections import Inspections
from ..services.batches import BatchJobs
from ..services.jobs import IMAGE_SIZE, FinetuneJobs
from ..services.lab_runs import LabRuns
from ..services.registry import ModelRegistry
from ..store import store_root

DEFAULT_BASES = ("resnet18", "resnet50")
BROWSER_SECRET = ".browser-state-secret"


def _browser_state_secret() -> tuple[str, bool]:
    """The secret the store keeps (so a browser's id survives restarts: its models are on disk), or a new one
    (True: not yet written; :meth:`AppContext.start` writes it)."""
    try:
        secret = (store_root() / BROWSER_SECRET).read_text(encoding="ascii").strip()
        if secret:
            return secret, False
    except OSError:
        pass
    return new_browser_id(), True


@dataclass
class AppContext:
    """The app's services and settings, made without side effects; :meth:`start` starts what runs in the
    background. Space mode (``multi_user``): each visitor's fine-tuned models and runs are theirs."""

    registry: ModelRegistry = field(default_factory=lambda: ModelRegistry(check_hub=False))
    multi_user: bool = field(default_factory=multi_user)
    retention_hours: float = field(default_factory=retention_hours)
    lab: LabRuns = field(default_factory=LabRuns)
    jobs: FinetuneJobs = field(init=False)  # fine-tunes on the registry's models
    inspections: Inspections = field(init=False)  # data inspections before a fine-tune
    batches: BatchJobs = field(init=False)  # batch classification and comparison on a set
    browser_secret: str = field(init=False)
    _secret_unsaved: bool = field(init=False)  # a new secret, written by start()
    _started: bool = field(init=False, default=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.jobs = FinetuneJobs(self.registry, prepare_frozen_parts=True)
        self.inspections = Inspections(self.registry)
        self.batches = BatchJobs(self.registry)
        self.browser_secret, self._secret_unsaved = _browser_state_secret()

    def start(self) -> None:
        """Once per process (later calls do nothing): check the Hub for the default weights, keep the browser-state
        secret, and (offline) start training the starters, then convert the default bases' frozen parts at the
        size a photo zip trains at, so the first click and even the first fine-tune rarely wait."""
        with self._lock:
            if self._started:
                return
            self._started = True
        if self._secret_unsaved:
            try:
                store_root().mkdir(parents=True, exist_ok=True)
                atomic.write_text(store_root() / BROWSER_SECRET, self.browser_secret, fsync=True)
            except OSError:
                pass  # a read-only store: ids then last as long as this process
        self.registry.start_building_starters()
        self.jobs.prepare_bases(list(DEFAULT_BASES), IMAGE_SIZE["photo"])

    @property
    def started(self) -> bool:
        return self._started

    def close(self) -> None:
        """Prepare nothing more and end the lab's runs: an app closed in a process that goes on (a test's)."""
        self.jobs.close()
        self.lab.close()
        self.inspections.close()
        self.batches.close()
        self.registry.close()

    def visitor_of(self, browser_id=None, request=None, profile=None, oauth_token=None) -> Visitor:
        """Who is asking: the local user, or a Space visitor (their login, else this browser, else this API
        session)."""
        if not self.multi_user:
            return Visitor.local()
        return Visitor.on_space(browser_id=browser_id, hf_login=getattr(profile, "username", None),
                                token=getattr(oauth_token, "token", None),
                                session=getattr(request, "session_hash", None))
