"""Legal time (CPC art. 641-642): the arithmetic that decides when a block starts and lifts.

Worked examples of the issue first, then unit cases, then properties checked against
independent oracles (calendar arithmetic, the EU and Australian DST rules).
"""

from __future__ import annotations

import calendar
import pickle
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocker.orders.legaltime import (
    Duration,
    LegalTimeError,
    add_months,
    compute_window,
    fmt_instant,
    is_working_day,
    last_day,
    lift_instant,
    localize,
    next_working_day,
    parse_date,
    parse_duration,
    parse_instant,
    start_of_day,
    zone,
)
from tests.support.properties import examples

PARIS = zone("Europe/Paris")
NEW_YORK = zone("America/New_York")
SYDNEY = zone("Australia/Sydney")
SANTIAGO = zone("America/Santiago")  # southern hemisphere, DST changes at local midnight
HAVANA = zone("America/Havana")  # clocks fall back from 01:00 to 00:00: midnight happens twice

MICRO = timedelta(microseconds=1)


def window(start: str, tz=PARIS, **kw):
    return compute_window(start, tz, **kw)


def elapsed(w) -> timedelta:
    # In UTC: Python subtracts two datetimes of the same zone by wall clock, ignoring DST.
    return w.scheduled_end.astimezone(UTC) - w.start.astimezone(UTC)


# --- the worked examples of the issue, exactly -------------------------------------------------


def test_worked_example_18_months_from_20_november():
    w = window("2026-11-20", duration_text="18 months")
    assert fmt_instant(w.start, PARIS) == "2026-11-20T00:00:00+01:00"
    assert fmt_instant(w.scheduled_end, PARIS) == "2028-05-21T00:00:00+02:00"
    assert w.rule.startswith("cpc-641: 18 months")
    assert "2028-05-20 24:00" in w.rule


def test_worked_example_31_august_plus_18_months_clamps_to_end_of_february():
    assert last_day(date(2024, 8, 31), Duration(18, "month")) == date(2026, 2, 28)
    w = window("2024-08-31", duration_text="18 months")
    assert fmt_instant(w.scheduled_end, PARIS) == "2026-03-01T00:00:00+01:00"
    assert "2026-02-28" in w.rule


def test_worked_example_explicit_end_date_is_inclusive():
    w = window("2026-11-20", end_text="2027-06-30")
    assert fmt_instant(w.scheduled_end, PARIS) == "2027-07-01T00:00:00+02:00"
    assert w.rule.startswith("end-date")
    assert "2027-06-30" in w.rule


def test_worked_examples_as_exact_utc_instants():
    # The same instants in UTC, so a wrong offset cannot hide behind a right-looking string.
    assert window("2026-11-20", duration_text="18 months").scheduled_end == datetime(2028, 5, 20, 22, tzinfo=UTC)
    assert window("2024-08-31", duration_text="18 months").scheduled_end == datetime(2026, 2, 28, 23, tzinfo=UTC)
    assert window("2026-11-20", end_text="2027-06-30").scheduled_end == datetime(2027, 6, 30, 22, tzinfo=UTC)


# --- durations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("18 months", Duration(18, "month")),
        ("1 month", Duration(1, "month")),
        ("1 months", Duration(1, "month")),
        ("2 month", Duration(2, "month")),
        ("1 year", Duration(1, "year")),
        ("3 years", Duration(3, "year")),
        ("30 days", Duration(30, "day")),
        ("1 day", Duration(1, "day")),
        ("18 Months", Duration(18, "month")),
        (" 18  months ", Duration(18, "month")),
    ],
)
def test_parse_duration_accepts_singular_and_plural(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["0 days", "18", "18 mois", "1 week", "-1 day", "18months", "1.5 months", "100000 days", "months", "", None, 18,
     "18 months and 2 days"],
)
def test_parse_duration_refuses_everything_else(text):
    with pytest.raises(LegalTimeError):
        parse_duration(text)


