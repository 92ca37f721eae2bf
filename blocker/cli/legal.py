"""Commands for the legal team: audit, report, expiring, evidence (registered by blocker.cli.main).

They read what the daemon writes, while it runs: the state database is opened read-only (never
created: a mistyped --state-dir must fail, not produce an empty report that looks reassuring),
and the audit trail is read with the head file first (see `audit.verify_live`). Only `evidence`
writes, and only one audit record saying who exported what, because exporting evidence is an
operator action the trail must show.

Exit codes follow blocker.cli.main: 0 ok; 1 a check failed (broken audit trail, invalid order files,
an order expiring within the window for `expiring`); 2 usage.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blocker.cli import main as cli
from blocker.config.model import Config
from blocker.legal.report import (
    Expiring,
    Facts,
    ReportRow,
    build_report,
    build_row,
    days_remaining,
    expiring,
    fmt_duration,
    gather,
    record_time,
    to_csv,
)
from blocker.orders.legaltime import fmt_instant, zone
from blocker.orders.load import read_order_file
from blocker.orders.model import Order
from blocker.orders.parse import parse_stored
from blocker.orders.yamlio import YamlError
from blocker.publish.reconcile import Effective, effective_orders
from blocker.record.audit import AuditLog, checked_lines, concerns, current_actor, verify_live
from blocker.record.state import State
from blocker.safeio import STDOUT, OutputError, check_output, check_output_dir, write_output
from blocker.textsafe import display_path, printable

WINDOW_RE = re.compile(r"\s*(\d{1,5})\s*(h|hours?|d|days?|w|weeks?)\s*\Z", re.IGNORECASE)
UNIT_SECONDS = {"h": 3600, "d": 86400, "w": 7 * 86400}
SUMMARY_FIRST = ("order", "operator", "kind", "from", "to", "name", "resolver", "serial", "count", "reason", "ok")


# shared helpers ---------------------------------------------------------------------------------


def _state_dir(args: argparse.Namespace, config: Config) -> Path:
    return Path(args.state_dir) if getattr(args, "state_dir", None) else config.state_dir


def open_state(state_dir: Path) -> State | None:
    """The state database, read-only, or None when nothing was ever applied there.

    Read-only (`mode=ro`) rather than `State.open_existing`, which opens for writing and runs the
    schema: a report run by the legal team must not need, or take, write access to the daemon's
    database.
    """
    if not (state_dir / "state.sqlite3").is_file():
        return None
    try:
        return State(state_dir, readonly=True)
    except sqlite3.Error as exc:
        raise cli.CliError(f"{state_dir / 'state.sqlite3'}: cannot open read-only: {exc}") from None


def _require_state_dir(state_dir: Path, args: argparse.Namespace | None = None) -> None:
    """A state folder that does not exist is a typo (exit 2, naming it); one that exists but
    holds no state yet is a fresh install: the commands run, and say nothing was applied."""
    if not state_dir.is_dir():
        flag = "--state-dir" if args is not None and getattr(args, "state_dir", None) else "the config's state_dir"
        raise cli.CliError(f"{display_path(state_dir)}: no such state directory ({flag})", cli.EXIT_USAGE)


def parse_window(text: str) -> float:
    """`30d`, `2w`, `12h` (also `30 days`, `2 weeks`): the look-ahead of `expiring`, in seconds."""
    match = WINDOW_RE.match(text)
    if not match:
        raise cli.CliError(f"--within: {text!r} is not a window such as 30d, 2w or 12h", cli.EXIT_USAGE)
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)[0].lower()]


def _orders_and_state(args: argparse.Namespace, config: Config, at: datetime
                      ) -> tuple[Effective, State | None, Path, bool]:
    """Orders from the folder plus the last good versions the state keeps in force (read-only).

    Returns (orders in force, state or None, state dir, whether every order file was valid).
    """
    state_dir = _state_dir(args, config)
    _require_state_dir(state_dir, args)
    result, folder = cli._orders(args, config, state_only=True)
    cli._print_errors(result)
    state = open_state(state_dir)
    if state is None:
        print(f"blocker: no state in {state_dir}: nothing was applied there yet; showing the order files only",
              file=sys.stderr)
        return Effective(dict(result.orders)), None, state_dir, result.ok
    try:
        eff = effective_orders(result, config, state, None, at, record=False)
    except sqlite3.Error as exc:
        raise cli.CliError(f"{state_dir}: cannot read the state: {exc}") from None
    if not folder.is_dir():
        # Read elsewhere than the daemon's host: the state's versions are the orders, and a file
        # we cannot see is not evidence that it was removed (no `orphaned` flag).
        print(f"blocker: showing the order versions kept in {state_dir}", file=sys.stderr)
        eff.flags.clear()
    return eff, state, state_dir, result.ok


def _facts(eff: Effective, state: State | None, state_dir: Path, at: datetime, *, with_audit: bool) -> Facts:
    audit = AuditLog(state_dir) if with_audit and state_dir.is_dir() else None
    paths = {o.path: o.id for o in eff.orders.values()}
    try:
        return gather(state, audit, at, paths=paths, flags=eff.flags)
    except sqlite3.Error as exc:
        raise cli.CliError(f"{state_dir}: cannot read the state: {exc}") from None


def _warn_audit(facts: Facts) -> bool:
    """True (and a warning) when the audit trail read for the report does not chain."""
    if facts.audit is not None and not facts.audit.ok:
        print(f"blocker: WARNING: the audit trail is broken at line {facts.audit.bad_line}: {facts.audit.reason}; "
              "run `blocker audit verify`", file=sys.stderr)
        return True
    return False


def _check_out(out: str | None, *, folder: bool = False) -> None:
    """A wrong --out is refused at once, before the report is computed."""
    if out is None:
        return
    try:
        check_output_dir(out) if folder else check_output(out)
    except OutputError as exc:
        raise cli.CliError(f"--out {exc}", cli.EXIT_USAGE if exc.usage else cli.EXIT_INVALID) from None


def _emit(text: str, out: str | None) -> None:
    """Print, or write `--out` whole through blocker.safeio (a new file with a random name,
    renamed into place: a reader never sees half a report, and no planted link is followed)."""
    if out is None or out == STDOUT:
        sys.stdout.write(text)
        return
    try:
        write_output(out, text)
    except OutputError as exc:
        raise cli.CliError(f"--out {exc}", cli.EXIT_USAGE if exc.usage else cli.EXIT_INVALID) from None
    print(f"wrote {display_path(out)}", file=sys.stderr)


# audit ----------------------------------------------------------------------------------------


def cmd_audit_verify(args: argparse.Namespace, config: Config) -> int:
    state_dir = _state_dir(args, config)
    _require_state_dir(state_dir, args)
    log = AuditLog(state_dir)
    if not log.path.exists() and log.head() is None:
        raise cli.CliError(f"{log.path}: no audit trail (nothing was ever applied with this --state-dir)")
    result = verify_live(log)
    for repair in result.repairs:  # every repair, also those that keep the trail intact
        print(_repair_line(repair))
    if result.ok:
        print(f"audit trail intact: {result.count} records, head {result.head}"
              + (f" ({len(result.repairs)} repair(s) of an uncommitted torn end, see above)" if result.repairs else ""))
        return cli.EXIT_OK
    print(f"audit trail BROKEN at line {result.bad_line} (record {result.bad_line}): {printable(result.reason)}")
    print(f"{result.count} record(s) before it chain correctly"
          + (f"; last good hash {result.head}" if result.count else ""))
    return cli.EXIT_INVALID


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
    state_dir = _state_dir(args, config)
    _require_state_dir(state_dir, args)
    log = AuditLog(state_dir)
    since = cli.parse_at(args.since, config) if args.since else None
    tz = zone(config.timezone)
    paths = _order_paths(state_dir, args.order) if args.order else set()
    broken: tuple[int, str] | None = None

    def wanted() -> Iterator[tuple[int, bytes, dict[str, Any] | None]]:
        nonlocal broken
        for line in checked_lines(log):
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
                data = record.get("data") if isinstance(record.get("data"), dict) else {}
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
        return cli.EXIT_INVALID
    return cli.EXIT_OK


# report ---------------------------------------------------------------------------------------


def _row_text(row: ReportRow) -> str:
    o = row.order
    tz = o.tz
    left = "" if row.days_remaining is None else f"  {row.days_remaining} day(s) left"
    flag = f"  [{row.flag}]" if row.flag else ""
    # Every field from the order file is escaped (textsafe): a newline or an ESC sequence in it
    # must not forge a line of the report or repaint the reader's terminal.
    lines = [f"{printable(o.id)}  {row.status.upper()}{left}{printable(flag)}",
             f"  court     {printable(o.court)}; {printable(o.case_number)}"
             + (f"; applicant {printable(o.applicant)}" if o.applicant else ""),
             f"  start     {fmt_instant(o.start, tz)}",
             f"  lift      {fmt_instant(o.end, tz)}",
             f"  rule      {printable(o.rule)}"]
    if row.received is not None:
        lines.append(f"  received  {fmt_instant(row.received, tz)} (first applied; {row.versions} version(s))")
    targets = [printable(t.name) + (f" (url-escalated: {printable(t.source)})" if t.kind == "url-escalated" else "")
               for t in o.targets]
    lines.append("  targets   " + ", ".join(targets))

    def at(value: datetime | None) -> str:
        return "-" if value is None else fmt_instant(value, tz)

    table = []
    for r in row.operators:
        published = "-" if r.first_published is None else f"{at(r.first_published)} #{r.first_serial}"
        failures = str(r.failures) + (f" (last {at(r.last_failure)})" if r.last_failure else "")
        table.append([r.operator, r.block, published, at(r.block_verified), fmt_duration(r.time_to_block) or "-",
                      at(r.last_verified), failures, r.lift, at(r.lift_verified)])
    text = cli._table(table, ["OPERATOR", "BLOCK", "FIRST PUBLISHED", "BLOCK VERIFIED", "TIME TO BLOCK",
                              "LAST VERIFIED", "FAILURES", "LIFT", "LIFT VERIFIED"])
    lines += ["  " + line for line in text.splitlines()]
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace, config: Config) -> int:
    from blocker.legal.html import render_report

    _check_out(args.out)
    at = cli.parse_at(args.at, config)
    eff, state, state_dir, orders_ok = _orders_and_state(args, config, at)
    try:
        facts = _facts(eff, state, state_dir, at, with_audit=True)
    finally:
        if state is not None:
            state.close()
    rows = build_report(eff.orders.values(), facts, at)
    broken = _warn_audit(facts)
    tz = zone(config.timezone)
    if args.format == "json":
        text = json.dumps({"at": fmt_instant(at, tz), "timezone": config.timezone,
                           "audit": None if facts.audit is None else {
                               "ok": facts.audit.ok, "records": facts.audit.count,
                               "bad_line": facts.audit.bad_line, "reason": facts.audit.reason},
                           "orders": [r.to_json() for r in rows]}, indent=2, ensure_ascii=False) + "\n"
    elif args.format == "csv":
        text = to_csv(rows)
    elif args.format == "html":
        text = render_report(rows, at, config.timezone, audit=facts.audit, source=config.source,
                             generated=datetime.now(UTC))
    else:
        text = "\n\n".join(_row_text(r) for r in rows) + "\n"
        audit = ("no audit trail" if facts.audit is None else
                 f"audit trail intact ({facts.audit.count} records)" if facts.audit.ok else "audit trail BROKEN")
        print(f"\nat {fmt_instant(at, tz)} ({config.timezone}); {len(rows)} orders; {audit}", file=sys.stderr)
    _emit(text, args.out)
    return cli.EXIT_OK if orders_ok and not broken else cli.EXIT_INVALID


# expiring -------------------------------------------------------------------------------------


def cmd_expiring(args: argparse.Namespace, config: Config) -> int:
    window = parse_window(args.within)
    at = cli.parse_at(args.at, config)
    eff, state, state_dir, _ok = _orders_and_state(args, config, at)
    try:
        facts = _facts(eff, state, state_dir, at, with_audit=False)  # zones and probes only: fast
    finally:
        if state is not None:
            state.close()
    rows = build_report(eff.orders.values(), facts, at)
    items = expiring(rows, at, window)
    soon = [i for i in items if i.reason == "expires-within"]
    late = [i for i in items if i.reason == "lift-unverified"]
    tz = zone(config.timezone)

    def stopped(item: Expiring) -> bool:
        """Probes check a lifted name for probe.recent_window_days only: after that no pass will
        ever verify this lift, and the legal team must know it is waiting for nothing."""
        return (at - item.row.order.end).total_seconds() > config.probe_recent_window_days * 86400

    if args.json:
        print(json.dumps([{**i.to_json(), "probes_stopped": stopped(i) if i.reason == "lift-unverified" else False}
                          for i in items], indent=2, ensure_ascii=False))
    else:
        until = fmt_instant(datetime.fromtimestamp(at.timestamp() + window, UTC), tz)
        if soon:
            print(f"Lifting within {args.within.strip()} (before {until}):")
            print(cli._table([[i.row.order.id, i.row.status, fmt_instant(i.row.order.end, i.row.order.tz),
                               str(days_remaining(i.row.order, at)), fmt_duration(i.row.seconds_remaining),
                               i.row.order.case_number, i.row.order.rule] for i in soon],
                             ["ORDER", "STATUS", "LIFT", "DAYS", "IN", "CASE", "RULE"]))
        else:
            print(f"No order lifts within {args.within.strip()} (before {until}).")
        if late:
            print("\nEnded, lift not verified by a probe on every operator:")
            print(cli._table([[i.row.order.id, i.row.status, fmt_instant(i.row.order.end, i.row.order.tz),
                               ", ".join(f"{r.operator}: {r.lift}" for r in i.row.operators
                                         if r.operator in i.unverified),
                               "probes no longer check it: verify by hand" if stopped(i) else ""] for i in late],
                             ["ORDER", "STATUS", "LIFTED AT", "UNVERIFIED (OPERATOR: STATE)", "NOTE"]))
            print("(unverified: removed from the zone, no probe has seen it resolve yet; "
                  "in-zone: still published after its end)")
    return cli.EXIT_INVALID if soon else cli.EXIT_OK


# evidence -------------------------------------------------------------------------------------


def _find_order(order_id: str, eff: Effective, state: State, config: Config) -> Order | None:
    """The order as the tool knows it: its valid file, else its last good version, else the
    newest stored version that still parses (an orphan lifted with --force)."""
    if order_id in eff.orders:
        return eff.orders[order_id]
    for _digest, path, content, _first in reversed(state.order_versions(order_id)):
        parsed = parse_stored(content, path, config.order_rules)
        if isinstance(parsed, Order):
            return parsed
    return None


def cmd_evidence(args: argparse.Namespace, config: Config) -> int:
    from blocker.legal.evidence import EvidenceError, write_pack

    _check_out(args.out, folder=True)
    at = cli.parse_at(args.at, config)
    state_dir = _state_dir(args, config)
    _require_state_dir(state_dir, args)
    eff, state, state_dir, _ok = _orders_and_state(args, config, at)
    if state is None:
        raise cli.CliError(f"{state_dir}: no state: an evidence pack needs the state and audit trail")
    try:
        order = _find_order(args.order_id, eff, state, config)
        if order is None:
            raise cli.CliError(f"unknown order {args.order_id!r}: not in the orders folder nor in {state_dir}")
        facts = _facts(Effective({order.id: order}, eff.flags), state, state_dir, at, with_audit=True)
        row = build_row(order, facts, at)
        try:  # never blocks: a FIFO put in the order's place is no order file
            current = read_order_file(Path(order.path))
        except (OSError, YamlError):
            current = None
        audit = AuditLog(state_dir)
        actor = current_actor()
        try:
            pack = write_pack(Path(args.out), order, row, state=state, audit=audit, config=config, current=current,
                              generated=datetime.now(UTC), actor=actor)
        except OutputError as exc:
            raise cli.CliError(f"--out {exc}", cli.EXIT_USAGE if exc.usage else cli.EXIT_INVALID) from None
        except (EvidenceError, OSError) as exc:
            raise cli.CliError(str(exc)) from None
    finally:
        state.close()
    audit.append("evidence-exported", {
        "order": order.id, "out": str(Path(args.out).resolve()), "files": len(pack.files),
        "manifest_sha256": pack.manifest_sha256, "records": pack.records,
        "head_seq": pack.head[0] if pack.head else 0, "head_hash": pack.head[1] if pack.head else None,
    }, actor=actor)
    print(f"{display_path(args.out)}: evidence pack for {order.id}: {len(pack.files)} files, "
          f"{pack.records} audit record(s)")
    print(f"MANIFEST.sha256 {pack.manifest_sha256} (recorded in the audit trail as evidence-exported)")
    if pack.audit is not None and not pack.audit.ok:
        print(f"blocker: WARNING: the audit trail is broken at line {pack.audit.bad_line}: {pack.audit.reason} "
              "(recorded in the pack)", file=sys.stderr)
        return cli.EXIT_INVALID
    return cli.EXIT_OK


# registration ---------------------------------------------------------------------------------


def register(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add audit, report, expiring and evidence to the `blocker` parser (`add` is cli's factory)."""
    state_help = "state folder (default: config state_dir); read-only, safe while the daemon runs"

    p = add("audit", "the hash-chained audit trail: verify it, or show it")
    sub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    v = sub.add_parser("verify", help="check the whole chain; exit 1 naming the first bad record",
                       description="check the whole chain; exit 1 naming the first bad record")
    _common(v, state_help)
    v.set_defaults(func=cmd_audit_verify)
    s = sub.add_parser("show", help="readable history, oldest first", description="readable history, oldest first")
    _common(s, state_help)
    s.add_argument("--order", metavar="ID", help="only records that concern this order")
    s.add_argument("--since", metavar="ISO8601", help="only records at or after this instant")
    s.add_argument("--json", action="store_true", help="JSON array of the records as stored")
    s.set_defaults(func=cmd_audit_show)

    p = add("report", "every order: dates, rule, status, and per operator what probes verified")
    p.add_argument("--orders", metavar="DIR", help="orders folder (default: config orders_dir)")
    p.add_argument("--state-dir", metavar="DIR", help=state_help)
    p.add_argument("--at", metavar="ISO8601", help="report as at this instant (default: now)")
    p.add_argument("--format", choices=("table", "json", "csv", "html"), default="table")
    p.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    p.set_defaults(func=cmd_report)

    p = add("expiring", "orders lifting soon, and ended orders whose lift no probe verified; exit 1 if any lift soon")
    p.add_argument("--within", metavar="WINDOW", default="30d", help="look-ahead: 30d, 2w, 12h (default 30d)")
    p.add_argument("--orders", metavar="DIR")
    p.add_argument("--state-dir", metavar="DIR", help=state_help)
    p.add_argument("--at", metavar="ISO8601", help="from this instant (default: now)")
    p.add_argument("--json", action="store_true", help="JSON array")
    p.set_defaults(func=cmd_expiring)

    p = add("evidence", "write an evidence pack for one order (versions, audit records with chain proof, "
                        "zone serials, probes, index.html, MANIFEST.sha256)")
    p.add_argument("order_id", metavar="ORDER_ID")
    p.add_argument("--out", metavar="DIR", required=True, help="new or empty folder for the pack")
    p.add_argument("--orders", metavar="DIR")
    p.add_argument("--state-dir", metavar="DIR", help="state folder (default: config state_dir)")
    p.add_argument("--at", metavar="ISO8601", help="instant of the summary's status and facts (default: now)")
    p.set_defaults(func=cmd_evidence)


def _common(p: argparse.ArgumentParser, state_help: str) -> None:
    # `--config` after the action too, like every other command (SUPPRESS keeps an earlier one).
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="daemon config")
    p.add_argument("--state-dir", metavar="DIR", help=state_help)
