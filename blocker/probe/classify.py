"""From one reply's wire to a verdict: what a block looks like on each resolver.

Block signatures as observed on Debian 12 (see classify() for the rules derived from them):
Unbound 1.17 answers a block with an empty authority section (and AA); BIND 9.18 adds the RPZ's SOA
to the ADDITIONAL section; Knot Resolver 5.6 puts the RPZ's SOA in the authority section (for NODATA
an SOA owned by the name) with EDE 15/4, and answers `rpz-drop.` with SERVFAIL + EDE 18; PowerDNS
Recursor 4.8 answers with an empty authority and EDE 15 (as configured by blocker's snippet).
Real replies of all four are kept in tests/probe/data/ and classified in tests/probe/test_classify.py.
"""

from __future__ import annotations

import ipaddress
import socket

import dns.exception

from blocker.probe.model import AUTHORITY_MODES, Check, Signature, VerdictText
from blocker.probe.wire import (
    NOERROR,
    NXDOMAIN,
    RCODE_TEXT,
    REFUSED,
    SERVFAIL,
    TYPE_A,
    TYPE_AAAA,
    TYPE_CNAME,
    QuerySpec,
    ede_codes,
    qtype_code,
    rdata_text,
    read_name,
    rr_spans,
    soa_owners,
)
from blocker.vocab import Verdict

# RFC 8914 extended errors that only a filtering resolver sends: Forged Answer, Blocked, Censored,
# Filtered. With SERVFAIL, also Prohibited (Knot Resolver's answer to `rpz-drop.`); with REFUSED,
# Prohibited is an access-control refusal, so not a block.
POLICY_EDE: frozenset[int] = frozenset({4, 15, 16, 17})
POLICY_REFUSAL_EDE: frozenset[int] = POLICY_EDE | {18}

# The words, as plain str (see blocker.probe.model.VerdictText): bound once for the hot path.
_BLOCKED, _RESOLVES, _NOT_BLOCKED = Verdict.BLOCKED.value, Verdict.RESOLVES.value, Verdict.NOT_BLOCKED.value
_OVERBLOCKED, _ERROR = Verdict.OVERBLOCKED.value, Verdict.ERROR.value

# An outcome: (verdict or None to retry, rcode text, answer texts, reason).
Outcome = tuple[VerdictText | None, str, tuple[str, ...], str]


class Rules:
    """A Signature prepared for fast matching (normalised addresses and names)."""

    def __init__(self, signature: Signature) -> None:
        if signature.nxdomain_authority not in AUTHORITY_MODES:
            raise ValueError(f"nxdomain_authority must be one of {AUTHORITY_MODES}")
        self.origin = signature.rpz_origin.lower().rstrip(".") + "."
        self.mode = signature.nxdomain_authority
        self.empty_is_policy = self.mode in ("empty", "any")
        self.redirect_a = frozenset(ipaddress.ip_address(a).compressed for a in signature.redirect_a)
        self.redirect_aaaa = frozenset(ipaddress.ip_address(a).compressed for a in signature.redirect_aaaa)
        cname = signature.redirect_cname
        self.redirect_cname = cname.lower().rstrip(".") + "." if cname else None
        self.can_redirect = bool(self.redirect_a or self.redirect_aaaa or self.redirect_cname)


_NOT_BLOCKED_NORMAL = "the resolver answered normally"


def classify_reply(check: Check, wire: bytes, signature: Signature) -> Outcome:
    """classify() for one Check and a whole reply: (verdict or None, rcode, answer, reason).

    For tests and tools: the engine itself matches replies to queries first and calls classify.
    The reply's question must be the check's (qname and qtype).
    """
    return classify(QuerySpec(check, qtype_code(check.qtype)), wire, Rules(signature))


