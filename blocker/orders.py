"""Court orders as files: parse, validate strictly, and load a whole folder.

A file either yields one `Order` whose every name and date has been checked, or a list of
`OrderError`s that say file, field, line and what to fix. Nothing half-valid gets through.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from blocker.config import ACTIONS, Config
from blocker.legaltime import (
    LegalTimeError,
    Window,
    compute_window,
    fmt_instant,
    parse_date,
    parse_duration,
    parse_instant,
    zone,
)
from blocker.names import NameError_, host_from_url, normalize_name
from blocker.yamlio import LineDict, LineList, YamlError, loads_mapping, read_bytes

ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
FIELDS = {
    "id", "court", "case_number", "decision_date", "applicant", "operators", "start", "duration", "end",
    "timezone", "targets", "action", "lifted", "notes",
}
ORDER_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class OrderError:
    path: str
    field: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.path}: {self.field}: {self.message}{where}"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.path, "field": self.field, "message": self.message, "line": self.line}


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    subdomains: bool
    kind: str  # "domain" | "url-escalated"
    source: str  # as written in the order (the URL for url-escalated targets)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "subdomains": self.subdomains, "kind": self.kind, "source": self.source}


@dataclass(frozen=True)
class Lift:
    at: datetime
    reason: str


@dataclass(frozen=True)
class Order:
    id: str
    court: str
    case_number: str
    decision_date: date
    applicant: str | None
    operators: tuple[str, ...]
    window: Window
    timezone: str
    targets: tuple[Target, ...]
    action: str
    lifted: Lift | None
    notes: str | None
    path: str
    digest: str  # SHA-256 of the file bytes: which version of the order was applied

    @property
    def start(self) -> datetime:
        return self.window.start

    @property
    def scheduled_end(self) -> datetime:
        return self.window.scheduled_end

    @property
    def end(self) -> datetime:
        """The instant the order stops: the scheduled lift, or an earlier `lifted.at`."""
        if self.lifted is not None and self.lifted.at < self.window.scheduled_end:
            return self.lifted.at
        return self.window.scheduled_end

    @property
    def lifted_early(self) -> bool:
        return self.lifted is not None and self.lifted.at < self.window.scheduled_end

    @property
    def rule(self) -> str:
        if self.lifted_early:
            assert self.lifted is not None
            return f"lifted: {self.lifted.reason} (scheduled {self.window.rule})"
        return self.window.rule

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.timezone)

    def status_at(self, at: datetime) -> str:
        if at >= self.end:
            return "lifted" if self.lifted_early else "expired"
        return "active" if at >= self.start else "pending"

    def active_at(self, at: datetime) -> bool:
        return self.start <= at < self.end

    def transitions(self) -> tuple[datetime, ...]:
        return (self.start, self.end)

    def to_json(self, at: datetime) -> dict[str, Any]:
        tz = self.tz
        return {
            "id": self.id,
            "status": self.status_at(at),
            "start": fmt_instant(self.start, tz),
            "end": fmt_instant(self.end, tz),
            "scheduled_end": fmt_instant(self.scheduled_end, tz),
            "rule": self.rule,
            "timezone": self.timezone,
            "court": self.court,
            "case_number": self.case_number,
            "decision_date": self.decision_date.isoformat(),
            "applicant": self.applicant,
            "operators": list(self.operators),
            "action": self.action,
            "lifted": None if self.lifted is None else {
                "at": fmt_instant(self.lifted.at, tz), "reason": self.lifted.reason,
            },
            "targets": [t.to_json() for t in self.targets],
            "file": self.path,
            "sha256": self.digest,
        }


class _FileErrors:
    """Collects every problem in one file so that one run reports them all."""

    def __init__(self, path: str, doc: LineDict) -> None:
        self.path, self.doc, self.items = path, doc, []

    def add(self, fieldname: str, message: str, line: int | None = None) -> None:
        top = fieldname.split(".")[0].split("[")[0]
        self.items.append(OrderError(self.path, fieldname, message, line or self.doc.line_of(top)))

    def text(self, key: str, required: bool = True) -> str | None:
        value = self.doc.get(key)
        if value is None:
            if required:
                self.add(key, "required field is missing" if key not in self.doc else "must not be empty")
            return None
        if not isinstance(value, str) or not value.strip():
            self.add(key, f"expected non-empty text, got {value!r}")
            return None
        return value.strip()


def _targets(err: _FileErrors, raw: Any) -> list[Target]:
    if not isinstance(raw, LineList) or not raw:
        err.add("targets", "expected a non-empty list of domains or {url: ...} / {domain: ..., subdomains: ...}")
        return []
    out: list[Target] = []
    for i, item in enumerate(raw):
        where, line = f"targets[{i}]", raw.line_of(i)
        try:
            if isinstance(item, str):
                name = normalize_name(item)
                # Share one string when the order already wrote the normal form: a million targets
                # are a million strings fewer.
                out.append(Target(name, True, "domain", name if name == item else item))
            elif isinstance(item, LineDict) and set(item) <= {"domain", "subdomains"} and "domain" in item:
                subdomains = item.get("subdomains", True)
                if not isinstance(subdomains, bool):
                    err.add(f"{where}.subdomains", "expected true or false", line)
                    continue
                name = normalize_name(item["domain"])
                written = str(item["domain"])
                out.append(Target(name, subdomains, "domain", name if name == written else written))
            elif isinstance(item, LineDict) and set(item) == {"url"}:
                out.append(Target(host_from_url(item["url"]), False, "url-escalated", str(item["url"])))
            else:
                err.add(where, "expected a domain, {domain: NAME, subdomains: BOOL} or {url: URL}", line)
        except NameError_ as exc:
            err.add(where, str(exc), line)
    return out


def _operators(err: _FileErrors, raw: Any, known: Iterable[str]) -> tuple[str, ...]:
    if not isinstance(raw, LineList) or not raw:
        err.add("operators", "expected a non-empty list of operator ids")
        return ()
    known = set(known)
    result: list[str] = []
    for i, op in enumerate(raw):
        if not isinstance(op, str) or op not in known:
            err.add(f"operators[{i}]", f"unknown operator {op!r} (known: {', '.join(sorted(known))})",
                    raw.line_of(i))
        elif op in result:
            err.add(f"operators[{i}]", f"operator {op!r} listed twice", raw.line_of(i))
        else:
            result.append(op)
    return tuple(sorted(result))


def parse_order(data: bytes, path: str, config: Config) -> Order | list[OrderError]:
    """One order from the bytes of its file, or every problem found in it."""
    try:
        doc = loads_mapping(data)
    except YamlError as exc:
        return [OrderError(path, "(file)", exc.message, exc.line)]
    err = _FileErrors(path, doc)
    for key in doc:
        if key not in FIELDS:
            err.add(str(key), f"unknown field (allowed: {', '.join(sorted(FIELDS))})", doc.line_of(key))
    order_id = err.text("id")
    if order_id is not None and not ID_RE.match(order_id):
        err.add("id", f"{order_id!r} is not a valid id (lower-case letters, digits, . _ -; at most 64)")
    court, case_number = err.text("court"), err.text("case_number")
    applicant, notes = err.text("applicant", required=False), err.text("notes", required=False)
    decision = None
    if "decision_date" not in doc:
        err.add("decision_date", "required field is missing")
    elif doc["decision_date"] is None:
        err.add("decision_date", "must not be empty")
    else:
        try:
            decision = parse_date(doc["decision_date"])
        except LegalTimeError as exc:
            err.add("decision_date", str(exc))
    operators = _operators(err, doc.get("operators"), config.operators)
    tzname = doc.get("timezone", config.timezone)
    tz = None
    try:
        if not isinstance(tzname, str):
            raise LegalTimeError(f"expected an IANA time zone name, got {tzname!r}")
        tz = zone(tzname)
    except LegalTimeError as exc:
        err.add("timezone", str(exc))
    action = doc.get("action", "nxdomain")
    if action not in ACTIONS:
        err.add("action", f"expected one of {', '.join(ACTIONS)}, got {action!r}")
    elif action == "redirect":
        for op in operators:
            if not config.operators[op].redirect.configured:
                err.add("action", f"operator {op!r} has no information page configured (operators.{op}.redirect)")
    window = _window(err, doc, tz, config) if tz is not None else None
    lifted = _lifted(err, doc.get("lifted"), tz) if "lifted" in doc and tz is not None else None
    targets = _targets(err, doc.get("targets"))
    if err.items:
        return err.items
    assert order_id and court and case_number and decision and window and tz is not None
    return Order(
        id=order_id, court=court, case_number=case_number, decision_date=decision, applicant=applicant,
        operators=operators, window=window, timezone=tz.key, targets=tuple(targets), action=action,
        lifted=lifted, notes=notes, path=path, digest=hashlib.sha256(data).hexdigest(),
    )


def _window(err: _FileErrors, doc: LineDict, tz: ZoneInfo, config: Config) -> Window | None:
    # Every problem of the three fields is reported in one run, not only the first one.
    ok = True
    if "start" not in doc:
        err.add("start", "required field is missing")
        ok = False
    else:
        try:
            parse_instant(doc["start"], tz)
        except LegalTimeError as exc:
            err.add("start", "must not be empty" if doc["start"] is None else str(exc))
            ok = False
    has_duration, has_end = "duration" in doc, "end" in doc
    key = "duration" if has_duration else "end"
    if has_duration == has_end:
        err.add("duration" if not has_end else "end",
                "give exactly one of `duration` and `end`" + (" (both given)" if has_end else " (neither given)"))
        ok = False
    elif doc[key] is None:
        err.add(key, "must not be empty")
        ok = False
    else:
        try:
            if has_duration:
                parse_duration(doc[key])
            else:
                parse_instant(doc[key], tz)
        except LegalTimeError as exc:
            err.add(key, str(exc))
            ok = False
    if not ok:
        return None
    try:
        return compute_window(
            doc["start"], tz,
            duration_text=doc.get("duration"), end_text=doc.get("end"),
            extend_to_working_day=config.extend_to_working_day, holidays_country=config.holidays_country,
        )
    except LegalTimeError as exc:
        err.add(key, str(exc))
        return None


def _lifted(err: _FileErrors, raw: Any, tz: ZoneInfo) -> Lift | None:
    if not isinstance(raw, LineDict) or set(raw) != {"at", "reason"}:
        err.add("lifted", "expected {at: DATE or DATETIME, reason: TEXT}")
        return None
    reason = raw["reason"]
    if not isinstance(reason, str) or not reason.strip():
        err.add("lifted.reason", "expected non-empty text", raw.line_of("reason"))
        return None
    try:
        at, _ = parse_instant(raw["at"], tz)
    except LegalTimeError as exc:
        err.add("lifted.at", str(exc), raw.line_of("at"))
        return None
    return Lift(at, reason.strip())


@dataclass
class LoadResult:
    """The valid orders of a folder, and the problems of the files that are not."""

    orders: dict[str, Order] = field(default_factory=dict)
    errors: list[OrderError] = field(default_factory=list)
    invalid_files: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class OrderCache:
    """Parsed files keyed by path and (mtime, size, inode): an unchanged file is not re-parsed."""

    entries: dict[str, tuple[tuple[int, int, int], Order | list[OrderError]]] = field(default_factory=dict)


def order_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in ORDER_SUFFIXES and p.is_file()
                  and not p.name.startswith("."))


def load_orders(folder: Path, config: Config, cache: OrderCache | None = None) -> LoadResult:
    result = LoadResult()
    if not folder.is_dir():
        result.errors.append(OrderError(str(folder), "(folder)", "orders folder does not exist"))
        return result
    parsed: list[Order] = []
    seen_paths: set[str] = set()
    for path in order_files(folder):
        key = str(path)
        seen_paths.add(key)
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            hit = cache.entries.get(key) if cache is not None else None
            if hit is not None and hit[0] == stamp:
                item = hit[1]
            else:
                item = parse_order(read_bytes(path), key, config)
                if cache is not None:
                    cache.entries[key] = (stamp, item)
        except YamlError as exc:
            item = [OrderError(key, "(file)", exc.message, exc.line)]
        except OSError as exc:
            item = [OrderError(key, "(file)", f"cannot read: {exc.strerror or exc}")]
        if isinstance(item, Order):
            parsed.append(item)
        else:
            result.errors.extend(item)
            result.invalid_files.add(key)
    if cache is not None:
        for gone in set(cache.entries) - seen_paths:
            del cache.entries[gone]
    by_id: dict[str, list[Order]] = {}
    for order in parsed:
        by_id.setdefault(order.id, []).append(order)
    for order_id, group in sorted(by_id.items()):
        if len(group) == 1:
            result.orders[order_id] = group[0]
            continue
        for order in group:  # which one is meant is for a human to say: none of them is trusted
            others = ", ".join(o.path for o in group if o is not order)
            result.errors.append(OrderError(order.path, "id", f"duplicate id {order_id!r} (also in {others})"))
            result.invalid_files.add(order.path)
    result.errors.sort(key=lambda e: (e.path, e.line or 0))
    return result


def stat_signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """A cheap fingerprint of the folder: the daemon polls it to notice edits within seconds."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return ()
    out = []
    for name in names:
        if name.endswith(ORDER_SUFFIXES):
            try:
                st = os.stat(folder / name)
            except OSError:
                continue
            out.append((name, st.st_mtime_ns, st.st_size))
    return tuple(out)
