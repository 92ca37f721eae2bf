"""blocker's own zones on the four real resolvers: what `blocker render` and `blocker apply` write is
what Unbound, BIND, Knot Resolver and PowerDNS Recursor load, block with, and lift.

The resolvers are the session fixtures of tests/conftest_resolvers.py (shared with other modules):
they read `orange.rpz` and `free.rpz` from `rpz_zones_dir`. This module renders blocker's zones
into that folder (module fixture `scenario`), reloads each resolver, and puts the base rules back
(`base_rules`, reloaded everywhere) when the module is done, so other modules find the state they
expect. A test that changes a zone file beyond the scenario puts the scenario back itself.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from blocker.record.state import State
from blocker.zone.read import read_meta
from blocker.zone.render import canary_owner
from tests.conftest_resolvers import RESOLVER_FIXTURES
from tests.resolverlib import (
    AUTH_ADDRESS,
    IDN_NAME,
    INFO_ADDRESS,
    TEST_ORIGINS,
    Bind,
    Resolver,
    base_rules,
    rpz_zone,
    write_atomically,
)
from tests.support.cli import blocker as run_blocker

ORANGE, FREE = TEST_ORIGINS
REDIRECT_A, REDIRECT_AAAA = "192.0.2.80", "2001:db8::80"

# Orders run 2025-01-01 .. 2025-12-31 (Europe/Paris): in force at ACTIVE, lifted at LIFTED.
# Instants before the wall clock, so the scheme serials stay below the serials other modules
# write (theirs come from time.time()); blocker continues from the serial in the folder anyway.
ACTIVE = "2025-06-01T12:00:00+02:00"
LIFTED = "2026-01-01T00:00:00+01:00"       # the lift instant itself: 00:00 the day after `end`

CONFIG = f"""\
timezone: Europe/Paris
publish: {{check: named-checkzone}}
operators:
  orange:
    origin: {ORANGE}
    redirect: {{a: [{REDIRECT_A}], aaaa: ["{REDIRECT_AAAA}"]}}
  free:
    origin: {FREE}
    redirect: {{cname: info.operator.example}}
"""

# One order per action, on the test names the AuthServer serves (tests/resolverlib.py).
ORDERS = {
    "nx": ("[orange, free]", "nxdomain", ["blocked.example.gg", "bücher.example.gg",
                                         "{domain: wild.example.gg, subdomains: false}"]),
    "nd": ("[orange, free]", "nodata", ["nodata.example.gg"]),
    "dr": ("[orange, free]", "drop", ["drop.example.gg"]),
    "rd-a": ("[orange]", "redirect", ["redir.example.gg"]),              # orange: A/AAAA local data
    "rd-cname": ("[free]", "redirect", ["redir2.example.gg"]),           # free: CNAME to its info page
    "free-only": ("[free]", "nxdomain", ["late.example.gg"]),            # the second zone applies too
}
BLOCKED_APEXES = ["blocked.example.gg", IDN_NAME.rstrip("."), "wild.example.gg", "nodata.example.gg",
                  "drop.example.gg", "redir.example.gg", "redir2.example.gg", "late.example.gg",
                  "added.example.gg"]
# What pdns must forget after each reload (its packet cache answers before RPZ): every name a
# test asks, their subtrees, and the canaries.
FLUSH = [*BLOCKED_APEXES, "open.example.gg", "example.gg", canary_owner("orange"), canary_owner("free")]

# (name blocked by the action, whether subdomains are blocked too) per action.
ACTIONS = {
    "nxdomain": "blocked.example.gg",
    "nodata": "nodata.example.gg",
    "drop": "drop.example.gg",
    "redirect-a": "redir.example.gg",
    "redirect-cname": "redir2.example.gg",
}
# What each resolver answers for a blocked name, per action: an rcode, or the final addresses.
# kresd 5 answers rpz-drop with SERVFAIL and ignores a CNAME to a real name (the name resolves).
EXPECTED = {
    name: {"nxdomain": "NXDOMAIN", "nodata": "NODATA", "drop": "TIMEOUT", "redirect-a": {REDIRECT_A},
           "redirect-cname": {INFO_ADDRESS}}
    for name in ("unbound", "bind", "pdns")
} | {
    "kresd": {"nxdomain": "NXDOMAIN", "nodata": "NODATA", "drop": "SERVFAIL", "redirect-a": {REDIRECT_A},
              "redirect-cname": {AUTH_ADDRESS}},
}


def order_yaml(order_id: str, operators: str, action: str, targets: list[str]) -> str:
    return (
        f"id: {order_id}\ncourt: Tribunal judiciaire de Paris\ncase_number: RG {order_id}\n"
        f"decision_date: 2024-12-01\noperators: {operators}\nstart: '2025-01-01'\nend: '2025-12-31'\n"
        f"action: {action}\ntargets:\n" + "".join(f"  - {t}\n" for t in targets)
    )


def forced_apply(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`blocker apply ARGS` at an --at far from the clock (ACTIVE is in the past): reviewed the
    only way apply takes it, `plan --force` for the checksum, then `apply --force --checksum`."""
    plan = blocker(*[a if a != "apply" else "plan" for a in args], "--force", "--json", cwd=cwd)
    assert plan.returncode in (0, 3), plan.stdout + plan.stderr
    return blocker(*args, "--force", "--checksum", json.loads(plan.stdout)["checksum"], cwd=cwd)


