#!/usr/bin/env python3
"""The audit trail's one verifier, and the evidence pack's `verify.py`: python3 verify.py [--log PATH]

Standard library only, importing nothing of blocker, because the evidence pack ships this very
file: a court or an auditor re-checks a pack years later with nothing but Python 3, using the
same checks `blocker audit verify`, `blocker report` and the pack's own summary ran.

The chain: each record of audit.jsonl is one line, the canonical JSON (keys sorted, no spaces,
UTF-8) of {seq, ts, actor, event, data, prev, hash}, where `hash` is the SHA-256 of the record's
canonical JSON without `hash` and `prev` the hash of the record before (GENESIS for the first).
A head file (audit.head: `SEQ HASH`) names the last record, so that cutting records off the end
shows too. An `audit-repaired` record says a damaged end was moved aside: one that moved aside a
torn tail the head file had not counted (an append cut short) loses nothing, its quarantined
bytes still matching; any other repair is a removal and fails.

Run in an evidence pack, it checks:
1. every file matches MANIFEST.sha256;
2. every record in audit/records.jsonl hashes to its own `hash` and is stored in canonical form;
3. each record sits in audit/chain.txt at its sequence number, after its `prev`, and the chain
   runs without a gap to the head named in audit/chain-proof.json;
4. with --log: the whole trail verifies (as `blocker audit verify` does), and chain.txt matches it;
5. every `audit-repaired` record (in chain-proof.json, and in the --log trail) is printed, and
   judged as above.
Exit 0 when everything holds, 1 otherwise (each problem is printed), 2 on a usage error.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
LOG_NAME = "audit.jsonl"
HEAD_NAME = "audit.head"
LOCK_NAME = "audit.lock"
REPAIRED = "audit-repaired"
FIELDS = frozenset({"seq", "ts", "actor", "event", "data", "prev", "hash"})


def canonical(obj: Any) -> bytes:
    """The bytes that are hashed: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def record_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def read_head(path: Path) -> tuple[int, str] | None:
    """The head file's (seq, hash), or None when there is none (or it does not parse)."""
    try:
        seq, digest = path.read_text().split()
        return int(seq), digest
    except (FileNotFoundError, ValueError):
        return None


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    head: str
    bad_line: int | None = None
    reason: str = ""
    repairs: tuple[dict[str, Any], ...] = ()  # the `audit-repaired` records read, each with its `seq` and `ts`


# one line ---------------------------------------------------------------------------------------


def check_line(raw: bytes, number: int, prev: str) -> str | None:
    """Why line `number` does not chain after `prev` ("None" when it does): the reference checks."""
    if not raw.endswith(b"\n"):
        return "record is truncated (no end of line)"
    try:
        record = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "record is not valid JSON (edited or truncated)"
    if not isinstance(record, dict) or not set(record) >= FIELDS:
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


def holds(raw: bytes, record: dict[str, Any], number: int, prev: str) -> bool:
    """`check_line` is None, decided on an already parsed record without re-encoding it (fast path).

    The writer hashed the canonical bytes of the record without its `hash` key, then inserted
    `,"hash":"H"` (keys are sorted: after `event`, and it is the last such text on the line since
    only `prev`, `seq` and `ts` follow). Taking it out of the raw line and hashing what is left
    gives H again only if the line is byte for byte what was written (SHA-256 preimage
    resistance), so it is both intact and canonical. Reading a trail of hundreds of MB this way
    costs one JSON parse and one SHA-256 per line instead of a parse and two encodings. False
    never condemns a line: the caller runs `check_line` for the verdict and its reason.
    """
    digest = record.get("hash")
    if (not raw.endswith(b"\n") or not isinstance(digest, str) or not record.keys() >= FIELDS
            or record["seq"] != number or record["prev"] != prev):
        return False
    needle = b',"hash":"' + digest.encode() + b'"'
    at = raw.rfind(needle)
    if at < 0 or not raw.startswith(b',"prev":"', at + len(needle)):  # where sorted keys put it
        return False
    return hashlib.sha256(raw[:at] + raw[at + len(needle):-1]).hexdigest() == digest


