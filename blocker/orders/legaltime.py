"""Legal time: when an order starts and when it lifts, by the Code de procédure civile.

Pure functions only. Every result that reaches a user carries the rule that produced it, so
the legal team can check the arithmetic by hand:

- art. 641 al. 2: a period in months or years expires on the day of the last month that bears
  the same number as the start day, or on that month's last day when it has no such day;
- a period in days expires N days after the start day (the start day does not count);
- the order is in force through that day until 24:00 local time, so the lift instant is
  00:00 local time the next day, in the order's time zone;
- art. 642 al. 2 (optional): an end that falls on a Saturday, Sunday or public holiday moves
  to the next working day.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from blocker.errors import BlockerError

_DURATION = re.compile(r"\s*([1-9][0-9]{0,4})\s+(day|month|year)s?\s*\Z")
_UNIT_FR = {"day": "days", "month": "months", "year": "years"}


class LegalTimeError(BlockerError, ValueError):
    """A date or period that cannot be turned into an instant without guessing."""


@dataclass(frozen=True)
class Duration:
    count: int
    unit: str  # "day" | "month" | "year"

    def __str__(self) -> str:
        return f"{self.count} {self.unit if self.count == 1 else _UNIT_FR[self.unit]}"


def parse_duration(text: object) -> Duration:
    """`18 months`, `1 year`, `30 days` (singular or plural)."""
    if not isinstance(text, str):
        raise LegalTimeError("expected text such as '18 months', '1 year' or '30 days'")
    match = _DURATION.match(text.lower())
    if not match:
        raise LegalTimeError(f"{text!r} is not a duration such as '18 months', '1 year' or '30 days'")
    return Duration(int(match.group(1)), match.group(2))


def add_months(start: date, months: int) -> date:
    """Same day-of-month `months` later, or the last day of that month (CPC art. 641 al. 2)."""
    total = start.year * 12 + (start.month - 1) + months
    year, month = divmod(total, 12)
    if not 1 <= year <= 9999:
        raise LegalTimeError("date out of range")
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(start.day, last))


def last_day(start: date, duration: Duration) -> date:
    """Day D on which the period expires (the order is in force through D)."""
    try:
        if duration.unit == "day":
            return start + timedelta(days=duration.count)
    except OverflowError:
        raise LegalTimeError("date out of range") from None
    months = duration.count * (12 if duration.unit == "year" else 1)
    return add_months(start, months)


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file name
        raise LegalTimeError(f"unknown time zone {name[:80]!r} (expected an IANA name such as Europe/Paris)") from None


def localize(naive: datetime, tz: ZoneInfo) -> datetime:
    """Attach `tz` to a wall-clock time, refusing one that a DST change makes ambiguous or absent."""
    first = naive.replace(tzinfo=tz, fold=0)
    second = naive.replace(tzinfo=tz, fold=1)
    if first.utcoffset() != second.utcoffset():
        # fold only matters in a gap or an overlap: tell which by a round trip through UTC.
        back = first.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
        if back != naive:
            raise LegalTimeError(f"{naive.isoformat()} does not exist in {tz.key} (clocks move forward)")
        raise LegalTimeError(f"{naive.isoformat()} is ambiguous in {tz.key} (clocks move back): give a UTC offset")
    return first


def start_of_day(day: date, tz: ZoneInfo) -> datetime:
    """00:00 local time on `day`; where midnight itself is skipped by DST, the first instant that exists."""
    naive = datetime.combine(day, time())
    try:
        return localize(naive, tz)
    except LegalTimeError:
        # A few zones skip or repeat midnight: take the earliest instant of the local day.
        candidates = [naive.replace(tzinfo=tz, fold=f).astimezone(UTC) for f in (0, 1)]
        earliest = min(candidates).astimezone(tz)
        return earliest if earliest.date() == day else max(candidates).astimezone(tz)


def lift_instant(last: date, tz: ZoneInfo) -> datetime:
    """The order is in force through `last` until 24:00: it lifts at 00:00 on the next day."""
    try:
        return start_of_day(last + timedelta(days=1), tz)
    except OverflowError:
        raise LegalTimeError("date out of range") from None


def is_working_day(day: date, country: str = "FR") -> bool:
    return day.weekday() < 5 and day not in _holidays(country, day.year)


@lru_cache(maxsize=256)
def _holidays(country: str, year: int) -> frozenset[date]:
    import holidays  # imported lazily: only needed with legal.extend_to_working_day

    try:
        return frozenset(holidays.country_holidays(country, years=year).keys())
    except NotImplementedError:
        raise LegalTimeError(f"no public holidays known for country {country!r} (legal.holidays_country)") from None


def next_working_day(day: date, country: str = "FR") -> date:
    while not is_working_day(day, country):
        day += timedelta(days=1)
    return day


@dataclass(frozen=True)
class Window:
    """When an order is in force, and the rule that says so (shown next to every date)."""

    start: datetime
    scheduled_end: datetime
    rule: str


def parse_date(text: object) -> date:
    if isinstance(text, date) and not isinstance(text, datetime):
        return text
    if not isinstance(text, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
        raise LegalTimeError(f"{text!r} is not a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise LegalTimeError(f"{text!r} is not a date that exists") from None


def parse_instant(text: object, tz: ZoneInfo) -> tuple[datetime, bool]:
    """A date (00:00 local that day) or a datetime; returns (aware instant, was_date_only)."""
    if isinstance(text, datetime):
        raise LegalTimeError("internal: datetimes arrive as text")
    if not isinstance(text, str):
        raise LegalTimeError(f"{text!r} is not a date or a date and time")
    instant, date_only = _parse_instant(text, tz)
    try:  # every instant must be representable in UTC and in the zone (years 1 and 9999)
        instant.astimezone(UTC)
        instant.astimezone(tz)
    except OverflowError:
        raise LegalTimeError(f"{text!r} is out of range") from None
    return instant, date_only


def _parse_instant(text: str, tz: ZoneInfo) -> tuple[datetime, bool]:
    raw = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        return start_of_day(parse_date(raw), tz), True
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*([Zz]|[+-]\d{2}:?\d{2})?", raw):
        raise LegalTimeError(f"{text!r} is not a date (YYYY-MM-DD) or date and time (YYYY-MM-DDTHH:MM[:SS][+HH:MM])")
    # The pattern accepts `t` and `z` as ISO 8601 does; fromisoformat only takes upper case.
    raw = raw[:10] + "T" + raw[11:].upper()
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise LegalTimeError(f"{text!r} is not a date and time that exists") from None
    if parsed.tzinfo is None:
        return localize(parsed, tz), False
    return parsed, False


def fmt_instant(instant: datetime, tz: ZoneInfo | None = None) -> str:
    """ISO 8601 with the UTC offset, in `tz` when given (the order's zone), to the second."""
    shown = instant.astimezone(tz) if tz is not None else instant
    return shown.isoformat(timespec="seconds")


def compute_window(
    start_text: object,
    tz: ZoneInfo,
    *,
    duration_text: object = None,
    end_text: object = None,
    extend_to_working_day: bool = False,
    holidays_country: str = "FR",
) -> Window:
    """Start and scheduled lift instant of an order, with the rule in words."""
    try:
        return _compute_window(start_text, tz, duration_text, end_text, extend_to_working_day, holidays_country)
    except OverflowError:
        raise LegalTimeError("date out of range") from None


def _compute_window(
    start_text: object,
    tz: ZoneInfo,
    duration_text: object,
    end_text: object,
    extend_to_working_day: bool,
    holidays_country: str,
) -> Window:
    start, _ = parse_instant(start_text, tz)
    if duration_text is not None:
        duration = parse_duration(duration_text)
        start_day = start.astimezone(tz).date()
        day_d = last_day(start_day, duration)
        rule = f"cpc-641: {duration}"
        if duration.unit == "day":
            rule = f"cpc-641: {duration} (start day not counted)"
        if extend_to_working_day:
            moved = next_working_day(day_d, holidays_country)
            if moved != day_d:
                rule += f"; cpc-642: {day_d.isoformat()} is not a working day, moved to {moved.isoformat()}"
                day_d = moved
        end = lift_instant(day_d, tz)
        rule += f"; in force through {day_d.isoformat()} 24:00 {tz.key}"
    else:
        end_raw, end_is_date = parse_instant(end_text, tz)
        if end_is_date:
            day_d = parse_date(end_text)
            end = lift_instant(day_d, tz)
            rule = f"end-date: last day {day_d.isoformat()} inclusive, lifts at 00:00 {tz.key} the next day"
        else:
            end = end_raw
            rule = "end-instant: exact lift instant given by the order"
    if end <= start:
        raise LegalTimeError(f"the order ends ({fmt_instant(end, tz)}) before it starts ({fmt_instant(start, tz)})")
    return Window(start=start, scheduled_end=end, rule=rule)
