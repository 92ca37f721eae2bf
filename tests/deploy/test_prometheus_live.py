"""The shipped scrape config and alert rules in a real Prometheus (Debian's), on loopback,
scraping a real daemon whose reload hook fails: the series read back through Prometheus's HTTP
API, the alerts through its rule evaluation. Scrape and evaluation every second (the test's
copy of deploy/prometheus/prometheus.yml); the shipped rules are loaded unchanged."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.resolverlib import free_port
from tests.support.daemon import Env, wait_until
from tests.support.orders import whole_second, write_order

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"


class Prometheus:
    def __init__(self, root: Path, target: str) -> None:
        config = yaml.safe_load((PROM / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(PROM / name) for name in config["rule_files"]]
        assert config["scrape_configs"][0]["job_name"] == "blocker"  # what BlockerDown matches
        config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.log_path = root / "prometheus.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited {self.proc.returncode}:\n{self.log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[list[Prometheus]]:
    started: list[Prometheus] = []
    try:
        yield started
    finally:
        for p in started:
            p.stop()


def test_real_prometheus_scrapes_the_daemon_and_pages_on_a_failing_reload(
        env: Env, prometheus: list[Prometheus]) -> None:
    write_order(env.orders, "o1", whole_second(-60), whole_second(86400), ["bad.example.gg"])
    config = env.config({"orange": {"reload": {"kind": "command", "command": ["false"]}}, "free": {}}, reconcile=1)
    daemon = env.start(config)
    prom = Prometheus(env.root, f"127.0.0.1:{daemon.port}")
    prometheus.append(prom)
    wait_until(prom.ready, time.time() + 30, "prometheus ready", interval=0.2)
    started = time.time()

    def series(expr: str) -> dict[str, float]:
        return {r["metric"].get("operator", ""): float(r["value"][1]) for r in prom.query(expr)}

    # Read back through Prometheus: the target is up under the job BlockerDown names; the operator
    # whose reload works has its failure counter at 0 (it exists before any failure).
    wait_until(lambda: series('up{job="blocker"}') == {"": 1.0}, time.time() + 20, "target up")
    wait_until(lambda: series("blocker_reload_failures_total").get("orange", 0) >= 1, time.time() + 20,
               "reload failures scraped")
    failures = series("blocker_reload_failures_total")
    assert failures["free"] == 0
    assert series("blocker_publish_failures_total") == {"free": 0, "orange": 0}
    assert series("blocker_zone_in_effect") == {"free": 1.0, "orange": 0.0}
    # The shipped rules, evaluated by Prometheus: no `for:` on BlockerReloadFailing, so firing; the
    # zone-not-in-effect rule waits 5 minutes, so pending (its expression matches already).
    firing = wait_until(lambda: [a for a in prom.alerts("BlockerReloadFailing") if a["state"] == "firing"],
                        time.time() + 20, "BlockerReloadFailing firing")
    alerts = prom.alerts("BlockerReloadFailing")
    assert [(a["labels"]["operator"], a["labels"]["severity"], a["state"]) for a in alerts] == \
        [("orange", "critical", "firing")]
    wait_until(lambda: [a["state"] for a in prom.alerts("BlockerZoneNotInEffect")] == ["pending"],
               time.time() + 10, "BlockerZoneNotInEffect pending")
    assert [a["labels"]["operator"] for a in prom.alerts("BlockerZoneNotInEffect")] == ["orange"]
    assert prom.alerts("BlockerPublishFailing") == [] and prom.alerts("BlockerDown") == []
    print(f"\n[prometheus] reload failure alert firing {firing - started:.1f} s after Prometheus was ready")
    daemon.stop()
    wait_until(lambda: [a["state"] for a in prom.alerts("BlockerDown")] == ["pending"], time.time() + 10,
               "BlockerDown pending once the daemon stops")
