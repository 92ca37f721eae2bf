"""When the daemon acts: APScheduler jobs for the periodic reconcile, the two watches, the probe
passes, and one job at each future start and lift instant.

Jobs only decide *when* a reconcile runs, never *what* it publishes: each reconcile recomputes the
whole state from the orders. The scheduler runs in UTC and coalesces; a late timer still fires
within `misfire_grace` (a transition is never dropped for being late).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from blocker.config.model import Config
from blocker.orders.model import Order

Job = Callable[..., Any]


def new_scheduler(config: Config) -> BackgroundScheduler:
    return BackgroundScheduler(timezone=UTC, job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": config.misfire_grace,
    })


def probes_configured(config: Config) -> bool:
    return any(op.resolvers for op in config.operators.values())


def schedule_periodic(scheduler: BackgroundScheduler, config: Config, *, reconcile: Job, watch: Job,
                      watch_zones: Job, probe_pass: Job) -> None:
    scheduler.add_job(reconcile, IntervalTrigger(seconds=config.reconcile_interval),
                      args=["periodic"], id="reconcile:periodic", replace_existing=True)
    scheduler.add_job(watch, IntervalTrigger(seconds=config.watch_interval),
                      id="watch:orders", replace_existing=True)
    scheduler.add_job(watch_zones, IntervalTrigger(seconds=config.watch_interval),
                      id="watch:zones", replace_existing=True)
    if probes_configured(config):
        scheduler.add_job(probe_pass, IntervalTrigger(seconds=config.probe_interval),
                          args=["periodic"], id="probe:periodic", replace_existing=True)


def probe_at(scheduler: BackgroundScheduler, probe_pass: Job, at: datetime, reason: str) -> None:
    """One probe pass at `at` (`probe:<reason>`: a newer request replaces one not yet run)."""
    with contextlib.suppress(Exception):  # the scheduler stopping under us
        scheduler.add_job(probe_pass, DateTrigger(run_date=at), args=[reason], id=f"probe:{reason}",
                          replace_existing=True)


class Transitions:
    """The `transition:<order>:<start|end>` jobs: one per future instant of the orders in force."""

    def __init__(self, scheduler: BackgroundScheduler, reconcile: Job) -> None:
        self.scheduler = scheduler
        self.reconcile = reconcile
        self.scheduled: dict[str, datetime] = {}

    def sync(self, orders: Mapping[str, Order], now: datetime) -> None:
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
