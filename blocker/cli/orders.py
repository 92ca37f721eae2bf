"""`validate` and `status`: what the order files say, checked and at an instant."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from blocker.cli.common import UTC_HELP, load_folder, parse_at, shown_zone, shown_zone_name
from blocker.cli.errors import EXIT_INVALID, EXIT_OK, with_epilog
from blocker.cli.output import plural, print_errors, print_json, table
from blocker.config.model import Config
from blocker.orders.legaltime import fmt_instant
from blocker.textsafe import display_path, printable

STATUS_WIDTH = 120


def cmd_validate(args: argparse.Namespace, config: Config) -> int:
    result, folder = load_folder(args, config)
    good = sorted(result.orders.values(), key=lambda o: o.path)
    bad = len(result.invalid_files) + (1 if any(e.field == "(folder)" for e in result.errors) else 0)
    if args.json:
        print_json({"folder": str(folder), "valid": len(good), "invalid": bad,
                    "orders": [{"file": o.path, "id": o.id, "targets": len(o.targets)} for o in good],
                    "errors": [e.to_json() for e in result.errors],
                    "warnings": [str(w) for w in result.warnings]}, ensure_ascii=False)
        return EXIT_OK if result.ok else EXIT_INVALID
    for order in good:
        print(f"{display_path(order.path)}: ok ({order.id}, {plural(len(order.targets), 'target')})")
    for error in result.errors:
        print(error)
    for warning in result.warnings:  # to check, not to fix: the exit code stays 0
        print(f"warning: {printable(warning)}")
    print(f"{len(good)} valid, {bad} invalid in {display_path(folder)}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_INVALID


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    at = parse_at(args.at, config)
    result, _ = load_folder(args, config)
    print_errors(result)
    orders = sorted(result.orders.values(), key=lambda o: (o.start, o.id))
    utc = ZoneInfo("UTC") if args.utc else None  # else each order's own zone, as its file gives it
    if args.json:
        print(json.dumps([o.to_json(at) for o in orders], indent=2, ensure_ascii=False))
    else:
        rows = []
        for o in orders:
            j = o.to_json(at)
            escalated = sum(1 for t in o.targets if t.kind == "url-escalated")
            if args.wide:
                targets = f"{len(o.targets)}" + (f" ({escalated} url-escalated)" if escalated else "")
                start, end = (fmt_instant(o.start, utc), fmt_instant(o.end, utc)) if utc else (
                    j["start"], j["end"])
                rows.append([o.id, j["status"], start, end, ",".join(o.operators), targets, o.rule])
            else:  # instants to the minute, with their offset; operators only with --wide
                targets = f"{len(o.targets)}" + (f" ({escalated} url)" if escalated else "")
                tz = utc or o.tz
                rows.append([o.id, j["status"], _minute(o.start, tz), _minute(o.end, tz), targets, o.rule])
        if args.wide:
            print(table(rows, ["ORDER", "STATUS", "START", "END", "OPERATORS", "TARGETS", "RULE"]))
        else:  # 120 columns: the rule, then the id, cut with `…`
            print(table(rows, ["ORDER", "STATUS", "START", "END", "TARGETS", "RULE"], width=STATUS_WIDTH,
                        shrink=(5, 0)))
        print(f"\nat {at.astimezone(shown_zone(args, config)).isoformat(timespec='seconds')} "
              f"({shown_zone_name(args, config)}); {plural(len(orders), 'order')}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_INVALID


def _minute(instant: datetime, tz: ZoneInfo) -> str:
    """`2026-11-20 00:00+01:00`: the status table's instants, short but with their offset."""
    return instant.astimezone(tz).isoformat(sep=" ", timespec="minutes")


def register(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("validate", "check every order file; one line per problem")
    p.add_argument("--orders", metavar="DIR", help="orders folder (default: config orders_dir)")
    p.add_argument("--json", action="store_true", help="one JSON object: valid orders, errors, warnings")
    with_epilog(p, {0: "every order file is valid (warnings do not count)", 1: "some file is invalid",
                    2: "usage error (a missing folder, a bad flag)"}, "blocker validate --orders orders/")
    p.set_defaults(func=cmd_validate)

    p = add("status", "every order with its status at an instant")
    p.add_argument("--orders", metavar="DIR", help="orders folder (default: config orders_dir)")
    p.add_argument("--at", metavar="ISO8601", help="instant (default: now; no offset = config time zone)")
    p.add_argument("--json", action="store_true", help="JSON array instead of a table")
    p.add_argument("--utc", action="store_true", help=UTC_HELP + "; default: each order's own timezone "
                   "(its `timezone:`, else the config's)")
    p.add_argument("--wide", action="store_true",
                   help=f"every column, every cell whole (default: fits {STATUS_WIDTH} columns)")
    with_epilog(p, {0: "every order file is valid", 1: "some order file is invalid (the others are listed)",
                    2: "usage error (a bad --at, a missing folder)"}, "blocker status --at 2026-12-01T09:00")
    p.set_defaults(func=cmd_status)
