"""`blocker probe` and the daemon's probe passes, run for real against real resolvers.

The session's Unbound, BIND, Knot Resolver and PowerDNS Recursor (tests/conftest_resolvers.py) all
read the zones directory `rpz_zones_dir`. Here `blocker render` previews the operator zones, moved into it
from a temporary orders folder at a chosen instant, every resolver reloads them, and `blocker probe`
(the installed console script, as a subprocess) is asked what it finds at another instant:

- compliant: zone rendered and probed at the same instant inside the orders' window;
- missing: zone rendered before the orders start, probed inside the window;
- expired: zone rendered inside the window, probed after the orders ended (recent window).

The zones are rendered once per state and probed on all four resolvers, each with the block
signature of its kind (config `signature.nxdomain_authority`). At the end of the module every zone
gets its base rules back (tests/resolverlib.base_rules), so the other modules start as they expect.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from blocker.zone.read import read_meta
from blocker.zone.render import canary_owner
from blocker.zone.serial import serial_gt
from tests.conftest_resolvers import RESOLVER_FIXTURES
from tests.resolverlib import (
    AUTH_ADDRESS,
    TEST_ORIGINS,
    Resolver,
    Unbound,
    canary_name,
    free_port,
)
from tests.support.cli import blocker
from tests.support.daemon import Env as DaemonEnv
from tests.support.probe import (
    BLOCKED,
    CONTROL,
    LIFTED,
    MODES,
    OUR_NAMES,
    REDIRECT_A,
    REDIRECTED,
    config_text,
    metric,
    metrics,
    restore_base_rules,
)

pytestmark = pytest.mark.integration  # real resolvers and the blocker console script

ORANGE = TEST_ORIGINS[0]
CANARY = canary_owner("orange")
assert canary_name(ORANGE) == CANARY + "."       # the probe reads what the test zones carry




# The orders' windows, and the instants the zones are rendered and probed at.
T_BEFORE = "2026-02-01T00:00:00+00:00"    # nothing in force yet
T_IN = "2026-03-10T00:00:00+00:00"        # cli-block and cli-redirect in force, cli-old lifted 18 days ago
T_AFTER = "2026-04-10T00:00:00+00:00"     # cli-block and cli-redirect ended 9 days ago

ORDER = """\
id: {id}
court: Tribunal judiciaire de Paris
case_number: RG 26/{case}
decision_date: 2026-01-20
operators: [orange]
start: {start}
end: {end}
action: {action}
targets:
  - {target}
"""
ORDERS = {
    "cli-block": ("2026-03-01T00:00:00+00:00", "2026-04-01T00:00:00+00:00", "nxdomain", BLOCKED),
    "cli-redirect": ("2026-03-01T00:00:00+00:00", "2026-04-01T00:00:00+00:00", "redirect", REDIRECTED),
    "cli-old": ("2026-02-10T00:00:00+00:00", "2026-02-20T00:00:00+00:00", "nxdomain", LIFTED),
}

SERIALS: dict[str, int] = {}  # the orange serial the resolvers apply, and the other folder's (stale test)
JSON_FIELDS = {"name", "resolver", "expected", "verdict", "order_ids", "rcode", "answer", "elapsed_ms"}


# ------------------------------------------------------------------------------------------
# Helpers


def write_orders(folder: Path, orders: dict[str, tuple[str, str, str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (order_id, (start, end, action, target)) in enumerate(orders.items()):
        text = ORDER.format(id=order_id, case=f"{50000 + i}", start=start, end=end, action=action, target=target)
        (folder / f"{order_id}.yaml").write_text(text, encoding="utf-8")
    return folder


def results_of(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"not JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    assert isinstance(data, list) and data, proc.stdout
    return data


def by_name(results: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Results for a name; `*.X` stands for the pass's random subdomain under X."""
    if name.startswith("*."):
        pattern = re.compile(r"probe-[0-9a-f]{8}\." + re.escape(name[2:]))
        found = [r for r in results if pattern.fullmatch(r["name"])]
    else:
        found = [r for r in results if r["name"] == name]
    assert found, f"no check for {name} in {[r['name'] for r in results]}"
    return found


