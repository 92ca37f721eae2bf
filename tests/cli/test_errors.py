"""The CLI's error hook: an expected error is one line and its exit code, a bug is one line
naming the crash log, and exit 70."""

from __future__ import annotations

from pathlib import Path

import pytest

from blocker.cli.errors import EXIT_FAILED, EXIT_INTERNAL, EXIT_REFUSED, CliError, post_arg_parse_hook
from blocker.errors import BlockerError
from blocker.record.audit import AuditWriteError


def test_expected_errors_are_one_line_and_their_code(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert post_arg_parse_hook(CliError("refused: x", EXIT_REFUSED), "apply", tmp_path) == EXIT_REFUSED
    assert capsys.readouterr().err == "blocker: refused: x\n"
    assert post_arg_parse_hook(AuditWriteError("disk full"), "apply", tmp_path) == EXIT_FAILED
    assert capsys.readouterr().err == "blocker: audit trail cannot be written: disk full\n"
    assert post_arg_parse_hook(BlockerError("bad"), "status", tmp_path) == 1
    assert capsys.readouterr().err == "blocker: bad\n"
    assert not (tmp_path / "log").exists()


def test_a_bug_is_one_line_naming_the_crash_log(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        code = post_arg_parse_hook(exc, "status", tmp_path)
    err = capsys.readouterr().err
    assert code == EXIT_INTERNAL and err.count("\n") == 1 and "RuntimeError: boom" in err
    [crash] = (tmp_path / "log").iterdir()
    assert str(crash) in err and "Traceback" in crash.read_text()
    assert post_arg_parse_hook(KeyboardInterrupt(), "run", tmp_path) == 130
    assert post_arg_parse_hook(BrokenPipeError(), "status", tmp_path) == 0
