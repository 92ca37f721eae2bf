"""One operator's probe pass, the way `blocker probe` and the daemon both run it: the canary serial
of every lane before, the pass, the canary after, then prove() with the serials that first held
each entry. One sequence, so the CLI and the daemon cannot drift apart on what counts as proof.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from blocker.config.model import Config, OperatorConfig, ResolverConfig
from blocker.orders.model import Order
from blocker.probe.canary import read_lane_canaries
from blocker.probe.engine import probe_sync
from blocker.probe.expectations import Published, proof_serials, signature_for, targets_for
from blocker.probe.model import Check, CheckResult, Lane, ResolverTarget
from blocker.probe.proof import prove, served_throughout
from blocker.zone.render import canary_owner
from blocker.zone.serial import serial_gt


@dataclass(frozen=True)
class PassOutcome:
    """The proven results (check order, then lane order) and each lane's canary after the pass."""

    results: list[CheckResult]
    targets: list[ResolverTarget]
    after: dict[Lane, int | None]

    def serials(self) -> dict[str, int | None]:
        """Per resolver (the label results carry): the serial its first transport applies now."""
        return {t.name or t.address: self.after.get((t.name or t.address, t.transports[0])) if t.transports
                else None for t in self.targets}


def run_pass(config: Config, op: OperatorConfig, checks: Sequence[Check], orders: Iterable[Order],
             published: Callable[[], Published | None], *,
             progress: Callable[[int, int], None] | None = None,
             done: Callable[[], None] | None = None) -> PassOutcome:
    """Probe `checks` on the operator's resolvers and prove what the answers show.

    published: what the zones folder and the state say was published, asked AFTER the pass (a
    publish during the pass must not be missed); done: called when the queries are over, before
    the last canary read (the CLI closes its progress bar there).
    """
    orders = list(orders)
    targets = targets_for(op)
    canary = canary_owner(op.id)
    before = asyncio.run(read_lane_canaries(targets, canary, config.probe_timeout, config.probe_retries))
    results = probe_sync(checks, targets, signature_for(op), timeout=config.probe_timeout,
                         retries=config.probe_retries, concurrency=config.probe_concurrency,
                         rate_per_resolver=config.probe_rate_per_resolver, progress=progress)
    if done is not None:
        done()
    after = asyncio.run(read_lane_canaries(targets, canary, config.probe_timeout, config.probe_retries))
    results = prove(checks, results, proof_serials(checks, orders, published()), served_throughout(before, after))
    return PassOutcome(results, targets, after)


def with_resolvers(op: OperatorConfig, addresses: Sequence[tuple[str, int]], tcp: bool) -> OperatorConfig:
    """The operator with other resolvers to probe (`--resolver`), or its own over TCP too (`--tcp`)."""
    transports = ("udp", "tcp") if tcp else ("udp",)
    if addresses:
        return replace(op, resolvers=tuple(ResolverConfig(host, port, transports=transports)
                                           for host, port in addresses))
    if tcp:
        return replace(op, resolvers=tuple(replace(r, transports=transports) for r in op.resolvers))
    return op


def serial_notes(outcome: PassOutcome, operator: str, published_serial: int) -> list[str]:
    """One line per resolver whose canary is not the published serial (stale, none, or newer)."""
    notes = []
    for target in outcome.targets:
        serial = outcome.after.get((target.name or target.address, target.transports[0])) if target.transports \
            else None
        if serial is None:
            notes.append(f"{target.address}: serves no canary serial for {operator} (zone not loaded?)")
        elif serial_gt(published_serial, serial):
            notes.append(f"{target.address}: STALE: serves serial {serial}, published {published_serial}")
        elif serial != published_serial:
            notes.append(f"{target.address}: serves serial {serial}, newer than {published_serial} in the zones "
                         "folder (another publisher?)")
    return notes


__all__ = ["PassOutcome", "run_pass", "serial_notes", "with_resolvers"]
