"""The legal team's report: per order, what the court ordered and what the tool can prove it did.

Everything is computed "as at" an instant T: the status and days remaining at T, and only the
facts recorded at or before T (a report dated last March must not show a verification from
April). `gather` is the one function that reads the state directory and the audit trail; every
other function here is pure, so the arithmetic the legal team relies on is tested without I/O.

Where the facts come from:
- the order (file, or its last good version in the state when the file broke or vanished):
  court, case, dates, the rule that produced the lift instant, targets;
- `zone_history`: the serials each operator published with the order's entries in them;
- `probe_firsts`: the first probe pass in which every resolver of an operator answered as
  blocked (kind `blocked`) or as lifted (kind `lifted`);
- `probe_last` and the audit's `probe-pass` records: the last pass that verified the order,
  the last that did not, and how many did not;
- every other audit record that names the order, for the timeline.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import idna

from blocker.orders.legaltime import fmt_instant
from blocker.orders.model import Order
from blocker.orders.names import _uts46_u_label
from blocker.record.audit import AuditLog
from blocker.record.state import State
from blocker.record.verify import Verdict, VerifyResult, checked_lines
from blocker.textsafe import printable

# Audit events too frequent for a timeline; their substance reaches the report another way
# (probe-pass -> last verification and failures; zone-published -> zone_history).
NOT_IN_TIMELINE = frozenset({"probe-pass", "zone-published", "apply", "reload", "publish-failed"})
MAX_VERDICT_CHANGES = 50  # per order in a timeline; the evidence pack keeps them all
BEFORE_RECORDS = "before blocker's records"  # shown instead of a figure computed from history it never saw
# Every value the report can show in its state columns: the legend (legal.html.GLOSSARY) explains each.
STATUSES = ("active", "pending", "expired", "lifted", "removed")
BLOCK_STATES = ("pending", "not-published", "published", "verified", "unknown", "before-records")
LIFT_STATES = ("not-due", "in-zone", "unverified", "verified", "not-published", "unknown", "before-records")
FLAGS = ("invalid-file", "orphaned")
TIMELINE_KINDS = ("order", "publish", "verify", "failure", "lift", "note", "future")


def unicode_name(name: str) -> str | None:
    """The name as the court wrote it (`bücher.example`) when it has A-labels, else None.

    A lawyer matches the decision's text, not `xn--bcher-kva.example`: every page a person reads
    shows this beside the A-label (which stays: it is what resolvers are asked).
    """
    if "xn--" not in name.lower():
        return None
    labels = []
    for label in name.split("."):
        if label.lower().startswith("xn--"):
            try:
                labels.append(idna.decode(label))
            except (idna.IDNAError, UnicodeError):
                u = _uts46_u_label(label.lower())
                labels.append(label if u is None else u)
        else:
            labels.append(label)
    text = ".".join(labels)
    return None if text == name else text


def with_unicode(name: str) -> str:
    """`xn--bcher-kva.example (bücher.example)`, or the name alone when it is ASCII."""
    u = unicode_name(name)
    return name if u is None else f"{name} ({u})"


@dataclass(frozen=True)
class Removal:
    """An order dropped with `apply --force` while it was in force: no court lifted it."""

    actor: str
    at: datetime
    checksum: str | None  # the plan checksum the person reviewed (the `apply --force` that followed)
    seq: int | None = None

    def to_json(self, order: Order) -> dict[str, Any]:
        return {"how": "removed-by-force", "by": self.actor, "at": fmt_instant(self.at, order.tz),
                "checksum_reviewed": self.checksum, "audit_seq": self.seq}


@dataclass
class ProbeTally:
    """Probe passes for one (order, operator) up to T, from the audit trail."""

    last_ok: datetime | None = None
    last_failure: datetime | None = None
    failures: int = 0


@dataclass
class Facts:
    """What the state directory and the audit trail know, read once, filtered to T.

    Kept separate from the report rows so that building the rows is pure and testable with
    hand-made facts.
    """

    has_state: bool = False
    firsts: dict[tuple[str, str, str], datetime] = field(default_factory=dict)
    probe_last: dict[tuple[str, str], tuple[datetime | None, datetime | None, int]] = field(default_factory=dict)
    tallies: dict[tuple[str, str], ProbeTally] = field(default_factory=dict)
    # operator -> [(serial, published_at, order ids in that serial)], oldest first
    publishes: dict[str, list[tuple[int, datetime, frozenset[str]]]] = field(default_factory=dict)
    received: dict[str, datetime] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)  # order id -> invalid-file | orphaned
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # order id -> audit records
    audit: VerifyResult | None = None  # the chain as read while gathering; None without a log
    records_start: datetime | None = None  # blocker's first record (audit or state): what came before is unseen
    removals: dict[str, Removal] = field(default_factory=dict)  # order id -> its removal by force
    _spans: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict, repr=False)

    def span(self, operator: str, order_id: str) -> tuple[int, int] | None:
        """Indexes in `publishes[operator]` of the first and last serial carrying the order.

        Built once per operator: 1,000 orders times thousands of publishes must not be a
        nested scan for every report.
        """
        if operator not in self._spans:
            index: dict[str, tuple[int, int]] = {}
            for i, (_serial, _at, ids) in enumerate(self.publishes.get(operator, [])):
                for order in ids:
                    first = index.get(order, (i, i))[0]
                    index[order] = (first, i)
            self._spans[operator] = index
        return self._spans[operator].get(order_id)


@dataclass(frozen=True)
class OperatorRow:
    """One operator's side of one order."""

    operator: str
    block: str  # pending | not-published | published | verified | unknown (no state) | before-records
    first_published: datetime | None
    first_serial: int | None
    block_verified: datetime | None  # first pass with every resolver answering blocked
    time_to_block: float | None  # seconds from the order's start to block_verified (None: before-records)
    last_verified: datetime | None  # last pass where every check of the order held
    last_failure: datetime | None
    failures: int
    lift: str  # not-due | in-zone | unverified | verified | not-published | unknown | before-records
    removed_at: datetime | None  # first publish without the order's entries, after the last with them
    removed_serial: int | None
    lift_verified: datetime | None  # first pass with every resolver answering as lifted
    time_to_lift: float | None  # seconds from the lift instant to lift_verified
    # Seconds from receipt of the file (or the start, if received before it) to block_verified:
    # the operational figure, what ops controls; time_to_block is the legal one.
    time_to_block_from_receipt: float | None = None
    block_note: str | None = None  # BEFORE_RECORDS when the start predates blocker's records

    def to_json(self, order: Order) -> dict[str, Any]:
        tz = order.tz
        return {
            "operator": self.operator,
            "block": self.block,
            "first_published": _iso(self.first_published, order),
            "first_serial": self.first_serial,
            "block_verified": _iso(self.block_verified, order),
            "time_to_block_seconds": self.time_to_block,
            "time_to_block": self.block_note or fmt_duration(self.time_to_block),
            "time_to_block_from_receipt_seconds": self.time_to_block_from_receipt,
            "time_to_block_from_receipt": fmt_duration(self.time_to_block_from_receipt),
            "last_verified": _iso(self.last_verified, order),
            "last_failure": _iso(self.last_failure, order),
            "failures": self.failures,
            "lift": self.lift,
            "removed_from_zone": None if self.removed_at is None else fmt_instant(self.removed_at, tz),
            "removed_serial": self.removed_serial,
            "lift_verified": _iso(self.lift_verified, order),
            "time_to_lift_seconds": self.time_to_lift,
            "time_to_lift": fmt_duration(self.time_to_lift),
        }


