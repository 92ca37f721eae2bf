"""The one switch of the cyclic collector: holders nest, across threads, and restore what was."""

from __future__ import annotations

import gc
import threading

from blocker.gcpause import no_cyclic_gc


def test_the_collector_comes_back_only_when_the_last_holder_leaves():
    assert gc.isenabled()
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with no_cyclic_gc():
            inside.set()
            leave.wait(5)

    other = threading.Thread(target=hold)
    other.start()
    inside.wait(5)
    with no_cyclic_gc():
        assert not gc.isenabled()
    assert not gc.isenabled()  # the other thread still holds it
    leave.set()
    other.join(5)
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off():
    gc.disable()
    try:
        with no_cyclic_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
