"""The lab's live runs ("Why residual?", short versions) as owned jobs on the one training slot, like fine-tunes:
one trains at a time, a run waits its turn in line, and only the visitor who started a run may stop it."""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field

from ..lab import LIVE_SETTINGS, Result, Settings, run_experiment
from ..owners import Visitor
from ..training_slot import TRAINING, TrainingSlot, lower_this_threads_priority
from .jobs import LOCAL, OwnedJob

logger = logging.getLogger(__name__)


@dataclass
class LabRun(OwnedJob):
    """One live run of one experiment; its events are the lab's ``LabEvent``s, then None when it ends."""

    experiment: str = field(kw_only=True)
    result: Result | None = None
    waited: bool = False  # stopped before its turn came: nothing ran


class LabRuns:
    """Live lab runs: started, streamed and stopped per visitor; nothing they compute is cached."""

    def __init__(self, slot: TrainingSlot = TRAINING, live_settings: dict[str, Settings] | None = None):
        self.slot = slot
        self.live_settings = live_settings  # the short versions' settings (None: resnet_hub.lab.LIVE_SETTINGS)
        self._lock = threading.Lock()
        self._runs: dict[str, LabRun] = {}  # waiting or running

    def start(self, experiment: str, settings: Settings | None = None, visitor: Visitor = LOCAL) -> LabRun:
        """Queue the short version of ``experiment`` (``settings`` None: :attr:`live_settings`'s) for the slot."""
        run = LabRun(uuid.uuid4().hex, visitor=visitor, experiment=experiment)
        settings = settings or (self.live_settings or LIVE_SETTINGS)[experiment]
        with self._lock:
            run.ticket = self.slot.enter(f"the lab's {experiment} run")
            self._runs[run.id] = run
        threading.Thread(target=self._run, args=(run, settings), name=f"lab-{run.id[:8]}", daemon=True).start()
        return run

    def _run(self, run: LabRun, settings: Settings) -> None:
        try:
            if not self.slot.wait_turn(run.ticket, stop=run.stop):
                run.waited = True
                return
            lower_this_threads_priority()  # requests first, as for a fine-tune
            run.result = run_experiment(run.experiment, settings, on_event=run.events.put, stop=run.stop, cache=False)
        except Exception as e:  # noqa: BLE001 - the visitor hears of any failure; the app keeps serving
            logger.exception("lab run %s failed", run.id)
            run.error = f"{type(e).__name__}: {e}"
        finally:
            self.slot.leave(run.ticket)
            with self._lock:
                self._runs.pop(run.id, None)
            run.done.set()
            run.events.put(None)

    def position(self, run: LabRun) -> int:
        """0: running now (or finished); n: n trainings ahead of it in line."""
        return max(0, self.slot.position(run.ticket)) if run.ticket is not None else 0

    def stop(self, visitor: Visitor | None = None, run_id: str | None = None) -> bool:
        """Stop ``visitor``'s unfinished runs (only ``run_id``, when given); False when they have none."""
        with self._lock:
            runs = [r for r in self._runs.values() if (run_id is None or r.id == run_id) and r.controlled_by(visitor)]
        for run in runs:
            run.stop.set()
        return bool(runs)

    def running(self, visitor: Visitor) -> LabRun | None:
        """``visitor``'s own unfinished run, if any."""
        with self._lock:
            return next((r for r in self._runs.values() if r.controlled_by(visitor)), None)

    def close(self) -> None:
        """Stop every run (the app is closing)."""
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.stop.set()
