"""The one reconcile, in process: review before anything is recorded, and the served-serial
step finished by the caller (issue 10: publishing no longer reaches into probing)."""

from __future__ import annotations

import ast
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import blocker.publish
from blocker.config.load import load_config
from blocker.config.model import Config
from blocker.errors import BlockerError
from blocker.orders.load import load_orders
from blocker.publish.hooks import ReloadResult
from blocker.publish.plan import Plan
from blocker.publish.reconcile import (
    Effective,
    OperatorOutcome,
    reconcile,
    record_served,
    served_result,
)
from blocker.publish.writer import PublishError
from blocker.record.audit import AuditLog
from blocker.record.state import State

ORDER = """\
id: {id}
court: Tribunal judiciaire de Paris
case_number: RG 91/00001
decision_date: 2025-12-01
operators: [orange]
start: 2026-01-01T00:00:00+01:00
end: 2099-01-01T00:00:00+01:00
targets: [{id}.example]
"""
CONFIG = """\
timezone: Europe/Paris
publish: {{check: structural, verify_timeout: 2}}
operators:
  orange: {{name: Orange, reload: {reload}{resolvers}}}
"""


def _config(root: Path, reload: str = "{kind: none}", resolvers: str = "") -> Config:
    (root / "config.yaml").write_text(CONFIG.format(reload=reload, resolvers=resolvers))
    (root / "orders").mkdir(exist_ok=True)
    (root / "orders" / "one.yaml").write_text(ORDER.format(id="one"))
    return load_config(root / "config.yaml").with_paths(orders_dir=root / "orders", state_dir=root / "state",
                                                        zones_dir=root / "zones")


def _events(state_dir: Path) -> list[str]:
    return [r["event"] for r in AuditLog(state_dir).records()]


