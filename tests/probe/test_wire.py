"""blocker.probe.wire against dnspython: every byte the engine sends and every field it reads from a
reply must be what dns.message.from_wire / to_wire make of the same bytes (compression included)."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocker.probe.model import Check
from blocker.probe.wire import (
    RCODE_TEXT,
    NameWires,
    QuerySpec,
    ede_codes,
    encode_name,
    id_bytes,
    qtype_code,
    rdata_text,
    read_name,
    rr_spans,
    skip_name,
    soa_owners,
)
from tests.support.properties import examples

LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=63)
SHORT_LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
# Names of a few labels over a small set of parents, so a message compresses them against each other.
NAME = st.builds(lambda head, parent: ".".join([*head, parent]),
                 st.lists(SHORT_LABEL, min_size=0, max_size=3), st.sampled_from(["example.gg", "rpz.blocker", "gg"]))
QTYPE = st.sampled_from(["A", "AAAA", "TXT", "MX", "NS", "SOA", "CNAME", "HTTPS"])


@given(st.lists(LABEL, min_size=1, max_size=4))
def test_encode_name_matches_dnspython(labels: list[str]) -> None:
    name = ".".join(labels)
    assert encode_name(name) == dns.name.from_text(name).to_wire()
    assert encode_name(name + ".") == encode_name(name)


@pytest.mark.parametrize("bad", ["a..b", "x" * 64 + ".gg", ".".join(["x" * 63] * 4), "é.gg"])
def test_encode_name_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        encode_name(bad)


@given(st.lists(NAME, min_size=1, max_size=20))
def test_name_wires_with_shared_parents_equal_encode_name(names: list[str]) -> None:
    wires = NameWires()
    assert [wires(name) for name in names] == [encode_name(name) for name in names]


@given(NAME, QTYPE, st.integers(0, 65535))
def test_query_wire_is_the_query_dnspython_reads(name: str, qtype: str, qid: int) -> None:
    spec = QuerySpec(Check(name, "resolves", None, qtype=qtype), qtype_code(qtype))
    for wire, edns in ((id_bytes()[qid] + spec.tail, 0), (id_bytes()[qid] + spec.tail_plain, -1)):
        query = dns.message.from_wire(wire)
        assert query.id == qid
        assert query.flags == dns.flags.RD and query.opcode() == 0
        assert [(q.name, q.rdtype, q.rdclass) for q in query.question] == [
            (dns.name.from_text(name), dns.rdatatype.from_text(qtype), dns.rdataclass.IN)]
        assert query.edns == edns and not query.answer and not query.authority
        if edns == 0:
            assert query.payload == 1232 and query.ednsflags == 0 and not query.options
    assert spec.qname == name + "."


def _rdata(rtype: str, value: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text(dns.rdataclass.IN, rtype, value)


RECORD = st.one_of(
    st.tuples(NAME, st.just("A"), st.ip_addresses(v=4).map(str)),
    st.tuples(NAME, st.just("AAAA"), st.ip_addresses(v=6).map(str)),
    st.tuples(NAME, st.just("CNAME"), NAME.map(lambda n: n + ".")),
    st.tuples(NAME, st.just("NS"), NAME.map(lambda n: n + ".")),
    st.tuples(NAME, st.just("TXT"), st.text(alphabet="abc xyz0123", max_size=30).map(lambda t: f'"{t}"')),
    st.tuples(NAME, st.just("MX"), st.builds(lambda p, n: f"{p} {n}.", st.integers(0, 65535), NAME)),
)
SOA = st.tuples(NAME, st.just("SOA"), st.builds(lambda m, s: f"{m}. hostmaster.{m}. {s} 3600 600 86400 60",
                                                NAME, st.integers(0, 2**32 - 1)))


def _message(qname: str, qtype: str, rcode: int, answer: list[tuple[str, str, str]],
             authority: list[tuple[str, str, str]], additional: list[tuple[str, str, str]],
             ede: list[int] | None) -> tuple[dns.message.Message, bytes]:
    query = dns.message.make_query(qname, qtype, use_edns=0, payload=1232)
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.Rcode.make(rcode))
    for section, records in ((response.answer, answer), (response.authority, authority),
                             (response.additional, additional)):
        for owner, rtype, value in records:   # one RRset per owner and type, as a server writes them
            rdata = _rdata(rtype, value)
            response.find_rrset(section, dns.name.from_text(owner), dns.rdataclass.IN, rdata.rdtype,
                                create=True).add(rdata, 300)
    if ede is not None:
        response.use_edns(0, payload=1232, options=[dns.edns.EDEOption(code) for code in ede])
    wire = response.to_wire()
    return dns.message.from_wire(wire), wire


@settings(max_examples=examples(150))
@given(NAME, QTYPE, st.sampled_from([0, 2, 3, 5]), st.lists(RECORD, max_size=6), st.lists(SOA | RECORD, max_size=3),
       st.lists(SOA | RECORD, max_size=3), st.none() | st.lists(st.integers(0, 30), max_size=3))
def test_reply_fields_read_from_the_wire_are_dnspython_s(qname: str, qtype: str, rcode: int,
                                                         answer: list[tuple[str, str, str]],
                                                         authority: list[tuple[str, str, str]],
                                                         additional: list[tuple[str, str, str]],
                                                         ede: list[int] | None) -> None:
    parsed, wire = _message(qname, qtype, rcode, answer, authority, additional, ede)
    assert RCODE_TEXT[wire[3] & 0x0F] == dns.rcode.to_text(parsed.rcode())
    counts = [(wire[i] << 8) | wire[i + 1] for i in (4, 6, 8, 10)]
    assert counts[0] == 1
    # The question: the name read back (compression pointers followed) and skipped alike.
    name, after = read_name(wire, 12)
    assert name == parsed.question[0].name.to_text().lower() and skip_name(wire, 12) == after
    off = after + 4
    # Answer: one (type, rdata offset, length) per record, and each as dnspython writes it.
    spans, off = rr_spans(wire, off, counts[1])
    expected = [(rrset.rdtype, rdata) for rrset in parsed.answer for rdata in rrset]
    assert [t for t, _, _ in spans] == [int(t) for t, _ in expected]
    assert [rdata_text(wire, t, s, n) for t, s, n in spans] == [
        f"{dns.rdatatype.to_text(t)} {rdata.to_text()}" for t, rdata in expected]
    # Authority: the owners of its SOA records.
    owners, off = soa_owners(wire, off, counts[2])
    assert owners == [rrset.name.to_text() for rrset in parsed.authority
                      for _ in rrset if rrset.rdtype == dns.rdatatype.SOA]
    # Additional: the extended error codes of the OPT record, and its SOA owners.
    want = [opt.code for opt in parsed.options if isinstance(opt, dns.edns.EDEOption)]
    assert list(ede_codes(wire, off, counts[3])) == [int(code) for code in want]
    assert soa_owners(wire, off, counts[3])[0] == [
        rrset.name.to_text() for rrset in parsed.additional for _ in rrset if rrset.rdtype == dns.rdatatype.SOA]


def test_compression_loop_is_refused() -> None:
    wire = b"\x00" * 12 + b"\xc0\x0c"          # a pointer to itself
    with pytest.raises(ValueError, match="compression loop"):
        read_name(wire, 12)


def test_truncated_record_is_refused() -> None:
    _, wire = _message("a.example.gg", "A", 0, [("a.example.gg", "A", "192.0.2.1")], [], [], None)
    question_end = skip_name(wire, 12) + 4
    answer_end = rr_spans(wire, question_end, 1)[1]
    with pytest.raises(ValueError, match="truncated record"):
        rr_spans(wire[:answer_end - 2], question_end, 1)