@dataclass(frozen=True)
class CheckedLine:
    """One line of the log as read, with the verdict of `check_line` on the chain so far."""

    number: int
    raw: bytes
    record: dict[str, Any] | None  # None when the line does not even parse
    bad_line: int | None = None  # the first bad line so far: None while the chain holds through this one
    problem: str = ""  # why that line is bad


def checked_lines(path: Path) -> Iterator[CheckedLine]:
    """Every line of the log at `path` in one pass, each checked against the chain so far.

    Readers that both use the records and must say whether the chain holds (audit show, the
    report, the evidence pack) need one pass, not a verification and a second read that may see
    different files while the daemon appends. After the first problem the chain cannot be
    trusted: later lines are still yielded (the legal team sees them) and carry that first problem.
    """
    prev, bad_line, problem = GENESIS, None, ""
    try:
        fh = path.open("rb")
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
                if record is not None and holds(raw, record, number, prev):
                    prev = record["hash"]
                else:  # the full checks, for their precise reason (or, rarely, to accept it)
                    why = check_line(raw, number, prev)
                    if why is None:
                        assert record is not None
                        prev = record["hash"]
                    else:
                        bad_line, problem = number, why
            yield CheckedLine(number, raw, record, bad_line, problem)


# repairs ----------------------------------------------------------------------------------------


def data_of(record: dict[str, Any]) -> dict[str, Any]:
    """A record's `data`, or {} when it is not an object (a record is text from a file)."""
    data = record.get("data")
    return data if isinstance(data, dict) else {}


def repair_problem(record: dict[str, Any], folder: Path | None) -> str:
    """Why an `audit-repaired` record means the trail lost committed content ("" when it did not).

    A torn tail the head file had not counted is an append cut short (a crash, a full disk):
    moving it aside loses nothing that was ever reported done. Anything else a repair records
    (bytes of a record the head counted, whole records cut off, the quarantined evidence missing
    or altered) is a removal, which verification must keep reporting. `folder` holds the trail
    (the quarantine is relative to it); None skips the check of the quarantined bytes.
    """
    data = data_of(record)
    if data.get("committed") is not False:
        return (f"{data.get('reason') or 'records were cut off'} (found at {record.get('ts')}, "
                f"after record {data.get('last_seq')}; the head file said record "
                f"{(data.get('head_before') or {}).get('seq')}): committed records were removed")
    if folder is not None and data.get("quarantine"):
        path = folder / str(data["quarantine"])
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return f"the quarantined tail {data['quarantine']} is missing (evidence removed)"
        if digest != data.get("sha256"):
            return f"the quarantined tail {data['quarantine']} does not match its SHA-256 (evidence altered)"
    return ""


def repair_of(record: dict[str, Any]) -> dict[str, Any]:
    """An `audit-repaired` record as it is listed (verify output, chain-proof.json): its data, seq, ts."""
    return {**data_of(record), "seq": record["seq"], "ts": record.get("ts")}


# the whole chain ---------------------------------------------------------------------------------


class Verdict:
    """The verdict on a trail, built line by line from `checked_lines`.

    One pass can then both use the records and judge the chain (the evidence pack, the report),
    with the same judgement as `verify_live`: the first bad line, the first repair that records a
    removal (reported first: it comes before any break), and the head file, read before the log
    (so it can only be behind what is read), naming a record that is not there.
    """

    def __init__(self, head: tuple[int, str] | None, folder: Path | None) -> None:
        self.head_file = head
        self.folder = folder
        self.count = 0
        self.last = GENESIS
        self.head_hash: str | None = None  # the hash of the record the head file names, once read
        self.repairs: list[dict[str, Any]] = []
        self.failed: VerifyResult | None = None  # the first bad line
        self.repair_failed: VerifyResult | None = None  # the first repair that records a removal

    def add(self, line: CheckedLine) -> None:
        if self.failed is not None:
            return
        if line.bad_line is not None:
            self.failed = VerifyResult(False, self.count, self.last, line.bad_line, line.problem)
            return
        record = line.record
        assert record is not None
        if record.get("event") == REPAIRED:
            self.repairs.append(repair_of(record))
            problem = repair_problem(record, self.folder)
            if problem and self.repair_failed is None:
                self.repair_failed = VerifyResult(False, self.count, self.last, record["seq"], problem)
        self.last, self.count = record["hash"], self.count + 1
        if self.head_file is not None and self.count == self.head_file[0]:
            self.head_hash = self.last

    def result(self) -> VerifyResult:
        repairs = tuple(self.repairs)
        for f in (self.repair_failed, self.failed):
            if f is not None:
                return VerifyResult(False, f.count, f.head, f.bad_line, f.reason, repairs)
        head, count, last = self.head_file, self.count, self.last
        if head is not None and head[0] > count:
            reason = f"the log ends at record {count} but its head file says {head[0]} (records were cut off)"
            return VerifyResult(False, count, last, count + 1, reason, repairs)
        if head is not None and self.head_hash != head[1]:
            return VerifyResult(False, count, last, head[0], f"record {head[0]} does not match the head file", repairs)
        return VerifyResult(True, count, last, repairs=repairs)


