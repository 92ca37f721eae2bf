"""Which serial each secondary serves, and following a publish until every one serves it.

The SOA of the zone (UDP, TCP when truncated or unanswered) is what a secondary loaded; a
resolver that does not answer for an RPZ's apex (Unbound) is asked the zone's serial canary,
the TXT record blocker writes last in every zone, which it answers from the policy it applies.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from blocker.config.distribution import Secondary
from blocker.config.model import Config, OperatorConfig
from blocker.zone.render import canary_owner


def _ask(sec: Secondary, name: str, rdtype: str, timeout: float) -> tuple[dns.message.Message | None, str]:
    query = dns.message.make_query(name, rdtype)
    query.flags &= ~dns.flags.RD if rdtype == "SOA" else query.flags
    try:
        reply = dns.query.udp(query, sec.host, port=sec.port, timeout=timeout)
        if not reply.flags & dns.flags.TC:
            return reply, ""
    except (dns.exception.Timeout, OSError) as exc:
        udp_error = f"udp: {exc or type(exc).__name__}"
    else:
        udp_error = "udp: truncated"
    try:
        return dns.query.tcp(query, sec.host, port=sec.port, timeout=timeout), ""
    except (dns.exception.DNSException, OSError) as exc:
        return None, f"{udp_error}; tcp: {exc or type(exc).__name__}"


def served_serial(sec: Secondary, op: OperatorConfig, timeout: float = 2.0) -> tuple[int | None, str]:
    """(serial, error): the serial of `op`'s zone this secondary serves; None and why when unknown."""
    reply, error = _ask(sec, op.origin, "SOA", timeout)
    if reply is None:  # not answering at all: asking the canary too would only double the wait
        return None, error
    if reply is not None:
        for rrset in reply.answer:
            if rrset.rdtype == dns.rdatatype.SOA and rrset.name.to_text().lower() == op.origin.lower():
                return int(rrset[0].serial), ""
        error = f"no SOA for {op.origin} ({dns.rcode.to_text(reply.rcode())})"
    reply2, error2 = _ask(sec, canary_owner(op.id), "TXT", timeout)
    if reply2 is None:
        return None, error2 or error
    for rrset in reply2.answer:
        if rrset.rdtype == dns.rdatatype.TXT:
            text = b"".join(rrset[0].strings).decode("ascii", "replace")
            if text.isdigit():
                return int(text), ""
    return None, f"{error}; no serial canary ({dns.rcode.to_text(reply2.rcode())})"


@dataclass
class SecondaryStatus:
    operator: str
    name: str
    address: str
    serial: int | None
    published_serial: int | None
    in_sync: bool
    behind_seconds: float | None
    last_error: str

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _serial_ge(a: int, b: int) -> bool:
    return a == b or 0 < (a - b) % 2**32 < 2**31


def published(config: Config) -> dict[str, tuple[int, datetime] | None]:
    """The serial each operator's zone was last published with, and when (from the state)."""
    out: dict[str, tuple[int, datetime] | None] = {op: None for op in config.operators}
    from blocker.record.state import State

    state = State.open_existing(config.state_dir)
    if state is None:
        return out
    try:
        for op in config.operators:
            rec = state.zone(op)
            if rec is not None:
                out[op] = (rec.serial, rec.published_at)
    finally:
        state.close()
    return out


def fleet_status(config: Config, timeout: float = 2.0, now: datetime | None = None) -> list[SecondaryStatus]:
    pubs = published(config)
    now = now or datetime.now(UTC)
    jobs = [(op, sec) for op in config.operators.values() for sec in op.secondaries]

    def one(job: tuple[OperatorConfig, Secondary]) -> SecondaryStatus:
        op, sec = job
        serial, error = served_serial(sec, op, timeout)
        pub = pubs.get(op.id)
        pub_serial = pub[0] if pub else None
        in_sync = serial is not None and (pub_serial is None or _serial_ge(serial, pub_serial))
        behind = None
        if not in_sync and pub is not None:
            behind = round(max(0.0, (now - pub[1]).total_seconds()), 3)
        if serial is not None and not in_sync and not error:
            error = f"serves {serial}, published {pub_serial}"
        return SecondaryStatus(op.id, sec.label, sec.address, serial, pub_serial, in_sync, behind, error)

    with ThreadPoolExecutor(max_workers=min(32, max(1, len(jobs)))) as pool:
        return list(pool.map(one, jobs))


@dataclass
class Propagation:
    operator: str
    serial: int
    seconds: dict[str, float | None]  # secondary -> time from publish to serving it (None: not within the bound)
    errors: dict[str, str]

    @property
    def complete(self) -> bool:
        return all(v is not None for v in self.seconds.values())

    @property
    def last(self) -> float | None:
        return max((v for v in self.seconds.values() if v is not None), default=None) if self.complete else None


def follow(op: OperatorConfig, serial: int, timeout: float, started: float | None = None,
           ask: Callable[[Secondary, OperatorConfig, float], tuple[int | None, str]] = served_serial,
           sleep: Callable[[float], None] = time.sleep,
           on_progress: Callable[[Secondary, int | None, str], None] | None = None) -> Propagation:
    """Ask every secondary for its serial until all serve `serial` or `timeout` passes; backoff
    doubles from 50 ms to 2 s, so a change seen in half a second is timed to within ~50 ms while a
    stuck secondary is not asked more than every 2 s."""
    t0 = time.monotonic() if started is None else started
    todo: list[Secondary] = list(op.secondaries)
    done: dict[str, float | None] = {s.label: None for s in todo}
    errors: dict[str, str] = {}
    delay = 0.05
    while todo:
        left: list[Secondary] = []
        for sec in todo:
            got, error = ask(sec, op, min(2.0, max(0.2, timeout / 10)))
            if on_progress is not None:
                on_progress(sec, got, error)
            if got is not None and _serial_ge(got, serial):
                done[sec.label] = round(time.monotonic() - t0, 3)
                errors.pop(sec.label, None)
            else:
                errors[sec.label] = error or f"serves {got}"
                left.append(sec)
        todo = left
        if not todo or time.monotonic() - t0 >= timeout:
            break
        sleep(min(delay, max(0.0, timeout - (time.monotonic() - t0))))
        delay = min(2.0, delay * 2)
    return Propagation(op.id, serial, done, errors)


def follow_all(config: Config, serials: Iterable[tuple[str, int]], timeout: float | None = None
               ) -> list[Propagation]:
    dist_timeout = config.distribution.propagation_timeout if config.distribution else 60.0
    t0 = time.monotonic()
    return [follow(config.operators[op], serial, timeout or dist_timeout, t0)
            for op, serial in serials if config.operators[op].secondaries]