@dataclass(frozen=True)
class TimelineEvent:
    at: datetime
    kind: str  # order | publish | verify | failure | lift | note | future
    text: str
    operator: str | None = None
    seq: int | None = None  # the audit record it comes from


@dataclass(frozen=True)
class ReportRow:
    """One order as at T."""

    order: Order
    at: datetime
    status: str  # pending | active | expired | lifted
    flag: str | None
    received: datetime | None
    versions: int
    days_remaining: int | None
    seconds_remaining: float | None
    operators: tuple[OperatorRow, ...]
    timeline: tuple[TimelineEvent, ...]
    removal: Removal | None = None  # set when it was dropped with apply --force (as at T or later)
    records_start: datetime | None = None

    @property
    def removed(self) -> bool:
        """Dropped by force at or before T."""
        return self.removal is not None and self.removal.at <= self.at

    @property
    def predates_records(self) -> bool:
        return self.records_start is not None and self.order.start < self.records_start

    @property
    def ended(self) -> dict[str, Any] | None:
        """How the order ended, as at T: lifted on schedule, lifted early, or removed by force."""
        if self.removed and self.removal is not None:
            return self.removal.to_json(self.order)
        if self.status == "lifted":
            return {"how": "lifted-early"}
        if self.status == "expired":
            return {"how": "lifted-on-schedule"}
        return None

    @property
    def url_escalated(self) -> list[str]:
        return [t.name for t in self.order.targets if t.kind == "url-escalated"]

    def to_json(self) -> dict[str, Any]:
        o = self.order
        base = o.to_json(self.at)
        return {
            "id": o.id,
            "court": o.court,
            "case_number": o.case_number,
            "applicant": o.applicant,
            "decision_date": o.decision_date.isoformat(),
            "operators": list(o.operators),
            "action": o.action,
            "timezone": o.timezone,
            "status": self.status,
            "flag": self.flag,
            "start": base["start"],
            "lift": base["end"],
            "scheduled_end": base["scheduled_end"],
            "rule": o.rule,
            "lifted": base["lifted"],
            "days_remaining": self.days_remaining,
            "seconds_remaining": self.seconds_remaining,
            "received": _iso(self.received, o),
            "versions": self.versions,
            "file": o.path,
            "sha256": o.digest,
            "targets": [{**t, "unicode_name": unicode_name(str(t.get("name", "")))} for t in base["targets"]],
            "ended": self.ended,
            "predates_records": self.predates_records,
            "url_escalated": self.url_escalated,
            "per_operator": [r.to_json(o) for r in self.operators],
            "timeline": [
                {"at": fmt_instant(e.at, o.tz), "kind": e.kind, "text": e.text, "operator": e.operator, "seq": e.seq}
                for e in self.timeline
            ],
        }