def verify_offline(path: Path, head: tuple[int, str] | None) -> VerifyResult:
    """The chain by the reference checks alone (`check_line` on every line), for a trail nothing
    appends to; no repair judgement. `verify_live` must agree with it on an undamaged trail."""
    prev, count = GENESIS, 0
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        fh = None
    if fh is not None:
        with fh:
            for number, raw in enumerate(fh, start=1):
                bad = check_line(raw, number, prev)
                if bad is not None:
                    return VerifyResult(False, count, prev, number, bad)
                prev, count = json.loads(raw)["hash"], count + 1
    if head is not None and head[0] > count:
        reason = f"the log ends at record {count} but its head file says {head[0]} (records were cut off)"
        return VerifyResult(False, count, prev, count + 1, reason)
    if head is not None and head[0] == count and head[1] != prev:
        return VerifyResult(False, count, prev, count, "the last record does not match the head file")
    return VerifyResult(True, count, prev)


def _settled_torn(folder: Path, path: Path, size: int, timeout: float = 5.0) -> bool:
    """True when no append is in flight and the log still has the `size` it had when its torn end
    was read: the torn record is real damage, not an append about to finish.

    Every appender holds audit.lock (exclusive) from before its write until the head is updated,
    so holding it shared, even for an instant, proves no append was half-way. A reader that cannot
    open the lock (read-only copy of a state folder, a system without flock) has nothing appending.
    """
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDONLY)
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
            return path.stat().st_size == size
        except FileNotFoundError:
            return False
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def verify_live(path: Path, *, retry_delay: float = 0.2) -> VerifyResult:
    """The whole chain of the log at `path`, safe while the daemon appends, aware of repairs.

    Reading the log and then the head file, a record appended in between would make the head run
    ahead of what was read, which looks like records cut off the end. Here the head (the file
    beside the log) is read first, so it can only be behind the log, never ahead of it, unless
    records were really removed. A last line without its end of line may be an append in flight:
    it is read again after a pause, and reported only once audit.lock shows no append is under way.

    Every `audit-repaired` record is returned in `repairs` (see `Verdict` for how each is judged).
    """
    folder = path.parent
    for attempt in range(5):
        verdict = Verdict(read_head(folder / HEAD_NAME), folder)
        size = 0
        for line in checked_lines(path):
            size += len(line.raw)
            verdict.add(line)
            if verdict.failed is not None:
                break
        result = verdict.result()
        failed = verdict.failed
        if verdict.repair_failed is None and failed is not None:
            assert failed.bad_line is not None
            head = verdict.head_file
            in_flight = failed.reason.startswith("record is truncated") and (head is None or head[0] < failed.bad_line)
            if in_flight and attempt == 0:
                time.sleep(retry_delay)  # an append in flight: its end of line is about to land
                continue
            if in_flight and attempt < 4 and not _settled_torn(folder, path, size):
                continue
            if in_flight:
                return VerifyResult(False, failed.count, failed.head, failed.bad_line,
                                    "the last record is torn (no end of line) and not yet repaired: an append was "
                                    "cut short (a crash, a full disk); the next `blocker apply` or the daemon "
                                    "moves it aside", result.repairs)
        return result
    raise AssertionError("unreachable")


# the evidence pack --------------------------------------------------------------------------------


