"""One CPU budget: a single training slot, taken in turn by fine-tunes and the lab's live runs.

On a Space every visitor shares two cores. Two trainings at once would each run at
half speed and starve inference; so one trains and the others wait in line, each
seeing its place, and start by themselves when their turn comes. The one training
runs at a lower CPU priority (``TRAINING_NICE``) so that classify and compare
requests, which take milliseconds, are served first.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

# Linux niceness of a training thread (0 normal, 19 lowest): the kernel then prefers the request threads.
# Threads a thread creates inherit it, so torch's intra-op workers started by the training thread do too.
TRAINING_NICE = 10


@dataclass
class Ticket:
    """One training's place in line."""

    what: str
    number: int
    left: threading.Event = field(default_factory=threading.Event, repr=False)


class TrainingSlot:
    """First come, first served; one holder at a time.

    >>> slot = TrainingSlot()
    >>> first, second = slot.enter("run A"), slot.enter("run B")
    >>> slot.position(first), slot.position(second)
    (0, 1)
    >>> slot.leave(first); slot.position(second)
    0
    """

    def __init__(self):
        self._changed = threading.Condition()
        self._line: list[Ticket] = []
        self._numbers = itertools.count()

    def enter(self, what: str) -> Ticket:
        """Join the line (at its end); position 0 holds the slot."""
        with self._changed:
            ticket = Ticket(what, next(self._numbers))
            self._line.append(ticket)
            return ticket

    def position(self, ticket: Ticket) -> int:
        """0: this ticket trains now; n: n trainings are ahead of it; -1: it left the line."""
        with self._changed:
            return self._line.index(ticket) if ticket in self._line else -1

    def ahead(self, ticket: Ticket) -> list[str]:
        """What the trainings ahead of ``ticket`` are, first the one training now."""
        with self._changed:
            return [t.what for t in self._line[: self._line.index(ticket)]] if ticket in self._line else []

    def wait_turn(self, ticket: Ticket, *, stop: threading.Event | None = None,
                  on_wait: Callable[[int], None] | None = None, poll_s: float = 0.5) -> bool:
        """Block until ``ticket`` holds the slot (True), or ``stop`` is set first (False: it left the line)."""
        with self._changed:
            while True:
                if ticket not in self._line:
                    return False
                place = self._line.index(ticket)
                if place == 0:
                    return True
                if stop is not None and stop.is_set():
                    self._remove(ticket)
                    return False
                if on_wait is not None:
                    on_wait(place)
                self._changed.wait(poll_s)

    def leave(self, ticket: Ticket) -> None:
        """Give the slot back (or leave the line); the next in line starts."""
        with self._changed:
            self._remove(ticket)

    def _remove(self, ticket: Ticket) -> None:
        if ticket in self._line:
            self._line.remove(ticket)
        ticket.left.set()
        self._changed.notify_all()

    @property
    def waiting(self) -> int:
        """How many trainings wait behind the one that holds the slot."""
        with self._changed:
            return max(0, len(self._line) - 1)

    @property
    def busy(self) -> bool:
        """Whether a training holds the slot (or waits for it)."""
        with self._changed:
            return bool(self._line)

    def wait_until_free(self, timeout: float | None = None) -> bool:
        """Block until nothing holds the slot or waits for it (True), or ``timeout`` seconds pass (False): for work
        that should not keep a visitor waiting in line."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._line, timeout)

    @contextmanager
    def turn(self, what: str, *, stop: threading.Event | None = None,
             on_wait: Callable[[int], None] | None = None) -> Iterator[bool]:
        """Hold the slot for the block; yields False (and the block should do nothing) when stopped in line."""
        ticket = self.enter(what)
        try:
            yield self.wait_turn(ticket, stop=stop, on_wait=on_wait)
        finally:
            self.leave(ticket)


def lower_this_threads_priority(nice: int = TRAINING_NICE) -> None:
    """Make the calling thread (and the threads it starts) yield the CPU to request threads."""
    if not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), nice))
    except OSError as e:  # a container may forbid it; training still runs, only not deprioritised
        logger.debug("could not lower the training thread's priority: %s", e)


TRAINING = TrainingSlot()  # the app's one slot: fine-tunes and the lab's live runs take turns on it