def test_duration_is_shown_with_singular_or_plural():
    assert str(Duration(1, "month")) == "1 month"
    assert str(Duration(18, "month")) == "18 months"
    assert str(Duration(1, "year")) == "1 year"
    assert str(Duration(30, "day")) == "30 days"


@pytest.mark.parametrize(
    ("start", "duration", "day_d"),
    [
        (date(2026, 1, 31), "30 days", date(2026, 3, 2)),
        (date(2026, 12, 31), "1 day", date(2027, 1, 1)),
        (date(2024, 2, 28), "1 day", date(2024, 2, 29)),
        (date(2026, 3, 1), "365 days", date(2027, 3, 1)),
        (date(2024, 3, 1), "365 days", date(2025, 3, 1)),
        (date(2024, 1, 1), "366 days", date(2025, 1, 1)),
    ],
)
def test_days_do_not_count_the_start_day(start, duration, day_d):
    assert last_day(start, parse_duration(duration)) == day_d


def test_days_window_lifts_at_midnight_after_day_d_across_a_dst_change():
    # 10 days from 2026-03-20: D = 2026-03-30, lift 2026-03-31 00:00 CEST; one hour is skipped on 03-29.
    w = window("2026-03-20", duration_text="10 days")
    assert fmt_instant(w.scheduled_end, PARIS) == "2026-03-31T00:00:00+02:00"
    assert elapsed(w) == timedelta(days=11) - timedelta(hours=1)
    assert w.rule.startswith("cpc-641: 10 days")
    assert "start day not counted" in w.rule


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),  # leap year
        (date(2026, 3, 31), 1, date(2026, 4, 30)),
        (date(2026, 1, 30), 1, date(2026, 2, 28)),
        (date(2026, 1, 28), 1, date(2026, 2, 28)),
        (date(2026, 2, 28), 1, date(2026, 3, 28)),  # not "end of month stays end of month"
        (date(2024, 2, 29), 12, date(2025, 2, 28)),
        (date(2024, 2, 29), 48, date(2028, 2, 29)),
        (date(2026, 12, 15), 1, date(2027, 1, 15)),
        (date(2026, 11, 20), 18, date(2028, 5, 20)),
        (date(2026, 5, 31), 0, date(2026, 5, 31)),
        (date(2026, 8, 31), -6, date(2026, 2, 28)),
    ],
)
def test_add_months_clamps_to_the_last_day_of_the_month(start, months, expected):
    assert add_months(start, months) == expected


@pytest.mark.parametrize(
    ("start", "years", "expected"),
    [
        (date(2024, 2, 29), 1, date(2025, 2, 28)),
        (date(2024, 2, 29), 3, date(2027, 2, 28)),
        (date(2024, 2, 29), 4, date(2028, 2, 29)),
        (date(2096, 2, 29), 4, date(2100, 2, 28)),  # 2100 is not a leap year
        (date(2026, 7, 14), 2, date(2028, 7, 14)),
    ],
)
def test_years_from_29_february(start, years, expected):
    assert last_day(start, Duration(years, "year")) == expected


def test_dates_out_of_range_are_errors_not_crashes():
    with pytest.raises(LegalTimeError):
        add_months(date(9999, 12, 1), 1)
    with pytest.raises(LegalTimeError):
        last_day(date(9999, 12, 31), Duration(1, "day"))
    with pytest.raises(LegalTimeError):
        window("9999-06-01", duration_text="99999 years")
    with pytest.raises(LegalTimeError):
        window("9999-12-31", end_text="9999-12-31")  # the lift instant would be in year 10000
    with pytest.raises(LegalTimeError):
        window("9999-12-30", duration_text="1 day")
    with pytest.raises(LegalTimeError):
        window("9999-12-31T23:00-05:00", end_text="9999-12-31T23:30-05:00")  # year 10000 in Paris
    with pytest.raises(LegalTimeError):
        parse_instant("0001-01-01T00:00+05:00", PARIS)  # year 0 in UTC


