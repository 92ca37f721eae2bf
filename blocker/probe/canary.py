"""Which zone a resolver applies: its canary serial, read back.

Every published zone carries `serial.<operator>.canary.blocker TXT "<serial>"` (blocker.zone.rpz.canary):
the one read-back all four resolvers answer alike (BIND's SOA shows the version loaded, which may
not be applied yet). A probe pass reads it per lane before and after (blocker.probe.proof uses the
older); a publish waits with wait_for_serial() until every resolver applies the new zone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rdatatype

from blocker.config.model import Config
from blocker.probe.model import Lane, ResolverTarget
from blocker.zone.render import canary_owner
from blocker.zone.serial import serial_gt


async def _ask(resolver: ResolverTarget, qname: dns.name.Name, rdtype: str,
               timeout: float, transport: str | None = None) -> dns.message.Message | None:
    """One plain dnspython query (UDP with TCP fallback, or TCP only); None when nothing came back.
    transport: ask over this one ("udp" still falls back to TCP on truncation); default: UDP when
    the resolver is probed over UDP."""
    query = dns.message.make_query(qname, rdtype, use_edns=0, payload=1232)
    try:
        if (transport or ("udp" if "udp" in resolver.transports else "tcp")) == "udp":
            reply, _ = await dns.asyncquery.udp_with_fallback(query, resolver.host, timeout=timeout,
                                                              port=resolver.port)
            return reply
        return await dns.asyncquery.tcp(query, resolver.host, timeout=timeout, port=resolver.port)
    except (dns.exception.DNSException, OSError, EOFError):
        return None


async def read_canary(resolver: ResolverTarget, name: str, timeout: float = 2.0,
                      transport: str | None = None) -> int | None:
    """The serial in the zone's canary TXT (`serial.<operator>.canary.blocker`) as this resolver
    APPLIES it: the one read-back all four resolvers answer alike (BIND's SOA shows the version
    loaded, which may not be applied yet). None when it does not answer with one."""
    reply = await _ask(resolver, dns.name.from_text(name), "TXT", timeout, transport)
    if reply is None:
        return None
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.TXT:
            text = b"".join(rrset[0].strings).decode("ascii", errors="replace")
            return int(text) if text.isdigit() else None
    return None


async def read_canaries(resolvers: Sequence[ResolverTarget], name: str, timeout: float = 2.0) -> list[int | None]:
    return list(await asyncio.gather(*(read_canary(r, name, timeout) for r in resolvers)))


async def read_lane_canaries(resolvers: Sequence[ResolverTarget], name: str, timeout: float = 2.0,
                             retries: int = 2) -> dict[Lane, int | None]:
    """The canary serial per (resolver, transport) lane of a pass, asked over that transport.

    A lane without an answer is asked again (up to `retries` times): one lost datagram must not
    leave a whole pass unverified. None stays None: no canary, no proof.
    """
    lanes = [(r, t) for r in resolvers for t in r.transports]
    found: list[int | None] = [None] * len(lanes)
    todo = list(range(len(lanes)))
    for _ in range(max(0, retries) + 1):
        got = await asyncio.gather(*(read_canary(lanes[i][0], name, timeout, lanes[i][1]) for i in todo))
        for i, serial in zip(todo, got, strict=True):
            found[i] = serial
        todo = [i for i in todo if found[i] is None]
        if not todo:
            break
    return {(r.name or r.address, t): serial for (r, t), serial in zip(lanes, found, strict=True)}


def wait_for_serial(config: Config, operator: str, serial: int, timeout: float) -> list[str]:
    """Ask each of the operator's resolvers which serial it applies (its canary), every 0.2 s, until
    all serve `serial` (or a later one) or `timeout` seconds pass; the problems left, one per
    resolver behind ("" list: every resolver serves it).

    Why after a reload: a reload command that exits 0 proves nothing on BIND (deferred by
    min-update-interval) or PowerDNS (a bad file silently drops the zone). Blocking (asyncio.run
    per round): call it outside any event loop, and outside the publish lock.
    """
    targets = list(config.operators[operator].resolvers)
    name = canary_owner(operator)
    deadline = time.monotonic() + timeout
    while True:
        served = asyncio.run(read_canaries(targets, name, 1.0))
        behind = [f"{t.name or t.address} serves {s if s is not None else 'no canary'}"
                  for t, s in zip(targets, served, strict=True) if s is None or serial_gt(serial, s)]
        if not behind or time.monotonic() > deadline:
            return behind
        time.sleep(0.2)


__all__ = ["read_canaries", "read_canary", "read_lane_canaries", "wait_for_serial"]
