"""Commands for the legal team: report, expiring, evidence (`audit` is in blocker.cli.audit).

They read what the daemon writes, while it runs: the state database is opened read-only (never
created: a mistyped --state-dir must fail, not produce an empty report that looks reassuring),
and the audit trail is read with the head file first (see `audit.verify_live`). Only `evidence`
writes, and only one audit record saying who exported what, because exporting evidence is an
operator action the trail must show.

Exit codes follow blocker.cli.errors: 0 ok; 1 a check failed (broken audit trail, invalid order files,
an order expiring within the window for `expiring`); 2 usage.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from blocker.cli.common import (
    UTC_HELP,
    load_folder,
    open_state,
    parse_at,
    require_state_dir,
    shown_zone,
    shown_zone_name,
    state_dir_of,
)
from blocker.cli.errors import EXIT_INVALID, EXIT_OK, EXIT_USAGE, CliError, with_epilog
from blocker.cli.output import print_errors, print_json, table
from blocker.config.model import Config
from blocker.legal.report import (
    BEFORE_RECORDS,
    Expiring,
    Facts,
    ReportRow,
    build_report,
    build_row,
    days_remaining,
    expiring,
    fmt_duration,
    gather,
    to_csv,
    with_unicode,
)
from blocker.orders.legaltime import fmt_instant, zone
from blocker.orders.load import read_order_file
from blocker.orders.model import Order
from blocker.orders.parse import parse_stored
from blocker.orders.yamlio import YamlError
from blocker.publish.reconcile import Effective, effective_orders
from blocker.record.audit import AuditLog, current_actor
from blocker.record.state import State
from blocker.safeio import STDOUT, OutputError, check_output, check_output_dir, write_output
from blocker.textsafe import display_path, printable

WINDOW_RE = re.compile(r"\s*(\d{1,5})\s*(h|hours?|d|days?|w|weeks?)\s*\Z", re.IGNORECASE)
UNIT_SECONDS = {"h": 3600, "d": 86400, "w": 7 * 86400}


# shared helpers ---------------------------------------------------------------------------------


def parse_window(text: str) -> float:
    """`30d`, `2w`, `12h` (also `30 days`, `2 weeks`): the look-ahead of `expiring`, in seconds."""
    match = WINDOW_RE.match(text)
    if not match:
        raise CliError(f"--within: {text!r} is not a window such as 30d, 2w or 12h", EXIT_USAGE)
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)[0].lower()]


def _orders_and_state(args: argparse.Namespace, config: Config, at: datetime
                      ) -> tuple[Effective, State | None, Path, bool]:
    """Orders from the folder plus the last good versions the state keeps in force (read-only).

    Returns (orders in force, state or None, state dir, whether every order file was valid).
    """
    state_dir = state_dir_of(args, config)
    require_state_dir(state_dir, args)
    result, folder = load_folder(args, config, state_only=True)
    print_errors(result)
    state = open_state(state_dir)
    if state is None:
        print(f"blocker: no state in {state_dir}: nothing was applied there yet; showing the order files only",
              file=sys.stderr)
        return Effective(dict(result.orders)), None, state_dir, result.ok
    try:
        eff = effective_orders(result, config, state, None, at, record=False)
        for order_id, order in _dropped_orders(state, eff, config).items():
            eff.orders[order_id] = order  # dropped with apply --force: the report must still show it
    except sqlite3.Error as exc:
        raise CliError(f"{state_dir}: cannot read the state: {exc}") from None
    if not folder.is_dir():
        # Read elsewhere than the daemon's host: the state's versions are the orders, and a file
        # we cannot see is not evidence that it was removed (no `orphaned` flag).
        print(f"blocker: showing the order versions kept in {state_dir}", file=sys.stderr)
        eff.flags.clear()
    return eff, state, state_dir, result.ok


def _stored_version(order_id: str, state: State, config: Config) -> Order | None:
    """The newest stored version of an order that still parses (orders.model.parse_order, the one
    parser: a stored version means what the same file would mean today)."""
    for _digest, path, content, _first in reversed(state.order_versions(order_id)):
        parsed = parse_stored(content, path, config.order_rules)
        if isinstance(parsed, Order):
            return parsed
    return None


def _dropped_orders(state: State, eff: Effective, config: Config) -> dict[str, Order]:
    """Orders blocker applied once that are neither in the folder nor kept in force: the ones
    `apply --force` dropped after their file was lost. A lawyer must see them (issue 12)."""
    out = {}
    for order_id in sorted(set(state.version_summary()) - set(eff.orders)):
        order = _stored_version(order_id, state, config)
        if order is not None:
            out[order_id] = order
    return out


def _facts(eff: Effective, state: State | None, state_dir: Path, at: datetime, *, with_audit: bool) -> Facts:
    audit = AuditLog(state_dir) if with_audit and state_dir.is_dir() else None
    paths = {o.path: o.id for o in eff.orders.values()}
    try:
        return gather(state, audit, at, paths=paths, flags=eff.flags)
    except sqlite3.Error as exc:
        raise CliError(f"{state_dir}: cannot read the state: {exc}") from None


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
        raise CliError(f"--out {exc}", EXIT_USAGE if exc.usage else EXIT_INVALID) from None


def _emit(text: str, out: str | None) -> None:
    """Print, or write `--out` whole through blocker.safeio (a new file with a random name,
    renamed into place: a reader never sees half a report, and no planted link is followed)."""
    if out is None or out == STDOUT:
        sys.stdout.write(text)
        return
    try:
        write_output(out, text)
    except OutputError as exc:
        raise CliError(f"--out {exc}", EXIT_USAGE if exc.usage else EXIT_INVALID) from None
    print(f"wrote {display_path(out)}", file=sys.stderr)


# report ---------------------------------------------------------------------------------------


def _row_text(row: ReportRow, utc: ZoneInfo | None = None) -> str:
    o = row.order
    tz = utc or o.tz
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
    if row.removed and row.removal is not None:
        d = row.removal
        lines.append(f"  ended     REMOVED BY FORCE, without a court's lift: by {printable(d.actor)}, "
                     f"{fmt_instant(d.at, tz)}, reviewed plan checksum {printable(d.checksum or 'not recorded')}")
    elif o.lifted_early and o.lifted is not None:
        lines.append(f"  ended     lifted early by the court: {printable(o.lifted.reason)}")
    elif row.status == "expired":
        lines.append("  ended     lifted on schedule")
    if row.received is not None:
        lines.append(f"  received  {fmt_instant(row.received, tz)} (first applied; {row.versions} version(s))")
    targets = [printable(with_unicode(t.name))
               + (f" (url-escalated: {printable(t.source)})" if t.kind == "url-escalated" else "") for t in o.targets]
    lines.append("  targets   " + ", ".join(targets))

    def at(value: datetime | None) -> str:
        return "-" if value is None else fmt_instant(value, tz)

    cells = []
    for r in row.operators:
        published = "-" if r.first_published is None else f"{at(r.first_published)} #{r.first_serial}"
        failures = str(r.failures) + (f" (last {at(r.last_failure)})" if r.last_failure else "")
        cells.append([r.operator, _word(r.block), published, at(r.block_verified),
                      r.block_note or fmt_duration(r.time_to_block) or "-",
                      fmt_duration(r.time_to_block_from_receipt) or "-", at(r.last_verified), failures,
                      _word(r.lift), at(r.lift_verified)])
    text = table(cells, ["OPERATOR", "BLOCK", "FIRST PUBLISHED", "BLOCK VERIFIED", "TIME TO BLOCK",
                         "FROM RECEIPT", "LAST VERIFIED", "FAILURES", "LIFT", "LIFT VERIFIED"])
    lines += ["  " + line for line in text.splitlines()]
    return "\n".join(lines)


def _word(state: str) -> str:
    return BEFORE_RECORDS if state == "before-records" else state


def cmd_report(args: argparse.Namespace, config: Config) -> int:
    from blocker.legal.html import render_report

    _check_out(args.out)
    at = parse_at(args.at, config)
    eff, state, state_dir, orders_ok = _orders_and_state(args, config, at)
    try:
        facts = _facts(eff, state, state_dir, at, with_audit=True)
    finally:
        if state is not None:
            state.close()
    rows = build_report(eff.orders.values(), facts, at)
    broken = _warn_audit(facts)
    tz = zone(config.timezone)
    if args.format == "json" or args.json:
        text = json.dumps({"at": fmt_instant(at, tz), "timezone": config.timezone,
                           "audit": None if facts.audit is None else {
                               "ok": facts.audit.ok, "records": facts.audit.count,
                               "bad_line": facts.audit.bad_line, "reason": facts.audit.reason},
                           "orders": [r.to_json() for r in rows]}, indent=2, ensure_ascii=False) + "\n"
    elif args.format == "csv":
        text = to_csv(rows)
    elif args.format == "html":
        text = render_report(rows, at, config.timezone, audit=facts.audit, source=config.source,
                             generated=datetime.now(UTC), records_start=facts.records_start)
    else:
        text = "\n\n".join(_row_text(r, ZoneInfo("UTC") if args.utc else None) for r in rows) + "\n"
        tz, tz_name = shown_zone(args, config), shown_zone_name(args, config)
        audit = ("no audit trail" if facts.audit is None else
                 f"audit trail intact ({facts.audit.count} records)" if facts.audit.ok else "audit trail BROKEN")
        print(f"\nat {fmt_instant(at, tz)} ({tz_name}); {len(rows)} orders; {audit}", file=sys.stderr)
    _emit(text, args.out)
    return EXIT_OK if orders_ok and not broken else EXIT_INVALID


# expiring -------------------------------------------------------------------------------------


def cmd_expiring(args: argparse.Namespace, config: Config) -> int:
    window = parse_window(args.within)
    at = parse_at(args.at, config)
    eff, state, state_dir, _ok = _orders_and_state(args, config, at)
    try:
        # Zones and probes only (fast), unless an order was dropped: who dropped it is in the audit.
        dropped = state is not None and any(o not in state.last_good() for o in eff.orders)
        facts = _facts(eff, state, state_dir, at, with_audit=dropped)
    finally:
        if state is not None:
            state.close()
    rows = build_report(eff.orders.values(), facts, at)
    items = expiring(rows, at, window)
    soon = [i for i in items if i.reason == "expires-within"]
    late = [i for i in items if i.reason == "lift-unverified"]
    forced = [i for i in items if i.reason == "removed-by-force"]
    tz = shown_zone(args, config)
    utc = tz if args.utc else None

    def tz_of(order: Order) -> ZoneInfo:
        return utc or order.tz

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
            print(table([[i.row.order.id, i.row.status, fmt_instant(i.row.order.end, tz_of(i.row.order)),
                               str(days_remaining(i.row.order, at)), fmt_duration(i.row.seconds_remaining),
                               i.row.order.case_number, i.row.order.rule] for i in soon],
                             ["ORDER", "STATUS", "LIFT", "DAYS", "IN", "CASE", "RULE"]))
        else:
            print(f"No order lifts within {args.within.strip()} (before {until}).")
        if late:
            print("\nEnded, lift not verified by a probe on every operator:")
            print(table([[i.row.order.id, i.row.status, fmt_instant(i.row.order.end, tz_of(i.row.order)),
                               ", ".join(f"{r.operator}: {r.lift}" for r in i.row.operators
                                         if r.operator in i.unverified),
                               "probes no longer check it: verify by hand" if stopped(i) else ""] for i in late],
                             ["ORDER", "STATUS", "LIFTED AT", "UNVERIFIED (OPERATOR: STATE)", "NOTE"]))
            print("(unverified: removed from the zone, no probe has seen it resolve yet; "
                  "in-zone: still published after its end)")
        if forced:
            print("\nRemoved by force (apply --force), without a court's lift:")
            print(table([[i.row.order.id, fmt_instant(i.row.order.end, tz_of(i.row.order)),
                          printable(i.row.removal.actor) if i.row.removal else "?",
                          fmt_instant(i.row.removal.at, tz_of(i.row.order)) if i.row.removal else "?",
                          printable((i.row.removal.checksum if i.row.removal else None) or "not recorded"),
                          printable(i.row.order.case_number)] for i in forced],
                        ["ORDER", "WAS TO LIFT AT", "REMOVED BY", "REMOVED AT", "CHECKSUM REVIEWED", "CASE"]))
    return EXIT_INVALID if soon else EXIT_OK


# evidence -------------------------------------------------------------------------------------


def _find_order(order_id: str, eff: Effective, state: State, config: Config) -> Order | None:
    """The order as the tool knows it: its valid file, else its last good version, else the
    newest stored version that still parses (an orphan lifted with --force)."""
    if order_id in eff.orders:
        return eff.orders[order_id]
    return _stored_version(order_id, state, config)


def cmd_evidence(args: argparse.Namespace, config: Config) -> int:
    from blocker.legal.evidence import EvidenceError, count_line, write_pack

    _check_out(args.out, folder=True)
    at = parse_at(args.at, config)
    state_dir = state_dir_of(args, config)
    require_state_dir(state_dir, args)
    eff, state, state_dir, _ok = _orders_and_state(args, config, at)
    if state is None:
        raise CliError(f"{state_dir}: no state: an evidence pack needs the state and audit trail")
    try:
        order = _find_order(args.order_id, eff, state, config)
        if order is None:
            raise CliError(f"unknown order {args.order_id!r}: not in the orders folder nor in {state_dir}")
        facts = _facts(Effective({order.id: order}, eff.flags), state, state_dir, at, with_audit=True)
        row = build_row(order, facts, at)
        try:  # never blocks: a FIFO put in the order's place is no order file
            current = read_order_file(Path(order.path))
        except (OSError, YamlError):
            current = None
        audit = AuditLog(state_dir)
        actor = current_actor()
        exported_by = (args.by or config.legal_exported_by or "").strip()
        if not exported_by:  # kept working (a contract), but said: an account name is no person
            print(f"blocker: WARNING: no --by NAME (nor legal.exported_by): the pack names only the account "
                  f"{printable(actor)}, which does not identify a person to a court", file=sys.stderr)
            exported_by = actor
        try:
            pack = write_pack(Path(args.out), order, row, state=state, audit=audit, config=config, current=current,
                              generated=datetime.now(UTC), actor=actor, exported_by=exported_by)
        except OutputError as exc:
            raise CliError(f"--out {exc}", EXIT_USAGE if exc.usage else EXIT_INVALID) from None
        except (EvidenceError, OSError) as exc:
            raise CliError(str(exc)) from None
    finally:
        state.close()
    audit.append("evidence-exported", {
        "order": order.id, "out": str(Path(args.out).resolve()), "files": len(pack.files),
        "manifest_sha256": pack.manifest_sha256, "records": pack.records,
        "head_seq": pack.head[0] if pack.head else 0, "head_hash": pack.head[1] if pack.head else None,
        "exported_by": exported_by,
    }, actor=actor)
    total = pack.audit.count if pack.audit is not None else 0
    broken = pack.audit is not None and not pack.audit.ok
    if args.json:  # the summary below, as one object (the pack itself is in --out)
        print_json({"out": str(Path(args.out).resolve()), "order": order.id, "files": len(pack.files),
                    "records": pack.records, "trail_records": total, "manifest_sha256": pack.manifest_sha256,
                    "exported_by": exported_by, "audit_ok": not broken}, ensure_ascii=False)
        return EXIT_INVALID if broken else EXIT_OK
    print(f"{display_path(args.out)}: evidence pack for {order.id}: {len(pack.files)} files, "
          f"{pack.records} audit record(s), exported by {printable(exported_by)}")
    print(f"({count_line(pack.records, pack.chain, total)})")
    print(f"MANIFEST.sha256 {pack.manifest_sha256} (recorded in the audit trail as evidence-exported)")
    if pack.audit is not None and not pack.audit.ok:
        print(f"blocker: WARNING: the audit trail is broken at line {pack.audit.bad_line}: {pack.audit.reason} "
              "(recorded in the pack)", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


# registration ---------------------------------------------------------------------------------


def register(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add report, expiring and evidence to the `blocker` parser (`add` is cli's factory)."""
    state_help = "state folder (default: config state_dir); read-only, safe while the daemon runs"
    orders_help = "orders folder (default: config orders_dir; may be missing: the state's versions are used)"
    bug = "internal error (a bug: see the crash log named)"

    p = add("report", "every order: dates, rule, status, and per operator what probes verified")
    p.add_argument("--orders", metavar="DIR", help=orders_help)
    p.add_argument("--state-dir", metavar="DIR", help=state_help)
    p.add_argument("--at", metavar="ISO8601", help="report as at this instant (default: now)")
    p.add_argument("--format", choices=("table", "json", "csv", "html"), default="table", help="output format")
    p.add_argument("--json", action="store_true", help="same as --format json")
    p.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    p.add_argument("--utc", action="store_true", help=UTC_HELP + "; default: each order's own timezone")
    with_epilog(p, {0: "the report was written", 1: "an order file is invalid, or the audit trail is broken",
                    2: "usage error (a bad --at, a missing --state-dir, a bad --out)", 70: bug},
                "blocker report --format html --out report.html")
    p.set_defaults(func=cmd_report)

    p = add("expiring", "orders lifting soon, and ended orders whose lift no probe verified; exit 1 if any lift soon")
    p.add_argument("--within", metavar="WINDOW", default="30d", help="look-ahead: 30d, 2w, 12h (default 30d)")
    p.add_argument("--orders", metavar="DIR", help=orders_help)
    p.add_argument("--state-dir", metavar="DIR", help=state_help)
    p.add_argument("--at", metavar="ISO8601", help="from this instant (default: now)")
    p.add_argument("--json", action="store_true", help="JSON array")
    p.add_argument("--utc", action="store_true", help=UTC_HELP + "; default: each order's own timezone")
    with_epilog(p, {0: "no order lifts within the window", 1: "some order lifts within the window",
                    2: "usage error (a bad --within or --at, a missing --state-dir)", 70: bug},
                "blocker expiring --within 2w")
    p.set_defaults(func=cmd_expiring)

    p = add("evidence", "write an evidence pack for one order (versions, audit records with chain proof, "
                        "zone serials, probes, index.html, MANIFEST.sha256)")
    p.add_argument("order_id", metavar="ORDER_ID", help="the order's id (in the folder or only in the state)")
    p.add_argument("--out", metavar="DIR", required=True, help="new or empty folder for the pack")
    p.add_argument("--orders", metavar="DIR", help=orders_help)
    p.add_argument("--state-dir", metavar="DIR", help="state folder (default: config state_dir)")
    p.add_argument("--at", metavar="ISO8601", help="instant of the summary's status and facts (default: now)")
    p.add_argument("--by", metavar="NAME", help="the person exporting the pack, recorded in it and in the audit "
                                               "trail (default: config legal.exported_by)")
    p.add_argument("--json", action="store_true",
                   help="the summary as one JSON object: out, order, files, records, manifest_sha256, ...")
    with_epilog(p, {0: "the pack was written", 1: "unknown order, no state, or the audit trail is broken "
                    "(the pack then records it)", 2: "usage error (a bad --out or --at)",
                    5: "the audit trail cannot be written (the export is not recorded)", 70: bug},
                "blocker evidence tj-paris-2026-001 --out pack/ --by 'J. Martin'")
    p.set_defaults(func=cmd_evidence)
