"""`blocker probe-agent`: the probe schedule alone, for vantage points inside an operator's network.

A national ISP's resolvers sit in many sites, and a resolver often answers only its own network:
one daemon cannot ask them all. An agent runs next to them with a copy of the orders folder (and,
for the proof, of the zones folder: a synced copy, or the file a local secondary writes), probes
on the daemon's schedule (`probe.interval`, the rotating sample of blocker.probe.sampling, one pass
soon after the orders or a zone change), and serves its own `/metrics` and `/healthz`. It never
publishes, never writes a zone and never reloads a resolver.

Its probe metrics carry an `agent` label (`probe.agent_name`, default the host name), so that a
central Prometheus scraping or federating many agents keeps their series apart and the shipped
alerts fire per agent. It keeps its own state folder (its own audit trail of probe passes, its
own lock): pointed at a daemon's state folder it refuses to start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.triggers.interval import IntervalTrigger

from blocker import __version__
from blocker.clock import SYSTEM, Clock
from blocker.config.model import Config
from blocker.orders.load import load_orders, stat_signature
from blocker.orders.model import Order, OrderCache
from blocker.record.audit import AuditLog, AuditWriteError
from blocker.record.state import State
from blocker.run import http
from blocker.run.lifecycle import DaemonError, Foreground, StateDirLock, install_signals, reread_config
from blocker.run.logs import log_internal
from blocker.run.metrics import Snapshot, registry_for
from blocker.run.probing import Prober
from blocker.run.scheduling import new_scheduler, probe_at, probes_configured

log = logging.getLogger(__name__)
ACTOR = "probe-agent"


def agent_name(config: Config) -> str:
    """The `agent` label: the configured name, else the host name (its first label)."""
    return config.probe_agent_name or (socket.gethostname().split(".")[0] or "probe-agent")


class ProbeAgent(Foreground):
    """One agent on one state folder (its own, never a daemon's)."""

    def __init__(self, config: Config, config_path: Path | None = None,
                 overrides: dict[str, Any] | None = None, *, clock: Clock = SYSTEM) -> None:
        self.config = config
        self.config_path = config_path
        self.overrides = overrides or {}
        self.state_dir = config.state_dir
        self.clock = clock
        self.name = agent_name(config)
        self.snapshot = Snapshot(agent=self.name)
        self.registry = registry_for(self.snapshot, agent=True)
        self.audit = AuditLog(self.state_dir, actor=ACTOR, observer=self._audit_observed)
        self.state: State | None = None
        self.orders: dict[str, Order] = {}
        self.order_cache = OrderCache()
        self.prober = Prober(self.state_dir, self.audit, self.snapshot, clock, lambda: self.orders,
                             lambda _operator: None, actor=ACTOR)
        self.scheduler = new_scheduler(config)
        self.http: http.BoundedHTTPServer | None = None
        self._lock = StateDirLock(self.state_dir)
        Foreground.__init__(self)
        self._seen: tuple[Any, ...] | None = None  # orders folder and zone files, at the last look
        self._problems: list[str] = []  # why the orders could not all be read (health says it)
        self._started = clock.now()
        self._last_pass: datetime | None = None

    # ------------------------------------------------------------------------------------------
    def run(self) -> int:
        self._lock.acquire()
        try:
            if not probes_configured(self.config):
                raise DaemonError("no operator has resolvers to probe: set operators.<id>.resolvers")
            self.state = State(self.state_dir)
            host, port = self.config.http_listen
            try:
                self.http = http.serve((host, port), self.registry, self.health_payload, self.state_dir)
            except OSError as exc:
                raise DaemonError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
            log.info("probe agent started", extra={
                "version": __version__, "agent": self.name, "address": f"{host}:{self.http.server_address[1]}",
                "orders_dir": str(self.config.orders_dir), "zones_dir": str(self.config.zones_dir)})
            try:
                self.audit.append("probe-agent-start", {"version": __version__, "pid": os.getpid(),
                                                        "agent": self.name, "config": self.config.source})
            except AuditWriteError as exc:
                log.error("audit trail cannot be written", extra={"error": str(exc)})
            install_signals(self.stop, self._on_hup)
            self._load_orders()
            self._schedule()
            self.scheduler.start()
            probe_at(self.scheduler, self.probe_pass, self.clock.now(), "start")
            while not self._stop.is_set():
                self._wake.wait(1.0)
                self._wake.clear()
                if self._hup and not self._stop.is_set():
                    self._hup = False
                    self._reload_config()
            return 0
        finally:
            self.shutdown()

    def _schedule(self) -> None:
        self.scheduler.add_job(self.probe_pass, IntervalTrigger(seconds=self.config.probe_interval),
                               args=["periodic"], id="probe:periodic", replace_existing=True)
        self.scheduler.add_job(self.watch, IntervalTrigger(seconds=self.config.watch_interval),
                               id="watch", replace_existing=True)

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.http is not None:
            http.stop(self.http)
            self.http = None
        with self.prober.lock:
            if self.state is not None:
                with contextlib.suppress(AuditWriteError):  # already reported by health and metrics
                    self.audit.append("probe-agent-stop", {"pid": os.getpid(), "agent": self.name})
                log.info("probe agent stopped")
                self.state.close()
                self.state = None
        self._lock.release()

    def _reload_config(self) -> None:
        fresh = reread_config(self.config_path, self.overrides)
        if fresh is not None and fresh != self.config:
            with self.prober.lock:
                self.config = fresh
                self.order_cache = OrderCache()
            self._schedule()
            log.info("config reloaded", extra={"config": str(self.config_path)})

    # ------------------------------------------------------------------------------------------
    def _fingerprint(self) -> tuple[Any, ...]:
        zones: list[tuple[str, int | None, int | None, int | None]] = []
        for operator in sorted(self.config.operators):
            try:
                st = os.stat(self.config.zones_dir / f"{operator}.rpz")
                zones.append((operator, st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                zones.append((operator, None, None, None))
        return (stat_signature(self.config.orders_dir), tuple(zones))

    def watch(self) -> None:
        """The orders or a zone changed: a pass soon (it asks every changed name), not at the
        next interval."""
        try:
            seen = self._fingerprint()
        except Exception as exc:  # a job must never end in APScheduler's own traceback
            log_internal(log, self.state_dir, "watch failed", exc)
            return
        if self._seen is not None and seen != self._seen:
            probe_at(self.scheduler, self.probe_pass, self.clock.now() + timedelta(seconds=1), "changed")
        self._seen = seen

    def _load_orders(self) -> None:
        """The orders folder's valid orders; an order whose file turned invalid keeps its last
        good version (what the daemon keeps publishing too)."""
        self._seen = self._fingerprint()
        result = load_orders(self.config.orders_dir, self.config.order_rules, self.order_cache)
        problems = [str(e) for e in result.errors]
        if not self.config.orders_dir.is_dir():
            problems.append(f"orders folder {self.config.orders_dir} does not exist")
        if problems and problems != self._problems:
            for line in problems:
                log.error("orders: last good versions stay expected", extra={"problem": line})
        self._problems = problems
        orders = dict(result.orders)
        if result.invalid_files or problems:
            for order_id, order in self.orders.items():
                orders.setdefault(order_id, order)
        self.orders = orders

    def probe_pass(self, reason: str) -> None:
        with self.prober.lock:
            if self.state is None:  # stopped
                return
            try:
                self._load_orders()
            except Exception as exc:
                log_internal(log, self.state_dir, "orders load failed", exc)
            started = time.monotonic()
            self.prober.run_pass(self.config, self.state, reason)
            self._last_pass = self.clock.now()
            log.info("probe pass done", extra={"reason": reason, "seconds": round(time.monotonic() - started, 3)})

    # ------------------------------------------------------------------------------------------
    def _audit_observed(self, ok: bool, _error: str) -> None:
        with self.snapshot.lock:
            self.snapshot.audit_writable = ok
            if not ok:
                self.snapshot.audit_write_failures += 1

    def health_payload(self) -> tuple[int, dict[str, Any]]:
        """200 while passes run on time; 503 when the trail cannot be written, the orders cannot
        be read, or no pass ended for three intervals (a pass stuck, a scheduler dead)."""
        now = self.clock.now()
        reasons = list(self._problems)
        if self.audit.last_error is not None:
            reasons.append(f"audit trail cannot be written: {self.audit.last_error}")
        since = self._last_pass or self._started
        age = (now - since).total_seconds()
        if age > 3 * self.config.probe_interval + 60:
            reasons.append(f"no probe pass ended for {age:.0f} s")
        payload = {"status": "unhealthy" if reasons else "ok", "reasons": reasons, "agent": self.name,
                   "last_pass": self._last_pass.isoformat() if self._last_pass else None}
        return (503 if reasons else 200), payload


__all__ = ["ProbeAgent", "agent_name"]
