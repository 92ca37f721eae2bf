"""The one way tests run the real daemon: `blocker run` as a child process.

`Env` is one test's folders (orders, state, zones) and every daemon it started; the `env` fixture
(tests/conftest.py) kills and reaps them at teardown whatever the test did. `Daemon` is one
`blocker run` process with its HTTP endpoint on a free loopback port and its stderr in a file the
test reads: health, metrics, and waits on both.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.resolverlib import free_port
from tests.support.cli import BLOCKER, blocker, child_env

START_TIMEOUT = 10.0


def wait_until(predicate: Callable[[], Any], deadline: float, what: str, interval: float = 0.02) -> float:
    """Poll until predicate() is truthy; return the wall-clock time it first was. `deadline` is
    a time.time() value; past it, fail with `what`."""
    while True:
        now = time.time()
        if predicate():
            return now
        if now > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(interval)


def write_config(path: Path, operators: dict[str, Any], *, reconcile: float = 2, watch: float = 0.2,
                 **sections: Any) -> Path:
    data: dict[str, Any] = {
        "daemon": {"reconcile_interval": reconcile, "watch_interval": watch},
        "operators": operators,
        **sections,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a scrape (None when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


class Daemon:
    """One `blocker run` child process; stderr goes to a file the test reads."""

    def __init__(self, env: Env, config: Path, log_name: str, extra: Sequence[str] = (),
                 environ: dict[str, str] | None = None) -> None:
        self.env, self.config = env, config
        self.port = free_port()
        self.log_path = env.root / log_name
        self.argv = [str(BLOCKER), "run", "--config", str(config), "--orders", str(env.orders),
                     "--state-dir", str(env.state), "--out", str(env.zones),
                     "--listen", f"127.0.0.1:{self.port}", *extra]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.argv, cwd=env.root, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=log, env=child_env(environ))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, bytes]:
        return http_get(self.port, path)

    def health(self) -> tuple[int, dict[str, Any]]:
        status, body = self.get("/healthz")
        return status, json.loads(body)

    def metrics(self) -> str:
        status, body = self.get("/metrics")
        assert status == 200
        return body.decode()

    def metric(self, name: str, **labels: str) -> float | None:
        return metric(self.metrics(), name, **labels)

    def reconciles(self) -> float:
        return sum(self.metric("blocker_reconciles_total", result=r) or 0 for r in ("ok", "failed"))

    def wait_ready(self, timeout: float = START_TIMEOUT) -> float:
        """Until /healthz answers after the first reconcile; returns when that was."""
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode} while starting:\n{self.log()}")
            try:
                return self.health()[1].get("last_reconcile") is not None
            except (OSError, ValueError):
                return False
        return wait_until(ready, time.time() + timeout, f"daemon ready\n{self.log()}", interval=0.05)

    def wait_reconciles(self, count: int, timeout: float = 5.0) -> None:
        """Until `count` more reconciles than now have run (the periodic one included)."""
        target = self.reconciles() + count
        wait_until(lambda: self.reconciles() >= target, time.time() + timeout, f"{count} more reconciles")

    def wait_metric(self, name: str, timeout: float, **labels: str) -> float:
        """Until the sample is scraped (the daemon still running); its value."""
        found: list[float] = []

        def present() -> bool:
            assert self.proc.poll() is None, f"daemon exited {self.proc.returncode}:\n{self.log()}"
            try:
                value = self.metric(name, **labels)
            except OSError:
                return False
            if value is not None:
                found.append(value)
            return value is not None

        wait_until(present, time.time() + timeout, f"{name}{labels}\n{self.log()[-4000:]}", interval=0.1)
        return found[-1]

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Ask it to stop; return its exit code."""
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"daemon did not stop on {signal.Signals(signum).name}:\n{self.log()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


class Env:
    """Temp folders for one test, and the daemons it started (all killed at teardown)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.orders, self.state, self.zones = root / "orders", root / "state", root / "zones"
        self.orders.mkdir()
        self.daemons: list[Daemon] = []

    def config(self, operators: dict[str, Any] | None = None, **kwargs: Any) -> Path:
        return write_config(self.root / "blocker.yaml", operators or {"orange": {}}, **kwargs)

    def start(self, config: Path | None = None, extra: Sequence[str] = (), ready: bool = True,
              env: dict[str, str] | None = None) -> Daemon:
        daemon = Daemon(self, config or self.config(), f"daemon-{len(self.daemons) + 1}.log", extra, env)
        self.daemons.append(daemon)
        if ready:
            daemon.wait_ready()
        return daemon

    def close(self) -> None:
        """Kill and reap every daemon started here (a test that fails mid-way leaves none running)."""
        for daemon in self.daemons:
            daemon.kill()

    def zone(self, operator: str = "orange") -> Path:
        return self.zones / f"{operator}.rpz"

    def log(self) -> str:
        """Every daemon's log so far, in start order (a test that restarts the daemon sees both)."""
        return "\n".join(daemon.log() for daemon in self.daemons)

    def run_cli(self, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        """`blocker ARGS` on this environment's config and folders."""
        return blocker(*args, "--config", str(config or self.root / "blocker.yaml"), "--orders", str(self.orders),
                       "--state-dir", str(self.state), "--out", str(self.zones), cwd=self.root, clean=False)