@settings(max_examples=examples(200))
@given(st.dates(), st.sampled_from(["1 day", "30 days", "1 month", "18 months", "5 years", "99999 days"]),
       st.sampled_from([PARIS, SYDNEY, SANTIAGO]))
def test_any_start_date_gives_a_window_or_a_legal_time_error(start, duration, tz):
    try:
        w = compute_window(start.isoformat(), tz, duration_text=duration)
    except LegalTimeError:
        return
    assert w.start.astimezone(UTC) < w.scheduled_end.astimezone(UTC)
    fmt_instant(w.start, tz), fmt_instant(w.scheduled_end, tz)  # representable for every output


offsets = st.one_of(
    st.just(""), st.just("Z"),
    st.builds(lambda sign, h, m: f"{sign}{h:02d}:{m:02d}", st.sampled_from("+-"), st.integers(0, 23),
              st.integers(0, 59)),
)


@settings(max_examples=examples(200))
@given(st.datetimes(), offsets)
def test_any_well_formed_instant_parses_or_is_a_legal_time_error(naive, offset):
    text = naive.isoformat(timespec="seconds") + offset
    try:
        instant, date_only = parse_instant(text, PARIS)
    except LegalTimeError:
        return
    assert date_only is False
    assert instant.replace(tzinfo=None) == naive.replace(microsecond=0)
    fmt_instant(instant, PARIS)


# --- month arithmetic: properties against the calendar ---------------------------------------------

dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2400, 12, 31))
month_counts = st.integers(min_value=0, max_value=1200)


