"""The one source of "now" (as fail2ban's `MyTime`): injected, so tests set the time instead of
monkeypatching `datetime`.

Everything that needs the current instant takes a `Clock` (default `SYSTEM`); a test passes a
`FixedClock` and moves it. Instants are always aware UTC datetimes: local time is only a way of
*showing* one (`blocker.orders.legaltime.fmt_instant`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, aware, in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for durations and timeouts)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FixedClock:
    """A clock that stands still until moved: `clock.advance(seconds=5)`, `clock.set(instant)`."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._at = at.astimezone(UTC)
        self._mono = 0.0

    def now(self) -> datetime:
        return self._at

    def monotonic(self) -> float:
        return self._mono

    def set(self, at: datetime) -> None:
        delta = (at - self._at).total_seconds()
        self._at = at.astimezone(UTC)
        self._mono += max(delta, 0.0)

    def advance(self, **kwargs: float) -> None:
        self.set(self._at + timedelta(**kwargs))


SYSTEM: Clock = SystemClock()
