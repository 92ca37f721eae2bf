"""A zone file changed behind the daemon's back is rewritten from the state at its next watch tick.

Real `blocker run` processes (tests/test_daemon.py's harness), watch_interval 1 s and a periodic
reconcile far away (60 s), so only the zone watch can put the file back. The file is edited,
truncated (`truncate -s -100`: the header stays), emptied, deleted, replaced by a symlink or a
folder; each time the zone must be back within a tick, audited `zone-restored` with the old and
new digests, logged as a warning. A folder that cannot be replaced keeps /healthz at 503 until
it is gone. On a real Unbound, a tampered zone that the resolver loaded is replaced and reloaded.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.resolverlib import Unbound, base_rules, canary_name
from tests.support.audit import events, verify_audit
from tests.support.daemon import Env, wait_until, write_config
from tests.support.orders import whole_second, write_order
from tests.support.zones import ORANGE, unbound_publish_fresh, zone_owners

TICK = 1.0  # daemon.watch_interval
RESTORE_WITHIN = TICK + 2.0  # a tick, then a reconcile and a write, on a loaded machine


@pytest.fixture
def tenv(env: Env) -> Env:
    return env


def state_digest(state: Path, operator: str = "orange") -> str:
    with sqlite3.connect(f"file:{state / 'state.sqlite3'}?mode=ro", uri=True) as db:
        (digest,) = db.execute("SELECT digest FROM zones WHERE operator=?", (operator,)).fetchone()
    return str(digest)


def body(data: bytes) -> bytes:
    """The zone without its serial (a restore publishes the same content under the next serial)."""
    return re.sub(rb"\b\d{9,10}\b", b"SERIAL", data)


def whole(path: Path, expected: bytes, state: Path) -> bool:
    """The file is a regular file holding `expected` (serial aside), and what the state published."""
    try:
        if path.is_symlink() or not path.is_file():
            return False
        data = path.read_bytes()
    except OSError:
        return False
    return body(data) == body(expected) and hashlib.sha256(data).hexdigest() == state_digest(state)


def _edit(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"kept.example.gg CNAME .", b"kept.example.gg CNAME rpz-passthru."))


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 100)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _delete(path: Path) -> None:
    path.unlink()


def _symlink(path: Path) -> None:
    other = path.with_name("other.txt")
    other.write_text("$ORIGIN evil.\n")
    path.unlink()
    path.symlink_to(other)


def _folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


DAMAGES: dict[str, Callable[[Path], None]] = {
    "edited": _edit, "truncated": _truncate, "emptied": _empty, "deleted": _delete, "symlink": _symlink,
    "empty-folder": _folder,
}


def start(tenv: Env, operators: dict | None = None) -> tuple[object, Path]:
    config = write_config(tenv.root / "blocker.yaml", operators or {"orange": {}}, reconcile=60, watch=TICK)
    write_order(tenv.orders, "kept", whole_second(-3600), whole_second(3600),
                ["kept.example.gg", "other.example.gg"])
    daemon = tenv.start(config)
    wait_until(lambda: "kept.example.gg" in zone_owners(tenv.zone()), time.time() + 3, "published")
    return daemon, config


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_tampered_zone_file_is_rewritten_at_the_next_watch_tick(tenv: Env, damage: str) -> None:
    daemon, _ = start(tenv)
    path = tenv.zone()
    good = path.read_bytes()
    published = state_digest(tenv.state)
    assert hashlib.sha256(good).hexdigest() == published
    DAMAGES[damage](path)
    damaged_at = time.time()
    seen = wait_until(lambda: whole(path, good, tenv.state), damaged_at + RESTORE_WITHIN, f"{damage} zone restored")
    print(f"\n[tamper] {damage}: restored {seen - damaged_at:.2f} s after the damage")
    wait_until(lambda: daemon.health()[0] == 200, time.time() + 2, f"healthz 200 {daemon.health()}")
    assert daemon.stop() == 0
    (restored,) = events(verify_audit(tenv.state), "zone-restored")
    assert restored["operator"] == "orange" and restored["published_sha256"] == published
    assert restored["found_sha256"] != published
    assert restored["new_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() == state_digest(tenv.state)
    assert "WARNING" in daemon.log() and "zone file is not what was published" in daemon.log()


def test_healthz_is_503_while_the_zone_cannot_be_restored_and_200_once_it_is(tenv: Env) -> None:
    daemon, _ = start(tenv)
    path = tenv.zone()
    good = path.read_bytes()
    assert daemon.health()[0] == 200
    path.unlink()
    path.mkdir()
    (path / "someone-elses.txt").write_text("not ours to delete\n")       # cannot be replaced
    wait_until(lambda: daemon.health()[0] == 503, time.time() + RESTORE_WITHIN, "healthz 503")
    _status, health = daemon.health()
    assert any("orange" in reason for reason in health["reasons"]), health
    time.sleep(2 * TICK)                                                   # still not restorable: still 503
    assert daemon.health()[0] == 503 and (path / "someone-elses.txt").exists()
    shutil.rmtree(path)
    gone = time.time()
    wait_until(lambda: whole(path, good, tenv.state), gone + RESTORE_WITHIN, "restored once the folder is gone")
    wait_until(lambda: daemon.health()[0] == 200, time.time() + 2, "healthz 200 again")
    assert daemon.stop() == 0
    records = verify_audit(tenv.state)
    assert events(records, "publish-failed")                              # the failed rewrite is on record
    assert events(records, "zone-restored")


def test_a_tampered_zone_loaded_by_unbound_is_restored_and_reloaded(tenv: Env, unbound: Unbound) -> None:
    name = "open.example.gg"
    zone_path = unbound.zone(ORANGE).path
    unbound_publish_fresh(unbound, {})
    try:
        tenv.zones = zone_path.parent
        config = write_config(tenv.root / "blocker.yaml", {"orange": {
            "reload": {"kind": "unbound", "key_file": str(unbound.conf_path)},
        }}, reconcile=60, watch=TICK)
        write_order(tenv.orders, "kept", whole_second(-3600), whole_second(3600), [name])
        daemon = tenv.start(config)
        unbound.wait_rcode(name, "NXDOMAIN")
        good = zone_path.read_bytes()
        # Someone drops the block from the file and makes Unbound load it: the name resolves.
        zone_path.write_bytes(b"".join(line for line in good.splitlines(keepends=True)
                                       if not line.startswith((name.encode(), f"*.{name}".encode()))))
        unbound.reload(ORANGE)
        tampered = time.time()
        seen = wait_until(lambda: unbound.ask(name, timeout=0.5).rcode == "NXDOMAIN",
                          tampered + RESTORE_WITHIN, "Unbound blocks again")
        print(f"\n[tamper] Unbound blocks again {seen - tampered:.2f} s after the tampered zone was loaded")
        assert whole(zone_path, good, tenv.state)
        assert daemon.stop() == 0
        assert events(verify_audit(tenv.state), "zone-restored")
    finally:
        for daemon in tenv.daemons:
            daemon.kill()
        unbound.publish(ORANGE, base_rules(ORANGE), 1)
        unbound.wait_for(lambda r: r.canary_serial(canary_name(ORANGE)) == 1, what="base rules back")
        unbound.wait_rcode("blocked.example.gg", "NXDOMAIN")