blocker = functools.partial(run_blocker, timeout=120)


def label() -> str:
    return "r" + uuid.uuid4().hex[:10]


def serial_of(zones_dir: Path, origin: str) -> int:
    meta = read_meta(zones_dir / f"{origin.split('.')[0]}.rpz")
    assert meta is not None
    return meta.serial


def reload_and_wait(res: Resolver, zones_dir: Path, origins: tuple[str, ...] = TEST_ORIGINS) -> None:
    """Run the resolver's own reload (and pdns cache flush), then wait until it serves each zone's
    canary serial: the version in the file is the one applied."""
    for origin in origins:
        res.reload(origin, changed=FLUSH)
    for origin in origins:
        serial = serial_of(zones_dir, origin)
        name = canary_owner(origin.split(".")[0]) + "."
        res.wait_for(lambda r, n=name, s=serial: r.canary_serial(n) == s, timeout=5, what=f"{name} = {serial}")


@dataclass
class Scenario:
    root: Path
    zones: Path
    resolvers: dict[str, Resolver]

    @property
    def config(self) -> Path:
        return self.root / "blocker.yaml"

    @property
    def orders(self) -> Path:
        return self.root / "orders"

    def render(self, when: str) -> None:
        proc = blocker("--config", str(self.config), "render", "--orders", str(self.orders),
                       "--out", str(self.zones), "--at", when, cwd=self.root)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def block(self, res: Resolver) -> None:
        """Put the scenario's zones (orders in force) back in the folder and in this resolver."""
        self.render(ACTIVE)
        reload_and_wait(res, self.zones)


def restore_base_rules(zones_dir: Path, resolvers: list[Resolver]) -> None:
    """What the session fixtures started with (tests/conftest_resolvers.py), with a newer serial."""
    for origin in TEST_ORIGINS:
        path = zones_dir / f"{origin.split('.')[0]}.rpz"
        meta = read_meta(path)
        serial = (meta.serial + 1) % 2**32 if meta else 1
        write_atomically(path, rpz_zone(origin, base_rules(origin), serial=serial))
    for res in resolvers:
        reload_and_wait(res, zones_dir)
        # Waiting asked the canaries: leave no answer of this module in pdns's packet cache (a
        # module that flushes only its own names would see this module's canary for its TTL).
        flush = res.flush_command(FLUSH)
        if flush:
            res.run_tool(flush)


@pytest.fixture(scope="module")
def resolvers(request: pytest.FixtureRequest) -> dict[str, Resolver]:
    found = {}
    for fixture in RESOLVER_FIXTURES:
        res: Resolver = request.getfixturevalue(fixture)
        found[res.name] = res
    return found


