"""Every audited event has a line in the daemon's log: the whole class, from the kinds the code
writes (a source scan) to the records of a real daemon's run (file removed, file back, a zone
edited behind its back, an outside `blocker apply --force`), each matched to its line."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from blocker.run.logs import AUDIT_LINES
from tests.support.audit import audit_records
from tests.support.daemon import Env, wait_until
from tests.support.orders import whole_second, write_order
from tests.support.zones import zone_owners

ROOT = Path(__file__).resolve().parents[2]
# The daemon's own records of these kinds are logged where they happen, by these lines.
DEDICATED = {
    "daemon-start": "daemon started", "daemon-stop": "daemon stopped", "zone-published": "zone published",
    "reload": "zone published", "publish-failed": "publish failed", "order-invalid": "invalid order file",
    "zone-restored": "zone file changed behind blocker's back", "catch-up": "catch-up: transition applied late",
    "order-verified": "first probe pass that proves the order", "audit-writable": "audit trail writable again",
    "probe-agent-start": "probe agent started", "probe-agent-stop": "probe agent stopped",
    "propagation": "propagation followed", "secondary-behind": "secondary behind",
}
LINE_START = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d (INFO|WARNING|ERROR|DEBUG) ")


def _kinds_in_source() -> set[str]:
    kinds = set()
    for path in (ROOT / "blocker").rglob("*.py"):
        text = path.read_text()
        kinds |= set(re.findall(r"audit(?:\.append|_append)\(\s*\"([a-z-]+)\"", text))
        kinds |= set(re.findall(r"(?:records|items)\.append\(\(\"([a-z-]+)\"", text))
        kinds |= set(re.findall(r"\(\"(entries-[a-z]+)\", ", text))
        kinds |= set(re.findall(r"^REPAIRED = \"([a-z-]+)\"", text, re.M))
    return kinds


def test_every_audit_kind_the_code_writes_has_a_log_line() -> None:
    kinds = _kinds_in_source()
    assert len(kinds) >= 20, sorted(kinds)
    assert kinds - set(AUDIT_LINES) == set(), "audit kinds without a log line"
    assert set(AUDIT_LINES) - kinds == set(), "log lines for kinds no code writes"
    assert {k for k, v in AUDIT_LINES.items() if v is None} == set(DEDICATED)


def test_every_record_of_a_daemon_run_has_its_log_line(env: Env) -> None:
    order = write_order(env.orders, "o1", whole_second(-60), whole_second(86400), ["gone.example.gg"])
    text = order.read_text()
    daemon = env.start(env.config(reconcile=1))
    deadline = time.time() + 15
    wait_until(lambda: "gone.example.gg" in " ".join(zone_owners(env.zone())), deadline, "published")

    def seen(event: str, count: int = 1) -> bool:
        return sum(r["event"] == event for r in audit_records(env.state)) >= count

    order.unlink()  # removed while in force
    wait_until(lambda: seen("order-orphaned"), time.time() + 10, "orphaned")
    order.write_text(text)  # back
    wait_until(lambda: "order file is back" in daemon.log(), time.time() + 10, "file back in the log")
    with env.zone().open("a") as fh:  # a zone changed outside the tool
        fh.write("evil.example.gg CNAME .\n")
    wait_until(lambda: seen("zone-restored"), time.time() + 10, "zone restored")
    order.unlink()
    wait_until(lambda: seen("order-orphaned", 2), time.time() + 10, "orphaned again")
    planned = env.run_cli("plan", "--force", "--json")  # an outside apply lifts the orphan
    done = env.run_cli("apply", "--force", "--checksum", json.loads(planned.stdout)["checksum"])
    assert done.returncode == 0, done.stdout + done.stderr
    wait_until(lambda: re.search(r"audit=apply\b", daemon.log()), time.time() + 10, "outside apply logged")
    assert daemon.stop() == 0

    log = daemon.log()
    lines = log.splitlines()
    assert lines and all(LINE_START.match(line) for line in lines), "every line starts with a time and its offset"
    records = [r for r in audit_records(env.state)]
    kinds = {r["event"] for r in records}
    assert {"order-added", "order-orphaned", "zone-restored", "order-forgotten", "apply", "zone-published",
            "entries-activated", "entries-lifted", "daemon-start", "daemon-stop"} <= kinds
    for record in records:
        kind, actor = record["event"], record["actor"]
        if actor == "daemon" and AUDIT_LINES[kind] is None:
            assert DEDICATED[kind] in log, f"no line for the daemon's {kind}"
        else:
            assert re.search(rf" audit={re.escape(kind)} .*\bseq={record['seq']}\b", log), \
                f"no line for record {record['seq']} ({kind} by {actor})"
    outside = [line for line in lines if "audit=apply" in line]
    assert len(outside) == 1 and "zones published outside the daemon" in outside[0]
    assert re.search(r"WARNING .*order file removed while in force.* order=o1", log)
    assert re.search(r"WARNING .*order removed by force.* actor=(?!daemon)", log)