@given(dates, month_counts)
def test_add_months_lands_in_the_right_month(start, months):
    result = add_months(start, months)
    index = start.year * 12 + start.month - 1 + months
    assert (result.year, result.month) == (index // 12, index % 12 + 1)


@given(dates, month_counts)
def test_add_months_keeps_the_day_or_takes_the_last_one(start, months):
    result = add_months(start, months)
    assert result.day == min(start.day, calendar.monthrange(result.year, result.month)[1])


@given(dates, month_counts, month_counts)
def test_add_months_is_monotone(start, m1, m2):
    low, high = sorted((m1, m2))
    assert add_months(start, low) <= add_months(start, high)
    if low < high:
        assert add_months(start, low) < add_months(start, high)


@given(dates, st.integers(min_value=1, max_value=100))
def test_adding_years_is_adding_twelve_months(start, years):
    assert last_day(start, Duration(years, "year")) == add_months(start, 12 * years)
    assert last_day(start, Duration(years * 12, "month")) == add_months(start, 12 * years)


@given(dates, st.integers(min_value=1, max_value=20000))
def test_adding_days_is_calendar_arithmetic(start, days):
    assert (last_day(start, Duration(days, "day")) - start).days == days


@given(dates, st.integers(min_value=1, max_value=600))
def test_a_period_of_months_never_runs_past_the_same_day_number(start, months):
    # The period ends on day D: never later than the start day-of-month in the final month,
    # and the day after D is already in the next month whenever the final month was too short.
    day_d = add_months(start, months)
    if day_d.day < start.day:
        assert (day_d + timedelta(days=1)).day == 1


# --- time zones, midnight and DST ----------------------------------------------------------------


def _last_sunday(year: int, month: int) -> date:
    day = date(year, month, calendar.monthrange(year, month)[1])
    return day - timedelta(days=(day.weekday() - 6) % 7)


def _first_sunday(year: int, month: int) -> date:
    day = date(year, month, 1)
    return day + timedelta(days=(6 - day.weekday()) % 7)


def _paris_offset_at_midnight(day: date) -> timedelta:
    """EU rule (since 1996): summer time from the last Sunday of March 01:00 UTC to the last
    Sunday of October 01:00 UTC. Midnight on either Sunday is before the change."""
    summer = _last_sunday(day.year, 3) < day <= _last_sunday(day.year, 10)
    return timedelta(hours=2 if summer else 1)


def _sydney_offset_at_midnight(day: date) -> timedelta:
    """NSW rule (since 2008): daylight time from the first Sunday of October 02:00 to the first
    Sunday of April 03:00. Midnight on either Sunday is before the change."""
    summer = day <= _first_sunday(day.year, 4) or day > _first_sunday(day.year, 10)
    return timedelta(hours=11 if summer else 10)


lift_days = st.dates(min_value=date(2009, 1, 1), max_value=date(2099, 12, 30))


@given(lift_days)
def test_lift_instant_in_paris_is_local_midnight_with_the_eu_offset(day_d):
    lift = lift_instant(day_d, PARIS)
    local = lift.astimezone(PARIS)
    assert local.date() == day_d + timedelta(days=1)
    assert local.time() == time(0, 0)
    assert local.utcoffset() == _paris_offset_at_midnight(day_d + timedelta(days=1))
    # the instant itself, in UTC, agrees with the independent rule
    expected_utc = datetime.combine(day_d + timedelta(days=1), time(), UTC) - _paris_offset_at_midnight(
        day_d + timedelta(days=1))
    assert lift == expected_utc


@given(lift_days)
def test_lift_instant_in_sydney_is_local_midnight_with_the_nsw_offset(day_d):
    lift = lift_instant(day_d, SYDNEY)
    local = lift.astimezone(SYDNEY)
    assert (local.date(), local.time()) == (day_d + timedelta(days=1), time(0, 0))
    assert local.utcoffset() == _sydney_offset_at_midnight(day_d + timedelta(days=1))


@pytest.mark.parametrize("tz", [PARIS, NEW_YORK, SYDNEY])
@given(day_d=lift_days)
def test_lift_instant_is_local_midnight_where_midnight_exists(tz, day_d):
    lift = lift_instant(day_d, tz)
    local = lift.astimezone(tz)
    assert (local.date(), local.time()) == (day_d + timedelta(days=1), time(0, 0))
    # round trip through UTC: the offset is the one the zone really has at that instant
    assert lift.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == local.replace(tzinfo=None)
    assert lift.utcoffset() == lift.astimezone(UTC).astimezone(tz).utcoffset()
    # an hour earlier or later in UTC is another local day or not midnight: the instant is unique
    assert (lift.astimezone(UTC) - timedelta(hours=1)).astimezone(tz).date() == day_d


@pytest.mark.parametrize("tz", [PARIS, NEW_YORK, SYDNEY, SANTIAGO, HAVANA])
@given(day_d=st.dates(min_value=date(1990, 1, 1), max_value=date(2060, 12, 30)))
def test_lift_instant_is_the_first_instant_of_the_next_local_day(tz, day_d):
    # Holds in every zone, including those where midnight is skipped (Santiago in September)
    # or repeated (Havana in November): the order is in force through all of day D.
    lift = lift_instant(day_d, tz)
    assert lift.astimezone(tz).date() == day_d + timedelta(days=1)
    assert (lift.astimezone(UTC) - MICRO).astimezone(tz).date() == day_d


def test_lift_in_santiago_when_midnight_does_not_exist():
    # Find a day whose local midnight is skipped (Chile moves 24:00 -> 01:00 in September).
    day = date(2026, 8, 1)
    while localize_ok(day, SANTIAGO):
        day += timedelta(days=1)
        assert day < date(2026, 10, 1), "no skipped midnight found in Chile's 2026 spring"
    first = start_of_day(day, SANTIAGO)
    local = first.astimezone(SANTIAGO)
    assert local.date() == day
    assert local.time() == time(1, 0)
    assert (first.astimezone(UTC) - MICRO).astimezone(SANTIAGO).date() == day - timedelta(days=1)


def localize_ok(day: date, tz) -> bool:
    try:
        localize(datetime.combine(day, time()), tz)
    except LegalTimeError:
        return False
    return True


def test_dst_change_days_in_paris():
    # Midnight exists on both change days; the offset is the one before the 02:00/03:00 change.
    assert fmt_instant(start_of_day(date(2026, 3, 29), PARIS)) == "2026-03-29T00:00:00+01:00"
    assert fmt_instant(start_of_day(date(2026, 3, 30), PARIS)) == "2026-03-30T00:00:00+02:00"
    assert fmt_instant(start_of_day(date(2026, 10, 25), PARIS)) == "2026-10-25T00:00:00+02:00"
    assert fmt_instant(start_of_day(date(2026, 10, 26), PARIS)) == "2026-10-26T00:00:00+01:00"
    # a one-day order over the spring change lasts 23 hours, over the autumn change 25 hours
    spring = window("2026-03-29", end_text="2026-03-29")
    autumn = window("2026-10-25", end_text="2026-10-25")
    assert elapsed(spring) == timedelta(hours=23)
    assert elapsed(autumn) == timedelta(hours=25)


def test_order_time_zone_is_used_for_the_lift_instant():
    w = window("2026-11-20", tz=NEW_YORK, duration_text="18 months")
    assert fmt_instant(w.start, NEW_YORK) == "2026-11-20T00:00:00-05:00"
    assert fmt_instant(w.scheduled_end, NEW_YORK) == "2028-05-21T00:00:00-04:00"
    w = window("2026-11-20", tz=SYDNEY, duration_text="18 months")
    assert fmt_instant(w.scheduled_end, SYDNEY) == "2028-05-21T00:00:00+10:00"


# --- parsing instants ----------------------------------------------------------------------------


def test_a_date_is_midnight_local_time():
    instant, date_only = parse_instant("2026-11-20", PARIS)
    assert date_only is True
    assert fmt_instant(instant, PARIS) == "2026-11-20T00:00:00+01:00"
    instant, date_only = parse_instant("2026-07-01", PARIS)
    assert fmt_instant(instant) == "2026-07-01T00:00:00+02:00"


@pytest.mark.parametrize(
    ("tz", "text"),
    [
        (PARIS, "2026-03-29T02:30"),
        (PARIS, "2026-03-29T02:00:00"),
        (PARIS, "2026-03-29 02:59:59"),
        (NEW_YORK, "2026-03-08T02:30"),
        (SYDNEY, "2026-10-04T02:30"),
    ],
)
def test_nonexistent_local_times_are_refused(tz, text):
    with pytest.raises(LegalTimeError, match="does not exist"):
        parse_instant(text, tz)


@pytest.mark.parametrize(
    ("tz", "text"),
    [
        (PARIS, "2026-10-25T02:30"),
        (PARIS, "2026-10-25T02:00:00"),
        (NEW_YORK, "2026-11-01T01:30"),
        (SYDNEY, "2026-04-05T02:30"),
    ],
)
def test_ambiguous_local_times_are_refused(tz, text):
    with pytest.raises(LegalTimeError, match="ambiguous"):
        parse_instant(text, tz)


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-03-29T02:30+02:00", datetime(2026, 3, 29, 0, 30, tzinfo=UTC)),
        ("2026-10-25T02:30+02:00", datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        ("2026-10-25T02:30+01:00", datetime(2026, 10, 25, 1, 30, tzinfo=UTC)),
        ("2026-10-25T02:30:00Z", datetime(2026, 10, 25, 2, 30, tzinfo=UTC)),
        ("2026-10-25T02:30:00z", datetime(2026, 10, 25, 2, 30, tzinfo=UTC)),
        ("2026-10-25t02:30+0100", datetime(2026, 10, 25, 1, 30, tzinfo=UTC)),
        ("2026-10-25 02:30+01:00", datetime(2026, 10, 25, 1, 30, tzinfo=UTC)),
    ],
)
def test_an_explicit_offset_makes_any_wall_time_exact(text, utc):
    instant, date_only = parse_instant(text, PARIS)
    assert date_only is False
    assert instant == utc