# ------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def resolvers(request: pytest.FixtureRequest, rpz_zones_dir: Path) -> Iterator[dict[str, Resolver]]:
    """All four resolvers; their zones get the base rules back when the module is done."""
    found = {name: request.getfixturevalue(name) for name in RESOLVER_FIXTURES}
    yield found
    restore_base_rules(found, rpz_zones_dir)


class Env:
    """A working folder with the orders and one config per signature mode, all for `blocker`."""

    def __init__(self, root: Path, zones: Path) -> None:
        self.root = root
        self.zones = zones
        self.orders = write_orders(root / "orders", ORDERS)
        self.configs = {}
        for mode in sorted(set(MODES.values())):
            path = root / f"blocker-{mode}.yaml"
            path.write_text(config_text(zones=zones, state=root / "state", orders=self.orders, mode=mode))
            self.configs[mode] = path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return blocker(*args, cwd=self.root)

    def render(self, at: str, out: Path | None = None) -> int:
        """`blocker render` of every operator's zone at `at`; the orange zone's serial."""
        out = out or self.zones
        # render is a preview and refuses the zones folder: render next to it (from the zones
        # there, so serials go on from theirs), then move the files in, as a hand publish would.
        scratch = self.root / "preview"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        for zone_file in out.glob("*.rpz"):
            shutil.copy2(zone_file, scratch / zone_file.name)
        proc = self.run("render", "--orders", str(self.orders), "--out", str(scratch), "--config",
                        str(self.configs["empty"]), "--at", at)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for zone_file in scratch.glob("*.rpz"):
            os.replace(zone_file, out / zone_file.name)
        meta = read_meta(out / "orange.rpz")
        assert meta is not None
        return meta.serial

    def probe(self, fixture: str, port: int, at: str, *extra: str,
              orders: Path | None = None) -> subprocess.CompletedProcess[str]:
        return self.run("probe", "--config", str(self.configs[MODES[fixture]]), "--operator", "orange",
                        "--resolver", f"127.0.0.1:{port}", "--orders", str(orders or self.orders), "--at", at,
                        "--control", CONTROL, *extra)


def load(resolvers: dict[str, Resolver], serial: int) -> None:
    """Every resolver reloads the zones (PowerDNS also forgets our names) and applies `serial`."""
    for res in resolvers.values():
        res.reload(changed=[*OUR_NAMES, canary_name(ORANGE)])
    for res in resolvers.values():
        res.wait_for(lambda r: r.canary_serial(CANARY) == serial, timeout=10, what=f"orange serial {serial}")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, rpz_zones_dir: Path) -> Env:
    return Env(tmp_path_factory.mktemp("probe-cli"), rpz_zones_dir)


