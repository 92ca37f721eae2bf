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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
LOG_NAME = "audit.jsonl"
HEAD_NAME = "audit.head"
QUARANTINE_DIR = "audit.quarantine"
REPAIRED = "audit-repaired"


class AuditWriteError(Exception):
    """A record could not be made durable (disk full, file too large, I/O error).

    Not an OSError on purpose: callers that turn OSError into their own errors (write_zone) must
    let this through, so nothing is published whose record is not on disk. The file still ends on
    a whole record when this is raised.
    """


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
    repairs: tuple[dict[str, Any], ...] = ()  # the `audit-repaired` records read, each with its `seq` and `ts`


@dataclass(frozen=True)
class _Tail:
    """The end of the log as found under the lock: the last whole record, and what follows it."""

    seq: int
    hash: str
    good_end: int  # byte offset just after the last whole record
    size: int  # file size: bytes in [good_end, size) are damaged (a torn or unreadable tail)


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written: a write may be short (signal, full disk, RLIMIT_FSIZE)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(28, "no byte written (no space left on device?)")
        view = view[written:]


def _as_record(raw: bytes) -> dict[str, Any] | None:
    """A whole line that reads as a record (not yet checked against the chain), else None."""
    if not raw.endswith(b"\n"):
        return None
    try:
        record = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if (not isinstance(record, dict) or not isinstance(record.get("seq"), int)
            or not isinstance(record.get("hash"), str)):
        return None
    return record


def repair_problem(record: dict[str, Any], state_dir: Path | None) -> str:
    """Why an `audit-repaired` record means the trail lost committed content ("" when it did not).

    A torn tail the head file had not counted is an append cut short (a crash, a full disk):
    moving it aside loses nothing that was ever reported done. Anything else a repair records
    (bytes of a record the head counted, whole records cut off, the quarantined evidence missing
    or altered) is a removal, which verify must keep reporting.
    """
    data = record.get("data") if isinstance(record.get("data"), dict) else {}
    if data.get("committed") is not False:
        return (f"{data.get('reason') or 'records were cut off'} (found at {record.get('ts')}, "
                f"after record {data.get('last_seq')}; the head file said record "
                f"{(data.get('head_before') or {}).get('seq')}): committed records were removed")
    if state_dir is not None and data.get("quarantine"):
        path = state_dir / str(data["quarantine"])
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return f"the quarantined tail {data['quarantine']} is missing (evidence removed)"
        if digest != data.get("sha256"):
            return f"the quarantined tail {data['quarantine']} does not match its SHA-256 (evidence altered)"
    return ""