def seconds_between(later: datetime, earlier: datetime) -> float:
    """Elapsed seconds, via UTC: Python subtracts two datetimes that share a tzinfo by their wall
    clocks, which is an hour off across a DST change."""
    return (later.astimezone(UTC) - earlier.astimezone(UTC)).total_seconds()


def _iso(at: datetime | None, order: Order) -> str | None:
    return None if at is None else fmt_instant(at, order.tz)


def fmt_duration(seconds: float | None) -> str:
    """`3 d 4 h`, `2 h 5 min`, `42 s`: precise enough to read, short enough for a table."""
    if seconds is None:
        return ""
    sign = "-" if seconds < 0 else ""
    s = round(abs(seconds))
    d, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    if d:
        parts = [f"{d} d"] + ([f"{h} h"] if h else [])
    elif h:
        parts = [f"{h} h"] + ([f"{m} min"] if m else [])
    elif m:
        parts = [f"{m} min"] + ([f"{sec} s"] if sec else [])
    else:
        parts = [f"{sec} s"]
    return sign + " ".join(parts)


def days_remaining(order: Order, at: datetime) -> int | None:
    """Midnights, in the order's time zone, between T and the lift instant; None once it stopped.

    For the usual lift at 00:00 local time this is the number of days in force left, today
    included (1 on the last day), and it stays right across DST changes where dividing seconds
    by 86,400 would not.
    """
    if seconds_between(order.end, at) <= 0:
        return None
    tz = order.tz
    return (order.end.astimezone(tz).date() - at.astimezone(tz).date()).days


# gathering (the only I/O) -------------------------------------------------------------------


