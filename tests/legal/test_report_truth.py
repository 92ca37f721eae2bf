"""Issue 12, "the legal report tells the truth, the whole truth", one outcome per test.

One history, built with the real `blocker apply` (run as if the clock read each instant:
tests/clock.py) on real order files, then read back with the real `report`, `expiring` and
`evidence` console scripts:

- `old` started and ended before blocker's first record (2092-01-10 12:00); `inherited` started
  before it and is still in force: neither gets a figure computed from history blocker never saw;
- `forced` was published and verified, then its file was lost and a person dropped it with
  `apply --force --checksum`: no court lifted it, and every output must say so, by whom, when, and
  the plan checksum they reviewed;
- `late` started at 00:00 but its file arrived at 12:00: the legal figure (from the start) and
  the operational one (from receipt) differ by those twelve hours;
- `idn` names `bücher-propagande.example.gg`, published as its A-label.

What the daemon's probes would record is written the way the daemon writes it (State.record_first).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import shutil
import subprocess
import sys
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from blocker.record.audit import current_actor
from blocker.record.state import State
from tests.clock import apply_at, run_at
from tests.support.cli import blocker as run_blocker

pytestmark = pytest.mark.integration  # every test here runs the blocker console script

PARIS = ZoneInfo("Europe/Paris")
BEFORE = "before blocker's records"
A_LABEL = "xn--bcher-propagande-jzb.example.gg"
U_LABEL = "bücher-propagande.example.gg"
T = "2092-01-25T12:00:00+01:00"  # the report instant

CONFIG = """\
timezone: Europe/Paris
state_dir: state
publish: {check: structural}
operators:
  orange: {name: Orange, reload: {kind: none}}
"""


def order_text(order_id: str, start: str, end: str, target: str) -> str:
    return (f"id: {order_id}\ncourt: Tribunal judiciaire de Paris\ncase_number: RG 92/{order_id}\n"
            f"decision_date: 2091-12-20\noperators: [orange]\nstart: {start}\n{end}\ntargets: [{target}]\n")


ORDERS = {
    "old": order_text("old", "2092-01-01", "end: 2092-01-05", "old.example"),
    "inherited": order_text("inherited", "2092-01-01", "duration: 3 months", "inherited.example"),
    "forced": order_text("forced", "2092-01-11", "duration: 6 months", "forced.example"),
    "idn": order_text("idn", "2092-01-11", "duration: 6 months", U_LABEL),
}
LATE = order_text("late", "2092-01-15", "duration: 6 months", "late.example")
FIRST_APPLY = "2092-01-10T12:00:00"  # blocker's first record
FORCE_AT = "2092-01-20T10:00:00"


def paris(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS)


blocker = functools.partial(run_blocker, config="config.yaml")
APPLY = ["--config", "config.yaml", "apply", "--orders", "orders", "--out", "zones", "--state-dir", "state"]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("truth")
    (root / "config.yaml").write_text(CONFIG)
    (root / "orders").mkdir()
    for name, text in ORDERS.items():
        (root / "orders" / f"{name}.yaml").write_text(text, encoding="utf-8")
    for at in (FIRST_APPLY, "2092-01-11T00:00:30"):
        code, out, err = apply_at(at, APPLY, cwd=root)
        assert code == 0, out + err
    (root / "orders" / "late.yaml").write_text(LATE)  # received twelve hours after its start
    code, out, err = apply_at("2092-01-15T12:00:00", APPLY, cwd=root)
    assert code == 0, out + err
    state = State(root / "state")
    state.record_first("inherited", "orange", "blocked", paris(2092, 1, 10, 12, 5))
    state.record_first("forced", "orange", "blocked", paris(2092, 1, 11, 0, 3))
    state.record_first("idn", "orange", "blocked", paris(2092, 1, 11, 0, 3))
    state.record_first("late", "orange", "blocked", paris(2092, 1, 15, 12, 7))
    # A probe saw `old`'s name resolve: blocker never published it, so that is no lift it verified.
    state.record_first("old", "orange", "lifted", paris(2092, 1, 10, 12, 5))
    state.close()
    # The file of `forced` is lost; apply refuses (it stays in force), then a person reviews the
    # plan that drops it and applies that very plan.
    (root / "orders" / "forced.yaml").unlink()
    code, out, err = apply_at(FORCE_AT, APPLY, cwd=root)
    assert code == 4 and "forced" in err, out + err
    instant = datetime.fromisoformat(FORCE_AT).replace(tzinfo=PARIS)
    code, out, err = run_at(instant, ["--config", "config.yaml", "plan", "--force", "--json", "--orders", "orders",
                                      "--state-dir", "state", "--out", "zones", "--at", FORCE_AT], cwd=root)
    assert code == 3, out + err
    checksum = json.loads(out)["checksum"]
    code, out, err = apply_at(FORCE_AT, [*APPLY, "--force", "--checksum", checksum], cwd=root)
    assert code == 0, out + err
    return {"root": str(root), "checksum": checksum}


def root_of(history: dict[str, str]) -> Path:
    return Path(history["root"])


def report(history: dict[str, str], fmt: str) -> str:
    proc = blocker("report", "--orders", "orders", "--at", T, "--format", fmt, cwd=root_of(history))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def rows(history: dict[str, str]) -> dict[str, dict]:
    return {r["id"]: r for r in json.loads(report(history, "json"))["orders"]}


def csv_rows(history: dict[str, str]) -> dict[str, dict[str, str]]:
    return {r["order"]: r for r in csv.DictReader(io.StringIO(report(history, "csv")))}


def section(text: str, order_id: str) -> str:
    """One order's block of the table report."""
    return next(b for b in text.split("\n\n") if b.startswith(order_id + "  "))


