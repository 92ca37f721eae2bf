"""Prometheus metrics, built at scrape time from the daemon's current snapshot.

A custom collector rather than long-lived labelled gauges: an order that leaves the folder
leaves the metrics with it, and label sets stay bounded (operator, order, resolver; never a
domain name).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from blocker import __version__
from blocker.orders.model import Order
from blocker.policy import next_transition
from blocker.probe.model import CheckResult
from blocker.publish.reconcile import OperatorOutcome
from blocker.record.state import ZoneRecord
from blocker.vocab import STATUSES

RECONCILE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Snapshot:
    """Everything /metrics shows; the daemon replaces parts of it under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    orders_by_status: dict[str, int] = field(default_factory=dict)
    order_windows: dict[str, tuple[float, float]] = field(default_factory=dict)  # order -> (start, end)
    orders_invalid: int = 0
    orders_orphaned: int = 0
    zone_names: dict[str, int] = field(default_factory=dict)
    zone_records: dict[str, int] = field(default_factory=dict)
    zone_serial: dict[str, int] = field(default_factory=dict)
    zone_publish_ts: dict[str, float] = field(default_factory=dict)
    zone_in_effect: dict[str, bool] = field(default_factory=dict)
    removals_held: dict[str, int] = field(default_factory=dict)
    publish_failures: dict[str, int] = field(default_factory=dict)
    reload_failures: dict[str, int] = field(default_factory=dict)
    next_transition_ts: float | None = None
    reconciles: dict[str, int] = field(default_factory=dict)  # result -> count
    reconcile_buckets: list[int] = field(default_factory=lambda: [0] * len(RECONCILE_BUCKETS))
    reconcile_count: int = 0
    reconcile_sum: float = 0.0
    last_reconcile_ts: float = 0.0
    last_catchup_seconds: float = 0.0
    audit_writable: bool = True  # the last append to the audit trail succeeded
    audit_write_failures: int = 0
    # probes
    probe_checks: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (operator, resolver, verdict)
    probe_last_pass_ts: dict[str, float] = field(default_factory=dict)
    probe_oldest_unverified: dict[str, float] = field(default_factory=dict)
    resolver_serial: dict[tuple[str, str], int] = field(default_factory=dict)
    resolver_up: dict[tuple[str, str], bool] = field(default_factory=dict)
    time_to_block: dict[tuple[str, str], float] = field(default_factory=dict)  # (order, operator)
    time_to_lift: dict[tuple[str, str], float] = field(default_factory=dict)
    time_to_block_from_receipt: dict[tuple[str, str], float] = field(default_factory=dict)


def observe_reconcile(s: Snapshot, seconds: float, ok: bool) -> None:
    """Call with `s.lock` held."""
    s.reconciles["ok" if ok else "failed"] = s.reconciles.get("ok" if ok else "failed", 0) + 1
    s.reconcile_count += 1
    s.reconcile_sum += seconds
    for i, bound in enumerate(RECONCILE_BUCKETS):
        if seconds <= bound:
            s.reconcile_buckets[i] += 1


def observe_orders(s: Snapshot, orders: Iterable[Order], now: datetime, invalid: int, orphaned: int) -> None:
    """The orders in force at a load: counts by status, their windows, the next transition."""
    in_force = list(orders)
    with s.lock:
        statuses: dict[str, int] = {}
        for order in in_force:
            status = order.status_at(now)
            statuses[status] = statuses.get(status, 0) + 1
        s.orders_by_status = statuses
        s.order_windows = {o.id: (o.start.timestamp(), o.end.timestamp()) for o in in_force}
        s.orders_invalid = invalid
        s.orders_orphaned = orphaned
        upcoming = next_transition(in_force, now)
        s.next_transition_ts = upcoming.timestamp() if upcoming else None


