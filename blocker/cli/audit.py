"""`audit verify` and `audit show`: the hash-chained trail, checked and read.

Both read while the daemon appends: the trail is read with the head file first (see
blocker.record.verify.verify_live), and the state read-only. Exit codes: 0 the chain holds;
1 it is broken (naming the first bad record); 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from blocker.cli.common import UTC_HELP, open_state, parse_at, require_state_dir, shown_zone, state_dir_of
from blocker.cli.errors import EXIT_INVALID, EXIT_OK, CliError, with_epilog
from blocker.cli.output import print_json
from blocker.config.model import Config
from blocker.legal.report import record_time
from blocker.orders.legaltime import fmt_instant
from blocker.record.audit import AuditLog, concerns, verify_live
from blocker.record.verify import checked_lines, data_of
from blocker.textsafe import printable

SUMMARY_FIRST = ("order", "operator", "kind", "from", "to", "name", "resolver", "serial", "count", "reason", "ok")


def cmd_audit_verify(args: argparse.Namespace, config: Config) -> int:
    state_dir = state_dir_of(args, config)
    require_state_dir(state_dir, args)
    log = AuditLog(state_dir)
    if not log.path.exists() and log.head() is None:
        raise CliError(f"{log.path}: no audit trail (nothing was ever applied with this --state-dir)")
    result = verify_live(log)
    if args.json:  # the verdict for a script: the same facts as the lines below, and the same exit code
        print_json({"ok": result.ok, "records": result.count, "head": result.head,
                    "bad_line": None if result.ok else result.bad_line,
                    "reason": None if result.ok else result.reason,
                    "repairs": list(result.repairs)}, ensure_ascii=False)
        return EXIT_OK if result.ok else EXIT_INVALID
    for repair in result.repairs:  # every repair, also those that keep the trail intact
        print(_repair_line(repair))
    if result.ok:
        print(f"audit trail intact: {result.count} records, head {result.head}"
              + (f" ({len(result.repairs)} repair(s) of an uncommitted torn end, see above)" if result.repairs else ""))
        return EXIT_OK
    print(f"audit trail BROKEN at line {result.bad_line} (record {result.bad_line}): {printable(result.reason)}")
    print(f"{result.count} record(s) before it chain correctly"
          + (f"; last good hash {result.head}" if result.count else ""))
    return EXIT_INVALID


def _repair_line(repair: dict[str, Any]) -> str:
    """One line per `audit-repaired` record: when, what was moved aside (file, size, SHA-256), and
    whether it was a removal (the head file had counted what was lost)."""
    where = f"from byte {repair.get('offset')}, after record {repair.get('last_seq')}"
    if repair.get("quarantine"):
        what = (f"quarantined {repair.get('size')} bytes {where} in {repair.get('quarantine')}, "
                f"sha256 {repair.get('sha256')}")
    else:
        what = f"nothing left to quarantine ({where})"
    verdict = ("uncommitted, nothing lost" if repair.get("committed") is False
               else "the head file had counted it: a removal")
    return printable(f"repair at {repair.get('ts')} (record {repair.get('seq')}): {repair.get('reason', '')}; "
                     f"{what}; {verdict}", limit=1000)


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def _summary(data: Any, limit: int = 200) -> str:
    """One line of `key=value` for a record's data; lists joined, diffs as `from -> to`."""
    if not isinstance(data, dict):
        return printable(data, limit=limit)
    parts = []
    first = [k for k in SUMMARY_FIRST if k in data]  # what a reader scans for, before the details
    for key, value in [(k, data[k]) for k in first] + [(k, v) for k, v in data.items() if k not in first]:
        if key == "changes" and isinstance(value, dict):
            diffs = []
            for field_name, change in value.items():
                if isinstance(change, dict) and "from" in change:
                    diffs.append(f"{field_name}: {_value(change.get('from'))} -> {_value(change.get('to'))}")
                elif isinstance(change, dict):
                    diffs.append(f"{field_name}: +{','.join(change.get('added', []))} "
                                 f"-{','.join(change.get('removed', []))}")
            parts.append("changes[" + "; ".join(diffs) + "]")
        elif isinstance(value, list):
            shown = ",".join(str(v) for v in value[:8]) + (f",+{len(value) - 8}" if len(value) > 8 else "")
            parts.append(f"{key}={shown}")
        elif isinstance(value, dict):
            parts.append(f"{key}={json.dumps(value, ensure_ascii=False, sort_keys=True)}")
        else:
            parts.append(f"{key}={value}")
    # One line per record, whatever the data holds: whitespace runs folded, the rest escaped.
    text = printable(" ".join(" ".join(str(p).split()) for p in parts), limit=None)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _order_paths(state_dir: Path, order_id: str) -> set[str]:
    """Files the order was read from: records such as order-invalid name the file only."""
    state = open_state(state_dir)
    if state is None:
        return set()
    try:
        return {path for _d, path, _c, _f in state.order_versions(order_id)}
    finally:
        state.close()


