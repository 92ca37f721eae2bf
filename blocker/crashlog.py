"""Internal errors: one line for the person, the whole traceback in a file for the developer.

As certbot does: the traceback goes to `<state_dir>/log/crash-<UTC instant>-<pid>.log`, and the
one line (CLI stderr, daemon log) names that file. When the state folder cannot be written (it
may be the very problem), a new file in the system temp folder takes it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from datetime import UTC, datetime
from pathlib import Path

from blocker import __version__

CRASH_FOLDER = "log"


def _text(exc: BaseException, context: str) -> bytes:
    head = (f"blocker {__version__}, Python {sys.version.split()[0]}, pid {os.getpid()}\n"
            f"at {datetime.now(UTC).isoformat(timespec='microseconds')}\n"
            f"argv: {sys.argv!r}\n" + (f"context: {context}\n" if context else "") + "\n")
    return (head + "".join(traceback.format_exception(exc))).encode("utf-8", "backslashreplace")


def _write_new(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def write_crash_log(state_dir: Path | None, exc: BaseException, context: str = "") -> Path | None:
    """Write `exc`'s full traceback to a new file; its path, or None when no folder would take it."""
    data = _text(exc, context)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    if state_dir is not None:
        folder = state_dir / CRASH_FOLDER
        path = folder / f"crash-{stamp}-{os.getpid()}.log"
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            _write_new(os.open(path, flags, 0o600), data)
            return path.absolute()  # named in one line a person reads from anywhere
        except OSError:
            pass
    try:  # a random name, created exclusively: safe in a shared /tmp
        fd, name = tempfile.mkstemp(prefix=f"blocker-crash-{stamp}-{os.getpid()}-", suffix=".log")
        _write_new(fd, data)
        return Path(name)
    except OSError:
        return None
