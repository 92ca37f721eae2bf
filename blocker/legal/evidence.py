"""The evidence pack for one order: everything a court or an auditor may ask for, in one folder.

A pack must stand on its own years later, without blocker and without the state directory:
- `order/`: every version of the order file as it was applied (the bytes hashed at the time),
  with `versions.json` saying when each was first applied and what it meant;
- `audit/records.jsonl`: the audit records that concern the order, byte for byte as they are in
  the trail, so anyone can recompute their SHA-256; `audit/chain.txt`: the hash of every record
  from the first of them to the head of the trail, and `audit/chain-proof.json` the head and each
  record's hash and predecessor: together they show the records sit unaltered in one chain;
- `zones/serials.csv`: every zone serial, per operator, in which the order's entries appeared;
- `probes/`: the probe records that concern it and what the state kept (first verified block
  and lift, last verification, failures);
- `report.json` and `index.html`: the same facts as `blocker report`, for this order, readable;
- `verify.py`: the source of blocker.record.verify, the trail's one verifier (standard library
  only), which re-checks the manifest, the hashes and the chain;
- `MANIFEST.sha256`: `sha256sum -c MANIFEST.sha256` checks every other file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from blocker.config.model import Config
from blocker.errors import BlockerError
from blocker.legal.html import render
from blocker.legal.report import ReportRow, spreadsheet_safe
from blocker.orders.legaltime import fmt_instant
from blocker.orders.model import Order
from blocker.orders.parse import parse_stored
from blocker.record import verify
from blocker.record.audit import AuditLog, concerns
from blocker.record.state import State
from blocker.record.verify import Verdict, VerifyResult, checked_lines, data_of
from blocker.safeio import SCRIPT_MODE, OutputDir, output_dir

PROBE_EVENTS = frozenset({"probe-pass", "probe-verdict-change", "order-verified"})
MAX_HTML_ROWS = 200  # the page stays printable; the files hold everything


class EvidenceError(BlockerError):
    """The pack cannot be written (the folder is not empty, a file cannot be created)."""


@dataclass
class Pack:
    """What was written, for the command's summary and its audit record."""

    dir: Path
    files: list[str] = field(default_factory=list)
    manifest_sha256: str = ""
    audit: VerifyResult | None = None
    records: int = 0
    head: tuple[int, str] | None = None
    chain: int = 0  # hashes in audit/chain.txt: what verify.py counts beside the records


def count_line(records: int, chain: int, trail: int) -> str:
    """Why the pack's record count and verify.py's counts differ, in one line (issue 12)."""
    return (f"{records} record(s) concern this order; verify.py also checks the chain of {chain} hash(es) from the "
            f"first of them to the head of the trail, so none between them was removed or altered "
            f"(with --log STATE_DIR/audit.jsonl it also checks all {trail} record(s) of the live trail)")


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def _versions(out: OutputDir, order: Order, state: State, config: Config,
              current: bytes | None) -> list[dict[str, Any]]:
    stored = state.order_versions(order.id)
    listing: list[dict[str, Any]] = []
    if not stored and current is not None:
        # The file's own name, made safe: a newline in it would forge a line of MANIFEST.sha256.
        name = "order/current-" + re.sub(r"[^A-Za-z0-9._-]", "_", Path(order.path).name).lstrip(".")
        out.write(name, current)
        listing.append({"n": 1, "file": name, "sha256": hashlib.sha256(current).hexdigest(), "path": order.path,
                        "first_applied": None, "note": "never applied: the current file"})
    for n, (digest, path, content, first_seen) in enumerate(stored, start=1):
        name = f"order/v{n:02d}-{digest[:12]}{Path(path).suffix if Path(path).suffix in ('.yaml', '.yml') else '.yaml'}"
        out.write(name, content)
        item: dict[str, Any] = {"n": n, "file": name, "sha256": digest, "path": path,
                                "first_applied": fmt_instant(first_seen, order.tz)}
        parsed = parse_stored(content, path, config.order_rules)
        if isinstance(parsed, Order):
            item.update({"start": fmt_instant(parsed.start, parsed.tz), "lift": fmt_instant(parsed.end, parsed.tz),
                         "rule": parsed.rule, "targets": len(parsed.targets), "operators": list(parsed.operators)})
        else:
            item["note"] = "not valid under the current configuration: " + "; ".join(str(e) for e in parsed[:3])
        listing.append(item)
    out.write("order/versions.json", _json(listing))
    return listing


