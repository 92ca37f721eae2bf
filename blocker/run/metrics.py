"""Prometheus metrics, built at scrape time from the daemon's current snapshot.

A custom collector rather than long-lived labelled gauges: an order that leaves the folder
leaves the metrics with it, and label sets stay bounded (operator, order, resolver; never a
domain name).

Every counter, and every per-operator count, has a sample from the first scrape on: 0 for each
configured operator (`Snapshot.operators`). A counter born at its first failure has no earlier
sample, and `increase()` over a series with one sample is empty: the alert on the first failure
would never fire. Timestamps and serials stay absent until known (0 would read as "1970").
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
    operators: tuple[str, ...] = ()  # the configured operators: each has every per-operator count, 0 or more
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
    zone_changed_outside: dict[str, int] = field(default_factory=dict)  # zone files rewritten from the state
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
    # (order, operator) -> seconds since the later of its start and its receipt, not yet verified
    order_unverified: dict[tuple[str, str], float] = field(default_factory=dict)
    probe_sample: dict[str, tuple[int, int]] = field(default_factory=dict)  # operator -> (whole set, asked)
    probe_sweep_ts: dict[str, float] = field(default_factory=dict)  # operator -> when a sweep last completed
    # `blocker probe-agent`: the `agent` label every probe metric carries ("" in the daemon: none)
    agent: str = ""
    time_to_block_from_receipt: dict[tuple[str, str], float] = field(default_factory=dict)


def set_operators(s: Snapshot, operators: Iterable[str]) -> None:
    """The configured operators (at start and on each config reload): their series exist at 0."""
    with s.lock:
        s.operators = tuple(sorted(operators))


def count_zone_changed_outside(s: Snapshot, operator: str) -> None:
    """A zone file found changed behind blocker's back (and rewritten from the state)."""
    with s.lock:
        s.zone_changed_outside[operator] = s.zone_changed_outside.get(operator, 0) + 1


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
    """One operator's probe pass: verdicts per resolver, serials served, time to block and lift,
    and how long each order in force has waited for its first verification. That wait counts
    from the later of its start and its receipt (`received`: when blocker first had its file):
    an order received late has not been waiting on ops before it arrived."""
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
        for pair in [k for k in s.order_unverified if k[1] == operator]:
            del s.order_unverified[pair]
        for o in orders.values():
            if operator in o.operators and o.active_at(now) and (o.id, operator, "blocked") not in firsts:
                since = max(o.start, (received or {}).get(o.id, o.start))
                s.order_unverified[(o.id, operator)] = max(0.0, (now - since).total_seconds())
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


def _per_operator(s: Snapshot, values: Mapping[str, float]) -> dict[str, float]:
    """`values` with a 0 for every configured operator it lacks (an operator removed from the
    config keeps what it had until the daemon restarts)."""
    return {**dict.fromkeys(s.operators, 0), **values}


def _counter(name: str, doc: str, s: Snapshot, values: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["operator"])
    for op, n in sorted(_per_operator(s, values).items()):
        family.add_metric([op], n)
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
            yield _gauge("blocker_zone_entries", "Blocked names in the published zone.", ["operator"],
                         _per_operator(s, s.zone_names))
            yield _gauge("blocker_zone_records", "Records in the published zone.", ["operator"],
                         _per_operator(s, s.zone_records))
            yield _gauge("blocker_zone_serial", "SOA serial of the published zone.", ["operator"], s.zone_serial)
            yield _gauge("blocker_zone_publish_timestamp_seconds", "When the zone was last published.",
                         ["operator"], s.zone_publish_ts)
            yield _gauge("blocker_zone_in_effect", "1 when the resolver reload for the published zone succeeded.",
                         ["operator"], s.zone_in_effect, int)
            yield _gauge("blocker_zone_removals_held", "Removals held back until a human runs apply --force.",
                         ["operator"], _per_operator(s, s.removals_held))
            yield _counter("blocker_publish_failures", "Zone publishes that failed.", s, s.publish_failures)
            yield _counter("blocker_reload_failures", "Resolver reloads that failed.", s, s.reload_failures)
            yield _counter("blocker_zone_changed_outside", "Zone files found changed behind blocker's back "
                           "(edited, truncated, removed, replaced) and rewritten from the state.", s,
                           s.zone_changed_outside)
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
            yield from probe_families(s)


