"""The fleet on loopback with the real daemons: a Knot DNS hidden primary started from the config
`blocker fleet primary-config` prints, and BIND, Unbound and PowerDNS Recursor secondaries started
from the snippets `blocker fleet secondary-config` prints. Two blocker instances (two state dirs,
two knotds) publish the same orders; the secondaries list both primaries."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import dns.tsigkeyring
import pytest

from tests.fleet.fleetlib import SECRET, BindSecondary, KnotPrimary, PdnsSecondary, UnboundSecondary, bind_key
from tests.resolverlib import AUTH_ADDRESS, AuthServer, ask, free_port, wait_for
from tests.support.cli import BLOCKER, blocker, child_env

pytestmark = pytest.mark.integration  # knot, bind9, unbound, pdns-recursor and the blocker console script

ORIGIN = "orange.rpz.blocker."
WRONG = "d3Jvbmctc2VjcmV0LWZvci10ZXN0cy0wMTIzNDU2Nzg="

ORDER = """id: fleet-{n}
court: Tribunal judiciaire de Paris
case_number: RG 26/{n}
decision_date: 2026-11-16
applicant: Test
operators: [orange]
start: 2026-11-17T09:00:00+01:00
end: 2027-10-12
action: nxdomain
targets: [{name}]
"""


@dataclass
class Fleet:
    root: Path
    configs: dict[str, Path]
    primaries: dict[str, KnotPrimary]
    secondaries: dict[str, object]
    outputs: list[str] = field(default_factory=list)

    def blocker(self, inst: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = blocker(*args, config=self.configs[inst], cwd=self.root, timeout=120)
        self.outputs += [proc.stdout, proc.stderr]
        if check:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def publish(self, at: str | None = None, insts: tuple[str, ...] = ("a", "b")) -> dict[str, int]:
        at = at or datetime.now(UTC).replace(microsecond=0).isoformat()
        out = {}
        for inst in insts:
            proc = self.blocker(inst, "apply", "--at", at, "--json", check=False)
            assert proc.returncode in (0, 5), proc.stdout + proc.stderr
            out[inst] = proc.returncode
        return out

    def status(self, inst: str = "a") -> tuple[int, list[dict[str, object]]]:
        proc = self.blocker(inst, "fleet", "status", "--json", "--timeout", "1", check=False)
        return proc.returncode, json.loads(proc.stdout)


def _config(root: Path, inst: str, port: int, peer: int, sec_ports: dict[str, int]) -> Path:
    text = f"""orders_dir: {root}/orders
state_dir: {root}/{inst}/var
zones_dir: {root}/{inst}/zones
publish: {{check: structural}}
rpz: {{ttl: 2}}            # PowerDNS answers the serial canary from its packet cache for this long
distribution:
  primary: {{kind: knot, listen: 127.0.0.1:{port}, control: {root}/{inst}/knot.sock}}
  tsig_key: {root}/xfr.key
  peers: [127.0.0.1:{peer}]
  propagation_timeout: 20
operators:
  orange:
    secondaries:
      - {{address: 127.0.0.1:{sec_ports['bind']}, name: orange-bind}}
      - {{address: 127.0.0.1:{sec_ports['unbound']}, name: orange-unbound, tsig: false}}
      - {{address: 127.0.0.1:{sec_ports['pdns']}, name: orange-pdns}}
      - {{address: 127.0.0.1:{sec_ports['badkey']}, name: orange-badkey}}