@dataclass
class _AuditScan:
    records: list[dict[str, Any]] = field(default_factory=list)  # index: seq, ts, event, actor, hash, prev
    counts: dict[str, int] = field(default_factory=dict)
    first_seq: int | None = None
    head: tuple[int, str] | None = None
    verified: VerifyResult | None = None
    chain_lines: int = 0
    repairs: list[dict[str, Any]] = field(default_factory=list)  # audit-repaired records anywhere in the trail


def _scan_audit(out: OutputDir, audit: AuditLog, order_id: str, paths: set[str]) -> _AuditScan:
    """One pass over the trail: copy what concerns the order, and the chain from it to the head,
    judged as `blocker audit verify` judges it (blocker.record.verify.Verdict) in the same pass."""
    scan = _AuditScan()
    head_file = audit.head()  # read first: the daemon may append while we read (see verify_live)
    verdict = Verdict(head_file, audit.dir)
    with ExitStack() as stack:
        records: BinaryIO = stack.enter_context(out.open("audit/records.jsonl"))
        probes: BinaryIO = stack.enter_context(out.open("probes/probe-records.jsonl"))
        chain: BinaryIO = stack.enter_context(out.open("audit/chain.txt"))
        for line in checked_lines(audit.path):
            verdict.add(line)
            record = line.record
            if record is None or not isinstance(record.get("seq"), int):
                continue
            scan.head = (record["seq"], str(record.get("hash")))
            data = data_of(record)
            hit = concerns(record, order_id) or (isinstance(data.get("file"), str) and data["file"] in paths)
            if hit:
                if scan.first_seq is None:
                    scan.first_seq = record["seq"]
                raw = line.raw if line.raw.endswith(b"\n") else line.raw + b"\n"
                records.write(raw)
                event = str(record.get("event"))
                scan.counts[event] = scan.counts.get(event, 0) + 1
                if event in PROBE_EVENTS:
                    probes.write(raw)
                scan.records.append({k: record.get(k) for k in ("seq", "ts", "event", "actor", "hash", "prev")})
            if scan.first_seq is not None:
                chain.write(f"{record['seq']} {record.get('hash')}\n".encode())
                scan.chain_lines += 1
    scan.verified = verdict.result()
    scan.repairs = list(scan.verified.repairs)
    proof = {
        "log": str(audit.path),
        "verified": {"ok": scan.verified.ok, "records": scan.verified.count, "bad_line": scan.verified.bad_line,
                     "reason": scan.verified.reason},
        "head": None if scan.head is None else {"seq": scan.head[0], "hash": scan.head[1]},
        "head_file": None if head_file is None else {"seq": head_file[0], "hash": head_file[1]},
        "first_concerning_seq": scan.first_seq,
        "repairs": scan.repairs,
        "records": [{k: r[k] for k in ("seq", "hash", "prev")} for r in scan.records],
        "chain": "audit/chain.txt: `SEQ HASH` for every record from the first concerning record to the head",
        "hash": "SHA-256 of the record's canonical JSON without its `hash` key: keys sorted, no spaces, UTF-8",
    }
    out.write("audit/chain-proof.json", _json(proof))
    return scan


def _zones(out: OutputDir, order: Order, state: State) -> list[list[str]]:
    rows = []
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["operator", "serial", "checksum", "published_at", "orders_in_zone"])
    for op, serial, checksum, at, ids in state.zone_history(order.id):
        row = [op, str(serial), checksum, fmt_instant(at, order.tz), str(len(ids))]
        writer.writerow([spreadsheet_safe(c) for c in row])
        rows.append(row)
    out.write("zones/serials.csv", buf.getvalue())
    return rows


