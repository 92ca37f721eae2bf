"""The probe engine (blocker.probe.engine) against real resolvers on loopback.

Unbound, BIND, Knot Resolver and PowerDNS Recursor (session fixtures from conftest_resolvers)
serve the operator zone with the base rules of tests/resolverlib.py: every RPZ action on a test
name, forwarding the rest to a real authoritative BIND. No mock stands in for a resolver: the
pure classification tests (test_classify.py) feed reply wires captured from those daemons.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import time
from collections.abc import Iterator, Sequence

import pytest

from blocker.probe.engine import probe, probe_sync
from blocker.probe.model import Check, CheckResult, ResolverTarget, Signature, exit_code
from tests.conftest_resolvers import RESOLVER_FIXTURES
from tests.probe import replies
from tests.resolverlib import (
    IDN_NAME,
    INFO_HOST,
    TEST_ORIGINS,
    AuthServer,
    Resolver,
    Unbound,
    free_port,
    rpz_zone,
)

pytestmark = pytest.mark.integration  # most tests here query the real resolvers (module fixtures)

ORIGIN = TEST_ORIGINS[0]
REDIRECT_A = "192.0.2.80"            # base_rules: redir.example.gg A 192.0.2.80
TIMEOUT, RETRIES = 0.4, 1            # short: every drop check waits (RETRIES + 1) * TIMEOUT
IDN = IDN_NAME.rstrip(".")

# What each resolver's blocked answers look like (see resolverlib's BlockSignature per class).
MODES = {"unbound": "empty", "bind": "rpz", "kresd": "any", "pdns_recursor": "empty"}

# (check, verdict expected on every resolver). One probe pass per resolver asks all of them.
CASES: list[tuple[Check, str]] = [
    (Check("blocked.example.gg", "blocked", "nxdomain", ("TJ-1",)), "blocked"),
    (Check("deep.x.blocked.example.gg", "blocked", "nxdomain", ("TJ-1",), kind="subdomain"), "blocked"),
    (Check(IDN, "blocked", "nxdomain", ("TJ-2",)), "blocked"),
    (Check("nodata.example.gg", "blocked", "nodata", ("TJ-3",)), "blocked"),
    (Check("drop.example.gg", "blocked", "drop", ("TJ-4",)), "blocked"),
    (Check("redir.example.gg", "blocked", "redirect", ("TJ-5",)), "blocked"),
    (Check("redir2.example.gg", "blocked", "redirect", ("TJ-5",)), "blocked"),
    (Check("sub.wild.example.gg", "blocked", "nxdomain", ("TJ-6",), kind="subdomain"), "blocked"),
    # The wildcard covers subdomains only; these names are not blocked at all.
    (Check("wild.example.gg", "blocked", "nxdomain", ("TJ-6",)), "not-blocked"),
    (Check("open.example.gg", "blocked", "nxdomain", ("TJ-7",)), "not-blocked"),
    (Check("open.example.gg", "blocked", "drop", ("TJ-7",)), "not-blocked"),
    # Blocked, but not the way the order requires.
    (Check("nodata.example.gg", "blocked", "nxdomain", ("TJ-8",)), "not-blocked"),
    # Must resolve.
    (Check("open.example.gg", "resolves", None, kind="control"), "resolves"),
    (Check("www.example.gg", "resolves", None, kind="control"), "resolves"),
    (Check("open.example.gg", "resolves", None, ("TJ-9",), kind="lifted"), "resolves"),
    (Check("absent.example.gg", "resolves", None, kind="control"), "resolves"),           # natural NXDOMAIN
    (Check("www.example.gg", "resolves", None, kind="control", qtype="AAAA"), "resolves"),  # natural NODATA
    (Check("blocked.example.gg", "resolves", None, ("TJ-1",), kind="lifted"), "overblocked"),
    (Check("nodata.example.gg", "resolves", None, ("TJ-3",), kind="lifted"), "overblocked"),
    (Check("redir.example.gg", "resolves", None, ("TJ-5",), kind="lifted"), "overblocked"),
    # Blocked by the other operator's zone on the same resolver: blocked all the same.
    (Check("late.example.gg", "resolves", None, kind="lifted"), "overblocked"),
]
CHECKS = [check for check, _ in CASES]
# Knot Resolver 5 ignores an RPZ CNAME to a real name (its docs; resolverlib's compat table).
EXCEPTIONS = {("kresd", "redir2.example.gg", "redirect"): "not-blocked"}

def signature(mode: str) -> Signature:
    return Signature(ORIGIN, mode, redirect_a=(REDIRECT_A,), redirect_cname=INFO_HOST)


def target(resolver: Resolver, transports: tuple[str, ...] = ("udp", "tcp")) -> ResolverTarget:
    return ResolverTarget("127.0.0.1", resolver.port, name=resolver.name, transports=transports)


def reset_rules(resolver: Resolver) -> None:
    """Base rules in every zone with a fresh serial: other tests may have changed the files."""
    replies.reset_rules(resolver, {check.name for check in CHECKS})


@pytest.fixture(scope="module")
def resolvers(request: pytest.FixtureRequest) -> dict[str, Resolver]:
    """The four session resolvers, each reset to the base rules once for this module."""
    out: dict[str, Resolver] = {}
    for fixture in RESOLVER_FIXTURES:
        resolver: Resolver = request.getfixturevalue(fixture)
        reset_rules(resolver)
        out[fixture] = resolver
    return out


@pytest.fixture(scope="module")
def passes(resolvers: dict[str, Resolver]) -> dict[str, list[CheckResult]]:
    """One pass of CHECKS per resolver over UDP and TCP, the four run concurrently."""
    async def run_all() -> list[list[CheckResult]]:
        return await asyncio.gather(*(
            probe(CHECKS, [target(res)], signature(MODES[fixture]), timeout=TIMEOUT, retries=RETRIES)
            for fixture, res in resolvers.items()
        ))
    return dict(zip(resolvers, asyncio.run(run_all()), strict=True))


def by_key(results: Sequence[CheckResult]) -> dict[tuple[str, str, str, str], CheckResult]:
    return {(r.name, r.expected, r.transport, r.kind): r for r in results}


# ------------------------------------------------------------------------------------------
# Whole passes against each resolver


@pytest.mark.parametrize("fixture", RESOLVER_FIXTURES)
def test_every_case_gets_its_verdict_over_udp_and_tcp(fixture: str,
                                                      passes: dict[str, list[CheckResult]]) -> None:
    results = passes[fixture]
    assert len(results) == 2 * len(CASES)
    wrong = []
    for i, (check, verdict) in enumerate(CASES):
        want = EXCEPTIONS.get((fixture, check.name, check.action or ""), verdict)
        for j, transport in enumerate(("udp", "tcp")):
            got = results[2 * i + j]     # check order, then transport order
            assert (got.name, got.transport, got.order_ids, got.kind) == (
                check.name, transport, check.order_ids, check.kind)
            if got.verdict != want:
                wrong.append(f"{check.name} {check.qtype} {check.expected}/{check.action} over {transport}: "
                             f"{got.verdict} ({got.rcode} {got.answer} {got.reason}), want {want}")
    assert not wrong, "\n".join(wrong)
    assert exit_code(results) == 1


def test_evidence_in_results(passes: dict[str, list[CheckResult]]) -> None:
    unbound = by_key(passes["unbound"])
    redir = unbound[("redir.example.gg", "blocked", "udp", "target")]
    assert redir.answer == (f"A {REDIRECT_A}",) and redir.rcode == "NOERROR"
    redir2 = unbound[("redir2.example.gg", "blocked", "tcp", "target")]
    assert f"CNAME {INFO_HOST}" in redir2.answer
    natural = unbound[("absent.example.gg", "resolves", "udp", "control")]
    assert natural.rcode == "NXDOMAIN" and "example.gg." in natural.reason
    drop = unbound[("drop.example.gg", "blocked", "udp", "target")]
    assert drop.rcode == "" and "drop" in drop.reason and drop.elapsed_ms >= 2 * TIMEOUT * 1000
    # Knot Resolver's rpz-drop is a SERVFAIL flagged Prohibited: an answer, not silence.
    kresd_drop = by_key(passes["kresd"])[("drop.example.gg", "blocked", "udp", "target")]
    assert kresd_drop.rcode == "SERVFAIL" and "policy" in kresd_drop.reason
    # BIND marks its blocks with the RPZ SOA in the additional section; other operator's zone named.
    late = by_key(passes["bind"])[("late.example.gg", "resolves", "udp", "lifted")]
    assert "free.rpz.blocker." in late.reason
    for result in passes["bind"]:
        assert result.resolver == "bind" and result.elapsed_ms >= 0


def test_to_json_is_plain_json(passes: dict[str, list[CheckResult]]) -> None:
    for result in passes["unbound"][:6]:
        data = result.to_json()
        assert {"name", "resolver", "transport", "expected", "verdict", "order_ids", "rcode", "answer",
                "elapsed_ms", "reason", "kind"} <= set(data)
        assert isinstance(data["order_ids"], list) and isinstance(data["answer"], list)
        assert json.loads(json.dumps(data)) == data


# ------------------------------------------------------------------------------------------
# Errors are never compliance


def test_dead_port_every_check_is_an_error() -> None:
    port = free_port()     # nothing listens there
    start = time.monotonic()
    results = probe_sync(CHECKS, [ResolverTarget("127.0.0.1", port, transports=("udp", "tcp"))],
                         signature("any"), timeout=0.3, retries=1)
    assert len(results) == 2 * len(CHECKS)
    assert {r.verdict for r in results} == {"error"}
    assert all(r.reason and r.rcode == "" for r in results)
    assert exit_code(results) == 2
    assert time.monotonic() - start < 5


def test_unresolvable_resolver_host_is_an_error() -> None:
    results = probe_sync(CHECKS[:2], [ResolverTarget("no-such-host.invalid", 53)], signature("any"),
                         timeout=0.3, retries=0)
    assert [r.verdict for r in results] == ["error", "error"]
    assert all("cannot open" in r.reason for r in results)


def test_drop_alone_proves_nothing(resolvers: dict[str, Resolver]) -> None:
    """A drop check is the only query: silence cannot be told from an outage."""
    drop = Check("drop.example.gg", "blocked", "drop")
    results = probe_sync([drop], [target(resolvers["unbound"])], signature("empty"),
                         timeout=0.3, retries=0)
    assert [r.verdict for r in results] == ["error", "error"]
    assert "no query at all" in results[0].reason
    assert exit_code(results) == 2


def test_drop_proven_by_a_later_heartbeat(resolvers: dict[str, Resolver]) -> None:
    """One query at a time: the control name is answered BEFORE the drop check is sent, so the
    engine asks it again afterwards to show the resolver is still alive."""
    checks = [Check("open.example.gg", "resolves", None, kind="control"),
              Check("drop.example.gg", "blocked", "drop")]
    results = probe_sync(checks, [target(resolvers["bind"], ("udp",))], signature("rpz"),
                         timeout=0.3, retries=0, concurrency=1)
    assert [r.verdict for r in results] == ["resolves", "blocked"]


def test_drop_not_proven_when_the_resolver_stops_answering(resolvers: dict[str, Resolver]) -> None:
    """The resolver answers the control name, then freezes (SIGSTOP): the drop check is an error."""
    unbound = resolvers["unbound"]
    assert unbound.proc is not None
    pid = unbound.proc.pid
    stopped = False

    def freeze(done: int, total: int) -> None:
        nonlocal stopped
        if done >= 1 and not stopped:
            os.kill(pid, signal.SIGSTOP)
            stopped = True

    checks = [Check("open.example.gg", "resolves", None, kind="control"),
              Check("drop.example.gg", "blocked", "drop")]
    try:
        results = probe_sync(checks, [target(unbound, ("udp",))], signature("empty"), timeout=0.3,
                             retries=1, concurrency=1, progress=freeze)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert stopped
    assert results[1].verdict == "error", results[1]
    assert "no other query after it" in results[1].reason
    assert exit_code(results) == 2


# ------------------------------------------------------------------------------------------
# Engine mechanics


def test_many_checks_window_rate_and_progress(resolvers: dict[str, Resolver]) -> None:
    checks = [Check(f"n{i}.wild.example.gg", "blocked", "nxdomain", kind="subdomain") for i in range(3000)]
    seen: list[tuple[int, int]] = []
    results = probe_sync(checks, [target(resolvers["unbound"], ("udp",))], signature("empty"),
                         concurrency=64, rate_per_resolver=0, progress=lambda d, t: seen.append((d, t)))
    assert [r.name for r in results] == [c.name for c in checks]
    assert {r.verdict for r in results} == {"blocked"}
    assert seen[-1] == (3000, 3000)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(seen))

    limited = checks[:400]
    start = time.monotonic()
    results = probe_sync(limited, [target(resolvers["unbound"], ("udp",))], signature("empty"),
                         rate_per_resolver=1000.0)
    elapsed = time.monotonic() - start
    assert {r.verdict for r in results} == {"blocked"}
    assert elapsed >= 0.3, f"400 queries at 1000/s (burst 50) took only {elapsed:.3f} s"


def test_several_resolvers_in_one_pass(resolvers: dict[str, Resolver]) -> None:
    checks = [Check("blocked.example.gg", "blocked", "nxdomain"), Check("open.example.gg", "resolves", None)]
    targets = [target(resolvers["unbound"], ("udp",)), ResolverTarget("127.0.0.1", free_port(), name="dead"),
               target(resolvers["pdns_recursor"], ("tcp",))]
    results = probe_sync(checks, targets, signature("empty"), timeout=0.3, retries=0)
    assert [(r.resolver, r.verdict) for r in results] == [
        ("unbound", "blocked"), ("dead", "error"), ("pdns", "blocked"),
        ("unbound", "resolves"), ("dead", "error"), ("pdns", "resolves"),
    ]


BIG_TXT = " ".join(f'"{chr(97 + i) * 250}"' for i in range(6))    # ~1,500 bytes: over 1232


@pytest.fixture(scope="module")
def big_answers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unbound]:
    """An Unbound of our own whose upstream serves an answer too big for UDP (TC, then TCP).

    (www: the name resolverlib waits for before it calls a resolver ready.)
    """
    workdir = tmp_path_factory.mktemp("probe-big")
    zone = ("$ORIGIN example.gg.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\n"
            f"ns A 127.0.0.1\nwww A 198.51.100.10\nbig TXT {BIG_TXT}\n")
    rpz = workdir / "orange.rpz"
    rpz.write_text(rpz_zone(ORIGIN, {"blocked.example.gg": "CNAME ."}))
    with AuthServer(workdir / "auth", zones={"example.gg.": zone}) as auth, \
            Unbound(workdir / "unbound", [(ORIGIN, rpz)], auth) as unbound:
        yield unbound


def test_truncated_udp_answer_is_asked_again_over_tcp(big_answers: Unbound) -> None:
    checks = [Check("big.example.gg", "resolves", None, qtype="TXT", kind="control"),
              Check("blocked.example.gg", "blocked", "nxdomain")]
    results = probe_sync(checks, [target(big_answers, ("udp",))], signature("empty"), timeout=1.0)
    big, blocked = results
    assert big.verdict == "resolves" and "truncation" in big.reason
    assert big.answer and big.answer[0].startswith('TXT "aaa')
    assert blocked.verdict == "blocked"


def test_empty_and_invalid_inputs() -> None:
    assert probe_sync([], [ResolverTarget("127.0.0.1", 9)], signature("any")) == []
    with pytest.raises(ValueError, match="transport"):
        probe_sync(CHECKS[:1], [ResolverTarget("127.0.0.1", 9, transports=("doh",))], signature("any"))
    with pytest.raises(ValueError, match="action"):
        probe_sync([Check("a.example.gg", "blocked", "sinkhole")], [ResolverTarget("127.0.0.1", 9)],
                   signature("any"))
    with pytest.raises(ValueError, match="expected"):
        probe_sync([Check("a.example.gg", "maybe", None)], [ResolverTarget("127.0.0.1", 9)], signature("any"))
    with pytest.raises(ValueError, match="nxdomain_authority"):
        probe_sync(CHECKS[:1], [ResolverTarget("127.0.0.1", 9)], Signature(ORIGIN, "soa"))


def test_progress_exception_ends_the_pass(resolvers: dict[str, Resolver]) -> None:
    def broken(done: int, total: int) -> None:
        raise RuntimeError("bar broke")

    with pytest.raises(RuntimeError, match="bar broke"):
        probe_sync(CHECKS[:3], [target(resolvers["unbound"], ("udp",))], signature("empty"), progress=broken)


# ------------------------------------------------------------------------------------------
# Pure helpers


def result(verdict: str) -> CheckResult:
    return CheckResult("a.example.gg", "r", "udp", "blocked", verdict, (), "", (), 0.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(("verdicts", "code"), [
    ((), 0),
    (("blocked", "resolves"), 0),
    (("blocked", "error"), 2),
    (("error", "not-blocked"), 1),
    (("resolves", "overblocked"), 1),
])
def test_exit_code(verdicts: tuple[str, ...], code: int) -> None:
    assert exit_code([result(v) for v in verdicts]) == code


def test_resolver_target_address() -> None:
    assert ResolverTarget("192.0.2.1").address == "192.0.2.1:53"
    assert ResolverTarget("2001:db8::1", 5353).address == "[2001:db8::1]:5353"
