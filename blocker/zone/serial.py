"""Zone serials under RFC 1982 serial arithmetic: the one place that knows they wrap."""

from __future__ import annotations

SERIAL_MOD = 2**32


def serial_gt(a: int, b: int) -> bool:
    """RFC 1982 serial arithmetic: is `a` after `b`?"""
    diff = (a - b) % SERIAL_MOD
    return 0 < diff < 2**31


def next_serial(previous: int | None, scheme: int) -> int:
    """max(previous + 1, scheme) under RFC 1982, so a restart or a clock set back never goes back."""
    scheme %= SERIAL_MOD
    if previous is None:
        return scheme or 1
    bumped = (previous + 1) % SERIAL_MOD
    # Both comparisons: a scheme exactly 2^31 away from `previous` is undefined under RFC 1982.
    return scheme if serial_gt(scheme, bumped) and serial_gt(scheme, previous) else bumped

