"""DNS wire format, by hand: queries built once, replies read lazily from their bytes.

Why not dnspython's message objects: a probe pass is 10^5-10^6 queries and the notes measured
dnspython's make_query/to_wire/from_wire at ~63 us a query, which caps a pass at ~7,000 checks/s.
Here each query's wire is built once per check (only the 16-bit ID is patched per send) and only
what a verdict needs is read from a reply: the header (rcode, flags, counts) decides the common
cases, and the sections are walked only when needed. tests/probe/test_wire.py holds every function
here to dnspython's reading of the same bytes (dns.message.from_wire / to_wire).
"""

from __future__ import annotations

import socket

import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from blocker.probe.model import Check

_HEADER_EDNS = b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01"    # RD; QD=1, AN=0, NS=0, AR=1
_HEADER_PLAIN = b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"   # same without the OPT record
# OPT RR: root owner, TYPE 41, UDP payload 1232 (the DNS Flag Day 2020 size), no flags, no options.
_OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, REFUSED = 0, 1, 2, 3, 5
TYPE_A, TYPE_NS, TYPE_CNAME, TYPE_SOA, TYPE_PTR, TYPE_AAAA, TYPE_DNAME, TYPE_OPT = 1, 2, 5, 6, 12, 28, 39, 41
NAME_TYPES = frozenset({TYPE_NS, TYPE_CNAME, TYPE_PTR, TYPE_DNAME})
RCODE_TEXT: tuple[str, ...] = tuple(dns.rcode.to_text(dns.rcode.Rcode.make(i)) for i in range(16))

ID_BYTES: list[bytes] = []


def id_bytes() -> list[bytes]:
    """The 65,536 big-endian IDs as bytes, built once: patching an ID is then one concatenation."""
    if not ID_BYTES:
        ID_BYTES.extend(i.to_bytes(2, "big") for i in range(65536))
    return ID_BYTES


_LENGTH_BYTE: tuple[bytes, ...] = tuple(bytes((i,)) for i in range(64))


def encode_name(name: str) -> bytes:
    """Uncompressed wire form of an ASCII name (with or without its final dot)."""
    text = name.rstrip(".")
    if not text:
        return b"\x00"
    labels = text.encode("ascii").split(b".")
    if not all(0 < len(label) < 64 for label in labels):
        raise ValueError(f"bad label in {name!r}")
    wire = b"".join([_LENGTH_BYTE[len(label)] + label for label in labels]) + b"\x00"
    if len(wire) > 255:
        raise ValueError(f"name too long: {name!r}")
    return wire


class NameWires:
    """encode_name with the parent's wire remembered: names of a pass share a few parents."""

    def __init__(self) -> None:
        self.parents: dict[str, bytes] = {}

    def __call__(self, name: str) -> bytes:
        head, dot, parent = name.rstrip(".").partition(".")
        tail = self.parents.get(parent) if dot else None
        if tail is None or not 0 < len(head) < 64:
            if dot and tail is None:
                self.parents[parent] = encode_name(parent)
            return encode_name(name)
        wire = _LENGTH_BYTE[len(head)] + head.encode("ascii") + tail
        if len(wire) > 255:
            raise ValueError(f"name too long: {name!r}")
        return wire


def qtype_code(qtype: str) -> int:
    return int(dns.rdatatype.from_text(qtype))


class QuerySpec:
    """A check with its query wire built once: everything after the 16-bit ID."""

    __slots__ = ("check", "qtype", "question", "tail")

    def __init__(self, check: Check, qtype: int, qname_wire: bytes | None = None) -> None:
        self.check = check
        self.qtype = qtype
        self.question = (qname_wire or encode_name(check.name)) + qtype.to_bytes(2, "big") + b"\x00\x01"
        self.tail = _HEADER_EDNS + self.question + _OPT

    @property
    def tail_plain(self) -> bytes:
        """The query without EDNS, for the rare server that answers FORMERR to an OPT record."""
        return _HEADER_PLAIN + self.question

    @property
    def qname(self) -> str:
        return self.check.name.lower().rstrip(".") + "."