def _orders_of(record: dict[str, Any], paths: Mapping[str, str]) -> list[str]:
    data = record.get("data")
    if not isinstance(data, dict):
        return []
    out: list[str] = []
    if isinstance(data.get("order"), str):
        out.append(data["order"])
    if isinstance(data.get("orders"), list):
        out += [i for i in data["orders"] if isinstance(i, str) and i not in out]
    if not out and isinstance(data.get("file"), str) and data["file"] in paths:
        out.append(paths[data["file"]])  # order-invalid names the file, not the order
    return out


def record_time(record: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(record["ts"])
    except (KeyError, TypeError, ValueError):
        return None


def gather(state: State | None, audit: AuditLog | None, at: datetime, *, paths: Mapping[str, str] | None = None,
           flags: Mapping[str, str] | None = None) -> Facts:
    """Read the state and the audit trail once, keeping only what was recorded at or before `at`.

    `paths` maps order file paths to order ids, so that records naming only a file (an order
    file that went invalid) reach the right order's timeline.
    """
    at = at.astimezone(UTC)
    facts = Facts(has_state=state is not None, flags=dict(flags or {}))
    paths = paths or {}
    if state is not None:
        facts.firsts = {k: v for k, v in state.firsts().items() if v <= at}
        facts.probe_last = state.probe_last()
        for op, serial, _checksum, published, ids in state.zone_history():
            if published <= at:
                facts.publishes.setdefault(op, []).append((serial, published, frozenset(ids)))
        for order_id, (count, first) in state.version_summary().items():
            facts.versions[order_id] = count
            facts.received[order_id] = first
        facts.records_start = min(facts.received.values(), default=None)
    # probe_last holds each order's latest pass; the audit's probe-pass records are only tallied
    # when some of it is after T (a report as at a past instant): counting every order of every
    # pass of a year-old trail is most of a report's time otherwise.
    tally = not facts.probe_last or any(t is not None and t > at
                                        for ok, bad, _n in facts.probe_last.values() for t in (ok, bad))
    if audit is not None:
        verdict = Verdict(audit.head(), audit.dir)  # the head first: the daemon may append meanwhile
        awaiting: list[tuple[str, Removal]] = []  # forced removals waiting for their `apply` record
        first_record = True
        for line in checked_lines(audit.path):
            verdict.add(line)
            record = line.record
            if record is None:
                continue
            ts = record_time(record)
            if ts is not None and first_record:
                first_record = False
                if facts.records_start is None or ts < facts.records_start:
                    facts.records_start = ts
            if ts is None or ts > at:
                continue
            _removals(facts, record, ts, awaiting)
            if record.get("event") == "probe-pass":
                if tally:
                    _tally(facts, record, ts)
                continue
            if record.get("event") in NOT_IN_TIMELINE:
                continue
            for order_id in _orders_of(record, paths):
                facts.events.setdefault(order_id, []).append(record)
        if audit.path.exists():
            facts.audit = verdict.result()
    return facts


def _removals(facts: Facts, record: dict[str, Any], ts: datetime, awaiting: list[tuple[str, Removal]]) -> None:
    """`order-forgotten` says who dropped an order and when; the `apply --force` record that
    follows it (same person) carries the plan checksum they reviewed."""
    data = record.get("data") or {}
    event, actor = record.get("event"), str(record.get("actor", "?"))
    if event == "order-forgotten" and isinstance(data.get("order"), str):
        seq = record.get("seq") if isinstance(record.get("seq"), int) else None
        awaiting.append((data["order"], Removal(actor, ts, None, seq)))
        facts.removals[data["order"]] = awaiting[-1][1]
    elif event == "apply" and awaiting:
        checksum = data.get("checksum") if isinstance(data.get("checksum"), str) else None
        for order_id, removal in awaiting:
            if removal.actor == actor:
                facts.removals[order_id] = Removal(actor, removal.at, checksum, removal.seq)
        awaiting[:] = [(o, r) for o, r in awaiting if r.actor != actor]
    elif event in ("order-added", "order-changed") and isinstance(data.get("order"), str):
        facts.removals.pop(data["order"], None)  # applied again after its removal: back in force


def _tally(facts: Facts, record: dict[str, Any], ts: datetime) -> None:
    data = record.get("data") or {}
    op = data.get("operator")
    if not isinstance(op, str):
        return
    for order_id in data.get("verified") or ():
        t = facts.tallies.setdefault((order_id, op), ProbeTally())
        t.last_ok = ts
    for order_id in data.get("failing") or ():
        t = facts.tallies.setdefault((order_id, op), ProbeTally())
        t.last_failure, t.failures = ts, t.failures + 1


# the pure part ------------------------------------------------------------------------------


def probe_outcome(facts: Facts, order_id: str, operator: str, at: datetime
                  ) -> tuple[datetime | None, datetime | None, int]:
    """Last verified pass, last failed pass and failure count, as at T.

    `probe_last` holds only the latest values: they are used while they are not after T, else
    the audit's probe-pass records (counted up to T while gathering) answer.
    """
    at = at.astimezone(UTC)
    last_ok, last_bad, failures = facts.probe_last.get((order_id, operator), (None, None, 0))
    tally = facts.tallies.get((order_id, operator), ProbeTally())
    if last_ok is None or last_ok > at:
        last_ok = tally.last_ok
    if last_bad is not None and last_bad > at:
        last_bad, failures = tally.last_failure, tally.failures
    return last_ok, last_bad, failures


def operator_row(order: Order, operator: str, facts: Facts, at: datetime) -> OperatorRow:
    at = at.astimezone(UTC)
    history = facts.publishes.get(operator, [])
    span = facts.span(operator, order.id)
    first_serial = first_published = removed_serial = removed_at = None
    in_current = False
    if span is not None:
        first_serial, first_published, _ = history[span[0]]
        in_current = span[1] == len(history) - 1
        if not in_current:  # the publish right after the last one carrying it is the one without it
            removed_serial, removed_at, _ = history[span[1] + 1]
    blocked = facts.firsts.get((order.id, operator, "blocked"))
    lifted = facts.firsts.get((order.id, operator, "lifted"))
    last_ok, last_bad, failures = probe_outcome(facts, order.id, operator, at)
    started, ended = at >= order.start, at >= order.end
    origin = facts.records_start
    started_before = origin is not None and order.start < origin  # blocker never saw it start
    ended_before = origin is not None and order.end <= origin  # nor end: nothing of it to measure
    if not facts.has_state:
        block = "unknown" if started else "pending"
    elif blocked is not None:
        block = "verified"
    elif first_published is not None:
        block = "published"
    elif ended_before:
        block = "before-records"
    else:
        block = "not-published" if started else "pending"
    if not ended:
        lift = "not-due"
    elif not facts.has_state:
        lift = "unknown"
    elif first_published is None:
        # Never in this operator's zone: there was nothing to lift, whatever a probe saw later
        # (a name resolving after the end is no lift blocker did).
        lift = "before-records" if ended_before else "not-published"
        lifted = None
    elif lifted is not None:
        lift = "verified"
    elif in_current:
        lift = "in-zone"  # expired, yet its entries are still published: over-blocking
    else:
        lift = "unverified"
    if lift != "verified":  # a lift instant is shown only beside a lift verified (never with not-due, unknown)
        lifted = None
    received = facts.received.get(order.id)
    from_receipt = None
    if blocked is not None and received is not None:
        from_receipt = seconds_between(blocked, max(received, order.start, key=lambda t: t.timestamp()))
    return OperatorRow(
        operator=operator, block=block, first_published=first_published, first_serial=first_serial,
        block_verified=blocked,
        time_to_block=None if blocked is None or started_before else seconds_between(blocked, order.start),
        last_verified=last_ok, last_failure=last_bad, failures=failures, lift=lift,
        removed_at=removed_at, removed_serial=removed_serial, lift_verified=lifted,
        time_to_lift=None if lifted is None else seconds_between(lifted, order.end),
        time_to_block_from_receipt=from_receipt,
        block_note=BEFORE_RECORDS if started_before and blocked is not None else None,
    )


def _describe(record: dict[str, Any]) -> tuple[str, str, str | None]:
    """(kind, text, operator) of one audit record, in words a lawyer can read."""
    event = str(record.get("event"))
    data = record.get("data") or {}
    actor = record.get("actor", "?")
    op = data.get("operator")
    if event == "order-added":
        return "order", f"order received and applied (file {data.get('file')}, by {actor})", None
    if event == "order-changed":
        changed = ", ".join(sorted((data.get("changes") or {}).keys())) or "no field"
        return "order", f"new version of the order applied (changed: {changed}; by {actor})", None
    if event == "order-invalid":
        return "failure", "order file invalid: its last good version stays in force", None
    if event == "order-lifted-early":
        return "lift", f"early lift recorded (lift instant {data.get('at')}; reason in the order's facts)", None
    if event == "order-orphaned":
        return "failure", "order file removed while in force: entries kept (orphaned)", None
    if event == "order-forgotten":
        return "lift", f"order removed by force, without a court's lift (apply --force, by {actor})", None
    if event == "zone-adopted":
        return ("note", f"zone version {data.get('serial')} already on disk was taken as published "
                f"(recorded by {actor})", op)
    if event == "entries-activated":
        return "publish", f"{data.get('count')} name(s) activated in serial {data.get('serial')}", op
    if event == "entries-lifted":
        return "lift", f"{data.get('count')} name(s) removed in serial {data.get('serial')}", op
    if event == "order-verified":
        after = fmt_duration(data.get("after_seconds"))
        if data.get("kind") == "blocked":
            return "verify", f"block verified on every resolver ({after} after the start)", op
        return "verify", f"lift verified on every resolver ({after} after the lift)", op
    if event == "probe-verdict-change":
        bad = data.get("to") in ("not-blocked", "overblocked", "error", "unverified")
        return ("failure" if bad else "verify",
                f"probe: {data.get('name')} on {data.get('resolver')}: {data.get('from')} -> {data.get('to')}", op)
    if event == "catch-up":
        late = fmt_duration(data.get("late_seconds"))
        return "note", f"{data.get('transition')} applied late by {late} (daemon was not running)", op
    if event == "evidence-exported":
        return "note", f"evidence pack exported by {actor} to {data.get('out')}", None
    return "note", f"{event} by {actor}", op if isinstance(op, str) else None


def build_timeline(order: Order, records: Iterable[dict[str, Any]], op_rows: Iterable[OperatorRow],
                   at: datetime, records_start: datetime | None = None) -> list[TimelineEvent]:
    """The order's life in order of time: its instants, what the tool did, what probes saw."""
    events: list[TimelineEvent] = [
        TimelineEvent(order.start, "order" if order.start <= at else "future", "order comes into force"),
    ]
    end_text = "order lifted early by the court" if order.lifted_early and order.lifted else "order ends (lift instant)"
    # The scheduled rule only: an early lift's reason is in the order's facts, said once.
    events.append(TimelineEvent(order.end, "lift" if order.end <= at else "future",
                                end_text + f" [{order.window.rule}]"))
    seen_verified: set[tuple[str, str]] = set()
    changes = 0
    for record in records:
        ts = record_time(record)
        if ts is None:
            continue
        if record.get("event") == "probe-verdict-change":
            changes += 1
            if changes > MAX_VERDICT_CHANGES:
                continue
        if record.get("event") == "order-verified":
            data = record.get("data") or {}
            seen_verified.add((str(data.get("operator")), str(data.get("kind"))))
        kind, text, op = _describe(record)
        if (record.get("event") == "order-verified" and records_start is not None and order.start < records_start
                and (record.get("data") or {}).get("kind") == "blocked"):
            text = f"block verified on every resolver (the start is {BEFORE_RECORDS})"
        events.append(TimelineEvent(ts, kind, text, op, record.get("seq")))
    if changes > MAX_VERDICT_CHANGES:
        events.append(TimelineEvent(at, "note", f"{changes - MAX_VERDICT_CHANGES} more probe verdict change(s): "
                                    "see `blocker audit show --order` or the evidence pack"))
    for r in op_rows:  # verifications known to the state but not (or not yet) in the audit trail
        if r.block_verified is not None and (r.operator, "blocked") not in seen_verified:
            after = (f"the start is {r.block_note}" if r.block_note
                     else f"{fmt_duration(r.time_to_block)} after the start")
            events.append(TimelineEvent(r.block_verified, "verify", f"block verified on every resolver ({after})",
                                        r.operator))
        if r.lift_verified is not None and (r.operator, "lifted") not in seen_verified:
            events.append(TimelineEvent(r.lift_verified, "verify", "lift verified on every resolver "
                                        f"({fmt_duration(r.time_to_lift)} after the lift)", r.operator))
    return sorted(events, key=lambda e: (e.at.astimezone(UTC), e.seq or 0))


def build_row(order: Order, facts: Facts, at: datetime) -> ReportRow:
    at = at.astimezone(UTC)  # compared with instants in other zones: never by wall clock
    ops = tuple(operator_row(order, op, facts, at) for op in order.operators)
    timeline = build_timeline(order, facts.events.get(order.id, ()), ops, at, facts.records_start)
    remaining = None if at >= order.end else seconds_between(order.end, at)
    removal = facts.removals.get(order.id)
    removed = removal is not None and removal.at <= at
    return ReportRow(
        order=order, at=at, status="removed" if removed else order.status_at(at), flag=facts.flags.get(order.id),
        received=facts.received.get(order.id), versions=facts.versions.get(order.id, 0),
        days_remaining=None if removed else days_remaining(order, at),
        seconds_remaining=None if removed else remaining, operators=ops,
        timeline=tuple(timeline), removal=removal, records_start=facts.records_start,
    )


def build_report(orders: Iterable[Order], facts: Facts, at: datetime) -> list[ReportRow]:
    """Every order, soonest lift first among those in force, then pending, then ended ones."""
    rank = {"active": 0, "pending": 1, "lifted": 2, "expired": 2, "removed": 2}

    def key(row: ReportRow) -> tuple[int, float, str]:
        when = row.order.end.timestamp()
        return rank[row.status], when if rank[row.status] < 2 else -when, row.order.id  # ended: latest first

    return sorted((build_row(o, facts, at) for o in orders), key=key)


# expiring -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expiring:
    row: ReportRow
    reason: str  # expires-within | lift-unverified | removed-by-force
    unverified: tuple[str, ...]  # operators whose lift is not verified (lift-unverified)

    def to_json(self) -> dict[str, Any]:
        o = self.row.order
        return {
            "id": o.id, "reason": self.reason, "status": self.row.status, "lift": fmt_instant(o.end, o.tz),
            "rule": o.rule, "days_remaining": self.row.days_remaining,
            "seconds_remaining": self.row.seconds_remaining, "court": o.court, "case_number": o.case_number,
            "operators": list(o.operators), "unverified_operators": list(self.unverified),
            "lift_by_operator": {r.operator: r.lift for r in self.row.operators},
            "ended": self.row.ended,
        }


def expiring(rows: Iterable[ReportRow], at: datetime, within_seconds: float) -> list[Expiring]:
    """Orders lifting in [T, T + window], then ended orders whose lift no probe has verified.

    An operator counts as unverified when the order was in its zone at some point and no probe
    pass has seen every resolver answer as lifted (or its entries are still published). An
    operator whose zone never carried the order has nothing to lift and is not listed.
    """
    at = at.astimezone(UTC)
    soon, unverified, removed = [], [], []
    for row in rows:
        order = row.order
        if row.status == "removed":
            removed.append(Expiring(row, "removed-by-force", ()))
        elif row.status in ("active", "pending") and seconds_between(order.end, at) <= within_seconds:
            soon.append(Expiring(row, "expires-within", ()))
        elif row.status in ("expired", "lifted"):
            ops = tuple(r.operator for r in row.operators if r.lift in ("unverified", "in-zone"))
            if ops:
                unverified.append(Expiring(row, "lift-unverified", ops))
    soon.sort(key=lambda e: (e.row.order.end, e.row.order.id))
    unverified.sort(key=lambda e: (e.row.order.end, e.row.order.id))
    removed.sort(key=lambda e: (e.row.removal.at if e.row.removal else e.row.order.end, e.row.order.id))
    return soon + unverified + removed


# flat outputs ---------------------------------------------------------------------------------

CSV_FIELDS = [
    "order", "court", "case_number", "applicant", "status", "flag", "start", "lift", "rule", "days_remaining",
    "targets", "url_escalated", "received", "operator", "block", "first_published", "first_serial",
    "block_verified", "time_to_block_seconds", "last_verified", "last_failure", "failures", "lift_state",
    "removed_from_zone", "lift_verified", "time_to_lift_seconds",
    # added in issue 12 (at the end: the columns above are a contract)
    "targets_unicode", "ended", "removed_by", "removed_at", "checksum_reviewed", "time_to_block_note",
    "time_to_block_from_receipt_seconds",
]


# What makes a spreadsheet read a cell as a formula (OWASP, "CSV injection"): `=`, `+`, `-`, `@`
# first, or after leading whitespace, and their fullwidth and small forms (NFKC folds them).
FORMULA_TRIGGERS = frozenset("=+-@")


def spreadsheet_safe(value: object) -> str | int | float:
    """A CSV cell that a spreadsheet shows as text, never runs as a formula.

    Text gets its control characters escaped (as in the table: `\\n`, `\\x1b`; a record stays
    one line a terminal can show) and, when its first character other than whitespace is a
    formula trigger, a leading `'`, which spreadsheets take as "this is text" (OWASP). That
    includes text that legitimately starts with `-`. Numbers the tool computed (a negative
    duration, a serial) stay numbers: a Python int or float cannot carry a formula.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = printable(value, limit=None)
    first = text.lstrip()[:1]
    if first and unicodedata.normalize("NFKC", first)[:1] in FORMULA_TRIGGERS:
        return "'" + text
    return text


def to_csv(rows: Iterable[ReportRow]) -> str:
    """One line per order and operator: what a spreadsheet filters and sorts best.

    Every cell goes through `spreadsheet_safe`: order fields are text from outside (a court name
    `=HYPERLINK(...)` must not become a link, or a command, in the legal team's spreadsheet).
    """
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        j = row.to_json()
        for op in j["per_operator"]:
            writer.writerow({key: spreadsheet_safe(value) for key, value in {
                "order": j["id"], "court": j["court"], "case_number": j["case_number"],
                "applicant": j["applicant"] or "", "status": j["status"], "flag": j["flag"] or "",
                "start": j["start"], "lift": j["lift"], "rule": j["rule"],
                "days_remaining": "" if j["days_remaining"] is None else j["days_remaining"],
                "targets": " ".join(t["name"] for t in j["targets"]),
                "url_escalated": " ".join(j["url_escalated"]), "received": j["received"] or "",
                "operator": op["operator"], "block": op["block"], "first_published": op["first_published"] or "",
                "first_serial": op["first_serial"] or "", "block_verified": op["block_verified"] or "",
                "time_to_block_seconds": "" if op["time_to_block_seconds"] is None else op["time_to_block_seconds"],
                "last_verified": op["last_verified"] or "", "last_failure": op["last_failure"] or "",
                "failures": op["failures"], "lift_state": op["lift"],
                "removed_from_zone": op["removed_from_zone"] or "", "lift_verified": op["lift_verified"] or "",
                "time_to_lift_seconds": "" if op["time_to_lift_seconds"] is None else op["time_to_lift_seconds"],
                "targets_unicode": " ".join(t["unicode_name"] or t["name"] for t in j["targets"]),
                "ended": (j["ended"] or {}).get("how", ""), "removed_by": (j["ended"] or {}).get("by") or "",
                "removed_at": (j["ended"] or {}).get("at") or "",
                "checksum_reviewed": (j["ended"] or {}).get("checksum_reviewed") or "",
                "time_to_block_note": op["time_to_block"] if op["time_to_block_seconds"] is None else "",
                "time_to_block_from_receipt_seconds": "" if op["time_to_block_from_receipt_seconds"] is None
                else op["time_to_block_from_receipt_seconds"],
            }.items()})
    return out.getvalue()
