"""Structured logs on stderr: plain `key=value` lines for people, JSON lines for collectors."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from blocker.textsafe import printable

_RESERVED = set(vars(logging.makeLogRecord({})))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}
    if record.exc_info and record.exc_info[1] is not None:
        # One line, no traceback: the exception's type and message, and where it was raised.
        exc = record.exc_info[1]
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}" if tb else "?"
        fields["error"] = f"{type(exc).__name__}: {exc} (at {where})"
    return fields


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
        return json.dumps(data, default=str, ensure_ascii=False)


def _plain(value: Any) -> str:
    """A field value: escaped, then quoted when it holds a space, `"` or `=` (printable doubles
    every backslash, so the `\\"` added here cannot be forged by the value)."""
    text = printable(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return '"' + text.replace('"', '\\"') + '"'
    return text


def setup(fmt: str = "plain", level: int = logging.INFO) -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    root = logging.getLogger("blocker")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    return root
