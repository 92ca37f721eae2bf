"""Probe passes: ask every operator's resolvers what they answer for the state in force now, and
record what that proves (an order verified blocked or lifted, a verdict that changed, a reload
whose own check timed out but whose serial every resolver now serves)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from blocker.clock import Clock
from blocker.config.model import Config, OperatorConfig
from blocker.orders.legaltime import fmt_instant
from blocker.orders.model import Order
from blocker.policy import PolicyCache, ZoneEntries, desired
from blocker.probe.canary import read_lane_canaries
from blocker.probe.engine import probe_sync
from blocker.probe.expectations import (
    RANDOM_LABEL_PREFIX,
    Published,
    expected_checks,
    proof_serials,
    published_from_state,
    signature_for,
    targets_for,
)
from blocker.probe.model import Check, CheckResult
from blocker.probe.proof import prove, served_throughout
from blocker.probe.sampling import Sampler, sample_size
from blocker.record.audit import AuditLog
from blocker.record.state import State
from blocker.run.logs import log_internal
from blocker.run.metrics import Snapshot, observe_probe
from blocker.zone.read import entries_from_bytes, read_entries, read_meta
from blocker.zone.render import canary_owner

log = logging.getLogger(__name__)
ACTOR = "daemon"
MAX_CHANGES_AUDITED = 200  # verdict changes of one pass on record; a whole resolver flipping is one story

VerdictKey = tuple[str, str, str, str, str]  # operator, kind, name, resolver, transport


class Prober:
    """The probe passes of one daemon. `lock` is held for a whole pass (and by the daemon's stop)."""

    def __init__(self, state_dir: Path, audit: AuditLog, snapshot: Snapshot, clock: Clock,
                 orders: Callable[[], dict[str, Order]],
                 remembered: Callable[[str], tuple[str, ZoneEntries] | None], actor: str = ACTOR) -> None:
        self.lock = threading.Lock()
        self.actor = actor  # who the audit records name: the daemon, or a probe agent
        self.state_dir = state_dir  # where a crash file goes (the daemon's, whatever a SIGHUP says)
        self.audit = audit
        self.snapshot = snapshot
        self.clock = clock
        self._orders = orders  # what the probes expect: the newest orders published
        self._remembered = remembered  # operator -> (checksum, entries) of the zone last published
        self._cache = PolicyCache()
        self._verdicts: dict[VerdictKey, str] = {}
        self._samplers: dict[str, Sampler] = {}  # operator -> its rotation (see blocker.probe.sampling)

    def run_pass(self, config: Config, state: State, reason: str) -> None:
        """Probe every operator with resolvers (caller holds `lock`); one failing never stops the rest."""
        for op in config.operators.values():
            if not op.resolvers:
                continue
            try:
                self._probe_operator(config, state, op, reason)
            except Exception as exc:  # a probe failure must never stop the daemon
                log_internal(log, self.state_dir, "probe pass failed", exc, operator=op.id)

    def _probe_operator(self, config: Config, state: State, op: OperatorConfig, reason: str) -> None:
        orders, now = dict(self._orders()), self.clock.now()
        content = desired(orders.values(), op.id, now, self._cache)
        checks = expected_checks(orders.values(), op.id, now, recent_days=config.probe_recent_window_days,
                                 control_names=config.control_names, content=content)
        size = sample_size(len(checks), sample_per_pass=config.probe_sample_per_pass,
                           interval=config.probe_interval, sweep_period=config.probe_sweep_period)
        sampler = self._samplers.setdefault(op.id, Sampler())
        selection = sampler.select(checks, size)
        checks = selection.checks
        targets = targets_for(op)
        canary = canary_owner(op.id)
        before = asyncio.run(read_lane_canaries(targets, canary, config.probe_timeout, config.probe_retries))
        results = probe_sync(checks, targets, signature_for(op), timeout=config.probe_timeout,
                             retries=config.probe_retries, concurrency=config.probe_concurrency,
                             rate_per_resolver=config.probe_rate_per_resolver)
        after = asyncio.run(read_lane_canaries(targets, canary, config.probe_timeout, config.probe_retries))
        published = self._published(config.zones_dir, state, op.id)
        results = prove(checks, results, proof_serials(checks, orders.values(), published),
                        served_throughout(before, after))
        sampler.observe(checks, results)
        with self.snapshot.lock:
            self.snapshot.probe_sample[op.id] = (selection.total, len(checks))
            if selection.wrapped:
                self.snapshot.probe_sweep_ts[op.id] = self.clock.now().timestamp()
        # Per resolver (the label probe results carry): the serial its first transport applies now.
        serials = {t.name or t.address: after.get((t.name or t.address, t.transports[0])) if t.transports else None
                   for t in targets}
        self._record(config, state, op, orders, checks, results, serials, now, reason)

    def _published(self, zones_dir: Path, state: State, operator: str) -> Published | None:
        """The zone last published with the state's history of publishes: what a canary serial
        proves. What was published is the state's; a probe agent's state publishes nothing, and
        reads the daemon's zone file."""
        record = state.zone(operator)
        remembered = self._remembered(operator)
        if record is not None:
            if remembered is not None and remembered[0] == record.checksum:
                return published_from_state(record.serial, remembered[1], operator, state)
            body = state.published_body(operator)
            if body is not None:
                try:
                    entries = entries_from_bytes(body)
                except (UnicodeDecodeError, ValueError):  # a damaged row proves nothing
                    return None
                return published_from_state(record.serial, entries, operator, state)
        path = zones_dir / f"{operator}.rpz"
        meta = read_meta(path)
        if meta is None:
            return None
        if remembered is not None and remembered[0] == meta.checksum:
            entries = remembered[1]
        else:
            try:
                entries = read_entries(path)
            except (OSError, UnicodeDecodeError, ValueError):  # a damaged zone proves nothing
                return None
        return published_from_state(meta.serial, entries, operator, state)

    def _record(self, config: Config, state: State, op: OperatorConfig, orders: dict[str, Order],
                checks: list[Check], results: list[CheckResult], serials: dict[str, int | None],
                now: datetime, reason: str) -> None:
        counts: dict[str, int] = {}
        for r in results:
            counts[r.verdict] = counts.get(r.verdict, 0) + 1
        for change in self._verdict_changes(op.id, results)[:MAX_CHANGES_AUDITED]:
            self.audit.append("probe-verdict-change", change, actor=self.actor)
        verified, failing = self._order_outcomes(state, op.id, orders, results, now)
        record = state.zone(op.id)  # a probe agent's state holds no zone: the daemon's file says
        published = record if record is not None else read_meta(config.zones_dir / f"{op.id}.rpz")
        published_serial = published.serial if published is not None else None
        stale = self._served(state, op.id, published_serial, serials)
        self.audit.append("probe-pass", {
            "operator": op.id, "reason": reason, "checks": len(results), "verdicts": counts,
            "orders": verified + failing, "verified": verified, "failing": failing,
            "published_serial": published_serial, "resolver_serials": serials,
            "stale": stale,
        }, actor=self.actor)
        if failing or stale:
            log.warning("probe pass: not every check holds", extra={"operator": op.id, "failing": ",".join(failing),
                                                                    "stale": ",".join(stale), "verdicts": counts})
        received = {order_id: first for order_id, (_n, first) in state.version_summary().items()}
        observe_probe(self.snapshot, op.id, results, serials, orders, state.firsts(), now, received)

    def _verdict_changes(self, operator: str, results: list[CheckResult]) -> list[dict[str, object]]:
        """Each check whose verdict differs from the last pass's (remembered for the next)."""
        changes: list[dict[str, object]] = []
        for r in results:
            # Subdomain checks ask a fresh random label each pass: key them by the parent name.
            name = r.name.split(".", 1)[1] if r.name.startswith(RANDOM_LABEL_PREFIX) else r.name
            key = (operator, r.kind, name, r.resolver, r.transport)
            before = self._verdicts.get(key)
            if before is not None and before != r.verdict:
                changes.append({"operator": operator, "name": name, "kind": r.kind, "resolver": r.resolver,
                                "transport": r.transport, "from": before, "to": r.verdict,
                                "orders": list(r.order_ids), "reason": r.reason})
            self._verdicts[key] = r.verdict
        return changes

    def _order_outcomes(self, state: State, operator: str, orders: dict[str, Order], results: list[CheckResult],
                        now: datetime) -> tuple[list[str], list[str]]:
        """(verified, failing) order ids of this pass, each recorded; the first pass that proves an
        order blocked (or lifted) is audited `order-verified`."""
        by_order: dict[str, list[CheckResult]] = {}
        for r in results:
            for order_id in r.order_ids:
                by_order.setdefault(order_id, []).append(r)
        verified: list[str] = []
        failing: list[str] = []
        for order_id, rs in sorted(by_order.items()):
            order = orders.get(order_id)
            if order is None:
                continue
            # prove() left `blocked`/`resolves` only where a canary and the control names prove
            # them; an order is verified by a pass only with at least one such check, all holding.
            if order.active_at(now):
                claims = [r for r in rs if r.expected == "blocked"]
                ok = bool(claims) and all(r.verdict == "blocked" for r in claims)
                kind, since = "blocked", order.start
            else:
                ok = bool(rs) and all(r.verdict == "resolves" for r in rs)
                kind, since = "lifted", order.end
            state.record_probe_outcome(order_id, operator, ok, now)
            (verified if ok else failing).append(order_id)
            if ok and state.record_first(order_id, operator, kind, now):
                data = {"order": order_id, "operator": operator, "kind": kind, "at": fmt_instant(now),
                        "after_seconds": round((now - since).total_seconds(), 3)}
                log.info(f"first probe pass that proves the order {'blocked' if kind == 'blocked' else 'lifted'}",
                         extra=data)
                self.audit.append("order-verified", data, actor=self.actor)
        return verified, failing

    def _served(self, state: State, operator: str, published: int | None,
                serials: dict[str, int | None]) -> list[str]:
        """The resolvers not serving the published serial. None stale: a zone whose reload's own
        check timed out is marked in effect (every resolver now applies it)."""
        stale = [addr for addr, serial in serials.items() if published is not None and serial != published]
        record = state.zone(operator)
        if (published is not None and serials and not stale and record is not None and not record.in_effect
                and record.serial == published):
            state.mark_in_effect(operator, True, f"serial {published} verified by a probe pass")
        return stale
