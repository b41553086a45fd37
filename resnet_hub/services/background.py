"""Background work of the services (conversions, preparations) that the interpreter's exit waits for.

The frozen parts converted in the background (OpenVINO, NNCF: threads of their own in C++) must not be cut off
by the interpreter's exit, nor outlive it in a thread that converted: the process then aborts ("terminate called
without an active exception", exit 134; seen on Ctrl-C while the app prepared its bases). Exit waits for the
conversion under way, converts nothing more, and lets each thread that prepares end.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

EXITING = threading.Event()
_CONVERTING = threading.Lock()
_PREPARERS: set[threading.Thread] = set()


@contextmanager
def background_conversion() -> Iterator[bool]:
    """Held while a background thread converts; yields False once the interpreter is exiting: convert nothing."""
    with _CONVERTING:
        yield not EXITING.is_set()


def start_preparer(target: Callable[[], None], name: str) -> threading.Thread:
    """Run ``target`` in a daemon thread that the interpreter's exit waits for (briefly)."""

    def run() -> None:
        try:
            target()
        finally:
            _PREPARERS.discard(threading.current_thread())

    thread = threading.Thread(target=run, name=name, daemon=True)
    _PREPARERS.add(thread)
    thread.start()
    return thread


@atexit.register  # a hook, not work: at exit it waits only for preparers that were started
def _let_the_preparers_finish(timeout_s: float = 120, join_s: float = 2) -> None:
    EXITING.set()
    if _CONVERTING.acquire(timeout=timeout_s):
        _CONVERTING.release()
    for thread in list(_PREPARERS):  # one that only waits (for a starter, for the slot) is left after join_s
        thread.join(join_s)
