"""Issue 9 section 3: torn records, a full disk, and the order of writes.

The whole class of damaged ends (any cut point of a valid trail, any prefix of an append in
flight) is repaired the same way: the damaged bytes go to audit.quarantine/, an `audit-repaired`
record chains to the last whole record, and `audit verify` says whether something committed was
lost. Full disks are real: a tmpfs of a few hundred KB mounted for the test (and RLIMIT_FSIZE in a
child process for a write cut at an exact byte). Commands and daemons are real processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import blocker.record.audit as audit_mod
from blocker.record.audit import AuditLog, AuditWriteError, verify_live
from blocker.record.verify import REPAIRED, canonical, checked_lines, record_hash
from tests.record.test_audit import blocker as blocker_cli
from tests.support.audit import events
from tests.support.cli import blocker as run_blocker
from tests.support.daemon import Env, wait_until
from tests.support.orders import whole_second, write_order
from tests.support.properties import examples
from tests.support.zones import zone_owners

pytestmark = pytest.mark.integration  # most tests here run blocker, a daemon or a child process

ORDER = """\
id: {id}
court: Tribunal judiciaire de Paris
case_number: RG 91/00001
decision_date: 2091-01-09
operators: [orange]
start: 2026-01-01T00:00:00+01:00
end: 2099-01-01T00:00:00+01:00
targets: [{id}.example]
"""
CONFIG = """\
timezone: Europe/Paris
publish: {check: structural}
operators:
  orange: {name: Orange, reload: {kind: none}}
