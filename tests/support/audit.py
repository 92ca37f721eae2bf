"""The audit trail read back independently of blocker.record.audit, for tests of any package."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tests.support.cli import blocker

GENESIS = "0" * 64


def audit_records(state_dir: Path) -> list[dict[str, Any]]:
    """Every audit record, after checking the hash chain line by line (independent of blocker.record.audit)."""
    prev, records = GENESIS, []
    raw_lines = (state_dir / "audit.jsonl").read_bytes().splitlines(keepends=True)
    for number, raw in enumerate(raw_lines, start=1):
        assert raw.endswith(b"\n"), f"audit line {number} is truncated"
        record = json.loads(raw)
        assert record["seq"] == number, f"audit line {number}: seq {record['seq']}"
        assert record["prev"] == prev, f"audit line {number} does not chain to line {number - 1}"
        body = {k: v for k, v in record.items() if k != "hash"}
        canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert hashlib.sha256(canon).hexdigest() == record["hash"], f"audit line {number}: bad hash"
        prev = record["hash"]
        records.append(record)
    head = (state_dir / "audit.head").read_text().split()
    assert int(head[0]) <= len(records), "audit head is ahead of the log: records were lost"
    if int(head[0]) == len(records):
        assert head[1] == prev
    return records


def verify_audit(state_dir: Path) -> list[dict[str, Any]]:
    """The chain checked here, and by `blocker audit verify` (runs the console script)."""
    records = audit_records(state_dir)
    done = blocker("audit", "verify", "--state-dir", str(state_dir), timeout=30)
    if not (done.returncode == 2 and "invalid choice" in done.stderr):  # the command is not there yet
        assert done.returncode == 0, f"blocker audit verify: {done.stdout}{done.stderr}"
    return records


def events(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The data of the records of one event kind, in order."""
    return [r["data"] for r in records if r["event"] == name]
