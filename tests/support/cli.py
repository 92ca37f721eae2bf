"""The one way tests run the real `blocker` console script.

A test of the CLI runs the installed entry point in a child process, as an operator would: argument
parsing, exit codes, stdout/stderr and the crash hook are then the real ones. Every such test goes
through `blocker()` so the environment (no bytecode writes into the tree, a UTF-8 locale whatever
the host's), the timeout and the "no traceback, no internal error" check are the same everywhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# The console script of the interpreter running the tests (the venv's), not whatever is on PATH.
BLOCKER = Path(sys.executable).with_name("blocker")
if not BLOCKER.exists():  # pragma: no cover - a venv always has it next to python
    BLOCKER = Path(shutil.which("blocker") or "blocker")

# Where every child keeps its bytecode: outside the tree under test (no __pycache__ written
# into it), and kept between children and runs. Compiling the package from source again in each
# child (PYTHONDONTWRITEBYTECODE) cost ~0.3 s a `blocker` run, several minutes of the suite.
PYCACHE = Path(tempfile.gettempdir()) / f"blocker-tests-pycache-{os.getuid()}"

# Set for every child: bytecode kept under PYCACHE, and output encoded as UTF-8 whatever locale
# the host runs with.
CHILD_ENV = {"PYTHONPYCACHEPREFIX": str(PYCACHE), "LC_ALL": "C.UTF-8"}


def use_pycache_prefix() -> None:
    """For every child this test session starts, however started (conftest calls it first):
    bytecode under PYCACHE, none written into the tree, none compiled again each time."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.update(CHILD_ENV)

Arg = str | bytes | os.PathLike[str] | os.PathLike[bytes]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **CHILD_ENV, **(extra or {})}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def blocker(*args: Arg, cwd: Path | str | None = None, config: Arg | None = None, timeout: float = 60,
            module: bool = False, clean: bool = True, errors: str = "strict", input: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`blocker [--config CONFIG] ARGS` in `cwd`; the completed process, output decoded as UTF-8.

    `module` runs `python -m blocker` instead of the console script. With `clean` (the default) the
    run must not have crashed: no traceback, no "internal error", not exit 70; tests of the crash
    path itself pass clean=False. `errors` is how undecodable output bytes are decoded ("strict":
    a non-UTF-8 byte on stdout fails the test). stdin is empty unless `input` is given.
    """
    argv: list[Arg] = [sys.executable, "-m", "blocker"] if module else [BLOCKER]
    if config is not None:
        argv += ["--config", config]
    stdin = None if input is not None else subprocess.DEVNULL
    proc = subprocess.run([*argv, *args], cwd=cwd, capture_output=True, encoding="utf-8", errors=errors,
                          timeout=timeout, env=child_env(env), stdin=stdin, input=input)
    if clean:
        assert "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        assert "internal error" not in proc.stderr, proc.stdout + proc.stderr
        assert proc.returncode != 70, proc.stdout + proc.stderr
    return proc
