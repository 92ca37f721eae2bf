"""Response Policy Zone files: rendered as a stream of fixed templates, read back for diffs.

Only names validated by `blocker.names` reach here, and each record comes from a fixed
template, so nothing an order says can inject zone-file syntax. The file depends only on the
entries in force and the serial: an unchanged state renders byte-identical.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blocker.config import Config, OperatorConfig
from blocker.policy import Entry, ZoneContent, ZoneEntries

SERIAL_MOD = 2**32
CNAME_TARGETS = {"nxdomain": ".", "nodata": "*.", "drop": "rpz-drop."}
ACTION_OF_TARGET = {v: k for k, v in CNAME_TARGETS.items()}
_HEADER_RE = re.compile(r"^; content-sha256: ([0-9a-f]{64})$", re.M)
# blocker writes `@ IN SOA`; a zone another writer left in the folder may carry a TTL and/or the
# class (`@ 60 IN SOA`): its serial must count too, or the first render after it could go back.
_SOA_RE = re.compile(r"^@(?:[ \t]+\d+)?(?:[ \t]+IN)?[ \t]+SOA[ \t]+\S+[ \t]+\S+[ \t]+(\d+)[ \t]", re.M)


def _records(action: str, op: OperatorConfig) -> list[str]:
    if action != "redirect":
        return [f"CNAME {CNAME_TARGETS[action]}"]
    page = op.redirect
    if page.cname:
        return [f"CNAME {page.cname}."]
    return [f"A {a}" for a in page.a] + [f"AAAA {a}" for a in page.aaaa]


def _templates(op: OperatorConfig) -> dict[str, tuple[str, ...]]:
    return {action: tuple(_records(action, op)) for action in ("nxdomain", "nodata", "drop", "redirect")}


def body_lines(content: ZoneContent, op: OperatorConfig) -> Iterator[str]:
    """One line per record, canonical order, each with the orders that require it."""
    templates = _templates(op)
    comments: dict[tuple[str, ...], str] = {}
    entries = content.entries
    for owner in content.owners:
        action, ids = entries[owner]
        comment = comments.get(ids)
        if comment is None:
            comment = comments[ids] = " ; " + ",".join(ids) + "\n"
        for record in templates[action]:
            yield f"{owner} {record}{comment}"


@dataclass(frozen=True)
class RenderedZone:
    operator: str
    origin: str
    body: bytes
    checksum: str  # SHA-256 of the body: what changed, independent of the serial
    entries: int  # records in the body
    names: int  # distinct blocked names
    content: ZoneContent | None = field(default=None, compare=False, repr=False)

    def text(self, serial: int, config: Config) -> bytes:
        return header(self, serial, config) + self.body + canary(self.operator, serial)


def canary_owner(operator: str) -> str:
    """A name whose TXT rule carries the serial: probes ask it to learn which version a resolver
    applies (the one check all four resolvers answer alike). Outside special-use TLDs, which
    Unbound answers itself before RPZ."""
    return f"serial.{operator}.canary.blocker"


def canary(operator: str, serial: int) -> bytes:
    # Last line of the file: a zone loaded only in part (Unbound and kresd stop or skip at a bad
    # line) lacks it, so a probe sees the old serial rather than a false "up to date".
    return f'{canary_owner(operator)} TXT "{serial}"\n'.encode("ascii")


def _join_chunked(lines: Iterator[str], size: int = 65536) -> bytes:
    """Join a stream of lines without holding every line object at once (1.5M lines would be
    ~120 MB of small strings): encode in chunks, join the chunks."""
    chunks: list[bytes] = []
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= size:
            chunks.append("".join(batch).encode("ascii"))
            batch.clear()
    chunks.append("".join(batch).encode("ascii"))
    return b"".join(chunks)


def render_body(content: ZoneContent, op: OperatorConfig,
                cache: dict[tuple[Any, ...], RenderedZone] | None = None) -> RenderedZone:
    """The zone body; operators with the same content and templates share one rendering."""
    templates = _templates(op)
    key = (id(content), content.key, tuple((a, templates[a]) for a in sorted(content.actions)))
    hit = cache.get(key) if cache is not None else None
    if hit is not None and hit.content is content:
        return RenderedZone(op.id, op.origin, hit.body, hit.checksum, hit.entries, hit.names, content)
    body = _join_chunked(body_lines(content, op))
    zone = RenderedZone(op.id, op.origin, body, hashlib.sha256(body).hexdigest(), body.count(b"\n"),
                        content.names, content)
    if cache is not None:
        if len(cache) > 16:
            cache.clear()
        cache[key] = zone
    return zone


def header(zone: RenderedZone, serial: int, config: Config) -> bytes:
    soa = config.soa
    return (
        f"; blocker RPZ for operator {zone.operator}: generated from court orders, do not edit.\n"
        f"; names: {zone.names}, records: {zone.entries}\n"
        f"; content-sha256: {zone.checksum}\n"
        f"$ORIGIN {zone.origin}\n"
        f"$TTL {config.rpz_ttl}\n"
        f"@ IN SOA {soa.mname} {soa.rname} {serial} {soa.refresh} {soa.retry} {soa.expire} {soa.minimum}\n"
        f"@ IN NS {config.ns}\n"
    ).encode("ascii")


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


@dataclass(frozen=True)
class ZoneMeta:
    serial: int
    checksum: str | None


def read_meta(path: Path) -> ZoneMeta | None:
    """Serial and content checksum of a zone blocker wrote; None when there is no such file."""
    try:
        with path.open("r", encoding="ascii", errors="replace") as fh:
            head = fh.read(4096)
    except (FileNotFoundError, NotADirectoryError):  # no zone there (yet): publishing will say why
        return None
    soa = _SOA_RE.search(head)
    if soa is None:
        return None
    checksum = _HEADER_RE.search(head)
    return ZoneMeta(int(soa.group(1)), checksum.group(1) if checksum else None)


def read_entries(path: Path) -> ZoneEntries:
    """The entries of a zone blocker wrote (what resolvers were last given), from its comments."""
    entries: ZoneEntries = {}
    try:
        fh = path.open("r", encoding="ascii")
    except (FileNotFoundError, NotADirectoryError):  # no zone there (yet): publishing will say why
        return entries
    with fh:
        for line in fh:
            if line[0] in ";$@\n":
                continue
            record, _, comment = line.partition(" ; ")
            owner, rtype, rdata = record.split(" ", 2)
            if rtype == "TXT":  # the serial canary
                continue
            rdata = rdata.strip()
            action = ACTION_OF_TARGET.get(rdata, "redirect") if rtype == "CNAME" else "redirect"
            if owner not in entries:
                entries[owner] = Entry(action, tuple(comment.strip().split(",")) if comment else ())
    return entries


def structural_check(data: bytes, origin: str) -> list[str]:
    """A cheap check of a rendered zone when named-checkzone is not installed."""
    problems = []
    text = data.decode("ascii", errors="replace")
    if f"$ORIGIN {origin}\n" not in text:
        problems.append("missing $ORIGIN")
    if _SOA_RE.search(text) is None:
        problems.append("missing SOA")
    if "\n@ IN NS " not in text:
        problems.append("missing NS")
    if not text.endswith("\n"):
        problems.append("truncated (no final newline)")
    checksum = _HEADER_RE.search(text)
    if checksum is not None and not problems:
        body_start = text.index("\n", text.index("\n@ IN NS ") + 1) + 1
        body_end = text.rfind("\n", 0, len(text) - 1) + 1  # the canary is the last line
        if not text[body_end:].startswith("serial."):
            problems.append("missing the serial canary as last line")
        elif hashlib.sha256(data[body_start:body_end]).hexdigest() != checksum.group(1):
            problems.append("body does not match its content-sha256")
    return problems