def probe_families(s: Snapshot) -> Iterator[Metric]:
    """The probe metrics (lock held): the daemon's, and a probe agent's with its `agent` label (a
    central Prometheus scraping or federating many agents keeps their series apart)."""
    extra = [s.agent] if s.agent else []
    labels: Callable[[list[str]], list[str]] = (lambda names: [*names, "agent"]) if s.agent else (lambda n: n)

    def gauge(name: str, doc: str, names: list[str], values: Mapping[Any, Any],
              value_of: Callable[[Any], Any] = _same) -> GaugeMetricFamily:
        keyed = {(*(k if isinstance(k, tuple) else (k,)), *extra): v for k, v in values.items()}
        return _gauge(name, doc, labels(names), keyed, value_of)

    yield gauge("blocker_probe_checks", "Checks of the last probe pass by verdict.",
                ["operator", "resolver", "verdict"], s.probe_checks)
    yield gauge("blocker_probe_last_pass_timestamp_seconds", "When the last full probe pass ended.",
                ["operator"], s.probe_last_pass_ts)
    yield gauge("blocker_probe_oldest_unverified_seconds",
                "Age of the oldest active entry not yet seen blocked on every resolver.",
                ["operator"], _per_operator(s, s.probe_oldest_unverified))
    yield gauge("blocker_order_unverified_seconds",
                "Per order in force not yet seen blocked on every resolver: seconds since the later "
                "of its start and its receipt.", ["order", "operator"], s.order_unverified)
    yield gauge("blocker_resolver_serial", "Zone serial a resolver serves (where it can be asked).",
                ["operator", "resolver"], s.resolver_serial)
    yield gauge("blocker_resolver_up", "1 when the resolver answered the last probe pass.",
                ["operator", "resolver"], s.resolver_up, int)
    yield gauge("blocker_order_time_to_block_seconds",
                "From the order's start to the first probe that saw it blocked on every resolver.",
                ["order", "operator"], s.time_to_block)
    yield gauge("blocker_order_time_to_block_from_receipt_seconds",
                "From receipt of the order file (or its start, if later) to the first probe that saw it "
                "blocked on every resolver: the part operations control.",
                ["order", "operator"], s.time_to_block_from_receipt)
    yield gauge("blocker_order_time_to_lift_seconds",
                "From the order's end to the first probe that saw its names resolve again.",
                ["order", "operator"], s.time_to_lift)
    yield gauge("blocker_probe_sample_checks", "Checks of the operator's whole set (scope=total) and asked by "
                "the last pass (scope=asked: changed, failing, controls and the rotating sample).",
                ["operator", "scope"], {**{(op, "total"): t for op, (t, _) in s.probe_sample.items()},
                                        **{(op, "asked"): a for op, (_, a) in s.probe_sample.items()}})
    yield gauge("blocker_probe_sweep_timestamp_seconds", "When the rotation last covered the operator's whole "
                "set (probe.sweep_period bounds the gap).", ["operator"], s.probe_sweep_ts)


class ProbeAgentCollector(Collector):
    """What a probe agent exposes: its build, its audit trail, the probe metrics (labelled with
    the agent). Not the daemon's reconcile and zone metrics: an agent never reconciles, and a
    reconcile timestamp of 0 would page BlockerReconcileStale for every agent."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.s = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.s
        with s.lock:
            yield _gauge("blocker_build_info", "Build information.", ["version"], {__version__: 1})
            yield _gauge("blocker_probe_agent_info", "1 for a probe agent: its name (the `agent` label).",
                         ["agent"], {s.agent: 1})
            yield GaugeMetricFamily("blocker_audit_writable", "1 when the last audit append succeeded.",
                                    value=int(s.audit_writable))
            yield from probe_families(s)


def _histogram(s: Snapshot) -> HistogramMetricFamily:
    buckets = [(repr(bound), n) for bound, n in zip(RECONCILE_BUCKETS, s.reconcile_buckets, strict=True)]
    buckets.append(("+Inf", s.reconcile_count))
    return HistogramMetricFamily("blocker_reconcile_duration_seconds", "Time a reconcile takes.",
                                 buckets=buckets, sum_value=s.reconcile_sum)


def registry_for(snapshot: Snapshot, *, agent: bool = False) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProbeAgentCollector(snapshot) if agent else BlockerCollector(snapshot))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
