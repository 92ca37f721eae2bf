"""`--utc` on the read commands, `--json` where it was missing (audit verify, evidence), and the
config's relative paths shown absolute in errors: the real `blocker` on the legal scenario's
state (tests/legal/test_legal_cli.py: orders in Europe/Paris, five applies, probe records)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from tests.support.legal import T, blocker

pytestmark = pytest.mark.integration  # the blocker console script

INSTANT = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d)?([+-]\d\d:\d\d)")
ORDERS = ("--orders", "orders")
STATE = ("--state-dir", "state")


def offsets(text: str) -> set[str]:
    return {m.group(1) for m in INSTANT.finditer(text)}


@pytest.mark.parametrize("argv", [
    ("status", *ORDERS, "--at", T),
    ("status", *ORDERS, "--at", T, "--wide"),
    ("report", *ORDERS, *STATE, "--at", T),
    ("expiring", *ORDERS, *STATE, "--at", T),
    ("audit", "show", *STATE),
    ("why", "alpha.example", *ORDERS, *STATE, "--at", T),
], ids=["status", "status-wide", "report", "expiring", "audit-show", "why"])
def test_utc_shows_every_instant_in_utc_and_the_default_is_the_local_zone(scenario: Path,
                                                                          argv: tuple[str, ...]) -> None:
    local = blocker(*argv, cwd=scenario)
    utc = blocker(*argv, "--utc", cwd=scenario)
    assert utc.returncode == local.returncode, utc.stderr
    if argv[0] == "audit":  # the record's time column; the records' data keep the instants they hold
        local.stdout, utc.stdout = ("\n".join(line.split("  ")[1] for line in p.stdout.splitlines())
                                    for p in (local, utc))
    # By default: Paris time (CET and CEST: the orders span the DST change); with --utc: UTC only.
    assert offsets(local.stdout) >= {"+01:00"} and "+00:00" not in offsets(local.stdout), local.stdout
    assert offsets(utc.stdout) == {"+00:00"}, utc.stdout
    # The same instants, another zone: as many on each side.
    assert len(INSTANT.findall(utc.stdout)) == len(INSTANT.findall(local.stdout))
    if argv[0] in ("status", "report"):
        assert "(UTC)" in utc.stderr and "(Europe/Paris)" in local.stderr


def test_utc_values_are_the_same_instants(scenario: Path) -> None:
    # alpha lifts 2091-04-11 00:00 in Paris (CEST): 22:00 the day before in UTC.
    local = blocker("expiring", *ORDERS, *STATE, "--at", T, cwd=scenario)
    utc = blocker("expiring", *ORDERS, *STATE, "--at", T, "--utc", cwd=scenario)
    assert "2091-04-11T00:00:00+02:00" in local.stdout
    assert "2091-04-10T22:00:00+00:00" in utc.stdout and "2091-04-11T00:00:00+02:00" not in utc.stdout
    # JSON keeps its own offsets with or without --utc: a contract scripts read.
    plain = blocker("expiring", *ORDERS, *STATE, "--at", T, "--json", cwd=scenario)
    both = blocker("expiring", *ORDERS, *STATE, "--at", T, "--json", "--utc", cwd=scenario)
    assert plain.stdout == both.stdout


def test_audit_verify_json_says_what_the_lines_say(copy: Path) -> None:
    text = blocker("audit", "verify", *STATE, cwd=copy)
    data = json.loads(blocker("audit", "verify", *STATE, "--json", cwd=copy).stdout)
    assert text.returncode == 0
    assert data["ok"] is True and data["bad_line"] is None and data["reason"] is None
    assert f"audit trail intact: {data['records']} records, head {data['head']}" in text.stdout
    # Broken: one byte of the third record changed.
    trail = copy / "state" / "audit.jsonl"
    lines = trail.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"seq":3', b'"seq":9', 1) if b'"seq":3' in lines[2] else lines[2][:-2] + b" \n"
    trail.write_bytes(b"".join(lines))
    proc = blocker("audit", "verify", *STATE, "--json", cwd=copy)
    data = json.loads(proc.stdout)
    assert proc.returncode == 1 and data["ok"] is False and data["bad_line"] == 3 and data["reason"], data
    assert data["records"] == 2


def test_evidence_json_is_the_summary_of_the_pack(copy: Path) -> None:
    proc = blocker("evidence", "alpha", "--out", "pack", *ORDERS, *STATE, "--at", T, "--by", "J. Martin", "--json",
                   cwd=copy)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {"out", "order", "files", "records", "trail_records", "manifest_sha256", "exported_by",
                         "audit_ok"}
    assert (data["order"], data["exported_by"], data["audit_ok"]) == ("alpha", "J. Martin", True)
    assert data["out"] == str(copy / "pack")
    files = [p for p in (copy / "pack").rglob("*") if p.is_file()]
    assert data["files"] == len(files)  # as the text summary counts them (MANIFEST.sha256 included)
    assert 0 < data["records"] <= data["trail_records"]
    manifest = (copy / "pack" / "MANIFEST.sha256").read_bytes()
    assert hashlib.sha256(manifest).hexdigest() == data["manifest_sha256"]
    # The export is recorded in the trail, with or without --json.
    shown = blocker("audit", "show", *STATE, "--json", cwd=copy)
    assert json.loads(shown.stdout)[-1]["event"] == "evidence-exported"


def test_relative_config_paths_are_shown_absolute_in_errors(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("orders_dir: ordres\nstate_dir: etat\ntimezone: UTC\n")
    proc = blocker("status", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"orders folder {tmp_path / 'ordres'} (the config's orders_dir) does not exist" in proc.stderr
    proc = blocker("status", "--orders", "autres", cwd=tmp_path)
    assert proc.returncode == 2 and f"orders folder {tmp_path / 'autres'} (--orders) does not exist" in proc.stderr
    (tmp_path / "ordres").mkdir()
    for argv in (("report",), ("expiring",), ("audit", "show"), ("audit", "verify")):
        proc = blocker(*argv, cwd=tmp_path)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert f"{tmp_path / 'etat'}: no such state directory (the config's state_dir)" in proc.stderr, argv
    proc = blocker("report", "--state-dir", "ailleurs", cwd=tmp_path)
    assert f"{tmp_path / 'ailleurs'}: no such state directory (--state-dir)" in proc.stderr
