"""Only `apply` and the daemon change what resolvers serve (issue 9, section 6).

Every test runs the installed `blocker` console script as a subprocess on real files, at the
real clock (orders are written around now):

- `render` is a preview: it refuses the zones folder however it is spelled, and writes no
  state and no audit;
- `apply --at` far from the clock is refused without --force, and what apply records carries
  the wall-clock instant, with the --at used beside it; no other command with --at writes;
- a zone file damaged or replaced behind the tool's back never makes plan or apply exit 70:
  the last published zone comes from the state, and the file is rewritten;
- plan and apply agree: `plan` exits 3 exactly when `apply` would do or refuse something, and
  `apply --checksum` of plan's checksum does what plan showed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.cli import blocker

pytestmark = pytest.mark.integration  # every test here runs the blocker console script

ZONE_NAMES = ("free.rpz", "orange.rpz")


def now() -> datetime:
    return datetime.now(UTC)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds")


def order_yaml(order_id: str, targets: list[str], start: datetime, end: datetime,
               lifted: datetime | None = None) -> str:
    lines = [f"id: {order_id}", "court: Tribunal judiciaire de Paris", f"case_number: RG {order_id}",
             f"decision_date: {(start - timedelta(days=1)).date().isoformat()}", "operators: [orange, free]",
             f"start: {iso(start)}", f"end: {iso(end)}"]
    if lifted is not None:
        lines += ["lifted:", f"  at: {iso(lifted)}", "  reason: mainlevée"]
    return "\n".join([*lines, "targets:", *(f"  - {t}" for t in targets)]) + "\n"


@dataclass
class Box:
    """A config whose orders, state and zones folders are its own (absolute paths)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "blocker.yaml"

    @property
    def orders(self) -> Path:
        return self.root / "orders"

    @property
    def zones(self) -> Path:
        return self.root / "zones"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return blocker(*args, config=self.config, cwd=self.root)

    def write(self, order_id: str, targets: list[str], *, start_days: float = -30, end_days: float = 365,
              lifted: datetime | None = None) -> Path:
        path = self.orders / f"{order_id}.yaml"
        t = now()
        path.write_text(order_yaml(order_id, targets, t + timedelta(days=start_days), t + timedelta(days=end_days),
                                   lifted), encoding="utf-8")
        return path

    def zone(self, name: str = "orange.rpz") -> bytes:
        return (self.zones / name).read_bytes()

    def snapshot(self) -> dict[str, bytes | str]:
        """Every file of the zones and state folders (their bytes, or what they are)."""
        out: dict[str, bytes | str] = {}
        for folder in (self.zones, self.state):
            for path in sorted(folder.rglob("*")) if folder.exists() else []:
                key = str(path.relative_to(self.root))
                if path.name.endswith(("-shm", "-wal")):  # SQLite's own, made by any reader
                    continue
                if path.name.endswith(".sqlite3"):   # its content, wherever SQLite keeps it
                    uri = f"file:{path}?mode=ro"
                    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
                        out[key] = "\n".join(db.iterdump())
                elif path.is_symlink():
                    out[key] = f"symlink -> {os.readlink(path)}"
                elif path.is_file():
                    out[key] = path.read_bytes()
                else:
                    out[key] = "folder"
        return out

    def audit(self) -> list[dict]:
        path = self.state / "audit.jsonl"
        return [json.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []

    def plan(self, *args: str) -> tuple[int, dict]:
        proc = self.cli("plan", "--json", *args)
        assert proc.returncode in (0, 3), proc.stdout + proc.stderr
        return proc.returncode, json.loads(proc.stdout)

    def force(self, *args: str) -> subprocess.CompletedProcess[str]:
        _, plan = self.plan("--force", *args)
        return self.cli("apply", "--force", "--checksum", plan["checksum"], *args)


CONFIG = """\
orders_dir: {root}/orders
state_dir: {root}/state
zones_dir: {root}/zones
timezone: Europe/Paris
publish: {{check: structural}}
operators:
  orange: {{reload: {{kind: none}}}}
  free: {{reload: {{kind: none}}}}
"""


def make_box(root: Path) -> Box:
    root.mkdir(parents=True, exist_ok=True)
    (root / "orders").mkdir()
    (root / "blocker.yaml").write_text(CONFIG.format(root=root))
    return Box(root)


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return make_box(tmp_path / "box")


def owners(data: bytes) -> set[str]:
    return {line.split()[0] for line in data.decode().splitlines()
            if line and line[0] not in ";$@" and line.split()[1] != "TXT"}


def published(box: Box, operator: str = "orange") -> tuple[int, str, str, str]:
    """(serial, body checksum, file digest, published_at) as the state holds them."""
    with sqlite3.connect(box.state / "state.sqlite3") as db:
        row = db.execute("SELECT serial, checksum, digest, published_at FROM zones WHERE operator=?",
                         (operator,)).fetchone()
    assert row is not None
    return row


# ------------------------------------------------------------------------------------------
# render is a preview


def test_render_without_out_is_refused_and_says_how_to_publish(box: Box) -> None:
    box.write("a", ["one.example"])
    proc = box.cli("render")
    assert proc.returncode == 2
    assert "--out DIR" in proc.stderr and "--out -" in proc.stderr and "apply" in proc.stderr
    assert not box.zones.exists() and not box.state.exists()


@pytest.mark.parametrize("spelling", ["same", "trailing-slash", "dot-dot", "symlink", "relative"])
def test_render_refuses_the_zones_folder_however_it_is_spelled(box: Box, spelling: str) -> None:
    box.write("a", ["one.example"])
    assert box.cli("apply").returncode == 0
    before = box.snapshot()
    (box.root / "elsewhere").mkdir()
    (box.root / "link").symlink_to(box.zones)
    out = {"same": str(box.zones), "trailing-slash": f"{box.zones}/",
           "dot-dot": str(box.root / "elsewhere" / ".." / "zones"), "symlink": str(box.root / "link"),
           "relative": "./zones"}[spelling]
    proc = box.cli("render", "--out", out, "--at", iso(now() + timedelta(days=3650)))   # empties every zone
    assert proc.returncode == 2 and "zones folder" in proc.stderr
    assert box.snapshot() == before


def test_render_to_a_folder_or_stdout_writes_no_state_and_no_audit(box: Box) -> None:
    box.write("a", ["one.example"])
    assert box.cli("apply").returncode == 0
    before = box.snapshot()
    preview = box.root / "preview"
    proc = box.cli("render", "--out", str(preview), "--at", iso(now() + timedelta(days=3650)))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in preview.iterdir()) == list(ZONE_NAMES)
    assert owners((preview / "orange.rpz").read_bytes()) == set()           # the preview of a lift
    proc = box.cli("render", "--out", "-", "--operator", "orange")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("; blocker RPZ for operator orange") and "one.example CNAME ." in proc.stdout
    assert proc.stdout.endswith('"\n') and "serial.orange.canary.blocker TXT" in proc.stdout.splitlines()[-1]
    assert box.snapshot() == before