def test_times_just_around_a_dst_gap_are_accepted():
    before, _ = parse_instant("2026-03-29T01:59:59", PARIS)
    after, _ = parse_instant("2026-03-29T03:00:00", PARIS)
    assert after.astimezone(UTC) - before.astimezone(UTC) == timedelta(seconds=1)


@pytest.mark.parametrize(
    "text",
    ["2026-13-01", "2026-02-30", "2026-02-29", "2026-02-30T10:00", "2026-01-01T25:00", "2026-01-01T24:00",
     "tomorrow", "", "2026-1-1", "20260101", "2026-01-01T10:00+25:00", "2026-01-01T10", None, 20260101,
     ["2026-01-01"], "2026-01-01T10:00 Europe/Paris"],
)
def test_malformed_instants_are_errors(text):
    with pytest.raises(LegalTimeError):
        parse_instant(text, PARIS)


def test_parse_date():
    assert parse_date("2024-02-29") == date(2024, 2, 29)
    assert parse_date(date(2026, 1, 1)) == date(2026, 1, 1)
    with pytest.raises(LegalTimeError, match="not a date that exists"):
        parse_date("2026-02-29")
    with pytest.raises(LegalTimeError):
        parse_date("2026-02-01T10:00")
    with pytest.raises(LegalTimeError):
        parse_date(None)


