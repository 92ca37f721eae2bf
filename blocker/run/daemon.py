"""The daemon: keep every operator's zone in step with the orders, to the second, unattended.

Each reconcile recomputes the whole desired state from the orders and publishes what
differs; scheduled jobs at each order's start and lift instant only decide *when* to
reconcile, never *what*. A periodic reconcile and a poll of the orders folder back them up.
Operators are planned and published in threads of their own (one publisher per operator at a
time), so one operator's long publish never makes another's transition late.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
from blocker.config.model import Config, ConfigError, OperatorConfig, load_config
from blocker.crashlog import write_crash_log
from blocker.fleet.follow import FleetState
from blocker.orders.legaltime import fmt_instant
from blocker.orders.model import LoadResult, Order, OrderCache, load_orders, stat_signature
from blocker.policy.compute import PolicyCache, ZoneEntries, desired, next_transition, orders_in_force
from blocker.probe.engine import Check, CheckResult, probe_sync, prove, read_lane_canaries, served_throughout
from blocker.probe.expectations import (
    RANDOM_LABEL_PREFIX,
    Published,
    expected_checks,
    proof_serials,
    published_from_state,
    signature_for,
    targets_for,
)
from blocker.publish.plan import Caches, OperatorPlan, Plan, compute_plan, file_digest
from blocker.publish.reconcile import (
    FLAG_ORPHANED,
    Effective,
    OperatorOutcome,
    effective_orders,
    publish_lock,
    publish_plan,
    shared_publish_lock,
    verify_served,
)
from blocker.publish.writer import remove_stale_temps, run_reload
from blocker.record.audit import AuditLog, AuditWriteError
from blocker.record.state import State
from blocker.run.metrics import Snapshot, observe_reconcile, registry_for, render
from blocker.textsafe import display_path
from blocker.zone.rpz import canary_owner, read_entries, read_meta

log = logging.getLogger("blocker.run.daemon")
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
        # blocker.fleet: propagation to the secondaries, its metrics and audit records
        self.fleet = FleetState(lambda kind, data: self.audit.append(kind, data, actor=ACTOR))
        self.registry.register(self.fleet)
        self.health = Health()
        self.order_cache = OrderCache()
        self.caches = Caches()
        # operator -> (checksum, entries) of the zone this daemon last published or found current
        self.previous: dict[str, tuple[str, ZoneEntries]] = {}
        self.invalid_seen: dict[str, tuple[str, ...]] = {}
        self.scheduled: dict[str, datetime] = {}
        self.folder_signature: tuple[Any, ...] | None = None
        # Loading the orders (and recording their versions) is one at a time; planning and
        # publishing are one at a time per operator: `_busy` holds the operators a publisher has
        # claimed, `_pending` those another reconcile found busy.
        self._load_lock = threading.Lock()
        self._claims = threading.Condition()
        self._busy: set[str] = set()
        self._pending: set[str] = set()
        self._closing = False
        self._load_seq = self._orders_seq = 0
        self._health_lock = threading.Lock()
        self._reasons: dict[str, list[str]] = {}  # operator ("" for the orders) -> why unhealthy
        self._flags: dict[str, Any] = {}
        self._held: dict[str, int] = {}
        self._last_done: datetime | None = None  # the instant of the last reconcile that finished
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
        self._watch_error = ""  # the zone watch's last failure, logged once
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
        # Publishers still running finish first (a marked operator is not planned again); a
        # reconcile or probe pass starting later finds no state.
        with self._claims:
            self._closing = True
            self._claims.wait_for(lambda: not self._busy)
        with self._load_lock, self._probe_lock:
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
            with self._load_lock:  # a publisher running keeps the config and caches of its load
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
        # Not an operator a reconcile is publishing: between its write of a zone and its record of
        # the digest, the file is new and the state not yet. The others are claimed meanwhile.
        free = self._claim(sorted(self.config.operators), mark=False)
        changed: list[str] = []
        try:
            changed = self._damaged_zones(free)
            self._watch_error = ""
        except Exception as exc:  # a corrupt state row, say: logged once (each tick would flood), the
            if repr(exc) != self._watch_error:  # reconcile's own failure keeps /healthz at 503
                self._watch_error = repr(exc)
                self._log_exception("zone watch failed", exc)
        finally:
            marked = [op for op in free if self._release(op)]
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
        """Load the orders (one at a time: their receipts go to the trail in order), then plan
        and publish each operator that no other reconcile is publishing, each in its own
        thread: a large publish on one operator (its zone check, its reload) holds back no
        other operator's transition. An operator busy elsewhere is marked, and its publisher
        plans it again from the newest orders when it is done (at most one such rerun)."""
        if self.state is None:  # stopped
            return False
        started = time.monotonic()
        load: _Load | None = None
        ok = False
        try:
            with shared_publish_lock(self.state_dir):
                load = self._load_and_claim(reason, instant)
                if load is None:
                    return False
                ok = self._publish_claimed(load, reason)
        except AuditWriteError as exc:  # nothing was published whose change is not on record
            self._audit_failed(exc)
        except Exception as exc:  # the daemon keeps running: the next reconcile tries again
            self._reconcile_failed(exc, reason)
        finally:
            # Claimed but never handed to a publisher (the plan failed): free for the next reconcile.
            for operator in load.claimed if load is not None else ():
                self._release(operator)
        with self._health_lock:  # /healthz's last_reconcile: this one, its publishers all done
            self._last_done = load.now if load is not None else datetime.now(UTC)
            self._compose_health()
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

    def _audit_failed(self, exc: AuditWriteError, operator: str = "") -> None:
        log.error("audit trail cannot be written: the previous zones keep serving", extra={"error": str(exc)})
        self._set_reasons(operator, [f"audit trail cannot be written: {exc}"])

    def _reconcile_failed(self, exc: Exception, reason: str, operator: str = "") -> None:
        extra = {"reason": reason, **({"operator": operator} if operator else {})}
        self._log_exception("reconcile failed", exc, **extra)
        self._set_reasons(operator, [f"reconcile failed: {type(exc).__name__}: {exc}"])

    def _claim(self, operators: list[str], *, mark: bool = True) -> list[str]:
        """The operators of `operators` this caller may publish now; with `mark`, each busy one
        is marked for its publisher to plan again when done (coalesced: one mark per operator)."""
        with self._claims:
            if self._closing:
                return []
            mine = [op for op in operators if op not in self._busy]
            if mark:
                self._pending.update(op for op in operators if op in self._busy)
            self._busy.update(mine)
            return mine

    def _release(self, operator: str) -> bool:
        """Done with `operator`: whether it was marked meanwhile (it must be planned again)."""
        with self._claims:
            pending = operator in self._pending and not self._closing
            self._pending.discard(operator)
            self._busy.discard(operator)
            self._claims.notify_all()
            return pending

    def _load_and_claim(self, reason: str, instant: datetime | None) -> _Load | None:
        """Orders loaded and their versions recorded, under the load lock; then the operators
        this caller publishes. None once stopped."""
        with self._load_lock:
            if self.state is None or self._closing:
                return None
            self._audit_recovered()
            load = self._load(reason, instant)
            load.claimed = self._claim(sorted(load.config.operators))
            return load

    def _load(self, reason: str, instant: datetime | None) -> _Load:
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
        if reason == "periodic":  # a full digest of every zone file, whatever its stat says
            self.caches.files.clear()
        self._schedule_transitions(eff.orders, now)
        self._load_seq += 1
        load = _Load(self._load_seq, config, self.caches, result, eff, now)
        self._update_orders(load)
        return load

    def _publish_claimed(self, load: _Load, reason: str) -> bool:
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
                                load)

    def _in_threads(self, calls: list[tuple[Any, tuple[Any, ...], list[str]]], load: _Load) -> bool:
        """Run each call (function, arguments, the claimed operators it releases) in a thread of
        its own, the last one in this one; whether all succeeded."""
        results: list[bool] = []
        threads = []
        for function, args, operators in calls[:-1]:
            def work(function: Any = function, args: tuple[Any, ...] = args) -> None:
                results.append(function(*args))
            thread = threading.Thread(target=work, name=f"publish:{','.join(operators)}", daemon=True)
            thread.start()
            for operator in operators:
                load.claimed.remove(operator)  # released by the thread
            threads.append(thread)
        function, args, operators = calls[-1]
        for operator in operators:
            load.claimed.remove(operator)
        results.append(function(*args))
        for thread in threads:
            thread.join()
        return len(results) == len(calls) and all(results)

    def _plan_and_publish(self, load: _Load, operators: list[str], reason: str) -> bool:
        try:
            plan = self._plan(load, operators, reason)
        except BaseException as exc:
            for operator in operators:
                self._release(operator)
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
                                     for op_plan in plan.operators], mine)
        finally:
            for operator in mine.claimed:  # never handed to a publisher (no thread could start)
                self._release(operator)

    def _plan(self, load: _Load, operators: list[str], reason: str) -> Plan:
        assert self.state is not None
        config = load.config
        zones = self.state.zones()
        # Remembered entries hold only while the state says the zone published is the one they
        # came from: another publisher (`blocker apply --force`) may have replaced it since.
        previous = {}
        for operator in operators:
            remembered = self.previous.get(operator)
            record = zones.get(operator)
            if remembered is not None and record is not None and record.checksum == remembered[0]:
                previous[operator] = remembered[1]
        # No lock: plans of different operators run at once, sharing the caches (each entry is
        # checked by identity before use; one dropped by another plan costs a recomputation),
        # each with its own memo of diffs (it lives for one plan).
        caches = dataclasses.replace(load.caches, diffs={})
        plan = compute_plan(load.eff.orders, load.now, config, config.zones_dir, operators=operators,
                            caches=caches, previous=previous or None,
                            last_publish={op: z.published_at for op, z in zones.items()}, state=self.state)
        for warning in plan.warnings:
            log.warning("zone file", extra={"problem": warning})
        for op_plan in plan.operators:
            if op_plan.restore:
                log.warning("zone file changed behind blocker's back: rewriting it from the state",
                            extra={"operator": op_plan.operator, "problem": op_plan.restore,
                                   "found_sha256": op_plan.file_sha256 or "", "reason": reason})
        return plan

    def _publish_operator(self, load: _Load, plan: Plan, op_plan: OperatorPlan, reason: str) -> bool:
        """Publish one operator's plan (claimed by this caller), then release it. Marked meanwhile
        by another reconcile (it found the operator busy): a new reconcile, in a thread of its
        own, loads the newest orders and plans it again, with whatever else is free then."""
        operator, ok = op_plan.operator, False
        try:
            ok = self._publish_one(load, plan, op_plan, reason)
        except AuditWriteError as exc:
            self._audit_failed(exc, operator)
        except Exception as exc:
            self._reconcile_failed(exc, reason, operator)
        finally:
            if self._release(operator):
                threading.Thread(target=self.reconcile, args=["pending"], name=f"reconcile:{operator}",
                                 daemon=True).start()
        return ok

    def _publish_one(self, load: _Load, plan: Plan, op_plan: OperatorPlan, reason: str) -> bool:
        assert self.state is not None
        config, now, operator = load.config, load.now, op_plan.operator
        mine = Plan(plan.at, [op_plan], plan.orders, [])
        self._report_catchups(mine, now)
        outcomes = publish_plan(mine, config, config.zones_dir, self.state, self.audit, actor=ACTOR, now=now)
        retried = self._retry_reloads(mine, {o.operator for o in outcomes}, config)
        if any(not o.published for o in outcomes):
            self.previous.pop(operator, None)
        else:
            self.previous[operator] = (op_plan.zone.checksum, op_plan.entries)
        self._log_outcomes(outcomes, reason)
        outcomes += retried
        self._update(load, op_plan, outcomes)
        self.fleet.after_publish(config, [(o.operator, o.serial) for o in outcomes if o.published and o.serial])
        if outcomes and any(op.resolvers for op in config.operators.values()) and self.scheduler.running:
            # Prove the new zone at once: the next periodic pass may be minutes away.
            with contextlib.suppress(Exception):  # the scheduler stopping under us
                self.scheduler.add_job(self.probe_pass,
                                       DateTrigger(run_date=datetime.now(UTC) + timedelta(seconds=1)),
                                       args=["after-publish"], id="probe:after-publish", replace_existing=True)
        return not any(not o.published or (o.reload is not None and not o.reload.ok) for o in outcomes)

    def _retry_reloads(self, plan: Plan, done: set[str], config: Config | None = None) -> list[OperatorOutcome]:
        """A zone on disk whose reload failed is reloaded again on every reconcile until it takes:
        with nothing else changing, no publish would ever ask again."""
        assert self.state is not None
        config = config or self.config
        zones = self.state.zones()
        retried = []
        for op_plan in plan.operators:
            operator = op_plan.operator
            record = zones.get(operator)
            if operator in done or record is None or record.in_effect:
                continue
            path = config.zones_dir / f"{operator}.rpz"
            meta = read_meta(path)
            if meta is None or (meta.serial, meta.checksum) != (record.serial, record.checksum):
                continue
            op = config.operators[operator]
            result = run_reload(op, path, record.serial, config.reload_timeout)
            if result.ok and op.resolvers and op.reload.kind != "none":
                result = verify_served(op, record.serial, config.publish_verify_timeout, result)
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

    def _set_reasons(self, operator: str, reasons: list[str]) -> None:
        """Why an operator (or, for "", loading the orders) is unhealthy now; /healthz says all."""
        with self._health_lock:
            self._reasons[operator] = reasons
            self._compose_health()

    def _compose_health(self) -> None:
        """/healthz from each operator's last publish and the last load (lock held): each
        publisher updates its own operator's part."""
        reasons: list[str] = []
        for operator in sorted(self.config.operators):
            reasons += self._reasons.get(operator, [f"{operator}: not planned yet"])
        reasons += self._reasons.get("", [])
        flags = {**self._flags, "removals_held": {op: n for op, n in sorted(self._held.items())
                                                   if n and op in self.config.operators}}
        self.health = Health(not reasons, reasons, flags, self._last_done)

    def _update_orders(self, load: _Load) -> None:
        """Health and metrics of the orders themselves, at each load."""
        result, eff, now = load.result, load.eff, load.now
        reasons: list[str] = []
        if not load.config.orders_dir.is_dir():
            reasons.append(f"orders folder {display_path(load.config.orders_dir)} does not exist "
                           "(the last good versions stay in force)")
        orphaned = sorted(i for i, f in eff.flags.items() if f == FLAG_ORPHANED)
        with self._health_lock:
            self._flags = {"orders_invalid": sorted(result.invalid_files), "orders_orphaned": orphaned}
            self._reasons[""] = reasons
            self._compose_health()
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
            upcoming = next_transition(eff.orders.values(), now)
            s.next_transition_ts = upcoming.timestamp() if upcoming else None

    def _update(self, load: _Load, op_plan: OperatorPlan, outcomes: list[OperatorOutcome]) -> None:
        """Health and metrics of one operator, after its publish."""
        assert self.state is not None
        config, op = load.config, op_plan.operator
        record = self.state.zone(op)
        path = config.zones_dir / f"{op}.rpz"
        reasons: list[str] = []
        on_disk = read_meta(path)
        if any(o.operator == op and not o.published for o in outcomes):
            reasons.append(f"{op}: publish failed")
        elif record is not None and record.digest and file_digest(path, load.caches.files)[0] != record.digest:
            reasons.append(f"{op}: zone file is not what was published")
        elif on_disk is None or on_disk.checksum != op_plan.zone.checksum:
            reasons.append(f"{op}: published zone is not current")
        elif record is not None and record.checksum == on_disk.checksum and not record.in_effect:
            reasons.append(f"{op}: reload failed: {record.reload_message}")
        with self._health_lock:
            self._reasons[op] = reasons
            self._held[op] = len(op_plan.held)
            if load.seq > self._orders_seq:  # what the probes expect: the newest orders published
                self._orders_seq, self.orders = load.seq, dict(load.eff.orders)
            self._compose_health()
        s = self.snapshot
        with s.lock:
            s.zone_names[op], s.zone_records[op] = op_plan.zone.names, op_plan.zone.entries
            if on_disk is not None:
                s.zone_serial[op] = on_disk.serial
            if record is not None:
                s.zone_publish_ts[op] = record.published_at.timestamp()
                s.zone_in_effect[op] = record.in_effect
            s.removals_held[op] = len(op_plan.held)
            for o in outcomes:
                s.publish_failures.setdefault(o.operator, 0)
                s.reload_failures.setdefault(o.operator, 0)
                if not o.published:
                    s.publish_failures[o.operator] += 1
                elif o.reload is not None and not o.reload.ok:
                    s.reload_failures[o.operator] += 1

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