def observe_zone(s: Snapshot, operator: str, names: int, records: int, serial: int | None,
                 record: ZoneRecord | None, held: int, outcomes: Iterable[OperatorOutcome]) -> None:
    """One operator's zone after its publish (`serial` of the file on disk, None when unreadable)."""
    with s.lock:
        s.zone_names[operator], s.zone_records[operator] = names, records
        if serial is not None:
            s.zone_serial[operator] = serial
        if record is not None:
            s.zone_publish_ts[operator] = record.published_at.timestamp()
            s.zone_in_effect[operator] = record.in_effect
        s.removals_held[operator] = held
        for o in outcomes:
            s.publish_failures.setdefault(o.operator, 0)
            s.reload_failures.setdefault(o.operator, 0)
            if not o.published:
                s.publish_failures[o.operator] += 1
            elif o.reload is not None and not o.reload.ok:
                s.reload_failures[o.operator] += 1


def observe_probe(s: Snapshot, operator: str, results: Iterable[CheckResult], serials: Mapping[str, int | None],
                  orders: Mapping[str, Order], firsts: Mapping[tuple[str, str, str], datetime],
                  now: datetime, received: Mapping[str, datetime] | None = None) -> None:
    """One operator's probe pass: verdicts per resolver, serials served, time to block and lift."""
    per_resolver: dict[tuple[str, str], int] = {}
    up: dict[str, bool] = {}
    for r in results:
        per_resolver[(r.resolver, r.verdict)] = per_resolver.get((r.resolver, r.verdict), 0) + 1
        up[r.resolver] = up.get(r.resolver, False) or r.verdict != "error"
    with s.lock:
        for key in [k for k in s.probe_checks if k[0] == operator]:
            del s.probe_checks[key]
        for (resolver, verdict), n in per_resolver.items():
            s.probe_checks[(operator, resolver, verdict)] = n
        for resolver, alive in up.items():
            s.resolver_up[(operator, resolver)] = alive
        for addr, serial in serials.items():
            if serial is not None:
                s.resolver_serial[(operator, addr)] = serial
        s.probe_last_pass_ts[operator] = now.timestamp()
        unverified = [(now - o.start).total_seconds() for o in orders.values()
                      if operator in o.operators and o.active_at(now) and (o.id, operator, "blocked") not in firsts]
        s.probe_oldest_unverified[operator] = max(unverified, default=0.0)
        for (order_id, op, kind), at in firsts.items():
            order = orders.get(order_id)
            if order is None or op != operator:
                continue
            target = s.time_to_block if kind == "blocked" else s.time_to_lift
            target[(order_id, op)] = (at - (order.start if kind == "blocked" else order.end)).total_seconds()
            got = (received or {}).get(order_id)
            if kind == "blocked" and got is not None:  # ops' figure: from receipt (or the start, if later)
                since = max(got, order.start, key=lambda t: t.timestamp())
                s.time_to_block_from_receipt[(order_id, op)] = (at - since).total_seconds()


def _same(value: Any) -> Any:
    return value


def _gauge(name: str, doc: str, labels: list[str], values: Mapping[Any, Any],
           value_of: Callable[[Any], Any] = _same) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], float(value_of(value)))
    return family


class BlockerCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.s = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.s
        with s.lock:
            yield _gauge("blocker_build_info", "Build information.", ["version"], {__version__: 1})
            statuses = {k: s.orders_by_status.get(k, 0) for k in STATUSES}
            yield _gauge("blocker_orders", "Orders by status at the last reconcile.", ["status"], statuses)
            yield _gauge("blocker_order_start_timestamp_seconds", "When each order comes into force.", ["order"],
                         {k: v[0] for k, v in s.order_windows.items()})
            yield _gauge("blocker_order_end_timestamp_seconds", "When each order stops (lift instant).", ["order"],
                         {k: v[1] for k, v in s.order_windows.items()})
            yield GaugeMetricFamily("blocker_orders_invalid", "Order files that are invalid now (their last good "
                                    "version stays in force).", value=s.orders_invalid)
            yield GaugeMetricFamily("blocker_orders_orphaned", "Orders in force whose file was removed.",
                                    value=s.orders_orphaned)
            yield _gauge("blocker_zone_entries", "Blocked names in the published zone.", ["operator"], s.zone_names)
            yield _gauge("blocker_zone_records", "Records in the published zone.", ["operator"], s.zone_records)
            yield _gauge("blocker_zone_serial", "SOA serial of the published zone.", ["operator"], s.zone_serial)
            yield _gauge("blocker_zone_publish_timestamp_seconds", "When the zone was last published.",
                         ["operator"], s.zone_publish_ts)
            yield _gauge("blocker_zone_in_effect", "1 when the resolver reload for the published zone succeeded.",
                         ["operator"], s.zone_in_effect, int)
            yield _gauge("blocker_zone_removals_held", "Removals held back until a human runs apply --force.",
                         ["operator"], s.removals_held)
            failures = CounterMetricFamily("blocker_publish_failures", "Zone publishes that failed.",
                                           labels=["operator"])
            for op, n in sorted(s.publish_failures.items()):
                failures.add_metric([op], n)
            yield failures
            reloads = CounterMetricFamily("blocker_reload_failures", "Resolver reloads that failed.",
                                          labels=["operator"])
            for op, n in sorted(s.reload_failures.items()):
                reloads.add_metric([op], n)
            yield reloads
            if s.next_transition_ts is not None:
                yield GaugeMetricFamily("blocker_next_transition_timestamp_seconds",
                                        "Next instant an order starts or lifts.", value=s.next_transition_ts)
            runs = CounterMetricFamily("blocker_reconciles", "Reconciles by result.", labels=["result"])
            for result in ("ok", "failed"):
                runs.add_metric([result], s.reconciles.get(result, 0))
            yield runs
            yield _histogram(s)
            yield GaugeMetricFamily("blocker_last_reconcile_timestamp_seconds", "When the last reconcile ended.",
                                    value=s.last_reconcile_ts)
            yield GaugeMetricFamily("blocker_last_catchup_lateness_seconds",
                                    "How late the last caught-up transition was applied.", value=s.last_catchup_seconds)
            yield GaugeMetricFamily("blocker_audit_writable", "1 when the last audit append succeeded; 0: nothing "
                                    "is published until the trail can be written.", value=int(s.audit_writable))
            yield CounterMetricFamily("blocker_audit_write_failures", "Audit appends that failed (disk full, I/O "
                                      "error).", value=s.audit_write_failures)
            yield _gauge("blocker_probe_checks", "Checks of the last probe pass by verdict.",
                         ["operator", "resolver", "verdict"], s.probe_checks)
            yield _gauge("blocker_probe_last_pass_timestamp_seconds", "When the last full probe pass ended.",
                         ["operator"], s.probe_last_pass_ts)
            yield _gauge("blocker_probe_oldest_unverified_seconds",
                         "Age of the oldest active entry not yet seen blocked on every resolver.",
                         ["operator"], s.probe_oldest_unverified)
            yield _gauge("blocker_resolver_serial", "Zone serial a resolver serves (where it can be asked).",
                         ["operator", "resolver"], s.resolver_serial)
            yield _gauge("blocker_resolver_up", "1 when the resolver answered the last probe pass.",
                         ["operator", "resolver"], s.resolver_up, int)
            yield _gauge("blocker_order_time_to_block_seconds",
                         "From the order's start to the first probe that saw it blocked on every resolver.",
                         ["order", "operator"], s.time_to_block)
            yield _gauge("blocker_order_time_to_block_from_receipt_seconds",
                         "From receipt of the order file (or its start, if later) to the first probe that saw it "
                         "blocked on every resolver: the part operations control.",
                         ["order", "operator"], s.time_to_block_from_receipt)
            yield _gauge("blocker_order_time_to_lift_seconds",
                         "From the order's end to the first probe that saw its names resolve again.",
                         ["order", "operator"], s.time_to_lift)


def _histogram(s: Snapshot) -> HistogramMetricFamily:
    buckets = [(repr(bound), n) for bound, n in zip(RECONCILE_BUCKETS, s.reconcile_buckets, strict=True)]
    buckets.append(("+Inf", s.reconcile_count))
    return HistogramMetricFamily("blocker_reconcile_duration_seconds", "Time a reconcile takes.",
                                 buckets=buckets, sum_value=s.reconcile_sum)


def registry_for(snapshot: Snapshot) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BlockerCollector(snapshot))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
