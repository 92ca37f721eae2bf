"""Issue 9, section 4: "verified" must mean verified.

A `blocked` or `resolves` answer proves the order only when the same resolver, over the same
transport, serves the canary serial of a zone that holds the entry (a lift: of the zone that
removed it) and every control name resolved on it in the same pass (blocker.probe.proof.prove,
blocker.probe.expectations.proof_serials). Here:

- the rule itself, over every verdict/canary/control combination (hypothesis), and the serial a
  check needs, from hand-made publish histories;
- real resolvers that produce a block's signature without our policy: an Unbound that answers
  NXDOMAIN to everything (probed by `blocker probe` and by a real daemon), an Unbound applying an
  older zone while another policy blocks the new name, and a drop on an offline site (its
  authoritative server silent) that is not in the published zone;
- the normal case on all four session resolvers: nxdomain and drop entries applied are `blocked`.

Every Unbound started here runs on a free loopback port and is stopped by the test.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocker.orders.model import Order, Target
from blocker.policy import Entry
from blocker.probe.expectations import Published, proof_serials
from blocker.probe.model import PROVEN, Check, CheckResult, exit_code
from blocker.probe.proof import prove, served_throughout
from blocker.zone.read import read_meta
from blocker.zone.serial import serial_gt
from tests.conftest_resolvers import RESOLVER_FIXTURES
from tests.resolverlib import (
    LOOPBACK,
    TEST_ORIGINS,
    AuthServer,
    DnsProcess,
    Resolver,
    canary_name,
    rpz_zone,
    write_atomically,
)
from tests.support.cli import blocker
from tests.support.daemon import Env as DaemonEnv
from tests.support.probe import MODES, config_text, metric, metrics, restore_base_rules
from tests.support.properties import examples

pytestmark = pytest.mark.integration  # real resolvers (some through request.getfixturevalue) and blocker

ORANGE, FREE = TEST_ORIGINS
CONTROL = "www.example.gg"

# --------------------------------------------------------------------------------------------
# The rule, as pure logic

KINDS = ("target", "subdomain", "lifted", "control")
RAW = ("blocked", "not-blocked", "overblocked", "resolves", "error")
LANES = (("r1", "udp"), ("r1", "tcp"), ("r2", "udp"))


def _check(i: int, kind: str) -> Check:
    expected = "blocked" if kind in ("target", "subdomain") else "resolves"
    return Check(f"n{i}.example.gg", expected, "nxdomain" if expected == "blocked" else None,
                 () if kind == "control" else (f"o{i}",), kind=kind)


@st.composite
def passes(draw: st.DrawFn) -> tuple[list[Check], list[CheckResult], list[int | None], dict]:
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=8))
    checks = [_check(i, k) for i, k in enumerate(kinds)]
    serials = st.one_of(st.none(), st.sampled_from([1, 5, 9, 2**32 - 3]))
    need = [draw(serials) for _ in checks]
    served = {lane: draw(serials) for lane in LANES}
    results = [CheckResult(c.name, lane[0], lane[1], c.expected, draw(st.sampled_from(RAW)), c.order_ids,  # type: ignore[arg-type]
                           "NXDOMAIN", (), 1.0, "", c.kind)
               for c in checks for lane in LANES]
    return checks, results, need, served


@settings(max_examples=examples(400), deadline=None)
@given(passes())
def test_blocked_or_resolves_only_with_canary_proof_and_resolving_controls(case: tuple) -> None:
    checks, results, need, served = case
    out = prove(checks, results, need, served)
    assert len(out) == len(results)
    lanes = len(LANES)
    for i, (before, after) in enumerate(zip(results, out, strict=True)):
        check, lane = checks[i // lanes], (before.resolver, before.transport)
        controls = [results[j * lanes + i % lanes] for j, c in enumerate(checks) if c.kind == "control"]
        proven = (bool(controls) and all(r.verdict == "resolves" for r in controls) and served[lane] is not None
                  and need[i // lanes] is not None and not serial_gt(need[i // lanes], served[lane]))
        if check.kind == "control" or before.verdict not in PROVEN:
            assert after == before              # failures and the evidence itself stand as they are
        elif proven:
            assert after == before
        else:
            assert after.verdict == "unverified", (before, after)
            assert after.reason.startswith(f"answered as {before.verdict}")
        if after.verdict in PROVEN and check.kind != "control":
            assert proven
    if any(r.verdict == "unverified" for r in out):
        assert exit_code(out) == 1


def test_a_pass_without_a_control_name_proves_nothing() -> None:
    checks = [_check(0, "target"), _check(1, "lifted")]
    results = [CheckResult(c.name, "r1", "udp", c.expected, v, c.order_ids, "NXDOMAIN", (), 1.0, "", c.kind)  # type: ignore[arg-type]
               for c, v in zip(checks, ("blocked", "resolves"), strict=True)]
    out = prove(checks, results, [5, 5], {("r1", "udp"): 5})
    assert [r.verdict for r in out] == ["unverified", "unverified"]
    assert "no control name was probed" in out[0].reason


def test_served_throughout_takes_the_older_read() -> None:
    lane, other, gone = ("r", "udp"), ("r", "tcp"), ("s", "udp")
    assert served_throughout({lane: 5, other: 7, gone: 3}, {lane: 6, other: 7, gone: None}) == {
        lane: 5, other: 7, gone: None}
    assert served_throughout({lane: 2**32 - 1}, {lane: 2}) == {lane: 2**32 - 1}   # RFC 1982: 2 is later


def test_prove_refuses_results_that_do_not_line_up() -> None:
    checks = [_check(0, "target")]
    result = CheckResult("n0.example.gg", "r1", "udp", "blocked", "blocked", ("o0",), "NXDOMAIN", (), 1.0)
    with pytest.raises(ValueError):
        prove(checks, [result], [], {})
    assert prove(checks, [], [1], {}) == []


T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _order(order_id: str, *names: str, subdomains: bool = False) -> Order:
    """Only what proof_serials reads of an order: its id and targets."""
    order = object.__new__(Order)
    object.__setattr__(order, "id", order_id)
    object.__setattr__(order, "targets", tuple(Target(n, subdomains, "domain", n) for n in names))
    return order


def _at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_first_serial_holding_an_entry_from_the_history() -> None:
    entries = {"a.example.gg": Entry("nxdomain", ("A",)), "b.example.gg": Entry("drop", ("B",)),
               "*.b.example.gg": Entry("drop", ("B",)), "c.example.gg": Entry("nxdomain", ("A", "C"))}
    history = [(10, _at(0), frozenset({"A"})), (11, _at(1), frozenset({"A", "X"})),
               (12, _at(2), frozenset({"A", "B"})), (13, _at(3), frozenset({"A", "B", "C"})),
               (14, _at(4), frozenset({"A", "B", "C"}))]
    # B's version in force was stored after serial 12 was published: 12 may hold another version.
    since = {"A": _at(0), "B": _at(2) + timedelta(seconds=1), "C": _at(3)}
    orders = [_order("A", "a.example.gg", "c.example.gg"), _order("B", "b.example.gg", subdomains=True),
              _order("C", "c.example.gg")]
    checks = [Check("a.example.gg", "blocked", "nxdomain", ("A",)),
              Check("b.example.gg", "blocked", "drop", ("B",)),
              Check("probe-1.b.example.gg", "blocked", "drop", ("B",), kind="subdomain"),
              Check("c.example.gg", "blocked", "nxdomain", ("A", "C")),
              Check("b.example.gg", "blocked", "nxdomain", ("B",)),           # another action than the zone's
              Check("gone.example.gg", "blocked", "drop", ("D",)),            # not in the published zone
              Check(CONTROL, "resolves", None, kind="control")]
    with_state = proof_serials(checks, orders, Published(14, entries, history, since))
    assert with_state == [10, 13, 13, 10, None, None, 14]
    # Without a history (no state), or one that did not record the zone on disk, only the published
    # serial proves anything.
    assert proof_serials(checks, orders, Published(14, entries)) == [14, 14, 14, 14, None, None, 14]
    assert proof_serials(checks, orders, Published(15, entries, history, since))[:4] == [15] * 4
    assert proof_serials(checks, orders, None) == [None] * len(checks)


def test_first_serial_without_a_lifted_name() -> None:
    entries = {"keep.example.gg": Entry("nxdomain", ("K",))}
    history = [(20, _at(0), frozenset({"L", "K"})), (21, _at(1), frozenset({"K", "M"})),
               (22, _at(2), frozenset({"K"})), (23, _at(3), frozenset({"K", "Z"})), (24, _at(4), frozenset({"K"}))]
    since = {"L": _at(0), "K": _at(0), "M": _at(0)}
    orders = [_order("L", "old.example.gg"), _order("K", "keep.example.gg"),
              _order("M", "example.gg", subdomains=True)]
    checks = [Check("old.example.gg", "resolves", None, ("L",), kind="lifted"),
              Check("keep.example.gg", "resolves", None, ("K",), kind="lifted")]  # still in the zone
    # old.example.gg left with L at 21, but M's wildcard covered it in 21, and serial 23 lists Z,
    # an order whose targets are unknown here: only 24 is known not to cover it.
    assert proof_serials(checks, orders, Published(24, entries, history, since)) == [24, None]
    history[3] = (23, _at(3), frozenset({"K"}))
    assert proof_serials(checks, orders, Published(24, entries, history, since)) == [22, None]
    # A version of K stored after 22 was published: 22 may have held other targets of K.
    later = {**since, "K": _at(2) + timedelta(days=1)}
    assert proof_serials(checks, orders, Published(24, entries, history, later))[0] == 24


# --------------------------------------------------------------------------------------------
# Real resolvers of our own: a liar, and one whose upstream for an offline site is silent


class OwnUnbound(DnsProcess):
    """An Unbound started by one test: `lie` answers NXDOMAIN to every name (no RPZ at all);
    otherwise it applies the RPZ files given, forwards to the AuthServer, and forwards
    `offline.example.gg` to `silent` (a socket that never answers: an offline site's servers)."""

    name = "unbound"
    binary = "unbound"
    package = "unbound"

    def __init__(self, workdir: Path, *, lie: bool = False, zones: tuple[tuple[str, Path], ...] = (),
                 upstream: tuple[str, int] | None = None, silent: int | None = None) -> None:
        super().__init__(workdir)
        self.lie, self.zones, self.upstream, self.silent = lie, zones, upstream, silent

    def write_config(self) -> None:
        lines = ["server:", f"  interface: {LOOPBACK}", f"  port: {self.port}", "  do-ip6: no",
                 "  do-daemonize: no", "  use-syslog: no", '  logfile: ""', '  username: ""', '  chroot: ""',
                 f'  directory: "{self.workdir}"', f'  pidfile: "{self.workdir}/unbound.pid"', "  num-threads: 1",
                 "  access-control: 127.0.0.0/8 allow", "  do-not-query-localhost: no",
                 '  module-config: "respip iterator"']
        if self.lie:
            lines.append('  local-zone: "." always_nxdomain')
        if self.silent is not None:
            lines += ["forward-zone:", '  name: "offline.example.gg."', f"  forward-addr: {LOOPBACK}@{self.silent}"]
        if self.upstream is not None:
            lines += ["forward-zone:", '  name: "."', f"  forward-addr: {self.upstream[0]}@{self.upstream[1]}"]
        for origin, path in self.zones:
            lines += ["rpz:", f'  name: "{origin}"', f'  zonefile: "{path}"']
        lines += ["remote-control:", "  control-enable: no"]
        (self.workdir / "unbound.conf").write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [self.binary, "-d", "-c", str(self.workdir / "unbound.conf")]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A UDP and a TCP socket on one loopback port that take queries and never answer."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((LOOPBACK, 0))
    port = udp.getsockname()[1]
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        tcp.bind((LOOPBACK, port))
        tcp.listen(16)
    except OSError:
        tcp.close()
        tcp = None  # type: ignore[assignment]
    yield port
    udp.close()
    if tcp is not None:
        tcp.close()


ORDER_TEXT = """\
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


class Site:
    """An orders folder, a zones folder and a state folder, with one config per signature mode."""

    def __init__(self, root: Path, zones: Path | None = None, orange_extra: str = "") -> None:
        self.root = root
        self.orders, self.state = root / "orders", root / "state"
        self.zones = zones or root / "zones"
        for folder in (self.orders, self.zones):
            folder.mkdir(parents=True, exist_ok=True)
        self.configs = {}
        for mode in sorted(set(MODES.values())):
            path = root / f"blocker-{mode}.yaml"
            path.write_text(config_text(zones=self.zones, state=self.state, orders=self.orders, mode=mode,
                                        orange_extra=orange_extra))
            self.configs[mode] = path
        self.count = 0

    def order(self, order_id: str, action: str, target: str, start: datetime, days: int = 30) -> None:
        self.count += 1
        (self.orders / f"{order_id}.yaml").write_text(ORDER_TEXT.format(
            id=order_id, case=60000 + self.count, start=start.isoformat(timespec="seconds"),
            end=(start + timedelta(days=days)).isoformat(timespec="seconds"), action=action, target=target))

    def apply(self) -> int:
        """`blocker apply` (the real publish path, state and audit included); the orange serial."""
        proc = blocker("apply", "--config", str(self.configs["empty"]), cwd=self.root)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        meta = read_meta(self.zones / "orange.rpz")
        assert meta is not None
        return meta.serial

    def probe(self, port: int, *extra: str, mode: str = "empty") -> tuple[subprocess.CompletedProcess[str], list]:
        proc = blocker("probe", "--config", str(self.configs[mode]), "--operator", "orange", "--resolver",
                       f"127.0.0.1:{port}", "--control", CONTROL, *extra, cwd=self.root)
        results = json.loads(proc.stdout) if "--json" in extra else []
        return proc, results

    def audit(self) -> list[dict[str, Any]]:
        path = self.state / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def liar(tmp_path: Path) -> Iterator[OwnUnbound]:
    with OwnUnbound(tmp_path / "liar", lie=True) as server:
        yield server


def test_resolver_answering_nxdomain_to_everything_verifies_nothing(tmp_path: Path, liar: OwnUnbound) -> None:
    site = Site(tmp_path)
    site.order("liar-block", "nxdomain", "blocked.example.gg", _now() - timedelta(days=1))
    site.apply()
    assert liar.ask("blocked.example.gg").rcode == "NXDOMAIN" and liar.ask(CONTROL).rcode == "NXDOMAIN"
    for extra in ((), ("--tcp",)):
        proc, results = site.probe(liar.port, "--json", *extra)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        by_kind = {(r["kind"], r["transport"]): r for r in results}
        for transport in ("udp", *(("tcp",) if extra else ())):
            assert by_kind["control", transport]["verdict"] == "overblocked"
            for kind in ("target", "subdomain"):
                r = by_kind[kind, transport]
                assert (r["verdict"], r["rcode"]) == ("unverified", "NXDOMAIN"), r
                assert r["reason"].startswith("answered as blocked, but the control name www.example.gg did not "
                                              "resolve in this pass (overblocked)"), r
        assert "blocked" not in {r["verdict"] for r in results}
        assert "serves no canary serial for orange" in proc.stderr
    proc, _ = site.probe(liar.port)                                        # the table counts them
    assert proc.returncode == 1
    header, row = proc.stdout.splitlines()[:2]
    assert header.split()[-1] == "UNVERIFIED" and row.split()[-1] == "2", proc.stdout
    assert "unverified: blocked.example.gg on " in proc.stdout


def test_daemon_writes_no_order_verified_from_a_lying_resolver(tmp_path: Path, liar: OwnUnbound) -> None:
    daemons = DaemonEnv(tmp_path)
    extra = f"    resolvers: [{{address: 127.0.0.1:{liar.port}, name: liar}}]\n"
    site = Site(tmp_path, orange_extra=extra)
    site.order("liar-daemon", "nxdomain", "blocked.example.gg", _now() - timedelta(days=1))
    daemons.zones = site.zones
    try:
        daemon = daemons.start(site.configs["empty"], ready=False)
        unverified = daemon.wait_metric("blocker_probe_checks", 15, operator="orange", resolver="liar",
                                        verdict="unverified")
        assert unverified == 2                                             # the name and a random subdomain
        samples = metrics(daemon.port)
        assert metric(samples, "blocker_probe_checks", operator="orange", resolver="liar", verdict="blocked") is None
        assert metric(samples, "blocker_probe_checks", operator="orange", resolver="liar",
                      verdict="overblocked") == 1                          # the control name
        assert (metric(samples, "blocker_probe_oldest_unverified_seconds", operator="orange") or 0) > 0
        deadline = time.monotonic() + 10
        while not [a for a in site.audit() if a["event"] == "probe-pass"] and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        daemons.close()
    audit = site.audit()
    passes = [a["data"] for a in audit if a["event"] == "probe-pass"]
    assert passes, daemons.log()
    assert all(p["verdicts"].get("unverified") == 2 and "blocked" not in p["verdicts"] for p in passes), passes
    assert all(p["verified"] == [] and p["failing"] == ["liar-daemon"] for p in passes), passes
    assert not [a for a in audit if a["event"] == "order-verified"]
    proc = blocker("report", "--config", str(site.configs["empty"]), "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [row] = json.loads(proc.stdout)["orders"]
    [op] = [o for o in row["per_operator"] if o["operator"] == "orange"]
    assert op["block"] == "published" and op["block_verified"] is None and op["last_verified"] is None, op
    assert op["failures"] >= 1


def test_stale_canary_entries_added_since_are_unverified(tmp_path: Path, auth_server: AuthServer) -> None:
    """The resolver applies the orange zone of the first apply; the second apply adds a name that
    another policy on the same resolver blocks anyway. Its NXDOMAIN proves nothing of ours."""
    site = Site(tmp_path)
    site.order("stale-a", "nxdomain", "blocked.example.gg", _now() - timedelta(days=2))
    first = site.apply()
    free = tmp_path / "free.rpz"
    write_atomically(free, rpz_zone(FREE, {"added.example.gg": "CNAME .", "*.added.example.gg": "CNAME ."}))
    zones = ((ORANGE, site.zones / "orange.rpz"), (FREE, free))
    with OwnUnbound(tmp_path / "stale", zones=zones, upstream=auth_server.address) as resolver:
        site.order("stale-b", "nxdomain", "added.example.gg", _now() - timedelta(days=1))
        second = site.apply()                                              # never reloaded by this resolver
        assert serial_gt(second, first)
        assert resolver.ask(canary_name(ORANGE), "TXT").txt == [str(first)]
        proc, results = site.probe(resolver.port, "--json", "--state-dir", str(site.state))
        assert proc.returncode == 1, proc.stdout + proc.stderr
        for r in results:
            if r["kind"] == "control":
                assert r["verdict"] == "resolves"
            elif r["order_ids"] == ["stale-a"]:                         # in every zone since `first`
                assert r["verdict"] == "blocked", r
            else:
                assert (r["order_ids"], r["verdict"], r["rcode"]) == (["stale-b"], "unverified", "NXDOMAIN"), r
                assert f"serves serial {first}, older than {second}" in r["reason"], r
        assert len([r for r in results if r["verdict"] == "unverified"]) == 2
        # Without the state's history, only the published serial proves anything: nothing here.
        empty = tmp_path / "no-state"
        empty.mkdir()
        proc, results = site.probe(resolver.port, "--json", "--state-dir", str(empty))
        assert proc.returncode == 1
        assert {r["verdict"] for r in results if r["kind"] != "control"} == {"unverified"}
        # A mistyped --state-dir is a usage error, named.
        proc, _ = site.probe(resolver.port, "--state-dir", str(tmp_path / "nope"))
        assert proc.returncode == 2 and "nope: no such directory" in proc.stderr


def test_drop_on_an_offline_site_not_in_the_zone_is_unverified(tmp_path: Path, auth_server: AuthServer,
                                                               silent_port: int) -> None:
    site = Site(tmp_path)
    now = _now()
    site.order("drop-now", "drop", "drop.example.gg", now - timedelta(days=1))
    site.order("drop-later", "drop", "offline.example.gg", now + timedelta(hours=1))
    site.apply()                                                           # holds drop.example.gg only
    zones = ((ORANGE, site.zones / "orange.rpz"),)
    with OwnUnbound(tmp_path / "offline", zones=zones, upstream=auth_server.address,
                    silent=silent_port) as resolver:
        assert resolver.ask("offline.example.gg", timeout=0.5).rcode == "TIMEOUT"   # the site is offline
        at = (now + timedelta(hours=2)).isoformat()
        proc, results = site.probe(resolver.port, "--json", "--tcp", "--at", at, "--state-dir", str(site.state))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert len(results) == 10
    for r in results:
        if r["kind"] == "control":
            assert r["verdict"] == "resolves"
        elif r["order_ids"] == ["drop-now"]:
            assert (r["verdict"], r["rcode"]) == ("blocked", ""), r
        else:
            assert (r["order_ids"], r["verdict"], r["rcode"]) == (["drop-later"], "unverified", ""), r
            assert r["reason"].endswith("but no published zone holds this entry"), r
            assert "no answer to" in r["reason"]


def test_applied_nxdomain_and_drop_are_blocked_on_every_resolver(
        request: pytest.FixtureRequest, tmp_path: Path, rpz_zones_dir: Path) -> None:
    """The normal case, on Unbound, BIND, Knot Resolver and PowerDNS Recursor: the zone `apply`
    published is the one applied, so every block is proven; `blocker probe` exits 0."""
    resolvers: dict[str, Resolver] = {name: request.getfixturevalue(name) for name in RESOLVER_FIXTURES}
    site = Site(tmp_path, zones=rpz_zones_dir)
    site.order("every-nx", "nxdomain", "added.example.gg", _now() - timedelta(days=1))
    site.order("every-drop", "drop", "drop.example.gg", _now() - timedelta(days=1))
    names = ["added.example.gg", "drop.example.gg", canary_name(ORANGE), canary_name(FREE)]
    try:
        for origin in TEST_ORIGINS:        # apply starts from no zone (it keeps entries it cannot explain)
            (rpz_zones_dir / f"{origin.split('.')[0]}.rpz").unlink(missing_ok=True)
        serial = site.apply()
        for res in resolvers.values():
            res.reload(changed=names)
        for fixture, res in resolvers.items():
            res.wait_for(lambda r: r.canary_serial(canary_name(ORANGE)) == serial, timeout=10,
                         what=f"orange serial {serial}")
            proc, results = site.probe(res.port, "--json", "--tcp", "--state-dir", str(site.state),
                                       mode=MODES[fixture])
            assert proc.returncode == 0, (fixture, proc.stdout, proc.stderr)
            assert len(results) == 10
            for r in results:
                assert r["verdict"] == ("blocked" if r["expected"] == "blocked" else "resolves"), (fixture, r)
    finally:
        restore_base_rules(resolvers, rpz_zones_dir)
