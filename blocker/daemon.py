"""The daemon: keep every operator's zone in step with the orders, to the second, unattended.

Each reconcile recomputes the whole desired state from the orders and publishes what
differs; scheduled jobs at each order's start and lift instant only decide *when* to
reconcile, never *what*. A periodic reconcile and a poll of the orders folder back them up.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from blocker import __version__
from blocker.audit import AuditLog, AuditWriteError
from blocker.config import Config, ConfigError, OperatorConfig, load_config
from blocker.crashlog import write_crash_log
from blocker.expectations import (
    RANDOM_LABEL_PREFIX,
    Published,
    expected_checks,
    proof_serials,
    published_from_state,
    signature_for,
    targets_for,
)
from blocker.legaltime import fmt_instant
from blocker.metrics import Snapshot, observe_reconcile, registry_for, render
from blocker.orders import LoadResult, Order, OrderCache, load_orders, stat_signature
from blocker.plan import Caches, Plan, compute_plan, file_digest
from blocker.policy import PolicyCache, ZoneEntries, desired, next_transition
from blocker.probe import Check, CheckResult, probe_sync, prove, read_lane_canaries, served_throughout
from blocker.publish import remove_stale_temps, run_reload
from blocker.reconcile import (
    FLAG_ORPHANED,
    Effective,
    OperatorOutcome,
    effective_orders,
    publish_lock,
    publish_plan,
    verify_served,
)
from blocker.rpz import canary_owner, read_entries, read_meta
from blocker.state import State
from blocker.textsafe import display_path

log = logging.getLogger("blocker.daemon")
CATCHUP_THRESHOLD = timedelta(seconds=2)  # a transition applied later than this is a catch-up
ACTOR = "daemon"


class DaemonError(Exception):
    """The daemon cannot start; the message says why, for a person."""


@dataclass
class Health:
    ok: bool = False
    reasons: list[str] = field(default_factory=lambda: ["starting"])
    flags: dict[str, Any] = field(default_factory=dict)
    last_reconcile: datetime | None = None


HTTP_TIMEOUT = 3.0  # seconds a connection may take to send its request (and to read the answer)
HTTP_DEADLINE = 10.0  # seconds a whole exchange may take, however slowly the client trickles
HTTP_MAX_CONNECTIONS = 32  # connections served at once; more are closed at once


class _BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, but at most `HTTP_MAX_CONNECTIONS` of them: 1,000 idle
    connections to the metrics port must not take the descriptors the publisher needs. An
    excess connection is closed as soon as it is accepted (a scraper retries); one that sends
    nothing is dropped after `HTTP_TIMEOUT`. Connections not yet accepted wait in the kernel's
    listen backlog, which costs this process no descriptor."""

    daemon_threads = True
    request_queue_size = 64
    state_dir: Path | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(HTTP_MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Not socketserver's traceback on stderr: a client that went away is no error, anything
        else is one log line naming its crash file."""
        exc = sys.exc_info()[1]
        if exc is None or isinstance(exc, (ConnectionError, TimeoutError)):
            return
        written = write_crash_log(getattr(self, "state_dir", None), exc, "http handler")
        log.error("http request failed", exc_info=(type(exc), exc, exc.__traceback__),
                  extra={"traceback": display_path(written) if written else "not written"})

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class Daemon:
    def __init__(self, config: Config, config_path: Path | None = None,
                 overrides: dict[str, Any] | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.overrides = overrides or {}
        self.state_dir = config.state_dir
        self.snapshot = Snapshot()
        self.registry = registry_for(self.snapshot)
        self.health = Health()
        self.order_cache = OrderCache()
        self.caches = Caches()
        # operator -> (checksum, entries) of the zone this daemon last published or found current
        self.previous: dict[str, tuple[str, ZoneEntries]] = {}
        self.invalid_seen: dict[str, tuple[str, ...]] = {}
        self.scheduled: dict[str, datetime] = {}
        self.folder_signature: tuple[Any, ...] | None = None
        self._reconcile_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._hup = False
        self._lock_file: Any = None
        self.state: State | None = None
        self.audit = AuditLog(self.state_dir, actor=ACTOR, observer=self._audit_observed)
        self._audit_down_since: datetime | None = None
        self.scheduler = BackgroundScheduler(timezone=UTC, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": config.misfire_grace,
        })
        self.http: ThreadingHTTPServer | None = None
        self.orders: dict[str, Order] = {}
        self._probe_lock = threading.Lock()
        self._probe_cache = PolicyCache()
        self._verdicts: dict[tuple[str, str, str, str, str], str] = {}
        self._zone_marks: dict[str, tuple[Any, ...]] = {}  # operator -> the damaged zone file last seen

    # lifecycle -----------------------------------------------------------------------------
    def acquire_lock(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / "daemon.lock"
        fh = path.open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise DaemonError(f"another blocker daemon is running on state dir {self.state_dir} (pid {holder}); "
                              "one daemon per state directory") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._lock_file = fh

    def start_http(self) -> None:
        host, port = self.config.http_listen
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    body, status, ctype = render(daemon.registry), 200, "text/plain; version=0.0.4; charset=utf-8"
                elif self.path.split("?")[0] == "/healthz":
                    status, payload = daemon.health_payload()
                    body, ctype = json.dumps(payload, indent=1).encode(), "application/json"
                else:
                    body, status, ctype = b"not found: try /metrics or /healthz\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

            def handle(self) -> None:
                # The socket timeout bounds each wait; this bounds the whole exchange, so a client
                # sending one byte every few seconds cannot hold a connection slot for ever.
                timer = threading.Timer(HTTP_DEADLINE, self._cut)
                timer.daemon = True
                timer.start()
                try:
                    super().handle()
                finally:
                    timer.cancel()

            def _cut(self) -> None:
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

        Handler.timeout = HTTP_TIMEOUT  # a request that does not arrive in time: the connection is dropped
        try:
            self.http = _BoundedHTTPServer((host, port), Handler)
            self.http.state_dir = self.state_dir  # where handle_error writes a crash file
        except OSError as exc:
            raise DaemonError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, name="http", daemon=True).start()
        log.info("listening", extra={"address": f"{host}:{self.http.server_address[1]}"})

    def run(self) -> int:
        self.acquire_lock()
        try:
            self.state = State(self.state_dir)
            with publish_lock(self.state_dir):
                for stale in remove_stale_temps(self.config.zones_dir):
                    log.info("removed a temp file left by a killed publisher", extra={"file": display_path(stale)})
            self.start_http()
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
            self._install_signals()
            self.reconcile("start")
            self._schedule_periodic()
            self.scheduler.start()
            if any(op.resolvers for op in self.config.operators.values()):
                self.scheduler.add_job(self.probe_pass, DateTrigger(run_date=datetime.now(UTC)), args=["start"],
                                       id="probe:start", replace_existing=True)
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
            self.http.shutdown()
            self.http.server_close()
            self.http = None
        # A reconcile or probe pass still running finishes first; one starting later finds no state.
        with self._reconcile_lock, self._probe_lock:
            if self.state is not None:
                with contextlib.suppress(AuditWriteError):  # already reported by health and metrics
                    self.audit.append("daemon-stop", {"pid": os.getpid()})
                log.info("daemon stopped")
                self.state.close()
                self.state = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _install_signals(self) -> None:
        def on_stop(signum: int, _frame: Any) -> None:
            log.info("stopping", extra={"signal": signal.Signals(signum).name})
            self.stop()

        def on_hup(_signum: int, _frame: Any) -> None:
            self._hup = True
            self._wake.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def reload_config(self) -> None:
        """SIGHUP: re-read the config file; a broken one keeps the running config (fail closed)."""
        if self.config_path is None:
            return
        try:
            fresh = load_config(self.config_path).with_paths(**self.overrides)
        except ConfigError as exc:
            log.error("config reload failed, keeping the running config", extra={"error": str(exc)})
            return
        if fresh != self.config:
            self.config = fresh
            self.order_cache = OrderCache()
            self.caches = Caches()
            self.previous = {}
            log.info("config reloaded", extra={"config": str(self.config_path)})

    def _log_exception(self, message: str, exc: BaseException, **extra: Any) -> None:
        """The one-line log of an internal error (the formatter keeps one frame), naming the
        file that holds its full traceback (`<state_dir>/log/crash-*.log`)."""
        written = write_crash_log(self.state_dir, exc, f"daemon: {message} {extra}")
        log.error(message, exc_info=(type(exc), exc, exc.__traceback__),
                  extra={**extra, "traceback": display_path(written) if written else "not written"})

    # scheduling ----------------------------------------------------------------------------
    def _schedule_periodic(self) -> None:
        self.scheduler.add_job(self.reconcile, IntervalTrigger(seconds=self.config.reconcile_interval),
                               args=["periodic"], id="reconcile:periodic", replace_existing=True)
        self.scheduler.add_job(self.watch, IntervalTrigger(seconds=self.config.watch_interval),
                               id="watch:orders", replace_existing=True)
        self.scheduler.add_job(self.watch_zones, IntervalTrigger(seconds=self.config.watch_interval),
                               id="watch:zones", replace_existing=True)
        if any(op.resolvers for op in self.config.operators.values()):
            self.scheduler.add_job(self.probe_pass, IntervalTrigger(seconds=self.config.probe_interval),
                                   args=["periodic"], id="probe:periodic", replace_existing=True)

    def watch(self) -> None:
        try:
            signature = stat_signature(self.config.orders_dir)
        except Exception as exc:  # a job must never end in APScheduler's own traceback
            self._log_exception("orders watch failed", exc)
            return
        if signature != self.folder_signature:
            self.reconcile("orders-changed")

    def watch_zones(self) -> None:
        """Every zone file is what was last published, to the byte (its whole digest, not its
        header, which a truncation keeps): one edited, truncated, emptied, deleted or replaced
        behind our back is rewritten from the state at once, and /healthz is 503 until it is."""
        # Not while a reconcile runs: between its write of a zone and its record of the digest,
        # the file is new and the state not yet.
        if not self._reconcile_lock.acquire(blocking=False):
            return
        try:
            changed = self._damaged_zones()
        except Exception as exc:  # a corrupt state row: logged once per tick, one line, never a traceback
            self._log_exception("zone watch failed", exc)
            return
        finally:
            self._reconcile_lock.release()
        if changed:  # /healthz says what the reconcile finds: restored, or why not (503)
            self.reconcile("zone-changed")

    def _damaged_zones(self) -> list[str]:
        state = self.state
        if state is None:
            return []
        changed = []
        for operator, record in state.zones().items():
            if operator not in self.config.operators or not record.digest:
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

    def _schedule_transitions(self, orders: dict[str, Order], now: datetime) -> None:
        wanted: dict[str, datetime] = {}
        for order in orders.values():
            for kind, instant in (("start", order.start), ("end", order.end)):
                if instant > now:
                    wanted[f"transition:{order.id}:{kind}"] = instant.astimezone(UTC)
        for job_id in set(self.scheduled) - set(wanted):
            if self.scheduler.get_job(job_id) is not None:
                self.scheduler.remove_job(job_id)
            del self.scheduled[job_id]
        for job_id, instant in wanted.items():
            if self.scheduled.get(job_id) == instant and self.scheduler.get_job(job_id) is not None:
                continue
            self.scheduler.add_job(self.reconcile, DateTrigger(run_date=instant), args=[job_id, instant],
                                   id=job_id, replace_existing=True)
            self.scheduled[job_id] = instant

    # the reconcile -------------------------------------------------------------------------
    def reconcile(self, reason: str, instant: datetime | None = None) -> bool:
        with self._reconcile_lock:
            if self.state is None:  # stopped
                return False
            started = time.monotonic()
            try:
                with publish_lock(self.state_dir):
                    self._audit_recovered()
                    ok = self._reconcile(reason, instant)
            except AuditWriteError as exc:  # nothing was published whose change is not on record
                log.error("audit trail cannot be written: the previous zones keep serving", extra={"error": str(exc)})
                self.health = Health(False, [f"audit trail cannot be written: {exc}"], self.health.flags,
                                     datetime.now(UTC))
                ok = False
            except Exception as exc:  # the daemon keeps running: the next reconcile tries again
                self._log_exception("reconcile failed", exc, reason=reason)
                self.health = Health(False, [f"reconcile failed: {type(exc).__name__}: {exc}"],
                                     self.health.flags, datetime.now(UTC))
                ok = False
            with self.snapshot.lock:
                observe_reconcile(self.snapshot, time.monotonic() - started, ok)
                self.snapshot.last_reconcile_ts = time.time()
            return ok

    def _audit_observed(self, ok: bool, error: str) -> None:
        """Every append's outcome, from whichever thread appended: the metric follows at once."""
        with self.snapshot.lock:
            self.snapshot.audit_writable = ok
            if not ok:
                self.snapshot.audit_write_failures += 1
        if not ok and self._audit_down_since is None:
            self._audit_down_since = datetime.now(UTC)

    def _audit_recovered(self) -> None:
        """After a failed append, a record saying the trail is writable again, and since when it
        was not: the gap in the trail is itself on record. Raises AuditWriteError while it is not."""
        if self.audit.last_error is None:
            return
        since, error = self._audit_down_since, self.audit.last_error
        self.audit.append("audit-writable", {"error": error, "since": since.isoformat() if since else None})
        self._audit_down_since = None
        log.info("audit trail writable again", extra={"error_was": error})

    def _reconcile(self, reason: str, instant: datetime | None) -> bool:
        assert self.state is not None
        config = self.config
        self.folder_signature = stat_signature(config.orders_dir)
        now = datetime.now(UTC)
        if instant is not None and now < instant:  # a timer that woke a hair early
            time.sleep((instant - now).total_seconds())
            now = datetime.now(UTC)
        # The periodic reconcile also checks every file's bytes against its digest: an edit in
        # place that restored size and mtime is invisible to the folder's stat signature.
        result = load_orders(config.orders_dir, config, self.order_cache, verify=reason == "periodic")
        self._report_invalid(result)
        eff = effective_orders(result, config, self.state, self.audit, now, actor=ACTOR)
        zones = self.state.zones()
        # Remembered entries hold only while the state says the zone published is the one they
        # came from: another publisher (`blocker apply --force`) may have replaced it since.
        previous = {}
        for operator, (checksum, entries) in self.previous.items():
            record = zones.get(operator)
            if record is not None and record.checksum == checksum:
                previous[operator] = entries
        if reason == "periodic":  # a full digest of every zone file, whatever its stat says
            self.caches.files.clear()
        plan = compute_plan(eff.orders, now, config, config.zones_dir, caches=self.caches,
                            previous=previous or None,
                            last_publish={op: z.published_at for op, z in zones.items()}, state=self.state)
        for warning in plan.warnings:
            log.warning("zone file", extra={"problem": warning})
        for op_plan in plan.operators:
            if op_plan.restore:
                log.warning("zone file changed behind blocker's back: rewriting it from the state",
                            extra={"operator": op_plan.operator, "problem": op_plan.restore,
                                   "found_sha256": op_plan.file_sha256 or "", "reason": reason})
        self._report_catchups(plan, now)
        outcomes = publish_plan(plan, config, config.zones_dir, self.state, self.audit, actor=ACTOR, now=now)
        retried = self._retry_reloads(plan, {o.operator for o in outcomes})
        failed = {o.operator: o for o in outcomes if not o.published}
        for op_plan in plan.operators:
            if op_plan.operator in failed:
                self.previous.pop(op_plan.operator, None)
            else:
                self.previous[op_plan.operator] = (op_plan.zone.checksum, op_plan.entries)
        self._log_outcomes(outcomes, reason)
        outcomes += retried
        self._schedule_transitions(eff.orders, now)
        self._update(result, eff, plan, outcomes, now)
        self.orders = dict(eff.orders)
        if outcomes and any(op.resolvers for op in config.operators.values()) and self.scheduler.running:
            # Prove the new zone at once: the next periodic pass may be minutes away.
            self.scheduler.add_job(self.probe_pass, DateTrigger(run_date=datetime.now(UTC) + timedelta(seconds=1)),
                                   args=["after-publish"], id="probe:after-publish", replace_existing=True)
        return not any(not o.published or (o.reload is not None and not o.reload.ok) for o in outcomes)

    def _retry_reloads(self, plan: Plan, done: set[str]) -> list[OperatorOutcome]:
        """A zone on disk whose reload failed is reloaded again on every reconcile until it takes:
        with nothing else changing, no publish would ever ask again."""
        assert self.state is not None
        zones = self.state.zones()
        retried = []
        for op_plan in plan.operators:
            operator = op_plan.operator
            record = zones.get(operator)
            if operator in done or record is None or record.in_effect:
                continue
            path = self.config.zones_dir / f"{operator}.rpz"
            meta = read_meta(path)
            if meta is None or (meta.serial, meta.checksum) != (record.serial, record.checksum):
                continue
            op = self.config.operators[operator]
            result = run_reload(op, path, record.serial, self.config.reload_timeout)
            if result.ok and op.resolvers and op.reload.kind != "none":
                result = verify_served(op, record.serial, self.config.publish_verify_timeout, result)
            self.state.mark_in_effect(operator, result.ok, result.message)
            self.audit.append("reload", {"operator": operator, "serial": record.serial, "ok": result.ok,
                                         "message": result.message, "argv": list(result.argv), "retry": True},
                              actor=ACTOR)
            extra = {"operator": operator, "serial": record.serial}
            if result.ok:
                log.info("reload retried: zone now in effect", extra=extra)
            else:
                log.error("reload retried and failed again: not yet in effect",
                          extra={**extra, "error": result.message})
            retried.append(OperatorOutcome(operator, True, record.serial, result, "" if result.ok else result.message))
        return retried

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

    def _update(self, result: LoadResult, eff: Effective, plan: Plan, outcomes: list[OperatorOutcome],
                now: datetime) -> None:
        assert self.state is not None
        zones = self.state.zones()
        reasons: list[str] = []
        failed_ops = {o.operator for o in outcomes if not o.published}
        served: dict[str, int] = {}
        for op_plan in plan.operators:
            record = zones.get(op_plan.operator)
            on_disk = read_meta(self.config.zones_dir / f"{op_plan.operator}.rpz")
            if on_disk is not None:
                served[op_plan.operator] = on_disk.serial
            if op_plan.operator in failed_ops:
                reasons.append(f"{op_plan.operator}: publish failed")
            elif (record is not None and record.digest
                  and file_digest(self.config.zones_dir / f"{op_plan.operator}.rpz", self.caches.files)[0]
                  != record.digest):
                reasons.append(f"{op_plan.operator}: zone file is not what was published")
            elif on_disk is None or on_disk.checksum != op_plan.zone.checksum:
                reasons.append(f"{op_plan.operator}: published zone is not current")
            elif record is not None and record.checksum == on_disk.checksum and not record.in_effect:
                reasons.append(f"{op_plan.operator}: reload failed: {record.reload_message}")
        if not self.config.orders_dir.is_dir():
            reasons.append(f"orders folder {display_path(self.config.orders_dir)} does not exist "
                           "(the last good versions stay in force)")
        orphaned = sorted(i for i, f in eff.flags.items() if f == FLAG_ORPHANED)
        flags = {
            "orders_invalid": sorted(result.invalid_files),
            "orders_orphaned": orphaned,
            "removals_held": {p.operator: len(p.held) for p in plan.operators if p.held},
        }
        self.health = Health(not reasons, reasons, flags, now)
        s = self.snapshot
        with s.lock:
            statuses: dict[str, int] = {}
            for order in eff.orders.values():
                status = order.status_at(now)
                statuses[status] = statuses.get(status, 0) + 1
            s.orders_by_status = statuses
            s.order_windows = {o.id: (o.start.timestamp(), o.end.timestamp()) for o in eff.orders.values()}
            s.orders_invalid = len(result.invalid_files)
            s.orders_orphaned = len(orphaned)
            for op_plan in plan.operators:
                op = op_plan.operator
                s.zone_names[op], s.zone_records[op] = op_plan.zone.names, op_plan.zone.entries
                if op in served:
                    s.zone_serial[op] = served[op]
                record = zones.get(op)
                if record is not None:
                    s.zone_publish_ts[op] = record.published_at.timestamp()
                    s.zone_in_effect[op] = record.in_effect
            s.removals_held = {p.operator: len(p.held) for p in plan.operators}
            for o in outcomes:
                s.publish_failures.setdefault(o.operator, 0)
                s.reload_failures.setdefault(o.operator, 0)
                if not o.published:
                    s.publish_failures[o.operator] += 1
                elif o.reload is not None and not o.reload.ok:
                    s.reload_failures[o.operator] += 1
            upcoming = next_transition(eff.orders.values(), now)
            s.next_transition_ts = upcoming.timestamp() if upcoming else None

    # probes ------------------------------------------------------------------------------
    def probe_pass(self, reason: str) -> None:
        """Probe every operator's resolvers for the state in force now; record what was proven."""
        with self._probe_lock:
            if self.state is None:  # stopped
                return
            for op in self.config.operators.values():
                if not op.resolvers:
                    continue
                try:
                    self._probe_operator(op, reason)
                except Exception as exc:  # a probe failure must never stop the daemon
                    self._log_exception("probe pass failed", exc, operator=op.id)

    def _probe_operator(self, op: OperatorConfig, reason: str) -> None:
        config, orders, now = self.config, dict(self.orders), datetime.now(UTC)
        content = desired(orders.values(), op.id, now, self._probe_cache)
        checks = expected_checks(orders.values(), op.id, now, recent_days=config.probe_recent_window_days,
                                 control_names=config.control_names, content=content)
        targets = targets_for(op)
        canary = canary_owner(op.id)
        before = asyncio.run(read_lane_canaries(targets, canary, config.probe_timeout, config.probe_retries))
        results = probe_sync(checks, targets, signature_for(op), timeout=config.probe_timeout,
                             retries=config.probe_retries, concurrency=config.probe_concurrency,
                             rate_per_resolver=config.probe_rate_per_resolver)
        after = asyncio.run(read_lane_canaries(targets, canary, config.probe_timeout, config.probe_retries))
        results = prove(checks, results, proof_serials(checks, orders.values(), self._published(op.id)),
                        served_throughout(before, after))
        # Per resolver (the label probe results carry): the serial its first transport applies now.
        serials = {t.name or t.address: after.get((t.name or t.address, t.transports[0])) if t.transports else None
                   for t in targets}
        self._record_probe(op, orders, checks, results, serials, now, reason)

    def _published(self, operator: str) -> Published | None:
        """The zone on disk with the state's history of publishes: what a canary serial proves."""
        assert self.state is not None
        path = self.config.zones_dir / f"{operator}.rpz"
        meta = read_meta(path)
        if meta is None:
            return None
        remembered = self.previous.get(operator)
        if remembered is not None and remembered[0] == meta.checksum:
            entries = remembered[1]
        else:
            try:
                entries = read_entries(path)
            except (OSError, UnicodeDecodeError, ValueError):  # a damaged zone proves nothing
                return None
        return published_from_state(meta.serial, entries, operator, self.state)

    def _record_probe(self, op: OperatorConfig, orders: dict[str, Order], checks: list[Check],
                      results: list[CheckResult], serials: dict[str, int | None], now: datetime, reason: str) -> None:
        assert self.state is not None
        counts: dict[str, int] = {}
        per_resolver: dict[tuple[str, str], int] = {}
        up: dict[str, bool] = {}
        by_order: dict[str, list[CheckResult]] = {}
        changes = []
        for r in results:
            counts[r.verdict] = counts.get(r.verdict, 0) + 1
            per_resolver[(r.resolver, r.verdict)] = per_resolver.get((r.resolver, r.verdict), 0) + 1
            up[r.resolver] = up.get(r.resolver, False) or r.verdict != "error"
            for order_id in r.order_ids:
                by_order.setdefault(order_id, []).append(r)
            # Subdomain checks ask a fresh random label each pass: key them by the parent name.
            name = r.name.split(".", 1)[1] if r.name.startswith(RANDOM_LABEL_PREFIX) else r.name
            key = (op.id, r.kind, name, r.resolver, r.transport)
            before = self._verdicts.get(key)
            if before is not None and before != r.verdict:
                changes.append({"operator": op.id, "name": name, "kind": r.kind, "resolver": r.resolver,
                                "transport": r.transport, "from": before, "to": r.verdict,
                                "orders": list(r.order_ids), "reason": r.reason})
            self._verdicts[key] = r.verdict
        for change in changes[:200]:
            self.audit.append("probe-verdict-change", change, actor=ACTOR)
        verified, failing = [], []
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
            self.state.record_probe_outcome(order_id, op.id, ok, now)
            (verified if ok else failing).append(order_id)
            if ok and self.state.record_first(order_id, op.id, kind, now):
                data = {"order": order_id, "operator": op.id, "kind": kind, "at": fmt_instant(now),
                        "after_seconds": round((now - since).total_seconds(), 3)}
                log.info(f"first probe pass that proves the order {'blocked' if kind == 'blocked' else 'lifted'}",
                         extra=data)
                self.audit.append("order-verified", data, actor=ACTOR)
        published = read_meta(self.config.zones_dir / f"{op.id}.rpz")
        stale = [addr for addr, serial in serials.items()
                 if published is not None and serial != published.serial]
        record = self.state.zone(op.id)
        if (published is not None and serials and not stale and record is not None and not record.in_effect
                and record.serial == published.serial):
            # The reload's own check timed out, but every resolver now applies the zone.
            self.state.mark_in_effect(op.id, True, f"serial {published.serial} verified by a probe pass")
        self.audit.append("probe-pass", {
            "operator": op.id, "reason": reason, "checks": len(results), "verdicts": counts,
            "orders": verified + failing, "verified": verified, "failing": failing,
            "published_serial": published.serial if published else None, "resolver_serials": serials,
            "stale": stale,
        }, actor=ACTOR)
        if failing or stale:
            log.warning("probe pass: not every check holds", extra={"operator": op.id, "failing": ",".join(failing),
                                                                    "stale": ",".join(stale), "verdicts": counts})
        firsts = self.state.firsts()
        s = self.snapshot
        with s.lock:
            for key in [k for k in s.probe_checks if k[0] == op.id]:
                del s.probe_checks[key]
            for (resolver, verdict), n in per_resolver.items():
                s.probe_checks[(op.id, resolver, verdict)] = n
            for resolver, alive in up.items():
                s.resolver_up[(op.id, resolver)] = alive
            for addr, serial in serials.items():
                if serial is not None:
                    s.resolver_serial[(op.id, addr)] = serial
            s.probe_last_pass_ts[op.id] = now.timestamp()
            unverified = [(now - o.start).total_seconds() for o in orders.values()
                          if op.id in o.operators and o.active_at(now) and (o.id, op.id, "blocked") not in firsts]
            s.probe_oldest_unverified[op.id] = max(unverified, default=0.0)
            for (order_id, operator, kind), at in firsts.items():
                order = orders.get(order_id)
                if order is None or operator != op.id:
                    continue
                target = s.time_to_block if kind == "blocked" else s.time_to_lift
                target[(order_id, operator)] = (at - (order.start if kind == "blocked" else order.end)).total_seconds()

    def health_payload(self) -> tuple[int, dict[str, Any]]:
        h = self.health
        reasons = list(h.reasons)
        error = self.audit.last_error
        if error is not None and not any(r.startswith("audit trail cannot be written") for r in reasons):
            reasons.append(f"audit trail cannot be written: {error}")  # a probe pass's append, say
        if h.last_reconcile is not None:
            age = (datetime.now(UTC) - h.last_reconcile).total_seconds()
            if age > 3 * self.config.reconcile_interval + 30:
                reasons.append(f"last reconcile {age:.0f} s ago")
        ok = h.ok and not reasons
        payload = {
            "status": "ok" if ok else "unhealthy",
            "reasons": reasons,
            "last_reconcile": h.last_reconcile.isoformat() if h.last_reconcile else None,
            **h.flags,
        }
        return (200 if ok else 503), payload
