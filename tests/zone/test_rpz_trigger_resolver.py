"""Issue 9 §1 on a real Unbound: an order naming an RPZ trigger (`32.1.0.0.127.rpz-client-ip`, which
would black-hole every query from 127.0.0.1) is refused, nothing is written, and Unbound keeps
answering a control name from 127.0.0.1. The same trigger written into the zone by hand shows what
the refusal prevents, so this test would fail if the order reached the zone.
"""

from __future__ import annotations

from pathlib import Path

from blocker.zone.read import read_meta
from tests.resolverlib import TEST_ORIGINS, base_rules, rpz_zone, write_atomically
from tests.zone.test_rpz_resolvers import ACTIVE, blocker, order_yaml, reload_and_wait, restore_base_rules

ORANGE, FREE = TEST_ORIGINS
CONTROL = "open.example.gg"
TRIGGER = "32.1.0.0.127.rpz-client-ip"
CONFIG = f"timezone: Europe/Paris\npublish: {{check: named-checkzone}}\noperators:\n" \
         f"  orange: {{origin: {ORANGE}}}\n  free: {{origin: {FREE}}}\n"


def test_a_client_ip_trigger_never_reaches_unbound(unbound, rpz_zones_dir: Path, tmp_path: Path):
    (tmp_path / "blocker.yaml").write_text(CONFIG)
    orders = tmp_path / "orders"
    orders.mkdir()
    (orders / "good.yaml").write_text(order_yaml("good", "[orange]", "nxdomain", ["blocked.example.gg"]))
    (orders / "bad.yaml").write_text(order_yaml("bad", "[orange]", "nxdomain", ["ok.example.gg", TRIGGER]))
    zone = rpz_zones_dir / "orange.rpz"
    try:
        before = zone.read_bytes()
        assert unbound.ask(CONTROL).rcode == "NOERROR"

        proc = blocker("--config", "blocker.yaml", "validate", "--orders", str(orders), cwd=tmp_path)
        assert proc.returncode == 1
        assert f"{orders / 'bad.yaml'}: targets[1]: '{TRIGGER}' has the label 'rpz-client-ip'" in proc.stdout
        assert "(line 11)" in proc.stdout

        proc = blocker("--config", "blocker.yaml", "render", "--orders", str(orders), "--out", str(rpz_zones_dir),
                       "--at", ACTIVE, cwd=tmp_path)
        assert proc.returncode == 1 and "nothing written" in proc.stderr, proc.stderr
        assert zone.read_bytes() == before
        unbound.reload(ORANGE)
        assert unbound.ask(CONTROL).rcode == "NOERROR"  # from 127.0.0.1, as every test query

        # The good order alone is published, blocks its name, and the control still resolves.
        (orders / "bad.yaml").unlink()
        proc = blocker("--config", "blocker.yaml", "render", "--orders", str(orders), "--out", str(rpz_zones_dir),
                       "--at", ACTIVE, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert TRIGGER not in zone.read_text()
        reload_and_wait(unbound, rpz_zones_dir)
        assert unbound.ask("blocked.example.gg").rcode == "NXDOMAIN"
        assert unbound.ask(CONTROL).rcode == "NOERROR"

        # What the refusal prevents: the same trigger in the zone black-holes 127.0.0.1.
        meta = read_meta(zone)
        assert meta is not None
        write_atomically(zone, rpz_zone(ORANGE, {**base_rules(ORANGE), TRIGGER: "CNAME ."}, serial=meta.serial + 1))
        unbound.reload(ORANGE)  # (not reload_and_wait: the canary itself is black-holed now)
        unbound.wait_for(lambda r: r.ask(CONTROL).rcode == "NXDOMAIN", timeout=5, what="the black hole")
        assert unbound.ask("www.example.gg").rcode == "NXDOMAIN"
    finally:
        restore_base_rules(rpz_zones_dir, [unbound])
    assert unbound.ask(CONTROL).rcode == "NOERROR"