def _print_repair(repair: dict[str, Any], problems: list[str], folder: Path | None) -> None:
    """Print one repair, and add its problem (as `blocker audit verify` judges it), if any."""
    seq = repair.get("seq")
    print(f"repair at {repair.get('ts')} (record {seq}): {repair.get('reason')}; "
          f"{repair.get('size')} bytes in {repair.get('quarantine')}, sha256 {repair.get('sha256')}")
    data = {k: v for k, v in repair.items() if k not in ("seq", "ts")}
    problem = repair_problem({"seq": seq, "ts": repair.get("ts"), "data": data}, folder)
    if problem:
        problems.append(f"record {seq}: audit-repaired: {problem}")


def check_pack(pack: Path, log: Path | None) -> tuple[list[str], int, int]:
    """Problems found in the evidence pack in `pack` (and in the trail `log`, if given), the
    number of audit records in the pack, and the length of its chain."""
    problems: list[str] = []
    for line in (pack / "MANIFEST.sha256").read_text(encoding="utf-8").splitlines():
        digest, name = line.split("  ", 1)
        path = pack / name
        if not path.is_file():
            problems.append(f"{name}: listed in MANIFEST.sha256 but missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"{name}: SHA-256 differs from MANIFEST.sha256")
    chain: dict[int, str] = {}
    seqs: list[int] = []
    for line in (pack / "audit" / "chain.txt").read_text(encoding="utf-8").splitlines():
        seq_text, digest = line.split()
        chain[int(seq_text)] = digest
        seqs.append(int(seq_text))
    if seqs and seqs != list(range(seqs[0], seqs[0] + len(seqs))):
        problems.append("audit/chain.txt: sequence numbers are not consecutive")
    proof = json.loads((pack / "audit" / "chain-proof.json").read_text(encoding="utf-8"))
    count = 0
    for raw in (pack / "audit" / "records.jsonl").read_bytes().splitlines(keepends=True):
        record = json.loads(raw)
        count += 1
        seq = record.get("seq")
        if record_hash(record) != record.get("hash"):
            problems.append(f"record {seq}: content does not match its hash")
        if canonical(record) + b"\n" != raw:
            problems.append(f"record {seq}: not in canonical form")
        if chain.get(seq) != record.get("hash"):
            problems.append(f"record {seq}: not at its place in audit/chain.txt")
        if seq - 1 in chain and chain[seq - 1] != record.get("prev"):
            problems.append(f"record {seq}: its prev is not the hash of record {seq - 1}")
    for repair in proof.get("repairs", []):
        _print_repair(repair, problems, None)
    head = proof.get("head")
    if seqs and (head is None or [seqs[-1], chain[seqs[-1]]] != [head["seq"], head["hash"]]):
        problems.append("audit/chain.txt does not end at the head in chain-proof.json")
    if log is not None:
        problems += _check_log(log, chain, seqs)
    return problems, count, len(seqs)


def _check_log(log: Path, chain: dict[int, str], seqs: list[int]) -> list[str]:
    """The live trail verifies, and holds the pack's chain.txt, record for record."""
    problems: list[str] = []
    result = verify_live(log)
    for repair in result.repairs:
        seq = repair.get("seq")
        print(f"repair at {repair.get('ts')} (record {seq}): {repair.get('reason')}; "
              f"{repair.get('size')} bytes in {repair.get('quarantine')}, sha256 {repair.get('sha256')}")
    if not result.ok:
        problems.append(f"--log: line {result.bad_line} breaks the chain: {result.reason}")
    number = 0
    for line in checked_lines(log):
        if line.bad_line is not None or line.record is None:
            break
        number = line.number
        if number in chain and chain[number] != line.record["hash"]:
            problems.append(f"--log: record {number} differs from audit/chain.txt")
    if seqs and number < seqs[-1]:
        problems.append(f"--log: ends at record {number}, before the pack's head {seqs[-1]}")
    return problems


def main(argv: list[str]) -> int:
    if argv and not (len(argv) == 2 and argv[0] == "--log"):
        print("usage: python3 verify.py [--log PATH/audit.jsonl]", file=sys.stderr)
        return 2
    problems, count, chained = check_pack(Path(__file__).resolve().parent, Path(argv[1]) if argv else None)
    for p in problems:
        print("FAIL:", p)
    if problems:
        return 1
    print(f"OK: manifest, {count} audit record(s) and a chain of {chained} hash(es) to the head hold")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