@pytest.fixture(scope="module")
def scenario(resolvers: dict[str, Resolver], rpz_zones_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("rpz-scenario")
    (root / "orders").mkdir()
    (root / "blocker.yaml").write_text(CONFIG)
    for order_id, (operators, action, targets) in ORDERS.items():
        (root / "orders" / f"{order_id}.yaml").write_text(order_yaml(order_id, operators, action, targets),
                                                          encoding="utf-8")
    sc = Scenario(root, rpz_zones_dir, resolvers)
    try:
        sc.render(ACTIVE)
        for res in resolvers.values():
            reload_and_wait(res, rpz_zones_dir)
        yield sc
    finally:
        restore_base_rules(rpz_zones_dir, list(resolvers.values()))


@pytest.fixture(params=RESOLVER_FIXTURES)
def resolver(request: pytest.FixtureRequest, scenario: Scenario) -> Resolver:
    """Each resolver in turn, with the scenario's zones (orders in force) loaded."""
    return request.getfixturevalue(request.param)


def outcome(res: Resolver, qname: str, rdtype: str = "A") -> str | set[str]:
    """The rcode, "NODATA" for an empty NOERROR, or the final addresses of an answer."""
    reply = res.ask(qname, rdtype, timeout=0.4)
    if reply.rcode != "NOERROR":
        return reply.rcode
    return reply.addresses or "NODATA"


# ------------------------------------------------------------------------------------------
# Blocked, per resolver and per action


def test_the_zone_files_are_blockers_own_output(scenario: Scenario):
    for origin in TEST_ORIGINS:
        text = (scenario.zones / f"{origin.split('.')[0]}.rpz").read_text()
        assert text.startswith("; blocker RPZ for operator ") and f"$ORIGIN {origin}\n" in text
    orange = (scenario.zones / "orange.rpz").read_text()
    assert "xn--bcher-kva.example.gg CNAME . ; nx\n" in orange
    assert f"redir.example.gg A {REDIRECT_A} ; rd-a\n" in orange and "redir2" not in orange
    assert "redir2.example.gg CNAME info.operator.example. ; rd-cname\n" in (scenario.zones / "free.rpz").read_text()


@pytest.mark.parametrize("action", list(ACTIONS))
def test_action_blocks_the_apex_and_a_random_subdomain(resolver: Resolver, action: str):
    name = ACTIONS[action]
    expected = EXPECTED[resolver.name][action]
    for qname in (name, f"{label()}.{name}", f"www.{name}"):
        assert outcome(resolver, qname) == expected, (resolver.name, action, qname)
    if action == "nxdomain":
        reply = resolver.ask(name)
        assert resolver.signature.matches(reply, ORANGE), reply       # the orange zone answered
    if action == "redirect-a":
        assert resolver.ask(name, "AAAA").addresses == {REDIRECT_AAAA}
    if action == "nodata":
        assert resolver.ask(name, "AAAA").answer == ()


def test_unblocked_sibling_and_parent_resolve_with_the_auth_servers_answer(resolver: Resolver):
    for qname in ("open.example.gg", f"{label()}.open.example.gg", "example.gg", "www.example.gg"):
        assert resolver.ask(qname).addresses == {AUTH_ADDRESS}, (resolver.name, qname)


def test_idn_target_is_blocked_by_its_a_label(resolver: Resolver):
    assert IDN_NAME == "xn--bcher-kva.example.gg."
    for qname in (IDN_NAME, f"{label()}.{IDN_NAME}"):
        reply = resolver.ask(qname)
        assert reply.rcode == "NXDOMAIN" and resolver.signature.matches(reply, ORANGE), (qname, reply)


def test_apex_only_target_leaves_its_subdomains_alone(resolver: Resolver):
    assert resolver.ask("wild.example.gg").rcode == "NXDOMAIN"
    assert resolver.ask(f"{label()}.wild.example.gg").addresses == {AUTH_ADDRESS}
    assert resolver.ask("www.wild.example.gg").addresses == {AUTH_ADDRESS}


def test_second_operator_zone_is_applied_side_by_side(resolver: Resolver):
    for qname in ("late.example.gg", f"{label()}.late.example.gg"):
        reply = resolver.ask(qname)
        assert reply.rcode == "NXDOMAIN" and resolver.signature.matches(reply, FREE), (qname, reply)


def test_every_resolver_serves_the_rendered_serial(resolver: Resolver, scenario: Scenario):
    for origin in TEST_ORIGINS:
        serial = serial_of(scenario.zones, origin)
        assert resolver.canary_serial(canary_owner(origin.split(".")[0]) + ".") == serial
        if resolver.name != "pdns":                       # rpzFile() keeps no SOA
            assert resolver.served_serial(origin) == serial


# --- what Knot Resolver does instead


def test_kresd_answers_rpz_drop_with_servfail_not_silence(kresd: Resolver, scenario: Scenario):
    start = time.monotonic()
    reply = kresd.ask("drop.example.gg", timeout=2)
    assert reply.rcode == "SERVFAIL" and 18 in reply.ede, reply          # EDE 18: Prohibited
    assert time.monotonic() - start < 1.0                                  # answered, not dropped
    assert kresd.ask(f"{label()}.drop.example.gg", timeout=2).rcode == "SERVFAIL"


def test_kresd_ignores_a_cname_redirect_and_resolves_the_name(kresd: Resolver, scenario: Scenario):
    reply = kresd.ask("redir2.example.gg")
    assert reply.rcode == "NOERROR" and reply.answer == (f"A {AUTH_ADDRESS}",), reply   # no CNAME at all
    assert kresd.ask(f"{label()}.redir2.example.gg").addresses == {AUTH_ADDRESS}
    assert "CNAME with custom target in RPZ is not supported" in kresd.log_text()
    # ...while the A/AAAA redirect of the other operator works: configure that for kresd's operators.
    assert kresd.ask("redir.example.gg").addresses == {REDIRECT_A}


def test_the_other_resolvers_drop_silently_and_follow_the_cname(resolvers: dict[str, Resolver],
                                                                 scenario: Scenario):
    for name in ("unbound", "bind", "pdns"):
        res = resolvers[name]
        assert res.ask("drop.example.gg", timeout=0.4).rcode == "TIMEOUT", name
        reply = res.ask("redir2.example.gg")
        assert "CNAME info.operator.example." in reply.answer and reply.addresses == {INFO_ADDRESS}, (name, reply)


# ------------------------------------------------------------------------------------------
# Lift: re-render after the lift instant, reload, everything resolves again


def test_rerender_after_the_lift_and_reload_unblocks_every_name(resolver: Resolver, scenario: Scenario):
    try:
        scenario.render(LIFTED)
        for origin in TEST_ORIGINS:
            text = (scenario.zones / f"{origin.split('.')[0]}.rpz").read_text()
            assert " CNAME " not in text and " A " not in text          # an empty zone, still a zone
        reload_and_wait(resolver, scenario.zones)
        for apex in [a for a in BLOCKED_APEXES if a != "added.example.gg"]:
            for qname in (apex, f"{label()}.{apex}"):
                assert resolver.ask(qname, timeout=0.4).addresses == {AUTH_ADDRESS}, (resolver.name, qname)
        assert resolver.ask("redir.example.gg", "AAAA").answer == ()       # the auth server has no AAAA
    finally:
        scenario.block(resolver)
    assert resolver.ask("blocked.example.gg").rcode == "NXDOMAIN"


# ------------------------------------------------------------------------------------------
# Built-in reload hooks, for real: `blocker apply` reloads the resolver through its control channel


def hook_config(res: Resolver, tmp_path: Path) -> str:
    if res.name == "unbound":
        return f"{{kind: unbound, key_file: '{res.conf_path}', server: '127.0.0.1:{res.control_port}'}}"
    if res.name == "bind":
        assert isinstance(res, Bind)
        key = tmp_path / "rndc.key"
        key.write_text(f'key "blocker-test" {{ algorithm hmac-sha256; secret "{res.rndc_secret}"; }};\n')
        return f"{{kind: bind, server: '127.0.0.1:{res.control_port}', key_file: '{key}'}}"
    if res.name == "kresd":
        return f"{{kind: knot-resolver, socket: '{res.control_dir}'}}"
    return f"{{kind: powerdns-recursor, socket: '{res.workdir}'}}"


def test_apply_reloads_the_resolver_through_the_built_in_hook(resolver: Resolver, scenario: Scenario,
                                                              tmp_path: Path):
    orders = tmp_path / "orders"
    shutil.copytree(scenario.orders, orders)
    (orders / "hook.yaml").write_text(order_yaml("hook", "[orange]", "nxdomain", ["added.example.gg"]))
    config = tmp_path / "blocker.yaml"
    # With `resolvers`, apply itself asks the resolver for the new canary serial after the reload.
    config.write_text(CONFIG.replace("  free:\n", f"    reload: {hook_config(resolver, tmp_path)}\n"
                                                  f"    resolvers: ['127.0.0.1:{resolver.port}']\n  free:\n"))
    reload_and_wait(resolver, scenario.zones)       # in step with the folder (other tests re-rendered it)
    # Asked before the apply: a resolver (or cache) that kept the old answer or canary would fail below.
    assert resolver.ask("added.example.gg").addresses == {AUTH_ADDRESS}
    old = serial_of(scenario.zones, ORANGE)
    assert resolver.canary_serial(canary_owner("orange") + ".") == old
    try:
        proc = forced_apply("--config", str(config), "apply", "--orders", str(orders), "--out", str(scenario.zones),
                       "--state-dir", str(tmp_path / "state"), "--operator", "orange", "--at", ACTIVE, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        new = serial_of(scenario.zones, ORANGE)
        assert new == old + 1 and f"orange: published serial {new}" in proc.stdout
        assert f"serial {new} served by all 1 resolver(s)" in proc.stdout
        canary = canary_owner("orange") + "."
        if resolver.name == "bind":      # rndc answers "reload queued" at once: BIND applies it ms later
            resolver.wait_for(lambda r: r.canary_serial(canary) == new, timeout=3, what=f"canary {new}")
        else:                            # the others have the new zone in force when the hook returns
            assert resolver.canary_serial(canary) == new
        for qname in ("added.example.gg", f"{label()}.added.example.gg"):
            assert resolver.ask(qname).rcode == "NXDOMAIN", (resolver.name, qname)
        assert resolver.ask("blocked.example.gg").rcode == "NXDOMAIN"
        assert resolver.ask("open.example.gg").addresses == {AUTH_ADDRESS}
    finally:
        scenario.block(resolver)
    assert resolver.ask("added.example.gg").addresses == {AUTH_ADDRESS}


def test_a_hook_pointed_at_a_dead_control_channel_fails_the_apply(scenario: Scenario, unbound: Resolver,
                                                                  tmp_path: Path):
    """A reload that fails is exit 5, with the tool's message; the zone is written, not in effect."""
    orders = tmp_path / "orders"
    shutil.copytree(scenario.orders, orders)
    (orders / "hook.yaml").write_text(order_yaml("hook", "[orange]", "nxdomain", ["added.example.gg"]))
    config = tmp_path / "blocker.yaml"
    config.write_text(CONFIG.replace(
        "  free:\n", f"    reload: {{kind: unbound, key_file: '{unbound.conf_path}', server: '127.0.0.1:9'}}\n"
                     "  free:\n"))
    try:
        proc = forced_apply("--config", str(config), "apply", "--orders", str(orders), "--out", str(scenario.zones),
                       "--state-dir", str(tmp_path / "state"), "--operator", "orange", "--at", ACTIVE, cwd=tmp_path)
        assert proc.returncode == 5, proc.stdout + proc.stderr
        assert "reload FAILED" in proc.stderr and "unbound-control" in proc.stderr
        assert "added.example.gg CNAME ." in (scenario.zones / "orange.rpz").read_text()
        assert unbound.ask("added.example.gg").addresses == {AUTH_ADDRESS}       # not reloaded: not in effect
    finally:
        scenario.block(unbound)


def test_a_reload_that_does_not_take_effect_is_caught_by_the_canary(scenario: Scenario, unbound: Resolver,
                                                                    tmp_path: Path):
    """A hook that exits 0 without reloading (like rndc on a bad file, or a wrong command): apply asks
    the resolver for the canary, sees the old serial, exits 5 and records the zone as not in effect."""
    reload_and_wait(unbound, scenario.zones)
    orders = tmp_path / "orders"
    shutil.copytree(scenario.orders, orders)
    (orders / "hook.yaml").write_text(order_yaml("hook", "[orange]", "nxdomain", ["added.example.gg"]))
    config = tmp_path / "blocker.yaml"
    config.write_text(CONFIG.replace("publish: {check: named-checkzone}",
                                     "publish: {check: named-checkzone, verify_timeout: 0.5}").replace(
        "  free:\n", f"    reload: {{kind: command, command: ['true']}}\n"
                     f"    resolvers: ['127.0.0.1:{unbound.port}']\n  free:\n"))
    old = serial_of(scenario.zones, ORANGE)
    try:
        proc = forced_apply("--config", str(config), "apply", "--orders", str(orders), "--out", str(scenario.zones),
                       "--state-dir", str(tmp_path / "state"), "--operator", "orange", "--at", ACTIVE, cwd=tmp_path)
        assert proc.returncode == 5, proc.stdout + proc.stderr
        assert f"serial {old + 1} not served" in proc.stderr and f"serves {old}" in proc.stderr, proc.stderr
        record = State(tmp_path / "state").zone("orange")
        assert record is not None and (record.serial, record.in_effect) == (old + 1, False)
    finally:
        scenario.block(unbound)
