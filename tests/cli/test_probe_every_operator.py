"""`probe` without `--operator` probes every operator with resolvers, as the daemon does, and a
resolver that answers nothing is one "unreachable" line, not one error line per check: the real
`blocker probe` against the session's real Unbound (tests/conftest_resolvers.py) and a port where
nothing listens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.resolverlib import Unbound, free_port
from tests.support.cli import blocker

pytestmark = pytest.mark.integration  # a real resolver and the blocker console script

T = "2026-03-10T00:00:00+00:00"
TARGET = "every-op.example.gg"   # in no zone the session's resolvers serve: not blocked
CONTROL = "www.example.gg"        # the session's authoritative server answers it

ORDER = f"""\
id: every-op
court: Tribunal judiciaire de Paris
case_number: RG 26/77001
decision_date: 2026-02-20
operators: [orange, free]
start: 2026-03-01T00:00:00+00:00
end: 2026-04-01T00:00:00+00:00
targets: [{TARGET}]
"""


def setup(root: Path, zones: Path, live: int, dead: int) -> None:
    (root / "orders").mkdir()
    (root / "orders" / "every-op.yaml").write_text(ORDER)
    (root / "config.yaml").write_text(f"""\
orders_dir: orders
state_dir: state
zones_dir: {zones}
timezone: UTC
probe:
  control_names: [{CONTROL}]
  timeout: 0.4
  retries: 1
operators:
  orange:
    name: Orange
    resolvers: [{{address: "127.0.0.1:{live}", name: live}}]
  free:
    name: Free
    resolvers: [{{address: "127.0.0.1:{dead}", name: dead}}]
  sfr:
    name: SFR
""")


def test_probe_without_operator_probes_every_operator_and_a_dead_resolver_is_one_line(
        unbound: Unbound, rpz_zones_dir: Path, tmp_path: Path) -> None:
    dead = free_port()
    setup(tmp_path, rpz_zones_dir, unbound.port, dead)
    proc = blocker("probe", "--at", T, "--tcp", cwd=tmp_path, config="config.yaml")
    out = proc.stdout
    # Both operators with resolvers, each under its heading; sfr (none) is said on stderr.
    assert "operator free:" in out and "operator orange:" in out, out
    assert "sfr: no resolvers configured, not probed" in proc.stderr
    free_part, orange_part = out.split("operator orange:")
    # The dead resolver: one line per transport, however many checks it failed.
    unreachable = [line for line in free_part.splitlines() if line.startswith("  unreachable:")]
    assert [line.split(": no reply")[0] for line in unreachable] == [
        "  unreachable: dead/tcp", "  unreachable: dead/udp"], free_part
    assert all("no reply to any of 3 checks" in line for line in unreachable), unreachable
    assert not any(line.startswith("  error:") for line in out.splitlines()), out
    # The live one still tells what does not hold: the target is in no zone it serves.
    assert f"  not-blocked: {TARGET} on live/udp" in orange_part, orange_part
    assert "unreachable" not in orange_part
    assert proc.returncode == 1, out + proc.stderr  # a real failure wins over the errors

    # --json: every operator's checks, each with its operator; the dead lane's are all errors.
    data = json.loads(blocker("probe", "--at", T, "--json", cwd=tmp_path, config="config.yaml").stdout)
    assert {r["operator"] for r in data} == {"orange", "free"}
    assert {r["verdict"] for r in data if r["operator"] == "free"} == {"error"}
    assert len([r for r in data if r["operator"] == "free"]) == 3

    # Only the dead operator: only errors, exit 2, and still the one line.
    alone = blocker("probe", "--operator", "free", "--at", T, cwd=tmp_path, config="config.yaml")
    assert alone.returncode == 2, alone.stdout + alone.stderr
    [line] = [line for line in alone.stdout.splitlines() if "unreachable" in line]
    assert line.startswith("  unreachable: dead/udp: no reply to any of 3 checks (")
    assert not any(line.startswith("  error:") for line in alone.stdout.splitlines()), alone.stdout