@pytest.fixture(scope="module")
def passes(env: Env, resolvers: dict[str, Resolver],
           tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], subprocess.CompletedProcess[str]]:
    """Every probe run of the module, keyed (state, fixture): the zones change between states."""
    out: dict[tuple[str, str], subprocess.CompletedProcess[str]] = {}

    # compliant: the zone of T_IN, probed at T_IN (UDP; UDP and TCP; the published serial's folder)
    serial = env.render(T_IN)
    load(resolvers, serial)
    for fixture, res in resolvers.items():
        out["compliant", fixture] = env.probe(fixture, res.port, T_IN, "--json", "--out", str(env.zones))
        out["compliant-tcp", fixture] = env.probe(fixture, res.port, T_IN, "--json", "--tcp")
    # stale: the same resolvers, compared with a zones folder whose zone has another serial
    stale_dir = tmp_path_factory.mktemp("stale-zones")
    # The zone loaded now is where that folder's history starts: its serial comes after it, whatever
    # serial an earlier module left the session's zones at.
    (stale_dir / "orange.rpz").write_bytes((env.zones / "orange.rpz").read_bytes())
    stale_serial = env.render(T_AFTER, out=stale_dir)
    assert serial_gt(stale_serial, serial)
    for fixture in ("unbound", "bind"):
        out["stale", fixture] = env.probe(fixture, resolvers[fixture].port, T_IN, "--json", "--out", str(stale_dir))
    SERIALS.update(loaded=serial, stale=stale_serial)

    # missing: the zone of T_BEFORE (nothing in force), probed at T_IN
    load(resolvers, env.render(T_BEFORE))
    for fixture, res in resolvers.items():
        out["missing", fixture] = env.probe(fixture, res.port, T_IN, "--json")
    out["missing-text", "unbound"] = env.probe("unbound", resolvers["unbound"].port, T_IN)

    # expired: the zone of T_IN still loaded, probed at T_AFTER
    load(resolvers, env.render(T_IN))
    for fixture, res in resolvers.items():
        out["expired", fixture] = env.probe(fixture, res.port, T_AFTER, "--json")
    return out


# ------------------------------------------------------------------------------------------
# 1. A compliant resolver


