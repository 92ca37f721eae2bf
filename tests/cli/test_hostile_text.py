"""Hostile text in every string field of an order, and in its file name, forges nothing.

One order carries `\\n`, `\\r`, an ESC sequence, a bidi override and a line separator in its
court, case number, applicant, notes, early-lift reason, a url target and its file name;
another file is invalid, with the same text in its name, a key and a value. Every output a
person reads (validate, status, report as table, CSV and HTML, audit show, expiring, the
daemon's plain log) must show them escaped: no raw control, format or separator character, and
no line that starts with the forged text. Then every free-text field over its limit gets one
short error line (the 600 KB line of a 200,000-element `notes`).
"""

from __future__ import annotations

import subprocess
import unicodedata
from pathlib import Path

import pytest

from blocker.config.load import load_config
from blocker.orders.model import OrderError
from blocker.orders.parse import MAX_URL, TEXT_LIMITS, parse_order
from blocker.textsafe import MAX_LINE
from tests.support.cli import blocker
from tests.support.daemon import Env

FORGED = "FORGED: ok (evil, 1 targets)"
# As YAML double-quoted escapes: newline, CR, ESC [2J (clear screen), RLO, LINE SEPARATOR, NEL, CSI.
HOSTILE_YAML = r"x\n" + FORGED + r"\r" + FORGED + r"\e[2J\u202e\u2028" + FORGED + r"\x85\x9b31m end"
HOSTILE = "x\n" + FORGED + "\r" + FORGED + "\x1b[2J\u202e\u2028" + FORGED + "\x85\x9b31m end"
NAME = f"h\n{FORGED}\x1b[2J\u202e.yaml"  # a valid order's file name
BAD_NAME = f"b\r\n{FORGED}\u2028.yaml"  # an invalid order's file name

CONFIG = """\
timezone: Europe/Paris
state_dir: state
publish: {check: structural}
operators:
  orange: {name: Orange, reload: {kind: none}}
"""

VALID = f"""\
id: hostile
court: "{HOSTILE_YAML}"
case_number: "{HOSTILE_YAML}"
decision_date: 2025-12-01
applicant: "{HOSTILE_YAML}"
notes: "{HOSTILE_YAML}"
operators: [orange]
start: 2026-01-01
duration: 60 years
lifted:
  at: 2080-01-01
  reason: "{HOSTILE_YAML}"
targets:
  - hostile.example
  - url: "https://files.hostile.example/\\u202e\\x7f\\x9b/leak"
"""

INVALID = f"""\
id: broken
court: "{HOSTILE_YAML}"
"{HOSTILE_YAML}": 1
case_number: ["{HOSTILE_YAML}"]
decision_date: 2025-12-01
operators: ["{HOSTILE_YAML}"]
start: 2026-01-01
duration: 1 year
targets: ["{HOSTILE_YAML}"]
"""

ALLOWED_CONTROLS = {"\n"}  # between lines of the output itself


