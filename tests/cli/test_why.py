"""`blocker why NAME`, run for real after a real `apply`: orders, zone and exit codes agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli_orders import GOOD, run, write


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "orders").mkdir()
    return tmp_path

IDN = "bücher-propagande.example.gg"
A_LABEL = "xn--bcher-propagande-jzb.example.gg"
AT = "2026-12-01T12:00:00+01:00"


def _orders(work: Path) -> None:
    write(work / "orders", "a.yaml", GOOD.format(id="order-a").replace(
        "  - order-a.example\n",
        f"  - {{domain: {IDN}, subdomains: true}}\n  - {{domain: plain.example, subdomains: false}}\n"))
    write(work / "orders", "b.yaml", GOOD.format(id="order-b").replace("operators: [orange, sfr]",
                                                                         "operators: [sfr]")
          .replace("start: 2026-11-20", "start: 2027-01-10"))


def test_why_after_a_real_apply(work):
    _orders(work)
    plan = run("plan", "--at", AT, "--force", "--json", cwd=work)
    checksum = json.loads(plan.stdout)["checksum"]
    applied = run("apply", "--at", AT, "--force", "--checksum", checksum, cwd=work)
    # Published for real; the built-in defaults' reload (unbound-control) has no resolver here: 5.
    assert applied.returncode == 5, applied.stdout + applied.stderr
    assert all((work / "var" / "zones" / f"{op}.rpz").is_file() for op in ("orange", "sfr", "free"))

    for spelled in (IDN, A_LABEL, f"www.{A_LABEL}"):  # Unicode or A-label; a subdomain via the wildcard
        proc = run("why", spelled, "--at", AT, "--json", cwd=work)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        data = json.loads(proc.stdout)
        assert data["blocked"] and data["unicode"].endswith(IDN) and data["name"].endswith(A_LABEL)
        assert [o["id"] for o in data["orders"]] == ["order-a"]
        order = data["orders"][0]
        assert order["court"] == "Tribunal judiciaire de Paris" and order["case_number"] == "RG 26/53123"
        assert order["start"].endswith("+01:00") and order["status"] == "active"
        by_op = {p["operator"]: p for p in data["operators"]}
        assert by_op["orange"]["blocked"] and by_op["sfr"]["blocked"] and not by_op["free"]["blocked"]
        assert all(p["zone_agrees"] for p in data["operators"])  # the real published zones hold it

    text = run("why", IDN, "--at", AT, "--operator", "orange", cwd=work)
    assert text.returncode == 0
    assert text.stdout.splitlines()[0] == f"{IDN} ({A_LABEL}) at 2026-12-01T12:00:00+01:00: BLOCKED on orange"
    assert "order order-a (active): Tribunal judiciaire de Paris; RG 26/53123" in text.stdout
    assert "orange: nxdomain via " in text.stdout and "the published zone agrees" in text.stdout

    # Only the apex is named for plain.example: its subdomain is not blocked (exit 1).
    sub = run("why", "www.plain.example", "--at", AT, cwd=work)
    assert sub.returncode == 1 and "not blocked" in sub.stdout
    # order-b names nothing of it; an order not yet in force: listed, not blocking (exit 1).
    write(work / "orders", "c.yaml", GOOD.format(id="order-c").replace("start: 2026-11-20", "start: 2027-03-01"))
    later = run("why", "order-c.example", "--at", AT, "--json", cwd=work)
    data = json.loads(later.stdout)
    assert later.returncode == 1 and [o["status"] for o in data["orders"]] == ["pending"]
    assert not any(p["blocked"] for p in data["operators"])
    # ... and in force later: blocked by the policy, but the published zone does not hold it yet.
    future = run("why", "order-c.example", "--at", "2027-03-02", "--json", cwd=work)
    assert future.returncode == 0
    by_op = {p["operator"]: p for p in json.loads(future.stdout)["operators"]}
    assert by_op["orange"]["blocked"] and not by_op["orange"]["zone_agrees"]


def test_why_bad_input_is_exit_2(work):
    _orders(work)
    assert run("why", "not a name!", cwd=work).returncode == 2
    assert run("why", "x.example", "--operator", "nope", cwd=work).returncode == 2
    assert run("why", "x.example", "--at", "yesterday-ish", cwd=work).returncode == 2
    write(work / "orders", "bad.yaml", "id: [\n")
    assert run("why", "x.example", cwd=work).returncode == 2


def test_blocker_config_env_and_since_named(work, tmp_path):
    env = {"BLOCKER_CONFIG": str(tmp_path / "missing.yaml")}
    proc = run("status", cwd=work, env=env)
    assert proc.returncode == 1 and "missing.yaml: no such file" in proc.stderr  # the env var is read
    flag = run("status", cwd=work, env=env, config="/dev/null")
    assert "missing.yaml" not in flag.stderr  # the flag beats the env
    (work / "state").mkdir()
    since = run("audit", "show", "--state-dir", "state", "--since", "bogus", cwd=work)
    assert since.returncode == 2 and since.stderr.startswith("blocker: --since: ")
