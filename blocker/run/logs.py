"""Structured logs on stderr: plain `key=value` lines for people, JSON lines for collectors.

A record logged with an exception (`log.exception`, `exc_info=`) keeps all of it: JSON lines carry
the whole formatted traceback in their `exc` field (a collector shows it, a person greps it), and
both formats carry `error`, the one-line summary. Plain lines stay one line each for a person at a
terminal; the daemon's internal errors also name the crash file that holds the traceback
(`log_internal`), so the plain log loses nothing either.

Every audited event has a log line (`AuditTail`): the daemon follows the audit trail and logs each
new record, its own and those another process wrote (`blocker apply`, `evidence`), except the
kinds of its own that already have a line where they happen (`AUDIT_LINES`). Times carry their
UTC offset (`+00:00`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable
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


# How the log tells each kind of audit record: (level, message), or None where the daemon's own
# record of that kind already has a line of its own where it happens (written by another
# process, it gets this table's fallback). tests/run/test_log_audit.py checks that every kind the
# code writes is here, and that every record of a daemon's run has its line.
_I, _W = logging.INFO, logging.WARNING
AUDIT_LINES: dict[str, tuple[int, str] | None] = {
    "daemon-start": None,  # "daemon started"
    "daemon-stop": None,  # "daemon stopped"
    "probe-agent-start": None,  # "probe agent started"
    "probe-agent-stop": None,  # "probe agent stopped"
    "propagation": None,  # "propagation followed" (blocker.fleet.follow)
    "secondary-behind": None,  # "secondary behind" (blocker.fleet.follow)
    "zone-published": None,  # "zone published"
    "reload": None,  # "zone published" / "zone published but reload failed" / "reload retried..."
    "publish-failed": None,  # "publish failed; the previous zone stays"
    "zone-restored": None,  # "zone file changed behind blocker's back: rewriting it from the state"
    "order-invalid": None,  # "invalid order file: last good version stays in force"
    "catch-up": None,  # "catch-up: transition applied late"
    "order-verified": None,  # "first probe pass that proves the order blocked|lifted"
    "audit-writable": None,  # "audit trail writable again"
    "order-added": (_I, "order received: in force from its start"),
    "order-changed": (_I, "order file changed: its new version is in force"),
    "order-lifted-early": (_W, "order lifted early"),
    "order-orphaned": (_W, "order file removed while in force: its entries stay until it ends or apply --force"),
    "order-forgotten": (_W, "order removed by force (apply --force): its entries are lifted"),
    "entries-activated": (_I, "entries activated"),
    "entries-lifted": (_I, "entries lifted"),
    "zone-adopted": (_I, "zone on disk adopted: it is what the orders ask for"),
    "probe-pass": (_I, "probe pass"),
    "probe-verdict-change": (_W, "probe verdict changed"),
    "audit-repaired": (_W, "audit trail end repaired: the damaged bytes are kept aside"),
    "apply": (_W, "zones published outside the daemon (blocker apply)"),
    "evidence-exported": (_I, "evidence pack exported"),
}
_OUTSIDE = (_I, "recorded by another process")
BATCH_LINES = 20  # records of one kind in one batch logged one by one; the rest in one line


def _scalars(data: dict[str, Any]) -> dict[str, Any]:
    """The record's fields a line can carry: scalars, and short lists joined (never a list of
    a thousand names: `blocker audit show` has those)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, str | int | float | bool) or value is None:
            out[key] = value
        elif isinstance(value, list) and len(value) <= 10 and all(isinstance(v, str | int) for v in value):
            out[key] = ",".join(str(v) for v in value)
    return out


def audit_line(record: dict[str, Any], own_actor: str) -> tuple[int, str, dict[str, Any]] | None:
    """The log line of one audit record, or None when the daemon logged it where it happened."""
    kind, actor = str(record.get("event", "?")), str(record.get("actor", "?"))
    own = actor == own_actor
    entry = AUDIT_LINES.get(kind, _OUTSIDE)
    if entry is None:
        if own:
            return None
        entry = _OUTSIDE
    level, message = entry
    if entry is _OUTSIDE:
        message = f"{message}: {kind}"
    data = record.get("data")
    fields = {f"rec_{k}" if k in _RESERVED or k in ("message", "asctime") else k: v
              for k, v in _scalars(data if isinstance(data, dict) else {}).items()}
    if kind == "reload" and fields.get("ok") is False:
        level = _W
    if kind == "probe-pass" and (fields.get("failing") or fields.get("stale")):
        level = _W
    return level, message, {**fields, "audit": kind, "seq": record.get("seq"), "actor": actor}


class AuditTail:
    """Follows the audit trail from where it ended at start, logging each new record (`poll`).

    One reader of the file, whoever wrote the record: the daemon's threads, `blocker apply` from a
    shell, a repair. `on_record` sees every new record too (the metrics count from it)."""

    def __init__(self, path: Path, own_actor: str, logger: logging.Logger,
                 on_record: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path, self.own_actor, self.log, self.on_record = path, own_actor, logger, on_record
        self.offset = 0
        self.seq = 0
        self.lock = threading.Lock()

    def skip_existing(self) -> None:
        """Start at the end: the history before this daemon started is not logged again."""
        with self.lock:
            try:
                size = os.stat(self.path).st_size
            except OSError:
                return
            for record, end in self._read(max(0, size - 65536)):
                self.seq, self.offset = int(record["seq"]), end

    def _read(self, offset: int) -> list[tuple[dict[str, Any], int]]:
        """Whole records from `offset` on, each with the offset just past it (a torn end waits)."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except OSError:
            return []
        out: list[tuple[dict[str, Any], int]] = []
        pos = offset
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            pos += len(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue  # mid-line after a repair cut the file, or damage verify reports
            if isinstance(record, dict) and isinstance(record.get("seq"), int):
                out.append((record, pos))
        return out

    def poll(self) -> int:
        """Log the records appended since the last poll; how many were new."""
        with self.lock:
            try:
                size = os.stat(self.path).st_size
            except OSError:
                return 0
            if size == self.offset:
                return 0
            # Smaller: a repair cut a torn end off; read it all again, by sequence number.
            found = self._read(0 if size < self.offset else self.offset)
            new = [(r, end) for r, end in found if r["seq"] > self.seq]
            if found:
                self.offset = found[-1][1]
            counts: dict[tuple[str, str], int] = {}
            for record, _end in new:
                self.seq = max(self.seq, record["seq"])
                if self.on_record is not None:
                    self.on_record(record)
                line = audit_line(record, self.own_actor)
                if line is None:
                    continue
                key = (str(record.get("event")), str(record.get("actor")))
                counts[key] = counts.get(key, 0) + 1
                if counts[key] <= BATCH_LINES:
                    self.log.log(line[0], line[1], extra=line[2])
            for (kind, actor), n in sorted(counts.items()):
                if n > BATCH_LINES:
                    self.log.info(f"{n - BATCH_LINES} more {kind} records (blocker audit show has them)",
                                  extra={"audit": kind, "actor": actor, "count": n - BATCH_LINES})
            return len(new)
