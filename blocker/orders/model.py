"""Court orders as data: an `Order` whose every name and date has been checked, its targets, its
lift, and the `OrderError`s of a file that is not one.

This module knows no file format and no configuration: `blocker.orders.parse` builds these from
the bytes of a file under an `OrderRules`, `blocker.orders.load` from a folder. `to_json` is here
because it is the JSON contract (`status --json`, the audit trail's order summary).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from blocker.orders.legaltime import Window, fmt_instant, zone
from blocker.textsafe import printable
from blocker.vocab import Status

# One error line stays short whatever the file holds (a 200,000-element list quoted back, a
# megabyte key): parts cut to these many characters, the whole line within textsafe.MAX_LINE.
_MAX_PATH, _MAX_FIELD, _MAX_MESSAGE = 700, 160, 900

def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


@dataclass(frozen=True)
class OrderError:
    """One problem of one file. `str()` is the one line shown to a person (validate, the daemon's
    log, the `order-invalid` audit record): escaped (textsafe) and bounded (MAX_LINE)."""

    path: str
    field: str
    message: str
    line: int | None = None
    # True when `path` is already display_path's escaped form (a name that is not UTF-8 cannot
    # be kept as it is: JSON, SQLite and the audit trail need text), so str() shows it once.
    path_escaped: bool = dataclasses.field(default=False, compare=False)

    def __post_init__(self) -> None:
        # Bounded once, here: to_json, str() and every copy are then small too.
        object.__setattr__(self, "field", _cut(self.field, _MAX_FIELD))
        object.__setattr__(self, "message", _cut(self.message, _MAX_MESSAGE))

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        path = _cut(self.path, _MAX_PATH) if self.path_escaped else printable(self.path, _MAX_PATH)
        return (f"{path}: {printable(self.field, _MAX_FIELD)}: "
                f"{printable(self.message, _MAX_MESSAGE)}{where}")

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
    # What a person should check but that blocks nothing (an emoji A-label, mixed scripts): shown
    # by `validate`, never a reason to refuse the order.
    warnings: tuple[OrderError, ...] = field(default=(), compare=False, repr=False)

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

    def status_at(self, at: datetime) -> Status:
        if at >= self.end:
            return Status.LIFTED if self.lifted_early else Status.EXPIRED
        return Status.ACTIVE if at >= self.start else Status.PENDING

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



_new_object = object.__new__
_SET_NAME, _SET_SUBDOMAINS, _SET_KIND, _SET_SOURCE = (
    Target.__dict__[f].__set__ for f in ("name", "subdomains", "kind", "source"))


def make_target(name: str, subdomains: bool, kind: str, source: str) -> Target:
    """`Target(...)` at a third of the cost: the slots set directly, not through the four
    `object.__setattr__` calls of a frozen dataclass's `__init__` (a million targets: ~1 s)."""
    target = _new_object(Target)
    _SET_NAME(target, name)
    _SET_SUBDOMAINS(target, subdomains)
    _SET_KIND(target, kind)
    _SET_SOURCE(target, source)
    return target



@dataclass
class LoadResult:
    """The valid orders of a folder, and the problems of the files that are not."""

    orders: dict[str, Order] = field(default_factory=dict)
    errors: list[OrderError] = field(default_factory=list)
    invalid_files: set[str] = field(default_factory=set)
    warnings: list[OrderError] = field(default_factory=list)  # of valid files; never make `ok` false

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class OrderCache:
    """Parsed files keyed by path and (mtime, size, inode): an unchanged file is not re-parsed."""

    entries: dict[str, tuple[tuple[int, int, int], Order | list[OrderError]]] = field(default_factory=dict)