@pytest.mark.parametrize("operators", [[], ["orange", "free"]])
def test_render_to_stdout_needs_exactly_one_operator(box: Box, operators: list[str]) -> None:
    box.write("a", ["one.example"])
    proc = box.cli("render", "--out", "-", *[x for op in operators for x in ("--operator", op)])
    assert proc.returncode == 2 and "one operator" in proc.stderr and proc.stdout == ""


# ------------------------------------------------------------------------------------------
# apply --at and the clock


@pytest.mark.parametrize("offset", [timedelta(days=-365), timedelta(days=365 * 2), timedelta(minutes=-6),
                                    timedelta(minutes=6)])
def test_apply_at_far_from_the_clock_is_refused_and_changes_nothing(box: Box, offset: timedelta) -> None:
    """`--at 2028-01-01` for 2026 lifted an order in force until 2027; `--at 2025` blocked again
    an order that had ended, and back-dated the report's "first published"."""
    box.write("inforce", ["inforce.example"])                       # until a year from now
    box.write("ended", ["ended.example"], start_days=-600, end_days=-200)
    assert box.cli("apply").returncode == 0
    before, records = box.snapshot(), len(box.audit())
    proc = box.cli("apply", "--at", iso(now() + offset))
    assert proc.returncode == 4 and "the clock" in proc.stderr and "--force" in proc.stderr
    assert box.snapshot() == before and len(box.audit()) == records
    # --force alone is not enough either: it needs the checksum of the reviewed forced plan.
    proc = box.cli("apply", "--at", iso(now() + offset), "--force")
    assert proc.returncode == 4 and "blocker plan --force" in proc.stderr
    assert box.snapshot() == before and len(box.audit()) == records
    # plan says apply would refuse: exit 3, and why.
    code, plan = box.plan("--at", iso(now() + offset))
    assert code == 3 and any("the clock" in r for r in plan["refusals"])


