"""`validate` and `status`: what the order files say, checked and at an instant."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from blocker.cli.common import load_folder, parse_at
from blocker.cli.errors import EXIT_INVALID, EXIT_OK
from blocker.cli.output import print_errors, table
from blocker.config.model import Config
from blocker.orders.legaltime import zone
from blocker.textsafe import display_path, printable


def cmd_validate(args: argparse.Namespace, config: Config) -> int:
    result, folder = load_folder(args, config)
    good = sorted(result.orders.values(), key=lambda o: o.path)
    for order in good:
        print(f"{display_path(order.path)}: ok ({order.id}, {len(order.targets)} targets)")
    for error in result.errors:
        print(error)
    for warning in result.warnings:  # to check, not to fix: the exit code stays 0
        print(f"warning: {printable(warning)}")
    bad = len(result.invalid_files) + (1 if any(e.field == "(folder)" for e in result.errors) else 0)
    print(f"{len(good)} valid, {bad} invalid in {display_path(folder)}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_INVALID


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    at = parse_at(args.at, config)
    result, _ = load_folder(args, config)
    print_errors(result)
    orders = sorted(result.orders.values(), key=lambda o: (o.start, o.id))
    if args.json:
        print(json.dumps([o.to_json(at) for o in orders], indent=2, ensure_ascii=False))
    else:
        rows = []
        for o in orders:
            j = o.to_json(at)
            escalated = sum(1 for t in o.targets if t.kind == "url-escalated")
            targets = f"{len(o.targets)}" + (f" ({escalated} url-escalated)" if escalated else "")
            rows.append([o.id, j["status"], j["start"], j["end"], ",".join(o.operators), targets, o.rule])
        print(table(rows, ["ORDER", "STATUS", "START", "END", "OPERATORS", "TARGETS", "RULE"]))
        print(f"\nat {at.astimezone(zone(config.timezone)).isoformat(timespec='seconds')} "
              f"({config.timezone}); {len(orders)} orders", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_INVALID


def register(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("validate", "check every order file; one line per problem")
    p.add_argument("--orders", metavar="DIR", help="orders folder (default: config orders_dir)")
    p.set_defaults(func=cmd_validate)

    p = add("status", "every order with its status at an instant")
    p.add_argument("--orders", metavar="DIR")
    p.add_argument("--at", metavar="ISO8601", help="instant (default: now; no offset = config time zone)")
    p.add_argument("--json", action="store_true", help="JSON array instead of a table")
    p.set_defaults(func=cmd_status)
