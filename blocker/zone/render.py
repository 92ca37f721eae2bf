"""Response Policy Zone files: rendered as a stream of fixed templates, read back for diffs.

Only names validated by `blocker.orders.names` reach here, and each record comes from a fixed
template, so nothing an order says can inject zone-file syntax. The file depends only on the
entries in force and the serial: an unchanged state renders byte-identical.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blocker.config.model import Config, OperatorConfig
from blocker.policy.compute import Entry, ZoneContent, ZoneEntries, sort_key

SERIAL_MOD = 2**32
CNAME_TARGETS = {"nxdomain": ".", "nodata": "*.", "drop": "rpz-drop."}
ACTION_OF_TARGET = {v: k for k, v in CNAME_TARGETS.items()}
_HEADER_RE = re.compile(r"^; content-sha256: ([0-9a-f]{64})$", re.M)
# blocker writes `@ IN SOA`; a zone another writer left in the folder may carry a TTL and/or the
# class (`@ 60 IN SOA`): its serial must count too, or the first render after it could go back.
_SOA_RE = re.compile(r"^@(?:[ \t]+\d+)?(?:[ \t]+IN)?[ \t]+SOA[ \t]+\S+[ \t]+\S+[ \t]+(\d+)[ \t]", re.M)
# The same two patterns over bytes, for the structural check of a whole zone without decoding
# it: `\S` spelled out as what str's `\S` is on ASCII (str's `\s` also holds \x1c-\x1f), and
# any byte above 0x7f matches it like the U+FFFD that decoding with errors="replace" gives.
_HEADER_RE_B = re.compile(rb"^; content-sha256: ([0-9a-f]{64})$", re.M)
_NS_B = rb"[^ \t\n\r\f\v\x1c-\x1f]"
_SOA_RE_B = re.compile(rb"^@(?:[ \t]+[0-9]+)?(?:[ \t]+IN)?[ \t]+SOA[ \t]+" + _NS_B + rb"+[ \t]+" + _NS_B
                       + rb"+[ \t]+([0-9]+)[ \t]", re.M)


class UnsafeOwnerError(ValueError):
    """An owner that is not a plain domain reached the zone writer: the render is refused (the
    zones in place keep serving) and the message names the order that carries it."""


# What an owner may be: `*.` then LDH labels (validated targets hold only these).
# Checked per owner only when the cheap whole-chunk checks below fail: both say the same.
_OWNER_RE = re.compile(r"(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_OWNER_BYTES = b"abcdefghijklmnopqrstuvwxyz0123456789.-*\n"
_SHAPE = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz0123456789\n", b"a" * 36 + b".")
_LONG_LABEL = b"a" * 64


def owner_problem(owner: str, origin: str) -> str | None:
    """Why `owner` must not be written into a zone of `origin` (absolute), or None: not
    host-name syntax, an `rpz-` label (a trigger or action, not a domain), at or under an
    origin or the canary domain."""
    from blocker.orders.names import RPZ_LABEL_PREFIX, reserved_for

    if not isinstance(owner, str) or not owner.isascii() or not _OWNER_RE.match(owner):
        return f"{owner!r} is not a plain domain name"
    if len(owner) + len(origin) > 253:
        return f"{owner!r} is too long under the origin {origin}"
    labels = owner.split(".")
    for label in labels:
        if label.startswith(RPZ_LABEL_PREFIX):
            return f"{owner!r} has the RPZ trigger/action label {label!r}"
    return reserved_for(owner.removeprefix("*."), (origin.rstrip("."),))


def _check_chunk(part: list[str], origin: str, tails: tuple[bytes, ...]) -> bool:
    """True when every owner of `part` is plain: one join, then C-speed scans of it (the alphabet
    by bytes.translate; the same bytes with letters and digits as `a` and newlines as dots,
    searched for an empty label, a hyphen at a label's edge, a label over 63)."""
    try:
        data = b"\n" + "\n".join(part).encode("ascii") + b"\n"
    except (UnicodeEncodeError, TypeError):
        return False
    if data.translate(None, _OWNER_BYTES) or b"rpz-" in data or data.count(b"\n") != len(part) + 1:
        return False  # (a newline inside an owner would pass for two owners)
    shape = data.translate(_SHAPE)
    return (b".." not in shape and b"-." not in shape and b".-" not in shape and _LONG_LABEL not in shape
            and data.count(b"*") == data.count(b"\n*.") and not any(t in data for t in tails))


def _tails(origin: str) -> tuple[bytes, ...]:
    rel = origin.rstrip(".")
    return (f".{rel}\n".encode(), f"\n{rel}\n".encode(), b".canary.blocker\n", b"\ncanary.blocker\n")


def check_owners(owners: list[str], entries: ZoneEntries, origin: str, tails: tuple[bytes, ...] = ()) -> None:
    """Second line of defence behind order validation: every owner is a plain domain, or
    UnsafeOwnerError naming its orders. The careful per-owner check runs only when the cheap
    scan of `_check_chunk` fails. The length of a whole name under the origin is order
    validation's (`_check_fits`), and named-checkzone's."""
    if owners and _check_chunk(owners, origin, tails or _tails(origin)):
        return
    for owner in owners:
        why = owner_problem(owner, origin)
        if why is not None:
            entry = entries.get(owner)
            ids = ", ".join(entry.order_ids) if entry is not None and entry.order_ids else "unknown"
            raise UnsafeOwnerError(f"order {ids}: {why}: refusing to render the zone {origin} "
                                   "(the zones in place keep serving)")


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
        # One join, one copy of the body (`a + b + c` would make two).
        return b"".join((header(self, serial, config), self.body, canary(self.operator, serial)))


def canary_owner(operator: str) -> str:
    """A name whose TXT rule carries the serial: probes ask it to learn which version a resolver
    applies (the one check all four resolvers answer alike). Outside special-use TLDs, which
    Unbound answers itself before RPZ."""
    return f"serial.{operator}.canary.blocker"


def canary(operator: str, serial: int) -> bytes:
    # Last line of the file: a zone loaded only in part (Unbound and kresd stop or skip at a bad
    # line) lacks it, so a probe sees the old serial rather than a false "up to date".
    return f'{canary_owner(operator)} TXT "{serial}"\n'.encode("ascii")


class _Suffixes(dict):  # type: ignore[type-arg]
    """Entry -> what follows the owner on its line (" CNAME . ; ids\n"), made on first need;
    an entry whose action has several records (redirect to A and AAAA) gets one per record."""

    def __init__(self, templates: dict[str, tuple[str, ...]]) -> None:
        super().__init__()
        self.templates = templates
        self.comments: dict[tuple[str, ...], str] = {}
        self.multi = False

    def __missing__(self, entry: Entry) -> str | tuple[str, ...]:
        action, ids = entry
        comment = self.comments.get(ids)
        if comment is None:
            comment = self.comments[ids] = " ; " + ",".join(ids) + "\n"
        records = self.templates[action]
        value: str | tuple[str, ...]
        if len(records) == 1:
            value = " " + records[0] + comment
        else:
            value = tuple(" " + record + comment for record in records)
            self.multi = True
        self[entry] = value
        return value


def _render(owners: list[str], entries: ZoneEntries, templates: dict[str, tuple[str, ...]],
            size: int = 65536, origin: str | None = None) -> bytes:
    """Exactly the bytes of `body_lines` joined, faster: what follows the owner on its line(s)
    is made once per distinct entry, the owners and those suffixes are interleaved by slice
    assignment, joined and encoded a chunk at a time into one growing buffer (no list of
    chunks to join: that would hold the body twice). With `origin`, each chunk's owners are
    checked first (`check_owners`), while they are in the cache anyway."""
    out = io.BytesIO()
    suffixes = _Suffixes(templates)
    tails = _tails(origin) if origin is not None else ()
    for start in range(0, len(owners), size):
        part = owners[start:start + size]
        if origin is not None:
            check_owners(part, entries, origin, tails)
        sufs = list(map(suffixes.__getitem__, map(entries.__getitem__, part)))
        if not suffixes.multi:
            pieces: list[str] = [""] * (2 * len(part))
            pieces[0::2] = part
            pieces[1::2] = sufs  # type: ignore[assignment]
        else:
            pieces = []
            for owner, suf in zip(part, sufs, strict=True):
                if type(suf) is str:
                    pieces += (owner, suf)
                else:
                    for line in suf:
                        pieces += (owner, line)
        out.write("".join(pieces).encode("ascii"))
        del sufs, pieces
    return out.getvalue()


def _owner_lines(owner: str, entry: Entry, templates: dict[str, tuple[str, ...]]) -> bytes:
    comment = " ; " + ",".join(entry.order_ids) + "\n"
    return "".join(f"{owner} {record}{comment}" for record in templates[entry.action]).encode("ascii")


def _find_lines(body: bytes, key: str, owner: bytes, lo: int) -> tuple[int, int]:
    """The byte range of `owner`'s lines in a rendered body (canonical order, one owner's
    records together), found by binary search over line starts from `lo`: (start, start)
    when the owner is absent, start being where its lines would go."""
    hi = len(body)
    while lo < hi:
        mid = (lo + hi) // 2
        start = body.rfind(b"\n", lo, mid) + 1 or lo
        if sort_key(body[start:body.index(b" ", start)].decode("ascii")) < key:
            lo = body.index(b"\n", start) + 1
        else:
            hi = start
    end, head = lo, owner + b" "
    while body.startswith(head, end):
        end = body.index(b"\n", end) + 1
    return lo, end


def _patch_body(body: bytes, touched: Iterable[str], entries: ZoneEntries,
                templates: dict[str, tuple[str, ...]]) -> tuple[bytes, int]:
    """`body` with the lines of the `touched` owners replaced by what `entries` gives them
    (nothing for an owner no longer there), and the change in the number of records."""
    pieces: list[Any] = []
    view = memoryview(body)
    at = 0
    delta = 0
    for owner in sorted(touched, key=sort_key):
        start, end = _find_lines(body, sort_key(owner), owner.encode("ascii"), at)
        entry = entries.get(owner)
        lines = _owner_lines(owner, entry, templates) if entry is not None else b""
        delta += lines.count(b"\n") - body.count(b"\n", start, end)
        pieces += (view[at:start], lines)
        at = end
    pieces.append(view[at:])
    return b"".join(pieces), delta


def _patch_base(content: ZoneContent, templates: dict[str, tuple[str, ...]],
                cache: dict[tuple[Any, ...], RenderedZone]) -> RenderedZone | None:
    """A cached rendering of the content `content` was patched from, made with the same
    templates for every action it holds: the new body is that one with a few lines changed."""
    base = content.patched_from() if content.patched_from is not None else None
    if base is None or content.touched is None or len(content.touched) > max(1000, len(content.owners) // 64):
        return None
    for key, zone in list(cache.items()):  # a snapshot: the daemon renders operators at once
        if zone.content is base and all(templates[action] == records for action, records in key[2]):
            return zone
    return None


def render_body(content: ZoneContent, op: OperatorConfig,
                cache: dict[tuple[Any, ...], RenderedZone] | None = None) -> RenderedZone:
    """The zone body; operators with the same content and templates share one rendering, and a
    content patched from an earlier one patches that one's rendering."""
    templates = _templates(op)
    key = (id(content), content.key, tuple((a, templates[a]) for a in sorted(content.actions)))
    hit = cache.get(key) if cache is not None else None
    if hit is not None and hit.content is content:
        return RenderedZone(op.id, op.origin, hit.body, hit.checksum, hit.entries, hit.names, content)
    base = _patch_base(content, templates, cache) if cache is not None else None
    if base is not None:
        assert content.touched is not None
        check_owners(sorted(o for o in content.touched if o in content.entries), content.entries, op.origin)
        body, delta = _patch_body(base.body, content.touched, content.entries, templates)
        records = base.entries + delta
    else:
        body = _render(content.owners, content.entries, templates, origin=op.origin)
        records = body.count(b"\n")
    zone = RenderedZone(op.id, op.origin, body, hashlib.sha256(body).hexdigest(), records, content.names, content)
    if cache is not None:
        if len(cache) > 16:
            cache.clear()
        cache[key] = zone
    return zone


def prune_renderings(cache: dict[tuple[Any, ...], RenderedZone], keep: Iterable[RenderedZone]) -> None:
    """Drop the cached renderings no zone in `keep` uses (each holds a whole zone): what a plan
    uses is what the next plan patches."""
    wanted = {id(zone.content) for zone in keep if zone.content is not None}
    for key in [k for k, zone in list(cache.items()) if id(zone.content) not in wanted]:
        cache.pop(key, None)  # (another thread may have dropped it: the daemon plans operators at once)


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


def read_regular(path: Path, limit: int | None = None) -> bytes | None:
    """The bytes of `path` (the first `limit` of them), or None when it is not a regular file:
    missing, a directory, a symlink (not followed: a zone file is never one of ours), a FIFO
    (opened without blocking), a device, or unreadable. A zone folder is writable by others."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read() if limit is None else fh.read(limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_meta(path: Path) -> ZoneMeta | None:
    """Serial and content checksum of a zone blocker wrote; None when there is no such file."""
    data = read_regular(path, 4096)
    if data is None:  # no zone there (yet), or not a file: publishing will say why
        return None
    head = data.decode("ascii", errors="replace")
    soa = _SOA_RE.search(head)
    if soa is None:
        return None
    checksum = _HEADER_RE.search(head)
    return ZoneMeta(int(soa.group(1)), checksum.group(1) if checksum else None)


def _parse_entries(lines: Iterable[str]) -> ZoneEntries:
    entries: ZoneEntries = {}
    parsed: dict[str, Entry | None] = {}  # the text after the owner -> its entry (None: the canary)
    for line in lines:
        if line[0] in ";$@\n":
            continue
        space = line.find(" ")
        rest = line[space:] if space > 0 else None
        entry = parsed.get(rest, False) if rest is not None else False
        if entry is False:
            record, _, comment = line.partition(" ; ")
            _owner, rtype, rdata = record.split(" ", 2)
            if rtype == "TXT":  # the serial canary
                entry = None
            else:
                rdata = rdata.strip()
                action = ACTION_OF_TARGET.get(rdata, "redirect") if rtype == "CNAME" else "redirect"
                entry = Entry(action, tuple(comment.strip().split(",")) if comment else ())
            if rest is not None:
                parsed[rest] = entry
        if entry is None:
            continue
        owner = line[:space]
        if owner not in entries:
            entries[owner] = entry  # type: ignore[assignment]
    return entries


def read_entries(path: Path) -> ZoneEntries:
    """The entries of a zone blocker wrote (what resolvers were last given), from its comments."""
    try:
        fh = path.open("r", encoding="ascii")
    except (FileNotFoundError, NotADirectoryError):  # no zone there (yet): publishing will say why
        return {}
    with fh:
        return _parse_entries(fh)


def entries_from_bytes(data: bytes) -> ZoneEntries:
    """`read_entries` of a zone already read: the same text decoding, line for line."""
    with io.TextIOWrapper(io.BytesIO(data), encoding="ascii") as fh:
        return _parse_entries(fh)


def structural_check(data: bytes, origin: str) -> list[str]:
    """A cheap check of a rendered zone when named-checkzone is not installed."""
    try:
        origin_line = f"$ORIGIN {origin}\n".encode("ascii")
    except UnicodeEncodeError:
        return _structural_check_text(data, origin)
    # Over the bytes, as the text check below does over the decoded text (one character per
    # byte, so the same positions): no 45 MB decode, no copy of the body to hash it.
    problems = []
    if origin_line not in data:
        problems.append("missing $ORIGIN")
    if _SOA_RE_B.search(data) is None:
        problems.append("missing SOA")
    if b"\n@ IN NS " not in data:
        problems.append("missing NS")
    if not data.endswith(b"\n"):
        problems.append("truncated (no final newline)")
    checksum = _HEADER_RE_B.search(data)
    if checksum is not None and not problems:
        body_start = data.index(b"\n", data.index(b"\n@ IN NS ") + 1) + 1
        body_end = data.rfind(b"\n", 0, len(data) - 1) + 1  # the canary is the last line
        if not data.startswith(b"serial.", body_end):
            problems.append("missing the serial canary as last line")
        elif hashlib.sha256(memoryview(data)[body_start:body_end]).hexdigest() != checksum.group(1).decode():
            problems.append("body does not match its content-sha256")
    return problems


def _structural_check_text(data: bytes, origin: str) -> list[str]:
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
