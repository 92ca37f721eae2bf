"""The audit trail: an append-only, hash-chained JSON-lines log of every state change.

Each record carries the SHA-256 of the previous one, so an edited, removed, reordered or
truncated line breaks the chain at the first bad record. A separate head file records the
last sequence number and hash, so cutting records off the end is detected too. A record is
fsynced before the action it describes is reported done.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
LOG_NAME = "audit.jsonl"
HEAD_NAME = "audit.head"


def canonical(obj: Any) -> bytes:
    """The bytes that are hashed: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def record_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def current_actor() -> str:
    """Who ran the command: the sudo caller when there is one, else the login user."""
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    head: str
    bad_line: int | None = None
    reason: str = ""


class AuditLog:
    def __init__(self, state_dir: Path, actor: str | None = None) -> None:
        self.dir = state_dir
        self.path = state_dir / LOG_NAME
        self.head_path = state_dir / HEAD_NAME
        self.actor = actor or current_actor()

    def append(self, event: str, data: dict[str, Any] | None = None, *, actor: str | None = None,
               at: datetime | None = None) -> dict[str, Any]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / "audit.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the daemon and CLI commands append to one chain
            seq, prev = self._tail()
            record: dict[str, Any] = {
                "seq": seq + 1,
                "ts": (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds"),
                "actor": actor or self.actor,
                "event": event,
                "data": data or {},
                "prev": prev,
            }
            record["hash"] = record_hash(record)
            line = canonical(record) + b"\n"
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._write_head(record["seq"], record["hash"])
        return record

    def append_many(self, items: list[tuple[str, dict[str, Any]]], *, actor: str | None = None,
                    at: datetime | None = None) -> list[dict[str, Any]]:
        """`append` of each (event, data) in turn, as one write, one fsync and one head update.

        The records, their order and their chain are exactly what as many `append` calls give;
        only the cost differs: a first publish of 1,000 orders on four operators is 5,000
        records, and three fsyncs each (log, head, folder) were most of its time. They are
        durable together when this returns, as each one would be after its own `append`.
        """
        if not items:
            return []
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / "audit.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the daemon and CLI commands append to one chain
            seq, prev = self._tail()
            records, lines = [], []
            for event, data in items:
                seq += 1
                record: dict[str, Any] = {
                    "seq": seq,
                    "ts": (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds"),
                    "actor": actor or self.actor,
                    "event": event,
                    "data": data or {},
                    "prev": prev,
                }
                record["hash"] = prev = record_hash(record)
                records.append(record)
                lines.append(canonical(record) + b"\n")
            blob = memoryview(b"".join(lines))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                while blob:  # a short write (a signal, a full disk) must not leave half the batch
                    written = os.write(fd, blob)
                    if written <= 0:
                        raise OSError("audit trail: write made no progress")
                    blob = blob[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            self._write_head(records[-1]["seq"], records[-1]["hash"])
        return records

    def _tail(self) -> tuple[int, str]:
        """Sequence and hash of the last record, read from the end of the file."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                if size == 0:
                    return 0, GENESIS
                chunk = 4096
                while True:
                    start = max(0, size - chunk)
                    fh.seek(start)
                    data = fh.read(size - start)
                    lines = data.rstrip(b"\n").split(b"\n")
                    if len(lines) > 1 or start == 0:
                        last = json.loads(lines[-1])
                        return int(last["seq"]), str(last["hash"])
                    chunk *= 4
        except FileNotFoundError:
            return 0, GENESIS

    def _write_head(self, seq: int, digest: str) -> None:
        tmp = self.head_path.with_suffix(".tmp")
        with tmp.open("w") as fh:
            fh.write(f"{seq} {digest}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.head_path)
        fsync_dir(self.dir)

    def head(self) -> tuple[int, str] | None:
        try:
            seq, digest = self.head_path.read_text().split()
            return int(seq), digest
        except (FileNotFoundError, ValueError):
            return None

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, without checking the chain (use verify() for that)."""
        try:
            fh = self.path.open("rb")
        except FileNotFoundError:
            return
        with fh:
            for raw in fh:
                try:
                    yield json.loads(raw)
                except json.JSONDecodeError:
                    continue

    def verify(self) -> VerifyResult:
        """The whole chain, safe while the daemon appends (see `verify_live`)."""
        return verify_live(self)

    def verify_offline(self) -> VerifyResult:
        """The chain as one read; only for a trail nothing appends to."""
        prev, count = GENESIS, 0
        try:
            fh = self.path.open("rb")
        except FileNotFoundError:
            return self._check_head(0, GENESIS)
        with fh:
            for number, raw in enumerate(fh, start=1):
                bad = self._check_line(raw, number, prev)
                if bad is not None:
                    return VerifyResult(False, count, prev, number, bad)
                record = json.loads(raw)
                prev, count = record["hash"], count + 1
        return self._check_head(count, prev)

    @staticmethod
    def _check_line(raw: bytes, number: int, prev: str) -> str | None:
        if not raw.endswith(b"\n"):
            return "record is truncated (no end of line)"
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "record is not valid JSON (edited or truncated)"
        if not isinstance(record, dict) or not {"seq", "ts", "actor", "event", "data", "prev", "hash"} <= set(record):
            return "record lacks required fields"
        if record["seq"] != number:
            return f"sequence {record['seq']} where {number} was expected (a record was removed or reordered)"
        if record["prev"] != prev:
            return "does not chain to the previous record (a record was removed, reordered or edited)"
        if record_hash(record) != record["hash"]:
            return "content does not match its hash (the record was edited)"
        if canonical(record) + b"\n" != raw:
            return "record is not in canonical form (the line was edited)"
        return None

    def _check_head(self, count: int, last: str) -> VerifyResult:
        head = self.head()
        if head is not None and head[0] > count:
            reason = f"the log ends at record {count} but its head file says {head[0]} (records were cut off)"
            return VerifyResult(False, count, last, count + 1, reason)
        if head is not None and head[0] == count and head[1] != last:
            return VerifyResult(False, count, last, count, "the last record does not match the head file")
        return VerifyResult(True, count, last)


def concerns(record: dict[str, Any], order_id: str) -> bool:
    data = record.get("data", {})
    return data.get("order") == order_id or order_id in data.get("orders", ())



@dataclass(frozen=True)
class CheckedLine:
    """One line of the log as read, with the verdict of the same checks `verify` runs."""

    number: int
    raw: bytes
    record: dict[str, Any] | None  # None when the line does not even parse
    bad_line: int | None = None  # the first bad line so far: None while the chain holds through this one
    problem: str = ""  # why that line is bad


_FIELDS = frozenset({"seq", "ts", "actor", "event", "data", "prev", "hash"})


def _holds(raw: bytes, record: dict[str, Any], number: int, prev: str) -> bool:
    """The checks of `_check_line` on an already parsed record, without re-encoding it.

    The writer hashed the canonical bytes of the record without its `hash` key, then inserted
    `,"hash":"H"` (keys are sorted: after `event`, and it is the last such text on the line since
    only `prev`, `seq` and `ts` follow). Taking it out of the raw line and hashing what is left
    gives H again only if the line is byte for byte what was written (SHA-256 preimage
    resistance), so it is both intact and canonical. Reading a trail of hundreds of MB this way
    costs one JSON parse and one SHA-256 per line instead of a parse and two encodings.
    """
    digest = record.get("hash")
    if (not raw.endswith(b"\n") or not isinstance(digest, str) or not record.keys() >= _FIELDS
            or record["seq"] != number or record["prev"] != prev):
        return False
    needle = b',"hash":"' + digest.encode() + b'"'
    at = raw.rfind(needle)
    if at < 0 or not raw.startswith(b',"prev":"', at + len(needle)):  # where sorted keys put it
        return False
    return hashlib.sha256(raw[:at] + raw[at + len(needle):-1]).hexdigest() == digest


def checked_lines(log: AuditLog) -> Iterator[CheckedLine]:
    """Every line in one pass, each checked against the chain so far.

    Readers that both use the records and must say whether the chain holds (audit show, the
    evidence pack) need one pass, not a `verify()` and a `records()` that may see different files
    while the daemon appends. After the first problem the chain cannot be trusted: later lines
    are still yielded (the legal team sees them) and carry that first problem.
    """
    prev, bad_line, problem = GENESIS, None, ""
    try:
        fh = log.path.open("rb")
    except FileNotFoundError:
        return
    with fh:
        for number, raw in enumerate(fh, start=1):
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                record = None
            if not isinstance(record, dict):
                record = None
            if bad_line is None:
                if record is not None and _holds(raw, record, number, prev):
                    prev = record["hash"]
                else:  # the full checks, for their precise reason (or, rarely, to accept it)
                    why = AuditLog._check_line(raw, number, prev)
                    if why is None:
                        assert record is not None
                        prev = record["hash"]
                    else:
                        bad_line, problem = number, why
            yield CheckedLine(number, raw, record, bad_line, problem)


def verify_live(log: AuditLog, *, retry_delay: float = 0.2) -> VerifyResult:
    """`verify_offline()` made safe while the daemon appends.

    `verify_offline()` reads the log, then the head file: a record appended in between makes the head
    run ahead of what was read, which looks like records cut off the end. Here the head is read
    first, so it can only be behind the log, never ahead of it, unless records were really
    removed. A last line without its end of line is retried once: it may be an append in flight.
    """
    import time

    for attempt in (0, 1):
        head = log.head()
        prev, count, head_hash = GENESIS, 0, None
        failed: VerifyResult | None = None
        for line in checked_lines(log):
            if line.bad_line is not None:
                failed = VerifyResult(False, count, prev, line.bad_line, line.problem)
                break
            assert line.record is not None
            prev, count = line.record["hash"], count + 1
            if head is not None and count == head[0]:
                head_hash = prev
        if failed is not None:
            assert failed.bad_line is not None
            in_flight = failed.reason.startswith("record is truncated") and (head is None or head[0] < failed.bad_line)
            if in_flight and attempt == 0:
                time.sleep(retry_delay)  # an append in flight: its end of line is about to land
                continue
            return failed
        if head is not None and head[0] > count:
            reason = f"the log ends at record {count} but its head file says {head[0]} (records were cut off)"
            return VerifyResult(False, count, prev, count + 1, reason)
        if head is not None and head_hash != head[1]:
            return VerifyResult(False, count, prev, head[0], f"record {head[0]} does not match the head file")
        return VerifyResult(True, count, prev)
    raise AssertionError("unreachable")