class AuditLog:
    def __init__(self, state_dir: Path, actor: str | None = None,
                 observer: Callable[[bool, str], None] | None = None) -> None:
        self.dir = state_dir
        self.path = state_dir / LOG_NAME
        self.head_path = state_dir / HEAD_NAME
        self.actor = actor or current_actor()
        self.observer = observer  # told of every append's outcome (the daemon's health and metrics)
        self.write_failures = 0
        self.last_error: str | None = None  # why the last append failed; None once one succeeds

    def append(self, event: str, data: dict[str, Any] | None = None, *, actor: str | None = None,
               at: datetime | None = None) -> dict[str, Any]:
        """Append one record, durably, or raise AuditWriteError with the file still whole.

        A damaged end (torn record, records cut off behind the head file) is repaired first,
        under the same lock, so the new record always chains to the last whole one.
        """
        with self._locked():
            seq, prev, _repaired = self._repair_locked()
            return self._append_locked(seq, prev, event, data, actor=actor, at=at)

    def repair(self) -> dict[str, Any] | None:
        """Move a damaged end aside now (at start), recording it; None when the end was whole."""
        if not self.path.exists() and self.head() is None:
            return None
        with self._locked():
            return self._repair_locked()[2]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            lock = (self.dir / "audit.lock").open("a")
        except OSError as exc:
            raise self._failed(f"cannot open {self.dir / 'audit.lock'}: {exc.strerror or exc}") from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the daemon and CLI commands append to one chain
            yield

    def _failed(self, reason: str) -> AuditWriteError:
        self.write_failures += 1
        self.last_error = reason
        if self.observer is not None:
            self.observer(False, reason)
        return AuditWriteError(reason)

    def _append_locked(self, seq: int, prev: str, event: str, data: dict[str, Any] | None, *,
                       actor: str | None = None, at: datetime | None = None) -> dict[str, Any]:
        return self._write_locked(seq, prev, [(event, data or {})], actor=actor, at=at)[0]

    def _write_locked(self, seq: int, prev: str, items: list[tuple[str, dict[str, Any]]], *,
                      actor: str | None = None, at: datetime | None = None) -> list[dict[str, Any]]:
        """Chain `items` after (seq, prev) and write them whole, or not at all (lock held)."""
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
        first, last = records[0], records[-1]
        what = f"record {first['seq']} ({first['event']})" if len(records) == 1 else \
            f"records {first['seq']}-{last['seq']}"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            raise self._failed(f"{self.path}: cannot open: {exc.strerror or exc}") from None
        try:
            end = os.fstat(fd).st_size  # stable: every appender holds the lock
            try:
                _write_all(fd, b"".join(lines))
                os.fsync(fd)
            except OSError as exc:
                try:  # never leave our own torn record behind
                    os.ftruncate(fd, end)
                    os.fsync(fd)
                except OSError:
                    pass  # the next append finds the torn tail and quarantines it
                raise self._failed(f"{self.path}: cannot write {what}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
        try:
            self._write_head(last["seq"], last["hash"])
        except OSError as exc:
            # The records are durable; a head file behind the log is what a crash here leaves too.
            raise self._failed(f"{self.head_path}: {what} written, head not updated: "
                               f"{exc.strerror or exc}") from None
        if self.last_error is not None or self.observer is not None:
            self.last_error = None
            if self.observer is not None:
                self.observer(True, "")
        return records

    def _repair_locked(self) -> tuple[int, str, dict[str, Any] | None]:
        """Sequence and hash to chain to, after moving a damaged end aside (lock held), and the
        `audit-repaired` record written for it, if any."""
        tail = self._inspect_tail()
        head = self.head()
        torn = tail.size > tail.good_end
        cut = head is not None and (head[0] > tail.seq or (head[0] == tail.seq and head[1] != tail.hash))
        if not torn and not cut:
            return tail.seq, tail.hash, None
        data: dict[str, Any] = {
            "last_seq": tail.seq, "last_hash": tail.hash, "offset": tail.good_end,
            "head_before": None if head is None else {"seq": head[0], "hash": head[1]},
            "committed": cut,
        }
        if torn:
            data.update(self._quarantine(tail))
            data["reason"] = ("torn final record moved aside: bytes of a record the head file had counted"
                              if cut else "torn final record moved aside (an append cut short by a crash or a "
                              "full disk; the head file had not counted it)")
        else:
            data.update({"quarantine": None, "size": 0, "sha256": None,
                         "reason": "the last record is not the one the head file names (edited or replaced)"
                         if head is not None and head[0] == tail.seq else
                         "records the head file had counted are missing from the end of the log"})
        record = self._append_locked(tail.seq, tail.hash, REPAIRED, data, actor=self.actor)
        return record["seq"], record["hash"], record

    def _quarantine(self, tail: _Tail) -> dict[str, Any]:
        """Copy the damaged bytes to a file of their own (fsynced), then cut them off the log."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(tail.good_end)
                torn = fh.read(tail.size - tail.good_end)
        except OSError as exc:
            raise self._failed(f"{self.path}: cannot read its torn end: {exc.strerror or exc}") from None
        digest = hashlib.sha256(torn).hexdigest()
        folder = self.dir / QUARANTINE_DIR
        name = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}-{digest[:16]}.jsonl-tail"
        path = folder / name
        try:
            folder.mkdir(mode=0o750, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
            try:
                _write_all(fd, torn)
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(folder)
            fsync_dir(self.dir)
        except OSError as exc:
            path.unlink(missing_ok=True)  # the log keeps the torn bytes: no evidence is lost
            raise self._failed(f"cannot quarantine the torn end of {self.path} ({len(torn)} bytes) in {folder}: "
                               f"{exc.strerror or exc}") from None
        try:
            fd = os.open(self.path, os.O_WRONLY)
            try:
                os.ftruncate(fd, tail.good_end)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise self._failed(f"{self.path}: cannot cut its torn end: {exc.strerror or exc}") from None
        return {"quarantine": f"{QUARANTINE_DIR}/{name}", "size": len(torn), "sha256": digest}

    def append_many(self, items: list[tuple[str, dict[str, Any]]], *, actor: str | None = None,
                    at: datetime | None = None) -> list[dict[str, Any]]:
        """`append` of each (event, data) in turn, as one write, one fsync and one head update.

        The records, their order and their chain are exactly what as many `append` calls give;
        only the cost differs: a first publish of 1,000 orders on four operators is 5,000
        records, and three fsyncs each (log, head, folder) were most of its time. They are
        durable together when this returns, or none of them is there (AuditWriteError).
        """
        if not items:
            return []
        with self._locked():
            seq, prev, _repaired = self._repair_locked()
            return self._write_locked(seq, prev, items, actor=actor, at=at)

    def _tail(self) -> tuple[int, str]:
        """Sequence and hash of the last whole record, read from the end of the file."""
        tail = self._inspect_tail()
        return tail.seq, tail.hash

    def _inspect_tail(self) -> _Tail:
        """The last line that reads as a record, scanning back from the end (cheap: one chunk)."""
        try:
            fh = self.path.open("rb")
        except FileNotFoundError:
            return _Tail(0, GENESIS, 0, 0)
        with fh:
            size = os.fstat(fh.fileno()).st_size
            chunk = 65536
            while True:
                start = max(0, size - chunk)
                fh.seek(start)
                data = fh.read(size - start)
                line_end = data.rfind(b"\n") + 1  # a last line without its end of line is torn
                while line_end > 0:
                    line_start = data.rfind(b"\n", 0, line_end - 1) + 1
                    if line_start == 0 and start > 0:
                        break  # the line may begin before this chunk
                    record = _as_record(data[line_start:line_end])
                    if record is not None:
                        return _Tail(record["seq"], record["hash"], start + line_end, size)
                    line_end = line_start
                if start == 0:
                    return _Tail(0, GENESIS, 0, size)  # not one whole record
                chunk *= 4

    def _write_head(self, seq: int, digest: str) -> None:
        tmp = self.head_path.with_suffix(".tmp")
        try:
            with tmp.open("w") as fh:
                fh.write(f"{seq} {digest}\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.head_path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
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


def _settled_torn(log: AuditLog, size: int, timeout: float = 5.0) -> bool:
    """True when no append is in flight and the log still has the `size` it had when its torn end
    was read: the torn record is real damage, not an append about to finish.

    Every appender holds audit.lock (exclusive) from before its write until the head is updated,
    so holding it shared, even for an instant, proves no append was half-way. A reader that cannot
    open the lock (read-only copy of a state folder) has nothing appending to it.
    """
    import time

    try:
        fd = os.open(log.dir / "audit.lock", os.O_RDONLY)
    except OSError:
        return True
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False  # a writer holds it this long: report after one more pass
                time.sleep(0.01)
        try:
            return log.path.stat().st_size == size
        except FileNotFoundError:
            return False
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def verify_live(log: AuditLog, *, retry_delay: float = 0.2) -> VerifyResult:
    """`verify_offline()` made safe while the daemon appends, and aware of repairs.

    `verify_offline()` reads the log, then the head file: a record appended in between makes the head
    run ahead of what was read, which looks like records cut off the end. Here the head is read
    first, so it can only be behind the log, never ahead of it, unless records were really
    removed. A last line without its end of line may be an append in flight: it is read again
    after a pause, and reported only once audit.lock shows no append is under way.

    Every `audit-repaired` record is returned in `repairs`; one that moved aside an uncommitted
    torn tail (its quarantined bytes still matching) keeps the trail intact, any other repair is
    a removal and fails at its line.
    """
    import time

    for attempt in range(5):
        head = log.head()
        prev, count, head_hash = GENESIS, 0, None
        failed: VerifyResult | None = None
        repair_failed: VerifyResult | None = None  # the first repair that records a removal
        repairs: list[dict[str, Any]] = []
        size = 0
        for line in checked_lines(log):
            size += len(line.raw)
            if line.bad_line is not None:
                failed = VerifyResult(False, count, prev, line.bad_line, line.problem)
                break
            assert line.record is not None
            if line.record.get("event") == REPAIRED:
                repairs.append({**(line.record.get("data") or {}), "seq": line.record["seq"],
                                "ts": line.record["ts"]})
                problem = repair_problem(line.record, log.dir)
                if problem and repair_failed is None:
                    repair_failed = VerifyResult(False, count, prev, line.record["seq"], problem)
            prev, count = line.record["hash"], count + 1
            if head is not None and count == head[0]:
                head_hash = prev
        if repair_failed is not None:  # it comes before any break of the chain: report it first
            f = repair_failed
            return VerifyResult(False, f.count, f.head, f.bad_line, f.reason, tuple(repairs))
        if failed is not None:
            assert failed.bad_line is not None
            in_flight = failed.reason.startswith("record is truncated") and (head is None or head[0] < failed.bad_line)
            if in_flight and attempt == 0:
                time.sleep(retry_delay)  # an append in flight: its end of line is about to land
                continue
            if in_flight and attempt < 4 and not _settled_torn(log, size):
                continue
            if in_flight:
                failed = VerifyResult(False, failed.count, failed.head, failed.bad_line,
                                      "the last record is torn (no end of line) and not yet repaired: an append was "
                                      "cut short (a crash, a full disk); the next `blocker apply` or the daemon "
                                      "moves it aside")
            return VerifyResult(False, failed.count, failed.head, failed.bad_line, failed.reason, tuple(repairs))
        if head is not None and head[0] > count:
            reason = f"the log ends at record {count} but its head file says {head[0]} (records were cut off)"
            return VerifyResult(False, count, prev, count + 1, reason, tuple(repairs))
        if head is not None and head_hash != head[1]:
            return VerifyResult(False, count, prev, head[0], f"record {head[0]} does not match the head file",
                                tuple(repairs))
        return VerifyResult(True, count, prev, repairs=tuple(repairs))
    raise AssertionError("unreachable")
