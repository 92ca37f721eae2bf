"""The process-wide switch of the cyclic garbage collector, in one place.

Planning, publishing and probe passes each make millions of small objects and no reference
cycle: each collection their allocations trigger would walk every object alive (a first plan of
1M names spent two thirds of its diff in the collector; a probe pass of 100,000 checks a quarter
of its CPU). Memory is still freed by reference counting. The switch is process-wide, so every
user must count through the same holder: with one counter per caller, a probe pass ending
inside a plan would turn the collector back on under it.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_HOLDERS = 0  # threads inside no_cyclic_gc(); the collector runs again when the last leaves
_WAS_ENABLED = False


@contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """No cyclic collection inside (also as a decorator). Threads nest: the collector comes back
    when the last holder leaves, and only if it was on when the first came in."""
    global _HOLDERS, _WAS_ENABLED
    with _LOCK:
        if _HOLDERS == 0:
            _WAS_ENABLED = gc.isenabled()
            gc.disable()
        _HOLDERS += 1
    try:
        yield
    finally:
        with _LOCK:
            _HOLDERS -= 1
            if _HOLDERS == 0 and _WAS_ENABLED:
                gc.enable()