@pytest.mark.parametrize("offset", [timedelta(0), timedelta(minutes=-4), timedelta(minutes=4)])
def test_apply_at_near_the_clock_goes_ahead(box: Box, offset: timedelta) -> None:
    box.write("inforce", ["inforce.example"])
    proc = box.cli("apply", "--at", iso(now() + offset))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "inforce.example" in owners(box.zone())


def test_a_forced_apply_at_another_instant_records_the_wall_clock_and_the_at(box: Box) -> None:
    box.write("inforce", ["inforce.example"])
    assert box.cli("apply").returncode == 0
    first = published(box)
    box.write("new", ["new.example"])
    at = "2025-01-01T00:00:00+01:00"          # a mistyped year, applied on purpose
    started = now()
    proc = box.force("--at", at)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert owners(box.zone()) == set()        # both orders are in the future at 2025-01-01
    serial, _checksum, digest, published_at = published(box)
    assert serial > first[0] and digest == hashlib.sha256(box.zone()).hexdigest()
    assert abs(datetime.fromisoformat(published_at) - started) < timedelta(minutes=1)   # not 2025
    (apply,) = [r for r in box.audit() if r["event"] == "apply"][1:]
    assert datetime.fromisoformat(apply["data"]["at"]) == datetime.fromisoformat(at) and apply["data"]["force"]
    assert abs(datetime.fromisoformat(apply["ts"]) - started) < timedelta(minutes=1)
    with sqlite3.connect(box.state / "state.sqlite3") as db:    # the new order's receipt: now, not 2025
        (seen,) = db.execute("SELECT first_seen FROM order_versions WHERE order_id='new'").fetchone()
    assert abs(datetime.fromisoformat(seen) - started) < timedelta(minutes=1)
    # A plain apply now puts back what is in force now.
    assert box.cli("apply").returncode == 0
    assert owners(box.zone()) == {"inforce.example", "*.inforce.example", "new.example", "*.new.example"}


READ_COMMANDS: list[list[str]] = [
    ["status"], ["plan"], ["plan", "--force"], ["apply", "--dry-run"], ["report"], ["report", "--format", "json"],
    ["expiring"], ["validate"],
]


@pytest.mark.parametrize("years", [-2, 2])
def test_no_other_command_with_at_writes_anything(box: Box, years: int) -> None:
    box.write("inforce", ["inforce.example"])
    box.write("ended", ["ended.example"], start_days=-600, end_days=-200)
    assert box.cli("apply").returncode == 0
    before = box.snapshot()
    for command in READ_COMMANDS:
        args = command if command == ["validate"] else [*command, "--at", iso(now() + timedelta(days=365 * years))]
        proc = box.cli(*args)
        assert proc.returncode in (0, 1, 3), proc.stdout + proc.stderr
        assert box.snapshot() == before, command


# ------------------------------------------------------------------------------------------
# zone files damaged or replaced behind the tool's back


def _edit(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"one.example CNAME .", b"one.example CNAME rpz-passthru."))


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 100)   # `truncate -s -100`: the header is kept


def _half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _replace_with(data: bytes) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        path.write_bytes(data)
    return damage


def _tabs(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"one.example CNAME", b"one.example\tCNAME"))


def _non_ascii_comment(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"; blocker RPZ", "; zone modifiée".encode()))


def _bare_owner(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"@ IN NS localhost.\n", b"@ IN NS localhost.\nbare.example\n"))


def _delete(path: Path) -> None:
    path.unlink()


