"""The legal report's pure arithmetic: lift instants, days remaining, verification states, as at T.

Orders are parsed from real YAML with the real config (the dates come from the legal-time code
the report shows); facts are built by hand, or gathered from a real state database and audit
trail in a temp folder.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocker.config.load import load_config
from blocker.config.model import Config
from blocker.legal.html import render_report
from blocker.legal.report import (
    BLOCK_STATES,
    LIFT_STATES,
    STATUSES,
    Facts,
    ProbeTally,
    build_report,
    build_row,
    days_remaining,
    expiring,
    fmt_duration,
    gather,
    to_csv,
)
from blocker.orders.model import Order
from blocker.orders.parse import parse_order
from blocker.record.audit import AuditLog
from blocker.record.state import State, ZoneRecord
from tests.legal_samples import ALPHA, BRAVO

PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(None)


def order(config: Config, text: str, path: str = "orders/x.yaml") -> Order:
    parsed = parse_order(text.encode(), path, config.order_rules)
    assert isinstance(parsed, Order), parsed
    return parsed


def paris(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS)




CNIL_2024 = """\
id: cnil-2024
court: Tribunal judiciaire de Paris
case_number: RG 24/00001
decision_date: 2024-08-30
operators: [orange]
start: 2024-08-31
duration: 18 months
targets: [x.example]
"""


def test_days_remaining_counts_local_midnights_across_dst(config: Config) -> None:
    a = order(config, ALPHA)
    assert a.end == paris(2091, 4, 11)  # 2091-04-10 is day D: in force until 24:00
    assert a.end.isoformat() == "2091-04-11T00:00:00+02:00"
    assert days_remaining(a, paris(2091, 3, 25, 12)) == 17
    assert days_remaining(a, paris(2091, 4, 10, 23, 59, 59)) == 1  # the last day in force
    assert days_remaining(a, a.end) is None
    assert days_remaining(a, paris(2091, 1, 1)) == 100  # pending: days until the lift
    # Across the spring DST change (2091-03-25 in Paris) a day has 23 hours: counting seconds
    # would say 17 days and 23 hours; the legal count is 18 days.
    at = paris(2091, 3, 24)
    row = build_row(a, Facts(has_state=True), at)
    assert row.days_remaining == 18
    assert row.seconds_remaining == 18 * 86400 - 3600


def test_row_carries_the_lift_instant_and_the_rule_that_produced_it(config: Config) -> None:
    c = order(config, CNIL_2024)  # issue 2's worked example: D = 2026-02-28
    row = build_row(c, Facts(), paris(2025, 1, 1)).to_json()
    assert row["lift"] == "2026-03-01T00:00:00+01:00"
    assert row["rule"] == "cpc-641: 18 months; in force through 2026-02-28 24:00 Europe/Paris"
    assert row["status"] == "active"
    b = build_row(order(config, BRAVO), Facts(), paris(2091, 3, 25)).to_json()
    assert b["lift"] == "2091-03-21T00:00:00+01:00"
    assert b["rule"].startswith("end-date: last day 2091-03-20 inclusive")
    assert b["status"] == "expired" and b["days_remaining"] is None
    a = build_row(order(config, ALPHA), Facts(), paris(2091, 3, 25)).to_json()
    assert a["url_escalated"] == ["files.alpha.example"]
    assert [t["kind"] for t in a["targets"]] == ["domain", "url-escalated"]


def facts_for(publishes: dict[str, list[tuple[int, datetime, set[str]]]], **kw: object) -> Facts:
    f = Facts(has_state=True, **kw)  # type: ignore[arg-type]
    f.publishes = {op: [(s, t, frozenset(ids)) for s, t, ids in rows] for op, rows in publishes.items()}
    return f


def test_block_and_lift_states_per_operator(config: Config) -> None:
    b = order(config, BRAVO)
    published = paris(2091, 3, 1, 9, 0, 30)
    removed = paris(2091, 3, 21, 0, 0, 5)
    history = {"orange": [(10, published, {"bravo"}), (11, removed, set())]}
    facts = facts_for(history)
    facts.firsts[("bravo", "orange", "blocked")] = paris(2091, 3, 1, 9, 2)
    during = build_row(b, facts, paris(2091, 3, 10)).operators[0]
    assert (during.block, during.lift) == ("verified", "not-due")
    assert during.time_to_block == 120.0 and fmt_duration(during.time_to_block) == "2 min"
    assert (during.first_serial, during.first_published) == (10, published)
    after = build_row(b, facts, paris(2091, 3, 25)).operators[0]
    assert (after.lift, after.removed_serial, after.removed_at) == ("unverified", 11, removed)
    facts.firsts[("bravo", "orange", "lifted")] = paris(2091, 3, 21, 0, 3)
    verified = build_row(b, facts, paris(2091, 3, 25)).operators[0]
    assert verified.lift == "verified" and verified.time_to_lift == 180.0
    # Expired but never removed from the zone: the worst case, over-blocking.
    stuck = build_row(b, facts_for({"orange": [(10, published, {"bravo"})]}), paris(2091, 3, 25)).operators[0]
    assert (stuck.block, stuck.lift) == ("published", "in-zone")
    never = build_row(b, facts_for({}), paris(2091, 3, 25)).operators[0]
    assert (never.block, never.lift) == ("not-published", "not-published")
    pending = build_row(b, facts_for({}), paris(2091, 2, 1)).operators[0]
    assert pending.block == "pending"
    unknown = build_row(b, Facts(has_state=False), paris(2091, 3, 25)).operators[0]
    assert (unknown.block, unknown.lift) == ("unknown", "unknown")


def test_facts_after_the_report_instant_are_not_shown(config: Config) -> None:
    """A report dated in March does not show April's verification or April's failure count."""
    b = order(config, BRAVO)
    facts = facts_for({"orange": [(10, paris(2091, 3, 1, 9, 1), {"bravo"})]})
    facts.probe_last[("bravo", "orange")] = (paris(2091, 3, 19), paris(2091, 3, 18), 3)
    facts.tallies[("bravo", "orange")] = ProbeTally(paris(2091, 3, 9), paris(2091, 3, 5), 1)
    late = build_row(b, facts, paris(2091, 3, 20)).operators[0]
    assert (late.last_verified, late.last_failure, late.failures) == (paris(2091, 3, 19), paris(2091, 3, 18), 3)
    early = build_row(b, facts, paris(2091, 3, 10)).operators[0]
    assert (early.last_verified, early.last_failure, early.failures) == (paris(2091, 3, 9), paris(2091, 3, 5), 1)


def test_gather_reads_state_and_audit_as_at_t(tmp_path: Path, config: Config) -> None:
    b = order(config, BRAVO, "orders/bravo.yaml")
    state, audit = State(tmp_path), AuditLog(tmp_path, actor="tester")
    t0 = paris(2091, 3, 1, 9, 0, 30)
    state.remember_order("bravo", b.digest, b.path, BRAVO.encode(), t0)
    state.record_publish(ZoneRecord("orange", 10, "c" * 16, 1, 2, t0, True, ""), ["bravo"])
    state.record_publish(ZoneRecord("orange", 11, "d" * 16, 0, 0, paris(2091, 3, 21, 0, 0, 5), True, ""), [])
    state.record_first("bravo", "orange", "blocked", paris(2091, 3, 1, 9, 2))
    state.record_first("bravo", "orange", "lifted", paris(2091, 3, 21, 0, 3))
    audit.append("entries-activated", {"operator": "orange", "order": "bravo", "serial": 10, "count": 1,
                                       "names": ["bravo.example"], "reasons": ["started"]}, at=t0)
    for day, ok in ((2, True), (3, False), (4, True), (22, False)):
        audit.append("probe-pass", {"operator": "orange", "orders": ["bravo"], "verified": ["bravo"] if ok else [],
                                    "failing": [] if ok else ["bravo"]}, actor="daemon", at=paris(2091, 3, day, 12))
    audit.append("order-invalid", {"file": "orders/bravo.yaml", "errors": ["bad"]}, at=paris(2091, 3, 5))
    facts = gather(state, audit, paris(2091, 3, 10), paths={"orders/bravo.yaml": "bravo"})
    assert facts.audit is not None and facts.audit.ok and facts.audit.count == 6
    assert ("bravo", "orange", "lifted") not in facts.firsts  # seen on the 21st: after T
    assert [s for s, _, _ in facts.publishes["orange"]] == [10]
    assert facts.tallies[("bravo", "orange")] == ProbeTally(paris(2091, 3, 4, 12), paris(2091, 3, 3, 12), 1)
    assert [r["event"] for r in facts.events["bravo"]] == ["entries-activated", "order-invalid"]
    assert facts.received["bravo"] == t0 and facts.versions["bravo"] == 1
    row = build_row(b, facts, paris(2091, 3, 10))
    kinds = [(e.kind, e.text.split(" (")[0]) for e in row.timeline]
    assert ("verify", "block verified on every resolver") in kinds
    assert ("failure", "order file invalid: its last good version stays in force") in kinds
    assert [e.at for e in row.timeline] == sorted(e.at for e in row.timeline)
    state.close()


def test_expiring_lists_lifts_in_the_window_then_unverified_lifts(config: Config) -> None:
    a, b = order(config, ALPHA), order(config, BRAVO)
    facts = facts_for({"orange": [(10, paris(2091, 3, 1, 10), {"alpha", "bravo"}),
                                  (11, paris(2091, 3, 21, 1), {"alpha"})]})
    at = paris(2091, 3, 25, 12)
    rows = build_report([a, b], facts, at)
    items = expiring(rows, at, 30 * 86400)
    assert [(i.row.order.id, i.reason, i.unverified) for i in items] == [
        ("alpha", "expires-within", ()), ("bravo", "lift-unverified", ("orange",))]
    assert [i.row.order.id for i in expiring(rows, at, 14 * 86400)] == ["bravo"]  # alpha lifts in 17 days
    j = items[0].to_json()
    assert (j["lift"], j["days_remaining"]) == ("2091-04-11T00:00:00+02:00", 17)
    facts.firsts[("bravo", "orange", "lifted")] = paris(2091, 3, 21, 1, 5)
    assert [i.row.order.id for i in expiring(build_report([a, b], facts, at), at, 14 * 86400)] == []


def test_report_order_and_flat_csv(config: Config) -> None:
    a, b = order(config, ALPHA), order(config, BRAVO)
    c = order(config, CNIL_2024)
    rows = build_report([c, b, a], Facts(has_state=True), paris(2091, 3, 25))
    assert [r.order.id for r in rows] == ["alpha", "bravo", "cnil-2024"]  # in force, then latest ended first
    lines = to_csv(rows).splitlines()
    assert lines[0].startswith("order,court,case_number,applicant,status")
    assert len(lines) == 1 + 2 + 1 + 1  # one line per order and operator
    assert "files.alpha.example" in lines[1] and ",active," in lines[1]


def test_fmt_duration() -> None:
    assert fmt_duration(None) == ""
    assert fmt_duration(42) == "42 s"
    assert fmt_duration(43620) == "12 h 7 min"
    assert fmt_duration(3 * 86400 + 4 * 3600 + 59) == "3 d 4 h"
    assert fmt_duration(-120) == "-2 min"


def test_timeline_caps_probe_verdict_changes(config: Config) -> None:
    a = order(config, ALPHA)
    facts = Facts(has_state=True)
    facts.events["alpha"] = [
        {"seq": i, "ts": (paris(2091, 2, 1) + timedelta(minutes=i)).isoformat(), "actor": "daemon",
         "event": "probe-verdict-change",
         "data": {"operator": "orange", "name": "alpha.example", "resolver": "r1", "from": "blocked",
                  "to": "not-blocked", "orders": ["alpha"]}} for i in range(1, 80)]
    row = build_row(a, facts, paris(2091, 3, 1))
    failures = [e for e in row.timeline if e.kind == "failure"]
    assert len(failures) == 50
    assert any("29 more probe verdict change(s)" in e.text for e in row.timeline)


def test_html_is_self_contained_and_escaped(config: Config) -> None:
    hostile = ALPHA.replace("Tribunal judiciaire de Paris", "Tribunal <script>alert(1)</script>")
    rows = build_report([order(config, hostile)], Facts(has_state=True), paris(2091, 3, 25))
    html = render_report(rows, paris(2091, 3, 25), "Europe/Paris", audit=None, source="test",
                         generated=datetime(2091, 3, 25, tzinfo=UTC))
    assert "<script>" not in html and "&lt;script&gt;" in html
    lowered = html.lower()
    for external in ("src=", "<link", "@import", "url(", "<script"):
        assert external not in lowered
    assert "2091-04-11T00:00:00+02:00" in html and "url-escalated" in html and "<svg" in html
    assert json.dumps(rows[0].to_json())  # every value serialisable


HOURS = st.integers(min_value=-24 * 40, max_value=24 * 80)


@settings(max_examples=300, deadline=None)
@given(published=st.lists(st.tuples(HOURS, st.booleans()), max_size=4), blocked=st.none() | HOURS,
       lifted=st.none() | HOURS, records=st.none() | HOURS, at=HOURS, has_state=st.booleans())
def test_block_and_lift_states_are_consistent_whatever_the_history(
        published: list[tuple[int, bool]], blocked: int | None, lifted: int | None, records: int | None, at: int,
        has_state: bool) -> None:
    """For any publishes, probe firsts, start of blocker's records and report instant (hours from
    bravo's start): the states are ones the legend explains, a lift is "verified" only where the
    order was published, and no figure is computed from before blocker's records (issue 12)."""
    b = order(load_config(None), BRAVO)
    t0 = b.start

    def h(n: int) -> datetime:
        return t0 + timedelta(hours=n)

    history = sorted((h(n), carries) for n, carries in published)
    facts = facts_for({"orange": [(i + 1, t, {"bravo"} if c else set()) for i, (t, c) in enumerate(history)]})
    facts.has_state = has_state
    facts.records_start = None if records is None else h(records)
    if blocked is not None:
        facts.firsts[("bravo", "orange", "blocked")] = h(blocked)
    if lifted is not None:
        facts.firsts[("bravo", "orange", "lifted")] = h(lifted)
    row = build_row(b, facts, h(at))
    op = row.operators[0]
    assert row.status in STATUSES and op.block in BLOCK_STATES and op.lift in LIFT_STATES
    if op.lift == "verified":
        assert op.block in ("published", "verified") and op.first_published is not None
    if op.block in ("not-published", "before-records", "pending", "unknown"):
        assert op.lift_verified is None and op.lift != "verified"
    if facts.records_start is not None and b.start < facts.records_start:
        assert op.time_to_block is None
