"""The daemon's view of propagation: after each publish, a thread of its own (never holding the
publish lock) asks every secondary until it serves the new serial, times it, audits the ones
that fall behind, and keeps what `/metrics` shows.

Audit record kinds: `propagation` (one per publish followed: serial, seconds per secondary,
complete or not) and `secondary-behind` (a secondary that did not serve the serial within
`distribution.propagation_timeout`: its serial, or the error asking it — a refused or failing
transfer shows here; its RPZ would silently expire at SOA expire).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from blocker.config.distribution import Secondary
from blocker.config.model import Config
from blocker.fleet.status import Propagation, follow, served_serial

log = logging.getLogger("blocker.fleet")


class FleetState(Collector):
    """What the follower last saw, per (operator, secondary); also the metrics collector."""

    def __init__(self, audit_append: Callable[[str, dict[str, Any]], Any] | None = None,
                 ask: Callable[..., tuple[int | None, str]] = served_serial) -> None:
        self.lock = threading.Lock()
        self.serial: dict[tuple[str, str], int] = {}
        self.up: dict[tuple[str, str], bool] = {}
        self.propagation: dict[str, float] = {}
        self.last: dict[str, Propagation] = {}
        self.audit_append = audit_append
        self.ask = ask
        self.threads: list[threading.Thread] = []

    def _progress(self, operator: str) -> Callable[[Secondary, int | None, str], None]:
        def record(sec: Secondary, serial: int | None, _error: str) -> None:
            with self.lock:
                self.up[(operator, sec.label)] = serial is not None
                if serial is not None:
                    self.serial[(operator, sec.label)] = serial
        return record

    def after_publish(self, config: Config, published: Iterable[tuple[str, int]]) -> threading.Thread | None:
        """Start following the serials just published; returns at once (the thread is a daemon)."""
        if config.distribution is None:
            return None
        jobs = [(op, s) for op, s in published if config.operators[op].secondaries]
        if not jobs:
            return None
        t0 = time.monotonic()
        thread = threading.Thread(target=self._follow, args=(config, jobs, t0), name="fleet-follow", daemon=True)
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()
        return thread

    def _follow(self, config: Config, jobs: list[tuple[str, int]], t0: float) -> None:
        assert config.distribution is not None
        for operator, serial in jobs:
            op = config.operators[operator]
            try:
                result = follow(op, serial, config.distribution.propagation_timeout, t0, ask=self.ask,
                                on_progress=self._progress(operator))
            except Exception:  # a bug here must not take the daemon's thread pool with it
                log.exception("following propagation failed", extra={"operator": operator})
                continue
            with self.lock:
                self.last[operator] = result
                if result.last is not None:
                    self.propagation[operator] = result.last
            self._audit(result)

    def _audit(self, result: Propagation) -> None:
        if self.audit_append is None:
            return
        try:
            self.audit_append("propagation", {"operator": result.operator, "serial": result.serial,
                                              "complete": result.complete, "seconds": result.seconds})
            log.info("propagation followed", extra={"operator": result.operator, "serial": result.serial,
                                                    "complete": result.complete})
            for name, seconds in sorted(result.seconds.items()):
                if seconds is None:
                    with self.lock:
                        serves = self.serial.get((result.operator, name))
                    self.audit_append("secondary-behind", {"operator": result.operator, "secondary": name,
                                                           "serial": result.serial, "serves": serves,
                                                           "error": result.errors.get(name, "")})
                    log.warning("secondary behind", extra={"operator": result.operator, "secondary": name,
                                                           "error": result.errors.get(name, "")})
        except Exception:  # an unwritable trail is the daemon's alarm already (blocker_audit_writable)
            log.exception("cannot audit propagation", extra={"operator": result.operator})

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            yield _gauge("blocker_secondary_serial", "Zone serial a secondary serves (SOA, else the serial canary).",
                         ["operator", "secondary"], dict(self.serial))
            yield _gauge("blocker_secondary_up", "1 when the secondary answered the last serial query.",
                         ["operator", "secondary"], {k: int(v) for k, v in self.up.items()})
            yield _gauge("blocker_propagation_seconds", "From the last publish to the last secondary serving it.",
                         ["operator"], {(k,): v for k, v in self.propagation.items()})


def _gauge(name: str, doc: str, labels: list[str], values: Mapping[Any, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), float(value))
    return family
