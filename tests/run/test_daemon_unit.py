"""The daemon's scheduling logic, in process, on a fake clock.

The daemon reads the time from the clock it is given: the `clock` fixture is a fixed one, so a
test decides what "now" is, and a timer's early-wake sleep moves the fake clock instead of waiting.
The scheduler is started paused: jobs are really added, with the scheduler's defaults, but only a
test runs them. End-to-end behaviour in real time is in tests/run/test_daemon.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from blocker.clock import FixedClock
from blocker.config.load import load_config
from blocker.record.state import State
from blocker.run.daemon import Daemon

T0 = datetime(2030, 3, 1, 12, 0, 0, tzinfo=UTC)


class Clock(FixedClock):
    """The daemon's clock in these tests; a timer's early-wake sleep moves it instead of waiting."""

    def sleep(self, seconds: float) -> None:
        self.advance(seconds=seconds)

    def at(self, offset: float) -> datetime:
        return T0 + timedelta(seconds=offset)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


def write_order(folder: Path, order_id: str, start: datetime, end: datetime, targets: list[str]) -> Path:
    path = folder / f"{order_id}.yaml"
    path.write_text(
        f"id: {order_id}\ncourt: Tribunal judiciaire de Paris\ncase_number: RG 30/00001\n"
        f"decision_date: {(start - timedelta(days=1)).date()}\noperators: [orange]\n"
        f"start: {start.isoformat()}\nend: {end.isoformat()}\ntargets: [{', '.join(targets)}]\n"
    )
    return path


@pytest.fixture
def daemon(tmp_path: Path, clock: Clock) -> Iterator[Daemon]:
    (tmp_path / "orders").mkdir()
    config_path = tmp_path / "blocker.yaml"
    config_path.write_text(yaml.safe_dump({"publish": {"check": "structural"}, "operators": {"orange": {}}}))
    config = load_config(config_path).with_paths(orders_dir=tmp_path / "orders", state_dir=tmp_path / "state",
                                                 zones_dir=tmp_path / "zones")
    d = Daemon(config, clock=clock, sleep=clock.sleep)
    d.state = State(config.state_dir)
    d.scheduler.start(paused=True)
    try:
        yield d
    finally:
        d.scheduler.shutdown(wait=False)
        d.state.close()


def transition_jobs(d: Daemon) -> dict[str, datetime]:
    return {job.id: job.trigger.run_date for job in d.scheduler.get_jobs() if job.id.startswith("transition:")}


def owners(d: Daemon) -> set[str]:
    path = d.config.zones_dir / "orange.rpz"
    return {line.split()[0] for line in path.read_text().splitlines()
            if line and line[0] not in ";$@" and " TXT " not in line}


def audit(d: Daemon, event: str) -> list[dict]:
    lines = (d.config.state_dir / "audit.jsonl").read_text().splitlines()
    return [r["data"] for r in map(json.loads, lines) if r["event"] == event]


def fire(d: Daemon, job_id: str) -> bool:
    """Run a scheduled job the way the scheduler would."""
    job = d.scheduler.get_job(job_id)
    assert job is not None, f"no job {job_id}"
    return job.func(*job.args)


# ------------------------------------------------------------------------------------------


def test_scheduler_is_utc_and_never_drops_a_late_transition(daemon: Daemon, clock: Clock) -> None:
    write_order(daemon.config.orders_dir, "a", clock.at(10), clock.at(20), ["a.example.gg"])
    daemon.reconcile("start")
    job = daemon.scheduler.get_job("transition:a:start")
    assert str(daemon.scheduler.timezone) == "UTC"
    assert job.coalesce is True and job.max_instances == 1
    assert job.misfire_grace_time == daemon.config.misfire_grace == 86400
    assert job.args == ("transition:a:start", clock.at(10))


def test_jobs_at_each_future_instant_only(daemon: Daemon, clock: Clock) -> None:
    folder = daemon.config.orders_dir
    write_order(folder, "pending", clock.at(10), clock.at(20), ["p.example.gg"])
    write_order(folder, "active", clock.at(-100), clock.at(30), ["a.example.gg"])
    write_order(folder, "expired", clock.at(-100), clock.at(-50), ["e.example.gg"])
    daemon.reconcile("start")
    assert transition_jobs(daemon) == {
        "transition:pending:start": clock.at(10),
        "transition:pending:end": clock.at(20),
        "transition:active:end": clock.at(30),
    }
    assert all(at.utcoffset() == timedelta(0) for at in transition_jobs(daemon).values())
    assert daemon.snapshot.next_transition_ts == clock.at(10).timestamp()


def test_an_order_in_another_offset_is_scheduled_at_the_same_instant(daemon: Daemon, clock: Clock) -> None:
    paris = clock.at(10).astimezone(timezone(timedelta(hours=1)))
    write_order(daemon.config.orders_dir, "paris", paris, paris + timedelta(seconds=5), ["p.example.gg"])
    daemon.reconcile("start")
    assert transition_jobs(daemon)["transition:paris:start"] == clock.at(10)


def test_a_changed_order_moves_its_jobs_and_a_past_one_has_none(daemon: Daemon, clock: Clock) -> None:
    folder = daemon.config.orders_dir
    write_order(folder, "a", clock.at(10), clock.at(20), ["a.example.gg"])
    daemon.reconcile("start")
    write_order(folder, "a", clock.at(10), clock.at(40), ["a.example.gg"])  # end moved
    daemon.reconcile("orders-changed")
    assert transition_jobs(daemon) == {"transition:a:start": clock.at(10), "transition:a:end": clock.at(40)}
    clock.advance(seconds=41)
    daemon.reconcile("periodic")
    assert transition_jobs(daemon) == {}
    assert daemon.snapshot.next_transition_ts is None


def test_a_deleted_pending_order_keeps_its_jobs(daemon: Daemon, clock: Clock) -> None:
    """Fail closed: the file is gone, the order is not lifted, so its instants still matter."""
    path = write_order(daemon.config.orders_dir, "a", clock.at(10), clock.at(20), ["a.example.gg"])
    daemon.reconcile("start")
    path.unlink()
    daemon.reconcile("orders-changed")
    assert set(transition_jobs(daemon)) == {"transition:a:start", "transition:a:end"}
    clock.advance(seconds=10)
    fire(daemon, "transition:a:start")
    assert "a.example.gg" in owners(daemon)


def test_start_and_end_jobs_apply_and_lift_on_time(daemon: Daemon, clock: Clock,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    write_order(daemon.config.orders_dir, "a", clock.at(10), clock.at(20), ["a.example.gg"])
    daemon.reconcile("start")
    assert owners(daemon) == set()
    clock.advance(seconds=10.2)
    with caplog.at_level(logging.INFO, logger="blocker.run"):
        assert fire(daemon, "transition:a:start") is True
        assert owners(daemon) == {"a.example.gg", "*.a.example.gg"}
        clock.advance(seconds=10)
        fire(daemon, "transition:a:end")
    assert owners(daemon) == set()
    applied = [r for r in caplog.records if r.getMessage() == "transition applied"]
    assert [(r.transition, r.late_seconds) for r in applied] == [("started", 0.2), ("expired", 0.2)]
    assert audit(daemon, "catch-up") == []


def test_a_timer_that_wakes_early_waits_for_its_instant(daemon: Daemon, clock: Clock) -> None:
    write_order(daemon.config.orders_dir, "a", clock.at(10), clock.at(20), ["a.example.gg"])
    daemon.reconcile("start")
    clock.advance(seconds=9.7)  # the timer fired 0.3 s early
    fire(daemon, "transition:a:start")
    assert clock.now() == clock.at(10)
    assert "a.example.gg" in owners(daemon)


def test_a_job_recomputes_the_whole_state_rather_than_trusting_its_kind(daemon: Daemon, clock: Clock) -> None:
    """A start job that fires late, after the order already ended, must not block anything."""
    write_order(daemon.config.orders_dir, "a", clock.at(10), clock.at(20), ["a.example.gg"])
    write_order(daemon.config.orders_dir, "b", clock.at(-10), clock.at(100), ["b.example.gg"])
    daemon.reconcile("start")
    clock.advance(seconds=25)
    fire(daemon, "transition:a:start")
    assert owners(daemon) == {"b.example.gg", "*.b.example.gg"}


def test_catch_up_is_audited_with_its_lateness(daemon: Daemon, clock: Clock,
                                               caplog: pytest.LogCaptureFixture) -> None:
    write_order(daemon.config.orders_dir, "a", clock.at(10), clock.at(20), ["a.example.gg"])
    daemon.reconcile("start")
    clock.advance(seconds=17.5)  # the daemon was down at the start instant
    with caplog.at_level(logging.INFO, logger="blocker.run"):
        daemon.reconcile("start")
        assert "a.example.gg" in owners(daemon)
        clock.advance(seconds=5.25)  # ... and at the end instant
        daemon.reconcile("start")
    assert owners(daemon) == set()
    caught = audit(daemon, "catch-up")
    assert [(c["order"], c["transition"], c["late_seconds"]) for c in caught] == [
        ("a", "started", 7.5), ("a", "expired", 2.75)]
    assert datetime.fromisoformat(caught[0]["instant"]) == clock.at(10)
    warned = [r for r in caplog.records if r.getMessage() == "catch-up: transition applied late"]
    assert [r.late_seconds for r in warned] == [7.5, 2.75]
    assert daemon.snapshot.last_catchup_seconds == 2.75


def test_two_seconds_late_is_on_time_more_is_a_catch_up(daemon: Daemon, clock: Clock) -> None:
    folder = daemon.config.orders_dir
    write_order(folder, "a", clock.at(10), clock.at(100), ["a.example.gg"])
    write_order(folder, "b", clock.at(20), clock.at(100), ["b.example.gg"])
    daemon.reconcile("start")
    clock.advance(seconds=12)  # a: exactly 2 s late
    daemon.reconcile("periodic")
    clock.advance(seconds=10.5)  # b: 2.5 s late
    daemon.reconcile("periodic")
    assert [(c["order"], c["late_seconds"]) for c in audit(daemon, "catch-up")] == [("b", 2.5)]


def test_watch_reconciles_only_when_the_folder_changed(daemon: Daemon, clock: Clock) -> None:
    write_order(daemon.config.orders_dir, "a", clock.at(-10), clock.at(100), ["a.example.gg"])
    daemon.reconcile("start")
    runs = daemon.snapshot.reconcile_count
    daemon.watch()
    daemon.watch()
    assert daemon.snapshot.reconcile_count == runs
    write_order(daemon.config.orders_dir, "b", clock.at(-10), clock.at(100), ["b.example.gg"])
    daemon.watch()
    assert daemon.snapshot.reconcile_count == runs + 1
    assert "b.example.gg" in owners(daemon)


def test_a_reconcile_after_stop_does_nothing(daemon: Daemon, clock: Clock) -> None:
    """A job the pool starts after shutdown closed the state must not touch it."""
    write_order(daemon.config.orders_dir, "a", clock.at(-10), clock.at(100), ["a.example.gg"])
    state = daemon.state
    daemon.state = None
    try:
        assert daemon.reconcile("periodic") is False
        assert not (daemon.config.zones_dir / "orange.rpz").exists()
    finally:
        daemon.state = state
