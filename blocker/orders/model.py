"""Court orders as files: parse, validate strictly, and load a whole folder.

A file either yields one `Order` whose every name and date has been checked, or a list of
`OrderError`s that say file, field, line and what to fix. Nothing half-valid gets through.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import gc
import hashlib
import os
import re
import reprlib
import select
import signal
import stat
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from blocker.config.model import ACTIONS, Config
from blocker.orders.legaltime import (
    LegalTimeError,
    Window,
    compute_window,
    fmt_instant,
    parse_date,
    parse_duration,
    parse_instant,
    zone,
)
from blocker.orders.names import NameError_, host_from_url, name_warnings, normalize_name, reserved_for
from blocker.orders.yamlio import DEFAULT_MAX_BYTES, LineDict, LineList, YamlError, loads_mapping
from blocker.textsafe import display_path, printable

ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
FIELDS = {
    "id", "court", "case_number", "decision_date", "applicant", "operators", "start", "duration", "end",
    "timezone", "targets", "action", "lifted", "notes",
}
ORDER_SUFFIXES = (".yaml", ".yml")
# Largest free-text fields, in characters (README, "Order files"): generous for any real order,
# small enough that no order makes the audit trail (which records court, case and rule) or a
# report carry megabytes.
TEXT_LIMITS = {"court": 500, "case_number": 200, "applicant": 500, "notes": 10_000, "lifted.reason": 2_000}
MAX_URL = 8_000  # a `url` target (RFC 9110 asks servers to take at least 8,000 octets)
MAX_ERRORS_PER_FILE = 100  # one file cannot fill a terminal, a log or an audit record with errors
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
    path_escaped: bool = field(default=False, compare=False)

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


_ORDER_FIELDS = tuple(f.name for f in fields(Order) if f.name != "targets")


class _FileErrors:
    """Collects every problem in one file so that one run reports them all."""

    def __init__(self, path: str, doc: LineDict) -> None:
        self.path, self.doc, self.items = path, doc, []
        self.warnings: list[OrderError] = []
        self.dropped = 0
        # Known field -> line of the unknown key that looks like its typo (`duraton:`): what the
        # missing field causes is reported on that line, after the typo, not on line 1 before it.
        self.typos: dict[str, int] = {}

    def add(self, fieldname: str, message: str, line: int | None = None) -> None:
        if len(self.items) >= MAX_ERRORS_PER_FILE:
            if not self.dropped:
                self.items.append(OrderError(self.path, "(file)", f"more problems not listed: at most "
                                             f"{MAX_ERRORS_PER_FILE} are reported per file; fix these first"))
            self.dropped += 1
            return
        top = fieldname.split(".")[0].split("[")[0]
        if line is None and top not in self.doc and top in self.typos:
            line = self.typos[top]
        self.items.append(OrderError(self.path, fieldname, message, line or self.doc.line_of(top)))

    def text(self, key: str, required: bool = True) -> str | None:
        value = self.doc.get(key)
        if value is None:
            if required:
                self.add(key, "required field is missing" if key not in self.doc else "must not be empty")
            return None
        if not isinstance(value, str) or not value.strip():
            self.add(key, f"expected non-empty text, got {_quote(value)}")
            return None
        return _sized(self, key, value.strip())


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 120
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6
_REPR.maxlevel = 3


def _quote(value: Any) -> str:
    """`repr(value)`, short whatever its size (a list of 200,000 items is not spelled out)."""
    return _REPR.repr(value)


def _sized(err: _FileErrors, key: str, value: str, line: int | None = None) -> str | None:
    limit = TEXT_LIMITS.get(key)
    if limit is not None and len(value) > limit:
        err.add(key, f"{len(value)} characters, at most {limit}: give the text in short", line)
        return None
    return value


_new_object = object.__new__
_SET_NAME, _SET_SUBDOMAINS, _SET_KIND, _SET_SOURCE = (
    Target.__dict__[f].__set__ for f in ("name", "subdomains", "kind", "source"))


def _target(name: str, subdomains: bool, kind: str, source: str) -> Target:
    """`Target(...)` at a third of the cost: the slots set directly, not through the four
    `object.__setattr__` calls of a frozen dataclass's `__init__` (a million targets: ~1 s)."""
    target = _new_object(Target)
    _SET_NAME(target, name)
    _SET_SUBDOMAINS(target, subdomains)
    _SET_KIND(target, kind)
    _SET_SOURCE(target, source)
    return target


