"""The publishing side of the daemon: load the orders, hand each operator to a publisher of its
own, plan it, publish it, and say what came of it (logs, audit, health, metrics, the fleet).

The daemon (blocker.run.daemon) owns one Publisher and calls it from its reconcile; it keeps the
wiring, the lifecycle and the jobs. What the daemon may replace while a publisher runs (its
config on SIGHUP, its state at start and stop) is read from it at each use, as before the split.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from apscheduler.schedulers.background import BackgroundScheduler

from blocker.clock import Clock
from blocker.config.model import Config
from blocker.fleet.follow import FleetState
from blocker.orders.legaltime import fmt_instant
from blocker.orders.load import load_orders, stat_signature
from blocker.orders.model import LoadResult, Order, OrderCache
from blocker.policy import ZoneEntries, orders_in_force
from blocker.probe.canary import wait_for_serial
from blocker.publish.plan import Caches, OperatorPlan, Plan, change_tails, file_digest
from blocker.publish.reconcile import (
    FLAG_ORPHANED,
    Effective,
    OperatorOutcome,
    PublishHold,
    plan_for,
    publish,
    record_orders,
    record_reload,
    record_served,
    retry_reload,
    shared_publish_lock,
)
from blocker.record.audit import AuditLog, AuditWriteError
from blocker.record.state import State
from blocker.run.claims import Claims
from blocker.run.health import HealthBoard
from blocker.run.logs import log_internal
from blocker.run.metrics import Snapshot, observe_orders, observe_zone
from blocker.run.scheduling import Transitions, probe_at, probes_configured
from blocker.textsafe import display_path

__all__ = ["ACTOR", "Host", "Load", "Publisher"]

log = logging.getLogger(__name__)
CATCHUP_THRESHOLD = timedelta(seconds=2)  # a transition applied later than this is a catch-up
ACTOR = "daemon"


@dataclass
class Load:
    """One load of the orders: what its publishers plan with (the config and caches of that
    instant: a SIGHUP may replace the daemon's while they publish)."""

    seq: int
    config: Config
    caches: Caches
    result: LoadResult
    eff: Effective
    now: datetime
    claimed: list[str] = field(default_factory=list)  # operators claimed, not yet handed to a publisher

class Host(Protocol):
    """What a Publisher reads from its daemon at each use: what a SIGHUP, a start or a stop
    replaces, and the daemon's own steps a publisher starts (a rerun, a probe pass)."""

    config: Config
    state: State | None
    state_dir: Path
    clock: Clock
    sleep: Callable[[float], None]
    audit: AuditLog
    snapshot: Snapshot
    board: HealthBoard
    claims: Claims
    fleet: FleetState
    scheduler: BackgroundScheduler
    transitions: Transitions

    def reconcile(self, reason: str, instant: datetime | None = None) -> bool: ...

    def probe_pass(self, reason: str) -> None: ...

    def audit_recovered(self) -> None: ...


class Publisher:
    """The daemon's publishing side, and what it remembers between reconciles: the zones it last
    published (`previous`), the orders the probes expect (`orders`), the invalid files already
    reported, the caches of files and orders. `load_lock` is held while the orders are loaded
    (and by the daemon's config reload and stop)."""

    def __init__(self, daemon: Host) -> None:
        self._daemon = daemon
        self.state_dir = daemon.state_dir
        self.clock = daemon.clock
        self.sleep = daemon.sleep
        self.audit = daemon.audit
        self.snapshot = daemon.snapshot
        self.board = daemon.board
        self.claims = daemon.claims
        self.fleet = daemon.fleet
        self.scheduler = daemon.scheduler
        self.transitions = daemon.transitions
        self.order_cache = OrderCache()
        self.caches = Caches()
        # operator -> (checksum, entries) of the zone this daemon last published or found current
        self.previous: dict[str, tuple[str, ZoneEntries]] = {}
        self.invalid_seen: dict[str, tuple[str, ...]] = {}
        self.folder_signature: tuple[Any, ...] | None = None
        # Loading the orders (and recording their versions) is one at a time; planning and
        # publishing are one at a time per operator (blocker.run.claims).
        self.load_lock = threading.Lock()
        self._load_seq = self._orders_seq = 0
        self._orphaned: set[str] = set()  # orders in force whose file was gone at the last load
        self.orders: dict[str, Order] = {}  # what the probes expect: the newest orders published

    @property
    def config(self) -> Config:
        """The daemon's config now (a SIGHUP replaces it; a load keeps the one it started with)."""
        return self._daemon.config

    @property
    def state(self) -> State | None:
        """The daemon's state: None before its start and after its stop."""
        return self._daemon.state

    def audit_failed(self, exc: AuditWriteError, operator: str = "") -> None:
        log.error("audit trail cannot be written: the previous zones keep serving", extra={"error": str(exc)})
        self.board.set_reasons(operator, [f"audit trail cannot be written: {exc}"], self.config.operators)

    def reconcile_failed(self, exc: Exception, reason: str, operator: str = "") -> None:
        extra = {"reason": reason, **({"operator": operator} if operator else {})}
        log_internal(log, self.state_dir, "reconcile failed", exc, **extra)
        self.board.set_reasons(operator, [f"reconcile failed: {type(exc).__name__}: {exc}"],
                               self.config.operators)

    def load_and_claim(self, reason: str, instant: datetime | None) -> Load | None:
        """Orders loaded and their versions recorded, under the load lock; then the operators
        this caller publishes. None once stopped."""
        with self.load_lock:
            if self.state is None or self.claims.closing:
                return None
            self._daemon.audit_recovered()
            load = self._load(reason, instant)
            load.claimed = self.claims.claim(sorted(load.config.operators))
            return load

    def _load(self, reason: str, instant: datetime | None) -> Load:
        assert self.state is not None
        config = self.config
        self.folder_signature = stat_signature(config.orders_dir)
        now = self.clock.now()
        if instant is not None and now < instant:  # a timer that woke a hair early
            self.sleep((instant - now).total_seconds())
            now = self.clock.now()
        # The periodic reconcile also checks every file's bytes against its digest: an edit in
        # place that restored size and mtime is invisible to the folder's stat signature.
        result = load_orders(config.orders_dir, config.order_rules, self.order_cache, verify=reason == "periodic")
        self._report_invalid(result)
        eff = record_orders(result, config, self.state, self.audit, now, now=now, actor=ACTOR)
        if reason == "periodic":  # a full digest of every zone file, whatever its stat says
            self.caches.files.clear()
        self.transitions.sync(eff.orders, now)
        self._load_seq += 1
        load = Load(self._load_seq, config, self.caches, result, eff, now)
        self._update_orders(load)
        return load

    def publish_claimed(self, load: Load, reason: str, hold: PublishHold) -> bool:
        """Plan and publish the claimed operators, each group of operators with the same orders
        in force in a thread of its own: a group plans together (one diff, one content, one
        rendering shared, as a full plan does), and no group waits for another's plan (a large
        order's takes seconds). Each operator of a group then publishes in a thread of its own."""
        if not load.claimed:
            return True  # every operator is being published: their publishers plan them again
        groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
        for operator in load.claimed:
            key = tuple((o.id, o.digest) for o in orders_in_force(load.eff.orders.values(), operator, load.now))
            groups.setdefault(key, []).append(operator)
        return self._in_threads([(self._plan_and_publish, (load, ops, reason), ops) for ops in groups.values()],
                                load, hold)

    def _in_threads(self, calls: list[tuple[Any, tuple[Any, ...], list[str]]], load: Load,
                    hold: PublishHold) -> bool:
        """Run each call (function, arguments, the claimed operators it releases) in a thread of
        its own, the last one in this one; whether all succeeded. Each call gets its share of the
        publish lock (its last argument), taken before `hold` (this caller's, handed to the last
        call) may be left, and leaves it when its locked part is done."""
        results: list[bool] = []
        threads = []
        for function, args, operators in calls[:-1]:
            share = hold.share()

            def work(function: Any = function, args: tuple[Any, ...] = args, share: PublishHold = share) -> None:
                try:
                    results.append(function(*args, share))
                finally:
                    share.release()
            thread = threading.Thread(target=work, name=f"publish:{','.join(operators)}", daemon=True)
            try:
                thread.start()
            except BaseException:
                share.release()
                raise
            for operator in operators:
                load.claimed.remove(operator)  # released by the thread
            threads.append(thread)
        function, args, operators = calls[-1]
        for operator in operators:
            load.claimed.remove(operator)
        try:
            results.append(function(*args, hold))
        finally:
            hold.release()
            for thread in threads:
                thread.join()
        return len(results) == len(calls) and all(results)

    def _plan_and_publish(self, load: Load, operators: list[str], reason: str, hold: PublishHold) -> bool:
        try:
            plan = self._plan(load, operators, reason)
        except BaseException as exc:
            for operator in operators:
                self.claims.release(operator)
            if isinstance(exc, AuditWriteError):
                self.audit_failed(exc)
            elif isinstance(exc, Exception):
                self.reconcile_failed(exc, reason)
            else:
                raise
            return False
        mine = Load(load.seq, load.config, load.caches, load.result, load.eff, load.now, list(operators))
        try:
            return self._in_threads([(self._publish_operator, (load, plan, op_plan, reason), [op_plan.operator])
                                     for op_plan in plan.operators], mine, hold)
        finally:
            for operator in mine.claimed:  # never handed to a publisher (no thread could start)
                self.claims.release(operator)

    def _plan(self, load: Load, operators: list[str], reason: str) -> Plan:
        assert self.state is not None
        config = load.config
        # No lock: plans of different operators run at once (see plan_for).
        plan, _ = plan_for(load.result, config, self.state, config.zones_dir, load.now, operators=operators,
                           eff=load.eff, caches=load.caches, remembered=self.previous)
        for warning in plan.warnings:
            log.warning("zone file", extra={"problem": warning})
        for op_plan in plan.operators:
            if op_plan.restore:
                log.warning("zone file changed behind blocker's back: rewriting it from the state",
                            extra={"operator": op_plan.operator, "problem": op_plan.restore,
                                   "found_sha256": op_plan.file_sha256 or "", "reason": reason})
        return plan

    def _publish_operator(self, load: Load, plan: Plan, op_plan: OperatorPlan, reason: str,
                          hold: PublishHold) -> bool:
        """Publish one operator's plan (claimed by this caller), then release it. Marked meanwhile
        by another reconcile (it found the operator busy): a new reconcile, in a thread of its
        own, loads the newest orders and plans it again, with whatever else is free then."""
        operator, ok = op_plan.operator, False
        try:
            ok = self._publish_one(load, plan, op_plan, reason, hold)
        except AuditWriteError as exc:
            self.audit_failed(exc, operator)
        except Exception as exc:
            self.reconcile_failed(exc, reason, operator)
        finally:
            hold.release()
            if self.claims.release(operator):
                threading.Thread(target=self._daemon.reconcile, args=["pending"], name=f"reconcile:{operator}",
                                 daemon=True).start()
        return ok

    def _publish_one(self, load: Load, plan: Plan, op_plan: OperatorPlan, reason: str, hold: PublishHold) -> bool:
        assert self.state is not None
        config, now, operator = load.config, load.now, op_plan.operator
        mine = Plan(plan.at, [op_plan], plan.orders, [])
        self._report_catchups(mine, now)
        outcomes = publish(mine, config, config.zones_dir, self.state, self.audit, now=now, actor=ACTOR,
                           record_applied=False)
        retried = self._retry_reload(load, operator) if not outcomes else []
        if any(o.awaiting_serial for o in outcomes + retried):
            # The resolvers are asked outside the publish lock: a slow one holds back no other
            # publisher (nor `blocker apply`); the answer is recorded under it again.
            hold.release()
            behind = {id(o): wait_for_serial(config, o.operator, o.serial, config.publish_verify_timeout)
                      for o in outcomes + retried if o.awaiting_serial and o.serial is not None}
            with shared_publish_lock(self.state_dir):
                return self._published(load, op_plan, reason, outcomes, retried, behind)
        return self._published(load, op_plan, reason, outcomes, retried, {})

    def _published(self, load: Load, op_plan: OperatorPlan, reason: str, outcomes: list[OperatorOutcome],
                   retried: list[OperatorOutcome], behind: dict[int, list[str]]) -> bool:
        """One operator's publish done (under the publish lock): the resolvers' answers
        recorded, then logs, health, metrics, the fleet and a probe pass after it."""
        config, operator = load.config, op_plan.operator
        outcomes = [record_served(o, behind[id(o)], config, self.state, self.audit, actor=ACTOR)
                    if id(o) in behind else o for o in outcomes]
        retried = [self._retried(o, behind.get(id(o)), config) for o in retried]
        if any(not o.published for o in outcomes):
            self.previous.pop(operator, None)
        else:
            self.previous[operator] = (op_plan.zone.checksum, op_plan.entries)
        self._log_outcomes(outcomes, reason)
        outcomes += retried
        self._update(load, op_plan, outcomes)
        self.fleet.after_publish(config, [(o.operator, o.serial) for o in outcomes if o.published and o.serial])
        if outcomes and probes_configured(config) and self.scheduler.running:
            # Prove the new zone at once: the next periodic pass may be minutes away.
            probe_at(self.scheduler, self._daemon.probe_pass, self.clock.now() + timedelta(seconds=1), "after-publish")
        return not any(not o.published or (o.reload is not None and not o.reload.ok) for o in outcomes)

    def _retry_reload(self, load: Load, operator: str) -> list[OperatorOutcome]:
        """A zone on disk whose reload failed is reloaded again on every reconcile until it takes
        (blocker.publish.reconcile.retry_reload); recorded at once unless the resolvers are to be asked."""
        assert self.state is not None
        outcome = retry_reload(operator, load.config, load.config.zones_dir, self.state, load.caches.files)
        if outcome is None:
            return []
        if not outcome.awaiting_serial and outcome.reload is not None and outcome.serial is not None:
            record_reload(self.state, self.audit, operator, outcome.serial, outcome.reload, actor=ACTOR, retry=True)
        return [outcome]

    def _retried(self, outcome: OperatorOutcome, behind: list[str] | None, config: Config) -> OperatorOutcome:
        if behind is not None:
            outcome = record_served(outcome, behind, config, self.state, self.audit, actor=ACTOR)
        extra = {"operator": outcome.operator, "serial": outcome.serial}
        if outcome.reload is not None and outcome.reload.ok:
            log.info("reload retried: zone now in effect", extra=extra)
        else:
            log.error("reload retried and failed again: not yet in effect",
                      extra={**extra, "error": outcome.reload.message if outcome.reload is not None else ""})
        return outcome

    def _report_invalid(self, result: LoadResult) -> None:
        current: dict[str, tuple[str, ...]] = {}
        for error in result.errors:
            current.setdefault(error.path, ())
            current[error.path] += (str(error),)
        for path, errors in sorted(current.items()):
            if self.invalid_seen.get(path) != errors:  # once per change, not once per reconcile
                for line in errors:
                    log.error("invalid order file: last good version stays in force", extra={"problem": line})
                self.audit.append("order-invalid", {"file": path, "errors": list(errors)}, actor=ACTOR)
        for path in set(self.invalid_seen) - set(current):
            log.info("order file valid again", extra={"file": path})
        self.invalid_seen = current

    def _report_catchups(self, plan: Plan, now: datetime) -> None:
        seen: set[tuple[str, str, str]] = set()
        for op_plan in plan.operators:
            # Per distinct (ids, reasons), not per change: a first publish is 1.5M changes of 1,000 kinds.
            for _, _, order_ids, _, old_order_ids, reasons in dict.fromkeys(change_tails(op_plan.changes)):
                for why in reasons:
                    if why not in ("started", "expired", "lifted"):
                        continue
                    ids = order_ids if why == "started" else old_order_ids
                    for order_id in ids:
                        order = plan.orders.get(order_id)
                        key = (order_id, op_plan.operator, why)
                        if order is None or key in seen:
                            continue
                        seen.add(key)
                        at = order.start if why == "started" else order.end
                        if (why == "started") != (order.active_at(now)):
                            continue
                        late = now - at
                        data = {"order": order_id, "operator": op_plan.operator, "transition": why,
                                "instant": fmt_instant(at, order.tz), "late_seconds": round(late.total_seconds(), 3)}
                        if late > CATCHUP_THRESHOLD:
                            log.warning("catch-up: transition applied late", extra=data)
                            self.audit.append("catch-up", data, actor=ACTOR)
                            with self.snapshot.lock:
                                self.snapshot.last_catchup_seconds = late.total_seconds()
                        else:
                            log.info("transition applied", extra=data)

    def _log_outcomes(self, outcomes: list[OperatorOutcome], reason: str) -> None:
        for o in outcomes:
            if not o.published:
                log.error("publish failed; the previous zone stays", extra={"operator": o.operator, "error": o.error})
            elif o.reload is not None and not o.reload.ok:
                log.error("zone published but reload failed: not yet in effect",
                          extra={"operator": o.operator, "serial": o.serial, "error": o.reload.message})
            else:
                log.info("zone published", extra={"operator": o.operator, "serial": o.serial, "reason": reason})

    def _update_orders(self, load: Load) -> None:
        """Health and metrics of the orders themselves, at each load."""
        result, eff, now = load.result, load.eff, load.now
        reasons: list[str] = []
        if not load.config.orders_dir.is_dir():
            reasons.append(f"orders folder {display_path(load.config.orders_dir)} does not exist "
                           "(the last good versions stay in force)")
        orphaned = sorted(i for i, f in eff.flags.items() if f == FLAG_ORPHANED)
        for order_id in sorted(self._orphaned - set(orphaned)):
            if order_id in result.orders:  # not lifted by force nor ended: its file is there again
                log.info("order file is back: the order is read from it again", extra={"order": order_id})
        self._orphaned = set(orphaned)
        self.board.set_orders(reasons, {"orders_invalid": sorted(result.invalid_files), "orders_orphaned": orphaned},
                              self.config.operators)
        observe_orders(self.snapshot, eff.orders.values(), now, len(result.invalid_files), len(orphaned))

    def _update(self, load: Load, op_plan: OperatorPlan, outcomes: list[OperatorOutcome]) -> None:
        """Health and metrics of one operator, after its publish."""
        assert self.state is not None
        config, op = load.config, op_plan.operator
        record = self.state.zone(op)
        path = config.zones_dir / f"{op}.rpz"
        reasons: list[str] = []
        # What was published is the state's; the file is only checked to hold those bytes.
        on_disk = (record is not None and bool(record.digest)
                   and file_digest(path, load.caches.files)[0] == record.digest)
        if any(o.operator == op and not o.published for o in outcomes):
            reasons.append(f"{op}: publish failed")
        elif record is not None and record.digest and not on_disk:
            reasons.append(f"{op}: zone file is not what was published")
        elif record is None or not on_disk or record.checksum != op_plan.zone.checksum:
            reasons.append(f"{op}: published zone is not current")
        elif not record.in_effect:
            reasons.append(f"{op}: reload failed: {record.reload_message}")
        with self.board.lock:
            self.board.set_operator(op, reasons, len(op_plan.held))
            if load.seq > self._orders_seq:  # what the probes expect: the newest orders published
                self._orders_seq, self.orders = load.seq, dict(load.eff.orders)
            self.board.compose(self.config.operators)
        observe_zone(self.snapshot, op, op_plan.zone.names, op_plan.zone.entries,
                     record.serial if record is not None and on_disk else None, record, len(op_plan.held), outcomes)
