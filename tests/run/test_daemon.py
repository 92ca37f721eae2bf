"""The daemon end to end: real `blocker run` processes, real time, short windows.

Every test starts `.venv/bin/blocker run` as a child process on a temp orders folder, state dir
and zones dir, with its HTTP endpoint on a free loopback port, and watches what a resolver would
see: the published zone file (and, in the first test, a real Unbound loading it). The `daemons`
fixture kills and reaps every process a test started, whatever happened.

Timing is measured against the instant an order starts or lifts: each transition must show in
the zone (and in Unbound's answers) within 2 s of it. The observed latencies are printed
(`pytest -s` shows them).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.resolverlib import AUTH_ADDRESS, Unbound, base_rules, canary_name
from tests.support.audit import events, verify_audit
from tests.support.daemon import Env, metric, wait_until
from tests.support.orders import whole_second, write_order
from tests.support.zones import ORANGE, serial_ge, unbound_publish_fresh, zone_owners, zone_serial

REPO = Path(__file__).resolve().parents[2]
TRANSITION_SLA = 2.0  # seconds after its instant by which a transition must be visible


# ------------------------------------------------------------------------------------------
# helpers: time, orders, config, zones


def sleep_until(instant: float) -> None:
    delay = instant - time.time()
    if delay > 0:
        time.sleep(delay)


def report(what: str, seconds: float) -> None:
    print(f"\n[latency] {what}: {seconds:+.3f} s")


# ------------------------------------------------------------------------------------------
# 1. start and lift on time, in the zone and on a real resolver


def test_order_window_applies_and_lifts_on_time_in_zone_and_unbound(env: Env, unbound: Unbound) -> None:
    name = "open.example.gg"
    zone_path = unbound.zone(ORANGE).path
    # The fixture zone holds the base rules, written by another tool: blocker would keep them as
    # unexplained removals. Start from an empty zone; the base rules are put back at the end.
    unbound_publish_fresh(unbound, {})
    try:
        config = env.config({"orange": {
            "reload": {"kind": "unbound", "key_file": str(unbound.conf_path)},
            "resolvers": [{"address": f"127.0.0.1:{unbound.port}", "name": "unbound"}],
            "signature": {"nxdomain_authority": "empty"},
        }}, probe={"interval": 3600})
        env.zones = zone_path.parent  # publish where Unbound reads
        start, end = whole_second(3), whole_second(6)
        write_order(env.orders, "window", start, end, [name])
        daemon = env.start(config)
        t_start, t_end = start.timestamp(), end.timestamp()
        assert time.time() < t_start - 0.5, "daemon took too long to start for this window"

        def resolves() -> bool:
            reply = unbound.ask(name, timeout=0.5)
            return reply.rcode == "NOERROR" and reply.addresses == {AUTH_ADDRESS}

        def blocked() -> bool:
            return unbound.ask(name, timeout=0.5).rcode == "NXDOMAIN"

        # before: not in the zone, the auth server's answer
        assert name not in zone_owners(zone_path)
        assert resolves()
        sleep_until(t_start - 0.3)
        assert name not in zone_owners(zone_path) and resolves(), "blocked before its start"

        # during: in the zone and NXDOMAIN, each within 2 s of the start instant
        seen = wait_until(lambda: name in zone_owners(zone_path), t_start + TRANSITION_SLA, "zone has the name")
        report("start -> zone file", seen - t_start)
        assert {f"*.{name}"} <= zone_owners(zone_path)
        seen = wait_until(blocked, t_start + TRANSITION_SLA, "Unbound answers NXDOMAIN")
        report("start -> Unbound NXDOMAIN", seen - t_start)
        assert unbound.ask(f"www.{name}", timeout=0.5).rcode == "NXDOMAIN"
        sleep_until(t_end - 0.3)
        assert name in zone_owners(zone_path) and blocked(), "lifted before its end"

        # after: gone from the zone, the auth server's answer again
        seen = wait_until(lambda: name not in zone_owners(zone_path), t_end + TRANSITION_SLA, "zone lifted")
        report("end -> zone file", seen - t_end)
        seen = wait_until(resolves, t_end + TRANSITION_SLA, "Unbound answers the auth server's address")
        report("end -> Unbound resolves", seen - t_end)
        assert not zone_owners(zone_path)

        assert daemon.stop() == 0
        log = daemon.log()
        assert "catch-up" not in log
        assert log.count("transition applied") == 2
        records = verify_audit(env.state)
        assert [e["ok"] for e in events(records, "reload")] == [True, True, True]
        activated = events(records, "entries-activated")
        assert [(e["order"], sorted(e["names"])) for e in activated] == [("window", [f"*.{name}", name])]
        assert [e["order"] for e in events(records, "entries-lifted")] == ["window"]
    finally:
        for daemon in env.daemons:
            daemon.kill()
        # Back to the session's starting zone exactly (base rules, serial 1, as the rpz_zones
        # fixture wrote it): later modules render over it and expect no higher serial there.
        unbound.publish(ORANGE, base_rules(ORANGE), 1)
        unbound.wait_for(lambda r: r.canary_serial(canary_name(ORANGE)) == 1, what="base rules back")
        unbound.wait_rcode("blocked.example.gg", "NXDOMAIN")


# ------------------------------------------------------------------------------------------
# 2. kill -9 at any point, restart into a consistent state


def _state_zones(state_dir: Path) -> dict[str, tuple[int, str]]:
    with contextlib.closing(sqlite3.connect(f"file:{state_dir / 'state.sqlite3'}?mode=ro", uri=True)) as db:
        return {op: (serial, checksum) for op, serial, checksum in
                db.execute("SELECT operator, serial, checksum FROM zones")}


def _zone_checksum(path: Path) -> str:
    """The body checksum in the header, after checking the file is whole: the body matches it and
    the serial canary (the last line) carries the SOA serial."""
    data = path.read_bytes()
    found = re.search(rb"^; content-sha256: ([0-9a-f]{64})$", data, re.M)
    assert found, f"{path} has no checksum header"
    lines = data.splitlines(keepends=True)
    ns = next(i for i, line in enumerate(lines) if line.startswith(b"@ IN NS "))
    assert hashlib.sha256(b"".join(lines[ns + 1:-1])).hexdigest() == found.group(1).decode(), f"{path} body"
    assert lines[-1] == f'serial.{path.stem}.canary.blocker TXT "{zone_serial(path)}"\n'.encode(), lines[-1]
    return found.group(1).decode()


def test_kill_9_mid_run_then_restart_is_consistent(env: Env) -> None:
    operators = ("orange", "free")
    config = env.config({op: {} for op in operators}, reconcile=1)
    write_order(env.orders, "standing", whole_second(-3600), whole_second(3600), ["standing.example.gg"],
                operators)
    later_start = whole_second(2.5)  # starts while the daemon is being killed and restarted
    write_order(env.orders, "later", later_start, whole_second(3600), ["later.example.gg"], operators)
    daemon = env.start(config)
    deadline = time.time() + 3
    for op in operators:
        wait_until(lambda op=op: "standing.example.gg" in zone_owners(env.zone(op)), deadline, f"{op} zone")
    last = {op: zone_serial(env.zone(op)) for op in operators}

    for i, delay in enumerate((0.0, 0.03, 0.1, 0.25)):
        name = f"kill{i}.example.gg"
        write_order(env.orders, f"kill{i}", whole_second(-60), whole_second(3600), [name], operators)
        time.sleep(delay)  # kill before, during or after the reconcile that publishes it
        daemon.proc.send_signal(signal.SIGKILL)
        assert daemon.proc.wait(5) == -signal.SIGKILL
        verify_audit(env.state)  # the chain holds whatever the moment of the kill
        for op in operators:
            _zone_checksum(env.zone(op))  # the old zone or the new one, whole
            serial = zone_serial(env.zone(op))
            assert serial is not None and serial_ge(serial, last[op]), f"{op} serial went back"
            last[op] = serial
        daemon = env.start(config)
        deadline = time.time() + TRANSITION_SLA
        for op in operators:
            wait_until(lambda op=op, name=name: name in zone_owners(env.zone(op)), deadline, f"{name} in {op}")

    wait_until(lambda: "later.example.gg" in zone_owners(env.zone("free")),
               later_start.timestamp() + TRANSITION_SLA, "later order started")
    daemon.wait_reconciles(1)
    # consistent: the state, the zones on disk, /metrics and a fresh plan all agree
    recorded = _state_zones(env.state)
    for op in operators:
        owners = zone_owners(env.zone(op))
        assert owners >= {"standing.example.gg", "later.example.gg", *(f"kill{i}.example.gg" for i in range(4))}
        serial = zone_serial(env.zone(op))
        assert recorded[op] == (serial, _zone_checksum(env.zone(op)))
        assert daemon.metric("blocker_zone_serial", operator=op) == serial
    assert daemon.health()[0] == 200
    plan = env.run_cli("plan")
    assert plan.returncode == 0, f"plan after restart wants changes:\n{plan.stdout}{plan.stderr}"
    assert daemon.stop() == 0

    # serials only ever go forward, over all the kills, per operator
    records = verify_audit(env.state)
    for op in operators:
        serials = [e["serial"] for e in events(records, "zone-published") if e["operator"] == op]
        assert all(serial_ge(b, a) and a != b for a, b in itertools.pairwise(serials)), serials
    assert len(events(records, "daemon-start")) == 5


# ------------------------------------------------------------------------------------------
# 3. stopped across an expiry: lifted at start, late and by how much


def test_stopped_across_an_instant_catches_up_at_start(env: Env) -> None:
    config = env.config()
    # Room for a daemon start, its first publish and a stop before the instant (2 s was seen
    # missed by 58 ms on a loaded machine): the test proves the catch-up, not a fast start.
    instant = whole_second(5)
    write_order(env.orders, "ending", whole_second(-3600), instant, ["ending.example.gg"])
    write_order(env.orders, "starting", instant, whole_second(3600), ["starting.example.gg"])
    daemon = env.start(config)
    wait_until(lambda: "ending.example.gg" in zone_owners(env.zone()), time.time() + 4, "active order published")
    assert "starting.example.gg" not in zone_owners(env.zone())
    assert daemon.stop(signal.SIGTERM) == 0
    assert time.time() < instant.timestamp(), "the daemon must be stopped before the instant"

    sleep_until(instant.timestamp() + 2.3)  # more than the 2 s a transition may take on time
    restarted = time.time()
    daemon = env.start(config, ready=False)
    owners = lambda: zone_owners(env.zone())  # noqa: E731
    seen = wait_until(lambda: "ending.example.gg" not in owners() and "starting.example.gg" in owners(),
                      restarted + TRANSITION_SLA, "caught up at start")
    report("restart -> catch-up in zone", seen - restarted)
    daemon.wait_ready()
    late_min, late_max = restarted - instant.timestamp(), seen - instant.timestamp()

    log = [line for line in daemon.log().splitlines() if "catch-up" in line]
    assert len(log) == 2, daemon.log()
    for order_id, transition in (("ending", "expired"), ("starting", "started")):
        line = next(ln for ln in log if f"order={order_id}" in ln)
        assert f"transition={transition}" in line and "WARNING" in line
        late = float(re.search(r"late_seconds=([\d.]+)", line).group(1))
        assert late_min <= late <= late_max, (late, late_min, late_max)
    caught = {e["order"]: e for e in events(verify_audit(env.state), "catch-up")}
    assert set(caught) == {"ending", "starting"}
    for data in caught.values():
        assert late_min <= data["late_seconds"] <= late_max
        assert datetime.fromisoformat(data["instant"]) == instant
    assert caught["ending"]["transition"] == "expired" and caught["starting"]["transition"] == "started"
    assert late_min <= daemon.metric("blocker_last_catchup_lateness_seconds") <= late_max
    assert daemon.stop(signal.SIGTERM) == 0


# ------------------------------------------------------------------------------------------
# 4. a broken file keeps its last good version in force


def test_broken_file_keeps_last_good_version(env: Env) -> None:
    config = env.config(reconcile=1)
    good = write_order(env.orders, "kept", whole_second(-3600), whole_second(3600), ["kept.example.gg"])
    good_text = good.read_text()
    write_order(env.orders, "other", whole_second(-3600), whole_second(3600), ["other.example.gg"])
    daemon = env.start(config)
    wait_until(lambda: "kept.example.gg" in zone_owners(env.zone()), time.time() + 2, "published")

    def invalid_lines() -> list[str]:
        return [ln for ln in daemon.log().splitlines() if "invalid order file" in ln and str(good) in ln]

    breakages = [
        ("invalid YAML", good_text.replace("targets: [kept.example.gg]", "targets: [kept.example.gg")),
        ("unknown field", good_text + "duraton: 3 days\n"),
    ]
    for number, (what, text) in enumerate(breakages, start=1):
        good.write_text(text)
        wait_until(lambda number=number: len(invalid_lines()) >= number, time.time() + 2, f"{what} logged")
        wait_until(lambda: daemon.metric("blocker_orders_invalid") == 1, time.time() + 1, "invalid metric")
        status, health = daemon.health()
        assert health["orders_invalid"] == [str(good)], health
        # valid changes in other files still apply meanwhile
        write_order(env.orders, "other", whole_second(-3600), whole_second(3600),
                    ["other.example.gg", f"other{number}.example.gg"])
        wait_until(lambda number=number: f"other{number}.example.gg" in zone_owners(env.zone()),
                   time.time() + 2, "valid change applied")
        daemon.wait_reconciles(1)  # a periodic reconcile re-reads the folder, after the one for "other"
        assert "kept.example.gg" in zone_owners(env.zone()), f"{what}: the last good version was lifted"
        assert len(invalid_lines()) == number, f"{what}: logged more than once:\n" + "\n".join(invalid_lines())
        assert status == 200  # publishing works: a flag, not a failure

    good.write_text(good_text.replace("[kept.example.gg]", "[kept.example.gg, kept2.example.gg]"))
    wait_until(lambda: "kept2.example.gg" in zone_owners(env.zone()), time.time() + 2, "fixed file applied")
    assert "kept.example.gg" in zone_owners(env.zone())
    wait_until(lambda: daemon.metric("blocker_orders_invalid") == 0, time.time() + 1, "invalid metric back to 0")
    status, health = daemon.health()
    assert status == 200 and health["orders_invalid"] == []
    assert "order file valid again" in daemon.log()
    assert daemon.stop() == 0
    records = verify_audit(env.state)
    assert [e["file"] for e in events(records, "order-invalid")] == [str(good), str(good)]
    assert [e["order"] for e in events(records, "order-changed") if e["order"] == "kept"] == ["kept"]


# ------------------------------------------------------------------------------------------
# 5. a deleted file lifts nothing; apply --force does


def test_deleted_file_lifts_nothing_until_apply_force(env: Env) -> None:
    config = env.config(reconcile=1)
    path = write_order(env.orders, "deleted", whole_second(-3600), whole_second(3600), ["deleted.example.gg"])
    write_order(env.orders, "stays", whole_second(-3600), whole_second(3600), ["stays.example.gg"])
    daemon = env.start(config)
    wait_until(lambda: "deleted.example.gg" in zone_owners(env.zone()), time.time() + 2, "published")

    path.unlink()
    wait_until(lambda: daemon.metric("blocker_orders_orphaned") == 1, time.time() + 2, "orphaned metric")
    daemon.wait_reconciles(2)
    assert {"deleted.example.gg", "stays.example.gg"} <= zone_owners(env.zone())
    status, health = daemon.health()
    assert health["orders_orphaned"] == ["deleted"]
    assert status == 200

    planned = env.run_cli("plan", "--force", "--json", config=config)  # what --force removes, with its checksum
    assert planned.returncode == 3, planned.stdout + planned.stderr
    applied = env.run_cli("apply", "--force", "--checksum", json.loads(planned.stdout)["checksum"],
                          config=config)  # while the daemon runs
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "deleted.example.gg" not in zone_owners(env.zone())
    daemon.wait_reconciles(1)
    assert "deleted.example.gg" not in zone_owners(env.zone()), "the daemon put the forced lift back"
    assert "stays.example.gg" in zone_owners(env.zone())
    assert daemon.metric("blocker_orders_orphaned") == 0
    assert daemon.health()[1]["orders_orphaned"] == []
    assert daemon.stop() == 0
    records = verify_audit(env.state)
    assert [e["order"] for e in events(records, "order-orphaned")] == ["deleted"]
    assert [e["order"] for e in events(records, "order-forgotten")] == ["deleted"]
    lifted = events(records, "entries-lifted")
    assert [(e["order"], sorted(e["names"])) for e in lifted] == [
        ("deleted", ["*.deleted.example.gg", "deleted.example.gg"])]


# ------------------------------------------------------------------------------------------
# 6. SIGHUP reloads at once


def test_sighup_reloads_at_once(env: Env) -> None:
    config = env.config(reconcile=3600, watch=3600)
    path = write_order(env.orders, "hup", whole_second(-3600), whole_second(3600), ["aaaa.example.gg"])
    path.write_text(path.read_text() + "notes: " + "x" * 40 + "\n")
    daemon = env.start(config)
    assert zone_owners(env.zone()) == {"aaaa.example.gg", "*.aaaa.example.gg"}
    before = path.stat()
    data = path.read_bytes()
    edited = data.replace(b"[aaaa.example.gg]", b"[aaaa.example.gg, bbbb.example.gg]").replace(b"x" * 40, b"x" * 23)
    assert len(edited) == len(data) and edited != data
    with path.open("r+b") as fh:  # same inode, same size, same mtime: no poll could notice
        fh.write(edited)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    time.sleep(0.3)
    assert "bbbb.example.gg" not in zone_owners(env.zone())  # nothing noticed it

    sent = time.time()
    daemon.send(signal.SIGHUP)
    seen = wait_until(lambda: "bbbb.example.gg" in zone_owners(env.zone()), sent + 1.0, "SIGHUP reload")
    report("SIGHUP -> zone file", seen - sent)
    assert "aaaa.example.gg" in zone_owners(env.zone())
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0
    assert "reason=sighup" in daemon.log()


# ------------------------------------------------------------------------------------------
# 7. /healthz


def test_healthz_503_while_the_zones_dir_cannot_be_written(env: Env) -> None:
    config = env.config(reconcile=3600)  # only order changes reconcile: no run between the two steps below
    write_order(env.orders, "first", whole_second(-3600), whole_second(3600), ["first.example.gg"])
    daemon = env.start(config)
    status, health = daemon.health()
    assert (status, health["status"], health["reasons"]) == (200, "ok", [])

    env.zones.rename(env.root / "zones.moved")
    env.zones.write_text("a file where the zones folder should be\n")  # works as root too
    write_order(env.orders, "second", whole_second(-3600), whole_second(3600), ["second.example.gg"])
    wait_until(lambda: daemon.health()[0] == 503, time.time() + 2, "503")
    status, body = daemon.get("/healthz")
    health = json.loads(body)
    assert health["status"] == "unhealthy"
    assert any("orange" in r and "publish failed" in r for r in health["reasons"]), health
    # The order change failed to publish; the zone watch, finding the zone gone, tries once more
    # (it does not retry a failed rewrite every tick).
    assert daemon.metric("blocker_publish_failures_total", operator="orange") in (1, 2)
    time.sleep(2.5)  # two and a half watch ticks
    assert daemon.metric("blocker_publish_failures_total", operator="orange") <= 2
    assert "publish failed" in daemon.log()
    assert daemon.proc.poll() is None

    env.zones.unlink()
    (env.root / "zones.moved").rename(env.zones)
    write_order(env.orders, "third", whole_second(-3600), whole_second(3600), ["third.example.gg"])
    wait_until(lambda: daemon.health()[0] == 200, time.time() + 2, "healthy again")
    assert "second.example.gg" in zone_owners(env.zone())
    assert daemon.stop() == 0


@pytest.mark.parametrize("failure", ["reload-hook", "zone-check"])
def test_healthz_503_when_publishing_fails(env: Env, failure: str) -> None:
    if failure == "reload-hook":  # the zone is written, the resolver never takes it
        config = env.config({"orange": {"reload": {"kind": "command", "command": ["false"]}}}, reconcile=1)
        expected, counter = "reload failed", "blocker_reload_failures_total"
        extra_env = {}
    else:  # the zone cannot pass its check: nothing is written
        config = env.config(publish={"check": "named-checkzone"}, reconcile=1)
        expected, counter = "publish failed", "blocker_publish_failures_total"
        extra_env = {"PATH": str(env.root / "empty-path")}  # no named-checkzone on it
    write_order(env.orders, "any", whole_second(-3600), whole_second(3600), ["any.example.gg"])
    daemon = env.start(config, env=extra_env)
    status, health = daemon.health()
    assert status == 503 and health["status"] == "unhealthy", health
    assert any("orange" in r and expected in r for r in health["reasons"]), health
    assert daemon.metric(counter, operator="orange") == 1
    if failure == "reload-hook":
        assert daemon.metric("blocker_zone_in_effect", operator="orange") == 0
        assert "any.example.gg" in zone_owners(env.zone())
    else:
        assert not env.zone().exists()
    daemon.wait_reconciles(1)  # the periodic reconcile tries again, and fails again
    assert daemon.health()[0] == 503
    assert daemon.stop() == 0
    failed = [r for r in verify_audit(env.state) if r["event"] in ("reload", "publish-failed")]
    assert failed and all(not r["data"].get("ok", False) for r in failed)


def test_healthz_back_to_200_once_the_reload_hook_works_again(env: Env) -> None:
    flag = env.root / "resolver-up"
    config = env.config({"orange": {"reload": {"kind": "command", "command": ["test", "-e", str(flag)]}}},
                        reconcile=1)
    write_order(env.orders, "any", whole_second(-3600), whole_second(3600), ["any.example.gg"])
    daemon = env.start(config)
    assert daemon.health()[0] == 503
    flag.touch()  # the resolver is back: the next reconcile must reload again, with nothing changed
    fixed = time.time()
    seen = wait_until(lambda: daemon.health()[0] == 200, fixed + 3, "reload retried")
    report("reload hook fixed -> /healthz 200", seen - fixed)
    assert daemon.metric("blocker_zone_in_effect", operator="orange") == 1
    assert daemon.stop() == 0
    reloads = events(verify_audit(env.state), "reload")
    assert reloads[-1]["ok"] and not reloads[0]["ok"]
    assert len({r["serial"] for r in reloads}) == 1  # the same zone, reloaded again: no new serial


# ------------------------------------------------------------------------------------------
# 8. /metrics


REQUIRED_METRICS = (
    "blocker_orders", "blocker_order_start_timestamp_seconds", "blocker_order_end_timestamp_seconds",
    "blocker_zone_entries", "blocker_zone_serial", "blocker_zone_publish_timestamp_seconds",
    "blocker_publish_failures_total", "blocker_orders_invalid", "blocker_orders_orphaned",
    "blocker_next_transition_timestamp_seconds", "blocker_build_info",
)


def test_metrics_pass_promtool_and_have_the_required_names(env: Env) -> None:
    config = env.config({"orange": {}, "free": {}})
    active_end, pending_start = whole_second(3600), whole_second(1800)
    write_order(env.orders, "active", whole_second(-3600), active_end, ["a.example.gg", "b.example.gg"])
    write_order(env.orders, "pending", pending_start, whole_second(7200), ["c.example.gg"], ("free",))
    daemon = env.start(config)
    text = daemon.metrics()
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: apt-get install prometheus"
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), checked.stdout + checked.stderr

    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert set(REQUIRED_METRICS) <= names, set(REQUIRED_METRICS) - names
    assert metric(text, "blocker_orders", status="active") == 1
    assert metric(text, "blocker_orders", status="pending") == 1
    assert metric(text, "blocker_order_end_timestamp_seconds", order="active") == active_end.timestamp()
    assert metric(text, "blocker_order_start_timestamp_seconds", order="pending") == pending_start.timestamp()
    assert metric(text, "blocker_zone_entries", operator="orange") == 2  # blocked names (records: 4)
    assert metric(text, "blocker_zone_records", operator="orange") == 4
    assert metric(text, "blocker_zone_serial", operator="orange") == zone_serial(env.zone("orange"))
    assert metric(text, "blocker_publish_failures_total", operator="orange") == 0
    assert metric(text, "blocker_next_transition_timestamp_seconds") == pending_start.timestamp()
    assert metric(text, "blocker_orders_invalid") == 0 and metric(text, "blocker_orders_orphaned") == 0
    assert any(k == "version" for f in text_string_to_metric_families(text) if f.name == "blocker_build_info"
               for s in f.samples for k in s.labels)
    # bounded labels: no domain name ever appears in a label
    assert "example.gg" not in text
    assert daemon.stop() == 0


# ------------------------------------------------------------------------------------------
# 9. one daemon per state dir; clean stops


def test_second_daemon_on_same_state_dir_is_refused_and_signals_stop_cleanly(env: Env) -> None:
    config = env.config()
    first = env.start(config)
    second = env.start(config, ready=False)
    assert second.proc.wait(10) == 1
    message = second.log()
    assert "another blocker daemon is running" in message and f"pid {first.pid}" in message, message
    assert str(env.state) in message
    assert "Traceback" not in message and len(message.strip().splitlines()) == 1, message
    assert first.health()[0] == 200 and first.proc.poll() is None

    assert first.stop(signal.SIGINT) == 0
    assert "Traceback" not in first.log() and "daemon stopped" in first.log()
    third = env.start(config)  # the lock went with the first daemon
    assert third.stop(signal.SIGTERM) == 0
    assert "Traceback" not in third.log()
    records = verify_audit(env.state)
    assert [r["event"] for r in records if r["event"].startswith("daemon-")] == [
        "daemon-start", "daemon-stop", "daemon-start", "daemon-stop"]


def test_sigterm_during_a_reconcile_lets_it_finish_and_exits_0(env: Env) -> None:
    slow_reload = ["sh", "-c", "if grep -q slow {zone_file}; then sleep 1; fi"]
    config = env.config({"orange": {"reload": {"kind": "command", "command": slow_reload}}})
    daemon = env.start(config)
    write_order(env.orders, "slow", whole_second(-3600), whole_second(3600), ["slow.example.gg"])
    # the zone is written, then the reload hook runs for 1 s inside a scheduler job: stop now
    wait_until(lambda: "slow.example.gg" in zone_owners(env.zone()), time.time() + 2, "zone written")
    sent = time.time()
    assert daemon.stop(signal.SIGTERM, timeout=6) == 0
    assert time.time() - sent < 3
    records = verify_audit(env.state)
    assert records[-1]["event"] == "daemon-stop"
    assert [r["data"]["ok"] for r in records if r["event"] == "reload"] == [True, True]  # it finished
    assert "Traceback" not in daemon.log() and "reconcile failed" not in daemon.log()


# ------------------------------------------------------------------------------------------
# 10. JSON logs


def test_log_format_json_gives_json_lines(env: Env) -> None:
    config = env.config()
    write_order(env.orders, "logged", whole_second(-3600), whole_second(3600), ["logged.example.gg"])
    daemon = env.start(config, extra=["--log-format", "json"])
    assert daemon.stop() == 0
    lines = [ln for ln in daemon.log().splitlines() if ln.strip()]
    assert lines
    parsed = [json.loads(ln) for ln in lines]
    assert all({"ts", "level", "msg"} <= set(p) for p in parsed)
    messages = [p["msg"] for p in parsed]
    assert "daemon started" in messages and "daemon stopped" in messages
    published = next(p for p in parsed if p["msg"] == "zone published")
    assert published["operator"] == "orange" and isinstance(published["serial"], int)
