"""`blocker validate` and `blocker status`, run for real as a user runs them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import blocker as run
from tests.support.orders import GOOD, write

pytestmark = pytest.mark.integration  # every test here runs the blocker console script

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "orders"
OFFSET_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d")
SAMPLE_IDS = {
    "anj-2026-0412-casino-royal", "anj-2026-0412-casino-royal-mirrors-1", "lfp-2026-0088-streamfoot",
    "tj-nanterre-2026-1190-forum", "tj-paris-2021-51823-cnil",
}

@pytest.fixture
def work(tmp_path: Path) -> Path:
    """An empty working directory (no configs/: built-in defaults) with an orders folder."""
    (tmp_path / "orders").mkdir()
    return tmp_path


# --- validate -----------------------------------------------------------------------------------------


def test_validate_accepts_the_samples(work):
    proc = run("validate", "--orders", str(SAMPLES), cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ok_lines = [line for line in proc.stdout.splitlines() if ": ok" in line]
    assert len(ok_lines) == len(list(SAMPLES.glob("*.yaml"))) == 5


def test_validate_from_the_repository_uses_its_config_and_orders():
    proc = run("validate", cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "orders/cnil-2021-medical-records-leak.yaml: ok" in proc.stdout


def test_python_dash_m_blocker(work):
    proc = run("validate", "--orders", str(SAMPLES), cwd=work, module=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tj-paris-2021-51823-cnil" in proc.stdout


def test_validate_one_bad_file_among_good_ones(work):
    orders = work / "orders"
    write(orders, "a.yaml", GOOD.format(id="order-a"))
    write(orders, "b.yml", GOOD.format(id="order-b"))
    bad = write(orders, "c.yaml", GOOD.format(id="order-c").replace("duration:", "duraton:")
                + "action: block\n")
    proc = run("validate", "--orders", "orders", cwd=work)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert "orders/a.yaml: ok (order-a, 1 target)" in lines  # singular: issue 12
    assert "orders/b.yml: ok (order-b, 1 target)" in lines
    problems = [line for line in lines if line.startswith("orders/c.yaml")]
    assert len(problems) == 3  # unknown field, no duration/end, unknown action: all in one run
    for line in problems:
        assert re.fullmatch(r"orders/c\.yaml: [\w.\[\]()]+: .+", line), line
    fields = {line.split(": ")[1] for line in problems}
    assert fields == {"duraton", "duration", "action"}
    assert any("unknown field" in line and "(line 7)" in line for line in problems)
    assert not any(str(bad) in line and ": ok" in line for line in lines)
    # The typo first, with its fix; what it causes after it, on its line (not on line 1 before it).
    assert "did you mean `duration`?" in problems[0] and problems[0].endswith("(line 7)")
    assert problems[1].startswith("orders/c.yaml: duration: ") and problems[1].endswith("(line 7)")


def test_validate_an_empty_folder_is_fine(work):
    assert run("validate", "--orders", "orders", cwd=work).returncode == 0


def test_validate_a_missing_folder_fails_cleanly(work):
    proc = run("validate", "--orders", "nope", cwd=work)
    assert proc.returncode == 2  # a mistyped path is a usage error (issue 9, section 10)
    assert "nope (--orders) does not exist" in proc.stdout + proc.stderr


NASTY = {
    "binary.yaml": bytes(range(256)) * 4,
    "latin1.yaml": "id: café\n".encode("latin-1"),
    "utf16.yaml": GOOD.format(id="utf16").encode("utf-16"),
    "empty.yaml": b"",
    "list.yaml": b"- a\n- b\n",
    "python.yaml": b"id: !!python/object/apply:os.system ['touch /tmp/blocker-pwned']\n",
    "bomb.yaml": b'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
                 + b"".join(b"%c: &%c [%s]\n" % (98 + i, 98 + i, b",".join([b"*%c" % (97 + i)] * 9)) for i in range(9)),
    "deep.yaml": b"a: " + b"[" * 50000 + b"]" * 50000 + b"\n",
    "badtag.yaml": GOOD.format(id="badtag").encode() + b"notes: !!int abc\n",
    "control.yaml": GOOD.format(id="control").encode() + b"notes: \x1b[31mred\n",
    "nul.yaml": b"id: a\x00\n",
    "dup.yaml": GOOD.format(id="dup").encode() + b"id: again\n",
    "far.yaml": GOOD.format(id="far").replace("duration: 18 months", "end: 9999-12-31").encode(),
    "dst.yaml": GOOD.format(id="dst").replace("start: 2026-11-20", "start: 2026-10-25T02:30").encode(),
    "feb30.yaml": GOOD.format(id="feb30").replace("start: 2026-11-20", "start: 2026-02-30").encode(),
    "scalar-targets.yaml": GOOD.format(id="scalar-targets").replace("targets:\n", "targets: 42\n").encode(),
    "weird-keys.yaml": b"? [a, b]\n: 1\n",
}


def test_nasty_inputs_never_crash_and_good_files_still_pass(work):
    orders = work / "orders"
    write(orders, "good.yaml", GOOD.format(id="good"))
    for name, data in NASTY.items():
        write(orders, name, data)
    write(orders, "huge.yaml", b"# " + b"x" * (8 * 1024 * 1024 + 1) + b"\n")
    (orders / "dir.yaml").mkdir()
    os.symlink(orders / "missing-target.yaml", orders / "dangling.yaml")
    proc = run("validate", "--orders", "orders", cwd=work)
    assert proc.returncode == 1
    assert "orders/good.yaml: ok (good, 1 target)" in proc.stdout
    reported = {line.split(":")[0] for line in proc.stdout.splitlines() if ": ok" not in line}
    assert {f"orders/{name}" for name in [*NASTY, "huge.yaml"]} <= reported
    for line in proc.stdout.splitlines():
        assert re.fullmatch(r"orders/[\w.-]+: .+", line), line
    assert not Path("/tmp/blocker-pwned").exists()


def test_status_after_nasty_inputs_still_shows_the_good_order(work):
    orders = work / "orders"
    write(orders, "good.yaml", GOOD.format(id="good"))
    for name, data in NASTY.items():
        write(orders, name, data)
    proc = run("status", "--orders", "orders", "--json", "--at", "2027-01-01T00:00:00+01:00", cwd=work)
    assert proc.returncode == 1
    assert [o["id"] for o in json.loads(proc.stdout)] == ["good"]
    assert "orders/binary.yaml" in proc.stderr


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ("legal: {extend_to_working_day: true, holidays_country: XX}\n", "XX"),
        ("timezon: Europe/Paris\n", "timezon"),
    ],
)
def test_bad_or_odd_config_never_crashes(work, config, needle):
    write(work / "orders", "a.yaml", GOOD.format(id="a"))
    write(work, "cfg.yaml", config)
    proc = run("validate", "--config", "cfg.yaml", "--orders", "orders", cwd=work)
    assert proc.returncode == 1
    assert needle in proc.stdout + proc.stderr


def test_global_config_before_the_sub_command_is_used(work):
    write(work, "cfg.yaml", "timezon: Europe/Paris\n")
    proc = run("--config", "cfg.yaml", "validate", "--orders", "orders", cwd=work)
    assert proc.returncode == 1
    assert "timezon" in proc.stderr


# --- status --------------------------------------------------------------------------------------------


def status_json(*args: str, cwd: Path) -> tuple[list[dict], subprocess.CompletedProcess[str]]:
    proc = run("status", "--json", *args, cwd=cwd)
    return json.loads(proc.stdout), proc


def test_status_json_fields_on_the_samples(work):
    rows, proc = status_json("--orders", str(SAMPLES), "--at", "2026-12-15T12:00:00+01:00", cwd=work)
    assert proc.returncode == 0, proc.stderr
    by_id = {row["id"]: row for row in rows}
    assert set(by_id) == SAMPLE_IDS
    for row in rows:
        for key in ("id", "status", "start", "end", "scheduled_end", "rule", "operators", "targets"):
            assert key in row, key
        for key in ("start", "end", "scheduled_end"):
            assert OFFSET_ISO.fullmatch(row[key]), row[key]
        for target in row["targets"]:
            assert set(target) >= {"name", "subdomains", "kind"}
            assert target["kind"] in ("domain", "url-escalated")
            if target["kind"] == "url-escalated":
                assert target["subdomains"] is False
    assert {k: v["status"] for k, v in by_id.items()} == {
        "tj-paris-2021-51823-cnil": "expired",
        "lfp-2026-0088-streamfoot": "lifted",
        "anj-2026-0412-casino-royal": "active",
        "anj-2026-0412-casino-royal-mirrors-1": "active",
        "tj-nanterre-2026-1190-forum": "active",
    }
    cnil = by_id["tj-paris-2021-51823-cnil"]
    assert cnil["start"] == "2021-03-04T00:00:00+01:00"
    assert cnil["end"] == cnil["scheduled_end"] == "2022-09-05T00:00:00+02:00"
    assert cnil["rule"].startswith("cpc-641: 18 months")
    assert cnil["operators"] == ["bouygues", "free", "orange", "sfr"]
    assert {(t["name"], t["subdomains"], t["kind"]) for t in cnil["targets"]} == {
        ("files.example.gg", True, "domain"), ("files.example.gg", False, "url-escalated")}
    lifted = by_id["lfp-2026-0088-streamfoot"]
    assert lifted["end"] == "2026-11-03T12:00:00+01:00"
    assert lifted["scheduled_end"] == "2027-06-01T00:00:00+02:00"
    forum = by_id["tj-nanterre-2026-1190-forum"]
    assert forum["operators"] == ["free", "orange"]
    assert "xn--bcher-propagande-jzb.example.gg" in [t["name"] for t in forum["targets"]]


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        ("2026-11-30T23:59:59+01:00", "pending"),
        ("2026-11-30T23:00:00Z", "active"),  # the start instant, given in UTC
        ("2027-06-01T23:59:59+02:00", "active"),
        ("2027-06-02", "expired"),  # a date: midnight in the config's time zone, the lift instant
    ],
)
def test_status_at_exact_instants(work, at, expected):
    rows, proc = status_json("--orders", str(SAMPLES), "--at", at, cwd=work)
    assert proc.returncode == 0
    assert {r["id"]: r["status"] for r in rows}["tj-nanterre-2026-1190-forum"] == expected


def test_status_lifted_at_the_lift_instant(work):
    rows, _ = status_json("--orders", str(SAMPLES), "--at", "2026-11-03T11:59:59+01:00", cwd=work)
    assert {r["id"]: r["status"] for r in rows}["lfp-2026-0088-streamfoot"] == "active"
    rows, _ = status_json("--orders", str(SAMPLES), "--at", "2026-11-03T12:00:00+01:00", cwd=work)
    assert {r["id"]: r["status"] for r in rows}["lfp-2026-0088-streamfoot"] == "lifted"


def test_status_with_an_invalid_file_shows_the_valid_orders_and_exits_1(work):
    orders = work / "orders"
    shutil.copytree(SAMPLES, orders, dirs_exist_ok=True)
    write(orders, "zz-bad.yaml", "id: bad\nduraton: 1 day\n")
    rows, proc = status_json("--orders", "orders", "--at", "2026-12-15", cwd=work)
    assert proc.returncode == 1
    assert {r["id"] for r in rows} == SAMPLE_IDS
    assert "orders/zz-bad.yaml: duraton: unknown field" in proc.stderr
    table = run("status", "--orders", "orders", "--at", "2026-12-15", cwd=work)
    assert table.returncode == 1
    for order_id in SAMPLE_IDS:
        assert order_id in table.stdout
    assert "orders/zz-bad.yaml" in table.stderr


def test_status_table_fits_120_columns_and_wide_shows_everything(work):
    proc = run("status", "--orders", str(SAMPLES), "--at", "2026-12-15T12:00:00+01:00", cwd=work)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 120 < max(len(r) for r in [", ".join(lines)])
    assert lines[0].split() == ["ORDER", "STATUS", "START", "END", "TARGETS", "RULE"]
    row = next(line for line in lines if line.startswith("lfp-2026-0088-streamfoot "))  # ids never cut
    assert "2026-11-03 12:00+01:00" in row and row.endswith("…")  # offsets kept, the rule cut
    assert proc.stderr.strip().endswith("; 5 orders")


def test_status_table(work):
    proc = run("status", "--orders", str(SAMPLES), "--at", "2026-12-15T12:00:00+01:00", "--wide", cwd=work)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["ORDER", "STATUS", "START", "END"]
    row = next(line for line in lines if line.startswith("tj-paris-2021-51823-cnil"))
    assert "expired" in row and "cpc-641: 18 months" in row and "url-escalated" in row
    row = next(line for line in lines if line.startswith("lfp-2026-0088-streamfoot"))
    assert "lifted" in row and "2026-11-03T12:00:00+01:00" in row


def test_duplicate_ids_across_files(work):
    orders = work / "orders"
    write(orders, "a.yaml", GOOD.format(id="same"))
    write(orders, "b.yaml", GOOD.format(id="same"))
    proc = run("validate", "--orders", "orders", cwd=work)
    assert proc.returncode == 1
    assert "orders/a.yaml: id: duplicate id 'same' (also in orders/b.yaml)" in proc.stdout
    assert "orders/b.yaml: id: duplicate id 'same' (also in orders/a.yaml)" in proc.stdout
    rows, proc = status_json("--orders", "orders", "--at", "2027-01-01", cwd=work)
    assert rows == [] and proc.returncode == 1


@pytest.mark.parametrize("at", ["garbage", "2026-02-30", "2026-10-25T02:30", "2026-03-29T02:30"])
def test_status_refuses_a_bad_at_in_one_line(work, at):
    proc = run("status", "--orders", str(SAMPLES), "--at", at, cwd=work)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "--at" in proc.stderr


def test_status_default_now(work):
    rows, proc = status_json("--orders", str(SAMPLES), cwd=work)
    assert proc.returncode == 0
    assert {r["id"] for r in rows} == SAMPLE_IDS
    assert rows[0]["id"] == "tj-paris-2021-51823-cnil"  # sorted by start
    assert {r["id"]: r["status"] for r in rows}["tj-paris-2021-51823-cnil"] == "expired"


def test_unknown_command_and_missing_config_are_clean(work):
    proc = run("bogus", cwd=work)
    assert proc.returncode == 2
    proc = run("validate", "--config", "nope.yaml", cwd=work)
    assert proc.returncode == 1
    assert "nope.yaml" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