_DOMAIN_KEYS = frozenset({"domain", "subdomains"})
_URL_KEYS = frozenset({"url"})


def _reserved_origins(config: Config) -> tuple[str, ...]:
    return tuple(sorted({op.origin.rstrip(".") for op in config.operators.values()}))


def _targets(err: _FileErrors, raw: Any, origins: tuple[str, ...] = ()) -> list[Target]:
    """The targets, each normalised; a name at or under a zone origin (`origins`) or the canary
    domain is refused, an IDN that a person should check gets a warning."""
    if not isinstance(raw, LineList) or not raw:
        err.add("targets", "expected a non-empty list of domains or {url: ...} / {domain: ..., subdomains: ...}")
        return []
    out: list[Target] = []
    append = out.append
    # Under a configured origin or the canary (`*.blocker` by default) a name fails the top-level
    # check already, unless an origin is under a real TLD: only those need a look per target.
    suffixes = tuple(o for o in origins if not o.endswith(".blocker"))
    tails = tuple("." + o for o in suffixes)
    for i, item in enumerate(raw):
        count = len(out)
        try:
            if isinstance(item, str):
                name = normalize_name(item)
                # Share one string when the order already wrote the normal form: a million targets
                # are a million strings fewer.
                append(_target(name, True, "domain", name if name == item else item))
            elif isinstance(item, LineDict) and item.keys() <= _DOMAIN_KEYS and "domain" in item:
                subdomains = item.get("subdomains", True)
                if not isinstance(subdomains, bool):
                    err.add(f"targets[{i}].subdomains", "expected true or false", raw.line_of(i))
                    continue
                name = normalize_name(item["domain"])
                written = str(item["domain"])
                append(_target(name, subdomains, "domain", name if name == written else written))
            elif isinstance(item, LineDict) and item.keys() == _URL_KEYS:
                append(_target(host_from_url(item["url"]), False, "url-escalated", str(item["url"])))
            else:
                err.add(f"targets[{i}]", "expected a domain, {domain: NAME, subdomains: BOOL} or {url: URL}",
                        raw.line_of(i))
        except NameError_ as exc:
            text = item.get("domain") if isinstance(item, LineDict) else item
            why = reserved_for(text.lower().rstrip("."), origins) if isinstance(text, str) else None
            err.add(f"targets[{i}]", why or str(exc), raw.line_of(i))
            continue
        if len(out) == count:
            continue
        name = out[-1].name
        if suffixes and (name in suffixes or name.endswith(tails)):
            err.add(f"targets[{i}]", reserved_for(name, origins) or f"{name!r} is reserved", raw.line_of(i))
        elif "xn--" in name:
            err.warnings.extend(OrderError(err.path, f"targets[{i}]", warning, raw.line_of(i))
                                for warning in name_warnings(name))
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


def _check_fits(err: _FileErrors, raw: Any, targets: list[Target], operators: tuple[str, ...],
                config: Config) -> None:
    """Each RPZ owner (`name`, `*.name`) plus the operator's origin must stay a valid DNS name:
    one that does not fit would make the whole zone unloadable, lifting every block in it."""
    if not operators or not isinstance(raw, list) or len(targets) != len(raw):
        return
    longest = max(len(config.operators[op].origin) for op in operators)
    for i, target in enumerate(targets):
        size = len(target.name) + (2 if target.subdomains else 0) + longest
        if size > 253:
            line = raw.line_of(i) if hasattr(raw, "line_of") else None
            err.add(f"targets[{i}]", f"{target.name!r} is too long to block under the zone origin "
                    f"({size} octets with the origin, at most 253)", line)


def _check_urls(err: _FileErrors, raw: Any) -> None:
    """A `url` target is kept as written (the report shows what the court named): bounded too."""
    if not isinstance(raw, LineList):
        return
    for i, item in enumerate(raw):
        url = item.get("url") if isinstance(item, LineDict) else None
        if isinstance(url, str) and len(url) > MAX_URL:
            err.add(f"targets[{i}].url", f"{len(url)} characters, at most {MAX_URL}", raw.line_of(i))


