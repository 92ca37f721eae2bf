"""Knot Resolver follows the primary as `fleet secondary-config --kind knot-resolver` prints it:
a Knot DNS on the resolver host (its knot.conf, with the --listen and --dir given) transfers
the zone and writes the file that kresd's `policy.rpz(..., true)` watches; a publish that blocks
one more name reaches kresd's answers within seconds, with no reload command."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from blocker.fleet.secondary import KRESD_SPLIT
from tests.fleet.fleetlib import KnotPrimary, KresdSecondary, bind_key
from tests.resolverlib import AUTH_ADDRESS, AuthServer, ask, free_port, wait_for
from tests.support.cli import blocker

pytestmark = pytest.mark.integration

ORIGIN = "orange.rpz.blocker."
ORDER = """id: kr-{n}
court: Tribunal judiciaire de Paris
case_number: RG 26/{n}
decision_date: 2026-11-16
operators: [orange]
start: 2026-11-17T09:00:00+01:00
end: 2027-10-12
targets: [{name}]
"""


def test_kresd_follows_the_primary_through_a_local_knot_secondary(tmp_path: Path) -> None:
    (tmp_path / "xfr.key").write_text(bind_key())
    os.chmod(tmp_path / "xfr.key", 0o600)
    (tmp_path / "orders").mkdir()
    (tmp_path / "orders" / "one.yaml").write_text(ORDER.format(n=1, name="blocked.example.gg"))
    port, local, kport = free_port(), free_port(), free_port()
    config = tmp_path / "blocker.yaml"
    config.write_text(f"""orders_dir: {tmp_path}/orders
state_dir: {tmp_path}/var
zones_dir: {tmp_path}/zones
publish: {{check: structural}}
rpz: {{ttl: 2}}
distribution:
  primary: {{kind: knot, listen: 127.0.0.1:{port}, control: {tmp_path}/knot.sock}}
  tsig_key: {tmp_path}/xfr.key
operators:
  orange:
    secondaries:
      - {{address: 127.0.0.1:{local}, name: orange-kresd-host}}
""")
    folder = tmp_path / "kresd-host" / "knot"
    started: list[object] = []
    try:
        started.append(auth := AuthServer(tmp_path / "auth").start())
        text = blocker("fleet", "primary-config", config=config, cwd=tmp_path).stdout
        started.append(KnotPrimary(tmp_path / "primary", text, port, ORIGIN).start())
        assert blocker("apply", config=config, cwd=tmp_path).returncode == 0
        snippet = blocker("fleet", "secondary-config", "--operator", "orange", "--kind", "knot-resolver",
                          "--listen", f"127.0.0.1:{local}", "--dir", str(folder), config=config, cwd=tmp_path)
        assert snippet.returncode == 0, snippet.stderr
        knot_conf, lua = snippet.stdout.split(KRESD_SPLIT + "\n")
        assert "secret" not in snippet.stdout
        (folder / "run").mkdir(parents=True)
        started.append(KnotPrimary(folder, knot_conf, local, ORIGIN).start())
        zone_file = folder / "orange.rpz"
        wait_for(zone_file.exists, timeout=15, interval=0.1, what="the local secondary writes the zone file")
        started.append(kresd := KresdSecondary(tmp_path / "kresd", lua, auth.address, kport).start())
        wait_for(lambda: ask(kresd.port, "blocked.example.gg").rcode == "NXDOMAIN", timeout=15, interval=0.2,
                 what="kresd blocks the first name")
        assert AUTH_ADDRESS in ask(kresd.port, "added.example.gg").addresses  # not blocked yet

        (tmp_path / "orders" / "two.yaml").write_text(ORDER.format(n=2, name="added.example.gg"))
        time.sleep(1.1)
        assert blocker("apply", config=config, cwd=tmp_path).returncode == 0
        t0 = time.monotonic()
        wait_for(lambda: ask(kresd.port, "added.example.gg").rcode == "NXDOMAIN", timeout=15, interval=0.1,
                 what="kresd blocks the newly blocked name")
        assert time.monotonic() - t0 < 10
        assert ask(kresd.port, "blocked.example.gg").rcode == "NXDOMAIN"
    finally:
        for proc in reversed(started):
            proc.stop()  # type: ignore[attr-defined]