def _paris_candidates(naive: datetime) -> list[timedelta]:
    """Offsets (+01:00 or +02:00) under which `naive` is a real Paris wall time."""
    out = []
    for hours in (1, 2):
        offset = timedelta(hours=hours)
        utc = (naive - offset).replace(tzinfo=UTC)
        if utc.astimezone(PARIS).replace(tzinfo=None) == naive:
            out.append(offset)
    return out


@settings(max_examples=examples(300))
@given(st.datetimes(min_value=datetime(1980, 1, 1), max_value=datetime(2099, 12, 31)))
def test_naive_datetimes_are_read_in_the_zone_or_refused(naive):
    naive = naive.replace(microsecond=0)
    text = naive.isoformat()
    candidates = _paris_candidates(naive)
    if len(candidates) == 1:
        instant, _ = parse_instant(text, PARIS)
        assert instant.utcoffset() == candidates[0]
        assert instant.astimezone(PARIS).replace(tzinfo=None) == naive
    else:
        with pytest.raises(LegalTimeError, match="does not exist" if not candidates else "ambiguous"):
            parse_instant(text, PARIS)


@given(st.sampled_from(["2026-03-29", "2026-10-25", "2027-03-28", "2027-10-31"]),
       st.integers(min_value=0, max_value=23), st.integers(min_value=0, max_value=59))
def test_dst_days_every_minute(day, hour, minute):
    text = f"{day}T{hour:02d}:{minute:02d}"
    naive = datetime.fromisoformat(text)
    candidates = _paris_candidates(naive)
    if len(candidates) == 1:
        assert parse_instant(text, PARIS)[0].utcoffset() == candidates[0]
    else:
        with pytest.raises(LegalTimeError):
            parse_instant(text, PARIS)
        # ... and the same wall time with either explicit offset is accepted
        for offset in ("+01:00", "+02:00"):
            assert parse_instant(text + offset, PARIS)[1] is False


def test_unknown_time_zones_are_errors():
    for name in ("Mars/Olympus", "Europe/Pariss", "../../etc/passwd", "", "europe/paris "):
        with pytest.raises(LegalTimeError, match="time zone"):
            zone(name)