def assert_safe(what: str, text: str, shown: bool = True) -> None:
    bad = sorted({f"U+{ord(c):04X}" for c in text if c not in ALLOWED_CONTROLS
                  and unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp", "Cs"}})
    assert not bad, f"{what}: raw {', '.join(bad)} in:\n{text}"
    forged = [line for line in text.split("\n") if line.lstrip(" '\"").startswith("FORGED")]
    assert not forged, f"{what}: forged line(s) {forged}"
    if shown:
        assert "FORGED" in text, f"{what}: the hostile text is not shown at all"


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return blocker(*args, config="config.yaml", cwd=cwd, timeout=120)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "config.yaml").write_text(CONFIG)
    orders = tmp_path / "orders"
    orders.mkdir()
    (orders / NAME).write_text(VALID, encoding="utf-8")
    return tmp_path


@pytest.mark.integration
def test_every_output_escapes_hostile_text_in_every_field(root: Path) -> None:
    proc = run(root, "apply", "--orders", "orders", "--out", "zones", "--state-dir", "state")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (root / "orders" / BAD_NAME).write_text(INVALID, encoding="utf-8")
    validate = run(root, "validate", "--orders", "orders")
    assert validate.returncode == 1
    lines = validate.stdout.splitlines()
    assert sum(line.endswith("ok (hostile, 2 targets)") for line in lines) == 1
    assert all(line.startswith(("orders/h\\n", "orders/b\\r\\n")) for line in lines), lines
    outputs = {"validate": validate, "status": run(root, "status", "--orders", "orders"),
               "report table": run(root, "report", "--orders", "orders"),
               "report csv": run(root, "report", "--orders", "orders", "--format", "csv"),
               "audit show": run(root, "audit", "show"),
               "expiring": run(root, "expiring", "--orders", "orders", "--within", "99999d")}
    html = run(root, "report", "--orders", "orders", "--format", "html", "--out", "r.html")
    assert html.returncode == 1, html.stderr  # exit 1: an invalid file, the report is written anyway
    outputs["report html"] = subprocess.CompletedProcess([], 0, (root / "r.html").read_text(encoding="utf-8"),
                                                         html.stderr)
    for what, proc in outputs.items():
        assert_safe(f"{what} (stdout)", proc.stdout, shown=what != "status")  # status: no free text
        assert_safe(f"{what} (stderr)", proc.stderr, shown=False)
    assert "x\\nFORGED: ok (evil, 1 targets)\\r" in outputs["report table"].stdout
    assert "\\u202e" in outputs["report html"].stdout and "&lt;" not in HOSTILE


def test_the_daemons_plain_log_and_its_audit_records_escape_hostile_text(env: Env) -> None:
    (env.orders / NAME).write_text(VALID, encoding="utf-8")
    (env.orders / BAD_NAME).write_text(INVALID, encoding="utf-8")
    daemon = env.start(extra=("--log-format", "plain"))
    daemon.wait_reconciles(1)
    assert daemon.stop() == 0
    log = daemon.log_path.read_bytes().decode("utf-8")
    assert "invalid order file" in log and "FORGED" in log
    assert_safe("daemon log", log)
    assert all(line[:4].isdigit() for line in log.splitlines()), log  # every line is a record of its own
    show = blocker("audit", "show", "--state-dir", str(env.state), "--config", str(env.root / "blocker.yaml"))
    assert show.returncode == 0, show.stderr
    text = show.stdout
    assert "order-invalid" in text and "order-added" in text
    assert_safe("audit show after the daemon", text)


# bounded error lines -------------------------------------------------------------------------

BASE = {
    "id": "big", "court": "Tribunal", "case_number": "RG 1", "decision_date": "2025-12-01",
    "operators": "[orange]", "start": "2026-01-01", "duration": "1 year", "targets": "[big.example]",
}


def order_text(**fields: str) -> bytes:
    return "".join(f"{k}: {v}\n" for k, v in {**BASE, **fields}.items()).encode()


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    path.write_text(CONFIG)
    return load_config(path)


@pytest.mark.parametrize("field", sorted(TEXT_LIMITS))
def test_every_free_text_field_over_its_limit_gets_one_short_line(field: str, config) -> None:  # type: ignore[no-untyped-def]
    limit = TEXT_LIMITS[field]
    at_limit, over = "a" * limit, "a" * (limit + 1)
    if field == "lifted.reason":
        ok = order_text(lifted=f"{{at: 2026-06-01, reason: {at_limit}}}")
        bad = order_text(lifted=f"{{at: 2026-06-01, reason: {over}}}")
    else:
        ok, bad = order_text(**{field: at_limit}), order_text(**{field: over})
    assert not isinstance(parse_order(ok, "o.yaml", config.order_rules), list)
    errors = parse_order(bad, "o.yaml", config.order_rules)
    assert isinstance(errors, list) and len(errors) == 1, errors
    assert errors[0].field == field and f"at most {limit}" in str(errors[0])
    assert len(str(errors[0])) < 200


def test_a_url_target_over_its_limit_gets_one_short_line(config) -> None:  # type: ignore[no-untyped-def]
    url = "https://big.example/" + "a" * MAX_URL
    errors = parse_order(order_text(targets=f"[{{url: '{url}'}}]"), "o.yaml", config.order_rules)
    assert isinstance(errors, list) and [e.field for e in errors] == ["targets[0].url"]
    assert len(str(errors[0])) < 200


def test_the_example_a_200000_element_notes_gives_one_short_line(config) -> None:  # type: ignore[no-untyped-def]
    # It gave a 600 KB line, stored in the audit too.
    errors = parse_order(order_text(notes="[" + ", ".join(["x"] * 200_000) + "]"), "o.yaml", config.order_rules)
    assert isinstance(errors, list) and len(errors) == 1 and len(str(errors[0])) < 300, errors


@pytest.mark.parametrize("value", [
    "[" + ", ".join(["x"] * 20_000) + "]",
    "{" + ", ".join(f"k{i}: v" for i in range(5_000)) + "}",
    "'" + "é\u202e" * 20_000 + "'",
])
@pytest.mark.parametrize("field", ["notes", "court", "timezone", "action", "start", "operators"])
def test_any_huge_value_gives_a_bounded_error_line(field: str, value: str, config) -> None:  # type: ignore[no-untyped-def]
    errors = parse_order(order_text(**{field: value}), "o.yaml", config.order_rules)
    assert isinstance(errors, list) and errors
    for error in errors:
        assert len(str(error)) <= MAX_LINE and "\n" not in str(error)
        assert len(error.to_json()["message"]) <= 1000


def test_a_huge_key_and_a_huge_file_name_give_bounded_lines(config) -> None:  # type: ignore[no-untyped-def]
    data = order_text() + b"k" * 300_000 + b": 1\n"
    errors = parse_order(data, "d/" + "n" * 4000 + ".yaml", config.order_rules)
    assert isinstance(errors, list) and len(errors) == 1
    assert len(str(errors[0])) <= MAX_LINE


def test_at_most_100_errors_per_file(config) -> None:  # type: ignore[no-untyped-def]
    targets = "[" + ", ".join(f"bad_{i}..example" for i in range(5000)) + "]"
    errors = parse_order(order_text(targets=targets), "o.yaml", config.order_rules)
    assert isinstance(errors, list) and len(errors) == 101
    assert "at most 100 are reported" in str(errors[-1])


def test_order_error_is_escaped_and_bounded() -> None:
    error = OrderError("a\nb.yaml", "court\x1b", "x" * 10_000 + "\n", 3)
    text = str(error)
    assert text.startswith("a\\nb.yaml: court\\x1b: xxx") and "\n" not in text and len(text) <= MAX_LINE
    assert text.endswith(" (line 3)")
