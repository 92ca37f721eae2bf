"""What a probe pass asks and what it found: the data every other probe module passes around.

A verdict is never inferred from silence, except for the `drop` action, where silence IS the
block: a timeout there counts as blocked only when the same resolver (same transport) answered
something after that query was sent, so a dead resolver never looks compliant. Errors (timeouts,
SERVFAIL, REFUSED... after retries) are never compliant: exit_code() gives 2 when only they stand
between a pass and a clean bill.

What the engine returns is what the answers LOOK like (see classify); `blocked` and `resolves`
become proofs only in proof.prove().
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from blocker.config.model import ResolverConfig
from blocker.vocab import Verdict

# Verdicts that only count once prove() found the canary proof for them (see proof.prove()).
PROVEN: frozenset[str] = frozenset({Verdict.BLOCKED.value, Verdict.RESOLVES.value})
# A verdict as results carry it: the plain str value of a blocker.vocab.Verdict member. Why not the
# member: Enum.__hash__ is a Python function, and a pass hashes 10^6 verdicts (exit_code, prove,
# the daemon's counters); a str also prints the same everywhere (a member's repr does not).
VerdictText = str
EXPECTATIONS: tuple[str, ...] = (Verdict.BLOCKED.value, Verdict.RESOLVES.value)
TRANSPORTS: tuple[str, ...] = ("udp", "tcp")
AUTHORITY_MODES: tuple[str, ...] = ("rpz", "empty", "any")


@dataclass(frozen=True)
class Check:
    """One question to ask every resolver, and what its answer must show."""

    name: str              # ASCII (A-label) name without trailing dot, already validated
    expected: str          # "blocked" or "resolves"
    action: str | None     # for expected blocked: "nxdomain" | "nodata" | "drop" | "redirect"
    order_ids: tuple[str, ...] = ()
    qtype: str = "A"
    kind: str = "target"   # "target" | "subdomain" | "lifted" | "control" (why the check exists)


# One resolver of an operator, and the transports to probe it over: the config's own type, so a
# configured resolver is probed as it is written.
ResolverTarget = ResolverConfig


@dataclass(frozen=True)
class Signature:
    """What a blocked answer looks like on this operator's resolvers.

    nxdomain_authority says what a blocked NXDOMAIN/NODATA carries: "rpz" the RPZ's SOA (BIND,
    which puts it in the additional section; Knot Resolver, in the authority section), "empty"
    nothing in the authority section (Unbound, PowerDNS), "any" either. Marks that no natural
    answer carries (the RPZ's SOA, a policy EDE) count in every mode; the mode only decides
    whether an empty authority section is a block ("empty", "any") or proves nothing ("rpz").
    """

    rpz_origin: str                       # e.g. "orange.rpz.blocker."
    nxdomain_authority: str = "any"       # "rpz" (BIND) | "empty" (Unbound, PowerDNS) | "any"
    redirect_a: tuple[str, ...] = ()
    redirect_aaaa: tuple[str, ...] = ()
    redirect_cname: str | None = None


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one check, from one resolver, over one transport, with its evidence."""

    name: str
    resolver: str               # the ResolverTarget's name, or its address when it has none
    transport: str
    expected: str
    verdict: VerdictText        # a blocker.vocab.Verdict value
    order_ids: tuple[str, ...]
    rcode: str                  # "" when no reply came back
    answer: tuple[str, ...]     # answer section as "TYPE rdata", e.g. "A 192.0.2.1"
    elapsed_ms: float           # from the first send to the verdict (retries included)
    reason: str = ""
    kind: str = "target"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types only (lists, not tuples), for reports and the state store."""
        return {
            "name": self.name,
            "resolver": self.resolver,
            "transport": self.transport,
            "expected": self.expected,
            "verdict": self.verdict,
            "order_ids": list(self.order_ids),
            "rcode": self.rcode,
            "answer": list(self.answer),
            "elapsed_ms": self.elapsed_ms,
            "reason": self.reason,
            "kind": self.kind,
        }


_FAILING = frozenset({Verdict.NOT_BLOCKED.value, Verdict.OVERBLOCKED.value, Verdict.UNVERIFIED.value})


def exit_code(results: Sequence[CheckResult]) -> int:
    """0 every check holds; 1 a block is missing, a name is overblocked, or a check could not be
    proven (`unverified`: the check failed, the resolver answered); 2 only errors remain."""
    verdicts = {r.verdict for r in results}
    if verdicts & _FAILING:
        return 1
    if Verdict.ERROR.value in verdicts:
        return 2
    return 0


Lane = tuple[str, str]  # (resolver label as CheckResult.resolver gives it, transport)


__all__ = ["AUTHORITY_MODES", "EXPECTATIONS", "PROVEN", "TRANSPORTS", "Check", "CheckResult", "Lane",
           "ResolverTarget", "Signature", "Verdict", "VerdictText", "exit_code"]
