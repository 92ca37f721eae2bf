"""The daemon's parts that need no daemon: the log formatters, the HTTP endpoints, /healthz."""

from __future__ import annotations

import json
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from blocker.errors import BlockerError
from blocker.run import http
from blocker.run.health import HealthBoard
from blocker.run.lifecycle import DaemonError
from blocker.run.logs import JsonFormatter, PlainFormatter
from blocker.run.metrics import Snapshot, registry_for

T0 = datetime(2030, 3, 1, 12, 0, 0, tzinfo=UTC)


def _inner() -> None:
    raise ValueError("deep\nproblem")


def _outer() -> None:
    try:
        _inner()
    except ValueError as exc:
        raise RuntimeError("outer") from exc


def _record() -> logging.LogRecord:
    try:
        _outer()
    except RuntimeError:
        return logging.getLogger("blocker.test").makeRecord(
            "blocker.test", logging.ERROR, __file__, 1, "reconcile failed", (), sys.exc_info(),
            extra={"operator": "orange"})
    raise AssertionError("unreachable")


def test_json_lines_keep_every_frame_of_the_exception() -> None:
    data = json.loads(JsonFormatter().format(_record()))
    assert data["msg"] == "reconcile failed" and data["operator"] == "orange"
    assert data["error"].startswith("RuntimeError: outer (at test_run_parts.py:")
    exc = data["exc"]
    assert exc.startswith("Traceback (most recent call last):")
    for frame in ("_record", "_outer", "_inner"):
        assert f"in {frame}" in exc
    assert "ValueError: deep\nproblem" in exc and "The above exception was the direct cause" in exc


def test_plain_lines_stay_one_line() -> None:
    line = PlainFormatter().format(_record())
    assert "\n" not in line and "Traceback" not in line
    assert "error=\"RuntimeError: outer (at test_run_parts.py:" in line


def test_a_record_without_exception_has_no_exc_field() -> None:
    record = logging.makeLogRecord({"msg": "zone published", "levelno": logging.INFO, "levelname": "INFO"})
    assert "exc" not in json.loads(JsonFormatter().format(record))


def test_daemon_error_is_a_blocker_error() -> None:
    assert issubclass(DaemonError, BlockerError)
    assert str(DaemonError("cannot listen on x:1: in use")) == "cannot listen on x:1: in use"


@pytest.fixture
def server() -> Iterator[tuple[http.BoundedHTTPServer, Snapshot]]:
    snapshot = Snapshot()
    snapshot.orders_by_status = {"active": 2}
    health: tuple[int, dict[str, Any]] = (503, {"status": "unhealthy", "reasons": ["starting"]})
    srv = http.serve(("127.0.0.1", 0), registry_for(snapshot), lambda: health, None)
    try:
        yield srv, snapshot
    finally:
        http.stop(srv)


def _get(srv: http.BoundedHTTPServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    url = f"http://127.0.0.1:{srv.server_address[1]}{path}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_metrics_are_prometheus_text(server: tuple[http.BoundedHTTPServer, Snapshot]) -> None:
    srv, _ = server
    status, ctype, body = _get(srv, "/metrics")
    assert status == 200 and ctype == "text/plain; version=0.0.4; charset=utf-8"
    assert 'blocker_orders{status="active"} 2.0' in body.decode()
    status, ctype, body = _get(srv, "/metrics?x=1", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200 and ctype.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")


def test_healthz_and_not_found(server: tuple[http.BoundedHTTPServer, Snapshot]) -> None:
    srv, _ = server
    status, ctype, body = _get(srv, "/healthz")
    assert (status, ctype) == (503, "application/json")
    assert json.loads(body) == {"status": "unhealthy", "reasons": ["starting"]}
    assert _get(srv, "/nope") == (404, "text/plain", b"not found: try /metrics or /healthz\n")


def test_health_board_composes_operators_and_age() -> None:
    board = HealthBoard()
    board.set_reasons("orange", [], ["orange", "sfr"])
    assert board.health.reasons == ["sfr: not planned yet"] and not board.health.ok
    board.set_reasons("sfr", [], ["orange", "sfr"])
    board.reconciled(T0, ["orange", "sfr"])
    assert board.payload(T0 + timedelta(seconds=30), None, 1.0)[0] == 200
    status, payload = board.payload(T0 + timedelta(seconds=34), "disk full", 1.0)
    assert status == 503
    assert payload["reasons"] == ["audit trail cannot be written: disk full", "last reconcile 34 s ago"]
    assert payload["last_reconcile"] == T0.isoformat() and payload["removals_held"] == {}
