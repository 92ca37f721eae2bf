"""The shipped deploy files work with the real tools: promtool for rules, our own exposition for
the dashboard's queries."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from blocker.fleet.follow import FleetState
from blocker.run.metrics import Snapshot, registry_for, render

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"


def _exposed_names() -> set[str]:
    s = Snapshot()
    s.operators = ("orange",)
    s.order_windows = {"o": (1.0, 2.0)}
    s.zone_names = {"orange": 1}
    s.zone_records = {"orange": 1}
    s.zone_serial = {"orange": 1}
    s.zone_publish_ts = {"orange": 1.0}
    s.zone_in_effect = {"orange": True}
    s.removals_held = {"orange": 0}
    s.publish_failures = {"orange": 0}
    s.reload_failures = {"orange": 0}
    s.next_transition_ts = 1.0
    s.probe_checks = {("orange", "r", "blocked"): 1}
    s.probe_last_pass_ts = {"orange": 1.0}
    s.probe_oldest_unverified = {"orange": 0.0}
    s.resolver_serial = {("orange", "r"): 1}
    s.resolver_up = {("orange", "r"): True}
    s.time_to_block = {("o", "orange"): 1.0}
    s.time_to_lift = {("o", "orange"): 1.0}
    s.order_unverified = {("o", "orange"): 1.0}
    s.probe_sweep_ts = {"orange": 1.0}
    s.probe_sample = {"orange": (2, 1)}
    registry = registry_for(s)
    fleet = FleetState()  # the daemon registers it beside the snapshot's collector
    fleet.serial, fleet.up, fleet.propagation = {("orange", "s"): 1}, {("orange", "s"): True}, {"orange": 0.5}
    registry.register(fleet)
    text = render(registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


@pytest.mark.integration
def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    check = subprocess.run(["promtool", "check", "rules", str(PROM / "blocker-rules.yml")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 20 rules found" in check.stdout
    tests = subprocess.run(["promtool", "test", "rules", "blocker-rules.test.yml"], cwd=PROM,
                           capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout + tests.stderr


def _metric_names(expr: str) -> set[str]:
    return {m for m in re.findall(r"\b(blocker_[a-z_]+)", expr)}


def test_every_metric_the_rules_and_dashboard_use_is_exposed() -> None:
    exposed = _exposed_names()
    rules = (PROM / "blocker-rules.yml").read_text()
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "blocker-dashboard.json").read_text())
    used = _metric_names(rules)
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= _metric_names(target["expr"])
    missing = {name for name in used if name not in exposed and f"{name}_bucket" not in exposed}
    assert not missing, f"used but never exposed: {sorted(missing)}"
    assert len(used) >= 15


def test_systemd_unit_runs_the_daemon_with_reload_on_sighup() -> None:
    unit = (ROOT / "deploy" / "blocker.service").read_text()
    assert re.search(r"^ExecStart=\S+/blocker run --config ", unit, re.M)
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    limit = re.search(r"^LimitNOFILE=(\d+)$", unit, re.M)
    assert limit is not None and int(limit.group(1)) >= 65536


def test_readme_alert_table_lists_every_shipped_alert() -> None:
    import yaml

    rules = yaml.safe_load((PROM / "blocker-rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    readme = (ROOT / "README.md").read_text()
    table = set(re.findall(r"^\| `(Blocker\w+)` \|", readme, re.M))
    assert table == alerts
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert [job["job_name"] for job in config["scrape_configs"]] == ["blocker"]  # what BlockerDown matches
def test_a_probe_agent_labels_every_probe_series_and_exposes_no_daemon_metric() -> None:
    """A central Prometheus scraping many agents: each probe series names its agent, and an
    agent exposes no reconcile or zone metric a daemon rule would page on (a reconcile timestamp
    of 0 would fire BlockerReconcileStale for every agent)."""
    from blocker.run.metrics import Snapshot, registry_for, render

    s = Snapshot(agent="vp-lyo-2")
    s.probe_checks = {("orange", "r", "blocked"): 3}
    s.probe_last_pass_ts = {"orange": 1.0}
    s.resolver_up = {("orange", "r"): True}
    s.probe_sweep_ts = {"orange": 1.0}
    lines = [line for line in render(registry_for(s, agent=True)).decode().splitlines()
             if line and not line.startswith("#")]
    probe_lines = [line for line in lines if not line.startswith(("blocker_build_info", "blocker_audit_writable"))]
    assert probe_lines and all('agent="vp-lyo-2"' in line for line in probe_lines), probe_lines
    names = {line.split("{")[0].split(" ")[0] for line in lines}
    rules = (PROM / "blocker-rules.yml").read_text()
    daemon_only = {"blocker_last_reconcile_timestamp_seconds", "blocker_zone_in_effect", "blocker_orders_invalid",
                   "blocker_publish_failures_total", "blocker_zone_removals_held"}
    assert daemon_only <= _metric_names(rules) | {"blocker_publish_failures_total"}
    assert not names & daemon_only