@pytest.mark.parametrize("fixture", RESOLVER_FIXTURES)
def test_compliant_resolver_all_checks_hold(fixture: str, passes: dict, resolvers: dict[str, Resolver]) -> None:
    proc = passes["compliant", fixture]
    results = results_of(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {r["verdict"] for r in results} <= {"blocked", "resolves"}, proc.stdout
    address = f"127.0.0.1:{resolvers[fixture].port}"
    for r in results:
        assert set(r) >= JSON_FIELDS, r
        assert r["resolver"] == address
        assert r["verdict"] == ("blocked" if r["expected"] == "blocked" else "resolves"), r
        assert isinstance(r["order_ids"], list) and isinstance(r["answer"], list)
        assert isinstance(r["elapsed_ms"], int | float) and 0 <= r["elapsed_ms"] < 5000
        assert r["transport"] == "udp"
    # Every kind of check is there: the targets, a random subdomain of each, the lifted name
    # (itself and a subdomain) and the control name; nothing else.
    expect = {
        BLOCKED: ("blocked", ["cli-block"], "target"), "*." + BLOCKED: ("blocked", ["cli-block"], "subdomain"),
        REDIRECTED: ("blocked", ["cli-redirect"], "target"),
        "*." + REDIRECTED: ("blocked", ["cli-redirect"], "subdomain"),
        LIFTED: ("resolves", ["cli-old"], "lifted"), "*." + LIFTED: ("resolves", ["cli-old"], "lifted"),
        CONTROL: ("resolves", [], "control"),
    }
    assert len(results) == len(expect)
    for name, (expected, ids, kind) in expect.items():
        [r] = by_name(results, name)
        assert (r["expected"], r["order_ids"], r["kind"]) == (expected, ids, kind), r
    for name in (BLOCKED, "*." + BLOCKED):
        [r] = by_name(results, name)
        assert (r["rcode"], r["answer"]) == ("NXDOMAIN", []), r
    for name in (LIFTED, "*." + LIFTED, CONTROL):
        [r] = by_name(results, name)
        assert (r["rcode"], r["answer"]) == ("NOERROR", [f"A {AUTH_ADDRESS}"]), r
    # The resolver applies the published zone: no stale or missing serial reported.
    assert "STALE" not in proc.stderr and "no canary" not in proc.stderr, proc.stderr


# 5. redirect, recognised by the information page's address


@pytest.mark.parametrize("fixture", RESOLVER_FIXTURES)
def test_redirect_is_recognised_by_the_information_page(fixture: str, passes: dict) -> None:
    results = results_of(passes["compliant", fixture])
    for name in (REDIRECTED, "*." + REDIRECTED):
        [r] = by_name(results, name)
        assert r["order_ids"] == ["cli-redirect"]           # the order with `action: redirect`
        assert (r["expected"], r["verdict"], r["rcode"]) == ("blocked", "blocked", "NOERROR"), r
        assert f"A {REDIRECT_A}" in r["answer"], r


# 6. TCP and UDP


@pytest.mark.parametrize("fixture", RESOLVER_FIXTURES)
def test_tcp_probes_both_transports_and_udp_alone_only_udp(fixture: str, passes: dict) -> None:
    proc = passes["compliant-tcp", fixture]
    both = results_of(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    udp_only = results_of(passes["compliant", fixture])
    assert {r["transport"] for r in udp_only} == {"udp"}
    assert len(both) == 2 * len(udp_only)
    per_name: dict[str, set[str]] = {}
    for r in both:
        per_name.setdefault(r["name"], set()).add(r["transport"])
        assert r["verdict"] == ("blocked" if r["expected"] == "blocked" else "resolves"), r
    assert all(transports == {"udp", "tcp"} for transports in per_name.values()), per_name
    for name in (BLOCKED, REDIRECTED):
        udp, tcp = sorted(by_name(both, name), key=lambda r: r["transport"] != "udp")
        assert (udp["rcode"], udp["answer"]) == (tcp["rcode"], tcp["answer"]), (udp, tcp)


# 2. The same resolver without the zone's entries


@pytest.mark.parametrize("fixture", RESOLVER_FIXTURES)
def test_resolver_without_the_entries_is_not_blocked(fixture: str, passes: dict) -> None:
    proc = passes["missing", fixture]
    results = results_of(proc)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for r in results:
        if r["expected"] == "blocked":
            assert r["verdict"] == "not-blocked", r
            assert r["rcode"] == "NOERROR" and r["answer"] == [f"A {AUTH_ADDRESS}"], r
        else:
            assert r["verdict"] == "resolves", r
    assert {r["name"] for r in results if r["verdict"] == "not-blocked"} >= {BLOCKED, REDIRECTED}
    assert len([r for r in results if r["verdict"] == "not-blocked"]) == 4


def test_summary_table_names_what_does_not_hold(passes: dict) -> None:
    proc = passes["missing-text", "unbound"]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    header, row = proc.stdout.splitlines()[:2]
    assert header.split() == ["RESOLVER", "TRANSPORT", "BLOCKED", "RESOLVES", "NOT-BLOCKED", "OVERBLOCKED", "ERROR",
                              "UNVERIFIED"]
    assert row.split()[1:] == ["udp", "0", "3", "4", "0", "0", "0"]
    assert f"not-blocked: {BLOCKED} on " in proc.stdout
    assert "orders cli-block;" in proc.stdout


# 3. A zone that still holds names whose orders ended


@pytest.mark.parametrize("fixture", RESOLVER_FIXTURES)
def test_zone_still_holding_expired_names_is_overblocked(fixture: str, passes: dict) -> None:
    proc = passes["expired", fixture]
    results = results_of(proc)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert {r["expected"] for r in results} == {"resolves"}     # nothing is in force at T_AFTER
    over = {name: by_name(results, name) for name in (BLOCKED, "*." + BLOCKED, REDIRECTED, "*." + REDIRECTED)}
    for name, [r] in over.items():
        assert (r["verdict"], r["kind"]) == ("overblocked", "lifted"), r
        assert r["order_ids"] == (["cli-block"] if BLOCKED in name else ["cli-redirect"])
    [r] = by_name(results, REDIRECTED)
    assert f"A {REDIRECT_A}" in r["answer"]
    [r] = by_name(results, CONTROL)
    assert r["verdict"] == "resolves"
    # cli-old ended 49 days before T_AFTER: outside the 30-day window, not probed any more.
    assert not [r for r in results if LIFTED in r["name"]]


# 7. A resolver serving another serial than the one published


@pytest.mark.parametrize("fixture", ["unbound", "bind"])
def test_stale_serial_is_reported_on_stderr(fixture: str, passes: dict, resolvers: dict[str, Resolver]) -> None:
    proc = passes["stale", fixture]
    loaded, stale = SERIALS["loaded"], SERIALS["stale"]
    line = f"127.0.0.1:{resolvers[fixture].port}: STALE: serves serial {loaded}, published {stale}"
    assert line in proc.stderr.splitlines(), proc.stderr
    # The names answer as blocked, but the published zone (of T_AFTER) holds none of them and the
    # resolver applies an older one: nothing is proven, and the run fails (issue 9, section 4).
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = results_of(proc)
    for r in results:
        if r["kind"] == "control":
            assert r["verdict"] == "resolves", r
        else:
            assert r["verdict"] == "unverified", r
            assert r["reason"].startswith(f"answered as {'blocked' if r['expected'] == 'blocked' else 'resolves'}")
    assert {r["kind"] for r in results if r["verdict"] == "unverified"} == {"target", "subdomain", "lifted"}


# 4. A resolver that is down


def test_resolver_down_is_an_error_never_compliant(env: Env, passes: dict, resolvers: dict[str, Resolver]) -> None:
    dead = free_port()
    started = time.monotonic()
    proc = env.probe("unbound", dead, T_IN, "--json")
    took = time.monotonic() - started
    results = results_of(proc)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(results) == 7 and {r["verdict"] for r in results} == {"error"}
    assert all(r["rcode"] == "" and r["answer"] == [] and r["reason"] for r in results), results
    assert f"127.0.0.1:{dead}: serves no canary serial" in proc.stderr
    assert took < 10
    # Next to a resolver where every block holds, a dead one still keeps the run from exit 0 ...
    live = resolvers["unbound"].port
    both = env.run("probe", "--config", str(env.configs["empty"]), "--operator", "orange",
                   "--resolver", f"127.0.0.1:{live}", "--resolver", f"127.0.0.1:{dead}", "--orders",
                   str(env.orders), "--at", T_AFTER, "--control", CONTROL, "--json")
    mixed = results_of(both)
    assert {r["verdict"] for r in mixed if r["resolver"] == f"127.0.0.1:{dead}"} == {"error"}
    # ... and a real failure on the live one still wins over the errors (exit 1).
    assert {r["verdict"] for r in mixed if r["resolver"] == f"127.0.0.1:{live}"} >= {"overblocked"}
    assert both.returncode == 1, both.stdout + both.stderr


def test_longest_names_get_a_subdomain_check_that_fits(env: Env, passes: dict, resolvers: dict[str, Resolver],
                                                       tmp_path: Path) -> None:
    """The longest target a zone can hold (232 octets under `orange.rpz.blocker.` with its `*.`
    twin) still gets a subdomain check; a longer one is refused where it enters, so no probe pass
    can end on a name longer than DNS allows."""
    long = ".".join(["s" * 57] * 3 + ["t" * 47]) + ".example.gg"
    assert len(long) == 232
    orders = write_orders(tmp_path / "orders", {"cli-long": (*ORDERS["cli-block"][:3], long)})
    proc = env.probe("unbound", resolvers["unbound"].port, T_IN, "--json", orders=orders)
    results = results_of(proc)
    assert proc.returncode == 1, proc.stdout + proc.stderr      # not in the zone loaded now
    names = {r["kind"]: r["name"] for r in results}
    assert names["target"] == long
    assert names["subdomain"].endswith("." + long) and len(names["subdomain"]) <= 253
    assert [r["verdict"] for r in results if r["expected"] == "blocked"] == ["not-blocked"] * 2

    too_long = "u" + long
    orders = write_orders(tmp_path / "orders-long", {"cli-long": (*ORDERS["cli-block"][:3], too_long)})
    proc = env.probe("unbound", resolvers["unbound"].port, T_IN, "--json", orders=orders)
    assert proc.returncode == 2 and "too long to block under the zone origin" in proc.stderr


# ------------------------------------------------------------------------------------------
# 8. The daemon: probe metrics, first-seen instants that survive a restart, audit


def test_daemon_feeds_probe_metrics_and_first_seen_instants(
        tmp_path: Path, resolvers: dict[str, Resolver], rpz_zones_dir: Path) -> None:
    daemons = DaemonEnv(tmp_path)
    unbound = resolvers["unbound"]
    assert isinstance(unbound, Unbound)
    start = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0) + timedelta(seconds=1)
    order_id = "daemon-block"
    orders = write_orders(tmp_path / "orders", {order_id: (
        start.isoformat(), (start + timedelta(days=30)).isoformat(), "nxdomain", BLOCKED)})
    state = tmp_path / "state"
    orange_extra = (f"    reload: {{kind: unbound, key_file: {unbound.conf_path}}}\n"
                    f"    resolvers: [{{address: 127.0.0.1:{unbound.port}, name: fixture-unbound}}]\n")
    config = tmp_path / "blocker.yaml"
    config.write_text(config_text(zones=rpz_zones_dir, state=state, orders=orders, mode="empty",
                                  orange_extra=orange_extra))
    # The daemon starts from no zone at all (blocker keeps entries it cannot explain otherwise).
    for origin in TEST_ORIGINS:
        (rpz_zones_dir / f"{origin.split('.')[0]}.rpz").unlink(missing_ok=True)
    daemons.zones = rpz_zones_dir
    labels = {"order": order_id, "operator": "orange"}
    try:
        daemon = daemons.start(config, ready=False)
        # Before the start: the control name is probed and resolves; the order is not yet verified.
        daemon.wait_metric("blocker_probe_checks", 10, operator="orange", resolver="fixture-unbound",
                           verdict="resolves")
        assert metric(metrics(daemon.port), "blocker_order_time_to_block_seconds", **labels) is None
        assert datetime.now(UTC) < start, "the daemon took too long to start: the test proves nothing"
        ttb = daemon.wait_metric("blocker_order_time_to_block_seconds", 15, **labels)
        assert 0 <= ttb < 8, ttb
        samples = metrics(daemon.port)
        assert metric(samples, "blocker_probe_checks", operator="orange", resolver="fixture-unbound",
                      verdict="blocked") == 2        # the name and a random subdomain
        assert metric(samples, "blocker_resolver_up", operator="orange", resolver="fixture-unbound") == 1
        assert metric(samples, "blocker_probe_oldest_unverified_seconds", operator="orange") == 0
        assert (metric(samples, "blocker_probe_last_pass_timestamp_seconds", operator="orange") or 0) > 0
        published = read_meta(rpz_zones_dir / "orange.rpz")
        assert published is not None
        assert metric(samples, "blocker_resolver_serial", operator="orange",
                      resolver="fixture-unbound") == published.serial
        audit = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
        verified = [a for a in audit if a["event"] == "order-verified"]
        assert [(a["data"]["order"], a["data"]["operator"], a["data"]["kind"]) for a in verified] == [
            (order_id, "orange", "blocked")]
        assert math.isclose(verified[0]["data"]["after_seconds"], ttb, abs_tol=0.001)
        assert any(a["event"] == "probe-pass" for a in audit)
        print(f"time to block: {ttb:.3f} s")

        # A restart keeps the first-seen instant: same value, no second order-verified record.
        daemon.stop()
        daemon = daemons.start(config, ready=False)
        again = daemon.wait_metric("blocker_order_time_to_block_seconds", 15, **labels)
        assert again == ttb
        daemon.wait_metric("blocker_probe_last_pass_timestamp_seconds", 5, operator="orange")
        audit = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
        assert len([a for a in audit if a["event"] == "order-verified"]) == 1
        assert sum(a["event"] == "daemon-start" for a in audit) == 2
    finally:
        daemons.close()
        restore_base_rules(resolvers, rpz_zones_dir)
