"""Reading zone files back: the serial and checksum blocker wrote, the entries from its comments,
and a cheap structural check of a whole zone.

A zone folder is writable by others, so every read here refuses what is not a regular file and
never follows a symlink; what a zone says about itself is only trusted where reading the file is
the point (a tamper check, adopting a zone another run wrote).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from blocker.policy import Entry, ZoneEntries
from blocker.zone.render import ACTION_OF_TARGET

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


def _line_entry(line: str) -> Entry | None:
    """The entry one record line gives (None: the serial canary); ValueError on a line that is
    not `owner TYPE rdata[ ; ids]`."""
    record, _, comment = line.partition(" ; ")
    _owner, rtype, rdata = record.split(" ", 2)
    if rtype == "TXT":  # the serial canary
        return None
    rdata = rdata.strip()
    action = ACTION_OF_TARGET.get(rdata, "redirect") if rtype == "CNAME" else "redirect"
    return Entry(action, tuple(comment.strip().split(",")) if comment else ())


def parse_entries_reference(lines: Iterable[str]) -> ZoneEntries:
    """What `_parse_entries` must give: every record line parsed on its own, the first line of an
    owner giving its entry."""
    entries: ZoneEntries = {}
    for line in lines:
        if line[0] in ";$@\n":
            continue
        entry = _line_entry(line)
        owner = line.split(" ", 1)[0]
        if entry is not None and owner not in entries:
            entries[owner] = entry
    return entries


_UNPARSED = Entry("", ())  # a marker: this text after an owner was not parsed yet


def _parse_entries(lines: Iterable[str]) -> ZoneEntries:
    """`parse_entries_reference`, parsing each distinct text after an owner once (a million lines
    share a handful: the action and the ids of an order)."""
    entries: ZoneEntries = {}
    parsed: dict[str, Entry | None] = {}  # the text after the owner -> its entry (None: the canary)
    for line in lines:
        if line[0] in ";$@\n":
            continue
        space = line.find(" ")
        rest = line[space:] if space > 0 else None
        entry = parsed.get(rest, _UNPARSED) if rest is not None else _UNPARSED
        if entry is _UNPARSED:
            entry = _line_entry(line)
            if rest is not None:
                parsed[rest] = entry
        if entry is None:
            continue
        owner = line[:space]
        if owner not in entries:
            entries[owner] = entry
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
        return structural_check_text(data, origin)
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


def structural_check_text(data: bytes, origin: str) -> list[str]:
    """`structural_check` over the decoded text: its reference, and its path for an origin that
    is not ASCII."""
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
