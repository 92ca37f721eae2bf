"""`blocker report`, `expiring` and `evidence`, run as the legal team runs them, on a real state.

The state is built by the real CLI: `blocker apply` at five instants publishes, then lifts, four
orders with known windows. What the daemon's probes would record is then written the way the
daemon writes it (State.record_first / record_probe_outcome, and probe audit records). The
reports are checked against lift instants and days remaining worked out by hand.
"""

from __future__ import annotations

import csv
import getpass
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.clock import apply_at
from tests.support.legal import CONFIG, ORDERS, T, blocker

pytestmark = pytest.mark.integration  # every test here runs the blocker console script

OFFSET_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")


def report_json(cwd: Path, *extra: str) -> dict:
    proc = blocker("report", "--orders", "orders", "--state-dir", "state", "--at", T, "--format", "json", *extra,
                   cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_report_json_matches_the_known_windows(scenario: Path) -> None:
    data = report_json(scenario)
    assert data["at"] == T and data["audit"]["ok"] is True
    rows = {r["id"]: r for r in data["orders"]}
    assert [r["id"] for r in data["orders"]] == ["alpha", "charlie", "bravo", "delta"]
    a, b, c, d = rows["alpha"], rows["bravo"], rows["charlie"], rows["delta"]
    assert (a["status"], a["lift"], a["days_remaining"]) == ("active", "2091-04-11T00:00:00+02:00", 18)
    assert a["rule"] == "cpc-641: 3 months; in force through 2091-04-10 24:00 Europe/Paris"
    assert (a["court"], a["case_number"], a["applicant"]) == ("Tribunal judiciaire de Paris", "RG 91/00001", "CNIL")
    assert a["url_escalated"] == ["files.alpha.example"]
    assert (c["status"], c["lift"], c["days_remaining"]) == ("pending", "2091-06-12T00:00:00+02:00", 80)
    assert (b["status"], b["lift"], b["days_remaining"]) == ("expired", "2091-03-21T00:00:00+01:00", None)
    assert (d["status"], d["lift"], d["scheduled_end"]) == ("lifted", "2091-02-01T12:00:00+01:00",
                                                            "2092-01-16T00:00:00+01:00")
    assert d["rule"].startswith("lifted: mainlevée, ordonnance du 2091-01-31 (scheduled cpc-641: 1 year")
    ops = {(r["id"], o["operator"]): o for r in data["orders"] for o in r["per_operator"]}
    ao = ops[("alpha", "orange")]
    # alpha started at 00:00, blocker's records begin with the first apply at 12:00: the legal figure
    # would count twelve hours blocker never saw; the operational one (from receipt) is 7 minutes.
    assert (ao["block"], ao["block_verified"], ao["time_to_block_seconds"], ao["time_to_block"]) == (
        "verified", "2091-01-10T12:07:00+01:00", None, "before blocker's records")
    assert ao["time_to_block_from_receipt_seconds"] == 420.0 and a["predates_records"] is True
    assert (ao["first_published"], ao["lift"]) == ("2091-01-10T12:00:00+01:00", "not-due")
    assert (ao["last_verified"], ao["last_failure"], ao["failures"]) == (
        "2091-03-24T11:00:00+01:00", "2091-02-24T11:00:00+01:00", 1)
    bo = ops[("bravo", "orange")]
    assert (bo["time_to_block_seconds"], bo["lift"], bo["removed_from_zone"]) == (
        3720.0, "unverified", "2091-03-21T01:00:00+01:00")
    assert ops[("delta", "orange")]["lift"] == "verified"
    assert ops[("delta", "orange")]["time_to_lift_seconds"] == 12 * 3600 + 300
    assert ops[("delta", "sfr")]["lift"] == "unverified"
    assert ops[("charlie", "sfr")]["block"] == "pending"
    for row in data["orders"]:  # every date carries its UTC offset
        for key in ("start", "lift", "received"):
            assert OFFSET_ISO.match(row[key]), (key, row[key])
        for op in row["per_operator"]:
            for key in ("first_published", "block_verified", "last_verified", "lift_verified"):
                assert op[key] is None or OFFSET_ISO.match(op[key]), (key, op[key])
    timeline = [(e["kind"], e["operator"], e["text"]) for e in a["timeline"]]
    assert ("failure", "orange", "probe: alpha.example on r1: blocked -> not-blocked") in timeline
    assert ("verify", "orange", "block verified on every resolver (the start is before blocker's records)") in timeline
    assert ("verify", "sfr", "block verified on every resolver (the start is before blocker's records)") in timeline
    assert (b["ended"], d["ended"], a["ended"]) == ({"how": "lifted-on-schedule"}, {"how": "lifted-early"}, None)


def test_report_as_at_an_earlier_instant_shows_what_was_known_then(scenario: Path) -> None:
    proc = blocker("report", "--orders", "orders", "--state-dir", "state", "--at", "2091-01-10T12:08:00+01:00",
                   "--format", "json", cwd=scenario)
    rows = {r["id"]: r for r in json.loads(proc.stdout)["orders"]}
    ops = {o["operator"]: o for o in rows["alpha"]["per_operator"]}
    assert rows["alpha"]["days_remaining"] == 91
    assert (ops["orange"]["block"], ops["sfr"]["block"]) == ("verified", "published")  # sfr: seen at 12:09
    assert ops["orange"]["failures"] == 0 and ops["orange"]["last_verified"] is None
    assert rows["bravo"]["status"] == "pending"


def test_report_table_and_csv(scenario: Path) -> None:
    proc = blocker("report", "--orders", "orders", "--at", T, cwd=scenario)  # state_dir from the config
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "alpha  ACTIVE  18 day(s) left" in out
    assert "lift      2091-04-11T00:00:00+02:00" in out
    assert "rule      cpc-641: 3 months; in force through 2091-04-10 24:00 Europe/Paris" in out
    assert "files.alpha.example (url-escalated: https://files.alpha.example/d/leak.csv)" in out
    assert re.search(r"orange\s+verified\s+2091-01-10T12:00:00\+01:00 #\d+\s+2091-01-10T12:07:00\+01:00\s+"
                     r"before blocker.s records\s+7 min",
                     out)
    assert "audit trail intact" in proc.stderr
    proc = blocker("report", "--orders", "orders", "--state-dir", "state", "--at", T, "--format", "csv",
                   "--out", "report.csv", cwd=scenario)
    assert proc.returncode == 0 and proc.stdout == ""
    rows = list(csv.DictReader(io.StringIO((scenario / "report.csv").read_text(encoding="utf-8"))))
    assert [(r["order"], r["operator"]) for r in rows] == [
        ("alpha", "orange"), ("alpha", "sfr"), ("charlie", "sfr"), ("bravo", "orange"), ("delta", "orange"),
        ("delta", "sfr")]
    assert rows[0]["days_remaining"] == "18" and rows[0]["url_escalated"] == "files.alpha.example"
    assert (rows[0]["time_to_block_seconds"], rows[0]["time_to_block_note"]) == ("", "before blocker's records")
    assert rows[0]["time_to_block_from_receipt_seconds"] == "420.0"


def png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and the raw (filtered) scanlines of a PNG, with the standard library only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def test_html_report_opens_in_headless_chromium(scenario: Path, tmp_path: Path) -> None:
    assert shutil.which("chromium"), "Debian chromium is missing: `make test` installs it"
    out = tmp_path / "report.html"
    proc = blocker("report", "--orders", "orders", "--state-dir", "state", "--at", T, "--format", "html",
                   "--out", str(out), cwd=scenario)
    assert proc.returncode == 0, proc.stderr
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "2091-04-11T00:00:00+02:00" in html
    assert not re.search(r"<(script|link|img|iframe)\b|src=|@import|url\(", html, re.IGNORECASE)
    # The early-lift reason is said once (the facts' "Early lift" row), not again in each rule cell.
    assert html.count("mainlevée, ordonnance du 2091-01-31") == 1
    png = tmp_path / "report.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1200,2000",
           out.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert png.is_file(), "chromium wrote no screenshot"
    data = png.read_bytes()
    assert len(data) > 20_000
    width, height, raw = png_pixels(data)
    assert (width, height) == (1200, 2000)
    assert len(set(raw[: len(raw) // 4])) > 16  # text, tables and badges, not a blank page
    assert raw.count(0xFF) < len(raw) * 0.98


def test_expiring_exit_codes_and_json(scenario: Path) -> None:
    base = ("expiring", "--orders", "orders", "--state-dir", "state")
    proc = blocker(*base, "--at", T, "--within", "30d", "--json", cwd=scenario)
    assert proc.returncode == 1, proc.stderr
    items = json.loads(proc.stdout)
    assert [(i["id"], i["reason"]) for i in items] == [
        ("alpha", "expires-within"), ("delta", "lift-unverified"), ("bravo", "lift-unverified")]
    assert (items[0]["lift"], items[0]["days_remaining"]) == ("2091-04-11T00:00:00+02:00", 18)
    assert items[1]["unverified_operators"] == ["sfr"] and items[2]["unverified_operators"] == ["orange"]
    # delta ended 51 days before T: past probe.recent_window_days (30), no probe will verify it now.
    assert [i["probes_stopped"] for i in items] == [False, True, False]
    proc = blocker(*base, "--at", T, "--within", "2w", cwd=scenario)  # alpha is 18 days away
    assert proc.returncode == 0, proc.stdout
    assert "No order lifts within 2w" in proc.stdout and "bravo" in proc.stdout
    proc = blocker(*base, "--at", "2091-04-10T13:00:00+02:00", "--within", "12h", cwd=scenario)
    assert proc.returncode == 1 and "alpha" in proc.stdout.split("Ended")[0]
    proc = blocker(*base, "--at", T, "--within", "30 days", cwd=scenario)
    assert proc.returncode == 1
    proc = blocker(*base, "--within", "30x", cwd=scenario)
    assert proc.returncode == 2 and "--within" in proc.stderr


def test_read_commands_change_nothing_and_create_no_state(scenario: Path) -> None:
    def digests() -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((scenario / "state").iterdir())
                if p.name in ("state.sqlite3", "audit.jsonl", "audit.head")}

    before = digests()
    for args in (("report", "--at", T, "--format", "json"), ("expiring", "--at", T), ("audit", "show")):
        blocker(*args, cwd=scenario)
    assert digests() == before
    # A mistyped state folder is a usage error naming it (issue 9, section 10), and is not created.
    for args in (("report", "--orders", "orders"), ("expiring", "--orders", "orders", "--at", T)):
        proc = blocker(*args, "--state-dir", "missing", cwd=scenario)
        assert proc.returncode == 2 and "missing: no such state directory (--state-dir)" in proc.stderr
        assert not (scenario / "missing").exists()
    proc = blocker("evidence", "alpha", "--out", "p", "--state-dir", "missing", cwd=scenario)
    assert proc.returncode == 2 and not (scenario / "missing").exists() and not (scenario / "p").exists()
    # An existing folder with no state yet is a fresh install, not a typo: it says so, exit 0.
    (scenario / "fresh").mkdir()
    try:
        proc = blocker("report", "--orders", "orders", "--state-dir", "fresh", "--at", T, cwd=scenario)
        assert proc.returncode == 0 and "no state in fresh" in proc.stderr
    finally:
        (scenario / "fresh").rmdir()


def test_report_from_the_state_alone_when_the_orders_folder_is_elsewhere(scenario: Path) -> None:
    # The configured orders folder is not on this host: the state's versions are the orders. (A
    # mistyped `--orders` is a usage error instead: test_mistyped_paths_in_read_commands_exit_2.)
    (scenario / "elsewhere.yaml").write_text(CONFIG + "orders_dir: elsewhere\n")
    proc = blocker("report", "--config", "elsewhere.yaml", "--state-dir", "state", "--at", T, "--format", "json",
                   cwd=scenario)
    assert proc.returncode == 1 and "orders folder does not exist" in proc.stderr
    rows = json.loads(proc.stdout)["orders"]
    assert [(r["id"], r["flag"], r["lift"]) for r in rows] == [
        ("alpha", None, "2091-04-11T00:00:00+02:00"), ("charlie", None, "2091-06-12T00:00:00+02:00"),
        ("bravo", None, "2091-03-21T00:00:00+01:00"), ("delta", None, "2091-02-01T12:00:00+01:00")]


def test_invalid_file_keeps_its_last_good_version_in_the_report(copy: Path) -> None:
    (copy / "orders" / "alpha.yaml").write_text("id: alpha\nduraton: 3 months\n")
    proc = blocker("report", "--orders", "orders", "--state-dir", "state", "--at", T, "--format", "json", cwd=copy)
    assert proc.returncode == 1 and "alpha.yaml" in proc.stderr
    alpha = next(r for r in json.loads(proc.stdout)["orders"] if r["id"] == "alpha")
    assert (alpha["flag"], alpha["lift"], alpha["status"]) == ("invalid-file", "2091-04-11T00:00:00+02:00", "active")


def test_evidence_pack_is_complete_and_checkable(copy: Path) -> None:
    # A second version of the order, applied: both versions must be in the pack.
    original = (copy / "orders" / "alpha.yaml").read_bytes()
    (copy / "orders" / "alpha.yaml").write_text(ORDERS["alpha"] + "  - alpha-mirror.example\n")
    code, out, err = apply_at("2091-03-22T10:00:00+01:00", ["--config", "config.yaml", "apply", "--orders", "orders",
                                                            "--out", "zones", "--state-dir", "state"], cwd=copy)
    assert code == 0, out + err
    proc = blocker("evidence", "alpha", "--out", "pack", "--orders", "orders", "--state-dir", "state", "--at", T,
                   cwd=copy)
    assert proc.returncode == 0, proc.stderr
    pack = copy / "pack"
    names = {p.relative_to(pack).as_posix() for p in pack.rglob("*") if p.is_file()}
    versions = sorted(n for n in names if n.startswith("order/v") and n.endswith(".yaml"))
    assert len(versions) == 2 and (pack / versions[0]).read_bytes() == original
    assert {"index.html", "MANIFEST.sha256", "verify.py", "report.json", "order/versions.json",
            "audit/records.jsonl", "audit/chain.txt", "audit/chain-proof.json", "zones/serials.csv",
            "probes/probe-records.jsonl", "probes/state.json"} <= names
    manifest = (pack / "MANIFEST.sha256").read_text().splitlines()
    assert sorted(line.split("  ", 1)[1] for line in manifest) == sorted(names - {"MANIFEST.sha256"})
    assert subprocess.run(["sha256sum", "--quiet", "-c", "MANIFEST.sha256"], cwd=pack).returncode == 0
    records = [json.loads(x) for x in (pack / "audit/records.jsonl").read_text().splitlines()]
    assert all(r["data"].get("order") == "alpha" or "alpha" in r["data"].get("orders", []) for r in records)
    assert {"order-added", "order-changed", "entries-activated", "zone-published", "probe-verdict-change",
            "order-verified", "probe-pass"} <= {r["event"] for r in records}
    changed = next(r for r in records if r["event"] == "order-changed")
    assert changed["data"]["changes"]["targets"]["added"] == ["alpha-mirror.example"]
    trail = (copy / "state" / "audit.jsonl").read_text().splitlines()
    exported = json.loads(trail[-1])
    chain = (pack / "audit/chain.txt").read_text().splitlines()
    proof = json.loads((pack / "audit/chain-proof.json").read_text())
    head = json.loads(trail[-2])  # the head when the pack was written: the export record came after
    assert chain[-1] == f"{head['seq']} {head['hash']}" and proof["head"] == {"seq": head["seq"], "hash": head["hash"]}
    assert int(chain[0].split()[0]) == records[0]["seq"]
    serials = list(csv.DictReader(io.StringIO((pack / "zones/serials.csv").read_text())))
    assert {r["operator"] for r in serials} == {"orange", "sfr"} and all(OFFSET_ISO.match(r["published_at"])
                                                                         for r in serials)
    report = json.loads((pack / "report.json").read_text())
    assert (report["id"], report["lift"], report["days_remaining"]) == ("alpha", "2091-04-11T00:00:00+02:00", 18)
    probes = json.loads((pack / "probes/state.json").read_text())
    assert {"operator": "orange", "kind": "blocked", "at": "2091-01-10T12:07:00+01:00"} in probes["probe_firsts"]
    # The export is itself an audited operator action, naming the manifest it produced.
    assert exported["event"] == "evidence-exported" and exported["actor"] == getpass.getuser()
    assert exported["data"]["order"] == "alpha"
    assert exported["data"]["manifest_sha256"] == hashlib.sha256((pack / "MANIFEST.sha256").read_bytes()).hexdigest()
    assert blocker("audit", "verify", "--state-dir", "state", cwd=copy).returncode == 0
    # The pack checks itself, also against the live trail, and catches an edited record.
    verify = [sys.executable, "verify.py"]
    assert subprocess.run(verify, cwd=pack, capture_output=True).returncode == 0
    ok = subprocess.run([*verify, "--log", str(copy / "state" / "audit.jsonl")], cwd=pack, capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stdout
    text = (pack / "audit/records.jsonl").read_text().replace('"RG 91/00001"', '"RG 91/00009"', 1)
    (pack / "audit/records.jsonl").write_text(text)
    bad = subprocess.run(verify, cwd=pack, capture_output=True, text=True)
    assert bad.returncode == 1 and "does not match its hash" in bad.stdout and "differs from MANIFEST" in bad.stdout
    html = (pack / "index.html").read_text()
    assert "Evidence pack: alpha" in html and not re.search(r"<(script|link|img)\b|src=", html, re.IGNORECASE)


def test_evidence_refuses_a_used_folder_and_unknown_orders_and_falls_back_to_the_file(copy: Path) -> None:
    (copy / "used").mkdir()
    (copy / "used" / "x").write_text("x")
    proc = blocker("evidence", "alpha", "--out", "used", "--orders", "orders", cwd=copy)
    assert proc.returncode == 1 and "not an empty folder" in proc.stderr
    proc = blocker("evidence", "nope", "--out", "p1", "--orders", "orders", cwd=copy)
    assert proc.returncode == 1 and "unknown order 'nope'" in proc.stderr
    (copy / "orders" / "echo.yaml").write_text(ORDERS["charlie"].replace("id: charlie", "id: echo"))
    proc = blocker("evidence", "echo", "--out", "p2", "--orders", "orders", "--at", T, cwd=copy)
    assert proc.returncode == 0, proc.stderr
    listing = json.loads((copy / "p2" / "order" / "versions.json").read_text())
    assert [v["file"] for v in listing] == ["order/current-echo.yaml"]
    assert listing[0]["note"] == "never applied: the current file"


def test_evidence_with_a_fifo_in_the_orders_place_does_not_hang(copy: Path) -> None:
    # The order stays in force from the state; its file is now a FIFO nobody writes to.
    (copy / "orders" / "alpha.yaml").unlink()
    os.mkfifo(copy / "orders" / "alpha.yaml")
    proc = blocker("evidence", "alpha", "--out", "pack", "--orders", "orders", "--state-dir", "state", "--at", T,
                   cwd=copy)
    assert proc.returncode in (0, 1), proc.stderr  # 1: the folder holds an invalid file, said on stderr
    assert (copy / "pack" / "MANIFEST.sha256").is_file()


PAGE_MARGIN_MM = 14  # report.css: @page { size: A4; margin: 14mm }
H1_PX = 22  # report.css h1 font size, kept in print: the yardstick of Chromium's shrink-to-fit


def print_to_pdf(html: Path, pdf: Path, profile: Path, *, header_footer: bool = False) -> None:
    """Chromium's print to PDF, as a person would print the report (without the browser's
    header and footer unless asked: the negative case of the check below)."""
    flags = [] if header_footer else ["--no-pdf-header-footer", "--print-to-pdf-no-header"]
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}", *flags, f"--print-to-pdf={pdf}", html.as_uri()],
                   capture_output=True, timeout=90, stdin=subprocess.DEVNULL)
    assert pdf.is_file() and pdf.read_bytes().startswith(b"%PDF"), "chromium wrote no PDF"


def _pgm_pages(folder: Path) -> list[tuple[int, int, bytes]]:
    pages = []
    for path in sorted(folder.glob("page-*.pgm")):
        data = path.read_bytes()
        magic, w, h, maxval, pixels = data.split(maxsplit=4)
        assert magic == b"P5" and maxval == b"255"
        pages.append((int(w), int(h), pixels[: int(w) * int(h)]))
    return pages


def print_problems(pdf: Path, work: Path) -> list[str]:
    """Everything that makes a printed page wrong, found on the PDF itself; [] when it is right.

    - ink in any margin band (12 mm from each edge, inside the 14 mm margin), pages rendered with
      pdftoppm: a browser header or footer, or anything drawn past the margin;
    - a page that is not A4, or blank;
    - text shrunk: Chromium does not draw past the page area, it scales a page that is too wide
      down (the whole page: the title's height shows it) and, past its limit, cuts off what still
      does not fit (that text is then absent from the PDF).
    """
    problems = []
    pages_dir = work / "pages"
    pages_dir.mkdir()
    subprocess.run(["pdftoppm", "-r", "50", "-gray", str(pdf), str(pages_dir / "page")], check=True, timeout=60)
    for n, (w, h, px) in enumerate(_pgm_pages(pages_dir), start=1):
        if abs(w / h - 210 / 297) > 0.01:
            problems.append(f"page {n}: not A4 ({w}x{h})")
        band = int(w * 12 / 210)
        rows = [px[y * w:(y + 1) * w] for y in range(h)]
        for side, strip in (("top", rows[:band]), ("bottom", rows[h - band:]),
                            ("left", [r[:band] for r in rows]), ("right", [r[w - band:] for r in rows])):
            if min(min(r) for r in strip) <= 200:
                problems.append(f"page {n}: ink in the {side} margin")
        if min(px) >= 100:
            problems.append(f"page {n}: blank")
    words = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    first = re.search(r'<word xMin="[\d.]+" yMin="([\d.]+)" xMax="[\d.]+" yMax="([\d.]+)">', words)
    if first is None:
        return [*problems, "no text in the PDF"]
    # DejaVu Sans: a word's box is 1.164 em high; 1 CSS px is 0.75 pt.
    scale = (float(first.group(2)) - float(first.group(1))) / (H1_PX * 0.75 * 1.164)
    if scale < 0.98:
        problems.append(f"text shrunk to {scale:.0%} to fit the page width")
    return problems


def test_html_report_prints_on_a4_without_ink_past_the_margin(scenario: Path, tmp_path: Path) -> None:
    """Chromium prints the report to PDF; nothing in any margin, no browser header or footer (no
    file path in the print's text), nothing shrunk or cut off. The same checker fails a print with
    the browser's header and footer, and one with an element wider than the page."""
    assert shutil.which("chromium") and shutil.which("pdftoppm"), "`make test` installs chromium and poppler-utils"
    out = tmp_path / "report.html"
    proc = blocker("report", "--orders", "orders", "--state-dir", "state", "--at", T, "--format", "html",
                   "--out", str(out), cwd=scenario)
    assert proc.returncode == 0, proc.stderr
    pdf = tmp_path / "report.pdf"
    print_to_pdf(out, pdf, tmp_path / "profile")
    (tmp_path / "ok").mkdir()
    assert print_problems(pdf, tmp_path / "ok") == []
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "file://" not in text and out.name not in text  # no browser footer with the file's path
    assert "2091-04-11T00:00:00+02:00" in text and "What the words mean" in text
    pages = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert int(re.search(r"Pages:\s+(\d+)", pages).group(1)) >= 4  # type: ignore[union-attr]  # summary + orders

    # The checker can fail: the browser's own header (date, title) and footer (the file's path) ...
    with_footer = tmp_path / "footer.pdf"
    print_to_pdf(out, with_footer, tmp_path / "profile", header_footer=True)
    (tmp_path / "footer").mkdir()
    found = print_problems(with_footer, tmp_path / "footer")
    assert "page 1: ink in the top margin" in found and "page 1: ink in the bottom margin" in found
    footer_text = subprocess.run(["pdftotext", str(with_footer), "-"], capture_output=True, text=True).stdout
    assert out.as_uri() in footer_text
    # ... and an element wider than the page: shrunk to fit, or (wider still) cut off at the margin.
    html = out.read_text(encoding="utf-8")
    for width, expected in ((195, "shrunk"), (600, "shrunk")):
        wide = tmp_path / f"wide{width}.html"
        wide.write_text(html.replace("</h1>", f'</h1><table style="width:{width}mm"><tr><td>START</td>'
                                     '<td style="text-align:right">ENDMARK</td></tr></table>', 1), encoding="utf-8")
        printed = tmp_path / f"wide{width}.pdf"
        print_to_pdf(wide, printed, tmp_path / "profile")
        (tmp_path / f"w{width}").mkdir()
        assert any(expected in p for p in print_problems(printed, tmp_path / f"w{width}")), width
    cut = subprocess.run(["pdftotext", str(tmp_path / "wide600.pdf"), "-"], capture_output=True, text=True).stdout
    assert "START" in cut and "ENDMARK" not in cut  # what Chromium cuts off is lost: why shrinking is checked
