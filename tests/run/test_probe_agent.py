"""`blocker probe-agent` end to end: a real agent process probing a real Unbound (session fixture)
that serves a zone `blocker apply` published; its own /metrics scraped, every probe series
labelled with the agent; no zone written, no reconcile metric (an agent never reconciles)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

from tests.resolverlib import Unbound, base_rules, canary_name, free_port
from tests.support.audit import audit_records, events
from tests.support.cli import BLOCKER
from tests.support.daemon import Env, http_get, metric, wait_until
from tests.support.orders import PARIS_WINTER, write_order
from tests.support.zones import ORANGE, unbound_publish_fresh

AGENT = "vp-par-1"


def _start_agent(env: Env, config: Path, state: Path, zones: Path, port: int) -> subprocess.Popen[bytes]:
    log = (env.root / "agent.log").open("wb")
    return subprocess.Popen([BLOCKER, "probe-agent", "--config", str(config), "--orders", str(env.orders),
                             "--zones", str(zones), "--state-dir", str(state), "--listen", f"127.0.0.1:{port}"],
                            cwd=env.root, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)


def test_probe_agent_probes_a_real_resolver_and_serves_labelled_metrics(env: Env, unbound: Unbound) -> None:
    zone_path = unbound.zone(ORANGE).path
    unbound_publish_fresh(unbound, {})
    agent: subprocess.Popen[bytes] | None = None
    try:
        operator = {"orange": {
            "reload": {"kind": "unbound", "key_file": str(unbound.conf_path)},
            "resolvers": [{"address": f"127.0.0.1:{unbound.port}", "name": "unbound"}],
            "signature": {"nxdomain_authority": "empty"},
        }}
        config = env.config(operator, probe={"interval": 3600, "agent_name": AGENT, "sample_per_pass": 2,
                                             "sweep_period": 7200})
        env.zones = zone_path.parent
        now = datetime.now(PARIS_WINTER).replace(microsecond=0)
        names = ["open.example.gg", "late.example.gg", "drop.example.gg"]
        write_order(env.orders, "agent-order", now - timedelta(hours=1), now + timedelta(days=1), names)
        done = env.run_cli("apply")
        assert done.returncode == 0, done.stdout + done.stderr
        unbound.wait_for(lambda r: r.canary_serial(canary_name(ORANGE)) is not None and
                         r.canary_serial(canary_name(ORANGE)) != 1, what="blocker's zone served")
        digest = hashlib.sha256(zone_path.read_bytes()).hexdigest()
        mtime = os.stat(zone_path).st_mtime_ns

        port = free_port()
        agent_state = env.root / "agent-state"
        agent = _start_agent(env, config, agent_state, zone_path.parent, port)

        def scraped() -> str | None:
            if agent is not None and agent.poll() is not None:
                raise AssertionError(f"agent exited {agent.returncode}:\n{(env.root / 'agent.log').read_text()}")
            try:
                _status, body = http_get(port, "/metrics")
            except OSError:
                return None
            text = body.decode()
            return text if metric(text, "blocker_probe_last_pass_timestamp_seconds", operator="orange",
                                  agent=AGENT) else None

        wait_until(scraped, time.time() + 30, "a probe pass in the agent's /metrics")
        text = scraped()
        assert text is not None
        blocked = metric(text, "blocker_probe_checks", operator="orange", resolver="unbound", verdict="blocked",
                         agent=AGENT)
        # The first pass: the control name and the rotation's first 4 of the 6 checks (3 names and
        # their subdomains; 7200 s sweep / 3600 s interval: 2 passes, so 4 a pass), each proven
        # blocked by the canary serial Unbound serves.
        assert blocked == 4, text
        for verdict in ("not-blocked", "overblocked", "error", "unverified"):
            assert not metric(text, "blocker_probe_checks", verdict=verdict, agent=AGENT), (verdict, text)
        assert metric(text, "blocker_resolver_up", operator="orange", resolver="unbound", agent=AGENT) == 1
        assert metric(text, "blocker_probe_sample_checks", operator="orange", scope="total", agent=AGENT) == 7
        assert metric(text, "blocker_probe_sample_checks", operator="orange", scope="asked", agent=AGENT) == 5
        assert metric(text, "blocker_probe_agent_info", agent=AGENT) == 1
        # No daemon metric: BlockerReconcileStale must not page for an agent.
        assert "blocker_reconciles_total" not in text and "blocker_zone_serial" not in text
        status, body = http_get(port, "/healthz")
        assert status == 200 and json.loads(body)["agent"] == AGENT

        agent.send_signal(signal.SIGTERM)
        assert agent.wait(10) == 0
        # Never publishes: the zone is the one `apply` wrote, to the byte and the mtime.
        assert hashlib.sha256(zone_path.read_bytes()).hexdigest() == digest
        assert os.stat(zone_path).st_mtime_ns == mtime
        records = audit_records(agent_state)
        passes = events(records, "probe-pass")
        assert passes and passes[0]["operator"] == "orange" and passes[0]["verdicts"] == {"blocked": 4,
                                                                                           "resolves": 1}
        assert {r["actor"] for r in records} == {"probe-agent"}
        assert not (env.state / "audit.jsonl").exists() or all(
            r["actor"] != "probe-agent" for r in audit_records(env.state))
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait(10)
        unbound.publish(ORANGE, base_rules(ORANGE), 1)
        unbound.wait_for(lambda r: r.canary_serial(canary_name(ORANGE)) == 1, what="base rules back")
        unbound.wait_rcode("blocked.example.gg", "NXDOMAIN")


def test_probe_agent_refuses_a_state_folder_another_process_holds(env: Env) -> None:
    """Pointed at a running daemon's state folder, the agent refuses (exit 1): two writers of one
    audit trail would break its chain."""
    config = env.config({"orange": {"resolvers": [{"address": "127.0.0.1:9", "name": "none"}]}},
                        probe={"interval": 3600, "timeout": 0.2, "retries": 0})  # a short pass: stop waits for it
    daemon = env.start(config)
    done = subprocess.run([BLOCKER, "probe-agent", "--config", str(config), "--orders", str(env.orders),
                           "--state-dir", str(env.state), "--listen", f"127.0.0.1:{free_port()}"],
                          cwd=env.root, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stderr
    assert "state dir" in done.stderr and "Traceback" not in done.stderr
    assert daemon.stop() == 0