def test_publish_imports_nothing_from_probe_or_the_layers_above() -> None:
    for path in Path(blocker.publish.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [n for n in names if n.split(".")[:2] in (["blocker", "probe"], ["blocker", "cli"],
                                                             ["blocker", "run"])], path


def test_publish_error_is_a_blocker_error() -> None:
    assert issubclass(PublishError, BlockerError)
    assert str(PublishError("orange.rpz: zone check failed: x")) == "orange.rpz: zone check failed: x"


def test_a_review_that_stops_records_nothing(tmp_path: Path) -> None:
    config = _config(tmp_path)
    now = datetime.now(UTC)
    seen: list[Plan] = []

    def review(plan: Plan, eff: Effective, state: State | None) -> bool:
        seen.append(plan)
        return False

    done = reconcile(lambda: load_orders(config.orders_dir, config.order_rules),
                     config, config.state_dir, config.zones_dir,
                     now, now=now, review=review)
    assert done.stopped and not done.published and done.outcomes == []
    assert [p.operator for p in seen[0].operators] == ["orange"] and seen[0].has_changes
    assert not (config.zones_dir / "orange.rpz").exists()
    assert State(config.state_dir).last_good() == {}  # not even the order's version is recorded
    assert "order-added" not in _events(config.state_dir)


def test_a_review_that_refuses_raises_through_and_records_nothing(tmp_path: Path) -> None:
    config = _config(tmp_path)
    now = datetime.now(UTC)

    def review(plan: Plan, eff: Effective, state: State | None) -> bool:
        raise PublishError("refused")

    with pytest.raises(PublishError, match="refused"):
        reconcile(lambda: load_orders(config.orders_dir, config.order_rules),
                     config, config.state_dir, config.zones_dir,
                  now, now=now, review=review)
    assert State(config.state_dir).last_good() == {}


def test_reconcile_records_then_publishes_and_a_second_one_has_nothing_to_do(tmp_path: Path) -> None:
    config = _config(tmp_path)
    now = datetime.now(UTC)
    calls: list[str] = []

    def before(plan: Plan, audit: AuditLog) -> None:
        calls.append(plan.checksum)
        audit.append("apply", {"checksum": plan.checksum})

    def run() -> Any:
        return reconcile(lambda: load_orders(config.orders_dir, config.order_rules),
                     config, config.state_dir,
                         config.zones_dir, now, now=now, before_publish=before)

    done = run()
    assert done.published and [(o.operator, o.published, o.awaiting_serial) for o in done.outcomes] == [
        ("orange", True, False)]
    assert done.outcomes[0].reload is not None and done.outcomes[0].reload.ok
    assert "one.example" in (config.zones_dir / "orange.rpz").read_text()
    events = _events(config.state_dir)
    assert events.index("order-added") < events.index("apply") < events.index("zone-published") < \
        events.index("reload")
    assert done.state is not None and done.state.applied_result(done.plan.checksum) == done.plan.result
    again = run()
    assert not again.published and not again.stopped and not again.plan.has_changes and calls == [done.plan.checksum]


def test_served_result_words_are_those_of_the_reload_record() -> None:
    reloaded = ReloadResult(True, "ok", ("unbound-control", "auth_zone_reload", "orange.rpz"))
    assert served_result(reloaded, 7, 2.0, 2, []) == ReloadResult(
        True, "ok; serial 7 served by all 2 resolver(s)", reloaded.argv)
    assert served_result(reloaded, 7, 2.5, 2, ["a serves 6", "b serves no canary"]) == ReloadResult(
        False, "reloaded, but serial 7 not served after 2.5 s: a serves 6; b serves no canary", reloaded.argv)


def _published_awaiting(tmp_path: Path) -> tuple[Config, OperatorOutcome, State]:
    # A hook that succeeds, and a resolver: the serving check is due (and left to the caller).
    config = _config(tmp_path, "{kind: command, command: ['true']}",
                     ", resolvers: [{address: '127.0.0.1:9', name: r1}]")
    now = datetime.now(UTC)
    done = reconcile(lambda: load_orders(config.orders_dir, config.order_rules),
                     config, config.state_dir, config.zones_dir,
                     now, now=now)
    [outcome] = done.outcomes
    assert outcome.awaiting_serial and outcome.reload is not None and outcome.reload.ok
    assert "reload" not in _events(config.state_dir)  # recorded once the resolvers answered
    assert done.state is not None
    record = done.state.zone("orange")
    assert record is not None and not record.in_effect and record.reload_message == "reload pending"
    return config, outcome, done.state


@pytest.mark.integration  # starts a process
def test_record_served_marks_the_zone_and_writes_the_reload_record(tmp_path: Path) -> None:
    config, outcome, state = _published_awaiting(tmp_path)
    audit = AuditLog(config.state_dir)
    done = record_served(outcome, [], config, state, audit)
    assert done.reload is not None and done.reload.ok and not done.awaiting_serial and done.error == ""
    record = state.zone("orange")
    assert record is not None and record.in_effect and "served by all 1 resolver(s)" in record.reload_message
    [reload] = [r for r in audit.records() if r["event"] == "reload"]
    assert reload["data"]["ok"] is True and reload["data"]["serial"] == outcome.serial

    behind = record_served(outcome, ["r1 serves 3"], config, state, audit)
    assert behind.reload is not None and not behind.reload.ok and "not served after 2 s: r1 serves 3" in behind.error


@pytest.mark.integration  # starts a process
def test_record_served_leaves_a_newer_publish_its_own_mark(tmp_path: Path) -> None:
    config, outcome, state = _published_awaiting(tmp_path)
    assert outcome.serial is not None
    with state.tx() as db:  # another publisher put serial + 1 in place meanwhile
        db.execute("UPDATE zones SET serial=? WHERE operator=?", (outcome.serial + 1, "orange"))
    record_served(outcome, [], config, state, AuditLog(config.state_dir))
    record = state.zone("orange")
    assert record is not None and not record.in_effect and record.reload_message == "reload pending"
    assert "reload" in _events(config.state_dir)  # what happened to that serial is still on record


def _has_body(state_dir: Path) -> bool:
    state = State(state_dir)
    try:
        record = state.zone("orange")
        return record is not None and state.has_body(record.checksum)
    finally:
        state.close()


@pytest.mark.integration  # the hook is a real process reading the state
def test_the_reload_hook_runs_before_the_state_keeps_the_body(tmp_path: Path) -> None:
    """The primary (a reload hook) gets the zone before the state compresses and keeps its
    body, the slowest record of a publish (issue 11: every secondary within 5 s): the hook sees
    the zone's row, not yet its body; the publish then keeps the body."""
    seen = tmp_path / "seen"
    probe = (f"import sqlite3,sys; db=sqlite3.connect('{tmp_path}/state/state.sqlite3'); "
             "row=db.execute('SELECT z.serial, (SELECT count(*) FROM zone_bodies b WHERE b.checksum=z.checksum) "
             "FROM zones z').fetchone(); open(sys.argv[1],'w').write(repr(row))")
    config = _config(tmp_path, reload=f"{{kind: command, command: [{_py()}, -c, \"{probe}\", {seen}]}}")
    now = datetime.now(UTC)
    done = reconcile(lambda: load_orders(config.orders_dir, config.order_rules), config, config.state_dir,
                     config.zones_dir, now, now=now)
    assert done.published and done.outcomes[0].reload is not None and done.outcomes[0].reload.ok, done.outcomes
    serial, bodies = ast.literal_eval(seen.read_text())
    assert serial == done.outcomes[0].serial and bodies == 0
    assert _has_body(config.state_dir)


def test_a_publish_killed_before_it_kept_the_body_is_still_ours(tmp_path: Path) -> None:
    """The window the order above opens: the zone row recorded, the body not (killed between).
    The next plan reads the file, trusted because its SHA-256 is the recorded digest: nothing
    to write, nothing called tampered; and the body is kept again."""
    config = _config(tmp_path)
    now = datetime.now(UTC)

    def run() -> Any:
        return reconcile(lambda: load_orders(config.orders_dir, config.order_rules), config, config.state_dir,
                         config.zones_dir, now, now=now)

    assert run().published
    with sqlite3.connect(config.state_dir / "state.sqlite3") as db:
        db.execute("DELETE FROM zone_bodies")
    assert not _has_body(config.state_dir)
    again = run()
    assert not again.published and not again.plan.has_changes
    assert [p.restore for p in again.plan.operators] == [""]
    assert _has_body(config.state_dir)
    assert "zone-restored" not in _events(config.state_dir)


def _py() -> str:
    return sys.executable


def test_a_state_that_cannot_keep_the_body_after_the_publish_does_not_undo_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The zone is in place, its row and audit records written, the hooks run: a state disk
    that fills up just then (keeping the body) is not a failed publish; the next reconcile keeps it."""
    config = _config(tmp_path)
    now = datetime.now(UTC)

    def full(*_: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    def run() -> Any:
        return reconcile(lambda: load_orders(config.orders_dir, config.order_rules), config, config.state_dir,
                         config.zones_dir, now, now=now)

    monkeypatch.setattr(State, "keep_body", full)
    done = run()
    assert done.published and done.outcomes[0].published and done.outcomes[0].reload is not None
    assert not _has_body(config.state_dir)
    monkeypatch.undo()
    again = run()
    assert not again.published and _has_body(config.state_dir)