def _probe_state(out: OutputDir, order: Order, state: State) -> None:
    firsts = [{"operator": op, "kind": kind, "at": fmt_instant(at, order.tz)}
              for (oid, op, kind), at in sorted(state.firsts().items()) if oid == order.id]
    last = [{"operator": op, "last_ok": None if ok is None else fmt_instant(ok, order.tz),
             "last_failure": None if bad is None else fmt_instant(bad, order.tz), "failures": n}
            for (oid, op), (ok, bad, n) in sorted(state.probe_last().items()) if oid == order.id]
    out.write("probes/state.json", _json({"probe_firsts": firsts, "probe_last": last}))


def _index(order: Order, row: ReportRow, versions: list[dict[str, Any]], scan: _AuditScan,
           zones: list[list[str]], files: list[tuple[str, str]], generated: datetime, actor: str,
           exported_by: str) -> str:
    shown_zones = zones if len(zones) <= MAX_HTML_ROWS else zones[:MAX_HTML_ROWS // 2] + zones[-MAX_HTML_ROWS // 2:]
    shown = [r for r in scan.records if r["event"] != "probe-pass"]
    return render("evidence.html.j2", title=f"Evidence pack: {order.id}",
                  count_line=count_line(len(scan.records), scan.chain_lines,
                                        scan.verified.count if scan.verified else 0),
                  row=row, versions=versions, scan=scan,
                  zones=shown_zones, zones_total=len(zones), counts=sorted(scan.counts.items()),
                  shown=shown[:MAX_HTML_ROWS], shown_total=len(shown), files=files, generated=generated,
                  actor=actor, exported_by=exported_by)


def write_pack(out: Path, order: Order, row: ReportRow, *, state: State, audit: AuditLog, config: Config,
               current: bytes | None, generated: datetime, actor: str, exported_by: str | None = None) -> Pack:
    """Write the whole pack into `out` (absent, or an empty folder); the manifest is written last.

    The pack is built in a new folder with a random name next to `out` and renamed onto it
    once complete (blocker.safeio.output_dir): nobody sees half a pack, and nothing planted
    in the target folder is followed or kept.
    """
    pack = Pack(out)
    with output_dir(out) as folder:
        _fill(folder, pack, order, row, state=state, audit=audit, config=config, current=current,
              generated=generated, actor=actor, exported_by=exported_by or actor)
    return pack


def _fill(out: OutputDir, pack: Pack, order: Order, row: ReportRow, *, state: State, audit: AuditLog,
          config: Config, current: bytes | None, generated: datetime, actor: str, exported_by: str) -> None:
    versions = _versions(out, order, state, config, current)
    paths = {v["path"] for v in versions} | {order.path}
    scan = _scan_audit(out, audit, order.id, paths)
    zones = _zones(out, order, state)
    _probe_state(out, order, state)
    out.write("report.json", _json(row.to_json()))
    out.write("export.json", _json({
        "exported_by": exported_by, "account": actor, "generated": fmt_instant(generated, order.tz),
        "records_in_pack": len(scan.records), "records_in_trail": scan.verified.count if scan.verified else 0,
        "chain_hashes": scan.chain_lines,
        "counts": count_line(len(scan.records), scan.chain_lines,
                             scan.verified.count if scan.verified else 0)}))
    out.write("verify.py", Path(verify.__file__).read_bytes(), SCRIPT_MODE)
    files = sorted(out.files)
    out.write("index.html", _index(order, row, versions, scan, zones,
                                   [(f, out.sha256(f)) for f in files], generated, actor, exported_by))
    files = sorted({*files, "index.html"})
    manifest = "".join(f"{out.sha256(f)}  {f}\n" for f in files)
    out.write("MANIFEST.sha256", manifest)
    pack.files = [*files, "MANIFEST.sha256"]
    pack.manifest_sha256 = hashlib.sha256(manifest.encode()).hexdigest()
    pack.audit, pack.records, pack.head = scan.verified, len(scan.records), scan.head
    pack.chain = scan.chain_lines