# removed by force ---------------------------------------------------------------------------------


def test_an_order_removed_by_force_stays_in_every_report_format(history: dict[str, str]) -> None:
    who, checksum = current_actor(), history["checksum"]
    when = "2092-01-20T10:00:00+01:00"
    j = rows(history)["forced"]
    assert j["status"] == "removed" and j["days_remaining"] is None
    assert j["ended"] == {"how": "removed-by-force", "by": who, "at": when, "checksum_reviewed": checksum,
                          "audit_seq": j["ended"]["audit_seq"]}
    assert isinstance(j["ended"]["audit_seq"], int)
    op = j["per_operator"][0]
    assert (op["block"], op["block_verified"], op["removed_from_zone"]) == (
        "verified", "2092-01-11T00:03:00+01:00", when)
    text = section(report(history, "table"), "forced")
    assert text.startswith("forced  REMOVED")
    assert (f"ended     REMOVED BY FORCE, without a court's lift: by {who}, {when}, reviewed plan checksum "
            f"{checksum}") in text
    c = csv_rows(history)["forced"]
    assert (c["status"], c["ended"], c["removed_by"], c["removed_at"], c["checksum_reviewed"]) == (
        "removed", "removed-by-force", who, when, checksum)
    html = report(history, "html")
    body = html.split('id="forced"', 1)[1].split("<section", 1)[0]
    assert "<b>removed by force</b>, without a court's lift: by " + who in body
    assert when in body and checksum in body
    # The orders still in force are not "removed".
    assert {r["id"]: r["status"] for r in rows(history).values()} == {
        "forced": "removed", "old": "expired", "inherited": "active", "idn": "active", "late": "active"}


def test_expiring_lists_the_order_removed_by_force(history: dict[str, str]) -> None:
    who, checksum = current_actor(), history["checksum"]
    proc = blocker("expiring", "--orders", "orders", "--at", T, "--within", "7d", "--json", cwd=root_of(history))
    assert proc.returncode == 0, proc.stderr  # nothing lifts within 7 days
    items = {i["id"]: i for i in json.loads(proc.stdout)}
    assert items["forced"]["reason"] == "removed-by-force"
    assert items["forced"]["ended"]["by"] == who and items["forced"]["ended"]["checksum_reviewed"] == checksum
    proc = blocker("expiring", "--orders", "orders", "--at", T, "--within", "7d", cwd=root_of(history))
    tail = proc.stdout.split("Removed by force (apply --force), without a court's lift:", 1)[1]
    assert re.search(rf"\nforced\s+2092-07-12T00:00:00\+02:00\s+{re.escape(who)}\s+2092-01-20T10:00:00\+01:00\s+"
                     rf"{checksum}\s+RG 92/forced", tail), tail


