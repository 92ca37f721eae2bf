"""The audit trail is tamper-evident: every way of altering the file is caught by `blocker audit verify`.

The trail is produced by the real CLI (`blocker apply` on real order files), then altered the
ways someone hiding a mistake would: a byte edited, a line deleted, two lines swapped, the file
truncated mid-line, the last record cut off. Each must exit 1 and name the first bad record.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from blocker.record.audit import AuditLog, verify_live
from blocker.record.verify import checked_lines, verify_offline
from tests.clock import apply_at
from tests.support.cli import blocker as run_blocker

pytestmark = pytest.mark.integration  # most tests here run the blocker console script

CONFIG = """\
timezone: Europe/Paris
publish: {check: structural}
operators:
  orange: {name: Orange, reload: {kind: none}}
  sfr: {name: SFR, reload: {kind: none}}
"""

ORDER = """\
id: {id}
court: Tribunal judiciaire de Paris
case_number: RG 91/{n:05d}
decision_date: 2091-01-09
operators: [orange, sfr]
start: {start}
duration: 3 months
targets: [{id}.example]
"""


blocker = functools.partial(run_blocker, config="config.yaml")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder whose state/ holds a real trail of two applies (about 15 records)."""
    root = tmp_path_factory.mktemp("audit")
    (root / "config.yaml").write_text(CONFIG)
    orders = root / "orders"
    orders.mkdir()
    (orders / "one.yaml").write_text(ORDER.format(id="one", n=1, start="2091-01-10"))
    (orders / "two.yaml").write_text(ORDER.format(id="two", n=2, start="2091-02-10"))
    for at in ("2091-01-10T12:00:00+01:00", "2091-02-10T12:00:00+01:00"):
        # Run as if the clock read `at` (tests/clock.py): apply refuses an --at far from the clock.
        code, out, err = apply_at(at, ["--config", "config.yaml", "apply", "--orders", "orders", "--out", "zones",
                                       "--state-dir", "state"], cwd=root)
        assert code == 0, out + err
    return root


@pytest.fixture
def work(pristine: Path, tmp_path: Path) -> Path:
    """A copy of the pristine trail that a test may damage."""
    shutil.copytree(pristine, tmp_path / "w")
    return tmp_path / "w"


def lines_of(work: Path) -> list[bytes]:
    return (work / "state" / "audit.jsonl").read_bytes().splitlines(keepends=True)


def write_lines(work: Path, lines: list[bytes]) -> None:
    (work / "state" / "audit.jsonl").write_bytes(b"".join(lines))


def test_intact_trail_verifies_with_count_and_head(pristine: Path) -> None:
    proc = blocker("audit", "verify", "--state-dir", "state", cwd=pristine)
    lines = lines_of(pristine)
    last = json.loads(lines[-1])
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.strip() == f"audit trail intact: {len(lines)} records, head {last['hash']}"
    assert (pristine / "state" / "audit.head").read_text().split() == [str(len(lines)), last["hash"]]
    assert len(lines) >= 12
    events = {json.loads(x)["event"] for x in lines}
    assert {"order-added", "apply", "entries-activated", "zone-published", "reload"} <= events


Damage = Callable[[list[bytes]], tuple[list[bytes], int, str]]  # -> (lines, first bad line, why)


