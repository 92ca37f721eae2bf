"""After a publish, the Knot primary gets only the difference, in one control transaction, and
what it then serves is exactly the zone file blocker wrote: checked after every kind of change
(names added, removed, the zone's shape changed, a primary changed behind blocker's back, a
change too large for a transaction) by a full AXFR from the primary compared record by record
(TTL included) with the file, and again after knotd restarts from file + journal."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.name
import dns.query
import dns.tsigkeyring
import dns.zone
import pytest

from tests.fleet.fleetlib import SECRET, KnotPrimary, bind_key
from tests.resolverlib import free_port, query
from tests.support.cli import blocker

pytestmark = pytest.mark.integration

ORIGIN = "orange.rpz.blocker."
ORDER = """id: tx-{n}
court: Tribunal judiciaire de Paris
case_number: RG 26/{n}
decision_date: 2026-11-16
operators: [orange]
start: 2026-11-17T09:00:00+01:00
end: {end}
action: {action}
targets: [{names}]
"""
CONFIG = """orders_dir: {root}/orders
state_dir: {root}/var
zones_dir: {root}/zones
publish: {{check: structural, max_removal_share: 1}}
rpz: {{ttl: {ttl}}}
distribution:
  primary: {{kind: knot, listen: 127.0.0.1:{port}, control: {root}/knot.sock}}
  tsig_key: {root}/xfr.key
operators:
  orange:
    redirect: {{a: [192.0.2.80]}}