# before blocker's records --------------------------------------------------------------------------


def test_what_predates_blockers_records_gets_no_figure(history: dict[str, str]) -> None:
    r = rows(history)
    old, inherited = r["old"]["per_operator"][0], r["inherited"]["per_operator"][0]
    # Ended before blocker's first record: neither block nor lift is blocker's to measure, and a
    # name resolving later is no lift blocker verified.
    assert (old["block"], old["lift"], old["lift_verified"], old["time_to_lift_seconds"]) == (
        "before-records", "before-records", None, None)
    # Started before it, still in force: the block was seen, the legal figure is not computed.
    assert (inherited["block"], inherited["time_to_block_seconds"], inherited["time_to_block"]) == (
        "verified", None, BEFORE)
    assert inherited["time_to_block_from_receipt_seconds"] == 300.0
    assert r["inherited"]["predates_records"] is True and r["forced"]["predates_records"] is False
    text = report(history, "table")
    assert re.search(rf"orange\s+{BEFORE}\s+-\s+-\s+-\s+-\s+-\s+0\s+{BEFORE}\s+-", section(text, "old"))
    assert re.search(rf"orange\s+verified\s+\S+ #\d+\s+2092-01-10T12:05:00\+01:00\s+{BEFORE}\s+5 min",
                     section(text, "inherited"))
    assert not re.search(r"\d+ d( \d+ h)?", section(text, "inherited").split("TIME TO BLOCK", 1)[1])  # no "9 d 12 h"
    c = csv_rows(history)
    assert (c["old"]["block"], c["old"]["lift_state"]) == ("before-records", "before-records")
    assert (c["inherited"]["time_to_block_seconds"], c["inherited"]["time_to_block_note"]) == ("", BEFORE)
    html = report(history, "html")
    assert "blocker's own records begin" in html and "2092-01-10T12:00:00+01:00" in html
    old_html = html.split('id="old"', 1)[1].split("<section", 1)[0]
    assert old_html.count(BEFORE.replace("'", "&#39;")) >= 2 and ">verified<" not in old_html


def test_block_and_lift_columns_never_contradict_each_other(history: dict[str, str]) -> None:
    """Over every order and operator of every format: a lift is "verified" only for an order whose
    block was published (issue 12: block `not-published`, yet lift "verified")."""
    unpublished = {"not-published", "before-records", "pending", "unknown"}
    for order in rows(history).values():
        for op in order["per_operator"]:
            if op["block"] in unpublished:
                assert op["lift"] != "verified" and op["lift_verified"] is None, (order["id"], op)
    for line in csv_rows(history).values():
        if line["block"] in unpublished:
            assert line["lift_state"] != "verified" and line["lift_verified"] == ""


# time to block: from the start and from receipt -----------------------------------------------------


def test_time_to_block_from_the_start_and_from_receipt(history: dict[str, str]) -> None:
    late = rows(history)["late"]
    op = late["per_operator"][0]
    assert late["received"] == "2092-01-15T12:00:00+01:00" and late["start"] == "2092-01-15T00:00:00+01:00"
    assert (op["time_to_block_seconds"], op["time_to_block"]) == (12 * 3600 + 420.0, "12 h 7 min")
    assert (op["time_to_block_from_receipt_seconds"], op["time_to_block_from_receipt"]) == (420.0, "7 min")
    assert re.search(r"orange\s+verified\s+\S+ #\d+\s+2092-01-15T12:07:00\+01:00\s+12 h 7 min\s+7 min\s",
                     section(report(history, "table"), "late"))
    c = csv_rows(history)["late"]
    assert (c["time_to_block_seconds"], c["time_to_block_from_receipt_seconds"]) == ("43620.0", "420.0")
    html = report(history, "html").split('id="late"', 1)[1].split("<section", 1)[0]
    assert "<td>12 h 7 min</td><td>7 min</td>" in html


