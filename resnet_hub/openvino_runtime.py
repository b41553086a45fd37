"""OpenVINO in this process: one ``Core``, and a signal stack that OpenVINO cannot leave dangling.

OpenVINO's CPU plugin (2026.4) gives the thread that creates it a larger alternate signal stack
(room for AMX state) and unmaps that stack when the plugin is destroyed, restoring the previous
one only if the destroying thread still uses it. A plugin lives as long as its ``Core``, so two
Cores destroyed out of order, or one destroyed on another thread, leave a thread pointing at an
unmapped stack. The next signal with a Python handler on that thread (``SIGCHLD`` from a
DataLoader worker, pytest-timeout's ``SIGALRM``, Ctrl-C) then kills the process with SIGSEGV
before faulthandler can print anything: CPython installs every handler with ``SA_ONSTACK``.

So the package makes one :func:`core` for the process, loads its CPU plugin at once and never
destroys it (compiling on it then creates no plugin), and every call that makes Cores of its own
(NNCF's quantization) runs under :func:`keep_signal_stack`, which gives the thread back the stack
it had, one at a time (:func:`quantizing`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
import threading
from typing import Any, Iterator

from .quiet import quiet_warnings

SS_ONSTACK = 1

_CORE: Any = None
_CORE_LOCK = threading.Lock()
_QUANTIZING = threading.Lock()


class _StackT(ctypes.Structure):  # Linux's stack_t
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@functools.cache
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def signal_stack() -> tuple[int | None, int, int]:
    """This thread's alternate signal stack: (address, size, flags); (None, 0, flags) off Linux."""
    libc = _libc()
    stack = _StackT()
    if libc is None or libc.sigaltstack(None, ctypes.byref(stack)) != 0:
        return None, 0, 0
    return stack.ss_sp, stack.ss_size, stack.ss_flags


@contextlib.contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Run OpenVINO code that may create a CPU plugin (a Core of its own); afterwards this thread has its old
    signal stack."""
    libc = _libc()
    saved = _StackT()
    if libc is None or libc.sigaltstack(None, ctypes.byref(saved)) != 0:
        yield
        return
    try:
        yield
    finally:
        now = _StackT()
        libc.sigaltstack(None, ctypes.byref(now))
        if (now.ss_sp, now.ss_size) != (saved.ss_sp, saved.ss_size):
            saved.ss_flags &= ~SS_ONSTACK  # a flag the kernel reports, never one it accepts
            libc.sigaltstack(ctypes.byref(saved), None)


def core() -> Any:
    """The process's one ``openvino.Core``, its CPU plugin loaded; never destroyed (see the module's note)."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            import openvino as ov

            with keep_signal_stack():
                created = ov.Core()
                created.get_property("CPU", "FULL_DEVICE_NAME")  # loads the plugin here, under the guard
            _CORE = created
        return _CORE


@contextlib.contextmanager
def quantizing() -> Iterator[None]:
    """Run NNCF's quantization in the block: one at a time in the process (each makes Cores of its own, and two
    plugins made and destroyed on two threads at once would leave a thread on an unmapped signal stack), on this
    thread's own signal stack afterwards, with NNCF's log and warnings quiet and its progress bars drawn into a sink.

    NNCF draws them on rich's global console, which writes to sys.stdout (there they would corrupt the CLI's --json
    output). Only that console is pointed elsewhere: redirecting sys.stdout itself from one thread swallowed what
    every other thread printed meanwhile (the app quantizes in the background while requests run), and two such
    redirects ending out of order left sys.stdout on a dead buffer.
    """
    import io
    import logging

    import nncf
    from rich import get_console

    with _QUANTIZING:
        nncf.set_log_level(logging.ERROR)
        console = get_console()
        own_file = vars(console).get("_file")  # None: the console follows sys.stdout, as it must again after
        console.file = io.StringIO()
        try:
            with quiet_warnings(), keep_signal_stack():
                yield
        finally:
            console.file = own_file
