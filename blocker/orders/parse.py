"""One order file's bytes -> an `Order`, or every problem found in it.

Strict: a file either yields an `Order` whose every name and date has been checked, or a list of
`OrderError`s that say file, field, line and what to fix. Nothing half-valid gets through. What a
parse depends on beyond the file is all in the `OrderRules` it is given (never the whole config).
"""

from __future__ import annotations

import difflib
import hashlib
import re
import reprlib
from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo

from blocker.orders.legaltime import (
    LegalTimeError,
    Window,
    compute_window,
    parse_date,
    parse_duration,
    parse_instant,
    zone,
)
from blocker.orders.model import Lift, Order, OrderError, Target, make_target
from blocker.orders.names import InvalidName, host_from_url, name_warnings, normalize_name, reserved_for
from blocker.orders.rules import OrderRules
from blocker.orders.yamlio import LineDict, LineList, YamlError, loads_mapping
from blocker.vocab import ACTIONS

ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
FIELDS = {
    "id", "court", "case_number", "decision_date", "applicant", "operators", "start", "duration", "end",
    "timezone", "targets", "action", "lifted", "notes",
}
# Largest free-text fields, in characters (README, "Order files"): generous for any real order,
# small enough that no order makes the audit trail (which records court, case and rule) or a
# report carry megabytes.
TEXT_LIMITS = {"court": 500, "case_number": 200, "applicant": 500, "notes": 10_000, "lifted.reason": 2_000}
MAX_URL = 8_000  # a `url` target (RFC 9110 asks servers to take at least 8,000 octets)
MAX_ERRORS_PER_FILE = 100  # one file cannot fill a terminal, a log or an audit record with errors




class _FileErrors:
    """Collects every problem in one file so that one run reports them all."""

    def __init__(self, path: str, doc: LineDict) -> None:
        self.path, self.doc = path, doc
        self.items: list[OrderError] = []
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


_DOMAIN_KEYS = frozenset({"domain", "subdomains"})
_URL_KEYS = frozenset({"url"})


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
                append(make_target(name, True, "domain", name if name == item else item))
            elif isinstance(item, LineDict) and item.keys() <= _DOMAIN_KEYS and "domain" in item:
                subdomains = item.get("subdomains", True)
                if not isinstance(subdomains, bool):
                    err.add(f"targets[{i}].subdomains", "expected true or false", raw.line_of(i))
                    continue
                name = normalize_name(item["domain"])
                written = str(item["domain"])
                append(make_target(name, subdomains, "domain", name if name == written else written))
            elif isinstance(item, LineDict) and item.keys() == _URL_KEYS:
                append(make_target(host_from_url(item["url"]), False, "url-escalated", str(item["url"])))
            else:
                err.add(f"targets[{i}]", "expected a domain, {domain: NAME, subdomains: BOOL} or {url: URL}",
                        raw.line_of(i))
        except InvalidName as exc:
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
                rules: OrderRules) -> None:
    """Each RPZ owner (`name`, `*.name`) plus the operator's origin must stay a valid DNS name:
    one that does not fit would make the whole zone unloadable, lifting every block in it."""
    if not operators or not isinstance(raw, list) or len(targets) != len(raw):
        return
    longest = max(len(rules.by_id[op].origin) for op in operators)
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


def parse_order(data: bytes, path: str, rules: OrderRules) -> Order | list[OrderError]:
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
    operators = _operators(err, doc.get("operators"), rules.by_id)
    tzname = doc.get("timezone", rules.timezone)
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
            if not rules.by_id[op].redirect:
                err.add("action", f"operator {op!r} has no information page configured (operators.{op}.redirect)")
    window = _window(err, doc, tz, rules) if tz is not None else None
    lifted = _lifted(err, doc.get("lifted"), tz) if "lifted" in doc and tz is not None else None
    targets = _targets(err, doc.get("targets"), rules.reserved_origins)
    _check_fits(err, doc.get("targets"), targets, operators, rules)
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


def _window(err: _FileErrors, doc: LineDict, tz: ZoneInfo, rules: OrderRules) -> Window | None:
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
            extend_to_working_day=rules.extend_to_working_day, holidays_country=rules.holidays_country,
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


_STORED: dict[tuple[str, str, OrderRules], Order | list[OrderError]] = {}
_STORED_MAX = 4096


def parse_stored(content: bytes, path: str, rules: OrderRules) -> Order | list[OrderError]:
    """A version of an order kept in the state, parsed again under the rules in force now (what
    stays in force after its file went bad, what an evidence pack lists, what `evidence` finds
    for an order without a file). The one place that does it: parsed once per (bytes, path,
    rules), since the daemon asks for the same versions on every pass."""
    key = (hashlib.sha256(content).hexdigest(), path, rules)
    hit = _STORED.get(key)
    if hit is None:
        if len(_STORED) >= _STORED_MAX:
            _STORED.clear()
        hit = _STORED[key] = parse_order(content, path, rules)
    return hit
