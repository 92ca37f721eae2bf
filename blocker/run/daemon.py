"""The daemon: keep every operator's zone in step with the orders, to the second, unattended.

Each reconcile recomputes the whole desired state from the orders and publishes what
differs; scheduled jobs at each order's start and lift instant only decide *when* to
reconcile, never *what*. A periodic reconcile and a poll of the orders folder back them up.
Operators are planned and published in threads of their own (one publisher per operator at a
time), so one operator's long publish never makes another's transition late.

This module is the reconcile side and the wiring; the parts around it live beside it:
lifecycle (lock, signals, config reload), scheduling (the APScheduler jobs), http (the two
endpoints), health (/healthz), probing (probe passes), metrics and logs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from blocker import __version__
from blocker.clock import SYSTEM, Clock
from blocker.config.model import Config
from blocker.fleet.follow import FleetState
from blocker.orders.legaltime import fmt_instant
from blocker.orders.load import load_orders, stat_signature
from blocker.orders.model import LoadResult, Order, OrderCache
from blocker.policy import ZoneEntries, orders_in_force
from blocker.probe.canary import wait_for_serial
from blocker.publish.plan import Caches, OperatorPlan, Plan, file_digest
from blocker.publish.reconcile import (
    FLAG_ORPHANED,
    Effective,
    OperatorOutcome,
    PublishHold,
    plan_for,
    publish,
    publish_lock,
    record_orders,
    record_reload,
    record_served,
    retry_reload,
    shared_publish_lock,
)
from blocker.publish.writer import remove_stale_temps
from blocker.record.audit import AuditLog, AuditWriteError
from blocker.record.state import State
from blocker.run import http
from blocker.run.claims import Claims
from blocker.run.health import Health, HealthBoard
from blocker.run.lifecycle import DaemonError, StateDirLock, install_signals, reread_config
from blocker.run.logs import AuditTail, log_internal
from blocker.run.metrics import (
    Snapshot,
    count_zone_changed_outside,
    observe_orders,
    observe_reconcile,
    observe_zone,
    registry_for,
    set_operators,
)
from blocker.run.probing import Prober
from blocker.run.scheduling import Transitions, new_scheduler, probe_at, probes_configured, schedule_periodic
from blocker.textsafe import display_path

__all__ = ["Daemon", "DaemonError"]

log = logging.getLogger(__name__)
CATCHUP_THRESHOLD = timedelta(seconds=2)  # a transition applied later than this is a catch-up
ACTOR = "daemon"


@dataclass
class _Load:
    """One load of the orders: what its publishers plan with (the config and caches of that
    instant: a SIGHUP may replace the daemon's while they publish)."""

    seq: int
    config: Config
    caches: Caches
    result: LoadResult
    eff: Effective
    now: datetime
    claimed: list[str] = field(default_factory=list)  # operators claimed, not yet handed to a publisher


class Daemon:
    """One daemon on one state folder. `clock` is where "now" comes from and `sleep` how a timer
    that woke early waits for its instant (a test passes a fixed clock and a sleep that moves it)."""

    def __init__(self, config: Config, config_path: Path | None = None,
                 overrides: dict[str, Any] | None = None, *, clock: Clock = SYSTEM,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.config_path = config_path
        self.overrides = overrides or {}
        self.state_dir = config.state_dir
        self.clock = clock
        self.sleep = sleep
        self.snapshot = Snapshot()
        self.registry = registry_for(self.snapshot)
        set_operators(self.snapshot, config.operators)
        self.board = HealthBoard()
        # blocker.fleet: propagation to the secondaries, its metrics and audit records
        self.fleet = FleetState(lambda kind, data: self.audit.append(kind, data, actor=ACTOR))
        self.registry.register(self.fleet)
        self.order_cache = OrderCache()
        self.caches = Caches()
        # operator -> (checksum, entries) of the zone this daemon last published or found current
        self.previous: dict[str, tuple[str, ZoneEntries]] = {}
        self.invalid_seen: dict[str, tuple[str, ...]] = {}
        self.folder_signature: tuple[Any, ...] | None = None
        # Loading the orders (and recording their versions) is one at a time; planning and
        # publishing are one at a time per operator (blocker.run.claims).
        self._load_lock = threading.Lock()
        self.claims = Claims()
        self._load_seq = self._orders_seq = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._hup = False
        self._lock = StateDirLock(self.state_dir)
        self.state: State | None = None
        self.audit = AuditLog(self.state_dir, actor=ACTOR, observer=self._audit_observed)
        self._audit_down_since: datetime | None = None
        self.audit_tail = AuditTail(self.audit.path, ACTOR, log, self._audit_recorded)
        self._orphaned: set[str] = set()  # orders in force whose file was gone at the last load
        self.scheduler = new_scheduler(config)
        self.transitions = Transitions(self.scheduler, self.reconcile)
        self.http: http.BoundedHTTPServer | None = None
        self.orders: dict[str, Order] = {}  # what the probes expect: the newest orders published
        self.prober = Prober(self.state_dir, self.audit, self.snapshot, clock, lambda: self.orders,
                             self.previous_zone)
        self._watch_error = ""  # the zone watch's last failure, logged once
        self._zone_marks: dict[str, tuple[Any, ...]] = {}  # operator -> the damaged zone file last seen

    @property
    def health(self) -> Health:
        return self.board.health

    def previous_zone(self, operator: str) -> tuple[str, ZoneEntries] | None:
        return self.previous.get(operator)

    # ------------------------------------------------------------------------------------------
    def acquire_lock(self) -> None:
        self._lock.acquire()

    def start_http(self) -> None:
        host, port = self.config.http_listen
        try:
            self.http = http.serve((host, port), self.registry, self.health_payload, self.state_dir)
        except OSError as exc:
            raise DaemonError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        log.info("listening", extra={"address": f"{host}:{self.http.server_address[1]}"})

    def run(self) -> int:
        self.acquire_lock()
        try:
            self.state = State(self.state_dir)
            with publish_lock(self.state_dir):
                for stale in remove_stale_temps(self.config.zones_dir):
                    log.info("removed a temp file left by a killed publisher", extra={"file": display_path(stale)})
            self.start_http()
            self.audit_tail.skip_existing()
            try:  # repairs a torn end first; an unwritable trail must not stop the daemon (health says it)
                self.audit.append("daemon-start", {"version": __version__, "pid": os.getpid(),
                                                   "config": self.config.source,
                                                   "orders_dir": str(self.config.orders_dir),
                                                   "zones_dir": str(self.config.zones_dir)})
            except AuditWriteError as exc:
                log.error("audit trail cannot be written: nothing is published until it can",
                          extra={"error": str(exc)})
            log.info("daemon started", extra={"version": __version__, "orders_dir": str(self.config.orders_dir),
                                              "zones_dir": str(self.config.zones_dir),
                                              "state_dir": str(self.state_dir)})
            install_signals(self.stop, self._on_hup)
            self.reconcile("start")
            schedule_periodic(self.scheduler, self.config, reconcile=self.reconcile, watch=self.watch,
                              watch_zones=self.watch_zones, probe_pass=self.probe_pass)
            self.scheduler.start()
            if probes_configured(self.config):
                probe_at(self.scheduler, self.probe_pass, self.clock.now(), "start")
            while not self._stop.is_set():
                self._wake.wait(1.0)
                self._wake.clear()
                if self._hup and not self._stop.is_set():
                    self._hup = False
                    self.reload_config()
                    # Re-read every file, even one whose mtime, size and inode look unchanged.
                    self.order_cache = OrderCache()
                    self.reconcile("sighup")
            return 0
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        if self.scheduler.running:
            # Not wait=True: APScheduler then waits for running jobs while holding its job-store
            # lock, and a reconcile job calling add_job/get_job would deadlock the stop.
            self.scheduler.shutdown(wait=False)
        if self.http is not None:
            http.stop(self.http)
            self.http = None
        # Publishers still running finish first (a marked operator is not planned again); a
        # reconcile or probe pass starting later finds no state.
        self.claims.close()
        with self._load_lock, self.prober.lock:
            if self.state is not None:
                with contextlib.suppress(AuditWriteError):  # already reported by health and metrics
                    self.audit.append("daemon-stop", {"pid": os.getpid()})
                self.audit_tail.poll()
                log.info("daemon stopped")
                self.state.close()
                self.state = None
        self._lock.release()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _on_hup(self) -> None:
        self._hup = True
        self._wake.set()

    def reload_config(self) -> None:
        """SIGHUP: re-read the config file; a broken one keeps the running config (fail closed)."""
        fresh = reread_config(self.config_path, self.overrides)
        if fresh is not None and fresh != self.config:
            with self._load_lock:  # a publisher running keeps the config and caches of its load
                self.config = fresh
                self.order_cache = OrderCache()
                self.caches = Caches()
                self.previous = {}
            set_operators(self.snapshot, fresh.operators)
            log.info("config reloaded", extra={"config": str(self.config_path)})

    def health_payload(self) -> tuple[int, dict[str, Any]]:
        return self.board.payload(self.clock.now(), self.audit.last_error, self.config.reconcile_interval)

    def probe_pass(self, reason: str) -> None:
        """Probe every operator's resolvers for the state in force now; record what was proven."""
        with self.prober.lock:
            if self.state is None:  # stopped
                return
            self.prober.run_pass(self.config, self.state, reason)

    # the watches ------------------------------------------------------------------------------
    def watch(self) -> None:
        try:
            self.audit_tail.poll()
            signature = stat_signature(self.config.orders_dir)
        except Exception as exc:  # a job must never end in APScheduler's own traceback
            log_internal(log, self.state_dir, "orders watch failed", exc)
            return
        if signature != self.folder_signature:
            self.reconcile("orders-changed")

    def watch_zones(self) -> None:
        """Every zone file is what was last published, to the byte (its whole digest, not its
        header, which a truncation keeps): one edited, truncated, emptied, deleted or replaced
        behind our back is rewritten from the state at once, and /healthz is 503 until it is."""
        # Not an operator a reconcile is publishing: between its write of a zone and its record of
        # the digest, the file is new and the state not yet. The others are claimed meanwhile.
        free = self.claims.claim(sorted(self.config.operators), mark=False)
        changed: list[str] = []
        try:
            changed = self._damaged_zones(free)
            self._watch_error = ""
        except Exception as exc:  # a corrupt state row, say: logged once (each tick would flood), the
            if repr(exc) != self._watch_error:  # reconcile's own failure keeps /healthz at 503
                self._watch_error = repr(exc)
                log_internal(log, self.state_dir, "zone watch failed", exc)
        finally:
            marked = [op for op in free if self.claims.release(op)]
        if changed or marked:  # /healthz says what the reconcile finds: restored, or why not (503)
            self.reconcile("zone-changed")

    def _damaged_zones(self, operators: list[str]) -> list[str]:
        state = self.state
        if state is None:
            return []
        changed = []
        for operator, record in state.zones().items():
            if operator not in operators or operator not in self.config.operators or not record.digest:
                continue
            path = self.config.zones_dir / f"{operator}.rpz"
            digest, _ = file_digest(path, self.caches.files)
            if digest == record.digest:
                self._zone_marks.pop(operator, None)
                continue
            try:  # what is there now, so that a rewrite that failed is not retried every tick
                st = os.lstat(path)
                mark: tuple[Any, ...] = (digest, st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            except OSError:
                mark = (digest,)
            if self._zone_marks.get(operator) == mark:
                continue
            self._zone_marks[operator] = mark
            changed.append(operator)
            log.warning("zone file is not what was published", extra={
                "operator": operator, "file": str(path), "found_sha256": digest or "missing or not a file",
                "published_sha256": record.digest})
        return changed

    # the reconcile ----------------------------------------------------------------------------
    def reconcile(self, reason: str, instant: datetime | None = None) -> bool:
        """Load the orders (one at a time: their receipts go to the trail in order), then plan
        and publish each operator that no other reconcile is publishing, each in its own
        thread: a large publish on one operator (its zone check, its reload) holds back no
        other operator's transition. An operator busy elsewhere is marked, and its publisher
        plans it again from the newest orders when it is done (at most one such rerun)."""
        if self.state is None:  # stopped
            return False
        started = self.clock.monotonic()
        load: _Load | None = None
        ok = False
        hold: PublishHold | None = None
        try:
            hold = PublishHold(self.state_dir)  # handed on to the publishers: never lapses before them
            load = self._load_and_claim(reason, instant)
            if load is None:
                return False
            ok = self._publish_claimed(load, reason, hold)
        except AuditWriteError as exc:  # nothing was published whose change is not on record
            self._audit_failed(exc)
        except Exception as exc:  # the daemon keeps running: the next reconcile tries again
            self._reconcile_failed(exc, reason)
        finally:
            if hold is not None:
                hold.release()
            # Claimed but never handed to a publisher (the plan failed): free for the next reconcile.
            for operator in load.claimed if load is not None else ():
                self.claims.release(operator)
        # /healthz's last_reconcile: this one, its publishers all done
        self.board.reconciled(load.now if load is not None else self.clock.now(), self.config.operators)
        with self.snapshot.lock:
            observe_reconcile(self.snapshot, self.clock.monotonic() - started, ok)
            self.snapshot.last_reconcile_ts = self.clock.now().timestamp()
        try:
            self.audit_tail.poll()
        except Exception as exc:  # the log of the trail must never fail a reconcile
            log_internal(log, self.state_dir, "audit trail follow failed", exc)
        return ok

    def _audit_recorded(self, record: dict[str, Any]) -> None:
        """Each new record of the trail, whoever wrote it: the metrics that count events."""
        data = record.get("data")
        operator = data.get("operator") if isinstance(data, dict) else None
        if record.get("event") == "zone-restored" and isinstance(operator, str):
            count_zone_changed_outside(self.snapshot, operator)

    def _audit_observed(self, ok: bool, error: str) -> None:
        """Every append's outcome, from whichever thread appended: the metric follows at once."""
        with self.snapshot.lock:
            self.snapshot.audit_writable = ok
            if not ok:
                self.snapshot.audit_write_failures += 1
        if not ok and self._audit_down_since is None:
            self._audit_down_since = self.clock.now()

    def _audit_recovered(self) -> None:
        """After a failed append, a record saying the trail is writable again, and since when it
        was not: the gap in the trail is itself on record. Raises AuditWriteError while it is not."""
        if self.audit.last_error is None:
            return
        since, error = self._audit_down_since, self.audit.last_error
        self.audit.append("audit-writable", {"error": error, "since": since.isoformat() if since else None})
        self._audit_down_since = None
        log.info("audit trail writable again", extra={"error_was": error})

    def _audit_failed(self, exc: AuditWriteError, operator: str = "") -> None:
        log.error("audit trail cannot be written: the previous zones keep serving", extra={"error": str(exc)})
        self.board.set_reasons(operator, [f"audit trail cannot be written: {exc}"], self.config.operators)

    def _reconcile_failed(self, exc: Exception, reason: str, operator: str = "") -> None:
        extra = {"reason": reason, **({"operator": operator} if operator else {})}
        log_internal(log, self.state_dir, "reconcile failed", exc, **extra)
        self.board.set_reasons(operator, [f"reconcile failed: {type(exc).__name__}: {exc}"],
                               self.config.operators)

    def _load_and_claim(self, reason: str, instant: datetime | None) -> _Load | None:
        """Orders loaded and their versions recorded, under the load lock; then the operators
        this caller publishes. None once stopped."""
        with self._load_lock:
            if self.state is None or self.claims.closing:
                return None
            self._audit_recovered()
            load = self._load(reason, instant)
            load.claimed = self.claims.claim(sorted(load.config.operators))
            return load

    def _load(self, reason: str, instant: datetime | None) -> _Load:
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
        load = _Load(self._load_seq, config, self.caches, result, eff, now)
        self._update_orders(load)
        return load

    def _publish_claimed(self, load: _Load, reason: str, hold: PublishHold) -> bool:
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

    def _in_threads(self, calls: list[tuple[Any, tuple[Any, ...], list[str]]], load: _Load,
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

    def _plan_and_publish(self, load: _Load, operators: list[str], reason: str, hold: PublishHold) -> bool:
        try:
            plan = self._plan(load, operators, reason)
        except BaseException as exc:
            for operator in operators:
                self.claims.release(operator)
            if isinstance(exc, AuditWriteError):
                self._audit_failed(exc)
            elif isinstance(exc, Exception):
                self._reconcile_failed(exc, reason)
            else:
                raise
            return False
        mine = _Load(load.seq, load.config, load.caches, load.result, load.eff, load.now, list(operators))
        try:
            return self._in_threads([(self._publish_operator, (load, plan, op_plan, reason), [op_plan.operator])
                                     for op_plan in plan.operators], mine, hold)
        finally:
            for operator in mine.claimed:  # never handed to a publisher (no thread could start)
                self.claims.release(operator)

    def _plan(self, load: _Load, operators: list[str], reason: str) -> Plan:
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

    def _publish_operator(self, load: _Load, plan: Plan, op_plan: OperatorPlan, reason: str,
                          hold: PublishHold) -> bool:
        """Publish one operator's plan (claimed by this caller), then release it. Marked meanwhile
        by another reconcile (it found the operator busy): a new reconcile, in a thread of its
        own, loads the newest orders and plans it again, with whatever else is free then."""
        operator, ok = op_plan.operator, False
        try:
            ok = self._publish_one(load, plan, op_plan, reason, hold)
        except AuditWriteError as exc:
            self._audit_failed(exc, operator)
        except Exception as exc:
            self._reconcile_failed(exc, reason, operator)
        finally:
            hold.release()
            if self.claims.release(operator):
                threading.Thread(target=self.reconcile, args=["pending"], name=f"reconcile:{operator}",
                                 daemon=True).start()
        return ok

    def _publish_one(self, load: _Load, plan: Plan, op_plan: OperatorPlan, reason: str, hold: PublishHold) -> bool:
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

    def _published(self, load: _Load, op_plan: OperatorPlan, reason: str, outcomes: list[OperatorOutcome],
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
            probe_at(self.scheduler, self.probe_pass, self.clock.now() + timedelta(seconds=1), "after-publish")
        return not any(not o.published or (o.reload is not None and not o.reload.ok) for o in outcomes)

    def _retry_reload(self, load: _Load, operator: str) -> list[OperatorOutcome]:
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
            for change in op_plan.changes:
                for why in change.reasons:
                    if why not in ("started", "expired", "lifted"):
                        continue
                    ids = change.order_ids if why == "started" else change.old_order_ids
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

    def _update_orders(self, load: _Load) -> None:
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

    def _update(self, load: _Load, op_plan: OperatorPlan, outcomes: list[OperatorOutcome]) -> None:
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

