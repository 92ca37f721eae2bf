"""Response Policy Zone files rendered as a stream of fixed templates: the reference and the fast path.

Only names validated by `blocker.orders.names` reach here (and `blocker.zone.admit` checks them
again), and each record comes from a fixed template, so nothing an order says can inject zone-file
syntax. The file depends only on the entries in force and the serial: an unchanged state renders
byte-identical.

`body_lines` is the reference: one line per record, obviously right. `render_body` is what runs:
the same bytes made a chunk at a time (`_render`), or, for a content patched from an earlier one,
that one's rendering with a few lines replaced (`_patch_body`). tests/zone property-tests that
both give exactly `reference_body`.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from blocker.config.model import Config, OperatorConfig
from blocker.policy import Entry, ZoneContent, ZoneEntries, sort_key
from blocker.vocab import ACTIONS
from blocker.zone.admit import check_owners, origin_tails

CNAME_TARGETS = {"nxdomain": ".", "nodata": "*.", "drop": "rpz-drop."}
ACTION_OF_TARGET = {v: k for k, v in CNAME_TARGETS.items()}


def _records(action: str, op: OperatorConfig) -> list[str]:
    if action != "redirect":
        return [f"CNAME {CNAME_TARGETS[action]}"]
    page = op.redirect
    if page.cname:
        return [f"CNAME {page.cname}."]
    return [f"A {a}" for a in page.a] + [f"AAAA {a}" for a in page.aaaa]


def _templates(op: OperatorConfig) -> dict[str, tuple[str, ...]]:
    return {action: tuple(_records(action, op)) for action in ACTIONS}


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


def reference_body(content: ZoneContent, op: OperatorConfig) -> bytes:
    """The body `render_body` must give, byte for byte: `body_lines` joined."""
    return "".join(body_lines(content, op)).encode("ascii")


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


class _Suffixes(dict[Entry, str | tuple[str, ...]]):
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
    tails = origin_tails(origin) if origin is not None else ()
    for start in range(0, len(owners), size):
        part = owners[start:start + size]
        if origin is not None:
            check_owners(part, entries, origin, tails)
        sufs = list(map(suffixes.__getitem__, map(entries.__getitem__, part)))
        if not suffixes.multi:
            pieces: list[str] = [""] * (2 * len(part))
            pieces[0::2] = part
            pieces[1::2] = cast(list[str], sufs)  # no entry has several records: all are str
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