def edit_a_byte(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    target = next(i for i, x in enumerate(lines) if b'"event":"entries-activated"' in x)
    edited = lines[target].replace(b"one.example", b"onf.example", 1)  # one byte of a blocked name
    assert len(edited) == len(lines[target]) and edited != lines[target]
    lines[target] = edited
    return lines, target + 1, "does not match its hash"


def delete_a_line(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    del lines[4]
    return lines, 5, "sequence 6 where 5 was expected"


def swap_two_lines(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    lines[6], lines[7] = lines[7], lines[6]
    return lines, 7, "sequence 8 where 7 was expected"


def truncate_mid_line(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    return [*lines[:8], lines[8][: len(lines[8]) // 2]], 9, "truncated"


def cut_the_last_record(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    return lines[:-1], len(lines), "cut off"


@pytest.mark.parametrize("damage", [edit_a_byte, delete_a_line, swap_two_lines, truncate_mid_line,
                                    cut_the_last_record])
def test_every_alteration_is_detected_at_the_first_bad_record(work: Path, damage: Damage) -> None:
    lines, bad, why = damage(lines_of(work))
    write_lines(work, lines)
    proc = blocker("audit", "verify", "--state-dir", "state", cwd=work)
    assert proc.returncode == 1, proc.stdout
    first = proc.stdout.splitlines()[0]
    assert first.startswith(f"audit trail BROKEN at line {bad} "), first
    assert why in first
    assert f"{bad - 1} record(s) before it chain correctly" in proc.stdout


def test_edited_record_with_recomputed_hash_breaks_the_next_link(work: Path) -> None:
    """Recomputing the edited record's own hash is not enough: the next record's prev betrays it."""
    from blocker.record.verify import canonical, record_hash

    lines = lines_of(work)
    record = json.loads(lines[2])
    record["actor"] = "someone-else"
    record["hash"] = record_hash(record)
    lines[2] = canonical(record) + b"\n"
    write_lines(work, lines)
    proc = blocker("audit", "verify", "--state-dir", "state", cwd=work)
    assert proc.returncode == 1
    assert proc.stdout.startswith("audit trail BROKEN at line 4 ") and "does not chain" in proc.stdout


def test_a_missing_state_dir_fails_and_is_not_created(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(CONFIG)
    proc = blocker("audit", "verify", "--state-dir", "nowhere", cwd=tmp_path)
    assert proc.returncode == 2 and "no such state directory" in proc.stderr
    assert not (tmp_path / "nowhere").exists()
    (tmp_path / "empty").mkdir()
    proc = blocker("audit", "verify", "--state-dir", "empty", cwd=tmp_path)
    assert proc.returncode == 1 and "no audit trail" in proc.stderr
    assert os.listdir(tmp_path / "empty") == []


def test_show_is_readable_filters_and_warns_on_a_broken_trail(work: Path) -> None:
    proc = blocker("audit", "show", "--state-dir", "state", cwd=work)
    assert proc.returncode == 0
    rows = proc.stdout.splitlines()
    assert len(rows) == len(lines_of(work))
    assert rows[0].startswith("#1  2026-") or rows[0].startswith("#1  20")
    assert "+01:00" in rows[0] or "+02:00" in rows[0]  # shown in the config's zone, with its offset
    proc = blocker("audit", "show", "--state-dir", "state", "--order", "two", "--json", cwd=work)
    records = json.loads(proc.stdout)
    assert records and all(r["data"].get("order") == "two" or "two" in r["data"].get("orders", [])
                           for r in records)
    assert {"order-added", "entries-activated", "zone-published"} <= {r["event"] for r in records}
    proc = blocker("audit", "show", "--state-dir", "state", "--since", "2999-01-01", "--json", cwd=work)
    assert json.loads(proc.stdout) == []
    lines = lines_of(work)
    write_lines(work, [*lines[:3], *lines[4:]])
    proc = blocker("audit", "show", "--state-dir", "state", cwd=work)
    assert proc.returncode == 1
    assert "!! first broken record" in proc.stdout.splitlines()[3]
    assert "broken at line 4" in proc.stderr


def test_checked_lines_reports_the_first_problem_and_keeps_reading(work: Path) -> None:
    lines = lines_of(work)
    write_lines(work, [*lines[:2], *lines[3:]])
    seen = list(checked_lines(AuditLog(work / "state").path))
    assert len(seen) == len(lines) - 1
    assert [x.bad_line for x in seen[:2]] == [None, None]
    assert all(x.bad_line == 3 for x in seen[2:])
    assert all(x.record is not None for x in seen)


def test_verify_while_records_are_appended_never_raises_a_false_alarm(tmp_path: Path) -> None:
    """`audit verify` runs while the daemon appends: reading the head first keeps it honest."""
    log = AuditLog(tmp_path, actor="daemon")
    log.append("daemon-start", {"pid": 1})
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set() and n < 400:
            log.append("probe-pass", {"operator": "orange", "orders": ["x"], "n": n})
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    results = []
    try:
        while thread.is_alive() and len(results) < 200:
            results.append(verify_live(log))
    finally:
        stop.set()
        thread.join()
    assert results and all(r.ok for r in results), [r for r in results if not r.ok][:1]
    assert verify_live(log).ok


def test_an_append_in_flight_is_waited_for_not_reported(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    for i in range(3):
        log.append("note", {"i": i})
    extra = AuditLog(tmp_path / "scratch")
    record = extra.append("note", {"i": 3})  # the bytes of what the 4th record would look like
    lines = log.path.read_bytes().splitlines(keepends=True)
    fourth = json.loads(lines[-1])
    record = {**record, "seq": 4, "prev": fourth["hash"]}
    from blocker.record.verify import canonical, record_hash

    record["hash"] = record_hash(record)
    full = canonical(record) + b"\n"
    with log.path.open("ab") as fh:
        fh.write(full[:20])  # half-written, head not yet updated

    def finish() -> None:
        time.sleep(0.05)
        with log.path.open("ab") as fh:
            fh.write(full[20:])
        log._write_head(4, record["hash"])

    t = threading.Thread(target=finish)
    t.start()
    result = verify_live(log)
    t.join()
    assert result.ok and result.count == 4


def test_reordered_keys_are_caught_like_verify_does(tmp_path: Path) -> None:
    """`checked_lines` skips re-encoding intact lines; a line whose JSON means the same but whose
    bytes were rewritten (keys moved) must still fail, with the same reason `verify` gives."""
    log = AuditLog(tmp_path)
    for i in range(4):
        log.append("note", {"i": i, "prev": "decoy", "hash": "decoy"})
    lines = log.path.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[1])
    record["hash"] = record.pop("hash")  # same content, `hash` moved to the end
    lines[1] = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    log.path.write_bytes(b"".join(lines))
    slow, fast = verify_offline(log.path, log.head()), verify_live(log)
    assert (fast.ok, fast.bad_line, fast.reason) == (slow.ok, slow.bad_line, slow.reason) == (
        False, 2, "record is not in canonical form (the line was edited)")