def test_fmt_instant_shows_the_offset_to_the_second():
    instant = datetime(2026, 7, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert fmt_instant(instant) == "2026-07-01T10:00:00+00:00"
    assert fmt_instant(instant, PARIS) == "2026-07-01T12:00:00+02:00"
    assert fmt_instant(instant, NEW_YORK) == "2026-07-01T06:00:00-04:00"


# --- windows ---------------------------------------------------------------------------------------


def test_start_as_a_datetime_keeps_the_instant_and_counts_from_its_local_day():
    w = window("2026-11-20T15:30:00+01:00", duration_text="18 months")
    assert fmt_instant(w.start, PARIS) == "2026-11-20T15:30:00+01:00"
    assert fmt_instant(w.scheduled_end, PARIS) == "2028-05-21T00:00:00+02:00"


def test_start_day_is_the_day_in_the_order_time_zone():
    # 23:30 UTC on the 20th is already the 21st in Paris: the period counts from the 21st.
    w = window("2026-11-20T23:30:00Z", duration_text="18 months")
    assert fmt_instant(w.scheduled_end, PARIS) == "2028-05-22T00:00:00+02:00"


def test_end_as_a_datetime_is_the_exact_lift_instant():
    w = window("2026-11-20", end_text="2027-06-30T12:00")
    assert fmt_instant(w.scheduled_end, PARIS) == "2027-06-30T12:00:00+02:00"
    assert w.rule.startswith("end-instant")
    w = window("2026-11-20", end_text="2027-06-30T12:00:00Z")
    assert w.scheduled_end == datetime(2027, 6, 30, 12, tzinfo=UTC)


def test_end_date_equal_to_the_start_day_is_one_day():
    w = window("2026-11-20", end_text="2026-11-20")
    assert elapsed(w) == timedelta(days=1)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-11-20", "2026-11-19"),
        ("2026-11-20T10:00", "2026-11-20T09:59:59"),
        ("2026-11-20T10:00", "2026-11-20T10:00"),
        ("2026-11-21T00:00:00+01:00", "2026-11-20"),
    ],
)
def test_end_before_start_is_an_error(start, end):
    with pytest.raises(LegalTimeError, match="before it starts"):
        window(start, end_text=end)


def test_nonexistent_start_or_end_inside_a_window_is_an_error():
    with pytest.raises(LegalTimeError):
        window("2026-03-29T02:30", duration_text="1 month")
    with pytest.raises(LegalTimeError):
        window("2026-01-01", end_text="2026-10-25T02:30")
    with pytest.raises(LegalTimeError):
        window("2026-02-30", duration_text="1 month")


@pytest.mark.parametrize(
    ("duration", "rule"),
    [
        ("18 months", "cpc-641: 18 months"),
        ("1 month", "cpc-641: 1 month"),
        ("1 year", "cpc-641: 1 year"),
        ("2 years", "cpc-641: 2 years"),
        ("30 days", "cpc-641: 30 days"),
    ],
)
def test_the_rule_names_the_article_and_the_period(duration, rule):
    assert window("2026-11-20", duration_text=duration).rule.startswith(rule)


# --- art. 642 al. 2: next working day -------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (date(2027, 7, 14), False),  # Fête nationale (a Wednesday)
        (date(2027, 3, 29), False),  # Easter Monday 2027
        (date(2027, 5, 1), False),  # 1 May (a Saturday anyway)
        (date(2026, 11, 11), False),  # Armistice (a Wednesday)
        (date(2026, 12, 25), False),  # Christmas (a Friday)
        (date(2027, 1, 1), False),
        (date(2027, 7, 10), False),  # a Saturday
        (date(2027, 7, 11), False),  # a Sunday
        (date(2027, 7, 13), True),
        (date(2027, 7, 15), True),
        (date(2027, 3, 30), True),
        (date(2026, 11, 12), True),
    ],
)
def test_french_working_days(day, working):
    assert is_working_day(day, "FR") is working


def test_next_working_day():
    assert next_working_day(date(2027, 7, 14)) == date(2027, 7, 15)
    assert next_working_day(date(2027, 3, 27)) == date(2027, 3, 30)  # Sat -> Sun -> Easter Monday -> Tue
    assert next_working_day(date(2026, 12, 25)) == date(2026, 12, 28)  # Fri (Christmas) -> Sat -> Sun -> Mon
    assert next_working_day(date(2027, 7, 15)) == date(2027, 7, 15)


