"""Structured logs on stderr: plain `key=value` lines for people, JSON lines for collectors.

A record logged with an exception (`log.exception`, `exc_info=`) keeps all of it: JSON lines carry
the whole formatted traceback in their `exc` field (a collector shows it, a person greps it), and
both formats carry `error`, the one-line summary. Plain lines stay one line each for a person at a
terminal; the daemon's internal errors also name the crash file that holds the traceback
(`log_internal`), so the plain log loses nothing either.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blocker.crashlog import write_crash_log
from blocker.textsafe import display_path, printable

_RESERVED = set(vars(logging.makeLogRecord({})))


def _summary(exc: BaseException) -> str:
    """The exception's type and message, and the innermost frame it was raised in."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}" if tb else "?"
    return f"{type(exc).__name__}: {exc} (at {where})"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}
    if record.exc_info and record.exc_info[1] is not None:
        fields["error"] = _summary(record.exc_info[1])
    return fields


def _traceback(record: logging.LogRecord) -> str | None:
    """Every frame of the record's exception (chained causes included), or None."""
    if not record.exc_info or record.exc_info[1] is None:
        return None
    return "".join(traceback.format_exception(record.exc_info[1])).rstrip("\n")


class PlainFormatter(logging.Formatter):
    """One line per record, always: the message and every field value are escaped (textsafe),
    since they carry order fields and file names, and a newline in one would forge a log line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        extra = " ".join(f"{printable(k)}={_plain(v)}" for k, v in sorted(_fields(record).items()))
        return f"{ts} {record.levelname:<7} {printable(record.getMessage())}" + (f" {extra}" if extra else "")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            **_fields(record),
        }
        exc = _traceback(record)
        if exc is not None:
            data["exc"] = exc
        return json.dumps(data, default=str, ensure_ascii=False)


def _plain(value: Any) -> str:
    """A field value: escaped, then quoted when it holds a space, `"` or `=` (printable doubles
    every backslash, so the `\\"` added here cannot be forged by the value)."""
    text = printable(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return '"' + text.replace('"', '\\"') + '"'
    return text


def log_internal(logger: logging.Logger, state_dir: Path | None, message: str, exc: BaseException,
                 context: str = "", **extra: Any) -> None:
    """An internal error (a bug, not a BlockerError): one log line naming the crash file that holds
    its full traceback (`<state_dir>/log/crash-*.log`, as the CLI's error hook does)."""
    written = write_crash_log(state_dir, exc, context or f"daemon: {message} {extra}")
    logger.error(message, exc_info=(type(exc), exc, exc.__traceback__),
                 extra={**extra, "traceback": display_path(written) if written else "not written"})


def setup(fmt: str = "plain", level: int = logging.INFO) -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    root = logging.getLogger("blocker")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    return root