"""
    path = root / f"{inst}.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    (root / "xfr.key").write_text(bind_key())
    os.chmod(root / "xfr.key", 0o600)
    (root / "wrong.key").write_text(bind_key(WRONG))
    os.chmod(root / "wrong.key", 0o600)
    (root / "orders").mkdir()
    (root / "orders" / "one.yaml").write_text(ORDER.format(n=1, name="blocked.example.gg"))
    ports = {"a": free_port(), "b": free_port()}
    sec_ports = {k: free_port() for k in ("bind", "unbound", "pdns", "badkey")}
    configs = {"a": _config(root, "a", ports["a"], ports["b"], sec_ports),
               "b": _config(root, "b", ports["b"], ports["a"], sec_ports)}
    f = Fleet(root, configs, {}, {})
    started: list[object] = []
    auth = AuthServer(root / "auth").start()
    started.append(auth)
    try:
        for inst in ("a", "b"):
            text = f.blocker(inst, "fleet", "primary-config").stdout
            f.primaries[inst] = KnotPrimary(root / inst / "knot", text, ports[inst], ORIGIN).start()
            started.append(f.primaries[inst])
        assert f.publish() == {"a": 0, "b": 0}
        snip = {kind: f.blocker("a", "fleet", "secondary-config", "--operator", "orange", "--kind", kind).stdout
                for kind in ("bind", "unbound", "powerdns-recursor")}
        bad = f.blocker("a", "fleet", "secondary-config", "--operator", "orange", "--kind", "bind",
                        "--key-file", str(root / "wrong.key")).stdout
        specs = [("bind", BindSecondary, snip["bind"]), ("unbound", UnboundSecondary, snip["unbound"]),
                 ("pdns", PdnsSecondary, snip["powerdns-recursor"]), ("badkey", BindSecondary, bad)]
        for name, cls, text in specs:
            sec = cls(root / f"sec-{name}", text, auth.address, sec_ports[name]).start()
            started.append(sec)
            f.secondaries[name] = sec
        yield f
    finally:
        for proc in reversed(started):
            proc.stop()  # type: ignore[attr-defined]


GOOD = ("orange-bind", "orange-unbound", "orange-pdns")


def _serving(f: Fleet, serial: int, names: tuple[str, ...] = GOOD) -> bool:
    _, rows = f.status()
    return all(r["serial"] == serial for r in rows if r["name"] in names)


def _published(f: Fleet, inst: str = "a") -> int:
    _, rows = f.status(inst)
    return int(rows[0]["published_serial"])  # type: ignore[arg-type]


def _port(f: Fleet, name: str) -> int:
    return f.secondaries[name].port  # type: ignore[attr-defined,no-any-return]


def test_secondaries_follow_a_publish_and_answer_the_new_policy(fleet: Fleet) -> None:
    first = _published(fleet)
    wait_for(lambda: _serving(fleet, first), timeout=20, interval=0.3, what="first serial everywhere")
    for name in ("bind", "unbound", "pdns"):
        assert ask(_port(fleet, name), "blocked.example.gg").rcode == "NXDOMAIN"
        assert AUTH_ADDRESS in ask(_port(fleet, name), "before.added.example.gg").addresses
    (fleet.root / "orders" / "two.yaml").write_text(ORDER.format(n=2, name="added.example.gg"))
    time.sleep(1.1)  # the new order's serial is its transition: a later apply instant only
    assert fleet.publish() == {"a": 0, "b": 0}
    second = _published(fleet)
    assert second != first
    t0 = time.monotonic()
    for name in ("bind", "unbound", "pdns"):
        # A name not asked before: PowerDNS answers from its packet cache until the TTL ends,
        # whatever its RPZ says (no wipe-cache reaches it from the primary).
        wait_for(lambda n=name: ask(_port(fleet, n), "added.example.gg").rcode == "NXDOMAIN", timeout=15,
                 interval=0.1, what=f"{name} blocks the new name")
    assert time.monotonic() - t0 < 15
    wait_for(lambda: _serving(fleet, second), timeout=10, interval=0.3, what="second serial everywhere")


def test_the_transfer_was_incremental(fleet: Fleet) -> None:
    primary = fleet.primaries["a"]
    wait_for(lambda: bool(primary.xfr_lines("IXFR")), timeout=15, interval=0.2, what="an outgoing IXFR")
    # Ask the primary ourselves: IXFR from the first serial is the difference only.
    zone_serials = [int(r["serial"]) for r in fleet.status()[1] if r["name"] == "orange-bind"]
    keyring = dns.tsigkeyring.from_text({"blocker-xfr": ("hmac-sha256", SECRET)})
    history = sorted({int(ln.split("serial ")[1].split(" ")[0]) for ln in primary.log_text().splitlines()
                      if "loaded, serial" in ln and "none" not in ln.split("serial ")[1][:5]})
    old = history[0] if history else zone_serials[0] - 1
    query = dns.message.make_query(ORIGIN, dns.rdatatype.IXFR)
    soa = dns.rrset.from_text(ORIGIN, 0, "IN", "SOA", f"localhost. hostmaster.localhost. {old} 60 60 604800 30")
    query.authority.append(soa)
    query.use_tsig(keyring, "blocker-xfr")
    reply = dns.query.tcp(query, "127.0.0.1", port=primary.port, timeout=5, one_rr_per_rrset=True)
    wire = len(reply.to_wire())
    assert reply.answer[0].rdtype == dns.rdatatype.SOA
    assert len(reply.answer) > 2 and reply.answer[1].rdtype == dns.rdatatype.SOA, reply  # IXFR, not AXFR
    assert wire < 2000


def test_wrong_key_is_refused_and_reported(fleet: Fleet) -> None:
    code, rows = fleet.status()
    assert code == 1
    bad = next(r for r in rows if r["name"] == "orange-badkey")
    assert bad["in_sync"] is False and bad["serial"] is None and bad["last_error"]
    assert all(r["in_sync"] for r in rows if r["name"] in GOOD)
    # The primary refused its transfer requests (BADSIG); the secondary logs it.
    assert "tsig indicates error" in fleet.secondaries["badkey"].log_text()  # type: ignore[attr-defined]
    table = fleet.blocker("a", "fleet", "status", check=False)
    assert table.returncode == 1 and "orange-badkey" in table.stdout


def test_two_primaries_publish_the_same_serial_and_bytes(fleet: Fleet) -> None:
    a = (fleet.root / "a" / "zones" / "orange.rpz").read_bytes()
    b = (fleet.root / "b" / "zones" / "orange.rpz").read_bytes()
    assert a == b
    assert _published(fleet, "a") == _published(fleet, "b")


def test_a_secondary_follows_the_other_primary_when_one_is_down(fleet: Fleet) -> None:
    fleet.primaries["a"].stop()
    (fleet.root / "orders" / "three.yaml").write_text(ORDER.format(n=3, name="late.example.gg"))
    time.sleep(1.1)
    codes = fleet.publish()
    assert codes == {"a": 5, "b": 0}  # a's primary is down: its reload fails, a publish failure
    serial = _published(fleet, "b")
    wait_for(lambda: ask(_port(fleet, "bind"), "late.example.gg").rcode == "NXDOMAIN", timeout=20, interval=0.2,
             what="bind follows primary b")
    wait_for(lambda: _serving(fleet, serial, ("orange-bind",)), timeout=10, interval=0.3, what="bind serial")


def test_a_stopped_secondary_is_reported_behind(fleet: Fleet) -> None:
    fleet.secondaries["unbound"].stop()  # type: ignore[attr-defined]
    code, rows = fleet.status("b")
    row = next(r for r in rows if r["name"] == "orange-unbound")
    assert code == 1 and row["in_sync"] is False and row["serial"] is None and row["last_error"]


def test_the_daemon_follows_propagation_and_stays_healthy_while_a_secondary_lags(fleet: Fleet) -> None:
    import urllib.request

    port = free_port()
    log = open(fleet.root / "daemon-b.log", "w")  # noqa: SIM115 - closed below
    daemon = subprocess.Popen([BLOCKER, "--config", str(fleet.configs["b"]), "run", "--listen",
                               f"127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT, cwd=fleet.root,
                              env=child_env())

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except OSError:
            return 0, ""

    try:
        wait_for(lambda: get("/healthz")[0] == 200, timeout=60, interval=0.5, what="daemon up")
        (fleet.root / "orders" / "four.yaml").write_text(ORDER.format(n=4, name="drop.example.gg"))
        wait_for(lambda: ask(_port(fleet, "bind"), "drop.example.gg").rcode == "NXDOMAIN", timeout=30,
                 interval=0.2, what="the daemon's publish reaches bind")
        # The stopped Unbound never gets it: the follower gives up at propagation_timeout (20 s).
        wait_for(lambda: "secondary-behind" in fleet.blocker("b", "audit", "show").stdout, timeout=60,
                 interval=1, what="secondary-behind audited")
        metrics = get("/metrics")[1]
        assert 'blocker_secondary_up{operator="orange",secondary="orange-unbound"} 0.0' in metrics
        assert 'blocker_secondary_up{operator="orange",secondary="orange-bind"} 1.0' in metrics
        assert 'blocker_secondary_serial{operator="orange",secondary="orange-bind"}' in metrics
        shown = fleet.blocker("b", "audit", "show").stdout
        assert "propagation" in shown and "orange-unbound" in shown
        assert get("/healthz")[0] == 200  # the primary is fine; the alert pages, not the health check
    finally:
        daemon.terminate()
        daemon.wait(30)
        log.close()
    fleet.outputs.append((fleet.root / "daemon-b.log").read_text())


def test_the_secret_never_appears_in_any_output(fleet: Fleet) -> None:
    assert fleet.outputs
    for text in fleet.outputs:
        assert SECRET not in text and WRONG not in text