def test_extend_moves_a_computed_end_on_a_holiday():
    w = window("2027-06-14", duration_text="1 month", extend_to_working_day=True)
    assert fmt_instant(w.scheduled_end, PARIS) == "2027-07-16T00:00:00+02:00"
    assert "cpc-642" in w.rule
    assert "2027-07-14" in w.rule and "2027-07-15" in w.rule
    assert w.rule.startswith("cpc-641: 1 month")


def test_extend_moves_a_saturday_over_the_easter_weekend():
    w = window("2027-02-27", duration_text="1 month", extend_to_working_day=True)
    assert fmt_instant(w.scheduled_end, PARIS) == "2027-03-31T00:00:00+02:00"
    assert "2027-03-27" in w.rule and "2027-03-30" in w.rule


def test_extend_moves_a_sunday():
    # 2027-07-11 is a Sunday; 10 days from 2027-07-01
    w = window("2027-07-01", duration_text="10 days", extend_to_working_day=True)
    assert fmt_instant(w.scheduled_end, PARIS) == "2027-07-13T00:00:00+02:00"


def test_extend_is_off_by_default():
    w = window("2027-06-14", duration_text="1 month")
    assert fmt_instant(w.scheduled_end, PARIS) == "2027-07-15T00:00:00+02:00"
    assert "cpc-642" not in w.rule


def test_extend_leaves_a_working_day_alone():
    w = window("2027-06-15", duration_text="1 month", extend_to_working_day=True)
    assert fmt_instant(w.scheduled_end, PARIS) == "2027-07-16T00:00:00+02:00"
    assert "cpc-642" not in w.rule


@pytest.mark.parametrize("end", ["2027-07-14", "2027-07-11", "2027-03-29", "2027-07-14T18:00"])
def test_extend_never_moves_an_explicit_end(end):
    moved = window("2027-01-04", end_text=end, extend_to_working_day=True)
    plain = window("2027-01-04", end_text=end)
    assert moved.scheduled_end == plain.scheduled_end
    assert "cpc-642" not in moved.rule


def test_extend_with_an_unknown_holiday_country_is_an_error():
    with pytest.raises(LegalTimeError, match="country"):
        window("2027-06-14", duration_text="1 month", extend_to_working_day=True, holidays_country="XX")


@settings(max_examples=examples(150))
@given(st.dates(min_value=date(2020, 1, 1), max_value=date(2040, 12, 31)),
       st.sampled_from(["1 day", "10 days", "1 month", "6 months", "18 months", "1 year"]))
def test_extend_moves_to_the_first_working_day_on_or_after_day_d(start, duration):
    start_text = start.isoformat()
    day_d = last_day(start, parse_duration(duration))
    plain = window(start_text, duration_text=duration)
    moved = window(start_text, duration_text=duration, extend_to_working_day=True)
    moved_d = (moved.scheduled_end.astimezone(UTC) - MICRO).astimezone(PARIS).date()
    assert moved_d >= day_d
    assert is_working_day(moved_d)
    assert moved_d - day_d <= timedelta(days=5)
    day = day_d
    while day < moved_d:
        assert not is_working_day(day)
        day += timedelta(days=1)
    assert (moved.scheduled_end == plain.scheduled_end) == is_working_day(day_d)


# --- errors are plain values ----------------------------------------------------------------------


def test_legal_time_error_is_a_value_error_that_pickles():
    err = LegalTimeError("x")
    assert isinstance(err, ValueError)
    assert str(pickle.loads(pickle.dumps(err))) == "x"


@given(st.text(max_size=40))
def test_parse_instant_never_crashes_on_text(text):
    try:
        instant, _ = parse_instant(text, PARIS)
    except LegalTimeError:
        return
    assert instant.tzinfo is not None and instant.utcoffset() is not None


@given(st.text(max_size=30))
def test_parse_duration_never_crashes_on_text(text):
    try:
        duration = parse_duration(text)
    except LegalTimeError:
        return
    assert duration.count > 0
    assert duration.unit in ("day", "month", "year")
