"""The daemon: keep every operator's zone in step with the orders, to the second, unattended.

Each reconcile recomputes the whole desired state from the orders and publishes what
differs; scheduled jobs at each order's start and lift instant only decide *when* to
reconcile, never *what*. A periodic reconcile and a poll of the orders folder back them up.
Operators are planned and published in threads of their own (one publisher per operator at a
time), so one operator's long publish never makes another's transition late.

This module is the wiring, the lifecycle and the jobs (the reconcile, the watches, the probe
passes); the parts around it live beside it: publishing (loading the orders, the per-operator
publishers: what a reconcile does), lifecycle (lock, signals, config reload), scheduling (the
APScheduler jobs), http (the two endpoints), health (/healthz), probing (probe passes), metrics
and logs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from blocker import __version__
from blocker.clock import SYSTEM, Clock
from blocker.config.model import Config
from blocker.fleet.follow import FleetState
from blocker.orders.load import stat_signature
from blocker.orders.model import OrderCache
from blocker.policy import ZoneEntries
from blocker.publish.plan import Caches, file_digest
from blocker.publish.reconcile import (
    PublishHold,
    publish_lock,
)
from blocker.publish.writer import remove_stale_temps
from blocker.record.audit import AuditLog, AuditWriteError
from blocker.record.state import State
from blocker.run import http
from blocker.run.claims import Claims
from blocker.run.health import Health, HealthBoard
from blocker.run.lifecycle import DaemonError, Foreground, StateDirLock, install_signals, reread_config
from blocker.run.logs import AuditTail, log_internal
from blocker.run.metrics import (
    Snapshot,
    count_zone_changed_outside,
    observe_reconcile,
    registry_for,
    set_operators,
)
from blocker.run.probing import Prober
from blocker.run.publishing import ACTOR, Load, Publisher
from blocker.run.scheduling import Transitions, new_scheduler, probe_at, probes_configured, schedule_periodic
from blocker.textsafe import display_path

__all__ = ["Daemon", "DaemonError"]

log = logging.getLogger(__name__)


class Daemon(Foreground):
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
        self.claims = Claims()  # planning and publishing: one at a time per operator
        Foreground.__init__(self)
        self._lock = StateDirLock(self.state_dir)
        self.state: State | None = None
        self.audit = AuditLog(self.state_dir, actor=ACTOR, observer=self._audit_observed)
        self._audit_down_since: datetime | None = None
        self.audit_tail = AuditTail(self.audit.path, ACTOR, log, self._audit_recorded)
        self.scheduler = new_scheduler(config)
        self.transitions = Transitions(self.scheduler, self.reconcile)
        self.http: http.BoundedHTTPServer | None = None
        self.publisher = Publisher(self)  # loading the orders, planning and publishing
        self.prober = Prober(self.state_dir, self.audit, self.snapshot, clock, lambda: self.publisher.orders,
                             self.previous_zone)
        self._watch_error = ""  # the zone watch's last failure, logged once
        self._zone_marks: dict[str, tuple[Any, ...]] = {}  # operator -> the damaged zone file last seen

    @property
    def health(self) -> Health:
        return self.board.health

    def previous_zone(self, operator: str) -> tuple[str, ZoneEntries] | None:
        return self.publisher.previous.get(operator)

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
                    self.publisher.order_cache = OrderCache()
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
        with self.publisher.load_lock, self.prober.lock:
            if self.state is not None:
                with contextlib.suppress(AuditWriteError):  # already reported by health and metrics
                    self.audit.append("daemon-stop", {"pid": os.getpid()})
                self.audit_tail.poll()
                log.info("daemon stopped")
                self.state.close()
                self.state = None
        self._lock.release()

    def reload_config(self) -> None:
        """SIGHUP: re-read the config file; a broken one keeps the running config (fail closed)."""
        fresh = reread_config(self.config_path, self.overrides)
        if fresh is not None and fresh != self.config:
            with self.publisher.load_lock:  # a publisher running keeps the config and caches of its load
                self.config = fresh
                self.publisher.order_cache = OrderCache()
                self.publisher.caches = Caches()
                self.publisher.previous = {}
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
        if signature != self.publisher.folder_signature:
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
            digest, _ = file_digest(path, self.publisher.caches.files)
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
        load: Load | None = None
        ok = False
        hold: PublishHold | None = None
        try:
            hold = PublishHold(self.state_dir)  # handed on to the publishers: never lapses before them
            load = self.publisher.load_and_claim(reason, instant)
            if load is None:
                return False
            ok = self.publisher.publish_claimed(load, reason, hold)
        except AuditWriteError as exc:  # nothing was published whose change is not on record
            self.publisher.audit_failed(exc)
        except Exception as exc:  # the daemon keeps running: the next reconcile tries again
            self.publisher.reconcile_failed(exc, reason)
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

    def audit_recovered(self) -> None:
        """After a failed append, a record saying the trail is writable again, and since when it
        was not: the gap in the trail is itself on record. Raises AuditWriteError while it is not."""
        if self.audit.last_error is None:
            return
        since, error = self._audit_down_since, self.audit.last_error
        self.audit.append("audit-writable", {"error": error, "since": since.isoformat() if since else None})
        self._audit_down_since = None
        log.info("audit trail writable again", extra={"error_was": error})