def cmd_audit_show(args: argparse.Namespace, config: Config) -> int:
    state_dir = state_dir_of(args, config)
    require_state_dir(state_dir, args)
    log = AuditLog(state_dir)
    since = parse_at(args.since, config, "--since") if args.since else None
    tz = shown_zone(args, config)
    paths = _order_paths(state_dir, args.order) if args.order else set()
    broken: tuple[int, str] | None = None

    def wanted() -> Iterator[tuple[int, bytes, dict[str, Any] | None]]:
        nonlocal broken
        for line in checked_lines(log.path):
            if line.bad_line is not None and broken is None:
                broken = (line.bad_line, line.problem)
            record = line.record
            if record is None:
                if since is None and args.order is None:
                    yield line.number, line.raw, None
                continue
            if since is not None and ((ts := record_time(record)) is None or ts < since):
                continue
            if args.order is not None:
                data = data_of(record)
                if not (concerns(record, args.order) or data.get("file") in paths):
                    continue
            yield line.number, line.raw, record

    shown = 0
    if args.json:  # streamed: a trail of a million records is not held in memory
        sys.stdout.write("[")
        for _number, _raw, record in wanted():
            if record is not None:
                sys.stdout.write(("\n  " if shown == 0 else ",\n  ") + json.dumps(record, ensure_ascii=False))
                shown += 1
        sys.stdout.write("\n]\n" if shown else "]\n")
    else:
        for number, raw, record in wanted():
            mark = "  !! first broken record: " + broken[1] if broken is not None and broken[0] == number else ""
            if record is None:
                print(f"#? line {number}: unreadable: {raw[:80]!r}{mark}")
                continue
            ts = record_time(record)
            when = fmt_instant(ts, tz) if ts is not None else str(record.get("ts"))
            print(f"#{printable(record.get('seq'))}  {printable(when)}  {printable(record.get('actor'))}  "
                  f"{printable(record.get('event'))}  {_summary(record.get('data'))}{printable(mark)}")
            shown += 1
        print(f"{shown} record(s)" + (f" concerning {args.order}" if args.order else "")
              + (f" since {fmt_instant(since, tz)}" if since else ""), file=sys.stderr)
    if broken is not None:
        print(f"blocker: WARNING: the audit trail is broken at line {broken[0]}: {broken[1]}; "
              "records from there on cannot be trusted (`blocker audit verify`)", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


def register(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add `audit verify|show` to the `blocker` parser (`add` is cli's factory)."""
    state_help = "state folder (default: config state_dir); read-only, safe while the daemon runs"

    p = add("audit", "the hash-chained audit trail: verify it, or show it")
    sub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    codes = {0: "the chain holds", 1: "the trail is broken (the first bad record is named), or there is none",
             2: "usage error (a missing --state-dir, a bad flag)",
             70: "internal error (a bug: see the crash log named)"}
    with_epilog(p, codes, "blocker audit verify --state-dir /var/lib/blocker")
    v = sub.add_parser("verify", help="check the whole chain; exit 1 naming the first bad record",
                       description="check the whole chain; exit 1 naming the first bad record")
    _common(v, state_help)
    v.add_argument("--json", action="store_true",
                   help="one JSON object: ok, records, head, bad_line, reason, repairs")
    with_epilog(v, codes, "blocker audit verify --state-dir /var/lib/blocker --json")
    v.set_defaults(func=cmd_audit_verify)
    s = sub.add_parser("show", help="readable history, oldest first", description="readable history, oldest first")
    _common(s, state_help)
    s.add_argument("--order", metavar="ID", help="only records that concern this order")
    s.add_argument("--since", metavar="ISO8601", help="only records at or after this instant")
    s.add_argument("--json", action="store_true", help="JSON array of the records as stored")
    s.add_argument("--utc", action="store_true", help=UTC_HELP + "; default: the config's timezone")
    with_epilog(s, {0: "the records were shown", 1: "the trail is broken (records from there on are suspect)",
                    2: "usage error (a bad --since, a missing --state-dir)",
                    70: "internal error (a bug: see the crash log named)"},
                "blocker audit show --order tj-paris-2026-001 --since 2026-11-01")
    s.set_defaults(func=cmd_audit_show)


def _common(p: argparse.ArgumentParser, state_help: str) -> None:
    # `--config` after the action too, like every other command (SUPPRESS keeps an earlier one).
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                   help="daemon config (default: $BLOCKER_CONFIG, else ./configs/blocker.yaml, else built-in defaults)")
    p.add_argument("--state-dir", metavar="DIR", help=state_help)