def parse_order(data: bytes, path: str, config: Config) -> Order | list[OrderError]:
    """One order from the bytes of its file, or every problem found in it."""
    try:
        doc = loads_mapping(data)
    except YamlError as exc:
        return [OrderError(path, "(file)", exc.message, exc.line)]
    err = _FileErrors(path, doc)
    for key in doc:
        if key not in FIELDS:
            close = difflib.get_close_matches(str(key), sorted(FIELDS - set(doc)), n=1, cutoff=0.7)
            hint = f"did you mean `{close[0]}`? " if close else ""
            if close:
                err.typos.setdefault(close[0], doc.line_of(key))
            err.add(str(key), f"unknown field: {hint}(allowed: {', '.join(sorted(FIELDS))})", doc.line_of(key))
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
    targets = _targets(err, doc.get("targets"), _reserved_origins(config))
    _check_fits(err, doc.get("targets"), targets, operators, config)
    _check_urls(err, doc.get("targets"))
    if err.items:
        return err.items
    assert order_id and court and case_number and decision and window and tz is not None
    return Order(
        id=order_id, court=court, case_number=case_number, decision_date=decision, applicant=applicant,
        operators=operators, window=window, timezone=tz.key, targets=tuple(targets), action=action,
        lifted=lifted, notes=notes, path=path, digest=hashlib.sha256(data).hexdigest(),
        warnings=tuple(err.warnings),
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
    if _sized(err, "lifted.reason", reason, raw.line_of("reason")) is None:
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
    warnings: list[OrderError] = field(default_factory=list)  # of valid files; never make `ok` false

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class OrderCache:
    """Parsed files keyed by path and (mtime, size, inode): an unchanged file is not re-parsed."""

    entries: dict[str, tuple[tuple[int, int, int], Order | list[OrderError]]] = field(default_factory=dict)


def _order_entries(folder: Path) -> list[os.DirEntry[str]]:
    """Every entry of `folder` named like an order file (hidden ones aside), by name: one
    scandir. Whatever its type: a FIFO, a folder or a dangling link named `x.yaml` is a file a
    person meant as an order, so it is refused with a reason (`_refusal`), never skipped."""
    with os.scandir(folder) as listing:
        found = [e for e in listing if e.name.endswith(ORDER_SUFFIXES) and not e.name.startswith(".")]
    found.sort(key=lambda e: e.name)
    return found


def _undecodable(name: str) -> bool:
    """A name that was not UTF-8 on disk (an SMB or Windows client writing Latin-1): Python
    hands it over with lone surrogates, which SQLite, JSON and UTF-8 logs cannot carry."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def _refusal(folder: Path, entry: os.DirEntry[str]) -> tuple[str, OrderError | None, os.stat_result | None]:
    """The key of one entry, and why it is not an order file (None: a regular file, or a link
    to one: links are followed, as a folder of links into a case archive is a normal layout; the
    content read is what is checked and stored, whatever the link points to)."""
    if _undecodable(entry.name) or _undecodable(str(folder)):
        key = display_path(folder / entry.name)
        return key, OrderError(key, "(file)", "file name is not valid UTF-8: rename the file "
                               "(its name is shown with the undecodable bytes escaped)", path_escaped=True), None
    key = str(folder / entry.name)
    try:
        st = entry.stat()  # follows a link
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return key, OrderError(key, "(file)", "symbolic link loop"), None
        if exc.errno == errno.ENOENT and entry.is_symlink():
            try:
                dest = os.readlink(folder / entry.name)
            except OSError:
                dest = "?"
            return key, OrderError(key, "(file)", f"dangling symbolic link (to {display_path(dest)})"), None
        return key, OrderError(key, "(file)", f"cannot read: {exc.strerror or exc}"), None
    if not stat.S_ISREG(st.st_mode):
        return key, OrderError(key, "(file)", f"is {_kind(st.st_mode)}, not an order file"), None
    return key, None, st


def order_files(folder: Path) -> list[Path]:
    """The order files of `folder` that are regular files (or links to one) with a UTF-8 name."""
    return [folder / e.name for e in _order_entries(folder) if _refusal(folder, e)[1] is None]


def read_order_file(path: Path) -> bytes:
    """The bytes of a regular file, opened without blocking: a FIFO put there between the
    listing and the open must not hang the loader."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise YamlError(f"is {_kind(st.st_mode)}, not an order file")
        # A regular file ignores O_NONBLOCK. The size is capped before the file is read whole.
        chunks, size = [], 0
        while size <= DEFAULT_MAX_BYTES:
            chunk = os.read(fd, min(1 << 20, DEFAULT_MAX_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > DEFAULT_MAX_BYTES:
        raise YamlError(f"file larger than {DEFAULT_MAX_BYTES} bytes")
    return b"".join(chunks)


PARALLEL_MIN_FILES = 64  # fewer files to parse than this: in this process, no worker start-up


def _read_and_parse(key: str, config: Config) -> tuple[Order | list[OrderError], bool]:
    """One file's outcome, and whether it may be cached (a failed read is retried next time)."""
    try:
        return parse_order(read_order_file(Path(key)), key, config), True
    except YamlError as exc:
        return [OrderError(key, "(file)", exc.message, exc.line)], False
    except OSError as exc:
        return [OrderError(key, "(file)", f"cannot read: {exc.strerror or exc}")], False


# A worker process returns each order in a compact form: its targets as a list of names and one
# byte of flags each (subdomains, url-escalated, source written differently), the few sources
# that differ from their name, and the other fields as they are. Pickling a million Target
# objects and rebuilding them through the dataclass costs more than parsing them.
_SUB, _URL, _SOURCE = 1, 2, 4
_WORKER_CONFIG: Config | None = None


def _pack(item: Order | list[OrderError]) -> Any:
    if not isinstance(item, Order):
        return item
    names, flags, sources = [], bytearray(), []
    for t in item.targets:
        names.append(t.name)
        flag = (_SUB if t.subdomains else 0) | (_URL if t.kind == "url-escalated" else 0)
        if t.source != t.name:
            flag |= _SOURCE
            sources.append(t.source)
        flags.append(flag)
    fields = {f: getattr(item, f) for f in _ORDER_FIELDS}
    return fields, names, bytes(flags), sources


def _unpack(packed: Any) -> Order | list[OrderError]:
    if isinstance(packed, list):
        return packed
    fields, names, flags, sources = packed
    more = iter(sources)
    targets = tuple(
        _target(name, bool(flag & _SUB), "url-escalated" if flag & _URL else "domain",
                next(more) if flag & _SOURCE else name)
        for name, flag in zip(names, flags, strict=True))
    return Order(targets=targets, **fields)


def _die_with(parent: int) -> None:
    """A worker must not outlive the process that asked for its work: after a `kill -9` of
    `apply` nobody will read its results, and it would wait on its queue forever (it holds the
    queue's write end itself, so it never sees an end of file). Its own parent is the
    forkserver, which lives as long as the workers do: PR_SET_PDEATHSIG covers it, and a thread
    waiting on a pidfd of the requesting process (or polling it) covers the requester."""
    import ctypes
    import threading

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(1)

    def watch() -> None:
        try:
            fd = os.pidfd_open(parent)
        except (AttributeError, OSError):
            fd = -1
        if fd >= 0:
            select.select([fd], [], [])  # readable once the process has exited
        else:
            while True:
                time.sleep(1.0)
                try:
                    os.kill(parent, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    continue
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _init_worker(config: Config, parent: int | None = None) -> None:
    global _WORKER_CONFIG
    _WORKER_CONFIG = config
    if parent is not None:
        _die_with(parent)
    # A worker only parses, and parsing makes no reference cycle: the cyclic collector would
    # only walk the YAML nodes of each document again and again (~40% of a worker's time).
    gc.disable()


@contextmanager
def _bulk(active: bool) -> Iterator[None]:
    """Around a bulk load: no cyclic collection while a million targets are made (each one
    would walk all of them again), then `gc.freeze()`, so that later collections skip them."""
    if not active:
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _parse_in_worker(keys: list[str]) -> list[tuple[Any, bool]]:
    assert _WORKER_CONFIG is not None
    out = []
    for key in keys:
        item, cacheable = _read_and_parse(key, _WORKER_CONFIG)
        out.append((_pack(item), cacheable))
    return out


def _workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _main_is_safe() -> bool:
    """Can a worker process start without running this program again? Each one imports the
    main module (as `__mp_main__`) unless it is a package's `__main__` (`python -m blocker`);
    a script file must guard its entry point (the `blocker` console script, the bench, pytest
    do): otherwise parse here."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        return name == "__main__" or name.endswith(".__main__")
    path = getattr(main, "__file__", None)
    if path is None:
        return True  # interactive, or `python -c`: nothing to import
    try:
        source = Path(path).read_text(errors="replace")
    except OSError:
        return False
    return "__name__" in source and "__main__" in source


def _parse_parallel(keys: list[str], config: Config, workers: int) -> Iterator[tuple[Order | list[OrderError], bool]]:
    """`_read_and_parse` of every key, in order, by `workers` processes started by forkserver
    (the daemon has threads: a plain fork could copy a lock one of them holds). When the pool
    cannot start or breaks, the files not yet parsed are parsed here: same outcome."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    done = 0
    try:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["blocker.orders.model"])
        size = max(1, min(32, len(keys) // (workers * 8)))  # small batches: the workers finish together
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(config, os.getpid())) as pool:
            futures = [pool.submit(_parse_in_worker, keys[i:i + size]) for i in range(0, len(keys), size)]
            try:
                for future in futures:
                    for packed, cacheable in future.result():
                        done += 1
                        yield _unpack(packed), cacheable
            finally:
                for future in futures:
                    future.cancel()
    except (BrokenProcessPool, OSError, ValueError, ImportError, NotImplementedError):
        # No worker (no semaphores or sockets here, a killed worker, ...): no different outcome.
        pass
    for key in keys[done:]:
        yield _read_and_parse(key, config)


def load_orders(folder: Path, config: Config, cache: OrderCache | None = None, *,
                workers: int | None = None, verify: bool = False) -> LoadResult:
    """Every order file of `folder`, parsed (or taken from `cache` when unchanged on disk).

    When more than `PARALLEL_MIN_FILES` files need parsing, they are parsed by one worker
    process per core (`workers`: how many, whatever the count; 1: all here). Same outcome,
    errors and order. With `verify`, a cached file is read again and kept only if its bytes
    still have the digest parsed: an edit in place that kept size and mtime (`touch -r`) fools
    the stat key, not the digest.
    """
    result = LoadResult()
    if not folder.is_dir():
        result.errors.append(OrderError(display_path(folder), "(folder)", "orders folder does not exist",
                                        path_escaped=True))
        return result
    items: list[Order | list[OrderError]] = []  # per file, in path order
    paths: list[str] = []
    todo: list[tuple[int, str, tuple[int, int, int]]] = []  # (index in items, path, stamp) to parse
    seen_paths: set[str] = set()
    for entry in _order_entries(folder):
        key, refused, st = _refusal(folder, entry)
        seen_paths.add(key)
        paths.append(key)
        if refused is not None or st is None:
            items.append([refused] if refused is not None else [])
            continue
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        hit = cache.entries.get(key) if cache is not None else None
        if hit is not None and hit[0] == stamp and (not verify or _still(key, hit[1])):
            items.append(hit[1])
        else:
            todo.append((len(items), key, stamp))
            items.append([])
    if workers is None:
        workers = _workers() if len(todo) > PARALLEL_MIN_FILES and _main_is_safe() else 1
    keys = [key for _, key, _ in todo]
    with _bulk(len(todo) > PARALLEL_MIN_FILES):
        if workers > 1 and len(todo) > 1:
            outcomes: Iterable[tuple[Order | list[OrderError], bool]] = _parse_parallel(keys, config, min(workers, 8))
        else:
            outcomes = (_read_and_parse(key, config) for key in keys)
        for (index, key, stamp), (item, cacheable) in zip(todo, outcomes, strict=True):
            items[index] = item
            if cache is not None and cacheable:
                cache.entries[key] = (stamp, item)
    parsed: list[Order] = []
    for key, item in zip(paths, items, strict=True):
        if isinstance(item, Order):
            parsed.append(item)
            result.warnings.extend(item.warnings)
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


def _still(key: str, item: Order | list[OrderError]) -> bool:
    """Does the file still hold the bytes `item` was parsed from? (An invalid file's outcome
    has no digest: it is parsed again, and invalid files are few.)"""
    if not isinstance(item, Order):
        return False
    try:
        return hashlib.sha256(read_order_file(Path(key))).hexdigest() == item.digest
    except (OSError, YamlError):
        return False


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
                # A dangling link or a loop appearing is a change too (refused by the loader).
                out.append((name, -1, -1))
                continue
            out.append((name, st.st_mtime_ns, st.st_size))
    return tuple(out)
