"""One odd file in the orders folder (issue 9, section 2), and errors a person can act on (section 10).

Real files of every type a folder can hold, real `blocker` processes; the daemon cases are in
tests/test_faults_daemon.py.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocker.config.load import load_config
from blocker.orders.load import load_orders, stat_signature
from blocker.orders.model import Order, OrderCache
from blocker.textsafe import display_path
from tests.support.cli import BLOCKER
from tests.support.cli import blocker as run_blocker
from tests.support.properties import examples

pytestmark = pytest.mark.integration  # most tests here run the blocker console script

REPO = Path(__file__).resolve().parents[2]
CONFIG = load_config(REPO / "blocker" / "config" / "default.yaml")

ORDER = """\
id: {id}
court: Tribunal judiciaire de Paris
case_number: RG 26/53123
decision_date: 2026-11-18
operators: [orange]
start: 2026-11-20
duration: 18 months
targets:
  - {id}.example.gg
"""

CLI_CONFIG = """\
timezone: Europe/Paris
orders_dir: orders
state_dir: state
zones_dir: zones
publish: {check: structural}
operators:
  orange: {name: Orange, reload: {kind: none}}
"""


def order(folder: Path, order_id: str, name: str | None = None) -> Path:
    path = folder / (name or f"{order_id}.yaml")
    path.write_text(ORDER.format(id=order_id))
    return path


# Undecodable output is replaced, not fatal, and crashes are the subject of some tests here.
blocker = functools.partial(run_blocker, config="config.yaml", errors="replace", clean=False)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "config.yaml").write_text(CLI_CONFIG)
    (tmp_path / "orders").mkdir()
    order(tmp_path / "orders", "good")
    return tmp_path


# ------------------------------------------------------------------------------------------
# every kind of odd entry named like an order file


def _fifo(p: Path) -> None:
    os.mkfifo(p)


def _folder(p: Path) -> None:
    p.mkdir()
    order(p, "inside")  # what a folder holds is not an order of this folder


def _dangling(p: Path) -> None:
    p.symlink_to(p.with_name("gone.txt"))


def _loop(p: Path) -> None:
    p.symlink_to(p.name)


def _socket(p: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(p))
    sock.close()  # the socket file stays


def _device(p: Path) -> None:
    p.symlink_to("/dev/zero")  # would be read for ever


ODD: dict[str, tuple[Callable[[Path], None], str]] = {
    "fifo": (_fifo, "is a FIFO, not an order file"),
    "folder": (_folder, "is a folder, not an order file"),
    "dangling-link": (_dangling, "dangling symbolic link"),
    "link-loop": (_loop, "symbolic link loop"),
    "socket": (_socket, "is a socket, not an order file"),
    "link-to-device": (_device, "is a character device, not an order file"),
}


@pytest.mark.parametrize("kind", sorted(ODD))
def test_an_odd_entry_is_refused_with_a_reason_and_the_others_load(tmp_path: Path, kind: str) -> None:
    make, reason = ODD[kind]
    order(tmp_path, "good")
    make(tmp_path / "x.yaml")
    outcome: list = []
    loader = threading.Thread(target=lambda: outcome.append(load_orders(tmp_path, CONFIG.order_rules, OrderCache())),
                              daemon=True)
    loader.start()
    loader.join(10)
    assert outcome, f"load_orders blocked on a {kind}"
    result = outcome[0]
    assert list(result.orders) == ["good"]
    assert result.invalid_files == {str(tmp_path / "x.yaml")}
    assert [(e.path, e.field) for e in result.errors] == [(str(tmp_path / "x.yaml"), "(file)")]
    assert reason in result.errors[0].message


def test_a_link_to_a_regular_file_is_followed(tmp_path: Path) -> None:
    """Refusing links would break a folder of links into a case archive; what is checked and
    stored is the content read, whatever the link points to."""
    archive = tmp_path / "archive"
    archive.mkdir()
    target = order(archive, "linked", "2026-11-18.yaml")
    orders = tmp_path / "orders"
    orders.mkdir()
    (orders / "linked.yaml").symlink_to(target)
    result = load_orders(orders, CONFIG.order_rules)
    assert result.ok and result.orders["linked"].path == str(orders / "linked.yaml")


def test_a_fifo_swapped_in_after_the_listing_does_not_hang_the_reader(tmp_path: Path) -> None:
    from blocker.orders.load import _read_and_parse

    os.mkfifo(tmp_path / "late.yaml")
    started = time.monotonic()
    item, cacheable = _read_and_parse(str(tmp_path / "late.yaml"), CONFIG.order_rules)
    assert time.monotonic() - started < 2
    assert isinstance(item, list) and "FIFO" in item[0].message and not cacheable


def test_validate_reports_every_odd_entry_one_line_each(work: Path) -> None:
    folder = work / "orders"
    for name, (make, _reason) in sorted(ODD.items()):
        make(folder / f"{name}.yaml")
    os.close(os.open(os.fsencode(folder) + b"/d\xe9cision.yaml", os.O_CREAT | os.O_WRONLY, 0o644))
    proc = blocker("validate", cwd=work, timeout=20)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for name, (_make, reason) in ODD.items():
        assert [ln for ln in lines if f"/{name}.yaml: (file): " in ln and reason in ln], (name, lines)
    assert any("d\\xe9cision.yaml: (file): file name is not valid UTF-8" in ln for ln in lines), lines
    assert "good.yaml: ok" in proc.stdout
    assert f"1 valid, {len(ODD) + 1} invalid" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unreadable_file_is_refused_even_for_root(work: Path) -> None:
    """Tests run as root, who reads a chmod 000 file: run `validate` without the capabilities
    that let root ignore file permissions, as an unprivileged daemon user would be."""
    bad = order(work / "orders", "secret")
    bad.chmod(0)
    argv = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "--",
            str(BLOCKER), "--config", "config.yaml", "validate"]
    proc = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "orders/secret.yaml: (file): cannot read: Permission denied" in proc.stdout
    assert "good.yaml: ok" in proc.stdout


# ------------------------------------------------------------------------------------------
# names that are not UTF-8 never reach a sink


def _all_text(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in _all_text(k) + _all_text(v)]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [t for v in value for t in _all_text(v)]
    if hasattr(value, "__dataclass_fields__"):
        return [t for f in value.__dataclass_fields__ for t in _all_text(getattr(value, f))]
    return []


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b and b"\0" not in b))
def test_no_text_from_a_load_cannot_be_encoded(tmp_path: Path, stem: bytes) -> None:
    """Whatever bytes a name holds, every string the loader hands on (to SQLite, the audit JSON,
    logs, metrics, HTML) encodes as UTF-8: an undecodable name is refused at loading, escaped."""
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    order(folder, "good")
    raw = os.fsencode(folder) + b"/" + stem + b".yaml"
    if stem.startswith(b"."):
        return
    with open(raw, "wb") as fh:
        fh.write(ORDER.format(id="other").encode())
    result = load_orders(folder, CONFIG.order_rules)
    for text in _all_text(result):
        text.encode("utf-8")  # raises on a lone surrogate
    decodable = True
    try:
        stem.decode("utf-8")
    except UnicodeDecodeError:
        decodable = False
    if decodable:
        assert set(result.orders) == {"good", "other"} or not result.ok
    else:
        assert list(result.orders) == ["good"]
        assert [e.path for e in result.errors] == [display_path(os.fsdecode(raw))]
        assert "\\x" in result.errors[0].path


def test_a_non_utf8_name_stops_nothing_else_in_apply_and_reports(work: Path) -> None:
    """Before: `apply` exited 70 (UnicodeEncodeError from SQLite) and no order was ever lifted."""
    folder = work / "orders"
    with open(os.fsencode(folder) + b"/d\xe9cision.yaml", "wb") as fh:
        fh.write(ORDER.format(id="latin1").encode())
    proc = blocker("apply", cwd=work)
    # Fail closed: apply publishes nothing while a file is invalid; one line names it, escaped.
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "d\\xe9cision.yaml: (file): file name is not valid UTF-8" in proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    for args in (("status",), ("report", "--format", "json"), ("report", "--format", "html"),
                 ("report", "--format", "csv"), ("expiring",)):
        proc = blocker(*args, cwd=work)
        assert proc.returncode in (0, 1) and "internal error" not in proc.stderr, (args, proc.stderr)


# ------------------------------------------------------------------------------------------
# an edit in place that keeps size and mtime


def test_verify_notices_an_edit_that_kept_size_and_mtime(tmp_path: Path) -> None:
    path = order(tmp_path, "same")
    cache = OrderCache()
    first = load_orders(tmp_path, CONFIG.order_rules, cache).orders["same"]
    before = path.stat()
    text = path.read_text().replace("same.example.gg", "lame.example.gg")
    assert len(text) == before.st_size
    with path.open("r+") as fh:  # in place: same inode
        fh.write(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_ino == before.st_ino and stat_signature(tmp_path) == (("same.yaml", before.st_mtime_ns,
                                                                                  before.st_size),)
    assert load_orders(tmp_path, CONFIG.order_rules, cache).orders["same"] is first  # the stat key is fooled
    fresh = load_orders(tmp_path, CONFIG.order_rules, cache, verify=True).orders["same"]
    assert isinstance(fresh, Order) and [t.name for t in fresh.targets] == ["lame.example.gg"]
    assert fresh.digest != first.digest


def test_the_watch_signature_notices_a_dangling_link_appearing(tmp_path: Path) -> None:
    order(tmp_path, "a")
    before = stat_signature(tmp_path)
    (tmp_path / "b.yaml").symlink_to(tmp_path / "nowhere")
    assert stat_signature(tmp_path) != before


# ------------------------------------------------------------------------------------------
# section 10: mistyped paths, internal errors


READ_COMMANDS = [
    ("report",), ("expiring",), ("audit", "show"), ("audit", "verify"), ("evidence", "good", "--out", "pack"),
]  # not `plan`: a plan before the first `apply` names the state folder that apply will create
ORDERS_COMMANDS = [("validate",), ("status",), ("report",), ("expiring",), ("plan",), ("render", "--out", "r"),
                   ("probe", "--operator", "orange", "--resolver", "127.0.0.1:9"), ("evidence", "good", "--out", "p")]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_mistyped_state_dir_exits_2_naming_it(work: Path, args: tuple[str, ...]) -> None:
    assert blocker("apply", cwd=work).returncode == 0
    proc = blocker(*args, "--state-dir", "stat", cwd=work)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "stat" in proc.stderr and "--state-dir" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not (work / "stat").exists()


@pytest.mark.parametrize("args", ORDERS_COMMANDS, ids=lambda a: a[0])
def test_a_mistyped_orders_folder_exits_2_naming_it(work: Path, args: tuple[str, ...]) -> None:
    assert blocker("apply", cwd=work).returncode == 0
    proc = blocker(*args, "--orders", "ordres", cwd=work)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "ordres (--orders) does not exist" in proc.stderr and "unknown" not in proc.stdout


def test_a_missing_configured_state_dir_is_named_too(work: Path) -> None:
    proc = blocker("report", cwd=work)
    assert proc.returncode == 2 and "state: no such state directory (the config's state_dir)" in proc.stderr


def _crash_file(stderr: str) -> Path:
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("blocker: internal error: ") and "full traceback in " in stderr, stderr
    return Path(stderr.rsplit("full traceback in ", 1)[1].rstrip(")\n"))


def test_an_internal_error_exits_70_naming_the_file_with_the_traceback(work: Path) -> None:
    (work / "state").mkdir()
    # A real fault: the database is not one (a folder is "cannot be written", exit 5, instead).
    (work / "state" / "state.sqlite3").write_bytes(b"not a database\n" * 512)
    proc = blocker("apply", cwd=work)
    assert proc.returncode == 70
    crash = _crash_file(proc.stderr)
    assert crash.parent == work / "state" / "log" and crash.name.startswith("crash-")
    assert crash.suffix == ".log" and re.fullmatch(r"crash-\d{8}T\d{6}\.\d{6}Z-\d+\.log", crash.name)
    text = crash.read_text()
    assert "Traceback (most recent call last)" in text and "sqlite3.DatabaseError" in text
    assert "blocker apply" in text and (crash.stat().st_mode & 0o777) == 0o600


def test_a_corrupt_database_is_an_internal_error_with_a_crash_file(work: Path) -> None:
    assert blocker("apply", cwd=work).returncode == 0
    db = work / "state" / "state.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.write_bytes(b"SQLite format 3\0" + os.urandom(4096))
    proc = blocker("apply", cwd=work)
    assert proc.returncode == 70
    assert "DatabaseError" in _crash_file(proc.stderr).read_text()


def test_the_crash_file_falls_back_to_the_temp_folder(work: Path) -> None:
    (work / "state").mkdir()
    (work / "state" / "state.sqlite3").write_bytes(b"not a database\n" * 512)
    (work / "state" / "log").write_text("not a folder")  # the crash folder cannot be made
    proc = blocker("apply", cwd=work)
    assert proc.returncode == 70
    crash = _crash_file(proc.stderr)
    try:
        assert crash.name.startswith("blocker-crash-") and str(crash.parent) == os.environ.get("TMPDIR", "/tmp")
        assert "Traceback" in crash.read_text()
    finally:
        crash.unlink()


def test_a_crash_file_is_written_for_an_error_about_an_undecodable_name(tmp_path: Path) -> None:
    """The crash file of an error about an undecodable name is still written (escaped)."""
    from blocker.crashlog import write_crash_log

    try:
        raise OSError("bad " + os.fsdecode(b"d\xe9.yaml"))
    except OSError as exc:
        path = write_crash_log(tmp_path, exc)
    assert path is not None and "d\\udce9.yaml" in path.read_text()


@pytest.mark.parametrize(("content", "reason"), [
    (b"id: x\nnotes: '" + b"a" * (8 * 1024 * 1024) + b"'\n", "file larger than"),
    ("id: d\u00e9cision\n".encode("latin-1"), "UTF-8"),
    (b"\xff\xfei\x00d\x00", "UTF-8"),
], ids=["huge", "latin-1", "utf-16"])
def test_huge_files_and_wrong_encodings_are_refused_by_the_loader(tmp_path: Path, content: bytes,
                                                                  reason: str) -> None:
    """yamlio's checks still hold behind the loader's own non-blocking read."""
    order(tmp_path, "good")
    (tmp_path / "bad.yaml").write_bytes(content)
    result = load_orders(tmp_path, CONFIG.order_rules)
    assert list(result.orders) == ["good"] and result.invalid_files == {str(tmp_path / "bad.yaml")}
    assert reason in result.errors[0].message, result.errors[0]


@pytest.mark.parametrize("flag", ["--orders", "--state-dir", "--out"])
def test_an_argument_that_is_not_utf8_is_a_usage_error(work: Path, flag: str) -> None:
    folder = os.fsencode(work) + b"/d\xe9"
    os.mkdir(folder)
    proc = run_blocker(b"apply", os.fsencode(flag), folder, config=b"config.yaml", cwd=work, clean=False)
    assert proc.returncode == 2, proc.stderr
    assert "d\\xe9: not valid UTF-8" in proc.stderr and "internal error" not in proc.stderr


def test_a_fifo_swapped_in_before_the_version_is_stored_does_not_hang_the_reconcile(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from blocker.publish.reconcile import effective_orders
    from blocker.record.audit import AuditLog
    from blocker.record.state import State

    folder = tmp_path / "orders"
    folder.mkdir()
    path = order(folder, "swapped")
    result = load_orders(folder, CONFIG.order_rules)
    path.unlink()
    os.mkfifo(path)  # between the load and the re-read that stores the version
    state = State(tmp_path / "state")
    done: list = []
    worker = threading.Thread(target=lambda: done.append(effective_orders(
        result, CONFIG, state, AuditLog(tmp_path / "state"), datetime.now(UTC))), daemon=True)
    worker.start()
    worker.join(10)
    assert done, "the reconcile blocked opening a FIFO"
    assert state.last_good() == {}  # not stored: the next reconcile sees the FIFO and refuses it


def test_a_state_database_that_cannot_be_opened_is_exit_5_in_one_line(work: Path) -> None:
    (work / "state").mkdir()
    (work / "state" / "state.sqlite3").mkdir()  # cannot be opened, as on a read-only or full disk
    proc = blocker("apply", cwd=work)
    assert proc.returncode == 5 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "state cannot be written" in proc.stderr and "Traceback" not in proc.stderr