"""


# ------------------------------------------------------------------------------------------
# helpers


def trail(folder: Path, n: int = 6) -> AuditLog:
    log = AuditLog(folder, actor="test")
    for i in range(n):
        log.append("note", {"i": i, "text": "x" * (i * 7)})
    return log


def whole_lines(log: AuditLog) -> list[dict[str, Any]]:
    """Every line, each asserted whole and chained (the file ends on a whole record)."""
    data = log.path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "the log ends torn"
    lines = list(checked_lines(log.path))
    assert all(line.bad_line is None for line in lines), [line.problem for line in lines if line.bad_line][:1]
    return [line.record for line in lines if line.record is not None]


def repairs(log: AuditLog) -> list[dict[str, Any]]:
    return [r["data"] for r in whole_lines(log) if r["event"] == REPAIRED]


def quarantined(state: Path, repair: dict[str, Any]) -> bytes:
    data = (state / repair["quarantine"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == repair["sha256"] and len(data) == repair["size"]
    return data


def next_line(log: AuditLog) -> bytes:
    """The bytes the next record of `log` would have: what an append in flight writes."""
    seq, prev = log._tail()
    record: dict[str, Any] = {"seq": seq + 1, "ts": "2026-01-01T00:00:00.000000+00:00", "actor": "test",
                              "event": "note", "data": {"in": "flight"}, "prev": prev}
    record["hash"] = record_hash(record)
    return canonical(record) + b"\n"


# ------------------------------------------------------------------------------------------
# the whole class of torn ends (property tests)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_cut_into_a_committed_trail_is_repaired_and_reported_as_a_removal(tmp_path_factory: Any,
                                                                              data: st.DataObject) -> None:
    state = tmp_path_factory.mktemp("cut")
    log = trail(state)
    original = log.path.read_bytes()
    cut = data.draw(st.integers(0, len(original)), label="cut")
    os.truncate(log.path, cut)
    if cut == len(original):
        assert log.repair() is None and verify_live(log).ok
        return
    assert not verify_live(log, retry_delay=0).ok  # before the repair: damaged
    log.append("after", {"work": "goes on"})
    records = whole_lines(log)
    assert records[-1]["event"] == "after"
    [repair] = repairs(log)
    kept = original[:cut].rfind(b"\n") + 1  # the log keeps whole records only
    assert log.path.read_bytes().startswith(original[:kept])
    assert repair["offset"] == kept and repair["committed"] is True
    if cut > kept:  # into a record: its bytes are evidence
        assert quarantined(state, repair) == original[kept:cut]
    else:  # whole records cut off: nothing to keep, the head file told
        assert repair["quarantine"] is None and repair["size"] == 0
    result = verify_live(log)
    assert not result.ok and "committed records were removed" in result.reason
    assert result.bad_line == repair["last_seq"] + 1 and len(result.repairs) == 1


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_prefix_of_an_append_in_flight_is_repaired_and_the_trail_stays_intact(tmp_path_factory: Any,
                                                                                 data: st.DataObject) -> None:
    state = tmp_path_factory.mktemp("torn")
    log = trail(state, data.draw(st.integers(0, 5), label="records"))
    line = next_line(log)
    torn = line[: data.draw(st.integers(1, len(line) - 1), label="written")]
    if data.draw(st.booleans(), label="zero-filled"):  # a crash that kept the size, not the bytes
        torn = b"\0" * len(torn)
    with log.path.open("ab") as fh:
        fh.write(torn)
    before = verify_live(log, retry_delay=0)
    assert not before.ok and "not yet repaired" in before.reason
    repaired = log.repair()
    assert repaired is not None and repaired["event"] == REPAIRED
    [repair] = repairs(log)
    assert repair["committed"] is False and quarantined(state, repair) == torn
    log.append("after", {})
    result = verify_live(log)
    assert result.ok and result.count == len(whole_lines(log)) and len(result.repairs) == 1
    assert log.repair() is None  # idempotent: a whole end is left alone


def test_a_garbage_last_line_with_its_end_of_line_is_moved_aside_too(tmp_path: Path) -> None:
    log = trail(tmp_path)
    with log.path.open("ab") as fh:
        fh.write(b"not json at all\n{\"seq\": \"x\"}\n")
    log.append("after", {})
    [repair] = repairs(log)
    assert quarantined(tmp_path, repair) == b"not json at all\n{\"seq\": \"x\"}\n"
    assert repair["committed"] is False  # the head had not counted them: nothing reported was lost
    assert verify_live(log).ok


def test_a_head_file_behind_the_log_is_a_crash_before_its_update_not_damage(tmp_path: Path) -> None:
    log = trail(tmp_path)
    lines = log.path.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[-2])
    log._write_head(record["seq"], record["hash"])  # crash after the write, before the head update
    assert verify_live(log).ok
    log.append("after", {})
    assert repairs(log) == [] and verify_live(log).ok


def test_a_missing_or_altered_quarantine_file_fails_verify(tmp_path: Path) -> None:
    log = trail(tmp_path)
    with log.path.open("ab") as fh:
        fh.write(next_line(log)[:30])
    log.append("after", {})
    [repair] = repairs(log)
    path = tmp_path / repair["quarantine"]
    path.write_bytes(path.read_bytes() + b"x")
    assert "does not match its SHA-256" in verify_live(log).reason
    path.unlink()
    assert "missing" in verify_live(log).reason


# ------------------------------------------------------------------------------------------
# short writes


def test_short_writes_are_retried_until_the_whole_record_is_written(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.write
    calls: list[int] = []

    def dribble(fd: int, data: bytes | memoryview) -> int:  # what a signal or a full pipe does
        calls.append(len(data))
        return real(fd, bytes(data[:7]))

    monkeypatch.setattr(audit_mod.os, "write", dribble)
    log = trail(tmp_path, 3)
    monkeypatch.setattr(audit_mod.os, "write", real)
    assert len(calls) > 30 and verify_live(log).ok and len(whole_lines(log)) == 3


RLIMIT_CHILD = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    from blocker.record.audit import AuditLog, AuditWriteError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG, or writes short
    log = AuditLog(Path(sys.argv[1]), actor="test")
    size = log.path.stat().st_size
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + int(sys.argv[2]), resource.RLIM_INFINITY))
    try:
        log.append("big", {"pad": "y" * 500})
    except AuditWriteError as exc:
        print(exc)
        sys.exit(5)
    sys.exit(0)
""")


@pytest.mark.parametrize("room", [0, 1, 37, 300])
def test_a_write_cut_at_any_byte_by_rlimit_fsize_fails_cleanly_on_a_whole_record(tmp_path: Path, room: int) -> None:
    log = trail(tmp_path, 4)
    before = log.path.read_bytes()
    child = subprocess.run([sys.executable, "-c", RLIMIT_CHILD, str(tmp_path), str(room)], capture_output=True,
                           text=True, timeout=30)
    assert child.returncode == 5, child.stdout + child.stderr
    assert "cannot write record 5 (big)" in child.stdout and "too large" in child.stdout.lower()
    assert log.path.read_bytes() == before  # truncated back: never torn by us
    assert verify_live(log).ok
    log.append("after", {})
    assert repairs(log) == [] and verify_live(log).ok


