"""Silencing a library's warnings without racing the other threads.

Before Python 3.14, ``warnings.catch_warnings`` saves and restores the one filter list of the process. Two blocks
on two threads that end out of order leave a filter of one of them installed for good: an "ignore" that silences
every later warning of the process, or the other's filter lost while its block still runs. The app converts and
quantizes models on background threads while requests run, so every block that silences warnings takes one lock
here. They wrap slow, rare work (a conversion, a quantization, an export), never a request's path: decoding an
image changes no filter at all.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator

_FILTERS = threading.RLock()  # re-entrant: a quiet block may run inside another on the same thread


@contextlib.contextmanager
def quiet_warnings(*categories: type[Warning]) -> Iterator[None]:
    """Ignore warnings of ``categories`` (all when none is named) in the block, one such block at a time.

    >>> with quiet_warnings(DeprecationWarning):
    ...     warnings.warn("old", DeprecationWarning)
    """
    with _FILTERS, warnings.catch_warnings():
        for category in categories or (Warning,):
            warnings.simplefilter("ignore", category)
        yield
