"""The offline starter models: ResNet-18 and ResNet-50 digit classifiers, trained here once and kept in the store.

The recipe's history (what was tried, on which CPU, with which result) is in docs/benchmarks.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..data import mnist_sample
from ..errors import ResNetHubError, ServiceError
from ..finetune import Event, FinetuneConfig, finetune
from ..store import STARTER_ARCHS, is_model_folder, model_record, starter_folder, starter_name
from ..training_slot import TRAINING, TrainingSlot, lower_this_threads_priority

logger = logging.getLogger(__name__)

DISPLAY = {"resnet18": "ResNet-18", "resnet50": "ResNet-50"}

# From scratch on the 4,000 training digits of the MNIST sample, ImageNet stem at 32 px (ResNet-18) and 24 px
# (ResNet-50): on CPU a 24 px epoch costs about what a 32 px one does (small ops dominate), so ResNet-50, which learns
# slowly from scratch, gets more epochs. The 0.8 centre crop drops most of MNIST's empty border; the last epoch
# trains on un-augmented digits, as they are served. Measurements and variants tried: docs/benchmarks.md.
STARTER_RECIPE = {
    "resnet18": FinetuneConfig(base="scratch:resnet18", epochs=8, lr=0.2, batch_size=128, image_size=32, crop_pct=0.8,
                               clean_epochs=1, val_every_epoch=False),
    "resnet50": FinetuneConfig(base="scratch:resnet50", epochs=10, lr=3e-3, optimizer="adamw", weight_decay=0.05,
                               batch_size=128, image_size=24, crop_pct=0.8, clean_epochs=1,
                               val_every_epoch=False),
}


def build_starter(arch: str, *, on_event: Callable[[Event], None] | None = None, force: bool = False) -> Path:
    """Train (once) and store the starter digit classifier for ``arch``; returns its folder."""
    if arch not in STARTER_RECIPE:
        raise ResNetHubError(f"no starter model for {arch!r}: choose one of {', '.join(STARTER_RECIPE)}")
    folder = starter_folder(arch)
    if is_model_folder(folder) and not force:
        return folder
    result = finetune(mnist_sample(), STARTER_RECIPE[arch], on_event=on_event)
    result.model.info.training["name"] = starter_name(arch)
    return result.save(folder, overwrite=True)


@dataclass
class StarterBuild:
    """One offline starter model: queued, building (with progress) or ready, as measured here."""

    arch: str
    state: str = "queued"  # "queued", "building", "ready", "failed"
    step: int = 0
    total_steps: int = 0
    eta_s: float | None = None
    seconds: float | None = None  # how long its training took on this machine
    accuracy: float | None = None  # held-out accuracy
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    def describe(self) -> str:
        name = f"{DISPLAY[self.arch]} starter"
        if self.state == "ready":
            measured = f"trained on this machine in {self.seconds:.0f} s" if self.seconds is not None else "stored"
            accuracy = f", {self.accuracy:.1%} held-out accuracy" if self.accuracy is not None else ""
            return f"{name}: ready ({measured}{accuracy})"
        if self.state == "building":
            left = f", about {self.eta_s:.0f} s left (measured on this machine as it trains)" if self.eta_s else ""
            return f"{name}: training now, {self.fraction:.0%}{left}"
        if self.state == "failed":
            return f"{name}: could not be built ({self.error})"
        return f"{name}: waits its turn to train"


class StarterBuilds:
    """The offline starters, trained one after the other in one background thread.

    The app starts it at launch, so that the first click rarely waits; a request for a
    starter that is not ready yet waits for it and watches its progress.
    """

    def __init__(self, slot: TrainingSlot = TRAINING):
        self.slot = slot
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._first: str | None = None
        self._wanted: set[str] = set()
        self.builds = {arch: self._from_store(arch) for arch in STARTER_ARCHS}

    @staticmethod
    def _from_store(arch: str) -> StarterBuild:
        build = StarterBuild(arch)
        folder = starter_folder(arch)
        if is_model_folder(folder):
            record = model_record(folder)  # the model itself is checked when it loads; this only fills the banner
            build.seconds = (record.get("training") or {}).get("seconds")
            build.accuracy = (record.get("metrics") or {}).get("accuracy")
            build.state = "ready"
            build.done.set()
        return build

    @property
    def building(self) -> bool:
        return any(not b.done.is_set() for b in self.builds.values())

    def status_text(self) -> str:
        return " · ".join(b.describe() for b in self.builds.values())

    def start(self, first: str | None = None, *, only: bool = False) -> None:
        """Train every starter not yet stored (``only``: just ``first``), ``first`` first, in a background thread."""
        with self._lock:
            self._wanted |= {first} if only and first else set(self.builds)
            for arch, build in self.builds.items():
                if build.state == "ready" and not is_model_folder(starter_folder(arch)):
                    self.builds[arch] = StarterBuild(arch)  # deleted from the store since: train it again
                elif build.state == "failed":
                    self.builds[arch] = StarterBuild(arch)
            if first is not None:
                self._first = first
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="starter-builds", daemon=True)
                self._thread.start()

    def _next(self) -> StarterBuild | None:
        with self._lock:
            pending = sorted((b for b in self.builds.values() if not b.done.is_set() and b.arch in self._wanted),
                             key=lambda b: b.arch != self._first)
            if not pending:
                self._thread = None  # checked and cleared under the lock: a later start() begins a new thread
            return pending[0] if pending else None

    def _run(self) -> None:
        while (build := self._next()) is not None:
            build.state = "building"

            def on_event(event: Event, build: StarterBuild = build) -> None:
                build.step, build.total_steps, build.eta_s = event.step, event.total_steps, event.eta_s

            try:
                # The app's one training slot: a lab run started meanwhile waits its turn, and says so.
                with self.slot.turn(f"the {DISPLAY[build.arch]} starter's build"):
                    lower_this_threads_priority()
                    build_starter(build.arch, on_event=on_event)
                stored = self._from_store(build.arch)
                build.seconds, build.accuracy, build.state = stored.seconds, stored.accuracy, "ready"
            except Exception as e:  # noqa: BLE001 - a failed build is shown and retried on the next request
                logger.exception("building the %s starter failed", build.arch)
                build.state, build.error = "failed", f"{type(e).__name__}: {e}"
            finally:
                build.done.set()

    def wait(self, arch: str, on_progress: Callable[[StarterBuild], None] | None = None, poll_s: float = 0.5,
             *, only: bool = False) -> None:
        """Return once ``arch``'s starter is stored, training it first if no one has.

        ``only``: train just this one (the CLI, which exits when it has its answer).
        """
        build = self.builds[arch]
        if build.state != "ready" or not is_model_folder(starter_folder(arch)):
            self.start(first=arch, only=only)
            build = self.builds[arch]
        while not build.done.wait(poll_s):
            if on_progress is not None:
                on_progress(build)
        if build.state == "failed":
            raise ServiceError(f"the {DISPLAY[arch]} starter model could not be built: {build.error}")