# ------------------------------------------------------------------------------------------
# a real full disk


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs (8 MB) mounted for this test (the tests run as root, like the daemon does)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"cannot mount a tmpfs (run the tests as root): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Write a filler file until the file system is full; remove it to free the space."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (65536, 4096, 1):  # down to the last byte of the last page
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size) > 0:
                    pass
    finally:
        os.close(fd)
    return filler


def pad_page(log: AuditLog) -> None:
    """Leave the log's last page (tmpfs allocates whole pages) with less room than a record needs, so
    that on a full disk the next append is cut mid-record rather than fitting in that room."""
    page = os.statvfs(log.dir).f_bsize
    for _ in range(3):
        room = page - log.path.stat().st_size % page
        if room < 200:
            return
        # A record takes ~250 bytes more than its data: too little room, cross into the next page.
        log.append("pad", {"p": "z" * (room - 300 if room >= 400 else 500)})
    raise AssertionError("could not fill the last page")


def test_a_full_disk_mid_record_truncates_back_then_work_goes_on(small_fs: Path) -> None:
    log = trail(small_fs, 3)
    pad_page(log)
    before = log.path.read_bytes()
    filler = fill(small_fs)
    with pytest.raises(AuditWriteError, match="No space left on device"):
        log.append("big", {"pad": "y" * 2000})
    assert log.path.read_bytes() == before and before.endswith(b"\n")
    assert log.last_error is not None and log.write_failures == 1
    filler.unlink()
    log.append("big", {"pad": "y" * 2000})
    assert log.last_error is None and repairs(log) == [] and verify_live(log).ok


def test_a_torn_end_is_not_destroyed_when_its_quarantine_cannot_be_written(small_fs: Path) -> None:
    log = trail(small_fs, 3)
    torn = next_line(log)[:50]
    with log.path.open("ab") as fh:
        fh.write(torn)
    filler = fill(small_fs)
    with pytest.raises(AuditWriteError):
        log.append("after", {})
    assert log.path.read_bytes().endswith(torn)  # the evidence stays where it was
    filler.unlink()
    log.append("after", {})
    [repair] = repairs(log)
    assert quarantined(small_fs, repair) == torn and verify_live(log).ok


# ------------------------------------------------------------------------------------------
# write-ahead


def _config(root: Path, state: Path) -> Any:
    from blocker.config.load import load_config

    (root / "config.yaml").write_text(CONFIG)
    return load_config(root / "config.yaml").with_paths(orders_dir=root / "orders", state_dir=state,
                                                        zones_dir=root / "zones")


def test_an_order_whose_receipt_cannot_be_written_stays_unknown_and_is_recorded_later(tmp_path: Path,
                                                                                     small_fs: Path) -> None:
    from blocker.orders.load import load_orders
    from blocker.publish.reconcile import effective_orders
    from blocker.record.state import State

    config = _config(tmp_path, tmp_path / "state")
    (tmp_path / "orders").mkdir()
    (tmp_path / "orders" / "one.yaml").write_text(ORDER.format(id="one"))
    state, log = State(tmp_path / "state"), AuditLog(small_fs, actor="test")
    log.append("start", {})
    pad_page(log)
    filler = fill(small_fs)
    now = datetime.now(UTC)
    with pytest.raises(AuditWriteError):
        effective_orders(load_orders(config.orders_dir, config.order_rules), config, state, log, now)
    assert "one" not in state.last_good()  # the receipt is not on disk: the version is not known
    filler.unlink()
    effective_orders(load_orders(config.orders_dir, config.order_rules), config, state, log, now)
    assert "one" in state.last_good()
    assert [r["data"]["order"] for r in whole_lines(log) if r["event"] == "order-added"] == ["one"]
    state.close()


def test_no_zone_is_renamed_into_place_before_its_records_are_durable(tmp_path: Path, small_fs: Path) -> None:
    from blocker.orders.load import load_orders
    from blocker.publish.plan import compute_plan
    from blocker.publish.reconcile import effective_orders, publish_plan
    from blocker.record.state import State

    config = _config(tmp_path, tmp_path / "state")
    (tmp_path / "orders").mkdir()
    (tmp_path / "orders" / "one.yaml").write_text(ORDER.format(id="one"))
    state, log = State(tmp_path / "state"), AuditLog(small_fs, actor="test")
    now = datetime.now(UTC)
    eff = effective_orders(load_orders(config.orders_dir, config.order_rules), config, state, log, now)
    plan = compute_plan(eff.orders, now, config, config.zones_dir)
    pad_page(log)
    filler = fill(small_fs)
    with pytest.raises(AuditWriteError):
        publish_plan(plan, config, config.zones_dir, state, log, now=now)
    assert not (config.zones_dir / "orange.rpz").exists()  # nothing published
    assert list(config.zones_dir.iterdir()) == []  # and no temp file left behind
    assert state.zone("orange") is None
    filler.unlink()
    publish_plan(plan, config, config.zones_dir, state, log, now=now)
    assert "one.example" in (config.zones_dir / "orange.rpz").read_text()
    kinds = [r["event"] for r in whole_lines(log)]
    assert kinds.index("zone-published") < kinds.index("reload")
    state.close()


