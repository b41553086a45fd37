"""Warnings silenced one block at a time: a block on one thread never loses or leaks another's filter."""

from __future__ import annotations

import threading
import warnings

from resnet_hub.quiet import quiet_warnings


def test_the_block_ignores_only_the_categories_it_names():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_warnings(DeprecationWarning):
            warnings.warn("old", DeprecationWarning)
            warnings.warn("odd", UserWarning)
    assert [str(w.message) for w in seen] == ["odd"]


def test_a_block_on_another_thread_waits_and_both_leave_the_filters_as_they_were():
    before = list(warnings.filters)
    inside, release, order = threading.Event(), threading.Event(), []

    def first():
        with quiet_warnings(UserWarning):
            order.append("first in")
            inside.set()
            release.wait(10)
            order.append("first out")

    def second():
        inside.wait(10)
        with quiet_warnings(DeprecationWarning):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    inside.wait(10)
    threads[1].join(0.3)  # the second block waits for the first: it must not start meanwhile
    assert order == ["first in"]
    release.set()
    for t in threads:
        t.join(10)
    assert order == ["first in", "first out", "second in"]
    assert warnings.filters == before
