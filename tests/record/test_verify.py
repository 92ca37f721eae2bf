"""blocker.record.verify is the one chain verifier, and the file the evidence pack ships."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from blocker.record import verify
from blocker.record.audit import AuditLog, verify_live


def test_the_verifier_imports_only_the_standard_library() -> None:
    # The pack's verify.py must run with nothing but Python 3: no blocker, no third-party module.
    tree = ast.parse(Path(verify.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names


def test_the_verdict_of_one_pass_is_verify_live(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    for i in range(5):
        log.append("note", {"i": i})
    verdict = verify.Verdict(log.head(), log.dir)
    for line in verify.checked_lines(log.path):
        verdict.add(line)
    assert verdict.result() == verify_live(log) == verify.verify_offline(log.path, log.head())
    (tmp_path / verify.HEAD_NAME).write_text(f"7 {'a' * 64}\n")  # records cut off the end
    verdict = verify.Verdict(log.head(), log.dir)
    for line in verify.checked_lines(log.path):
        verdict.add(line)
    assert verdict.result() == verify_live(log) and not verdict.result().ok


@pytest.mark.integration  # starts a process
def test_the_script_refuses_unknown_arguments(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, verify.__file__, "--nope"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "usage: python3 verify.py" in run.stderr