def _empty_dir(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _symlink(path: Path) -> None:
    other = path.with_name("elsewhere.txt")
    other.write_text("not a zone\n")
    path.unlink()
    path.symlink_to(other)


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


DAMAGES: dict[str, Callable[[Path], None]] = {
    "edited": _edit, "truncated": _truncate, "half": _half, "emptied": _replace_with(b""),
    "tabs": _tabs, "non-ascii-comment": _non_ascii_comment, "bare-owner": _bare_owner,
    "binary": _replace_with(bytes(range(256)) * 4), "deleted": _delete, "empty-directory": _empty_dir,
    "symlink": _symlink, "fifo": _fifo,
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_zone_file_is_rewritten_from_the_state(box: Box, damage: str) -> None:
    box.write("a", ["one.example", "two.example"])
    assert box.cli("apply").returncode == 0
    good, (serial, checksum, digest, _) = box.zone(), published(box)
    free = box.zone("free.rpz")
    DAMAGES[damage](box.zones / "orange.rpz")
    code, plan = box.plan()
    (orange,) = [p for p in plan["operators"] if p["operator"] == "orange"]
    assert code == 3 and orange["restore"] and not orange["changed"]
    assert orange["added"] == orange["removed"] == orange["held"] == []      # from the state, not the file
    proc = box.cli("apply", "--checksum", plan["checksum"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = box.zones / "orange.rpz"
    assert path.is_file() and not path.is_symlink()
    restored = box.zone()
    assert owners(restored) == owners(good)
    assert restored.replace(str(serial + 1).encode(), str(serial).encode()) == good     # same zone, next serial
    new_serial, new_checksum, new_digest, _ = published(box)
    assert (new_serial, new_checksum, new_digest) == (serial + 1, checksum, hashlib.sha256(restored).hexdigest())
    (record,) = [r["data"] for r in box.audit() if r["event"] == "zone-restored"]
    assert record["operator"] == "orange" and record["published_sha256"] == digest
    assert record["new_sha256"] == new_digest and record["found_sha256"] != digest
    assert box.zone("free.rpz") == free                                             # untouched
    assert box.plan()[0] == 0 and box.cli("apply").stdout.strip().endswith("nothing to apply")


def test_a_non_empty_folder_in_place_of_the_zone_is_a_publish_failure_not_a_crash(box: Box) -> None:
    box.write("a", ["one.example"])
    assert box.cli("apply").returncode == 0
    path = box.zones / "orange.rpz"
    path.unlink()
    path.mkdir()
    (path / "someone.txt").write_text("not ours to delete\n")
    assert box.plan()[0] == 3
    proc = box.cli("apply")
    assert proc.returncode == 5 and "orange: NOT published" in proc.stderr
    assert (path / "someone.txt").read_text() == "not ours to delete\n"


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_foreign_zone_file_without_state_is_no_previous_zone(box: Box, damage: str) -> None:
    """No state holds the zone (a folder of hand-made files): an unreadable file is "no previous
    zone", with a warning; apply rewrites it."""
    box.write("a", ["one.example"])
    preview = box.root / "preview"
    assert box.cli("render", "--out", str(preview)).returncode == 0
    box.zones.mkdir()
    for name in ZONE_NAMES:
        os.replace(preview / name, box.zones / name)
    DAMAGES[damage](box.zones / "orange.rpz")
    proc = box.cli("plan")
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    proc = box.cli("apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = box.zones / "orange.rpz"
    assert path.is_file() and not path.is_symlink()
    assert owners(box.zone()) == {"one.example", "*.one.example"}


# ------------------------------------------------------------------------------------------
# plan and apply agree


def _new_order(box: Box) -> None:
    box.write("new", ["new.example"])


def _lifted(box: Box) -> None:
    # lifted early in two minutes: an apply --at three minutes from now (inside the clock guard)
    box.write("base", ["base.example"], lifted=now() + timedelta(minutes=2))


def _orphan(box: Box) -> None:
    (box.orders / "base.yaml").unlink()


def _held(box: Box) -> None:
    box.write("base", ["other.example"])


def _damaged(box: Box) -> None:
    _truncate(box.zones / "orange.rpz")


def _nothing(box: Box) -> None:
    pass


def _pending(box: Box) -> None:
    box.write("later", ["later.example"], start_days=30)      # a receipt, but nothing to publish


def _no_args() -> tuple[str, ...]:
    return ()


def _soon() -> tuple[str, ...]:
    return ("--at", iso(now() + timedelta(minutes=3)))


SCENARIOS: dict[str, tuple[Callable[[Box], None], Callable[[], tuple[str, ...]]]] = {
    "new-order": (_new_order, _no_args),
    "lifted": (_lifted, _soon),
    "orphan": (_orphan, _no_args),
    "held-removal": (_held, _no_args),
    "damaged-zone": (_damaged, _no_args),
    "nothing-to-do": (_nothing, _no_args),
    "pending-order": (_pending, _no_args),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_plan_exits_3_exactly_when_apply_would_do_or_refuse_something(box: Box, scenario: str) -> None:
    box.write("base", ["base.example"])
    box.write("keep", ["keep.example"])
    assert box.cli("apply").returncode == 0
    setup, arguments = SCENARIOS[scenario]
    setup(box)
    args = arguments()
    code, plan = box.plan(*args)
    zones_before = {n: (box.zones / n).read_bytes() if (box.zones / n).is_file() else None for n in ZONE_NAMES}
    proc = box.cli("apply", "--checksum", plan["checksum"], *args)
    zones_after = {n: (box.zones / n).read_bytes() for n in ZONE_NAMES}
    no_op = proc.returncode == 0 and zones_after == zones_before and "nothing to apply" in proc.stdout
    assert (code == 3) == (not no_op), (scenario, code, proc.returncode, proc.stdout, proc.stderr)
    if proc.returncode == 0:
        # apply did exactly what plan showed: the zones plan computed, entries and all.
        for p in plan["operators"]:
            data = zones_after[f"{p['operator']}.rpz"]
            assert f"; content-sha256: {p['checksum']}".encode() in data
            previous = owners(zones_before[f"{p['operator']}.rpz"] or b"") if not p["restore"] else None
            if previous is not None:
                assert owners(data) == (previous | {c["name"] for c in p["added"]}) - {c["name"] for c in p["removed"]}
        assert box.plan(*args)[0] == 0
    else:
        assert proc.returncode == 4 and zones_after == zones_before


@pytest.mark.parametrize("scenario", ["orphan", "held-removal"])
def test_plan_force_previews_what_apply_force_removes(box: Box, scenario: str) -> None:
    box.write("base", ["base.example"])
    box.write("keep", ["keep.example"])
    assert box.cli("apply").returncode == 0
    SCENARIOS[scenario][0](box)
    before = box.snapshot()
    code, forced = box.plan("--force")
    (orange,) = [p for p in forced["operators"] if p["operator"] == "orange"]
    assert code == 3 and orange["held"] == [] and {c["name"] for c in orange["removed"]} == {
        "base.example", "*.base.example"}
    _, unforced = box.plan()
    assert forced["checksum"] != unforced["checksum"]
    proc = box.cli("apply", "--force")                                  # no checksum: refused, nothing moves
    assert proc.returncode == 4 and "blocker plan --force" in proc.stderr
    assert box.cli("apply", "--force", "--checksum", unforced["checksum"]).returncode == 4
    assert box.snapshot() == before                                       # not even the state's orders
    proc = box.cli("apply", "--force", "--checksum", forced["checksum"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"; content-sha256: {orange['checksum']}".encode() in box.zone()
    assert "base.example" not in owners(box.zone()) and "keep.example" in owners(box.zone())
    # The same reviewed checksum again: already applied, nothing to do.
    for force in ((), ("--force",)):
        proc = box.cli("apply", *force, "--checksum", forced["checksum"])
        assert proc.returncode == 0 and "nothing to do" in proc.stdout, proc.stdout + proc.stderr
    assert box.plan()[0] == 0


def test_reapplying_an_applied_checksum_is_nothing_to_do_until_something_changes(box: Box) -> None:
    box.write("base", ["base.example"])
    code, plan = box.plan()
    assert code == 3
    assert box.cli("apply", "--checksum", plan["checksum"]).returncode == 0
    proc = box.cli("apply", "--checksum", plan["checksum"])
    assert proc.returncode == 0 and f"nothing to do: plan {plan['checksum']} is already applied" in proc.stdout
    box.write("more", ["more.example"])                                  # the orders moved on: review again
    proc = box.cli("apply", "--checksum", plan["checksum"])
    assert proc.returncode == 4 and "review the plan again" in proc.stderr