def test_metrics_give_both_figures_from_the_same_state(history: dict[str, str]) -> None:
    """The daemon's probe bookkeeping (run.metrics.observe_probe, fed as the daemon feeds it: the
    state's firsts and receipts) exposes both gauges on /metrics."""
    from blocker.config.load import load_config
    from blocker.orders.parse import parse_order
    from blocker.run.metrics import Snapshot, observe_probe, registry_for, render

    config = load_config(root_of(history) / "config.yaml")
    late = parse_order(LATE.encode(), "orders/late.yaml", config.order_rules)
    state = State(root_of(history) / "state")
    try:
        firsts = state.firsts()
        received = {oid: first for oid, (_n, first) in state.version_summary().items()}
    finally:
        state.close()
    snapshot = Snapshot(operators=("orange",))
    observe_probe(snapshot, "orange", [], {}, {"late": late}, firsts, paris(2092, 1, 25, 12), received)
    text = render(registry_for(snapshot)).decode()
    assert 'blocker_order_time_to_block_seconds{operator="orange",order="late"} 43620.0' in text
    assert 'blocker_order_time_to_block_from_receipt_seconds{operator="orange",order="late"} 420.0' in text


# names as the court wrote them ----------------------------------------------------------------------


def test_an_internationalised_name_shows_its_unicode_form_beside_the_a_label(history: dict[str, str],
                                                                           tmp_path: Path) -> None:
    zone = (root_of(history) / "zones").rglob("*")
    assert any(A_LABEL in p.read_text(errors="replace") for p in zone if p.is_file())  # what resolvers get
    j = rows(history)["idn"]
    assert j["targets"][0]["name"] == A_LABEL and j["targets"][0]["unicode_name"] == U_LABEL
    assert f"targets   {A_LABEL} ({U_LABEL})" in section(report(history, "table"), "idn")
    c = csv_rows(history)["idn"]
    assert (c["targets"], c["targets_unicode"]) == (A_LABEL, U_LABEL)
    html = report(history, "html")
    beside = f'<span class="mono">{A_LABEL}</span> <span class="ulabel">({U_LABEL})</span>'
    assert beside in html
    shutil.copytree(root_of(history), tmp_path / "w")
    proc = blocker("evidence", "idn", "--out", "pack", "--orders", "orders", "--at", T, "--by", "M. Dupont",
                   cwd=tmp_path / "w")
    assert proc.returncode == 0, proc.stderr
    assert beside in (tmp_path / "w" / "pack" / "index.html").read_text(encoding="utf-8")
    assert json.loads((tmp_path / "w" / "pack" / "report.json").read_text())["targets"][0]["unicode_name"] == U_LABEL


# readable by a lawyer: the legend ----------------------------------------------------------------


class _Cells(HTMLParser):
    """The text of every cell, per table class: {class: [[cell, ...] per row]}."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table.append(dict(attrs).get("class") or "")
        elif tag == "tr" and self._table:
            self.tables.setdefault(self._table[-1], []).append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._table:
            self._table.pop()
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[self._table[-1]][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _explained(legend: list[list[str]]) -> tuple[set[str], str]:
    """The words the legend's left column explains, and the text of its "Timeline kinds" row."""
    words: set[str] = set()
    kinds = ""
    for word, meaning in legend:
        if word == "Timeline kinds":
            kinds = meaning
            continue
        for prefix in ("Block / lift: ", "Block: ", "Lift: "):
            word = word.removeprefix(prefix)
        words |= {w.strip() for w in word.split(" / ")}
    return words, kinds