def read_name(data: bytes, off: int) -> tuple[str, int]:
    """Decode a possibly compressed name: (lower-case text with final dot, offset after it)."""
    labels: list[str] = []
    end = -1
    jumps = 0
    while True:
        length = data[off]
        if length == 0:
            off += 1
            break
        if length >= 0xC0:
            if end < 0:
                end = off + 2
            jumps += 1
            if jumps > 64:
                raise ValueError("compression loop")
            off = ((length & 0x3F) << 8) | data[off + 1]
            continue
        labels.append(data[off + 1: off + 1 + length].decode("latin-1").lower())
        off += 1 + length
    return ".".join(labels) + ".", (end if end >= 0 else off)


def skip_name(data: bytes, off: int) -> int:
    while True:
        length = data[off]
        if length == 0:
            return off + 1
        if length >= 0xC0:
            return off + 2
        off += 1 + length


def rr_spans(data: bytes, off: int, count: int) -> tuple[list[tuple[int, int, int]], int]:
    """(type, rdata offset, rdata length) of `count` records starting at off, and the next offset."""
    out: list[tuple[int, int, int]] = []
    for _ in range(count):
        off = skip_name(data, off)
        rtype = (data[off] << 8) | data[off + 1]
        rdlen = (data[off + 8] << 8) | data[off + 9]
        off += 10
        out.append((rtype, off, rdlen))
        off += rdlen
    if off > len(data):
        raise ValueError("truncated record")
    return out, off


def soa_owners(data: bytes, off: int, count: int) -> tuple[list[str], int]:
    """Owners (lower case, final dot) of the SOA records among `count` records, and the next offset."""
    owners: list[str] = []
    for _ in range(count):
        if data[off] == 0:          # the root name, e.g. OPT: nothing to decode
            off += 1
        else:
            owner, off = read_name(data, off)
            if ((data[off] << 8) | data[off + 1]) == TYPE_SOA:
                owners.append(owner)
        off += 10 + ((data[off + 8] << 8) | data[off + 9])
    if off > len(data):
        raise ValueError("truncated record")
    return owners, off


def ede_codes(data: bytes, off: int, count: int) -> tuple[int, ...]:
    """RFC 8914 info-codes from the OPT record of the additional section (off: section start)."""
    codes: list[int] = []
    for rtype, start, rdlen in rr_spans(data, off, count)[0]:
        if rtype != TYPE_OPT:
            continue
        pos, end = start, start + rdlen
        while pos + 4 <= end:
            code = (data[pos] << 8) | data[pos + 1]
            length = (data[pos + 2] << 8) | data[pos + 3]
            if code == 15 and length >= 2:
                codes.append((data[pos + 4] << 8) | data[pos + 5])
            pos += 4 + length
    return tuple(codes)


def rdata_text(data: bytes, rtype: int, start: int, rdlen: int) -> str:
    """One answer record as "TYPE rdata"; the common types without building dnspython objects."""
    if rtype == TYPE_A and rdlen == 4:
        return "A " + socket.inet_ntop(socket.AF_INET, data[start: start + 4])
    if rtype == TYPE_AAAA and rdlen == 16:
        return "AAAA " + socket.inet_ntop(socket.AF_INET6, data[start: start + 16])
    kind = dns.rdatatype.RdataType.make(rtype)
    if rtype in NAME_TYPES:
        return f"{dns.rdatatype.to_text(kind)} {read_name(data, start)[0]}"
    rdata = dns.rdata.from_wire(dns.rdataclass.IN, kind, data, start, rdlen)
    return f"{dns.rdatatype.to_text(kind)} {rdata.to_text()}"



__all__ = ["FORMERR", "ID_BYTES", "NAME_TYPES", "NOERROR", "NXDOMAIN", "RCODE_TEXT", "REFUSED", "SERVFAIL",
           "TYPE_A", "TYPE_AAAA", "TYPE_CNAME", "TYPE_DNAME", "TYPE_NS", "TYPE_OPT", "TYPE_PTR", "TYPE_SOA",
           "NameWires", "QuerySpec", "ede_codes", "encode_name", "id_bytes", "qtype_code", "rdata_text",
           "read_name", "rr_spans", "skip_name", "soa_owners"]