def classify(spec: QuerySpec, data: bytes, rules: Rules) -> Outcome:
    """Verdict for one matched reply. A verdict of None means: retry (SERVFAIL, REFUSED, TC...).

    What counts as a block, on top of the answer's shape (NXDOMAIN, NODATA, redirect target):
    an SOA of the RPZ origin in the authority section (Knot Resolver) or the additional section
    (BIND), an NXDOMAIN whose SOA is owned by the name itself (synthesized: a name that does not
    exist owns nothing), or an extended error Forged/Blocked/Censored/Filtered (Knot Resolver,
    PowerDNS). No natural answer carries these, so every signature mode accepts them. The mode
    decides the one ambiguous case, a negative answer with nothing in its authority section: a
    block for "empty" and "any" (Unbound, PowerDNS), inconclusive for "rpz" (BIND, whose blocks
    always carry the RPZ SOA). A negative answer with another zone's SOA is natural.
    A SERVFAIL or REFUSED carrying a policy extended error is a policy refusal to answer, which
    is how Knot Resolver applies `rpz-drop.` (SERVFAIL, EDE 18 Prohibited): the "drop" form.
    """
    rcode = data[3] & 0x0F
    if rcode != NOERROR and rcode != NXDOMAIN:
        return _failure(spec, data, rules, rcode)
    if data[2] & 0x02:
        return None, RCODE_TEXT[rcode], (), "truncated"
    ancount = (data[6] << 8) | data[7]
    nscount = (data[8] << 8) | data[9]
    check = spec.check
    # Hot path: an answerless NXDOMAIN with an empty authority (Unbound's block) on a resolver
    # whose signature accepts that.
    if (not ancount and not nscount and rcode == NXDOMAIN and rules.empty_is_policy
            and check.action == "nxdomain" and check.expected == "blocked"):
        return _BLOCKED, "NXDOMAIN", (), ""
    try:
        form, answer, note = _policy_form(spec, data, rules, rcode, ancount, nscount)
    except (ValueError, IndexError, dns.exception.DNSException) as exc:
        return None, RCODE_TEXT[rcode], (), f"malformed reply ({exc or type(exc).__name__})"
    return _verdict(check, rules, form, RCODE_TEXT[rcode], answer, note)


def _failure(spec: QuerySpec, data: bytes, rules: Rules, rcode: int) -> Outcome:
    """SERVFAIL, REFUSED, FORMERR...: retry, unless an extended error says policy refused it."""
    text = RCODE_TEXT[rcode]
    arcount = (data[10] << 8) | data[11]
    if arcount and rcode in (SERVFAIL, REFUSED):
        try:
            counts = ((data[6] << 8) | data[7]) + ((data[8] << 8) | data[9])
            _, off = rr_spans(data, 12 + len(spec.question), counts)
            codes = set(ede_codes(data, off, arcount))
        except (ValueError, IndexError):
            codes = set()
        policy = codes & (POLICY_REFUSAL_EDE if rcode == SERVFAIL else POLICY_EDE)
        if policy:
            note = f"refused by policy ({text}, extended error {min(policy)})"
            return _verdict(spec.check, rules, "drop", text, (), note)
    return None, text, (), text


