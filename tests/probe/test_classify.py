"""Classification of real resolver replies (tests/probe/data, kept honest by test_replies_live.py):
no daemon, no engine, no timing."""

from __future__ import annotations

import pytest

from blocker.probe.classify import classify_reply
from blocker.probe.model import Check, Signature
from tests.probe.replies import CASES, ORIGIN, RESOLVER_MODES, load, signature

RESOLVERS = tuple(RESOLVER_MODES)


def reply(resolver: str, case: str) -> bytes:
    wire = load(resolver, case)
    assert wire is not None, f"no stored reply {resolver}-{case}"
    return wire


def verdict(check: Check, wire: bytes, mode: str) -> str | None:
    return classify_reply(check, wire, signature(mode))[0]


BLOCK_NX = Check("blocked.example.gg", "blocked", "nxdomain")
LIFTED_NX = Check("blocked.example.gg", "resolves", None)


def test_every_stored_reply_gets_its_verdict_on_its_own_resolver() -> None:
    """What a probe pass finds, case by case, with the resolver's own signature mode."""
    wrong = []
    for resolver, mode in RESOLVER_MODES.items():
        for case, (name, qtype, action) in CASES.items():
            wire = load(resolver, case)
            if wire is None:
                assert action == "drop" and resolver != "kresd", f"{resolver} {case}: no stored reply"
                continue
            if action:
                got = verdict(Check(name, "blocked", action, qtype=qtype), wire, mode)
                # Knot Resolver 5 ignores an RPZ CNAME to a real name (resolverlib's compat table).
                want = "not-blocked" if (resolver, case) == ("kresd", "redirect-cname") else "blocked"
            else:
                got, want = verdict(Check(name, "resolves", None, qtype=qtype), wire, mode), "resolves"
            if got != want:
                wrong.append(f"{resolver} {case}: {got}, want {want}")
    assert not wrong, "\n".join(wrong)


def test_unbound_empty_authority_is_a_block_only_where_the_signature_says_so() -> None:
    wire = reply("unbound", "blocked")
    assert verdict(BLOCK_NX, wire, "empty") == "blocked"
    assert verdict(BLOCK_NX, wire, "any") == "blocked"
    # On a BIND-like signature an empty authority proves nothing either way.
    assert verdict(BLOCK_NX, wire, "rpz") == "not-blocked"
    assert verdict(LIFTED_NX, wire, "rpz") == "error"
    assert verdict(LIFTED_NX, wire, "empty") == "overblocked"


@pytest.mark.parametrize("resolver", RESOLVERS)
def test_policy_marks_hold_in_every_mode(resolver: str) -> None:
    """BIND's additional SOA, Knot's RPZ SOA + EDE and PowerDNS's EDE cannot be natural."""
    wire = reply(resolver, "blocked")
    nodata = reply(resolver, "nodata")
    modes = ("rpz", "empty", "any") if resolver != "unbound" else ("empty", "any")
    for mode in modes:
        assert verdict(BLOCK_NX, wire, mode) == "blocked", mode
        assert verdict(LIFTED_NX, wire, mode) == "overblocked", mode
        assert verdict(Check("nodata.example.gg", "blocked", "nodata"), nodata, mode) == "blocked", mode
        assert verdict(Check("nodata.example.gg", "resolves", None), nodata, mode) == "overblocked", mode


@pytest.mark.parametrize("resolver", RESOLVERS)
def test_natural_negative_answers_are_never_blocks(resolver: str) -> None:
    nx = reply(resolver, "nxdomain")
    nodata = reply(resolver, "nodata-natural")
    for mode in ("rpz", "empty", "any"):
        assert verdict(Check("absent.example.gg", "resolves", None), nx, mode) == "resolves"
        assert verdict(Check("absent.example.gg", "blocked", "nxdomain"), nx, mode) == "not-blocked"
        assert verdict(Check("www.example.gg", "resolves", None, qtype="AAAA"), nodata, mode) == "resolves"
        assert verdict(Check("www.example.gg", "blocked", "nodata", qtype="AAAA"), nodata, mode) == "not-blocked"


def test_natural_nxdomain_names_the_real_zone() -> None:
    outcome = classify_reply(Check("absent.example.gg", "resolves", None), reply("unbound", "nxdomain"),
                             signature("empty"))
    assert outcome[1] == "NXDOMAIN" and "example.gg." in outcome[3]


@pytest.mark.parametrize("resolver", RESOLVERS)
def test_another_operators_zone_blocks_all_the_same(resolver: str) -> None:
    wire = reply(resolver, "other-zone")
    outcome = classify_reply(Check("late.example.gg", "resolves", None), wire, signature(RESOLVER_MODES[resolver]))
    assert outcome[0] == "overblocked"
    if resolver == "bind":  # BIND names the policy zone that rewrote the answer
        assert "free.rpz.blocker." in outcome[3]


def test_redirect_needs_a_known_target() -> None:
    wire = reply("unbound", "redirect")
    check = Check("redir.example.gg", "blocked", "redirect")
    assert verdict(check, wire, "empty") == "blocked"
    assert classify_reply(check, wire, signature("empty"))[2] == ("A 192.0.2.80",)
    other = Signature(ORIGIN, "empty", redirect_a=("203.0.113.9",))
    assert classify_reply(check, wire, other)[0] == "not-blocked"
    outcome = classify_reply(check, wire, Signature(ORIGIN, "empty"))
    assert outcome[0] == "error" and "redirect target" in outcome[3]
    # BIND marks even a rewritten address with its RPZ SOA: a resolves check is overblocked
    # although the address is not the signature's.
    bind_wire = reply("bind", "redirect")
    assert classify_reply(Check("redir.example.gg", "resolves", None), bind_wire, other)[0] == "overblocked"


def test_redirect_by_cname_shows_the_information_host() -> None:
    outcome = classify_reply(Check("redir2.example.gg", "blocked", "redirect"), reply("unbound", "redirect-cname"),
                             signature("empty"))
    assert outcome[0] == "blocked" and any(a.startswith("CNAME info.operator.example.") for a in outcome[2])


def test_failures_are_retried_not_judged() -> None:
    wire = bytearray(reply("unbound", "open"))
    check = Check("open.example.gg", "resolves", None)
    assert verdict(check, bytes(wire), "empty") == "resolves"
    for rcode, text in ((2, "SERVFAIL"), (5, "REFUSED"), (1, "FORMERR")):
        patched = bytearray(wire)
        patched[3] = (patched[3] & 0xF0) | rcode
        assert classify_reply(check, bytes(patched), signature("empty"))[:2] == (None, text)
    truncated = bytearray(wire)
    truncated[2] |= 0x02
    assert classify_reply(check, bytes(truncated), signature("empty"))[3] == "truncated"
    cut = bytes(wire[: len(wire) - 8])
    assert classify_reply(check, cut, signature("empty"))[0] is None


def test_knot_drop_is_a_policy_refusal() -> None:
    wire = reply("kresd", "drop")
    assert verdict(Check("drop.example.gg", "blocked", "drop"), wire, "any") == "blocked"
    assert verdict(Check("drop.example.gg", "resolves", None), wire, "any") == "overblocked"
    assert verdict(Check("drop.example.gg", "blocked", "nxdomain"), wire, "any") == "not-blocked"