# ------------------------------------------------------------------------------------------
# `blocker audit verify`, `blocker apply` and a real daemon on damaged trails


def _cli_trail(root: Path) -> Path:
    """A real trail: one `blocker apply` of one order."""
    (root / "config.yaml").write_text(CONFIG)
    (root / "orders").mkdir()
    (root / "orders" / "one.yaml").write_text(ORDER.format(id="one"))
    done = blocker_cli("apply", "--orders", "orders", "--out", "zones", "--state-dir", "state", cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "state"


def _apply_new_order(root: Path, order_id: str) -> subprocess.CompletedProcess[str]:
    (root / "orders" / f"{order_id}.yaml").write_text(ORDER.format(id=order_id))
    return blocker_cli("apply", "--orders", "orders", "--out", "zones", "--state-dir", "state", cwd=root)


def _verify(root: Path) -> subprocess.CompletedProcess[str]:
    return blocker_cli("audit", "verify", "--state-dir", "state", cwd=root)


def _swap(lines: list[bytes]) -> list[bytes]:
    lines[2], lines[3] = lines[3], lines[2]
    return lines


DAMAGES = {
    "clean": (lambda lines: lines, 0, "audit trail intact"),
    "edited": (lambda lines: [*lines[:2], lines[2].replace(b"one.example", b"onf.example"), *lines[3:]], 1,
               "BROKEN at line 3"),
    "removed": (lambda lines: [*lines[:2], *lines[3:]], 1, "BROKEN at line 3"),
    "reordered": (_swap, 1, "BROKEN at line 3"),
    "whole records cut (head)": (lambda lines: lines[:-2], 1, "records were cut off"),
    "torn append in flight": (lambda lines: [*lines, lines[-1][:40]], 1, "not yet repaired"),
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_verify_exit_codes_for_each_kind_of_damage(tmp_path: Path, damage: str) -> None:
    state = _cli_trail(tmp_path)
    change, code, says = DAMAGES[damage]
    log = state / "audit.jsonl"
    log.write_bytes(b"".join(change(log.read_bytes().splitlines(keepends=True))))
    done = _verify(tmp_path)
    assert done.returncode == code and says in done.stdout, done.stdout


def test_apply_repairs_a_torn_append_and_verify_prints_the_repair_and_exits_0(tmp_path: Path) -> None:
    state = _cli_trail(tmp_path)
    log = AuditLog(state)
    torn = next_line(log)[:60]
    with log.path.open("ab") as fh:
        fh.write(torn)
    done = _apply_new_order(tmp_path, "two")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "two.example" in zone_owners(tmp_path / "zones" / "orange.rpz")
    [repair] = repairs(log)
    assert quarantined(state, repair) == torn and repair["committed"] is False
    verified = _verify(tmp_path)
    assert verified.returncode == 0, verified.stdout
    line = next(x for x in verified.stdout.splitlines() if x.startswith("repair at "))
    assert repair["quarantine"] in line and repair["sha256"] in line and f"quarantined {len(torn)} bytes" in line
    assert "uncommitted, nothing lost" in line and "audit trail intact" in verified.stdout


def test_truncate_40_then_apply_publishes_and_verify_reports_the_removal(tmp_path: Path) -> None:
    state = _cli_trail(tmp_path)
    original = (state / "audit.jsonl").read_bytes()
    subprocess.run(["truncate", "-s", "-40", str(state / "audit.jsonl")], check=True)
    done = _apply_new_order(tmp_path, "two")
    assert done.returncode == 0, done.stdout + done.stderr  # was 70 (JSONDecodeError in _tail)
    assert "two.example" in zone_owners(tmp_path / "zones" / "orange.rpz")
    [repair] = repairs(AuditLog(state))
    kept = original[:-40].rfind(b"\n") + 1
    assert quarantined(state, repair) == original[kept:-40] and repair["committed"] is True
    verified = _verify(tmp_path)
    assert verified.returncode == 1, verified.stdout
    assert "committed records were removed" in verified.stdout and repair["sha256"] in verified.stdout
    assert "a removal" in verified.stdout


def test_the_evidence_pack_verifier_judges_repairs_like_audit_verify(tmp_path: Path) -> None:
    state = _cli_trail(tmp_path)
    log = AuditLog(state)
    with log.path.open("ab") as fh:
        fh.write(next_line(log)[:60])
    assert _apply_new_order(tmp_path, "two").returncode == 0
    pack = tmp_path / "pack"
    done = blocker_cli("evidence", "one", "--orders", "orders", "--state-dir", "state", "--out", str(pack),
                       cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    run = subprocess.run([sys.executable, str(pack / "verify.py"), "--log", str(log.path)], capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 0 and "repair at" in run.stdout, run.stdout
    [repair] = repairs(log)
    (state / repair["quarantine"]).write_bytes(b"altered")
    run = subprocess.run([sys.executable, str(pack / "verify.py"), "--log", str(log.path)], capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 1 and "does not match its SHA-256" in run.stdout, run.stdout
    assert _verify(tmp_path).returncode == 1


def test_apply_with_a_full_state_disk_exits_5_publishes_nothing_then_goes_on(tmp_path: Path,
                                                                            small_fs: Path) -> None:
    (tmp_path / "config.yaml").write_text(CONFIG)
    (tmp_path / "orders").mkdir()
    (tmp_path / "orders" / "one.yaml").write_text(ORDER.format(id="one"))
    state = small_fs / "state"

    def apply() -> subprocess.CompletedProcess[str]:
        return blocker_cli("apply", "--orders", "orders", "--out", "zones", "--state-dir", str(state), cwd=tmp_path)

    assert apply().returncode == 0
    zone = (tmp_path / "zones" / "orange.rpz").read_bytes()
    pad_page(AuditLog(state))
    filler = fill(small_fs)
    (tmp_path / "orders" / "two.yaml").write_text(ORDER.format(id="two"))
    done = apply()
    assert done.returncode == 5, done.stdout + done.stderr
    # One line, whichever of the trail or the state (SQLite) found the disk full first.
    assert len(done.stderr.splitlines()) == 1 and "cannot be written" in done.stderr, done.stderr
    assert (tmp_path / "zones" / "orange.rpz").read_bytes() == zone  # the previous zone keeps serving
    assert (state / "audit.jsonl").read_bytes().endswith(b"\n")
    filler.unlink()
    done = apply()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "two.example" in zone_owners(tmp_path / "zones" / "orange.rpz")
    records = whole_lines(AuditLog(state))
    assert [r["data"]["order"] for r in records if r["event"] == "order-added"] == ["one", "two"]
    assert _verify_dir(state).returncode == 0


def _verify_dir(state: Path) -> subprocess.CompletedProcess[str]:
    return run_blocker("audit", "verify", "--state-dir", str(state), cwd=state)




def test_a_daemon_starts_on_a_truncated_trail_repairs_it_and_publishes(env: Env) -> None:
    config = env.config(reconcile=3600)
    write_order(env.orders, "first", whole_second(-3600), whole_second(3600), ["first.example.gg"])
    assert env.run_cli("apply", config=config).returncode == 0
    subprocess.run(["truncate", "-s", "-40", str(env.state / "audit.jsonl")], check=True)
    daemon = env.start(config)
    write_order(env.orders, "second", whole_second(-3600), whole_second(3600), ["second.example.gg"])
    wait_until(lambda: "second.example.gg" in zone_owners(env.zone()), time.time() + 5, "second published")
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0
    log = AuditLog(env.state)
    [repair] = repairs(log)
    assert repair["size"] > 0 and quarantined(env.state, repair)
    records = whole_lines(log)
    assert records[[r["event"] for r in records].index(REPAIRED) + 1]["event"] == "daemon-start"
    assert events(records, "order-added")[-1]["order"] == "second"


def test_a_daemon_on_a_full_disk_is_503_publishes_nothing_then_catches_up(env: Env, small_fs: Path) -> None:
    env.state = small_fs / "state"
    config = env.config(reconcile=1)
    write_order(env.orders, "first", whole_second(-3600), whole_second(3600), ["first.example.gg"])
    daemon = env.start(config)
    assert daemon.health()[0] == 200 and daemon.metric("blocker_audit_writable") == 1
    zone = env.zone().read_bytes()
    pad_page(AuditLog(env.state))
    filler = fill(small_fs)
    write_order(env.orders, "second", whole_second(-3600), whole_second(3600), ["second.example.gg"])
    wait_until(lambda: daemon.health()[0] == 503, time.time() + 5, "503")
    _status, health = daemon.health()
    assert any(r.startswith("audit trail cannot be written") and "No space left" in r for r in health["reasons"])
    assert daemon.metric("blocker_audit_writable") == 0
    assert (daemon.metric("blocker_audit_write_failures_total") or 0) >= 1
    time.sleep(1.5)  # a periodic reconcile too: still nothing published
    assert env.zone().read_bytes() == zone and (env.state / "audit.jsonl").read_bytes().endswith(b"\n")
    assert daemon.proc.poll() is None
    filler.unlink()
    wait_until(lambda: "second.example.gg" in zone_owners(env.zone()), time.time() + 5, "second published")
    wait_until(lambda: daemon.health()[0] == 200, time.time() + 5, "healthy again")
    assert daemon.metric("blocker_audit_writable") == 1
    assert daemon.stop() == 0
    records = whole_lines(AuditLog(env.state))
    [back] = events(records, "audit-writable")
    assert "No space left" in back["error"] and back["since"]
    assert [e["order"] for e in events(records, "order-added")] == ["first", "second"]
    assert _verify_dir(env.state).returncode == 0


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Files made immutable (chattr +i: not even root may write them), made writable again after."""
    paths: list[Path] = []
    try:
        yield paths
    finally:
        for path in paths:
            subprocess.run(["chattr", "-i", str(path)], check=False)


def test_apply_with_an_unwritable_trail_exits_5_and_the_order_stays_unknown(tmp_path: Path,
                                                                           immutable: list[Path]) -> None:
    state = _cli_trail(tmp_path)
    zone = (tmp_path / "zones" / "orange.rpz").read_bytes()
    immutable.append(state / "audit.jsonl")
    subprocess.run(["chattr", "+i", str(state / "audit.jsonl")], check=True)
    done = _apply_new_order(tmp_path, "two")
    assert done.returncode == 5, done.stdout + done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()] and "audit trail cannot be written" in done.stderr
    assert "Operation not permitted" in done.stderr
    assert (tmp_path / "zones" / "orange.rpz").read_bytes() == zone
    subprocess.run(["chattr", "-i", str(state / "audit.jsonl")], check=True)
    done = blocker_cli("apply", "--orders", "orders", "--out", "zones", "--state-dir", "state", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "two.example" in zone_owners(tmp_path / "zones" / "orange.rpz")
    added = [r["data"]["order"] for r in whole_lines(AuditLog(state)) if r["event"] == "order-added"]
    assert added == ["one", "two"]  # recorded at the second apply: the first had not made it known


# ------------------------------------------------------------------------------------------
# concurrency: one chain, several writers, readers while they write


def test_a_slow_append_under_the_lock_is_waited_for_not_reported_as_torn(tmp_path: Path) -> None:
    """An append that takes longer than verify's pause (a slow disk) is still not a torn record:
    verify sees audit.lock held and reads again once it is released."""
    import fcntl
    import threading

    log = trail(tmp_path, 3)
    line = next_line(log)
    started = threading.Event()

    def slow_append() -> None:
        with (tmp_path / "audit.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with log.path.open("ab") as fh:
                fh.write(line[:25])
                fh.flush()
                started.set()
                time.sleep(0.8)  # well past verify_live's retry_delay
                fh.write(line[25:])
            record = json.loads(line)
            log._write_head(record["seq"], record["hash"])

    thread = threading.Thread(target=slow_append)
    thread.start()
    started.wait(5)
    result = verify_live(log)
    thread.join()
    assert result.ok and result.count == 4, result


APPENDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from blocker.record.audit import AuditLog
    log = AuditLog(Path(sys.argv[1]), actor=sys.argv[2])
    for i in range(25):
        log.append("note", {"by": sys.argv[2], "i": i})
""")


def test_two_processes_appending_to_a_torn_trail_repair_it_once(tmp_path: Path) -> None:
    log = trail(tmp_path, 3)
    torn = next_line(log)[:33]
    with log.path.open("ab") as fh:
        fh.write(torn)
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, str(tmp_path), who]) for who in ("daemon", "cli")]
    for proc in procs:
        assert proc.wait(60) == 0
    [repair] = repairs(log)
    assert quarantined(tmp_path, repair) == torn
    result = verify_live(log)
    assert result.ok and result.count == 3 + 1 + 50