def _policy_form(spec: QuerySpec, data: bytes, rules: Rules, rcode: int, ancount: int,
                 nscount: int) -> tuple[str | None, tuple[str, ...], str]:
    """Which block signature a NOERROR/NXDOMAIN reply matches: (form, answer texts, note).

    form is "nxdomain", "nodata", "redirect", "rewritten" (a policy answer of no known form),
    None (a natural answer) or "ambiguous" (a negative answer that carries nothing to tell a
    natural one from a policy one on this resolver). note explains a None/ambiguous form, or
    what marked a "rewritten" answer.
    """
    off = 12 + len(spec.question)
    answer: tuple[str, ...] = ()
    has_data = False
    if ancount:
        records, off = rr_spans(data, off, ancount)
        answer = tuple(rdata_text(data, t, s, n) for t, s, n in records)
        if rules.can_redirect and _redirected(data, records, rules):
            return "redirect", answer, ""
        has_data = any(t == spec.qtype for t, _, _ in records)
    authority, off = soa_owners(data, off, nscount)
    soa = authority[0] if authority else None
    arcount = (data[10] << 8) | data[11]
    marker = _policy_marker(data, off, arcount, rules) if arcount else ""
    if has_data and rcode == NOERROR:
        if marker or soa == rules.origin:
            return "rewritten", answer, marker or "RPZ SOA in authority"
        return None, answer, _NOT_BLOCKED_NORMAL
    negative = "nxdomain" if rcode == NXDOMAIN else "nodata"
    if soa == rules.origin or marker or (rcode == NXDOMAIN and soa == spec.qname):
        # (A name cannot both not exist and own an SOA: that NXDOMAIN was synthesized.)
        return negative, answer, marker if marker.startswith("SOA of policy zone") else ""
    if soa is not None:
        return None, answer, f"{negative.upper()} from the real zone (SOA {soa})"
    if nscount == 0 and rules.empty_is_policy:
        return negative, answer, ""
    return "ambiguous", answer, f"{negative.upper()} without an SOA: cannot tell a natural answer from a block"


def _policy_marker(data: bytes, off: int, count: int, rules: Rules) -> str:
    """What in the additional section marks a policy answer ("" if nothing): an SOA, or an EDE.

    BIND adds the SOA of the policy zone that rewrote the answer to the additional section; a
    natural answer never has an SOA there. Another operator's zone on the same resolver is a
    block all the same (the name does not resolve), so any SOA counts; the reason names it.
    """
    owners = soa_owners(data, off, count)[0]
    if rules.origin in owners:
        return "RPZ SOA in additional"
    if owners:
        return f"SOA of policy zone {owners[0]} in additional"
    codes = [code for code in ede_codes(data, off, count) if code in POLICY_EDE]
    return f"extended error {codes[0]}" if codes else ""


def _redirected(data: bytes, records: list[tuple[int, int, int]], rules: Rules) -> bool:
    for rtype, start, rdlen in records:
        if rtype == TYPE_A and rdlen == 4 and rules.redirect_a:
            if socket.inet_ntop(socket.AF_INET, data[start: start + 4]) in rules.redirect_a:
                return True
        elif rtype == TYPE_AAAA and rdlen == 16 and rules.redirect_aaaa:
            if socket.inet_ntop(socket.AF_INET6, data[start: start + 16]) in rules.redirect_aaaa:
                return True
        elif rtype == TYPE_CNAME and rules.redirect_cname and read_name(data, start)[0] == rules.redirect_cname:
            return True
    return False


def _verdict(check: Check, rules: Rules, form: str | None, rcode: str, answer: tuple[str, ...],
             note: str) -> Outcome:
    """Apply the expectation to the reply's form."""
    if check.expected == "resolves":
        if form is None:
            return _RESOLVES, rcode, answer, "" if note == _NOT_BLOCKED_NORMAL else note
        if form == "ambiguous":
            return _ERROR, rcode, answer, note
        what = f"the answer matches the {form} block signature"
        return _OVERBLOCKED, rcode, answer, f"{what} ({note})" if note else what
    action = check.action
    if action == "redirect" and not rules.can_redirect:
        return _ERROR, rcode, answer, "the signature names no redirect target to recognise"
    if form == action:
        return _BLOCKED, rcode, answer, note
    if form is None or form == "ambiguous":
        if action == "drop":
            said = "" if note == _NOT_BLOCKED_NORMAL else f": {note}"
            note = f"the resolver answered{said}; the order requires drop"
        return _NOT_BLOCKED, rcode, answer, note
    what = f"the answer matches the {form} block signature" + (f" ({note})" if note else "")
    return _NOT_BLOCKED, rcode, answer, f"{what}; the order requires {action}"


__all__ = ["POLICY_EDE", "POLICY_REFUSAL_EDE", "Outcome", "Rules", "classify", "classify_reply"]