"""

Record = tuple[str, int, str, str]


@dataclass
class Primary:
    root: Path
    config: Path
    port: int
    knot: KnotPrimary

    def write_config(self, ttl: int = 60) -> None:
        self.config.write_text(CONFIG.format(root=self.root, port=self.port, ttl=ttl))

    def order(self, n: int, names: list[str], action: str = "nxdomain", end: str = "2027-10-12") -> None:
        text = ORDER.format(n=n, action=action, names=", ".join(names), end=end)
        (self.root / "orders" / f"tx-{n}.yaml").write_text(text)

    def expire(self, n: int, names: list[str]) -> None:
        """The order ended yesterday: its names go (a removal an order's end explains)."""
        self.order(n, names, end="2026-11-18")

    def apply(self, *extra: str) -> str:
        time.sleep(1.1)  # a new serial needs a later second
        proc = blocker("apply", *extra, config=self.config, cwd=self.root, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        audit = blocker("audit", "show", config=self.config, cwd=self.root).stdout
        return proc.stdout + audit

    def file_records(self) -> set[Record]:
        zone = dns.zone.from_file(str(self.root / "zones" / "orange.rpz"), ORIGIN, relativize=False)
        return _records(zone)

    def served_records(self) -> set[Record]:
        keyring = dns.tsigkeyring.from_text({"blocker-xfr": ("hmac-sha256", SECRET)})
        xfr = dns.query.xfr("127.0.0.1", ORIGIN, port=self.port, keyring=keyring, keyname="blocker-xfr",
                            keyalgorithm="hmac-sha256", timeout=10, lifetime=30, relativize=False)
        return _records(dns.zone.from_xfr(xfr, relativize=False))

    def served_serial(self) -> int:
        return int(query(self.port, ORIGIN, "SOA", timeout=1).answer[0][0].serial)

    def file_serial(self) -> int:
        zone = dns.zone.from_file(str(self.root / "zones" / "orange.rpz"), ORIGIN, relativize=False)
        return int(zone.get_rdataset(ORIGIN, "SOA")[0].serial)  # type: ignore[index]

    def assert_serves_the_file(self) -> None:
        deadline = time.monotonic() + 15
        while self.served_serial() != self.file_serial() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.served_serial() == self.file_serial()
        assert self.served_records() == self.file_records()


def _records(zone: dns.zone.Zone) -> set[Record]:
    return {(name.to_text(), rdataset.ttl, dns.rdatatype.to_text(rdataset.rdtype), rdata.to_text())
            for name, rdataset in zone.iterate_rdatasets() for rdata in rdataset}


@pytest.fixture()
def primary(tmp_path: Path) -> Iterator[Primary]:
    (tmp_path / "xfr.key").write_text(bind_key())
    os.chmod(tmp_path / "xfr.key", 0o600)
    (tmp_path / "orders").mkdir()
    p = Primary(tmp_path, tmp_path / "blocker.yaml", free_port(), None)  # type: ignore[arg-type]
    p.write_config()
    p.order(1, ["one.example.gg", "two.example.gg"])
    text = blocker("fleet", "primary-config", config=p.config, cwd=tmp_path).stdout
    p.knot = KnotPrimary(tmp_path / "knot", text, p.port, ORIGIN).start()
    try:
        yield p
    finally:
        p.knot.stop()


def test_every_change_reaches_the_primary_as_exactly_the_file(primary: Primary) -> None:
    out = primary.apply()
    assert "primary reloaded" in out  # a first publish: Knot loads the file
    primary.assert_serves_the_file()

    # Names added (each with its subdomains: a *. owner too; a redirect to A): one transaction.
    primary.order(2, ["added.example.gg", "wild.example.gg"])
    primary.order(3, ["redir.example.gg"], action="redirect")
    t0 = time.monotonic()
    out = primary.apply()
    assert "primary updated in one transaction" in out, out
    serial = primary.file_serial()
    while primary.served_serial() != serial and time.monotonic() - t0 < 10:
        time.sleep(0.01)
    assert primary.served_serial() == serial
    primary.assert_serves_the_file()
    assert ("redir.example.gg." + ORIGIN, 60, "A", "192.0.2.80") in primary.served_records()
    assert "zone file parsed" not in primary.knot.log_text().split("zone-begin")[-1]  # Knot never re-read it

    # Names removed and an action changed: unset + set in the same transaction.
    primary.expire(2, ["added.example.gg", "wild.example.gg"])
    primary.order(3, ["redir.example.gg"], action="nodata")
    assert "primary updated in one transaction" in primary.apply()
    primary.assert_serves_the_file()

    # knotd restarts from the file and its journal: same serial, same content, no new serial.
    serial = primary.file_serial()
    primary.knot.stop()
    primary.knot.start()
    assert primary.served_serial() == serial
    primary.assert_serves_the_file()
    assert "warning" not in primary.knot.log_text().split("server started")[-1]
    primary.order(4, ["after.example.gg"])  # and the next change is a transaction again
    assert "primary updated in one transaction" in primary.apply()
    primary.assert_serves_the_file()


def test_what_a_transaction_cannot_say_exactly_is_reloaded(primary: Primary) -> None:
    primary.apply()
    # The zone's shape changes (every record's TTL): no list of changed names says that.
    primary.write_config(ttl=90)
    primary.order(2, ["added.example.gg"])
    out = primary.apply()
    assert "primary reloaded" in out and "zone-reload because" in out, out
    primary.assert_serves_the_file()
    assert all(ttl == 90 for _, ttl, _, _ in primary.served_records())

    # Changed behind blocker's back (a record gone, the serial kept): the transaction that would
    # remove that record fails, is aborted, and the file is reloaded.
    sock, serial = str(primary.root / "knot.sock"), primary.served_serial()
    soa = f"localhost. hostmaster.localhost. {serial} 60 60 604800 30"
    for argv in (["zone-begin", ORIGIN], ["zone-unset", ORIGIN, "added.example.gg." + ORIGIN, "CNAME"],
                 ["zone-set", ORIGIN, "@", "90", "SOA", soa], ["zone-commit", ORIGIN]):
        subprocess.run(["knotc", "-s", sock, *argv], check=True, capture_output=True, timeout=10)
    primary.expire(2, ["added.example.gg"])
    out = primary.apply()
    assert "zone-reload because transaction failed" in out and "no such record" in out, out
    primary.assert_serves_the_file()

    # A change larger than a transaction is worth: reloaded.
    primary.order(4, [f"n{i}.bulk.example.gg" for i in range(1100)])
    out = primary.apply()
    assert "zone-reload because more than 1000 records change" in out, out
    primary.assert_serves_the_file()

    # And the next small change is a transaction again.
    primary.order(5, ["late.example.gg"])
    assert "primary updated in one transaction" in primary.apply()
    primary.assert_serves_the_file()


def test_a_zone_file_the_primary_refuses_fails_the_publish_and_the_old_zone_stays_served(primary: Primary) -> None:
    """The primary's load is the zone's full check when it is Knot (`publish.check: auto` is then
    structural in blocker): the reload waits for the load (`knotc -b`), so a file Knot refuses
    is a failed reload, not an `OK` for a queued event, and Knot keeps serving what it had."""
    from blocker.config.load import load_config
    from blocker.publish.primary import update_primary

    primary.apply()
    primary.assert_serves_the_file()
    serial = primary.served_serial()
    zone = primary.root / "zones" / "orange.rpz"
    zone.write_text(zone.read_text() + "bad..name CNAME .\n")
    config = load_config(primary.config)
    ok, message, argv = update_primary(config, config.operators["orange"], None, None)
    assert not ok and "exited 1" in message, message
    assert "-b" in argv
    assert primary.served_serial() == serial


def test_with_a_knot_primary_auto_checks_structurally_and_the_primary_loads_for_real(tmp_path: Path) -> None:
    from blocker.config.load import load_config

    (tmp_path / "xfr.key").write_text(bind_key())
    os.chmod(tmp_path / "xfr.key", 0o600)
    text = CONFIG.format(root=tmp_path, port=5399, ttl=60).replace("check: structural", "check: auto")
    (tmp_path / "knot.yaml").write_text(text)
    assert load_config(tmp_path / "knot.yaml").zone_check == "structural"
    (tmp_path / "named.yaml").write_text(text.replace("check: auto", "check: named-checkzone"))
    assert load_config(tmp_path / "named.yaml").zone_check == "named-checkzone"  # asked for: run it
    (tmp_path / "bind.yaml").write_text(text.replace("kind: knot, listen: 127.0.0.1:5399, control: "
                                                     f"{tmp_path}/knot.sock",
                                                     "kind: bind, listen: 127.0.0.1:5399, control: 127.0.0.1:9953"))
    assert load_config(tmp_path / "bind.yaml").zone_check == "auto"  # rndc reload does not wait for the load