def test_every_internal_word_the_report_shows_is_in_its_legend(history: dict[str, str]) -> None:
    from blocker.legal.html import WORDS
    from blocker.legal.report import BLOCK_STATES, FLAGS, LIFT_STATES, STATUSES, TIMELINE_KINDS

    parser = _Cells()
    parser.feed(report(history, "html"))
    legend = [r for r in parser.tables["legend"] if r]
    assert len(legend) > 10 and all(len(r) == 2 and r[1] for r in legend)  # each word has its meaning
    words, kinds = _explained(legend)
    ops = [r for r in parser.tables["ops"] if r and r[0] != "Operator"]
    shown_block = {r[1] for r in ops}
    shown_lift = {r[8].split("removed from zone")[0].strip() for r in ops}
    shown_status = {word for r in parser.tables["summary"][1:] for word in r[2].split()}  # status, flag
    shown_kinds = {r[1] for r in parser.tables[""] if len(r) == 5 and r[1] != "Kind"}
    # This history shows a good share of the words; all of them must be explained ...
    assert {"verified", BEFORE} <= shown_block and {"not-due", BEFORE} <= shown_lift
    assert {"removed", "expired", "active"} <= shown_status and {"order", "publish", "verify", "lift"} <= shown_kinds
    for word in shown_block | shown_lift | shown_status:
        assert word in words, f"{word!r} is shown in the report but not explained in its legend"
    for kind in shown_kinds:
        assert f"{kind}:" in kinds, f"timeline kind {kind!r} is not explained in the legend"
    # ... and so must every word the report can show at all (the class, not only this history).
    for word in (*STATUSES, *FLAGS, *(WORDS.get(w, w) for w in (*BLOCK_STATES, *LIFT_STATES))):
        assert word in words, f"{word!r} can be shown but is not in the legend"
    for kind in TIMELINE_KINDS:
        assert f"{kind}:" in kinds
    # "zone-adopted by daemon", a bare internal event name, is said in words and explained.
    assert "zone already on disk taken as published" in words


# evidence: who exported it, and why two counts ----------------------------------------------------


def test_evidence_names_the_person_from_by_or_the_config(history: dict[str, str], tmp_path: Path) -> None:
    work = tmp_path / "w"
    shutil.copytree(root_of(history), work)
    account = current_actor()

    def export(out: str, *extra: str) -> tuple[str, str, dict, dict]:
        proc = blocker("evidence", "forced", "--out", out, "--orders", "orders", "--at", T, *extra, cwd=work)
        assert proc.returncode == 0, proc.stderr
        record = json.loads((work / "state" / "audit.jsonl").read_text().splitlines()[-1])
        assert record["event"] == "evidence-exported" and record["actor"] == account
        return proc.stdout, proc.stderr, json.loads((work / out / "export.json").read_text()), record

    out, err, export_json, record = export("by-flag", "--by", "Maître Dupont")
    assert "WARNING" not in err
    assert export_json["exported_by"] == "Maître Dupont" and export_json["account"] == account
    assert record["data"]["exported_by"] == "Maître Dupont"
    assert "exported by Maître Dupont" in out.splitlines()[0]
    index = (work / "by-flag" / "index.html").read_text(encoding="utf-8")
    assert f"by Maître Dupont (account {account})" in index
    # The one line explaining why the counts differ, with the counts verify.py itself prints.
    records, chain, trail = (export_json[k] for k in ("records_in_pack", "chain_hashes", "records_in_trail"))
    check = subprocess.run([sys.executable, "verify.py"], cwd=work / "by-flag", capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    assert f"OK: manifest, {records} audit record(s) and a chain of {chain} hash(es) to the head hold" in check.stdout
    assert records < chain <= trail  # the chain runs from the order's first record to the head
    line = (f"{records} record(s) concern this order; verify.py also checks the chain of {chain} hash(es) from the "
            "first of them to the head of the trail, so none between them was removed or altered (with --log "
            f"STATE_DIR/audit.jsonl it also checks all {trail} record(s) of the live trail)")
    assert f"({line})" in out.splitlines() and export_json["counts"] == line
    assert f"Why the counts differ: {line}." in index.replace("&#39;", "'")
    live = subprocess.run([sys.executable, "verify.py", "--log", str(work / "state" / "audit.jsonl")],
                          cwd=work / "by-flag", capture_output=True, text=True)
    assert live.returncode == 0, live.stdout
    # No flag: the config's legal.exported_by.
    (work / "config.yaml").write_text(CONFIG + "legal: {exported_by: Service juridique}\n")
    out, err, export_json, record = export("by-config")
    assert "WARNING" not in err
    assert export_json["exported_by"] == record["data"]["exported_by"] == "Service juridique"
    # Neither: still exported (a contract), but said: an account is no person.
    (work / "config.yaml").write_text(CONFIG)
    out, err, export_json, record = export("by-nobody")
    assert "no --by NAME (nor legal.exported_by)" in err
    assert export_json["exported_by"] == record["data"]["exported_by"] == account
